//! `Snapshot::to_prometheus` and the serde (JSON) form of a `Snapshot`.
//!
//! The Prometheus text is parsed back with the `prometheus_parse` crate and
//! compared with the snapshot it came from, and the format rules are also
//! checked line by line here (the parser is lenient: it skips lines it does
//! not understand, so a parse alone would not catch a malformed line).

use std::collections::{BTreeMap, HashMap, HashSet};

use latchfree::stats::{MetricValue, Snapshot, Stats};
use prometheus_parse::{Scrape, Value};

/// Help text with a backslash and a newline, which the format escapes.
const REQUESTS_HELP: &str = "Requests served.\nPaths like C:\\srv\\www count too.";
const LATENCY_HELP: &str = "Time per request, in ns (\\ and \\n are literal here).";

/// Samples recorded in `latency_ns`.
fn latency_samples() -> Vec<u64> {
    let mut v: Vec<u64> = (0..200).map(|i| i * i * 37 % 100_003).collect();
    v.extend([0, 1, 2, 3, 63, 64, 127, 128, 1 << 20, (1 << 20) - 1]);
    v
}

/// Samples recorded in `huge`: the extremes of `u64`.
fn huge_samples() -> Vec<u64> {
    vec![0, 1 << 40, 1 << 53, u64::MAX]
}

/// A `Stats` with counters, gauges (one negative), histograms (one empty) and
/// help texts; with `colon`, also a metric whose name contains `:` (valid
/// Prometheus, but not understood by `prometheus_parse`).
fn populated(colon: bool) -> Stats {
    let stats = Stats::new();
    stats.counter("requests_total").unwrap().add(12_345);
    stats.counter("zero_total").unwrap();
    stats.counter("big_total").unwrap().add((1 << 53) - 1);
    stats.gauge("temperature_celsius").unwrap().set(-42.5);
    stats.gauge("connections").unwrap().set(7.0);
    stats.gauge("lowest").unwrap().set(f64::MIN);
    let latency = stats.histogram("latency_ns").unwrap();
    for v in latency_samples() {
        latency.record(v);
    }
    stats.histogram("empty_ns").unwrap();
    let huge = stats.histogram("huge").unwrap();
    for v in huge_samples() {
        huge.record(v);
    }
    stats.describe("requests_total", REQUESTS_HELP).unwrap();
    stats.describe("latency_ns", LATENCY_HELP).unwrap();
    if colon {
        stats.counter("app:jobs_total").unwrap().add(3);
    }
    stats
}

