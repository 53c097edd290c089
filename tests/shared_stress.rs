//! `shared::Shared` under threads: more threads than cores, exact invariants.
//!
//! * readers never see a freed value while a writer swaps, stores, updates
//!   and resets (a value whose `Drop` clears a flag that readers assert);
//! * `get_or_init` runs one initialiser among 8 racing callers, and every
//!   caller gets that value;
//! * an initialiser that panics or fails poisons nothing: a waiter runs its
//!   own, and exactly one more call is made;
//! * every value ever stored is dropped exactly once, and only after its
//!   last guard or `Arc` is gone.

#[path = "model/xorshift.rs"]
mod xorshift;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use latchfree::shared::{Shared, SharedGuard};
use latchfree::stats::Stats;
use xorshift::XorShift;

const THREADS: usize = 8;

/// Counts values created and dropped.
#[derive(Default)]
struct Lives {
    created: AtomicU64,
    dropped: AtomicU64,
}

/// A value whose `Drop` clears `alive` (and counts itself once).
struct Canary {
    id: u64,
    alive: AtomicBool,
    lives: Arc<Lives>,
}

impl Canary {
    fn new(id: u64, lives: &Arc<Lives>) -> Self {
        lives.created.fetch_add(1, Ordering::Relaxed);
        Self {
            id,
            alive: AtomicBool::new(true),
            lives: Arc::clone(lives),
        }
    }

    fn check(&self) {
        assert!(
            self.alive.load(Ordering::Relaxed),
            "value {} read after its drop",
            self.id
        );
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        assert!(
            self.alive.swap(false, Ordering::Relaxed),
            "value {} dropped twice",
            self.id
        );
        self.lives.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn readers_never_see_a_freed_value_while_a_writer_swaps_and_resets() {
    const WRITES: u64 = 20_000;
    let lives = Arc::new(Lives::default());
    let shared = Shared::with_value(Canary::new(0, &lives));
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (shared, done, reads) = (&shared, &done, &reads);
            s.spawn(move || {
                let mut rng = XorShift::new(t as u64);
                let mut held: Vec<SharedGuard<Canary>> = Vec::new();
                let mut arcs: Vec<Arc<Canary>> = Vec::new();
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    match rng.below(8) {
                        // Hold a few guards across writes (past the fast
                        // slots), then check them all.
                        0 => {
                            if let Some(g) = shared.load() {
                                held.push(g);
                            }
                            if held.len() > 10 {
                                held.iter().for_each(|g| g.check());
                                held.clear();
                            }
                        }
                        1 => {
                            if let Some(a) = shared.load_arc() {
                                arcs.push(a);
                            }
                            if arcs.len() > 4 {
                                arcs.iter().for_each(|a| a.check());
                                arcs.clear();
                            }
                        }
                        2 => {
                            let g = shared
                                .get_or_init(|| Canary::new(u64::MAX, &Arc::new(Lives::default())));
                            g.check();
                        }
                        _ => {
                            if let Some(g) = shared.load() {
                                g.check();
                            }
                        }
                    }
                    n += 1;
                }
                held.iter().for_each(|g| g.check());
                arcs.iter().for_each(|a| a.check());
                reads.fetch_add(n, Ordering::Relaxed);
            });
        }
        let (shared, done, lives) = (&shared, &done, &lives);
        s.spawn(move || {
            let mut rng = XorShift::new(99);
            for id in 1..=WRITES {
                match rng.below(5) {
                    0 => shared.store(Canary::new(id, lives)),
                    1 => drop(shared.swap(Canary::new(id, lives))),
                    2 => drop(shared.rcu(|_| Canary::new(id, lives))),
                    3 => shared.reset(),
                    _ => drop(shared.take()),
                }
            }
            done.store(true, Ordering::Relaxed);
        });
    });
    assert!(reads.load(Ordering::Relaxed) > 0);
    // Readers may have initialised an empty `Shared` with a value counted in
    // a private `Lives`; ours are exact: all but the installed one are gone.
    let installed = shared.load().is_some_and(|v| Arc::ptr_eq(&v.lives, &lives));
    let (created, dropped) = (
        lives.created.load(Ordering::Relaxed),
        lives.dropped.load(Ordering::Relaxed),
    );
    assert_eq!(created - dropped, u64::from(installed));
    drop(shared);
    assert_eq!(
        lives.dropped.load(Ordering::Relaxed),
        lives.created.load(Ordering::Relaxed)
    );
}

