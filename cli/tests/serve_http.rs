//! `latchfree serve` over real HTTP as an untrusted network sees it: who may
//! call (`Host`, `Origin`, bearer token), what the transport answers
//! (DELETE, batches, JSON-RPC error bodies, no priming events), how long a
//! session lives (idle timeout, open streams), the limits (sessions,
//! connections, header timeout) and the drain at SIGTERM.

mod serve_util;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use serve_util::{Server, call, json_of, metric, run_to_exit};

const ACCEPT: &str = "application/json, text/event-stream";

fn initialize(version: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": version, "capabilities": {},
                    "clientInfo": { "name": "t", "version": "1" } }
    })
}

/// A client without a connection pool: every request is a new connection.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A POST to `/mcp`; returns the response (body unread).
async fn post(server: &Server, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The JSON-RPC error body of a refusal.
async fn error_body(response: reqwest::Response) -> Value {
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert!(body["error"]["code"].is_i64(), "{body}");
    body
}

/// Asserts `response` is a `status` refusal whose JSON-RPC message names
/// `needle`.
async fn refusal(response: reqwest::Response, status: StatusCode, needle: &str) {
    assert_eq!(response.status(), status);
    let body = error_body(response).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{body}");
}

/// The JSON-RPC messages in an SSE or JSON reply body.
fn messages(text: &str) -> Vec<Value> {
    if let Ok(value) = serde_json::from_str(text) {
        return vec![value];
    }
    text.split("\n\n")
        .filter_map(|event| {
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data).unwrap())
        })
        .collect()
}

/// Opens a session by hand: `initialize`, then `notifications/initialized`.
/// Returns the session id and the raw `initialize` reply body.
async fn open_session(server: &Server, headers: &[(&str, &str)]) -> (String, String) {
    let response = post(server, &initialize("2025-06-18"), headers).await;
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let mut with_session: Vec<(&str, &str)> = headers.to_vec();
    with_session.push(("mcp-session-id", &id));
    with_session.push(("mcp-protocol-version", "2025-06-18"));
    let notified = post(
        server,
        &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        &with_session,
    )
    .await;
    assert_eq!(notified.status(), StatusCode::ACCEPTED);
    (id, text)
}

/// A `session_info` call in session `id`; returns the response.
async fn session_info(server: &Server, id: &str) -> reqwest::Response {
    let request = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": "session_info", "arguments": {} }
    });
    post(
        server,
        &request,
        &[
            ("mcp-session-id", id),
            ("mcp-protocol-version", "2025-06-18"),
        ],
    )
    .await
}

/// `DELETE /mcp` of session `id`.
async fn delete_session(server: &Server, id: &str) -> reqwest::Response {
    client()
        .delete(server.mcp_url())
        .header("mcp-session-id", id)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap()
}

/// Item 3: a foreign `Origin` is 403 on every path; loopback and listed
/// origins pass; `/metrics` has the `Host` check too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_and_host_are_checked_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--no-stdio", "--allowed-origin", "https://app.example"],
    )
    .await;
    let evil = post(
        &server,
        &initialize("2025-06-18"),
        &[("origin", "http://evil.example")],
    )
    .await;
    refusal(evil, StatusCode::FORBIDDEN, "Origin").await;
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:8931",
        "https://app.example",
    ] {
        let ok = post(&server, &initialize("2025-06-18"), &[("origin", origin)]).await;
        assert_eq!(ok.status(), StatusCode::OK, "{origin}");
    }
    let metrics = format!("http://{}/metrics", server.addr);
    for (name, value) in [("host", "evil.example"), ("origin", "http://evil.example")] {
        let response = client()
            .get(&metrics)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        error_body(response).await;
    }
    assert!(server.metrics().await.contains("engine_calls_total"));
}

