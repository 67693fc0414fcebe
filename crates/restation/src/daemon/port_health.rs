//! Port health: what the station learns about its cables and ports from the restores it runs
//! (`ERROR-CODES.md`, "Cable and port heuristics"; `docs/port-health.md`).
//!
//! Each attempt of a restore job leaves one [`Observation`] of the port it ran on: the phone
//! (ECID), whether it went through, what the failure was ([`Signal`]: a full-speed link, a
//! flap, an unexpected transfer error, a slow link, another loss of the link, or a failure that
//! is not the port's), the link speed and the OS image's throughput. [`PortHealth`] keeps the
//! latest [`WINDOW`] observations of each port (pure: no clock, no I/O) and judges each port
//! from them: [`PortHistory::Suspect`] with its [`Reason`]s, or good. The retry ladder reads
//! that verdict ([`restore::ladder::Attempt::on_suspect_port`]); `GET /ports` shows it; the job
//! history keeps the observations ([`super::history::HistoryStore::record_port_observation`]),
//! so a restarted daemon knows its ports again ([`Ports::load`]).
//!
//! The verdicts, each with a named threshold:
//! - **link speed**: the latest enumeration seen on the port below high speed (12 Mb/s): the
//!   cable or port has damaged data lines. Suspect at once.
//! - **flaps**: [`FLAP_LIMIT`] unrequested disconnects (the phone left the bus or came back
//!   unasked) from at least [`MIN_PHONES_FOR_ERRORS`] different phones.
//! - **transfer errors**: [`TRANSFER_ERROR_LIMIT`] unexpected USB errors (EPROTO, stalls,
//!   timeouts, babble) from at least [`MIN_PHONES_FOR_ERRORS`] different phones.
//! - **slow**: [`SLOW_LIMIT`] transfers refused as far below the median, or the port's median
//!   throughput under 1/[`SLOW_LINK_FRACTION`] of the other ports' median (each side with at
//!   least [`MIN_MEDIAN_SAMPLES`] samples).
//! - **distinct phones**: [`SUSPECT_PHONES`] different phones whose last attempt here failed
//!   with a link-class failure, or [`SUSPECT_CONFIRMED_PHONES`] of them that then went through
//!   on another port; either way with at least [`SUSPECT_FAILURE_RATE_PERCENT`] % of the
//!   phones seen here failing.
//! - **the phone, not the port**: a phone whose link-class failures span
//!   [`PHONE_SUSPECT_PORTS`] ports that other phones went through on, and that has not gone
//!   through since, is suspect itself; its failures count against no port.
//!
//! Failures that are not the link's (an unsigned build, 3194; a damaged IPSW, 14; the phone's
//! own restore status; a refusal; a declined trust dialog; a panic) never count against a
//! port ([`restore::failure::Cause::implicates_link`]).
//!
//! ```
//! use restation::daemon::port_health::{Observation, PortHealth, Signal};
//! use restore::failure::{Cause, Failure};
//! use restore::ladder::PortHistory;
//! use restore::phase::Phase;
//!
//! let mut health = PortHealth::default();
//! let eproto = Failure::new(Phase::Upload, Cause::Usb { kind: usb::ErrorKind::Io });
//! // Two phones fail on 1-1.1 and go through on 1-1.2.
//! for (t, ecid) in [(0, 0xA), (10, 0xB)] {
//!     health.record(Observation::failed("1-1.1", ecid, t, &eproto, None));
//!     health.record(Observation::succeeded("1-1.2", ecid, t + 5, None, None));
//! }
//! assert_eq!(health.history("1-1.1"), PortHistory::Suspect);
//! assert_eq!(health.history("1-1.2"), PortHistory::Good);
//! // An unsigned build is never the port's fault.
//! let unsigned = Failure::new(Phase::Personalize, Cause::TssRefused { status: 94 });
//! assert_eq!(Signal::of_failure(&unsigned), Signal::NotThePort);
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use restore::failure::{Cause, Failure};
use restore::ladder::PortHistory;
use serde::{Deserialize, Serialize};
use usb::Speed;

pub use restore::failure::SLOW_LINK_FRACTION;

use super::history::HistoryStore;
use super::Shared;

/// Observations kept (and judged) per port: the latest ones, so an old bad cable that was
/// replaced stops counting once the port has seen this many attempts since.
pub const WINDOW: usize = 40;
/// Observations read back from the history when the daemon starts (all ports together).
pub const LOAD_LIMIT: usize = 10_000;
/// Unrequested disconnects (flaps) on a port that make it suspect.
pub const FLAP_LIMIT: usize = 3;
/// Unexpected transfer errors on a port that make it suspect.
pub const TRANSFER_ERROR_LIMIT: usize = 3;
/// Different phones the flaps or transfer errors must come from (one phone alone may be the
/// phone).
pub const MIN_PHONES_FOR_ERRORS: usize = 2;
/// Transfers refused as far below the median (slow link) that make a port suspect.
pub const SLOW_LIMIT: usize = 2;
/// Throughput samples a median needs before it is compared.
pub const MIN_MEDIAN_SAMPLES: usize = 3;
/// Different phones whose last attempt on the port failed (link-class) that make it suspect.
pub const SUSPECT_PHONES: usize = 3;
/// Different phones that failed on the port and went through on another that make it
/// suspect.
pub const SUSPECT_CONFIRMED_PHONES: usize = 2;
/// The least share of the phones seen on a port that must have failed there (percent) for
/// the distinct-phone verdicts: a busy good port with the odd failure stays good.
pub const SUSPECT_FAILURE_RATE_PERCENT: usize = 50;
/// Ports (each with other phones going through) a phone must fail on to be suspect itself.
pub const PHONE_SUSPECT_PORTS: usize = 2;
/// The least OS-image bytes a throughput sample is taken over.
pub const MIN_SAMPLE_BYTES: u64 = 1 << 20;

