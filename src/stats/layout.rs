//! Histogram bucket layouts: the precise log-linear one, and bounded ones
//! cheap enough for labelled histograms.
//!
//! A histogram takes one slot per bucket in every thread's shard, plus
//! three (count, sum, max). The log-linear layout ([`Layout::log_linear`],
//! the default) has 1,920 buckets over the whole `u64` range and reports
//! percentiles within 1/64 of exact: about 15 KiB per histogram per thread,
//! which is right for a few latency histograms and wrong for a thousand
//! labelled ones. A bounded layout has the buckets a Prometheus histogram
//! has: `n` upper bounds and `+Inf`, so `n + 4` slots.
//!
//! * [`Layout::fixed`]: user-given upper bounds (finite, strictly
//!   increasing, at least one), as `prometheus-client`'s and the `metrics`
//!   exporter's buckets are given.
//! * [`Layout::exponential`]: `start, start·factor, …` (`count` bounds),
//!   as `prometheus_client::metrics::histogram::exponential_buckets`.
//!
//! A bounded layout records `f64` samples (seconds, bytes, ratios): a
//! sample `v` goes into the first bucket whose bound is `≥ v` (Prometheus'
//! `le`), found by binary search; the sum is kept as an `f64` and the max
//! as an order-preserving key of its bits (below), so the shard's integer
//! `max` keeps it exact. Percentiles of a bounded histogram are bucket
//! bounds, as in Prometheus' `histogram_quantile`.

use std::sync::Arc;

use super::StatsError;
use super::buckets::BUCKETS;

/// Most bounds a bounded layout may have.
pub const MAX_BOUNDS: usize = 1024;

/// Prometheus' default histogram buckets, in seconds (5 ms to 10 s): the
/// layout of the `metrics` recorder's and the `tower` layer's histograms.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a histogram's samples are bucketed. Chosen per histogram with
/// [`Stats::histogram_with_layout`](super::Stats::histogram_with_layout).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    bounds: Option<Arc<[f64]>>,
}

impl Layout {
    /// The default: log-linear buckets over all of `u64`, percentiles within
    /// [`MAX_RELATIVE_ERROR`](super::MAX_RELATIVE_ERROR); takes
    /// [`HISTOGRAM_SLOTS`](super::HISTOGRAM_SLOTS) slots.
    pub fn log_linear() -> Self {
        Self { bounds: None }
    }

    /// Buckets with the given upper bounds (Prometheus `le`), plus `+Inf`:
    /// `bounds.len() + 4` slots.
    ///
    /// # Errors
    ///
    /// [`StatsError::InvalidLayout`] unless the bounds are finite, strictly
    /// increasing, and 1 to [`MAX_BOUNDS`] of them.
    ///
    /// ```
    /// use latchfree::stats::{Layout, StatsError};
    /// assert!(Layout::fixed([0.005, 0.01, 0.1, 1.0]).is_ok());
    /// assert!(matches!(Layout::fixed([1.0, 1.0]), Err(StatsError::InvalidLayout { .. })));
    /// assert!(Layout::fixed([]).is_err());
    /// assert!(Layout::fixed([f64::NAN]).is_err());
    /// ```
    pub fn fixed(bounds: impl AsRef<[f64]>) -> Result<Self, StatsError> {
        let bounds = bounds.as_ref();
        let invalid = |reason: String| {
            Err(StatsError::InvalidLayout {
                reason,
                bounds: bounds.iter().map(|b| format!("{b}")).collect(),
            })
        };
        if bounds.is_empty() || bounds.len() > MAX_BOUNDS {
            return invalid(format!(
                "1 to {MAX_BOUNDS} bounds are needed, not {}",
                bounds.len()
            ));
        }
        if let Some(b) = bounds.iter().find(|b| !b.is_finite()) {
            return invalid(format!("bound {b} is not finite"));
        }
        if let Some(w) = bounds.windows(2).find(|w| w[0] >= w[1]) {
            return invalid(format!(
                "bounds must strictly increase, but {} is followed by {}",
                w[0], w[1]
            ));
        }
        Ok(Self {
            bounds: Some(Arc::from(bounds)),
        })
    }

