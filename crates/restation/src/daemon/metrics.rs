//! `GET /metrics`: the daemon's numbers in Prometheus' text exposition format 0.0.4, written
//! by hand (one writer, [`Exposition`], that escapes label values and help text).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `restation_restores_total` | counter | `result` (`succeeded`, `failed`), `number` (Apple's error number, `none` when the job has none) | restores that ended |
//! | `restation_restores_running` | gauge | | restores running now |
//! | `restation_restores_queued` | gauge | | restores waiting for a slot on their host controller |
//! | `restation_port_failures_total` | counter | `port` (`1-1.3`, `unknown`) | failed restores per physical port |
//! | `restation_port_suspect` | gauge | `port` | 1 when port health suspects the port or its cable ([`super::port_health`]), else 0 |
//! | `restation_phase_duration_seconds` | histogram | `phase` | how long each phase of a restore took |
//! | `restation_transferred_bytes_total` | counter | | bytes sent to phones by restores |
//! | `restation_phones` | gauge | `mode` (`normal`, `recovery`, `dfu`, ...) | phones on the bus by mode |
//! | `restation_devices_ignored_total` | counter | | arrivals that were not phones |
//! | `restation_identify_failed_total` | counter | | identifications that failed |
//! | `restation_identify_vanished_total` | counter | | phones that left while being identified |
//! | `restation_identify_stale_total` | counter | | identification results for arrivals no longer current |
//! | `restation_identifying` | gauge | | arrivals being identified now |
//! | `restation_api_refused_total` | counter | | API requests refused (4xx, not HTTP) |
//! | `restation_usbmuxd_malformed_total` | counter | | usbmuxd-socket clients that broke the protocol |
//! | `restation_mux_sessions` | gauge | | phones with a running mux session |
//!
//! Restores, their numbers and per-port failures are read from the job list at scrape time
//! (a job's `number` is read from its JSON, so it shows as soon as jobs carry one). Phase
//! durations come from [`PhaseTimer`], fed by the job update stream ([`observe_jobs`]), or
//! from whoever calls [`Metrics::phase_took`]; bytes from [`Metrics::bytes`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use tokio::sync::broadcast;

use super::jobs::{JobRecord, JobState};
use super::Shared;

/// The `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the phase-duration histogram's buckets (`+Inf` comes last).
pub const PHASE_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0,
];

