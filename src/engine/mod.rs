//! [`Engine`]: the shared state of a tool server in one cloneable handle:
//! statistics, the session registry, named TTL caches of tool results, the
//! audit and telemetry logs, and named shared instances, assembled from an
//! [`EngineConfig`].
//!
//! ```
//! use latchfree::engine::{Call, Engine, CacheConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::builder()
//!     .audit_dir(dir.path())
//!     .cache("query", CacheConfig::default())
//!     .build()?;
//!
//! // Every tool call takes the request path: session, cache, stats, audit.
//! let call = Call::new("session-1", "query", r#"{"q":"rust"}"#);
//! let first = engine.call(&call, |args| Ok(format!("results for {args}")))?;
//! let again = engine.call(&call, |_| unreachable!("served from the cache"))?;
//! assert!(!first.cached && again.cached);
//! assert_eq!(first.output, again.output);
//! assert_eq!(again.session.calls(), 2);
//!
//! let counters = engine.counters();
//! assert_eq!((counters.calls, counters.cache_hits, counters.sessions_created), (2, 1, 1));
//! engine.shutdown()?; // drains the audit log
//! assert_eq!(latchfree::audit::verify(dir.path())?.records, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Components
//!
//! | component | latchfree | locked twin | reached through |
//! |---|---|---|---|
//! | statistics | [`Stats`] | [`LockedStats`] | [`Engine::counters`], [`Engine::counter`], [`Engine::prometheus`] |
//! | session registry | [`SessionRegistry`] | [`LockedSessionRegistry`] | [`Engine::call`], [`Engine::session`], [`Engine::remove_session`] |
//! | tool-result caches, by tool | [`TtlCache`] | [`LockedTtlCache`] | [`Engine::call`], [`Engine::cache_len`], [`Engine::invalidate_cache`] |
//! | audit log | [`AuditLog`] | [`LockedAuditLog`] | [`Engine::call`], [`Engine::flush`] |
//! | telemetry log (optional) | [`AuditLog`] | [`LockedAuditLog`] | [`Engine::telemetry`] |
//! | shared instances, by name | [`Shared`](crate::shared::Shared) | [`LockedShared`](crate::baseline::LockedShared) | [`Engine::shared`] |
//!
//! [`Engine::parts`] reaches the first five directly.
//!
//! # The request path
//!
//! [`Engine::call`] is what every tool call of a server goes through, in
//! this order:
//!
//! 1. **Session get-or-create**: the session under [`Call::session_id`],
//!    created exactly once per live id however many calls race for it
//!    ([`SessionRegistry::get_or_create`](crate::session::SessionRegistry::get_or_create)),
//!    then its call count is bumped.
//! 2. **Cache get-or-load**: when a cache is named after [`Call::tool`], the
//!    result is looked up by `(tool, args_json)`; a miss runs the tool
//!    closure once however many calls miss together (single flight), and a
//!    failure is not cached. Tools without a cache run every time.
//! 3. **One stats batch**: calls, errors, bytes in (`args_json`), bytes out
//!    (the result), cache hits, and the latency of steps 1–2 in a histogram,
//!    applied so that a snapshot sees all of them or none.
//! 4. **One audit event**: a JSON line naming the session, tool, sizes,
//!    outcome and latency, appended with the configured
//!    [`Guarantee`]: `async` returns once it is in
//!    the ring, `os` once it is written, `disk` once it is fsynced (callers
//!    waiting at once share one fsync).
//!
//! A failed call (an invalid or refused session id, a tool error) still
//! takes steps 3 and 4, counted as an error: every call is counted and
//! audited exactly once, so after a run `calls == audit lines`.
//!
//! # latchfree or locked
//!
//! [`Engine::locked`] (feature `baseline`, for comparisons; not part of the
//! configuration) builds the same engine from the locked twins in
//! `baseline`: a
//! `RwLock<HashMap>` session registry with double-checked creation, a
//! `Mutex` around each cache, one `Mutex<HashMap>` of statistics, one
//! `Mutex` around the audit file, and an `RwLock<Option<Arc<T>>>` per shared
//! instance. The API, the request path, the metric names (but for those of
//! shared instances) and the audit line format are the same, so a server
//! can be A/B tested by flipping one flag; [`Engine::parts`] reaches the
//! components of either kind.
//!
//! # Shared instances
//!
//! A server also holds a few objects every request reads and that are
//! sometimes replaced: a loaded model, a parsed configuration, an index.
//! [`Engine::shared`] hands out an [`EngineShared<T>`] handle to the
//! engine's instance of that name, created empty on first request; the
//! same name always reaches the same instance, and asking for it with
//! another `T` is an [`EngineError::SharedTypeMismatch`]. The handle is
//! cheap to clone and goes straight to the instance (a
//! [`Shared`](crate::shared::Shared), or a
//! [`LockedShared`](crate::baseline::LockedShared) on the locked engine):
//! reads are lock-free on the latchfree engine, initialisation is
//! single-flight on both, and a value replaced while a reader holds it
//! stays alive until that reader lets go.
//!
//! ```
//! use latchfree::engine::Engine;
//!
//! struct Model { version: u32 }
//!
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::builder().audit_dir(dir.path()).build()?;
//! let model = engine.shared::<Model>("model")?;
//! // The first caller loads it; concurrent callers wait for that one load.
//! assert_eq!(model.get_or_init(|| Model { version: 1 }).version, 1);
//!
//! let reader = model.load().expect("initialised");
//! // Another handle to the same instance replaces the value...
//! let old = engine.shared::<Model>("model")?.swap(Model { version: 2 });
//! assert_eq!(old.map(|m| m.version), Some(1));
//! assert_eq!(reader.version, 1); // ...a reader keeps the value it read
//! assert_eq!(model.load().map(|m| m.version), Some(2));
//!
//! // A name holds one type.
//! assert!(engine.shared::<String>("model").is_err());
//! // The latchfree engine counts each instance's slow-path events.
//! assert_eq!(engine.counter_with("shared_replacements_total", &[("shared", "model")]), 1);
//! engine.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The latchfree engine registers each instance's metrics in its [`Stats`]
//! under the prefix `shared` with the label `shared="NAME"`
//! (`shared_inits_total{shared="NAME"}` and the others of
//! [`shared`](crate::shared#metrics)); a name must be a valid metric name on
//! either kind; the locked engine counts nothing for them. Caches are
//! labelled the same way: `cache_hits_total{cache="NAME"}`.
//!
//! # Background work and shutdown
//!
//! The engine runs one thread of its own, which sweeps expired sessions and
//! cache entries every [`EngineConfig::sweep_interval`] (lookups never return
//! an expired entry either way), plus the audit (and telemetry) writer
//! threads of the latchfree logs. [`Engine::shutdown`] stops and joins the
//! sweeper, drains and closes the logs, and returns the first error; later
//! calls fail with [`EngineError::ShutDown`]. Dropping the last handle
//! without `shutdown` stops the threads too, but can only print an error.
//!
//! Shutdown does not touch the shared instances: [`Engine::shared`] and the
//! handles keep working, and an instance's value is dropped with the last
//! of the engine's handles and that instance's [`EngineShared`] handles (a
//! replaced value, when its last reader lets go).

