//! Every value `AuditLog::log` accepts must read back: logged, the stream
//! closed, reopened (recovery resumes from the last record, whatever it
//! holds) and verified, each accepted event is in the file as the JSON
//! value it serialised to, in order. A value `log` refuses must be refused
//! with a typed error before it takes a place in the stream.
//!
//! This file is a plain module (no `#[test]`), included by the cargo-fuzz
//! target `fuzz/fuzz_targets/audit_log.rs` (arbitrary [`Event`]s: the derive
//! is active there, a binary built without `cfg(test)`) and by
//! `tests/audit_errors.rs` (seeded [`Event::random`] sequences), which both
//! call [`run`].
//!
//! The events cover what serde_json writes as `null` (`()`, `None`, NaN and
//! the infinities), raw JSON (`RawValue`, whose whitespace and line breaks
//! are written as they are), strings with control characters and nesting.

use std::path::Path;

use latchfree::audit::record;
use latchfree::audit::verify::stream_files;
use latchfree::audit::{AuditError, AuditLog, verify};
use serde::Serialize;
use serde_json::value::RawValue;

/// Most events of one input.
pub const MAX_EVENTS: usize = 32;

/// One value to log.
#[derive(Clone, Debug)]
#[cfg_attr(not(test), derive(arbitrary::Arbitrary))]
pub enum Event {
    /// `()`: `null`.
    Unit,
    /// `Option<i64>`: `null` or a number.
    Maybe(Option<i64>),
    /// A float; NaN and the infinities are written as `null`.
    Float(f64),
    /// A string, escaped by serde_json.
    Text(String),
    /// Text given as raw JSON (a `RawValue`, if it is valid JSON; as a
    /// string otherwise).
    Raw(String),
    /// A struct holding a raw value and a list of events.
    Nested(String, Vec<Event>),
}

impl Event {
    /// A pseudo-random event of at most `depth` levels of nesting. `next`
    /// returns 64 random bits.
    #[cfg(test)]
    pub fn random(next: &mut impl FnMut() -> u64, depth: u32) -> Self {
        let pick = next() % if depth == 0 { 5 } else { 6 };
        match pick {
            0 => Event::Unit,
            1 => Event::Maybe(next().is_multiple_of(2).then(|| next() as i64)),
            2 => Event::Float(
                [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.5, 1e300]
                    [(next() % 6) as usize],
            ),
            3 => {
                Event::Text(["", "a\nb", "\u{0}\u{1f}\u{7f}", "\"\\"][(next() % 4) as usize].into())
            }
            4 => Event::Raw(
                [
                    "null",
                    " {\n \"a\" :\r\n[1 , null]\n}\n",
                    "[\t]",
                    "nope",
                    "\"x\"",
                ][(next() % 5) as usize]
                    .into(),
            ),
            _ => Event::Nested(
                ["null", "{}", "1\n"][(next() % 3) as usize].into(),
                (0..next() % 3)
                    .map(|_| Event::random(next, depth - 1))
                    .collect(),
            ),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Event::Unit => ().serialize(s),
            Event::Maybe(n) => n.serialize(s),
            Event::Float(f) => f.serialize(s),
            Event::Text(t) => t.serialize(s),
            Event::Raw(json) => match RawValue::from_string(json.clone()) {
                Ok(raw) => raw.serialize(s),
                Err(_) => json.serialize(s),
            },
            Event::Nested(json, events) => {
                #[derive(Serialize)]
                struct Nested<'a> {
                    raw: &'a Event,
                    events: &'a [Event],
                }
                let raw = Event::Raw(json.clone());
                Nested { raw: &raw, events }.serialize(s)
            }
        }
    }
}

/// The JSON value an event must read back as: what serde_json writes for
/// it, or, if that holds a raw line break (from a `RawValue`), that value
/// re-serialised compactly (a record is one line), as `log` does.
fn expected(event: &Event) -> serde_json::Value {
    let text = serde_json::to_string(event).expect("events serialise");
    let value: serde_json::Value = serde_json::from_str(&text).expect("serde_json writes JSON");
    if !text.contains(['\n', '\r']) {
        return value;
    }
    let compact = serde_json::to_string(&value).unwrap();
    serde_json::from_str(&compact).unwrap()
}

/// Logs `events` into a fresh stream in `dir`, closes it, reopens it, logs
/// one more event there, and checks that the stream verifies and reads back
/// every accepted event. Returns how many were accepted.
pub fn run(dir: &Path, events: &[Event]) -> usize {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::remove_file(path).unwrap();
    }
    let events = &events[..events.len().min(MAX_EVENTS)];
    let mut accepted = Vec::new();
    let log = AuditLog::open(dir).expect("open");
    for event in events {
        match log.log(event) {
            Ok(_) => accepted.push(expected(event)),
            Err(AuditError::TooLarge { .. } | AuditError::Serialize(_)) => {}
            Err(e) => panic!("log({event:?}): {e}"),
        }
    }
    log.close().expect("close");
    // Reopening resumes from the last record, whatever event it holds.
    let log = AuditLog::open(dir).expect("reopen after the events");
    log.log(&()).expect("log after reopening");
    accepted.push(serde_json::Value::Null);
    let head = log.close().expect("close").expect("a head");
    let report = verify(dir).expect("the stream verifies");
    assert_eq!(report.records, accepted.len() as u64);
    assert_eq!(report.head, Some(head));
    let mut read = Vec::new();
    for path in stream_files(dir, "audit").unwrap() {
        let bytes = std::fs::read(&path).unwrap();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let record = record::decode(line).expect("a whole record");
            read.push(record.event.expect("an event, not a gap"));
        }
    }
    assert_eq!(read, accepted, "the events read back");
    accepted.len()
}
