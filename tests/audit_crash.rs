//! Crash recovery with a real `SIGKILL`.
//!
//! The test re-executes its own binary as a child process (the `crash_child`
//! test, which does nothing unless the parent's environment variables are
//! set). The child logs from three threads with [`Durability::Batch`] and,
//! each time a `flush` or a `log_wait(.., Guarantee::Disk)` returns `Ok`,
//! prints what is now acknowledged. The parent reads those lines until
//! enough events are acknowledged, kills the child with `SIGKILL` in the
//! middle of its work, and then checks what a crash must leave behind:
//!
//! * every acknowledged event is in the files, exactly once, and each
//!   thread's events are a gap-free prefix of what it logged;
//! * every head a `flush` returned is in the files with the same hash;
//! * after a torn line is appended to the newest file (a crash mid-write, on
//!   top of whatever the kill left), `open` truncates exactly the torn bytes
//!   and the whole stream verifies;
//! * logging resumes: `seq` continues from the last whole record and the
//!   chain verifies across the crash.
//!
//! Three crashes in a row hit one directory, each at a different moment, so
//! later runs also recover a stream that was already recovered before. Files
//! rotate every 64 KiB, so some kills land right after a rotation.
//!
//! Nothing sleeps: the parent waits on the child's output with a deadline
//! (a watchdog against a wedged child, not a timing assumption).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use latchfree::audit::record::{self, ChainHash, Record};
use latchfree::audit::verify::stream_files;
use latchfree::audit::{AuditBuilder, AuditLog, Durability, Guarantee, Head, verify};
use latchfree::clock::ManualClock;

/// The directory the child logs to; the child does nothing without it.
const CHILD_DIR: &str = "LATCHFREE_CRASH_CHILD_DIR";
/// Which crash this is (tags the child's events).
const CHILD_RUN: &str = "LATCHFREE_CRASH_CHILD_RUN";
/// Threads logging in the child.
const THREADS: u64 = 3;
/// Small files, so the stream rotates and a kill can land near a rotation.
const MAX_FILE_BYTES: u64 = 64 << 10;
/// A record cut short: no newline, as a crash mid-write leaves it.
const TORN: &[u8] =
    br#"{"v":2,"seq":999999,"ts":"2026-11-18T00:00:00.000000Z","event":{"run":9,"t":0,"i":"#;
/// How long the parent waits for one line from the child before it gives up.
const WATCHDOG: Duration = Duration::from_secs(60);

/// Both processes stamp records with the same fixed day, so file names do
/// not depend on when the test runs (no day rollover mid-test).
fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000))
}

fn builder(dir: &Path) -> AuditBuilder {
    AuditLog::builder(dir)
        .durability(Durability::Batch)
        .max_file_bytes(MAX_FILE_BYTES)
        .clock(clock())
}

/// Event `i` of thread `t` in crash `run`; the padding varies the line
/// length, so kills and rotations cut the stream at varying offsets.
fn event(run: u64, t: u64, i: u64) -> serde_json::Value {
    serde_json::json!({"run": run, "t": t, "i": i, "pad": "x".repeat((i * 7 % 61) as usize)})
}

/// The child: logs until it is killed. Each line it prints is a promise:
/// `ack T N SEQ HASH` says thread `T`'s events `0..N` are fsynced and the
/// record `SEQ` with hash `HASH` is too (`-` for both after a `log_wait`,
/// which gives no head).
#[test]
#[ignore = "child process of `sigkill_loses_no_acknowledged_event`; does nothing on its own"]
fn crash_child() {
    let (Some(dir), Ok(run)) = (std::env::var_os(CHILD_DIR), std::env::var(CHILD_RUN)) else {
        return;
    };
    let run: u64 = run.parse().expect("run number");
    let log = builder(Path::new(&dir)).open().expect("child: open");
    let stdout = Mutex::new(std::io::stdout());
    // libtest has printed `test crash_child ... ` without a newline.
    writeln!(stdout.lock().unwrap()).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (log, stdout) = (&log, &stdout);
            s.spawn(move || {
                let mut i = 0;
                for round in 0u64.. {
                    // A bound in case the parent is gone without killing us.
                    assert!(i < 5_000_000, "child: never killed");
                    let burst = 1 + (round * 5 + t) % 8;
                    for _ in 1..burst {
                        log.log(&event(run, t, i)).expect("child: log");
                        i += 1;
                    }
                    let line = if round % 3 == 2 {
                        log.log_wait(&event(run, t, i), Guarantee::Disk)
                            .expect("child: log_wait");
                        i += 1;
                        format!("ack {t} {i} - -\n")
                    } else {
                        log.log(&event(run, t, i)).expect("child: log");
                        i += 1;
                        let head = log.flush().expect("child: flush").expect("not empty");
                        format!("ack {t} {i} {} {}\n", head.seq, head.hash)
                    };
                    // One write per line (shorter than PIPE_BUF): the parent
                    // never sees half a promise.
                    let mut out = stdout.lock().unwrap_or_else(|p| p.into_inner());
                    if out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        std::process::exit(2); // The parent is gone.
                    }
                }
            });
        }
    });
}

