//! A single-flight slot: one leader computes a value, any number of waiters
//! park until it is done and then all see the same outcome.
//!
//! # The protocol
//!
//! A [`Flight`] is created by the one caller that won the right to run an
//! initialiser (the *leader*; in the maps of this crate, the caller that
//! found the key vacant in the map of flights). Other callers for the same
//! key clone the `Arc<Flight>` and call [`Flight::wait`]. The leader ends the
//! flight exactly once with [`Flight::complete`], or, if it unwinds, its
//! [`Leader`] guard completes it with [`Outcome::Panicked`].
//!
//! ```text
//!            complete(outcome)                     (leader, once)
//!   RUNNING ───────────────────────────▶ DONE
//!      │  outcome cell: leader writes it, then stores DONE (Release) under `lock`
//!      │  waiters: load DONE (Acquire) → read the cell, else sleep on `done`
//! ```
//!
//! * **One writer, then many readers.** The outcome cell is written only by
//!   the leader and only before it stores `done = true` with `Release`; a
//!   waiter reads the cell only after loading `done == true` with `Acquire`,
//!   so the write happens before every read and the cell is never written
//!   again.
//! * **No lost wake-up.** The leader stores `done` while holding `lock`, and
//!   a waiter checks `done` again under `lock` before it sleeps on the
//!   condition variable. Either the waiter's check under the lock comes
//!   first, and it is asleep (the lock released atomically with the wait)
//!   before the leader can take the lock, store and `notify_all`; or the
//!   store comes first and the waiter's check sees it.
//! * **Parking, not spinning.** A waiter that finds the flight running sleeps
//!   on a condition variable at once: the initialisers this guards (a session
//!   set-up, a checkpoint load) take far longer than a wake-up.
//!
//! The loom models in `loom_tests/flight.rs` check both properties, with the
//! leader racing two waiters, for a value, an error and an unwinding leader.

use std::any::Any;
use std::fmt;

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, Condvar, Mutex, UnsafeCell};

/// How a flight ended.
pub enum Outcome<V> {
    /// The initialiser produced this value.
    Ready(V),
    /// The initialiser returned this error (type-erased: waiters may have
    /// called with another error type; each downcasts to its own).
    Failed(std::sync::Arc<dyn Any + Send + Sync>),
    /// The leader unwound before completing the flight.
    Panicked,
}

impl<V: Clone> Clone for Outcome<V> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Ready(v) => Outcome::Ready(v.clone()),
            Outcome::Failed(e) => Outcome::Failed(e.clone()),
            Outcome::Panicked => Outcome::Panicked,
        }
    }
}

impl<V> fmt::Debug for Outcome<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ready(_) => "Ready(..)",
            Outcome::Failed(_) => "Failed(..)",
            Outcome::Panicked => "Panicked",
        })
    }
}

/// One initialisation in progress, shared by its leader and its waiters.
pub struct Flight<V> {
    /// Set once, by the leader, after `outcome` is written.
    done: AtomicBool,
    /// Written once by the leader before `done`; read-only afterwards.
    outcome: UnsafeCell<Option<Outcome<V>>>,
    /// Guards the sleep/notify hand-off (holds no data).
    lock: Mutex<()>,
    /// Waiters sleep here until `done`.
    wake: Condvar,
}

// SAFETY: the only non-`Sync` part is `outcome`, which is written once by the
// leader before `done` is published with `Release` and only read (shared)
// after `done` is observed with `Acquire` (see the module docs); the value is
// then shared by reference across threads, which needs `V: Sync`, and moved
// out of no thread, while the flight may be dropped on any thread (`V: Send`).
unsafe impl<V: Send + Sync> Sync for Flight<V> {}
// SAFETY: as above: the flight owns a `V` that may be dropped on any thread.
unsafe impl<V: Send + Sync> Send for Flight<V> {}

