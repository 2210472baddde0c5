//! Protected counts: the cell key method of national statistics offices (the
//! Australian Bureau of Statistics' TableBuilder, the UK 2021 Census), with
//! the registry's own guard against differencing.
//!
//! - Every subject carries a fixed, secret, random 64-bit **record key**. A
//!   cell's key is the sum of its subjects' keys (mod 2^64), so the same set
//!   of subjects always has the same key, and sets that differ by even one
//!   subject have independent keys.
//! - A published count is the true count plus a **perturbation** read from a
//!   fixed, published table (a discrete normal, truncated) at a position given
//!   by the cell key: the same set always gets the same answer.
//! - Each cohort's **threshold** applies to its own subjects: the subjects of
//!   a cell whose strictest cohort threshold is `t` are counted only when at
//!   least `t` of them are in the cell. A cell with none left is suppressed,
//!   and then all four of its counts are (`null`), so zero and "a few" look alike.
//! - **Anchors** keep differencing from working at all: every published cell
//!   is remembered by its size and an invertible sketch of its subjects. A
//!   later cell whose subjects differ from an anchor's by fewer subjects than
//!   the threshold (none at all included) is answered with the anchor's
//!   published counts, so `P` and `P or X` answer alike whether `X` is empty or
//!   holds a few people, however the criteria were written.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

/// Cells of an invertible sketch.
pub const SKETCH_CELLS: usize = 256;
/// Hash functions of the sketch, each over its own quarter of the cells.
const SKETCH_HASHES: usize = 4;
const PART: usize = SKETCH_CELLS / SKETCH_HASHES;
/// Largest threshold a cohort may set: the sketch lists differences of up to
/// this many subjects (load below 0.2 at 4 hashes; no failure in 10,000
/// random trials, see the tests, and about 1 in 10^7 for a handful).
pub const MAX_THRESHOLD: i32 = 50;
/// Smallest threshold a cohort may set.
pub const MIN_THRESHOLD: i32 = 5;
/// The threshold of subjects in no cohort, and of a new cohort unless it sets its own.
pub const DEFAULT_THRESHOLD: i32 = 10;

/// SplitMix64's finalizer: a bijective mix of 64 bits.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The perturbation table: a discrete normal with standard deviation `sd`,
/// truncated to `-bound..=bound`, indexed by a uniform 64-bit position.
#[derive(Debug, Clone)]
pub struct Perturbation {
    pub sd: f64,
    pub bound: i64,
    /// Probability of each value from `-bound` to `bound`.
    probabilities: Vec<f64>,
    /// Upper end (exclusive) of each value's share of `0..2^64`, the last one `u64::MAX`.
    upper: Vec<u64>,
}

/// One row of the published table.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct PerturbationRow {
    /// Added to the true count.
    pub value: i64,
    /// How often, over cell keys.
    pub probability: f64,
}

impl Perturbation {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub fn new(sd: f64, bound: i64) -> Self {
        let weights: Vec<f64> = (-bound..=bound).map(|k| (-((k * k) as f64) / (2.0 * sd * sd)).exp()).collect();
        let total: f64 = weights.iter().sum();
        let probabilities: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let mut upper = Vec::with_capacity(probabilities.len());
        let mut cumulative = 0.0;
        for p in &probabilities {
            cumulative += p;
            upper.push((cumulative * 18_446_744_073_709_551_616.0).min(u64::MAX as f64) as u64);
        }
        if let Some(last) = upper.last_mut() {
            *last = u64::MAX;
        }
        Self { sd, bound, probabilities, upper }
    }

    /// The perturbation at position `u`.
    pub fn at(&self, u: u64) -> i64 {
        let i = self.upper.partition_point(|end| *end <= u).min(self.upper.len() - 1);
        i64::try_from(i).unwrap_or(0) - self.bound
    }

    /// The table as published in every answer.
    pub fn rows(&self) -> Vec<PerturbationRow> {
        (-self.bound..=self.bound)
            .zip(&self.probabilities)
            .map(|(value, p)| PerturbationRow { value, probability: (p * 1e6).round() / 1e6 })
            .collect()
    }

