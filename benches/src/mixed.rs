//! The `mixed` workload: the whole request path of a tool call, on an
//! [`Engine`] against the all-locked engine ([`Engine::locked`]).
//!
//! | op | what one operation is | implementations |
//! |---|---|---|
//! | `tool_call` | [`Engine::call`]: session get-or-create → cache get-or-load → one stats batch → one audit event | `latchfree` ([`Engine::builder`]), `locked` ([`Engine::locked`]) |
//!
//! Each call picks a session id uniformly among [`MixedParams::ids`]
//! pre-formatted ids, and its arguments: with probability
//! [`MixedParams::hit_ratio`] one of [`HOT_KEYS`] keys (loaded before the
//! run, so they hit), otherwise a key never used before (a miss: the tool
//! runs, a cheap hash of the arguments, and its result is inserted, which
//! evicts at the cache's bound). Both engines run with the same audit
//! guarantee ([`MixedParams::guarantee`], the row's `guarantee`), the same
//! ids and the same key sequence (per-thread xorshift, seeded by thread).
//!
//! After the run the target checks, exactly: sessions created == distinct
//! ids used (tracked by the workers), `engine_calls_total` == calls (and no
//! errors), and, after [`Engine::shutdown`], audit lines read back and
//! verified as one chain == calls. Passing rows print what was checked.
//! Between slices (untimed) the audit files the log has finished with are
//! verified, chained on from the last, and removed, so a long run
//! (`--seconds 600`, which `latchfree bench` splits into slices of at most
//! 20 s) needs disk for one slice's audit lines per engine, not the run's.
//!
//! The parameters come from the CLI flags (`--ids`, `--hit-ratio`,
//! `--durability`) through [`set_params`]: a [`Case`] builds its target
//! from a plain `fn(threads)`, so they are process-wide, set once before a
//! run.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crossbeam_utils::CachePadded;
use tempfile::TempDir;

use super::audit::Failures;
use super::map::Rng;
use super::{Case, Target, expect_eq};
use latchfree::audit::{self, Guarantee, Head, verify};
use latchfree::engine::{CacheConfig, Call, Engine, EngineBuilder, SessionConfig, ToolError};

/// Keys of the hot set: loaded before the run, hit afterwards.
pub const HOT_KEYS: u64 = 256;

/// The tool whose results are cached.
pub const TOOL: &str = "query";

/// The shape of the workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixedParams {
    /// Distinct session ids calls pick from.
    pub ids: u64,
    /// The share of calls whose result is in the cache, in `0.0..=1.0`.
    pub hit_ratio: f64,
    /// The audit guarantee every call gets, on both engines.
    pub guarantee: Guarantee,
    /// The size at which each engine's audit stream starts a new file
    /// (full files are verified and removed between slices).
    pub audit_file_bytes: u64,
}

impl Default for MixedParams {
    /// 10 000 ids, 90 % hits, `async`, 256 MiB audit files.
    fn default() -> Self {
        Self {
            ids: 10_000,
            hit_ratio: 0.9,
            guarantee: Guarantee::Async,
            audit_file_bytes: audit::DEFAULT_MAX_FILE_BYTES,
        }
    }
}

static PARAMS: Mutex<Option<MixedParams>> = Mutex::new(None);

/// Sets the parameters of the targets built from now on.
pub fn set_params(params: MixedParams) {
    *PARAMS.lock().unwrap_or_else(PoisonError::into_inner) = Some(params);
}

/// The parameters in force (the defaults unless [`set_params`] was called).
pub fn params() -> MixedParams {
    PARAMS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .unwrap_or_default()
}

/// The `mixed` cases, with the row's guarantee from [`params`].
pub fn cases() -> Vec<Case> {
    let guarantee = params().guarantee.as_str();
    vec![
        Case {
            workload: "mixed",
            op: "tool_call",
            imp: "latchfree",
            guarantee,
            latency: true,
            make: |_| Box::new(Mixed::new(Engine::builder(), params())),
        },
        Case {
            workload: "mixed",
            op: "tool_call",
            imp: "locked",
            guarantee,
            latency: true,
            make: |_| Box::new(Mixed::new(Engine::locked(), params())),
        },
    ]
}

