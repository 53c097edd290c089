//! The order entries leave a [`TtlMap`](super::TtlMap) in: a coarse
//! deadline wheel for expiry, and S3-FIFO for evictions at the capacity
//! bound. The two are independent: an entry's place in one never moves it
//! in the other, so expiry stays exact whatever the policy does, and the
//! policy sees reads even when every entry has its own deadline.
//!
//! # Shards
//!
//! The order is split into shards by key hash (a power of two: four per
//! core, fewer for a small map so that each keeps a useful share of the
//! capacity). A shard is a short critical section behind its own lock,
//! taken **only by writers** (publication, sweeps, evictions) and never by
//! a read: a hit writes at most a two-bit count in [`Freq`], outside any
//! lock. The lock is held for a few pushes and pops, never across user
//! code, the index, a listener or another shard's lock, so it is always
//! the innermost lock and never part of a cycle. Writers of different
//! keys meet on one shard lock only when their hashes share a shard.
//!
//! # Expiry: the wheel
//!
//! Each shard keeps its entries by *granule* of their deadline: granules
//! are `2^shift` nanoseconds, the largest power of two not above the map's
//! time resolution (1 ns when the time is read exactly, so expiry sweeps
//! then work to the nanosecond). A granule is a `Vec`, found through a
//! `BTreeMap` whose last key is checked first, so a run of inserts with one
//! lifetime appends to one vector without a search. A sweep pops the
//! granules that have wholly passed; every entry in one has a deadline at
//! or before now, unless it was read since (an idle timeout moves the
//! deadline later), in which case it goes back under its new deadline. An
//! entry without a deadline is not in the wheel.
//!
//! # Capacity: S3-FIFO
//!
//! When the map evicts at its bound, each shard runs S3-FIFO (Yang et al.,
//! SOSP 2023) over its share of the capacity: a *small* FIFO for new
//! entries (a tenth of the share), a *main* FIFO for the rest, and a
//! *ghost* record of the hashes of keys recently evicted from the small
//! queue. A new key enters the small queue, or the main one if its hash is
//! in the ghost record (it was evicted too early). To evict, a shard takes
//! the head of the small queue while that queue holds at least its tenth,
//! else of the main one. A small-queue head that was read since it entered
//! moves to the main queue; one that was not is evicted and remembered in
//! the ghost record: one-hit wonders and scans leave through the small
//! queue without displacing what is read repeatedly. A main-queue head
//! with a nonzero count goes back to the tail with its count lowered by
//! one, else it is evicted: CLOCK with a two-bit count. The counts are
//! [`Freq`]'s, raised by reads. At most [`SCAN`] heads are considered per
//! eviction; the last is evicted whatever its count, so a burst of reads
//! cannot hold a writer in the lock. An expired head met on the way is
//! evicted as expired instead.
//!
//! An update of a hot key is not a new key. A replacement usually keeps
//! the key's entry (see "Replacements in place" in the `ttl` docs), and
//! with it its place in its queue and its count; one that moves the
//! deadline earlier gets a new entry, which goes to the back of the old
//! one's queue with its count.
//!
//! # Dead entries, lazily
//!
//! An entry evicted by any path (a sweep, a capacity eviction, `remove`, a
//! replacement, a read that finds it expired) is marked dead
//! ([`Entry::kill`]) and left where it is; the wheel and the queues drop
//! dead entries as they meet them. So a removal costs one atomic swap and no
//! lock here. What dead entries cost in memory is bounded: each shard
//! counts what it holds, and when that passes twice what it held after its
//! last compaction (and a floor), it compacts, dropping every dead entry.
//! Each compaction follows at least as many pushes as it visits: amortised
//! O(1) per write.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::entry::{Entry, Freq, NO_DEADLINE, Place};
use super::events::EvictionCause;
use super::key::PassThrough;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{Mutex, MutexGuard};

/// Queue heads one eviction considers at most; the last one is evicted
/// whatever its count.
pub(crate) const SCAN: usize = 32;

/// The fewest entries of capacity a shard should have: fewer shards rather
/// than shards too small for the policy to tell entries apart.
const MIN_SHARE: usize = 256;

