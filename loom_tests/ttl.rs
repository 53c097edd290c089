//! Loom models of `crate::ttl`'s own protocol, run on the real `TtlMap`.
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target-loom \
//!     cargo test --locked --release --lib loom_in_crate::ttl
//! ```
//!
//! # What runs, and what is a stand-in
//!
//! Every line of `src/ttl/` that these models reach is the production code:
//! `get_or_init`, `publish`, the `FlightGuard`, `evict` / `evicted`,
//! `sweep_expired`, `make_room`, the occupancy CAS, `Entry`'s states,
//! and `crate::flight`. Their atomics, locks and cells come from
//! `crate::sync`, so loom sees and permutes each of them, and the stats
//! counters they bump (loom's per-thread stand-in) add the same scheduling
//! points that production has between a miss and the flight lookup.
//!
//! Three things are not loom's to see:
//!
//! * **scc.** `index` and `flights` are loom-visible stand-ins under this
//!   cfg (`src/ttl/maps.rs`): one loom mutex per map, with scc's per-key
//!   contract (an `entry_sync` holds its key until dropped; `peek_with`
//!   reads an immutable snapshot without the lock). scc's own blocking
//!   would hang the single OS thread loom runs on, and its orderings are
//!   its own. The models check our protocol *on top of* maps with that
//!   contract; scc's implementation of it is covered by scc and by the
//!   stress tests (`tests/cache_ttl.rs`, `tests/session_registry.rs`).
//! * **The order** (`src/ttl/order.rs`: the deadline wheel and the S3-FIFO
//!   queues) is the real one, with one shard under loom; its lock is a loom
//!   mutex and an entry's state (`New` → `Admitted` → `Dead`) a loom
//!   atomic, so loom permutes admission against eviction.
//! * **Time** is a `ManualClock` advanced only before the threads start, so
//!   expiry is decided by the set-up, not by the schedule.
//!
//! Results are collected first and asserted after every thread is joined.
//!
//! # Models
//!
//! 1. [`one_init_against_a_finishing_leader`]: two callers `get_or_init` one
//!    key. Exactly one `init` runs and both get its value. This is the
//!    schedule where the second caller misses in `index`, the leader then
//!    publishes and removes its flight, and the second caller finds the
//!    flight slot empty: only the re-check of `index` under the slot stops
//!    a second `init`.
//! 2. [`occupancy_never_exceeds_the_bound`]: `max_entries = 1`, rejecting;
//!    one caller `get_or_init`s a key while another inserts a different
//!    one. Each checks the occupancy right after its call: never above 1;
//!    one value is stored, the other call is refused, and at the end
//!    occupancy equals the entries held.
//! 3. [`remove_and_a_capacity_eviction_evict_once`]: `max_entries = 1`,
//!    evicting; key 1 is live; one thread removes it while another inserts
//!    key 2 (which evicts key 1, the policy's victim, if it is still there). Key
//!    1 leaves exactly once, by one cause, and `remove` returns its value
//!    only if the cause was `Removed`; the counts agree at the end.
//! 4. [`remove_sweep_and_read_evict_an_expired_entry_once`]: key 1 has
//!    expired; `remove`, `sweep` and a `get` (which evicts what it finds
//!    expired) race. One `Expired` eviction, none returns the value, and
//!    the map, its occupancy and the deadline index end empty.
//! 5. [`a_dead_entry_is_never_linked_again`]: idle timeout; key 1 was read
//!    since it was linked, so its key in the deadline index is a lower
//!    bound that has passed while the entry is live. A `sweep` pops it and
//!    puts it back under its real deadline while `remove` evicts it: the
//!    order must end counting no live entry (`Dead` is final).
//! 6. [`a_replacement_in_place_outlives_a_sweep_and_a_read`]: key 1 has
//!    expired; one thread inserts a new value with a later deadline (which
//!    keeps the key's entry, "Replacements in place" in `ttl`'s docs)
//!    while a `sweep` and a `get` (which evicts what it finds expired) race
//!    it. The old value leaves once (expired, or replaced); the new one is
//!    never evicted by the sweep or the read that found its entry expired,
//!    and is still in the deadline index: it expires, and is swept, at its
//!    own deadline.
//! 7. [`a_capacity_eviction_and_a_replacement_by_a_new_entry_agree`]:
//!    `max_entries = 1`, evicting, idle timeout (so a replacement makes a
//!    new entry); key 1 is live. One thread replaces it while another
//!    inserts key 2, which evicts the policy's victim: key 1's old entry
//!    or its new one. The eviction that finds the old entry gone must
//!    choose again, not remove the new one in its name: one key is held,
//!    the old value left once, and the counts agree at the end.
//!
//! # Mutations of `src/ttl/`
//!
//! `.ci/mutants` applies each alone and runs the layer named; its ids are
//! these. `A` an assertion of the model fails; `-` it passes; `.` not run
//! yet. Times are the test binary's own (the rebuild, 2 to 4 minutes on 2
//! busy cores, apart).
//!
//! | #  | mutation                                                          | 1 | 2 | 3 | 4 | 5 | 6 | 7 | unit test       |
//! | -- | ----------------------------------------------------------------- | - | - | - | - | - | - | - | --------------- |
//! | T1 | `get_or_init`: no re-check of `index` under the empty flight slot | A | . | . | . | . | . | . | caught, 1.6 s   |
//! | T2 | the leader removes its flight before publishing                   | A | . | . | . | . | . | . |                 |
//! | T3 | `admit` admits a dead entry too (no `New` → `Admitted` CAS)        | . | . | . | . | . | . | . | caught, 0.2 s   |
//! | T4 | `try_reserve` loads and stores instead of one CAS                 | . | A | . | . | . | . | . |                 |
//! | T5 | `evicted` does not give the capacity back                         | - | - | A | A | A | A | A |                 |
//! | T6 | `evict`'s `remove_if` ignores which entry it removes              | - | - | - | - | - | - | A |                 |
//! | T7 | `evict` does not re-check the deadline under the key's lock       | . | . | . | . | . | A | . |                 |
//! | T8 | a sweep drops an entry `evict` found live (no `relink`)           | . | . | . | . | . | A | . |                 |
//!
//! T1 fails model 1 in 0.4 s ("init ran twice"): the schedule needs one
//! preemption of the second caller between its miss and the flight slot.
//! T3 (since the order admits and kills entries by state, not by a
//! lock-guarded slot) has not been run against model 5; its unit test,
//! `ttl::entry::tests::an_entry_killed_before_admission_is_never_admitted`,
//! catches it.
//! T1 survived every layer before; its unit test is
//! `ttl::single_flight::tests` (the pause hook).
//! T7 and T8 fail model 6 in 0.4 s (`.ci/mutants T7 T8`): the sweep
//! evicts the new value, or leaves it out of the deadline index. T6
//! survived models 1 to 6 (1.0 s): evicting by key alone goes wrong only
//! when an eviction of one entry races a replacement of its key by a
//! *new* entry, which model 7 schedules; it fails there (the whole file
//! in 1.6 s), as the order keeps counting the new entry.
//! T2 fails model 1 in 0.2 s (a second `init`), T4 model 2 in 0.2 s (two
//! values stored under a bound of one: model 2 reserves once under a
//! flight slot and once under no lock, as the stand-ins' one lock would
//! keep two creations from racing), T5 models 3 to 7 in 0.1 s (the counts
//! at rest).
//!
//! At the default bound of 3 preemptions the seven models take about 1.1 s
//! in all (release build, one test thread).

