//! Restore jobs in the daemon: started through the API (`POST /jobs`), each on a thread of
//! its own running [`super::job::run`], watched through `GET /jobs`, `GET /jobs/{id}` and the
//! `GET /jobs/events` stream.
//!
//! Starting a job checks everything that can be checked before the phone is touched: the
//! phone is on the bus and identified (by ECID or by port), the IPSW is staged and verified,
//! and it fits the phone ([`restore::plan::Plan`]); a refusal says why. A phone in normal or
//! restore mode is taken over from its mux session first. Waiting for the phone to come back
//! after a mode change is waiting for the registry to show the same ECID in the expected mode
//! ([`RegistryPhones`]), with the phase's deadline.
//!
//! A failed attempt is not the end of the job: its typed failure goes to the retry ladder
//! ([`restore::ladder`]), and the job thread does what it answers: wait for the same ECID
//! back in a mode a plan starts from and run again from there (retry, re-enter recovery or
//! DFU), ask the operator to put the phone in DFU mode or to move it to another port (the
//! record's `operator`), verify the staged IPSW again before a 14 is retried, or stop with
//! the verdict's number (3194 at once, 4014 after two ports). Every attempt is kept in the
//! history under the one job; the record counts them (`attempts`) and says what comes next
//! (`next_step`). The station's own errors stop the job without a number.
//!
//! Jobs a stopped daemon left unfinished in the history are resumed when it starts again
//! ([`resume_interrupted`]): the interrupted attempt is ended as such, the IPSW verified again,
//! the phone awaited by ECID in a mode a plan starts from, and the job goes on as a new attempt
//! of the same history job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipsw::manifest::{BuildManifest, RestoreBehavior};
use irecv::mode::Mode;
use restore::failure::Failure;
use restore::ladder::{Attempt, Decision, Ladder, Next, PortHistory, Route};
use restore::phase::{AwaitedMode, Deadlines, Phase};
use restore::plan::{Plan, StartMode, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use usb::{UsbBackend, UsbDevice};

use super::history;
use super::job::{self, JobError, JobEvent, Materials, Phones, WaitError};
use super::registry::{unix_ms, Entry, Key};
use super::restoring::{Personalize, PersonalizeError, RestoreEvent};
use super::Shared;

mod resume;
pub use resume::resume_interrupted;

/// How long a phone that came back in another mode than the step awaited has to show up in
/// the awaited one before the wait ends with that mode.
const OTHER_MODE_GRACE: Duration = Duration::from_secs(5);
/// How long a session may take to let go of a phone a job takes over.
const TAKEOVER: Duration = Duration::from_secs(10);
/// The largest BuildManifest.plist read.
const MAX_MANIFEST: u64 = 64 << 20;

/// What `POST /jobs` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequest {
    /// The phone by ECID (`0x…` or bare hex)…
    #[serde(default)]
    pub ecid: Option<String>,
    /// …or by the port it is on (`1-1.3`).
    #[serde(default)]
    pub port: Option<String>,
    /// The staged IPSW's id (its SHA-256, or a unique prefix of it).
    pub ipsw: String,
    /// `erase` (default) or `update`.
    #[serde(default)]
    pub behavior: Option<String>,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Waiting for a slot on its USB host controller (at most
    /// [`Jobs::set_per_controller`] restores run at once on one).
    Queued,
    /// Running.
    Running,
    /// The phone is back in iOS with the new build.
    Succeeded,
    /// It stopped; `error` says why.
    Failed,
}

impl JobState {
    /// Queued or running: not ended.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's number.
    pub id: u64,
    /// The phone's ECID (`0x…`).
    pub ecid: String,
    /// The port it started on.
    pub port: Option<String>,
    /// `iPhone14,3`.
    pub product_type: Option<String>,
    /// The staged IPSW's id.
    pub ipsw: String,
    /// The build it installs.
    pub build_version: String,
    /// Erase or Update.
    pub behavior: String,
    /// The mode it started in.
    pub start_mode: String,
    /// Running, succeeded, failed.
    pub state: JobState,
    /// The phase now.
    pub phase: String,
    /// Step `step` of `steps` (1-based), and what it does.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// The step's text.
    pub step_text: String,
    /// Progress of the current transfer or restore operation, 0..=1.
    pub progress: f64,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it ended.
    pub ended_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The failure as Apple's tools number it (4013, 3194, ...) or the phone's own status.
    #[serde(default)]
    pub number: Option<i64>,
    /// What that number means, in one line.
    #[serde(default)]
    pub meaning: Option<String>,
    /// What the technician does next.
    #[serde(default)]
    pub advice: Option<String>,
    /// What the technician must do at the phone now for the job to go on (e.g. tap Trust).
    #[serde(default)]
    pub operator: Option<String>,
    /// Attempts so far, the running one included (the retry ladder starts the next ones).
    #[serde(default)]
    pub attempts: u32,
    /// What the retry ladder does after the latest failed attempt (`re-enter recovery and
    /// retry`, ...).
    #[serde(default)]
    pub next_step: Option<String>,
}

/// A change of a job, on `/jobs/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobUpdate {
    /// The job as it is now.
    pub job: JobRecord,
}

/// The daemon's jobs.
#[derive(Debug)]
pub struct Jobs {
    records: std::sync::Mutex<BTreeMap<u64, JobRecord>>,
    updates: broadcast::Sender<JobUpdate>,
    next: std::sync::atomic::AtomicU64,
    gate: Gate,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            records: std::sync::Mutex::new(BTreeMap::new()),
            updates: broadcast::channel(1024).0,
            next: std::sync::atomic::AtomicU64::new(1),
            gate: Gate::new(DEFAULT_PER_CONTROLLER),
        }
    }
}

/// Restores run at once on one USB host controller unless configured otherwise: the
/// references see transfers fail past about ten concurrent restores on one controller, and a
/// bench hub usually hangs off one.
pub const DEFAULT_PER_CONTROLLER: usize = 8;

/// The job queue: at most `cap` jobs run at once per USB bus (a bus is one host controller's
/// root hub); the others wait for a slot, oldest first.
#[derive(Debug)]
struct Gate {
    cap: std::sync::atomic::AtomicUsize,
    /// Per bus: the jobs holding a slot, and the jobs waiting in order.
    buses: std::sync::Mutex<std::collections::HashMap<u8, Bus>>,
    freed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct Bus {
    running: usize,
    waiting: std::collections::VecDeque<u64>,
}

/// A job's slot on its bus, given back when dropped.
struct Slot {
    shared: Arc<Shared>,
    bus: u8,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.jobs().gate.give(self.bus);
    }
}

