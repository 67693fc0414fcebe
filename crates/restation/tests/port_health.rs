//! Port health end to end, in process: the daemon (registry driver, restore jobs, the API on a
//! unix socket) over a virtual hub of two ports, phones plugged and moved by the test as a
//! technician would, `GET /ports` read over HTTP.
//!
//! - A bad port (every phone plugged there fails its DFU uploads with EPROTO: the fault
//!   belongs to the port, the test gives it to each phone it plugs there and takes it away
//!   when the phone moves) fails three different phones: it is flagged suspect with its
//!   reasons, and each phone goes through on the other port. A daemon restarted on the same
//!   history file still knows the port is suspect.
//! - A full-speed cable: the job asks the operator to move the phone (a cable problem) before
//!   anything is sent, and `GET /ports` says why.
//! - An unsigned build (TSS STATUS 94): 3194 after one attempt, and the port's health is
//!   untouched.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use restation::daemon::history::{History, HistoryStore};
use restation::daemon::jobs::{self, JobRecord, JobRequest, JobState};
use restation::daemon::restoring::{Personalize, PersonalizeError};
use restation::daemon::{api, Daemon, Shared};
use sim::clock::{Clock, ScaledClock};
use sim::hub::VirtualHub;
use sim::injector::Faults;
use sim::phone::{Mode, Options, Phone};
use sim::profile::{DfuStage, Profile};

const DEADLINE: Duration = Duration::from_secs(120);
const BAD: &str = "1-1.1";
const GOOD: &str = "1-1.2";

/// The daemon over a two-port hub, with its API on a unix socket.
struct Station {
    hub: VirtualHub,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    ctx: jobs::JobContext,
    socket: PathBuf,
    ipsw: String,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A synthetic iPhone14,3 IPSW, staged in `store`; its id.
fn staged(dir: &Path, store: &Path) -> String {
    let path = dir.join("synth.ipsw");
    let profile = ipsw::profile::profile("iPhone14,3").unwrap();
    ipsw::synth::synthesize(
        profile,
        &ipsw::synth::SynthOptions { os_size: 2 << 20 },
        &path,
    )
    .unwrap();
    let store = ipsw::store::Store::open(store).unwrap();
    let staged = store
        .stage_file(&path, &ipsw::store::StageOptions::default())
        .unwrap();
    staged.record.id
}

impl Station {
    async fn start(
        dir: &Path,
        history: Arc<dyn HistoryStore>,
        personalization: Arc<dyn jobs::Personalization>,
    ) -> Station {
        let clock: Arc<dyn Clock> = Arc::new(ScaledClock::new(50));
        let hub = VirtualHub::new(2, Arc::clone(&clock));
        let store = dir.join("store");
        let ipsw = staged(dir, &store);
        let shared = Shared::new();
        shared.set_history(history);
        let backend: Arc<dyn usb::UsbBackend> = Arc::new(hub.clone());
        let ctx = jobs::JobContext {
            backend: Arc::clone(&backend),
            store,
            personalization,
            deadlines: restore::phase::Deadlines::default(),
            runtime: tokio::runtime::Handle::current(),
            pair_records: None,
        };
        shared.enable_jobs(ctx.clone());
        let socket = dir.join(format!("api-{}.sock", std::process::id()));
        let listener = api::bind(&socket).unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let driver = {
            let daemon = Daemon::new(backend, Arc::clone(&shared));
            let stopped = stopped();
            tokio::spawn(async move {
                daemon.run(stopped).await.unwrap();
            })
        };
        let server = tokio::spawn(api::serve(listener, Arc::clone(&shared), stopped()));
        Station {
            hub,
            clock,
            shared,
            ctx,
            socket,
            ipsw,
            stop: Some(stop),
            tasks: vec![driver, server],
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }

    /// A phone in DFU mode with `faults`, plugged into port `index`; its ECID, once the
    /// daemon has identified it there.
    async fn plug(&self, index: usize, seed: u64, faults: &str) -> u64 {
        let profile = Profile::for_product_type("iPhone14,3", seed).unwrap();
        let ecid = profile.ecid;
        let options = Options {
            start: Mode::Dfu(DfuStage::SecureRom),
            faults: if faults.is_empty() {
                sim::fault::FaultSpec::default()
            } else {
                faults.parse().unwrap()
            },
            ..Options::default()
        };
        self.hub
            .plug(index, Phone::new(profile, options, self.clock.now()))
            .unwrap();
        let port = self.hub.port_path(index).unwrap().to_string();
        self.until(&format!("phone {ecid:#x} identified on {port}"), || {
            let registry = self.shared.registry();
            let there = registry.entries().any(|e| {
                e.present
                    && e.identity.ecid == Some(ecid)
                    && e.identity.chip_id.is_some()
                    && e.port.as_ref().map(ToString::to_string).as_deref() == Some(&port)
            });
            there.then_some(())
        })
        .await;
        ecid
    }

    /// What a technician does: takes the phone out of port `from` (leaving the port's fault
    /// behind) and plugs it into `to`.
    fn move_phone(&self, from: usize, to: usize) {
        let mut phone = self.hub.unplug(from).unwrap().expect("a phone to move");
        phone.mode_state_mut().1.faults = Faults::none();
        self.hub.plug(to, phone).unwrap();
    }

    async fn start_job(&self, port: &str) -> u64 {
        let shared = Arc::clone(&self.shared);
        let ctx = self.ctx.clone();
        let request = JobRequest {
            ecid: None,
            port: Some(port.to_string()),
            ipsw: self.ipsw.clone(),
            behavior: None,
        };
        tokio::task::spawn_blocking(move || jobs::start(&shared, &ctx, &request))
            .await
            .unwrap()
            .unwrap()
    }

    fn job(&self, id: u64) -> JobRecord {
        self.shared.jobs().get(id).unwrap()
    }

    /// Waits until `f` gives something, checking every few milliseconds (the job threads and
    /// the registry driver move on their own).
    async fn until<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}; jobs: {:#?}",
                self.shared.jobs().list()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ended(&self, id: u64) -> JobRecord {
        self.until(&format!("job {id} to end"), || {
            Some(self.job(id)).filter(|j| matches!(j.state, JobState::Succeeded | JobState::Failed))
        })
        .await
    }

    /// `GET /ports` over the API socket.
    async fn ports(&self) -> serde_json::Value {
        get(&self.socket, "/ports").await
    }
}

/// A plain HTTP/1.1 GET over a unix socket; the JSON body.
async fn get(socket: &Path, path: &str) -> serde_json::Value {
    let socket = socket.to_path_buf();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: restation\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    })
    .await
    .unwrap()
}

