//! Subject-level train / validation / test splits of an open cohort.
//!
//! Pure and deterministic: no database, no HTTP. Publishing hands over the cohort's subjects
//! ([`SplitSubject`]: registry pseudonym, studies with their sites, sex, age, label) and the
//! organizer's [`SplitSpec`]; [`assign`] answers each subject's [`Split`] with a
//! [`SplitReport`], and only after [`check_leakage`] has passed on that very answer.
//!
//! The choices, and why:
//! - **A keyed hash orders subjects; nothing is shuffled.** A subject's rank is
//!   `H(seed, subject key)`, the splitmix64 finaliser run over the key's bytes (implemented
//!   here, so it is the same on every platform and in every release of any crate). Subjects
//!   are sorted by rank inside their stratum and cut into train, validation and test, in that
//!   order. The input order therefore never matters, and adding or removing a subject moves
//!   only the few subjects of its own stratum that sit at a cut, where a shuffled list would
//!   reassign everyone.
//! - **Largest-remainder apportionment.** The whole cohort's split sizes are the largest-
//!   remainder rounding of `fractions × subjects` (ties go to the earlier split: train, then
//!   validation, then test). Each stratum then gets, per split, the floor or the ceiling of its
//!   own quota, so every split's share of every stratum is within one subject of its target;
//!   the stratum's leftover subjects go to its largest remainders, and are moved between
//!   strata (still only ever floor or ceiling) until the strata add up to the whole cohort's
//!   sizes, so many small strata cannot drift the totals.
//! - **Strata.** The combination of the chosen strata values; a missing value is a stratum of
//!   its own. A subject's site value is the set of its studies' sites, so a subject seen at two
//!   sites forms a stratum with the others seen at those same two.
//! - **Cross-site holdout.** A subject goes to test only if *all* its studies are at held-out
//!   sites. A subject with studies at a held-out site *and* a training site would carry the
//!   held-out site's scanners into training (or the training sites into the test), so it is
//!   excluded from every split and listed in the report with
//!   [`ExclusionReason::HeldOutAndTrainingSites`]; a subject without studies has no site to
//!   place it by and is excluded with [`ExclusionReason::NoSite`]. The other subjects split
//!   into train and validation at random, stratified by site so that every training site is
//!   represented in validation.
//! - **Leakage.** A subject in two splits, a study listed under two subjects (an input error
//!   whatever the splits), and, under a holdout, a test subject with studies at a training site
//!   or a train/validation subject with studies at a held-out site, are each an error naming the
//!   subject (or study) and the splits.
//!
//! The report names excluded subjects by registry pseudonym: it is for the organizer and the
//! audit log, never for the public landing document.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::vocabulary::Sex;

/// The width of an age band when the spec does not set one.
pub const DEFAULT_AGE_BAND_YEARS: u32 = 10;

/// One of the three splits of an open cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Released with labels, for training.
    Train,
    /// Released with labels, for model selection.
    Validation,
    /// Released without its labels, which are kept for scoring.
    Test,
}

impl Split {
    /// The three splits in cutting order.
    pub const ALL: [Self; 3] = [Self::Train, Self::Validation, Self::Test];

    /// The name as the API and the release folders spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Validation => "validation",
            Self::Test => "test",
        }
    }

    /// A split by its exact name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|split| split.as_str() == name)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A study of a subject and the site that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitStudy {
    /// Opaque study key (unique across the cohort).
    pub study: String,
    /// Code of the site holding the study.
    pub site: String,
}

/// A subject to be placed in a split: the unit of every split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSubject {
    /// Opaque subject key: the registry pseudonym.
    pub subject: String,
    /// The subject's studies, possibly at several sites.
    pub studies: Vec<SplitStudy>,
    /// Sex as the registry holds it.
    pub sex: Option<Sex>,
    /// Age in whole years.
    pub age: Option<u32>,
    /// The subject's label, when the challenge has one (e.g. a diagnosis).
    pub label: Option<String>,
}

impl SplitSubject {
    /// The distinct sites of the subject's studies.
    pub fn sites(&self) -> BTreeSet<&str> {
        self.studies.iter().map(|s| s.site.as_str()).collect()
    }
}

/// What a random split may be stratified by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stratum {
    /// Sex (`M`, `F`, `O`, or missing).
    Sex,
    /// Age in bands of `age_band_years` (e.g. 40-49).
    AgeBand,
    /// The set of sites of the subject's studies.
    Site,
    /// The subject's label.
    Label,
}

/// The share of subjects each split receives; they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitFractions {
    /// Share of the training split, above 0.
    #[schema(example = 0.7)]
    pub train: f64,
    /// Share of the validation split; may be 0.
    #[schema(example = 0.15)]
    pub validation: f64,
    /// Share of the test split, above 0.
    #[schema(example = 0.15)]
    pub test: f64,
}

impl SplitFractions {
    fn as_array(self) -> [f64; 3] {
        [self.train, self.validation, self.test]
    }
}

fn default_age_band_years() -> u32 {
    DEFAULT_AGE_BAND_YEARS
}

/// How an organizer asks the cohort to be split (always at subject level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum SplitSpec {
    /// Subjects drawn at random with a seed, optionally stratified.
    Random {
        /// The same seed and subjects always give the same split.
        seed: u64,
        fractions: SplitFractions,
        /// Strata whose proportions every split keeps (within one subject each).
        #[serde(default)]
        stratify_by: Vec<Stratum>,
        /// Width of the age bands, in years (default 10).
        #[serde(default = "default_age_band_years")]
        #[schema(minimum = 1, example = 10)]
        age_band_years: u32,
    },
    /// Whole sites held out as the test split; the other subjects split into train and
    /// validation at random.
    CrossSite {
        seed: u64,
        /// Codes of the held-out sites.
        test_sites: Vec<String>,
        /// Share of the non-held-out subjects that goes to validation (0 to below 1).
        #[serde(default)]
        #[schema(example = 0.2)]
        validation_fraction: f64,
    },
    /// Every subject placed by the organizer.
    Explicit {
        /// Subject key (registry pseudonym) → `train`, `validation` or `test`.
        assignments: BTreeMap<String, String>,
    },
}

