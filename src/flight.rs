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
//! * **No wake-up for no one.** `notify_all` is a system call on Linux
//!   whether or not a thread sleeps (std's condition variable does not
//!   count its sleepers), and most flights have no waiter. So a waiter
//!   sets `sleeping`, under `lock`, before it first sleeps, and the leader
//!   reads it under `lock` in the same critical section as its store of
//!   `done`: a waiter that sleeps took the lock before that section (the
//!   store comes after its check), so the leader sees its flag and
//!   notifies; one that comes after sees `done` and never sleeps.
//! * **Parking, not spinning.** A waiter that finds the flight running sleeps
//!   on a condition variable at once: the initialisers this guards (a session
//!   set-up, a checkpoint load) take far longer than a wake-up.
//!
//! * **Futures wait the same way.** An async waiter ([`Flight::wait_async`])
//!   checks `done` under `lock` too, and if it is still false registers its
//!   waker in the list `lock` guards; `complete` takes that list under the
//!   lock, after storing `done`, and wakes every waker once it has released
//!   it. A registration under the lock either sees `done` or is taken by the
//!   completion. A waiter future dropped while registered removes its waker
//!   under the lock (`crate::wakers`).
//!
//! # Why our own waiter list
//!
//! The lock and the check under it are already here for the sleeping
//! threads; a list of wakers beside the condition variable adds no
//! dependency, keeps the protocol in one place the loom models see whole
//! (an external crate such as `event-listener` is opaque to them), and lets
//! one flight serve blocking and async callers at once: an async leader's
//! waiters may be threads and a thread's waiters may be tasks. Waiting is the
//! slow path (a load takes milliseconds), so a mutex there costs nothing a
//! hit pays; hits never reach a flight.
//!
//! # Leaders, re-entry and cancellation
//!
//! While a leader runs its initialiser, the flight's address is on a
//! thread-local stack of the flights this thread is leading ([`Leading`]);
//! a blocking initialiser pushes it once, an async one around each poll of
//! its future ([`LeadingFuture`]), so the stack names what the code on this
//! thread is inside of at this instant. A caller that finds a flight running
//! and finds it on that stack is inside that flight's own initialiser: it
//! would wait for itself forever, so the maps answer `Recursive` at once
//! instead ([`Flight::led_here`]). (An initialiser that hands the same key
//! to another thread or task and waits for it is not seen; it deadlocks as
//! it would with any lock.)
//!
//! A [`Leader`] dropped without [`Leader::finish`] completes the flight as
//! [`Outcome::Panicked`] when the thread is unwinding, and otherwise (an
//! async leader's future dropped mid-load: cancellation) as
//! [`Outcome::Cancelled`], which tells waiters to start over: one of them
//! leads a new flight.
//!
//! The loom models in `loom_tests/flight.rs` check these properties, with the
//! leader racing two waiters, for a value, an error and an unwinding leader,
//! and with async waiters registering and being dropped during `complete`.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard, UnsafeCell};
use crate::wakers::WakerList;

/// How a flight ended.
pub enum Outcome<V> {
    /// The initialiser produced this value.
    Ready(V),
    /// The initialiser returned this error (type-erased: waiters may have
    /// called with another error type; each downcasts to its own).
    Failed(std::sync::Arc<dyn Any + Send + Sync>),
    /// The leader unwound before completing the flight.
    Panicked,
    /// The leader was dropped without unwinding and without completing the
    /// flight (its future was cancelled): waiters start over.
    Cancelled,
}

impl<V: Clone> Clone for Outcome<V> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Ready(v) => Outcome::Ready(v.clone()),
            Outcome::Failed(e) => Outcome::Failed(e.clone()),
            Outcome::Panicked => Outcome::Panicked,
            Outcome::Cancelled => Outcome::Cancelled,
        }
    }
}

impl<V> fmt::Debug for Outcome<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ready(_) => "Ready(..)",
            Outcome::Failed(_) => "Failed(..)",
            Outcome::Panicked => "Panicked",
            Outcome::Cancelled => "Cancelled",
        })
    }
}

