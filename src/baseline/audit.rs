//! [`LockedAuditLog`]: the audit log as one `Mutex` around the file.
//!
//! The classic design: each caller serialises its event (outside the lock,
//! into a reused thread-local buffer), then takes the lock, numbers the
//! record, stamps it, hashes it onto the chain and writes it, all under the
//! lock. The lines are the same [`record`] format as latchfree's
//! [`AuditLog`](crate::audit::AuditLog) (`seq`, `ts`, SHA-256 chain), so
//! [`audit::verify`](crate::audit::verify()) checks its files too.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use crate::audit::log::with_buffer;
use crate::audit::record::{self, Body, ChainHash, Timestamp};
use crate::audit::recover;
use crate::audit::{AuditError, DEFAULT_MAX_FILE_BYTES, Guarantee, Head};

/// Where the lines go.
enum Sink {
    Buffered(BufWriter<File>),
    Raw(File),
}

/// Everything the lock protects.
struct State {
    /// `None` once closed.
    sink: Option<Sink>,
    /// The file `sink` writes.
    path: PathBuf,
    /// Its number within the day (`audit-YYYYMMDD-NNNNNN.jsonl`).
    n: u32,
    /// Bytes written to it.
    len: u64,
    /// The last record written (`None` before the first).
    head: Option<Head>,
    /// The line being encoded, reused.
    line: Vec<u8>,
}

/// The classic audit log: every record takes one global lock around the
/// encoder and the file.
///
/// * **Lossless and ordered.** Each [`log`](Self::log) call writes exactly
///   one line before it returns (into the `BufWriter`, the OS or the disk,
///   per its [`Guarantee`]); `seq` numbers records from 0 in lock order.
///   [`Guarantee::Async`]: into a `BufWriter` (8 KiB) under the lock, written
///   when it fills, on [`flush`](Self::flush), `close` or drop;
///   [`Guarantee::Os`]: one `write` per record under the lock;
///   [`Guarantee::Disk`]: one `write` and one `fdatasync` per record under
///   the lock.
/// * **Same format.** Records are [`record::encode`] lines with the SHA-256
///   chain, in files `audit-YYYYMMDD-NNNNNN.jsonl` (the UTC day it was
///   opened, numbered from 0): a new file starts once one reaches
///   [`max_file_bytes`](Self::max_file_bytes) (256 MiB by default, as
///   latchfree's), never with the day, and the directory must not already
///   hold the stream: this twin does not resume.
/// * **The cost.** Every caller queues on the one lock while the holder
///   formats a timestamp, hashes the line and writes it (and in
///   [`Guarantee::Disk`] waits for the fsync): a preempted or fsyncing
///   holder stalls them all, and each fsync covers one record.
/// * **Errors.** A failed write or fsync is returned to its caller
///   ([`AuditError::Write`]) and the record is not counted; the line may be
///   partly written, which [`verify`](crate::audit::verify()) then reports.
///
/// ```
/// use latchfree::audit::Guarantee;
/// use latchfree::baseline::LockedAuditLog;
///
/// let dir = tempfile::tempdir()?;
/// let log = LockedAuditLog::open(dir.path(), Guarantee::Async)?;
/// assert_eq!(log.log(&serde_json::json!({"user": "alice", "action": "login"}))?, 0);
/// assert_eq!(log.log(&serde_json::json!({"user": "alice", "action": "pay"}))?, 1);
/// let head = log.close()?.expect("two records");
/// assert_eq!(head.seq, 1);
/// assert_eq!(latchfree::audit::verify(dir.path())?.records, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LockedAuditLog {
    state: Mutex<State>,
    mode: Guarantee,
    dir: PathBuf,
    /// The UTC day in the file names.
    day: u32,
    max_file_bytes: u64,
}

