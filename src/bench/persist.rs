//! The `persist` workload: a TTL cache with a disk tier holding
//! [`ENTRIES`] entries (`u64` keys, 64-byte values), latchfree's
//! [`PersistentTtlCache`] against the locked twin
//! [`LockedPersistentCache`] (one JSON file per entry, read and written
//! under the cache's mutex).
//!
//! | op | what one operation is | exactness checked |
//! |---|---|---|
//! | `read_through` | a lookup of a uniformly random key with [`MEMORY`] entries in memory: about 96 % of lookups miss memory, read the key's file, check its deadline and checksum (locked: parse its JSON), and put the entry back into memory, evicting another (latchfree: second chance; locked: whichever entry its map iterates first, no scan) | every lookup returned its key's value |
//! | `warm_up_100k` | a restart: open the cache on the directory (every entry loaded into memory; latchfree in parallel with rayon, locked one file after another under its lock), then drop it | every open loaded all [`ENTRIES`] entries |
//!
//! The two directories (one per implementation, each in its own format)
//! are written once per process, untimed, under `TMPDIR`, shared by both
//! ops and every thread count, and deleted by [`remove_fixtures`]. Run
//! `warm_up_100k` with `--threads 1` for the restart time (more threads
//! take turns: a directory holds one open cache at a time, and the
//! latchfree tier refuses a second with `PersistError::InUse`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use rayon::prelude::*;

use super::map::Rng;
use super::{Case, Target, expect_eq};
use crate::baseline::LockedPersistentCache;
use crate::cache::{PersistentTtlCache, TtlCache};

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
    /// Opens the cache in `dir` with `memory` entries in memory.
    fn open(dir: &Path, memory: usize) -> Self;
    /// Writes [`ENTRIES`] entries and waits until they are on disk.
    fn fill(&self);
    fn get(&self, k: u64) -> Option<Value>;
    fn len(&self) -> usize;
}

struct Latchfree(PersistentTtlCache<u64, Value>);

impl Tiered for Latchfree {
    const IMP: &'static str = "latchfree";

    fn open(dir: &Path, memory: usize) -> Self {
        Self(
            TtlCache::builder()
                .max_entries(memory)
                .time_to_live(TTL)
                .persist_dir(dir)
                .fsync(false)
                .open()
                .expect("open the latchfree fixture"),
        )
    }

    fn fill(&self) {
        (0..ENTRIES).into_par_iter().for_each(|k| {
            self.0.insert(k, value(k));
        });
        self.0.flush().expect("write the latchfree fixture");
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

    fn open(dir: &Path, memory: usize) -> Self {
        Self(
            LockedPersistentCache::builder(dir)
                .max_entries(memory)
                .time_to_live(TTL)
                .fsync(false)
                .open()
                .expect("open the locked fixture"),
        )
    }

    fn fill(&self) {
        (0..ENTRIES).into_par_iter().for_each(|k| {
            self.0
                .insert(k, value(k))
                .expect("write the locked fixture");
        });
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
