//! Statistics as sharded atomics: counters, gauges and histograms that every
//! thread updates at once, exactly, without contention.
//!
//! # Why
//!
//! `stats[k] += 1` behind a shared map loses updates or serialises every
//! thread on one lock; one shared `AtomicU64` is exact but every increment
//! moves its cache line between cores (about 200 M increments/s *in total*,
//! however many cores). Here each thread increments its own cache-padded
//! shard with a plain load and store, and readers add the shards up.
//!
//! # How
//!
//! * **Shards.** Each thread that touches a [`Stats`] gets its own
//!   [`CachePadded`] shard, found through a one-entry thread-local cache
//!   (`per_thread` explains why not the `thread_local` crate). Only that
//!   thread writes it, so an increment is a relaxed load and a relaxed store of
//!   one slot: no read-modify-write, wait-free. When a thread exits, its shard
//!   keeps its values and is handed to the next new thread, so no update is
//!   lost and shard memory is bounded by the peak number of live threads.
//! * **Batches.** [`Stats::batch`] applies several updates (say calls, bytes in,
//!   bytes out, errors) inside a per-shard sequence lock: the writer never
//!   waits, and a reader that overlaps a batch retries, so every snapshot sees
//!   a batch entirely or not at all. Peers that use one atomic per metric
//!   cannot offer this. Every histogram sample is such a batch, so a
//!   histogram's count, sum and buckets always agree. The protocol and its
//!   memory orderings are argued in the `shard` module (and model-checked
//!   with loom in `loom_tests/stats.rs`).
//! * **Labels.** A series is a name plus a label set; each label set of a
//!   name is a metric of its own (its own slots), found by name and labels
//!   at registration (`registry` explains the lookup) and rendered under one
//!   `# HELP`/`# TYPE` block per name in the Prometheus and OpenMetrics
//!   text.
//! * **Gauges** are last values (`f64`, as in Prometheus and the `metrics`
//!   facade) that any thread sets or adds to, and that join batches; see
//!   "Gauges" below.
//! * **Histograms** use log-linear buckets by default (32 per power of two,
//!   exact below 64) and report percentiles within [`MAX_RELATIVE_ERROR`]
//!   (1/64 ≈ 1.6 %) of the exact nearest-rank value; count, sum and max are
//!   exact. That takes 1,923 slots per histogram per thread; a bounded
//!   [`Layout`] (Prometheus-style fixed or exponential bounds) takes its
//!   bounds plus 4 and records `f64` samples, which is what a thousand
//!   labelled histograms need (the `layout` module).
//!
//! # Gauges
//!
//! A last value cannot be summed from shards, and a gauge that lived in one
//! shared word (as it did) could not join a batch: a snapshot reads the
//! shards under their sequence locks, and a shared word is outside all of
//! them, so a batch's counters could be seen without its gauge change or
//! the other way round. So a gauge lives in the shards too, four slots in
//! each, plus one shared word, its *order* (`GaugeCell`):
//!
//! * A **set** takes an order number (`fetch_add` on the order), then
//!   writes `(order, value)` into its own shard's `SET_ORDER`/`SET_VALUE`
//!   inside the shard's bracket. In a batch, the number is taken when the
//!   batch is applied, and the write is in the batch's bracket with its
//!   other updates.
//! * An **add** reads the order: the set it applies to, its *epoch*. Its
//!   shard keeps `ADD_EPOCH` and `ADD_SUM`, the sum of this shard's adds to
//!   that set; an add to a newer set restarts the sum, an add to an older
//!   one (which a newer set has replaced) is dropped. In a batch, an add
//!   after a set of the same gauge applies to that set.
//! * A **read** (snapshot or `Gauge::get`) takes the set with the largest
//!   order number over all shards and adds the sums whose epoch is that
//!   number. A gauge never set has order 0, and its adds epoch 0.
//!
//! Why this is the gauge's meaning. Sets are ordered by their numbers, so
//! of two sets the one that began later wins, whichever shard applies it
//! last: an unbatched `set` another thread makes after a batch was applied
//! wins over the batch's set; one made while the batch's closure still ran
//! loses to it (the batch takes effect when it is applied). An add is
//! ordered after the set whose number it read and before any newer one
//! (which began after the add read the order, so the two overlap and either
//! order is a correct history). Concurrent adds are never lost to one
//! another, since each thread sums only its own. `set(5)` in one thread,
//! then `add(1)` in another reads 6. A thread that *saw* a set (through a
//! snapshot or `get`) and then adds applies its add to that set or a newer
//! one: its validated read synchronised with the setter's bracket, which
//! comes after the set took its number, so its load of the order returns
//! that number or a later one (coherence). This is why the number is taken
//! before the shard write and not announced after it: announced after, a
//! reader could see the set, add, and have its add read an older epoch and
//! be dropped.
//!
//! The cost of that choice: between a set taking its number and its
//! bracketed write (a few instructions; longer only if the setter is
//! preempted there), an add in another thread applies to a set no reader
//! can see yet, so reads leave that add out until the set lands. No add is
//! lost; it is late by at most the setter's write.
//!
//! All or nothing: a gauge set or add in a batch is written inside the
//! batch's bracket, so a snapshot that sees any of the batch sees its gauge
//! slots too, and reports that set's value (or a newer set's) with the
//! adds made to it.
//!
//! Cost. A set is one read-modify-write of the gauge's shared line and a
//! bracketed write of two own slots; an add is one load of that line and a
//! bracketed write. A gauge set from many threads at once contends on its
//! line, as the shared word did; adds only read it.
//!
//! Representation: `f64` bits in `u64` slots and words. The `atomic`
//! crate's `Atomic<f64>` compiles to the same `AtomicU64` operations (and a
//! CAS loop for an add); measured on this 2-core VM (20 M operations per
//! thread, median of 5 rounds), a shared-word store took 0.37 ns either way
//! at 1 thread and 0.73 / 0.72 ns at 2, and a CAS-loop add 5.24 / 5.33 ns
//! at 1 thread and 12.7 / 20.2 ns at 2 (the contended rounds ranged from 10
//! to 47 ns for both). No difference, so no dependency: the bits live in
//! the `crate::sync` atomics that loom models, and the shards' add is a
//! single-writer load and store, with no CAS at all.
//!
//! # Example
//!
//! ```
//! use latchfree::stats::Stats;
//!
//! let stats = Stats::new();
//! let calls = stats.counter("tool_calls_total")?;
//! let bytes_in = stats.counter("bytes_in_total")?;
//! let latency = stats.histogram("tool_call_ns")?;
//!
//! // Hot path: handles are cheap to clone and Send + Sync.
//! std::thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| {
//!             for _ in 0..1000 {
//!                 stats.batch(|b| {
//!                     b.inc(&calls);
//!                     b.add(&bytes_in, 512);
//!                     b.record(&latency, 1_200);
//!                 });
//!             }
//!         });
//!     }
//! });
//!
//! let snap = stats.snapshot();
//! assert_eq!(snap.counter("tool_calls_total"), Some(4000));
//! assert_eq!(snap.counter("bytes_in_total"), Some(4000 * 512));
//! assert_eq!(snap.histogram("tool_call_ns").map(|h| h.count()), Some(4000));
//! assert!(snap.to_prometheus().contains("# TYPE tool_calls_total counter"));
//! # Ok::<(), latchfree::stats::StatsError>(())
//! ```