/// What one attempt says about its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// The attempt went through.
    Succeeded,
    /// The phone enumerated below high speed.
    FullSpeed,
    /// The phone left the bus (or came back) unasked.
    Flap,
    /// A USB transfer failed where no error is expected.
    TransferError,
    /// A transfer ran far below the median.
    Slow,
    /// Another failure of the link: the phone did not come back, stopped answering, data
    /// arrived corrupted, a connection closed.
    LinkLost,
    /// A failure that is not the link's (3194, a damaged IPSW, the phone's own status, ...).
    NotThePort,
}

impl Signal {
    /// Every signal, in order.
    pub const ALL: [Signal; 7] = [
        Signal::Succeeded,
        Signal::FullSpeed,
        Signal::Flap,
        Signal::TransferError,
        Signal::Slow,
        Signal::LinkLost,
        Signal::NotThePort,
    ];

    /// The word stored in the history.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Succeeded => "succeeded",
            Signal::FullSpeed => "full-speed",
            Signal::Flap => "flap",
            Signal::TransferError => "transfer-error",
            Signal::Slow => "slow",
            Signal::LinkLost => "link-lost",
            Signal::NotThePort => "not-the-port",
        }
    }

    /// The signal stored as `text`.
    pub fn parse(text: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// What a failure says about the port.
    pub fn of_failure(failure: &Failure) -> Signal {
        let cause = failure.cause;
        if !cause.implicates_link() {
            return Signal::NotThePort;
        }
        match cause {
            Cause::FullSpeed => Signal::FullSpeed,
            Cause::SlowLink => Signal::Slow,
            Cause::Flapped
            | Cause::Vanished
            | Cause::Usb {
                kind: usb::ErrorKind::NoDevice,
            } => Signal::Flap,
            Cause::Usb { .. } => Signal::TransferError,
            _ => Signal::LinkLost,
        }
    }

    /// A failure that counts against the port.
    pub fn against_port(self) -> bool {
        !matches!(self, Signal::Succeeded | Signal::NotThePort)
    }
}

/// One attempt on one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// The port (`1-1.3`).
    pub port: String,
    /// The phone.
    #[serde(serialize_with = "ecid_hex")]
    pub ecid: u64,
    /// When the attempt ended (ms since the epoch).
    pub at_ms: u64,
    /// What it says about the port.
    pub signal: Signal,
    /// The failure's number.
    pub number: Option<i64>,
    /// The failure's cause, in words.
    pub cause: Option<String>,
    /// The speed the phone enumerated at.
    pub speed: Option<Speed>,
    /// The OS image's throughput, bytes per second.
    pub bytes_per_sec: Option<u64>,
}

fn ecid_hex<S: serde::Serializer>(ecid: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&irecv::serial::format_ecid(*ecid))
}

impl Observation {
    /// An attempt on `port` that went through.
    pub fn succeeded(
        port: &str,
        ecid: u64,
        at_ms: u64,
        speed: Option<Speed>,
        bytes_per_sec: Option<u64>,
    ) -> Self {
        Observation {
            port: port.to_string(),
            ecid,
            at_ms,
            signal: Signal::Succeeded,
            number: None,
            cause: None,
            speed,
            bytes_per_sec,
        }
    }

    /// An attempt on `port` that failed with `failure` (its evidence gives the speed and
    /// throughput when `speed` does not).
    pub fn failed(
        port: &str,
        ecid: u64,
        at_ms: u64,
        failure: &Failure,
        speed: Option<Speed>,
    ) -> Self {
        Observation {
            port: port.to_string(),
            ecid,
            at_ms,
            signal: Signal::of_failure(failure),
            number: Some(failure.number()),
            cause: Some(failure.cause.to_string()),
            speed: failure.evidence.speed.or(speed),
            bytes_per_sec: failure.evidence.throughput.map(|t| t.bytes_per_sec),
        }
    }
}

/// Why a port is suspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonKind {
    /// The link enumerated below high speed.
    LinkSpeed,
    /// Unrequested disconnects.
    Flaps,
    /// Unexpected transfer errors.
    TransferErrors,
    /// Throughput far below the median.
    Slow,
    /// Several different phones failed here.
    DistinctPhones,
}

/// One reason, with its words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Which heuristic.
    pub kind: ReasonKind,
    /// What it saw.
    pub text: String,
}

/// The verdict on a port, as `GET /ports` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Nothing seen yet.
    Unknown,
    /// No reason to doubt it.
    Good,
    /// See the reasons: move phones off it, swap the cable.
    Suspect,
}

