//! Fuzzes `latchfree::cache` (single-threaded, virtual clock) with an
//! arbitrary configuration and op sequence, checked against a simple model
//! after every op. The ops, the model and the checks live in
//! `tests/model/ttl_model.rs`, shared with `tests/ttl_model.rs` and the
//! other target of the pair (`session_ops` / `cache_ops`).
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run cache_ops -- -max_total_time=30
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/ttl_model.rs"]
mod ttl_model;

/// Longest op sequence run; longer inputs are cut.
const MAX_OPS: usize = 1024;

fuzz_target!(|input: (ttl_model::Config, Vec<ttl_model::Op>)| {
    let (mut config, ops) = input;
    config.session = false;
    ttl_model::run(&config, &ops[..ops.len().min(MAX_OPS)]);
});