mod buckets;
mod layout;
#[cfg(feature = "metrics")]
mod recorder;
mod registry;
mod shard;
mod snapshot;

use std::sync::Arc;

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;

use crate::sync::atomic::Ordering;
use crate::sync::{PerThread, RwLock};
pub(crate) use registry::validate_name;
use registry::{GaugeCell, Registry, Storage, gauge_slots, hist_slots};
use shard::Shard;

pub use buckets::MAX_RELATIVE_ERROR;
pub use layout::{DEFAULT_BUCKETS, Layout, MAX_BOUNDS};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use recorder::MetricsRecorder;
pub use registry::{MAX_NAME_LEN, MetricKind};
pub use snapshot::LocalHistogram;
pub use snapshot::{HistogramSnapshot, MetricValue, Series, Snapshot};

/// Why a metric could not be registered or described.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// The name is not a valid Prometheus metric name.
    #[error(
        "invalid metric name {name:?}: names match [a-zA-Z_:][a-zA-Z0-9_:]* and are 1 to {MAX_NAME_LEN} bytes"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A label name is not valid for series `name`: label names match
    /// `[a-zA-Z_][a-zA-Z0-9_]*`, are 1 to [`MAX_NAME_LEN`] bytes, do not
    /// start with `__` (reserved), and a histogram's labels do not include
    /// `le` (its bucket label).
    #[error(
        "invalid label name {label:?} on metric {name:?}: label names match \
         [a-zA-Z_][a-zA-Z0-9_]*, do not start with \"__\", and are not \"le\" on a histogram"
    )]
    InvalidLabelName {
        /// The metric's name.
        name: String,
        /// The rejected label name.
        label: String,
    },
    /// A label name appears twice in one label set.
    #[error("label {label:?} appears twice on metric {name:?}")]
    DuplicateLabel {
        /// The metric's name.
        name: String,
        /// The repeated label name.
        label: String,
    },
    /// The name is already registered as another kind of metric.
    #[error("metric {name:?} is already registered as a {existing}, not a {requested}")]
    KindMismatch {
        /// The name.
        name: String,
        /// The kind it was registered as.
        existing: MetricKind,
        /// The kind asked for now.
        requested: MetricKind,
    },
    /// The per-thread slot space is full.
    #[error(
        "no room for metric {name:?}: it needs {needed} slots and {available} of \
         max_slots = {max_slots} are left (raise StatsBuilder::max_slots)"
    )]
    SlotsExhausted {
        /// The name.
        name: String,
        /// Slots the metric needs (1 for a counter, more for a histogram).
        needed: usize,
        /// Slots left.
        available: usize,
        /// The configured bound.
        max_slots: usize,
    },
    /// A [`StatsBuilder`] setting is out of its range:
    /// `StatsBuilder::{setting}` was given `value`.
    #[error("StatsBuilder::{setting}({value}) is out of range: use {allowed}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// The value refused.
        value: u64,
        /// What is accepted.
        allowed: &'static str,
    },
    /// A histogram layout was refused: bounds not finite, not strictly
    /// increasing, none or too many; exponential parameters out of range.
    #[error("invalid histogram layout: {reason}")]
    InvalidLayout {
        /// What is wrong.
        reason: String,
        /// The rejected bounds, as written (empty for exponential
        /// parameters).
        bounds: Vec<String>,
    },
    /// The histogram series is already registered with another layout.
    #[error("histogram {name:?} is already registered with another bucket layout")]
    LayoutMismatch {
        /// The name.
        name: String,
    },
    /// `describe` named a metric that is not registered.
    #[error("metric {name:?} is not registered")]
    UnknownMetric {
        /// The name.
        name: String,
    },
}

/// Slots a histogram takes in every shard (buckets, count, sum, max).
pub const HISTOGRAM_SLOTS: usize = hist_slots::LEN;

/// Default (and largest) per-thread slot space: 65,536 slots of 8 bytes.
/// Shards allocate it in 8 KiB chunks on first touch, so unused space costs
/// nothing.
pub const DEFAULT_MAX_SLOTS: usize = shard::MAX_SLOTS;

/// Memory held by a [`Stats`]'s shards, counted from the chunks they have
/// allocated (see [`Stats::memory`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsMemory {
    /// Shards: one per peak live thread that touched the `Stats`.
    pub shards: usize,
    /// Bytes of slot chunks (8 KiB each, allocated on first touch).
    pub slot_bytes: usize,
    /// Bytes of the copies writers made for readers that kept losing (as
    /// many chunks as the slots, once a reader has asked).
    pub copy_bytes: usize,
    /// Bytes of the shards themselves (sequence words, chunk tables).
    pub shard_bytes: usize,
}

impl StatsMemory {
    /// All of it.
    pub fn total(&self) -> usize {
        self.slot_bytes + self.copy_bytes + self.shard_bytes
    }

    /// The largest shard's share: `total / shards` rounded up (shards hold
    /// the chunks their threads touched, so they differ).
    pub fn per_shard(&self) -> usize {
        self.total().div_ceil(self.shards.max(1))
    }
}

/// Configures a [`Stats`].
#[derive(Clone, Debug)]
#[must_use]
pub struct StatsBuilder {
    max_slots: usize,
}

impl StatsBuilder {
    /// The per-thread slot space, which bounds how many metrics can be
    /// registered: a counter takes 1 slot, a gauge 4, a log-linear histogram
    /// [`HISTOGRAM_SLOTS`], a histogram of a bounded [`Layout`] its bounds
    /// plus 4. Default and upper limit [`DEFAULT_MAX_SLOTS`]; 1 to
    /// [`DEFAULT_MAX_SLOTS`], checked by [`build`](Self::build).
    pub fn max_slots(mut self, max_slots: usize) -> Self {
        self.max_slots = max_slots;
        self
    }

    /// Builds an empty [`Stats`], or refuses an out-of-range setting with
    /// [`StatsError::InvalidSetting`].
    pub fn build(self) -> Result<Stats, StatsError> {
        if !(1..=DEFAULT_MAX_SLOTS).contains(&self.max_slots) {
            return Err(StatsError::InvalidSetting {
                setting: "max_slots",
                value: self.max_slots as u64,
                allowed: "1 to DEFAULT_MAX_SLOTS slots",
            });
        }
        Ok(Stats::with_slots(self.max_slots))
    }
}

