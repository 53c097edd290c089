//! Loom models of `crate::flight`: the single-flight slot behind
//! `SessionRegistry::get_or_create` and `TtlCache::get_or_load`.
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target-loom \
//!     cargo test --release --test loom_flight
//! ```
//!
//! The outcome of a flight lives in a loom `UnsafeCell`, so a waiter that
//! could read it without the leader's write in its past is reported as a
//! causality violation; a waiter that sleeps through the completion is
//! reported as a deadlock. Results are collected first and asserted after
//! every thread is joined.
//!
//! # Models
//!
//! 1. [`the_value_reaches_every_waiter`]: a leader completes with a value
//!    while two waiters wait: both get the value (no lost wake-up, no read
//!    before the write).
//! 2. [`an_error_reaches_every_waiter`]: the same with an error: both get
//!    the error, downcast to its type.
//! 3. [`an_unwinding_leader_releases_the_waiters`]: the leader's guard is
//!    dropped without finishing while the thread unwinds (what a panicking
//!    initialiser does): the waiter gets `Panicked`.
//! 4. [`one_init_per_key_with_publish_before_remove`]: two callers run the
//!    map-level protocol of `TtlMap::get_or_init` on one key, with a loom
//!    `Mutex<Option<Arc<Flight>>>` standing in for the key's bucket in the
//!    map of flights and an atomic for the lock-free index: check the index,
//!    lock the slot, join a flight or re-check the index and lead, run the
//!    init with no lock held, publish into the index, then remove the
//!    flight, then complete it. Exactly one init runs and both callers get
//!    its value.
//! 5. [`an_async_waiter_is_woken_by_the_completion`]: two waiters are
//!    futures run by `loom::future::block_on`, racing the leader's
//!    `complete`: both get the value. A waker registered after the
//!    completion took the list (no wake-up), or a check that misses `done`,
//!    is a deadlock in `block_on`.
//! 6. [`a_waiter_dropped_during_the_completion_leaks_nothing`]: a waiter
//!    future is polled once and dropped while the leader completes: after
//!    both, the flight's waker list is empty and the waker's last clone is
//!    gone (no leak, no use after the drop), and the waker was woken at most
//!    once.
//! 7. [`a_cancelled_leader_tells_an_async_waiter_to_start_over`]: the
//!    leader is dropped without unwinding (an async leader's future
//!    dropped): the async waiter gets `Cancelled`.
//!
//! # Mutations
//!
//! Each was applied to `src/flight.rs` (or, for F4, to the protocol in
//! model 4, which mirrors `src/ttl/mod.rs`) and the models run against it.
//! `C` causality violation, `D` deadlock, `A` an assertion, `-` passes.
//!
//! | #  | mutation                                                  | 1 | 2 | 3 | 4 |
//! | -- | --------------------------------------------------------- | - | - | - | - |
//! | F1 | `complete` stores `done` without holding `lock`           | D | D | D | D |
//! | F2 | `complete` stores `done` with `Relaxed`                   | C | C | C | C |
//! | F3 | the leader removes its flight before publishing the value | - | - | - | A |
//! | F6 | `wait` sleeps without setting `sleeping` first            | D | D | D | D |
//!
//! Model 5 (async waiters) was run against one mutation of its own: F5,
//! `Wait::poll` registers its waker without re-checking `done` under the
//! lock: `D` (a deadlock in `block_on`).
//!
//! F1, F2 and F6 were applied to `src/flight.rs` and every model run against
//! them (F6: `complete` then skips `notify_all`, and the sleeper is never
//! woken); F3 is a property of the map-level protocol, shown by model 4's
//! `publish_first = false` variant, run as a test that must find an
//! interleaving with two inits
//! ([`removing_the_flight_first_allows_a_second_init`]).
//!
//! At the default bound of 3 preemptions the five models take 0.2 s in all
//! (not counting the build, about 3 minutes cold in `target-loom`).

use std::sync::Arc as StdArc;

use crate::flight::{Flight, Leader, Outcome};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use super::common::model;

fn value(o: Outcome<u32>) -> Option<u32> {
    match o {
        Outcome::Ready(v) => Some(v),
        _ => None,
    }
}

#[test]
fn the_value_reaches_every_waiter() {
    model(|| the_value_reaches_two_waiters(|flight| flight.wait()));
}

/// A leader completes with 42 while two threads wait with `wait`.
fn the_value_reaches_two_waiters(wait: fn(&Flight<u32>) -> Outcome<u32>) {
    let flight = Arc::new(Flight::<u32>::new());
    // SAFETY: a new flight, one leader.
    let leader = unsafe { Leader::new(flight.clone()) };
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let flight = flight.clone();
            thread::spawn(move || value(wait(&flight)))
        })
        .collect();
    leader.finish(Outcome::Ready(42));
    let got: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(got, vec![Some(42), Some(42)]);
}

#[test]
fn an_error_reaches_every_waiter() {
    model(|| {
        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a new flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let flight = flight.clone();
                thread::spawn(move || match flight.wait() {
                    Outcome::Failed(e) => e.downcast::<&str>().ok().map(|e| *e),
                    _ => None,
                })
            })
            .collect();
        leader.finish(Outcome::Failed(StdArc::new("broken")));
        let got: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(got, vec![Some("broken"), Some("broken")]);
    });
}

