//! The async twins (feature `async`) on a 2-worker tokio runtime: a
//! creation storm whose initialisers await while hits on other keys keep
//! completing, exactly one init per id, a cancelled leader and the takeover
//! (also at 200 seeded cancellation points), re-entry from an async
//! initialiser, blocking and async callers on one flight, and the audit
//! log's async waits sharing fsyncs.
#![cfg(feature = "async")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use latchfree::audit::{AuditLog, Durability, Guarantee};
use latchfree::cache::{LoadError, TtlCache};
use latchfree::session::{SessionError, SessionRegistry};
use latchfree::shared::Shared;
use tokio::sync::watch;

fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until `cond` holds, failing the test after 20 s (a hang).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
)]
fn a_storm_of_1000_tasks_over_100_ids_inits_once_each_while_hits_flow() {
    const IDS: usize = 100;
    const TASKS: usize = 1_000;
    two_workers().block_on(async {
        let sessions = Arc::new(
            SessionRegistry::<usize>::builder()
                .max_sessions(IDS + 10)
                .build()
                .unwrap(),
        );
        for k in 0..8 {
            sessions.get_or_create(&format!("hot-{k}"), || k).unwrap();
        }
        let inits = Arc::new(AtomicUsize::new(0));
        let hits = Arc::new(AtomicU64::new(0));
        let (release, gate) = watch::channel(false);
        let hitter = {
            let (sessions, hits) = (sessions.clone(), hits.clone());
            let mut done = gate.clone();
            tokio::spawn(async move {
                let mut k = 0;
                // Hits are synchronous: no future, no lock.
                while !*done.borrow_and_update() {
                    assert!(sessions.get(&format!("hot-{}", k % 8)).is_some());
                    hits.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                    if k % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (sessions, inits, gate) = (sessions.clone(), inits.clone(), gate.clone());
                tokio::spawn(async move {
                    let id = format!("id-{}", t % IDS);
                    sessions
                        .get_or_create_async(&id, async {
                            inits.fetch_add(1, Ordering::Relaxed);
                            let mut gate = gate;
                            gate.wait_for(|open| *open).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            t % IDS
                        })
                        .await
                })
            })
            .collect();
        // Every id's leader is inside its initialiser and 900 waiters wait
        // on them, on 2 workers: if a waiter parked its worker, no hit
        // would complete now.
        until("100 initialisers run", || {
            inits.load(Ordering::Relaxed) == IDS
        })
        .await;
        until("every waiter joined a flight", || {
            sessions.metrics().coalesced == (TASKS - IDS) as u64
        })
        .await;
        let before = hits.load(Ordering::Relaxed);
        until("hits complete during the loads", || {
            hits.load(Ordering::Relaxed) >= before + 10_000
        })
        .await;
        release.send(true).unwrap();
        for (t, task) in tasks.into_iter().enumerate() {
            let got = task.await.unwrap().unwrap();
            assert_eq!(*got, t % IDS);
            assert!(Arc::ptr_eq(
                &got,
                &sessions.get(&format!("id-{}", t % IDS)).unwrap()
            ));
        }
        hitter.await.unwrap();
        assert_eq!(
            inits.load(Ordering::Relaxed),
            IDS,
            "an id was initialised twice"
        );
        assert_eq!(sessions.metrics().inits, IDS as u64 + 8);
        assert_eq!(sessions.len(), IDS + 8);
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
)]
fn a_cancelled_leader_hands_the_load_to_a_waiter() {
    two_workers().block_on(async {
        let cache = Arc::new(TtlCache::<u32, String>::new(16));
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load_async(1, std::future::pending::<String>())
                    .await
            })
        };
        until("the leader loads", || cache.metrics().inits == 1).await;
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get_or_load_async(1, async { "w".into() }).await })
        };
        until("the waiter joins", || cache.metrics().coalesced == 1).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        // The waiter takes over: it runs its own loader, not an error.
        assert_eq!(waiter.await.unwrap().unwrap(), "w");
        assert_eq!(cache.metrics().inits, 2);
        assert_eq!(cache.get(&1).as_deref(), Some("w"));
        assert_eq!(cache.len(), 1, "the cancelled load left no slot behind");
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
)]
fn leaders_cancelled_at_200_seeded_points_strand_no_waiter() {
    // Paused time on one thread: each seed cancels the leader at another
    // point of its load (before it starts, mid-sleep, after it finished).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        for seed in 0..200u64 {
            let cache = Arc::new(TtlCache::<u32, u64>::new(4));
            let loads = Arc::new(AtomicUsize::new(0));
            let load = |who: u64| {
                let loads = loads.clone();
                async move {
                    loads.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(seed % 7)).await;
                    tokio::task::yield_now().await;
                    who
                }
            };
            let leader = {
                let (cache, load) = (cache.clone(), load(1_000));
                tokio::spawn(async move { cache.get_or_load_async(0, load).await })
            };
            let waiters: Vec<_> = (0..3)
                .map(|w| {
                    let (cache, load) = (cache.clone(), load(w));
                    tokio::spawn(async move { cache.get_or_load_async(0, load).await })
                })
                .collect();
            for _ in 0..seed % 5 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_micros(seed * 37 % 9_000)).await;
            leader.abort();
            let leader = leader.await;
            let got: Vec<u64> = futures_join(waiters).await;
            let value = cache.get(&0).expect("the key has a value");
            assert!(
                got.iter().all(|v| *v == value),
                "seed {seed}: {got:?} vs {value}"
            );
            if let Ok(Ok(v)) = leader {
                assert_eq!(v, value, "seed {seed}");
            }
            assert!(
                loads.load(Ordering::Relaxed) <= 2,
                "seed {seed}: more than one takeover"
            );
            assert_eq!(cache.len(), 1, "seed {seed}");
        }
    });
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<Result<u64, LoadError>>>) -> Vec<u64> {
    let mut got = Vec::new();
    for task in tasks {
        got.push(task.await.unwrap().unwrap());
    }
    got
}

