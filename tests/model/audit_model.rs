//! A simple model of what `latchfree::audit::verify` must accept, and the
//! format's rules for `latchfree::audit::recover::scan_tail`, with the one
//! code path that builds a stream's files from an [`Input`], runs the real
//! functions on them and checks them.
//!
//! This file is a plain module (no `#[test]`), included twice:
//!
//! * by the cargo-fuzz target `fuzz/fuzz_targets/audit_files.rs`, which
//!   decodes fuzzer bytes into an [`Input`] (the `arbitrary` derive below is
//!   active there: a binary, built without `cfg(test)`) and calls [`run`];
//! * by the integration test `tests/audit_stress.rs`, which builds inputs
//!   from a seeded generator ([`Input::random`]) and calls [`run`], so the
//!   check also runs in plain `cargo test`.
//!
//! An input is either arbitrary bytes for 1 to 3 files, or a valid stream
//! (events and gap markers encoded by `record::encode`, split over 1 to 3
//! files) with a list of mutations applied: flip a byte, truncate a file,
//! insert bytes, delete, duplicate or swap lines, or *forge* a line: re-encode
//! its record with another `seq`, another `prev` or another time, so that
//! its own hash is valid and only the chain's links can tell.
//!
//! The model of a valid stream is the definition, line by line: in name
//! order, every file is empty or ends with `\n`; every line decodes with
//! `record::decode` (which checks the line's own hash); `seq` runs from 0
//! without a hole; each `prev` is the previous record's hash (all zeros for
//! the first). [`run`] asserts that `verify` accepts exactly the streams the
//! model accepts (so it never accepts a broken chain, and never rejects a
//! sound one), with the model's counts and head, and otherwise names the
//! model's first break: the same file, line and problem.
//!
//! Torn-tail recovery is checked against the spec, not against a second
//! scanner: on any file, [`check_scan_tail`] asserts what the kept bytes and
//! the record named must look like; on generated streams,
//! [`check_torn_tails`] tears the file at every byte offset and after every
//! whole line (with garbage suffixes), and asserts that recovery keeps
//! exactly the whole lines the generator wrote before the tear and resumes
//! from the last of them. Nothing may panic.

use std::path::Path;
use std::time::{Duration, SystemTime};

use latchfree::audit::Head;
use latchfree::audit::record::{self, Body, ChainHash, Record};
use latchfree::audit::recover::{Tail, scan_tail};
use latchfree::audit::verify::{Problem, VerifyError, VerifyReport, verify};

/// Most files an input makes.
pub const MAX_FILES: usize = 3;
/// Most records of a generated stream, and mutations applied to it.
pub const MAX_RECORDS: usize = 48;
pub const MAX_MUTATIONS: usize = 8;
/// Most bytes of one raw file.
pub const MAX_RAW_BYTES: usize = 4096;

// `cfg_attr(not(test), derive(arbitrary::Arbitrary))`: the derive is for the
// fuzz target (a binary, built without `cfg(test)`); the integration test
// has no `arbitrary` dependency (see `tests/model/ring_model.rs`).

/// What to write to the stream's files.
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Input {
    /// Arbitrary bytes, one entry per file (the first [`MAX_FILES`]; at
    /// least one file, empty if none is given).
    Raw(Vec<Vec<u8>>),
    /// A valid stream of these records, split over files at the two cuts
    /// (each taken modulo the record count plus one, so files can be
    /// empty), then mutated in order.
    Stream {
        records: Vec<Spec>,
        cuts: (u8, u8),
        mutations: Vec<Mutation>,
    },
}

/// One record of a generated stream (a `Number` divisible by 3 is written
/// in record format version 1, the rest in the current one).
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Spec {
    /// An event `{"n":N}`.
    Number(u32),
    /// An event that is a JSON string (serde_json escapes it: never a raw
    /// newline).
    Text(String),
    /// A gap marker for this many dropped events.
    Gap(u16),
}

