//! One entry of a [`TtlMap`](super::TtlMap), in two parts.
//!
//! * [`Inline`] is the value stored in the `HashIndex` itself: what a hit
//!   reads (the value, the absolute deadline) sits in the bucket the lookup already
//!   loaded, so a hit on a map without an idle timeout follows no pointer.
//!   It is immutable, as `HashIndex` requires (a resize moves entries
//!   bitwise while readers may still read the old copies).
//! * [`Entry`] is the shared, mutable part, behind an `Arc` that `Inline`
//!   points to: the key, its hash and deadlines for the [`order`](super::order),
//!   the last-access stamp (a hit follows the pointer only when an idle
//!   timeout is configured), and the entry's state in the order. The `Arc`'s
//!   address is the entry's identity: evictions remove it from the index by
//!   pointer equality.
//!
//! An insert over a live key usually keeps the key's `Entry` (its count
//! cell, its place in the order) and publishes a new `Inline` with the
//! new value and deadline, without touching the `Entry` at all: the old
//! `Inline` hands its reference count to the new one (a tag on its
//! pointer), so not even the count's line is written. See "Replacements
//! in place" in the module docs. The `Entry`'s own copy of the deadline
//! is left as it was, a *lower bound* of the deadline the index holds:
//! the order may find an entry expired that a replacement has since
//! extended, never the reverse. Every eviction re-checks the index's copy
//! under the key's lock, and one that finds the entry live raises the
//! `Entry`'s copy there ([`Entry::extend`]).
//!
//! An entry's state moves one way: `New` (being published) → `Admitted`
//! (counted by its order shard, under the shard's lock) → `Dead` (evicted;
//! the order drops it wherever it meets it). An entry evicted before it
//! was admitted goes straight to `Dead` and is never admitted, so a shard's
//! count of live entries is raised once and lowered once per entry.
//!
//! The eviction policy's access counts live in a dense side table,
//! [`Freq`], indexed by a cell number the order hands out at creation (one
//! no other entry in the order holds: a count is never shared): a few
//! kilobytes for a hundred thousand entries, so raising one on a hit stays
//! in the core's cache instead of missing on a per-entry allocation.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, Ordering};

/// The deadline of an entry that has none.
pub(crate) const NO_DEADLINE: u64 = u64::MAX;

/// [`Entry::state`]: being published, not yet in the order.
const NEW: u8 = 0;
/// [`Entry::state`]: counted by its order shard.
const ADMITTED: u8 = 1;
/// [`Entry::state`]: evicted; final.
const DEAD: u8 = 2;

/// Which S3-FIFO queue of its order shard holds an entry live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Neither (not admitted, no policy, popped, or dead).
    None = 0,
    Small = 1,
    Main = 2,
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
    /// A copy of the entry's [`Freq`] cell.
    cell: usize,
    /// The shared part, whose address is the entry's identity: the pointer
    /// of an `Arc<Entry>` whose strong count this copy owns, unless tagged
    /// [`HANDED`] (a replacement in place gave the count to the copy that
    /// replaced this one: [`replaced`](Self::replaced)).
    entry: AtomicPtr<Entry<K>>,
    /// Owns an `Arc<Entry<K>>` (for auto traits and drop check).
    owns: PhantomData<Arc<Entry<K>>>,
}

/// The tag of an [`Inline`] whose count was handed to the next copy (an
/// `Entry` is aligned to 8, so its pointer's low bit is free).
const HANDED: usize = 1;

impl<K, V: Clone> Clone for Inline<K, V> {
    fn clone(&self) -> Self {
        Self::owning(self.value.clone(), self.expires, self.cell, self.shared())
    }
}

impl<K, V> Drop for Inline<K, V> {
    fn drop(&mut self) {
        // Relaxed: `&mut self`; the tag was stored under the key's lock
        // before the index retired this copy, and its reclamation (or the
        // lock) orders that store before this drop.
        let ptr = self.entry.load(Ordering::Relaxed);
        if ptr.addr() & HANDED == 0 {
            // SAFETY: untagged, this copy owns one strong count of the
            // `Arc` the pointer came from (`owning`), and gives it back
            // once: `drop` runs once, and a handed copy never gets here.
            drop(unsafe { Arc::from_raw(ptr) });
        }
    }
}

