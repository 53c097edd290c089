//! Fuzzes `AuditLog::log` with arbitrary values (including those serde_json
//! writes as `null`, and raw JSON with line breaks): every value it accepts
//! must read back through close, reopen (recovery) and verify; see
//! `tests/model/audit_events.rs`, shared with the seeded test in
//! `tests/audit_errors.rs`.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run audit_log -- -max_total_time=30
//! ```

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/audit_events.rs"]
mod audit_events;

/// One directory for the whole run: each input replaces the stream of the
/// one before.
static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|events: Vec<audit_events::Event>| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    audit_events::run(dir.path(), &events);
});
