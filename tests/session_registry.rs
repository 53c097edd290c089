//! The session registry under the scenarios: exactly-once creation
//! under a race, isolation of a slow init, failing and panicking inits,
//! expiry with a manual clock, a sweeper during reads and writes, a flood.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, SystemTime};

use latchfree::clock::{Clock, ManualClock};
use latchfree::session::{
    CapacityPolicy, EvictionCause, InvalidId, SessionError, SessionRegistry, Sweep,
};

fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
}

#[test]
fn exactly_once_with_8_threads_over_10_000_ids() {
    const IDS: usize = 10_000;
    let registry = SessionRegistry::<usize>::builder()
        .max_sessions(IDS)
        .build()
        .unwrap();
    let calls = AtomicUsize::new(0);
    let barrier = Barrier::new(8);
    let seen: Vec<Vec<Arc<usize>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (registry, calls, barrier) = (&registry, &calls, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    // Each thread walks the ids from its own offset.
                    let mut got = vec![None; IDS];
                    for k in 0..IDS {
                        let i = (k + t * IDS / 8) % IDS;
                        let a = registry
                            .get_or_create(&format!("id-{i}"), || {
                                calls.fetch_add(1, Ordering::Relaxed);
                                i
                            })
                            .unwrap();
                        got[i] = Some(a);
                    }
                    got.into_iter().map(Option::unwrap).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::Relaxed), IDS);
    for (i, first) in seen[0].iter().enumerate() {
        assert_eq!(**first, i);
        for (t, other) in seen.iter().enumerate().skip(1) {
            assert!(Arc::ptr_eq(first, &other[i]), "id {i}, thread {t}");
        }
    }
    assert_eq!(registry.len(), IDS);
    let m = registry.metrics();
    assert_eq!(m.inits, IDS as u64);
    assert_eq!(m.entries, IDS as u64);
}

#[test]
fn a_slow_init_blocks_only_its_own_id() {
    let registry = Arc::new(SessionRegistry::<u32>::new());
    registry.get_or_create("other", || 1).unwrap();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let slow = {
        let registry = registry.clone();
        thread::spawn(move || {
            registry
                .get_or_create("slow", || {
                    entered_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    7
                })
                .unwrap()
        })
    };
    entered_rx.recv().unwrap();
    // The init of "slow" is held open: other ids are read and created.
    assert_eq!(registry.get("other").as_deref(), Some(&1));
    assert_eq!(*registry.get_or_create("fresh", || 2).unwrap(), 2);
    assert!(registry.get("slow").is_none());
    // A second caller of "slow" waits for the one init.
    let waiter = {
        let registry = registry.clone();
        thread::spawn(move || registry.get_or_create("slow", || unreachable!()).unwrap())
    };
    release_tx.send(()).unwrap();
    let a = slow.join().unwrap();
    let b = waiter.join().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(*a, 7);
}

