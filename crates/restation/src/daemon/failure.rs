//! A job's error as a typed [`restore::failure::Failure`]: the phase, the cause the retry ladder
//! and the error table understand, and the evidence (USB error kind, restored's status and
//! log, bytes through, the component, the engine's own words).
//!
//! Errors that are the station's own (a cancelled transfer, a request this host cannot build,
//! data it does not serve, a plan step without a phone) are no failure of the phone: they map
//! to `None` and are reported as they are, never with one of Apple's numbers.

use irecv::dfu::{self, Status as DfuStatus};
use irecv::recovery::{RecoveryError, UploadCause};
use restore::asr::AsrHostError;
use restore::failure::{Cause, Evidence, Failure};
use restore::phase::{AwaitedMode, Phase};
use usb::ErrorKind;

use super::entry::EntryError;
use super::identify::LockdownError;
use super::job::{JobError, WaitError};
use super::restoring::{PersonalizeError, RestoreModeError};
use super::session::SessionError;

/// The failure `err` stands for, `current` being the phase the job was in; `None` when the
/// error is the station's own rather than the phone's or the link's.
pub fn failure_of(err: &JobError, current: Phase) -> Option<Failure> {
    let phase = err.phase(current);
    let mut evidence = Evidence::default().detail(err);
    let cause = match err {
        JobError::Wait { source, .. } => wait_cause(source, &mut evidence),
        JobError::Component(_) => Cause::DigestMismatch,
        JobError::Personalize(e) => personalize_cause(e)?,
        JobError::Dfu { component, source } => {
            evidence = evidence.component(component);
            if let Some(kind) = source.usb_kind() {
                evidence = evidence.usb_error(kind);
            }
            dfu_cause(&source.cause)?
        }
        JobError::Recovery { source, .. } => {
            if let Some(kind) = source.usb_kind() {
                evidence = evidence.usb_error(kind);
            }
            if let RecoveryError::Upload(u) = source {
                evidence = evidence.bytes(u.offset);
            }
            recovery_cause(source)?
        }
        JobError::Lockdown(e) => entry_cause(e, &mut evidence)?,
        JobError::Session(e) => session_cause(e, &mut evidence),
        JobError::RestoreMode(e) => restore_mode_cause(e, &mut evidence)?,
        JobError::Failed(status) => {
            evidence = evidence.restored(status.status, status.amr_error);
            if let Some(log) = &status.log {
                evidence = evidence.log(log);
            }
            Cause::device_status(status.status, status.amr_error)?
        }
        JobError::NoPhone(_) => return None,
        JobError::LinkSpeed { speed, .. } => {
            evidence = evidence.speed(*speed);
            Cause::of_link_speed(*speed)?
        }
    };
    Some(Failure::new(phase, cause).with_evidence(evidence))
}

fn usb_cause(kind: ErrorKind, evidence: &mut Evidence) -> Cause {
    evidence.usb_error = Some(kind);
    Cause::Usb { kind }
}

fn wait_cause(e: &WaitError, evidence: &mut Evidence) -> Cause {
    match e {
        WaitError::Deadline { mode, .. } => Cause::NoReturn { awaited: *mode },
        WaitError::OtherMode { expected, got } => match mode_named(got) {
            Some(got) => Cause::WrongMode {
                expected: *expected,
                got,
            },
            // A mode this host cannot name is still not the planned one.
            None => Cause::Vanished,
        },
        WaitError::Open(u) => usb_cause(u.kind(), evidence),
        // Its mux session would not let go: someone else holds the device.
        WaitError::Takeover(_) => usb_cause(ErrorKind::Busy, evidence),
    }
}

/// A mode as the registry names it (`recovery`, `DFU`, `restore`, `normal`).
fn mode_named(name: &str) -> Option<AwaitedMode> {
    let name = name.to_ascii_lowercase();
    if name.contains("recovery") {
        Some(AwaitedMode::Recovery)
    } else if name.contains("dfu") {
        Some(AwaitedMode::Dfu)
    } else if name.contains("restore") {
        Some(AwaitedMode::Restore)
    } else if name.contains("normal") {
        Some(AwaitedMode::Normal)
    } else {
        None
    }
}

