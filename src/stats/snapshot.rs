//! Point-in-time values: [`Snapshot`], [`HistogramSnapshot`], JSON (serde),
//! and the Prometheus and OpenMetrics text formats.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use super::buckets;
use super::layout::{self, Layout};
use super::registry::{Entry, MetricKind, hist_slots};

/// A histogram's distribution at one moment.
///
/// Percentiles are nearest-rank over the recorded samples, reported as the
/// midpoint of the bucket that holds the rank (capped at the exact maximum),
/// so they are within [`MAX_RELATIVE_ERROR`](super::MAX_RELATIVE_ERROR) of
/// the exact nearest-rank value.
///
/// A histogram with a bounded [`Layout`] keeps `f64` samples: its sum and
/// max are [`sum_f64`](Self::sum_f64) and [`max_f64`](Self::max_f64)
/// (`sum` and `max` are those, as `u64`), and its percentiles are the upper
/// bounds of the buckets that hold them (capped at the max), as Prometheus'
/// `histogram_quantile` reports them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    count: u64,
    sum: u64,
    max: u64,
    /// `(bucket index, samples)` for non-empty buckets, by index.
    buckets: Vec<(u32, u64)>,
    /// The bounds of a bounded layout; `None` for log-linear.
    bounds: Option<std::sync::Arc<[f64]>>,
    sum_f64: f64,
    max_f64: f64,
}

