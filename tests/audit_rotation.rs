//! Rotation of `latchfree::audit::AuditLog` files, driven by a
//! `ManualClock`: a new file at UTC midnight, never an earlier day's name
//! when the clock steps back, a counter when a file reaches its size limit,
//! the chain unbroken across files and reopens, and record timestamps taken
//! from the clock.
//!
//! Nothing sleeps. The writer takes one timestamp at the start of each turn
//! (one per batch), so an event logged right after the clock moves may be
//! stamped in a turn that began before: with the old time, in the old file.
//! Each step therefore logs and flushes a *tick* first, whose time may be
//! either, and asserts on the events logged after it: the turn that takes
//! them starts after the tick's turn ended, and so after the clock moved.

use std::path::Path;
use std::time::{Duration, SystemTime};

use latchfree::audit::record::{self, Record, Timestamp};
use latchfree::audit::verify::stream_files;
use latchfree::audit::{AuditLog, verify};
use latchfree::clock::{Clock, ManualClock};

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

/// How the writer formats `time` in a record's `ts`.
fn ts(time: SystemTime) -> String {
    Timestamp::new(time).as_str().to_owned()
}

/// The stream's files in name order: `(name, records)`, every line decoded
/// (hash checked), every file ending with a newline.
fn read_files(dir: &Path) -> Vec<(String, Vec<Record>)> {
    stream_files(dir, "audit")
        .unwrap()
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{name} is torn");
            let records = bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| record::decode(l).unwrap())
                .collect();
            (name, records)
        })
        .collect()
}

fn names(files: &[(String, Vec<Record>)]) -> Vec<&str> {
    files.iter().map(|(name, _)| name.as_str()).collect()
}

/// The name and record of the event `{"step": step, "i": i}`.
fn find<'a>(files: &'a [(String, Vec<Record>)], step: &str, i: u64) -> (&'a str, &'a Record) {
    let wanted = serde_json::json!({ "step": step, "i": i });
    files
        .iter()
        .flat_map(|(name, records)| records.iter().map(move |r| (name.as_str(), r)))
        .find(|(_, r)| r.event.as_ref() == Some(&wanted))
        .unwrap_or_else(|| panic!("event {wanted} is in no file"))
}

/// `YYYYMMDD` of a record's `ts`.
fn ts_day(record: &Record) -> &str {
    let day = record.ts.get(..10).unwrap();
    assert_eq!(day.len(), 10);
    day
}

/// `YYYYMMDD` of a stream file name.
fn name_day(name: &str) -> String {
    name["audit-".len().."audit-".len() + 8].to_owned()
}

/// Logs `{"step": step, "i": 0..n}`, each followed by a flush (one record
/// per batch), after a flushed tick (see the module docs).
fn step(log: &AuditLog, step: &str, n: u64) {
    log.log(&serde_json::json!({ "tick": step })).unwrap();
    log.flush().unwrap();
    for i in 0..n {
        log.log(&serde_json::json!({ "step": step, "i": i }))
            .unwrap();
        log.flush().unwrap().expect("a head after a log");
    }
}

/// Asserts that the events of `step` are in file `name`, stamped `time`.
fn assert_step(files: &[(String, Vec<Record>)], step: &str, n: u64, name: &str, time: &str) {
    for i in 0..n {
        let (file, record) = find(files, step, i);
        assert_eq!((file, record.ts.as_str()), (name, time), "{step} {i}");
    }
}

/// The record's `ts` is one of `times`: a tick's turn may start before or
/// after the clock moved.
fn assert_tick(files: &[(String, Vec<Record>)], step: &str, times: &[&str]) {
    let wanted = serde_json::json!({ "tick": step });
    let (name, record) = files
        .iter()
        .flat_map(|(name, records)| records.iter().map(move |r| (name, r)))
        .find(|(_, r)| r.event.as_ref() == Some(&wanted))
        .unwrap_or_else(|| panic!("tick {step} is in no file"));
    assert!(
        times.contains(&record.ts.as_str()),
        "tick {step} in {name} at {}, expected one of {times:?}",
        record.ts
    );
}

