//! The persistent tier of the TTL cache (`PersistentTtlCache`): both tiers
//! under concurrent readers and writers, a `SIGKILL` mid-write, corrupt
//! files, expiry coherence with a manual clock, restart warm-up, ordered
//! invalidation, a read-through racing an invalidation at an exact point,
//! and the errors of `open`.
//!
//! Nothing sleeps to wait for a TTL: time is a `ManualClock` (or a clock
//! that wraps one).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, SystemTime};

use latchfree::cache::persist::{LOCK_FILE, format};
use latchfree::cache::{PersistError, PersistentTtlCache, Sweep, TtlCache};
use latchfree::clock::{Clock, ManualClock};

fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

const HOUR: Duration = Duration::from_secs(3600);

/// A cache of `u64 -> String` in `dir` with at most `max` entries in memory,
/// a one-hour TTL, manual sweeping and no fsync (the crash test turns it on).
fn open(dir: &Path, clock: &ManualClock, max: usize) -> PersistentTtlCache<u64, String> {
    TtlCache::builder()
        .max_entries(max)
        .time_to_live(HOUR)
        .clock(clock.clone())
        .sweep(Sweep::Manual)
        .persist_dir(dir)
        .fsync(false)
        .open()
        .expect("open")
}

/// The entry files in `dir`.
fn entry_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == format::EXTENSION))
        .collect();
    files.sort();
    files
}

/// The file of key `k`.
fn file_of(dir: &Path, k: u64) -> PathBuf {
    dir.join(format::file_name(&serde_json::to_vec(&k).unwrap()))
}

fn value(owner: u64, k: u64, version: u64) -> String {
    format!("{owner}:{k}:{version}")
}

