//! How long a whole transfer to the phone may take: a DFU download ([`crate::dfu`]) or a
//! recovery upload ([`crate::recovery`]), from its first transfer to its last.
//!
//! Each transfer already has its own timeout, and a DFU block its own deadline, but a phone
//! can answer every single request just in time and still take hours for the whole image
//! (a dfuDNBUSY block that clears after 9.9 s, a 32 KiB bulk chunk every 9.9 s). A [`Budget`]
//! bounds the whole operation with two rules, each optional:
//!
//! - a fixed **deadline**: the operation fails once it has run this long;
//! - a **minimum throughput**: after a grace period, the bytes the device has taken must keep
//!   up with `bytes_per_second × (elapsed − grace)`. The rule ends once every byte is taken
//!   (what comes after, DFU manifestation or the final zero-length packet, has its own limits).
//!   It scales with the size: a big file gets more time, a stalled device is caught early.
//!
//! The budget never reads a clock: the engines pass their `now` to [`Budget::check`], and ask
//! [`Budget::expiry`] for the instant it runs out (to name it as a deadline, and to cut a
//! transfer's timeout so that no transfer outlives the budget).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use irecv::budget::{Budget, MinThroughput, Overrun};
//!
//! let budget = Budget {
//!     deadline: Some(Duration::from_secs(600)),
//!     min_throughput: Some(MinThroughput {
//!         bytes_per_second: 1000,
//!         grace: Duration::from_secs(10),
//!     }),
//! };
//! let start = Instant::now();
//! let s = Duration::from_secs;
//! // 5000 of 100000 bytes taken: fine until 10 s of grace + 5 s at 1000 B/s.
//! assert_eq!(budget.check(start, start + s(14), 5000, 100_000), Ok(()));
//! assert!(matches!(
//!     budget.check(start, start + s(15), 5000, 100_000),
//!     Err(Overrun::TooSlow { .. })
//! ));
//! // Every byte taken: only the fixed deadline is left.
//! assert_eq!(budget.check(start, start + s(599), 100_000, 100_000), Ok(()));
//! assert!(matches!(
//!     budget.check(start, start + s(600), 100_000, 100_000),
//!     Err(Overrun::Deadline { .. })
//! ));
//! ```

use std::time::{Duration, Instant};

/// The throughput rule of a [`Budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MinThroughput {
    /// Average rate the device must keep up, in bytes per second (0 turns the rule off).
    pub bytes_per_second: u64,
    /// Time before the rule starts counting (opening, preparing, a slow first block).
    pub grace: Duration,
}

/// How long a whole upload or download may take (see the [module docs](self)). The default
/// has no rule at all; the engines' own option defaults set both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Budget {
    /// The operation fails once it has run this long (`None`: no fixed deadline; a duration
    /// too large for the platform's clock means none too).
    pub deadline: Option<Duration>,
    /// The operation fails once the device falls behind this rate (`None`: no such rule).
    pub min_throughput: Option<MinThroughput>,
}

/// Which rule of a [`Budget`] an operation broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Overrun {
    /// The fixed deadline passed.
    #[error("over the {limit:?} allowed for the whole operation")]
    Deadline {
        /// [`Budget::deadline`].
        limit: Duration,
    },
    /// The device fell behind the minimum throughput.
    #[error("slower than the minimum of {bytes_per_second} bytes/s (after {grace:?} of grace)")]
    TooSlow {
        /// [`MinThroughput::bytes_per_second`].
        bytes_per_second: u64,
        /// [`MinThroughput::grace`].
        grace: Duration,
    },
}

impl Budget {
    /// No rule: the operation may take forever (each transfer still has its timeout).
    pub const UNLIMITED: Self = Self {
        deadline: None,
        min_throughput: None,
    };

