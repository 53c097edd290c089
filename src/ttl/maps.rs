//! The two keyed maps a [`TtlMap`](super::TtlMap) is built on: scc's, or,
//! under `--cfg latchfree_loom`, stand-ins that loom can see.
//!
//! `index` is an `scc::HashIndex` (lock-free reads, per-bucket write locks)
//! and `flights` an `scc::HashMap` (per-bucket locks). scc is not loom-aware:
//! its locks block the OS thread, and loom runs every model thread on one OS
//! thread, so a model thread switched out while it holds a bucket lock (our
//! code does loom operations under it: the capacity reservation under the
//! flight slot) would hang the model for real. So under loom both maps are
//! replaced by the stand-ins below: a `Vec` of pairs behind one loom
//! `Mutex`, with scc's method names and the same per-key contract
//!
//! * `entry_sync` holds the key exclusively until the entry is dropped,
//!   as scc's bucket lock does;
//! * `peek_with` reads a snapshot taken atomically and runs the reader with
//!   no lock held, as scc's lock-free read does (an `Inline` is immutable,
//!   so a copy reads the same as the shared original);
//! * `read_sync` and `remove_if_sync` run their closure under the lock.
//!
//! One lock for the whole map is coarser than scc's per-bucket locks: the
//! models exclude interleavings between *different* keys in one bucket that
//! scc allows, which our protocol never relies on (every argument in the
//! parent module is per key). What the stand-ins do not model is scc itself:
//! its own memory orderings and its lock-free reader's view of a bucket
//! being rewritten (the reason `lookup` confirms a miss under `read_sync`).
//! Those are scc's guarantees, tested by scc and by this crate's stress
//! tests, not by the loom models.
//!
//! Keys are [`Hashed`](super::key::Hashed): both maps take the hash each
//! key carries ([`PassThrough`](super::key::PassThrough)) rather than
//! computing one. On `std` this module only names scc's types; it costs
//! nothing.

/// scc's `HashIndex` over [`Hashed`](super::key::Hashed) keys.
#[cfg(not(latchfree_loom))]
pub(super) type HashIndex<K, V> = scc::HashIndex<K, V, super::key::PassThrough>;
/// scc's `HashMap` over [`Hashed`](super::key::Hashed) keys.
#[cfg(not(latchfree_loom))]
pub(super) type HashMap<K, V> = scc::HashMap<K, V, super::key::PassThrough>;
#[cfg(not(latchfree_loom))]
pub(super) use scc::hash_index::Entry as IndexEntry;
#[cfg(not(latchfree_loom))]
pub(super) use scc::hash_map::Entry as FlightEntry;

#[cfg(latchfree_loom)]
pub(super) use loom_maps::{FlightEntry, HashIndex, HashMap, IndexEntry};

/// Calls `f` on every pair in `index`, weakly consistent (scc's iterator
/// under an epoch guard; a snapshot under loom).
pub(super) fn for_each_in<K, V>(index: &HashIndex<K, V>, mut f: impl FnMut(&K, &V))
where
    K: Eq + std::hash::Hash + Clone + 'static,
    V: Clone + 'static,
{
    #[cfg(not(latchfree_loom))]
    {
        let guard = scc::Guard::new();
        for (key, value) in index.iter(&guard) {
            f(key, value);
        }
    }
    #[cfg(latchfree_loom)]
    for (key, value) in index.snapshot() {
        f(&key, &value);
    }
}

#[cfg(latchfree_loom)]
mod loom_maps {
    use std::hash::Hash;

    use scc::Equivalent;

    use super::super::key::PassThrough;
    use crate::sync::{Mutex, MutexGuard};

    /// A loom-visible stand-in for both scc maps (see the module docs).
    pub(crate) struct HashIndex<K, V>(Mutex<Vec<(K, V)>>);

    /// The flights map has the same shape.
    pub(crate) type HashMap<K, V> = HashIndex<K, V>;

