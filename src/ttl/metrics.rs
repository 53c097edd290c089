//! The counters of one map, registered in a [`Stats`] under a prefix and
//! a label set.

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
    /// Live entries, kept by `increment`/`decrement` on each insert and
    /// removal: a write to this thread's shard, where a `set` would take a
    /// shared order number on every write.
    pub(crate) live: Gauge,
}

impl Counters {
    /// Registers `PREFIX_hits_total`, `PREFIX_misses_total`,
    /// `PREFIX_inits_total`, `PREFIX_coalesced_total`,
    /// `PREFIX_init_errors_total`, `PREFIX_rejected_total`, one
    /// `PREFIX_evictions_CAUSE_total` per cause and the gauge
    /// `PREFIX_entries`, each with `labels`: the same names for sessions and
    /// caches.
    pub(crate) fn register(
        stats: &Stats,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> Result<Self, StatsError> {
        let counter = |what: &str| stats.counter_with(&format!("{prefix}_{what}_total"), labels);
        let eviction = |cause: EvictionCause| {
            stats.counter_with(&format!("{prefix}_evictions_{cause}_total"), labels)
        };
        Ok(Self {
            hits: counter("hits")?,
            misses: counter("misses")?,
            inits: counter("inits")?,
            coalesced: counter("coalesced")?,
            init_errors: counter("init_errors")?,
            rejected: counter("rejected")?,
            evictions: [
                eviction(EvictionCause::Expired)?,
                eviction(EvictionCause::Removed)?,
                eviction(EvictionCause::Capacity)?,
                eviction(EvictionCause::Cleared)?,
                eviction(EvictionCause::Replaced)?,
            ],
            live: stats.gauge_with(&format!("{prefix}_entries"), labels)?,
        })
    }
}
