//! A swappable shared instance: initialised once, read by every thread
//! without blocking, replaced or reset while in use.
//!
//! A server holds a few objects that every request reads and that are
//! sometimes replaced: a loaded model or checkpoint, a parsed configuration, a
//! connection pool, a routing table. The classic holder is
//! `RwLock<Option<Arc<T>>>` (the locked twin,
//! [`LockedShared`](crate::baseline::LockedShared)): every read takes the lock,
//! so readers queue behind a replacing writer, and a preempted writer stalls
//! them all. Resetting the instance while other threads use it is the failure
//! this module exists to prevent (F8): with a plain pointer, the reset frees a
//! value a reader still holds.
//!
//! # The algorithm
//!
//! [`Shared<T>`] keeps the current value as an `Option<Arc<T>>` in an
//! [`arc_swap::ArcSwapOption`]. A read ([`Shared::load`]) does not touch the
//! `Arc`'s reference count: it publishes the pointer it is about to use in
//! one of a few per-thread *debt* slots (a hazard pointer, in effect), then
//! re-checks the pointer. A writer that swaps the value out walks the debt
//! slots and, for every reader that owes a reference on the old pointer,
//! pays it (increments the count on the reader's behalf) before it drops its
//! own. So the old value is freed exactly when its last reader — guard or
//! `Arc` — lets go, on that reader's thread, and its `Drop` runs exactly once.
//! A read is a few atomic operations on the reader's own debt slot plus
//! one read of the shared pointer: no lock and no write to a shared cache
//! line, so readers scale with cores and a writer never blocks them.
//!
//! Initialisation is single-flight. [`get_or_init`](Shared::get_or_init)
//! first reads; only when the slot is empty does it take the *init lock*
//! (a mutex that readers never touch), re-read, and either join the
//! initialiser that is running (a `crate::flight` slot kept under the
//! lock) or install a flight of its own and run its initialiser with the
//! lock released. Concurrent callers wait on that flight (a thread sleeps,
//! a future of [`get_or_init_async`](Shared::get_or_init_async) awaits)
//! instead of running their own initialiser, then look again. A call from
//! inside the running initialiser itself finds its own flight (see
//! `crate::flight`, "Leaders, re-entry and cancellation") and panics at
//! once instead of waiting for itself. The result is installed with a
//! compare-and-swap from empty: if a [`store`](Shared::store) raced in while
//! the initialiser ran, the stored value wins and the initialised one is
//! dropped, so `get_or_init` never replaces a value. An initialiser that
//! fails ([`get_or_try_init`](Shared::get_or_try_init)), panics or (async)
//! is cancelled leaves the slot empty and the lock usable: the next caller
//! (a waiter, or a later call) runs its own initialiser. Nothing is
//! poisoned. The value is installed before the flight ends, so a waiter
//! woken by a successful initialiser finds it.
//!
//! # Why arc-swap, not crossbeam-epoch
//!
//! Both give lock-free reads that never wait for a writer. `latchfree bench
//! shared` runs them side by side with the locked twin (the README's
//! `shared` section has a measured table).
//!
//! On reads the epoch pin is faster: 1.5–2.2× the arc-swap guard without a
//! writer (one fenced store per pin, against the guard's two atomic
//! read-modify-writes on its debt slot), and the guard is 1.2–2.7× the lock,
//! gaining most where readers outnumber cores (8 threads on 2 cores: a
//! preempted lock holder stalls everyone). A swap is slowest on arc-swap
//! (~225 ns: it walks every thread's debt slots), ~4× the lock.
//!
//! `Shared` uses arc-swap anyway, for what a shared *instance* needs and an
//! epoch scheme does not give: **the old value is freed when its last
//! reader lets go**, on that reader's thread. Under crossbeam-epoch a
//! replaced value is destroyed by a later collection, at a time and on a
//! thread nobody chooses; a replaced multi-gigabyte model or a connection
//! pool holding sockets lingers until enough pins advance the global epoch
//! (and a quiet server may never advance it), one reader that stays pinned
//! holds back every deferred free in the process, and the deferred
//! destructor needs `T: Send + 'static`. With arc-swap "every stored value
//! is dropped exactly once, after its last handle is gone" is a property
//! a test can assert (`tests/shared_stress.rs` does), and a guard turns
//! into an `Arc` ([`SharedGuard::into_arc`]) for a long hold. The
//! difference the epoch pin saves, 10–20 ns per read, is small beside the
//! work a request does with the instance it read; replacements are rare.
//! Cloning the `Arc` on every read (`load_full`) is the design to avoid: the
//! shared reference count makes it no faster than the lock.
//!
//! # Guards
//!
//! A [`SharedGuard`] borrows a debt slot; each thread has a few (8) fast
//! slots, and guards beyond them fall back to a reference-count increment.
//! Hold a guard for the duration of one request, not for long: for a long
//! hold take an `Arc` ([`SharedGuard::into_arc`] or [`Shared::load_arc`]).
//! Neither blocks a writer.
//!
//! # Metrics
//!
//! Built with [`SharedBuilder::stats`], a `Shared` counts its slow-path
//! events (reads are not counted) as `PREFIX_inits_total` (initialisers that
//! installed a value), `PREFIX_init_failures_total` (initialisers that
//! returned an error or panicked), `PREFIX_init_waits_total` (callers of
//! `get_or_init` that waited for another caller's initialiser and took its
//! value), `PREFIX_replacements_total` (`store`, `swap`, `rcu`) and
//! `PREFIX_resets_total` (`take`, `reset` of a value that was set).
//!
//! ```
//! use latchfree::shared::Shared;
//!
//! struct Model { version: u32 }
//!
//! let model: Shared<Model> = Shared::new();
//! assert!(model.load().is_none());
//! // The first caller loads it; concurrent callers wait for that one load.
//! assert_eq!(model.get_or_init(|| Model { version: 1 }).version, 1);
//! assert_eq!(model.get_or_init(|| unreachable!()).version, 1);
//!
//! let reader = model.load().expect("initialised");
//! let old = model.swap(Model { version: 2 }); // a reader keeps its value...
//! assert_eq!(reader.version, 1);
//! assert_eq!(model.load().map(|m| m.version), Some(2)); // ...new reads see the new one
//! assert_eq!(old.map(|m| m.version), Some(1));
//!
//! model.reset(); // freed once `reader` is dropped too
//! assert!(model.load().is_none());
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use crate::flight::{Flight, Leader, Outcome};
use crate::stats::{Counter, Stats, StatsError};
use crate::sync::{Mutex, MutexGuard};

