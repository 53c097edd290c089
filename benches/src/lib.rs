//! The benchmark harness shared by `latchfree bench` and the criterion
//! benches: workloads, the implementations they compare, and the runner.
//!
//! A [`Case`] is one operation on one implementation (`impl` is `latchfree`,
//! `locked` for the locked twin, or a peer's short name). The runner measures
//! every case of an operation at each thread count **in one process,
//! interleaved** (round-robin over the implementations, several rounds), and
//! reports the median round, so ratios never divide figures from different
//! runs. After each timed slice the target [settles](Target::settle),
//! untimed: an asynchronous writer finishes its backlog before the next
//! implementation's slice starts. After each case it asks the
//! implementation to check its own state against the exact number of
//! operations performed.
//!
//! Units: `ops_per_sec` is the total over all threads; `ns_per_op` is the
//! average time one thread spends per operation (`threads × 1e9 /
//! ops_per_sec`). Where a case samples latency, one call in
//! [`LATENCY_SAMPLE_EVERY`] is timed with `Instant::now()` (about 25 ns) and
//! percentiles are per call, in ns, read from a fixed-size log-linear
//! histogram (within [`MAX_RELATIVE_ERROR`](latchfree::stats::MAX_RELATIVE_ERROR)
//! of the exact nearest-rank value), so memory stays flat however long the
//! run.
//!
//! Workloads: [`stats`] (counters, batches, snapshots), [`audit`] (the
//! audit log under each guarantee: `async`, `os`, `disk`), [`shared`]
//! (reads and replacements of a swappable shared instance), [`sessions`] and
//! [`cache`] (hits, a 90/10 read/write mix and a get-or-create storm on
//! fresh keys, driven by [`map`]), [`persist`] (the cache's disk tier:
//! read-through misses and restart warm-up), and [`mixed`]: the whole request path
//! of a tool call on an [`Engine`](latchfree::engine::Engine) against the
//! all-locked engine (what `latchfree bench` runs by default).

pub mod audit;
pub mod cache;
pub mod hit_ratio;
pub mod map;
pub mod mixed;
pub mod persist;
pub mod sessions;
pub mod shared;
pub mod stats;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;

use latchfree::stats::{HistogramSnapshot, LocalHistogram};

/// One operation on one implementation, ready to run from many threads.
pub trait Target: Send + Sync {
    /// Performs `n` operations as worker `thread` (`0..threads`).
    fn run(&self, thread: usize, n: u64);

    /// After the run, checks the implementation's state against the exact
    /// number of operations performed in all. `None` when there is nothing
    /// to check.
    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let _ = total_ops;
        None
    }

    /// What the last [`verify`](Self::verify) checked, to print beside a
    /// passing row (a failing one prints its error). `None` by default.
    fn report(&self) -> Option<String> {
        None
    }

    /// Waits until work the implementation accepted but has not finished (an
    /// asynchronous writer's backlog) is done. The runner calls it after each
    /// timed slice, untimed, so that one implementation's backlog does not
    /// run into the next one's slice.
    fn settle(&self) {}

    /// How long the chunked runner grows a chunk of operations to, at least,
    /// so that what each chunk costs besides its operations (the stop check
    /// and the clock read; a task's spawn and wake-up) vanishes from the
    /// per-operation figure. [`CHUNK`] unless a target pays more per chunk.
    fn chunk_time(&self) -> Duration {
        CHUNK
    }

    /// Runs the sampled loop of [`measure`] itself (one operation per call
    /// of [`run`](Self::run), one in [`LATENCY_SAMPLE_EVERY`] timed into
    /// `samples`) until `stop`, and returns the operations; `None` (the
    /// default) lets the runner call `run` once per operation. A target
    /// whose `run` costs more than an operation (a task's spawn and
    /// wake-up) runs the loop where the operations run.
    fn run_sampled(
        &self,
        _thread: usize,
        _stop: &Arc<AtomicBool>,
        _samples: &mut LocalHistogram,
    ) -> Option<u64> {
        None
    }
}

