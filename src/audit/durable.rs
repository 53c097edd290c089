//! The two calls that make written records survive power loss, behind one
//! seam so that tests can see which the writer makes and when.
//!
//! A record is on disk once its bytes *and the name of its file* are: an
//! fsync of the file (`fdatasync`: the data and the size) covers the bytes,
//! and an fsync of the directory covers a newly created name. The writer
//! keeps three rules (see [`writer`](super::writer)):
//!
//! * before it leaves a file for the next one, it syncs the old file if it
//!   holds records not yet synced (whatever the [`Durability`]: a caller
//!   may later wait for [`Guarantee::Disk`] on any of them, and the old file
//!   is then closed);
//! * a file it creates (at `open` or at a rotation) marks the directory
//!   unsynced;
//! * every sync that raises the synced level syncs the current file, then
//!   the directory if it is marked, before any waiter is released.
//!
//! [`Durability`]: super::Durability
//! [`Guarantee::Disk`]: super::Guarantee::Disk

use std::fs::File;
use std::io;
use std::path::Path;

/// How the writer makes a file's bytes, and a directory's names, durable.
pub(crate) trait Syncer: Send + Sync + 'static {
    /// Makes the bytes written to `file` (at `path`) durable.
    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The operating system's calls: `fdatasync` on the file, `fsync` on the
/// directory.
pub(crate) struct OsSyncer;

impl Syncer for OsSyncer {
    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::audit::{AuditLog, Durability, Guarantee};

    /// What the writer asked to make durable, seen at the time of the call.
    #[derive(Debug)]
    enum Call {
        /// A file, and its length when synced.
        File(PathBuf, u64),
        /// The directory, and the stream files named in it then.
        Dir(Vec<PathBuf>),
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Call>>);

    fn stream_files(dir: &Path) -> Vec<PathBuf> {
        crate::audit::recover::list(dir, "audit")
            .unwrap()
            .into_iter()
            .map(|(_, _, path)| path)
            .collect()
    }

    impl Syncer for Recorder {
        fn sync_file(&self, file: &File, path: &Path) -> io::Result<()> {
            let len = file.metadata()?.len();
            self.0.lock().unwrap().push(Call::File(path.into(), len));
            Ok(())
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.0.lock().unwrap().push(Call::Dir(stream_files(dir)));
            Ok(())
        }
    }

    /// Logs `events` (each written before the next, so that small files
    /// rotate), then one event waited for with `Guarantee::Disk`; then
    /// checks that every byte of every file, and every file's name, was
    /// synced before that wait returned.
    fn disk_wait_covers_every_file(durability: Durability, events: u32) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::default());
        let log = AuditLog::builder(dir.path())
            .durability(durability)
            .max_file_bytes(4096)
            .syncer(recorder.clone())
            .open()
            .unwrap();
        for n in 0..events {
            log.log_wait(&n, Guarantee::Os).unwrap();
        }
        log.log_wait(&"last", Guarantee::Disk).unwrap();
        let calls = std::mem::take(&mut *recorder.0.lock().unwrap());
        let files = stream_files(dir.path());
        for path in &files {
            let len = std::fs::metadata(path).unwrap().len();
            if len == 0 {
                // The writer may rotate to a new, empty file right after
                // the last wait was released: it holds no promised record.
                continue;
            }
            let synced = calls.iter().rev().find_map(|c| match c {
                Call::File(p, len) if p == path => Some(*len),
                _ => None,
            });
            assert_eq!(
                synced,
                Some(len),
                "{durability:?}: {} is {len} bytes; last synced at {synced:?} ({calls:?})",
                path.display()
            );
        }
        let named = calls.iter().rev().find_map(|c| match c {
            Call::Dir(names) => Some(names),
            _ => None,
        });
        // Every file that holds a record is named in the last directory
        // sync (an empty file the writer rotated to afterwards holds none).
        let held = files
            .iter()
            .filter(|p| std::fs::metadata(p).unwrap().len() > 0);
        for path in held {
            assert!(
                named.is_some_and(|names| names.contains(path)),
                "{durability:?}: the directory was not synced with {} ({calls:?})",
                path.display()
            );
        }
        log.close().unwrap();
        files.len()
    }

    const DURABILITIES: [Durability; 3] = [
        Durability::None,
        Durability::Batch,
        Durability::Interval(Duration::from_secs(3600)),
    ];

    #[test]
    fn a_disk_wait_syncs_the_first_file_and_its_name() {
        for durability in DURABILITIES {
            assert_eq!(disk_wait_covers_every_file(durability, 3), 1);
        }
    }

    #[test]
    fn a_disk_wait_after_rotations_syncs_every_file_and_name() {
        for durability in DURABILITIES {
            assert!(disk_wait_covers_every_file(durability, 200) >= 3);
        }
    }
}