    /// scc's `Entry`: the key held exclusively until dropped.
    pub(crate) enum IndexEntry<'a, K, V> {
        Occupied(OccupiedEntry<'a, K, V>),
        Vacant(VacantEntry<'a, K, V>),
    }

    pub(crate) type FlightEntry<'a, K, V> = IndexEntry<'a, K, V>;

    pub(crate) struct OccupiedEntry<'a, K, V> {
        pairs: MutexGuard<'a, Vec<(K, V)>>,
        at: usize,
    }

    pub(crate) struct VacantEntry<'a, K, V> {
        pairs: MutexGuard<'a, Vec<(K, V)>>,
        key: K,
    }

    fn position<K, Q: Equivalent<K> + ?Sized, V>(pairs: &[(K, V)], key: &Q) -> Option<usize> {
        pairs.iter().position(|(k, _)| key.equivalent(k))
    }

    impl<K: Eq + Hash, V> HashIndex<K, V> {
        pub(crate) fn with_hasher(_: PassThrough) -> Self {
            Self(Mutex::new(Vec::new()))
        }

        pub(crate) fn with_capacity_and_hasher(_: usize, hasher: PassThrough) -> Self {
            Self::with_hasher(hasher)
        }

        fn lock(&self) -> MutexGuard<'_, Vec<(K, V)>> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn peek_with<Q, R>(&self, key: &Q, reader: impl FnOnce(&K, &V) -> R) -> Option<R>
        where
            K: Clone,
            V: Clone,
            Q: Equivalent<K> + ?Sized,
        {
            let found = {
                let pairs = self.lock();
                position(&pairs, key).map(|at| pairs[at].clone())
            };
            found.map(|(k, v)| reader(&k, &v))
        }

        pub(crate) fn read_sync<Q, R>(&self, key: &Q, reader: impl FnOnce(&K, &V) -> R) -> Option<R>
        where
            Q: Equivalent<K> + ?Sized,
        {
            let pairs = self.lock();
            position(&pairs, key).map(|at| reader(&pairs[at].0, &pairs[at].1))
        }

        pub(crate) fn entry_sync(&self, key: K) -> IndexEntry<'_, K, V> {
            let pairs = self.lock();
            match position(&pairs, &key) {
                Some(at) => IndexEntry::Occupied(OccupiedEntry { pairs, at }),
                None => IndexEntry::Vacant(VacantEntry { pairs, key }),
            }
        }

        pub(crate) fn remove_if_sync<Q>(
            &self,
            key: &Q,
            condition: impl FnOnce(&mut V) -> bool,
        ) -> bool
        where
            Q: Equivalent<K> + ?Sized,
        {
            let mut pairs = self.lock();
            match position(&pairs, key) {
                Some(at) if condition(&mut pairs[at].1) => {
                    pairs.remove(at);
                    true
                }
                _ => false,
            }
        }

        pub(crate) fn snapshot(&self) -> Vec<(K, V)>
        where
            K: Clone,
            V: Clone,
        {
            self.lock().clone()
        }
    }

    impl<'a, K, V> OccupiedEntry<'a, K, V> {
        pub(crate) fn key(&self) -> &K {
            &self.pairs[self.at].0
        }

        pub(crate) fn get(&self) -> &V {
            &self.pairs[self.at].1
        }

        pub(crate) fn update(&mut self, value: V) {
            self.pairs[self.at].1 = value;
        }

        pub(crate) fn remove_entry(mut self) {
            self.pairs.remove(self.at);
        }
    }

    impl<'a, K, V> VacantEntry<'a, K, V> {
        pub(crate) fn key(&self) -> &K {
            &self.key
        }

        pub(crate) fn into_key(self) -> K {
            self.key
        }

        pub(crate) fn insert_entry(mut self, value: V) -> OccupiedEntry<'a, K, V> {
            self.pairs.push((self.key, value));
            let at = self.pairs.len() - 1;
            OccupiedEntry {
                pairs: self.pairs,
                at,
            }
        }
    }
}
