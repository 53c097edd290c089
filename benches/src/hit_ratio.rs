//! Hit ratios of bounded caches on seeded traces: how often each cache
//! answers from memory when a server asks it `get` and, on a miss, loads
//! and `insert`s.
//!
//! | trace | keys | what it tests |
//! |---|---|---|
//! | `zipf-0.99` | 1M | a skewed popularity, as web and query traffic |
//! | `zipf-0.7` | 1M | a flatter one: frequency matters more than recency |
//! | `zipf-scan` | 100k (Zipf 0.99) + a 20k-key sequential scan every 50k requests | scan resistance |
//! | `shifting` | Zipf 0.99 over 100k keys whose set moves every 500k requests | adapting to a new working set |
//!
//! Each trace runs at 10k and 100k entries of capacity (`zipf-scan` and
//! `shifting` at 10k), single-threaded, against:
//!
//! | name | what |
//! |---|---|
//! | `latchfree` | [`TtlCache`] with a one-hour TTL on every entry |
//! | `latchfree-no-ttl` | [`TtlCache`] without a TTL |
//! | `moka` | `moka::sync::Cache` (W-TinyLFU), its upkeep run every 1,000 requests as a server's would |
//! | `quick_cache` | `quick_cache::sync::Cache` (S3-FIFO-like, with a ghost queue) |
//! | `lru` | an exact least-recently-used reference |
//! | `fifo` | a first-in-first-out reference |
//!
//! Every value read is checked against its key. A multi-threaded row
//! replays the `zipf-0.99` trace at 10k from 4 threads (thread `t` takes
//! requests `t`, `t + 4`, …) to show the ratio holds under concurrency.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use latchfree::cache::TtlCache;

use crate::map::Rng;
use serde::Serialize;

/// Requests per trace.
pub const REQUESTS: usize = 2_000_000;

/// One measured hit ratio.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The trace's name.
    pub trace: &'static str,
    /// The cache's capacity, in entries.
    pub capacity: usize,
    /// The implementation's name.
    pub imp: &'static str,
    /// Threads replaying the trace.
    pub threads: usize,
    /// Hits / requests, in percent.
    pub hit_percent: f64,
}

/// A bounded cache under test, as a server uses it.
trait Bounded: Send + Sync {
    fn get(&self, key: u64) -> Option<u64>;
    fn insert(&self, key: u64, value: u64);
    /// Upkeep a server runs periodically (moka's pending tasks).
    fn upkeep(&self) {}
}

struct Latchfree(TtlCache<u64, u64>);

impl Latchfree {
    fn new(capacity: usize, ttl: bool) -> Self {
        let mut builder = TtlCache::builder().max_entries(capacity);
        if ttl {
            builder = builder.time_to_live(Duration::from_secs(3_600));
        }
        Self(builder.build().expect("a valid cache"))
    }
}

impl Bounded for Latchfree {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }

    fn insert(&self, key: u64, value: u64) {
        // An evicting cache always has room; a refusal would be a bug.
        self.0
            .insert(key, value)
            .expect("an evicting cache makes room");
    }
}

struct Moka(moka::sync::Cache<u64, u64>);

impl Bounded for Moka {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }

    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }

    fn upkeep(&self) {
        self.0.run_pending_tasks();
    }
}

struct Quick(quick_cache::sync::Cache<u64, u64>);

impl Bounded for Quick {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }

    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
}

/// An exact LRU: a map into a doubly linked list kept in a vector.
struct Lru {
    inner: std::sync::Mutex<LruInner>,
}

struct LruInner {
    capacity: usize,
    slots: HashMap<u64, usize>,
    /// `(key, value, prev, next)`; `usize::MAX` is none.
    nodes: Vec<(u64, u64, usize, usize)>,
    head: usize,
    tail: usize,
}

const NIL: usize = usize::MAX;

impl LruInner {
    fn unlink(&mut self, i: usize) {
        let (_, _, prev, next) = self.nodes[i];
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev].3 = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next].2 = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].2 = NIL;
        self.nodes[i].3 = self.head;
        if self.head != NIL {
            self.nodes[self.head].2 = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            inner: std::sync::Mutex::new(LruInner {
                capacity,
                slots: HashMap::with_capacity(capacity),
                nodes: Vec::with_capacity(capacity),
                head: NIL,
                tail: NIL,
            }),
        }
    }
}

impl Bounded for Lru {
    fn get(&self, key: u64) -> Option<u64> {
        let mut lru = self.inner.lock().expect("not poisoned");
        let i = *lru.slots.get(&key)?;
        lru.unlink(i);
        lru.push_front(i);
        Some(lru.nodes[i].1)
    }

