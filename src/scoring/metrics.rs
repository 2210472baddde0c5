//! The metrics, as plain functions over slices: ROC AUC, accuracy and F1 for
//! labels; Dice and HD95 for masks.
//!
//! Label metrics take per-unit weights (how often a unit was drawn), so the
//! bootstrap evaluates a resample without copying it; `None` means every unit
//! once. They match scikit-learn on the same inputs (checked against
//! `tests/fixtures/scoring/reference.py`):
//! - `roc_auc_score` (binary): the Mann-Whitney statistic with midranks, which is
//!   the trapezoid under the ROC curve over distinct thresholds, so tied scores
//!   count one half; undefined (`None`) when only one class is present.
//! - macro one-vs-rest AUC (`multi_class="ovr", average="macro"`): the mean of
//!   each class's AUC against the rest; undefined when a class is absent.
//! - `accuracy_score`; `f1_score` of the positive class (binary) and
//!   `average="macro"` over the classes present in truth or prediction
//!   (multiclass). An F1 with no true and no predicted positives is 0, as
//!   scikit-learn's `zero_division` default gives.
//!
//! Mask metrics follow medpy's `dc` and `hd95`:
//! - Dice = 2|A∩B| / (|A|+|B|); **both masks empty: 1.0** (perfect agreement).
//! - Surface voxels are foreground voxels with a background 6-neighbour, a voxel
//!   beyond the volume's edge counting as background (`A ^ binary_erosion(A)`
//!   with SciPy's default cross structure and border).
//! - HD95 is the 95th percentile (linear interpolation, NumPy's default) of
//!   the **union of both directed surface-distance sets**: for every surface
//!   voxel of A the Euclidean distance in millimetres (voxel spacing applied)
//!   to the nearest surface voxel of B, and the same from B to A. MONAI's
//!   default takes the larger of the two directed percentiles instead; medpy's
//!   definition is the one used here.
//! - **Both masks empty: HD95 0.0. Exactly one empty: HD95 is the volume's
//!   diagonal** `sqrt(Σ((nᵢ-1)·sᵢ)²)`, the largest distance two voxels of the
//!   volume can have (the worst score, so an empty prediction cannot escape
//!   the average), and Dice 0.0.
//!
//! Nearest surface voxels are found exactly with a k-d tree over one surface
//! (memory in proportion to the surface, not the volume), after a bitmap test
//! that answers the frequent distance-0 case at once.

use super::masks::MaskVolume;

/// The ROC AUC of `scores` for `positive` units (Mann-Whitney with midranks).
/// `None` when the units, as weighted, are all of one class.
pub fn roc_auc(positive: &[bool], scores: &[f64]) -> Option<f64> {
    roc_auc_weighted(positive, scores, &ascending(scores), None)
}

/// Indices of `scores` in ascending order, the order [`roc_auc_weighted`] needs.
pub fn ascending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    order
}

/// ROC AUC with weights; `order` is `ascending(scores)`.
pub fn roc_auc_weighted(positive: &[bool], scores: &[f64], order: &[usize], weights: Option<&[u32]>) -> Option<f64> {
    let weight = |i: usize| weights.map_or(1.0, |w| f64::from(w[i]));
    // Walk groups of equal scores upwards: each positive beats the negatives
    // below its group and ties half of those inside it.
    let (mut wins, mut negatives_below, mut positives) = (0.0, 0.0, 0.0);
    let mut at = 0;
    while at < order.len() {
        let score = scores[order[at]];
        let (mut group_pos, mut group_neg) = (0.0, 0.0);
        while at < order.len() && scores[order[at]].total_cmp(&score).is_eq() {
            let i = order[at];
            if positive[i] {
                group_pos += weight(i);
            } else {
                group_neg += weight(i);
            }
            at += 1;
        }
        wins += group_pos * (negatives_below + 0.5 * group_neg);
        negatives_below += group_neg;
        positives += group_pos;
    }
    (positives > 0.0 && negatives_below > 0.0).then(|| wins / (positives * negatives_below))
}

/// Macro one-vs-rest AUC over `classes` classes; `scores` is row-major
/// (unit × class) and `orders[k]` ranks the units by their class-`k` score.
/// `None` when a class is absent (or is every unit).
pub fn macro_ovr_auc(
    truth: &[u32],
    scores: &[f64],
    classes: usize,
    orders: &[Vec<usize>],
    weights: Option<&[u32]>,
) -> Option<f64> {
    let mut sum = 0.0;
    let mut column = vec![0.0; truth.len()];
    for (k, order) in orders.iter().enumerate().take(classes) {
        let positive: Vec<bool> = truth.iter().map(|t| *t as usize == k).collect();
        for (i, c) in column.iter_mut().enumerate() {
            *c = scores[i * classes + k];
        }
        sum += roc_auc_weighted(&positive, &column, order, weights)?;
    }
    Some(sum / f64_from(classes))
}