/// A shared instance that can be initialised once, read by every thread
/// without blocking, and replaced or reset while in use.
///
/// Guarantees:
///
/// * **Reads never block** and write no shared cache line: [`load`](Self::load) is
///   lock-free, and a concurrent writer never makes a reader wait for it.
/// * **No use after free**: a value replaced or reset while a reader holds
///   it stays alive until that reader lets go; its `Drop` runs exactly once,
///   when the last [`SharedGuard`] or `Arc` of it is dropped.
/// * **Single-flight initialisation**: concurrent
///   [`get_or_init`](Self::get_or_init) callers on an empty `Shared` run one
///   initialiser; the others park until it finishes and get its value.
///   `get_or_init` never replaces a value that is set.
/// * **Nothing is poisoned**: an initialiser that fails or panics leaves the
///   `Shared` empty and usable; the next caller runs its own.
///
/// Writers ([`store`](Self::store), [`swap`](Self::swap),
/// [`rcu`](Self::rcu), [`take`](Self::take), [`reset`](Self::reset)) are
/// lock-free with respect to each other and to readers; only callers of
/// `get_or_init` that find it empty take the init lock (briefly, never
/// while an initialiser runs), which readers never touch.
///
/// Unwind safety: a panicking initialiser propagates to its caller and
/// changes nothing; a panic inside an [`rcu`](Self::rcu) closure changes
/// nothing either.
pub struct Shared<T> {
    slot: slot::Slot<T>,
    /// The initialiser running now, if any (its waiters wait on the flight,
    /// not on this lock); readers and writers never take it.
    init: Mutex<Option<crate::sync::Arc<Flight<()>>>>,
    counts: Option<Counts>,
}

/// The slow-path event counters (see the module docs, "Metrics").
#[derive(Clone, Debug)]
struct Counts {
    inits: Counter,
    init_failures: Counter,
    init_waits: Counter,
    replacements: Counter,
    resets: Counter,
}

