//! Scoring end to end: reference values, per-site results, intervals, errors.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::masks::tests::{FIXTURES, fixture};
use super::*;

#[derive(Deserialize)]
struct MaskFixtures {
    cases: Vec<MaskFixture>,
}

#[derive(Deserialize)]
struct MaskFixture {
    name: String,
    truth: String,
    prediction: String,
    dice: f64,
    hd95: f64,
}

fn mask_fixtures() -> Vec<MaskFixture> {
    let json = std::fs::read(format!("{FIXTURES}/masks.json")).unwrap();
    serde_json::from_slice::<MaskFixtures>(&json).unwrap().cases
}

fn case(id: &str, site: &str, truth: &str, prediction: &str) -> MaskCase {
    MaskCase { id: id.into(), site: site.into(), truth: fixture(truth), prediction: fixture(prediction) }
}

fn metric<'a>(metrics: &'a [MetricScore], name: &str) -> &'a MetricScore {
    metrics.iter().find(|m| m.metric == name).unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
}

#[test]
fn dice_and_hd95_match_numpy_and_scipy_on_the_reference_masks() {
    for f in mask_fixtures() {
        let scored = score_mask_case(&case(&f.name, "a", &f.truth, &f.prediction), &MaskOptions::default()).unwrap();
        let MaskComparison { dice, hd95, .. } = scored.comparison;
        assert!((dice - f.dice).abs() <= 1e-6, "{}: Dice {dice}, reference {}", f.name, f.dice);
        assert!((hd95 - f.hd95).abs() <= 1e-9, "{}: HD95 {hd95}, reference {}", f.name, f.hd95);
    }
}

use metrics::MaskComparison;

#[test]
fn mask_scores_come_overall_and_per_site_with_intervals_around_the_mean() {
    let cases: Vec<MaskCase> = mask_fixtures()
        .iter()
        .enumerate()
        .map(|(i, f)| case(&f.name, if i % 2 == 0 { "north" } else { "south" }, &f.truth, &f.prediction))
        .collect();
    let scores = score_masks(cases.clone(), &MaskOptions { threads: 3, ..MaskOptions::default() }).unwrap();
    let expected_mean = mask_fixtures().iter().map(|f| f.dice).sum::<f64>() / 10.0;
    assert_eq!((scores.task, scores.n, scores.sites.len()), (ScoredTask::Masks, 10, 2));
    let dice = metric(&scores.overall, "dice");
    assert!((dice.value.unwrap() - expected_mean).abs() < 1e-9);
    assert!(dice.ci_low.unwrap() <= dice.value.unwrap() && dice.value.unwrap() <= dice.ci_high.unwrap());
    assert_eq!(scores.sites.iter().map(|s| (s.site.as_str(), s.n)).collect::<Vec<_>>(), [("north", 5), ("south", 5)]);
    let reversed = score_masks(cases.into_iter().rev(), &MaskOptions { threads: 1, ..MaskOptions::default() }).unwrap();
    assert_eq!(scores, reversed, "the order and number of threads change nothing");
    let json = serde_json::to_value(&scores).unwrap();
    assert_eq!(json["sites"][0]["metrics"][1]["metric"], "hd95");
    assert!(json["overall"][0]["ci_low"].is_f64());
}

#[test]
fn a_mask_of_another_shape_or_an_unreadable_mask_names_its_case() {
    let error = score_masks(
        [
            case("CASE-1", "a", "mask_0_truth.nii.gz", "mask_0_pred.nii.gz"),
            case("CASE-2", "a", "mask_0_truth.nii.gz", "labels.json"),
        ],
        &MaskOptions::default(),
    )
    .unwrap_err();
    assert_eq!((error.case.as_str(), error.role, error.code()), ("CASE-2", MaskRole::Prediction, "mask-unreadable"));
    assert_eq!(error.to_string(), "case CASE-2: submitted mask: not a NIfTI-1, NIfTI-2 or DICOM file");

    let mut small = MaskVolume { dims: [4, 4, 2], spacing: [1.0; 3], voxels: vec![0; 32] };
    small.voxels[5] = 1;
    let bytes = nifti_bytes(&small);
    let pair =
        MaskCase { prediction: MaskSource::Bytes(bytes.into()), ..case("CASE-3", "a", "mask_0_truth.nii.gz", "") };
    let error = score_mask_case(&pair, &MaskOptions::default()).unwrap_err();
    assert_eq!((error.role, error.code()), (MaskRole::Pair, "mask-shape-mismatch"));
    assert_eq!(error.error.message, "the mask is 4×4×2 voxels, the image 32×32×8");
}

