//! The on-disk format of one entry of the persistent tier: one file per
//! key, replaced atomically (written to a temporary file, fsynced, renamed).
//!
//! ```text
//! offset  size  field
//!      0     4  magic        b"LFCE" (latchfree cache entry)
//!      4     1  version      1
//!      5     1  kind         0 (an entry; other values are reserved)
//!      6     2  reserved     0
//!      8     8  deadline     u64 little-endian: wall-clock Unix nanoseconds of
//!                            the cache's clock after which the entry is dead;
//!                            u64::MAX for none
//!     16     4  key_len      u32 little-endian
//!     20     4  value_len    u32 little-endian
//!     24     K  key          the key, serialized with serde_json
//!   24+K     V  value        the value, serialized with serde_json
//! 24+K+V    32  checksum     SHA-256 of every byte before it
//! ```
//!
//! A file is valid only if it is exactly `24 + K + V + 32` bytes long and
//! every field and the checksum match: there is exactly one valid encoding of
//! an entry, so whatever [`decode`] accepts, [`encode`] gives back byte for
//! byte. Anything else (a truncated file, a bit flip, garbage, an empty file)
//! is rejected with a [`FormatError`]; the cache deletes such a file, counts
//! it, and treats it as a miss.
//!
//! The file of a key is named by [`file_name`]: the first 16 bytes of the
//! SHA-256 of the serialized key, in hex, then `.lfce`. The key stored in the
//! file is compared on every read, so two keys with the same name (a 128-bit
//! collision) would only cost each other's files, never return one for the
//! other.

use sha2::{Digest, Sha256};

/// The first four bytes of every entry file.
pub const MAGIC: [u8; 4] = *b"LFCE";
/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the key.
pub const HEADER_LEN: usize = 24;
/// Bytes of the trailing checksum.
pub const CHECKSUM_LEN: usize = 32;
/// The extension of entry files.
pub const EXTENSION: &str = "lfce";
/// The deadline of an entry that never expires.
pub const NO_DEADLINE: u64 = u64::MAX;

/// One decoded entry file, borrowing from its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Wall-clock Unix nanoseconds after which the entry is dead
    /// ([`NO_DEADLINE`] for none).
    pub deadline: u64,
    /// The serialized key.
    pub key: &'a [u8],
    /// The serialized value.
    pub value: &'a [u8],
}

/// Why bytes are not a valid entry file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Shorter than a header and a checksum (an empty or truncated file).
    #[error("{len} bytes: too short for an entry (at least {} bytes)", HEADER_LEN + CHECKSUM_LEN)]
    TooShort {
        /// The length found.
        len: usize,
    },
    /// The first four bytes are not [`MAGIC`].
    #[error("not an entry file (bad magic)")]
    BadMagic,
    /// A version this crate does not read.
    #[error("unsupported version {0} (this crate reads {VERSION})")]
    Version(u8),
    /// The kind or the reserved bytes are not zero.
    #[error("reserved header bytes are not zero")]
    Reserved,
    /// The lengths in the header do not add up to the file's length (a
    /// truncated or extended file).
    #[error("the header's lengths need {expected} bytes, the file has {len}")]
    Length {
        /// The length the header implies.
        expected: u64,
        /// The length found.
        len: usize,
    },
    /// The checksum does not match (a bit flip, a torn write).
    #[error("checksum mismatch")]
    Checksum,
    /// The header gives a key and value longer (together) than the
    /// configured maximum entry size; the rest of the file was not read.
    #[error("the header's key and value need {bytes} bytes, over the {max}-byte limit")]
    EntryTooLarge {
        /// Key and value bytes the header gives.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A key or value longer than `u32::MAX` bytes cannot be encoded.
    #[error("a key or value of {0} bytes is too large for an entry file")]
    TooLarge(usize),
}