use std::sync::Arc as StdArc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
use std::time::{Duration, SystemTime};

use loom::thread;

use super::common::model;
use crate::clock::ManualClock;
use crate::ttl::{EvictionCause, InitError, Life, TtlMap};

/// Every eviction the listener heard: `(key, value, cause)`.
type Heard = StdArc<StdMutex<Vec<(u32, u32, EvictionCause)>>>;

/// A map of `max` entries with the given policy and timeouts, swept by
/// hand, and a listener that records every eviction. The listener's log is a
/// `std` mutex: it is held for one push with no loom operation inside, so it
/// never blocks a model thread.
fn map(
    max: usize,
    evict_at_capacity: bool,
    lifetime: Option<Duration>,
    idle: Option<Duration>,
    clock: &ManualClock,
) -> (StdArc<TtlMap<u32, u32>>, Heard) {
    let heard: Heard = StdArc::default();
    let log = heard.clone();
    let listener = Box::new(move |k: &u32, v: u32, cause| {
        log.lock().unwrap().push((*k, v, cause));
    });
    let map = TtlMap::for_tests(
        max,
        evict_at_capacity,
        lifetime,
        idle,
        StdArc::new(clock.clone()),
        Some(listener),
    );
    (map, heard)
}

fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
}

fn heard(log: &Heard) -> Vec<(u32, u32, EvictionCause)> {
    log.lock().unwrap().clone()
}

