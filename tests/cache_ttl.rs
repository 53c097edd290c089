//! The TTL cache: single-flight loading (exactly once, errors, panics),
//! TTL / idle TTL / per-entry TTL with a manual clock, the capacity bound
//! and its second-chance policy, the listener and the metrics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, SystemTime};

use latchfree::cache::{EvictionCause, LoadError, Sweep, TtlCache};
use latchfree::clock::ManualClock;
use latchfree::stats::Stats;

fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
}

#[test]
fn get_or_load_runs_once_per_key_with_8_threads_over_10_000_keys() {
    const KEYS: u64 = 10_000;
    let cache = TtlCache::<u64, Arc<u64>>::new(KEYS as usize);
    let calls = AtomicUsize::new(0);
    let barrier = Barrier::new(8);
    let seen: Vec<Vec<Arc<u64>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let (cache, calls, barrier) = (&cache, &calls, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let mut got = vec![None; KEYS as usize];
                    for k in 0..KEYS {
                        let key = (k + t * KEYS / 8) % KEYS;
                        let v = cache
                            .get_or_load(key, || {
                                calls.fetch_add(1, Ordering::Relaxed);
                                Arc::new(key)
                            })
                            .unwrap();
                        got[key as usize] = Some(v);
                    }
                    got.into_iter().map(Option::unwrap).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::Relaxed), KEYS as usize);
    for (k, first) in seen[0].iter().enumerate() {
        assert_eq!(**first, k as u64);
        for other in &seen[1..] {
            assert!(Arc::ptr_eq(first, &other[k]));
        }
    }
    let m = cache.metrics();
    assert_eq!(m.inits, KEYS);
    assert_eq!(m.entries, KEYS);
    assert_eq!(m.evicted, 0);
}

#[test]
fn load_errors_reach_every_waiter_and_are_not_cached() {
    let cache = Arc::new(TtlCache::<u32, u32>::new(16));
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let leader = {
        let cache = cache.clone();
        thread::spawn(move || {
            cache.try_get_or_load(1, || {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Err("disk on fire")
            })
        })
    };
    entered_rx.recv().unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            thread::spawn(move || cache.try_get_or_load::<&str>(1, || unreachable!()))
        })
        .collect();
    // Every waiter must have joined the flight before it ends, or one of
    // them would run `unreachable!` as a new leader.
    while cache.metrics().coalesced < 3 {
        thread::yield_now();
    }
    // Other keys load meanwhile.
    assert_eq!(cache.get_or_load(2, || 20).unwrap(), 20);
    release_tx.send(()).unwrap();
    assert!(matches!(leader.join().unwrap(), Err(LoadError::Failed(e)) if *e == "disk on fire"));
    for w in waiters {
        assert!(matches!(w.join().unwrap(), Err(LoadError::Failed(e)) if *e == "disk on fire"));
    }
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.get_or_load(1, || 10).unwrap(), 10);
    let m = cache.metrics();
    assert_eq!((m.inits, m.init_errors, m.coalesced), (3, 1, 3));
}

#[test]
fn a_panicking_loader_poisons_nothing() {
    let cache = Arc::new(TtlCache::<u32, u32>::new(16));
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let leader = {
        let cache = cache.clone();
        thread::spawn(move || {
            cache.get_or_load(1, || {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                panic!("loader panicked on purpose")
            })
        })
    };
    entered_rx.recv().unwrap();
    let waiter = {
        let cache = cache.clone();
        thread::spawn(move || cache.get_or_load(1, || unreachable!()))
    };
    while cache.metrics().coalesced == 0 {
        thread::yield_now();
    }
    release_tx.send(()).unwrap();
    assert!(leader.join().is_err());
    assert!(matches!(waiter.join().unwrap(), Err(LoadError::Panicked)));
    assert_eq!(cache.get_or_load(1, || 5).unwrap(), 5);
    assert_eq!(cache.len(), 1);
}

