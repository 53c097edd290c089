//! One audit record: a line of JSON that carries its place in a hash chain.
//!
//! ```text
//! {"v":2,"seq":7,"ts":"2026-11-23T17:45:24.123456Z","event":{...},"prev":"<64 hex>","hash":"<64 hex>"}
//! {"v":2,"seq":8,"ts":"2026-11-23T17:45:24.123501Z","gap":3,"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! * `v` is the record format (2; see [below](#format-versions)).
//! * `seq` numbers records from 0 with no hole; a `gap` record stands where
//!   `gap` events were dropped (only under the lossy policy), so readers see
//!   where and how many.
//! * `event` is whatever JSON value the event serialised to, `null`
//!   included: `log(&())`, `log(&None::<T>)` and `log(&f64::NAN)` (which
//!   serde_json writes as `null`) are events. A record is an event exactly
//!   when the `event` key is present. Storing `null` as it is, rather than
//!   refusing it or wrapping it, keeps every value `log` accepts readable.
//! * `hash` links the record into the chain:
//!
//!   ```text
//!   body = SHA-256(event bytes, exactly as in the line)   for an event
//!        = N as 8 bytes big-endian, then 24 zero bytes     for a gap of N
//!   hash = SHA-256("LFA2" ‖ seq as 8 bytes big-endian ‖ len(ts) as 1 byte ‖ ts
//!                  ‖ kind (b'E' or b'G') ‖ body ‖ prev)
//!   ```
//!
//!   where `prev` is the previous record's hash (32 zero bytes for the
//!   first). The event's digest is computed by the thread that logs it, in
//!   parallel with every other thread; the writer only hashes the fixed
//!   ~110 bytes of the link (two SHA-256 blocks), whatever the event's size.
//!
//! # Why the chain is still a proof
//!
//! Every byte of a line is a function of what `hash` covers: the line is
//! parsed by position, not as free JSON ([`decode`] accepts exactly the
//! bytes [`encode`] writes: a canonical `seq` and `gap`, lowercase hex, no
//! whitespace outside the event), and the event's own bytes enter through
//! their digest. The input of the link is unambiguous (fixed-width fields
//! and one length-prefixed one), so two different records can only share a
//! `hash` through a SHA-256 collision, of the link or of the event's
//! digest. Hence, as with a hash over the whole line, editing a record
//! changes its `hash` (or makes it disagree with its stored one), which the
//! next record's `prev` no longer matches; removing, inserting or swapping
//! records breaks `seq` or `prev` at that point; and [`verify`](super::verify())
//! recomputes both digests of every record and names the first broken line.
//!
//! # Format versions
//!
//! Version 1 lines (`{"seq":…}`, no `v`) hashed the line's bytes before
//! `,"hash":"` with one SHA-256, which made the single writer hash every
//! byte of every event. They are still read, recovered from and verified;
//! a stream written by an older release continues in version 2 (a v2
//! record's `prev` is the v1 record's hash, the same 32 bytes), so the
//! chain runs unbroken across the change. New records are always version 2.
//!
//! # What the chain proves, and what it does not
//!
//! It proves that the records form one unbroken sequence, each unchanged
//! since its successor was written. It does not prove who wrote them: anyone
//! who can rewrite the file can recompute the chain from the point they
//! changed to the end. Anchor it: export the latest `(seq, hash)` head to a
//! place the writer cannot rewrite (another host, a ticket, a transparency
//! log) from time to time; a copy that still contains the exported head, with
//! a chain that verifies up to it, was not rewritten before that point.

use std::fmt;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// A record's SHA-256 hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev` of the first record: all zeros.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }
}

impl ChainHash {
    /// The 64 lowercase hex digits.
    pub fn to_hex(&self) -> [u8; 64] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        out
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The digits are ASCII.
        f.write_str(std::str::from_utf8(&self.to_hex()).unwrap_or_default())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

/// A point in a chain: a record's `seq` and hash. Recovery resumes from
/// one, the verifier starts from and reports one, and exported, it anchors
/// the chain (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The record's position.
    pub seq: u64,
    /// The record's hash.
    pub hash: ChainHash,
}

/// What a record carries.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// One event, already serialised as a JSON value.
    Event(&'a [u8]),
    /// A marker for `n` events dropped at this point.
    Gap(u64),
}

