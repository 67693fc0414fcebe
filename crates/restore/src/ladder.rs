//! The retry ladder: what an experienced technician does after each failed attempt, as a
//! plain state machine.
//!
//! A [`Ladder`] follows one phone (one ECID) through a restore job. Each failed attempt is
//! fed in as an [`Attempt`] (the typed [`Failure`], the port it happened on, the ECID); the
//! ladder answers the [`Next`] step. It does no I/O and reads no clock: the daemon carries the
//! steps out and reports back, so the ladder's whole behaviour is testable as a table.
//!
//! The rungs (`ERROR-CODES.md`, "Retry ladder"):
//! 1. a transient transport error: retry the step once on the same path;
//! 2. re-enter recovery cleanly and retry;
//! 3. the same number twice in a row from recovery: escalate to DFU;
//! 4. still failing: flag the port or cable with the evidence and ask the operator to move
//!    the phone; continue there;
//! 5. failing on two ports with good history: final verdict 4014, hardware suspected.
//!
//! Never retry a 3194 elsewhere (the signing server said no; the cable is innocent), and
//! never retry a 14 before the staged firmware has been verified again.
//!
//! ```
//! use restore::failure::{Cause, Failure};
//! use restore::ladder::{Attempt, Ladder, Next, Route};
//! use restore::phase::Phase;
//!
//! let port: usb::PortPath = "1-2.3".parse()?;
//! let mut ladder = Ladder::new(0x1234, Route::Recovery);
//! let stall = Failure::new(Phase::Upload, Cause::Usb { kind: usb::ErrorKind::Pipe });
//! let d = ladder.record(Attempt::new(stall.clone(), port.clone(), 0x1234))?;
//! assert_eq!((d.number, d.next.clone()), (4005, Next::RetryStep { phase: Phase::Upload }));
//! let d = ladder.record(Attempt::new(stall.clone(), port.clone(), 0x1234))?;
//! assert_eq!(d.next, Next::ReenterRecovery);
//! let d = ladder.record(Attempt::new(stall, port, 0x1234))?;
//! assert_eq!(d.next, Next::EscalateToDfu);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::Serialize;
use usb::PortPath;

use crate::failure::{
    Cause, Evidence, Failure, Stage, CORRUPTED, CRITICAL, DISCONNECTED, HARDWARE,
    LOST_COMMUNICATION, NOT_SIGNED,
};
use crate::phase::Phase;

/// Distinct ports a phone is moved to before the ladder gives up even when some of them were
/// suspect (a verdict needs two good ones).
pub const MAX_PORTS: usize = 3;
/// Attempts after which the ladder stops whatever happened (an operator who never moves the
/// phone, a phone that fails differently every time).
pub const MAX_ATTEMPTS: u32 = 24;
/// Attempts from recovery on one port before escalating to DFU even when the numbers differ.
pub const MAX_RECOVERY_ATTEMPTS: usize = 3;

/// What the station knows of a port, from its history over distinct phones (kept by the
/// daemon; the ladder only reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortHistory {
    /// No reason to doubt the port (or no history yet).
    #[default]
    Good,
    /// Other phones failed here and succeeded elsewhere: a failure here rules nothing out.
    Suspect,
}

/// One failed attempt, as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// What went wrong.
    pub failure: Failure,
    /// The port the phone was on.
    pub port: PortPath,
    /// The phone.
    pub ecid: u64,
    /// What the station knows of the port.
    pub port_history: PortHistory,
}

impl Attempt {
    /// An attempt on a port with good (or no) history.
    pub fn new(failure: Failure, port: PortPath, ecid: u64) -> Self {
        Attempt {
            failure,
            port,
            ecid,
            port_history: PortHistory::Good,
        }
    }

    /// The same attempt on a port the station already suspects.
    pub fn on_suspect_port(mut self) -> Self {
        self.port_history = PortHistory::Suspect;
        self
    }
}

/// How the restore reaches the restore ramdisk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// Through recovery mode (iBoot), from normal or recovery mode.
    Recovery,
    /// From DFU: one level lower, past whatever iBoot is on the phone.
    Dfu,
}

/// A port or cable the ladder blames, with what it saw: for the operator and port health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortFlag {
    /// The port.
    pub port: PortPath,
    /// The number of the failure that flagged it.
    pub number: i64,
    /// What happened.
    pub cause: Cause,
    /// What the host saw.
    pub evidence: Evidence,
}

impl fmt::Display for PortFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "port {} or its cable is suspect ({}: {}",
            self.port, self.number, self.cause
        )?;
        if !self.evidence.is_empty() {
            write!(f, "; {}", self.evidence)?;
        }
        f.write_str("): move the phone to another port and swap the cable")
    }
}

