//! The machinery shared by [`crate::session`] and [`crate::cache`]: an
//! epoch-reclaimed map of expiring entries with single-flight creation, a
//! deadline index, a capacity bound, eviction listeners and metrics.
//!
//! # The structure
//!
//! ```text
//!   index:      scc::HashIndex<K, Inline { value, expires, Arc<Entry> }>
//!                                                  lock-free reads (peek)
//!   flights:    scc::HashMap<K, Arc<Flight>>       one per initialisation in progress
//!   deadlines:  SkipMap<(deadline, seq), Arc<Entry>> every live entry, soonest first
//!   referenced: RefBits                            second-chance bits (dense, by creation seq)
//!   occupancy:  AtomicUsize                        entries + reservations ≤ max_entries
//! ```
//!
//! **Reads** (`TtlMap::get`) peek into the `HashIndex` under an epoch
//! guard: no lock, no shared write. What a hit needs (the value and the
//! absolute deadline) is stored inline in the index (the `entry` module explains the
//! split), so a hit on a map without an idle timeout follows no pointer
//! beyond the index's own. The entry's deadline is checked against the
//! map's time (below); an expired entry is never returned. Two per-entry
//! stamps may be written, both `Relaxed` and both only when they change: the
//! last-access time, when an idle timeout is configured (the deadline moves
//! with it; it lives in the shared `Entry`, as the index's values must be
//! immutable), and a "referenced" bit, when the map evicts at capacity (the
//! second-chance policy below needs it; it lives in a small dense table that
//! stays in cache). Each is a load on a hit, and a store at most once per
//! timer tick (the stamp) or per eviction scan (the bit).
//!
//! **Creation** (`TtlMap::get_or_init`) is single-flight. A miss takes the
//! key's entry in `flights` (a bucket lock in scc, held for microseconds,
//! never across user code). If a flight is there, the caller joins it and
//! parks on it (`crate::flight`). If not, it checks `index` again (the
//! leader publishes into `index` *before* it removes its flight, so a caller
//! that finds no flight under the lock either sees the value or is the next
//! leader), reserves capacity, inserts a flight and runs the initialiser
//! with no lock held. Other keys are never blocked by it. A value is
//! published, an error is handed to every waiter and not stored, and an
//! unwinding initialiser completes its flight as panicked through a drop
//! guard, so nothing stays poisoned: the next call leads a new flight.
//!
//! **Expiry.** An entry's deadline is the earliest of its absolute deadline
//! (creation + lifetime, or a per-entry TTL) and, with an idle timeout, its
//! last access + idle timeout. `deadlines` holds each entry under a *lower
//! bound* of its deadline (the last access only moves the real deadline
//! later). A sweep pops entries whose key has passed: an entry still live
//! goes back under its real deadline, an expired one is evicted. So a sweep
//! touches only entries at or past their key, never the whole map.
//!
//! **Capacity.** `occupancy` counts entries plus reservations of flights
//! in progress and never exceeds `max_entries`. When a reservation fails,
//! expired entries go first (a sweep), then the policy: reject, or evict by
//! *second chance* (CLOCK) over `deadlines`: the front entry is evicted
//! unless it was read since it was last considered, in which case it is
//! moved back (a new sequence number; under the same deadline if it has
//! one) and the next is considered, at most `CLOCK_SCAN` times. Without
//! TTLs the index is in insertion order and this is classic CLOCK, an
//! approximation of least-recently-used; with TTLs the entries nearest their
//! deadline go first.
//!
//! **Exactly-once eviction.** Whoever removes an entry from `index` (a
//! `remove_if` on pointer identity: exactly one caller succeeds) releases
//! its capacity, unlinks it from `deadlines` and calls the listener, after
//! every internal lock is released.
//!
//! **Journal.** A map may be given a `Journal` (the cache's disk tier is
//! one). Every change of a key is told to it *while the key's bucket lock
//! in `index` is held*: a publish (`put`, with the absolute deadline) from
//! inside `entry_sync`, an eviction (`remove`, with its cause) from inside
//! the `remove_if` closure that wins it, and `TtlMap::remove_key`'s removal
//! even of a key memory does not hold. So the journal sees the changes of
//! one key in exactly the order they were made. `TtlMap::insert_if_vacant`
//! (a value read back from where the journal writes) is not told, and
//! checks a condition of the caller's under the same lock. Without a
//! journal the write paths test one `None`; reads never look at it.
//!
//! **Time.** Deadlines are nanoseconds of the injected [`Clock`]. A cheap
//! clock ([`Clock::is_cheap`], e.g. [`ManualClock`](crate::clock::ManualClock))
//! is read on every check, so expiry is exact with respect to it. Otherwise,
//! when a background sweeper runs and `time_resolution` is not zero, reads
//! use a coarse copy of the clock that a process-wide ticker thread (one
//! for all maps, see the `sweeper` module) refreshes every
//! `time_resolution` and that every write operation refreshes too: an entry
//! may then be returned up to one resolution (plus the sweeper's scheduling
//! delay) after its deadline, never later than the first write or tick past
//! it. With `time_resolution(Duration::ZERO)` the clock is read on every
//! check.

