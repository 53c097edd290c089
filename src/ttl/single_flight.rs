//! Creation, exactly once per live key: the get-or-init protocol over the
//! map of flights ("Creation" in the module docs).

use std::borrow::Borrow;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::eviction::IfLive;
use super::key::{Hashed, Probe};
use super::maps::FlightEntry;
use super::read::{Look, Peeked};
use super::{AMORTISED_SWEEP, TtlMap};
use crate::flight::{Flight, Leader, Outcome};

/// Why [`TtlMap::get_or_init`] returned no value.
pub(crate) enum InitError<E> {
    /// No room, and the policy rejects.
    Capacity,
    /// This call's initialiser, or the one it waited on, returned this.
    Failed(Arc<E>),
    /// The initialiser waited on failed with an error of another type.
    FailedElsewhere,
    /// The initialiser (this call's or the one waited on) panicked.
    Panicked,
    /// The call came from inside the initialiser of the flight it would
    /// wait on (on this thread or in this task): waiting would never end.
    Recursive,
    /// The initialiser waited on had not finished within the wait timeout.
    TimedOut(Duration),
}

/// What a caller that missed does next.
enum Claim<V> {
    /// The value is there after all.
    Found(V),
    /// Another caller is creating it: wait for that flight.
    Join(crate::sync::Arc<Flight<V>>),
    /// This caller creates it.
    Lead(Leader<V>),
}

