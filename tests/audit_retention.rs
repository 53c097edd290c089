//! Retention of `latchfree::audit::AuditLog`: the writer removes the oldest
//! closed files beyond `max_files`, `max_total_bytes` and `max_age` (judged
//! by an injected clock: nothing sleeps), anchors the chain first, and what
//! remains verifies from the anchor, while a file removed by anyone else
//! still breaks the chain. A crash between writing the anchor and removing
//! the files leaves a directory that verifies.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use latchfree::audit::anchor::{anchor_path, read_anchor};
use latchfree::audit::record;
use latchfree::audit::verify::{Problem, stream_files};
use latchfree::audit::{AuditError, AuditLog, Head, VerifyError, verify, verify_from};
use latchfree::clock::ManualClock;

/// 2026-11-23T00:00:00Z.
fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000)
}

/// An event of about 100 bytes, so a 4 KiB file holds about 25 records.
fn event(n: u64) -> serde_json::Value {
    serde_json::json!({ "n": n, "pad": "x".repeat(20) })
}

fn log_events(log: &AuditLog, range: std::ops::Range<u64>) {
    for n in range {
        log.log(&event(n)).unwrap();
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    stream_files(dir, "audit").unwrap()
}

/// The `seq`s of the first and last records of `path`.
fn seq_range(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let seq = |line: &str| record::decode(line.as_bytes()).unwrap().seq;
    let first = seq(lines.next().unwrap());
    (first, lines.last().map_or(first, seq))
}

/// The head of the last record of `path`.
fn last_head(path: &Path) -> Head {
    let text = std::fs::read_to_string(path).unwrap();
    let r = record::decode(text.lines().last().unwrap().as_bytes()).unwrap();
    Head {
        seq: r.seq,
        hash: r.hash,
    }
}

fn broken(
    result: Result<latchfree::audit::VerifyReport, VerifyError>,
) -> (PathBuf, usize, Problem) {
    match result {
        Err(VerifyError::Broken {
            path,
            line,
            problem,
        }) => (path, line, problem),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

/// A stream of `total` events over 4 KiB files, kept to `max_files`.
fn stream_with_max_files(dir: &Path, total: u64, max_files: usize) -> AuditLog {
    let log = AuditLog::builder(dir)
        .max_file_bytes(4096)
        .max_files(max_files)
        .clock(ManualClock::new(start_time()))
        .open()
        .unwrap();
    for n in 0..total {
        // One at a time, so each turn's batch is one record and files
        // rotate at 4 KiB.
        log.log_wait(&event(n), latchfree::audit::Guarantee::Os)
            .unwrap();
    }
    log
}

#[test]
fn max_files_keeps_the_newest_and_verify_starts_from_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let log = stream_with_max_files(dir.path(), 400, 3);
    log.close().unwrap();
    let m = log.metrics();
    let kept = files(dir.path());
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(m.files > 3, "{m:?}");
    assert_eq!(m.files_removed, m.files - 3);
    // The anchor is the last record before the oldest file kept.
    let anchor = read_anchor(dir.path(), "audit").unwrap().unwrap();
    let (first, _) = seq_range(&kept[0]);
    assert_eq!(anchor.seq + 1, first);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.records, 400 - first);
    assert_eq!(report.head.map(|h| h.seq), Some(399));
    // The chain continues across a reopen without limits.
    let log = AuditLog::open(dir.path()).unwrap();
    log_events(&log, 400..410);
    log.close().unwrap();
    assert_eq!(verify(dir.path()).unwrap().records, 410 - first);
}

#[test]
fn a_file_removed_by_anyone_else_still_breaks_the_chain() {
    // The oldest remaining file.
    let dir = tempfile::tempdir().unwrap();
    stream_with_max_files(dir.path(), 400, 4).close().unwrap();
    let kept = files(dir.path());
    let (second_first, _) = seq_range(&kept[1]);
    let anchor = read_anchor(dir.path(), "audit").unwrap().unwrap();
    std::fs::remove_file(&kept[0]).unwrap();
    let (path, line, problem) = broken(verify(dir.path()));
    assert_eq!((path, line), (kept[1].clone(), 1));
    assert_eq!(
        problem,
        Problem::SeqGap {
            expected: anchor.seq + 1,
            found: second_first
        }
    );

    // A file in the middle.
    let dir = tempfile::tempdir().unwrap();
    stream_with_max_files(dir.path(), 400, 4).close().unwrap();
    let kept = files(dir.path());
    let (_, first_last) = seq_range(&kept[0]);
    let (third_first, _) = seq_range(&kept[2]);
    std::fs::remove_file(&kept[1]).unwrap();
    let (path, line, problem) = broken(verify(dir.path()));
    assert_eq!((path, line), (kept[2].clone(), 1));
    assert_eq!(
        problem,
        Problem::SeqGap {
            expected: first_last + 1,
            found: third_first
        }
    );

    // The anchor itself removed: the stream no longer starts at seq 0.
    let dir = tempfile::tempdir().unwrap();
    stream_with_max_files(dir.path(), 400, 4).close().unwrap();
    std::fs::remove_file(anchor_path(dir.path(), "audit")).unwrap();
    let (_, line, problem) = broken(verify(dir.path()));
    assert_eq!(line, 1);
    assert!(
        matches!(problem, Problem::SeqGap { expected: 0, .. }),
        "{problem:?}"
    );
}

#[test]
fn max_total_bytes_bounds_the_closed_files() {
    const LIMIT: u64 = 12 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::builder(dir.path())
        .max_file_bytes(4096)
        .max_total_bytes(LIMIT)
        .clock(ManualClock::new(start_time()))
        .open()
        .unwrap();
    for n in 0..600 {
        log.log_wait(&event(n), latchfree::audit::Guarantee::Os)
            .unwrap();
    }
    log.close().unwrap();
    let kept = files(dir.path());
    let len = |p: &PathBuf| std::fs::metadata(p).unwrap().len();
    let (newest, closed) = kept.split_last().unwrap();
    let closed_bytes: u64 = closed.iter().map(len).sum();
    // At the last rotation the closed files fit; the current one grows
    // past them until the next.
    assert!(closed_bytes <= LIMIT, "{closed_bytes}");
    // And no more went than needed: one more file would not have fit.
    let oldest_removed_would_fit = closed_bytes + 4096 <= LIMIT;
    assert!(
        !oldest_removed_would_fit || closed.len() < 2,
        "{closed_bytes}"
    );
    assert!(len(newest) > 0);
    assert!(log.metrics().files_removed > 0);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.head.map(|h| h.seq), Some(599));
}

