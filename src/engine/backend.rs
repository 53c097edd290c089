//! The two sets of components an [`Engine`](super::Engine) can hold: the
//! latchfree ones and their locked twins, behind one private trait, so that
//! the request path is written once and runs on either.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::config::{CacheConfig, EngineConfig};
use super::{EngineBuildError, Session, ToolError};
use crate::audit::{AuditError, AuditLog, Guarantee};
use crate::cache::{LoadError, TtlCache};
use crate::clock::Clock;
use crate::session::{SessionError, SessionRegistry};
use crate::stats::{Counter, Histogram, Stats, Update};
use crate::ttl::Sweep;

/// The metric names every engine reports, latchfree or locked.
pub(super) mod names {
    /// Tool calls, failed ones included.
    pub const CALLS: &str = "engine_calls_total";
    /// Calls that returned an error.
    pub const ERRORS: &str = "engine_errors_total";
    /// Bytes of arguments received.
    pub const BYTES_IN: &str = "engine_bytes_in_total";
    /// Bytes of results returned.
    pub const BYTES_OUT: &str = "engine_bytes_out_total";
    /// Calls answered from a cache without computing.
    pub const CACHE_HITS: &str = "engine_cache_hits_total";
    /// Sessions created.
    pub const SESSIONS_CREATED: &str = "engine_sessions_created_total";
    /// Per-call latency (session, cache, tool), ns.
    pub const LATENCY: &str = "engine_call_latency_ns";
}

/// One call's stats batch.
pub(super) struct CallStats {
    pub(super) error: bool,
    pub(super) cached: bool,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) latency_ns: u64,
}

/// What the request path needs from a set of components.
pub(super) trait Components: Send + Sync + 'static {
    /// The session `id`, created by `init` exactly once per live id.
    fn session(
        &self,
        id: &str,
        init: impl FnOnce() -> Session,
    ) -> Result<Arc<Session>, SessionError>;

    /// As [`session`](Self::session), awaiting another caller's creation
    /// of `id` instead of blocking.
    #[cfg(feature = "async")]
    fn session_async(
        &self,
        id: &str,
        init: impl FnOnce() -> Session + Send,
    ) -> impl Future<Output = Result<Arc<Session>, SessionError>> + Send;

    /// As [`cache_load`](Self::cache_load), with `load` a future; awaits
    /// another caller's load of `key` instead of blocking.
    #[cfg(feature = "async")]
    fn cache_load_async(
        &self,
        tool: &str,
        key: String,
        load: impl Future<Output = Result<Arc<str>, ToolError>> + Send,
    ) -> impl Future<Output = Result<Arc<str>, LoadError<ToolError>>> + Send;

    /// Queues one audit event now; the future waits for the configured
    /// guarantee.
    #[cfg(feature = "async")]
    fn audit_async<E: Serialize + ?Sized>(
        &self,
        event: &E,
    ) -> Result<impl Future<Output = Result<(), AuditError>> + Send, AuditError>;

    /// Whether a cache is named `tool`.
    fn has_cache(&self, tool: &str) -> bool;

    /// The value under `key` in the cache named `tool` (which exists),
    /// loaded once by `load` on a miss.
    fn cache_load(
        &self,
        tool: &str,
        key: String,
        load: impl FnOnce() -> Result<Arc<str>, ToolError>,
    ) -> Result<Arc<str>, LoadError<ToolError>>;

    /// Applies one call's counters and latency as one batch.
    fn record(&self, call: &CallStats);

    /// Counts a created session.
    fn session_created(&self);

    /// Appends one audit event and waits for the configured guarantee.
    fn audit<E: Serialize + ?Sized>(&self, event: &E) -> Result<(), AuditError>;

    /// Appends one telemetry event (no wait).
    fn telemetry<E: Serialize + ?Sized>(&self, event: &E) -> Result<(), AuditError>;

    /// A counter's value now (0 if unknown).
    fn counters<const N: usize>(&self, names: [&str; N]) -> [u64; N];

    /// A labelled counter series' value now (0 if unknown).
    fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> u64;

    /// The Prometheus text of every metric.
    fn prometheus(&self) -> String;

    /// Live sessions held.
    fn session_count(&self) -> usize;

    /// The session `id`, if live (no creation).
    fn get_session(&self, id: &str) -> Option<Arc<Session>>;

    /// Removes the session `id`.
    fn remove_session(&self, id: &str) -> Option<Arc<Session>>;

    /// Entries in the cache named `tool` (`None` without one).
    fn cache_len(&self, tool: &str) -> Option<usize>;

    /// Drops every entry of the cache named `tool`; how many.
    fn invalidate_cache(&self, tool: &str) -> Option<usize>;

    /// Sweeps expired sessions and cache entries out.
    fn sweep(&self);

    /// Waits until every event logged so far is written to the OS.
    fn flush(&self) -> Result<(), AuditError>;

    /// Drains and closes the logs.
    fn close(&self) -> Result<(), AuditError>;
}