/// A set of named metrics, updated from any thread without locks.
///
/// Cloning is cheap and every clone shares the same metrics.
///
/// # Guarantees
///
/// * **Exact.** No update is ever lost, including updates made by threads that
///   have since exited.
/// * **Wait-free updates.** [`Counter::add`], [`Histogram::record`] and
///   [`Stats::batch`] never wait for another thread and never retry (after a
///   thread's first update, which allocates its shard).
/// * **Atomic batches.** Each batch is seen by a [`snapshot`](Self::snapshot)
///   entirely or not at all.
/// * **Monotone reads.** A counter's total, read again by the same thread,
///   never decreases (until it wraps at `u64::MAX`).
/// * **Bounded memory.** One shard per peak live thread; each shard holds the
///   8 KiB chunks of slots its thread has touched.
///
/// Registration (by name) takes a write lock and should happen once; use the
/// returned handle on the hot path. Snapshots take a read lock for an instant
/// and never block updates.
#[derive(Clone)]
pub struct Stats {
    core: Arc<Core>,
}

struct Core {
    registry: RwLock<Registry>,
    shards: PerThread<CachePadded<Shard>>,
    max_slots: usize,
}

impl Core {
    /// Runs `f` on the calling thread's shard.
    #[inline(always)]
    fn with_shard<R>(&self, f: impl FnOnce(&Shard) -> R) -> R {
        self.shards
            .with(|| CachePadded::new(Shard::new()), |shard| f(shard))
    }

    fn registry(&self) -> impl std::ops::Deref<Target = Registry> + '_ {
        self.registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        kind: MetricKind,
        layout: &Layout,
    ) -> Result<Storage, StatsError> {
        if let Some(found) = self.registry().lookup(name, labels, kind, layout) {
            return found;
        }
        self.registry_mut().register(name, labels, kind, layout)
    }

    fn registry_mut(&self) -> impl std::ops::DerefMut<Target = Registry> + '_ {
        self.registry
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = self.core.registry();
        f.debug_struct("Stats")
            .field("metrics", &registry.len())
            .field("used_slots", &registry.used_slots())
            .field("max_slots", &self.core.max_slots)
            .finish()
    }
}

impl Stats {
    /// An empty set of metrics with the default configuration.
    pub fn new() -> Self {
        Self::with_slots(DEFAULT_MAX_SLOTS)
    }

    fn with_slots(max_slots: usize) -> Self {
        Stats {
            core: Arc::new(Core {
                registry: RwLock::new(Registry::new(max_slots)),
                shards: PerThread::new(),
                max_slots,
            }),
        }
    }

    /// A builder for a configured `Stats`.
    pub fn builder() -> StatsBuilder {
        StatsBuilder {
            max_slots: DEFAULT_MAX_SLOTS,
        }
    }

    /// The counter named `name` (no labels), registering it on first use.
    ///
    /// Names follow the Prometheus grammar. The same name always returns a
    /// handle to the same counter; asking for it as another kind is an error.
    pub fn counter(&self, name: &str) -> Result<Counter, StatsError> {
        self.counter_with(name, &[])
    }

    /// The counter series `name{labels}`, registering it on first use.
    ///
    /// The same name and label set, in any order, always returns a handle to
    /// the same series. Label names follow the Prometheus grammar (see
    /// [`StatsError::InvalidLabelName`]); values may be any string. Every
    /// series of one name has one kind: asking for another is
    /// [`StatsError::KindMismatch`].
    ///
    /// ```
    /// # use latchfree::stats::Stats;
    /// let stats = Stats::new();
    /// let a = stats.counter_with("hits_total", &[("cache", "query"), ("tier", "memory")])?;
    /// let b = stats.counter_with("hits_total", &[("tier", "memory"), ("cache", "query")])?;
    /// a.inc();
    /// b.inc();
    /// let snap = stats.snapshot();
    /// assert_eq!(snap.counter_with("hits_total", &[("tier", "memory"), ("cache", "query")]), Some(2));
    /// assert!(stats.gauge_with("hits_total", &[("cache", "other")]).is_err());
    /// # Ok::<(), latchfree::stats::StatsError>(())
    /// ```
    pub fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> Result<Counter, StatsError> {
        match self
            .core
            .register(name, labels, MetricKind::Counter, &Layout::default())?
        {
            Storage::Counter { slot } => Ok(Counter {
                core: self.core.clone(),
                slot,
            }),
            _ => unreachable!("register returns the requested kind"),
        }
    }

    /// The gauge named `name` (no labels), registering it on first use.
    pub fn gauge(&self, name: &str) -> Result<Gauge, StatsError> {
        self.gauge_with(name, &[])
    }

    /// The gauge series `name{labels}`, registering it on first use (labels
    /// as in [`counter_with`](Self::counter_with)).
    pub fn gauge_with(&self, name: &str, labels: &[(&str, &str)]) -> Result<Gauge, StatsError> {
        match self
            .core
            .register(name, labels, MetricKind::Gauge, &Layout::default())?
        {
            Storage::Gauge { base, cell } => Ok(Gauge {
                core: self.core.clone(),
                base,
                cell,
            }),
            _ => unreachable!("register returns the requested kind"),
        }
    }

    /// The histogram named `name` (no labels), registering it on first use.
    pub fn histogram(&self, name: &str) -> Result<Histogram, StatsError> {
        self.histogram_with(name, &[])
    }

    /// The histogram series `name{labels}`, registering it on first use
    /// (labels as in [`counter_with`](Self::counter_with); `le` is refused,
    /// being the bucket label).
    pub fn histogram_with(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<Histogram, StatsError> {
        self.histogram_with_layout(name, labels, &Layout::log_linear())
    }

    /// The histogram series `name{labels}` with bucket layout `layout`,
    /// registering it on first use. A bounded layout ([`Layout::fixed`],
    /// [`Layout::exponential`]) takes `bounds + 4` slots instead of
    /// [`HISTOGRAM_SLOTS`], which is what makes a thousand labelled
    /// histograms fit.
    ///
    /// # Errors
    ///
    /// As [`histogram_with`](Self::histogram_with), and
    /// [`StatsError::LayoutMismatch`] if the series exists with another
    /// layout.
    ///
    /// ```
    /// use latchfree::stats::{Layout, Stats};
    /// let stats = Stats::new();
    /// let layout = Layout::fixed([0.005, 0.05, 0.5, 5.0])?;
    /// let h = stats.histogram_with_layout("request_seconds", &[("route", "/a")], &layout)?;
    /// h.record_f64(0.02);
    /// h.record_f64(0.7);
    /// let text = stats.snapshot().to_prometheus();
    /// assert!(text.contains("request_seconds_bucket{route=\"/a\",le=\"0.05\"} 1"));
    /// assert!(text.contains("request_seconds_sum{route=\"/a\"} 0.72"));
    /// # Ok::<(), latchfree::stats::StatsError>(())
    /// ```
    pub fn histogram_with_layout(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        layout: &Layout,
    ) -> Result<Histogram, StatsError> {
        match self
            .core
            .register(name, labels, MetricKind::Histogram, layout)?
        {
            Storage::Histogram { base, layout } => Ok(Histogram {
                core: self.core.clone(),
                base,
                layout,
            }),
            _ => unreachable!("register returns the requested kind"),
        }
    }

    /// Sets the help text of a registered metric name, for all its series
    /// (shown as `# HELP` in Prometheus and OpenMetrics output).
    pub fn describe(&self, name: &str, help: &str) -> Result<(), StatsError> {
        self.core.registry_mut().describe(name, help)
    }

    /// Sets the help text and unit of `name` before any series of it is
    /// registered (adapters describe what they will register).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn describe_family(
        &self,
        name: &str,
        help: Option<&str>,
        unit: Option<&str>,
    ) -> Result<(), StatsError> {
        self.core.registry_mut().describe_family(name, help, unit)
    }

