//! Keys hashed once: what `index` and `flights` store, and how they are
//! looked up.
//!
//! scc hashes a key on every bucket operation, and again for every entry it
//! moves while it resizes or rebuilds its table. A creation touches the
//! maps five or six times, and a map whose keys come and go (sessions
//! created and expired, a cache at its bound) is rebuilt continually, so
//! with std's SipHash the key's hash was computed many times per write: a
//! profile of sessions being created and removed put the hashing of string
//! ids at a sixth of the samples, most of it in scc's relocations (the
//! creations alone got about a tenth faster without it, measured in
//! `latchfree bench sessions --ops create_storm`). A [`Hashed`] key carries its
//! hash, computed once with the map's keyed hasher where the key enters the
//! map, and the maps' [`PassThrough`] hasher reads it back; a lookup by a
//! borrowed form builds a [`Probe`] with the same hash.
//!
//! The hash is still SipHash-1-3 under a per-map random key (std's
//! `RandomState`): ids that network clients choose cannot be aimed at one
//! bucket. The maps only stop recomputing it. It is the same hash the entry
//! keeps for the order (its shard, its ghost record).
//!
//! As with any hash map, a key type whose `Borrow`ed form hashes
//! differently from itself breaks lookups by that form (std's
//! `HashMap::get` has the same contract).

use std::borrow::Borrow;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

/// A key and its hash under the map's hasher.
#[derive(Clone, Debug)]
pub(crate) struct Hashed<K> {
    pub(crate) hash: u64,
    pub(crate) key: K,
}

impl<K: Hash> Hashed<K> {
    /// `key` with its hash under `hasher`.
    #[inline]
    pub(crate) fn new(hasher: &RandomState, key: K) -> Self {
        Self {
            hash: hasher.hash_one(&key),
            key,
        }
    }
}

impl<K> Hashed<K> {
    /// The probe that finds this key.
    #[inline]
    pub(crate) fn probe(&self) -> Probe<'_, K> {
        Probe {
            hash: self.hash,
            key: &self.key,
        }
    }
}

impl<K: PartialEq> PartialEq for Hashed<K> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Hashed<K> {}

impl<K> Hash for Hashed<K> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A borrowed form of a key with the key's hash: what lookups pass to the
/// maps.
pub(crate) struct Probe<'a, Q: ?Sized> {
    pub(crate) hash: u64,
    pub(crate) key: &'a Q,
}

impl<'a, Q: Hash + ?Sized> Probe<'a, Q> {
    /// `key` with its hash under `hasher`.
    #[inline]
    pub(crate) fn new(hasher: &RandomState, key: &'a Q) -> Self {
        Self {
            hash: hasher.hash_one(key),
            key,
        }
    }
}

impl<Q: Eq + ?Sized> Probe<'_, Q> {
    /// `key`, the owned form of the probed key, with the probe's hash (not
    /// computed again).
    #[inline]
    pub(crate) fn owned<K: Borrow<Q>>(&self, key: K) -> Hashed<K> {
        debug_assert!(key.borrow() == self.key, "the probed key, owned");
        Hashed {
            hash: self.hash,
            key,
        }
    }
}

impl<Q: ?Sized> Clone for Probe<'_, Q> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Q: ?Sized> Copy for Probe<'_, Q> {}

impl<Q: ?Sized> Hash for Probe<'_, Q> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K, Q> scc::Equivalent<Hashed<K>> for Probe<'_, Q>
where
    K: Borrow<Q>,
    Q: Eq + ?Sized,
{
    #[inline]
    fn equivalent(&self, key: &Hashed<K>) -> bool {
        self.hash == key.hash && self.key == key.key.borrow()
    }
}

/// The maps' hasher: keys and probes hash to their stored hash.
pub(crate) type PassThrough = BuildHasherDefault<PassThroughHasher>;

/// A hasher for keys that are hashes already (here, and in the order's
/// ghost record).
#[derive(Default)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; anything else folds in its bytes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use std::sync::Arc;

    use scc::Equivalent;

    use super::*;

    #[test]
    fn a_probe_finds_its_key_and_only_it() {
        let hasher = RandomState::new();
        let key: Hashed<Arc<str>> = Hashed::new(&hasher, Arc::from("session-1"));
        let pass = PassThrough::default();
        assert_eq!(pass.hash_one(&key), hasher.hash_one("session-1"));
        let probe = Probe::new(&hasher, "session-1");
        assert_eq!(pass.hash_one(probe), pass.hash_one(&key));
        assert!(probe.equivalent(&key));
        assert!(key.probe().equivalent(&key));
        let other = Probe::new(&hasher, "session-2");
        assert!(!other.equivalent(&key));
        // Same hash, another key (a collision): still not the key.
        let collision = Probe {
            hash: key.hash,
            key: "session-2",
        };
        assert!(!collision.equivalent(&key));
        assert_ne!(
            key,
            Hashed {
                hash: key.hash,
                key: Arc::from("session-2")
            }
        );
    }

    #[test]
    fn the_maps_find_keys_by_their_probes() {
        let hasher = RandomState::new();
        let index: scc::HashIndex<Hashed<String>, u32, PassThrough> =
            scc::HashIndex::with_hasher(PassThrough::default());
        for i in 0..300u32 {
            let key = Hashed::new(&hasher, format!("id-{i}"));
            assert!(index.insert_sync(key, i).is_ok());
        }
        for i in 0..300u32 {
            let id = format!("id-{i}");
            let probe = Probe::new(&hasher, id.as_str());
            assert_eq!(index.peek_with(&probe, |_, v| *v), Some(i));
        }
        assert_eq!(
            index.peek_with(&Probe::new(&hasher, "id-300"), |_, v| *v),
            None
        );
    }
}
