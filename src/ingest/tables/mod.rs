//! Table imports: subjects with clinical variables, lab and proteomic
//! observations, diagnoses and variant genotypes, from CSV, JSON and VCF.
//!
//! An import is read and checked whole before anything is written: every
//! problem is reported with its row and column (up to [`MAX_PROBLEMS`]), and a
//! file with any problem imports nothing. Local patient IDs become the same
//! keyed pseudonyms DICOM's Patient ID does, so a person's table rows link to
//! their images; dates move by the subject's offset; neither the IDs nor the
//! original dates are stored, logged or echoed in a message.

pub mod db;
pub mod diagnoses;
pub mod observations;
pub mod subjects;
pub mod table;
pub mod variants;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use serde::Serialize;
use utoipa::ToSchema;

use crate::vocabulary::{DiagnosisCode, Sex};

/// Problems reported at most per import; the count of the rest is still given.
pub const MAX_PROBLEMS: usize = 100;

pub use crate::error::Problem;

/// The problems of one import, capped at [`MAX_PROBLEMS`], and the most
/// patients it may name (`ingest.max_table_patients`).
#[derive(Debug)]
pub struct Problems {
    list: Vec<Problem>,
    total: usize,
    max_patients: usize,
}

impl Default for Problems {
    fn default() -> Self {
        Self { list: Vec::new(), total: 0, max_patients: usize::MAX }
    }
}

impl Problems {
    /// Problems of an import that may name at most `max_patients` patients.
    pub fn with_max_patients(max_patients: usize) -> Self {
        Self { max_patients, ..Self::default() }
    }

    /// An empty import for these rules: its patients are capped.
    pub fn parsed(&self) -> Parsed {
        Parsed { patients: Patients { limit: self.max_patients, ..Patients::default() }, ..Parsed::default() }
    }

    /// Records the one problem of an import that named more patients than it may.
    pub fn check_patients(&mut self, parsed: &Parsed) {
        if parsed.patients.over_limit {
            let message = format!(
                "the import names more than {} patients (ingest.max_table_patients); \
                 split it into several imports, each adds to what is there",
                self.max_patients
            );
            self.add(None, Some("patient_id"), "too-many-patients", message);
        }
    }

    pub fn add(&mut self, row: Option<u64>, column: Option<&str>, code: &'static str, message: impl Into<String>) {
        self.total += 1;
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(Problem {
                row,
                column: column.map(str::to_owned),
                path: None,
                code,
                message: message.into(),
            });
        }
    }

    pub fn at(&mut self, row: u64, column: &str, code: &'static str, message: impl Into<String>) {
        self.add(Some(row), Some(column), code, message);
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Whether more problems would only be counted, not listed.
    pub fn full(&self) -> bool {
        self.list.len() >= MAX_PROBLEMS
    }

    pub fn into_list(self) -> Vec<Problem> {
        self.list
    }
}

/// The kinds of import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportKind {
    /// One row per subject: patient ID, sex, birth date or year, and any observation field as a column.
    Subjects,
    /// One row per value: patient ID, code, value, unit, time (labs, vital signs, proteomics).
    Observations,
    /// One row per diagnosis: patient ID, system, code, date.
    Diagnoses,
    /// Genotypes: a VCF (plain or gzip) or a table of patient ID, variant, genotype.
    Variants,
}

impl ImportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subjects => "subjects",
            Self::Observations => "observations",
            Self::Diagnoses => "diagnoses",
            Self::Variants => "variants",
        }
    }
}

/// The local patient ID of a row: present, not blank, of sane length.
pub fn patient_id(value: Option<&str>) -> Result<&str, (&'static str, &'static str)> {
    match value.map(str::trim) {
        None | Some("") => Err(("missing-value", "the patient ID is missing")),
        Some(v) if v.len() > 64 => Err(("invalid-value", "the patient ID is longer than 64 characters")),
        Some(v) if v.chars().any(char::is_control) => {
            Err(("invalid-value", "the patient ID contains control characters"))
        }
        Some(v) => Ok(v),
    }
}

