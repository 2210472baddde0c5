//! Discovery criteria: a JSON tree of `and` / `or` / `not` over conditions on
//! fields of the data dictionary, read and checked whole, with every problem
//! reported at its JSON Pointer.
//!
//! ```json
//! {"and": [
//!   {"field": "modality", "in": ["MR"]},
//!   {"field": "age_at_study", "min": 40, "max": 70},
//!   {"field": "glucose", "min": 126, "unit": "mg/dL"},
//!   {"field": "diagnosis", "system": "ICD-10", "prefix": "E11"},
//!   {"field": "genotype", "variant": "rs429358", "genotype": "carrier"},
//!   {"not": {"field": "sex", "in": ["M"]}},
//!   {"field": "modality", "in": ["MR"],
//!    "within_days_after": {"event": {"field": "diagnosis", "prefix": "C34"}, "min": 0, "max": 90}}
//! ]}
//! ```

use serde_json::{Map, Value};

use super::super::dictionary::units::{self, Unit};
use super::super::dictionary::{Dictionary, FieldSource, ValueType};
use crate::error::Problem;
use crate::vocabulary::{
    AnnotationKind, AnnotationLevel, AnnotatorRole, CodePrefix, CodeSystem, DiagnosisCode, Sex, VariantRef,
};

/// Most nesting of `and` / `or` / `not`.
pub const MAX_DEPTH: usize = 8;
/// Most conditions in one query.
pub const MAX_CONDITIONS: usize = 32;
/// Most values in one `in` list.
pub const MAX_VALUES: usize = 100;

/// A criteria tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Leaf(Condition),
}

/// Catalog columns of a series a condition can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesColumn {
    Modality,
    BodyPart,
    Manufacturer,
    Model,
    FieldStrength,
    AgeAtStudy,
}

impl SeriesColumn {
    pub fn sql(self) -> &'static str {
        match self {
            Self::Modality => "d.modality",
            Self::BodyPart => "d.body_part",
            Self::Manufacturer => "d.manufacturer",
            Self::Model => "d.model",
            Self::FieldStrength => "d.field_strength",
            Self::AgeAtStudy => "d.age_years",
        }
    }
}

/// One condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Cohort slugs.
    Cohort(Vec<String>),
    /// Site codes.
    Site(Vec<String>),
    Sex(Vec<Sex>),
    SeriesCode(SeriesColumn, Vec<String>),
    SeriesRange(SeriesColumn, Option<f64>, Option<f64>),
    /// A numeric observation field, bounds in its canonical unit.
    ObservationRange {
        field: String,
        min: Option<f64>,
        max: Option<f64>,
    },
    ObservationCode {
        field: String,
        values: Vec<String>,
    },
    /// Diagnoses of a system (any, when `None`) with one of the codes or a code starting with one of the prefixes.
    Diagnosis {
        system: Option<CodeSystem>,
        codes: Vec<DiagnosisCode>,
        prefixes: Vec<CodePrefix>,
    },
    /// Variants as rsIDs or `chrom-pos-ref-alt`, with the accepted copies of the alternate allele.
    Genotype {
        variant: VariantRef,
        alt_counts: Vec<i16>,
    },
    /// Subjects with an annotation of this level, kind, label code and annotator role (each optional).
    Annotation {
        level: Option<AnnotationLevel>,
        kinds: Vec<AnnotationKind>,
        labels: Vec<String>,
        roles: Vec<AnnotatorRole>,
    },
    /// A series condition whose study falls `min`–`max` days after a dated event of the subject.
    After {
        series: Box<Condition>,
        event: Box<Condition>,
        min_days: i32,
        max_days: i32,
    },
}

impl Condition {
    /// Whether the condition is about a series (false: about the subject).
    pub fn on_series(&self) -> bool {
        matches!(self, Self::SeriesCode(..) | Self::SeriesRange(..) | Self::After { .. })
    }

    /// Whether the condition can meet a missing value (a unit without imaging, a subject without sex).
    pub fn nullable(&self) -> bool {
        self.on_series() || matches!(self, Self::Sex(_))
    }

    /// Whether the condition can be the event of `within_days_after` (it has a date).
    fn dated(&self) -> bool {
        matches!(self, Self::Diagnosis { .. } | Self::ObservationRange { .. } | Self::ObservationCode { .. })
    }
}

/// What criteria are checked against.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub dictionary: &'a Dictionary,
    /// Cohort slugs.
    pub cohorts: &'a [String],
    /// Site codes.
    pub sites: &'a [String],
}

struct Reader<'a> {
    dictionary: &'a Dictionary,
    cohorts: &'a [String],
    sites: &'a [String],
    problems: Vec<Problem>,
    conditions: usize,
}