    /// `count` bounds `start, start·factor, start·factor², …`, plus `+Inf`.
    ///
    /// # Errors
    ///
    /// [`StatsError::InvalidLayout`] unless `start > 0`, `factor > 1`, both
    /// finite, `count` is 1 to [`MAX_BOUNDS`] and every bound is finite.
    ///
    /// ```
    /// use latchfree::stats::Layout;
    /// let l = Layout::exponential(0.001, 2.0, 12)?;
    /// assert_eq!(l.bounds().map(|b| b.len()), Some(12));
    /// assert_eq!(l.bounds().map(|b| b[3]), Some(0.008));
    /// # Ok::<(), latchfree::stats::StatsError>(())
    /// ```
    pub fn exponential(start: f64, factor: f64, count: usize) -> Result<Self, StatsError> {
        if !(start > 0.0 && start.is_finite() && factor > 1.0 && factor.is_finite()) {
            return Err(StatsError::InvalidLayout {
                reason: format!(
                    "exponential buckets need start > 0 and factor > 1, both finite \
                     (got start {start}, factor {factor})"
                ),
                bounds: Vec::new(),
            });
        }
        if count == 0 || count > MAX_BOUNDS {
            return Err(StatsError::InvalidLayout {
                reason: format!("1 to {MAX_BOUNDS} bounds are needed, not {count}"),
                bounds: Vec::new(),
            });
        }
        let bounds: Vec<f64> = std::iter::successors(Some(start), |b| Some(b * factor))
            .take(count)
            .collect();
        Self::fixed(bounds)
    }

    /// The upper bounds of a bounded layout (without `+Inf`); `None` for the
    /// log-linear one.
    pub fn bounds(&self) -> Option<&[f64]> {
        self.bounds.as_deref()
    }

    /// Slots a histogram of this layout takes in every shard.
    pub fn slots(&self) -> usize {
        self.buckets() + 3
    }

    /// Buckets, including `+Inf` for a bounded layout.
    pub(crate) fn buckets(&self) -> usize {
        match &self.bounds {
            None => BUCKETS,
            Some(bounds) => bounds.len() + 1,
        }
    }

    /// The slot (relative to the histogram's base) of the sample count.
    pub(crate) fn count_slot(&self) -> usize {
        self.buckets()
    }

    /// The slot of the sum.
    pub(crate) fn sum_slot(&self) -> usize {
        self.buckets() + 1
    }

    /// The slot of the max.
    pub(crate) fn max_slot(&self) -> usize {
        self.buckets() + 2
    }

    /// The bucket of `v` in a bounded layout: the first bound `≥ v`, or
    /// `+Inf` (NaN goes to `+Inf`).
    #[inline]
    pub(crate) fn bounded_index(bounds: &[f64], v: f64) -> usize {
        bounds.partition_point(|&b| b < v || v.is_nan())
    }

    pub(crate) fn bounds_arc(&self) -> Option<&Arc<[f64]>> {
        self.bounds.as_ref()
    }
}

/// An order-preserving `u64` key of an `f64`: `a < b` exactly when
/// `key(a) < key(b)` (for non-NaN values), and every key of a sample is
/// above 0, which stands for "no sample". A histogram's max slot holds the
/// key, so the shards' integer `max` and the merge's `max` order floats.
#[inline]
pub(crate) fn max_key(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// The `f64` of a [`max_key`]; `None` for 0 (no sample).
pub(crate) fn from_max_key(key: u64) -> Option<f64> {
    match key {
        0 => None,
        k if k >> 63 == 1 => Some(f64::from_bits(k & !(1 << 63))),
        k => Some(f64::from_bits(!k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_keys_order_floats() {
        let values = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            0.5,
            3.0,
            1e300,
            f64::INFINITY,
        ];
        for w in values.windows(2) {
            assert!(max_key(w[0]) <= max_key(w[1]), "{} {}", w[0], w[1]);
        }
        for v in values {
            assert!(max_key(v) > 0);
            assert_eq!(
                from_max_key(max_key(v)).map(f64::to_bits),
                Some(v.to_bits())
            );
        }
        assert_eq!(from_max_key(0), None);
    }

    #[test]
    fn bounded_index_is_prometheus_le() {
        let b = [1.0, 2.0, 5.0];
        for (v, want) in [
            (0.5, 0),
            (1.0, 0),
            (1.5, 1),
            (2.0, 1),
            (5.0, 2),
            (5.1, 3),
            (f64::NAN, 3),
        ] {
            assert_eq!(Layout::bounded_index(&b, v), want, "{v}");
        }
    }

    #[test]
    fn invalid_layouts_are_typed_errors() {
        for bad in [
            vec![],
            vec![2.0, 1.0],
            vec![1.0, f64::INFINITY],
            vec![0.0; MAX_BOUNDS + 1],
        ] {
            assert!(
                matches!(Layout::fixed(&bad), Err(StatsError::InvalidLayout { .. })),
                "{bad:?}"
            );
        }
        assert!(Layout::exponential(0.0, 2.0, 3).is_err());
        assert!(Layout::exponential(1.0, 1.0, 3).is_err());
        assert!(Layout::exponential(1.0, 2.0, 0).is_err());
        // Every bound must be finite: 1e300 * 10^k overflows.
        assert!(Layout::exponential(1e300, 10.0, 20).is_err());
        assert_eq!(Layout::fixed([1.0, 3.0]).unwrap().slots(), 6);
        assert_eq!(Layout::log_linear().slots(), BUCKETS + 3);
    }
}