/// What `Flight::lock` guards: who is waiting, and how.
struct Waiting {
    /// The wakers of async waiters.
    wakers: WakerList,
    /// Whether a thread has slept on `Flight::wake` (set before it first
    /// sleeps, never cleared): `complete` notifies only then.
    sleeping: bool,
}

/// One initialisation in progress, shared by its leader and its waiters.
pub struct Flight<V> {
    /// Set once, by the leader, after `outcome` is written.
    done: AtomicBool,
    /// Written once by the leader before `done`; read-only afterwards.
    outcome: UnsafeCell<Option<Outcome<V>>>,
    /// Guards the sleep/notify hand-off and the wakers of async waiters.
    lock: Mutex<Waiting>,
    /// Waiting threads sleep here until `done`.
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
            lock: Mutex::new(Waiting {
                wakers: WakerList::new(),
                sleeping: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Whether the flight has ended.
    #[cfg(all(test, not(latchfree_loom)))] // Its unit tests check it.
    pub fn is_done(&self) -> bool {
        // Acquire: pairs with the Release store in `complete`.
        self.done.load(Ordering::Acquire)
    }

    /// Whether this flight's initialiser is running on this thread now (the
    /// caller is inside it: waiting would wait for itself).
    pub(crate) fn led_here(&self) -> bool {
        is_leading(address(self))
    }

    /// How many async waiters are registered (for the loom models).
    #[cfg(all(test, latchfree_loom))]
    pub(crate) fn waiters(&self) -> usize {
        self.lock().wakers.len()
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Every update under the lock is one push, removal, take or flag
        // store: a panic cannot leave it half-changed, so poison is ignored.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
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
        let (wakers, sleeping) = {
            let mut waiting = self.lock();
            // Release: pairs with the Acquire loads in `wait`, `Wait::poll`
            // and `is_done`: a waiter that sees `true` sees the outcome
            // written above. Under `lock`: a waiter that saw `false` under
            // the lock is already asleep on `wake` (and set `sleeping`
            // first), or its waker is in the list taken here.
            self.done.store(true, Ordering::Release);
            (waiting.wakers.take(), waiting.sleeping)
        };
        if sleeping {
            self.wake.notify_all();
        }
        wakers.wake();
    }

    /// Waits (sleeping, not spinning) until the flight ends, and returns a
    /// copy of its outcome.
    pub fn wait(&self) -> Outcome<V>
    where
        V: Clone,
    {
        // Acquire: pairs with the Release store in `complete`.
        if !self.done.load(Ordering::Acquire) {
            let mut held = self.lock();
            // Acquire: as above; checked under the lock, so the store cannot
            // fall between this check and the sleep.
            while !self.done.load(Ordering::Acquire) {
                // Before the sleep, under the lock: `complete` notifies.
                held.sleeping = true;
                held = self.wake.wait(held).unwrap_or_else(|e| e.into_inner());
            }
        }
        self.outcome_now()
    }

    #[cfg_attr(not(feature = "async"), allow(dead_code))] // The async twins.
    /// As [`wait`](Self::wait), giving up after `timeout`: `None` if the
    /// flight has not ended by then (the leader is not affected).
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<Outcome<V>>
    where
        V: Clone,
    {
        // Acquire: pairs with the Release store in `complete`.
        if !self.done.load(Ordering::Acquire) {
            let deadline = std::time::Instant::now() + timeout;
            let mut held = self.lock();
            // Acquire: as in `wait`, checked under the lock.
            while !self.done.load(Ordering::Acquire) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return None;
                }
                // Before the sleep, under the lock: `complete` notifies.
                held.sleeping = true;
                held = self
                    .wake
                    .wait_timeout(held, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        Some(self.outcome_now())
    }

    /// Waits, as a future, until the flight ends, and returns a copy of its
    /// outcome. Dropping the future before it is ready removes its waker.
    pub fn wait_async(&self) -> Wait<'_, V> {
        Wait {
            flight: self,
            registration: None,
        }
    }

    /// The outcome; `done` must have been seen true with Acquire.
    fn outcome_now(&self) -> Outcome<V>
    where
        V: Clone,
    {
        self.outcome.with(|cell| {
            // SAFETY: the callers saw `done` true (loaded with Acquire), so the
            // leader's one write happened before this read and there is no
            // other.
            match unsafe { &*cell } {
                Some(outcome) => outcome.clone(),
                // `done` is stored only after `Some` is written.
                None => Outcome::Panicked,
            }
        })
    }
}

/// The future of [`Flight::wait_async`].
#[must_use = "futures do nothing unless polled"]
#[cfg_attr(not(feature = "async"), allow(dead_code))] // The async twins.
pub struct Wait<'a, V> {
    flight: &'a Flight<V>,
    /// The id of this future's waker in the flight's list, once registered.
    registration: Option<u64>,
}

impl<V: Clone> Future for Wait<'_, V> {
    type Output = Outcome<V>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<V>> {
        let flight = self.flight;
        // Acquire: pairs with the Release store in `complete`.
        if !flight.done.load(Ordering::Acquire) {
            let mut waiting = flight.lock();
            // Acquire: as above; checked under the lock, so the completion
            // either comes before this check or takes the waker registered
            // below.
            if !flight.done.load(Ordering::Acquire) {
                waiting.wakers.register(&mut self.registration, cx.waker());
                return Poll::Pending;
            }
        }
        // `complete` took the list, this future's waker with it.
        self.registration = None;
        Poll::Ready(flight.outcome_now())
    }
}