/// `(entries, occupancy, live entries the order counts)` must agree at rest.
fn assert_at_rest(map: &TtlMap<u32, u32>, entries: usize) {
    let counts = map.counts();
    assert_eq!(
        counts,
        (entries, entries, entries),
        "(entries, occupancy, order)"
    );
}

#[test]
fn one_init_against_a_finishing_leader() {
    model(|| {
        let (map, _) = map(4, false, None, None, &clock());
        let inits = StdArc::new(StdAtomicUsize::new(0));
        let call = |map: StdArc<TtlMap<u32, u32>>, inits: StdArc<StdAtomicUsize>, me: u32| {
            let got = map.get_or_init(
                &1,
                || 1,
                None,
                None,
                || {
                    inits.fetch_add(1, StdOrdering::Relaxed);
                    Ok::<u32, ()>(me)
                },
            );
            got.ok()
        };
        let other = {
            let (map, inits) = (map.clone(), inits.clone());
            thread::spawn(move || call(map, inits, 20))
        };
        let mine = call(map.clone(), inits.clone(), 10);
        let theirs = other.join().unwrap();

        assert_eq!(inits.load(StdOrdering::Relaxed), 1, "init ran twice");
        assert!(mine.is_some() && mine == theirs, "{mine:?} / {theirs:?}");
        assert_at_rest(&map, 1);
    });
}

#[test]
fn occupancy_never_exceeds_the_bound() {
    model(|| {
        let (map, _) = map(1, false, None, None, &clock());
        // One creates through a flight (reserving under its flight slot),
        // the other inserts (reserving under no lock): the stand-in maps
        // hold one lock for all keys, so two creations would never race
        // on the occupancy.
        let create = |map: StdArc<TtlMap<u32, u32>>, key: u32| {
            let got = map.get_or_init(&key, || key, None, None, || Ok::<u32, ()>(key));
            let occupancy = map.counts().1;
            (got.map_err(|e| matches!(e, InitError::Capacity)), occupancy)
        };
        let other = {
            let map = map.clone();
            thread::spawn(move || {
                let got = map.insert(2, 2, Life::Default).map(|()| 2);
                let occupancy = map.counts().1;
                (got.map_err(|_| true), occupancy)
            })
        };
        let mine = create(map.clone(), 1);
        let theirs = other.join().unwrap();

        for (_, occupancy) in [&mine, &theirs] {
            assert!(*occupancy <= 1, "occupancy {occupancy} above the bound");
        }
        let created = [&mine, &theirs].iter().filter(|(r, _)| r.is_ok()).count();
        let refused = [&mine, &theirs]
            .iter()
            .filter(|(r, _)| *r == Err(true))
            .count();
        assert_eq!((created, refused), (1, 1), "{mine:?} / {theirs:?}");
        assert_at_rest(&map, 1);
    });
}

#[test]
fn remove_and_a_capacity_eviction_evict_once() {
    model(|| {
        let (map, log) = map(1, true, None, None, &clock());
        assert!(map.insert(1, 10, Life::Default).is_ok());
        let remover = {
            let map = map.clone();
            thread::spawn(move || map.remove(&1))
        };
        let inserted = map.insert(2, 20, Life::Default).is_ok();
        let removed = remover.join().unwrap();

        let heard = heard(&log);
        let of_one: Vec<_> = heard.iter().filter(|(k, _, _)| *k == 1).collect();
        assert_eq!(
            of_one.len(),
            1,
            "key 1 left {} times: {heard:?}",
            of_one.len()
        );
        let cause = of_one[0].2;
        assert!(
            matches!(cause, EvictionCause::Removed | EvictionCause::Capacity),
            "{cause:?}"
        );
        assert_eq!(removed.is_some(), cause == EvictionCause::Removed);
        assert!(!map.contains(&1));
        assert_eq!(map.contains(&2), inserted);
        assert_at_rest(&map, usize::from(inserted));
    });
}