impl Counts {
    fn register(stats: &Stats, prefix: &str, labels: &[(&str, &str)]) -> Result<Self, StatsError> {
        let counter = |what: &str| stats.counter_with(&format!("{prefix}_{what}_total"), labels);
        Ok(Self {
            inits: counter("inits")?,
            init_failures: counter("init_failures")?,
            init_waits: counter("init_waits")?,
            replacements: counter("replacements")?,
            resets: counter("resets")?,
        })
    }
}

/// Configures a [`Shared`]: where its metrics go.
///
/// ```
/// use latchfree::shared::Shared;
/// use latchfree::stats::Stats;
///
/// let stats = Stats::new();
/// let config: Shared<String> = Shared::builder().prefix("config").stats(&stats).build()?;
/// config.get_or_init(|| "v1".to_owned());
/// config.store("v2".to_owned());
/// let snap = stats.snapshot();
/// assert_eq!(snap.counter("config_inits_total"), Some(1));
/// assert_eq!(snap.counter("config_replacements_total"), Some(1));
/// # Ok::<(), latchfree::stats::StatsError>(())
/// ```
#[must_use]
pub struct SharedBuilder<T> {
    prefix: String,
    labels: Vec<(String, String)>,
    stats: Option<Stats>,
    value: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for SharedBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuilder")
            .field("prefix", &self.prefix)
            .field("labels", &self.labels)
            .field("stats", &self.stats.is_some())
            .finish()
    }
}

impl<T> SharedBuilder<T> {
    /// The metric name prefix (default `shared`): metrics are
    /// `PREFIX_inits_total` and so on.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Labels of every metric (default none), so that several instances
    /// share metric names and differ by label: `labels([("shared", "model")])`
    /// gives `shared_inits_total{shared="model"}`.
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// Counts slow-path events in `stats` (by default nothing is counted).
    pub fn stats(mut self, stats: &Stats) -> Self {
        self.stats = Some(stats.clone());
        self
    }

    /// An empty `Shared`.
    ///
    /// # Errors
    ///
    /// The [`StatsError`] of registering a metric, when [`stats`](Self::stats)
    /// was given: an invalid [`prefix`](Self::prefix) or
    /// [`labels`](Self::labels), a name registered as
    /// another kind of metric, or a full registry.
    pub fn build(self) -> Result<Shared<T>, StatsError> {
        let counts = match &self.stats {
            Some(stats) => {
                let labels: Vec<(&str, &str)> = self
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                Some(Counts::register(stats, &self.prefix, &labels)?)
            }
            None => None,
        };
        Ok(Shared {
            slot: slot::Slot::new(None),
            init: Mutex::new(None),
            counts,
        })
    }
}

/// A read of a [`Shared`]'s value: dereferences to `T` and keeps that value
/// alive (even if it is replaced or reset meanwhile) until dropped.
///
/// Meant to be held briefly (one request); see the module docs, "Guards".
pub struct SharedGuard<T> {
    inner: slot::Guard<T>,
}

impl<T> SharedGuard<T> {
    /// The value as an `Arc`, for holding long (one reference-count
    /// increment, unless the guard already holds a reference).
    pub fn into_arc(self) -> Arc<T> {
        match slot::into_option(self.inner) {
            Some(arc) => arc,
            None => unreachable!("a SharedGuard always holds a value"),
        }
    }

    /// Whether `a` and `b` are reads of the same value.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        std::ptr::eq(&**a, &**b)
    }
}