/// A change to the files. Lines are numbered across all files (the pieces
/// between newlines, not counting what follows a file's last newline);
/// every index is taken modulo the count it picks from.
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Mutation {
    /// XORs one byte of a file with `xor` (1 if `xor` is 0).
    FlipByte { file: u8, at: u16, xor: u8 },
    /// Cuts a file to `at` bytes.
    Truncate { file: u8, at: u16 },
    /// Inserts bytes into a file.
    Insert { file: u8, at: u16, bytes: Vec<u8> },
    /// Removes a line (and its newline).
    DeleteLine { line: u16 },
    /// Repeats a line right after itself.
    DuplicateLine { line: u16 },
    /// Exchanges the contents of two lines.
    SwapLines { a: u16, b: u16 },
    /// Re-encodes a line's record with a valid hash of its own: `seq` moved
    /// by `seq_delta`, `prev` as chosen, the time moved by `secs`. A line
    /// that does not decode is left alone.
    Forge {
        line: u16,
        seq_delta: i8,
        prev: Prev,
        secs: u8,
    },
}

/// The `prev` a forged record gets.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Prev {
    /// Its own.
    Keep,
    /// All zeros.
    Genesis,
    /// The hash of another line's record (its own `prev` if that line does
    /// not decode).
    HashOf(u16),
}

impl Input {
    /// A pseudo-random input: mostly mutated streams, sometimes raw bytes.
    /// `next` returns 64 random bits.
    #[cfg(test)]
    pub fn random(next: &mut impl FnMut() -> u64) -> Self {
        let mut below = |n: u64| next() % n;
        if below(8) == 0 {
            let files = 1 + below(MAX_FILES as u64);
            return Input::Raw(
                (0..files)
                    .map(|_| {
                        let len = below(64);
                        (0..len)
                            .map(|_| b"{}\"\n:,0a s"[below(10) as usize])
                            .collect()
                    })
                    .collect(),
            );
        }
        let records = (0..below(MAX_RECORDS as u64))
            .map(|_| match below(4) {
                0 => Spec::Gap(below(1000) as u16),
                1 => Spec::Text(
                    ["", "a\nb", "\u{e9}t\u{e9}", "\"quoted\""][below(4) as usize].into(),
                ),
                _ => Spec::Number(below(1 << 20) as u32),
            })
            .collect();
        let cuts = (below(256) as u8, below(256) as u8);
        // A quarter of the streams stay intact.
        let count = if below(4) == 0 { 0 } else { 1 + below(3) };
        let mutations = (0..count)
            .map(|_| {
                let small = |n: u64| n as u16;
                match below(7) {
                    0 => Mutation::FlipByte {
                        file: below(3) as u8,
                        at: small(below(4096)),
                        xor: below(256) as u8,
                    },
                    1 => Mutation::Truncate {
                        file: below(3) as u8,
                        at: small(below(4096)),
                    },
                    2 => Mutation::Insert {
                        file: below(3) as u8,
                        at: small(below(4096)),
                        bytes: [&b"\n"[..], b"x", b"{}\n"][below(3) as usize].to_vec(),
                    },
                    3 => Mutation::DeleteLine {
                        line: small(below(64)),
                    },
                    4 => Mutation::DuplicateLine {
                        line: small(below(64)),
                    },
                    5 => Mutation::SwapLines {
                        a: small(below(64)),
                        b: small(below(64)),
                    },
                    _ => Mutation::Forge {
                        line: small(below(64)),
                        seq_delta: [0, 0, 1, -1, 5][below(5) as usize],
                        prev: match below(3) {
                            0 => Prev::Keep,
                            1 => Prev::Genesis,
                            _ => Prev::HashOf(small(below(64))),
                        },
                        secs: below(3) as u8,
                    },
                }
            })
            .collect();
        Input::Stream {
            records,
            cuts,
            mutations,
        }
    }

    /// The files' contents, in name order.
    pub fn files(&self) -> Vec<Vec<u8>> {
        match self {
            Input::Raw(files) => {
                let mut files: Vec<Vec<u8>> = files
                    .iter()
                    .take(MAX_FILES)
                    .map(|f| f[..f.len().min(MAX_RAW_BYTES)].to_vec())
                    .collect();
                if files.is_empty() {
                    files.push(Vec::new());
                }
                files
            }
            Input::Stream {
                records,
                cuts,
                mutations,
            } => {
                let mut files = stream(&records[..records.len().min(MAX_RECORDS)], *cuts);
                for mutation in mutations.iter().take(MAX_MUTATIONS) {
                    mutate(&mut files, mutation);
                }
                files
            }
        }
    }
}

