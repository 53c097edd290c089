//! The `audit` workload: one operation per [`Guarantee`], each logging a
//! realistic ~240-byte event ([`AuditEvent`]) from every thread.
//!
//! | op | guarantee | implementations |
//! |---|---|---|
//! | `log_async` | `async`: in memory when the call returns | `latchfree` ([`AuditLog::log`]), `locked` ([`Guarantee::Async`]), `mutex-bufwriter`, `crossbeam-channel`, `tracing-appender`, `tracing-appender-bufwriter` |
//! | `log_os` | `os`: in the OS page cache when the call returns | `latchfree` (`log_wait(.., Guarantee::Os)`), `locked` ([`Guarantee::Os`]), `mutex-file` |
//! | `log_disk` | `disk`: fsynced when the call returns | `latchfree` (`log_wait(.., Guarantee::Disk)`), `locked` ([`Guarantee::Disk`]), `mutex-file-sync` |
//! | `tracing_json` | `async`: `tracing::info!` through `tracing_subscriber::fmt().json()` | `latchfree` ([`AuditLog::make_writer`], lossless), `tracing-appender` (`lossy(false)`), `tracing-appender-lossy` (its default: drops when its queue is full, counted) |
//! | `log_disk_async` | `disk`, awaited | `latchfree` ([`AuditLog::log_wait_async`]): each bench thread's calls are a task on a 2-worker tokio runtime ([`OnRuntime`](super::OnRuntime)), so at `--threads 64` 64 tasks share 2 threads where `log_disk` blocks 64 |
//!
//! Every implementation serialises the same [`AuditEvent`] with serde_json on
//! the calling thread. The peers:
//!
//! * `mutex-bufwriter` / `mutex-file` / `mutex-file-sync`: what most servers
//!   have today, the plain design: one `Mutex` around a `BufWriter<File>`
//!   (`async`), a bare `File` (`os`: one `write` per line) or a `File`
//!   synced after each line (`disk`: `write` then `fdatasync`). The event is
//!   serialised before the lock is taken, and the line is written whole. It
//!   does **less** work than latchfree and the locked twin: no `seq`, no
//!   timestamp, no hash chain (its guarantee names it `no-chain`). Users
//!   compare against it, so it stays in the table.
//! * `crossbeam-channel`: what a team builds with a channel. A bounded
//!   channel (4096 lines, latchfree's default ring size) of serialised
//!   events, each in its own `Vec`; one writer thread numbers, stamps and
//!   hashes them into the same chained [`record`] lines and writes them
//!   through a `BufWriter`, flushed whenever the channel is empty. Same work
//!   as latchfree, so its files verify too.
//! * `tracing-appender` / `tracing-appender-bufwriter`: its non-blocking
//!   writer (`NonBlockingBuilder` defaults, `lossy(false)`: 128 000 lines,
//!   backpressure instead of drops) over `rolling::never`, bare or wrapped
//!   in a `BufWriter` (its worker flushes whenever its queue runs dry); each
//!   thread writes one line per call through its own clone of `NonBlocking`
//!   (`io::Write`). It does **less** work than latchfree: a `Write` sink
//!   cannot number or chain lines without a lock of its own, so its lines
//!   are the bare events (no `seq`, `ts` or hash; its guarantee names it
//!   `no-chain`). It shows what a generic non-blocking file writer costs.
//!
//! The `tracing_json` rows are what a server that logs through `tracing`
//! pays: each call is one `tracing::info!` with the [`AuditEvent`]'s fields,
//! formatted by one shared `fmt().json()` subscriber (a scoped default on
//! each worker, as a global one would be) into the writer under test. The
//! latchfree writer turns each formatted line into one chained record and
//! blocks when its ring is full; tracing-appender's `NonBlocking` over
//! `rolling::never` is the peer, as its docs recommend (`lossy(false)` for
//! the lossless row; the default, lossy, for the other: its row passes with
//! the loss it counted, lines in the file against events sent, beside it).
//! The appender's lines carry no chain (`no-chain`).
//!
//! After each case the runner checks that nothing was lost: latchfree is
//! closed and must report `total` records written and none dropped, and
//! [`audit::verify`](latchfree::audit::verify()) must find exactly `total`
//! records in an unbroken chain (also for `locked` and `crossbeam-channel`);
//! the `tracing-appender` file must hold `total` lines once its
//! `WorkerGuard` is dropped. A shortfall is printed as `NOT EXACT`.
//!
//! Each target writes into its own fresh directory from
//! [`tempfile::tempdir`], so under `TMPDIR` (`/tmp` by default). The `disk`
//! rows measure that file system's fsync: point `TMPDIR` at the disk you
//! care about, and never at a tmpfs (its fsync does nothing). The `async`
//! rows write hundreds of MB per case; each directory is removed when its
//! thread count is done.
//!
//! Between timed slices each target settles (untimed): latchfree is flushed,
//! and the runner waits until the channel's writer and tracing-appender's
//! worker have written their backlog, so no implementation's backlog runs
//! into another's slice. Within a slice a queue still absorbs a burst: 4096
//! events for latchfree and the channel, 128 000 for tracing-appender, which
//! flatters it in short slices; `--seconds` of 2 or more shows sustained
//! rates.
//!
//! Latency is sampled (`latency: true`): the runner times one call in
//! [`LATENCY_SAMPLE_EVERY`](super::LATENCY_SAMPLE_EVERY) with
//! `Instant::now()` and checks its stop flag before every call, so a slow
//! call (an fsync queued behind 63 others) overruns a slice by at most one
//! call per thread.
//!
//! Group commit is latchfree's advantage under `disk` (and `os`): many
//! waiting callers share one write and one fsync, where the locked twin pays
//! one fsync per record with every other caller queued on its lock. It only
//! shows with many callers in flight, so run the `os` and `disk` rows at 64
//! threads too:
//!
//! ```text
//! latchfree bench audit --threads 1,2,4,8
//! latchfree bench audit --ops log_os,log_disk,log_disk_async --threads 64
//! ```

