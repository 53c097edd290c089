//! The anchor file: where a stream's remaining files pick up the chain once
//! retention has removed older ones.
//!
//! A stream `PREFIX` whose oldest files were removed no longer starts at
//! `seq` 0: its first remaining record follows a record that is gone. The
//! writer keeps that record's head in `PREFIX.anchor`, one line in the
//! directory:
//!
//! ```text
//! {"v":1,"seq":41234,"hash":"<64 hex>"}
//! ```
//!
//! and [`verify`](super::verify()) starts from it: the remaining files must
//! continue the anchored head exactly (`seq + 1` and `prev`), so a file
//! removed by anyone else (the oldest remaining one, or one in the middle)
//! still shows as a gap.
//!
//! # The order that keeps a crash harmless
//!
//! The anchor is written before any file it covers is removed, and durably:
//! the new content goes to `PREFIX.anchor.tmp`, which is fsynced, renamed
//! over `PREFIX.anchor`, and the directory fsynced. Only then are the files
//! removed, oldest first. A crash at any point leaves one of:
//!
//! * the old anchor (or none) and every file: nothing happened;
//! * the new anchor and some or all of the files it covers: the verifier
//!   skips a file whose records all lie at or before the anchor, and checks
//!   that the record at the anchor's `seq`, if a remaining file still holds
//!   it, has the anchored hash; the writer removes those files when it next
//!   opens the stream.
//!
//! The rename is atomic, so the anchor is always one whole version; the
//! temporary file is never read.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::durable::Syncer;
use super::record::{ChainHash, Head};

/// The anchor file of stream `prefix` in `dir`: `PREFIX.anchor`.
pub fn anchor_path(dir: &Path, prefix: &str) -> PathBuf {
    dir.join(format!("{prefix}.anchor"))
}

/// The head anchored for stream `prefix` in `dir`, or `None` if it has no
/// anchor file (no file was ever removed). An anchor file that is not
/// exactly what the writer writes is an [`io::ErrorKind::InvalidData`]
/// error: nothing is guessed.
pub fn read_anchor(dir: &Path, prefix: &str) -> io::Result<Option<Head>> {
    let bytes = match std::fs::read(anchor_path(dir, prefix)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    decode(&bytes).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not an anchor line {\"v\":1,\"seq\":N,\"hash\":\"<64 hex>\"}",
        )
    })
}

/// The anchor line for `head`.
fn encode(head: Head) -> String {
    format!(
        "{{\"v\":1,\"seq\":{},\"hash\":\"{}\"}}\n",
        head.seq, head.hash
    )
}

fn decode(bytes: &[u8]) -> Option<Head> {
    let line = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
    let rest = line.strip_prefix("{\"v\":1,\"seq\":")?;
    let (seq, rest) = rest.split_once(",\"hash\":\"")?;
    let hash = rest.strip_suffix("\"}")?;
    let canonical = !seq.is_empty()
        && seq.bytes().all(|b| b.is_ascii_digit())
        && (seq == "0" || !seq.starts_with('0'));
    if !canonical {
        return None;
    }
    Some(Head {
        seq: seq.parse().ok()?,
        hash: ChainHash::from_hex(hash)?,
    })
}

/// Replaces the anchor of stream `prefix` in `dir` with `head`, durably:
/// temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_anchor(
    dir: &Path,
    prefix: &str,
    head: Head,
    syncer: &dyn Syncer,
) -> io::Result<()> {
    let path = anchor_path(dir, prefix);
    let tmp = dir.join(format!("{prefix}.anchor.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(encode(head).as_bytes())?;
    syncer.sync_file(&file, &tmp)?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    syncer.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::durable::OsSyncer;

    #[test]
    fn an_anchor_round_trips_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_anchor(dir.path(), "audit").unwrap(), None);
        let head = Head {
            seq: 41234,
            hash: ChainHash([7; 32]),
        };
        write_anchor(dir.path(), "audit", head, &OsSyncer).unwrap();
        assert_eq!(read_anchor(dir.path(), "audit").unwrap(), Some(head));
        assert!(!dir.path().join("audit.anchor.tmp").exists());
        let line = encode(head);
        for bad in [
            line.replace("41234", "041234"),
            line.replace("41234", "-1"),
            line.replace("\"v\":1", "\"v\":2"),
            line.trim_end().to_string(),
            line.replace("07", "0G"),
            format!("{line}x"),
        ] {
            std::fs::write(anchor_path(dir.path(), "audit"), &bad).unwrap();
            let err = read_anchor(dir.path(), "audit").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad}");
        }
    }
}
