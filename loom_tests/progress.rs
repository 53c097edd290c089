//! Loom models of `crate::audit::progress`: the writer raises a level
//! that callers wait on, and publishes an error or its stop under a lock.
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target-loom \
//!     cargo test --release --test loom_progress
//! ```
//!
//! At the default bound of 3 preemptions the three tests take about 3.5 s
//! (model 1 3.1 s, models 2 and 3 under 0.1 s each) on the two-core machine
//! they were measured on, not counting the build. With
//! `LOOM_MAX_PREEMPTIONS=2` they take about 0.5 s, with 4 about 23 s (and
//! catch no more of the mutations below).
//!
//! Each model has one writer (the main thread) and two waiters, for levels
//! 1 and 2. Before raising the level to `k` the writer writes cell `k - 1`
//! of a loom `UnsafeCell` array; a waiter whose wait returned `Ok` reads the
//! cells below its target, so loom reports a causality violation if `Ok`
//! can come without the writer's writes in its past. Results are collected
//! first and asserted after every loom object is dropped (see
//! `loom_tests/ring.rs`).
//!
//! `Progress::wait` polls (with `poll`) or spins (without) a few back-off
//! steps before it sleeps; under loom each step yields, and the crate makes
//! the counts small there (2 and 1), so waiters reach the sleep within the
//! preemption bound without the writer having to wait for them. In model 1
//! a waiter takes the sleep branch in 13,952 of 19,277 executions (both
//! waiters spin only) and blocks on the condition variable in 8,460; in
//! models 2 and 3 the waiter for 2 sleeps in all 1,955.
//!
//! # Models
//!
//! 1. [`raises_wake_every_waiter`]: the writer raises the level to 1, then
//!    to 2. Both waits return `Ok`, each having seen the level at or above
//!    its target and the cells written before the raise that reached it. A
//!    waiter that sleeps through the raise it waits for is a deadlock. Run
//!    four times, for each combination of the two waiters' `poll`.
//! 2. [`an_error_fails_the_waiters_above_the_level`]: the writer raises to
//!    1, then publishes an error with `update`. The waiter for 1 returns
//!    `Ok`, the waiter for 2 `Failed` with that error. The waiter for 1
//!    spins, the one for 2 polls.
//! 3. [`a_stop_releases_the_waiters_above_the_level`]: the same with
//!    `stopped`: `Ok` for 1, `Stopped` for 2.
//! 4. [`async_waiters_are_woken_by_a_raise_or_an_error`]: the waiter for 2
//!    is a future (`Progress::wait_async`, run by `loom::future::block_on`)
//!    beside a blocking waiter for 1; the writer raises to 1, then to 2 (or
//!    publishes an error). The future returns `Ok` having seen the cells
//!    (or `Failed`); a waker registered after the writer took the list and
//!    before its re-check, or a re-check that misses the raise, is a
//!    deadlock in `block_on`.
//!
//! # Mutations of `src/audit/progress.rs`
//!
//! Each mutation was applied to a scratch copy of the crate and every model
//! was run alone against it. How a model fails: `C` loom's "Causality
//! violation" on a cell; `A` an assertion of the model; `D` loom's
//! "deadlock"; `-` it passes. `²` fails with 2 preemptions already.
//!
//! | #   | mutation                                              | 1  | 2  | 3  |
//! | --- | ----------------------------------------------------- | -- | -- | -- |
//! | P1  | no `SeqCst` fence in `wake`                           | D² | -  | -  |
//! | P2  | no `SeqCst` fence in `wait`                           | D² | -  | -  |
//! | P3  | `raise` stores the level `Relaxed`                    | C² | C² | C² |
//! | P4  | `Level::get` loads `Relaxed`                          | C² | C² | C² |
//! | P5  | `update` does not `notify_all`                        | -  | D² | D² |
//! | P6  | `wake` notifies without taking the lock               | D² | -  | -  |
//! | P7  | `wake` calls `notify_one`                             | D² | -  | -  |
//!
//! Model 4 (an async waiter) was run against one mutation: P8, no `SeqCst`
//! fence in `LevelWait::poll` after it counts itself a sleeper: `D` (a
//! deadlock in `block_on`).
//! | P8  | a sleeper checks error and stop before the level      | -  | A² | A² |
//! | P9  | a sleeper ignores `stopped`                           | -  | -  | D² |
//! | P10 | `wait` does not count itself in `sleepers`            | D² | -  | -  |
//! | P11 | both fences `AcqRel` instead of `SeqCst`              | D² | -  | -  |
//! | P12 | a sleeper waits before its first check under the lock | D² | A² | A² |
//! | P13 | `wait` never decrements `sleepers`                    | -  | -  | -  |
//! | P14 | no back-off steps under loom (sleep at once)          | -  | -  | -  |
//!
//! Model 1 alone checks the wake-up of a raise (P1, P2, P6, P7, P10, P11):
//! in models 2 and 3 the raise is followed by an `update`, which always
//! locks and notifies, so a waiter for 1 that slept through the raise is
//! woken by the error or the stop and still finds its level. Under P1, P2
//! or P11 the waiter increments `sleepers` and then, under the lock, still
//! loads the level from before the raise, while the writer, after its
//! store, loads `sleepers` from before the increment: the store-buffering
//! outcome that the two `SeqCst` fences forbid together. Under P6 the
//! notification falls between the sleeper's check under the lock and its
//! wait. Under P8 and P12 the waiter for 1, woken by the error or stop after
//! its level was reached, reports the error instead of `Ok`.
//!
//! The two survivors are equivalent mutants: under P13 the writer takes the
//! lock and notifies after every raise, as if someone slept; under P14 every
//! waiter sleeps at once. Slower, not wrong.
use std::io;
use std::time::Duration;

