//! What the `sessions` and `cache` workloads share: the three operations on
//! a map of [`ENTRIES`] entries, driven through [`MapOps`], with exact
//! counts checked after each case.
//!
//! | op | what one operation is | exactness checked |
//! |---|---|---|
//! | `hit` | a lookup of a random present key | every lookup found its key's value; nothing created |
//! | `mix_90_10` | 90 %: a lookup of a random key; 10 %: a write of a random key from the worker's own share (`key % threads == worker`) | every value found is its key's; initialiser calls == writes; the map holds [`ENTRIES`] afterwards |
//! | `create_storm` | get-or-create of the next fresh key; every worker walks the **same** sequence of fresh keys, so they race on each one | initialiser calls == distinct keys walked (exactly once per key), every caller got its key's value |
//!
//! A write is whatever replaces a key's value in that map: an insert for a
//! cache, a remove followed by a get-or-create for a session registry (a
//! session ends and the client logs in again). Writes stay within the
//! worker's own share of keys so that the number of initialiser calls is
//! exact however the workers interleave.
//!
//! The map is populated with [`ENTRIES`] keys when its target is built,
//! outside the timed region. Keys are drawn from a per-worker xorshift
//! generator (no shared state); the `sessions` workload precomputes its id
//! strings, so a lookup allocates nothing that the map does not.
//!
//! An implementation holds either shared `Arc<Payload>` values (cloned out
//! on a hit, as a registry hands out sessions) or bare `u64` tags (see
//! [`Value`]); the ops of the second kind are named `hit_u64`,
//! `mix_90_10_u64`, `create_storm_u64`. The `ideal-vec` row of `hit` is the
//! floor ([`Floor`]): the same values in a `Vec`, no map at all.
//!
//! `hit_async` and `create_storm_async` ([`async_cases_of`]) are `hit` and
//! `create_storm` as tasks on a tokio runtime ([`OnRuntime`]), through the
//! implementation's async get-or-create ([`AsyncMapOps`]); a `hit_async` is
//! a get-or-create of a present key, so its initialiser must never run.
//! Their checks are those of `hit` and `create_storm`.
//!
//! In `create_storm` each worker keeps a cursor into the sequence of fresh
//! keys. Between timed slices the target settles (untimed): it removes the
//! keys created in that slice (so memory stays bounded by one slice's
//! creations) and moves every cursor to the furthest one, so the next slice
//! starts all workers on the same fresh key again and keys stay fresh.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use super::{AsyncTarget, Case, OnRuntime, Target, expect_eq};

/// Keys in the map before each case starts.
pub const ENTRIES: u64 = 100_000;

/// The first fresh key of `create_storm`: far above the populated keys.
pub const FRESH_BASE: u64 = 1 << 40;

/// The bound of the bounded maps in `create_storm`: well above the fresh
/// keys one timed slice creates (they are removed between slices).
pub const STORM_CAPACITY: u64 = 1 << 22;

/// The bound a bounded map gets for `op`: twice [`ENTRIES`] for `hit` and
/// `mix_90_10` (nothing is evicted, so a miss is a failure), and
/// [`STORM_CAPACITY`] for `create_storm`.
pub fn capacity(op: MapOp) -> u64 {
    match op {
        MapOp::CreateStorm => STORM_CAPACITY,
        MapOp::Hit | MapOp::Mix => 2 * ENTRIES,
    }
}

/// The value every implementation stores: 64 bytes, tagged with its key's
/// index so that every read can check it got the right one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The index of the key it was created for.
    pub index: u64,
    /// Stand-in for the rest of a session or a cached result.
    pub data: [u64; 7],
}

impl Payload {
    /// The value of key `index`.
    pub fn new(index: u64) -> Self {
        Self {
            index,
            data: [index; 7],
        }
    }
}

