//! A bounded TTL cache with lock-free hits and single-flight loading.
//!
//! ```
//! use latchfree::cache::TtlCache;
//! use std::time::Duration;
//!
//! let cache = TtlCache::<u64, String>::builder()
//!     .max_entries(1_000)
//!     .time_to_live(Duration::from_secs(60))
//!     .build()?;
//!
//! let v = cache.get_or_load(7, || "seven".to_string())?;
//! assert_eq!(v, "seven");
//! assert_eq!(cache.get(&7).as_deref(), Some("seven"));
//! cache.insert_with_ttl(8, "eight".into(), Duration::from_secs(1))?; // or Err(Rejected { key, value })
//! assert_eq!(cache.invalidate(&8).as_deref(), Some("eight"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! * **Hits take no lock and write nothing shared.** A hit is an
//!   `scc::HashIndex` peek under an epoch guard and a clone of the value
//!   (store an `Arc` for large values). Metrics are per-thread counters.
//!   Two per-entry stamps may be written, each only when it changes: the
//!   last-access time, only with [`time_to_idle`](TtlCacheBuilder::time_to_idle)
//!   (the deadline moves with it), and a two-bit access count for the
//!   eviction policy, written only while it is below its maximum.
//! * **Single-flight loads.** Concurrent [`get_or_load`](TtlCache::get_or_load)
//!   misses on one key run the loader once; the others sleep until it ends
//!   and get its value. A loader error reaches every waiter and is not
//!   cached; a loader that panics unwinds in its own caller, its waiters get
//!   [`LoadError::Panicked`], and the next call loads again.
//! * **No self-deadlock.** A loader that asks for its own key (directly, or
//!   through another key's loader) gets [`LoadError::Recursive`] at once.
//! * **Async twins** (feature `async`):
//!   [`get_or_load_async`](TtlCache::get_or_load_async) and
//!   [`try_get_or_load_async`](TtlCache::try_get_or_load_async) take the
//!   loader as a future; waiters await instead of sleeping, and each
//!   documents its cancel safety.
//! * **Never expired.** An entry is not returned at or after its deadline:
//!   the earlier of insertion + TTL (the cache's or the entry's own) and
//!   last access + idle TTL, measured by the cache's time (exactly the
//!   clock when it is cheap, like [`ManualClock`](crate::clock::ManualClock),
//!   or when `time_resolution` is zero; otherwise a copy refreshed every
//!   `time_resolution`, default 1 ms, by the process-wide ticker thread and
//!   by writes).
//! * **Bounded, with a documented policy.** Never more than `max_entries`
//!   entries plus loads in progress, together. At the bound, expired entries
//!   go first, then the victim of *S3-FIFO* (a small queue that new keys
//!   enter and one-hit wonders leave by, a main queue for what was read
//!   again, a ghost record of keys evicted too early; the order is
//!   independent of TTLs), in the new key's shard. Its hit ratio is
//!   measured by `latchfree bench hit-ratio` against moka and quick_cache.
//!   If nothing can be evicted (every slot is a load in
//!   progress), an insert is dropped and a load is refused with
//!   [`LoadError::Full`]; both are counted as `rejected`.
//! * **Listener exactly once,** with its [`EvictionCause`], with no internal
//!   lock held, with no "run pending tasks" call needed.
//!
//! The algorithm is described in `src/ttl/mod.rs`, shared with
//! [`crate::session`].
//!
//! # An optional disk tier (feature `persist`)
//!
//! [`TtlCacheBuilder::persist_dir`] turns the cache into a
//! [`PersistentTtlCache`]: the same memory tier, plus one checksummed file
//! per entry written behind the hot path by one writer thread, read through
//! on a memory miss, loaded at open, expired together with memory (see
//! [`persist`]). Without it nothing changes: no serde bound, no thread, the
//! same code on hits (writes test one `Option` that is `None`).

use std::borrow::Borrow;
use std::convert::Infallible;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::stats::Stats;
use crate::ttl::{Counters, InitError, Journal, Life, Options, SweeperHandle, TtlMap};