/// How to build one [`Target`].
#[derive(Clone, Copy)]
pub struct Case {
    /// The workload (component) the case belongs to, e.g. `stats`.
    pub workload: &'static str,
    /// The operation, e.g. `counter_add`.
    pub op: &'static str,
    /// The implementation: `latchfree`, `locked`, or a peer's short name.
    pub imp: &'static str,
    /// The guarantee this implementation gives for the operation.
    pub guarantee: &'static str,
    /// Whether to sample per-call latency (for operations slower than ~100 ns).
    pub latency: bool,
    /// Builds the target for a run with `threads` workers.
    pub make: fn(threads: usize) -> Box<dyn Target>,
}

/// One call in this many is timed when a case samples latency.
pub const LATENCY_SAMPLE_EVERY: u64 = 16;

/// What one timed slice of a case measured.
#[derive(Clone, Debug, Default)]
pub struct Measurement {
    /// Operations completed, all threads together.
    pub ops: u64,
    /// Wall time from the common start to the last thread's stop.
    pub elapsed: Duration,
    /// Sampled per-call latencies, in ns, as a histogram: fixed size
    /// however long the slice, so a long run's memory stays flat.
    pub latency_ns: HistogramSnapshot,
}

impl Measurement {
    /// Total operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `target` on `threads` threads for about `duration`, then lets it
/// [`settle`](Target::settle) (untimed).
pub fn measure(
    target: &dyn Target,
    threads: usize,
    duration: Duration,
    sample_latency: bool,
) -> Measurement {
    let stop = Arc::new(AtomicBool::new(false));
    let total = AtomicU64::new(0);
    let start = Barrier::new(threads + 1);
    let mut latency = HistogramSnapshot::default();
    let elapsed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, total, start) = (&stop, &total, &start);
                s.spawn(move || {
                    let mut samples = LocalHistogram::new();
                    start.wait();
                    let ops = if sample_latency {
                        target
                            .run_sampled(t, stop, &mut samples)
                            .unwrap_or_else(|| run_sampled(target, t, stop, &mut samples))
                    } else {
                        run_chunked(target, t, stop)
                    };
                    total.fetch_add(ops, Ordering::Relaxed);
                    samples.snapshot()
                })
            })
            .collect();
        start.wait();
        let begin = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            match w.join() {
                Ok(samples) => latency.merge(&samples),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        begin.elapsed()
    });
    target.settle();
    Measurement {
        ops: total.load(Ordering::Relaxed),
        elapsed,
        latency_ns: latency,
    }
}

/// The least time of a chunk of operations for most targets
/// ([`Target::chunk_time`]).
pub const CHUNK: Duration = Duration::from_micros(20);

/// The least time of an async target's chunk ([`OnRuntime`]): a spawn and a
/// cross-thread wake-up cost microseconds, so a chunk of 1 ms keeps them
/// under 1 % of the figure for any implementation, fast or slow.
pub const ASYNC_CHUNK: Duration = Duration::from_millis(1);

/// Runs chunks of operations, growing the chunk until one takes at least
/// the target's [`chunk_time`](Target::chunk_time), so that the per-chunk
/// costs vanish from the per-op cost.
fn run_chunked(target: &dyn Target, thread: usize, stop: &AtomicBool) -> u64 {
    let least = target.chunk_time();
    let mut chunk = 1u64;
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        target.run(thread, chunk);
        ops += chunk;
        if chunk < 1 << 20 && t0.elapsed() < least {
            chunk *= 2;
        }
    }
    ops
}

