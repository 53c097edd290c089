//! A simple, obviously-correct model of `latchfree::audit::ring`, and the one
//! code path that applies an op sequence to both a real ring and the model and
//! checks that they agree.
//!
//! This file is a plain module (no `#[test]`), included twice:
//!
//! * by the cargo-fuzz target `fuzz/fuzz_targets/ring_ops.rs`
//!   (`#[path = "../../tests/model/ring_model.rs"] mod ring_model;`), which
//!   decodes fuzzer bytes into a [`Config`] and [`Op`]s (the `arbitrary`
//!   derive below is active there: a binary, built without `cfg(test)`) and
//!   calls [`run`];
//! * by the integration test `tests/ring_model.rs`
//!   (`#[path = "model/ring_model.rs"] mod ring_model;`), which builds op
//!   sequences from a seeded pseudo-random generator and calls [`run`], so the
//!   model check also runs in plain `cargo test`.
//!
//! Everything runs on one thread. The model is the queue of accepted records
//! (a `VecDeque`), the count of drops not yet taken, and a closed flag. What
//! is checked, after every op: each push's result exactly (`Ok`, `Full`,
//! `Closed`, `TooLarge { len, max }`), each drain's records (content, order
//! and count) and return value, `take_dropped`, and `is_drained`; at the end,
//! the records still queued and the drops still counted.
//!
//! In [`OnFull::Block`] mode a push on a full, open ring would wait forever
//! for a consumer that is this very thread, so the harness skips exactly the
//! pushes the model says would block (queue length == capacity and not
//! closed); every other push provably finds its slot free or the ring closed.

use std::collections::VecDeque;
use std::time::Duration;

use latchfree::audit::ring::{Consumer, OnFull, Producer, PushError, RingConfig, channel};

/// Most producer handles (clones) a run keeps.
pub const MAX_PRODUCERS: usize = 4;

// `cfg_attr(not(test), derive(arbitrary::Arbitrary))`: the derive is for the
// fuzz target (a binary, built without `cfg(test)`); the integration test is
// built with `cfg(test)` and has no `arbitrary` dependency. Not cargo-fuzz's
// `cfg(fuzzing)`: the main crate's `unexpected_cfgs` lint rejects that name,
// and no `#[allow]` below a crate root silences it for a `cfg_attr`.

/// The ring's configuration, in raw form (reduced by [`Config::ring`]).
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub struct Config {
    /// Slots requested: `2 + capacity % 15` (2..=16); the ring rounds it up
    /// to a power of two (2, 4, 8 or 16).
    pub capacity: u8,
    /// Bytes each slot holds before growing: `slot_bytes % 33` (0..=32).
    pub slot_bytes: u8,
    /// The largest record accepted (0..=255).
    pub max_record: u8,
    /// [`OnFull::Block`] when set (pushes that would block are skipped),
    /// [`OnFull::Drop`] otherwise.
    pub block: bool,
    /// Call `take_dropped` after every op (otherwise only on
    /// [`Op::TakeDropped`] and at the end, so drops accumulate in the ring).
    pub eager_take: bool,
}

impl Config {
    /// Slots requested from the ring.
    pub fn slots(&self) -> usize {
        2 + usize::from(self.capacity) % 15
    }

    /// The ring's initial slot buffer size.
    pub fn slot_bytes(&self) -> usize {
        usize::from(self.slot_bytes) % 33
    }

    /// The largest record accepted.
    pub fn max_record(&self) -> usize {
        usize::from(self.max_record)
    }

    fn on_full(&self) -> OnFull {
        if self.block {
            OnFull::Block
        } else {
            OnFull::Drop
        }
    }

    fn ring(&self) -> RingConfig {
        RingConfig::default()
            .capacity(self.slots())
            .slot_bytes(self.slot_bytes())
            .max_record(self.max_record())
            .on_full(self.on_full())
    }
}

/// One operation on a ring. `producer` fields pick a handle by
/// `index % handles`.
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Op {
    /// `producer.push(record)` of a record of `len % (max_record + 3)` bytes
    /// (so 0 up to `max_record + 2`), its bytes derived from `fill` and the
    /// push's sequence number (see [`record`]).
    Push { producer: u8, len: u16, fill: u8 },
    /// `consumer.drain(max, ..)`; `max == u8::MAX` means `usize::MAX`.
    Drain { max: u8 },
    /// `consumer.take_dropped()`.
    TakeDropped,
    /// `producer.close()`.
    CloseProducer { producer: u8 },
    /// `consumer.close()`.
    CloseConsumer,
    /// `consumer.wait(Duration::ZERO)`: must return at once, changing nothing.
    Wait,
    /// Clones a producer handle (up to [`MAX_PRODUCERS`]).
    CloneProducer { producer: u8 },
    /// Drops the consumer: the ring closes; later consumer ops are skipped.
    DropConsumer,
}

/// The bytes of the `seq`-th push: the sequence number's little-endian bytes
/// first (as many as fit), then a pattern from `fill`. Records differ from
/// their neighbours, so a lost, duplicated, reordered or stale record shows.
pub fn record(seq: u64, len: usize, fill: u8) -> Vec<u8> {
    let seq_bytes = seq.to_le_bytes();
    (0..len)
        .map(|i| match seq_bytes.get(i) {
            Some(&b) => b,
            None => fill ^ (i as u8).wrapping_mul(31),
        })
        .collect()
}

/// Applies `ops` to a fresh ring configured by `config` and to the model,
/// checking after every op and at the end. Panics (with the failing op's
/// position) on any disagreement.
pub fn run(config: &Config, ops: &[Op]) {
    let mut harness = Harness::new(config);
    for (at, op) in ops.iter().enumerate() {
        harness.apply(op, at);
        harness.check(&format!("after op #{at} {op:?}"));
    }
    harness.finish(ops.len());
}

