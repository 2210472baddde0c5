//! The annotations of a release: exactly the grant's annotation kinds, for
//! the released subjects, in the project's pseudonyms, with their provenance.
//!
//! What is in scope ([`plan`]):
//!
//! - an annotation of a kind the grant's scope lists (`annotation_kinds`;
//!   none listed, none released), of a subject the release holds, and, when
//!   it annotates a study, series or instance, of a study in one of the
//!   scope's cohorts (a subject in two cohorts brings only the granted
//!   cohort's annotations);
//! - if it is **imaging-derived** (on a study, series or instance, or carrying
//!   geometry, a mask or a DICOM SEG/RTSTRUCT), only when the release holds
//!   imaging (the grant covers it and its conditions allow downloading it),
//!   the subject kept their imaging, and what it annotates is of a granted
//!   modality (its series, or some series of its study); a label on the
//!   subject itself needs none of that.
//!
//! What is written:
//!
//! - `annotations/index.json`: every annotation in scope, with its subject
//!   (`psub-…`), project UIDs of what it annotates, its coded label, its
//!   file, and its provenance as stored: annotator role, expertise, years,
//!   tool, method and date. Not written: the registry's annotation id (each
//!   annotation gets a project id, the same in every release of the project),
//!   who recorded it in the registry (a staff member's username, which the
//!   grant does not cover) and when;
//! - `annotations/geometry/{id}.json`: landmarks, boxes and contours, the
//!   geometry's known keys only, with the same references;
//! - `annotations/masks/{id}.nii.gz`: NIfTI masks, sanitized again on the way
//!   out (every header text field blank, no extension; see
//!   [`crate::annotations::nifti`]), named by the project id;
//! - `annotations/dicom/{study}/{series}/{sop}.dcm`: DICOM SEG and RTSTRUCT,
//!   re-pseudonymized like the images ([`super::dicom::for_project`]), so
//!   their references point at the released images. They are not among the
//!   released images under `dicom/`: they are released as annotations, and
//!   only as far as the grant's annotation kinds go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::dicom::{ProjectPseudonyms, for_project};
use super::manifest;
use super::tables::TableFile;
use crate::access::grants::Scope;
use crate::annotations::nifti;
use crate::storage::Store;

/// SOP classes released as annotations rather than images: Segmentation
/// Storage and RT Structure Set Storage (as `link_dicom_annotations` reads them).
pub const DICOM_CLASSES: [&str; 2] = ["1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.481.3"];

/// The annotations index of a release.
pub const INDEX: &str = "annotations/index.json";

/// Geometry keys a stored payload may hold (as [`crate::annotations::check`] allows them).
const GEOMETRY_KEYS: &[&str] = &["points", "min", "max", "closed", "frame"];

/// An annotation as a release lists it.
#[derive(Debug, Clone, Serialize)]
struct Listed {
    /// The project's id of the annotation.
    id: Uuid,
    /// The project's subject ID.
    subject: String,
    kind: String,
    level: String,
    /// `dicom-seg`, `dicom-rtstruct`, `nifti` or `json`.
    source: String,
    /// `subject`, `study`, `series` or `instance`.
    target: String,
    study_uid: Option<String>,
    series_uid: Option<String>,
    instance_uid: Option<String>,
    label: Option<Label>,
    /// The file holding it in the release, if any.
    file: Option<String>,
    provenance: Provenance,
}

#[derive(Debug, Clone, Serialize)]
struct Label {
    system: String,
    code: String,
    meaning: Option<String>,
}

/// Who or what made an annotation, and how, as the uploader stated it; for
/// DICOM SEG and RTSTRUCT, the file's own attributes say it.
#[derive(Debug, Clone, Serialize)]
struct Provenance {
    role: Option<String>,
    expertise: Option<String>,
    years: Option<i32>,
    tool: Option<String>,
    method: Option<String>,
    annotated_at: Option<DateTime<Utc>>,
}

