//! Fuzzes `latchfree::engine::Engine` (latchfree or locked, per the input)
//! with arbitrary op sequences — calls of a cached and an uncached tool,
//! failing tools, invalid ids, time passing, sweeps, removals,
//! invalidations — checked against a simple model after every op and,
//! after shutdown, against the audit file.
//!
//! The ops, the model and the checks live in `tests/model/engine_model.rs`,
//! shared with the integration test `tests/engine_model.rs`. This target
//! only decodes the fuzzer's bytes.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run engine_ops -- -max_total_time=30 -max_len=4096
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/engine_model.rs"]
mod engine_model;

/// Longest op sequence run; longer inputs are cut (each input opens an
/// audit log, so short sequences keep the executions per second up).
const MAX_OPS: usize = 256;

fuzz_target!(|input: (engine_model::Config, Vec<engine_model::Op>)| {
    let (config, ops) = input;
    engine_model::run(&config, &ops[..ops.len().min(MAX_OPS)]);
});
