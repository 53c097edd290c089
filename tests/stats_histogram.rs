//! Histogram accuracy against exact nearest-rank percentiles.
//!
//! Each test records a known distribution from several threads (through
//! `Histogram::record`, `Batch::record` and `Histogram::record_duration`),
//! then compares the histogram with the sorted samples:
//!
//! * count and max are exact, sum is the exact wrapping sum;
//! * every percentile is within `MAX_RELATIVE_ERROR` of the exact
//!   nearest-rank value (and equal to it below 64, where buckets are exact);
//! * every reported bucket holds exactly the samples in its range and is no
//!   wider than the log-linear layout allows.

use std::thread;
use std::time::Duration;

use latchfree::stats::{HistogramSnapshot, MAX_RELATIVE_ERROR, Stats};

const THREADS: usize = 4;

#[path = "model/xorshift.rs"]
mod xorshift;
use xorshift::XorShift;

/// Generates `per_thread` samples for each of `THREADS` threads.
fn per_thread(per_thread: usize, mut sample: impl FnMut(&mut XorShift) -> u64) -> Vec<Vec<u64>> {
    (0..THREADS)
        .map(|t| {
            let mut rng = XorShift::new(t as u64 + 1);
            (0..per_thread).map(|_| sample(&mut rng)).collect()
        })
        .collect()
}

/// The exact nearest-rank quantile `num / den` of `sorted` (non-empty):
/// the value at rank `ceil(num * n / den)`, clamped to `1..=n`.
fn exact_quantile(sorted: &[u64], num: u128, den: u128) -> u64 {
    let n = sorted.len() as u128;
    let rank = (num * n).div_ceil(den).clamp(1, n);
    sorted[rank as usize - 1]
}

/// Asserts `reported` is within the documented error of `exact`.
fn assert_close(what: &str, reported: u64, exact: u64) {
    if exact < 64 {
        assert_eq!(reported, exact, "{what}: values below 64 are exact");
    }
    let diff = reported.abs_diff(exact) as f64;
    let bound = exact as f64 * MAX_RELATIVE_ERROR + 1.0;
    assert!(
        diff <= bound,
        "{what}: reported {reported}, exact {exact}, |diff| {diff} > {bound}"
    );
}

/// Records `threads` (one sample list per thread) into a fresh histogram,
/// one thread each, and checks the result against the exact values.
fn record_and_check(name: &str, threads: &[Vec<u64>]) -> HistogramSnapshot {
    let stats = Stats::new();
    let hist = stats.histogram(name).unwrap();
    thread::scope(|s| {
        for (t, samples) in threads.iter().enumerate() {
            let (stats, hist) = (&stats, &hist);
            s.spawn(move || {
                for &v in samples {
                    match t % 3 {
                        0 => hist.record(v),
                        1 => stats.batch(|b| b.record(hist, v)),
                        _ => hist.record_duration(Duration::from_nanos(v)),
                    }
                }
            });
        }
    });
    let snap = hist.snapshot();
    assert_eq!(stats.snapshot().histogram(name), Some(&snap));

    let mut sorted: Vec<u64> = threads.iter().flatten().copied().collect();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    assert_eq!(snap.count(), n, "{name}: count");
    let sum = sorted.iter().fold(0u64, |a, &v| a.wrapping_add(v));
    assert_eq!(snap.sum(), sum, "{name}: sum (wrapping)");
    assert_eq!(
        snap.max(),
        sorted.last().copied().unwrap_or(0),
        "{name}: max"
    );

    if sorted.is_empty() {
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(snap.quantile(q), 0, "{name}: empty quantile");
        }
        assert_eq!(snap.buckets().count(), 0);
        assert_eq!(snap.mean(), 0.0);
        return snap;
    }

    // The named percentiles.
    let named = [
        ("p50", snap.p50(), 500),
        ("p90", snap.p90(), 900),
        ("p99", snap.p99(), 990),
        ("p99.9", snap.p999(), 999),
        ("p100", snap.quantile(1.0), 1000),
    ];
    for (label, reported, per_mille) in named {
        let exact = exact_quantile(&sorted, per_mille, 1000);
        assert_close(&format!("{name} {label}"), reported, exact);
    }
    // The reported value is capped at the exact max.
    assert!(snap.quantile(1.0) <= snap.max());
    assert_close(&format!("{name} p0"), snap.quantile(0.0), sorted[0]);

    // A sweep over dyadic quantiles (q * n is exact in f64), which must also
    // be non-decreasing in q.
    let mut previous = 0;
    for k in 0..=1024u32 {
        let q = f64::from(k) / 1024.0;
        let reported = snap.quantile(q);
        let exact = exact_quantile(&sorted, u128::from(k), 1024);
        assert_close(&format!("{name} q={k}/1024"), reported, exact);
        assert!(
            reported >= previous,
            "{name}: quantile decreased at {k}/1024"
        );
        previous = reported;
    }

    // Buckets: sorted, disjoint, log-linear widths, and each count exact.
    let mut total = 0;
    let mut next_lo = 0u64;
    for (lo, hi, count) in snap.buckets() {
        assert!(
            lo >= next_lo && lo <= hi,
            "{name}: bucket [{lo}, {hi}] out of order"
        );
        let width = hi - lo; // one less than the number of values in it
        assert!(
            width < (lo / 32).max(1),
            "{name}: bucket [{lo}, {hi}] wider than lo/32"
        );
        let inside = sorted.partition_point(|&v| v <= hi) - sorted.partition_point(|&v| v < lo);
        assert_eq!(count, inside as u64, "{name}: bucket [{lo}, {hi}]");
        assert!(count > 0, "{name}: empty buckets are not listed");
        total += count;
        next_lo = hi.saturating_add(1);
    }
    assert_eq!(total, n, "{name}: bucket counts add up to count");
    snap
}