/// How one file of the annotations is made from the store.
#[derive(Debug, Clone)]
enum Source {
    /// A stored SEG or RTSTRUCT instance.
    Dicom { key: String },
    /// A stored NIfTI mask.
    Mask { key: String },
    /// A stored geometry, listed as `record`.
    Geometry { key: String, record: Box<Listed> },
}

/// A file of the annotations still to be read from the store.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Relative to the release's prefix.
    pub path: String,
    source: Source,
}

/// The annotations a release holds: its index, and the files to read.
#[derive(Debug)]
pub struct Annotations {
    index: Option<TableFile>,
    pending: Vec<Pending>,
    project: Arc<ProjectPseudonyms>,
    mask_limit: usize,
    /// The folder of the release they go in (`""`, or `train/` and the like for an open cohort's split).
    folder: String,
}

/// An annotation row, with registry identifiers that never leave this module.
struct Row {
    annotation_id: Uuid,
    pseudonym: String,
    target: String,
    level: String,
    kind: String,
    source: String,
    study_uid: Option<String>,
    series_uid: Option<String>,
    instance_uid: Option<String>,
    coding_system: Option<String>,
    code: Option<String>,
    meaning: Option<String>,
    object_key: Option<String>,
    annotator_role: Option<String>,
    annotator_expertise: Option<String>,
    annotator_years: Option<i32>,
    tool: Option<String>,
    method: Option<String>,
    annotated_at: Option<DateTime<Utc>>,
    source_key: Option<String>,
    source_study: Option<String>,
    source_series: Option<String>,
    source_sop: Option<String>,
    /// Whether what it annotates is of a granted modality (or none is named).
    granted_modality: bool,
}