impl HistogramSnapshot {
    /// Builds a snapshot from a histogram's summed slot run
    /// (`layout.slots()` of them).
    pub(crate) fn from_slots(slots: &[u64], layout: &Layout) -> Self {
        debug_assert_eq!(slots.len(), layout.slots());
        let n = layout.buckets();
        let buckets = slots[..n]
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n != 0)
            .map(|(i, &n)| (i as u32, n))
            .collect();
        let count = slots[layout.count_slot()];
        match layout.bounds_arc() {
            None => {
                let (sum, max) = (slots[hist_slots::SUM], slots[hist_slots::MAX]);
                Self {
                    count,
                    sum,
                    max,
                    buckets,
                    bounds: None,
                    sum_f64: sum as f64,
                    max_f64: max as f64,
                }
            }
            Some(bounds) => {
                let sum_f64 = f64::from_bits(slots[layout.sum_slot()]);
                let max_f64 = layout::from_max_key(slots[layout.max_slot()]).unwrap_or(0.0);
                Self {
                    count,
                    // `as` saturates: negatives and NaN give 0.
                    sum: sum_f64 as u64,
                    max: max_f64 as u64,
                    buckets,
                    bounds: Some(bounds.clone()),
                    sum_f64,
                    max_f64,
                }
            }
        }
    }

    /// The bounds of a bounded layout (without `+Inf`); `None` for the
    /// log-linear layout.
    pub fn bounds(&self) -> Option<&[f64]> {
        self.bounds.as_deref()
    }

    /// Sum of samples as an `f64` (a bounded layout's own sum; the
    /// log-linear sum converted).
    pub fn sum_f64(&self) -> f64 {
        self.sum_f64
    }

    /// The largest sample as an `f64`; 0 when empty.
    pub fn max_f64(&self) -> f64 {
        self.max_f64
    }

    /// Adds `other`'s samples to this distribution, as if both had been
    /// recorded into one histogram: counts and sums add, the max is the
    /// larger. Merging snapshots of several histograms (or processes) gives
    /// the percentiles of all their samples together.
    ///
    /// ```
    /// let stats = latchfree::stats::Stats::new();
    /// let (a, b) = (stats.histogram("a_ns").unwrap(), stats.histogram("b_ns").unwrap());
    /// a.record(10);
    /// b.record(30);
    /// b.record(50);
    /// let mut all = a.snapshot();
    /// all.merge(&b.snapshot());
    /// assert_eq!((all.count(), all.sum(), all.max()), (3, 90, 50));
    /// assert_eq!(all.p50(), 30);
    /// ```
    ///
    /// Snapshots of different layouts merge their counts, sums and maxima
    /// only: `other`'s buckets are left out, since they do not line up.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.count == 0 && self.buckets.is_empty() && self.bounds.is_none() {
            self.bounds.clone_from(&other.bounds);
        }
        self.count = self.count.wrapping_add(other.count);
        self.sum = self.sum.wrapping_add(other.sum);
        self.max = self.max.max(other.max);
        self.sum_f64 += other.sum_f64;
        self.max_f64 = self.max_f64.max(other.max_f64);
        if self.bounds != other.bounds {
            return;
        }
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&(i, n)), Some(&&(j, m))) if i == j => {
                    a.next();
                    b.next();
                    (i, n.wrapping_add(m))
                }
                (Some(&&x), Some(&&y)) => {
                    if x.0 < y.0 {
                        a.next();
                        x
                    } else {
                        b.next();
                        y
                    }
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, Some(&&y)) => {
                    b.next();
                    y
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        self.buckets = merged;
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of samples (wrapping on overflow of `u64`).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The largest sample, exactly; 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean sample; 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The nearest-rank `q`-quantile (`q` clamped to `0.0..=1.0`); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for &(i, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return match &self.bounds {
                    None => buckets::midpoint(i as usize).min(self.max),
                    Some(bounds) => bounds
                        .get(i as usize)
                        .map_or(self.max, |&b| (b.ceil() as u64).min(self.max)),
                };
            }
        }
        self.max
    }

    /// Median.
    pub fn p50(&self) -> u64 {
        self.quantile(0.50)
    }
    /// 90th percentile.
    pub fn p90(&self) -> u64 {
        self.quantile(0.90)
    }
    /// 99th percentile.
    pub fn p99(&self) -> u64 {
        self.quantile(0.99)
    }
    /// 99.9th percentile.
    pub fn p999(&self) -> u64 {
        self.quantile(0.999)
    }

    /// Non-empty buckets as `(lowest value, highest value, samples)`. For
    /// a bounded layout, the whole numbers a bucket spans (a bucket narrower
    /// than 1 may show `lowest > highest`); see
    /// [`cumulative`](Self::cumulative) for its exact bounds.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.buckets.iter().map(|&(i, n)| {
            let i = i as usize;
            match &self.bounds {
                None => (buckets::lower_bound(i), buckets::upper_bound(i), n),
                Some(bounds) => {
                    let lo = i
                        .checked_sub(1)
                        .map_or(0, |j| (bounds[j].floor() as u64).saturating_add(1));
                    let hi = bounds.get(i).map_or(u64::MAX, |b| b.floor() as u64);
                    (lo, hi, n)
                }
            }
        })
    }

    /// Cumulative counts at upper bounds (Prometheus `le`), ending with
    /// `+Inf` and the total count: every bound of a bounded layout; for the
    /// log-linear layout, `0, 1, 3, 7, …, 2^k - 1` up to the first at or
    /// above the max (bucket edges fall on powers of two, so each count is
    /// exact).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = match &self.bounds {
            None => self
                .cumulative_le()
                .into_iter()
                .map(|(le, n)| (le as f64, n))
                .collect(),
            Some(bounds) => {
                let mut counts = vec![0u64; bounds.len()];
                for &(i, n) in &self.buckets {
                    if let Some(c) = counts.get_mut(i as usize) {
                        *c = n;
                    }
                }
                let mut seen = 0;
                bounds
                    .iter()
                    .zip(counts)
                    .map(|(&b, n)| {
                        seen += n;
                        (b, seen)
                    })
                    .collect()
            }
        };
        out.push((f64::INFINITY, self.count));
        out
    }

    /// Cumulative counts at the Prometheus `le` bounds `0, 1, 3, 7, …, 2^k - 1`
    /// up to the first bound at or above `max`. Bucket edges fall on powers of
    /// two, so each count is exact.
    fn cumulative_le(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut next = self.buckets.iter().peekable();
        let mut seen = 0;
        for k in 0..=64u32 {
            let le = if k == 64 { u64::MAX } else { (1u64 << k) - 1 };
            while let Some(&&(i, n)) = next.peek() {
                if buckets::upper_bound(i as usize) > le {
                    break;
                }
                seen += n;
                next.next();
            }
            out.push((le, seen));
            if le >= self.max {
                break;
            }
        }
        out
    }
}