impl SplitSpec {
    /// Checks what can be checked without the subjects, so a request can be refused early.
    pub fn validate(&self) -> Result<(), SplitError> {
        match self {
            Self::Random { fractions, stratify_by, age_band_years, .. } => {
                normalized(*fractions)?;
                if *age_band_years == 0 {
                    return Err(SplitError::InvalidAgeBand);
                }
                let mut seen = BTreeSet::new();
                if let Some(twice) = stratify_by.iter().find(|s| !seen.insert(**s)) {
                    return Err(SplitError::DuplicateStratum(*twice));
                }
                Ok(())
            }
            Self::CrossSite { test_sites, validation_fraction, .. } => {
                if test_sites.is_empty() {
                    return Err(SplitError::NoTestSites);
                }
                if !(0.0..1.0).contains(validation_fraction) {
                    return Err(SplitError::InvalidValidationFraction);
                }
                Ok(())
            }
            Self::Explicit { assignments } => {
                let invalid: Vec<String> = assignments
                    .iter()
                    .filter(|(_, name)| Split::parse(name).is_none())
                    .map(|(subject, name)| format!("{subject} → '{name}'"))
                    .collect();
                if invalid.is_empty() { Ok(()) } else { Err(SplitError::InvalidSplitNames(invalid)) }
            }
        }
    }
}

/// The fractions as an array scaled to sum to exactly 1, or why they are refused.
fn normalized(fractions: SplitFractions) -> Result<[f64; 3], SplitError> {
    let f = fractions.as_array();
    if f.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return Err(SplitError::InvalidFractions("each fraction must be a number of at least 0".into()));
    }
    if fractions.train <= 0.0 || fractions.test <= 0.0 {
        return Err(SplitError::InvalidFractions("train and test must each receive a fraction above 0".into()));
    }
    let sum: f64 = f.iter().sum();
    if (sum - 1.0).abs() > 1e-6 {
        return Err(SplitError::InvalidFractions(format!("the fractions sum to {sum}, not 1")));
    }
    Ok(f.map(|x| x / sum))
}

/// Why a spec or a cohort cannot be split. [`SplitError::code`] is stable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    #[error("invalid split fractions: {0}")]
    InvalidFractions(String),
    #[error("the age band width must be at least 1 year")]
    InvalidAgeBand,
    #[error("stratum '{}' is named twice", stratum_name(*.0))]
    DuplicateStratum(Stratum),
    #[error("the validation fraction must be at least 0 and below 1")]
    InvalidValidationFraction,
    #[error("a cross-site split needs at least one held-out test site")]
    NoTestSites,
    #[error("held-out test site '{0}' holds no study of this cohort")]
    UnknownTestSite(String),
    #[error("no subject is left for training: every subject has a study at a held-out site")]
    NoTrainingSite,
    #[error("invalid split names (use train, validation or test): {}", listed(.0))]
    InvalidSplitNames(Vec<String>),
    #[error("assigned subjects that are not in the cohort: {}", listed(.0))]
    UnknownSubjects(Vec<String>),
    #[error("cohort subjects without an assignment: {}", listed(.0))]
    UnassignedSubjects(Vec<String>),
    #[error(transparent)]
    Leakage(#[from] LeakageError),
}

impl SplitError {
    /// Stable, kebab-case code of the problem.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidFractions(_) => "invalid-split-fractions",
            Self::InvalidAgeBand => "invalid-age-band",
            Self::DuplicateStratum(_) => "duplicate-stratum",
            Self::InvalidValidationFraction => "invalid-validation-fraction",
            Self::NoTestSites => "no-test-sites",
            Self::UnknownTestSite(_) => "unknown-test-site",
            Self::NoTrainingSite => "no-training-site",
            Self::InvalidSplitNames(_) => "invalid-split-name",
            Self::UnknownSubjects(_) => "unknown-subject",
            Self::UnassignedSubjects(_) => "unassigned-subject",
            Self::Leakage(leak) => leak.code(),
        }
    }
}

/// A way data of one subject could reach two splits. [`LeakageError::code`] is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeakageError {
    #[error("subject {subject} is listed twice among the cohort's subjects")]
    DuplicateSubject { subject: String },
    #[error("subject {subject} is in two splits: {} and {}", .splits[0], .splits[1])]
    SubjectInTwoSplits { subject: String, splits: [Split; 2] },
    #[error("subject {subject} is assigned to {split} but is not among the cohort's subjects")]
    UnknownSubject { subject: String, split: Split },
    #[error(
        "study {study} is listed under two subjects, {} ({}) and {} ({})",
        .subjects[0], split_or_none(.splits[0]), .subjects[1], split_or_none(.splits[1])
    )]
    StudyInTwoSubjects { study: String, subjects: [String; 2], splits: [Option<Split>; 2] },
    #[error(
        "subject {subject} is in {split} but has studies at {}, whose subjects belong to {}",
        sites_phrase(*.split, .sites), if *.split == Split::Test { "train and validation" } else { "test" }
    )]
    HeldOutSiteStraddle { subject: String, split: Split, sites: Vec<String> },
}

impl LeakageError {
    /// Stable, kebab-case code of the violation.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DuplicateSubject { .. } => "duplicate-subject",
            Self::SubjectInTwoSplits { .. } => "subject-in-two-splits",
            Self::UnknownSubject { .. } => "unknown-subject",
            Self::StudyInTwoSubjects { .. } => "study-in-two-subjects",
            Self::HeldOutSiteStraddle { .. } => "held-out-site-straddle",
        }
    }
}

fn stratum_name(stratum: Stratum) -> &'static str {
    match stratum {
        Stratum::Sex => "sex",
        Stratum::AgeBand => "age_band",
        Stratum::Site => "site",
        Stratum::Label => "label",
    }
}

fn split_or_none(split: Option<Split>) -> &'static str {
    split.map_or("no split", Split::as_str)
}

fn sites_phrase(split: Split, sites: &[String]) -> String {
    let kind = if split == Split::Test { "training" } else { "held-out" };
    format!("{kind} site(s) {}", sites.join(", "))
}

/// Up to ten names, then how many more: messages stay short for large cohorts.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let text = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN { format!("{text} and {} more", names.len() - SHOWN) } else { text }
}

/// Why a subject is in no split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    /// Cross-site: studies at a held-out site and at a training site.
    HeldOutAndTrainingSites,
    /// Cross-site: no study, so no site to place the subject by.
    NoSite,
}

impl fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HeldOutAndTrainingSites => "studies at held-out and training sites",
            Self::NoSite => "no studies, so no site to place the subject by",
        })
    }
}

/// A subject left out of every split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Exclusion {
    /// Registry pseudonym of the subject.
    pub subject: String,
    /// Why the subject is in no split.
    pub reason: ExclusionReason,
}

/// How the split was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SplitMethod {
    /// Seeded random, optionally stratified.
    Random,
    /// Whole sites held out as test.
    CrossSite,
    /// Placed by the organizer.
    Explicit,
}

