//! Loom models of the `stats` protocols: the per-shard sequence lock around
//! batches, the copy a writer publishes for a reader that keeps losing (the
//! help path), per-thread shards, and chunk publication.
//!
//! ```text
//! RUSTFLAGS="--cfg latchfree_loom" CARGO_TARGET_DIR=target-loom LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --test loom_stats
//! ```
//!
//! Models 1 to 5 together take about 6 s with `LOOM_MAX_PREEMPTIONS=3`
//! (about 0.5 s with 2, about 40 s with 4), not counting the build; model 4
//! is most of it. Without the variable, [`model`] bounds preemptions at 3:
//! unbounded exploration ran for more than 15 minutes without finishing.
//! Every sequence-lock and chunk mutation below is already caught with 2;
//! the help path needs 3 in models 1 and 5 (see "Reaching the help path").
//!
//! Under `--cfg latchfree_loom` a shard chunk holds 4 slots, a reader asks
//! the writer for a copy after a single failed read (`FAST_ATTEMPTS` is 1),
//! and every model builds its `Stats` with `max_slots(16)`. So a shard is a
//! `seq` word, a `help` word, its chunk and copy pointers and, once touched,
//! a chunk (or two) of four slots.
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
//!    when the chunk publication is weakened, as in model 3. With 3
//!    preemptions it reaches the help path too, and catches H1, H3, H6, H7
//!    and H8 of the table below.
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
//! 4. [`help_copies_are_consistent_and_fresh`]: a writer applies three
//!    batches of `calls += 1; bytes += 3`, yielding between them, while the
//!    main thread takes two snapshots. Every snapshot has
//!    `bytes == 3 * calls`, the second has no fewer calls than the first,
//!    and the final one is `(3, 9)`. Catches H1, H3, H6, H7, H8 and H9 below
//!    (all but H7 already with 2 preemptions). H9 (an all-zero copy, which
//!    is consistent) is caught only here, by "calls went backwards: 1 then
//!    0"; with the `bytes` assertion removed, that check alone also catches
//!    H1, H3 and H6.
//! 5. [`help_copy_spans_every_chunk`]: as model 1, but three padding counters
//!    are registered between `calls` and `bytes`, so `calls` is slot 0 in
//!    the first chunk and `bytes` slot 4 in the second; one snapshot while
//!    the writer runs. Catches H1, H3, H5, H6, H7 and H8. H5 (a copy of the
//!    first chunk only: "torn snapshot: calls = 2, bytes = 0") is caught only
//!    here.
//! 6. [`gauge_sets_in_batches_are_all_or_nothing`]: a writer applies two
//!    batches of `calls += 1; set(last, calls)` (the gauge's four slots
//!    span both chunks of the shard) while the main thread takes two
//!    snapshots; every snapshot has `last == calls`, the final one `(2, 2)`.
//!    Fails ("torn batch") when the gauge set is written outside the batch's
//!    bracket (mutation: `Batch::set` calls `Gauge::set` at once) and under
//!    the sequence-lock mutations of model 1.
//! 7. [`an_add_after_a_seen_set_applies_to_it`]: one thread sets a gauge to
//!    5; another reads it and then adds 1. If the reader saw 5, the final
//!    value is 6; in every execution it is 5 or 6 (the add raced the set and
//!    came before it, or came after). Fails ("the add after a seen set was
//!    dropped") when the set announces its number after its shard write
//!    instead of taking it before (mutation: `Gauge::set` writes the shard
//!    with the old number and then `fetch_add`s), which is the reason for
//!    the order of the two.
//!
//! # The help path: mutations of `src/stats/shard.rs`
//!
//! | #   | mutation                                                         | 1 | 4 | 5 |
//! | --- | ---------------------------------------------------------------- | - | - | - |
//! | H1  | final `compare_exchange` of `publish_copy` succeeds `Relaxed`     | x | x | x |
//! | H2  | the `fence(Acquire)` of `publish_copy` is removed                 | - | - | - |
//! | H3  | `publish_copy` publishes first, then copies                       | x | x | x |
//! | H4  | the reader accepts any `PUBLISHED`, whatever its generation       | - | - | - |
//! | H5  | `publish_copy` copies the first chunk only                        | - | - | x |
//! | H6  | the reader's `help.load(Acquire)` is `Relaxed`                    | x | x | x |
//! | H7  | the reader reads the live chunks, unvalidated, not the copy       | x | x | x |
//! | H8  | the writer answers a request after every slot update (mid-batch)  | x | x | x |
//! | H9  | `publish_copy` copies nothing (the reader gets zeros)             | - | x | - |
//! | H10 | the reader's `help.store(request, Release)` is `Relaxed`          | - | - | - |
//! | H11 | a chunk is copied only when its copy chunk is first allocated     | - | - | - |
//! | H12 | the writer answers after `apply` but before closing `seq`         | - | - | - |
//!
//! A `panic!` in the reader's copy branch, or in `publish_copy`, fails
//! models 1, 4 and 5, so all three check executions where a copy is made
//! and read. The survivors:
//!
//! * H4 and H12 are equivalent mutants. After its own `gen | REQUESTED`
//!   store, the reader's loads of `help` can return only that store or a
//!   later one, and the only later stores are the writer's exchange (which
//!   succeeds only from exactly `gen | REQUESTED`) and the reader's own
//!   withdrawal: it can never see another generation's `PUBLISHED`. The
//!   generation protects the writer's exchange, not the reader's comparison.
//!   Model 4 runs 1,685 second-generation copy reads at 3 preemptions and
//!   passes under H4. Under H12 the copy is still taken after every store of
//!   the batch, in the writer's own program order, and the copy path never
//!   reads `seq`.
//! * H2 and H10 break the pairing of the reader's `Release` request with the
//!   writer's `Acquire` fence. Without it, nothing forbids load buffering:
//!   the writer's relaxed `help` load at the end of batch `k` may read a
//!   request that the reader made after it loaded (relaxed) a slot value
//!   that batch `k + 1` stores. Then `calls.get()` followed by `snapshot()`
//!   can go backwards, and a reader still reading copy `g` can see stores of
//!   copy `g + 1` (the `help_lock` hand-off orders it before request `g + 1`,
//!   but nothing orders that request before the writer's copy). Loom does
//!   not explore load buffering (its README, "Unsupported features"), so
//!   no model can catch these. The fence is needed for the memory model and
//!   costs nothing on the fast path.
//! * H11 (a stale copy on the second request) survives at 3, and model 4
//!   at 4: showing it takes a reader that saw a value newer than the first
//!   copy between two answered requests, more preemptions than the bound
//!   allows.
//!
//! # Reaching the help path
//!
//! Under loom a failed read yields (`backoff`) before it asks for help, and
//! going back to a thread that yielded while the writer can still run costs
//! a preemption. So in models 1 and 5, whose writer never yields, a request
//! that a later batch can answer needs 3: main to the writer (so that its
//! shard exists), the writer mid-batch to main, and back to main after its
//! yield. With 2, their readers post requests but no execution publishes a
//! copy. Model 4's writer yields between batches, which makes those
//! switches free: it publishes copies with 2, and with 3 some executions
//! answer two requests (a second generation, copied into the reused copy
//! chunks). Probe counts at 3 preemptions: model 1 reads a copy in 1,828
//! of 14,750 executions, model 4 in 22,314 of 79,753, model 5 in 990 of
//! 6,809. Model 5 keeps a writer that never yields, because loom prunes
//! executions after a yield: a load may not return a store its thread saw
//! before the yield if a newer one exists. In model 4 that rules out a
//! writer overlooking a request posted before its yield.
//!
//! A limit: loom's `PerThread` (in `src/sync.rs`) is a loom `Mutex` around a
//! list of entries, which every update and every snapshot locks. Those locks
//! add happens-before edges that the `std` build does not have. The failing
//! executions above are the ones where the reader's lock falls between two
//! writer operations. `src/per_thread.rs` itself is not modelled here.
use crate::stats::{Snapshot, Stats};
use loom::thread;

