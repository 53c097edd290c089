//! Cancellation and progress of tool calls (`notifications/cancelled`,
//! `notifications/progress`), over stdio with raw JSON-RPC lines so the test
//! sees exactly what the server sends, and `/metrics` over HTTP.
//!
//! A `query` miss costs `--query-cost-ms`; the call that leads the load
//! reports progress when the load starts and ends, which tells the test
//! when a call is in flight and which call ran the load.

mod serve_util;

use std::time::Duration;

use serde_json::{Value, json};
use serve_util::{Server, call, json_of, metric};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

struct Raw {
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every message read so far.
    seen: Vec<Value>,
}

impl Raw {
    /// Takes the server's stdio and runs the MCP handshake (request id 1).
    async fn initialize(server: &mut Server) -> Raw {
        let mut raw = Raw {
            stdin: server.stdin.take().unwrap(),
            lines: BufReader::new(server.stdout.take().unwrap()).lines(),
            seen: Vec::new(),
        };
        raw.send(json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": { "name": "serve-cancel-test", "version": "0" }
            }
        }))
        .await;
        raw.response(1).await;
        raw.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
        raw
    }

    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Reads messages until one satisfies `done` (bounded); returns it.
    async fn until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("stdout closed waiting for {what}"));
                let message: Value = serde_json::from_str(&line).expect("a JSON line");
                self.seen.push(message.clone());
                if done(&message) {
                    return message;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}; seen {:?}", self.seen))
    }

    async fn response(&mut self, id: u64) -> Value {
        self.until(&format!("the reply to {id}"), |m| {
            m["id"] == json!(id) && m.get("method").is_none()
        })
        .await
    }

    async fn progress(&mut self, token: &str, progress: f64) -> Value {
        self.until(&format!("progress {progress} for {token}"), |m| {
            m["method"] == "notifications/progress"
                && m["params"]["progressToken"] == token
                && m["params"]["progress"].as_f64() == Some(progress)
        })
        .await
    }

    fn progress_for(&self, token: &str) -> Vec<f64> {
        self.seen
            .iter()
            .filter(|m| {
                m["method"] == "notifications/progress" && m["params"]["progressToken"] == token
            })
            .map(|m| m["params"]["progress"].as_f64().unwrap())
            .collect()
    }
}

fn query(id: u64, token: Option<&str>) -> Value {
    let mut params = json!({ "name": "query", "arguments": { "q": "slow one", "limit": 2 } });
    if let Some(token) = token {
        params["_meta"] = json!({ "progressToken": token });
    }
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_call_is_dropped_counted_and_the_next_call_leads_a_new_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--query-cost-ms", "2000"]).await;
    let mut raw = Raw::initialize(&mut server).await;

    // A slow miss: in flight once its load has started.
    raw.send(query(2, Some("p2"))).await;
    raw.progress("p2", 0.0).await;
    raw.send(json!({
        "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": { "requestId": 2, "reason": "the user gave up" }
    }))
    .await;

    // The same query again: had the cancelled load gone on, this call would
    // join it (and report no load of its own); it leads a new one.
    raw.send(query(3, Some("p3"))).await;
    let reply = raw.response(3).await;
    assert_eq!(reply["result"]["isError"], json!(false), "{reply}");
    assert_eq!(reply["result"]["structuredContent"]["q"], "slow one");
    assert_eq!(raw.progress_for("p3"), [0.0, 1.0], "{:?}", raw.seen);

    // A hit: no load, so no progress, and fast.
    raw.send(query(4, Some("p4"))).await;
    let hit = raw.response(4).await;
    assert_eq!(
        hit["result"]["structuredContent"],
        reply["result"]["structuredContent"]
    );
    assert!(raw.progress_for("p4").is_empty(), "{:?}", raw.seen);

    // Everything the cancelled call would send has had time to come: the
    // load it started would have ended 2 s after it began.
    tokio::time::sleep(Duration::from_millis(500)).await;
    raw.send(json!({ "jsonrpc": "2.0", "id": 5, "method": "ping" }))
        .await;
    raw.response(5).await;
    assert!(
        raw.seen.iter().all(|m| m["id"] != json!(2)),
        "a cancelled request gets no reply: {:?}",
        raw.seen
    );
    // Its load stopped at the cancellation: it never reported an end.
    assert_eq!(raw.progress_for("p2"), [0.0], "{:?}", raw.seen);

    let text = server.metrics().await;
    assert_eq!(
        metric(&text, "serve_calls_cancelled_total"),
        Some(1.0),
        "{text}"
    );
    // Calls 3 and 4 only: the cancelled call is not a completed call.
    assert_eq!(metric(&text, "engine_calls_total"), Some(2.0), "{text}");
    assert_eq!(
        metric(&text, "engine_cache_hits_total"),
        Some(1.0),
        "{text}"
    );

    drop(raw); // stdin EOF: graceful shutdown
    let (ok, stderr) = server.wait().await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("stopped; 2 tool calls"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_progress_without_a_progress_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--query-cost-ms", "50"]).await;
    let mut raw = Raw::initialize(&mut server).await;
    raw.send(query(2, None)).await;
    let reply = raw.response(2).await;
    assert_eq!(reply["result"]["isError"], json!(false), "{reply}");
    assert!(
        raw.seen
            .iter()
            .all(|m| m["method"] != "notifications/progress"),
        "{:?}",
        raw.seen
    );
    let text = server.metrics().await;
    assert_eq!(
        metric(&text, "serve_calls_cancelled_total"),
        Some(0.0),
        "{text}"
    );
    drop(raw);
    let (ok, stderr) = server.wait().await;
    assert!(ok, "{stderr}");
}

/// Over Streamable HTTP with the rmcp client: dropping a call's future
/// sends `notifications/cancelled` (rmcp's client does), and the server
/// drops the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_cancelled_call_is_counted_as_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--query-cost-ms", "3000", "--no-stdio"]).await;
    let client = server.http_client().await;
    let args = json!({ "q": "slow over http" });
    let abandoned = tokio::time::timeout(
        Duration::from_millis(500),
        call(&client, "query", args.clone()),
    )
    .await;
    assert!(abandoned.is_err(), "the call is still running at 500 ms");
    // The notification is sent as the future drops; the server counts the
    // call as it drops the work.
    let mut text = String::new();
    for _ in 0..100 {
        text = server.metrics().await;
        if metric(&text, "serve_calls_cancelled_total") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&text, "serve_calls_cancelled_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "engine_calls_total"), Some(0.0), "{text}");
    let result = call(&client, "query", args)
        .await
        .expect("a later call works");
    assert_eq!(json_of(&result)["q"], "slow over http");
    let text = server.metrics().await;
    assert_eq!(metric(&text, "engine_calls_total"), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "engine_cache_hits_total"),
        Some(0.0),
        "{text}"
    );
    let _ = client.cancel().await;
    server.terminate();
    let (ok, stderr) = server.wait().await;
    assert!(ok, "{stderr}");
}
