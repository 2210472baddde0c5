//! What a grant's scope covers, as one rule for every path that answers a
//! project with more than the public sees: exact counts and breakdowns now,
//! subject lists and releases as they read fields. A question is inside a
//! grant when every condition and dimension it uses is:
//!
//! - the registry's structure (`cohort`, `site`): always;
//! - a field of the imaging catalog (modality, body part, scanner, field
//!   strength): always, but a modality it names must be one the grant names
//!   (when it names any); and then a count's studies, series and instances
//!   are those of the granted modalities only ([`Coverage::modalities`]), and
//!   a breakdown must name them at the top level
//!   (`{"field": "modality", "in": [...]}`);
//! - any other dictionary field (sex, age, labs, `diagnosis`, `genotype`, …):
//!   when the scope lists it or its category, and the committee's
//!   `allowed_fields`, if set, list it too;
//! - annotations: when the scope lists the annotation kinds the condition
//!   names (a condition naming none needs every kind).
//!
//! Anything else is refused with `outside-grant`, naming what is outside.

use super::grants::{Conditions, Scope};
use crate::dictionary::Dictionary;
use crate::discovery::criteria::{Condition, Node, SeriesColumn};
use crate::discovery::sql::Dimension;
use crate::error::ApiError;
use crate::vocabulary::AnnotationKind;

/// A grant's scope with the committee's conditions, against the dictionary.
pub struct Coverage<'a> {
    pub scope: &'a Scope,
    pub conditions: &'a Conditions,
    pub dictionary: &'a Dictionary,
}

fn outside(what: &str) -> ApiError {
    ApiError::Refused {
        code: crate::error::Refusal::OutsideGrant,
        message: format!("{what} is outside the project's grant; ask without it for protected counts, or apply for it"),
    }
}

