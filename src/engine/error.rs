//! Why a call failed ([`EngineError`]) or an engine could not be built
//! ([`EngineBuildError`]).

use std::sync::Arc;

use super::ToolError;
use crate::audit::AuditError;
use crate::cache::LoadError;
use crate::session::SessionError;
use crate::stats::StatsError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The session id is invalid, or the registry is full.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The tool failed (this call's run, or the one it waited on).
    #[error("the tool failed: {0}")]
    Tool(ToolError),
    /// The tool run this call waited on panicked; nothing was cached.
    #[error("a concurrent run of the tool panicked")]
    ToolPanicked,
    /// The tool's cache is full of loads in progress.
    #[error("the cache of the tool is full of loads in progress ({max} entries)")]
    CacheFull {
        /// The cache's bound.
        max: usize,
    },
    /// The audit event could not be logged (the call's other effects are
    /// done).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// [`Engine::shutdown`](super::Engine::shutdown) was called.
    #[error("the engine is shut down")]
    ShutDown,
    /// [`Engine::shared`](super::Engine::shared) asked for an existing instance with another type.
    #[error("the shared instance {name:?} holds a {existing}, not a {requested}")]
    SharedTypeMismatch {
        /// The instance's name.
        name: String,
        /// The type it was created with.
        existing: &'static str,
        /// The type asked for now.
        requested: &'static str,
    },
    /// [`Engine::shared`](super::Engine::shared) could not name or register the metrics of a new
    /// instance: the name is not a valid metric name
    /// ([`StatsError::InvalidName`]), or the engine's [`Stats`](crate::stats::Stats) refused one
    /// of its counters.
    #[error("the shared instance {name:?}: {source}")]
    SharedMetrics {
        /// The instance's name.
        name: String,
        /// Why.
        source: StatsError,
    },
}

impl From<LoadError<ToolError>> for EngineError {
    fn from(e: LoadError<ToolError>) -> Self {
        match e {
            LoadError::Failed(e) => EngineError::Tool((*e).clone()),
            LoadError::FailedElsewhere => {
                EngineError::Tool(ToolError::new("a concurrent run of the tool failed"))
            }
            LoadError::Panicked => EngineError::ToolPanicked,
            LoadError::Recursive => EngineError::Tool(ToolError::new(
                "the tool's run called the same tool with the same input",
            )),
            LoadError::TimedOut { after } => EngineError::Tool(ToolError::new(format!(
                "a concurrent run of the tool did not finish within {after:?}"
            ))),
            LoadError::Full { max } => EngineError::CacheFull { max },
        }
    }
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineBuildError {
    /// No audit directory was given (`EngineBuilder::audit_dir`).
    #[error("the engine needs an audit directory (EngineBuilder::audit_dir or [audit] dir)")]
    NoAuditDir,
    /// A session registry or cache setting is invalid.
    #[error(transparent)]
    Ttl(#[from] crate::ttl::BuildError),
    /// The audit or telemetry log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The engine's metrics could not be registered.
    #[error(transparent)]
    Stats(#[from] StatsError),
    /// The sweeper thread could not be started.
    #[error("cannot start the engine's sweeper thread")]
    Spawn(#[source] Arc<std::io::Error>),
}
