//! Subjects in wide form, one row per subject (or per visit): `patient_id`,
//! `sex`, `birth_date` (only its year is kept) or `birth_year`, an optional
//! `date` of the measurements, and any observation field of the dictionary as
//! a column, in its canonical unit or with the unit in brackets
//! (`height[in]`, `glucose[mg/dL]`). BMI is computed when a row has height and
//! weight but no BMI. A `withdrawn` column (`full` or `imaging`, blank if
//! none) records a consent withdrawal the site holds.

use std::collections::HashMap;

use super::observations::{importable, split_unit, value_of};
use super::table::{self, Format};
use super::{Demographics, ObservationRow, Parsed, Problems, parse_birth_year, parse_date_time, patient_id};
use crate::access::withdrawal::Scope;
use crate::dictionary::{Dictionary, Field};
use crate::vocabulary::Sex;

enum Column<'d> {
    Patient,
    Sex,
    BirthYear,
    Date,
    Withdrawn,
    Value { field: &'d Field, unit: Option<String> },
}

/// Reads a subject table.
pub fn parse(format: Format, body: &[u8], dictionary: &Dictionary, problems: &mut Problems) -> Parsed {
    let mut parsed = problems.parsed();
    let mut plan: Option<Vec<Option<Column>>> = None;
    // Sex and birth year per patient, with the row that gave them, to catch contradictions.
    let mut seen: HashMap<u32, (usize, u64)> = HashMap::new();
    let header = table::read(format, body, problems, |header, row, cells, problems| {
        let plan = plan.get_or_insert_with(|| plan_columns(header, dictionary, problems));
        if plan.iter().all(|c| !matches!(c, Some(Column::Patient))) {
            return;
        }
        parsed.rows += 1;
        let mut patient = None;
        let (mut sex, mut birth_year, mut at, mut withdrawn) = (None, None, None, None);
        let mut values: Vec<(&Field, Option<f64>, Option<String>)> = Vec::new();
        let mut ok = true;
        for (i, column) in plan.iter().enumerate() {
            let (Some(column), Some(text)) = (column, cells.get(i).copied().flatten()) else { continue };
            let name = header.columns[i].as_str();
            match column {
                Column::Patient => match patient_id(Some(text)) {
                    Ok(id) => patient = Some(parsed.patients.intern(id)),
                    Err((code, message)) => {
                        problems.at(row, name, code, message);
                        ok = false;
                    }
                },
                Column::Sex => {
                    sex = Sex::parse(text);
                    if sex.is_none() {
                        problems.at(row, name, "invalid-value", "not a sex (M, F or O; male, female or other)");
                        ok = false;
                    }
                }
                Column::BirthYear => {
                    birth_year = parse_birth_year(text);
                    if birth_year.is_none() {
                        problems.at(row, name, "invalid-date", "not a birth date (YYYY-MM-DD) or year (1880–2100)");
                        ok = false;
                    }
                }
                Column::Date => {
                    at = parse_date_time(text);
                    if at.is_none() {
                        problems.at(row, name, "invalid-date", "not a date or date-time (YYYY-MM-DD[THH:MM[:SS]])");
                        ok = false;
                    }
                }
                Column::Withdrawn => match withdrawal(text) {
                    Ok(scope) => withdrawn = scope,
                    Err(message) => {
                        problems.at(row, name, "invalid-value", message);
                        ok = false;
                    }
                },
                Column::Value { field, unit } => match value_of(field, text, unit.as_deref()) {
                    Ok((value, code)) => values.push((field, value, code)),
                    Err((code, message)) => {
                        problems.at(row, name, code, message);
                        ok = false;
                    }
                },
            }
        }
        let Some(patient) = patient else {
            return problems.at(row, "patient_id", "missing-value", "the patient ID is missing");
        };
        if !ok {
            return;
        }
        if (sex.is_some() || birth_year.is_some())
            && let Err(message) =
                record_demographics(&mut parsed, &mut seen, Demographics { patient, sex, birth_year }, row)
        {
            return problems.add(Some(row), None, "conflicting-value", message);
        }
        if let Some(scope) = withdrawn {
            parsed.withdrawals.push((patient, scope));
        }
        let computed = computed_bmi(&values, dictionary);
        for (field, value, code) in values {
            let field = parsed.field(field);
            parsed.observations.push(ObservationRow { patient, field, value, code, at });
        }
        if let Some((bmi, value)) = computed {
            let field = parsed.field(bmi);
            parsed.observations.push(ObservationRow { patient, field, value: Some(value), code: None, at });
        }
    });
    if let Some(header) = header
        && plan.is_none()
    {
        plan_columns(&header, dictionary, problems);
        problems.add(None, None, "empty-table", "the table has no data rows");
    }
    parsed
}

