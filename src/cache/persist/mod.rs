//! An optional on-disk tier for [`TtlCache`]: [`PersistentTtlCache`].
//!
//! ```
//! use latchfree::cache::TtlCache;
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let cache = TtlCache::<String, Vec<u32>>::builder()
//!     .time_to_live(Duration::from_secs(60))
//!     .persist_dir(dir.path())
//!     .open()?;
//! cache.insert("primes".into(), vec![2, 3, 5])?;
//! cache.flush()?; // on disk now
//! drop(cache);
//!
//! // After a restart the cache is warm.
//! let cache = TtlCache::<String, Vec<u32>>::builder()
//!     .time_to_live(Duration::from_secs(60))
//!     .persist_dir(dir.path())
//!     .open()?;
//! assert_eq!(cache.get(&"primes".to_string()), Some(vec![2, 3, 5]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! Memory is the [`TtlCache`] itself, unchanged: hits are its lock-free
//! hits and pay nothing for the disk. The disk is a directory with one file
//! per key (the format, with its checksum, is in [`format`](mod@format)), written
//! **behind the hot path** by one writer thread:
//!
//! ```text
//!  insert / load / invalidate / expiry / clear
//!        │  (under the key's bucket lock in the memory index)
//!        ├──▶ pending: scc::HashMap<K, newest change not yet on disk>
//!        ├──▶ generation[stripe(key)] += 1
//!        └──▶ channel ──▶ writer thread: NAME.tmp, fsync, rename / unlink;
//!                         fsync the directory when the queue runs empty
//! ```
//!
//! Every change of a key is handed to the writer while the memory index's
//! lock of that key is held, so the writer sees the changes of one key in
//! exactly the order memory made them: a removal is never overtaken by an
//! older write, and a write never by an older removal. The message names
//! the key only; the writer writes (or deletes) whatever is newest in
//! `pending` for it, so a key changed many times while the queue was long
//! is written once ([`PersistMetrics::changes_coalesced`] counts the rest),
//! and the disk is never behind what the message stood for. No insert, load or
//! invalidation waits for the disk unless the writer's queue is full (a
//! memory miss reads one file);
//! [`flush`](PersistentTtlCache::flush) and
//! [`invalidate_all`](PersistentTtlCache::invalidate_all) wait for the
//! writer.
//!
//! **A miss in memory reads through.** It looks in `pending` first (the
//! newest change not yet on disk: a value, or a removal that hides the
//! file), then reads the key's file; a live entry is returned and put back
//! into memory with its remaining time to live (the same absolute
//! deadline). It is put back only if the key's generation did not move
//! while it was read, checked under the key's lock: a concurrent insert or
//! invalidate wins, and the value read is not resurrected over it.
//!
//! # Guarantees
//!
//! * **The tiers expire together.** A file holds its entry's absolute
//!   deadline (wall-clock Unix nanoseconds of the cache's
//!   [`Clock`](crate::clock::Clock)); memory holds the same deadline. A read
//!   of the disk checks it against the clock and never returns an expired
//!   file; an entry expired in memory is deleted from the disk too, in
//!   order with later writes of the key. After a restart, expired files are
//!   deleted, not loaded.
//! * **A corrupt file is never served.** A file that is truncated, has a
//!   flipped bit, is garbage or empty, or does not deserialize is a miss;
//!   the writer deletes it (if it is still corrupt when its turn comes) and
//!   counts it in [`PersistMetrics::corrupt_dropped`]. Nothing panics.
//! * **Crash safety.** A file is replaced by rename, so a crash leaves the
//!   old file or the new one (or a `.tmp` file, deleted at open). Everything
//!   written before a [`flush`](PersistentTtlCache::flush) returned `Ok` is
//!   on disk (fsynced, unless [`fsync(false)`](PersistentTtlCacheBuilder::fsync)).
//! * **Warm after a restart, eagerly.** [`open`](PersistentTtlCacheBuilder::open)
//!   reads every file (in parallel, with rayon) and puts every live entry
//!   into memory before it returns (up to `max_entries`; the rest stay on
//!   disk and are read through).
//! * **Capacity eviction demotes.** An entry evicted from memory to make
//!   room keeps its file: the disk is the second tier. Invalidation,
//!   expiry and `invalidate_all` delete files.
//!
//! # Limits
//!
//! * No idle timeout: [`time_to_idle`](crate::cache::TtlCacheBuilder::time_to_idle)
//!   with a persistent tier is refused ([`PersistError::TimeToIdle`]), since
//!   the disk holds one absolute deadline per entry.
//! * The disk is bounded by the entries' time to live, not by a count: a
//!   file that expires while only on disk is deleted when a read finds it or
//!   at the next open.
//! * The queue to the writer holds at most
//!   [`queue_capacity`](PersistentTtlCacheBuilder::queue_capacity) changes;
//!   when it is full, writes wait for the disk (reads never do).
//! * One cache per directory at a time: [`open`](PersistentTtlCacheBuilder::open)
//!   takes an exclusive lock on the file [`LOCK_FILE`] in it (an OS file
//!   lock, released when the cache is dropped or its process dies, even by
//!   SIGKILL) and refuses a directory another cache holds, in this process
//!   or another, with [`PersistError::InUse`].
//! * A read-through in progress when
//!   [`invalidate_all`](PersistentTtlCache::invalidate_all) runs may put its
//!   entry back, as a load in progress does in [`TtlCache`].

