//! The writer thread: the only code that writes or deletes entry files
//! after the tier is open.
//!
//! It takes [`Op`]s from one channel, in the order they were sent, so the
//! changes of one key reach the disk in the order they were made (the
//! journal sends them under the key's lock). A `Put` is written to
//! `NAME.tmp`, fsynced, and renamed over `NAME`: a reader or a crash sees the
//! old file or the new one, never a mix. The directory is fsynced (making
//! renames and deletions durable) whenever the queue runs empty and before a
//! flush is answered. After each change is on disk its [`Pending`](super::tier::Pending) record
//! is dropped, unless a newer change of the key replaced it.

use std::fs::{self, File};
use std::hash::Hash;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::format;
use super::tier::{DiskCounters, Op, Tier};

/// What a file holds, judged by [`judge`].
pub(super) enum Verdict<K, V> {
    /// A live entry.
    Live(K, V, u64),
    /// A valid entry past its deadline.
    Expired,
    /// Not a valid entry of this cache's types.
    Corrupt,
}

/// Judges the bytes of an entry file at time `now`.
pub(super) fn judge<K: DeserializeOwned, V: DeserializeOwned>(
    bytes: &[u8],
    now: u64,
) -> Verdict<K, V> {
    let Ok(entry) = format::decode(bytes) else {
        return Verdict::Corrupt;
    };
    let (Ok(key), Ok(value)) = (
        serde_json::from_slice::<K>(entry.key),
        serde_json::from_slice::<V>(entry.value),
    ) else {
        return Verdict::Corrupt;
    };
    if entry.deadline <= now {
        Verdict::Expired
    } else {
        Verdict::Live(key, value, entry.deadline)
    }
}

/// Whether `name` is an entry file's name.
pub(super) fn is_entry(name: &str) -> bool {
    name.strip_suffix(format::EXTENSION)
        .is_some_and(|stem| stem.ends_with('.'))
}

/// Whether `name` is a temporary file the writer left (a crash between
/// write and rename).
pub(super) fn is_temp(name: &str) -> bool {
    name.ends_with(".tmp")
}

struct Writer<K, V> {
    tier: Arc<Tier<K, V>>,
    /// Renames or deletions not yet made durable by a directory fsync.
    dir_dirty: bool,
    /// The first write error since the last flush.
    error: Option<(PathBuf, io::Error)>,
}

/// The thread's body: handles ops until [`Op::Stop`].
pub(super) fn run<K, V>(tier: Arc<Tier<K, V>>, ops: Receiver<Op<K>>)
where
    K: Eq + Hash + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    let mut writer = Writer {
        tier,
        dir_dirty: false,
        error: None,
    };
    while let Ok(first) = ops.recv() {
        let mut next = Some(first);
        while let Some(op) = next {
            match op {
                Op::Changed { seq, key } => writer.changed(seq, &key),
                Op::Recheck { name } => writer.recheck(&name),
                Op::Clear(done) => {
                    let result = writer.clear();
                    let _ = done.send(result);
                }
                Op::Flush(done) => {
                    writer.sync_dir();
                    let result = match writer.error.take() {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                    let _ = done.send(result);
                }
                Op::Stop => {
                    writer.sync_dir();
                    return;
                }
            }
            next = ops.try_recv().ok();
        }
        writer.sync_dir();
    }
}