mod backend;
mod builder;
mod call;
mod config;
mod error;
mod shared;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::Serialize;

#[cfg(feature = "baseline")]
use self::backend::Locked;
use self::backend::{CallStats, Components, DynClock, Latchfree, names};
pub use self::builder::EngineBuilder;
pub use self::call::{Call, Reply, Session, ToolError};
use self::call::{CallEvent, echo};
pub use self::config::{AuditConfig, CacheConfig, ConfigError, EngineConfig, SessionConfig};
pub use self::error::{EngineBuildError, EngineError};
pub use self::shared::{EngineShared, EngineSharedGuard};
use crate::audit::{AuditError, AuditLog, Guarantee};
#[cfg(feature = "baseline")]
use crate::baseline::{LockedAuditLog, LockedSessionRegistry, LockedStats, LockedTtlCache};
use crate::cache::TtlCache;
use crate::clock::Clock;
use crate::session::SessionRegistry;
use crate::stats::Stats;
use crate::sync::atomic::{AtomicBool, Ordering};

/// The metric names an engine reports (both kinds), for readers of
/// [`Engine::prometheus`] and [`Engine::counter`].
pub mod metric {
    pub use super::backend::names::*;
}

/// The counters every engine keeps, read at one moment (one snapshot of its
/// statistics; see [`Engine::counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EngineCounters {
    /// Calls, failed ones included.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Bytes of arguments received.
    pub bytes_in: u64,
    /// Bytes of results returned.
    pub bytes_out: u64,
    /// Calls answered from a cache.
    pub cache_hits: u64,
    /// Sessions created.
    pub sessions_created: u64,
}