/// Per-class counts of a weighted confusion: true positives, predicted, actual.
fn confusion(truth: &[u32], predicted: &[u32], classes: usize, weights: Option<&[u32]>) -> Vec<[f64; 3]> {
    let mut counts = vec![[0.0; 3]; classes];
    for (i, (t, p)) in truth.iter().zip(predicted).enumerate() {
        let w = weights.map_or(1.0, |w| f64::from(w[i]));
        if t == p {
            counts[*t as usize][0] += w;
        }
        counts[*p as usize][1] += w;
        counts[*t as usize][2] += w;
    }
    counts
}

/// The weighted share of units whose predicted class is the true one.
/// `None` for no units.
pub fn accuracy(truth: &[u32], predicted: &[u32], weights: Option<&[u32]>) -> Option<f64> {
    let (mut right, mut all) = (0.0, 0.0);
    for (i, (t, p)) in truth.iter().zip(predicted).enumerate() {
        let w = weights.map_or(1.0, |w| f64::from(w[i]));
        all += w;
        if t == p {
            right += w;
        }
    }
    (all > 0.0).then(|| right / all)
}

fn f1_of([tp, predicted, actual]: [f64; 3]) -> f64 {
    let denominator = predicted + actual;
    if denominator > 0.0 { 2.0 * tp / denominator } else { 0.0 }
}

/// F1 of the `positive` class.
pub fn f1_binary(truth: &[u32], predicted: &[u32], positive: u32, weights: Option<&[u32]>) -> f64 {
    let classes = truth.iter().chain(predicted).max().map_or(0, |m| *m as usize + 1).max(positive as usize + 1);
    f1_of(confusion(truth, predicted, classes, weights)[positive as usize])
}

/// Macro F1 over the classes that occur in truth or prediction. `None` for no units.
pub fn f1_macro(truth: &[u32], predicted: &[u32], classes: usize, weights: Option<&[u32]>) -> Option<f64> {
    let present: Vec<f64> =
        confusion(truth, predicted, classes, weights).into_iter().filter(|c| c[1] + c[2] > 0.0).map(f1_of).collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / f64_from(present.len()))
}

/// A count as `f64` (exact below 2^53).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn f64_from(n: usize) -> f64 {
    n as f64
}

/// What comparing two masks gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskComparison {
    /// Dice coefficient, 0 to 1.
    pub dice: f64,
    /// 95th-percentile Hausdorff distance in millimetres.
    pub hd95: f64,
    /// Foreground voxels of the truth and of the prediction.
    pub voxels: [u64; 2],
}

/// Dice and HD95 of two masks on the same grid (the caller checks shapes;
/// different shapes panic).
pub fn compare_masks(truth: &MaskVolume, prediction: &MaskVolume) -> MaskComparison {
    assert_eq!(truth.dims, prediction.dims, "masks compared on different grids");
    let summary = Summary::of(truth, prediction);
    let [a, b] = summary.counts;
    let dice = dice_of(&summary);
    let hd95 = match (a, b) {
        (0, 0) => 0.0,
        (0, _) | (_, 0) => truth.diagonal_mm(),
        _ => hd95_nonempty(truth, prediction, &summary),
    };
    MaskComparison { dice, hd95, voxels: [a, b] }
}

/// Dice alone.
pub fn dice(truth: &MaskVolume, prediction: &MaskVolume) -> f64 {
    dice_of(&Summary::of(truth, prediction))
}

fn dice_of(summary: &Summary) -> f64 {
    let [a, b] = summary.counts;
    #[allow(clippy::cast_precision_loss)]
    if a + b == 0 { 1.0 } else { 2.0 * summary.overlap as f64 / (a + b) as f64 }
}

/// Counts and bounding boxes from one pass over both volumes, row by row.
struct Summary {
    counts: [u64; 2],
    overlap: u64,
    /// Per mask: inclusive `[min, max]` per axis, `None` when empty.
    boxes: [Option<[[usize; 2]; 3]>; 2],
}