    /// Mean absolute perturbation.
    #[allow(clippy::cast_precision_loss)]
    pub fn mean_absolute(&self) -> f64 {
        (-self.bound..=self.bound).zip(&self.probabilities).map(|(k, p)| k.abs() as f64 * p).sum()
    }
}

/// An invertible Bloom lookup table of record keys: sketches subtract, and
/// the difference of two sketches lists the keys in one set and not the
/// other when there are few of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sketch {
    count: [i32; SKETCH_CELLS],
    keys: [u64; SKETCH_CELLS],
    checks: [u64; SKETCH_CELLS],
}

impl Default for Sketch {
    fn default() -> Self {
        Self { count: [0; SKETCH_CELLS], keys: [0; SKETCH_CELLS], checks: [0; SKETCH_CELLS] }
    }
}

const SALTS: [u64; SKETCH_HASHES + 1] =
    [0x243F_6A88_85A3_08D3, 0x1319_8A2E_0370_7344, 0xA409_3822_299F_31D0, 0x082E_FA98_EC4E_6C89, 0x4528_21E6_38D0_1377];

fn cells_of(key: u64) -> [usize; SKETCH_HASHES] {
    let mut cells = [0; SKETCH_HASHES];
    for (i, cell) in cells.iter_mut().enumerate() {
        // Bounded by PART: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let slot = (mix(key ^ SALTS[i]) % PART as u64) as usize;
        *cell = i * PART + slot;
    }
    cells
}

fn check_of(key: u64) -> u64 {
    mix(key ^ SALTS[SKETCH_HASHES])
}

impl Sketch {
    /// Adds one key (`sign` 1) or takes it away (`-1`).
    pub fn add(&mut self, key: u64, sign: i32) {
        let check = check_of(key);
        for c in cells_of(key) {
            self.count[c] += sign;
            if sign > 0 {
                self.keys[c] = self.keys[c].wrapping_add(key);
                self.checks[c] = self.checks[c].wrapping_add(check);
            } else {
                self.keys[c] = self.keys[c].wrapping_sub(key);
                self.checks[c] = self.checks[c].wrapping_sub(check);
            }
        }
    }

    /// Adds a whole sketch.
    pub fn merge(&mut self, other: &Self) {
        for c in 0..SKETCH_CELLS {
            self.count[c] += other.count[c];
            self.keys[c] = self.keys[c].wrapping_add(other.keys[c]);
            self.checks[c] = self.checks[c].wrapping_add(other.checks[c]);
        }
    }

    /// How many subjects are in exactly one of the two sets, when that is at
    /// most `limit` and the sketch can list them; `None` otherwise (a large
    /// difference, almost always).
    pub fn distance(&self, other: &Self, limit: usize) -> Option<usize> {
        let mut d = self.clone();
        for c in 0..SKETCH_CELLS {
            d.count[c] -= other.count[c];
            d.keys[c] = d.keys[c].wrapping_sub(other.keys[c]);
            d.checks[c] = d.checks[c].wrapping_sub(other.checks[c]);
        }
        let mut found = 0;
        loop {
            let mut progressed = false;
            for c in 0..SKETCH_CELLS {
                let sign = d.count[c];
                if sign != 1 && sign != -1 {
                    continue;
                }
                let key = if sign == 1 { d.keys[c] } else { d.keys[c].wrapping_neg() };
                let check = if sign == 1 { d.checks[c] } else { d.checks[c].wrapping_neg() };
                if check != check_of(key) || !cells_of(key).contains(&c) {
                    continue;
                }
                d.add(key, -sign);
                found += 1;
                progressed = true;
                if found > limit {
                    return None;
                }
            }
            if !progressed {
                break;
            }
        }
        let empty = d.count.iter().all(|c| *c == 0) && d.keys.iter().all(|k| *k == 0);
        empty.then_some(found)
    }

