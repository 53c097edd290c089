//! The loom models of latchfree's own atomic protocols, compiled inside the
//! crate (under `cfg(all(test, latchfree_loom))`, as tokio's are) so that
//! they check the `pub(crate)` code itself, not a copy or a public shim.
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" CARGO_TARGET_DIR=target-loom \
//!     cargo test --release --lib loom_in_crate::
//! ```
//!
//! Each file opens with what its models cover and a table of the
//! mutations they catch.

#[path = "common/mod.rs"]
mod common;
#[path = "flight.rs"]
mod flight;
#[path = "progress.rs"]
mod progress;
#[path = "ring.rs"]
mod ring;
#[path = "shared.rs"]
mod shared;
#[path = "stats.rs"]
mod stats;
#[path = "ttl.rs"]
mod ttl;
