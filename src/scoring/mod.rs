//! Scoring of challenge submissions against hidden labels and masks.
//!
//! A library for the job queue: plain types in, [`Scores`] out, no database,
//! storage or HTTP. [`score_labels`] checks a CSV submission, joins it with
//! the hidden labels and scores it; [`score_masks`] reads mask pairs (NIfTI
//! or DICOM SEG) a few at a time and scores them. Scores are given overall and
//! per site, each with a percentile bootstrap interval over units (subjects
//! or cases). Only scores leave: no per-unit value, truth or prediction.
//!
//! Metric definitions are in [`metrics`], file formats in [`masks`], CSV rules
//! in [`submission`], the interval in [`bootstrap`].

pub mod bootstrap;
pub mod masks;
pub mod metrics;
pub mod submission;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use bootstrap::BootstrapOptions;
pub use masks::{MaskError, MaskSource, MaskVolume, ReadOptions, Segment};
pub use submission::{LabelPairs, PredictionKind, SubmissionError, SubmissionProblem, TruthLabel};

/// One metric of one group, with its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricScore {
    /// `auc`, `auc_macro_ovr`, `accuracy`, `f1`, `f1_macro`, `dice` (mean
    /// over cases) or `hd95` (mean over cases, millimetres).
    pub metric: String,
    /// The metric on the whole group; `null` when undefined (see `reason`).
    pub value: Option<f64>,
    /// Lower bound of the bootstrap interval.
    pub ci_low: Option<f64>,
    /// Upper bound of the bootstrap interval.
    pub ci_high: Option<f64>,
    /// Units (subjects, studies or cases) in the group.
    pub n: usize,
    /// Resamples the interval rests on (those on which the metric was defined).
    pub resamples: u32,
    /// Why `value` is `null`.
    pub reason: Option<String>,
}

/// The scores of one site's units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteScores {
    /// The site.
    pub site: String,
    /// Units of the site.
    pub n: usize,
    /// One entry per metric.
    pub metrics: Vec<MetricScore>,
}

/// What was scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ScoredTask {
    /// Labels or probabilities per subject or study.
    Labels,
    /// Segmentation masks per series.
    Masks,
}

/// The published result of scoring one submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Scores {
    /// Labels or masks.
    pub task: ScoredTask,
    /// For labels: what the submission predicted.
    pub prediction: Option<PredictionKind>,
    /// Units scored.
    pub n: usize,
    /// One entry per metric, over all units.
    pub overall: Vec<MetricScore>,
    /// Per site, sorted by site.
    pub sites: Vec<SiteScores>,
    /// How the intervals were drawn (percentile bootstrap over units).
    pub bootstrap: BootstrapOptions,
}

/// How labels are scored.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelOptions {
    /// The positive class of a two-class task (default: `1` if a class is
    /// called so, else the last in sorted order).
    pub positive_class: Option<String>,
    /// A positive-class probability at or above this predicts the positive class.
    pub threshold: f64,
    /// Intervals.
    pub bootstrap: BootstrapOptions,
}

impl Default for LabelOptions {
    fn default() -> Self {
        LabelOptions { positive_class: None, threshold: 0.5, bootstrap: BootstrapOptions::default() }
    }
}

/// Scores a CSV submission against the hidden labels of the test split:
/// AUC (probability submissions), accuracy and F1, overall and per site.
pub fn score_labels(
    truth: &BTreeMap<String, TruthLabel>,
    submission_csv: &[u8],
    options: &LabelOptions,
) -> Result<Scores, SubmissionError> {
    let pairs = submission::join_labels(truth, submission_csv, options.positive_class.as_deref(), options.threshold)?;
    Ok(summarize(ScoredTask::Labels, Some(pairs.kind), &pairs.sites, &options.bootstrap, |rows, group| {
        label_group(&pairs, rows, group, &options.bootstrap)
    }))
}

/// Groups units by site and scores each group and the whole.
fn summarize(
    task: ScoredTask,
    prediction: Option<PredictionKind>,
    sites: &[String],
    bootstrap: &BootstrapOptions,
    mut group: impl FnMut(&[usize], &str) -> Vec<MetricScore>,
) -> Scores {
    let all: Vec<usize> = (0..sites.len()).collect();
    let mut by_site: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, site) in sites.iter().enumerate() {
        by_site.entry(site).or_default().push(i);
    }
    Scores {
        task,
        prediction,
        n: sites.len(),
        overall: group(&all, ""),
        sites: by_site
            .into_iter()
            .map(|(site, rows)| SiteScores { site: site.to_owned(), n: rows.len(), metrics: group(&rows, site) })
            .collect(),
        bootstrap: *bootstrap,
    }
}

