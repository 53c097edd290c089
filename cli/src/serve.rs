//! `latchfree serve`: a Model Context Protocol server on one engine,
//! serving the stdio transport and the Streamable HTTP transport at once.
//!
//! # Shape
//!
//! ```text
//!   stdin/stdout ──► rmcp stdio service ──┐
//!                                          ├─► McpServer (one per MCP session) ──► Engine::call
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
//!   `--max-body-bytes` `413` with `-32600` (see `jsonrpc_transport_errors`),
//!   a foreign `Host` `403`. On stdio, well-formed JSON that is not a message
//!   is `-32600` and an unknown method `-32601`; an unparsable line is
//!   ignored, as in every official MCP SDK (no id to answer; answering
//!   garbage can start an error storm). An engine error (a capacity reached,
//!   a stopped engine, a failing audit log) is a JSON-RPC `-32603` naming
//!   the cause; a tool's own failure is an `isError` result. Never a panic.
//! * **Shutdown.** SIGINT, SIGTERM or EOF on stdin cancel one token: the HTTP
//!   listener stops accepting, the sessions end, in-flight tool calls finish
//!   (the [`Gate`] waits for them), then the engine's `shutdown` drains the
//!   audit log. Calls that arrive after the gate closed get an error instead
//!   of being half-recorded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use latchfree::engine::{Engine, EngineError};

