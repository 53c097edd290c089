//! Stress tests of `latchfree::audit::AuditLog` under contention, read back
//! from the files: more producers than cores, a ring small enough that they
//! wait for room (or, in the lossy mode, are refused), callers waiting for
//! `Os` and `Disk` while others only log, a concurrent `flush`, and two
//! streams sharing one directory and one `Stats` registry.
//!
//! Every event carries its producer and a per-producer counter, so reading
//! the files back tells exactly which events arrived, how often and in which
//! order. Nothing sleeps: threads start together at a barrier, and the ring
//! is made small so that the writer is the bottleneck.
//!
//! The last test runs the verifier model of `tests/model/audit_model.rs`
//! (shared with the cargo-fuzz target `fuzz/fuzz_targets/audit_files.rs`) on
//! seeded mutations of valid streams.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use latchfree::audit::record::{self, Record};
use latchfree::audit::verify::stream_files;
use latchfree::audit::{
    AuditError, AuditLog, AuditMetrics, Durability, Guarantee, OnFull, VerifyReport, verify,
    verify_from,
};
use latchfree::stats::Stats;

#[path = "model/audit_model.rs"]
mod audit_model;

#[path = "model/xorshift.rs"]
mod xorshift;

/// One logged event: producer `p`'s `i`-th (from 0).
#[derive(serde::Serialize)]
struct Event {
    p: u64,
    i: u64,
}

/// Every record of stream `prefix` in `dir`, decoded (hash checked), with
/// the index of the file it is in. Panics on a line that is not a record or
/// a file that does not end with a newline.
fn read_stream(dir: &Path, prefix: &str) -> Vec<(usize, Record)> {
    let files = stream_files(dir, prefix).unwrap();
    let mut records = Vec::new();
    for (f, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "{} does not end with a newline",
            path.display()
        );
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let record = record::decode(line).unwrap_or_else(|e| {
                panic!("{}:{}: {e}", path.display(), n + 1);
            });
            records.push((f, record));
        }
    }
    records
}

/// `(p, i)` of an event record (`None` for a gap marker).
fn event_of(record: &Record) -> Option<(u64, u64)> {
    let event = record.event.as_ref()?;
    let field = |name| {
        event[name]
            .as_u64()
            .unwrap_or_else(|| panic!("seq {}: no `{name}` in {event}", record.seq))
    };
    Some((field("p"), field("i")))
}

/// Checks what every stream must satisfy: `seq` runs from 0 without a hole,
/// each record's `prev` is the previous record's hash, and the verifier
/// agrees (same record, gap and drop counts, same head). Returns the report.
fn check_chain(dir: &Path, prefix: &str, records: &[(usize, Record)]) -> VerifyReport {
    let mut prev = record::ChainHash::GENESIS;
    for (seq, (_, record)) in (0u64..).zip(records) {
        assert_eq!(record.seq, seq, "seq out of order");
        assert_eq!(
            record.prev, prev,
            "seq {seq}: prev is not the previous hash"
        );
        prev = record.hash;
    }
    let report = verify_from(dir, prefix, None).unwrap();
    let gaps: Vec<u64> = records.iter().filter_map(|(_, r)| r.gap).collect();
    assert_eq!(report.records, records.len() as u64);
    assert_eq!(report.gap_markers, gaps.len() as u64);
    assert_eq!(report.dropped, gaps.iter().sum::<u64>());
    assert_eq!(
        report.head.map(|h| (h.seq, h.hash)),
        records.last().map(|(_, r)| (r.seq, r.hash))
    );
    report
}

/// Per producer, the counters of its events in file order.
fn events_by_producer(records: &[(usize, Record)], producers: u64) -> Vec<Vec<u64>> {
    let mut seen = vec![Vec::new(); producers as usize];
    for (_, record) in records {
        if let Some((p, i)) = event_of(record) {
            assert!(p < producers, "seq {}: unknown producer {p}", record.seq);
            seen[p as usize].push(i);
        }
    }
    seen
}

