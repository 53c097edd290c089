//! `latchfree serve`: a Model Context Protocol server on one engine,
//! serving the stdio transport and the Streamable HTTP transport at once.
//!
//! # Shape
//!
//! ```text
//!   stdin/stdout ──► rmcp stdio service ──┐
//!                                          ├─► McpServer (one per MCP session) ──► Engine::call_async
//!   HTTP /mcp ──► StreamableHttpService ──┘        (request path: session → cache → stats → audit)
//!   HTTP /metrics ──► Engine stats, Prometheus text
//! ```
//!
//! * **One engine.** Both transports hold clones of one engine handle;
//!   `--locked` builds the locked twin behind the same API.
//! * **One registry session per MCP session.** rmcp builds one [`McpServer`]
//!   per MCP session (the stdio connection, or one HTTP `Mcp-Session-Id`).
//!   Each instance names its registry session on its first tool call
//!   (`stdio-N` / `http-N`, from a process-wide counter) and sends every call
//!   of that session under that id, so the engine's get-or-create runs once
//!   per MCP session. The server advertises only protocol versions that keep
//!   the `initialize` handshake (and so sessions); a stateless (`2026-07-28`)
//!   request would otherwise get a fresh instance per call.
//! * **Errors.** An unknown tool is a JSON-RPC `-32602` (rmcp's router).
//!   Arguments that do not fit a tool's schema, or out of range, are a tool
//!   result with `isError: true` (the MCP way for input errors: the model
//!   reads it); they are rejected before the request path, so they reach
//!   neither the engine's counters nor the audit log. Over HTTP, a body that
//!   is not JSON is `400` with a JSON-RPC `-32700` body, one over
//!   `--max-body-bytes` `413` with `-32600` (see `serve_http`),
//!   a foreign `Host` `403`. On stdio, well-formed JSON that is not a message
//!   is `-32600` and an unknown method `-32601`; an unparsable line is
//!   ignored, as in every official MCP SDK (no id to answer; answering
//!   garbage can start an error storm). An engine error (a capacity reached,
//!   a stopped engine, a failing audit log) is a JSON-RPC `-32603` naming
//!   the cause; a tool's own failure is an `isError` result. Never a panic.
//! * **Shutdown (a drain).** SIGINT, SIGTERM or EOF on stdin: the HTTP
//!   listener stops accepting; in-flight tool calls finish (the [`Gate`]
//!   waits for them) and their replies are written to their POST streams
//!   (the session manager counts open request streams), both bounded by
//!   `--shutdown-timeout`; only then do the sessions and `GET` streams end,
//!   the connections close, and the engine's `shutdown` drains the audit
//!   log. Calls that arrive after the gate closed get an error instead of
//!   being half-recorded.
//! * **HTTP front** (Host / Origin / bearer token checks, limits, protocol
//!   fixes around rmcp): see [`crate::serve_http`]; sessions (idle timeout,
//!   cap): see [`crate::serve_sessions`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use latchfree::engine::{Engine, EngineError};

use crate::serve_http;
use crate::serve_sessions::{Sessions, SharedSessions};
use crate::serve_tools::{self, BuildFailure, Tool};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, ProgressToken,
    ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, ServiceExt as _, schemars, tool, tool_handler, tool_router};