/// The time of record `seq` in generated streams.
fn time(seq: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 + seq)
}

/// Encodes a valid stream and splits it over 1 to 3 files.
fn stream(specs: &[Spec], cuts: (u8, u8)) -> Vec<Vec<u8>> {
    let lines = stream_lines(specs);
    let n = lines.len() + 1;
    let mut at = [usize::from(cuts.0) % n, usize::from(cuts.1) % n];
    at.sort();
    // Both cuts at one end make one file, both at one inner point two, and
    // otherwise three (the first or last empty when a cut is at an end).
    if at == [0, 0] || at == [n - 1, n - 1] {
        vec![lines.concat()]
    } else if at[0] == at[1] {
        vec![lines[..at[0]].concat(), lines[at[0]..].concat()]
    } else {
        vec![
            lines[..at[0]].concat(),
            lines[at[0]..at[1]].concat(),
            lines[at[1]..].concat(),
        ]
    }
}

/// The encoded lines (each with its newline) of a valid stream of `specs`.
fn stream_lines(specs: &[Spec]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut prev = ChainHash::GENESIS;
    for (seq, spec) in (0u64..).zip(specs) {
        let json;
        let body = match spec {
            Spec::Number(n) => {
                json = format!("{{\"n\":{n}}}").into_bytes();
                Body::Event(&json)
            }
            Spec::Text(text) => {
                json = serde_json::to_vec(text).unwrap();
                Body::Event(&json)
            }
            Spec::Gap(n) => Body::Gap(u64::from(*n)),
        };
        let mut line = Vec::new();
        // Some records in the format older releases wrote (version 1): a
        // stream continued across an upgrade, and both formats read back.
        prev = match spec {
            Spec::Number(n) if n % 3 == 0 => {
                record::encode_v1(&mut line, seq, time(seq), body, &prev)
            }
            _ => record::encode(&mut line, seq, time(seq), body, &prev),
        };
        lines.push(line);
    }
    lines
}

/// Where line `index` (across all files) is: `(file, line in file)`.
fn line_at(files: &[Vec<u8>], index: usize) -> Option<(usize, usize)> {
    let counts: Vec<usize> = files
        .iter()
        .map(|f| f.iter().filter(|&&b| b == b'\n').count())
        .collect();
    let total: usize = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let mut index = index % total;
    for (file, &count) in counts.iter().enumerate() {
        if index < count {
            return Some((file, index));
        }
        index -= count;
    }
    None
}

/// The whole lines of a file (without their newline) and what follows the
/// last newline.
fn split(file: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut pieces: Vec<Vec<u8>> = file.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let rest = pieces.pop().unwrap_or_default();
    (pieces, rest)
}

fn join(lines: &[Vec<u8>], rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(rest);
    out
}

/// Applies `f` to the whole lines of one file.
fn edit_lines(files: &mut [Vec<u8>], file: usize, f: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let (mut lines, rest) = split(&files[file]);
    f(&mut lines);
    files[file] = join(&lines, &rest);
}

fn line(files: &[Vec<u8>], (file, n): (usize, usize)) -> Vec<u8> {
    split(&files[file]).0.swap_remove(n)
}

