//! Log-linear histogram buckets: exact below 64, then 32 equal-width buckets
//! per power of two, over the whole `u64` range.
//!
//! A value `v ≥ 32` with highest set bit `e` (so `2^e ≤ v < 2^(e+1)`) falls in
//! one of 32 sub-buckets of width `w = 2^(e-5)`, chosen by the five bits below
//! the leading one. Values below 64 get a bucket each (width 1). Every bucket
//! is reported by its midpoint, so the reported value is off from any value in
//! the bucket by at most `w / 2`, and since `v ≥ 32·w`, the relative error is at
//! most `1/64 ≈ 1.56 %` ([`MAX_RELATIVE_ERROR`]). This is the HdrHistogram
//! layout with 5 significant sub-bucket bits; the index is three integer
//! operations, with no floating point and no table.

/// Number of buckets covering `0..=u64::MAX`.
pub const BUCKETS: usize = index(u64::MAX) + 1;

/// The largest relative error of a reported percentile against the exact
/// nearest-rank value of the same samples.
pub const MAX_RELATIVE_ERROR: f64 = 1.0 / 64.0;

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

/// The bucket that holds `v`.
#[inline]
pub const fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (SUB + (e - SUB_BITS) as u64 * SUB + sub) as usize
}

/// The smallest value in bucket `i`.
pub const fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let e = (i - SUB) / SUB + SUB_BITS as u64;
    let sub = (i - SUB) % SUB;
    (SUB + sub) << (e - SUB_BITS as u64)
}

/// The largest value in bucket `i`.
pub const fn upper_bound(i: usize) -> u64 {
    if i + 1 >= BUCKETS {
        u64::MAX
    } else {
        lower_bound(i + 1) - 1
    }
}

/// The value reported for bucket `i`: its midpoint.
pub const fn midpoint(i: usize) -> u64 {
    let lo = lower_bound(i);
    lo + (upper_bound(i) - lo) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        assert_eq!(BUCKETS, 1920);
        assert_eq!(lower_bound(0), 0);
        for i in 0..BUCKETS - 1 {
            assert_eq!(upper_bound(i) + 1, lower_bound(i + 1), "bucket {i}");
            assert_eq!(index(lower_bound(i)), i);
            assert_eq!(index(upper_bound(i)), i);
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn small_values_are_exact() {
        for v in 0..64 {
            assert_eq!(midpoint(index(v)), v);
        }
    }

    #[test]
    fn midpoint_error_is_bounded() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            for probe in [v, v + 1, v * 2 - 1, v + v / 3] {
                let m = midpoint(index(probe));
                let err = (m as f64 - probe as f64).abs() / probe as f64;
                assert!(err <= MAX_RELATIVE_ERROR, "v={probe} mid={m} err={err}");
            }
            v = v * 3 / 2 + 1;
        }
    }
}
