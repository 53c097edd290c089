//! [`AuditLog`]: the handle every thread logs through.

use std::cell::RefCell;
use std::fmt;
use std::fs::{OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use serde::Serialize;
use serde_json::value::RawValue;

use super::durable::{OsSyncer, Syncer};
use super::progress::{self, Level, Progress, Stalled};
use super::record::Head;
use super::record::RecordError;
use super::recover::{self, RecoverError};
use super::retention::{Limits, Retainer};
use super::ring::{self, OnFull, Producer, PushError, RingConfig};
pub use super::writer::Durability;
use super::writer::{self, Counts, Desk, Heads, StreamState, Summary, Unwritten, Writer};
use crate::clock::{Clock, SystemClock};
use crate::stats::{Stats, StatsError};
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The size at which a stream starts a new file unless told otherwise
/// ([`AuditBuilder::max_file_bytes`]): 256 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;

/// The most events an [`AuditBuilder::capacity`] may ask the ring to hold.
pub const MAX_CAPACITY: usize = 1 << 22;
/// The most memory the ring's slots may take up front
/// ([`AuditBuilder::capacity`] × [`AuditBuilder::slot_bytes`]): 1 GiB.
pub const MAX_RING_BYTES: usize = 1 << 30;
/// The largest [`AuditBuilder::max_event_bytes`]: 1 GiB.
pub const MAX_EVENT_BYTES: usize = 1 << 30;
/// The smallest [`AuditBuilder::max_file_bytes`]: 4 KiB.
pub const MIN_FILE_BYTES: u64 = 4096;

/// How far a record has gone: what a caller can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Guarantee {
    /// In the ring, in memory: the writer will write it (what `log` gives).
    Async,
    /// Written to the OS: survives a crash of the process.
    Os,
    /// Written and fsynced: survives power loss.
    Disk,
}

impl Guarantee {
    /// The name used in benchmark rows: `async`, `os` or `disk`.
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::Async => "async",
            Guarantee::Os => "os",
            Guarantee::Disk => "disk",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A logged record's place in the ring, to [`wait`](AuditLog::wait) for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

impl Ticket {
    /// The level that covers this ticket's record: one past its position.
    #[cfg_attr(not(feature = "async"), allow(dead_code))] // The async waits.
    pub(super) fn covered_at(self) -> u64 {
        self.0 + 1
    }
}

/// Why an audit operation failed. Cheap to clone (I/O errors are shared).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The stream prefix is not 1 to 64 ASCII letters, digits or `_`,
    /// starting with a letter.
    #[error(
        "invalid stream prefix {0:?}: use 1 to 64 ASCII letters, digits or `_`, starting with a letter"
    )]
    InvalidPrefix(String),
    /// A builder setting is out of its range (nothing was opened or
    /// allocated): `AuditBuilder::{setting}` was given `value`.
    #[error("AuditBuilder::{setting}({value}) is out of range: use {allowed}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// The value refused.
        value: u64,
        /// What is accepted.
        allowed: &'static str,
    },
    /// The directory or a stream file cannot be opened, created or read.
    #[error("cannot open the audit log at {}: {source}", path.display())]
    Open {
        /// The directory or file.
        path: PathBuf,
        /// The error.
        source: Arc<io::Error>,
    },
    /// Another [`AuditLog`] (in this process or another) has the stream
    /// open: two writers would fork the chain.
    #[error("the audit stream {} is open elsewhere (its lock file is held)", path.display())]
    InUse {
        /// The stream's lock file.
        path: PathBuf,
    },
    /// The newest file's last whole line is not a valid record; nothing is
    /// guessed. Check the stream with `latchfree audit verify`.
    #[error("cannot resume {}: its last line is not a valid record: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with the line.
        source: RecordError,
    },
    /// The newest file does not continue the file before it: its first
    /// record has `seq` `first`, the one before ends at `previous` (or the
    /// hashes do not link). A copy of an older file under a newer name
    /// would make the stream resume at the wrong `seq` and fork the chain;
    /// nothing is guessed. Check the stream with `latchfree audit verify`.
    #[error(
        "cannot resume {}: its first record (seq {first}) does not continue the file before it (which ends at seq {previous})",
        path.display()
    )]
    Forked {
        /// The newest file with records.
        path: PathBuf,
        /// The `seq` of its first record.
        first: u64,
        /// The `seq` of the last record before it.
        previous: u64,
    },
    /// The serialised event is longer than the configured limit.
    #[error("the event exceeds the {max}-byte limit (AuditBuilder::max_event_bytes)")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The event's `Serialize` implementation failed.
    #[error("cannot serialise the event: {0}")]
    Serialize(Arc<serde_json::Error>),
    /// [`OnFull::Drop`] and the ring is full: the event was dropped,
    /// counted, and will be marked by a gap record.
    #[error("the audit ring is full; the event was dropped and counted")]
    Full,
    /// The log was closed.
    #[error("the audit log is closed")]
    Closed,
    /// The writer cannot write (a full disk, say). Records already accepted
    /// are kept and retried; new events are refused until a write succeeds.
    #[error("the audit writer cannot write: {0}")]
    Write(Arc<io::Error>),
    /// The log was closed while the writer could not write: this many
    /// accepted events are not in the file as whole lines (a line cut short
    /// by the error is truncated when the stream is next opened).
    #[error("closed with {records} records unwritten: {source}")]
    Unwritten {
        /// Records accepted but not written.
        records: u64,
        /// The last write error.
        source: Arc<io::Error>,
    },
    /// The writer thread panicked (a bug: please report it).
    #[error("the audit writer thread panicked")]
    WriterPanicked,
    /// The log's metrics could not be registered in the given [`Stats`].
    #[error("cannot register the audit metrics: {0}")]
    Stats(#[from] StatsError),
}

