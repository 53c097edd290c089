//! Expiry sweeps, the capacity bound and exactly-once eviction ("Expiry",
//! "Capacity" and "Exactly-once eviction" in the module docs).

use std::hash::Hash;
use std::sync::Arc;

use super::entry::Entry;
use super::key::Probe;
use super::{AMORTISED_SWEEP, EvictionCause, TtlMap};
use crate::sync::atomic::Ordering;

impl<K, V> TtlMap<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Evicts every expired entry now; returns how many.
    pub(crate) fn sweep(&self) -> usize {
        self.sweep_expired(usize::MAX)
    }

    /// Evicts up to `limit` expired entries, soonest deadline first. A limit of at most [`AMORTISED_SWEEP`] (a write's
    /// share of the work) looks at one shard, the next in turn; a larger
    /// one at all of them.
    pub(crate) fn sweep_expired(&self, limit: usize) -> usize {
        let now = self.time.refresh();
        let shards = if limit <= AMORTISED_SWEEP {
            1
        } else {
            self.order.shards()
        };
        let mut expired = Vec::new();
        self.order.expired(shards, now, limit, &mut expired);
        // Soonest deadline first across shards too (a listener sees expiry
        // in order within one sweep).
        expired.sort_by_key(|entry| entry.deadline());
        expired
            .iter()
            .filter(|entry| self.evict(entry, EvictionCause::Expired).is_some())
            .count()
    }

    /// Frees one unit of capacity for the key hashed to `hash` if it can:
    /// an expired entry, or, with the evicting policy, the policy's victim
    /// (from that key's shard first). `false` if nothing could be freed.
    pub(super) fn make_room(&self, hash: u64) -> bool {
        if self.sweep_expired(1) > 0 {
            return true;
        }
        if self.evict_at_capacity {
            let now = self.time.refresh();
            // A victim another thread evicted first frees nothing here:
            // choose again.
            while let Some((victim, cause)) = self.order.victim(hash, now) {
                if self.evict(&victim, cause).is_some() {
                    return true;
                }
            }
        }
        // Nothing evictable (every unit is a flight in progress), unless
        // another thread freed room meanwhile.
        self.occupancy.load(Ordering::Relaxed) < self.max_entries
    }

    /// Takes one unit of capacity if one is free.
    pub(super) fn try_reserve(&self) -> bool {
        // Relaxed: the count is the only shared state; the entry itself is
        // published through scc.
        self.occupancy
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_entries).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives one unit of capacity back.
    pub(super) fn release(&self) {
        // Relaxed: as in `try_reserve`.
        self.occupancy.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes `entry` if it is still the one in `index`; the one caller
    /// that succeeds releases its capacity, unlinks it, notifies, and gets
    /// the value back.
    pub(super) fn evict(&self, entry: &Arc<Entry<K>>, cause: EvictionCause) -> Option<V> {
        let mut value = None;
        let probe = Probe {
            hash: entry.hash,
            key: &entry.key,
        };
        self.index.remove_if_sync(&probe, |current| {
            let same = Arc::ptr_eq(&current.entry, entry);
            if same {
                value = Some(current.value.clone());
                if let Some(journal) = &self.journal {
                    // Under the key's lock: ordered with its other changes.
                    journal.remove(&entry.key, cause);
                }
            }
            same
        });
        Some(self.evicted(entry, value?, cause))
    }

    /// The bookkeeping of an entry just removed from `index`: capacity,
    /// the order, metrics, the listener. Returns the value.
    pub(super) fn evicted(&self, entry: &Arc<Entry<K>>, value: V, cause: EvictionCause) -> V {
        // Relaxed: counts, published with nothing.
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.release();
        self.order.kill(entry);
        self.counters.live.decrement();
        self.notify(&entry.key, self.for_listener(&value), cause);
        value
    }

    /// A copy of `value` for the listener, if there is one (a clone of an
    /// `Arc` value writes its count, a line no one may have touched lately).
    #[inline]
    pub(super) fn for_listener(&self, value: &V) -> Option<V> {
        self.listener.as_ref().map(|_| value.clone())
    }

    /// Counts an eviction and calls the listener with `value`, made by
    /// [`for_listener`](Self::for_listener) (no internal lock is held by any
    /// caller of this).
    pub(super) fn notify(&self, key: &K, value: Option<V>, cause: EvictionCause) {
        self.counters.evictions[cause.index()].inc();
        if let (Some(listener), Some(value)) = (&self.listener, value) {
            listener(key, value, cause);
        }
    }
}