impl<T> Deref for SharedGuard<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match slot::as_option(&self.inner) {
            Some(arc) => arc,
            None => unreachable!("a SharedGuard always holds a value"),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for SharedGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> Shared<T> {
    /// An empty `Shared` that counts nothing.
    pub fn new() -> Self {
        Self {
            slot: slot::Slot::new(None),
            init: Mutex::new(None),
            counts: None,
        }
    }

    /// A `Shared` holding `value`.
    pub fn with_value(value: T) -> Self {
        Self::from_arc(Arc::new(value))
    }

    /// A `Shared` holding an existing `Arc` (readers share it with its
    /// other owners).
    pub fn from_arc(value: Arc<T>) -> Self {
        Self {
            slot: slot::Slot::new(Some(value)),
            init: Mutex::new(None),
            counts: None,
        }
    }

    /// Configures metrics (see [`SharedBuilder`]).
    pub fn builder() -> SharedBuilder<T> {
        SharedBuilder {
            prefix: "shared".to_owned(),
            labels: Vec::new(),
            stats: None,
            value: PhantomData,
        }
    }

    /// The current value, or `None` when empty. Lock-free; never waits for a
    /// writer.
    #[inline]
    pub fn load(&self) -> Option<SharedGuard<T>> {
        let inner = self.slot.load();
        slot::as_option(&inner)
            .is_some()
            .then_some(SharedGuard { inner })
    }

    /// The current value as an `Arc`, for holding long. Costs a shared
    /// reference-count increment; prefer [`load`](Self::load) on a hot path.
    pub fn load_arc(&self) -> Option<Arc<T>> {
        self.slot.load_full()
    }

    /// Whether a value is set (at this instant).
    pub fn is_set(&self) -> bool {
        slot::as_option(&self.slot.load()).is_some()
    }

    /// The current value, or the value `init` returns when empty.
    ///
    /// Single-flight: while one caller's `init` runs, concurrent callers on
    /// this `Shared` park until it finishes and then return its value. If
    /// `init` panics, the panic propagates to its caller, the `Shared` stays
    /// empty, and a waiting caller runs its own `init`. If a
    /// [`store`](Self::store) lands while `init` runs, the stored value is
    /// returned and `init`'s value is dropped.
    ///
    /// # Panics
    ///
    /// When called from inside this `Shared`'s own running `init` (directly
    /// or through other calls on this thread): it would wait for itself
    /// forever, so it panics at once instead. The panic unwinds through the
    /// outer `init`, which leaves the `Shared` empty and usable. (This
    /// method has no error to return; `SessionRegistry` and `TtlCache`
    /// return `Recursive` in the same case.)
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> SharedGuard<T> {
        match self.get_or_try_init(|| Ok::<T, std::convert::Infallible>(init())) {
            Ok(guard) => guard,
            Err(never) => match never {},
        }
    }

    /// As [`get_or_init`](Self::get_or_init), with an initialiser that may
    /// fail.
    ///
    /// # Errors
    ///
    /// `init`'s error, returned to the caller whose `init` failed. Nothing is
    /// cached: the `Shared` stays empty, and a waiting caller runs its own
    /// `init` next.
    ///
    /// # Panics
    ///
    /// As [`get_or_init`](Self::get_or_init), on re-entry.
    ///
    /// ```
    /// use latchfree::shared::Shared;
    ///
    /// let pool: Shared<Vec<u32>> = Shared::new();
    /// assert_eq!(pool.get_or_try_init(|| Err("unreachable host")).err(), Some("unreachable host"));
    /// assert!(pool.load().is_none());
    /// let got = pool.get_or_try_init(|| Ok::<_, &str>(vec![1, 2]))?;
    /// assert_eq!(*got, [1, 2]);
    /// # Ok::<(), &str>(())
    /// ```
    pub fn get_or_try_init<E>(
        &self,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<SharedGuard<T>, E> {
        if let Some(guard) = self.load() {
            return Ok(guard);
        }
        self.init_slow(init)
    }

    /// As [`get_or_init`](Self::get_or_init), for async callers: `init` is
    /// a future (not polled when a value is set), and a caller that finds
    /// another caller's initialiser running awaits it instead of parking
    /// its thread. Blocking and async callers share one flight.
    ///
    /// # Cancel safety
    ///
    /// * Dropped while it **waits**: its waker is removed; nothing changes.
    /// * Dropped while it **leads** (`init` is running): `init` is dropped,
    ///   the `Shared` stays empty, and the callers waiting on it look again:
    ///   one of them runs its own `init`. It counts as an initialiser
    ///   failure in the metrics.
    ///
    /// # Panics
    ///
    /// As [`get_or_init`](Self::get_or_init): called from inside this
    /// `Shared`'s own running initialiser (including from its future), it
    /// panics at once instead of waiting for itself.
    #[cfg(feature = "async")]
    pub async fn get_or_init_async(&self, init: impl Future<Output = T>) -> SharedGuard<T> {
        match self
            .get_or_try_init_async(async { Ok::<T, std::convert::Infallible>(init.await) })
            .await
        {
            Ok(guard) => guard,
            Err(never) => match never {},
        }
    }

    /// As [`get_or_init_async`](Self::get_or_init_async), with an
    /// initialiser that may fail, as [`get_or_try_init`](Self::get_or_try_init).
    /// Cancel safe in the same way.
    ///
    /// # Errors
    ///
    /// `init`'s error, returned to the caller whose `init` failed.
    #[cfg(feature = "async")]
    pub async fn get_or_try_init_async<E>(
        &self,
        init: impl Future<Output = Result<T, E>>,
    ) -> Result<SharedGuard<T>, E> {
        if let Some(guard) = self.load() {
            return Ok(guard);
        }
        loop {
            match self.claim() {
                InitClaim::Found(guard) => return Ok(guard),
                InitClaim::Join(flight) => {
                    flight.wait_async().await;
                }
                InitClaim::Lead(leader) => {
                    let (ending, failure) = self.begin_init(&leader);
                    let result = leader.lead(init).await;
                    return self.install(result, failure, ending, leader);
                }
            }
        }
    }

    #[cold]
    fn init_slow<E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<SharedGuard<T>, E> {
        loop {
            match self.claim() {
                InitClaim::Found(guard) => return Ok(guard),
                InitClaim::Join(flight) => {
                    flight.wait();
                }
                InitClaim::Lead(leader) => {
                    let (ending, failure) = self.begin_init(&leader);
                    let inside = leader.enter();
                    let result = init();
                    drop(inside);
                    return self.install(result, failure, ending, leader);
                }
            }
        }
    }

    /// A leader's guards, dropped (in this order) if its initialiser unwinds
    /// or its future is dropped: the first counts a failure, the second
    /// removes the flight; the leader, dropped after them, wakes the waiters.
    fn begin_init(&self, leader: &Leader<()>) -> (EndFlight<'_>, FailureCount<'_>) {
        let ending = EndFlight {
            init: &self.init,
            flight: leader.flight().clone(),
        };
        (
            ending,
            FailureCount(self.counts.as_ref().map(|c| &c.init_failures)),
        )
    }

    /// After an empty read: finds a value installed meanwhile, a running
    /// initialiser to wait for, or leads a new one.
    ///
    /// # Panics
    ///
    /// When called from inside the initialiser this `Shared` is running
    /// (see [`get_or_init`](Self::get_or_init)).
    fn claim(&self) -> InitClaim<T> {
        let mut running = self.lock_init();
        // Re-read under the lock: a caller we waited for may have installed
        // its value (or a writer stored one) meanwhile.
        if let Some(guard) = self.load() {
            self.count(|c| &c.init_waits);
            return InitClaim::Found(guard);
        }
        if let Some(flight) = running.as_ref() {
            if flight.led_here() {
                drop(running);
                panic!(
                    "Shared::get_or_init was called from inside its own initialiser \
                     (it would wait for itself forever)"
                );
            }
            return InitClaim::Join(flight.clone());
        }
        let flight = crate::sync::Arc::new(Flight::new());
        *running = Some(flight.clone());
        // SAFETY: the flight is new and only this caller installed it under
        // the lock: the one leader.
        InitClaim::Lead(unsafe { Leader::new(flight) })
    }

    /// A leader's last steps: installs the value (unless a store raced in),
    /// then ends the flight, so that a waiter woken by it finds the value.
    fn install<E>(
        &self,
        result: Result<T, E>,
        mut failure: FailureCount<'_>,
        ending: EndFlight<'_>,
        leader: Leader<()>,
    ) -> Result<SharedGuard<T>, E> {
        let value = match result {
            Ok(value) => {
                failure.0 = None;
                Arc::new(value)
            }
            Err(e) => {
                drop(ending);
                leader.finish(Outcome::Ready(()));
                return Err(e);
            }
        };
        let (installed, current) = self.slot.set_if_empty(value);
        if installed {
            self.count(|c| &c.inits);
        }
        drop(ending);
        leader.finish(Outcome::Ready(()));
        // `current` is our value, or the one a racing `store` installed.
        Ok(SharedGuard { inner: current })
    }

    fn lock_init(&self) -> MutexGuard<'_, Option<crate::sync::Arc<Flight<()>>>> {
        // Every update under the lock is one assignment: a panic cannot leave
        // it half-done, so poison is ignored.
        self.init
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the value with `value`; the old one is freed when its last
    /// reader lets go.
    pub fn store(&self, value: T) {
        drop(self.swap(value));
    }

    /// Replaces the value with `value` and returns the old one.
    pub fn swap(&self, value: T) -> Option<Arc<T>> {
        self.swap_arc(Some(Arc::new(value)))
    }

    /// Replaces the value with an existing `Arc` (or empties it with `None`)
    /// and returns the old one.
    pub fn swap_arc(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
        let is_reset = value.is_none();
        let old = self.slot.swap(value);
        match (is_reset, &old) {
            (false, _) => self.count(|c| &c.replacements),
            (true, Some(_)) => self.count(|c| &c.resets),
            (true, None) => {}
        }
        old
    }

    /// Read-copy-update: replaces the value with `f(current)`, retrying with
    /// the newer value if another writer replaced it meanwhile (so `f` may
    /// run more than once). Returns the value it replaced.
    ///
    /// ```
    /// use latchfree::shared::Shared;
    ///
    /// let routes: Shared<Vec<&str>> = Shared::with_value(vec!["/a"]);
    /// routes.rcu(|old| {
    ///     let mut next = old.cloned().unwrap_or_default();
    ///     next.push("/b");
    ///     next
    /// });
    /// assert_eq!(*routes.load().unwrap(), ["/a", "/b"]);
    /// ```
    pub fn rcu(&self, mut f: impl FnMut(Option<&T>) -> T) -> Option<Arc<T>> {
        let old = self.slot.rcu(|current| Arc::new(f(current.map(|a| &**a))));
        self.count(|c| &c.replacements);
        old
    }

    /// Empties the `Shared` and returns the value it held.
    pub fn take(&self) -> Option<Arc<T>> {
        self.swap_arc(None)
    }

    /// Empties the `Shared`; its value is freed when its last reader lets go.
    /// The next [`get_or_init`](Self::get_or_init) initialises it again.
    pub fn reset(&self) {
        drop(self.take());
    }

    fn count(&self, which: impl FnOnce(&Counts) -> &Counter) {
        if let Some(counts) = &self.counts {
            which(counts).inc();
        }
    }
}

/// What a caller of `get_or_init` that found the `Shared` empty does next.
enum InitClaim<T> {
    /// A value was installed meanwhile.
    Found(SharedGuard<T>),
    /// Another caller's initialiser is running: wait for it, then look again.
    Join(crate::sync::Arc<Flight<()>>),
    /// This caller runs its initialiser.
    Lead(Leader<()>),
}

/// Removes a leader's flight from `Shared::init` when dropped: after the
/// value is installed, or when the initialiser fails, unwinds or (async) is
/// cancelled. The [`Leader`], dropped after it, wakes the waiters, who look
/// again and find the value or run their own initialiser.
struct EndFlight<'a> {
    init: &'a Mutex<Option<crate::sync::Arc<Flight<()>>>>,
    flight: crate::sync::Arc<Flight<()>>,
}

impl Drop for EndFlight<'_> {
    fn drop(&mut self) {
        let mut running = self.init.lock().unwrap_or_else(|p| p.into_inner());
        if running
            .as_ref()
            .is_some_and(|f| crate::sync::Arc::ptr_eq(f, &self.flight))
        {
            *running = None;
        }
    }
}

