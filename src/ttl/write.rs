//! The write side: inserts, publication of a new entry, explicit removal
//! and `clear`.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use super::config::nanos;
use super::entry::{Entry, Inline, NO_DEADLINE};
use super::key::Hashed;
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
    /// At the bound, an update of a present key evicts nothing.
    pub(crate) fn insert(&self, key: K, value: V, life: Life) -> Result<(), (K, V)> {
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        let key = Hashed::new(&self.hasher, key);
        if self.try_reserve() {
            self.publish(key, value, life);
            return Ok(());
        }
        let (key, value) = match self.put(key, value, life, false) {
            Ok(()) => return Ok(()),
            // Not present (any more): it needs room.
            Err(back) => back,
        };
        if !self.make_room_and_reserve(key.hash) {
            return Err((key.key, value));
        }
        self.publish(key, value, life);
        Ok(())
    }

    /// Takes one unit of capacity for a write, making room if needed;
    /// `false` (counted as rejected) if none could be made.
    #[cfg(feature = "persist")] // The disk tier's `insert_if_vacant`.
    pub(super) fn reserve_for_write(&self, hash: u64) -> bool {
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        self.make_room_and_reserve(hash)
    }

    /// Reserves one unit of capacity for the key hashed to `hash`, making
    /// room while there is none; `false` (counted as rejected) if none could
    /// be made.
    fn make_room_and_reserve(&self, hash: u64) -> bool {
        while !self.try_reserve() {
            if !self.make_room(hash) {
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
        let key = Hashed::new(&self.hasher, key);
        if !self.reserve_for_write(key.hash) {
            return false;
        }
        let now = self.time.refresh();
        if deadline <= now {
            self.release();
            return false;
        }
        let entry = self.new_entry(&key, now, deadline);
        match self.index.entry_sync(key) {
            IndexEntry::Vacant(vacant) if still() => {
                vacant.insert_entry(Inline::new(value, entry.clone()));
                // Relaxed: a count, published with nothing.
                self.entries.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.order.discard(&entry);
                self.release();
                return false;
            }
        }
        self.order.admit(&entry, None);
        self.counters.live.increment();
        true
    }

    /// A new entry's shared part: its hash, and a count cell of its own.
    fn new_entry(&self, key: &Hashed<K>, now: u64, expires: u64) -> Arc<Entry<K>> {
        let cell = self.order.cell(key.hash);
        Arc::new(Entry::new(
            key.key.clone(),
            key.hash,
            now,
            expires,
            self.idle,
            cell,
        ))
    }

    /// Puts a new entry into `index` and the order, holding a reservation
    /// (given back if it replaced an entry: a replacement needs no room, but
    /// reserving first keeps the bound exact).
    pub(super) fn publish(&self, key: Hashed<K>, value: V, life: Life) {
        let published = self.put(key, value, life, true);
        debug_assert!(published.is_ok(), "a reserved put always publishes");
    }

    /// [`publish`](Self::publish) with a reservation (`reserved`), or, without
    /// one, a replacement only: if `key` holds no entry, `key` and `value`
    /// come back and nothing changes.
    fn put(
        &self,
        key: Hashed<K>,
        value: V,
        life: Life,
        reserved: bool,
    ) -> Result<(), (Hashed<K>, V)> {
        let now = self.time.refresh();
        let expires = match life {
            // A zero TTL is a deadline of now: expired at birth, never
            // returned (the builders refuse a zero lifetime for that reason).
            Life::Ttl(ttl) => now.saturating_add(nanos(Some(ttl))),
            Life::Default if self.lifetime == 0 => NO_DEADLINE,
            Life::Default => now.saturating_add(self.lifetime),
        };
        let entry = self.new_entry(&key, now, expires);
        let journaled = self.journal.as_ref().map(|_| value.clone());
        let inline = Inline::new(value, entry.clone());
        let replaced = match self.index.entry_sync(key) {
            IndexEntry::Vacant(vacant) if !reserved => {
                drop(journaled);
                let key = vacant.into_key();
                self.order.discard(&entry);
                return Err((key, inline.value));
            }
            IndexEntry::Vacant(vacant) => {
                let occupied = vacant.insert_entry(inline);
                if let (Some(journal), Some(value)) = (&self.journal, &journaled) {
                    journal.put(&occupied.key().key, value, expires);
                }
                drop(occupied);
                // Relaxed: a count, published with nothing.
                self.entries.fetch_add(1, Ordering::Relaxed);
                None
            }
            IndexEntry::Occupied(mut occupied) => {
                let old = occupied.get();
                let old_value = self.for_listener(&old.value);
                let old_entry = old.entry.clone();
                occupied.update(inline);
                if let (Some(journal), Some(value)) = (&self.journal, &journaled) {
                    journal.put(&occupied.key().key, value, expires);
                }
                Some((old_entry, old_value))
            }
        };
        if let Some((old_entry, old_value)) = replaced {
            self.order.admit(&entry, Some(&old_entry));
            if reserved {
                // The new entry took the old one's place: one reservation
                // too many.
                self.release();
            }
            self.notify(&old_entry.key, old_value, EvictionCause::Replaced);
        } else {
            self.order.admit(&entry, None);
            self.counters.live.increment();
        }
        Ok(())
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
        let removed = match self.index.entry_sync(Hashed::new(&self.hasher, key)) {
            IndexEntry::Occupied(occupied) => {
                let old = occupied.get().clone();
                let cause = if old.entry.is_live(now) {
                    EvictionCause::Removed
                } else {
                    EvictionCause::Expired
                };
                if let Some(journal) = &self.journal {
                    journal.remove(&occupied.key().key, cause);
                }
                occupied.remove_entry();
                Some((old, cause))
            }
            IndexEntry::Vacant(vacant) => {
                if let Some(journal) = &self.journal {
                    journal.remove(&vacant.key().key, EvictionCause::Removed);
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
