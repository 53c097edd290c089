//! The files of a stream, and picking a stream up again after a crash.
//!
//! A stream `PREFIX` is the files `PREFIX-YYYYMMDD-NNNNNN.jsonl` in one
//! directory: the UTC day of the records, and a counter that restarts each
//! day and rises when a file reaches its size limit or the log is reopened
//! on a new day. Name order is write order (the writer never names a file
//! with an earlier day than the file before it, even if the wall clock steps
//! back).
//!
//! A crash can cut the last write short, leaving a *torn* final line (no
//! newline). On open, [`scan_tail`] finds the last whole line of the newest
//! file; the torn bytes after it are truncated away, and `seq` and the hash
//! chain resume from that record. Everything before it is left as it is:
//! run [`verify`](super::verify()) to check it. A whole last line that is
//! not a valid record is not guessed about: opening fails with
//! [`AuditError::Corrupt`](super::AuditError::Corrupt).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::record::Head;
use super::record::{self, Record, RecordError};

/// The newest whole record of a file, and where its whole lines end.
#[derive(Clone, Debug, PartialEq)]
pub struct Tail {
    /// Bytes up to and including the last newline: the whole lines.
    pub keep: usize,
    /// The last whole line, decoded (`None` if there is no whole line).
    pub last: Option<Record>,
}

/// Finds the last whole line of `bytes` (a file's content) and decodes it.
///
/// Bytes after the last newline are a torn write (`keep < bytes.len()`).
/// Fails if the last whole line is not a valid record.
pub fn scan_tail(bytes: &[u8]) -> Result<Tail, RecordError> {
    let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
        return Ok(Tail {
            keep: 0,
            last: None,
        });
    };
    let start = bytes[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let last = record::decode(&bytes[start..end])?;
    Ok(Tail {
        keep: end + 1,
        last: Some(last),
    })
}

/// The name of file `n` of day `day` (UTC, `YYYYMMDD`) of stream `prefix`:
/// `PREFIX-YYYYMMDD-NNNNNN.jsonl`. [`verify`](super::verify()) and
/// [`AuditLog::open`](super::AuditLog) read the files of a stream in the
/// order of these names, so a tool that writes a stream of its own (or
/// copies one) names its files with this.
///
/// ```
/// assert_eq!(latchfree::audit::file_name("audit", 20261123, 7), "audit-20261123-000007.jsonl");
/// ```
pub fn file_name(prefix: &str, day: u32, n: u32) -> String {
    format!("{prefix}-{day:08}-{n:06}.jsonl")
}