/// Counts an initialiser failure when dropped armed (on unwind).
struct FailureCount<'a>(Option<&'a Counter>);

impl Drop for FailureCount<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.0 {
            counter.inc();
        }
    }
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Self::with_value(value)
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("value", &self.load())
            .finish_non_exhaustive()
    }
}

// A `Shared` moves values between threads (a value stored on one thread is
// dropped on whichever thread reads it last): it is Send and Sync exactly
// when `Arc<T>` is.
const _: () = {
    const fn send_sync<X: Send + Sync>() {}
    send_sync::<Shared<Vec<u8>>>();
    send_sync::<SharedGuard<Vec<u8>>>();
};

/// The value slot: `arc_swap::ArcSwapOption`, or under loom a model of it
/// (loom cannot see arc-swap's atomics) with the same contract, so the loom
/// models check the protocol built on top of it (single-flight init racing
/// writers), not arc-swap itself.
#[cfg(not(latchfree_loom))]
mod slot {
    use std::sync::Arc;

    use arc_swap::ArcSwapOption;

    pub(super) type Guard<T> = arc_swap::Guard<Option<Arc<T>>>;

    #[inline]
    pub(super) fn as_option<T>(guard: &Guard<T>) -> Option<&Arc<T>> {
        guard.as_ref()
    }

