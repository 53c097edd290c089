//! Loom models of `crate::audit::ring`: claim, publish, consume and
//! wrap around, close, the drop mode's refusals, and both sleeps (a producer
//! parked for room, the consumer in `Consumer::wait`).
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" CARGO_TARGET_DIR=target-loom \
//!     cargo test --release --test loom_ring
//! ```
//!
//! At the default bound of 3 preemptions the seven tests take about 38 s
//! one after another (`-- --test-threads 1`): model 1 23 s, model 4 10 s,
//! model 3B 3 s, the others under 0.3 s each. With cargo's default of one
//! test thread per core they took 53 to 61 s on the two-core machine they
//! were measured on (another process was using part of a core), not
//! counting the build. With `LOOM_MAX_PREEMPTIONS=2` they take about 4 s.
//!
//! Every model uses a two-slot ring (the smallest `capacity` allows), so a
//! third record wraps around, and records `[producer, i]`, so the checks can
//! tell whose record arrived and in which order. Results are collected
//! first and asserted after every loom object (producer, consumer, join
//! handle) is dropped: a panic while one is alive panics again in its
//! destructor, and the test binary aborts without reporting the other
//! models. A deadlock can still abort it; run the failing model alone
//! (`-- --exact NAME`).
//!
//! # Models
//!
//! 1. [`block_two_producers_wrap_in_order`]: `OnFull::Block`; two producers
//!    push two records each while the consumer drains (yielding when it
//!    finds nothing) until it has four. Every push returns `Ok`, each record
//!    arrives once, each producer's in order, and nothing more is published.
//!    Four records in two slots: both producers can wait for room at once,
//!    and both park in some executions (154,176 of 442,033).
//! 2. [`block_one_producer_wraps_then_closes`]: one producer pushes three
//!    records, closes, and pushes a fourth; the consumer drains until
//!    `is_drained`. The three arrive in order and the fourth push returns
//!    `Closed`. The third push waits for room but never parks (0 of 137
//!    executions; see "Where the producers sleep").
//! 3. [`block_close_races_claims`] (3B) and [`drop_close_races_claims`]
//!    (3D): two producers push one record each while the ring is closed: in
//!    3B (`OnFull::Block`, claim by `fetch_add`) by a third thread with
//!    `Producer::close`, in 3D (`OnFull::Drop`, claim by compare-and-swap)
//!    by the consumer with `Consumer::close` after its first drain. The
//!    consumer drains until `is_drained`. Every push returns `Ok` or
//!    `Closed`, every `Ok` record is received exactly once, and no record is
//!    published after `is_drained`. 3D closes from the consumer: with a
//!    third thread, as in 3B, it took 19 s, and the only mutation it caught
//!    that this 3D does not was M2 (which models 1, 2 and 4 catch).
//! 4. [`drop_mode_counts_what_it_refuses`]: `OnFull::Drop`; two producers
//!    push two records each while the consumer drains and adds up
//!    `take_dropped` until received plus dropped make four. Every push
//!    returns `Ok` or `Full`, the drop count equals the number of `Full`s,
//!    and the received records are exactly the `Ok` ones, each producer's in
//!    order.
//! 5. [`consumer_wait_is_woken`]: one producer pushes two records and
//!    keeps its handle open (no `close`, no drop) until the consumer has
//!    both; the consumer calls `Consumer::wait` whenever a drain finds
//!    nothing. Loom 0.7.3's `Condvar::wait_timeout` ignores the timeout (it
//!    is `wait`, with a "TODO: implement timing out"), so this model waits
//!    for a real notification: a lost wake-up, which the `std` build turns
//!    into a delay of one timeout, is a deadlock here. It used to end with
//!    `close()`, whose own wake-up hid a push that woke nobody (M30).
//!    [`a_quiet_push_woken_later_is_not_lost`] runs the same with each
//!    push made without its wake-up and the producer's
//!    `Producer::wake_consumer` after it (what `log_wait` does), each
//!    record behind a one-byte header.
//! 6. [`dropping_the_consumer_releases_waiting_producers`]: two producers
//!    push two records each and nobody drains; the main thread drops the
//!    consumer and then pushes once more, which returns `Closed`. Each
//!    producer's pushes are `Ok`s then `Closed`s, at most two `Ok` in all,
//!    and no producer stays parked (they park in 249 of 2,191 executions).
//!
//! # Mutations of `src/audit/ring.rs`
//!
//! Each mutation was applied to a scratch copy of the crate and every model
//! was run alone against it. How a model fails: `C` loom's "Causality
//! violation" on a slot's record; `A` an assertion of the model; `D` loom's
//! "deadlock"; `L` "Model exceeded maximum number of branches" (some thread
//! spins forever); `-` it passes. `²` fails with 2 preemptions already, `³`
//! needs 3.
//!
//! | #   | mutation                                          | 1  | 2  | 3B | 3D | 4  | 5  | 6  |
//! | --- | ------------------------------------------------- | -- | -- | -- | -- | -- | -- | -- |
//! | M1  | publishing stamp store `Relaxed`                  | C² | C² | C² | L² | C² | C² | -  |
//! | M2  | freeing stamp store (in `drain`) `Relaxed`        | C² | C² | -  | -  | C² | -  | -  |
//! | M3  | stamp load in `drain` `Relaxed`                   | C² | C² | C² | C² | C² | C² | -  |
//! | M4  | `try_claim`: `stamp < pos` retries, not `Full`    | -  | -  | -  | -  | L² | -  | -  |
//! | M5  | no `SeqCst` fence in `wake_producers`             | L² | -  | -  | -  | -  | -  | -  |
//! | M6  | no `SeqCst` fence in `wait_for_room`              | L² | -  | -  | -  | -  | -  | -  |
//! | M7  | `close` does not store `closed_at`                | -  | L² | L² | L² | -  | -* | -  |
//! | M8a | `wait_for_room`: stamp load of the spin `Relaxed` | C² | C² | -  | -  | -  | -  | -  |
//! | M8b | `wait_for_room`: stamp load under lock `Relaxed`  | C² | -  | -  | -  | -  | -  | -  |
//! | M9  | `try_claim`'s stamp load `Relaxed`                | -  | -  | -  | L² | C² | -  | -  |
//! | M10 | no `SeqCst` fence in `wake_consumer`              | -  | -  | -  | -  | -  | D² | -  |
//! | M11 | no `SeqCst` fence in `Consumer::wait`             | -  | -  | -  | -  | -  | D² | -  |
//! | M12 | `closed_at` stored `Relaxed`                      | -  | -  | -  | -  | -  | -  | -  |
//! | M13 | a `Block` claim ignores the `CLOSED` bit          | -  | A² | A² | -  | -  | -  | A² |
//! | M14 | `close` loads and stores `tail`, no `fetch_or`    | -  | -  | A² | A² | -  | -  | A² |
//! | M15 | `drain` never calls `wake_producers`              | L² | -  | -  | -  | -  | -  | -  |
//! | M16 | `wake_producers` calls `notify_one`               | L³ | -  | -  | -  | -  | -  | -  |
//! | M17 | `push` publishes before writing the record        | C² | C² | C² | C² | C² | C² | -  |
//! | M18 | `drain` frees the slot before reading it          | C² | C² | -  | -  | C² | -  | -  |
//! | M19 | `close`'s `fetch_or` `Relaxed`                    | -  | -  | -  | -  | -  | -  | -  |
//! | M20 | `is_drained` tests `head > closed_at`             | -  | L² | L² | L² | -  | -* | -  |
//! | M21 | `try_claim` does not count the drop               | -  | -  | -  | -  | L² | -  | -  |
//! | M22 | the spin ignores `consumer_gone`                  | -  | -  | -  | -  | -  | -  | -  |
//! | M23 | `closed_at` is `before + 1`                       | -  | L² | L² | L² | -  | -* | -  |
//! | M24 | `closed_at` is `before - 1` (when not 0)          | -  | A² | A² | A² | -  | -* | -  |
//! | M25 | `try_claim` ignores the `CLOSED` bit              | -  | -  | -  | A² | -  | -  | -  |
//! | M26 | `Consumer::drop` does not `notify_all`            | -  | -  | -  | -  | -  | -  | D³ |
//! | M27 | a parked producer ignores `consumer_gone`         | -  | -  | -  | -  | -  | -  | D³ |
//! | M28 | `Consumer::drop` does not set `consumer_gone`     | -  | -  | -  | -  | -  | -  | D² |
//! | M29 | `Consumer::drop` does not close the ring          | -  | -  | -  | -  | -  | -  | A² |
//! | M30 | `push` does not call `wake_consumer`              | .  | .  | .  | .  | .  | D  | .  |
//!
//! `.`: not run (M30 was rerun against model 5 only, at 3 preemptions).
//! `-*`: model 5 caught these while it ended with `close()`; it no longer
//! closes or asks `is_drained` (so that only the pushes' wake-ups can end
//! its waits), and models 2, 3B and 3D still catch each of them. M30 was
//! found by mutation testing after this table was first drawn: with the
//! old model 5 it survived every model, and the `close()` at its end woke
//! the consumer in its place. Model 5 now deadlocks under M30 (1.7 s), and
//! the unit test `audit::ring::tests::a_push_wakes_a_sleeping_consumer_without_its_timeout`
//! fails within its 5 s bound.
//!
//! Both stamp loads of `wait_for_room` `Relaxed` at once fail as M8a does.
//! The `L`s of 3D under M1 and M9 come from `try_claim`: a producer that
//! saw the other's stamp without the claim behind it re-reads a stale
//! `tail` forever (that loop has no yield, so loom keeps offering the stale
//! value). Under M4 a full `Drop` producer spins the same way; under M7,
//! M20 and M23 the consumer waits for an `is_drained` that never comes
//! (model 5 sleeps instead, so M7 is a deadlock there); under M21 it waits
//! for a drop count that never comes.
//!
//! The three survivors are equivalent mutants:
//!
//! * M12 and M19: the `Release`/`Acquire` pair on `closed_at` and the
//!   `AcqRel` of the close's `fetch_or` order nothing that anyone reads.
//!   Which claims come before the close is decided by the modification
//!   order of `tail` alone, and the consumer never reads a record because
//!   of `closed_at`: `is_drained` only compares it with `head`, and every
//!   record below `head` was handed over by its own stamp.
//! * M22: a producer whose consumer is gone spins its back-off steps, parks,
//!   and finds `consumer_gone` under the lock at once. Slower, not wrong.
//!
//! # Where the producers sleep
//!
//! Under loom `backoff` yields, and `wait_for_room` parks only after 8
//! yields that each find the producer's slot still taken. At a yield loom
//! runs another thread if one can run, and coming back to the producer
//! before that thread yields or blocks costs a preemption; after the yield
//! the producer's stamp load cannot return a stamp it saw before if a newer
//! one exists. So within 3 preemptions a producer parks only if the other
//! threads keep yielding, blocking or finishing without freeing its slot.
//! In model 2 the only other thread is the consumer, which drains the slot
//! when it runs: the producer never parks, and none of model 2's failures
//! involves the sleep. In model 1 the two producers can yield to each other
//! while the consumer waits (when the running thread yields, loom's first
//! choice is the thread that has yielded least, and the consumer yields
//! more), so both park; in model 6 the consumer is gone. So model 1 alone
//! checks the producers' wake-up (M5, M6, M8b, M15, M16), and model 6 alone
//! their release by `Consumer::drop`.
//!
//! In model 1 a lost wake-up shows as "exceeded maximum number of
//! branches", not as a deadlock: the consumer never blocks (it drains and
//! yields), so when a producer sleeps through its wake-up, the consumer
//! spins forever waiting for that producer's record. Under M5 or M6 a
//! producer increments `producers_waiting` and then, under the lock, still
//! loads the stamp from before the consumer freed its slot, while the
//! consumer, after freeing it, loads `producers_waiting` from before the
//! increment: the store-buffering outcome that the two `SeqCst` fences
//! forbid together. Nobody notifies, and the producer sleeps for good.
//! Under M16 both producers sleep, and `notify_one` wakes only one of them.
use std::time::Duration;

