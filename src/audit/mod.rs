//! A lossless, tamper-evident JSONL audit log: any number of threads log
//! through a bounded lock-free ring; one writer thread owns the files.
//!
//! ```text
//!  threads ── serialise (own buffer) ── claim a slot (one fetch_add) ──▶ ring ──▶ writer thread
//!                                                                               │ seq, ts, hash chain
//!                                                                               │ one write per batch
//!                                                                               │ fsync (group commit)
//!                                                                               ▼
//!                                                       audit-20261123-000000.jsonl, …
//! ```
//!
//! * [`AuditLog`]: the handle (`log`, `wait` for a [`Guarantee`], `flush`,
//!   `close`), built by [`AuditBuilder`]: durability mode, full-ring policy,
//!   rotation, clock, metrics. A second stream (telemetry) is the same type
//!   with its own prefix: [`AuditLog::telemetry`].
//! * `ring`: the bounded multi-producer, single-consumer queue between the
//!   threads that log and the writer; producers enter it with one
//!   `fetch_add`, and it never loses, duplicates or tears a record.
//! * [`record`]: the JSONL line format, with `seq` and a SHA-256 hash chain;
//!   what the chain proves and what it does not.
//! * [`recover`]: file names, and resuming after a crash (a torn last line
//!   is truncated; `seq` and the chain continue).
//! * [`verify()`]: checks a directory of rotated files in parallel and names
//!   the first broken line (`latchfree audit verify DIR`).
//!
//! The locked twin is [`baseline::LockedAuditLog`](crate::baseline::LockedAuditLog).

mod durable;
mod guarantee;
pub(crate) mod log;
pub(crate) mod progress;
pub mod record;
pub mod recover;
// The ring is internal; the fuzz target `ring_ops` (built with
// `--cfg fuzzing` by cargo-fuzz) drives it directly.
#[cfg(fuzzing)]
pub mod ring;
#[cfg(not(fuzzing))]
pub(crate) mod ring;
pub mod verify;
#[cfg(feature = "async")]
mod wait_async;
mod writer;

// The ring against its model on seeded op sequences (the fuzz target
// `ring_ops` runs the same model on fuzzer input).
#[cfg(all(test, not(latchfree_loom)))]
#[path = "../../tests/model/ring_seeded.rs"]
mod ring_seeded;

pub use guarantee::ParseGuaranteeError;
pub use log::{
    AuditBuilder, AuditError, AuditLog, AuditMetrics, DEFAULT_MAX_FILE_BYTES, Durability,
    Guarantee, MAX_CAPACITY, MAX_EVENT_BYTES, MAX_RING_BYTES, MIN_FILE_BYTES, Ticket,
};
pub use record::Head;
pub use recover::file_name;
pub use ring::OnFull;
pub use verify::{VerifyError, VerifyReport, verify, verify_files, verify_from, verify_to};