fn parse(v: &str) -> (u64, u64, u64) {
    let mut it = v.split(':').map(|x| x.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
}

/// 8 threads (more than the cores) on a cache whose memory holds 64 of the
/// 800 keys, so most reads go through to the disk and race with the
/// writer thread. Each thread owns 100 keys: it writes rising versions of
/// them, invalidates every seventh write, and reads the keys of the other
/// threads. Every read must return a value of the key read (never another
/// key's, never garbage), and per reader and key the versions seen never go
/// back (a read through to the disk never returns something older than what
/// the same reader saw before). At the end every key holds exactly its
/// owner's last write, in memory-or-disk and, after a restart, from disk.
#[test]
fn eight_threads_read_and_write_across_both_tiers_exactly() {
    const THREADS: u64 = 8;
    const KEYS: u64 = 100;
    const ROUNDS: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let cache = open(dir.path(), &clock, 64);
    let barrier = Barrier::new(THREADS as usize);
    let rejected = AtomicU64::new(0);
    let finals: Vec<HashMap<u64, Option<u64>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cache, barrier, rejected) = (&cache, &barrier, &rejected);
                s.spawn(move || {
                    barrier.wait();
                    let mine = t * 1_000..t * 1_000 + KEYS;
                    let mut last: HashMap<u64, Option<u64>> = HashMap::new();
                    let mut seen: HashMap<u64, u64> = HashMap::new();
                    for round in 0..ROUNDS {
                        for k in mine.clone() {
                            let version = round * KEYS + (k - t * 1_000);
                            if version % 7 == 3 {
                                cache.invalidate(&k);
                                last.insert(k, None);
                            } else if cache.insert(k, value(t, k, version)).is_ok() {
                                last.insert(k, Some(version));
                            } else {
                                // Nothing could be evicted at that moment
                                // (all 64 slots contended): nothing changed.
                                rejected.fetch_add(1, Ordering::Relaxed);
                            }
                            // Own key: exactly what was just done.
                            let got = cache.get(&k);
                            assert_eq!(
                                got,
                                last.get(&k).copied().flatten().map(|v| value(t, k, v)),
                                "own key {k} right after the write"
                            );
                            // Someone else's key.
                            let other = ((t + 1 + round % (THREADS - 1)) % THREADS) * 1_000
                                + (k * 13 + round) % KEYS;
                            if let Some(v) = cache.get(&other) {
                                let (owner, key, version) = parse(&v);
                                assert_eq!((owner * 1_000 + key % 1_000, key), (other, other));
                                let before = seen.insert(other, version).unwrap_or(0);
                                assert!(
                                    version >= before,
                                    "key {other}: version {version} read after {before}"
                                );
                            }
                        }
                    }
                    last
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    cache.flush().unwrap();
    let rejected = rejected.load(Ordering::Relaxed);
    assert!(
        rejected < THREADS * KEYS * ROUNDS / 10,
        "{rejected} inserts rejected"
    );
    let check = |cache: &PersistentTtlCache<u64, String>, when: &str| {
        for (t, last) in finals.iter().enumerate() {
            for (&k, &version) in last {
                assert_eq!(
                    cache.get(&k),
                    version.map(|v| value(t as u64, k, v)),
                    "key {k} {when}"
                );
            }
        }
    };
    check(&cache, "before the restart");
    let metrics = cache.persist_metrics();
    assert!(metrics.disk_hits > 0, "{metrics:?}");
    assert_eq!(metrics.write_errors, 0);
    assert_eq!(metrics.corrupt_dropped, 0);
    drop(cache);
    let live: usize = finals
        .iter()
        .map(|m| m.values().filter(|v| v.is_some()).count())
        .sum();
    assert_eq!(entry_files(dir.path()).len(), live);
    let cache = open(dir.path(), &clock, 2_000);
    assert_eq!(cache.persist_metrics().loaded, live as u64);
    assert_eq!(cache.len(), live);
    check(&cache, "after the restart");
}

/// The directory the crash child writes to; it does nothing without it.
const CHILD_DIR: &str = "LATCHFREE_PERSIST_CRASH_DIR";

/// Key `k`'s value in the crash test (long enough that a write takes
/// more than one page now and then).
fn crash_value(k: u64) -> String {
    format!("{k}-{}", "x".repeat((k * 37 % 5_000) as usize))
}

/// The child: inserts keys 0, 1, 2, ... (and rewrites older ones with the
/// same value), with fsync on, and after each `flush` prints `ack N`: keys
/// `0..N` are on disk.
#[test]
#[ignore = "child process of `sigkill_mid_write_serves_no_corrupt_entry_and_keeps_flushed_ones`"]
fn persist_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let cache = TtlCache::<u64, String>::builder()
        .max_entries(256)
        .time_to_live(HOUR)
        .clock(clock())
        .persist_dir(Path::new(&dir))
        .open()
        .expect("child: open");
    let mut out = std::io::stdout();
    // libtest has printed `test persist_crash_child ... ` without a newline.
    writeln!(out).unwrap();
    for k in 0u64.. {
        assert!(k < 10_000_000, "child: never killed");
        cache.insert(k, crash_value(k)).unwrap();
        if k % 3 == 0 {
            let old = k / 2;
            cache.insert(old, crash_value(old)).unwrap();
        }
        if k % 16 == 15 {
            cache.flush().expect("child: flush");
            if writeln!(out, "ack {}", k + 1)
                .and_then(|()| out.flush())
                .is_err()
            {
                std::process::exit(2);
            }
        }
    }
}

/// A child process writes with fsync on and is killed with `SIGKILL` in the
/// middle of its work, three times on one directory. After each kill a
/// reopened cache serves every acknowledged key with its exact value,
/// serves no other value for any key, and never fails to open.
#[test]
fn sigkill_mid_write_serves_no_corrupt_entry_and_keeps_flushed_ones() {
    let dir = tempfile::tempdir().unwrap();
    for run in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "persist_crash_child", "--nocapture", "--ignored"])
            .args(["--test-threads", "1"])
            .env(CHILD_DIR, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if let Some(n) = line.strip_prefix("ack ")
                    && tx.send(n.parse::<u64>().unwrap()).is_err()
                {
                    return;
                }
            }
        });
        let mut acked = 0;
        let kill_after = 200 + run * 150;
        while acked < kill_after {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(n) => acked = n,
                Err(e) => {
                    let _ = child.kill();
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                    panic!("the child stopped acknowledging at {acked} ({e}): {err}");
                }
            }
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        reader.join().unwrap();
        acked = rx.try_iter().fold(acked, u64::max);
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
        let cache = open(dir.path(), &clock(), 1 << 20);
        let m = cache.persist_metrics();
        for k in 0..acked {
            assert_eq!(cache.get(&k), Some(crash_value(k)), "acknowledged key {k}");
        }
        // Whatever else is there is whole.
        let mut extra = 0;
        for k in acked..acked + 10_000 {
            if let Some(v) = cache.get(&k) {
                assert_eq!(v, crash_value(k));
                extra += 1;
            }
        }
        assert_eq!(m.loaded as usize, cache.len());
        assert!(
            no_tmp_files(dir.path()),
            "temporary files are deleted at open"
        );
        eprintln!("run {run}: {acked} acknowledged, {extra} more whole, {m:?}");
        drop(cache);
    }
}