/// A date as `YYYY-MM-DD` or DICOM's `YYYYMMDD`.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let text = text.trim();
    NaiveDate::parse_from_str(text, "%Y-%m-%d").or_else(|_| NaiveDate::parse_from_str(text, "%Y%m%d")).ok()
}

/// A date, or a date and time (`YYYY-MM-DDTHH:MM[:SS]`, a space also separates them;
/// a trailing `Z` or offset is ignored: the local wall-clock time is what shifts).
pub fn parse_date_time(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    if let Some(date) = parse_date(text) {
        return Some(date.and_time(NaiveTime::MIN));
    }
    let (date, time) = text.split_once(['T', ' '])?;
    let date = parse_date(date)?;
    let time = time.trim_end_matches('Z');
    let time = time.find(['+', '-']).map_or(time, |at| &time[..at]);
    let time =
        NaiveTime::parse_from_str(time, "%H:%M:%S%.f").or_else(|_| NaiveTime::parse_from_str(time, "%H:%M")).ok()?;
    Some(date.and_time(time))
}

/// A year of birth: from a full date (of which only the year is kept) or a year.
pub fn parse_birth_year(text: &str) -> Option<i32> {
    let text = text.trim();
    let year = match parse_date(text) {
        Some(date) => date.year(),
        None => text.parse().ok()?,
    };
    (1880..=2100).contains(&year).then_some(year)
}

/// A number; a decimal comma is accepted when it is the only separator.
pub fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    let value: f64 = text.parse().ok().or_else(|| {
        (text.matches(',').count() == 1 && !text.contains('.')).then(|| text.replace(',', ".").parse().ok())?
    })?;
    value.is_finite().then_some(value)
}

/// Local patient IDs of an import, numbered by first appearance. They live in
/// memory only, until they become pseudonyms. An import's memory grows with
/// its patients, so they are capped: past the cap a new ID is not kept, and
/// the import is refused ([`Problems::check_patients`]).
#[derive(Debug)]
pub struct Patients {
    ids: Vec<String>,
    index: std::collections::HashMap<String, u32>,
    limit: usize,
    over_limit: bool,
}

impl Default for Patients {
    fn default() -> Self {
        Self { ids: Vec::new(), index: std::collections::HashMap::new(), limit: usize::MAX, over_limit: false }
    }
}

impl Patients {
    /// The number of `id`, new or known; past the cap, a number no patient has
    /// (the import is refused before any number is used).
    pub fn intern(&mut self, id: &str) -> u32 {
        if let Some(n) = self.index.get(id) {
            return *n;
        }
        if self.ids.len() >= self.limit {
            self.over_limit = true;
            return u32::MAX;
        }
        let n = u32::try_from(self.ids.len()).expect("fewer than 2^32 patients");
        self.ids.push(id.to_owned());
        self.index.insert(id.to_owned(), n);
        n
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Sex and year of birth of a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demographics {
    pub patient: u32,
    pub sex: Option<Sex>,
    pub birth_year: Option<i32>,
}

/// A clinical, lab or proteomic value, in its field's canonical unit.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationRow {
    pub patient: u32,
    /// Index into [`Parsed::fields`].
    pub field: u16,
    pub value: Option<f64>,
    pub code: Option<String>,
    /// Original time; shifted when written.
    pub at: Option<NaiveDateTime>,
}

/// A coded diagnosis (its system is the code's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosisRow {
    pub patient: u32,
    pub code: DiagnosisCode,
    /// Original date; shifted when written.
    pub on: Option<NaiveDate>,
}

/// A biallelic variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VariantKey {
    pub chrom: String,
    pub pos: i64,
    pub reference: String,
    pub alt: String,
    pub rsid: Option<String>,
    pub gene: Option<String>,
}