    /// Sets the unit of metric name `name` (registered or not yet), for all
    /// its series: OpenMetrics output shows it as `# UNIT` when the name ends
    /// in `_` and the unit, as that format requires. Units are lower-case
    /// words such as `seconds` or `bytes`.
    pub fn describe_unit(&self, name: &str, unit: &str) -> Result<(), StatsError> {
        self.core
            .registry_mut()
            .describe_family(name, None, Some(unit))
    }

    /// Applies every update `f` makes to the [`Batch`] as one unit: each
    /// snapshot sees all of them or none.
    ///
    /// The updates are buffered while `f` runs and applied after it returns,
    /// so a panic in `f` applies nothing. Gauge sets and adds
    /// ([`Batch::set`], [`Batch::add_gauge`]) are part of the batch too.
    ///
    /// ```
    /// # use latchfree::stats::Stats;
    /// let stats = Stats::new();
    /// let (calls, bytes) = (stats.counter("calls")?, stats.counter("bytes")?);
    /// stats.batch(|b| {
    ///     b.inc(&calls);
    ///     b.add(&bytes, 3);
    /// });
    /// let snap = stats.snapshot();
    /// assert_eq!(snap.counter("bytes"), Some(3 * snap.counter("calls").unwrap()));
    /// # Ok::<(), latchfree::stats::StatsError>(())
    /// ```
    #[inline]
    pub fn batch<R>(&self, f: impl FnOnce(&mut Batch<'_>) -> R) -> R {
        let mut batch = Batch {
            core: &self.core,
            ops: ArrayVec::new(),
            spill: Vec::new(),
            gauges: Vec::new(),
        };
        let result = f(&mut batch);
        if !batch.ops.is_empty() {
            if !batch.gauges.is_empty() {
                batch.take_gauge_orders();
            }
            let (ops, spill) = (&batch.ops, &batch.spill);
            self.core.with_shard(|shard| {
                shard.batch(|shard| {
                    ops.iter().for_each(|op| op.apply(shard));
                    spill.iter().for_each(|op| op.apply(shard));
                })
            });
        }
        result
    }

    /// Applies a fixed group of updates as one unit, like [`batch`](Self::batch)
    /// but without a buffer: the values are computed before the call, so no
    /// user code runs while the group is applied, and the loop unrolls. This
    /// is the fast path for the request-path pattern of "calls, bytes in,
    /// bytes out, latency".
    ///
    /// ```
    /// use latchfree::stats::{Stats, Update};
    /// let stats = Stats::new();
    /// let (calls, bytes) = (stats.counter("calls")?, stats.counter("bytes")?);
    /// let latency = stats.histogram("latency_ns")?;
    /// stats.apply([Update::Add(&calls, 1), Update::Add(&bytes, 512), Update::Record(&latency, 900)]);
    /// let snap = stats.snapshot();
    /// assert_eq!(snap.counter("bytes"), Some(512));
    /// assert_eq!(snap.histogram("latency_ns").map(|h| h.count()), Some(1));
    /// # Ok::<(), latchfree::stats::StatsError>(())
    /// ```
    ///
    /// Metrics of another [`Stats`] are applied too, outside this group.
    #[inline]
    pub fn apply<const N: usize>(&self, updates: [Update<'_>; N]) {
        if !updates.iter().all(|u| u.belongs_to(&self.core)) {
            return self.apply_mixed(updates);
        }
        self.core.with_shard(|shard| {
            shard.batch(|shard| {
                // By reference: moving the array into an iterator copies it
                // through the stack, which costs more than the updates.
                for update in &updates {
                    match *update {
                        Update::Add(counter, n) => shard.add(counter.slot, n),
                        Update::Record(histogram, value) => {
                            histogram.record_into_shard(shard, value)
                        }
                    }
                }
            })
        });
    }

    #[cold]
    #[inline(never)]
    fn apply_mixed<const N: usize>(&self, updates: [Update<'_>; N]) {
        self.batch(|b| {
            for update in updates {
                match update {
                    Update::Add(counter, n) => b.add(counter, n),
                    Update::Record(histogram, value) => b.record(histogram, value),
                }
            }
        });
    }

    /// The memory its shards hold now, counted from their chunk tables (not
    /// the registry's names and labels, which are the same size whatever
    /// the number of threads).
    pub fn memory(&self) -> StatsMemory {
        let chunk_bytes = shard::CHUNK_SLOTS * std::mem::size_of::<u64>();
        let mut memory = StatsMemory::default();
        self.core.shards.for_each(|shard| {
            let (slots, copies) = shard.chunks_allocated();
            memory.shards += 1;
            memory.slot_bytes += slots * chunk_bytes;
            memory.copy_bytes += copies * chunk_bytes;
            memory.shard_bytes += std::mem::size_of::<CachePadded<Shard>>();
        });
        memory
    }

    /// The value of every metric, sorted by name. See [`Snapshot`] for what
    /// it guarantees.
    pub fn snapshot(&self) -> Snapshot {
        let published = self.core.registry().published();
        let mut totals = vec![0u64; published.used_slots];
        let mut shard_values = Vec::with_capacity(published.used_slots);
        let mut gauges: Vec<GaugeMerge> = Vec::new();
        gauges.resize_with(published.entries.len(), GaugeMerge::default);
        self.core.shards.for_each(|shard| {
            shard.read_range(0..published.used_slots, &mut shard_values);
            for (i, entry) in published.entries.iter().enumerate() {
                match entry.storage {
                    Storage::Counter { slot } => {
                        totals[slot] = totals[slot].wrapping_add(shard_values[slot]);
                    }
                    Storage::Histogram { base, ref layout } => {
                        let run = base..base + layout.slots();
                        merge_histogram(&mut totals[run.clone()], &shard_values[run], layout);
                    }
                    Storage::Gauge { base, .. } => {
                        gauges[i].merge(&shard_values[base..base + gauge_slots::LEN]);
                    }
                }
            }
        });
        let values = published
            .entries
            .iter()
            .zip(&gauges)
            .map(|(entry, gauge)| match &entry.storage {
                Storage::Counter { slot } => MetricValue::Counter(totals[*slot]),
                Storage::Gauge { .. } => MetricValue::Gauge(gauge.value()),
                Storage::Histogram { base, layout } => MetricValue::Histogram(
                    HistogramSnapshot::from_slots(&totals[*base..*base + layout.slots()], layout),
                ),
            })
            .collect();
        Snapshot {
            entries: published.entries,
            values,
        }
    }
}

/// Adds one shard's histogram run into `total`: sums, except the max slot
/// (the larger), and a bounded layout's sum slot (an `f64`).
fn merge_histogram(total: &mut [u64], shard: &[u64], layout: &Layout) {
    let (sum, max) = (layout.sum_slot(), layout.max_slot());
    let summed = match layout.bounds() {
        Some(_) => sum,
        None => max,
    };
    for (t, s) in total[..summed].iter_mut().zip(shard) {
        *t = t.wrapping_add(*s);
    }
    if summed == sum {
        total[sum] = (f64::from_bits(total[sum]) + f64::from_bits(shard[sum])).to_bits();
    }
    total[max] = total[max].max(shard[max]);
}

/// A handle to one counter: cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Counter {
    core: Arc<Core>,
    slot: usize,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter").field("slot", &self.slot).finish()
    }
}

impl Counter {
    /// Adds `n` (wrapping at `u64::MAX`). Wait-free: a load and a store of
    /// this thread's own slot.
    #[inline]
    pub fn add(&self, n: u64) {
        self.core.with_shard(|shard| shard.add(self.slot, n));
    }