impl Reader<'_> {
    fn problem(&mut self, path: &str, code: &'static str, message: impl Into<String>) {
        self.problems.push(Problem {
            row: None,
            column: None,
            path: Some(path.to_owned()),
            code,
            message: message.into(),
        });
    }
}

/// Reads and checks a criteria tree; every problem is listed.
pub fn parse(value: &Value, known: Known<'_>) -> Result<Node, Vec<Problem>> {
    let mut reader = Reader {
        dictionary: known.dictionary,
        cohorts: known.cohorts,
        sites: known.sites,
        problems: Vec::new(),
        conditions: 0,
    };
    let node = node(&mut reader, value, "/criteria", 1);
    if reader.conditions > MAX_CONDITIONS {
        reader.problem(
            "/criteria",
            "too-complex",
            format!("the criteria have {} conditions; at most {MAX_CONDITIONS} are allowed", reader.conditions),
        );
    }
    match node {
        Some(node) if reader.problems.is_empty() => Ok(node),
        _ => Err(reader.problems),
    }
}

fn node(r: &mut Reader<'_>, value: &Value, path: &str, depth: usize) -> Option<Node> {
    let Value::Object(object) = value else {
        r.problem(
            path,
            "invalid-criteria",
            "expected an object: {\"and\": [...]}, {\"or\": [...]}, {\"not\": {...}} or a condition with \"field\"",
        );
        return None;
    };
    if depth > MAX_DEPTH {
        r.problem(path, "too-complex", format!("nesting deeper than {MAX_DEPTH} levels"));
        return None;
    }
    let operator = ["and", "or", "not"].into_iter().find(|k| object.contains_key(*k));
    match operator {
        Some(op) => {
            if object.len() != 1 {
                r.problem(path, "invalid-criteria", format!("`{op}` stands alone in its object"));
                return None;
            }
            let inner = &object[op];
            let inner_path = format!("{path}/{op}");
            if op == "not" {
                return node(r, inner, &inner_path, depth + 1).map(|n| Node::Not(Box::new(n)));
            }
            let Value::Array(items) = inner else {
                r.problem(&inner_path, "invalid-criteria", format!("`{op}` takes an array of criteria"));
                return None;
            };
            if items.is_empty() {
                r.problem(&inner_path, "invalid-criteria", format!("`{op}` needs at least one criterion"));
                return None;
            }
            let children: Vec<Option<Node>> = items
                .iter()
                .enumerate()
                .map(|(i, item)| node(r, item, &format!("{inner_path}/{i}"), depth + 1))
                .collect();
            let children: Option<Vec<Node>> = children.into_iter().collect();
            children.map(|c| if op == "and" { Node::And(c) } else { Node::Or(c) })
        }
        None => condition(r, object, path).map(Node::Leaf),
    }
}

const KEYS: &[&str] = &[
    "field",
    "in",
    "min",
    "max",
    "unit",
    "system",
    "prefix",
    "variant",
    "genotype",
    "within_days_after",
    "level",
    "kind",
    "label",
    "role",
];

fn condition(r: &mut Reader<'_>, object: &Map<String, Value>, path: &str) -> Option<Condition> {
    r.conditions += 1;
    for key in object.keys() {
        if !KEYS.contains(&key.as_str()) {
            r.problem(
                &format!("{path}/{key}"),
                "invalid-criteria",
                format!("unknown key `{key}` (a condition has: {})", KEYS.join(", ")),
            );
        }
    }
    let Some(Value::String(field)) = object.get("field") else {
        r.problem(&format!("{path}/field"), "invalid-criteria", "a condition names its `field` (GET /api/v1/fields)");
        return None;
    };
    let applicable = applicable_keys(field);
    for key in object.keys().filter(|k| KEYS.contains(&k.as_str()) && !applicable.contains(&k.as_str())) {
        r.problem(&format!("{path}/{key}"), "invalid-criteria", format!("`{key}` does not apply to this field"));
    }
    let within = object.get("within_days_after").filter(|_| applicable.contains(&"within_days_after"));
    let parsed = match field.as_str() {
        "cohort" => {
            let cohorts = r.cohorts;
            strings(r, object, path, |s| cohorts.iter().any(|c| c == s), "the slug of a cohort").map(Condition::Cohort)
        }
        "site" => {
            let sites = r.sites;
            strings(r, object, path, |s| sites.iter().any(|c| c == s), "the code of a site").map(Condition::Site)
        }
        "sex" => values(r, object, path, Sex::from_code, "M, F or O").map(Condition::Sex),
        "modality" => {
            strings(r, object, path, |_| true, "a modality").map(|v| Condition::SeriesCode(SeriesColumn::Modality, v))
        }
        "body_part" => {
            strings(r, object, path, |_| true, "a body part").map(|v| Condition::SeriesCode(SeriesColumn::BodyPart, v))
        }
        "manufacturer" => strings(r, object, path, |_| true, "a manufacturer")
            .map(|v| Condition::SeriesCode(SeriesColumn::Manufacturer, v)),
        "model" => strings(r, object, path, |_| true, "a model").map(|v| Condition::SeriesCode(SeriesColumn::Model, v)),
        "field_strength" => range(r, object, path, Some("T"), None)
            .map(|(a, b)| Condition::SeriesRange(SeriesColumn::FieldStrength, a, b)),
        "age_at_study" => {
            range(r, object, path, Some("a"), None).map(|(a, b)| Condition::SeriesRange(SeriesColumn::AgeAtStudy, a, b))
        }
        "diagnosis" => diagnosis(r, object, path),
        "genotype" => genotype(r, object, path),
        "annotation" => annotation(r, object, path),
        other => observation(r, object, path, other),
    };
    let parsed = parsed?;
    match within {
        None => Some(parsed),
        Some(within) => after(r, parsed, within, &format!("{path}/within_days_after")),
    }
}