impl Gate {
    fn new(cap: usize) -> Gate {
        Gate {
            cap: std::sync::atomic::AtomicUsize::new(cap),
            buses: std::sync::Mutex::new(std::collections::HashMap::new()),
            freed: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u8, Bus>> {
        self.buses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cap(&self) -> usize {
        match self.cap.load(std::sync::atomic::Ordering::Relaxed) {
            0 => usize::MAX,
            n => n,
        }
    }

    /// Takes a slot on `bus` for job `id` now (true), or puts the job in the line (false).
    fn try_take(&self, bus: u8, id: u64) -> bool {
        let mut buses = self.lock();
        let entry = buses.entry(bus).or_default();
        if entry.running < self.cap() && entry.waiting.is_empty() {
            entry.running += 1;
            return true;
        }
        if !entry.waiting.contains(&id) {
            entry.waiting.push_back(id);
        }
        false
    }

    /// Waits (on slots being given back, no polling) until job `id`, in the line since
    /// [`Gate::try_take`], is first in it and a slot is free; takes the slot.
    fn take(&self, bus: u8, id: u64) {
        let mut buses = self.lock();
        loop {
            let cap = self.cap();
            let entry = buses.entry(bus).or_default();
            if entry.running < cap && entry.waiting.front().is_none_or(|first| *first == id) {
                entry.waiting.retain(|w| *w != id);
                entry.running += 1;
                drop(buses);
                // The next in line may fit too.
                self.freed.notify_all();
                return;
            }
            buses = self
                .freed
                .wait(buses)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Job `id` will not run after all: out of the line, or its slot given back.
    fn abandon(&self, bus: u8, id: u64) {
        let mut buses = self.lock();
        let Some(entry) = buses.get_mut(&bus) else {
            return;
        };
        let before = entry.waiting.len();
        entry.waiting.retain(|w| *w != id);
        if entry.waiting.len() == before {
            entry.running = entry.running.saturating_sub(1);
        }
        drop(buses);
        self.freed.notify_all();
    }

    /// Gives a slot on `bus` back.
    fn give(&self, bus: u8) {
        let mut buses = self.lock();
        if let Some(entry) = buses.get_mut(&bus) {
            entry.running = entry.running.saturating_sub(1);
        }
        drop(buses);
        self.freed.notify_all();
    }
}

impl Jobs {
    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobRecord> {
        self.lock().values().cloned().collect()
    }

    /// One job.
    pub fn get(&self, id: u64) -> Option<JobRecord> {
        self.lock().get(&id).cloned()
    }

    /// Lets at most `n` restores run at once per USB host controller (0: no limit); the
    /// others are queued, oldest first.
    pub fn set_per_controller(&self, n: usize) {
        self.gate.cap.store(n, std::sync::atomic::Ordering::Relaxed);
        self.gate.freed.notify_all();
    }

    /// Waits until queued job `id` has a slot on its controller (`bus`), then shows it
    /// running.
    fn admit(&self, id: u64, bus: u8) {
        tracing::info!(bus, "queued for a slot on the host controller");
        self.gate.take(bus, id);
        self.update(id, |r| {
            r.state = JobState::Running;
            r.step_text = String::new();
        });
    }

    /// Job changes, live.
    pub fn subscribe(&self) -> broadcast::Receiver<JobUpdate> {
        self.updates.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, JobRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut JobRecord)) {
        let snapshot = {
            let mut records = self.lock();
            let Some(record) = records.get_mut(&id) else {
                return;
            };
            f(record);
            record.clone()
        };
        // No listener is fine.
        let _ = self.updates.send(JobUpdate { job: snapshot });
    }
}

/// Why a job could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Neither or both of ECID and port.
    #[error("name the phone by ECID or by port (one of them)")]
    Target,
    /// No such phone on the bus.
    #[error("no phone {0} on the bus")]
    NoPhone(String),
    /// The phone is not identified well enough.
    #[error("phone {0} is not identified yet (chip and board unknown)")]
    Unidentified(String),
    /// A job already runs on it.
    #[error("phone {0} already has a restore running (job {1})")]
    Busy(String, u64),
    /// It is in a mode a restore cannot start from.
    #[error("phone {key} is in {mode} mode: {why}")]
    Mode {
        /// The phone.
        key: String,
        /// Its mode.
        mode: Mode,
        /// What to do.
        why: &'static str,
    },
    /// `behavior` is neither erase nor update.
    #[error("behavior {0:?} is neither erase nor update")]
    Behavior(String),
    /// The IPSW store.
    #[error("IPSW {id}: {reason}")]
    Ipsw {
        /// The id asked for.
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// The IPSW does not fit the phone.
    #[error(transparent)]
    Plan(#[from] restore::plan::PlanError),
    /// No personalization for this phone.
    #[error("{0}")]
    Personalization(String),
    /// The phone could not be opened or taken over.
    #[error("cannot take the phone over: {0}")]
    Takeover(String),
}

/// Makes the personalization of one job (tickets from a TSS server, stitched images).
pub trait Personalization: Send + Sync {
    /// The personalizer for `plan`, or why there is none.
    fn for_plan(&self, plan: &Plan) -> Result<Box<dyn Personalize + Send>, String>;
}

/// Images exactly as the IPSW ships them, with no ticket: only phones that check nothing
/// boot them (the virtual bench without a TSS stand-in). Never offered for real USB.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsShipped;

impl Personalization for AsShipped {
    fn for_plan(&self, _: &Plan) -> Result<Box<dyn Personalize + Send>, String> {
        Ok(Box::new(AsShipped))
    }
}

impl Personalize for AsShipped {
    fn observe(
        &mut self,
        _: &irecv::serial::SerialInfo,
        _: &irecv::serial::Nonces,
    ) -> Result<(), PersonalizeError> {
        Ok(())
    }

    fn component(&mut self, _: &str, im4p: Vec<u8>) -> Result<Vec<u8>, PersonalizeError> {
        Ok(im4p)
    }

    fn root_ticket(&mut self) -> Result<Vec<u8>, PersonalizeError> {
        Ok(Vec::new())
    }
}

/// Refuses every job: real phones need tickets, and no TSS server is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPersonalization;

impl Personalization for NoPersonalization {
    fn for_plan(&self, _: &Plan) -> Result<Box<dyn Personalize + Send>, String> {
        Err("no TSS server is configured: real phones boot only personalized images".into())
    }
}

/// What starting jobs needs from the daemon besides its shared state.
#[derive(Clone)]
pub struct JobContext {
    /// USB.
    pub backend: Arc<dyn UsbBackend>,
    /// The IPSW store's root.
    pub store: std::path::PathBuf,
    /// Personalization.
    pub personalization: Arc<dyn Personalization>,
    /// Phase deadlines.
    pub deadlines: Deadlines,
    /// The runtime the registry waits run on.
    pub runtime: tokio::runtime::Handle,
    /// Pair records (the usbmuxd socket's directory), for phones starting in normal mode.
    pub pair_records: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("store", &self.store)
            .field("deadlines", &self.deadlines)
            .finish_non_exhaustive()
    }
}

/// The mode a plan starts from, for a phone the registry shows in `mode`; `None` for the
/// modes no restore starts from.
fn start_mode_of(mode: Mode) -> Option<StartMode> {
    match mode {
        Mode::Normal => Some(StartMode::Normal),
        Mode::Recovery(_) => Some(StartMode::RecoveryIboot),
        Mode::Dfu => Some(StartMode::Dfu),
        Mode::Restore | Mode::RestoreOrMacDfu | Mode::Wtf | Mode::PortDfu | Mode::Kis => None,
    }
}

fn start_mode(entry: &Entry) -> Result<StartMode, StartError> {
    let refuse = |why| StartError::Mode {
        key: entry.id.clone(),
        mode: entry.mode,
        why,
    };
    match entry.mode {
        Mode::Restore | Mode::RestoreOrMacDfu => Err(refuse(
            "it is running a restore ramdisk; let it finish or reboot it",
        )),
        mode => start_mode_of(mode)
            .ok_or_else(|| refuse("restation does not restore from this mode; put it in DFU mode")),
    }
}

fn find_entry(shared: &Shared, request: &JobRequest) -> Result<Entry, StartError> {
    let registry = shared.registry();
    match (&request.ecid, &request.port) {
        (Some(ecid), None) => {
            let key = Key::parse(ecid).ok_or_else(|| StartError::NoPhone(ecid.clone()))?;
            registry
                .get(&key)
                .filter(|e| e.present)
                .cloned()
                .ok_or_else(|| StartError::NoPhone(ecid.clone()))
        }
        (None, Some(port)) => registry
            .entries()
            .find(|e| e.present && e.port.as_ref().is_some_and(|p| p.to_string() == *port))
            .cloned()
            .ok_or_else(|| StartError::NoPhone(format!("on port {port}"))),
        _ => Err(StartError::Target),
    }
}

/// Starts a job; its number.
pub fn start(
    shared: &Arc<Shared>,
    ctx: &JobContext,
    request: &JobRequest,
) -> Result<u64, StartError> {
    let entry = find_entry(shared, request)?;
    let behavior: RestoreBehavior = match request.behavior.as_deref() {
        None => RestoreBehavior::Erase,
        Some(b) => b
            .parse()
            .map_err(|_| StartError::Behavior(b.chars().take(32).collect()))?,
    };
    let mode = start_mode(&entry)?;
    let id = &entry.identity;
    let (Some(ecid), Some(chip_id), Some(board_id)) = (id.ecid, id.chip_id, id.board_id) else {
        return Err(StartError::Unidentified(entry.id.clone()));
    };
    if let Some(running) = shared
        .jobs()
        .list()
        .into_iter()
        .find(|j| j.state.is_active() && j.ecid == entry.id)
    {
        return Err(StartError::Busy(entry.id.clone(), running.id));
    }
    // The IPSW: staged, verified, and its manifest.
    let ipsw_err = |reason: String| StartError::Ipsw {
        id: request.ipsw.chars().take(80).collect(),
        reason,
    };
    let store = ipsw::store::Store::open(&ctx.store).map_err(|e| ipsw_err(e.to_string()))?;
    let record = store
        .find(&request.ipsw)
        .map_err(|e| ipsw_err(e.to_string()))?;
    let path = store.path_of(&record);
    let (file, archive) =
        ipsw::archive::Archive::open(&path).map_err(|e| ipsw_err(e.to_string()))?;
    let manifest_bytes = archive
        .read_member(&file, "BuildManifest.plist", MAX_MANIFEST)
        .map_err(|e| ipsw_err(e.to_string()))?;
    let manifest =
        BuildManifest::from_bytes(&manifest_bytes).map_err(|e| ipsw_err(e.to_string()))?;
    let plan = Plan::new(
        Target {
            ecid,
            chip_id,
            board_id,
            product_type: id.product_type.clone(),
            mode,
        },
        &manifest,
        behavior,
    )?;
    let personalize = ctx
        .personalization
        .for_plan(&plan)
        .map_err(StartError::Personalization)?;
    let restore_options = restore_options_for(&manifest_bytes, &plan, behavior)
        .ok_or_else(|| ipsw_err("the chosen build identity is not in the manifest".into()))?;
    // Take the phone.
    let device = entry
        .device
        .ok_or_else(|| StartError::NoPhone(entry.id.clone()))?;
    let first = take_over(shared, ctx, device).map_err(StartError::Takeover)?;

    let job_id = shared
        .jobs()
        .next
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A slot on the phone's host controller for the whole job (retries included), or a place
    // in its line.
    let bus = entry.port.as_ref().map(usb::PortPath::bus);
    let queued = bus.filter(|bus| !shared.jobs().gate.try_take(*bus, job_id));
    let ipsw_sha256 = record.sha256.clone();
    let ipsw_id = record.id.clone();
    let record = JobRecord {
        id: job_id,
        ecid: entry.id.clone(),
        port: entry.port.as_ref().map(ToString::to_string),
        product_type: id.product_type.clone(),
        ipsw: record.id.clone(),
        build_version: plan.build_version.clone(),
        behavior: behavior.to_string(),
        start_mode: mode.to_string(),
        state: if queued.is_some() {
            JobState::Queued
        } else {
            JobState::Running
        },
        phase: Phase::Upload.to_string(),
        step: 0,
        steps: plan.steps.len(),
        step_text: match queued {
            Some(bus) => format!(
                "queued: {} restores already run on USB bus {bus}",
                shared.jobs().gate.cap()
            ),
            None => String::new(),
        },
        progress: 0.0,
        started_ms: unix_ms(SystemTime::now()),
        ended_ms: None,
        error: None,
        number: None,
        meaning: None,
        advice: None,
        operator: None,
        attempts: 1,
        next_step: None,
    };
    // The history keeps the job across restarts; it never stops a restore.
    let kept = shared.history().cloned().and_then(|h| {
        let new = history::NewJob {
            station: history::station_name(),
            daemon_job: Some(job_id),
            ecid,
            serial: id.serial_number.clone(),
            udid: id.udid.clone(),
            product_type: id.product_type.clone(),
            port: record.port.clone(),
            ipsw: record.ipsw.clone(),
            ipsw_sha256: ipsw_sha256.clone(),
            build_version: record.build_version.clone(),
            behavior: record.behavior.clone(),
            started: SystemTime::now(),
        };
        match h.start_job(&new) {
            Ok(key) => Some((h, key)),
            Err(e) => {
                tracing::warn!(error = %e, "the job history cannot record this job");
                None
            }
        }
    });
    shared.jobs().lock().insert(job_id, record.clone());
    let _ = shared.jobs().updates.send(JobUpdate { job: record });

    let drive = Drive {
        shared: Arc::clone(shared),
        ctx: ctx.clone(),
        id: job_id,
        target: plan.target.clone(),
        behavior,
        manifest,
        manifest_bytes,
        file,
        archive,
        ipsw_id,
        kept,
        attempts_before: 0,
    };
    let first = Start {
        plan,
        device: first,
        enumeration: (device, entry.arrival),
        port: entry.port.clone(),
        personalize,
        restore_options,
    };
    std::thread::Builder::new()
        .name(format!("job-{job_id}"))
        .spawn(move || {
            let span = tracing::info_span!(
                "job",
                id = job_id,
                ecid = %format!("{ecid:#x}"),
                port = first.port.as_ref().map(ToString::to_string).as_deref().unwrap_or("?"),
                model = drive.target.product_type.as_deref().unwrap_or("?"),
            );
            let _enter = span.enter();
            if let Some(bus) = queued {
                drive.shared.jobs().admit(job_id, bus);
            }
            let _slot = bus.map(|bus| Slot {
                shared: Arc::clone(&drive.shared),
                bus,
            });
            drive.run(first);
        })
        .map_err(|e| {
            if let Some(bus) = bus {
                shared.jobs().gate.abandon(bus, job_id);
            }
            StartError::Takeover(format!("cannot start the job's thread: {e}"))
        })?;
    Ok(job_id)
}

/// Feeds `/metrics`' bytes counter from restore mode: what restored was served, and the OS
/// image's progress over ASR (a running total; `image_sent` keeps the last one).
fn count_bytes(metrics: &super::metrics::Metrics, image_sent: &mut u64, event: &JobEvent) {
    match event {
        JobEvent::Restore(RestoreEvent::Served { bytes, .. }) => metrics.bytes(*bytes),
        JobEvent::Restore(RestoreEvent::Image { sent, .. }) => {
            metrics.bytes(sent.saturating_sub(*image_sent));
            *image_sent = (*image_sent).max(*sent);
        }
        _ => {}
    }
}

fn apply(jobs: &Jobs, id: u64, phase: &mut Phase, event: JobEvent) {
    match event {
        JobEvent::Step {
            index,
            total,
            text,
            phase: p,
        } => {
            *phase = p;
            jobs.update(id, |r| {
                r.step = index + 1;
                r.steps = total;
                r.step_text = text;
                r.phase = p.to_string();
                r.progress = 0.0;
            });
        }
        JobEvent::Upload { fraction, .. } => jobs.update(id, |r| r.progress = fraction),
        JobEvent::Restore(RestoreEvent::Image { sent, total }) if total > 0 => {
            jobs.update(id, |r| r.progress = sent as f64 / total as f64)
        }
        JobEvent::Restore(RestoreEvent::Progress { progress, .. }) if progress >= 0 => {
            jobs.update(id, |r| r.progress = progress as f64 / 100.0)
        }
        JobEvent::Restore(_) => {}
        JobEvent::Operator(prompt) => jobs.update(id, |r| {
            r.operator = prompt.map(|p| p.line(r.port.as_deref()));
        }),
    }
}

/// restored's `RestoreOptions` for `plan`; `None` when its build identity is not in the
/// manifest.
fn restore_options_for(
    manifest_bytes: &[u8],
    plan: &Plan,
    behavior: RestoreBehavior,
) -> Option<plist::Dictionary> {
    let identity_dict = restore::restored::identity_dict(manifest_bytes, &plan.identity)?;
    Some(restore::restored::restore_options(
        identity_dict,
        &plan.product_version,
        behavior,
        true,
        &uuid_for(plan.target.ecid),
    ))
}

/// A stable restore UUID per phone (restored only wants one to be there).
fn uuid_for(ecid: u64) -> String {
    let h = format!("{ecid:016X}");
    format!(
        "{}-{}-4{}-8{}-{}0000",
        &h[..8],
        &h[8..12],
        &h[12..15],
        &h[15..],
        "0000000"
    )
}

/// Ends the phone's mux session (if it has one) and opens it for the job.
fn take_over(
    shared: &Shared,
    ctx: &JobContext,
    device: usb::DeviceId,
) -> Result<Box<dyn UsbDevice>, String> {
    let session = shared.sessions().remove(&device);
    if let Some(session) = session {
        if !session.shutdown(TAKEOVER) {
            return Err(format!("its mux session did not end within {TAKEOVER:?}"));
        }
    }
    ctx.backend.open(device).map_err(|e| e.to_string())
}

fn awaited(mode: Mode, awaited: AwaitedMode) -> bool {
    matches!(
        (mode, awaited),
        (Mode::Normal, AwaitedMode::Normal)
            | (Mode::Recovery(_), AwaitedMode::Recovery)
            | (Mode::Dfu, AwaitedMode::Dfu)
            | (Mode::Restore, AwaitedMode::Restore)
    )
}

/// Waiting for the phone through the registry.
pub struct RegistryPhones {
    shared: Arc<Shared>,
    ctx: JobContext,
    /// Enumerations already used (or found gone): the registry may still show one for a
    /// moment after it left, and a wait is for the phone's next enumeration. An enumeration is
    /// its address and its arrival number: addresses are recycled (127 per bus), and on a
    /// busy bench a phone comes back at an address it had before.
    used: std::collections::HashSet<Enumeration>,
}

impl Phones for RegistryPhones {
    fn wait_for(
        &mut self,
        ecid: u64,
        mode: AwaitedMode,
        within: Duration,
    ) -> Result<Box<dyn UsbDevice>, WaitError> {
        let deadline = tokio::time::Instant::now() + within;
        let key = Key::Ecid(ecid);
        // A new enumeration in another mode: the phone did not do what the step asked (a
        // crash, a reboot into the wrong stage). It is the answer unless the awaited mode
        // follows within a moment.
        let mut other: Option<(Enumeration, Mode, tokio::time::Instant)> = None;
        loop {
            let shared = Arc::clone(&self.shared);
            let used = self.used.clone();
            let seen_other = other.map(|(e, _, _)| e);
            let until = match other {
                Some((_, _, at)) => deadline.min(at),
                None => deadline,
            };
            let found = self.ctx.runtime.block_on(async {
                tokio::time::timeout_at(
                    until,
                    shared.wait_for_entry(|r| {
                        let e = r.get(&key).filter(|e| e.present)?;
                        let enumeration = (e.device?, e.arrival);
                        if used.contains(&enumeration) {
                            return None;
                        }
                        if awaited(e.mode, mode) {
                            return Some(Ok(enumeration));
                        }
                        (seen_other != Some(enumeration)).then_some(Err((enumeration, e.mode)))
                    }),
                )
                .await
            });
            let enumeration = match found {
                Ok(Ok(enumeration)) => enumeration,
                Ok(Err((enumeration, got))) => {
                    let at = tokio::time::Instant::now() + OTHER_MODE_GRACE;
                    other = Some((enumeration, got, at));
                    continue;
                }
                Err(_) => {
                    return Err(match other {
                        Some((_, got, _)) => WaitError::OtherMode {
                            expected: mode,
                            got: got.to_string(),
                        },
                        None => WaitError::Deadline { mode, within },
                    })
                }
            };
            self.used.insert(enumeration);
            let (device, _) = enumeration;
            match take_over(&self.shared, &self.ctx, device) {
                Ok(dev) => return Ok(dev),
                // Gone already (a departure the registry has not seen yet): wait on.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%device, error = %e, "a stale enumeration; waiting for the next");
                }
                Err(e) => return Err(WaitError::Takeover(e)),
            }
        }
    }
}

/// Which modes end a wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// Any mode a plan starts from (normal, recovery, DFU); not restore mode, which the phone
    /// has to reboot out of first.
    Start,
    /// DFU only: the operator was asked to put it there.
    Dfu,
}

/// One enumeration of a phone: its address and the registry's arrival number.
type Enumeration = (usb::DeviceId, u64);

/// The phone as found between attempts, taken over.
struct Found {
    device: Box<dyn UsbDevice>,
    enumeration: Enumeration,
    mode: Mode,
    port: Option<usb::PortPath>,
}

impl RegistryPhones {
    /// Waits until the phone `ecid` is on the bus in a mode `awaiting` accepts (and, when
    /// `not_on` is given, on another port than that), at most `within`, and takes it over.
    /// The enumeration the last attempt ended on counts: a phone that stayed where it was is
    /// found at once.
    fn wait_for_start(
        &mut self,
        ecid: u64,
        awaiting: Awaiting,
        not_on: Option<&usb::PortPath>,
        within: Duration,
    ) -> Result<Found, WaitError> {
        let deadline = tokio::time::Instant::now() + within;
        let key = Key::Ecid(ecid);
        let mut gone = std::collections::HashSet::new();
        loop {
            let shared = Arc::clone(&self.shared);
            let found = self.ctx.runtime.block_on(async {
                tokio::time::timeout_at(
                    deadline,
                    shared.wait_for_entry(|r| {
                        let e = r.get(&key).filter(|e| e.present)?;
                        let mode_fits = match awaiting {
                            Awaiting::Start => start_mode_of(e.mode).is_some(),
                            Awaiting::Dfu => e.mode == Mode::Dfu,
                        };
                        let moved = match (not_on, &e.port) {
                            (Some(bad), Some(port)) => port != bad,
                            (Some(_), None) => false,
                            (None, _) => true,
                        };
                        let device = (e.device?, e.arrival);
                        if gone.contains(&device) {
                            return None;
                        }
                        (mode_fits && moved).then(|| (device, e.mode, e.port.clone()))
                    }),
                )
                .await
            });
            let (enumeration, mode, port) = found.map_err(|_| WaitError::Deadline {
                mode: match awaiting {
                    Awaiting::Start => AwaitedMode::Recovery,
                    Awaiting::Dfu => AwaitedMode::Dfu,
                },
                within,
            })?;
            self.used.insert(enumeration);
            let (id, _) = enumeration;
            match take_over(&self.shared, &self.ctx, id) {
                Ok(device) => {
                    return Ok(Found {
                        device,
                        enumeration,
                        mode,
                        port,
                    })
                }
                // Gone already (a departure the registry has not seen yet): wait on.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(device = %id, error = %e, "a stale enumeration; waiting for the next");
                    gone.insert(enumeration);
                }
                Err(e) => return Err(WaitError::Takeover(e)),
            }
        }
    }
}

/// What one attempt starts with.
struct Start {
    plan: Plan,
    device: Box<dyn UsbDevice>,
    enumeration: Enumeration,
    port: Option<usb::PortPath>,
    personalize: Box<dyn Personalize + Send>,
    restore_options: plist::Dictionary,
}

/// How a job ends.
enum End {
    /// Back in iOS with the new build.
    Restored,
    /// The station's own error (no number).
    Station { phase: Phase, error: String },
    /// The phone failed and the ladder (or a wait between attempts) stopped: `number` is the
    /// verdict's (4014 after two ports) or the last failure's.
    Failed {
        failure: Box<Failure>,
        number: i64,
        error: String,
    },
}

/// A restore job's thread: attempts run one after another as the retry ladder
/// ([`restore::ladder`]) says, each from the mode the phone is in when it starts.
struct Drive {
    shared: Arc<Shared>,
    ctx: JobContext,
    id: u64,
    /// The phone, as far as a plan needs (the mode is each attempt's own).
    target: Target,
    behavior: RestoreBehavior,
    manifest: BuildManifest,
    manifest_bytes: Vec<u8>,
    file: std::fs::File,
    archive: ipsw::archive::Archive,
    /// The staged IPSW's id in the store (its SHA-256).
    ipsw_id: String,
    kept: Option<(Arc<dyn history::HistoryStore>, history::JobKey)>,
    /// Attempts the history already holds for this job (a job resumed after a restart goes
    /// on counting from there).
    attempts_before: u32,
}

impl Drive {
    fn run(self, first: Start) {
        let route = match first.plan.target.mode {
            StartMode::Dfu => Route::Dfu,
            _ => Route::Recovery,
        };
        let mut ladder = Ladder::new(self.target.ecid, route);
        let mut phones = RegistryPhones {
            shared: Arc::clone(&self.shared),
            ctx: self.ctx.clone(),
            used: std::collections::HashSet::new(),
        };
        let mut start = first;
        let mut number = self.attempts_before;
        let end = loop {
            number += 1;
            self.shared.jobs().update(self.id, |r| r.attempts = number);
            phones.used.insert(start.enumeration);
            let attempt = self.start_attempt();
            let jobs = self.shared.jobs();
            let id = self.id;
            let mut phase = Phase::Upload;
            let metrics = self.shared.metrics();
            let mut image_sent = 0u64;
            let speed = start.device.speed();
            let mut meter = super::port_health::Meter::default();
            let mut kept_phase = None;
            let result = job::run(
                &start.plan,
                start.device,
                &mut phones,
                Materials {
                    file: &self.file,
                    archive: &self.archive,
                    personalize: &mut *start.personalize,
                    restore_options: start.restore_options,
                    pair_records: self.ctx.pair_records.as_deref(),
                },
                &self.ctx.deadlines,
                &mut irecv::dfu::SystemClock,
                &mut |event| {
                    meter.on_event(&event);
                    count_bytes(metrics, &mut image_sent, &event);
                    apply(jobs, id, &mut phase, event);
                    // How far the attempt got, kept as it goes: a crash leaves it readable.
                    if kept_phase != Some(phase) {
                        kept_phase = Some(phase);
                        self.reach_phase(attempt, phase);
                    }
                },
            );
            let ended = SystemTime::now();
            let ecid = self.target.ecid;
            let err = match result {
                Ok(_) => {
                    super::port_health::attempt_succeeded(
                        &self.shared,
                        start.port.as_ref(),
                        ecid,
                        speed,
                        &meter,
                    );
                    self.end_attempt(
                        attempt,
                        &history::AttemptOutcome::succeeded(ended, Phase::FinalReboot),
                    );
                    break End::Restored;
                }
                Err(e) => e,
            };
            tracing::warn!(error = %err, attempt = number, "restore attempt failed");
            let Some(failure) = super::failure::failure_of(&err, phase) else {
                let phase = err.phase(phase);
                self.end_attempt(
                    attempt,
                    &history::AttemptOutcome::station_error(ended, phase, &err),
                );
                break End::Station {
                    phase,
                    error: err.to_string(),
                };
            };
            self.end_attempt(attempt, &history::AttemptOutcome::failed(ended, &failure));
            super::port_health::attempt_failed(
                &self.shared,
                start.port.as_ref(),
                ecid,
                speed,
                &failure,
            );
            match self.next_attempt(&mut ladder, &mut phones, failure, start.port, &err) {
                Ok(next) => start = next,
                Err(end) => break end,
            }
        };
        self.finish(end);
    }