/// Item 9: with a token, nothing passes without it: no token, a wrong one,
/// one that differs only in its last byte are 401 with `WWW-Authenticate`;
/// the right one works for `/mcp` and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_mcp_and_metrics() {
    const TOKEN: &str = "0123456789abcdef-right-token";
    const LAST_BYTE: &str = "0123456789abcdef-right-tokem";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        Some(dir.path()),
        &["--no-stdio"],
        &[("LATCHFREE_TOKEN", TOKEN)],
    )
    .await;
    for (auth, error) in [
        (None, None),
        (
            Some("Bearer wrong-token-wrong-token"),
            Some("invalid_token"),
        ),
        (Some(&*format!("Bearer {LAST_BYTE}")), Some("invalid_token")),
        (Some(&*format!("Basic {TOKEN}")), None),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let response = post(&server, &initialize("2025-06-18"), &headers).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert_eq!(
            challenge.contains("invalid_token"),
            error.is_some(),
            "{challenge}"
        );
        error_body(response).await;
    }
    let metrics = format!("http://{}/metrics", server.addr);
    let denied = client().get(&metrics).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let allowed = client()
        .get(&metrics)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);

    let mcp = server.http_client_with_token(TOKEN).await;
    json_of(
        &call(&mcp, "query", json!({ "q": "authorized" }))
            .await
            .unwrap(),
    );
    let text = client()
        .get(&metrics)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&text, "engine_calls_total"), Some(1.0), "{text}");
}

/// Item 9: a non-loopback address needs a token or an explicit `--no-auth`;
/// the token never comes from the command line and must be usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_needs_a_token_or_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("a").to_str().unwrap().to_owned();
    let base = ["--no-stdio", "--audit-dir", &audit, "--bind", "0.0.0.0:0"];
    let (ok, stderr) = run_to_exit(&base, &[]).await;
    assert!(!ok);
    assert!(
        stderr.contains("without authentication") && stderr.contains("--no-auth"),
        "{stderr}"
    );
    let (ok, stderr) = run_to_exit(&base, &[("LATCHFREE_TOKEN", "short")]).await;
    assert!(!ok);
    assert!(stderr.contains("at least 16"), "{stderr}");
    let (ok, stderr) = run_to_exit(&["--token", "x"], &[]).await;
    assert!(!ok, "a --token flag must not exist: {stderr}");
    let missing = dir.path().join("missing-token");
    let (ok, stderr) = run_to_exit(
        &[
            "--no-stdio",
            "--audit-dir",
            &audit,
            "--token-file",
            missing.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("cannot read --token-file"), "{stderr}");

    let server = Server::start(
        dir.path(),
        &["--no-stdio", "--bind", "0.0.0.0:0", "--no-auth"],
    )
    .await;
    drop(server);
}

/// Item 4: DELETE is 204 then 404; a batch is -32600; transport refusals
/// are JSON-RPC error bodies; a 2025-03-26 client gets no empty priming
/// event before its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_protocol_details() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--no-stdio"]).await;

    // No priming event: every SSE event of the reply carries a message.
    let response = post(&server, &initialize("2025-03-26"), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        assert!(
            event.contains("data:") && event.contains("jsonrpc"),
            "empty event in {text:?}"
        );
    }
    assert_eq!(
        messages(&text)[0]["result"]["protocolVersion"],
        "2025-03-26"
    );

    // A batch (valid JSON): Invalid Request, not Parse error.
    let batch = json!([initialize("2025-03-26"), initialize("2025-03-26")]);
    let response = post(&server, &batch, &[]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_body(response).await["error"]["code"], -32600);

    // Unknown session: 404 with a JSON-RPC body.
    let response = session_info(&server, "no-such-session").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    error_body(response).await;
    // Missing session id: 400 with a JSON-RPC body.
    let request = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" });
    let response = post(&server, &request, &[]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    error_body(response).await;
    // Not acceptable: 406 with a JSON-RPC body.
    let response = client()
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .body(initialize("2025-06-18").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    error_body(response).await;

    // DELETE: 204, then 404 for the ended session, which no longer serves.
    let (id, _) = open_session(&server, &[]).await;
    assert_eq!(session_info(&server, &id).await.status(), StatusCode::OK);
    assert_eq!(
        delete_session(&server, &id).await.status(),
        StatusCode::NO_CONTENT
    );
    let again = delete_session(&server, &id).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_body(again).await["error"]["code"], -32001);
    assert_eq!(
        session_info(&server, &id).await.status(),
        StatusCode::NOT_FOUND
    );
}

