//! The state the disk tier shares between the cache's callers (the journal
//! and read-through), and the writer thread.

use std::hash::{BuildHasher, Hash, RandomState};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use crossbeam_utils::CachePadded;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::format;
use crate::cache::EvictionCause;
use crate::clock::{Clock, to_nanos};
use crate::ttl::Journal;

/// Stripes of [`Tier::generations`].
const STRIPES: usize = 64;

/// A change of one key not yet on disk (see [`Tier::pending`]).
pub(super) struct Pending<V> {
    /// The journal sequence number of the change.
    pub(super) seq: u64,
    /// The value and deadline written, or `None` for a removal.
    pub(super) put: Option<(V, u64)>,
}

/// A message to the writer thread. Messages are handled in the order sent.
pub(super) enum Op<K> {
    /// `key` changed (change `seq`, now in [`Tier::pending`]): bring its
    /// file up to the newest pending change of the key, which may be newer
    /// than `seq` (changes made while this one waited are coalesced), or do
    /// nothing if none is pending (a newer change's write covered it).
    Changed { seq: u64, key: K },
    /// A reader found this file corrupt or expired: delete it if it still is.
    Recheck { name: String },
    /// Delete every entry file, then answer.
    Clear(mpsc::SyncSender<Result<(), io::Error>>),
    /// Answer once everything sent before is on disk (with the first write
    /// error since the last flush, if any).
    Flush(mpsc::SyncSender<Result<(), (PathBuf, io::Error)>>),
    /// Finish what was sent before, then end the thread.
    Stop,
}

/// The disk tier's counters (all `Relaxed`: counts, published with nothing).
#[derive(Default)]
pub(super) struct DiskCounters {
    pub(super) disk_hits: AtomicU64,
    pub(super) disk_misses: AtomicU64,
    pub(super) corrupt_dropped: AtomicU64,
    pub(super) expired_dropped: AtomicU64,
    pub(super) files_written: AtomicU64,
    pub(super) files_removed: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) write_errors: AtomicU64,
    pub(super) loaded: AtomicU64,
}

impl DiskCounters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The disk tier.
pub(super) struct Tier<K, V> {
    pub(super) dir: PathBuf,
    pub(super) clock: Arc<dyn Clock>,
    /// Whether entry files and the directory are fsynced.
    pub(super) fsync: bool,
    /// The largest key plus value an entry file may hold; larger files are
    /// refused from their header, unread.
    pub(super) max_entry_bytes: u64,
    /// Every change handed to the writer and not yet on disk, newest per
    /// key. A read-through looks here before the file: the file may be
    /// older than what memory evicted at the capacity bound.
    pub(super) pending: scc::HashMap<K, Pending<V>>,
    /// Bumped (per stripe of keys) by every journaled change, under the
    /// key's lock in the memory index: a read-through repopulates memory
    /// only if its stripe did not move since it began (see
    /// [`PersistentTtlCache`](super::PersistentTtlCache)'s read path).
    generations: Box<[CachePadded<AtomicU64>]>,
    hasher: RandomState,
    /// Journal sequence numbers.
    seq: AtomicU64,
    tx: mpsc::SyncSender<Op<K>>,
    pub(super) counters: DiskCounters,
}

impl<K, V> Tier<K, V> {
    /// Sends `op` to the writer, waiting while its queue is full; `false`
    /// if the writer has stopped.
    pub(super) fn send(&self, op: Op<K>) -> bool {
        self.tx.send(op).is_ok()
    }
}

impl<K: Hash + Eq, V> Tier<K, V> {
    pub(super) fn new(
        dir: PathBuf,
        clock: Arc<dyn Clock>,
        fsync: bool,
        max_entry_bytes: u64,
        tx: mpsc::SyncSender<Op<K>>,
    ) -> Self {
        Self {
            dir,
            clock,
            fsync,
            max_entry_bytes,
            pending: scc::HashMap::new(),
            generations: (0..STRIPES)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            hasher: RandomState::new(),
            seq: AtomicU64::new(0),
            tx,
            counters: DiskCounters::default(),
        }
    }

    /// The clock's time in nanoseconds (exact, never coarse).
    pub(super) fn now(&self) -> u64 {
        to_nanos(self.clock.now())
    }

    /// The generation counter of `key`'s stripe.
    pub(super) fn generation(&self, key: &K) -> &AtomicU64 {
        let stripe = self.hasher.hash_one(key) as usize % STRIPES;
        &self.generations[stripe]
    }

    /// Moves every stripe's generation (`invalidate_all`).
    pub(super) fn bump_all(&self) {
        for g in self.generations.iter() {
            // Release: pairs with the Acquire load of a read-through.
            g.fetch_add(1, Ordering::Release);
        }
    }

    /// The path of the entry file named `name`.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl<K, V> Tier<K, V>
where
    K: Eq + Hash + Clone + Serialize,
    V: Clone + DeserializeOwned,
{
    /// Reads `key`'s entry file: its value and deadline if it holds a live
    /// entry of `key` at `now`. A corrupt or expired file is not served; the
    /// writer is asked to delete it (in order with its own writes of the key).
    pub(super) fn read_file(&self, key: &K, now: u64) -> Option<(V, u64)> {
        let key_bytes = serde_json::to_vec(key).ok()?;
        let name = format::file_name(&key_bytes);
        let miss = || {
            DiskCounters::add(&self.counters.disk_misses, 1);
            None
        };
        let Ok(read) =
            super::read_checked_entry_file(&self.path(&name), self.max_entry_bytes, false)
        else {
            return miss();
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(_) => {
                self.send(Op::Recheck { name });
                return miss();
            }
        };
        let entry = match format::decode(&bytes) {
            Ok(entry) => entry,
            Err(_) => {
                self.send(Op::Recheck { name });
                return miss();
            }
        };
        if entry.key != key_bytes {
            // Another key with the same name (a 128-bit hash collision).
            return miss();
        }
        if entry.deadline <= now {
            self.send(Op::Recheck { name });
            return miss();
        }
        match serde_json::from_slice::<V>(entry.value) {
            Ok(value) => {
                DiskCounters::add(&self.counters.disk_hits, 1);
                Some((value, entry.deadline))
            }
            Err(_) => {
                self.send(Op::Recheck { name });
                miss()
            }
        }
    }
}

impl<K, V> Journal<K, V> for Tier<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn put(&self, key: &K, value: &V, deadline: u64) {
        // Relaxed: a unique number; the order per key comes from the key's
        // lock, which every caller of the journal holds.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.pending.upsert_sync(
            key.clone(),
            Pending {
                seq,
                put: Some((value.clone(), deadline)),
            },
        );
        // Release, after `pending` is updated: a read-through that sees the
        // new generation (Acquire) then finds the pending change.
        self.generation(key).fetch_add(1, Ordering::Release);
        self.send(Op::Changed {
            seq,
            key: key.clone(),
        });
    }

    fn remove(&self, key: &K, cause: EvictionCause) {
        match cause {
            // Memory made room or a newer value replaced it (its own `put`
            // follows): the disk copy stays, the second tier.
            EvictionCause::Capacity | EvictionCause::Replaced => return,
            EvictionCause::Expired | EvictionCause::Removed | EvictionCause::Cleared => {}
        }
        // Relaxed and Release: as in `put`.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.pending
            .upsert_sync(key.clone(), Pending { seq, put: None });
        self.generation(key).fetch_add(1, Ordering::Release);
        self.send(Op::Changed {
            seq,
            key: key.clone(),
        });
    }
}