/// The annotations in scope of a release: `subjects` maps each released
/// subject's registry pseudonym to whether their imaging is released too, and
/// `imaging` says whether the release holds imaging at all.
pub async fn plan(
    db: &PgPool,
    scope: &Scope,
    imaging: bool,
    subjects: &BTreeMap<String, bool>,
    project: Arc<ProjectPseudonyms>,
    mask_limit: usize,
    folder: &str,
) -> anyhow::Result<Annotations> {
    let kinds = &scope.annotation_kinds;
    let mut out = Annotations { index: None, pending: Vec::new(), project, mask_limit, folder: folder.to_owned() };
    if kinds.is_empty() || subjects.is_empty() {
        return Ok(out);
    }
    let registry: Vec<String> = subjects.keys().cloned().collect();
    let rows = sqlx::query_as!(
        Row,
        r#"select a.annotation_id, su.pseudonym, a.target, a.level, a.kind, a.source,
                  st.study_uid as "study_uid?", se.series_uid as "series_uid?", i.sop_uid as "instance_uid?",
                  a.coding_system, a.code, a.meaning, a.object_key, a.annotator_role, a.annotator_expertise,
                  a.annotator_years, a.tool, a.method, a.annotated_at,
                  src.object_key as "source_key?", src_st.study_uid as "source_study?",
                  src_se.series_uid as "source_series?", src.sop_uid as "source_sop?",
                  coalesce(cardinality($3::text[]) = 0
                           or se.modality = any($3)
                           or (a.series_id is null and exists (select 1 from series x
                                                               where x.study_id = a.study_id and x.modality = any($3))),
                           false) as "granted_modality!"
           from annotation a
           join subject su on su.subject_id = a.subject_id
           left join study st on st.study_id = a.study_id
           left join series se on se.series_id = a.series_id
           left join instance i on i.instance_id = a.instance_id
           left join instance src on src.instance_id = a.source_instance_id
           left join series src_se on src_se.series_id = src.series_id
           left join study src_st on src_st.study_id = src_se.study_id
           where su.pseudonym = any($1) and a.kind = any($2)
             and (a.target = 'subject'
                  or exists (select 1 from study x join cohort c on c.cohort_id = x.cohort_id
                             where x.study_id = coalesce(a.study_id, se.study_id) and c.slug = any($4)))
             and (a.instance_id is null or i.status = 'published')
             and (a.source_instance_id is null or src.status = 'published')
           order by su.pseudonym, a.created_at, a.annotation_id"#,
        &registry,
        kinds,
        &scope.modalities,
        &scope.cohorts
    )
    .fetch_all(db)
    .await?;

    let mut listed = Vec::new();
    let mut dicom_paths = BTreeSet::new();
    for row in rows {
        let derived = row.target != "subject" || row.object_key.is_some() || row.source_key.is_some();
        let imaging_kept = subjects.get(&row.pseudonym).copied().unwrap_or(false);
        if derived && !(imaging && imaging_kept && row.granted_modality) {
            continue;
        }
        let mut record = out.listed(&row);
        match (&row.source_key, &row.object_key) {
            (Some(key), _) => {
                let (study, series, sop) = (
                    row.source_study.as_deref().context("a SEG or RTSTRUCT without its study")?,
                    row.source_series.as_deref().context("a SEG or RTSTRUCT without its series")?,
                    row.source_sop.as_deref().context("a SEG or RTSTRUCT without its SOP Instance UID")?,
                );
                let p = &out.project;
                let path = format!("{folder}annotations/dicom/{}/{}/{}.dcm", p.uid(study), p.uid(series), p.uid(sop));
                // One SEG referencing images of several series is one annotation per series, and one file.
                if dicom_paths.insert(path.clone()) {
                    out.pending.push(Pending { path: path.clone(), source: Source::Dicom { key: key.clone() } });
                }
                record.file = Some(path);
            }
            (None, Some(key)) if row.source == "nifti" => {
                let path = format!("{folder}annotations/masks/{}.nii.gz", record.id);
                out.pending.push(Pending { path: path.clone(), source: Source::Mask { key: key.clone() } });
                record.file = Some(path);
            }
            (None, Some(key)) => {
                let path = format!("{folder}annotations/geometry/{}.json", record.id);
                record.file = Some(path.clone());
                let source = Source::Geometry { key: key.clone(), record: Box::new(record.clone()) };
                out.pending.push(Pending { path, source });
            }
            (None, None) => {}
        }
        listed.push(record);
    }
    if !listed.is_empty() {
        let bytes = serde_json::to_vec_pretty(&serde_json::json!({ "annotations": listed }))?;
        out.index = Some(TableFile {
            path: format!("{folder}{INDEX}"),
            media_type: manifest::media_type(INDEX),
            bytes: bytes.into(),
        });
    }
    Ok(out)
}

impl Annotations {
    /// How many files the annotations add to the release.
    pub fn len(&self) -> usize {
        self.pending.len() + usize::from(self.index.is_some())
    }

    /// Whether the release holds no annotation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `annotations/index.json`, when any annotation is in scope.
    pub fn index(&self) -> Option<TableFile> {
        self.index.clone()
    }