#[test]
fn ttl_idle_ttl_and_per_entry_ttl_with_a_manual_clock() {
    let clock = clock();
    let events = Arc::new(Mutex::new(Vec::new()));
    let cache = {
        let events = events.clone();
        TtlCache::<&'static str, u32>::builder()
            .clock(clock.clone())
            .time_to_live(Duration::from_secs(60))
            .time_to_idle(Duration::from_secs(30))
            .sweep(Sweep::Manual)
            .eviction_listener(move |k, v, cause| events.lock().unwrap().push((*k, v, cause)))
            .build()
            .unwrap()
    };
    cache.insert("ttl", 1).unwrap();
    cache
        .insert_with_ttl("short", 2, Duration::from_secs(5))
        .unwrap();
    cache.insert("idle", 3).unwrap();
    clock.advance(Duration::from_millis(4_999));
    assert_eq!(cache.get(&"short"), Some(2));
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.get(&"short"), None, "never returned at its deadline");
    // "ttl" is read every 15 s (idle never reached) until its 60 s TTL.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(15));
        assert_eq!(cache.get(&"ttl"), Some(1));
    }
    // "idle" was last read at 0 s: its 30 s idle timeout has passed.
    assert!(!cache.contains_key(&"idle"));
    clock.advance(Duration::from_millis(9_999)); // 59.999 s
    assert_eq!(cache.get(&"ttl"), Some(1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.get(&"ttl"), None);
    cache.sweep();
    let mut got = events.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("idle", 3, EvictionCause::Expired),
            ("short", 2, EvictionCause::Expired),
            ("ttl", 1, EvictionCause::Expired),
        ]
    );
    let m = cache.metrics();
    assert_eq!((m.expired, m.entries), (3, 0));
}

#[test]
fn a_zero_ttl_is_expired_at_birth_as_the_builder_says() {
    let clock = clock();
    let events: Arc<Mutex<Vec<_>>> = Arc::default();
    let log = events.clone();
    let cache = TtlCache::<&'static str, u32>::builder()
        .sweep(Sweep::Manual)
        .eviction_listener(move |k, v, cause| log.lock().unwrap().push((*k, v, cause)))
        .clock(clock.clone())
        .build()
        .unwrap();
    cache.insert("k", 1).unwrap();
    cache.insert_with_ttl("k", 2, Duration::ZERO).unwrap();
    assert_eq!(cache.get(&"k"), None, "a zero TTL returned its value");
    assert!(!cache.contains_key(&"k"));
    assert_eq!(cache.sweep(), 0, "the read evicted it already");
    // One nanosecond lives for one nanosecond: zero is not "no deadline".
    cache
        .insert_with_ttl("n", 3, Duration::from_nanos(1))
        .unwrap();
    assert_eq!(cache.get(&"n"), Some(3));
    clock.advance(Duration::from_nanos(1));
    assert!(!cache.contains_key(&"n"));
    assert_eq!(cache.sweep(), 1);
    assert_eq!(
        *events.lock().unwrap(),
        [
            ("k", 1, EvictionCause::Replaced),
            ("k", 2, EvictionCause::Expired),
            ("n", 3, EvictionCause::Expired),
        ]
    );
    // The builder refuses the same zero, naming the call to fix.
    let refused = TtlCache::<u32, u32>::builder()
        .time_to_live(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        refused.to_string().contains("longer than zero"),
        "{refused}"
    );
}

/// A replacement's deadline is its own, later or earlier than the one it
/// replaces, or none: the value lives until then, the sweep evicts it at
/// that deadline and not at the old one, and nothing is evicted twice.
#[test]
fn a_replacement_moves_the_deadline_later_earlier_or_off() {
    let clock = clock();
    let events = Arc::new(Mutex::new(Vec::new()));
    let cache = {
        let events = events.clone();
        TtlCache::<u32, u32>::builder()
            .clock(clock.clone())
            .sweep(Sweep::Manual)
            .eviction_listener(move |k, v, cause| events.lock().unwrap().push((*k, v, cause)))
            .build()
            .unwrap()
    };
    let secs = Duration::from_secs;
    cache.insert_with_ttl(1, 10, secs(60)).unwrap();
    cache.insert_with_ttl(2, 20, secs(60)).unwrap();
    cache.insert_with_ttl(3, 30, secs(60)).unwrap();
    clock.advance(secs(30));
    cache.insert_with_ttl(1, 11, secs(60)).unwrap(); // until 90 s
    cache.insert_with_ttl(2, 21, secs(5)).unwrap(); // until 35 s
    cache.insert(3, 31).unwrap(); // no deadline
    clock.advance(secs(5));
    assert!(!cache.contains_key(&2), "returned past its own deadline");
    assert_eq!(cache.sweep(), 1);
    clock.advance(secs(25)); // 60 s: the first deadlines
    assert_eq!((cache.get(&1), cache.get(&3)), (Some(11), Some(31)));
    assert_eq!(cache.sweep(), 0, "swept at a replaced deadline");
    clock.advance(Duration::from_millis(29_999));
    assert_eq!(cache.sweep(), 0);
    assert_eq!(cache.get(&1), Some(11));
    clock.advance(Duration::from_millis(1)); // 90 s
    assert!(!cache.contains_key(&1));
    assert_eq!(cache.sweep(), 1);
    clock.advance(secs(3_600));
    assert_eq!((cache.sweep(), cache.get(&3)), (0, Some(31)));
    assert_eq!(
        *events.lock().unwrap(),
        [
            (1, 10, EvictionCause::Replaced),
            (2, 20, EvictionCause::Replaced),
            (3, 30, EvictionCause::Replaced),
            (2, 21, EvictionCause::Expired),
            (1, 11, EvictionCause::Expired),
        ]
    );
    assert_eq!(cache.len(), 1);
}

