//! Names and label sets to series: validation, slot allocation, and the
//! published list of series that snapshots walk.
//!
//! A series is a name plus a label set (`http_requests_total{route="/a"}`).
//! Every series of one name is one *family*: it has one kind, one help text
//! and one unit, kept once per name. The label set is stored sorted by label
//! name, so `[("a","1"),("b","2")]` and `[("b","2"),("a","1")]` are the same
//! series; it is found by a hash that adds the hashes of the pairs (so the
//! order does not matter and a lookup allocates nothing) and confirmed by
//! comparing names and pairs.
//!
//! Registration is the cold path and takes a write lock; the hot path never
//! touches the registry (handles carry their slot). A snapshot takes the read
//! lock only to clone one `Arc` of the sorted metric list.
//!
//! Registration is O(1) amortised: it appends to `entries` and the name
//! index and forgets the published list. The sorted list is rebuilt
//! (O(n log n)) by the first snapshot that needs it, at most once per change
//! however many metrics were registered in between, so registering n
//! metrics costs O(n) and a snapshot after them one sort. (Rebuilding on
//! every registration made registering n metrics O(n² log n): 40,000 took
//! about a minute.)

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};

use super::StatsError;
use super::buckets::BUCKETS;
use super::layout::Layout;
use crate::sync::atomic::AtomicU64;

/// What a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MetricKind {
    /// A monotonically increasing `u64`, summed over threads.
    Counter,
    /// A last value, `f64` (set, or add to the last set).
    Gauge,
    /// A distribution of `u64` samples (e.g. latencies in ns).
    Histogram,
}

impl std::fmt::Display for MetricKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        })
    }
}

/// Slot layout of a histogram, relative to its base slot.
pub(crate) mod hist_slots {
    use super::BUCKETS;
    /// Number of samples.
    pub(crate) const COUNT: usize = BUCKETS;
    /// Sum of samples (wrapping).
    pub(crate) const SUM: usize = BUCKETS + 1;
    /// Largest sample.
    pub(crate) const MAX: usize = BUCKETS + 2;
    /// Slots a histogram occupies.
    pub(crate) const LEN: usize = BUCKETS + 3;
}

/// Slot layout of a gauge in each shard, relative to its base slot (see
/// `stats`, "Gauges").
pub(crate) mod gauge_slots {
    /// Order number of this shard's latest `set` (0: none).
    pub(crate) const SET_ORDER: usize = 0;
    /// The value of that `set`, as `f64` bits.
    pub(crate) const SET_VALUE: usize = 1;
    /// The order number of the `set` this shard's adds apply to.
    pub(crate) const ADD_EPOCH: usize = 2;
    /// This shard's adds since that `set`, as `f64` bits.
    pub(crate) const ADD_SUM: usize = 3;
    /// Slots a gauge occupies.
    pub(crate) const LEN: usize = 4;
}

/// A gauge's shared word, on a line of its own: the order number of the
/// latest set begun (0: none), which is also what an add applies to.
#[derive(Debug, Default)]
pub(crate) struct GaugeCell(pub(crate) crossbeam_utils::CachePadded<AtomicU64>);

/// Where a metric's data lives.
#[derive(Clone, Debug)]
pub(crate) enum Storage {
    Counter { slot: usize },
    Gauge { base: usize, cell: Arc<GaugeCell> },
    Histogram { base: usize, layout: Layout },
}

impl Storage {
    pub(crate) fn kind(&self) -> MetricKind {
        match self {
            Storage::Counter { .. } => MetricKind::Counter,
            Storage::Gauge { .. } => MetricKind::Gauge,
            Storage::Histogram { .. } => MetricKind::Histogram,
        }
    }
}

/// A series' labels: `(name, value)` pairs sorted by label name, names
/// unique.
pub(crate) type Labels = Arc<[(Arc<str>, Arc<str>)]>;

/// One registered series: a name plus a label set.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) name: Arc<str>,
    pub(crate) labels: Labels,
    /// The family's help text (copied in when the list is published).
    pub(crate) help: Option<Arc<str>>,
    /// The family's unit (copied in when the list is published).
    pub(crate) unit: Option<Arc<str>>,
    /// When the series was registered, in seconds since the Unix epoch
    /// (OpenMetrics `_created`).
    pub(crate) created: f64,
    pub(crate) storage: Storage,
}

