//! The audit log as a `tracing` writer: each event that
//! `tracing_subscriber::fmt` formats becomes one chained record.
//!
//! # How `fmt` writes, and what a record is
//!
//! For every event, `fmt`'s layer formats the whole line (its own newline
//! included) into a thread-local `String`, asks its [`MakeWriter`] for a
//! writer (`make_writer_for(metadata)`), hands it the line in one
//! `write_all`, and drops the writer. A [`TracingWriter`] is that
//! `MakeWriter`; the writer it makes ([`EventWriter`]) is a borrowed handle
//! with an empty buffer, so making one costs nothing.
//!
//! The writer frames records by line: every `\n`-terminated line it is given
//! is committed as one record the moment its newline arrives, and bytes
//! after the last newline wait in the writer's buffer for the rest of their
//! line, or for the writer's drop, which commits them as a record too. With
//! `fmt`'s single `write_all` the line is committed straight from `fmt`'s
//! buffer: no copy, no allocation. A record is never torn: a line is
//! committed whole or not at all.
//!
//! What a line becomes:
//!
//! * A line that is one JSON value (`fmt().json()` writes one object per
//!   event) is the event, byte for byte: the record's `event` is the JSON
//!   `fmt` produced. The line is parsed once (without building anything) to
//!   check it: a record's event must be JSON for the chain to verify.
//! * Any other line (plain `fmt()`, `fmt().compact()`, `pretty()`'s lines,
//!   an `fmt` error message) is stored as a JSON string event: the text,
//!   escapes and all, with invalid UTF-8 replaced by U+FFFD. `pretty()`
//!   spreads one event over several lines, so each of its lines is a
//!   record: use `json()` or the single-line formats for one record per
//!   event.
//! * Leading and trailing whitespace (the `\r` of a `\r\n`) is trimmed; an
//!   empty line is no record.
//!
//! # Full rings, huge events, a closed log
//!
//! The writer follows the log's [`OnFull`](super::OnFull):
//!
//! * [`OnFull::Block`](super::OnFull::Block) (the default): lossless. A full
//!   ring makes the thread that emits the event wait for room.
//! * [`OnFull::Drop`](super::OnFull::Drop): the event is dropped, counted
//!   ([`TracingMetrics::dropped`], and the log's
//!   [`AuditMetrics::dropped`](super::AuditMetrics::dropped)), and the
//!   writer thread writes a `{"gap":N}` record as soon as it next writes, so
//!   a reader sees where and how many events were lost. The write returns
//!   `Ok`: the loss is by design and on record.
//!
//! An event longer than
//! [`AuditBuilder::max_event_bytes`](super::AuditBuilder::max_event_bytes)
//! is not written; in its place the
//! record `{"oversized_event":{"bytes":N,"max_event_bytes":M}}` marks where
//! it was, [`TracingMetrics::oversized`] counts it, and the write fails
//! with an [`io::Error`] that wraps [`AuditError::TooLarge`] (`fmt` prints
//! it to stderr; [`AuditError::from_io`] gets it back). A line still
//! without its newline stops growing in memory once it is over the limit.
//! Any other refusal (the log is closed, or its writer cannot write) is
//! counted in [`TracingMetrics::failed`] and returned the same way.
//!
//! # Nothing accepted is lost at exit
//!
//! The `TracingWriter` holds a handle of the [`AuditLog`]: the stream
//! closes, writing everything accepted, when its last handle is dropped
//! (the subscriber's and yours), or at once when
//! [`AuditLog::close`] is called on any of them. A subscriber set with
//! `tracing::subscriber::set_global_default` is never dropped, so keep a
//! handle of the log and call `close` before the process exits: it returns
//! once every event accepted before it is in the file.

use std::fmt;
use std::io;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use tracing_subscriber::fmt::MakeWriter;

use super::log::{AuditError, AuditLog};
use crate::sync::atomic::{AtomicU64, Ordering};

/// The audit log as a [`tracing_subscriber::fmt::MakeWriter`]: every event
/// `fmt` formats becomes one chained record (see the [module
/// docs](self) for what a line becomes and what happens when the ring is
/// full or an event too large). Made by [`AuditLog::make_writer`]; clones
/// share their counters.
///
/// ```
/// use latchfree::audit::{self, AuditLog};
///
/// let dir = tempfile::tempdir()?;
/// let log = AuditLog::open(dir.path())?;
/// let subscriber = tracing_subscriber::fmt()
///     .json()
///     .with_writer(log.make_writer())
///     .finish();
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(user = "alice", "login");
///     tracing::warn!(user = "alice", amount = 10, "pay");
/// });
/// log.close()?; // everything accepted is in the file
/// assert_eq!(audit::verify(dir.path())?.records, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TracingWriter {
    log: AuditLog,
    counts: Arc<Counts>,
}