#[test]
fn a_failing_init_reaches_every_waiter_and_is_not_cached() {
    #[derive(Debug, PartialEq)]
    struct Nope;
    let registry = Arc::new(SessionRegistry::<u32>::new());
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let leader = {
        let registry = registry.clone();
        thread::spawn(move || {
            registry.try_get_or_create("x", || {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Err(Nope)
            })
        })
    };
    entered_rx.recv().unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let registry = registry.clone();
            thread::spawn(move || registry.try_get_or_create::<Nope>("x", || Ok(1)))
        })
        .collect();
    // Release the leader only once all three waiters joined its flight, so
    // that each of them must receive its error.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while registry.metrics().coalesced < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiters never joined the flight"
        );
        thread::yield_now();
    }
    release_tx.send(()).unwrap();
    assert!(matches!(leader.join().unwrap(), Err(SessionError::Failed(e)) if *e == Nope));
    let mut failed = 0;
    for w in waiters {
        match w.join().unwrap() {
            Err(SessionError::Failed(e)) => {
                assert_eq!(*e, Nope);
                failed += 1;
            }
            Ok(v) => assert_eq!(*v, 1),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(failed, 3, "every waiter gets the leader's error");
    // Not cached: the next call runs its init.
    assert_eq!(*registry.get_or_create("x", || 1).unwrap(), 1);
    assert_eq!(registry.metrics().init_errors, 1);
}

#[test]
fn a_panicking_init_poisons_nothing() {
    let registry = Arc::new(SessionRegistry::<u32>::new());
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let leader = {
        let registry = registry.clone();
        thread::spawn(move || {
            registry.get_or_create("p", || {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                panic!("init panicked on purpose")
            })
        })
    };
    entered_rx.recv().unwrap();
    let waiter = {
        let registry = registry.clone();
        thread::spawn(move || registry.get_or_create("p", || 5))
    };
    while registry.metrics().coalesced == 0 {
        thread::yield_now();
    }
    release_tx.send(()).unwrap();
    assert!(
        leader.join().is_err(),
        "the panic unwinds in its own caller"
    );
    assert!(matches!(
        waiter.join().unwrap(),
        Err(SessionError::Panicked)
    ));
    assert!(registry.get("p").is_none());
    assert_eq!(*registry.get_or_create("p", || 9).unwrap(), 9);
    assert_eq!(registry.len(), 1);
}

#[test]
fn bad_ids_get_typed_errors() {
    let registry = SessionRegistry::<u32>::builder()
        .max_id_len(8)
        .build()
        .unwrap();
    let err = |id: &str| match registry.get_or_create(id, || 0) {
        Err(SessionError::InvalidId(e)) => e,
        other => panic!("{id:?}: {other:?}"),
    };
    assert_eq!(err(""), InvalidId::Empty);
    assert_eq!(err("123456789"), InvalidId::TooLong { len: 9, max: 8 });
    assert_eq!(err("ab cd"), InvalidId::NotPrintable { position: 2 });
    assert_eq!(err("ab\ncd"), InvalidId::NotPrintable { position: 2 });
    assert!(registry.get_or_create("ok-1", || 0).is_ok());
    assert_eq!(registry.len(), 1);
}

#[test]
fn idle_timeout_and_lifetime_with_a_manual_clock() {
    let clock = clock();
    let events = Arc::new(Mutex::new(Vec::new()));
    let registry = {
        let events = events.clone();
        SessionRegistry::<u32>::builder()
            .clock(clock.clone())
            .idle_timeout(Duration::from_secs(10))
            .max_lifetime(Duration::from_secs(25))
            .sweep(Sweep::Manual)
            .eviction_listener(move |id, s, cause| {
                events.lock().unwrap().push((id.to_string(), *s, cause))
            })
            .build()
            .unwrap()
    };
    registry.get_or_create("a", || 1).unwrap();
    registry.get_or_create("b", || 2).unwrap();
    // Idle: 9.999 s after creation "a" is live; reading it moves its deadline.
    clock.advance(Duration::from_millis(9_999));
    assert!(registry.get("a").is_some());
    clock.advance(Duration::from_millis(1));
    // Exactly at its deadline "b" is expired (never returned), "a" is not.
    assert!(registry.get("b").is_none());
    assert!(registry.get("a").is_some());
    // Lifetime: "a" is read every 5 s but dies 25 s after creation.
    for _ in 0..2 {
        clock.advance(Duration::from_secs(5));
        assert!(registry.get("a").is_some());
    }
    clock.advance(Duration::from_millis(4_999));
    assert!(registry.get("a").is_some());
    clock.advance(Duration::from_millis(1));
    assert!(registry.get("a").is_none());
    assert!(!registry.contains("a"));
    registry.sweep();
    let mut got = events.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".into(), 1, EvictionCause::Expired),
            ("b".into(), 2, EvictionCause::Expired)
        ]
    );
    assert_eq!(registry.len(), 0);
    // An expired id is created anew.
    assert_eq!(*registry.get_or_create("a", || 3).unwrap(), 3);
}

