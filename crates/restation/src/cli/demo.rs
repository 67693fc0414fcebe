//! `restation demo [--devices N] [--fault PORT=SPEC ...] [--json] [--keep-running]`: the whole
//! station on a machine without an iPhone.
//!
//! It starts the daemon in this process with a bench of virtual phones (mixed models, in
//! recovery, DFU and normal mode in turn), the loopback signing stand-in their images must come
//! from, and synthetic IPSWs staged into a store of the demo's own on first run; restores every
//! phone at once, shows each port's progress live, prints where the dashboard is, and ends with
//! a table: port, model, ECID, result, Apple's number, attempts, duration, and what the phone's
//! fault predicted.
//!
//! Without `--fault`, two phones get faults a shop meets every week: a cable that drops once
//! in the middle of the OS image (the retry ladder re-enters recovery and the phone restores
//! on the second attempt) and a phone whose restore ramdisk cannot prepare its disk (the
//! phone's own status 6, which no retry changes). When the ladder asks for the technician
//! (put the phone in DFU mode, move it to another port), the demo plays the technician on the
//! virtual bench and says what it did.
//!
//! Exit status: 0 when every phone ended as its fault predicts (restored when it has none), 1
//! otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::serve::{SimBench, Station};
use crate::daemon::bench::{BenchSpec, SimFault};
use crate::daemon::jobs::{self, JobRecord, JobRequest, JobState};

/// Phones in the default demo.
const DEFAULT_DEVICES: usize = 6;
/// The OS image of the synthetic IPSWs: small enough to stage in seconds, large enough that
/// the progress bars move.
const OS_SIZE: u64 = 8 << 20;
/// How long the bench has to identify every phone.
const IDENTIFY: Duration = Duration::from_secs(60);
/// How long the virtual technician takes to act on a prompt.
const TECHNICIAN: Duration = Duration::from_millis(300);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many virtual phones.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DEVICES as u16,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    devices: u16,
    /// Give the phone of PORT (1-based index, or a path like 1-1.2) faults in the virtual
    /// phone's fault language (docs/faults.md), e.g. `3=asr:unplug@50%x1`; repeatable.
    /// Without it, two phones get the demo's own faults.
    #[arg(long, value_name = "PORT=SPEC")]
    fault: Vec<SimFault>,
    /// No faults at all: every phone should restore.
    #[arg(long, conflicts_with = "fault")]
    no_faults: bool,
    /// One JSON line per job change, then the summary as one JSON object, instead of the
    /// progress display.
    #[arg(long)]
    json: bool,
    /// Keep the station (API, dashboard, phones) running after the summary, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// Run the virtual phones N times faster than real time (their reboots and restore steps).
    #[arg(long, value_name = "N", default_value_t = 20)]
    speed: u32,
    /// The dashboard's address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http: std::net::SocketAddr,
    /// The demo's folder: its IPSW store (kept between runs), the API socket, pair records
    /// [default: $XDG_CACHE_HOME/restation/demo, else ~/.cache/restation/demo].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the job history in this SQLite file (or postgres:// URL) [default: in memory].
    #[arg(long, value_name = "PATH|URL")]
    history: Option<PathBuf>,
    /// Restores run at once on the bench's (one) host controller; the others are queued
    /// (0: no limit).
    #[arg(long, value_name = "N", default_value_t = jobs::DEFAULT_PER_CONTROLLER)]
    max_restores_per_controller: usize,
}

/// What a phone's fault predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
enum Expect {
    /// It restores (perhaps after retries).
    Restored,
    /// It fails with this number.
    Failed { number: i64 },
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Restored => f.write_str("restored"),
            Expect::Failed { number } => write!(f, "fails {number}"),
        }
    }
}

/// A fault the demo gives a phone when the command line gives none, with what it predicts.
struct DemoFault {
    spec: &'static str,
    expect: Expect,
    why: &'static str,
}

/// The demo's own faults, in the order they are given to ports.
const DEMO_FAULTS: [DemoFault; 2] = [
    DemoFault {
        spec: "asr:unplug@50%x1",
        expect: Expect::Restored,
        why: "the cable drops once in the middle of the OS image",
    },
    DemoFault {
        spec: "final-status:status=6",
        expect: Expect::Failed { number: 6 },
        why: "the phone cannot prepare its disk (status 6)",
    },
];