/// Undoes the HELP escaping (`\\` and `\n`).
fn unescape_help(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                other => panic!("bad escape \\{other:?} in HELP text {s:?}"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Number of samples `<= le`.
fn at_most(samples: &[u64], le: f64) -> u64 {
    samples.iter().filter(|&&v| (v as f64) <= le).count() as u64
}

#[test]
fn prometheus_text_parses_back_to_the_snapshot() {
    let stats = populated(false);
    let snap = stats.snapshot();
    let text = snap.to_prometheus();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();

    // HELP texts survive escaping.
    assert_eq!(scrape.docs.len(), 2, "{:?}", scrape.docs);
    assert_eq!(unescape_help(&scrape.docs["requests_total"]), REQUESTS_HELP);
    assert_eq!(unescape_help(&scrape.docs["latency_ns"]), LATENCY_HELP);

    let mut by_name: HashMap<&str, &Value> = HashMap::new();
    for sample in &scrape.samples {
        assert!(sample.labels.is_empty() || matches!(sample.value, Value::Histogram(_)));
        let previous = by_name.insert(sample.metric.as_str(), &sample.value);
        assert!(previous.is_none(), "{} appears twice", sample.metric);
    }
    // Per metric: one sample for a counter or gauge; for a histogram the
    // bucket series plus `_sum` and `_count`.
    let expected_samples: usize = snap
        .iter()
        .map(|(_, v)| {
            if let MetricValue::Histogram(_) = v {
                3
            } else {
                1
            }
        })
        .sum();
    assert_eq!(scrape.samples.len(), expected_samples, "{text}");

    let samples_of: HashMap<&str, Vec<u64>> = [
        ("latency_ns", latency_samples()),
        ("empty_ns", vec![]),
        ("huge", huge_samples()),
    ]
    .into_iter()
    .collect();

    for (name, value) in snap.iter() {
        match value {
            MetricValue::Counter(n) => {
                assert_eq!(
                    by_name.get(name),
                    Some(&&Value::Counter(*n as f64)),
                    "{name}"
                );
            }
            MetricValue::Gauge(n) => {
                assert_eq!(by_name.get(name), Some(&&Value::Gauge(*n)), "{name}");
            }
            MetricValue::Histogram(h) => {
                let Some(Value::Histogram(buckets)) = by_name.get(name) else {
                    panic!("{name}: no histogram sample in\n{text}");
                };
                let recorded = &samples_of[name];
                assert!(!buckets.is_empty());
                let mut previous: Option<(f64, f64)> = None;
                for b in buckets {
                    if let Some((le, count)) = previous {
                        assert!(b.less_than > le, "{name}: le not increasing");
                        assert!(b.count >= count, "{name}: cumulative count decreased");
                    }
                    if b.less_than.is_finite() {
                        // Bounds are 2^k - 1, bucket edges, so counts are exact.
                        assert_eq!(
                            b.count,
                            at_most(recorded, b.less_than) as f64,
                            "{name}: le={}",
                            b.less_than
                        );
                    }
                    previous = Some((b.less_than, b.count));
                }
                let last = buckets.last().unwrap();
                assert_eq!(last.less_than, f64::INFINITY, "{name}: last le is +Inf");
                assert_eq!(last.count, h.count() as f64, "{name}: +Inf bucket == count");
                // The finite bounds reach the max (so +Inf adds nothing).
                let finite_top = &buckets[buckets.len() - 2];
                assert!(finite_top.less_than >= h.max() as f64);
                assert_eq!(finite_top.count, last.count);

                assert_eq!(h.count(), recorded.len() as u64);
                let sum = recorded.iter().fold(0u64, |a, &v| a.wrapping_add(v));
                assert_eq!(h.sum(), sum);
                assert_eq!(
                    by_name.get(format!("{name}_sum").as_str()),
                    Some(&&Value::Untyped(h.sum() as f64)),
                    "{name}_sum"
                );
                assert_eq!(
                    by_name.get(format!("{name}_count").as_str()),
                    Some(&&Value::Untyped(h.count() as f64)),
                    "{name}_count"
                );
            }
            other => panic!("{name}: a metric kind this test does not know: {other:?}"),
        }
    }
    // The values are the ones written, not just self-consistent.
    assert_eq!(by_name["requests_total"], &Value::Counter(12_345.0));
    assert_eq!(by_name["temperature_celsius"], &Value::Gauge(-42.5));
    assert_eq!(by_name["lowest"], &Value::Gauge(f64::MIN));
    assert_eq!(
        by_name["big_total"],
        &Value::Counter(((1u64 << 53) - 1) as f64)
    );
}

/// The exposition format rules, checked on the raw text.
fn check_format(text: &str) -> BTreeMap<String, String> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "last line unterminated"
    );
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    // The family whose samples are being listed, and its bucket state.
    let mut current: Option<(String, String)> = None;
    let mut last_le: Option<f64> = None;
    let mut saw_inf = false;
    let mut inf_count: Option<String> = None;
    let mut sum_seen = false;

    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in\n{text}");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_metric_name(name), "{name:?}");
            assert!(!types.contains_key(name), "HELP {name} after its TYPE");
            assert!(helped.insert(name.to_owned()), "two HELP lines for {name}");
            unescape_help(help); // panics on an invalid escape
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((family, kind)) = &current
                && kind == "histogram"
            {
                assert!(saw_inf && sum_seen, "{family}: incomplete histogram");
            }
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_metric_name(name), "{name:?}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "{name}: type {kind}"
            );
            let previous = types.insert(name.to_owned(), kind.to_owned());
            assert!(previous.is_none(), "two TYPE lines for {name}");
            current = Some((name.to_owned(), kind.to_owned()));
            (last_le, saw_inf, inf_count, sum_seen) = (None, false, None, false);
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");

        // A sample: `name value` or `name{le="…"} value`.
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        // Integers for counters and histograms; gauges are floats.
        assert!(
            value.parse::<i128>().is_ok()
                || (current.as_ref().is_some_and(|(_, kind)| kind == "gauge")
                    && value.parse::<f64>().is_ok_and(f64::is_finite)),
            "value {value:?} in {line:?}"
        );
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, Some(labels.strip_suffix('}').expect("labels }"))),
            None => (series, None),
        };
        assert!(is_metric_name(name), "sample name {name:?}");
        let (family, kind) = current
            .as_ref()
            .unwrap_or_else(|| panic!("sample {line:?} before any # TYPE"));
        match kind.as_str() {
            "counter" | "gauge" => {
                assert_eq!(name, family, "sample outside its family's group");
                assert!(labels.is_none());
            }
            _ => {
                let suffix = name
                    .strip_prefix(family.as_str())
                    .unwrap_or_else(|| panic!("sample {name} inside family {family}"));
                match suffix {
                    "_bucket" => {
                        assert!(!saw_inf && !sum_seen, "{family}: bucket after +Inf/_sum");
                        let le = labels
                            .and_then(|l| l.strip_prefix("le=\""))
                            .and_then(|l| l.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("bucket without le: {line:?}"));
                        let le_value = if le == "+Inf" {
                            saw_inf = true;
                            inf_count = Some(value.to_owned());
                            f64::INFINITY
                        } else {
                            assert!(le.parse::<u64>().is_ok(), "le {le:?}");
                            le.parse::<f64>().unwrap()
                        };
                        if let Some(previous) = last_le {
                            assert!(le_value > previous, "{family}: le {le} not increasing");
                        }
                        last_le = Some(le_value);
                    }
                    "_sum" => {
                        assert!(saw_inf && !sum_seen, "{family}: _sum placement");
                        assert!(labels.is_none());
                        sum_seen = true;
                    }
                    "_count" => {
                        assert!(sum_seen, "{family}: _count before _sum");
                        assert!(labels.is_none());
                        assert_eq!(Some(value), inf_count.as_deref(), "{family}: _count");
                    }
                    other => panic!("{family}: unexpected sample suffix {other:?}"),
                }
            }
        }
    }
    if let Some((family, kind)) = &current
        && kind == "histogram"
    {
        assert!(saw_inf && sum_seen, "{family}: incomplete histogram");
    }
    types
}