/// How many subjects of a split have one value (`null`: the value is missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValueCount {
    /// The value: a sex code (`M`, `F`, `O`), an age band (`40-49`), a site code or a label.
    pub value: Option<String>,
    /// Subjects of the split with this value.
    pub subjects: usize,
}

/// One split's size and composition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SplitSummary {
    pub split: Split,
    /// Subjects in the split.
    pub subjects: usize,
    /// Studies of those subjects.
    pub studies: usize,
    /// Codes of the sites with studies in this split.
    pub sites: Vec<String>,
    /// Subjects per sex.
    pub by_sex: Vec<ValueCount>,
    /// Subjects per age band (of the report's `age_band_years`).
    pub by_age_band: Vec<ValueCount>,
    /// Subjects per site; a subject seen at two sites counts at both.
    pub by_site: Vec<ValueCount>,
    /// Subjects per label.
    pub by_label: Vec<ValueCount>,
}

/// What the split did: sizes, composition, held-out sites and exclusions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SplitReport {
    /// How the split was made.
    pub method: SplitMethod,
    /// The seed of a random or cross-site split.
    pub seed: Option<u64>,
    /// The strata of a random split (a cross-site split is stratified by site).
    pub stratified_by: Vec<Stratum>,
    /// Width of the age bands of the breakdowns.
    pub age_band_years: u32,
    /// Train, validation and test, in that order.
    pub splits: Vec<SplitSummary>,
    /// Cross-site: the sites held out as the test split.
    pub held_out_sites: Vec<String>,
    /// Subjects in no split, with the reason.
    pub excluded: Vec<Exclusion>,
}

impl SplitReport {
    /// The number of subjects in a split.
    pub fn size(&self, split: Split) -> usize {
        self.splits.iter().find(|s| s.split == split).map_or(0, |s| s.subjects)
    }
}

/// Each placed subject's split, with the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitOutcome {
    /// Subject key → split; excluded subjects are absent.
    pub assignment: BTreeMap<String, Split>,
    pub report: SplitReport,
}

/// Splits the cohort's subjects as the spec asks, then checks the result for leakage.
///
/// The answer depends only on the set of subjects and the spec, never on their order.
pub fn assign(subjects: &[SplitSubject], spec: &SplitSpec) -> Result<SplitOutcome, SplitError> {
    spec.validate()?;
    let index = index_subjects(subjects)?;
    let mut held_out = Vec::new();
    let mut excluded = Vec::new();
    let (assignment, seed, stratified_by, width) = match spec {
        SplitSpec::Random { seed, fractions, stratify_by, age_band_years } => {
            let pool: Vec<&SplitSubject> = index.values().copied().collect();
            let assignment = stratified(&pool, normalized(*fractions)?, *seed, stratify_by, *age_band_years);
            (assignment, Some(*seed), stratify_by.clone(), *age_band_years)
        }
        SplitSpec::CrossSite { seed, test_sites, validation_fraction } => {
            let held: BTreeSet<&str> = test_sites.iter().map(String::as_str).collect();
            let all_sites: BTreeSet<&str> = index.values().flat_map(|s| s.sites()).collect();
            if let Some(unknown) = held.iter().find(|site| !all_sites.contains(*site)) {
                return Err(SplitError::UnknownTestSite((*unknown).to_owned()));
            }
            if all_sites.is_subset(&held) {
                return Err(SplitError::NoTrainingSite);
            }
            let mut assignment = BTreeMap::new();
            let mut pool = Vec::new();
            for subject in index.values() {
                let sites = subject.sites();
                let at_held = sites.iter().filter(|s| held.contains(*s)).count();
                if sites.is_empty() {
                    excluded.push(Exclusion { subject: subject.subject.clone(), reason: ExclusionReason::NoSite });
                } else if at_held == sites.len() {
                    assignment.insert(subject.subject.clone(), Split::Test);
                } else if at_held > 0 {
                    excluded.push(Exclusion {
                        subject: subject.subject.clone(),
                        reason: ExclusionReason::HeldOutAndTrainingSites,
                    });
                } else {
                    pool.push(*subject);
                }
            }
            if pool.is_empty() {
                return Err(SplitError::NoTrainingSite);
            }
            let fractions = [1.0 - validation_fraction, *validation_fraction, 0.0];
            assignment.extend(stratified(&pool, fractions, *seed, &[Stratum::Site], DEFAULT_AGE_BAND_YEARS));
            held_out = held.iter().map(|s| (*s).to_owned()).collect();
            (assignment, Some(*seed), Vec::new(), DEFAULT_AGE_BAND_YEARS)
        }
        SplitSpec::Explicit { assignments } => {
            (explicit(&index, assignments)?, None, Vec::new(), DEFAULT_AGE_BAND_YEARS)
        }
    };
    check_leakage(subjects, assignment.iter().map(|(k, v)| (k.as_str(), *v)), &held_out)?;
    let report = SplitReport {
        method: match spec {
            SplitSpec::Random { .. } => SplitMethod::Random,
            SplitSpec::CrossSite { .. } => SplitMethod::CrossSite,
            SplitSpec::Explicit { .. } => SplitMethod::Explicit,
        },
        seed,
        stratified_by,
        age_band_years: width,
        splits: Split::ALL.into_iter().map(|split| summarize(&index, &assignment, split, width)).collect(),
        held_out_sites: held_out,
        excluded,
    };
    Ok(SplitOutcome { assignment, report })
}

/// Checks that no data of one subject can reach two splits.
///
/// `assignment` is every (subject key, split) pair as stored, duplicates included; `held_out_sites`
/// is empty unless the split held sites out. Refuses, naming the subject (or study) and the
/// splits: a subject listed twice or assigned to two splits, an assigned subject that is not
/// among `subjects`, a study under two subjects, and under a holdout a test subject with a study
/// at a training site or a train/validation subject with a study at a held-out site.
pub fn check_leakage<'a>(
    subjects: &[SplitSubject],
    assignment: impl IntoIterator<Item = (&'a str, Split)>,
    held_out_sites: &[String],
) -> Result<(), LeakageError> {
    let mut placed: BTreeMap<&str, Split> = BTreeMap::new();
    for (subject, split) in assignment {
        if let Some(first) = placed.insert(subject, split).filter(|first| *first != split) {
            let mut splits = [first, split];
            splits.sort();
            return Err(LeakageError::SubjectInTwoSplits { subject: subject.to_owned(), splits });
        }
    }
    let index = index_subjects(subjects)?;
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for subject in index.values() {
        for study in &subject.studies {
            if let Some(other) = owners.insert(&study.study, &subject.subject).filter(|o| *o != subject.subject) {
                return Err(LeakageError::StudyInTwoSubjects {
                    study: study.study.clone(),
                    subjects: [other.to_owned(), subject.subject.clone()],
                    splits: [placed.get(other).copied(), placed.get(subject.subject.as_str()).copied()],
                });
            }
        }
    }
    let held: BTreeSet<&str> = held_out_sites.iter().map(String::as_str).collect();
    for (key, split) in &placed {
        let subject =
            index.get(key).ok_or_else(|| LeakageError::UnknownSubject { subject: (*key).to_owned(), split: *split })?;
        if held.is_empty() {
            continue;
        }
        // The sites whose subjects belong to the other side of the holdout.
        let wrong: Vec<String> = subject
            .sites()
            .into_iter()
            .filter(|site| held.contains(site) != (*split == Split::Test))
            .map(str::to_owned)
            .collect();
        if !wrong.is_empty() {
            return Err(LeakageError::HeldOutSiteStraddle {
                subject: subject.subject.clone(),
                split: *split,
                sites: wrong,
            });
        }
    }
    Ok(())
}

