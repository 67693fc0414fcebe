//! Running a [`FaultSpec`] on one phone: which fault strikes now, counted and seeded.
//!
//! The spec says *where* (a [`Point`]), *what* (an [`Action`]) and *when* (a [`Trigger`]);
//! the phone asks at three kinds of moments, and each action belongs to one of them:
//!
//! | moment | asked by | actions |
//! |---|---|---|
//! | a transfer at some points ([`Faults::on_transfer`]) | every USB transfer the mode handles | unplug, stall, io-error, timeout, corrupt, refuse, slow; panic and flap with a trigger, or at a command point (`go:panic`) |
//! | an arrival in a mode ([`Faults::on_arrival`]) | each enumeration | full-speed; panic and flap without a trigger at a mode point or `link` (they strike a moment after the phone arrives) |
//! | a requested mode change ([`Faults::on_mode_change`]) | DFU manifest, `go`, `bootx`, EnterRecovery, the reboot after a restore's final status | never-returns |
//!
//! What the host sees (the phone applies the strongest action that struck a transfer):
//!
//! | action | symptom |
//! |---|---|
//! | unplug | NO_DEVICE on this and every later transfer of that enumeration, a `Left` event; the phone comes back in the same mode after `Timings::replug` (the technician re-seats the cable; `None` keeps it out) |
//! | panic | NO_DEVICE, `Left`; back in recovery (iBoot) after `Timings::after_panic` |
//! | flap | NO_DEVICE (or, spontaneous, just `Left`); back in the same mode after `Timings::flap` |
//! | timeout | `ErrorKind::Timeout` once the host's timeout has passed in virtual time |
//! | stall | PIPE; DFU enters dfuERROR (errSTALLEDPKT) |
//! | io-error | `ErrorKind::Io` (EPROTO); the data is lost |
//! | refuse | recovery: the command stalls (PIPE); DFU: dfuERROR with errTARGET |
//! | corrupt | the transfer succeeds with one byte changed: DFU's CRC check fails, a recovery upload's recorded hash differs |
//! | slow | transfers at the point move at that rate in virtual time |
//! | full-speed | the enumeration is at `Speed::Full` (≈1 MB/s instead of ≈40 MB/s) |
//! | never-returns | the requested mode change leaves the bus and never arrives |
//!
//! `#N` counts transfers (or arrivals, or mode changes) at the point from 1; `xN` caps how many
//! times a fault strikes. Progress and byte triggers strike on the transfer that crosses the
//! mark, once per upload.

use std::collections::HashMap;

use crate::fault::{Action, Fault, FaultSpec, Point, Trigger};
use crate::rng::SplitMix64;

/// Where a transfer stands in the upload it belongs to: bytes before it, after it, and the
/// upload's (expected) total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Bytes of the upload before this transfer.
    pub before: u64,
    /// Bytes after it.
    pub after: u64,
    /// The total the upload is expected to reach.
    pub total: u64,
}

/// One strike, kept for the record (tests, dashboard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strike {
    /// Index of the fault in the spec.
    pub index: usize,
    /// The fault.
    pub fault: Fault,
}

/// The fault state of one phone.
#[derive(Debug, Clone)]
pub struct Faults {
    spec: FaultSpec,
    struck: Vec<u32>,
    transfers: HashMap<Point, u32>,
    arrivals: HashMap<Point, u32>,
    changes: HashMap<Point, u32>,
    rng: SplitMix64,
    history: Vec<Strike>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Moment {
    Transfer,
    Arrival,
    ModeChange,
}

fn moment_of(fault: &Fault) -> Moment {
    match fault.action {
        Action::FullSpeed => Moment::Arrival,
        Action::NeverReturns => Moment::ModeChange,
        // Without a trigger, a panic or flap at a mode (or the link) is spontaneous; at a
        // command (`go:panic`, `bootx:panic`) it strikes that command's transfer.
        Action::Panic | Action::Flap
            if fault.trigger == Trigger::Immediately
                && matches!(
                    fault.point,
                    Point::Link | Point::Normal | Point::Recovery | Point::Dfu | Point::RestoreMode
                ) =>
        {
            Moment::Arrival
        }
        _ => Moment::Transfer,
    }
}

impl Faults {
    /// The state for `spec`, with `seed` for chance triggers.
    pub fn new(spec: FaultSpec, seed: u64) -> Self {
        Self {
            struck: vec![0; spec.faults.len()],
            spec,
            transfers: HashMap::new(),
            arrivals: HashMap::new(),
            changes: HashMap::new(),
            rng: SplitMix64::derive(seed, "faults"),
            history: Vec::new(),
        }
    }

    /// No faults.
    pub fn none() -> Self {
        Self::new(FaultSpec::default(), 0)
    }

    /// The spec.
    pub fn spec(&self) -> &FaultSpec {
        &self.spec
    }

    /// Every strike so far, in order.
    pub fn history(&self) -> &[Strike] {
        &self.history
    }

    /// Whether any fault at `point` acts on transfers with a progress or byte trigger (the
    /// caller then needs a [`Span`]).
    pub fn wants_span(&self, point: Point) -> bool {
        self.spec
            .at(point)
            .any(|f| matches!(f.trigger, Trigger::Progress(_) | Trigger::Byte(_)))
    }

