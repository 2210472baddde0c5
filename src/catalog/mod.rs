//! The catalog as uploaders and stewards read it: published studies, series and
//! instances of a cohort, and the quarantine. Only de-identified values live here.

pub mod db;
pub mod preview;
pub mod quarantine;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A study with what it holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StudySummary {
    /// Registry Study Instance UID.
    pub study_uid: String,
    /// Registry pseudonym of the subject.
    pub subject: String,
    /// Site code.
    pub site: String,
    /// Cohort slug.
    pub cohort: String,
    /// Shifted study date.
    pub study_date: Option<NaiveDate>,
    /// Cleaned description.
    pub description: Option<String>,
    /// Age at the study, in years.
    pub age_years: Option<f64>,
    pub modalities: Vec<String>,
    pub series_count: i64,
    pub instance_count: i64,
}

/// A series with its acquisition parameters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeriesSummary {
    pub series_uid: String,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    /// Tesla (MR).
    pub field_strength: Option<f64>,
    /// Millimetres.
    pub slice_thickness: Option<f64>,
    /// Row and column spacing in millimetres.
    pub pixel_spacing: Option<Vec<f64>>,
    pub series_date: Option<NaiveDate>,
    pub series_number: Option<i32>,
    pub description: Option<String>,
    pub instance_count: i64,
}

/// A study and its series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StudyDetail {
    #[serde(flatten)]
    pub study: StudySummary,
    pub series: Vec<SeriesSummary>,
}

/// A stored instance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceSummary {
    pub sop_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub instance_number: Option<i32>,
    pub rows: Option<i32>,
    pub columns: Option<i32>,
    pub frames: Option<i32>,
    /// Size of the de-identified file.
    pub size_bytes: i64,
    /// Hex SHA-256 of the de-identified file.
    pub sha256: String,
}

/// An instance held back for a steward.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuarantinedInstance {
    pub sop_uid: String,
    pub series_uid: String,
    pub study_uid: String,
    pub cohort: String,
    pub modality: Option<String>,
    /// Why: `burned-in-annotation`, `burned-in-text-likely`.
    pub code: Option<String>,
    pub reason: Option<String>,
    pub upload_session_id: Option<Uuid>,
    pub received_at: DateTime<Utc>,
}