use rmcp::{Peer, RoleServer};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Arguments of `latchfree serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address of the Streamable HTTP listener (`/mcp`, `/metrics`). Loopback
    /// by default; port 0 picks a free port (the address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8931")]
    pub bind: SocketAddr,
    /// Serve stdio only: no HTTP listener (for desktop clients that launch
    /// the server; several copies then never clash on a port).
    #[arg(long, conflicts_with = "no_stdio")]
    pub no_http: bool,
    /// Extra `Host` header values the HTTP transport accepts (loopback names
    /// are always accepted). Needed when binding a non-loopback address.
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,
    /// Extra browser `Origin` values accepted (`scheme://host[:port]`);
    /// loopback origins are always accepted, others get 403.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// A file holding the bearer token HTTP clients must send
    /// (`Authorization: Bearer <token>`); or set `LATCHFREE_TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve HTTP on a non-loopback address without a token (anyone who
    /// reaches the port can call every tool).
    #[arg(long)]
    pub no_auth: bool,
    /// Run on the locked engine (the all-locks twin), for A/B load tests.
    #[arg(long)]
    pub locked: bool,
    /// Directory of the audit log (default: `latchfree/audit` in the state
    /// directory, `$XDG_STATE_HOME` or `~/.local/state`).
    #[arg(long)]
    pub audit_dir: Option<PathBuf>,
    /// An engine configuration file (TOML, see `EngineConfig`); the flags
    /// `--locked`, `--durability`, `--idle-timeout` and `--max-sessions`
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How far each call's audit line has gone when the call returns:
    /// `async`, `os` or `disk` (default: the configuration's, else `async`).
    #[arg(long)]
    pub durability: Option<String>,
    /// How long a session lives without a call (the engine's registry
    /// session and the HTTP session alike; an open stream keeps an HTTP
    /// session alive), e.g. `30m` (default: the configuration's, else 30m).
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Most sessions at once (the engine's and the HTTP transport's; a new
    /// HTTP session over it gets 503 with a JSON-RPC error). Default: the
    /// configuration's, else 100000.
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// Most HTTP connections at once; one more is answered 503 and closed.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// How long an HTTP connection may take to send a request head, or stay
    /// idle between requests, before it is closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// At shutdown, how long in-flight calls get to finish and be delivered.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Simulated cost of computing one `query` result (a cache miss), in ms.
    #[arg(long, default_value_t = 2)]
    pub query_cost_ms: u64,
    /// Largest accepted HTTP request body, in bytes (larger: HTTP 413).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Serve HTTP only: do not read MCP messages from stdin (stdin EOF then
    /// does not stop the server; use SIGINT/SIGTERM).
    #[arg(long)]
    pub no_stdio: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{err} (e.g. 500ms, 30s, 30m)"))
}

/// Runs the server until SIGINT, SIGTERM or stdin EOF; returns after the
/// engine drained its logs.
pub fn serve_command(args: ServeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // The engine is shut down and every session ended; what may be left is
    // the blocking read of stdin after a signal, which would never return.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: ServeArgs) -> Result<(), String> {
    let token = read_token(args.token_file.as_deref())?;
    if !args.no_http && !args.bind.ip().is_loopback() && token.is_none() && !args.no_auth {
        return Err(format!(
            "refusing to serve HTTP on {} (not loopback) without authentication: give a token \
             with --token-file FILE or LATCHFREE_TOKEN, or pass --no-auth to let anyone who \
             reaches the port call every tool",
            args.bind
        ));
    }
    if args.max_connections == 0 {
        return Err("--max-connections must be at least 1".to_owned());
    }
    // Bind before building the engine: a port in use must not leave an
    // audit segment behind.
    let listener = if args.no_http {
        None
    } else {
        Some(bind(args.bind).await?)
    };
    let (engine, audit_dir) = open_engine(&args)?;
    let gate = Arc::new(Gate::default());
    let shared = Arc::new(ServerState {
        engine: engine.clone(),
        gate: gate.clone(),
        query_cost: Duration::from_millis(args.query_cost_ms),
        next_session: AtomicU64::new(0),
        cancelled: AtomicU64::new(0),
    });
    // `shutdown`: a signal or stdin EOF. `accepting`: the listener takes new
    // connections. `transport`: the MCP sessions and streams live; cancelled
    // only once every in-flight reply is delivered (or the timeout passed).
    let shutdown = CancellationToken::new();
    let accepting = CancellationToken::new();
    let transport = CancellationToken::new();

    let engine_sessions = &engine.config().sessions;
    let sessions = Arc::new(Sessions::new(
        engine_sessions.max_sessions,
        engine_sessions.idle_timeout,
    ));
    tokio::spawn(sessions.clone().reap(transport.clone()));
    let http = match listener {
        None => None,
        Some(listener) => {
            let local = listener
                .local_addr()
                .map_err(|err| format!("cannot read the bound address: {err}"))?;
            let router = http_router(&args, &shared, &sessions, token, transport.clone());
            eprintln!(
                "latchfree serve: {} engine; MCP on http://{local}/mcp and stdio{}; metrics on http://{local}/metrics; audit log in {}",
                engine_name(&engine),
                if args.no_stdio { " (off)" } else { "" },
                audit_dir.display(),
            );
            let limits = serve_http::Limits {
                max_connections: args.max_connections,
                header_timeout: args.header_timeout,
            };
            Some(tokio::spawn(serve_http::serve(
                listener,
                router,
                limits,
                accepting.clone(),
                transport.clone(),
            )))
        }
    };
    if http.is_none() {
        eprintln!(
            "latchfree serve: {} engine; MCP on stdio (HTTP off); audit log in {}",
            engine_name(&engine),
            audit_dir.display(),
        );
    }

    // stdio: one MCP session on stdin/stdout; EOF ends it and the server.
    let stdio = if args.no_stdio {
        None
    } else {
        let server = McpServer::new(shared.clone(), Transport::Stdio);
        let stop = shutdown.clone();
        let token = transport.child_token();
        Some(tokio::spawn(async move {
            match server.serve_with_ct(rmcp::transport::stdio(), token).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(err) => eprintln!("latchfree serve: stdio session ended: {err}"),
            }
            stop.cancel();
        }))
    };

    // Signals.
    let signal_stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal_stop.cancel();
    });

    shutdown.cancelled().await;
    eprintln!("latchfree serve: shutting down");
    // Drain: stop accepting; let admitted calls finish and their replies
    // reach their POST streams; only then end the sessions and streams.
    accepting.cancel();
    let drained = tokio::time::timeout(args.shutdown_timeout, async {
        gate.close().await;
        sessions.requests_done().await;
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "latchfree serve: in-flight calls still running after --shutdown-timeout {}; closing their streams",
            humantime::format_duration(args.shutdown_timeout)
        );
        gate.close_now();
    }
    transport.cancel();
    if let Some(stdio) = stdio {
        let _ = stdio.await;
    }
    if let Some(http) = http
        && let Err(err) = http.await
    {
        eprintln!("latchfree serve: HTTP task failed: {err}");
    }
    // Calls past the timeout were cancelled with their sessions above
    // (`transport`: rmcp cancels each request's token), so they are dropped
    // with `Engine::call_async`'s cancel safety; one already queued its
    // audit event, which the engine's shutdown writes (nothing is
    // half-recorded).
    let result = tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .map_err(|err| format!("engine shutdown task failed: {err}"))?;
    result.map_err(|err| format!("engine shutdown: {err}"))?;
    let counters = shared.engine.counters();
    eprintln!(
        "latchfree serve: stopped; {} tool calls ({} errors), {} MCP sessions with calls, {} registry sessions created; audit log drained",
        counters.calls,
        counters.errors,
        shared.next_session.load(Ordering::Relaxed),
        counters.sessions_created,
    );
    Ok(())
}

