//! `tower::StatsLayer` and `tower::MetricsService` in a real axum server on
//! `127.0.0.1:0`, driven over HTTP/1.1 from concurrent tasks through raw
//! TCP streams: exact counts by route and status in the snapshot and in the
//! scraped text, the in-flight gauge while a request is parked and after,
//! one verified audit record per request (without its query string),
//! content negotiation for OpenMetrics.

#![cfg(feature = "tower")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path as UrlPath};
use axum::http::{Request, StatusCode};
use axum::routing::get;
use latchfree::audit::record;
use latchfree::audit::verify::stream_files;
use latchfree::audit::{AuditLog, verify};
use latchfree::stats::Stats;
use latchfree::tower::{
    MetricsService, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, StatsLayer,
};
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Tasks sending requests at once, and requests each.
const TASKS: u64 = 8;
const PER_TASK: u64 = 30;

/// A handler parked until the test releases it, and its signal that it
/// has been entered.
#[derive(Default)]
struct Park {
    entered: Notify,
    release: Notify,
}

fn matched_route(request: &Request<Body>) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned()
}

/// The example's application, plus a route that parks.
fn app(stats: &Stats, audit: &AuditLog, park: Arc<Park>) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/users/{id}",
            get(|UrlPath(id): UrlPath<u64>| async move { format!("user {id}") }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "failed") }),
        )
        .route(
            "/park",
            get(move || {
                let park = park.clone();
                async move {
                    park.entered.notify_one();
                    park.release.notified().await;
                    "released"
                }
            }),
        )
        .route_layer(StatsLayer::new(stats).route(matched_route).audit(audit))
        .route_service("/metrics", MetricsService::new(stats))
}