/// Why the ladder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictReason {
    /// The signing server refused or could not be reached: never retried on another port.
    NotSigned,
    /// A 14, and the staged firmware failed its re-verification: re-download the IPSW.
    FirmwareCorrupt,
    /// Failing on two ports with good history: hardware suspected.
    Hardware,
    /// The phone's own restore status again after a restore from DFU.
    DeviceStatus,
    /// The phone keeps refusing to pair and was not put in DFU: it needs a person.
    NeedsOperator,
    /// Failing on [`MAX_PORTS`] ports, some of them suspect, or after [`MAX_ATTEMPTS`].
    GaveUp,
}

/// The ladder's final word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The number the technician is shown.
    pub number: i64,
    /// Why the ladder stopped.
    pub reason: VerdictReason,
    /// The last failure.
    pub failure: Failure,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum Next {
    /// Rung 1: retry the failed step once, on the same path.
    RetryStep {
        /// The phase the step belongs to.
        phase: Phase,
    },
    /// Rung 2: bring the phone back into recovery cleanly and restore from there.
    ReenterRecovery,
    /// Rung 2 on the DFU route: put the phone in DFU again and restore from there.
    ReenterDfu,
    /// Rung 3: put the phone in DFU and restore from there.
    EscalateToDfu,
    /// A 14: verify the staged firmware again, then report with
    /// [`Ladder::firmware_verified`] before anything is retried.
    ReverifyFirmware,
    /// The phone refused to pair: ask the operator to unlock it and tap Trust, then retry.
    AskTrust,
    /// Rung 4: flag the port or cable and ask the operator to move the phone; continue there.
    MovePort(PortFlag),
    /// Stop.
    Verdict(Verdict),
}

impl Next {
    /// A short name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Next::RetryStep { .. } => "retry step",
            Next::ReenterRecovery => "re-enter recovery",
            Next::ReenterDfu => "re-enter DFU",
            Next::EscalateToDfu => "escalate to DFU",
            Next::ReverifyFirmware => "re-verify firmware",
            Next::AskTrust => "ask to trust",
            Next::MovePort(_) => "move port",
            Next::Verdict(_) => "verdict",
        }
    }
}

impl fmt::Display for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Next::RetryStep { phase } => write!(f, "retry the {phase} step once"),
            Next::ReenterRecovery => f.write_str("re-enter recovery and retry"),
            Next::ReenterDfu => f.write_str("re-enter DFU and retry"),
            Next::EscalateToDfu => f.write_str("escalate to DFU and retry"),
            Next::ReverifyFirmware => f.write_str("re-verify the staged firmware before retrying"),
            Next::AskTrust => f.write_str("unlock the phone and tap Trust, then retry"),
            Next::MovePort(flag) => write!(f, "{flag}"),
            Next::Verdict(v) => write!(f, "final verdict {} ({:?})", v.number, v.reason),
        }
    }
}

/// The ladder's answer to one failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Which attempt failed (1-based).
    pub attempt: u32,
    /// The failure's number.
    pub number: i64,
    /// What to do.
    pub next: Next,
}

/// What the history and the API keep of one failed attempt: the number, its meaning and
/// advice, the phase, cause and evidence, the attempt, port and ECID, and the ladder's answer
/// (`ERROR-CODES.md`: "every failure record carries ...").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// The number shown.
    pub number: i64,
    /// What it means.
    pub meaning: &'static str,
    /// What the technician does.
    pub advice: &'static str,
    /// Where, how, and what the host saw.
    pub failure: Failure,
    /// Which attempt (1-based).
    pub attempt: u32,
    /// The port.
    pub port: PortPath,
    /// The phone.
    pub ecid: u64,
    /// What the ladder answered.
    pub next: Next,
}

impl Record {
    /// The record of `attempt`, which the ladder answered with `decision`.
    pub fn new(attempt: &Attempt, decision: &Decision) -> Record {
        let entry = attempt.failure.explain();
        Record {
            number: decision.number,
            meaning: entry.meaning,
            advice: entry.advice,
            failure: attempt.failure.clone(),
            attempt: decision.attempt,
            port: attempt.port.clone(),
            ecid: attempt.ecid,
            next: decision.next.clone(),
        }
    }
}

/// An attempt the ladder cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    /// The attempt is another phone's.
    #[error("this ladder follows ECID {expected:#x}, the attempt is ECID {got:#x}'s")]
    OtherPhone {
        /// The ladder's phone.
        expected: u64,
        /// The attempt's.
        got: u64,
    },
    /// An attempt came in while the ladder waits for the firmware's re-verification.
    #[error(
        "a 14 is waiting for the firmware's re-verification; nothing may be retried before it"
    )]
    AwaitingVerification,
    /// A verification result came in that nobody asked for.
    #[error("no firmware re-verification was asked for")]
    NotAwaitingVerification,
    /// The ladder already gave its verdict.
    #[error("the ladder already ended with {number}")]
    Finished {
        /// The verdict's number.
        number: i64,
    },
}

