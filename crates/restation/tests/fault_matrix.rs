//! The fault matrix: every point of the virtual phone's fault language × every action a phone
//! can produce there (`sim::fault::Point::allows`), each once (`x1`) and every time, run as a
//! real restore job in the daemon (`jobs::start`, the retry ladder, the registry following the
//! phone), with a technician who does what the job asks (puts the phone in DFU mode, moves it
//! to another port). Each case is checked against an oracle written here from
//! `ERROR-CODES.md` and the ladder's documented rungs, not computed by the mapping code: the
//! first failure's number, the ladder's first step, and how the job ends (restored after a
//! retry, or the verdict's number).
//!
//! The table is printed (`cargo test -p restation --test fault_matrix -- --nocapture`) and
//! written to `$CARGO_TARGET_DIR/fault-matrix.md`. `FAULT_MATRIX=asr:` runs only the cases
//! whose spec contains that text.
//!
//! How the cases are made to strike where they are meant to:
//! - The faults are given to the phone once the daemon has identified it, so the daemon's own
//!   identification of the first enumeration is not what they hit (later enumerations are
//!   identified with the faults on, as on a bench).
//! - Points of one mode are run from a start that reaches them: normal mode for `normal`,
//!   `lockdown`, `enter-recovery` and `link`; DFU for `dfu` and `dfu-upload`; recovery (iBoot)
//!   for the rest.
//! - `panic` and `flap` at a mode point are given the trigger `@~100%` (every transfer there):
//!   without a trigger they strike a moment after the phone arrives, which is before the job
//!   for the first enumeration.
//! - Transfer points are struck on the transfer that crosses a byte or progress mark of each
//!   upload (`restored:…@2KiB`, `asr:…@50%`: every upload), or by number where only one
//!   transfer will do (`lockdown:refuse@#2x1`: the first request, `QueryType`, is never refused;
//!   `restored:refuse@#5x1`: the `RootTicket` answer). `restore-mode:…@#40` counts the
//!   daemon's identification of the restore ramdisk too and strikes once, with or without `x1`.
//! - Phones check their images against the signing stand-in's tickets only in the `corrupt`
//!   cases, where that check is what makes the damage visible ([`signed`]).
//!
//! Where the daemon does not end a case as the policy says, or a fault does not reach the job,
//! the case is listed in [`KNOWN`] with what happens instead and why: the test passes on
//! either, and the table says which.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use restation::daemon::jobs::{self, JobContext, JobRecord, JobRequest, JobState};
use restation::daemon::personalize::{ClientTickets, Tss};
use restation::daemon::registry::Key;
use restation::daemon::{Daemon, Shared};
use restore::phase::Deadlines;
use sim::clock::{Clock, ScaledClock};
use sim::fault::FaultSpec;
use sim::hub::VirtualHub;
use sim::injector::Faults;
use sim::phone::{Mode, Options, Phone, RecoveryStage, Timings};
use sim::profile::{DfuStage, Profile};
use tokio::sync::broadcast::error::RecvError;

/// The phones run this many times faster than real time (a twentieth of it from normal mode).
const SPEED: u32 = 100;
/// The model: an A15 (iBSS comes back in DFU mode, iBEC goes over DFU from DFU mode).
const PRODUCT: &str = "iPhone14,3";
/// Ports on each case's hub: the phone starts on the first; the technician moves it to the
/// next when asked.
const PORTS: usize = 3;
/// Cases run at once.
const PARALLEL: usize = 16;
/// The most one case may take (wall clock) before it counts as hung.
const CASE_LIMIT: Duration = Duration::from_secs(90);

/// Where a case's phone starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Normal,
    Recovery,
    Dfu,
}

impl Start {
    fn mode(self) -> Mode {
        match self {
            Start::Normal => Mode::Normal,
            Start::Recovery => Mode::Recovery(RecoveryStage::Iboot),
            Start::Dfu => Mode::Dfu(DfuStage::SecureRom),
        }
    }

    /// How much faster than real time the phone runs. A phone in normal mode waits only
    /// `sim::normal::ENTER_RECOVERY_GRACE` (virtual time) for the host to read its
    /// `EnterRecovery` reply before it reboots: sped up too far, a busy host misses it.
    fn speed(self) -> u32 {
        match self {
            Start::Normal => SPEED / 20,
            Start::Recovery | Start::Dfu => SPEED,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Start::Normal => "normal",
            Start::Recovery => "recovery",
            Start::Dfu => "DFU",
        }
    }
}

/// How a job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Restored (after however many attempts).
    Restored,
    /// Failed with this number (the verdict's, or the last failure's).
    Failed(i64),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Restored => f.write_str("restored"),
            End::Failed(n) => write!(f, "failed {n}"),
        }
    }
}

/// One row of the oracle: the spec (point:action[@trigger][xN]), the start, the first
/// failure's number (`None`: the restore goes through without one), the ladder's first step
/// (`Next::name` spelling; `-` when nothing failed) and the end.
struct Case {
    spec: &'static str,
    start: Start,
    first: Option<i64>,
    next: &'static str,
    end: End,
}

/// A case the daemon does not end as the oracle says today: what it does instead, and why.
struct Known {
    spec: &'static str,
    first: Option<i64>,
    next: &'static str,
    end: End,
    why: &'static str,
}