#[test]
fn prometheus_text_follows_the_format_rules() {
    let snap: Snapshot = populated(true).snapshot();
    let text = snap.to_prometheus();
    let types = check_format(&text);
    // One family per metric, with the right type.
    let expected: BTreeMap<String, String> = snap
        .iter()
        .map(|(name, v)| (name.to_owned(), v.kind().to_string()))
        .collect();
    assert_eq!(types, expected);
    assert!(types.contains_key("app:jobs_total"));
    assert!(text.contains("\napp:jobs_total 3\n"), "{text}");
    // The help texts, escaped on one line each.
    assert!(
        text.contains(
            "# HELP requests_total Requests served.\\nPaths like C:\\\\srv\\\\www count too.\n"
        ),
        "{text}"
    );
    // The empty histogram: one finite bucket and +Inf, all zero.
    assert!(
        text.contains(
            "# TYPE empty_ns histogram\nempty_ns_bucket{le=\"0\"} 0\n\
             empty_ns_bucket{le=\"+Inf\"} 0\nempty_ns_sum 0\nempty_ns_count 0\n"
        ),
        "{text}"
    );
    // A histogram holding u64::MAX has a finite bound of u64::MAX.
    assert!(
        text.contains("huge_bucket{le=\"18446744073709551615\"} 4\n"),
        "{text}"
    );

    assert_eq!(Stats::new().snapshot().to_prometheus(), "");
}