/// The keys a condition on `field` may have (an observation field: `in` when
/// coded, `min`, `max` and `unit` when numeric, as [`observation`] checks).
fn applicable_keys(field: &str) -> &'static [&'static str] {
    match field {
        "cohort" | "site" | "sex" => &["field", "in"],
        "modality" | "body_part" | "manufacturer" | "model" => &["field", "in", "within_days_after"],
        "field_strength" | "age_at_study" => &["field", "min", "max", "unit", "within_days_after"],
        "diagnosis" => &["field", "system", "prefix", "in"],
        "genotype" => &["field", "variant", "genotype"],
        "annotation" => &["field", "level", "kind", "label", "role"],
        _ => &["field", "in", "min", "max", "unit"],
    }
}

/// Whether `text` is a value of an `in` list, a label code or a prefix: 1 to [`MAX_VALUE_CHARS`] characters.
fn short(text: &str) -> bool {
    !text.is_empty() && text.chars().count() <= MAX_VALUE_CHARS
}

fn strings(
    r: &mut Reader<'_>,
    object: &Map<String, Value>,
    path: &str,
    valid: impl Fn(&str) -> bool,
    what: &str,
) -> Option<Vec<String>> {
    values(r, object, path, |s| valid(s).then(|| s.to_owned()), what)
}

/// The `in` list of a field, each value read by `read` (`None`: not one of `what`).
fn values<T>(
    r: &mut Reader<'_>,
    object: &Map<String, Value>,
    path: &str,
    read: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Option<Vec<T>> {
    let at = format!("{path}/in");
    let Some(Value::Array(items)) = object.get("in") else {
        r.problem(&at, "invalid-criteria", format!("this field takes `in`: a list of values, each {what}"));
        return None;
    };
    if items.is_empty() || items.len() > MAX_VALUES {
        r.problem(&at, "invalid-criteria", format!("`in` lists 1 to {MAX_VALUES} values"));
        return None;
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str().filter(|s| short(s)).and_then(&read) {
            Some(value) => out.push(value),
            None => r.problem(&format!("{at}/{i}"), "wrong-type", format!("expected {what}")),
        }
    }
    (out.len() == items.len()).then_some(out)
}

/// `min` / `max` of a numeric field, converted from `unit` into `canonical`.
fn range(
    r: &mut Reader<'_>,
    object: &Map<String, Value>,
    path: &str,
    canonical: Option<&str>,
    molar_mass: Option<f64>,
) -> Option<(Option<f64>, Option<f64>)> {
    let mut bound = |key: &str| -> Result<Option<f64>, ()> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(()),
            Some(_) => {
                r.problem(&format!("{path}/{key}"), "wrong-type", format!("`{key}` is a number"));
                Err(())
            }
        }
    };
    let (min, max) = (bound("min"), bound("max"));
    let (Ok(min), Ok(max)) = (min, max) else { return None };
    if min.is_none() && max.is_none() {
        r.problem(path, "invalid-criteria", "a numeric field takes `min`, `max` or both");
        return None;
    }
    let (min, max) = match (object.get("unit"), canonical) {
        (None | Some(Value::Null), _) => (min, max),
        (Some(Value::String(unit)), Some(canonical)) if unit == canonical => (min, max),
        (Some(Value::String(unit)), Some(canonical)) => {
            let (Some(from), Some(to)) = (Unit::parse(unit), Unit::parse(canonical)) else {
                r.problem(
                    &format!("{path}/unit"),
                    "unit-mismatch",
                    format!("this field is in {canonical}; the unit cannot be converted"),
                );
                return None;
            };
            let convert = |v: Option<f64>| v.map(|v| units::convert(v, from, to, molar_mass)).transpose();
            match (convert(min), convert(max)) {
                (Ok(min), Ok(max)) => (min, max),
                (Err(e), _) | (_, Err(e)) => {
                    r.problem(&format!("{path}/unit"), "unit-mismatch", e.to_string());
                    return None;
                }
            }
        }
        (Some(_), _) => {
            r.problem(&format!("{path}/unit"), "wrong-type", "`unit` is a UCUM unit such as mg/dL");
            return None;
        }
    };
    if let (Some(a), Some(b)) = (min, max)
        && a > b
    {
        r.problem(path, "inverted-range", "`min` is above `max`");
        return None;
    }
    Some((min, max))
}