/// Copies of the server that may share the default audit location.
const AUDIT_SLOTS: usize = 16;

/// Builds the engine on `--audit-dir`, or on the first free slot of the
/// default location: `audit`, `audit-2`, .. `audit-16` in the state
/// directory. A desktop client may start several copies with the same
/// arguments; each then gets a directory of its own (one hash chain per
/// writer, as `audit verify` expects), and a later copy reuses a freed slot
/// instead of leaving a new directory behind per run. An explicit
/// directory in use is an error that says what to do.
fn open_engine(args: &ServeArgs) -> Result<(Engine, PathBuf), String> {
    let build = |dir: &std::path::Path| {
        serve_tools::build_engine(
            args.config.as_deref(),
            dir,
            args.locked,
            args.durability.as_deref(),
            serve_tools::SessionFlags {
                idle_timeout: args.idle_timeout,
                max_sessions: args.max_sessions,
            },
        )
    };
    let in_use = |dir: &std::path::Path| {
        format!(
            "the audit directory {} is in use by another latchfree serve (its lock is held); \
             give each copy its own --audit-dir, or leave --audit-dir out (copies then take \
             audit, audit-2, .. in the state directory)",
            dir.display()
        )
    };
    if let Some(dir) = &args.audit_dir {
        return match build(dir) {
            Ok(engine) => Ok((engine, dir.clone())),
            Err(BuildFailure::AuditDirInUse) => Err(in_use(dir)),
            Err(BuildFailure::Other(message)) => Err(message),
        };
    }
    let base = default_audit_dir()?;
    for slot in 1..=AUDIT_SLOTS {
        let dir = if slot == 1 {
            base.clone()
        } else {
            base.with_file_name(format!("audit-{slot}"))
        };
        match build(&dir) {
            Ok(engine) => return Ok((engine, dir)),
            Err(BuildFailure::AuditDirInUse) => continue,
            Err(BuildFailure::Other(message)) => return Err(message),
        }
    }
    Err(format!(
        "all {AUDIT_SLOTS} default audit directories next to {} are in use; pass --audit-dir DIR",
        base.display()
    ))
}

fn engine_name(engine: &Engine) -> &'static str {
    if engine.is_locked() {
        "locked"
    } else {
        "latchfree"
    }
}

