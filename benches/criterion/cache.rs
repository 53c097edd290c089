//! Criterion benches for TTL caches: `cache/hit`, `cache/mix_90_10`,
//! `cache/create_storm`, latchfree beside its locked twin and the peers, at 1, 2 and 4
//! threads (see `common` for what is timed).
//!
//! The workloads are the ones `latchfree bench cache` runs (defined once, in
//! `latchfree_bench::cache`).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use latchfree_bench::cache;

fn cache_ops(c: &mut Criterion) {
    common::bench_cases(c, &cache::cases(), |_| None);
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = cache_ops
}
criterion_main!(benches);