/// One port's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortReport {
    /// The port.
    pub port: String,
    /// The verdict.
    pub health: Health,
    /// Why it is suspect (empty when it is not).
    pub reasons: Vec<Reason>,
    /// Attempts observed (within the window).
    pub attempts: usize,
    /// Attempts that went through.
    pub succeeded: usize,
    /// Failures counted against the port.
    pub failures: usize,
    /// Failures that were not the port's (3194, a damaged IPSW, the phone's status...).
    pub not_counted: usize,
    /// Unrequested disconnects.
    pub flaps: usize,
    /// Unexpected transfer errors.
    pub transfer_errors: usize,
    /// Different phones seen here.
    pub phones_seen: usize,
    /// Different phones whose last attempt here failed against the port (`0x…`).
    pub phones_failed: Vec<String>,
    /// Of those, the ones that went through on another port.
    pub phones_failed_then_succeeded_elsewhere: Vec<String>,
    /// The median OS-image throughput here, bytes per second.
    pub median_bytes_per_sec: Option<u64>,
    /// The latest link speed seen here (the phone on it now, else the last attempt's).
    pub link_speed: Option<Speed>,
    /// When the last attempt here ended (ms since the epoch).
    pub last_ms: Option<u64>,
}

/// A phone that failed on several good ports: the phone, not the ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhoneReport {
    /// The phone (`0x…`).
    pub ecid: String,
    /// The ports it failed on that other phones went through on.
    pub failed_on: Vec<String>,
}

/// `GET /ports`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Every port with observations or a phone on it now, by path.
    pub ports: Vec<PortReport>,
    /// Phones suspect themselves.
    pub suspect_phones: Vec<PhoneReport>,
}

/// The station's ports and what each one's attempts said (pure; see the module).
#[derive(Debug, Clone, Default)]
pub struct PortHealth {
    ports: BTreeMap<String, VecDeque<Observation>>,
}

impl PortHealth {
    /// A model of `observations` (any order; each port keeps its latest [`WINDOW`]).
    pub fn from_observations(observations: impl IntoIterator<Item = Observation>) -> Self {
        let mut all: Vec<Observation> = observations.into_iter().collect();
        all.sort_by_key(|o| o.at_ms);
        let mut health = PortHealth::default();
        for o in all {
            health.record(o);
        }
        health
    }

    /// Takes one attempt's observation.
    pub fn record(&mut self, observation: Observation) {
        let port = self.ports.entry(observation.port.clone()).or_default();
        port.push_back(observation);
        while port.len() > WINDOW {
            port.pop_front();
        }
    }

    /// What the retry ladder is told about `port`.
    pub fn history(&self, port: &str) -> PortHistory {
        match self.judge(port, None).health {
            Health::Suspect => PortHistory::Suspect,
            Health::Good | Health::Unknown => PortHistory::Good,
        }
    }

    /// The median OS-image throughput of `port` (bytes per second), once it has
    /// [`MIN_MEDIAN_SAMPLES`] samples.
    pub fn median(&self, port: &str) -> Option<u64> {
        let samples: Vec<u64> = self
            .ports
            .get(port)
            .into_iter()
            .flatten()
            .filter_map(|o| o.bytes_per_sec)
            .collect();
        (samples.len() >= MIN_MEDIAN_SAMPLES).then(|| median(samples))
    }

    /// Every port: those with observations, and those `live` names (a phone on it now, at
    /// that speed).
    pub fn report(&self, live: &[(String, Speed)]) -> Report {
        let mut names: BTreeSet<&str> = self.ports.keys().map(String::as_str).collect();
        names.extend(live.iter().map(|(p, _)| p.as_str()));
        let ports = names
            .into_iter()
            .map(|port| {
                let now = live.iter().find(|(p, _)| p == port).map(|(_, s)| *s);
                self.judge(port, now)
            })
            .collect();
        let suspect_phones = self
            .suspect_phones()
            .into_iter()
            .map(|(ecid, failed_on)| PhoneReport {
                ecid: irecv::serial::format_ecid(ecid),
                failed_on,
            })
            .collect();
        Report {
            ports,
            suspect_phones,
        }
    }