impl<K, V> Inline<K, V> {
    pub(crate) fn new(value: V, entry: Arc<Entry<K>>) -> Self {
        // Relaxed: a new entry's deadline, not shared yet.
        let expires = entry.expires.load(Ordering::Relaxed);
        let cell = entry.cell;
        Self::owning(value, expires, cell, entry)
    }

    /// A copy that owns `entry`'s strong count.
    fn owning(value: V, expires: u64, cell: usize, entry: Arc<Entry<K>>) -> Self {
        Self {
            value,
            expires,
            cell,
            entry: AtomicPtr::new(Arc::into_raw(entry).cast_mut()),
            owns: PhantomData,
        }
    }

    /// The entry's pointer, untagged.
    #[inline]
    fn ptr(&self) -> *const Entry<K> {
        // Relaxed: the address never changes; only the tag may, under the
        // key's lock, and readers mask it off.
        self.entry
            .load(Ordering::Relaxed)
            .map_addr(|addr| addr & !HANDED)
    }

    /// The shared part.
    #[inline]
    pub(crate) fn entry(&self) -> &Entry<K> {
        // SAFETY: the entry lives while any copy that points to it can be
        // read. An untagged copy owns a count itself. A handed one gave its
        // count to the copy that replaced it, which the index retired (if
        // ever) after this one: scc's epoch reclamation drops the later
        // copy only once every reader that could still see the earlier one
        // has finished, and a copy read under the key's lock is the
        // current, untagged one.
        unsafe { &*self.ptr() }
    }

    /// The shared part, as a new `Arc`.
    pub(crate) fn shared(&self) -> Arc<Entry<K>> {
        let ptr = self.ptr();
        // SAFETY: `ptr` came from `Arc::into_raw` and the entry lives while
        // `self` can be read (see `entry`): the count is at least one, so
        // one more is taken and handed out as its own `Arc`.
        unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    }

    /// Whether this is a copy of `entry`.
    #[inline]
    pub(crate) fn is(&self, entry: &Arc<Entry<K>>) -> bool {
        std::ptr::eq(self.ptr(), Arc::as_ptr(entry))
    }

    /// The next copy of the same entry, holding `value` until `expires`:
    /// a replacement in place. This copy hands it its count (its line is
    /// in the bucket the caller holds; the entry's own line is not touched),
    /// and keeps only the pointer for readers that still see it.
    ///
    /// # Safety
    ///
    /// The caller holds the key's lock in the index, `self` is the copy the
    /// index holds, and the caller puts the returned copy into the index in
    /// place of `self` (`OccupiedEntry::update`) before it lets the lock go,
    /// with nothing in between that can unwind: `self` no longer owns a
    /// count, so dropping the returned copy early could free the entry
    /// while `self` is still in the index.
    pub(crate) unsafe fn replaced(&self, value: V, expires: u64) -> Self {
        let ptr = self.ptr();
        // Relaxed: read only by `drop` (ordered after it, see there) and
        // masked off by readers.
        self.entry.store(
            ptr.map_addr(|addr| addr | HANDED).cast_mut(),
            Ordering::Relaxed,
        );
        Self {
            value,
            expires,
            cell: self.cell,
            entry: AtomicPtr::new(ptr.cast_mut()),
            owns: PhantomData,
        }
    }

    /// The absolute deadline this copy holds.
    #[inline]
    pub(crate) fn expires(&self) -> u64 {
        self.expires
    }

    /// Whether a replacement until `expires` keeps the entry's deadline
    /// from moving earlier: only then may it keep the entry (the order holds
    /// it under a lower bound of its deadline).
    #[inline]
    pub(crate) fn outlived_by(&self, expires: u64) -> bool {
        self.expires <= expires
    }

