//! Diagnoses, one per row: `patient_id`, `system` (`ICD-10` or `SNOMED CT`),
//! `code`, and an optional `date`.
//!
//! Systems and codes are read as [`crate::vocabulary::codes`] says: ICD-10
//! codes are stored upper-case with the dot after the category (`e119` →
//! `E11.9`), so a prefix such as `E11` finds every subcode; SNOMED CT codes
//! must be valid concept ids (digits with a Verhoeff check digit).

use super::table::{self, Format};
use super::{DiagnosisRow, Parsed, Problems, parse_date, patient_id};
use crate::vocabulary::{CodeSystem, DiagnosisCode};

/// Reads a diagnosis table.
pub fn parse(format: Format, body: &[u8], problems: &mut Problems) -> Parsed {
    let mut parsed = problems.parsed();
    let mut columns: Option<[Option<usize>; 4]> = None;
    let header = table::read(format, body, problems, |header, row, cells, problems| {
        let [patient, system_at, code_at, date_at] = *columns.get_or_insert_with(|| plan(header, problems));
        if patient.is_none() || code_at.is_none() || system_at.is_none() {
            return;
        }
        parsed.rows += 1;
        let cell = |at: Option<usize>| at.and_then(|i| cells.get(i).copied().flatten());
        let patient = match patient_id(cell(patient)) {
            Ok(id) => parsed.patients.intern(id),
            Err((code, message)) => return problems.at(row, "patient_id", code, message),
        };
        let Some(system) = cell(system_at).and_then(CodeSystem::parse) else {
            return problems.at(row, "system", "invalid-value", "not a coding system (ICD-10 or SNOMED CT)");
        };
        let Some(code) = cell(code_at).and_then(|c| DiagnosisCode::parse(system, c)) else {
            let message = if system == CodeSystem::Icd10 {
                "not an ICD-10 code (a letter, two digits, then up to four characters, e.g. E11.9)"
            } else {
                "not a SNOMED CT concept id (6–18 digits with a valid check digit)"
            };
            return problems.at(row, "code", "invalid-code", message);
        };
        let on = match cell(date_at) {
            None => None,
            Some(text) => match parse_date(text) {
                Some(d) => Some(d),
                None => return problems.at(row, "date", "invalid-date", "not a date (YYYY-MM-DD)"),
            },
        };
        parsed.diagnoses.push(DiagnosisRow { patient, code, on });
    });
    if let Some(header) = header
        && columns.is_none()
    {
        plan(&header, problems);
        problems.add(None, None, "empty-table", "the table has no data rows");
    }
    parsed
}

fn plan(header: &table::Header, problems: &mut Problems) -> [Option<usize>; 4] {
    let columns = [header.index("patient_id"), header.index("system"), header.index("code"), header.index("date")];
    for (name, at) in [("patient_id", columns[0]), ("system", columns[1]), ("code", columns[2])] {
        if at.is_none() {
            problems.add(Some(1), Some(name), "missing-column", "a required column is missing");
        }
    }
    for name in &header.columns {
        if !["patient_id", "system", "code", "date"].contains(&name.as_str()) {
            problems.add(
                Some(1),
                Some(name),
                "unknown-column",
                "not a column of a diagnosis table (patient_id, system, code, date)",
            );
        }
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    type Listed = Vec<(Option<u64>, Option<String>, &'static str)>;

    fn read(body: &str) -> (Parsed, Listed) {
        let mut problems = Problems::default();
        let parsed = parse(Format::Csv, body.as_bytes(), &mut problems);
        (parsed, problems.into_list().into_iter().map(|p| (p.row, p.column, p.code)).collect())
    }

    #[test]
    fn codes_are_stored_in_the_form_of_their_system() {
        let (parsed, problems) =
            read("patient_id,system,code,date\np1,icd10,e119,2024-01-02\np1,ICD-10,I21,\np2,snomed-ct,44054006,\n");
        assert!(problems.is_empty(), "{problems:?}");
        let codes: Vec<_> = parsed.diagnoses.iter().map(|d| (d.code.system().as_str(), d.code.as_str())).collect();
        assert_eq!(codes, [("ICD-10", "E11.9"), ("ICD-10", "I21"), ("SNOMED CT", "44054006")]);
    }

    #[test]
    fn bad_systems_and_codes_are_reported_by_row_and_column() {
        let (parsed, problems) =
            read("patient_id,system,code\np1,ICD-10,11.9\np1,Read,C10E.\np2,SNOMED CT,44054007\np3,ICD-10,E11\n");
        assert_eq!(
            problems,
            [
                (Some(2), Some("code".into()), "invalid-code"),
                (Some(3), Some("system".into()), "invalid-value"),
                (Some(4), Some("code".into()), "invalid-code"),
            ]
        );
        assert_eq!(parsed.diagnoses.len(), 1);
    }
}
