//! Typed restore failures and the one table that turns them into the numbers technicians know.
//!
//! No open tool says "4013" when a restore fails: they print a USB error, a restored status or
//! their own return code. This module classifies *where* ([`Phase`]) and *how* ([`Cause`]) a
//! restore failed, keeps what the host saw ([`Evidence`]), and maps that onto Apple's numbers
//! (9, 4005, 4013, 4014, 14, 3194) or the status number the phone itself reported, each with
//! its meaning and the advice a technician acts on. The policy is
//! `shared/reference/ERROR-CODES.md`; [`classify`] is its classification table and [`TABLE`]
//! its list of numbers, both here and nowhere else. `docs/errors.md` is generated from
//! [`markdown_table`] and a test checks that it still matches.
//!
//! ```
//! use restore::failure::{self, Cause, Evidence, Failure};
//! use restore::phase::Phase;
//!
//! // The ASR stream stopped with EPROTO halfway through the OS image.
//! let f = Failure::new(Phase::Restore, Cause::Usb { kind: usb::ErrorKind::Io })
//!     .with_evidence(Evidence::default().usb_error(usb::ErrorKind::Io).bytes(512 << 20));
//! assert_eq!(f.number(), 4013);
//! assert!(f.explain().advice.contains("cable"));
//! assert!(f.cause.implicates_link());
//!
//! // TSS said 94: the build is no longer signed. Never the cable.
//! let f = Failure::new(Phase::Personalize, Cause::TssRefused { status: 94 });
//! assert_eq!(f.number(), 3194);
//! assert!(!f.cause.implicates_link());
//! assert_eq!(failure::explain(3194).map(|e| e.number), Some(3194));
//! assert!(failure::explain(1234).is_none());
//! ```

use std::fmt;
use std::num::NonZeroI64;

use serde::Serialize;

use crate::phase::{AwaitedMode, Phase};

/// How many of the device's last log lines a failure keeps as evidence.
pub const LOG_LINES: usize = 20;

/// Apple's "device disconnected unexpectedly during update/restore".
pub const DISCONNECTED: i64 = 9;
/// Apple's "a critical error during update/restore" (DFU and recovery, before restore mode).
pub const CRITICAL: i64 = 4005;
/// Apple's "device lost communication / stopped responding during restore".
pub const LOST_COMMUNICATION: i64 = 4013;
/// Apple's 4013 family persisting after cable, port and computer were ruled out: hardware.
pub const HARDWARE: i64 = 4014;
/// Apple's "USB connection group; also a corrupted firmware file".
pub const CORRUPTED: i64 = 14;
/// Apple's "could not contact the signing server, or the build is not signed".
pub const NOT_SIGNED: i64 = 3194;

/// Why a restore failed: what the host saw happen, in terms of the conversation with the
/// phone. The virtual phone's fault language maps onto these one to one (`unplug` →
/// [`Cause::Vanished`], `stall` → [`Cause::Usb`] pipe, `panic` → [`Cause::WrongMode`], ...),
/// and so do the errors of real phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case", tag = "cause")]
pub enum Cause {
    /// A USB transfer failed with this kind at a point where no error is expected (a PIPE
    /// right after `go`, `bootx` or a reset is normal and never becomes a failure).
    /// [`usb::ErrorKind::NoDevice`] here means the phone left the bus mid-transfer.
    Usb {
        /// The kind libusb or usbfs reported.
        kind: usb::ErrorKind,
    },
    /// The phone left the bus while it had to stay (no mode change was requested): the
    /// cable was pulled, or the link or the phone dropped.
    Vanished,
    /// The phone left the bus and came back in the same mode within seconds, unasked.
    Flapped,
    /// After a requested mode change the phone did not come back in the awaited mode before
    /// the phase's deadline.
    NoReturn {
        /// The mode that was awaited.
        awaited: AwaitedMode,
    },
    /// The phone came back in another mode than planned (a panic brings it back in
    /// recovery).
    WrongMode {
        /// The mode that was awaited.
        expected: AwaitedMode,
        /// The mode it came back in.
        got: AwaitedMode,
    },
    /// The phone answered but said no: a DFU status error, an iBoot command refused
    /// (stalled), a lockdownd or restored request refused.
    Refused,
    /// lockdownd refused to pair (the trust dialog was declined or the phone is locked).
    PairingRefused,
    /// A request or a stream got no answer before its deadline while the phone stayed on the
    /// bus: it stopped responding.
    Silent,
    /// restored's or ASR's connection closed before the final status.
    ConnectionLost,
    /// restored's final `StatusMsg` carried a non-zero `Status`.
    DeviceStatus {
        /// `Status`.
        status: NonZeroI64,
        /// `AMRError`, when the phone gave one.
        amr_error: Option<i64>,
    },
    /// The signing server answered with an error `STATUS` (94: this build is not signed for
    /// this phone).
    TssRefused {
        /// TSS's `STATUS`.
        status: u64,
    },
    /// The signing server could not be reached.
    TssUnreachable,
    /// A staged IPSW or one of its components does not match its digest.
    DigestMismatch,
    /// Data arrived corrupted: a DFU CRC or recovery upload hash refused, an ASR chunk whose
    /// checksum the phone refused.
    Corrupted,
    /// The phone enumerated below high speed (12 Mb/s): damaged data lines in the cable or
    /// port.
    FullSpeed,
    /// An upload or the ASR stream ran far below the port's own median.
    SlowLink,
}