mod entry;
mod sweeper;
mod time;

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_skiplist::SkipMap;
use crossbeam_utils::CachePadded;

use crate::clock::Clock;
use crate::flight::{Flight, Leader, Outcome};
use crate::stats::{Counter, Gauge, Stats, StatsError};
use entry::{Entry, Inline, NO_DEADLINE, RefBits};
pub(crate) use sweeper::SweeperHandle;
use sweeper::Tick;
use time::TimeSource;

/// Entries a capacity eviction considers before it evicts the front one
/// regardless of its "referenced" bit.
pub(crate) const CLOCK_SCAN: usize = 8;

/// Expired entries an amortised sweep evicts per write operation, at most.
const AMORTISED_SWEEP: usize = 8;

/// Slots kept in the map of flights even when it is empty (scc never shrinks
/// it below its initial capacity): 128 buckets of 32. A creation holds its
/// key's bucket lock for a moment (the `flights` entry, then its removal),
/// and with few buckets concurrent creations of *different* keys queue on
/// the same lock, or spin on it while its holder is preempted, which with
/// more threads than cores cost the engine bench (8 threads on 2 cores)
/// two thirds of its throughput or more.
const FLIGHT_SLOTS: usize = 4_096;

/// Expired entries one background sweep evicts, at most, before it yields
/// the thread until the next tick.
const BACKGROUND_SWEEP: usize = 65_536;

/// Why an entry left the map: the cause given to an eviction listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EvictionCause {
    /// Its deadline passed (idle timeout, lifetime or per-entry TTL).
    Expired,
    /// It was removed explicitly (`remove`, `invalidate`).
    Removed,
    /// It was evicted to make room at the capacity bound.
    Capacity,
    /// It was removed by `clear` / `invalidate_all`.
    Cleared,
    /// A newer value was inserted under its key (caches only).
    Replaced,
}

impl EvictionCause {
    /// Every cause, in declaration order.
    pub const ALL: [EvictionCause; 5] = [
        EvictionCause::Expired,
        EvictionCause::Removed,
        EvictionCause::Capacity,
        EvictionCause::Cleared,
        EvictionCause::Replaced,
    ];

    /// The lower-case name used in metric names: `expired`, `removed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionCause::Expired => "expired",
            EvictionCause::Removed => "removed",
            EvictionCause::Capacity => "capacity",
            EvictionCause::Cleared => "cleared",
            EvictionCause::Replaced => "replaced",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EvictionCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When expired entries are swept out (they are never *returned* either
/// way; sweeping frees their memory and capacity and calls the listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// A background thread sweeps every `interval` (and keeps the coarse
    /// time, see the builders' `time_resolution`). It holds no lock that
    /// readers need and stops when the map is dropped.
    Background {
        /// Time between sweeps.
        interval: Duration,
    },
    /// No thread: every write operation (creation, insert, remove) first
    /// evicts up to 8 expired entries.
    Amortised,
    /// Only when asked (`sweep()`) and when the capacity bound is reached.
    Manual,
}

impl Default for Sweep {
    /// `Background` every 100 ms.
    fn default() -> Self {
        Sweep::Background {
            interval: Duration::from_millis(100),
        }
    }
}

/// Why a registry or cache could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The capacity bound is zero.
    #[error("the capacity bound must be at least 1 (max_sessions / max_entries)")]
    ZeroCapacity,
    /// A timeout is zero: every entry would be expired at birth.
    #[error("{0} must be longer than zero (leave it unset for no limit)")]
    ZeroTimeout(&'static str),
    /// The sweep interval is zero.
    #[error("the background sweep interval must be longer than zero")]
    ZeroSweepInterval,
    /// The metrics could not be registered in the given [`Stats`].
    #[error("cannot register the metrics: {0}")]
    Stats(#[from] StatsError),
    /// The background sweeper thread could not be started.
    #[error("cannot start the sweeper thread: {0}")]
    Spawn(String),
}

/// Why [`TtlMap::get_or_init`] returned no value.
pub(crate) enum InitError<E> {
    /// No room, and the policy rejects.
    Capacity,
    /// This call's initialiser, or the one it waited on, returned this.
    Failed(Arc<E>),
    /// The initialiser waited on failed with an error of another type.
    FailedElsewhere,
    /// The initialiser (this call's or the one waited on) panicked.
    Panicked,
}

/// The listener's type.
pub(crate) type Listener<K, V> = Box<dyn Fn(&K, V, EvictionCause) + Send + Sync>;

/// The counters of one map, registered in a [`Stats`].
pub(crate) struct Counters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) inits: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) init_errors: Counter,
    pub(crate) rejected: Counter,
    pub(crate) evictions: [Counter; 5],
    pub(crate) live: Gauge,
}

