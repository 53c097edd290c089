//! [`EngineBuilder`]: the settings of an [`Engine`], then `build`.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[cfg(feature = "baseline")]
use super::backend::Locked;
use super::backend::{DynClock, Latchfree};
use super::sweeper::spawn_sweeper;
use super::{
    CacheConfig, Engine, EngineBuildError, EngineConfig, Inner, Kind, SessionConfig, shared,
};
use crate::audit::Guarantee;
use crate::clock::{Clock, SystemClock};
use crate::stats::Stats;
use crate::sync::atomic::AtomicBool;

/// Builds an [`Engine`]; see [`EngineConfig`] for what each setting means.
#[must_use]
pub struct EngineBuilder {
    config: EngineConfig,
    has_dir: bool,
    clock: Arc<dyn Clock>,
    stats: Option<Stats>,
    /// Build from the locked twins (feature `baseline`).
    #[cfg(feature = "baseline")]
    locked: bool,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// The defaults, with no audit directory yet (see [`Engine::builder`]).
    pub(super) fn new() -> Self {
        Self {
            config: EngineConfig::new(PathBuf::new()),
            has_dir: false,
            clock: Arc::new(SystemClock),
            stats: None,
            #[cfg(feature = "baseline")]
            locked: false,
        }
    }

    /// Starts from a whole configuration.
    pub fn from_config(config: EngineConfig) -> Self {
        Self {
            config,
            has_dir: true,
            clock: Arc::new(SystemClock),
            stats: None,
            #[cfg(feature = "baseline")]
            locked: false,
        }
    }

    /// Where the audit log goes (required).
    pub fn audit_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.audit.dir = dir.into();
        self.has_dir = true;
        self
    }

    /// Build from the locked twins (`true`) or latchfree's components
    /// (feature `baseline`: for A/B comparisons, not for production).
    #[cfg(feature = "baseline")]
    pub fn locked(mut self, locked: bool) -> Self {
        self.locked = locked;
        self
    }

    /// How far each call's audit line has gone when the call returns
    /// (default [`Guarantee::Async`]).
    pub fn guarantee(mut self, guarantee: Guarantee) -> Self {
        self.config.audit.guarantee = guarantee;
        self
    }

    /// Slots of the latchfree audit ring (default 16 384; see
    /// [`AuditConfig::ring_capacity`](super::AuditConfig::ring_capacity)).
    pub fn ring_capacity(mut self, slots: usize) -> Self {
        self.config.audit.ring_capacity = slots;
        self
    }

    /// The size at which the audit stream starts a new file (default
    /// 256 MiB; see [`AuditConfig::max_file_bytes`](super::AuditConfig::max_file_bytes)).
    pub fn audit_max_file_bytes(mut self, bytes: u64) -> Self {
        self.config.audit.max_file_bytes = bytes;
        self
    }

    /// Opens a telemetry stream too (see [`Engine::telemetry`]).
    pub fn telemetry(mut self, on: bool) -> Self {
        self.config.audit.telemetry = on;
        self
    }

    /// The session registry's settings.
    pub fn sessions(mut self, sessions: SessionConfig) -> Self {
        self.config.sessions = sessions;
        self
    }

    /// Caches the results of `tool`.
    pub fn cache(mut self, tool: impl Into<String>, cache: CacheConfig) -> Self {
        self.config.caches.insert(tool.into(), cache);
        self
    }

    /// How often expired sessions and cache entries are swept out.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.config.sweep_interval = interval;
        self
    }

    /// The clock of every component (default [`SystemClock`]); tests pass
    /// a [`ManualClock`](crate::clock::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Registers the latchfree engine's metrics in `stats` (default: a
    /// registry of its own). The locked engine keeps its own map.
    pub fn stats(mut self, stats: &Stats) -> Self {
        self.stats = Some(stats.clone());
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Opens the logs, builds the components and starts the sweeper.
    pub fn build(self) -> Result<Engine, EngineBuildError> {
        if !self.has_dir {
            return Err(EngineBuildError::NoAuditDir);
        }
        if self.config.sweep_interval.is_zero() {
            return Err(crate::ttl::BuildError::ZeroSweepInterval.into());
        }
        let clock = DynClock(self.clock);
        #[cfg(feature = "baseline")]
        let kind = if self.locked {
            Kind::Locked(Locked::build(&self.config, &clock)?)
        } else {
            let stats = self.stats.unwrap_or_default();
            Kind::Latchfree(Latchfree::build(&self.config, &clock, stats)?)
        };
        #[cfg(not(feature = "baseline"))]
        let kind = Kind::Latchfree(Latchfree::build(
            &self.config,
            &clock,
            self.stats.unwrap_or_default(),
        )?);
        let parts = Arc::new(kind);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let sweeper = spawn_sweeper(
            Arc::downgrade(&parts),
            Arc::clone(&stop),
            self.config.sweep_interval,
        )
        .map_err(|e| EngineBuildError::Spawn(Arc::new(e)))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                parts,
                clock,
                config: self.config,
                closed: AtomicBool::new(false),
                stop,
                sweeper: Mutex::new(Some(sweeper)),
                shutdown: Mutex::new(None),
                shared: shared::Instances::default(),
            }),
        })
    }
}