use crate::audit::ring::{Consumer, OnFull, Producer, PushError, RingConfig, channel};
use loom::thread;

use super::common::model;

/// What each push of one producer returned, in push order.
type Results = Vec<Result<(), PushError>>;

/// A two-slot ring: the smallest there is, so a third record wraps around.
fn two_slots(on_full: OnFull) -> RingConfig {
    RingConfig::default()
        .capacity(2)
        .slot_bytes(2)
        .on_full(on_full)
}

/// Spawns `count` producers; producer `p` pushes `[p, 0]`, `[p, 1]`, … (`each`
/// records) and returns what every push returned.
fn spawn_producers(producer: &Producer, count: u8, each: u8) -> Vec<thread::JoinHandle<Results>> {
    (0..count)
        .map(|p| {
            let producer = producer.clone();
            thread::spawn(move || (0..each).map(|i| producer.push(&[p, i])).collect())
        })
        .collect()
}

fn join_all(producers: Vec<thread::JoinHandle<Results>>) -> Vec<Results> {
    producers.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Per producer, the records whose push returned `Ok`, in push order.
fn accepted(results: &[Results]) -> Vec<Vec<Vec<u8>>> {
    (0u8..)
        .zip(results)
        .map(|(p, mine)| {
            (0u8..)
                .zip(mine)
                .filter(|(_, r)| r.is_ok())
                .map(|(i, _)| vec![p, i])
                .collect()
        })
        .collect()
}

/// Drains everything published so far into `out`; returns how many.
fn drain_into(consumer: &mut Consumer, out: &mut Vec<Vec<u8>>) -> usize {
    consumer.drain(usize::MAX, |record| out.push(record.to_vec()))
}

/// Drains `consumer` until it has received `n` records, sleeping in its
/// `wait` whenever the ring is empty: only wake-ups can end those sleeps.
fn receive(consumer: &mut Consumer, n: usize) -> Vec<Vec<u8>> {
    let mut received = Vec::new();
    while received.len() < n {
        if drain_into(consumer, &mut received) == 0 {
            consumer.wait(Duration::from_secs(3600));
        }
    }
    received
}

/// `received` holds exactly the records of `accepted` (one list per
/// producer, in push order), each once, and each producer's in its order.
fn assert_exactly_once_in_order(received: &[Vec<u8>], accepted: &[Vec<Vec<u8>>]) {
    let total: usize = accepted.iter().map(Vec::len).sum();
    assert_eq!(
        received.len(),
        total,
        "received {received:?}, accepted {accepted:?}"
    );
    for (p, mine) in accepted.iter().enumerate() {
        let got: Vec<_> = received
            .iter()
            .filter(|r| usize::from(r[0]) == p)
            .cloned()
            .collect();
        assert_eq!(
            &got, mine,
            "producer {p}: received {received:?}, accepted {accepted:?}"
        );
    }
}

/// Model 1: two producers push two records each into two slots, so both
/// can wait for room at once; the consumer receives each record once, each
/// producer's in order.
#[test]
fn block_two_producers_wrap_in_order() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Block));
        let producers = spawn_producers(&producer, 2, 2);
        drop(producer);

        let mut received = Vec::new();
        while received.len() < 4 {
            if drain_into(&mut consumer, &mut received) == 0 {
                thread::yield_now();
            }
        }
        let results = join_all(producers);
        let late = drain_into(&mut consumer, &mut received);
        let drained = consumer.is_drained();
        drop(consumer);

        assert!(results.iter().flatten().all(Result::is_ok), "{results:?}");
        assert_eq!(late, 0, "{late} more record(s) after all four");
        assert!(!drained, "drained, but nobody closed");
        assert_exactly_once_in_order(&received, &accepted(&results));
    });
}