use super::common::model;

/// Small enough that a shard is a handful of modelled atomics.
fn small_stats() -> Stats {
    Stats::builder()
        .max_slots(16)
        .build()
        .expect("16 slots is within the bounds")
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

/// Model 4: a reader that loses its one fast attempt asks the writer for a
/// copy, and the copy is consistent and no older than what it read before.
#[test]
fn help_copies_are_consistent_and_fresh() {
    model(|| {
        let stats = small_stats();
        let calls = stats.counter("calls").unwrap();
        let bytes = stats.counter("bytes").unwrap();

        let writer = {
            let stats = stats.clone();
            thread::spawn(move || {
                for round in 0..3 {
                    if round > 0 {
                        // Between batches: a switch here costs no preemption,
                        // so a request can land before the next batch ends.
                        thread::yield_now();
                    }
                    stats.batch(|b| {
                        b.add(&calls, 1);
                        b.add(&bytes, 3);
                    });
                }
            })
        };

        let mut last = 0;
        for _ in 0..2 {
            let (calls, bytes) = calls_and_bytes(&stats.snapshot());
            assert!(calls <= 3, "calls = {calls}");
            assert_eq!(
                bytes,
                3 * calls,
                "torn snapshot: calls = {calls}, bytes = {bytes}"
            );
            assert!(calls >= last, "calls went backwards: {last} then {calls}");
            last = calls;
        }

        writer.join().unwrap();
        assert_eq!(calls_and_bytes(&stats.snapshot()), (3, 9));
    });
}

/// Model 5: the copy covers every chunk. `bytes` is registered fifth, so it
/// lives in the shard's second chunk, `calls` in the first.
#[test]
fn help_copy_spans_every_chunk() {
    model(|| {
        let stats = small_stats();
        let calls = stats.counter("calls").unwrap();
        for pad in ["pad1", "pad2", "pad3"] {
            stats.counter(pad).unwrap();
        }
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

        let (calls, bytes) = calls_and_bytes(&stats.snapshot());
        assert!(calls <= 2, "calls = {calls}");
        assert_eq!(
            bytes,
            3 * calls,
            "torn snapshot: calls = {calls}, bytes = {bytes}"
        );

        writer.join().unwrap();
        assert_eq!(calls_and_bytes(&stats.snapshot()), (2, 6));
    });
}

/// Model 6: a gauge set in a batch is seen with the batch's counter.
#[test]
fn gauge_sets_in_batches_are_all_or_nothing() {
    model(|| {
        let stats = small_stats();
        let calls = stats.counter("calls").unwrap();
        let last = stats.gauge("last").unwrap();

        let writer = {
            let stats = stats.clone();
            thread::spawn(move || {
                for k in 1..=2 {
                    stats.batch(|b| {
                        b.add(&calls, 1);
                        b.set(&last, f64::from(k));
                    });
                }
            })
        };

        for _ in 0..2 {
            let snap = stats.snapshot();
            let calls = snap.counter("calls").unwrap();
            let last = snap.gauge("last").unwrap();
            assert_eq!(
                last, calls as f64,
                "torn batch: calls = {calls}, last = {last}"
            );
        }

        writer.join().unwrap();
        let snap = stats.snapshot();
        assert_eq!(
            (snap.counter("calls"), snap.gauge("last")),
            (Some(2), Some(2.0))
        );
    });
}

/// Model 7: an add made after its thread saw a set applies to that set.
#[test]
fn an_add_after_a_seen_set_applies_to_it() {
    model(|| {
        let stats = small_stats();
        let gauge = stats.gauge("g").unwrap();

        let setter = {
            let gauge = gauge.clone();
            thread::spawn(move || gauge.set(5.0))
        };
        let adder = {
            let gauge = gauge.clone();
            thread::spawn(move || {
                let seen = gauge.get();
                gauge.add(1.0);
                seen
            })
        };

        setter.join().unwrap();
        let seen = adder.join().unwrap();
        let last = gauge.get();
        assert!(last == 5.0 || last == 6.0, "final value {last}");
        if seen == 5.0 {
            assert_eq!(last, 6.0, "the add after a seen set was dropped");
        }
    });
}