/// Day files: records of 23 November go to `audit-20261123-000000.jsonl`;
/// once the clock passes UTC midnight the next batch goes to
/// `audit-20261124-000000.jsonl`; when the clock steps back to the 23rd,
/// records (stamped with the clock's time, the 23rd) stay in the file of
/// the 24th: no name for an earlier day than the current file's.
#[test]
fn a_new_file_each_utc_day_and_never_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let day1 = at("2026-11-23T23:59:58Z");
    let clock = ManualClock::new(day1);
    let log = AuditLog::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    // The first file is created by `open`, named for the clock's day.
    assert_eq!(
        names(&read_files(dir.path())),
        ["audit-20261123-000000.jsonl"]
    );
    step(&log, "day1", 3);

    clock.advance(Duration::from_secs(5));
    let day2 = clock.now();
    assert_eq!(ts(day2), "2026-11-24T00:00:03.000000Z");
    step(&log, "day2", 3);
    let files = read_files(dir.path());
    assert_eq!(
        names(&files),
        ["audit-20261123-000000.jsonl", "audit-20261124-000000.jsonl"]
    );

    let back = at("2026-11-23T12:00:00.123456789Z");
    clock.set(back);
    step(&log, "back", 3);
    // Forward again, within the 24th: still the same file.
    clock.set(day2 + Duration::from_secs(3600));
    step(&log, "later", 2);
    let head = log.close().unwrap().unwrap();

    let files = read_files(dir.path());
    assert_eq!(
        names(&files),
        ["audit-20261123-000000.jsonl", "audit-20261124-000000.jsonl"],
        "the clock stepping back made a file"
    );
    assert_eq!(log.metrics().files, 2);
    let (first, second) = ("audit-20261123-000000.jsonl", "audit-20261124-000000.jsonl");
    assert_step(&files, "day1", 3, first, "2026-11-23T23:59:58.000000Z");
    assert_step(&files, "day2", 3, second, "2026-11-24T00:00:03.000000Z");
    // Microseconds, truncated; the 23rd, but in the 24th's file.
    assert_step(&files, "back", 3, second, "2026-11-23T12:00:00.123456Z");
    assert_step(&files, "later", 2, second, "2026-11-24T01:00:03.000000Z");
    assert_tick(&files, "day1", &[&ts(day1)]);
    assert_tick(&files, "day2", &[&ts(day1), &ts(day2)]);
    assert_tick(&files, "back", &[&ts(day2), &ts(back)]);

    // Until the clock stepped back, each record is in its own day's file;
    // after, in a file no earlier than its day.
    for (name, records) in &files {
        for record in records {
            let day = ts_day(record).replace('-', "");
            assert!(
                name_day(name) >= day,
                "seq {} ({day}) in {name}",
                record.seq
            );
        }
    }
    assert!(files[0].1.iter().all(|r| ts_day(r) == "2026-11-23"));

    let report = verify(dir.path()).unwrap();
    assert_eq!(report.files, 2);
    assert_eq!(report.records, 4 + 3 + 3 + 3 + 2);
    assert_eq!(report.head, Some(head));
}

