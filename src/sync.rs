//! The one place that chooses between `std` and [loom].
//!
//! Every atomic, `UnsafeCell`, `Arc`, lock, thread-local and yield that takes
//! part in one of latchfree's own concurrency protocols is imported from here,
//! never from `std` directly. Under `--cfg latchfree_loom` they are loom's
//! model-checked stand-ins; otherwise they are the `std` types at zero cost.
//!
//! The cfg is crate-specific (not plain `cfg(loom)`) because `RUSTFLAGS`
//! reaches every dependency, and some of them read `cfg(loom)` themselves.
//!
//! Two items are ours rather than re-exports:
//!
//! * [`UnsafeCell`] on the `std` side mimics loom's closure API
//!   (`with` / `with_mut`), so call sites are identical under both.
//! * [`PerThread`] is per-object, per-thread storage. On `std` it is
//!   [`crate::per_thread`] (a one-entry TLS cache in front of a claim list;
//!   entries of exited threads are handed to new threads, so memory is bounded
//!   by the peak number of live threads). Loom runs every model thread on one
//!   OS thread, so there it keys entries by loom's thread id instead.
//!
//! [loom]: https://docs.rs/loom

#![allow(dead_code, unused_imports)] // The shim's full surface; not every component uses every item.

#[cfg(not(latchfree_loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
#[cfg(not(latchfree_loom))]
pub(crate) use std::thread::yield_now;
#[cfg(not(latchfree_loom))]
pub(crate) use std::thread_local;

#[cfg(latchfree_loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
#[cfg(latchfree_loom)]
pub(crate) use loom::thread::yield_now;
// Loom runs every model thread on one OS thread: a per-thread marker (the
// flights a thread leads) must be loom's thread-local to stay per model thread.
#[cfg(latchfree_loom)]
pub(crate) use loom::thread_local;

/// Atomics: `std::sync::atomic` or loom's.
pub(crate) mod atomic {
    #[cfg(not(latchfree_loom))]
    pub(crate) use std::sync::atomic::{
        AtomicBool, AtomicI64, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
        fence,
    };

    #[cfg(latchfree_loom)]
    pub(crate) use loom::sync::atomic::{
        AtomicBool, AtomicI64, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
        fence,
    };
}

/// `std::cell::UnsafeCell` with loom's closure-based access API.
#[cfg(not(latchfree_loom))]
#[derive(Debug, Default)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(latchfree_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(data: T) -> Self {
        Self(std::cell::UnsafeCell::new(data))
    }

    /// Calls `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with an exclusive raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(latchfree_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// How many of [`backoff`]'s first steps spin (1, 2, 4 ... 32 spin-loop
/// hints) before the steps yield.
#[cfg(not(latchfree_loom))]
const SPIN_STEPS: u32 = 6;

/// Spins, then yields: one step of a retry loop's back-off.
///
/// `step` starts at 0 and is advanced by each call. Under loom every step
/// yields, which is what lets the model checker explore spin loops at all.
#[inline]
pub(crate) fn backoff(step: &mut u32) {
    #[cfg(not(latchfree_loom))]
    {
        if *step < SPIN_STEPS {
            for _ in 0..(1u32 << *step) {
                std::hint::spin_loop();
            }
        } else {
            yield_now();
        }
    }
    #[cfg(latchfree_loom)]
    yield_now();
    *step = step.saturating_add(1);
}

/// A bounded poll: [`backoff`] steps until `budget` has passed (at least the
/// spinning steps, unless it [yields](Poll::yielding) from the start), then
/// [`Poll::next`] says stop.
///
/// Bounded by time rather than by steps because what it saves is a sleep and
/// a wake-up, whose cost is time: on a virtual machine, waking a thread on a
/// halted CPU costs tens of microseconds. Under loom a poll is a single
/// yield or two, as every interleaving is explored anyway.
pub(crate) struct Poll {
    step: u32,
    #[cfg(not(latchfree_loom))]
    until: Option<std::time::Instant>,
    #[cfg(not(latchfree_loom))]
    budget: std::time::Duration,
}

impl Poll {
    /// A poll that gives up after `budget`.
    pub(crate) fn new(budget: std::time::Duration) -> Self {
        Self {
            // Under loom a zero budget spins once, any other budget twice.
            #[cfg(latchfree_loom)]
            step: u32::from(budget.is_zero()),
            #[cfg(not(latchfree_loom))]
            step: 0,
            #[cfg(not(latchfree_loom))]
            until: None,
            #[cfg(not(latchfree_loom))]
            budget,
        }
    }

    /// A poll that yields from its first step, spinning not at all: for a
    /// waiter among more waiting threads than there are cores, where a spin
    /// only keeps a runnable thread (perhaps the one it waits for) off the
    /// core.
    pub(crate) fn yielding(budget: std::time::Duration) -> Self {
        Self {
            #[cfg(not(latchfree_loom))]
            step: SPIN_STEPS,
            ..Self::new(budget)
        }
    }

    /// Takes one back-off step; `false` once the budget is spent (no step
    /// is taken then).
    pub(crate) fn next(&mut self) -> bool {
        #[cfg(not(latchfree_loom))]
        if self.step >= SPIN_STEPS {
            // The clock is read only once the spins are over: a short wait
            // costs no `Instant::now`.
            let now = std::time::Instant::now();
            match self.until {
                None => self.until = Some(now + self.budget),
                Some(until) if now >= until => return false,
                Some(_) => {}
            }
        }
        #[cfg(latchfree_loom)]
        if self.step >= 2 {
            return false;
        }
        backoff(&mut self.step);
        true
    }
}

/// Per-object, per-thread storage: each thread sees its own `T`, and any
/// thread can visit all of them. See [`crate::per_thread`].
#[cfg(not(latchfree_loom))]
pub(crate) use crate::per_thread::PerThread;

/// Loom's stand-in for [`thread_local::ThreadLocal`]: entries keyed by loom's
/// thread id, behind a loom mutex (so the model sees the hand-off).
#[cfg(latchfree_loom)]
pub(crate) struct PerThread<T: Send + Sync + 'static>(Mutex<Vec<(loom::thread::ThreadId, Arc<T>)>>);

#[cfg(latchfree_loom)]
impl<T: Send + Sync + 'static> PerThread<T> {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    pub(crate) fn with<R>(&self, create: impl FnOnce() -> T, f: impl FnOnce(&T) -> R) -> R {
        let me = loom::thread::current().id();
        let entry = {
            let mut entries = self.0.lock().unwrap();
            match entries.iter().find(|(id, _)| *id == me) {
                Some((_, entry)) => entry.clone(),
                None => {
                    let entry = Arc::new(create());
                    entries.push((me, entry.clone()));
                    entry
                }
            }
        };
        f(&entry)
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(&T))
    where
        T: Sync,
    {
        let entries: Vec<Arc<T>> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect();
        for entry in &entries {
            f(entry);
        }
    }
}
