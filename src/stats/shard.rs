//! One thread's shard: single-writer slots behind a per-shard sequence lock.
//!
//! # Slots
//!
//! A shard is an array of `u64` slots, one per counter and a run of them per
//! histogram. Only the owning thread writes a shard, so an update is a relaxed
//! load and a relaxed store of the same slot: no read-modify-write, no lock
//! prefix, wait-free. Readers (snapshots) sum the slot across shards.
//!
//! Slots live in fixed-size chunks that the owner allocates on first touch and
//! publishes through an `AtomicPtr` with `Release`; readers load it with
//! `Acquire` and treat a null chunk as all zeros. A chunk is never freed or
//! moved before the shard is dropped, and a shard is dropped only with its
//! `Stats` (entries of exited threads are handed to new threads, not freed).
//! So a thread that touches two counters holds one chunk, not `max_slots`.
//!
//! # Batches: a sequence lock with a single writer
//!
//! A batch (several slot updates that a snapshot must see all or none of) is
//! bracketed by the shard's `seq`, which is even at rest:
//!
//! ```text
//! writer (owner only)                     reader (any thread)
//!   seq.store(s + 1, Relaxed)               s1 = seq.load(Acquire)      -- odd? retry
//!   fence(Release)            ──┐           slot loads (Relaxed)
//!   slot stores (Relaxed)       └─────────▶ fence(Acquire)
//!   seq.store(s + 2, Release) ─────────────▶ s2 = seq.load(Relaxed)      -- s1 != s2? retry
//! ```
//!
//! If the reader's slot loads saw any store of a batch, the writer's release
//! fence synchronises with the reader's acquire fence, so the odd `seq` store
//! happens-before `s2` and `s2 != s1`: the read is retried. If `s1` read the
//! closing `Release` store, every store of that batch happens-before the slot
//! loads. So a validated read contains every batch it overlaps entirely or not
//! at all. This is the construction of Boehm, "Can seqlocks get along with
//! programming language memory models?" (MSPC 2012), and of crossbeam's
//! `AtomicCell` seqlock; on x86 both fences compile to nothing.
//!
//! The writer never waits. A reader retries while a batch is open (spinning,
//! then yielding: a writer preempted mid-batch holds `seq` odd for a time
//! slice). Batches are applied from a buffer with no user code inside the
//! bracket, so a panic cannot leave `seq` odd.
//!
//! Single updates outside a batch do not touch `seq`: one slot is atomic on
//! its own, and skipping the bracket keeps a counter increment at two plain
//! memory operations.

use std::ops::Range;

use crate::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};

/// Slots per chunk. Small under loom, where every atomic is a modelled object.
#[cfg(not(latchfree_loom))]
pub(crate) const CHUNK_SLOTS: usize = 1024;
#[cfg(latchfree_loom)]
pub(crate) const CHUNK_SLOTS: usize = 4;

/// Chunks per shard (a power of two).
#[cfg(not(latchfree_loom))]
const MAX_CHUNKS: usize = 64;
#[cfg(latchfree_loom)]
const MAX_CHUNKS: usize = 8;

/// The most slots a shard can hold.
pub(crate) const MAX_SLOTS: usize = CHUNK_SLOTS * MAX_CHUNKS;

/// One thread's slots. See the module docs for the protocol.
pub(crate) struct Shard {
    /// Even at rest; odd while the owner applies a batch.
    seq: AtomicU64,
    /// Chunk `c` holds slots `c * CHUNK_SLOTS ..`; null until first written.
    /// Inline, so the hot path reaches a chunk with one load.
    chunks: [AtomicPtr<AtomicU64>; MAX_CHUNKS],
}

/// The chunk of `slot`. Slots are below [`MAX_SLOTS`] (the registry never
/// hands out more), so the mask changes nothing but lets the compiler drop the
/// bounds check on the hot path.
#[inline(always)]
fn chunk_of(slot: usize) -> usize {
    debug_assert!(slot < MAX_SLOTS);
    (slot / CHUNK_SLOTS) & (MAX_CHUNKS - 1)
}