pub use crate::ttl::{BuildError, EvictionCause, Sweep};
#[cfg(feature = "persist")]
pub use persist::{PersistError, PersistMetrics, PersistentTtlCache, PersistentTtlCacheBuilder};

#[cfg(feature = "persist")]
pub mod persist;

/// The default [`TtlCacheBuilder::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// Why [`TtlCache::get_or_load`] / [`TtlCache::try_get_or_load`] returned no
/// value. `E` is the loader's error type. The variants share their names
/// with [`SessionError`](crate::session::SessionError)'s: `Full`, `Failed`,
/// `FailedElsewhere`, `Panicked`, `Recursive`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError<E = Infallible> {
    /// The loader returned this error: this call's own, or the one it waited
    /// on. Nothing was cached.
    #[error("the loader failed: {0}")]
    Failed(Arc<E>),
    /// The loader this call waited on (another caller's, with another error
    /// type) failed. Nothing was cached.
    #[error("the loader of a concurrent caller failed")]
    FailedElsewhere,
    /// The loader this call waited on panicked. Nothing was cached.
    #[error("the loader of a concurrent caller panicked")]
    Panicked,
    /// The call came from inside the loader that is loading this key (on
    /// the same thread, or polled by the same task's loader future): it
    /// would wait for itself forever, so it returns at once instead. The
    /// loader that is running is not affected.
    #[error("get_or_load was called for a key from inside that key's own loader")]
    Recursive,
    /// Another caller's loader for this key did not finish within the
    /// cache's [`wait_timeout`](TtlCacheBuilder::wait_timeout); it keeps
    /// running, and a later call gets its value.
    #[error(
        "the loader of a concurrent caller did not finish within {after:?} (TtlCacheBuilder::wait_timeout)"
    )]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// Nothing could be evicted to make room (every slot is a load in
    /// progress: `max_entries` is below the number of concurrent loads);
    /// the loader did not run.
    #[error("the cache is full of loads in progress ({max} entries; TtlCacheBuilder::max_entries)")]
    Full {
        /// The bound.
        max: usize,
    },
}

impl<E> LoadError<E> {
    pub(crate) fn from_init(error: InitError<E>, max: usize) -> Self {
        match error {
            InitError::Capacity => LoadError::Full { max },
            InitError::Failed(e) => LoadError::Failed(e),
            InitError::FailedElsewhere => LoadError::FailedElsewhere,
            InitError::Panicked => LoadError::Panicked,
            InitError::Recursive => LoadError::Recursive,
            InitError::TimedOut(after) => LoadError::TimedOut { after },
        }
    }
}

/// An insert the cache refused: no room could be made (every slot was a load
/// in progress). It hands the key and the value back, as scc's and
/// crossbeam's inserts do; the cache is unchanged. `Debug` and the error
/// message need neither `K: Debug` nor `V: Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Rejected<K, V> {
    /// The key, as given.
    pub key: K,
    /// The value, as given.
    pub value: V,
}

impl<K, V> fmt::Debug for Rejected<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected").finish_non_exhaustive()
    }
}

impl<K, V> fmt::Display for Rejected<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the cache is full of loads in progress: the entry was not inserted")
    }
}

impl<K, V> std::error::Error for Rejected<K, V> {}

/// The cache's counters, read at one moment (see [`TtlCache::metrics`]).
/// Each is also in the [`Stats`] given to the builder, as
/// `PREFIX_hits_total` and so on (prefix `cache` unless
/// [`TtlCacheBuilder::metrics_prefix`] says otherwise), with the labels of
/// [`TtlCacheBuilder::metrics_labels`] (none by default).
///
/// The fields are named as [`SessionMetrics`](crate::session::SessionMetrics)'s:
/// a loader is an `init` in both, and each way out of the map is named for
/// its [`EvictionCause`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheMetrics {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Loaders run.
    pub inits: u64,
    /// Callers that waited for another caller's loader.
    pub coalesced: u64,
    /// Loaders that returned an error.
    pub init_errors: u64,
    /// Inserts or loaded values dropped because nothing could be evicted.
    pub rejected: u64,
    /// Entries that left because they expired ([`EvictionCause::Expired`]).
    pub expired: u64,
    /// Entries removed by `invalidate` ([`EvictionCause::Removed`]).
    pub removed: u64,
    /// Entries evicted to make room ([`EvictionCause::Capacity`]).
    pub evicted: u64,
    /// Entries removed by `invalidate_all` ([`EvictionCause::Cleared`]).
    pub cleared: u64,
    /// Entries replaced by an insert ([`EvictionCause::Replaced`]).
    pub replaced: u64,
    /// Entries held now.
    pub entries: u64,
}

