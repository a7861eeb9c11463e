//! Batch means for `l7tap diff`: a confidence interval for the change of a quantile that
//! holds when a run's requests are correlated in time.
//!
//! The order-statistic interval of [`super::stats`] assumes independent requests. Requests of
//! one run are not: a stall of the machine delays many at once, so the quantile of a short run
//! moves more than that interval says. Here each run's answered requests, in time order, are
//! cut into `k` contiguous batches of equal count; the quantile of each batch is computed, and
//! the spread between batches, which contains whatever the requests share within a batch,
//! gives the standard error of the run's quantile (sectioning: `s / √k`, with `s` the
//! batches' standard deviation). The difference of the two runs' quantiles is significant when
//! its interval, `±t·√(s_b²/k_b + s_c²/k_c)` with Student's t at `min(k_b, k_c) − 1` degrees of
//! freedom (99.9 %, two-sided), excludes 0. A batch must hold at least
//! [`MIN_BEYOND_PER_BATCH`] expected values beyond the quantile (p50: 10 requests, p90: 50,
//! p99: 500), and there are at most [`MAX_BATCHES`] batches; with fewer than [`MIN_BATCHES`]
//! the quantile cannot be tested this way and is never called changed.
use super::stats::Direction;

/// Most batches per run: more, smaller batches would cut through the stalls they must hold.
pub const MAX_BATCHES: usize = 10;
/// Fewest batches that give a variance worth a t-interval.
pub const MIN_BATCHES: usize = 3;
/// Expected values beyond the quantile (`m·min(q, 1−q)`) a batch of `m` must hold.
pub const MIN_BEYOND_PER_BATCH: f64 = 5.0;

/// One run's quantile from its batches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchEstimate {
    /// The quantile of all the run's requests, ns.
    pub estimate: f64,
    /// Its standard error, `s / √k`, ns.
    pub standard_error: f64,
    pub batches: usize,
}

/// The interval of a quantile's change (candidate − baseline).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchInterval {
    pub difference_ns: f64,
    /// Half the interval's width, ns.
    pub half_width_ns: f64,
    pub degrees_of_freedom: usize,
}

impl BatchInterval {
    /// Which way the change went, when its interval excludes 0.
    pub fn significant(&self) -> Option<Direction> {
        if self.difference_ns - self.half_width_ns > 0.0 {
            Some(Direction::Up)
        } else if self.difference_ns + self.half_width_ns < 0.0 {
            Some(Direction::Down)
        } else {
            None
        }
    }
}

/// Nearest-rank q-quantile of `sorted` (ascending, not empty).
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = (sorted.len() as f64 * q).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// How many batches `n` requests give for the q-quantile.
pub fn batch_count(n: usize, q: f64) -> usize {
    let min_batch = (MIN_BEYOND_PER_BATCH / q.min(1.0 - q)).ceil() as usize;
    (n / min_batch.max(1)).min(MAX_BATCHES)
}

/// The q-quantile of `durations` (one run's answered requests, in time order) and its
/// standard error from batches; none when they make fewer than [`MIN_BATCHES`] batches.
pub fn batch_estimate(durations: &[u64], q: f64) -> Option<BatchEstimate> {
    let n = durations.len();
    let k = batch_count(n, q);
    if k < MIN_BATCHES {
        return None;
    }
    let mut scratch = Vec::with_capacity(n / k + 1);
    let batch_quantiles: Vec<f64> = (0..k)
        .map(|i| {
            scratch.clear();
            scratch.extend_from_slice(&durations[i * n / k..(i + 1) * n / k]);
            scratch.sort_unstable();
            nearest_rank(&scratch, q) as f64
        })
        .collect();
    let mean = batch_quantiles.iter().sum::<f64>() / k as f64;
    let variance = batch_quantiles
        .iter()
        .map(|x| (x - mean).powi(2))
        .sum::<f64>()
        / (k - 1) as f64;
    let mut all = durations.to_vec();
    all.sort_unstable();
    Some(BatchEstimate {
        estimate: nearest_rank(&all, q) as f64,
        standard_error: (variance / k as f64).sqrt(),
        batches: k,
    })
}

/// The interval of the change from `baseline` to `candidate`.
pub fn batch_interval(baseline: &BatchEstimate, candidate: &BatchEstimate) -> BatchInterval {
    let degrees_of_freedom = baseline.batches.min(candidate.batches) - 1;
    let standard_error =
        (baseline.standard_error.powi(2) + candidate.standard_error.powi(2)).sqrt();
    BatchInterval {
        difference_ns: candidate.estimate - baseline.estimate,
        half_width_ns: t_999(degrees_of_freedom) * standard_error,
        degrees_of_freedom,
    }
}