impl Cause {
    /// Every kind of cause once, with representative values: what the fault matrix and the
    /// docs iterate over.
    pub const EXAMPLES: [Cause; 20] = [
        Cause::Usb {
            kind: usb::ErrorKind::NoDevice,
        },
        Cause::Usb {
            kind: usb::ErrorKind::Pipe,
        },
        Cause::Usb {
            kind: usb::ErrorKind::Io,
        },
        Cause::Usb {
            kind: usb::ErrorKind::Timeout,
        },
        Cause::Usb {
            kind: usb::ErrorKind::Overflow,
        },
        Cause::Vanished,
        Cause::Flapped,
        Cause::NoReturn {
            awaited: AwaitedMode::Recovery,
        },
        Cause::WrongMode {
            expected: AwaitedMode::Restore,
            got: AwaitedMode::Recovery,
        },
        Cause::Refused,
        Cause::PairingRefused,
        Cause::Silent,
        Cause::ConnectionLost,
        Cause::DeviceStatus {
            status: match NonZeroI64::new(6) {
                Some(s) => s,
                None => NonZeroI64::MIN,
            },
            amr_error: None,
        },
        Cause::TssRefused { status: 94 },
        Cause::TssUnreachable,
        Cause::DigestMismatch,
        Cause::Corrupted,
        Cause::FullSpeed,
        Cause::SlowLink,
    ];

    /// The cause for restored's final status, `None` when it is 0 (success).
    pub fn device_status(status: i64, amr_error: Option<i64>) -> Option<Cause> {
        NonZeroI64::new(status).map(|status| Cause::DeviceStatus { status, amr_error })
    }

    /// A transport error that retrying the same step once on the same path may clear
    /// (rung 1 of the retry ladder): the phone is still there and said nothing against it.
    pub fn is_transient(self) -> bool {
        match self {
            Cause::Usb { kind } => matches!(
                kind,
                usb::ErrorKind::Pipe
                    | usb::ErrorKind::Timeout
                    | usb::ErrorKind::Io
                    | usb::ErrorKind::Overflow
                    | usb::ErrorKind::Interrupted
            ),
            _ => false,
        }
    }

    /// Whether this cause counts against the cable and port (port health, the ladder's
    /// port flag). A refusal from the signing server, a bad IPSW, a status the phone reports
    /// or a declined trust dialog never do.
    pub fn implicates_link(self) -> bool {
        match self {
            Cause::Usb { .. }
            | Cause::Vanished
            | Cause::Flapped
            | Cause::NoReturn { .. }
            | Cause::Silent
            | Cause::ConnectionLost
            | Cause::Corrupted
            | Cause::FullSpeed
            | Cause::SlowLink => true,
            Cause::WrongMode { .. }
            | Cause::Refused
            | Cause::PairingRefused
            | Cause::DeviceStatus { .. }
            | Cause::TssRefused { .. }
            | Cause::TssUnreachable
            | Cause::DigestMismatch => false,
        }
    }

    /// Whether the link itself was measured bad (speed, throughput) before or regardless of
    /// any transfer error: retrying on the same cable cannot help.
    pub fn is_link_quality(self) -> bool {
        matches!(self, Cause::FullSpeed | Cause::SlowLink)
    }

