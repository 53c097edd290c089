//! The locked twins as an engine's components (feature `baseline`): each
//! component behind its own lock, stats in one `Mutex<HashMap>`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::super::config::EngineConfig;
use super::super::{EngineBuildError, Session, ToolError};
use super::{CallStats, Components, DynClock, cache_limits, names, session_limits};
use crate::audit::{AuditError, Guarantee};
use crate::baseline::{LockedAuditLog, LockedSessionRegistry, LockedStats, LockedTtlCache};
use crate::cache::LoadError;
use crate::session::SessionError;

/// Latency buckets of the locked engine's histogram: bucket `i` holds
/// values below `2^i` ns (and at least `2^(i-1)`).
const LOCKED_BUCKETS: usize = 65;

/// The locked twins: each component behind its own lock, stats in one
/// `Mutex<HashMap>` (the histogram as power-of-two bucket counters in it).
pub(in crate::engine) struct Locked {
    stats: LockedStats,
    bucket_names: Vec<String>,
    sessions: LockedSessionRegistry<Session>,
    caches: BTreeMap<String, LockedTtlCache<String, Arc<str>>>,
    audit: LockedAuditLog,
    telemetry: Option<LockedAuditLog>,
}

impl Locked {
    pub(in crate::engine) fn build(
        config: &EngineConfig,
        clock: &DynClock,
    ) -> Result<Self, EngineBuildError> {
        let sessions = session_limits(
            config,
            LockedSessionRegistry::builder()
                .max_sessions(config.sessions.max_sessions)
                .clock(clock.clone()),
            |b, d| b.idle_timeout(d),
            |b, d| b.max_lifetime(d),
        )
        .build()?;
        let mut caches = BTreeMap::new();
        for (name, cache) in &config.caches {
            let built = cache_limits(
                cache,
                LockedTtlCache::builder()
                    .max_entries(cache.max_entries)
                    .clock(clock.clone()),
                |b, d| b.time_to_live(d),
                |b, d| b.time_to_idle(d),
            )
            .build()?;
            caches.insert(name.clone(), built);
        }
        let audit = LockedAuditLog::open(&config.audit.dir, config.audit.guarantee)?
            .max_file_bytes(config.audit.max_file_bytes);
        let telemetry = match config.audit.telemetry {
            true => Some(LockedAuditLog::open(
                config.audit.dir.join("telemetry"),
                Guarantee::Async,
            )?),
            false => None,
        };
        let stats = LockedStats::new();
        let bucket_names: Vec<String> = (0..LOCKED_BUCKETS)
            .map(|i| format!("{}_bucket_{i}", names::LATENCY))
            .collect();
        for name in [
            names::CALLS,
            names::ERRORS,
            names::BYTES_IN,
            names::BYTES_OUT,
            names::CACHE_HITS,
            names::SESSIONS_CREATED,
        ]
        .into_iter()
        .chain(bucket_names.iter().map(String::as_str))
        {
            stats.set(name, 0);
        }
        Ok(Self {
            stats,
            bucket_names,
            sessions,
            caches,
            audit,
            telemetry,
        })
    }
}

impl Locked {
    pub(in crate::engine) fn stats(&self) -> &LockedStats {
        &self.stats
    }

    pub(in crate::engine) fn sessions(&self) -> &LockedSessionRegistry<Session> {
        &self.sessions
    }

    pub(in crate::engine) fn caches(&self) -> &BTreeMap<String, LockedTtlCache<String, Arc<str>>> {
        &self.caches
    }

    pub(in crate::engine) fn audit_log(&self) -> &LockedAuditLog {
        &self.audit
    }

    pub(in crate::engine) fn telemetry_log(&self) -> Option<&LockedAuditLog> {
        self.telemetry.as_ref()
    }
}

/// Adds `n` to `name` in a locked stats map, without allocating when the
/// name is present (the engine registers every name at build time).
fn add(map: &mut HashMap<String, u64>, name: &str, n: u64) {
    match map.get_mut(name) {
        Some(v) => *v = v.wrapping_add(n),
        None => {
            map.insert(name.to_owned(), n);
        }
    }
}

impl Components for Locked {
    shared_components!();

    // The locked twins have no async waits: they take their locks as the
    // blocking calls do (the baseline a comparison runs against).
    #[cfg(feature = "async")]
    async fn session_async(
        &self,
        id: &str,
        init: impl FnOnce() -> Session + Send,
    ) -> Result<Arc<Session>, SessionError> {
        self.session(id, init)
    }

    #[cfg(feature = "async")]
    async fn cache_load_async(
        &self,
        tool: &str,
        key: String,
        load: impl Future<Output = Result<Arc<str>, ToolError>> + Send,
    ) -> Result<Arc<str>, LoadError<ToolError>> {
        // No async single flight in the twin: a miss runs `load`, then
        // inserts (a full cache keeps the value out, as a lossy insert).
        if let Some(cache) = self.caches.get(tool)
            && let Some(hit) = cache.get(&key)
        {
            return Ok(hit);
        }
        let value = load.await.map_err(|e| LoadError::Failed(Arc::new(e)))?;
        if let Some(cache) = self.caches.get(tool) {
            let _ = cache.insert(key, value.clone());
        }
        Ok(value)
    }

    #[cfg(feature = "async")]
    fn audit_async<E: Serialize + ?Sized>(
        &self,
        event: &E,
    ) -> Result<impl Future<Output = Result<(), AuditError>> + Send, AuditError> {
        self.audit(event)?;
        Ok(std::future::ready(Ok(())))
    }

    fn record(&self, call: &CallStats) {
        let bucket = (u64::BITS - call.latency_ns.leading_zeros()) as usize;
        self.stats.batch(|m| {
            add(m, names::CALLS, 1);
            add(m, names::ERRORS, u64::from(call.error));
            add(m, names::BYTES_IN, call.bytes_in);
            add(m, names::BYTES_OUT, call.bytes_out);
            add(m, names::CACHE_HITS, u64::from(call.cached));
            add(m, &self.bucket_names[bucket], 1);
        });
    }

    fn session_created(&self) {
        self.stats.increment(names::SESSIONS_CREATED, 1);
    }

    fn audit<E: Serialize + ?Sized>(&self, event: &E) -> Result<(), AuditError> {
        self.audit.log(event).map(drop)
    }

    fn counters<const N: usize>(&self, names: [&str; N]) -> [u64; N] {
        // One copy of the map, taken under its lock.
        let values = self.stats.snapshot();
        names.map(|name| values.get(name).copied().unwrap_or(0))
    }

    fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        // The locked twin keeps no labelled series.
        match labels {
            [] => self.counters([name])[0],
            _ => 0,
        }
    }

    fn prometheus(&self) -> String {
        use std::fmt::Write as _;
        let values = self.stats.snapshot();
        let mut out = String::new();
        let mut counters: Vec<(&String, &u64)> = values
            .iter()
            .filter(|(k, _)| !k.starts_with(names::LATENCY))
            .collect();
        counters.sort();
        for (name, value) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {value}");
        }
        let hist = names::LATENCY;
        let _ = writeln!(out, "# TYPE {hist} histogram");
        let mut cumulative = 0;
        for (i, name) in self
            .bucket_names
            .iter()
            .enumerate()
            .take(LOCKED_BUCKETS - 1)
        {
            cumulative += values.get(name).copied().unwrap_or(0);
            let le = (1u128 << i) - 1;
            let _ = writeln!(out, "{hist}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = values.get(names::CALLS).copied().unwrap_or(0);
        let _ = writeln!(out, "{hist}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{hist}_count {count}");
        out
    }
}
