//! Expiry sweeps, the capacity bound and exactly-once eviction ("Expiry",
//! "Capacity" and "Exactly-once eviction" in the module docs).

use std::hash::Hash;
use std::sync::Arc;

use super::entry::Entry;
use super::{CLOCK_SCAN, EvictionCause, TtlMap};
use crate::sync::atomic::Ordering;

impl<K, V> TtlMap<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Puts `entry` into `deadlines` under `deadline` and a new sequence
    /// number, unless it was evicted meanwhile.
    pub(super) fn link(&self, entry: &Arc<Entry<K>>, deadline: u64) {
        // Relaxed: a unique number is all that is needed, not an order.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        entry.link(&self.deadlines, (deadline, seq), entry);
    }

    /// Evicts every expired entry now; returns how many.
    pub(crate) fn sweep(&self) -> usize {
        self.sweep_expired(usize::MAX)
    }

    /// Evicts up to `limit` expired entries, soonest deadline first.
    pub(crate) fn sweep_expired(&self, limit: usize) -> usize {
        let now = self.time.refresh();
        let mut evicted = 0;
        while evicted < limit {
            let Some(front) = self.deadlines.front() else {
                break;
            };
            let key = *front.key();
            if key.0 > now {
                break;
            }
            let entry = front.value().clone();
            drop(front);
            if !entry.unlink_if(&self.deadlines, key) {
                continue;
            }
            if entry.is_live(now) {
                // Its key was a lower bound: the last access moved it later.
                self.link(&entry, entry.deadline());
            } else if self.evict(&entry, EvictionCause::Expired).is_some() {
                evicted += 1;
            }
        }
        evicted
    }

    /// Frees one unit of capacity if it can: an expired entry, or, with the
    /// evicting policy, the second-chance victim. `false` if nothing could
    /// be freed.
    pub(super) fn make_room(&self) -> bool {
        if self.sweep_expired(1) > 0 {
            return true;
        }
        if !self.evict_at_capacity {
            // Another thread may have freed room meanwhile.
            return self.occupancy.load(Ordering::Relaxed) < self.max_entries;
        }
        let now = self.time.refresh();
        for considered in 0..CLOCK_SCAN {
            let Some(front) = self.deadlines.front() else {
                break;
            };
            let key = *front.key();
            let entry = front.value().clone();
            drop(front);
            if !entry.unlink_if(&self.deadlines, key) {
                continue;
            }
            if !entry.is_live(now) {
                if self.evict(&entry, EvictionCause::Expired).is_some() {
                    return true;
                }
                continue;
            }
            if self.referenced.take(entry.cell) && considered + 1 < CLOCK_SCAN {
                // Live, so its deadline is at or after its key: it moves back.
                self.link(&entry, entry.deadline());
                continue;
            }
            if self.evict(&entry, EvictionCause::Capacity).is_some() {
                return true;
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
        self.index.remove_if_sync(&entry.key, |current| {
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
    /// `deadlines`, metrics, the listener. Returns the value.
    pub(super) fn evicted(&self, entry: &Arc<Entry<K>>, value: V, cause: EvictionCause) -> V {
        // Relaxed: counts, published with nothing.
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.release();
        entry.unlink(&self.deadlines);
        self.counters.live.set(self.len() as i64);
        if self.listener.is_some() {
            self.notify(&entry.key, value.clone(), cause);
        } else {
            self.counters.evictions[cause.index()].inc();
        }
        value
    }

    /// Counts an eviction and calls the listener (no internal lock is held
    /// by any caller of this).
    pub(super) fn notify(&self, key: &K, value: V, cause: EvictionCause) {
        self.counters.evictions[cause.index()].inc();
        if let Some(listener) = &self.listener {
            listener(key, value, cause);
        }
    }
}
