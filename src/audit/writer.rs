//! The writer thread: the only code that touches the stream's files.
//!
//! Each turn of its loop takes one timestamp, marks any drops with a gap
//! record, drains what the ring holds (up to [`BATCH_BYTES`] of encoded
//! lines; each record arrives behind its event's digest, computed by the
//! thread that logged it, so the writer hashes only the 2-block link, see
//! [`record`]), gives the whole batch to the OS in one `write` (more only if the
//! OS takes part of it), then fsyncs if the durability mode or a waiting
//! caller asks, and raises the levels that callers wait on. When the ring is
//! empty it sleeps in [`Consumer::wait_or`] until a record arrives, a caller
//! wants an fsync, the interval's fsync is due, or the ring is closed.
//!
//! A caller waiting for a guarantee takes a turn itself when the thread is
//! idle (see [`Desk::assist`]): the thread and the callers share the
//! writer's state behind a lock that only they take, never `log`.
//!
//! A write error does not lose the batch: the unwritten bytes stay in the
//! buffer, the error is published (callers waiting get it, new `log` calls
//! fail fast), and the writer retries them, backing off to once a second,
//! before it takes anything more from the ring. A retry that succeeds
//! appends exactly the missing bytes, so the line that was cut is completed
//! in place.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::durable::Syncer;
use super::progress::{Level, Progress};
use super::record::Head;
use super::record::{self, Body, ChainHash, Timestamp};
use super::recover::{self, Current};
use super::retention::Retainer;
use super::ring::Consumer;
use crate::clock::Clock;
use crate::stats::{Counter, Stats, StatsError};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A batch stops growing once its lines reach this many bytes.
pub(crate) const BATCH_BYTES: usize = 1 << 20;
/// The longest sleep while the ring is empty (the `Interval` fsync and
/// close are woken directly; this bounds everything else).
const IDLE: Duration = Duration::from_millis(100);
/// How long the idle writer polls the ring (six growing spins, then
/// yields) before it sleeps.
const IDLE_POLL: Duration = Duration::from_micros(50);

/// When the writer fsyncs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Not on its own, except once per file when the writer moves to the
    /// next one: records reach the OS page cache (they survive a crash of
    /// the process, not of the machine). Callers that need more wait for
    /// [`Guarantee::Disk`](super::Guarantee::Disk).
    #[default]
    None,
    /// After every batch: group commit. Every record is on disk within one
    /// write and one fsync of reaching the writer.
    Batch,
    /// At most this long after a batch is written.
    Interval(Duration),
}

/// Counters of one stream, registered in a [`Stats`].
pub(crate) struct Counts {
    pub(crate) written: Counter,
    pub(crate) dropped: Counter,
    pub(crate) gap_records: Counter,
    pub(crate) batches: Counter,
    pub(crate) bytes: Counter,
    pub(crate) fsyncs: Counter,
    pub(crate) full_waits: Counter,
    pub(crate) write_errors: Counter,
    pub(crate) files: Counter,
    pub(crate) files_removed: Counter,
}

impl Counts {
    pub(crate) fn register(stats: &Stats, prefix: &str) -> Result<Self, StatsError> {
        let counter = |what: &str| stats.counter(&format!("{prefix}_{what}_total"));
        Ok(Self {
            written: counter("records_written")?,
            dropped: counter("events_dropped")?,
            gap_records: counter("gap_records")?,
            batches: counter("batches")?,
            bytes: counter("bytes_written")?,
            fsyncs: counter("fsyncs")?,
            full_waits: counter("full_waits")?,
            write_errors: counter("write_errors")?,
            files: counter("files_created")?,
            files_removed: counter("files_removed")?,
        })
    }
}

/// The chain heads the writer reports with its levels.
#[derive(Clone, Copy, Default)]
pub(crate) struct Heads {
    pub(crate) written: Option<Head>,
    pub(crate) synced: Option<Head>,
}