impl Serialize for HistogramSnapshot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("HistogramSnapshot", 9)?;
        st.serialize_field("count", &self.count)?;
        match self.bounds {
            Some(_) => st.serialize_field("sum", &self.sum_f64)?,
            None => st.serialize_field("sum", &self.sum)?,
        }
        st.serialize_field("max", &self.max)?;
        st.serialize_field("mean", &self.mean())?;
        st.serialize_field("p50", &self.p50())?;
        st.serialize_field("p90", &self.p90())?;
        st.serialize_field("p99", &self.p99())?;
        st.serialize_field("p999", &self.p999())?;
        let buckets: Vec<[u64; 3]> = self.buckets().map(|(lo, hi, n)| [lo, hi, n]).collect();
        st.serialize_field("buckets", &buckets)?;
        st.end()
    }
}

/// The value of one metric in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MetricValue {
    /// A counter's total over all threads.
    Counter(u64),
    /// A gauge's last value.
    Gauge(f64),
    /// A histogram's distribution.
    Histogram(HistogramSnapshot),
}

impl MetricValue {
    /// The kind of metric this value belongs to.
    pub fn kind(&self) -> MetricKind {
        match self {
            MetricValue::Counter(_) => MetricKind::Counter,
            MetricValue::Gauge(_) => MetricKind::Gauge,
            MetricValue::Histogram(_) => MetricKind::Histogram,
        }
    }
}

/// Every series of a [`Stats`](super::Stats) at one moment, sorted by name,
/// then by label set.
///
/// Each thread's batches appear entirely or not at all. Different threads'
/// shards are read one after another, so the snapshot is not one instant
/// across threads; but every counter's total is at least its total in any
/// earlier snapshot taken by the same thread.
///
/// Serialises (serde) as
/// `{"counters": {series: n}, "gauges": {series: n}, "histograms": {series: {...}}}`
/// where a series is its name, followed by `{label="value",...}` when it has
/// labels (written as in the Prometheus format); renders the Prometheus text
/// format with [`to_prometheus`](Self::to_prometheus) and OpenMetrics with
/// [`to_openmetrics`](Self::to_openmetrics).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) entries: Arc<[Entry]>,
    pub(crate) values: Vec<MetricValue>,
}

/// One series of a [`Snapshot`]: a name, a label set and a value.
#[derive(Clone, Copy, Debug)]
pub struct Series<'a> {
    entry: &'a Entry,
    value: &'a MetricValue,
}

impl<'a> Series<'a> {
    /// The metric's name.
    pub fn name(&self) -> &'a str {
        &self.entry.name
    }

    /// The labels, sorted by label name.
    pub fn labels(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + 'a {
        self.entry.labels.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The value.
    pub fn value(&self) -> &'a MetricValue {
        self.value
    }

    /// The help text of the metric's name, if described.
    pub fn help(&self) -> Option<&'a str> {
        self.entry.help.as_deref()
    }

    /// The unit of the metric's name, if described.
    pub fn unit(&self) -> Option<&'a str> {
        self.entry.unit.as_deref()
    }
}

/// Runs `f` on a copy of `labels` sorted by label name, for a lookup by
/// label set in any order.
fn with_sorted<R>(labels: &[(&str, &str)], f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
    let mut sorted: Vec<(&str, &str)> = labels.to_vec();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    f(&sorted)
}