use crate::audit::progress::{Level, POLL, Progress, Stalled};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::common::model;

/// Whether the waiters for 1 and 2 poll before they sleep (models 2 and 3;
/// model 1 runs all four combinations).
const POLLS: [bool; 2] = [false, true];

/// What the writer does after raising the level to 1.
#[derive(Clone, Copy, Debug)]
enum Then {
    /// Raises it to 2.
    Raise,
    /// Publishes an error.
    Fail,
    /// Stops.
    Stop,
}

/// What the waiter hands back (loom-free, to assert after the model's
/// objects are dropped).
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// `Ok`, with the level and the cells below the target read after it.
    Reached { level: u64, cells: Vec<u64> },
    /// `Err(Stalled::Failed)` with this message.
    Failed(String),
    /// `Err(Stalled::Stopped)`.
    Stopped,
}

struct State {
    progress: Progress<()>,
    level: Level,
    /// Cell `k` is written (with `k + 1`) before the raise to `k + 1`, and
    /// never again.
    cells: [UnsafeCell<u64>; 2],
}

// SAFETY: each cell is written once, by the writer, before the raise that
// publishes it, and read only by waiters that saw that raise; loom checks
// exactly this (a read without the raise in its past is a causality
// violation).
unsafe impl Sync for State {}

/// A waiter for `target`; it polls before it sleeps if `poll`.
fn waiter(state: Arc<State>, target: u64, poll: bool) -> thread::JoinHandle<Outcome> {
    thread::spawn(move || {
        let waited = state.progress.wait(
            &state.level,
            target,
            if poll { POLL } else { Duration::ZERO },
        );
        outcome(&state, target, waited)
    })
}

/// An async waiter for `target`: a future run by loom's `block_on`.
fn async_waiter(state: Arc<State>, target: u64) -> thread::JoinHandle<Outcome> {
    thread::spawn(move || {
        let waited = loom::future::block_on(state.progress.wait_async(&state.level, target));
        outcome(&state, target, waited)
    })
}

/// What a wait for `target` that returned `waited` hands back.
fn outcome(state: &State, target: u64, waited: Result<(), Stalled>) -> Outcome {
    match waited {
        Ok(()) => {
            let level = state.level.get();
            let cells = (0..target as usize)
                // SAFETY: see `State`; loom checks it.
                .map(|k| state.cells[k].with(|v| unsafe { *v }))
                .collect();
            Outcome::Reached { level, cells }
        }
        Err(Stalled::Failed(error)) => Outcome::Failed(error.to_string()),
        Err(Stalled::Stopped) => Outcome::Stopped,
    }
}

