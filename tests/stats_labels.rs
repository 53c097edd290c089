//! Labelled series: identity (name plus label set, in any order), typed
//! errors for bad label names, and the Prometheus and OpenMetrics text of
//! labelled series, parsed back with `prometheus_parse` and, for hostile
//! label values that parser cannot read (it splits on `,` and `=`), with a
//! strict tokenizer of the format below.

use std::collections::BTreeMap;

use latchfree::stats::{MetricKind, MetricValue, Stats, StatsError};
use prometheus_parse::{Scrape, Value};

/// Label values that break naive exposition: every escape, the format's
/// own punctuation, and non-ASCII text.
const HOSTILE: &[&str] = &[
    "",
    "back\\slash",
    "quote\"d",
    "new\nline",
    "a,b=c}",
    "{le=\"1\"}",
    "\\\"\n\\n",
    "tab\tand space ",
    "naïve ☃",
    "#EOF",
];

#[test]
fn same_name_and_labels_in_any_order_is_one_series() {
    let stats = Stats::new();
    let a = stats
        .counter_with("req_total", &[("route", "/a"), ("code", "200")])
        .unwrap();
    let b = stats
        .counter_with("req_total", &[("code", "200"), ("route", "/a")])
        .unwrap();
    let other = stats
        .counter_with("req_total", &[("route", "/a"), ("code", "500")])
        .unwrap();
    let bare = stats.counter("req_total").unwrap();
    a.add(2);
    b.add(3);
    other.inc();
    bare.add(10);
    let snap = stats.snapshot();
    assert_eq!(
        snap.counter_with("req_total", &[("code", "200"), ("route", "/a")]),
        Some(5)
    );
    assert_eq!(
        snap.counter_with("req_total", &[("route", "/a"), ("code", "500")]),
        Some(1)
    );
    assert_eq!(snap.counter("req_total"), Some(10));
    // A subset or superset of a label set is another (unregistered) series.
    assert_eq!(snap.counter_with("req_total", &[("route", "/a")]), None);
    assert_eq!(
        snap.counter_with("req_total", &[("route", "/a"), ("code", "200"), ("x", "y")]),
        None
    );
    // A repeated pair is not the series with those pairs once.
    assert_eq!(
        snap.counter_with("req_total", &[("route", "/a"), ("route", "/a")]),
        None
    );
    assert_eq!(snap.len(), 3);
    let series: Vec<(String, Vec<(String, String)>)> = snap
        .series()
        .map(|s| {
            (
                s.name().to_owned(),
                s.labels()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            )
        })
        .collect();
    let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    // Sorted by name, then label set; labels sorted by label name.
    assert_eq!(
        series,
        vec![
            ("req_total".to_owned(), vec![]),
            (
                "req_total".to_owned(),
                owned(&[("code", "200"), ("route", "/a")])
            ),
            (
                "req_total".to_owned(),
                owned(&[("code", "500"), ("route", "/a")])
            ),
        ]
    );
}

#[test]
fn many_label_sets_stay_distinct() {
    let stats = Stats::new();
    for i in 0..2_000u64 {
        let (a, b) = (format!("{}", i % 37), format!("{}", i / 37));
        stats
            .counter_with("c_total", &[("a", &a), ("b", &b)])
            .unwrap()
            .add(i);
    }
    let snap = stats.snapshot();
    assert_eq!(snap.len(), 2_000);
    for i in 0..2_000u64 {
        let (a, b) = (format!("{}", i % 37), format!("{}", i / 37));
        assert_eq!(
            snap.counter_with("c_total", &[("b", &b), ("a", &a)]),
            Some(i)
        );
    }
}

#[test]
fn bad_label_names_and_kind_clashes_are_typed_errors() {
    let stats = Stats::new();
    for bad in ["", "9x", "a-b", "a b", "é", "__reserved", "a:b"] {
        assert_eq!(
            stats.counter_with("c_total", &[(bad, "v")]).unwrap_err(),
            StatsError::InvalidLabelName {
                name: "c_total".into(),
                label: bad.into()
            },
            "{bad:?}"
        );
    }
    assert_eq!(
        stats.histogram_with("h", &[("le", "1")]).unwrap_err(),
        StatsError::InvalidLabelName {
            name: "h".into(),
            label: "le".into()
        }
    );
    // `le` is only reserved on histograms.
    stats.gauge_with("g", &[("le", "1")]).unwrap();
    assert_eq!(
        stats
            .counter_with("c_total", &[("a", "1"), ("b", "2"), ("a", "3")])
            .unwrap_err(),
        StatsError::DuplicateLabel {
            name: "c_total".into(),
            label: "a".into()
        }
    );
    stats.counter_with("c_total", &[("a", "1")]).unwrap();
    // Another label set of a counter's name is still a counter.
    assert_eq!(
        stats.gauge_with("c_total", &[("a", "2")]).unwrap_err(),
        StatsError::KindMismatch {
            name: "c_total".into(),
            existing: MetricKind::Counter,
            requested: MetricKind::Gauge
        }
    );
    assert!(matches!(
        stats.histogram("c_total"),
        Err(StatsError::KindMismatch { .. })
    ));
    // Nothing was registered by the refusals.
    assert_eq!(stats.snapshot().len(), 2);
}