impl Snapshot {
    /// All series as `(name, value)`, sorted by name then labels. A name
    /// with several label sets appears once per series; see
    /// [`series`](Self::series) for the labels.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetricValue)> + '_ {
        self.entries
            .iter()
            .map(|e| &*e.name)
            .zip(self.values.iter())
    }

    /// All series with their labels, sorted by name, then label set.
    pub fn series(&self) -> impl ExactSizeIterator<Item = Series<'_>> + '_ {
        self.entries
            .iter()
            .zip(self.values.iter())
            .map(|(entry, value)| Series { entry, value })
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no metric is registered.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of metric `name` without labels, if registered.
    pub fn get(&self, name: &str) -> Option<&MetricValue> {
        self.get_with(name, &[])
    }

    /// The value of series `name{labels}` (labels in any order), if
    /// registered.
    pub fn get_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<&MetricValue> {
        let i = with_sorted(labels, |sorted| {
            self.entries
                .binary_search_by(|e| e.cmp_key(name, sorted))
                .ok()
        })?;
        self.values.get(i)
    }

    /// The total of counter `name` without labels (`None` if it is not a
    /// registered counter).
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counter_with(name, &[])
    }

    /// The total of counter series `name{labels}`.
    pub fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        match self.get_with(name, labels)? {
            MetricValue::Counter(n) => Some(*n),
            _ => None,
        }
    }

    /// The value of gauge `name` without labels (`None` if it is not a
    /// registered gauge).
    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.gauge_with(name, &[])
    }

    /// The value of gauge series `name{labels}`.
    pub fn gauge_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.get_with(name, labels)? {
            MetricValue::Gauge(n) => Some(*n),
            _ => None,
        }
    }

    /// The distribution of histogram `name` without labels (`None` if not a
    /// registered histogram).
    pub fn histogram(&self, name: &str) -> Option<&HistogramSnapshot> {
        self.histogram_with(name, &[])
    }

    /// The distribution of histogram series `name{labels}`.
    pub fn histogram_with(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<&HistogramSnapshot> {
        match self.get_with(name, labels)? {
            MetricValue::Histogram(h) => Some(h),
            _ => None,
        }
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    ///
    /// The series of one name form one block under one `# HELP` (when
    /// described) and `# TYPE` line. Labels are written sorted by label
    /// name, values escaped (`\\`, `\"`, `\n`). Histograms are cumulative
    /// `_bucket{…,le="…"}` lines ending in `+Inf`, then `_sum` and `_count`,
    /// each with the series' labels.
    pub fn to_prometheus(&self) -> String {
        self.render(Format::Prometheus)
    }

    /// Renders the OpenMetrics text format (1.0.0).
    ///
    /// As [`to_prometheus`](Self::to_prometheus), with the differences that
    /// format makes: a counter's family is named without `_total` and its
    /// sample with it (`# TYPE requests counter`, `requests_total 3`); a
    /// described unit is written as `# UNIT` when the name ends in `_` and
    /// the unit (OpenMetrics requires that suffix; otherwise the unit is
    /// left out); counters and histograms carry `_created` (when the series
    /// was registered, in seconds since the Unix epoch); the text ends with
    /// `# EOF`.
    pub fn to_openmetrics(&self) -> String {
        self.render(Format::OpenMetrics)
    }

    fn render(&self, format: Format) -> String {
        let om = format == Format::OpenMetrics;
        let mut out = String::with_capacity(64 * self.len() + 8);
        let mut labels = String::new();
        let mut previous: Option<&str> = None;
        for (entry, value) in self.entries.iter().zip(&self.values) {
            let name = &*entry.name;
            let counter_base = match (om, value) {
                (true, MetricValue::Counter(_)) => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            if previous != Some(name) {
                previous = Some(name);
                if let Some(help) = &entry.help {
                    let _ = writeln!(out, "# HELP {counter_base} {}", escape_help(help, om));
                }
                let _ = writeln!(out, "# TYPE {counter_base} {}", value.kind());
                if let Some(unit) = entry.unit.as_deref().filter(|u| {
                    om && counter_base
                        .strip_suffix(*u)
                        .is_some_and(|rest| rest.ends_with('_'))
                }) {
                    let _ = writeln!(out, "# UNIT {counter_base} {unit}");
                }
            }
            labels.clear();
            for (i, (k, v)) in entry.labels.iter().enumerate() {
                if i > 0 {
                    labels.push(',');
                }
                let _ = write!(labels, "{k}=\"");
                escape_label_value(&mut labels, v);
                labels.push('"');
            }
            let braced = |extra: &str| -> String {
                match (labels.is_empty(), extra.is_empty()) {
                    (true, true) => String::new(),
                    (true, false) => format!("{{{extra}}}"),
                    (false, true) => format!("{{{labels}}}"),
                    (false, false) => format!("{{{labels},{extra}}}"),
                }
            };
            let plain = braced("");
            match value {
                MetricValue::Counter(n) => {
                    let _ = writeln!(
                        out,
                        "{counter_base}{}{plain} {n}",
                        if om { "_total" } else { "" }
                    );
                    if om {
                        let _ = writeln!(out, "{counter_base}_created{plain} {}", entry.created);
                    }
                }
                MetricValue::Gauge(v) => {
                    let _ = writeln!(out, "{name}{plain} {}", FloatText(*v));
                }
                MetricValue::Histogram(h) if h.bounds.is_some() => {
                    for (le, n) in h.cumulative() {
                        let mut le = FloatText(le).to_string();
                        if om && !le.contains(['.', 'e', 'I', 'N']) {
                            le.push_str(".0");
                        }
                        let _ =
                            writeln!(out, "{name}_bucket{} {n}", braced(&format!("le=\"{le}\"")));
                    }
                    let _ = writeln!(out, "{name}_sum{plain} {}", FloatText(h.sum_f64));
                    let _ = writeln!(out, "{name}_count{plain} {}", h.count);
                    if om {
                        let _ = writeln!(out, "{name}_created{plain} {}", entry.created);
                    }
                }
                MetricValue::Histogram(h) => {
                    for (le, n) in h.cumulative_le() {
                        let le = if om {
                            format!("{le}.0")
                        } else {
                            le.to_string()
                        };
                        let _ =
                            writeln!(out, "{name}_bucket{} {n}", braced(&format!("le=\"{le}\"")));
                    }
                    let _ = writeln!(out, "{name}_bucket{} {}", braced("le=\"+Inf\""), h.count);
                    let _ = writeln!(out, "{name}_sum{plain} {}", h.sum);
                    let _ = writeln!(out, "{name}_count{plain} {}", h.count);
                    if om {
                        let _ = writeln!(out, "{name}_created{plain} {}", entry.created);
                    }
                }
            }
        }
        if om {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// An `f64` as the text formats write it: `NaN`, `+Inf`, `-Inf`, or the
/// shortest decimal that reads back as the same value (in exponent form
/// from 1e16 on, so `f64::MAX` is not 309 digits).
struct FloatText(f64);

impl std::fmt::Display for FloatText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            f64::INFINITY => f.write_str("+Inf"),
            f64::NEG_INFINITY => f.write_str("-Inf"),
            v if v.abs() < 1e16 => write!(f, "{v}"),
            v => write!(f, "{v:e}"),
        }
    }
}

/// The text formats [`Snapshot`] renders.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Prometheus,
    OpenMetrics,
}

/// Escapes a `# HELP` text: `\\` and `\n`, and in OpenMetrics also `\"`.
fn escape_help(help: &str, openmetrics: bool) -> String {
    let mut out = String::with_capacity(help.len());
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if openmetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// Appends a label value, escaped: `\\`, `\"` and `\n`.
pub(crate) fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A series written as in the Prometheus format: `name` or
/// `name{k="v",...}` (the serde key of a series).
fn series_key(entry: &Entry) -> String {
    let mut key = entry.name.to_string();
    if !entry.labels.is_empty() {
        key.push('{');
        for (i, (k, v)) in entry.labels.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(k);
            key.push_str("=\"");
            escape_label_value(&mut key, v);
            key.push('"');
        }
        key.push('}');
    }
    key
}

impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Only<'a, F>(&'a Snapshot, F);
        impl<F: Fn(&MetricValue) -> bool> Serialize for Only<'_, F> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                for series in self.0.series().filter(|s| (self.1)(s.value())) {
                    let key = series_key(series.entry);
                    match series.value() {
                        MetricValue::Counter(n) => map.serialize_entry(&key, n)?,
                        MetricValue::Gauge(n) => map.serialize_entry(&key, n)?,
                        MetricValue::Histogram(h) => map.serialize_entry(&key, h)?,
                    }
                }
                map.end()
            }
        }
        let mut st = s.serialize_struct("Snapshot", 3)?;
        st.serialize_field(
            "counters",
            &Only(self, |v: &MetricValue| matches!(v, MetricValue::Counter(_))),
        )?;
        st.serialize_field(
            "gauges",
            &Only(self, |v: &MetricValue| matches!(v, MetricValue::Gauge(_))),
        )?;
        st.serialize_field(
            "histograms",
            &Only(self, |v: &MetricValue| {
                matches!(v, MetricValue::Histogram(_))
            }),
        )?;
        st.end()
    }
}

