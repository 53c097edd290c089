//! The `sessions` workload: [`ENTRIES`] sessions keyed
//! by 32-hex-digit id strings, under the three operations of [`map`](super::map)
//! (`hit`, `mix_90_10`, `create_storm`).
//!
//! | impl | lookup | get-or-create | expiry | exactly-once |
//! |---|---|---|---|---|
//! | `latchfree` | [`SessionRegistry::get`] (lock-free) | single-flight: one initialiser, the other callers sleep on it | idle timeout | yes |
//! | `latchfree-with` | [`SessionRegistry::with`] (no `Arc` clone; `hit` and `mix_90_10` only) | as `latchfree` | idle timeout | yes |
//! | `locked` | [`LockedSessionRegistry::get`] (read lock) | double-checked locking, init under the write lock | idle timeout | yes |
//! | `dashmap` | `DashMap::get` | `get`, then `entry(id).or_insert_with` | none | yes (the entry holds its shard's write lock) |
//! | `moka` | `sync::Cache::get` | `get_with_by_ref` | `time_to_idle` | yes (moka coalesces concurrent `get_with`) |
//! | `scc` | `scc::HashMap::read_sync` (shared bucket lock) | `read_sync`, then `entry_sync(id).or_insert_with` | none | yes (the entry holds its bucket's lock) |
//! | `papaya` | `papaya::HashMap::pin().get` (lock-free) | `get`, then `get_or_insert_with` | none | no: racing callers may each run `init`; one value is kept and every caller gets it |
//!
//! `ideal-vec` (`hit` only) is the floor, not a registry: the values in a
//! `Vec` indexed by session number, plus one pass over the id's bytes
//! ([`Floor`]).
//!
//! Every implementation that expires sessions is configured with a 30-minute
//! idle timeout, so a hit checks the deadline and (where the design keeps
//! one) stamps the last access; `dashmap` does neither (its `guarantee` says
//! `no-expiry`). A write (10 % of `mix_90_10`) ends a session and opens it
//! again: a remove, then a get-or-create of the same id.
//!
//! Ids of the populated sessions are precomputed; the fresh ids of
//! `create_storm` are formatted into a stack buffer, the same for every
//! implementation. Values are `Arc<Payload>` (64 bytes).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;

use super::Case;
use super::map::{
    ENTRIES, Floor, MapOp, MapOps, NewMap, Payload, by_op, capacity, cases_of, floor_case,
    read_cases_of,
};
use latchfree::baseline::LockedSessionRegistry;
use latchfree::session::SessionRegistry;

/// The idle timeout of every implementation that expires sessions.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Length of a session id.
pub const ID_LEN: usize = 32;