    pub(super) fn into_option<T>(guard: Guard<T>) -> Option<Arc<T>> {
        arc_swap::Guard::into_inner(guard)
    }

    pub(super) struct Slot<T>(ArcSwapOption<T>);

    impl<T> Slot<T> {
        pub(super) fn new(value: Option<Arc<T>>) -> Self {
            Self(ArcSwapOption::new(value))
        }

        #[inline]
        pub(super) fn load(&self) -> Guard<T> {
            self.0.load()
        }

        pub(super) fn load_full(&self) -> Option<Arc<T>> {
            self.0.load_full()
        }

        pub(super) fn swap(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
            self.0.swap(value)
        }

        /// Installs `value` if the slot is empty; returns whether it did and a
        /// guard of what the slot holds now (`value`, or the value that was
        /// there).
        pub(super) fn set_if_empty(&self, value: Arc<T>) -> (bool, Guard<T>) {
            let new = Some(Arc::clone(&value));
            let previous = self.0.compare_and_swap(&None::<Arc<T>>, new);
            match previous.as_ref() {
                None => (true, arc_swap::Guard::from_inner(Some(value))),
                Some(_) => (false, previous),
            }
        }

        pub(super) fn rcu(&self, mut f: impl FnMut(Option<&Arc<T>>) -> Arc<T>) -> Option<Arc<T>> {
            self.0.rcu(|current| Some(f(current.as_ref())))
        }
    }
}