#[test]
fn an_unwinding_leader_releases_the_waiters() {
    model(|| {
        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a new flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        let waiter = {
            let flight = flight.clone();
            thread::spawn(move || matches!(flight.wait(), Outcome::Panicked))
        };
        // Dropped while unwinding: `Panicked` (dropped otherwise, the
        // flight is `Cancelled`: model 7).
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _leader = leader;
            std::panic::resume_unwind(Box::new("init failed"));
        }));
        assert!(unwound.is_err());
        assert!(waiter.join().unwrap());
    });
}

/// The map-level protocol of `TtlMap::get_or_init` for one key; returns
/// (value, whether this caller ran the init).
fn get_or_init(
    index: &AtomicUsize,
    slot: &Mutex<Option<Arc<Flight<u32>>>>,
    inits: &AtomicUsize,
    publish_first: bool,
) -> (Option<u32>, bool) {
    // Acquire: pairs with the Release publish below (scc's peek does the same).
    let v = index.load(Ordering::Acquire);
    if v != 0 {
        return (Some(v as u32), false);
    }
    let mut held = slot.lock().unwrap();
    if let Some(flight) = held.as_ref() {
        let flight = flight.clone();
        drop(held);
        return (value(flight.wait()), false);
    }
    let v = index.load(Ordering::Acquire);
    if v != 0 {
        return (Some(v as u32), false);
    }
    let flight = Arc::new(Flight::new());
    *held = Some(flight.clone());
    drop(held);
    // SAFETY: this caller inserted the flight: the one leader.
    let leader = unsafe { Leader::new(flight) };
    let n = inits.fetch_add(1, Ordering::Relaxed) + 1;
    let v = 7 * n;
    if publish_first {
        index.store(v, Ordering::Release);
        *slot.lock().unwrap() = None;
    } else {
        *slot.lock().unwrap() = None;
        index.store(v, Ordering::Release);
    }
    leader.finish(Outcome::Ready(v as u32));
    (Some(v as u32), true)
}

fn race(publish_first: bool) -> (usize, Vec<Option<u32>>) {
    let index = Arc::new(AtomicUsize::new(0));
    let slot = Arc::new(Mutex::new(None));
    let inits = Arc::new(AtomicUsize::new(0));
    let other = {
        let (index, slot, inits) = (index.clone(), slot.clone(), inits.clone());
        thread::spawn(move || get_or_init(&index, &slot, &inits, publish_first).0)
    };
    let mine = get_or_init(&index, &slot, &inits, publish_first).0;
    let theirs = other.join().unwrap();
    (inits.load(Ordering::Relaxed), vec![mine, theirs])
}

#[test]
fn one_init_per_key_with_publish_before_remove() {
    model(|| {
        let (inits, got) = race(true);
        assert_eq!(inits, 1);
        assert_eq!(got, vec![Some(7), Some(7)]);
    });
}

#[test]
fn removing_the_flight_first_allows_a_second_init() {
    let found = StdArc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = found.clone();
    model(move || {
        let (inits, _) = race(false);
        if inits == 2 {
            seen.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    assert!(
        found.load(std::sync::atomic::Ordering::Relaxed),
        "the mutation must be caught: some interleaving runs two inits"
    );
}

#[test]
fn an_async_waiter_is_woken_by_the_completion() {
    model(|| the_value_reaches_two_waiters(|flight| loom::future::block_on(flight.wait_async())));
}

/// Counts its wakes (a std waker: loom need not see it, only the flight's
/// list that holds it).
struct CountWakes(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountWakes {
    fn wake(self: StdArc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_waiter_dropped_during_the_completion_leaks_nothing() {
    model(|| {
        use std::future::Future;
        use std::task::{Context, Waker};

        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a new flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        let woken = StdArc::new(CountWakes(Default::default()));
        let waiter = {
            let (flight, woken) = (flight.clone(), woken.clone());
            thread::spawn(move || {
                let waker = Waker::from(woken);
                let mut wait = Box::pin(flight.wait_async());
                let first = wait.as_mut().poll(&mut Context::from_waker(&waker));
                drop(wait);
                first.is_ready()
            })
        };
        leader.finish(Outcome::Ready(1));
        let ready_at_once = waiter.join().unwrap();
        assert_eq!(flight.waiters(), 0, "a waker stayed in the list");
        assert_eq!(
            StdArc::strong_count(&woken),
            1,
            "a clone of the waker leaked"
        );
        let wakes = woken.0.load(std::sync::atomic::Ordering::Relaxed);
        assert!(wakes <= 1, "woken {wakes} times");
        if ready_at_once {
            assert_eq!(wakes, 0, "a waiter that never registered was woken");
        }
    });
}

#[test]
fn a_cancelled_leader_tells_an_async_waiter_to_start_over() {
    model(|| {
        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a new flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        let waiter = {
            let flight = flight.clone();
            thread::spawn(move || {
                matches!(
                    loom::future::block_on(flight.wait_async()),
                    Outcome::Cancelled
                )
            })
        };
        drop(leader);
        assert!(waiter.join().unwrap());
    });
}