/// The version [`encode`] writes.
pub const FORMAT_VERSION: u32 = 2;

/// The marker between a version 1 line's hashed part and its hash.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_TAIL_LEN: usize = HASH_KEY.len() + 64 + 2;

/// How a version 2 line starts.
const V2_START: &[u8] = b"{\"v\":2,\"seq\":";
/// `,"prev":"` + 64 hex + `","hash":"` + 64 hex + `"}`: a version 2 line's
/// fixed-length end.
const V2_TAIL_LEN: usize = 9 + 64 + 10 + 64 + 2;
/// The longest `ts` a version 2 record may carry (its length is one byte
/// of the link; the writer's are 27).
const MAX_TS_LEN: usize = 64;
/// Bytes before the event in a ring record: the event's digest.
pub(crate) const DIGEST_LEN: usize = 32;

/// The digest that stands for an event in the chain: SHA-256 of its bytes.
/// Computed by the thread that logs it, outside the writer.
pub fn event_digest(event: &[u8]) -> [u8; 32] {
    Sha256::digest(event).into()
}

/// What stands for a body in the link (see the module docs).
pub(crate) fn body_digest(body: Body<'_>) -> [u8; 32] {
    match body {
        Body::Event(event) => event_digest(event),
        Body::Gap(n) => gap_digest(n),
    }
}

fn gap_digest(n: u64) -> [u8; 32] {
    let mut digest = [0; 32];
    digest[..8].copy_from_slice(&n.to_be_bytes());
    digest
}

/// A version 2 record's hash: the link over `seq`, `ts`, the body's kind and
/// digest, and `prev` (see the module docs).
fn link(seq: u64, ts: &[u8], kind: u8, body: &[u8; 32], prev: &ChainHash) -> ChainHash {
    debug_assert!(ts.len() <= MAX_TS_LEN);
    let mut h = Sha256::new();
    h.update(b"LFA2");
    h.update(seq.to_be_bytes());
    h.update([ts.len() as u8]);
    h.update(ts);
    h.update([kind]);
    h.update(body);
    h.update(prev.0);
    ChainHash(h.finalize().into())
}

/// Appends one record line (with its `\n`) to `out` and returns its hash.
///
/// `event` bytes must be one JSON value with no raw newline (serde_json's
/// compact output); they are copied as they are.
pub fn encode(
    out: &mut Vec<u8>,
    seq: u64,
    ts: SystemTime,
    body: Body<'_>,
    prev: &ChainHash,
) -> ChainHash {
    encode_at(out, seq, &Timestamp::new(ts), body, prev)
}

/// A record timestamp, formatted once (RFC 3339, UTC, microseconds) and
/// shared by every record of a batch.
#[derive(Clone, Debug)]
pub struct Timestamp {
    text: String,
    /// Whole seconds since the epoch of `text` (clamped).
    secs: u64,
}

impl Timestamp {
    /// The last instant RFC 3339 can write (`9999-12-31T23:59:59.999999Z`).
    pub const MAX: Duration = Duration::new(253_402_300_799, 999_999_000);

    /// Formats `ts`, clamped to `1970-01-01T00:00:00.000000Z ..=
    /// 9999-12-31T23:59:59.999999Z`.
    ///
    /// A record's time comes from the [`Clock`](crate::clock::Clock) the log
    /// was given, which may be wrong; RFC 3339 cannot write years outside
    /// 0000–9999 (and the formatter starts at 1970). Clamping rather than
    /// failing is deliberate: a record's `ts` is information, not part of
    /// the chain's order (`seq` is), so a clock fault must not stop a log
    /// from accepting events, nor make a caller's wait fail after a jump.
    /// A clamped time is visible as one of the two limits.
    pub fn new(ts: SystemTime) -> Self {
        let since_epoch = ts
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let since_epoch = since_epoch.min(Self::MAX);
        let ts = SystemTime::UNIX_EPOCH + since_epoch;
        Self {
            text: humantime::format_rfc3339_micros(ts).to_string(),
            secs: since_epoch.as_secs(),
        }
    }

