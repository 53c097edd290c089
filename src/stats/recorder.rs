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
//! A per-call `counter!("x", "k" => v).increment(1)` asks for the handle
//! on every call. Going to the registry each time costs a read lock (a
//! read-modify-write of a line every thread shares), a hash of the name and
//! labels, an allocation for the handle's `Arc`, and two more shared
//! read-modify-writes for the `Stats`'s reference count: about 180 ns,
//! slower than the Prometheus exporter. So each thread keeps a cache of the
//! handles it was given, keyed by the facade's `Key` (whose hash the facade
//! computes once, at compile time for static keys) with a hasher that takes
//! that hash as it is. A hit is a thread-local lookup and a clone of an
//! `Arc` only this thread holds: no shared line is written. The cache
//! serves one recorder at a time per thread (a thread that records into
//! another empties it), holds up to [`THREAD_CACHE_ENTRIES`] handles per
//! kind, and keeps its `Stats` alive until the thread exits or switches.
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
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;
use metrics::{Key, KeyName, Metadata, SharedString, Unit};

use super::{Counter, DEFAULT_BUCKETS, Gauge, Histogram, Layout, Stats};

/// Handles of each kind a thread caches per recorder (see the module docs).
pub const THREAD_CACHE_ENTRIES: usize = 4096;

/// Hashes a facade `Key` by the hash it carries (its `Hash` writes exactly
/// that `u64`); other input is folded in FNV-style, never expected.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// One thread's handles, for the recorder numbered `recorder`.
#[derive(Default)]
struct ThreadCache {
    recorder: u64,
    counters: KeyMap<metrics::Counter>,
    gauges: KeyMap<metrics::Gauge>,
    histograms: KeyMap<metrics::Histogram>,
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::new(ThreadCache::default());
}

/// Numbers recorders, for the thread caches (0 is "none").
static NEXT_RECORDER: AtomicU64 = AtomicU64::new(1);

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
    id: u64,
    stats: Stats,
    layout: Layout,
    rejected: AtomicU64,
}

impl MetricsRecorder {
    /// A recorder into `stats` (a clone of the handle: both see the same
    /// metrics), with histograms on [`DEFAULT_BUCKETS`].
    pub fn new(stats: &Stats) -> Self {
        Self {
            // Relaxed: only distinct numbers are needed.
            id: NEXT_RECORDER.fetch_add(1, Ordering::Relaxed),
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

    /// The handle for `key` from this thread's cache, or `register`ed and
    /// cached. `pick` chooses the map of the handle's kind.
    #[inline]
    fn cached<H: Clone>(
        &self,
        key: &Key,
        pick: fn(&mut ThreadCache) -> &mut KeyMap<H>,
        register: impl FnOnce() -> Option<H>,
    ) -> Option<H> {
        let hit = CACHE
            .try_with(|cache| {
                let mut cache = cache.try_borrow_mut().ok()?;
                if cache.recorder != self.id {
                    *cache = ThreadCache {
                        recorder: self.id,
                        ..ThreadCache::default()
                    };
                }
                pick(&mut cache).get(key).cloned()
            })
            .ok()
            .flatten();
        if hit.is_some() {
            return hit;
        }
        let handle = register()?;
        let _ = CACHE.try_with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut()
                && cache.recorder == self.id
            {
                let map = pick(&mut cache);
                if map.len() < THREAD_CACHE_ENTRIES {
                    map.insert(key.clone(), handle.clone());
                }
            }
        });
        Some(handle)
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
        let register = || {
            let counter = self.with_key(key, |name, labels| self.stats.counter_with(name, labels));
            Some(metrics::Counter::from_arc(Arc::new(counter.ok()?)))
        };
        self.cached(key, |c| &mut c.counters, register)
            .unwrap_or_else(|| {
                self.reject();
                metrics::Counter::noop()
            })
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> metrics::Gauge {
        let register = || {
            let gauge = self.with_key(key, |name, labels| self.stats.gauge_with(name, labels));
            Some(metrics::Gauge::from_arc(Arc::new(gauge.ok()?)))
        };
        self.cached(key, |c| &mut c.gauges, register)
            .unwrap_or_else(|| {
                self.reject();
                metrics::Gauge::noop()
            })
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        let register = || {
            let histogram = self.with_key(key, |name, labels| {
                self.stats.histogram_with_layout(name, labels, &self.layout)
            });
            Some(metrics::Histogram::from_arc(Arc::new(histogram.ok()?)))
        };
        self.cached(key, |c| &mut c.histograms, register)
            .unwrap_or_else(|| {
                self.reject();
                metrics::Histogram::noop()
            })
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
