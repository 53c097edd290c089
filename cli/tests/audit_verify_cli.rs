//! `latchfree audit verify DIR` as a process: exit 0 and the head on an
//! intact stream, exit 1 naming the file and line of the first break.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use latchfree::audit::record::{Body, ChainHash, encode};

fn write_stream(dir: &Path, records: u64) -> ChainHash {
    let mut prev = ChainHash::GENESIS;
    let mut buf = Vec::new();
    for seq in 0..records {
        prev = encode(
            &mut buf,
            seq,
            SystemTime::now(),
            Body::Event(br#"{"who":"alice"}"#),
            &prev,
        );
    }
    std::fs::write(dir.join("audit-20261123-000000.jsonl"), buf).unwrap();
    prev
}

fn verify(dir: &Path) -> (Option<i32>, String, String) {
    verify_with(dir, &[])
}

fn verify_with(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_latchfree"))
        .args(["audit", "verify"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

#[test]
fn intact_stream_exits_zero_and_prints_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let head = write_stream(dir.path(), 12);
    let (code, stdout, _) = verify(dir.path());
    assert_eq!(code, Some(0));
    assert!(stdout.contains("12 records"), "{stdout}");
    assert!(stdout.contains(&format!("head: 11:{head}")), "{stdout}");
}

#[test]
fn tampered_stream_exits_one_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    write_stream(dir.path(), 12);
    let path = dir.path().join("audit-20261123-000000.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let edited = lines[6].replace("alice", "mallory");
    lines[6] = &edited;
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (code, _, stderr) = verify(dir.path());
    assert_eq!(code, Some(1));
    assert!(stderr.contains("audit-20261123-000000.jsonl:7"), "{stderr}");
    assert!(stderr.contains("hash does not match"), "{stderr}");
}

#[test]
fn head_must_be_contained_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let head = write_stream(dir.path(), 12);
    let anchor = format!("11:{head}");
    let (code, stdout, _) = verify_with(dir.path(), &["--head", &anchor]);
    assert_eq!(code, Some(0), "{stdout}");
    // The last record removed: the chain still verifies on its own, not
    // against the exported head.
    let path = dir.path().join("audit-20261123-000000.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, lines[..11].join("\n") + "\n").unwrap();
    assert_eq!(verify(dir.path()).0, Some(0));
    let (code, _, stderr) = verify_with(dir.path(), &["--head", &anchor]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("ends at seq 10 before the anchored head 11:"),
        "{stderr}"
    );
    let (code, _, stderr) = verify_with(dir.path(), &["--head", "11:xyz"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--head needs SEQ:HASH"), "{stderr}");
}

#[test]
fn a_stream_kept_by_retention_verifies_from_its_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let log = latchfree::audit::AuditLog::builder(dir.path())
        .max_file_bytes(4096)
        .max_files(3)
        .open()
        .unwrap();
    for n in 0..200 {
        log.log_wait(&n, latchfree::audit::Guarantee::Os).unwrap();
    }
    log.close().unwrap();
    let anchor = latchfree::audit::anchor::read_anchor(dir.path(), "audit")
        .unwrap()
        .unwrap();
    let (code, stdout, stderr) = verify(dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("from: {}:{}", anchor.seq, anchor.hash)),
        "{stdout}"
    );
    assert!(stdout.contains("head: 199:"), "{stdout}");
    // The oldest remaining file removed by hand (another one with records
    // follows it): a gap after the anchor.
    let files = latchfree::audit::verify::stream_files(dir.path(), "audit").unwrap();
    std::fs::remove_file(&files[0]).unwrap();
    let (code, _, stderr) = verify(dir.path());
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("seq {} was due", anchor.seq + 1)),
        "{stderr}"
    );
}
