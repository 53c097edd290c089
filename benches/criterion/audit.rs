//! Criterion benches for `audit`: one group per guarantee (`audit/log_async`,
//! `audit/log_os`, `audit/log_disk`), latchfree beside its locked twin and
//! the peers, at 1, 2 and 4 threads (see `common` for what is timed).
//!
//! The workloads are the ones `latchfree bench audit` runs (defined once, in
//! `latchfree_bench::audit`; see its docs for what each row does and where
//! the files go).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use latchfree_bench::audit;

fn audit_ops(c: &mut Criterion) {
    // About one fsync per call for the locked twin: fewer samples.
    common::bench_cases(c, &audit::cases(), |op| (op == "log_disk").then_some(10));
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = audit_ops
}
criterion_main!(benches);