fn no_tmp_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
}

/// Ways to damage a file.
fn damage(bytes: &[u8], how: usize) -> Vec<u8> {
    match how {
        0 => Vec::new(),
        1 => bytes[..bytes.len() / 2].to_vec(),
        2 => bytes[..bytes.len() - 1].to_vec(),
        3 => {
            let mut b = bytes.to_vec();
            b[9] ^= 0x10; // the deadline
            b
        }
        4 => {
            let mut b = bytes.to_vec();
            let last = b.len() - 1;
            b[last] ^= 1; // the checksum
            b
        }
        5 => {
            let mut b = bytes.to_vec();
            b[format::HEADER_LEN + 1] ^= 0x01; // the key or the value
            b
        }
        6 => b"garbage garbage garbage garbage garbage garbage garbage garbage".to_vec(),
        7 => {
            let mut b = bytes.to_vec();
            b.extend_from_slice(b"trailing");
            b
        }
        // A well-formed file whose value is not a String.
        _ => {
            let entry = format::decode(bytes).unwrap();
            format::encode(entry.deadline, entry.key, b"[1,2,3]").unwrap()
        }
    }
}

const DAMAGES: usize = 9;

/// Files damaged in every way (empty, truncated, bit flips in the header,
/// key and checksum, garbage, trailing bytes, a value of another type) are
/// never served: read through while running they are misses, then deleted
/// and counted; at open they are deleted and counted; nothing panics.
#[test]
fn corrupt_files_are_dropped_counted_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    // Memory holds 4 entries: the others are read from disk.
    let cache = open(dir.path(), &clock, 4);
    for k in 0..40u64 {
        cache.insert(k, format!("value {k}")).unwrap();
    }
    cache.flush().unwrap();
    let on_disk_only: Vec<u64> = (0..40).filter(|k| !cache.contains_in_memory(k)).collect();
    assert!(on_disk_only.len() >= 36);
    // Damage the files of some disk-only keys while the cache runs.
    let damaged: Vec<u64> = on_disk_only.iter().copied().take(2 * DAMAGES).collect();
    for (i, &k) in damaged.iter().enumerate() {
        let path = file_of(dir.path(), k);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, damage(&bytes, i % DAMAGES)).unwrap();
    }
    for &k in &damaged {
        assert_eq!(cache.get(&k), None, "damaged key {k} is a miss");
    }
    cache.flush().unwrap();
    let m = cache.persist_metrics();
    assert_eq!(m.corrupt_dropped, damaged.len() as u64, "{m:?}");
    for &k in &damaged {
        assert!(
            !file_of(dir.path(), k).exists(),
            "key {k}'s file is deleted"
        );
        assert_eq!(cache.get(&k), None);
    }
    // The undamaged disk-only keys still read through.
    for &k in &on_disk_only[damaged.len()..] {
        assert_eq!(cache.get(&k), Some(format!("value {k}")));
    }
    drop(cache);

    // Damage the rest while closed: `open` drops them.
    let files = entry_files(dir.path());
    let total = files.len();
    for (i, path) in files.iter().enumerate().take(DAMAGES) {
        let bytes = std::fs::read(path).unwrap();
        std::fs::write(path, damage(&bytes, i)).unwrap();
    }
    std::fs::write(dir.path().join("deadbeef.lfce.tmp"), b"half a write").unwrap();
    let cache = open(dir.path(), &clock, 100);
    let m = cache.persist_metrics();
    assert_eq!(m.corrupt_dropped, DAMAGES as u64, "{m:?}");
    assert_eq!(m.loaded, (total - DAMAGES) as u64);
    assert_eq!(entry_files(dir.path()).len(), total - DAMAGES);
    assert!(no_tmp_files(dir.path()));
    for k in 0..40u64 {
        if let Some(v) = cache.get(&k) {
            assert_eq!(v, format!("value {k}"));
        }
    }
}