    /// One port's report; `live` is the speed of the phone on it now, if any.
    pub fn judge(&self, port: &str, live: Option<Speed>) -> PortReport {
        let empty = VecDeque::new();
        let window = self.ports.get(port).unwrap_or(&empty);
        let suspects: BTreeSet<u64> = self.suspect_phones().into_keys().collect();
        let counted = |o: &&Observation| !suspects.contains(&o.ecid);

        let attempts = window.len();
        let succeeded = window
            .iter()
            .filter(|o| o.signal == Signal::Succeeded)
            .count();
        let not_counted = window
            .iter()
            .filter(|o| o.signal.against_port() && !counted(o))
            .count()
            + window
                .iter()
                .filter(|o| o.signal == Signal::NotThePort)
                .count();
        let against: Vec<&Observation> = window
            .iter()
            .filter(counted)
            .filter(|o| o.signal.against_port())
            .collect();
        let of = |signal: Signal| -> (usize, usize) {
            let hits: Vec<&&Observation> = against.iter().filter(|o| o.signal == signal).collect();
            let phones: BTreeSet<u64> = hits.iter().map(|o| o.ecid).collect();
            (hits.len(), phones.len())
        };
        let (flaps, flap_phones) = of(Signal::Flap);
        let (transfer_errors, error_phones) = of(Signal::TransferError);
        let (slow, _) = of(Signal::Slow);

        // Each phone's last attempt here.
        let mut last: BTreeMap<u64, &Observation> = BTreeMap::new();
        for o in window {
            last.insert(o.ecid, o);
        }
        let phones_seen = last.len();
        let failed: Vec<u64> = last
            .values()
            .filter(|o| o.signal.against_port() && !suspects.contains(&o.ecid))
            .map(|o| o.ecid)
            .collect();
        let confirmed: Vec<u64> = failed
            .iter()
            .copied()
            .filter(|ecid| self.succeeded_elsewhere(*ecid, port))
            .collect();

        let link_speed = live.or_else(|| window.iter().rev().find_map(|o| o.speed));
        let median_here = self.median(port);

        let mut reasons = Vec::new();
        if let Some(speed) = link_speed.filter(|s| s.below_high_speed()) {
            reasons.push(Reason {
                kind: ReasonKind::LinkSpeed,
                text: format!(
                    "a phone enumerated at {speed} here (every iPhone is high speed): damaged \
                     data lines in the cable or port; swap the cable"
                ),
            });
        }
        if flaps >= FLAP_LIMIT && flap_phones >= MIN_PHONES_FOR_ERRORS {
            reasons.push(Reason {
                kind: ReasonKind::Flaps,
                text: format!(
                    "{flaps} unrequested disconnects from {flap_phones} phones (limit \
                     {FLAP_LIMIT})"
                ),
            });
        }
        if transfer_errors >= TRANSFER_ERROR_LIMIT && error_phones >= MIN_PHONES_FOR_ERRORS {
            reasons.push(Reason {
                kind: ReasonKind::TransferErrors,
                text: format!(
                    "{transfer_errors} unexpected transfer errors from {error_phones} phones \
                     (limit {TRANSFER_ERROR_LIMIT})"
                ),
            });
        }
        let elsewhere = self.median_elsewhere(port);
        let slow_median = match (median_here, elsewhere) {
            (Some(here), Some(other)) => {
                u128::from(here) * u128::from(SLOW_LINK_FRACTION) < u128::from(other)
            }
            _ => false,
        };
        if slow >= SLOW_LIMIT || slow_median {
            let text = match (median_here, elsewhere) {
                (Some(here), Some(other)) if slow_median => format!(
                    "median throughput {here} B/s, under 1/{SLOW_LINK_FRACTION} of the other \
                     ports' {other} B/s"
                ),
                _ => format!("{slow} transfers far below the median (limit {SLOW_LIMIT})"),
            };
            reasons.push(Reason {
                kind: ReasonKind::Slow,
                text,
            });
        }
        let rate_ok =
            phones_seen > 0 && failed.len() * 100 >= phones_seen * SUSPECT_FAILURE_RATE_PERCENT;
        if rate_ok
            && (failed.len() >= SUSPECT_PHONES || confirmed.len() >= SUSPECT_CONFIRMED_PHONES)
        {
            reasons.push(Reason {
                kind: ReasonKind::DistinctPhones,
                text: format!(
                    "{} of {phones_seen} different phones failed here ({} of them then went \
                     through on another port)",
                    failed.len(),
                    confirmed.len()
                ),
            });
        }
        let health = if !reasons.is_empty() {
            Health::Suspect
        } else if window.is_empty() && live.is_none() {
            Health::Unknown
        } else {
            Health::Good
        };
        let hex = |v: &[u64]| v.iter().map(|e| irecv::serial::format_ecid(*e)).collect();
        PortReport {
            port: port.to_string(),
            health,
            reasons,
            attempts,
            succeeded,
            failures: against.len(),
            not_counted,
            flaps,
            transfer_errors,
            phones_seen,
            phones_failed: hex(&failed),
            phones_failed_then_succeeded_elsewhere: hex(&confirmed),
            median_bytes_per_sec: median_here,
            link_speed,
            last_ms: window.back().map(|o| o.at_ms),
        }
    }

    /// Whether `ecid` went through on a port other than `port`.
    fn succeeded_elsewhere(&self, ecid: u64, port: &str) -> bool {
        self.ports.iter().any(|(p, w)| {
            p != port
                && w.iter()
                    .any(|o| o.ecid == ecid && o.signal == Signal::Succeeded)
        })
    }

    /// The median throughput of every port but `port`.
    fn median_elsewhere(&self, port: &str) -> Option<u64> {
        let samples: Vec<u64> = self
            .ports
            .iter()
            .filter(|(p, _)| p.as_str() != port)
            .flat_map(|(_, w)| w.iter().filter_map(|o| o.bytes_per_sec))
            .collect();
        (samples.len() >= MIN_MEDIAN_SAMPLES).then(|| median(samples))
    }