    /// The cause a phone's enumeration speed alone shows: [`Cause::FullSpeed`] below high
    /// speed (every iPhone is high-speed or faster), `None` otherwise or when unknown.
    pub fn of_link_speed(speed: usb::Speed) -> Option<Cause> {
        speed.below_high_speed().then_some(Cause::FullSpeed)
    }

    /// [`Cause::SlowLink`] when a transfer's rate is far below the port's own median (under
    /// 1/[`SLOW_LINK_FRACTION`] of it); `None` otherwise or without a median yet.
    pub fn of_throughput(bytes_per_sec: u64, port_median: Option<u64>) -> Option<Cause> {
        let median = port_median.filter(|m| *m > 0)?;
        let far_below =
            u128::from(bytes_per_sec) * u128::from(SLOW_LINK_FRACTION) < u128::from(median);
        far_below.then_some(Cause::SlowLink)
    }
}

/// "Far below the port's median": a transfer slower than the median divided by this.
pub const SLOW_LINK_FRACTION: u64 = 4;

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Usb {
                kind: usb::ErrorKind::NoDevice,
            } => f.write_str("the phone left the bus during a transfer (no-device)"),
            Cause::Usb { kind } => write!(f, "a USB transfer failed ({kind})"),
            Cause::Vanished => f.write_str("the phone left the bus while it had to stay"),
            Cause::Flapped => f.write_str("the phone dropped off the bus and came back, unasked"),
            Cause::NoReturn { awaited } => write!(
                f,
                "the phone did not come back in {} mode before the deadline",
                mode_name(*awaited)
            ),
            Cause::WrongMode { expected, got } => write!(
                f,
                "the phone came back in {} mode instead of {} (a panic?)",
                mode_name(*got),
                mode_name(*expected)
            ),
            Cause::Refused => f.write_str("the phone refused a request"),
            Cause::PairingRefused => f.write_str("the phone refused to pair (trust dialog)"),
            Cause::Silent => f.write_str("the phone stopped responding"),
            Cause::ConnectionLost => {
                f.write_str("restored's connection closed before the final status")
            }
            Cause::DeviceStatus { status, amr_error } => {
                write!(f, "restored reported status {status}")?;
                if let Some(a) = amr_error {
                    write!(f, " (AMRError {a})")?;
                }
                Ok(())
            }
            Cause::TssRefused { status } => {
                write!(f, "the signing server refused (STATUS {status})")
            }
            Cause::TssUnreachable => f.write_str("the signing server could not be reached"),
            Cause::DigestMismatch => f.write_str("the firmware does not match its digest"),
            Cause::Corrupted => f.write_str("data arrived corrupted"),
            Cause::FullSpeed => f.write_str("the phone enumerated at full speed (12 Mb/s)"),
            Cause::SlowLink => f.write_str("the transfer ran far below the port's median"),
        }
    }
}

fn mode_name(mode: AwaitedMode) -> &'static str {
    match mode {
        AwaitedMode::Normal => "normal",
        AwaitedMode::Recovery => "recovery",
        AwaitedMode::Dfu => "DFU",
        AwaitedMode::Restore => "restore",
    }
}

/// A transfer's rate against the port's own median, when the host measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Throughput {
    /// What this transfer achieved, bytes per second.
    pub bytes_per_sec: u64,
    /// The port's median for transfers of this kind, when it has a history.
    pub port_median: Option<u64>,
}

/// What the host saw: kept with the failure, shown to the technician, stored in the history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Evidence {
    /// The USB error kind of the failing transfer.
    pub usb_error: Option<usb::ErrorKind>,
    /// restored's final `Status`.
    pub restored_status: Option<i64>,
    /// restored's `AMRError`.
    pub amr_error: Option<i64>,
    /// The device's last log lines (at most [`LOG_LINES`]), oldest first.
    pub log_tail: Vec<String>,
    /// The speed the phone enumerated at.
    pub speed: Option<usb::Speed>,
    /// The failing transfer's rate.
    pub throughput: Option<Throughput>,
    /// Bytes of the failing transfer that went through.
    pub bytes_transferred: Option<u64>,
    /// The component or stream that was moving (`iBSS`, `RestoreRamDisk`, `asr`).
    pub component: Option<String>,
    /// The error as the engine that met it reported it, for the record.
    pub detail: Option<String>,
}

