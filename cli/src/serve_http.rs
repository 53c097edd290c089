//! The HTTP front of `latchfree serve`: who may call, how much, and what a
//! refusal looks like.
//!
//! ```text
//!   TCP ─► accept loop ─► hyper (header timeout) ─► guard ─► /mcp (rmcp) ─► jsonrpc_errors
//!          (connection cap)                         Host, Origin,    /metrics
//!                                                   bearer token,
//!                                                   batch, DELETE
//! ```
//!
//! * **Accept loop** ([`serve`]): at most `max_connections` connections; one
//!   more is answered `503` and closed at once (so a flood of idle sockets
//!   cannot starve `/metrics` of file descriptors). hyper closes a
//!   connection that has not sent a whole request head within
//!   `header_timeout`, idle keep-alive connections included.
//! * **Guard** ([`guard`]), in front of every path, `/metrics` included:
//!   the `Host` (DNS rebinding) and `Origin` (a browser page) checks answer
//!   `403`; with a token configured a request without `Authorization:
//!   Bearer <token>` is `401` with `WWW-Authenticate` (RFC 6750, as the MCP
//!   authorization spec asks of a protected resource). The token is compared
//!   in constant time ([`constant_time_eq`]).
//! * **Protocol fixes around rmcp 3.11** (each belongs in rmcp): a JSON-RPC
//!   batch (valid JSON, an array) is answered `-32600` here, where rmcp says
//!   `-32700 Parse error`; batches are not served (the versions that have
//!   sessions from 2025-06-18 on dropped them). `DELETE` of a session is
//!   `204` (rmcp: `202`, which the Python SDK logs as a failure), and of an
//!   unknown or ended session `404` (rmcp: `202` again). Every plain-text
//!   rejection gets a JSON-RPC error body ([`jsonrpc_errors`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rmcp::transport::streamable_http_server::SessionId;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::serve_sessions::{SESSION_LIMIT_MESSAGE, Sessions};

/// Who may reach the server over HTTP.
pub struct Policy {
    /// `Host` names (or `name:port`) accepted besides the loopback names.
    pub allowed_hosts: Vec<String>,
    /// `Origin` values (`scheme://host[:port]`) accepted besides loopback ones.
    pub allowed_origins: Vec<String>,
    /// The bearer token every request must carry; `None`: no authentication.
    pub token: Option<Vec<u8>>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// The HTTP sessions (for `DELETE` of an unknown session).
    pub sessions: Arc<Sessions>,
}

/// Compares two secrets in time that depends on neither their contents nor
/// where they differ: both are hashed to 32 bytes first (which also hides
/// the length), then every byte pair is folded into one difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether `host` (a `Host` name, brackets and port removed) is loopback.
fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Splits `name[:port]` / `[v6][:port]` into the lowercase name and the port.
fn split_authority(authority: &str) -> (String, Option<&str>) {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        let (name, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (name.to_ascii_lowercase(), after.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name.to_ascii_lowercase(), Some(port)),
        _ => (authority.to_ascii_lowercase(), None),
    }
}

impl Policy {
    fn host_allowed(&self, host: &str) -> bool {
        let (name, port) = split_authority(host);
        is_loopback_name(&name)
            || self.allowed_hosts.iter().any(|allowed| {
                let (allowed_name, allowed_port) = split_authority(allowed);
                allowed_name == name && (allowed_port.is_none() || allowed_port == port)
            })
    }

    /// An `Origin` is allowed when it is a loopback `http(s)` origin or
    /// listed (compared case-insensitively, without a trailing `/`).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/');
        if let Some(rest) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            && is_loopback_name(&split_authority(rest).0)
        {
            return true;
        }
        self.allowed_origins
            .iter()
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    /// `None` when `request` may pass, else the 401 to answer.
    fn unauthorized(&self, request: &Request) -> Option<Response> {
        let token = self.token.as_ref()?;
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, t)| t.trim())
            });
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), token) => None,
            Some(_) => Some(unauthorized(
                r#"Bearer realm="latchfree", error="invalid_token", error_description="the bearer token is not valid""#,
                "the bearer token is not valid",
            )),
            None => Some(unauthorized(
                r#"Bearer realm="latchfree""#,
                "authentication required: send Authorization: Bearer <token>",
            )),
        }
    }
}