    /// The entry's cell in [`Freq`].
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
        live(now, self.expires, idle, &self.entry().last_access)
    }

    /// Records a read at `now` in the last-access stamp (only with an idle
    /// timeout, and only when it changes, so a hot entry's line is not
    /// written per hit).
    #[inline]
    pub(crate) fn touch(&self, now: u64, idle: u64) {
        if idle != 0 {
            let stamp = &self.entry().last_access;
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
    /// The key's hash: its order shard and its ghost record.
    pub(crate) hash: u64,
    /// Absolute deadline (creation + lifetime or per-entry TTL), or
    /// [`NO_DEADLINE`]: a lower bound of the one in the index (see the
    /// module docs), raised by replacements in place.
    expires: AtomicU64,
    /// Idle timeout in nanoseconds, 0 for none.
    idle: u64,
    /// The entry's cell in [`Freq`].
    pub(crate) cell: usize,
    /// Last access (nanoseconds), written by reads when `idle != 0`.
    last_access: AtomicU64,
    /// `NEW`, `ADMITTED` or `DEAD` (the module docs).
    state: AtomicU8,
    /// Which of the order's queues holds it live: [`Place`] as a byte,
    /// written and read under its shard's lock.
    place: AtomicU8,
}

impl<K> Entry<K> {
    pub(crate) fn new(key: K, hash: u64, now: u64, expires: u64, idle: u64, cell: usize) -> Self {
        Self {
            key,
            hash,
            expires: AtomicU64::new(expires),
            idle,
            cell,
            last_access: AtomicU64::new(now),
            state: AtomicU8::new(NEW),
            place: AtomicU8::new(Place::None as u8),
        }
    }

    /// The entry's deadline now: the earlier of the absolute one and last
    /// access + idle timeout.
    pub(crate) fn deadline(&self) -> u64 {
        let expires = self.expires();
        if self.idle == 0 {
            expires
        } else {
            // Relaxed: as in `live`; a stale stamp only makes this earlier,
            // which a sweep re-checks.
            let idle = self
                .last_access
                .load(Ordering::Relaxed)
                .saturating_add(self.idle);
            idle.min(expires)
        }
    }

    /// The absolute deadline, as far as the order knows.
    #[inline]
    fn expires(&self) -> u64 {
        // Relaxed: a lower bound (the module docs); a stale value is an
        // earlier one, which the order re-checks under the key's lock
        // before it evicts anything.
        self.expires.load(Ordering::Relaxed)
    }

    /// Raises the absolute deadline to `expires`, the one the index holds
    /// for a replacement in place. Called under the key's lock, and never
    /// with an earlier deadline.
    pub(crate) fn extend(&self, expires: u64) {
        debug_assert!(self.expires() <= expires, "a deadline moved earlier");
        // Relaxed: as in `expires`; the value itself is published through
        // the index, under the key's lock.
        self.expires.store(expires, Ordering::Relaxed);
    }

    /// Whether the entry is live at `now` as far as the order knows:
    /// strictly before its deadline (a lower bound: `false` may be stale).
    #[inline]
    pub(crate) fn is_live(&self, now: u64) -> bool {
        live(now, self.expires(), self.idle, &self.last_access)
    }

    /// `New` → `Admitted`; `false` if it is dead already. Called under its
    /// order shard's lock.
    pub(crate) fn admit(&self) -> bool {
        // AcqRel/Acquire: pairs with `kill`'s swap, so exactly one of the
        // two sees the other's state (the count is raised only for an entry
        // `kill` will find admitted).
        self.state
            .compare_exchange(NEW, ADMITTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Marks the entry dead for good; whether it had been admitted (its
    /// shard's live count must then be lowered).
    pub(crate) fn kill(&self) -> bool {
        // AcqRel: pairs with `admit`'s CAS (see there).
        self.state.swap(DEAD, Ordering::AcqRel) == ADMITTED
    }

    /// Whether the entry was evicted.
    #[inline]
    pub(crate) fn is_dead(&self) -> bool {
        // Relaxed: a hint for the order, which drops dead entries it meets;
        // a stale `false` keeps one for another round, never frees anything.
        self.state.load(Ordering::Relaxed) == DEAD
    }

    /// Which queue of the order holds it live.
    pub(crate) fn place(&self) -> Place {
        // Relaxed: written and read under the shard's lock, which orders it.
        match self.place.load(Ordering::Relaxed) {
            1 => Place::Small,
            2 => Place::Main,
            _ => Place::None,
        }
    }

    /// Records which queue of the order holds it live.
    pub(crate) fn set_place(&self, place: Place) {
        // Relaxed: as in `place`.
        self.place.store(place as u8, Ordering::Relaxed);
    }

    /// Whether the order keeps it in its main queue.
    #[cfg(all(test, not(latchfree_loom)))]
    pub(crate) fn in_main(&self) -> bool {
        self.place() == Place::Main
    }
}

/// The access counts of the eviction policy: a two-bit saturating count
/// per cell; the order hands each entry a cell of its own (see
/// `order::Order::cell`).
pub(crate) struct Freq {
    words: Box<[AtomicU64]>,
}

/// Cells per word.
const PER_WORD: usize = 32;
/// The highest count.
pub(crate) const MAX_FREQ: u64 = 3;

impl Freq {
    /// A table of at least `cells` counts.
    pub(crate) fn new(cells: usize) -> Self {
        Self {
            words: (0..cells.div_ceil(PER_WORD))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    #[inline]
    fn word(&self, cell: usize) -> Option<(&AtomicU64, u32)> {
        let word = self.words.get(cell / PER_WORD)?;
        Some((word, (cell % PER_WORD) as u32 * 2))
    }

    /// Counts one access: raises the cell's count unless it is at
    /// [`MAX_FREQ`], so a hot entry's word is written at most three times
    /// per round of the policy. One attempt (a strong one: it fails only
    /// when another access changed the word): an increment lost to a
    /// concurrent one is a lost hint, not an error.
    #[inline]
    pub(crate) fn hit(&self, cell: usize) {
        if let Some((word, shift)) = self.word(cell) {
            // Relaxed (all): a hint; no data is published with it.
            let current = word.load(Ordering::Relaxed);
            if (current >> shift) & MAX_FREQ < MAX_FREQ {
                let _ = word.compare_exchange(
                    current,
                    current + (1 << shift),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// The cell's count.
    pub(crate) fn get(&self, cell: usize) -> u64 {
        self.word(cell).map_or(0, |(word, shift)| {
            // Relaxed: as in `hit`.
            (word.load(Ordering::Relaxed) >> shift) & MAX_FREQ
        })
    }

    /// Sets the cell's count to `count` (at most [`MAX_FREQ`]).
    pub(crate) fn set(&self, cell: usize, count: u64) {
        if let Some((word, shift)) = self.word(cell) {
            let count = count.min(MAX_FREQ);
            // Relaxed: as in `hit`. `fetch_update` retries only when a
            // concurrent hit changed the word, so other cells' counts are
            // never lost to this one.
            let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some((w & !(MAX_FREQ << shift)) | (count << shift))
            });
        }
    }

    /// Lowers the cell's count by one unless it is zero; the count before.
    pub(crate) fn decrement(&self, cell: usize) -> u64 {
        let Some((word, shift)) = self.word(cell) else {
            return 0;
        };
        // Relaxed: as in `hit`.
        let before = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            ((w >> shift) & MAX_FREQ != 0).then(|| w - (1 << shift))
        });
        before.map_or(0, |w| (w >> shift) & MAX_FREQ)
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_entry_killed_before_admission_is_never_admitted() {
        let early = Entry::new(1u32, 1, 0, 100, 0, 0);
        assert!(!early.kill(), "it was never admitted");
        assert!(!early.admit());
        assert!(early.is_dead());
        let admitted = Entry::new(2u32, 2, 0, 100, 0, 1);
        assert!(admitted.admit());
        assert!(!admitted.admit(), "admitted twice");
        assert!(admitted.kill(), "the shard's count must be lowered");
        assert!(!admitted.kill(), "lowered twice");
    }

    #[test]
    fn counts_saturate_and_decrement_to_zero() {
        let freq = Freq::new(100);
        let (a, b) = (1, 2);
        for _ in 0..10 {
            freq.hit(a);
        }
        assert_eq!((freq.get(a), freq.get(b)), (MAX_FREQ, 0));
        freq.hit(b);
        assert_eq!(freq.decrement(a), 3);
        assert_eq!(freq.get(a), 2);
        freq.set(a, 0);
        assert_eq!(freq.decrement(a), 0);
        assert_eq!((freq.get(a), freq.get(b)), (0, 1), "a neighbour changed");
        freq.set(b, 9);
        assert_eq!(freq.get(b), MAX_FREQ);
    }

    #[test]
    fn a_cell_outside_the_table_counts_nothing() {
        let freq = Freq::new(0);
        for cell in [0, 12_345, usize::MAX] {
            freq.hit(cell);
            freq.set(cell, 2);
            assert_eq!(freq.get(cell), 0);
            assert_eq!(freq.decrement(cell), 0);
        }
    }

    #[test]
    fn the_inline_copy_agrees_with_the_shared_part() {
        let shared = Arc::new(Entry::new(7u64, 7, 100, 1_000, 50, 3));
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
