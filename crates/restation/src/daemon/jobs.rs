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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipsw::manifest::{BuildManifest, RestoreBehavior};
use irecv::mode::Mode;
use restore::phase::{AwaitedMode, Deadlines, Phase};
use restore::plan::{Plan, StartMode, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use usb::{UsbBackend, UsbDevice};

use super::job::{self, JobEvent, Materials, Phones, WaitError};
use super::registry::{unix_ms, Entry, Key};
use super::restoring::{Personalize, RestoreEvent, SourceError};
use super::Shared;

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
    /// Running.
    Running,
    /// The phone is back in iOS with the new build.
    Succeeded,
    /// It stopped; `error` says why.
    Failed,
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
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            records: std::sync::Mutex::new(BTreeMap::new()),
            updates: broadcast::channel(1024).0,
            next: std::sync::atomic::AtomicU64::new(1),
        }
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
    fn component(&mut self, _: &str, im4p: Vec<u8>) -> Result<Vec<u8>, SourceError> {
        Ok(im4p)
    }

    fn root_ticket(&mut self) -> Result<Vec<u8>, SourceError> {
        Ok(Vec::new())
    }

    fn nonces(&mut self, _: &irecv::serial::Nonces) -> Result<(), SourceError> {
        Ok(())
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
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("store", &self.store)
            .field("deadlines", &self.deadlines)
            .finish_non_exhaustive()
    }
}

fn start_mode(entry: &Entry) -> Result<StartMode, StartError> {
    let refuse = |why| StartError::Mode {
        key: entry.id.clone(),
        mode: entry.mode,
        why,
    };
    match entry.mode {
        Mode::Normal => Ok(StartMode::Normal),
        Mode::Recovery(_) => Ok(StartMode::RecoveryIboot),
        Mode::Dfu => Ok(StartMode::Dfu),
        Mode::Restore | Mode::RestoreOrMacDfu => Err(refuse(
            "it is running a restore ramdisk; let it finish or reboot it",
        )),
        Mode::Wtf | Mode::PortDfu | Mode::Kis => Err(refuse(
            "restation does not restore from this mode; put it in DFU mode",
        )),
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
        .find(|j| j.state == JobState::Running && j.ecid == entry.id)
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
    let identity_dict = restore::restored::identity_dict(&manifest_bytes, &plan.identity)
        .ok_or_else(|| ipsw_err("the chosen build identity is not in the manifest".into()))?;
    let restore_options = restore::restored::restore_options(
        identity_dict,
        &plan.product_version,
        behavior,
        true,
        &uuid_for(ecid),
    );
    // Take the phone.
    let device = entry
        .device
        .ok_or_else(|| StartError::NoPhone(entry.id.clone()))?;
    let first = take_over(shared, ctx, device).map_err(StartError::Takeover)?;

    let job_id = shared
        .jobs()
        .next
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let record = JobRecord {
        id: job_id,
        ecid: entry.id.clone(),
        port: entry.port.as_ref().map(ToString::to_string),
        product_type: id.product_type.clone(),
        ipsw: record.id.clone(),
        build_version: plan.build_version.clone(),
        behavior: behavior.to_string(),
        start_mode: mode.to_string(),
        state: JobState::Running,
        phase: Phase::Upload.to_string(),
        step: 0,
        steps: plan.steps.len(),
        step_text: String::new(),
        progress: 0.0,
        started_ms: unix_ms(SystemTime::now()),
        ended_ms: None,
        error: None,
    };
    shared.jobs().lock().insert(job_id, record.clone());
    let _ = shared.jobs().updates.send(JobUpdate { job: record });

    let ctx = ctx.clone();
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name(format!("job-{job_id}"))
        .spawn(move || {
            let span = tracing::info_span!("job", id = job_id, ecid = %format!("{ecid:#x}"));
            let _enter = span.enter();
            let mut personalize = personalize;
            let mut phones = RegistryPhones {
                shared: Arc::clone(&shared),
                ctx: ctx.clone(),
                used: std::collections::HashSet::from([device]),
            };
            let jobs = shared.jobs();
            let mut phase = Phase::Upload;
            let result = job::run(
                &plan,
                first,
                &mut phones,
                Materials {
                    file: &file,
                    archive: &archive,
                    personalize: &mut *personalize,
                    restore_options,
                },
                &ctx.deadlines,
                &mut irecv::dfu::SystemClock,
                &mut |event| apply(jobs, job_id, &mut phase, event),
            );
            let now = unix_ms(SystemTime::now());
            match result {
                Ok(_) => {
                    tracing::info!("restored");
                    jobs.update(job_id, |r| {
                        r.state = JobState::Succeeded;
                        r.progress = 1.0;
                        r.ended_ms = Some(now);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "restore failed");
                    jobs.update(job_id, |r| {
                        r.state = JobState::Failed;
                        r.phase = e.phase(phase).to_string();
                        r.error = Some(e.to_string());
                        r.ended_ms = Some(now);
                    });
                }
            }
        })
        .map_err(|e| StartError::Takeover(format!("cannot start the job's thread: {e}")))?;
    Ok(job_id)
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
    }
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
    /// moment after it left, and a wait is for the phone's next enumeration.
    used: std::collections::HashSet<usb::DeviceId>,
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
        loop {
            let shared = Arc::clone(&self.shared);
            let used = self.used.clone();
            let found = self.ctx.runtime.block_on(async {
                tokio::time::timeout_at(
                    deadline,
                    shared.wait_for_entry(|r| {
                        r.get(&key)
                            .filter(|e| e.present && awaited(e.mode, mode))
                            .and_then(|e| e.device)
                            .filter(|d| !used.contains(d))
                    }),
                )
                .await
            });
            let device = found.map_err(|_| WaitError::Deadline { mode, within })?;
            self.used.insert(device);
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
