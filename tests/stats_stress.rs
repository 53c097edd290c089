//! Stress tests of `latchfree::stats` under contention: more threads than
//! cores, threads that exit mid-run, and readers racing writers.
//!
//! Every test checks exact totals (the crate promises that no update is ever
//! lost) and, where readers run concurrently, that each snapshot is
//! consistent (batches all-or-nothing, counters monotone per reader).
//! Nothing here sleeps for a set time: threads coordinate through joins,
//! atomic flags and a barrier, and the one watchdog waits on a channel with a
//! deadline.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use latchfree::stats::{Counter, Histogram, HistogramSnapshot, Snapshot, Stats};

const THREADS: u64 = 8;
const INCS_PER_THREAD: u64 = 1_000_000;

/// Sets its flag when dropped, including while unwinding: a failed assertion
/// in the thread that owns it still stops the workers, so the test fails
/// instead of hanging in `thread::scope`.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// (a) 8 threads × 1,000,000 `inc()` on a 2-core machine: nothing is lost.
///
/// Even in a debug build this takes well under a second, so it runs in every
/// `cargo test`.
#[test]
fn eight_threads_million_increments_each_are_exact() {
    let stats = Stats::new();
    let hits = stats.counter("hits_total").unwrap();
    thread::scope(|s| {
        for _ in 0..THREADS {
            let hits = hits.clone();
            s.spawn(move || {
                for _ in 0..INCS_PER_THREAD {
                    hits.inc();
                }
            });
        }
    });
    let expected = THREADS * INCS_PER_THREAD;
    assert_eq!(hits.get(), expected);
    assert_eq!(stats.snapshot().counter("hits_total"), Some(expected));
}

/// (b) Sensitivity check for (a): the same workload on one shared atomic
/// updated with an unsynchronised read-modify-write does lose updates on this
/// machine, so the exact-total assertion in (a) is able to catch a lost
/// update (e.g. if shards were shared between threads, or `Counter::add` were
/// a plain load+store on a shared slot).
///
/// A single run can be lucky: the threads may run one after another (in a
/// release build each finishes its million updates within a time slice,
/// and other tests in this file may hold both cores), or the two cores may
/// rarely interleave inside the load/store window. So the threads start
/// together at a barrier, a run is retried up to 100 times, and the test
/// asserts that at least one run lost updates. In a debug build the first
/// run virtually always loses many thousands.
#[test]
fn unsynchronised_rmw_on_one_atomic_loses_updates() {
    const ATTEMPTS: usize = 100;
    let expected = THREADS * INCS_PER_THREAD;
    let mut totals = Vec::new();
    for _ in 0..ATTEMPTS {
        let x = AtomicU64::new(0);
        let start = Barrier::new(THREADS as usize);
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..INCS_PER_THREAD {
                        // Deliberately racy: two threads can load the same
                        // value and both store value + 1.
                        x.store(x.load(Relaxed) + 1, Relaxed);
                    }
                });
            }
        });
        let total = x.into_inner();
        assert!(total <= expected, "more than issued: {total}");
        totals.push(total);
        if total < expected {
            break;
        }
    }
    assert!(
        totals.iter().any(|&t| t < expected),
        "no run of the racy RMW lost an update ({} runs); the exact-total \
         test could not tell a lost update from a correct run on this machine",
        totals.len()
    );
    println!(
        "racy RMW: run {} of up to {ATTEMPTS} lost {} updates",
        totals.len(),
        expected - totals.last().unwrap()
    );
}

const WRITERS: u64 = 4;
const READERS: usize = 2;