/// Runs one operation at a time, timing one in [`LATENCY_SAMPLE_EVERY`].
///
/// The stop flag is checked before every call (one relaxed load, noise
/// beside operations that are worth sampling), so a slow operation (an
/// fsync queued behind the other threads') overruns the slice by at most one
/// call per thread.
fn run_sampled(
    target: &dyn Target,
    thread: usize,
    stop: &AtomicBool,
    samples: &mut LocalHistogram,
) -> u64 {
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ops += 1;
        if !ops.is_multiple_of(LATENCY_SAMPLE_EVERY) {
            target.run(thread, 1);
            continue;
        }
        let t0 = Instant::now();
        target.run(thread, 1);
        samples.record(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    ops
}

/// Worker threads of the tokio runtime of each async case ([`OnRuntime`]).
pub const ASYNC_WORKERS: usize = 2;

/// A [`Target`] whose operations are futures (the `*_async` ops).
pub trait AsyncTarget: Target + 'static {
    /// Performs `n` operations as task `thread`, awaiting each.
    fn run_async(&self, thread: usize, n: u64) -> impl Future<Output = ()> + Send;
}

/// Runs an [`AsyncTarget`] on its own tokio multi-thread runtime of
/// [`ASYNC_WORKERS`] workers: each bench thread spawns its batch of `n`
/// operations as one task and blocks until the task completes. The
/// operations run on the runtime's workers, and `threads` is the number of
/// tasks in flight at once. Each batch pays one spawn and one cross-thread
/// wake-up, alike for every implementation; the chunked runner grows a
/// batch to at least [`ASYNC_CHUNK`]. A case that samples latency runs one
/// operation at a time, so its whole sampled loop is one task per bench
/// thread ([`Target::run_sampled`]): one spawn per slice, not per operation.
pub struct OnRuntime<T> {
    target: Arc<T>,
    runtime: tokio::runtime::Runtime,
}

impl<T: AsyncTarget> OnRuntime<T> {
    /// `target` on a fresh runtime.
    ///
    /// # Panics
    ///
    /// If the runtime cannot start its threads.
    pub fn new(target: T) -> Self {
        Self {
            target: Arc::new(target),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(ASYNC_WORKERS)
                .build()
                .expect("cannot start a tokio runtime"),
        }
    }
}