impl Shard {
    /// A shard with no chunk allocated yet.
    pub(crate) fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            chunks: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
        }
    }

    /// The owner's view of `slot`, allocating its chunk on first touch.
    ///
    /// Only the owning thread may call this (and the `add`/`max`/`batch`
    /// methods built on it): the load-then-store updates rely on a single
    /// writer. `slot` must be below [`MAX_SLOTS`].
    #[inline(always)]
    fn owned_slot(&self, slot: usize) -> &AtomicU64 {
        let chunk = &self.chunks[chunk_of(slot)];
        // Relaxed: only this thread ever stores a chunk pointer, and a thread
        // always sees its own stores.
        let mut base = chunk.load(Ordering::Relaxed);
        if base.is_null() {
            base = Self::allocate(chunk);
        }
        // SAFETY: `base` is non-null, so it points at a live chunk of
        // `CHUNK_SLOTS` atomics that is freed only in `Drop` (which needs
        // `&mut self`); the offset is `< CHUNK_SLOTS`.
        unsafe { &*base.add(slot % CHUNK_SLOTS) }
    }

    #[cold]
    #[inline(never)]
    fn allocate(chunk: &AtomicPtr<AtomicU64>) -> *mut AtomicU64 {
        let slots: Box<[AtomicU64]> = (0..CHUNK_SLOTS).map(|_| AtomicU64::new(0)).collect();
        let base = Box::into_raw(slots).cast::<AtomicU64>();
        // Release: pairs with the Acquire load in `read_range`, so a reader that
        // sees the pointer also sees the zero-initialised slots behind it.
        chunk.store(base, Ordering::Release);
        base
    }

    /// Adds `delta` to `slot` (wrapping). Owner only.
    #[inline(always)]
    pub(crate) fn add(&self, slot: usize, delta: u64) {
        let s = self.owned_slot(slot);
        s.store(
            s.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }

    /// Raises `slot` to `value` if it is below. Owner only.
    #[inline(always)]
    pub(crate) fn max(&self, slot: usize, value: u64) {
        let s = self.owned_slot(slot);
        if s.load(Ordering::Relaxed) < value {
            s.store(value, Ordering::Relaxed);
        }
    }

    /// Runs `apply` inside the sequence-lock bracket. Owner only.
    ///
    /// `apply` must only call [`add`](Self::add) / [`max`](Self::max) on this
    /// shard; it runs no user code, so it cannot unwind and leave `seq` odd.
    #[inline(always)]
    pub(crate) fn batch(&self, apply: impl FnOnce(&Self)) {
        // Relaxed load: `seq` has a single writer, this thread.
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Release fence: orders the odd store before the slot stores below for
        // any reader whose Acquire fence (in `read_range`) follows a load that
        // saw one of them.
        fence(Ordering::Release);
        apply(self);
        // Release: pairs with the reader's Acquire load of `s1`, publishing the
        // whole batch to a reader that sees the even value.
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Reads slots `range` of this shard into `out` (cleared first) as one
    /// consistent read: every batch is included entirely or not at all.
    ///
    /// `range.end` must not exceed [`MAX_SLOTS`].
    pub(crate) fn read_range(&self, range: Range<usize>, out: &mut Vec<u64>) {
        let mut step = 0;
        loop {
            // Acquire: pairs with the closing Release store of `batch`.
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                crate::sync::backoff(&mut step);
                continue;
            }
            out.clear();
            let mut slot = range.start;
            while slot < range.end {
                let offset = slot % CHUNK_SLOTS;
                let n = (CHUNK_SLOTS - offset).min(range.end - slot);
                // Acquire: pairs with the Release store in `allocate`.
                let base = self.chunks[chunk_of(slot)].load(Ordering::Acquire);
                if base.is_null() {
                    out.resize(out.len() + n, 0);
                } else {
                    for i in offset..offset + n {
                        // SAFETY: `base` is a published chunk of `CHUNK_SLOTS`
                        // atomics, live until the shard is dropped (we hold
                        // `&self`), and `i < offset + n <= CHUNK_SLOTS`.
                        let v = unsafe { &*base.add(i) };
                        out.push(v.load(Ordering::Relaxed));
                    }
                }
                slot += n;
            }
            // Acquire fence: pairs with the writer's Release fence in `batch`;
            // if any load above saw a batch's store, `s2` below sees that
            // batch's odd `seq`.
            fence(Ordering::Acquire);
            let s2 = self.seq.load(Ordering::Relaxed);
            if s1 == s2 {
                return;
            }
            crate::sync::backoff(&mut step);
        }
    }

    /// The current value of one slot (no batch consistency needed).
    pub(crate) fn read_slot(&self, slot: usize) -> u64 {
        // Acquire: pairs with the Release store in `allocate`.
        let base = self.chunks[chunk_of(slot)].load(Ordering::Acquire);
        if base.is_null() {
            return 0;
        }
        // SAFETY: as in `read_range`: a published, live chunk; offset in bounds.
        unsafe { &*base.add(slot % CHUNK_SLOTS) }.load(Ordering::Relaxed)
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        for chunk in self.chunks.iter_mut() {
            // Relaxed: `&mut self` already excludes every other access.
            let base = chunk.load(Ordering::Relaxed);
            if !base.is_null() {
                let slice = std::ptr::slice_from_raw_parts_mut(base, CHUNK_SLOTS);
                // SAFETY: `base` came from `Box::into_raw` of a boxed slice of
                // exactly `CHUNK_SLOTS` atomics in `allocate`, and `&mut self`
                // means no other reference to it exists any more.
                drop(unsafe { Box::from_raw(slice) });
            }
        }
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;

    fn read_all(shard: &Shard, len: usize) -> Vec<u64> {
        let mut out = Vec::new();
        shard.read_range(0..len, &mut out);
        out
    }

    #[test]
    fn chunks_are_allocated_on_first_touch_and_read_back() {
        let shard = Shard::new();
        assert!(read_all(&shard, 3 * CHUNK_SLOTS).iter().all(|&v| v == 0));
        shard.add(5, 7);
        shard.add(2 * CHUNK_SLOTS + 1, 9);
        shard.max(CHUNK_SLOTS, 4);
        shard.max(CHUNK_SLOTS, 3);
        let all = read_all(&shard, 3 * CHUNK_SLOTS);
        assert_eq!(all[5], 7);
        assert_eq!(all[CHUNK_SLOTS], 4);
        assert_eq!(all[2 * CHUNK_SLOTS + 1], 9);
        assert_eq!(all.iter().sum::<u64>(), 20);
        assert_eq!(shard.read_slot(2 * CHUNK_SLOTS + 1), 9);
    }

    #[test]
    fn batch_leaves_seq_even_and_applies_everything() {
        let shard = Shard::new();
        shard.batch(|s| {
            s.add(0, 1);
            s.add(1, 3);
        });
        assert_eq!(shard.seq.load(Ordering::Relaxed), 2);
        assert_eq!(&read_all(&shard, 2)[..], &[1, 3]);
    }

    #[test]
    fn ranges_across_chunk_edges_and_wrapping() {
        let shard = Shard::new();
        shard.add(0, u64::MAX);
        shard.add(0, 2);
        shard.add(CHUNK_SLOTS - 1, 5);
        shard.add(CHUNK_SLOTS, 6);
        let mut out = Vec::new();
        shard.read_range(0..1, &mut out);
        assert_eq!(out, vec![1]);
        shard.read_range(CHUNK_SLOTS - 2..CHUNK_SLOTS + 2, &mut out);
        assert_eq!(out, vec![0, 5, 6, 0]);
    }
}