#[cfg(latchfree_loom)]
mod slot {
    use std::sync::Arc;

    use crate::sync::Mutex;

    pub(super) type Guard<T> = Option<Arc<T>>;

    pub(super) fn as_option<T>(guard: &Guard<T>) -> Option<&Arc<T>> {
        guard.as_ref()
    }

    pub(super) fn into_option<T>(guard: Guard<T>) -> Option<Arc<T>> {
        guard
    }

    /// Every operation is one atomic step, as on `ArcSwapOption`.
    pub(super) struct Slot<T>(Mutex<Option<Arc<T>>>);

    impl<T> Slot<T> {
        pub(super) fn new(value: Option<Arc<T>>) -> Self {
            Self(Mutex::new(value))
        }

        fn lock(&self) -> crate::sync::MutexGuard<'_, Option<Arc<T>>> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        pub(super) fn load(&self) -> Guard<T> {
            self.lock().clone()
        }

        pub(super) fn load_full(&self) -> Option<Arc<T>> {
            self.load()
        }

        pub(super) fn swap(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
            std::mem::replace(&mut *self.lock(), value)
        }

        pub(super) fn set_if_empty(&self, value: Arc<T>) -> (bool, Guard<T>) {
            let mut slot = self.lock();
            match &*slot {
                Some(current) => (false, Some(Arc::clone(current))),
                None => {
                    *slot = Some(Arc::clone(&value));
                    (true, Some(value))
                }
            }
        }