/// What the handles and the writer share.
pub(crate) struct StreamState {
    pub(crate) prefix: String,
    pub(crate) durability: Durability,
    pub(crate) max_file_bytes: u64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) counts: Counts,
    /// Ring positions written, and fsynced.
    pub(crate) written: Level,
    pub(crate) synced: Level,
    /// The highest position a caller waits to see fsynced.
    pub(crate) sync_wanted: AtomicU64,
    /// The writer's last write failed (the error is in `progress`).
    pub(crate) failed: AtomicBool,
    pub(crate) progress: Progress<Heads>,
}

/// What a writer that stopped cleanly leaves.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    pub(crate) head: Option<Head>,
}

/// Why the writer stopped with records it could not write.
#[derive(Clone, Debug)]
pub(crate) struct Unwritten {
    pub(crate) records: u64,
    pub(crate) error: Arc<io::Error>,
}

pub(crate) struct Writer {
    consumer: Consumer,
    shared: Arc<StreamState>,
    dir: PathBuf,
    current: Option<Current>,
    head: Option<Head>,
    /// Encoded lines not yet accepted by the OS, from `pending_from`.
    pending: Vec<u8>,
    pending_from: usize,
    /// Where the batch's gap marker ends in `pending` (0 if it has none).
    gap_end: usize,
    /// Ring positions encoded into `pending` (all of them once it is empty).
    encoded: u64,
    /// Ring positions handed to the OS.
    written: u64,
    /// Ring positions fsynced.
    synced: u64,
    last_sync: Instant,
    /// The current batch's timestamp, reformatted in place for each batch.
    ts: Timestamp,
    /// Counters already reported to `stats` (`full_waits` is cumulative in
    /// the ring).
    full_waits_seen: u64,
    /// The stream's lock file, locked while the writer runs.
    lock: Option<File>,
    /// Set by the thread when it returns: no turn may run after it.
    stopped: bool,
    /// Makes files and names durable (the OS, or a test's recorder).
    syncer: Arc<dyn Syncer>,
    /// Whether the directory was synced since the current file was created
    /// (or since the stream was opened: the previous process may have died
    /// before it synced the name).
    dir_synced: bool,
    /// Removes the oldest closed files beyond the retention limits (`None`
    /// without limits).
    retainer: Option<Retainer>,
}

/// The writer's state, shared by its thread and by callers waiting for a
/// guarantee (see [`Desk::assist`]). Its lock is never taken by `log`.
pub(crate) struct Desk {
    writer: Mutex<Writer>,
}