/// The sum of the stream's file sizes.
fn stream_bytes(dir: &Path, prefix: &str) -> u64 {
    stream_files(dir, prefix)
        .unwrap()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// `(seq, p, i)` of a line `{"v":2,"seq":S,"ts":"<27 bytes>","event":{"p":P,"i":I},"prev":…`:
/// the shape the writer gives an [`Event`]. Panics on any other line.
fn parse_event_line(line: &[u8]) -> (u64, u64, u64) {
    let bad = || -> ! { panic!("not an event line: {}", String::from_utf8_lossy(line)) };
    let mut rest = line;
    let skip = |rest: &mut &[u8], literal: &[u8]| match rest.strip_prefix(literal) {
        Some(tail) => *rest = tail,
        None => bad(),
    };
    skip(&mut rest, b"{\"v\":2,\"seq\":");
    let seq = number(&mut rest);
    skip(&mut rest, b",\"ts\":\"");
    rest = rest.get(27..).unwrap_or_else(|| bad());
    skip(&mut rest, b"\",\"event\":{\"p\":");
    let p = number(&mut rest);
    skip(&mut rest, b",\"i\":");
    let i = number(&mut rest);
    skip(&mut rest, b"},\"prev\":\"");
    (seq, p, i)
}

/// Parses the decimal digits at the start of `rest` and moves past them.
fn number(rest: &mut &[u8]) -> u64 {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    assert!(digits > 0, "no number at {}", String::from_utf8_lossy(rest));
    let n = std::str::from_utf8(&rest[..digits])
        .unwrap()
        .parse()
        .unwrap();
    *rest = &rest[digits..];
    n
}

const BLOCK_PRODUCERS: u64 = 8;
/// Events per producer in the lossless test: 8 × 125,000 = 1,000,000.
const BLOCK_EACH: u64 = 125_000;

/// 8 producers (on a 2-core machine) log 1,000,000 events through a 64-slot
/// ring with `OnFull::Block`: producers really wait for room
/// (`full_waits > 0`), and every event is in the files exactly once, each
/// producer's in its order, every line a valid record, the chain unbroken
/// across the rotated files.
///
/// In a debug build this takes 18 to 23 s on two cores: about 9 s to log
/// (the writer's SHA-256 and serde_json run unoptimised), 8 to 11 s for
/// `verify` to decode and check every line, 1 s to read the events back. In
/// a release build, about 2 s.
#[test]
fn block_mode_million_events_all_written_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::builder(dir.path())
        .capacity(64)
        // Rotate a few times on the way, so the chain is checked across files.
        .max_file_bytes(64 << 20)
        .open()
        .unwrap();
    let start = Barrier::new(BLOCK_PRODUCERS as usize);
    let began = Instant::now();
    thread::scope(|s| {
        for p in 0..BLOCK_PRODUCERS {
            let (log, start) = (&log, &start);
            s.spawn(move || {
                start.wait();
                for i in 0..BLOCK_EACH {
                    log.log(&Event { p, i }).unwrap();
                }
            });
        }
    });
    let logged = began.elapsed();
    let head = log.close().unwrap().expect("a million records");
    let closed = began.elapsed();
    let total = BLOCK_PRODUCERS * BLOCK_EACH;

    let metrics = log.metrics();
    assert_eq!(head.seq, total - 1);
    assert_eq!(metrics.enqueued, total);
    assert_eq!(metrics.written, total);
    assert_eq!((metrics.dropped, metrics.gap_records), (0, 0));
    assert!(metrics.full_waits > 0, "no producer waited: {metrics:?}");
    assert_eq!(metrics.bytes, stream_bytes(dir.path(), "audit"));

    // `verify` decodes every line (checking its hash) and the chain; the
    // events are then read with a cheap parser of the fixed record shape
    // (in a debug build, decoding a million lines again would double the
    // test's time).
    let report = verify(dir.path()).unwrap();
    let verified = began.elapsed();
    assert_eq!(report.records, total);
    assert_eq!(report.head, Some(head));
    assert_eq!(report.files as u64, metrics.files);
    assert!(report.files > 1, "expected rotation by size");
    assert_eq!(report.gap_markers, 0);
    let mut next = vec![0u64; BLOCK_PRODUCERS as usize];
    let mut seq = 0;
    for path in stream_files(dir.path(), "audit").unwrap() {
        let bytes = std::fs::read(&path).unwrap();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let (line_seq, p, i) = parse_event_line(line);
            assert_eq!(line_seq, seq);
            seq += 1;
            // In order and exactly once: producer `p`'s counters are
            // exactly 0, 1, 2, … in the files.
            assert!(p < BLOCK_PRODUCERS, "seq {line_seq}: producer {p}");
            assert_eq!(
                i, next[p as usize],
                "seq {line_seq}: producer {p}'s next event"
            );
            next[p as usize] += 1;
        }
    }
    assert_eq!(seq, total);
    assert!(next.iter().all(|&n| n == BLOCK_EACH), "{next:?}");
    println!(
        "block: {total} events; logged in {logged:?}, closed at {closed:?}, verified at \
         {verified:?}, read back at {:?}; {} files; {} full waits; {} batches",
        began.elapsed(),
        report.files,
        metrics.full_waits,
        metrics.batches,
    );
}