#[test]
#[cfg_attr(
    miri,
    ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
)]
fn an_async_initialiser_asking_for_its_own_key_gets_recursive_at_once() {
    two_workers().block_on(async {
        let cache = TtlCache::<u32, u32>::new(16);
        let started = Instant::now();
        let outer = cache
            .get_or_load_async(5, async {
                let inner = cache.get_or_load_async(5, async { 6 }).await;
                assert!(matches!(inner, Err(LoadError::Recursive)), "{inner:?}");
                // Another key loads from inside the loader.
                assert_eq!(cache.get_or_load_async(6, async { 6 }).await.unwrap(), 6);
                5
            })
            .await;
        assert_eq!(outer.unwrap(), 5);
        assert!(started.elapsed() < Duration::from_secs(1));

        let sessions = SessionRegistry::<u32>::new();
        let outer = sessions
            .get_or_create_async("s", async {
                // Across an await point, still inside the initialiser.
                tokio::task::yield_now().await;
                let inner = sessions.get_or_create_async("s", async { 2 }).await;
                assert!(matches!(inner, Err(SessionError::Recursive)), "{inner:?}");
                // The blocking twin from inside the async initialiser too.
                let inner = sessions.get_or_create("s", || 3);
                assert!(matches!(inner, Err(SessionError::Recursive)), "{inner:?}");
                1
            })
            .await;
        assert_eq!(*outer.unwrap(), 1);
    });
}

#[test]
fn shared_async_init_is_single_flight_takes_over_and_refuses_re_entry() {
    two_workers().block_on(async {
        let shared = Arc::new(Shared::<u32>::new());
        let (release, gate) = watch::channel(false);
        let inits = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..20u32)
            .map(|i| {
                let (shared, inits, mut gate) = (shared.clone(), inits.clone(), gate.clone());
                tokio::spawn(async move {
                    *shared
                        .get_or_init_async(async move {
                            inits.fetch_add(1, Ordering::Relaxed);
                            gate.wait_for(|open| *open).await.unwrap();
                            i
                        })
                        .await
                })
            })
            .collect();
        until("one initialiser runs", || {
            inits.load(Ordering::Relaxed) == 1
        })
        .await;
        release.send(true).unwrap();
        let mut got = Vec::new();
        for c in callers {
            got.push(c.await.unwrap());
        }
        assert!(got.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(inits.load(Ordering::Relaxed), 1);

        // A cancelled initialiser: a waiter runs its own.
        let shared = Arc::new(Shared::<u32>::new());
        let leader = {
            let shared = shared.clone();
            tokio::spawn(async move { *shared.get_or_init_async(std::future::pending()).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let waiter = {
            let shared = shared.clone();
            tokio::spawn(async move { *shared.get_or_init_async(async { 7 }).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        leader.abort();
        assert_eq!(waiter.await.unwrap(), 7);

        // Re-entry panics in the task at once instead of hanging it.
        let shared = Arc::new(Shared::<u32>::new());
        let reentrant = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let inner = shared.clone();
                *shared
                    .get_or_init_async(async move { *inner.get_or_init_async(async { 1 }).await })
                    .await
            })
        };
        let joined = tokio::time::timeout(Duration::from_secs(10), reentrant)
            .await
            .expect("re-entry hung");
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(*shared.get_or_init_async(async { 9 }).await, 9);
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
)]
fn blocking_and_async_callers_share_one_flight() {
    two_workers().block_on(async {
        let cache = Arc::new(TtlCache::<u32, u32>::new(16));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let blocking_leader = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache.get_or_load(3, || {
                    release_rx.recv().unwrap();
                    30
                })
            })
        };
        until("the blocking leader loads", || cache.metrics().inits == 1).await;
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get_or_load_async(3, async { 31 }).await })
            })
            .collect();
        until("the tasks join", || cache.metrics().coalesced == 8).await;
        release_tx.send(()).unwrap();
        for w in waiters {
            assert_eq!(w.await.unwrap().unwrap(), 30);
        }
        assert_eq!(blocking_leader.join().unwrap().unwrap(), 30);
        assert_eq!(cache.metrics().inits, 1);
    });
}