impl Entry {
    /// Orders series by name, then by label set (pair by pair).
    pub(crate) fn cmp_key(&self, name: &str, labels: &[(&str, &str)]) -> std::cmp::Ordering {
        (*self.name).cmp(name).then_with(|| {
            self.labels
                .iter()
                .map(|(k, v)| (&**k, &**v))
                .cmp(labels.iter().copied())
        })
    }
}

/// What every series of one name shares: its kind, help text and unit.
#[derive(Clone, Debug, Default)]
struct Family {
    /// `None` while the name is only described (by the `metrics` recorder,
    /// which may describe before it registers).
    kind: Option<MetricKind>,
    help: Option<Arc<str>>,
    unit: Option<Arc<str>>,
}

/// The metric list a snapshot walks: sorted by name, then labels, plus the
/// slot count.
#[derive(Clone, Debug)]
pub(crate) struct Published {
    pub(crate) entries: Arc<[Entry]>,
    pub(crate) used_slots: usize,
}

pub(crate) struct Registry {
    families: HashMap<Arc<str>, Family>,
    /// Entries by the order-independent hash of their name and labels (see
    /// [`Registry::series_hash`]); collisions share a bucket.
    by_series: HashMap<u64, Vec<usize>>,
    hasher: RandomState,
    /// In registration order.
    entries: Vec<Entry>,
    used_slots: usize,
    /// `entries` sorted by name and labels, built by the first reader after
    /// a change. (Initialised under the registry's read lock: readers racing
    /// to build it wait for one build, then share it.)
    published: OnceLock<Published>,
    max_slots: usize,
}