    /// Feeds the failed attempt to the ladder and carries out its answer: the next attempt's
    /// start, or the end of the job.
    fn next_attempt(
        &self,
        ladder: &mut Ladder,
        phones: &mut RegistryPhones,
        failure: Failure,
        port: Option<usb::PortPath>,
        err: &JobError,
    ) -> Result<Start, End> {
        let error = err.to_string();
        let stop = |failure: &Failure, error: String| End::Failed {
            number: failure.number(),
            failure: Box::new(failure.clone()),
            error,
        };
        // Without a port the ladder cannot tell ports apart: the failure stands.
        let Some(port) = port else {
            return Err(stop(&failure, error));
        };
        let mut attempt = Attempt::new(failure.clone(), port.clone(), self.target.ecid);
        // A port other phones failed on rules nothing out about this one.
        if self.shared.ports().history(&port.to_string()) == PortHistory::Suspect {
            attempt = attempt.on_suspect_port();
        }
        let mut decision = ladder
            .record(attempt)
            .map_err(|e| stop(&failure, format!("{error} (retry ladder: {e})")))?;
        let deadlines = &self.ctx.deadlines;
        loop {
            self.note(&failure, &decision, &error);
            tracing::info!(attempt = decision.attempt, number = decision.number, next = %decision.next, "retry ladder");
            let (awaiting, within, not_on, prompt) = match &decision.next {
                Next::RetryStep { .. } | Next::ReenterRecovery | Next::ReenterDfu => {
                    (Awaiting::Start, deadlines.enter_recovery, None, None)
                }
                Next::EscalateToDfu => (
                    Awaiting::Dfu,
                    deadlines.operator,
                    None,
                    Some(dfu_prompt(self.target.product_type.as_deref(), &port)),
                ),
                Next::AskTrust => (
                    Awaiting::Start,
                    deadlines.pair,
                    None,
                    Some(super::entry::Prompt::Unlock.line(Some(&port.to_string()))),
                ),
                Next::MovePort(flag) => {
                    let mut why = format!("{}: {}", flag.number, flag.cause);
                    if !flag.evidence.is_empty() {
                        why.push_str(&format!("; {}", flag.evidence));
                    }
                    (
                        Awaiting::Start,
                        deadlines.operator,
                        Some(flag.port.clone()),
                        Some(format!(
                            "port {} looks bad ({why}): move the phone to another port and swap the cable",
                            flag.port
                        )),
                    )
                }
                Next::ReverifyFirmware => {
                    let intact = self.reverify();
                    decision = ladder
                        .firmware_verified(intact)
                        .map_err(|e| stop(&failure, format!("{error} (retry ladder: {e})")))?;
                    continue;
                }
                Next::Verdict(v) => {
                    return Err(End::Failed {
                        failure: Box::new(v.failure.clone()),
                        number: v.number,
                        error: format!("{error} (attempt {}: {})", decision.attempt, decision.next),
                    })
                }
            };
            self.shared.jobs().update(self.id, |r| r.operator = prompt);
            let mut found =
                phones.wait_for_start(self.target.ecid, awaiting, not_on.as_ref(), within);
            if matches!(
                (&found, awaiting),
                (Err(WaitError::Deadline { .. }), Awaiting::Start)
            ) {
                found = self.not_back(phones, &port);
            }
            self.shared.jobs().update(self.id, |r| r.operator = None);
            let found = found.map_err(|e| {
                stop(
                    &failure,
                    format!("{error}; waiting to {}: {e}", decision.next),
                )
            })?;
            return self.prepare(found);
        }
    }

