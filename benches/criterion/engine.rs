//! Criterion benches for the engine's request path: `mixed/tool_call`, the
//! latchfree engine beside the all-locked engine, at 1, 2 and 4 threads (see
//! `common` for what is timed), with the `async` audit guarantee, 10 000
//! session ids and 90 % cache hits.
//!
//! The workload is the one `latchfree bench` runs by default (defined once,
//! in `latchfree_bench::mixed`).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use latchfree_bench::mixed;

fn engine_ops(c: &mut Criterion) {
    mixed::set_params(mixed::MixedParams::default());
    common::bench_cases(c, &mixed::cases(), |_| None);
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = engine_ops
}
criterion_main!(benches);
