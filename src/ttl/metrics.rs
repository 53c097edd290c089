//! The counters of one map, registered in a [`Stats`] under a prefix.

use super::EvictionCause;
use crate::stats::{Counter, Gauge, Stats, StatsError};

/// The counters of one map, registered in a [`Stats`].
pub(crate) struct Counters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) inits: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) init_errors: Counter,
    pub(crate) rejected: Counter,
    pub(crate) evictions: [Counter; 5],
    pub(crate) live: Gauge,
}

/// The metric names of one map, under a prefix.
pub(crate) struct MetricNames {
    /// Hits.
    pub(crate) hits: &'static str,
    /// Misses.
    pub(crate) misses: &'static str,
    /// Initialisations run (creations, loads).
    pub(crate) inits: &'static str,
    /// Callers that waited on another caller's initialisation.
    pub(crate) coalesced: &'static str,
    /// Initialisations that failed or panicked.
    pub(crate) init_errors: &'static str,
    /// Live entries (a gauge).
    pub(crate) live: &'static str,
}

impl Counters {
    pub(crate) fn register(
        stats: &Stats,
        prefix: &str,
        names: &MetricNames,
    ) -> Result<Self, StatsError> {
        let counter = |what: &str| stats.counter(&format!("{prefix}_{what}_total"));
        let eviction =
            |cause: EvictionCause| stats.counter(&format!("{prefix}_evictions_{cause}_total"));
        Ok(Self {
            hits: counter(names.hits)?,
            misses: counter(names.misses)?,
            inits: counter(names.inits)?,
            coalesced: counter(names.coalesced)?,
            init_errors: counter(names.init_errors)?,
            rejected: counter("rejected")?,
            evictions: [
                eviction(EvictionCause::Expired)?,
                eviction(EvictionCause::Removed)?,
                eviction(EvictionCause::Capacity)?,
                eviction(EvictionCause::Cleared)?,
                eviction(EvictionCause::Replaced)?,
            ],
            live: stats.gauge(&format!("{prefix}_{}", names.live))?,
        })
    }
}