    /// Phones that failed (link-class, as their last attempt there) on
    /// [`PHONE_SUSPECT_PORTS`] ports where other phones went through, and have not gone
    /// through anywhere since: with the ports.
    fn suspect_phones(&self) -> BTreeMap<u64, Vec<String>> {
        // Each phone's last attempt on each port, and its last success anywhere.
        let mut last_on: BTreeMap<u64, Vec<(&str, &Observation)>> = BTreeMap::new();
        let mut last_success: BTreeMap<u64, u64> = BTreeMap::new();
        for (port, window) in &self.ports {
            let mut last: BTreeMap<u64, &Observation> = BTreeMap::new();
            for o in window {
                last.insert(o.ecid, o);
                if o.signal == Signal::Succeeded {
                    let t = last_success.entry(o.ecid).or_default();
                    *t = (*t).max(o.at_ms);
                }
            }
            for (ecid, o) in last {
                last_on.entry(ecid).or_default().push((port.as_str(), o));
            }
        }
        let proven = |port: &str, ecid: u64| {
            self.ports.get(port).is_some_and(|w| {
                w.iter()
                    .any(|o| o.ecid != ecid && o.signal == Signal::Succeeded)
            })
        };
        last_on
            .into_iter()
            .filter_map(|(ecid, ports)| {
                let failed_on: Vec<(&str, u64)> = ports
                    .iter()
                    .filter(|(p, o)| o.signal.against_port() && proven(p, ecid))
                    .map(|(p, o)| (*p, o.at_ms))
                    .collect();
                let latest_failure = failed_on.iter().map(|(_, t)| *t).max()?;
                let recovered = last_success.get(&ecid).is_some_and(|t| *t > latest_failure);
                (failed_on.len() >= PHONE_SUSPECT_PORTS && !recovered)
                    .then(|| (ecid, failed_on.iter().map(|(p, _)| p.to_string()).collect()))
            })
            .collect()
    }
}

fn median(mut samples: Vec<u64>) -> u64 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

/// The OS image's throughput over one attempt: fed with ASR's running total as it goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meter {
    first: Option<(Instant, u64)>,
    last: Option<(Instant, u64)>,
}

impl Meter {
    /// `sent` bytes of the image are through at `now`.
    pub fn sample(&mut self, sent: u64, now: Instant) {
        if self.first.is_none() {
            self.first = Some((now, sent));
        }
        self.last = Some((now, sent));
    }

    /// A job event: the image's progress is sampled (at the wall clock's now).
    pub fn on_event(&mut self, event: &super::job::JobEvent) {
        if let super::job::JobEvent::Restore(super::restoring::RestoreEvent::Image {
            sent, ..
        }) = event
        {
            self.sample(*sent, Instant::now());
        }
    }

    /// Bytes per second between the first and the last sample, once at least
    /// [`MIN_SAMPLE_BYTES`] went through in a measurable time.
    pub fn bytes_per_sec(&self) -> Option<u64> {
        let ((t0, b0), (t1, b1)) = (self.first?, self.last?);
        let bytes = b1.checked_sub(b0).filter(|b| *b >= MIN_SAMPLE_BYTES)?;
        let micros = t1.checked_duration_since(t0)?.as_micros();
        if micros == 0 {
            return None;
        }
        u64::try_from(u128::from(bytes) * 1_000_000 / micros).ok()
    }
}

/// The daemon's port health: the model, and the history that keeps its observations.
#[derive(Default)]
pub struct Ports {
    model: Mutex<PortHealth>,
    kept: std::sync::OnceLock<Arc<dyn HistoryStore>>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("ports", &self.lock().ports.len())
            .field("kept", &self.kept.get().is_some())
            .finish()
    }
}