fn observation(r: &mut Reader<'_>, object: &Map<String, Value>, path: &str, id: &str) -> Option<Condition> {
    let Some(field) = r.dictionary.get(id).cloned() else {
        r.problem(
            &format!("{path}/field"),
            "unknown-field",
            format!("`{id}` is not a field of the data dictionary (GET /api/v1/fields)"),
        );
        return None;
    };
    if field.source != FieldSource::Observation {
        r.problem(&format!("{path}/field"), "unknown-field", format!("`{id}` cannot be queried"));
        return None;
    }
    let numeric = matches!(field.value_type, ValueType::Number | ValueType::Integer);
    let not_applicable: &[&str] = if numeric { &["in"] } else { &["min", "max", "unit"] };
    for key in not_applicable.iter().filter(|k| object.contains_key(**k)) {
        let kind = if numeric { "a numeric" } else { "a coded" };
        r.problem(&format!("{path}/{key}"), "invalid-criteria", format!("`{key}` does not apply to {kind} field"));
    }
    match field.value_type {
        ValueType::Number | ValueType::Integer => range(r, object, path, field.unit.as_deref(), field.molar_mass)
            .map(|(min, max)| Condition::ObservationRange { field: field.id, min, max }),
        _ => strings(r, object, path, |_| true, "a code")
            .map(|values| Condition::ObservationCode { field: field.id, values }),
    }
}

fn diagnosis(r: &mut Reader<'_>, object: &Map<String, Value>, path: &str) -> Option<Condition> {
    let system = match object.get("system") {
        None => None,
        Some(Value::String(s)) => {
            let system = CodeSystem::parse(s);
            if system.is_none() {
                r.problem(&format!("{path}/system"), "invalid-criteria", "`system` is ICD-10 or SNOMED CT");
                return None;
            }
            system
        }
        Some(_) => {
            r.problem(&format!("{path}/system"), "wrong-type", "`system` is a string");
            return None;
        }
    };
    let mut codes = Vec::new();
    let mut prefixes = Vec::new();
    match object.get("prefix") {
        None => {}
        Some(Value::String(p)) => {
            let Some(prefix) = Some(p).filter(|p| short(p)).and_then(|p| CodePrefix::parse(p, system)) else {
                r.problem(
                    &format!("{path}/prefix"),
                    "invalid-criteria",
                    "a code prefix is letters and digits, e.g. E11 or C34.1",
                );
                return None;
            };
            prefixes.push(prefix);
        }
        Some(_) => {
            r.problem(&format!("{path}/prefix"), "wrong-type", "`prefix` is a string");
            return None;
        }
    }
    if let Some(items) = object.get("in") {
        let Some(items) = items.as_array().filter(|items| !items.is_empty() && items.len() <= MAX_VALUES) else {
            r.problem(&format!("{path}/in"), "wrong-type", format!("`in` is a list of 1 to {MAX_VALUES} codes"));
            return None;
        };
        for (i, item) in items.iter().enumerate() {
            let code = item
                .as_str()
                .filter(|c| short(c))
                .and_then(|c| DiagnosisCode::parse(system.unwrap_or_else(|| CodeSystem::of_code(c)), c));
            match code {
                Some(code) => codes.push(code),
                None => r.problem(
                    &format!("{path}/in/{i}"),
                    "invalid-criteria",
                    "not an ICD-10 code or SNOMED CT concept id",
                ),
            }
        }
    }
    if codes.is_empty() && prefixes.is_empty() {
        r.problem(path, "invalid-criteria", "a diagnosis condition takes `prefix` or `in`");
        return None;
    }
    Some(Condition::Diagnosis { system, codes, prefixes })
}

