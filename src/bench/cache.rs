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
//! `ideal-vec` (`hit` only) is the floor, not a cache: the values in a `Vec`
//! indexed by key ([`Floor`]).
//!
//! Every implementation that expires entries is configured with a one-hour
//! time to live, so a hit checks the deadline; `quick_cache` and `dashmap`
//! have no TTL (`guarantee` `no-ttl`): they do less work per hit. The bounded
//! caches are sized by [`capacity`]: twice `ENTRIES` for `hit` and
//! `mix_90_10` (nothing is evicted: a miss would fail the exactness check),
//! far above one slice's fresh keys for `create_storm`. Values are
//! `Arc<Payload>` (64 bytes), cloned out on every hit by every
//! implementation but `latchfree-with`, which reads the value in place.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::Case;
use super::map::{
    Floor, MapOp, MapOps, NewMap, Payload, by_op, capacity, cases_of, floor_case, read_cases_of,
};
use crate::baseline::LockedTtlCache;
use crate::cache::TtlCache;

/// The time to live of every implementation that expires entries.
pub const TTL: Duration = Duration::from_secs(60 * 60);

/// Every case of the `cache` workload.
pub fn cases() -> Vec<Case> {
    by_op([
        cases_of::<Latchfree>("cache", "latchfree", "ttl").to_vec(),
        read_cases_of::<LatchfreeWith>("cache", "latchfree-with", "ttl"),
        cases_of::<Locked>("cache", "locked", "ttl").to_vec(),
        cases_of::<Moka>("cache", "moka", "ttl").to_vec(),
        cases_of::<Quick>("cache", "quick_cache", "no-ttl").to_vec(),
        cases_of::<Dash>("cache", "dashmap", "no-ttl").to_vec(),
        vec![floor_case::<Floor>("cache")],
    ])
}

/// latchfree's [`TtlCache`] (default sweeper).
struct Latchfree(TtlCache<u64, Arc<Payload>>);

impl NewMap for Latchfree {
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

impl MapOps for Latchfree {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|v| v.index)
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        self.0
            .get_or_load(i, || Arc::new(init()))
            .expect("loads do not fail below the bound")
            .index
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, Arc::new(init()));
    }

    fn remove(&self, i: u64) {
        self.0.invalidate(&i);
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// latchfree read through [`TtlCache::with`]: no clone of the value (no
/// reference-count write) on a hit.
struct LatchfreeWith(Latchfree);

impl NewMap for LatchfreeWith {
    fn new_map(op: MapOp) -> Self {
        Self(Latchfree::new_map(op))
    }
}

impl MapOps for LatchfreeWith {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.0.with(&i, |v| v.index)
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
struct Locked(LockedTtlCache<u64, Arc<Payload>>);

impl NewMap for Locked {
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

impl MapOps for Locked {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|v| v.index)
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        self.0
            .get_or_load(i, || Arc::new(init()))
            .expect("the locked twin's loads do not fail")
            .index
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, Arc::new(init()));
    }

    fn remove(&self, i: u64) {
        self.0.invalidate(&i);
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// moka's `sync::Cache` with a time to live.
struct Moka(moka::sync::Cache<u64, Arc<Payload>>);

impl NewMap for Moka {
    fn new_map(op: MapOp) -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(capacity(op))
                .time_to_live(TTL)
                .build(),
        )
    }
}

impl MapOps for Moka {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|v| v.index)
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        self.0.get_with(i, || Arc::new(init())).index
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, Arc::new(init()));
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

/// quick_cache's `sync::Cache` (S3-FIFO, no TTL).
struct Quick(quick_cache::sync::Cache<u64, Arc<Payload>>);

impl NewMap for Quick {
    fn new_map(op: MapOp) -> Self {
        Self(quick_cache::sync::Cache::new(capacity(op) as usize))
    }
}

impl MapOps for Quick {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|v| v.index)
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        match self
            .0
            .get_or_insert_with(&i, || Ok::<_, std::convert::Infallible>(Arc::new(init())))
        {
            Ok(v) => v.index,
            Err(never) => match never {},
        }
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, Arc::new(init()));
    }

    fn remove(&self, i: u64) {
        self.0.remove(&i);
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// dashmap: a concurrent map with no expiry and no bound, for reference.
struct Dash(DashMap<u64, Arc<Payload>>);

impl NewMap for Dash {
    fn new_map(_: MapOp) -> Self {
        Self(DashMap::new())
    }
}

impl MapOps for Dash {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        self.0.get(&i).map(|r| Arc::clone(&r).index)
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        match self.0.get(&i) {
            Some(r) => Arc::clone(&r).index,
            None => Arc::clone(&self.0.entry(i).or_insert_with(|| Arc::new(init()))).index,
        }
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.0.insert(i, Arc::new(init()));
    }

    fn remove(&self, i: u64) {
        self.0.remove(&i);
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}
