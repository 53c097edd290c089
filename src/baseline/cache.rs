//! [`LockedTtlCache`]: a TTL cache as one `Mutex<HashMap>` with timestamps,
//! expiry and cleanup under the lock.
//!
//! The classic design, done carefully. Every call takes the one mutex:
//!
//! * [`get`](LockedTtlCache::get) looks the key up, checks its deadlines
//!   against the injected [`Clock`] (an expired entry is removed on the spot
//!   and never returned), stamps its last access and clones the value.
//! * [`get_or_load`](LockedTtlCache::get_or_load) runs the loader **under
//!   the lock** on a miss: loads are single-flight (exactly once per key
//!   while it lives) because nothing else can run meanwhile, which is also
//!   the design's cost: one slow loader stalls every reader of every key.
//!   A failed load stores nothing; callers queued behind it then run their
//!   own loader in turn. A panicking loader poisons the mutex, which this
//!   twin ignores: the map is only changed after the loader returns.
//! * At `max_entries`, an insertion first purges every expired entry, then
//!   evicts the least recently used one (full scans under the lock).
//!
//! The listener runs after the lock is released, once per entry that leaves
//! the cache, with its [`EvictionCause`] (an overwritten value:
//! [`EvictionCause::Replaced`]).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::timed::{self, Lifetimes, Timed};
use crate::cache::{BuildError, DEFAULT_MAX_ENTRIES, EvictionCause, LoadError, Rejected};
use crate::clock::{Clock, SystemClock};

type Listener<K, V> = Arc<dyn Fn(&K, V, EvictionCause) + Send + Sync>;

/// Builds a [`LockedTtlCache`].
#[must_use]
pub struct LockedTtlCacheBuilder<K, V> {
    lifetimes: Lifetimes,
    max_entries: usize,
    clock: Arc<dyn Clock>,
    listener: Option<Listener<K, V>>,
}

impl<K, V> LockedTtlCacheBuilder<K, V> {
    /// Entries expire `ttl` after insertion (unless inserted with their own
    /// ttl).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.lifetimes.absolute = Some(ttl);
        self
    }

    /// Entries not read for `tti` expire.
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.lifetimes.idle = Some(tti);
        self
    }

    /// At most `max` entries (default [`DEFAULT_MAX_ENTRIES`]); beyond it
    /// the expired go first, then the least recently used.
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max;
        self
    }

    /// The clock expiry reads (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Called once per entry that leaves the cache, with the cause, after
    /// the lock is released.
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(&K, V, EvictionCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// The cache, or why the settings are unusable (a zero `max_entries`,
    /// a zero timeout).
    pub fn build(self) -> Result<LockedTtlCache<K, V>, BuildError> {
        self.lifetimes
            .validate(self.max_entries, "time_to_live", "time_to_idle")?;
        Ok(LockedTtlCache {
            entries: Mutex::new(HashMap::new()),
            lifetimes: self.lifetimes,
            max_entries: self.max_entries,
            clock: self.clock,
            listener: self.listener,
        })
    }
}