const DROP_PRODUCERS: u64 = 16;
const DROP_EACH: u64 = 20_000;
/// Each producer of the lossy test flushes after this many events.
const FLUSH_EVERY: u64 = 100;

/// 16 producers log through a 4-slot ring with `OnFull::Drop`, each
/// flushing now and then so that bursts of drops and accepted events
/// alternate: every event is either written (its `log` returned `Ok`) or
/// counted as dropped (its `log` returned `Err(Full)`), never both; the gap
/// markers in the files add up to the number of `Full` errors, which is what
/// the metrics and the verifier report; and the accepted events are in the
/// files exactly once, each producer's in its order.
#[test]
fn drop_mode_accounts_for_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::builder(dir.path())
        .on_full(OnFull::Drop)
        .capacity(4)
        .open()
        .unwrap();
    let start = Barrier::new(DROP_PRODUCERS as usize);
    // Per producer, the counters of the events `log` accepted.
    let accepted: Vec<Vec<u64>> = thread::scope(|s| {
        let handles: Vec<_> = (0..DROP_PRODUCERS)
            .map(|p| {
                let (log, start) = (&log, &start);
                s.spawn(move || {
                    start.wait();
                    let mut accepted = Vec::new();
                    for i in 0..DROP_EACH {
                        match log.log(&Event { p, i }) {
                            Ok(_) => accepted.push(i),
                            Err(AuditError::Full) => {}
                            Err(e) => panic!("producer {p}, event {i}: {e}"),
                        }
                        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
                            // Let the writer catch up, so that accepted
                            // events and drops alternate all run long
                            // (otherwise, in a release build, the producers
                            // can finish before the writer takes a batch).
                            log.flush().unwrap();
                        }
                    }
                    accepted
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    log.close().unwrap();
    let logged = DROP_PRODUCERS * DROP_EACH;
    let ok: u64 = accepted.iter().map(|a| a.len() as u64).sum();
    let full = logged - ok;

    let metrics = log.metrics();
    assert!(full > 0, "nothing was dropped: the test did not test drops");
    assert!(ok > 0, "nothing was accepted");
    assert_eq!(metrics.enqueued, ok);
    assert_eq!(metrics.written, ok);
    assert_eq!(metrics.dropped, full);
    assert_eq!(metrics.written + metrics.dropped, logged);
    assert_eq!(metrics.full_waits, 0, "the lossy mode never waits");

    let records = read_stream(dir.path(), "audit");
    let report = check_chain(dir.path(), "audit", &records);
    let events = records.iter().filter(|(_, r)| r.event.is_some()).count() as u64;
    assert_eq!(events, ok, "events in the files");
    assert_eq!(report.dropped, full, "the gap markers' sum");
    assert_eq!(events + report.dropped, logged);
    assert_eq!(report.gap_markers, metrics.gap_records);
    assert!(
        records.iter().all(|(_, r)| r.gap != Some(0)),
        "an empty gap marker"
    );
    assert_eq!(events_by_producer(&records, DROP_PRODUCERS), accepted);
    println!(
        "drop: {logged} logged, {ok} written, {full} dropped in {} gap markers",
        report.gap_markers
    );
}

/// The tail of a file, read as it grows: each `read_new` returns only the
/// bytes appended since the previous call.
struct Follower {
    file: File,
    seen: usize,
    buffer: Vec<u8>,
}

impl Follower {
    fn new(path: &Path) -> Self {
        Self {
            file: File::open(path).unwrap(),
            seen: 0,
            buffer: Vec::new(),
        }
    }

    fn read_new(&mut self) -> &[u8] {
        self.seen = self.buffer.len();
        self.file.read_to_end(&mut self.buffer).unwrap();
        &self.buffer[self.seen..]
    }
}

/// Sets its flag when dropped, including while unwinding.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        // Release: the flusher's Acquire load then sees every producer's
        // last store.
        self.0.store(true, Ordering::Release);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const WAIT_EACH: u64 = 300;
const ASYNC_EACH: u64 = 3_000;

/// Producer `p` of the waiters test: logs `each` events, waiting for
/// `wait` if given, and after each `log` returns, publishes how many have.
/// After a wait it reads what was appended to the file since its previous
/// read: the event was logged after that read, so it must be there.
fn waiting_producer(
    log: &AuditLog,
    path: &Path,
    p: u64,
    wait: Option<Guarantee>,
    logged: &AtomicU64,
) {
    let mut follower = Follower::new(path);
    let each = if wait.is_some() {
        WAIT_EACH
    } else {
        ASYNC_EACH
    };
    for i in 0..each {
        match wait {
            Some(guarantee) => {
                log.log_wait(&Event { p, i }, guarantee).unwrap();
                let line = format!(r#""event":{{"p":{p},"i":{i}}},"prev""#);
                assert!(
                    contains(follower.read_new(), line.as_bytes()),
                    "{guarantee} wait returned, but event ({p}, {i}) is not in the file"
                );
                if guarantee == Guarantee::Disk {
                    assert!(log.metrics().fsyncs > 0, "Disk without an fsync");
                }
            }
            None => {
                log.log(&Event { p, i }).unwrap();
            }
        }
        // Release: the flusher's Acquire load then knows that this `log`
        // returned before its `flush` began.
        logged.store(i + 1, Ordering::Release);
    }
}

/// The flusher of the waiters test: until `done`, notes how many events
/// each producer has logged, flushes, and checks that the returned head is
/// a line of the file. Returns what each flush saw before it began, and the
/// `seq` of the head it returned.
fn flusher(
    log: &AuditLog,
    path: &Path,
    logged: &[AtomicU64],
    done: &AtomicBool,
) -> Vec<(Vec<u64>, u64)> {
    let mut follower = Follower::new(path);
    // `seq` → hash of every whole line read so far.
    let mut hashes = HashMap::new();
    let mut partial = Vec::new();
    let mut flushes = Vec::new();
    while !done.load(Ordering::Acquire) {
        let before: Vec<u64> = logged.iter().map(|n| n.load(Ordering::Acquire)).collect();
        let head = log.flush().unwrap();
        partial.extend_from_slice(follower.read_new());
        let whole = partial
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        for line in partial[..whole].split(|&b| b == b'\n') {
            if !line.is_empty() {
                let r = record::decode(line).unwrap();
                hashes.insert(r.seq, r.hash);
            }
        }
        partial.drain(..whole);
        let Some(head) = head else {
            assert!(before.iter().all(|&n| n == 0), "no head after a log");
            continue;
        };
        assert_eq!(
            hashes.get(&head.seq),
            Some(&head.hash),
            "flush returned head {}, which is not in the file",
            head.seq
        );
        flushes.push((before, head.seq));
    }
    flushes
}

/// With `Durability::None`, threads that `log_wait(Os)` and `log_wait(Disk)`
/// run next to threads that only `log` and a thread that `flush`es:
///
/// * when `log_wait` returns, the event is in the file (read back through
///   another handle); for `Disk`, an fsync has happened (the mode never
///   fsyncs on its own);
/// * `flush` returns a head whose line is in the file, and whose `seq` is at
///   least that of every event whose `log` returned before `flush` began.
#[test]
fn waiters_find_their_event_in_the_file_and_flush_covers_earlier_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::builder(dir.path())
        .durability(Durability::None)
        .capacity(16)
        .open()
        .unwrap();
    let path = stream_files(dir.path(), "audit").unwrap().remove(0);
    // Producers 0, 1 wait for Os; 2, 3 for Disk; 4, 5 only log.
    let waits = [
        Some(Guarantee::Os),
        Some(Guarantee::Os),
        Some(Guarantee::Disk),
        Some(Guarantee::Disk),
        None,
        None,
    ];
    // Per producer, how many of its `log` calls have returned.
    let logged: Vec<AtomicU64> = waits.iter().map(|_| AtomicU64::new(0)).collect();
    let done = AtomicBool::new(false);
    let start = Barrier::new(waits.len() + 1);
    let flushes = thread::scope(|s| {
        let producers: Vec<_> = (0u64..)
            .zip(waits)
            .map(|(p, wait)| {
                let (log, path, logged, start) = (&log, &path, &logged[p as usize], &start);
                s.spawn(move || {
                    start.wait();
                    waiting_producer(log, path, p, wait, logged);
                })
            })
            .collect();
        let flusher = s.spawn(|| {
            start.wait();
            flusher(&log, &path, &logged, &done)
        });
        // Stops the flusher however this ends: a producer that fails an
        // assertion must fail the test, not leave the flusher running.
        let stop = StopOnDrop(&done);
        for producer in producers {
            producer.join().unwrap();
        }
        drop(stop);
        flusher.join().unwrap()
    });
    let metrics = log.metrics();
    log.close().unwrap();

    let records = read_stream(dir.path(), "audit");
    check_chain(dir.path(), "audit", &records);
    // Each producer's events, in order and once; and where they are.
    let mut seq_of = HashMap::new();
    for (_, record) in &records {
        let (p, i) = event_of(record).expect("no drops in this mode");
        assert!(
            seq_of.insert((p, i), record.seq).is_none(),
            "({p}, {i}) twice"
        );
    }
    for (p, wait) in waits.iter().enumerate() {
        let each = if wait.is_some() {
            WAIT_EACH
        } else {
            ASYNC_EACH
        };
        let seqs: Vec<u64> = (0..each)
            .map(|i| {
                *seq_of
                    .get(&(p as u64, i))
                    .unwrap_or_else(|| panic!("({p}, {i}) missing"))
            })
            .collect();
        assert!(seqs.is_sorted(), "producer {p}'s events out of order");
    }
    assert_eq!(seq_of.len(), records.len());
    assert!(!flushes.is_empty());
    for (before, head) in &flushes {
        for (p, &n) in before.iter().enumerate() {
            if n > 0 {
                let seq = seq_of[&(p as u64, n - 1)];
                assert!(
                    *head >= seq,
                    "flush returned seq {head}, but ({p}, {}) at seq {seq} was logged before",
                    n - 1
                );
            }
        }
    }
    // `Durability::None` fsyncs only for `Disk` waiters: at most twice for
    // each (once in a turn that took its batch before the waiter asked, once
    // for the batch with its record), and fewer when waiters share one.
    let disk_waits = 2 * WAIT_EACH;
    assert!(metrics.fsyncs > 0);
    assert!(metrics.fsyncs <= 2 * disk_waits, "{metrics:?}");
    println!(
        "waiters: {} flushes, {} fsyncs for {} Disk waits, {} batches",
        flushes.len(),
        metrics.fsyncs,
        disk_waits,
        metrics.batches
    );
}

const STREAM_THREADS: u64 = 4;
const STREAM_EACH: u64 = 5_000;

/// An audit stream and a telemetry stream in one directory, written at once
/// by the same threads, with their counters in one `Stats`: each stream
/// verifies on its own, holds exactly its own events, and the counters in
/// the registry are the streams' metrics.
#[test]
fn audit_and_telemetry_share_a_directory_and_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let stats = Stats::new();
    let audit = AuditLog::builder(dir.path())
        .capacity(8)
        .stats(&stats)
        .open()
        .unwrap();
    let telemetry = AuditLog::telemetry(dir.path())
        .capacity(4)
        .stats(&stats)
        .open()
        .unwrap();
    let start = Barrier::new(STREAM_THREADS as usize);
    let telemetry_accepted: Vec<Vec<u64>> = thread::scope(|s| {
        let handles: Vec<_> = (0..STREAM_THREADS)
            .map(|p| {
                let (audit, telemetry, start) = (&audit, &telemetry, &start);
                s.spawn(move || {
                    start.wait();
                    let mut accepted = Vec::new();
                    for i in 0..STREAM_EACH {
                        audit.log(&Event { p, i }).unwrap();
                        match telemetry.log(&Event { p, i }) {
                            Ok(_) => accepted.push(i),
                            Err(AuditError::Full) => {}
                            Err(e) => panic!("telemetry ({p}, {i}): {e}"),
                        }
                    }
                    accepted
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    audit.close().unwrap();
    telemetry.close().unwrap();

    let logged = STREAM_THREADS * STREAM_EACH;
    let audit_records = read_stream(dir.path(), "audit");
    let report = check_chain(dir.path(), "audit", &audit_records);
    assert_eq!(report, verify(dir.path()).unwrap());
    assert_eq!((report.records, report.dropped), (logged, 0));
    let all: Vec<Vec<u64>> = (0..STREAM_THREADS)
        .map(|_| (0..STREAM_EACH).collect())
        .collect();
    assert_eq!(events_by_producer(&audit_records, STREAM_THREADS), all);

    let telemetry_records = read_stream(dir.path(), "telemetry");
    let report = check_chain(dir.path(), "telemetry", &telemetry_records);
    let ok: u64 = telemetry_accepted.iter().map(|a| a.len() as u64).sum();
    assert_eq!(report.records - report.gap_markers, ok);
    assert_eq!(report.dropped, logged - ok);
    assert_eq!(
        events_by_producer(&telemetry_records, STREAM_THREADS),
        telemetry_accepted
    );

    let snapshot = stats.snapshot();
    for (prefix, log) in [("audit", &audit), ("telemetry", &telemetry)] {
        let m = log.metrics();
        assert_eq!(m.bytes, stream_bytes(dir.path(), prefix), "{prefix}");
        let AuditMetrics {
            enqueued: _,
            written,
            dropped,
            gap_records,
            batches,
            bytes,
            fsyncs,
            full_waits,
            write_errors,
            files,
            // `AuditMetrics` is #[non_exhaustive]: a field added later must
            // be added to this list by hand.
            ..
        } = m;
        for (name, value) in [
            ("records_written", written),
            ("events_dropped", dropped),
            ("gap_records", gap_records),
            ("batches", batches),
            ("bytes_written", bytes),
            ("fsyncs", fsyncs),
            ("full_waits", full_waits),
            ("write_errors", write_errors),
            ("files_created", files),
        ] {
            let name = format!("{prefix}_{name}_total");
            assert_eq!(snapshot.counter(&name), Some(value), "{name}");
        }
    }
    println!(
        "streams: audit waited {} times for room; telemetry dropped {} of {logged}",
        audit.metrics().full_waits,
        telemetry.metrics().dropped
    );
    // Both policies were exercised (thousands of times in a debug build).
    assert!(
        audit.metrics().full_waits > 0,
        "the audit ring never filled"
    );
    assert!(telemetry.metrics().dropped > 0, "telemetry never dropped");
}

/// Seeds of [`verifier_agrees_with_the_model_on_mutated_streams`].
const MODEL_SEEDS: u64 = 400;

/// The cargo-fuzz target `audit_files`'s check on seeded input: valid
/// streams, mutated (bytes flipped, lines deleted, duplicated, swapped or
/// re-forged with a valid hash, files truncated), split over 1 to 3 files:
/// `verify` accepts exactly the streams the model accepts, with the model's
/// counts, and `scan_tail` finds each file's last whole line.
#[test]
fn verifier_agrees_with_the_model_on_mutated_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut accepted = 0;
    for seed in 0..MODEL_SEEDS {
        let mut rng = xorshift::XorShift::new(seed);
        let input = audit_model::Input::random(&mut || rng.next());
        if audit_model::run(dir.path(), &input) {
            accepted += 1;
        }
    }
    // Both outcomes are exercised: some inputs stay valid, most break.
    assert!(
        accepted > 0 && accepted < MODEL_SEEDS,
        "{accepted} accepted"
    );
    println!("model: {accepted} of {MODEL_SEEDS} mutated streams verify");
}

/// Torn-tail recovery against the format's spec: valid streams (seeded),
/// torn at every byte offset and after every whole line with garbage, keep
/// exactly the whole lines before the tear and resume from the last one.
#[test]
fn torn_tails_are_cut_where_the_spec_says() {
    let mut checked = 0;
    for seed in 0..24 {
        let mut rng = xorshift::XorShift::new(seed);
        let specs: Vec<audit_model::Spec> = (0..rng.next() % 12)
            .map(|_| match rng.next() % 3 {
                0 => audit_model::Spec::Gap((rng.next() % 100) as u16),
                1 => audit_model::Spec::Text("a\nb \u{e9}".into()),
                _ => audit_model::Spec::Number(rng.next() as u32),
            })
            .collect();
        checked += audit_model::check_torn_tails(&specs);
    }
    assert!(checked > 10_000, "{checked} cases");
}