fn port<'a>(report: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    report["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == path)
        .unwrap_or_else(|| panic!("no port {path} in {report:#}"))
}

fn kinds(port: &serde_json::Value) -> Vec<&str> {
    port["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_port_failing_three_phones_is_flagged_and_they_succeed_elsewhere_and_it_is_remembered(
) {
    let dir = tempfile::tempdir().unwrap();
    let history_path = dir.path().join("history.sqlite");
    let history = Arc::new(History::open(&history_path).unwrap());
    let station = Station::start(dir.path(), history, Arc::new(jobs::AsShipped)).await;

    let mut ecids = Vec::new();
    for seed in [11, 22, 33] {
        // The bad port: every DFU upload there fails with EPROTO.
        let ecid = station.plug(0, seed, "dfu-upload:io-error").await;
        ecids.push(ecid);
        let id = station.start_job(BAD).await;
        let asked = station
            .until("the ladder to ask to move the phone", || {
                let job = station.job(id);
                assert!(
                    !matches!(job.state, JobState::Succeeded | JobState::Failed),
                    "{job:#?}"
                );
                job.operator.filter(|o| o.contains("move the phone"))
            })
            .await;
        assert!(asked.contains(BAD), "{asked}");
        station.move_phone(0, 1);
        let job = station.ended(id).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
        assert!(job.attempts >= 2, "{job:#?}");
        // Make room on the good port for the next phone's move.
        station.hub.unplug(1).unwrap();
    }
    let mut distinct = ecids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three different phones");

    let report = station.ports().await;
    let bad = port(&report, BAD);
    assert_eq!(bad["health"], "suspect", "{bad:#}");
    let why = kinds(bad);
    assert!(why.contains(&"distinct-phones"), "{bad:#}");
    assert!(why.contains(&"transfer-errors"), "{bad:#}");
    assert_eq!(bad["phones_failed"].as_array().unwrap().len(), 3, "{bad:#}");
    assert_eq!(
        bad["phones_failed_then_succeeded_elsewhere"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{bad:#}"
    );
    assert_eq!(bad["succeeded"], 0, "{bad:#}");
    let good = port(&report, GOOD);
    assert_eq!(good["health"], "good", "{good:#}");
    assert_eq!(good["succeeded"], 3, "{good:#}");
    assert_eq!(good["failures"], 0, "{good:#}");
    assert!(report["suspect_phones"].as_array().unwrap().is_empty());
    // /metrics says it too.
    let metrics = restation::daemon::metrics::render(&station.shared);
    assert!(
        metrics.contains(&format!("restation_port_suspect{{port=\"{BAD}\"}} 1")),
        "{metrics}"
    );
    station.stop().await;

    // A restarted daemon with the same history knows the port.
    let history = Arc::new(History::open(&history_path).unwrap());
    let restarted = Station::start(dir.path(), history, Arc::new(jobs::AsShipped)).await;
    let report = restarted.ports().await;
    let bad = port(&report, BAD);
    assert_eq!(bad["health"], "suspect", "{bad:#}");
    assert!(kinds(bad).contains(&"distinct-phones"), "{bad:#}");
    assert_eq!(port(&report, GOOD)["health"], "good");
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_speed_link_is_a_cable_problem_before_any_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(
        dir.path(),
        Arc::new(History::in_memory().unwrap()),
        Arc::new(jobs::AsShipped),
    )
    .await;
    station.hub.set_cable_full_speed(0, true).unwrap();
    station.plug(0, 44, "").await;
    // Seen on the bus, before any restore.
    let report = station.ports().await;
    let bad = port(&report, BAD);
    assert_eq!(bad["health"], "suspect", "{bad:#}");
    assert_eq!(kinds(bad), ["link-speed"], "{bad:#}");
    assert_eq!(bad["link_speed"], "Full");
    assert_eq!(bad["attempts"], 0);

    let id = station.start_job(BAD).await;
    let asked = station
        .until("the operator to be asked to move the phone", || {
            station.job(id).operator
        })
        .await;
    assert!(asked.contains("full (12 Mb/s)"), "{asked}");
    assert!(asked.contains("swap the cable"), "{asked}");
    let job = station.job(id);
    assert_eq!(job.attempts, 1, "{job:#?}");
    assert!(
        job.error.as_deref().unwrap_or("").contains("cable or port"),
        "{job:#?}"
    );
    // Nothing went over the bad link.
    let uploads = station
        .hub
        .with_phone(0, |p| p.core().record.uploads.len())
        .unwrap();
    assert_eq!(uploads, 0);
    let metrics = restation::daemon::metrics::render(&station.shared);
    assert!(
        metrics.contains("\nrestation_transferred_bytes_total 0\n"),
        "{metrics}"
    );
    let bad = port(&station.ports().await, BAD).clone();
    assert_eq!(bad["health"], "suspect", "{bad:#}");
    assert_eq!(bad["attempts"], 1, "{bad:#}");

    // On a good cable it goes through.
    station.move_phone(0, 1);
    let job = station.ended(id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    station.stop().await;
}

/// Personalization whose signing server says the build is not signed (STATUS 94).
struct Unsigned;

impl jobs::Personalization for Unsigned {
    fn for_plan(&self, _: &restore::plan::Plan) -> Result<Box<dyn Personalize + Send>, String> {
        Ok(Box::new(Unsigned))
    }
}

impl Personalize for Unsigned {
    fn observe(
        &mut self,
        _: &irecv::serial::SerialInfo,
        _: &irecv::serial::Nonces,
    ) -> Result<(), PersonalizeError> {
        Ok(())
    }

    fn component(&mut self, _: &str, _: Vec<u8>) -> Result<Vec<u8>, PersonalizeError> {
        Err(refused())
    }

    fn root_ticket(&mut self) -> Result<Vec<u8>, PersonalizeError> {
        Err(refused())
    }
}

fn refused() -> PersonalizeError {
    tss::TssError::Refused {
        status: 94,
        message: "This device isn't eligible for the requested build.".into(),
    }
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsigned_build_ends_3194_without_touching_the_ports_health() {
    let dir = tempfile::tempdir().unwrap();
    let station = Station::start(
        dir.path(),
        Arc::new(History::in_memory().unwrap()),
        Arc::new(Unsigned),
    )
    .await;
    station.plug(0, 55, "").await;
    let id = station.start_job(BAD).await;
    let job = station.ended(id).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(job.number, Some(3194), "{job:#?}");
    assert_eq!(job.attempts, 1, "{job:#?}");

    let report = station.ports().await;
    let p = port(&report, BAD);
    assert_eq!(p["health"], "good", "{p:#}");
    assert_eq!(p["attempts"], 1, "{p:#}");
    assert_eq!(p["failures"], 0, "{p:#}");
    assert_eq!(p["not_counted"], 1, "{p:#}");
    assert!(p["reasons"].as_array().unwrap().is_empty(), "{p:#}");
    assert!(p["phones_failed"].as_array().unwrap().is_empty(), "{p:#}");
    station.stop().await;
}
