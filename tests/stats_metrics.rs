//! `stats::MetricsRecorder`: the `metrics` facade recorded into a `Stats`,
//! installed with `metrics::with_local_recorder` (so tests do not share the
//! global recorder), checked with exact counts and labels.
#![cfg(feature = "metrics")]

use latchfree::stats::{Layout, MetricsRecorder, Stats};
use metrics::{Unit, counter, describe_counter, describe_histogram, gauge, histogram};

#[test]
fn registered_handles_count_exactly_from_many_threads() {
    let stats = Stats::new();
    let recorder = MetricsRecorder::new(&stats);
    let (a, b) = metrics::with_local_recorder(&recorder, || {
        (
            counter!("requests_total", "route" => "/a", "method" => "GET"),
            counter!("requests_total", "method" => "GET", "route" => "/b"),
        )
    });
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let (a, b) = (a.clone(), b.clone());
            s.spawn(move || {
                for _ in 0..10_000 {
                    a.increment(1);
                }
                b.increment(t);
            });
        }
    });
    let snap = stats.snapshot();
    assert_eq!(
        snap.counter_with("requests_total", &[("method", "GET"), ("route", "/a")]),
        Some(60_000)
    );
    assert_eq!(
        snap.counter_with("requests_total", &[("route", "/b"), ("method", "GET")]),
        Some(15)
    );
}

#[test]
fn per_call_macros_land_in_the_same_series() {
    let stats = Stats::new();
    let recorder =
        MetricsRecorder::new(&stats).histogram_layout(Layout::fixed([0.01, 0.1, 1.0]).unwrap());
    metrics::with_local_recorder(&recorder, || {
        describe_counter!("jobs_total", "Jobs run.");
        describe_histogram!("job_seconds", Unit::Seconds, "Time per job.");
        for i in 0..1_000u64 {
            let queue = if i.is_multiple_of(4) { "slow" } else { "fast" };
            counter!("jobs_total", "queue" => queue).increment(1);
            histogram!("job_seconds", "queue" => queue).record(i as f64 / 1000.0);
            gauge!("in_flight").increment(1.0);
            gauge!("in_flight").decrement(1.0);
        }
        gauge!("last_job").set(999.0);
        // A dotted name is made valid.
        counter!("http.requests").increment(3);
        counter!("jobs_total", "queue" => "fast").absolute(10);
        counter!("jobs_total", "queue" => "fast").absolute(5_000);
    });
    let snap = stats.snapshot();
    assert_eq!(
        snap.counter_with("jobs_total", &[("queue", "slow")]),
        Some(250)
    );
    assert_eq!(
        snap.counter_with("jobs_total", &[("queue", "fast")]),
        Some(5_000)
    );
    assert_eq!(snap.gauge("in_flight"), Some(0.0));
    assert_eq!(snap.gauge("last_job"), Some(999.0));
    assert_eq!(snap.counter("http_requests"), Some(3));
    let slow = snap
        .histogram_with("job_seconds", &[("queue", "slow")])
        .unwrap();
    assert_eq!(slow.count(), 250);
    assert_eq!(slow.bounds(), Some(&[0.01, 0.1, 1.0][..]));
    let om = snap.to_openmetrics();
    assert!(om.contains("# UNIT job_seconds seconds"), "{om}");
    assert!(om.contains("# HELP jobs Jobs run."), "{om}");
    assert_eq!(recorder.rejected(), 0);
}

#[test]
fn refused_registrations_are_no_ops_and_counted() {
    let stats = Stats::new();
    let recorder = MetricsRecorder::new(&stats);
    metrics::with_local_recorder(&recorder, || {
        counter!("x").increment(1);
        gauge!("x").set(5.0); // a counter already: refused
        histogram!("x").record(1.0); // refused
        counter!("y", "__reserved" => "v").increment(1); // reserved label
    });
    assert_eq!(recorder.rejected(), 3);
    let snap = stats.snapshot();
    assert_eq!(snap.counter("x"), Some(1));
    assert_eq!(snap.len(), 1);
}
