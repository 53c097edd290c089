//! Loom models of `latchfree::audit::ring` (claim, publish, consume, close).
//!
//! DOCS TODO
#![cfg(latchfree_loom)]

use std::time::Duration;

use latchfree::audit::ring::{Consumer, OnFull, PushError, RingConfig, channel};
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

/// A two-slot ring: the smallest there is, so a third record wraps around.
fn two_slots(on_full: OnFull) -> RingConfig {
    RingConfig::default()
        .capacity(2)
        .slot_bytes(2)
        .on_full(on_full)
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

/// Model 1: two producers push two records each into two slots; the
/// consumer receives each record once, each producer's in order.
#[test]
fn block_two_producers_wrap_in_order() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Block));
        let producers: Vec<_> = (0..2u8)
            .map(|p| {
                let producer = producer.clone();
                thread::spawn(move || {
                    for i in 0..2u8 {
                        assert_eq!(producer.push(&[p, i]), Ok(()));
                    }
                })
            })
            .collect();
        drop(producer);

        let mut received = Vec::new();
        while received.len() < 4 {
            if drain_into(&mut consumer, &mut received) == 0 {
                thread::yield_now();
            }
        }
        for producer in producers {
            producer.join().unwrap();
        }
        assert_eq!(drain_into(&mut consumer, &mut received), 0);
        assert!(!consumer.is_drained(), "drained, but nobody closed");
        let accepted: Vec<Vec<Vec<u8>>> = (0..2u8)
            .map(|p| (0..2u8).map(|i| vec![p, i]).collect())
            .collect();
        assert_exactly_once_in_order(&received, &accepted);
    });
}

/// Model 2: one producer pushes three records into two slots, so its third
/// waits for the consumer to free the first slot, then closes.
#[test]
fn block_one_producer_wraps_then_closes() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Block));
        let writer = thread::spawn(move || {
            for i in 0..3u8 {
                assert_eq!(producer.push(&[0, i]), Ok(()));
            }
            producer.close();
            assert_eq!(producer.push(&[0, 3]), Err(PushError::Closed));
        });

        let mut received = Vec::new();
        while !consumer.is_drained() {
            if drain_into(&mut consumer, &mut received) == 0 {
                thread::yield_now();
            }
        }
        writer.join().unwrap();
        assert_eq!(drain_into(&mut consumer, &mut received), 0);
        assert_eq!(received, [[0, 0], [0, 1], [0, 2]]);
    });
}

/// Model 3: two producers push one record each while a third thread closes
/// the ring; the consumer drains until `is_drained`.
#[test]
fn block_close_races_claims() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Block));
        let producers: Vec<_> = (0..2u8)
            .map(|p| {
                let producer = producer.clone();
                thread::spawn(move || producer.push(&[p, 0]))
            })
            .collect();
        let closer = thread::spawn(move || producer.close());

        let mut received = Vec::new();
        while !consumer.is_drained() {
            if drain_into(&mut consumer, &mut received) == 0 {
                thread::yield_now();
            }
        }
        closer.join().unwrap();
        let mut accepted = Vec::new();
        for (p, producer) in (0..2u8).zip(producers) {
            match producer.join().unwrap() {
                Ok(()) => accepted.push(vec![vec![p, 0]]),
                Err(e) => {
                    assert_eq!(e, PushError::Closed, "producer {p}");
                    accepted.push(Vec::new());
                }
            }
        }
        assert_eq!(drain_into(&mut consumer, &mut received), 0);
        assert_exactly_once_in_order(&received, &accepted);
    });
}

/// Model 4: with `OnFull::Drop`, two producers push two records each into
/// two slots while the consumer drains; every record is received or
/// counted as dropped, never both.
#[test]
fn drop_mode_counts_what_it_refuses() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Drop));
        let producers: Vec<_> = (0..2u8)
            .map(|p| {
                let producer = producer.clone();
                thread::spawn(move || (0..2u8).map(|i| producer.push(&[p, i])).collect::<Vec<_>>())
            })
            .collect();
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
        let mut accepted = Vec::new();
        let mut refused = 0;
        for (p, producer) in (0..2u8).zip(producers) {
            let mut mine = Vec::new();
            for (i, result) in (0..2u8).zip(producer.join().unwrap()) {
                match result {
                    Ok(()) => mine.push(vec![p, i]),
                    Err(e) => {
                        assert_eq!(e, PushError::Full, "record {p}.{i}");
                        refused += 1;
                    }
                }
            }
            accepted.push(mine);
        }
        assert_eq!(drain_into(&mut consumer, &mut received), 0);
        assert_eq!(consumer.take_dropped(), 0);
        assert_eq!(dropped, refused, "dropped count vs Err(Full) results");
        assert_exactly_once_in_order(&received, &accepted);
    });
}

/// Model 5: the consumer sleeps in `Consumer::wait` between drains, so a
/// publish or the close must wake it. Under loom 0.7 `wait_timeout` never
/// times out, so a lost wake-up is a deadlock.
#[test]
fn consumer_wait_is_woken() {
    model(|| {
        let (producer, mut consumer) = channel(two_slots(OnFull::Block));
        let writer = thread::spawn(move || {
            for i in 0..2u8 {
                assert_eq!(producer.push(&[0, i]), Ok(()));
            }
            producer.close();
        });

        let mut received = Vec::new();
        while !consumer.is_drained() {
            if drain_into(&mut consumer, &mut received) == 0 {
                consumer.wait(Duration::from_secs(3600));
            }
        }
        writer.join().unwrap();
        assert_eq!(received, [[0, 0], [0, 1]]);
    });
}