/// Binds the HTTP listener, with advice when the port is taken.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "cannot bind {addr}: the address is in use (another latchfree serve?); \
                 use --bind 127.0.0.1:0 for a free port, or --no-http for stdio only"
            ),
            _ => format!("cannot bind {addr}: {err}"),
        })
}

/// `$XDG_STATE_HOME/latchfree/audit`, else `~/.local/state/latchfree/audit`:
/// absolute, so a client that launches the server from `/` still works.
fn default_audit_dir() -> Result<PathBuf, String> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local").join("state")))
        .ok_or(
            "no state directory for the audit log: neither XDG_STATE_HOME nor HOME is set \
             to an absolute path; pass --audit-dir DIR",
        )?;
    Ok(state.join("latchfree").join("audit"))
}

/// The bearer token: `--token-file`, else `LATCHFREE_TOKEN`, else none.
/// Never a flag's value (it would show in `ps` and shell history).
fn read_token(file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, String> {
    let (token, source) = match file {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read --token-file {}: {err}", path.display()))?,
            format!("--token-file {}", path.display()),
        ),
        None => match std::env::var("LATCHFREE_TOKEN") {
            Ok(token) => (token, "LATCHFREE_TOKEN".to_owned()),
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err("LATCHFREE_TOKEN is not valid UTF-8".to_owned());
            }
        },
    };
    let token = token.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the token in {source} must be at least 16 characters without spaces \
             (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(Some(token.as_bytes().to_vec()))
}

/// `/mcp` (Streamable HTTP) and `/metrics` behind the guard (see
/// [`serve_http`]).
fn http_router(
    args: &ServeArgs,
    shared: &Arc<ServerState>,
    sessions: &Arc<Sessions>,
    token: Option<Vec<u8>>,
    transport: CancellationToken,
) -> axum::Router {
    let mut hosts: Vec<String> = StreamableHttpServerConfig::default().allowed_hosts;
    hosts.extend(args.allowed_hosts.iter().cloned());
    // No `sse_retry`: rmcp would send an empty priming event first on every
    // stream, which clients of versions before 2025-11-25 cannot parse (the
    // official TypeScript server sends none to them), and with no event
    // store there is nothing to resume from anyway.
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_max_request_body_bytes(args.max_body_bytes)
        .with_sse_retry(None)
        .with_cancellation_token(transport);
    let http_shared = shared.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(McpServer::new(http_shared.clone(), Transport::Http)),
        Arc::new(SharedSessions(sessions.clone())),
        config,
    );
    let policy = Arc::new(serve_http::Policy {
        allowed_hosts: args.allowed_hosts.clone(),
        allowed_origins: args.allowed_origins.clone(),
        token,
        max_body_bytes: args.max_body_bytes,
        sessions: sessions.clone(),
    });
    let metrics_shared = shared.clone();
    axum::Router::new()
        .nest_service("/mcp", mcp)
        .route(
            "/metrics",
            axum::routing::get(move || {
                let shared = metrics_shared.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics_text(&shared),
                    )
                }
            }),
        )
        .layer(axum::middleware::map_response(serve_http::jsonrpc_errors))
        .layer(axum::middleware::from_fn_with_state(
            policy,
            serve_http::guard,
        ))
}