    /// Adds 1.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The total over all threads. Never less than an earlier `get` by the
    /// same thread.
    pub fn get(&self) -> u64 {
        let mut total = 0u64;
        self.core
            .shards
            .for_each(|shard| total = total.wrapping_add(shard.read_slot(self.slot)));
        total
    }
}

/// One gauge's value gathered from the shards: the set with the largest
/// order number, plus the adds made to that set (see the module docs,
/// "Gauges").
#[derive(Default)]
struct GaugeMerge {
    order: u64,
    value: f64,
    /// `(epoch, sum)` of each shard's adds to a set at least as new as
    /// `order`, the latest set seen so far (older ones cannot count).
    adds: Vec<(u64, f64)>,
}

impl GaugeMerge {
    /// Takes one shard's gauge slots (`gauge_slots::LEN` of them).
    fn merge(&mut self, slots: &[u64]) {
        let (order, epoch) = (slots[gauge_slots::SET_ORDER], slots[gauge_slots::ADD_EPOCH]);
        if order > self.order {
            self.order = order;
            self.value = f64::from_bits(slots[gauge_slots::SET_VALUE]);
            let newest = self.order;
            self.adds.retain(|&(e, _)| e >= newest);
        }
        let sum = f64::from_bits(slots[gauge_slots::ADD_SUM]);
        if epoch >= self.order && sum != 0.0 {
            self.adds.push((epoch, sum));
        }
    }

    /// The latest set's value plus the adds made to it.
    fn value(&self) -> f64 {
        self.adds
            .iter()
            .filter(|&&(e, _)| e == self.order)
            .fold(self.value, |v, &(_, sum)| v + sum)
    }
}

/// A handle to one gauge: a last value (`f64`) that any thread sets or
/// adds to. Cheap to clone, `Send + Sync`.
///
/// A gauge takes part in [`Stats::batch`] ([`Batch::set`],
/// [`Batch::add_gauge`]): a snapshot sees a batch's gauge change together
/// with its counter changes. Of two sets, the one that begins later wins
/// (each takes an order number); an add applies to the latest set begun
/// when it began, so `set(5)` then `add(1)` from any two threads reads 6,
/// and an add that races a set is either kept (it came after) or replaced
/// by it (it came before). The module docs ("Gauges") argue it.
#[derive(Clone)]
pub struct Gauge {
    core: Arc<Core>,
    base: usize,
    cell: Arc<GaugeCell>,
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauge").field("base", &self.base).finish()
    }
}

impl Gauge {
    /// Sets the value: one read-modify-write of the gauge's shared line
    /// (its order number) and a bracketed write of two slots of this
    /// thread's shard.
    #[inline]
    pub fn set(&self, value: f64) {
        let order = next_order(&self.cell);
        let base = self.base;
        self.core.with_shard(|shard| {
            shard.batch(|shard| {
                shard.store(base + gauge_slots::SET_ORDER, order);
                shard.store(base + gauge_slots::SET_VALUE, value.to_bits());
            })
        });
    }

    /// Adds `delta` (negative to subtract), e.g. +1 / -1 for a connection
    /// count: one load of the shared line and a bracketed write of this
    /// thread's shard.
    #[inline]
    pub fn add(&self, delta: f64) {
        let epoch = current_order(&self.cell);
        let base = self.base;
        self.core
            .with_shard(|shard| shard.batch(|shard| shard.gauge_add(base, epoch, delta)));
    }

    /// Adds 1.
    #[inline]
    pub fn increment(&self) {
        self.add(1.0);
    }

    /// Subtracts 1.
    #[inline]
    pub fn decrement(&self) {
        self.add(-1.0);
    }

    /// The current value, gathered from every thread's shard.
    pub fn get(&self) -> f64 {
        let mut merged = GaugeMerge::default();
        let mut values = Vec::with_capacity(gauge_slots::LEN);
        self.core.shards.for_each(|shard| {
            shard.read_range(self.base..self.base + gauge_slots::LEN, &mut values);
            merged.merge(&values);
        });
        merged.value()
    }
}

/// The order number of a new set of the gauge whose shared word is `cell`.
#[inline(always)]
fn next_order(cell: &GaugeCell) -> u64 {
    // Relaxed: the read-modify-writes of one word are totally ordered, so
    // numbers are distinct and increase. What orders this against a reader
    // is the setter's shard bracket, which comes after it: a reader whose
    // validated read sees the set has synchronised with that bracket, and
    // its own later `current_order` returns this number or a later one.
    cell.0.fetch_add(1, Ordering::Relaxed) + 1
}

/// The set an add made now applies to: the latest begun.
#[inline(always)]
fn current_order(cell: &GaugeCell) -> u64 {
    // Relaxed: see `next_order`.
    cell.0.load(Ordering::Relaxed)
}