/// A stream's counters, read at one moment (see [`AuditLog::metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditMetrics {
    /// Events accepted into the ring.
    pub enqueued: u64,
    /// Events written to the OS.
    pub written: u64,
    /// Events dropped under [`OnFull::Drop`] and marked by gap records.
    pub dropped: u64,
    /// Gap records written.
    pub gap_records: u64,
    /// Batches written (one write call each, unless the OS took part).
    pub batches: u64,
    /// Bytes written.
    pub bytes: u64,
    /// fsyncs.
    pub fsyncs: u64,
    /// Events that found the ring full and waited ([`OnFull::Block`]).
    pub full_waits: u64,
    /// Failed write or fsync calls.
    pub write_errors: u64,
    /// Files created.
    pub files: u64,
    /// Files removed by the retention limits
    /// ([`AuditBuilder::max_files`], ...).
    pub files_removed: u64,
}

/// Configures and opens an [`AuditLog`].
#[must_use]
pub struct AuditBuilder {
    dir: PathBuf,
    prefix: String,
    durability: Durability,
    on_full: OnFull,
    capacity: usize,
    slot_bytes: usize,
    max_event_bytes: usize,
    max_file_bytes: u64,
    clock: Arc<dyn Clock>,
    stats: Option<Stats>,
    syncer: Arc<dyn Syncer>,
    retention: Limits,
}

impl AuditBuilder {
    /// The stream's name: files are `PREFIX-YYYYMMDD-NNNNNN.jsonl` and
    /// metrics `PREFIX_*_total` (default `audit`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// When the writer fsyncs (default [`Durability::None`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// What `log` does when the ring is full (default [`OnFull::Block`]:
    /// lossless).
    pub fn on_full(mut self, on_full: OnFull) -> Self {
        self.on_full = on_full;
        self
    }

    /// Events the ring holds (default 4096): 1 to [`MAX_CAPACITY`],
    /// rounded up to a power of two (at least 2). Checked by
    /// [`open`](Self::open), like every bound of the builder.
    pub fn capacity(mut self, events: usize) -> Self {
        self.capacity = events;
        self
    }

    /// Bytes of each ring slot allocated up front (default 512): events up
    /// to this size never allocate; a longer one grows its slot once. The
    /// ring's up-front memory, slots × `slot_bytes`, is at most
    /// [`MAX_RING_BYTES`].
    pub fn slot_bytes(mut self, bytes: usize) -> Self {
        self.slot_bytes = bytes;
        self
    }

    /// The longest serialised event accepted (default 1 MiB; 1 byte to
    /// [`MAX_EVENT_BYTES`]); longer ones get [`AuditError::TooLarge`], and
    /// serialising stops at the limit.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// Starts a new file once one reaches this size (default
    /// [`DEFAULT_MAX_FILE_BYTES`], 256 MiB; at least [`MIN_FILE_BYTES`]);
    /// files also change with the UTC day.
    pub fn max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// Where the writer gets record timestamps and the day (default the
    /// system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Registers the stream's counters (`PREFIX_records_written_total`, …)
    /// in `stats` instead of a private registry.
    pub fn stats(mut self, stats: &Stats) -> Self {
        self.stats = Some(stats.clone());
        self
    }

