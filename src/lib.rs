//! # latchfree
//!
//! The shared state of a concurrent server — statistics and the audit log,
//! and in time sessions and TTL caches — built so that every thread
//! and every transport can use it at once with **no lock on the hot path and
//! nothing lost**.
//!
//! Each component states its guarantees on its type, proves its own atomic
//! protocols with loom models, and has a *locked twin* in [`baseline`] (the
//! classic `Mutex`/`RwLock` design) that every benchmark runs beside it.
//!
//! | module | what it holds |
//! |---|---|
//! | [`stats`] | counters, gauges, histograms: per-thread shards, atomic batches, Prometheus text |
//! | [`audit`] | lossless, hash-chained JSONL audit and telemetry streams: MPSC ring → one writer thread, group commit, rotation, recovery, verifier |
//! | [`shared`] | a swappable shared instance: initialised once, lock-free reads, replaced or reset during use |
//! | [`session`] | session registry: get-or-create exactly once, lock-free lookups, idle expiry and lifetime, capacity bound, eviction events |
//! | [`cache`] | bounded TTL cache: lock-free hits, single-flight loading, TTL / idle TTL / per-entry TTL, second-chance eviction; an optional on-disk tier |
//! | [`ttl`] | what the two share: eviction causes, sweep modes, build errors |
//! | [`engine`] | all of the above in one cloneable handle, with the request path of a tool call; or the same from the locked twins |
//! | [`clock`] | injectable time (`ManualClock` for tests) |
//! | [`baseline`] | the locked twins |
//!
//! ```
//! let stats = latchfree::stats::Stats::new();
//! let requests = stats.counter("requests_total")?;
//! requests.inc();
//! assert_eq!(stats.snapshot().counter("requests_total"), Some(1));
//! # Ok::<(), latchfree::stats::StatsError>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod audit;
pub mod baseline;
#[cfg(feature = "cli")]
pub mod bench;
pub mod cache;
pub mod clock;
pub mod engine;
#[doc(hidden)] // Public for the loom models in `loom_tests/`; not part of the API.
pub mod flight;
#[cfg(not(latchfree_loom))]
mod per_thread;
pub mod session;
pub mod shared;
pub mod stats;
mod sync;
pub mod ttl;

/// Loom models of the crate's own protocols, compiled inside the crate so
/// they reach `pub(crate)` internals (see `loom_tests/in_crate.rs`).
#[cfg(all(test, latchfree_loom))]
#[path = "../loom_tests/in_crate.rs"]
mod loom_in_crate;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
