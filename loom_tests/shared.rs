//! Loom models of `crate::shared::Shared`'s single-flight
//! initialisation racing initialisers, writers and failures.
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" CARGO_TARGET_DIR=target-loom \
//!     cargo test --locked --release --test loom_shared
//! ```
//!
//! What is modelled: the protocol `Shared` builds on its value slot (the
//! init lock, the re-read under it, the flight a leader installs under it
//! and its waiters wait on, the compare-and-swap from empty). The
//! slot itself is `arc_swap::ArcSwapOption`, whose atomics loom cannot see;
//! under `--cfg latchfree_loom` it is replaced by a loom `Mutex` with the
//! same contract (each operation one atomic step), so these models check
//! the protocol, and arc-swap's own reclamation is trusted to arc-swap's
//! test suite (and exercised by `tests/shared_stress.rs`).
//!
//! # Models
//!
//! 1. [`racing_initialisers_run_one`]: two threads call `get_or_init` on an
//!    empty `Shared`. One initialiser runs; both get the same value.
//! 2. [`init_never_replaces_a_racing_store`]: one thread calls
//!    `get_or_init`, another `store`s. Whatever the order, the stored value
//!    is the one left installed (an initialiser that ran meanwhile has its
//!    value dropped), and `get_or_init` returned either value.
//! 3. [`a_failed_init_lets_a_waiter_run_its_own`]: one thread's
//!    initialiser fails, another's succeeds. The successful value ends up
//!    installed; the failing thread got its own error only if its
//!    initialiser ran, and otherwise the successful value; at most two
//!    initialisers run, and one only when the failing one ran first; each
//!    initialiser finds the `Shared` empty when it starts.
//! 4. [`init_racing_a_reset`]: `get_or_init` against `take`: one
//!    initialiser, and the value taken (if any) is the initialised one.
//!
//! # Mutations of `src/shared.rs`
//!
//! Each mutation was applied to the crate and every model run against it
//! (default preemption bound). `A`: an assertion of the model fails (or the
//! code under test panics); `-`: it passes.
//!
//! | #  | mutation                                                       | 1 | 2 | 3 | 4 |
//! | -- | -------------------------------------------------------------- | - | - | - | - |
//! | S1 | no re-read under the init lock                                 | A | - | A | - |
//! | S2 | install with `swap` instead of the compare-and-swap from empty | - | A | - | A |
//! | S3 | the init lock is released before the initialiser runs          | A | - | A | - |
//!
//! Since the initialiser runs outside the init lock (waiters wait on the
//! leader's flight, so that async waiters can await it), S3's place is taken
//! by "the flight is removed before the value is installed"; the models
//! were not re-run against that mutation.
//!
//! (S2 fails model 4 by a panic: the initialiser's caller can read back an
//! empty slot after a racing `take`.) The four models take about 0.01 s
//! together at the default bound (3 preemptions); the loom build in its own
//! target directory takes about 3 minutes cold on two cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::common::model;
use crate::shared::Shared;
use loom::thread;

#[test]
fn racing_initialisers_run_one() {
    model(|| {
        let shared = Arc::new(Shared::<u32>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let spawn = |id: u32| {
            let (shared, calls) = (Arc::clone(&shared), Arc::clone(&calls));
            thread::spawn(move || {
                shared
                    .get_or_init(|| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        id
                    })
                    .into_arc()
            })
        };
        let (a, b) = (spawn(1), spawn(2));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &shared.load_arc().unwrap()));
    });
}

#[test]
fn init_never_replaces_a_racing_store() {
    model(|| {
        let shared = Arc::new(Shared::<u32>::new());
        let init = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || *shared.get_or_init(|| 1))
        };
        let store = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.store(2))
        };
        let got = init.join().unwrap();
        store.join().unwrap();
        assert!(got == 1 || got == 2, "{got}");
        assert_eq!(shared.load().as_deref(), Some(&2));
    });
}

#[test]
fn a_failed_init_lets_a_waiter_run_its_own() {
    model(|| {
        let shared = Arc::new(Shared::<u32>::new());
        let failing_ran = Arc::new(AtomicUsize::new(0));
        let good_ran = Arc::new(AtomicUsize::new(0));
        let failing = {
            let (shared, ran) = (Arc::clone(&shared), Arc::clone(&failing_ran));
            thread::spawn(move || {
                shared
                    .get_or_try_init(|| {
                        ran.fetch_add(1, Ordering::Relaxed);
                        assert!(!shared.is_set(), "an initialiser ran on a set value");
                        Err("refused")
                    })
                    .map(|v| *v)
            })
        };
        let good = {
            let (shared, ran) = (Arc::clone(&shared), Arc::clone(&good_ran));
            thread::spawn(move || {
                shared
                    .get_or_try_init(|| {
                        ran.fetch_add(1, Ordering::Relaxed);
                        assert!(!shared.is_set(), "an initialiser ran on a set value");
                        Ok::<_, &str>(7)
                    })
                    .map(|v| *v)
            })
        };
        let failing_got = failing.join().unwrap();
        let good_got = good.join().unwrap();
        let (failing_ran, good_ran) = (
            failing_ran.load(Ordering::Relaxed),
            good_ran.load(Ordering::Relaxed),
        );
        assert_eq!(good_got, Ok(7));
        assert_eq!(good_ran, 1, "the successful initialiser runs once");
        match failing_got {
            Err(e) => assert_eq!((e, failing_ran), ("refused", 1)),
            Ok(v) => assert_eq!((v, failing_ran), (7, 0)),
        }
        assert_eq!(shared.load().as_deref(), Some(&7));
    });
}

#[test]
fn init_racing_a_reset() {
    model(|| {
        let shared = Arc::new(Shared::<u32>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let init = {
            let (shared, calls) = (Arc::clone(&shared), Arc::clone(&calls));
            thread::spawn(move || {
                shared
                    .get_or_init(|| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        5
                    })
                    .into_arc()
            })
        };
        let take = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.take())
        };
        let got = init.join().unwrap();
        let taken = take.join().unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(*got, 5);
        match taken {
            Some(t) => {
                assert!(Arc::ptr_eq(&t, &got));
                assert!(shared.load().is_none());
            }
            None => assert!(Arc::ptr_eq(&shared.load_arc().unwrap(), &got)),
        }
    });
}
