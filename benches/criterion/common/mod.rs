//! What every Criterion bench here shares: one group per operation,
//! latchfree beside its locked twin and the peers, at 1, 2 and 4 threads.
//!
//! Each sample runs `iters` operations on every thread and reports the wall
//! time, so "time" is the per-thread `ns_per_op` and "thrpt" (elements =
//! threads) is the total operations per second. The exactness checks run in
//! `latchfree bench`, not here.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use latchfree_bench::{Case, Target, time_iters};

/// The configuration every bench uses.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

/// Benches `cases` (one workload's) as group `WORKLOAD/OP`, with
/// `sample_size(op)` samples where it returns one.
pub fn bench_cases(c: &mut Criterion, cases: &[Case], sample_size: impl Fn(&str) -> Option<usize>) {
    let mut ops: Vec<&str> = cases.iter().map(|case| case.op).collect();
    ops.dedup();
    for op in ops {
        let workload = cases
            .iter()
            .find(|case| case.op == op)
            .map_or("", |case| case.workload);
        let mut group = c.benchmark_group(format!("{workload}/{op}"));
        if let Some(n) = sample_size(op) {
            group.sample_size(n);
        }
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