/// Forwards to a shared clock (the builders take `impl Clock`).
#[derive(Clone)]
pub(super) struct DynClock(pub(super) Arc<dyn Clock>);

impl Clock for DynClock {
    fn now(&self) -> SystemTime {
        self.0.now()
    }
    fn is_cheap(&self) -> bool {
        self.0.is_cheap()
    }
}

fn session_limits<B>(
    config: &EngineConfig,
    builder: B,
    idle: impl FnOnce(B, Duration) -> B,
    life: impl FnOnce(B, Duration) -> B,
) -> B {
    let builder = match config.sessions.idle_timeout {
        Some(d) => idle(builder, d),
        None => builder,
    };
    match config.sessions.max_lifetime {
        Some(d) => life(builder, d),
        None => builder,
    }
}

fn cache_limits<B>(
    cache: &CacheConfig,
    builder: B,
    ttl: impl FnOnce(B, Duration) -> B,
    tti: impl FnOnce(B, Duration) -> B,
) -> B {
    let builder = match cache.ttl {
        Some(d) => ttl(builder, d),
        None => builder,
    };
    match cache.tti {
        Some(d) => tti(builder, d),
        None => builder,
    }
}

/// The methods whose code is the same for both kinds (only the types differ).
macro_rules! shared_components {
    () => {
        fn session(
            &self,
            id: &str,
            init: impl FnOnce() -> Session,
        ) -> Result<Arc<Session>, SessionError> {
            self.sessions.get_or_create(id, init)
        }

        fn has_cache(&self, tool: &str) -> bool {
            self.caches.contains_key(tool)
        }

        fn cache_load(
            &self,
            tool: &str,
            key: String,
            load: impl FnOnce() -> Result<Arc<str>, ToolError>,
        ) -> Result<Arc<str>, LoadError<ToolError>> {
            match self.caches.get(tool) {
                Some(cache) => cache.try_get_or_load(key, load),
                None => load().map_err(|e| LoadError::Failed(Arc::new(e))),
            }
        }

        fn telemetry<E: Serialize + ?Sized>(&self, event: &E) -> Result<(), AuditError> {
            match &self.telemetry {
                Some(log) => log.log(event).map(drop),
                None => Ok(()),
            }
        }

        fn session_count(&self) -> usize {
            self.sessions.len()
        }

        fn get_session(&self, id: &str) -> Option<Arc<Session>> {
            self.sessions.get(id)
        }

        fn remove_session(&self, id: &str) -> Option<Arc<Session>> {
            self.sessions.remove(id)
        }

        fn cache_len(&self, tool: &str) -> Option<usize> {
            self.caches.get(tool).map(|c| c.len())
        }

        fn invalidate_cache(&self, tool: &str) -> Option<usize> {
            self.caches.get(tool).map(|c| c.invalidate_all())
        }

        fn sweep(&self) {
            self.sessions.sweep();
            self.caches.values().for_each(|c| {
                c.sweep();
            });
        }

        fn flush(&self) -> Result<(), AuditError> {
            let audit = self.audit.flush().map(drop);
            let telemetry = self
                .telemetry
                .as_ref()
                .map_or(Ok(()), |t| t.flush().map(drop));
            audit.and(telemetry)
        }

        fn close(&self) -> Result<(), AuditError> {
            let audit = self.audit.close().map(drop);
            let telemetry = self
                .telemetry
                .as_ref()
                .map_or(Ok(()), |t| t.close().map(drop));
            audit.and(telemetry)
        }
    };
}

/// latchfree's components.
pub(super) struct Latchfree {
    stats: Stats,
    calls: Counter,
    errors: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    cache_hits: Counter,
    sessions_created: Counter,
    latency: Histogram,
    sessions: SessionRegistry<Session>,
    caches: BTreeMap<String, TtlCache<String, Arc<str>>>,
    audit: AuditLog,
    telemetry: Option<AuditLog>,
    guarantee: Guarantee,
}