#[test]
fn max_age_removes_files_by_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let log = AuditLog::builder(dir.path())
        .max_file_bytes(4096)
        .max_age(Duration::from_secs(3600))
        .clock(clock.clone())
        .open()
        .unwrap();
    for n in 0..200 {
        log.log_wait(&event(n), latchfree::audit::Guarantee::Os)
            .unwrap();
    }
    let before = files(dir.path()).len();
    assert!(before > 3, "{before}");
    // Half the age: nothing goes.
    clock.advance(Duration::from_secs(1800));
    log_events(&log, 200..201);
    log.flush().unwrap();
    assert_eq!(log.metrics().files_removed, 0);
    assert_eq!(files(dir.path()).len(), before);
    // Past it: every closed file goes, the one being written stays.
    clock.advance(Duration::from_secs(1801));
    log_events(&log, 201..202);
    log.flush().unwrap();
    assert_eq!(log.metrics().files_removed as usize, before - 1);
    let kept = files(dir.path());
    assert_eq!(kept.len(), 1);
    log.close().unwrap();
    let report = verify(dir.path()).unwrap();
    let (first, last) = seq_range(&kept[0]);
    assert_eq!((report.records, last), (last - first + 1, 201));
}

#[test]
fn nonsense_limits_are_refused_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-created");
    let setting = |r: Result<AuditLog, AuditError>| match r {
        Err(AuditError::InvalidSetting { setting, .. }) => setting,
        other => panic!("{other:?}"),
    };
    let b = || AuditLog::builder(&missing);
    assert_eq!(setting(b().max_files(0).open()), "max_files");
    assert_eq!(setting(b().max_total_bytes(0).open()), "max_total_bytes");
    assert_eq!(setting(b().max_age(Duration::ZERO).open()), "max_age");
    assert_eq!(
        setting(b().max_age(Duration::from_millis(999)).open()),
        "max_age"
    );
    assert!(!missing.exists());
}

/// The state a crash between the anchor's rename and the removals leaves:
/// the new anchor, and the files it covers still there.
#[test]
fn a_crash_between_anchoring_and_removing_leaves_a_stream_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    // Six files, no limits yet.
    let log = stream_with_max_files(dir.path(), 150, usize::MAX);
    log.close().unwrap();
    let all = files(dir.path());
    assert!(all.len() >= 6, "{}", all.len());
    // Anchored at the end of the third file, none removed yet.
    let anchor = last_head(&all[2]);
    let line = format!(
        "{{\"v\":1,\"seq\":{},\"hash\":\"{}\"}}\n",
        anchor.seq, anchor.hash
    );
    std::fs::write(anchor_path(dir.path(), "audit"), &line).unwrap();
    let report = verify(dir.path()).unwrap();
    assert_eq!(
        (report.files, report.records),
        (all.len(), 150 - anchor.seq - 1)
    );
    // Or the oldest one removed already.
    std::fs::remove_file(&all[0]).unwrap();
    assert_eq!(verify(dir.path()).unwrap().records, 150 - anchor.seq - 1);
    // The covered record's hash must be the anchored one.
    let forged = Head {
        seq: anchor.seq,
        hash: record::ChainHash([1; 32]),
    };
    let (path, _, problem) = broken(verify_from(dir.path(), "audit", Some(forged)));
    assert_eq!(path, all[2]);
    assert!(
        matches!(problem, Problem::HeadMismatch { .. }),
        "{problem:?}"
    );
    // Reopened with a limit, the writer finishes the removals.
    let log = AuditLog::builder(dir.path())
        .max_file_bytes(4096)
        .max_files(3)
        .open()
        .unwrap();
    log_events(&log, 150..151);
    log.flush().unwrap();
    assert_eq!(files(dir.path()).len(), 3);
    log.close().unwrap();
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.head.map(|h| h.seq), Some(150));
}