fn personalize_cause(e: &PersonalizeError) -> Option<Cause> {
    Some(match e {
        PersonalizeError::Tss(t) => match t.status() {
            Some(status) => Cause::TssRefused {
                status: u64::from(status),
            },
            None => Cause::TssUnreachable,
        },
        // The IPSW's image or a ticket that cannot be used: a damaged file.
        PersonalizeError::Digest { .. }
        | PersonalizeError::Stitch { .. }
        | PersonalizeError::Source(_) => Cause::DigestMismatch,
        // The phone did not give what a request needs.
        PersonalizeError::NoNonce | PersonalizeError::MissingField(_) => Cause::Refused,
        // This host could not build the request for the identity.
        PersonalizeError::Request(_) => return None,
    })
}

fn dfu_cause(cause: &dfu::Cause) -> Option<Cause> {
    Some(match cause {
        dfu::Cause::Usb(e) => Cause::Usb { kind: e.kind() },
        // The image failed the phone's check (CRC, verification): it arrived corrupted.
        dfu::Cause::Status {
            status: DfuStatus::ErrFile | DfuStatus::ErrVerify | DfuStatus::ErrFirmware,
            ..
        } => Cause::Corrupted,
        dfu::Cause::Status { .. } | dfu::Cause::UnexpectedState(_) | dfu::Cause::NotIdle { .. } => {
            Cause::Refused
        }
        dfu::Cause::Reply(_) => Cause::Usb {
            kind: ErrorKind::Malformed,
        },
        dfu::Cause::ShortWrite { .. } => Cause::Usb {
            kind: ErrorKind::Io,
        },
        dfu::Cause::Deadline { .. } => Cause::Silent,
        dfu::Cause::OutOfTime { overrun, .. } => match overrun {
            irecv::budget::Overrun::TooSlow { .. } => Cause::SlowLink,
            irecv::budget::Overrun::Deadline { .. } => Cause::Silent,
        },
        dfu::Cause::EmptyImage => Cause::DigestMismatch,
        dfu::Cause::Mismatch(_)
        | dfu::Cause::BadBlockSize { .. }
        | dfu::Cause::Cancelled { .. } => return None,
    })
}

fn recovery_cause(e: &RecoveryError) -> Option<Cause> {
    Some(match e {
        RecoveryError::InvalidCommand(_) => return None,
        // iBoot refuses a command by stalling it.
        RecoveryError::Command { source, .. } if source.kind() == ErrorKind::Pipe => Cause::Refused,
        RecoveryError::Command { source, .. }
        | RecoveryError::GetenvRead { source, .. }
        | RecoveryError::Open(source)
        | RecoveryError::Output(source) => Cause::Usb {
            kind: source.kind(),
        },
        RecoveryError::GetenvAnswer { .. } => Cause::Usb {
            kind: ErrorKind::Malformed,
        },
        RecoveryError::UnexpectedDisconnect { .. } => Cause::Vanished,
        RecoveryError::Upload(u) => match &u.cause {
            UploadCause::Usb(e) => Cause::Usb { kind: e.kind() },
            UploadCause::ShortWrite { .. } => Cause::Usb {
                kind: ErrorKind::Io,
            },
            UploadCause::OutOfTime { overrun, .. } => match overrun {
                irecv::budget::Overrun::TooSlow { .. } => Cause::SlowLink,
                irecv::budget::Overrun::Deadline { .. } => Cause::Silent,
            },
            UploadCause::EmptyFile => Cause::DigestMismatch,
            UploadCause::Mismatch(_)
            | UploadCause::ZeroChunkSize
            | UploadCause::TooManyChunks { .. }
            | UploadCause::Cancelled => return None,
        },
    })
}

fn session_cause(e: &SessionError, evidence: &mut Evidence) -> Cause {
    match e {
        SessionError::Usb(u) => usb_cause(u.kind(), evidence),
        SessionError::NoMuxInterface => Cause::WrongMode {
            expected: AwaitedMode::Normal,
            got: AwaitedMode::Recovery,
        },
        SessionError::Link(_) => usb_cause(ErrorKind::Malformed, evidence),
        SessionError::Stream(_) => Cause::ConnectionLost,
        SessionError::Refused { .. } => Cause::Refused,
        SessionError::Stalled { .. } => Cause::Silent,
        SessionError::Ended => Cause::Vanished,
    }
}

