//! The audit log behind a real `tracing_subscriber::fmt` subscriber: every
//! event becomes exactly one chained record, from many threads at once
//! (more than cores, a ring small enough that they wait for room); the
//! lossy mode accounts for every event as written or in a gap record; an
//! oversized event is marked and counted; nothing accepted is lost when the
//! handles are dropped without a `close`.
//!
//! Each thread installs its own subscriber with `with_default` (never the
//! global one), so tests run in parallel without seeing each other's events.

#![cfg(feature = "tracing")]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Barrier;
use std::thread;

use latchfree::audit::record;
use latchfree::audit::verify::stream_files;
use latchfree::audit::{AuditError, AuditLog, OnFull, TracingWriter, verify};

/// Every record of the `audit` stream in `dir`: `Ok(event)` or `Err(gap)`.
fn read_records(dir: &Path) -> Vec<Result<serde_json::Value, u64>> {
    let mut out = Vec::new();
    for file in stream_files(dir, "audit").unwrap() {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let record = record::decode(line.as_bytes()).unwrap();
            out.push(match (record.event, record.gap) {
                (Some(event), None) => Ok(event),
                (None, Some(gap)) => Err(gap),
                other => panic!("neither an event nor a gap: {other:?}"),
            });
        }
    }
    out
}

/// `fmt().json()` into `writer`, on this thread, while `f` runs.
fn with_json_subscriber(writer: &TracingWriter, f: impl FnOnce()) {
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
}

/// Emits producer `p`'s events `0..n` through `tracing`.
fn emit(p: u64, n: u64) {
    for i in 0..n {
        tracing::info!(p, i, user = "alice", "event");
    }
}

/// `(p, i)` of an event `emit` wrote, as `fmt().json()` formatted it.
fn producer_and_index(event: &serde_json::Value) -> (u64, u64) {
    let fields = &event["fields"];
    assert_eq!(fields["message"], "event", "{event}");
    assert_eq!(event["level"], "INFO", "{event}");
    (fields["p"].as_u64().unwrap(), fields["i"].as_u64().unwrap())
}

#[test]
fn events_from_many_threads_are_one_record_each_and_survive_a_plain_drop() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    // A ring of 8 slots: producers wait for room (lossless by default).
    let log = AuditLog::builder(dir.path()).capacity(8).open().unwrap();
    let writer = log.make_writer();
    let start = Barrier::new(THREADS as usize);
    thread::scope(|s| {
        for p in 0..THREADS {
            let (writer, start) = (&writer, &start);
            s.spawn(move || {
                with_json_subscriber(writer, || {
                    start.wait();
                    emit(p, PER_THREAD);
                });
            });
        }
    });
    let metrics = log.metrics();
    assert!(metrics.full_waits > 0, "the ring never filled: {metrics:?}");
    assert_eq!(writer.metrics(), Default::default());
    // No close: dropping the last handles drains the ring, and releases
    // the stream: it opens again where it ended.
    drop((log, writer));
    let reopened = AuditLog::open(dir.path()).unwrap();
    assert_eq!(
        reopened.close().unwrap().map(|h| h.seq),
        Some(THREADS * PER_THREAD - 1)
    );

    let report = verify(dir.path()).unwrap();
    assert_eq!(report.records, THREADS * PER_THREAD);
    assert_eq!(report.gap_markers, 0);
    // Each event exactly once, and each thread's in the order it emitted.
    let mut next: HashMap<u64, u64> = HashMap::new();
    for record in read_records(dir.path()) {
        let (p, i) = producer_and_index(&record.unwrap());
        let expected = next.entry(p).or_default();
        assert_eq!(i, *expected, "producer {p}");
        *expected += 1;
    }
    assert_eq!(next.len() as u64, THREADS);
    assert!(next.values().all(|&n| n == PER_THREAD), "{next:?}");
}