#[test]
fn remove_sweep_and_read_evict_an_expired_entry_once() {
    model(|| {
        let clock = clock();
        let (map, log) = map(4, false, Some(Duration::from_nanos(10)), None, &clock);
        assert!(map.insert(1, 10, Life::Default).is_ok());
        clock.advance(Duration::from_nanos(10));
        let remover = {
            let map = map.clone();
            thread::spawn(move || map.remove(&1))
        };
        let sweeper = {
            let map = map.clone();
            thread::spawn(move || map.sweep())
        };
        let read = map.get(&1);
        let removed = remover.join().unwrap();
        let swept = sweeper.join().unwrap();

        assert_eq!((read, removed), (None, None), "an expired value returned");
        assert!(swept <= 1);
        assert_eq!(heard(&log), [(1, 10, EvictionCause::Expired)]);
        assert_at_rest(&map, 0);
    });
}

#[test]
fn a_dead_entry_is_never_linked_again() {
    model(|| {
        let clock = clock();
        let (map, log) = map(4, false, None, Some(Duration::from_nanos(10)), &clock);
        assert!(map.insert(1, 10, Life::Default).is_ok());
        clock.advance(Duration::from_nanos(5));
        // A read moves the deadline to 15; the index still says 10.
        assert_eq!(map.get(&1), Some(10));
        clock.advance(Duration::from_nanos(5));
        let sweeper = {
            let map = map.clone();
            thread::spawn(move || map.sweep())
        };
        let removed = map.remove(&1);
        let swept = sweeper.join().unwrap();

        assert_eq!((removed, swept), (Some(10), 0));
        assert_eq!(heard(&log), [(1, 10, EvictionCause::Removed)]);
        assert_at_rest(&map, 0);
    });
}

#[test]
fn a_replacement_in_place_outlives_a_sweep_and_a_read() {
    model(|| {
        let clock = clock();
        let (map, log) = map(4, false, None, None, &clock);
        let ttl = |nanos| Life::Ttl(Duration::from_nanos(nanos));
        assert!(map.insert(1, 10, ttl(10)).is_ok());
        clock.advance(Duration::from_nanos(10));
        let writer = {
            let map = map.clone();
            thread::spawn(move || map.insert(1, 11, ttl(20)).is_ok())
        };
        let sweeper = {
            let map = map.clone();
            thread::spawn(move || map.sweep())
        };
        let read = map.get(&1);
        let inserted = writer.join().unwrap();
        let swept = sweeper.join().unwrap();

        assert!(inserted);
        assert!(read.is_none() || read == Some(11), "{read:?}");
        assert!(swept <= 1);
        let of_old: Vec<_> = heard(&log).into_iter().filter(|e| e.1 == 10).collect();
        assert!(
            matches!(
                of_old[..],
                [(1, 10, EvictionCause::Expired | EvictionCause::Replaced)]
            ),
            "{of_old:?}"
        );
        assert_eq!(map.get(&1), Some(11), "the new value was evicted");
        assert_at_rest(&map, 1);
        clock.advance(Duration::from_nanos(19));
        assert_eq!(map.sweep(), 0, "swept before its deadline");
        clock.advance(Duration::from_nanos(1));
        assert_eq!(map.sweep(), 1, "no longer in the deadline index");
        assert_eq!(heard(&log).last(), Some(&(1, 11, EvictionCause::Expired)));
        assert_at_rest(&map, 0);
    });
}

#[test]
fn a_capacity_eviction_and_a_replacement_by_a_new_entry_agree() {
    model(|| {
        let (map, log) = map(1, true, None, Some(Duration::from_secs(60)), &clock());
        assert!(map.insert(1, 10, Life::Default).is_ok());
        let writer = {
            let map = map.clone();
            thread::spawn(move || map.insert(1, 11, Life::Default).is_ok())
        };
        let inserted = map.insert(2, 20, Life::Default).is_ok();
        let replaced = writer.join().unwrap();

        let heard = heard(&log);
        // Either call may be refused (its room taken by the other's
        // reservation), never both: one key is held.
        let held = usize::from(map.contains(&1)) + usize::from(map.contains(&2));
        assert_eq!(held, 1, "{heard:?}");
        assert!(inserted || replaced, "{heard:?}");
        let of_old: Vec<_> = heard.iter().filter(|e| e.1 == 10).collect();
        assert_eq!(of_old.len(), 1, "{heard:?}");
        assert_at_rest(&map, 1);
    });
}