/// A response: its status, headers (lower-case names) and body.
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Sends `GET target` with `accept` (if any) on a new connection and reads
/// the whole response (the connection closes after it).
async fn get_request(addr: SocketAddr, target: &str, accept: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let accept = accept.map_or(String::new(), |a| format!("accept: {a}\r\n"));
    let request =
        format!("GET {target} HTTP/1.1\r\nhost: test\r\n{accept}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers.contains_key("transfer-encoding"),
        "bodies here have a known length"
    );
    assert_eq!(
        headers["content-length"].parse::<usize>().unwrap(),
        body.len()
    );
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Request `i` of task `t`: its target and its matched route.
fn target(t: u64, i: u64) -> (String, &'static str) {
    match (t + i) % 3 {
        0 => (format!("/?secret={t}-{i}"), "/"),
        1 => (format!("/users/{}", t * 1000 + i), "/users/{id}"),
        _ => ("/fail".to_owned(), "/fail"),
    }
}

/// Every event of the `audit` stream in `dir`.
fn audit_events(dir: &Path) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for file in stream_files(dir, "audit").unwrap() {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let record = record::decode(line.as_bytes()).unwrap();
            events.push(record.event.expect("no gaps in a blocking log"));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_exactly_over_http() {
    let stats = Stats::new();
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::open(dir.path()).unwrap();
    let park = Arc::new(Park::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        tokio::spawn(axum::serve(listener, app(&stats, &audit, park.clone())).into_future());

    // One request parked in its handler: in flight, and nothing else yet.
    let parked = tokio::spawn(get_request(addr, "/park", None));
    park.entered.notified().await;
    let in_flight = [("method", "GET"), ("route", "/park")];
    let snap = stats.snapshot();
    assert_eq!(
        snap.gauge_with("http_requests_in_flight", &in_flight),
        Some(1.0)
    );
    let scraped = get_request(addr, "/metrics", None).await;
    assert!(
        scraped
            .body
            .contains("http_requests_in_flight{method=\"GET\",route=\"/park\"} 1\n")
    );
    park.release.notify_one();
    let reply = parked.await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "released"));

    // Concurrent traffic over three routes.
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let (path, route) = target(t, i);
                    let reply = get_request(addr, &path, None).await;
                    let expected = if route == "/fail" { 500 } else { 200 };
                    assert_eq!(reply.status, expected, "{path}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut expected: HashMap<&str, u64> = HashMap::new();
    for t in 0..TASKS {
        for i in 0..PER_TASK {
            *expected.entry(target(t, i).1).or_default() += 1;
        }
    }
    expected.insert("/park", 1);
    let total: u64 = expected.values().sum();
    assert_eq!(total, TASKS * PER_TASK + 1);

    // The snapshot.
    let snap = stats.snapshot();
    for (&route, &n) in &expected {
        let status = if route == "/fail" { "500" } else { "200" };
        let labels = [("method", "GET"), ("route", route), ("status", status)];
        assert_eq!(
            snap.counter_with("http_requests_total", &labels),
            Some(n),
            "{route}"
        );
        let labels = [("method", "GET"), ("route", route)];
        assert_eq!(
            snap.gauge_with("http_requests_in_flight", &labels),
            Some(0.0),
            "{route}"
        );
        let duration = snap
            .histogram_with("http_request_duration_seconds", &labels)
            .unwrap();
        assert_eq!(duration.count(), n, "{route}");
        let five = [("method", "GET"), ("route", route), ("kind", "5xx")];
        let errors = if route == "/fail" { n } else { 0 };
        assert_eq!(
            snap.counter_with("http_request_errors_total", &five),
            Some(errors),
            "{route}"
        );
    }

    // The scrape, parsed: the same numbers, and nothing else counted (the
    // scrapes themselves are outside the measured routes).
    let scraped = get_request(addr, "/metrics", None).await;
    assert_eq!(scraped.status, 200);
    assert_eq!(scraped.headers["content-type"], PROMETHEUS_CONTENT_TYPE);
    // `prometheus_parse` ends a label set at the first `}`, even inside a
    // quoted value (the format allows braces there), so axum's `{id}` is
    // spelled `:id` for it; the exact lines are checked as well.
    for (&route, &n) in &expected {
        let status = if route == "/fail" { "500" } else { "200" };
        let line = format!(
            "http_requests_total{{method=\"GET\",route=\"{route}\",status=\"{status}\"}} {n}\n"
        );
        assert!(scraped.body.contains(&line), "{line}");
    }
    let parseable = scraped.body.replace("{id}", ":id");
    let scrape = Scrape::parse(parseable.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut requests: HashMap<(String, String), f64> = HashMap::new();
    let mut counts: HashMap<String, f64> = HashMap::new();
    let mut in_flight_sum = 0.0;
    let mut five_xx = 0.0;
    for sample in &scrape.samples {
        let route = sample.labels.get("route").unwrap_or("").to_owned();
        match (sample.metric.as_str(), &sample.value) {
            ("http_requests_total", Value::Counter(n)) => {
                assert_eq!(sample.labels.get("method"), Some("GET"));
                let status = sample.labels.get("status").unwrap().to_owned();
                assert!(requests.insert((route, status), *n).is_none());
            }
            ("http_request_duration_seconds_count", Value::Untyped(n)) => {
                counts.insert(route, *n);
            }
            ("http_requests_in_flight", Value::Gauge(n)) => in_flight_sum += n,
            ("http_request_errors_total", Value::Counter(n)) => match sample.labels.get("kind") {
                Some("5xx") => five_xx += n,
                Some("service") => assert_eq!(*n, 0.0),
                other => panic!("kind {other:?}"),
            },
            _ => {}
        }
    }
    assert_eq!(requests.len(), expected.len(), "{requests:?}");
    for (&route, &n) in &expected {
        let status = if route == "/fail" { "500" } else { "200" };
        let route = route.replace("{id}", ":id");
        let key = (route.clone(), status.to_owned());
        assert_eq!(requests[&key], n as f64, "{route}");
        assert_eq!(counts[&route], n as f64, "{route}");
    }
    assert_eq!(in_flight_sum, 0.0);
    assert_eq!(five_xx, expected["/fail"] as f64);
    assert!(scraped.body.contains("# HELP http_requests_total "));

    // OpenMetrics when asked for, with the unit and the terminator.
    let accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3";
    let om = get_request(addr, "/metrics", Some(accept)).await;
    assert_eq!(om.headers["content-type"], OPENMETRICS_CONTENT_TYPE);
    assert!(
        om.body
            .contains("# UNIT http_request_duration_seconds seconds\n")
    );
    assert!(om.body.ends_with("# EOF\n"));
    let not_om = get_request(addr, "/metrics", Some("application/openmetrics-text;q=0")).await;
    assert_eq!(not_om.headers["content-type"], PROMETHEUS_CONTENT_TYPE);

    // An unmatched path never reaches a route layer.
    assert_eq!(get_request(addr, "/nope", None).await.status, 404);

    server.abort();
    let _ = server.await;

    // One audit record per measured request, chained, with labels only.
    audit.close().unwrap();
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.records, total);
    let events = audit_events(dir.path());
    assert_eq!(events.len() as u64, total);
    let mut by_route: HashMap<String, u64> = HashMap::new();
    for event in &events {
        let fields: Vec<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields.len(), 4, "{event}");
        assert_eq!(event["method"], "GET");
        assert!(event["duration_ns"].is_u64());
        let route = event["route"].as_str().unwrap();
        let status = if route == "/fail" { 500 } else { 200 };
        assert_eq!(event["status"], status, "{event}");
        *by_route.entry(route.to_owned()).or_default() += 1;
    }
    for (&route, &n) in &expected {
        assert_eq!(by_route[route], n, "{route}");
    }
    assert!(events.iter().all(|e| !e.to_string().contains("secret")));
    assert_eq!(stats.snapshot().counter("http_audit_errors_total"), Some(0));
}