#[test]
fn close_writes_everything_accepted_while_the_subscriber_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    let writer = log.make_writer();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    emit(0, 500);
    // As with a global subscriber, which is never dropped.
    let head = log.close().unwrap().unwrap();
    assert_eq!(head.seq, 499);
    // After the close an event is refused, counted, and not written.
    emit(1, 1);
    assert_eq!(writer.metrics().failed, 1);
    assert_eq!(verify(dir.path()).unwrap().records, 500);
}

#[test]
fn the_dropping_mode_accounts_for_every_event_with_gap_records() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::builder(dir.path())
        .capacity(2)
        .on_full(OnFull::Drop)
        .open()
        .unwrap();
    let writer = log.make_writer();
    let start = Barrier::new(THREADS as usize);
    thread::scope(|s| {
        for p in 0..THREADS {
            let (writer, start) = (&writer, &start);
            s.spawn(move || {
                with_json_subscriber(writer, || {
                    start.wait();
                    emit(p, PER_THREAD);
                });
            });
        }
    });
    log.close().unwrap();
    let dropped = writer.metrics().dropped;
    let report = verify(dir.path()).unwrap();
    let records = read_records(dir.path());
    let written = records.iter().filter(|r| r.is_ok()).count() as u64;
    let gaps: u64 = records.iter().filter_map(|r| r.as_ref().err()).sum();
    assert!(dropped > 0, "a 2-slot ring never filled under 8 threads");
    assert_eq!(gaps, dropped);
    assert_eq!(report.dropped, dropped);
    assert_eq!(written + gaps, THREADS * PER_THREAD);
    assert_eq!(log.metrics().dropped, dropped);
    // Every event written is a distinct one that was emitted.
    let mut seen = std::collections::HashSet::new();
    for event in records.into_iter().flatten() {
        assert!(seen.insert(producer_and_index(&event)));
    }
}

#[test]
fn an_oversized_event_is_marked_counted_and_typed() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::builder(dir.path())
        .max_event_bytes(512)
        .open()
        .unwrap();
    let writer = log.make_writer();
    let huge = "x".repeat(10_000);
    with_json_subscriber(&writer, || {
        tracing::info!(p = 0u64, i = 0u64, "event");
        tracing::info!(blob = %huge, "too large");
        tracing::info!(p = 0u64, i = 1u64, "event");
    });
    // What `fmt` is handed back for it, called directly.
    let mut direct = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
    let line = format!("{{\"blob\":\"{huge}\"}}\n");
    let error = std::io::Write::write_all(&mut direct, line.as_bytes()).unwrap_err();
    drop(direct);
    assert!(matches!(
        AuditError::from_io(&error),
        Some(AuditError::TooLarge { max: 512 })
    ));
    log.close().unwrap();
    assert_eq!(writer.metrics().oversized, 2);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.records, 4);
    let records: Vec<_> = read_records(dir.path())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(producer_and_index(&records[0]), (0, 0));
    let marker = &records[1]["oversized_event"];
    assert!(marker["bytes"].as_u64().unwrap() > 10_000, "{marker}");
    assert_eq!(marker["max_event_bytes"], 512);
    assert_eq!(producer_and_index(&records[2]), (0, 1));
    assert_eq!(
        records[3]["oversized_event"]["bytes"],
        line.len() as u64 - 1
    );
}

#[test]
fn plain_text_lines_are_string_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.make_writer())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(user = "bob", "denied \"x\"");
        tracing::info!("second");
    });
    log.close().unwrap();
    assert_eq!(verify(dir.path()).unwrap().records, 2);
    let records = read_records(dir.path());
    let first = records[0].as_ref().unwrap().as_str().unwrap();
    assert!(first.contains("WARN"), "{first}");
    assert!(first.contains("denied \"x\""), "{first}");
    assert!(first.contains("user=\"bob\""), "{first}");
    let second = records[1].as_ref().unwrap().as_str().unwrap();
    assert!(second.ends_with("second"), "{second}");
}