/// A JSON-RPC error response (id `null`: no request could be read).
pub fn jsonrpc_error(status: StatusCode, code: i64, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": code, "message": message.into() },
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn unauthorized(challenge: &'static str, message: &str) -> Response {
    let mut response = jsonrpc_error(StatusCode::UNAUTHORIZED, -32001, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The checks in front of every path (see the module docs).
pub async fn guard(State(policy): State<Arc<Policy>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match host {
        Some(host) if policy.host_allowed(host) => {}
        Some(host) => {
            return jsonrpc_error(
                StatusCode::FORBIDDEN,
                -32600,
                format!("Forbidden: Host {host:?} is not allowed (see --allowed-host)"),
            );
        }
        None => {
            return jsonrpc_error(StatusCode::BAD_REQUEST, -32600, "missing Host header");
        }
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !policy.origin_allowed(origin) {
            return jsonrpc_error(
                StatusCode::FORBIDDEN,
                -32600,
                format!("Forbidden: Origin {origin:?} is not allowed (see --allowed-origin)"),
            );
        }
    }
    if let Some(response) = policy.unauthorized(&request) {
        return response;
    }
    let is_mcp = request.uri().path().starts_with("/mcp");
    if is_mcp && request.method() == Method::POST {
        return refuse_batches(&policy, request, next).await;
    }
    if is_mcp && request.method() == Method::DELETE {
        let id: Option<SessionId> = request
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(Into::into);
        if let Some(id) = id
            && !policy.sessions.contains(&id).await
        {
            return jsonrpc_error(
                StatusCode::NOT_FOUND,
                -32001,
                "Session not found (ended, expired or never created)",
            );
        }
        let mut response = next.run(request).await;
        if response.status() == StatusCode::ACCEPTED {
            *response.status_mut() = StatusCode::NO_CONTENT;
        }
        return response;
    }
    next.run(request).await
}

/// Reads a `POST` body (bounded) and answers a batch `-32600` before rmcp.
async fn refuse_batches(policy: &Policy, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limit = policy.max_body_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return jsonrpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            format!("Invalid Request: the body is larger than {limit} bytes (--max-body-bytes)"),
        );
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
        && serde_json::from_slice::<serde_json::Value>(&bytes).is_ok()
    {
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: JSON-RPC batches are not supported; send one message per POST",
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Gives the transport's plain-text rejections a JSON-RPC body.
///
/// rmcp answers several rejections with a text message: a body that is not
/// JSON (`415`, made `400` with `-32700 Parse error` here), a missing or
/// unknown session (`400` / `404`), an unacceptable `Accept` (`406`), a body
/// over the limit (`413`), a session refused by the cap (`500`, made `503`
/// here). A JSON-RPC client expects an error object (id `null`, since no
/// request could be read).
pub async fn jsonrpc_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let (status, code, message) = if text.contains(SESSION_LIMIT_MESSAGE) {
        let message = text.split_once(": ").map_or(&*text, |(_, m)| m);
        (StatusCode::SERVICE_UNAVAILABLE, -32000, message.to_owned())
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE
        && text.starts_with("fail to deserialize")
    {
        (
            StatusCode::BAD_REQUEST,
            -32700,
            format!("Parse error: {text}"),
        )
    } else if status == StatusCode::NOT_FOUND {
        (status, -32001, format!("Session not found: {text}"))
    } else if status.is_server_error() {
        (status, -32603, format!("Internal error: {text}"))
    } else {
        (status, -32600, format!("Invalid Request: {text}"))
    };
    let mut response = jsonrpc_error(status, code, message);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// Limits of the HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a connection may take to send a request head, and stay idle
    /// between requests.
    pub header_timeout: Duration,
}

/// Accepts connections until `stop`, serving each with `router` under
/// `limits`; then asks every connection to finish its current response and
/// close once `drain` is cancelled, and returns when all have closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    stop: CancellationToken,
    drain: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, _peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(pair) => pair,
            // Out of descriptors or a connection reset before accept: keep
            // serving the others, and do not spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small JSON-RPC replies: without TCP_NODELAY, Nagle's algorithm and
        // the client's delayed ACK hold each reply back for tens of ms.
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            connections.spawn(refuse_connection(tcp, limits.max_connections));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let drain = drain.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = drain.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

/// Answers a connection over the cap `503` and closes it. The request head
/// is read first (briefly, bounded): a client sees an answer written before
/// its request as a protocol error, not as the refusal.
async fn refuse_connection(mut tcp: tokio::net::TcpStream, max: usize) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::with_capacity(1024);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 1024];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": null,
        "error": { "code": -32000, "message": format!(
            "too many connections: {max} are open (--max-connections)") },
    })
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_every_byte() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret-tokem"));
        assert!(!constant_time_eq(b"s3cret-token", b"t3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret-toke"));
        assert!(!constant_time_eq(b"s3cret-token", b""));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn authorities_split() {
        assert_eq!(
            split_authority("LocalHost:8931"),
            ("localhost".into(), Some("8931"))
        );
        assert_eq!(split_authority("[::1]:80"), ("::1".into(), Some("80")));
        assert_eq!(split_authority("::1"), ("::1".into(), None));
        assert_eq!(split_authority("my.host"), ("my.host".into(), None));
    }
}
