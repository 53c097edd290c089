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
//!   fence(SeqCst) ─────────────┐            poll a few steps, re-checking
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
//!
//! # Async waiters
//!
//! A future ([`Progress::wait_async`]) sleeps the same way, with its waker
//! for a condition variable: it counts itself among the sleepers once, then
//! fences, then, under the lock, re-checks the level and the published state
//! and, if it must still wait, registers its waker in the list the lock
//! guards (`crate::wakers`). The writer, after its fence, takes that list
//! under the lock (with the `notify_all`) and wakes it once the lock is
//! released. The argument above carries over: a writer that saw no sleeper
//! comes before the future's fence, so its re-check sees the level; one that
//! saw it either takes the registered waker or released the lock before the
//! future's re-check, which then sees what it published. A woken future
//! re-checks and registers again if it must. It never polls or spins (an
//! executor thread is not ours to spin on), and it never writes on the
//! caller's behalf (as a blocking waiter may): an executor thread must not
//! block on the file.
//!
//! A future dropped while it waits removes its waker and its count: nothing
//! it leaves behind wakes anybody or is woken.
//!
//! Each registration is tagged with the level it waits on and its target,
//! and a raise takes only the wakers it satisfies: a task waiting for an
//! fsync is not woken by the write before it, nor by the fsync of the batch
//! ahead of its own. The others stay registered and counted in `sleepers`,
//! so the raise that reaches them sees the count and takes them; an error
//! or a stop (`update`) takes every waker. Threads asleep on the condition
//! variable are all notified, as before. When every raise took the whole
//! list, 64 tasks logging with `Guarantee::Disk` in two alternating batches
//! could each be woken up to four times per record (the write and the fsync
//! of their own batch and of the other), three of them for nothing, on the
//! same cores that poll them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use crate::sync::{Condvar, Mutex, MutexGuard};
use crate::wakers::WakerList;

