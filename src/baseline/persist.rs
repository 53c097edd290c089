//! [`LockedPersistentCache`]: a TTL cache with a disk tier, the classic
//! way: one `Mutex<HashMap>`, and one JSON file per entry, read and written
//! **under that mutex**.
//!
//! The design is described on the type.

use std::collections::HashMap;
use std::hash::Hash;
use std::io::{self, Write as _};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::timed;
use crate::cache::persist::format::{self, NO_DEADLINE};
use crate::cache::persist::read_entry_file;
use crate::cache::{DEFAULT_MAX_ENTRIES, PersistError};
use crate::clock::{Clock, SystemClock};

/// One entry file: JSON.
#[derive(Serialize, Deserialize)]
struct EntryFile<K, V> {
    key: K,
    value: V,
    deadline: u64,
}

/// Builds a [`LockedPersistentCache`].
#[must_use]
pub struct LockedPersistentCacheBuilder<K, V> {
    types: PhantomData<fn() -> (K, V)>,
    dir: PathBuf,
    ttl: Option<Duration>,
    max_entries: usize,
    clock: Arc<dyn Clock>,
    fsync: bool,
}

impl<K, V> std::fmt::Debug for LockedPersistentCacheBuilder<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedPersistentCacheBuilder")
            .field("dir", &self.dir)
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