fn lockdown_cause(e: &LockdownError, evidence: &mut Evidence) -> Cause {
    match e {
        LockdownError::Session(s) => session_cause(s, evidence),
        LockdownError::Codec(_) | LockdownError::NotADictionary { .. } => {
            usb_cause(ErrorKind::Malformed, evidence)
        }
        LockdownError::Lockdown(_) => Cause::Refused,
        LockdownError::Closed { .. } => Cause::ConnectionLost,
    }
}

fn entry_cause(e: &EntryError, evidence: &mut Evidence) -> Option<Cause> {
    Some(match e {
        EntryError::Session(s) => session_cause(s, evidence),
        EntryError::Codec { .. } | EntryError::Value { .. } | EntryError::BytesBeforeTls { .. } => {
            usb_cause(ErrorKind::Malformed, evidence)
        }
        EntryError::Refused { .. } => Cause::Refused,
        EntryError::Closed { .. } => Cause::ConnectionLost,
        // Port 62078 answers as restored: the phone is in restore mode, not normal mode.
        EntryError::NotLockdown { .. } => Cause::WrongMode {
            expected: AwaitedMode::Normal,
            got: AwaitedMode::Restore,
        },
        EntryError::UserDenied { .. }
        | EntryError::TrustTimeout { .. }
        | EntryError::SessionAfterPair { .. }
        | EntryError::Tls { .. } => Cause::PairingRefused,
        EntryError::TlsIo(_) => Cause::ConnectionLost,
        // This host's keys or TLS configuration: not the phone's doing.
        EntryError::Pairing(_) | EntryError::TlsConfig(_) => return None,
    })
}

fn restore_mode_cause(e: &RestoreModeError, evidence: &mut Evidence) -> Option<Cause> {
    Some(match e {
        RestoreModeError::Session(s) => session_cause(s, evidence),
        RestoreModeError::Codec(_) | RestoreModeError::Message(_) => {
            usb_cause(ErrorKind::Malformed, evidence)
        }
        RestoreModeError::Request(l) => lockdown_cause(l, evidence),
        RestoreModeError::NotRestored(_) => Cause::WrongMode {
            expected: AwaitedMode::Restore,
            got: AwaitedMode::Normal,
        },
        RestoreModeError::UnservedData(_) => return None,
        RestoreModeError::Source(_) => Cause::DigestMismatch,
        RestoreModeError::Asr(a) => {
            *evidence = std::mem::take(evidence).component("asr");
            match a {
                AsrHostError::Framing(_) => usb_cause(ErrorKind::Malformed, evidence),
                AsrHostError::Unexpected { .. } | AsrHostError::OobRange { .. } => Cause::Refused,
            }
        }
        RestoreModeError::Closed => Cause::ConnectionLost,
        RestoreModeError::Silent(_) => Cause::Silent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::restoring::FinalStatus;
    use std::time::Duration;

    #[test]
    fn job_errors_become_the_policys_numbers() {
        let f = |e: JobError, p: Phase| failure_of(&e, p).map(|f| f.number());
        let gone = JobError::Wait {
            phase: Phase::RamdiskBoot,
            source: WaitError::Deadline {
                mode: AwaitedMode::Restore,
                within: Duration::from_secs(1),
            },
        };
        assert_eq!(f(gone, Phase::Upload), Some(4013));
        let refused = JobError::from(PersonalizeError::from(tss::TssError::Refused {
            status: 94,
            message: "not signed".into(),
        }));
        assert_eq!(f(refused, Phase::Upload), Some(3194));
        let six = JobError::Failed(FinalStatus {
            status: 6,
            amr_error: Some(2),
            log: Some("a\nb\n".into()),
        });
        let failure = failure_of(&six, Phase::Restore).unwrap();
        assert_eq!(failure.number(), 6);
        assert_eq!(failure.evidence.log_tail, ["a", "b"]);
        assert_eq!(
            f(
                JobError::RestoreMode(RestoreModeError::Closed),
                Phase::Restore
            ),
            Some(4013)
        );
        assert_eq!(f(JobError::NoPhone("x".into()), Phase::Restore), None);
    }
}
