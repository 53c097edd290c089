//! The time a map checks deadlines against: the injected clock itself, or a
//! coarse copy of it kept fresh by the sweeper thread and by writes (see the
//! "Time" section of the parent module).

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::clock::{Clock, to_nanos};
use crate::sync::atomic::{AtomicU64, Ordering};

/// Nanoseconds since the Unix epoch, exact or coarse.
pub(crate) struct TimeSource {
    clock: Arc<dyn Clock>,
    /// The latest reading, when reads use a coarse copy.
    coarse: Option<CachePadded<AtomicU64>>,
}

impl TimeSource {
    /// Reads go to `clock` itself unless `coarse`.
    pub(crate) fn new(clock: Arc<dyn Clock>, coarse: bool) -> Self {
        let now = to_nanos(clock.now());
        Self {
            clock,
            coarse: coarse.then(|| CachePadded::new(AtomicU64::new(now))),
        }
    }

    /// The time for a read: the coarse copy if there is one (one relaxed
    /// load), else the clock.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match &self.coarse {
            // Relaxed: the time is one value; nothing is published with it.
            Some(coarse) => coarse.load(Ordering::Relaxed),
            None => to_nanos(self.clock.now()),
        }
    }

    /// Reads the clock, raises the coarse copy to it, and returns it.
    pub(crate) fn refresh(&self) -> u64 {
        let now = to_nanos(self.clock.now());
        if let Some(coarse) = &self.coarse {
            // Relaxed: as in `now`. Only raised: a wall clock that steps
            // back holds the coarse time still rather than reviving entries.
            if coarse.load(Ordering::Relaxed) < now {
                coarse.fetch_max(now, Ordering::Relaxed);
            }
        }
        now
    }
}