/// One map implementation, addressed by key index (each workload turns the
/// index into its key type: an id string, a `u64`).
pub trait MapOps: Send + Sync + 'static {
    /// Whether a [`write`](Self::write) keeps the key readable throughout
    /// (an insert does; a remove-then-create leaves a gap in which a lookup
    /// misses).
    const WRITE_IS_ATOMIC: bool;

    /// Whether concurrent get-or-creates of one key run one initialiser
    /// (`false` for a lock-free map that lets racing callers each build a
    /// value and keeps one: `create_storm` then checks at least one
    /// initialiser per key, and that every caller got the kept value).
    const INIT_EXACTLY_ONCE: bool = true;

    /// The [tag](Payload::index) of the value of key `i`, if present, read
    /// the way the implementation hands out values (a clone of the `Arc`
    /// for most; a borrow for the `-with` rows).
    fn get(&self, i: u64) -> Option<u64>;

    /// The tag of the value of key `i`, created by `init` if absent.
    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64;

    /// Replaces the value of key `i` with `init()` (see the module docs).
    fn write(&self, i: u64, init: impl FnOnce() -> Payload);

    /// Removes key `i`.
    fn remove(&self, i: u64);

    /// Entries held, where the implementation counts them exactly.
    fn entries(&self) -> Option<usize>;

    /// Finishes deferred maintenance (moka's pending tasks), untimed.
    fn sync(&self) {}
}