/// Records a row's sex and birth year, merged with earlier rows of the patient;
/// a contradiction is an error naming the earlier row.
fn record_demographics(
    parsed: &mut Parsed,
    seen: &mut HashMap<u32, (usize, u64)>,
    new: Demographics,
    row: u64,
) -> Result<(), String> {
    let Some((earlier, earlier_row)) = seen.get(&new.patient) else {
        seen.insert(new.patient, (parsed.demographics.len(), row));
        parsed.demographics.push(new);
        return Ok(());
    };
    let d = &mut parsed.demographics[*earlier];
    let clash = |a: bool, b: bool, same: bool| a && b && !same;
    if clash(new.sex.is_some(), d.sex.is_some(), new.sex == d.sex)
        || clash(new.birth_year.is_some(), d.birth_year.is_some(), new.birth_year == d.birth_year)
    {
        return Err(format!("sex or birth year contradicts row {earlier_row} of the same patient"));
    }
    d.sex = d.sex.or(new.sex);
    d.birth_year = d.birth_year.or(new.birth_year);
    Ok(())
}

/// The BMI of a row that has height and weight but no BMI, when in range.
fn computed_bmi<'d>(
    values: &[(&Field, Option<f64>, Option<String>)],
    dictionary: &'d Dictionary,
) -> Option<(&'d Field, f64)> {
    let bmi_given = values.iter().any(|(f, ..)| f.id == "bmi");
    let number = |id: &str| values.iter().find(|(f, ..)| f.id == id).and_then(|(_, v, _)| *v);
    match (bmi_given, number("height"), number("weight"), dictionary.get("bmi")) {
        (false, Some(height_cm), Some(weight_kg), Some(bmi)) if height_cm > 0.0 => {
            let value = weight_kg / (height_cm / 100.0).powi(2);
            bmi.in_range(value).then_some((bmi, value))
        }
        _ => None,
    }
}

/// A `withdrawn` cell: blank, `full` or `imaging`.
fn withdrawal(text: &str) -> Result<Option<Scope>, &'static str> {
    match text.trim() {
        "" => Ok(None),
        scope => Scope::parse(scope).map(Some).ok_or("not a withdrawal (full or imaging; blank if none)"),
    }
}

fn plan_columns<'d>(
    header: &table::Header,
    dictionary: &'d Dictionary,
    problems: &mut Problems,
) -> Vec<Option<Column<'d>>> {
    let mut plan = Vec::with_capacity(header.columns.len());
    for name in &header.columns {
        let column = match name.as_str() {
            "patient_id" => Some(Column::Patient),
            "sex" => Some(Column::Sex),
            "birth_date" | "birth_year" => Some(Column::BirthYear),
            "date" | "time" => Some(Column::Date),
            "withdrawn" => Some(Column::Withdrawn),
            other => {
                let (id, unit) = split_unit(other);
                match dictionary.get(id) {
                    Some(field) if importable(field) => {
                        if unit.is_some() && field.unit.is_none() {
                            problems.add(Some(1), Some(name), "invalid-header", "the field is coded: it takes no unit");
                            None
                        } else {
                            // Without a unit in brackets, values are in the field's canonical unit.
                            Some(Column::Value { field, unit: unit.map(str::to_owned).or_else(|| field.unit.clone()) })
                        }
                    }
                    Some(_) => {
                        problems.add(
                            Some(1),
                            Some(name),
                            "unknown-field",
                            "the field is filled by imaging ingest or its own import, not by a subject table",
                        );
                        None
                    }
                    None => {
                        problems.add(
                            Some(1),
                            Some(name),
                            "unknown-field",
                            "not a field of the data dictionary (GET /api/v1/fields)",
                        );
                        None
                    }
                }
            }
        };
        plan.push(column);
    }
    if !plan.iter().any(|c| matches!(c, Some(Column::Patient))) {
        problems.add(Some(1), Some("patient_id"), "missing-column", "a required column is missing");
    }
    plan
}
