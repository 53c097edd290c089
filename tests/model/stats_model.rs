//! A simple, obviously-correct model of `latchfree::stats`, and the one code
//! path that applies an op sequence to both a real [`Stats`] and the model and
//! checks that they agree.
//!
//! This file is a plain module (no `#[test]`), included twice:
//!
//! * by the cargo-fuzz target `fuzz/fuzz_targets/stats_ops.rs`
//!   (`#[path = "../../tests/model/stats_model.rs"] mod stats_model;`), which
//!   decodes fuzzer bytes into [`Op`]s (the `arbitrary` derive below is active
//!   there: a binary, built without `cfg(test)`) and calls [`run`];
//! * by the integration test `tests/stats_model.rs`
//!   (`#[path = "model/stats_model.rs"] mod stats_model;`), which builds op
//!   sequences from a seeded pseudo-random generator and calls [`run`], so the
//!   model check also runs in plain `cargo test`.
//!
//! What is checked, after every [`Op::Snapshot`] and at the end of a sequence:
//! registration results (the same name always gives the same metric; another
//! kind is `StatsError::KindMismatch`; a bad name is `InvalidName`), the exact
//! set of metric names and kinds, counters (wrapping `u64` adds), gauges
//! (`f64`: the last set plus the adds after it, in or out of batches, with
//! whole values small enough that every sum is exact), histogram count, sum (wrapping) and max exactly, and every
//! percentile within `MAX_RELATIVE_ERROR` of the exact nearest-rank value of
//! the recorded samples; the same values through the handles' own getters and
//! in the Prometheus text.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use latchfree::stats::{
    Counter, Gauge, Histogram, HistogramSnapshot, MAX_RELATIVE_ERROR, MetricKind, MetricValue,
    Snapshot, Stats, StatsError,
};

/// The metric names ops refer to, by `index % NAMES.len()`. Six valid names in
/// a small space, so registrations collide (same kind and other kinds), and one
/// invalid name, which must always be rejected with `InvalidName`.
pub const NAMES: [&str; 7] = ["m0", "m1", "m2", "m3", "m4", "m5", "0bad"];

/// Samples kept per run (over all histograms): `Record`s past this are
/// skipped in both the real stats and the model, to bound the model's memory
/// and the cost of its exact percentiles.
pub const MAX_SAMPLES: usize = 4096;

/// Quantiles checked against the model's exact nearest-rank values.
pub const QUANTILES: [f64; 9] = [0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0];

fn name(index: u8) -> &'static str {
    NAMES[usize::from(index) % NAMES.len()]
}

// `cfg_attr(not(test), derive(arbitrary::Arbitrary))`: the derive is for the
// fuzz target (a binary, built without `cfg(test)`); the integration test is
// built with `cfg(test)` and has no `arbitrary` dependency. Not cargo-fuzz's
// `cfg(fuzzing)`: the main crate's `unexpected_cfgs` lint rejects that name,
// and no `#[allow]` below a crate root silences it for a `cfg_attr`.

/// One operation on a `Stats`. Name fields are indices into [`NAMES`].
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Op {
    /// `stats.counter(name)`.
    RegisterCounter(u8),
    /// `stats.gauge(name)`.
    RegisterGauge(u8),
    /// `stats.histogram(name)`.
    RegisterHistogram(u8),
    /// Counter add (registering the counter on first use).
    Add { name: u8, n: u64 },
    /// One `stats.batch`.
    Batch(Vec<BatchOp>),
    /// Gauge set (registering the gauge on first use).
    Set { name: u8, value: i32 },
    /// Gauge add (registering the gauge on first use).
    GaugeAdd { name: u8, delta: i32 },
    /// Histogram record (registering the histogram on first use).
    Record { name: u8, value: u64 },
    /// Take a snapshot and check everything against the model.
    Snapshot,
}

/// One update inside a batch.
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum BatchOp {
    /// `batch.add(counter, n)` (`inc` when `n == 1`).
    Add { name: u8, n: u64 },
    /// `batch.record(histogram, value)`.
    Record { name: u8, value: u64 },
    /// `batch.set(gauge, value)`.
    Set { name: u8, value: i32 },
    /// `batch.add_gauge(gauge, delta)`.
    GaugeAdd { name: u8, delta: i32 },
}