impl Coverage<'_> {
    /// Whether a dictionary field other than the imaging catalog is covered.
    fn field(&self, id: &str) -> Result<(), ApiError> {
        if matches!(id, "cohort" | "site") {
            return Ok(());
        }
        let category = self.dictionary.get(id).map(|f| f.category.as_str());
        if category == Some("imaging") {
            return Ok(());
        }
        let listed = self.scope.fields.iter().any(|f| f == id)
            || category.is_some_and(|c| self.scope.categories.iter().any(|s| s == c));
        let allowed = self.conditions.allowed_fields.as_ref().is_none_or(|a| a.iter().any(|f| f == id));
        if listed && allowed { Ok(()) } else { Err(outside(&format!("the field `{id}`"))) }
    }

    /// Whether a dictionary field is covered: a release's tables carry
    /// exactly the covered fields.
    pub fn covers(&self, id: &str) -> bool {
        self.field(id).is_ok()
    }

    fn condition(&self, condition: &Condition) -> Result<(), ApiError> {
        match condition {
            Condition::Cohort(_) | Condition::Site(_) => Ok(()),
            Condition::Sex(_) => self.field("sex"),
            Condition::SeriesCode(column, values) => {
                if *column == SeriesColumn::Modality
                    && !self.scope.modalities.is_empty()
                    && let Some(v) = values.iter().find(|v| !self.scope.modalities.contains(v))
                {
                    return Err(outside(&format!("the modality `{v}`")));
                }
                Ok(())
            }
            Condition::SeriesRange(column, ..) => match column {
                SeriesColumn::AgeAtStudy => self.field("age_at_study"),
                _ => Ok(()),
            },
            Condition::ObservationRange { field, .. } | Condition::ObservationCode { field, .. } => self.field(field),
            Condition::Diagnosis { .. } => self.field("diagnosis"),
            Condition::Genotype { .. } => self.field("genotype"),
            Condition::Annotation { kinds, .. } => {
                let wanted: &[AnnotationKind] = if kinds.is_empty() { &AnnotationKind::ALL } else { kinds };
                match wanted.iter().find(|k| !self.scope.annotation_kinds.iter().any(|s| s == k.as_str())) {
                    Some(kind) => Err(outside(&format!("annotations of kind `{kind}`"))),
                    None => Ok(()),
                }
            }
            Condition::After { series, event, .. } => {
                self.condition(series)?;
                self.condition(event)
            }
        }
    }

    fn node(&self, node: &Node) -> Result<(), ApiError> {
        match node {
            Node::And(items) | Node::Or(items) => items.iter().try_for_each(|n| self.node(n)),
            Node::Not(inner) => self.node(inner),
            Node::Leaf(condition) => self.condition(condition),
        }
    }

    /// The modalities whose imaging an exact count may include (`None`: all).
    pub fn modalities(&self) -> Option<&[String]> {
        (!self.scope.modalities.is_empty()).then_some(self.scope.modalities.as_slice())
    }

    /// Whether a question (criteria and breakdown dimensions, none for a
    /// count) stays inside the grant.
    pub fn permits(&self, node: Option<&Node>, by: &[Dimension], breakdown: bool) -> Result<(), ApiError> {
        if let Some(node) = node {
            self.node(node)?;
        }
        for dimension in by {
            match dimension {
                Dimension::Sex => self.field("sex")?,
                Dimension::AgeBand => self.field("age_at_study")?,
                _ => {}
            }
        }
        if breakdown && !self.scope.modalities.is_empty() {
            let named = node.and_then(top_level_modalities);
            if named.is_none() {
                return Err(outside(&format!(
                    "imaging of modalities other than {}: name them at the top level, \
                     {{\"field\": \"modality\", \"in\": [...]}}",
                    self.scope.modalities.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// The modalities a question is limited to by a top-level condition.
fn top_level_modalities(node: &Node) -> Option<&Vec<String>> {
    fn leaf(n: &Node) -> Option<&Vec<String>> {
        match n {
            Node::Leaf(Condition::SeriesCode(SeriesColumn::Modality, values)) => Some(values),
            _ => None,
        }
    }
    match node {
        Node::And(items) => items.iter().find_map(leaf),
        other => leaf(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dictionary::{Field, FieldSource, ValueType};

    fn field(id: &str, category: &str) -> Field {
        Field {
            id: id.into(),
            title: id.into(),
            description: String::new(),
            category: category.into(),
            value_type: ValueType::Number,
            source: FieldSource::Observation,
            unit: None,
            coding_system: None,
            code: None,
            molar_mass: None,
            min_value: None,
            max_value: None,
        }
    }

    fn lab(field: &str) -> Node {
        Node::Leaf(Condition::ObservationRange { field: field.into(), min: Some(1.0), max: None })
    }

    #[test]
    fn a_field_is_covered_by_its_id_or_category_and_only_within_the_committees_list() {
        let dictionary = Dictionary::new(vec![
            field("hba1c", "laboratory"),
            field("glucose", "laboratory"),
            field("bmi", "anthropometry"),
            field("modality", "imaging"),
        ]);
        let scope = Scope {
            cohorts: vec!["c".into()],
            fields: vec!["bmi".into()],
            categories: vec!["laboratory".into()],
            modalities: vec![],
            annotation_kinds: vec!["label".into()],
            imaging: false,
        };
        let mut conditions = Conditions::default();
        let coverage = Coverage { scope: &scope, conditions: &conditions, dictionary: &dictionary };
        for ok in ["hba1c", "glucose", "bmi"] {
            assert!(coverage.permits(Some(&lab(ok)), &[], false).is_ok(), "{ok}");
        }
        assert!(coverage.permits(Some(&lab("egfr")), &[], false).is_err());
        let labels = |kinds: &[AnnotationKind]| {
            Node::Leaf(Condition::Annotation { level: None, kinds: kinds.to_vec(), labels: vec![], roles: vec![] })
        };
        assert!(coverage.permits(Some(&labels(&[AnnotationKind::Label])), &[], false).is_ok());
        assert!(coverage.permits(Some(&labels(&[])), &[], false).is_err(), "no kind named: every kind needed");
        assert!(coverage.permits(None, &[Dimension::Sex], false).is_err());

        conditions.allowed_fields = Some(vec!["bmi".into()]);
        let coverage = Coverage { scope: &scope, conditions: &conditions, dictionary: &dictionary };
        assert!(coverage.permits(Some(&lab("bmi")), &[], false).is_ok());
        let ApiError::Refused { code, message } = coverage.permits(Some(&lab("hba1c")), &[], false).unwrap_err() else {
            panic!("a refusal")
        };
        assert_eq!(code, crate::error::Refusal::OutsideGrant);
        assert!(message.contains("`hba1c`"));
    }
}