/// The metric names of one map, under a prefix.
pub(crate) struct MetricNames {
    /// Hits.
    pub(crate) hits: &'static str,
    /// Misses.
    pub(crate) misses: &'static str,
    /// Initialisations run (creations, loads).
    pub(crate) inits: &'static str,
    /// Callers that waited on another caller's initialisation.
    pub(crate) coalesced: &'static str,
    /// Initialisations that failed or panicked.
    pub(crate) init_errors: &'static str,
    /// Live entries (a gauge).
    pub(crate) live: &'static str,
}

impl Counters {
    pub(crate) fn register(
        stats: &Stats,
        prefix: &str,
        names: &MetricNames,
    ) -> Result<Self, StatsError> {
        let counter = |what: &str| stats.counter(&format!("{prefix}_{what}_total"));
        let eviction =
            |cause: EvictionCause| stats.counter(&format!("{prefix}_evictions_{cause}_total"));
        Ok(Self {
            hits: counter(names.hits)?,
            misses: counter(names.misses)?,
            inits: counter(names.inits)?,
            coalesced: counter(names.coalesced)?,
            init_errors: counter(names.init_errors)?,
            rejected: counter("rejected")?,
            evictions: [
                eviction(EvictionCause::Expired)?,
                eviction(EvictionCause::Removed)?,
                eviction(EvictionCause::Capacity)?,
                eviction(EvictionCause::Cleared)?,
                eviction(EvictionCause::Replaced)?,
            ],
            live: stats.gauge(&format!("{prefix}_{}", names.live))?,
        })
    }
}

/// A map's configuration, checked by the builders.
pub(crate) struct Options<K, V> {
    pub(crate) max_entries: usize,
    pub(crate) lifetime: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    pub(crate) evict_at_capacity: bool,
    pub(crate) sweep: Sweep,
    pub(crate) resolution: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) listener: Option<Listener<K, V>>,
    pub(crate) counters: Counters,
    /// Told of every change, in order per key (the cache's disk tier).
    pub(crate) journal: Option<Arc<dyn Journal<K, V>>>,
}

/// Told of every change to a key, **while the key's bucket lock in the
/// index is held**: the calls for one key come in exactly the order of the
/// changes they describe. Implementations must be short and must not call
/// the map (the persistent tier sends a message to its writer thread).
pub(crate) trait Journal<K, V>: Send + Sync {
    /// `key` now holds `value` until `deadline` (nanoseconds of the clock,
    /// [`NO_DEADLINE`](entry::NO_DEADLINE) for none).
    fn put(&self, key: &K, value: &V, deadline: u64);
    /// `key` left the map for `cause` (`Removed` also when it held nothing:
    /// see [`TtlMap::remove_key`]).
    fn remove(&self, key: &K, cause: EvictionCause);
}

/// How long a published entry lives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Life {
    /// The map's lifetime.
    Default,
    /// This long from now.
    Ttl(Duration),
}

impl From<Option<Duration>> for Life {
    fn from(ttl: Option<Duration>) -> Self {
        ttl.map_or(Life::Default, Life::Ttl)
    }
}

