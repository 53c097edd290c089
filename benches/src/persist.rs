//! The `persist` workload: a TTL cache with a disk tier holding
//! [`ENTRIES`] entries (`u64` keys, 64-byte values), latchfree's
//! [`PersistentTtlCache`] against the locked twin
//! [`LockedPersistentCache`] (one JSON file per entry, read and written
//! under the cache's mutex).
//!
//! | op | what one operation is | exactness checked |
//! |---|---|---|
//! | `read_through` | a lookup of a uniformly random key with [`MEMORY`] entries in memory: about 96 % of lookups miss memory, read the key's file, check its deadline and checksum (locked: parse its JSON), and put the entry back into memory, evicting another (latchfree: second chance; locked: whichever entry its map iterates first, no scan) | every lookup returned its key's value |
//! | `write` | an insert of a uniformly random key among [`WRITE_KEYS`] (all in memory), each file fsynced (both caches' default): latchfree returns once the change is queued for its writer thread, which writes only the newest value of a key changed again before its turn; locked writes, fsyncs and renames the file under its lock before returning | after a flush, one file per distinct key written, each holding the value memory holds |
//! | `warm_up_100k` | a restart: open the cache on the directory (every entry loaded into memory; latchfree in parallel with rayon, locked one file after another under its lock), then drop it | every open loaded all [`ENTRIES`] entries |
//!
//! The two directories (one per implementation, each in its own format)
//! are written once per process, untimed, under `TMPDIR`, shared by both
//! ops and every thread count, and deleted by [`remove_fixtures`]. Run
//! `warm_up_100k` with `--threads 1` for the restart time (more threads
//! take turns: a directory holds one open cache at a time, and the
//! latchfree tier refuses a second with `PersistError::InUse`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use rayon::prelude::*;

use super::map::Rng;
use super::{Case, Target, expect_eq};
use latchfree::baseline::LockedPersistentCache;
use latchfree::cache::persist::format;
use latchfree::cache::{PersistentTtlCache, TtlCache};

/// Entries on disk.
pub const ENTRIES: u64 = 100_000;
/// Entries the memory tier holds in `read_through`: 4 % of the disk's, so
/// about 96 % of uniformly drawn lookups miss memory.
pub const MEMORY: usize = 4_096;
/// The time to live of every entry (long: nothing expires during a run).
pub const TTL: Duration = Duration::from_secs(60 * 60);

/// An entry's value: its key and 56 bytes of payload.
type Value = (u64, String);

fn value(k: u64) -> Value {
    (k, format!("{k:056}"))
}

/// Every case of the `persist` workload.
pub fn cases() -> Vec<Case> {
    vec![
        read_through::<Latchfree>(),
        read_through::<Locked>(),
        write::<Latchfree>(),
        write::<Locked>(),
        warm_up::<Latchfree>(),
        warm_up::<Locked>(),
    ]
}

fn read_through<T: Tiered>() -> Case {
    Case {
        workload: "persist",
        op: "read_through",
        imp: T::IMP,
        guarantee: "disk-tier",
        latency: true,
        make: |threads| Box::new(ReadThrough::<T>::new(threads)),
    }
}

fn write<T: Tiered>() -> Case {
    Case {
        workload: "persist",
        op: "write",
        imp: T::IMP,
        guarantee: "disk-tier",
        latency: true,
        make: |threads| Box::new(Writes::<T>::new(threads)),
    }
}

fn warm_up<T: Tiered>() -> Case {
    Case {
        workload: "persist",
        op: "warm_up_100k",
        imp: T::IMP,
        guarantee: "disk-tier",
        latency: false,
        make: |_| {
            Box::new(WarmUp::<T> {
                fixture: fixture::<T>(),
                opens: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                turn: Mutex::new(()),
                imp: std::marker::PhantomData,
            })
        },
    }
}

/// What the workload needs of an implementation.
trait Tiered: Send + Sync + Sized + 'static {
    const IMP: &'static str;
    /// The extension of its entry files.
    const EXT: &'static str;
    /// Opens the cache in `dir` with `memory` entries in memory, without
    /// fsync (the fixtures: only reading is timed).
    fn open(dir: &Path, memory: usize) -> Self {
        Self::open_with(dir, memory, false)
    }
    fn open_with(dir: &Path, memory: usize, fsync: bool) -> Self;
    /// Writes [`ENTRIES`] entries and waits until they are on disk.
    fn fill(&self) {
        (0..ENTRIES)
            .into_par_iter()
            .for_each(|k| self.insert(k, value(k)));
        self.flush();
    }
    fn insert(&self, k: u64, v: Value);
    /// Waits until every insert made is on disk.
    fn flush(&self);
    fn get(&self, k: u64) -> Option<Value>;
    fn len(&self) -> usize;
    /// The value in `dir`'s file for `k`, read without the cache.
    fn on_disk(dir: &Path, k: u64) -> Option<Value>;
}

/// The name of `k`'s file (before its extension), as both caches name it.
fn stem_of(k: u64) -> String {
    let key = serde_json::to_vec(&k).expect("a u64 serializes");
    format::file_name(&key)
}