#[test]
fn replace_invalidate_and_invalidate_all_notify_once_with_their_cause() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let stats = Stats::new();
    let cache = {
        let events = events.clone();
        TtlCache::<u32, u32>::builder()
            .stats(&stats)
            .eviction_listener(move |k, v, cause| events.lock().unwrap().push((*k, v, cause)))
            .build()
            .unwrap()
    };
    cache.insert(1, 10).unwrap();
    cache.insert(1, 11).unwrap();
    cache.insert(2, 20).unwrap();
    cache.insert(3, 30).unwrap();
    assert_eq!(cache.invalidate(&2), Some(20));
    assert_eq!(cache.invalidate(&2), None);
    assert_eq!(cache.invalidate_all(), 2);
    let mut got = events.lock().unwrap().clone();
    got[2..].sort();
    assert_eq!(
        got,
        vec![
            (1, 10, EvictionCause::Replaced),
            (2, 20, EvictionCause::Removed),
            (1, 11, EvictionCause::Cleared),
            (3, 30, EvictionCause::Cleared),
        ]
    );
    assert!(cache.is_empty());
    let snap = stats.snapshot();
    assert_eq!(snap.counter("cache_evictions_replaced_total"), Some(1));
    assert_eq!(snap.counter("cache_evictions_cleared_total"), Some(2));
    assert_eq!(snap.gauge("cache_entries"), Some(0.0));
}

#[test]
fn the_capacity_bound_holds_and_second_chance_keeps_read_entries() {
    const CAP: usize = 1_000;
    let evicted = Arc::new(AtomicUsize::new(0));
    let cache = {
        let evicted = evicted.clone();
        TtlCache::<u64, u64>::builder()
            .max_entries(CAP)
            .sweep(Sweep::Manual)
            .eviction_listener(move |_, _, cause| {
                assert_eq!(cause, EvictionCause::Capacity);
                evicted.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap()
    };
    for k in 0..100_000u64 {
        cache.insert(k, k).unwrap();
        assert_eq!(cache.get(&0), Some(0), "key 0 is read after every insert");
        assert!(cache.len() <= CAP);
    }
    assert_eq!(cache.len(), CAP);
    assert_eq!(evicted.load(Ordering::Relaxed), 100_000 - CAP);
    assert_eq!(cache.get(&99_999), Some(99_999));
    assert_eq!(cache.get(&1), None);
}

#[test]
fn concurrent_inserts_and_loads_never_exceed_the_bound() {
    const CAP: usize = 256;
    let cache = TtlCache::<u64, u64>::builder()
        .max_entries(CAP)
        .build()
        .unwrap();
    let live = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..6u64 {
            let (cache, live) = (&cache, &live);
            s.spawn(move || {
                let mut x = t * 7919 + 1;
                for _ in 0..50_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = x % 2_048;
                    match x % 3 {
                        0 => {
                            cache.insert(k, k).unwrap();
                        }
                        1 => assert_eq!(cache.get_or_load(k, || k).unwrap(), k),
                        _ => {
                            if let Some(v) = cache.get(&k) {
                                assert_eq!(v, k);
                            }
                        }
                    }
                    assert!(cache.len() <= CAP);
                    live.fetch_max(cache.len(), Ordering::Relaxed);
                }
            });
        }
    });
    assert!(live.load(Ordering::Relaxed) <= CAP);
    assert!(cache.len() <= CAP);
    let mut n = 0;
    cache.for_each(|k, v| {
        assert_eq!(k, v);
        n += 1;
    });
    assert_eq!(n, cache.len());
}