use std::fs::File;
use std::hint::black_box;
use std::io::{self, BufWriter, Read as _, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use crossbeam_utils::CachePadded;
use serde::Serialize;
use tempfile::TempDir;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

use super::{AsyncTarget, Case, OnRuntime, Target, expect_eq};
use latchfree::audit::record::{self, Body, ChainHash, Timestamp};
use latchfree::audit::{self, AuditLog, Guarantee, Head};
use latchfree::baseline::LockedAuditLog;

/// Lines the `crossbeam-channel` peer's channel holds (latchfree's default
/// ring capacity).
pub const CHANNEL_CAPACITY: usize = 4096;

/// Events the `crossbeam-channel` peer's writer stamps with one timestamp.
const CHANNEL_BATCH: usize = 4096;

/// Every case of the `audit` workload.
pub fn cases() -> Vec<Case> {
    let case = |op, imp, guarantee, make| Case {
        workload: "audit",
        op,
        imp,
        guarantee,
        latency: true,
        make,
    };
    vec![
        case("log_async", "latchfree", "async", |t| {
            Box::new(Latchfree::new(t, Guarantee::Async))
        }),
        case("log_async", "locked", "async", |t| {
            Box::new(Locked::new(t, Guarantee::Async))
        }),
        case("log_async", "mutex-bufwriter", "async, no-chain", |t| {
            Box::new(PlainMutex::new(t, Guarantee::Async))
        }),
        case("log_async", "crossbeam-channel", "async", |t| {
            Box::new(Channel::new(t))
        }),
        case("log_async", "tracing-appender", "async, no-chain", |t| {
            Box::new(Appender::new(t, false))
        }),
        case(
            "log_async",
            "tracing-appender-bufwriter",
            "async, no-chain",
            |t| Box::new(Appender::new(t, true)),
        ),
        case("log_os", "latchfree", "os", |t| {
            Box::new(Latchfree::new(t, Guarantee::Os))
        }),
        case("log_os", "locked", "os", |t| {
            Box::new(Locked::new(t, Guarantee::Os))
        }),
        case("log_os", "mutex-file", "os, no-chain", |t| {
            Box::new(PlainMutex::new(t, Guarantee::Os))
        }),
        case("log_disk", "latchfree", "disk", |t| {
            Box::new(Latchfree::new(t, Guarantee::Disk))
        }),
        case("log_disk", "locked", "disk", |t| {
            Box::new(Locked::new(t, Guarantee::Disk))
        }),
        case("log_disk", "mutex-file-sync", "disk, no-chain", |t| {
            Box::new(PlainMutex::new(t, Guarantee::Disk))
        }),
        case("tracing_json", "latchfree", "async", |t| {
            Box::new(TracingJson::new(t, TracingSinkKind::Latchfree))
        }),
        case("tracing_json", "tracing-appender", "async, no-chain", |t| {
            Box::new(TracingJson::new(t, TracingSinkKind::Appender))
        }),
        case(
            "tracing_json",
            "tracing-appender-lossy",
            "lossy, no-chain",
            |t| Box::new(TracingJson::new(t, TracingSinkKind::AppenderLossy)),
        ),
        case("log_disk_async", "latchfree", "disk", |t| {
            Box::new(OnRuntime::new(Latchfree::new(t, Guarantee::Disk)))
        }),
    ]
}

/// The event every implementation logs: about 240 bytes of compact JSON,
/// varying by thread (user, session, client) and by call (request number,
/// action, resource, amount, outcome).
#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent<'a> {
    /// Who acted, e.g. `user-000017`.
    pub user: &'a str,
    /// What they did, e.g. `transfer.create`.
    pub action: &'static str,
    /// What they did it to.
    pub resource: &'static str,
    /// Their session id (32 hex digits).
    pub session: &'a str,
    /// The request's number on this thread.
    pub request: u64,
    /// Money moved, in cents.
    pub amount_cents: u64,
    /// Currency of `amount_cents`.
    pub currency: &'static str,
    /// Whether the action succeeded.
    pub ok: bool,
    /// The client's address.
    pub client: &'a str,
}