impl Evidence {
    /// With the USB error kind.
    pub fn usb_error(mut self, kind: usb::ErrorKind) -> Self {
        self.usb_error = Some(kind);
        self
    }

    /// With restored's final status.
    pub fn restored(mut self, status: i64, amr_error: Option<i64>) -> Self {
        self.restored_status = Some(status);
        self.amr_error = amr_error;
        self
    }

    /// With the last [`LOG_LINES`] lines of the device's log.
    pub fn log(mut self, log: &str) -> Self {
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let skip = lines.len().saturating_sub(LOG_LINES);
        self.log_tail = lines
            .into_iter()
            .skip(skip)
            .map(|l| l.chars().take(512).collect())
            .collect();
        self
    }

    /// With the link speed.
    pub fn speed(mut self, speed: usb::Speed) -> Self {
        self.speed = Some(speed);
        self
    }

    /// With the failing transfer's rate and the port's median.
    pub fn throughput(mut self, bytes_per_sec: u64, port_median: Option<u64>) -> Self {
        self.throughput = Some(Throughput {
            bytes_per_sec,
            port_median,
        });
        self
    }

    /// With the bytes that went through.
    pub fn bytes(mut self, bytes: u64) -> Self {
        self.bytes_transferred = Some(bytes);
        self
    }

    /// With the component that was moving.
    pub fn component(mut self, name: &str) -> Self {
        self.component = Some(name.chars().take(128).collect());
        self
    }

    /// With the engine's own words.
    pub fn detail(mut self, detail: impl fmt::Display) -> Self {
        let text = detail.to_string();
        self.detail = Some(text.chars().take(1024).collect());
        self
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        *self == Evidence::default()
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(c) = &self.component {
            parts.push(format!("during {c}"));
        }
        if let Some(k) = self.usb_error {
            parts.push(format!("USB {k}"));
        }
        if let Some(s) = self.restored_status {
            parts.push(format!("Status {s}"));
        }
        if let Some(a) = self.amr_error {
            parts.push(format!("AMRError {a}"));
        }
        if let Some(s) = self.speed {
            parts.push(format!("link {s}"));
        }
        if let Some(t) = self.throughput {
            match t.port_median {
                Some(m) => parts.push(format!("{} B/s (port median {} B/s)", t.bytes_per_sec, m)),
                None => parts.push(format!("{} B/s", t.bytes_per_sec)),
            }
        }
        if let Some(b) = self.bytes_transferred {
            parts.push(format!("{b} bytes through"));
        }
        if let Some(d) = &self.detail {
            parts.push(d.clone());
        }
        f.write_str(&parts.join(", "))?;
        if let Some(last) = self.log_tail.last() {
            write!(f, "; device log: {last}")?;
        }
        Ok(())
    }
}

/// A restore failure: where, how, and what the host saw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Failure {
    /// The phase the restore was in.
    pub phase: Phase,
    /// What happened.
    pub cause: Cause,
    /// What the host saw.
    pub evidence: Evidence,
}

impl Failure {
    /// A failure without evidence yet.
    pub fn new(phase: Phase, cause: Cause) -> Self {
        Failure {
            phase,
            cause,
            evidence: Evidence::default(),
        }
    }

    /// With `evidence`.
    pub fn with_evidence(mut self, evidence: Evidence) -> Self {
        self.evidence = evidence;
        self
    }

    /// The number a technician knows: Apple's, or the phone's own status.
    pub fn number(&self) -> i64 {
        classify(self.phase, self.cause)
    }

    /// The number's table entry; for a status the phone reported that the table does not
    /// know, a generic entry carrying that number.
    pub fn explain(&self) -> Entry {
        let number = self.number();
        match explain(number) {
            Some(e) => *e,
            None => Entry {
                number,
                ..OTHER_DEVICE_STATUS
            },
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entry = self.explain();
        write!(
            f,
            "{}: {} (in {}: {}",
            entry.number, entry.meaning, self.phase, self.cause
        )?;
        if !self.evidence.is_empty() {
            write!(f, "; {}", self.evidence)?;
        }
        write!(f, ") → {}", entry.advice)
    }
}

/// Where a restore is, as the policy groups phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Asking for signatures.
    Personalize,
    /// Normal mode, DFU and recovery, before restore mode.
    Boot,
    /// From `bootx` on: the restore ramdisk, restored and ASR, the reboot into iOS.
    RestoreMode,
}