/// The real ring, its handles, and the model.
struct Harness {
    producers: Vec<Producer>,
    /// `None` once dropped.
    consumer: Option<Consumer>,
    /// The ring's real capacity (the request rounded up to a power of two).
    capacity: usize,
    max_record: usize,
    block: bool,
    eager_take: bool,
    /// Pushes so far (the next record's sequence number).
    pushes: u64,
    /// The model: accepted records not yet drained, in order.
    queue: VecDeque<Vec<u8>>,
    /// The model: drops not yet taken.
    dropped: u64,
    /// The model: closed (by either side, or by dropping the consumer).
    closed: bool,
}

impl Harness {
    fn new(config: &Config) -> Self {
        let (producer, consumer) = channel(config.ring());
        Self {
            producers: vec![producer],
            consumer: Some(consumer),
            capacity: config.slots().next_power_of_two(),
            max_record: config.max_record(),
            block: config.block,
            eager_take: config.eager_take,
            pushes: 0,
            queue: VecDeque::new(),
            dropped: 0,
            closed: false,
        }
    }

    fn producer(&self, index: u8) -> &Producer {
        &self.producers[usize::from(index) % self.producers.len()]
    }

    fn apply(&mut self, op: &Op, at: usize) {
        let ctx = format!("op #{at} {op:?}");
        match *op {
            Op::Push {
                producer,
                len,
                fill,
            } => {
                let len = usize::from(len) % (self.max_record + 3);
                let record = record(self.pushes, len, fill);
                let want = if len > self.max_record {
                    // The size check comes first, closed or not.
                    Err(PushError::TooLarge {
                        len,
                        max: self.max_record,
                    })
                } else if self.closed {
                    Err(PushError::Closed)
                } else if self.queue.len() == self.capacity {
                    if self.block {
                        return; // It would wait for this very thread: skip.
                    }
                    Err(PushError::Full)
                } else {
                    Ok(())
                };
                let got = self.producer(producer).push(&record);
                self.pushes += 1;
                assert_eq!(got, want, "{ctx}: push of {len} bytes");
                match want {
                    Ok(()) => self.queue.push_back(record),
                    Err(PushError::Full) => self.dropped += 1,
                    Err(_) => {}
                }
            }
            Op::Drain { max } => {
                let Some(consumer) = self.consumer.as_mut() else {
                    return;
                };
                let max = if max == u8::MAX {
                    usize::MAX
                } else {
                    usize::from(max)
                };
                let mut got = Vec::new();
                let n = consumer.drain(max, |r| got.push(r.to_vec()));
                let take = max.min(self.queue.len());
                let want: Vec<Vec<u8>> = self.queue.drain(..take).collect();
                assert_eq!(got, want, "{ctx}: drained records");
                assert_eq!(n, want.len(), "{ctx}: drain's return value");
            }
            Op::TakeDropped => self.check_dropped(&ctx),
            Op::CloseProducer { producer } => {
                self.producer(producer).close();
                self.closed = true;
            }
            Op::CloseConsumer => {
                if let Some(consumer) = &self.consumer {
                    consumer.close();
                    self.closed = true;
                }
            }
            Op::Wait => {
                if let Some(consumer) = &self.consumer {
                    consumer.wait(Duration::ZERO);
                }
            }
            Op::CloneProducer { producer } => {
                if self.producers.len() < MAX_PRODUCERS {
                    let clone = self.producer(producer).clone();
                    self.producers.push(clone);
                }
            }
            Op::DropConsumer => {
                if self.consumer.take().is_some() {
                    self.closed = true;
                    // Nobody can drain or count them any more.
                    self.queue.clear();
                    self.dropped = 0;
                }
            }
        }
    }

    /// `take_dropped` against the model's untaken drops.
    fn check_dropped(&mut self, ctx: &str) {
        if let Some(consumer) = &self.consumer {
            assert_eq!(consumer.take_dropped(), self.dropped, "{ctx}: take_dropped");
            self.dropped = 0;
        }
    }

    /// The checks after every op.
    fn check(&mut self, ctx: &str) {
        if let Some(consumer) = &self.consumer {
            assert_eq!(
                consumer.is_drained(),
                self.closed && self.queue.is_empty(),
                "{ctx}: is_drained (closed: {}, queued: {})",
                self.closed,
                self.queue.len()
            );
        }
        if self.eager_take {
            self.check_dropped(ctx);
        }
        if self.block {
            assert_eq!(self.dropped, 0, "{ctx}: Block mode counted a drop");
        }
    }

    /// The end of a run: the drops still counted, every record still queued,
    /// and the ring drained once closed.
    fn finish(mut self, ops: usize) {
        let ctx = format!("at the end (after {ops} ops)");
        self.check_dropped(&ctx);
        let Some(mut consumer) = self.consumer.take() else {
            return;
        };
        let mut got = Vec::new();
        let n = consumer.drain(usize::MAX, |r| got.push(r.to_vec()));
        let want: Vec<Vec<u8>> = self.queue.drain(..).collect();
        assert_eq!(got, want, "{ctx}: remaining records");
        assert_eq!(n, want.len(), "{ctx}: drain's return value");
        assert_eq!(consumer.is_drained(), self.closed, "{ctx}: is_drained");
        consumer.close();
        assert!(consumer.is_drained(), "{ctx}: is_drained after close");
        assert_eq!(
            consumer.drain(usize::MAX, |r| panic!("{ctx}: record {r:?} after the end")),
            0
        );
        drop(consumer);
        let producer = &self.producers[0];
        assert_eq!(
            producer.push(&[]),
            Err(PushError::Closed),
            "{ctx}: push after the consumer is gone"
        );
    }
}