/// One worker's generator and fresh-key cursor; only that worker touches
/// them (Relaxed, once per `run`).
#[derive(Default)]
struct Worker {
    rng: AtomicU64,
    fresh: AtomicU64,
}

/// The `tool_call` target on one engine.
pub struct Mixed {
    engine: Engine,
    params: MixedParams,
    /// `hit_ratio` scaled to `0..2^32`.
    hit_threshold: u64,
    ids: Vec<String>,
    /// Whether a worker used id `i` (set, never cleared).
    used: Vec<AtomicBool>,
    hot: Vec<String>,
    workers: OnceLock<Vec<CachePadded<Worker>>>,
    /// Calls made before the run (the hot keys' loads).
    warm_calls: u64,
    failures: Failures,
    report: OnceLock<String>,
    /// The audit files verified and removed so far (see [`Mixed::ship`]).
    shipped: Mutex<Shipped>,
    dir: TempDir,
}

/// The part of the audit stream already verified and removed.
#[derive(Debug, Default)]
struct Shipped {
    /// Where the next file must pick up the chain.
    head: Option<Head>,
    records: u64,
    dropped: u64,
    files: usize,
    /// The first verification or removal that failed.
    error: Option<String>,
}

/// The tool: a deterministic hash of the arguments, as a small JSON result.
fn tool(args: &str) -> Result<String, ToolError> {
    let hash = args.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Ok(format!(
        "{{\"hits\":[{hash},{}],\"total\":2}}",
        hash.rotate_left(17)
    ))
}

