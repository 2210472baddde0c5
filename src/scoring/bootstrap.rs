//! Percentile bootstrap confidence intervals, resampling whole units
//! (subjects for labels, cases for masks) with a seeded xoshiro256** stream.
//!
//! A resample draws `n` units with replacement and is handed to the metrics
//! as per-unit counts. Every metric of a group is evaluated on the same
//! resamples. A resample on which a metric is undefined (an AUC of a resample
//! with one class) is skipped for that metric; the interval comes from the
//! resamples that remain, and their number is reported. The interval is the
//! `(1 - confidence) / 2` and `(1 + confidence) / 2` percentiles of the
//! resampled values, interpolated as NumPy's default does.
//!
//! The stream of a group depends only on the seed and the group's name, so a
//! group's interval does not change with the order or number of groups.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::metrics::percentile;

/// How intervals are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BootstrapOptions {
    /// Resamples per group (default 1000); 0 reports no intervals.
    pub resamples: u32,
    /// Seed of the resampling stream.
    pub seed: u64,
    /// Coverage of the interval (default 0.95).
    pub confidence: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions { resamples: 1000, seed: 0x5EED_C0DE, confidence: 0.95 }
    }
}

/// An interval and the resamples it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower bound, `None` when no resample gave a value.
    pub low: Option<f64>,
    /// Upper bound.
    pub high: Option<f64>,
    /// Resamples on which the metric was defined.
    pub used: u32,
}

/// xoshiro256** seeded through splitmix64 (Blackman and Vigna).
pub struct Rng([u64; 4]);

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        Rng([splitmix(&mut state), splitmix(&mut state), splitmix(&mut state), splitmix(&mut state)])
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform index below `n` (Lemire's multiply-shift; the bias is below 2^-40 for any n here).
    pub fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        usize::try_from(wide >> 64).expect("below n")
    }
}

/// FNV-1a, to derive a group's stream from its name.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

/// Intervals for `metrics` metrics over `n` units: `evaluate` gets per-unit
/// draw counts and returns one value (or `None`) per metric.
pub fn intervals(
    n: usize,
    options: &BootstrapOptions,
    group: &str,
    metrics: usize,
    mut evaluate: impl FnMut(&[u32]) -> Vec<Option<f64>>,
) -> Vec<Interval> {
    let mut values: Vec<Vec<f64>> = vec![Vec::with_capacity(options.resamples as usize); metrics];
    if n > 0 {
        let mut rng = Rng::new(options.seed ^ fnv1a(group));
        let mut weights = vec![0_u32; n];
        for _ in 0..options.resamples {
            weights.fill(0);
            for _ in 0..n {
                weights[rng.below(n)] += 1;
            }
            for (slot, value) in values.iter_mut().zip(evaluate(&weights)) {
                slot.extend(value);
            }
        }
    }
    let tail = (1.0 - options.confidence) / 2.0 * 100.0;
    values
        .into_iter()
        .map(|mut v| Interval {
            low: (!v.is_empty()).then(|| percentile(&mut v, tail)),
            high: (!v.is_empty()).then(|| percentile(&mut v, 100.0 - tail)),
            used: u32::try_from(v.len()).expect("at most `resamples`"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(values: &[f64]) -> impl FnMut(&[u32]) -> Vec<Option<f64>> + '_ {
        move |w| {
            let total: f64 = w.iter().map(|c| f64::from(*c)).sum();
            vec![Some(values.iter().zip(w).map(|(v, c)| v * f64::from(*c)).sum::<f64>() / total)]
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_interval_and_another_seed_another() {
        let values: Vec<f64> = (0..50).map(|i| f64::from(i * i % 17)).collect();
        let options = BootstrapOptions::default();
        let once = intervals(values.len(), &options, "site-a", 1, mean(&values));
        let again = intervals(values.len(), &options, "site-a", 1, mean(&values));
        assert_eq!(once, again);
        let other = intervals(values.len(), &BootstrapOptions { seed: 7, ..options }, "site-a", 1, mean(&values));
        assert_ne!(once, other);
        let point = values.iter().sum::<f64>() / 50.0;
        let [Interval { low: Some(low), high: Some(high), used: 1000 }] = once[..] else { panic!("{once:?}") };
        assert!(low < point && point < high, "{low} < {point} < {high}");
    }

    #[test]
    fn resamples_where_the_metric_is_undefined_are_skipped() {
        // Defined only when unit 0 is drawn: about 1 - (1 - 1/3)^3 = 70% of resamples.
        let result = intervals(3, &BootstrapOptions::default(), "g", 1, |w| vec![(w[0] > 0).then_some(1.0)]);
        assert!((600..800).contains(&result[0].used), "{result:?}");
        let none = intervals(3, &BootstrapOptions::default(), "g", 1, |_| vec![None]);
        assert_eq!(none[0], Interval { low: None, high: None, used: 0 });
    }

    #[test]
    fn draws_are_uniform_over_units() {
        let mut rng = Rng::new(1);
        let mut counts = [0_u32; 4];
        for _ in 0..40_000 {
            counts[rng.below(4)] += 1;
        }
        assert!(counts.iter().all(|c| (9_500..10_500).contains(c)), "{counts:?}");
    }
}
