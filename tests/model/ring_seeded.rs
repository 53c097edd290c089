//! `latchfree::audit::ring` against a simple model, on op sequences from a
//! seeded pseudo-random generator: the same check the cargo-fuzz target
//! `fuzz/fuzz_targets/ring_ops.rs` runs on fuzzer input, here in plain
//! `cargo test`. The op-applying and checking code lives in
//! `tests/model/ring_model.rs`, shared by both.

#[path = "ring_model.rs"]
mod ring_model;

use ring_model::{Config, Op, run};

#[path = "xorshift.rs"]
mod xorshift;

/// Picks configurations and ops from a [`xorshift::XorShift`].
struct Rng(xorshift::XorShift);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(xorshift::XorShift::new(seed))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    fn byte(&mut self) -> u8 {
        self.0.next() as u8
    }

    fn config(&mut self) -> Config {
        Config {
            capacity: self.byte(),
            slot_bytes: self.byte(),
            // Mostly small limits, so records near the limit are common.
            max_record: if self.below(4) == 0 {
                self.byte()
            } else {
                self.below(24) as u8
            },
            block: self.below(3) == 0,
            eager_take: self.below(4) == 0,
        }
    }

    /// A record length (the harness takes it modulo `max_record + 3`): the
    /// edges (empty, the slot's size and one past it, the limit and one past
    /// it) often, anything up to the limit + 2 otherwise.
    fn len(&mut self, config: &Config) -> u16 {
        let slot = config.slot_bytes();
        let max = config.max_record();
        let len = match self.below(8) {
            0 => 0,
            1 => slot,
            2 => slot + 1 + self.below(8) as usize,
            3 => max,
            4 => max + 1,
            _ => self.below(max as u64 + 3) as usize,
        };
        // Past the limit + 2 (a slot larger than the limit) wraps to a small
        // length in the harness; fine either way.
        len as u16
    }

    /// One op; out of 32: 18 pushes, 6 drains, 2 take_dropped, 1 wait,
    /// 2 clones, 1 close by either side, 1 drop of the consumer (rare, in only
    /// some sequences; see `check_seeds`).
    fn op(&mut self, config: &Config, ending: bool) -> Op {
        match self.below(32) {
            0..=17 => Op::Push {
                producer: self.byte(),
                len: self.len(config),
                fill: self.byte(),
            },
            18..=23 => Op::Drain {
                max: match self.below(4) {
                    0 => u8::MAX,
                    1 => 0,
                    _ => self.below(6) as u8,
                },
            },
            24 | 25 => Op::TakeDropped,
            26 => Op::Wait,
            27 | 28 => Op::CloneProducer {
                producer: self.byte(),
            },
            29 if ending => Op::CloseProducer {
                producer: self.byte(),
            },
            30 if ending => Op::CloseConsumer,
            31 if ending && self.below(4) == 0 => Op::DropConsumer,
            _ => Op::Drain { max: 1 },
        }
    }
}

/// Runs the sequence of each seed in `seeds`.
fn check_seeds(seeds: impl Iterator<Item = u64>) {
    for seed in seeds {
        let mut rng = Rng::new(seed);
        let config = rng.config();
        let len = 1 + rng.below(200) as usize;
        // Closing ends what a sequence can do, so most sequences close (if at
        // all) only in their last quarter.
        let close_from = if rng.below(4) == 0 { 0 } else { len * 3 / 4 };
        let ops: Vec<Op> = (0..len).map(|i| rng.op(&config, i >= close_from)).collect();
        // On failure the panic names the op; the seed reproduces the sequence.
        let result = std::panic::catch_unwind(|| run(&config, &ops));
        if let Err(panic) = result {
            eprintln!("seed {seed} failed; config: {config:?}; ops: {ops:#?}");
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn random_op_sequences_match_the_model() {
    const SEQUENCES: u64 = 4_000;
    // Every sequence has its own ring and runs on one thread; the seeds are
    // spread over the cores only to keep the debug build's run short.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8)) as u64;
    std::thread::scope(|s| {
        for w in 0..workers {
            s.spawn(move || check_seeds((w..SEQUENCES).step_by(workers as usize)));
        }
    });
}

fn push(len: u16) -> Op {
    Op::Push {
        producer: 0,
        len,
        fill: 0xA5,
    }
}

#[test]
fn edge_lengths_fill_drop_and_close() {
    // 4 slots of 2 bytes, records of at most 10 bytes.
    let config = Config {
        capacity: 2, // 2 + 2 = 4 slots
        slot_bytes: 2,
        max_record: 10,
        block: false,
        eager_take: false,
    };
    run(
        &config,
        &[
            push(0),
            push(3),  // Outgrows its slot's buffer.
            push(10), // The limit.
            push(11), // TooLarge { len: 11, max: 10 }, not a drop.
            push(1),
            push(2), // Full: dropped.
            push(0), // Full: dropped.
            Op::TakeDropped,
            Op::Drain { max: 2 },
            push(1), // The slot that held 3 bytes now holds 1: no stale bytes.
            push(0),
            push(9), // Full.
            Op::Drain { max: u8::MAX },
            Op::CloseProducer { producer: 0 },
            push(11), // Still TooLarge: the size check comes first.
            push(1),  // Closed: not a drop.
            Op::TakeDropped,
            Op::Drain { max: 1 },
        ],
    );
}

#[test]
fn block_mode_fills_every_slot_over_many_laps() {
    let config = Config {
        capacity: 0, // 2 slots
        slot_bytes: 0,
        max_record: 40,
        block: true,
        eager_take: true,
    };
    let mut ops = Vec::new();
    for lap in 0..50u16 {
        ops.extend([push(lap % 43), push(40 - lap % 41), push(7)]); // The third is skipped.
        ops.push(Op::Drain { max: 1 });
        ops.push(Op::Wait);
        ops.push(Op::Drain { max: u8::MAX });
        ops.push(Op::Wait);
    }
    ops.extend([push(1), Op::CloseConsumer, push(1), push(41)]);
    run(&config, &ops);
}

#[test]
fn dropping_the_consumer_closes_the_ring() {
    for block in [false, true] {
        let config = Config {
            capacity: 6, // 8 slots
            slot_bytes: 4,
            max_record: 200,
            block,
            eager_take: false,
        };
        run(
            &config,
            &[
                Op::CloneProducer { producer: 0 },
                push(200),
                Op::Push {
                    producer: 1,
                    len: 5,
                    fill: 1,
                },
                Op::DropConsumer,
                push(1),
                Op::Push {
                    producer: 1,
                    len: 0,
                    fill: 0,
                },
                push(201),
            ],
        );
    }
}