/// Items a shard may hold before its first compaction.
const COMPACT_FLOOR: usize = 1_024;

/// What a small-queue head's count must exceed to move to the main queue.
const PROMOTE_ABOVE: u64 = 0;

/// The small queue's target is a `1 / SMALL_SHARE` of a shard's share.
/// S3-FIFO's paper uses a tenth; a twentieth measured better on every
/// trace of `latchfree bench hit-ratio` (up to 0.8 points at 10k
/// entries) and no worse at 100k.
const SMALL_SHARE: usize = 20;

/// The cell of an entry that has none (the policy is off, or the shard's
/// cells ran out): [`Freq`] ignores it, and it counts as never read.
pub(crate) const NO_CELL: usize = usize::MAX;

/// The order of one map.
pub(crate) struct Order<K> {
    shards: Box<[CachePadded<Shard<K>>]>,
    /// Shards minus one.
    mask: usize,
    /// Granules are `2^shift` nanoseconds.
    shift: u32,
    /// Whether the S3-FIFO queues are kept (the map evicts at capacity).
    evicting: bool,
    /// Each shard's small-queue target.
    small_target: usize,
    /// Each shard's ghost record holds at most this many hashes.
    ghost_target: usize,
    /// Each shard owns this many cells of `freq`, from `shard * cells_per_shard`.
    cells_per_shard: usize,
    /// The next shard a sweep starts at.
    cursor: AtomicUsize,
    /// The policy's access counts.
    pub(crate) freq: Freq,
}

struct Shard<K> {
    state: Mutex<State<K>>,
}

struct State<K> {
    wheel: BTreeMap<u64, Vec<Arc<Entry<K>>>>,
    small: VecDeque<Arc<Entry<K>>>,
    main: VecDeque<Arc<Entry<K>>>,
    ghost: Ghost,
    /// Admitted entries not yet dead.
    live: usize,
    /// Live entries in `small` and in `main` (the queues also hold dead
    /// ones until they meet them).
    small_live: usize,
    main_live: usize,
    /// Entries (live or dead) held in the wheel and the queues.
    items: usize,
    /// `items` at which the shard compacts next.
    compact_at: usize,
    /// Cells of `freq` handed out so far, from the shard's first.
    fresh: usize,
    /// Cells given back, to hand out again.
    free: Vec<usize>,
}

/// Hashes of keys evicted from the small queue: the last `ghost_target`
/// recorded, oldest first. A hash taken back (its key returned) keeps its
/// place in the line until the line moves past it, but no longer counts
/// as recorded.
struct Ghost {
    /// Each recorded hash and the number it was recorded under.
    set: HashMap<u64, u64, PassThrough>,
    fifo: VecDeque<(u64, u64)>,
    /// The number the next record gets.
    next: u64,
}

impl Ghost {
    fn insert(&mut self, hash: u64, target: usize) {
        if target == 0 || self.set.contains_key(&hash) {
            return;
        }
        self.next += 1;
        self.set.insert(hash, self.next);
        self.fifo.push_back((hash, self.next));
        while self.fifo.len() > target {
            if let Some((old, number)) = self.fifo.pop_front()
                && self.set.get(&old) == Some(&number)
            {
                self.set.remove(&old);
            }
        }
    }

    /// Whether `hash` is recorded; forgets it.
    fn take(&mut self, hash: u64) -> bool {
        self.set.remove(&hash).is_some()
    }
}

