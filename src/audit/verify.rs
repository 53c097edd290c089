//! Checking a log directory: every line parses, `seq` runs without a hole
//! across files, and the hash chain is intact. The first break is reported
//! with its file and line.
//!
//! Files of one stream are `PREFIX-YYYYMMDD-NNNNNN.jsonl`, in name order
//! (the writer names them by UTC day and a counter, so name order is write
//! order). Each file
//! is checked on its own, in parallel (rayon, with feature
//! `parallel-verify`); then the files are stitched:
//! each file's first record must continue the previous file's last (`seq + 1`
//! and `prev` equal to its hash). The first record of the oldest file must
//! be `seq` 0 with the all-zero `prev`, unless older files were removed on
//! purpose: [`verify_from`] then starts at a head exported earlier, or,
//! when none is given, at the stream's [anchor](super::anchor) file, which
//! the writer's retention keeps (`PREFIX.anchor`).
//!
//! # Starting from a head
//!
//! The remaining records must continue the start head exactly: the first
//! record after it must have its `seq + 1` and its hash as `prev`. So a file
//! removed by anyone but the writer's retention (the oldest remaining, or
//! one in the middle) shows as a [`Problem::SeqGap`]. Records at or before
//! the start may still be there (the writer crashed between anchoring and
//! removing, or a head exported from the middle of a file is given): a file
//! whose records all lie at or before it is skipped, and in the one that
//! holds the start's `seq`, that record must have the start's hash
//! ([`Problem::HeadMismatch`] otherwise); only the records after it are
//! counted.
//!
//! # The end of the chain needs an anchor too
//!
//! A chain that verifies proves that its records are unbroken from its
//! start to *its own* last record; it cannot tell that records were taken
//! off its end. Checked on its own, a directory still verifies after:
//!
//! * the newest files are deleted, or the newest file is emptied or cut at
//!   a line boundary;
//! * its tail (or all of it) is rewritten and the chain recomputed from the
//!   first changed record, by whoever can write the files.
//!
//! Only a head exported earlier to a place the node cannot rewrite (another
//! host, a ticket, a transparency log; see [`record`]) tells:
//! [`verify_to`] (`latchfree audit verify --head SEQ:HASH`) requires the
//! chain to contain that record, so a copy cut short before it, or rewritten
//! at or before it, fails. Records after the newest exported head have no
//! such protection: export heads as often as their loss matters.

use std::path::{Path, PathBuf};

#[cfg(feature = "parallel-verify")]
use rayon::prelude::*;

pub use super::record::Head;
use super::record::{self, ChainHash, RecordError};

/// What a successful verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files checked.
    pub files: usize,
    /// Records (events and gap markers).
    pub records: u64,
    /// Gap markers among them.
    pub gap_markers: u64,
    /// Events the gap markers account for (dropped under the lossy policy).
    pub dropped: u64,
    /// The last record: export it to anchor the chain.
    pub head: Option<Head>,
}

/// Where and how a chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The line is not a valid record (or its hash does not match it).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A record is missing, repeated or moved.
    #[error("seq {found} where seq {expected} was due")]
    SeqGap {
        /// The `seq` that should come next.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// `prev` is not the previous record's hash.
    #[error("prev {found} is not the previous record's hash {expected}")]
    ChainBroken {
        /// The previous record's hash.
        expected: ChainHash,
        /// The `prev` found.
        found: ChainHash,
    },
    /// The last line has no newline: a write was cut short.
    #[error("the last line is torn (it has no newline)")]
    TornTail,
    /// The record at the anchor's `seq` is not the anchored record: the
    /// chain was rewritten at or before it (the head [`verify_to`] must
    /// reach, or a start head that a remaining file still holds).
    #[error("seq {seq} has hash {found}, not the anchored {expected}")]
    HeadMismatch {
        /// The anchor's `seq`.
        seq: u64,
        /// The anchored hash.
        expected: ChainHash,
        /// The hash found.
        found: ChainHash,
    },
}