fn mutate(files: &mut [Vec<u8>], mutation: &Mutation) {
    let count = files.len();
    let file_of = |i: u8| usize::from(i) % count;
    match *mutation {
        Mutation::FlipByte { file, at, xor } => {
            let file = &mut files[file_of(file)];
            if !file.is_empty() {
                let at = usize::from(at) % file.len();
                file[at] ^= xor.max(1);
            }
        }
        Mutation::Truncate { file, at } => {
            let file = &mut files[file_of(file)];
            let at = usize::from(at) % (file.len() + 1);
            file.truncate(at);
        }
        Mutation::Insert {
            file,
            at,
            ref bytes,
        } => {
            let file = &mut files[file_of(file)];
            let at = usize::from(at) % (file.len() + 1);
            let bytes = &bytes[..bytes.len().min(64)];
            file.splice(at..at, bytes.iter().copied());
        }
        Mutation::DeleteLine { line } => {
            if let Some((file, n)) = line_at(files, line.into()) {
                edit_lines(files, file, |lines| {
                    lines.remove(n);
                });
            }
        }
        Mutation::DuplicateLine { line } => {
            if let Some((file, n)) = line_at(files, line.into()) {
                edit_lines(files, file, |lines| {
                    let copy = lines[n].clone();
                    lines.insert(n, copy);
                });
            }
        }
        Mutation::SwapLines { a, b } => {
            if let (Some(a), Some(b)) = (line_at(files, a.into()), line_at(files, b.into())) {
                let (line_a, line_b) = (line(files, a), line(files, b));
                edit_lines(files, a.0, |lines| lines[a.1] = line_b);
                edit_lines(files, b.0, |lines| lines[b.1] = line_a);
            }
        }
        Mutation::Forge {
            line: index,
            seq_delta,
            prev,
            secs,
        } => {
            let Some(at) = line_at(files, index.into()) else {
                return;
            };
            let Ok(old) = record::decode(&line(files, at)) else {
                return;
            };
            let prev = match prev {
                Prev::Keep => old.prev,
                Prev::Genesis => ChainHash::GENESIS,
                Prev::HashOf(other) => line_at(files, other.into())
                    .and_then(|other| record::decode(&line(files, other)).ok())
                    .map_or(old.prev, |r| r.hash),
            };
            let seq = old.seq.saturating_add_signed(i64::from(seq_delta));
            let json = old.event.as_ref().map(|e| serde_json::to_vec(e).unwrap());
            let body = match (&json, old.gap) {
                (Some(json), _) => Body::Event(json),
                (None, gap) => Body::Gap(gap.unwrap_or(0)),
            };
            let mut forged = Vec::new();
            let ts = time(old.seq) + Duration::from_secs(u64::from(secs));
            record::encode(&mut forged, seq, ts, body, &prev);
            forged.pop(); // its newline
            edit_lines(files, at.0, |lines| lines[at.1] = forged);
        }
    }
}

/// The model's verdict: the report `verify` must give, or the first break
/// (file index, line from 1, problem).
pub fn model_verify(files: &[Vec<u8>]) -> Result<VerifyReport, (usize, usize, Problem)> {
    let mut report = VerifyReport {
        files: files.len(),
        records: 0,
        gap_markers: 0,
        dropped: 0,
        head: None,
    };
    for (f, file) in files.iter().enumerate() {
        let (lines, rest) = split(file);
        for (n, line) in lines.iter().enumerate() {
            let at = |problem| (f, n + 1, problem);
            let record = record::decode(line).map_err(|e| at(Problem::Record(e)))?;
            let (expected, expected_prev) = match report.head {
                Some(head) => (head.seq + 1, head.hash),
                None => (0, ChainHash::GENESIS),
            };
            if record.seq != expected {
                return Err(at(Problem::SeqGap {
                    expected,
                    found: record.seq,
                }));
            }
            if record.prev != expected_prev {
                return Err(at(Problem::ChainBroken {
                    expected: expected_prev,
                    found: record.prev,
                }));
            }
            report.records += 1;
            if let Some(n) = record.gap {
                report.gap_markers += 1;
                report.dropped += n;
            }
            report.head = Some(Head {
                seq: record.seq,
                hash: record.hash,
            });
        }
        if !rest.is_empty() {
            return Err((f, lines.len() + 1, Problem::TornTail));
        }
    }
    Ok(report)
}

/// What the format's spec says of `scan_tail` on any bytes, checked
/// without scanning them the way it does: what it keeps ends at a newline
/// (or is nothing) and no newline follows it; it names a record exactly when
/// it keeps a line, and that record is the one the kept bytes end with (its
/// line ends with its own hash).
pub fn check_scan_tail(bytes: &[u8], tail: &Tail) {
    assert!(tail.keep <= bytes.len(), "keep {} past the end", tail.keep);
    assert!(
        tail.keep == 0 || bytes[tail.keep - 1] == b'\n',
        "keep {} does not end at a newline",
        tail.keep
    );
    assert!(
        !bytes[tail.keep..].contains(&b'\n'),
        "a newline after keep {}",
        tail.keep
    );
    assert_eq!(
        tail.last.is_some(),
        tail.keep > 0,
        "a record iff a kept line"
    );
    if let Some(last) = &tail.last {
        let ending = format!("\"hash\":\"{}\"}}\n", last.hash);
        assert!(
            bytes[..tail.keep].ends_with(ending.as_bytes()),
            "the record named is not the last kept line"
        );
    }
}