const ACTIONS: [&str; 4] = [
    "transfer.create",
    "account.update",
    "session.refresh",
    "document.download",
];

const RESOURCES: [&str; 8] = [
    "/v1/accounts/ACC-20931/transfers/pending",
    "/v1/accounts/ACC-20931/profile/address",
    "/v1/accounts/ACC-77410/statements/2026-10",
    "/v1/sessions/current/refresh-token",
    "/v1/documents/DOC-5531/versions/3/content",
    "/v1/accounts/ACC-10442/transfers/scheduled",
    "/v1/accounts/ACC-10442/limits/daily",
    "/v1/documents/DOC-0918/versions/1/content",
];

const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

/// Each worker's fixed fields and call counter.
struct Events {
    users: Vec<String>,
    sessions: Vec<String>,
    clients: Vec<String>,
    /// Calls made by each worker; only that worker writes its slot.
    calls: Vec<CachePadded<AtomicU64>>,
}

impl Events {
    fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        Self {
            users: (0..threads).map(|t| format!("user-{t:06}")).collect(),
            sessions: (0..threads)
                .map(|t| {
                    let t = t as u128;
                    format!(
                        "{:032x}",
                        0x5f2c_9a0e_7b1d_4c3a_8e6f_0b2d_9c7a_1e4f ^ (t * 0x9e37)
                    )
                })
                .collect(),
            clients: (0..threads)
                .map(|t| format!("10.{}.{}.{}", t / 65536 % 256, t / 256 % 256, t % 256))
                .collect(),
            calls: (0..threads)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Calls `f` with worker `thread`'s next `n` events.
    fn each(&self, thread: usize, n: u64, mut f: impl FnMut(&AuditEvent<'_>)) {
        for request in self.claim(thread, n) {
            f(&self.event(thread, request));
        }
    }

    /// The request numbers of worker `thread`'s next `n` events.
    fn claim(&self, thread: usize, n: u64) -> std::ops::Range<u64> {
        let t = thread % self.calls.len();
        // Relaxed: the slot is this worker's own; it only needs distinct
        // numbers for consecutive calls.
        let first = self.calls[t].fetch_add(n, Ordering::Relaxed);
        first..first + n
    }

    /// Worker `thread`'s event number `request`.
    fn event(&self, thread: usize, request: u64) -> AuditEvent<'_> {
        let t = thread % self.calls.len();
        let i = request as usize;
        AuditEvent {
            user: &self.users[t],
            action: ACTIONS[i % ACTIONS.len()],
            resource: RESOURCES[(i / 3) % RESOURCES.len()],
            session: &self.sessions[t],
            request,
            amount_cents: request.wrapping_mul(7919) % 1_000_000,
            currency: CURRENCIES[i % CURRENCIES.len()],
            ok: request % 16 != 15,
            client: &self.clients[t],
        }
    }
}

/// Calls that failed during the run: the first error, and how many.
#[derive(Default)]
pub(crate) struct Failures {
    count: AtomicU64,
    first: OnceLock<String>,
}

impl Failures {
    pub(crate) fn note<T, E: std::fmt::Display>(&self, result: Result<T, E>) {
        match result {
            Ok(value) => {
                black_box(value);
            }
            Err(e) => {
                // Relaxed: a count read after the run's threads are joined.
                self.count.fetch_add(1, Ordering::Relaxed);
                let _ = self.first.set(e.to_string());
            }
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        match self.count.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!(
                "{n} calls failed, the first with: {}",
                self.first.get().map_or("?", String::as_str)
            )),
        }
    }
}

