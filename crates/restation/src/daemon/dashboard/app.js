// restation dashboard: one tile per port, fed by the daemon's API (/devices, /jobs, /ports)
// and kept live by its server-sent event streams (/events, /jobs/events). Plain JavaScript, no
// build.
'use strict';
(function () {
  // On a TCP listener that needs a token the page is opened as /?token=...; every request
  // carries it on (EventSource cannot send headers).
  const token = new URLSearchParams(location.search).get('token');
  function url(path) {
    if (!token) return path;
    return path + (path.indexOf('?') >= 0 ? '&' : '?') + 'token=' + encodeURIComponent(token);
  }

  // Tile colors, by the port's last number: the identify button paints the phone this color.
  const PALETTE = [
    [255, 59, 48], [52, 199, 89], [0, 122, 255], [255, 204, 0], [191, 90, 242], [255, 149, 0],
    [90, 200, 250], [255, 45, 85], [172, 142, 104], [48, 219, 190], [255, 255, 255], [94, 92, 230],
  ];

  const state = {
    devices: new Map(), // id -> registry entry
    jobs: new Map(), // job id -> job record
    ports: new Map(), // port path -> port health (/ports)
    notes: new Map(), // device id -> identify outcome
    live: { devices: false, jobs: false },
    problem: '',
  };

  function modeName(mode) {
    if (typeof mode === 'string') return mode;
    if (mode && typeof mode === 'object') return Object.keys(mode)[0] || 'unknown';
    return 'unknown';
  }
  function portOf(entry) {
    return entry.port == null ? '' : String(entry.port);
  }
  function colorOf(port) {
    const m = /(\d+)\s*$/.exec(port || '');
    const n = m ? parseInt(m[1], 10) : 0;
    return PALETTE[n % PALETTE.length];
  }
  function hex(c) {
    return '#' + c.map(function (v) { return v.toString(16).padStart(2, '0'); }).join('');
  }
  function lastSeen(entry) {
    const h = entry.history || [];
    return h.length ? h[h.length - 1].at_ms : 0;
  }
  function comparePorts(a, b) {
    const na = a.split(/[^0-9]+/).filter(Boolean).map(Number);
    const nb = b.split(/[^0-9]+/).filter(Boolean).map(Number);
    for (let i = 0; i < Math.max(na.length, nb.length); i++) {
      const d = (na[i] === undefined ? -1 : na[i]) - (nb[i] === undefined ? -1 : nb[i]);
      if (d) return d;
    }
    return a < b ? -1 : a > b ? 1 : 0;
  }
  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    const m = Math.floor(s / 60);
    return m + ':' + String(s % 60).padStart(2, '0');
  }

  async function getJson(path) {
    const r = await fetch(url(path), { headers: { Accept: 'application/json' } });
    if (!r.ok) {
      let why = 'HTTP ' + r.status;
      try { why = (await r.json()).error || why; } catch (e) { /* not JSON */ }
      throw new Error(path + ': ' + why);
    }
    return r.json();
  }

  async function refreshAll() {
    try {
      const both = await Promise.all([getJson('/devices'), getJson('/jobs')]);
      state.devices = new Map(both[0].map(function (d) { return [d.id, d]; }));
      state.jobs = new Map(both[1].map(function (j) { return [j.id, j]; }));
      state.problem = '';
    } catch (e) {
      state.problem = 'Cannot read the daemon: ' + (e.message || e);
    }
    schedule();
  }

  // Port health changes when attempts end: read /ports again, at most once a second.
  let portsPending = false;
  async function refreshPorts() {
    if (portsPending) return;
    portsPending = true;
    setTimeout(async function () {
      portsPending = false;
      try {
        setPorts(await getJson('/ports'));
        schedule();
      } catch (e) { /* an older daemon without /ports: the link speed alone */ }
    }, 1000);
  }
  function setPorts(report) {
    if (!report || !Array.isArray(report.ports)) return;
    state.ports = new Map(report.ports.map(function (p) { return [p.port, p]; }));
  }

  async function refreshDevice(id) {
    try {
      const d = await getJson('/devices/' + encodeURIComponent(id));
      state.devices.set(d.id, d);
      schedule();
    } catch (e) {
      refreshAll();
    }
  }

  // One tile per port: the phone on it now, else the one seen there last.
  function tiles() {
    const byPort = new Map();
    state.devices.forEach(function (d) {
      const port = portOf(d) || 'no port (' + d.id + ')';
      const cur = byPort.get(port);
      if (!cur || (d.present && !cur.present) ||
          (d.present === cur.present && lastSeen(d) > lastSeen(cur))) {
        byPort.set(port, d);
      }
    });
    return Array.from(byPort.entries()).sort(function (a, b) { return comparePorts(a[0], b[0]); });
  }

  function latestJob(ecid) {
    let found = null;
    state.jobs.forEach(function (j) {
      if (j.ecid === ecid && (!found || j.id > found.id)) found = j;
    });
    return found;
  }
  function failuresOn(port) {
    let n = 0;
    state.jobs.forEach(function (j) { if (j.port === port && j.state === 'failed') n++; });
    return n;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fact(dl, name, value, cls) {
    dl.appendChild(el('dt', null, name));
    const dd = el('dd', cls, value);
    dl.appendChild(dd);
    return dd;
  }

  // Port health: the daemon's verdict on the port (/ports: link speed, flaps, transfer errors,
  // throughput, phones failed here), else the link speed alone: a phone is a high-speed device;
  // one that enumerated at full speed has damaged data lines in its cable or port.
  function health(entry, port) {
    const report = state.ports.get(port);
    if (report && report.health === 'suspect') {
      const more = report.reasons.length > 1 ? ' (+' + (report.reasons.length - 1) + ' more)' : '';
      const why = report.reasons.length ? report.reasons[0].text : 'see /ports';
      return { cls: 'bad', text: 'suspect: ' + why + more };
    }
    if (report && report.health === 'good') {
      let text = 'good';
      if (report.link_speed) text += ' \u00b7 ' + String(report.link_speed).toLowerCase() + ' speed';
      text += ' \u00b7 ' + report.succeeded + '/' + report.attempts + ' attempts went through';
      if (report.phones_failed.length) text += ' \u00b7 ' + report.phones_failed.length + ' phone(s) failed here';
      return { cls: 'good', text: text };
    }
    const speed = entry.speed;
    if (speed === 'High' || speed === 'Super' || speed === 'SuperPlus') {
      return { cls: 'good', text: 'good \u00b7 ' + speed.toLowerCase() + ' speed' };
    }
    if (speed === 'Full' || speed === 'Low') {
      return { cls: 'bad', text: speed.toLowerCase() + ' speed: replace the cable or use another port' };
    }
    return { cls: 'unknown', text: 'no data yet (link speed unknown)' };
  }

  function jobPart(tile, job) {
    if (!job) {
      tile.appendChild(el('div', 'phase', 'idle'));
      tile.appendChild(el('div', 'step', 'no restore on this phone yet'));
      return;
    }
    tile.appendChild(el('div', 'phase', 'phase: ' + job.phase));
    tile.appendChild(el('div', 'step',
      job.steps ? 'step ' + job.step + ' of ' + job.steps + (job.step_text ? ': ' + job.step_text : '') : ''));
    const pct = Math.round(Math.min(1, Math.max(0, job.progress || 0)) * 100);
    const bar = el('div', 'progress');
    bar.setAttribute('role', 'progressbar');
    bar.setAttribute('aria-valuenow', String(pct));
    const fill = el('span');
    fill.style.width = pct + '%';
    bar.appendChild(fill);
    bar.appendChild(el('b', null, pct + '%'));
    tile.appendChild(bar);
    if (job.operator) tile.appendChild(el('div', 'operator', job.operator));
    const took = (job.ended_ms || Date.now()) - job.started_ms;
    if (job.state === 'queued') {
      tile.appendChild(el('div', 'result running', 'queued for ' + job.build_version + ' · ' + duration(took)));
    } else if (job.state === 'running') {
      tile.appendChild(el('div', 'result running', 'restoring ' + job.build_version + ' · ' + duration(took)));
    } else if (job.state === 'succeeded') {
      tile.appendChild(el('div', 'result succeeded', 'restored ' + job.build_version + ' in ' + duration(took)));
    } else {
      const hasNumber = job.number !== undefined && job.number !== null;
      tile.appendChild(el('div', 'result failed', hasNumber ? 'error ' + job.number : 'failed'));
      const advice = job.advice || job.error;
      if (advice) tile.appendChild(el('div', 'advice', advice));
    }
  }

  function render() {
    const main = document.getElementById('tiles');
    const list = tiles();
    const frag = document.createDocumentFragment();
    let present = 0;
    list.forEach(function (pair) {
      const port = pair[0];
      const d = pair[1];
      if (d.present) present++;
      const mode = modeName(d.mode);
      const color = colorOf(port);
      const tile = el('section', 'tile mode-' + mode + (d.present ? '' : ' gone'));
      tile.dataset.ecid = d.id;
      tile.dataset.port = port;
      tile.dataset.mode = mode;
      tile.dataset.color = hex(color);
      tile.style.setProperty('--tile', hex(color));

      const head = el('header');
      head.appendChild(el('span', 'port', port));
      head.appendChild(el('span', 'mode', d.present ? mode : mode + ' (left)'));
      tile.appendChild(head);

      const id = d.identity || {};
      const model = el('div', 'model', id.name || id.product_type || 'unknown model');
      if (id.name && id.product_type) model.appendChild(el('small', null, id.product_type));
      tile.appendChild(model);

      const facts = el('dl', 'facts');
      fact(facts, 'ECID', d.id, 'ecid');
      if (id.serial_number) fact(facts, 'Serial', id.serial_number);
      if (id.product_version) fact(facts, 'iOS', id.product_version);
      const h = health(d, port);
      fact(facts, 'Port health', h.text, 'health ' + h.cls);
      const fails = failuresOn(port);
      fact(facts, 'Failures here', String(fails), fails ? 'health bad' : null);
      tile.appendChild(facts);

      jobPart(tile, latestJob(d.id));

      const actions = el('div', 'actions');
      const button = el('button', 'identify', 'Identify');
      button.type = 'button';
      const inRecovery = d.present && mode === 'recovery';
      button.disabled = !inRecovery;
      button.title = inRecovery
        ? 'Paint the phone\u2019s screen ' + hex(color)
        : 'Only a phone in recovery mode can show a color';
      button.addEventListener('click', function () { identify(d.id, color); });
      actions.appendChild(button);
      actions.appendChild(el('span', 'identify-note',
        state.notes.get(d.id) || (inRecovery ? 'paints the screen this tile\u2019s color' : 'recovery mode only')));
      tile.appendChild(actions);
      frag.appendChild(tile);
    });
    main.replaceChildren(frag);

    let running = 0;
    let queued = 0;
    state.jobs.forEach(function (j) {
      if (j.state === 'running') running++;
      if (j.state === 'queued') queued++;
    });
    document.getElementById('summary').textContent =
      present + ' phone' + (present === 1 ? '' : 's') + ' on the bench · ' + running + ' restoring' +
      (queued ? ' · ' + queued + ' queued' : '');
    document.getElementById('empty').hidden = list.length > 0;
    const live = state.live.devices && state.live.jobs;
    const badge = document.getElementById('live');
    badge.className = 'live ' + (live ? 'on' : 'off');
    badge.textContent = live ? 'live' : 'offline';
    const problem = document.getElementById('problem');
    problem.hidden = !state.problem;
    problem.textContent = state.problem;
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    setTimeout(function () { pending = false; render(); }, 0);
  }

  async function identify(id, color) {
    state.notes.set(id, 'sending\u2026');
    schedule();
    try {
      const r = await fetch(url('/devices/' + encodeURIComponent(id) + '/identify'), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ color: hex(color) }),
      });
      let body = {};
      try { body = await r.json(); } catch (e) { /* no body */ }
      state.notes.set(id, r.ok ? 'screen painted ' + hex(color) : (body.error || 'HTTP ' + r.status));
    } catch (e) {
      state.notes.set(id, 'failed: ' + (e.message || e));
    }
    schedule();
  }

  function listen(path, name, key, onItem) {
    const source = new EventSource(url(path));
    source.addEventListener('open', function () { state.live[key] = true; refreshAll(); });
    source.addEventListener('error', function () { state.live[key] = false; schedule(); });
    source.addEventListener('lagged', function () { refreshAll(); });
    source.addEventListener(name, function (ev) {
      let item;
      try { item = JSON.parse(ev.data); } catch (e) { return; }
      onItem(item);
    });
  }

  // The snapshot the daemon put in the page: the first paint, before any request.
  try {
    const snapshot = JSON.parse(document.getElementById('snapshot').textContent || '{}');
    if (Array.isArray(snapshot.devices) && Array.isArray(snapshot.jobs)) {
      snapshot.devices.forEach(function (d) { state.devices.set(d.id, d); });
      snapshot.jobs.forEach(function (j) { state.jobs.set(j.id, j); });
      setPorts(snapshot.ports);
      render();
    }
  } catch (e) { /* no snapshot: the requests below fill the page */ }

  listen('/events', 'device', 'devices', function (event) { refreshDevice(event.id); });
  listen('/jobs/events', 'job', 'jobs', function (job) {
    state.jobs.set(job.id, job);
    refreshPorts();
    schedule();
  });
  refreshAll();
  refreshPorts();
  // Running times move on even when nothing else does.
  setInterval(function () { if (state.jobs.size) schedule(); }, 1000);
})();