/// Garbage a crash or a stray write can leave after the last whole line:
/// never a newline (a torn write is the start of one line).
const TORN_SUFFIXES: &[&[u8]] = &[
    b"{",
    b"{\"seq\":",
    b"\0\0\0\0",
    b"\xff\xfe not utf-8",
    b"{\"seq\":9,\"ts\":\"x\",\"event\":null,\"prev\":\"",
];

/// Spec-level check of torn-tail recovery on generated streams: encode
/// `specs` as one file whose line boundaries are known from the generator,
/// then cut it at every byte offset, and append each torn suffix to every
/// prefix of whole lines. Recovery must keep exactly the whole lines before
/// the cut (as the generator laid them out) and resume from the last of
/// them, `None` if there is none; a newline-terminated line of garbage is
/// not a torn write and must be refused. Returns the cases checked.
pub fn check_torn_tails(specs: &[Spec]) -> usize {
    let lines = stream_lines(specs);
    let records: Vec<Record> = lines
        .iter()
        .map(|l| record::decode(&l[..l.len() - 1]).unwrap())
        .collect();
    let mut bytes = Vec::new();
    // `ends[k]`: where the first k lines end.
    let mut ends = vec![0];
    for line in &lines {
        bytes.extend_from_slice(line);
        ends.push(bytes.len());
    }
    let expect = |whole: usize| Tail {
        keep: ends[whole],
        last: whole.checked_sub(1).map(|i| records[i].clone()),
    };
    let mut checked = 0;
    for cut in 0..=bytes.len() {
        // The whole lines that end at or before the cut.
        let whole = ends.iter().rposition(|&end| end <= cut).unwrap();
        let torn = &bytes[..cut];
        assert_eq!(scan_tail(torn), Ok(expect(whole)), "cut at byte {cut}");
        checked += 1;
    }
    for (whole, &end) in ends.iter().enumerate() {
        for suffix in TORN_SUFFIXES {
            let mut torn = bytes[..end].to_vec();
            torn.extend_from_slice(suffix);
            assert_eq!(
                scan_tail(&torn),
                Ok(expect(whole)),
                "{suffix:?} after {whole} lines"
            );
            torn.push(b'\n');
            assert!(
                scan_tail(&torn).is_err(),
                "{suffix:?} as a whole line accepted"
            );
            checked += 2;
        }
    }
    checked
}

/// The name of file `i` of the stream.
pub fn file_name(i: usize) -> String {
    format!("audit-20261123-{i:06}.jsonl")
}

/// Writes the input's files to `dir` (replacing the stream's files from a
/// previous run), runs `verify` and `scan_tail`, and asserts that they
/// agree with the model. Returns whether the stream verified.
pub fn run(dir: &Path, input: &Input) -> bool {
    let files = input.files();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (i, bytes) in files.iter().enumerate() {
        std::fs::write(dir.join(file_name(i)), bytes).unwrap();
    }

    for bytes in &files {
        if let Ok(tail) = scan_tail(bytes) {
            check_scan_tail(bytes, &tail);
        }
    }

    let model = model_verify(&files);
    match (verify(dir), model) {
        (Ok(report), Ok(expected)) => {
            assert_eq!(report, expected, "verify's report");
            true
        }
        (Ok(report), Err((file, line, problem))) => panic!(
            "verify accepted a broken stream ({report:?}); the model breaks at \
             {}:{line}: {problem}",
            file_name(file)
        ),
        (Err(e), Ok(expected)) => {
            panic!("verify rejected a sound stream ({expected:?}): {e}")
        }
        (
            Err(VerifyError::Broken {
                path,
                line,
                problem,
            }),
            Err(expected),
        ) => {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                (name, line, problem),
                (file_name(expected.0), expected.1, expected.2),
                "where verify and the model say the stream breaks"
            );
            false
        }
        (Err(e), Err(_)) => panic!("verify failed to read the files: {e}"),
    }
}
