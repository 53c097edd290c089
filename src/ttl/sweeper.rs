//! The background sweeper: one thread per map that ticks the coarse time
//! and evicts expired entries, holding only a weak reference to the map.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::{BACKGROUND_SWEEP, TtlMap};

/// Stops the sweeper thread when dropped (it is not joined: it notices
/// within one tick, or at once if parked).
pub(crate) struct SweeperHandle {
    stop: Arc<AtomicBool>,
    thread: Thread,
}

impl SweeperHandle {
    /// Starts a thread that refreshes `map`'s time every `tick` and sweeps
    /// it every `interval`, until the handle or the map is dropped.
    pub(crate) fn spawn<K, V>(
        map: Weak<TtlMap<K, V>>,
        tick: Duration,
        interval: Duration,
    ) -> std::io::Result<Self>
    where
        K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = thread::Builder::new()
            .name("latchfree-sweep".into())
            .spawn(move || {
                let mut last_sweep = Instant::now();
                loop {
                    thread::park_timeout(tick);
                    // Acquire: pairs with the Release store in `drop`.
                    if stopped.load(Ordering::Acquire) {
                        break;
                    }
                    let Some(map) = map.upgrade() else { break };
                    map.tick();
                    if last_sweep.elapsed() >= interval {
                        map.sweep_expired(BACKGROUND_SWEEP);
                        last_sweep = Instant::now();
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: handle.thread().clone(),
        })
    }
}

impl Drop for SweeperHandle {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load in the thread's loop.
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}
