//! Loom models compiled inside the crate (`#[cfg(all(test, latchfree_loom))]`
//! in `src/lib.rs`), as tokio does: they use `crate::` paths and reach
//! `pub(crate)` internals directly.
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target-loom \
//!     cargo test --locked --release --lib loom_in_crate::
//! ```
//!
//! Paths below are relative to this file's folder, `loom_tests/`.

#[path = "common/mod.rs"]
#[allow(dead_code)] // Shared with the models still built as test targets.
mod common;

#[path = "ttl.rs"]
mod ttl;
