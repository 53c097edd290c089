//! The `cache` workload: [`ENTRIES`](super::map::ENTRIES) cached values under `u64` keys, under
//! the three operations of [`map`](super::map) (`hit`, `mix_90_10`, `create_storm` as
//! single-flight loads of fresh keys).
//!
//! | impl | lookup | get-or-load | write | expiry | exactly-once load |
//! |---|---|---|---|---|---|
//! | `latchfree` | [`TtlCache::get`] (lock-free) | `get_or_load` (single-flight) | `insert` | TTL | yes |
//! | `latchfree-with` | [`TtlCache::with`] (no clone; `hit` and `mix_90_10` only) | as `latchfree` | `insert` | TTL | yes |
//! | `locked` | [`LockedTtlCache::get`] | `get_or_load` (loader under the mutex) | `insert` | TTL | yes |
//! | `moka` | `sync::Cache::get` | `get_with` | `insert` | `time_to_live` | yes (moka coalesces concurrent `get_with`) |
//! | `quick_cache` | `sync::Cache::get` | `get_or_insert_with` | `insert` | none | yes while resident (waiters wait on the loader's guard) |
//! | `dashmap` | `DashMap::get` | `get`, then `entry(k).or_insert_with` | `insert` | none | yes (the entry holds its shard's write lock) |
//!
//! `ideal-vec` (`hit`, `hit_u64` and `hit_async` only) is the floor, not a
//! cache: the values in a `Vec` indexed by key ([`Floor`]). In `hit_async`
//! it is what the async harness costs with no cache behind it; subtract it
//! to compare the caches' own async hit paths.
//!
//! `scc-index` (`hit` and `hit_u64` only) is the floor of latchfree's hit:
//! the values in scc's `HashIndex`, the index latchfree reads lock-free,
//! with std's keyed hasher, read by `peek_with` and nothing more
//! ([`IndexFloor`]). The gap between it and `latchfree` is what latchfree
//! adds on a hit (deadline, access count, metrics); the gap between it and
//! `quick_cache` is the index's.
//!
//! Every implementation that expires entries is configured with a one-hour
//! time to live, so a hit checks the deadline; `quick_cache` and `dashmap`
//! have no TTL (`guarantee` `no-ttl`): they do less work per hit. The bounded
//! caches are sized by [`capacity`]: twice `ENTRIES` for `hit` and
//! `mix_90_10` (nothing is evicted: a miss would fail the exactness check),
//! far above one slice's fresh keys for `create_storm`.
//!
//! Values are `Arc<Payload>` (64 bytes, what a cache in front of expensive
//! work holds), cloned out on every hit by every implementation but
//! `latchfree-with`, which reads the value in place: each clone is a
//! reference-count increment and decrement on the value's cache line. The
//! `hit_u64` and `mix_90_10_u64` ops run the same implementations holding
//! bare `u64` values (a copy per hit, nothing shared written), the setting
//! of the reference figures in the crate's design notes.
//!
//! # Async rows
//!
//! `hit_async` and `create_storm_async` are `hit` and `create_storm` through
//! each cache's async get-or-load, the loader a future: latchfree's
//! [`TtlCache::get_or_load_async`], moka's `future::Cache::get_with` (with a
//! time to live) and quick_cache's `sync::Cache::get_or_insert_async` (the
//! async form its docs give for the same cache). A `hit_async` is a
//! get-or-load of a present key (its loader must never run); a
//! `create_storm_async` walks the fresh keys as `create_storm` does, with
//! the same exactly-once check.
//!
//! Each case owns a tokio multi-thread runtime of
//! [`ASYNC_WORKERS`](super::ASYNC_WORKERS) workers ([`OnRuntime`](super::OnRuntime)):
//! each bench thread spawns its batch of operations as one task on it and
//! blocks until the task completes, so the operations run on the runtime's
//! two workers and `threads` is the number of tasks at once. A task that
//! joins another's load awaits it, and its worker runs other tasks
//! meanwhile. Each batch (grown by the runner to at least 1 ms) pays one
//! spawn and one cross-thread wake-up, the same for every implementation.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::Case;
use super::map::{
    AsyncMapOps, Floor, IndexFloor, MapOp, MapOps, NewMap, Payload, Value, async_cases_of,
    async_floor_case, by_op, capacity, cases_of, floor_case, index_floor_case, read_cases_of,
};
use latchfree::baseline::LockedTtlCache;
use latchfree::cache::TtlCache;