/// A NIfTI-1 uint8 file of a volume.
fn nifti_bytes(volume: &MaskVolume) -> Vec<u8> {
    let mut h = vec![0_u8; 352];
    h[0..4].copy_from_slice(&348_i32.to_le_bytes());
    let d = volume.dims.map(|d| i16::try_from(d).unwrap());
    for (i, v) in [3, d[0], d[1], d[2], 1, 1, 1, 1].iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    h[70..72].copy_from_slice(&2_i16.to_le_bytes());
    h[72..74].copy_from_slice(&8_i16.to_le_bytes());
    #[allow(clippy::cast_possible_truncation)]
    for (i, s) in volume.spacing.iter().enumerate() {
        h[80 + 4 * i..84 + 4 * i].copy_from_slice(&(*s as f32).to_le_bytes());
    }
    h[108..112].copy_from_slice(&352.0_f32.to_le_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(&volume.voxels);
    h
}

#[test]
#[allow(clippy::float_cmp)] // exact by definition
fn hd95_of_two_single_voxels_is_their_distance_and_empty_masks_have_defined_scores() {
    let at = |x: usize, y: usize, z: usize| {
        let mut v = MaskVolume { dims: [10, 10, 5], spacing: [0.5, 0.5, 3.0], voxels: vec![0; 500] };
        v.voxels[x + 10 * (y + 10 * z)] = 1;
        v
    };
    let apart = metrics::compare_masks(&at(1, 1, 1), &at(4, 5, 1));
    assert!(apart.dice == 0.0 && apart.hd95 == 2.5, "{apart:?}");
    let empty = MaskVolume { voxels: vec![0; 500], ..at(0, 0, 0) };
    let both_empty = metrics::compare_masks(&empty, &empty);
    assert!(both_empty.dice == 1.0 && both_empty.hd95 == 0.0, "{both_empty:?}");
    let diagonal = (4.5_f64 * 4.5 + 4.5 * 4.5 + 12.0 * 12.0).sqrt();
    assert!(metrics::compare_masks(&at(3, 3, 3), &empty).hd95 == diagonal, "the volume's diagonal");
    assert_eq!(metrics::compare_masks(&empty, &at(3, 3, 3)), metrics::compare_masks(&at(3, 3, 3), &empty).swap());
}

impl MaskComparison {
    fn swap(self) -> Self {
        MaskComparison { voxels: [self.voxels[1], self.voxels[0]], ..self }
    }
}

#[derive(Deserialize)]
struct LabelFixture {
    name: String,
    truth: Vec<String>,
    binary_probability: Option<Vec<f64>>,
    probabilities: Option<Vec<Vec<f64>>>,
    classes: Vec<String>,
    expected: BTreeMap<String, f64>,
}

fn label_fixture(name: &str) -> LabelFixture {
    let json = std::fs::read(format!("{FIXTURES}/labels.json")).unwrap();
    serde_json::from_slice::<Vec<LabelFixture>>(&json).unwrap().into_iter().find(|c| c.name == name).unwrap()
}

/// The hidden labels of a fixture, sites alternating, and a CSV of its predictions.
fn submission(f: &LabelFixture, sites: &[&str]) -> (BTreeMap<String, TruthLabel>, String) {
    let id = |i: usize| format!("OPEN-{i:04}");
    let truth = f
        .truth
        .iter()
        .enumerate()
        .map(|(i, label)| (id(i), TruthLabel { label: label.clone(), site: sites[i % sites.len()].into() }))
        .collect();
    let mut csv = String::new();
    if let Some(p) = &f.binary_probability {
        csv.push_str("subject_id,probability\n");
        // Rows in reverse: the join does not depend on the file's order.
        for (i, p) in p.iter().enumerate().rev() {
            writeln!(csv, "{},{p}", id(i)).unwrap();
        }
    } else {
        let header: Vec<String> = f.classes.iter().map(|c| format!("probability_{c}")).collect();
        writeln!(csv, "study_id,{}", header.join(",")).unwrap();
        for (i, row) in f.probabilities.as_ref().unwrap().iter().enumerate() {
            let values: Vec<String> = row.iter().map(f64::to_string).collect();
            writeln!(csv, "{},{}", id(i), values.join(",")).unwrap();
        }
    }
    (truth, csv)
}

#[test]
fn a_probability_submission_scores_like_scikit_learn_overall_with_intervals_per_site() {
    let f = label_fixture("binary-ties");
    let (truth, csv) = submission(&f, &["site-a", "site-b", "site-c"]);
    let scores = score_labels(&truth, csv.as_bytes(), &LabelOptions::default()).unwrap();
    for name in ["auc", "accuracy", "f1"] {
        let m = metric(&scores.overall, name);
        assert!((m.value.unwrap() - f.expected[name]).abs() <= 1e-9, "{name}: {m:?}");
        assert!(m.ci_low.unwrap() <= m.value.unwrap() && m.value.unwrap() <= m.ci_high.unwrap(), "{m:?}");
        assert_eq!((m.n, m.resamples), (200, 1000));
    }
    assert_eq!(scores.sites.iter().map(|s| s.n).collect::<Vec<_>>(), [67, 67, 66]);
    let again = score_labels(&truth, csv.as_bytes(), &LabelOptions::default()).unwrap();
    assert_eq!(scores, again, "the same seed gives the same intervals");
    let reseeded = LabelOptions {
        bootstrap: BootstrapOptions { seed: 1, ..BootstrapOptions::default() },
        ..LabelOptions::default()
    };
    let other = score_labels(&truth, csv.as_bytes(), &reseeded).unwrap();
    assert_eq!(metric(&other.overall, "auc").value, metric(&scores.overall, "auc").value);
    assert_ne!(metric(&other.overall, "auc").ci_low, metric(&scores.overall, "auc").ci_low);
}

#[test]
fn multiclass_probabilities_give_macro_auc_and_macro_f1() {
    let f = label_fixture("multiclass-probabilities");
    let (truth, csv) = submission(&f, &["x"]);
    let scores = score_labels(&truth, csv.as_bytes(), &LabelOptions::default()).unwrap();
    for (name, reference) in [("auc_macro_ovr", "auc"), ("accuracy", "accuracy"), ("f1_macro", "f1")] {
        let m = metric(&scores.overall, name);
        assert!((m.value.unwrap() - f.expected[reference]).abs() <= 1e-9, "{name}: {m:?}");
    }
    assert_eq!(scores.prediction, Some(PredictionKind::ClassProbabilities));
}

#[test]
fn a_site_with_one_class_has_no_auc_and_says_why() {
    let truth = submission::tests::truth(&[
        ("S1", "1", "mixed"),
        ("S2", "0", "mixed"),
        ("S3", "1", "mixed"),
        ("S4", "1", "positive-only"),
        ("S5", "1", "positive-only"),
    ]);
    let csv = b"subject_id,probability\nS1,0.8\nS2,0.3\nS3,0.4\nS4,0.9\nS5,0.2\n";
    let scores = score_labels(&truth, csv, &LabelOptions::default()).unwrap();
    let lonely = &scores.sites[1];
    assert_eq!(lonely.site, "positive-only");
    let auc = metric(&lonely.metrics, "auc");
    assert_eq!(
        (auc.value, auc.ci_low, auc.reason.as_deref()),
        (None, None, Some("the group has units of one class only"))
    );
    assert_eq!(metric(&lonely.metrics, "accuracy").value, Some(0.5));
    let mixed = metric(&scores.sites[0].metrics, "auc");
    assert_eq!(mixed.value, Some(1.0));
    assert!(mixed.resamples < 1000, "resamples of one class are skipped: {mixed:?}");
    let labels =
        score_labels(&truth, b"subject_id,label\nS1,1\nS2,0\nS3,0\nS4,1\nS5,1\n", &LabelOptions::default()).unwrap();
    let auc = metric(&labels.overall, "auc");
    assert_eq!((auc.value, auc.reason.as_deref()), (None, Some("the submission gives labels, not probabilities")));
    assert_eq!(metric(&labels.overall, "accuracy").value, Some(0.8));
}
