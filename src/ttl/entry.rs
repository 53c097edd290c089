//! One entry of a [`TtlMap`](super::TtlMap), in two parts.
//!
//! * [`Inline`] is the value stored in the `HashIndex` itself: what a hit
//!   reads (the value, the absolute deadline) sits in the bucket the lookup already
//!   loaded, so a hit on a map without an idle timeout follows no pointer.
//!   It is immutable, as `HashIndex` requires (a resize moves entries
//!   bitwise while readers may still read the old copies).
//! * [`Entry`] is the shared, mutable part, behind an `Arc` that `Inline`
//!   points to: the key and deadlines for the sweeper, the last-access stamp
//!   (a hit follows the pointer only when an idle timeout is configured),
//!   and the entry's place in the deadline index. The `Arc`'s address is the
//!   entry's identity: evictions remove it from the index by pointer
//!   equality.
//!
//! The second-chance ("referenced") bits of the capacity policy live in a
//! dense side table, [`RefBits`], indexed by a cell number assigned at
//! creation: a few kilobytes for a hundred thousand entries, so setting or
//! testing one on a hit stays in the core's cache instead of missing on a
//! per-entry allocation. An entry's cell is a hash of its shared part's
//! address (nothing stored); the table has at least twice as many cells as
//! the map has entries (at most 2^22), and two live entries may still share
//! a cell: the policy is then approximate (an entry may get a second chance it did not
//! earn, or lose one it did), never unsafe, and a capacity eviction still
//! considers at most `CLOCK_SCAN` entries.

use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicU64, Ordering};

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

/// The liveness test shared by [`Inline`] and [`Entry`].
#[inline]
fn live(now: u64, expires: u64, idle: u64, last_access: &AtomicU64) -> bool {
    now < expires
        && (idle == 0
            // Relaxed: the stamp is one value; a stale one only makes the
            // entry look older (it only grows).
            || now < last_access.load(Ordering::Relaxed).saturating_add(idle))
}

/// What the `HashIndex` holds for a key: the hit path's data, inline.
///
/// Three words, so that with a word-sized key an entry of the index is 32
/// bytes and a hit reads one cache line of the bucket's data block. The
/// idle timeout is the map's (passed in), and the [`RefBits`] cell is a
/// hash of the shared part's address, so neither is stored.
pub(crate) struct Inline<K, V> {
    pub(crate) value: V,
    /// A copy of the entry's absolute deadline.
    expires: u64,
    /// The shared part; its address is the entry's identity.
    pub(crate) entry: Arc<Entry<K>>,
}

impl<K, V: Clone> Clone for Inline<K, V> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            expires: self.expires,
            entry: self.entry.clone(),
        }
    }
}

impl<K, V> Inline<K, V> {
    pub(crate) fn new(value: V, entry: Arc<Entry<K>>) -> Self {
        Self {
            value,
            expires: entry.expires,
            entry,
        }
    }

    /// Whether checking this entry needs the time, in a map whose idle
    /// timeout is `idle`.
    #[inline]
    pub(crate) fn needs_time(&self, idle: u64) -> bool {
        self.expires != NO_DEADLINE || idle != 0
    }

    /// Whether the entry is live at `now` in a map whose idle timeout is
    /// `idle`. Reads the shared part only with an idle timeout.
    #[inline]
    pub(crate) fn is_live(&self, now: u64, idle: u64) -> bool {
        live(now, self.expires, idle, &self.entry.last_access)
    }

    /// Records a read at `now` in the last-access stamp (only with an idle
    /// timeout, and only when it changes, so a hot entry's line is not
    /// written per hit).
    #[inline]
    pub(crate) fn touch(&self, now: u64, idle: u64) {
        if idle != 0 {
            let stamp = &self.entry.last_access;
            // Relaxed (both): an independent per-entry hint; no data is
            // published with it, and a lost update only makes the entry look
            // older than it is by one read.
            if stamp.load(Ordering::Relaxed) < now {
                stamp.store(now, Ordering::Relaxed);
            }
        }
    }
}