/// Model 2: one producer pushes three records into two slots, so its third
/// waits for the consumer to free the first slot; then it closes and
/// pushes once more.
#[test]
fn block_one_producer_wraps_then_closes() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Block));
        let writer = thread::spawn(move || {
            let results: Results = (0..3u8).map(|i| producer.push(&[0, i])).collect();
            producer.close();
            (results, producer.push(&[0, 3]))
        });

        let mut received = Vec::new();
        while !consumer.is_drained() {
            if drain_into(&mut consumer, &mut received) == 0 {
                thread::yield_now();
            }
        }
        let (results, after_close) = writer.join().unwrap();
        let late = drain_into(&mut consumer, &mut received);
        drop(consumer);

        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(after_close, Err(PushError::Closed), "push after close");
        assert_eq!(late, 0, "{late} record(s) published after is_drained");
        assert_eq!(received, [[0, 0], [0, 1], [0, 2]]);
    });
}

/// Who closes the ring in model 3.
#[derive(Clone, Copy)]
enum Closer {
    /// A third thread, with `Producer::close`.
    Thread,
    /// The consumer, with `Consumer::close`, after its first drain.
    Consumer,
}

/// Model 3: two producers push one record each while the ring is closed;
/// the consumer drains until `is_drained`. Every push that returned `Ok` is
/// received exactly once, every other returned `Closed`.
fn close_races_claims(on_full: OnFull, closer: Closer) {
    model(move || {
        let (producer, mut consumer) = channel(two_slots(on_full));
        let producers = spawn_producers(&producer, 2, 1);
        let closing = match closer {
            Closer::Thread => Some(thread::spawn(move || producer.close())),
            Closer::Consumer => None,
        };

        let mut received = Vec::new();
        if let Closer::Consumer = closer {
            drain_into(&mut consumer, &mut received);
            consumer.close();
        }
        while !consumer.is_drained() {
            if drain_into(&mut consumer, &mut received) == 0 {
                thread::yield_now();
            }
        }
        if let Some(closing) = closing {
            closing.join().unwrap();
        }
        let results = join_all(producers);
        let late = drain_into(&mut consumer, &mut received);
        drop(consumer);

        for result in results.iter().flatten() {
            assert!(
                matches!(result, Ok(()) | Err(PushError::Closed)),
                "{results:?}"
            );
        }
        assert_eq!(late, 0, "{late} record(s) published after is_drained");
        assert_exactly_once_in_order(&received, &accepted(&results));
    });
}