/// Why a directory did not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A file or the directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The chain breaks here (line numbers start at 1).
    #[error("{}:{line}: {problem}", path.display())]
    Broken {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong.
        problem: Problem,
    },
    /// The stream's anchor file cannot be read, or is not an anchor line.
    #[error("cannot use the anchor {}: {source}", path.display())]
    Anchor {
        /// The anchor file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The chain is sound but ends before the head it must contain
    /// ([`verify_to`]): records were taken off its end, or the stream was
    /// replaced.
    #[error(
        "the chain ends at {} before the anchored head {}:{}",
        reached.map_or("no record".to_string(), |h| format!("seq {}", h.seq)),
        head.seq,
        head.hash
    )]
    HeadNotReached {
        /// The head it must contain.
        head: Head,
        /// Where it ends (`None`: no record).
        reached: Option<Head>,
    },
}

/// Verifies the `audit` stream in `dir` from its first record (`seq` 0), or
/// from its anchor if retention removed older files.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyError> {
    verify_from(dir, "audit", None)
}

/// Verifies stream `prefix` in `dir`. With `start`, the records must
/// continue that head (older files were removed; see the [module
/// docs](self)); without, they continue the stream's anchor
/// (`PREFIX.anchor`, kept by retention) if it has one, and otherwise the
/// oldest must be `seq` 0 with the all-zero `prev`.
pub fn verify_from(
    dir: &Path,
    prefix: &str,
    start: Option<Head>,
) -> Result<VerifyReport, VerifyError> {
    let start = start_or_anchor(dir, prefix, start)?;
    verify_files(&stream_files(dir, prefix)?, start)
}

/// `start`, or else the stream's anchor (if it has one).
fn start_or_anchor(
    dir: &Path,
    prefix: &str,
    start: Option<Head>,
) -> Result<Option<Head>, VerifyError> {
    if start.is_some() {
        return Ok(start);
    }
    super::anchor::read_anchor(dir, prefix).map_err(|source| VerifyError::Anchor {
        path: super::anchor::anchor_path(dir, prefix),
        source,
    })
}

/// [`verify_from`], and the chain must reach `to`: it must contain a record
/// with `to.seq` and `to.hash` (a head exported earlier, and kept where the
/// node cannot rewrite it). Records after it are checked as usual (the
/// stream went on after the export).
///
/// This is what detects the tampers the chain alone cannot see (see the
/// [module docs](self)): a stream that ends before `to` fails with
/// [`VerifyError::HeadNotReached`]; one whose record `to.seq` has another
/// hash (the tail was rewritten, chain and all) with
/// [`Problem::HeadMismatch`] at that line.
///
/// ```
/// use latchfree::audit::{self, AuditLog, VerifyError};
///
/// let dir = tempfile::tempdir()?;
/// let log = AuditLog::open(dir.path())?;
/// log.log(&"login")?;
/// let exported = log.flush()?.expect("one record"); // kept elsewhere
/// log.log(&"logout")?;
/// log.close()?;
/// assert_eq!(audit::verify_to(dir.path(), "audit", None, exported)?.records, 2);
/// // The whole stream removed and a new one started: it verifies alone,
/// // but not against the exported head.
/// for file in audit::verify::stream_files(dir.path(), "audit")? {
///     std::fs::remove_file(file)?;
/// }
/// AuditLog::open(dir.path())?.close()?;
/// assert!(matches!(
///     audit::verify_to(dir.path(), "audit", None, exported),
///     Err(VerifyError::HeadNotReached { .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_to(
    dir: &Path,
    prefix: &str,
    start: Option<Head>,
    to: Head,
) -> Result<VerifyReport, VerifyError> {
    let start = start_or_anchor(dir, prefix, start)?;
    check_files(&stream_files(dir, prefix)?, start, Some(to))
}

