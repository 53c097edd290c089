//! # latchfree
//!
//! The shared state of a concurrent server — statistics, the audit log,
//! sessions, TTL caches and swappable shared instances — built so that every
//! thread and every transport can use it at once with **no lock on the hot
//! path and nothing lost**.
//!
//! Each component states its guarantees on its type, proves its own atomic
//! protocols with loom models, and has a *locked twin* in `baseline` (the
//! classic `Mutex`/`RwLock` design, feature `baseline`) that every benchmark
//! runs beside it.
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
//! | `baseline` | the locked twins (feature `baseline`) |
//!
//! # Features
//!
//! None is on by default: what a linked server runs needs none.
//!
//! | feature | gives |
//! |---|---|
//! | `toml` | `EngineConfig::from_toml` / `to_toml` |
//! | `persist` | the cache's disk tier (`cache::persist`, `PersistentTtlCache`) |
//! | `parallel-verify` | `audit::verify` checks a directory's files in parallel (rayon) |
//! | `baseline` | the locked twins and `Engine::locked`, for comparisons |
//! | `metrics` | `stats::MetricsRecorder`: the `metrics` facade (`counter!`, `gauge!`, `histogram!`) recorded into a `Stats`, labelled |
//! | `tracing` | `audit::TracingWriter`: the audit log as a `tracing_subscriber::fmt` writer, one chained record per event |
//! | `tower` | `tower::StatsLayer` (per-request HTTP metrics, optionally an audit record each) and `tower::MetricsService` (`GET /metrics`), for axum or any `tower` stack |
//! | `async` | async twins of every wait (`get_or_create_async`, `get_or_load_async`, `get_or_init_async`, `log_wait_async`, `call_async`, ...): waiters are futures, for any executor |
//!
//! # Conventions
//!
//! * **Builders** end in `build` when what they make lives in memory
//!   ([`stats::StatsBuilder::build`], [`session::SessionRegistryBuilder::build`],
//!   [`cache::TtlCacheBuilder::build`], [`shared::SharedBuilder::build`]) and in
//!   `open` when it owns files in a directory that may already hold some
//!   (`AuditBuilder::open` resumes a log; `PersistentTtlCacheBuilder::open`
//!   loads a disk tier). The engine holds both and is built from a
//!   configuration: [`engine::EngineBuilder::build`].
//! * **Errors** are typed enums (`#[non_exhaustive]`) with one vocabulary
//!   across components: `Full { max }` at a capacity bound, `Failed(e)` for
//!   an initialiser's or loader's own error, `FailedElsewhere` and
//!   `Panicked` for one a caller waited on, `Recursive` for a call from
//!   inside the initialiser it would wait on.
//! * **Metrics** have the same names in every component that has them
//!   (`hits`, `misses`, `inits`, `coalesced`, `init_errors`, `rejected`, and
//!   one per [`ttl::EvictionCause`]).
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
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
#[cfg(feature = "baseline")]
pub mod baseline;
pub mod cache;
pub mod clock;
pub mod engine;
mod flight;
#[cfg(not(latchfree_loom))]
mod per_thread;
pub mod session;
pub mod shared;
pub mod stats;
mod sync;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
pub mod ttl;
mod wakers;

// Test code shared with the integration tests and the fuzz targets
// (`tests/model/`) names the crate `latchfree`, from inside it too.
#[cfg(test)]
extern crate self as latchfree;

// The loom models (`loom_tests/`) compile inside the crate, as tokio's do,
// so that they reach the `pub(crate)` protocols they check:
//   RUSTFLAGS="--cfg latchfree_loom" cargo test --release --lib loom_in_crate::
#[cfg(all(test, latchfree_loom))]
#[path = "../loom_tests/in_crate.rs"]
mod loom_in_crate;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
