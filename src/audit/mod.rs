//! A lossless, tamper-evident JSONL audit log: any number of threads log
//! through a bounded lock-free ring; one writer thread owns the files.
//!
//! ```text
//!  threads ── serialise (own buffer) ── SHA-256 of the event ── claim a slot ──▶ ring ──▶ writer thread
//!             (in parallel, on each caller's thread)            (one fetch_add)          │ seq, ts (one per batch)
//!                                                                                        │ link: SHA-256 of ~110 bytes
//!                                                                                        │ one write per batch
//!                                                                                        │ fsync (group commit)
//!                                                                                        ▼
//!                                                                    audit-20261123-000000.jsonl, …
//! ```
//!
//! # Who hashes what
//!
//! A record's hash is a link over its `seq`, `ts`, the event's SHA-256
//! digest and the previous record's hash ([`record`] gives the exact bytes).
//! The digest depends only on the event, so the thread that logs it
//! computes it, right after serialising, in parallel with every other
//! thread, and puts its 32 bytes in front of the event in the ring slot.
//! The writer, the one sequential stage, hashes only the link: two SHA-256
//! blocks per record whatever the event's size, where it used to hash every
//! byte of every line. The timestamp is formatted once per batch (and within
//! a second only its microseconds are rewritten).
//!
//! Nothing the chain proved is lost by the split. The writer trusts the
//! digest a producer hands it, but the producer is the code that has the
//! event, within the same process; what the chain guards against is a change
//! to the *file* afterwards, and there the verifier trusts nothing: it
//! recomputes the digest from the event bytes in the line and the link from
//! the fields, for every record. An edited event changes its digest and so
//! its link; a removed, inserted or reordered record breaks `seq` or the
//! next `prev`; a record moved between streams or positions carries its
//! `seq` inside the link. Collision resistance of SHA-256, applied twice
//! (digest, then link), is all the argument needs, as it was when one hash
//! covered the whole line.
//!
//! * [`AuditLog`]: the handle (`log`, `wait` for a [`Guarantee`], `flush`,
//!   `close`), built by [`AuditBuilder`]: durability mode, full-ring policy,
//!   rotation, clock, metrics. A second stream (telemetry) is the same type
//!   with its own prefix: [`AuditLog::telemetry`].
//! * `ring`: the bounded multi-producer, single-consumer queue between the
//!   threads that log and the writer; producers enter it with one
//!   `fetch_add`, and it never loses, duplicates or tears a record.
//! * [`record`]: the JSONL line format (version 2), with `seq` and a
//!   SHA-256 hash chain; what the chain proves and what it does not, and
//!   how version 1 lines are still read.
//! * [`recover`]: file names, and resuming after a crash (a torn last line
//!   is truncated; `seq` and the chain continue).
//! * [`tracing_writer`] (feature `tracing`): the log as a
//!   `tracing_subscriber::fmt` writer, one record per formatted event.
//! * [`verify()`]: checks a directory of rotated files in parallel and names
//!   the first broken line (`latchfree audit verify DIR`).
//!
//! The locked twin is [`baseline::LockedAuditLog`](crate::baseline::LockedAuditLog).

pub mod anchor;
mod durable;
mod guarantee;
pub(crate) mod log;
pub(crate) mod progress;
pub mod record;
pub mod recover;
mod retention;
// The ring is internal; the fuzz target `ring_ops` (built with
// `--cfg fuzzing` by cargo-fuzz) drives it directly.
#[cfg(fuzzing)]
pub mod ring;
#[cfg(not(fuzzing))]
pub(crate) mod ring;
#[cfg(feature = "tracing")]
pub mod tracing_writer;
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
#[cfg(feature = "tracing")]
pub use tracing_writer::{EventWriter, TracingMetrics, TracingWriter};
pub use verify::{VerifyError, VerifyReport, verify, verify_files, verify_from, verify_to};