/// Size: with `max_file_bytes(4096)`, a file that reached 4096 bytes is
/// followed by the next counter value of the same day, the counter never
/// skips, the chain continues from file to file, and a clock stepping back
/// a day while files fill keeps the current day in the names.
#[test]
fn files_rotate_by_size_with_a_counter_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-11-23T10:00:00Z"));
    let log = AuditLog::builder(dir.path())
        .clock(clock.clone())
        .max_file_bytes(4096)
        .open()
        .unwrap();
    // About 250 bytes a line, one line per batch: about 17 lines a file.
    step(&log, "fill", 60);
    clock.set(at("2026-11-22T10:00:00Z"));
    step(&log, "back", 40);
    let head = log.close().unwrap().unwrap();

    let files = read_files(dir.path());
    assert!(files.len() >= 6, "{:?}", names(&files));
    for (n, (name, _)) in files.iter().enumerate() {
        assert_eq!(*name, format!("audit-20261123-{n:06}.jsonl"));
    }
    assert_eq!(log.metrics().files, files.len() as u64);
    let paths = stream_files(dir.path(), "audit").unwrap();
    for (i, path) in paths.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        let last_line = bytes[..bytes.len().saturating_sub(1)]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // Each file was under the limit before its last batch (one record).
        assert!(last_line < 4096, "{} had {last_line} bytes", path.display());
        if i + 1 < paths.len() {
            assert!(bytes.len() >= 4096, "{} rotated early", path.display());
        }
    }
    // The chain, file to file.
    let mut previous: Option<&Record> = None;
    for (name, records) in &files {
        for record in records {
            if let Some(p) = previous {
                assert_eq!((record.seq, record.prev), (p.seq + 1, p.hash), "{name}");
            }
            previous = Some(record);
        }
    }
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.files, files.len());
    assert_eq!(report.records, 1 + 60 + 1 + 40);
    assert_eq!(report.head, Some(head));
    for i in 0..40 {
        assert_eq!(find(&files, "back", i).1.ts, "2026-11-22T10:00:00.000000Z");
    }
}

/// Reopening on the same day appends to the newest file (no new file, `seq`
/// and the chain continue, nothing truncated); reopening on a later day
/// starts that day's file at counter 0.
#[test]
fn reopening_appends_to_the_newest_file_on_the_same_day() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-11-23T10:00:00Z"));
    let small = AuditLog::builder(dir.path())
        .clock(clock.clone())
        .max_file_bytes(4096)
        .open()
        .unwrap();
    step(&small, "first", 40);
    let first_head = small.close().unwrap().unwrap();
    drop(small);
    let before = read_files(dir.path());
    let sizes = |dir: &Path| -> Vec<u64> {
        stream_files(dir, "audit")
            .unwrap()
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect()
    };
    let sizes_before = sizes(dir.path());
    assert!(before.len() >= 2, "{:?}", names(&before));

    // Same day, a limit the newest file is under: append to it.
    clock.advance(Duration::from_secs(60));
    let log = AuditLog::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    assert_eq!(log.truncated_on_open(), 0);
    step(&log, "again", 3);
    let head = log.close().unwrap().unwrap();
    assert_eq!(log.metrics().files, 0, "reopening created a file");
    drop(log);

    let after = read_files(dir.path());
    assert_eq!(names(&after), names(&before), "reopening created a file");
    let sizes_after = sizes(dir.path());
    let last = sizes_after.len() - 1;
    assert_eq!(sizes_after[..last], sizes_before[..last]);
    assert!(sizes_after[last] > sizes_before[last]);
    let (newest, records) = after.last().unwrap();
    let old = &before.last().unwrap().1;
    assert_eq!(
        &records[..old.len()],
        &old[..],
        "the newest file was rewritten"
    );
    let appended = &records[old.len()..];
    assert_eq!(appended.len(), 4, "tick and 3 events in {newest}");
    assert_eq!(appended[0].seq, first_head.seq + 1);
    assert_eq!(appended[0].prev, first_head.hash);
    assert_eq!(head.seq, first_head.seq + 4);
    assert_step(&after, "again", 3, newest, "2026-11-23T10:01:00.000000Z");

    // A later day: a new file, counter 0, and the chain goes on.
    clock.advance(Duration::from_secs(86_400));
    let log = AuditLog::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    step(&log, "next", 1);
    let next_day = stream_files(dir.path(), "audit").unwrap();
    let newest = next_day.last().unwrap().file_name().unwrap().to_owned();
    assert_eq!(newest, "audit-20261124-000000.jsonl");
    let last_head = log.close().unwrap().unwrap();
    assert_eq!(last_head.seq, head.seq + 2);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.records, last_head.seq + 1);
    assert_eq!(report.head, Some(last_head));
    assert_eq!(report.files, before.len() + 1);
    let files = read_files(dir.path());
    assert_step(
        &files,
        "next",
        1,
        "audit-20261124-000000.jsonl",
        "2026-11-24T10:01:00.000000Z",
    );
}
