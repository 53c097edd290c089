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
//! # One hash per operation
//!
//! Both maps are keyed by [`Hashed`]: the key with its hash, computed once
//! per operation by the [`TtlMap`](super::TtlMap)'s own keyed hasher
//! (`RandomState`, the SipHash scc would use itself), and their hasher
//! ([`PassThrough`]) hands that hash back as it is. Lookups take a
//! [`Probe`] (a borrowed key and its hash) through scc's `Equivalent`. So a
//! creation, which looks up `index` and `flights`, inserts into both and
//! removes its flight, hashes the key once instead of once per call, and
//! the entry keeps the same hash for its order shard. The hash stays keyed
//! per map, as scc's default is: an attacker who does not know the key
//! cannot aim ids at one bucket. A stored key is 8 bytes larger.
//!
//! What the pass-through relies on: `Hash` of a key and of every form it
//! is looked up by (`Borrow`) agree, as `Borrow` requires, so the hash of
//! a probe by `&str` is that of the stored `Arc<str>`; and two keys are
//! equal only if their hashes are, so [`Hashed`] compares the hashes first.
//! scc takes a bucket from the hash's high bits and a tag from its low
//! byte; the order takes its shard from bits in between.
//!
//! On `std` this module only renames scc's types; it costs nothing.

use std::borrow::Borrow;
use std::hash::{BuildHasherDefault, Hash, Hasher};

#[cfg(not(latchfree_loom))]
pub(super) type HashIndex<K, V> = scc::HashIndex<Hashed<K>, V, PassThrough>;
#[cfg(not(latchfree_loom))]
pub(super) type HashMap<K, V> = scc::HashMap<Hashed<K>, V, PassThrough>;
#[cfg(not(latchfree_loom))]
pub(super) type IndexEntry<'a, K, V> = scc::hash_index::Entry<'a, Hashed<K>, V, PassThrough>;
#[cfg(not(latchfree_loom))]
pub(super) type FlightEntry<'a, K, V> = scc::hash_map::Entry<'a, Hashed<K>, V, PassThrough>;

#[cfg(latchfree_loom)]
pub(super) type HashIndex<K, V> = loom_maps::Pairs<Hashed<K>, V>;
#[cfg(latchfree_loom)]
pub(super) type HashMap<K, V> = loom_maps::Pairs<Hashed<K>, V>;
#[cfg(latchfree_loom)]
pub(super) type IndexEntry<'a, K, V> = loom_maps::Entry<'a, Hashed<K>, V>;
#[cfg(latchfree_loom)]
pub(super) type FlightEntry<'a, K, V> = loom_maps::Entry<'a, Hashed<K>, V>;

/// An empty `index`.
pub(super) fn new_index<K, V>() -> HashIndex<K, V>
where
    K: Eq + Clone + 'static,
    V: Clone + 'static,
{
    #[cfg(not(latchfree_loom))]
    return HashIndex::with_hasher(PassThrough::default());
    #[cfg(latchfree_loom)]
    return HashIndex::new();
}

/// An empty `flights` with room for `capacity` without a resize.
pub(super) fn new_flights<K: Eq, V>(capacity: usize) -> HashMap<K, V> {
    #[cfg(not(latchfree_loom))]
    return HashMap::with_capacity_and_hasher(capacity, PassThrough::default());
    #[cfg(latchfree_loom)]
    return {
        let _ = capacity;
        HashMap::new()
    };
}

/// A key as the maps store it: with its hash (see the module docs).
#[derive(Clone)]
pub(crate) struct Hashed<K> {
    pub(super) hash: u64,
    pub(super) key: K,
}

impl<K> Hashed<K> {
    pub(super) fn new(hash: u64, key: K) -> Self {
        Self { hash, key }
    }
}

impl<K> Hash for Hashed<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K: Eq> PartialEq for Hashed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Hashed<K> {}

