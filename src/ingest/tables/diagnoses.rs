//! Diagnoses, one per row: `patient_id`, `system` (`ICD-10` or `SNOMED CT`),
//! `code`, and an optional `date`.
//!
//! ICD-10 codes are stored upper-case with the dot after the category
//! (`e119` → `E11.9`), so a prefix such as `E11` finds every subcode.
//! SNOMED CT codes must be valid concept ids (digits with a Verhoeff check digit).

use super::table::{self, Format};
use super::{DiagnosisRow, Parsed, Problems, parse_date, patient_id};

/// The coding system named `text`.
pub fn system(text: &str) -> Option<&'static str> {
    match text.trim().to_ascii_uppercase().replace(['-', '_', ' '], "").as_str() {
        "ICD10" | "ICD10CM" | "ICD10GM" | "ICD" => Some("ICD-10"),
        "SNOMED" | "SNOMEDCT" | "SCT" => Some("SNOMED CT"),
        _ => None,
    }
}

/// A code of `system` in its stored form.
pub fn normalise(system: &str, code: &str) -> Option<String> {
    let code = code.trim();
    match system {
        "ICD-10" => {
            let compact: String = code.chars().filter(|c| *c != '.').collect::<String>().to_ascii_uppercase();
            let bytes = compact.as_bytes();
            let valid = (3..=7).contains(&bytes.len())
                && bytes[0].is_ascii_uppercase()
                && bytes[1].is_ascii_digit()
                && bytes[2].is_ascii_alphanumeric()
                && bytes[3..].iter().all(u8::is_ascii_alphanumeric);
            valid.then(|| if compact.len() > 3 { format!("{}.{}", &compact[..3], &compact[3..]) } else { compact })
        }
        "SNOMED CT" => {
            let valid =
                (6..=18).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) && verhoeff_valid(code);
            valid.then(|| code.to_owned())
        }
        _ => None,
    }
}

/// The Verhoeff check SNOMED CT identifiers carry in their last digit.
fn verhoeff_valid(digits: &str) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let mut c = 0_u8;
    for (i, b) in digits.bytes().rev().enumerate() {
        c = D[usize::from(c)][usize::from(P[i % 8][usize::from(b - b'0')])];
    }
    c == 0
}

/// Reads a diagnosis table.
pub fn parse(format: Format, body: &[u8], problems: &mut Problems) -> Parsed {
    let mut parsed = Parsed::default();
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
        let Some(system) = cell(system_at).and_then(system) else {
            return problems.at(row, "system", "invalid-value", "not a coding system (ICD-10 or SNOMED CT)");
        };
        let Some(code) = cell(code_at).and_then(|c| normalise(system, c)) else {
            let message = if system == "ICD-10" {
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
        parsed.diagnoses.push(DiagnosisRow { patient, system, code, on });
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

    #[test]
    fn icd10_codes_are_normalised_so_prefixes_find_subcodes() {
        assert_eq!(normalise("ICD-10", "e119").as_deref(), Some("E11.9"));
        assert_eq!(normalise("ICD-10", "E11.9").as_deref(), Some("E11.9"));
        assert_eq!(normalise("ICD-10", "I21").as_deref(), Some("I21"));
        assert_eq!(normalise("ICD-10", "C34.11").as_deref(), Some("C34.11"));
        assert_eq!(normalise("ICD-10", "11.9"), None);
        assert_eq!(normalise("ICD-10", "E1"), None);
    }

    #[test]
    fn snomed_ids_need_their_check_digit() {
        assert_eq!(normalise("SNOMED CT", "44054006").as_deref(), Some("44054006")); // diabetes mellitus type 2
        assert_eq!(normalise("SNOMED CT", "22298006").as_deref(), Some("22298006")); // myocardial infarction
        assert_eq!(normalise("SNOMED CT", "44054007"), None);
        assert_eq!(normalise("SNOMED CT", "12345"), None);
        assert_eq!(system("snomed-ct"), Some("SNOMED CT"));
        assert_eq!(system("icd10"), Some("ICD-10"));
        assert_eq!(system("read"), None);
    }
}