impl std::fmt::Debug for LockedAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedAuditLog")
            .field("dir", &self.dir)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl LockedAuditLog {
    /// Creates `dir` if needed and a new file `audit-YYYYMMDD-000000.jsonl`
    /// in it (it must not exist).
    pub fn open(dir: impl AsRef<Path>, mode: Guarantee) -> Result<Self, AuditError> {
        let dir = dir.as_ref();
        let open_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e| AuditError::Open {
                path,
                source: Arc::new(e),
            }
        };
        std::fs::create_dir_all(dir).map_err(open_err(dir))?;
        let day = recover::day_of(&Timestamp::new(SystemTime::now()));
        let path = dir.join(recover::file_name("audit", day, 0));
        let sink = create_sink(dir, &path, mode).map_err(open_err(&path))?;
        Ok(Self {
            state: Mutex::new(State {
                sink: Some(sink),
                path,
                n: 0,
                len: 0,
                head: None,
                line: Vec::with_capacity(1024),
            }),
            mode,
            dir: dir.to_path_buf(),
            day,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        })
    }

    /// Starts a new file once one reaches `bytes` (at least 4 KiB; default
    /// 256 MiB).
    pub fn max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes.max(4096);
        self
    }

    /// The mode it was opened with.
    pub fn mode(&self) -> Guarantee {
        self.mode
    }

    /// The file it writes now.
    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under the lock, and `head` changes only after a
        // whole line was accepted.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs one event: serialises it (serde_json, compact) outside the
    /// lock, then numbers, stamps, hashes and writes it under the lock.
    /// Returns its `seq` once it has the log's [`Guarantee`].
    pub fn log<E: Serialize + ?Sized>(&self, event: &E) -> Result<u64, AuditError> {
        with_buffer(|json| {
            serde_json::to_writer(&mut *json, event)
                .map_err(|e| AuditError::Serialize(Arc::new(e)))?;
            self.append(json)
        })
    }

    fn append(&self, json: &[u8]) -> Result<u64, AuditError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.sink.is_some() && state.len >= self.max_file_bytes {
            self.rotate(state)
                .map_err(|e| AuditError::Write(Arc::new(e)))?;
        }
        let State {
            sink,
            head,
            line,
            len,
            ..
        } = state;
        let sink = sink.as_mut().ok_or(AuditError::Closed)?;
        let (seq, prev) = match head {
            Some(h) => (h.seq + 1, h.hash),
            None => (0, ChainHash::GENESIS),
        };
        line.clear();
        let hash = record::encode(line, seq, SystemTime::now(), Body::Event(json), &prev);
        let written = match sink {
            Sink::Buffered(out) => out.write_all(line),
            Sink::Raw(file) => file.write_all(line).and_then(|()| match self.mode {
                Guarantee::Disk => file.sync_data(),
                _ => Ok(()),
            }),
        };
        written.map_err(|e| AuditError::Write(Arc::new(e)))?;
        *len += line.len() as u64;
        *head = Some(Head { seq, hash });
        Ok(seq)
    }

    /// Closes the full file (flushing its buffer) and opens the next.
    fn rotate(&self, state: &mut State) -> std::io::Result<()> {
        if let Some(Sink::Buffered(out)) = state.sink.as_mut() {
            out.flush()?;
        }
        let path = self
            .dir
            .join(recover::file_name("audit", self.day, state.n + 1));
        state.sink = Some(create_sink(&self.dir, &path, self.mode)?);
        state.path = path;
        state.n += 1;
        state.len = 0;
        Ok(())
    }

    /// Hands buffered records to the OS ([`Guarantee::Async`]; the other
    /// modes have nothing buffered) and returns the head reached.
    pub fn flush(&self) -> Result<Option<Head>, AuditError> {
        let mut state = self.lock();
        match state.sink.as_mut() {
            Some(Sink::Buffered(out)) => out.flush().map_err(|e| AuditError::Write(Arc::new(e)))?,
            Some(Sink::Raw(_)) => {}
            None => return Err(AuditError::Closed),
        }
        Ok(state.head)
    }

    /// Flushes, closes the file, and returns the final head; later `log`
    /// calls fail with [`AuditError::Closed`]. Calling it again returns the
    /// head again.
    pub fn close(&self) -> Result<Option<Head>, AuditError> {
        let mut state = self.lock();
        if let Some(Sink::Buffered(out)) = state.sink.as_mut() {
            out.flush().map_err(|e| AuditError::Write(Arc::new(e)))?;
        }
        state.sink = None;
        Ok(state.head)
    }

    /// Records written so far (the next `seq`).
    pub fn records(&self) -> u64 {
        self.lock().head.map_or(0, |h| h.seq + 1)
    }
}

/// Creates `path` (it must not exist) in `dir` and the sink for `mode`.
fn create_sink(dir: &Path, path: &Path, mode: Guarantee) -> std::io::Result<Sink> {
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)?;
    if mode == Guarantee::Disk {
        // The new name must survive power loss with the records in it.
        File::open(dir)?.sync_all()?;
    }
    Ok(match mode {
        Guarantee::Async => Sink::Buffered(BufWriter::new(file)),
        Guarantee::Os | Guarantee::Disk => Sink::Raw(file),
    })
}