/// With a manual clock: once an entry's deadline passes, neither tier
/// serves it, whether it was in memory or only on disk, before or after a
/// restart; an entry evicted from memory by expiry loses its file too; and
/// the files of the expired entries are deleted, not loaded, at open.
#[test]
fn expired_entries_are_served_by_neither_tier_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let cache = open(dir.path(), &clock, 8);
    for k in 0..32u64 {
        let ttl = Duration::from_secs(if k % 2 == 0 { 10 } else { 100 });
        cache.insert_with_ttl(k, format!("v{k}"), ttl).unwrap();
    }
    cache.flush().unwrap();
    assert_eq!(entry_files(dir.path()).len(), 32);
    clock.advance(Duration::from_secs(10) - Duration::from_nanos(1));
    for k in 0..32u64 {
        assert_eq!(cache.get(&k), Some(format!("v{k}")), "key {k} just before");
    }
    clock.advance(Duration::from_nanos(1));
    for k in 0..32u64 {
        let want = (k % 2 == 1).then(|| format!("v{k}"));
        assert_eq!(cache.get(&k), want, "key {k} at the deadline");
    }
    cache.sweep();
    cache.flush().unwrap();
    let m = cache.persist_metrics();
    // Every expired key was found expired (in memory: its removal deleted
    // the file; on disk only: the read deleted it).
    for k in (0..32u64).step_by(2) {
        assert!(!file_of(dir.path(), k).exists(), "key {k}'s file is gone");
    }
    assert_eq!(entry_files(dir.path()).len(), 16, "{m:?}");
    drop(cache);

    // Expired while closed: not loaded, deleted.
    clock.advance(Duration::from_secs(90));
    let cache = open(dir.path(), &clock, 8);
    let m = cache.persist_metrics();
    assert_eq!((m.loaded, m.expired_dropped), (0, 16), "{m:?}");
    for k in 0..32u64 {
        assert_eq!(cache.get(&k), None);
    }
    assert!(entry_files(dir.path()).is_empty());
}