/// A [`MapOps`] implementation as a bench case builds it.
pub trait NewMap: MapOps + Sized {
    /// The names its cases run under, one per [`MapOp::ALL`].
    const OPS: [&'static str; 3] = MapOp::NAMES;

    /// The implementation, empty, configured as its workload's docs say for
    /// `op` (a bounded map is sized for the keys `op` creates).
    fn new_map(op: MapOp) -> Self;
}

/// What a map stores per key: a shared `Arc<Payload>` (cloned out on a
/// hit: one reference-count increment and decrement), or the bare `u64` tag
/// (a copy: nothing shared is written), whose cases are named `*_u64`.
pub trait Value: Clone + Send + Sync + 'static {
    /// The op names of maps holding this value.
    const OPS: [&'static str; 3];

    /// The value stored for `payload`.
    fn from_payload(payload: Payload) -> Self;

    /// The [tag](Payload::index) it carries.
    fn tag(&self) -> u64;
}

impl Value for std::sync::Arc<Payload> {
    const OPS: [&'static str; 3] = MapOp::NAMES;

    fn from_payload(payload: Payload) -> Self {
        Self::new(payload)
    }

    fn tag(&self) -> u64 {
        self.index
    }
}

impl Value for u64 {
    const OPS: [&'static str; 3] = ["hit_u64", "mix_90_10_u64", "create_storm_u64"];

    fn from_payload(payload: Payload) -> Self {
        payload.index
    }

    fn tag(&self) -> u64 {
        *self
    }
}

/// Every op name, in bench order (each `_u64` variant after its op, the
/// async ops last).
pub const OP_ORDER: [&str; 8] = [
    MapOp::NAMES[0],
    <u64 as Value>::OPS[0],
    MapOp::NAMES[1],
    <u64 as Value>::OPS[1],
    MapOp::NAMES[2],
    <u64 as Value>::OPS[2],
    ASYNC_OPS[0],
    ASYNC_OPS[1],
];

/// The async ops ([`async_cases_of`]): `hit` and `create_storm` through
/// the implementation's async get-or-create.
pub const ASYNC_OPS: [&str; 2] = ["hit_async", "create_storm_async"];

/// A [`MapOps`] implementation with an async get-or-create (its loader a
/// future, its waiters tasks that yield their worker).
pub trait AsyncMapOps: NewMap {
    /// As [`MapOps::get_or_create`], awaited.
    fn get_or_create_async(
        &self,
        i: u64,
        init: impl FnOnce() -> Payload + Send,
    ) -> impl Future<Output = u64> + Send;
}

/// A case of a map workload (no latency sampled: operations of tens of ns).
fn map_case(
    workload: &'static str,
    op: &'static str,
    imp: &'static str,
    guarantee: &'static str,
    make: fn(usize) -> Box<dyn Target>,
) -> Case {
    Case {
        workload,
        op,
        imp,
        guarantee,
        latency: false,
        make,
    }
}

fn make_async_target<M: AsyncMapOps, const OP: usize>(threads: usize) -> Box<dyn Target> {
    let op = [MapOp::Hit, MapOp::CreateStorm][OP];
    Box::new(OnRuntime::new(MapTarget::new(M::new_map(op), op, threads)))
}

/// The async cases of implementation `M` (named by [`ASYNC_OPS`]).
pub fn async_cases_of<M: AsyncMapOps>(
    workload: &'static str,
    imp: &'static str,
    guarantee: &'static str,
) -> [Case; 2] {
    let case = |op, make| map_case(workload, op, imp, guarantee, make);
    [
        case(ASYNC_OPS[0], make_async_target::<M, 0>),
        case(ASYNC_OPS[1], make_async_target::<M, 1>),
    ]
}

fn make_target<M: NewMap, const OP: usize>(threads: usize) -> Box<dyn Target> {
    Box::new(MapTarget::new(
        M::new_map(MapOp::ALL[OP]),
        MapOp::ALL[OP],
        threads,
    ))
}

/// The cases of implementation `M` (one per [`MapOp`], named by
/// [`NewMap::OPS`]), named `imp` with `guarantee`.
pub fn cases_of<M: NewMap>(
    workload: &'static str,
    imp: &'static str,
    guarantee: &'static str,
) -> [Case; 3] {
    let case = |op, make| map_case(workload, op, imp, guarantee, make);
    [
        case(M::OPS[0], make_target::<M, 0>),
        case(M::OPS[1], make_target::<M, 1>),
        case(M::OPS[2], make_target::<M, 2>),
    ]
}

/// The `hit` and `mix_90_10` cases of implementation `M`: for a variant
/// that differs from another only in how it reads.
pub fn read_cases_of<M: NewMap>(
    workload: &'static str,
    imp: &'static str,
    guarantee: &'static str,
) -> Vec<Case> {
    let [hit, mix, _storm] = cases_of::<M>(workload, imp, guarantee);
    vec![hit, mix]
}

/// The `hit` case of [`Floor`] (wrapped in `M`), named `ideal-vec`.
pub fn floor_case<M: NewMap>(workload: &'static str) -> Case {
    cases_of::<M>(workload, "ideal-vec", "none")[0]
}

/// The `hit` case of [`IndexFloor`], named `scc-index`.
pub fn index_floor_case<M: NewMap>(workload: &'static str) -> Case {
    cases_of::<M>(workload, "scc-index", "none")[0]
}

/// The `hit_async` case of [`Floor`] (wrapped in `M`), named `ideal-vec`:
/// what the async harness itself costs per get-or-create (the task's
/// polling, the batch's spawn and wake-up), with no map behind it.
pub fn async_floor_case<M: AsyncMapOps>(workload: &'static str) -> Case {
    async_cases_of::<M>(workload, "ideal-vec", "none")[0]
}

/// The floor of `hit`, not a map: values in a `Vec` indexed by key index
/// (no hashing, no probing, no lock), cloned out like the maps' values. What
/// is left is the harness, the random index and the value's cache miss.
/// Only `hit` and `hit_async` use it ([`floor_case`],
/// [`async_floor_case`]).
///
/// Stored in scc's `HashIndex` instead, it is [`IndexFloor`].
pub struct Floor<V = std::sync::Arc<Payload>, S = Vec<V>>(S, std::marker::PhantomData<V>);

/// The floor of a hit on scc's `HashIndex`, the index latchfree's maps read
/// lock-free: the values under their keys (std's keyed SipHash), a
/// `peek_with` and a clone, and nothing else (no deadline, no access count,
/// no metrics). A hit on latchfree cannot cost less. Only `hit` uses it
/// ([`index_floor_case`]).
pub type IndexFloor<V = std::sync::Arc<Payload>> = Floor<V, scc::HashIndex<u64, V>>;

/// Where a floor keeps its values.
pub trait FloorStore<V>: Sized + Send + Sync + 'static {
    /// The [`ENTRIES`] values, each under its key.
    fn populated() -> Self;
    /// The tag of the value under `i`, cloned out.
    fn tag_of(&self, i: u64) -> Option<u64>;
    /// How many values it holds.
    fn count(&self) -> usize;
}

impl<V: Value> FloorStore<V> for Vec<V> {
    fn populated() -> Self {
        (0..ENTRIES)
            .map(|i| V::from_payload(Payload::new(i)))
            .collect()
    }