/// Verifies `files`, in the order given, as consecutive pieces of one
/// stream: with `start`, the first record must follow that head; without,
/// it must be `seq` 0 with the all-zero `prev`. The report's head is where
/// the next piece must pick up, so a long-lived stream can be checked file
/// by file as it rotates (the files checked can then be shipped or removed)
/// and the chain still be held to every link.
///
/// ```
/// use latchfree::audit::{self, AuditLog, verify::stream_files};
///
/// let dir = tempfile::tempdir()?;
/// let log = AuditLog::builder(dir.path()).max_file_bytes(4096).open()?;
/// for n in 0..100 {
///     log.log(&serde_json::json!({"n": n}))?;
/// }
/// log.close()?;
/// let files = stream_files(dir.path(), "audit")?;
/// let (old, newest) = files.split_at(files.len() - 1);
/// let checked = audit::verify_files(old, None)?;
/// for f in old {
///     std::fs::remove_file(f)?; // shipped elsewhere, say
/// }
/// let rest = audit::verify_files(newest, checked.head)?;
/// assert_eq!(checked.records + rest.records, 100);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_files(files: &[PathBuf], start: Option<Head>) -> Result<VerifyReport, VerifyError> {
    check_files(files, start, None)
}

/// [`verify_files`], and with `to`, the chain must contain that record.
fn check_files(
    files: &[PathBuf],
    start: Option<Head>,
    to: Option<Head>,
) -> Result<VerifyReport, VerifyError> {
    // Each file on its own, in parallel with feature `parallel-verify`.
    #[cfg(feature = "parallel-verify")]
    let files_iter = files.par_iter();
    #[cfg(not(feature = "parallel-verify"))]
    let files_iter = files.iter();
    let wanted = Wanted {
        start: start.map(|h| h.seq),
        to: to.map(|h| h.seq),
    };
    let scans: Vec<FileScan> = files_iter
        .map(|path| scan_file(path, wanted))
        .collect::<Result<_, _>>()?;
    // A head to reach that is the start itself is reached.
    let mut reached = start.is_some() && start == to;
    let mut report = VerifyReport {
        files: files.len(),
        records: 0,
        gap_markers: 0,
        dropped: 0,
        head: start,
    };
    for (path, scan) in files.iter().zip(scans) {
        let broken = |line, problem| VerifyError::Broken {
            path: path.clone(),
            line,
            problem,
        };
        if let (Some(start), Some((line, hash))) = (start, scan.at_start)
            && hash != start.hash
        {
            let problem = Problem::HeadMismatch {
                seq: start.seq,
                expected: start.hash,
                found: hash,
            };
            return Err(broken(line, problem));
        }
        if let Some((line, seq, prev)) = scan.first {
            follow(report.head, seq, prev).map_err(|p| broken(line, p))?;
        }
        if let Some((line, problem)) = scan.error {
            return Err(broken(line, problem));
        }
        report.records += scan.records;
        report.gap_markers += scan.gap_markers;
        report.dropped += scan.dropped;
        if scan.first.is_some() {
            // A file with records after the start (all of them, without
            // one); one wholly at or before it leaves the head there.
            report.head = scan.last;
        }
        if let (Some(to), Some((line, hash))) = (to, scan.wanted) {
            if hash != to.hash {
                let problem = Problem::HeadMismatch {
                    seq: to.seq,
                    expected: to.hash,
                    found: hash,
                };
                return Err(broken(line, problem));
            }
            reached = true;
        }
    }
    match to {
        Some(head) if !reached => Err(VerifyError::HeadNotReached {
            head,
            reached: report.head,
        }),
        _ => Ok(report),
    }
}

/// Checks that a record `(seq, prev)` follows `previous` (or starts a chain).
fn follow(previous: Option<Head>, seq: u64, prev: ChainHash) -> Result<(), Problem> {
    let (expected_seq, expected_prev) = match previous {
        Some(head) => (head.seq + 1, head.hash),
        None => (0, ChainHash::GENESIS),
    };
    if seq != expected_seq {
        return Err(Problem::SeqGap {
            expected: expected_seq,
            found: seq,
        });
    }
    if prev != expected_prev {
        return Err(Problem::ChainBroken {
            expected: expected_prev,
            found: prev,
        });
    }
    Ok(())
}