impl<K> Order<K> {
    /// The order of a map of at most `max_entries` entries whose time has a
    /// resolution of `resolution` nanoseconds (0: exact).
    pub(crate) fn new(max_entries: usize, evicting: bool, resolution: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let by_cores = (cores * 4).next_power_of_two();
        let by_share = (max_entries / MIN_SHARE).max(1);
        // The largest power of two at most `by_share`, and at most `by_cores`.
        // One shard under loom: the models check the protocol, not the spread.
        let shards = if cfg!(latchfree_loom) {
            1
        } else {
            by_cores.min(1 << by_share.ilog2())
        };
        let share = max_entries.div_ceil(shards);
        // Entries holding a cell: those in the queues (live, or dead and
        // not yet compacted away: about twice the share at most) and those
        // being published.
        let cells_per_shard = share.saturating_mul(2).saturating_add(COMPACT_FLOOR);
        let shift = resolution.max(1).ilog2();
        Self {
            shards: (0..shards)
                .map(|_| {
                    CachePadded::new(Shard {
                        state: Mutex::new(State {
                            wheel: BTreeMap::new(),
                            small: VecDeque::new(),
                            main: VecDeque::new(),
                            ghost: Ghost {
                                set: HashMap::default(),
                                fifo: VecDeque::new(),
                                next: 0,
                            },
                            live: 0,
                            small_live: 0,
                            main_live: 0,
                            items: 0,
                            compact_at: COMPACT_FLOOR,
                            fresh: 0,
                            free: Vec::new(),
                        }),
                    })
                })
                .collect(),
            mask: shards - 1,
            shift,
            evicting,
            small_target: if evicting { share / SMALL_SHARE } else { 0 },
            ghost_target: if evicting {
                share - share / SMALL_SHARE
            } else {
                0
            },
            cells_per_shard,
            cursor: AtomicUsize::new(0),
            freq: Freq::new(if evicting {
                cells_per_shard * shards
            } else {
                0
            }),
        }
    }