/// A borrowed key and its hash: what the maps are searched by.
pub(super) struct Probe<'a, Q: ?Sized> {
    hash: u64,
    key: &'a Q,
}

impl<'a, Q: ?Sized> Probe<'a, Q> {
    pub(super) fn new(hash: u64, key: &'a Q) -> Self {
        Self { hash, key }
    }
}

impl<Q: ?Sized> Hash for Probe<'_, Q> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<Q, K> scc::Equivalent<Hashed<K>> for Probe<'_, Q>
where
    Q: Eq + ?Sized,
    K: Borrow<Q>,
{
    fn equivalent(&self, stored: &Hashed<K>) -> bool {
        self.hash == stored.hash && self.key == stored.key.borrow()
    }
}

/// The maps' hasher: a [`Hashed`] or a [`Probe`] writes its hash, one
/// `u64`, and that is the result. (Anything else folds its bytes in; the
/// maps hash nothing else.)
pub(super) type PassThrough = BuildHasherDefault<PassThroughHasher>;

/// See [`PassThrough`]; the order's ghost record uses it for its hashes too.
#[derive(Default)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Calls `f` on every pair in `index`, weakly consistent (scc's iterator
/// under an epoch guard; a snapshot under loom).
pub(super) fn for_each_in<K, V>(index: &HashIndex<K, V>, mut f: impl FnMut(&K, &V))
where
    K: Eq + Clone + 'static,
    V: Clone + 'static,
{
    #[cfg(not(latchfree_loom))]
    {
        let guard = scc::Guard::new();
        for (key, value) in index.iter(&guard) {
            f(&key.key, value);
        }
    }
    #[cfg(latchfree_loom)]
    for (key, value) in index.snapshot() {
        f(&key.key, &value);
    }
}

#[cfg(latchfree_loom)]
mod loom_maps {
    use scc::Equivalent;

    use crate::sync::{Mutex, MutexGuard};

    /// A loom-visible stand-in for both scc maps (see the module docs).
    pub(crate) struct Pairs<K, V>(Mutex<Vec<(K, V)>>);

    /// scc's `Entry`: the key held exclusively until dropped.
    pub(crate) enum Entry<'a, K, V> {
        Occupied(OccupiedEntry<'a, K, V>),
        Vacant(VacantEntry<'a, K, V>),
    }

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

    impl<K: Eq, V> Pairs<K, V> {
        pub(crate) fn new() -> Self {
            Self(Mutex::new(Vec::new()))
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

        pub(crate) fn entry_sync(&self, key: K) -> Entry<'_, K, V> {
            let pairs = self.lock();
            match pairs.iter().position(|(k, _)| *k == key) {
                Some(at) => Entry::Occupied(OccupiedEntry { pairs, at }),
                None => Entry::Vacant(VacantEntry { pairs, key }),
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

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Arc;

    use super::{HashIndex, Hashed, Probe, new_index};

    #[test]
    fn a_borrowed_probe_finds_its_key_and_only_with_its_hash() {
        let hasher = RandomState::new();
        let index: HashIndex<Arc<str>, u32> = new_index();
        let key: Arc<str> = Arc::from("0123456789abcdef");
        let hash = hasher.hash_one(&key);
        assert_eq!(hash, hasher.hash_one("0123456789abcdef"), "Borrow agrees");
        assert!(index.insert_sync(Hashed::new(hash, key), 7).is_ok());
        let found = |hash, id: &str| index.peek_with(&Probe::new(hash, id), |_, v| *v);
        assert_eq!(found(hash, "0123456789abcdef"), Some(7));
        assert_eq!(
            found(hash, "0123456789abcdeF"),
            None,
            "same hash, other key"
        );
        assert_eq!(found(hash ^ 1, "0123456789abcdef"), None, "other hash");
        assert_eq!(
            index.read_sync(&Probe::new(hash, "0123456789abcdef"), |k, _| k.hash),
            Some(hash)
        );
    }
}
