//! The write side: inserts, publication of a new entry, explicit removal
//! and `clear`.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use super::config::nanos;
use super::entry::{Entry, Inline, NO_DEADLINE};
use super::maps::{IndexEntry, for_each_in};
use super::{AMORTISED_SWEEP, EvictionCause, Life, TtlMap};
use crate::sync::atomic::Ordering;

impl<K, V> TtlMap<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Inserts `value` under `key`, replacing any entry there (cause
    /// `Replaced`). If no room could be made, hands `key` and `value` back.
    pub(crate) fn insert(&self, key: K, value: V, life: Life) -> Result<(), (K, V)> {
        if !self.reserve_for_write() {
            return Err((key, value));
        }
        self.publish(key, value, life);
        Ok(())
    }

    /// Takes one unit of capacity for a write, making room if needed;
    /// `false` (counted as rejected) if none could be made.
    pub(super) fn reserve_for_write(&self) -> bool {
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        // A replacement needs no room, but reserving first keeps the bound
        // exact; `publish` gives the reservation back if it replaced.
        while !self.try_reserve() {
            if !self.make_room() {
                self.counters.rejected.inc();
                return false;
            }
        }
        true
    }

    #[cfg(feature = "persist")] // The disk tier's.
    /// Inserts `value` under `key` until `deadline` only if `key` holds no
    /// entry and `still()`, checked under the key's lock, says yes; the
    /// journal is not told (the value came from where the journal writes).
    /// `false` if it was not inserted.
    pub(crate) fn insert_if_vacant(
        &self,
        key: K,
        value: V,
        deadline: u64,
        still: impl FnOnce() -> bool,
    ) -> bool {
        if !self.reserve_for_write() {
            return false;
        }
        let now = self.time.refresh();
        if deadline <= now {
            self.release();
            return false;
        }
        // Relaxed: a unique number is all that is needed, not an order.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let cell = self.referenced.cell(seq);
        if self.evict_at_capacity {
            self.referenced.clear(cell);
        }
        let entry = Arc::new(Entry::new(key.clone(), now, deadline, self.idle, cell));
        match self.index.entry_sync(key) {
            IndexEntry::Vacant(vacant) if still() => {
                vacant.insert_entry(Inline::new(value, entry.clone()));
                // Relaxed: a count, published with nothing.
                self.entries.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.release();
                return false;
            }
        }
        entry.link(&self.deadlines, (entry.deadline(), seq), &entry);
        self.counters.live.set(self.len() as i64);
        true
    }

    /// Puts a new entry into `index` and `deadlines`, holding a reservation.
    pub(super) fn publish(&self, key: K, value: V, life: Life) {
        let now = self.time.refresh();
        let expires = match life {
            // A zero TTL is a deadline of now: expired at birth, never
            // returned (the builders refuse a zero lifetime for that reason).
            Life::Ttl(ttl) => now.saturating_add(nanos(Some(ttl))),
            Life::Default if self.lifetime == 0 => NO_DEADLINE,
            Life::Default => now.saturating_add(self.lifetime),
        };
        // Relaxed: a unique number is all that is needed, not an order.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let cell = self.referenced.cell(seq);
        if self.evict_at_capacity {
            self.referenced.clear(cell);
        }
        let entry = Arc::new(Entry::new(key.clone(), now, expires, self.idle, cell));
        let journaled = self.journal.as_ref().map(|_| value.clone());
        let inline = Inline::new(value, entry.clone());
        let replaced = match self.index.entry_sync(key) {
            IndexEntry::Vacant(vacant) => {
                let occupied = vacant.insert_entry(inline);
                if let (Some(journal), Some(value)) = (&self.journal, &journaled) {
                    journal.put(occupied.key(), value, expires);
                }
                drop(occupied);
                // Relaxed: a count, published with nothing.
                self.entries.fetch_add(1, Ordering::Relaxed);
                None
            }
            IndexEntry::Occupied(mut occupied) => {
                let old = occupied.get().clone();
                occupied.update(inline);
                if let (Some(journal), Some(value)) = (&self.journal, &journaled) {
                    journal.put(occupied.key(), value, expires);
                }
                Some(old)
            }
        };
        entry.link(&self.deadlines, (entry.deadline(), seq), &entry);
        if let Some(old) = replaced {
            // The new entry took the old one's place: one reservation too many.
            self.release();
            old.entry.unlink(&self.deadlines);
            self.notify(&old.entry.key, old.value, EvictionCause::Replaced);
        } else {
            self.counters.live.set(self.len() as i64);
        }
    }

    /// Removes the live or expired entry under `key` (cause `Removed`);
    /// returns its value if it was live.
    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.lookup(key, |entry| entry.entry.clone())?;
        let now = self.time.refresh();
        let live = entry.is_live(now);
        let cause = if live {
            EvictionCause::Removed
        } else {
            EvictionCause::Expired
        };
        let removed = self.evict(&entry, cause);
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        removed.filter(|_| live)
    }

    #[cfg(feature = "persist")] // The disk tier's.
    /// Removes the entry under `key` (cause `Removed`, or `Expired` if it
    /// had expired); returns its value if it was live. Unlike
    /// [`remove`](Self::remove), the journal is told even when `key` held
    /// nothing, under the key's lock, so the removal is ordered with every
    /// other change of `key` (the disk tier may hold what memory does not).
    pub(crate) fn remove_key(&self, key: K) -> Option<V> {
        let now = self.time.refresh();
        let removed = match self.index.entry_sync(key) {
            IndexEntry::Occupied(occupied) => {
                let old = occupied.get().clone();
                let cause = if old.entry.is_live(now) {
                    EvictionCause::Removed
                } else {
                    EvictionCause::Expired
                };
                if let Some(journal) = &self.journal {
                    journal.remove(occupied.key(), cause);
                }
                occupied.remove_entry();
                Some((old, cause))
            }
            IndexEntry::Vacant(vacant) => {
                if let Some(journal) = &self.journal {
                    journal.remove(vacant.key(), EvictionCause::Removed);
                }
                None
            }
        };
        let (old, cause) = removed?;
        let value = self.evicted(&old.entry, old.value, cause);
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        (cause == EvictionCause::Removed).then_some(value)
    }

    /// Removes every entry (cause `Cleared`, or `Expired` for those already
    /// expired); returns how many were removed. Initialisations in progress
    /// are not affected: their values appear when they finish.
    pub(crate) fn clear(&self) -> usize {
        let mut victims = Vec::new();
        for_each_in(&self.index, |_, entry| victims.push(entry.entry.clone()));
        let now = self.time.refresh();
        victims
            .iter()
            .filter(|e| {
                let cause = if e.is_live(now) {
                    EvictionCause::Cleared
                } else {
                    EvictionCause::Expired
                };
                self.evict(e, cause).is_some()
            })
            .count()
    }
}