impl Summary {
    fn of(a: &MaskVolume, b: &MaskVolume) -> Self {
        let [nx, ny, _] = a.dims;
        let mut summary = Summary { counts: [0, 0], overlap: 0, boxes: [None, None] };
        for (row, (ra, rb)) in a.voxels.chunks_exact(nx).zip(b.voxels.chunks_exact(nx)).enumerate() {
            // Voxels are 0 or 1, so sums of bytes count them; u32 per row cannot overflow.
            let ca: u32 = ra.iter().map(|v| u32::from(*v)).sum();
            let cb: u32 = rb.iter().map(|v| u32::from(*v)).sum();
            if ca == 0 && cb == 0 {
                continue;
            }
            let both: u32 = ra.iter().zip(rb).map(|(x, y)| u32::from(*x & *y)).sum();
            summary.counts[0] += u64::from(ca);
            summary.counts[1] += u64::from(cb);
            summary.overlap += u64::from(both);
            let (y, z) = (row % ny, row / ny);
            for (k, (r, c)) in [(ra, ca), (rb, cb)].into_iter().enumerate() {
                if c == 0 {
                    continue;
                }
                let first = r.iter().position(|v| *v != 0).expect("a voxel is set");
                let last = r.iter().rposition(|v| *v != 0).expect("a voxel is set");
                let bounds = summary.boxes[k].get_or_insert([[first, last], [y, y], [z, z]]);
                for (axis, (lo, hi)) in [(first, last), (y, y), (z, z)].into_iter().enumerate() {
                    bounds[axis][0] = bounds[axis][0].min(lo);
                    bounds[axis][1] = bounds[axis][1].max(hi);
                }
            }
        }
        summary
    }
}

/// Surface voxels of a mask inside its bounding box, as voxel coordinates.
fn surface(mask: &MaskVolume, bounds: [[usize; 2]; 3]) -> Vec<[u32; 3]> {
    let [nx, ny, nz] = mask.dims;
    let at = |x: usize, y: usize, z: usize| mask.voxels[x + nx * (y + ny * z)] != 0;
    let mut points = Vec::new();
    for z in bounds[2][0]..=bounds[2][1] {
        for y in bounds[1][0]..=bounds[1][1] {
            let row = nx * (y + ny * z);
            // False islands stretch the box; most of its rows are empty.
            if mask.voxels[row + bounds[0][0]..=row + bounds[0][1]].iter().all(|v| *v == 0) {
                continue;
            }
            for x in bounds[0][0]..=bounds[0][1] {
                if !at(x, y, z) {
                    continue;
                }
                let inner = x > 0
                    && x + 1 < nx
                    && y > 0
                    && y + 1 < ny
                    && z > 0
                    && z + 1 < nz
                    && at(x - 1, y, z)
                    && at(x + 1, y, z)
                    && at(x, y - 1, z)
                    && at(x, y + 1, z)
                    && at(x, y, z - 1)
                    && at(x, y, z + 1);
                if !inner {
                    points.push([coord(x), coord(y), coord(z)]);
                }
            }
        }
    }
    points
}

fn coord(i: usize) -> u32 {
    u32::try_from(i).expect("volume sides fit in u32")
}

fn hd95_nonempty(a: &MaskVolume, b: &MaskVolume, summary: &Summary) -> f64 {
    let surfaces =
        [surface(a, summary.boxes[0].expect("a is not empty")), surface(b, summary.boxes[1].expect("b is not empty"))];
    let mut distances = Vec::with_capacity(surfaces[0].len() + surfaces[1].len());
    for (from, to) in [(0, 1), (1, 0)] {
        let tree = KdTree::new(surfaces[to].clone(), a.spacing);
        // The target surface as a set, for the distance-0 shortcut.
        let marks = SurfaceMarks::new(&surfaces[to]);
        distances.extend(surfaces[from].iter().map(|p| if marks.contains(*p) { 0.0 } else { tree.nearest(*p).sqrt() }));
    }
    percentile(&mut distances, 95.0)
}

/// NumPy's default (linear) percentile; reorders `values`.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    assert!(!values.is_empty(), "a percentile of no values");
    let h = (f64_from(values.len() - 1)) * q / 100.0;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let lo = h.floor() as usize;
    let (_, low, rest) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let low = *low;
    match rest.iter().copied().min_by(f64::total_cmp) {
        Some(high) if h > f64_from(lo) => low + (h - f64_from(lo)) * (high - low),
        _ => low,
    }
}

/// Membership of surface voxels, one bit per voxel of the bounding box of the surface.
struct SurfaceMarks {
    origin: [u32; 3],
    size: [usize; 3],
    bits: Vec<u64>,
}