    fn insert(&self, key: u64, value: u64) {
        let mut lru = self.inner.lock().expect("not poisoned");
        if let Some(&i) = lru.slots.get(&key) {
            lru.nodes[i].1 = value;
            lru.unlink(i);
            lru.push_front(i);
            return;
        }
        let i = if lru.nodes.len() < lru.capacity {
            lru.nodes.push((key, value, NIL, NIL));
            lru.nodes.len() - 1
        } else {
            let i = lru.tail;
            lru.unlink(i);
            let old = lru.nodes[i].0;
            lru.slots.remove(&old);
            lru.nodes[i] = (key, value, NIL, NIL);
            i
        };
        lru.slots.insert(key, i);
        lru.push_front(i);
    }
}

/// FIFO: insertion order, reads change nothing.
struct Fifo {
    inner: std::sync::Mutex<(usize, HashMap<u64, u64>, VecDeque<u64>)>,
}

impl Bounded for Fifo {
    fn get(&self, key: u64) -> Option<u64> {
        self.inner
            .lock()
            .expect("not poisoned")
            .1
            .get(&key)
            .copied()
    }

    fn insert(&self, key: u64, value: u64) {
        let mut guard = self.inner.lock().expect("not poisoned");
        let (capacity, map, order) = &mut *guard;
        if map.insert(key, value).is_none() {
            order.push_back(key);
            if order.len() > *capacity
                && let Some(old) = order.pop_front()
            {
                map.remove(&old);
            }
        }
    }
}

/// Uniform in [0, 1).
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Ranks 0..n drawn with probability ∝ 1 / (rank + 1)^s, by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for rank in 0..n {
            sum += 1.0 / ((rank + 1) as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = unit(rng);
        self.cdf.partition_point(|&c| c < u) as u64
    }
}

/// Spreads ranks over the key space, so popularity is not key order.
fn key_of(rank: u64) -> u64 {
    rank.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555
}

/// The trace named `name`, `requests` long, from a fixed seed.
pub fn trace(name: &str, requests: usize) -> Vec<u64> {
    let mut rng = Rng::new(0x1a7c_4f2e);
    match name {
        "zipf-0.99" | "zipf-0.7" => {
            let s = if name == "zipf-0.99" { 0.99 } else { 0.7 };
            let zipf = Zipf::new(1_000_000, s);
            (0..requests)
                .map(|_| key_of(zipf.sample(&mut rng)))
                .collect()
        }
        "zipf-scan" => {
            let zipf = Zipf::new(100_000, 0.99);
            let mut out = Vec::with_capacity(requests);
            let mut scan_base = 10_000_000u64;
            while out.len() < requests {
                for _ in 0..50_000 {
                    out.push(key_of(zipf.sample(&mut rng)));
                }
                // A scan of keys never asked for otherwise.
                out.extend((scan_base..scan_base + 20_000).map(key_of));
                scan_base += 20_000;
            }
            out.truncate(requests);
            out
        }
        "shifting" => {
            let zipf = Zipf::new(100_000, 0.99);
            (0..requests)
                .map(|i| {
                    let phase = (i / 500_000) as u64;
                    key_of(zipf.sample(&mut rng) + phase * 1_000_000)
                })
                .collect()
        }
        _ => panic!("no trace named {name}"),
    }
}

/// The traces and capacities measured, in table order.
pub const CASES: [(&str, usize); 6] = [
    ("zipf-0.99", 10_000),
    ("zipf-0.99", 100_000),
    ("zipf-0.7", 10_000),
    ("zipf-0.7", 100_000),
    ("zipf-scan", 10_000),
    ("shifting", 10_000),
];

/// The implementations measured, in column order.
pub const IMPLS: [&str; 6] = [
    "latchfree",
    "latchfree-no-ttl",
    "moka",
    "quick_cache",
    "lru",
    "fifo",
];

fn build(imp: &str, capacity: usize) -> Arc<dyn Bounded> {
    match imp {
        "latchfree" => Arc::new(Latchfree::new(capacity, true)),
        "latchfree-no-ttl" => Arc::new(Latchfree::new(capacity, false)),
        "moka" => Arc::new(Moka(moka::sync::Cache::new(capacity as u64))),
        "quick_cache" => Arc::new(Quick(quick_cache::sync::Cache::new(capacity))),
        "lru" => Arc::new(Lru::new(capacity)),
        "fifo" => Arc::new(Fifo {
            inner: std::sync::Mutex::new((capacity, HashMap::new(), VecDeque::new())),
        }),
        _ => panic!("no implementation named {imp}"),
    }
}

