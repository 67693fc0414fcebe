//! Time for the simulator's drivers: a manual virtual clock (tests, benchmarks: deterministic,
//! instant) and a real-time one (the demo).
//!
//! The phone itself never reads a clock; the [`crate::hub::VirtualHub`] reads one of these and
//! charges each transfer's duration to it. On the virtual clock that moves time forward; on
//! the real one it waits — the only place in the project where the virtual link is paced by
//! real waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of time that transfers are charged to.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Instant;
    /// `duration` passes (a transfer took it): virtual time moves, real time is waited out.
    fn advance(&self, duration: Duration);
    /// Time reaches `instant` (no-op if it has passed).
    fn advance_to(&self, instant: Instant);
    /// Whether this is virtual time (nothing waits).
    fn is_virtual(&self) -> bool;
}

/// Virtual time: starts at the instant it was created and moves only when told. Shared by
/// every thread driving the hub (a hub's ports share one bus, so their transfers add up).
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at its start.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            nanos: AtomicU64::new(0),
        })
    }

    /// Virtual time passed since the start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    fn advance(&self, duration: Duration) {
        self.nanos.fetch_add(nanos(duration), Ordering::SeqCst);
    }

    fn advance_to(&self, instant: Instant) {
        let target = nanos(instant.saturating_duration_since(self.base));
        self.nanos.fetch_max(target, Ordering::SeqCst);
    }

    fn is_virtual(&self) -> bool {
        true
    }
}

/// Real time: `advance` sleeps. For the demo and the VM bench only.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn advance(&self, duration: Duration) {
        if !duration.is_zero() {
            precise_sleep(duration);
        }
    }

    fn advance_to(&self, instant: Instant) {
        let now = Instant::now();
        if instant > now {
            precise_sleep(instant - now);
        }
    }

    fn is_virtual(&self) -> bool {
        false
    }
}

/// Sleeps `duration` as closely as the kernel allows. A thread's timer slack is 50 µs by
/// default on Linux: a link that costs 125 µs per transfer would pay it on every transfer a
/// driver waits for, an error of the model rather than anything on a real bus. The first
/// sleep on each thread sets that thread's slack to the minimum.
fn precise_sleep(duration: Duration) {
    #[cfg(target_os = "linux")]
    {
        thread_local!(static TIGHT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        TIGHT.with(|tight| {
            if !tight.get() {
                tight.set(true);
                // SAFETY: PR_SET_TIMERSLACK takes a plain number and touches only the calling
                // thread's timer slack; the unused arguments are zero, as prctl(2) asks.
                unsafe {
                    libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
                }
            }
        });
    }
    std::thread::sleep(duration);
}

/// Real time sped up by a factor (the demo: a 15-minute restore in a minute at 15×): virtual
/// time runs `factor` times faster than the wall clock, and waiting `d` of it sleeps `d / factor`.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    start: Instant,
    factor: u32,
}

impl ScaledClock {
    /// A clock running `factor` times faster than real time (0 counts as 1).
    pub fn new(factor: u32) -> Self {
        Self {
            start: Instant::now(),
            factor: factor.max(1),
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Instant {
        self.start + self.start.elapsed().saturating_mul(self.factor)
    }

    fn advance(&self, duration: Duration) {
        let real = duration / self.factor;
        if !real.is_zero() {
            precise_sleep(real);
        }
    }

    fn advance_to(&self, instant: Instant) {
        let now = self.now();
        if instant > now {
            self.advance(instant - now);
        }
    }

    fn is_virtual(&self) -> bool {
        false
    }
}

/// A [`Clock`] as `irecv`'s blocking drivers want one (`irecv::dfu::Clock`): waiting until an
/// instant moves virtual time there.
#[derive(Debug, Clone)]
pub struct DriverClock(pub Arc<dyn Clock>);

impl irecv::dfu::Clock for DriverClock {
    fn now(&self) -> Instant {
        self.0.now()
    }

    fn wait_until(&mut self, instant: Instant) {
        self.0.advance_to(instant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_never_back() {
        let c = ManualClock::new();
        let t0 = c.now();
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now() - t0, Duration::from_millis(5));
        c.advance_to(t0 + Duration::from_millis(2));
        assert_eq!(c.elapsed(), Duration::from_millis(5));
        c.advance_to(t0 + Duration::from_secs(1));
        assert_eq!(c.elapsed(), Duration::from_secs(1));
        assert!(c.is_virtual() && !RealClock.is_virtual());
        let fast = ScaledClock::new(1000);
        let t0 = fast.now();
        fast.advance(Duration::from_millis(500)); // sleeps 0.5 ms
        assert!(fast.now() - t0 >= Duration::from_millis(500));
    }
}