impl<V> Drop for Wait<'_, V> {
    fn drop(&mut self) {
        if let Some(id) = self.registration.take() {
            // After `complete` the list is empty and this finds nothing.
            self.flight.lock().wakers.remove(id);
        }
    }
}

/// The leader's side of a flight: completes it exactly once, with
/// [`Outcome::Panicked`] (when unwinding) or [`Outcome::Cancelled`] (when
/// dropped otherwise: a cancelled future) if dropped before
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

    /// Marks this thread as inside the flight's initialiser until the guard
    /// is dropped (see [`Flight::led_here`]).
    pub(crate) fn enter(&self) -> Leading {
        Leading::enter(address(&**self.flight()))
    }

    /// `init`, marking this thread as inside the flight's initialiser
    /// whenever it is polled.
    #[cfg_attr(not(feature = "async"), allow(dead_code))] // The async twins.
    pub(crate) fn lead<F: Future>(&self, init: F) -> LeadingFuture<F> {
        LeadingFuture::new(address(&**self.flight()), init)
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
            let outcome = if std::thread::panicking() {
                Outcome::Panicked
            } else {
                Outcome::Cancelled
            };
            // SAFETY: as in `finish`; `finish` did not run.
            unsafe { flight.complete(outcome) };
        }
    }
}

crate::sync::thread_local! {
    // Not a `const` initialiser: loom's `thread_local!` takes none.
    #[allow(clippy::missing_const_for_thread_local)]
    /// The addresses of the initialisers this thread is inside of now,
    /// innermost last.
    static LEADING: RefCell<Vec<usize>> = RefCell::new(Vec::new());
}

/// The identity of a flight (or of another single-flight holder, such as a
/// `Shared`) on the [`LEADING`] stack: its address, which stays its own
/// while it is on the stack (the leader holds it alive).
pub(crate) fn address<T>(of: &T) -> usize {
    std::ptr::from_ref(of) as usize
}

/// Whether this thread is inside the initialiser of the holder at `address`.
pub(crate) fn is_leading(address: usize) -> bool {
    LEADING.with(|stack| stack.borrow().contains(&address))
}

/// While held, this thread is inside the initialiser of the holder at its
/// address.
#[must_use = "the mark lasts while the guard is held"]
pub(crate) struct Leading(usize);

impl Leading {
    /// Marks this thread as inside the initialiser of `address`.
    pub(crate) fn enter(address: usize) -> Self {
        LEADING.with(|stack| stack.borrow_mut().push(address));
        Self(address)
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        LEADING.with(|stack| {
            let mut stack = stack.borrow_mut();
            if let Some(at) = stack.iter().rposition(|a| *a == self.0) {
                stack.remove(at);
            }
        });
    }
}

/// An initialiser's future, polled with its holder marked as led on this
/// thread (see [`Leading`]).
#[must_use = "futures do nothing unless polled"]
#[cfg_attr(not(feature = "async"), allow(dead_code))] // The async twins.
pub(crate) struct LeadingFuture<F> {
    address: usize,
    init: F,
}