impl<K, V> Options<K, V> {
    /// Checks the values a builder collected.
    pub(crate) fn validate(
        &self,
        lifetime: &'static str,
        idle: &'static str,
    ) -> Result<(), BuildError> {
        if self.max_entries == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if self.lifetime.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::ZeroTimeout(lifetime));
        }
        if self.idle.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::ZeroTimeout(idle));
        }
        if matches!(self.sweep, Sweep::Background { interval } if interval.is_zero()) {
            return Err(BuildError::ZeroSweepInterval);
        }
        Ok(())
    }
}

/// The shared core of [`crate::session::SessionRegistry`] and
/// [`crate::cache::TtlCache`].
pub(crate) struct TtlMap<K, V> {
    index: scc::HashIndex<K, Inline<K, V>>,
    flights: scc::HashMap<K, crate::sync::Arc<Flight<V>>>,
    deadlines: SkipMap<(u64, u64), Arc<Entry<K>>>,
    /// The second-chance bits (empty unless `evict_at_capacity`).
    referenced: RefBits,
    /// Entries in `index` plus reservations of flights in progress.
    occupancy: CachePadded<AtomicUsize>,
    /// Entries in `index`.
    entries: CachePadded<AtomicUsize>,
    /// Sequence numbers for `deadlines` keys (written on inserts only).
    seq: AtomicU64,
    time: TimeSource,
    max_entries: usize,
    lifetime: u64,
    idle: u64,
    evict_at_capacity: bool,
    amortised: bool,
    listener: Option<Listener<K, V>>,
    journal: Option<Arc<dyn Journal<K, V>>>,
    pub(crate) counters: Counters,
}

/// Whether a peek found a live entry, an expired one, or nothing.
enum Peeked<V, E> {
    Live(V),
    Expired(E),
}