const fn known(
    spec: &'static str,
    first: Option<i64>,
    next: &'static str,
    end: End,
    why: &'static str,
) -> Known {
    Known {
        spec,
        first,
        next,
        end,
        why,
    }
}

const fn case(
    spec: &'static str,
    start: Start,
    first: Option<i64>,
    next: &'static str,
    end: End,
) -> Case {
    Case {
        spec,
        start,
        first,
        next,
        end,
    }
}

use End::{Failed, Restored};
use Start::{Dfu, Normal, Recovery};

// Steps, as the ladder names them.
const RETRY: &str = "retry step";
const REENTER: &str = "re-enter recovery";
const REVERIFY: &str = "re-verify firmware";
const TRUST: &str = "ask to trust";
const MOVE: &str = "move port";
const DFU_AGAIN: &str = "re-enter DFU";
const NONE: &str = "-";

/// The oracle. Numbers from `ERROR-CODES.md`'s classification: the phone leaving the bus (or
/// coming back in recovery after a panic) is 9 in any phase; a failed upload, a refused
/// command or a phone not back in the planned mode before restore mode is 4005; a lost
/// restored/ASR connection, a silent phone in restore mode or restore mode never appearing
/// is 4013; corrupted data is 14; the phone's own final status is kept. Steps from the retry
/// ladder: a transient transport error (stall, EPROTO, timeout) before restore mode is
/// retried once on the same path; anything else from recovery re-enters recovery; the same
/// number twice from recovery escalates to DFU; from DFU, DFU is entered once more, then the
/// port is flagged and the phone moved; two good ports failing end 4014 (9, 4005, 4013) or
/// keep the number (14, a device status); a 14 is retried only after the firmware verifies.
/// A fault that strikes once ends restored after the retry; one that strikes every time ends
/// with the verdict, unless the route the ladder takes avoids the point (a `go` fault is left
/// behind by DFU mode, where the restore goes on from). A full-speed link is flagged at once
/// (move port); the ports it shows on become suspect, so the ladder gives up after three with
/// the number, not 4014. A phone that never comes back, or a link that fails every transfer
/// (nothing can identify the phone again: `link:*`, `normal:unplug`, `lockdown:unplug`), ends
/// with the first number when the wait runs out; a phone whose iOS never answers again
/// (`normal:stall`, `lockdown:refuse`...) is restored from DFU but never seen back in iOS: 4013.
/// Throughput alone (`slow`) says nothing without a port median: no failure.
const ORACLE: &[Case] = &[
    case("link:unplug", Normal, Some(9), REENTER, Failed(9)),
    case("link:unplugx1", Normal, Some(9), REENTER, Restored),
    case("link:stall", Normal, Some(4005), RETRY, Failed(4005)),
    case("link:stallx1", Normal, Some(4005), RETRY, Restored),
    case("link:io-error", Normal, Some(4005), RETRY, Failed(4005)),
    case("link:io-errorx1", Normal, Some(4005), RETRY, Restored),
    case("link:timeout", Normal, Some(4005), RETRY, Failed(4005)),
    case("link:timeoutx1", Normal, Some(4005), RETRY, Restored),
    case("link:corrupt", Normal, Some(4005), REENTER, Failed(14)),
    case("link:corrupt@4KiBx1", Normal, Some(4005), REENTER, Restored),
    case("link:flap@~100%", Normal, Some(9), REENTER, Failed(9)),
    case("link:flap@~100%x1", Normal, Some(9), REENTER, Restored),
    case("link:full-speed", Normal, Some(4005), MOVE, Failed(4005)),
    case("link:full-speedx1", Normal, Some(4005), MOVE, Restored),
    case("link:slow=1MiB/s", Normal, None, NONE, Restored),
    case("link:slow=1MiB/sx1", Normal, None, NONE, Restored),
    case("normal:unplug", Normal, Some(9), REENTER, Failed(9)),
    case("normal:unplugx1", Normal, Some(9), REENTER, Restored),
    case("normal:stall", Normal, Some(4005), RETRY, Failed(4013)),
    case("normal:stallx1", Normal, Some(4005), RETRY, Restored),
    case("normal:io-error", Normal, Some(4005), RETRY, Failed(4013)),
    case("normal:io-errorx1", Normal, Some(4005), RETRY, Restored),
    case("normal:timeout", Normal, Some(4005), RETRY, Failed(4013)),
    case("normal:timeoutx1", Normal, Some(4005), RETRY, Restored),
    case("normal:panic@~100%", Normal, Some(9), REENTER, Failed(4014)),
    case("normal:panic@~100%x1", Normal, Some(9), REENTER, Restored),
    case("normal:flap@~100%", Normal, Some(9), REENTER, Failed(9)),
    case("normal:flap@~100%x1", Normal, Some(9), REENTER, Restored),
    case("normal:full-speed", Normal, None, NONE, Restored),
    case("normal:full-speedx1", Normal, None, NONE, Restored),
    case("lockdown:unplug", Normal, Some(9), REENTER, Failed(9)),
    case("lockdown:unplugx1", Normal, Some(9), REENTER, Restored),
    case("lockdown:stall", Normal, Some(4005), RETRY, Failed(4013)),
    case("lockdown:stallx1", Normal, Some(4005), RETRY, Restored),
    case("lockdown:io-error", Normal, Some(4005), RETRY, Failed(4013)),
    case("lockdown:io-errorx1", Normal, Some(4005), RETRY, Restored),
    case("lockdown:timeout", Normal, Some(4005), RETRY, Failed(4013)),
    case("lockdown:timeoutx1", Normal, Some(4005), RETRY, Restored),
    case("lockdown:refuse", Normal, Some(4005), REENTER, Failed(4013)),
    case(
        "lockdown:refuse@#2x1",
        Normal,
        Some(4005),
        REENTER,
        Restored,
    ),
    case("enter-recovery:unplug", Normal, Some(9), REENTER, Restored),
    case(
        "enter-recovery:unplugx1",
        Normal,
        Some(9),
        REENTER,
        Restored,
    ),
    case("enter-recovery:stall", Normal, Some(4005), RETRY, Restored),
    case(
        "enter-recovery:stallx1",
        Normal,
        Some(4005),
        RETRY,
        Restored,
    ),
    case(
        "enter-recovery:io-error",
        Normal,
        Some(4005),
        RETRY,
        Restored,
    ),
    case(
        "enter-recovery:io-errorx1",
        Normal,
        Some(4005),
        RETRY,
        Restored,
    ),
    case(
        "enter-recovery:timeout",
        Normal,
        Some(4005),
        RETRY,
        Restored,
    ),
    case(
        "enter-recovery:timeoutx1",
        Normal,
        Some(4005),
        RETRY,
        Restored,
    ),
    case(
        "enter-recovery:never-returns",
        Normal,
        Some(4005),
        REENTER,
        Failed(4005),
    ),
    case(
        "enter-recovery:never-returnsx1",
        Normal,
        Some(4005),
        REENTER,
        Failed(4005),
    ),
    case(
        "enter-recovery:refuse",
        Normal,
        Some(4005),
        REENTER,
        Restored,
    ),
    case(
        "enter-recovery:refusex1",
        Normal,
        Some(4005),
        REENTER,
        Restored,
    ),
    case("recovery:unplug", Recovery, Some(9), REENTER, Failed(4014)),
    case("recovery:unplugx1", Recovery, Some(9), REENTER, Restored),
    case("recovery:stall", Recovery, Some(4005), RETRY, Failed(4014)),
    case("recovery:stallx1", Recovery, Some(4005), RETRY, Restored),
    case(
        "recovery:io-error",
        Recovery,
        Some(4005),
        RETRY,
        Failed(4014),
    ),
    case("recovery:io-errorx1", Recovery, Some(4005), RETRY, Restored),
    case(
        "recovery:timeout",
        Recovery,
        Some(4005),
        RETRY,
        Failed(4014),
    ),
    case("recovery:timeoutx1", Recovery, Some(4005), RETRY, Restored),
    case(
        "recovery:panic@~100%",
        Recovery,
        Some(9),
        REENTER,
        Failed(4014),
    ),
    case(
        "recovery:panic@~100%x1",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "recovery:flap@~100%",
        Recovery,
        Some(9),
        REENTER,
        Failed(4014),
    ),
    case(
        "recovery:flap@~100%x1",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case("recovery:refuse", Recovery, Some(4005), RETRY, Failed(4014)),
    case("recovery:refusex1", Recovery, Some(4005), RETRY, Restored),
    case(
        "recovery:full-speed",
        Recovery,
        Some(4005),
        MOVE,
        Failed(4005),
    ),
    case(
        "recovery:full-speedx1",
        Recovery,
        Some(4005),
        MOVE,
        Restored,
    ),
    case(
        "recovery-upload:unplug",
        Recovery,
        Some(9),
        REENTER,
        Failed(4014),
    ),
    case(
        "recovery-upload:unplugx1",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "recovery-upload:stall",
        Recovery,
        Some(4005),
        RETRY,
        Failed(4014),
    ),
    case(
        "recovery-upload:stallx1",
        Recovery,
        Some(4005),
        RETRY,
        Restored,
    ),
    case(
        "recovery-upload:io-error",
        Recovery,
        Some(4005),
        RETRY,
        Failed(4014),
    ),
    case(
        "recovery-upload:io-errorx1",
        Recovery,
        Some(4005),
        RETRY,
        Restored,
    ),
    case(
        "recovery-upload:timeout",
        Recovery,
        Some(4005),
        RETRY,
        Failed(4014),
    ),
    case(
        "recovery-upload:timeoutx1",
        Recovery,
        Some(4005),
        RETRY,
        Restored,
    ),
    case(
        "recovery-upload:corrupt",
        Recovery,
        Some(4005),
        REENTER,
        Failed(4014),
    ),
    case(
        "recovery-upload:corruptx1",
        Recovery,
        Some(4005),
        REENTER,
        Restored,
    ),
    case(
        "recovery-upload:slow=1MiB/s",
        Recovery,
        None,
        NONE,
        Restored,
    ),
    case(
        "recovery-upload:slow=1MiB/sx1",
        Recovery,
        None,
        NONE,
        Restored,
    ),
    case("dfu:unplug", Dfu, Some(9), DFU_AGAIN, Failed(4014)),
    case("dfu:unplugx1", Dfu, Some(9), DFU_AGAIN, Restored),
    case("dfu:stall", Dfu, Some(4005), RETRY, Failed(4014)),
    case("dfu:stallx1", Dfu, Some(4005), RETRY, Restored),
    case("dfu:io-error", Dfu, Some(4005), RETRY, Failed(4014)),
    case("dfu:io-errorx1", Dfu, Some(4005), RETRY, Restored),
    case("dfu:timeout", Dfu, Some(4005), RETRY, Failed(4014)),
    case("dfu:timeoutx1", Dfu, Some(4005), RETRY, Restored),
    case("dfu:flap@~100%", Dfu, Some(9), DFU_AGAIN, Failed(4014)),
    case("dfu:flap@~100%x1", Dfu, Some(9), DFU_AGAIN, Restored),
    case("dfu:refuse", Dfu, Some(4005), DFU_AGAIN, Failed(4014)),
    case("dfu:refuse@#2x1", Dfu, Some(4005), DFU_AGAIN, Restored),
    case("dfu:full-speed", Dfu, Some(4005), MOVE, Failed(4005)),
    case("dfu:full-speedx1", Dfu, Some(4005), MOVE, Restored),
    case("dfu-upload:unplug", Dfu, Some(9), DFU_AGAIN, Failed(4014)),
    case("dfu-upload:unplugx1", Dfu, Some(9), DFU_AGAIN, Restored),
    case("dfu-upload:stall", Dfu, Some(4005), RETRY, Failed(4014)),
    case("dfu-upload:stallx1", Dfu, Some(4005), RETRY, Restored),
    case("dfu-upload:io-error", Dfu, Some(4005), RETRY, Failed(4014)),
    case("dfu-upload:io-errorx1", Dfu, Some(4005), RETRY, Restored),
    case("dfu-upload:timeout", Dfu, Some(4005), RETRY, Failed(4014)),
    case("dfu-upload:timeoutx1", Dfu, Some(4005), RETRY, Restored),
    case("dfu-upload:corrupt", Dfu, Some(14), REVERIFY, Failed(14)),
    case("dfu-upload:corruptx1", Dfu, Some(14), REVERIFY, Restored),
    case(
        "dfu-upload:never-returns",
        Dfu,
        Some(4005),
        DFU_AGAIN,
        Failed(4005),
    ),
    case(
        "dfu-upload:never-returnsx1",
        Dfu,
        Some(4005),
        DFU_AGAIN,
        Failed(4005),
    ),
    case(
        "dfu-upload:refuse",
        Dfu,
        Some(4005),
        DFU_AGAIN,
        Failed(4014),
    ),
    case("dfu-upload:refusex1", Dfu, Some(4005), DFU_AGAIN, Restored),
    case("dfu-upload:slow=1MiB/s", Dfu, None, NONE, Restored),
    case("dfu-upload:slow=1MiB/sx1", Dfu, None, NONE, Restored),
    case("go:unplug", Recovery, Some(9), REENTER, Restored),
    case("go:unplugx1", Recovery, Some(9), REENTER, Restored),
    case("go:stall", Recovery, Some(4005), REENTER, Restored),
    case("go:stallx1", Recovery, Some(4005), REENTER, Restored),
    case("go:io-error", Recovery, Some(4005), RETRY, Restored),
    case("go:io-errorx1", Recovery, Some(4005), RETRY, Restored),
    case("go:timeout", Recovery, Some(4005), RETRY, Restored),
    case("go:timeoutx1", Recovery, Some(4005), RETRY, Restored),
    case("go:panic", Recovery, Some(9), REENTER, Restored),
    case("go:panicx1", Recovery, Some(9), REENTER, Restored),
    case(
        "go:never-returns",
        Recovery,
        Some(4005),
        REENTER,
        Failed(4005),
    ),
    case(
        "go:never-returnsx1",
        Recovery,
        Some(4005),
        REENTER,
        Failed(4005),
    ),
    case("bootx:unplug", Recovery, Some(9), REENTER, Failed(4014)),
    case("bootx:unplugx1", Recovery, Some(9), REENTER, Restored),
    case("bootx:stall", Recovery, Some(4013), REENTER, Failed(4014)),
    case("bootx:stallx1", Recovery, Some(4013), REENTER, Restored),
    case("bootx:io-error", Recovery, Some(4005), RETRY, Failed(4014)),
    case("bootx:io-errorx1", Recovery, Some(4005), RETRY, Restored),
    case("bootx:timeout", Recovery, Some(4005), RETRY, Failed(4014)),
    case("bootx:timeoutx1", Recovery, Some(4005), RETRY, Restored),
    case("bootx:panic", Recovery, Some(9), REENTER, Failed(4014)),
    case("bootx:panicx1", Recovery, Some(9), REENTER, Restored),
    case(
        "bootx:never-returns",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4013),
    ),
    case(
        "bootx:never-returnsx1",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4013),
    ),
    case(
        "restore-mode:unplug@#40",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:unplug@#40x1",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:stall@#40",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:stall@#40x1",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:io-error@#40",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:io-error@#40x1",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:timeout",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4014),
    ),
    case(
        "restore-mode:timeout@#40x1",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:panic@#40",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:panic@#40x1",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:flap@#40",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:flap@#40x1",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "restore-mode:never-returns",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4013),
    ),
    case(
        "restore-mode:never-returnsx1",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4013),
    ),
    case(
        "restore-mode:full-speed",
        Recovery,
        Some(4013),
        MOVE,
        Failed(4013),
    ),
    case(
        "restore-mode:full-speedx1",
        Recovery,
        Some(4013),
        MOVE,
        Restored,
    ),
    case(
        "restored:unplug@2KiB",
        Recovery,
        Some(9),
        REENTER,
        Failed(4014),
    ),
    case(
        "restored:unplug@2KiBx1",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "restored:stall@2KiB",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4014),
    ),
    case(
        "restored:stall@2KiBx1",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "restored:io-error@2KiB",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4014),
    ),
    case(
        "restored:io-error@2KiBx1",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "restored:timeout@2KiB",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4014),
    ),
    case(
        "restored:timeout@2KiBx1",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "restored:corrupt",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4014),
    ),
    case(
        "restored:corrupt@#5x1",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "restored:panic@2KiB",
        Recovery,
        Some(9),
        REENTER,
        Failed(4014),
    ),
    case(
        "restored:panic@2KiBx1",
        Recovery,
        Some(9),
        REENTER,
        Restored,
    ),
    case(
        "restored:refuse",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4014),
    ),
    case(
        "restored:refuse@#5x1",
        Recovery,
        Some(14),
        REVERIFY,
        Restored,
    ),
    case("restored:slow=1MiB/s@2KiB", Recovery, None, NONE, Restored),
    case(
        "restored:slow=1MiB/s@2KiBx1",
        Recovery,
        None,
        NONE,
        Restored,
    ),
    case("asr:unplug@50%", Recovery, Some(9), REENTER, Failed(4014)),
    case("asr:unplug@50%x1", Recovery, Some(9), REENTER, Restored),
    case("asr:stall@50%", Recovery, Some(4013), REENTER, Failed(4014)),
    case("asr:stall@50%x1", Recovery, Some(4013), REENTER, Restored),
    case(
        "asr:io-error@50%",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4014),
    ),
    case(
        "asr:io-error@50%x1",
        Recovery,
        Some(4013),
        REENTER,
        Restored,
    ),
    case(
        "asr:timeout@50%",
        Recovery,
        Some(4013),
        REENTER,
        Failed(4014),
    ),
    case("asr:timeout@50%x1", Recovery, Some(4013), REENTER, Restored),
    case("asr:corrupt@50%", Recovery, Some(14), REVERIFY, Failed(14)),
    case("asr:corrupt@50%x1", Recovery, Some(14), REVERIFY, Restored),
    case("asr:panic@50%", Recovery, Some(9), REENTER, Failed(4014)),
    case("asr:panic@50%x1", Recovery, Some(9), REENTER, Restored),
    case("asr:slow=1MiB/s@50%", Recovery, None, NONE, Restored),
    case("asr:slow=1MiB/s@50%x1", Recovery, None, NONE, Restored),
    case(
        "final-status:status=6",
        Recovery,
        Some(6),
        REENTER,
        Failed(6),
    ),
    case(
        "final-status:status=6x1",
        Recovery,
        Some(6),
        REENTER,
        Restored,
    ),
];