pub mod format;
mod tier;
mod writer;

use std::convert::Infallible;
use std::fmt;
use std::hash::Hash;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rayon::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{BuildError, CacheMetrics, LoadError, Rejected, TtlCache, TtlCacheBuilder};
use crate::ttl::Journal;
use tier::{DiskCounters, Op, Tier};
use writer::Verdict;

/// Why a persistent cache could not be opened or flushed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The memory tier's settings are unusable.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A disk-tier setting is out of its range (nothing was opened):
    /// `PersistentTtlCacheBuilder::{setting}` was given `value`.
    #[error("PersistentTtlCacheBuilder::{setting}({value}) is out of range: use {allowed}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// The value refused.
        value: u64,
        /// What is accepted.
        allowed: &'static str,
    },
    /// `time_to_idle` was set: the disk tier holds absolute deadlines only.
    #[error("a persistent cache has no idle timeout (remove time_to_idle or persist_dir)")]
    TimeToIdle,
    /// The directory could not be created or listed.
    #[error("cannot use the cache directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Another open cache (in this process or another) holds the directory.
    #[error("another cache holds the directory (lock file {path})")]
    InUse {
        /// The lock file.
        path: PathBuf,
    },
    /// The directory exists but a file cannot be written in it.
    #[error("the cache directory {path} is not writable: {source}")]
    Unwritable {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A write or deletion queued before a flush failed (the first since
    /// the previous flush). The value stays readable from memory and from
    /// the pending queue; its file is missing.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file (or the directory, for a directory fsync).
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The writer thread could not be started, or has stopped.
    #[error("the cache's writer thread: {0}")]
    Writer(String),
}

/// The disk tier's counters, read at one moment (see
/// [`PersistentTtlCache::persist_metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PersistMetrics {
    /// Memory misses answered by the disk tier (or its pending queue).
    pub disk_hits: u64,
    /// Memory misses the disk tier could not answer either.
    pub disk_misses: u64,
    /// Corrupt files deleted (at open, or after a read found them).
    pub corrupt_dropped: u64,
    /// Expired files deleted (at open, or after a read found them).
    pub expired_dropped: u64,
    /// Entry files written.
    pub files_written: u64,
    /// Entry files deleted by invalidation, expiry or clearing.
    pub files_removed: u64,
    /// Changes that needed no write of their own: a newer change of the
    /// same key, made before the writer reached this one, was written in
    /// its place.
    pub changes_coalesced: u64,
    /// Writes, deletions or directory fsyncs that failed.
    pub write_errors: u64,
    /// Entries put into memory at open.
    pub loaded: u64,
}

