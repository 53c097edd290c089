//! The server's tools and its engine: how `latchfree serve` builds its
//! [`Engine`] and what each tool computes inside the request path.
//!
//! Each tool is one [`Engine::call_async`]: the session step, then (for `query`)
//! the cache step, then the tool closure below, then the stats batch and the
//! audit event. The closures only compute; everything shared goes through
//! the engine.

use std::time::Duration;

use latchfree::audit::AuditError;
use latchfree::engine::{
    CacheConfig, Call, Engine, EngineBuildError, EngineCounters, EngineError, ToolError,
};
use sha2::{Digest as _, Sha256};

/// The tools, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Deterministic search, cached.
    Query,
    /// The caller's registry session.
    SessionInfo,
    /// The engine's counters.
    Stats,
}

impl Tool {
    /// The MCP tool name (also the engine's tool and cache name).
    pub fn name(self) -> &'static str {
        match self {
            Tool::Query => "query",
            Tool::SessionInfo => "session_info",
            Tool::Stats => "stats",
        }
    }
}

/// Flags that override the configuration's `[sessions]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionFlags {
    /// `--idle-timeout`.
    pub idle_timeout: Option<Duration>,
    /// `--max-sessions`.
    pub max_sessions: Option<usize>,
}

/// Builds the engine `latchfree serve` runs on: the configuration file if
/// given (or the defaults), then the flags, with a cache for `query`.
pub fn build_engine(
    config: Option<&std::path::Path>,
    audit_dir: &std::path::Path,
    locked: bool,
    durability: Option<&str>,
    sessions: SessionFlags,
) -> Result<Engine, BuildFailure> {
    let mut config = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            latchfree::engine::EngineConfig::from_toml(&text).map_err(|err| err.to_string())?
        }
        None => latchfree::engine::EngineConfig::new(audit_dir),
    };
    if let Some(name) = durability {
        config.audit.guarantee = name
            .parse()
            .map_err(|_| format!("--durability must be async, os or disk, not {name:?}"))?;
    }
    if let Some(idle) = sessions.idle_timeout {
        config.sessions.idle_timeout = Some(idle);
    }
    if let Some(max) = sessions.max_sessions {
        if max == 0 {
            return Err("--max-sessions must be at least 1".to_owned().into());
        }
        config.sessions.max_sessions = max;
    }
    config
        .caches
        .entry(Tool::Query.name().to_owned())
        .or_insert_with(CacheConfig::default);
    latchfree::engine::EngineBuilder::from_config(config)
        .locked(locked)
        .build()
        .map_err(|err| match err {
            EngineBuildError::Audit(AuditError::InUse { .. }) => BuildFailure::AuditDirInUse,
            err => BuildFailure::Other(format!("cannot build the engine: {err}")),
        })
}

/// Why [`build_engine`] failed.
#[derive(Debug)]
pub enum BuildFailure {
    /// Another process holds the audit directory's lock.
    AuditDirInUse,
    /// Anything else, as a message for the user.
    Other(String),
}

impl From<String> for BuildFailure {
    fn from(message: String) -> Self {
        BuildFailure::Other(message)
    }
}

/// Runs one tool call through the engine's request path
/// ([`Engine::call_async`]): nothing here blocks a runtime thread; the
/// simulated cost of a `query` miss is a timer.
///
/// `load` is told when this call starts and ends a `query` load (it runs
/// only for the call that leads the load: a hit, or a call that joins
/// another call's load, runs no tool).
///
/// Cancel safety: that of [`Engine::call_async`]; dropping the future
/// while it leads a load abandons the load, and the next caller of the key
/// (waiting already, or later) runs its own.
pub async fn run<P>(
    engine: &Engine,
    session_id: &str,
    tool: Tool,
    args_json: &str,
    query_cost: Duration,
    load: P,
) -> Result<String, EngineError>
where
    P: LoadProgress,
{
    let call = Call::new(session_id, tool.name(), args_json);
    let reply = match tool {
        Tool::Query => {
            engine
                .call_async(&call, move |args| {
                    // Computed up front: the future may not borrow `args`.
                    let result = query_result(args);
                    async move {
                        load.started().await;
                        if !query_cost.is_zero() {
                            tokio::time::sleep(query_cost).await;
                        }
                        load.finished().await;
                        result
                    }
                })
                .await?
        }
        // The session step has run when the closure does: the session is
        // live and its count includes this call.
        Tool::SessionInfo => {
            engine
                .call_async(&call, |_| {
                    std::future::ready(session_info(engine, session_id))
                })
                .await?
        }
        // Counters as of before this call's own stats batch.
        Tool::Stats => {
            engine
                .call_async(&call, |_| std::future::ready(stats(engine)))
                .await?
        }
    };
    Ok(reply.output.to_string())
}