        /// As `ArcSwapOption::rcu`: `f` runs outside the slot, and the
        /// result is installed only if the slot still holds what `f` saw.
        pub(super) fn rcu(&self, mut f: impl FnMut(Option<&Arc<T>>) -> Arc<T>) -> Option<Arc<T>> {
            let mut current = self.load();
            loop {
                let new = f(current.as_ref());
                let mut slot = self.lock();
                let same = match (&*slot, &current) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if same {
                    return std::mem::replace(&mut *slot, Some(new));
                }
                current = slot.clone();
            }
        }
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops in a shared counter.
    struct Tracked(Arc<AtomicUsize>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn empty_until_initialised_then_kept() {
        let shared: Shared<u32> = Shared::new();
        assert!(shared.load().is_none() && !shared.is_set());
        assert_eq!(*shared.get_or_init(|| 7), 7);
        assert_eq!(*shared.get_or_init(|| 8), 7);
        assert_eq!(shared.load_arc().as_deref(), Some(&7));
        assert!(shared.is_set());
    }

    #[test]
    fn a_failed_init_caches_nothing() {
        let shared: Shared<u32> = Shared::new();
        assert_eq!(
            shared.get_or_try_init(|| Err::<u32, _>("no")).err(),
            Some("no")
        );
        assert!(shared.load().is_none());
        assert_eq!(*shared.get_or_try_init(|| Ok::<_, &str>(3)).unwrap(), 3);
        assert_eq!(
            shared
                .get_or_try_init(|| Err::<u32, _>("no"))
                .ok()
                .as_deref(),
            Some(&3)
        );
    }

    #[test]
    fn swap_take_and_reset_hand_back_or_free_the_old_value() {
        let drops = Arc::new(AtomicUsize::new(0));
        let shared = Shared::with_value(Tracked(drops.clone()));
        let reader = shared.load().unwrap();
        let old = shared.swap(Tracked(drops.clone())).unwrap();
        assert!(std::ptr::eq(&*old, &*reader));
        drop(old);
        assert_eq!(drops.load(Ordering::Relaxed), 0, "a reader still holds it");
        drop(reader);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert!(shared.take().is_some());
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        assert!(shared.take().is_none());
        shared.store(Tracked(drops.clone()));
        shared.reset();
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        assert!(shared.load().is_none());
    }

    #[test]
    fn init_loses_to_a_value_stored_while_it_ran() {
        let shared: Shared<u32> = Shared::new();
        let got = shared.get_or_init(|| {
            shared.store(1);
            2
        });
        assert_eq!(*got, 1);
        assert_eq!(*shared.load().unwrap(), 1);
    }

    #[test]
    fn rcu_builds_on_the_current_value() {
        let shared: Shared<u64> = Shared::new();
        assert!(shared.rcu(|v| v.copied().unwrap_or(0) + 1).is_none());
        assert_eq!(
            shared.rcu(|v| v.copied().unwrap_or(0) + 1).as_deref(),
            Some(&1)
        );
        assert_eq!(*shared.load().unwrap(), 2);
    }

    #[test]
    fn guards_compare_and_outlive_into_arc() {
        let shared = Shared::from_arc(Arc::new(5u8));
        let (a, b) = (shared.load().unwrap(), shared.load().unwrap());
        assert!(SharedGuard::ptr_eq(&a, &b));
        let arc = a.into_arc();
        shared.reset();
        assert_eq!((*arc, *b), (5, 5));
        assert_eq!(format!("{shared:?}"), "Shared { value: None, .. }");
    }

    /// Miri-sized: two readers hold guards and `Arc`s across a writer's
    /// swaps and resets; every value is freed once, after its readers.
    #[test]
    fn readers_and_a_writer_on_threads() {
        let drops = Arc::new(AtomicUsize::new(0));
        let shared = Shared::with_value(Tracked(drops.clone()));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let guard = shared.load();
                        let arc = shared.load_arc();
                        let _ = shared.get_or_init(|| Tracked(drops.clone()));
                        drop((guard, arc));
                    }
                });
            }
            for i in 0..20 {
                if i % 3 == 0 {
                    shared.reset();
                } else {
                    shared.store(Tracked(drops.clone()));
                }
            }
        });
        drop(shared);
        // Each value holds a clone of `drops`: only the test's is left, so
        // every value is gone; the initial one and the 13 stored ones were
        // counted (plus any a reader initialised after a reset).
        assert_eq!(Arc::strong_count(&drops), 1);
        assert!(drops.load(Ordering::Relaxed) >= 14);
    }

    #[test]
    fn metrics_count_slow_path_events() {
        let stats = Stats::new();
        let shared: Shared<u8> = Shared::builder().prefix("m").stats(&stats).build().unwrap();
        let _ = shared.get_or_try_init(|| Err::<u8, _>(()));
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.get_or_init(|| panic!("init failed"))
        }));
        shared.get_or_init(|| 1);
        shared.store(2);
        let _ = shared.swap(3);
        shared.rcu(|_| 4);
        shared.reset();
        shared.reset(); // already empty: not counted
        let snap = stats.snapshot();
        for (name, want) in [
            ("m_inits_total", 1),
            ("m_init_failures_total", 2),
            ("m_init_waits_total", 0),
            ("m_replacements_total", 3),
            ("m_resets_total", 1),
        ] {
            assert_eq!(snap.counter(name), Some(want), "{name}");
        }
    }

    #[test]
    fn an_invalid_prefix_is_a_typed_error() {
        let err = Shared::<u8>::builder()
            .prefix("no spaces")
            .stats(&Stats::new())
            .build()
            .err();
        assert!(
            matches!(err, Some(StatsError::InvalidName { .. })),
            "{err:?}"
        );
    }
}
