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
//! per-entry allocation. Cells are assigned round-robin by creation
//! sequence number from a table of at least twice as many cells as the map
//! has entries (at most 2^22): entries created close together never share
//! one, but a long-lived entry may come to share its cell with a new one:
//! the policy is then approximate (an entry may get a second chance it did not
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
/// With a word-sized value, four words: the index keeps values apart from
/// keys, so a 32-byte value never straddles a cache line. The idle timeout
/// is the map's (passed in), not stored.
pub(crate) struct Inline<K, V> {
    pub(crate) value: V,
    /// A copy of the entry's absolute deadline.
    expires: u64,
    /// A copy of the entry's [`RefBits`] cell.
    cell: usize,
    /// The shared part; its address is the entry's identity.
    pub(crate) entry: Arc<Entry<K>>,
}

impl<K, V: Clone> Clone for Inline<K, V> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            expires: self.expires,
            cell: self.cell,
            entry: self.entry.clone(),
        }
    }
}

impl<K, V> Inline<K, V> {
    pub(crate) fn new(value: V, entry: Arc<Entry<K>>) -> Self {
        Self {
            value,
            expires: entry.expires,
            cell: entry.cell,
            entry,
        }
    }

    /// The entry's cell in [`RefBits`].
    #[inline]
    pub(crate) fn cell(&self) -> usize {
        self.cell
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
    /// The entry's cell in [`RefBits`].
    pub(crate) cell: usize,
    /// Last access (nanoseconds), written by reads when `idle != 0`.
    last_access: AtomicU64,
    slot: Mutex<Slot>,
}

impl<K> Entry<K> {
    pub(crate) fn new(key: K, now: u64, expires: u64, idle: u64, cell: usize) -> Self {
        Self {
            key,
            expires,
            idle,
            cell,
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

/// The second-chance bits of the capacity policy: one bit per cell, cells
/// assigned round-robin by creation sequence number (see the module docs).
pub(crate) struct RefBits {
    words: Box<[AtomicU64]>,
    /// Cells minus one (cells are a power of two).
    mask: usize,
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
            mask: cells.saturating_sub(1),
        }
    }

    /// The cell of the entry created with sequence number `seq`.
    #[inline]
    pub(crate) fn cell(&self, seq: u64) -> usize {
        // Truncation is the point: cells wrap around.
        (seq as usize) & self.mask
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

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;

    #[test]
    // The deadline index is crossbeam-skiplist, whose epoch pointers carry
    // tags in their low bits (integer-to-pointer casts), which Miri's strict
    // provenance rejects; the entry's own state machine is what this checks,
    // and it runs natively and in the loom model.
    #[cfg_attr(
        miri,
        ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
    )]
    fn an_entry_unlinked_for_good_is_never_linked_again() {
        let index = SkipMap::new();
        let entry = Arc::new(Entry::new(1u32, 0, 100, 0, 0));
        entry.link(&index, (100, 1), &entry);
        // A sweep pops it (it is live: it will go back), and before it does,
        // the entry is evicted.
        assert!(entry.unlink_if(&index, (100, 1)));
        entry.unlink(&index);
        entry.link(&index, (100, 2), &entry);
        assert!(
            index.is_empty(),
            "an evicted entry is in the deadline index"
        );
        // And an entry evicted while linked leaves the index at once.
        let other = Arc::new(Entry::new(2u32, 0, 100, 0, 1));
        other.link(&index, (100, 3), &other);
        other.unlink(&index);
        assert!(index.is_empty());
        assert!(!other.unlink_if(&index, (100, 3)));
    }

    #[test]
    fn a_set_bit_is_taken_once_and_cleared_by_clear() {
        let bits = RefBits::new(100, true);
        let cell = bits.cell(1);
        assert!(!bits.take(cell));
        bits.set(cell);
        bits.set(cell);
        assert!(bits.take(cell));
        assert!(!bits.take(cell));
        bits.set(cell);
        bits.clear(cell);
        assert!(!bits.take(cell));
    }

    #[test]
    fn cells_stay_in_the_table_and_twice_the_bound_in_a_row_are_distinct() {
        let bits = RefBits::new(1_000, true);
        let cells = bits.words.len() * 64;
        assert!(cells >= 2_000 && cells.is_power_of_two());
        let mut used = std::collections::HashSet::new();
        for seq in 5_000..5_000 + 2_000 {
            let cell = bits.cell(seq);
            assert!(cell < cells);
            assert!(used.insert(cell), "seq {seq} shares a cell");
        }
    }

    #[test]
    fn an_unused_table_holds_nothing() {
        let bits = RefBits::new(1_000, false);
        let cell = bits.cell(12_345);
        bits.set(cell);
        assert!(!bits.take(cell));
    }

    #[test]
    fn the_inline_copy_agrees_with_the_shared_part() {
        let shared = Arc::new(Entry::new(7u64, 100, 1_000, 50, 3));
        let inline = Inline::new("v", shared.clone());
        for now in [0, 100, 149, 150, 999, 1_000] {
            assert_eq!(inline.is_live(now, 50), shared.is_live(now), "at {now}");
        }
        inline.touch(140, 50);
        assert_eq!(shared.deadline(), 190);
        assert!(inline.is_live(189, 50) && !inline.is_live(190, 50));
        assert_eq!(inline.cell(), 3);
        assert!(inline.needs_time(0));
    }
}
