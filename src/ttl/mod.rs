//! The machinery shared by [`crate::session`] and [`crate::cache`]: an
//! epoch-reclaimed map of expiring entries with single-flight creation, a
//! deadline index, a capacity bound, eviction listeners and metrics.
//!
//! # The structure
//!
//! ```text
//!   index:      scc::HashIndex<Hashed<K>, Inline { value, expires, cell, Arc<Entry> }>
//!                                                  lock-free reads (peek)
//!   flights:    scc::HashMap<Hashed<K>, Arc<Flight>>  one per initialisation in progress
//!   order:      shards by key hash, each behind a writers-only lock:
//!                 a deadline wheel (expiry) and S3-FIFO queues (capacity)
//!   order.freq: Freq                               two-bit access counts (dense, one cell per entry)
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
//! immutable), and a two-bit access count, when the map evicts at capacity
//! (the S3-FIFO policy below needs it; it lives in a small dense table that
//! stays in cache). Each is a load on a hit, and a store at most once per
//! timer tick (the stamp) or three times per round of the policy (the
//! count, which saturates).
//!
//! **Creation** (`TtlMap::get_or_init`) is single-flight. It first looks
//! in `index` lock-free only (a miss there may be spurious while the key's
//! entry is replaced, which the next check catches). A miss takes the
//! key's entry in `flights` (a bucket lock in scc, held for microseconds,
//! never across user code). If a flight is there, the caller joins it and
//! parks on it (`crate::flight`). If not, it checks `index` again, under
//! the bucket's shared lock, which never misses a present key (the
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
//! last access + idle timeout. The `order` module's wheel holds each entry
//! under a coarse granule of a *lower bound* of its deadline (the last
//! access only moves the real deadline later). A sweep pops the granules
//! that have wholly passed: an entry still live goes back under its real
//! deadline, an expired one is evicted. So a sweep touches only entries at
//! or past their deadline, never the whole map. Exactness does not depend
//! on the sweep: every read checks the deadline itself.
//!
//! **Capacity.** `occupancy` counts entries plus reservations of flights
//! in progress and never exceeds `max_entries`. When a reservation fails,
//! expired entries go first (a sweep of one shard), then the policy: reject,
//! or evict the S3-FIFO victim of the new key's shard (the `order` module
//! argues the policy, which `latchfree bench hit-ratio` measures against
//! moka, quick_cache, LRU and FIFO). The policy's order is independent of
//! deadlines: with or without TTLs it keeps what is read.
//!
//! **Writes and locks.** Reads take no lock. A write takes its key's
//! bucket lock in `index` (scc's) and, after releasing it, its shard's lock
//! in `order` for a few pushes; a removal marks the entry dead with one
//! atomic swap and leaves the order to drop it lazily. (One write takes the
//! shard's lock inside the bucket's: a replacement that moves a key's
//! deadline earlier, for its new entry's count cell.) No lock is held
//! across user code, and the shard lock is always the innermost.
//!
//! **Replacements in place.** An insert over a present key whose new
//! deadline is not earlier than the old one (the usual case: the same
//! lifetime, a later time), in a map without an idle timeout, keeps the
//! key's `Entry`: under the key's bucket lock it publishes a new `Inline`
//! (the value, the deadline) pointing to the same `Entry`, and the old
//! `Inline` hands the new one its reference count (the `entry` module).
//! Nothing is allocated, nothing dies, the `Entry` is not even read, and
//! the order is not touched: the key keeps its place in its queue and its
//! access count, and stays in the wheel under its old deadline, a lower
//! bound of the new one (which is how the wheel already holds an entry an
//! idle timeout has extended). Two things make that safe:
//!
//! * an entry's identity no longer tells which value it holds, so every
//!   eviction decides under the key's lock, from the `Inline` the index
//!   holds then: a sweep or a read that found the entry expired evicts it
//!   only if it still is (`IfLive::Keep` in the `eviction` module), and the other
//!   evictions name the cause from it (`Expired` if it has expired);
//! * a sweep pops an entry from the wheel before it evicts it, so one
//!   found live under the lock catches up with the index's deadline there
//!   and goes back into the wheel under it (`order::Order::relink`).
//!
//! A replacement that moves the deadline earlier, or in a map with an idle
//! timeout (where a new last-access stamp would make the old value look
//! live to a concurrent read), makes a new entry as before.
//!
//! **Exactly-once eviction.** Whoever removes an entry from `index` (a
//! `remove_if` on pointer identity: exactly one caller succeeds) releases
//! its capacity, marks it dead in the order and calls the listener, after
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
//! **Time.** Deadlines are nanoseconds of the injected
//! [`Clock`](crate::clock::Clock). A cheap clock
//! ([`Clock::is_cheap`](crate::clock::Clock::is_cheap), e.g.
//! [`ManualClock`](crate::clock::ManualClock)) is read on every check, so
//! expiry is exact with respect to it. Otherwise,
//! when a background sweeper runs and `time_resolution` is not zero, reads
//! use a coarse copy of the clock that a process-wide ticker thread (one
//! for all maps, see the `sweeper` module) refreshes every
//! `time_resolution` and that every write operation refreshes too: an entry
//! may then be returned up to one resolution (plus the sweeper's scheduling
//! delay) after its deadline, never later than the first write or tick past
//! it. With `time_resolution(Duration::ZERO)` the clock is read on every
//! check.
//!
//! # How it is checked
//!
//! The loom models in `loom_tests/ttl.rs` run this code (not a copy) with
//! every atomic and lock from `crate::sync`: get-or-init against a finishing
//! leader, the capacity bound, exactly-once eviction by `remove` racing a
//! capacity eviction, a sweep and a read, a replacement in place racing
//! both, a capacity eviction racing a replacement by a new entry, and an
//! entry's slot states. Under loom, scc's maps are replaced
//! by stand-ins with the same per-key contract (the `maps` module says
//! what that leaves to scc). The model file's table lists the mutations
//! each model catches.
//!
//! # Where each part lives
//!
//! | module | its job |
//! |---|---|
//! | `config` | the sweep mode, the checked options, an entry's lifetime, build errors |
//! | `events` | eviction causes, the listener, the journal |
//! | `metrics` | the counters a map registers |
//! | `read` | lock-free lookups, the access stamp, the access count |
//! | `single_flight` | get-or-init over the map of flights |
//! | `write` | inserts, publication, explicit removal, `clear` |
//! | `eviction` | sweeps, the capacity bound, exactly-once eviction |
//! | `entry` | one entry: its inline and shared parts, its state, the access counts |
//! | `order` | the deadline wheel and the S3-FIFO queues, sharded |
//! | `maps` | `index` and `flights`: scc's maps, or loom-visible stand-ins under loom |
//! | `key` | keys hashed once, and the probes that find them |
//! | `time` | the exact or coarse time deadlines are checked against |
//! | `sweeper` | the background sweeper and the process-wide ticker |

