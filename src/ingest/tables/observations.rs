//! Observations in long form, one value per row: lab results, vital signs,
//! proteomic markers.
//!
//! Columns: `patient_id`, `code` (a field id, or the field's code such as the
//! LOINC `4548-4` or the UniProt `P05231`, optionally as `LOINC:4548-4`),
//! `system` (optional), `value`, `unit` (required unless the field's unit is
//! dimensionless or NPX), `time` or `date` (optional).

use super::table::{self, Format};
use super::{ObservationRow, Parsed, Problems, parse_date_time, parse_number, patient_id};
use crate::dictionary::units;
use crate::dictionary::{Dictionary, Field, FieldSource, ValueType};

/// A value of `field` as stored: a number in the canonical unit, or a code.
/// A stored value: a number in the canonical unit, or a code.
pub type Value = (Option<f64>, Option<String>);

/// A problem's code and message.
pub type Refusal = (&'static str, String);

pub fn value_of(field: &Field, text: &str, unit: Option<&str>) -> Result<Value, Refusal> {
    match field.value_type {
        ValueType::Number | ValueType::Integer => {
            let Some(number) = parse_number(text) else {
                return Err(("invalid-value", "not a number".into()));
            };
            let canonical = field
                .canonical_unit()
                .ok_or_else(|| ("invalid-field", format!("the field `{}` has no usable unit", field.id)))?;
            let value = match unit.map(str::trim).filter(|u| !u.is_empty()) {
                Some(unit) => units::convert_text(number, unit, canonical, field.molar_mass)
                    .map_err(|e| (e.code(), e.to_string()))?,
                None if matches!(canonical.code, "1" | "{NPX}") => number,
                None => {
                    return Err(("missing-unit", format!("the unit is missing (the field is in {})", canonical.code)));
                }
            };
            if !field.in_range(value) {
                return Err((
                    "out-of-range",
                    format!("outside the plausible range {} of `{}`", field.range_text(), field.id),
                ));
            }
            Ok((Some(value), None))
        }
        ValueType::Code => {
            let code = text.trim();
            if code.len() > 64 || code.chars().any(char::is_control) {
                return Err(("invalid-value", "not a code (at most 64 characters, no control characters)".into()));
            }
            Ok((None, Some(code.to_owned())))
        }
        ValueType::Genotype | ValueType::Presence => {
            Err(("invalid-field", format!("`{}` values are not imported as observations", field.id)))
        }
    }
}

/// Reads a long-form observation table.
pub fn parse(format: Format, body: &[u8], dictionary: &Dictionary, problems: &mut Problems) -> Parsed {
    let mut parsed = problems.parsed();
    let mut columns: Option<Columns> = None;
    let header = table::read(format, body, problems, |header, row, cells, problems| {
        let columns = columns.get_or_insert_with(|| Columns::of(header, problems));
        if !columns.usable {
            return;
        }
        parsed.rows += 1;
        let cell = |at: Option<usize>| at.and_then(|i| cells.get(i).copied().flatten());
        let patient = match patient_id(cell(columns.patient)) {
            Ok(id) => parsed.patients.intern(id),
            Err((code, message)) => return problems.at(row, "patient_id", code, message),
        };
        let Some(code) = cell(columns.code) else {
            return problems.at(row, "code", "missing-value", "the code is missing");
        };
        let Some(field) = dictionary.observation(code, cell(columns.system)) else {
            return problems.at(
                row,
                "code",
                "unknown-field",
                "no observation field of the data dictionary has this code",
            );
        };
        let Some(text) = cell(columns.value) else {
            return problems.at(row, "value", "missing-value", "the value is missing");
        };
        let (value, coded) = match value_of(field, text, cell(columns.unit)) {
            Ok(v) => v,
            Err((code, message)) => {
                let column = if matches!(code, "unknown-unit" | "incompatible-unit" | "missing-unit") {
                    "unit"
                } else {
                    "value"
                };
                return problems.at(row, column, code, message);
            }
        };
        let text = cell(columns.time);
        let at = text.and_then(parse_date_time);
        if text.is_some() && at.is_none() {
            let column = columns.time_name;
            return problems.at(row, column, "invalid-date", "not a date or date-time (YYYY-MM-DD[THH:MM[:SS]])");
        }
        let field = parsed.field(field);
        parsed.observations.push(ObservationRow { patient, field, value, code: coded, at });
    });
    if let Some(header) = header
        && columns.is_none()
    {
        Columns::of(&header, problems);
        problems.add(None, None, "empty-table", "the table has no data rows");
    }
    parsed
}

struct Columns {
    patient: Option<usize>,
    code: Option<usize>,
    system: Option<usize>,
    value: Option<usize>,
    unit: Option<usize>,
    time: Option<usize>,
    time_name: &'static str,
    usable: bool,
}

impl Columns {
    fn of(header: &table::Header, problems: &mut Problems) -> Self {
        let (time, time_name) = match header.index("time") {
            Some(at) => (Some(at), "time"),
            None => (header.index("date"), "date"),
        };
        let columns = Self {
            patient: header.index("patient_id"),
            code: header.index("code"),
            system: header.index("system"),
            value: header.index("value"),
            unit: header.index("unit"),
            time,
            time_name,
            usable: true,
        };
        let mut usable = true;
        for (name, at) in [("patient_id", columns.patient), ("code", columns.code), ("value", columns.value)] {
            if at.is_none() {
                problems.add(Some(1), Some(name), "missing-column", "a required column is missing");
                usable = false;
            }
        }
        for name in &header.columns {
            if !["patient_id", "code", "system", "value", "unit", "time", "date"].contains(&name.as_str()) {
                problems.add(
                    Some(1),
                    Some(name),
                    "unknown-column",
                    "not a column of an observation table (patient_id, code, system, value, unit, time)",
                );
            }
        }
        Self { usable, ..columns }
    }
}

/// Whether `field` can be imported as an observation.
pub fn importable(field: &Field) -> bool {
    field.source == FieldSource::Observation
        && matches!(field.value_type, ValueType::Number | ValueType::Integer | ValueType::Code)
}

/// The unit of a `field[unit]` column name, if any.
pub fn split_unit(column: &str) -> (&str, Option<&str>) {
    match column.strip_suffix(']').and_then(|c| c.split_once('[')) {
        Some((name, unit)) => (name.trim(), Some(unit.trim())),
        None => (column, None),
    }
}