#[cfg_attr(not(feature = "async"), allow(dead_code))] // The async twins.
impl<F> LeadingFuture<F> {
    pub(crate) fn new(address: usize, init: F) -> Self {
        Self { address, init }
    }
}

impl<F: Future> Future for LeadingFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let address = self.address;
        // SAFETY: structural pinning of `init`: it is never moved out of
        // `self` (no method hands it out by value, `Drop` is not
        // implemented, and the struct is `Unpin` only when `F` is).
        let init = unsafe { self.map_unchecked_mut(|me| &mut me.init) };
        let _inside = Leading::enter(address);
        init.poll(cx)
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

    struct CountWakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn an_async_waiter_is_woken_once_and_a_dropped_one_leaks_nothing() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};

        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a fresh flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        let (kept, dropped) = (
            std::sync::Arc::new(CountWakes(Default::default())),
            std::sync::Arc::new(CountWakes(Default::default())),
        );
        let (kept_waker, dropped_waker) = (Waker::from(kept.clone()), Waker::from(dropped.clone()));
        let mut waiting = Box::pin(flight.wait_async());
        let mut cancelled = Box::pin(flight.wait_async());
        assert!(
            waiting
                .as_mut()
                .poll(&mut Context::from_waker(&kept_waker))
                .is_pending()
        );
        // Polled again with the same waker: still one registration.
        assert!(
            waiting
                .as_mut()
                .poll(&mut Context::from_waker(&kept_waker))
                .is_pending()
        );
        assert!(
            cancelled
                .as_mut()
                .poll(&mut Context::from_waker(&dropped_waker))
                .is_pending()
        );
        assert_eq!(flight.lock().wakers.len(), 2);
        drop(cancelled);
        drop(dropped_waker);
        assert_eq!(
            flight.lock().wakers.len(),
            1,
            "a dropped waiter removes its waker"
        );
        assert_eq!(
            std::sync::Arc::strong_count(&dropped),
            1,
            "and its waker is freed"
        );
        leader.finish(Outcome::Ready(3));
        assert_eq!(kept.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(dropped.0.load(std::sync::atomic::Ordering::Relaxed), 0);
        match waiting.as_mut().poll(&mut Context::from_waker(&kept_waker)) {
            Poll::Ready(Outcome::Ready(3)) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(flight.lock().wakers.len(), 0);
    }

    #[test]
    fn a_leader_dropped_without_unwinding_completes_with_cancelled() {
        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a fresh flight, one leader.
        drop(unsafe { Leader::new(flight.clone()) });
        assert!(matches!(flight.wait(), Outcome::Cancelled));
    }

    #[test]
    fn only_the_leaders_thread_is_inside_while_it_leads() {
        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a fresh flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        assert!(!flight.led_here());
        {
            let _inside = leader.enter();
            assert!(flight.led_here());
            let elsewhere = flight.clone();
            assert!(!thread::spawn(move || elsewhere.led_here()).join().unwrap());
        }
        assert!(!flight.led_here());
        leader.finish(Outcome::Ready(1));
    }

    #[test]
    fn a_leading_future_marks_its_flight_only_while_polled() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};

        let flight = Arc::new(Flight::<u32>::new());
        // SAFETY: a fresh flight, one leader.
        let leader = unsafe { Leader::new(flight.clone()) };
        let seen = std::cell::Cell::new(Vec::new());
        let probe = flight.clone();
        let mut polls = 0;
        let init = std::future::poll_fn(|cx| {
            let mut inside = seen.take();
            inside.push(probe.led_here());
            seen.set(inside);
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(7)
            }
        });
        let mut led = Box::pin(leader.lead(init));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(led.as_mut().poll(&mut cx).is_pending());
        assert!(!flight.led_here(), "between polls nothing is inside");
        assert!(led.as_mut().poll(&mut cx).is_pending());
        assert!(matches!(led.as_mut().poll(&mut cx), Poll::Ready(7)));
        drop(led);
        assert_eq!(seen.take(), [true, true, true]);
        leader.finish(Outcome::Ready(7));
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