/// What the [`TracingWriter`] could not write as the event it was given.
#[derive(Default)]
struct Counts {
    dropped: AtomicU64,
    oversized: AtomicU64,
    failed: AtomicU64,
}

/// A [`TracingWriter`]'s counters, read at one moment. Events written are
/// the log's [`AuditMetrics`](super::AuditMetrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TracingMetrics {
    /// Events dropped because the ring was full
    /// ([`OnFull::Drop`](super::OnFull::Drop)); each is in a gap record.
    pub dropped: u64,
    /// Events longer than the log's `max_event_bytes`, each replaced by an
    /// `oversized_event` record.
    pub oversized: u64,
    /// Events refused otherwise (the log closed, or its writer failing).
    pub failed: u64,
}

impl fmt::Debug for TracingWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracingWriter")
            .field("log", &self.log)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl AuditLog {
    /// This log as a `tracing_subscriber::fmt` writer:
    /// `tracing_subscriber::fmt().json().with_writer(log.make_writer())`
    /// writes each event as one chained record (see [`TracingWriter`]).
    pub fn make_writer(&self) -> TracingWriter {
        TracingWriter {
            log: self.clone(),
            counts: Arc::default(),
        }
    }
}

impl TracingWriter {
    /// The log the events go to.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// The counters of events not written as given (shared by clones).
    pub fn metrics(&self) -> TracingMetrics {
        // Relaxed: independent counters, read as a snapshot of each.
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TracingMetrics {
            dropped: get(&self.counts.dropped),
            oversized: get(&self.counts.oversized),
            failed: get(&self.counts.failed),
        }
    }

    /// Commits one line (without its newline) as one record.
    fn commit(&self, line: &[u8]) -> io::Result<()> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        let is_json = matches!(line[0], b'{' | b'[' | b'"')
            && serde_json::from_slice::<&RawValue>(line).is_ok();
        let result = if is_json {
            self.log.log_checked_line(line)
        } else {
            self.log.log(&*String::from_utf8_lossy(line))
        };
        self.outcome(result.map(drop), line.len())
    }

    /// Counts and reports what became of a line of `bytes` bytes.
    fn outcome(&self, result: Result<(), AuditError>, bytes: usize) -> io::Result<()> {
        // Relaxed: counters, read on their own.
        let count = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => Ok(()),
            Err(AuditError::Full) => {
                count(&self.counts.dropped);
                Ok(())
            }
            Err(e @ AuditError::TooLarge { max }) => {
                count(&self.counts.oversized);
                let marker = Oversized {
                    oversized_event: OversizedEvent {
                        bytes: bytes as u64,
                        max_event_bytes: max as u64,
                    },
                };
                if let Err(AuditError::Full) = self.log.log(&marker) {
                    count(&self.counts.dropped);
                }
                Err(io::Error::other(e))
            }
            Err(e) => {
                count(&self.counts.failed);
                Err(io::Error::other(e))
            }
        }
    }
}

/// The record that stands for an event over the size limit.
#[derive(Serialize)]
struct Oversized {
    oversized_event: OversizedEvent,
}

#[derive(Serialize)]
struct OversizedEvent {
    bytes: u64,
    max_event_bytes: u64,
}

impl<'a> MakeWriter<'a> for TracingWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> EventWriter<'a> {
        EventWriter {
            writer: self,
            partial: Vec::new(),
            overflow: 0,
        }
    }
}

/// The writer `fmt` gets for one event: commits each line it is given as
/// one record, and on drop a last line without its newline (see the
/// [module docs](self)).
pub struct EventWriter<'a> {
    writer: &'a TracingWriter,
    /// The start of a line whose newline has not come yet.
    partial: Vec<u8>,
    /// Bytes of that line not kept because it is over the limit already.
    overflow: usize,
}

impl fmt::Debug for EventWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWriter")
            .field("pending_bytes", &(self.partial.len() + self.overflow))
            .finish_non_exhaustive()
    }
}

impl EventWriter<'_> {
    /// Commits the buffered line, if any.
    fn commit_partial(&mut self) -> io::Result<()> {
        let result = if self.overflow > 0 {
            let max = self.writer.log.max_event_bytes();
            let bytes = self.partial.len() + self.overflow;
            self.writer
                .outcome(Err(AuditError::TooLarge { max }), bytes)
        } else {
            self.writer.commit(&self.partial)
        };
        self.partial.clear();
        self.overflow = 0;
        result
    }

    /// Buffers the start of a line, keeping at most one byte over the limit
    /// (which makes it too large whatever follows, bar whitespace: two
    /// over, so trimming one trailing byte cannot bring it back).
    fn buffer(&mut self, data: &[u8]) {
        let keep = (self.writer.log.max_event_bytes() + 2).saturating_sub(self.partial.len());
        let kept = data.len().min(keep);
        self.partial.extend_from_slice(&data[..kept]);
        self.overflow += data.len() - kept;
    }
}

