#![cfg(latchfree_loom)]
//! Loom models of the `stats` protocols: the per-shard sequence lock around
//! batches, per-thread shards, and chunk publication.
//!
//! Run (each model takes seconds; the whole file well under a minute):
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" CARGO_TARGET_DIR=target-loom LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --test loom_stats
//! ```
//!
//! Under `--cfg latchfree_loom` a shard chunk holds 4 slots, and every model
//! builds its `Stats` with `max_slots(16)`, so each shard is one seq word, four
//! chunk pointers and (once touched) one chunk of four slots.
//!
//! # Models, and the mutation of `src/stats/shard.rs` each one catches
//!
//! Each model was checked to fail under the mutations listed (then reverted):
//!
//! 1. [`batches_are_all_or_nothing`]: a writer applies two batches of
//!    `calls += 1; bytes += 3` while the main thread takes snapshots; every
//!    snapshot has `bytes == 3 * calls`, the final one `calls == 2, bytes == 6`.
//!    Catches a torn batch from: the closing `seq.store(s + 2, Release)` made
//!    `Relaxed`; the reader's `fence(Acquire)` in `read_range` removed; the
//!    writer's `fence(Release)` in `batch` removed. (The first write also
//!    allocates the chunk, so it catches weakened chunk publication too.)
//! 2. [`counter_reads_are_monotone_and_exact`]: two writers each `inc()` one
//!    counter twice, each in its own shard, while the main thread calls
//!    `get()` and checks that no read is below the one before; after the
//!    joins `get() == 4`. Catches: the chunk-pointer load in `read_slot` made
//!    `Relaxed` (loom: causality violation, the reader touches slots whose
//!    creation it has not seen); the `Release` store in `allocate` made
//!    `Relaxed` (same); and two threads sharing one shard (the single-writer
//!    load + store then loses an increment; mutation made in the loom
//!    `PerThread` of `src/sync.rs`).
//! 3. [`chunk_publication_on_first_touch`]: counters are registered before
//!    the spawn; the writer's first `inc()` allocates and publishes its shard's
//!    chunk while the main thread takes a `snapshot()`. Catches the
//!    chunk-pointer load in `read_range` made `Relaxed`, and the `Release`
//!    store in `allocate` made `Relaxed` (loom: causality violation on the
//!    slots' initialisation).

use latchfree::stats::{Snapshot, Stats};
use loom::thread;

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
    loom::model(|| {
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
    loom::model(|| {
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
    loom::model(|| {
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