    fn tag_of(&self, i: u64) -> Option<u64> {
        let v = self.get(usize::try_from(i).ok()?)?;
        Some(v.clone().tag())
    }

    fn count(&self) -> usize {
        self.len()
    }
}

impl<V: Value> FloorStore<V> for scc::HashIndex<u64, V> {
    fn populated() -> Self {
        let index = scc::HashIndex::with_capacity(ENTRIES as usize);
        for i in 0..ENTRIES {
            let _ = index.insert_sync(i, V::from_payload(Payload::new(i)));
        }
        index
    }

    fn tag_of(&self, i: u64) -> Option<u64> {
        self.peek_with(&i, |_, v| v.clone().tag())
    }

    fn count(&self) -> usize {
        self.len()
    }
}

impl<V: Value, S: FloorStore<V>> NewMap for Floor<V, S> {
    const OPS: [&'static str; 3] = V::OPS;

    fn new_map(_: MapOp) -> Self {
        Self(S::populated(), std::marker::PhantomData)
    }
}

impl<V: Value, S: FloorStore<V>> MapOps for Floor<V, S> {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.tag_of(i)
    }

    /// The populated keys are there from the start; nothing else is asked.
    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        self.get(i).unwrap_or_else(|| init().index)
    }

    /// Not used: `hit` does not write.
    fn write(&self, _: u64, _: impl FnOnce() -> Payload) {}

    /// Not used: `hit` does not remove.
    fn remove(&self, _: u64) {}

    fn entries(&self) -> Option<usize> {
        Some(self.0.count())
    }
}

impl<V: Value, S: FloorStore<V>> AsyncMapOps for Floor<V, S> {
    /// Ready at once: the value read as [`MapOps::get_or_create`] reads it.
    fn get_or_create_async(
        &self,
        i: u64,
        init: impl FnOnce() -> Payload + Send,
    ) -> impl Future<Output = u64> + Send {
        std::future::ready(self.get_or_create(i, init))
    }
}

/// Every case of `implementations` (from [`cases_of`]), ordered by
/// operation, then implementation.
pub fn by_op<I: IntoIterator<Item = Case>>(
    implementations: impl IntoIterator<Item = I>,
) -> Vec<Case> {
    let mut cases: Vec<Case> = implementations.into_iter().flatten().collect();
    cases.sort_by_key(|c| OP_ORDER.iter().position(|op| *op == c.op));
    cases
}

/// The three operations of the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// `hit`.
    Hit,
    /// `mix_90_10`.
    Mix,
    /// `create_storm`.
    CreateStorm,
}

impl MapOp {
    /// Every operation, in bench order.
    pub const ALL: [Self; 3] = [Self::Hit, Self::Mix, Self::CreateStorm];