type CacheListener<K, V> = crate::ttl::Listener<K, V>;

/// Configures a [`TtlCache`].
#[must_use]
pub struct TtlCacheBuilder<K, V> {
    max_entries: usize,
    ttl: Option<Duration>,
    tti: Option<Duration>,
    clock: Arc<dyn Clock>,
    sweep: Sweep,
    resolution: Duration,
    listener: Option<CacheListener<K, V>>,
    stats: Option<Stats>,
    prefix: String,
    labels: Vec<(String, String)>,
    wait_timeout: Option<Duration>,
}

impl<K, V> fmt::Debug for TtlCacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlCacheBuilder")
            .field("max_entries", &self.max_entries)
            .field("ttl", &self.ttl)
            .field("tti", &self.tti)
            .field("sweep", &self.sweep)
            .field("resolution", &self.resolution)
            .finish_non_exhaustive()
    }
}

impl<K, V> Default for TtlCacheBuilder<K, V> {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            ttl: None,
            tti: None,
            clock: Arc::new(SystemClock),
            sweep: Sweep::default(),
            resolution: Duration::from_millis(1),
            listener: None,
            stats: None,
            prefix: "cache".into(),
            labels: Vec::new(),
            wait_timeout: None,
        }
    }
}

impl<K, V> TtlCacheBuilder<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The most entries held at once (default [`DEFAULT_MAX_ENTRIES`]);
    /// loads in progress count too.
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max;
        self
    }

    /// Entries expire this long after insertion (default: never; an
    /// entry's own TTL from [`TtlCache::insert_with_ttl`] replaces it).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Entries expire this long after their last read (default: never).
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.tti = Some(tti);
        self
    }

    /// The clock deadlines are measured with (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// When expired entries are swept out (default: a background thread
    /// every 100 ms). They are never returned either way.
    pub fn sweep(mut self, sweep: Sweep) -> Self {
        self.sweep = sweep;
        self
    }

    /// How stale the time used by reads may be, with a clock that is not
    /// cheap and a background sweeper (default 1 ms; zero reads the clock on
    /// every check of an entry with a deadline).
    pub fn time_resolution(mut self, resolution: Duration) -> Self {
        self.resolution = resolution;
        self
    }

    /// Called once for every entry that leaves the cache, with its cause, on
    /// the thread that removed it, with no internal lock held.
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(&K, V, EvictionCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Box::new(listener));
        self
    }

    /// Registers the metrics in `stats` (default: a private [`Stats`]).
    pub fn stats(mut self, stats: &Stats) -> Self {
        self.stats = Some(stats.clone());
        self
    }

    /// The prefix of the metric names (default `cache`).
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Labels of every metric of this cache (default none), so that several
    /// caches share metric names and differ by label:
    /// `metrics_labels([("cache", "query")])` gives
    /// `cache_hits_total{cache="query"}`. Invalid label names are refused by
    /// [`build`](Self::build).
    pub fn metrics_labels<L: Into<String>, W: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (L, W)>,
    ) -> Self {
        self.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// How long a blocking caller waits for another caller's load of the
    /// same key before it gives up with [`LoadError::TimedOut`] (default: as
    /// long as it takes). The loader is not affected: it keeps running and
    /// its value is cached. Async callers bound their wait with their
    /// runtime's timeout instead: dropping a waiting
    /// [`get_or_load_async`](TtlCache::get_or_load_async) is cancel safe.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// Builds the cache (and starts its sweeper thread, if configured).
    pub fn build(self) -> Result<TtlCache<K, V>, BuildError> {
        self.build_with(None)
    }

    /// Builds the cache, telling `journal` of every change.
    fn build_with(
        self,
        journal: Option<Arc<dyn Journal<K, V>>>,
    ) -> Result<TtlCache<K, V>, BuildError> {
        let stats = self.stats.unwrap_or_default();
        let counters = Counters::register(
            &stats,
            &self.prefix,
            &self
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        )?;
        let options = Options {
            max_entries: self.max_entries,
            lifetime: self.ttl,
            idle: self.tti,
            evict_at_capacity: true,
            sweep: self.sweep,
            resolution: self.resolution,
            clock: self.clock,
            listener: self.listener,
            counters,
            journal,
        };
        options.validate("time_to_live", "time_to_idle")?;
        let (map, sweeper) = TtlMap::start(options)?;
        Ok(TtlCache {
            map,
            _sweeper: sweeper,
            wait_timeout: self.wait_timeout,
        })
    }
}