/// Undoes label value escaping (`\\`, `\"`, `\n`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('n') => out.push('\n'),
                other => panic!("bad escape \\{other:?} in {s:?}"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One sample line of the text format, tokenised strictly: a name, an
/// optional `{k="v",...}` block with escaped values, a space and a value.
/// Panics on anything else, so a malformed line fails the test.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>, String) {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line:?}"));
    let name = line[..name_end].to_owned();
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "{line:?}"
    );
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            let eq = rest.find('=').unwrap_or_else(|| panic!("{line:?}"));
            let key = &rest[..eq];
            assert!(
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name {key:?} in {line:?}"
            );
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("{line:?}"));
            // The value ends at the first `"` not escaped.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in rest.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    (false, '\n') => panic!("raw newline in {line:?}"),
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated value in {line:?}"));
            labels.push((key.to_owned(), unescape(&rest[..end])));
            rest = &rest[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else {
                rest = rest.strip_prefix('}').unwrap_or_else(|| panic!("{line:?}"));
                break;
            }
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{line:?}"));
    assert!(!value.contains(' '), "{line:?}");
    (name, labels, value.to_owned())
}

fn hostile_stats() -> Stats {
    let stats = Stats::new();
    for (i, v) in HOSTILE.iter().enumerate() {
        stats
            .counter_with("hostile_total", &[("v", v), ("i", &i.to_string())])
            .unwrap()
            .add(i as u64 + 1);
        stats
            .histogram_with("hostile_ns", &[("v", v)])
            .unwrap()
            .record(100 * i as u64);
    }
    stats
        .describe("hostile_total", "Values \"that\" break\nparsers \\")
        .unwrap();
    stats
}

#[test]
fn hostile_label_values_round_trip_through_both_formats() {
    let stats = hostile_stats();
    let snap = stats.snapshot();
    for text in [snap.to_prometheus(), snap.to_openmetrics()] {
        let om = text.ends_with("# EOF\n");
        let mut counters = BTreeMap::new();
        let mut counts = BTreeMap::new();
        let mut types = Vec::new();
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                if let Some(t) = comment.strip_prefix("TYPE ") {
                    types.push(t.to_owned());
                }
                continue;
            }
            let (name, labels, value) = parse_sample(line);
            let get = |k: &str| labels.iter().find(|(l, _)| l == k).map(|(_, v)| v.clone());
            match name.as_str() {
                "hostile_total" => {
                    counters.insert(get("v").unwrap(), value.parse::<u64>().unwrap());
                }
                "hostile_ns_count" => {
                    counts.insert(get("v").unwrap(), value.parse::<u64>().unwrap());
                }
                "hostile_ns_bucket" => assert!(get("le").is_some(), "{line:?}"),
                _ => {}
            }
        }
        // One TYPE line per family, whatever the number of series.
        let (counter_family, sample) = if om {
            ("hostile counter", "hostile_total")
        } else {
            ("hostile_total counter", "hostile_total")
        };
        assert_eq!(types, ["hostile_ns histogram", counter_family], "{sample}");
        for (i, v) in HOSTILE.iter().enumerate() {
            assert_eq!(counters.get(*v), Some(&(i as u64 + 1)), "{v:?} in {text}");
            assert_eq!(counts.get(*v), Some(&1), "{v:?}");
        }
    }
}

