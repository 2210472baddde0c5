//! The data dictionary: every field a researcher can discover, with its stable
//! id, meaning, type, canonical unit and coding system, and how many subjects
//! of each cohort have a value (shown suppressed). Imports check their values
//! against it; discovery validates its criteria against it.

pub mod db;
pub mod units;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kind of value a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ValueType {
    /// A measurement in the field's canonical unit.
    Number,
    /// A whole number (year of birth).
    Integer,
    /// A code of the field's coding system (sex, modality, smoking status, a diagnosis).
    Code,
    /// Copies of a variant's alternate allele (0, 1, 2).
    Genotype,
    /// Whether something exists (an annotation).
    Presence,
}

/// Where a field's values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum FieldSource {
    /// A column of the catalog (subjects, studies, series), filled by imaging ingest or subject imports.
    Builtin,
    /// Rows of clinical, lab and proteomic observations, filled by table imports.
    Observation,
}

/// One field of the dictionary.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Field {
    /// Stable id used in imports and discovery criteria, e.g. `hba1c`.
    #[schema(example = "hba1c")]
    pub id: String,
    pub title: String,
    pub description: String,
    /// e.g. `laboratory`, `imaging`, `demographics`.
    pub category: String,
    pub value_type: ValueType,
    pub source: FieldSource,
    /// Canonical UCUM unit: numbers are stored and compared in it.
    pub unit: Option<String>,
    /// The coding system of the field (LOINC for a lab) or of its values.
    pub coding_system: Option<String>,
    /// The field's code in that system.
    pub code: Option<String>,
    /// g/mol of the analyte: values in mass concentration convert through it.
    pub molar_mass: Option<f64>,
    /// Plausible range in the canonical unit; imports refuse values outside it.
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
}

impl Field {
    /// The canonical unit, for numeric observation fields.
    pub fn canonical_unit(&self) -> Option<units::Unit> {
        self.unit.as_deref().and_then(units::Unit::parse)
    }

    /// Whether `value` (in the canonical unit) is plausible for this field.
    pub fn in_range(&self, value: f64) -> bool {
        value.is_finite()
            && self.min_value.is_none_or(|min| value >= min)
            && self.max_value.is_none_or(|max| value <= max)
    }

    /// "30–260 cm", for messages.
    pub fn range_text(&self) -> String {
        let unit = self.unit.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
        match (self.min_value, self.max_value) {
            (Some(min), Some(max)) => format!("{min}–{max}{unit}"),
            (Some(min), None) => format!("at least {min}{unit}"),
            (None, Some(max)) => format!("at most {max}{unit}"),
            (None, None) => "any value".into(),
        }
    }
}

/// The whole dictionary in memory, for validating an import or a query.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    fields: Vec<Field>,
}

impl Dictionary {
    pub fn new(fields: Vec<Field>) -> Self {
        Self { fields }
    }

    pub fn get(&self, id: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.id == id)
    }

    /// Every field.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// An observation field by its id, or by its code (`4548-4`, `LOINC:4548-4`, `P05231`).
    pub fn observation(&self, code: &str, system: Option<&str>) -> Option<&Field> {
        let code = code.trim();
        let (system, code) = match (system.map(str::trim).filter(|s| !s.is_empty()), code.split_once(':')) {
            (Some(system), _) => (Some(system), code),
            (None, Some((system, code))) if !system.is_empty() && !code.is_empty() => (Some(system), code),
            (None, _) => (None, code),
        };
        let observations = self.fields.iter().filter(|f| f.source == FieldSource::Observation);
        match system {
            Some(s) if s.eq_ignore_ascii_case("local") || s.eq_ignore_ascii_case("custodian") => {
                observations.into_iter().find(|f| f.id == code)
            }
            Some(s) => observations.into_iter().find(|f| {
                f.coding_system.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(s)) && f.code.as_deref() == Some(code)
            }),
            None => {
                let fields: Vec<&Field> = observations.collect();
                fields
                    .iter()
                    .find(|f| f.id == code)
                    .or_else(|| fields.iter().find(|f| f.code.as_deref() == Some(code)))
                    .copied()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(id: &str, system: &str, code: &str) -> Field {
        Field {
            id: id.into(),
            title: id.into(),
            description: String::new(),
            category: "laboratory".into(),
            value_type: ValueType::Number,
            source: FieldSource::Observation,
            unit: Some("mmol/L".into()),
            coding_system: Some(system.into()),
            code: Some(code.into()),
            molar_mass: None,
            min_value: Some(0.5),
            max_value: Some(60.0),
        }
    }

    #[test]
    fn observation_fields_are_found_by_id_code_or_system_and_code() {
        let d = Dictionary::new(vec![field("glucose", "LOINC", "2345-7"), field("prot_il6", "UniProt", "P05231")]);
        assert_eq!(d.observation("glucose", None).unwrap().id, "glucose");
        assert_eq!(d.observation("2345-7", None).unwrap().id, "glucose");
        assert_eq!(d.observation("2345-7", Some("loinc")).unwrap().id, "glucose");
        assert_eq!(d.observation("LOINC:2345-7", None).unwrap().id, "glucose");
        assert_eq!(d.observation("P05231", Some("UniProt")).unwrap().id, "prot_il6");
        assert_eq!(d.observation("glucose", Some("local")).unwrap().id, "glucose");
        assert!(d.observation("2345-7", Some("UniProt")).is_none());
        assert!(d.observation("1234-5", None).is_none());
    }

    #[test]
    fn ranges_are_checked_and_described() {
        let f = field("glucose", "LOINC", "2345-7");
        assert!(f.in_range(5.0) && f.in_range(0.5) && !f.in_range(0.4) && !f.in_range(f64::NAN));
        assert_eq!(f.range_text(), "0.5–60 mmol/L");
    }
}
