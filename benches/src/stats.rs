//! The `stats` workload: `counter_add`, `batch4` and `snapshot`, on
//! latchfree's [`Stats`], the locked twin, one shared `AtomicU64` per counter,
//! and LongAdder-style striped atomics; and the `metrics` facade rows
//! (`facade`), against `metrics-exporter-prometheus` and `prometheus-client`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use super::{Case, Target, expect_eq};

mod facade;
use latchfree::baseline::LockedStats;
use latchfree::stats::{Counter, Stats, Update};

/// Metrics read by the `snapshot` operation.
pub const SNAPSHOT_METRICS: usize = 64;
/// Threads that write every metric before `snapshot` runs (live shards).
pub const SNAPSHOT_SHARDS: usize = 8;

/// The four counters of the `batch4` operation and what each batch adds.
const BATCH: [(&str, u64); 4] = [
    ("calls", 1),
    ("bytes_in", 100),
    ("bytes_out", 250),
    ("errors", 1),
];

/// Every case of the `stats` workload.
pub fn cases() -> Vec<Case> {
    let case = |op, imp, guarantee, make| Case {
        workload: "stats",
        op,
        imp,
        guarantee,
        latency: false,
        make,
    };
    vec![
        case("counter_add", "latchfree", "exact", |_| {
            Box::new(LatchfreeCounters::new(1))
        }),
        case("counter_add", "locked", "exact", |_| {
            Box::new(LockedCounters::new(1))
        }),
        case("counter_add", "shared-atomic", "exact", |_| {
            Box::new(SharedAtomics::new(1))
        }),
        case("counter_add", "striped-atomic", "exact", |t| {
            Box::new(Striped::new(t))
        }),
        case("counter_add", "ideal-per-thread", "exact", |t| {
            Box::new(IdealPerThread::new(t))
        }),
        case("batch4", "latchfree", "all-or-nothing", |_| {
            Box::new(LatchfreeCounters::new(4))
        }),
        case("batch4", "latchfree-closure", "all-or-nothing", |_| {
            Box::new(LatchfreeCounters::new(4).with_closure())
        }),
        case("batch4", "locked", "all-or-nothing", |_| {
            Box::new(LockedCounters::new(4))
        }),
        case("batch4", "shared-atomic", "per-counter", |_| {
            Box::new(SharedAtomics::new(4))
        }),
        case("snapshot", "latchfree", "batch-consistent", |_| {
            Box::new(LatchfreeSnapshot::new())
        }),
        case("snapshot", "locked", "consistent", |_| {
            Box::new(LockedSnapshot::new())
        }),
        case("snapshot", "shared-atomic", "per-counter", |_| {
            Box::new(AtomicsSnapshot::new())
        }),
    ]
    .into_iter()
    .chain(facade::cases())
    .collect()
}

/// latchfree counters: one counter (`counter_add`) or the four of a batch.
struct LatchfreeCounters {
    stats: Stats,
    counters: Vec<Counter>,
    /// `batch4` through [`Stats::batch`] (a closure) instead of [`Stats::apply`].
    closure: bool,
}

impl LatchfreeCounters {
    fn with_closure(mut self) -> Self {
        self.closure = true;
        self
    }

    fn new(n: usize) -> Self {
        let stats = Stats::new();
        let counters = BATCH[..n]
            .iter()
            .map(|(name, _)| stats.counter(name).expect("static metric names are valid"))
            .collect();
        Self {
            stats,
            counters,
            closure: false,
        }
    }
}

