//! The `shared` workload: reads and replacements of a swappable shared
//! instance, on latchfree's [`Shared`], the locked twin
//! ([`LockedShared`], `RwLock<Option<Arc<T>>>`), and a crossbeam-epoch
//! `Atomic<T>` (the other lock-free design [`Shared`] could have used).
//!
//! Operations:
//!
//! * `load`: every thread reads the value (the hot path). Nothing writes.
//! * `load_during_swaps`: the same reads while one extra thread (not counted
//!   in `threads`, not in the totals) replaces the value in a loop, as fast as
//!   it can. It runs only during its own implementation's timed slices.
//! * `swap`: every thread replaces the value.
//!
//! Implementations: `latchfree` ([`Shared::load`], a guard), `latchfree-arc`
//! ([`Shared::load_arc`], an `Arc` clone per read: what the guard avoids),
//! `locked` ([`LockedShared::load`], an `Arc` clone under the read lock), and
//! `crossbeam-epoch` (pin, load, read; the old value is freed by a deferred
//! destroy).
//!
//! Every read checks the value it got (`check == !id`, and a value's `Drop`
//! breaks that), so a read of a freed value fails the run. Exactness: reads
//! are counted per worker and must equal the operations performed; values
//! created must equal the replacements plus one; and, for the
//! implementations that free deterministically, values alive after the run
//! must be exactly the one still installed (crossbeam-epoch frees later, at
//! an unspecified time, so there only `alive ≥ 1` is checked).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_epoch as epoch;
use crossbeam_utils::CachePadded;

use super::{Case, Target, expect_eq};
use latchfree::baseline::LockedShared;
use latchfree::shared::Shared;

/// Every case of the `shared` workload.
pub fn cases() -> Vec<Case> {
    let case = |op, imp, make| Case {
        workload: "shared",
        op,
        imp,
        guarantee: "no-use-after-free",
        latency: false,
        make,
    };
    vec![
        case("load", "latchfree", |t| {
            Bench::<Latchfree<false>>::boxed(t, Op::Load)
        }),
        case("load", "latchfree-arc", |t| {
            Bench::<Latchfree<true>>::boxed(t, Op::Load)
        }),
        case("load", "locked", |t| Bench::<Locked>::boxed(t, Op::Load)),
        case("load", "crossbeam-epoch", |t| {
            Bench::<Epoch>::boxed(t, Op::Load)
        }),
        case("load_during_swaps", "latchfree", |t| {
            Bench::<Latchfree<false>>::boxed(t, Op::LoadDuringSwaps)
        }),
        case("load_during_swaps", "latchfree-arc", |t| {
            Bench::<Latchfree<true>>::boxed(t, Op::LoadDuringSwaps)
        }),
        case("load_during_swaps", "locked", |t| {
            Bench::<Locked>::boxed(t, Op::LoadDuringSwaps)
        }),
        case("load_during_swaps", "crossbeam-epoch", |t| {
            Bench::<Epoch>::boxed(t, Op::LoadDuringSwaps)
        }),
        case("swap", "latchfree", |t| {
            Bench::<Latchfree<false>>::boxed(t, Op::Swap)
        }),
        case("swap", "locked", |t| Bench::<Locked>::boxed(t, Op::Swap)),
        case("swap", "crossbeam-epoch", |t| {
            Bench::<Epoch>::boxed(t, Op::Swap)
        }),
    ]
}

/// What the workload counts about its values.
#[derive(Default)]
struct Lives {
    created: AtomicU64,
    dropped: AtomicU64,
}

/// The shared instance: `check == !id` until it is dropped.
struct Value {
    id: u64,
    check: u64,
    lives: Arc<Lives>,
}

impl Value {
    fn new(id: u64, lives: &Arc<Lives>) -> Self {
        lives.created.fetch_add(1, Ordering::Relaxed);
        Self {
            id,
            check: !id,
            lives: Arc::clone(lives),
        }
    }