/// A handle to one histogram: cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Histogram {
    core: Arc<Core>,
    base: usize,
    layout: Layout,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("base", &self.base)
            .field("bounds", &self.layout.bounds())
            .finish()
    }
}

impl Histogram {
    /// Records one sample. Count, sum, max and bucket move together: no
    /// snapshot sees some of them without the others. (A bounded layout
    /// records it as an `f64`.)
    #[inline]
    pub fn record(&self, value: u64) {
        self.core
            .with_shard(|shard| shard.batch(|shard| self.record_into(shard, value)));
    }

    /// Records one `f64` sample (seconds, ratios). A bounded layout keeps it
    /// as it is; the log-linear layout rounds it to a `u64` (negative and
    /// NaN samples as 0).
    #[inline]
    pub fn record_f64(&self, value: f64) {
        match self.layout.bounds() {
            Some(bounds) => self
                .core
                .with_shard(|shard| shard.batch(|shard| self.record_bounded(shard, bounds, value))),
            None => self.record(value.round() as u64),
        }
    }

    /// [`record_into`](Self::record_into) as a call: keeps [`Stats::apply`]'s
    /// loop small enough for the compiler to unroll and keep in registers.
    #[inline(never)]
    fn record_into_shard(&self, shard: &Shard, value: u64) {
        self.record_into(shard, value);
    }

    /// The slot updates of one sample; the caller provides the bracket.
    #[inline(always)]
    fn record_into(&self, shard: &Shard, value: u64) {
        if let Some(bounds) = self.layout.bounds() {
            return self.record_bounded(shard, bounds, value as f64);
        }
        let base = self.base;
        shard.add(base + buckets::index(value), 1);
        shard.add(base + hist_slots::COUNT, 1);
        shard.add(base + hist_slots::SUM, value);
        shard.max(base + hist_slots::MAX, value);
    }

    /// The slot updates of one sample of a bounded layout.
    #[inline]
    fn record_bounded(&self, shard: &Shard, bounds: &[f64], value: f64) {
        let base = self.base;
        let n = bounds.len() + 1;
        shard.add(base + Layout::bounded_index(bounds, value), 1);
        shard.add(base + n, 1);
        shard.add_f64(base + n + 1, value);
        shard.max(base + n + 2, layout::max_key(value));
    }

    /// Records a duration in nanoseconds (saturating at `u64::MAX`).
    #[inline]
    pub fn record_duration(&self, elapsed: std::time::Duration) {
        self.record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// This histogram's bucket layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// This histogram's distribution over all threads.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let len = self.layout.slots();
        let run = self.base..self.base + len;
        let mut total = vec![0u64; len];
        let mut values = Vec::with_capacity(len);
        self.core.shards.for_each(|shard| {
            shard.read_range(run.clone(), &mut values);
            merge_histogram(&mut total, &values, &self.layout);
        });
        HistogramSnapshot::from_slots(&total, &self.layout)
    }
}

/// What a buffered [`Op`] does to its slot.
#[derive(Clone, Copy)]
enum OpKind {
    /// Add `value` (counters, histogram buckets, count, sum).
    Add,
    /// Add `value` as `f64` bits (a bounded histogram's sum).
    AddF64,
    /// Raise to `value` (a histogram's max).
    Max,
    /// A gauge set of value `value` (`f64` bits), at the gauge's base slot;
    /// `aux` indexes the batch's gauge cells until
    /// [`Batch::take_gauge_orders`] replaces it with the set's order number.
    GaugeSet,
    /// A gauge add of `value` (`f64` bits); `aux` as for `GaugeSet`, then
    /// the order number of the set it applies to.
    GaugeAdd,
}

/// One buffered update of a [`Batch`].
#[derive(Clone, Copy)]
struct Op {
    slot: u32,
    kind: OpKind,
    value: u64,
    aux: u64,
}

impl Op {
    #[inline(always)]
    fn add(slot: usize, value: u64) -> Self {
        Op {
            slot: slot as u32,
            kind: OpKind::Add,
            value,
            aux: 0,
        }
    }

    #[inline(always)]
    fn apply(&self, shard: &Shard) {
        let slot = self.slot as usize;
        match self.kind {
            OpKind::Add => shard.add(slot, self.value),
            OpKind::Max => shard.max(slot, self.value),
            OpKind::AddF64 => shard.add_f64(slot, f64::from_bits(self.value)),
            OpKind::GaugeSet => {
                shard.store(slot + gauge_slots::SET_ORDER, self.aux);
                shard.store(slot + gauge_slots::SET_VALUE, self.value);
            }
            OpKind::GaugeAdd => shard.gauge_add(slot, self.aux, f64::from_bits(self.value)),
        }
    }
}

/// One update of a group applied atomically by [`Stats::apply`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Update<'a> {
    /// Add to a counter.
    Add(&'a Counter, u64),
    /// Record a histogram sample.
    Record(&'a Histogram, u64),
}

impl Update<'_> {
    /// Whether this update's metric belongs to `core`.
    #[inline(always)]
    fn belongs_to(&self, core: &Core) -> bool {
        let owner = match self {
            Update::Add(counter, _) => &counter.core,
            Update::Record(histogram, _) => &histogram.core,
        };
        std::ptr::eq(Arc::as_ptr(owner), core)
    }
}

/// Updates collected by [`Stats::batch`], applied together when it returns.
pub struct Batch<'a> {
    core: &'a Core,
    /// The first [`INLINE_OPS`] updates: no allocation for typical batches.
    ops: ArrayVec<Op, INLINE_OPS>,
    /// Updates past the inline ones (empty `Vec`s do not allocate).
    spill: Vec<Op>,
    /// The cells of the gauges set or added, in op order (an op's `aux`
    /// indexes this until its order number is taken, when the batch is
    /// applied). Empty, and unallocated, in a batch without gauges.
    gauges: Vec<&'a GaugeCell>,
}

/// Updates a batch holds without allocating (a histogram sample takes 4).
const INLINE_OPS: usize = 8;

impl<'a> Batch<'a> {
    #[inline(always)]
    fn push(&mut self, op: Op) {
        if let Err(full) = self.ops.try_push(op) {
            self.spill.push(full.element());
        }
    }

    #[inline(always)]
    fn owns(&self, core: &Arc<Core>) -> bool {
        std::ptr::eq(Arc::as_ptr(core), self.core)
    }

    /// Adds `n` to `counter` as part of this batch.
    ///
    /// A counter of another [`Stats`] is updated at once instead, outside this
    /// batch (never lost, but not atomic with it).
    #[inline(always)]
    pub fn add(&mut self, counter: &Counter, n: u64) {
        if self.owns(&counter.core) {
            self.push(Op::add(counter.slot, n));
        } else {
            counter.add(n);
        }
    }

