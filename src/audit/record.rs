//! One audit record: a line of JSON that carries its place in a hash chain.
//!
//! ```text
//! {"seq":7,"ts":"2026-11-23T17:45:24.123456Z","event":{...},"prev":"<64 hex>","hash":"<64 hex>"}
//! {"seq":8,"ts":"2026-11-23T17:45:24.123501Z","gap":3,"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! * `seq` numbers records from 0 with no hole; a `gap` record stands where
//!   `gap` events were dropped (only under the lossy policy), so readers see
//!   where and how many.
//! * `event` is whatever JSON value the event serialised to, `null`
//!   included: `log(&())`, `log(&None::<T>)` and `log(&f64::NAN)` (which
//!   serde_json writes as `null`) are events. A record is an event exactly
//!   when the `event` key is present. Storing `null` as it is, rather than
//!   refusing it or wrapping it, keeps every value `log` accepts readable,
//!   keeps the line format unchanged, and makes logs written before readers
//!   learned this (which hold such lines) readable and verifiable as they
//!   are: the hash covers the bytes, which did not change.
//! * `hash` is the SHA-256 of every byte of the line before `,"hash":"` —
//!   which includes `seq`, `ts`, the event and `prev`, the previous record's
//!   hash (64 zeros for the first). Editing, deleting, inserting or swapping
//!   any record breaks the chain at that point, and [`verify`](super::verify())
//!   names the first broken line.
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

/// The marker between a line's hashed part and its hash.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_TAIL_LEN: usize = HASH_KEY.len() + 64 + 2;

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
pub struct Timestamp(String);

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
        let ts = SystemTime::UNIX_EPOCH + since_epoch.min(Self::MAX);
        Self(humantime::format_rfc3339_micros(ts).to_string())
    }

    /// The formatted time.
    pub fn as_str(&self) -> &str {
        &self.0
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
    use std::io::Write as _;
    let start = out.len();
    // Writing into a `Vec` cannot fail.
    let _ = write!(out, "{{\"seq\":{seq},\"ts\":\"{}\",", ts.0);
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

/// Parses one line (without its `\n`) and checks its hash.
pub fn decode(line: &[u8]) -> Result<Record, RecordError> {
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
    fn hashes_print_and_parse_as_hex() {
        let h = ChainHash([0xab; 32]);
        assert_eq!(h.to_string(), "ab".repeat(32));
        assert_eq!(ChainHash::from_hex(&h.to_string()), Some(h));
        assert_eq!(ChainHash::from_hex(&"AB".repeat(32)), None);
        assert_eq!(ChainHash::from_hex("ab"), None);
    }
}
