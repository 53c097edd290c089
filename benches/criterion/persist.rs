//! Criterion benches for the TTL cache's disk tier: `persist/read_through`
//! (memory nearly empty, 100k entries on disk; 1, 2 and 4 threads) and
//! `persist/warm_up_100k` (a restart: open the cache on 100k entry files,
//! one thread), latchfree's `PersistentTtlCache` beside the locked twin's
//! JSON file per entry under a mutex.
//!
//! The workloads are the ones `latchfree bench persist` runs (defined once,
//! in `latchfree_bench::persist`).

mod common;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use latchfree_bench::{Case, Target, persist, time_iters};

fn persist_ops(c: &mut Criterion) {
    let cases = persist::cases();
    let read_through: Vec<Case> = cases
        .iter()
        .filter(|case| case.op == "read_through")
        .copied()
        .collect();
    common::bench_cases(c, &read_through, |_| None);

    // A restart takes about half a second: one thread, ten samples.
    let mut group = c.benchmark_group("persist/warm_up_100k");
    group.sample_size(10);
    for case in cases.iter().filter(|case| case.op == "warm_up_100k") {
        let target: Arc<dyn Target> = Arc::from((case.make)(1));
        group.bench_function(case.imp, |b| {
            b.iter_custom(|iters| time_iters(&target, 1, iters))
        });
    }
    group.finish();
    persist::remove_fixtures();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = persist_ops
}
criterion_main!(benches);