/// How long a waiter polls the level (spinning, then yielding; only
/// yielding while the log's callers outnumber the cores) before it
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

    /// What tells this level from the others of its `Progress` (its
    /// address) in the tags of the wakers waiting on it.
    fn key(&self) -> usize {
        std::ptr::from_ref(self).addr()
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
    /// The wakers of the futures waiting (see "Async waiters"), each tagged
    /// with the level it waits on ([`Level::key`]) and its target.
    wakers: WakerList<(usize, u64)>,
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

    /// Raises `level` to `to` (the writer only) and wakes sleepers: every
    /// thread asleep, and the futures waiting on `level` for `to` or less
    /// (the others stay registered). Returns how many futures it woke.
    pub fn raise(&self, level: &Level, to: u64) -> usize {
        // Release: pairs with the Acquire load in `Level::get`.
        level.value.store(to, Ordering::Release);
        let key = level.key();
        self.wake(|&(waits_on, target)| waits_on == key && target <= to)
    }

    /// Wakes every thread asleep and the futures whose tag passes `due`, if
    /// anybody sleeps; returns how many futures it woke. Call after changing
    /// what they wait for.
    fn wake(&self, due: impl FnMut(&(usize, u64)) -> bool) -> usize {
        // SeqCst fence: orders the level store before the load of
        // `sleepers`; pairs with the fence in `wait` (and in
        // `LevelWait::poll`).
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let wakers = {
            let mut shared = self.lock();
            self.changed.notify_all();
            shared.wakers.take_due(due)
        };
        let woken = wakers.len();
        wakers.wake();
        woken
    }

    /// Changes the shared state under the lock, waking nobody (for what
    /// sleepers do not wait on, such as the heads).
    pub fn set(&self, f: impl FnOnce(&mut Published<H>)) {
        f(&mut self.lock());
    }

    /// Changes the shared state under the lock and wakes every sleeper.
    pub fn update(&self, f: impl FnOnce(&mut Published<H>)) {
        let wakers = {
            let mut shared = self.lock();
            f(&mut shared);
            self.changed.notify_all();
            shared.wakers.take()
        };
        wakers.wake();
    }

    /// As [`wait`](Self::wait), as a future that sleeps at once (no polling
    /// of the level); see "Async waiters" in the module docs.
    #[cfg_attr(not(feature = "async"), allow(dead_code))] // The async twins.
    pub fn wait_async<'a>(&'a self, level: &'a Level, target: u64) -> LevelWait<'a, H> {
        LevelWait {
            progress: self,
            level,
            target,
            counted: false,
            registration: None,
        }
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

/// The future of [`Progress::wait_async`].
#[must_use = "futures do nothing unless polled"]
pub struct LevelWait<'a, H> {
    progress: &'a Progress<H>,
    level: &'a Level,
    target: u64,
    /// Whether this future is counted in `sleepers`.
    counted: bool,
    /// Its waker's id in the list, once registered.
    registration: Option<u64>,
}

impl<H> LevelWait<'_, H> {
    /// Takes this future out of `sleepers` and its waker out of the list.
    fn leave(&mut self, shared: Option<&mut Published<H>>) {
        if let Some(id) = self.registration.take() {
            match shared {
                Some(shared) => shared.wakers.remove(id),
                None => self.progress.lock().wakers.remove(id),
            }
        }
        if std::mem::take(&mut self.counted) {
            self.progress.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<H> Future for LevelWait<'_, H> {
    type Output = Result<(), Stalled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.level.get() >= self.target {
            self.leave(None);
            return Poll::Ready(Ok(()));
        }
        if !self.counted {
            self.progress.sleepers.fetch_add(1, Ordering::Relaxed);
            self.counted = true;
            // SeqCst fence: pairs with the fence in `wake`, as in `wait`.
            fence(Ordering::SeqCst);
        }
        let progress = self.progress;
        let mut shared = progress.lock();
        let result = if self.level.get() >= self.target {
            Ok(())
        } else if let Some(error) = &shared.error {
            Err(Stalled::Failed(error.clone()))
        } else if shared.stopped {
            Err(Stalled::Stopped)
        } else {
            let this = &mut *self;
            let tag = (this.level.key(), this.target);
            shared
                .wakers
                .register_tagged(&mut this.registration, cx.waker(), tag);
            return Poll::Pending;
        };
        self.leave(Some(&mut shared));
        Poll::Ready(result)
    }
}

impl<H> Drop for LevelWait<'_, H> {
    fn drop(&mut self) {
        self.leave(None);
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

    struct CountWakes(AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn async_waiters_wake_on_raise_and_error_and_a_dropped_one_leaves_nothing() {
        use std::task::Waker;

        let progress = Progress::<()>::new();
        let level = Level::new(0);
        let woken = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut first = Box::pin(progress.wait_async(&level, 1));
        let mut second = Box::pin(progress.wait_async(&level, 2));
        let mut dropped = Box::pin(progress.wait_async(&level, 2));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert!(dropped.as_mut().poll(&mut cx).is_pending());
        assert_eq!(progress.sleepers.load(Ordering::Relaxed), 3);
        drop(dropped);
        assert_eq!(progress.sleepers.load(Ordering::Relaxed), 2);
        assert_eq!(progress.lock().wakers.len(), 2);
        assert_eq!(progress.raise(&level, 1), 1);
        assert_eq!(
            woken.0.load(Ordering::Relaxed),
            1,
            "only the waker of the level reached, once"
        );
        assert_eq!(
            progress.lock().wakers.len(),
            1,
            "the other stays registered"
        );
        assert!(matches!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        assert!(
            second.as_mut().poll(&mut cx).is_pending(),
            "level 1 is below 2"
        );
        assert_eq!(
            progress.lock().wakers.len(),
            1,
            "re-polled, not added twice"
        );
        progress.update(|s| s.error = Some(Arc::new(io::Error::other("disk full"))));
        assert!(matches!(
            second.as_mut().poll(&mut cx),
            Poll::Ready(Err(Stalled::Failed(_)))
        ));
        assert_eq!(progress.sleepers.load(Ordering::Relaxed), 0);
        assert_eq!(progress.lock().wakers.len(), 0);
    }
}