/// Applies `ops` to a fresh [`Stats`] and to the model, checking after every
/// [`Op::Snapshot`] and at the end. Panics (with the failing op's position) on
/// any disagreement.
pub fn run(ops: &[Op]) {
    let mut harness = Harness::new();
    for (i, op) in ops.iter().enumerate() {
        harness.apply(op, i);
    }
    harness.check(ops.len());
}

/// The model's value of one metric.
#[derive(Clone, Debug)]
enum ModelValue {
    Counter(u64),
    Gauge(f64),
    Histogram(ModelHistogram),
}

impl ModelValue {
    fn kind(&self) -> MetricKind {
        match self {
            ModelValue::Counter(_) => MetricKind::Counter,
            ModelValue::Gauge(_) => MetricKind::Gauge,
            ModelValue::Histogram(_) => MetricKind::Histogram,
        }
    }
}

/// A histogram that keeps every sample.
#[derive(Clone, Debug, Default)]
struct ModelHistogram {
    count: u64,
    sum: u64,
    max: u64,
    samples: Vec<u64>,
}

impl ModelHistogram {
    fn record(&mut self, value: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(value);
        self.max = self.max.max(value);
        self.samples.push(value);
    }
}

/// The exact nearest-rank `q`-quantile of sorted `samples` (0 when empty),
/// with the rank `ceil(q * n)` clamped to `1..=n`.
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len() as u64;
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    sorted[(rank - 1) as usize]
}

fn expected_kind_error(name: &str, existing: MetricKind, requested: MetricKind) -> StatsError {
    StatsError::KindMismatch {
        name: name.to_owned(),
        existing,
        requested,
    }
}

/// The real stats, the model, and the handles returned so far.
struct Harness {
    stats: Stats,
    model: BTreeMap<&'static str, ModelValue>,
    counters: HashMap<&'static str, Counter>,
    gauges: HashMap<&'static str, Gauge>,
    histograms: HashMap<&'static str, Histogram>,
    samples: usize,
    snapshots: usize,
}