/// A non-empty split smaller than the cohort's minimum, refused at publishing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("split {split} has {subjects} subjects, below the cohort's minimum of {minimum}")]
pub struct SplitTooSmall {
    pub split: Split,
    /// Subjects in the split.
    pub subjects: usize,
    /// The cohort's minimum split size.
    pub minimum: usize,
}

impl SplitTooSmall {
    /// Stable code of the refusal.
    pub fn code(&self) -> &'static str {
        "split-below-minimum"
    }
}

/// The non-empty splits smaller than `minimum` (the cohort's suppression threshold); an empty
/// split (e.g. no validation) is not refused.
pub fn splits_below_minimum(report: &SplitReport, minimum: usize) -> Vec<SplitTooSmall> {
    report
        .splits
        .iter()
        .filter(|s| s.subjects > 0 && s.subjects < minimum)
        .map(|s| SplitTooSmall { split: s.split, subjects: s.subjects, minimum })
        .collect()
}

/// The subjects by key, refusing a key listed twice.
fn index_subjects(subjects: &[SplitSubject]) -> Result<BTreeMap<&str, &SplitSubject>, LeakageError> {
    let mut index = BTreeMap::new();
    for subject in subjects {
        if index.insert(subject.subject.as_str(), subject).is_some() {
            return Err(LeakageError::DuplicateSubject { subject: subject.subject.clone() });
        }
    }
    Ok(index)
}

