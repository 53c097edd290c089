//! [`EngineConfig`]: everything an [`Engine`](super::Engine) is built from,
//! as plain data that serde reads from TOML (or any other format).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::Guarantee;

/// An engine's configuration: what [`EngineBuilder`](super::EngineBuilder)
/// holds, and what a TOML file says.
///
/// Every field but `audit.dir` has a default. Durations are written the
/// `humantime` way (`"30m"`, `"100ms"`, `"1h 30m"`).
///
/// ```
/// use latchfree::engine::EngineConfig;
///
/// let config = EngineConfig::from_toml(r#"
///     [audit]
///     dir = "/var/log/myserver/audit"
///     guarantee = "os"          # async | os | disk
///     telemetry = true
///
///     [sessions]
///     max_sessions = 50000
///     idle_timeout = "30m"
///
///     [caches.query]            # the results of the tool `query`
///     max_entries = 10000
///     ttl = "60s"
/// "#)?;
/// assert_eq!(config.sessions.max_sessions, 50_000);
/// assert_eq!(config.caches["query"].ttl, Some(std::time::Duration::from_secs(60)));
/// # Ok::<(), latchfree::engine::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EngineConfig {
    /// The audit and telemetry logs.
    pub audit: AuditConfig,
    /// The session registry.
    #[serde(default)]
    pub sessions: SessionConfig,
    /// The tool-result caches, by tool name: a call to tool `T` is cached in
    /// the cache named `T`; tools without a cache are computed every time.
    #[serde(default)]
    pub caches: BTreeMap<String, CacheConfig>,
    /// How often the engine's background thread sweeps expired sessions and
    /// cache entries out (they are never *returned* after their deadline
    /// either way).
    #[serde(default = "default_sweep_interval", with = "duration")]
    pub sweep_interval: Duration,
}

fn default_sweep_interval() -> Duration {
    Duration::from_millis(100)
}

impl EngineConfig {
    /// The defaults, writing the audit log to `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            audit: AuditConfig::new(dir),
            sessions: SessionConfig::default(),
            caches: BTreeMap::new(),
            sweep_interval: default_sweep_interval(),
        }
    }

    /// Parses a TOML document (feature `toml`).
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(Box::new(e)))
    }

    /// Renders the configuration as TOML (feature `toml`).
    #[cfg(feature = "toml")]
    pub fn to_toml(&self) -> String {
        // Every field is a plain value, a table or a map with string keys,
        // which TOML can always express.
        toml::to_string(self).unwrap_or_default()
    }
}

/// A configuration document that does not parse, or names an unknown field.
/// Its [`source`](std::error::Error::source) is the parser's error (line,
/// column and what was expected).
#[derive(Debug, thiserror::Error)]
#[error("invalid engine configuration: {0}")]
pub struct ConfigError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// The audit and telemetry logs of an engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuditConfig {
    /// The directory of the audit stream (files `audit-*.jsonl`); the
    /// telemetry stream, when enabled, goes to its subdirectory `telemetry`.
    pub dir: PathBuf,
    /// How far each call's audit line has gone when
    /// [`Engine::call`](super::Engine::call) returns: `async` (in memory),
    /// `os` (in the OS page cache) or `disk` (fsynced).
    #[serde(default = "default_guarantee", with = "guarantee")]
    pub guarantee: Guarantee,
    /// Open a telemetry stream beside the audit stream (lossy under
    /// pressure in the latchfree engine: drops are counted and marked).
    #[serde(default)]
    pub telemetry: bool,
    /// The longest audit event, in bytes.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Slots of the latchfree audit ring (512 bytes each; rounded up to a
    /// power of two). A bigger ring rides out longer preemptions of the
    /// writer thread before callers wait for room: with more threads than
    /// cores that is what sets the tail. Ignored by the locked engine.
    #[serde(default = "default_ring_capacity")]
    pub ring_capacity: usize,
    /// The size at which the audit stream starts a new file (default
    /// 256 MiB; files also change with the UTC day in the latchfree
    /// engine). Full files can be shipped and removed once verified
    /// ([`audit::verify_files`](crate::audit::verify_files)).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
}

fn default_max_file_bytes() -> u64 {
    crate::audit::DEFAULT_MAX_FILE_BYTES
}

fn default_ring_capacity() -> usize {
    16_384
}

fn default_guarantee() -> Guarantee {
    Guarantee::Async
}

fn default_max_event_bytes() -> usize {
    64 << 10
}

impl AuditConfig {
    /// The defaults (`async`, no telemetry), writing to `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            guarantee: default_guarantee(),
            telemetry: false,
            max_event_bytes: default_max_event_bytes(),
            ring_capacity: default_ring_capacity(),
            max_file_bytes: default_max_file_bytes(),
        }
    }
}

/// The session registry of an engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SessionConfig {
    /// The most sessions held at once; a new id beyond it is refused
    /// ([`EngineError::Session`](super::EngineError::Session)).
    pub max_sessions: usize,
    /// A session unused this long expires.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// A session expires this long after its creation, used or not.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<Duration>,
}

impl Default for SessionConfig {
    /// 100 000 sessions, 30 minutes idle, no lifetime bound.
    fn default() -> Self {
        Self {
            max_sessions: crate::session::DEFAULT_MAX_SESSIONS,
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            max_lifetime: None,
        }
    }
}

/// Setters, so that a configuration is written as
/// `SessionConfig::default().max_sessions(10_000)` (the struct is
/// `#[non_exhaustive]`: fields may be added).
impl SessionConfig {
    /// Sets [`max_sessions`](Self::max_sessions).
    #[must_use]
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout) (`None`: never idle).
    #[must_use]
    pub fn idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Sets [`max_lifetime`](Self::max_lifetime) (`None`: no bound).
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }
}

/// One tool-result cache of an engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The most results held.
    pub max_entries: usize,
    /// A result expires this long after it was computed.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// A result unused this long expires.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub tti: Option<Duration>,
}

impl Default for CacheConfig {
    /// 10 000 entries, 60 s time to live.
    fn default() -> Self {
        Self {
            max_entries: crate::cache::DEFAULT_MAX_ENTRIES,
            ttl: Some(Duration::from_secs(60)),
            tti: None,
        }
    }
}

/// Setters, so that a configuration is written as
/// `CacheConfig::default().max_entries(1_000)` (the struct is
/// `#[non_exhaustive]`: fields may be added).
impl CacheConfig {
    /// Sets [`max_entries`](Self::max_entries).
    #[must_use]
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max;
        self
    }

    /// Sets [`ttl`](Self::ttl) (`None`: no time to live).
    #[must_use]
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets [`tti`](Self::tti) (`None`: no idle bound).
    #[must_use]
    pub fn tti(mut self, tti: Option<Duration>) -> Self {
        self.tti = tti;
        self
    }
}

mod guarantee {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::audit::Guarantee;

    pub(super) fn serialize<S: Serializer>(g: &Guarantee, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(g.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Guarantee, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(D::Error::custom)
    }
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| D::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}