/// Longest accepted metric name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, 1 to
/// [`MAX_NAME_LEN`] bytes.
pub(crate) fn validate_name(name: &str) -> Result<(), StatsError> {
    let mut bytes = name.bytes();
    let ok = match bytes.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == b'_' || first == b':')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
                && name.len() <= MAX_NAME_LEN
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(StatsError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Checks the label names of series `name` of `kind`: each matches
/// `[a-zA-Z_][a-zA-Z0-9_]*`, is 1 to [`MAX_NAME_LEN`] bytes, does not start
/// with `__` (reserved by Prometheus), is not `le` on a histogram (its
/// bucket label), and appears once.
pub(crate) fn validate_labels(
    name: &str,
    kind: MetricKind,
    labels: &[(&str, &str)],
) -> Result<(), StatsError> {
    for (i, &(label, _)) in labels.iter().enumerate() {
        let mut bytes = label.bytes();
        let ok = match bytes.next() {
            Some(first) => {
                (first.is_ascii_alphabetic() || first == b'_')
                    && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && label.len() <= MAX_NAME_LEN
                    && !label.starts_with("__")
                    && !(kind == MetricKind::Histogram && label == "le")
            }
            None => false,
        };
        if !ok {
            return Err(StatsError::InvalidLabelName {
                name: name.to_owned(),
                label: label.to_owned(),
            });
        }
        if labels[..i].iter().any(|&(earlier, _)| earlier == label) {
            return Err(StatsError::DuplicateLabel {
                name: name.to_owned(),
                label: label.to_owned(),
            });
        }
    }
    Ok(())
}

/// Whether `query` (in any order, possibly with repeated names) is exactly
/// the label set `stored` (sorted, unique names).
fn same_labels(stored: &[(Arc<str>, Arc<str>)], query: &[(&str, &str)]) -> bool {
    stored.len() == query.len()
        && query.iter().enumerate().all(|(i, &(k, v))| {
            query[..i].iter().all(|&(earlier, _)| earlier != k)
                && stored
                    .binary_search_by(|(sk, _)| (**sk).cmp(k))
                    .is_ok_and(|j| &*stored[j].1 == v)
        })
}

/// Slots a metric of `kind` (a histogram of `layout`) takes in every shard.
fn slots_needed(kind: MetricKind, layout: &Layout) -> usize {
    match kind {
        MetricKind::Counter => 1,
        MetricKind::Gauge => gauge_slots::LEN,
        MetricKind::Histogram => layout.slots(),
    }
}

/// The wall-clock time, for OpenMetrics' `_created`.
fn now_unix_seconds() -> f64 {
    // Miri's isolation (kept on for the unit tests it runs) refuses the
    // wall clock; `_created` is metadata that no test under Miri reads.
    if cfg!(miri) {
        return 0.0;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Registry {
    pub(crate) fn new(max_slots: usize) -> Self {
        Self {
            families: HashMap::new(),
            by_series: HashMap::new(),
            hasher: RandomState::new(),
            entries: Vec::new(),
            used_slots: 0,
            published: OnceLock::new(),
            max_slots,
        }
    }

    pub(crate) fn published(&self) -> Published {
        self.published
            .get_or_init(|| {
                let mut sorted = self.entries.clone();
                for entry in &mut sorted {
                    if let Some(family) = self.families.get(&entry.name) {
                        entry.help.clone_from(&family.help);
                        entry.unit.clone_from(&family.unit);
                    }
                }
                sorted.sort_unstable_by(|a, b| {
                    a.name.cmp(&b.name).then_with(|| a.labels.cmp(&b.labels))
                });
                Published {
                    entries: Arc::from(sorted),
                    used_slots: self.used_slots,
                }
            })
            .clone()
    }

    /// Series registered.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Slots taken by the metrics registered.
    pub(crate) fn used_slots(&self) -> usize {
        self.used_slots
    }

    /// A hash of `name` and the label set, whatever the labels' order:
    /// each pair is hashed alone and the hashes are added. Lookups need no
    /// sorted copy of the labels, so finding a registered series allocates
    /// nothing.
    fn series_hash(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        labels.iter().fold(self.hasher.hash_one(name), |h, pair| {
            h.wrapping_add(self.hasher.hash_one(pair))
        })
    }

    /// The storage of series `name{labels}` if it is registered as `kind`
    /// (or the kind mismatch if the name is another kind).
    pub(crate) fn lookup(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        kind: MetricKind,
        layout: &Layout,
    ) -> Option<Result<Storage, StatsError>> {
        let hash = self.series_hash(name, labels);
        let found = self.by_series.get(&hash).and_then(|candidates| {
            candidates
                .iter()
                .map(|&i| &self.entries[i])
                .find(|entry| &*entry.name == name && same_labels(&entry.labels, labels))
        });
        match found {
            Some(entry) => Some(check_kind(entry, kind).and_then(|storage| match &storage {
                Storage::Histogram {
                    layout: existing, ..
                } if existing != layout => Err(StatsError::LayoutMismatch {
                    name: name.to_owned(),
                }),
                _ => Ok(storage),
            })),
            None => match self.families.get(name).and_then(|f| f.kind) {
                Some(existing) if existing != kind => Some(Err(StatsError::KindMismatch {
                    name: name.to_owned(),
                    existing,
                    requested: kind,
                })),
                _ => None,
            },
        }
    }

    /// Registers series `name{labels}` as `kind`, or returns the existing
    /// registration.
    pub(crate) fn register(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        kind: MetricKind,
        layout: &Layout,
    ) -> Result<Storage, StatsError> {
        if let Some(found) = self.lookup(name, labels, kind, layout) {
            return found;
        }
        validate_name(name)?;
        validate_labels(name, kind, labels)?;
        let needed = slots_needed(kind, layout);
        let base = self.used_slots;
        if self.max_slots - base < needed {
            return Err(StatsError::SlotsExhausted {
                name: name.to_owned(),
                needed,
                available: self.max_slots - base,
                max_slots: self.max_slots,
            });
        }
        let storage = match kind {
            MetricKind::Counter => Storage::Counter { slot: base },
            MetricKind::Gauge => Storage::Gauge {
                base,
                cell: Arc::new(GaugeCell::default()),
            },
            MetricKind::Histogram => Storage::Histogram {
                base,
                layout: layout.clone(),
            },
        };
        let name: Arc<str> = match self.families.get_key_value(name) {
            Some((existing, _)) => existing.clone(),
            None => Arc::from(name),
        };
        self.families.entry(name.clone()).or_default().kind = Some(kind);
        let mut sorted: Vec<(Arc<str>, Arc<str>)> = labels
            .iter()
            .map(|&(k, v)| (Arc::from(k), Arc::from(v)))
            .collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let hash = self.series_hash(&name, labels);
        self.by_series
            .entry(hash)
            .or_default()
            .push(self.entries.len());
        self.entries.push(Entry {
            name,
            labels: Arc::from(sorted),
            help: None,
            unit: None,
            created: now_unix_seconds(),
            storage: storage.clone(),
        });
        self.used_slots = base + needed;
        self.published = OnceLock::new();
        Ok(storage)
    }

    /// Sets the help text of a registered metric name (all its series).
    pub(crate) fn describe(&mut self, name: &str, help: &str) -> Result<(), StatsError> {
        match self.families.get_mut(name) {
            Some(family) if family.kind.is_some() => {
                family.help = Some(Arc::from(help));
                self.published = OnceLock::new();
                Ok(())
            }
            _ => Err(StatsError::UnknownMetric {
                name: name.to_owned(),
            }),
        }
    }

    /// Sets the help text and unit of `name`, registered or not yet (the
    /// `metrics` facade describes before it registers). An invalid name is
    /// refused.
    pub(crate) fn describe_family(
        &mut self,
        name: &str,
        help: Option<&str>,
        unit: Option<&str>,
    ) -> Result<(), StatsError> {
        validate_name(name)?;
        let family = self.families.entry(Arc::from(name)).or_default();
        if let Some(help) = help {
            family.help = Some(Arc::from(help));
        }
        if let Some(unit) = unit {
            family.unit = Some(Arc::from(unit));
        }
        self.published = OnceLock::new();
        Ok(())
    }
}

fn check_kind(entry: &Entry, requested: MetricKind) -> Result<Storage, StatsError> {
    let existing = entry.storage.kind();
    if existing == requested {
        Ok(entry.storage.clone())
    } else {
        Err(StatsError::KindMismatch {
            name: entry.name.to_string(),
            existing,
            requested,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registration does not rebuild the sorted list (that made
    /// registering n metrics quadratic); the first reader after a change
    /// builds it once, and later readers share it.
    #[test]
    fn registration_defers_the_sorted_list_to_the_next_reader() {
        // Fewer under Miri, where each registration takes milliseconds.
        let n: usize = if cfg!(miri) { 100 } else { 2_000 };
        let mut r = Registry::new(1 << 16);
        for i in (0..n).rev() {
            r.register(
                &format!("m_{i:05}"),
                &[],
                MetricKind::Counter,
                &Layout::default(),
            )
            .unwrap();
            assert!(r.published.get().is_none(), "rebuilt on registration {i}");
        }
        assert_eq!((r.len(), r.used_slots()), (n, n));
        let first = r.published();
        assert!(Arc::ptr_eq(&first.entries, &r.published().entries));
        assert_eq!(first.used_slots, n);
        assert_eq!(&*first.entries[0].name, "m_00000");
        assert_eq!(*first.entries[n - 1].name, format!("m_{:05}", n - 1));
        // An existing name changes nothing; a new one or a help text does.
        r.register("m_00007", &[], MetricKind::Counter, &Layout::default())
            .unwrap();
        assert!(r.published.get().is_some());
        r.describe("m_00007", "seven").unwrap();
        assert!(r.published.get().is_none());
        assert_eq!(r.published().entries[7].help.as_deref(), Some("seven"));
    }

    #[test]
    fn names_follow_the_prometheus_grammar() {
        for good in ["a", "_x", "http_requests_total", "ns:sub_1", "A9"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "9a", "a-b", "a b", "é", "a{b}", long.as_str()] {
            assert!(
                matches!(validate_name(bad), Err(StatsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn slots_are_allocated_contiguously_and_bounded() {
        let mut r = Registry::new(hist_slots::LEN + 2 + gauge_slots::LEN);
        assert!(matches!(
            r.register("a", &[], MetricKind::Counter, &Layout::default()),
            Ok(Storage::Counter { slot: 0 })
        ));
        assert!(matches!(
            r.register("h", &[], MetricKind::Histogram, &Layout::default()),
            Ok(Storage::Histogram { base: 1, .. })
        ));
        assert!(matches!(
            r.register("a", &[], MetricKind::Counter, &Layout::default()),
            Ok(Storage::Counter { slot: 0 })
        ));
        assert!(matches!(
            r.register("b", &[], MetricKind::Counter, &Layout::default()),
            Ok(Storage::Counter { slot }) if slot == 1 + hist_slots::LEN
        ));
        assert!(matches!(
            r.register("g", &[], MetricKind::Gauge, &Layout::default()),
            Ok(Storage::Gauge { base, .. }) if base == 2 + hist_slots::LEN
        ));
        let full = r.register("c", &[], MetricKind::Counter, &Layout::default());
        assert!(matches!(
            full,
            Err(StatsError::SlotsExhausted {
                needed: 1,
                available: 0,
                ..
            })
        ));
        assert_eq!(
            r.published().used_slots,
            hist_slots::LEN + 2 + gauge_slots::LEN
        );
        let names: Vec<_> = r
            .published()
            .entries
            .iter()
            .map(|e| e.name.to_string())
            .collect();
        assert_eq!(names, ["a", "b", "g", "h"]);
    }
}