/// A metric's value, interval and the reason it may be undefined.
fn metric_score(
    metric: &str,
    n: usize,
    value: Option<f64>,
    interval: bootstrap::Interval,
    reason: &str,
) -> MetricScore {
    MetricScore {
        metric: metric.to_owned(),
        value,
        ci_low: value.and(interval.low),
        ci_high: value.and(interval.high),
        n,
        resamples: if value.is_some() { interval.used } else { 0 },
        reason: value.is_none().then(|| reason.to_owned()),
    }
}

fn label_group(pairs: &LabelPairs, rows: &[usize], group: &str, options: &BootstrapOptions) -> Vec<MetricScore> {
    let truth: Vec<u32> = rows.iter().map(|r| pairs.truth[*r]).collect();
    let predicted: Vec<u32> = rows.iter().map(|r| pairs.predicted[*r]).collect();
    let k = pairs.classes.len();
    let width = if pairs.positive.is_some() { 1 } else { k };
    let scores: Option<Vec<f64>> = pairs
        .scores
        .as_ref()
        .map(|s| rows.iter().flat_map(|r| s[r * width..(r + 1) * width].iter().copied()).collect());
    // Units ranked by each score column, once; resamples reuse the ranking.
    let orders: Vec<Vec<usize>> = scores
        .as_ref()
        .map(|s| {
            (0..width)
                .map(|c| metrics::ascending(&s.iter().skip(c).step_by(width).copied().collect::<Vec<_>>()))
                .collect()
        })
        .unwrap_or_default();
    let positive_flags: Vec<bool> = pairs.positive.map(|p| truth.iter().map(|t| *t == p).collect()).unwrap_or_default();
    let evaluate = |weights: Option<&[u32]>| -> Vec<Option<f64>> {
        let auc = scores.as_ref().and_then(|s| match pairs.positive {
            Some(_) => metrics::roc_auc_weighted(&positive_flags, s, &orders[0], weights),
            None => metrics::macro_ovr_auc(&truth, s, k, &orders, weights),
        });
        let f1 = match pairs.positive {
            Some(p) => Some(metrics::f1_binary(&truth, &predicted, p, weights)),
            None => metrics::f1_macro(&truth, &predicted, k, weights),
        };
        vec![auc, metrics::accuracy(&truth, &predicted, weights), f1]
    };
    let point = evaluate(None);
    let intervals = bootstrap::intervals(rows.len(), options, group, 3, |w| evaluate(Some(w)));
    let binary = pairs.positive.is_some();
    let auc_reason = match (pairs.kind, binary) {
        (PredictionKind::Label, _) => "the submission gives labels, not probabilities",
        (_, true) => "the group has units of one class only",
        (_, false) => "a class is absent from the group",
    };
    vec![
        metric_score(if binary { "auc" } else { "auc_macro_ovr" }, rows.len(), point[0], intervals[0], auc_reason),
        metric_score("accuracy", rows.len(), point[1], intervals[1], "the group is empty"),
        metric_score(if binary { "f1" } else { "f1_macro" }, rows.len(), point[2], intervals[2], "the group is empty"),
    ]
}

/// One case of a mask submission: the hidden mask and the team's, of one series.
#[derive(Debug, Clone)]
pub struct MaskCase {
    /// The open id of the series (or case).
    pub id: String,
    /// Its site, for per-site scores.
    pub site: String,
    /// The hidden mask.
    pub truth: MaskSource,
    /// The submitted mask.
    pub prediction: MaskSource,
}

/// How masks are scored.
#[derive(Debug, Clone, Copy)]
pub struct MaskOptions {
    /// How hidden masks are read (their segment, their size limit).
    pub truth: ReadOptions,
    /// How submitted masks are read.
    pub prediction: ReadOptions,
    /// Cases read and compared at once; memory grows with it (about two
    /// volumes of one byte per voxel each).
    pub threads: usize,
    /// Largest relative difference between the spacings of a pair.
    pub spacing_tolerance: f64,
    /// Intervals.
    pub bootstrap: BootstrapOptions,
}