/// The organizer's assignment, refusing unknown and unassigned subjects by name.
fn explicit(
    index: &BTreeMap<&str, &SplitSubject>,
    assignments: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Split>, SplitError> {
    let unknown: Vec<String> = assignments.keys().filter(|k| !index.contains_key(k.as_str())).cloned().collect();
    if !unknown.is_empty() {
        return Err(SplitError::UnknownSubjects(unknown));
    }
    let unassigned: Vec<String> =
        index.keys().filter(|k| !assignments.contains_key(**k)).map(|k| (*k).to_owned()).collect();
    if !unassigned.is_empty() {
        return Err(SplitError::UnassignedSubjects(unassigned));
    }
    // The names were checked by `SplitSpec::validate`.
    Ok(assignments.iter().filter_map(|(k, name)| Some((k.clone(), Split::parse(name)?))).collect())
}

/// The splitmix64 finaliser: a bijection of 64-bit words with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `H(seed, key)`: splitmix64 over the key's bytes in 8-byte little-endian words, keyed by the
/// seed and closed by the length, so keys that differ anywhere rank independently.
fn rank(seed: u64, key: &str) -> u64 {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = mix(seed.wrapping_add(GOLDEN));
    for chunk in key.as_bytes().chunks(8) {
        let mut word = [0_u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix(h.wrapping_add(GOLDEN) ^ u64::from_le_bytes(word));
    }
    mix(h ^ key.len() as u64)
}

/// The whole and fractional parts of each split's quota of `n` subjects.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn quotas(n: usize, fractions: [f64; 3]) -> ([usize; 3], [f64; 3]) {
    // Rounded to 1e-9 so that 0.29 × 100 is 29, not 28.999… (exact below nine million subjects).
    let quota = fractions.map(|f| (n as f64 * f * 1e9).round() / 1e9);
    (quota.map(|q| q.floor() as usize), quota.map(|q| q - q.floor()))
}

/// The largest-remainder rounding of `fractions × n`; ties go to the earlier split.
fn largest_remainder(n: usize, fractions: [f64; 3]) -> ([usize; 3], [bool; 3], [f64; 3]) {
    let (mut counts, remainders) = quotas(n, fractions);
    let mut order = [0, 1, 2];
    order.sort_by(|a, b| remainders[*b].total_cmp(&remainders[*a]).then(a.cmp(b)));
    let mut extra = [false; 3];
    for j in order.into_iter().take(n.saturating_sub(counts.iter().sum())) {
        counts[j] += 1;
        extra[j] = true;
    }
    (counts, extra, remainders)
}

/// The value of one stratum for a subject (`None`: missing, a stratum of its own).
fn stratum_value(subject: &SplitSubject, stratum: Stratum, width: u32) -> Option<String> {
    match stratum {
        Stratum::Sex => subject.sex.map(|s| s.as_str().to_owned()),
        Stratum::AgeBand => subject.age.map(|age| age_band(age, width)),
        Stratum::Site => {
            let sites = subject.sites();
            (!sites.is_empty()).then(|| sites.into_iter().collect::<Vec<_>>().join("+"))
        }
        Stratum::Label => subject.label.clone(),
    }
}

/// The band holding `age`, e.g. `40-49` for width 10.
fn age_band(age: u32, width: u32) -> String {
    let low = age / width * width;
    if width == 1 { low.to_string() } else { format!("{low}-{}", low + width - 1) }
}

/// Splits `pool` by `fractions`, each stratum within one subject of its quota and the whole
/// within one subject of the pool's largest-remainder sizes (see the module documentation).
fn stratified(
    pool: &[&SplitSubject],
    fractions: [f64; 3],
    seed: u64,
    strata: &[Stratum],
    width: u32,
) -> BTreeMap<String, Split> {
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<&SplitSubject>> = BTreeMap::new();
    for subject in pool {
        let key = strata.iter().map(|s| stratum_value(subject, *s, width)).collect();
        groups.entry(key).or_default().push(subject);
    }
    // Strata in a seeded order, so that which stratum gives up a leftover subject is not
    // decided by how its values sort.
    let mut groups: Vec<(u64, Vec<&SplitSubject>)> = groups
        .into_iter()
        .map(|(key, members)| {
            let name: Vec<&str> = key.iter().map(|v| v.as_deref().unwrap_or("\u{0}")).collect();
            (rank(seed, &name.join("\u{1f}")), members)
        })
        .collect();
    groups.sort_by_key(|(r, _)| *r);
    let mut cells: Vec<([usize; 3], [bool; 3], [f64; 3])> =
        groups.iter().map(|(_, members)| largest_remainder(members.len(), fractions)).collect();
    let (target, _, _) = largest_remainder(pool.len(), fractions);
    while let Some(moves) = rebalancing_moves(&cells, target) {
        for (cell, from, to) in moves {
            let (counts, extra, _) = &mut cells[cell];
            counts[from] -= 1;
            extra[from] = false;
            counts[to] += 1;
            extra[to] = true;
        }
    }
    let mut assignment = BTreeMap::new();
    for ((_, mut members), (counts, _, _)) in groups.into_iter().zip(cells) {
        members.sort_by_cached_key(|s| (rank(seed, &s.subject), s.subject.clone()));
        let cuts = [counts[0], counts[0] + counts[1]];
        for (position, subject) in members.into_iter().enumerate() {
            let split = if position < cuts[0] {
                Split::Train
            } else if position < cuts[1] {
                Split::Validation
            } else {
                Split::Test
            };
            assignment.insert(subject.subject.clone(), split);
        }
    }
    assignment
}

/// Moves of a stratum's leftover subject (cell, from split, to split) that bring one split over
/// its target one subject closer to it, each move keeping the stratum's count at the floor or
/// ceiling of its quota; `None` when the totals match or no such move exists.
fn rebalancing_moves(
    cells: &[([usize; 3], [bool; 3], [f64; 3])],
    target: [usize; 3],
) -> Option<Vec<(usize, usize, usize)>> {
    let mut totals = [0; 3];
    for (counts, _, _) in cells {
        for j in 0..3 {
            totals[j] += counts[j];
        }
    }
    // A cell can hand its leftover subject from `from` to `to`.
    let movable = |from: usize, to: usize, skip: Option<usize>| {
        cells
            .iter()
            .enumerate()
            .position(|(c, (_, extra, remainder))| Some(c) != skip && extra[from] && !extra[to] && remainder[to] > 0.0)
    };
    for over in (0..3).filter(|j| totals[*j] > target[*j]) {
        for under in (0..3).filter(|j| totals[*j] < target[*j]) {
            if let Some(cell) = movable(over, under, None) {
                return Some(vec![(cell, over, under)]);
            }
            // Through the third split: one stratum hands over→via, another via→under.
            let via = 3 - over - under;
            if let Some(first) = movable(over, via, None)
                && let Some(second) = movable(via, under, Some(first))
            {
                return Some(vec![(first, over, via), (second, via, under)]);
            }
        }
    }
    None
}

/// The size and composition of one split.
fn summarize(
    index: &BTreeMap<&str, &SplitSubject>,
    assignment: &BTreeMap<String, Split>,
    split: Split,
    width: u32,
) -> SplitSummary {
    let members: Vec<&SplitSubject> =
        assignment.iter().filter(|(_, s)| **s == split).filter_map(|(k, _)| index.get(k.as_str()).copied()).collect();
    let count = |values: &mut dyn Iterator<Item = Option<String>>| {
        let mut counts: BTreeMap<Option<String>, usize> = BTreeMap::new();
        for value in values {
            *counts.entry(value).or_default() += 1;
        }
        counts.into_iter().map(|(value, subjects)| ValueCount { value, subjects }).collect()
    };
    let mut by_site = members.iter().flat_map(|s| {
        let sites: Vec<Option<String>> = s.sites().into_iter().map(|site| Some(site.to_owned())).collect();
        if sites.is_empty() { vec![None] } else { sites }
    });
    SplitSummary {
        split,
        subjects: members.len(),
        studies: members.iter().map(|s| s.studies.len()).sum(),
        sites: members.iter().flat_map(|s| s.sites()).collect::<BTreeSet<_>>().into_iter().map(str::to_owned).collect(),
        by_sex: count(&mut members.iter().map(|s| stratum_value(s, Stratum::Sex, width))),
        by_age_band: count(&mut members.iter().map(|s| stratum_value(s, Stratum::AgeBand, width))),
        by_site: count(&mut by_site),
        by_label: count(&mut members.iter().map(|s| s.label.clone())),
    }
}

#[cfg(test)]
#[allow(clippy::cast_precision_loss)] // shares of small synthetic cohorts
mod tests {
    use super::*;
    use serde_json::json;

    /// A stream of pseudo-random words for synthetic cohorts (splitmix64).
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(self.0)
        }

        /// An index below `n` (bias is irrelevant here).
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn subject(key: &str, sites: &[&str]) -> SplitSubject {
        SplitSubject {
            subject: key.to_owned(),
            studies: sites
                .iter()
                .enumerate()
                .map(|(i, site)| SplitStudy { study: format!("{key}/study-{i}"), site: (*site).to_owned() })
                .collect(),
            sex: None,
            age: None,
            label: None,
        }
    }

    /// `n` subjects at three sites of unequal size (5% seen at two), both sexes (2% unknown),
    /// ages 18 to 90 (3% unknown), and a label for most.
    fn population(n: usize, seed: u64) -> Vec<SplitSubject> {
        let mut rng = SplitMix64(seed);
        (0..n)
            .map(|i| {
                let site = match rng.below(10) {
                    0..5 => "A",
                    5..8 => "B",
                    _ => "C",
                };
                let mut sites = vec![site; 1 + usize::try_from(rng.below(3)).unwrap()];
                if rng.below(20) == 0 {
                    sites.push(if site == "A" { "C" } else { "A" });
                }
                let mut s = subject(&format!("pseudo-{:016x}-{i}", rng.next()), &sites);
                s.sex = match rng.below(50) {
                    0 => None,
                    k if k % 2 == 0 => Some(Sex::Female),
                    _ => Some(Sex::Male),
                };
                s.age = (rng.below(33) != 0).then(|| 18 + u32::try_from(rng.below(73)).unwrap());
                s.label = match rng.below(10) {
                    0 => None,
                    1..4 => Some("disease".to_owned()),
                    _ => Some("healthy".to_owned()),
                };
                s
            })
            .collect()
    }

    fn random(seed: u64, [train, validation, test]: [f64; 3], stratify_by: &[Stratum]) -> SplitSpec {
        SplitSpec::Random {
            seed,
            fractions: SplitFractions { train, validation, test },
            stratify_by: stratify_by.to_vec(),
            age_band_years: DEFAULT_AGE_BAND_YEARS,
        }
    }

    fn cross_site(test_sites: &[&str], validation_fraction: f64) -> SplitSpec {
        SplitSpec::CrossSite {
            seed: 7,
            test_sites: test_sites.iter().map(|s| (*s).to_owned()).collect(),
            validation_fraction,
        }
    }

    fn explicit(pairs: &[(&str, &str)]) -> SplitSpec {
        SplitSpec::Explicit { assignments: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect() }
    }

    fn sizes(outcome: &SplitOutcome) -> [usize; 3] {
        Split::ALL.map(|split| outcome.report.size(split))
    }

    #[track_caller]
    fn refusal(subjects: &[SplitSubject], spec: &SplitSpec) -> SplitError {
        assign(subjects, spec).expect_err("the split should be refused")
    }

    #[test]
    fn the_same_seed_gives_the_same_split_whatever_the_order_of_subjects() {
        let cohort = population(500, 1);
        let spec = random(42, [0.7, 0.15, 0.15], &[Stratum::Sex, Stratum::Site]);
        let first = assign(&cohort, &spec).unwrap();

        let mut reversed = cohort.clone();
        reversed.reverse();
        let mut rotated = cohort.clone();
        rotated.rotate_left(137);

        assert_eq!(assign(&cohort, &spec).unwrap(), first);
        assert_eq!(assign(&reversed, &spec).unwrap(), first);
        assert_eq!(assign(&rotated, &spec).unwrap(), first);
    }

    #[test]
    fn a_different_seed_gives_a_different_split_of_the_same_sizes() {
        let cohort = population(500, 1);
        let one = assign(&cohort, &random(1, [0.7, 0.15, 0.15], &[])).unwrap();
        let two = assign(&cohort, &random(2, [0.7, 0.15, 0.15], &[])).unwrap();

        let moved = one.assignment.iter().filter(|(k, split)| two.assignment[*k] != **split).count();
        assert!(moved > 100, "only {moved} of 500 subjects changed split with the seed");
        assert_eq!(sizes(&one), sizes(&two));
    }

    #[test]
    fn split_sizes_are_the_largest_remainder_rounding_of_the_fractions() {
        let third = 1.0 / 3.0;
        for (n, fractions, expected) in [
            (10, [0.7, 0.15, 0.15], [7, 2, 1]), // 7 | 1.5 | 1.5: the tie goes to the earlier split
            (3, [third, third, third], [1, 1, 1]),
            (7, [0.5, 0.25, 0.25], [3, 2, 2]), // 3.5 | 1.75 | 1.75
            (100, [0.29, 0.0, 0.71], [29, 0, 71]),
            (1, [0.8, 0.1, 0.1], [1, 0, 0]),
        ] {
            let cohort: Vec<_> = (0..n).map(|i| subject(&format!("s{i}"), &["A"])).collect();
            let outcome = assign(&cohort, &random(9, fractions, &[])).unwrap();
            assert_eq!(sizes(&outcome), expected, "{n} subjects split {fractions:?}");
        }
    }

    /// Every stratum's count per split is within one subject of its quota.
    #[track_caller]
    fn assert_strata_within_one_subject(cohort: &[SplitSubject], spec: &SplitSpec) {
        let SplitSpec::Random { fractions, stratify_by, age_band_years, .. } = spec else { unreachable!() };
        let outcome = assign(cohort, spec).unwrap();
        let mut strata: BTreeMap<Vec<Option<String>>, [usize; 3]> = BTreeMap::new();
        for s in cohort {
            let key = stratify_by.iter().map(|st| stratum_value(s, *st, *age_band_years)).collect();
            strata.entry(key).or_default()[outcome.assignment[&s.subject] as usize] += 1;
        }
        for (key, counts) in &strata {
            let n: usize = counts.iter().sum();
            for (j, share) in fractions.as_array().into_iter().enumerate() {
                let off = (counts[j] as f64 - n as f64 * share).abs();
                assert!(off < 1.0, "stratum {key:?} of {n} has {counts:?}");
            }
        }
    }

    #[test]
    fn stratification_keeps_every_stratum_within_one_subject_of_its_share() {
        let cohort = population(1000, 3);
        let spec = random(11, [0.7, 0.15, 0.15], &[Stratum::Sex, Stratum::AgeBand, Stratum::Site]);
        assert_strata_within_one_subject(&cohort, &spec);

        // The sites' proportions in each split follow the cohort's.
        let outcome = assign(&cohort, &spec).unwrap();
        assert_eq!(sizes(&outcome), [700, 150, 150]);
        let cohort_share = |site: &str| cohort.iter().filter(|s| s.sites().contains(site)).count() as f64 / 1000.0;
        for summary in &outcome.report.splits {
            for count in &summary.by_site {
                let site = count.value.as_deref().unwrap();
                let share = count.subjects as f64 / summary.subjects as f64;
                assert!((share - cohort_share(site)).abs() < 0.03, "{} holds {share} of site {site}", summary.split);
            }
        }
    }

    #[test]
    fn many_small_strata_keep_their_shares_and_the_exact_split_sizes() {
        let cohort = population(1000, 4);
        let mut spec = random(5, [0.6, 0.2, 0.2], &[Stratum::Sex, Stratum::AgeBand, Stratum::Site, Stratum::Label]);
        if let SplitSpec::Random { age_band_years, .. } = &mut spec {
            *age_band_years = 5;
        }
        assert_strata_within_one_subject(&cohort, &spec);
        assert_eq!(sizes(&assign(&cohort, &spec).unwrap()), [600, 200, 200]);
    }

    #[test]
    fn adding_subjects_moves_few_of_those_already_placed() {
        let cohort = population(1000, 5);
        let mut grown = cohort.clone();
        grown.extend(population(20, 6));
        let spec = random(8, [0.7, 0.15, 0.15], &[Stratum::Sex, Stratum::Site]);

        let before = assign(&cohort, &spec).unwrap().assignment;
        let after = assign(&grown, &spec).unwrap().assignment;

        let moved = before.iter().filter(|(k, split)| after[*k] != **split).count();
        assert!(moved <= 20, "{moved} of 1,000 subjects changed split when 20 were added");
    }

    #[test]
    fn cross_site_holdout_puts_whole_sites_in_test_and_records_them() {
        let cohort = population(1000, 7);
        let outcome = assign(&cohort, &cross_site(&["C"], 0.2)).unwrap();

        for s in &cohort {
            let sites = s.sites();
            let split = outcome.assignment.get(&s.subject).copied();
            if sites == BTreeSet::from(["C"]) {
                assert_eq!(split, Some(Split::Test), "a subject seen only at C");
            } else if sites.contains("C") {
                assert_eq!(split, None, "a subject seen at C and {sites:?}");
            } else {
                assert!(
                    matches!(split, Some(Split::Train | Split::Validation)),
                    "a subject at {sites:?} is in {split:?}"
                );
            }
        }
        let report = &outcome.report;
        assert_eq!(report.held_out_sites, ["C"]);
        assert_eq!(report.splits[2].sites, ["C"]);
        assert_eq!(report.splits[0].sites, ["A", "B"]);
        assert_eq!(report.splits[1].sites, ["A", "B"]);
        let pool = report.size(Split::Train) + report.size(Split::Validation);
        let off = (report.size(Split::Validation) as f64 - pool as f64 * 0.2).abs();
        assert!(off <= 0.5, "validation holds {} of {pool}", report.size(Split::Validation));
        assert!(report.excluded.iter().all(|e| e.reason == ExclusionReason::HeldOutAndTrainingSites));
        assert!(!report.excluded.is_empty());
    }

    #[test]
    fn a_subject_with_studies_at_a_held_out_and_a_training_site_is_excluded_with_the_reason() {
        let cohort = [
            subject("at-a", &["A"]),
            subject("at-b", &["B"]),
            subject("twice-at-c", &["C", "C"]),
            subject("at-a-and-c", &["A", "C"]),
            subject("no-studies", &[]),
        ];
        let outcome = assign(&cohort, &cross_site(&["C"], 0.0)).unwrap();

        assert_eq!(
            outcome.assignment,
            BTreeMap::from([
                ("at-a".to_owned(), Split::Train),
                ("at-b".to_owned(), Split::Train),
                ("twice-at-c".to_owned(), Split::Test),
            ])
        );
        assert_eq!(
            outcome.report.excluded,
            [
                Exclusion { subject: "at-a-and-c".into(), reason: ExclusionReason::HeldOutAndTrainingSites },
                Exclusion { subject: "no-studies".into(), reason: ExclusionReason::NoSite },
            ]
        );
        assert_eq!(ExclusionReason::HeldOutAndTrainingSites.to_string(), "studies at held-out and training sites");
    }

    #[test]
    fn the_leakage_check_names_a_subject_placed_in_two_splits() {
        let cohort = [subject("a", &["A"]), subject("b", &["A"])];
        let leak =
            check_leakage(&cohort, [("a", Split::Test), ("b", Split::Train), ("a", Split::Train)], &[]).unwrap_err();

        assert_eq!(leak, LeakageError::SubjectInTwoSplits { subject: "a".into(), splits: [Split::Train, Split::Test] });
        assert_eq!(leak.code(), "subject-in-two-splits");
        assert_eq!(leak.to_string(), "subject a is in two splits: train and test");
    }

    #[test]
    fn the_leakage_check_names_a_study_listed_under_two_subjects() {
        let mut b = subject("b", &["A"]);
        b.studies[0].study = "a/study-0".into();
        let cohort = [subject("a", &["A"]), b];

        let leak = check_leakage(&cohort, [("a", Split::Train), ("b", Split::Test)], &[]).unwrap_err();
        assert_eq!(leak.code(), "study-in-two-subjects");
        assert_eq!(leak.to_string(), "study a/study-0 is listed under two subjects, a (train) and b (test)");

        // The split refuses such a cohort before placing anyone.
        assert_eq!(refusal(&cohort, &random(1, [0.5, 0.0, 0.5], &[])).code(), "study-in-two-subjects");
    }

    #[test]
    fn the_leakage_check_names_a_subject_that_straddles_the_holdout() {
        let cohort = [subject("a", &["A"]), subject("ac", &["A", "C"])];
        let held = ["C".to_owned()];

        let leak = check_leakage(&cohort, [("a", Split::Train), ("ac", Split::Validation)], &held).unwrap_err();
        assert_eq!(leak.code(), "held-out-site-straddle");
        assert_eq!(
            leak.to_string(),
            "subject ac is in validation but has studies at held-out site(s) C, whose subjects belong to test"
        );

        let leak = check_leakage(&cohort, [("a", Split::Train), ("ac", Split::Test)], &held).unwrap_err();
        assert_eq!(
            leak.to_string(),
            "subject ac is in test but has studies at training site(s) A, whose subjects belong to train and validation"
        );

        assert_eq!(check_leakage(&cohort, [("a", Split::Train)], &held), Ok(()));
    }

    #[test]
    fn the_leakage_check_refuses_an_assigned_subject_it_does_not_know() {
        let leak = check_leakage(&[subject("a", &["A"])], [("ghost", Split::Test)], &[]).unwrap_err();
        assert_eq!(leak, LeakageError::UnknownSubject { subject: "ghost".into(), split: Split::Test });
    }

    #[test]
    fn explicit_assignments_are_followed() {
        let cohort = [subject("a", &["A"]), subject("b", &["B"]), subject("c", &["C"])];
        let outcome = assign(&cohort, &explicit(&[("a", "train"), ("b", "test"), ("c", "validation")])).unwrap();

        assert_eq!(outcome.assignment["b"], Split::Test);
        assert_eq!(outcome.report.method, SplitMethod::Explicit);
        assert_eq!(sizes(&outcome), [1, 1, 1]);
    }

    #[test]
    fn explicit_assignments_name_invalid_splits_unknown_and_unassigned_subjects() {
        let cohort = [subject("a", &["A"]), subject("b", &["B"]), subject("c", &["C"])];

        let error = refusal(&cohort, &explicit(&[("a", "training"), ("b", "test"), ("c", "Test")]));
        assert_eq!(error.code(), "invalid-split-name");
        assert_eq!(
            error.to_string(),
            "invalid split names (use train, validation or test): a → 'training', c → 'Test'"
        );

        let error = refusal(&cohort, &explicit(&[("a", "train"), ("b", "test"), ("c", "test"), ("zed", "test")]));
        assert_eq!(error, SplitError::UnknownSubjects(vec!["zed".into()]));
        assert_eq!(error.code(), "unknown-subject");

        let error = refusal(&cohort, &explicit(&[("a", "train")]));
        assert_eq!(error.to_string(), "cohort subjects without an assignment: b, c");
        assert_eq!(error.code(), "unassigned-subject");
    }

    #[test]
    fn long_lists_of_names_are_cut_short_in_messages() {
        let cohort: Vec<_> = (0..25).map(|i| subject(&format!("s{i:02}"), &["A"])).collect();
        let error = refusal(&cohort, &explicit(&[("s00", "train")]));
        assert!(error.to_string().ends_with("s10 and 14 more"), "{error}");
    }

    #[test]
    fn non_empty_splits_below_the_minimum_are_refused_with_their_size() {
        let cohort: Vec<_> = (0..11).map(|i| subject(&format!("s{i:02}"), &["A"])).collect();
        let pairs: Vec<(String, &str)> =
            cohort.iter().enumerate().map(|(i, s)| (s.subject.clone(), if i < 8 { "train" } else { "test" })).collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let outcome = assign(&cohort, &explicit(&pairs)).unwrap();

        let refused = splits_below_minimum(&outcome.report, 5);
        assert_eq!(refused, [SplitTooSmall { split: Split::Test, subjects: 3, minimum: 5 }]);
        assert_eq!(refused[0].to_string(), "split test has 3 subjects, below the cohort's minimum of 5");
        assert_eq!(refused[0].code(), "split-below-minimum");
        assert!(splits_below_minimum(&outcome.report, 3).is_empty());
    }

    #[test]
    fn invalid_specs_are_refused_with_a_code_naming_the_problem() {
        for (spec, code, message) in [
            (
                random(1, [0.7, 0.2, 0.2], &[]),
                "invalid-split-fractions",
                "invalid split fractions: the fractions sum to 1.0999999999999999, not 1",
            ),
            (
                random(1, [1.2, -0.1, -0.1], &[]),
                "invalid-split-fractions",
                "invalid split fractions: each fraction must be a number of at least 0",
            ),
            (
                random(1, [1.0, 0.0, 0.0], &[]),
                "invalid-split-fractions",
                "invalid split fractions: train and test must each receive a fraction above 0",
            ),
            (
                random(1, [f64::NAN, 0.5, 0.5], &[]),
                "invalid-split-fractions",
                "invalid split fractions: each fraction must be a number of at least 0",
            ),
            (
                random(1, [0.5, 0.0, 0.5], &[Stratum::Sex, Stratum::Sex]),
                "duplicate-stratum",
                "stratum 'sex' is named twice",
            ),
            (cross_site(&[], 0.2), "no-test-sites", "a cross-site split needs at least one held-out test site"),
            (
                cross_site(&["C"], 1.0),
                "invalid-validation-fraction",
                "the validation fraction must be at least 0 and below 1",
            ),
        ] {
            let error = spec.validate().unwrap_err();
            assert_eq!((error.code(), error.to_string().as_str()), (code, message));
        }
        let SplitSpec::Random { seed, fractions, stratify_by, .. } = random(1, [0.5, 0.0, 0.5], &[]) else {
            unreachable!()
        };
        let zero_width = SplitSpec::Random { seed, fractions, stratify_by, age_band_years: 0 };
        assert_eq!(zero_width.validate(), Err(SplitError::InvalidAgeBand));
    }

    #[test]
    fn a_cohort_that_cannot_be_split_is_refused_by_name() {
        let cohort = [subject("a", &["A"]), subject("b", &["B"])];
        let error = refusal(&cohort, &cross_site(&["Z"], 0.1));
        assert_eq!(
            (error.code(), error.to_string()),
            ("unknown-test-site", "held-out test site 'Z' holds no study of this cohort".into())
        );
        assert_eq!(refusal(&cohort, &cross_site(&["A", "B"], 0.1)).code(), "no-training-site");
        // Every subject of the training site was also seen at the held-out one.
        let straddling = [subject("a", &["A"]), subject("ab", &["A", "B"])];
        assert_eq!(refusal(&straddling, &cross_site(&["A"], 0.1)).code(), "no-training-site");

        let twice = [subject("a", &["A"]), subject("a", &["B"])];
        let error = refusal(&twice, &random(1, [0.5, 0.0, 0.5], &[]));
        assert_eq!(
            (error.code(), error.to_string()),
            ("duplicate-subject", "subject a is listed twice among the cohort's subjects".into())
        );
    }

    #[test]
    fn a_spec_reads_from_json_with_its_defaults() {
        let spec: SplitSpec = serde_json::from_value(json!({
            "method": "random", "seed": 7,
            "fractions": { "train": 0.8, "validation": 0.0, "test": 0.2 },
            "stratify_by": ["sex", "age_band", "site", "label"],
        }))
        .unwrap();
        assert_eq!(
            spec,
            SplitSpec::Random {
                seed: 7,
                fractions: SplitFractions { train: 0.8, validation: 0.0, test: 0.2 },
                stratify_by: vec![Stratum::Sex, Stratum::AgeBand, Stratum::Site, Stratum::Label],
                age_band_years: 10,
            }
        );

        let spec: SplitSpec = serde_json::from_value(
            json!({ "method": "cross_site", "seed": 1, "test_sites": ["C"], "validation_fraction": 0.1 }),
        )
        .unwrap();
        assert_eq!(spec, SplitSpec::CrossSite { seed: 1, test_sites: vec!["C".into()], validation_fraction: 0.1 });

        let unknown =
            serde_json::from_value::<SplitSpec>(json!({ "method": "explicit", "assignments": {}, "seed": 1 }));
        assert!(unknown.unwrap_err().to_string().contains("unknown field `seed`"));
    }

    #[test]
    fn the_report_breaks_each_split_down_by_sex_age_band_site_and_label() {
        let mut a = subject("a", &["A", "B"]);
        a.sex = Some(Sex::Female);
        a.age = Some(47);
        a.label = Some("disease".into());
        let mut b = subject("b", &["A"]);
        b.age = Some(40);
        let outcome = assign(&[a, b], &explicit(&[("a", "train"), ("b", "train")])).unwrap();

        let count = |value: Option<&str>, subjects| ValueCount { value: value.map(str::to_owned), subjects };
        let train = &outcome.report.splits[0];
        assert_eq!((train.split, train.subjects, train.studies), (Split::Train, 2, 3));
        assert_eq!(train.sites, ["A", "B"]);
        assert_eq!(train.by_sex, [count(None, 1), count(Some("F"), 1)]);
        assert_eq!(train.by_age_band, [count(Some("40-49"), 2)]);
        assert_eq!(train.by_site, [count(Some("A"), 2), count(Some("B"), 1)]);
        assert_eq!(train.by_label, [count(None, 1), count(Some("disease"), 1)]);
        assert_eq!(outcome.report.splits[1].subjects, 0);
    }

    #[test]
    fn ranks_are_fixed_for_a_seed_and_key() {
        // Pinned: a change of the hash would silently re-split every published cohort.
        assert_eq!(rank(42, "pseudo-0001"), 0xad76_73b1_72dc_fb98);
        assert_ne!(rank(1, "pseudo-1"), rank(2, "pseudo-1"));
        assert_ne!(rank(1, "pseudo-1"), rank(1, "pseudo-1\0"));
        assert_eq!(age_band(47, 10), "40-49");
        assert_eq!(age_band(47, 1), "47");
    }
}
