//! A load generator for `latchfree serve`: many concurrent MCP clients over
//! Streamable HTTP, against the latchfree engine and the locked engine, in
//! one run.
//!
//! ```text
//! cargo build --release --bin latchfree --example mcp_load
//! target/release/examples/mcp_load --clients 64 --seconds 5 --rounds 2
//! ```
//!
//! For each round and each engine (alternating), it starts
//! `latchfree serve --no-stdio --bind 127.0.0.1:0` (the binary next to this
//! example's directory, or `--server PATH`), opens `--clients` MCP sessions
//! (rmcp clients), and has each call tools back to back for `--seconds`:
//! 90 % `query` over `--queries` distinct texts (so most are cache hits),
//! 5 % `session_info`, 5 % `stats`. Every call is timed. Then it checks the
//! counts exactly: `/metrics` calls == calls made, sessions created ==
//! clients, no errors; stops the server with SIGTERM, and checks the audit
//! directory verifies with one line per call.
//!
//! It prints calls/s and p50/p99/p99.9 per engine and round, then the
//! median-round ratio.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use tokio::io::{AsyncBufReadExt as _, BufReader};

struct Args {
    clients: usize,
    seconds: f64,
    rounds: usize,
    queries: usize,
    query_cost_ms: u64,
    durability: String,
    server: PathBuf,
}

fn parse_args() -> Args {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/mcp_load -> target/<profile>/latchfree
    let default_server = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("latchfree"))
        .unwrap_or_else(|| PathBuf::from("latchfree"));
    let mut args = Args {
        clients: 64,
        seconds: 5.0,
        rounds: 2,
        queries: 200,
        query_cost_ms: 2,
        durability: "async".to_owned(),
        server: default_server,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => args.clients = value().parse().expect("--clients N"),
            "--seconds" => args.seconds = value().parse().expect("--seconds S"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--queries" => args.queries = value().parse().expect("--queries N"),
            "--query-cost-ms" => args.query_cost_ms = value().parse().expect("--query-cost-ms N"),
            "--durability" => args.durability = value(),
            "--server" => args.server = value().into(),
            "--help" | "-h" => {
                println!(
                    "mcp_load [--clients 64] [--seconds 5] [--rounds 2] [--queries 200] \
                     [--query-cost-ms 2] [--durability async|os|disk] [--server PATH]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// What one engine did in one round.
struct Outcome {
    calls: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.seconds
    }
    fn quantile(&self, q: f64) -> u64 {
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_us[i]
    }
}

async fn one_client(
    url: String,
    id: usize,
    queries: usize,
    deadline: Instant,
) -> Result<(u64, u64, Vec<u64>), String> {
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(url))
            .await
            .map_err(|e| format!("client {id}: initialize: {e}"))?;
    let (mut calls, mut errors, mut latencies) = (0, 0, Vec::new());
    let mut x = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while Instant::now() < deadline {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let params = match x % 20 {
            0 => CallToolRequestParams::new("session_info").with_arguments(Default::default()),
            1 => CallToolRequestParams::new("stats").with_arguments(Default::default()),
            _ => {
                let mut args = serde_json::Map::new();
                args.insert(
                    "q".into(),
                    format!("query {}", (x >> 8) % queries as u64).into(),
                );
                CallToolRequestParams::new("query").with_arguments(args)
            }
        };
        let start = Instant::now();
        let result = client.call_tool(params).await;
        latencies.push(start.elapsed().as_micros() as u64);
        calls += 1;
        match result {
            Ok(r) if r.is_error != Some(true) => {}
            _ => errors += 1,
        }
    }
    let _ = client.cancel().await;
    Ok((calls, errors, latencies))
}

async fn run_engine(args: &Args, locked: bool) -> Outcome {
    let dir = tempfile::tempdir().expect("scratch audit dir");
    let mut command = tokio::process::Command::new(&args.server);
    command
        .args([
            "serve",
            "--no-stdio",
            "--bind",
            "127.0.0.1:0",
            "--audit-dir",
        ])
        .arg(dir.path())
        .args(["--query-cost-ms", &args.query_cost_ms.to_string()])
        .args(["--durability", &args.durability])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if locked {
        command.arg("--locked");
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.server.display()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("server address line");
        if let Some(rest) = line.split("MCP on http://").nth(1) {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    let url = format!("http://{addr}/mcp");

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = (0..args.clients)
        .map(|id| tokio::spawn(one_client(url.clone(), id, args.queries, deadline)))
        .collect();
    let mut outcome = Outcome {
        calls: 0,
        errors: 0,
        seconds: 0.0,
        latencies_us: Vec::new(),
    };
    for task in tasks {
        let (calls, errors, latencies) = task.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        outcome.calls += calls;
        outcome.errors += errors;
        outcome.latencies_us.extend(latencies);
    }
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome.latencies_us.sort_unstable();

    // Exact counts, live.
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert_eq!(
        counter("engine_calls_total"),
        outcome.calls,
        "/metrics calls != calls made"
    );
    assert_eq!(counter("engine_errors_total"), 0, "engine errors");
    assert_eq!(
        counter("engine_sessions_created_total"),
        args.clients as u64,
        "registry sessions != MCP sessions"
    );
    assert_eq!(outcome.errors, 0, "calls that failed");

    // Graceful stop, then the audit log: one verified line per call.
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("server stops within 60 s")
        .unwrap();
    assert!(status.success(), "server exited with {status}");
    let report = latchfree::audit::verify(dir.path()).expect("the audit directory verifies");
    assert_eq!(report.records, outcome.calls, "audit lines != calls");
    outcome
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = parse_args();
    println!(
        "mcp_load: {} clients over HTTP, {} s x {} rounds per engine, {} distinct queries, query cost {} ms, durability {}",
        args.clients, args.seconds, args.rounds, args.queries, args.query_cost_ms, args.durability
    );
    println!(
        "{:<6} {:<10} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "round", "engine", "calls/s", "p50 µs", "p99 µs", "p99.9 µs", "errors"
    );
    let mut rates = [Vec::new(), Vec::new()];
    let mut p99s = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        // Alternate which engine goes first.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for locked in order {
            let o = run_engine(&args, locked).await;
            println!(
                "{:<6} {:<10} {:>10.0} {:>9} {:>9} {:>9} {:>7}",
                round,
                if locked { "locked" } else { "latchfree" },
                o.rate(),
                o.quantile(0.5),
                o.quantile(0.99),
                o.quantile(0.999),
                o.errors
            );
            rates[locked as usize].push(o.rate());
            p99s[locked as usize].push(o.quantile(0.99) as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let (lf, lk) = (median(&mut rates[0]), median(&mut rates[1]));
    let (lf99, lk99) = (median(&mut p99s[0]), median(&mut p99s[1]));
    println!(
        "median: latchfree {lf:.0} calls/s p99 {lf99} µs; locked {lk:.0} calls/s p99 {lk99} µs; throughput ratio {:.2}x, p99 ratio (locked/latchfree) {:.2}x",
        lf / lk,
        lk99 / lf99
    );
    println!(
        "exact: every round had /metrics calls == calls made == audit lines (verified), sessions == clients, 0 errors"
    );
}
