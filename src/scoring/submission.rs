//! CSV submissions of labels or probabilities, checked and joined with the
//! hidden labels.
//!
//! The header is required. One id column, `subject_id` or `study_id`, then
//! either `label` (a class), or `probability` (of the positive class; two
//! classes only), or one `probability_<class>` column per class. Values are
//! trimmed; delimiters are commas. Every problem is reported, each naming its
//! line and id (ids are open pseudonyms of the test split, safe to echo):
//! unknown, missing and duplicate ids, non-numeric and out-of-range
//! probabilities, unknown classes. Hidden labels never appear in a message.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The hidden label of one unit of the test split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthLabel {
    /// The true class.
    pub label: String,
    /// The unit's site, for per-site scores.
    pub site: String,
}

/// One problem of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubmissionProblem {
    /// Stable code: `bad-header`, `unknown-id`, `missing-id`, `duplicate-id`,
    /// `non-numeric`, `out-of-range`, `unknown-label`, `empty-value`, `malformed-row`.
    pub code: String,
    /// The CSV line (the header is line 1), when the problem is on a line.
    pub line: Option<u64>,
    /// The open id concerned.
    pub id: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// A submission that cannot be scored; its problems, the first
/// [`MAX_PROBLEMS`] of them listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[error("the submission has {count} problems; the first: {}", .problems.first().map_or("", |p| p.message.as_str()))]
pub struct SubmissionError {
    /// Always `submission-invalid`.
    pub code: String,
    /// How many problems there are in all.
    pub count: usize,
    /// The problems, in file order, then missing ids.
    pub problems: Vec<SubmissionProblem>,
}

/// At most this many problems are listed.
pub const MAX_PROBLEMS: usize = 100;

/// What a submission predicts per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PredictionKind {
    /// A class per unit (`label`).
    Label,
    /// The probability of the positive class (`probability`).
    Probability,
    /// A probability per class (`probability_<class>`).
    ClassProbabilities,
}

/// Truth and prediction per unit, joined, classes as indices into `classes`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelPairs {
    /// Classes in sorted order.
    pub classes: Vec<String>,
    /// The positive class when there are at most two.
    pub positive: Option<u32>,
    /// What the submission gave.
    pub kind: PredictionKind,
    /// Unit ids, sorted.
    pub ids: Vec<String>,
    /// Site of each unit.
    pub sites: Vec<String>,
    /// True class of each unit.
    pub truth: Vec<u32>,
    /// Predicted class of each unit.
    pub predicted: Vec<u32>,
    /// Scores for AUC: the positive-class probability per unit (two classes),
    /// or unit × class probabilities (more); `None` for label submissions.
    pub scores: Option<Vec<f64>>,
}

/// Problems gathered while reading.
struct Problems(Vec<SubmissionProblem>, usize);

impl Problems {
    fn add(&mut self, code: &str, line: Option<u64>, id: Option<&str>, message: String) {
        self.1 += 1;
        if self.0.len() < MAX_PROBLEMS {
            self.0.push(SubmissionProblem { code: code.into(), line, id: id.map(str::to_owned), message });
        }
    }
    fn into_result<T>(self, value: T) -> Result<T, SubmissionError> {
        if self.1 == 0 {
            Ok(value)
        } else {
            Err(SubmissionError { code: "submission-invalid".into(), count: self.1, problems: self.0 })
        }
    }
}

fn header_error(message: impl Into<String>) -> SubmissionError {
    let mut problems = Problems(Vec::new(), 0);
    problems.add("bad-header", Some(1), None, message.into());
    problems.into_result(()).expect_err("a problem was added")
}

/// Where the prediction columns are.
enum Columns {
    Label(usize),
    Probability(usize),
    PerClass(Vec<usize>),
}