    /// The instant this budget runs out for an operation that started at `started` and has
    /// moved `sent` of `total` bytes, with the rule that ends it; `None` when no rule can end
    /// it (no rule set, or every byte moved and no fixed deadline). While `sent` stays the
    /// same the instant does not move.
    pub fn expiry(&self, started: Instant, sent: u64, total: u64) -> Option<(Instant, Overrun)> {
        let fixed = self
            .deadline
            .map(|limit| (saturating_add(started, limit), Overrun::Deadline { limit }));
        let pace = self
            .min_throughput
            .filter(|m| m.bytes_per_second > 0 && sent < total)
            .map(|m| {
                let allowed = m.grace.saturating_add(time_for(sent, m.bytes_per_second));
                (
                    saturating_add(started, allowed),
                    Overrun::TooSlow {
                        bytes_per_second: m.bytes_per_second,
                        grace: m.grace,
                    },
                )
            });
        match (fixed, pace) {
            (Some(f), Some(p)) => Some(if p.0 < f.0 { p } else { f }),
            (f, p) => f.or(p),
        }
    }

    /// `Err` with the broken rule when the budget has run out at `now` (see
    /// [`Budget::expiry`]; the instant of expiry itself counts as out).
    pub fn check(
        &self,
        started: Instant,
        now: Instant,
        sent: u64,
        total: u64,
    ) -> Result<(), Overrun> {
        match self.expiry(started, sent, total) {
            Some((at, why)) if now >= at => Err(why),
            _ => Ok(()),
        }
    }
}

/// How long `bytes` take at `bytes_per_second` (> 0), rounded down to the nanosecond.
fn time_for(bytes: u64, bytes_per_second: u64) -> Duration {
    let secs = bytes / bytes_per_second;
    let rest = u128::from(bytes % bytes_per_second) * 1_000_000_000 / u128::from(bytes_per_second);
    // rest < 1e9, so it fits.
    Duration::new(secs, u32::try_from(rest).unwrap_or(0))
}

/// `at + by`, or the latest instant near it the platform can represent: never panics, and a
/// huge `by` (e.g. `Duration::MAX`) gives an instant that is in effect "never".
pub(crate) fn saturating_add(at: Instant, mut by: Duration) -> Instant {
    loop {
        if let Some(t) = at.checked_add(by) {
            return t;
        }
        // Halving reaches zero within ~100 steps, and `at + 0` always exists.
        by /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn unlimited_never_runs_out() {
        let t = Instant::now();
        assert_eq!(Budget::UNLIMITED.expiry(t, 0, 10), None);
        assert_eq!(Budget::default(), Budget::UNLIMITED);
        let zero_rate = Budget {
            deadline: None,
            min_throughput: Some(MinThroughput {
                bytes_per_second: 0,
                grace: S(1),
            }),
        };
        assert_eq!(zero_rate.check(t, t + S(1_000_000), 0, 10), Ok(()));
    }

    #[test]
    fn the_earlier_rule_wins() {
        let t = Instant::now();
        let b = Budget {
            deadline: Some(S(100)),
            min_throughput: Some(MinThroughput {
                bytes_per_second: 10,
                grace: S(5),
            }),
        };
        let slow = Overrun::TooSlow {
            bytes_per_second: 10,
            grace: S(5),
        };
        let late = Overrun::Deadline { limit: S(100) };
        assert_eq!(b.expiry(t, 0, 1000), Some((t + S(5), slow)));
        assert_eq!(b.expiry(t, 500, 1000), Some((t + S(55), slow)));
        assert_eq!(b.expiry(t, 999, 1000), Some((t + S(100), late)));
        assert_eq!(b.expiry(t, 1000, 1000), Some((t + S(100), late)));
        assert_eq!(
            b.expiry(t, 15, 1000).map(|e| e.0),
            Some(t + S(6) + Duration::from_millis(500))
        );
    }

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let t = Instant::now();
        let far = saturating_add(t, Duration::MAX);
        assert!(far > t + S(1_000_000_000));
        let b = Budget {
            deadline: Some(Duration::MAX),
            min_throughput: Some(MinThroughput {
                bytes_per_second: 1,
                grace: Duration::MAX,
            }),
        };
        assert_eq!(
            b.check(t, t + S(1_000_000_000), u64::MAX - 1, u64::MAX),
            Ok(())
        );
        assert_eq!(time_for(u64::MAX, 1), Duration::from_secs(u64::MAX));
        assert_eq!(time_for(3, 2), Duration::from_millis(1500));
    }
}