struct Latchfree(PersistentTtlCache<u64, Value>);

impl Tiered for Latchfree {
    const IMP: &'static str = "latchfree";
    const EXT: &'static str = format::EXTENSION;

    fn open_with(dir: &Path, memory: usize, fsync: bool) -> Self {
        Self(
            TtlCache::builder()
                .max_entries(memory)
                .time_to_live(TTL)
                .persist_dir(dir)
                .fsync(fsync)
                .open()
                .expect("open the latchfree cache"),
        )
    }

    fn insert(&self, k: u64, v: Value) {
        self.0.insert(k, v).unwrap();
    }

    fn flush(&self) {
        self.0.flush().expect("flush the latchfree cache");
    }

    fn on_disk(dir: &Path, k: u64) -> Option<Value> {
        let bytes = std::fs::read(dir.join(stem_of(k))).ok()?;
        let entry = format::decode(&bytes).ok()?;
        serde_json::from_slice(entry.value).ok()
    }

    fn get(&self, k: u64) -> Option<Value> {
        self.0.get(&k)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

struct Locked(LockedPersistentCache<u64, Value>);

impl Tiered for Locked {
    const IMP: &'static str = "locked";
    const EXT: &'static str = "json";

    fn open_with(dir: &Path, memory: usize, fsync: bool) -> Self {
        Self(
            LockedPersistentCache::builder(dir)
                .max_entries(memory)
                .time_to_live(TTL)
                .fsync(fsync)
                .open()
                .expect("open the locked cache"),
        )
    }

    fn insert(&self, k: u64, v: Value) {
        self.0.insert(k, v).expect("write to the locked cache");
    }

    fn flush(&self) {
        // Every insert wrote its file before it returned.
    }

    fn on_disk(dir: &Path, k: u64) -> Option<Value> {
        #[derive(serde::Deserialize)]
        struct File {
            value: Value,
        }
        let path = dir.join(stem_of(k)).with_extension(Self::EXT);
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice::<File>(&bytes).ok().map(|f| f.value)
    }

    fn get(&self, k: u64) -> Option<Value> {
        self.0.get(&k)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The fixture directories, one per implementation, written once.
static FIXTURES: Mutex<Vec<(&str, Arc<tempfile::TempDir>)>> = Mutex::new(Vec::new());

/// `T`'s fixture directory, written on first use.
fn fixture<T: Tiered>() -> Arc<tempfile::TempDir> {
    let mut fixtures = FIXTURES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, dir)) = fixtures.iter().find(|(imp, _)| *imp == T::IMP) {
        return dir.clone();
    }
    let dir = Arc::new(
        tempfile::Builder::new()
            .prefix("latchfree-bench-persist-")
            .tempdir()
            .expect("a scratch directory under TMPDIR"),
    );
    T::open(dir.path(), ENTRIES as usize).fill();
    fixtures.push((T::IMP, dir.clone()));
    dir
}

/// Deletes the fixture directories (once no target uses them). Call it
/// after the run.
pub fn remove_fixtures() {
    FIXTURES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

struct ReadThrough<T> {
    cache: T,
    _fixture: Arc<tempfile::TempDir>,
    rngs: Vec<CachePadded<AtomicU64>>,
    lookups: AtomicU64,
    wrong: AtomicU64,
}

impl<T: Tiered> ReadThrough<T> {
    fn new(threads: usize) -> Self {
        let fixture = fixture::<T>();
        Self {
            cache: T::open(fixture.path(), MEMORY),
            _fixture: fixture,
            rngs: (0..threads as u64)
                .map(|t| CachePadded::new(AtomicU64::new(Rng::new(t).0)))
                .collect(),
            lookups: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
        }
    }
}

impl<T: Tiered> Target for ReadThrough<T> {
    fn run(&self, thread: usize, n: u64) {
        // Relaxed: only this worker touches its generator and counts.
        let mut rng = Rng(self.rngs[thread].load(Ordering::Relaxed));
        let mut wrong = 0;
        for _ in 0..n {
            let k = rng.below(ENTRIES);
            if self.cache.get(k).is_none_or(|v| v.0 != k) {
                wrong += 1;
            }
        }
        self.rngs[thread].store(rng.0, Ordering::Relaxed);
        self.lookups.fetch_add(n, Ordering::Relaxed);
        self.wrong.fetch_add(wrong, Ordering::Relaxed);
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        Some(
            expect_eq("lookups", self.lookups.load(Ordering::Relaxed), total_ops).and_then(|()| {
                expect_eq(
                    "lookups without their value",
                    self.wrong.load(Ordering::Relaxed),
                    0,
                )
            }),
        )
    }

    fn report(&self) -> Option<String> {
        Some(format!(
            "{} lookups, each found its value; {} in memory at the end",
            self.lookups.load(Ordering::Relaxed),
            self.cache.len()
        ))
    }
}

struct WarmUp<T> {
    fixture: Arc<tempfile::TempDir>,
    opens: AtomicU64,
    failures: AtomicU64,
    /// Held from open to drop: one cache on the fixture at a time.
    turn: Mutex<()>,
    imp: std::marker::PhantomData<fn() -> T>,
}

impl<T: Tiered> Target for WarmUp<T> {
    fn run(&self, _thread: usize, n: u64) {
        for _ in 0..n {
            let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
            let cache = T::open(self.fixture.path(), 2 * ENTRIES as usize);
            if cache.len() != ENTRIES as usize {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            drop(cache);
        }
        self.opens.fetch_add(n, Ordering::Relaxed);
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        Some(
            expect_eq("opens", self.opens.load(Ordering::Relaxed), total_ops).and_then(|()| {
                expect_eq(
                    "opens that did not load every entry",
                    self.failures.load(Ordering::Relaxed),
                    0,
                )
            }),
        )
    }

    fn report(&self) -> Option<String> {
        Some(format!(
            "{} opens, each loaded all {ENTRIES} entries",
            self.opens.load(Ordering::Relaxed)
        ))
    }
}

/// Keys the `write` op draws from.
pub const WRITE_KEYS: u64 = 10_000;

struct Writes<T> {
    cache: T,
    dir: tempfile::TempDir,
    rngs: Vec<CachePadded<AtomicU64>>,
    /// Inserts made by each worker (its next value's version).
    inserts: Vec<CachePadded<AtomicU64>>,
    /// Whether key `k` was written (set, never cleared).
    written: Vec<AtomicBool>,
    /// The longest flush after a slice (the backlog the slice left), in ns.
    slowest_flush_ns: AtomicU64,
    report: OnceLock<String>,
}

impl<T: Tiered> Writes<T> {
    fn new(threads: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("latchfree-bench-persist-write-")
            .tempdir()
            .expect("a scratch directory under TMPDIR");
        Self {
            cache: T::open_with(dir.path(), 2 * WRITE_KEYS as usize, true),
            dir,
            rngs: (0..threads as u64)
                .map(|t| CachePadded::new(AtomicU64::new(Rng::new(t).0)))
                .collect(),
            inserts: (0..threads).map(|_| CachePadded::default()).collect(),
            written: (0..WRITE_KEYS).map(|_| AtomicBool::new(false)).collect(),
            slowest_flush_ns: AtomicU64::new(0),
            report: OnceLock::new(),
        }
    }

    fn check(&self, total_ops: u64) -> Result<String, String> {
        let inserts = self.inserts.iter().map(|n| n.load(Ordering::Relaxed)).sum();
        expect_eq("inserts", inserts, total_ops)?;
        self.cache.flush();
        let files = std::fs::read_dir(self.dir.path())
            .map_err(|e| format!("listing {}: {e}", self.dir.path().display()))?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == T::EXT))
            .count() as u64;
        let keys: Vec<u64> = (0..WRITE_KEYS)
            .filter(|&k| self.written[k as usize].load(Ordering::Relaxed))
            .collect();
        expect_eq(
            "entry files vs distinct keys written",
            files,
            keys.len() as u64,
        )?;
        let stale = keys
            .iter()
            .filter(|&&k| T::on_disk(self.dir.path(), k) != self.cache.get(k))
            .count();
        expect_eq("files holding other than memory's value", stale as u64, 0)?;
        Ok(format!(
            "{total_ops} inserts; after a flush, {files} files == distinct keys, each \
             holding memory's value; the slowest flush after a slice took {:.1} ms",
            self.slowest_flush_ns.load(Ordering::Relaxed) as f64 / 1e6
        ))
    }
}

impl<T: Tiered> Target for Writes<T> {
    fn run(&self, thread: usize, n: u64) {
        // Relaxed: only this worker touches its generator and its count.
        let mut rng = Rng(self.rngs[thread].load(Ordering::Relaxed));
        let mut count = self.inserts[thread].load(Ordering::Relaxed);
        for _ in 0..n {
            let k = rng.below(WRITE_KEYS);
            if !self.written[k as usize].load(Ordering::Relaxed) {
                self.written[k as usize].store(true, Ordering::Relaxed);
            }
            // Unique per insert: the worker, then its count.
            self.cache
                .insert(k, (k, format!("{thread:08}-{count:047}")));
            count += 1;
        }
        self.rngs[thread].store(rng.0, Ordering::Relaxed);
        self.inserts[thread].store(count, Ordering::Relaxed);
    }

    /// Flushes (untimed), noting how long the slice's backlog took: the
    /// part of latchfree's writes that the timed slice did not wait for
    /// (at most [`DEFAULT_QUEUE_CAPACITY`](latchfree::cache::persist::DEFAULT_QUEUE_CAPACITY)
    /// changes; beyond that inserts wait for the disk, in the slice).
    fn settle(&self) {
        let start = std::time::Instant::now();
        self.cache.flush();
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.slowest_flush_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        Some(self.check(total_ops).map(|report| {
            let _ = self.report.set(report);
        }))
    }

    fn report(&self) -> Option<String> {
        self.report.get().cloned()
    }
}
