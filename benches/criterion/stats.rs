//! Criterion benches for `stats`: one group per operation (`stats/counter_add`,
//! `stats/batch4`, `stats/snapshot`), latchfree beside its locked twin and the
//! peers, at 1, 2 and 4 threads (see `common` for what is timed).
//!
//! The workloads are the ones `latchfree bench stats` runs (defined once, in
//! `latchfree_bench::stats`).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use latchfree_bench::stats;

fn stats_ops(c: &mut Criterion) {
    common::bench_cases(c, &stats::cases(), |_| None);
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = stats_ops
}
criterion_main!(benches);