/// The shared, mutable part of an entry.
pub(crate) struct Entry<K> {
    pub(crate) key: K,
    /// Absolute deadline (creation + lifetime or per-entry TTL), or
    /// [`NO_DEADLINE`].
    expires: u64,
    /// Idle timeout in nanoseconds, 0 for none.
    idle: u64,
    /// Last access (nanoseconds), written by reads when `idle != 0`.
    last_access: AtomicU64,
    slot: Mutex<Slot>,
}

impl<K> Entry<K> {
    pub(crate) fn new(key: K, now: u64, expires: u64, idle: u64) -> Self {
        Self {
            key,
            expires,
            idle,
            last_access: AtomicU64::new(now),
            slot: Mutex::new(Slot::Unlinked),
        }
    }

    /// The entry's deadline now: the earlier of the absolute one and last
    /// access + idle timeout.
    pub(crate) fn deadline(&self) -> u64 {
        if self.idle == 0 {
            self.expires
        } else {
            // Relaxed: as in `live`; a stale stamp only makes this earlier,
            // which a sweep re-checks.
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
        live(now, self.expires, self.idle, &self.last_access)
    }

    fn slot(&self) -> crate::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Links `me` (this entry) into `index` under `key`, unless it is dead
    /// or already linked.
    pub(crate) fn link(&self, index: &SkipMap<IndexKey, Arc<Self>>, key: IndexKey, me: &Arc<Self>)
    where
        K: Send + Sync + 'static,
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
    {
        let mut slot = self.slot();
        if let Slot::Linked(key) = *slot {
            index.remove(&key);
        }
        *slot = Slot::Dead;
    }
}

/// The second-chance bits of the capacity policy: one bit per cell, an
/// entry's cell a hash of its shared part's address (see the module docs).
pub(crate) struct RefBits {
    words: Box<[AtomicU64]>,
    /// 64 minus log2(cells): a Fibonacci hash's shift.
    shift: u32,
}

/// The most cells a table has: 2^22 bits, 512 KiB.
const MAX_CELLS: usize = 1 << 22;

impl RefBits {
    /// A table for a map of at most `max_entries` entries, or an empty one
    /// when the policy needs no bits.
    pub(crate) fn new(max_entries: usize, used: bool) -> Self {
        let cells = if used {
            max_entries
                .saturating_mul(2)
                .clamp(64, MAX_CELLS)
                .next_power_of_two()
        } else {
            0
        };
        Self {
            words: (0..cells / 64).map(|_| AtomicU64::new(0)).collect(),
            shift: 64 - cells.max(1).trailing_zeros(),
        }
    }

    /// The cell of `entry`: a Fibonacci hash of its address.
    #[inline]
    pub(crate) fn cell<K>(&self, entry: &Arc<Entry<K>>) -> usize {
        let addr = Arc::as_ptr(entry) as usize as u64;
        // The top `64 - shift` bits of the product; `shift` is 64 (cell 0
        // of an empty table) when the table is unused.
        (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .checked_shr(self.shift)
            .unwrap_or(0) as usize
    }

    /// Sets the cell's bit, writing only if it is clear.
    #[inline]
    pub(crate) fn set(&self, cell: usize) {
        if let Some(word) = self.words.get(cell / 64) {
            let bit = 1u64 << (cell % 64);
            // Relaxed (both): a hint; no data is published with it.
            if word.load(Ordering::Relaxed) & bit == 0 {
                word.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    /// Clears the cell's bit; whether it was set.
    pub(crate) fn take(&self, cell: usize) -> bool {
        let Some(word) = self.words.get(cell / 64) else {
            return false;
        };
        let bit = 1u64 << (cell % 64);
        // Relaxed: as in `set`.
        word.fetch_and(!bit, Ordering::Relaxed) & bit != 0
    }

    /// Clears the cell's bit (a new entry starts unreferenced).
    pub(crate) fn clear(&self, cell: usize) {
        self.take(cell);
    }
}