    /// Moves this timestamp to `ts` (clamped as by [`new`](Self::new)). Within
    /// the second already formatted only the six digits of microseconds are
    /// rewritten: the writer stamps every batch, and formatting a date each
    /// time cost more than the rest of a small batch.
    pub fn set(&mut self, ts: SystemTime) {
        let since_epoch = ts
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .min(Self::MAX);
        if since_epoch.as_secs() != self.secs || self.text.len() != 27 {
            *self = Self::new(ts);
            return;
        }
        let mut micros = since_epoch.subsec_micros();
        let mut digits = [b'0'; 6];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        // The digits are ASCII, and so is what they replace.
        self.text
            .replace_range(20..26, std::str::from_utf8(&digits).unwrap_or("000000"));
    }

    /// The formatted time.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// [`encode`] with a timestamp formatted beforehand.
pub fn encode_at(
    out: &mut Vec<u8>,
    seq: u64,
    ts: &Timestamp,
    body: Body<'_>,
    prev: &ChainHash,
) -> ChainHash {
    encode_digested(out, seq, ts, body, &body_digest(body), prev)
}

/// [`encode_at`] with the body's digest computed beforehand (for an event,
/// [`event_digest`] of its bytes, by the thread that logged it): the
/// writer's path, which hashes only the link.
pub(crate) fn encode_digested(
    out: &mut Vec<u8>,
    seq: u64,
    ts: &Timestamp,
    body: Body<'_>,
    digest: &[u8; 32],
    prev: &ChainHash,
) -> ChainHash {
    let kind = match body {
        Body::Event(_) => b'E',
        Body::Gap(_) => b'G',
    };
    let hash = link(seq, ts.text.as_bytes(), kind, digest, prev);
    out.extend_from_slice(V2_START);
    push_decimal(out, seq);
    out.extend_from_slice(b",\"ts\":\"");
    out.extend_from_slice(ts.text.as_bytes());
    match body {
        Body::Event(event) => {
            out.extend_from_slice(b"\",\"event\":");
            out.extend_from_slice(event);
        }
        Body::Gap(n) => {
            out.extend_from_slice(b"\",\"gap\":");
            push_decimal(out, n);
        }
    }
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(&prev.to_hex());
    out.extend_from_slice(b"\",\"hash\":\"");
    out.extend_from_slice(&hash.to_hex());
    out.extend_from_slice(b"\"}\n");
    hash
}

/// Appends `n` in decimal (what `write!` gives, without the formatter).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends a version 1 line (`hash` = SHA-256 of the line before
/// `,"hash":"`), as releases before format 2 wrote them: for tests of
/// reading old streams.
pub fn encode_v1(
    out: &mut Vec<u8>,
    seq: u64,
    ts: SystemTime,
    body: Body<'_>,
    prev: &ChainHash,
) -> ChainHash {
    use std::io::Write as _;
    let ts = Timestamp::new(ts);
    let start = out.len();
    // Writing into a `Vec` cannot fail.
    let _ = write!(out, "{{\"seq\":{seq},\"ts\":\"{}\",", ts.text);
    match body {
        Body::Event(event) => {
            out.extend_from_slice(b"\"event\":");
            out.extend_from_slice(event);
        }
        Body::Gap(n) => {
            let _ = write!(out, "\"gap\":{n}");
        }
    }
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(&prev.to_hex());
    out.push(b'"');
    let hash = ChainHash(Sha256::digest(&out[start..]).into());
    out.extend_from_slice(HASH_KEY);
    out.extend_from_slice(&hash.to_hex());
    out.extend_from_slice(b"\"}\n");
    hash
}

/// A record read back from a line.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Position in the stream.
    pub seq: u64,
    /// The timestamp as written (RFC 3339, UTC).
    pub ts: String,
    /// The event (`None` for a gap marker; an event that serialised to
    /// JSON `null` is `Some(Value::Null)`).
    pub event: Option<serde_json::Value>,
    /// Events dropped at this point (gap markers only).
    pub gap: Option<u64>,
    /// The previous record's hash.
    pub prev: ChainHash,
    /// This record's hash (checked against its content by [`decode`]).
    pub hash: ChainHash,
}

