//! What a map is built from: the sweep mode, the checked options, the
//! lifetime of one entry, and the errors a builder reports.

use std::sync::Arc;
use std::time::Duration;

use super::{Counters, Journal, Listener};
use crate::clock::Clock;
use crate::stats::StatsError;

/// When expired entries are swept out (they are never *returned* either
/// way; sweeping frees their memory and capacity and calls the listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sweep {
    /// A background thread sweeps every `interval` (and keeps the coarse
    /// time, see the builders' `time_resolution`). It holds no lock that
    /// readers need and stops when the map is dropped.
    Background {
        /// Time between sweeps.
        interval: Duration,
    },
    /// No thread: every write operation (creation, insert, remove) first
    /// evicts up to 8 expired entries.
    Amortised,
    /// Only when asked (`sweep()`) and when the capacity bound is reached.
    Manual,
}

impl Default for Sweep {
    /// `Background` every 100 ms.
    fn default() -> Self {
        Sweep::Background {
            interval: Duration::from_millis(100),
        }
    }
}

/// Why a registry or cache could not be built.
///
/// Two errors are equal when they are the same variant with equal fields
/// (`Spawn`: the same [`io::ErrorKind`](std::io::ErrorKind)).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The capacity bound is zero.
    #[error("the capacity bound must be at least 1 (max_sessions / max_entries)")]
    ZeroCapacity,
    /// A timeout is zero: every entry would be expired at birth.
    #[error("{0} must be longer than zero (leave it unset for no limit)")]
    ZeroTimeout(&'static str),
    /// The sweep interval is zero.
    #[error("the background sweep interval must be longer than zero")]
    ZeroSweepInterval,
    /// The metrics could not be registered in the given [`Stats`](crate::stats::Stats).
    #[error("cannot register the metrics: {0}")]
    Stats(#[from] StatsError),
    /// The background sweeper thread could not be started.
    #[error("cannot start the sweeper thread")]
    Spawn(#[source] Arc<std::io::Error>),
}

impl PartialEq for BuildError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::ZeroCapacity, Self::ZeroCapacity)
            | (Self::ZeroSweepInterval, Self::ZeroSweepInterval) => true,
            (Self::ZeroTimeout(a), Self::ZeroTimeout(b)) => a == b,
            (Self::Stats(a), Self::Stats(b)) => a == b,
            (Self::Spawn(a), Self::Spawn(b)) => a.kind() == b.kind(),
            _ => false,
        }
    }
}

impl Eq for BuildError {}

/// A map's configuration, checked by the builders.
pub(crate) struct Options<K, V> {
    pub(crate) max_entries: usize,
    pub(crate) lifetime: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    pub(crate) evict_at_capacity: bool,
    pub(crate) sweep: Sweep,
    pub(crate) resolution: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) listener: Option<Listener<K, V>>,
    pub(crate) counters: Counters,
    /// Told of every change, in order per key (the cache's disk tier).
    pub(crate) journal: Option<Arc<dyn Journal<K, V>>>,
}

/// How long a published entry lives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Life {
    /// The map's lifetime.
    Default,
    /// This long from now. Zero is expired at birth: the entry replaces
    /// whatever was under its key and is never returned.
    Ttl(Duration),
}

impl From<Option<Duration>> for Life {
    fn from(ttl: Option<Duration>) -> Self {
        ttl.map_or(Life::Default, Life::Ttl)
    }
}

impl<K, V> Options<K, V> {
    /// Checks the values a builder collected.
    pub(crate) fn validate(
        &self,
        lifetime: &'static str,
        idle: &'static str,
    ) -> Result<(), BuildError> {
        if self.max_entries == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if self.lifetime.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::ZeroTimeout(lifetime));
        }
        if self.idle.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::ZeroTimeout(idle));
        }
        if matches!(self.sweep, Sweep::Background { interval } if interval.is_zero()) {
            return Err(BuildError::ZeroSweepInterval);
        }
        Ok(())
    }
}

/// A duration in nanoseconds, 0 for none (saturating).
pub(super) fn nanos(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
