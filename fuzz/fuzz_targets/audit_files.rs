//! Fuzzes the audit verifier and torn-tail scanner on stream files: raw
//! bytes, or valid streams with structured mutations (bytes flipped or
//! inserted, files truncated, lines deleted, duplicated, swapped or forged
//! with a valid hash of their own), written as 1 to 3 files of a stream.
//!
//! `audit::verify` and `audit::recover::scan_tail` must never panic, and
//! must agree with the model in `tests/model/audit_model.rs` (shared with
//! the seeded test in `tests/audit_stress.rs`): `verify` accepts exactly the
//! streams whose every line decodes, whose `seq` runs from 0 without a hole
//! and whose `prev` links are intact, and whose files end with a newline (so
//! it never accepts a broken chain), and otherwise names the model's first
//! break; what `scan_tail` keeps and names follows the format's rules, and
//! on the generated stream torn at every offset it keeps exactly the whole
//! lines the generator wrote before the tear.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run audit_files -- -max_total_time=30
//! ```

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/audit_model.rs"]
mod audit_model;

/// One directory for the whole run: each input replaces the files of the
/// one before.
static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|input: audit_model::Input| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    audit_model::run(dir.path(), &input);
    if let audit_model::Input::Stream { records, .. } = &input {
        audit_model::check_torn_tails(&records[..records.len().min(16)]);
    }
});