/// After a restart, entries whose deadline has not passed come back with
/// their original deadline (not a fresh TTL), the expired ones do not, and
/// entries with no TTL come back forever.
#[test]
fn restart_warms_up_live_entries_with_their_remaining_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let cache = open(dir.path(), &clock, 1_000);
    for k in 0..300u64 {
        cache
            .insert_with_ttl(k, format!("v{k}"), Duration::from_secs(k + 1))
            .unwrap();
    }
    cache.flush().unwrap();
    drop(cache);
    let no_ttl = TtlCache::<u64, String>::builder()
        .clock(clock.clone())
        .persist_dir(dir.path().join("forever"))
        .fsync(false)
        .open()
        .unwrap();
    no_ttl.insert(1, "one".into()).unwrap();
    drop(no_ttl);

    clock.advance(Duration::from_secs(100)); // keys 0..100 are dead
    let cache = open(dir.path(), &clock, 1_000);
    let m = cache.persist_metrics();
    assert_eq!((m.loaded, m.expired_dropped), (200, 100), "{m:?}");
    assert_eq!(cache.len(), 200);
    for k in 0..300u64 {
        assert_eq!(
            cache.get(&k),
            (k >= 100).then(|| format!("v{k}")),
            "key {k}"
        );
    }
    // Key 150 was inserted with 151 s to live: 51 s are left, no more.
    clock.advance(Duration::from_secs(51) - Duration::from_nanos(1));
    assert_eq!(cache.get(&150), Some("v150".into()));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(cache.get(&150), None);
    assert_eq!(cache.get(&151), Some("v151".into()));

    clock.advance(Duration::from_secs(1_000_000));
    let no_ttl = TtlCache::<u64, String>::builder()
        .clock(clock.clone())
        .persist_dir(dir.path().join("forever"))
        .open()
        .unwrap();
    assert_eq!(no_ttl.get(&1), Some("one".into()));
}

/// Invalidation removes a key from both tiers (also a key that only the
/// disk holds), in order with later writes of the key; `invalidate_all`
/// empties both; neither comes back after a restart.
#[test]
fn invalidation_reaches_the_disk_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let cache = open(dir.path(), &clock, 4);
    for k in 0..20u64 {
        cache.insert(k, format!("a{k}")).unwrap();
    }
    // Invalidate every key at once (most are on disk only), then rewrite
    // every third: the queue holds write, remove, write for those.
    for k in 0..20u64 {
        cache.invalidate(&k);
        assert_eq!(cache.get(&k), None, "key {k} right after invalidate");
        if k.is_multiple_of(3) {
            cache.insert(k, format!("b{k}")).unwrap();
        }
    }
    cache.flush().unwrap();
    let expect = |k: u64| k.is_multiple_of(3).then(|| format!("b{k}"));
    for k in 0..20u64 {
        assert_eq!(cache.get(&k), expect(k));
        assert_eq!(file_of(dir.path(), k).exists(), k.is_multiple_of(3));
    }
    drop(cache);
    let cache = open(dir.path(), &clock, 100);
    for k in 0..20u64 {
        assert_eq!(cache.get(&k), expect(k), "key {k} after the restart");
    }
    assert_eq!(cache.invalidate_all().unwrap(), 7);
    for k in 0..20u64 {
        assert_eq!(cache.get(&k), None);
    }
    assert!(entry_files(dir.path()).is_empty());
    drop(cache);
    assert_eq!(open(dir.path(), &clock, 100).len(), 0);
}

/// `get_or_load` reads through before it loads: a value on disk is not
/// loaded again; a loaded value is written to disk.
#[test]
fn get_or_load_reads_through_and_writes_behind() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let cache = open(dir.path(), &clock, 2);
    for k in 0..10u64 {
        assert_eq!(
            cache.get_or_load(k, || format!("loaded {k}")).unwrap(),
            format!("loaded {k}")
        );
    }
    cache.flush().unwrap();
    for k in 0..10u64 {
        let v = cache
            .get_or_load(k, || panic!("key {k} is on disk"))
            .unwrap();
        assert_eq!(v, format!("loaded {k}"));
    }
    assert_eq!(cache.persist_metrics().files_written, 10);
}