    /// Keeps at most `files` files of the stream, the one being written
    /// included (at least 1): the writer removes the oldest closed files
    /// beyond it, after anchoring the chain (see [`anchor`](super::anchor);
    /// [`verify`](super::verify()) then starts from the anchor). Off by
    /// default.
    pub fn max_files(mut self, files: usize) -> Self {
        self.retention.max_files = Some(files);
        self
    }

    /// Keeps at most `bytes` over all the stream's files, the one being
    /// written included (at least [`MIN_FILE_BYTES`]), removing the oldest
    /// closed files beyond it as [`max_files`](Self::max_files) does. The
    /// file being written is never removed, so the stream can exceed the
    /// limit by up to one file: keep it well above
    /// [`max_file_bytes`](Self::max_file_bytes). Off by default.
    pub fn max_total_bytes(mut self, bytes: u64) -> Self {
        self.retention.max_total_bytes = Some(bytes);
        self
    }

    /// Removes a closed file once its last record is older than `age` by
    /// the stream's [`clock`](Self::clock) (at least a second), as
    /// [`max_files`](Self::max_files) does. Off by default.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.retention.max_age = Some(age);
        self
    }

    /// Checks every bound before anything is created or allocated.
    fn check_settings(&self) -> Result<(), AuditError> {
        let invalid = |setting, value: u64, allowed| {
            Err(AuditError::InvalidSetting {
                setting,
                value,
                allowed,
            })
        };
        let wide = |n: usize| n as u64; // usize is at most 64 bits here
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return invalid(
                "capacity",
                wide(self.capacity),
                "1 to MAX_CAPACITY (4,194,304) events",
            );
        }
        let slots = self.capacity.max(2).next_power_of_two();
        if slots
            .checked_mul(self.slot_bytes)
            .is_none_or(|bytes| bytes > MAX_RING_BYTES)
        {
            return invalid(
                "slot_bytes",
                wide(self.slot_bytes),
                "at most MAX_RING_BYTES (1 GiB) over all the ring's slots",
            );
        }
        if !(1..=MAX_EVENT_BYTES).contains(&self.max_event_bytes) {
            return invalid(
                "max_event_bytes",
                wide(self.max_event_bytes),
                "1 to MAX_EVENT_BYTES (1 GiB)",
            );
        }
        if self.max_file_bytes < MIN_FILE_BYTES {
            return invalid(
                "max_file_bytes",
                self.max_file_bytes,
                "at least MIN_FILE_BYTES (4096)",
            );
        }
        if let Some(files) = self.retention.max_files
            && files == 0
        {
            return invalid("max_files", 0, "at least 1 file (the one being written)");
        }
        if let Some(bytes) = self.retention.max_total_bytes
            && bytes < MIN_FILE_BYTES
        {
            return invalid("max_total_bytes", bytes, "at least MIN_FILE_BYTES (4096)");
        }
        if let Some(age) = self.retention.max_age
            && age < Duration::from_secs(1)
        {
            let millis = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            return invalid("max_age", millis, "at least 1 second (the value is in ms)");
        }
        Ok(())
    }

    /// Replaces the OS's sync calls (tests record them).
    #[cfg(test)]
    pub(crate) fn syncer(mut self, syncer: Arc<dyn Syncer>) -> Self {
        self.syncer = syncer;
        self
    }

    /// Opens the stream: creates the directory if needed, truncates a torn
    /// last line, resumes `seq` and the chain, and starts the writer.
    pub fn open(self) -> Result<AuditLog, AuditError> {
        self.check_settings()?;
        let valid = (1..=64).contains(&self.prefix.len())
            && self.prefix.starts_with(|c: char| c.is_ascii_alphabetic())
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(AuditError::InvalidPrefix(self.prefix));
        }
        let open_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e| AuditError::Open {
                path,
                source: Arc::new(e),
            }
        };
        std::fs::create_dir_all(&self.dir).map_err(open_err(&self.dir))?;
        let lock_path = self.dir.join(format!("{}.lock", self.prefix));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(open_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(AuditError::InUse { path: lock_path }),
            Err(TryLockError::Error(e)) => return Err(open_err(&lock_path)(e)),
        }
        let recovered = recover::open_stream(&self.dir, &self.prefix).map_err(|e| match e {
            RecoverError::Io(path, e) => open_err(&path)(e),
            RecoverError::Corrupt(path, source) => AuditError::Corrupt { path, source },
            RecoverError::Forked {
                path,
                first,
                previous,
            } => AuditError::Forked {
                path,
                first,
                previous,
            },
        })?;
        let stats = self.stats.unwrap_or_default();
        let counts = Counts::register(&stats, &self.prefix)?;
        let current = match recovered.current {
            Some(current) => current,
            None => {
                // Create the first file now, so an unwritable directory
                // fails here rather than in the writer.
                let ts = super::record::Timestamp::new(self.clock.now());
                let day = recover::day_of(&ts);
                let path = self.dir.join(recover::file_name(&self.prefix, day, 0));
                let file = writer::create(&path).map_err(open_err(&path))?;
                counts.files.inc();
                recover::Current {
                    file,
                    day,
                    n: 0,
                    len: 0,
                }
            }
        };
        let retainer = if self.retention.is_off() {
            None
        } else {
            let current_path =
                self.dir
                    .join(recover::file_name(&self.prefix, current.day, current.n));
            let retainer = Retainer::open(self.retention, &self.dir, &self.prefix, &current_path)
                .map_err(open_err(&self.dir))?;
            Some(retainer)
        };
        let ring_config = RingConfig::default()
            .capacity(self.capacity)
            .slot_bytes(self.slot_bytes + super::record::DIGEST_LEN)
            .max_record(self.max_event_bytes)
            .on_full(self.on_full);
        let (producer, consumer) = ring::channel(ring_config);
        let shared = Arc::new(StreamState {
            prefix: self.prefix.clone(),
            durability: self.durability,
            max_file_bytes: self.max_file_bytes,
            clock: self.clock,
            counts,
            written: Level::new(0),
            synced: Level::new(0),
            sync_wanted: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            progress: Progress::new(),
        });
        shared.progress.set(|s| {
            s.heads = Heads {
                written: recovered.head,
                synced: recovered.head,
            }
        });
        let writer = Writer::new(
            consumer,
            shared.clone(),
            self.dir.clone(),
            current,
            recovered.head,
            lock,
            self.syncer,
        )
        .with_retainer(retainer);
        let desk = Desk::new(writer);
        let thread = {
            let shared = shared.clone();
            let desk = desk.clone();
            std::thread::Builder::new()
                .name(format!("latchfree-{}", self.prefix))
                .spawn(move || {
                    let _stopped = StopGuard(shared);
                    desk.run()
                })
                .map_err(open_err(&self.dir))?
        };
        Ok(AuditLog {
            inner: Arc::new(Inner {
                shared,
                producer,
                max_event_bytes: self.max_event_bytes,
                dir: self.dir,
                truncated: recovered.truncated,
                stats,
                writer: Mutex::new(Some(thread)),
                desk,
                closed: OnceLock::new(),
                callers: CachePadded::new(AtomicUsize::new(0)),
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            }),
        })
    }
}