fn genotype(r: &mut Reader<'_>, object: &Map<String, Value>, path: &str) -> Option<Condition> {
    let Some(Value::String(v)) = object.get("variant") else {
        r.problem(&format!("{path}/variant"), "invalid-criteria", "a genotype condition names its `variant`");
        return None;
    };
    let Some(variant) = VariantRef::parse(v) else {
        r.problem(
            &format!("{path}/variant"),
            "invalid-criteria",
            "a variant is an rsID or chrom-pos-ref-alt (e.g. 19-44908684-T-C)",
        );
        return None;
    };
    let alt_counts = match object.get("genotype").and_then(Value::as_str) {
        Some("carrier") => vec![1, 2],
        Some("het") => vec![1],
        Some("hom_alt") => vec![2],
        Some("hom_ref" | "non_carrier") => vec![0],
        _ => {
            r.problem(
                &format!("{path}/genotype"),
                "invalid-criteria",
                "`genotype` is carrier, het, hom_alt or hom_ref",
            );
            return None;
        }
    };
    Some(Condition::Genotype { variant, alt_counts })
}

/// A list of 1 to [`MAX_VALUES`] values under `key` of an annotation condition
/// (none when absent), each read by `read`; `what` names them in the problem.
fn annotation_list<T>(
    r: &mut Reader<'_>,
    object: &Map<String, Value>,
    path: &str,
    key: &str,
    read: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Option<Vec<T>> {
    match object.get(key) {
        None => Some(Vec::new()),
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_VALUES => {
            let values: Option<Vec<T>> = items.iter().map(|v| v.as_str().and_then(&read)).collect();
            if values.is_none() {
                r.problem(&format!("{path}/{key}"), "wrong-type", format!("`{key}` lists {what}"));
            }
            values
        }
        Some(_) => {
            r.problem(&format!("{path}/{key}"), "wrong-type", format!("`{key}` is a list of 1 to {MAX_VALUES} values"));
            None
        }
    }
}

fn annotation(r: &mut Reader<'_>, object: &Map<String, Value>, path: &str) -> Option<Condition> {
    let kinds = annotation_list(
        r,
        object,
        path,
        "kind",
        AnnotationKind::parse,
        &AnnotationKind::ALL.map(AnnotationKind::as_str).join(", "),
    );
    let code = |v: &str| short(v).then(|| v.to_owned());
    let labels = annotation_list(r, object, path, "label", code, "codes");
    let roles = annotation_list(
        r,
        object,
        path,
        "role",
        AnnotatorRole::parse,
        &AnnotatorRole::ALL.map(AnnotatorRole::as_str).join(", "),
    );
    let level = match object.get("level") {
        None => None,
        Some(value) => {
            let Some(level) = value.as_str().and_then(AnnotationLevel::parse) else {
                r.problem(&format!("{path}/level"), "wrong-type", "`level` is low or high");
                return None;
            };
            Some(level)
        }
    };
    Some(Condition::Annotation { level, kinds: kinds?, labels: labels?, roles: roles? })
}

fn after(r: &mut Reader<'_>, series: Condition, within: &Value, path: &str) -> Option<Condition> {
    if !series.on_series() {
        r.problem(
            path,
            "invalid-criteria",
            "`within_days_after` qualifies an imaging condition (modality, body part, scanner, ...)",
        );
        return None;
    }
    let Value::Object(object) = within else {
        r.problem(path, "wrong-type", "`within_days_after` is {\"event\": {...}, \"min\": days, \"max\": days}");
        return None;
    };
    for key in object.keys().filter(|k| !["event", "min", "max"].contains(&k.as_str())) {
        r.problem(&format!("{path}/{key}"), "invalid-criteria", format!("unknown key `{key}` (event, min, max)"));
    }
    let days = |key: &str| object.get(key).and_then(Value::as_i64).and_then(|d| i32::try_from(d).ok());
    let (Some(min_days), Some(max_days)) = (days("min"), days("max")) else {
        r.problem(path, "invalid-criteria", "`within_days_after` needs whole-day `min` and `max`");
        return None;
    };
    if min_days > max_days {
        r.problem(path, "inverted-range", "`min` is above `max`");
        return None;
    }
    let event_path = format!("{path}/event");
    let Some(Value::Object(event)) = object.get("event") else {
        r.problem(&event_path, "invalid-criteria", "`event` is a diagnosis or observation condition");
        return None;
    };
    let event = condition(r, event, &event_path)?;
    if !event.dated() {
        r.problem(&event_path, "invalid-criteria", "the event is a diagnosis or an observation: they have dates");
        return None;
    }
    Some(Condition::After { series: Box::new(series), event: Box::new(event), min_days, max_days })
}

/// Most characters of a value in an `in` list, a label code, a unit or a code prefix.
pub const MAX_VALUE_CHARS: usize = 64;

/// Fields with a condition of their own; any other is an observation field of the dictionary.
const RESERVED_FIELDS: &[&str] = &[
    "cohort",
    "site",
    "sex",
    "modality",
    "body_part",
    "manufacturer",
    "model",
    "field_strength",
    "age_at_study",
    "diagnosis",
    "genotype",
    "annotation",
];

/// Names of the code systems a diagnosis condition takes, as
/// [`CodeSystem::parse`] reads them: case, spaces, hyphens and underscores
/// do not matter.
const SYSTEM_NAMES: &[&str] = &["ICD10", "ICD10CM", "ICD10GM", "ICD", "SNOMED", "SNOMEDCT", "SCT"];

/// A regular expression matching exactly what [`CodeSystem::parse`] accepts.
fn system_pattern() -> String {
    let sep = "[-_ ]*";
    let names: Vec<String> =
        SYSTEM_NAMES
            .iter()
            .map(|name| {
                name.chars()
                    .map(|c| {
                        if c.is_ascii_alphabetic() { format!("[{c}{}]", c.to_ascii_lowercase()) } else { c.to_string() }
                    })
                    .collect::<Vec<_>>()
                    .join(sep)
            })
            .collect();
    format!(r"^\s*{sep}(?:{}){sep}\s*$", names.join("|"))
}

/// The grammar of criteria as JSON Schemas, by name, for the OpenAPI
/// document: `Criteria` and what it refers to (`#/components/schemas/…`).
/// Exact on structure, keys, enums, list and string lengths; values are
/// further checked against their syntax (codes, variants) and the registry
/// (cohort slugs, site codes, the data dictionary's field ids), and nesting
/// and size against [`MAX_DEPTH`] and [`MAX_CONDITIONS`].
#[expect(clippy::too_many_lines, reason = "one table of schemas, read top to bottom")]
pub fn json_schemas() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    let to = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let text = json!({"type": "string", "minLength": 1, "maxLength": MAX_VALUE_CHARS});
    let list = |items: Value| json!({"type": "array", "items": items, "minItems": 1, "maxItems": MAX_VALUES});
    let names = |all: &[&str]| json!({"type": "string", "enum": all});
    let number = json!({"type": ["number", "null"]});
    let unit = json!({"type": ["string", "null"], "maxLength": MAX_VALUE_CHARS, "description": "A UCUM unit, converted to the field's own (e.g. mg/dL for mmol/L)"});
    let days = json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX});
    // A condition: `field` (one name, or any other when `field` is None) and its keys.
    let condition = |description: &str, field: Option<&[&str]>, properties: Value, required: &[&str]| {
        let mut properties = properties;
        properties["field"] = match field {
            Some(names) => json!({"type": "string", "enum": names}),
            None => json!({
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_VALUE_CHARS,
                "pattern": format!("^(?!(?:{})$)", RESERVED_FIELDS.join("|")),
                "description": "A field of the data dictionary (GET /api/v1/fields) other than those with a condition of their own",
            }),
        };
        let mut required = required.to_vec();
        required.insert(0, "field");
        json!({"type": "object", "description": description, "properties": properties, "required": required, "additionalProperties": false})
    };
    // `min`, `max` or both: at least one is a number.
    let bounded = |schema: Value| {
        json!({"allOf": [schema, {"anyOf": [
            {"type": "object", "properties": {"min": {"type": "number"}}, "required": ["min"]},
            {"type": "object", "properties": {"max": {"type": "number"}}, "required": ["max"]},
        ]}], "description": "A numeric condition: `min`, `max` or both (`min` not above `max`)"})
    };
    let operator = |op: &str, inner: Value, description: &str| json!({"type": "object", "description": description, "properties": {op: inner}, "required": [op], "additionalProperties": false});
    let series_codes = ["modality", "body_part", "manufacturer", "model"];
    let series_ranges = ["field_strength", "age_at_study"];
    let kinds: Vec<&str> = AnnotationKind::ALL.map(AnnotationKind::as_str).to_vec();
    let levels: Vec<&str> = AnnotationLevel::ALL.map(AnnotationLevel::as_str).to_vec();
    let roles: Vec<&str> = AnnotatorRole::ALL.map(AnnotatorRole::as_str).to_vec();
    let sexes: Vec<&str> = Sex::ALL.map(Sex::as_str).to_vec();
    vec![
        (
            "Criteria",
            json!({
                "description": format!("A tree of `and` / `or` / `not` over conditions, at most {MAX_DEPTH} levels deep with at most {MAX_CONDITIONS} conditions (counting `within_days_after` events)"),
                "anyOf": [to("CriteriaAnd"), to("CriteriaOr"), to("CriteriaNot"), to("Condition")],
            }),
        ),
        (
            "CriteriaAnd",
            operator("and", json!({"type": "array", "items": to("Criteria"), "minItems": 1}), "Every criterion holds"),
        ),
        (
            "CriteriaOr",
            operator(
                "or",
                json!({"type": "array", "items": to("Criteria"), "minItems": 1}),
                "At least one criterion holds",
            ),
        ),
        ("CriteriaNot", operator("not", to("Criteria"), "The criterion does not hold")),
        (
            "Condition",
            json!({
                "description": "One condition on a field",
                "anyOf": [to("CohortCondition"), to("SiteCondition"), to("SexCondition"), to("SeriesCodeCondition"),
                          to("SeriesRangeCondition"), to("DiagnosisCondition"), to("GenotypeCondition"),
                          to("AnnotationCondition"), to("ObservationRangeCondition"), to("ObservationCodeCondition")],
            }),
        ),
        (
            "CohortCondition",
            condition(
                "Subjects in one of these cohorts (slugs)",
                Some(&["cohort"]),
                json!({"in": list(text.clone())}),
                &["in"],
            ),
        ),
        (
            "SiteCondition",
            condition(
                "Subjects of one of these sites (codes)",
                Some(&["site"]),
                json!({"in": list(text.clone())}),
                &["in"],
            ),
        ),
        (
            "SexCondition",
            condition("Subjects of one of these sexes", Some(&["sex"]), json!({"in": list(names(&sexes))}), &["in"]),
        ),
        (
            "SeriesCodeCondition",
            condition(
                "Imaging series with one of these values",
                Some(&series_codes),
                json!({"in": list(text.clone()), "within_days_after": to("WithinDaysAfter")}),
                &["in"],
            ),
        ),
        (
            "SeriesRangeCondition",
            bounded(condition(
                "Imaging series in a range: field strength in T, age at the study in years (`a`)",
                Some(&series_ranges),
                json!({"min": number.clone(), "max": number.clone(), "unit": unit.clone(), "within_days_after": to("WithinDaysAfter")}),
                &[],
            )),
        ),
        (
            "DiagnosisCondition",
            json!({"allOf": [
                condition(
                    "Subjects with a diagnosis of one of the codes (`in`) or starting with `prefix`",
                    Some(&["diagnosis"]),
                    json!({
                        "system": {"type": "string", "pattern": system_pattern(), "description": "ICD-10 (also ICD10, ICD-10-CM, ICD-10-GM, ICD) or SNOMED CT (also SNOMED, SCT); case, spaces, hyphens and underscores do not matter"},
                        "prefix": {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_CHARS, "description": "A code prefix: letters and digits, e.g. E11 or C34.1"},
                        "in": list(json!({"type": "string", "minLength": 1, "maxLength": MAX_VALUE_CHARS, "description": "An ICD-10 code or a SNOMED CT concept id"})),
                    }),
                    &[],
                ),
                {"anyOf": [{"type": "object", "required": ["prefix"]}, {"type": "object", "required": ["in"]}]},
            ]}),
        ),
        (
            "GenotypeCondition",
            condition(
                "Subjects with a genotype of a variant",
                Some(&["genotype"]),
                json!({
                    "variant": {"type": "string", "minLength": 1, "maxLength": 2100, "description": "An rsID (rs429358) or chrom-pos-ref-alt (19-44908684-T-C)"},
                    "genotype": names(&["carrier", "het", "hom_alt", "hom_ref", "non_carrier"]),
                }),
                &["variant", "genotype"],
            ),
        ),
        (
            "AnnotationCondition",
            condition(
                "Subjects with an annotation of this level, kind, label code and annotator role (each optional)",
                Some(&["annotation"]),
                json!({"level": names(&levels), "kind": list(names(&kinds)), "label": list(text.clone()), "role": list(names(&roles))}),
                &[],
            ),
        ),
        (
            "ObservationRangeCondition",
            bounded(condition(
                "A numeric field of the data dictionary in a range, in its unit or in `unit`",
                None,
                json!({"min": number.clone(), "max": number, "unit": unit}),
                &[],
            )),
        ),
        (
            "ObservationCodeCondition",
            condition(
                "A coded field of the data dictionary with one of these codes",
                None,
                json!({"in": list(text)}),
                &["in"],
            ),
        ),
        (
            "WithinDaysAfter",
            json!({
                "type": "object",
                "description": "The imaging study falls `min` to `max` days after a dated event of the subject: a diagnosis or an observation",
                "properties": {
                    "event": {"anyOf": [to("DiagnosisCondition"), to("ObservationRangeCondition"), to("ObservationCodeCondition")]},
                    "min": days.clone(),
                    "max": days,
                },
                "required": ["event", "min", "max"],
                "additionalProperties": false,
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dictionary::Field;

    fn dictionary() -> Dictionary {
        let field = |id: &str, value_type, unit: Option<&str>, molar_mass| Field {
            id: id.into(),
            title: id.into(),
            description: String::new(),
            category: "laboratory".into(),
            value_type,
            source: FieldSource::Observation,
            unit: unit.map(Into::into),
            coding_system: None,
            code: None,
            molar_mass,
            min_value: None,
            max_value: None,
        };
        Dictionary::new(vec![
            field("glucose", ValueType::Number, Some("mmol/L"), Some(180.156)),
            field("smoking_status", ValueType::Code, None, None),
        ])
    }

    fn known(dictionary: &Dictionary) -> Known<'_> {
        Known { dictionary, cohorts: &[], sites: &[] }
    }

    fn paths(value: &Value) -> Vec<(String, &'static str)> {
        parse(value, known(&dictionary())).unwrap_err().into_iter().map(|p| (p.path.unwrap(), p.code)).collect()
    }

    #[test]
    fn a_full_tree_parses_with_units_converted_to_the_canonical_unit() {
        let tree = json!({"and": [
            {"field": "modality", "in": ["MR"]},
            {"field": "glucose", "min": 126, "unit": "mg/dL"},
            {"not": {"field": "diagnosis", "system": "ICD-10", "prefix": "e119"}},
            {"field": "genotype", "variant": "rs429358", "genotype": "carrier"},
            {"field": "modality", "in": ["CT"], "within_days_after": {"event": {"field": "diagnosis", "prefix": "C34"}, "min": 0, "max": 90}}
        ]});
        let Node::And(items) = parse(&tree, known(&dictionary())).unwrap() else { panic!() };
        let Node::Leaf(Condition::ObservationRange { min: Some(min), max: None, .. }) = &items[1] else {
            panic!("{:?}", items[1])
        };
        assert!((min - 6.994).abs() < 1e-3, "126 mg/dL of glucose is 6.99 mmol/L");
        assert_eq!(
            items[2],
            Node::Not(Box::new(Node::Leaf(Condition::Diagnosis {
                system: Some(CodeSystem::Icd10),
                codes: vec![],
                prefixes: vec![CodePrefix::parse("E11.9", None).unwrap()]
            })))
        );
        assert!(matches!(&items[4], Node::Leaf(Condition::After { min_days: 0, max_days: 90, .. })));
    }

    #[test]
    fn every_problem_is_listed_at_its_path() {
        let tree = json!({"or": [
            {"field": "shoe_size", "min": 40},
            {"field": "glucose", "min": 9, "max": 3},
            {"field": "glucose", "min": 5, "unit": "%"},
            {"field": "sex", "in": ["female"]},
            {"field": "modality", "min": 1},
            {"fiel": "x"},
            {"field": "glucose", "min": "high"},
            {"and": []}
        ]});
        assert_eq!(
            paths(&tree),
            [
                ("/criteria/or/0/field".into(), "unknown-field"),
                ("/criteria/or/1".into(), "inverted-range"),
                ("/criteria/or/2/unit".into(), "unit-mismatch"),
                ("/criteria/or/3/in/0".into(), "wrong-type"),
                ("/criteria/or/4/min".into(), "invalid-criteria"),
                ("/criteria/or/4/in".into(), "invalid-criteria"),
                ("/criteria/or/5/fiel".into(), "invalid-criteria"),
                ("/criteria/or/5/field".into(), "invalid-criteria"),
                ("/criteria/or/6/min".into(), "wrong-type"),
                ("/criteria/or/7/and".into(), "invalid-criteria"),
            ]
        );
    }

    #[test]
    fn nesting_and_size_are_limited() {
        let mut deep = json!({"field": "sex", "in": ["F"]});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert_eq!(paths(&deep)[0].1, "too-complex");
        let wide =
            json!({"or": (0..=MAX_CONDITIONS).map(|_| json!({"field": "sex", "in": ["F"]})).collect::<Vec<_>>()});
        assert_eq!(paths(&wide), [("/criteria".into(), "too-complex")]);
    }
}