use crate::serve_tools::{self, Tool};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, ServiceExt as _, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Arguments of `latchfree serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address of the Streamable HTTP listener (`/mcp`, `/metrics`). Loopback
    /// by default; port 0 picks a free port (the address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8931")]
    pub bind: SocketAddr,
    /// Extra `Host` header values the HTTP transport accepts (loopback names
    /// are always accepted). Needed when binding a non-loopback address.
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,
    /// Run on the locked engine (the all-locks twin), for A/B load tests.
    #[arg(long)]
    pub locked: bool,
    /// Directory of the audit log.
    #[arg(long, default_value = "latchfree-audit")]
    pub audit_dir: PathBuf,
    /// An engine configuration file (TOML, see `EngineConfig`); the flags
    /// `--locked` and `--durability` override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How far each call's audit line has gone when the call returns:
    /// `async`, `os` or `disk` (default: the configuration's, else `async`).
    #[arg(long)]
    pub durability: Option<String>,
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
    let engine = serve_tools::build_engine(
        args.config.as_deref(),
        &args.audit_dir,
        args.locked,
        args.durability.as_deref(),
    )?;
    let gate = Arc::new(Gate::default());
    let shared = Arc::new(ServerState {
        engine: engine.clone(),
        gate: gate.clone(),
        query_cost: Duration::from_millis(args.query_cost_ms),
        next_session: AtomicU64::new(0),
    });
    let shutdown = CancellationToken::new();

    // HTTP: /mcp (Streamable HTTP) and /metrics on one listener.
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|err| format!("cannot bind {}: {err}", args.bind))?;
    let local = listener
        .local_addr()
        .map_err(|err| format!("cannot read the bound address: {err}"))?;
    let mut hosts: Vec<String> = StreamableHttpServerConfig::default().allowed_hosts;
    hosts.extend(args.allowed_hosts.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_max_request_body_bytes(args.max_body_bytes)
        .with_cancellation_token(shutdown.child_token());
    let http_shared = shared.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(McpServer::new(http_shared.clone(), Transport::Http)),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let metrics_engine = engine.clone();
    let router = axum::Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::map_response(jsonrpc_transport_errors))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let engine = metrics_engine.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        engine.prometheus(),
                    )
                }
            }),
        );
    eprintln!(
        "latchfree serve: {} engine; MCP on http://{local}/mcp and stdio{}; metrics on http://{local}/metrics",
        if engine.is_locked() {
            "locked"
        } else {
            "latchfree"
        },
        if args.no_stdio { " (off)" } else { "" },
    );
    let http_stop = shutdown.clone();
    // Small JSON-RPC replies: without TCP_NODELAY, Nagle's algorithm and the
    // client's delayed ACK hold each reply back for tens of milliseconds.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
    });

    // stdio: one MCP session on stdin/stdout; EOF ends it and the server.
    let stdio = if args.no_stdio {
        None
    } else {
        let server = McpServer::new(shared.clone(), Transport::Stdio);
        let stop = shutdown.clone();
        let token = shutdown.child_token();
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
    gate.close().await;
    if let Some(stdio) = stdio {
        let _ = stdio.await;
    }
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => eprintln!("latchfree serve: HTTP server error: {err}"),
        Err(err) => eprintln!("latchfree serve: HTTP task failed: {err}"),
    }
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

/// Gives the transport's plain-text rejections a JSON-RPC body.
///
/// rmcp answers a POST whose body is not JSON with `415` and a text message,
/// and a body over the size limit with `413` and a text message. A JSON-RPC
/// client expects an error object (id `null`, since no request could be
/// read): `-32700 Parse error` for the first, `-32600 Invalid Request` for
/// the second. The status codes stay (`400` for the parse error).
async fn jsonrpc_transport_errors(response: axum::response::Response) -> axum::response::Response {
    use axum::http::StatusCode;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json
        || !matches!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE
        )
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let (status, code, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
        (status, -32600, format!("Invalid Request: {text}"))
    } else if text.starts_with("fail to deserialize") {
        (
            StatusCode::BAD_REQUEST,
            -32700,
            format!("Parse error: {text}"),
        )
    } else {
        (status, -32600, format!("Invalid Request: {text}"))
    };
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": code, "message": message },
    });
    let mut response =
        axum::response::Response::from_parts(parts, axum::body::Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .remove(axum::http::header::CONTENT_LENGTH);
    response
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
#[derive(Default)]
struct Gate {
    closed: tokio::sync::RwLock<bool>,
}

impl Gate {
    async fn enter(&self) -> Result<tokio::sync::RwLockReadGuard<'_, bool>, ErrorData> {
        let guard = self.closed.read().await;
        if *guard {
            return Err(ErrorData::internal_error(
                "the server is shutting down",
                None,
            ));
        }
        Ok(guard)
    }

    async fn close(&self) {
        *self.closed.write().await = true;
    }
}

/// What every session of the server shares.
struct ServerState {
    engine: Engine,
    gate: Arc<Gate>,
    query_cost: Duration,
    /// Numbers the MCP sessions, across both transports.
    next_session: AtomicU64,
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

/// Arguments of the `query` tool.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// The search text; results are deterministic in it and cached.
    pub q: String,
    /// How many results to return (1..=20, default 3).
    #[serde(default)]
    pub limit: Option<u32>,
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

    /// Runs one tool call through the engine's request path on a blocking
    /// thread (the simulated cost sleeps there, not on the runtime).
    ///
    /// A tool's own failure is a tool result with `isError` (the MCP way:
    /// the model sees it); the engine refusing the call (a capacity reached,
    /// shut down, the audit log failing) is a JSON-RPC internal error.
    async fn call(&self, tool: Tool, args_json: String) -> Result<CallToolResult, ErrorData> {
        let _admitted = self.shared.gate.enter().await?;
        let shared = self.shared.clone();
        let session = self.session_id().to_owned();
        let reply = tokio::task::spawn_blocking(move || {
            serve_tools::run(
                &shared.engine,
                &session,
                tool,
                &args_json,
                shared.query_cost,
            )
        })
        .await
        .map_err(|err| ErrorData::internal_error(format!("tool task failed: {err}"), None))?;
        match reply {
            Ok(text) => Ok(CallToolResult::success(vec![ContentBlock::text(text)])),
            Err(EngineError::Tool(err)) => Ok(tool_error(err.message)),
            Err(err) => Err(ErrorData::internal_error(err.to_string(), None)),
        }
    }

    /// Deterministic search over a synthetic corpus. The result is cached per
    /// query text; a miss costs `--query-cost-ms`.
    #[tool(
        description = "Search a synthetic corpus. Deterministic: the same q always returns the same results. Results are cached; a miss costs the configured simulated time."
    )]
    async fn query(
        &self,
        Parameters(args): Parameters<QueryArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        // Checked before the request path, like the schema check rmcp does
        // first: a rejected call reaches neither the engine nor the audit log.
        let limit = args.limit.unwrap_or(3);
        if !(1..=20).contains(&limit) {
            return Ok(tool_error(format!("limit must be in 1..=20, got {limit}")));
        }
        if args.q.is_empty() || args.q.len() > 1024 {
            return Ok(tool_error(format!(
                "q must be 1..=1024 bytes, got {}",
                args.q.len()
            )));
        }
        let args_json = serde_json::json!({ "q": args.q, "limit": limit }).to_string();
        self.call(Tool::Query, args_json).await
    }

    /// The registry session of this MCP session.
    #[tool(
        description = "Describe this MCP session's server-side session: its id and how many tool calls it has made."
    )]
    async fn session_info(
        &self,
        Parameters(_): Parameters<NoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.call(Tool::SessionInfo, "{}".to_owned()).await
    }

    /// Server-wide counters.
    #[tool(
        description = "Server-wide statistics: tool calls, errors, bytes, sessions, cache hits and misses."
    )]
    async fn stats(&self, Parameters(_): Parameters<NoArgs>) -> Result<CallToolResult, ErrorData> {
        self.call(Tool::Stats, "{}".to_owned()).await
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