#[test]
fn async_disk_waits_from_64_tasks_share_fsyncs_and_a_dropped_wait_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        AuditLog::builder(dir.path())
            .durability(Durability::None)
            .open()
            .unwrap(),
    );
    two_workers().block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    for j in 0..4 {
                        log.log_wait_async(
                            &serde_json::json!({ "task": i, "n": j }),
                            Guarantee::Disk,
                        )
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let fsyncs = log.metrics().fsyncs;
        assert!(
            (1..256).contains(&fsyncs),
            "{fsyncs} fsyncs for 256 Disk waits"
        );

        // Dropped before its first poll, or after one: the event is queued
        // exactly once either way.
        drop(log.log_wait_async(&serde_json::json!({ "dropped": 1 }), Guarantee::Disk));
        {
            let wait = log.log_wait_async(&serde_json::json!({ "dropped": 2 }), Guarantee::Disk);
            let _ = tokio::time::timeout(Duration::ZERO, wait).await;
        }
        let ticket = log.log(&serde_json::json!({ "last": true })).unwrap();
        log.wait_async(ticket, Guarantee::Os).await.unwrap();
        let head = log.flush_async().await.unwrap().expect("a head");
        assert_eq!(head.seq, 64 * 4 + 3 - 1);
    });
    log.close().unwrap();
    let report = latchfree::audit::verify(dir.path()).unwrap();
    assert_eq!(report.records, 64 * 4 + 3);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "crossbeam-epoch's tagged pointers need permissive provenance"
)]
fn engine_call_async_runs_a_cached_tool_once_for_concurrent_tasks_and_audits_each_call() {
    use latchfree::engine::{CacheConfig, Call, Engine};

    let dir = tempfile::tempdir().unwrap();
    for locked in [false, true] {
        let engine = Arc::new(
            Engine::builder()
                .locked(locked)
                .audit_dir(dir.path().join(if locked { "locked" } else { "latchfree" }))
                .guarantee(Guarantee::Disk)
                .cache("query", CacheConfig::default())
                .build()
                .unwrap(),
        );
        let runs = Arc::new(AtomicUsize::new(0));
        two_workers().block_on(async {
            let (release, gate) = watch::channel(false);
            let calls: Vec<_> = (0..32)
                .map(|i| {
                    let (engine, runs, mut gate) = (engine.clone(), runs.clone(), gate.clone());
                    tokio::spawn(async move {
                        let session = format!("s{}", i % 4);
                        engine
                            .call_async(&Call::new(&session, "query", "{\"q\":1}"), |args| {
                                let args = args.to_owned();
                                async move {
                                    runs.fetch_add(1, Ordering::Relaxed);
                                    gate.wait_for(|open| *open).await.unwrap();
                                    Ok(format!("result of {args}"))
                                }
                            })
                            .await
                    })
                })
                .collect();
            if !locked {
                // One run: the 31 other tasks await it, on 2 workers.
                until("the tool runs", || runs.load(Ordering::Relaxed) == 1).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert_eq!(runs.load(Ordering::Relaxed), 1);
            }
            release.send(true).unwrap();
            for c in calls {
                let reply = c.await.unwrap().unwrap();
                assert_eq!(&*reply.output, "result of {\"q\":1}");
            }
        });
        if !locked {
            assert_eq!(runs.load(Ordering::Relaxed), 1, "the cached tool ran twice");
        }
        assert_eq!(engine.counters().calls, 32);
        assert_eq!(engine.counters().sessions_created, 4);
        engine.flush().unwrap();
        let audited = latchfree::audit::verify(engine.audit_dir())
            .unwrap()
            .records;
        assert_eq!(audited, 32, "locked: {locked}");
    }
}
