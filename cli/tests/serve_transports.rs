//! `latchfree serve` as a real process, driven over stdio and Streamable HTTP
//! at once by rmcp clients, on one engine.
//!
//! Proves, after a graceful shutdown (stdin EOF, SIGTERM):
//! * one registry session per MCP session (session ids in the audit log ==
//!   the MCP sessions that called, each created exactly once though its
//!   first calls raced),
//! * audit lines == tool calls, per session and in total, and the audit
//!   directory verifies (hash chain, contiguous seq),
//! * the `/metrics` counters == tool calls,
//! * the cache is shared across transports (`query` results are identical
//!   for the same text from either transport),
//!
//! Both on the latchfree engine and on `--locked`.

mod serve_util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::json;
use serve_util::{Client, Server, call, json_of, metric};
use tokio::task::JoinSet;

/// Queries drawn from a small set so that sessions overlap on cache keys.
const QUERIES: [&str; 5] = ["rust", "lock-free", "epoch", "seqlock", "mcp"];

/// One session's work: `rounds` rounds, each firing a `query`, a
/// `session_info` and (every third round) a `stats` call concurrently in the
/// same session. Returns (calls made, the session id it saw, query results).
async fn session_work(
    client: Client,
    rounds: usize,
    salt: usize,
) -> (u64, String, Vec<(String, String)>, Client) {
    let client = std::sync::Arc::new(client);
    let mut calls = 0;
    let mut ids = BTreeSet::new();
    let mut results = Vec::new();
    for round in 0..rounds {
        let q = QUERIES[(round + salt) % QUERIES.len()].to_owned();
        let mut set = JoinSet::new();
        {
            let c = client.clone();
            let q = q.clone();
            set.spawn(async move {
                (
                    "query",
                    q.clone(),
                    call(&c, "query", json!({ "q": q })).await,
                )
            });
        }
        {
            let c = client.clone();
            set.spawn(async move {
                (
                    "session_info",
                    String::new(),
                    call(&c, "session_info", json!({})).await,
                )
            });
        }
        if round % 3 == 0 {
            let c = client.clone();
            set.spawn(async move { ("stats", String::new(), call(&c, "stats", json!({})).await) });
        }
        while let Some(done) = set.join_next().await {
            let (tool, q, result) = done.unwrap();
            let value = json_of(&result.unwrap_or_else(|e| panic!("{tool} failed: {e}")));
            calls += 1;
            match tool {
                "query" => results.push((q, value.to_string())),
                "session_info" => {
                    ids.insert(value["session"].as_str().unwrap().to_owned());
                    assert!(value["calls"].as_u64().unwrap() >= 1);
                }
                _ => assert!(value["calls"].is_u64()),
            }
        }
    }
    assert_eq!(
        ids.len(),
        1,
        "one MCP session saw several registry sessions: {ids:?}"
    );
    let client = std::sync::Arc::try_unwrap(client).ok().unwrap();
    (calls, ids.into_iter().next().unwrap(), results, client)
}

/// Audit events per session id, from the (verified) audit directory.
fn audit_calls_by_session(dir: &Path) -> BTreeMap<String, u64> {
    let report = latchfree::audit::verify(dir).expect("the audit directory verifies");
    assert_eq!(report.gap_markers, 0);
    let mut by_session = BTreeMap::new();
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                let event = find_event(&record).expect("an audit record with a tool_call event");
                assert_eq!(event["ok"], true, "a failed call was audited: {event}");
                *by_session
                    .entry(event["session"].as_str().unwrap().to_owned())
                    .or_insert(0) += 1;
                lines += 1;
            }
        }
    }
    assert_eq!(lines, report.records);
    by_session
}

/// The `tool_call` event inside an audit record, wherever the record puts it.
fn find_event(value: &serde_json::Value) -> Option<&serde_json::Value> {
    if value.get("event").and_then(|e| e.as_str()) == Some("tool_call") {
        return Some(value);
    }
    match value {
        serde_json::Value::Object(map) => map.values().find_map(find_event),
        _ => None,
    }
}

async fn two_transports(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--query-cost-ms", "1"];
    args.extend_from_slice(extra);
    let mut server = Server::start(dir.path(), &args).await;

    const HTTP_SESSIONS: usize = 6;
    const ROUNDS: usize = 12;
    let stdio = server.stdio_client().await;
    let mut http = Vec::new();
    for _ in 0..HTTP_SESSIONS {
        http.push(server.http_client().await);
    }
    // All sessions at once: stdio and HTTP interleave on one engine.
    let mut work = JoinSet::new();
    work.spawn(session_work(stdio, ROUNDS, 0));
    for (i, client) in http.into_iter().enumerate() {
        work.spawn(session_work(client, ROUNDS, i + 1));
    }
    let mut total = 0;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut answers: BTreeMap<String, String> = BTreeMap::new();
    let mut clients = Vec::new();
    while let Some(done) = work.join_next().await {
        let (calls, session, results, client) = done.unwrap();
        total += calls;
        assert!(
            expected.insert(session, calls).is_none(),
            "two MCP sessions shared a registry session"
        );
        for (q, text) in results {
            let first = answers.entry(q).or_insert_with(|| text.clone());
            assert_eq!(*first, text, "one query text, two different results");
        }
        clients.push(client);
    }
    assert_eq!(expected.len(), HTTP_SESSIONS + 1);
    assert_eq!(
        expected.keys().filter(|s| s.starts_with("stdio-")).count(),
        1
    );

    // The metrics, read live over HTTP, count exactly the calls made.
    let text = server.metrics().await;
    assert_eq!(
        metric(&text, "engine_calls_total"),
        Some(total as f64),
        "{text}"
    );
    assert_eq!(metric(&text, "engine_errors_total"), Some(0.0));
    assert_eq!(
        metric(&text, "engine_sessions_created_total"),
        Some(expected.len() as f64)
    );
    let hits = metric(&text, "engine_cache_hits_total").unwrap();
    let queries = expected.values().sum::<u64>() as f64; // upper bound on query calls
    assert!(hits > 0.0 && hits < queries, "cache hits {hits}");

    // Shutdown: HTTP sessions end, then stdin EOF stops the server.
    for client in clients {
        let _ = client.cancel().await;
    }
    let (ok, stderr) = server.wait().await;
    assert!(ok, "server failed:\n{stderr}");
    assert!(
        stderr.contains(&format!("{total} tool calls (0 errors)")),
        "{stderr}"
    );

    // The audit log: one line per call, per session, nothing else.
    assert_eq!(audit_calls_by_session(dir.path()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stdio_and_http_share_one_engine() {
    two_transports(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stdio_and_http_share_one_locked_engine() {
    two_transports(&["--locked"]).await;
}

/// SIGTERM stops the server gracefully while stdin is still open (its
/// blocking read must not hold the exit): calls made before it are all in
/// the verified audit log.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "async"]).await;
    let client = server.http_client().await;
    for i in 0..50 {
        json_of(
            &call(&client, "query", json!({ "q": format!("q{}", i % 7) }))
                .await
                .unwrap(),
        );
    }
    let pid = server.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, stderr) = server.wait().await;
    assert!(ok, "server failed:\n{stderr}");
    let by_session = audit_calls_by_session(dir.path());
    assert_eq!(
        by_session.into_iter().collect::<Vec<_>>(),
        [("http-0".to_owned(), 50)]
    );
    drop(client);
}