/// A histogram owned by one thread: plain slots, no sharing, fixed size
/// (one `u64` per bucket, the same log-linear buckets as [`Histogram`](super::Histogram)),
/// turned into a [`HistogramSnapshot`] at the end; snapshots of several
/// merge with [`HistogramSnapshot::merge`]. For a thread that times its
/// own calls (a benchmark's workers): memory stays flat however long it runs.
///
/// ```
/// let mut h = latchfree::stats::LocalHistogram::new();
/// for v in 1..=100 {
///     h.record(v);
/// }
/// assert_eq!(h.snapshot().count(), 100);
/// ```
#[derive(Clone, Debug)]
pub struct LocalHistogram {
    slots: Box<[u64]>,
}

impl Default for LocalHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            slots: vec![0u64; hist_slots::LEN].into_boxed_slice(),
        }
    }

    /// Records one sample.
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.slots[buckets::index(v)] += 1;
        self.slots[hist_slots::COUNT] += 1;
        self.slots[hist_slots::SUM] = self.slots[hist_slots::SUM].wrapping_add(v);
        self.slots[hist_slots::MAX] = self.slots[hist_slots::MAX].max(v);
    }

    /// The distribution recorded so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot::from_slots(&self.slots, &Layout::log_linear())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(samples: &[u64]) -> HistogramSnapshot {
        let mut h = LocalHistogram::new();
        for &v in samples {
            h.record(v);
        }
        h.snapshot()
    }

    #[test]
    fn merging_equals_recording_into_one() {
        let (a, b) = (
            [3u64, 70, 70, 5_000, 1 << 40],
            [1u64, 70, 900, 5_000, 5_001, 9],
        );
        let mut merged = hist(&a);
        merged.merge(&hist(&b));
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        assert_eq!(merged, hist(&all));
        let mut empty = HistogramSnapshot::default();
        empty.merge(&merged);
        assert_eq!(empty, merged);
    }

    #[test]
    fn quantiles_of_small_exact_values() {
        let h = hist(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(h.count(), 10);
        assert_eq!(h.sum(), 55);
        assert_eq!(h.p50(), 5);
        assert_eq!(h.p90(), 9);
        assert_eq!(h.quantile(1.0), 10);
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(hist(&[]).p99(), 0);
    }

    #[test]
    fn quantile_is_capped_at_the_exact_max() {
        let h = hist(&[1_000_001]);
        assert_eq!(h.p50(), 1_000_001);
    }

    #[test]
    fn cumulative_le_counts_are_exact_at_powers_of_two() {
        let h = hist(&[0, 1, 2, 3, 4, 100, 127, 128, 5000]);
        let le = h.cumulative_le();
        let at = |bound: u64| le.iter().find(|(b, _)| *b == bound).map(|&(_, n)| n);
        assert_eq!(at(0), Some(1));
        assert_eq!(at(1), Some(2));
        assert_eq!(at(3), Some(4));
        assert_eq!(at(127), Some(7));
        assert_eq!(at(255), Some(8));
        assert_eq!(le.last().map(|&(b, n)| (b >= 5000, n)), Some((true, 9)));
    }
}