#[test]
fn uniform() {
    record_and_check("uniform", &per_thread(25_000, |r| r.below(1_000_000)));
}

#[test]
fn exponential() {
    // Inverse-CDF sampling with mean 50,000: a long right tail.
    let h = record_and_check(
        "exponential",
        &per_thread(25_000, |r| (-r.unit().ln() * 50_000.0) as u64),
    );
    // Sanity of the generator itself: the median of Exp(mean m) is m ln 2.
    let p50 = h.p50() as f64;
    assert!((p50 - 50_000.0 * 2f64.ln()).abs() < 2_000.0, "p50 {p50}");
}

#[test]
fn log_uniform_up_to_2_pow_41() {
    record_and_check(
        "log_uniform",
        &per_thread(25_000, |r| {
            let e = r.below(42);
            (1u64 << e) | (r.next() & ((1u64 << e) - 1))
        }),
    );
}

#[test]
fn large_values_above_2_pow_40() {
    // Up to 2^62: sums wrap, which the histogram documents and we check.
    record_and_check(
        "large",
        &per_thread(25_000, |r| {
            let e = 40 + r.below(23);
            (1u64 << e) + r.below(1u64 << e)
        }),
    );
}

#[test]
fn values_at_and_around_powers_of_two() {
    let mut all = vec![0, u64::MAX, u64::MAX - 1];
    for k in 0..64 {
        let p = 1u64 << k;
        all.extend([p - 1, p, p + 1, p + p / 2]);
    }
    // Several copies, split round-robin over the threads.
    let mut threads = vec![Vec::new(); THREADS];
    for copy in 0..50 {
        for (i, &v) in all.iter().enumerate() {
            threads[(i + copy) % THREADS].push(v);
        }
    }
    let h = record_and_check("powers_of_two", &threads);
    assert_eq!(h.max(), u64::MAX);
    // p100 is the last bucket's midpoint (below the max, so not capped).
    assert_close("powers_of_two p100", h.quantile(1.0), u64::MAX);
}

#[test]
fn mostly_zeros() {
    let h = record_and_check(
        "mostly_zeros",
        &per_thread(
            25_000,
            |r| {
                if r.below(10) < 7 { 0 } else { r.below(1 << 30) }
            },
        ),
    );
    assert_eq!(h.p50(), 0, "70% zeros: the median is exactly 0");
}

#[test]
fn two_clusters_far_apart() {
    // Half the samples are 10, half 1e9: a percentile one rank off near the
    // median would be off by a factor of 10^8.
    record_and_check(
        "two_clusters",
        &per_thread(
            5_000,
            |r| if r.next() % 2 == 0 { 10 } else { 1_000_000_000 },
        ),
    );
}

#[test]
fn exact_halves_pick_the_lower_rank() {
    // Deterministic halves (no generator): ranks 1..=n/2 are 7, the rest 9e9.
    let threads: Vec<Vec<u64>> = (0..THREADS)
        .map(|t| {
            let v = if t % 2 == 0 { 7 } else { 9_000_000_000 };
            vec![v; 1_000]
        })
        .collect();
    let h = record_and_check("halves", &threads);
    assert_eq!(h.p50(), 7);
    assert_eq!(h.quantile(0.5001), h.p90());
    assert_close("halves p90", h.p90(), 9_000_000_000);
}

#[test]
fn single_sample_and_empty() {
    let h = record_and_check("single", &[vec![1_000_001]]);
    // Capped at the exact max, so a single sample is reported exactly.
    assert_eq!(h.p50(), 1_000_001);
    assert_eq!(h.mean(), 1_000_001.0);
    record_and_check("empty", &[vec![], vec![]]);
}

#[test]
fn mean_is_sum_over_count() {
    let h = record_and_check("mean", &per_thread(1_000, |r| r.below(1_000)));
    assert_eq!(h.mean(), h.sum() as f64 / h.count() as f64);
}