    /// How many shards there are.
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard of a key with this hash.
    #[inline]
    pub(crate) fn shard_of(&self, hash: u64) -> usize {
        // The high bits: the index uses the low ones.
        (hash.rotate_left(16) as usize) & self.mask
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, State<K>> {
        // A panic inside the lock leaves the queues consistent (pushes and
        // pops are single steps), so a poisoned lock is used as is.
        self.shards[shard]
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn granule(&self, deadline: u64) -> u64 {
        deadline >> self.shift
    }

    /// Takes a newly published entry in; `replaced` is the entry it
    /// replaced under the same key (so in the same shard), which dies here
    /// and whose queue and count it inherits. Nothing happens if it was evicted meanwhile.
    pub(crate) fn admit(&self, entry: &Arc<Entry<K>>, replaced: Option<&Entry<K>>) {
        let shard = self.shard_of(entry.hash);
        let mut state = self.lock(shard);
        let inherited = replaced.map(|old| {
            let place = old.place();
            state.kill(old);
            (place, self.freq.get(old.cell))
        });
        if !entry.admit() {
            state.free_cell(entry.cell);
            return;
        }
        state.live += 1;
        self.push_wheel(&mut state, entry.clone());
        if self.evicting {
            let to_main = match inherited {
                Some((place, count)) => {
                    self.freq.set(entry.cell, count);
                    place == Place::Main
                }
                None => state.ghost.take(entry.hash),
            };
            state.push_queue(
                entry.clone(),
                if to_main { Place::Main } else { Place::Small },
            );
        }
        if state.items >= state.compact_at {
            state.compact();
        }
    }

    /// A cell of `freq` for a new entry of a key with this hash, its count
    /// cleared: one no entry in the order holds, so an entry never shares
    /// its count ([`NO_CELL`] when the policy is off or the shard has none
    /// left). It goes back to the shard when the entry leaves the queues.
    pub(crate) fn cell(&self, hash: u64) -> usize {
        if !self.evicting {
            return NO_CELL;
        }
        let shard = self.shard_of(hash);
        let mut state = self.lock(shard);
        let cell = match state.free.pop() {
            Some(cell) => cell,
            None if state.fresh < self.cells_per_shard => {
                state.fresh += 1;
                shard * self.cells_per_shard + state.fresh - 1
            }
            None => return NO_CELL,
        };
        drop(state);
        self.freq.set(cell, 0);
        cell
    }

    /// Gives back the cell of an entry that was never published.
    pub(crate) fn discard(&self, entry: &Entry<K>) {
        if entry.cell != NO_CELL {
            self.lock(self.shard_of(entry.hash)).free_cell(entry.cell);
        }
    }

    /// Marks `entry` dead (it was removed from the index).
    pub(crate) fn kill(&self, entry: &Entry<K>) {
        self.lock(self.shard_of(entry.hash)).kill(entry);
    }

    /// Pops up to `limit` entries whose deadline is at or before `now` from
    /// `shards` shards (the next ones in turn), and appends them to `out`.
    /// Entries found live (an idle timeout moved their deadline) go back
    /// into the wheel; dead ones are dropped.
    pub(crate) fn expired(
        &self,
        shards: usize,
        now: u64,
        limit: usize,
        out: &mut Vec<Arc<Entry<K>>>,
    ) {
        // Relaxed: which shard comes first is a fairness hint.
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..shards.min(self.shards.len()) {
            if out.len() >= limit {
                break;
            }
            let shard = (start + i) & self.mask;
            let mut state = self.lock(shard);
            while out.len() < limit {
                let Some(mut granule) = state.wheel.first_entry() else {
                    break;
                };
                // Every deadline in the granule is at or before now only if
                // its last nanosecond is.
                let last = (*granule.key() << self.shift) | ((1u64 << self.shift) - 1);
                if last > now {
                    break;
                }
                let entries = granule.get_mut();
                let take = entries.len().min(limit - out.len());
                let popped: Vec<_> = entries.drain(..take).collect();
                if entries.is_empty() {
                    granule.remove();
                }
                state.items -= popped.len();
                for entry in popped {
                    if entry.is_dead() {
                        continue;
                    }
                    if entry.is_live(now) {
                        // Its granule was a lower bound: it was read or
                        // replaced in place since.
                        self.push_wheel(&mut state, entry);
                    } else {
                        out.push(entry);
                    }
                }
            }
        }
    }

    /// Puts `entry` back in the wheel under its deadline: a sweep popped it
    /// as expired, and the index, checked under the key's lock, holds it
    /// live (a replacement in place extended it).
    pub(crate) fn relink(&self, entry: &Arc<Entry<K>>) {
        let mut state = self.lock(self.shard_of(entry.hash));
        if !entry.is_dead() {
            self.push_wheel(&mut state, entry.clone());
        }
    }

    /// Pushes a live entry into the wheel under the granule of its
    /// deadline, if it has one.
    fn push_wheel(&self, state: &mut State<K>, entry: Arc<Entry<K>>) {
        let deadline = entry.deadline();
        if deadline != NO_DEADLINE {
            state.push_wheel(self.granule(deadline), entry);
        }
    }

    /// Chooses the entry to evict to make room for a key with this hash,
    /// from the key's own shard (so every shard keeps the share it has),
    /// then, if it holds none, from the others: S3-FIFO's victim (see the
    /// module docs), or an expired entry met on the way, with the cause the
    /// order sees (the index, checked under the key's lock, decides).
    /// `None` if no shard holds a live entry in its queues.
    pub(crate) fn victim(&self, hash: u64, now: u64) -> Option<(Arc<Entry<K>>, EvictionCause)> {
        if !self.evicting {
            return None;
        }
        let first = self.shard_of(hash);
        (0..self.shards.len()).find_map(|i| self.victim_in((first + i) & self.mask, now))
    }

    fn victim_in(&self, shard: usize, now: u64) -> Option<(Arc<Entry<K>>, EvictionCause)> {
        let mut state = self.lock(shard);
        let mut considered = 0;
        loop {
            let from_small = state.small_live > 0
                && (state.small_live >= self.small_target || state.main_live == 0);
            if !from_small && state.main_live == 0 {
                return None;
            }
            let entry = if from_small {
                state.small.pop_front()
            } else {
                state.main.pop_front()
            }?;
            state.items -= 1;
            if entry.is_dead() {
                state.free_cell(entry.cell);
                continue;
            }
            // Live and in this queue: it leaves it (maybe to come back).
            if from_small {
                state.small_live -= 1;
            } else {
                state.main_live -= 1;
            }
            entry.set_place(Place::None);
            if !entry.is_live(now) {
                // It leaves the queues for good (evicted now, or dead).
                state.free_cell(entry.cell);
                return Some((entry, EvictionCause::Expired));
            }
            considered += 1;
            let last_chance = considered >= SCAN;
            if from_small {
                if self.freq.get(entry.cell) > PROMOTE_ABOVE && !last_chance {
                    state.push_queue(entry, Place::Main);
                    continue;
                }
                state.ghost.insert(entry.hash, self.ghost_target);
            } else if !last_chance && self.freq.decrement(entry.cell) > 0 {
                state.push_queue(entry, Place::Main);
                continue;
            }
            state.free_cell(entry.cell);
            return Some((entry, EvictionCause::Capacity));
        }
    }

    /// Live entries the shards count.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.state.lock().map_or(0, |state| state.live))
            .sum()
    }
}

impl<K> State<K> {
    /// Marks `entry` (of this shard) dead, and uncounts it if it was
    /// admitted.
    fn kill(&mut self, entry: &Entry<K>) {
        if !entry.kill() {
            return;
        }
        self.live -= 1;
        match entry.place() {
            Place::Small => self.small_live -= 1,
            Place::Main => self.main_live -= 1,
            Place::None => {}
        }
        // Its item stays in the queue until met or compacted away.
        entry.set_place(Place::None);
    }