/// A bounded cache with TTL, idle TTL and per-entry TTL, lock-free hits and
/// single-flight loading. See the [module docs](self).
///
/// Share it by reference or in an `Arc`; dropping it stops its sweeper.
pub struct TtlCache<K, V> {
    map: Arc<TtlMap<K, V>>,
    _sweeper: Option<SweeperHandle>,
    wait_timeout: Option<Duration>,
}

impl<K, V> fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlCache")
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

impl<K, V> TtlCache<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `max_entries` entries, no TTL, a background
    /// sweeper.
    ///
    /// # Panics
    ///
    /// If `max_entries` is zero or the sweeper thread cannot be started;
    /// use the [builder](Self::builder) to get these as errors.
    pub fn new(max_entries: usize) -> Self {
        Self::builder()
            .max_entries(max_entries)
            .build()
            .expect("TtlCache::new: max_entries must be at least 1")
    }

    /// A builder.
    pub fn builder() -> TtlCacheBuilder<K, V> {
        TtlCacheBuilder::default()
    }

    /// A copy of the live value under `key`, if any. Lock-free, no shared
    /// write.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key)
    }

    /// Calls `f` on the live value under `key` without cloning it. `f` runs
    /// inside an epoch guard: keep it short and do not call the cache from it.
    #[inline]
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.read(key, f)
    }

    /// Whether a live entry is under `key` (no stamp, no metric).
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains(key)
    }

    /// Inserts `value` under `key` with the cache's TTL, replacing any entry
    /// there ([`EvictionCause::Replaced`]). If nothing could be evicted to
    /// make room (every slot is a load in progress; see the module docs),
    /// the key and value come back in [`Rejected`] and the cache is
    /// unchanged.
    pub fn insert(&self, key: K, value: V) -> Result<(), Rejected<K, V>> {
        self.map
            .insert(key, value, Life::Default)
            .map_err(|(key, value)| Rejected { key, value })
    }

    /// As [`insert`](Self::insert), with this entry's own time to live
    /// (the cache's idle TTL still applies).
    ///
    /// A zero `ttl` means what it means everywhere in this crate: expired at
    /// birth. The value replaces any entry under `key` (which hears
    /// [`EvictionCause::Replaced`]) and is never returned; a sweep or a read
    /// evicts it as [`EvictionCause::Expired`]. (The builders refuse a zero
    /// TTL for the same reason: every entry would be expired at birth.)
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) -> Result<(), Rejected<K, V>> {
        self.map
            .insert(key, value, Life::Ttl(ttl))
            .map_err(|(key, value)| Rejected { key, value })
    }

    /// The live value under `key`, or the one `loader` makes, which runs at
    /// most once however many callers miss on `key` together.
    pub fn get_or_load(&self, key: K, loader: impl FnOnce() -> V) -> Result<V, LoadError> {
        self.try_get_or_load(key, || Ok::<V, Infallible>(loader()))
    }

    /// As [`get_or_load`](Self::get_or_load) with a fallible `loader`: its
    /// error reaches this caller and every caller waiting on it, and nothing
    /// is cached.
    pub fn try_get_or_load<E: Send + Sync + 'static>(
        &self,
        key: K,
        loader: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, LoadError<E>> {
        self.try_get_or_load_with_ttl(key, None, loader)
    }

    /// As [`try_get_or_load`](Self::try_get_or_load); a loaded entry gets
    /// `ttl` as its own time to live when `Some`.
    pub fn try_get_or_load_with_ttl<E: Send + Sync + 'static>(
        &self,
        key: K,
        ttl: Option<Duration>,
        loader: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, LoadError<E>> {
        let lookup = key.clone();
        self.map
            .get_or_init(&lookup, || key, ttl, self.wait_timeout, loader)
            .map_err(|e| LoadError::from_init(e, self.map.max_entries()))
    }

    /// As [`get_or_load`](Self::get_or_load), for async callers: `loader`
    /// is a future (not polled on a hit), and a caller that joins another
    /// caller's load awaits it instead of parking its thread. One flight
    /// serves blocking and async callers of a key at once.
    ///
    /// A hit completes on the first poll, with no lock and no waker.
    ///
    /// # Cancel safety
    ///
    /// * Dropped while it **waits** for another caller's load: its waker is
    ///   removed and nothing else changes.
    /// * Dropped while it **leads** (its `loader` is running): the loader is
    ///   dropped, the key's slot is given back, and every caller waiting on
    ///   it starts over: one of them runs its own loader (no waiter sees an
    ///   error for the cancelled one), and a later call loads anew.
    ///
    /// Nothing is cached half-way, and a key is never loaded twice at once;
    /// a loader dropped mid-way may have done part of its own work.
    ///
    /// # Re-entry
    ///
    /// Called for `key` from inside `key`'s own loader future it returns
    /// [`LoadError::Recursive`] at once.
    #[cfg(feature = "async")]
    pub async fn get_or_load_async(
        &self,
        key: K,
        loader: impl Future<Output = V>,
    ) -> Result<V, LoadError> {
        self.try_get_or_load_async(key, async { Ok::<V, Infallible>(loader.await) })
            .await
    }

    /// As [`get_or_load_async`](Self::get_or_load_async) with a fallible
    /// loader, as [`try_get_or_load`](Self::try_get_or_load). Cancel safe
    /// in the same way.
    #[cfg(feature = "async")]
    pub async fn try_get_or_load_async<E: Send + Sync + 'static>(
        &self,
        key: K,
        loader: impl Future<Output = Result<V, E>>,
    ) -> Result<V, LoadError<E>> {
        let lookup = key.clone();
        self.map
            .get_or_init_async(&lookup, || key, None, loader)
            .await
            .map_err(|e| LoadError::from_init(e, self.map.max_entries()))
    }

    /// Removes the entry under `key`; returns its value if it was live.
    pub fn invalidate<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key)
    }

    /// Removes every entry ([`EvictionCause::Cleared`]); returns how many.
    /// Loads in progress finish and are kept.
    pub fn invalidate_all(&self) -> usize {
        self.map.clear()
    }

    /// Entries held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity bound.
    pub fn max_entries(&self) -> usize {
        self.map.max_entries()
    }

    /// Calls `f` on every live entry; safe during any concurrent operation,
    /// weakly consistent.
    pub fn for_each(&self, f: impl FnMut(&K, &V)) {
        self.map.for_each(f);
    }

    /// Evicts every expired entry now; returns how many.
    pub fn sweep(&self) -> usize {
        self.map.sweep()
    }

    /// The counters, read now.
    pub fn metrics(&self) -> CacheMetrics {
        let c = &self.map.counters;
        let ev = |cause: EvictionCause| c.evictions[cause as usize].get();
        CacheMetrics {
            hits: c.hits.get(),
            misses: c.misses.get(),
            inits: c.inits.get(),
            coalesced: c.coalesced.get(),
            init_errors: c.init_errors.get(),
            rejected: c.rejected.get(),
            expired: ev(EvictionCause::Expired),
            evicted: ev(EvictionCause::Capacity),
            removed: ev(EvictionCause::Removed),
            cleared: ev(EvictionCause::Cleared),
            replaced: ev(EvictionCause::Replaced),
            entries: self.len() as u64,
        }
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<TtlCache<u64, String>>();
    send_sync::<LoadError<std::io::Error>>();
};