impl Stage {
    /// The stage a phase belongs to.
    pub fn of(phase: Phase) -> Stage {
        match phase {
            Phase::Personalize => Stage::Personalize,
            Phase::EnterRecovery
            | Phase::IbssBootRecovery
            | Phase::IbssBootDfu
            | Phase::IbecBoot
            | Phase::Upload => Stage::Boot,
            Phase::RamdiskBoot | Phase::Restore | Phase::FinalReboot => Stage::RestoreMode,
        }
    }
}

/// The classification table (`ERROR-CODES.md`, "host-side evidence → number"): a failure's
/// phase and cause → the number. 4014 is never a classification: it is the retry ladder's
/// verdict after two ports ([`crate::ladder`]).
pub fn classify(phase: Phase, cause: Cause) -> i64 {
    // The link gave out or the phone stopped answering: 4005 before restore mode, 4013 in it.
    let link = match Stage::of(phase) {
        Stage::Personalize | Stage::Boot => CRITICAL,
        Stage::RestoreMode => LOST_COMMUNICATION,
    };
    match cause {
        Cause::TssRefused { .. } | Cause::TssUnreachable => NOT_SIGNED,
        Cause::DigestMismatch | Cause::Corrupted => CORRUPTED,
        Cause::DeviceStatus { status, .. } => status.get(),
        // Only normal mode pairs: whatever phase it is reported in, restore mode was not
        // reached.
        Cause::PairingRefused => CRITICAL,
        Cause::Usb {
            kind: usb::ErrorKind::NoDevice,
        }
        | Cause::Vanished
        | Cause::Flapped
        | Cause::WrongMode { .. } => DISCONNECTED,
        Cause::Usb { .. }
        | Cause::NoReturn { .. }
        | Cause::Refused
        | Cause::Silent
        | Cause::ConnectionLost
        | Cause::FullSpeed
        | Cause::SlowLink => link,
    }
}

/// Who gives a number its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// One of Apple's numbers, as Finder, iTunes and the Apple Devices app show them.
    Apple,
    /// A `Status` restored reported, kept as the phone's own number.
    Device,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Apple => "Apple",
            Origin::Device => "device status",
        })
    }
}

/// One number: what it means, what usually causes it, what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Entry {
    /// The number.
    pub number: i64,
    /// Whose number it is.
    pub origin: Origin,
    /// What it means, in one line.
    pub meaning: &'static str,
    /// What shops find behind it.
    pub causes: &'static str,
    /// What the technician does next.
    pub advice: &'static str,
}