    /// The phone's enumeration when it is on the bus in restore mode.
    fn in_restore_mode(&self) -> Option<usb::DeviceId> {
        self.shared
            .registry()
            .get(&Key::Ecid(self.target.ecid))
            .filter(|e| e.present && e.mode == Mode::Restore)
            .and_then(|e| e.device)
    }

    /// The phone did not come back in a mode a plan starts from after a failed attempt. Still
    /// in the restore ramdisk (restored could not be asked to reboot it then): restored is
    /// asked again. Otherwise, or when restored does not answer (a phone whose restore
    /// ramdisk cannot even be identified is not on the registry at all), the operator is
    /// asked for a force restart, and the wait goes on for the operator's deadline.
    fn not_back(
        &self,
        phones: &mut RegistryPhones,
        port: &usb::PortPath,
    ) -> Result<Found, WaitError> {
        let deadlines = &self.ctx.deadlines;
        if let Some(device) = self.in_restore_mode() {
            match leave_restore_mode(&self.shared, &self.ctx, device) {
                Ok(()) => {
                    tracing::info!("the phone sat in restore mode: asked restored to reboot it");
                    return phones.wait_for_start(
                        self.target.ecid,
                        Awaiting::Start,
                        None,
                        deadlines.enter_recovery,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the phone sits in restore mode and restored does not answer");
                }
            }
        }
        tracing::warn!("the phone did not come back: asking for a force restart");
        let line = force_restart_prompt(self.target.product_type.as_deref(), Some(port));
        self.shared
            .jobs()
            .update(self.id, |r| r.operator = Some(line));
        phones.wait_for_start(self.target.ecid, Awaiting::Start, None, deadlines.operator)
    }

    /// The next attempt's plan from the mode the phone is in now, its personalization and
    /// restored's options.
    fn prepare(&self, found: Found) -> Result<Start, End> {
        let station = |error: String| End::Station {
            phase: Phase::Upload,
            error,
        };
        let mode = start_mode_of(found.mode)
            .ok_or_else(|| station(format!("the phone came back in {} mode", found.mode)))?;
        let plan = Plan::new(
            Target {
                mode,
                ..self.target.clone()
            },
            &self.manifest,
            self.behavior,
        )
        .map_err(|e| station(e.to_string()))?;
        let personalize = self.ctx.personalization.for_plan(&plan).map_err(station)?;
        let restore_options = restore_options_for(&self.manifest_bytes, &plan, self.behavior)
            .ok_or_else(|| station("the chosen build identity is not in the manifest".into()))?;
        self.shared.jobs().update(self.id, |r| {
            r.start_mode = mode.to_string();
            r.steps = plan.steps.len();
            r.step = 0;
            r.progress = 0.0;
        });
        Ok(Start {
            plan,
            device: found.device,
            enumeration: found.enumeration,
            port: found.port,
            personalize,
            restore_options,
        })
    }

    /// Verifies the staged IPSW again (whole-file hashes and every component digest); a file
    /// that no longer matches is quarantined by the store.
    fn reverify(&self) -> bool {
        let outcome = ipsw::store::Store::open(&self.ctx.store)
            .and_then(|store| store.verify(&self.ipsw_id, None));
        match outcome {
            Ok(ipsw::store::VerifyOutcome::Intact(_)) => true,
            Ok(ipsw::store::VerifyOutcome::Quarantined { reason, .. }) => {
                tracing::warn!(error = %reason, "the staged IPSW no longer verifies: quarantined");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the staged IPSW cannot be verified");
                false
            }
        }
    }

    /// The job record after a failed attempt: the failure, the count, the ladder's answer.
    fn note(&self, failure: &Failure, decision: &Decision, error: &str) {
        let entry = failure.explain();
        self.shared.jobs().update(self.id, |r| {
            r.phase = failure.phase.to_string();
            r.error = Some(error.to_string());
            r.number = Some(entry.number);
            r.meaning = Some(entry.meaning.to_string());
            r.advice = Some(entry.advice.to_string());
            r.next_step = Some(decision.next.to_string());
        });
    }

    fn start_attempt(&self) -> Option<history::AttemptKey> {
        let (h, key) = self.kept.as_ref()?;
        h.start_attempt(*key, SystemTime::now())
            .map_err(|e| tracing::warn!(error = %e, "the job history cannot record the attempt"))
            .ok()
    }

    fn reach_phase(&self, attempt: Option<history::AttemptKey>, phase: Phase) {
        if let (Some((h, _)), Some(attempt)) = (&self.kept, attempt) {
            if let Err(e) = h.reach_phase(attempt, phase) {
                tracing::warn!(error = %e, "the job history cannot record the attempt's phase");
            }
        }
    }

    fn end_attempt(&self, attempt: Option<history::AttemptKey>, outcome: &history::AttemptOutcome) {
        if let (Some((h, _)), Some(attempt)) = (&self.kept, attempt) {
            if let Err(e) = h.end_attempt(attempt, outcome) {
                tracing::warn!(error = %e, "the job history cannot record the end of the attempt");
            }
        }
    }

    fn finish(self, end: End) {
        finish(&self.shared, self.id, self.kept.as_ref(), end);
    }
}

/// Ends job `id`: its record and, when kept, its history.
fn finish(
    shared: &Shared,
    id: u64,
    kept: Option<&(Arc<dyn history::HistoryStore>, history::JobKey)>,
    end: End,
) {
    let ended = SystemTime::now();
    let now = unix_ms(ended);
    let jobs = shared.jobs();
    let kept_end = match &end {
        End::Restored => {
            tracing::info!("restored");
            jobs.update(id, |r| {
                r.state = JobState::Succeeded;
                r.progress = 1.0;
                r.ended_ms = Some(now);
                r.operator = None;
                r.next_step = None;
            });
            history::JobEnd::restored(ended)
        }
        End::Station { phase, error } => {
            tracing::warn!(%error, "restore failed (the station's own error)");
            jobs.update(id, |r| {
                r.state = JobState::Failed;
                r.phase = phase.to_string();
                r.error = Some(error.clone());
                r.ended_ms = Some(now);
                r.next_step = None;
            });
            history::JobEnd::station_error(ended, error)
        }
        End::Failed {
            failure,
            number,
            error,
        } => {
            let entry = restore::failure::explain(*number)
                .copied()
                .unwrap_or_else(|| failure.explain());
            tracing::warn!(number, %error, "restore failed");
            jobs.update(id, |r| {
                r.state = JobState::Failed;
                r.phase = failure.phase.to_string();
                r.error = Some(error.clone());
                r.number = Some(*number);
                r.meaning = Some(entry.meaning.to_string());
                r.advice = Some(entry.advice.to_string());
                r.ended_ms = Some(now);
                r.next_step = None;
            });
            history::JobEnd {
                ended,
                result: history::JobResult::Failed,
                number: Some(*number),
                advice: Some(entry.advice.to_string()),
                error: Some(error.clone()),
            }
        }
    };
    if let Some((h, key)) = kept {
        if let Err(e) = h.end_job(*key, &kept_end) {
            tracing::warn!(error = %e, "the job history cannot record the end of this job");
        }
    }
}

/// What the operator does to put the phone in DFU mode, for its model when known.
/// The operator's line for a phone that did not come back after a failed attempt (it sits in
/// the restore ramdisk, or does not answer at all): a force restart brings it back in
/// recovery.
fn force_restart_prompt(product_type: Option<&str>, port: Option<&usb::PortPath>) -> String {
    let generation = product_type
        .and_then(|p| p.strip_prefix("iPhone"))
        .and_then(|p| p.split(',').next())
        .and_then(|major| major.parse::<u32>().ok());
    let how = match generation {
        Some(g) if g >= 10 => {
            "press and release Volume Up, press and release Volume Down, then hold the Side \
             button until the screen goes dark"
        }
        Some(9) => "hold the Side button and Volume Down together until the screen goes dark",
        Some(_) => "hold the Home button and the Side (or Top) button until the screen goes dark",
        None => "force-restart it with this model's button sequence",
    };
    let port = port.map(|p| format!(" on port {p}")).unwrap_or_default();
    format!(
        "the phone{port} did not come back in recovery (stuck in restore mode or not \
         answering): force-restart it: {how}; it comes back in recovery and the restore goes on"
    )
}

/// Takes over the phone's enumeration `device` in restore mode and asks restored to reboot
/// it (it comes back in recovery).
fn leave_restore_mode(
    shared: &Shared,
    ctx: &JobContext,
    device: usb::DeviceId,
) -> Result<(), String> {
    let dev = take_over(shared, ctx, device)?;
    job::reboot_restore_mode(dev).map_err(|e| e.to_string())
}

fn dfu_prompt(product_type: Option<&str>, port: &usb::PortPath) -> String {
    // iPhone8,x and older have a Home button; iPhone9,x (iPhone 7) uses volume down; the
    // iPhone 8 and later (iPhone10,x on) use the volume-up, volume-down, side sequence.
    let generation = product_type
        .and_then(|p| p.strip_prefix("iPhone"))
        .and_then(|p| p.split(',').next())
        .and_then(|major| major.parse::<u32>().ok());
    let how = match generation {
        Some(g) if g >= 10 => {
            "press and release Volume Up, press and release Volume Down, hold the Side button \
             until the screen goes black, then hold Side and Volume Down together for 5 s, release \
             Side and keep holding Volume Down for 10 s (the screen stays black)"
        }
        Some(9) => {
            "hold the Side button and Volume Down together for 8 s, release Side and keep \
             holding Volume Down for 5 s (the screen stays black)"
        }
        Some(_) => {
            "hold the Home button and the Side (or Top) button together for 8 s, release the \
             Side button and keep holding Home for 5 s (the screen stays black)"
        }
        None => {
            "follow the DFU-mode button sequence for this model (the screen stays black in DFU)"
        }
    };
    match product_type {
        Some(p) => format!("Put the phone in DFU mode ({p}, port {port}): {how}"),
        None => format!("Put the phone in DFU mode (port {port}): {how}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_lets_cap_jobs_run_per_controller_and_the_rest_in_order() {
        let gate = Gate::new(2);
        assert!(gate.try_take(1, 1), "a free slot");
        assert!(gate.try_take(1, 2), "a free slot");
        assert!(!gate.try_take(1, 3), "the bus is full");
        assert!(!gate.try_take(1, 4), "the bus is full");
        // Another controller has slots of its own.
        assert!(gate.try_take(2, 5), "bus 2 is empty");
        assert_eq!(
            gate.lock().get(&1).map(|b| b.waiting.clone()),
            Some([3, 4].into())
        );

        let order = std::sync::Mutex::new(Vec::new());
        let released = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Job 4 asks first but is second in line.
            for id in [4, 3] {
                let (gate, order, released) = (&gate, &order, &released);
                scope.spawn(move || {
                    gate.take(1, id);
                    assert!(released.load(std::sync::atomic::Ordering::SeqCst));
                    order.lock().unwrap().push(id);
                    gate.give(1);
                });
            }
            released.store(true, std::sync::atomic::Ordering::SeqCst);
            gate.give(1);
        });
        assert_eq!(*order.lock().unwrap(), [3, 4]);
        let buses = gate.lock();
        let bus = buses.get(&1).unwrap();
        assert_eq!(
            (bus.running, bus.waiting.len()),
            (1, 0),
            "only job 2 holds a slot"
        );
    }