impl<K, V> Writer<K, V>
where
    K: Eq + Hash + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    fn fail(&mut self, path: PathBuf, error: io::Error) {
        DiskCounters::add(&self.tier.counters.write_errors, 1);
        if self.error.is_none() {
            self.error = Some((path, error));
        }
    }

    /// Forgets the pending change `seq` of `key` unless a newer one
    /// replaced it.
    fn done(&self, seq: u64, key: &K) {
        self.tier.pending.remove_if_sync(key, |p| p.seq == seq);
    }

    /// Brings `key`'s file up to its newest pending change.
    ///
    /// Changes of a key are sent in the order memory made them, and each is
    /// in `pending` before it is sent, so the newest pending change is at
    /// least as new as change `_seq`: writing it instead loses nothing and
    /// skips the states in between (a key changed ten times while its turn
    /// came writes one file, not ten). A flush sent after change `_seq`
    /// therefore still finds its key's file at `seq` or newer. Nothing
    /// pending means a newer change's write already covered this one.
    fn changed(&mut self, seq: u64, key: &K) {
        let newest = self
            .tier
            .pending
            .read_sync(key, |_, p| (p.seq, p.put.clone()));
        debug_assert!(newest.as_ref().is_none_or(|&(newest, _)| newest >= seq));
        match newest {
            None => DiskCounters::add(&self.tier.counters.coalesced, 1),
            Some((seq, Some((value, deadline)))) => self.put(seq, key, &value, deadline),
            Some((seq, None)) => self.remove(seq, key),
        }
    }

    fn put(&mut self, seq: u64, key: &K, value: &V, deadline: u64) {
        let encoded = serde_json::to_vec(key).and_then(|k| Ok((serde_json::to_vec(value)?, k)));
        let (value_bytes, key_bytes) = match encoded {
            Ok(pair) => pair,
            Err(e) => {
                // Kept pending: reads through still find the value.
                let path = self.tier.dir().to_path_buf();
                return self.fail(path, io::Error::other(e));
            }
        };
        let name = format::file_name(&key_bytes);
        let path = self.tier.path(&name);
        let entry = (key_bytes.len() + value_bytes.len()) as u64;
        if entry > self.tier.max_entry_bytes {
            // A file no read would accept: refused like a failed write (the
            // value stays in memory and pending; the error names the limit).
            // The key's older file must not come back after a restart.
            if fs::remove_file(&path).is_ok() {
                self.dir_dirty = true;
            }
            let error = format::FormatError::EntryTooLarge {
                bytes: entry,
                max: self.tier.max_entry_bytes,
            };
            return self.fail(path, io::Error::other(error));
        }
        let bytes = match format::encode(deadline, &key_bytes, &value_bytes) {
            Ok(bytes) => bytes,
            Err(e) => return self.fail(path, io::Error::other(e)),
        };
        let tmp = self.tier.path(&format!("{name}.tmp"));
        let written = File::create(&tmp).and_then(|mut file| {
            file.write_all(&bytes)?;
            if self.tier.fsync {
                file.sync_all()?;
            }
            Ok(())
        });
        match written.and_then(|()| fs::rename(&tmp, &path)) {
            Ok(()) => {
                self.dir_dirty = true;
                DiskCounters::add(&self.tier.counters.files_written, 1);
                self.done(seq, key);
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                // The older file must not be served in its place: delete it.
                // The change stays pending, so reads through still find it.
                if fs::remove_file(&path).is_ok() {
                    self.dir_dirty = true;
                }
                self.fail(path, e);
            }
        }
    }

    fn remove(&mut self, seq: u64, key: &K) {
        let Ok(key_bytes) = serde_json::to_vec(key) else {
            // Never written either (the same serialization failed).
            return self.done(seq, key);
        };
        let path = self.tier.path(&format::file_name(&key_bytes));
        match fs::remove_file(&path) {
            Ok(()) => {
                self.dir_dirty = true;
                DiskCounters::add(&self.tier.counters.files_removed, 1);
                self.done(seq, key);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.done(seq, key),
            // Kept pending (a removal): reads through still miss.
            Err(e) => self.fail(path, e),
        }
    }

    /// Deletes the file `name` if it is (still) corrupt or expired.
    fn recheck(&mut self, name: &str) {
        let path = self.tier.path(name);
        let Ok(read) = super::read_checked_entry_file(&path, self.tier.max_entry_bytes, true)
        else {
            return;
        };
        let verdict = match read {
            Ok(bytes) => judge::<K, V>(&bytes, self.tier.now()),
            Err(_) => Verdict::Corrupt,
        };
        let counter = match verdict {
            Verdict::Live(..) => return,
            Verdict::Expired => &self.tier.counters.expired_dropped,
            Verdict::Corrupt => &self.tier.counters.corrupt_dropped,
        };
        if fs::remove_file(&path).is_ok() {
            DiskCounters::add(counter, 1);
            self.dir_dirty = true;
        }
    }

    /// Deletes every entry file.
    fn clear(&mut self) -> Result<(), io::Error> {
        let mut removed = 0;
        let mut result = Ok(());
        for entry in fs::read_dir(self.tier.dir())? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if is_entry(&name) || is_temp(&name) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => result = Err(e),
                }
            }
        }
        DiskCounters::add(&self.tier.counters.files_removed, removed);
        self.dir_dirty = true;
        self.sync_dir();
        result
    }

    /// Makes renames and deletions durable (with fsync on).
    fn sync_dir(&mut self) {
        if !self.dir_dirty {
            return;
        }
        self.dir_dirty = false;
        if self.tier.fsync
            && let Err(e) = File::open(self.tier.dir()).and_then(|d| d.sync_all())
        {
            let path = self.tier.dir().to_path_buf();
            self.fail(path, e);
        }
    }
}
