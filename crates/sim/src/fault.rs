//! The fault language: what can go wrong with a virtual phone, where, and when.
//!
//! One small grammar is shared by the CLI (`--fault 3=asr:stall@30%`), the tests and the demo,
//! so a scenario written once reads the same everywhere. `docs/faults.md` is the user-facing
//! description; this module is the authority.
//!
//! ```text
//! spec    := fault { "," fault }
//! fault   := point ":" action [ "@" trigger ] [ "x" count ]
//! trigger := PERCENT "%"          progress of the transfer at that point (0–100, decimals ok)
//!          | SIZE                 after that many bytes of the transfer (512, 4KiB, 2MiB, 1GiB)
//!          | "#" N                on the N-th transfer (1-based) at that point
//!          | "~" PERCENT "%"      on each transfer with that chance (seeded, deterministic)
//! count   := N                    strike at most N times (default: every time it triggers)
//! action  := unplug | stall | io-error | timeout | corrupt | panic | flap | never-returns
//!          | refuse | full-speed | slow=SIZE/s | status=INTEGER
//! ```
//!
//! A point/action pair that a phone cannot produce (`final-status:full-speed`) is an error, not
//! a silently ignored fault: see [`Point::allows`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where in a phone's life the fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Point {
    /// The cable and port: any mode, any transfer.
    Link,
    /// Normal mode: the usbmux link and lockdownd.
    Normal,
    /// A lockdownd connection or request.
    Lockdown,
    /// The lockdown `EnterRecovery` request and the re-enumeration that follows it.
    EnterRecovery,
    /// Recovery mode (iBoot): commands, getenv, the device itself.
    Recovery,
    /// A file upload to recovery mode (control 0x41 + bulk OUT).
    RecoveryUpload,
    /// DFU mode (SecureROM): the device itself and its state machine.
    Dfu,
    /// A DFU upload (DNLOAD blocks, GETSTATUS, the suffix).
    DfuUpload,
    /// The iBoot `go` command (iBEC → recovery).
    Go,
    /// The iBoot `bootx` command (recovery → restore mode).
    Bootx,
    /// Restore mode: the phone running the restore ramdisk.
    RestoreMode,
    /// The restored conversation (data requests, progress).
    Restored,
    /// The ASR stream of the OS image.
    Asr,
    /// The final `StatusMsg` restored sends.
    FinalStatus,
}

impl Point {
    /// Every point, in the order a restore meets them.
    pub const ALL: [Point; 14] = [
        Point::Link,
        Point::Normal,
        Point::Lockdown,
        Point::EnterRecovery,
        Point::Recovery,
        Point::RecoveryUpload,
        Point::Dfu,
        Point::DfuUpload,
        Point::Go,
        Point::Bootx,
        Point::RestoreMode,
        Point::Restored,
        Point::Asr,
        Point::FinalStatus,
    ];