#[test]
fn sweep_evicts_in_deadline_order_and_listener_runs_once_per_cause() {
    let clock = clock();
    let events = Arc::new(Mutex::new(Vec::new()));
    let registry = {
        let events = events.clone();
        SessionRegistry::<u32>::builder()
            .clock(clock.clone())
            .max_lifetime(Duration::from_secs(100))
            .sweep(Sweep::Manual)
            .eviction_listener(move |id, _, cause| {
                events.lock().unwrap().push((id.to_string(), cause))
            })
            .build()
            .unwrap()
    };
    for i in 0..5 {
        registry.get_or_create(&format!("s{i}"), || i).unwrap();
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(registry.remove("s4").as_deref(), Some(&4));
    assert!(registry.remove("s4").is_none());
    clock.advance(Duration::from_millis(96_500)); // now 101.5 s: s0 (100 s), s1 (101 s) are due
    assert_eq!(registry.sweep(), 2);
    assert_eq!(registry.clear(), 2);
    let mut got = events.lock().unwrap().clone();
    got[3..].sort(); // `clear` visits in hash order
    let want: Vec<(String, EvictionCause)> = vec![
        ("s4".into(), EvictionCause::Removed),
        ("s0".into(), EvictionCause::Expired),
        ("s1".into(), EvictionCause::Expired),
        ("s2".into(), EvictionCause::Cleared),
        ("s3".into(), EvictionCause::Cleared),
    ];
    assert_eq!(got, want);
    let m = registry.metrics();
    assert_eq!((m.removed, m.expired, m.cleared, m.entries), (1, 2, 2, 0));
}

#[test]
fn sweeper_runs_while_4_threads_read_and_write() {
    // A real background sweeper (1 ms) over a manual clock that a fifth
    // thread moves: no crash, never an expired session, listener exact.
    let clock = clock();
    let evicted = Arc::new(AtomicUsize::new(0));
    let registry = Arc::new({
        let evicted = evicted.clone();
        SessionRegistry::<(u64, SystemTime)>::builder()
            .clock(clock.clone())
            .max_lifetime(Duration::from_millis(50))
            .sweep(Sweep::Background {
                interval: Duration::from_millis(1),
            })
            .eviction_listener(move |_, _, _| {
                evicted.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap()
    });
    let created = AtomicUsize::new(0);
    let workers_done = AtomicUsize::new(0);
    thread::scope(|s| {
        let (created, workers_done) = (&created, &workers_done);
        for t in 0..4u64 {
            let (registry, clock) = (registry.clone(), clock.clone());
            s.spawn(move || {
                let mut x = t + 1;
                let mut n = 0;
                while n < 40_000 {
                    n += 1;
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = format!("k{}", x % 512);
                    if x % 4 == 0 {
                        registry
                            .get_or_create(&id, || {
                                created.fetch_add(1, Ordering::Relaxed);
                                // Read inside `init`: a thread preempted
                                // before the call must not stamp an old time.
                                (x, clock.now())
                            })
                            .unwrap();
                    } else if x % 16 == 1 {
                        registry.remove(&id);
                    } else if let Some(s) = registry.get(&id) {
                        assert_eq!(format!("k{}", s.0 % 512), id);
                    }
                    if x % 1024 == 3 {
                        registry.for_each(|id, s| assert_eq!(format!("k{}", s.0 % 512), id));
                    }
                }
                workers_done.fetch_add(1, Ordering::Relaxed);
            });
        }
        let clock = clock.clone();
        s.spawn(move || {
            // At least 2 s of clock, and time keeps moving for as long as
            // the workers run (on a loaded machine the ticks could otherwise
            // all pass before the workers create anything), then 100 ms more
            // so that every session is past its 50 ms lifetime.
            let mut ticks = 0;
            while ticks < 2_000 || workers_done.load(Ordering::Relaxed) < 4 {
                clock.advance(Duration::from_millis(1));
                ticks += 1;
                thread::yield_now();
            }
            clock.advance(Duration::from_millis(100));
        });
    });
    let created = created.load(Ordering::Relaxed);
    assert_eq!(registry.metrics().inits as usize, created);
    // The clock ended 100 ms past the last creation, so a final sweep leaves
    // nothing, and every created session went to the listener exactly once.
    // The background sweeper may be mid-eviction (an entry out of the index,
    // its listener call still to come): retry until it is done, boundedly.
    let mut settled = false;
    for _ in 0..100_000 {
        registry.sweep();
        if registry.is_empty() && evicted.load(Ordering::Relaxed) == created {
            settled = true;
            break;
        }
        thread::yield_now();
    }
    assert!(
        settled,
        "{} left, {} of {created} evicted",
        registry.len(),
        evicted.load(Ordering::Relaxed)
    );
    assert!(
        registry.metrics().expired > 0,
        "lifetimes of 50 ms, 2 s of clock"
    );
}

#[test]
fn flood_of_a_million_ids_rejects_past_the_cap() {
    const CAP: usize = 10_000;
    let registry = Arc::new(
        SessionRegistry::<u32>::builder()
            .max_sessions(CAP)
            .sweep(Sweep::Manual)
            .build()
            .unwrap(),
    );
    let rejected = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..4 {
            let (registry, rejected) = (&registry, &rejected);
            s.spawn(move || {
                for i in (t..1_000_000).step_by(4) {
                    match registry.get_or_create(&format!("f{i}"), || 0) {
                        Ok(_) => {}
                        Err(SessionError::Full { max }) => {
                            assert_eq!(max, CAP);
                            rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("{e}"),
                    }
                    if i % 1000 == 0 {
                        assert!(registry.len() <= CAP);
                    }
                }
            });
        }
    });
    assert_eq!(registry.len(), CAP);
    assert_eq!(rejected.load(Ordering::Relaxed), 1_000_000 - CAP);
    assert_eq!(registry.metrics().rejected, (1_000_000 - CAP) as u64);
}

#[test]
fn flood_of_a_million_ids_evicts_least_recently_used() {
    const CAP: usize = 10_000;
    let evicted = Arc::new(AtomicUsize::new(0));
    let registry = {
        let evicted = evicted.clone();
        SessionRegistry::<u32>::builder()
            .max_sessions(CAP)
            .capacity_policy(CapacityPolicy::EvictLeastRecentlyUsed)
            .sweep(Sweep::Manual)
            .eviction_listener(move |_, _, cause| {
                assert_eq!(cause, EvictionCause::Capacity);
                evicted.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap()
    };
    registry.get_or_create("hot", || 1).unwrap();
    for i in 0..1_000_000u32 {
        registry.get_or_create(&format!("f{i}"), || i).unwrap();
        // A session read between creations survives: second chance.
        assert!(registry.get("hot").is_some(), "hot evicted at {i}");
        if i % 1000 == 0 {
            assert!(registry.len() <= CAP);
        }
    }
    assert_eq!(registry.len(), CAP);
    assert_eq!(evicted.load(Ordering::Relaxed), 1_000_001 - CAP);
    // The newest ids are held, the oldest are gone.
    assert!(registry.contains("f999999"));
    assert!(!registry.contains("f0"));
}

/// A wall clock that steps back (NTP, a VM restored from a snapshot) neither
/// expires sessions early nor resurrects expired ones: deadlines are
/// absolute, and the last-access stamp never moves backwards, so a read
/// while the clock is behind does not shorten the idle deadline. A session
/// that a read or a sweep found expired is gone for good.
#[test]
fn a_clock_stepping_back_neither_expires_early_nor_resurrects() {
    let clock = clock();
    let start = clock.now();
    let expired = Arc::new(AtomicUsize::new(0));
    let registry = {
        let expired = expired.clone();
        SessionRegistry::<u32>::builder()
            .clock(clock.clone())
            .idle_timeout(Duration::from_secs(10))
            .max_lifetime(Duration::from_secs(60))
            .sweep(Sweep::Manual)
            .eviction_listener(move |_, _, cause| {
                assert_eq!(cause, EvictionCause::Expired);
                expired.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap()
    };
    registry.get_or_create("a", || 1).unwrap();
    clock.advance(Duration::from_secs(5));
    assert!(registry.get("a").is_some()); // idle deadline: start + 15 s
    // An hour back: still live, and reads there leave the stamp at +5 s.
    clock.set(start - Duration::from_secs(3_600));
    assert!(registry.get("a").is_some());
    assert_eq!(*registry.get_or_create("a", || 2).unwrap(), 1);
    assert_eq!(registry.sweep(), 0);
    // Back to normal time: the idle deadline is still start + 15 s.
    clock.set(start + Duration::from_millis(14_999));
    assert!(registry.get("a").is_some());
    clock.set(start + Duration::from_secs(40)); // idle since +14.999 s
    assert!(registry.get("a").is_none()); // the read evicts it
    assert_eq!(registry.sweep(), 0);
    // The clock stepping back again does not bring it back.
    clock.set(start);
    assert!(registry.get("a").is_none());
    assert_eq!(*registry.get_or_create("a", || 3).unwrap(), 3);
    assert_eq!(expired.load(Ordering::Relaxed), 1);
}
