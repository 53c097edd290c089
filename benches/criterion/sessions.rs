//! Criterion benches for session registries: `sessions/hit`, `sessions/mix_90_10`,
//! `sessions/create_storm`, latchfree beside its locked twin and the peers, at 1, 2 and 4
//! threads (see `common` for what is timed).
//!
//! The workloads are the ones `latchfree bench sessions` runs (defined once, in
//! `latchfree_bench::sessions`).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use latchfree_bench::sessions;

fn sessions_ops(c: &mut Criterion) {
    common::bench_cases(c, &sessions::cases(), |_| None);
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = sessions_ops
}
criterion_main!(benches);