    /// The name used in the fault language.
    pub fn name(self) -> &'static str {
        match self {
            Point::Link => "link",
            Point::Normal => "normal",
            Point::Lockdown => "lockdown",
            Point::EnterRecovery => "enter-recovery",
            Point::Recovery => "recovery",
            Point::RecoveryUpload => "recovery-upload",
            Point::Dfu => "dfu",
            Point::DfuUpload => "dfu-upload",
            Point::Go => "go",
            Point::Bootx => "bootx",
            Point::RestoreMode => "restore-mode",
            Point::Restored => "restored",
            Point::Asr => "asr",
            Point::FinalStatus => "final-status",
        }
    }

    fn from_name(name: &str) -> Option<Point> {
        Point::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the point moves a stream of bytes, so that a progress or byte trigger means
    /// something there.
    pub fn is_transfer(self) -> bool {
        matches!(
            self,
            Point::Link | Point::RecoveryUpload | Point::DfuUpload | Point::Restored | Point::Asr
        )
    }

    /// Whether a phone can produce `action` at this point. This is the one table of which
    /// faults make sense where.
    pub fn allows(self, action: Action) -> bool {
        use Action as A;
        use Point as P;
        match action {
            // Pulling the cable and transfer-level USB errors can happen anywhere a transfer
            // happens; the final status is a message, not a place with its own transfers.
            A::Unplug | A::Stall | A::IoError | A::Timeout => self != P::FinalStatus,
            // Bytes that arrive wrong: only where bytes are checked.
            A::Corrupt => matches!(
                self,
                P::Link | P::RecoveryUpload | P::DfuUpload | P::Restored | P::Asr
            ),
            // A panic drops the phone off the bus and brings it back in recovery.
            A::Panic => matches!(
                self,
                P::Normal | P::Recovery | P::Go | P::Bootx | P::RestoreMode | P::Restored | P::Asr
            ),
            // Leaving and coming back in the same mode, with nothing requested.
            A::Flap => matches!(
                self,
                P::Link | P::Normal | P::Recovery | P::Dfu | P::RestoreMode
            ),
            // A requested mode change after which the phone never shows up again.
            A::NeverReturns => matches!(
                self,
                P::EnterRecovery | P::DfuUpload | P::Go | P::Bootx | P::RestoreMode
            ),
            // The device answers but says no.
            A::Refuse => matches!(
                self,
                P::Lockdown | P::EnterRecovery | P::Recovery | P::Dfu | P::DfuUpload | P::Restored
            ),
            // Enumerating at 12 Mb/s: damaged data lines, seen at enumeration in a mode.
            A::FullSpeed => matches!(
                self,
                P::Link | P::Normal | P::Recovery | P::Dfu | P::RestoreMode
            ),
            A::Slow { .. } => self.is_transfer(),
            A::Status(_) => self == P::FinalStatus,
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The cable is pulled: the device leaves the bus (NO_DEVICE on the next transfer).
    Unplug,
    /// The endpoint stalls (PIPE).
    Stall,
    /// A transfer fails with a protocol error (EPROTO), as a bad cable produces.
    IoError,
    /// A transfer never completes within its timeout.
    Timeout,
    /// Bytes arrive changed.
    Corrupt,
    /// The phone panics: it leaves the bus and returns in recovery mode.
    Panic,
    /// The phone leaves the bus and comes back in the same mode a moment later.
    Flap,
    /// After a requested mode change the phone never re-enumerates.
    NeverReturns,
    /// The phone answers with a refusal (lockdown error, DFU status error, command refused).
    Refuse,
    /// The phone enumerates at full speed (12 Mb/s) instead of high speed.
    FullSpeed,
    /// The link carries at most this many bytes per second.
    Slow {
        /// Throughput cap in bytes per second; never zero.
        bytes_per_sec: u64,
    },
    /// The final StatusMsg carries this status instead of 0.
    Status(i64),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Unplug => f.write_str("unplug"),
            Action::Stall => f.write_str("stall"),
            Action::IoError => f.write_str("io-error"),
            Action::Timeout => f.write_str("timeout"),
            Action::Corrupt => f.write_str("corrupt"),
            Action::Panic => f.write_str("panic"),
            Action::Flap => f.write_str("flap"),
            Action::NeverReturns => f.write_str("never-returns"),
            Action::Refuse => f.write_str("refuse"),
            Action::FullSpeed => f.write_str("full-speed"),
            Action::Slow { bytes_per_sec } => write!(f, "slow={}/s", Size(*bytes_per_sec)),
            Action::Status(n) => write!(f, "status={n}"),
        }
    }
}

/// Parts per million: the unit of percentages in the language (`12.5%` is 125 000 ppm).
pub type Ppm = u32;

/// When, at its point, the fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// As soon as the point is reached.
    #[default]
    Immediately,
    /// When the transfer at that point has reached this share of its total size.
    Progress(Ppm),
    /// After this many bytes of the transfer at that point.
    Byte(u64),
    /// On this transfer (1-based) at that point.
    Transfer(u32),
    /// On each transfer at that point with this chance, from the phone's seeded generator.
    Chance(Ppm),
}

