//! A [`metrics::Recorder`] over a [`Stats`] (feature `metrics`): what the
//! `metrics` facade's `counter!`, `gauge!` and `histogram!` record lands in
//! the sharded slots, labelled.
//!
//! # How
//!
//! The facade asks the recorder for a handle per call site
//! (`register_counter(key, metadata)`), and the handle is an
//! `Arc<dyn CounterFn>`. Ours is `Arc<stats::Counter>`: the facade's
//! `increment` is then the per-thread slot increment, a load and a store of
//! this thread's shard. Registration is a lookup by name and label set
//! under the registry's read lock (the label set is hashed pair by pair, so
//! no sorted copy is made), and a new series takes the write lock once.
//!
//! * Names and label names the facade accepts but Prometheus does not (a
//!   `.` in `http.requests`, a leading digit) are made valid the way the
//!   Prometheus exporter makes them: each invalid character becomes `_`,
//!   and a leading digit gets a `_` before it. Label values are kept as
//!   they are (the text formats escape them).
//! * A registration the [`Stats`] refuses (another kind under the name, a
//!   full slot space) returns the facade's no-op handle, never a panic, and
//!   is counted in [`MetricsRecorder::rejected`].
//! * `describe_*` set the help text and the unit (its `Unit::as_str`, such
//!   as `seconds`) of the name, before or after it is registered.
//! * Histograms use one bounded [`Layout`] for every series (default:
//!   Prometheus' default buckets, 5 ms to 10 s), so a labelled histogram
//!   takes 15 slots, not 1,923; choose another with
//!   [`MetricsRecorder::histogram_layout`].
//! * `Counter::absolute(v)` raises the total to at least `v` by adding the
//!   difference to the calling thread's shard: exact from one thread, and
//!   never lowering the total from several (two racing calls may both add,
//!   overshooting `v`).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;
use metrics::{Key, KeyName, Metadata, SharedString, Unit};

use super::{Counter, Gauge, Histogram, Layout, Stats};

/// Prometheus' default histogram buckets, in seconds.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Records the `metrics` facade into a [`Stats`]. See the module docs.
///
/// ```
/// use latchfree::stats::{MetricsRecorder, Stats};
///
/// let stats = Stats::new();
/// let recorder = MetricsRecorder::new(&stats);
/// metrics::with_local_recorder(&recorder, || {
///     metrics::describe_counter!("requests_total", "Requests served.");
///     let hits = metrics::counter!("requests_total", "route" => "/a");
///     hits.increment(2);
///     metrics::counter!("requests_total", "route" => "/b").increment(1);
///     metrics::gauge!("in_flight").set(3.0);
///     metrics::histogram!("latency_seconds").record(0.02);
/// });
/// let snap = stats.snapshot();
/// assert_eq!(snap.counter_with("requests_total", &[("route", "/a")]), Some(2));
/// assert_eq!(snap.gauge("in_flight"), Some(3.0));
/// assert!(snap.to_prometheus().contains("# HELP requests_total Requests served."));
/// ```
#[derive(Debug)]
pub struct MetricsRecorder {
    stats: Stats,
    layout: Layout,
    rejected: AtomicU64,
}

impl MetricsRecorder {
    /// A recorder into `stats` (a clone of the handle: both see the same
    /// metrics), with histograms on [`DEFAULT_BUCKETS`].
    pub fn new(stats: &Stats) -> Self {
        Self {
            stats: stats.clone(),
            layout: Layout::fixed(DEFAULT_BUCKETS).expect("the default buckets are valid"),
            rejected: AtomicU64::new(0),
        }
    }