/// The time to live of every implementation that expires entries.
pub const TTL: Duration = Duration::from_secs(60 * 60);

/// Every case of the `cache` workload.
pub fn cases() -> Vec<Case> {
    type ArcValue = Arc<Payload>;
    by_op([
        cases_of::<Latchfree<ArcValue>>("cache", "latchfree", "ttl").to_vec(),
        read_cases_of::<LatchfreeWith<ArcValue>>("cache", "latchfree-with", "ttl"),
        cases_of::<Locked<ArcValue>>("cache", "locked", "ttl").to_vec(),
        cases_of::<Moka<ArcValue>>("cache", "moka", "ttl").to_vec(),
        cases_of::<Quick<ArcValue>>("cache", "quick_cache", "no-ttl").to_vec(),
        cases_of::<Dash<ArcValue>>("cache", "dashmap", "no-ttl").to_vec(),
        vec![floor_case::<Floor>("cache")],
        vec![index_floor_case::<IndexFloor>("cache")],
        read_cases_of::<Latchfree<u64>>("cache", "latchfree", "ttl"),
        read_cases_of::<Locked<u64>>("cache", "locked", "ttl"),
        read_cases_of::<Moka<u64>>("cache", "moka", "ttl"),
        read_cases_of::<Quick<u64>>("cache", "quick_cache", "no-ttl"),
        read_cases_of::<Dash<u64>>("cache", "dashmap", "no-ttl"),
        vec![floor_case::<Floor<u64>>("cache")],
        vec![index_floor_case::<IndexFloor<u64>>("cache")],
        async_cases_of::<Latchfree<ArcValue>>("cache", "latchfree", "ttl").to_vec(),
        async_cases_of::<MokaFuture<ArcValue>>("cache", "moka", "ttl").to_vec(),
        async_cases_of::<Quick<ArcValue>>("cache", "quick_cache", "no-ttl").to_vec(),
        vec![async_floor_case::<Floor>("cache")],
    ])
}

/// latchfree's [`TtlCache`] (default sweeper).
struct Latchfree<V>(TtlCache<u64, V>);

impl<V: Value> NewMap for Latchfree<V> {
    const OPS: [&'static str; 3] = V::OPS;

    fn new_map(op: MapOp) -> Self {
        Self(
            TtlCache::builder()
                .time_to_live(TTL)
                .max_entries(capacity(op) as usize)
                .build()
                .expect("valid settings"),
        )
    }
}

impl<V: Value> MapOps for Latchfree<V> {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|v| v.tag())
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        self.0
            .get_or_load(i, || V::from_payload(init()))
            .expect("loads do not fail below the bound")
            .tag()
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, V::from_payload(init())).unwrap();
    }

    fn remove(&self, i: u64) {
        self.0.invalidate(&i);
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

impl<V: Value> AsyncMapOps for Latchfree<V> {
    async fn get_or_create_async(&self, i: u64, init: impl FnOnce() -> Payload + Send) -> u64 {
        self.0
            .get_or_load_async(i, async { V::from_payload(init()) })
            .await
            .expect("loads do not fail below the bound")
            .tag()
    }
}

/// latchfree read through [`TtlCache::with`]: no clone of the value (no
/// reference-count write) on a hit.
struct LatchfreeWith<V>(Latchfree<V>);

impl<V: Value> NewMap for LatchfreeWith<V> {
    const OPS: [&'static str; 3] = V::OPS;

    fn new_map(op: MapOp) -> Self {
        Self(Latchfree::new_map(op))
    }
}

impl<V: Value> MapOps for LatchfreeWith<V> {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.0.with(&i, V::tag)
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        self.0.get_or_create(i, init)
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

/// The locked twin.
struct Locked<V>(LockedTtlCache<u64, V>);

impl<V: Value> NewMap for Locked<V> {
    const OPS: [&'static str; 3] = V::OPS;

    fn new_map(op: MapOp) -> Self {
        Self(
            LockedTtlCache::builder()
                .time_to_live(TTL)
                .max_entries(capacity(op) as usize)
                .build()
                .expect("valid settings"),
        )
    }
}

impl<V: Value> MapOps for Locked<V> {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|v| v.tag())
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        self.0
            .get_or_load(i, || V::from_payload(init()))
            .expect("the locked twin's loads do not fail")
            .tag()
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, V::from_payload(init())).unwrap();
    }

    fn remove(&self, i: u64) {
        self.0.invalidate(&i);
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// moka's `sync::Cache` with a time to live.
struct Moka<V>(moka::sync::Cache<u64, V>);

impl<V: Value> NewMap for Moka<V> {
    const OPS: [&'static str; 3] = V::OPS;

    fn new_map(op: MapOp) -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(capacity(op))
                .time_to_live(TTL)
                .build(),
        )
    }
}

impl<V: Value> MapOps for Moka<V> {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|v| v.tag())
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        self.0.get_with(i, || V::from_payload(init())).tag()
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, V::from_payload(init()));
    }

    fn remove(&self, i: u64) {
        self.0.invalidate(&i);
    }

    fn entries(&self) -> Option<usize> {
        // Exact once pending tasks have run (`sync`).
        usize::try_from(self.0.entry_count()).ok()
    }

    fn sync(&self) {
        self.0.run_pending_tasks();
    }
}