impl<K, V> LockedPersistentCacheBuilder<K, V>
where
    K: Eq + Hash + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    /// Entries expire `ttl` after insertion (default: never).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// At most `max` entries in memory (default [`DEFAULT_MAX_ENTRIES`]);
    /// the disk holds every entry.
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max;
        self
    }

    /// The clock deadlines are measured with (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Whether each file is fsynced before its rename (default `true`).
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Creates the directory if needed and loads every live entry (up to
    /// `max_entries`), deleting expired and unreadable files.
    pub fn open(self) -> Result<LockedPersistentCache<K, V>, PersistError> {
        timed::Lifetimes {
            absolute: self.ttl,
            idle: None,
        }
        .validate(self.max_entries, "time_to_live", "time_to_idle")?;
        let dir_error = |source| PersistError::Dir {
            path: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(dir_error)?;
        let cache = LockedPersistentCache {
            entries: Mutex::new(HashMap::new()),
            dir: self.dir.clone(),
            ttl: self.ttl,
            max_entries: self.max_entries,
            clock: self.clock,
            fsync: self.fsync,
            corrupt_dropped: AtomicU64::new(0),
        };
        {
            let mut entries = cache.lock();
            let now = cache.now();
            for file in std::fs::read_dir(&self.dir).map_err(dir_error)? {
                let path = file.map_err(dir_error)?.path();
                if path.extension().is_some_and(|e| e == "json") {
                    if let Some(entry) = cache.read(&path, now)
                        && entries.len() < cache.max_entries
                    {
                        entries.insert(entry.key, (entry.value, entry.deadline));
                    }
                } else if path.extension().is_some_and(|e| e == "tmp") {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(cache)
    }
}

/// The classic persistent TTL cache: one mutex around a `HashMap`, one JSON
/// file per entry, every file operation under the mutex.
///
/// * [`insert`](LockedPersistentCache::insert) updates the map and writes
///   the entry's file (`{"key":..,"value":..,"deadline":..}` to a temporary
///   file, fsynced unless turned off, renamed) before it unlocks: the file is
///   on disk when the call returns, and every other caller waits for it.
/// * [`get`](LockedPersistentCache::get) checks the map; on a miss it reads
///   the key's file under the lock, checks its deadline against the clock,
///   deletes it if it is expired or does not parse, and otherwise puts the
///   entry back into the map (at the bound evicting whichever entry the map
///   iterates first: no scan, the cheapest policy).
/// * [`invalidate`](LockedPersistentCache::invalidate) removes the entry
///   and deletes its file under the lock.
/// * [`open`](LockedPersistentCacheBuilder::open) reads every file, one
///   after another, under the lock.
///
/// Its guarantees match [`PersistentTtlCache`](crate::cache::PersistentTtlCache)'s
/// (no expired or corrupt entry served; both tiers expire together) and
/// more (a write is on disk when `insert` returns); its cost is that every
/// reader and writer of every key queues behind every file operation.
///
/// ```
/// use latchfree::baseline::LockedPersistentCache;
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir()?;
/// let cache = LockedPersistentCache::<u64, String>::builder(dir.path())
///     .time_to_live(Duration::from_secs(60))
///     .open()?;
/// cache.insert(7u64, "seven".to_string())?;
/// drop(cache);
/// let cache = LockedPersistentCache::<u64, String>::builder(dir.path()).open()?;
/// assert_eq!(cache.get(&7).as_deref(), Some("seven"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LockedPersistentCache<K, V> {
    entries: Mutex<HashMap<K, (V, u64)>>,
    dir: PathBuf,
    ttl: Option<Duration>,
    max_entries: usize,
    clock: Arc<dyn Clock>,
    fsync: bool,
    corrupt_dropped: AtomicU64,
}

impl<K, V> std::fmt::Debug for LockedPersistentCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedPersistentCache")
            .field("dir", &self.dir)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl<K, V> LockedPersistentCache<K, V>
where
    K: Eq + Hash + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    /// A builder for a cache in `dir`: [`DEFAULT_MAX_ENTRIES`], no expiry,
    /// the system clock, fsync on.
    pub fn builder(dir: impl Into<PathBuf>) -> LockedPersistentCacheBuilder<K, V> {
        LockedPersistentCacheBuilder {
            types: PhantomData,
            dir: dir.into(),
            ttl: None,
            max_entries: DEFAULT_MAX_ENTRIES,
            clock: Arc::new(SystemClock),
            fsync: true,
        }
    }
}

impl<K, V> LockedPersistentCache<K, V>
where
    K: Eq + Hash + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    fn lock(&self) -> MutexGuard<'_, HashMap<K, (V, u64)>> {
        // Nothing user-supplied runs under the lock: the map is consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        timed::now_nanos(&*self.clock)
    }

    fn path_of(&self, key: &K) -> Option<PathBuf> {
        let key = serde_json::to_vec(key).ok()?;
        let name = format::file_name(&key);
        Some(self.dir.join(name).with_extension("json"))
    }

    /// Reads a file: its entry if it parses and is live; an expired or
    /// unparsable file is deleted (the unparsable one counted).
    fn read(&self, path: &Path, now: u64) -> Option<EntryFile<K, V>> {
        // The same reads as latchfree's tier (one `read` for a small file).
        let bytes = read_entry_file(path).ok()?;
        let parsed = match serde_json::from_slice::<EntryFile<K, V>>(&bytes) {
            Ok(entry) => Ok(entry),
            // Sure before deleting: the whole file, however many reads.
            Err(_) => serde_json::from_slice(&std::fs::read(path).ok()?),
        };
        match parsed {
            Ok(entry) if entry.deadline > now => Some(entry),
            Ok(_) => {
                let _ = std::fs::remove_file(path);
                None
            }
            Err(_) => {
                if std::fs::remove_file(path).is_ok() {
                    self.corrupt_dropped.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// The live value of `key`: from memory, else from its file (read under
    /// the lock, then kept in memory).
    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.lock();
        let now = self.now();
        match entries.get(key) {
            Some((value, deadline)) if *deadline > now => return Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                if let Some(path) = self.path_of(key) {
                    let _ = std::fs::remove_file(path);
                }
                return None;
            }
            None => {}
        }
        let entry = self.read(&self.path_of(key)?, now)?;
        if &entry.key != key {
            return None;
        }
        Self::make_room(&mut entries, self.max_entries);
        entries.insert(entry.key, (entry.value.clone(), entry.deadline));
        Some(entry.value)
    }

    /// Evicts one entry if the map is full: the first the map iterates (no
    /// scan; cheaper than any policy that picks). Its file stays.
    fn make_room(entries: &mut HashMap<K, (V, u64)>, max: usize) {
        if entries.len() < max {
            return;
        }
        if let Some(victim) = entries.keys().next().cloned() {
            entries.remove(&victim);
        }
    }

    /// Inserts `value` under `key` with the cache's TTL and writes its file
    /// before returning (under the lock).
    pub fn insert(&self, key: K, value: V) -> io::Result<()> {
        let mut entries = self.lock();
        let deadline = self.ttl.map_or(NO_DEADLINE, |ttl| {
            self.now().saturating_add(timed::nanos(ttl))
        });
        let path = self
            .path_of(&key)
            .ok_or_else(|| io::Error::other("the key does not serialize"))?;
        let file = EntryFile {
            key,
            value,
            deadline,
        };
        let bytes = serde_json::to_vec(&file)?;
        let tmp = path.with_extension("tmp");
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(&bytes)?;
        if self.fsync {
            out.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if !entries.contains_key(&file.key) {
            Self::make_room(&mut entries, self.max_entries);
        }
        entries.insert(file.key, (file.value, deadline));
        Ok(())
    }

    /// Removes `key` from memory and deletes its file (under the lock).
    pub fn invalidate(&self, key: &K) -> Option<V> {
        let mut entries = self.lock();
        if let Some(path) = self.path_of(key) {
            let _ = std::fs::remove_file(path);
        }
        let now = self.now();
        entries
            .remove(key)
            .and_then(|(v, deadline)| (deadline > now).then_some(v))
    }

    /// Entries in memory.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether memory holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unparsable files deleted.
    pub fn corrupt_dropped(&self) -> u64 {
        self.corrupt_dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::SystemTime;

    #[test]
    fn reads_through_expires_on_both_tiers_and_drops_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let open = || {
            LockedPersistentCache::<u64, String>::builder(dir.path())
                .time_to_live(Duration::from_secs(10))
                .max_entries(2)
                .clock(clock.clone())
                .fsync(false)
                .open()
                .unwrap()
        };
        let cache = open();
        for k in 0..5 {
            cache.insert(k, format!("v{k}")).unwrap();
        }
        assert_eq!(cache.len(), 2);
        for k in 0..5 {
            assert_eq!(cache.get(&k), Some(format!("v{k}")));
        }
        std::fs::write(cache.path_of(&3).unwrap(), b"{not json").unwrap();
        assert_eq!(cache.invalidate(&4).as_deref(), Some("v4"));
        drop(cache);
        let cache = open();
        assert_eq!(cache.corrupt_dropped(), 1);
        assert_eq!(cache.get(&3), None);
        assert_eq!(cache.get(&4), None);
        assert_eq!(cache.get(&0).as_deref(), Some("v0"));
        clock.advance(Duration::from_secs(10));
        for k in 0..5 {
            assert_eq!(cache.get(&k), None);
        }
        drop(cache);
        assert_eq!(open().len(), 0);
    }
}