impl<V> Default for Flight<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Flight<V> {
    /// A running flight.
    pub fn new() -> Self {
        Self {
            done: AtomicBool::new(false),
            outcome: UnsafeCell::new(None),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Whether the flight has ended.
    #[cfg(all(test, not(latchfree_loom)))] // Its unit tests check it.
    pub fn is_done(&self) -> bool {
        // Acquire: pairs with the Release store in `complete`.
        self.done.load(Ordering::Acquire)
    }

    /// Ends the flight with `outcome` and wakes every waiter.
    ///
    /// # Safety
    ///
    /// Only the flight's leader may call this, and at most once (the
    /// [`Leader`] guard is the safe way to do both).
    pub(crate) unsafe fn complete(&self, outcome: Outcome<V>) {
        // SAFETY: the caller is the leader and calls once, so this is the one
        // write; no waiter reads the cell before `done` is true, which is
        // stored below, after the write.
        self.outcome
            .with_mut(|cell| unsafe { *cell = Some(outcome) });
        {
            let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            // Release: pairs with the Acquire loads in `wait` and `is_done`:
            // a waiter that sees `true` sees the outcome written above.
            // Under `lock`: a waiter that saw `false` under the lock is
            // already asleep on `wake` and gets the notification below.
            self.done.store(true, Ordering::Release);
        }
        self.wake.notify_all();
    }

    /// Waits (sleeping, not spinning) until the flight ends, and returns a
    /// copy of its outcome.
    pub fn wait(&self) -> Outcome<V>
    where
        V: Clone,
    {
        // Acquire: pairs with the Release store in `complete`.
        if !self.done.load(Ordering::Acquire) {
            let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            // Acquire: as above; checked under the lock, so the store cannot
            // fall between this check and the sleep.
            while !self.done.load(Ordering::Acquire) {
                held = self.wake.wait(held).unwrap_or_else(|e| e.into_inner());
            }
        }
        self.outcome.with(|cell| {
            // SAFETY: `done` is true (loaded with Acquire), so the leader's
            // one write happened before this read and there is no other.
            match unsafe { &*cell } {
                Some(outcome) => outcome.clone(),
                // `done` is stored only after `Some` is written.
                None => Outcome::Panicked,
            }
        })
    }
}

/// The leader's side of a flight: completes it exactly once, with
/// [`Outcome::Panicked`] if dropped (an unwinding initialiser) before
/// [`Leader::finish`].
pub struct Leader<V> {
    flight: Option<Arc<Flight<V>>>,
}

impl<V> Leader<V> {
    /// Leads `flight`.
    ///
    /// # Safety
    ///
    /// `flight` must be running and this must be its only leader.
    pub(crate) unsafe fn new(flight: Arc<Flight<V>>) -> Self {
        Self {
            flight: Some(flight),
        }
    }

    /// The flight led.
    pub fn flight(&self) -> &Arc<Flight<V>> {
        self.flight
            .as_ref()
            .expect("a leader holds its flight until it finishes")
    }

    /// Ends the flight with `outcome`.
    pub fn finish(mut self, outcome: Outcome<V>) {
        if let Some(flight) = self.flight.take() {
            // SAFETY: `Leader::new`'s contract makes this the only leader, and
            // `take` makes this the only call.
            unsafe { flight.complete(outcome) };
        }
    }
}

impl<V> Drop for Leader<V> {
    fn drop(&mut self) {
        if let Some(flight) = self.flight.take() {
            // SAFETY: as in `finish`; `finish` did not run.
            unsafe { flight.complete(Outcome::Panicked) };
        }
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn waiters_park_until_the_leader_completes_and_all_see_the_value() {
        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a fresh flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        let (ready_tx, ready_rx) = mpsc::channel();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let flight = flight.clone();
                let ready_tx = ready_tx.clone();
                thread::spawn(move || {
                    ready_tx.send(()).unwrap();
                    match flight.wait() {
                        Outcome::Ready(v) => v,
                        other => panic!("unexpected {other:?}"),
                    }
                })
            })
            .collect();
        for _ in 0..4 {
            ready_rx.recv().unwrap();
        }
        assert!(!flight.is_done());
        leader.finish(Outcome::Ready(7));
        for w in waiters {
            assert_eq!(w.join().unwrap(), 7);
        }
        assert!(flight.is_done());
    }

    #[test]
    fn a_dropped_leader_completes_with_panicked() {
        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a fresh flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        let waiter = {
            let flight = flight.clone();
            thread::spawn(move || matches!(flight.wait(), Outcome::Panicked))
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _leader = leader;
            panic!("init failed");
        }));
        assert!(r.is_err());
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn an_error_reaches_every_waiter() {
        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a fresh flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        leader.finish(Outcome::Failed(std::sync::Arc::new("no")));
        for _ in 0..2 {
            match flight.wait() {
                Outcome::Failed(e) => assert_eq!(*e.downcast::<&str>().unwrap(), "no"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