impl<T: AsyncTarget> Target for OnRuntime<T> {
    fn run(&self, thread: usize, n: u64) {
        let target = Arc::clone(&self.target);
        let task = self
            .runtime
            .spawn(async move { target.run_async(thread, n).await });
        if let Err(e) = self.runtime.block_on(task) {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        self.target.verify(total_ops)
    }

    fn chunk_time(&self) -> Duration {
        ASYNC_CHUNK
    }

    /// The sampled loop as one task per bench thread, so that a sampled
    /// case measures its operations awaited in a task, not a spawn and a
    /// cross-thread wake-up of the bench thread per operation.
    fn run_sampled(
        &self,
        thread: usize,
        stop: &Arc<AtomicBool>,
        samples: &mut LocalHistogram,
    ) -> Option<u64> {
        let target = Arc::clone(&self.target);
        let stop = Arc::clone(stop);
        let mut local = std::mem::take(samples);
        let task = self.runtime.spawn(async move {
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                ops += 1;
                if !ops.is_multiple_of(LATENCY_SAMPLE_EVERY) {
                    target.run_async(thread, 1).await;
                    continue;
                }
                let t0 = Instant::now();
                target.run_async(thread, 1).await;
                local.record(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
            (ops, local)
        });
        match self.runtime.block_on(task) {
            Ok((ops, local)) => {
                *samples = local;
                Some(ops)
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn report(&self) -> Option<String> {
        self.target.report()
    }

    fn settle(&self) {
        self.target.settle();
    }
}

/// One line of results, as printed by `latchfree bench --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The workload, e.g. `stats`.
    pub workload: &'static str,
    /// The operation, e.g. `counter_add`.
    pub op: &'static str,
    /// The implementation.
    #[serde(rename = "impl")]
    pub imp: &'static str,
    /// The guarantee the implementation gave for this operation.
    pub guarantee: &'static str,
    /// Worker threads.
    pub threads: usize,
    /// Median over rounds of the total operations per second.
    pub ops_per_sec: f64,
    /// `threads × 1e9 / ops_per_sec`.
    pub ns_per_op: f64,
    /// `ops_per_sec` divided by the locked twin's in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_vs_locked: Option<f64>,
    /// Sampled per-call latency percentiles, in ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ns: Option<u64>,
    /// 99th percentile per-call latency, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ns: Option<u64>,
    /// 99.9th percentile per-call latency, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999_ns: Option<u64>,
    /// Whether the implementation's state matched the exact operation count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
    /// What the exactness check found: why it failed, or, where the target
    /// [reports](Target::report) it, what it checked when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_detail: Option<String>,
}

/// What [`run`] tells its `progress` callback.
#[derive(Clone, Copy)]
pub enum Progress<'a> {
    /// A timed slice of `case` at `threads` threads finished.
    Slice {
        /// The case measured.
        case: &'a Case,
        /// Its thread count.
        threads: usize,
    },
    /// The targets of one operation at one thread count were verified and
    /// dropped (with their threads, files and memory).
    Dropped,
}

/// How a [`run`] is shaped.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Thread counts to run each operation at.
    pub threads: Vec<usize>,
    /// Measured time per implementation and thread count (split over rounds).
    pub duration: Duration,
    /// Interleaved rounds; the median round is reported.
    pub rounds: usize,
}

/// Runs every case at every thread count, interleaving implementations of the
/// same operation, and returns one row per (operation, implementation,
/// threads). `progress` hears of each timed slice and of each group of
/// targets dropped.
pub fn run(cases: &[Case], plan: &Plan, mut progress: impl FnMut(Progress<'_>)) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut ops: Vec<(&str, &str)> = Vec::new();
    for c in cases {
        if !ops.contains(&(c.workload, c.op)) {
            ops.push((c.workload, c.op));
        }
    }
    let rounds = plan.rounds.max(1);
    let slice = plan.duration / rounds as u32;
    for &(workload, op) in &ops {
        let group: Vec<&Case> = cases
            .iter()
            .filter(|c| c.workload == workload && c.op == op)
            .collect();
        for &threads in &plan.threads {
            let targets: Vec<Box<dyn Target>> = group.iter().map(|c| (c.make)(threads)).collect();
            let mut results: Vec<Vec<Measurement>> = vec![Vec::new(); group.len()];
            for _ in 0..rounds {
                for (i, case) in group.iter().enumerate() {
                    results[i].push(measure(&*targets[i], threads, slice, case.latency));
                    progress(Progress::Slice { case, threads });
                }
            }
            let first = rows.len();
            for (i, case) in group.iter().enumerate() {
                rows.push(summarise(case, threads, &mut results[i], &*targets[i]));
            }
            drop(targets);
            progress(Progress::Dropped);
            let locked = rows[first..]
                .iter()
                .find(|r| r.imp == "locked")
                .map(|r| r.ops_per_sec);
            for row in &mut rows[first..] {
                row.ratio_vs_locked = locked.map(|l| row.ops_per_sec / l);
            }
        }
    }
    rows
}

fn summarise(case: &Case, threads: usize, rounds: &mut [Measurement], target: &dyn Target) -> Row {
    let total_ops = rounds.iter().map(|m| m.ops).sum();
    let mut rates: Vec<f64> = rounds.iter().map(Measurement::ops_per_sec).collect();
    rates.sort_by(f64::total_cmp);
    let ops_per_sec = rates[rates.len() / 2];
    let mut lat = HistogramSnapshot::default();
    for m in rounds.iter() {
        lat.merge(&m.latency_ns);
    }
    let pct = |q: f64| (lat.count() > 0).then(|| lat.quantile(q));
    let check = target.verify(total_ops);
    Row {
        workload: case.workload,
        op: case.op,
        imp: case.imp,
        guarantee: case.guarantee,
        threads,
        ops_per_sec,
        ns_per_op: threads as f64 * 1e9 / ops_per_sec.max(1e-9),
        ratio_vs_locked: None,
        p50_ns: pct(0.50),
        p99_ns: pct(0.99),
        p999_ns: pct(0.999),
        exact: check.as_ref().map(Result::is_ok),
        exact_detail: match check {
            Some(Err(e)) => Some(e),
            Some(Ok(())) => target.report(),
            None => None,
        },
    }
}

/// Runs `target` with `threads` threads, `iters` operations each, and returns
/// the wall time: the shape criterion's `iter_custom` wants, so that its
/// "time per iteration" is the per-thread `ns_per_op`. The target
/// [settles](Target::settle) after the clock stops.
pub fn time_iters(target: &Arc<dyn Target>, threads: usize, iters: u64) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    target.run(t, iters);
                })
            })
            .collect();
        start.wait();
        let begin = Instant::now();
        for w in workers {
            if let Err(panic) = w.join() {
                std::panic::resume_unwind(panic);
            }
        }
        let elapsed = begin.elapsed();
        target.settle();
        elapsed
    })
}