impl io::Write for EventWriter<'_> {
    /// Takes all of `data` (see `write_all`).
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data).map(|()| data.len())
    }

    /// Commits every line `data` completes; keeps the rest for the next
    /// call or the drop. All of `data` is taken even when a line fails:
    /// the error (the first, if several) says what became of it.
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        let mut result = Ok(());
        while let Some(end) = memchr::memchr(b'\n', data) {
            let (line, rest) = (&data[..end], &data[end + 1..]);
            let committed = if self.partial.is_empty() && self.overflow == 0 {
                self.writer.commit(line)
            } else {
                self.buffer(line);
                self.commit_partial()
            };
            result = result.and(committed);
            data = rest;
        }
        if !data.is_empty() {
            self.buffer(data);
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    /// Commits a last line that never got its newline (its error, if any,
    /// is counted in [`TracingMetrics`]).
    fn drop(&mut self) {
        if !self.partial.is_empty() || self.overflow > 0 {
            let _ = self.commit_partial();
        }
    }
}

impl AuditError {
    /// The audit error inside an [`io::Error`] returned by an
    /// [`EventWriter`] (`None` for any other).
    pub fn from_io(error: &io::Error) -> Option<&AuditError> {
        error.get_ref()?.downcast_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn records(dir: &std::path::Path) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        for file in crate::audit::verify::stream_files(dir, "audit").unwrap() {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let record = crate::audit::record::decode(line.as_bytes()).unwrap();
                events.push(match (record.event, record.gap) {
                    (Some(event), _) => event,
                    (None, gap) => serde_json::json!({ "gap": gap }),
                });
            }
        }
        events
    }

    #[test]
    fn lines_are_framed_by_newlines_whatever_the_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let writer = log.make_writer();
        {
            let mut w = writer.make_writer();
            w.write_all(b"{\"a\":1}\n").unwrap();
            w.write_all(b"{\"b\":").unwrap();
            w.write_all(b"2}\r\n{\"c\":3}\n  \n{\"d\"").unwrap();
            w.write_all(b":4}").unwrap();
            // Dropped without a newline: committed all the same.
        }
        writer
            .make_writer()
            .write_all(b"plain text, \"quoted\"\n")
            .unwrap();
        writer.make_writer().write_all(b"{not json}\n").unwrap();
        log.close().unwrap();
        assert_eq!(
            records(dir.path()),
            [
                serde_json::json!({"a": 1}),
                serde_json::json!({"b": 2}),
                serde_json::json!({"c": 3}),
                serde_json::json!({"d": 4}),
                serde_json::json!("plain text, \"quoted\""),
                serde_json::json!("{not json}"),
            ]
        );
        assert_eq!(writer.metrics(), TracingMetrics::default());
    }

    #[test]
    fn an_oversized_line_is_marked_counted_and_typed_even_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::builder(dir.path())
            .max_event_bytes(64)
            .open()
            .unwrap();
        let writer = log.make_writer();
        let big = format!("{{\"x\":\"{}\"}}\n", "y".repeat(100));
        let err = writer.make_writer().write_all(big.as_bytes()).unwrap_err();
        assert!(matches!(
            AuditError::from_io(&err),
            Some(AuditError::TooLarge { max: 64 })
        ));
        {
            let mut w = writer.make_writer();
            for _ in 0..50 {
                w.write_all(b"zzzzzzzzzzzzzzzzzzzz").unwrap();
            }
            assert!(w.partial.len() <= 66, "{}", w.partial.len());
        }
        writer.make_writer().write_all(b"{\"ok\":true}\n").unwrap();
        log.close().unwrap();
        assert_eq!(writer.metrics().oversized, 2);
        assert_eq!(
            records(dir.path()),
            [
                serde_json::json!({"oversized_event": {"bytes": big.len() - 1, "max_event_bytes": 64}}),
                serde_json::json!({"oversized_event": {"bytes": 1000, "max_event_bytes": 64}}),
                serde_json::json!({"ok": true}),
            ]
        );
    }

    #[test]
    fn writing_after_close_fails_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let writer = log.make_writer();
        log.close().unwrap();
        let err = writer.make_writer().write_all(b"{}\n").unwrap_err();
        assert!(matches!(
            AuditError::from_io(&err),
            Some(AuditError::Closed)
        ));
        assert_eq!(writer.metrics().failed, 1);
    }
}