/// What the ladder knows of the port the phone is on now.
#[derive(Debug, Clone)]
struct PortState {
    port: PortPath,
    history: PortHistory,
    /// Phases whose step was already retried once here (rung 1).
    retried: Vec<Phase>,
    /// Numbers of the failures from recovery here, oldest first (rungs 2 and 3).
    from_recovery: Vec<i64>,
    /// A clean DFU entry was already made here.
    dfu_entered: bool,
    /// 14s here after the firmware verified.
    corrupted: u32,
    /// The operator was already asked to tap Trust here.
    trust_asked: bool,
}

impl PortState {
    fn new(port: PortPath, history: PortHistory) -> Self {
        PortState {
            port,
            history,
            retried: Vec::new(),
            from_recovery: Vec::new(),
            dfu_entered: false,
            corrupted: 0,
            trust_asked: false,
        }
    }
}

/// The retry ladder of one phone.
#[derive(Debug, Clone)]
pub struct Ladder {
    ecid: u64,
    route: Route,
    attempts: u32,
    port: Option<PortState>,
    /// Ports where the ladder ran out of rungs, with their history then.
    exhausted: Vec<(PortPath, PortHistory)>,
    /// The 14 waiting for the firmware's re-verification.
    pending: Option<Attempt>,
    verdict: Option<Verdict>,
}

impl Ladder {
    /// A ladder for the phone `ecid`, whose restore starts on `route`.
    pub fn new(ecid: u64, route: Route) -> Self {
        Ladder {
            ecid,
            route,
            attempts: 0,
            port: None,
            exhausted: Vec::new(),
            pending: None,
            verdict: None,
        }
    }

    /// The phone this ladder follows.
    pub fn ecid(&self) -> u64 {
        self.ecid
    }