/// What the child acknowledged before it was killed.
#[derive(Default, Debug)]
struct Acks {
    /// Per thread: events `0..n` are on disk.
    events: [u64; THREADS as usize],
    /// Heads `flush` returned.
    heads: Vec<Head>,
}

impl Acks {
    fn total(&self) -> u64 {
        self.events.iter().sum()
    }

    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("ack ") else {
            return; // libtest's own output
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        assert_eq!(fields.len(), 4, "bad ack line {line:?}");
        let t: usize = fields[0].parse().unwrap();
        let n: u64 = fields[1].parse().unwrap();
        assert!(n >= self.events[t], "acks of a thread only grow: {line:?}");
        self.events[t] = n;
        if fields[2] != "-" {
            self.heads.push(Head {
                seq: fields[2].parse().unwrap(),
                hash: ChainHash::from_hex(fields[3]).expect("hash"),
            });
        }
    }
}

/// Runs the child for crash `run` and kills it once it has acknowledged at
/// least `kill_after` events; returns every acknowledgement it printed,
/// including those printed between the decision and the kill.
fn run_and_kill(dir: &Path, run: u64, kill_after: u64) -> Acks {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--ignored"])
        .args(["--test-threads", "1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_RUN, run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let (lines_tx, lines) = mpsc::channel();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                // A line without its newline is dropped: the process died
                // while printing it, so it promised nothing.
                Ok(0) | Err(_) => return,
                Ok(_) if !line.ends_with(b"\n") => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if lines_tx.send(text).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut acks = Acks::default();
    let started = Instant::now();
    while acks.total() < kill_after {
        match lines.recv_timeout(WATCHDOG) {
            Ok(line) => acks.add(&line),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "child stopped acknowledging after {} events ({e}); stderr:\n{}",
                    acks.total(),
                    stderr.join().unwrap()
                );
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    reader.join().unwrap();
    for line in lines.try_iter() {
        acks.add(&line);
    }
    let stderr = stderr.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die by SIGKILL, not exit ({status}); stderr:\n{stderr}"
    );
    eprintln!(
        "run {run}: killed after {} acknowledged events ({} heads) in {:?}",
        acks.total(),
        acks.heads.len(),
        started.elapsed()
    );
    acks
}

/// The stream's files in order, and the bytes after the last newline of
/// each (a torn tail).
fn files_and_tails(dir: &Path) -> Vec<(PathBuf, Vec<u8>, usize)> {
    stream_files(dir, "audit")
        .unwrap()
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let torn = bytes.len() - whole;
            (path, bytes, torn)
        })
        .collect()
}

/// Every whole line of the stream, decoded (each line's own hash checked).
fn whole_records(dir: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    for (path, bytes, torn) in files_and_tails(dir) {
        let whole = &bytes[..bytes.len() - torn];
        for (n, line) in whole.split_inclusive(|&b| b == b'\n').enumerate() {
            let line = &line[..line.len() - 1];
            let record = record::decode(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), n + 1));
            records.push(record);
        }
    }
    records
}

fn field(event: &serde_json::Value, name: &str) -> Option<u64> {
    event.get(name).and_then(serde_json::Value::as_u64)
}

/// Checks what the kill left against what the child acknowledged; returns
/// how many of this run's events are in the files.
fn check_acknowledged(records: &[Record], run: u64, acks: &Acks) -> u64 {
    // Per thread, the event numbers in file order: a gap-free prefix
    // `0..n`, each once, with `n` at least what was acknowledged.
    let mut found: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for record in records {
        let event = record
            .event
            .as_ref()
            .expect("no gap records (lossless policy)");
        if field(event, "run") == Some(run) && event.get("resume").is_none() {
            let t = field(event, "t").unwrap();
            found.entry(t).or_default().push(field(event, "i").unwrap());
        }
    }
    let mut in_files = 0;
    for t in 0..THREADS {
        let ids = found.remove(&t).unwrap_or_default();
        in_files += ids.len() as u64;
        let acked = acks.events[t as usize];
        assert!(
            ids.len() as u64 >= acked,
            "run {run} thread {t}: {acked} events acknowledged, {} in the files",
            ids.len()
        );
        let prefix: Vec<u64> = (0..ids.len() as u64).collect();
        assert!(
            ids == prefix,
            "run {run} thread {t}: events are not 0..{} in order, each once",
            ids.len()
        );
    }
    assert!(found.is_empty(), "events of unknown threads: {found:?}");
    // Every head a flush returned is in the files, unchanged.
    let hash_of: HashMap<u64, ChainHash> = records.iter().map(|r| (r.seq, r.hash)).collect();
    for head in &acks.heads {
        assert_eq!(
            hash_of.get(&head.seq),
            Some(&head.hash),
            "run {run}: acknowledged head {} is not in the files",
            head.seq
        );
    }
    in_files
}

