//! The job history: every restore job the station ran (the phone, the IPSW and its hash, the
//! behavior, start and end, each attempt with the phase it reached and its failure with the
//! evidence, the final result with Apple's number and the advice), kept so that a technician can
//! hand a customer a record and a shop can see which ports and phones fail.
//!
//! The store is a small trait, [`HistoryStore`], with two implementations: [`History`], the one
//! every station has, embedded SQLite (built into the binary), one file, by default
//! [`DEFAULT_PATH`]; and [`postgres::PgHistory`], a PostgreSQL server that several stations
//! share (`history = "postgres://…"`). [`Location::of`] tells which one a setting names.
//!
//! ## Threads
//!
//! The daemon writes from its job threads (each job runs on a thread of its own, see
//! [`super::jobs`]), synchronously: a job writes a handful of single-row statements in its whole
//! life (start, each attempt's start and end, the end), each a short transaction. [`History`]
//! holds **one connection behind a `Mutex`**: SQLite lets one writer in at a time anyway, so a
//! pool would only add waiting on SQLite's own lock (and `SQLITE_BUSY` handling) for no
//! throughput; one connection keeps the pragmas set once, keeps prepared statements cached, and
//! is the only way an in-memory store can be shared at all. Writes must never be done while
//! holding another lock the job's progress path needs, and a write that fails is logged by the
//! caller, never a reason to stop a restore. Other processes (`restation history`) read the
//! same file concurrently: the database is in WAL mode, so readers never block the daemon's
//! writes nor the reverse, and a busy timeout covers the rare checkpoint.
//!
//! ## Durability
//!
//! Each write is its own transaction with `synchronous = FULL`: a daemon that crashes or a
//! bench PC that loses power between [`HistoryStore::start_attempt`] and
//! [`HistoryStore::end_attempt`] leaves a job whose result is still `running` and whose last
//! attempt has no end; [`HistoryStore::unfinished`] (and [`HistoryStore::unfinished_on`], one
//! station's) lists such jobs, so a restarted daemon can resume them or end them. Each attempt
//! keeps the phase it has reached as it goes ([`HistoryStore::reach_phase`]);
//! [`HistoryStore::interrupt`] ends the attempts a crash left open as [`INTERRUPTED`] in that
//! phase, and the next [`HistoryStore::start_attempt`] continues the same job (see
//! `super::jobs`' resuming at startup).
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use restation::daemon::history::{
//!     AttemptOutcome, Filter, History, HistoryStore, JobEnd, JobResult, NewJob,
//! };
//! use restore::failure::{Cause, Failure};
//! use restore::phase::Phase;
//!
//! let history = History::in_memory()?;
//! let t = |s: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
//! let job = history.start_job(&NewJob::new(0x1a2b3c, "c0ffee", "21A329", "Erase", t(0)))?;
//!
//! // The first attempt loses the phone during the restore…
//! let first = history.start_attempt(job, t(1))?;
//! let lost = Failure::new(Phase::Restore, Cause::Vanished);
//! history.end_attempt(first, &AttemptOutcome::failed(t(60), &lost))?;
//! // …the second one restores it.
//! let second = history.start_attempt(job, t(61))?;
//! history.end_attempt(second, &AttemptOutcome::succeeded(t(300), Phase::FinalReboot))?;
//! history.end_job(job, &JobEnd::restored(t(300)))?;
//!
//! let rows = history.query(&Filter::default())?;
//! assert_eq!(rows.len(), 1);
//! assert_eq!(rows[0].result, JobResult::Restored);
//! assert_eq!(rows[0].attempts.len(), 2);
//! assert_eq!(rows[0].attempts[0].failure.as_ref().and_then(|f| f.number), Some(lost.number()));
//! assert!(history.unfinished()?.is_empty());
//! # Ok::<(), restation::daemon::history::HistoryError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use super::port_health::Observation;
use super::port_health::Signal;
use restore::failure::Failure;
use restore::phase::Phase;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde::Serialize;

pub mod postgres;

/// Where the daemon keeps the history when nothing else is configured.
pub const DEFAULT_PATH: &str = "/var/lib/restation/history.sqlite";

/// The environment variable naming another history file (over the configuration's `history`).
pub const ENV: &str = "RESTATION_HISTORY";

/// How long a statement waits for another process's lock before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per version: `MIGRATIONS[i]` takes a database from
/// `user_version` `i` to `i + 1`. Append only; never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: jobs and their attempts.
    "CREATE TABLE jobs (
        id            INTEGER PRIMARY KEY,
        station       TEXT,
        daemon_job    INTEGER,
        ecid          TEXT    NOT NULL,
        serial        TEXT,
        udid          TEXT,
        product_type  TEXT,
        port          TEXT,
        ipsw          TEXT    NOT NULL,
        ipsw_sha256   TEXT    NOT NULL,
        build_version TEXT    NOT NULL,
        behavior      TEXT    NOT NULL,
        started_ms    INTEGER NOT NULL,
        ended_ms      INTEGER,
        result        TEXT    NOT NULL DEFAULT 'running'
                      CHECK (result IN ('running', 'restored', 'failed', 'cancelled')),
        number        INTEGER,
        advice        TEXT,
        error         TEXT
    );
    CREATE INDEX jobs_by_start ON jobs (started_ms);
    CREATE INDEX jobs_by_ecid ON jobs (ecid, started_ms);
    CREATE INDEX jobs_running ON jobs (result) WHERE result = 'running';
    CREATE TABLE attempts (
        job             INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        n               INTEGER NOT NULL,
        started_ms      INTEGER NOT NULL,
        ended_ms        INTEGER,
        phase_reached   TEXT,
        failure_phase   TEXT,
        failure_cause   TEXT,
        failure_number  INTEGER,
        failure_message TEXT,
        evidence        TEXT,
        PRIMARY KEY (job, n)
    );",
    // 2: what each attempt said about its port (`super::port_health`).
    "CREATE TABLE port_observations (
        id            INTEGER PRIMARY KEY,
        station       TEXT,
        port          TEXT    NOT NULL,
        ecid          TEXT    NOT NULL,
        at_ms         INTEGER NOT NULL,
        signal        TEXT    NOT NULL,
        number        INTEGER,
        cause         TEXT,
        speed         TEXT,
        bytes_per_sec INTEGER
    );
    CREATE INDEX port_observations_by_time ON port_observations (station, at_ms);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The failure cause of an attempt the station itself cut short (the daemon was killed or
/// the power went): [`HistoryStore::interrupt`].
pub const INTERRUPTED: &str = "interrupted";

/// The message an interrupted attempt keeps.
pub const INTERRUPTED_MESSAGE: &str =
    "interrupted: the station stopped during this attempt (daemon crash, kill or power loss); \
     the job resumed with a new attempt when the station came back";

/// The phase an interrupted attempt names when none was kept.
const UNKNOWN_PHASE: &str = "unknown";

/// Why the history could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The directory the file goes in could not be made.
    #[error("cannot create the history's directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// There is no history file there (reading never creates one).
    #[error("no history at {0} (the daemon creates it with its first job)")]
    Missing(PathBuf),
    /// SQLite would not open the file or set it up.
    #[error("cannot open the history {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer restation.
    #[error(
        "the history {path} has schema version {found}; this restation knows versions up to \
         {known}: upgrade restation"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: u32,
        /// [`SCHEMA_VERSION`].
        known: u32,
    },
    /// Opened for reading, the file has an older schema (or none: not a history).
    #[error(
        "the history {path} has schema version {found}, not {expected}: start the daemon \
         once to migrate it (version 0: it is not a restation history)"
    )]
    OlderSchema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: u32,
        /// [`SCHEMA_VERSION`].
        expected: u32,
    },
    /// A migration failed (the file keeps its previous version: each runs in a transaction).
    #[error("migrating the history to schema version {version}: {source}")]
    Migrate {
        /// The version it was going to.
        version: u32,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The PostgreSQL server could not be reached or refused the login.
    #[error("cannot connect to the history at {url}: {error}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The client's error (its message already names its cause: not a `source`, so
        /// that a printed chain does not say it twice).
        error: ::postgres::Error,
    },
    /// A PostgreSQL migration failed (rolled back: the schema keeps its previous version).
    #[error("migrating the history to schema version {version}: {error}")]
    MigratePostgres {
        /// The version it was going to.
        version: u32,
        /// The server's error (its message names its cause).
        error: ::postgres::Error,
    },
    /// A PostgreSQL statement failed.
    #[error("history (PostgreSQL): {what}: {error}")]
    Postgres {
        /// What was being done.
        what: &'static str,
        /// The server's error (its message names its cause).
        error: ::postgres::Error,
    },
    /// A statement failed.
    #[error("history: {what}: {source}")]
    Sql {
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// No job with this key.
    #[error("no job {0} in the history")]
    UnknownJob(JobKey),
    /// No such attempt.
    #[error("job {} has no attempt {}", .0.job, .0.n)]
    UnknownAttempt(AttemptKey),
    /// The job has already ended.
    #[error("job {0} in the history has already ended")]
    Ended(JobKey),
    /// [`HistoryStore::end_job`] was given `running`, which is no end.
    #[error("job {0}: `running` is not how a job ends")]
    NotAnEnd(JobKey),
    /// A stored value is not what this build writes.
    #[error("job {job}: column {column} holds {value:?}, which is not {expected}")]
    Corrupt {
        /// The job's row.
        job: i64,
        /// The column.
        column: &'static str,
        /// What it holds (the start of it).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> HistoryError {
    move |source| HistoryError::Sql { what, source }
}

/// A job's row in the history (not the daemon's job number, which starts over with each
/// daemon: that one is [`NewJob::daemon_job`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobKey(pub i64);

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One attempt of a job: the job and the attempt's number (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct AttemptKey {
    /// The job.
    pub job: JobKey,
    /// 1, 2, …
    pub n: u32,
}