/// Every workload known to the harness, by name.
pub fn workloads() -> Vec<(&'static str, Vec<Case>)> {
    vec![
        ("stats", stats::cases()),
        ("audit", audit::cases()),
        ("shared", shared::cases()),
        ("sessions", sessions::cases()),
        ("cache", cache::cases()),
        ("persist", persist::cases()),
        ("mixed", mixed::cases()),
    ]
}

/// Checks `actual == expected`, naming `what` when they differ.
pub fn expect_eq(what: &str, actual: u64, expected: u64) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!("{what}: {actual}, expected {expected}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(AtomicU64);
    impl Target for Count {
        fn run(&self, _thread: usize, n: u64) {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
        fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
            Some(expect_eq(
                "count",
                self.0.load(Ordering::Relaxed),
                total_ops,
            ))
        }
    }

    #[test]
    fn runner_counts_every_operation_and_computes_ratios() {
        let cases = [
            Case {
                workload: "t",
                op: "add",
                imp: "latchfree",
                guarantee: "exact",
                latency: true,
                make: |_| Box::new(Count(AtomicU64::new(0))),
            },
            Case {
                workload: "t",
                op: "add",
                imp: "locked",
                guarantee: "exact",
                latency: false,
                make: |_| Box::new(Count(AtomicU64::new(0))),
            },
        ];
        let plan = Plan {
            threads: vec![1, 3],
            duration: Duration::from_millis(20),
            rounds: 2,
        };
        let (mut slices, mut dropped) = (0, 0);
        let rows = run(&cases, &plan, |event| match event {
            Progress::Slice { .. } => slices += 1,
            Progress::Dropped => {
                // Each group is dropped after all its slices.
                assert_eq!(slices, (dropped + 1) * 2 * 2);
                dropped += 1;
            }
        });
        assert_eq!((slices, dropped), (2 * 2 * 2, 2));
        assert_eq!(rows.len(), 4);
        for row in &rows {
            assert_eq!(row.exact, Some(true), "{row:?}");
            assert!(row.ops_per_sec > 0.0);
            assert!((row.ns_per_op - row.threads as f64 * 1e9 / row.ops_per_sec).abs() < 1e-6);
        }
        assert_eq!(rows[1].ratio_vs_locked, Some(1.0));
        assert!(rows[0].p99_ns.is_some() && rows[1].p99_ns.is_none());
    }

    #[test]
    fn time_iters_runs_every_thread() {
        let target: Arc<dyn Target> = Arc::new(Count(AtomicU64::new(0)));
        time_iters(&target, 3, 100);
        assert_eq!(target.verify(300), Some(Ok(())));
    }
}