mod config;
mod entry;
mod events;
mod eviction;
mod key;
mod maps;
mod metrics;
mod order;
mod read;
mod single_flight;
mod sweeper;
mod time;
mod write;

use std::fmt;
use std::hash::{Hash, RandomState};
use std::sync::{Arc, Weak};

use crossbeam_utils::CachePadded;

use crate::flight::Flight;
use crate::sync::atomic::{AtomicUsize, Ordering};
use config::nanos;
pub use config::{BuildError, Sweep};
pub(crate) use config::{Life, Options};
use entry::Inline;
pub use events::EvictionCause;
pub(crate) use events::{Journal, Listener};
use key::{Hashed, PassThrough};
pub(crate) use metrics::Counters;
pub(crate) use single_flight::InitError;
pub(crate) use sweeper::SweeperHandle;
use sweeper::Tick;
use time::TimeSource;

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

/// The shared core of [`crate::session::SessionRegistry`] and
/// [`crate::cache::TtlCache`].
pub(crate) struct TtlMap<K, V> {
    index: maps::HashIndex<Hashed<K>, Inline<K, V>>,
    flights: maps::HashMap<Hashed<K>, crate::sync::Arc<Flight<V>>>,
    /// The wheel of deadlines and the eviction policy's queues.
    order: order::Order<K>,
    /// Hashes keys, once each, for the maps and the order (its shards, its
    /// ghost record): see the `key` module.
    hasher: RandomState,
    /// Entries in `index` plus reservations of flights in progress.
    occupancy: CachePadded<AtomicUsize>,
    /// Entries in `index`.
    entries: CachePadded<AtomicUsize>,
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

impl<K, V> TtlMap<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
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
            index: maps::HashIndex::with_hasher(PassThrough::default()),
            flights: maps::HashMap::with_capacity_and_hasher(
                FLIGHT_SLOTS.min(options.max_entries),
                PassThrough::default(),
            ),
            order: order::Order::new(
                options.max_entries,
                options.evict_at_capacity,
                if coarse {
                    nanos(Some(options.resolution))
                } else {
                    0
                },
            ),
            hasher: RandomState::new(),
            occupancy: CachePadded::new(AtomicUsize::new(0)),
            entries: CachePadded::new(AtomicUsize::new(0)),
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
                        .map_err(|e| BuildError::Spawn(Arc::new(e)))?;
                }
                Some(
                    SweeperHandle::spawn(Arc::downgrade(&map), interval)
                        .map_err(|e| BuildError::Spawn(Arc::new(e)))?,
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
}

#[cfg(test)]
impl<K, V> TtlMap<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A map for unit tests and loom models: `max_entries`, the policy and
    /// timeouts given, swept by hand, time read from `clock` on every check,
    /// metrics in a `Stats` of its own.
    pub(crate) fn for_tests(
        max_entries: usize,
        evict_at_capacity: bool,
        lifetime: Option<std::time::Duration>,
        idle: Option<std::time::Duration>,
        clock: Arc<dyn crate::clock::Clock>,
        listener: Option<Listener<K, V>>,
    ) -> Arc<Self> {
        let stats = crate::stats::Stats::new();
        let options = Options {
            max_entries,
            lifetime,
            idle,
            evict_at_capacity,
            sweep: Sweep::Manual,
            resolution: std::time::Duration::ZERO,
            clock,
            listener,
            counters: Counters::register(&stats, "test", &[]).expect("fresh stats"),
            journal: None,
        };
        options
            .validate("lifetime", "idle")
            .expect("valid test options");
        let (map, sweeper) = Self::start(options).expect("no thread to start");
        assert!(sweeper.is_none(), "a manual sweep starts no thread");
        map
    }

    /// `(entries, occupancy, live entries the order counts)`: the three
    /// agree whenever no operation is in progress.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (
            self.len(),
            // Relaxed: read at rest, after the writers were joined.
            self.occupancy.load(Ordering::Relaxed),
            self.order.live(),
        )
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

impl<K, V> fmt::Debug for TtlMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlMap")
            .field("entries", &self.entries.load(Ordering::Relaxed))
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}