impl Trigger {
    /// Whether, at `done` bytes of a transfer of `total` bytes, a progress or byte trigger has
    /// been reached. Other triggers are decided elsewhere and answer `false`.
    pub fn reached_at(self, done: u64, total: u64) -> bool {
        match self {
            Trigger::Progress(ppm) => {
                // done/total >= ppm/1e6, in integers without overflow.
                u128::from(done) * 1_000_000 >= u128::from(total) * u128::from(ppm)
            }
            Trigger::Byte(n) => done >= n,
            _ => false,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Immediately => Ok(()),
            Trigger::Progress(ppm) => write!(f, "@{}%", Percent(*ppm)),
            Trigger::Byte(n) => write!(f, "@{}", Size(*n)),
            Trigger::Transfer(n) => write!(f, "@#{n}"),
            Trigger::Chance(ppm) => write!(f, "@~{}%", Percent(*ppm)),
        }
    }
}

/// One fault: where, what, when, how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fault {
    pub point: Point,
    pub action: Action,
    pub trigger: Trigger,
    /// Strike at most `count` times; `None` means every time the trigger says so.
    pub count: Option<u32>,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}{}", self.point, self.action, self.trigger)?;
        if let Some(n) = self.count {
            write!(f, "x{n}")?;
        }
        Ok(())
    }
}

/// A list of faults for one phone (or one port), as written after `--fault PORT=`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultSpec {
    pub faults: Vec<Fault>,
}

impl FaultSpec {
    /// The faults set at `point`, in the order they were written.
    pub fn at(&self, point: Point) -> impl Iterator<Item = &Fault> {
        self.faults.iter().filter(move |f| f.point == point)
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, fault) in self.faults.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{fault}")?;
        }
        Ok(())
    }
}

/// A fault spec that does not parse, with the fault it was reading and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    #[error("empty fault spec")]
    Empty,
    #[error("fault {fault:?}: expected POINT:ACTION (e.g. asr:stall@30%)")]
    MissingColon { fault: String },
    #[error("fault {fault:?}: unknown point {point:?} (known: {known})", known = known_points())]
    UnknownPoint { fault: String, point: String },
    #[error("fault {fault:?}: unknown action {action:?} (known: unplug, stall, io-error, timeout, corrupt, panic, flap, never-returns, refuse, full-speed, slow=SIZE/s, status=N)")]
    UnknownAction { fault: String, action: String },
    #[error("fault {fault:?}: bad {what} {text:?}: {why}")]
    BadValue {
        fault: String,
        what: &'static str,
        text: String,
        why: &'static str,
    },
    #[error("fault {fault:?}: a phone cannot {action} at {point}")]
    NotAllowed {
        fault: String,
        point: Point,
        action: String,
    },
    #[error("fault {fault:?}: a {trigger} trigger needs a point that moves data (link, recovery-upload, dfu-upload, restored, asr)")]
    TriggerNeedsTransfer {
        fault: String,
        trigger: &'static str,
    },
}

fn known_points() -> String {
    Point::ALL.map(Point::name).join(", ")
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(FaultSpecError::Empty);
        }
        let faults = s
            .split(',')
            .map(|f| f.trim().parse::<Fault>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FaultSpec { faults })
    }
}

impl FromStr for Fault {
    type Err = FaultSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fault = text.to_string();
        if text.is_empty() {
            return Err(FaultSpecError::Empty);
        }
        let (point_text, rest) =
            text.split_once(':')
                .ok_or_else(|| FaultSpecError::MissingColon {
                    fault: fault.clone(),
                })?;
        let point = Point::from_name(point_text).ok_or_else(|| FaultSpecError::UnknownPoint {
            fault: fault.clone(),
            point: point_text.to_string(),
        })?;

