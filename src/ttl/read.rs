//! The read side: lock-free lookups, the liveness check, the access stamp
//! and the access count ("Reads" in the module docs).

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use super::TtlMap;
use super::entry::{Entry, Inline};
use super::eviction::IfLive;
use super::key::Probe;
use super::maps::for_each_in;

/// Whether a peek found a live entry, an expired one, or nothing.
pub(super) enum Peeked<V, E> {
    Live(V),
    Expired(E),
}

/// How a lookup looks: what a miss is worth (see [`TtlMap::lookup`]).
#[derive(Clone, Copy)]
pub(super) enum Look {
    /// Lock-free, a miss confirmed under the bucket's shared lock: a miss
    /// means the key was absent at some moment.
    Confirmed,
    /// Lock-free only: a miss may be spurious while the key's entry is
    /// being replaced. For a caller that checks again under a lock before
    /// acting on the miss (`get_or_init`'s claim does).
    LockFree,
    /// Under the bucket's shared lock only: for a caller that expects a
    /// miss, which the lock-free probe would only precede.
    Locked,
}

impl<K, V> TtlMap<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Looks `key` up without creating; counts a hit or a miss.
    #[inline]
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read(key, |v| v.clone())
    }

    /// Calls `f` on the live value under `key`, if any; counts a hit or a
    /// miss. `f` runs inside the epoch guard: keep it short.
    #[inline]
    pub(crate) fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read_as(&Probe::new(&self.hasher, key), Look::Confirmed, f)
    }

    /// [`read`](Self::read) by a probe, looking as `look` says.
    #[inline]
    pub(super) fn read_as<Q, R>(
        &self,
        key: &Probe<'_, Q>,
        look: Look,
        f: impl FnOnce(&V) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.peek(key, look, f) {
            Some(Peeked::Live(r)) => {
                self.counters.hits.inc();
                Some(r)
            }
            Some(Peeked::Expired(entry)) => {
                self.counters.misses.inc();
                self.evict(&entry, IfLive::Keep);
                None
            }
            None => {
                self.counters.misses.inc();
                None
            }
        }
    }

    /// The time to check `entry` against: the map's time, or 0 when the
    /// check needs none (no deadline, no idle timeout), which saves the
    /// clock read on a hit.
    #[inline]
    pub(super) fn now_for(&self, entry: &Inline<K, V>) -> u64 {
        if entry.needs_time(self.idle) {
            self.time.now()
        } else {
            0
        }
    }

    /// The lock-free lookup: the value if live (stamping its access), the
    /// entry if expired.
    #[inline]
    pub(super) fn peek<Q, R>(
        &self,
        key: &Probe<'_, Q>,
        look: Look,
        f: impl FnOnce(&V) -> R,
    ) -> Option<Peeked<R, Arc<Entry<K>>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut f = Some(f);
        self.lookup_as(key, look, |entry| {
            let now = self.now_for(entry);
            if entry.is_live(now, self.idle) {
                entry.touch(now, self.idle);
                if self.evict_at_capacity {
                    self.order.freq.hit(entry.cell());
                }
                // `lookup` calls its reader at most once.
                let f = f.take().expect("the reader runs once");
                Peeked::Live(f(&entry.value))
            } else {
                Peeked::Expired(entry.shared())
            }
        })
    }

    /// Calls `reader` (at most once) on the entry under `key`, without a
    /// lock when the key is found.
    ///
    /// `HashIndex::peek_with` alone is not enough: scc replaces an entry
    /// (`OccupiedEntry::update`, our `publish` of a present key) by
    /// inserting the new one and then marking the old one removed, under
    /// the bucket's write lock, and a lock-free reader that scans the bucket
    /// in between can pass over both and miss a key that was present the
    /// whole time. So a miss is confirmed under the bucket's shared lock
    /// (`read_sync`), which sees the bucket before or after a replacement.
    /// Hits stay lock-free; only misses pay the lock.
    #[inline]
    pub(super) fn lookup<Q, R>(&self, key: &Q, reader: impl FnMut(&Inline<K, V>) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lookup_as(&Probe::new(&self.hasher, key), Look::Confirmed, reader)
    }

    /// [`lookup`](Self::lookup), looking as `look` says: a caller that
    /// confirms a miss itself, or expects one, skips a probe (each hashes
    /// the key and walks its bucket).
    #[inline]
    pub(super) fn lookup_as<Q, R>(
        &self,
        key: &Probe<'_, Q>,
        look: Look,
        mut reader: impl FnMut(&Inline<K, V>) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !matches!(look, Look::Locked)
            && let Some(r) = self.index.peek_with(key, |_, entry| reader(entry))
        {
            return Some(r);
        }
        if matches!(look, Look::LockFree) {
            return None;
        }
        self.index.read_sync(key, |_, entry| reader(entry))
    }

    /// Whether a live entry is under `key` (no stamp, no metric).
    pub(crate) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lookup(key, |entry| {
            let now = self.now_for(entry);
            entry.is_live(now, self.idle)
        })
        .unwrap_or(false)
    }

    /// Calls `f` on every live entry. Weakly consistent: safe during any
    /// concurrent operation; sees each entry present throughout at most
    /// once, and may or may not see those added or removed meanwhile. `f`
    /// runs with no lock held.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for_each_in(&self.index, |hashed, entry| {
            let now = self.now_for(entry);
            if entry.is_live(now, self.idle) {
                f(&hashed.key, &entry.value);
            }
        });
    }
}