/// Encodes an entry.
pub fn encode(deadline: u64, key: &[u8], value: &[u8]) -> Result<Vec<u8>, FormatError> {
    let len32 = |n: usize| u32::try_from(n).map_err(|_| FormatError::TooLarge(n));
    let (key_len, value_len) = (len32(key.len())?, len32(value.len())?);
    let mut out = Vec::with_capacity(HEADER_LEN + key.len() + value.len() + CHECKSUM_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&deadline.to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let checksum: [u8; CHECKSUM_LEN] = Sha256::digest(&out).into();
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// The header's fields, checked as far as they can be without the
/// checksum: `(deadline, key_len, value_len)`.
fn header(bytes: &[u8]) -> Result<(u64, usize, usize), FormatError> {
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(FormatError::TooShort { len: bytes.len() });
    }
    let (deadline, key_len, value_len) = header_fields(bytes)?;
    let expected = entry_bytes(key_len, value_len);
    if expected != bytes.len() as u64 {
        return Err(FormatError::Length {
            expected,
            len: bytes.len(),
        });
    }
    Ok((deadline, key_len as usize, value_len as usize))
}

/// The fixed fields of a header (`bytes` holds at least [`HEADER_LEN`]):
/// `(deadline, key_len, value_len)`.
fn header_fields(bytes: &[u8]) -> Result<(u64, u32, u32), FormatError> {
    if bytes[..4] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(FormatError::Version(bytes[4]));
    }
    if bytes[5..8] != [0, 0, 0] {
        return Err(FormatError::Reserved);
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(b)
    };
    Ok((u64_at(8), u32_at(16), u32_at(20)))
}

/// The length of a file holding a key and a value of these lengths.
fn entry_bytes(key_len: u32, value_len: u32) -> u64 {
    (HEADER_LEN + CHECKSUM_LEN) as u64 + u64::from(key_len) + u64::from(value_len)
}

/// From the first [`HEADER_LEN`] bytes of a file alone: the length the
/// whole file must have, once its key and value (together) are found to
/// be at most `max_entry_bytes`. Lets a reader refuse a huge or
/// inconsistent file before reading (or allocating for) the rest of it.
pub fn entry_len(header: &[u8], max_entry_bytes: u64) -> Result<u64, FormatError> {
    if header.len() < HEADER_LEN {
        return Err(FormatError::TooShort { len: header.len() });
    }
    let (_, key_len, value_len) = header_fields(header)?;
    let entry = u64::from(key_len) + u64::from(value_len);
    if entry > max_entry_bytes {
        return Err(FormatError::EntryTooLarge {
            bytes: entry,
            max: max_entry_bytes,
        });
    }
    Ok(entry_bytes(key_len, value_len))
}

/// Decodes and checks an entry file's bytes. Never panics.
pub fn decode(bytes: &[u8]) -> Result<EntryRef<'_>, FormatError> {
    let (deadline, key_len, value_len) = header(bytes)?;
    let body = bytes.len() - CHECKSUM_LEN;
    let checksum: [u8; CHECKSUM_LEN] = Sha256::digest(&bytes[..body]).into();
    if checksum[..] != bytes[body..] {
        return Err(FormatError::Checksum);
    }
    let key = &bytes[HEADER_LEN..HEADER_LEN + key_len];
    let value = &bytes[HEADER_LEN + key_len..HEADER_LEN + key_len + value_len];
    Ok(EntryRef {
        deadline,
        key,
        value,
    })
}

/// The name of the file that holds the entry of the serialized `key`: 32
/// hex digits (the first 16 bytes of its SHA-256) and `.lfce`.
pub fn file_name(key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    let mut name = String::with_capacity(32 + 1 + EXTENSION.len());
    for b in &digest[..16] {
        name.push(char::from(HEX[usize::from(b >> 4)]));
        name.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    name.push('.');
    name.push_str(EXTENSION);
    name
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_layout() {
        let bytes = encode(0x0102_0304_0506_0708, b"\"k\"", b"[1,2]").unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 3 + 5 + CHECKSUM_LEN);
        assert_eq!(&bytes[..8], b"LFCE\x01\0\0\0");
        assert_eq!(&bytes[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &[3, 0, 0, 0, 5, 0, 0, 0]);
        let entry = decode(&bytes).unwrap();
        assert_eq!(entry.deadline, 0x0102_0304_0506_0708);
        assert_eq!(entry.key, b"\"k\"");
        assert_eq!(entry.value, b"[1,2]");
        assert_eq!(
            encode(entry.deadline, entry.key, entry.value).unwrap(),
            bytes
        );
    }

    #[test]
    fn every_damage_is_rejected() {
        let bytes = encode(42, b"1", b"\"value\"").unwrap();
        assert_eq!(decode(&[]), Err(FormatError::TooShort { len: 0 }));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&flipped).is_err(), "bit {bit} flipped");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(FormatError::Length { .. })));
        assert_eq!(decode(&[0xAB; 100]), Err(FormatError::BadMagic));
    }

    #[test]
    fn file_names_are_hex_of_the_key_digest() {
        let name = file_name(b"7");
        assert_eq!(name.len(), 32 + 5);
        assert!(name.ends_with(".lfce"));
        assert!(name[..32].bytes().all(|b| HEX.contains(&b)));
        assert_ne!(name, file_name(b"8"));
    }
}