/// A [`ManualClock`] that says it is not cheap, so that maps read a coarse
/// copy of it that only the ticker (and writes) refresh.
#[derive(Clone)]
struct CoarseManual(ManualClock);

impl latchfree::clock::Clock for CoarseManual {
    fn now(&self) -> SystemTime {
        self.0.now()
    }
}

#[test]
fn one_ticker_keeps_the_coarse_time_of_several_caches_without_writes() {
    let clock = clock();
    let caches: Vec<TtlCache<u64, u64>> = (0..4)
        .map(|i| {
            let cache = TtlCache::builder()
                .clock(CoarseManual(clock.clone()))
                .time_to_live(Duration::from_secs(10))
                // No sweep in this test's lifetime: only the ticker can
                // move the coarse time of a cache nobody writes to.
                .sweep(Sweep::Background {
                    interval: Duration::from_secs(3_600),
                })
                .time_resolution(Duration::from_millis(1))
                .build()
                .unwrap();
            cache.insert(i, i).unwrap();
            cache
        })
        .collect();
    clock.advance(Duration::from_secs(9));
    // Whether or not the ticker has run yet, the entries are live.
    for (i, cache) in caches.iter().enumerate() {
        assert_eq!(cache.get(&(i as u64)), Some(i as u64));
    }
    clock.advance(Duration::from_secs(1));
    // Now expired by the clock; reads see it once the ticker has ticked.
    // This waits for the ticker thread (bounded), not for a TTL.
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    for (i, cache) in caches.iter().enumerate() {
        while cache.get(&(i as u64)).is_some() {
            assert!(
                std::time::Instant::now() < give_up,
                "cache {i}: the coarse time was never refreshed"
            );
            thread::yield_now();
        }
        assert_eq!(cache.len(), 0, "the expired read evicted it");
    }
}