    /// Reads the value, failing the run if it was freed (or torn).
    #[inline]
    fn read(&self) {
        let id = black_box(self.id);
        assert_eq!(black_box(self.check), !id, "read a freed value");
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        // Breaks the check, so a read after the free fails (where the
        // memory has not been reused yet).
        black_box(&mut self.check);
        self.check = self.id;
        self.lives.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// One implementation of a shared instance, as the workload drives it.
trait Cell: Send + Sync + 'static {
    /// Whether values are freed when their last reader lets go (rather than
    /// later, by a collector).
    const FREES_AT_ONCE: bool;
    fn new(value: Value) -> Self;
    /// Reads the current value (and checks it).
    fn read(&self);
    fn replace(&self, value: Value);
}

/// latchfree: reads through a guard ([`Shared::load`]), or with `ARC`
/// through an `Arc` clone ([`Shared::load_arc`]).
struct Latchfree<const ARC: bool>(Shared<Value>);

impl<const ARC: bool> Cell for Latchfree<ARC> {
    const FREES_AT_ONCE: bool = true;
    fn new(value: Value) -> Self {
        Self(Shared::with_value(value))
    }
    #[inline]
    fn read(&self) {
        if ARC {
            if let Some(v) = self.0.load_arc() {
                v.read();
            }
        } else if let Some(v) = self.0.load() {
            v.read();
        }
    }
    fn replace(&self, value: Value) {
        self.0.store(value);
    }
}

struct Locked(LockedShared<Value>);

impl Cell for Locked {
    const FREES_AT_ONCE: bool = true;
    fn new(value: Value) -> Self {
        let shared = LockedShared::new();
        shared.store(value);
        Self(shared)
    }
    #[inline]
    fn read(&self) {
        if let Some(v) = self.0.load() {
            v.read();
        }
    }
    fn replace(&self, value: Value) {
        self.0.store(value);
    }
}

/// A crossbeam-epoch `Atomic`, as its docs recommend: pin, load, use;
/// swap and `defer_destroy` the old value.
struct Epoch(epoch::Atomic<Value>);

impl Cell for Epoch {
    const FREES_AT_ONCE: bool = false;
    fn new(value: Value) -> Self {
        Self(epoch::Atomic::new(value))
    }
    #[inline]
    fn read(&self) {
        let guard = epoch::pin();
        // Acquire: pairs with the AcqRel swap in `replace` that published
        // the value, so its fields are initialised.
        let current = self.0.load(Ordering::Acquire, &guard);
        // SAFETY: the pointer was loaded under `guard`, and replaced values
        // are freed only through `defer_destroy`, which waits for every
        // guard pinned before the swap: it is valid while `guard` lives.
        if let Some(v) = unsafe { current.as_ref() } {
            v.read();
        }
    }
    fn replace(&self, value: Value) {
        let guard = epoch::pin();
        // AcqRel: Release publishes the new value to `read`'s Acquire load;
        // Acquire makes the old value's fields visible to its destructor.
        let old = self
            .0
            .swap(epoch::Owned::new(value), Ordering::AcqRel, &guard);
        if !old.is_null() {
            // SAFETY: `old` is unlinked (no new reader can load it) and
            // nobody else destroys it: each pointer is swapped out once.
            unsafe { guard.defer_destroy(old) };
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader is left; the current value was never
        // handed to `defer_destroy`, so it is freed exactly once, here.
        unsafe {
            let current = self.0.load(Ordering::Relaxed, epoch::unprotected());
            if !current.is_null() {
                drop(current.into_owned());
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Load,
    LoadDuringSwaps,
    Swap,
}

/// One case: a cell, its per-worker read counts, and (for
/// `load_during_swaps`) the writer thread.
struct Bench<C: Cell> {
    cell: Arc<C>,
    lives: Arc<Lives>,
    op: Op,
    next_id: AtomicU64,
    /// Operations per worker (reads, or replacements).
    done: Vec<CachePadded<AtomicU64>>,
    writer: Option<Writer>,
}

impl<C: Cell> Bench<C> {
    fn boxed(threads: usize, op: Op) -> Box<dyn Target> {
        let lives = Arc::new(Lives::default());
        let cell = Arc::new(C::new(Value::new(0, &lives)));
        let writer = (op == Op::LoadDuringSwaps).then(|| Writer::spawn(&cell, &lives));
        Box::new(Self {
            cell,
            lives,
            op,
            next_id: AtomicU64::new(1),
            done: (0..threads.max(1))
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            writer,
        })
    }
}

impl<C: Cell> Target for Bench<C> {
    fn run(&self, thread: usize, n: u64) {
        match self.op {
            Op::Load | Op::LoadDuringSwaps => {
                if let Some(writer) = &self.writer {
                    writer.resume();
                }
                for _ in 0..n {
                    self.cell.read();
                }
            }
            Op::Swap => {
                for _ in 0..n {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    self.cell.replace(Value::new(id, &self.lives));
                }
            }
        }
        self.done[thread % self.done.len()].fetch_add(n, Ordering::Relaxed);
    }

    fn settle(&self) {
        if let Some(writer) = &self.writer {
            writer.pause();
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        self.settle();
        let done = self.done.iter().map(|d| d.load(Ordering::Relaxed)).sum();
        let replacements = match (&self.writer, self.op) {
            (Some(w), _) => w.swaps.load(Ordering::Relaxed),
            (None, Op::Swap) => total_ops,
            (None, _) => 0,
        };
        let created = self.lives.created.load(Ordering::Relaxed);
        let alive = created - self.lives.dropped.load(Ordering::Relaxed);
        let check = expect_eq("operations", done, total_ops)
            .and_then(|()| expect_eq("values created", created, replacements + 1))
            .and_then(|()| {
                if C::FREES_AT_ONCE {
                    expect_eq("values alive", alive, 1)
                } else if alive >= 1 {
                    Ok(())
                } else {
                    Err(format!(
                        "values alive: {alive}, the installed one was freed"
                    ))
                }
            });
        Some(check)
    }
}

/// The `load_during_swaps` writer: replaces the value in a loop while
/// active; parked between timed slices.
struct Writer {
    state: Arc<WriterState>,
    swaps: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct WriterState {
    /// Checked before every swap.
    active: AtomicBool,
    /// (`active` requested, writer is parked, stop) under one lock.
    control: Mutex<(bool, bool, bool)>,
    changed: Condvar,
}

impl Writer {
    fn spawn<C: Cell>(cell: &Arc<C>, lives: &Arc<Lives>) -> Self {
        let state = Arc::new(WriterState::default());
        let swaps = Arc::new(AtomicU64::new(0));
        let thread = {
            let (state, swaps, cell, lives) = (
                Arc::clone(&state),
                Arc::clone(&swaps),
                Arc::clone(cell),
                Arc::clone(lives),
            );
            std::thread::spawn(move || {
                let mut id = u64::MAX / 2;
                loop {
                    {
                        let mut c = state.control.lock().unwrap_or_else(PoisonError::into_inner);
                        c.1 = true;
                        state.changed.notify_all();
                        while !c.0 && !c.2 {
                            c = state
                                .changed
                                .wait(c)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                        if c.2 {
                            return;
                        }
                        c.1 = false;
                    }
                    while state.active.load(Ordering::Relaxed) {
                        cell.replace(Value::new(id, &lives));
                        id += 1;
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let writer = Self {
            state,
            swaps,
            thread: Some(thread),
        };
        writer.pause();
        writer
    }

    /// Starts the writer unless it runs already (cheap when it does).
    fn resume(&self) {
        if self.state.active.load(Ordering::Relaxed) {
            return;
        }
        let mut c = self
            .state
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.0 = true;
        self.state.active.store(true, Ordering::Relaxed);
        self.state.changed.notify_all();
    }

    /// Stops the writer and waits until it is parked.
    fn pause(&self) {
        let mut c = self
            .state
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.0 = false;
        self.state.active.store(false, Ordering::Relaxed);
        self.state.changed.notify_all();
        while !c.1 {
            c = self
                .state
                .changed
                .wait(c)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        {
            let mut c = self
                .state
                .control
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            c.2 = true;
            self.state.active.store(false, Ordering::Relaxed);
            self.state.changed.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Plan, run};
    use std::time::Duration;

    #[test]
    fn every_case_runs_and_is_exact() {
        let plan = Plan {
            threads: vec![2],
            duration: Duration::from_millis(30),
            rounds: 2,
        };
        let rows = run(&cases(), &plan, |_| {});
        assert_eq!(rows.len(), cases().len());
        for row in &rows {
            assert_eq!(row.exact, Some(true), "{row:?}");
        }
    }
}