fn scratch_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("latchfree-bench-audit-")
        .tempdir()
        .expect("cannot create a scratch directory under TMPDIR")
}

/// Checks the stream in `dir` holds exactly `total` records, unbroken.
pub(crate) fn verify_stream(dir: &Path, total: u64) -> Result<(), String> {
    let report = audit::verify(dir).map_err(|e| format!("audit::verify: {e}"))?;
    expect_eq("records in the files", report.records, total)?;
    expect_eq("events dropped (gap markers)", report.dropped, 0)
}

/// latchfree's [`AuditLog`] (default builder), waiting for `guarantee`.
struct Latchfree {
    log: AuditLog,
    guarantee: Guarantee,
    events: Events,
    failures: Failures,
    dir: TempDir,
}

impl Latchfree {
    fn new(threads: usize, guarantee: Guarantee) -> Self {
        let dir = scratch_dir();
        let log = AuditLog::open(dir.path()).expect("cannot open the audit log");
        Self {
            log,
            guarantee,
            events: Events::new(threads),
            failures: Failures::default(),
            dir,
        }
    }
}

impl Target for Latchfree {
    fn run(&self, thread: usize, n: u64) {
        self.events.each(thread, n, |event| {
            let result = match self.guarantee {
                Guarantee::Async => self.log.log(event),
                guarantee => self.log.log_wait(event, guarantee),
            };
            self.failures.note(result);
        });
    }

    fn settle(&self) {
        // Everything logged is written (to the OS) when it returns; an error
        // shows in `verify`.
        let _ = self.log.flush();
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let check = || {
            self.failures.check()?;
            self.log.close().map_err(|e| format!("close: {e}"))?;
            let metrics = self.log.metrics();
            expect_eq("records written (metrics)", metrics.written, total_ops)?;
            expect_eq("events dropped (metrics)", metrics.dropped, 0)?;
            verify_stream(self.dir.path(), total_ops)
        };
        Some(check())
    }
}

impl AsyncTarget for Latchfree {
    /// [`AuditLog::log_wait_async`]: each call queues its event, then its
    /// task awaits the guarantee, yielding its worker meanwhile.
    async fn run_async(&self, thread: usize, n: u64) {
        for request in self.events.claim(thread, n) {
            let event = self.events.event(thread, request);
            let result = self.log.log_wait_async(&event, self.guarantee).await;
            self.failures.note(result);
        }
    }
}

/// The locked twin, in the mode that gives the row's guarantee.
struct Locked {
    log: LockedAuditLog,
    events: Events,
    failures: Failures,
    dir: TempDir,
}

impl Locked {
    fn new(threads: usize, mode: Guarantee) -> Self {
        let dir = scratch_dir();
        let log = LockedAuditLog::open(dir.path(), mode).expect("cannot open the locked log");
        Self {
            log,
            events: Events::new(threads),
            failures: Failures::default(),
            dir,
        }
    }
}

impl Target for Locked {
    fn run(&self, thread: usize, n: u64) {
        self.events
            .each(thread, n, |event| self.failures.note(self.log.log(event)));
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let check = || {
            self.failures.check()?;
            let head = self.log.close().map_err(|e| format!("close: {e}"))?;
            expect_eq("records written", head.map_or(0, |h| h.seq + 1), total_ops)?;
            verify_stream(self.dir.path(), total_ops)
        };
        Some(check())
    }
}

/// The plain design: one `Mutex` around the file (a `BufWriter` for
/// `async`), whole JSON lines, no chain.
struct PlainMutex {
    file: Mutex<PlainSink>,
    guarantee: Guarantee,
    /// Each worker's line buffer (only worker `t` takes slot `t`).
    lines: Vec<CachePadded<Mutex<Vec<u8>>>>,
    events: Events,
    failures: Failures,
    dir: TempDir,
}

/// Where the plain design's lines go.
enum PlainSink {
    Buffered(BufWriter<File>),
    Raw(File),
}

/// The plain design's file name.
const PLAIN_FILE: &str = "plain.jsonl";