/// The numbers, their meaning and the advice: the one table (`ERROR-CODES.md`).
pub static TABLE: &[Entry] = &[
    Entry {
        number: DISCONNECTED,
        origin: Origin::Apple,
        meaning: "the phone disconnected unexpectedly during the restore",
        causes: "the cable was pulled or is intermittent, the port or hub dropped the phone, or the phone panicked and came back in recovery",
        advice: "re-seat or swap the cable and retry; if the phone keeps dropping on a good cable, move to another port; a phone that panics on two ports is a board problem",
    },
    Entry {
        number: CRITICAL,
        origin: Origin::Apple,
        meaning: "a critical error during the restore, before restore mode (DFU, recovery, iBSS/iBEC)",
        causes: "cable or port (an upload stalled or failed on the link, the phone did not come back in the expected mode), a command the phone refused; then the logic board",
        advice: "swap the cable and move to another port, then retry from DFU; if it persists on two ports, suspect the logic board",
    },
    Entry {
        number: LOST_COMMUNICATION,
        origin: Origin::Apple,
        meaning: "the phone lost communication or stopped responding during the restore",
        causes: "the cable (a known-bad braided cable gives 4013 every time), the hub or port; then NAND or the board",
        advice: "swap the cable (a short, known-good one), move to another port or plug straight into the computer, and retry; if it follows the phone to a second port, suspect NAND or the board",
    },
    Entry {
        number: HARDWARE,
        origin: Origin::Apple,
        meaning: "the phone stopped responding during the restore, and it persists with the cable and port ruled out",
        causes: "hardware: NAND or the logic board (the phone failed the same way on two good ports)",
        advice: "hardware suspected: stop retrying and send the phone to board-level repair",
    },
    Entry {
        number: CORRUPTED,
        origin: Origin::Apple,
        meaning: "the USB connection corrupted data, or the firmware file is corrupted",
        causes: "an IPSW or component that does not match its digest, data that arrived corrupted (the phone refused a checksum); then a cable that garbles data",
        advice: "re-download the IPSW (restation re-verifies the staged copy first); if the file verifies, swap the cable",
    },
    Entry {
        number: NOT_SIGNED,
        origin: Origin::Apple,
        meaning: "the signing server could not be contacted, or this build is no longer signed for this phone",
        causes: "Apple no longer signs this build (TSS status 94), or the network, a proxy or a hosts file blocks the signing server",
        advice: "this build is no longer signed: restore the newest signed build; otherwise check the network to the signing server; never the cable, do not move the phone",
    },
    Entry {
        number: -1,
        origin: Origin::Device,
        meaning: "restored could not verify the restore",
        causes: "an image or a signature the phone did not accept; a baseband or board fault",
        advice: "re-verify the IPSW and restore again from DFU; if it repeats, suspect the baseband or the board",
    },
    Entry {
        number: 6,
        origin: Origin::Device,
        meaning: "restored could not prepare the disk",
        causes: "NAND storage failure, sometimes left over from an interrupted restore",
        advice: "restore again from DFU; if it repeats, the storage (NAND) is suspect",
    },
    Entry {
        number: 27,
        origin: Origin::Device,
        meaning: "restored could not mount a filesystem",
        causes: "NAND storage or the board",
        advice: "restore again from DFU; if it repeats, the storage (NAND) or the board is suspect",
    },
    Entry {
        number: 50,
        origin: Origin::Device,
        meaning: "the Secure Enclave (SEP) failed during the restore",
        causes: "a SEP firmware the phone would not take, or a SEP/board fault",
        advice: "restore the newest signed build from DFU; if it repeats, the Secure Enclave (board) is suspect",
    },
    Entry {
        number: 51,
        origin: Origin::Device,
        meaning: "the Secure Enclave (SEP) could not be brought up",
        causes: "a SEP or board fault, sometimes a replaced part the SEP does not pair with",
        advice: "restore the newest signed build from DFU; check for replaced parts; if it repeats, the board is suspect",
    },
    Entry {
        number: 53,
        origin: Origin::Device,
        meaning: "the phone's factory data (FDR) could not be validated",
        causes: "a replaced or non-genuine part (Touch ID, Face ID, board) that no longer matches the phone's factory records",
        advice: "refit the original parts (Touch ID / Face ID sensor) and restore again",
    },
    Entry {
        number: 1015,
        origin: Origin::Device,
        meaning: "the baseband (modem) could not be updated",
        causes: "a baseband fault, or a build the baseband refuses",
        advice: "restore the newest signed build; if it repeats, the baseband or the board is suspect",
    },
];

/// How a status restored reported is explained when [`TABLE`] does not list it.
pub static OTHER_DEVICE_STATUS: Entry = Entry {
    number: 0,
    origin: Origin::Device,
    meaning: "restored reported a failure status this table does not know",
    causes: "see the device's last log lines kept with the failure",
    advice: "restore again from DFU; if the same status repeats, keep the log and treat the phone as suspect",
};

/// The entry for `number`, if the table has one.
pub fn explain(number: i64) -> Option<&'static Entry> {
    TABLE.iter().find(|e| e.number == number)
}

/// The table as a Markdown table: what `docs/errors.md` carries (a test keeps it equal).
pub fn markdown_table() -> String {
    let mut out = String::from("| number | from | meaning | typical causes | what to do |\n");
    out.push_str("|---|---|---|---|---|\n");
    for e in TABLE {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            e.number, e.origin, e.meaning, e.causes, e.advice
        ));
    }
    out
}