fn columns(header: &csv::StringRecord, classes: &[String], binary: bool) -> Result<(usize, Columns), SubmissionError> {
    let names: Vec<&str> = header.iter().collect();
    let find = |name: &str| names.iter().position(|n| *n == name);
    let id = match (find("subject_id"), find("study_id")) {
        (Some(i), None) | (None, Some(i)) => i,
        (Some(_), Some(_)) => return Err(header_error("the header has both subject_id and study_id; give one")),
        (None, None) => return Err(header_error("the header needs a subject_id or study_id column")),
    };
    let per_class: Vec<Option<usize>> = classes.iter().map(|c| find(&format!("probability_{c}"))).collect();
    let columns = match (find("label"), find("probability"), per_class.iter().any(Option::is_some)) {
        (Some(i), None, false) => Columns::Label(i),
        (None, Some(i), false) if binary => Columns::Probability(i),
        (None, Some(_), false) => {
            return Err(header_error(
                "a single probability column needs two classes; give probability_<class> columns",
            ));
        }
        (None, None, true) => {
            if let Some(k) = per_class.iter().position(Option::is_none) {
                return Err(header_error(format!("the column probability_{} is missing", classes[k])));
            }
            Columns::PerClass(per_class.into_iter().flatten().collect())
        }
        (None, None, false) => {
            return Err(header_error("the header needs a label, probability or probability_<class> column"));
        }
        _ => return Err(header_error("give one kind of prediction: label, probability, or probability_<class>")),
    };
    let used = 1 + match &columns {
        Columns::Label(_) | Columns::Probability(_) => 1,
        Columns::PerClass(c) => c.len(),
    };
    if names.len() > used {
        let known = |n: &&str| {
            ["subject_id", "study_id", "label", "probability"].contains(n)
                || n.strip_prefix("probability_").is_some_and(|c| classes.iter().any(|k| k == c))
        };
        let extra = names.iter().find(|n| !known(n)).copied().unwrap_or("");
        return Err(header_error(format!("the header has an unexpected column \"{extra}\"")));
    }
    Ok((id, columns))
}

/// The classes of the truth (sorted) and the positive class when there are at most two.
fn classes(truth: &BTreeMap<String, TruthLabel>, positive: Option<&str>) -> (Vec<String>, Option<u32>) {
    let mut classes: Vec<String> = truth.values().map(|t| t.label.clone()).collect();
    classes.extend(positive.map(str::to_owned));
    classes.sort();
    classes.dedup();
    if classes.len() > 2 {
        return (classes, None);
    }
    let chosen = positive.or(classes.iter().any(|c| c == "1").then_some("1"));
    let index = chosen.and_then(|p| classes.iter().position(|c| c == p)).unwrap_or(classes.len().saturating_sub(1));
    (classes, Some(u32::try_from(index).expect("two classes")))
}

/// Reads the prediction of one row.
struct RowParser<'a> {
    classes: &'a [String],
    class_index: &'a HashMap<&'a str, u32>,
    positive: Option<u32>,
    threshold: f64,
    columns: &'a Columns,
}

type Prediction = (u32, Option<Vec<f64>>);

impl RowParser<'_> {
    /// The other class of two (a one-class truth has only its own).
    fn other(&self, positive: u32) -> u32 {
        (positive + 1) % u32::try_from(self.classes.len()).expect("few classes")
    }

    fn probability(text: &str, name: &str, at: (Option<u64>, &str), problems: &mut Problems) -> Option<f64> {
        let (line, id) = at;
        let n = line.unwrap_or(0);
        match text.parse::<f64>() {
            Ok(p) if (0.0..=1.0).contains(&p) => Some(p),
            Ok(p) if p.is_finite() => {
                let message = format!("{name} {p} for id {id} on line {n} is not between 0 and 1");
                problems.add("out-of-range", line, Some(id), message);
                None
            }
            _ if text.is_empty() => {
                problems.add("empty-value", line, Some(id), format!("{name} for id {id} on line {n} is empty"));
                None
            }
            _ => {
                problems.add("non-numeric", line, Some(id), format!("{name} for id {id} on line {n} is not a number"));
                None
            }
        }
    }

    fn prediction(
        &self,
        record: &csv::StringRecord,
        line: Option<u64>,
        id: &str,
        problems: &mut Problems,
    ) -> Option<Prediction> {
        let n = line.unwrap_or(0);
        match self.columns {
            Columns::Label(column) => match self.class_index.get(&record[*column]) {
                Some(class) => Some((*class, None)),
                None if record[*column].is_empty() => {
                    problems.add("empty-value", line, Some(id), format!("label for id {id} on line {n} is empty"));
                    None
                }
                None => {
                    let message = format!("label for id {id} on line {n} is not one of the task's classes");
                    problems.add("unknown-label", line, Some(id), message);
                    None
                }
            },
            Columns::Probability(column) => Self::probability(&record[*column], "probability", (line, id), problems)
                .map(|p| {
                    let pos = self.positive.expect("two classes");
                    (if p >= self.threshold { pos } else { self.other(pos) }, Some(vec![p]))
                }),
            Columns::PerClass(columns) => {
                let values: Vec<Option<f64>> = columns
                    .iter()
                    .zip(self.classes)
                    .map(|(c, k)| Self::probability(&record[*c], &format!("probability_{k}"), (line, id), problems))
                    .collect();
                let p = values.into_iter().collect::<Option<Vec<f64>>>()?;
                let predicted = match self.positive {
                    Some(pos) if p[pos as usize] >= self.threshold => pos,
                    Some(pos) => self.other(pos),
                    // The first of the largest, in class order.
                    None => u32::try_from((0..p.len()).fold(0, |best, k| if p[k] > p[best] { k } else { best }))
                        .expect("few classes"),
                };
                let scores = match self.positive {
                    Some(pos) => vec![p[pos as usize]],
                    None => p,
                };
                Some((predicted, Some(scores)))
            }
        }
    }
}

