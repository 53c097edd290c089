//! Time, injected: every component that reads a clock reads it through
//! [`Clock`], so tests move time by hand instead of sleeping.
//!
//! [`SystemClock`] is the real one. [`ManualClock`] starts at a wall time you
//! choose and moves only when [`ManualClock::advance`] or
//! [`ManualClock::set`] say so; clones share one time.
//!
//! ```
//! use latchfree::clock::{Clock, ManualClock};
//! use std::time::{Duration, SystemTime};
//!
//! let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(86_400));
//! let before = clock.now();
//! clock.advance(Duration::from_secs(5));
//! assert_eq!(clock.now().duration_since(before).unwrap(), Duration::from_secs(5));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::sync::atomic::{AtomicU64, Ordering};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// Whether [`now`](Clock::now) is cheap enough to read on every lookup
    /// (an atomic load, not a system call). `false` unless overridden.
    ///
    /// The session registry and the TTL cache check deadlines on their read
    /// paths. Reading the operating system's clock costs about 25 ns on the
    /// machines this crate is measured on, as much as the rest of a lookup,
    /// so for a clock that is not cheap they read a *coarse* copy of it that
    /// their background thread refreshes (see
    /// [`SessionRegistryBuilder::time_resolution`](crate::session::SessionRegistryBuilder::time_resolution)).
    /// A cheap clock is read directly, every time: deadlines are then exact
    /// with respect to it, which is what tests with a [`ManualClock`] rely on.
    fn is_cheap(&self) -> bool {
        false
    }
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told; clones share one time.
#[derive(Clone)]
pub struct ManualClock {
    /// Nanoseconds since the Unix epoch.
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at `start` (clamped to the epoch .. year 2554 range
    /// that a `u64` of nanoseconds holds).
    pub fn new(start: SystemTime) -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(to_nanos(start))),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: the time is one value; nothing else is published with it.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `to` (backwards too: wall clocks do step back).
    pub fn set(&self, to: SystemTime) {
        self.nanos.store(to_nanos(to), Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    /// `true`: one relaxed load.
    fn is_cheap(&self) -> bool {
        true
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

/// `t` as nanoseconds since the Unix epoch, clamped to `0 ..= u64::MAX`.
pub(crate) fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = ManualClock::new(start);
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), start + Duration::from_millis(1500));
        clock.set(start - Duration::from_secs(10));
        assert_eq!(other.now(), start - Duration::from_secs(10));
        clock.set(SystemTime::UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH);
    }
}