/// moka's `future::Cache` with a time to live: the async rows. Its
/// maintenance calls (population, removal between slices) block on their
/// futures, outside the timed region.
struct MokaFuture<V>(moka::future::Cache<u64, V>);

impl<V: Value> NewMap for MokaFuture<V> {
    fn new_map(op: MapOp) -> Self {
        Self(
            moka::future::Cache::builder()
                .max_capacity(capacity(op))
                .time_to_live(TTL)
                .build(),
        )
    }
}

impl<V: Value> MapOps for MokaFuture<V> {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        futures::executor::block_on(self.0.get(&i)).map(|v| v.tag())
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        let load = async { V::from_payload(init()) };
        futures::executor::block_on(self.0.get_with(i, load)).tag()
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        futures::executor::block_on(self.0.insert(i, V::from_payload(init())));
    }

    fn remove(&self, i: u64) {
        futures::executor::block_on(self.0.invalidate(&i));
    }

    fn entries(&self) -> Option<usize> {
        // Exact once pending tasks have run (`sync`).
        usize::try_from(self.0.entry_count()).ok()
    }

    fn sync(&self) {
        futures::executor::block_on(self.0.run_pending_tasks());
    }
}

impl<V: Value> AsyncMapOps for MokaFuture<V> {
    async fn get_or_create_async(&self, i: u64, init: impl FnOnce() -> Payload + Send) -> u64 {
        self.0
            .get_with(i, async { V::from_payload(init()) })
            .await
            .tag()
    }
}

/// quick_cache's `sync::Cache` (S3-FIFO, no TTL).
struct Quick<V>(quick_cache::sync::Cache<u64, V>);

impl<V: Value> NewMap for Quick<V> {
    const OPS: [&'static str; 3] = V::OPS;

    fn new_map(op: MapOp) -> Self {
        Self(quick_cache::sync::Cache::new(capacity(op) as usize))
    }
}

impl<V: Value> MapOps for Quick<V> {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|v| v.tag())
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        match self.0.get_or_insert_with(&i, || {
            Ok::<_, std::convert::Infallible>(V::from_payload(init()))
        }) {
            Ok(v) => v.tag(),
            Err(never) => match never {},
        }
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, V::from_payload(init()));
    }

    fn remove(&self, i: u64) {
        self.0.remove(&i);
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

impl<V: Value> AsyncMapOps for Quick<V> {
    async fn get_or_create_async(&self, i: u64, init: impl FnOnce() -> Payload + Send) -> u64 {
        let load = async { Ok::<_, std::convert::Infallible>(V::from_payload(init())) };
        match self.0.get_or_insert_async(&i, load).await {
            Ok(v) => v.tag(),
            Err(never) => match never {},
        }
    }
}

/// dashmap: a concurrent map with no expiry and no bound, for reference.
struct Dash<V>(DashMap<u64, V>);

impl<V: Value> NewMap for Dash<V> {
    const OPS: [&'static str; 3] = V::OPS;

    fn new_map(_: MapOp) -> Self {
        Self(DashMap::new())
    }
}

impl<V: Value> MapOps for Dash<V> {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|r| r.clone().tag())
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        match self.0.get(&i) {
            Some(r) => r.clone().tag(),
            None => self
                .0
                .entry(i)
                .or_insert_with(|| V::from_payload(init()))
                .clone()
                .tag(),
        }
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, V::from_payload(init()));
    }

    fn remove(&self, i: u64) {
        self.0.remove(&i);
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}
