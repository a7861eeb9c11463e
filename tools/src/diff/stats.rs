//! The statistics of `l7tap diff`: whether a latency quantile or an error rate changed beyond
//! noise.
//!
//! *Quantiles.* A confidence interval for the q-quantile of each side, distribution-free:
//! among n values, the order statistics of ranks `n·q ∓ z·√(n·q·(1−q))` (the normal
//! approximation of the binomial count of values below the true quantile) bound it with the
//! confidence `z` gives. The values at those ranks come from the side's HDR histogram (3
//! significant digits). A change is significant when the two intervals do not overlap, a
//! test stricter than its `z` alone says (two 99.9 % intervals that do not overlap mean a
//! difference at well beyond 99.9 %), which leaves room for the many groups and quantiles
//! one diff tests. An interval whose upper rank is past n has no upper bound: a quantile that
//! the sample cannot locate (p99.9 of 500 requests) is never called changed. Why not a rank
//! test (Mann-Whitney) on the buckets: it answers "did the distribution shift", not "did p99
//! move", and `--fail-on` speaks of quantiles.
//!
//! *Error rates.* The two-proportion z-test with the pooled rate, at the same `z`.
//!
//! Both assume independent requests. Requests of one run are not quite that (a stall delays
//! many at once): a quantile's change must also pass the batch means of
//! [`super::batch_means`]. Two runs also differ by more than sampling (the machine's load,
//! caches): so a change is also required to be large enough to matter (the minimum effect,
//! see `diff/mod.rs`).
use hdrhistogram::Histogram;

/// z of a two-sided 99.9 % interval.
pub const DEFAULT_Z: f64 = 3.2905;

/// A quantile's estimate and its confidence interval, ns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantileBounds {
    pub estimate: u64,
    pub low: u64,
    /// None: the sample is too small to bound it from above.
    pub high: Option<u64>,
}

/// The value of rank `rank` (1-based) among the histogram's values: the highest value
/// equivalent to the bucket that holds it.
fn value_at_rank(histogram: &Histogram<u64>, rank: u64) -> u64 {
    let mut seen = 0u64;
    for bucket in histogram.iter_recorded() {
        seen += bucket.count_at_value();
        if seen >= rank {
            return histogram.highest_equivalent(bucket.value_iterated_to());
        }
    }
    histogram.max()
}

/// The q-quantile of `histogram` with its interval at `z`; none for an empty histogram.
pub fn quantile_bounds(histogram: &Histogram<u64>, q: f64, z: f64) -> Option<QuantileBounds> {
    let n = histogram.len();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let spread = z * (nf * q * (1.0 - q)).sqrt();
    let centre = (nf * q).ceil().max(1.0) as u64;
    let low_rank = (nf * q - spread).floor();
    let high_rank = (nf * q + spread).ceil() + 1.0;
    Some(QuantileBounds {
        estimate: value_at_rank(histogram, centre.min(n)),
        low: if low_rank < 1.0 {
            histogram.min()
        } else {
            value_at_rank(histogram, low_rank as u64)
        },
        high: (high_rank <= nf).then(|| value_at_rank(histogram, high_rank as u64)),
    })
}

/// Which way a significant change went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// Whether the candidate's quantile differs from the baseline's beyond their intervals.
pub fn quantile_change(baseline: &QuantileBounds, candidate: &QuantileBounds) -> Option<Direction> {
    if baseline.high.is_some_and(|high| candidate.low > high) {
        return Some(Direction::Up);
    }
    if candidate.high.is_some_and(|high| high < baseline.low) {
        return Some(Direction::Down);
    }
    None
}

/// z of the two-proportion test (positive: the candidate's rate is higher); 0 when either
/// side is empty or both rates are 0 or 1.
pub fn two_proportion_z(errors_a: u64, n_a: u64, errors_b: u64, n_b: u64) -> f64 {
    if n_a == 0 || n_b == 0 {
        return 0.0;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let (pa, pb) = (errors_a as f64 / na, errors_b as f64 / nb);
    let pooled = (errors_a + errors_b) as f64 / (na + nb);
    let variance = pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb);
    if variance <= 0.0 {
        return 0.0;
    }
    (pb - pa) / variance.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn the_interval_holds_the_ranks_around_the_quantile() {
        // 1..=10000 µs: the median is 5000 µs; √(10000·¼)·3.29 ≈ 165 ranks either side.
        let h = histogram((1..=10_000).map(|i| i * 1_000));
        let b = quantile_bounds(&h, 0.5, DEFAULT_Z).unwrap();
        let near = |value: u64, expected: u64| value.abs_diff(expected) <= expected / 500;
        assert!(near(b.estimate, 5_000_000), "{b:?}");
        assert!(near(b.low, 4_835_000), "{b:?}");
        assert!(near(b.high.unwrap(), 5_166_000), "{b:?}");
    }

    #[test]
    fn a_quantile_the_sample_cannot_bound_has_no_upper_bound() {
        let h = histogram((1..=500).map(|i| i * 1_000));
        assert_eq!(quantile_bounds(&h, 0.999, DEFAULT_Z).unwrap().high, None);
        assert!(quantile_bounds(&histogram([]), 0.5, DEFAULT_Z).is_none());
    }

    #[test]
    fn a_doubled_latency_is_a_change_and_a_resample_is_not() {
        // Two samples of one distribution (every other value) and one of it doubled.
        let a = histogram((0..5_000).map(|i| 100_000 + (i * 2) * 37 % 400_000));
        let b = histogram((0..5_000).map(|i| 100_000 + (i * 2 + 1) * 37 % 400_000));
        let doubled = histogram((0..5_000).map(|i| 2 * (100_000 + (i * 2) * 37 % 400_000)));
        for q in [0.5, 0.9, 0.99] {
            let qa = quantile_bounds(&a, q, DEFAULT_Z).unwrap();
            let qb = quantile_bounds(&b, q, DEFAULT_Z).unwrap();
            let qd = quantile_bounds(&doubled, q, DEFAULT_Z).unwrap();
            assert_eq!(quantile_change(&qa, &qb), None, "q {q}");
            assert_eq!(quantile_change(&qa, &qd), Some(Direction::Up), "q {q}");
            assert_eq!(quantile_change(&qd, &qa), Some(Direction::Down), "q {q}");
        }
    }

    #[test]
    fn two_proportion_z_matches_a_worked_example() {
        // 10/1000 vs 30/1000: pooled 0.02, se = √(0.02·0.98·0.002) = 0.00626, z = 3.19.
        let z = two_proportion_z(10, 1000, 30, 1000);
        assert!((z - 3.194).abs() < 0.01, "{z}");
        assert!(two_proportion_z(30, 1000, 10, 1000) < 0.0);
        assert_eq!(two_proportion_z(0, 1000, 0, 1000), 0.0);
        assert_eq!(two_proportion_z(0, 0, 5, 10), 0.0);
    }
}