/// Writes the id of session `i` (32 lowercase hex digits, scrambled so that
/// neighbouring indices share no prefix) into `buf`.
pub fn write_id(i: u64, buf: &mut [u8; ID_LEN]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mix = |x: u64| {
        let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    // The low half is `i` itself, so distinct indices give distinct ids.
    let words = [mix(i.wrapping_add(0x9E37_79B9_7F4A_7C15)), i];
    for (w, word) in words.iter().enumerate() {
        for d in 0..16 {
            buf[w * 16 + d] = HEX[((word >> (60 - 4 * d)) & 0xf) as usize];
        }
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(buf).unwrap_or_default()
}

/// Calls `f` with the id of session `i`: precomputed (in one contiguous
/// buffer) for the populated sessions, formatted into a stack buffer for
/// fresh ones.
#[inline]
pub fn with_id<R>(i: u64, f: impl FnOnce(&str) -> R) -> R {
    static IDS: OnceLock<Box<str>> = OnceLock::new();
    let ids = IDS.get_or_init(|| {
        let mut all = String::with_capacity(ENTRIES as usize * ID_LEN);
        for i in 0..ENTRIES {
            all.push_str(write_id(i, &mut [0; ID_LEN]));
        }
        all.into()
    });
    let at = (i as usize).wrapping_mul(ID_LEN);
    match ids.get(at..at.wrapping_add(ID_LEN)) {
        Some(id) if i < ENTRIES => f(id),
        _ => f(write_id(i, &mut [0; ID_LEN])),
    }
}

/// Every case of the `sessions` workload.
pub fn cases() -> Vec<Case> {
    by_op([
        cases_of::<Latchfree>("sessions", "latchfree", "idle-expiry").to_vec(),
        read_cases_of::<LatchfreeWith>("sessions", "latchfree-with", "idle-expiry"),
        cases_of::<Locked>("sessions", "locked", "idle-expiry").to_vec(),
        cases_of::<Dash>("sessions", "dashmap", "no-expiry").to_vec(),
        cases_of::<Moka>("sessions", "moka", "idle-expiry").to_vec(),
        cases_of::<Scc>("sessions", "scc", "no-expiry").to_vec(),
        cases_of::<Papaya>("sessions", "papaya", "no-expiry, init-may-repeat").to_vec(),
        vec![floor_case::<FloorWithId>("sessions")],
    ])
}

/// latchfree's [`SessionRegistry`] (default sweeper).
struct Latchfree(SessionRegistry<Payload>);

impl NewMap for Latchfree {
    fn new_map(op: MapOp) -> Self {
        Self(
            SessionRegistry::builder()
                .idle_timeout(IDLE_TIMEOUT)
                .max_sessions(capacity(op) as usize)
                .build()
                .expect("valid settings"),
        )
    }
}

impl MapOps for Latchfree {
    const WRITE_IS_ATOMIC: bool = false;

    fn get(&self, i: u64) -> Option<u64> {
        with_id(i, |id| self.0.get(id).map(|s| s.index))
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        with_id(i, |id| self.0.get_or_create(id, init))
            .expect("valid id, below the bound")
            .index
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.remove(i);
        self.get_or_create(i, init);
    }

    fn remove(&self, i: u64) {
        with_id(i, |id| self.0.remove(id));
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// latchfree read through [`SessionRegistry::with`]: no `Arc` clone (no
/// reference-count write) on a hit.
struct LatchfreeWith(Latchfree);

impl NewMap for LatchfreeWith {
    fn new_map(op: MapOp) -> Self {
        Self(Latchfree::new_map(op))
    }
}

impl MapOps for LatchfreeWith {
    const WRITE_IS_ATOMIC: bool = false;

    fn get(&self, i: u64) -> Option<u64> {
        with_id(i, |id| self.0.0.with(id, |s| s.index))
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

/// The floor of `hit` ([`Floor`]) plus reading the session's id, as every
/// map does to hash it.
struct FloorWithId(Floor);

impl NewMap for FloorWithId {
    fn new_map(op: MapOp) -> Self {
        Self(Floor::new_map(op))
    }
}

impl MapOps for FloorWithId {
    const WRITE_IS_ATOMIC: bool = true;

    fn get(&self, i: u64) -> Option<u64> {
        // One pass over the id's bytes, like a hash function's.
        std::hint::black_box(with_id(i, |id| id.bytes().fold(0u8, u8::wrapping_add)));
        self.0.get(i)
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
struct Locked(LockedSessionRegistry<Payload>);

impl NewMap for Locked {
    fn new_map(op: MapOp) -> Self {
        Self(
            LockedSessionRegistry::builder()
                .idle_timeout(IDLE_TIMEOUT)
                .max_sessions(capacity(op) as usize)
                .build()
                .expect("valid settings"),
        )
    }
}

impl MapOps for Locked {
    const WRITE_IS_ATOMIC: bool = false;

    fn get(&self, i: u64) -> Option<u64> {
        with_id(i, |id| self.0.get(id).map(|s| s.index))
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        with_id(i, |id| self.0.get_or_create(id, init))
            .expect("valid id, below the bound")
            .index
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.remove(i);
        self.get_or_create(i, init);
    }

    fn remove(&self, i: u64) {
        with_id(i, |id| self.0.remove(id));
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// dashmap: `get`, then the entry API on a miss.
struct Dash(DashMap<String, Arc<Payload>>);

impl NewMap for Dash {
    fn new_map(_: MapOp) -> Self {
        Self(DashMap::new())
    }
}

impl MapOps for Dash {
    const WRITE_IS_ATOMIC: bool = false;

    fn get(&self, i: u64) -> Option<u64> {
        with_id(i, |id| self.0.get(id).map(|r| Arc::clone(&r).index))
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        with_id(i, |id| match self.0.get(id) {
            Some(r) => Arc::clone(&r).index,
            None => {
                Arc::clone(
                    &self
                        .0
                        .entry(id.to_owned())
                        .or_insert_with(|| Arc::new(init())),
                )
                .index
            }
        })
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.remove(i);
        self.get_or_create(i, init);
    }

    fn remove(&self, i: u64) {
        with_id(i, |id| self.0.remove(id));
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// scc's `HashMap`: `read_sync`, then the entry API on a miss.
struct Scc(scc::HashMap<String, Arc<Payload>>);

impl NewMap for Scc {
    fn new_map(_: MapOp) -> Self {
        Self(scc::HashMap::new())
    }
}

impl MapOps for Scc {
    const WRITE_IS_ATOMIC: bool = false;

    fn get(&self, i: u64) -> Option<u64> {
        with_id(i, |id| self.0.read_sync(id, |_, v| v.index))
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        with_id(i, |id| match self.0.read_sync(id, |_, v| v.index) {
            Some(index) => index,
            None => {
                self.0
                    .entry_sync(id.to_owned())
                    .or_insert_with(|| Arc::new(init()))
                    .get()
                    .index
            }
        })
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.remove(i);
        self.get_or_create(i, init);
    }

    fn remove(&self, i: u64) {
        with_id(i, |id| self.0.remove_sync(id));
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// papaya's lock-free `HashMap`: `get`, then `get_or_insert_with` on a miss.
struct Papaya(papaya::HashMap<String, Arc<Payload>>);

impl NewMap for Papaya {
    fn new_map(_: MapOp) -> Self {
        Self(papaya::HashMap::new())
    }
}

impl MapOps for Papaya {
    const WRITE_IS_ATOMIC: bool = false;
    const INIT_EXACTLY_ONCE: bool = false;

    fn get(&self, i: u64) -> Option<u64> {
        with_id(i, |id| self.0.pin().get(id).map(|v| v.index))
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        with_id(i, |id| {
            let map = self.0.pin();
            match map.get(id) {
                Some(v) => v.index,
                None => {
                    map.get_or_insert_with(id.to_owned(), || Arc::new(init()))
                        .index
                }
            }
        })
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.remove(i);
        self.get_or_create(i, init);
    }

    fn remove(&self, i: u64) {
        with_id(i, |id| {
            self.0.pin().remove(id);
        });
    }

    fn entries(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// moka's `sync::Cache` with an idle timeout, `get_with_by_ref` to create.
struct Moka(moka::sync::Cache<String, Arc<Payload>>);

impl NewMap for Moka {
    fn new_map(_: MapOp) -> Self {
        Self(
            moka::sync::Cache::builder()
                .time_to_idle(IDLE_TIMEOUT)
                .build(),
        )
    }
}

impl MapOps for Moka {
    const WRITE_IS_ATOMIC: bool = false;

    fn get(&self, i: u64) -> Option<u64> {
        with_id(i, |id| self.0.get(id).map(|s| s.index))
    }

    fn get_or_create(&self, i: u64, init: impl FnOnce() -> Payload) -> u64 {
        with_id(i, |id| {
            self.0.get_with_by_ref(id, || Arc::new(init())).index
        })
    }

    fn write(&self, i: u64, init: impl FnOnce() -> Payload) {
        self.remove(i);
        self.get_or_create(i, init);
    }

    fn remove(&self, i: u64) {
        with_id(i, |id| self.0.invalidate(id));
    }

    fn entries(&self) -> Option<usize> {
        // Exact once pending tasks have run (`sync`).
        usize::try_from(self.0.entry_count()).ok()
    }

    fn sync(&self) {
        self.0.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_valid_and_precomputed_ones_match() {
        let registry = LockedSessionRegistry::<()>::new();
        let mut seen = std::collections::HashSet::new();
        for i in (0..2_000)
            .chain(ENTRIES - 10..ENTRIES + 10)
            .chain([u64::MAX])
        {
            let id = with_id(i, str::to_owned);
            assert_eq!(id, write_id(i, &mut [0; ID_LEN]));
            assert_eq!(registry.validate_id(&id), Ok(()), "{id}");
            assert!(seen.insert(id));
        }
    }
}