/// Why a line is not a valid record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not JSON, or not the record shape.
    #[error("not a record: {0}")]
    Malformed(String),
    /// The stored hash is not the hash of the line's content: edited.
    #[error("hash does not match the record's content")]
    HashMismatch,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    seq: u64,
    ts: String,
    /// `Some` whenever the key is present, even for `"event":null`: an
    /// event that serialises to `null` (`()`, `None`, `f64::NAN`) is an
    /// event, not a missing field.
    #[serde(default, deserialize_with = "present")]
    event: Option<serde_json::Value>,
    #[serde(default)]
    gap: Option<u64>,
    prev: String,
    hash: String,
}

/// A field that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// Parses one line (without its `\n`), of either format version, and
/// checks its hash.
pub fn decode(line: &[u8]) -> Result<Record, RecordError> {
    if line.starts_with(V2_START) {
        return decode_v2(line);
    }
    if line.starts_with(b"{\"v\":") {
        return Err(RecordError::Malformed(
            "unknown record format version (this release reads 1 and 2)".into(),
        ));
    }
    decode_v1(line)
}

/// Parses a version 2 line by position: it must be exactly what
/// [`encode_digested`] writes, so every byte is covered by the hash.
fn decode_v2(line: &[u8]) -> Result<Record, RecordError> {
    let malformed = |what: &str| RecordError::Malformed(what.to_string());
    let rest = &line[V2_START.len()..];
    let (seq, rest) =
        take_decimal(rest).ok_or_else(|| malformed("`seq` is not a canonical u64"))?;
    let rest = rest
        .strip_prefix(b",\"ts\":\"")
        .ok_or_else(|| malformed("`ts` must follow `seq`"))?;
    let end = rest
        .iter()
        .position(|&b| b == b'"')
        .ok_or_else(|| malformed("`ts` is not closed"))?;
    let (ts, rest) = (&rest[..end], &rest[end + 1..]);
    if ts.len() > MAX_TS_LEN || !ts.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\') {
        return Err(malformed("`ts` is not up to 64 printable ASCII characters"));
    }
    let body_len = rest
        .len()
        .checked_sub(V2_TAIL_LEN)
        .ok_or_else(|| malformed("the line is too short"))?;
    let (body, tail) = rest.split_at(body_len);
    let tail = tail
        .strip_prefix(b",\"prev\":\"")
        .and_then(|t| t.strip_suffix(b"\"}"))
        .filter(|t| t.len() == 64 + 10 + 64 && &t[64..74] == b"\",\"hash\":\"")
        .ok_or_else(|| malformed("`prev` and `hash` must end the line"))?;
    let hex = |field: &str, bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(ChainHash::from_hex)
            .ok_or_else(|| malformed(&format!("`{field}` is not 64 lowercase hex digits")))
    };
    let prev = hex("prev", &tail[..64])?;
    let hash = hex("hash", &tail[74..])?;
    let (kind, digest, event, gap) = if let Some(raw) = body.strip_prefix(b",\"event\":") {
        let event: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| RecordError::Malformed(e.to_string()))?;
        (b'E', event_digest(raw), Some(event), None)
    } else if let Some(raw) = body.strip_prefix(b",\"gap\":") {
        let n = take_decimal(raw)
            .filter(|(_, rest)| rest.is_empty())
            .map(|(n, _)| n)
            .ok_or_else(|| malformed("`gap` is not a canonical u64"))?;
        (b'G', gap_digest(n), None, Some(n))
    } else {
        return Err(malformed("a record has exactly one of `event` and `gap`"));
    };
    if link(seq, ts, kind, &digest, &prev) != hash {
        return Err(RecordError::HashMismatch);
    }
    Ok(Record {
        seq,
        // Checked above: printable ASCII.
        ts: String::from_utf8_lossy(ts).into_owned(),
        event,
        gap,
        prev,
        hash,
    })
}

/// A u64 in canonical decimal (no sign, no leading zero) at the start of
/// `bytes`, and what follows it.
fn take_decimal(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let digits = &bytes[..len];
    if len == 0 || (len > 1 && digits[0] == b'0') {
        return None;
    }
    let n = digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((n, &bytes[len..]))
}