impl<K, V> TtlMap<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The live value under `key`, or the one `init` makes, exactly once per
    /// live key however many callers race; `ttl` overrides the lifetime of
    /// the entry it creates. A caller that waits for another's initialiser
    /// gives up after `wait` ([`InitError::TimedOut`]) when it is `Some`,
    /// leaving that initialiser running.
    pub(crate) fn get_or_init<Q, E>(
        &self,
        key: &Q,
        make_key: impl FnOnce() -> K,
        ttl: Option<Duration>,
        wait: Option<Duration>,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, InitError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        E: Send + Sync + 'static,
    {
        // Lock-free only: a spurious miss (the key's entry being replaced)
        // is caught by `claim`, which looks again under the flight slot.
        let probe = Probe::new(&self.hasher, key);
        if let Some(v) = self.read_as(&probe, Look::LockFree, V::clone) {
            return Ok(v);
        }
        #[cfg(all(test, not(latchfree_loom)))]
        pause::after_miss();
        let key = probe.owned(make_key());
        loop {
            match self.claim(&key)? {
                Claim::Found(v) => return Ok(v),
                Claim::Join(flight) => {
                    let outcome = match wait {
                        None => flight.wait(),
                        Some(timeout) => flight
                            .wait_timeout(timeout)
                            .ok_or(InitError::TimedOut(timeout))?,
                    };
                    if let Some(result) = joined(outcome) {
                        return result;
                    }
                    // The leader was cancelled: start over.
                }
                Claim::Lead(leader) => {
                    let guard = self.begin_flight(&key, &leader);
                    let inside = leader.enter();
                    let result = init();
                    drop(inside);
                    return self.end_flight(guard, leader, ttl, result);
                }
            }
        }
    }

    /// As [`get_or_init`](Self::get_or_init), with an initialiser that is a
    /// future; a caller that waits for another's initialiser awaits it.
    ///
    /// A hit completes on the first poll without registering a waker. If
    /// this future is dropped while it leads, the reservation is given back,
    /// the flight leaves the map and is completed as cancelled: its waiters
    /// start over and one of them leads. Dropped while it waits, it removes
    /// its waker and nothing else changes.
    #[cfg_attr(not(feature = "async"), allow(dead_code))] // The async twins.
    pub(crate) async fn get_or_init_async<Q, E, F>(
        &self,
        key: &Q,
        make_key: impl FnOnce() -> K,
        ttl: Option<Duration>,
        init: F,
    ) -> Result<V, InitError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        E: Send + Sync + 'static,
        F: Future<Output = Result<V, E>>,
    {
        // Lock-free only: a spurious miss (the key's entry being replaced)
        // is caught by `claim`, which looks again under the flight slot.
        let probe = Probe::new(&self.hasher, key);
        if let Some(v) = self.read_as(&probe, Look::LockFree, V::clone) {
            return Ok(v);
        }
        let key = probe.owned(make_key());
        loop {
            match self.claim(&key)? {
                Claim::Found(v) => return Ok(v),
                Claim::Join(flight) => {
                    if let Some(result) = joined(flight.wait_async().await) {
                        return result;
                    }
                }
                Claim::Lead(leader) => {
                    // Dropped in reverse order if this future is cancelled
                    // mid-load: `guard` removes the flight and gives the
                    // reservation back, then `leader` completes the flight
                    // as cancelled.
                    let guard = self.begin_flight(&key, &leader);
                    let result = leader.lead(init).await;
                    return self.end_flight(guard, leader, ttl, result);
                }
            }
        }
    }

    /// After a miss: finds the value, a flight to join, or leads a new one
    /// (with a slot reserved for its value).
    fn claim<E>(&self, key: &Hashed<K>) -> Result<Claim<V>, InitError<E>> {
        loop {
            let slot = self.flights.entry_sync(key.clone());
            match slot {
                FlightEntry::Occupied(occupied) => {
                    let flight = occupied.get().clone();
                    drop(occupied);
                    if flight.led_here() {
                        return Err(InitError::Recursive);
                    }
                    self.counters.coalesced.inc();
                    return Ok(Claim::Join(flight));
                }
                FlightEntry::Vacant(vacant) => {
                    // A leader publishes before it removes its flight, so
                    // with the flight slot locked and empty, the index holds
                    // the value or no one is creating it. Looked up under the
                    // bucket's lock (which never misses a present key, see
                    // `lookup`) and only so: the caller has just missed.
                    match self.peek(&key.probe(), Look::Locked, V::clone) {
                        Some(Peeked::Live(v)) => return Ok(Claim::Found(v)),
                        Some(Peeked::Expired(stale)) => {
                            drop(vacant);
                            self.evict(&stale, IfLive::Keep);
                            continue;
                        }
                        None => {}
                    }
                    if !self.try_reserve() {
                        // Make room with no lock held (evictions call the
                        // listener), then take the slot again.
                        drop(vacant);
                        if !self.make_room(key.hash) {
                            self.counters.rejected.inc();
                            return Err(InitError::Capacity);
                        }
                        continue;
                    }
                    let flight = crate::sync::Arc::new(Flight::new());
                    vacant.insert_entry(flight.clone());
                    // SAFETY: the flight is new and only this caller inserted
                    // it into `flights`: the one leader.
                    return Ok(Claim::Lead(unsafe { Leader::new(flight) }));
                }
            }
        }
    }

    /// A leader's first steps before its initialiser runs.
    ///
    /// From here on an initialiser that unwinds (or a future dropped
    /// mid-load) drops the returned guard, which gives back the reservation
    /// and removes the flight, then `leader`, which completes the flight as
    /// panicked (or cancelled).
    fn begin_flight<'a>(&'a self, key: &'a Hashed<K>, leader: &Leader<V>) -> FlightGuard<'a, K, V> {
        let guard = FlightGuard {
            map: self,
            key,
            flight: leader.flight().clone(),
            keep_reservation: false,
        };
        if self.amortised {
            self.sweep_expired(AMORTISED_SWEEP);
        }
        self.counters.inits.inc();
        guard
    }

    /// A leader's last steps: publishes the value (then removes the flight)
    /// or gives the slot back, and completes the flight.
    fn end_flight<E: Send + Sync + 'static>(
        &self,
        guard: FlightGuard<'_, K, V>,
        leader: Leader<V>,
        ttl: Option<Duration>,
        result: Result<V, E>,
    ) -> Result<V, InitError<E>> {
        match result {
            Ok(value) => {
                self.publish(guard.key.clone(), value.clone(), ttl.into());
                // Published before the flight leaves `flights` (see above).
                guard.disarm();
                leader.finish(Outcome::Ready(value.clone()));
                Ok(value)
            }
            Err(error) => {
                self.counters.init_errors.inc();
                let error = Arc::new(error);
                drop(guard);
                leader.finish(Outcome::Failed(error.clone()));
                Err(InitError::Failed(error))
            }
        }
    }
}