/// Modes always listed by `restation_phones` (0 when none), so that series do not vanish.
const MODES: [&str; 8] = [
    "normal",
    "recovery",
    "dfu",
    "restore",
    "restore-or-mac-dfu",
    "wtf",
    "port-dfu",
    "kis",
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Count per bucket of [`PHASE_BUCKETS`] (not cumulative), then the `+Inf` overflow.
    buckets: [u64; PHASE_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        let slot = PHASE_BUCKETS
            .iter()
            .position(|le| value <= *le)
            .unwrap_or(PHASE_BUCKETS.len());
        if let Some(b) = self.buckets.get_mut(slot) {
            *b += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// What the daemon counts that the registry and the job list do not keep.
#[derive(Debug, Default)]
pub struct Metrics {
    phases: Mutex<BTreeMap<String, Histogram>>,
    bytes: AtomicU64,
}

impl Metrics {
    /// Phase `phase` of a restore took `secs` seconds (negative or not-a-number values are
    /// ignored).
    pub fn phase_took(&self, phase: &str, secs: f64) {
        if !(secs >= 0.0 && secs.is_finite()) {
            return;
        }
        self.phases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(phase.to_string())
            .or_default()
            .observe(secs);
    }

    /// `n` more bytes went to a phone.
    pub fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn phases(&self) -> BTreeMap<String, Histogram> {
        self.phases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts the family `name`: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A float as the format writes it (`+Inf`, `-Inf`, `NaN`).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Apple's error number of a job, when it carries one (`number` in its JSON).
fn number_of(job: &JobRecord) -> Option<String> {
    let value = serde_json::to_value(job).ok()?;
    match value.get("number")? {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The whole exposition for `shared` now.
pub fn render(shared: &Shared) -> String {
    let mut x = Exposition::default();
    let jobs = shared.jobs().list();

    let mut restores: BTreeMap<(&str, String), u64> = BTreeMap::new();
    let mut port_failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut running = 0u64;
    let mut queued = 0u64;
    for job in &jobs {
        let result = match job.state {
            JobState::Running => {
                running += 1;
                continue;
            }
            JobState::Queued => {
                queued += 1;
                continue;
            }
            JobState::Succeeded => "succeeded",
            JobState::Failed => {
                let port = job.port.clone().unwrap_or_else(|| "unknown".into());
                *port_failures.entry(port).or_default() += 1;
                "failed"
            }
        };
        let number = number_of(job).unwrap_or_else(|| "none".into());
        *restores.entry((result, number)).or_default() += 1;
    }
    x.family(
        "restation_restores_total",
        "counter",
        "Restores that ended, by result and Apple error number (none: the job has no number).",
    );
    for ((result, number), n) in &restores {
        x.sample(
            "restation_restores_total",
            &[("result", result), ("number", number)],
            n,
        );
    }
    x.family(
        "restation_restores_running",
        "gauge",
        "Restores running now.",
    );
    x.sample("restation_restores_running", &[], running);
    x.family(
        "restation_restores_queued",
        "gauge",
        "Restores waiting for a slot on their USB host controller.",
    );
    x.sample("restation_restores_queued", &[], queued);
    x.family(
        "restation_port_failures_total",
        "counter",
        "Failed restores per physical USB port.",
    );
    for (port, n) in &port_failures {
        x.sample("restation_port_failures_total", &[("port", port)], n);
    }
    x.family(
        "restation_port_suspect",
        "gauge",
        "1 when port health suspects the port or its cable, else 0.",
    );
    let live = super::port_health::live_ports(shared);
    for port in shared.ports().report(&live).ports {
        let suspect = u64::from(port.health == super::port_health::Health::Suspect);
        x.sample("restation_port_suspect", &[("port", &port.port)], suspect);
    }

    x.family(
        "restation_phase_duration_seconds",
        "histogram",
        "How long each phase of a restore took.",
    );
    for (phase, h) in shared.metrics().phases() {
        let mut cumulative = 0u64;
        for (le, n) in PHASE_BUCKETS.iter().zip(h.buckets.iter()) {
            cumulative += n;
            x.sample(
                "restation_phase_duration_seconds_bucket",
                &[("phase", &phase), ("le", &float(*le))],
                cumulative,
            );
        }
        x.sample(
            "restation_phase_duration_seconds_bucket",
            &[("phase", &phase), ("le", "+Inf")],
            h.count,
        );
        x.sample(
            "restation_phase_duration_seconds_sum",
            &[("phase", &phase)],
            float(h.sum),
        );
        x.sample(
            "restation_phase_duration_seconds_count",
            &[("phase", &phase)],
            h.count,
        );
    }

    x.family(
        "restation_transferred_bytes_total",
        "counter",
        "Bytes sent to phones by restores.",
    );
    x.sample(
        "restation_transferred_bytes_total",
        &[],
        shared.metrics().bytes.load(Ordering::Relaxed),
    );

    let (by_mode, counters) = {
        let registry = shared.registry();
        let mut by_mode: BTreeMap<&'static str, u64> = MODES.iter().map(|m| (*m, 0)).collect();
        for e in registry.entries().filter(|e| e.present) {
            *by_mode.entry(e.mode.as_str()).or_default() += 1;
        }
        (by_mode, registry.counters())
    };
    x.family("restation_phones", "gauge", "Phones on the bus, by mode.");
    for (mode, n) in &by_mode {
        x.sample("restation_phones", &[("mode", mode)], n);
    }

    let api_refused = shared.api_refused.load(Ordering::Relaxed);
    let malformed = shared.usbmuxd_malformed.load(Ordering::Relaxed);
    let sessions = shared.sessions().values().filter(|s| s.is_alive()).count() as u64;
    let plain: [(&str, &str, &str, u64); 8] = [
        (
            "restation_devices_ignored_total",
            "counter",
            "USB arrivals that were not phones.",
            counters.ignored,
        ),
        (
            "restation_identify_failed_total",
            "counter",
            "Identifications that failed.",
            counters.identify_failed,
        ),
        (
            "restation_identify_vanished_total",
            "counter",
            "Phones that left while being identified.",
            counters.vanished,
        ),
        (
            "restation_identify_stale_total",
            "counter",
            "Identification results for arrivals no longer current.",
            counters.stale,
        ),
        (
            "restation_identifying",
            "gauge",
            "Arrivals being identified now.",
            counters.identifying,
        ),
        (
            "restation_api_refused_total",
            "counter",
            "API requests refused with a 4xx, and connections that were not HTTP/1.1.",
            api_refused,
        ),
        (
            "restation_usbmuxd_malformed_total",
            "counter",
            "usbmuxd-socket clients closed for breaking the protocol.",
            malformed,
        ),
        (
            "restation_mux_sessions",
            "gauge",
            "Phones with a running mux session.",
            sessions,
        ),
    ];
    for (name, kind, help, value) in plain {
        x.family(name, kind, help);
        x.sample(name, &[], value);
    }
    x.finish()
}

/// `GET /metrics`.
pub async fn route(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&shared))
}

/// Times phases from job updates, sans-IO: each update goes in with the time it was seen;
/// out comes the phase that just ended and how long it took.
#[derive(Debug, Default)]
pub struct PhaseTimer {
    current: HashMap<u64, (String, Instant)>,
}

impl PhaseTimer {
    /// A timer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `job` as it is at `now`; the phase that ended, with its duration in seconds.
    pub fn update(&mut self, job: &JobRecord, now: Instant) -> Option<(String, f64)> {
        let seen = self.current.get(&job.id).cloned();
        if job.state != JobState::Running {
            self.current.remove(&job.id);
            return seen.map(|(phase, since)| (phase, now.duration_since(since).as_secs_f64()));
        }
        match seen {
            Some((phase, _)) if phase == job.phase => None,
            Some((phase, since)) => {
                self.current.insert(job.id, (job.phase.clone(), now));
                Some((phase, now.duration_since(since).as_secs_f64()))
            }
            None => {
                self.current.insert(job.id, (job.phase.clone(), now));
                None
            }
        }
    }
}

/// Feeds [`Metrics::phase_took`] from the job update stream until `shutdown` resolves.
pub async fn observe_jobs(shared: Arc<Shared>, shutdown: impl std::future::Future<Output = ()>) {
    let mut updates = shared.jobs().subscribe();
    let mut timer = PhaseTimer::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            update = updates.recv() => match update {
                Ok(update) => {
                    if let Some((phase, secs)) = timer.update(&update.job, Instant::now()) {
                        shared.metrics().phase_took(&phase, secs);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "metrics fell behind the job updates");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A job record from its JSON (so that fields added to it later need no change here).
    fn job(id: u64, phase: &str, state: JobState) -> JobRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "ecid": "0x1", "port": "1-1.2", "product_type": null, "ipsw": "x",
            "build_version": "22A1", "behavior": "Erase", "start_mode": "dfu",
            "state": state, "phase": phase, "step": 0, "steps": 1, "step_text": "",
            "progress": 0.0, "started_ms": 0, "ended_ms": null, "error": null,
        }))
        .unwrap()
    }

    #[test]
    fn the_phase_timer_reports_each_phase_once_when_it_ends() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut timer = PhaseTimer::new();
        assert_eq!(
            timer.update(&job(1, "upload", JobState::Running), at(0)),
            None
        );
        assert_eq!(
            timer.update(&job(1, "upload", JobState::Running), at(3)),
            None
        );
        assert_eq!(
            timer.update(&job(1, "restore", JobState::Running), at(5)),
            Some(("upload".into(), 5.0))
        );
        assert_eq!(
            timer.update(&job(1, "restore", JobState::Succeeded), at(65)),
            Some(("restore".into(), 60.0))
        );
        assert_eq!(
            timer.update(&job(1, "restore", JobState::Succeeded), at(70)),
            None
        );
    }

    #[test]
    fn label_values_and_help_are_escaped_and_floats_are_spelled_as_the_format_wants() {
        let mut x = Exposition::default();
        x.family("a_total", "counter", "back\\slash\nnewline");
        x.sample("a_total", &[("l", "q\"b\\n\nx")], 1);
        assert_eq!(
            x.finish(),
            "# HELP a_total back\\\\slash\\nnewline\n# TYPE a_total counter\n\
             a_total{l=\"q\\\"b\\\\n\\nx\"} 1\n"
        );
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(60.0), "60");
    }

    #[test]
    fn histograms_count_into_the_first_bucket_that_holds_the_value() {
        let m = Metrics::default();
        m.phase_took("upload", 0.5);
        m.phase_took("upload", 1.0);
        m.phase_took("upload", 4000.0);
        m.phase_took("upload", f64::NAN);
        m.phase_took("upload", -1.0);
        let h = m.phases().remove("upload").unwrap();
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets.first(), Some(&2));
        assert_eq!(h.buckets.last(), Some(&1));
        assert_eq!(h.sum, 4001.5);
    }
}