/// Parses a version 1 line: the hash covers its bytes before `,"hash":"`.
fn decode_v1(line: &[u8]) -> Result<Record, RecordError> {
    let wire: Wire =
        serde_json::from_slice(line).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if wire.event.is_some() == wire.gap.is_some() {
        return Err(RecordError::Malformed(
            "a record has exactly one of `event` and `gap`".into(),
        ));
    }
    let bad_hash =
        |field| RecordError::Malformed(format!("`{field}` is not 64 lowercase hex digits"));
    let prev = ChainHash::from_hex(&wire.prev).ok_or_else(|| bad_hash("prev"))?;
    let hash = ChainHash::from_hex(&wire.hash).ok_or_else(|| bad_hash("hash"))?;
    // The hash covers the bytes before `,"hash":"`, which must end the line.
    let hashed_len = line.len().checked_sub(HASH_TAIL_LEN);
    let hashed = hashed_len
        .filter(|&n| line[n..].starts_with(HASH_KEY) && line.ends_with(b"\"}"))
        .map(|n| &line[..n])
        .ok_or_else(|| RecordError::Malformed("`hash` is not the last field".into()))?;
    if ChainHash(Sha256::digest(hashed).into()) != hash {
        return Err(RecordError::HashMismatch);
    }
    Ok(Record {
        seq: wire.seq,
        ts: wire.ts,
        event: wire.event,
        gap: wire.gap,
        prev,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, body: Body<'_>, prev: &ChainHash) -> (Vec<u8>, ChainHash) {
        let mut out = Vec::new();
        let hash = encode(&mut out, seq, SystemTime::UNIX_EPOCH, body, prev);
        assert_eq!(out.pop(), Some(b'\n'));
        (out, hash)
    }

    #[test]
    fn records_round_trip_and_chain() {
        let (first, h0) = line(
            0,
            Body::Event(br#"{"tool":"query","ok":true}"#),
            &ChainHash::GENESIS,
        );
        let (second, h1) = line(1, Body::Gap(3), &h0);
        let r0 = decode(&first).unwrap();
        assert_eq!(r0.seq, 0);
        assert_eq!(r0.ts, "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            r0.event,
            Some(serde_json::json!({"tool": "query", "ok": true}))
        );
        assert_eq!((r0.prev, r0.hash), (ChainHash::GENESIS, h0));
        let r1 = decode(&second).unwrap();
        assert_eq!(
            (r1.gap, r1.event, r1.prev, r1.hash),
            (Some(3), None, h0, h1)
        );
        assert_ne!(h0, h1);
    }

    #[test]
    fn any_edit_breaks_the_hash() {
        let (good, _) = line(
            5,
            Body::Event(br#"{"user":"alice","amount":10}"#),
            &ChainHash::GENESIS,
        );
        let edited = String::from_utf8(good.clone()).unwrap().replace("10", "99");
        assert_eq!(decode(edited.as_bytes()), Err(RecordError::HashMismatch));
        let reseq = String::from_utf8(good)
            .unwrap()
            .replace("\"seq\":5", "\"seq\":6");
        assert_eq!(decode(reseq.as_bytes()), Err(RecordError::HashMismatch));
    }

    #[test]
    fn malformed_lines_are_typed_errors() {
        for bad in [
            &b""[..],
            b"not json",
            b"{\"seq\":1}",
            br#"{"seq":1,"ts":"t","event":1,"gap":2,"prev":"0","hash":"0"}"#,
            br#"{"seq":1,"ts":"t","event":1,"prev":"xyz","hash":"00"}"#,
        ] {
            assert!(
                matches!(decode(bad), Err(RecordError::Malformed(_))),
                "{bad:?}"
            );
        }
        let (good, _) = line(1, Body::Gap(1), &ChainHash::GENESIS);
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(RecordError::Malformed(_))
        ));
    }

    #[test]
    fn times_outside_what_rfc_3339_writes_are_clamped() {
        let epoch = SystemTime::UNIX_EPOCH;
        let day = Duration::from_secs(86_400);
        for (ts, expected) in [
            (epoch - day, "1970-01-01T00:00:00.000000Z"),
            (epoch, "1970-01-01T00:00:00.000000Z"),
            (epoch + Timestamp::MAX, "9999-12-31T23:59:59.999999Z"),
            (epoch + Timestamp::MAX + day, "9999-12-31T23:59:59.999999Z"),
            (
                epoch + Duration::from_secs(1 << 40),
                "9999-12-31T23:59:59.999999Z",
            ),
        ] {
            assert_eq!(Timestamp::new(ts).as_str(), expected, "{ts:?}");
        }
    }

    #[test]
    fn version_2_lines_are_canonical_and_every_byte_is_covered() {
        let (good, hash) = line(
            12,
            Body::Event(br#"{"user":"alice","amount":10}"#),
            &ChainHash([0xab; 32]),
        );
        let text = String::from_utf8(good.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"v":2,"seq":12,"ts":"1970-01-01T00:00:00.000000Z","event":{"#)
        );
        assert_eq!(decode(&good).unwrap().hash, hash);
        // Each edit either breaks the hash or the canonical shape: no byte
        // of the line can change and still decode to the same hash.
        for (from, to) in [
            ("10", "11"),                          // the event
            (r#""amount":10"#, r#""amount": 10"#), // whitespace in the event
            (r#""seq":12"#, r#""seq":13"#),        // seq
            (r#""seq":12"#, r#""seq":012"#),       // a non-canonical seq
            ("00.000000Z", "00.000001Z"),          // ts
            ("abab", "abac"),                      // prev
            (r#""v":2,"#, r#""v":2, "#),           // whitespace outside the event
            (r#""v":2"#, r#""v":3"#),              // an unknown version
        ] {
            let edited = text.replacen(from, to, 1);
            assert_ne!(edited, text, "{from} not found");
            assert!(decode(edited.as_bytes()).is_err(), "{from} -> {to}");
        }
        let upper = text.replace(&ChainHash([0xab; 32]).to_string(), &"AB".repeat(32));
        assert!(decode(upper.as_bytes()).is_err(), "uppercase hex");
        // A gap's count is in the link too.
        let (gap, _) = line(13, Body::Gap(3), &hash);
        let gap = String::from_utf8(gap).unwrap();
        assert_eq!(decode(gap.as_bytes()).unwrap().gap, Some(3));
        for (from, to) in [(r#""gap":3"#, r#""gap":4"#), (r#""gap":3"#, r#""gap":03"#)] {
            assert!(
                decode(gap.replacen(from, to, 1).as_bytes()).is_err(),
                "{to}"
            );
        }
        // An event and a gap never share a link input.
        assert_ne!(body_digest(Body::Gap(0)), body_digest(Body::Event(b"")));
    }

    #[test]
    fn version_1_lines_still_decode_and_the_chain_runs_across_versions() {
        let mut old = Vec::new();
        let h0 = encode_v1(
            &mut old,
            0,
            SystemTime::UNIX_EPOCH,
            Body::Event(b"[1]"),
            &ChainHash::GENESIS,
        );
        assert!(old.starts_with(b"{\"seq\":0,"));
        let r0 = decode(&old[..old.len() - 1]).unwrap();
        assert_eq!(
            (r0.seq, r0.hash, r0.event),
            (0, h0, Some(serde_json::json!([1])))
        );
        let edited = String::from_utf8(old[..old.len() - 1].to_vec())
            .unwrap()
            .replace("[1]", "[2]");
        assert_eq!(decode(edited.as_bytes()), Err(RecordError::HashMismatch));
        let (new, _) = line(1, Body::Event(b"[2]"), &h0);
        assert_eq!(decode(&new).unwrap().prev, h0);
    }

    #[test]
    fn a_timestamp_moved_within_its_second_matches_a_fresh_one() {
        let epoch = SystemTime::UNIX_EPOCH;
        let mut ts = Timestamp::new(epoch);
        for micros in [0, 1, 999_999, 1_000_000, 1_000_007, 86_400_000_123, 5] {
            let at = epoch + Duration::from_micros(micros);
            ts.set(at);
            assert_eq!(ts.as_str(), Timestamp::new(at).as_str(), "{micros}");
        }
        ts.set(epoch + Timestamp::MAX + Duration::from_secs(9));
        assert_eq!(ts.as_str(), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn hashes_print_and_parse_as_hex() {
        let h = ChainHash([0xab; 32]);
        assert_eq!(h.to_string(), "ab".repeat(32));
        assert_eq!(ChainHash::from_hex(&h.to_string()), Some(h));
        assert_eq!(ChainHash::from_hex(&"AB".repeat(32)), None);
        assert_eq!(ChainHash::from_hex("ab"), None);
    }
}