/// Why a case's fault never reaches the job. `enter-recovery` (all but `never-returns`): the
/// virtual phone finds the point by reading the lockdownd request in the bulk OUT's plaintext
/// (`sim::normal`, `NormalMode::touches`), and restation sends `EnterRecovery` inside the TLS
/// session, so the point is never seen. `restore-mode:timeout@#40x1`: the 40th transfer is
/// sometimes a read the phone does not time out (see the report).
const NO_STRIKE: &str = "the fault does not reach the job with this trigger";
/// `go` (or a panic on it) drops the phone, which comes back in recovery mode with the
/// installed iBoot instead of iBEC: the daemon takes any recovery-mode arrival as iBEC and goes
/// on (the virtual iBoot accepts the rest), so nothing fails. The policy: the phone came back
/// in another mode than planned, 9 (`job.rs`: the IbecBoot wait does not check the recovery
/// stage the serial string shows).
const GO_STAGE: &str = "back in iBoot instead of iBEC goes unnoticed";
/// Where the daemon does not do what the policy says today, or the case does not strike: what
/// it does instead and why. A case listed here passes when it matches either the oracle or
/// this; the table marks it.
const KNOWN: &[Known] = &[
    known("enter-recovery:unplug", None, NONE, Restored, NO_STRIKE),
    known("enter-recovery:unplugx1", None, NONE, Restored, NO_STRIKE),
    known("enter-recovery:stall", None, NONE, Restored, NO_STRIKE),
    known("enter-recovery:stallx1", None, NONE, Restored, NO_STRIKE),
    known("enter-recovery:io-error", None, NONE, Restored, NO_STRIKE),
    known("enter-recovery:io-errorx1", None, NONE, Restored, NO_STRIKE),
    known("enter-recovery:timeout", None, NONE, Restored, NO_STRIKE),
    known("enter-recovery:timeoutx1", None, NONE, Restored, NO_STRIKE),
    known("enter-recovery:refuse", None, NONE, Restored, NO_STRIKE),
    known("enter-recovery:refusex1", None, NONE, Restored, NO_STRIKE),
    known("go:unplug", None, NONE, Restored, GO_STAGE),
    known("go:unplugx1", None, NONE, Restored, GO_STAGE),
    known("go:panic", None, NONE, Restored, GO_STAGE),
    known("go:panicx1", None, NONE, Restored, GO_STAGE),
    known(
        "restore-mode:timeout@#40x1",
        None,
        NONE,
        Restored,
        NO_STRIKE,
    ),
];