impl Default for MaskOptions {
    fn default() -> Self {
        MaskOptions {
            truth: ReadOptions::default(),
            prediction: ReadOptions::default(),
            threads: 2,
            spacing_tolerance: 1e-3,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

/// One scored case (kept by the job, never published).
#[derive(Debug, Clone, PartialEq)]
pub struct CaseScore {
    /// The case's open id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Dice and HD95.
    pub comparison: metrics::MaskComparison,
}

/// Which mask of a case failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MaskRole {
    /// The hidden mask: a fault of the cohort, not of the team.
    Truth,
    /// The submitted mask.
    Prediction,
    /// The pair does not match (shape, spacing).
    Pair,
}

/// A case that could not be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("case {case}: {} mask: {error}", if matches!(.role, MaskRole::Truth) { "hidden" } else { "submitted" })]
pub struct MaskCaseError {
    /// The case's open id.
    pub case: String,
    /// Which mask.
    pub role: MaskRole,
    /// The code and problem.
    pub error: MaskError,
}

impl MaskCaseError {
    /// The stable code, e.g. `mask-shape-mismatch`.
    pub fn code(&self) -> &'static str {
        self.error.code
    }
}

/// Reads and compares one case.
pub fn score_mask_case(case: &MaskCase, options: &MaskOptions) -> Result<CaseScore, MaskCaseError> {
    let fail = |role, error| MaskCaseError { case: case.id.clone(), role, error };
    let truth = masks::read_mask(&case.truth, &options.truth).map_err(|e| fail(MaskRole::Truth, e))?;
    let prediction =
        masks::read_mask(&case.prediction, &options.prediction).map_err(|e| fail(MaskRole::Prediction, e))?;
    let shape = |d: [usize; 3]| format!("{}×{}×{}", d[0], d[1], d[2]);
    if truth.dims != prediction.dims {
        let message = format!("the mask is {} voxels, the image {}", shape(prediction.dims), shape(truth.dims));
        return Err(fail(MaskRole::Pair, MaskError { code: "mask-shape-mismatch", message }));
    }
    let off = (0..3)
        .any(|a| (prediction.spacing[a] - truth.spacing[a]).abs() > options.spacing_tolerance * truth.spacing[a].abs());
    if off {
        let [x, y, z] = prediction.spacing;
        let [tx, ty, tz] = truth.spacing;
        let message = format!("the mask's voxel spacing {x}×{y}×{z} mm is not the image's {tx}×{ty}×{tz} mm");
        return Err(fail(MaskRole::Pair, MaskError { code: "mask-spacing-mismatch", message }));
    }
    let comparison = metrics::compare_masks(&truth, &prediction);
    Ok(CaseScore { id: case.id.clone(), site: case.site.clone(), comparison })
}

/// Scores mask pairs, `options.threads` cases at a time on scoped threads,
/// reading each pair only when a thread takes it. The first case that fails
/// stops the scoring.
pub fn score_masks<I>(cases: I, options: &MaskOptions) -> Result<Scores, MaskCaseError>
where
    I: IntoIterator<Item = MaskCase>,
    I::IntoIter: Send,
{
    let queue = Mutex::new(cases.into_iter());
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<CaseScore>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<MaskCaseError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(case) = queue.lock().expect("queue").next() else { break };
                    match score_mask_case(&case, options) {
                        Ok(score) => results.lock().expect("results").push(score),
                        Err(error) => {
                            stop.store(true, Ordering::Relaxed);
                            failure.lock().expect("failure").get_or_insert(error);
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().expect("failure") {
        return Err(error);
    }
    Ok(summarize_masks(results.into_inner().expect("results"), &options.bootstrap))
}

/// Means of Dice and HD95 over cases, overall and per site, with intervals.
/// Cases are ordered by id first, so the result does not depend on the order
/// in which they were scored.
pub fn summarize_masks(mut cases: Vec<CaseScore>, bootstrap_options: &BootstrapOptions) -> Scores {
    cases.sort_by(|a, b| a.id.cmp(&b.id));
    let sites: Vec<String> = cases.iter().map(|c| c.site.clone()).collect();
    summarize(ScoredTask::Masks, None, &sites, bootstrap_options, |rows, group| {
        let values: Vec<[f64; 2]> =
            rows.iter().map(|r| [cases[*r].comparison.dice, cases[*r].comparison.hd95]).collect();
        let mean = |weights: Option<&[u32]>| -> Vec<Option<f64>> {
            let mut sums = [0.0; 2];
            let mut total = 0.0;
            for (i, v) in values.iter().enumerate() {
                let w = weights.map_or(1.0, |w| f64::from(w[i]));
                total += w;
                sums[0] += w * v[0];
                sums[1] += w * v[1];
            }
            sums.iter().map(|s| (total > 0.0).then(|| s / total)).collect()
        };
        let point = mean(None);
        let intervals = bootstrap::intervals(rows.len(), bootstrap_options, group, 2, |w| mean(Some(w)));
        vec![
            metric_score("dice", rows.len(), point[0], intervals[0], "the group is empty"),
            metric_score("hd95", rows.len(), point[1], intervals[1], "the group is empty"),
        ]
    })
}

#[cfg(test)]
mod tests;