/// The files of stream `prefix` in `dir` as `(day, n, path)`, oldest first.
pub(crate) fn list(dir: &Path, prefix: &str) -> io::Result<Vec<(u32, u32, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some((day, n)) = parse_name(prefix, &entry.file_name().to_string_lossy()) {
            files.push((day, n, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// `(day, n)` of a file name of stream `prefix`, or `None` for any other name.
pub(crate) fn parse_name(prefix: &str, name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let rest = rest.strip_suffix(".jsonl")?;
    let (day, n) = rest.split_once('-')?;
    let digits = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(day, 8) || !digits(n, 6) {
        return None;
    }
    Some((day.parse().ok()?, n.parse().ok()?))
}

/// The UTC day `YYYYMMDD` of an RFC 3339 timestamp as [`record::Timestamp`]
/// formats it.
pub(crate) fn day_of(ts: &record::Timestamp) -> u32 {
    let s = ts.as_str().as_bytes();
    let num = |r: std::ops::Range<usize>| {
        s.get(r).into_iter().flatten().fold(0u32, |acc, &b| {
            acc * 10 + u32::from(b.wrapping_sub(b'0') % 10)
        })
    };
    num(0..4) * 10_000 + num(5..7) * 100 + num(8..10)
}

/// The newest file of a stream, open for appending.
pub(crate) struct Current {
    pub(crate) file: File,
    pub(crate) day: u32,
    pub(crate) n: u32,
    pub(crate) len: u64,
}

/// Where a stream stands after [`open_stream`].
pub(crate) struct Recovered {
    /// The newest file, if the stream has one.
    pub(crate) current: Option<Current>,
    /// The last whole record of the stream.
    pub(crate) head: Option<Head>,
    /// Torn bytes truncated from the newest file.
    pub(crate) truncated: u64,
}

/// Why a stream cannot be picked up.
pub(crate) enum RecoverError {
    Io(PathBuf, io::Error),
    Corrupt(PathBuf, RecordError),
    /// The newest file's first record (`seq`) does not continue the last
    /// record of the file before it (`previous`): a copy of an older file
    /// under a newer name, say. Resuming from it would fork the chain.
    Forked {
        path: PathBuf,
        first: u64,
        previous: u64,
    },
}

/// Opens stream `prefix` in `dir`: truncates a torn tail of the newest file
/// and finds the head to continue from.
pub(crate) fn open_stream(dir: &Path, prefix: &str) -> Result<Recovered, RecoverError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e| RecoverError::Io(path, e)
    };
    let files = list(dir, prefix).map_err(io_err(dir))?;
    let mut recovered = Recovered {
        current: None,
        head: None,
        truncated: 0,
    };
    // Newest first; an empty newest file (a crash right after it was
    // created) hands the head search to the one before it.
    for (i, (day, n, path)) in files.iter().rev().enumerate() {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let tail = scan_tail(&bytes).map_err(|e| RecoverError::Corrupt(path.clone(), e))?;
        if i == 0 {
            let file = OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io_err(path))?;
            if tail.keep < bytes.len() {
                file.set_len(tail.keep as u64).map_err(io_err(path))?;
                file.sync_all().map_err(io_err(path))?;
                recovered.truncated = (bytes.len() - tail.keep) as u64;
            }
            recovered.current = Some(Current {
                file,
                day: *day,
                n: *n,
                len: tail.keep as u64,
            });
        }
        if let Some(last) = tail.last {
            recovered.head = Some(Head {
                seq: last.seq,
                hash: last.hash,
            });
            let older = &files[..files.len() - 1 - i];
            check_continues(path, &bytes[..tail.keep], older)?;
            break;
        }
    }
    Ok(recovered)
}

/// Checks that the first record of `bytes` (the whole lines of the file
/// the stream resumes from) follows the last record of the newest of
/// `older` that has one. Only these two records are read: the rest is
/// [`verify`](super::verify())'s job; this catches a file that does not
/// belong where its name puts it, which would make the stream resume at
/// the wrong `seq` and fork the chain.
fn check_continues(
    path: &Path,
    bytes: &[u8],
    older: &[(u32, u32, PathBuf)],
) -> Result<(), RecoverError> {
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = record::decode(first_line).map_err(|e| RecoverError::Corrupt(path.into(), e))?;
    for (_, _, older_path) in older.iter().rev() {
        let Some(previous) = last_record(older_path)? else {
            continue; // empty: look further back
        };
        if first.seq != previous.seq + 1 || first.prev != previous.hash {
            return Err(RecoverError::Forked {
                path: path.into(),
                first: first.seq,
                previous: previous.seq,
            });
        }
        return Ok(());
    }
    Ok(())
}

/// The last whole record of the file at `path`, reading only its end
/// (a window that doubles until it holds the whole last line).
pub(crate) fn last_record(path: &Path) -> Result<Option<Record>, RecoverError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let io_err = |e| RecoverError::Io(path.into(), e);
    let mut file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut window: u64 = 64 << 10;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start)).map_err(io_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;
        // The window holds the whole last line if it starts the file or
        // holds a newline before the last line's own.
        let end = bytes.iter().rposition(|&b| b == b'\n');
        let whole = start == 0 || end.is_some_and(|end| bytes[..end].contains(&b'\n'));
        if whole {
            let tail = scan_tail(&bytes).map_err(|e| RecoverError::Corrupt(path.into(), e))?;
            return Ok(tail.last);
        }
        window = window.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Body, ChainHash, encode};
    use std::time::SystemTime;

    fn two_records() -> (Vec<u8>, ChainHash) {
        let mut out = Vec::new();
        let h0 = encode(
            &mut out,
            0,
            SystemTime::UNIX_EPOCH,
            Body::Event(b"1"),
            &ChainHash::GENESIS,
        );
        let h1 = encode(&mut out, 1, SystemTime::UNIX_EPOCH, Body::Gap(2), &h0);
        (out, h1)
    }

    #[test]
    fn the_tail_is_the_last_whole_line() {
        let (mut bytes, h1) = two_records();
        let whole = bytes.len();
        let tail = scan_tail(&bytes).unwrap();
        assert_eq!(tail.keep, whole);
        assert_eq!(tail.last.as_ref().map(|r| (r.seq, r.hash)), Some((1, h1)));
        bytes.extend_from_slice(br#"{"seq":2,"ts":"#);
        let torn = scan_tail(&bytes).unwrap();
        assert_eq!(torn, tail);
        assert_eq!(
            scan_tail(b"no newline at all").unwrap(),
            Tail {
                keep: 0,
                last: None
            }
        );
        assert!(scan_tail(b"{\"seq\":1}\n").is_err());
    }

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        assert_eq!(
            file_name("audit", 20261123, 7),
            "audit-20261123-000007.jsonl"
        );
        assert_eq!(
            parse_name("audit", "audit-20261123-000007.jsonl"),
            Some((20261123, 7))
        );
        for other in [
            "audit-20261123-7.jsonl",
            "telemetry-20261123-000007.jsonl",
            "audit-2026112x-000007.jsonl",
            "audit-20261123-000007.json",
            "audit_x-20261123-000007.jsonl",
        ] {
            assert_eq!(parse_name("audit", other), None, "{other}");
        }
        let ts = record::Timestamp::new(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000),
        );
        assert_eq!(&ts.as_str()[..10], "2026-11-18");
        assert_eq!(day_of(&ts), 20261118);
    }
}