/// Item 1: an HTTP session lives as long as the engine's idle timeout (here
/// a short configured one), and one with an open GET stream is not idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_end_unless_a_stream_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--no-stdio", "--idle-timeout", "1s"]).await;
    let (quiet, _) = open_session(&server, &[]).await;
    let (listening, _) = open_session(&server, &[]).await;
    let stream = client()
        .get(server.mcp_url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &listening)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    // Within the timeout, both live.
    assert_eq!(session_info(&server, &quiet).await.status(), StatusCode::OK);
    // Past it (with the reaper's tick of a quarter of it), only the one
    // with an open stream.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ended = session_info(&server, &quiet).await;
    assert_eq!(ended.status(), StatusCode::NOT_FOUND);
    error_body(ended).await;
    let alive = session_info(&server, &listening).await;
    assert_eq!(alive.status(), StatusCode::OK);
    let reply = messages(&alive.text().await.unwrap());
    assert!(reply[0]["result"]["content"].is_array(), "{reply:?}");
    drop(stream);
}

/// Item 8: sessions over the engine's `max_sessions` are refused with a
/// JSON-RPC error (503), and a slot frees when a session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cap_follows_max_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--no-stdio", "--max-sessions", "3"]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(open_session(&server, &[]).await.0);
    }
    for _ in 0..2 {
        let refused = post(&server, &initialize("2025-06-18"), &[]).await;
        refusal(refused, StatusCode::SERVICE_UNAVAILABLE, "session limit").await;
    }
    let closed = delete_session(&server, &ids[0]).await;
    assert_eq!(closed.status(), StatusCode::NO_CONTENT);
    open_session(&server, &[]).await;
    for id in &ids[1..] {
        assert_eq!(session_info(&server, id).await.status(), StatusCode::OK);
    }
}

/// Item 8: one connection over `--max-connections` is answered 503 at once;
/// idle connections are closed after `--header-timeout`, which frees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_and_header_timeout() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--no-stdio",
            "--max-connections",
            "4",
            "--header-timeout",
            "1s",
        ],
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(&server.addr).await.unwrap());
    }
    // Let the server accept all four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = format!("http://{}/metrics", server.addr);
    let refused = tokio::time::timeout(Duration::from_secs(5), client().get(&metrics).send())
        .await
        .expect("over the cap: answered at once, not left hanging")
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    error_body(refused).await;
    // The server closes each idle connection (read returns EOF).
    for mut tcp in idle {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("an idle connection is closed after the header timeout")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.metrics().await.contains("engine_calls_total"));
}

