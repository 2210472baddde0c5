//! Annotations with provenance: coded labels (high level) and geometry or
//! masks (low level) on a subject, study, series or instance. DICOM SEG and
//! RTSTRUCT arriving through imaging ingest are linked to the series they
//! reference at commit (see `link_dicom_annotations` in the migrations).

pub mod db;
pub mod nifti;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// The kind of annotation, as the vocabulary defines it (its schema keeps the name `Kind`).
pub use crate::vocabulary::AnnotationKind as Kind;
use crate::vocabulary::AnnotatorRole;

/// What an annotation is attached to.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(tag = "level", rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// A subject, named by the site's local patient ID (pseudonymized at the door, never stored).
    Subject {
        #[schema(max_length = 64)]
        patient_id: String,
        #[schema(max_length = 64)]
        site: Option<String>,
        /// Issuer of Patient ID (0010,0021), when the subject's images carry one.
        #[schema(max_length = 64)]
        issuer_of_patient_id: Option<String>,
    },
    /// A study, series or instance by its registry UID.
    Study {
        #[schema(max_length = 64)]
        uid: String,
    },
    Series {
        #[schema(max_length = 64)]
        uid: String,
    },
    Instance {
        #[schema(max_length = 64)]
        uid: String,
    },
}

/// A coded meaning.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// `SNOMED CT`, `RadLex` or `local`.
    #[schema(max_length = 64)]
    pub system: String,
    #[schema(max_length = 64, example = "RID5231")]
    pub code: String,
    #[schema(max_length = 200)]
    pub meaning: Option<String>,
}

/// Who or what made the annotation, and how.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// `radiologist`, `resident`, `technologist`, `clinician`, `student`, `algorithm` or `other`.
    #[schema(max_length = 64)]
    pub role: String,
    /// e.g. `neuroradiology`, or an algorithm's training data.
    #[schema(max_length = 200)]
    pub expertise: Option<String>,
    /// Years of experience.
    pub years: Option<i32>,
    /// e.g. `3D Slicer 5.6` or `nnU-Net v2`.
    #[schema(max_length = 200)]
    pub tool: Option<String>,
    /// `manual`, `semi-automatic` or `automatic`.
    #[schema(max_length = 200)]
    pub method: String,
    pub annotated_at: Option<DateTime<Utc>>,
}

/// A new annotation (labels and JSON geometry; masks go with their file).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAnnotation {
    pub target: Target,
    pub kind: Kind,
    pub label: Option<Label>,
    /// `landmark`: `{"points": [[x, y, z], ...]}`; `box`: `{"min": [x, y, z], "max": [x, y, z]}`;
    /// `contour`: `{"points": [[x, y, z], ...], "closed": true}`; in patient coordinates (mm)
    /// or, with `"frame": "pixel"`, in pixel indices.
    #[schema(value_type = Object)]
    pub geometry: Option<Value>,
    pub provenance: Provenance,
}

/// An annotation as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Annotation {
    pub id: Uuid,
    pub target: String,
    pub level: String,
    pub kind: String,
    pub source: String,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub instance_uid: Option<String>,
    pub coding_system: Option<String>,
    pub code: Option<String>,
    pub meaning: Option<String>,
    pub annotator_role: Option<String>,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub size_bytes: Option<i64>,
    pub created_at: DateTime<Utc>,
}

const METHODS: &[&str] = &["manual", "semi-automatic", "automatic"];
const SYSTEMS: &[&str] = &["SNOMED CT", "RadLex", "local"];
/// Most points of one geometry.
pub const MAX_POINTS: usize = 100_000;

fn short(text: &str, max: usize) -> bool {
    !text.trim().is_empty() && text.len() <= max && !text.chars().any(char::is_control)
}

/// Every problem of a new annotation, as messages naming the key.
pub fn check(new: &NewAnnotation, has_file: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let p = &new.provenance;
    if AnnotatorRole::parse(&p.role).is_none() {
        problems
            .push(format!("`provenance.role` is one of: {}", AnnotatorRole::ALL.map(AnnotatorRole::as_str).join(", ")));
    }
    if !METHODS.contains(&p.method.as_str()) {
        problems.push(format!("`provenance.method` is one of: {}", METHODS.join(", ")));
    }
    if p.years.is_some_and(|y| !(0..=80).contains(&y)) {
        problems.push("`provenance.years` is 0 to 80".into());
    }
    for (key, text) in [("expertise", &p.expertise), ("tool", &p.tool)] {
        if text.as_deref().is_some_and(|t| !short(t, 200)) {
            problems.push(format!("`provenance.{key}` is a line of at most 200 characters"));
        }
    }
    if let Some(label) = &new.label {
        if !SYSTEMS.contains(&label.system.as_str()) {
            problems.push(format!("`label.system` is one of: {}", SYSTEMS.join(", ")));
        }
        if !short(&label.code, 64) {
            problems.push("`label.code` is a code of at most 64 characters".into());
        }
        if label.meaning.as_deref().is_some_and(|m| !short(m, 200)) {
            problems.push("`label.meaning` is a line of at most 200 characters".into());
        }
    }
    match (new.kind, &new.geometry, has_file) {
        (Kind::Label, None, false) if new.label.is_some() => {}
        (Kind::Label, ..) => problems.push("a label has a `label` and no geometry or file".into()),
        (Kind::Segmentation, None, true) => {}
        (Kind::Segmentation, ..) => {
            problems.push("a segmentation is uploaded as a NIfTI mask (POST /api/v1/annotations/masks)".into());
        }
        (kind, Some(geometry), false) => problems.extend(check_geometry(kind, geometry)),
        (_, None, _) | (_, _, true) => problems.push("landmarks, boxes and contours carry their `geometry`".into()),
    }
    problems
}