impl SurfaceMarks {
    fn new(points: &[[u32; 3]]) -> Self {
        let mut origin = [u32::MAX; 3];
        let mut end = [0_u32; 3];
        for p in points {
            for axis in 0..3 {
                origin[axis] = origin[axis].min(p[axis]);
                end[axis] = end[axis].max(p[axis]);
            }
        }
        let size = [0, 1, 2].map(|axis| (end[axis] - origin[axis]) as usize + 1);
        let mut marks = SurfaceMarks { origin, size, bits: vec![0; (size[0] * size[1] * size[2]).div_ceil(64)] };
        for p in points {
            let i = marks.index(*p).expect("inside its own box");
            marks.bits[i / 64] |= 1 << (i % 64);
        }
        marks
    }

    fn index(&self, p: [u32; 3]) -> Option<usize> {
        let mut local = [0_usize; 3];
        for axis in 0..3 {
            let d = p[axis].checked_sub(self.origin[axis])? as usize;
            if d >= self.size[axis] {
                return None;
            }
            local[axis] = d;
        }
        Some(local[0] + self.size[0] * (local[1] + self.size[1] * local[2]))
    }

    fn contains(&self, p: [u32; 3]) -> bool {
        self.index(p).is_some_and(|i| self.bits[i / 64] & (1 << (i % 64)) != 0)
    }
}

/// An implicit, balanced k-d tree over voxel coordinates, with distances in
/// millimetres: a node is the median of its range, split on the axis of
/// widest extent in millimetres.
struct KdTree {
    points: Vec<[u32; 3]>,
    axes: Vec<u8>,
    spacing: [f64; 3],
}

const LEAF: usize = 8;

impl KdTree {
    fn new(mut points: Vec<[u32; 3]>, spacing: [f64; 3]) -> Self {
        let mut axes = vec![0; points.len()];
        Self::build(&mut points, &mut axes, spacing);
        KdTree { points, axes, spacing }
    }

    fn build(points: &mut [[u32; 3]], axes: &mut [u8], spacing: [f64; 3]) {
        if points.len() <= LEAF {
            return;
        }
        let mut widest = (0, -1.0);
        for axis in 0..3 {
            let (lo, hi) = points.iter().fold((u32::MAX, 0), |(lo, hi), p| (lo.min(p[axis]), hi.max(p[axis])));
            let extent = f64::from(hi - lo) * spacing[axis];
            if extent > widest.1 {
                widest = (axis, extent);
            }
        }
        let split = widest.0;
        let mid = points.len() / 2;
        points.select_nth_unstable_by_key(mid, |p| p[split]);
        axes[mid] = u8::try_from(split).expect("three axes");
        let (left, right) = points.split_at_mut(mid);
        let (left_axes, right_axes) = axes.split_at_mut(mid);
        Self::build(left, left_axes, spacing);
        Self::build(&mut right[1..], &mut right_axes[1..], spacing);
    }

    /// Squared distance, summed in axis order as SciPy's `distance_transform_edt` does.
    fn distance2(&self, p: [u32; 3], q: [u32; 3]) -> f64 {
        let mut sum = 0.0;
        for axis in 0..3 {
            let d = (f64::from(p[axis]) - f64::from(q[axis])) * self.spacing[axis];
            sum += d * d;
        }
        sum
    }

    /// The squared distance from `q` to the nearest point.
    fn nearest(&self, q: [u32; 3]) -> f64 {
        let mut best = f64::INFINITY;
        self.search(0, self.points.len(), q, &mut best);
        best
    }