/// With a queue of one change, writers wait for the disk (backpressure)
/// and nothing is lost: every write of 4 threads is on disk after a flush.
#[test]
fn a_full_queue_makes_writers_wait_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let cache = TtlCache::<u64, String>::builder()
        .max_entries(16)
        .time_to_live(HOUR)
        .clock(clock.clone())
        .persist_dir(dir.path())
        .fsync(false)
        .queue_capacity(1)
        .open()
        .unwrap();
    thread::scope(|s| {
        for t in 0..4u64 {
            let cache = &cache;
            s.spawn(move || {
                for k in t * 100..t * 100 + 100 {
                    cache.insert(k, format!("v{k}")).unwrap();
                }
            });
        }
    });
    cache.flush().unwrap();
    assert_eq!(entry_files(dir.path()).len(), 400);
    assert_eq!(cache.persist_metrics().files_written, 400);
    for k in 0..400u64 {
        assert_eq!(cache.get(&k), Some(format!("v{k}")));
    }
}

/// A clock that runs a hook from inside one chosen call of `now()`: the
/// way to put another thread's operation at an exact point of a read.
#[derive(Clone)]
struct HookClock {
    time: ManualClock,
    /// Calls of `now()` left before the hook runs (0: disarmed).
    countdown: Arc<AtomicU64>,
    hook: Arc<Mutex<Option<Hook>>>,
}

/// What a [`HookClock`] runs.
type Hook = Box<dyn FnOnce() + Send>;

impl HookClock {
    /// Runs `hook` from inside the `nth` call of `now()` from here on.
    fn arm(&self, nth: u64, hook: impl FnOnce() + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(hook));
        self.countdown.store(nth, Ordering::SeqCst);
    }
}

impl Clock for HookClock {
    fn now(&self) -> SystemTime {
        let fire = self
            .countdown
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            == Ok(1);
        // Taken out first: the hook calls `now()` again, with no lock held.
        let hook = if fire {
            self.hook.lock().unwrap().take()
        } else {
            None
        };
        if let Some(hook) = hook {
            hook();
        }
        self.time.now()
    }

    fn is_cheap(&self) -> bool {
        true
    }
}

/// A read through to the disk that races an `invalidate` of its key must
/// not put the value it read back into memory after the invalidation (a
/// resurrection: the value would then be served, and written nowhere).
///
/// The invalidation is run from inside the clock call that the memory
/// insert makes right before it takes the key's lock: after the file was
/// read, before the entry is put back. The generation check under the lock
/// must refuse the insert.
#[test]
fn a_read_through_racing_an_invalidate_does_not_resurrect_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let clock = HookClock {
        time: clock(),
        countdown: Arc::new(AtomicU64::new(0)),
        hook: Arc::new(Mutex::new(None)),
    };
    let cache = Arc::new(
        TtlCache::<u64, String>::builder()
            .max_entries(2)
            .time_to_live(HOUR)
            .clock(clock.clone())
            .sweep(Sweep::Manual)
            .persist_dir(dir.path())
            .fsync(false)
            .open()
            .unwrap(),
    );
    for k in 1..=3u64 {
        cache.insert(k, format!("v{k}")).unwrap();
    }
    cache.flush().unwrap();
    // One key was evicted to make room: on disk only. Free a slot, so the
    // read through inserts without evicting (one clock call fewer).
    let victim = (1..=3u64).find(|k| !cache.contains_in_memory(k)).unwrap();
    let other = (1..=3u64).find(|&k| k != victim).unwrap();
    cache.invalidate(&other);
    assert_eq!(cache.len(), 1);

    let fired = Arc::new(AtomicU64::new(0));
    {
        let (weak, fired) = (Arc::downgrade(&cache), fired.clone());
        // Call 1: the read's own clock reading; call 2: the insert's.
        clock.arm(2, move || {
            let cache = weak.upgrade().unwrap();
            assert_eq!(cache.invalidate(&victim), None, "not in memory");
            fired.fetch_add(1, Ordering::SeqCst);
        });
    }
    // The read itself may return the value (it read it before the
    // invalidation: a linearisable outcome) ...
    let read = cache.get(&victim);
    assert_eq!(
        fired.load(Ordering::SeqCst),
        1,
        "the hook ran inside the read"
    );
    assert!(read.is_none() || read == Some(format!("v{victim}")));
    // ... but it must not have put it back.
    assert!(!cache.contains_in_memory(&victim), "resurrected in memory");
    assert_eq!(cache.get(&victim), None);
    cache.flush().unwrap();
    assert!(!file_of(dir.path(), victim).exists());
    drop(cache);
    let reopened = open(dir.path(), &clock.time, 10);
    assert_eq!(reopened.get(&victim), None, "after a restart");
}

