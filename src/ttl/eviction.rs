//! Expiry sweeps, the capacity bound and exactly-once eviction ("Expiry",
//! "Capacity" and "Exactly-once eviction" in the module docs).

use std::hash::Hash;
use std::sync::Arc;

use super::entry::Entry;
use super::key::Probe;
use super::{AMORTISED_SWEEP, EvictionCause, TtlMap};
use crate::sync::atomic::Ordering;

/// What [`TtlMap::evict`] does with the entry if the index holds it live.
#[derive(Clone, Copy, Debug)]
pub(super) enum IfLive {
    /// Leaves it: only an expired entry is evicted (a sweep, or a read that
    /// found it expired; it may have been replaced in place since).
    Keep,
    /// Evicts it anyway, with this cause.
    Evict(EvictionCause),
}

/// What became of an entry [`TtlMap::evict`] was asked to remove.
#[derive(Debug)]
pub(super) enum Evicted<V> {
    /// This call removed it: its value, and why.
    Removed(V, EvictionCause),
    /// The index holds it live, and [`IfLive::Keep`] left it there.
    Kept,
    /// The index no longer holds it: another call evicted it, or it was
    /// replaced by a new entry.
    Gone,
}

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
        let mut evicted = 0;
        for entry in &expired {
            match self.evict(entry, IfLive::Keep) {
                Evicted::Removed(..) => evicted += 1,
                // Replaced in place since the order found it expired: it
                // left the wheel with its old deadline; back under the new.
                Evicted::Kept => self.order.relink(entry),
                Evicted::Gone => {}
            }
        }
        evicted
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
            while let Some((victim, _)) = self.order.victim(hash, now) {
                // Expired or not, it is the policy's to evict now; `evict`
                // names the cause from what the index holds (the order's
                // copy of a deadline may be stale).
                let policy = IfLive::Evict(EvictionCause::Capacity);
                if let Evicted::Removed(..) = self.evict(&victim, policy) {
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

    /// Removes `entry` if it is still the one in `index` and, unless
    /// `if_live` says to evict it anyway, has expired. Its cause is decided
    /// under the key's lock from what the index holds (an entry the order
    /// found expired may have been replaced in place since). The one caller
    /// that removes it releases its capacity, unlinks it, notifies, and
    /// gets the value back.
    pub(super) fn evict(&self, entry: &Arc<Entry<K>>, if_live: IfLive) -> Evicted<V> {
        let mut outcome = Evicted::Gone;
        let probe = Probe {
            hash: entry.hash,
            key: &entry.key,
        };
        self.index.remove_if_sync(&probe, |current| {
            if !current.is(entry) {
                return false;
            }
            let now = self.now_for(current);
            let cause = match if_live {
                _ if !current.is_live(now, self.idle) => EvictionCause::Expired,
                IfLive::Evict(cause) => cause,
                IfLive::Keep => {
                    // Replaced in place: the order's copy of the deadline
                    // catches up, under the lock (see `Entry::extend`).
                    entry.extend(current.expires());
                    outcome = Evicted::Kept;
                    return false;
                }
            };
            if let Some(journal) = &self.journal {
                // Under the key's lock: ordered with its other changes.
                journal.remove(&entry.key, cause);
            }
            outcome = Evicted::Removed(current.value.clone(), cause);
            true
        });
        match outcome {
            Evicted::Removed(value, cause) => {
                Evicted::Removed(self.evicted(entry, value, cause), cause)
            }
            other => other,
        }
    }

    /// The bookkeeping of an entry just removed from `index`: capacity,
    /// the order, metrics, the listener. Returns the value.
    pub(super) fn evicted(&self, entry: &Arc<Entry<K>>, value: V, cause: EvictionCause) -> V {
        // Relaxed: counts, published with nothing.
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.release();
        self.order.kill(entry);
        self.counters.live.decrement();
        self.notify(Some(&entry.key), self.for_listener(&value), cause);
        value
    }

    /// A copy of `value` for the listener, if there is one (a clone of an
    /// `Arc` value writes its count, a line no one may have touched lately).
    #[inline]
    pub(super) fn for_listener(&self, value: &V) -> Option<V> {
        self.listener.as_ref().map(|_| value.clone())
    }

    /// Counts an eviction and calls the listener with `key` and `value`,
    /// made by [`for_listener`](Self::for_listener) (both `None` only when
    /// there is no listener: a replacement in place then does not touch the
    /// entry for its key; no internal lock is held by any caller of this).
    pub(super) fn notify(&self, key: Option<&K>, value: Option<V>, cause: EvictionCause) {
        self.counters.evictions[cause.index()].inc();
        if let (Some(listener), Some(key), Some(value)) = (&self.listener, key, value) {
            listener(key, value, cause);
        }
    }
}