/// Runs `writers` threads that each loop `stats.batch(..)` (adding 1 to
/// `calls_total`, 3 to `bytes_total`, and, when `hist` is given, recording
/// a value `v` in it and adding `v` to `value_sum_total`) until `readers`
/// threads have each taken `snapshots_per_reader` snapshots and passed them
/// to `check`, which returns the snapshot's `calls_total`. Each reader also
/// asserts that `calls_total` (via the snapshot and via `Counter::get`)
/// never decreases. Writers never yield: each batches back to back until
/// told to stop. Prints the run's length and its longest snapshot (shown
/// with `--nocapture`). Returns the number of batches written.
fn race_batches_against_snapshots(
    stats: &Stats,
    hist: Option<&Histogram>,
    writers: u64,
    readers: usize,
    snapshots_per_reader: usize,
    check: fn(&Snapshot) -> u64,
) -> u64 {
    let calls = stats.counter("calls_total").unwrap();
    let bytes = stats.counter("bytes_total").unwrap();
    let value_sum = stats.counter("value_sum_total").unwrap();
    let stop = AtomicBool::new(false);
    let (calls, bytes, value_sum, stop) = (&calls, &bytes, &value_sum, &stop);
    let start = Instant::now();
    let (written, longest) = thread::scope(|s| {
        let writers: Vec<_> = (0..writers)
            .map(|w| {
                s.spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Relaxed) {
                        let v = (n * 7 + w * 1000) % 5000;
                        stats.batch(|b| {
                            b.add(calls, 1);
                            b.add(bytes, 3);
                            if let Some(hist) = hist {
                                b.add(value_sum, v);
                                b.record(hist, v);
                            }
                        });
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let readers: Vec<_> = (0..readers)
            .map(|_| {
                s.spawn(move || {
                    let mut last = 0u64;
                    let mut last_get = 0u64;
                    let mut longest = Duration::ZERO;
                    for _ in 0..snapshots_per_reader {
                        let t = Instant::now();
                        let snap = stats.snapshot();
                        longest = longest.max(t.elapsed());
                        let now = check(&snap);
                        assert!(now >= last, "calls went back: {last} -> {now}");
                        last = now;
                        let got = calls.get();
                        assert!(got >= now, "Counter::get after a snapshot saw less");
                        assert!(got >= last_get, "Counter::get went back");
                        last_get = got;
                    }
                    longest
                })
            })
            .collect();
        // Join every reader before stopping the writers, but stop them even
        // if a reader failed, then re-raise the reader's panic.
        let outcomes: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        stop.store(true, Relaxed);
        let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        let mut longest = Duration::ZERO;
        for outcome in outcomes {
            match outcome {
                Ok(l) => longest = longest.max(l),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        (written, longest)
    });
    println!(
        "{} checked snapshots by {readers} readers against {writers} writers \
         ({written} batches) in {:.2?}; longest snapshot {longest:.2?}",
        readers * snapshots_per_reader,
        start.elapsed(),
    );
    written
}

/// `bytes == 3 * calls`: a snapshot that saw part of a batch would break it.
fn check_counters(snap: &Snapshot) -> u64 {
    let calls = snap.counter("calls_total").unwrap();
    let bytes = snap.counter("bytes_total").unwrap();
    assert_eq!(bytes, 3 * calls, "torn batch: calls={calls} bytes={bytes}");
    calls
}

/// [`check_counters`], plus the histogram recorded in the same batch: its
/// count equals `calls`, its sum equals the counter of the same values, and
/// its buckets add up to its count.
fn check_counters_and_histogram(snap: &Snapshot) -> u64 {
    let calls = check_counters(snap);
    let value_sum = snap.counter("value_sum_total").unwrap();
    let h: &HistogramSnapshot = snap.histogram("value").unwrap();
    assert_eq!(h.count(), calls, "torn batch: histogram count vs calls");
    assert_eq!(h.sum(), value_sum, "torn batch: histogram sum vs counter");
    let in_buckets: u64 = h.buckets().map(|(_, _, n)| n).sum();
    assert_eq!(in_buckets, h.count(), "histogram buckets vs count");
    calls
}

/// (c) Batches are all-or-nothing in every snapshot: 4 writers batching
/// back to back against 2 readers taking 100,000 snapshots in all.
#[test]
fn batches_are_atomic_in_every_snapshot() {
    let stats = Stats::new();
    let written =
        race_batches_against_snapshots(&stats, None, WRITERS, READERS, 50_000, check_counters);
    let snap = stats.snapshot();
    assert_eq!(check_counters(&snap), written);
    assert_eq!(snap.counter("bytes_total"), Some(3 * written));
    assert_eq!(snap.counter("value_sum_total"), Some(0));
}

const HIST_WRITERS: u64 = 2;
const HIST_READERS: usize = 5;

/// (c, continued) The same race with a histogram recorded inside each batch:
/// 2 writers batching back to back, never yielding, against 5 readers taking
/// 100,000 snapshots in all, each checked.
///
/// Each snapshot reads the histogram's ~1,900 slots in every writer's shard
/// while that writer keeps batching, so most reads of a shard overlap a
/// batch; a reader that keeps failing gets a copy from the writer (see the
/// module docs of `src/stats/shard.rs`). (Mutation check: with the seqlock's
/// `s1 == s2` validation removed, this test and the one above fail within a
/// second.)
///
/// The run's length is set by waits, not by reading: a writer preempted
/// mid-batch leaves its shard's `seq` odd until it runs again, and every
/// snapshot that reaches that shard meanwhile waits (milliseconds on 2
/// cores). Each extra writer adds such waits, while extra readers wait in
/// parallel; hence 2 writers and 5 readers. (Debug build, 2 cores: about
/// 15 s; 4 writers and 2 readers took 150 to 240 s.)
#[test]
fn histogram_in_a_batch_agrees_with_its_counters_in_every_snapshot() {
    let stats = Stats::new();
    let hist = stats.histogram("value").unwrap();
    let written = race_batches_against_snapshots(
        &stats,
        Some(&hist),
        HIST_WRITERS,
        HIST_READERS,
        100_000 / HIST_READERS,
        check_counters_and_histogram,
    );
    let snap = stats.snapshot();
    assert_eq!(check_counters_and_histogram(&snap), written);
    assert_eq!(hist.snapshot().count(), written);
    assert_eq!(&hist.snapshot(), snap.histogram("value").unwrap());
}

/// Sensitivity check for (c): reading the two counters separately (each
/// `Counter::get` is exact but the pair is not one atomic read) under the
/// same writers does observe a partly applied stream of batches, so the
/// `bytes == 3 * calls` assertion above is able to catch a snapshot that is
/// not batch-atomic.
#[test]
fn separate_counter_reads_are_not_batch_atomic() {
    const MAX_TRIES: u64 = 5_000_000;
    let stats = Stats::new();
    let calls = stats.counter("calls_total").unwrap();
    let bytes = stats.counter("bytes_total").unwrap();
    let stop = AtomicBool::new(false);
    let (torn_after, written) = thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (stats, calls, bytes, stop) = (&stats, &calls, &bytes, &stop);
                s.spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Relaxed) {
                        stats.batch(|b| {
                            b.add(calls, 1);
                            b.add(bytes, 3);
                        });
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut torn_after = None;
        for i in 0..MAX_TRIES {
            let c = calls.get();
            let b = bytes.get();
            if b != 3 * c {
                torn_after = Some(i);
                break;
            }
        }
        stop.store(true, Relaxed);
        let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        (torn_after, written)
    });
    assert!(
        torn_after.is_some(),
        "{MAX_TRIES} pairs of separate reads never saw a partial stream of batches"
    );
    assert_eq!(calls.get(), written);
    assert_eq!(bytes.get(), 3 * written);
}

/// (d) Short-lived threads exit mid-run (their shards are handed to later
/// threads) while one long-lived thread keeps incrementing: nothing is lost,
/// and a snapshot between waves is exact for the waves completed so far.
#[test]
fn threads_exiting_mid_run_lose_nothing() {
    const WAVES: u64 = 20;
    const PER_WAVE: u64 = 8;
    const INCS: u64 = 2_000;
    const BATCHES: u64 = 500;

    let stats = Stats::new();
    let wave_incs = stats.counter("wave_incs_total").unwrap();
    let wave_calls = stats.counter("wave_calls_total").unwrap();
    let wave_bytes = stats.counter("wave_bytes_total").unwrap();
    let wave_hist = stats.histogram("wave_value").unwrap();
    let background = stats.counter("background_total").unwrap();
    let stop = AtomicBool::new(false);

    let background_done = thread::scope(|s| {
        let stop_guard = StopOnDrop(&stop);
        let bg = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                background.inc();
                n += 1;
            }
            n
        });

        let mut last_background = 0;
        for wave in 0..WAVES {
            thread::scope(|w| {
                for t in 0..PER_WAVE {
                    let (stats, wave_incs, wave_calls, wave_bytes, wave_hist) =
                        (&stats, &wave_incs, &wave_calls, &wave_bytes, &wave_hist);
                    w.spawn(move || {
                        for _ in 0..INCS {
                            wave_incs.inc();
                        }
                        for i in 0..BATCHES {
                            stats.batch(|b| {
                                b.inc(wave_calls);
                                b.add(wave_bytes, 10);
                                b.record(wave_hist, wave * 100 + t * 10 + i % 10);
                            });
                        }
                    });
                }
            });
            // Every thread of waves 0..=wave has exited.
            let done = wave + 1;
            let snap = stats.snapshot();
            assert_eq!(
                snap.counter("wave_incs_total"),
                Some(done * PER_WAVE * INCS),
                "after wave {wave}"
            );
            assert_eq!(
                snap.counter("wave_calls_total"),
                Some(done * PER_WAVE * BATCHES)
            );
            assert_eq!(
                snap.counter("wave_bytes_total"),
                Some(done * PER_WAVE * BATCHES * 10)
            );
            let h = snap.histogram("wave_value").unwrap();
            assert_eq!(h.count(), done * PER_WAVE * BATCHES);
            // Largest value so far: wave * 100 + 7 * 10 + 9.
            assert_eq!(h.max(), wave * 100 + (PER_WAVE - 1) * 10 + 9);
            let bg_now = snap.counter("background_total").unwrap();
            assert!(bg_now >= last_background, "background counter went back");
            last_background = bg_now;
        }
        drop(stop_guard);
        bg.join().unwrap()
    });

    let snap = stats.snapshot();
    assert_eq!(snap.counter("background_total"), Some(background_done));
    assert_eq!(background.get(), background_done);
    let batches = WAVES * PER_WAVE * BATCHES;
    assert_eq!(wave_incs.get(), WAVES * PER_WAVE * INCS);
    assert_eq!(wave_calls.get(), batches);
    let h = wave_hist.snapshot();
    assert_eq!(h.count(), batches);
    // Sum over waves, threads and i of (wave*100 + t*10 + i%10).
    let per_thread_i: u64 = (0..BATCHES).map(|i| i % 10).sum();
    let expected_sum: u64 = (0..WAVES)
        .flat_map(|w| (0..PER_WAVE).map(move |t| (w, t)))
        .map(|(w, t)| BATCHES * (w * 100 + t * 10) + per_thread_i)
        .sum();
    assert_eq!(h.sum(), expected_sum);
}