#[test]
fn labelled_series_parse_back_with_prometheus_parse() {
    let stats = Stats::new();
    for (cache, hits) in [("query", 7u64), ("model", 3)] {
        stats
            .counter_with("cache_hits_total", &[("cache", cache)])
            .unwrap()
            .add(hits);
        stats
            .gauge_with("cache_entries", &[("cache", cache)])
            .unwrap()
            .set(-(hits as f64));
        let h = stats
            .histogram_with("cache_load_ns", &[("cache", cache), ("tier", "disk")])
            .unwrap();
        for v in 0..hits {
            h.record(v * 1000);
        }
    }
    stats
        .describe("cache_hits_total", "Lookups that hit.")
        .unwrap();
    let snap = stats.snapshot();
    let text = snap.to_prometheus();
    assert_eq!(text.matches("# TYPE cache_hits_total counter").count(), 1);
    assert_eq!(text.matches("# HELP cache_hits_total").count(), 1);
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut seen = 0;
    for sample in &scrape.samples {
        let cache = sample.labels.get("cache").unwrap().to_owned();
        // The parser reads `_sum` and `_count` as untyped samples of their own.
        if let Value::Untyped(got) = sample.value {
            let (base, sum) = match sample.metric.strip_suffix("_sum") {
                Some(base) => (base, true),
                None => (sample.metric.strip_suffix("_count").unwrap(), false),
            };
            let h = snap
                .histogram_with(base, &[("tier", "disk"), ("cache", &cache)])
                .unwrap();
            assert_eq!(got, if sum { h.sum() } else { h.count() } as f64);
            seen += 1;
            continue;
        }
        let want = snap
            .series()
            .find(|s| s.name() == sample.metric && s.labels().any(|(_, v)| v == cache))
            .unwrap_or_else(|| panic!("{sample:?}"));
        match (&sample.value, want.value()) {
            (Value::Counter(got), MetricValue::Counter(n)) => assert_eq!(*got, *n as f64),
            (Value::Gauge(got), MetricValue::Gauge(n)) => assert_eq!(*got, *n),
            (Value::Histogram(buckets), MetricValue::Histogram(h)) => {
                assert_eq!(sample.labels.get("tier"), Some("disk"));
                let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
                assert_eq!(inf.count, h.count() as f64);
            }
            other => panic!("{other:?}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 10);
    // `_sum` and `_count` carry the series' labels.
    assert!(text.contains("cache_load_ns_count{cache=\"model\",tier=\"disk\"} 3"));
    assert!(text.contains("cache_load_ns_bucket{cache=\"model\",tier=\"disk\",le=\"+Inf\"} 3"));
}

#[test]
fn openmetrics_names_counters_units_created_and_ends_with_eof() {
    let stats = Stats::new();
    stats
        .counter_with("requests_total", &[("route", "/")])
        .unwrap()
        .add(4);
    stats.counter("jobs").unwrap().add(2);
    stats.gauge("queue_bytes").unwrap().set(512.0);
    stats.histogram("latency_seconds").unwrap().record(3);
    stats.describe_unit("queue_bytes", "bytes").unwrap();
    stats.describe_unit("latency_seconds", "seconds").unwrap();
    // A unit that is not the name's suffix cannot be written as `# UNIT`.
    stats.describe_unit("jobs", "seconds").unwrap();
    let text = stats.snapshot().to_openmetrics();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"));
    assert_eq!(text.matches("# EOF").count(), 1);
    for want in [
        "# TYPE requests counter",
        "requests_total{route=\"/\"} 4",
        "# TYPE jobs counter",
        "jobs_total 2",
        "# TYPE queue_bytes gauge",
        "# UNIT queue_bytes bytes",
        "queue_bytes 512",
        "# TYPE latency_seconds histogram",
        "# UNIT latency_seconds seconds",
        "latency_seconds_count 1",
    ] {
        assert!(lines.contains(&want), "{want:?} missing from\n{text}");
    }
    assert!(!text.contains("# UNIT jobs"), "{text}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for prefix in [
        "requests_created{route=\"/\"} ",
        "jobs_created ",
        "latency_seconds_created ",
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix:?} missing from\n{text}"));
        let created: f64 = line[prefix.len()..].parse().unwrap();
        assert!((now - 3600.0..=now + 1.0).contains(&created), "{line}");
    }
    // Gauges have no `_created`.
    assert!(!text.contains("queue_bytes_created"), "{text}");
    // Every sample line tokenises.
    for line in lines.iter().filter(|l| !l.starts_with('#')) {
        parse_sample(line);
    }
}

#[test]
fn json_keys_name_the_labels() {
    let stats = Stats::new();
    stats
        .counter_with("c_total", &[("k", "a\"b")])
        .unwrap()
        .add(2);
    stats.counter("c_total").unwrap().add(1);
    let json = serde_json::to_value(stats.snapshot()).unwrap();
    assert_eq!(json["counters"]["c_total"], 1);
    assert_eq!(json["counters"]["c_total{k=\"a\\\"b\"}"], 2);
}
