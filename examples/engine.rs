//! A tool server's shared state in one `Engine`: eight worker threads (more
//! than this machine's cores) serve tool calls from 100 sessions through the
//! request path, a slow `query` tool behind a cache; then the engine shuts
//! down, and the counters, the Prometheus text and the audit file agree.
//!
//! ```text
//! cargo run --release --example engine [--locked] [DIR]
//! ```

use std::time::Duration;

use latchfree::audit::{self, Guarantee};
use latchfree::engine::{CacheConfig, Call, Engine, SessionConfig, ToolError};

/// The "expensive search" of a real server, cached by the engine.
fn query(args: &str) -> Result<String, ToolError> {
    let value: serde_json::Value =
        serde_json::from_str(args).map_err(|e| ToolError::new(format!("bad arguments: {e}")))?;
    let q = value["q"]
        .as_str()
        .ok_or_else(|| ToolError::new("missing \"q\""))?;
    std::thread::sleep(Duration::from_millis(2));
    Ok(serde_json::json!({ "q": q, "hits": [q.len(), q.len() * 7] }).to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let locked = args.next_if(|a| a == "--locked").is_some();
    let temp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), Into::into);

    let engine = Engine::builder()
        .locked(locked)
        .audit_dir(&dir)
        .guarantee(Guarantee::Os)
        .sessions(
            SessionConfig::default()
                .max_sessions(1_000)
                .idle_timeout(Some(Duration::from_secs(600))),
        )
        .cache("query", CacheConfig::default())
        .build()?;

    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for worker in 0..8 {
            let engine = engine.clone();
            s.spawn(move || {
                for i in 0..2_000 {
                    let session = format!("session-{}", (i * 8 + worker) % 100);
                    let args = format!("{{\"q\":\"topic {}\"}}", i % 50);
                    let (tool, args) = match i % 10 {
                        9 => ("query", "{\"nope\":1}".to_string()), // a bad argument
                        _ => ("query", args),
                    };
                    // A real server maps the error to its protocol's error reply.
                    let _ = engine.call(&Call::new(&session, tool, &args), query);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    engine.shutdown()?;

    let counters = engine.counters();
    println!(
        "{} engine: {} calls in {elapsed:.2?} ({} errors, {} cache hits, {} sessions created)",
        if engine.is_locked() {
            "locked"
        } else {
            "latchfree"
        },
        counters.calls,
        counters.errors,
        counters.cache_hits,
        counters.sessions_created,
    );
    let report = audit::verify(engine.audit_dir())?;
    println!("audit: {} lines, verified", report.records);
    assert_eq!(report.records, counters.calls);
    assert_eq!(counters.sessions_created, 100);
    let prometheus = engine.prometheus();
    for line in prometheus
        .lines()
        .filter(|l| l.starts_with("engine_calls_total"))
    {
        println!("metrics: {line}");
    }
    Ok(())
}