/// The classification as a Markdown table: one row per kind of cause, one column per stage
/// (what `docs/errors.md` carries; a test keeps it equal).
pub fn markdown_classification() -> String {
    let stages = [
        ("personalize", Phase::Personalize),
        ("normal, DFU, recovery", Phase::Upload),
        ("restore mode", Phase::Restore),
    ];
    let mut out = String::from("| what the host saw |");
    for (name, _) in stages {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(stages.len()));
    out.push('\n');
    for cause in Cause::EXAMPLES {
        out.push_str(&format!("| {cause} |"));
        for (_, phase) in stages {
            out.push_str(&format!(" {} |", classify(phase, cause)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usb(kind: usb::ErrorKind) -> Cause {
        Cause::Usb { kind }
    }

    #[test]
    fn numbers_follow_the_policy() {
        use usb::ErrorKind as K;
        // Device left the bus: 9 in any phase.
        for phase in Phase::ALL {
            assert_eq!(classify(phase, usb(K::NoDevice)), 9, "{phase}");
            assert_eq!(classify(phase, Cause::Vanished), 9, "{phase}");
            let panic = Cause::WrongMode {
                expected: AwaitedMode::Restore,
                got: AwaitedMode::Recovery,
            };
            assert_eq!(classify(phase, panic), 9, "{phase}");
            assert_eq!(classify(phase, Cause::TssRefused { status: 94 }), 3194);
            assert_eq!(classify(phase, Cause::DigestMismatch), 14);
            assert_eq!(classify(phase, Cause::Corrupted), 14);
        }
        // Uploads, refusals and missed deadlines before restore mode: 4005.
        assert_eq!(classify(Phase::Upload, usb(K::Pipe)), 4005);
        assert_eq!(classify(Phase::Upload, usb(K::Io)), 4005);
        assert_eq!(classify(Phase::IbecBoot, Cause::Refused), 4005);
        let no_dfu = Cause::NoReturn {
            awaited: AwaitedMode::Dfu,
        };
        assert_eq!(classify(Phase::IbssBootDfu, no_dfu), 4005);
        // Restore mode: lost, silent, never appeared after bootx: 4013.
        assert_eq!(classify(Phase::Restore, Cause::ConnectionLost), 4013);
        assert_eq!(classify(Phase::Restore, Cause::Silent), 4013);
        let no_ramdisk = Cause::NoReturn {
            awaited: AwaitedMode::Restore,
        };
        assert_eq!(classify(Phase::RamdiskBoot, no_ramdisk), 4013);
        // The phone's own status is kept.
        let status = Cause::device_status(53, Some(3)).unwrap();
        assert_eq!(classify(Phase::Restore, status), 53);
        assert_eq!(Cause::device_status(0, Some(3)), None);
        let minus_one = Cause::device_status(-1, None).unwrap();
        assert_eq!(classify(Phase::Restore, minus_one), -1);
    }

    #[test]
    fn every_classified_number_is_explained_except_unknown_statuses() {
        for phase in Phase::ALL {
            for cause in Cause::EXAMPLES {
                let n = classify(phase, cause);
                assert!(explain(n).is_some(), "{phase} {cause} → {n}");
                assert_ne!(n, HARDWARE, "4014 is a verdict, not a classification");
            }
        }
        let odd = Failure::new(Phase::Restore, Cause::device_status(4242, None).unwrap());
        assert_eq!(odd.number(), 4242);
        assert!(explain(4242).is_none());
        let e = odd.explain();
        assert_eq!((e.number, e.origin), (4242, Origin::Device));
    }

    #[test]
    fn the_table_is_whole_and_has_one_row_per_number() {
        for n in [9, 4005, 4013, 4014, 14, 3194, 6, 27, 50, 51, 53, 1015, -1] {
            let e = explain(n).unwrap_or_else(|| panic!("{n} missing"));
            assert!(!e.meaning.is_empty() && !e.causes.is_empty() && !e.advice.is_empty());
        }
        let mut numbers: Vec<i64> = TABLE.iter().map(|e| e.number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), TABLE.len(), "a number appears twice");
        // The advice technicians are promised.
        assert!(explain(4013).unwrap().advice.contains("swap the cable"));
        assert!(explain(4005)
            .unwrap()
            .advice
            .contains("move to another port"));
        assert!(explain(14).unwrap().advice.contains("re-download the IPSW"));
        assert!(explain(3194)
            .unwrap()
            .advice
            .contains("this build is no longer signed"));
        let md = markdown_table();
        assert_eq!(md.lines().count(), TABLE.len() + 2);
    }

    #[test]
    fn link_blame_and_transience() {
        assert!(usb(usb::ErrorKind::Io).is_transient());
        assert!(!usb(usb::ErrorKind::NoDevice).is_transient());
        assert!(!Cause::Vanished.is_transient());
        assert!(Cause::FullSpeed.implicates_link() && Cause::FullSpeed.is_link_quality());
        assert!(!Cause::TssRefused { status: 94 }.implicates_link());
        assert!(!Cause::DigestMismatch.implicates_link());
        assert!(!Cause::device_status(6, None).unwrap().implicates_link());
    }

    /// A new kind of cause must be added to [`Cause::EXAMPLES`] (the matrix and the docs
    /// iterate over it): this match stops compiling, and the test fails, until it is.
    #[test]
    fn examples_cover_every_kind_of_cause() {
        fn kind(c: Cause) -> usize {
            match c {
                Cause::Usb { .. } => 0,
                Cause::Vanished => 1,
                Cause::Flapped => 2,
                Cause::NoReturn { .. } => 3,
                Cause::WrongMode { .. } => 4,
                Cause::Refused => 5,
                Cause::PairingRefused => 6,
                Cause::Silent => 7,
                Cause::ConnectionLost => 8,
                Cause::DeviceStatus { .. } => 9,
                Cause::TssRefused { .. } => 10,
                Cause::TssUnreachable => 11,
                Cause::DigestMismatch => 12,
                Cause::Corrupted => 13,
                Cause::FullSpeed => 14,
                Cause::SlowLink => 15,
            }
        }
        let mut seen: Vec<usize> = Cause::EXAMPLES.into_iter().map(kind).collect();
        seen.dedup();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn link_speed_and_throughput_signals() {
        assert_eq!(
            Cause::of_link_speed(usb::Speed::Full),
            Some(Cause::FullSpeed)
        );
        assert_eq!(
            Cause::of_link_speed(usb::Speed::Low),
            Some(Cause::FullSpeed)
        );
        assert_eq!(Cause::of_link_speed(usb::Speed::High), None);
        assert_eq!(Cause::of_link_speed(usb::Speed::Unknown), None);
        assert_eq!(Cause::of_throughput(1_000, None), None);
        assert_eq!(Cause::of_throughput(1_000, Some(0)), None);
        assert_eq!(Cause::of_throughput(25, Some(100)), None);
        assert_eq!(Cause::of_throughput(24, Some(100)), Some(Cause::SlowLink));
        assert_eq!(Cause::of_throughput(u64::MAX, Some(u64::MAX)), None);
        assert_eq!(Cause::of_throughput(0, Some(1)), Some(Cause::SlowLink));
    }

    #[test]
    fn evidence_keeps_the_last_log_lines_and_reads_well() {
        let log: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let ev = Evidence::default()
            .usb_error(usb::ErrorKind::Pipe)
            .log(&log)
            .speed(usb::Speed::Full)
            .throughput(1_000, Some(30_000_000))
            .bytes(4096)
            .component("iBEC");
        assert_eq!(ev.log_tail.len(), LOG_LINES);
        assert_eq!(ev.log_tail.last().map(String::as_str), Some("line 49"));
        assert_eq!(ev.log_tail.first().map(String::as_str), Some("line 30"));
        let text = ev.to_string();
        assert!(
            text.contains("USB pipe") && text.contains("during iBEC"),
            "{text}"
        );
        assert!(text.contains("line 49"), "{text}");
        let f = Failure::new(Phase::Upload, usb(usb::ErrorKind::Pipe)).with_evidence(ev);
        let shown = f.to_string();
        assert!(shown.starts_with("4005: "), "{shown}");
        assert!(shown.contains("in upload"), "{shown}");
    }

    #[test]
    fn failures_serialize_for_the_history() {
        let f = Failure::new(Phase::Restore, Cause::device_status(6, Some(2)).unwrap())
            .with_evidence(Evidence::default().restored(6, Some(2)));
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["phase"], "restore");
        assert_eq!(v["cause"]["cause"], "device-status");
        assert_eq!(v["cause"]["status"], 6);
        assert_eq!(v["evidence"]["amr_error"], 2);
        let stall = Failure::new(Phase::Upload, usb(usb::ErrorKind::Pipe));
        let v = serde_json::to_value(&stall).unwrap();
        assert_eq!(v["cause"]["cause"], "usb");
        assert_eq!(v["cause"]["kind"], "Pipe");
    }
}