/// The classic TTL cache: every call takes one mutex around a `HashMap`.
///
/// * **Never expired.** Every lookup checks the deadlines against the clock.
/// * **Single-flight.** [`get_or_load`](Self::get_or_load) runs the loader
///   once per key while the entry lives (under the lock).
/// * **The cost.** Every reader, writer and loader queues on one lock.
///
/// ```
/// use latchfree::baseline::LockedTtlCache;
/// use latchfree::clock::ManualClock;
/// use std::time::{Duration, SystemTime};
///
/// let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
/// let cache = LockedTtlCache::builder()
///     .time_to_live(Duration::from_secs(30))
///     .clock(clock.clone())
///     .build()?;
/// assert_eq!(cache.get_or_load(7, || "loaded")?, "loaded");
/// assert_eq!(cache.get(&7), Some("loaded"));
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(cache.get(&7), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LockedTtlCache<K, V> {
    entries: Mutex<HashMap<K, Timed<V>>>,
    lifetimes: Lifetimes,
    max_entries: usize,
    clock: Arc<dyn Clock>,
    listener: Option<Listener<K, V>>,
}

impl<K, V> fmt::Debug for LockedTtlCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedTtlCache")
            .field("len", &self.lock().len())
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

/// Entries removed under the lock, told to the listener once it is released.
type Removed<K, V> = Vec<(K, V, EvictionCause)>;

impl<K, V> LockedTtlCache<K, V> {
    /// A cache of at most `max_entries` entries, no expiry, on the system
    /// clock.
    ///
    /// # Panics
    ///
    /// If `max_entries` is zero (the builder returns this as an error).
    pub fn new(max_entries: usize) -> Self {
        Self::builder()
            .max_entries(max_entries)
            .build()
            .expect("LockedTtlCache::new: max_entries must be at least 1")
    }

    /// A builder: [`DEFAULT_MAX_ENTRIES`], no expiry, on the system clock.
    pub fn builder() -> LockedTtlCacheBuilder<K, V> {
        LockedTtlCacheBuilder {
            lifetimes: Lifetimes::default(),
            max_entries: DEFAULT_MAX_ENTRIES,
            clock: Arc::new(SystemClock),
            listener: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Timed<V>>> {
        // Poisoned only by a panicking loader, which runs before the map is
        // touched: the map is consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        timed::now_nanos(&*self.clock)
    }

    fn notify(&self, removed: Removed<K, V>) {
        if let Some(listener) = &self.listener {
            for (k, v, cause) in removed {
                listener(&k, v, cause);
            }
        }
    }

    /// The configured bound.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Entries held, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash + Clone, V: Clone> LockedTtlCache<K, V> {
    /// A copy of the live value of `key`, stamping its last access; an
    /// expired entry is removed ([`EvictionCause::Expired`]) and `None`
    /// returned.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.with(key, V::clone)
    }

    /// Calls `f` on the live value of `key` under the lock (no clone).
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.now();
        let mut removed = Vec::new();
        let found = {
            let mut entries = self.lock();
            self.live(&mut entries, key, now, &mut removed).map(f)
        };
        self.notify(removed);
        found
    }

    /// Whether `key` is live.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.with(key, |_| ()).is_some()
    }

    /// Under the lock: the live entry of `key`, removing it if expired.
    fn live<'m, Q>(
        &self,
        entries: &'m mut HashMap<K, Timed<V>>,
        key: &Q,
        now: u64,
        removed: &mut Removed<K, V>,
    ) -> Option<&'m V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if entries.get(key)?.is_expired(now) {
            if let Some((k, e)) = entries.remove_entry(key) {
                removed.push((k, e.value, EvictionCause::Expired));
            }
            return None;
        }
        let entry = entries.get(key)?;
        entry.touch(now);
        Some(&entry.value)
    }

    /// Inserts `value` under `key` with the cache's lifetimes, replacing any
    /// previous value ([`EvictionCause::Replaced`]). Always `Ok`: there is
    /// always something to evict at the bound (the `Result` mirrors
    /// [`TtlCache::insert`](crate::cache::TtlCache::insert)).
    pub fn insert(&self, key: K, value: V) -> Result<(), Rejected<K, V>> {
        self.insert_entry(key, value, None)
    }

    /// Inserts `value` under `key`, expiring `ttl` from now instead of after
    /// the cache's time to live.
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) -> Result<(), Rejected<K, V>> {
        self.insert_entry(key, value, Some(ttl))
    }

    fn insert_entry(&self, key: K, value: V, ttl: Option<Duration>) -> Result<(), Rejected<K, V>> {
        let now = self.now();
        let mut removed = Vec::new();
        {
            let mut entries = self.lock();
            self.store(&mut entries, key, value, now, ttl, &mut removed);
        }
        self.notify(removed);
        Ok(())
    }

    /// Under the lock: makes room and stores the entry.
    fn store(
        &self,
        entries: &mut HashMap<K, Timed<V>>,
        key: K,
        value: V,
        now: u64,
        ttl: Option<Duration>,
        removed: &mut Removed<K, V>,
    ) {
        if let Some((k, old)) = entries.remove_entry(&key) {
            let cause = if old.is_expired(now) {
                EvictionCause::Expired
            } else {
                EvictionCause::Replaced
            };
            removed.push((k, old.value, cause));
        }
        if entries.len() >= self.max_entries {
            let expired = timed::drain_expired(entries, now);
            removed.extend(
                expired
                    .into_iter()
                    .map(|(k, v)| (k, v, EvictionCause::Expired)),
            );
        }
        // `max_entries >= 1` (checked by `build`): the map is not empty here.
        while entries.len() >= self.max_entries {
            let Some((k, v)) = timed::evict_lru(entries) else {
                break;
            };
            removed.push((k, v, EvictionCause::Capacity));
        }
        entries.insert(key, Timed::new(value, now, self.lifetimes, ttl));
    }

    /// The live value of `key`, loaded by `loader` (under the lock, so once
    /// per live key) on a miss. Never fails (the `Result` mirrors
    /// [`TtlCache::get_or_load`](crate::cache::TtlCache::get_or_load)).
    pub fn get_or_load(&self, key: K, loader: impl FnOnce() -> V) -> Result<V, LoadError> {
        self.try_get_or_load(key, || Ok::<V, Infallible>(loader()))
    }

    /// [`get_or_load`](Self::get_or_load) with a fallible loader: its error
    /// is returned ([`LoadError::Failed`]) and nothing is stored.
    pub fn try_get_or_load<E>(
        &self,
        key: K,
        loader: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, LoadError<E>> {
        self.try_get_or_load_with_ttl(key, None, loader)
    }

    /// [`try_get_or_load`](Self::try_get_or_load), the loaded value expiring
    /// `ttl` from now where given.
    pub fn try_get_or_load_with_ttl<E>(
        &self,
        key: K,
        ttl: Option<Duration>,
        loader: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, LoadError<E>> {
        let now = self.now();
        let mut removed = Vec::new();
        let result = {
            let mut entries = self.lock();
            match self.live(&mut entries, &key, now, &mut removed) {
                Some(v) => Ok(v.clone()),
                None => match loader() {
                    Ok(v) => {
                        self.store(&mut entries, key, v.clone(), now, ttl, &mut removed);
                        Ok(v)
                    }
                    Err(e) => Err(LoadError::Failed(Arc::new(e))),
                },
            }
        };
        self.notify(removed);
        result
    }

    /// Removes `key` ([`EvictionCause::Removed`]), returning its value if
    /// it was live.
    pub fn invalidate<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.now();
        let (k, entry) = self.lock().remove_entry(key)?;
        let live = !entry.is_expired(now);
        let cause = if live {
            EvictionCause::Removed
        } else {
            EvictionCause::Expired
        };
        let value = entry.value;
        self.notify(vec![(k, value.clone(), cause)]);
        live.then_some(value)
    }

    /// Removes every entry ([`EvictionCause::Cleared`]); returns how many.
    pub fn invalidate_all(&self) -> usize {
        let drained: Removed<K, V> = self
            .lock()
            .drain()
            .map(|(k, e)| (k, e.value, EvictionCause::Cleared))
            .collect();
        let n = drained.len();
        self.notify(drained);
        n
    }

    /// Calls `f` with each live entry, from a copy taken under the lock (so
    /// `f` may use the cache).
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        let now = self.now();
        let live: Vec<(K, V)> = self
            .lock()
            .iter()
            .filter(|(_, e)| !e.is_expired(now))
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        for (k, v) in &live {
            f(k, v);
        }
    }

    /// Removes every expired entry (one full scan under the lock); returns
    /// how many.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        let expired = timed::drain_expired(&mut self.lock(), now);
        let n = expired.len();
        self.notify(
            expired
                .into_iter()
                .map(|(k, v)| (k, v, EvictionCause::Expired))
                .collect(),
        );
        n
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<LockedTtlCache<String, std::sync::Arc<String>>>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    type Log = Arc<Mutex<Vec<(u64, u64, EvictionCause)>>>;

    fn cache(
        build: impl FnOnce(LockedTtlCacheBuilder<u64, u64>) -> LockedTtlCacheBuilder<u64, u64>,
    ) -> (LockedTtlCache<u64, u64>, ManualClock, Log) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let log: Log = Arc::default();
        let sink = Arc::clone(&log);
        let builder = LockedTtlCache::builder()
            .clock(clock.clone())
            .eviction_listener(move |k, v, cause| sink.lock().unwrap().push((*k, v, cause)));
        (build(builder).build().unwrap(), clock, log)
    }

    fn taken(log: &Log) -> Vec<(u64, u64, EvictionCause)> {
        let mut events = std::mem::take(&mut *log.lock().unwrap());
        events.sort_by_key(|e| e.0);
        events
    }

    #[test]
    fn loads_are_exactly_once_across_racing_threads() {
        let (cache, _, _) = cache(|b| b.max_entries(10_000));
        let calls = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for k in 0..10_000u64 {
                        let v = cache
                            .get_or_load(k, || {
                                calls.fetch_add(1, Ordering::Relaxed);
                                k * 10
                            })
                            .unwrap();
                        assert_eq!(v, k * 10);
                    }
                });
            }
        });
        assert_eq!(calls.load(Ordering::Relaxed), 10_000);
        assert_eq!(cache.len(), 10_000);
    }

    #[test]
    fn ttl_idle_and_per_entry_ttl_are_exact() {
        let (cache, clock, log) = cache(|b| {
            b.time_to_live(Duration::from_secs(20))
                .time_to_idle(Duration::from_secs(8))
        });
        cache.insert(1, 10).unwrap();
        cache
            .insert_with_ttl(2, 20, Duration::from_secs(5))
            .unwrap();
        clock.advance(Duration::from_secs(4));
        assert_eq!(cache.get(&1), Some(10));
        assert_eq!(cache.get(&2), Some(20));
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.get(&2), None, "per-entry ttl reached");
        clock.advance(Duration::from_secs(6));
        assert_eq!(cache.get(&1), Some(10), "idle 7 s of 8");
        clock.advance(Duration::from_secs(7));
        assert_eq!(cache.get(&1), Some(10), "idle 7 s again, 18 s of 20");
        clock.advance(Duration::from_secs(2));
        assert_eq!(cache.get(&1), None, "ttl reached");
        assert!(cache.is_empty(), "expired entries are removed when met");
        assert_eq!(
            taken(&log),
            [
                (1, 10, EvictionCause::Expired),
                (2, 20, EvictionCause::Expired)
            ]
        );
        cache.insert(3, 30).unwrap();
        clock.advance(Duration::from_secs(8));
        assert_eq!(cache.sweep(), 1, "idle limit reached");
        assert_eq!(taken(&log), [(3, 30, EvictionCause::Expired)]);
    }

    #[test]
    fn capacity_purges_the_expired_then_evicts_the_least_recently_used() {
        let (cache, clock, log) = cache(|b| b.max_entries(2));
        cache
            .insert_with_ttl(1, 10, Duration::from_secs(1))
            .unwrap();
        cache.insert(2, 20).unwrap();
        clock.advance(Duration::from_secs(1));
        cache.insert(3, 30).unwrap();
        assert_eq!(taken(&log), [(1, 10, EvictionCause::Expired)]);
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.get(&2), Some(20));
        cache.insert(4, 40).unwrap();
        assert_eq!(taken(&log), [(3, 30, EvictionCause::Capacity)]);
        cache.insert(4, 41).unwrap();
        assert_eq!(taken(&log), [(4, 40, EvictionCause::Replaced)]);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn failed_and_panicking_loads_store_nothing_and_a_retry_loads() {
        let (cache, _, _) = cache(|b| b);
        match cache.try_get_or_load(1, || Err("down")) {
            Err(LoadError::Failed(e)) => assert_eq!(*e, "down"),
            other => panic!("{other:?}"),
        }
        assert_eq!(cache.get(&1), None);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.get_or_load(2, || panic!("loader panics"))
        }));
        assert!(panicked.is_err());
        assert_eq!(cache.get_or_load(2, || 5).unwrap(), 5);
        assert_eq!(cache.try_get_or_load(1, || Ok::<_, ()>(6)).unwrap(), 6);
        assert_eq!(cache.len(), 2);
        assert_eq!(
            LockedTtlCache::<u64, u64>::builder()
                .max_entries(0)
                .build()
                .err(),
            Some(BuildError::ZeroCapacity)
        );
        assert_eq!(
            LockedTtlCache::<u64, u64>::builder()
                .time_to_idle(Duration::ZERO)
                .build()
                .err(),
            Some(BuildError::ZeroTimeout("time_to_idle"))
        );
    }

    #[test]
    fn invalidation_tells_the_listener_once_each() {
        let (cache, _, log) = cache(|b| b);
        for k in 1..=3 {
            cache.insert(k, k * 10).unwrap();
        }
        assert_eq!(cache.invalidate(&2), Some(20));
        assert_eq!(cache.invalidate(&2), None);
        let mut seen = Vec::new();
        cache.for_each(|k, v| {
            // The callback may use the cache: it runs outside the lock.
            assert!(cache.contains_key(k));
            seen.push((*k, *v));
        });
        seen.sort_unstable();
        assert_eq!(seen, [(1, 10), (3, 30)]);
        assert_eq!(cache.invalidate_all(), 2);
        assert!(cache.is_empty());
        assert_eq!(
            taken(&log),
            [
                (1, 10, EvictionCause::Cleared),
                (2, 20, EvictionCause::Removed),
                (3, 30, EvictionCause::Cleared),
            ]
        );
    }
}