/// The engine's Prometheus text and the server's own counter.
fn metrics_text(shared: &ServerState) -> String {
    let mut text = shared.engine.prometheus();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    // Relaxed: a statistic; it orders nothing else.
    let cancelled = shared.cancelled.load(Ordering::Relaxed);
    text.push_str(&format!(
        "# HELP serve_calls_cancelled_total Tool calls dropped because their MCP request was cancelled.\n\
         # TYPE serve_calls_cancelled_total counter\n\
         serve_calls_cancelled_total {cancelled}\n"
    ));
    text
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Admits tool calls until shutdown, then waits for the admitted ones.
///
/// A read guard per call, the write guard once at shutdown: `close` returns
/// when every admitted call has finished, and calls that come later see
/// `closed` and are refused, so none reaches the engine after `shutdown()`.
/// `close_now` refuses new calls without waiting (the shutdown timeout).
#[derive(Default)]
struct Gate {
    closed: std::sync::atomic::AtomicBool,
    running: tokio::sync::RwLock<()>,
}

impl Gate {
    async fn enter(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, ErrorData> {
        let refused = || ErrorData::internal_error("the server is shutting down", None);
        if self.closed.load(Ordering::SeqCst) {
            return Err(refused());
        }
        let guard = self.running.read().await;
        // SeqCst pairs with the store in `close`: a call admitted here was
        // either seen by `close`'s write lock or sees `closed`.
        if self.closed.load(Ordering::SeqCst) {
            return Err(refused());
        }
        Ok(guard)
    }

    async fn close(&self) {
        self.close_now();
        drop(self.running.write().await);
    }

    fn close_now(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// What every session of the server shares.
struct ServerState {
    engine: Engine,
    gate: Arc<Gate>,
    query_cost: Duration,
    /// Numbers the MCP sessions, across both transports.
    next_session: AtomicU64,
    /// Tool calls dropped because their MCP request was cancelled
    /// (`serve_calls_cancelled_total` in `/metrics`).
    cancelled: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Stdio,
    Http,
}

/// The MCP handler: one instance per MCP session.
#[derive(Clone)]
pub struct McpServer {
    shared: Arc<ServerState>,
    transport: Transport,
    /// The registry session of this MCP session, named on its first call.
    session_id: Arc<OnceLock<String>>,
    tool_router: ToolRouter<Self>,
}

/// Arguments of the `query` tool. The schema states exactly what the tool
/// accepts: `q` 1..=1024 characters, `limit` an integer in 1..=20.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// The search text; results are deterministic in it and cached.
    #[schemars(length(min = 1, max = 1024))]
    pub q: String,
    /// How many results to return (default 3).
    #[serde(default = "default_limit")]
    #[schemars(range(min = 1, max = 20))]
    pub limit: u32,
}

fn default_limit() -> u32 {
    3
}

/// The `outputSchema` of a tool whose structured result is `T`.
fn output_schema<T: schemars::JsonSchema + 'static>()
-> Arc<serde_json::Map<String, serde_json::Value>> {
    rmcp::handler::server::tool::schema_for_output::<T>()
}

/// Arguments of the tools that take none.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[tool_router]
impl McpServer {
    fn new(shared: Arc<ServerState>, transport: Transport) -> Self {
        Self {
            shared,
            transport,
            session_id: Arc::new(OnceLock::new()),
            tool_router: Self::tool_router(),
        }
    }

    fn session_id(&self) -> &str {
        self.session_id.get_or_init(|| {
            let n = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
            match self.transport {
                Transport::Stdio => format!("stdio-{n}"),
                Transport::Http => format!("http-{n}"),
            }
        })
    }

    /// Runs one tool call through the engine's async request path
    /// ([`Engine::call_async`], no blocking thread: the simulated cost is a
    /// timer).
    ///
    /// A tool's own failure is a tool result with `isError` (the MCP way:
    /// the model sees it); the engine refusing the call (a capacity reached,
    /// shut down, the audit log failing) is a JSON-RPC internal error.
    ///
    /// # Cancellation
    ///
    /// rmcp cancels the request's token on `notifications/cancelled` for it
    /// (and when its MCP session ends, e.g. stdin EOF); rmcp then sends no
    /// reply. The call's future is dropped at its next suspension point, and
    /// it is counted in `serve_calls_cancelled_total`, never as a completed
    /// call. What it leaves behind follows `Engine::call_async`'s cancel
    /// safety:
    ///
    /// * cancelled while it leads a `query` load (the simulated cost): the
    ///   load is abandoned, nothing is cached, and a call waiting for the
    ///   same text runs its own load; so does the next call;
    /// * cancelled while it waits for another call's load: nothing of it;
    /// * in either case the call is neither counted in the engine's
    ///   counters nor audited; the registry session it created (its first
    ///   call) stays, with this call in its `calls`;
    /// * cancelled while it waits for its audit line's guarantee
    ///   (`--durability os|disk`): it is already counted and its audit event
    ///   queued, and the line will be written; it is still counted as
    ///   cancelled (its reply is not sent).
    ///
    /// A call whose future had already completed when the cancellation came
    /// is a normal call (rmcp drops its reply).
    async fn call(
        &self,
        tool: Tool,
        args_json: String,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let _admitted = self.shared.gate.enter().await?;
        let session = self.session_id().to_owned();
        let progress = Progress {
            token: context.meta.get_progress_token(),
            peer: context.peer,
        };
        let work = serve_tools::run(
            &self.shared.engine,
            &session,
            tool,
            &args_json,
            self.shared.query_cost,
            progress,
        );
        let reply = tokio::select! {
            // Cancellation first: a call cancelled and ready at once is
            // dropped, not half-counted.
            biased;
            () = context.ct.cancelled() => {
                // Relaxed: a statistic; it orders nothing else.
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
                return Err(ErrorData::internal_error("the request was cancelled", None));
            }
            reply = work => reply,
        };
        match reply {
            // Structured content (per the tool's `outputSchema`) and the
            // same JSON as text, for clients before 2025-06-18.
            Ok(text) => match serde_json::from_str(&text) {
                Ok(value) => Ok(CallToolResult::structured(value)),
                Err(_) => Ok(CallToolResult::success(vec![ContentBlock::text(text)])),
            },
            Err(EngineError::Tool(err)) => Ok(tool_error(err.message)),
            Err(err) => Err(ErrorData::internal_error(err.to_string(), None)),
        }
    }

    /// Deterministic search over a synthetic corpus. The result is cached per
    /// query text; a miss costs `--query-cost-ms`.
    #[tool(
        output_schema = output_schema::<serve_tools::QueryOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, destructive_hint = false, open_world_hint = false),
        description = "Search a synthetic corpus. Deterministic: the same q always returns the same results. Results are cached; a miss costs the configured simulated time."
    )]
    async fn query(
        &self,
        Parameters(args): Parameters<QueryArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        // Checked before the request path, like the schema check rmcp does
        // first: a rejected call reaches neither the engine nor the audit log.
        let limit = args.limit;
        if !(1..=20).contains(&limit) {
            return Ok(tool_error(format!("limit must be in 1..=20, got {limit}")));
        }
        // Characters, as the schema's `maxLength` counts them.
        let chars = args.q.chars().count();
        if !(1..=1024).contains(&chars) {
            return Ok(tool_error(format!(
                "q must be 1..=1024 characters, got {chars}"
            )));
        }
        let args_json = serde_json::json!({ "q": args.q, "limit": limit }).to_string();
        self.call(Tool::Query, args_json, context).await
    }

    /// The registry session of this MCP session.
    #[tool(
        output_schema = output_schema::<serve_tools::SessionOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, destructive_hint = false, open_world_hint = false),
        description = "Describe this MCP session's server-side session: its id and how many tool calls it has made."
    )]
    async fn session_info(
        &self,
        Parameters(_): Parameters<NoArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.call(Tool::SessionInfo, "{}".to_owned(), context).await
    }

    /// Server-wide counters.
    #[tool(
        output_schema = output_schema::<serve_tools::StatsOutput>(),
        annotations(read_only_hint = true, idempotent_hint = true, destructive_hint = false, open_world_hint = false),
        description = "Server-wide statistics: tool calls, errors, bytes, sessions, cache hits and misses."
    )]
    async fn stats(
        &self,
        Parameters(_): Parameters<NoArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.call(Tool::Stats, "{}".to_owned(), context).await
    }
}