impl<K, V> TtlCacheBuilder<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Adds an on-disk tier in `dir` (created if missing): the cache
    /// becomes a [`PersistentTtlCache`], opened with
    /// [`open`](PersistentTtlCacheBuilder::open). Keys and values are stored
    /// as JSON (serde); see the [`persist`](self) module.
    pub fn persist_dir(self, dir: impl Into<PathBuf>) -> PersistentTtlCacheBuilder<K, V>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        PersistentTtlCacheBuilder {
            memory: self,
            dir: dir.into(),
            fsync: true,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

/// The default [`PersistentTtlCacheBuilder::queue_capacity`].
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// The largest [`PersistentTtlCacheBuilder::queue_capacity`] (the queue's
/// slots are allocated up front).
pub const MAX_QUEUE_CAPACITY: usize = 1 << 24;
/// The default [`PersistentTtlCacheBuilder::max_entry_bytes`]: 64 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 64 << 20;
/// The largest [`PersistentTtlCacheBuilder::max_entry_bytes`]: what the
/// file format's two 32-bit lengths can hold.
pub const MAX_ENTRY_BYTES: u64 = 2 * u32::MAX as u64;

/// Configures a [`PersistentTtlCache`]: the memory tier's settings (from
/// [`TtlCacheBuilder`]) and the disk tier's.
#[must_use]
pub struct PersistentTtlCacheBuilder<K, V> {
    memory: TtlCacheBuilder<K, V>,
    dir: PathBuf,
    fsync: bool,
    queue_capacity: usize,
    max_entry_bytes: u64,
}

impl<K, V> fmt::Debug for PersistentTtlCacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentTtlCacheBuilder")
            .field("memory", &self.memory)
            .field("dir", &self.dir)
            .field("fsync", &self.fsync)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .finish()
    }
}

impl<K, V> PersistentTtlCacheBuilder<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
{
    /// Whether each entry file and the directory are fsynced (default
    /// `true`: a flushed entry survives power loss). With `false` a flushed
    /// entry survives a crash of the process, not of the machine.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// How many changes may wait for the writer thread (default
    /// [`DEFAULT_QUEUE_CAPACITY`]; 1 to [`MAX_QUEUE_CAPACITY`], checked by
    /// [`open`](Self::open)). When the queue is full, a write (insert,
    /// load, invalidation, expiry) waits until the disk catches up:
    /// backpressure instead of unbounded memory. Reads never wait for it.
    pub fn queue_capacity(mut self, changes: usize) -> Self {
        self.queue_capacity = changes;
        self
    }

    /// The largest entry, key and value serialized together, that the disk
    /// tier writes or reads (default [`DEFAULT_MAX_ENTRY_BYTES`]; 1 to
    /// [`MAX_ENTRY_BYTES`], checked by [`open`](Self::open)). A file whose
    /// header gives more, or lengths that do not add up to the file's size,
    /// is refused from its first bytes (unread, and dropped as corrupt); a
    /// larger entry is kept in memory only, and its write fails with
    /// [`PersistError::Write`] at the next flush.
    pub fn max_entry_bytes(mut self, bytes: u64) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// Opens the directory, starts the writer thread, and loads every live
    /// entry into memory (deleting expired, corrupt and temporary files).
    pub fn open(self) -> Result<PersistentTtlCache<K, V>, PersistError> {
        if self.memory.tti.is_some() {
            return Err(PersistError::TimeToIdle);
        }
        if !(1..=MAX_QUEUE_CAPACITY).contains(&self.queue_capacity) {
            return Err(PersistError::InvalidSetting {
                setting: "queue_capacity",
                value: self.queue_capacity as u64,
                allowed: "1 to MAX_QUEUE_CAPACITY (16,777,216) changes",
            });
        }
        if !(1..=MAX_ENTRY_BYTES).contains(&self.max_entry_bytes) {
            return Err(PersistError::InvalidSetting {
                setting: "max_entry_bytes",
                value: self.max_entry_bytes,
                allowed: "1 to MAX_ENTRY_BYTES (8,589,934,590) bytes",
            });
        }
        let dir = self.dir;
        std::fs::create_dir_all(&dir).map_err(|source| PersistError::Dir {
            path: dir.clone(),
            source,
        })?;
        probe(&dir)?;
        let lock = lock_dir(&dir)?;
        let (tx, rx) = mpsc::sync_channel(self.queue_capacity);
        let tier = Arc::new(Tier::new(
            dir.clone(),
            self.memory.clock.clone(),
            self.fsync,
            self.max_entry_bytes,
            tx,
        ));
        let journal: Arc<dyn Journal<K, V>> = tier.clone();
        let cache = self.memory.build_with(Some(journal))?;
        // The writer runs before the load: an entry that expires meanwhile
        // is evicted, and its removal must not wait on a full queue.
        let writer = {
            let tier = tier.clone();
            std::thread::Builder::new()
                .name("latchfree-cache-disk".into())
                .spawn(move || writer::run(tier, rx))
                .map_err(|e| PersistError::Writer(e.to_string()))?
        };
        let cache = PersistentTtlCache {
            cache,
            tier,
            writer: Some(writer),
            _lock: lock,
        };
        // On an error, dropping `cache` stops the writer.
        load(&cache.cache, &cache.tier)?;
        Ok(cache)
    }
}