/// What one run showed.
#[derive(Debug, Clone)]
struct Seen {
    first: Option<i64>,
    next: String,
    end: Option<End>,
    attempts: u32,
    acted: Vec<&'static str>,
    error: Option<String>,
    first_error: Option<String>,
    took: Duration,
    lagged: u64,
}

/// Everything the cases share: the runtime, the signing stand-in, the staged IPSW.
struct World {
    runtime: tokio::runtime::Runtime,
    standin: tss::standin::Standin,
    personalization: Arc<dyn jobs::Personalization>,
    store: PathBuf,
    ipsw: String,
    dir: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn world() -> World {
    let dir = std::env::temp_dir().join(format!("restation-fault-matrix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("synth.ipsw");
    let profile = ipsw::profile::profile(PRODUCT).unwrap();
    ipsw::synth::synthesize(
        profile,
        &ipsw::synth::SynthOptions { os_size: 512 << 10 },
        &path,
    )
    .unwrap();
    let store = dir.join("store");
    let staged = ipsw::store::Store::open(&store)
        .unwrap()
        .stage_file(&path, &ipsw::store::StageOptions::default())
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let standin = runtime.block_on(tss::standin::Standin::start()).unwrap();
    let client = tss::Client::new(tss::Config {
        url: standin.url(),
        ..tss::Config::default()
    })
    .unwrap();
    let personalization = Arc::new(Tss::new(Arc::new(ClientTickets::new(
        client,
        runtime.handle().clone(),
    ))));
    World {
        runtime,
        standin,
        personalization,
        store,
        ipsw: staged.record.id,
        dir,
    }
}

/// The phone's mode changes, shortened (the clock is sped up as well).
fn timings() -> Timings {
    Timings {
        after_dfu: Duration::from_secs(1),
        after_go: Duration::from_secs(1),
        after_bootx: Duration::from_secs(2),
        after_reboot: Duration::from_secs(3),
        after_enter_recovery: Duration::from_secs(2),
        after_panic: Duration::from_secs(2),
        flap: Duration::from_secs(1),
        spontaneous: Duration::from_secs(1),
        replug: Some(Duration::from_secs(2)),
        after_refused_dfu: Duration::from_secs(1),
        restore_step: Duration::from_millis(200),
        ..Timings::default()
    }
}

/// The daemon's deadlines, in real time: well above what the sped-up phone takes (its mode
/// changes take at most a few hundred milliseconds here), short enough that a phone that
/// never comes back costs little.
fn deadlines() -> Deadlines {
    let s = Duration::from_millis;
    Deadlines {
        personalize: s(20_000),
        pair: s(2_000),
        enter_recovery: s(2_000),
        ibss_boot: s(2_000),
        ibec_boot: s(2_000),
        upload_stall: s(3_000),
        ramdisk_boot: s(2_000),
        restore_stall: s(3_000),
        final_reboot: s(3_000),
        operator: s(5_000),
    }
}

/// The short name of the ladder's step as the job record shows it (`Next`'s `Display`).
fn step_name(text: &str) -> String {
    let names = [
        ("retry the", RETRY),
        ("re-enter recovery", REENTER),
        ("re-enter DFU", DFU_AGAIN),
        ("escalate to DFU", "escalate to DFU"),
        ("re-verify", REVERIFY),
        ("unlock the phone", TRUST),
        ("final verdict", "verdict"),
    ];
    if text.contains("move the phone to another port") {
        return MOVE.to_string();
    }
    names
        .iter()
        .find(|(prefix, _)| text.starts_with(prefix))
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("? {text}"))
}

/// Whether a case's phone checks its images against tickets from the signing stand-in (and
/// the job asks the stand-in for them), as on `restation serve`'s virtual bench: what makes
/// corrupted data visible to the phone. Signing and checking cost most of a case's CPU in a
/// debug build, so the other cases send images as shipped to a phone that checks nothing
/// (`FAULT_MATRIX_TSS=1` signs every case).
fn signed(spec: &FaultSpec) -> bool {
    std::env::var_os("FAULT_MATRIX_TSS").is_some()
        || spec
            .faults
            .iter()
            .any(|f| f.action == sim::fault::Action::Corrupt)
}

/// A phone for this bench.
fn phone(
    world: &World,
    profile: &Profile,
    mode: Mode,
    clock: &Arc<dyn Clock>,
    signed: bool,
) -> Phone {
    let options = Options {
        start: mode,
        timings: timings(),
        ..Options::default()
    };
    let mut phone = Phone::new(profile.clone(), options, clock.now());
    if signed {
        phone.set_image_check(Box::new(tss::verify::image_check(
            world.standin.public_key(),
        )));
    }
    phone
}

/// Runs one case to its end.
fn run(world: &World, index: usize, spec: &FaultSpec, start: Start) -> Seen {
    let began = Instant::now();
    let signed = signed(spec);
    let clock: Arc<dyn Clock> = Arc::new(ScaledClock::new(start.speed()));
    let hub = VirtualHub::new(PORTS, Arc::clone(&clock));
    let profile = Profile::for_product_type(PRODUCT, 0xFA17_0000 + index as u64).unwrap();
    let ecid = profile.ecid;
    hub.plug(0, phone(world, &profile, start.mode(), &clock, signed))
        .unwrap();

    let rt = world.runtime.handle();
    let shared = Shared::new();
    let ctx = JobContext {
        backend: Arc::new(hub.clone()),
        store: world.store.clone(),
        personalization: if signed {
            Arc::clone(&world.personalization)
        } else {
            Arc::new(jobs::AsShipped)
        },
        deadlines: deadlines(),
        runtime: rt.clone(),
        pair_records: Some(world.dir.join("lockdown")),
    };
    shared.enable_jobs(ctx.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = Daemon::new(Arc::new(hub.clone()), Arc::clone(&shared));
    let driver = rt.spawn(daemon.run(async {
        let _ = stopped.await;
    }));

    // The daemon identifies the phone; then the faults are on.
    let key = Key::Ecid(ecid);
    let identified = rt.block_on(async {
        let entry = shared.wait_for_entry(|r| {
            r.get(&key)
                .filter(|e| e.present && e.identity.chip_id.is_some())
                .map(|_| ())
        });
        tokio::time::timeout(Duration::from_secs(30), entry).await
    });
    assert!(identified.is_ok(), "{spec}: the phone was never identified");
    // Identification's mux link (kept for the usbmuxd socket) reads from the phone on its
    // own: it ends here, as the job's takeover would end it, so that the faults strike the job.
    let sessions: Vec<_> = shared.sessions().drain().map(|(_, s)| s).collect();
    for session in sessions {
        assert!(
            session.shutdown(Duration::from_secs(10)),
            "{spec}: a mux session stayed"
        );
    }
    hub.with_phone(0, |p| {
        p.mode_state_mut().1.faults = Faults::new(spec.clone(), index as u64);
    });

    let mut updates = shared.jobs().subscribe();
    let id = jobs::start(
        &shared,
        &ctx,
        &JobRequest {
            ecid: Some(format!("{ecid:#x}")),
            port: None,
            ipsw: world.ipsw.clone(),
            behavior: None,
        },
    )
    .unwrap_or_else(|e| panic!("{spec}: the job did not start: {e}"));

    let mut seen = Seen {
        first: None,
        next: NONE.to_string(),
        end: None,
        attempts: 1,
        acted: Vec::new(),
        error: None,
        first_error: None,
        took: Duration::ZERO,
        lagged: 0,
    };
    let mut port = 0usize;
    let mut answered: Option<(u32, String)> = None;
    let mut first_noted = false;
    let deadline = Instant::now() + CASE_LIMIT;
    loop {
        let record: JobRecord = match rt.block_on(async {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, updates.recv()).await
        }) {
            Err(_) => {
                seen.error = Some(format!(
                    "no end within {CASE_LIMIT:?}: {:?}",
                    shared.jobs().get(id)
                ));
                break;
            }
            Ok(Ok(update)) if update.job.id == id => update.job,
            Ok(Ok(_)) => continue,
            Ok(Err(RecvError::Lagged(n))) => {
                seen.lagged += n;
                match shared.jobs().get(id) {
                    Some(r) => r,
                    None => continue,
                }
            }
            Ok(Err(RecvError::Closed)) => break,
        };
        seen.attempts = record.attempts;
        if !first_noted {
            if let Some(next) = &record.next_step {
                first_noted = true;
                seen.first = record.number;
                seen.next = step_name(next);
                seen.first_error = record.error.clone();
            }
        }
        match record.state {
            // Running, or waiting for its turn.
            JobState::Running | JobState::Queued => {}
            JobState::Succeeded => {
                seen.end = Some(End::Restored);
                break;
            }
            JobState::Failed => {
                seen.end = Some(End::Failed(record.number.unwrap_or(0)));
                seen.error = record.error.clone();
                if !first_noted {
                    seen.first = record.number;
                    seen.next = "verdict".into();
                }
                break;
            }
        }
        // The technician answers each request once.
        let Some(prompt) = record.operator.clone() else {
            continue;
        };
        if answered.as_ref() == Some(&(record.attempts, prompt.clone())) {
            continue;
        }
        answered = Some((record.attempts, prompt.clone()));
        if prompt.starts_with("Put the phone in DFU mode") {
            // The buttons: the phone (its faults and all) restarts in DFU mode.
            if let Ok(Some(old)) = hub.unplug(port) {
                let mut new = phone(world, &profile, Start::Dfu.mode(), &clock, signed);
                new.mode_state_mut().1.faults = old.core().faults.clone();
                hub.plug(port, new).unwrap();
                seen.acted.push("put in DFU");
            }
        } else if prompt.contains("force-restart it") {
            let now = clock.now();
            if hub
                .with_phone(port, |p| p.force_restart(now, Duration::from_millis(300)))
                .is_some()
            {
                seen.acted.push("force restart");
            }
        } else if prompt.contains("move the phone to another port") {
            let to = (port + 1) % PORTS;
            if hub.move_phone(port, to).unwrap() {
                port = to;
                seen.acted.push("moved");
            }
        }
    }
    let _ = stop.send(());
    let _ = rt.block_on(driver);
    seen.took = began.elapsed();
    seen
}

/// Every allowed point × action, each with the trigger that makes it strike where meant.
fn covered() -> Vec<(sim::fault::Point, String)> {
    ORACLE
        .iter()
        .map(|c| {
            let f: sim::fault::Fault = c.spec.parse().unwrap();
            (f.point, action_kind(&f.action))
        })
        .collect()
}

fn action_kind(a: &sim::fault::Action) -> String {
    a.to_string()
        .split('=')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_point_and_fault_ends_as_the_policy_says() {
    // The oracle covers every pair the fault language allows, each once and every time.
    use sim::fault::{Action, Point};
    let kinds = [
        Action::Unplug,
        Action::Stall,
        Action::IoError,
        Action::Timeout,
        Action::Corrupt,
        Action::Panic,
        Action::Flap,
        Action::NeverReturns,
        Action::Refuse,
        Action::FullSpeed,
        Action::Slow {
            bytes_per_sec: 1 << 20,
        },
        Action::Status(6),
    ];
    let covered = covered();
    let mut missing = Vec::new();
    for point in Point::ALL {
        for action in kinds {
            if point.allows(action) {
                let kind = action_kind(&action);
                let n = covered
                    .iter()
                    .filter(|(p, k)| *p == point && *k == kind)
                    .count();
                if n < 2 {
                    missing.push(format!("{point}:{kind} ({n} cases)"));
                }
            }
        }
    }

    // `FAULT_MATRIX_TRY=recovery=asr:stall@50%x1` runs one case outside the table and shows
    // what happened (for choosing triggers).
    if let Ok(trial) = std::env::var("FAULT_MATRIX_TRY") {
        let (start, spec) = trial.split_once('=').expect("START=SPEC");
        let start = match start {
            "normal" => Start::Normal,
            "dfu" => Start::Dfu,
            _ => Start::Recovery,
        };
        let world = world();
        let seen = run(&world, 0, &spec.parse().unwrap(), start);
        eprintln!("{spec} from {}: {seen:#?}", start.name());
        return;
    }
    let filter = std::env::var("FAULT_MATRIX").ok();
    let cases: Vec<(usize, &Case)> = ORACLE
        .iter()
        .enumerate()
        .filter(|(_, c)| filter.as_deref().is_none_or(|f| c.spec.contains(f)))
        .collect();
    let world = world();
    let results: Mutex<BTreeMap<usize, Seen>> = Mutex::new(BTreeMap::new());
    // The slow ones first (normal mode runs at a tenth of the speed), so that none is left
    // running alone at the end.
    let mut order = cases.clone();
    order.sort_by_key(|(_, c)| c.start != Start::Normal);
    let queue = Mutex::new(order.into_iter());
    let began = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let next = queue.lock().unwrap().next();
                let Some((i, c)) = next else { break };
                let spec: FaultSpec = c.spec.parse().unwrap();
                let seen = run(&world, i, &spec, c.start);
                eprintln!(
                    "  {:<40} {:>6} {:<20} {} ({} attempts, {:.1}s)",
                    c.spec,
                    seen.first.map(|n| n.to_string()).unwrap_or("-".into()),
                    seen.next,
                    seen.end.map(|e| e.to_string()).unwrap_or("?".into()),
                    seen.attempts,
                    seen.took.as_secs_f64()
                );
                results.lock().unwrap().insert(i, seen);
            });
        }
    });
    let total = began.elapsed();
    let results = results.into_inner().unwrap();

    let mut table = String::from(
        "| fault | start | number (expected) | first step (expected) | end (expected) | attempts | technician | |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut wrong = Vec::new();
    for (i, c) in &cases {
        let Some(seen) = results.get(i) else { continue };
        let show = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or("-".into());
        let ok = seen.first == c.first && seen.next == c.next && seen.end == Some(c.end);
        let known = KNOWN.iter().find(|k| {
            k.spec == c.spec
                && seen.first == k.first
                && seen.next == k.next
                && seen.end == Some(k.end)
        });
        let verdict = match (ok, known) {
            (true, _) => "ok".to_string(),
            (false, Some(k)) => format!("known: {}", k.why),
            (false, None) => "**differs**".to_string(),
        };
        let _ = writeln!(
            table,
            "| `{}` | {} | {} ({}) | {} ({}) | {} ({}) | {} | {} | {} |",
            c.spec,
            c.start.name(),
            show(seen.first),
            show(c.first),
            seen.next,
            c.next,
            seen.end.map(|e| e.to_string()).unwrap_or("?".into()),
            c.end,
            seen.attempts,
            if seen.acted.is_empty() {
                "-".to_string()
            } else {
                seen.acted.join(", ")
            },
            verdict
        );
        if !ok && known.is_none() {
            wrong.push(format!(
                "{} from {}: saw {} / {} / {} (first error: {}; last: {}), expected {} / {} / {}",
                c.spec,
                c.start.name(),
                show(seen.first),
                seen.next,
                seen.end.map(|e| e.to_string()).unwrap_or("?".into()),
                seen.first_error.as_deref().unwrap_or("-"),
                seen.error.as_deref().unwrap_or("-"),
                show(c.first),
                c.next,
                c.end
            ));
        }
    }
    eprintln!(
        "\nfault matrix: {} cases in {:.1}s ({} at once, phones at {SPEED}x, {}x from normal mode)\n\n{table}",
        cases.len(),
        total.as_secs_f64(),
        PARALLEL,
        Start::Normal.speed()
    );
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("fault-matrix.md"), &table);

    assert!(
        missing.is_empty() || filter.is_some(),
        "the oracle misses {missing:?}"
    );
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ from the policy:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}
