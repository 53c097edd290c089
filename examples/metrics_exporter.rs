//! The `metrics` facade recorded into latchfree's sharded stats, served as
//! Prometheus text on `GET /metrics` over a plain `std::net::TcpListener`.
//!
//! ```text
//! cargo run --release --example metrics_exporter --features metrics -- 127.0.0.1:9898
//! curl -s localhost:9898/metrics
//! curl -s -H 'Accept: application/openmetrics-text' localhost:9898/metrics
//! ```
//!
//! Four worker threads record through `metrics::counter!`, `gauge!` and
//! `histogram!`; the recorder is installed globally, so any library in the
//! process that uses the facade lands in the same `Stats`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use latchfree::stats::{MetricsRecorder, Stats};
use metrics::{Unit, counter, describe_counter, describe_histogram, gauge, histogram};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9898".to_owned());
    let stats = Stats::new();
    metrics::set_global_recorder(MetricsRecorder::new(&stats))
        .expect("no other recorder is installed");
    describe_counter!("jobs_total", "Jobs run, by queue.");
    describe_histogram!("job_duration_seconds", Unit::Seconds, "Time per job.");

    for worker in 0..4 {
        std::thread::spawn(move || work(worker));
    }

    let listener = TcpListener::bind(&addr)?;
    eprintln!("serving http://{addr}/metrics");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(e) = serve(stream, &stats) {
                    eprintln!("request failed: {e}");
                }
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}

/// A worker: registered handles on the hot path, a per-call macro for the
/// rarer event.
fn work(worker: usize) {
    let queue = if worker.is_multiple_of(2) {
        "fast"
    } else {
        "slow"
    };
    let jobs = counter!("jobs_total", "queue" => queue);
    let duration = histogram!("job_duration_seconds", "queue" => queue);
    let in_flight = gauge!("jobs_in_flight");
    loop {
        let start = Instant::now();
        in_flight.increment(1.0);
        std::thread::sleep(Duration::from_millis(if queue == "fast" { 2 } else { 20 }));
        in_flight.decrement(1.0);
        jobs.increment(1);
        duration.record(start.elapsed().as_secs_f64());
        if start.elapsed() > Duration::from_millis(25) {
            counter!("jobs_slow_total", "queue" => queue).increment(1);
        }
    }
}

/// Answers one HTTP/1.1 request: `GET /metrics` with the Prometheus text
/// (or OpenMetrics when the client asks for it), 404 otherwise.
fn serve(stream: TcpStream, stats: &Stats) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut openmetrics = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if lower.starts_with("accept:") && lower.contains("application/openmetrics-text") {
            openmetrics = true;
        }
    }
    let mut stream = stream;
    if !request_line.starts_with("GET /metrics ") {
        return stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
    }
    let snapshot = stats.snapshot();
    let (body, content_type) = if openmetrics {
        (
            snapshot.to_openmetrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            snapshot.to_prometheus(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}