/// A resolved batch update.
enum Resolved {
    Add(Counter, &'static str, u64),
    Record(Histogram, &'static str, u64),
    Set(Gauge, &'static str, f64),
    GaugeAdd(Gauge, &'static str, f64),
}

impl Harness {
    fn new() -> Self {
        Self {
            stats: Stats::new(),
            model: BTreeMap::new(),
            counters: HashMap::new(),
            gauges: HashMap::new(),
            histograms: HashMap::new(),
            samples: 0,
            snapshots: 0,
        }
    }

    /// What registering `name` as `kind` must return, per the model.
    fn expected_registration(
        &self,
        name: &'static str,
        kind: MetricKind,
    ) -> Result<(), StatsError> {
        if name == NAMES[NAMES.len() - 1] {
            return Err(StatsError::InvalidName {
                name: name.to_owned(),
            });
        }
        match self.model.get(name) {
            Some(value) if value.kind() != kind => {
                Err(expected_kind_error(name, value.kind(), kind))
            }
            _ => Ok(()),
        }
    }

    /// Registers `name` as `kind` in the real stats, checks the result against
    /// the model, and on success records the metric in the model.
    fn register<T>(
        &mut self,
        name: &'static str,
        kind: MetricKind,
        at: usize,
        register: impl FnOnce(&Stats, &str) -> Result<T, StatsError>,
    ) -> Option<T> {
        let expected = self.expected_registration(name, kind);
        let got = register(&self.stats, name);
        let got_unit = got.as_ref().map(|_| ()).map_err(Clone::clone);
        assert_eq!(
            got_unit, expected,
            "op #{at}: registering {name:?} as a {kind}"
        );
        let handle = got.ok()?;
        self.model.entry(name).or_insert_with(|| match kind {
            MetricKind::Counter => ModelValue::Counter(0),
            MetricKind::Gauge => ModelValue::Gauge(0.0),
            MetricKind::Histogram => ModelValue::Histogram(ModelHistogram::default()),
            other => unreachable!("the model registers no {other:?}"),
        });
        Some(handle)
    }

    /// A counter handle for `name`: the first one returned for it, or a fresh
    /// registration. `None` (after checking the error) if it cannot be one.
    fn counter(&mut self, name: &'static str, at: usize) -> Option<Counter> {
        if let Some(c) = self.counters.get(name) {
            return Some(c.clone());
        }
        let c = self.register(name, MetricKind::Counter, at, Stats::counter)?;
        self.counters.insert(name, c.clone());
        Some(c)
    }

    fn gauge(&mut self, name: &'static str, at: usize) -> Option<Gauge> {
        if let Some(g) = self.gauges.get(name) {
            return Some(g.clone());
        }
        let g = self.register(name, MetricKind::Gauge, at, Stats::gauge)?;
        self.gauges.insert(name, g.clone());
        Some(g)
    }

    fn histogram(&mut self, name: &'static str, at: usize) -> Option<Histogram> {
        if let Some(h) = self.histograms.get(name) {
            return Some(h.clone());
        }
        let h = self.register(name, MetricKind::Histogram, at, Stats::histogram)?;
        self.histograms.insert(name, h.clone());
        Some(h)
    }

    fn model_counter(&mut self, name: &str, n: u64) {
        match self.model.get_mut(name) {
            Some(ModelValue::Counter(v)) => *v = v.wrapping_add(n),
            other => unreachable!("model: {name} is not a counter: {other:?}"),
        }
    }

    fn model_gauge(&mut self, name: &str, f: impl FnOnce(f64) -> f64) {
        match self.model.get_mut(name) {
            Some(ModelValue::Gauge(v)) => *v = f(*v),
            other => unreachable!("model: {name} is not a gauge: {other:?}"),
        }
    }

    fn model_record(&mut self, name: &str, value: u64) {
        match self.model.get_mut(name) {
            Some(ModelValue::Histogram(h)) => h.record(value),
            other => unreachable!("model: {name} is not a histogram: {other:?}"),
        }
    }

    /// Claims room for one more sample; `false` once [`MAX_SAMPLES`] is reached.
    fn take_sample(&mut self) -> bool {
        if self.samples >= MAX_SAMPLES {
            return false;
        }
        self.samples += 1;
        true
    }

    fn apply(&mut self, op: &Op, at: usize) {
        match *op {
            Op::RegisterCounter(i) => {
                let name = name(i);
                // Always a fresh registration: the same name must give the same
                // metric, which the next check sees through both handles.
                if let Some(c) = self.register(name, MetricKind::Counter, at, Stats::counter) {
                    self.counters.entry(name).or_insert(c);
                }
            }
            Op::RegisterGauge(i) => {
                let name = name(i);
                if let Some(g) = self.register(name, MetricKind::Gauge, at, Stats::gauge) {
                    self.gauges.entry(name).or_insert(g);
                }
            }
            Op::RegisterHistogram(i) => {
                let name = name(i);
                if let Some(h) = self.register(name, MetricKind::Histogram, at, Stats::histogram) {
                    self.histograms.entry(name).or_insert(h);
                }
            }
            Op::Add { name: i, n } => {
                let name = name(i);
                if let Some(c) = self.counter(name, at) {
                    if n == 1 {
                        c.inc()
                    } else {
                        c.add(n)
                    }
                    self.model_counter(name, n);
                }
            }
            Op::Set { name: i, value } => {
                let name = name(i);
                if let Some(g) = self.gauge(name, at) {
                    g.set(value.into());
                    self.model_gauge(name, |_| value.into());
                }
            }
            Op::GaugeAdd { name: i, delta } => {
                let name = name(i);
                if let Some(g) = self.gauge(name, at) {
                    g.add(delta.into());
                    self.model_gauge(name, |v| v + f64::from(delta));
                }
            }
            Op::Record { name: i, value } => {
                let name = name(i);
                if let Some(h) = self.histogram(name, at) {
                    if !self.take_sample() {
                        return;
                    }
                    if value % 2 == 0 {
                        h.record(value);
                    } else {
                        h.record_duration(Duration::from_nanos(value));
                    }
                    self.model_record(name, value);
                }
            }
            Op::Batch(ref batch) => {
                let mut resolved = Vec::with_capacity(batch.len());
                for bop in batch {
                    match *bop {
                        BatchOp::Add { name: i, n } => {
                            let name = name(i);
                            if let Some(c) = self.counter(name, at) {
                                resolved.push(Resolved::Add(c, name, n));
                            }
                        }
                        BatchOp::Record { name: i, value } => {
                            let name = name(i);
                            if let Some(h) = self.histogram(name, at)
                                && self.take_sample()
                            {
                                resolved.push(Resolved::Record(h, name, value));
                            }
                        }
                        BatchOp::Set { name: i, value } => {
                            let name = name(i);
                            if let Some(g) = self.gauge(name, at) {
                                resolved.push(Resolved::Set(g, name, value.into()));
                            }
                        }
                        BatchOp::GaugeAdd { name: i, delta } => {
                            let name = name(i);
                            if let Some(g) = self.gauge(name, at) {
                                resolved.push(Resolved::GaugeAdd(g, name, delta.into()));
                            }
                        }
                    }
                }
                let applied = self.stats.batch(|b| {
                    for r in &resolved {
                        match r {
                            Resolved::Add(c, _, 1) => b.inc(c),
                            Resolved::Add(c, _, n) => b.add(c, *n),
                            Resolved::Record(h, _, v) => b.record(h, *v),
                            Resolved::Set(g, _, v) => b.set(g, *v),
                            Resolved::GaugeAdd(g, _, d) => b.add_gauge(g, *d),
                        }
                    }
                    resolved.len()
                });
                assert_eq!(applied, resolved.len(), "op #{at}: batch return value");
                for r in &resolved {
                    match r {
                        Resolved::Add(_, name, n) => self.model_counter(name, *n),
                        Resolved::Record(_, name, v) => self.model_record(name, *v),
                        Resolved::Set(_, name, v) => self.model_gauge(name, |_| *v),
                        Resolved::GaugeAdd(_, name, d) => self.model_gauge(name, |g| g + d),
                    }
                }
            }
            Op::Snapshot => self.check(at),
        }
    }

    /// Checks a snapshot, the handles' getters and the Prometheus text against
    /// the model.
    fn check(&mut self, at: usize) {
        self.snapshots += 1;
        let snap = self.stats.snapshot();
        let ctx = format!("check after op #{at} (snapshot {})", self.snapshots);

        // The same names, in the same (sorted) order, of the same kinds.
        let got: Vec<(&str, MetricKind)> = snap.iter().map(|(n, v)| (n, v.kind())).collect();
        let want: Vec<(&str, MetricKind)> =
            self.model.iter().map(|(n, v)| (*n, v.kind())).collect();
        assert_eq!(got, want, "{ctx}: metric names and kinds");
        assert_eq!(snap.len(), self.model.len(), "{ctx}: len");
        assert_eq!(snap.is_empty(), self.model.is_empty(), "{ctx}: is_empty");
        for name in NAMES {
            if !self.model.contains_key(name) {
                assert_eq!(snap.get(name), None, "{ctx}: unregistered {name:?}");
            }
        }

        let prometheus = snap.to_prometheus();
        let lines: HashSet<&str> = prometheus.lines().collect();
        let has_line = |line: &str| lines.contains(line);
        for (&name, want) in &self.model {
            let got = snap.get(name).expect("present: checked above");
            assert!(
                has_line(&format!("# TYPE {name} {}", want.kind())),
                "{ctx}: no TYPE line for {name:?} in\n{prometheus}"
            );
            match (want, got) {
                (ModelValue::Counter(want), MetricValue::Counter(got)) => {
                    assert_eq!(got, want, "{ctx}: counter {name:?}");
                    assert_eq!(snap.counter(name), Some(*want), "{ctx}: counter {name:?}");
                    if let Some(c) = self.counters.get(name) {
                        assert_eq!(c.get(), *want, "{ctx}: Counter::get of {name:?}");
                    }
                    let line = format!("{name} {want}");
                    assert!(
                        has_line(&line),
                        "{ctx}: no sample line {line:?} in\n{prometheus}"
                    );
                }
                (ModelValue::Gauge(want), MetricValue::Gauge(got)) => {
                    assert_eq!(got, want, "{ctx}: gauge {name:?}");
                    assert_eq!(snap.gauge(name), Some(*want), "{ctx}: gauge {name:?}");
                    if let Some(g) = self.gauges.get(name) {
                        assert_eq!(g.get(), *want, "{ctx}: Gauge::get of {name:?}");
                    }
                    let line = format!("{name} {want}");
                    assert!(
                        has_line(&line),
                        "{ctx}: no sample line {line:?} in\n{prometheus}"
                    );
                }
                (ModelValue::Histogram(want), MetricValue::Histogram(got)) => {
                    let mut sorted = want.samples.clone();
                    sorted.sort_unstable();
                    check_histogram(&ctx, name, want, &sorted, got);
                    if let Some(h) = self.histograms.get(name) {
                        let direct = h.snapshot();
                        assert_eq!(&direct, got, "{ctx}: Histogram::snapshot of {name:?}");
                    }
                    for line in [
                        format!("{name}_count {}", want.count),
                        format!("{name}_sum {}", want.sum),
                        format!("{name}_bucket{{le=\"+Inf\"}} {}", want.count),
                    ] {
                        assert!(
                            has_line(&line),
                            "{ctx}: no sample line {line:?} in\n{prometheus}"
                        );
                    }
                }
                (want, got) => panic!("{ctx}: {name:?} is {got:?}, model says {want:?}"),
            }
        }
        check_typed_getters(&ctx, &snap, &self.model);
    }
}

/// A histogram snapshot against the model's samples (`sorted`).
fn check_histogram(
    ctx: &str,
    name: &str,
    want: &ModelHistogram,
    sorted: &[u64],
    got: &HistogramSnapshot,
) {
    assert_eq!(got.count(), want.count, "{ctx}: {name:?} count");
    assert_eq!(got.sum(), want.sum, "{ctx}: {name:?} sum");
    assert_eq!(got.max(), want.max, "{ctx}: {name:?} max");
    let bucket_total: u64 = got.buckets().map(|(_, _, n)| n).sum();
    assert_eq!(bucket_total, want.count, "{ctx}: {name:?} bucket total");
    for (lo, hi, n) in got.buckets() {
        let exact =
            (sorted.partition_point(|&v| v <= hi) - sorted.partition_point(|&v| v < lo)) as u64;
        assert_eq!(n, exact, "{ctx}: {name:?} bucket {lo}..={hi}");
    }
    for q in QUANTILES {
        let exact = nearest_rank(sorted, q);
        let reported = got.quantile(q);
        let err = reported.abs_diff(exact) as f64;
        assert!(
            err <= MAX_RELATIVE_ERROR * exact as f64,
            "{ctx}: {name:?} q={q}: reported {reported}, exact nearest-rank {exact} \
             (count {}, max {})",
            want.count,
            want.max
        );
    }
    for (p, q) in [
        (got.p50(), 0.5),
        (got.p90(), 0.9),
        (got.p99(), 0.99),
        (got.p999(), 0.999),
    ] {
        assert_eq!(p, got.quantile(q), "{ctx}: {name:?} named percentile {q}");
    }
}

/// `Snapshot::counter/gauge/histogram` return `None` for another kind.
fn check_typed_getters(ctx: &str, snap: &Snapshot, model: &BTreeMap<&'static str, ModelValue>) {
    for (&name, value) in model {
        let kind = value.kind();
        assert_eq!(
            snap.counter(name).is_some(),
            kind == MetricKind::Counter,
            "{ctx}: Snapshot::counter({name:?}) of a {kind}"
        );
        assert_eq!(
            snap.gauge(name).is_some(),
            kind == MetricKind::Gauge,
            "{ctx}: Snapshot::gauge({name:?}) of a {kind}"
        );
        assert_eq!(
            snap.histogram(name).is_some(),
            kind == MetricKind::Histogram,
            "{ctx}: Snapshot::histogram({name:?}) of a {kind}"
        );
    }
}
