//! The write side: inserts, publication of a new entry, explicit removal
//! and `clear`.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use super::config::nanos;
use super::entry::{Entry, Inline, NO_DEADLINE};
use super::eviction::{Evicted, IfLive};
use super::key::Hashed;
use super::maps::{IndexEntry, for_each_in};
use super::read::Look;
use super::{AMORTISED_SWEEP, EvictionCause, Life, TtlMap};
use crate::sync::atomic::Ordering;

/// What [`TtlMap::put`] did under the key's lock, for the order to follow.
enum Put<K, V> {
    /// A new key: its new entry.
    New(Arc<Entry<K>>),
    /// A present key, its entry kept: the entry and the old value, both
    /// only for a listener.
    InPlace(Option<Arc<Entry<K>>>, Option<V>),
    /// A present key, its entry replaced: the new entry, the old one, and
    /// the old value for the listener.
    Replaced(Arc<Entry<K>>, Arc<Entry<K>>, Option<V>),
}

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
        // A present key needs no room, and usually keeps its entry (`put`).
        // A lock-free probe decides which way to go; a key it misses while
        // its entry is replaced goes the way of a new one, which `put`
        // handles too.
        let present = self.lookup_as(&key.probe(), Look::LockFree, |_| ());
        let (key, value) = if present.is_some() {
            match self.put(key, value, life, false) {
                Ok(()) => return Ok(()),
                // Not present any more: it needs room.
                Err(back) => back,
            }
        } else {
            (key, value)
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

    /// Puts `value` under `key` into `index` and the order, holding a
    /// reservation (given back if it replaced an entry: a replacement needs
    /// no room, but reserving first keeps the bound exact).
    pub(super) fn publish(&self, key: Hashed<K>, value: V, life: Life) {
        let published = self.put(key, value, life, true);
        debug_assert!(published.is_ok(), "a reserved put always publishes");
    }

    /// [`publish`](Self::publish) with a reservation (`reserved`), or, without
    /// one, a replacement only: if `key` holds no entry, `key` and `value`
    /// come back and nothing changes.
    ///
    /// A replacement that does not move the key's deadline earlier keeps
    /// its entry ("Replacements in place" in the module docs); one that
    /// does gets a new entry, made under the key's lock unless a reserved
    /// put made it before (it expects a new key).
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
        let mut made = reserved.then(|| self.new_entry(&key, now, expires));
        let journaled = self.journal.as_ref().map(|_| value.clone());
        let put = match self.index.entry_sync(key) {
            IndexEntry::Vacant(vacant) => {
                let Some(entry) = made.take() else {
                    return Err((vacant.into_key(), value));
                };
                let occupied = vacant.insert_entry(Inline::new(value, entry.clone()));
                if let (Some(journal), Some(value)) = (&self.journal, &journaled) {
                    journal.put(&occupied.key().key, value, expires);
                }
                drop(occupied);
                // Relaxed: a count, published with nothing.
                self.entries.fetch_add(1, Ordering::Relaxed);
                Put::New(entry)
            }
            IndexEntry::Occupied(mut occupied) => {
                let old = occupied.get();
                let old_value = self.for_listener(&old.value);
                let put = if self.idle == 0 && old.outlived_by(expires) {
                    // The listener needs the key; otherwise the entry is
                    // not touched at all.
                    let entry = self.listener.as_ref().map(|_| old.shared());
                    // SAFETY: under the key's lock, `old` is the copy the
                    // index holds, and the new copy replaces it right away.
                    let inline = unsafe { old.replaced(value, expires) };
                    occupied.update(inline);
                    Put::InPlace(entry, old_value)
                } else {
                    let old_entry = old.shared();
                    let entry = made
                        .take()
                        .unwrap_or_else(|| self.new_entry(occupied.key(), now, expires));
                    occupied.update(Inline::new(value, entry.clone()));
                    Put::Replaced(entry, old_entry, old_value)
                };
                if let (Some(journal), Some(value)) = (&self.journal, &journaled) {
                    journal.put(&occupied.key().key, value, expires);
                }
                put
            }
        };
        if let Some(unused) = made {
            self.order.discard(&unused);
        }
        let (old_entry, old_value) = match put {
            Put::New(entry) => {
                self.order.admit(&entry, None);
                self.counters.live.increment();
                return Ok(());
            }
            Put::InPlace(entry, old_value) => (entry, old_value),
            Put::Replaced(entry, old_entry, old_value) => {
                self.order.admit(&entry, Some(&old_entry));
                (Some(old_entry), old_value)
            }
        };
        if reserved {
            // The key held an entry already: one reservation too many.
            self.release();
        }
        let key = old_entry.as_deref().map(|old| &old.key);
        self.notify(key, old_value, EvictionCause::Replaced);
        Ok(())
    }

    /// Removes the live or expired entry under `key` (cause `Removed`);
    /// returns its value if it was live.
    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.lookup(key, Inline::shared)?;
        self.time.refresh();
        let removed = self.evict(&entry, IfLive::Evict(EvictionCause::Removed));
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        match removed {
            Evicted::Removed(value, EvictionCause::Removed) => Some(value),
            _ => None,
        }
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
                let old = occupied.get();
                let cause = if old.is_live(now, self.idle) {
                    EvictionCause::Removed
                } else {
                    EvictionCause::Expired
                };
                let old = (old.shared(), old.value.clone());
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
        let ((entry, value), cause) = removed?;
        let value = self.evicted(&entry, value, cause);
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
        for_each_in(&self.index, |_, entry| victims.push(entry.shared()));
        self.time.refresh();
        victims
            .iter()
            .filter(|e| {
                let removed = self.evict(e, IfLive::Evict(EvictionCause::Cleared));
                matches!(removed, Evicted::Removed(..))
            })
            .count()
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::super::entry::Inline;
    use super::super::{Life, TtlMap};
    use crate::clock::ManualClock;

    /// Replacements in place hand one strong count of the entry from copy
    /// to copy: however many there were, the entry is held by the index's
    /// current copy, the wheel and the queue (and the test's two handles),
    /// every value but the last is freed, and a replacement that moves the
    /// deadline earlier makes a new entry. Under Miri this also checks the
    /// handed-over copies' drops.
    #[test]
    fn a_replacement_in_place_hands_its_entry_over() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        let map = TtlMap::<u32, Arc<u32>>::for_tests(
            16,
            true,
            Some(Duration::from_secs(60)),
            None,
            Arc::new(clock.clone()),
            None,
        );
        map.insert(1, Arc::new(0), Life::Default).unwrap();
        let first = map.lookup(&1, Inline::shared).expect("inserted");
        let values: Vec<_> = (1..40)
            .map(|i| {
                clock.advance(Duration::from_nanos(1));
                let value = Arc::new(i);
                let weak = Arc::downgrade(&value);
                map.insert(1, value, Life::Default).unwrap();
                weak
            })
            .collect();
        let now = map.lookup(&1, Inline::shared).expect("replaced");
        assert!(Arc::ptr_eq(&first, &now), "the entry was not kept");
        // The index's copy, the wheel, the queue, `first` and `now`.
        assert_eq!(Arc::strong_count(&first), 5);
        assert_eq!(map.get(&1).as_deref(), Some(&39));
        // The last value is the index's; the others were replaced.
        assert!(values.last().unwrap().upgrade().is_some());
        map.insert(1, Arc::new(99), Life::Ttl(Duration::from_secs(1)))
            .unwrap();
        let shorter = map.lookup(&1, Inline::shared).expect("replaced");
        assert!(!Arc::ptr_eq(&first, &shorter), "a shorter deadline kept it");
        assert_eq!(map.get(&1).as_deref(), Some(&99));
        assert_eq!(map.counts(), (1, 1, 1));
        drop((first, now, shorter));
        drop(map);
    }
}