#[test]
fn get_or_init_runs_one_initialiser_among_racing_callers() {
    const ROUNDS: usize = 300;
    for round in 0..ROUNDS {
        let stats = Stats::new();
        let shared: Shared<usize> = Shared::builder().stats(&stats).build().unwrap();
        let calls = AtomicUsize::new(0);
        let arrived = AtomicUsize::new(0);
        let start = Barrier::new(THREADS);
        let got: Vec<SharedGuard<usize>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (shared, calls, arrived, start) = (&shared, &calls, &arrived, &start);
                    s.spawn(move || {
                        start.wait();
                        arrived.fetch_add(1, Ordering::Relaxed);
                        shared.get_or_init(|| {
                            calls.fetch_add(1, Ordering::Relaxed);
                            // In half the rounds, hold the init open until
                            // every caller has arrived, so they all contend.
                            if round % 2 == 0 {
                                while arrived.load(Ordering::Relaxed) < THREADS {
                                    std::thread::yield_now();
                                }
                            }
                            t
                        })
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(calls.load(Ordering::Relaxed), 1, "round {round}");
        assert!(
            got.iter().all(|g| SharedGuard::ptr_eq(g, &got[0])),
            "round {round}"
        );
        let snap = stats.snapshot();
        assert_eq!(snap.counter("shared_inits_total"), Some(1));
        assert_eq!(snap.counter("shared_init_failures_total"), Some(0));
    }
}

#[test]
fn a_panicking_initialiser_poisons_nothing_and_a_waiter_retries() {
    for round in 0..100 {
        let shared: Shared<u64> = Shared::new();
        let calls = AtomicUsize::new(0);
        let start = Barrier::new(THREADS);
        let results: Vec<Option<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (shared, calls, start) = (&shared, &calls, &start);
                    s.spawn(move || {
                        start.wait();
                        catch_unwind(AssertUnwindSafe(|| {
                            *shared.get_or_init(|| {
                                if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                                    panic!("the first initialiser fails");
                                }
                                42
                            })
                        }))
                        .ok()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // One panicked, one more ran and succeeded, nobody else ran one.
        assert_eq!(calls.load(Ordering::Relaxed), 2, "round {round}");
        assert_eq!(results.iter().filter(|r| r.is_none()).count(), 1);
        assert!(results.iter().flatten().all(|&v| v == 42));
        assert_eq!(shared.load().as_deref(), Some(&42));
    }
}

#[test]
fn a_failing_initialiser_returns_its_error_and_caches_nothing() {
    const FAILURES: usize = 3;
    let shared: Shared<u64> = Shared::new();
    let calls = AtomicUsize::new(0);
    let start = Barrier::new(THREADS);
    let results: Vec<Result<u64, usize>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let (shared, calls, start) = (&shared, &calls, &start);
                s.spawn(move || {
                    start.wait();
                    shared
                        .get_or_try_init(|| match calls.fetch_add(1, Ordering::Relaxed) {
                            n if n < FAILURES => Err(n),
                            _ => Ok(7),
                        })
                        .map(|g| *g)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::Relaxed), FAILURES + 1);
    let mut errors: Vec<usize> = results.iter().filter_map(|r| r.err()).collect();
    errors.sort_unstable();
    assert_eq!(errors, [0, 1, 2], "each failed caller gets its own error");
    assert!(results.iter().flatten().all(|&v| v == 7));
}

#[test]
fn every_value_is_dropped_exactly_once_after_its_last_handle() {
    let lives = Arc::new(Lives::default());
    let shared: Shared<Canary> = Shared::new();
    let next = AtomicU64::new(0);
    let kept: Vec<Arc<Canary>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (shared, next, lives) = (&shared, &next, &lives);
                s.spawn(move || {
                    let mut rng = XorShift::new(1000 + t as u64);
                    let mut kept = Vec::new();
                    let id = || next.fetch_add(1, Ordering::Relaxed);
                    for _ in 0..5_000 {
                        match rng.below(7) {
                            0 => shared.store(Canary::new(id(), lives)),
                            1 => kept.extend(shared.swap(Canary::new(id(), lives))),
                            2 => drop(shared.rcu(|_| Canary::new(id(), lives))),
                            3 => drop(shared.get_or_init(|| Canary::new(id(), lives))),
                            4 => shared.reset(),
                            5 => kept.extend(shared.load().map(SharedGuard::into_arc)),
                            _ => drop(shared.take()),
                        }
                        if kept.len() > 50 {
                            kept.drain(..25);
                        }
                    }
                    kept
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let dropped = || lives.dropped.load(Ordering::Relaxed);
    let created = lives.created.load(Ordering::Relaxed);
    // Alive now: the installed value and those still held in `kept`.
    let mut alive: Vec<*const Canary> = kept.iter().map(Arc::as_ptr).collect();
    alive.extend(shared.load_arc().as_ref().map(Arc::as_ptr));
    alive.sort_unstable();
    alive.dedup();
    assert_eq!(created - dropped(), alive.len() as u64);
    kept.iter().for_each(|c| c.check());
    drop(kept);
    assert_eq!(created - dropped(), u64::from(shared.is_set()));
    drop(shared);
    assert_eq!(dropped(), created);
}