        // The count is a trailing `xN` after the action or trigger.
        let (rest, count) = split_count(rest, &fault)?;
        let (action_text, trigger_text) = match rest.split_once('@') {
            Some((a, t)) => (a, Some(t)),
            None => (rest, None),
        };
        let action = parse_action(action_text, &fault)?;
        let trigger = match trigger_text {
            None => Trigger::Immediately,
            Some(t) => parse_trigger(t, &fault)?,
        };

        if !point.allows(action) {
            return Err(FaultSpecError::NotAllowed {
                fault,
                point,
                action: action.to_string(),
            });
        }
        let needs_transfer = match trigger {
            Trigger::Progress(_) => Some("progress"),
            Trigger::Byte(_) => Some("byte"),
            Trigger::Immediately | Trigger::Transfer(_) | Trigger::Chance(_) => None,
        };
        if let Some(trigger) = needs_transfer {
            if !point.is_transfer() {
                return Err(FaultSpecError::TriggerNeedsTransfer { fault, trigger });
            }
        }
        Ok(Fault {
            point,
            action,
            trigger,
            count,
        })
    }
}

fn bad(fault: &str, what: &'static str, text: &str, why: &'static str) -> FaultSpecError {
    FaultSpecError::BadValue {
        fault: fault.to_string(),
        what,
        text: text.to_string(),
        why,
    }
}

/// Splits a trailing `xN` count off `rest` (`stall@30%x2` → `stall@30%`, 2). Action names
/// never end in `x` followed by digits, so the split is unambiguous.
fn split_count<'a>(rest: &'a str, fault: &str) -> Result<(&'a str, Option<u32>), FaultSpecError> {
    let Some(pos) = rest.rfind('x') else {
        return Ok((rest, None));
    };
    let digits = &rest[pos + 1..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok((rest, None));
    }
    let n: u32 = digits
        .parse()
        .map_err(|_| bad(fault, "count", digits, "not a number that fits 32 bits"))?;
    if n == 0 {
        return Err(bad(
            fault,
            "count",
            digits,
            "a fault that strikes 0 times is no fault",
        ));
    }
    Ok((&rest[..pos], Some(n)))
}

fn parse_action(text: &str, fault: &str) -> Result<Action, FaultSpecError> {
    let action = match text {
        "unplug" => Action::Unplug,
        "stall" => Action::Stall,
        "io-error" => Action::IoError,
        "timeout" => Action::Timeout,
        "corrupt" => Action::Corrupt,
        "panic" => Action::Panic,
        "flap" => Action::Flap,
        "never-returns" => Action::NeverReturns,
        "refuse" => Action::Refuse,
        "full-speed" => Action::FullSpeed,
        _ => {
            if let Some(v) = text.strip_prefix("status=") {
                let n: i64 = v
                    .parse()
                    .map_err(|_| bad(fault, "status", v, "expected an integer such as 6 or -1"))?;
                Action::Status(n)
            } else if let Some(v) = text.strip_prefix("slow=") {
                let size = v
                    .strip_suffix("/s")
                    .ok_or_else(|| bad(fault, "rate", v, "expected SIZE/s, e.g. 2MiB/s"))?;
                let bytes_per_sec = parse_size(size)
                    .ok_or_else(|| bad(fault, "rate", v, "expected SIZE/s, e.g. 2MiB/s"))?;
                if bytes_per_sec == 0 {
                    return Err(bad(
                        fault,
                        "rate",
                        v,
                        "a rate of 0 never finishes: use timeout",
                    ));
                }
                Action::Slow { bytes_per_sec }
            } else {
                return Err(FaultSpecError::UnknownAction {
                    fault: fault.to_string(),
                    action: text.to_string(),
                });
            }
        }
    };
    Ok(action)
}