/// Model 3 with [`OnFull::Block`] (claims by `fetch_add`); a third thread
/// closes.
#[test]
fn block_close_races_claims() {
    close_races_claims(OnFull::Block, Closer::Thread);
}

/// Model 3 with [`OnFull::Drop`] (claims by compare-and-swap); the consumer
/// closes.
#[test]
fn drop_close_races_claims() {
    close_races_claims(OnFull::Drop, Closer::Consumer);
}

/// Model 4: with `OnFull::Drop`, two producers push two records each into
/// two slots while the consumer drains; every record is received or
/// counted as dropped, never both, and the drops are the `Err(Full)`s.
#[test]
fn drop_mode_counts_what_it_refuses() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Drop));
        let producers = spawn_producers(&producer, 2, 2);
        drop(producer);

        let mut received = Vec::new();
        let mut dropped = 0;
        while received.len() as u64 + dropped < 4 {
            let n = drain_into(&mut consumer, &mut received);
            dropped += consumer.take_dropped();
            if n == 0 {
                thread::yield_now();
            }
        }
        let results = join_all(producers);
        let late = drain_into(&mut consumer, &mut received);
        let late_dropped = consumer.take_dropped();
        drop(consumer);

        let flat = || results.iter().flatten();
        assert!(
            flat().all(|r| matches!(r, Ok(()) | Err(PushError::Full))),
            "{results:?}"
        );
        let refused = flat().filter(|r| r.is_err()).count() as u64;
        assert_eq!((late, late_dropped), (0, 0), "after all four");
        assert_eq!(dropped, refused, "dropped count vs Err(Full): {results:?}");
        assert_exactly_once_in_order(&received, &accepted(&results));
    });
}