/// A wall clock that steps back neither expires entries early nor serves
/// one again after it expired; an entry inserted while the clock is behind
/// gets its deadline from that (earlier) time. An entry that a read or a
/// sweep found expired is gone for good.
#[test]
fn a_clock_stepping_back_neither_expires_early_nor_resurrects() {
    let clock = clock();
    let start = latchfree::clock::Clock::now(&clock);
    let expired = Arc::new(AtomicUsize::new(0));
    let cache = {
        let expired = expired.clone();
        TtlCache::<u64, u64>::builder()
            .clock(clock.clone())
            .time_to_live(Duration::from_secs(60))
            .sweep(Sweep::Manual)
            .eviction_listener(move |_, _, cause| {
                if cause == EvictionCause::Expired {
                    expired.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build()
            .unwrap()
    };
    cache.insert(1, 10).unwrap();
    clock.set(start - Duration::from_secs(86_400)); // a day back
    assert_eq!(cache.get(&1), Some(10));
    cache.insert(2, 20).unwrap(); // deadline: a day ago + 60 s
    assert_eq!(cache.sweep(), 0);
    clock.set(start + Duration::from_millis(59_999));
    assert_eq!(cache.get(&1), Some(10));
    assert_eq!(cache.get(&2), None);
    clock.set(start + Duration::from_secs(60));
    assert_eq!(cache.get(&1), None);
    clock.set(start); // back again: what expired stays expired
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.get(&2), None);
    cache.sweep(); // removes whatever the reads left behind
    assert_eq!(expired.load(Ordering::Relaxed), 2);
    assert!(cache.is_empty());
}

/// `insert` over a present key replaces it, and a concurrent `get` sees the
/// old value or the new one, never nothing: a few hot keys, two threads
/// replacing them, two reading (on 2 cores, with more threads than cores).
/// The lock-free lookup alone could pass over both while the replacement
/// ran; a miss is confirmed under the bucket's lock.
#[test]
fn replacing_a_present_key_never_makes_a_reader_miss() {
    const KEYS: u64 = 16;
    const READS: u64 = 500_000;
    let cache = TtlCache::<u64, u64>::new(1_000);
    for k in 0..KEYS {
        cache.insert(k, k).unwrap();
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let misses = thread::scope(|s| {
        for w in 0..2u64 {
            let (cache, done) = (&cache, &done);
            s.spawn(move || {
                let mut i = w;
                while !done.load(Ordering::Relaxed) {
                    cache.insert(i % KEYS, i).unwrap();
                    i += 2;
                }
            });
        }
        let readers: Vec<_> = (0..2u64)
            .map(|r| {
                let cache = &cache;
                s.spawn(move || {
                    let mut misses = 0u64;
                    for i in 0..READS {
                        let k = (i * 7 + r) % KEYS;
                        misses += u64::from(cache.with(&k, |_| ()).is_none());
                        misses += u64::from(!cache.contains_key(&k));
                    }
                    misses
                })
            })
            .collect();
        let misses: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
        done.store(true, Ordering::Relaxed);
        misses
    });
    assert_eq!(misses, 0, "reads missed a key that was always present");
    assert_eq!(cache.len(), KEYS as usize);
}

#[test]
fn the_entries_gauge_equals_the_length_after_4_threads_insert_evict_and_invalidate() {
    let stats = Stats::new();
    let cache = TtlCache::<u64, u64>::builder()
        .max_entries(1_000)
        .stats(&stats)
        .build()
        .unwrap();
    thread::scope(|s| {
        for t in 0..4u64 {
            let cache = &cache;
            s.spawn(move || {
                for i in 0..5_000u64 {
                    let key = t * 10_000 + i % 2_500;
                    cache.insert(key, i).unwrap();
                    if i % 7 == 0 {
                        cache.invalidate(&(key / 2));
                    }
                }
            });
        }
    });
    let live = cache.len();
    assert!(live > 0 && live <= 1_000, "{live}");
    assert_eq!(stats.snapshot().gauge("cache_entries"), Some(live as f64));
    cache.invalidate_all();
    assert_eq!(stats.snapshot().gauge("cache_entries"), Some(0.0));
}

/// Every value inserted leaves exactly once, and is freed: 6 threads on 2
/// cores replace 48 hot keys (in place when the deadline moves later, by
/// a new entry when it moves earlier), read and invalidate them, while one
/// more thread advances a manual clock and sweeps, in a cache of 32 that
/// evicts at its bound. At the end every value was heard by the listener
/// once (replaced, expired, evicted, removed or cleared) and dropped.
#[test]
fn every_value_leaves_once_while_replacements_race_sweeps_and_evictions() {
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    const THREADS: u64 = 6;
    const ROUNDS: u64 = 20_000;
    let clock = clock();
    let dropped = Arc::new(AtomicUsize::new(0));
    let heard = Arc::new(AtomicUsize::new(0));
    let cache = {
        let heard = heard.clone();
        TtlCache::<u64, Arc<Tracked>>::builder()
            .max_entries(32)
            .clock(clock.clone())
            .sweep(Sweep::Manual)
            .eviction_listener(move |_, _, _| {
                heard.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap()
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let stored = thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                clock.advance(Duration::from_micros(50));
                cache.sweep();
                thread::yield_now();
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cache, dropped) = (&cache, &dropped);
                s.spawn(move || {
                    let mut stored = 0usize;
                    for i in 0..ROUNDS {
                        let key = (i * 7 + t * 13) % 48;
                        let ttl = Duration::from_micros(100 + (i * 31 + t) % 400);
                        match i % 8 {
                            0 => drop(cache.invalidate(&key)),
                            1 | 2 => drop(cache.get(&key)),
                            _ => {
                                let value = Arc::new(Tracked(dropped.clone()));
                                if cache.insert_with_ttl(key, value, ttl).is_ok() {
                                    stored += 1;
                                }
                            }
                        }
                    }
                    stored
                })
            })
            .collect();
        let stored: usize = workers.into_iter().map(|h| h.join().unwrap()).sum();
        done.store(true, Ordering::Relaxed);
        stored
    });
    let left = cache.len();
    assert!(left <= 32, "{left} entries above the bound");
    assert_eq!(cache.invalidate_all(), left);
    assert_eq!(cache.len(), 0);
    assert_eq!(
        heard.load(Ordering::Relaxed),
        stored,
        "a value left twice or never"
    );
    drop(cache);
    // scc frees replaced copies once no reader can see them, as its epoch
    // moves on; pinning and unpinning moves it (every reader has finished).
    let waited = (0..100_000)
        .find(|_| {
            drop(scc::Guard::new());
            dropped.load(Ordering::Relaxed) == stored
        })
        .is_some();
    assert!(
        waited,
        "{} of {stored} values dropped",
        dropped.load(Ordering::Relaxed)
    );
}