/// The ports (1-based) the demo's faults go to on a bench of `devices` phones: 4 and 5 when
/// there are enough, else the last ones.
fn demo_fault_ports(devices: usize) -> Vec<usize> {
    if devices >= 5 {
        vec![4, 5]
    } else {
        (1..=devices).rev().take(DEMO_FAULTS.len()).collect()
    }
}

/// Empty ports after the phones', where the technician moves a phone off a suspect port.
fn spare_ports(devices: usize) -> usize {
    (devices / 8).clamp(2, 8)
}

/// One phone's line of the summary.
#[derive(Debug, Clone, Serialize)]
struct Row {
    port: String,
    model: String,
    ecid: String,
    start_mode: String,
    job: Option<u64>,
    result: String,
    number: Option<i64>,
    meaning: Option<String>,
    /// A restored phone's failures on the way (the ladder retried them).
    retried_after: Option<i64>,
    attempts: u32,
    seconds: f64,
    fault: Option<String>,
    expected: Option<Expect>,
    as_expected: bool,
    error: Option<String>,
}

/// The summary `--json` prints last.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    event: &'static str,
    phones: usize,
    restored: usize,
    failed: usize,
    as_expected: bool,
    wall_seconds: f64,
    dashboard: Option<String>,
    rows: &'a [Row],
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    // The progress display is the output; the log says only what went wrong.
    if std::env::var_os("RESTATION_LOG").is_none() {
        std::env::set_var("RESTATION_LOG", "error");
    }
    super::serve::init_logging();
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => default_dir(),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the demo's folder {}", dir.display()))?;
    let devices = usize::from(args.devices);
    let spec = BenchSpec::Mixed(devices);
    let (faults, expected) = faults_of(args)?;
    let say = |line: &str| {
        if !args.json {
            eprintln!("{line}");
        }
    };

    // The firmware: one synthetic IPSW per model on the bench, staged once.
    let store = dir.join("store");
    let mut ipsws = BTreeMap::new();
    for index in 0..devices {
        let profile = crate::daemon::bench::profile(index)?;
        if !ipsws.contains_key(&profile.product_type) {
            let id = stage_synthetic(&store, &dir, &profile.product_type, &say)?;
            ipsws.insert(profile.product_type.clone(), id);
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("restation")
        .build()
        .context("starting the tokio runtime")?;
    let bench = SimBench::attach(
        &spec,
        1,
        args.speed,
        &faults,
        spare_ports(devices),
        false,
        runtime.handle(),
    )?;
    let socket = dir.join(format!("restation-{}.sock", std::process::id()));
    let settings = super::serve::Settings {
        socket: socket.clone(),
        usbmuxd_socket: None,
        pair_records: dir.join("lockdown"),
        usb: false,
        sim: Some(spec.clone()),
        store: store.clone(),
        history: args.history.clone(),
        tss_url: tss::client::DEFAULT_URL.to_string(),
        tss_ca: None,
        http: Some(args.http),
        http_token: None,
        per_controller: args.max_restores_per_controller,
    };
    let personalization = super::serve::personalization(&settings, Some(&bench), runtime.handle())?;
    let history = super::serve::open_history(&settings)?;
    let backend: Arc<dyn usb::UsbBackend> = Arc::clone(&bench.hub) as Arc<dyn usb::UsbBackend>;
    let outcome = runtime.block_on(async {
        let station = Station::start(backend, &settings, personalization, history).await?;
        let dashboard = station.http.map(|addr| format!("http://{addr}/"));
        if let Some(url) = &dashboard {
            say(&format!("dashboard: {url}"));
        }
        say(&format!(
            "API: restation devices --socket {}",
            station.socket().display()
        ));
        let result = drive(args, &station, &bench, &ipsws, &expected, dashboard).await;
        if result.is_ok() && args.keep_running {
            say("the station keeps running; Ctrl-C stops it");
            let signal = super::serve::wait_for_signal().await;
            tracing::info!(signal, "stopping the demo");
        }
        station.stop().await?;
        result
    });
    runtime.block_on(bench.standin.shutdown());
    let ok = outcome?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `$XDG_CACHE_HOME/restation/demo`, else `~/.cache/restation/demo`, else one in the temp
/// folder.
fn default_dir() -> PathBuf {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(cache) = nonempty("XDG_CACHE_HOME") {
        return PathBuf::from(cache).join("restation/demo");
    }
    if let Some(home) = nonempty("HOME") {
        return PathBuf::from(home).join(".cache/restation/demo");
    }
    std::env::temp_dir().join("restation-demo")
}

/// What each faulted port (1-based) predicts (`None`: a fault from the command line, whose
/// outcome the demo does not guess).
type Predictions = BTreeMap<usize, Option<Expect>>;

/// The bench's faults and their predictions.
fn faults_of(args: &DemoArgs) -> anyhow::Result<(Vec<SimFault>, Predictions)> {
    let mut expected = BTreeMap::new();
    if args.no_faults {
        return Ok((Vec::new(), expected));
    }
    if !args.fault.is_empty() {
        let paths: Vec<usb::PortPath> = (1..=args.devices)
            .filter_map(|i| usb::PortPath::new(1, &[1, u8::try_from(i).ok()?]).ok())
            .collect();
        for fault in &args.fault {
            let Some(index) = fault.port_index(&paths) else {
                bail!(
                    "--fault names port {:?}; the demo's bench has ports 1 to {} (1-1.1 to 1-1.{})",
                    fault.port,
                    args.devices,
                    args.devices
                );
            };
            expected.insert(index + 1, None);
        }
        return Ok((args.fault.clone(), expected));
    }
    let mut faults = Vec::new();
    for (port, fault) in demo_fault_ports(usize::from(args.devices))
        .into_iter()
        .zip(&DEMO_FAULTS)
    {
        faults.push(
            format!("{port}={}", fault.spec)
                .parse::<SimFault>()
                .with_context(|| format!("the demo's fault {}", fault.spec))?,
        );
        expected.insert(port, Some(fault.expect));
    }
    Ok((faults, expected))
}

/// The id of the demo's synthetic IPSW for `product_type` in `store`, synthesized and staged
/// when it is not there yet.
fn stage_synthetic(
    store: &Path,
    dir: &Path,
    product_type: &str,
    say: &dyn Fn(&str),
) -> anyhow::Result<String> {
    let name = format!("demo-{}.ipsw", product_type.replace(',', "_"));
    let opened = ipsw::store::Store::open(store)
        .with_context(|| format!("opening the demo's IPSW store {}", store.display()))?;
    let staged = opened.list().unwrap_or_default().into_iter().find(|r| {
        r.original_name == name
            && r.status == ipsw::store::Status::Verified
            && r.supported_product_types.iter().any(|p| p == product_type)
    });
    if let Some(record) = staged {
        return Ok(record.id);
    }
    let profile = ipsw::profile::profile(product_type)
        .with_context(|| format!("no synthetic firmware profile for {product_type}"))?;
    say(&format!(
        "first run: staging a synthetic IPSW for {product_type} (iOS {} {}) into {}",
        profile.product_version,
        profile.build,
        store.display()
    ));
    let path = dir.join(&name);
    ipsw::synth::synthesize(
        profile,
        &ipsw::synth::SynthOptions { os_size: OS_SIZE },
        &path,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    let staged = opened.stage_file(&path, &ipsw::store::StageOptions::default());
    let _ = std::fs::remove_file(&path);
    let staged = staged.with_context(|| format!("staging {}", path.display()))?;
    Ok(staged.record.id)
}

/// Waits for the bench, starts every restore, follows them to their ends (playing the
/// technician) and prints the summary; whether every phone ended as predicted.
async fn drive(
    args: &DemoArgs,
    station: &Station,
    bench: &SimBench,
    ipsws: &BTreeMap<String, String>,
    expected: &Predictions,
    dashboard: Option<String>,
) -> anyhow::Result<bool> {
    let shared = &station.shared;
    let started = Instant::now();
    let devices = usize::from(args.devices);
    let identified = tokio::time::timeout(
        IDENTIFY,
        shared.wait_for_entry(|registry| {
            let mut phones: Vec<_> = registry
                .entries()
                .filter(|e| e.present && e.identity.ecid.is_some() && e.identity.chip_id.is_some())
                .map(|e| {
                    (
                        e.port.clone(),
                        e.id.clone(),
                        e.identity.product_type.clone(),
                        e.mode,
                    )
                })
                .collect();
            (phones.len() >= devices).then(|| {
                phones.sort_by(|a, b| a.0.cmp(&b.0));
                phones
            })
        }),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!("the virtual bench's phones were not identified in {IDENTIFY:?}")
    })?;

    let Some(ctx) = shared.job_context().cloned() else {
        bail!("the station cannot run restore jobs");
    };
    // Subscribed before the first job starts, so that no change is missed.
    let mut updates = shared.jobs().subscribe();
    let mut view = View::new(args.json);
    let mut rows: Vec<Row> = Vec::new();
    let mut running: BTreeMap<u64, usize> = BTreeMap::new();
    for (index, (port, ecid, product_type, mode)) in identified.into_iter().enumerate() {
        let port_text = port.as_ref().map(ToString::to_string).unwrap_or_default();
        let number = index + 1;
        let fault = args
            .fault
            .iter()
            .filter(|_| !args.no_faults)
            .find(|f| f.port == number.to_string() || f.port == port_text)
            .map(|f| f.to_string())
            .or_else(|| {
                (args.fault.is_empty() && !args.no_faults)
                    .then(|| demo_fault_ports(devices).iter().position(|p| *p == number))
                    .flatten()
                    .and_then(|i| DEMO_FAULTS.get(i))
                    .map(|f| format!("{} ({})", f.spec, f.why))
            });
        let model = product_type.clone().unwrap_or_else(|| "?".into());
        let mut row = Row {
            port: port_text.clone(),
            model: model.clone(),
            ecid: ecid.clone(),
            start_mode: mode.to_string(),
            job: None,
            result: "not started".into(),
            number: None,
            meaning: None,
            retried_after: None,
            attempts: 0,
            seconds: 0.0,
            fault,
            expected: match expected.get(&number) {
                Some(e) => *e,
                None => Some(Expect::Restored),
            },
            as_expected: false,
            error: None,
        };
        let Some(ipsw) = ipsws.get(&model) else {
            row.error = Some(format!("no synthetic IPSW for {model}"));
            rows.push(row);
            continue;
        };
        let request = JobRequest {
            ecid: Some(ecid.clone()),
            port: None,
            ipsw: ipsw.clone(),
            behavior: None,
        };
        let (start_shared, start_ctx) = (Arc::clone(shared), ctx.clone());
        let job =
            tokio::task::spawn_blocking(move || jobs::start(&start_shared, &start_ctx, &request))
                .await
                .context("starting a job panicked")?;
        match job {
            Ok(id) => {
                row.job = Some(id);
                row.result = "running".into();
                running.insert(id, rows.len());
                view.add(id, &row);
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        rows.push(row);
    }

    // Follow the jobs to their ends.
    let mut technician = Technician::default();
    while !running.is_empty() {
        let update = match updates.recv().await {
            Ok(update) => update.job,
            Err(RecvError::Lagged(_)) => {
                // Missed changes: read every running job as it is now.
                for id in running.keys().copied().collect::<Vec<_>>() {
                    if let Some(job) = shared.jobs().get(id) {
                        settle(
                            &job,
                            &mut running,
                            &mut rows,
                            &mut view,
                            &mut technician,
                            bench,
                        );
                    }
                }
                continue;
            }
            Err(RecvError::Closed) => bail!("the station stopped while jobs ran"),
        };
        settle(
            &update,
            &mut running,
            &mut rows,
            &mut view,
            &mut technician,
            bench,
        );
    }
    view.done();
    let wall = started.elapsed().as_secs_f64();
    let all = rows.iter().all(|r| r.as_expected);
    if args.json {
        let restored = rows.iter().filter(|r| r.result == "restored").count();
        println!(
            "{}",
            serde_json::to_string(&Summary {
                event: "summary",
                phones: rows.len(),
                restored,
                failed: rows.len() - restored,
                as_expected: all,
                wall_seconds: wall,
                dashboard,
                rows: &rows,
            })?
        );
    } else {
        print_table(&rows, wall);
    }
    Ok(all)
}

/// Takes one job change: the display, the technician, and the row when the job ended.
fn settle(
    job: &JobRecord,
    running: &mut BTreeMap<u64, usize>,
    rows: &mut [Row],
    view: &mut View,
    technician: &mut Technician,
    bench: &SimBench,
) {
    let Some(&index) = running.get(&job.id) else {
        return;
    };
    view.show(job);
    if let Some(prompt) = &job.operator {
        if let Some(done) = technician.act(job.id, prompt, job, bench) {
            view.note(job.id, &done);
        }
    }
    if job.state.is_active() {
        return;
    }
    running.remove(&job.id);
    let Some(row) = rows.get_mut(index) else {
        return;
    };
    row.result = match job.state {
        JobState::Succeeded => "restored".into(),
        _ => "failed".into(),
    };
    if job.state == JobState::Succeeded {
        row.retried_after = job.number;
    } else {
        row.number = job.number;
    }
    row.meaning = job.meaning.clone();
    row.attempts = job.attempts;
    row.seconds = job
        .ended_ms
        .unwrap_or(job.started_ms)
        .saturating_sub(job.started_ms) as f64
        / 1000.0;
    row.error = job.error.clone();
    row.as_expected = match row.expected {
        None => true,
        Some(Expect::Restored) => job.state == JobState::Succeeded,
        Some(Expect::Failed { number }) => {
            job.state == JobState::Failed && job.number == Some(number)
        }
    };
    view.end(job, row);
}

/// Plays the technician on the virtual bench: what a person at the bench does when a job
/// asks, a moment after it asks: put the phone in DFU mode, or move it to a free port.
#[derive(Default)]
struct Technician {
    /// The prompts already acted on, per job.
    done: BTreeMap<u64, String>,
    /// The ports each job's phone has been on (a technician does not move a phone back to a
    /// port the station suspects).
    visited: BTreeMap<u64, Vec<usize>>,
}

impl Technician {
    fn act(
        &mut self,
        job: u64,
        prompt: &str,
        record: &JobRecord,
        bench: &SimBench,
    ) -> Option<String> {
        if self.done.get(&job).is_some_and(|p| p == prompt) {
            return None;
        }
        self.done.insert(job, prompt.to_string());
        let hub = &bench.hub;
        let ecid = u64::from_str_radix(record.ecid.trim_start_matches("0x"), 16).ok()?;
        let Some(at) = (0..hub.port_count())
            .find(|i| hub.with_phone(*i, |p| p.profile().ecid == ecid) == Some(true))
        else {
            return Some(format!("technician: cannot find the phone for: {prompt}"));
        };
        let here = hub
            .port_path(at)
            .map(ToString::to_string)
            .unwrap_or_default();
        let visited = self.visited.entry(job).or_default();
        if !visited.contains(&at) {
            visited.push(at);
        }
        if prompt.contains("DFU") {
            let now = hub.clock().now();
            hub.with_phone(at, |phone| phone.enter_dfu(now, TECHNICIAN))?;
            return Some(format!(
                "technician: put the phone on port {here} in DFU mode"
            ));
        }
        if prompt.contains("force-restart it") {
            let now = hub.clock().now();
            hub.with_phone(at, |phone| phone.force_restart(now, TECHNICIAN))?;
            return Some(format!(
                "technician: force-restarted the phone on port {here}"
            ));
        }
        if prompt.contains("move the phone") {
            let Some(free) = (0..hub.port_count())
                .find(|i| !visited.contains(i) && hub.with_phone(*i, |_| ()).is_none())
            else {
                return Some(format!("technician: no free port for: {prompt}"));
            };
            let there = hub
                .port_path(free)
                .map(ToString::to_string)
                .unwrap_or_default();
            return match hub.move_phone(at, free) {
                Ok(true) => {
                    visited.push(free);
                    Some(format!(
                        "technician: moved the phone from port {here} to port {there}"
                    ))
                }
                Ok(false) | Err(_) => Some(format!(
                    "technician: could not move the phone from port {here} to {there}"
                )),
            };
        }
        Some(format!("technician needed: {prompt}"))
    }
}

/// The live display: a bar per port on a terminal, a line per change otherwise, JSON lines
/// with `--json`.
struct View {
    json: bool,
    multi: Option<MultiProgress>,
    bars: BTreeMap<u64, ProgressBar>,
    last: BTreeMap<u64, (String, JobState, u32)>,
    ports: BTreeMap<u64, String>,
}

impl View {
    fn new(json: bool) -> View {
        let multi = (!json && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        View {
            json,
            multi,
            bars: BTreeMap::new(),
            last: BTreeMap::new(),
            ports: BTreeMap::new(),
        }
    }

    fn add(&mut self, id: u64, row: &Row) {
        let label = format!(
            "{:<7} {:<11} {:<18} {:<8}",
            row.port, row.model, row.ecid, row.start_mode
        );
        self.ports.insert(id, row.port.clone());
        if let Some(multi) = &self.multi {
            let bar = multi.add(ProgressBar::new(1000));
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:24}] {percent:>3}% {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(label);
            self.bars.insert(id, bar);
        } else if !self.json {
            eprintln!("{label} job {id} started");
        }
    }

    fn show(&mut self, job: &JobRecord) {
        if self.json {
            if let Ok(line) = serde_json::to_string(job) {
                println!("{line}");
            }
            return;
        }
        if let Some(bar) = self.bars.get(&job.id) {
            bar.set_position((job.progress.clamp(0.0, 1.0) * 1000.0) as u64);
            let mut msg = format!("{} {}/{} {}", job.phase, job.step, job.steps, job.step_text);
            if job.state == JobState::Queued {
                msg = job.step_text.clone();
            }
            if job.attempts > 1 {
                msg = format!("attempt {}: {msg}", job.attempts);
            }
            bar.set_message(msg);
            return;
        }
        // Not a terminal: a line when the phase, the state or the attempt changes.
        let now = (job.phase.clone(), job.state, job.attempts);
        if self.last.get(&job.id) != Some(&now) {
            let port = self.ports.get(&job.id).map(String::as_str).unwrap_or("?");
            match (&job.next_step, job.number) {
                (Some(next), Some(n)) if job.attempts > 1 && job.state == JobState::Running => {
                    eprintln!(
                        "{port:<7} attempt {} after {n}: {next}; {}",
                        job.attempts, job.phase
                    )
                }
                _ if job.state == JobState::Queued => eprintln!("{port:<7} {}", job.step_text),
                _ => eprintln!("{port:<7} {}", job.phase),
            }
            self.last.insert(job.id, now);
        }
    }

    fn note(&self, id: u64, line: &str) {
        if self.json {
            return;
        }
        let port = self.ports.get(&id).map(String::as_str).unwrap_or("?");
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(format!("{port:<7} {line}"));
            }
            None => eprintln!("{port:<7} {line}"),
        }
    }

    fn end(&mut self, job: &JobRecord, row: &Row) {
        let line = match (job.state, job.number) {
            (JobState::Succeeded, _) => format!("restored in {:.1} s", row.seconds),
            (_, Some(n)) => format!(
                "failed {n}: {}",
                job.meaning.as_deref().unwrap_or("see restation explain")
            ),
            _ => format!("failed: {}", job.error.as_deref().unwrap_or("?")),
        };
        if let Some(bar) = self.bars.get(&job.id) {
            bar.set_position(if job.state == JobState::Succeeded {
                1000
            } else {
                bar.position()
            });
            bar.finish_with_message(line);
        } else if !self.json {
            let port = self.ports.get(&job.id).map(String::as_str).unwrap_or("?");
            eprintln!("{port:<7} {line}");
        }
    }

    fn done(&mut self) {
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }
}

/// The summary table, on stdout.
fn print_table(rows: &[Row], wall: f64) {
    let line = |cells: [&str; 9]| {
        let text = format!(
            "{:<7}  {:<11}  {:<18}  {:<8}  {:<8}  {:>6}  {:>8}  {:>7}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8]
        );
        println!("{}", text.trim_end());
    };
    line([
        "port", "model", "ecid", "from", "result", "number", "attempts", "seconds", "expected",
    ]);
    for row in rows {
        let number = row
            .number
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into());
        let mut expected = row
            .expected
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into());
        if !row.as_expected {
            expected.push_str("  UNEXPECTED");
        }
        line([
            &row.port,
            &row.model,
            &row.ecid,
            &row.start_mode,
            &row.result,
            &number,
            &row.attempts.to_string(),
            &format!("{:.1}", row.seconds),
            &expected,
        ]);
    }
    let restored = rows.iter().filter(|r| r.result == "restored").count();
    println!(
        "{} phones: {restored} restored, {} failed, in {wall:.1} s",
        rows.len(),
        rows.len() - restored
    );
    for row in rows {
        if let Some(fault) = &row.fault {
            let explained = |n: i64| match &row.meaning {
                Some(m) => format!("{n} ({m}; restation explain {n})"),
                None => n.to_string(),
            };
            let outcome = match (row.number, row.retried_after) {
                (Some(n), _) => format!("failed {} after {} attempts", explained(n), row.attempts),
                (None, Some(n)) => format!(
                    "{} retried by the ladder; restored on attempt {}",
                    explained(n),
                    row.attempts
                ),
                (None, None) => row.result.clone(),
            };
            println!("  port {}: fault {fault} -> {outcome}", row.port);
        } else if let Some(error) = row.error.as_ref().filter(|_| !row.as_expected) {
            println!("  port {}: {error}", row.port);
        }
    }
}