impl Ports {
    fn lock(&self) -> MutexGuard<'_, PortHealth> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads this station's observations back from `store` and keeps the next ones there.
    /// Runs the read on a plain thread of its own (a PostgreSQL store must not be called
    /// from an async task); a history that cannot be read leaves the model empty, logged.
    pub fn load(&self, store: Arc<dyn HistoryStore>) {
        let station = super::history::station_name();
        let read = std::thread::scope(|s| {
            s.spawn(|| store.port_observations(station.as_deref(), LOAD_LIMIT))
                .join()
        });
        match read {
            Ok(Ok(observations)) => {
                let n = observations.len();
                *self.lock() = PortHealth::from_observations(observations);
                if n > 0 {
                    tracing::info!(observations = n, "port health read back from the history");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "port health cannot be read from the history"),
            Err(_) => tracing::warn!("port health: reading the history panicked"),
        }
        let _ = self.kept.set(store);
    }

    /// Takes one attempt's observation, and keeps it in the history (a failed write is
    /// logged, never a reason to stop). Call from a job thread, not an async task.
    pub fn record(&self, observation: Observation) {
        if let Some(store) = self.kept.get() {
            let station = super::history::station_name();
            if let Err(e) = store.record_port_observation(station.as_deref(), &observation) {
                tracing::warn!(error = %e, "the history cannot keep the port observation");
            }
        }
        let port = observation.port.clone();
        let before = self.history(&port);
        self.lock().record(observation);
        let after = self.history(&port);
        if before != after {
            tracing::warn!(port, health = ?after, "port health changed");
        }
    }

    /// What the retry ladder is told about `port`.
    pub fn history(&self, port: &str) -> PortHistory {
        self.lock().history(port)
    }

    /// The median throughput of `port`.
    pub fn median(&self, port: &str) -> Option<u64> {
        self.lock().median(port)
    }

    /// Every port's health, with `live` (the ports phones are on now, and their speed).
    pub fn report(&self, live: &[(String, Speed)]) -> Report {
        self.lock().report(live)
    }
}

/// Records a job's attempt on `port` that went through (nothing without a port).
pub fn attempt_succeeded(
    shared: &Shared,
    port: Option<&usb::PortPath>,
    ecid: u64,
    speed: Speed,
    meter: &Meter,
) {
    if let Some(port) = port {
        let at = super::registry::unix_ms(std::time::SystemTime::now());
        let speed = (speed != Speed::Unknown).then_some(speed);
        shared.ports().record(Observation::succeeded(
            &port.to_string(),
            ecid,
            at,
            speed,
            meter.bytes_per_sec(),
        ));
    }
}

/// Records a job's attempt on `port` that failed with `failure` (nothing without a port).
pub fn attempt_failed(
    shared: &Shared,
    port: Option<&usb::PortPath>,
    ecid: u64,
    speed: Speed,
    failure: &Failure,
) {
    if let Some(port) = port {
        let at = super::registry::unix_ms(std::time::SystemTime::now());
        let speed = (speed != Speed::Unknown).then_some(speed);
        shared.ports().record(Observation::failed(
            &port.to_string(),
            ecid,
            at,
            failure,
            speed,
        ));
    }
}

/// The ports phones are on now, with their link speed (from the registry).
pub fn live_ports(shared: &Shared) -> Vec<(String, Speed)> {
    shared
        .registry()
        .entries()
        .filter(|e| e.present)
        .filter_map(|e| e.port.as_ref().map(|p| (p.to_string(), e.speed)))
        .collect()
}

/// `GET /ports`.
pub async fn route(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let live = live_ports(&shared);
    Json(shared.ports().report(&live))
}

#[cfg(test)]
mod tests {
    use super::*;
    use restore::phase::Phase;

    const A: &str = "1-1.1";
    const B: &str = "1-1.2";
    const C: &str = "1-1.3";

    fn fail(cause: Cause) -> Failure {
        Failure::new(Phase::Upload, cause)
    }

    fn eproto() -> Failure {
        fail(Cause::Usb {
            kind: usb::ErrorKind::Io,
        })
    }

    struct Clock(u64);

    impl Clock {
        fn t(&mut self) -> u64 {
            self.0 += 10;
            self.0
        }
    }

    #[test]
    fn signals_of_failures_follow_the_policy() {
        use usb::ErrorKind as K;
        let cases = [
            (Cause::Usb { kind: K::Io }, Signal::TransferError),
            (Cause::Usb { kind: K::Pipe }, Signal::TransferError),
            (Cause::Usb { kind: K::NoDevice }, Signal::Flap),
            (Cause::Vanished, Signal::Flap),
            (Cause::Flapped, Signal::Flap),
            (Cause::FullSpeed, Signal::FullSpeed),
            (Cause::SlowLink, Signal::Slow),
            (Cause::Silent, Signal::LinkLost),
            (Cause::Corrupted, Signal::LinkLost),
            (Cause::TssRefused { status: 94 }, Signal::NotThePort),
            (Cause::TssUnreachable, Signal::NotThePort),
            (Cause::DigestMismatch, Signal::NotThePort),
            (Cause::PairingRefused, Signal::NotThePort),
            (Cause::Refused, Signal::NotThePort),
            (Cause::device_status(6, None).unwrap(), Signal::NotThePort),
        ];
        for (cause, signal) in cases {
            assert_eq!(Signal::of_failure(&fail(cause)), signal, "{cause}");
        }
        for s in Signal::ALL {
            assert_eq!(Signal::parse(s.as_str()), Some(s));
        }
        assert_eq!(Signal::parse("nonsense"), None);
    }

    #[test]
    fn a_port_failing_different_phones_that_succeed_elsewhere_is_suspect() {
        let mut h = PortHealth::default();
        let mut c = Clock(0);
        h.record(Observation::failed(A, 1, c.t(), &eproto(), None));
        h.record(Observation::succeeded(B, 1, c.t(), None, None));
        assert_eq!(
            h.history(A),
            PortHistory::Good,
            "one phone is not a pattern"
        );
        h.record(Observation::failed(A, 2, c.t(), &eproto(), None));
        assert_eq!(
            h.history(A),
            PortHistory::Good,
            "not yet seen going through"
        );
        h.record(Observation::succeeded(C, 2, c.t(), None, None));
        assert_eq!(h.history(A), PortHistory::Suspect);
        let r = h.judge(A, None);
        assert_eq!(r.health, Health::Suspect);
        assert!(r
            .reasons
            .iter()
            .any(|r| r.kind == ReasonKind::DistinctPhones));
        assert_eq!(r.phones_failed, ["0x1", "0x2"]);
        assert_eq!(r.phones_failed_then_succeeded_elsewhere.len(), 2);
        assert_eq!(h.judge(B, None).health, Health::Good);
        assert_eq!(h.judge("9-9", None).health, Health::Unknown);
    }