/// Student's t of a two-sided 99.9 % interval (its 0.9995 quantile) at `dof` degrees of
/// freedom; between the tabled ones, the next smaller `dof`'s (wider) value.
pub fn t_999(dof: usize) -> f64 {
    const TABLE: [f64; 30] = [
        636.619, 31.599, 12.924, 8.610, 6.869, 5.959, 5.408, 5.041, 4.781, 4.587, 4.437, 4.318,
        4.221, 4.140, 4.073, 4.015, 3.965, 3.922, 3.883, 3.850, 3.819, 3.792, 3.768, 3.745, 3.725,
        3.707, 3.690, 3.674, 3.659, 3.646,
    ];
    match dof {
        0 => f64::INFINITY,
        1..=30 => TABLE[dof - 1],
        31..=39 => 3.646,
        40..=59 => 3.551,
        60..=119 => 3.460,
        _ => 3.373,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::stats::{quantile_bounds, quantile_change, DEFAULT_Z};

    #[test]
    fn a_worked_example_of_the_median() {
        // 30 requests, p50 batches of 10 (5 beyond the median each): 3 batches.
        // Batch 1: 1..=10 ms → p50 5 ms; batch 2: 2..=11 ms → 6 ms; batch 3: 3..=12 → 7 ms.
        let ms = 1_000_000u64;
        let durations: Vec<u64> = (0..3)
            .flat_map(|b| (1..=10).map(move |i| (i + b) * ms))
            .collect();
        let e = batch_estimate(&durations, 0.5).unwrap();
        assert_eq!(e.batches, 3);
        // All 30 sorted: rank 15 is 6 ms. Batch medians 5, 6, 7: s = 1 ms, se = 1/√3 ms.
        assert_eq!(e.estimate, 6.0 * ms as f64);
        assert!(
            (e.standard_error - ms as f64 / 3f64.sqrt()).abs() < 1.0,
            "{e:?}"
        );

        // Against a run 40 ms slower with the same spread: difference 40 ms, se = √(2/3) ms,
        // t(2 dof) = 31.599: half-width 25.8 ms, so 40 ms is beyond it; 20 ms would not be.
        let slower: Vec<u64> = durations.iter().map(|d| d + 40 * ms).collect();
        let i = batch_interval(&e, &batch_estimate(&slower, 0.5).unwrap());
        assert_eq!(i.degrees_of_freedom, 2);
        assert_eq!(i.difference_ns, 40.0 * ms as f64);
        assert!((i.half_width_ns - 31.599 * (2.0f64 / 3.0).sqrt() * ms as f64).abs() < 10.0);
        assert_eq!(i.significant(), Some(Direction::Up));
        let closer: Vec<u64> = durations.iter().map(|d| d + 20 * ms).collect();
        let j = batch_interval(&batch_estimate(&closer, 0.5).unwrap(), &e);
        assert_eq!(j.significant(), None, "{j:?}");
    }

    #[test]
    fn a_stall_the_order_statistics_call_a_change_is_not_one_for_the_batches() {
        // 1000 requests of 1.0-1.4 ms; in the candidate a stall adds 0.5 ms to 300 requests
        // in a row (three batches). p50 moves from 1.2 ms to ~1.29 ms.
        let base: Vec<u64> = (0..1000u64)
            .map(|i| 1_000_000 + (i * 7919 % 400) * 1_000)
            .collect();
        let mut stalled = base.clone();
        for d in &mut stalled[300..600] {
            *d += 500_000;
        }
        // Independent requests: the order-statistic intervals are ~±25 µs, and apart.
        let histogram = |values: &[u64]| {
            let mut h =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
            for &v in values {
                h.record(v).unwrap();
            }
            h
        };
        let ob = quantile_bounds(&histogram(&base), 0.5, DEFAULT_Z).unwrap();
        let os = quantile_bounds(&histogram(&stalled), 0.5, DEFAULT_Z).unwrap();
        assert_eq!(
            quantile_change(&ob, &os),
            Some(Direction::Up),
            "{ob:?} {os:?}"
        );
        // Batches: seven medians near 1.2 ms and three near 1.7 ms, s ≈ 0.24 ms, se ≈ 76 µs,
        // t(9 dof) = 4.781: the half-width (~0.36 ms) holds the ~86 µs difference.
        let b = batch_estimate(&base, 0.5).unwrap();
        let s = batch_estimate(&stalled, 0.5).unwrap();
        assert_eq!((b.batches, s.batches), (10, 10));
        let i = batch_interval(&b, &s);
        assert!((60_000.0..120_000.0).contains(&i.difference_ns), "{i:?}");
        assert!((300_000.0..420_000.0).contains(&i.half_width_ns), "{i:?}");
        assert_eq!(i.significant(), None, "{i:?}");
    }

    #[test]
    fn too_few_requests_give_no_estimate() {
        assert_eq!(batch_count(29, 0.5), 2);
        assert!(batch_estimate(&[1; 29], 0.5).is_none());
        assert_eq!(batch_count(1_500, 0.99), 3);
        assert_eq!(batch_count(100_000, 0.5), MAX_BATCHES);
        assert!(t_999(0).is_infinite());
        assert_eq!(t_999(9), 4.781);
        assert_eq!(t_999(1000), 3.373);
    }
}