impl Mixed {
    /// An engine of `builder`'s kind with `params`, its audit log in a
    /// scratch directory under TMPDIR and its hot keys loaded.
    pub fn new(builder: EngineBuilder, params: MixedParams) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("latchfree-bench-mixed-")
            .tempdir()
            .expect("cannot create a scratch directory under TMPDIR");
        let ids = params.ids.max(1);
        let engine = builder
            .audit_dir(dir.path())
            .guarantee(params.guarantee)
            .audit_max_file_bytes(params.audit_file_bytes)
            // The ids, and the warm-up session.
            .sessions(
                SessionConfig::default()
                    .max_sessions(usize::try_from(ids + 1).unwrap_or(usize::MAX)),
            )
            .cache(
                TOOL,
                CacheConfig::default().max_entries(10 * HOT_KEYS as usize),
            )
            .build()
            .expect("cannot build the engine");
        let hot: Vec<String> = (0..HOT_KEYS)
            .map(|k| format!("{{\"q\":\"hot {k}\"}}"))
            .collect();
        let failures = Failures::default();
        for key in &hot {
            failures.note(engine.call(&Call::new("warm-up", TOOL, key), tool));
        }
        let hit_threshold = (params.hit_ratio.clamp(0.0, 1.0) * (1u64 << 32) as f64) as u64;
        Self {
            engine,
            params,
            hit_threshold,
            ids: (0..ids).map(|i| format!("session-{i:08}")).collect(),
            used: (0..ids).map(|_| AtomicBool::new(false)).collect(),
            hot,
            workers: OnceLock::new(),
            warm_calls: HOT_KEYS,
            failures,
            report: OnceLock::new(),
            shipped: Mutex::default(),
            dir,
        }
    }

    /// The engine under test.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The scratch directory of its audit stream.
    pub fn audit_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn worker(&self, thread: usize) -> &Worker {
        let workers = self.workers.get_or_init(|| {
            (0..1024)
                .map(|t| {
                    let w = Worker::default();
                    w.rng.store(Rng::new(t as u64).0, Ordering::Relaxed);
                    CachePadded::new(w)
                })
                .collect()
        });
        &workers[thread % workers.len()]
    }

    fn check(&self, total_ops: u64) -> Result<String, String> {
        self.failures.check()?;
        let distinct = self
            .used
            .iter()
            .filter(|u| u.load(Ordering::Relaxed))
            .count() as u64;
        // The warm-up session counts as one more.
        let counters = self.engine.counters();
        let calls = total_ops + self.warm_calls;
        expect_eq(
            "sessions created vs distinct ids",
            counters.sessions_created,
            distinct + 1,
        )?;
        expect_eq("engine_calls_total vs calls", counters.calls, calls)?;
        expect_eq("engine_errors_total", counters.errors, 0)?;
        self.engine
            .shutdown()
            .map_err(|e| format!("shutdown: {e}"))?;
        let shipped = self.shipped.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = &shipped.error {
            return Err(e.clone());
        }
        let rest = audit::verify_from(self.dir.path(), "audit", shipped.head)
            .map_err(|e| format!("audit::verify: {e}"))?;
        expect_eq(
            "records in the files",
            shipped.records + rest.records,
            calls,
        )?;
        expect_eq(
            "events dropped (gap markers)",
            shipped.dropped + rest.dropped,
            0,
        )?;
        Ok(format!(
            "sessions created == distinct ids ({distinct} + warm-up), \
             audit lines == calls ({calls}, one chain over {} files, {} verified and \
             removed as they filled), counters == calls, cache hits {}",
            shipped.files + rest.files,
            shipped.files,
            counters.cache_hits
        ))
    }

    /// Verifies the audit files the log has finished with (all but the
    /// newest), continuing the chain from the last one checked, and removes
    /// them: a long run keeps its disk use to about one file, as a server
    /// shipping its rotated logs would, and still checks every line.
    fn ship(&self) {
        let mut shipped = self.shipped.lock().unwrap_or_else(PoisonError::into_inner);
        if shipped.error.is_some() {
            return;
        }
        let result = (|| {
            let files = verify::stream_files(self.dir.path(), "audit")
                .map_err(|e| format!("audit: {e}"))?;
            let Some((_, done)) = files.split_last() else {
                return Ok(());
            };
            let report = audit::verify_files(done, shipped.head)
                .map_err(|e| format!("audit::verify: {e}"))?;
            for f in done {
                std::fs::remove_file(f).map_err(|e| format!("removing {}: {e}", f.display()))?;
            }
            shipped.head = report.head;
            shipped.records += report.records;
            shipped.dropped += report.dropped;
            shipped.files += report.files;
            Ok(())
        })();
        if let Err(e) = result {
            shipped.error = Some(e);
        }
    }
}

impl Target for Mixed {
    fn run(&self, thread: usize, n: u64) {
        let worker = self.worker(thread);
        let mut rng = Rng(worker.rng.load(Ordering::Relaxed));
        let mut fresh = worker.fresh.load(Ordering::Relaxed);
        let mut miss_args = String::new();
        for _ in 0..n {
            let id = rng.below(self.ids.len() as u64) as usize;
            if !self.used[id].load(Ordering::Relaxed) {
                self.used[id].store(true, Ordering::Relaxed);
            }
            let args = if (rng.next_u64() >> 32) < self.hit_threshold {
                &self.hot[rng.below(HOT_KEYS) as usize]
            } else {
                use std::fmt::Write as _;
                miss_args.clear();
                let _ = write!(miss_args, "{{\"q\":\"miss {thread} {fresh}\"}}");
                fresh += 1;
                &miss_args
            };
            let reply = self
                .engine
                .call(&Call::new(&self.ids[id], TOOL, args), tool);
            self.failures.note(reply.map(|r| black_box(r.output)));
        }
        worker.rng.store(rng.0, Ordering::Relaxed);
        worker.fresh.store(fresh, Ordering::Relaxed);
    }

    fn settle(&self) {
        // An error shows in `verify`.
        let _ = self.engine.flush();
        self.ship();
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

impl std::fmt::Debug for Mixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixed")
            .field("params", &self.params)
            .field("locked", &self.engine.is_locked())
            .finish_non_exhaustive()
    }
}