/// A directory that cannot be created is a clear error at `open`, as is an
/// idle timeout; nothing panics.
#[test]
fn open_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = TtlCache::<u64, u64>::builder()
        .persist_dir(file.join("cache"))
        .open()
        .unwrap_err();
    assert!(matches!(err, PersistError::Dir { .. }), "{err:?}");
    assert!(err.to_string().contains("a-file"), "{err}");

    let err = TtlCache::<u64, u64>::builder()
        .time_to_idle(HOUR)
        .persist_dir(dir.path())
        .open()
        .unwrap_err();
    assert!(matches!(err, PersistError::TimeToIdle), "{err:?}");
    let err = TtlCache::<u64, u64>::builder()
        .max_entries(0)
        .persist_dir(dir.path())
        .open()
        .unwrap_err();
    assert!(matches!(err, PersistError::Build(_)), "{err:?}");
}

/// Two caches on one directory would each delete the other's files as
/// stale: the second open is refused while the first is open, and the
/// directory is free again once it is dropped (the SIGKILL test shows the
/// lock also dies with its process).
#[test]
fn a_directory_in_use_is_refused_until_its_cache_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let first = open(dir.path(), &clock, 16);
    first.insert(1, value(0, 1, 0)).unwrap();
    let err = TtlCache::<u64, String>::builder()
        .persist_dir(dir.path())
        .open()
        .unwrap_err();
    assert!(matches!(err, PersistError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains(LOCK_FILE), "{err}");
    assert_eq!(
        first.get(&1),
        Some(value(0, 1, 0)),
        "the holder is unharmed"
    );
    drop(first);
    let second = open(dir.path(), &clock, 16);
    assert_eq!(second.get(&1), Some(value(0, 1, 0)));
    assert_eq!(
        entry_files(dir.path()).len(),
        1,
        "the lock file is no entry"
    );
}

/// A key changed many times while the writer was busy is written far fewer
/// times than it changed, and the file ends at the newest value; a removal
/// queued behind the writes still wins.
#[test]
fn changes_queued_for_one_key_are_coalesced_into_its_newest_state() {
    const CHANGES: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let cache = open(dir.path(), &clock, 16);
    for v in 0..CHANGES {
        cache.insert(7, value(0, 7, v)).unwrap();
        cache.insert(8, value(0, 8, v)).unwrap();
    }
    cache.invalidate(&8);
    cache.flush().unwrap();
    let m = cache.persist_metrics();
    // Each change is written, or coalesced into a later write; the
    // removal deletes key 8's file unless no write of it came first (then
    // nothing is counted for it).
    let accounted = m.files_written + m.files_removed + m.changes_coalesced;
    assert!(
        (2 * CHANGES..=2 * CHANGES + 1).contains(&accounted),
        "{m:?}"
    );
    // A file write (create, write, fsync, rename) costs far more than an
    // insert, so most changes found a newer one pending.
    assert!(m.changes_coalesced > CHANGES, "{m:?}");
    drop(cache);
    let reopened = open(dir.path(), &clock, 16);
    assert_eq!(reopened.get(&7), Some(value(0, 7, CHANGES - 1)));
    assert_eq!(reopened.get(&8), None);
    assert_eq!(entry_files(dir.path()), vec![file_of(dir.path(), 7)]);
}