    /// Adds 1 to `counter` as part of this batch.
    #[inline(always)]
    pub fn inc(&mut self, counter: &Counter) {
        self.add(counter, 1);
    }

    /// Records `value` in `histogram` as part of this batch (a histogram of
    /// another [`Stats`] is recorded at once instead).
    #[inline(always)]
    pub fn record(&mut self, histogram: &Histogram, value: u64) {
        if !self.owns(&histogram.core) {
            histogram.record(value);
            return;
        }
        let base = histogram.base;
        if let Some(bounds) = histogram.layout.bounds() {
            return self.record_bounded(base, bounds, value as f64);
        }
        let add = Op::add;
        self.push(add(base + buckets::index(value), 1));
        self.push(add(base + hist_slots::COUNT, 1));
        self.push(add(base + hist_slots::SUM, value));
        self.push(Op {
            slot: (base + hist_slots::MAX) as u32,
            kind: OpKind::Max,
            value,
            aux: 0,
        });
    }

    /// Records the `f64` sample `value` in `histogram` as part of this
    /// batch (see [`Histogram::record_f64`]).
    #[inline]
    pub fn record_f64(&mut self, histogram: &Histogram, value: f64) {
        if !self.owns(&histogram.core) {
            histogram.record_f64(value);
            return;
        }
        match histogram.layout.bounds() {
            Some(bounds) => self.record_bounded(histogram.base, bounds, value),
            None => self.record(histogram, value.round() as u64),
        }
    }

    #[inline]
    fn record_bounded(&mut self, base: usize, bounds: &[f64], value: f64) {
        let n = bounds.len() + 1;
        self.push(Op::add(base + Layout::bounded_index(bounds, value), 1));
        self.push(Op::add(base + n, 1));
        self.push(Op {
            slot: (base + n + 1) as u32,
            kind: OpKind::AddF64,
            value: value.to_bits(),
            aux: 0,
        });
        self.push(Op {
            slot: (base + n + 2) as u32,
            kind: OpKind::Max,
            value: layout::max_key(value),
            aux: 0,
        });
    }

    /// Sets `gauge` to `value` as part of this batch: a snapshot that sees
    /// the batch's other updates sees this value (or a later set's), and
    /// one that does not sees neither. A gauge of another [`Stats`] is set
    /// at once instead.
    ///
    /// The set takes its order number when the batch is applied (when the
    /// closure returns), so it wins over sets that other threads made
    /// while the closure ran, and loses to those made after.
    #[inline]
    pub fn set(&mut self, gauge: &Gauge, value: f64) {
        if !self.owns(&gauge.core) {
            gauge.set(value);
            return;
        }
        self.push_gauge(gauge, OpKind::GaugeSet, value);
    }

    /// Adds `delta` to `gauge` as part of this batch: to the value of a
    /// [`set`](Self::set) of the same gauge earlier in this batch, if any,
    /// else to the latest set when the batch is applied. A gauge of another
    /// [`Stats`] is updated at once instead.
    #[inline]
    pub fn add_gauge(&mut self, gauge: &Gauge, delta: f64) {
        if !self.owns(&gauge.core) {
            gauge.add(delta);
            return;
        }
        self.push_gauge(gauge, OpKind::GaugeAdd, delta);
    }

    #[inline(always)]
    fn push_gauge(&mut self, gauge: &Gauge, kind: OpKind, value: f64) {
        // SAFETY: the gauge's handle belongs to this batch's `Stats` (the
        // callers checked `owns`). The registry entry of that gauge holds an
        // `Arc` to the same cell for as long as the `Core` lives (entries
        // are never removed), and the batch borrows the `Core` for `'a`, so
        // the cell outlives the reference even if the handle is dropped.
        let cell: &'a GaugeCell = unsafe { &*Arc::as_ptr(&gauge.cell) };
        self.push(Op {
            slot: gauge.base as u32,
            kind,
            value: value.to_bits(),
            aux: self.gauges.len() as u64,
        });
        self.gauges.push(cell);
    }

    /// Replaces each gauge op's cell index with its order number: a new
    /// one for a set, and for an add the order of the latest set of the
    /// same gauge earlier in this batch, else the latest set begun. Runs
    /// after the closure, before the bracket.
    #[cold]
    fn take_gauge_orders(&mut self) {
        let len = self.ops.len() + self.spill.len();
        for i in 0..len {
            let op = *self.op(i);
            let (kind, cell) = match op.kind {
                OpKind::GaugeSet | OpKind::GaugeAdd => (op.kind, self.gauges[op.aux as usize]),
                OpKind::Add | OpKind::AddF64 | OpKind::Max => continue,
            };
            let order = match kind {
                OpKind::GaugeSet => next_order(cell),
                _ => (0..i)
                    .rev()
                    .map(|j| *self.op(j))
                    .find(|earlier| {
                        matches!(earlier.kind, OpKind::GaugeSet) && earlier.slot == op.slot
                    })
                    .map_or_else(|| current_order(cell), |set| set.aux),
            };
            self.op_mut(i).aux = order;
        }
    }

    fn op(&self, i: usize) -> &Op {
        match i.checked_sub(self.ops.len()) {
            None => &self.ops[i],
            Some(j) => &self.spill[j],
        }
    }

