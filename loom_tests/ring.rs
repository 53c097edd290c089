//! Loom models of `latchfree::audit::ring`: claim, publish, consume, close,
//! and the parking of producers and consumer.
//!
//! Each model uses two-slot rings, so wrap-around and waiting for room happen
//! within a handful of operations:
//!
//! 1. Two producers × two records, `Block`: every record once, each
//!    producer's in order.
//! 2. One producer, three records into two slots, then close: the third
//!    waits for the consumer to free a slot; the consumer stops exactly when
//!    drained.
//! 3. Close racing claims, with `Block` (`fetch_add` claims, a third thread
//!    closes) and `Drop` (compare-and-swap claims, the consumer closes):
//!    every `Ok` push is drained once, every refusal is `Closed`, and the
//!    consumer terminates.
//! 4. `Drop` mode, two producers × two records: received + counted drops ==
//!    pushed, and the received records are exactly the accepted ones.
//! 5. The consumer parks in `Consumer::wait` between drains: no lost wake-up.
//! 6. Dropping the consumer releases producers parked for room.
//!
//! Run (the `model` helper bounds preemptions at 3 unless
//! `LOOM_MAX_PREEMPTIONS` says otherwise):
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" CARGO_TARGET_DIR=target-loom \
//!     cargo test --release --test loom_ring
//! ```
#![cfg(latchfree_loom)]

use std::time::Duration;

use latchfree::audit::ring::{Consumer, OnFull, Producer, PushError, RingConfig, channel};
use loom::thread;

/// `loom::model`, with a preemption bound of [`DEFAULT_PREEMPTIONS`] unless
/// `LOOM_MAX_PREEMPTIONS` sets one.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(DEFAULT_PREEMPTIONS);
    builder.check(f);
}

/// See the module docs for what this bound costs and catches.
const DEFAULT_PREEMPTIONS: usize = 3;

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
        let writer = thread::spawn(move || {
            let results: Results = (0..2u8).map(|i| producer.push(&[0, i])).collect();
            producer.close();
            results
        });

        let mut received = Vec::new();
        while !consumer.is_drained() {
            if drain_into(&mut consumer, &mut received) == 0 {
                consumer.wait(Duration::from_secs(3600));
            }
        }
        let results = writer.join().unwrap();
        drop(consumer);

        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(received, [[0, 0], [0, 1]]);
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