    fn push_queue(&mut self, entry: Arc<Entry<K>>, place: Place) {
        entry.set_place(place);
        if place == Place::Main {
            self.main_live += 1;
            self.main.push_back(entry);
        } else {
            self.small_live += 1;
            self.small.push_back(entry);
        }
        self.items += 1;
    }

    fn free_cell(&mut self, cell: usize) {
        if cell != NO_CELL {
            self.free.push(cell);
        }
    }

    fn push_wheel(&mut self, granule: u64, entry: Arc<Entry<K>>) {
        self.items += 1;
        if let Some(mut last) = self.wheel.last_entry()
            && *last.key() == granule
        {
            last.get_mut().push(entry);
            return;
        }
        self.wheel.entry(granule).or_default().push(entry);
    }

    /// Drops every dead entry; the next compaction waits for twice what is
    /// left.
    fn compact(&mut self) {
        let free = &mut self.free;
        let mut keep = |e: &Arc<Entry<K>>| {
            let dead = e.is_dead();
            if dead && e.cell != NO_CELL {
                free.push(e.cell);
            }
            !dead
        };
        self.small.retain(&mut keep);
        self.main.retain(&mut keep);
        self.wheel.retain(|_, entries| {
            entries.retain(|e| !e.is_dead());
            !entries.is_empty()
        });
        self.items =
            self.small.len() + self.main.len() + self.wheel.values().map(Vec::len).sum::<usize>();
        self.compact_at = (self.items * 2).max(COMPACT_FLOOR);
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;

    fn entry(key: u32, hash: u64, expires: u64, cell: usize) -> Arc<Entry<u32>> {
        Arc::new(Entry::new(key, hash, 0, expires, 0, cell))
    }

    #[test]
    fn sweeps_pop_only_granules_that_have_wholly_passed() {
        // Granules of 2^10 ns.
        let order = Order::<u32>::new(10, false, 1_500);
        let early = entry(1, 1, 1_000, 0);
        let late = entry(2, 2, 1_030, 1);
        order.admit(&early, None);
        order.admit(&late, None);
        let mut out = Vec::new();
        order.expired(usize::MAX, 1_022, usize::MAX, &mut out);
        assert!(out.is_empty(), "granule 0 ends at 1023");
        order.expired(usize::MAX, 1_023, usize::MAX, &mut out);
        assert_eq!(out.len(), 1);
        assert!(Arc::ptr_eq(&out[0], &early));
        order.expired(usize::MAX, 2_046, usize::MAX, &mut out);
        assert_eq!(out.len(), 1, "granule 1 ends at 2047");
        order.expired(usize::MAX, 2_047, usize::MAX, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn dead_entries_are_dropped_not_returned_and_compacted_away() {
        let order = Order::<u32>::new(1 << 20, true, 0);
        let all: Vec<_> = (0..5_000)
            .map(|k| {
                entry(
                    k,
                    u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    10,
                    k as usize,
                )
            })
            .collect();
        for e in &all {
            order.admit(e, None);
        }
        assert_eq!(order.live(), 5_000);
        for e in &all {
            order.kill(e);
        }
        assert_eq!(order.live(), 0);
        let mut out = Vec::new();
        order.expired(usize::MAX, 100, usize::MAX, &mut out);
        assert!(out.is_empty());
        assert!(order.victim(0, 0).is_none());
        // What is left of the queues is compacted away by later pushes:
        // enough of them to reach every shard's next compaction, which
        // waits for twice what its last one left (at most 4,096 items here
        // with 4 shards, one per core counted under Miri, and less with
        // more), not a fixed count that only more shards would reach.
        let pushes = 4 * COMPACT_FLOOR * order.shards();
        for k in 0..pushes as u32 {
            let e = entry(
                k,
                u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                NO_DEADLINE,
                0,
            );
            order.admit(&e, None);
            order.kill(&e);
        }
        let held: usize = order
            .shards
            .iter()
            .map(|s| s.state.lock().unwrap().items)
            .sum();
        assert!(
            held <= 2 * COMPACT_FLOOR * order.shards(),
            "{held} items held"
        );
    }

    #[test]
    fn a_read_small_entry_moves_to_main_and_an_unread_one_is_evicted_and_remembered() {
        // One shard of 10: a small target of 1.
        let order = Order::<u32>::new(10, true, 0);
        assert_eq!(order.shards(), 1);
        let (read, unread) = (entry(1, 11, NO_DEADLINE, 1), entry(2, 22, NO_DEADLINE, 2));
        order.admit(&read, None);
        order.admit(&unread, None);
        order.freq.hit(read.cell);
        let (victim, cause) = order.victim(0, 0).expect("a victim");
        assert!(Arc::ptr_eq(&victim, &unread));
        assert_eq!(cause, EvictionCause::Capacity);
        assert!(read.in_main());
        order.kill(&victim);
        // The evicted key comes back: straight into main.
        let back = entry(2, 22, NO_DEADLINE, 3);
        order.admit(&back, None);
        assert!(back.in_main());
    }

    #[test]
    fn main_entries_get_a_chance_per_count_and_expired_ones_go_first() {
        let order = Order::<u32>::new(10, true, 0);
        let a = entry(1, 11, NO_DEADLINE, 1);
        let b = entry(2, 22, NO_DEADLINE, 2);
        let old = entry(3, 33, 5, 3);
        order.admit(&a, None);
        order.admit(&b, None);
        order.admit(&old, None);
        for _ in 0..3 {
            order.freq.hit(a.cell);
        }
        order.freq.hit(b.cell);
        // `a` and `b` move to main, keeping their counts; `old` has expired.
        let (victim, cause) = order.victim(0, 10).expect("the expired one");
        assert!(Arc::ptr_eq(&victim, &old));
        assert_eq!(cause, EvictionCause::Expired);
        assert!(a.in_main() && b.in_main());
        // `a` has three chances, `b` one: `b` goes first.
        let (victim, cause) = order.victim(0, 10).expect("a victim");
        assert!(Arc::ptr_eq(&victim, &b));
        assert_eq!(cause, EvictionCause::Capacity);
    }

    #[test]
    fn a_replacement_inherits_its_queue_and_count() {
        let order = Order::<u32>::new(10, true, 0);
        let first = entry(1, 11, NO_DEADLINE, 1);
        order.admit(&first, None);
        let (victim, _) = order.victim(0, 0).expect("the only entry");
        order.kill(&victim);
        // Back from the ghost record, into main; then replaced.
        let old = entry(1, 11, NO_DEADLINE, 2);
        order.admit(&old, None);
        assert!(old.in_main());
        order.freq.hit(old.cell);
        let new = entry(1, 11, NO_DEADLINE, 3);
        order.admit(&new, Some(&old));
        assert!(old.is_dead());
        assert!(new.in_main());
        assert_eq!(order.freq.get(new.cell), 1);
        // A replacement of a small-queue entry stays in the small queue.
        let small = entry(2, 22, NO_DEADLINE, 4);
        order.admit(&small, None);
        let again = entry(2, 22, NO_DEADLINE, 5);
        order.admit(&again, Some(&small));
        assert!(!again.in_main());
        assert_eq!(order.live(), 2);
    }
}