    #[test]
    fn three_phones_failing_make_a_port_suspect_without_confirmation() {
        let mut h = PortHealth::default();
        let mut c = Clock(0);
        for ecid in 1..=2 {
            h.record(Observation::failed(
                A,
                ecid,
                c.t(),
                &fail(Cause::Silent),
                None,
            ));
        }
        assert_eq!(h.history(A), PortHistory::Good);
        h.record(Observation::failed(A, 3, c.t(), &fail(Cause::Silent), None));
        assert_eq!(h.history(A), PortHistory::Suspect);
    }

    #[test]
    fn a_busy_good_port_with_odd_failures_stays_good() {
        let mut h = PortHealth::default();
        let mut c = Clock(0);
        for ecid in 10..20 {
            h.record(Observation::succeeded(A, ecid, c.t(), None, None));
        }
        for ecid in 1..=3 {
            h.record(Observation::failed(
                A,
                ecid,
                c.t(),
                &fail(Cause::Silent),
                None,
            ));
            h.record(Observation::succeeded(B, ecid, c.t(), None, None));
        }
        let r = h.judge(A, None);
        assert_eq!(r.health, Health::Good, "{r:#?}");
        assert_eq!(r.phones_failed.len(), 3);
    }

    #[test]
    fn a_phone_that_failed_then_went_through_on_the_same_port_is_not_counted() {
        let mut h = PortHealth::default();
        let mut c = Clock(0);
        for ecid in 1..=3 {
            h.record(Observation::failed(A, ecid, c.t(), &eproto(), None));
            h.record(Observation::succeeded(A, ecid, c.t(), None, None));
        }
        let r = h.judge(A, None);
        assert!(r.phones_failed.is_empty(), "{r:#?}");
        // Three transfer errors from three phones are still a pattern of their own.
        assert!(r
            .reasons
            .iter()
            .all(|r| r.kind == ReasonKind::TransferErrors));
        assert_eq!(r.transfer_errors, 3);
        assert_eq!(r.health, Health::Suspect);
    }

    #[test]
    fn a_full_speed_link_is_suspect_at_once_and_clears_with_a_good_link() {
        let mut h = PortHealth::default();
        let slow_link = fail(Cause::FullSpeed)
            .with_evidence(restore::failure::Evidence::default().speed(Speed::Full));
        h.record(Observation::failed(A, 1, 10, &slow_link, None));
        let r = h.judge(A, None);
        assert_eq!(r.health, Health::Suspect);
        assert_eq!(r.reasons[0].kind, ReasonKind::LinkSpeed);
        assert_eq!(r.link_speed, Some(Speed::Full));
        // A phone on the port now at high speed: the cable was swapped.
        assert_eq!(h.judge(A, Some(Speed::High)).health, Health::Good);
        // Seen live before any attempt: reported at once.
        let live = h.report(&[(B.to_string(), Speed::Full)]);
        let b = live.ports.iter().find(|p| p.port == B).unwrap();
        assert_eq!(b.health, Health::Suspect);
        assert_eq!(b.attempts, 0);
        h.record(Observation::succeeded(A, 2, 20, Some(Speed::High), None));
        assert_eq!(h.history(A), PortHistory::Good);
    }

    #[test]
    fn failures_that_are_not_the_ports_never_count() {
        let mut h = PortHealth::default();
        let mut c = Clock(0);
        let blameless = [
            Cause::TssRefused { status: 94 },
            Cause::DigestMismatch,
            Cause::device_status(6, None).unwrap(),
            Cause::PairingRefused,
        ];
        for ecid in 1..=5 {
            for cause in blameless {
                h.record(Observation::failed(A, ecid, c.t(), &fail(cause), None));
            }
            h.record(Observation::succeeded(B, ecid, c.t(), None, None));
        }
        let r = h.judge(A, None);
        assert_eq!(r.health, Health::Good, "{r:#?}");
        assert_eq!(r.failures, 0);
        assert_eq!(r.not_counted, 20);
        assert!(r.phones_failed.is_empty());
    }

    #[test]
    fn flaps_and_transfer_errors_need_two_phones() {
        let mut h = PortHealth::default();
        let mut c = Clock(0);
        for _ in 0..FLAP_LIMIT {
            h.record(Observation::failed(
                A,
                1,
                c.t(),
                &fail(Cause::Flapped),
                None,
            ));
        }
        let r = h.judge(A, None);
        assert_eq!(r.flaps, FLAP_LIMIT);
        assert!(r.reasons.is_empty(), "one phone flapping may be the phone");
        h.record(Observation::failed(
            A,
            2,
            c.t(),
            &fail(Cause::Vanished),
            None,
        ));
        h.record(Observation::succeeded(A, 3, c.t(), None, None));
        h.record(Observation::succeeded(A, 4, c.t(), None, None));
        h.record(Observation::succeeded(A, 5, c.t(), None, None));
        let r = h.judge(A, None);
        assert_eq!(
            r.reasons.iter().map(|r| r.kind).collect::<Vec<_>>(),
            [ReasonKind::Flaps]
        );
    }

