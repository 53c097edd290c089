//! Histogram layouts: bounded layouts count exactly, render Prometheus
//! buckets that parse back, join batches, refuse bad bounds and layout
//! clashes; and 10,000 counter series plus 1,000 bounded histogram series
//! fit in one `Stats` updated from 8 threads, with the memory that takes.

use latchfree::stats::{HISTOGRAM_SLOTS, Layout, Stats, StatsError};
use prometheus_parse::{Scrape, Value};

#[test]
fn a_fixed_layout_counts_every_sample_in_its_le_bucket_across_threads() {
    let stats = Stats::new();
    let layout = Layout::fixed([0.5, 1.0, 2.5, 10.0]).unwrap();
    let h = stats
        .histogram_with_layout("req_seconds", &[("route", "/")], &layout)
        .unwrap();
    // Samples i / 4 for i in 0..100 per thread, 6 threads on 2 cores.
    std::thread::scope(|s| {
        for _ in 0..6 {
            let h = h.clone();
            s.spawn(move || {
                for i in 0..100u32 {
                    h.record_f64(f64::from(i) / 4.0);
                }
            });
        }
    });
    let snap = stats.snapshot();
    let got = snap
        .histogram_with("req_seconds", &[("route", "/")])
        .unwrap();
    assert_eq!(got.count(), 600);
    let per_thread_sum: f64 = (0..100u32).map(|i| f64::from(i) / 4.0).sum();
    assert_eq!(got.sum_f64(), 6.0 * per_thread_sum);
    assert_eq!(got.max_f64(), 99.0 / 4.0);
    // Exact cumulative counts: samples <= bound, 6 threads each.
    let le = |b: f64| 6 * (0..100u32).filter(|&i| f64::from(i) / 4.0 <= b).count() as u64;
    assert_eq!(
        got.cumulative(),
        vec![
            (0.5, le(0.5)),
            (1.0, le(1.0)),
            (2.5, le(2.5)),
            (10.0, le(10.0)),
            (f64::INFINITY, 600)
        ]
    );
    // Percentiles are bucket bounds (capped at the max).
    assert_eq!(got.quantile(0.01), 1);
    assert_eq!(got.quantile(1.0), 24);
    let text = snap.to_prometheus();
    for line in [
        format!("req_seconds_bucket{{route=\"/\",le=\"0.5\"}} {}", le(0.5)),
        format!("req_seconds_bucket{{route=\"/\",le=\"10\"}} {}", le(10.0)),
        "req_seconds_bucket{route=\"/\",le=\"+Inf\"} 600".to_owned(),
        format!("req_seconds_sum{{route=\"/\"}} {}", 6.0 * per_thread_sum),
        "req_seconds_count{route=\"/\"} 600".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let Some(Value::Histogram(buckets)) = scrape
        .samples
        .iter()
        .map(|s| &s.value)
        .find(|v| matches!(v, Value::Histogram(_)))
    else {
        panic!("no histogram in {:?}", scrape.samples);
    };
    assert_eq!(buckets.len(), 5);
    assert_eq!(buckets[1].less_than, 1.0);
    assert_eq!(buckets[1].count, le(1.0) as f64);
    let om = snap.to_openmetrics();
    assert!(
        om.contains("req_seconds_bucket{route=\"/\",le=\"10.0\"} "),
        "{om}"
    );
}

#[test]
fn exponential_layouts_negative_samples_and_batches() {
    let stats = Stats::new();
    let layout = Layout::exponential(1.0, 10.0, 3).unwrap(); // 1, 10, 100
    assert_eq!(layout.bounds(), Some(&[1.0, 10.0, 100.0][..]));
    let h = stats.histogram_with_layout("x", &[], &layout).unwrap();
    let calls = stats.counter("calls").unwrap();
    h.record_f64(-3.0);
    h.record(50);
    stats.batch(|b| {
        b.inc(&calls);
        b.record_f64(&h, 1000.5);
        b.record(&h, 7);
    });
    let snap = stats.snapshot();
    let got = snap.histogram("x").unwrap();
    assert_eq!(got.count(), 4);
    assert_eq!(got.sum_f64(), -3.0 + 50.0 + 1000.5 + 7.0);
    assert_eq!(got.max_f64(), 1000.5);
    assert_eq!(
        got.cumulative(),
        vec![(1.0, 1), (10.0, 2), (100.0, 3), (f64::INFINITY, 4)]
    );
    // All negative: the max is the largest of them, not 0.
    let neg = stats.histogram_with_layout("neg", &[], &layout).unwrap();
    neg.record_f64(-5.0);
    neg.record_f64(-2.0);
    assert_eq!(neg.snapshot().max_f64(), -2.0);
    let json = serde_json::to_value(stats.snapshot()).unwrap();
    assert_eq!(json["histograms"]["x"]["sum"], 1054.5);
}

#[test]
fn bad_bounds_and_layout_clashes_are_typed_errors() {
    for bad in [
        vec![],
        vec![1.0, 1.0],
        vec![2.0, 1.0],
        vec![f64::NAN],
        vec![0.0, f64::INFINITY],
    ] {
        let err = Layout::fixed(&bad).unwrap_err();
        match &err {
            StatsError::InvalidLayout { bounds, .. } => assert_eq!(bounds.len(), bad.len()),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        Layout::exponential(-1.0, 2.0, 4),
        Err(StatsError::InvalidLayout { .. })
    ));
    let stats = Stats::new();
    let a = Layout::fixed([1.0, 2.0]).unwrap();
    stats.histogram_with_layout("h", &[("k", "v")], &a).unwrap();
    // The same layout again is the same series; another is refused.
    stats.histogram_with_layout("h", &[("k", "v")], &a).unwrap();
    assert_eq!(
        stats.histogram_with("h", &[("k", "v")]).unwrap_err(),
        StatsError::LayoutMismatch { name: "h".into() }
    );
    // A layout takes `bounds + 4` slots; log-linear HISTOGRAM_SLOTS.
    let small = Stats::builder().max_slots(6 + 5).build().unwrap();
    small.histogram_with_layout("a", &[], &a).unwrap();
    small
        .histogram_with_layout("b", &[], &Layout::fixed([1.0]).unwrap())
        .unwrap();
    assert!(matches!(
        small.counter("c"),
        Err(StatsError::SlotsExhausted { .. })
    ));
    assert!(matches!(
        small.histogram("d"),
        Err(StatsError::SlotsExhausted { needed, .. }) if needed == HISTOGRAM_SLOTS
    ));
}

/// 10,000 counter series and 1,000 histogram series (12 bounds each) in
/// one `Stats`, updated from 8 threads; exact totals; the memory is
/// reported from the shards' chunk counts and checked against the slots
/// used: 10,000 + 1,000 * 16 = 26,000 slots, so 26 chunks of 8 KiB per
/// thread that touched them all.
#[test]
fn ten_thousand_counters_and_a_thousand_histograms_fit() {
    const THREADS: usize = 8;
    let stats = Stats::new();
    let layout = Layout::exponential(0.001, 2.0, 12).unwrap();
    let counters: Vec<_> = (0..10_000)
        .map(|i| {
            let (route, code) = (format!("/r{}", i / 10), format!("{}", 200 + i % 10));
            stats
                .counter_with("http_requests_total", &[("route", &route), ("code", &code)])
                .unwrap()
        })
        .collect();
    let histograms: Vec<_> = (0..1_000)
        .map(|i| {
            let route = format!("/r{i}");
            stats
                .histogram_with_layout("http_request_seconds", &[("route", &route)], &layout)
                .unwrap()
        })
        .collect();
    // All 8 alive at once (a thread that exits hands its shard on).
    let all_done = std::sync::Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (counters, histograms, all_done) = (&counters, &histograms, &all_done);
            s.spawn(move || {
                for (i, c) in counters.iter().enumerate() {
                    c.add((t + i) as u64 % 3 + 1);
                }
                for h in histograms {
                    h.record_f64(0.004 * (t + 1) as f64);
                }
                all_done.wait();
            });
        }
    });
    let snap = stats.snapshot();
    assert_eq!(snap.len(), 11_000);
    for (i, c) in counters.iter().enumerate() {
        let want: u64 = (0..THREADS).map(|t| (t + i) as u64 % 3 + 1).sum();
        assert_eq!(c.get(), want);
    }
    for h in &histograms {
        assert_eq!(h.snapshot().count(), THREADS as u64);
    }
    let memory = stats.memory();
    let used_slots: usize = 10_000 + 1_000 * (12 + 4);
    let chunks_per_shard = used_slots.div_ceil(1024);
    assert_eq!(memory.shards, THREADS);
    assert_eq!(memory.slot_bytes, THREADS * chunks_per_shard * 8 * 1024);
    eprintln!(
        "{used_slots} slots: {memory:?}, total {} KiB, per worker shard {} KiB",
        memory.total() / 1024,
        chunks_per_shard * 8
    );
}
