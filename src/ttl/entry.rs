//! One entry of a [`TtlMap`](super::TtlMap): the value, its deadlines, the
//! per-entry stamps written by reads, and its place in the deadline index.

use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The deadline of an entry that has none.
pub(crate) const NO_DEADLINE: u64 = u64::MAX;

/// A key in the deadline index: (deadline, unique sequence number).
pub(crate) type IndexKey = (u64, u64);

/// Where an entry stands in the deadline index. Every change happens under
/// the entry's `slot` lock together with the index operation it describes,
/// so the two always agree.
enum Slot {
    /// Not in the index (being published, or popped by a sweep).
    Unlinked,
    /// In the index under this key.
    Linked(IndexKey),
    /// Evicted: never to be linked again.
    Dead,
}

pub(crate) struct Entry<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    /// Absolute deadline (creation + lifetime or per-entry TTL), or
    /// [`NO_DEADLINE`].
    expires: u64,
    /// Idle timeout in nanoseconds, 0 for none.
    idle: u64,
    /// Last access (nanoseconds), written by reads when `idle != 0`.
    last_access: AtomicU64,
    /// Read since last considered for a capacity eviction.
    referenced: AtomicBool,
    slot: Mutex<Slot>,
}

impl<K, V> Entry<K, V> {
    pub(crate) fn new(key: K, value: V, now: u64, expires: u64, idle: u64) -> Self {
        Self {
            key,
            value,
            expires,
            idle,
            last_access: AtomicU64::new(now),
            referenced: AtomicBool::new(false),
            slot: Mutex::new(Slot::Unlinked),
        }
    }

    /// Whether checking this entry needs the time.
    #[inline]
    pub(crate) fn needs_time(&self) -> bool {
        self.expires != NO_DEADLINE || self.idle != 0
    }

    /// The entry's deadline now: the earlier of the absolute one and last
    /// access + idle timeout.
    pub(crate) fn deadline(&self) -> u64 {
        if self.idle == 0 {
            self.expires
        } else {
            // Relaxed: the stamp is one value; a stale one only makes this
            // earlier (it only grows), which a sweep re-checks.
            let idle = self
                .last_access
                .load(Ordering::Relaxed)
                .saturating_add(self.idle);
            idle.min(self.expires)
        }
    }

    /// Whether the entry is live at `now`: strictly before its deadline.
    #[inline]
    pub(crate) fn is_live(&self, now: u64) -> bool {
        now < self.expires
            && (self.idle == 0
                // Relaxed: as in `deadline`.
                || now < self.last_access.load(Ordering::Relaxed).saturating_add(self.idle))
    }

    /// Records a read at `now`: the last-access stamp (only with an idle
    /// timeout) and, if `referenced`, the second-chance bit. Each is written
    /// only when it changes, so a hot entry's line is not written per hit.
    #[inline]
    pub(crate) fn touch(&self, now: u64, referenced: bool) {
        // Relaxed (all four): independent per-entry hints; no data is
        // published with them, and a lost update only makes the entry look
        // older than it is by one read.
        if self.idle != 0 && self.last_access.load(Ordering::Relaxed) < now {
            self.last_access.store(now, Ordering::Relaxed);
        }
        if referenced && !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }

    /// Clears the second-chance bit; whether it was set.
    pub(crate) fn take_referenced(&self) -> bool {
        // Relaxed: as in `touch`.
        self.referenced.swap(false, Ordering::Relaxed)
    }

    fn slot(&self) -> crate::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Links `me` (this entry) into `index` under `key`, unless it is dead
    /// or already linked.
    pub(crate) fn link(&self, index: &SkipMap<IndexKey, Arc<Self>>, key: IndexKey, me: &Arc<Self>)
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let mut slot = self.slot();
        if matches!(*slot, Slot::Unlinked) {
            index.insert(key, me.clone());
            *slot = Slot::Linked(key);
        }
    }

    /// Unlinks the entry if it is linked under `key` (a sweep popping it);
    /// whether it was.
    pub(crate) fn unlink_if(&self, index: &SkipMap<IndexKey, Arc<Self>>, key: IndexKey) -> bool
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let mut slot = self.slot();
        match *slot {
            Slot::Linked(linked) if linked == key => {
                index.remove(&key);
                *slot = Slot::Unlinked;
                true
            }
            _ => false,
        }
    }

    /// Unlinks the entry for good (it was evicted).
    pub(crate) fn unlink(&self, index: &SkipMap<IndexKey, Arc<Self>>)
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let mut slot = self.slot();
        if let Slot::Linked(key) = *slot {
            index.remove(&key);
        }
        *slot = Slot::Dead;
    }
}
