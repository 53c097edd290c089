//! The audit log's building blocks.
//!
//! The audit log — one writer thread that owns the file, batched writes,
//! group commit, rotation, torn-tail recovery — is being built from these
//! parts, each complete and tested on its own:
//!
//! * [`ring`]: the bounded multi-producer, single-consumer queue of byte
//!   records between the threads that log and the writer; producers enter it
//!   with one `fetch_add`, and it never loses, duplicates or tears a record.
//! * [`record`]: the JSONL line format, with `seq` and a SHA-256 hash chain;
//!   what the chain proves and what it does not.
//! * [`verify`]: checks a directory of rotated files in parallel and names
//!   the first broken line (`latchfree audit verify DIR`).
//!
//! Not built yet: the writer thread and the `AuditLog` handle on top of them
//! (durability modes, `flush`, rotation, recovery on open, telemetry stream,
//! metrics), and the locked twin.

pub mod record;
pub mod ring;
pub mod verify;