/// The components of an engine, by kind, for what the engine's own API does
/// not cover (see [`Engine::parts`]).
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Parts<'a> {
    /// latchfree's components.
    Latchfree {
        /// The metrics of every component.
        stats: &'a Stats,
        /// The session registry.
        sessions: &'a SessionRegistry<Session>,
        /// The tool-result caches, by tool name (keys: `tool\0args_json`).
        caches: &'a BTreeMap<String, TtlCache<String, Arc<str>>>,
        /// The audit stream.
        audit: &'a AuditLog,
        /// The telemetry stream, when configured.
        telemetry: Option<&'a AuditLog>,
    },
    /// The locked twins (feature `baseline`).
    #[cfg(feature = "baseline")]
    Locked {
        /// Every counter, and the latency histogram as power-of-two bucket
        /// counters (`engine_call_latency_ns_bucket_I`: values below `2^I`).
        stats: &'a LockedStats,
        /// The session registry.
        sessions: &'a LockedSessionRegistry<Session>,
        /// The tool-result caches, by tool name (keys: `tool\0args_json`).
        caches: &'a BTreeMap<String, LockedTtlCache<String, Arc<str>>>,
        /// The audit stream.
        audit: &'a LockedAuditLog,
        /// The telemetry stream, when configured.
        telemetry: Option<&'a LockedAuditLog>,
    },
}

impl fmt::Debug for Parts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Parts::Latchfree { .. } => "Parts::Latchfree",
            #[cfg(feature = "baseline")]
            Parts::Locked { .. } => "Parts::Locked",
        })
    }
}

// Built once and held in an `Arc`: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Latchfree(Latchfree),
    #[cfg(feature = "baseline")]
    Locked(Locked),
}

/// Runs `$body` with `$c` bound to the components, whichever kind.
macro_rules! with_parts {
    ($kind:expr, $c:ident => $body:expr) => {
        match $kind {
            Kind::Latchfree($c) => $body,
            #[cfg(feature = "baseline")]
            Kind::Locked($c) => $body,
        }
    };
}

// After `with_parts!`, which it uses.
mod sweeper;
use self::sweeper::Stop;

struct Inner {
    parts: Arc<Kind>,
    clock: DynClock,
    config: EngineConfig,
    /// Set by `shutdown`; checked at the start of every call.
    closed: AtomicBool,
    stop: Stop,
    sweeper: Mutex<Option<JoinHandle<()>>>,
    /// The result of the first `shutdown`, handed to every later one.
    shutdown: Mutex<Option<Result<(), AuditError>>>,
    /// The named shared instances (untouched by `shutdown`).
    shared: shared::Instances,
}