/// Item 2: SIGTERM during a slow call over HTTP: the reply is delivered,
/// the call audited, the server exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_in_flight_http_replies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--no-stdio", "--query-cost-ms", "1500"]).await;
    let mcp = std::sync::Arc::new(server.http_client().await);
    let in_flight = {
        let mcp = mcp.clone();
        tokio::spawn(async move { call(&mcp, "query", json!({ "q": "slow" })).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.terminate();
    let result = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("the in-flight call is answered")
        .unwrap()
        .expect("the reply is delivered, not a closed stream");
    assert_eq!(json_of(&result)["q"], "slow");
    drop(mcp);
    let (ok, stderr) = server.wait().await;
    assert!(ok, "{stderr}");
    assert_eq!(latchfree::audit::verify(dir.path()).unwrap().records, 1);
}

/// Item 6: the port in use, and HTTP switched off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_explained_and_http_can_be_off() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let audit = dir.path().join("a").to_str().unwrap().to_owned();
    let (ok, stderr) =
        run_to_exit(&["--no-stdio", "--audit-dir", &audit, "--bind", &addr], &[]).await;
    assert!(!ok);
    assert!(
        stderr.contains("in use") && stderr.contains("--bind 127.0.0.1:0"),
        "{stderr}"
    );
    // --no-http binds nothing, even the taken port, and serves stdio.
    let (ok, stderr) =
        run_to_exit(&["--no-http", "--audit-dir", &audit, "--bind", &addr], &[]).await;
    assert!(ok, "stdin EOF ends a --no-http server cleanly: {stderr}");
    assert!(stderr.contains("HTTP off"), "{stderr}");
}

/// Item 5: the tool schemas say exactly what the server enforces, the tools
/// are annotated read-only, and results carry structured content that fits
/// the tool's `outputSchema`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_schemas_are_exact_and_results_structured() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--no-stdio"]).await;
    let mcp = server.http_client().await;
    let tools = mcp.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 3);
    for tool in &tools {
        let annotations = tool.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.read_only_hint, Some(true), "{}", tool.name);
        assert_eq!(annotations.idempotent_hint, Some(true), "{}", tool.name);
        let output = tool.output_schema.as_ref().expect("outputSchema");
        assert_eq!(output["type"], "object", "{}", tool.name);
    }
    let query = tools.iter().find(|t| t.name == "query").unwrap();
    let props = &query.input_schema["properties"];
    assert_eq!(props["limit"]["type"], "integer", "{props}");
    assert_eq!(props["limit"]["minimum"], 1, "{props}");
    assert_eq!(props["limit"]["maximum"], 20, "{props}");
    assert_eq!(props["q"]["minLength"], 1, "{props}");
    assert_eq!(props["q"]["maxLength"], 1024, "{props}");
    assert_eq!(query.input_schema["required"], json!(["q"]));

    // The edges of the schema: inside accepted, outside refused.
    let ok_q = "é".repeat(1024);
    for (args, accepted) in [
        (json!({ "q": "x", "limit": 1 }), true),
        (json!({ "q": "x", "limit": 20 }), true),
        (json!({ "q": ok_q }), true),
        (json!({ "q": "x", "limit": 21 }), false),
        (json!({ "q": "x", "limit": 0 }), false),
        (json!({ "q": "x", "limit": 2.5 }), false),
        (json!({ "q": "x".repeat(1025) }), false),
    ] {
        let result = call(&mcp, "query", args.clone()).await.unwrap();
        assert_eq!(result.is_error, Some(!accepted), "{args}: {result:?}");
    }
    let result = call(&mcp, "query", json!({ "q": "structured", "limit": 2 }))
        .await
        .unwrap();
    let structured = result
        .structured_content
        .clone()
        .expect("structured content");
    assert_eq!(structured, json_of(&result));
    assert_eq!(structured["results"].as_array().unwrap().len(), 2);
    assert_eq!(structured["results"][0]["rank"], 1);
}

/// Item 6: the default audit directory is in the state directory, absolute;
/// a second copy takes the next slot; an explicit directory in use, or no
/// state directory at all, is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_directory_defaults_and_clashes() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let env = [("XDG_STATE_HOME", state_dir)];
    let first = Server::start_with_env(None, &["--no-stdio"], &env).await;
    let second = Server::start_with_env(None, &["--no-stdio"], &env).await;
    let base = state.path().join("latchfree");
    assert!(base.join("audit").join("audit.lock").exists());
    assert!(base.join("audit-2").join("audit.lock").exists());
    for server in [&first, &second] {
        let mcp = server.http_client().await;
        json_of(&call(&mcp, "session_info", json!({})).await.unwrap());
    }

    let taken = base.join("audit").to_str().unwrap().to_owned();
    let (ok, stderr) = run_to_exit(&["--no-http", "--audit-dir", &taken], &[]).await;
    assert!(!ok);
    assert!(
        stderr.contains("in use by another latchfree serve") && stderr.contains("--audit-dir"),
        "{stderr}"
    );

    let (ok, stderr) = run_to_exit(
        &["--no-http"],
        &[("XDG_STATE_HOME", "relative/dir"), ("HOME", "")],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("no state directory") && stderr.contains("--audit-dir"),
        "{stderr}"
    );
}

/// The README's stdio client configuration, `latchfree serve --no-http`
/// with no other argument: an MCP session over stdio, the audit log in the
/// state directory, a clean exit at EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_stdio_configuration_works() {
    let state = tempfile::tempdir().unwrap();
    let env = [("XDG_STATE_HOME", state.path().to_str().unwrap())];
    let mut server = Server::start_with_env(None, &["--no-http"], &env).await;
    assert!(server.addr.is_empty());
    let mcp = server.stdio_client().await;
    let info = json_of(&call(&mcp, "session_info", json!({})).await.unwrap());
    assert_eq!(info["session"], "stdio-0");
    drop(mcp);
    let (ok, stderr) = server.wait().await;
    assert!(ok, "{stderr}");
    let audit = state.path().join("latchfree").join("audit");
    assert_eq!(latchfree::audit::verify(&audit).unwrap().records, 1);
}