impl Latchfree {
    pub(super) fn build(
        config: &EngineConfig,
        clock: &DynClock,
        stats: Stats,
    ) -> Result<Self, EngineBuildError> {
        let sessions = session_limits(
            config,
            SessionRegistry::builder()
                .max_sessions(config.sessions.max_sessions)
                .clock(clock.clone())
                // The engine's own thread sweeps (and stops at shutdown);
                // lookups read the clock directly.
                .sweep(Sweep::Manual)
                .time_resolution(Duration::ZERO)
                .stats(&stats),
            |b, d| b.idle_timeout(d),
            |b, d| b.max_lifetime(d),
        )
        .build()?;
        let mut caches = BTreeMap::new();
        for (name, cache) in &config.caches {
            let built = cache_limits(
                cache,
                TtlCache::builder()
                    .max_entries(cache.max_entries)
                    .clock(clock.clone())
                    .sweep(Sweep::Manual)
                    .time_resolution(Duration::ZERO)
                    .stats(&stats)
                    .metrics_prefix("cache")
                    .metrics_labels([("cache", name.as_str())]),
                |b, d| b.time_to_live(d),
                |b, d| b.time_to_idle(d),
            )
            .build()?;
            caches.insert(name.clone(), built);
        }
        let audit = AuditLog::builder(&config.audit.dir)
            .capacity(config.audit.ring_capacity)
            .max_file_bytes(config.audit.max_file_bytes)
            .max_event_bytes(config.audit.max_event_bytes)
            .clock(clock.clone())
            .stats(&stats)
            .open()?;
        let telemetry = match config.audit.telemetry {
            true => Some(
                AuditLog::telemetry(config.audit.dir.join("telemetry"))
                    .max_event_bytes(config.audit.max_event_bytes)
                    .clock(clock.clone())
                    .stats(&stats)
                    .open()?,
            ),
            false => None,
        };
        Ok(Self {
            calls: stats.counter(names::CALLS)?,
            errors: stats.counter(names::ERRORS)?,
            bytes_in: stats.counter(names::BYTES_IN)?,
            bytes_out: stats.counter(names::BYTES_OUT)?,
            cache_hits: stats.counter(names::CACHE_HITS)?,
            sessions_created: stats.counter(names::SESSIONS_CREATED)?,
            latency: stats.histogram(names::LATENCY)?,
            stats,
            sessions,
            caches,
            audit,
            telemetry,
            guarantee: config.audit.guarantee,
        })
    }

    pub(super) fn stats(&self) -> &Stats {
        &self.stats
    }

    pub(super) fn sessions(&self) -> &SessionRegistry<Session> {
        &self.sessions
    }

    pub(super) fn caches(&self) -> &BTreeMap<String, TtlCache<String, Arc<str>>> {
        &self.caches
    }

    pub(super) fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    pub(super) fn telemetry_log(&self) -> Option<&AuditLog> {
        self.telemetry.as_ref()
    }
}

impl Components for Latchfree {
    shared_components!();

    #[cfg(feature = "async")]
    async fn session_async(
        &self,
        id: &str,
        init: impl FnOnce() -> Session + Send,
    ) -> Result<Arc<Session>, SessionError> {
        self.sessions
            .get_or_create_async(id, async { init() })
            .await
    }

    #[cfg(feature = "async")]
    async fn cache_load_async(
        &self,
        tool: &str,
        key: String,
        load: impl Future<Output = Result<Arc<str>, ToolError>> + Send,
    ) -> Result<Arc<str>, LoadError<ToolError>> {
        match self.caches.get(tool) {
            Some(cache) => cache.try_get_or_load_async(key, load).await,
            None => load.await.map_err(|e| LoadError::Failed(Arc::new(e))),
        }
    }

    #[cfg(feature = "async")]
    fn audit_async<E: Serialize + ?Sized>(
        &self,
        event: &E,
    ) -> Result<impl Future<Output = Result<(), AuditError>> + Send, AuditError> {
        let ticket = self.audit.log(event)?;
        let wait = match self.guarantee {
            Guarantee::Async => None,
            guarantee => Some(self.audit.wait_async(ticket, guarantee)),
        };
        Ok(async move {
            if let Some(wait) = wait {
                wait.await?;
            }
            Ok(())
        })
    }

    fn record(&self, call: &CallStats) {
        self.stats.apply([
            Update::Add(&self.calls, 1),
            Update::Add(&self.errors, u64::from(call.error)),
            Update::Add(&self.bytes_in, call.bytes_in),
            Update::Add(&self.bytes_out, call.bytes_out),
            Update::Add(&self.cache_hits, u64::from(call.cached)),
            Update::Record(&self.latency, call.latency_ns),
        ]);
    }

    fn session_created(&self) {
        self.sessions_created.inc();
    }

    fn audit<E: Serialize + ?Sized>(&self, event: &E) -> Result<(), AuditError> {
        match self.guarantee {
            Guarantee::Async => self.audit.log(event).map(drop),
            guarantee => self.audit.log_wait(event, guarantee).map(drop),
        }
    }

    fn counters<const N: usize>(&self, names: [&str; N]) -> [u64; N] {
        // One snapshot: a call's batch is in it whole or not at all.
        let snapshot = self.stats.snapshot();
        names.map(|name| snapshot.counter(name).unwrap_or(0))
    }

    fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.stats
            .snapshot()
            .counter_with(name, labels)
            .unwrap_or(0)
    }

    fn prometheus(&self) -> String {
        self.stats.snapshot().to_prometheus()
    }
}

#[cfg(feature = "baseline")]
mod locked;
#[cfg(feature = "baseline")]
pub(super) use locked::Locked;