    /// The route the next attempt takes.
    pub fn route(&self) -> Route {
        self.route
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Ports the phone failed on after every rung, in order.
    pub fn exhausted_ports(&self) -> impl Iterator<Item = &PortPath> {
        self.exhausted.iter().map(|(p, _)| p)
    }

    /// The verdict, once the ladder has stopped.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    /// Takes a failed attempt and answers what to do next.
    pub fn record(&mut self, attempt: Attempt) -> Result<Decision, LadderError> {
        if let Some(v) = &self.verdict {
            return Err(LadderError::Finished { number: v.number });
        }
        if self.pending.is_some() {
            return Err(LadderError::AwaitingVerification);
        }
        if attempt.ecid != self.ecid {
            return Err(LadderError::OtherPhone {
                expected: self.ecid,
                got: attempt.ecid,
            });
        }
        self.attempts = self.attempts.saturating_add(1);
        let number = attempt.failure.number();
        let mut port = self.take_port(&attempt);
        // An unsigned build ends as such however many attempts came before.
        let next = if self.attempts >= MAX_ATTEMPTS && number != NOT_SIGNED {
            self.stop(number, VerdictReason::GaveUp, &attempt.failure)
        } else {
            self.decide(&mut port, attempt, number)
        };
        self.port = Some(port);
        Ok(Decision {
            attempt: self.attempts,
            number,
            next,
        })
    }

    /// The result of the re-verification a [`Next::ReverifyFirmware`] asked for.
    pub fn firmware_verified(&mut self, intact: bool) -> Result<Decision, LadderError> {
        let attempt = self
            .pending
            .take()
            .ok_or(LadderError::NotAwaitingVerification)?;
        let number = attempt.failure.number();
        let next = if !intact {
            self.stop(CORRUPTED, VerdictReason::FirmwareCorrupt, &attempt.failure)
        } else {
            let mut port = self.take_port(&attempt);
            port.corrupted += 1;
            let next = if port.corrupted == 1 {
                // The file is good: the data went bad on the way. Once more, cleanly.
                self.reenter()
            } else {
                // Verified firmware arriving corrupted again: the cable garbles data.
                self.exhaust(&port, &attempt)
            };
            self.port = Some(port);
            next
        };
        Ok(Decision {
            attempt: self.attempts,
            number,
            next,
        })
    }

    /// The state of the port of `attempt`: the current one, or a fresh one if the phone moved.
    fn take_port(&mut self, attempt: &Attempt) -> PortState {
        match self.port.take() {
            Some(mut p) if p.port == attempt.port => {
                p.history = attempt.port_history;
                p
            }
            _ => PortState::new(attempt.port.clone(), attempt.port_history),
        }
    }

    fn decide(&mut self, port: &mut PortState, attempt: Attempt, number: i64) -> Next {
        let failure = &attempt.failure;
        if number == NOT_SIGNED {
            return self.stop(NOT_SIGNED, VerdictReason::NotSigned, failure);
        }
        if number == CORRUPTED {
            self.pending = Some(attempt);
            return Next::ReverifyFirmware;
        }
        if failure.cause == Cause::PairingRefused {
            if !port.trust_asked {
                port.trust_asked = true;
                return Next::AskTrust;
            }
            if self.route == Route::Recovery {
                // Normal mode will not let us in: the buttons will.
                return self.escalate(port);
            }
            // Asked to trust, asked for DFU, and still a locked phone in normal mode: no
            // cable or port is to blame and no retry will help without a person.
            return self.stop(number, VerdictReason::NeedsOperator, failure);
        }
        if failure.cause.is_link_quality() {
            // Measured bad before any retry could help: this cable, this port.
            return self.exhaust(port, &attempt);
        }
        if failure.cause.is_transient()
            && step_repeatable(failure.phase)
            && !port.retried.contains(&failure.phase)
        {
            port.retried.push(failure.phase);
            return Next::RetryStep {
                phase: failure.phase,
            };
        }
        match self.route {
            Route::Recovery => {
                port.from_recovery.push(number);
                let twice = matches!(port.from_recovery.as_slice(), [.., a, b] if a == b);
                if twice || port.from_recovery.len() >= MAX_RECOVERY_ATTEMPTS {
                    self.escalate(port)
                } else {
                    Next::ReenterRecovery
                }
            }
            Route::Dfu if !port.dfu_entered => {
                port.dfu_entered = true;
                Next::ReenterDfu
            }
            Route::Dfu if is_device_status(number) => {
                // The phone itself says no, one level lower too: its number stands.
                self.stop(number, VerdictReason::DeviceStatus, failure)
            }
            Route::Dfu => self.exhaust(port, &attempt),
        }
    }

    fn escalate(&mut self, port: &mut PortState) -> Next {
        self.route = Route::Dfu;
        port.dfu_entered = true;
        Next::EscalateToDfu
    }

    fn reenter(&self) -> Next {
        match self.route {
            Route::Recovery => Next::ReenterRecovery,
            Route::Dfu => Next::ReenterDfu,
        }
    }

    /// Every rung tried on this port: flag it and move, or give the verdict.
    fn exhaust(&mut self, port: &PortState, attempt: &Attempt) -> Next {
        if !self.exhausted.iter().any(|(p, _)| *p == port.port) {
            self.exhausted.push((port.port.clone(), port.history));
        }
        let number = attempt.failure.number();
        let good = self
            .exhausted
            .iter()
            .filter(|(_, h)| *h == PortHistory::Good)
            .count();
        if good >= 2 {
            let verdict_number = match number {
                DISCONNECTED | CRITICAL | LOST_COMMUNICATION => HARDWARE,
                other => other,
            };
            return self.stop(verdict_number, VerdictReason::Hardware, &attempt.failure);
        }
        if self.exhausted.len() >= MAX_PORTS {
            return self.stop(number, VerdictReason::GaveUp, &attempt.failure);
        }
        Next::MovePort(PortFlag {
            port: port.port.clone(),
            number,
            cause: attempt.failure.cause,
            evidence: attempt.failure.evidence.clone(),
        })
    }

    fn stop(&mut self, number: i64, reason: VerdictReason, failure: &Failure) -> Next {
        let verdict = Verdict {
            number,
            reason,
            failure: failure.clone(),
        };
        self.verdict = Some(verdict.clone());
        Next::Verdict(verdict)
    }
}

/// Whether a failed step can be done again on the same path. Before restore mode every step
/// is a request or an upload that can be sent again; in restore mode restored's session and
/// the ASR stream cannot be resumed, so a transient error there re-enters recovery.
fn step_repeatable(phase: Phase) -> bool {
    Stage::of(phase) != Stage::RestoreMode
}

/// A number the phone reported itself rather than one of Apple's.
fn is_device_status(number: i64) -> bool {
    !matches!(
        number,
        DISCONNECTED | CRITICAL | LOST_COMMUNICATION | HARDWARE | CORRUPTED | NOT_SIGNED
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{Cause, Evidence};
    use crate::phase::AwaitedMode;

    const ECID: u64 = 0x0011_2233_4455_6677;

    fn port(p: &str) -> PortPath {
        p.parse().unwrap()
    }

    fn failure(phase: Phase, cause: Cause) -> Failure {
        Failure::new(phase, cause)
    }

    fn usb(kind: usb::ErrorKind) -> Cause {
        Cause::Usb { kind }
    }

    fn feed(ladder: &mut Ladder, f: &Failure, at: &str) -> Next {
        ladder
            .record(Attempt::new(f.clone(), port(at), ECID))
            .unwrap()
            .next
    }

    #[test]
    fn rung_1_retries_a_transient_error_once_per_step() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let io = failure(Phase::Upload, usb(usb::ErrorKind::Io));
        assert_eq!(
            feed(&mut l, &io, "1-1"),
            Next::RetryStep {
                phase: Phase::Upload
            }
        );
        // The retry of that step failed too: no second retry of it.
        assert_eq!(feed(&mut l, &io, "1-1"), Next::ReenterRecovery);
        // Another step's transient error still gets its one retry.
        let t = failure(Phase::IbecBoot, usb(usb::ErrorKind::Timeout));
        assert_eq!(
            feed(&mut l, &t, "1-1"),
            Next::RetryStep {
                phase: Phase::IbecBoot
            }
        );
        // A vanished phone is no transient error.
        let mut l = Ladder::new(ECID, Route::Recovery);
        let gone = failure(Phase::Upload, usb(usb::ErrorKind::NoDevice));
        assert_eq!(feed(&mut l, &gone, "1-1"), Next::ReenterRecovery);
        // restored's session and the ASR stream cannot be resumed: straight to recovery.
        let mut l = Ladder::new(ECID, Route::Recovery);
        let asr = failure(Phase::Restore, usb(usb::ErrorKind::Io));
        assert_eq!(feed(&mut l, &asr, "1-1"), Next::ReenterRecovery);
    }

    #[test]
    fn a_record_carries_what_the_policy_asks_for() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let attempt = Attempt::new(
            failure(Phase::Restore, Cause::Silent)
                .with_evidence(Evidence::default().log("restored: waiting\n")),
            port("2-1.4"),
            ECID,
        );
        let decision = l.record(attempt.clone()).unwrap();
        let r = Record::new(&attempt, &decision);
        assert_eq!((r.number, r.attempt, r.ecid), (4013, 1, ECID));
        assert!(r.advice.contains("swap the cable"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["port"], "2-1.4");
        assert_eq!(v["failure"]["phase"], "restore");
        assert_eq!(v["failure"]["evidence"]["log_tail"][0], "restored: waiting");
        assert_eq!(v["next"]["step"], "reenter-recovery");
    }

    #[test]
    fn rungs_2_and_3_reenter_then_escalate_on_the_same_number_twice() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let lost = failure(Phase::Restore, Cause::ConnectionLost);
        assert_eq!(feed(&mut l, &lost, "1-1"), Next::ReenterRecovery);
        assert_eq!(l.route(), Route::Recovery);
        assert_eq!(feed(&mut l, &lost, "1-1"), Next::EscalateToDfu);
        assert_eq!(l.route(), Route::Dfu);

        // Different numbers from recovery: re-enter until the cap, then DFU anyway.
        let mut l = Ladder::new(ECID, Route::Recovery);
        let a = failure(Phase::Upload, Cause::Refused); // 4005
        let b = failure(Phase::Restore, Cause::Silent); // 4013
        assert_eq!(feed(&mut l, &a, "1-1"), Next::ReenterRecovery);
        assert_eq!(feed(&mut l, &b, "1-1"), Next::ReenterRecovery);
        assert_eq!(feed(&mut l, &a, "1-1"), Next::EscalateToDfu);
    }

