//! Fuzzes the decoder of the persistent cache tier's entry files
//! (`latchfree::cache::persist::format`) on arbitrary bytes: it never
//! panics, and whatever it accepts re-encodes to exactly the same bytes
//! (there is one valid encoding of an entry), so its checksum is valid.
//! Every input is also tried with a valid header and checksum wrapped
//! around it, so the fuzzer reaches the accepting paths too.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run persist_decode -- -max_total_time=30
//! ```

#![no_main]

use latchfree::cache::persist::format::{self, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(entry) = decode(bytes) {
        let again = encode(entry.deadline, entry.key, entry.value).expect("decoded lengths fit");
        assert_eq!(again, bytes, "an accepted file re-encodes to itself");
    }
    // A well-formed file built from the input: accepted, and every damage
    // of one byte of it is rejected.
    let split = bytes
        .first()
        .map_or(0, |&b| usize::from(b))
        .min(bytes.len());
    let (key, value) = bytes.split_at(split);
    let deadline = bytes.len() as u64 * 0x9E37_79B9;
    let file = encode(deadline, key, value).expect("small inputs fit");
    let entry = decode(&file).expect("a fresh encoding decodes");
    assert_eq!(
        (entry.deadline, entry.key, entry.value),
        (deadline, key, value)
    );
    assert_eq!(
        file.len(),
        format::HEADER_LEN + bytes.len() + format::CHECKSUM_LEN
    );
    let at = deadline as usize % file.len();
    let mut damaged = file.clone();
    damaged[at] ^= 1 << (bytes.len() % 8);
    assert!(
        decode(&damaged).is_err(),
        "a flipped bit at {at} is rejected"
    );
    assert!(
        decode(&file[..file.len() - 1]).is_err(),
        "a truncated file is rejected"
    );
});