    /// The stored form: per cell, count (4 bytes), key sum and check sum (8 bytes each), little-endian: 5,120 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SKETCH_CELLS * 20);
        for c in 0..SKETCH_CELLS {
            out.extend_from_slice(&self.count[c].to_le_bytes());
            out.extend_from_slice(&self.keys[c].to_le_bytes());
            out.extend_from_slice(&self.checks[c].to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != SKETCH_CELLS * 20 {
            return None;
        }
        let mut sketch = Self::default();
        for (c, chunk) in bytes.chunks_exact(20).enumerate() {
            sketch.count[c] = i32::from_le_bytes(chunk[0..4].try_into().ok()?);
            sketch.keys[c] = u64::from_le_bytes(chunk[4..12].try_into().ok()?);
            sketch.checks[c] = u64::from_le_bytes(chunk[12..20].try_into().ok()?);
        }
        Some(sketch)
    }
}

/// What a cell holds of the subjects of one threshold.
#[derive(Debug, Clone, Default)]
pub struct Part {
    /// Subjects, studies, series, instances.
    pub counts: [i64; 4],
    pub key_sum: u64,
    pub sketch: Sketch,
}

/// A cell as counted: its parts by threshold.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub parts: HashMap<i32, Part>,
}

impl Tally {
    /// Counts a subject (the first of its units in the cell).
    pub fn subject(&mut self, threshold: i32, key: u64) -> &mut Part {
        let part = self.parts.entry(threshold).or_default();
        part.counts[0] += 1;
        part.key_sum = part.key_sum.wrapping_add(key);
        part.sketch.add(key, 1);
        part
    }

    /// Every subject of the cell, whatever its threshold: how many, a sketch
    /// of their keys, and the strictest threshold among them (0 when empty).
    pub fn whole(&self) -> (i64, Sketch, i32) {
        let mut sketch = Sketch::default();
        let (mut n, mut strictest) = (0, 0);
        for (threshold, part) in &self.parts {
            n += part.counts[0];
            sketch.merge(&part.sketch);
            strictest = strictest.max(*threshold);
        }
        (n, sketch, strictest)
    }

    /// The subjects that may be counted: the parts that reach their
    /// threshold, merged, with the strictest threshold among them.
    pub fn kept(&self) -> Option<(Part, i32)> {
        let mut kept: Option<(Part, i32)> = None;
        let mut thresholds: Vec<&i32> = self.parts.keys().collect();
        thresholds.sort();
        for threshold in thresholds {
            let part = &self.parts[threshold];
            if part.counts[0] < i64::from(*threshold) {
                continue;
            }
            match &mut kept {
                None => kept = Some((part.clone(), *threshold)),
                Some((all, strictest)) => {
                    for i in 0..4 {
                        all.counts[i] += part.counts[i];
                    }
                    all.key_sum = all.key_sum.wrapping_add(part.key_sum);
                    all.sketch.merge(&part.sketch);
                    *strictest = (*strictest).max(*threshold);
                }
            }
        }
        kept
    }
}