/// Parses `csv` and joins it with `truth`. `positive` names the positive
/// class of a two-class task (default: `1` when a class is called so, else
/// the last in sorted order); a probability at or above `threshold` predicts it.
pub fn join_labels(
    truth: &BTreeMap<String, TruthLabel>,
    csv: &[u8],
    positive: Option<&str>,
    threshold: f64,
) -> Result<LabelPairs, SubmissionError> {
    let (classes, positive) = classes(truth, positive);
    // Spreadsheets often start a UTF-8 CSV with a byte-order mark.
    let csv = csv.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(csv);
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(csv);
    let header = reader.headers().map_err(|_| header_error("the first line is not a CSV header"))?.clone();
    let (id_column, columns) = columns(&header, &classes, classes.len() == 2)?;
    let class_index: HashMap<&str, u32> =
        classes.iter().enumerate().map(|(i, c)| (c.as_str(), u32::try_from(i).expect("few classes"))).collect();
    let parser = RowParser { classes: &classes, class_index: &class_index, positive, threshold, columns: &columns };

    let mut problems = Problems(Vec::new(), 0);
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut predictions: BTreeMap<String, (u32, Option<Vec<f64>>)> = BTreeMap::new();
    for record in reader.records() {
        let Ok(record) = record else {
            problems.add("malformed-row", None, None, "a line is not valid CSV (quotes or encoding)".into());
            continue;
        };
        let line = record.position().map(csv::Position::line);
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != header.len() {
            let message =
                format!("line {} has {} fields, the header {}", line.unwrap_or(0), record.len(), header.len());
            problems.add("malformed-row", line, None, message);
            continue;
        }
        let id = &record[id_column];
        let at = line.unwrap_or(0);
        if let Some(first) = seen.get(id) {
            problems.add(
                "duplicate-id",
                line,
                Some(id),
                format!("id {id} on line {at} was already given on line {first}"),
            );
            continue;
        }
        seen.insert(id.to_owned(), at);
        if !truth.contains_key(id) {
            problems.add("unknown-id", line, Some(id), format!("id {id} on line {at} is not in the test split"));
            continue;
        }
        let prediction = parser.prediction(&record, line, id, &mut problems);
        if let Some(prediction) = prediction {
            predictions.insert(id.to_owned(), prediction);
        }
    }
    for id in truth.keys().filter(|id| !seen.contains_key(id.as_str())) {
        problems.add("missing-id", None, Some(id), format!("id {id} of the test split has no prediction"));
    }
    let kind = match columns {
        Columns::Label(_) => PredictionKind::Label,
        Columns::Probability(_) => PredictionKind::Probability,
        Columns::PerClass(_) => PredictionKind::ClassProbabilities,
    };
    let mut pairs = LabelPairs {
        classes: classes.clone(),
        positive,
        kind,
        ids: Vec::with_capacity(truth.len()),
        sites: Vec::with_capacity(truth.len()),
        truth: Vec::with_capacity(truth.len()),
        predicted: Vec::with_capacity(truth.len()),
        scores: (kind != PredictionKind::Label).then(Vec::new),
    };
    for (id, (predicted, scores)) in predictions {
        let t = &truth[&id];
        pairs.truth.push(class_index[t.label.as_str()]);
        pairs.sites.push(t.site.clone());
        pairs.ids.push(id);
        pairs.predicted.push(predicted);
        if let (Some(all), Some(scores)) = (pairs.scores.as_mut(), scores) {
            all.extend(scores);
        }
    }
    problems.into_result(pairs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn truth(rows: &[(&str, &str, &str)]) -> BTreeMap<String, TruthLabel> {
        rows.iter()
            .map(|(id, label, site)| ((*id).to_owned(), TruthLabel { label: (*label).into(), site: (*site).into() }))
            .collect()
    }

    fn codes(error: &SubmissionError) -> Vec<(&str, Option<u64>, Option<&str>)> {
        error.problems.iter().map(|p| (p.code.as_str(), p.line, p.id.as_deref())).collect()
    }

    #[test]
    fn every_problem_of_a_submission_is_listed_with_its_line_and_id() {
        let truth = truth(&[("OPEN-1", "1", "a"), ("OPEN-2", "0", "a"), ("OPEN-3", "1", "b"), ("OPEN-4", "0", "b")]);
        let csv = b"subject_id,probability\nOPEN-1,0.9\nOPEN-1,0.8\nOPEN-9,0.1\nOPEN-2,high\nOPEN-3,1.5\n";
        let error = join_labels(&truth, csv, None, 0.5).unwrap_err();
        assert_eq!(
            codes(&error),
            [
                ("duplicate-id", Some(3), Some("OPEN-1")),
                ("unknown-id", Some(4), Some("OPEN-9")),
                ("non-numeric", Some(5), Some("OPEN-2")),
                ("out-of-range", Some(6), Some("OPEN-3")),
                ("missing-id", None, Some("OPEN-4")),
            ]
        );
        assert_eq!(error.problems[2].message, "probability for id OPEN-2 on line 5 is not a number");
        assert_eq!(error.count, 5);
        assert!(!serde_json::to_string(&error).unwrap().contains("\"0\""), "no hidden label is echoed");
    }

    #[test]
    fn headers_without_an_id_or_a_prediction_column_are_refused() {
        let truth = truth(&[("OPEN-1", "cat", "a"), ("OPEN-2", "dog", "a"), ("OPEN-3", "eel", "b")]);
        for (csv, message) in [
            (&b"id,label\nOPEN-1,cat\n"[..], "the header needs a subject_id or study_id column"),
            (b"study_id,score\nOPEN-1,1\n", "the header needs a label, probability or probability_<class> column"),
            (
                b"study_id,probability\nOPEN-1,1\n",
                "a single probability column needs two classes; give probability_<class> columns",
            ),
            (b"study_id,probability_cat,probability_dog\nOPEN-1,1,0\n", "the column probability_eel is missing"),
            (b"study_id,label,notes\nOPEN-1,cat,x\n", "the header has an unexpected column \"notes\""),
        ] {
            let error = join_labels(&truth, csv, None, 0.5).unwrap_err();
            assert_eq!((error.problems[0].code.as_str(), error.problems[0].message.as_str()), ("bad-header", message));
        }
        let error = join_labels(&truth, b"study_id,label\nOPEN-1,cow\nOPEN-2,dog\nOPEN-3,\n", None, 0.5).unwrap_err();
        assert_eq!(
            codes(&error),
            [("unknown-label", Some(2), Some("OPEN-1")), ("empty-value", Some(4), Some("OPEN-3"))]
        );
    }

    #[test]
    fn a_valid_submission_joins_in_id_order_with_sites_and_thresholded_classes_even_after_a_byte_order_mark() {
        let truth = truth(&[("B", "yes", "x"), ("A", "no", "y")]);
        let pairs =
            join_labels(&truth, b"\xEF\xBB\xBFsubject_id,probability\nB,0.5\nA,0.2\n", Some("yes"), 0.5).unwrap();
        assert_eq!(
            (pairs.ids.clone(), pairs.sites.clone()),
            (vec!["A".into(), "B".into()], vec!["y".into(), "x".into()])
        );
        assert_eq!((pairs.truth.clone(), pairs.predicted.clone(), pairs.positive), (vec![0, 1], vec![0, 1], Some(1)));
        assert_eq!(pairs.scores, Some(vec![0.2, 0.5]));
    }
}