#[test]
fn sigkill_loses_no_acknowledged_event() {
    const RESUMED: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for (run, kill_after) in [(0, 2000), (1, 2700), (2, 3500)] {
        let acks = run_and_kill(dir, run, kill_after);
        let files = files_and_tails(dir);
        let (newest, _, left_torn) = files.last().expect("the child created a file");
        for (path, _, torn) in &files[..files.len() - 1] {
            assert_eq!(
                *torn,
                0,
                "{}: only the newest file may be torn",
                path.display()
            );
        }
        eprintln!(
            "run {run}: {} files, the kill left {left_torn} torn bytes",
            files.len()
        );
        let left_torn = *left_torn as u64;
        // A second crash, mid-write, on top of whatever the kill left.
        std::fs::OpenOptions::new()
            .append(true)
            .open(newest)
            .unwrap()
            .write_all(TORN)
            .unwrap();

        let records = whole_records(dir);
        let in_files = check_acknowledged(&records, run, &acks);
        eprintln!(
            "run {run}: {in_files} events in the files, {} acknowledged; newest file {} bytes before the torn line",
            acks.total(),
            files.last().map_or(0, |f| f.1.len())
        );
        let last_seq = records.last().expect("records").seq;
        assert_eq!(
            last_seq + 1,
            records.len() as u64,
            "seq numbers every record"
        );

        let log = builder(dir).open().expect("reopen after the crash");
        assert_eq!(
            log.truncated_on_open(),
            left_torn + TORN.len() as u64,
            "run {run}: exactly the torn bytes are truncated"
        );
        assert!(log.truncated_on_open() > 0);
        let report = verify(dir).expect("the recovered stream verifies");
        assert_eq!(report.records, last_seq + 1);
        assert_eq!(report.head.map(|h| h.seq), Some(last_seq));

        for j in 0..RESUMED {
            log.log(&serde_json::json!({"run": run, "resume": j}))
                .unwrap();
        }
        let head = log.close().expect("close").expect("head");
        assert_eq!(
            head.seq,
            last_seq + RESUMED,
            "seq continues after the crash"
        );
        let report = verify(dir).expect("the resumed stream verifies");
        assert_eq!(report.head, Some(head));
        assert_eq!(report.records, head.seq + 1);
        let resumed: Vec<_> = whole_records(dir)
            .into_iter()
            .skip(last_seq as usize + 1)
            .map(|r| r.event.unwrap())
            .collect();
        let expected: Vec<_> = (0..RESUMED)
            .map(|j| serde_json::json!({"run": run, "resume": j}))
            .collect();
        assert_eq!(
            resumed, expected,
            "the resumed events follow the recovered ones"
        );
    }
}

/// A stream written by a release before record format 2, with a torn last
/// line, is recovered and continued in format 2: the torn line is cut, the
/// new records link to the last format 1 hash, and the verifier checks every
/// record of both formats.
#[test]
fn a_format_1_stream_is_recovered_and_continued_in_format_2() {
    let dir = tempfile::tempdir().unwrap();
    let day = latchfree::audit::file_name("audit", 20261118, 0);
    let mut old = Vec::new();
    let mut prev = ChainHash::GENESIS;
    for seq in 0..3u64 {
        let event = format!("{{\"old\":{seq}}}");
        let body = record::Body::Event(event.as_bytes());
        prev = record::encode_v1(&mut old, seq, SystemTime::UNIX_EPOCH, body, &prev);
    }
    old.extend_from_slice(br#"{"seq":3,"ts":"1970-01-01T00:00:00.000000Z","event":{"#);
    std::fs::write(dir.path().join(&day), &old).unwrap();

    let log = builder(dir.path()).open().unwrap();
    assert!(log.truncated_on_open() > 0);
    for i in 0..2 {
        log.log(&serde_json::json!({ "new": i })).unwrap();
    }
    let head = log.close().unwrap().unwrap();
    assert_eq!(head.seq, 4);

    let records = whole_records(dir.path());
    assert_eq!(records.len(), 5);
    assert_eq!(
        records[3].prev, prev,
        "the first new record links to the old chain"
    );
    let text: String = stream_files(dir.path(), "audit")
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let versions: Vec<bool> = text.lines().map(|l| l.starts_with("{\"v\":2,")).collect();
    assert_eq!(versions, [false, false, false, true, true]);
    let report = verify(dir.path()).unwrap();
    assert_eq!((report.records, report.head), (5, Some(head)));
}