/// A genotype call: copies of the alternate allele, `None` when missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenotypeRow {
    pub patient: u32,
    /// Index into [`Parsed::variants`].
    pub variant: u32,
    pub alt_count: Option<i16>,
}

/// Everything a valid import writes.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Data rows read (VCF: variant lines).
    pub rows: u64,
    pub patients: Patients,
    pub demographics: Vec<Demographics>,
    /// Field ids referenced by [`ObservationRow::field`].
    pub fields: Vec<String>,
    /// Each field's canonical unit as the values were converted to it.
    pub field_units: Vec<Option<String>>,
    pub observations: Vec<ObservationRow>,
    pub diagnoses: Vec<DiagnosisRow>,
    pub variants: Vec<VariantKey>,
    pub genotypes: Vec<GenotypeRow>,
    /// Consent withdrawals recorded by the site: patient and extent.
    pub withdrawals: Vec<(u32, crate::access::withdrawal::Scope)>,
}

impl Parsed {
    /// The index of `field` in [`Self::fields`].
    pub fn field(&mut self, field: &crate::dictionary::Field) -> u16 {
        if let Some(at) = self.fields.iter().position(|f| *f == field.id) {
            return u16::try_from(at).expect("few fields");
        }
        self.fields.push(field.id.clone());
        self.field_units.push(field.unit.clone());
        u16::try_from(self.fields.len() - 1).expect("fewer than 65536 fields")
    }
}

/// What an import did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportReport {
    pub id: uuid::Uuid,
    pub kind: ImportKind,
    /// `csv`, `json`, `vcf` or `vcf.gz`.
    pub format: String,
    pub cohort: String,
    pub site: String,
    /// Data rows read.
    pub rows: u64,
    /// Subjects seen for the first time.
    pub subjects_created: u64,
    /// Subjects already in the registry (from imaging or earlier imports).
    pub subjects_matched: u64,
    /// Rows written: observations, diagnoses or genotypes (a subject row may write several observations).
    pub values: u64,
    /// Subjects whose consent withdrawal this import recorded (the `withdrawn` column of a subject table).
    pub withdrawn: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_parse_in_iso_and_dicom_forms() {
        assert_eq!(parse_date("2024-02-29"), NaiveDate::from_ymd_opt(2024, 2, 29));
        assert_eq!(parse_date("20240229"), NaiveDate::from_ymd_opt(2024, 2, 29));
        assert_eq!(parse_date("2023-02-29"), None);
        let t = parse_date_time("2024-03-01T08:15:30Z").unwrap();
        assert_eq!(t.to_string(), "2024-03-01 08:15:30");
        assert_eq!(parse_date_time("2024-03-01 08:15").unwrap().to_string(), "2024-03-01 08:15:00");
        assert_eq!(parse_date_time("2024-03-01T08:15:30+02:00").unwrap().to_string(), "2024-03-01 08:15:30");
        assert_eq!(parse_date_time("2024-03-01").unwrap().to_string(), "2024-03-01 00:00:00");
        assert!(parse_date_time("yesterday").is_none());
    }

    #[test]
    fn values_parse_leniently_but_never_guess() {
        assert_eq!(parse_birth_year("1961-07-04"), Some(1961));
        assert_eq!(parse_birth_year("1961"), Some(1961));
        assert_eq!(parse_birth_year("61"), None);
        assert_eq!(parse_number("5,4"), Some(5.4));
        assert_eq!(parse_number("1,234.5"), None);
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(patient_id(Some("  ")), Err(("missing-value", "the patient ID is missing")));
    }

    #[test]
    fn problems_are_capped_but_counted() {
        let mut p = Problems::default();
        for row in 0..150 {
            p.at(row, "value", "invalid-value", "not a number");
        }
        assert_eq!(p.total(), 150);
        assert!(p.full());
        assert_eq!(p.into_list().len(), MAX_PROBLEMS);
    }
}