fn parse_trigger(text: &str, fault: &str) -> Result<Trigger, FaultSpecError> {
    if let Some(n) = text.strip_prefix('#') {
        let n: u32 = n
            .parse()
            .map_err(|_| bad(fault, "transfer number", n, "expected #N with N ≥ 1"))?;
        if n == 0 {
            return Err(bad(fault, "transfer number", "0", "transfers count from 1"));
        }
        return Ok(Trigger::Transfer(n));
    }
    if let Some(p) = text.strip_prefix('~') {
        let pct = p
            .strip_suffix('%')
            .ok_or_else(|| bad(fault, "chance", p, "expected ~N%, e.g. ~1%"))?;
        let ppm = parse_percent(pct).ok_or_else(|| {
            bad(
                fault,
                "chance",
                p,
                "expected a percentage 0–100 with at most 4 decimals",
            )
        })?;
        return Ok(Trigger::Chance(ppm));
    }
    if let Some(pct) = text.strip_suffix('%') {
        let ppm = parse_percent(pct).ok_or_else(|| {
            bad(
                fault,
                "progress",
                text,
                "expected a percentage 0–100 with at most 4 decimals",
            )
        })?;
        return Ok(Trigger::Progress(ppm));
    }
    parse_size(text)
        .map(Trigger::Byte)
        .ok_or_else(|| bad(fault, "trigger", text, "expected N%, SIZE, #N or ~N%"))
}

/// `12.5` → 125 000 ppm. At most four decimals, at most 100.
fn parse_percent(text: &str) -> Option<Ppm> {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int.is_empty() || int.len() > 3 || frac.len() > 4 {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u32 = int.parse().ok()?;
    let mut frac_ppm: u32 = 0;
    for (i, d) in frac.bytes().enumerate() {
        // Four decimals of a percent are units of 1 ppm: 0.0001% = 1 ppm.
        frac_ppm += u32::from(d - b'0') * 10u32.pow(3 - i as u32);
    }
    let ppm = int.checked_mul(10_000)?.checked_add(frac_ppm)?;
    (ppm <= 1_000_000).then_some(ppm)
}

/// `4096`, `4KiB`, `2MiB`, `1GiB`, `10KB`, `3MB`, `1GB` → bytes.
fn parse_size(text: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 7] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1_000),
        ("B", 1),
    ];
    let (digits, mult) = UNITS
        .iter()
        .find_map(|(suffix, mult)| text.strip_suffix(suffix).map(|d| (d, *mult)))
        .unwrap_or((text, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Displays a byte count with the largest binary unit that divides it exactly.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (suffix, mult) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n != 0 && n % mult == 0 {
                return write!(f, "{}{suffix}", n / mult);
            }
        }
        write!(f, "{n}")
    }
}

