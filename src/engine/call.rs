//! What one tool call carries in and out of an [`Engine`](super::Engine):
//! the call, its reply, the session it runs in, a tool's error, and the
//! audit line it leaves.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::sync::atomic::{AtomicU64, Ordering};

/// One session of the registry: what the engine keeps per session id.
#[derive(Debug)]
pub struct Session {
    id: Arc<str>,
    created: SystemTime,
    pub(super) calls: AtomicU64,
}

impl Session {
    /// A new session, created at `created`, with no call yet.
    pub(super) fn new(id: &str, created: SystemTime) -> Self {
        Self {
            id: Arc::from(id),
            created,
            calls: AtomicU64::new(0),
        }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When it was created (the engine's clock).
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Calls made in it so far, this one included when read from a
    /// [`Reply`].
    pub fn calls(&self) -> u64 {
        // Relaxed: a statistic; it orders nothing else.
        self.calls.load(Ordering::Relaxed)
    }
}

/// One tool call, as the request path sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call<'a> {
    /// The caller's session id (an MCP session, a cookie, ...): 1 to 256
    /// printable bytes.
    pub session_id: &'a str,
    /// The tool's name; a cache of that name caches its results.
    pub tool: &'a str,
    /// The tool's arguments as JSON text: the cache key (with the tool) and
    /// the "bytes in".
    pub args_json: &'a str,
}

impl<'a> Call<'a> {
    /// A call of `tool` with `args_json` in session `session_id`.
    pub fn new(session_id: &'a str, tool: &'a str, args_json: &'a str) -> Self {
        Self {
            session_id,
            tool,
            args_json,
        }
    }
}

/// What [`Engine::call`](super::Engine::call) returns on success.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The tool's result (shared with the cache).
    pub output: Arc<str>,
    /// Whether it came from the cache (the tool closure did not run).
    pub cached: bool,
    /// The caller's session.
    pub session: Arc<Session>,
    /// Whether this call created the session.
    pub session_created: bool,
    /// Time spent in the session and cache steps and the tool.
    pub latency: Duration,
}

/// A tool's failure, returned by the closure given to [`Engine::call`](super::Engine::call).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    /// What went wrong, for the caller.
    pub message: String,
}

impl ToolError {
    /// A tool error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// The audit line of one call.
#[derive(Serialize)]
pub(super) struct CallEvent<'a> {
    pub(super) event: &'static str,
    pub(super) session: &'a str,
    pub(super) tool: &'a str,
    pub(super) ok: bool,
    pub(super) cached: bool,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) latency_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<&'a str>,
}

/// The longest session id or tool name copied into a failed call's audit
/// line (they may be what made it fail).
pub(super) const MAX_ECHO: usize = 256;

pub(super) fn echo(s: &str) -> &str {
    if s.len() <= MAX_ECHO {
        return s;
    }
    let mut end = MAX_ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
