//! [`LockedStats`]: counters and gauges in one `Mutex<HashMap<String, u64>>`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The classic shared statistics map: every update takes one global lock.
///
/// Exact (the lock serialises every read-modify-write), and batches are atomic
/// because [`batch`](Self::batch) holds the lock across them; but every thread
/// queues on the same lock, and a preempted holder stalls them all.
///
/// ```
/// use latchfree::baseline::LockedStats;
/// let stats = LockedStats::new();
/// stats.increment("calls", 1);
/// stats.batch(|m| {
///     *m.entry("calls".into()).or_default() += 1;
///     *m.entry("bytes".into()).or_default() += 3;
/// });
/// assert_eq!(stats.get("calls"), 2);
/// ```
#[derive(Debug, Default)]
pub struct LockedStats {
    values: Mutex<HashMap<String, u64>>,
}

impl LockedStats {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        // A panic while holding the lock cannot leave a half-applied `+=`.
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `n` to counter `name` (wrapping), creating it at 0.
    pub fn increment(&self, name: &str, n: u64) {
        let mut values = self.lock();
        match values.get_mut(name) {
            Some(v) => *v = v.wrapping_add(n),
            None => {
                values.insert(name.to_owned(), n);
            }
        }
    }

    /// Sets `name` to `value`.
    pub fn set(&self, name: &str, value: u64) {
        self.lock().insert(name.to_owned(), value);
    }

    /// The value of `name`, 0 if absent.
    pub fn get(&self, name: &str) -> u64 {
        self.lock().get(name).copied().unwrap_or(0)
    }

    /// Runs `f` on the map under the lock: its updates are atomic together.
    pub fn batch<R>(&self, f: impl FnOnce(&mut HashMap<String, u64>) -> R) -> R {
        f(&mut self.lock())
    }

    /// A copy of every value.
    pub fn snapshot(&self) -> HashMap<String, u64> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_from_many_threads_are_exact() {
        let stats = LockedStats::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..10_000).for_each(|_| stats.increment("n", 1)));
            }
        });
        assert_eq!(stats.get("n"), 40_000);
        stats.set("n", 5);
        assert_eq!(stats.snapshot().get("n"), Some(&5));
        assert_eq!(stats.get("absent"), 0);
    }
}