/// Runs one writer and waiters for 1 and 2 (polling as `polls` says);
/// returns their outcomes.
fn run(then: Then, polls: [bool; 2]) -> [Outcome; 2] {
    run_with(then, |state, target| {
        waiter(state, target, polls[target as usize - 1])
    })
}

/// As [`run`], with the waiter for 2 a future.
fn run_async(then: Then) -> [Outcome; 2] {
    run_with(then, |state, target| match target {
        1 => waiter(state, 1, false),
        _ => async_waiter(state, target),
    })
}

fn run_with(
    then: Then,
    spawn: impl Fn(Arc<State>, u64) -> thread::JoinHandle<Outcome>,
) -> [Outcome; 2] {
    let state = Arc::new(State {
        progress: Progress::new(),
        level: Level::new(0),
        cells: [UnsafeCell::new(0), UnsafeCell::new(0)],
    });
    let waiters = [1, 2].map(|target| spawn(state.clone(), target));

    state.cells[0].with_mut(|v| unsafe { *v = 1 });
    state.progress.raise(&state.level, 1);
    match then {
        Then::Raise => {
            state.cells[1].with_mut(|v| unsafe { *v = 2 });
            state.progress.raise(&state.level, 2);
        }
        Then::Fail => state
            .progress
            .update(|s| s.error = Some(std::sync::Arc::new(io::Error::other("disk full")))),
        Then::Stop => state.progress.update(|s| s.stopped = true),
    }
    let outcomes = waiters.map(|w| w.join().unwrap());
    drop(state);
    outcomes
}

/// Model 1: two raises, two waiters; both return `Ok` having seen their
/// level and the writes before it.
#[test]
fn raises_wake_every_waiter() {
    for polls in [[false, false], [false, true], [true, false], [true, true]] {
        model(move || raises_wake_every_waiter_polling(polls));
    }
}

fn raises_wake_every_waiter_polling(polls: [bool; 2]) {
    let [first, second] = run(Then::Raise, polls);
    // The waiter for 1 may return before or after the second raise.
    match first {
        Outcome::Reached { level, cells } => {
            assert!(level >= 1, "polls {polls:?}: Ok for 1 at level {level}");
            assert_eq!(cells, [1], "polls {polls:?}");
        }
        other => panic!("polls {polls:?}: waiter for 1: {other:?}"),
    }
    assert_eq!(
        second,
        Outcome::Reached {
            level: 2,
            cells: vec![1, 2]
        },
        "polls {polls:?}"
    );
}

/// Model 2: a raise to 1, then an error: the waiter for 1 returns `Ok`, the
/// waiter for 2 the error.
#[test]
fn an_error_fails_the_waiters_above_the_level() {
    model(|| {
        let [first, second] = run(Then::Fail, POLLS);
        assert_eq!(
            first,
            Outcome::Reached {
                level: 1,
                cells: vec![1]
            }
        );
        assert_eq!(second, Outcome::Failed("disk full".into()));
    });
}

/// Model 3: a raise to 1, then a stop: `Ok` for 1, `Stopped` for 2.
#[test]
fn a_stop_releases_the_waiters_above_the_level() {
    model(|| {
        let [first, second] = run(Then::Stop, POLLS);
        assert_eq!(
            first,
            Outcome::Reached {
                level: 1,
                cells: vec![1]
            }
        );
        assert_eq!(second, Outcome::Stopped);
    });
}

/// Model 4: the waiter for 2 is a future; the writer raises to 2, or
/// fails after raising to 1.
#[test]
fn async_waiters_are_woken_by_a_raise_or_an_error() {
    model(|| {
        let [first, second] = run_async(Then::Raise);
        assert!(matches!(first, Outcome::Reached { .. }), "{first:?}");
        match second {
            Outcome::Reached { level, cells } => {
                assert_eq!(level, 2);
                assert_eq!(cells, [1, 2]);
            }
            other => panic!("the async waiter for 2 got {other:?}"),
        }
    });
    model(|| {
        let [first, second] = run_async(Then::Fail);
        assert!(matches!(first, Outcome::Reached { .. }), "{first:?}");
        assert_eq!(second, Outcome::Failed("disk full".into()));
    });
}