/// Displays ppm as a percentage with no trailing zeros (125 000 → `12.5`).
struct Percent(Ppm);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int = self.0 / 10_000;
        let frac = self.0 % 10_000;
        if frac == 0 {
            return write!(f, "{int}");
        }
        let digits = format!("{frac:04}");
        write!(f, "{int}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Fault {
        s.parse().unwrap()
    }

    #[test]
    fn the_examples_from_the_issue_parse() {
        let cases = [
            (
                "dfu-upload:unplug@50%",
                Point::DfuUpload,
                Action::Unplug,
                Trigger::Progress(500_000),
            ),
            (
                "asr:stall@30%",
                Point::Asr,
                Action::Stall,
                Trigger::Progress(300_000),
            ),
            (
                "recovery:full-speed",
                Point::Recovery,
                Action::FullSpeed,
                Trigger::Immediately,
            ),
            (
                "restore-mode:panic",
                Point::RestoreMode,
                Action::Panic,
                Trigger::Immediately,
            ),
            (
                "final-status:status=6",
                Point::FinalStatus,
                Action::Status(6),
                Trigger::Immediately,
            ),
            (
                "normal:flap",
                Point::Normal,
                Action::Flap,
                Trigger::Immediately,
            ),
            (
                "asr:corrupt@10%",
                Point::Asr,
                Action::Corrupt,
                Trigger::Progress(100_000),
            ),
            (
                "bootx:never-returns",
                Point::Bootx,
                Action::NeverReturns,
                Trigger::Immediately,
            ),
        ];
        for (text, point, action, trigger) in cases {
            let f = parse(text);
            assert_eq!(
                (f.point, f.action, f.trigger, f.count),
                (point, action, trigger, None)
            );
            assert_eq!(f.to_string(), text, "canonical form of {text}");
        }
    }

    #[test]
    fn counts_sizes_chances_and_lists() {
        let spec: FaultSpec = "asr:stall@30%x2, link:io-error@~0.5%,recovery-upload:unplug@4MiB,dfu-upload:stall@#3x1,link:slow=2MiB/s,final-status:status=-1"
            .parse()
            .unwrap();
        assert_eq!(spec.faults.len(), 6);
        assert_eq!(spec.faults[0].count, Some(2));
        assert_eq!(spec.faults[1].trigger, Trigger::Chance(5_000));
        assert_eq!(spec.faults[2].trigger, Trigger::Byte(4 << 20));
        assert_eq!(spec.faults[3].trigger, Trigger::Transfer(3));
        assert_eq!(spec.faults[3].count, Some(1));
        assert_eq!(
            spec.faults[4].action,
            Action::Slow {
                bytes_per_sec: 2 << 20
            }
        );
        assert_eq!(spec.faults[5].action, Action::Status(-1));
        assert_eq!(
            spec.to_string(),
            "asr:stall@30%x2,link:io-error@~0.5%,recovery-upload:unplug@4MiB,dfu-upload:stall@#3x1,link:slow=2MiB/s,final-status:status=-1"
        );
        assert_eq!(spec.at(Point::Link).count(), 2);
    }

    #[test]
    fn impossible_faults_are_refused_with_a_reason() {
        let err = "final-status:full-speed".parse::<Fault>().unwrap_err();
        assert!(matches!(
            err,
            FaultSpecError::NotAllowed {
                point: Point::FinalStatus,
                ..
            }
        ));
        assert!(
            err.to_string()
                .contains("cannot full-speed at final-status"),
            "{err}"
        );

        let err = "recovery:unplug@50%".parse::<Fault>().unwrap_err();
        assert!(
            matches!(err, FaultSpecError::TriggerNeedsTransfer { .. }),
            "{err}"
        );

        for bad in [
            "",
            "asr",
            "usb:stall",
            "asr:explode",
            "asr:stall@101%",
            "asr:stall@12.34567%",
            "asr:stall@#0",
            "asr:stall@lots",
            "asr:stallx0",
            "link:slow=0/s",
            "link:slow=fast",
            "final-status:status=six",
            "asr:stall@99999999999999999999999GiB",
        ] {
            assert!(bad.parse::<FaultSpec>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn progress_trigger_is_exact_at_the_boundary() {
        let t = Trigger::Progress(500_000);
        assert!(!t.reached_at(49, 100));
        assert!(t.reached_at(50, 100));
        assert!(t.reached_at(u64::MAX / 2 + 1, u64::MAX));
        assert!(Trigger::Byte(10).reached_at(10, 100));
        assert!(!Trigger::Transfer(1).reached_at(100, 100));
    }

    #[test]
    fn every_allowed_pair_round_trips() {
        let actions = [
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
                bytes_per_sec: 1500,
            },
            Action::Status(6),
        ];
        let mut allowed = 0;
        for point in Point::ALL {
            for action in actions {
                let f = Fault {
                    point,
                    action,
                    trigger: Trigger::Immediately,
                    count: None,
                };
                let parsed = f.to_string().parse::<Fault>();
                if point.allows(action) {
                    allowed += 1;
                    assert_eq!(parsed, Ok(f));
                } else {
                    assert!(parsed.is_err(), "{f} should be refused");
                }
            }
        }
        assert!(allowed > 50, "the table allows {allowed} pairs");
    }
}