impl Target for LatchfreeCounters {
    fn run(&self, _thread: usize, n: u64) {
        if let [c] = &self.counters[..] {
            for _ in 0..n {
                c.inc();
            }
        } else {
            let [calls, bytes_in, bytes_out, errors] = &self.counters[..] else {
                unreachable!("built with one or four counters")
            };
            if self.closure {
                for _ in 0..n {
                    self.stats.batch(|b| {
                        b.add(calls, BATCH[0].1);
                        b.add(bytes_in, BATCH[1].1);
                        b.add(bytes_out, BATCH[2].1);
                        b.add(errors, BATCH[3].1);
                    });
                }
            } else {
                for _ in 0..n {
                    self.stats.apply([
                        Update::Add(calls, BATCH[0].1),
                        Update::Add(bytes_in, BATCH[1].1),
                        Update::Add(bytes_out, BATCH[2].1),
                        Update::Add(errors, BATCH[3].1),
                    ]);
                }
            }
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let snap = self.stats.snapshot();
        let check = BATCH[..self.counters.len()]
            .iter()
            .try_for_each(|(name, per_op)| {
                expect_eq(name, snap.counter(name).unwrap_or(0), per_op * total_ops)
            });
        Some(check)
    }
}

/// The locked twin: every update (or whole batch) takes the one map lock.
struct LockedCounters {
    stats: LockedStats,
    n: usize,
}

impl LockedCounters {
    fn new(n: usize) -> Self {
        let stats = LockedStats::new();
        for (name, _) in &BATCH[..n] {
            stats.set(name, 0);
        }
        Self { stats, n }
    }
}

impl Target for LockedCounters {
    fn run(&self, _thread: usize, n: u64) {
        if self.n == 1 {
            for _ in 0..n {
                self.stats.increment(BATCH[0].0, 1);
            }
        } else {
            for _ in 0..n {
                self.stats.batch(|map| {
                    for (name, per_op) in BATCH {
                        if let Some(v) = map.get_mut(name) {
                            *v = v.wrapping_add(per_op);
                        }
                    }
                });
            }
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let check = BATCH[..self.n].iter().try_for_each(|(name, per_op)| {
            expect_eq(name, self.stats.get(name), per_op * total_ops)
        });
        Some(check)
    }
}

/// One shared `AtomicU64` per counter (`fetch_add`, Relaxed).
struct SharedAtomics {
    counters: Vec<CachePadded<AtomicU64>>,
}

impl SharedAtomics {
    fn new(n: usize) -> Self {
        Self {
            counters: (0..n)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl Target for SharedAtomics {
    fn run(&self, _thread: usize, n: u64) {
        for _ in 0..n {
            for (c, (_, per_op)) in self.counters.iter().zip(BATCH) {
                c.fetch_add(per_op, Ordering::Relaxed);
            }
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let check = self
            .counters
            .iter()
            .zip(BATCH)
            .try_for_each(|(c, (name, per_op))| {
                expect_eq(name, c.load(Ordering::Relaxed), per_op * total_ops)
            });
        Some(check)
    }
}

/// LongAdder-style striping: one padded atomic per stripe, `fetch_add` on the
/// caller's stripe, summed on read. Workers get distinct stripes (the peer's
/// best case: no hash collisions).
struct Striped {
    stripes: Vec<CachePadded<AtomicU64>>,
}

impl Striped {
    fn new(threads: usize) -> Self {
        Self {
            stripes: (0..threads.max(1))
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl Target for Striped {
    fn run(&self, thread: usize, n: u64) {
        let stripe = &self.stripes[thread % self.stripes.len()];
        for _ in 0..n {
            stripe.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let sum = self.stripes.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        Some(expect_eq("calls", sum, total_ops))
    }
}

/// The floor, not a peer: each worker owns a padded slot it was handed
/// directly (no lookup), updated with the same load + store as latchfree's.
struct IdealPerThread {
    slots: Vec<CachePadded<AtomicU64>>,
}

impl IdealPerThread {
    fn new(threads: usize) -> Self {
        Self {
            slots: (0..threads.max(1))
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl Target for IdealPerThread {
    fn run(&self, thread: usize, n: u64) {
        let slot = &self.slots[thread % self.slots.len()];
        for _ in 0..n {
            slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let sum = self.slots.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        Some(expect_eq("calls", sum, total_ops))
    }
}

fn snapshot_names() -> Vec<String> {
    (0..SNAPSHOT_METRICS)
        .map(|i| format!("metric_{i:02}"))
        .collect()
}

/// `snapshot` on latchfree: 64 counters written by 8 threads.
struct LatchfreeSnapshot(Stats);

impl LatchfreeSnapshot {
    fn new() -> Self {
        let stats = Stats::new();
        let counters: Vec<Counter> = snapshot_names()
            .iter()
            .map(|n| stats.counter(n).expect("generated names are valid"))
            .collect();
        std::thread::scope(|s| {
            for _ in 0..SNAPSHOT_SHARDS {
                s.spawn(|| counters.iter().for_each(Counter::inc));
            }
        });
        Self(stats)
    }
}

impl Target for LatchfreeSnapshot {
    fn run(&self, _thread: usize, n: u64) {
        for _ in 0..n {
            black_box(self.0.snapshot());
        }
    }

    fn verify(&self, _total_ops: u64) -> Option<Result<(), String>> {
        let snap = self.0.snapshot();
        let check = snapshot_names()
            .iter()
            .try_for_each(|n| expect_eq(n, snap.counter(n).unwrap_or(0), SNAPSHOT_SHARDS as u64));
        Some(check)
    }
}

/// `snapshot` on the locked twin: a clone of the map under the lock.
struct LockedSnapshot(LockedStats);

impl LockedSnapshot {
    fn new() -> Self {
        let stats = LockedStats::new();
        for n in snapshot_names() {
            stats.increment(&n, SNAPSHOT_SHARDS as u64);
        }
        Self(stats)
    }
}

impl Target for LockedSnapshot {
    fn run(&self, _thread: usize, n: u64) {
        for _ in 0..n {
            black_box(self.0.snapshot());
        }
    }
}

/// `snapshot` on 64 shared atomics: 64 loads into a vector.
struct AtomicsSnapshot(Vec<CachePadded<AtomicU64>>);

impl AtomicsSnapshot {
    fn new() -> Self {
        Self(
            (0..SNAPSHOT_METRICS)
                .map(|_| CachePadded::new(AtomicU64::new(SNAPSHOT_SHARDS as u64)))
                .collect(),
        )
    }
}

impl Target for AtomicsSnapshot {
    fn run(&self, _thread: usize, n: u64) {
        for _ in 0..n {
            let values: Vec<u64> = self.0.iter().map(|a| a.load(Ordering::Relaxed)).collect();
            black_box(values);
        }
    }
}