/// One caller counted in a count of callers while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        // Relaxed (both): a count read only as a hint.
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells waiters the writer is gone, however it ends.
struct StopGuard(Arc<StreamState>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.progress.update(|s| s.stopped = true);
    }
}

struct Inner {
    shared: Arc<StreamState>,
    producer: Producer,
    max_event_bytes: usize,
    dir: PathBuf,
    truncated: u64,
    stats: Stats,
    writer: Mutex<Option<JoinHandle<Result<Summary, Unwritten>>>>,
    desk: Arc<Desk>,
    closed: OnceLock<Result<Option<Head>, AuditError>>,
    /// Callers in `log_wait`, `wait` or `flush` now.
    callers: CachePadded<AtomicUsize>,
    /// The cores this process may run on.
    cores: usize,
}

/// A lossless, tamper-evident JSONL audit stream: any number of threads log
/// through clones of one handle; one writer thread owns the files.
///
/// * **Lossless.** With [`OnFull::Block`] (the default) `log` waits for room
///   rather than drop; [`close`](Self::close) (or dropping the last handle)
///   writes everything logged before it. With [`OnFull::Drop`] `log` never
///   waits, and every drop is counted and marked in the file by a gap record.
/// * **Whole lines, in order.** Each event is one line; a thread's events
///   appear in the order it logged them; `seq` numbers every record from 0
///   across files and restarts.
/// * **Tamper-evident.** Each record carries the SHA-256 of the previous one
///   (see [`record`](super::record) for what that proves);
///   [`verify`](super::verify()) checks a directory.
/// * **Waiting is opt-in.** `log` returns once the event is in the ring;
///   [`wait`](Self::wait) for [`Guarantee::Os`] or [`Guarantee::Disk`]
///   shares one write and one fsync among every caller that waits at once.
/// * **Errors are returned.** A write error reaches waiting callers and
///   `flush`; `log` refuses new events until the writer recovers; `close`
///   reports records it could not write.
///
/// Events are serialised by the calling thread (serde_json) into a reused
/// thread-local buffer before a slot is claimed, so a panicking `Serialize`
/// never touches the ring. Serialising on the writer instead would make
/// `log` cheaper but make the single writer serialise every event, capping
/// throughput at one core's serde speed, and would need a heap allocation
/// per event to move it there.
///
/// What the records do not promise:
///
/// * A record's `ts` is when the writer took its batch, not when `log` was
///   called: it can trail the call by the batch's latency and is the same for
///   every record of a batch (it never runs backwards within a stream unless
///   the clock does).
/// * A gap record sits where the writer noticed the drops (the next batch
///   after them), not at the exact position of each dropped event; its `N` is
///   exact. An event dropped while [`close`](Self::close) runs may be
///   counted in [`AuditMetrics::dropped`] without a gap record.
///
/// ```
/// use latchfree::audit::{AuditLog, Guarantee};
///
/// let dir = tempfile::tempdir()?;
/// let log = AuditLog::open(dir.path())?;
/// log.log(&serde_json::json!({"user": "alice", "action": "login"}))?;
/// let ticket = log.log(&serde_json::json!({"user": "alice", "action": "pay", "amount": 10}))?;
/// log.wait(ticket, Guarantee::Os)?; // in the file (the OS's cache) now
/// let head = log.close()?.expect("two records");
/// assert_eq!(head.seq, 1);
/// assert_eq!(latchfree::audit::verify(dir.path())?.records, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.inner.dir)
            .field("prefix", &self.inner.shared.prefix)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// A builder for the stream `audit` in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> AuditBuilder {
        AuditBuilder {
            dir: dir.as_ref().to_path_buf(),
            prefix: "audit".into(),
            durability: Durability::None,
            on_full: OnFull::Block,
            capacity: 4096,
            slot_bytes: 512,
            max_event_bytes: 1 << 20,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            clock: Arc::new(SystemClock),
            stats: None,
            syncer: Arc::new(OsSyncer),
            retention: Limits::default(),
        }
    }

    /// A builder for a telemetry stream in `dir`: prefix `telemetry`, and
    /// [`OnFull::Drop`], so a burst of telemetry never holds up a request
    /// (drops are counted and marked). Same API, same files, same verifier.
    pub fn telemetry(dir: impl AsRef<Path>) -> AuditBuilder {
        Self::builder(dir).prefix("telemetry").on_full(OnFull::Drop)
    }

    /// Opens the stream `audit` in `dir` with the defaults.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, AuditError> {
        Self::builder(dir).open()
    }

    /// Logs one event: serialises it (serde_json, compact) and queues it.
    /// Returns once it is in the ring ([`Guarantee::Async`]).
    pub fn log<E: Serialize + ?Sized>(&self, event: &E) -> Result<Ticket, AuditError> {
        self.log_event(event, true)
    }

    /// [`log`](Self::log); with `wake` false the writer thread is not woken
    /// (the caller waits for a guarantee and takes the writer's turn itself,
    /// waking the thread only if it cannot).
    fn log_event<E: Serialize + ?Sized>(
        &self,
        event: &E,
        wake: bool,
    ) -> Result<Ticket, AuditError> {
        self.check_writer()?;
        let max = self.inner.max_event_bytes;
        with_buffer(|buffer| {
            let mut limited = Limited { buffer, max };
            match serde_json::to_writer(&mut limited, event) {
                // serde_json escapes line breaks in strings: a raw one can
                // only come from a `RawValue` inside the event, and a record
                // must be one line. Re-serialised compactly, as `log_json`
                // does.
                Ok(()) if memchr::memchr2(b'\n', b'\r', limited.buffer).is_some() => {
                    let value: serde_json::Value = serde_json::from_slice(limited.buffer)
                        .map_err(|e| AuditError::Serialize(Arc::new(e)))?;
                    self.log_event(&value, wake)
                }
                Ok(()) => self.push(limited.buffer, wake),
                Err(e) if e.is_io() => Err(AuditError::TooLarge { max }),
                Err(e) => Err(AuditError::Serialize(Arc::new(e))),
            }
        })
    }

    /// Logs an event that is already JSON. Whitespace outside strings is
    /// kept, except that an event containing a line break is re-serialised
    /// compactly (a record must be one line).
    pub fn log_json(&self, event: &RawValue) -> Result<Ticket, AuditError> {
        self.check_writer()?;
        let json = event.get();
        if json.contains(['\n', '\r']) {
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|e| AuditError::Serialize(Arc::new(e)))?;
            return self.log(&value);
        }
        if json.len() > self.inner.max_event_bytes {
            return Err(AuditError::TooLarge {
                max: self.inner.max_event_bytes,
            });
        }
        self.push(json.as_bytes(), true)
    }

    /// The longest event accepted ([`AuditBuilder::max_event_bytes`]).
    #[cfg(feature = "tracing")]
    pub(super) fn max_event_bytes(&self) -> usize {
        self.inner.max_event_bytes
    }

    /// Logs one line that is already a JSON value with no line break (the
    /// [`TracingWriter`](super::TracingWriter) checked it), as
    /// [`log_json`](Self::log_json) does without the checks.
    #[cfg(feature = "tracing")]
    pub(super) fn log_checked_line(&self, json: &[u8]) -> Result<Ticket, AuditError> {
        self.check_writer()?;
        self.push(json, true)
    }

    /// Logs one event and waits until it has the `guarantee`.
    pub fn log_wait<E: Serialize + ?Sized>(
        &self,
        event: &E,
        guarantee: Guarantee,
    ) -> Result<Ticket, AuditError> {
        if guarantee == Guarantee::Async {
            return self.log(event);
        }
        let _caller = Counted::new(&self.inner.callers);
        let ticket = self.log_event(event, false)?;
        self.wait_counted(ticket.0 + 1, guarantee)?;
        Ok(ticket)
    }

    /// Waits until the event of `ticket` (and every event queued before it)
    /// has the `guarantee`. Callers waiting at once share one write and one
    /// fsync.
    pub fn wait(&self, ticket: Ticket, guarantee: Guarantee) -> Result<(), AuditError> {
        self.wait_below(ticket.0 + 1, guarantee)
    }

    /// Waits until every event logged before the call is written, and
    /// fsynced unless the durability is [`Durability::None`]; returns the
    /// head reached (export it to anchor the chain; `None` if the stream is
    /// empty).
    pub fn flush(&self) -> Result<Option<Head>, AuditError> {
        let (target, guarantee) = self.flush_target();
        self.wait_below(target, guarantee)?;
        Ok(self.head_at(guarantee))
    }

    /// What [`flush`](Self::flush) waits for: every position claimed now,
    /// with the durability's guarantee.
    pub(super) fn flush_target(&self) -> (u64, Guarantee) {
        let guarantee = match self.inner.shared.durability {
            Durability::None => Guarantee::Os,
            _ => Guarantee::Disk,
        };
        (self.inner.producer.claimed(), guarantee)
    }

    /// The head reached with `guarantee` (after a wait for it).
    pub(super) fn head_at(&self, guarantee: Guarantee) -> Option<Head> {
        let heads = self.inner.shared.progress.lock().heads;
        match guarantee {
            Guarantee::Disk => heads.synced,
            _ => heads.written,
        }
    }

    /// Closes the stream for every handle: later `log` calls fail with
    /// [`AuditError::Closed`]; everything logged before is written (and
    /// fsynced unless the durability is [`Durability::None`]); the writer
    /// thread is joined. Returns the final head. Calling it again returns
    /// the same result.
    pub fn close(&self) -> Result<Option<Head>, AuditError> {
        self.inner.close()
    }

    /// The stream's counters now.
    pub fn metrics(&self) -> AuditMetrics {
        let c = &self.inner.shared.counts;
        AuditMetrics {
            enqueued: self.inner.producer.claimed(),
            written: c.written.get(),
            dropped: c.dropped.get(),
            gap_records: c.gap_records.get(),
            batches: c.batches.get(),
            bytes: c.bytes.get(),
            fsyncs: c.fsyncs.get(),
            full_waits: c.full_waits.get(),
            write_errors: c.write_errors.get(),
            files: c.files.get(),
            files_removed: c.files_removed.get(),
        }
    }

    /// The registry holding this stream's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Bytes of a torn last line truncated when the stream was opened.
    pub fn truncated_on_open(&self) -> u64 {
        self.inner.truncated
    }

    fn check_writer(&self) -> Result<(), AuditError> {
        // Relaxed: a hint; a stale view only lets one more event queue.
        if self.inner.shared.failed.load(Ordering::Relaxed)
            && !self.inner.producer.is_closed()
            && let Some(error) = &self.inner.shared.progress.lock().error
        {
            return Err(AuditError::Write(error.clone()));
        }
        Ok(())
    }

    /// Queues one serialised event behind its digest: the SHA-256 of the
    /// event is computed here, on the caller's thread and in parallel with
    /// every other caller, so the writer only links digests (see
    /// [`record`](super::record)).
    fn push(&self, json: &[u8], wake: bool) -> Result<Ticket, AuditError> {
        let digest = super::record::event_digest(json);
        match self.inner.producer.push_pos_after(&digest, json, wake) {
            Ok(pos) => Ok(Ticket(pos)),
            Err(PushError::Closed) => Err(AuditError::Closed),
            Err(PushError::Full) => Err(AuditError::Full),
            Err(PushError::TooLarge { max, .. }) => Err(AuditError::TooLarge { max }),
        }
    }

    /// Waits until every position below `target` has the `guarantee`.
    fn wait_below(&self, target: u64, guarantee: Guarantee) -> Result<(), AuditError> {
        let _caller = Counted::new(&self.inner.callers);
        self.wait_counted(target, guarantee)
    }

    /// [`wait_below`](Self::wait_below) for a caller counted in `callers`.
    fn wait_counted(&self, target: u64, guarantee: Guarantee) -> Result<(), AuditError> {
        let Some((level, poll)) = self.want(target, guarantee) else {
            return Ok(());
        };
        // Take the writer's turn while it is idle, rather than wake it. A
        // caller that finds a turn in flight (its record logged too late for
        // that batch) polls, spinning and then yielding its core (so that
        // other callers can log meanwhile and share the next write), and
        // takes the next turn itself as soon as the lock is free: whoever
        // gets it writes every record published by then. Callers do not
        // queue on the lock: releasing them one by one would cost a wake-up
        // each, where a raised level releases them all at once.
        // With more callers logging or waiting than cores, a spin only keeps
        // another caller (perhaps the one whose turn is in flight, or one
        // about to log into the next turn) off a core: such a poll yields
        // from its first step.
        // Relaxed: a hint; a wrong guess costs a spin or a yield.
        let mut polling = if self.inner.callers.load(Ordering::Relaxed) > self.inner.cores {
            crate::sync::Poll::yielding(poll)
        } else {
            crate::sync::Poll::new(poll)
        };
        while level.get() < target {
            if self.inner.desk.assist() {
                continue;
            }
            // Relaxed: a hint; the wait below reads the error under its lock.
            if self.inner.shared.failed.load(Ordering::Relaxed) || !polling.next() {
                break;
            }
        }
        if level.get() >= target {
            // Written by this caller's turn or another's: waking the writer
            // thread would cost a futex call here and send it after the
            // desk lock the next caller takes.
            return Ok(());
        }
        // The writer thread takes it from here (a record logged by
        // `log_wait` did not wake it).
        self.inner.producer.wake_consumer();
        let waited = self
            .inner
            .shared
            .progress
            .wait(level, target, Duration::ZERO);
        waited.map_err(|e| self.stalled(e))
    }

    /// Asks the writer for `guarantee` on every position below `target`;
    /// the level to wait on and how long to poll it first, or `None` if
    /// there is nothing to wait for.
    pub(super) fn want(&self, target: u64, guarantee: Guarantee) -> Option<(&Level, Duration)> {
        let shared = &*self.inner.shared;
        match guarantee {
            Guarantee::Async => None,
            Guarantee::Os => Some((&shared.written, progress::POLL)),
            Guarantee::Disk => {
                if shared.synced.get() >= target {
                    return None;
                }
                // Relaxed: the writer re-reads it after the wake-up below,
                // whose fences order this store before its check.
                shared.sync_wanted.fetch_max(target, Ordering::Relaxed);
                self.inner.producer.wake_consumer();
                // An fsync takes hundreds of microseconds: sleep at once.
                Some((&shared.synced, Duration::ZERO))
            }
        }
    }

    /// The error for a wait the writer could not satisfy.
    pub(super) fn stalled(&self, stalled: Stalled) -> AuditError {
        match stalled {
            Stalled::Failed(error) => AuditError::Write(error),
            Stalled::Stopped => match self.inner.closed.get() {
                Some(Err(e)) => e.clone(),
                _ => AuditError::Closed,
            },
        }
    }

    /// The levels and the sleepers waiting on them.
    #[cfg_attr(not(feature = "async"), allow(dead_code))] // The async waits.
    pub(super) fn progress(&self) -> &Progress<Heads> {
        &self.inner.shared.progress
    }
}