/// How a job ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobResult {
    /// Not ended: running, or the daemon stopped during it (see [`HistoryStore::unfinished`]).
    Running,
    /// The phone is back in iOS with the new build.
    Restored,
    /// It stopped with a failure.
    Failed,
    /// Someone stopped it.
    Cancelled,
}

impl JobResult {
    /// The word stored and exported.
    pub fn as_str(self) -> &'static str {
        match self {
            JobResult::Running => "running",
            JobResult::Restored => "restored",
            JobResult::Failed => "failed",
            JobResult::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<JobResult> {
        [
            JobResult::Running,
            JobResult::Restored,
            JobResult::Failed,
            JobResult::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as it starts: what the daemon knows when it takes the phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Which station ran it (a host name; for histories several stations share).
    pub station: Option<String>,
    /// The daemon's own job number (`JobRecord::id`, the API's).
    pub daemon_job: Option<u64>,
    /// The phone's ECID.
    pub ecid: u64,
    /// Hardware serial number.
    pub serial: Option<String>,
    /// UDID.
    pub udid: Option<String>,
    /// `iPhone14,3`.
    pub product_type: Option<String>,
    /// The port it was on (`1-1.3`).
    pub port: Option<String>,
    /// The staged IPSW's id in the store.
    pub ipsw: String,
    /// The IPSW's SHA-256 (hex).
    pub ipsw_sha256: String,
    /// The build it installs (`21A329`).
    pub build_version: String,
    /// `Erase` or `Update`.
    pub behavior: String,
    /// When it started.
    pub started: SystemTime,
}

impl NewJob {
    /// A job with what every job has; the rest (station, serial, port, …) left empty.
    /// `ipsw` is the store id, which is also the IPSW's SHA-256.
    pub fn new(
        ecid: u64,
        ipsw: &str,
        build_version: &str,
        behavior: &str,
        started: SystemTime,
    ) -> Self {
        NewJob {
            station: None,
            daemon_job: None,
            ecid,
            serial: None,
            udid: None,
            product_type: None,
            port: None,
            ipsw: ipsw.to_string(),
            ipsw_sha256: ipsw.to_string(),
            build_version: build_version.to_string(),
            behavior: behavior.to_string(),
            started,
        }
    }
}

/// A failure as the history keeps it: [`restore::failure::Failure`] flattened (phase, cause,
/// number, the whole message, the evidence as JSON), or the station's own error (no number).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureRecord {
    /// The phase it failed in (`restore`, `ibec-boot`, …).
    pub phase: String,
    /// What happened (the cause in words), when it was a failure of the phone or the link.
    pub cause: Option<String>,
    /// The number a technician knows; `None` for the station's own errors.
    pub number: Option<i64>,
    /// The whole message (number, meaning, phase, cause, evidence, advice).
    pub message: String,
    /// What the host saw ([`restore::failure::Evidence`] as JSON; `null` when none).
    pub evidence: serde_json::Value,
}

impl FailureRecord {
    /// A classified failure.
    pub fn of(failure: &Failure) -> Self {
        FailureRecord {
            phase: failure.phase.name().to_string(),
            cause: Some(failure.cause.to_string()),
            number: Some(failure.number()),
            message: failure.to_string(),
            evidence: if failure.evidence.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::to_value(&failure.evidence).unwrap_or(serde_json::Value::Null)
            },
        }
    }

    /// An error that is the station's own (no failure of the phone: no number).
    pub fn station(phase: Phase, message: impl fmt::Display) -> Self {
        FailureRecord {
            phase: phase.name().to_string(),
            cause: None,
            number: None,
            message: message.to_string(),
            evidence: serde_json::Value::Null,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    /// When.
    pub ended: SystemTime,
    /// The last phase it reached.
    pub phase_reached: Phase,
    /// Why it failed; `None` when it succeeded.
    pub failure: Option<FailureRecord>,
}

impl AttemptOutcome {
    /// It went through; `phase_reached` is the last phase (`FinalReboot` for a whole restore).
    pub fn succeeded(ended: SystemTime, phase_reached: Phase) -> Self {
        AttemptOutcome {
            ended,
            phase_reached,
            failure: None,
        }
    }

    /// It failed with `failure` (in the phase it reached).
    pub fn failed(ended: SystemTime, failure: &Failure) -> Self {
        AttemptOutcome {
            ended,
            phase_reached: failure.phase,
            failure: Some(FailureRecord::of(failure)),
        }
    }

    /// It stopped on the station's own error, in `phase`.
    pub fn station_error(ended: SystemTime, phase: Phase, message: impl fmt::Display) -> Self {
        AttemptOutcome {
            ended,
            phase_reached: phase,
            failure: Some(FailureRecord::station(phase, message)),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    /// When.
    pub ended: SystemTime,
    /// Restored, failed or cancelled (`Running` is refused: that is no end).
    pub result: JobResult,
    /// The number a technician knows, for a failure.
    pub number: Option<i64>,
    /// What to do about it.
    pub advice: Option<String>,
    /// The error in full.
    pub error: Option<String>,
}

impl JobEnd {
    /// The phone is restored.
    pub fn restored(ended: SystemTime) -> Self {
        JobEnd {
            ended,
            result: JobResult::Restored,
            number: None,
            advice: None,
            error: None,
        }
    }

    /// The job failed with `failure`: its number, its advice, its message.
    pub fn failed(ended: SystemTime, failure: &Failure) -> Self {
        JobEnd {
            ended,
            result: JobResult::Failed,
            number: Some(failure.number()),
            advice: Some(failure.explain().advice.to_string()),
            error: Some(failure.to_string()),
        }
    }

    /// The job failed on the station's own error (no number).
    pub fn station_error(ended: SystemTime, message: impl fmt::Display) -> Self {
        JobEnd {
            ended,
            result: JobResult::Failed,
            number: None,
            advice: None,
            error: Some(message.to_string()),
        }
    }

    /// Someone stopped it.
    pub fn cancelled(ended: SystemTime) -> Self {
        JobEnd {
            ended,
            result: JobResult::Cancelled,
            number: None,
            advice: None,
            error: None,
        }
    }
}

/// One attempt as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    /// 1, 2, …
    pub n: u32,
    /// When it started.
    pub started: SystemTime,
    /// When it ended; `None` while it runs, or if the daemon stopped during it.
    pub ended: Option<SystemTime>,
    /// The last phase it reached (`None` until it ends).
    pub phase_reached: Option<String>,
    /// Why it failed.
    pub failure: Option<FailureRecord>,
}

/// One job as read back, with its attempts in order.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// Its row.
    pub key: JobKey,
    /// Which station ran it.
    pub station: Option<String>,
    /// The daemon's job number.
    pub daemon_job: Option<u64>,
    /// The phone's ECID.
    pub ecid: u64,
    /// Hardware serial number.
    pub serial: Option<String>,
    /// UDID.
    pub udid: Option<String>,
    /// `iPhone14,3`.
    pub product_type: Option<String>,
    /// The port.
    pub port: Option<String>,
    /// The staged IPSW's id.
    pub ipsw: String,
    /// Its SHA-256.
    pub ipsw_sha256: String,
    /// The build installed.
    pub build_version: String,
    /// `Erase` or `Update`.
    pub behavior: String,
    /// When it started.
    pub started: SystemTime,
    /// When it ended.
    pub ended: Option<SystemTime>,
    /// How it ended.
    pub result: JobResult,
    /// The number a technician knows, for a failure.
    pub number: Option<i64>,
    /// What to do about it.
    pub advice: Option<String>,
    /// The error in full.
    pub error: Option<String>,
    /// Its attempts, first first.
    pub attempts: Vec<AttemptRow>,
}

impl JobRow {
    /// How long it took (`None` while it runs).
    pub fn duration(&self) -> Option<Duration> {
        self.ended
            .map(|e| e.duration_since(self.started).unwrap_or(Duration::ZERO))
    }
}

/// Which jobs [`HistoryStore::query`] returns: started in `[since, until)`, of one phone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// Started at or after.
    pub since: Option<SystemTime>,
    /// Started before.
    pub until: Option<SystemTime>,
    /// This phone only.
    pub ecid: Option<u64>,
}

/// A job history. Every method is one short synchronous transaction; implementations are
/// shared by the daemon's job threads (`Arc<dyn HistoryStore>`).
pub trait HistoryStore: Send + Sync {
    /// Records a job that starts (result `running`, no attempt yet).
    fn start_job(&self, job: &NewJob) -> Result<JobKey, HistoryError>;

    /// Records the start of the job's next attempt (numbered from 1).
    fn start_attempt(&self, job: JobKey, started: SystemTime) -> Result<AttemptKey, HistoryError>;

    /// Records how an attempt ended.
    fn end_attempt(
        &self,
        attempt: AttemptKey,
        outcome: &AttemptOutcome,
    ) -> Result<(), HistoryError>;

    /// Records how the job ended; an attempt still open ends with it (same time, no phase).
    fn end_job(&self, job: JobKey, end: &JobEnd) -> Result<(), HistoryError>;

    /// Jobs whose result is still `running`, oldest first: after a daemon restart, the ones it
    /// was running when it stopped.
    fn unfinished(&self) -> Result<Vec<JobRow>, HistoryError>;

    /// `station`'s jobs whose result is still `running`, oldest first, with their attempts:
    /// what a restarted daemon resumes (the job key, the phone, the IPSW and its hash, the
    /// behavior, the port, the attempts so far). `None` is a station without a name; a shared
    /// history's other stations' jobs are theirs to resume.
    fn unfinished_on(&self, station: Option<&str>) -> Result<Vec<JobRow>, HistoryError>;

    /// Keeps the phase the open attempt has reached so far, so that an attempt a crash ends
    /// still says how far it got ([`HistoryStore::end_attempt`] sets it again at the end).
    fn reach_phase(&self, attempt: AttemptKey, phase: Phase) -> Result<(), HistoryError>;

    /// Ends every open attempt of running job `job` as interrupted by the station itself (a
    /// daemon crash, a power loss): failure cause [`INTERRUPTED`], no number, in the phase it
    /// had reached (`unknown` when none was kept). The job stays `running`: the next
    /// [`HistoryStore::start_attempt`] continues it. Returns the attempts it ended.
    fn interrupt(&self, job: JobKey, ended: SystemTime) -> Result<Vec<u32>, HistoryError>;

    /// Jobs that match `filter`, oldest first, with their attempts.
    fn query(&self, filter: &Filter) -> Result<Vec<JobRow>, HistoryError>;

    /// Keeps what one attempt said about its port, for `station` (port paths are a
    /// station's own). The default keeps nothing (a store without port health).
    fn record_port_observation(
        &self,
        station: Option<&str>,
        observation: &Observation,
    ) -> Result<(), HistoryError> {
        let _ = (station, observation);
        Ok(())
    }

    /// `station`'s latest `limit` port observations, oldest first.
    fn port_observations(
        &self,
        station: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Observation>, HistoryError> {
        let _ = (station, limit);
        Ok(Vec::new())
    }
}

/// A `port_observations` row as stored, before its text is checked.
struct RawObservation {
    id: i64,
    port: String,
    ecid: String,
    at_ms: i64,
    signal: String,
    number: Option<i64>,
    cause: Option<String>,
    speed: Option<String>,
    bytes_per_sec: Option<i64>,
}

impl RawObservation {
    fn read(r: &Row<'_>) -> rusqlite::Result<RawObservation> {
        Ok(RawObservation {
            id: r.get(0)?,
            port: r.get(1)?,
            ecid: r.get(2)?,
            at_ms: r.get(3)?,
            signal: r.get(4)?,
            number: r.get(5)?,
            cause: r.get(6)?,
            speed: r.get(7)?,
            bytes_per_sec: r.get(8)?,
        })
    }

    /// The observation; `None` (logged) for a row this build cannot read.
    fn check(self) -> Option<Observation> {
        let ecid = self
            .ecid
            .strip_prefix("0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        let signal = Signal::parse(&self.signal);
        let (Some(ecid), Some(signal)) = (ecid, signal) else {
            tracing::warn!(
                row = self.id,
                ecid = %self.ecid,
                signal = %self.signal,
                "history: a port observation that cannot be read; skipped"
            );
            return None;
        };
        Some(Observation {
            port: self.port,
            ecid,
            at_ms: u64::try_from(self.at_ms).unwrap_or(0),
            signal,
            number: self.number,
            cause: self.cause,
            speed: self.speed.as_deref().and_then(speed_of),
            bytes_per_sec: self.bytes_per_sec.and_then(|b| u64::try_from(b).ok()),
        })
    }
}

/// A link speed as stored (its serde name: `High`, `Full`, ...).
fn speed_text(speed: usb::Speed) -> Option<String> {
    match serde_json::to_value(speed) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

fn speed_of(text: &str) -> Option<usb::Speed> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
}

const OBSERVATION_COLUMNS: &str =
    "id, port, ecid, at_ms, signal, number, cause, speed, bytes_per_sec";

/// This machine's host name, for [`NewJob::station`] (`None` when the kernel does not say).
pub fn station_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Where a history is: a SQLite file, or a PostgreSQL server shared by several stations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    File(PathBuf),
    /// A `postgres://` (or `postgresql://`) URL.
    Postgres(String),
}

impl Location {
    /// What the configuration's `history` (or `--db`) names: a URL starting with
    /// `postgres://` or `postgresql://` is a server, anything else a file.
    pub fn of(spec: &Path) -> Location {
        match spec.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Location::Postgres(url.to_string())
            }
            _ => Location::File(spec.to_path_buf()),
        }
    }

    /// Opens it for the daemon (creating and migrating as needed).
    pub fn open(&self) -> Result<Box<dyn HistoryStore>, HistoryError> {
        Ok(match self {
            Location::File(path) => Box::new(History::open(path)?),
            Location::Postgres(url) => Box::new(postgres::PgHistory::connect(url)?),
        })
    }

    /// Opens it for reading only (`restation history`).
    pub fn open_read_only(&self) -> Result<Box<dyn HistoryStore>, HistoryError> {
        Ok(match self {
            Location::File(path) => Box::new(History::open_read_only(path)?),
            Location::Postgres(url) => Box::new(postgres::PgHistory::connect_read_only(url)?),
        })
    }
}

/// The history in an embedded SQLite file (see the module's documentation for threads and
/// durability).
#[derive(Debug)]
pub struct History {
    conn: Mutex<Connection>,
}

impl History {
    /// Opens (creating it and its directory if needed) the history at `path`, in WAL mode,
    /// and brings its schema up to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| HistoryError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // `journal_mode` answers with the mode it ended up in.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "history: WAL mode refused");
        }
        Self::configure(&conn).map_err(open_err)?;
        migrate(&mut conn, path)?;
        Ok(History {
            conn: Mutex::new(conn),
        })
    }

    /// An empty history in memory (tests, `restation demo`).
    pub fn in_memory() -> Result<History, HistoryError> {
        let path = Path::new(":memory:");
        let open_err = |source| HistoryError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open_in_memory().map_err(open_err)?;
        Self::configure(&conn).map_err(open_err)?;
        migrate(&mut conn, path)?;
        Ok(History {
            conn: Mutex::new(conn),
        })
    }

    /// Opens an existing history for reading only (`restation history`): never creates,
    /// never migrates, and refuses a schema other than [`SCHEMA_VERSION`].
    pub fn open_read_only(path: &Path) -> Result<History, HistoryError> {
        if !path.exists() {
            return Err(HistoryError::Missing(path.to_path_buf()));
        }
        let open_err = |source| HistoryError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let found = user_version(&conn).map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(HistoryError::NewerSchema {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(HistoryError::OlderSchema {
                path: path.to_path_buf(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(History {
            conn: Mutex::new(conn),
        })
    }

    fn configure(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<u32, HistoryError> {
        user_version(&self.lock()).map_err(sql("reading the schema version"))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A thread that panicked while holding the connection left no transaction open
        // (rusqlite rolls back on drop): the connection is still good.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per version; running it on an
/// up-to-date file does nothing.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), HistoryError> {
    let found = user_version(conn).map_err(|source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if found > SCHEMA_VERSION {
        return Err(HistoryError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (version, migration) in (1..).zip(MIGRATIONS).skip(found as usize) {
        let err = |source| HistoryError::Migrate { version, source };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(migration).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// ECIDs are stored as restation prints them (`0x1a2b…`): readable in `sqlite3`, and a
/// PostgreSQL store has no unsigned 64-bit integer either.
fn ecid_text(ecid: u64) -> String {
    irecv::serial::format_ecid(ecid)
}

fn corrupt(job: i64, column: &'static str, value: &str, expected: &'static str) -> HistoryError {
    HistoryError::Corrupt {
        job,
        column,
        value: value.chars().take(64).collect(),
        expected,
    }
}

const JOB_COLUMNS: &str = "id, station, daemon_job, ecid, serial, udid, product_type, port, \
    ipsw, ipsw_sha256, build_version, behavior, started_ms, ended_ms, result, number, advice, \
    error";

/// A jobs row as stored, before its text is checked.
struct RawJob {
    id: i64,
    station: Option<String>,
    daemon_job: Option<i64>,
    ecid: String,
    serial: Option<String>,
    udid: Option<String>,
    product_type: Option<String>,
    port: Option<String>,
    ipsw: String,
    ipsw_sha256: String,
    build_version: String,
    behavior: String,
    started_ms: i64,
    ended_ms: Option<i64>,
    result: String,
    number: Option<i64>,
    advice: Option<String>,
    error: Option<String>,
}

impl RawJob {
    fn read(r: &Row<'_>) -> rusqlite::Result<RawJob> {
        Ok(RawJob {
            id: r.get(0)?,
            station: r.get(1)?,
            daemon_job: r.get(2)?,
            ecid: r.get(3)?,
            serial: r.get(4)?,
            udid: r.get(5)?,
            product_type: r.get(6)?,
            port: r.get(7)?,
            ipsw: r.get(8)?,
            ipsw_sha256: r.get(9)?,
            build_version: r.get(10)?,
            behavior: r.get(11)?,
            started_ms: r.get(12)?,
            ended_ms: r.get(13)?,
            result: r.get(14)?,
            number: r.get(15)?,
            advice: r.get(16)?,
            error: r.get(17)?,
        })
    }

    fn check(self, attempts: Vec<AttemptRow>) -> Result<JobRow, HistoryError> {
        let id = self.id;
        let hex = self
            .ecid
            .strip_prefix("0x")
            .ok_or_else(|| corrupt(id, "ecid", &self.ecid, "an ECID (0x…)"))?;
        let ecid = u64::from_str_radix(hex, 16)
            .map_err(|_| corrupt(id, "ecid", &self.ecid, "an ECID (0x…)"))?;
        let result = JobResult::parse(&self.result).ok_or_else(|| {
            corrupt(
                id,
                "result",
                &self.result,
                "running, restored, failed or cancelled",
            )
        })?;
        Ok(JobRow {
            key: JobKey(id),
            station: self.station,
            daemon_job: self.daemon_job.and_then(|n| u64::try_from(n).ok()),
            ecid,
            serial: self.serial,
            udid: self.udid,
            product_type: self.product_type,
            port: self.port,
            ipsw: self.ipsw,
            ipsw_sha256: self.ipsw_sha256,
            build_version: self.build_version,
            behavior: self.behavior,
            started: time(self.started_ms),
            ended: self.ended_ms.map(time),
            result,
            number: self.number,
            advice: self.advice,
            error: self.error,
            attempts,
        })
    }
}

/// An attempts row as stored.
struct RawAttempt {
    n: i64,
    started_ms: i64,
    ended_ms: Option<i64>,
    phase_reached: Option<String>,
    failure_phase: Option<String>,
    failure_cause: Option<String>,
    failure_number: Option<i64>,
    failure_message: Option<String>,
    evidence: Option<String>,
}

impl RawAttempt {
    fn read(r: &Row<'_>) -> rusqlite::Result<RawAttempt> {
        Ok(RawAttempt {
            n: r.get(0)?,
            started_ms: r.get(1)?,
            ended_ms: r.get(2)?,
            phase_reached: r.get(3)?,
            failure_phase: r.get(4)?,
            failure_cause: r.get(5)?,
            failure_number: r.get(6)?,
            failure_message: r.get(7)?,
            evidence: r.get(8)?,
        })
    }

    fn check(self, job: i64) -> Result<AttemptRow, HistoryError> {
        let n = u32::try_from(self.n)
            .map_err(|_| corrupt(job, "attempts.n", &self.n.to_string(), "an attempt number"))?;
        let failure = match self.failure_phase {
            None => None,
            Some(phase) => {
                let evidence = match self.evidence.as_deref() {
                    None => serde_json::Value::Null,
                    Some(text) => serde_json::from_str(text)
                        .map_err(|_| corrupt(job, "attempts.evidence", text, "JSON"))?,
                };
                Some(FailureRecord {
                    phase,
                    cause: self.failure_cause,
                    number: self.failure_number,
                    message: self.failure_message.unwrap_or_default(),
                    evidence,
                })
            }
        };
        Ok(AttemptRow {
            n,
            started: time(self.started_ms),
            ended: self.ended_ms.map(time),
            phase_reached: self.phase_reached,
            failure,
        })
    }
}

/// The jobs `where_sql` selects (with `args`), oldest first, each with its attempts, read in
/// one transaction so that a job and its attempts agree.
fn select(
    conn: &mut Connection,
    where_sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<JobRow>, HistoryError> {
    let tx = conn.transaction().map_err(sql("reading jobs"))?;
    let raw: Vec<RawJob> = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE {where_sql} ORDER BY started_ms, id"
            ))
            .map_err(sql("reading jobs"))?;
        let rows = stmt
            .query_map(args, RawJob::read)
            .map_err(sql("reading jobs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("reading jobs"))?
    };
    let mut jobs = Vec::with_capacity(raw.len());
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT n, started_ms, ended_ms, phase_reached, failure_phase, failure_cause, \
                 failure_number, failure_message, evidence FROM attempts WHERE job = ?1 \
                 ORDER BY n",
            )
            .map_err(sql("reading attempts"))?;
        for job in raw {
            let attempts: Vec<RawAttempt> = stmt
                .query_map([job.id], RawAttempt::read)
                .map_err(sql("reading attempts"))?
                .collect::<Result<_, _>>()
                .map_err(sql("reading attempts"))?;
            let attempts = attempts
                .into_iter()
                .map(|a| a.check(job.id))
                .collect::<Result<_, _>>()?;
            jobs.push(job.check(attempts)?);
        }
    }
    tx.commit().map_err(sql("reading jobs"))?;
    Ok(jobs)
}

fn job_exists(conn: &Connection, job: JobKey) -> Result<Option<String>, HistoryError> {
    conn.query_row("SELECT result FROM jobs WHERE id = ?1", [job.0], |r| {
        r.get::<_, String>(0)
    })
    .optional()
    .map_err(sql("looking a job up"))
}

impl HistoryStore for History {
    fn start_job(&self, job: &NewJob) -> Result<JobKey, HistoryError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO jobs (station, daemon_job, ecid, serial, udid, product_type, port, \
             ipsw, ipsw_sha256, build_version, behavior, started_ms, result) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'running')",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                job.station,
                job.daemon_job.and_then(|n| i64::try_from(n).ok()),
                ecid_text(job.ecid),
                job.serial,
                job.udid,
                job.product_type,
                job.port,
                job.ipsw,
                job.ipsw_sha256,
                job.build_version,
                job.behavior,
                ms(job.started),
            ])
        })
        .map_err(sql("recording a new job"))?;
        Ok(JobKey(conn.last_insert_rowid()))
    }

    fn start_attempt(&self, job: JobKey, started: SystemTime) -> Result<AttemptKey, HistoryError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("recording an attempt"))?;
        match job_exists(&tx, job)? {
            None => return Err(HistoryError::UnknownJob(job)),
            Some(r) if r != JobResult::Running.as_str() => return Err(HistoryError::Ended(job)),
            Some(_) => {}
        }
        let n: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(n), 0) + 1 FROM attempts WHERE job = ?1",
                [job.0],
                |r| r.get(0),
            )
            .map_err(sql("numbering an attempt"))?;
        tx.execute(
            "INSERT INTO attempts (job, n, started_ms) VALUES (?1, ?2, ?3)",
            params![job.0, n, ms(started)],
        )
        .map_err(sql("recording an attempt"))?;
        tx.commit().map_err(sql("recording an attempt"))?;
        let n = u32::try_from(n)
            .map_err(|_| corrupt(job.0, "attempts.n", &n.to_string(), "an attempt number"))?;
        Ok(AttemptKey { job, n })
    }

    fn end_attempt(
        &self,
        attempt: AttemptKey,
        outcome: &AttemptOutcome,
    ) -> Result<(), HistoryError> {
        let conn = self.lock();
        let f = outcome.failure.as_ref();
        let evidence = f
            .map(|f| &f.evidence)
            .filter(|e| !e.is_null())
            .map(serde_json::Value::to_string);
        let changed = conn
            .execute(
                "UPDATE attempts SET ended_ms = ?3, phase_reached = ?4, failure_phase = ?5, \
                 failure_cause = ?6, failure_number = ?7, failure_message = ?8, evidence = ?9 \
                 WHERE job = ?1 AND n = ?2",
                params![
                    attempt.job.0,
                    attempt.n,
                    ms(outcome.ended),
                    outcome.phase_reached.name(),
                    f.map(|f| &f.phase),
                    f.and_then(|f| f.cause.as_ref()),
                    f.and_then(|f| f.number),
                    f.map(|f| &f.message),
                    evidence,
                ],
            )
            .map_err(sql("recording an attempt's end"))?;
        if changed == 0 {
            return Err(HistoryError::UnknownAttempt(attempt));
        }
        Ok(())
    }

    fn end_job(&self, job: JobKey, end: &JobEnd) -> Result<(), HistoryError> {
        if end.result == JobResult::Running {
            return Err(HistoryError::NotAnEnd(job));
        }
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("recording a job's end"))?;
        let changed = tx
            .execute(
                "UPDATE jobs SET ended_ms = ?2, result = ?3, number = ?4, advice = ?5, \
                 error = ?6 WHERE id = ?1 AND result = 'running'",
                params![
                    job.0,
                    ms(end.ended),
                    end.result.as_str(),
                    end.number,
                    end.advice,
                    end.error,
                ],
            )
            .map_err(sql("recording a job's end"))?;
        if changed == 0 {
            return Err(match job_exists(&tx, job)? {
                None => HistoryError::UnknownJob(job),
                Some(_) => HistoryError::Ended(job),
            });
        }
        tx.execute(
            "UPDATE attempts SET ended_ms = ?2 WHERE job = ?1 AND ended_ms IS NULL",
            params![job.0, ms(end.ended)],
        )
        .map_err(sql("closing a job's open attempt"))?;
        tx.commit().map_err(sql("recording a job's end"))
    }

    fn unfinished(&self) -> Result<Vec<JobRow>, HistoryError> {
        select(&mut self.lock(), "result = 'running'", &[])
    }

    fn unfinished_on(&self, station: Option<&str>) -> Result<Vec<JobRow>, HistoryError> {
        select(
            &mut self.lock(),
            "result = 'running' AND station IS ?1",
            &[&station],
        )
    }

    fn reach_phase(&self, attempt: AttemptKey, phase: Phase) -> Result<(), HistoryError> {
        let changed = self
            .lock()
            .prepare_cached(
                "UPDATE attempts SET phase_reached = ?3 WHERE job = ?1 AND n = ?2 \
                 AND ended_ms IS NULL",
            )
            .and_then(|mut stmt| stmt.execute(params![attempt.job.0, attempt.n, phase.name()]))
            .map_err(sql("recording the phase an attempt reached"))?;
        if changed == 0 {
            return Err(HistoryError::UnknownAttempt(attempt));
        }
        Ok(())
    }

    fn interrupt(&self, job: JobKey, ended: SystemTime) -> Result<Vec<u32>, HistoryError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("ending interrupted attempts"))?;
        match job_exists(&tx, job)? {
            None => return Err(HistoryError::UnknownJob(job)),
            Some(r) if r != JobResult::Running.as_str() => return Err(HistoryError::Ended(job)),
            Some(_) => {}
        }
        let open: Vec<i64> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT n FROM attempts WHERE job = ?1 AND ended_ms IS NULL ORDER BY n",
                )
                .map_err(sql("finding interrupted attempts"))?;
            let rows = stmt
                .query_map([job.0], |r| r.get(0))
                .map_err(sql("finding interrupted attempts"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql("finding interrupted attempts"))?
        };
        tx.execute(
            "UPDATE attempts SET ended_ms = ?2, \
             failure_phase = COALESCE(phase_reached, ?3), failure_cause = ?4, \
             failure_number = NULL, failure_message = ?5, evidence = NULL \
             WHERE job = ?1 AND ended_ms IS NULL",
            params![
                job.0,
                ms(ended),
                UNKNOWN_PHASE,
                INTERRUPTED,
                INTERRUPTED_MESSAGE
            ],
        )
        .map_err(sql("ending interrupted attempts"))?;
        tx.commit().map_err(sql("ending interrupted attempts"))?;
        open.into_iter()
            .map(|n| {
                u32::try_from(n)
                    .map_err(|_| corrupt(job.0, "attempts.n", &n.to_string(), "an attempt number"))
            })
            .collect()
    }

    fn query(&self, filter: &Filter) -> Result<Vec<JobRow>, HistoryError> {
        let since = filter.since.map(ms);
        let until = filter.until.map(ms);
        let ecid = filter.ecid.map(ecid_text);
        select(
            &mut self.lock(),
            "(?1 IS NULL OR started_ms >= ?1) AND (?2 IS NULL OR started_ms < ?2) \
             AND (?3 IS NULL OR ecid = ?3)",
            &[&since, &until, &ecid],
        )
    }

    fn record_port_observation(
        &self,
        station: Option<&str>,
        o: &Observation,
    ) -> Result<(), HistoryError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO port_observations (station, port, ecid, at_ms, signal, number, cause, \
             speed, bytes_per_sec) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                station,
                o.port,
                ecid_text(o.ecid),
                i64::try_from(o.at_ms).unwrap_or(i64::MAX),
                o.signal.as_str(),
                o.number,
                o.cause,
                o.speed.and_then(speed_text),
                o.bytes_per_sec.and_then(|b| i64::try_from(b).ok()),
            ])
        })
        .map_err(sql("recording a port observation"))?;
        Ok(())
    }

    fn port_observations(
        &self,
        station: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Observation>, HistoryError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {OBSERVATION_COLUMNS} FROM port_observations WHERE station IS ?1 \
                 ORDER BY at_ms DESC, id DESC LIMIT ?2"
            ))
            .map_err(sql("reading port observations"))?;
        let raw: Vec<RawObservation> = stmt
            .query_map(
                params![station, i64::try_from(limit).unwrap_or(i64::MAX)],
                RawObservation::read,
            )
            .map_err(sql("reading port observations"))?
            .collect::<Result<_, _>>()
            .map_err(sql("reading port observations"))?;
        Ok(raw
            .into_iter()
            .rev()
            .filter_map(RawObservation::check)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use restore::failure::{Cause, Evidence};

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000 + s)
    }

    fn job(ecid: u64, started: SystemTime) -> NewJob {
        NewJob {
            station: Some("bench-1".into()),
            daemon_job: Some(7),
            serial: Some("F2LXK0ABCD12".into()),
            udid: Some("00008101-001A2B3C4D5E6F70".into()),
            product_type: Some("iPhone14,3".into()),
            port: Some("1-1.3".into()),
            ipsw_sha256: "ab".repeat(32),
            ..NewJob::new(ecid, &"ab".repeat(32), "21A329", "Erase", started)
        }
    }

    fn lost_link() -> Failure {
        Failure::new(
            Phase::Restore,
            Cause::Usb {
                kind: usb::ErrorKind::Io,
            },
        )
        .with_evidence(
            Evidence::default()
                .usb_error(usb::ErrorKind::Io)
                .bytes(512 << 20),
        )
    }

    #[test]
    fn migrations_are_idempotent_and_keep_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/history.sqlite");
        let h = History::open(&path).unwrap();
        assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
        let key = h.start_job(&job(0x1a2b, t(0))).unwrap();
        drop(h);
        // Opening again runs no migration twice and keeps what was there.
        let h = History::open(&path).unwrap();
        assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
        migrate(&mut h.lock(), &path).unwrap();
        assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
        let rows = h.query(&Filter::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key, key);
        let journal: String = h
            .lock()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
    }

    #[test]
    fn a_newer_schema_is_refused_and_read_only_opening_checks_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        assert!(matches!(
            History::open_read_only(&path),
            Err(HistoryError::Missing(_))
        ));
        let h = History::open(&path).unwrap();
        h.lock()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(h);
        let err = History::open(&path).unwrap_err();
        assert!(
            matches!(err, HistoryError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade restation"), "{err}");
        assert!(matches!(
            History::open_read_only(&path),
            Err(HistoryError::NewerSchema { .. })
        ));
        // A SQLite file that is no history.
        let other = dir.path().join("other.sqlite");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        assert!(matches!(
            History::open_read_only(&other),
            Err(HistoryError::OlderSchema { found: 0, .. })
        ));
    }

    #[test]
    fn a_job_with_two_attempts_reads_back_as_one_job() {
        let h = History::in_memory().unwrap();
        let key = h.start_job(&job(0x1a2b3c4d5e, t(0))).unwrap();
        let a1 = h.start_attempt(key, t(1)).unwrap();
        assert_eq!(a1.n, 1);
        let failure = lost_link();
        h.end_attempt(a1, &AttemptOutcome::failed(t(60), &failure))
            .unwrap();
        let a2 = h.start_attempt(key, t(61)).unwrap();
        assert_eq!(a2.n, 2);
        h.end_attempt(a2, &AttemptOutcome::succeeded(t(300), Phase::FinalReboot))
            .unwrap();
        h.end_job(key, &JobEnd::restored(t(301))).unwrap();

        let rows = h.query(&Filter::default()).unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.ecid, 0x1a2b3c4d5e);
        assert_eq!(row.result, JobResult::Restored);
        assert_eq!(row.number, None);
        assert_eq!(row.duration(), Some(Duration::from_secs(301)));
        assert_eq!(row.serial.as_deref(), Some("F2LXK0ABCD12"));
        assert_eq!(row.daemon_job, Some(7));
        assert_eq!(row.attempts.len(), 2);
        let first = &row.attempts[0];
        assert_eq!(
            (first.n, first.started, first.ended),
            (1, t(1), Some(t(60)))
        );
        assert_eq!(first.phase_reached.as_deref(), Some("restore"));
        let f = first.failure.as_ref().unwrap();
        assert_eq!(f.number, Some(4013));
        assert_eq!(f.phase, "restore");
        assert_eq!(f.message, failure.to_string());
        assert_eq!(f.evidence["bytes_transferred"], 512 << 20);
        assert_eq!(f.evidence, serde_json::to_value(&failure.evidence).unwrap());
        let second = &row.attempts[1];
        assert_eq!(second.phase_reached.as_deref(), Some("final-reboot"));
        assert!(second.failure.is_none());
        // An ended job takes no more attempts and no second end.
        assert!(matches!(
            h.start_attempt(key, t(400)),
            Err(HistoryError::Ended(_))
        ));
        assert!(matches!(
            h.end_job(key, &JobEnd::cancelled(t(400))),
            Err(HistoryError::Ended(_))
        ));
    }

    #[test]
    fn a_failed_job_keeps_its_number_and_advice() {
        let h = History::in_memory().unwrap();
        let key = h.start_job(&job(1, t(0))).unwrap();
        let a = h.start_attempt(key, t(0)).unwrap();
        let failure = lost_link();
        h.end_attempt(a, &AttemptOutcome::failed(t(5), &failure))
            .unwrap();
        h.end_job(key, &JobEnd::failed(t(5), &failure)).unwrap();
        let row = h.query(&Filter::default()).unwrap().remove(0);
        assert_eq!(row.result, JobResult::Failed);
        assert_eq!(row.number, Some(4013));
        assert_eq!(row.advice.as_deref(), Some(failure.explain().advice));
        assert_eq!(row.error, Some(failure.to_string()));

        // The station's own error: no number.
        let key = h.start_job(&job(2, t(10))).unwrap();
        let a = h.start_attempt(key, t(10)).unwrap();
        h.end_attempt(
            a,
            &AttemptOutcome::station_error(t(11), Phase::Upload, "no phone handle"),
        )
        .unwrap();
        h.end_job(key, &JobEnd::station_error(t(11), "no phone handle"))
            .unwrap();
        let row = h
            .query(&Filter {
                ecid: Some(2),
                ..Filter::default()
            })
            .unwrap()
            .remove(0);
        assert_eq!(row.number, None);
        let f = row.attempts[0].failure.as_ref().unwrap();
        assert_eq!((f.number, f.cause.as_deref()), (None, None));
        assert_eq!(f.evidence, serde_json::Value::Null);
    }

    #[test]
    fn unfinished_lists_the_running_jobs_only() {
        let h = History::in_memory().unwrap();
        let done = h.start_job(&job(1, t(0))).unwrap();
        let running = h.start_job(&job(2, t(1))).unwrap();
        let cancelled = h.start_job(&job(3, t(2))).unwrap();
        h.end_job(done, &JobEnd::restored(t(10))).unwrap();
        h.end_job(cancelled, &JobEnd::cancelled(t(11))).unwrap();
        let open = h.unfinished().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].key, running);
        assert_eq!(open[0].result, JobResult::Running);
        assert_eq!(open[0].ended, None);
    }

    #[test]
    fn since_until_and_ecid_filter() {
        let h = History::in_memory().unwrap();
        for (ecid, s) in [(1, 0), (2, 100), (1, 200), (3, 300)] {
            h.start_job(&job(ecid, t(s))).unwrap();
        }
        let starts = |f: Filter| -> Vec<SystemTime> {
            h.query(&f).unwrap().iter().map(|r| r.started).collect()
        };
        assert_eq!(starts(Filter::default()).len(), 4);
        // since is inclusive, until exclusive.
        assert_eq!(
            starts(Filter {
                since: Some(t(100)),
                ..Filter::default()
            }),
            [t(100), t(200), t(300)]
        );
        assert_eq!(
            starts(Filter {
                until: Some(t(200)),
                ..Filter::default()
            }),
            [t(0), t(100)]
        );
        assert_eq!(
            starts(Filter {
                since: Some(t(100)),
                until: Some(t(300)),
                ecid: None,
            }),
            [t(100), t(200)]
        );
        assert_eq!(
            starts(Filter {
                ecid: Some(1),
                ..Filter::default()
            }),
            [t(0), t(200)]
        );
        assert!(starts(Filter {
            ecid: Some(1),
            since: Some(t(201)),
            until: None
        })
        .is_empty());
    }

    #[test]
    fn a_crash_inside_an_attempt_leaves_a_readable_running_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        let h = History::open(&path).unwrap();
        let key = h.start_job(&job(0xabc, t(0))).unwrap();
        let a1 = h.start_attempt(key, t(1)).unwrap();
        // The daemon dies here: the connection is never closed nor checkpointed.
        std::mem::forget(h);

        // A reader (restation history) sees it…
        let reader = History::open_read_only(&path).unwrap();
        let rows = reader.query(&Filter::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].result, JobResult::Running);
        assert_eq!(rows[0].attempts.len(), 1);
        assert_eq!(rows[0].attempts[0].ended, None);

        // …and the restarted daemon finds it, resumes it with a second attempt, and ends it.
        let h = History::open(&path).unwrap();
        let open = h.unfinished().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].key, key);
        assert_eq!(open[0].attempts[0].n, a1.n);
        let a2 = h.start_attempt(key, t(100)).unwrap();
        assert_eq!(a2.n, 2);
        h.end_job(key, &JobEnd::cancelled(t(120))).unwrap();
        let row = h.query(&Filter::default()).unwrap().remove(0);
        // Ending the job closed its open attempts.
        assert!(row.attempts.iter().all(|a| a.ended == Some(t(120))));
        assert!(h.unfinished().unwrap().is_empty());
    }

    #[test]
    fn unknown_keys_are_typed_errors() {
        let h = History::in_memory().unwrap();
        assert!(matches!(
            h.start_attempt(JobKey(42), t(0)),
            Err(HistoryError::UnknownJob(JobKey(42)))
        ));
        let missing = AttemptKey {
            job: JobKey(42),
            n: 1,
        };
        assert!(matches!(
            h.end_attempt(missing, &AttemptOutcome::succeeded(t(0), Phase::Restore)),
            Err(HistoryError::UnknownAttempt(_))
        ));
        assert!(matches!(
            h.end_job(JobKey(42), &JobEnd::restored(t(0))),
            Err(HistoryError::UnknownJob(_))
        ));
    }

    /// What every [`HistoryStore`] must do, on an empty store.
    pub(super) fn conformance(h: &dyn HistoryStore) {
        // Two attempts, one job.
        let key = h.start_job(&job(0xfeed, t(0))).unwrap();
        let a1 = h.start_attempt(key, t(1)).unwrap();
        let failure = lost_link();
        h.end_attempt(a1, &AttemptOutcome::failed(t(60), &failure))
            .unwrap();
        let a2 = h.start_attempt(key, t(61)).unwrap();
        assert_eq!((a1.n, a2.n), (1, 2));
        // Still running: unfinished lists it with its open attempt.
        let open = h.unfinished().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].attempts.len(), 2);
        assert_eq!(open[0].attempts[1].ended, None);
        h.end_job(key, &JobEnd::failed(t(90), &failure)).unwrap();
        assert!(h.unfinished().unwrap().is_empty());
        let rows = h.query(&Filter::default()).unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.key, key);
        assert_eq!(row.ecid, 0xfeed);
        assert_eq!((row.result, row.number), (JobResult::Failed, Some(4013)));
        assert_eq!(row.started, t(0));
        assert_eq!(row.ended, Some(t(90)));
        assert_eq!(row.daemon_job, Some(7));
        let f = row.attempts[0].failure.as_ref().unwrap();
        assert_eq!(f.evidence, serde_json::to_value(&failure.evidence).unwrap());
        assert_eq!(
            row.attempts[1].ended,
            Some(t(90)),
            "the open attempt ends with the job"
        );
        assert!(matches!(
            h.end_job(key, &JobEnd::restored(t(91))),
            Err(HistoryError::Ended(_))
        ));
        assert!(matches!(
            h.end_job(
                key,
                &JobEnd {
                    result: JobResult::Running,
                    ..JobEnd::restored(t(91))
                }
            ),
            Err(HistoryError::NotAnEnd(_))
        ));
        assert!(matches!(
            h.start_attempt(JobKey(i64::MAX), t(0)),
            Err(HistoryError::UnknownJob(_))
        ));
        // Filters.
        h.start_job(&job(0xbeef, t(100))).unwrap();
        h.start_job(&job(0xfeed, t(200))).unwrap();
        let starts = |f: Filter| -> Vec<SystemTime> {
            h.query(&f).unwrap().iter().map(|r| r.started).collect()
        };
        assert_eq!(
            starts(Filter {
                since: Some(t(100)),
                until: Some(t(200)),
                ecid: None
            }),
            [t(100)]
        );
        assert_eq!(
            starts(Filter {
                ecid: Some(0xfeed),
                ..Filter::default()
            }),
            [t(0), t(200)]
        );
        assert_eq!(h.unfinished().unwrap().len(), 2);

        // Port observations: per station, oldest first, the latest `limit`.
        let failed = Observation::failed("1-1.3", 0xfeed, 1_000, &failure, Some(usb::Speed::Full));
        let went = Observation::succeeded(
            "1-1.4",
            0xfeed,
            2_000,
            Some(usb::Speed::High),
            Some(40_000_000),
        );
        for o in [&failed, &went] {
            h.record_port_observation(Some("bench-1"), o).unwrap();
        }
        h.record_port_observation(None, &went).unwrap();
        h.record_port_observation(Some("bench-2"), &failed).unwrap();
        assert_eq!(
            h.port_observations(Some("bench-1"), 10).unwrap(),
            [failed.clone(), went.clone()]
        );
        assert_eq!(
            h.port_observations(Some("bench-1"), 1).unwrap(),
            std::slice::from_ref(&went)
        );
        assert_eq!(h.port_observations(None, 10).unwrap(), [went]);
        assert_eq!(h.port_observations(Some("bench-2"), 10).unwrap(), [failed]);
        assert!(h.port_observations(Some("bench-3"), 10).unwrap().is_empty());

        // A daemon crash in the middle of an attempt: the phase kept so far, the attempt
        // ended as interrupted at the restart, the same job continued and ended.
        let crashed = h.start_job(&job(0xc0de, t(300))).unwrap();
        let a = h.start_attempt(crashed, t(301)).unwrap();
        h.reach_phase(a, Phase::Upload).unwrap();
        h.reach_phase(a, Phase::Restore).unwrap();
        let mine = h.unfinished_on(Some("bench-1")).unwrap();
        let row = mine.iter().find(|r| r.key == crashed).unwrap();
        assert_eq!(
            (row.ecid, row.ipsw_sha256.as_str(), row.behavior.as_str()),
            (0xc0de, "ab".repeat(32).as_str(), "Erase")
        );
        assert_eq!(row.port.as_deref(), Some("1-1.3"));
        assert_eq!(row.attempts.len(), 1);
        assert_eq!(row.attempts[0].phase_reached.as_deref(), Some("restore"));
        assert!(h.unfinished_on(Some("bench-9")).unwrap().is_empty());
        assert!(h.unfinished_on(None).unwrap().is_empty());
        assert_eq!(h.interrupt(crashed, t(400)).unwrap(), [1]);
        assert!(
            h.interrupt(crashed, t(401)).unwrap().is_empty(),
            "none open"
        );
        assert!(matches!(
            h.reach_phase(a, Phase::Upload),
            Err(HistoryError::UnknownAttempt(_))
        ));
        let b = h.start_attempt(crashed, t(402)).unwrap();
        assert_eq!(b.n, 2, "the attempts go on counting");
        h.end_attempt(b, &AttemptOutcome::succeeded(t(500), Phase::FinalReboot))
            .unwrap();
        h.end_job(crashed, &JobEnd::restored(t(500))).unwrap();
        let row = h
            .query(&Filter {
                ecid: Some(0xc0de),
                ..Filter::default()
            })
            .unwrap()
            .remove(0);
        assert_eq!(row.result, JobResult::Restored);
        assert_eq!(row.attempts.len(), 2);
        let first = &row.attempts[0];
        assert_eq!(first.ended, Some(t(400)));
        assert_eq!(first.phase_reached.as_deref(), Some("restore"));
        let f = first.failure.as_ref().unwrap();
        assert_eq!(
            (f.phase.as_str(), f.cause.as_deref(), f.number),
            ("restore", Some(INTERRUPTED), None)
        );
        assert_eq!(f.message, INTERRUPTED_MESSAGE);
        assert!(row.attempts[1].failure.is_none());
        assert!(matches!(
            h.interrupt(crashed, t(600)),
            Err(HistoryError::Ended(_))
        ));
        assert!(matches!(
            h.interrupt(JobKey(i64::MAX), t(600)),
            Err(HistoryError::UnknownJob(_))
        ));
        // An attempt cut short before any phase was kept.
        let early = h.start_job(&job(0xc0df, t(700))).unwrap();
        h.start_attempt(early, t(701)).unwrap();
        assert_eq!(h.interrupt(early, t(702)).unwrap(), [1]);
        let row = h
            .query(&Filter {
                ecid: Some(0xc0df),
                ..Filter::default()
            })
            .unwrap()
            .remove(0);
        assert_eq!(row.result, JobResult::Running);
        let f = row.attempts[0].failure.as_ref().unwrap();
        assert_eq!(f.phase, UNKNOWN_PHASE);
    }

    #[test]
    fn a_setting_names_a_file_or_a_server() {
        assert_eq!(
            Location::of(Path::new("postgres://bench@db/history")),
            Location::Postgres("postgres://bench@db/history".into())
        );
        assert_eq!(
            Location::of(Path::new("postgresql://db/h")),
            Location::Postgres("postgresql://db/h".into())
        );
        assert_eq!(
            Location::of(Path::new("/var/lib/restation/history.sqlite")),
            Location::File(PathBuf::from("/var/lib/restation/history.sqlite"))
        );
        assert!(matches!(
            Location::of(Path::new("/nonexistent/h.sqlite")).open_read_only(),
            Err(HistoryError::Missing(_))
        ));
    }

    #[test]
    fn the_sqlite_store_conforms() {
        conformance(&History::in_memory().unwrap());
    }

    #[test]
    fn corrupt_rows_are_typed_errors_not_panics() {
        let h = History::in_memory().unwrap();
        h.start_job(&job(1, t(0))).unwrap();
        h.lock()
            .execute("UPDATE jobs SET ecid = 'nonsense'", [])
            .unwrap();
        assert!(matches!(
            h.query(&Filter::default()),
            Err(HistoryError::Corrupt { column: "ecid", .. })
        ));
    }

    #[test]
    fn job_threads_share_one_store() {
        let h = std::sync::Arc::new(History::in_memory().unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    let key = h.start_job(&job(i, t(i))).unwrap();
                    let a = h.start_attempt(key, t(i)).unwrap();
                    h.end_attempt(a, &AttemptOutcome::succeeded(t(i + 1), Phase::FinalReboot))
                        .unwrap();
                    h.end_job(key, &JobEnd::restored(t(i + 1))).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let rows = h.query(&Filter::default()).unwrap();
        assert_eq!(rows.len(), 8);
        assert!(rows
            .iter()
            .all(|r| r.result == JobResult::Restored && r.attempts.len() == 1));
    }
}
