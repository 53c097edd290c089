//! An axum service measured by latchfree: `tower::StatsLayer` on its
//! routes (labelled by the route pattern axum matched), one audit record
//! per request, and the stats on `GET /metrics`.
//!
//! ```text
//! cargo run --example axum_service --features tower -- 127.0.0.1:3000
//! curl -s localhost:3000/users/42
//! curl -s localhost:3000/fail
//! curl -s localhost:3000/metrics
//! curl -s -H 'Accept: application/openmetrics-text' localhost:3000/metrics
//! ```
//!
//! It serves until Ctrl-C, or with `--requests N` until it has answered N
//! requests (so it can be run as a smoke test); then it closes the audit
//! log, verifies it, and prints the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path};
use axum::http::{Request, StatusCode};
use axum::routing::get;
use latchfree::audit::{AuditLog, verify};
use latchfree::stats::Stats;
use latchfree::tower::{MetricsService, StatsLayer};
use tokio::sync::Notify;

/// The route pattern axum matched (`/users/{id}`, not `/users/42`), known
/// to layers added with `Router::route_layer`.
fn matched_route(request: &Request<Body>) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned()
}

/// The application: its routes measured, `/metrics` beside them (added
/// after `route_layer`, so scrapes are not counted as traffic).
pub fn app(stats: &Stats, audit: &AuditLog) -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/users/{id}",
            get(|Path(id): Path<u64>| async move { format!("user {id}\n") }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "failed\n") }),
        )
        .route_layer(StatsLayer::new(stats).route(matched_route).audit(audit))
        .route_service("/metrics", MetricsService::new(stats))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:3000".to_owned();
    let mut limit = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" => limit = Some(args.next().ok_or("--requests N")?.parse::<u64>()?),
            _ => addr = arg,
        }
    }

    let stats = Stats::new();
    let audit_dir = tempfile::tempdir()?;
    let audit = AuditLog::open(audit_dir.path())?;

    // Counts answered requests (scrapes included) for `--requests N`.
    let answered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let app = app(&stats, &audit).layer(axum::middleware::from_fn({
        let (answered, done) = (answered.clone(), done.clone());
        move |request: Request<Body>, next: axum::middleware::Next| {
            let (answered, done) = (answered.clone(), done.clone());
            async move {
                let response = next.run(request).await;
                let n = answered.fetch_add(1, Ordering::Relaxed) + 1;
                if limit.is_some_and(|limit| n >= limit) {
                    done.notify_one();
                }
                response
            }
        }
    }));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("serving http://{}/", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = done.notified() => {}
            }
        })
        .await?;

    audit.close()?;
    let report = verify(audit_dir.path())?;
    println!("audit log: {} records, chain verified", report.records);
    print!("{}", stats.snapshot().to_prometheus());
    Ok(())
}