fn point(value: &Value) -> Option<usize> {
    let items = value.as_array()?;
    ((2..=3).contains(&items.len()) && items.iter().all(|v| v.as_f64().is_some_and(f64::is_finite)))
        .then_some(items.len())
}

fn check_geometry(kind: Kind, geometry: &Value) -> Vec<String> {
    let Some(object) = geometry.as_object() else { return vec!["`geometry` is an object".into()] };
    let allowed: &[&str] = match kind {
        Kind::Box => &["min", "max", "frame"],
        Kind::Contour => &["points", "closed", "frame"],
        _ => &["points", "frame"],
    };
    let mut problems: Vec<String> = object
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("`geometry.{k}` is not a key of a {}", kind.as_str()))
        .collect();
    if object.get("frame").is_some_and(|f| !matches!(f.as_str(), Some("patient" | "pixel"))) {
        problems.push("`geometry.frame` is `patient` (mm, the default) or `pixel`".into());
    }
    if kind == Kind::Box {
        match (object.get("min").and_then(point), object.get("max").and_then(point)) {
            (Some(a), Some(b)) if a == b => {
                let (min, max) = (&object["min"], &object["max"]);
                if (0..a).any(|i| min[i].as_f64() > max[i].as_f64()) {
                    problems.push("`geometry.min` is above `geometry.max`".into());
                }
            }
            _ => problems.push("a box has `min` and `max`, points of 2 or 3 numbers each".into()),
        }
        return problems;
    }
    let least = if kind == Kind::Contour { 3 } else { 1 };
    match object.get("points").and_then(Value::as_array) {
        Some(points) if (least..=MAX_POINTS).contains(&points.len()) => {
            let dims: Vec<Option<usize>> = points.iter().map(point).collect();
            if dims.iter().any(Option::is_none) || dims.windows(2).any(|w| w[0] != w[1]) {
                problems.push("`geometry.points` are points of 2 or 3 numbers, all alike".into());
            }
        }
        _ => problems.push(format!("`geometry.points` lists {least} to {MAX_POINTS} points")),
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn new(kind: Kind, geometry: Option<Value>, label: bool) -> NewAnnotation {
        NewAnnotation {
            target: Target::Series { uid: "2.25.1".into() },
            kind,
            label: label.then(|| Label { system: "RadLex".into(), code: "RID5231".into(), meaning: None }),
            geometry,
            provenance: Provenance {
                role: "radiologist".into(),
                expertise: None,
                years: Some(8),
                tool: Some("3D Slicer".into()),
                method: "manual".into(),
                annotated_at: None,
            },
        }
    }

    #[test]
    fn well_formed_annotations_pass() {
        assert!(check(&new(Kind::Label, None, true), false).is_empty());
        assert!(check(&new(Kind::Landmark, Some(json!({"points": [[1, 2, 3]]})), false), false).is_empty());
        assert!(
            check(&new(Kind::Box, Some(json!({"min": [0, 0], "max": [5, 5], "frame": "pixel"})), false), false)
                .is_empty()
        );
        assert!(check(&new(Kind::Segmentation, None, true), true).is_empty());
    }

    #[test]
    fn malformed_annotations_list_every_problem() {
        let mut bad = new(Kind::Contour, Some(json!({"points": [[1, 2, 3], [1, 2]], "color": "red"})), true);
        bad.provenance.role = "intern".into();
        bad.provenance.method = "by hand".into();
        let problems = check(&bad, false);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(!check(&new(Kind::Box, Some(json!({"min": [5, 5], "max": [0, 0]})), false), false).is_empty());
        assert!(!check(&new(Kind::Label, None, false), false).is_empty(), "a label needs its label");
        assert!(!check(&new(Kind::Segmentation, None, false), false).is_empty(), "a segmentation needs its mask");
    }
}