    fn decide(&mut self, index: usize, fault: Fault, counter: u32, span: Option<Span>) -> bool {
        let hit = match fault.trigger {
            Trigger::Immediately => true,
            Trigger::Transfer(n) => counter == n,
            Trigger::Chance(ppm) => self.rng.chance(ppm),
            Trigger::Progress(_) | Trigger::Byte(_) => match span {
                Some(s) => {
                    fault.trigger.reached_at(s.after, s.total)
                        && (s.before == 0 && s.after > 0 && fault.trigger.reached_at(0, s.total)
                            || !fault.trigger.reached_at(s.before, s.total))
                }
                None => false,
            },
        };
        if !hit {
            return false;
        }
        let struck = self.struck.get(index).copied().unwrap_or(0);
        if fault.count.is_some_and(|c| struck >= c) {
            return false;
        }
        if let Some(s) = self.struck.get_mut(index) {
            *s += 1;
        }
        self.history.push(Strike { index, fault });
        true
    }

    fn ask(&mut self, moment: Moment, points: &[Point], span: Option<Span>) -> Vec<Action> {
        let counters = match moment {
            Moment::Transfer => &mut self.transfers,
            Moment::Arrival => &mut self.arrivals,
            Moment::ModeChange => &mut self.changes,
        };
        let mut counts = Vec::with_capacity(points.len());
        for p in points {
            let c = counters.entry(*p).or_insert(0);
            *c = c.saturating_add(1);
            counts.push((*p, *c));
        }
        let mut out = Vec::new();
        for index in 0..self.spec.faults.len() {
            let Some(fault) = self.spec.faults.get(index).copied() else {
                continue;
            };
            if moment_of(&fault) != moment {
                continue;
            }
            let Some(&(_, counter)) = counts.iter().find(|(p, _)| *p == fault.point) else {
                continue;
            };
            if self.decide(index, fault, counter, span) {
                out.push(fault.action);
            }
        }
        out
    }

    /// A transfer at `points` (e.g. `[Link, Dfu, DfuUpload]`): the actions that strike it, in
    /// spec order.
    pub fn on_transfer(&mut self, points: &[Point], span: Option<Span>) -> Vec<Action> {
        if self.spec.is_empty() {
            return Vec::new();
        }
        self.ask(Moment::Transfer, points, span)
    }

    /// The phone enumerates at `points` (`[Link, Recovery]`): full-speed, and spontaneous
    /// panic/flap.
    pub fn on_arrival(&mut self, points: &[Point]) -> Vec<Action> {
        if self.spec.is_empty() {
            return Vec::new();
        }
        self.ask(Moment::Arrival, points, None)
    }

    /// A requested mode change at `point`: whether the phone never comes back.
    pub fn on_mode_change(&mut self, point: Point) -> bool {
        if self.spec.is_empty() {
            return false;
        }
        self.ask(Moment::ModeChange, &[point], None)
            .contains(&Action::NeverReturns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(spec: &str) -> Faults {
        Faults::new(spec.parse().unwrap(), 1)
    }

    #[test]
    fn transfer_number_and_count() {
        let mut f = faults("dfu-upload:stall@#3,recovery:io-errorx2");
        let p = [Point::Link, Point::Dfu, Point::DfuUpload];
        assert!(f.on_transfer(&p, None).is_empty());
        assert!(f.on_transfer(&p, None).is_empty());
        assert_eq!(f.on_transfer(&p, None), [Action::Stall]);
        assert!(f.on_transfer(&p, None).is_empty());
        let r = [Point::Link, Point::Recovery];
        assert_eq!(f.on_transfer(&r, None), [Action::IoError]);
        assert_eq!(f.on_transfer(&r, None), [Action::IoError]);
        assert!(f.on_transfer(&r, None).is_empty());
        assert_eq!(f.history().len(), 3);
    }

    #[test]
    fn progress_strikes_on_the_crossing_transfer_once_per_upload() {
        let mut f = faults("dfu-upload:unplug@50%");
        let p = [Point::DfuUpload];
        let span = |before, after| {
            Some(Span {
                before,
                after,
                total: 100,
            })
        };
        assert!(f.on_transfer(&p, span(0, 40)).is_empty());
        assert_eq!(f.on_transfer(&p, span(40, 60)), [Action::Unplug]);
        assert!(f.on_transfer(&p, span(60, 80)).is_empty());
        // The next upload crosses it again.
        assert!(f.on_transfer(&p, span(0, 40)).is_empty());
        assert_eq!(f.on_transfer(&p, span(40, 60)), [Action::Unplug]);
        let mut f = faults("recovery-upload:stall@0%");
        assert_eq!(
            f.on_transfer(&[Point::RecoveryUpload], span(0, 10)),
            [Action::Stall]
        );
        assert!(f
            .on_transfer(&[Point::RecoveryUpload], span(10, 20))
            .is_empty());
    }

    #[test]
    fn chances_are_seeded_and_moments_separate() {
        let run = || {
            let mut f = faults("link:io-error@~10%");
            (0..1000)
                .map(|_| !f.on_transfer(&[Point::Link], None).is_empty())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((50..150).contains(&hits), "{hits}");

        let mut f = faults("recovery:full-speed,recovery:panic,bootx:never-returns");
        assert!(f.on_transfer(&[Point::Recovery], None).is_empty());
        assert_eq!(
            f.on_arrival(&[Point::Link, Point::Recovery]),
            [Action::FullSpeed, Action::Panic]
        );
        assert!(!f.on_mode_change(Point::Go));
        assert!(f.on_mode_change(Point::Bootx));
    }
}