impl PlainMutex {
    fn new(threads: usize, guarantee: Guarantee) -> Self {
        let dir = scratch_dir();
        let file = File::create_new(dir.path().join(PLAIN_FILE))
            .expect("cannot create the plain peer's file");
        let file = match guarantee {
            Guarantee::Async => PlainSink::Buffered(BufWriter::new(file)),
            _ => PlainSink::Raw(file),
        };
        Self {
            file: Mutex::new(file),
            guarantee,
            lines: (0..threads.max(1))
                .map(|_| CachePadded::new(Mutex::new(Vec::with_capacity(512))))
                .collect(),
            events: Events::new(threads),
            failures: Failures::default(),
            dir,
        }
    }

    /// Writes one whole line under the lock, with the guarantee's sync.
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut sink = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *sink {
            PlainSink::Buffered(w) => w.write_all(line),
            PlainSink::Raw(f) => {
                f.write_all(line)?;
                if self.guarantee == Guarantee::Disk {
                    f.sync_data()?;
                }
                Ok(())
            }
        }
    }
}

impl Target for PlainMutex {
    fn run(&self, thread: usize, n: u64) {
        let mut line = self.lines[thread % self.lines.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.events.each(thread, n, |event| {
            let result = json_line(&mut line, event).and_then(|()| self.write_line(&line));
            self.failures.note(result);
        });
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let check = || {
            self.failures.check()?;
            if let PlainSink::Buffered(w) =
                &mut *self.file.lock().unwrap_or_else(PoisonError::into_inner)
            {
                w.flush().map_err(|e| format!("flush: {e}"))?;
            }
            let path = self.dir.path().join(PLAIN_FILE);
            let lines = count_lines(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            expect_eq("lines in the file", lines, total_ops)
        };
        Some(check())
    }
}

/// A bounded crossbeam channel of serialised events and one writer thread
/// that chains them into records through a `BufWriter`.
struct Channel {
    sender: Sender<Vec<u8>>,
    /// Events sent.
    sent: AtomicU64,
    /// Records the writer has flushed to the file.
    flushed: Arc<AtomicU64>,
    /// The writer, until it is stopped; it returns the records it wrote.
    writer: Mutex<Option<JoinHandle<io::Result<u64>>>>,
    events: Events,
    failures: Failures,
    dir: TempDir,
}

impl Channel {
    fn new(threads: usize) -> Self {
        let dir = scratch_dir();
        // One file for the whole run: its day only orders it among its own.
        let path = dir.path().join(audit::file_name("audit", 20000101, 0));
        let file = File::create_new(&path).expect("cannot create the channel peer's file");
        let (sender, receiver) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let flushed = Arc::new(AtomicU64::new(0));
        let writer = {
            let flushed = flushed.clone();
            std::thread::Builder::new()
                .name("channel-writer".into())
                .spawn(move || channel_writer(&receiver, file, &flushed))
                .expect("cannot spawn the channel peer's writer")
        };
        Self {
            sender,
            sent: AtomicU64::new(0),
            flushed,
            writer: Mutex::new(Some(writer)),
            events: Events::new(threads),
            failures: Failures::default(),
            dir,
        }
    }

    /// Stops the writer once it has written everything sent before, and
    /// returns what it wrote (`None` if it was already stopped).
    fn stop(&self) -> Option<Result<u64, String>> {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        // The empty line is the stop marker (events are never empty).
        let _ = self.sender.send(Vec::new());
        Some(match writer.join() {
            Ok(Ok(records)) => Ok(records),
            Ok(Err(e)) => Err(format!("the channel writer failed: {e}")),
            Err(_) => Err("the channel writer panicked".into()),
        })
    }
}

/// The `crossbeam-channel` peer's writer: blocks for an event, then drains
/// what the channel holds (up to [`CHANNEL_BATCH`] events under one
/// timestamp), and flushes its `BufWriter` whenever the channel is empty,
/// publishing the records flushed in `flushed`. Stops at an empty line.
fn channel_writer(events: &Receiver<Vec<u8>>, file: File, flushed: &AtomicU64) -> io::Result<u64> {
    let mut out = BufWriter::new(file);
    let mut line = Vec::with_capacity(1024);
    let mut head: Option<Head> = None;
    let mut records = 0u64;
    while let Ok(first) = events.recv() {
        let ts = Timestamp::new(SystemTime::now());
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(event) = next.take() {
            if event.is_empty() {
                out.flush()?;
                flushed.store(records, Ordering::Release);
                return Ok(records);
            }
            let (seq, prev) = match head {
                Some(h) => (h.seq + 1, h.hash),
                None => (0, ChainHash::GENESIS),
            };
            line.clear();
            let hash = record::encode_at(&mut line, seq, &ts, Body::Event(&event), &prev);
            out.write_all(&line)?;
            head = Some(Head { seq, hash });
            records += 1;
            batch += 1;
            if batch < CHANNEL_BATCH {
                next = events.try_recv().ok();
            }
        }
        if events.is_empty() {
            out.flush()?;
            // Release: pairs with the Acquire load in `settle`.
            flushed.store(records, Ordering::Release);
        }
    }
    out.flush()?;
    flushed.store(records, Ordering::Release);
    Ok(records)
}

impl Target for Channel {
    fn run(&self, thread: usize, n: u64) {
        self.events.each(thread, n, |event| {
            let mut json = Vec::with_capacity(512);
            let result = serde_json::to_writer(&mut json, event)
                .map_err(|e| e.to_string())
                .and_then(|()| self.sender.send(json).map_err(|e| e.to_string()));
            if result.is_ok() {
                // Relaxed: read in `settle`, after the workers are joined.
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            self.failures.note(result);
        });
    }

    fn settle(&self) {
        let sent = self.sent.load(Ordering::Relaxed);
        // Acquire: pairs with the writer's Release store.
        wait_until(|| {
            self.flushed.load(Ordering::Acquire) >= sent
                || self
                    .writer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .is_none_or(JoinHandle::is_finished)
        });
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let check = || {
            self.failures.check()?;
            let written = self
                .stop()
                .unwrap_or_else(|| Err("the writer was already stopped".into()))?;
            expect_eq("records written", written, total_ops)?;
            verify_stream(self.dir.path(), total_ops)
        };
        Some(check())
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.stop() {
            eprintln!("latchfree bench: {e}");
        }
    }
}

/// tracing-appender's `NonBlocking` over `rolling::never`, or over a
/// `BufWriter` of it (its worker flushes whenever its queue is empty).
struct Appender {
    /// Each worker's clone of the writer and its line buffer.
    writers: Vec<CachePadded<Mutex<AppenderSlot>>>,
    /// Dropping it flushes the lines queued before (waiting up to 1 s).
    guard: Mutex<Option<WorkerGuard>>,
    /// Bytes written to `NonBlocking` (queued for the file).
    sent: AtomicU64,
    events: Events,
    failures: Failures,
    dir: TempDir,
}

/// One worker's writer and line buffer.
struct AppenderSlot {
    writer: NonBlocking,
    line: Vec<u8>,
}

/// The `tracing-appender` peer's file name.
const APPENDER_FILE: &str = "x.log";

impl Appender {
    fn new(threads: usize, buffered: bool) -> Self {
        let dir = scratch_dir();
        let file = tracing_appender::rolling::never(dir.path(), APPENDER_FILE);
        let builder = NonBlockingBuilder::default().lossy(false);
        let (writer, guard) = if buffered {
            builder.finish(BufWriter::new(file))
        } else {
            builder.finish(file)
        };
        Self {
            writers: (0..threads.max(1))
                .map(|_| {
                    CachePadded::new(Mutex::new(AppenderSlot {
                        writer: writer.clone(),
                        line: Vec::with_capacity(512),
                    }))
                })
                .collect(),
            guard: Mutex::new(Some(guard)),
            sent: AtomicU64::new(0),
            events: Events::new(threads),
            failures: Failures::default(),
            dir,
        }
    }
}

impl Target for Appender {
    fn run(&self, thread: usize, n: u64) {
        // Uncontended: only worker `thread` takes its slot.
        let mut slot = self.writers[thread % self.writers.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let AppenderSlot { writer, line } = &mut *slot;
        self.events.each(thread, n, |event| {
            // One `write` call: one message, one line.
            let result = json_line(line, event).and_then(|()| writer.write_all(line));
            if result.is_ok() {
                // Relaxed: read in `settle`, after the workers are joined.
                self.sent.fetch_add(line.len() as u64, Ordering::Relaxed);
            }
            self.failures.note(result);
        });
    }

    fn settle(&self) {
        // The worker has written the queue once the file holds every byte.
        let sent = self.sent.load(Ordering::Relaxed);
        let path = self.dir.path().join(APPENDER_FILE);
        wait_until(|| std::fs::metadata(&path).is_ok_and(|m| m.len() >= sent));
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let check = || {
            self.failures.check()?;
            drop(
                self.guard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
            let path = self.dir.path().join(APPENDER_FILE);
            let lines = count_lines(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            expect_eq("lines in the file after the guard's drop", lines, total_ops)
        };
        Some(check())
    }
}

/// Which writer a [`TracingJson`] target's `fmt` layer writes into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TracingSinkKind {
    /// [`AuditLog::make_writer`], default builder (lossless).
    Latchfree,
    /// tracing-appender's `NonBlocking`, `lossy(false)`.
    Appender,
    /// tracing-appender's `NonBlocking`, defaults (lossy).
    AppenderLossy,
}

/// The writer behind the subscriber, and what the checks need of it.
enum TracingSink {
    Latchfree {
        log: AuditLog,
        writer: latchfree::audit::TracingWriter,
    },
    Appender {
        /// Dropping it flushes the lines queued before (waiting up to 1 s).
        guard: Mutex<Option<WorkerGuard>>,
        /// Lines the lossy writer dropped (always 0 for `lossy(false)`).
        dropped: tracing_appender::non_blocking::ErrorCounter,
        /// Bytes of the file already counted, and the lines in them.
        counted: Mutex<(u64, u64)>,
    },
}

/// `tracing::info!` events formatted by `tracing_subscriber::fmt().json()`
/// into a latchfree or tracing-appender writer.
struct TracingJson {
    /// The `fmt().json()` subscriber, shared by every worker.
    dispatch: tracing::Dispatch,
    sink: TracingSink,
    kind: TracingSinkKind,
    /// What the last check counted as lost (the lossy peer only).
    lost: Mutex<Option<String>>,
    events: Events,
    dir: TempDir,
}

impl TracingJson {
    fn new(threads: usize, kind: TracingSinkKind) -> Self {
        let dir = scratch_dir();
        let subscriber = tracing_subscriber::fmt().json();
        let (dispatch, sink) = match kind {
            TracingSinkKind::Latchfree => {
                let log = AuditLog::open(dir.path()).expect("cannot open the audit log");
                let writer = log.make_writer();
                let dispatch =
                    tracing::Dispatch::new(subscriber.with_writer(writer.clone()).finish());
                (dispatch, TracingSink::Latchfree { log, writer })
            }
            TracingSinkKind::Appender | TracingSinkKind::AppenderLossy => {
                let file = tracing_appender::rolling::never(dir.path(), APPENDER_FILE);
                let builder =
                    NonBlockingBuilder::default().lossy(kind == TracingSinkKind::AppenderLossy);
                let (writer, guard) = builder.finish(file);
                let dropped = writer.error_counter();
                let dispatch = tracing::Dispatch::new(subscriber.with_writer(writer).finish());
                let sink = TracingSink::Appender {
                    guard: Mutex::new(Some(guard)),
                    dropped,
                    counted: Mutex::new((0, 0)),
                };
                (dispatch, sink)
            }
        };
        Self {
            dispatch,
            sink,
            kind,
            lost: Mutex::new(None),
            events: Events::new(threads),
            dir,
        }
    }

    /// Events emitted so far by every worker (call after they are joined).
    fn sent(&self) -> u64 {
        // Relaxed: the workers were joined.
        self.events
            .calls
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Lines in the appender's file now, reading only what was added since
    /// the last call.
    fn appender_lines(&self, counted: &Mutex<(u64, u64)>) -> io::Result<u64> {
        use std::io::Seek as _;
        let mut counted = counted.lock().unwrap_or_else(PoisonError::into_inner);
        let mut file = File::open(self.dir.path().join(APPENDER_FILE))?;
        file.seek(io::SeekFrom::Start(counted.0))?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => return Ok(counted.1),
                Ok(n) => {
                    counted.0 += n as u64;
                    counted.1 += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Target for TracingJson {
    fn run(&self, thread: usize, n: u64) {
        tracing::dispatcher::with_default(&self.dispatch, || {
            self.events.each(thread, n, |e| {
                tracing::info!(
                    user = e.user,
                    action = e.action,
                    resource = e.resource,
                    session = e.session,
                    request = e.request,
                    amount_cents = e.amount_cents,
                    currency = e.currency,
                    ok = e.ok,
                    client = e.client,
                    "audit"
                );
            });
        });
    }

    fn settle(&self) {
        match &self.sink {
            TracingSink::Latchfree { log, .. } => {
                let _ = log.flush();
            }
            TracingSink::Appender {
                dropped, counted, ..
            } => {
                let sent = self.sent();
                wait_until(|| {
                    let lines = self.appender_lines(counted).unwrap_or(0);
                    lines + dropped.dropped_lines() as u64 >= sent
                });
            }
        }
    }

    fn verify(&self, total_ops: u64) -> Option<Result<(), String>> {
        let check = || match &self.sink {
            TracingSink::Latchfree { log, writer } => {
                log.close().map_err(|e| format!("close: {e}"))?;
                let m = writer.metrics();
                expect_eq("events dropped by the tracing writer", m.dropped, 0)?;
                expect_eq(
                    "events refused by the tracing writer",
                    m.failed + m.oversized,
                    0,
                )?;
                expect_eq(
                    "records written (metrics)",
                    log.metrics().written,
                    total_ops,
                )?;
                verify_stream(self.dir.path(), total_ops)
            }
            TracingSink::Appender {
                guard,
                dropped,
                counted,
            } => {
                drop(guard.lock().unwrap_or_else(PoisonError::into_inner).take());
                let lines = self
                    .appender_lines(counted)
                    .map_err(|e| format!("{APPENDER_FILE}: {e}"))?;
                if self.kind == TracingSinkKind::Appender {
                    return expect_eq("lines in the file after the guard's drop", lines, total_ops);
                }
                // The lossy writer: what is not in the file was dropped, and
                // its own counter must say so.
                let lost = total_ops
                    .checked_sub(lines)
                    .ok_or_else(|| format!("{lines} lines for {total_ops} events"))?;
                expect_eq(
                    "lines it counted as dropped",
                    dropped.dropped_lines() as u64,
                    lost,
                )?;
                *self.lost.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
                    "lost {lost} of {total_ops} events ({:.2} %)",
                    lost as f64 * 100.0 / total_ops.max(1) as f64
                ));
                Ok(())
            }
        };
        Some(check())
    }

    fn report(&self) -> Option<String> {
        self.lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Serialises `event` into `line` (cleared first) as one JSON line, for the
/// peers that write bare events.
fn json_line(line: &mut Vec<u8>, event: &AuditEvent<'_>) -> io::Result<()> {
    line.clear();
    serde_json::to_writer(&mut *line, event)?;
    line.push(b'\n');
    Ok(())
}

/// Polls `done` every 100 µs for up to [`SETTLE_LIMIT`].
fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE_LIMIT;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The longest a peer's backlog is waited for between slices; one still
/// behind after it shows in the exactness check.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Counts the newlines in a file.
fn count_lines(path: &Path) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Ok(lines),
            Ok(n) => lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_about_240_bytes_and_vary() {
        let events = Events::new(4);
        let mut lines = Vec::new();
        for t in 0..4 {
            events.each(t, 8, |e| lines.push(serde_json::to_string(e).unwrap()));
        }
        for line in &lines {
            assert!(
                (220..=260).contains(&line.len()),
                "{} bytes: {line}",
                line.len()
            );
        }
        let distinct: std::collections::HashSet<_> = lines.iter().collect();
        assert_eq!(distinct.len(), lines.len());
    }

    #[test]
    fn the_channel_writer_keeps_events_across_batches() {
        let dir = scratch_dir();
        let path = dir.path().join(audit::file_name("audit", 20261123, 0));
        let (sender, receiver) = crossbeam_channel::unbounded();
        let total = 2 * CHANNEL_BATCH as u64 + 7;
        for i in 0..total {
            sender.send(i.to_string().into_bytes()).unwrap();
        }
        sender.send(Vec::new()).unwrap();
        let flushed = AtomicU64::new(0);
        let file = File::create_new(&path).unwrap();
        assert_eq!(channel_writer(&receiver, file, &flushed).unwrap(), total);
        assert_eq!(flushed.load(Ordering::Relaxed), total);
        assert_eq!(verify_stream(dir.path(), total), Ok(()));
    }

    #[test]
    fn every_case_counts_exactly() {
        for case in cases() {
            for threads in [1, 3] {
                let target = (case.make)(threads);
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let target = &target;
                        s.spawn(move || target.run(t, 50));
                    }
                });
                let total = 50 * threads as u64;
                assert_eq!(
                    target.verify(total),
                    Some(Ok(())),
                    "{} {} ×{threads}",
                    case.op,
                    case.imp
                );
                // One record short of the claim is reported.
                let target = (case.make)(threads);
                target.run(0, 3);
                assert!(
                    matches!(target.verify(4), Some(Err(_))),
                    "{} {}",
                    case.op,
                    case.imp
                );
            }
        }
    }
}