impl Inner {
    fn close(&self) -> Result<Option<Head>, AuditError> {
        self.producer.close();
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(thread) = writer.take() {
            // The writer may be backing off after a failed write.
            thread.thread().unpark();
            let result = match thread.join() {
                Ok(Ok(summary)) => Ok(summary.head),
                Ok(Err(unwritten)) => Err(AuditError::Unwritten {
                    records: unwritten.records,
                    source: unwritten.error,
                }),
                Err(_) => Err(AuditError::WriterPanicked),
            };
            let _ = self.closed.set(result);
        }
        drop(writer);
        self.closed
            .get()
            .cloned()
            .unwrap_or(Err(AuditError::Closed))
    }
}

impl Drop for Inner {
    /// The last handle is gone: close, drain, join. An error can only be
    /// printed here; call [`AuditLog::close`] to get it.
    fn drop(&mut self) {
        if self.closed.get().is_some() {
            return;
        }
        if let Err(e) = self.close() {
            eprintln!(
                "latchfree: closing audit stream {}: {e}",
                self.shared.prefix
            );
        }
    }
}
/// A `Vec` writer that refuses to grow past `max` bytes.
struct Limited<'a> {
    buffer: &'a mut Vec<u8>,
    max: usize,
}

impl io::Write for Limited<'_> {
    // serde_json writes an event in many small pieces: inlined, each is a
    // bound check and a copy, as with a bare `Vec`.
    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data).map(|()| data.len())
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buffer.len() + data.len() > self.max {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        self.buffer.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// Each thread's serialisation buffer, reused across events.
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Runs `f` with this thread's cleared buffer (or a fresh one when it is in
/// use: a `Serialize` impl that logs, or a thread-local destructor).
pub(crate) fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut f = Some(f);
    let result = BUFFER.try_with(|cell| {
        let mut buffer = cell.try_borrow_mut().ok()?;
        buffer.clear();
        let result = (f.take()?)(&mut buffer);
        if buffer.capacity() > 64 << 10 {
            *buffer = Vec::with_capacity(512);
        }
        Some(result)
    });
    match (result, f) {
        (Ok(Some(result)), _) => result,
        (_, Some(f)) => f(&mut Vec::new()),
        (_, None) => unreachable!("`f` ran only if it returned"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_opens_once_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = AuditLog::open(dir.path()).unwrap();
        assert!(matches!(
            AuditLog::open(dir.path()),
            Err(AuditError::InUse { .. })
        ));
        // Another stream in the same directory is independent.
        let telemetry = AuditLog::telemetry(dir.path()).open().unwrap();
        first.close().unwrap();
        let again = AuditLog::open(dir.path()).unwrap();
        again.close().unwrap();
        telemetry.close().unwrap();
    }

    #[test]
    fn waiting_for_disk_fsyncs_even_without_a_durability_mode() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let ticket = log.log(&1).unwrap();
        log.wait(ticket, Guarantee::Os).unwrap();
        assert_eq!(log.metrics().fsyncs, 0);
        log.log_wait(&2, Guarantee::Disk).unwrap();
        let m = log.metrics();
        assert!(m.fsyncs >= 1, "{m:?}");
        assert_eq!((m.enqueued, m.written), (2, 2));
        // flush without durability: written, not synced, returns the head.
        log.log(&3).unwrap();
        assert_eq!(log.flush().unwrap().map(|h| h.seq), Some(2));
        assert_eq!(log.close().unwrap().map(|h| h.seq), Some(2));
        assert_eq!(log.close().unwrap().map(|h| h.seq), Some(2));
        assert!(matches!(log.log(&4), Err(AuditError::Closed)));
    }

    #[test]
    fn batch_durability_fsyncs_every_batch_and_flush_reports_the_synced_head() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::new();
        let log = AuditLog::builder(dir.path())
            .durability(Durability::Batch)
            .stats(&stats)
            .open()
            .unwrap();
        for i in 0..10 {
            log.log(&i).unwrap();
        }
        let head = log.flush().unwrap().unwrap();
        assert_eq!(head.seq, 9);
        let m = log.metrics();
        assert!(m.fsyncs >= 1 && m.fsyncs <= m.batches, "{m:?}");
        let snap = stats.snapshot();
        assert_eq!(snap.counter("audit_records_written_total"), Some(10));
        assert_eq!(snap.counter("audit_fsyncs_total"), Some(m.fsyncs));
        drop(log);
        // Reopened, the chain continues from the head.
        let log = AuditLog::open(dir.path()).unwrap();
        log.log(&10).unwrap();
        let end = log.close().unwrap().unwrap();
        assert_eq!(end.seq, 10);
        let report = crate::audit::verify(dir.path()).unwrap();
        assert_eq!((report.records, report.head), (11, Some(end)));
    }
}
