//! Bad input to `latchfree serve` gets a proper MCP / JSON-RPC error, never a
//! panic, and never reaches the engine: after each test the engine's call
//! counter equals the good calls only, and the server still serves.

mod serve_util;

use std::time::Duration;

use rmcp::service::ServiceError;
use serde_json::{Value, json};
use serve_util::{Server, call, json_of, metric};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

const ACCEPT: &str = "application/json, text/event-stream";

async fn post(server: &Server, body: impl Into<reqwest::Body>, host: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(body);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rejections_are_json_rpc_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--no-stdio", "--max-body-bytes", "4096"]).await;

    // Not JSON: 400 with a JSON-RPC parse error (id null).
    let (status, body) = post(&server, "{not json", None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], Value::Null);
    assert_eq!(body["error"]["code"], -32700, "{body}");

    // Over --max-body-bytes: 413 with a JSON-RPC invalid request.
    let big = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "query", "arguments": { "q": "x".repeat(10_000) } }
    });
    let (status, body) = post(&server, big.to_string(), None).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("4096"),
        "{body}"
    );

    // A Host that is not loopback (DNS rebinding) is refused before MCP.
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "t", "version": "1" } }
    });
    let (status, _) = post(&server, init.to_string(), Some("evil.example:80")).await;
    assert_eq!(status, 403);

    // Still serving, and the engine saw none of it.
    let client = server.http_client().await;
    json_of(
        &call(&client, "query", json!({ "q": "after" }))
            .await
            .unwrap(),
    );
    let text = server.metrics().await;
    assert_eq!(metric(&text, "engine_calls_total"), Some(1.0), "{text}");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tool_calls_get_mcp_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--no-stdio"]).await;
    let client = server.http_client().await;

    // Unknown tool: JSON-RPC invalid params (-32602).
    match call(&client, "no_such_tool", json!({})).await {
        Err(ServiceError::McpError(e)) => assert_eq!(e.code.0, -32602, "{e:?}"),
        other => panic!("unknown tool answered {other:?}"),
    }
    // Arguments that do not fit the schema, or out of range: a tool error
    // (`isError`, the model can read it), not a success.
    for args in [
        json!({ "q": 5 }),
        json!({}),
        json!({ "q": "x", "extra": true }),
        json!({ "q": "x", "limit": 0 }),
        json!({ "q": "" }),
    ] {
        let result = call(&client, "query", args.clone()).await.unwrap();
        assert_eq!(
            result.is_error,
            Some(true),
            "{args} was accepted: {result:?}"
        );
    }
    let result = call(&client, "stats", json!({ "unexpected": 1 }))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));

    // The good call after them works; the engine counted only it.
    let info = json_of(&call(&client, "session_info", json!({})).await.unwrap());
    assert_eq!(info["calls"], 1);
    let text = server.metrics().await;
    assert_eq!(metric(&text, "engine_calls_total"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "engine_errors_total"), Some(0.0), "{text}");
    drop(client);
}

/// Raw JSON-RPC lines on stdio: unparsable input is ignored (as every
/// official MCP SDK does: no id to answer, and answering garbage can start
/// an error storm), well-formed JSON that is not a message gets -32600, an
/// unknown method -32601, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let mut stdin = server.stdin.take().unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap()).lines();
    let lines = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string(),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string(),
        "this is not json{".to_owned(),
        json!({"jsonrpc":"2.0","id":2,"method":"no/such/method"}).to_string(),
        json!({"hello":"world"}).to_string(),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"session_info","arguments":{}}}).to_string(),
    ];
    for line in &lines {
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    }
    stdin.flush().await.unwrap();
    let mut by_id = std::collections::BTreeMap::new();
    let mut null_ids = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while by_id.len() < 3 || null_ids.is_empty() {
            let line = out.next_line().await.unwrap().expect("server output");
            let value: Value = serde_json::from_str(&line).unwrap();
            match value["id"].as_i64() {
                Some(id) => {
                    by_id.insert(id, value);
                }
                None => null_ids.push(value),
            }
        }
    })
    .await
    .expect("answers to every request");
    assert!(by_id[&1]["result"].is_object());
    assert_eq!(by_id[&2]["error"]["code"], -32601, "{}", by_id[&2]);
    assert_eq!(null_ids[0]["error"]["code"], -32600, "{}", null_ids[0]);
    let text = by_id[&3]["result"]["content"][0]["text"].as_str().unwrap();
    let info: Value = serde_json::from_str(text).unwrap();
    assert_eq!(info["session"], "stdio-0");
    drop(stdin); // EOF: graceful shutdown
    let (ok, stderr) = server.wait().await;
    assert!(ok, "{stderr}");
    assert_eq!(latchfree::audit::verify(dir.path()).unwrap().records, 1);
}