    fn search(&self, lo: usize, hi: usize, q: [u32; 3], best: &mut f64) {
        if hi - lo <= LEAF {
            for p in &self.points[lo..hi] {
                *best = best.min(self.distance2(*p, q));
            }
            return;
        }
        let mid = lo + (hi - lo) / 2;
        let p = self.points[mid];
        *best = best.min(self.distance2(p, q));
        let axis = usize::from(self.axes[mid]);
        let gap = (f64::from(q[axis]) - f64::from(p[axis])) * self.spacing[axis];
        let (near, far) = if gap < 0.0 { ((lo, mid), (mid + 1, hi)) } else { ((mid + 1, hi), (lo, mid)) };
        self.search(near.0, near.1, q, best);
        if gap * gap < *best {
            self.search(far.0, far.1, q, best);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scoring");

    #[derive(Deserialize)]
    struct LabelCase {
        name: String,
        classes: Vec<String>,
        positive: Option<String>,
        truth: Vec<String>,
        probabilities: Option<Vec<Vec<f64>>>,
        binary_probability: Option<Vec<f64>>,
        labels: Option<Vec<String>>,
        expected: Expected,
    }

    #[derive(Deserialize)]
    struct Expected {
        auc: Option<f64>,
        accuracy: f64,
        f1: f64,
    }

    fn label_cases() -> Vec<LabelCase> {
        serde_json::from_slice(&std::fs::read(format!("{FIXTURES}/labels.json")).unwrap()).unwrap()
    }

    fn close(actual: f64, expected: f64, tolerance: f64, what: &str) {
        assert!((actual - expected).abs() <= tolerance, "{what}: {actual} against the reference {expected}");
    }

    #[test]
    fn label_metrics_match_scikit_learn_on_the_reference_inputs() {
        for case in label_cases() {
            let index = |label: &String| u32::try_from(case.classes.iter().position(|c| c == label).unwrap()).unwrap();
            let truth: Vec<u32> = case.truth.iter().map(index).collect();
            let positive = case.positive.as_ref().map(index);
            let (predicted, auc): (Vec<u32>, Option<f64>) =
                match (&case.binary_probability, &case.probabilities, &case.labels) {
                    (Some(p), _, _) => {
                        let pos = positive.unwrap();
                        let flags: Vec<bool> = truth.iter().map(|t| *t == pos).collect();
                        (p.iter().map(|x| if *x >= 0.5 { pos } else { 1 - pos }).collect(), roc_auc(&flags, p))
                    }
                    (None, Some(rows), _) => {
                        let k = case.classes.len();
                        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
                        let orders: Vec<Vec<usize>> =
                            (0..k).map(|c| ascending(&rows.iter().map(|r| r[c]).collect::<Vec<_>>())).collect();
                        let argmax = |r: &Vec<f64>| {
                            (0..k).fold(0, |best, c| if r[c] > r[best] { c } else { best }).try_into().unwrap()
                        };
                        (rows.iter().map(argmax).collect(), macro_ovr_auc(&truth, &flat, k, &orders, None))
                    }
                    (None, None, Some(labels)) => (labels.iter().map(index).collect(), None),
                    _ => panic!("case {} has no predictions", case.name),
                };
            let name = &case.name;
            if let Some(expected) = case.expected.auc {
                close(auc.unwrap(), expected, 1e-9, &format!("{name} AUC"));
            }
            close(
                accuracy(&truth, &predicted, None).unwrap(),
                case.expected.accuracy,
                1e-9,
                &format!("{name} accuracy"),
            );
            let f1 = match positive {
                Some(pos) => f1_binary(&truth, &predicted, pos, None),
                None => f1_macro(&truth, &predicted, case.classes.len(), None).unwrap(),
            };
            close(f1, case.expected.f1, 1e-9, &format!("{name} F1"));
        }
    }

    #[test]
    fn auc_is_undefined_for_one_class_and_weights_act_as_repeated_units() {
        assert_eq!(roc_auc(&[true, true], &[0.2, 0.9]), None);
        let positive = [false, true, false, true];
        let scores = [0.1, 0.4, 0.35, 0.8];
        let repeated = roc_auc(&[false, true, true, false, true], &[0.1, 0.4, 0.4, 0.35, 0.8]).unwrap();
        let weighted = roc_auc_weighted(&positive, &scores, &ascending(&scores), Some(&[1, 2, 1, 1])).unwrap();
        close(weighted, repeated, 1e-12, "weighted AUC");
        assert_eq!(roc_auc_weighted(&positive, &scores, &ascending(&scores), Some(&[0, 2, 0, 1])), None);
    }

    #[test]
    fn the_percentile_interpolates_like_numpy() {
        close(percentile(&mut [4.0, 1.0, 3.0, 2.0], 95.0), 3.85, 1e-12, "95th of 1..4");
        close(percentile(&mut [7.0], 95.0), 7.0, 0.0, "one value");
        close(percentile(&mut [0.0, 0.0, 5.0], 50.0), 0.0, 0.0, "median");
    }

    #[test]
    fn the_k_d_tree_finds_the_same_nearest_point_as_a_scan() {
        let mut state = 17_u64;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            u32::try_from(state >> 58).unwrap()
        };
        let points: Vec<[u32; 3]> = (0..500).map(|_| [next(), next(), next() / 4]).collect();
        let spacing = [0.8, 0.7, 2.5];
        let tree = KdTree::new(points.clone(), spacing);
        for _ in 0..200 {
            let q = [next(), next(), next() / 4];
            let scan = points.iter().map(|p| tree.distance2(*p, q)).fold(f64::INFINITY, f64::min);
            assert_eq!(tree.nearest(q).to_bits(), scan.to_bits());
        }
    }
}