    #[test]
    fn no_cap_means_no_queue() {
        let gate = Gate::new(0);
        assert!((0..64).all(|id| gate.try_take(1, id)));
    }

    #[test]
    fn the_dfu_prompt_names_the_model_its_buttons_and_the_port() {
        let port: usb::PortPath = "1-1.3".parse().unwrap();
        let new = dfu_prompt(Some("iPhone14,3"), &port);
        assert!(new.starts_with("Put the phone in DFU mode (iPhone14,3, port 1-1.3): "));
        assert!(new.contains("Volume Up"), "{new}");
        assert!(dfu_prompt(Some("iPhone9,1"), &port).contains("Volume Down"));
        assert!(dfu_prompt(Some("iPhone7,2"), &port).contains("Home"));
        let generic = dfu_prompt(None, &port);
        assert!(
            generic.starts_with("Put the phone in DFU mode (port 1-1.3): "),
            "{generic}"
        );
    }

    #[test]
    fn only_normal_recovery_and_dfu_start_a_plan() {
        assert_eq!(start_mode_of(Mode::Normal), Some(StartMode::Normal));
        assert_eq!(start_mode_of(Mode::Dfu), Some(StartMode::Dfu));
        assert_eq!(start_mode_of(Mode::Restore), None);
        assert_eq!(start_mode_of(Mode::PortDfu), None);
    }
}