    /// The bucket layout of every histogram this recorder registers.
    #[must_use]
    pub fn histogram_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// The [`Stats`] it records into.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Registrations refused so far (each got a no-op handle).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f` with the key's name and labels made valid (see the module
    /// docs); allocates only for names that need fixing or more than 8
    /// labels.
    fn with_key<R>(&self, key: &Key, f: impl FnOnce(&str, &[(&str, &str)]) -> R) -> R {
        let name = sanitize(key.name(), true);
        let mut inline: ArrayVec<(Cow<'_, str>, &str), 8> = ArrayVec::new();
        let mut spilled = Vec::new();
        for label in key.labels() {
            let pair = (sanitize(label.key(), false), label.value());
            if let Err(full) = inline.try_push(pair) {
                spilled.push(full.element());
            }
        }
        let pairs: ArrayVec<(&str, &str), 8> = inline.iter().map(|(k, v)| (&**k, *v)).collect();
        if spilled.is_empty() {
            f(&name, &pairs)
        } else {
            let all: Vec<(&str, &str)> = pairs
                .iter()
                .copied()
                .chain(spilled.iter().map(|(k, v)| (&**k, *v)))
                .collect();
            f(&name, &all)
        }
    }

    fn describe(&self, key: &KeyName, unit: Option<Unit>, description: &SharedString) {
        let name = sanitize(key.as_str(), true);
        let unit = unit.map(|u| u.as_str()).filter(|u| !u.is_empty());
        let described =
            self.stats
                .core
                .registry_mut()
                .describe_family(&name, Some(description.as_ref()), unit);
        if described.is_err() {
            self.reject();
        }
    }
}

/// `name` with every character Prometheus does not allow replaced by `_`
/// (`:` is allowed in metric names only), and `_` before a leading digit.
fn sanitize(name: &str, metric: bool) -> Cow<'_, str> {
    let ok = |i: usize, c: char| {
        c.is_ascii_alphabetic() || c == '_' || (metric && c == ':') || (i > 0 && c.is_ascii_digit())
    };
    if !name.is_empty() && name.chars().enumerate().all(|(i, c)| ok(i, c)) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if ok(1, c) { c } else { '_' }));
    Cow::Owned(out)
}

impl metrics::Recorder for MetricsRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(&key, unit, &description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(&key, unit, &description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(&key, unit, &description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> metrics::Counter {
        match self.with_key(key, |name, labels| self.stats.counter_with(name, labels)) {
            Ok(counter) => metrics::Counter::from_arc(Arc::new(counter)),
            Err(_) => {
                self.reject();
                metrics::Counter::noop()
            }
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> metrics::Gauge {
        match self.with_key(key, |name, labels| self.stats.gauge_with(name, labels)) {
            Ok(gauge) => metrics::Gauge::from_arc(Arc::new(gauge)),
            Err(_) => {
                self.reject();
                metrics::Gauge::noop()
            }
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        let registered = self.with_key(key, |name, labels| {
            self.stats.histogram_with_layout(name, labels, &self.layout)
        });
        match registered {
            Ok(histogram) => metrics::Histogram::from_arc(Arc::new(histogram)),
            Err(_) => {
                self.reject();
                metrics::Histogram::noop()
            }
        }
    }
}

impl metrics::CounterFn for Counter {
    #[inline]
    fn increment(&self, value: u64) {
        self.add(value);
    }

    fn absolute(&self, value: u64) {
        let now = self.get();
        if value > now {
            self.add(value - now);
        }
    }
}

impl metrics::GaugeFn for Gauge {
    #[inline]
    fn increment(&self, value: f64) {
        self.add(value);
    }

    #[inline]
    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    #[inline]
    fn set(&self, value: f64) {
        Gauge::set(self, value);
    }
}

impl metrics::HistogramFn for Histogram {
    #[inline]
    fn record(&self, value: f64) {
        self.record_f64(value);
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_valid_like_the_prometheus_exporter() {
        assert!(matches!(sanitize("http_requests", true), Cow::Borrowed(_)));
        assert_eq!(sanitize("http.requests", true), "http_requests");
        assert_eq!(sanitize("ns:x", true), "ns:x");
        assert_eq!(sanitize("ns:x", false), "ns_x");
        assert_eq!(sanitize("9lives", true), "_9lives");
        assert_eq!(sanitize("", false), "_");
        assert_eq!(sanitize("é-x", false), "__x");
    }
}
