//! Fuzzes `latchfree::stats` with arbitrary op sequences, checked against a
//! simple model after every `Snapshot` op and at the end.
//!
//! The ops, the model and the checks live in `tests/model/stats_model.rs`,
//! shared with the integration test `tests/stats_model.rs` (which runs the same
//! checks on pseudo-random sequences in plain `cargo test`). This target only
//! decodes the fuzzer's bytes into ops.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run stats_ops -- -max_total_time=30 -max_len=4096
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/stats_model.rs"]
mod stats_model;

/// Longest op sequence run; longer inputs are cut (the model's sample cap
/// bounds the work per op, this bounds the ops).
const MAX_OPS: usize = 1024;

fuzz_target!(|ops: Vec<stats_model::Op>| {
    stats_model::run(&ops[..ops.len().min(MAX_OPS)]);
});