/// The files of stream `prefix` in `dir`, in name order (other files are
/// ignored; see [`recover`](super::recover) for the names).
pub fn stream_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, VerifyError> {
    let files = super::recover::list(dir, prefix).map_err(|source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(files.into_iter().map(|(_, _, path)| path).collect())
}

/// The `seq`s whose hashes a scan reports.
#[derive(Clone, Copy)]
struct Wanted {
    /// The start head's: records up to it are not counted.
    start: Option<u64>,
    /// The head the chain must reach ([`verify_to`]).
    to: Option<u64>,
}

/// One file checked on its own.
struct FileScan {
    /// `(line, seq, prev)` of the first record after the start, to stitch to
    /// the previous file (or the start).
    first: Option<(usize, u64, ChainHash)>,
    /// The line and hash of the record at the start's `seq`.
    at_start: Option<(usize, ChainHash)>,
    /// The last good record.
    last: Option<Head>,
    records: u64,
    gap_markers: u64,
    dropped: u64,
    /// The first problem inside the file, with its line.
    error: Option<(usize, Problem)>,
    /// The line and hash of the record with the `seq` asked for.
    wanted: Option<(usize, ChainHash)>,
}

fn scan_file(path: &Path, wanted: Wanted) -> Result<FileScan, VerifyError> {
    use std::io::BufRead as _;
    let io_error = |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Streamed a line at a time: memory is one line (and the reader's
    // buffer) however large the file, so checking files in parallel costs
    // a few MiB, not a file's size per thread.
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut scan = FileScan {
        first: None,
        at_start: None,
        last: None,
        records: 0,
        gap_markers: 0,
        dropped: 0,
        error: None,
        wanted: None,
    };
    let mut line = Vec::with_capacity(1024);
    for number in 1.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io_error)? == 0 {
            break;
        }
        if line.pop() != Some(b'\n') {
            // The last line has no newline: a write was cut short.
            scan.error = Some((number, Problem::TornTail));
            break;
        }
        let record = match record::decode(&line) {
            Ok(record) => record,
            Err(e) => {
                scan.error = Some((number, e.into()));
                break;
            }
        };
        if let Some(last) = scan.last
            && let Err(problem) = follow(Some(last), record.seq, record.prev)
        {
            scan.error = Some((number, problem));
            break;
        }
        if wanted.start == Some(record.seq) {
            scan.at_start = Some((number, record.hash));
        }
        scan.last = Some(Head {
            seq: record.seq,
            hash: record.hash,
        });
        if wanted.to == Some(record.seq) {
            scan.wanted = Some((number, record.hash));
        }
        // Records up to the start are vouched for by it: only the link
        // from it is checked (above), and they are not counted.
        if wanted.start.is_some_and(|start| record.seq <= start) {
            continue;
        }
        if scan.first.is_none() {
            scan.first = Some((number, record.seq, record.prev));
        }
        scan.records += 1;
        if let Some(n) = record.gap {
            scan.gap_markers += 1;
            scan.dropped += n;
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Body, encode};
    use std::time::SystemTime;

    /// Writes `records` chained records over files of `per_file` records.
    fn write_stream(dir: &Path, records: u64, per_file: u64, gap_at: Option<u64>) -> Head {
        let mut prev = ChainHash::GENESIS;
        let mut buf = Vec::new();
        for seq in 0..records {
            let body = if Some(seq) == gap_at {
                Body::Gap(5)
            } else {
                Body::Event(br#"{"op":"call"}"#)
            };
            prev = encode(&mut buf, seq, SystemTime::UNIX_EPOCH, body, &prev);
            if (seq + 1) % per_file == 0 || seq + 1 == records {
                let name =
                    super::super::recover::file_name("audit", 20261123, (seq / per_file) as u32);
                std::fs::write(dir.join(name), &buf).unwrap();
                buf.clear();
            }
        }
        Head {
            seq: records - 1,
            hash: prev,
        }
    }

    fn lines_of(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
        std::fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    fn broken_at(result: Result<VerifyReport, VerifyError>) -> (String, usize, Problem) {
        match result {
            Err(VerifyError::Broken {
                path,
                line,
                problem,
            }) => (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                line,
                problem,
            ),
            other => panic!("expected a break, got {other:?}"),
        }
    }

    #[test]
    fn an_intact_stream_verifies_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let head = write_stream(dir.path(), 25, 10, Some(7));
        std::fs::write(dir.path().join("telemetry-20261123-000000.jsonl"), "junk").unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(
            report,
            VerifyReport {
                files: 3,
                records: 25,
                gap_markers: 1,
                dropped: 5,
                head: Some(head)
            }
        );
        // The other stream is checked on its own, and is broken.
        let telemetry = verify_from(dir.path(), "telemetry", None);
        assert!(matches!(
            broken_at(telemetry).2,
            Problem::TornTail | Problem::Record(_)
        ));
    }

    #[test]
    fn an_edited_line_is_the_first_break() {
        let dir = tempfile::tempdir().unwrap();
        write_stream(dir.path(), 25, 10, None);
        let file = dir.path().join("audit-20261123-000001.jsonl");
        let mut lines = lines_of(&file);
        lines[3] = lines[3].replace("call", "CALL");
        rewrite(&file, &lines);
        let (name, line, problem) = broken_at(verify(dir.path()));
        assert_eq!((name.as_str(), line), ("audit-20261123-000001.jsonl", 4));
        assert_eq!(problem, Problem::Record(RecordError::HashMismatch));
    }

    #[test]
    fn deleted_and_swapped_lines_break_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        write_stream(dir.path(), 20, 10, None);
        let file = dir.path().join("audit-20261123-000000.jsonl");
        let original = lines_of(&file);

        let mut deleted = original.clone();
        deleted.remove(4);
        rewrite(&file, &deleted);
        let (_, line, problem) = broken_at(verify(dir.path()));
        assert_eq!(
            (line, problem),
            (
                5,
                Problem::SeqGap {
                    expected: 4,
                    found: 5
                }
            )
        );

        let mut swapped = original.clone();
        swapped.swap(2, 3);
        rewrite(&file, &swapped);
        let (_, line, problem) = broken_at(verify(dir.path()));
        assert_eq!(
            (line, problem),
            (
                3,
                Problem::SeqGap {
                    expected: 2,
                    found: 3
                }
            )
        );
    }

    #[test]
    fn a_rewritten_record_with_a_recomputed_hash_breaks_the_next_link() {
        let dir = tempfile::tempdir().unwrap();
        write_stream(dir.path(), 10, 10, None);
        let file = dir.path().join("audit-20261123-000000.jsonl");
        let mut lines = lines_of(&file);
        let prev = record::decode(lines[5].as_bytes()).unwrap().prev;
        let mut forged = Vec::new();
        encode(
            &mut forged,
            5,
            SystemTime::UNIX_EPOCH,
            Body::Event(br#"{"op":"forged"}"#),
            &prev,
        );
        lines[5] = String::from_utf8(forged).unwrap().trim_end().to_owned();
        rewrite(&file, &lines);
        let (_, line, problem) = broken_at(verify(dir.path()));
        assert_eq!(line, 7);
        assert!(matches!(problem, Problem::ChainBroken { .. }));
    }

    #[test]
    fn a_missing_file_or_torn_tail_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let head = write_stream(dir.path(), 30, 10, None);
        std::fs::remove_file(dir.path().join("audit-20261123-000001.jsonl")).unwrap();
        let (name, line, problem) = broken_at(verify(dir.path()));
        assert_eq!((name.as_str(), line), ("audit-20261123-000002.jsonl", 1));
        assert_eq!(
            problem,
            Problem::SeqGap {
                expected: 10,
                found: 20
            }
        );

        let dir = tempfile::tempdir().unwrap();
        write_stream(dir.path(), 5, 10, None);
        let file = dir.path().join("audit-20261123-000000.jsonl");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.truncate(bytes.len() - 30);
        std::fs::write(&file, bytes).unwrap();
        let (_, line, problem) = broken_at(verify(dir.path()));
        assert_eq!((line, problem), (5, Problem::TornTail));
        let _ = head;
    }

    #[test]
    fn verification_can_start_at_an_exported_head() {
        let dir = tempfile::tempdir().unwrap();
        write_stream(dir.path(), 30, 10, None);
        let first = lines_of(&dir.path().join("audit-20261123-000000.jsonl"));
        let anchor = record::decode(first[9].as_bytes()).unwrap();
        std::fs::remove_file(dir.path().join("audit-20261123-000000.jsonl")).unwrap();
        assert!(verify(dir.path()).is_err());
        let start = Head {
            seq: anchor.seq,
            hash: anchor.hash,
        };
        let report = verify_from(dir.path(), "audit", Some(start)).unwrap();
        assert_eq!((report.files, report.records), (2, 20));
        assert!(matches!(
            verify_from(
                dir.path(),
                "audit",
                Some(Head {
                    seq: 9,
                    hash: ChainHash::GENESIS
                })
            ),
            Err(VerifyError::Broken { line: 1, .. })
        ));
    }

    /// The tampers a chain cannot see on its own are caught against an
    /// exported head; an intact stream that went on after it passes.
    #[test]
    fn an_exported_head_catches_a_cut_or_recomputed_tail() {
        let name = |n| super::super::recover::file_name("audit", 20261123, n);
        let fresh = || {
            let dir = tempfile::tempdir().unwrap();
            write_stream(dir.path(), 30, 10, None);
            let lines = lines_of(&dir.path().join(name(1)));
            let r = record::decode(lines[4].as_bytes()).unwrap();
            (
                dir,
                Head {
                    seq: r.seq,
                    hash: r.hash,
                },
            )
        };
        let (dir, exported) = fresh();
        assert_eq!(exported.seq, 14);
        let report = verify_to(dir.path(), "audit", None, exported).unwrap();
        assert_eq!(report.records, 30);

        // The newest files deleted, or the file holding the head cut at a
        // line boundary: the chain alone still verifies.
        std::fs::remove_file(dir.path().join(name(2))).unwrap();
        let file = dir.path().join(name(1));
        rewrite(&file, &lines_of(&file)[..4]);
        assert_eq!(verify(dir.path()).unwrap().records, 14);
        let err = verify_to(dir.path(), "audit", None, exported).unwrap_err();
        let VerifyError::HeadNotReached { head, reached } = err else {
            panic!("{err:?}");
        };
        assert_eq!((head, reached.map(|h| h.seq)), (exported, Some(13)));

        // The tail rewritten from seq 12 on with a recomputed chain.
        let (dir, exported) = fresh();
        let file = dir.path().join(name(1));
        let mut lines = lines_of(&file);
        let mut prev = record::decode(lines[1].as_bytes()).unwrap().hash;
        let mut forged = Vec::new();
        for seq in 12..20 {
            let body = Body::Event(br#"{"op":"forged"}"#);
            prev = encode(&mut forged, seq, SystemTime::UNIX_EPOCH, body, &prev);
        }
        lines.truncate(2);
        lines.extend(
            String::from_utf8(forged)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
        rewrite(&file, &lines);
        std::fs::remove_file(dir.path().join(name(2))).unwrap();
        assert_eq!(verify(dir.path()).unwrap().records, 20);
        let (file, line, problem) = broken_at(verify_to(dir.path(), "audit", None, exported));
        assert_eq!((file.as_str(), line), ("audit-20261123-000001.jsonl", 5));
        assert!(
            matches!(problem, Problem::HeadMismatch { seq: 14, .. }),
            "{problem:?}"
        );
    }

    #[test]
    fn an_unreadable_directory_is_an_io_error() {
        let missing = Path::new("/nonexistent/latchfree-audit");
        assert!(matches!(verify(missing), Err(VerifyError::Io { .. })));
    }
}