impl Drop for LockedAuditLog {
    /// Flushes the `BufWriter`; an error can only be printed here: call
    /// [`close`](Self::close) to get it.
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            eprintln!("latchfree: closing {}: {e}", self.path().display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify;

    const MODES: [Guarantee; 3] = [Guarantee::Async, Guarantee::Os, Guarantee::Disk];

    #[test]
    fn every_mode_writes_a_stream_that_verifies() {
        for mode in MODES {
            let dir = tempfile::tempdir().unwrap();
            let log = LockedAuditLog::open(dir.path(), mode).unwrap();
            for i in 0..20u64 {
                let event = serde_json::json!({"user": "alice", "n": i, "note": "a\nb"});
                assert_eq!(log.log(&event).unwrap(), i);
            }
            assert_eq!(log.flush().unwrap().map(|h| h.seq), Some(19));
            let head = log.close().unwrap();
            assert!(matches!(log.log(&1), Err(AuditError::Closed)));
            assert_eq!(log.close().unwrap(), head);
            let report = verify(dir.path()).unwrap();
            assert_eq!((report.files, report.records), (1, 20), "{mode:?}");
            assert_eq!(report.head, head);
            let text = std::fs::read_to_string(log.path()).unwrap();
            let last = record::decode(text.lines().last().unwrap().as_bytes()).unwrap();
            assert_eq!(last.event.unwrap()["n"], 19);
        }
    }

    #[test]
    fn seq_is_contiguous_across_four_threads() {
        const PER_THREAD: u64 = 2_000;
        for mode in [Guarantee::Async, Guarantee::Os] {
            let dir = tempfile::tempdir().unwrap();
            let log = LockedAuditLog::open(dir.path(), mode).unwrap();
            let mut seqs: Vec<u64> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..4)
                    .map(|t| {
                        let log = &log;
                        s.spawn(move || {
                            (0..PER_THREAD)
                                .map(|i| log.log(&serde_json::json!({"t": t, "i": i})).unwrap())
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap())
                    .collect()
            });
            seqs.sort_unstable();
            assert!(seqs.iter().copied().eq(0..4 * PER_THREAD), "{mode:?}");
            assert_eq!(log.records(), 4 * PER_THREAD);
            drop(log); // flushes the buffer
            let report = verify(dir.path()).unwrap();
            assert_eq!(report.records, 4 * PER_THREAD, "{mode:?}");
        }
    }

    #[test]
    fn full_files_rotate_and_the_chain_continues() {
        for mode in MODES {
            let dir = tempfile::tempdir().unwrap();
            let log = LockedAuditLog::open(dir.path(), mode)
                .unwrap()
                .max_file_bytes(4096);
            let first = log.path();
            for i in 0..200u64 {
                assert_eq!(log.log(&serde_json::json!({"n": i})).unwrap(), i);
            }
            assert_ne!(log.path(), first, "{mode:?}");
            log.close().unwrap();
            let files = crate::audit::verify::stream_files(dir.path(), "audit").unwrap();
            assert!(files.len() >= 3, "{mode:?}: {} files", files.len());
            for f in &files[..files.len() - 1] {
                let len = std::fs::metadata(f).unwrap().len();
                // Full, by at most one line past the bound.
                assert!((4096..4096 + 256).contains(&len), "{mode:?}: {len}");
            }
            let report = verify(dir.path()).unwrap();
            assert_eq!(
                (report.files, report.records),
                (files.len(), 200),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn a_stream_already_there_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = LockedAuditLog::open(dir.path(), Guarantee::Async).unwrap();
        // Same day, same name: `create_new` refuses it.
        let second = LockedAuditLog::open(dir.path(), Guarantee::Async);
        assert!(matches!(second, Err(AuditError::Open { .. })));
        drop(first);
    }

    #[test]
    fn a_failing_serializer_writes_nothing() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let log = LockedAuditLog::open(dir.path(), Guarantee::Os).unwrap();
        assert!(matches!(log.log(&Fails), Err(AuditError::Serialize(_))));
        assert_eq!(log.log(&"ok").unwrap(), 0);
        log.close().unwrap();
        assert_eq!(verify(dir.path()).unwrap().records, 1);
    }
}