/// Bytes this process has read through `read`-like calls so far.
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("rchar")
}

/// A huge entry file (sparse: its header claims 128 MiB of key and value,
/// and the file is that long) is refused from its header, at open and on a
/// read through, without reading the rest: it used to be read whole, twice.
/// One whose lengths do not add up to its size is refused the same way.
#[test]
fn a_huge_or_inconsistent_entry_file_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let huge: u32 = 128 << 20;
    let write_sparse = |k: u64, value_len: u32, file_len: u64| {
        let key = serde_json::to_vec(&k).unwrap();
        let mut header = format::encode(format::NO_DEADLINE, &key, b"").unwrap();
        header.truncate(format::HEADER_LEN + key.len());
        header[20..24].copy_from_slice(&value_len.to_le_bytes());
        let path = file_of(dir.path(), k);
        std::fs::write(&path, &header).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(file_len)
            .unwrap();
    };
    let exact = |key_len: usize| (format::HEADER_LEN + key_len + format::CHECKSUM_LEN) as u64;
    write_sparse(1, huge, exact(1) + u64::from(huge));
    write_sparse(2, 1 << 20, 8 << 20); // claims 1 MiB, is 8 MiB long
    let before = bytes_read();
    let cache = open(dir.path(), &clock, 100);
    let read = bytes_read() - before;
    assert_eq!(cache.persist_metrics().corrupt_dropped, 2);
    assert!(
        read < 4 << 20,
        "{read} bytes read to refuse two entry files"
    );
    assert!(entry_files(dir.path()).is_empty());

    // On a read through (the file appeared after open), the same.
    write_sparse(3, huge, exact(1) + u64::from(huge));
    let before = bytes_read();
    assert_eq!(cache.get(&3), None);
    let read = bytes_read() - before;
    assert!(read < 4 << 20, "{read} bytes read to refuse an entry file");
    cache.flush().unwrap();
    assert_eq!(cache.persist_metrics().corrupt_dropped, 3);
}

/// The disk tier's bounds are checked by `open`, with the call and the
/// value in the error; an entry over `max_entry_bytes` stays in memory and
/// its write is reported, never written as a file no read would accept.
#[test]
fn disk_tier_settings_are_checked_and_the_entry_limit_holds() {
    let dir = tempfile::tempdir().unwrap();
    let builder = || {
        TtlCache::<u64, String>::builder()
            .time_to_live(HOUR)
            .clock(clock())
            .persist_dir(dir.path())
            .fsync(false)
    };
    let cases = [
        (builder().queue_capacity(0).open(), "queue_capacity", 0),
        (
            builder().queue_capacity(usize::MAX).open(),
            "queue_capacity",
            u64::MAX,
        ),
        (builder().max_entry_bytes(0).open(), "max_entry_bytes", 0),
        (
            builder().max_entry_bytes(u64::MAX).open(),
            "max_entry_bytes",
            u64::MAX,
        ),
    ];
    for (result, name, refused) in cases {
        match result {
            Err(e @ PersistError::InvalidSetting { setting, value, .. }) => {
                assert_eq!((setting, value), (name, refused));
                assert!(e.to_string().contains(name), "{e}");
            }
            Err(e) => panic!("{name}({refused}): expected InvalidSetting, got {e}"),
            Ok(_) => panic!("{name}({refused}): expected InvalidSetting, opened"),
        }
    }
    let cache = builder().max_entry_bytes(100).open().unwrap();
    cache.insert(1, "small".into()).unwrap();
    cache.insert(2, "x".repeat(200)).unwrap();
    assert!(matches!(cache.flush(), Err(PersistError::Write { .. })));
    assert_eq!(cache.get(&2).map(|v| v.len()), Some(200));
    assert_eq!(entry_files(dir.path()), [file_of(dir.path(), 1)]);
}
