#![cfg(latchfree_loom)]
//! Loom models of the `stats` protocols: the per-shard sequence lock around
//! batches, per-thread shards, and chunk publication.
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" CARGO_TARGET_DIR=target-loom LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --test loom_stats
//! ```
//!
//! The three models together take about 1 s with `LOOM_MAX_PREEMPTIONS=3`
//! (about 0.1 s with 2, about 9 s with 4), not counting the build. Every
//! mutation below is already caught with 2. Without the variable, [`model`]
//! bounds preemptions at 3: unbounded exploration ran for more than 15
//! minutes without finishing.
//!
//! Under `--cfg latchfree_loom` a shard chunk holds 4 slots, and every model
//! builds its `Stats` with `max_slots(16)`, so a shard is one `seq` word, its
//! chunk pointers and, once touched, one chunk of four slots.
//!
//! # Models, and the mutations each one catches
//!
//! Each mutation was applied to a scratch copy of the crate, and the models
//! were checked to fail under it:
//!
//! 1. [`batches_are_all_or_nothing`]: a writer applies two batches of
//!    `calls += 1; bytes += 3` while the main thread takes two snapshots. Every
//!    snapshot has `bytes == 3 * calls`, and the final one has
//!    `(calls, bytes) == (2, 6)`. Fails with a torn batch (`calls = 1,
//!    bytes = 6`) when, in `src/stats/shard.rs`:
//!    * the closing `seq.store(s + 2, Release)` of `batch` is `Relaxed`;
//!    * the `fence(Acquire)` of `read_range` is removed;
//!    * the `fence(Release)` of `batch` is removed;
//!    * the `s1 = seq.load(Acquire)` of `read_range` is `Relaxed`.
//!
//!    It takes two batches. The first batch allocates the chunk, and the
//!    reader's `Acquire` load of the chunk pointer synchronises with that
//!    allocation, which comes after the odd `seq` store. That hides the
//!    fence mutations. It also fails (with loom's "Causality violation")
//!    when the chunk publication is weakened, as in model 3.
//! 2. [`counter_reads_are_monotone_and_exact`]: two writers each `inc()` one
//!    counter twice, each in its own shard, while the main thread calls
//!    `get()` and checks that no read is below the one before. After the
//!    joins, `get() == 4`. Fails when:
//!    * the chunk-pointer load in `read_slot` is `Relaxed` (loom: "Causality
//!      violation: Concurrent load and mut accesses", because the reader
//!      touches slots whose creation it has not seen);
//!    * the `Release` store of the chunk pointer in `allocate` is `Relaxed`
//!      (the same);
//!    * two threads share one shard (the single-writer load + store loses an
//!      increment: "an increment was lost"). Mutation: the loom `PerThread`
//!      in `src/sync.rs` always hands out the first entry;
//!    * `add` publishes a transient value (stores 0, then the sum): "counter
//!      went backwards". Memory orderings alone cannot break monotonicity
//!      here, because each slot is read coherently. So this assertion guards
//!      the update logic, not an ordering.
//! 3. [`chunk_publication_on_first_touch`]: counters are registered before
//!    the spawn. The writer's first `inc()` allocates and publishes its
//!    shard's chunk while the main thread takes a `snapshot()`. Fails (loom:
//!    "Causality violation") when the chunk-pointer load in `read_range` is
//!    `Relaxed`, or when the `Release` store in `allocate` is `Relaxed`.
//!
//! A limit: loom's `PerThread` (in `src/sync.rs`) is a loom `Mutex` around a
//! list of entries, which every update and every snapshot locks. Those locks
//! add happens-before edges that the `std` build does not have. The failing
//! executions above are the ones where the reader's lock falls between two
//! writer operations. `src/per_thread.rs` itself is not modelled here.

use latchfree::stats::{Snapshot, Stats};
use loom::thread;

/// `loom::model`, with a preemption bound of [`DEFAULT_PREEMPTIONS`] unless
/// `LOOM_MAX_PREEMPTIONS` sets one.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(DEFAULT_PREEMPTIONS);
    builder.check(f);
}

/// See the module docs for what this bound costs and catches.
const DEFAULT_PREEMPTIONS: usize = 3;

/// Small enough that a shard is a handful of modelled atomics.
fn small_stats() -> Stats {
    Stats::builder().max_slots(16).build()
}

fn calls_and_bytes(snap: &Snapshot) -> (u64, u64) {
    let calls = snap.counter("calls").expect("calls is registered");
    let bytes = snap.counter("bytes").expect("bytes is registered");
    (calls, bytes)
}

/// Model 1: a snapshot sees each batch entirely or not at all.
#[test]
fn batches_are_all_or_nothing() {
    model(|| {
        let stats = small_stats();
        let calls = stats.counter("calls").unwrap();
        let bytes = stats.counter("bytes").unwrap();

        let writer = {
            let stats = stats.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    stats.batch(|b| {
                        b.add(&calls, 1);
                        b.add(&bytes, 3);
                    });
                }
            })
        };

        for _ in 0..2 {
            let (calls, bytes) = calls_and_bytes(&stats.snapshot());
            assert!(calls <= 2, "calls = {calls}");
            assert_eq!(
                bytes,
                3 * calls,
                "torn batch: calls = {calls}, bytes = {bytes}"
            );
        }

        writer.join().unwrap();
        assert_eq!(calls_and_bytes(&stats.snapshot()), (2, 6));
    });
}

/// Model 2: a counter's total, read again by one thread, never decreases,
/// and no increment is lost.
#[test]
fn counter_reads_are_monotone_and_exact() {
    model(|| {
        let stats = small_stats();
        let hits = stats.counter("hits").unwrap();

        let writers: Vec<_> = (0..2)
            .map(|_| {
                let hits = hits.clone();
                thread::spawn(move || {
                    hits.inc();
                    hits.inc();
                })
            })
            .collect();

        let mut last = 0;
        for _ in 0..2 {
            let now = hits.get();
            assert!(now >= last, "counter went backwards: {last} then {now}");
            assert!(now <= 4, "counter overshot: {now}");
            last = now;
        }

        for writer in writers {
            writer.join().unwrap();
        }
        let total = hits.get();
        assert!(total >= last, "counter went backwards: {last} then {total}");
        assert_eq!(total, 4, "an increment was lost");
        assert_eq!(stats.snapshot().counter("hits"), Some(4));
    });
}

/// Model 3: a shard's first write allocates and publishes its chunk while a
/// snapshot reads the shard.
#[test]
fn chunk_publication_on_first_touch() {
    model(|| {
        let stats = small_stats();
        let calls = stats.counter("calls").unwrap();
        let _bytes = stats.counter("bytes").unwrap();

        let writer = {
            let calls = calls.clone();
            thread::spawn(move || calls.inc())
        };

        let (seen, bytes) = calls_and_bytes(&stats.snapshot());
        assert!(seen <= 1, "calls = {seen}");
        assert_eq!(bytes, 0);

        writer.join().unwrap();
        assert_eq!(calls_and_bytes(&stats.snapshot()), (1, 0));
        assert_eq!(calls.get(), 1);
    });
}
