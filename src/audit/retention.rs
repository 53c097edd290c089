//! Retention: the writer removes a stream's oldest closed files beyond its
//! limits, behind an [`anchor`] so that what remains still
//! verifies.
//!
//! The limits ([`AuditBuilder::max_files`](super::AuditBuilder::max_files),
//! [`max_total_bytes`](super::AuditBuilder::max_total_bytes),
//! [`max_age`](super::AuditBuilder::max_age)) are checked by the writer
//! thread, the only code that touches the files, between batches: when the
//! stream is opened, after each rotation, and when the oldest closed file
//! reaches the age limit. Files go oldest first, and only closed ones: the
//! file being written is never removed, so `max_files(1)` keeps just it and
//! a stream whose current file alone is over `max_total_bytes` keeps it.
//!
//! A file's age is the time since its last record's `ts`, judged by the
//! stream's [`Clock`](crate::clock::Clock): the clock that stamped the
//! records, so a test with a manual clock moves files past the limit
//! without sleeping. An empty closed file (the process stopped right after
//! a rotation) holds nothing and goes whenever the age limit is checked.
//!
//! Before removing files, the head of the last record they hold is written
//! durably to the anchor file (see [`anchor`] for the order
//! of the steps and why a crash between them is harmless). Closed files are
//! already on disk: the writer fsyncs a file when it leaves it.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::anchor;
use super::durable::Syncer;
use super::record::Head;
use super::recover;

/// The retention limits of a stream (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Files kept, the one being written included.
    pub(crate) max_files: Option<usize>,
    /// Bytes kept over all files, the one being written included.
    pub(crate) max_total_bytes: Option<u64>,
    /// Age of a closed file's last record beyond which it goes.
    pub(crate) max_age: Option<Duration>,
}

impl Limits {
    pub(crate) fn is_off(&self) -> bool {
        *self == Self::default()
    }
}

/// A closed file of the stream.
struct Closed {
    path: PathBuf,
    len: u64,
    /// Its last record's head and time (`None`: no record).
    last: Option<(Head, SystemTime)>,
}

/// The writer's view of the closed files, and the limits it keeps.
pub(crate) struct Retainer {
    limits: Limits,
    dir: PathBuf,
    prefix: String,
    /// Closed files, oldest first.
    closed: VecDeque<Closed>,
    /// The head last written to the anchor file.
    anchored: Option<Head>,
    /// Check at the next turn (opened, rotated, or a failure to retry).
    due: bool,
    /// When the oldest closed file passes the age limit (or a failed
    /// removal is retried).
    next_check: Option<SystemTime>,
}

/// Files removed by one check, and how it ended.
pub(crate) struct Removed {
    pub(crate) files: u64,
    pub(crate) result: io::Result<()>,
}

/// How long a failed removal waits before the next try.
const RETRY: Duration = Duration::from_secs(1);

impl Retainer {
    /// The retainer of stream `prefix` in `dir`, whose files other than
    /// the current one (`current`) are closed. Reads the end of each.
    pub(crate) fn open(
        limits: Limits,
        dir: &Path,
        prefix: &str,
        current: &Path,
    ) -> io::Result<Self> {
        let mut closed = VecDeque::new();
        for (_, _, path) in recover::list(dir, prefix)? {
            if path != current {
                closed.push_back(Closed::read(path)?);
            }
        }
        Ok(Self {
            limits,
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            closed,
            anchored: anchor::read_anchor(dir, prefix)?,
            due: true,
            next_check: None,
        })
    }

    /// The writer left the file at `path` for a new one.
    pub(crate) fn closed(&mut self, path: PathBuf) -> io::Result<()> {
        self.due = true;
        self.closed.push_back(Closed::read(path)?);
        Ok(())
    }

    /// Whether [`retain`](Self::retain) has anything to check at `now`.
    pub(crate) fn is_due(&self, now: SystemTime) -> bool {
        self.due || self.next_check.is_some_and(|at| at <= now)
    }

    /// Removes the oldest closed files beyond the limits at `now`, given
    /// the current file's length; anchors the chain first.
    pub(crate) fn retain(
        &mut self,
        now: SystemTime,
        current_len: u64,
        syncer: &dyn Syncer,
    ) -> Removed {
        self.due = false;
        let result = self.try_retain(now, current_len, syncer);
        let mut removed = Removed {
            files: result.as_ref().map_or_else(|(n, _)| *n, |n| *n),
            result: Ok(()),
        };
        if let Err((_, e)) = result {
            removed.result = Err(e);
            self.next_check = Some(now + RETRY);
            return removed;
        }
        self.next_check = match (self.limits.max_age, self.closed.front()) {
            (Some(age), Some(oldest)) => Some(oldest.last.map_or(now, |(_, at)| at + age)),
            _ => None,
        };
        removed
    }

    fn try_retain(
        &mut self,
        now: SystemTime,
        current_len: u64,
        syncer: &dyn Syncer,
    ) -> Result<u64, (u64, io::Error)> {
        // How many of the oldest closed files go.
        let mut files = self.closed.len() + 1;
        let mut bytes = current_len + self.closed.iter().map(|c| c.len).sum::<u64>();
        let mut remove = 0;
        for file in &self.closed {
            let too_many = self.limits.max_files.is_some_and(|max| files > max);
            let too_big = self.limits.max_total_bytes.is_some_and(|max| bytes > max);
            let too_old = self.limits.max_age.is_some_and(|age| {
                file.last
                    .is_none_or(|(_, at)| now.duration_since(at).is_ok_and(|d| d >= age))
            });
            if !(too_many || too_big || too_old) {
                break;
            }
            remove += 1;
            files -= 1;
            bytes -= file.len;
        }
        // The anchor: the last record of the newest file that goes.
        let head = self
            .closed
            .iter()
            .take(remove)
            .rev()
            .find_map(|c| c.last.map(|(head, _)| head));
        if let Some(head) = head
            && Some(head) != self.anchored
        {
            anchor::write_anchor(&self.dir, &self.prefix, head, syncer).map_err(|e| (0, e))?;
            self.anchored = Some(head);
        }
        for n in 0..remove {
            let Some(oldest) = self.closed.front() else {
                break;
            };
            match std::fs::remove_file(&oldest.path) {
                Ok(()) => {}
                // Gone already (removed by hand, say): nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err((n as u64, e)),
            }
            self.closed.pop_front();
        }
        Ok(remove as u64)
    }
}

impl Closed {
    fn read(path: PathBuf) -> io::Result<Self> {
        let len = std::fs::metadata(&path)?.len();
        let last = match recover::last_record(&path) {
            Ok(Some(record)) => {
                let at = humantime::parse_rfc3339(&record.ts).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: last record's ts: {e}", path.display()),
                    )
                })?;
                let head = Head {
                    seq: record.seq,
                    hash: record.hash,
                };
                Some((head, at))
            }
            Ok(None) => None,
            Err(recover::RecoverError::Io(_, e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: its last line is not a record", path.display()),
                ));
            }
        };
        Ok(Self { path, len, last })
    }
}