/// Model 5: the consumer sleeps in `Consumer::wait` between drains, so each
/// publish, or the close, must wake it. Under loom 0.7 `wait_timeout` never
/// times out, so a lost wake-up is a deadlock.
#[test]
fn consumer_wait_is_woken() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Block));
        // The producer neither closes nor drops its handle before the
        // consumer is done (it hands it back): only the pushes' own
        // wake-ups can end the consumer's waits.
        let writer = thread::spawn(move || {
            let results: Results = (0..2u8).map(|i| producer.push(&[0, i])).collect();
            (results, producer)
        });

        let received = receive(&mut consumer, 2);
        let (results, producer) = writer.join().unwrap();
        drop(consumer);
        drop(producer);

        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(received, [[0, 0], [0, 1]]);
    });
}

/// Model 5b: as model 5, but each record is pushed without its wake-up
/// (`push_pos_after(.., wake: false)`, as `log_wait` does, with a header
/// in front) and the producer wakes the consumer afterwards
/// (`Producer::wake_consumer`, as a waiting caller does before it sleeps):
/// the later fence-and-check must still never lose the wake-up, and the
/// consumer receives header and record as one.
#[test]
fn a_quiet_push_woken_later_is_not_lost() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Block));
        let writer = thread::spawn(move || {
            let results: Results = (0..2u8)
                .map(|i| {
                    let pos = producer.push_pos_after(&[9], &[0, i], false);
                    producer.wake_consumer();
                    pos.map(drop)
                })
                .collect();
            (results, producer)
        });

        let received = receive(&mut consumer, 2);
        let (results, producer) = writer.join().unwrap();
        drop(consumer);
        drop(producer);

        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(received, [[9, 0, 0], [9, 0, 1]]);
    });
}

/// Model 6: dropping the consumer (which nobody drains before) releases
/// producers waiting for room, and a push that starts after the drop is
/// refused.
#[test]
fn dropping_the_consumer_releases_waiting_producers() {
    model(|| {
        let (producer, consumer) = channel(two_slots(OnFull::Block));
        let producers = spawn_producers(&producer, 2, 2);

        drop(consumer);
        let after_drop = producer.push(&[2, 0]);
        let results = join_all(producers);
        drop(producer);

        assert_eq!(after_drop, Err(PushError::Closed), "push after the drop");
        for (p, mine) in results.iter().enumerate() {
            assert!(
                mine.iter()
                    .all(|r| matches!(r, Ok(()) | Err(PushError::Closed))),
                "producer {p}: {mine:?}"
            );
            assert!(
                mine.is_sorted_by_key(Result::is_err),
                "producer {p}: accepted after a refusal: {mine:?}"
            );
        }
        let accepted = results.iter().flatten().filter(|r| r.is_ok()).count();
        assert!(
            accepted <= 2,
            "{accepted} records accepted into 2 slots that nobody frees"
        );
    });
}