/// Updates made while a thread exits, from a thread-local destructor.
struct ExitUpdate(RefCell<Option<(Stats, Counter, Histogram)>>);

impl Drop for ExitUpdate {
    fn drop(&mut self) {
        if let Some((stats, counter, hist)) = self.0.borrow_mut().take() {
            counter.inc();
            stats.batch(|b| {
                b.inc(&counter);
                b.record(&hist, 5);
            });
        }
    }
}

thread_local! {
    static ON_EXIT: ExitUpdate = const { ExitUpdate(RefCell::new(None)) };
}

/// (d, continued) Updates made from a thread-local destructor as the thread
/// exits are not lost either. Half the threads register the destructor
/// before their first update (so it may run after the crate's own
/// per-thread state is torn down), half after it.
///
/// `thread::scope` alone may return before a thread's TLS destructors have
/// run, so each handle is joined explicitly: `join` waits for the OS thread
/// to finish, destructors included.
#[test]
fn updates_from_thread_exit_destructors_are_not_lost() {
    const WAVES: u64 = 10;
    const PER_WAVE: u64 = 8;
    const INCS: u64 = 100;

    let stats = Stats::new();
    let exits = stats.counter("exits_total").unwrap();
    let exit_hist = stats.histogram("exit_value").unwrap();
    for wave in 0..WAVES {
        thread::scope(|s| {
            let handles: Vec<_> = (0..PER_WAVE)
                .map(|t| {
                    let (stats, exits, exit_hist) = (&stats, &exits, &exit_hist);
                    s.spawn(move || {
                        let arm = || {
                            ON_EXIT.with(|e| {
                                *e.0.borrow_mut() =
                                    Some((stats.clone(), exits.clone(), exit_hist.clone()));
                            });
                        };
                        if t % 2 == 0 {
                            arm();
                        }
                        for _ in 0..INCS {
                            exits.inc();
                        }
                        if t % 2 == 1 {
                            arm();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
        let done = (wave + 1) * PER_WAVE;
        let snap = stats.snapshot();
        assert_eq!(
            snap.counter("exits_total"),
            Some(done * (INCS + 2)),
            "after wave {wave}"
        );
        let h = snap.histogram("exit_value").unwrap();
        assert_eq!((h.count(), h.sum()), (done, 5 * done), "after wave {wave}");
    }
}

/// Many short-lived `Stats` used from the same threads, interleaved with a
/// long-lived one: each is separate from the others and exact (a new `Stats`
/// may reuse a dropped one's memory; no per-thread state may carry over).
#[test]
fn short_lived_stats_on_the_same_threads_stay_separate() {
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 2_000;
    let long = Stats::new();
    let long_hits = long.counter("hits_total").unwrap();
    thread::scope(|s| {
        for t in 0..THREADS {
            let long_hits = &long_hits;
            s.spawn(move || {
                for i in 0..ROUNDS {
                    let short = Stats::new();
                    let hits = short.counter("hits_total").unwrap();
                    let h = short.histogram("h").unwrap();
                    long_hits.inc();
                    hits.add(i + t);
                    short.batch(|b| {
                        b.inc(&hits);
                        b.record(&h, i);
                    });
                    long_hits.inc();
                    assert_eq!(hits.get(), i + t + 1);
                    let snap = short.snapshot();
                    assert_eq!(snap.counter("hits_total"), Some(i + t + 1));
                    assert_eq!(
                        snap.histogram("h").map(|h| (h.count(), h.max())),
                        Some((1, i))
                    );
                }
            });
        }
    });
    assert_eq!(long_hits.get(), 2 * THREADS * ROUNDS);
    assert_eq!(
        long.snapshot().counter("hits_total"),
        Some(2 * THREADS * ROUNDS)
    );
}

/// Gauges in batches, against snapshots taken all along, with more threads
/// than cores. Six threads open and close calls in batches
/// (`in_flight += 1` with `opened += 1`, then `in_flight -= 1` with
/// `closed += 1`), so every snapshot must have
/// `in_flight == opened - closed` exactly; one more thread sets `last_seq`
/// to `i` in the batch that makes `seq_total` `i + 1`, so every snapshot
/// must have `last_seq == seq_total - 1`. Another thread's later unbatched
/// `set` wins over the batched ones at the end.
#[test]
fn gauges_in_batches_agree_with_their_counters_in_every_snapshot() {
    const THREADS: u64 = 6;
    const ROUNDS: u64 = 20_000;
    let stats = Stats::new();
    let opened = stats.counter("opened_total").unwrap();
    let closed = stats.counter("closed_total").unwrap();
    let in_flight = stats.gauge("in_flight").unwrap();
    let seq = stats.counter("seq_total").unwrap();
    let last_seq = stats.gauge("last_seq").unwrap();
    let done = std::sync::atomic::AtomicU64::new(0);
    let mut checked = 0u64;
    thread::scope(|s| {
        for _ in 0..THREADS {
            let (stats, opened, closed, in_flight, done) =
                (&stats, &opened, &closed, &in_flight, &done);
            s.spawn(move || {
                for _ in 0..ROUNDS {
                    stats.batch(|b| {
                        b.inc(opened);
                        b.add_gauge(in_flight, 1.0);
                    });
                    stats.batch(|b| {
                        b.add_gauge(in_flight, -1.0);
                        b.inc(closed);
                    });
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let (stats, seq, last_seq, done) = (&stats, &seq, &last_seq, &done);
        s.spawn(move || {
            for i in 0..ROUNDS * 4 {
                stats.batch(|b| {
                    b.set(last_seq, i as f64);
                    b.inc(seq);
                });
            }
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        while done.load(std::sync::atomic::Ordering::Relaxed) < THREADS + 1 {
            let snap = stats.snapshot();
            let (o, c) = (
                snap.counter("opened_total").unwrap(),
                snap.counter("closed_total").unwrap(),
            );
            assert_eq!(snap.gauge("in_flight"), Some((o - c) as f64), "{o} {c}");
            assert!(o - c <= THREADS, "{o} {c}");
            let n = snap.counter("seq_total").unwrap();
            let want = if n == 0 { 0.0 } else { (n - 1) as f64 };
            assert_eq!(snap.gauge("last_seq"), Some(want), "seq_total {n}");
            checked += 1;
        }
    });
    let snap = stats.snapshot();
    assert_eq!(snap.counter("opened_total"), Some(THREADS * ROUNDS));
    assert_eq!(snap.gauge("in_flight"), Some(0.0));
    assert_eq!(snap.gauge("last_seq"), Some((ROUNDS * 4 - 1) as f64));
    assert!(checked > 0);
    // A later unbatched set from another thread wins; adds apply to it.
    thread::scope(|s| {
        s.spawn(|| last_seq.set(-1.0));
    });
    stats.batch(|b| b.add_gauge(&last_seq, 0.5));
    assert_eq!(last_seq.get(), -0.5);
}

/// (e) 16 threads on 2 cores mixing every kind of update.
#[test]
fn sixteen_threads_mixing_every_update_kind() {
    const THREADS: u64 = 16;
    const ROUNDS: u64 = 20_000;

    let stats = Stats::new();
    let incs = stats.counter("incs_total").unwrap();
    let calls = stats.counter("calls_total").unwrap();
    let bytes = stats.counter("bytes_total").unwrap();
    let latency = stats.histogram("latency_ns").unwrap();
    let direct = stats.histogram("direct_ns").unwrap();
    let connections = stats.gauge("connections").unwrap();

    thread::scope(|s| {
        for t in 0..THREADS {
            let (stats, incs, calls, bytes, latency, direct, connections) = (
                &stats,
                &incs,
                &calls,
                &bytes,
                &latency,
                &direct,
                &connections,
            );
            s.spawn(move || {
                for i in 0..ROUNDS {
                    connections.add(1.0);
                    incs.inc();
                    if i % 3 == 0 {
                        stats.batch(|b| {
                            b.inc(calls);
                            b.add(bytes, t + 1);
                            b.record(latency, i);
                        });
                    }
                    direct.record(t * ROUNDS + i);
                    connections.add(-1.0);
                }
            });
        }
    });

    let batches_per_thread = ROUNDS.div_ceil(3);
    let snap = stats.snapshot();
    assert_eq!(snap.counter("incs_total"), Some(THREADS * ROUNDS));
    assert_eq!(
        snap.counter("calls_total"),
        Some(THREADS * batches_per_thread)
    );
    let bytes_expected: u64 = (1..=THREADS).map(|b| b * batches_per_thread).sum();
    assert_eq!(snap.counter("bytes_total"), Some(bytes_expected));
    assert_eq!(snap.gauge("connections"), Some(0.0));
    assert_eq!(connections.get(), 0.0);

    let l = snap.histogram("latency_ns").unwrap();
    assert_eq!(l.count(), THREADS * batches_per_thread);
    let l_sum: u64 = (0..ROUNDS).filter(|i| i % 3 == 0).sum();
    assert_eq!(l.sum(), THREADS * l_sum);
    assert_eq!(l.max(), (0..ROUNDS).filter(|i| i % 3 == 0).max().unwrap());

    let d = snap.histogram("direct_ns").unwrap();
    let n = THREADS * ROUNDS;
    assert_eq!(d.count(), n);
    assert_eq!(d.sum(), n * (n - 1) / 2);
    assert_eq!(d.max(), n - 1);
    assert_eq!(&direct.snapshot(), d);
}

/// Writers of [`snapshots_complete_while_writers_record_back_to_back`].
const RECORDERS: usize = 3;

/// Snapshots are not starved by writers that record without pause: 3 threads
/// call `Histogram::record` in tight loops (each call is a batch) while one
/// reader takes 2,000 snapshots, each checked.
///
/// The only bound is a loose deadline: all 2,000 snapshots must complete
/// within 60 s. In a debug build on 2 cores they took 8 to 18 s (a snapshot
/// mostly waits for writers preempted mid-sample to run again, so its time
/// follows the scheduler's time slices); before shards published copies for
/// starving readers, only 1,511 had completed at 60 s. The test's own thread
/// is the watchdog: past the deadline it stops the writers and fails the test
/// instead of hanging (it never joins a reader that may still be stuck). The
/// snapshot times are printed (`--nocapture`), not asserted.
#[test]
fn snapshots_complete_while_writers_record_back_to_back() {
    const SNAPSHOTS: usize = 2_000;
    const DEADLINE: Duration = Duration::from_secs(60);
    const VALUE: u64 = 1_234;

    let start = Instant::now();
    let stats = Stats::new();
    let hist = stats.histogram("recorded").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_guard = StopOnDrop(&stop);
    let started = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));

    let writers: Vec<_> = (0..RECORDERS)
        .map(|_| {
            let (hist, stop, started) = (hist.clone(), stop.clone(), started.clone());
            thread::spawn(move || {
                hist.record(VALUE);
                started.fetch_add(1, Relaxed);
                let mut n = 1u64;
                while !stop.load(Relaxed) {
                    hist.record(VALUE);
                    n += 1;
                }
                n
            })
        })
        .collect();

    let (done_tx, done_rx) = mpsc::channel();
    let reader = {
        let (stats, started, completed) = (stats.clone(), started.clone(), completed.clone());
        thread::spawn(move || {
            // Start once every writer has its shard and is in its loop.
            while started.load(Relaxed) < RECORDERS {
                thread::yield_now();
            }
            let mut times = Vec::with_capacity(SNAPSHOTS);
            let mut last = 0;
            for _ in 0..SNAPSHOTS {
                let t = Instant::now();
                let snap = stats.snapshot();
                times.push(t.elapsed());
                let h = snap.histogram("recorded").unwrap();
                let count = h.count();
                assert!(count >= last, "count went back: {last} -> {count}");
                last = count;
                assert_eq!(h.sum(), VALUE * count, "torn sample: sum vs count");
                assert_eq!(h.max(), VALUE, "torn sample: max");
                let in_buckets: Vec<u64> = h.buckets().map(|(_, _, n)| n).collect();
                assert_eq!(in_buckets, [count], "torn sample: buckets vs count");
                completed.fetch_add(1, Relaxed);
            }
            // A panic above drops `done_tx` unsent: the watchdog sees a
            // disconnect and re-raises the panic from `join`.
            done_tx.send(()).unwrap();
            times
        })
    };

    match done_rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => {
            drop(stop_guard);
            panic!(
                "only {} of {SNAPSHOTS} snapshots completed within {DEADLINE:?} \
                 while {RECORDERS} writers recorded back to back",
                completed.load(Relaxed)
            );
        }
    }
    let times = match reader.join() {
        Ok(times) => times,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    drop(stop_guard);
    let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let elapsed = start.elapsed();

    let snap = hist.snapshot();
    assert_eq!((snap.count(), snap.sum()), (written, VALUE * written));

    let mut sorted = times.clone();
    sorted.sort_unstable();
    let total: Duration = times.iter().sum();
    println!(
        "{SNAPSHOTS} snapshots against {RECORDERS} writers ({written} samples) in \
         {elapsed:.2?}: mean {:.1?}, p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        total / SNAPSHOTS as u32,
        sorted[SNAPSHOTS / 2],
        sorted[SNAPSHOTS * 99 / 100],
        sorted[SNAPSHOTS - 1],
    );
}