    fn op_mut(&mut self, i: usize) -> &mut Op {
        match i.checked_sub(self.ops.len()) {
            None => &mut self.ops[i],
            Some(j) => &mut self.spill[j],
        }
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;

    #[test]
    fn handles_share_one_metric_per_name() {
        let stats = Stats::new();
        let a = stats.counter("hits").unwrap();
        let b = stats.counter("hits").unwrap();
        a.add(2);
        b.inc();
        assert_eq!(a.get(), 3);
        assert_eq!(stats.snapshot().counter("hits"), Some(3));
    }

    #[test]
    fn kind_mismatch_and_bad_names_are_typed_errors() {
        let stats = Stats::new();
        stats.counter("x").unwrap();
        assert_eq!(
            stats.gauge("x").unwrap_err(),
            StatsError::KindMismatch {
                name: "x".into(),
                existing: MetricKind::Counter,
                requested: MetricKind::Gauge
            }
        );
        assert!(matches!(
            stats.histogram("bad name"),
            Err(StatsError::InvalidName { .. })
        ));
        assert!(matches!(
            stats.describe("nope", "h"),
            Err(StatsError::UnknownMetric { .. })
        ));
    }

    #[test]
    fn slot_space_is_bounded() {
        let stats = Stats::builder()
            .max_slots(HISTOGRAM_SLOTS + 1)
            .build()
            .unwrap();
        stats.histogram("h").unwrap();
        stats.counter("c").unwrap();
        let err = stats.counter("d").unwrap_err();
        assert!(
            err.to_string().contains("raise StatsBuilder::max_slots"),
            "{err}"
        );
    }

    /// `max_slots(0)` and `max_slots(DEFAULT_MAX_SLOTS + 1)` were clamped
    /// silently; both are refused, naming the call and the value.
    #[test]
    fn out_of_range_max_slots_is_a_typed_error() {
        for bad in [0, DEFAULT_MAX_SLOTS + 1, usize::MAX] {
            let err = Stats::builder().max_slots(bad).build().unwrap_err();
            assert!(
                matches!(err, StatsError::InvalidSetting { setting: "max_slots", value, .. } if value == bad as u64),
                "{err:?}"
            );
            assert!(
                err.to_string().contains("StatsBuilder::max_slots("),
                "{err}"
            );
        }
        for good in [1, DEFAULT_MAX_SLOTS] {
            assert!(Stats::builder().max_slots(good).build().is_ok());
        }
    }

    #[test]
    fn gauges_hold_the_last_value() {
        let stats = Stats::new();
        let g = stats.gauge("last_query_ns").unwrap();
        g.set(40.0);
        g.add(-50.5);
        assert_eq!(g.get(), -10.5);
        assert_eq!(stats.snapshot().gauge("last_query_ns"), Some(-10.5));
        // An add applies to the latest set, whichever thread made it.
        std::thread::scope(|s| {
            s.spawn(|| g.set(7.0));
        });
        g.increment();
        assert_eq!(g.get(), 8.0);
        std::thread::scope(|s| {
            s.spawn(|| g.decrement());
        });
        assert_eq!(g.get(), 7.0);
        g.set(1.0);
        assert_eq!(stats.snapshot().gauge("last_query_ns"), Some(1.0));
    }

    #[test]
    fn gauges_join_batches() {
        let stats = Stats::new();
        let (calls, g) = (stats.counter("calls").unwrap(), stats.gauge("g").unwrap());
        stats.batch(|b| {
            b.inc(&calls);
            b.set(&g, 3.5);
            b.add_gauge(&g, 1.0);
        });
        assert_eq!(g.get(), 4.5);
        // An add before a set in the same batch is replaced by it.
        stats.batch(|b| {
            b.add_gauge(&g, 100.0);
            b.set(&g, 2.0);
            b.add_gauge(&g, -0.5);
        });
        assert_eq!(stats.snapshot().gauge("g"), Some(1.5));
        // The batch takes effect when it is applied: it wins over a set
        // another thread made while its closure ran...
        stats.batch(|b| {
            b.set(&g, 10.0);
            std::thread::scope(|s| {
                s.spawn(|| g.set(20.0));
            });
        });
        assert_eq!(g.get(), 10.0);
        // ...and loses to one made after, whose adds apply to it.
        std::thread::scope(|s| {
            s.spawn(|| g.set(30.0));
        });
        stats.batch(|b| b.add_gauge(&g, 1.0));
        assert_eq!(g.get(), 31.0);
        // A gauge of another `Stats` is set at once.
        let other = Stats::new();
        let og = other.gauge("g").unwrap();
        stats.batch(|b| {
            b.set(&og, 9.0);
            b.add_gauge(&og, 1.0);
            assert_eq!(og.get(), 10.0);
        });
    }

    #[test]
    fn a_panicking_batch_applies_nothing() {
        let stats = Stats::new();
        let c = stats.counter("c").unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            stats.batch(|b| {
                b.add(&c, 5);
                panic!("user code failed mid-batch");
            })
        }));
        assert!(caught.is_err());
        assert_eq!(c.get(), 0);
        stats.batch(|b| b.add(&c, 1));
        assert_eq!(stats.snapshot().counter("c"), Some(1));
    }

    #[test]
    fn batches_spill_past_the_inline_buffer() {
        let stats = Stats::new();
        let c = stats.counter("c").unwrap();
        let h = stats.histogram("h").unwrap();
        stats.batch(|b| {
            for i in 0..20 {
                b.add(&c, 1);
                b.record(&h, i);
            }
        });
        let snap = stats.snapshot();
        assert_eq!(snap.counter("c"), Some(20));
        let h = snap.histogram("h").unwrap();
        assert_eq!((h.count(), h.sum(), h.max()), (20, 190, 19));
    }

    #[test]
    fn apply_is_a_batch_and_handles_foreign_metrics() {
        let (a, b) = (Stats::new(), Stats::new());
        let (ca, cb) = (a.counter("c").unwrap(), b.counter("c").unwrap());
        let (ha, hb) = (a.histogram("h").unwrap(), b.histogram("h").unwrap());
        a.apply([Update::Add(&ca, 2), Update::Record(&ha, 40)]);
        a.apply([
            Update::Add(&ca, 1),
            Update::Add(&cb, 5),
            Update::Record(&hb, 7),
        ]);
        assert_eq!((ca.get(), cb.get()), (3, 5));
        assert_eq!((ha.snapshot().count(), ha.snapshot().max()), (1, 40));
        assert_eq!(hb.snapshot().sum(), 7);
    }

    #[test]
    fn foreign_handles_in_a_batch_are_applied_not_lost() {
        let (a, b) = (Stats::new(), Stats::new());
        let ca = a.counter("c").unwrap();
        let cb = b.counter("c").unwrap();
        let hb = b.histogram("h").unwrap();
        a.batch(|batch| {
            batch.add(&ca, 1);
            batch.add(&cb, 2);
            batch.record(&hb, 7);
        });
        assert_eq!((ca.get(), cb.get()), (1, 2));
        assert_eq!(hb.snapshot().count(), 1);
    }

    #[test]
    fn histogram_max_is_the_max_over_threads() {
        let stats = Stats::new();
        let h = stats.histogram("h").unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let h = h.clone();
                s.spawn(move || {
                    for v in 0..100 {
                        h.record(v * (t + 1));
                    }
                });
            }
        });
        let snap = h.snapshot();
        assert_eq!(snap.count(), 400);
        assert_eq!(snap.max(), 396);
        assert_eq!(snap.sum(), (0..100u64).sum::<u64>() * 10);
        assert_eq!(stats.snapshot().histogram("h"), Some(&snap));
    }

    #[test]
    fn snapshot_serialises_to_json() {
        let stats = Stats::new();
        stats.counter("c").unwrap().add(3);
        stats.gauge("g").unwrap().set(-1.5);
        stats.histogram("h").unwrap().record(10);
        let json: serde_json::Value = serde_json::to_value(stats.snapshot()).unwrap();
        assert_eq!(json["counters"]["c"], 3);
        assert_eq!(json["gauges"]["g"], -1.5);
        assert_eq!(json["histograms"]["h"]["count"], 1);
        assert_eq!(json["histograms"]["h"]["p99"], 10);
        assert_eq!(
            json["histograms"]["h"]["buckets"][0],
            serde_json::json!([10, 10, 1])
        );
    }
}