impl Inner {
    fn stop_sweeper(&self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        let handle = self
            .sweeper
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // The sweeper only calls `sweep`, which does not panic; a panic
            // there is a bug reported by the thread itself.
            let _ = handle.join();
        }
    }

    fn shutdown(&self) -> Result<(), AuditError> {
        let mut done = self.shutdown.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(result) = &*done {
            return result.clone();
        }
        // Relaxed: calls that miss the flag still find the logs closed
        // (`AuditError::Closed`); the flag only makes the error clearer.
        self.closed.store(true, Ordering::Relaxed);
        self.stop_sweeper();
        let result = with_parts!(&*self.parts, c => c.close());
        *done = Some(result.clone());
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("latchfree: engine shutdown on drop: {e}");
        }
    }
}

/// The shared state of a tool server: one cloneable handle (an `Arc`
/// inside) to the statistics, session registry, tool-result caches and
/// audit logs, latchfree's or their locked twins. See the [module
/// docs](self) for the request path.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("locked", &self.is_locked())
            .field("audit_dir", &self.inner.config.audit.dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder for a latchfree engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::new()
    }

    /// A builder for the all-locked engine (the [`baseline`](crate::baseline)
    /// twins), with the same API (feature `baseline`).
    #[cfg(feature = "baseline")]
    pub fn locked() -> EngineBuilder {
        Self::builder().locked(true)
    }

    /// Builds an engine from a configuration.
    pub fn from_config(config: EngineConfig) -> Result<Self, EngineBuildError> {
        EngineBuilder::from_config(config).build()
    }

    /// Runs one tool call through the request path (see the [module
    /// docs](self)): session get-or-create, cache get-or-load (running
    /// `tool` with the arguments on a miss, or every time for a tool
    /// without a cache), one stats batch, one audit event.
    ///
    /// Every call, failed or not, is counted and audited once. An audit
    /// failure is returned as [`EngineError::Audit`] even though the tool
    /// ran.
    pub fn call(
        &self,
        call: &Call<'_>,
        tool: impl FnOnce(&str) -> Result<String, ToolError>,
    ) -> Result<Reply, EngineError> {
        // Relaxed: see `Inner::shutdown`.
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(EngineError::ShutDown);
        }
        with_parts!(&*self.inner.parts, c => self.request_path(c, call, tool))
    }

    fn request_path<C: Components>(
        &self,
        c: &C,
        call: &Call<'_>,
        tool: impl FnOnce(&str) -> Result<String, ToolError>,
    ) -> Result<Reply, EngineError> {
        let start = Instant::now();
        let result = self.session_and_result(c, call, tool);
        let latency = start.elapsed();
        let message = record_call(c, call, &result, latency);
        c.audit(&call_event(call, &result, latency, message.as_deref()))?;
        reply(result, latency)
    }

    /// As [`call`](Self::call), for async callers (feature `async`): `tool`
    /// returns a future, and every wait on the way is awaited instead of
    /// parking the thread: joining another call's session creation, joining
    /// another call's cache load of the same key (which runs `tool` once),
    /// and the audit event's guarantee (group commit with the other calls).
    /// A cache hit and a call without an audit wait complete without
    /// suspending. With the locked twins (`Engine::locked`) the locks are
    /// taken as in `call`, and a cache miss runs `tool` without single
    /// flight (the twin has no async flight).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes:
    ///
    /// * while it runs `tool` for a cached tool, as the leader of that key's
    ///   load: `tool` is dropped, and a call waiting for the same key runs
    ///   its own `tool` instead (see
    ///   [`TtlCache::get_or_load_async`](crate::cache::TtlCache::get_or_load_async));
    /// * while it waits for another call's load, or before its audit event
    ///   is queued: nothing of this call is counted or audited;
    /// * while it waits for the audit guarantee: the call is counted and its
    ///   event is queued, exactly once, and will be written.
    ///
    /// A session it created stays (it is the id's session, as for `call`).
    #[cfg(feature = "async")]
    pub async fn call_async<Fut>(
        &self,
        call: &Call<'_>,
        tool: impl FnOnce(&str) -> Fut + Send,
    ) -> Result<Reply, EngineError>
    where
        Fut: Future<Output = Result<String, ToolError>> + Send,
    {
        // Relaxed: see `Inner::shutdown`.
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(EngineError::ShutDown);
        }
        match &*self.inner.parts {
            Kind::Latchfree(c) => self.request_path_async(c, call, tool).await,
            #[cfg(feature = "baseline")]
            Kind::Locked(c) => self.request_path_async(c, call, tool).await,
        }
    }

    #[cfg(feature = "async")]
    async fn request_path_async<C: Components, Fut>(
        &self,
        c: &C,
        call: &Call<'_>,
        tool: impl FnOnce(&str) -> Fut + Send,
    ) -> Result<Reply, EngineError>
    where
        Fut: Future<Output = Result<String, ToolError>> + Send,
    {
        let start = Instant::now();
        let result = self.session_and_result_async(c, call, tool).await;
        let latency = start.elapsed();
        let message = record_call(c, call, &result, latency);
        let event = call_event(call, &result, latency, message.as_deref());
        c.audit_async(&event)?.await?;
        reply(result, latency)
    }

    #[cfg(feature = "async")]
    #[allow(clippy::type_complexity)]
    async fn session_and_result_async<C: Components, Fut>(
        &self,
        c: &C,
        call: &Call<'_>,
        tool: impl FnOnce(&str) -> Fut + Send,
    ) -> Result<(Arc<Session>, bool, Arc<str>, bool), EngineError>
    where
        Fut: Future<Output = Result<String, ToolError>> + Send,
    {
        let created = AtomicBool::new(false);
        let session = c
            .session_async(call.session_id, || {
                // Relaxed: read below by this same call.
                created.store(true, Ordering::Relaxed);
                Session::new(call.session_id, self.inner.clock.now())
            })
            .await?;
        // Relaxed: written above by this same call.
        let created = created.load(Ordering::Relaxed);
        if created {
            c.session_created();
        }
        // Relaxed: a statistic; it orders nothing else.
        session.calls.fetch_add(1, Ordering::Relaxed);
        let ran = AtomicBool::new(false);
        let run = async {
            // Relaxed: read below by this same call.
            ran.store(true, Ordering::Relaxed);
            tool(call.args_json).await.map(Arc::<str>::from)
        };
        let output = if c.has_cache(call.tool) {
            c.cache_load_async(call.tool, cache_key(call), run).await?
        } else {
            run.await.map_err(EngineError::Tool)?
        };
        // Relaxed: written above by this same call.
        Ok((session, created, output, !ran.load(Ordering::Relaxed)))
    }

    #[allow(clippy::type_complexity)]
    fn session_and_result<C: Components>(
        &self,
        c: &C,
        call: &Call<'_>,
        tool: impl FnOnce(&str) -> Result<String, ToolError>,
    ) -> Result<(Arc<Session>, bool, Arc<str>, bool), EngineError> {
        let mut created = false;
        let session = c.session(call.session_id, || {
            created = true;
            Session::new(call.session_id, self.inner.clock.now())
        })?;
        if created {
            c.session_created();
        }
        // Relaxed: a statistic; it orders nothing else.
        session.calls.fetch_add(1, Ordering::Relaxed);
        let mut ran = false;
        let run = || {
            ran = true;
            tool(call.args_json).map(Arc::<str>::from)
        };
        let output = if c.has_cache(call.tool) {
            c.cache_load(call.tool, cache_key(call), run)?
        } else {
            run().map_err(EngineError::Tool)?
        };
        Ok((session, created, output, !ran))
    }

    /// Appends one event to the telemetry stream (configured with
    /// [`EngineBuilder::telemetry`]; a no-op otherwise). It does not wait
    /// for the event to be written.
    pub fn telemetry<E: Serialize + ?Sized>(&self, event: &E) -> Result<(), EngineError> {
        Ok(with_parts!(&*self.inner.parts, c => c.telemetry(event))?)
    }

    /// The engine's counters now, read at one moment: a call's updates are
    /// all in it or none are (so `errors <= calls` and every byte counted
    /// belongs to a counted call, however many calls run meanwhile).
    pub fn counters(&self) -> EngineCounters {
        let [
            calls,
            errors,
            bytes_in,
            bytes_out,
            cache_hits,
            sessions_created,
        ] = with_parts!(
            &*self.inner.parts,
            c => c.counters([
                names::CALLS,
                names::ERRORS,
                names::BYTES_IN,
                names::BYTES_OUT,
                names::CACHE_HITS,
                names::SESSIONS_CREATED,
            ])
        );
        EngineCounters {
            calls,
            errors,
            bytes_in,
            bytes_out,
            cache_hits,
            sessions_created,
        }
    }

    /// One counter's value now, by name (see [`metric`]); 0 if unknown.
    pub fn counter(&self, name: &str) -> u64 {
        let [value] = with_parts!(&*self.inner.parts, c => c.counters([name]));
        value
    }

    /// One labelled counter series' value now, by name and labels (in any
    /// order), such as `counter_with("cache_hits_total", &[("cache", "query")])`;
    /// 0 if unknown (and always 0 on the locked engine, which keeps no
    /// labelled series).
    pub fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        with_parts!(&*self.inner.parts, c => c.counter_with(name, labels))
    }

    /// Every metric in the Prometheus text format (for `GET /metrics`).
    pub fn prometheus(&self) -> String {
        with_parts!(&*self.inner.parts, c => c.prometheus())
    }

    /// The live session `id`, if any (nothing is created or counted).
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        with_parts!(&*self.inner.parts, c => c.get_session(id))
    }

    /// Ends the session `id`; returns it if it was live.
    pub fn remove_session(&self, id: &str) -> Option<Arc<Session>> {
        with_parts!(&*self.inner.parts, c => c.remove_session(id))
    }

    /// Sessions held now.
    pub fn session_count(&self) -> usize {
        with_parts!(&*self.inner.parts, c => c.session_count())
    }

    /// The names of the tools whose results are cached.
    pub fn cached_tools(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.config.caches.keys().map(String::as_str)
    }

    /// Results held in the cache of `tool` (`None` if it has none).
    pub fn cache_len(&self, tool: &str) -> Option<usize> {
        with_parts!(&*self.inner.parts, c => c.cache_len(tool))
    }

    /// Drops every cached result of `tool`; returns how many (`None` if it
    /// has no cache).
    pub fn invalidate_cache(&self, tool: &str) -> Option<usize> {
        with_parts!(&*self.inner.parts, c => c.invalidate_cache(tool))
    }

    /// Sweeps expired sessions and cache entries out now (the sweeper
    /// thread does it every `sweep_interval`).
    pub fn sweep(&self) {
        with_parts!(&*self.inner.parts, c => c.sweep())
    }

    /// A handle to the shared instance `name` holding a `T`, created empty
    /// on first request; every request for `name` reaches the same
    /// instance. See [Shared instances](self#shared-instances).
    ///
    /// This is a cold path (it takes a mutex around the engine's map of
    /// instances): request the handle once and keep it; the handle's own
    /// operations never touch the map. It works after
    /// [`shutdown`](Self::shutdown) too.
    ///
    /// # Errors
    ///
    /// [`EngineError::SharedTypeMismatch`] if `name` was created with
    /// another `T`; [`EngineError::SharedMetrics`] if `name` is not a valid
    /// metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`, at most
    /// [`MAX_NAME_LEN`](crate::stats::MAX_NAME_LEN) bytes), on either kind,
    /// or if the
    /// engine's [`Stats`] refuses one of its counters.
    pub fn shared<T: Send + Sync + 'static>(
        &self,
        name: &str,
    ) -> Result<EngineShared<T>, EngineError> {
        self.inner.shared.get(&self.inner.parts, name)
    }

    /// The components themselves, by kind.
    pub fn parts(&self) -> Parts<'_> {
        match &*self.inner.parts {
            Kind::Latchfree(c) => Parts::Latchfree {
                stats: c.stats(),
                sessions: c.sessions(),
                caches: c.caches(),
                audit: c.audit_log(),
                telemetry: c.telemetry_log(),
            },
            #[cfg(feature = "baseline")]
            Kind::Locked(c) => Parts::Locked {
                stats: c.stats(),
                sessions: c.sessions(),
                caches: c.caches(),
                audit: c.audit_log(),
                telemetry: c.telemetry_log(),
            },
        }
    }

    /// Whether this is the all-locked engine.
    pub fn is_locked(&self) -> bool {
        #[cfg(feature = "baseline")]
        return matches!(&*self.inner.parts, Kind::Locked(_));
        #[cfg(not(feature = "baseline"))]
        false
    }

    /// The audit guarantee each call gets.
    pub fn guarantee(&self) -> Guarantee {
        self.inner.config.audit.guarantee
    }

    /// The audit directory (verify it with [`audit::verify`](crate::audit::verify())).
    pub fn audit_dir(&self) -> &Path {
        &self.inner.config.audit.dir
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Waits until the audit (and telemetry) line of every call that
    /// returned is written to the OS, whatever the guarantee.
    pub fn flush(&self) -> Result<(), EngineError> {
        Ok(with_parts!(&*self.inner.parts, c => c.flush())?)
    }

    /// Stops the sweeper thread, drains and closes the audit and telemetry
    /// logs (every call that returned has its line written), and returns
    /// the first error. Later calls fail with [`EngineError::ShutDown`].
    /// Idempotent: calling it again, from any handle, returns the same
    /// result.
    pub fn shutdown(&self) -> Result<(), EngineError> {
        Ok(self.inner.shutdown()?)
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Engine>();
    send_sync::<EngineError>();
    send_sync::<Reply>();
};

/// A call's key in its tool's cache: the tool, a NUL, the arguments.
fn cache_key(call: &Call<'_>) -> String {
    let mut key = String::with_capacity(call.tool.len() + 1 + call.args_json.len());
    key.push_str(call.tool);
    key.push('\0');
    key.push_str(call.args_json);
    key
}

type CallResult = Result<(Arc<Session>, bool, Arc<str>, bool), EngineError>;

/// Applies a finished call's stats batch; returns its error message.
fn record_call<C: Components>(
    c: &C,
    call: &Call<'_>,
    result: &CallResult,
    latency: std::time::Duration,
) -> Option<String> {
    let (ok, cached, bytes_out) = match result {
        Ok((_, _, output, cached)) => (true, *cached, output.len() as u64),
        Err(_) => (false, false, 0),
    };
    c.record(&CallStats {
        error: !ok,
        cached,
        bytes_in: call.args_json.len() as u64,
        bytes_out,
        latency_ns: nanos(latency),
    });
    result.as_ref().err().map(ToString::to_string)
}

/// A finished call's audit event.
fn call_event<'a>(
    call: &'a Call<'_>,
    result: &CallResult,
    latency: std::time::Duration,
    error: Option<&'a str>,
) -> CallEvent<'a> {
    let (ok, cached, bytes_out) = match result {
        Ok((_, _, output, cached)) => (true, *cached, output.len() as u64),
        Err(_) => (false, false, 0),
    };
    CallEvent {
        event: "tool_call",
        session: echo(call.session_id),
        tool: echo(call.tool),
        ok,
        cached,
        bytes_in: call.args_json.len() as u64,
        bytes_out,
        latency_ns: nanos(latency),
        error,
    }
}

fn nanos(latency: std::time::Duration) -> u64 {
    u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX)
}

/// A finished, audited call's reply.
fn reply(result: CallResult, latency: std::time::Duration) -> Result<Reply, EngineError> {
    let (session, session_created, output, cached) = result?;
    Ok(Reply {
        output,
        cached,
        session,
        session_created,
        latency,
    })
}