/// The published counts of a kept part: each count perturbed from its own
/// position of the cell key; studies, series and instances by the subject
/// perturbation's share of their per-subject size, so a cell's ratios move too.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
pub fn publish(table: &Perturbation, part: &Part, threshold: i32) -> [i64; 4] {
    let [n, studies, series, instances] = part.counts;
    let at = |j: u64| table.at(mix(part.key_sum ^ mix(j.wrapping_add(0x6A09_E667_F3BC_C908))));
    let subjects = (n + at(0)).max(i64::from(threshold));
    let scaled = |x: i64, j: u64| {
        if x == 0 || n == 0 {
            return 0;
        }
        (x + (at(j) as f64 * x as f64 / n as f64).round() as i64).max(0)
    };
    [subjects, scaled(studies, 1), scaled(series, 2), scaled(instances, 3)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(range: std::ops::Range<u64>) -> Vec<u64> {
        range.map(|i| mix(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))).collect()
    }

    fn sketch(keys: &[u64]) -> Sketch {
        let mut s = Sketch::default();
        for k in keys {
            s.add(*k, 1);
        }
        s
    }

    #[test]
    fn the_sketch_lists_small_differences_and_refuses_large_ones() {
        let base = keys(0..5000);
        let a = sketch(&base);
        assert_eq!(a.distance(&a, 49), Some(0));
        for extra in [1, 3, 9, 30, 47] {
            let mut more = base.clone();
            more.extend(keys(100_000..100_000 + extra));
            // Take some away too: the difference is symmetric.
            more.drain(0..2);
            let want = usize::try_from(extra).unwrap() + 2;
            assert_eq!(sketch(&more).distance(&a, 49), Some(want), "{extra} added, 2 removed");
        }
        let mut far = base.clone();
        far.extend(keys(200_000..200_060));
        assert_eq!(sketch(&far).distance(&a, 49), None);
        let other = sketch(&keys(300_000..305_000));
        assert_eq!(other.distance(&a, 49), None);
        assert_eq!(Sketch::from_bytes(&a.to_bytes()), Some(a));
    }

    #[test]
    fn small_differences_decode_in_ten_thousand_random_trials() {
        // The guard must not miss a near set: every difference of 1..=49 keys is found.
        let base = sketch(&keys(0..1000));
        let mut seed = 7u64;
        for trial in 0..10_000u64 {
            seed = mix(seed.wrapping_add(trial));
            let size = 1 + seed % 49;
            let mut s = base.clone();
            for i in 0..size {
                s.add(mix(seed ^ mix(i)), 1);
            }
            assert_eq!(s.distance(&base, 49), Some(usize::try_from(size).unwrap()), "trial {trial}");
        }
    }

    #[test]
    fn the_perturbation_table_is_symmetric_bounded_and_has_the_published_spread() {
        let table = Perturbation::new(2.0, 6);
        let rows = table.rows();
        assert_eq!(rows.len(), 13);
        assert!(rows.iter().all(|r| r.probability > 0.0));
        for k in 0..=6 {
            let (a, b) = (rows[6 - k].probability, rows[6 + k].probability);
            assert!((a - b).abs() < 1e-6, "symmetric at {k}");
        }
        assert!((table.mean_absolute() - 1.58).abs() < 0.05, "{}", table.mean_absolute());
        assert_eq!(table.at(0), -6);
        assert_eq!(table.at(u64::MAX), 6);
        assert_eq!(table.at(u64::MAX / 2), 0);
        // Uniform positions give the table's frequencies.
        let mut seen = [0u32; 13];
        for i in 0..100_000u64 {
            seen[usize::try_from(table.at(mix(i)) + 6).unwrap()] += 1;
        }
        for (k, n) in seen.iter().enumerate() {
            let want = rows[k].probability * 100_000.0;
            assert!((f64::from(*n) - want).abs() < 5.0 * want.sqrt() + 5.0, "value {}: {n} vs {want}", rows[k].value);
        }
    }

    #[test]
    fn the_same_set_gets_the_same_answer_and_a_cohorts_small_part_is_left_out() {
        let table = Perturbation::new(2.0, 6);
        let mut cell = Tally::default();
        for k in keys(0..40) {
            cell.subject(10, k).counts[3] += 3;
        }
        for k in keys(1000..1004) {
            cell.subject(20, k);
        }
        let (kept, threshold) = cell.kept().unwrap();
        assert_eq!((kept.counts[0], threshold), (40, 10), "four subjects of a threshold-20 cohort are left out");
        let once = publish(&table, &kept, threshold);
        let again = publish(&table, &cell.kept().unwrap().0, threshold);
        assert_eq!(once, again);
        assert!((once[0] - 40).abs() <= 6);

        let mut small = Tally::default();
        for k in keys(0..9) {
            small.subject(10, k);
        }
        assert!(small.kept().is_none());
        assert!(Tally::default().kept().is_none());
    }
}