/// `notifications/progress` for a `query` load, when the request carried a
/// `progressToken` in `_meta`: progress 0 of 1 when the load starts, 1 of 1
/// when it ends. Only the call that runs the load reports it; a cache hit,
/// or a call that joins another call's load, sends none (it runs no load).
/// A notification that cannot be sent is dropped (the call goes on).
struct Progress {
    token: Option<ProgressToken>,
    peer: Peer<RoleServer>,
}

impl Progress {
    async fn notify(&self, progress: f64, message: &str) {
        if let Some(token) = &self.token {
            let param = ProgressNotificationParam::new(token.clone(), progress)
                .with_total(1.0)
                .with_message(message);
            let _ = self.peer.notify_progress(param).await;
        }
    }
}

impl serve_tools::LoadProgress for Progress {
    async fn started(&self) {
        self.notify(0.0, "query load started").await;
    }
    async fn finished(&self) {
        self.notify(1.0, "query load done").await;
    }
}

/// A tool result with `isError: true` and `message` as its text.
fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("latchfree", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "latchfree demo server: `query` (cached deterministic search), `session_info`, `stats`.",
            )
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        // Versions with the `initialize` handshake keep an MCP session, which
        // is what maps to one registry session (see the module docs).
        static VERSIONS: OnceLock<Vec<ProtocolVersion>> = OnceLock::new();
        std::borrow::Cow::Borrowed(VERSIONS.get_or_init(|| {
            ProtocolVersion::KNOWN_VERSIONS
                .iter()
                .filter(|v| v.has_initialize())
                .cloned()
                .collect()
        }))
    }
}