    /// The files to read from the store, one by one ([`Annotations::read`]).
    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// A file of the annotations as the release holds it: read from the store
    /// and re-pseudonymized, sanitized or rewritten. Fails closed.
    pub async fn read(&self, store: &Store, file: &Pending) -> anyhow::Result<TableFile> {
        let key = match &file.source {
            Source::Dicom { key } | Source::Mask { key } | Source::Geometry { key, .. } => key,
        };
        let stored = store.get(&Path::from(key.as_str())).await?.bytes().await?;
        let bytes = match &file.source {
            Source::Dicom { .. } => {
                let project = self.project.clone();
                let released = tokio::task::spawn_blocking(move || for_project(&stored, &project))
                    .await
                    .context("re-pseudonymizing an annotation panicked")?
                    .map_err(|e| anyhow::anyhow!("a SEG or RTSTRUCT could not be released ({}): {e}", e.code))?;
                if format!("{}annotations/{}", self.folder, released.path()) != file.path {
                    anyhow::bail!("a released SEG or RTSTRUCT's UIDs are not its catalog's");
                }
                Bytes::from(released.to_vec())
            }
            Source::Mask { .. } => {
                let limit = self.mask_limit;
                let mask = tokio::task::spawn_blocking(move || nifti::sanitize(&stored, limit))
                    .await
                    .context("sanitizing a mask panicked")?
                    .map_err(|e| anyhow::anyhow!("a stored mask is not an acceptable mask: {}", e.0))?;
                Bytes::from(mask.bytes)
            }
            Source::Geometry { record, .. } => {
                let geometry = geometry(&stored).context("a stored geometry is not a geometry object")?;
                let mut document = serde_json::to_value(record.as_ref())?;
                document["geometry"] = geometry;
                Bytes::from(serde_json::to_vec_pretty(&document)?)
            }
        };
        Ok(TableFile { path: file.path.clone(), media_type: manifest::media_type(&file.path), bytes })
    }

    /// The release's record of `row`, in the project's pseudonyms.
    fn listed(&self, row: &Row) -> Listed {
        let p = &self.project;
        let uid = |u: &Option<String>| u.as_deref().map(|u| p.uid(u));
        Listed {
            id: self.id(row.annotation_id),
            subject: p.subject(&row.pseudonym),
            kind: row.kind.clone(),
            level: row.level.clone(),
            source: row.source.clone(),
            target: row.target.clone(),
            study_uid: uid(&row.study_uid),
            series_uid: uid(&row.series_uid),
            instance_uid: uid(&row.instance_uid),
            label: row.code.as_ref().map(|code| Label {
                system: row.coding_system.clone().unwrap_or_default(),
                code: code.clone(),
                meaning: row.meaning.clone(),
            }),
            file: None,
            provenance: Provenance {
                role: row.annotator_role.clone(),
                expertise: row.annotator_expertise.clone(),
                years: row.annotator_years,
                tool: row.tool.clone(),
                method: row.method.clone(),
                annotated_at: row.annotated_at,
            },
        }
    }

    /// The project's id of an annotation: a UUID keyed by the project key,
    /// the same in every release of the project, unrelated across projects.
    fn id(&self, annotation_id: Uuid) -> Uuid {
        let uid = self.project.uid(&format!("annotation:{annotation_id}"));
        Uuid::from_u128(uid.trim_start_matches("2.25.").parse().unwrap_or_default())
    }
}

/// A stored geometry with its known keys only.
fn geometry(stored: &[u8]) -> Option<Value> {
    let Value::Object(object) = serde_json::from_slice(stored).ok()? else { return None };
    let kept: Map<String, Value> = object.into_iter().filter(|(k, _)| GEOMETRY_KEYS.contains(&k.as_str())).collect();
    Some(Value::Object(kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_geometry_keeps_its_known_keys_only() {
        let kept = geometry(br#"{"points": [[1, 2, 3]], "frame": "pixel", "note": "DOE^JANE"}"#).unwrap();
        assert_eq!(kept, serde_json::json!({"points": [[1, 2, 3]], "frame": "pixel"}));
        assert!(geometry(b"[1, 2]").is_none() && geometry(b"not json").is_none());
    }

    #[test]
    fn annotation_ids_are_the_projects_own() {
        let annotations = |key: u8| Annotations {
            index: None,
            pending: Vec::new(),
            project: Arc::new(ProjectPseudonyms::new(&[key; 32])),
            mask_limit: 0,
            folder: String::new(),
        };
        let registry = Uuid::new_v4();
        let (a, b) = (annotations(1), annotations(2));
        assert_eq!(a.id(registry), a.id(registry), "the same in every release of the project");
        assert_ne!(a.id(registry), b.id(registry), "unrelated across projects");
        assert_ne!(a.id(registry), registry);
        assert_eq!(a.id(registry).get_version_num(), 8);
    }
}