fn nanos(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl<K, V> TtlMap<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Builds the map and, for [`Sweep::Background`], its sweeper thread.
    pub(crate) fn start(
        options: Options<K, V>,
    ) -> Result<(Arc<Self>, Option<SweeperHandle>), BuildError> {
        let background = match options.sweep {
            Sweep::Background { interval } => Some(interval),
            _ => None,
        };
        let coarse =
            background.is_some() && !options.resolution.is_zero() && !options.clock.is_cheap();
        let map = Arc::new(Self {
            index: scc::HashIndex::new(),
            flights: scc::HashMap::with_capacity(FLIGHT_SLOTS.min(options.max_entries)),
            deadlines: SkipMap::new(),
            occupancy: CachePadded::new(AtomicUsize::new(0)),
            entries: CachePadded::new(AtomicUsize::new(0)),
            seq: AtomicU64::new(0),
            referenced: RefBits::new(options.max_entries, options.evict_at_capacity),
            time: TimeSource::new(options.clock, coarse),
            max_entries: options.max_entries,
            lifetime: nanos(options.lifetime),
            idle: nanos(options.idle),
            evict_at_capacity: options.evict_at_capacity,
            amortised: options.sweep == Sweep::Amortised,
            listener: options.listener,
            journal: options.journal,
            counters: options.counters,
        });
        let sweeper = match background {
            Some(interval) => {
                if coarse {
                    let weak: Weak<Self> = Arc::downgrade(&map);
                    let target: Weak<dyn Tick> = weak;
                    sweeper::register(target, options.resolution.min(interval))
                        .map_err(|e| BuildError::Spawn(e.to_string()))?;
                }
                Some(
                    SweeperHandle::spawn(Arc::downgrade(&map), interval)
                        .map_err(|e| BuildError::Spawn(e.to_string()))?,
                )
            }
            None => None,
        };
        Ok((map, sweeper))
    }

    /// The capacity bound.
    pub(crate) fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Entries in the map (expired ones not yet swept included).
    pub(crate) fn len(&self) -> usize {
        // Relaxed: a count, published with nothing.
        self.entries.load(Ordering::Relaxed)
    }

    /// Looks `key` up without creating; counts a hit or a miss.
    #[inline]
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read(key, |v| v.clone())
    }

    /// Calls `f` on the live value under `key`, if any; counts a hit or a
    /// miss. `f` runs inside the epoch guard: keep it short.
    #[inline]
    pub(crate) fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.peek(key, f) {
            Some(Peeked::Live(r)) => {
                self.counters.hits.inc();
                Some(r)
            }
            Some(Peeked::Expired(entry)) => {
                self.counters.misses.inc();
                self.evict(&entry, EvictionCause::Expired);
                None
            }
            None => {
                self.counters.misses.inc();
                None
            }
        }
    }

    /// The lock-free lookup: the value if live (stamping its access), the
    /// entry if expired.
    #[inline]
    fn peek<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<Peeked<R, Arc<Entry<K>>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut f = Some(f);
        self.lookup(key, |entry| {
            let now = if entry.needs_time(self.idle) {
                self.time.now()
            } else {
                0
            };
            if entry.is_live(now, self.idle) {
                entry.touch(now, self.idle);
                if self.evict_at_capacity {
                    self.referenced.set(entry.cell());
                }
                // `lookup` calls its reader at most once.
                let f = f.take().expect("the reader runs once");
                Peeked::Live(f(&entry.value))
            } else {
                Peeked::Expired(entry.entry.clone())
            }
        })
    }

    /// Calls `reader` (at most once) on the entry under `key`, without a
    /// lock when the key is found.
    ///
    /// `HashIndex::peek_with` alone is not enough: scc replaces an entry
    /// (`OccupiedEntry::update`, our `publish` of a present key) by
    /// inserting the new one and then marking the old one removed, under
    /// the bucket's write lock, and a lock-free reader that scans the bucket
    /// in between can pass over both and miss a key that was present the
    /// whole time. So a miss is confirmed under the bucket's shared lock
    /// (`read_sync`), which sees the bucket before or after a replacement.
    /// Hits stay lock-free; only misses pay the lock.
    #[inline]
    fn lookup<Q, R>(&self, key: &Q, mut reader: impl FnMut(&Inline<K, V>) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(r) = self.index.peek_with(key, |_, entry| reader(entry)) {
            return Some(r);
        }
        self.index.read_sync(key, |_, entry| reader(entry))
    }

    /// Whether a live entry is under `key` (no stamp, no metric).
    pub(crate) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lookup(key, |entry| {
            let now = if entry.needs_time(self.idle) {
                self.time.now()
            } else {
                0
            };
            entry.is_live(now, self.idle)
        })
        .unwrap_or(false)
    }

    /// The live value under `key`, or the one `init` makes, exactly once per
    /// live key however many callers race; `ttl` overrides the lifetime of
    /// the entry it creates.
    pub(crate) fn get_or_init<Q, E>(
        &self,
        key: &Q,
        make_key: impl FnOnce() -> K,
        ttl: Option<Duration>,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, InitError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        E: Send + Sync + 'static,
    {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let key = make_key();
        let leader = loop {
            let slot = self.flights.entry_sync(key.clone());
            match slot {
                scc::hash_map::Entry::Occupied(occupied) => {
                    let flight = occupied.get().clone();
                    drop(occupied);
                    self.counters.coalesced.inc();
                    return match flight.wait() {
                        Outcome::Ready(v) => Ok(v),
                        Outcome::Failed(error) => Err(error
                            .downcast::<E>()
                            .map_or(InitError::FailedElsewhere, InitError::Failed)),
                        Outcome::Panicked => Err(InitError::Panicked),
                    };
                }
                scc::hash_map::Entry::Vacant(vacant) => {
                    // A leader publishes before it removes its flight, so
                    // with the flight slot locked and empty, the index holds
                    // the value or no one is creating it.
                    match self.peek::<K, V>(&key, V::clone) {
                        Some(Peeked::Live(v)) => return Ok(v),
                        Some(Peeked::Expired(stale)) => {
                            drop(vacant);
                            self.evict(&stale, EvictionCause::Expired);
                            continue;
                        }
                        None => {}
                    }
                    if !self.try_reserve() {
                        // Make room with no lock held (evictions call the
                        // listener), then take the slot again.
                        drop(vacant);
                        if !self.make_room() {
                            self.counters.rejected.inc();
                            return Err(InitError::Capacity);
                        }
                        continue;
                    }
                    let flight = crate::sync::Arc::new(Flight::new());
                    vacant.insert_entry(flight.clone());
                    // SAFETY: the flight is new and only this caller inserted
                    // it into `flights`: the one leader.
                    break unsafe { Leader::new(flight) };
                }
            }
        };
        // From here on an unwinding `init` drops `guard`, which gives back
        // the reservation and removes the flight, then `leader`, which
        // completes the flight as panicked.
        let guard = FlightGuard {
            map: self,
            key: &key,
            flight: leader.flight().clone(),
            keep_reservation: false,
        };
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        self.counters.inits.inc();
        match init() {
            Ok(value) => {
                self.publish(key.clone(), value.clone(), ttl.into());
                // Published before the flight leaves `flights` (see above).
                guard.disarm();
                leader.finish(Outcome::Ready(value.clone()));
                Ok(value)
            }
            Err(error) => {
                self.counters.init_errors.inc();
                let error = Arc::new(error);
                drop(guard);
                leader.finish(Outcome::Failed(error.clone()));
                Err(InitError::Failed(error))
            }
        }
    }

    /// Inserts `value` under `key`, replacing any entry there (cause
    /// `Replaced`). `false` if no room could be made (the value is dropped).
    pub(crate) fn insert(&self, key: K, value: V, life: Life) -> bool {
        if !self.reserve_for_write() {
            return false;
        }
        self.publish(key, value, life);
        true
    }

    /// Takes one unit of capacity for a write, making room if needed;
    /// `false` (counted as rejected) if none could be made.
    fn reserve_for_write(&self) -> bool {
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        // A replacement needs no room, but reserving first keeps the bound
        // exact; `publish` gives the reservation back if it replaced.
        while !self.try_reserve() {
            if !self.make_room() {
                self.counters.rejected.inc();
                return false;
            }
        }
        true
    }

    #[cfg(feature = "persist")] // The disk tier's.
    /// Inserts `value` under `key` until `deadline` only if `key` holds no
    /// entry and `still()`, checked under the key's lock, says yes; the
    /// journal is not told (the value came from where the journal writes).
    /// `false` if it was not inserted.
    pub(crate) fn insert_if_vacant(
        &self,
        key: K,
        value: V,
        deadline: u64,
        still: impl FnOnce() -> bool,
    ) -> bool {
        if !self.reserve_for_write() {
            return false;
        }
        let now = self.time.refresh();
        if deadline <= now {
            self.release();
            return false;
        }
        // Relaxed: a unique number is all that is needed, not an order.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let cell = self.referenced.cell(seq);
        if self.evict_at_capacity {
            self.referenced.clear(cell);
        }
        let entry = Arc::new(Entry::new(key.clone(), now, deadline, self.idle, cell));
        match self.index.entry_sync(key) {
            scc::hash_index::Entry::Vacant(vacant) if still() => {
                vacant.insert_entry(Inline::new(value, entry.clone()));
                // Relaxed: a count, published with nothing.
                self.entries.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.release();
                return false;
            }
        }
        entry.link(&self.deadlines, (entry.deadline(), seq), &entry);
        self.counters.live.set(self.len() as i64);
        true
    }

    /// Puts a new entry into `index` and `deadlines`, holding a reservation.
    fn publish(&self, key: K, value: V, life: Life) {
        let now = self.time.refresh();
        let lifetime = match life {
            Life::Ttl(ttl) => nanos(Some(ttl)),
            Life::Default => self.lifetime,
        };
        let expires = if lifetime == 0 {
            NO_DEADLINE
        } else {
            now.saturating_add(lifetime)
        };
        // Relaxed: a unique number is all that is needed, not an order.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let cell = self.referenced.cell(seq);
        if self.evict_at_capacity {
            self.referenced.clear(cell);
        }
        let entry = Arc::new(Entry::new(key.clone(), now, expires, self.idle, cell));
        let journaled = self.journal.as_ref().map(|_| value.clone());
        let inline = Inline::new(value, entry.clone());
        let replaced = match self.index.entry_sync(key) {
            scc::hash_index::Entry::Vacant(vacant) => {
                let occupied = vacant.insert_entry(inline);
                if let (Some(journal), Some(value)) = (&self.journal, &journaled) {
                    journal.put(occupied.key(), value, expires);
                }
                drop(occupied);
                // Relaxed: a count, published with nothing.
                self.entries.fetch_add(1, Ordering::Relaxed);
                None
            }
            scc::hash_index::Entry::Occupied(mut occupied) => {
                let old = occupied.get().clone();
                occupied.update(inline);
                if let (Some(journal), Some(value)) = (&self.journal, &journaled) {
                    journal.put(occupied.key(), value, expires);
                }
                Some(old)
            }
        };
        entry.link(&self.deadlines, (entry.deadline(), seq), &entry);
        if let Some(old) = replaced {
            // The new entry took the old one's place: one reservation too many.
            self.release();
            old.entry.unlink(&self.deadlines);
            self.notify(&old.entry.key, old.value, EvictionCause::Replaced);
        } else {
            self.counters.live.set(self.len() as i64);
        }
    }

    /// Puts `entry` into `deadlines` under `deadline` and a new sequence
    /// number, unless it was evicted meanwhile.
    fn link(&self, entry: &Arc<Entry<K>>, deadline: u64) {
        // Relaxed: a unique number is all that is needed, not an order.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        entry.link(&self.deadlines, (deadline, seq), entry);
    }

    /// Removes the live or expired entry under `key` (cause `Removed`);
    /// returns its value if it was live.
    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.lookup(key, |entry| entry.entry.clone())?;
        let now = self.time.refresh();
        let live = entry.is_live(now);
        let cause = if live {
            EvictionCause::Removed
        } else {
            EvictionCause::Expired
        };
        let removed = self.evict(&entry, cause);
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        removed.filter(|_| live)
    }

    #[cfg(feature = "persist")] // The disk tier's.
    /// Removes the entry under `key` (cause `Removed`, or `Expired` if it
    /// had expired); returns its value if it was live. Unlike
    /// [`remove`](Self::remove), the journal is told even when `key` held
    /// nothing, under the key's lock, so the removal is ordered with every
    /// other change of `key` (the disk tier may hold what memory does not).
    pub(crate) fn remove_key(&self, key: K) -> Option<V> {
        let now = self.time.refresh();
        let removed = match self.index.entry_sync(key) {
            scc::hash_index::Entry::Occupied(occupied) => {
                let old = occupied.get().clone();
                let cause = if old.entry.is_live(now) {
                    EvictionCause::Removed
                } else {
                    EvictionCause::Expired
                };
                if let Some(journal) = &self.journal {
                    journal.remove(occupied.key(), cause);
                }
                occupied.remove_entry();
                Some((old, cause))
            }
            scc::hash_index::Entry::Vacant(vacant) => {
                if let Some(journal) = &self.journal {
                    journal.remove(vacant.key(), EvictionCause::Removed);
                }
                None
            }
        };
        let (old, cause) = removed?;
        let value = self.evicted(&old.entry, old.value, cause);
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        (cause == EvictionCause::Removed).then_some(value)
    }

    /// Removes every entry (cause `Cleared`, or `Expired` for those already
    /// expired); returns how many were removed. Initialisations in progress
    /// are not affected: their values appear when they finish.
    pub(crate) fn clear(&self) -> usize {
        let mut victims = Vec::new();
        {
            let guard = scc::Guard::new();
            for (_, entry) in self.index.iter(&guard) {
                victims.push(entry.entry.clone());
            }
        }
        let now = self.time.refresh();
        victims
            .iter()
            .filter(|e| {
                let cause = if e.is_live(now) {
                    EvictionCause::Cleared
                } else {
                    EvictionCause::Expired
                };
                self.evict(e, cause).is_some()
            })
            .count()
    }

    /// Calls `f` on every live entry. Weakly consistent: safe during any
    /// concurrent operation; sees each entry present throughout at most
    /// once, and may or may not see those added or removed meanwhile. `f`
    /// runs with no lock held.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        let guard = scc::Guard::new();
        for (key, entry) in self.index.iter(&guard) {
            let now = if entry.needs_time(self.idle) {
                self.time.now()
            } else {
                0
            };
            if entry.is_live(now, self.idle) {
                f(key, &entry.value);
            }
        }
    }

    /// Evicts every expired entry now; returns how many.
    pub(crate) fn sweep(&self) -> usize {
        self.sweep_expired(usize::MAX)
    }

    /// Evicts up to `limit` expired entries, soonest deadline first.
    pub(crate) fn sweep_expired(&self, limit: usize) -> usize {
        let now = self.time.refresh();
        let mut evicted = 0;
        while evicted < limit {
            let Some(front) = self.deadlines.front() else {
                break;
            };
            let key = *front.key();
            if key.0 > now {
                break;
            }
            let entry = front.value().clone();
            drop(front);
            if !entry.unlink_if(&self.deadlines, key) {
                continue;
            }
            if entry.is_live(now) {
                // Its key was a lower bound: the last access moved it later.
                self.link(&entry, entry.deadline());
            } else if self.evict(&entry, EvictionCause::Expired).is_some() {
                evicted += 1;
            }
        }
        evicted
    }

    /// Frees one unit of capacity if it can: an expired entry, or, with the
    /// evicting policy, the second-chance victim. `false` if nothing could
    /// be freed.
    fn make_room(&self) -> bool {
        if self.sweep_expired(1) > 0 {
            return true;
        }
        if !self.evict_at_capacity {
            // Another thread may have freed room meanwhile.
            return self.occupancy.load(Ordering::Relaxed) < self.max_entries;
        }
        let now = self.time.refresh();
        for considered in 0..CLOCK_SCAN {
            let Some(front) = self.deadlines.front() else {
                break;
            };
            let key = *front.key();
            let entry = front.value().clone();
            drop(front);
            if !entry.unlink_if(&self.deadlines, key) {
                continue;
            }
            if !entry.is_live(now) {
                if self.evict(&entry, EvictionCause::Expired).is_some() {
                    return true;
                }
                continue;
            }
            if self.referenced.take(entry.cell) && considered + 1 < CLOCK_SCAN {
                // Live, so its deadline is at or after its key: it moves back.
                self.link(&entry, entry.deadline());
                continue;
            }
            if self.evict(&entry, EvictionCause::Capacity).is_some() {
                return true;
            }
        }
        // Nothing evictable (every unit is a flight in progress), unless
        // another thread freed room meanwhile.
        self.occupancy.load(Ordering::Relaxed) < self.max_entries
    }

    /// Takes one unit of capacity if one is free.
    fn try_reserve(&self) -> bool {
        // Relaxed: the count is the only shared state; the entry itself is
        // published through scc.
        self.occupancy
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_entries).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives one unit of capacity back.
    fn release(&self) {
        // Relaxed: as in `try_reserve`.
        self.occupancy.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes `entry` if it is still the one in `index`; the one caller
    /// that succeeds releases its capacity, unlinks it, notifies, and gets
    /// the value back.
    fn evict(&self, entry: &Arc<Entry<K>>, cause: EvictionCause) -> Option<V> {
        let mut value = None;
        self.index.remove_if_sync(&entry.key, |current| {
            let same = Arc::ptr_eq(&current.entry, entry);
            if same {
                value = Some(current.value.clone());
                if let Some(journal) = &self.journal {
                    // Under the key's lock: ordered with its other changes.
                    journal.remove(&entry.key, cause);
                }
            }
            same
        });
        Some(self.evicted(entry, value?, cause))
    }

    /// The bookkeeping of an entry just removed from `index`: capacity,
    /// `deadlines`, metrics, the listener. Returns the value.
    fn evicted(&self, entry: &Arc<Entry<K>>, value: V, cause: EvictionCause) -> V {
        // Relaxed: counts, published with nothing.
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.release();
        entry.unlink(&self.deadlines);
        self.counters.live.set(self.len() as i64);
        if self.listener.is_some() {
            self.notify(&entry.key, value.clone(), cause);
        } else {
            self.counters.evictions[cause.index()].inc();
        }
        value
    }

    /// Counts an eviction and calls the listener (no internal lock is held
    /// by any caller of this).
    fn notify(&self, key: &K, value: V, cause: EvictionCause) {
        self.counters.evictions[cause.index()].inc();
        if let Some(listener) = &self.listener {
            listener(key, value, cause);
        }
    }
}

impl<K, V> Tick for TtlMap<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Refreshes the coarse time (the ticker's tick).
    fn tick(&self) {
        self.time.refresh();
    }
}

/// Ends a leader's flight in the map: removes it from `flights` and, unless
/// disarmed (the value was published and the reservation is the entry's
/// now), gives the reservation back. Dropped by an unwinding initialiser too.
struct FlightGuard<'a, K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    map: &'a TtlMap<K, V>,
    key: &'a K,
    flight: crate::sync::Arc<Flight<V>>,
    /// Set once the value is published: the reservation is the entry's.
    keep_reservation: bool,
}

impl<'a, K, V> FlightGuard<'a, K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Removes the flight, keeping the reservation.
    fn disarm(mut self) {
        self.keep_reservation = true;
    }
}

impl<K, V> Drop for FlightGuard<'_, K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if !self.keep_reservation {
            self.map.release();
        }
        self.map.flights.remove_if_sync(self.key, |current| {
            crate::sync::Arc::ptr_eq(current, &self.flight)
        });
    }
}

impl<K, V> fmt::Debug for TtlMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlMap")
            .field("entries", &self.entries.load(Ordering::Relaxed))
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}
