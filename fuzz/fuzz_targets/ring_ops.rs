//! Fuzzes `latchfree::audit::ring` (single-threaded) with an arbitrary ring
//! configuration and op sequence, checked against a simple model after every
//! op and at the end.
//!
//! The config, the ops, the model and the checks live in
//! `tests/model/ring_model.rs`, shared with the integration test
//! `tests/ring_model.rs` (which runs the same checks on pseudo-random
//! sequences in plain `cargo test`). This target only decodes the fuzzer's
//! bytes into a config and ops.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run ring_ops -- -max_total_time=30 -max_len=4096
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/ring_model.rs"]
mod ring_model;

/// Longest op sequence run; longer inputs are cut.
const MAX_OPS: usize = 1024;

fuzz_target!(|input: (ring_model::Config, Vec<ring_model::Op>)| {
    let (config, ops) = input;
    ring_model::run(&config, &ops[..ops.len().min(MAX_OPS)]);
});