    #[test]
    fn rung_4_flags_the_port_with_its_evidence_and_rung_5_ends_4014_after_two_ports() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let lost = failure(Phase::Restore, Cause::ConnectionLost).with_evidence(
            Evidence::default()
                .usb_error(usb::ErrorKind::Io)
                .bytes(1 << 20),
        );
        assert_eq!(feed(&mut l, &lost, "1-1"), Next::ReenterRecovery);
        assert_eq!(feed(&mut l, &lost, "1-1"), Next::EscalateToDfu);
        let Next::MovePort(flag) = feed(&mut l, &lost, "1-1") else {
            panic!("expected a port flag");
        };
        assert_eq!(flag.port, port("1-1"));
        assert_eq!(flag.number, 4013);
        assert_eq!(flag.evidence.usb_error, Some(usb::ErrorKind::Io));
        assert!(flag.to_string().contains("move the phone to another port"));
        // On the second port: DFU again, cleanly, then the verdict.
        assert_eq!(feed(&mut l, &lost, "1-2"), Next::ReenterDfu);
        let Next::Verdict(v) = feed(&mut l, &lost, "1-2") else {
            panic!("expected the verdict");
        };
        assert_eq!((v.number, v.reason), (4014, VerdictReason::Hardware));
        assert_eq!(
            l.exhausted_ports().cloned().collect::<Vec<_>>(),
            [port("1-1"), port("1-2")]
        );
        assert_eq!(
            l.record(Attempt::new(lost, port("1-3"), ECID)),
            Err(LadderError::Finished { number: 4014 })
        );
    }

    #[test]
    fn a_suspect_port_rules_nothing_out() {
        let mut l = Ladder::new(ECID, Route::Dfu);
        let nine = failure(Phase::Upload, Cause::Vanished);
        let on = |p: &str| Attempt::new(nine.clone(), port(p), ECID).on_suspect_port();
        assert_eq!(l.record(on("1-1")).unwrap().next, Next::ReenterDfu);
        assert!(matches!(
            l.record(on("1-1")).unwrap().next,
            Next::MovePort(_)
        ));
        // Second port good, exhausted: one good port only, so move again.
        assert_eq!(feed(&mut l, &nine, "1-2"), Next::ReenterDfu);
        assert!(matches!(feed(&mut l, &nine, "1-2"), Next::MovePort(_)));
        // Third port: the cap; two good ports would be needed for 4014, so it gives up with 9.
        assert_eq!(l.record(on("1-3")).unwrap().next, Next::ReenterDfu);
        let Next::Verdict(v) = l.record(on("1-3")).unwrap().next else {
            panic!("expected the verdict");
        };
        assert_eq!((v.number, v.reason), (9, VerdictReason::GaveUp));
    }

    #[test]
    fn a_full_speed_link_is_flagged_before_any_retry() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let slow_link = failure(Phase::IbecBoot, Cause::FullSpeed)
            .with_evidence(Evidence::default().speed(usb::Speed::Full));
        let Next::MovePort(flag) = feed(&mut l, &slow_link, "1-4") else {
            panic!("expected a port flag");
        };
        assert_eq!(flag.evidence.speed, Some(usb::Speed::Full));
        assert_eq!(flag.cause, Cause::FullSpeed);
    }

    #[test]
    fn never_retry_3194_elsewhere() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let tss = failure(Phase::Personalize, Cause::TssRefused { status: 94 });
        let d = l
            .record(Attempt::new(tss.clone(), port("1-1"), ECID))
            .unwrap();
        assert_eq!(d.number, 3194);
        let Next::Verdict(v) = d.next else {
            panic!("3194 ends the ladder")
        };
        assert_eq!(v.reason, VerdictReason::NotSigned);
        assert_eq!(l.exhausted_ports().count(), 0, "the port is not blamed");
        assert!(l.record(Attempt::new(tss, port("1-2"), ECID)).is_err());
    }

    #[test]
    fn a_14_is_retried_only_after_the_firmware_verifies() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let bad = failure(Phase::Restore, Cause::Corrupted);
        assert_eq!(feed(&mut l, &bad, "1-1"), Next::ReverifyFirmware);
        // Nothing is retried meanwhile.
        assert_eq!(
            l.record(Attempt::new(bad.clone(), port("1-1"), ECID)),
            Err(LadderError::AwaitingVerification)
        );
        assert_eq!(
            l.firmware_verified(true).unwrap().next,
            Next::ReenterRecovery
        );
        assert_eq!(
            l.firmware_verified(true),
            Err(LadderError::NotAwaitingVerification)
        );
        // Verified firmware corrupted again on this port: the cable.
        assert_eq!(feed(&mut l, &bad, "1-1"), Next::ReverifyFirmware);
        assert!(matches!(
            l.firmware_verified(true).unwrap().next,
            Next::MovePort(PortFlag { number: 14, .. })
        ));
        // On the next port the file turns out bad: re-download.
        assert_eq!(feed(&mut l, &bad, "1-2"), Next::ReverifyFirmware);
        let Next::Verdict(v) = l.firmware_verified(false).unwrap().next else {
            panic!("a corrupt file ends the ladder");
        };
        assert_eq!((v.number, v.reason), (14, VerdictReason::FirmwareCorrupt));
    }

    #[test]
    fn the_phones_own_status_ends_after_dfu_without_blaming_the_port() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let six = failure(Phase::Restore, Cause::device_status(6, Some(1)).unwrap());
        assert_eq!(feed(&mut l, &six, "1-1"), Next::ReenterRecovery);
        assert_eq!(feed(&mut l, &six, "1-1"), Next::EscalateToDfu);
        let Next::Verdict(v) = feed(&mut l, &six, "1-1") else {
            panic!("expected the verdict");
        };
        assert_eq!((v.number, v.reason), (6, VerdictReason::DeviceStatus));
        assert_eq!(l.exhausted_ports().count(), 0);
    }

    #[test]
    fn a_declined_trust_dialog_asks_once_then_goes_to_dfu() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let no = failure(Phase::EnterRecovery, Cause::PairingRefused);
        assert_eq!(feed(&mut l, &no, "1-1"), Next::AskTrust);
        assert_eq!(feed(&mut l, &no, "1-1"), Next::EscalateToDfu);
        let Next::Verdict(v) = feed(&mut l, &no, "1-1") else {
            panic!("a phone still locked after DFU was asked for needs a person");
        };
        assert_eq!((v.number, v.reason), (4005, VerdictReason::NeedsOperator));
        assert_eq!(l.exhausted_ports().count(), 0);
    }

    #[test]
    fn another_phones_attempt_is_refused_and_the_ladder_always_ends() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let f = failure(Phase::Upload, Cause::Refused);
        assert_eq!(
            l.record(Attempt::new(f.clone(), port("1-1"), 7)),
            Err(LadderError::OtherPhone {
                expected: ECID,
                got: 7
            })
        );
        // An operator who never moves the phone: the ladder still stops.
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            last = Some(feed(&mut l, &f, "1-1"));
        }
        assert!(matches!(
            last,
            Some(Next::Verdict(Verdict {
                reason: VerdictReason::GaveUp,
                ..
            }))
        ));
    }

    /// A panic brings the phone back in recovery: 9, and the usual climb.
    #[test]
    fn a_panic_is_nine_and_climbs() {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let panic = failure(
            Phase::RamdiskBoot,
            Cause::WrongMode {
                expected: AwaitedMode::Restore,
                got: AwaitedMode::Recovery,
            },
        );
        let d = l
            .record(Attempt::new(panic.clone(), port("1-1"), ECID))
            .unwrap();
        assert_eq!((d.attempt, d.number, d.next), (1, 9, Next::ReenterRecovery));
        assert_eq!(feed(&mut l, &panic, "1-1"), Next::EscalateToDfu);
    }

    /// Runs the same failure through a fresh ladder until it stops: on port `1-1` until it is
    /// flagged, then on `1-2`; the firmware always verifies. Returns the steps taken.
    fn climb(f: &Failure) -> Vec<String> {
        let mut l = Ladder::new(ECID, Route::Recovery);
        let mut at = "1-1";
        let mut steps = Vec::new();
        for _ in 0..MAX_ATTEMPTS + 2 {
            let mut next = feed(&mut l, f, at);
            if next == Next::ReverifyFirmware {
                steps.push("re-verify".to_string());
                next = l.firmware_verified(true).unwrap().next;
            }
            steps.push(match &next {
                Next::Verdict(v) => format!("verdict {}", v.number),
                other => other.name().to_string(),
            });
            match next {
                Next::MovePort(_) => at = "1-2",
                Next::Verdict(_) => return steps,
                _ => {}
            }
        }
        panic!("the ladder did not end: {steps:?}");
    }

    /// The fault-language action (`sim::fault`) that makes the virtual phone show `cause`.
    fn fault_of(cause: Cause) -> &'static str {
        use usb::ErrorKind as K;
        match cause {
            Cause::Usb { kind: K::NoDevice } | Cause::Vanished => "unplug",
            Cause::Usb { kind: K::Pipe } => "stall",
            Cause::Usb { kind: K::Io } => "io-error",
            Cause::Usb { kind: K::Timeout } => "timeout",
            Cause::Usb { .. } => "(real phones only)",
            Cause::Flapped => "flap",
            Cause::NoReturn { .. } => "never-returns",
            Cause::WrongMode { .. } => "panic",
            Cause::Refused => "refuse",
            Cause::PairingRefused => "lockdown:refuse",
            Cause::Silent => "timeout (restored, asr)",
            Cause::ConnectionLost => "unplug (restored, asr)",
            Cause::DeviceStatus { .. } => "final-status:status=N",
            Cause::TssRefused { .. } => "(signing server: 94)",
            Cause::TssUnreachable => "(signing server down)",
            Cause::DigestMismatch => "(staged file damaged)",
            Cause::Corrupted => "corrupt",
            Cause::FullSpeed => "full-speed",
            Cause::SlowLink => "slow=SIZE/s",
        }
    }

    /// The fault matrix of the pure part: every phase × every cause → number → the ladder's
    /// first step → where the climb ends when the failure repeats. Printed as a table
    /// (`cargo test -p restore matrix -- --nocapture`).
    #[test]
    fn matrix_of_phase_and_cause_to_number_and_next_step() {
        let mut rows = vec![format!(
            "| {:<18} | {:<66} | {:<24} | {:>6} | {:<18} | {} |",
            "phase",
            "cause",
            "virtual phone's fault",
            "number",
            "first step",
            "climb when it repeats"
        )];
        for phase in Phase::ALL {
            for cause in Cause::EXAMPLES {
                let f = failure(phase, cause);
                let number = f.number();
                let mut l = Ladder::new(ECID, Route::Recovery);
                let first = feed(&mut l, &f, "1-1");
                let steps = climb(&f);
                let end = steps.last().cloned().unwrap_or_default();
                // What the policy promises, whatever the phase.
                match number {
                    _ if cause == Cause::PairingRefused => {
                        assert_eq!(end, "verdict 4005", "{phase}: {steps:?}");
                        assert!(!steps.iter().any(|s| s == "move port"), "{steps:?}");
                    }
                    NOT_SIGNED => assert_eq!(steps, ["verdict 3194"], "{phase} {cause}"),
                    CORRUPTED => assert_eq!(first, Next::ReverifyFirmware, "{phase} {cause}"),
                    DISCONNECTED | CRITICAL | LOST_COMMUNICATION => {
                        assert_eq!(end, "verdict 4014", "{phase} {cause}: {steps:?}");
                        assert!(steps.iter().any(|s| s == "move port"), "{steps:?}");
                    }
                    own => assert_eq!(end, format!("verdict {own}"), "{phase} {cause}"),
                }
                if cause.is_link_quality() {
                    assert_eq!(first.name(), "move port", "{phase} {cause}");
                }
                rows.push(format!(
                    "| {:<18} | {:<66} | {:<24} | {:>6} | {:<18} | {} |",
                    phase.name(),
                    cause.to_string(),
                    fault_of(cause),
                    number,
                    first.name(),
                    steps.join(" → ")
                ));
            }
        }
        assert_eq!(rows.len(), 1 + Phase::ALL.len() * Cause::EXAMPLES.len());
        println!("{}", rows.join("\n"));
    }

    proptest::proptest! {
        /// Whatever the failures, ports and verification results, the ladder ends, never
        /// blames a port for a signing refusal, a status the phone reports (other than 14,
        /// which is Apple's 14) or a declined trust dialog, never goes on after a 14 before
        /// the firmware is verified, and only says 4014 after two good ports.
        #[test]
        fn the_ladder_keeps_its_promises(
            events in proptest::collection::vec(
                (0..Phase::ALL.len(), 0..Cause::EXAMPLES.len(), 0..3usize, proptest::bool::ANY, proptest::bool::ANY),
                1..80,
            )
        ) {
            let ports = ["1-1", "1-2", "1-3"];
            let mut l = Ladder::new(ECID, Route::Recovery);
            let mut ended = false;
            for (phase, cause, at, suspect, intact) in events {
                let f = failure(Phase::ALL[phase], Cause::EXAMPLES[cause]);
                let mut attempt = Attempt::new(f.clone(), port(ports[at]), ECID);
                if suspect {
                    attempt = attempt.on_suspect_port();
                }
                let result = l.record(attempt);
                if ended {
                    let finished = matches!(result, Err(LadderError::Finished { .. }));
                    proptest::prop_assert!(finished, "{:?} after the verdict", result);
                    continue;
                }
                let mut next = result.unwrap().next;
                if next == Next::ReverifyFirmware {
                    proptest::prop_assert_eq!(f.number(), CORRUPTED);
                    // Nothing is taken before the verification.
                    proptest::prop_assert_eq!(
                        l.record(Attempt::new(f.clone(), port(ports[at]), ECID)),
                        Err(LadderError::AwaitingVerification)
                    );
                    next = l.firmware_verified(intact).unwrap().next;
                }
                match &next {
                    Next::MovePort(flag) => {
                        proptest::prop_assert!(f.number() != NOT_SIGNED);
                        let blameless =
                            matches!(f.cause, Cause::DeviceStatus { .. } | Cause::PairingRefused);
                        proptest::prop_assert!(!blameless, "{} flagged the port", f);
                        proptest::prop_assert_eq!(&flag.port, &port(ports[at]));
                    }
                    Next::Verdict(v) => {
                        ended = true;
                        if f.number() == NOT_SIGNED {
                            proptest::prop_assert_eq!(v.reason, VerdictReason::NotSigned);
                        }
                        if v.number == HARDWARE {
                            proptest::prop_assert!(l.exhausted.iter().filter(|(_, h)| *h == PortHistory::Good).count() >= 2);
                        }
                        proptest::prop_assert_eq!(l.verdict(), Some(v));
                    }
                    _ => {}
                }
                proptest::prop_assert!(l.attempts() <= MAX_ATTEMPTS);
            }
        }
    }
}
