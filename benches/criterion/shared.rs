//! Criterion benches for `shared`: one group per operation (`shared/load`,
//! `shared/load_during_swaps`, `shared/swap`), latchfree beside its locked
//! twin and crossbeam-epoch, at 1, 2 and 4 threads (see `common` for what is
//! timed).
//!
//! The workloads are the ones `latchfree bench shared` runs (defined once, in
//! `latchfree_bench::shared`).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use latchfree_bench::shared;

fn shared_ops(c: &mut Criterion) {
    common::bench_cases(c, &shared::cases(), |_| None);
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = shared_ops
}
criterion_main!(benches);