/// What a waiter returns for the outcome of the flight it joined; `None`
/// when the leader was cancelled and the waiter must start over.
fn joined<V, E: Send + Sync + 'static>(outcome: Outcome<V>) -> Option<Result<V, InitError<E>>> {
    Some(match outcome {
        Outcome::Ready(v) => Ok(v),
        Outcome::Failed(error) => Err(error
            .downcast::<E>()
            .map_or(InitError::FailedElsewhere, InitError::Failed)),
        Outcome::Panicked => Err(InitError::Panicked),
        Outcome::Cancelled => return None,
    })
}

/// Ends a leader's flight in the map: removes it from `flights` and, unless
/// disarmed (the value was published and the reservation is the entry's
/// now), gives the reservation back. Dropped by an unwinding initialiser too.
struct FlightGuard<'a, K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    map: &'a TtlMap<K, V>,
    key: &'a Hashed<K>,
    flight: crate::sync::Arc<Flight<V>>,
    /// Set once the value is published: the reservation is the entry's.
    keep_reservation: bool,
}

impl<'a, K, V> FlightGuard<'a, K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Removes the flight, keeping the reservation.
    fn disarm(mut self) {
        self.keep_reservation = true;
    }
}

impl<K, V> Drop for FlightGuard<'_, K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if !self.keep_reservation {
            self.map.release();
        }
        self.map
            .flights
            .remove_if_sync(&self.key.probe(), |current| {
                crate::sync::Arc::ptr_eq(current, &self.flight)
            });
    }
}

/// A test-only hook that holds a caller of `get_or_init` between its miss
/// in `index` and its look at `flights`: the window in which another
/// caller can lead, publish and remove its flight.
#[cfg(all(test, not(latchfree_loom)))]
pub(crate) mod pause {
    use std::cell::RefCell;

    thread_local! {
        static AFTER_MISS: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    /// Runs `hook` on this thread's next miss in `get_or_init`, once.
    pub(crate) fn on_next_miss(hook: impl FnOnce() + 'static) {
        AFTER_MISS.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    pub(super) fn after_miss() {
        if let Some(hook) = AFTER_MISS.with(|h| h.borrow_mut().take()) {
            hook();
        }
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::{Duration, SystemTime};

    use super::pause;
    use crate::clock::ManualClock;
    use crate::ttl::TtlMap;

    #[test]
    fn a_caller_that_missed_before_a_leader_finished_does_not_init_again() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        let map = TtlMap::<u32, u32>::for_tests(4, false, None, None, Arc::new(clock), None);
        let inits = Arc::new(AtomicUsize::new(0));
        let init = |inits: &Arc<AtomicUsize>, value: u32| {
            let inits = inits.clone();
            move || {
                inits.fetch_add(1, Ordering::Relaxed);
                Ok::<u32, ()>(value)
            }
        };
        let (missed_tx, missed_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let late = {
            let (map, init) = (map.clone(), init(&inits, 2));
            std::thread::spawn(move || {
                pause::on_next_miss(move || {
                    missed_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                });
                map.get_or_init(&1, || 1, None, None, init).ok()
            })
        };
        // The late caller has missed; this one now leads the whole flight:
        // it publishes, removes its flight and finishes.
        missed_rx.recv().unwrap();
        assert_eq!(
            map.get_or_init(&1, || 1, None, None, init(&inits, 1)).ok(),
            Some(1)
        );
        go_tx.send(()).unwrap();

        assert_eq!(
            late.join().unwrap(),
            Some(1),
            "the late caller made its own value"
        );
        assert_eq!(
            inits.load(Ordering::Relaxed),
            1,
            "init ran twice for one key"
        );
        assert_eq!(map.counts(), (1, 1, 1));
    }
}
