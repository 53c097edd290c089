//! Criterion benches for `stats`: one group per operation (`stats/counter_add`,
//! `stats/batch4`, `stats/snapshot`), latchfree beside its locked twin and the
//! peers, at 1, 2 and 4 threads.
//!
//! The workloads are the ones `latchfree bench stats` runs (defined once, in
//! `latchfree::bench::stats`). Each sample runs `iters` operations on every
//! thread and reports the wall time, so "time" is the per-thread `ns_per_op`
//! and "thrpt" (elements = threads) is the total operations per second.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use latchfree::bench::{Target, stats, time_iters};

fn stats_ops(c: &mut Criterion) {
    let cases = stats::cases();
    let mut ops: Vec<&str> = cases.iter().map(|case| case.op).collect();
    ops.dedup();
    for op in ops {
        let mut group = c.benchmark_group(format!("stats/{op}"));
        for threads in [1usize, 2, 4] {
            group.throughput(Throughput::Elements(threads as u64));
            for case in cases.iter().filter(|case| case.op == op) {
                let target: Arc<dyn Target> = Arc::from((case.make)(threads));
                group.bench_with_input(
                    BenchmarkId::new(case.imp, threads),
                    &threads,
                    |b, &threads| b.iter_custom(|iters| time_iters(&target, threads, iters)),
                );
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = stats_ops
}
criterion_main!(benches);
