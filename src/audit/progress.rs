//! How callers wait for the writer: a level that only rises, published by
//! one thread, awaited by many.
//!
//! The writer numbers records by their ring position and, after each batch,
//! raises a [`Level`] to the number of records it has written (and another
//! to the number it has synced). A caller whose record has position `p`
//! waits until the level passes `p`. Every caller that arrived while the
//! previous write or fsync ran is covered by the next one: that is the group
//! commit, and the waiting costs the writer one store, one fence and one
//! load per batch when nobody sleeps.
//!
//! ```text
//! writer                                  waiter (target t)
//!   level.store(n, Release)                 level.load(Acquire) >= t?  done
//!   fence(SeqCst) ─────────────┐            spin a few steps, re-checking
//!   sleepers.load() > 0 ?      │            sleepers += 1
//!     lock; notify_all         └──────────  fence(SeqCst)
//!                                           lock; while level < t: wait
//! ```
//!
//! The two fences make the store-buffering outcome impossible: either the
//! writer sees the sleeper's count (and notifies under the lock, which the
//! sleeper holds from its re-check until it waits), or the sleeper's re-check
//! sees the new level. A failed write is published under the same lock, so
//! sleepers wake and see it.

use std::io;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use crate::sync::{Condvar, Mutex, MutexGuard};

/// How long a waiter polls the level (spinning, then yielding) before it
/// sleeps. A write to the OS takes the writer a few microseconds; polling
/// that long costs less than a sleep and a wake-up, which on a virtual
/// machine with an idle CPU can take tens of microseconds.
pub const POLL: Duration = Duration::from_micros(50);

/// A count that only rises, and the sleepers waiting for it.
pub struct Level {
    value: CachePadded<AtomicU64>,
}

impl Level {
    pub fn new(value: u64) -> Self {
        Self {
            value: CachePadded::new(AtomicU64::new(value)),
        }
    }

    pub fn get(&self) -> u64 {
        // Acquire: pairs with the Release store in `Progress::raise`, so a
        // waiter that sees the level also sees what the writer did before.
        self.value.load(Ordering::Acquire)
    }
}

/// What a waiter learns when it cannot get what it waits for.
#[derive(Clone, Debug)]
pub enum Stalled {
    /// The writer failed; it keeps the records and retries.
    Failed(std::sync::Arc<io::Error>),
    /// The writer stopped (closed, or the thread is gone) below the target.
    Stopped,
}

/// State the writer publishes under the lock, for waiters to read.
#[derive(Default)]
pub struct Published<H> {
    /// The writer's current error, cleared when a retry succeeds.
    pub error: Option<std::sync::Arc<io::Error>>,
    /// The writer will raise no level again.
    pub stopped: bool,
    /// Whatever the writer reports with each raise (the chain heads).
    pub heads: H,
}

/// Levels, sleepers and the lock they sleep under.
pub struct Progress<H> {
    sleepers: AtomicUsize,
    shared: Mutex<Published<H>>,
    changed: Condvar,
}

impl<H: Default> Default for Progress<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Default> Progress<H> {
    /// No level raised yet, no error, nobody asleep.
    pub fn new() -> Self {
        Self {
            sleepers: AtomicUsize::new(0),
            shared: Mutex::new(Published::default()),
            changed: Condvar::new(),
        }
    }
}

impl<H> Progress<H> {
    /// Locks the shared state (a panic while it was held cannot leave it
    /// half-updated: every update is a single assignment).
    pub fn lock(&self) -> MutexGuard<'_, Published<H>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raises `level` to `to` (the writer only) and wakes sleepers.
    pub fn raise(&self, level: &Level, to: u64) {
        // Release: pairs with the Acquire load in `Level::get`.
        level.value.store(to, Ordering::Release);
        self.wake();
    }

    /// Wakes every sleeper if there is one. Call after changing what they
    /// wait for.
    pub fn wake(&self) {
        // SeqCst fence: orders the level store before the load of
        // `sleepers`; pairs with the fence in `wait`.
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            let _guard = self.lock();
            self.changed.notify_all();
        }
    }

    /// Changes the shared state under the lock, waking nobody (for what
    /// sleepers do not wait on, such as the heads).
    pub fn set(&self, f: impl FnOnce(&mut Published<H>)) {
        f(&mut self.lock());
    }

    /// Changes the shared state under the lock and wakes every sleeper.
    pub fn update(&self, f: impl FnOnce(&mut Published<H>)) {
        let mut shared = self.lock();
        f(&mut shared);
        self.changed.notify_all();
    }

    /// Waits until `level` reaches `target`; fails if the writer reports an
    /// error or stops first.
    ///
    /// It polls the level for up to `poll` (spinning, then yielding) before
    /// it sleeps.
    pub fn wait(&self, level: &Level, target: u64, poll: Duration) -> Result<(), Stalled> {
        let mut polling = crate::sync::Poll::new(poll);
        while level.get() < target {
            if polling.next() {
                continue;
            }
            self.sleepers.fetch_add(1, Ordering::Relaxed);
            // SeqCst fence: pairs with the fence in `wake`.
            fence(Ordering::SeqCst);
            let mut shared = self.lock();
            let result = loop {
                if level.get() >= target {
                    break Ok(());
                }
                if let Some(error) = &shared.error {
                    break Err(Stalled::Failed(error.clone()));
                }
                if shared.stopped {
                    break Err(Stalled::Stopped);
                }
                shared = self.changed.wait(shared).unwrap_or_else(|p| p.into_inner());
            };
            drop(shared);
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            return result;
        }
        Ok(())
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waiters_wake_on_raise_error_and_stop() {
        let progress = Arc::new(Progress::<()>::new());
        let level = Arc::new(Level::new(0));
        let waiters: Vec<_> = (1..=4u64)
            .map(|target| {
                let (progress, level) = (progress.clone(), level.clone());
                std::thread::spawn(move || {
                    progress.wait(
                        &level,
                        target,
                        if target % 2 == 0 {
                            POLL
                        } else {
                            Duration::ZERO
                        },
                    )
                })
            })
            .collect();
        progress.raise(&level, 2);
        progress.update(|s| s.error = Some(Arc::new(io::Error::other("disk full"))));
        let results: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(matches!(results[2], Err(Stalled::Failed(_))));
        assert!(matches!(results[3], Err(Stalled::Failed(_))));
        progress.update(|s| {
            s.error = None;
            s.stopped = true;
        });
        assert!(progress.wait(&level, 2, POLL).is_ok());
        assert!(matches!(
            progress.wait(&level, 3, Duration::ZERO),
            Err(Stalled::Stopped)
        ));
    }
}