impl Desk {
    pub(crate) fn new(writer: Writer) -> Arc<Self> {
        Arc::new(Self {
            writer: Mutex::new(writer),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A turn that panicked left the state as consistent as a failed
        // write does: the bytes not handed to the OS are still pending.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A waiting caller's turn: if the writer is idle (its lock is free),
    /// take one turn here rather than wake the thread and wait for it.
    /// Returns whether the turn took records and succeeded (another may
    /// help); `false` when the lock was taken, the ring had nothing ready
    /// (a producer between claim and publish holds the order up: sleep
    /// instead of spinning here), or the turn failed (the error is published
    /// to every waiter; the thread retries).
    ///
    /// On a machine with few cores the hand-off costs more than the turn:
    /// waking a sleeping writer, and then the caller, takes two wake-ups
    /// (tens of microseconds on a virtual machine); a write takes a few. A
    /// caller that finds the lock taken leaves the work to whoever holds it,
    /// so callers waiting at once still share one write and one fsync.
    pub(crate) fn assist(&self) -> bool {
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        if writer.stopped {
            return false;
        }
        match writer.turn() {
            Ok(took) => {
                writer.succeeded();
                took
            }
            Err(error) => {
                writer.fail(error);
                false
            }
        }
    }

    /// The writer thread: runs until the ring is closed and drained, then
    /// returns the head. After a close, a write that still fails gives up,
    /// reporting how many records it could not write.
    pub(crate) fn run(&self) -> Result<Summary, Unwritten> {
        let mut retry = Duration::from_millis(10);
        loop {
            let mut writer = self.lock();
            match writer.turn() {
                Ok(took) => {
                    retry = Duration::from_millis(10);
                    writer.succeeded();
                    if took {
                        continue;
                    }
                    if writer.consumer.is_drained() {
                        writer.stop();
                        return Ok(Summary { head: writer.head });
                    }
                    let timeout = match writer.shared.durability {
                        Durability::Interval(every) if writer.synced < writer.written => {
                            every.saturating_sub(writer.last_sync.elapsed()).min(IDLE)
                        }
                        _ => IDLE,
                    };
                    let shared = writer.shared.clone();
                    let synced = writer.synced;
                    let sleeper = writer.consumer.sleeper();
                    // Sleep without the lock: a waiting caller may take the
                    // next turn (then the sleeper's position is stale, and
                    // the next record's wake-up or the timeout ends the sleep).
                    drop(writer);
                    let wanted = || shared.sync_wanted.load(relaxed()) > synced;
                    // Poll briefly before sleeping, so that a producer that
                    // logs soon finds the writer awake and does not pay for
                    // waking it (a futex call) on its own time.
                    let mut poll = crate::sync::Poll::new(IDLE_POLL);
                    while !sleeper.ready() && !wanted() && poll.next() {}
                    sleeper.wait_or(timeout, wanted);
                }
                Err(error) => {
                    if writer.consumer.closed_at().is_some() {
                        let unwritten = writer.give_up(error);
                        writer.stop();
                        return Err(unwritten);
                    }
                    writer.fail(error);
                    drop(writer);
                    std::thread::park_timeout(retry);
                    retry = (retry * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

impl Writer {
    /// A writer that appends to `current` (the newest file, open), chaining
    /// from `head`, and holds the stream's `lock` file until it stops.
    pub(crate) fn new(
        consumer: Consumer,
        shared: Arc<StreamState>,
        dir: PathBuf,
        current: Current,
        head: Option<Head>,
        lock: File,
        syncer: Arc<dyn Syncer>,
    ) -> Self {
        Self {
            consumer,
            shared,
            dir,
            current: Some(current),
            head,
            pending: Vec::with_capacity(BATCH_BYTES + 4096),
            pending_from: 0,
            gap_end: 0,
            encoded: 0,
            written: 0,
            synced: 0,
            last_sync: Instant::now(),
            ts: Timestamp::new(std::time::SystemTime::UNIX_EPOCH),
            full_waits_seen: 0,
            lock: Some(lock),
            stopped: false,
            syncer,
            dir_synced: false,
            retainer: None,
        }
    }

    /// The writer, removing old files as `retainer` says.
    pub(crate) fn with_retainer(mut self, retainer: Option<Retainer>) -> Self {
        self.retainer = retainer;
        self
    }

    /// Ends the stream for this process: no turn runs after it; the file,
    /// the buffer and the lock file (so the stream can be opened again)
    /// are released.
    fn stop(&mut self) {
        self.stopped = true;
        self.current = None;
        self.pending = Vec::new();
        self.lock = None;
    }

    /// Clears a published write error after a turn that succeeded.
    fn succeeded(&self) {
        if self.shared.failed.load(relaxed()) {
            self.shared.failed.store(false, relaxed());
            self.shared.progress.update(|s| s.error = None);
        }
    }

    /// One turn: finish writing what a failed turn left, take a batch,
    /// write and fsync it. Returns whether the ring had anything.
    fn turn(&mut self) -> io::Result<bool> {
        if self.unwritten() > 0 {
            self.write_pending()?;
        }
        let now = self.shared.clock.now();
        self.ts.set(now);
        self.rotate_if_due(recover::day_of(&self.ts))?;
        self.retain(now);
        let took = self.take_batch();
        self.finish_batch()?;
        if !took && self.consumer.is_drained() {
            let final_sync = self.shared.durability != Durability::None;
            if final_sync && self.synced < self.written {
                self.sync()?;
            }
        }
        Ok(took)
    }

    fn unwritten(&self) -> u64 {
        self.encoded - self.written
    }

    /// Encodes what the ring holds (and a gap marker for drops) into
    /// `pending`; returns whether there was anything.
    fn take_batch(&mut self) -> bool {
        let mut took = false;
        let dropped = self.consumer.take_dropped();
        self.gap_end = 0;
        if dropped > 0 {
            self.append_gap(dropped);
            self.gap_end = self.pending.len();
            self.shared.counts.dropped.add(dropped);
            self.shared.counts.gap_records.inc();
            took = true;
        }
        let Self {
            consumer,
            pending,
            head,
            ts,
            ..
        } = self;
        let mut batch = 0;
        while pending.len() < BATCH_BYTES {
            let n = consumer.drain(256, |record| {
                // The producer put the event's digest first (see
                // `AuditLog::push`); a record without one (none is pushed)
                // would be hashed here.
                let (digest, event) = match record.split_first_chunk::<{ record::DIGEST_LEN }>() {
                    Some((digest, event)) => (*digest, event),
                    None => (record::event_digest(record), record),
                };
                *head = Some(append(pending, head, ts, Body::Event(event), &digest));
            });
            batch += n;
            if n == 0 {
                break;
            }
        }
        self.encoded += batch as u64;
        took || batch > 0
    }

    fn append_gap(&mut self, dropped: u64) {
        let body = Body::Gap(dropped);
        let digest = record::body_digest(body);
        self.head = Some(append(
            &mut self.pending,
            &self.head,
            &self.ts,
            body,
            &digest,
        ));
    }

    /// Writes `pending`, fsyncs if due, and raises the levels.
    fn finish_batch(&mut self) -> io::Result<()> {
        let counts = &self.shared.counts;
        let waits = self.consumer.full_waits();
        counts.full_waits.add(waits - self.full_waits_seen);
        self.full_waits_seen = waits;
        if !self.pending.is_empty() {
            self.write_pending()?;
        }
        let sync_due = match self.shared.durability {
            Durability::None => false,
            Durability::Batch => true,
            Durability::Interval(every) => self.last_sync.elapsed() >= every,
        };
        if self.synced < self.written
            && (sync_due || self.shared.sync_wanted.load(relaxed()) > self.synced)
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Hands `pending` to the OS; on error keeps what is left.
    fn write_pending(&mut self) -> io::Result<()> {
        let Some(current) = self.current.as_mut() else {
            return Err(io::Error::other("no file is open"));
        };
        while self.pending_from < self.pending.len() {
            match current.file.write(&self.pending[self.pending_from..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending_from += n;
                    current.len += n as u64;
                    self.shared.counts.bytes.add(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.shared.counts.write_errors.inc();
                    return Err(e);
                }
            }
        }
        self.pending.clear();
        self.pending_from = 0;
        let records = self.encoded - self.written;
        self.written = self.encoded;
        let counts = &self.shared.counts;
        counts.written.add(records);
        counts.batches.inc();
        let head = self.head;
        self.shared.progress.set(|s| s.heads.written = head);
        self.shared
            .progress
            .raise(&self.shared.written, self.written);
        Ok(())
    }

    /// Makes everything written durable: the current file, then its name
    /// if the directory was not synced since the file was created. Only
    /// then is the synced level raised and a waiter released.
    fn sync(&mut self) -> io::Result<()> {
        let Some(current) = self.current.as_ref() else {
            return Ok(());
        };
        let path = self.file_path(current.day, current.n);
        let mut result = self.syncer.sync_file(&current.file, &path);
        if result.is_ok() && !self.dir_synced {
            result = self.syncer.sync_dir(&self.dir);
            self.dir_synced = result.is_ok();
        }
        if let Err(e) = result {
            self.shared.counts.write_errors.inc();
            return Err(e);
        }
        self.shared.counts.fsyncs.inc();
        self.last_sync = Instant::now();
        self.synced = self.written;
        let head = self.head;
        self.shared.progress.set(|s| s.heads.synced = head);
        self.shared.progress.raise(&self.shared.synced, self.synced);
        Ok(())
    }

    /// Removes the oldest closed files beyond the retention limits, if a
    /// check is due. A failure is counted and retried later; it never
    /// holds up a write.
    fn retain(&mut self, now: std::time::SystemTime) {
        let Some(retainer) = self.retainer.as_mut() else {
            return;
        };
        if !retainer.is_due(now) {
            return;
        }
        let len = self.current.as_ref().map_or(0, |c| c.len);
        let removed = retainer.retain(now, len, &*self.syncer);
        let counts = &self.shared.counts;
        counts.files_removed.add(removed.files);
        if removed.result.is_err() {
            counts.write_errors.inc();
        }
    }

    fn file_path(&self, day: u32, n: u32) -> PathBuf {
        self.dir
            .join(recover::file_name(&self.shared.prefix, day, n))
    }

    /// Starts a new file when the day changed or the file is full. Only
    /// between batches, with nothing pending, so a file holds whole lines.
    fn rotate_if_due(&mut self, day: u32) -> io::Result<()> {
        let (day, n) = match &self.current {
            Some(c) if day <= c.day && c.len < self.shared.max_file_bytes => return Ok(()),
            Some(c) if day <= c.day => (c.day, c.n + 1),
            _ => (day, 0),
        };
        if self.unwritten() > 0 {
            return Ok(());
        }
        // Records of the old file that are not synced yet: sync them now,
        // under every durability. A caller may wait for `Guarantee::Disk`
        // on one of them after the switch, when only the new file would be
        // synced. One fsync per file, not per record.
        if self.synced < self.written {
            self.sync()?;
        }
        let path = self.file_path(day, n);
        let file = create(&path)?;
        // The new name is made durable by the next sync, before the first
        // record of the file can be reported synced.
        self.dir_synced = false;
        let old = self.current.replace(Current {
            file,
            day,
            n,
            len: 0,
        });
        self.shared.counts.files.inc();
        if let (Some(old), Some(retainer)) = (old, self.retainer.as_mut()) {
            let old_path = self
                .dir
                .join(recover::file_name(&self.shared.prefix, old.day, old.n));
            // The file was just synced; reading its end fails only with
            // the disk. It stays, counted; the next open picks it up.
            if retainer.closed(old_path).is_err() {
                self.shared.counts.write_errors.inc();
            }
        }
        Ok(())
    }

    fn fail(&self, error: io::Error) {
        let error = Arc::new(error);
        self.shared.failed.store(true, relaxed());
        self.shared
            .progress
            .update(|s| s.error = Some(error.clone()));
    }

    /// Stops after a close with a write that still fails: counts the
    /// events that are not in the file as whole lines (a line cut short is
    /// truncated on the next open), including those still in the ring.
    fn give_up(&mut self, error: io::Error) -> Unwritten {
        let unwritten = &self.pending[self.pending_from..];
        let mut records = unwritten.iter().filter(|&&b| b == b'\n').count() as u64;
        if self.pending_from < self.gap_end {
            records -= 1; // The gap marker is not an event.
        }
        // Drain the rest, so producers waiting for room publish and are
        // counted rather than refused.
        while !self.consumer.is_drained() {
            if self.consumer.drain(usize::MAX, |_| records += 1) == 0 {
                self.consumer.wait(Duration::from_millis(1));
            }
        }
        Unwritten {
            records,
            error: Arc::new(error),
        }
    }
}

/// Creates a new stream file (it must not exist: names are never reused).
pub(crate) fn create(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().append(true).create_new(true).open(path)
}

fn append(
    out: &mut Vec<u8>,
    head: &Option<Head>,
    ts: &Timestamp,
    body: Body<'_>,
    digest: &[u8; 32],
) -> Head {
    let (seq, prev) = match head {
        Some(h) => (h.seq + 1, h.hash),
        None => (0, ChainHash::GENESIS),
    };
    let hash = record::encode_digested(out, seq, ts, body, digest, &prev);
    Head { seq, hash }
}

fn relaxed() -> Ordering {
    // The flags and counters the writer shares outside `Progress` are hints
    // read without ordering anything else.
    Ordering::Relaxed
}