/// What [`run`] reports about a `query` load it leads.
pub trait LoadProgress: Send {
    /// The load starts (before the simulated cost).
    fn started(&self) -> impl std::future::Future<Output = ()> + Send;
    /// The load is done (its result follows).
    fn finished(&self) -> impl std::future::Future<Output = ()> + Send;
}

/// No progress reports.
impl LoadProgress for () {
    async fn started(&self) {}
    async fn finished(&self) {}
}

fn session_info(engine: &Engine, session_id: &str) -> Result<String, ToolError> {
    let session = engine
        .session(session_id)
        .ok_or_else(|| ToolError::new("the session expired during the call"))?;
    let created = session
        .created()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let info = SessionOutput {
        session: session.id().to_owned(),
        calls: session.calls(),
        created_unix_ms: created.as_millis() as u64,
    };
    serde_json::to_string(&info).map_err(|err| ToolError::new(err.to_string()))
}

fn stats(engine: &Engine) -> Result<String, ToolError> {
    let stats = StatsOutput {
        counters: engine.counters(),
        sessions_live: engine.session_count() as u64,
        engine: if engine.is_locked() {
            "locked"
        } else {
            "latchfree"
        }
        .to_owned(),
    };
    serde_json::to_string(&stats).map_err(|err| ToolError::new(err.to_string()))
}

/// The `query` tool's structured result (its `outputSchema`).
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct QueryOutput {
    /// The query text.
    pub q: String,
    /// `limit` results, best first.
    pub results: Vec<QueryHit>,
}

/// One `query` result.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct QueryHit {
    /// 1-based rank.
    pub rank: u32,
    /// The document id, `doc-` and 16 hex digits.
    pub doc: String,
    /// The score, 0..=1, three decimals.
    pub score: f64,
}

/// The `session_info` tool's structured result.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct SessionOutput {
    /// The registry session id (`stdio-N` / `http-N`).
    pub session: String,
    /// Tool calls of this session, this one included.
    pub calls: u64,
    /// When the registry session was created, Unix milliseconds.
    pub created_unix_ms: u64,
}

/// The `stats` tool's structured result: the engine's counters as of
/// before this call.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct StatsOutput {
    /// The engine's counters (`EngineCounters`: calls, errors, bytes_in,
    /// bytes_out, cache_hits, sessions_created, ..), each an integer; the
    /// schema leaves their names open so it follows the engine's.
    #[serde(flatten)]
    #[schemars(with = "std::collections::BTreeMap<String, u64>")]
    pub counters: EngineCounters,
    /// Registry sessions live now.
    pub sessions_live: u64,
    /// `latchfree` or `locked`.
    pub engine: String,
}

/// The `query` tool's result for `args_json` (`{"q": .., "limit": ..}`):
/// `limit` synthetic documents whose ids and scores are derived from the
/// SHA-256 of the query text, so the same query always gives the same text.
pub fn query_result(args_json: &str) -> Result<String, ToolError> {
    #[derive(serde::Deserialize)]
    struct Args {
        q: String,
        limit: u32,
    }
    let args: Args = serde_json::from_str(args_json)
        .map_err(|err| ToolError::new(format!("query arguments: {err}")))?;
    let mut results = Vec::with_capacity(args.limit as usize);
    let mut digest = Sha256::digest(args.q.as_bytes());
    for rank in 0..args.limit {
        let doc = u64::from_le_bytes(digest[..8].try_into().expect("a 32-byte digest"));
        let score = f64::from(u16::from_le_bytes([digest[8], digest[9]])) / 65535.0;
        results.push(QueryHit {
            rank: rank + 1,
            doc: format!("doc-{doc:016x}"),
            score: (score * 1000.0).round() / 1000.0,
        });
        digest = Sha256::digest(digest);
    }
    serde_json::to_string(&QueryOutput { q: args.q, results })
        .map_err(|err| ToolError::new(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_deterministic_and_depends_on_the_text() {
        let a = query_result(r#"{"q":"rust","limit":3}"#).unwrap();
        assert_eq!(a, query_result(r#"{"q":"rust","limit":3}"#).unwrap());
        assert_ne!(a, query_result(r#"{"q":"rusty","limit":3}"#).unwrap());
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["results"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn query_rejects_bad_arguments() {
        assert!(query_result(r#"{"q":1,"limit":3}"#).is_err());
    }
}