/// Replays `trace` into `cache` from `threads` threads; the hits.
fn replay(cache: &Arc<dyn Bounded>, trace: &[u64], threads: usize) -> Result<u64, String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut hits = 0;
                    for (i, &key) in trace.iter().enumerate().skip(t).step_by(threads) {
                        match cache.get(key) {
                            Some(value) if value == !key => hits += 1,
                            Some(value) => {
                                return Err(format!("key {key} read {value}, not {}", !key));
                            }
                            None => cache.insert(key, !key),
                        }
                        if i % 1_000 == 0 {
                            cache.upkeep();
                        }
                    }
                    Ok(hits)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a replay thread panicked".to_string())?
            })
            .sum()
    })
}

/// Every trace against every implementation at one thread, then the
/// `zipf-0.99` / 10k trace at `threads` for the concurrent caches.
/// `progress` is called before each replay.
pub fn run(
    requests: usize,
    threads: usize,
    mut progress: impl FnMut(&str, usize, &str),
) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let mut traces: HashMap<&str, Vec<u64>> = HashMap::new();
    for (name, capacity) in CASES {
        let trace = traces
            .entry(name)
            .or_insert_with(|| self::trace(name, requests));
        for imp in IMPLS {
            progress(name, capacity, imp);
            let hits = replay(&build(imp, capacity), trace, 1)?;
            rows.push(Row {
                trace: name,
                capacity,
                imp,
                threads: 1,
                hit_percent: 100.0 * hits as f64 / trace.len() as f64,
            });
        }
    }
    if threads > 1 {
        let (name, capacity) = CASES[0];
        let trace = &traces[name];
        for imp in ["latchfree", "latchfree-no-ttl", "moka", "quick_cache"] {
            progress(name, capacity, imp);
            let hits = replay(&build(imp, capacity), trace, threads)?;
            rows.push(Row {
                trace: name,
                capacity,
                imp,
                threads,
                hit_percent: 100.0 * hits as f64 / trace.len() as f64,
            });
        }
    }
    Ok(rows)
}

/// The rows as a table: one line per trace and thread count, one column
/// per implementation.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!("{:<11} {:>8} {:>7}", "trace", "capacity", "threads");
    for imp in IMPLS {
        out += &format!(" {imp:>16}");
    }
    out.push('\n');
    let mut seen = HashSet::new();
    for row in rows {
        let line = (row.trace, row.capacity, row.threads);
        if !seen.insert(line) {
            continue;
        }
        out += &format!("{:<11} {:>8} {:>7}", row.trace, row.capacity, row.threads);
        for imp in IMPLS {
            match rows
                .iter()
                .find(|r| (r.trace, r.capacity, r.threads) == line && r.imp == imp)
            {
                Some(r) => out += &format!(" {:>15.2}%", r.hit_percent),
                None => out += &format!(" {:>16}", "-"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_seeded_and_shaped_as_named() {
        assert_eq!(trace("zipf-0.99", 1_000), trace("zipf-0.99", 1_000));
        let zipf = trace("zipf-0.99", 100_000);
        let top = zipf.iter().filter(|&&k| k == key_of(0)).count();
        // Rank 0 of Zipf 0.99 over 1M keys has probability ~6.6 %.
        assert!((5_000..8_500).contains(&top), "rank 0 drawn {top} times");
        let scan = trace("zipf-scan", 80_000);
        assert_eq!(scan[50_000], key_of(10_000_000));
        assert_eq!(scan[69_999], key_of(10_019_999));
    }

    #[test]
    fn the_references_are_exact() {
        let lru = build("lru", 2);
        let fifo = build("fifo", 2);
        for cache in [&lru, &fifo] {
            cache.insert(1, 1);
            cache.insert(2, 2);
            assert_eq!(cache.get(1), Some(1));
            cache.insert(3, 3);
        }
        // LRU evicted 2 (1 was read); FIFO evicted 1 (first in).
        assert_eq!(
            (lru.get(1), lru.get(2), lru.get(3)),
            (Some(1), None, Some(3))
        );
        assert_eq!(
            (fifo.get(1), fifo.get(2), fifo.get(3)),
            (None, Some(2), Some(3))
        );
    }

    #[test]
    fn a_replay_counts_hits_and_checks_values() {
        let cache = build("lru", 10);
        let hits = replay(&cache, &[1, 2, 1, 1, 3, 2], 1).unwrap();
        assert_eq!(hits, 3);
        cache.insert(7, 7);
        assert!(replay(&cache, &[7], 1).unwrap_err().contains("key 7"));
    }
}