#[test]
fn snapshot_json_has_the_documented_shape() {
    let snap = populated(true).snapshot();
    let json = serde_json::to_value(&snap).unwrap();
    let top = json.as_object().expect("an object");
    let keys: Vec<&str> = top.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 3);
    for key in ["counters", "gauges", "histograms"] {
        assert!(top[key].is_object(), "{key}");
    }
    let (mut counters, mut gauges, mut histograms) = (0, 0, 0);
    for (name, value) in snap.iter() {
        match value {
            MetricValue::Counter(n) => {
                counters += 1;
                assert_eq!(json["counters"][name].as_u64(), Some(*n), "{name}");
            }
            MetricValue::Gauge(n) => {
                gauges += 1;
                assert_eq!(json["gauges"][name].as_f64(), Some(*n), "{name}");
            }
            MetricValue::Histogram(h) => {
                histograms += 1;
                let obj = json["histograms"][name].as_object().expect(name);
                let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
                fields.sort_unstable();
                assert_eq!(
                    fields,
                    [
                        "buckets", "count", "max", "mean", "p50", "p90", "p99", "p999", "sum"
                    ]
                );
                assert_eq!(obj["count"].as_u64(), Some(h.count()));
                assert_eq!(obj["sum"].as_u64(), Some(h.sum()));
                assert_eq!(obj["max"].as_u64(), Some(h.max()));
                assert_eq!(obj["mean"].as_f64(), Some(h.mean()));
                assert_eq!(obj["p50"].as_u64(), Some(h.p50()));
                assert_eq!(obj["p90"].as_u64(), Some(h.p90()));
                assert_eq!(obj["p99"].as_u64(), Some(h.p99()));
                assert_eq!(obj["p999"].as_u64(), Some(h.p999()));
                let buckets: Vec<[u64; 3]> = obj["buckets"]
                    .as_array()
                    .expect("buckets array")
                    .iter()
                    .map(|b| {
                        let b = b.as_array().expect("[lo, hi, n]");
                        assert_eq!(b.len(), 3);
                        [0, 1, 2].map(|i| b[i].as_u64().expect("u64"))
                    })
                    .collect();
                let expected: Vec<[u64; 3]> = h.buckets().map(|(lo, hi, n)| [lo, hi, n]).collect();
                assert_eq!(buckets, expected, "{name}");
            }
            other => panic!("{name}: a metric kind this test does not know: {other:?}"),
        }
    }
    assert_eq!(json["counters"].as_object().unwrap().len(), counters);
    assert_eq!(json["gauges"].as_object().unwrap().len(), gauges);
    assert_eq!(json["histograms"].as_object().unwrap().len(), histograms);
    assert_eq!((counters, gauges, histograms), (4, 3, 3));

    // Concrete values, not just agreement with the snapshot.
    assert_eq!(json["counters"]["requests_total"], 12_345);
    assert_eq!(json["counters"]["app:jobs_total"], 3);
    assert_eq!(json["gauges"]["temperature_celsius"], -42.5);
    assert_eq!(json["gauges"]["lowest"], f64::MIN);
    assert_eq!(
        json["histograms"]["empty_ns"],
        serde_json::json!({
            "count": 0, "sum": 0, "max": 0, "mean": 0.0,
            "p50": 0, "p90": 0, "p99": 0, "p999": 0, "buckets": []
        })
    );
    assert_eq!(json["histograms"]["huge"]["max"], u64::MAX);
    assert_eq!(json["histograms"]["huge"]["count"], 4);
    assert_eq!(
        json["histograms"]["latency_ns"]["count"],
        latency_samples().len()
    );

    // The text form round-trips to the same value.
    let text = serde_json::to_string(&snap).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        json
    );
}
