//! `latchfree::stats` against a simple model, on op sequences from a seeded
//! pseudo-random generator: the same check the cargo-fuzz target
//! `fuzz/fuzz_targets/stats_ops.rs` runs on fuzzer input, here in plain
//! `cargo test`. The op-applying and checking code lives in
//! `tests/model/stats_model.rs`, shared by both.

#[path = "model/stats_model.rs"]
mod stats_model;

use stats_model::{BatchOp, MAX_SAMPLES, NAMES, Op, run};

#[path = "model/xorshift.rs"]
mod xorshift;

/// Picks ops from a [`xorshift::XorShift`].
struct Rng(xorshift::XorShift);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(xorshift::XorShift::new(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// A name index, mostly valid names, sometimes out of `NAMES`' range
    /// (the harness reduces it modulo `NAMES.len()`).
    fn name(&mut self) -> u8 {
        if self.below(8) == 0 {
            self.next() as u8
        } else {
            self.below(NAMES.len() as u64) as u8
        }
    }

    /// A `u64` of varied magnitude: exact-bucket values, every power of two,
    /// and values near `u64::MAX` (so counters and sums wrap).
    fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => self.below(64),
            1 => self.below(10_000),
            2 => self.next() >> self.below(64),
            3 => u64::MAX - self.below(4),
            4 => 1u64 << self.below(64),
            _ => self.next(),
        }
    }

    /// One op; out of 24: 5 registrations, 6 counter adds, 3 batches, 3 gauge
    /// ops, 6 records, 1 snapshot (so a sequence checks every ~24 ops, and at
    /// its end).
    fn op(&mut self) -> Op {
        match self.below(24) {
            0 | 1 => Op::RegisterCounter(self.name()),
            2 => Op::RegisterGauge(self.name()),
            3 | 4 => Op::RegisterHistogram(self.name()),
            5..=10 => Op::Add {
                name: self.name(),
                n: match self.below(3) {
                    0 => 1,
                    1 => self.below(1000),
                    _ => self.value(),
                },
            },
            11..=13 => {
                let len = self.below(12) as usize; // Past SmallVec's inline 8 at times.
                Op::Batch(
                    (0..len)
                        .map(|_| match self.below(6) {
                            0..=1 => BatchOp::Add {
                                name: self.name(),
                                n: self.value(),
                            },
                            2..=3 => BatchOp::Record {
                                name: self.name(),
                                value: self.value(),
                            },
                            4 => BatchOp::Set {
                                name: self.name(),
                                value: self.next() as i32,
                            },
                            _ => BatchOp::GaugeAdd {
                                name: self.name(),
                                delta: self.next() as i32,
                            },
                        })
                        .collect(),
                )
            }
            14 => Op::Set {
                name: self.name(),
                value: self.next() as i32,
            },
            15 | 16 => Op::GaugeAdd {
                name: self.name(),
                delta: self.next() as i32,
            },
            17..=22 => Op::Record {
                name: self.name(),
                value: self.value(),
            },
            _ => Op::Snapshot,
        }
    }
}

/// Runs the sequence of each seed in `seeds`.
fn check_seeds(seeds: impl Iterator<Item = u64>) {
    for seed in seeds {
        let mut rng = Rng::new(seed);
        let len = 1 + rng.below(150) as usize;
        let ops: Vec<Op> = (0..len).map(|_| rng.op()).collect();
        // On failure the panic names the op; the seed reproduces the sequence.
        let result = std::panic::catch_unwind(|| run(&ops));
        if let Err(panic) = result {
            eprintln!("seed {seed} failed; ops: {ops:#?}");
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn random_op_sequences_match_the_model() {
    const SEQUENCES: u64 = 3_000;
    // Every sequence has its own `Stats` and runs on one thread; the seeds are
    // spread over the cores only to keep the debug build's run short.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8)) as u64;
    std::thread::scope(|s| {
        for w in 0..workers {
            s.spawn(move || check_seeds((w..SEQUENCES).step_by(workers as usize)));
        }
    });
}

#[test]
fn long_sequences_reach_the_sample_cap() {
    for seed in 0..4 {
        let mut rng = Rng::new(1_000_000 + seed);
        let mut ops = Vec::new();
        while ops.len() < MAX_SAMPLES + 500 {
            ops.push(Op::Record {
                name: rng.below(3) as u8,
                value: rng.value(),
            });
            if rng.below(256) == 0 {
                ops.push(Op::Snapshot);
            }
        }
        run(&ops);
    }
}

#[test]
fn collisions_wrapping_and_bad_names() {
    run(&[
        Op::RegisterCounter(0),
        Op::RegisterGauge(0),     // KindMismatch: counter, not gauge
        Op::RegisterHistogram(0), // KindMismatch: counter, not histogram
        Op::Set { name: 0, value: 1 },
        Op::Record { name: 0, value: 1 },
        Op::Add {
            name: 0,
            n: u64::MAX,
        },
        Op::Add { name: 0, n: 2 }, // wraps to 1
        Op::RegisterCounter(7),    // 7 % 7 == 6: the invalid name
        Op::Record { name: 6, value: 3 },
        Op::GaugeAdd {
            name: 1,
            delta: i32::MAX,
        },
        Op::GaugeAdd { name: 1, delta: 1 }, // a float: no wrap, 2^31
        Op::RegisterCounter(1),             // KindMismatch: gauge, not counter
        Op::Batch(vec![
            BatchOp::GaugeAdd { name: 1, delta: 7 }, // replaced by the set below
            BatchOp::Set { name: 1, value: -3 },
            BatchOp::GaugeAdd { name: 1, delta: 2 }, // -1
            BatchOp::Add { name: 2, n: 1 },
        ]),
        Op::Snapshot,
        Op::GaugeAdd { name: 1, delta: -4 }, // -5
        Op::Batch(vec![
            BatchOp::Add { name: 2, n: 5 },
            BatchOp::Record {
                name: 3,
                value: u64::MAX,
            },
            BatchOp::Record { name: 3, value: 1 }, // sum wraps to 0
            BatchOp::Add { name: 1, n: 1 },        // gauge: skipped
        ]),
        Op::Snapshot,
        Op::Record {
            name: 3,
            value: 1 << 40,
        },
        Op::Snapshot,
    ]);
}