    /// Their names in the bench output, as in [`ALL`](Self::ALL).
    pub const NAMES: [&'static str; 3] = ["hit", "mix_90_10", "create_storm"];

    /// The operation's name in the bench output.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A xorshift64* generator: per worker, never shared.
#[derive(Clone, Copy, Debug)]
pub struct Rng(pub(crate) u64);

impl Rng {
    /// A generator for worker `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` for `n < 2^32` (Lemire's multiply-shift; no
    /// division).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

/// One worker's state and counts. Only that worker writes them (Relaxed
/// loads and stores, once per chunk); the runner reads them after joining
/// the workers.
#[derive(Debug, Default)]
struct Worker {
    rng: AtomicU64,
    /// `create_storm`: the next fresh key, relative to [`FRESH_BASE`].
    cursor: AtomicU64,
    lookups: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    creates: AtomicU64,
    /// Initialiser calls made on this worker.
    inits: AtomicU64,
    /// Values whose tag was not the key's.
    wrong: AtomicU64,
}

/// What one chunk counted, added to its worker's slot at the end.
#[derive(Default)]
struct Tally {
    lookups: u64,
    misses: u64,
    writes: u64,
    creates: u64,
    inits: u64,
    wrong: u64,
}

/// A [`Target`] running one [`MapOp`] on one [`MapOps`] implementation.
pub struct MapTarget<M> {
    map: M,
    op: MapOp,
    threads: u64,
    workers: Box<[CachePadded<Worker>]>,
    /// `create_storm`: the cursor every worker started the current slice at.
    slice_start: AtomicU64,
}

impl<M: MapOps> MapTarget<M> {
    /// Populates `map` with keys `0..ENTRIES` (untimed) and wraps it for `op`
    /// on `threads` workers.
    ///
    /// # Panics
    ///
    /// If the map does not hold exactly [`ENTRIES`] keys afterwards (where
    /// it counts them).
    pub fn new(map: M, op: MapOp, threads: usize) -> Self {
        for i in 0..ENTRIES {
            map.get_or_create(i, || Payload::new(i));
        }
        map.sync();
        if let Some(len) = map.entries() {
            assert_eq!(len as u64, ENTRIES, "populating the map");
        }
        let threads = threads.max(1);
        Self {
            map,
            op,
            threads: threads as u64,
            workers: (0..threads)
                .map(|t| {
                    let w = Worker::default();
                    w.rng.store(Rng::new(t as u64).0, Ordering::Relaxed);
                    CachePadded::new(w)
                })
                .collect(),
            slice_start: AtomicU64::new(0),
        }
    }

    fn sum(&self, field: impl Fn(&Worker) -> &AtomicU64) -> u64 {
        self.workers
            .iter()
            .map(|w| field(w).load(Ordering::Relaxed))
            .sum()
    }

    /// Looks up key `i`, counting a miss or a wrong value.
    #[inline]
    fn lookup(&self, i: u64, tally: &mut Tally) {
        tally.lookups += 1;
        match self.map.get(i) {
            Some(tag) => tally.wrong += u64::from(tag != i),
            None => tally.misses += 1,
        }
    }
}

impl<M: MapOps> MapTarget<M> {
    /// Worker `thread`'s slot, generator and an empty tally.
    fn begin(&self, thread: usize) -> (&Worker, Rng, Tally) {
        let worker = &self.workers[thread];
        (
            worker,
            Rng(worker.rng.load(Ordering::Relaxed)),
            Tally::default(),
        )
    }

    /// The fresh keys of `worker`'s next `n` `create_storm` operations,
    /// moving its cursor past them.
    fn storm_keys(worker: &Worker, n: u64, tally: &mut Tally) -> std::ops::Range<u64> {
        let start = worker.cursor.load(Ordering::Relaxed);
        worker.cursor.store(start + n, Ordering::Relaxed);
        tally.creates += n;
        FRESH_BASE + start..FRESH_BASE + start + n
    }

    /// Adds one batch's `tally` to `worker`'s slot.
    fn end(worker: &Worker, rng: Rng, tally: &Tally) {
        worker.rng.store(rng.0, Ordering::Relaxed);
        let add = |slot: &AtomicU64, v: u64| {
            if v != 0 {
                slot.store(slot.load(Ordering::Relaxed) + v, Ordering::Relaxed);
            }
        };
        add(&worker.lookups, tally.lookups);
        add(&worker.misses, tally.misses);
        add(&worker.writes, tally.writes);
        add(&worker.creates, tally.creates);
        add(&worker.inits, tally.inits);
        add(&worker.wrong, tally.wrong);
    }
}

impl<M: AsyncMapOps> AsyncTarget for MapTarget<M> {
    /// As [`Target::run`], through [`AsyncMapOps::get_or_create_async`]:
    /// `hit` gets-or-creates present keys (the initialiser must never run),
    /// `create_storm` walks the fresh keys as the blocking op does.
    async fn run_async(&self, thread: usize, n: u64) {
        let (worker, mut rng, mut tally) = self.begin(thread);
        let keys = match self.op {
            MapOp::CreateStorm => Self::storm_keys(worker, n, &mut tally),
            MapOp::Hit | MapOp::Mix => 0..n,
        };
        for k in keys {
            let i = match self.op {
                MapOp::CreateStorm => k,
                MapOp::Hit | MapOp::Mix => {
                    tally.lookups += 1;
                    rng.below(ENTRIES)
                }
            };
            let inits = &mut tally.inits;
            let tag = self
                .map
                .get_or_create_async(i, move || {
                    *inits += 1;
                    Payload::new(i)
                })
                .await;
            tally.wrong += u64::from(black_box(tag) != i);
        }
        Self::end(worker, rng, &tally);
    }
}

impl<M: MapOps> Target for MapTarget<M> {
    fn run(&self, thread: usize, n: u64) {
        let (worker, mut rng, mut tally) = self.begin(thread);
        match self.op {
            MapOp::Hit => {
                for _ in 0..n {
                    self.lookup(rng.below(ENTRIES), &mut tally);
                }
            }
            MapOp::Mix => {
                let share = ENTRIES / self.threads;
                for _ in 0..n {
                    if rng.below(10) == 0 {
                        let i = rng.below(share) * self.threads + thread as u64;
                        tally.writes += 1;
                        self.map.write(i, || {
                            tally.inits += 1;
                            Payload::new(i)
                        });
                    } else {
                        self.lookup(rng.below(ENTRIES), &mut tally);
                    }
                }
            }
            MapOp::CreateStorm => {
                for i in Self::storm_keys(worker, n, &mut tally) {
                    let tag = self.map.get_or_create(i, || {
                        tally.inits += 1;
                        Payload::new(i)
                    });
                    tally.wrong += u64::from(black_box(tag) != i);
                }
            }
        }
        Self::end(worker, rng, &tally);
    }

    fn settle(&self) {
        if self.op != MapOp::CreateStorm {
            return;
        }
        let start = self.slice_start.load(Ordering::Relaxed);
        let furthest = self
            .workers
            .iter()
            .map(|w| w.cursor.load(Ordering::Relaxed))
            .max();
        let furthest = furthest.unwrap_or(start);
        for c in start..furthest {
            self.map.remove(FRESH_BASE + c);
        }
        self.map.sync();
        for w in self.workers.iter() {
            w.cursor.store(furthest, Ordering::Relaxed);
        }
        self.slice_start.store(furthest, Ordering::Relaxed);
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let lookups = self.sum(|w| &w.lookups);
        let writes = self.sum(|w| &w.writes);
        let creates = self.sum(|w| &w.creates);
        let inits = self.sum(|w| &w.inits);
        let misses = self.sum(|w| &w.misses);
        self.map.sync();
        let check = || -> Result<(), String> {
            expect_eq("operations", lookups + writes + creates, total_ops)?;
            expect_eq("wrong values", self.sum(|w| &w.wrong), 0)?;
            match self.op {
                MapOp::Hit => {
                    expect_eq("misses", misses, 0)?;
                    expect_eq("initialiser calls", inits, 0)?;
                }
                MapOp::Mix => {
                    if M::WRITE_IS_ATOMIC {
                        expect_eq("misses", misses, 0)?;
                    }
                    expect_eq("initialiser calls", inits, writes)?;
                }
                MapOp::CreateStorm => {
                    // After the last settle every cursor is at the furthest
                    // key walked: every key below it was created once.
                    let distinct = self.slice_start.load(Ordering::Relaxed);
                    if M::INIT_EXACTLY_ONCE {
                        expect_eq("initialiser calls (distinct keys)", inits, distinct)?;
                    } else if inits < distinct {
                        return Err(format!(
                            "initialiser calls: {inits}, fewer than the {distinct} distinct keys"
                        ));
                    }
                }
            }
            if let Some(len) = self.map.entries() {
                expect_eq("entries", len as u64, ENTRIES)?;
            }
            Ok(())
        };
        Some(check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// A correct mutex map.
    #[derive(Default)]
    struct Plain {
        map: Mutex<HashMap<u64, Arc<Payload>>>,
    }

    impl MapOps for Plain {
        const WRITE_IS_ATOMIC: bool = true;
        fn get(&self, i: u64) -> Option<u64> {
            self.map.lock().unwrap().get(&i).map(|v| v.index)
        }
        fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
            let mut map = self.map.lock().unwrap();
            map.entry(i).or_insert_with(|| Arc::new(init())).index
        }
        fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
            self.map.lock().unwrap().insert(i, Arc::new(init()));
        }
        fn remove(&self, i: u64) {
            self.map.lock().unwrap().remove(&i);
        }
        fn entries(&self) -> Option<usize> {
            Some(self.map.lock().unwrap().len())
        }
    }

    struct Racy(Plain);

    impl MapOps for Racy {
        const WRITE_IS_ATOMIC: bool = true;
        fn get(&self, i: u64) -> Option<u64> {
            self.0.get(i)
        }
        fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
            // Check-then-act: two workers may both create.
            if let Some(tag) = self.get(i) {
                return tag;
            }
            std::thread::yield_now();
            let v = init();
            let tag = v.index;
            self.0.map.lock().unwrap().insert(i, Arc::new(v));
            tag
        }
        fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
            self.0.write(i, init);
        }
        fn remove(&self, i: u64) {
            self.0.remove(i);
        }
        fn entries(&self) -> Option<usize> {
            self.0.entries()
        }
    }

    impl NewMap for Plain {
        fn new_map(_: MapOp) -> Self {
            Self::default()
        }
    }

    impl NewMap for Racy {
        fn new_map(_: MapOp) -> Self {
            Self(Plain::default())
        }
    }

    /// Runs `cases` at 4 threads; the exactness check of each row.
    fn checks(cases: Vec<Case>) -> Vec<Result<(), String>> {
        let plan = super::super::Plan {
            threads: vec![4],
            duration: std::time::Duration::from_millis(60),
            rounds: 3,
        };
        super::super::run(&cases, &plan, |_| {})
            .into_iter()
            .map(|row| match row.exact {
                Some(true) => Ok(()),
                _ => Err(row.exact_detail.unwrap_or_default()),
            })
            .collect()
    }

    #[test]
    fn every_op_is_exact_on_a_correct_map() {
        let cases = by_op([cases_of::<Plain>("t", "plain", "-")]);
        let ops: Vec<&str> = cases.iter().map(|c| c.op).collect();
        assert_eq!(ops, ["hit", "mix_90_10", "create_storm"]);
        assert_eq!(checks(cases), [Ok(()), Ok(()), Ok(())]);
    }

    impl AsyncMapOps for Plain {
        async fn get_or_create_async(&self, i: u64, init: impl FnOnce() -> Payload + Send) -> u64 {
            self.get_or_create(i, init)
        }
    }

    #[test]
    fn async_ops_run_on_the_runtime_and_are_exact() {
        let cases = by_op([async_cases_of::<Plain>("t", "plain", "-")]);
        let ops: Vec<&str> = cases.iter().map(|c| c.op).collect();
        assert_eq!(ops, ASYNC_OPS);
        assert_eq!(checks(cases), [Ok(()), Ok(())]);
    }

    #[test]
    fn create_storm_catches_check_then_act() {
        let storm = cases_of::<Racy>("t", "racy", "-")[2];
        assert_eq!(storm.op, "create_storm");
        let [Err(err)] = &checks(vec![storm])[..] else {
            panic!("duplicate creations expected")
        };
        assert!(err.starts_with("initialiser calls"), "{err}");
    }

    #[test]
    fn rng_below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(3);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