    #[test]
    fn a_phone_failing_on_two_good_ports_is_the_phone() {
        let mut h = PortHealth::default();
        let mut c = Clock(0);
        // Ports A and B: others go through there.
        for ecid in 10..12 {
            h.record(Observation::succeeded(A, ecid, c.t(), None, None));
            h.record(Observation::succeeded(B, ecid, c.t(), None, None));
        }
        // Phone 1 fails on both, every way it can.
        for port in [A, B] {
            for _ in 0..3 {
                h.record(Observation::failed(port, 1, c.t(), &eproto(), None));
                h.record(Observation::failed(
                    port,
                    1,
                    c.t(),
                    &fail(Cause::Flapped),
                    None,
                ));
            }
        }
        let report = h.report(&[]);
        assert_eq!(report.suspect_phones.len(), 1);
        assert_eq!(report.suspect_phones[0].ecid, "0x1");
        assert_eq!(report.suspect_phones[0].failed_on, [A, B]);
        for p in &report.ports {
            assert_eq!(p.health, Health::Good, "{p:#?}");
            assert_eq!(p.failures, 0);
            assert_eq!(p.not_counted, 6);
        }
        // Once it goes through somewhere, it is no longer suspect (and its failures count).
        h.record(Observation::succeeded(C, 1, c.t(), None, None));
        assert!(h.report(&[]).suspect_phones.is_empty());
    }

    #[test]
    fn throughput_far_below_the_other_ports_is_slow() {
        let mut h = PortHealth::default();
        let mut c = Clock(0);
        for ecid in 1..=3 {
            h.record(Observation::succeeded(
                A,
                ecid,
                c.t(),
                None,
                Some(40_000_000),
            ));
            h.record(Observation::succeeded(
                B,
                ecid,
                c.t(),
                None,
                Some(38_000_000),
            ));
        }
        assert_eq!(h.history(C), PortHistory::Good);
        for ecid in 1..=3 {
            h.record(Observation::succeeded(
                C,
                ecid,
                c.t(),
                None,
                Some(1_000_000),
            ));
        }
        let r = h.judge(C, None);
        assert_eq!(r.median_bytes_per_sec, Some(1_000_000));
        assert_eq!(r.reasons.len(), 1, "{r:#?}");
        assert_eq!(r.reasons[0].kind, ReasonKind::Slow);
        assert_eq!(h.history(A), PortHistory::Good);
        assert_eq!(h.median(A), Some(40_000_000));
        // Slow-link failures count on their own.
        h.record(Observation::failed(
            A,
            7,
            c.t(),
            &fail(Cause::SlowLink),
            None,
        ));
        h.record(Observation::failed(
            A,
            8,
            c.t(),
            &fail(Cause::SlowLink),
            None,
        ));
        assert_eq!(h.history(A), PortHistory::Suspect);
    }

    #[test]
    fn the_window_forgets_an_old_bad_cable() {
        let mut h = PortHealth::default();
        let mut c = Clock(0);
        for ecid in 1..=3 {
            h.record(Observation::failed(A, ecid, c.t(), &eproto(), None));
        }
        assert_eq!(h.history(A), PortHistory::Suspect);
        for ecid in 100..100 + WINDOW as u64 {
            h.record(Observation::succeeded(
                A,
                ecid,
                c.t(),
                Some(Speed::High),
                None,
            ));
        }
        assert_eq!(h.history(A), PortHistory::Good);
        assert_eq!(h.judge(A, None).attempts, WINDOW);
    }

    #[test]
    fn a_model_rebuilt_from_its_observations_judges_the_same() {
        let mut h = PortHealth::default();
        let mut all = Vec::new();
        let mut c = Clock(0);
        for ecid in 1..=3 {
            let o = Observation::failed(A, ecid, c.t(), &eproto(), Some(Speed::High));
            all.push(o.clone());
            h.record(o);
        }
        all.reverse();
        let again = PortHealth::from_observations(all);
        assert_eq!(again.report(&[]), h.report(&[]));
    }

    #[test]
    fn the_ports_are_kept_in_the_history_and_read_back() {
        let store: Arc<dyn HistoryStore> =
            Arc::new(super::super::history::History::in_memory().unwrap());
        let ports = Ports::default();
        ports.load(Arc::clone(&store));
        let mut c = Clock(0);
        for ecid in 1..=3 {
            ports.record(Observation::failed(
                A,
                ecid,
                c.t(),
                &eproto(),
                Some(Speed::High),
            ));
            ports.record(Observation::succeeded(
                B,
                ecid,
                c.t(),
                Some(Speed::High),
                Some(1 << 25),
            ));
        }
        assert_eq!(ports.history(A), PortHistory::Suspect);
        // A daemon started again on the same history.
        let again = Ports::default();
        again.load(store);
        assert_eq!(again.history(A), PortHistory::Suspect);
        assert_eq!(again.report(&[]), ports.report(&[]));
        assert_eq!(again.median(B), Some(1 << 25));
    }

    #[test]
    fn the_meter_measures_the_image_between_its_first_and_last_sample() {
        let t0 = Instant::now();
        let mut m = Meter::default();
        assert_eq!(m.bytes_per_sec(), None);
        m.sample(0, t0);
        m.sample(1 << 19, t0 + std::time::Duration::from_millis(500));
        assert_eq!(m.bytes_per_sec(), None, "too little to measure");
        m.sample(4 << 20, t0 + std::time::Duration::from_secs(2));
        assert_eq!(m.bytes_per_sec(), Some(2 << 20));
    }
}