/// The file in a cache directory whose OS lock says a cache has it open.
pub const LOCK_FILE: &str = ".latchfree-cache.lock";

/// Takes the exclusive lock on `dir`'s [`LOCK_FILE`], held while the
/// returned file is open.
fn lock_dir(dir: &Path) -> Result<std::fs::File, PersistError> {
    let path = dir.join(LOCK_FILE);
    let unwritable = |source| PersistError::Unwritable {
        path: dir.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(unwritable)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(PersistError::InUse { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(unwritable(e)),
    }
}

/// Fails unless a file can be created in `dir`.
fn probe(dir: &Path) -> Result<(), PersistError> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // Relaxed: a unique number.
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let probe = dir.join(format!(".latchfree-probe-{}-{n}.tmp", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| match std::fs::remove_file(&probe) {
            // Another cache's open on this directory deleted it (a `.tmp`).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            removed => removed,
        })
        .map_err(|source| PersistError::Unwritable {
            path: dir.to_path_buf(),
            source,
        })
}

/// Reads every entry file of `tier` into `cache` (in parallel), deleting
/// expired, corrupt and temporary files.
fn load<K, V>(cache: &TtlCache<K, V>, tier: &Tier<K, V>) -> Result<(), PersistError>
where
    K: Eq + Hash + Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
{
    let dir_error = |source| PersistError::Dir {
        path: tier.dir.clone(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&tier.dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if writer::is_temp(&name) {
            let _ = std::fs::remove_file(entry.path());
        } else if writer::is_entry(&name) {
            files.push(entry.path());
        }
    }
    let now = tier.now();
    let counters = &tier.counters;
    files.par_iter().for_each(|path| {
        // A file that cannot be read is left alone (a miss if read later).
        let max = tier.max_entry_bytes;
        let judge = |read: Result<Vec<u8>, _>| match read {
            Ok(bytes) => writer::judge::<K, V>(&bytes, now),
            Err(_) => Verdict::Corrupt,
        };
        let Ok(read) = read_checked_entry_file(path, max, false) else {
            return;
        };
        let mut verdict = judge(read);
        if matches!(verdict, Verdict::Corrupt) {
            // Sure before deleting: the whole file, however many reads.
            match read_checked_entry_file(path, max, true) {
                Ok(read) => verdict = judge(read),
                Err(_) => return,
            }
        }
        let counter = match verdict {
            Verdict::Live(key, value, deadline) => {
                if cache.map.insert_if_vacant(key, value, deadline, || true) {
                    DiskCounters::add(&counters.loaded, 1);
                }
                return;
            }
            Verdict::Expired => &counters.expired_dropped,
            Verdict::Corrupt => &counters.corrupt_dropped,
        };
        if std::fs::remove_file(path).is_ok() {
            DiskCounters::add(counter, 1);
        }
    });
    Ok(())
}

/// A [`TtlCache`] with an on-disk tier: see the [module docs](self).
///
/// Dropping it finishes every queued write, fsyncs the directory (with
/// fsync on) and stops the writer thread.
pub struct PersistentTtlCache<K, V> {
    cache: TtlCache<K, V>,
    tier: Arc<Tier<K, V>>,
    writer: Option<JoinHandle<()>>,
    /// Holds the directory's lock; dropped (unlocked) after the writer
    /// stopped.
    _lock: std::fs::File,
}

impl<K, V> fmt::Debug for PersistentTtlCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentTtlCache")
            .field("cache", &self.cache)
            .field("dir", &self.tier.dir)
            .finish_non_exhaustive()
    }
}

impl<K, V> Drop for PersistentTtlCache<K, V> {
    fn drop(&mut self) {
        self.tier.send(Op::Stop);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl<K, V> PersistentTtlCache<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
{
    /// The live value under `key`: from memory (a lock-free hit), else from
    /// the disk tier (then put back into memory with its remaining TTL).
    pub fn get(&self, key: &K) -> Option<V> {
        match self.cache.get(key) {
            Some(v) => Some(v),
            None => self.read_through(key),
        }
    }

    /// Whether `key` holds a live entry in memory (the disk is not read).
    pub fn contains_in_memory(&self, key: &K) -> bool {
        self.cache.contains_key(key)
    }

    /// The read path of a memory miss (see the module docs).
    fn read_through(&self, key: &K) -> Option<V> {
        let generation = self.tier.generation(key);
        // Acquire: pairs with the journal's Release increment, made after
        // its `pending` update.
        let started = generation.load(Ordering::Acquire);
        let now = self.tier.now();
        let pending = self.tier.pending.read_sync(key, |_, p| p.put.clone());
        let (value, deadline) = match pending {
            Some(Some((value, deadline))) if deadline > now => {
                DiskCounters::add(&self.tier.counters.disk_hits, 1);
                (value, deadline)
            }
            Some(_) => {
                // A removal, or an expired write, not yet on disk.
                DiskCounters::add(&self.tier.counters.disk_misses, 1);
                return None;
            }
            None => self.tier.read_file(key, now)?,
        };
        self.cache
            .map
            .insert_if_vacant(key.clone(), value.clone(), deadline, || {
                // Under the key's lock, which every journaled change holds.
                generation.load(Ordering::Acquire) == started
            });
        Some(value)
    }

    /// Inserts `value` under `key` with the cache's TTL; it is written to
    /// disk behind the call. `false` if it was dropped (see
    /// [`TtlCache::insert`]).
    pub fn insert(&self, key: K, value: V) -> Result<(), Rejected<K, V>> {
        self.cache.insert(key, value)
    }

    /// As [`insert`](Self::insert), with this entry's own time to live.
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) -> Result<(), Rejected<K, V>> {
        self.cache.insert_with_ttl(key, value, ttl)
    }

    /// The live value under `key` (memory, then disk), or the one `loader`
    /// makes (single-flight, as [`TtlCache::get_or_load`]), which is then
    /// written to disk behind the call.
    pub fn get_or_load(&self, key: K, loader: impl FnOnce() -> V) -> Result<V, LoadError> {
        self.try_get_or_load(key, || Ok::<V, Infallible>(loader()))
    }

    /// As [`get_or_load`](Self::get_or_load) with a fallible loader (see
    /// [`TtlCache::try_get_or_load`]).
    pub fn try_get_or_load<E: Send + Sync + 'static>(
        &self,
        key: K,
        loader: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, LoadError<E>> {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        self.cache.try_get_or_load(key, loader)
    }

    /// Removes `key` from both tiers (the file is deleted behind the call,
    /// in order with the key's other writes; no read serves it from now
    /// on). Returns the value if it was live in memory.
    pub fn invalidate(&self, key: &K) -> Option<V> {
        self.cache.map.remove_key(key.clone())
    }

    /// Removes every entry from both tiers; returns how many memory held.
    /// Waits for the writer to delete the files.
    pub fn invalidate_all(&self) -> Result<usize, PersistError> {
        self.tier.bump_all();
        let removed = self.cache.invalidate_all();
        let (done, answer) = mpsc::sync_channel(1);
        if !self.tier.send(Op::Clear(done)) {
            return Err(stopped());
        }
        let cleared = answer.recv().map_err(|_| stopped())?;
        // Entries read through while the files were being deleted.
        self.tier.bump_all();
        self.cache.invalidate_all();
        cleared.map_err(|source| PersistError::Write {
            path: self.tier.dir.clone(),
            source,
        })?;
        Ok(removed)
    }

    /// Returns once every change made before the call is on disk (fsynced
    /// with [`fsync`](PersistentTtlCacheBuilder::fsync) on, the default),
    /// or with the first write error since the previous flush.
    pub fn flush(&self) -> Result<(), PersistError> {
        let (done, answer) = mpsc::sync_channel(1);
        if !self.tier.send(Op::Flush(done)) {
            return Err(stopped());
        }
        answer
            .recv()
            .map_err(|_| stopped())?
            .map_err(|(path, source)| PersistError::Write { path, source })
    }

    /// Evicts every expired entry from memory now (their files are deleted
    /// behind the call); returns how many.
    pub fn sweep(&self) -> usize {
        self.cache.sweep()
    }

    /// Entries held in memory.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether memory holds no entry.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The directory of the disk tier.
    pub fn dir(&self) -> &Path {
        &self.tier.dir
    }

    /// The memory tier's counters (a miss answered by the disk counts as a
    /// memory miss and a [`PersistMetrics::disk_hits`]).
    pub fn metrics(&self) -> CacheMetrics {
        self.cache.metrics()
    }

    /// The disk tier's counters.
    pub fn persist_metrics(&self) -> PersistMetrics {
        let c = &self.tier.counters;
        let get = DiskCounters::get;
        PersistMetrics {
            disk_hits: get(&c.disk_hits),
            disk_misses: get(&c.disk_misses),
            corrupt_dropped: get(&c.corrupt_dropped),
            expired_dropped: get(&c.expired_dropped),
            files_written: get(&c.files_written),
            files_removed: get(&c.files_removed),
            changes_coalesced: get(&c.coalesced),
            write_errors: get(&c.write_errors),
            loaded: get(&c.loaded),
        }
    }
}

/// Bytes an entry file is first read into; larger files take more reads.
const FIRST_READ: usize = 4096;

/// Reads an entry file, refusing a huge or inconsistent one before it
/// reads (or allocates for) more than [`FIRST_READ`] bytes of it.
///
/// A small file costs `open`, one `read`, `close` (`std::fs::read` also
/// asks for the size and reads again to see the end): unless `whole`, a
/// read shorter than the buffer is taken as the whole file. Were it not (a
/// regular file read short), the entry would fail its length check: callers
/// re-read with `whole` before they delete a file for being corrupt, so no
/// valid file is lost to it.
///
/// A larger file (or any file, with `whole`) is read on only if its
/// header's key and value lengths are at most `max_entry_bytes` and add up
/// to the file's size; otherwise the header's error is returned, and the
/// file is corrupt as far as the cache is concerned.
pub(crate) fn read_checked_entry_file(
    path: &Path,
    max_entry_bytes: u64,
    whole: bool,
) -> io::Result<Result<Vec<u8>, format::FormatError>> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut bytes = read_first(&mut file)?;
    let n = bytes.len();
    if n < FIRST_READ && !whole {
        return Ok(Ok(bytes));
    }
    let len = file.metadata()?.len();
    if len >= format::HEADER_LEN as u64 {
        if n < format::HEADER_LEN {
            bytes.resize(format::HEADER_LEN, 0);
            file.read_exact(&mut bytes[n..])?;
        }
        let expected = match format::entry_len(&bytes, max_entry_bytes) {
            Ok(expected) => expected,
            Err(e) => return Ok(Err(e)),
        };
        if expected != len {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            return Ok(Err(format::FormatError::Length { expected, len }));
        }
    }
    // At most the size just checked, plus one byte to notice a file that
    // grew meanwhile (its length check then fails).
    let rest = len.saturating_sub(bytes.len() as u64);
    bytes.reserve(usize::try_from(rest).unwrap_or(0));
    file.take(rest + 1).read_to_end(&mut bytes)?;
    Ok(Ok(bytes))
}

/// Reads a file the fast way for a small file: one `read` of up to
/// [`FIRST_READ`] bytes, and the rest, unchecked, only if that filled the
/// buffer (the locked twin's files, which have no header to check).
pub(crate) fn read_entry_file(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut bytes = read_first(&mut file)?;
    if bytes.len() == FIRST_READ {
        file.read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// One `read` of up to [`FIRST_READ`] bytes (retried if interrupted).
fn read_first(file: &mut std::fs::File) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut first = [0u8; FIRST_READ];
    let n = loop {
        match file.read(&mut first) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            read => break read?,
        }
    };
    Ok(first[..n].to_vec())
}

fn stopped() -> PersistError {
    PersistError::Writer("stopped".into())
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<PersistentTtlCache<u64, String>>();
    send_sync::<PersistError>();
};
