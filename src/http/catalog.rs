//! Reading the catalog (uploaders, stewards, admins) and deciding on the quarantine (stewards, admins).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::catalog::{InstanceSummary, QuarantinedInstance, StudyDetail, StudySummary, db, quarantine};
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_cohort_studies))
        .routes(routes!(find_study))
        .routes(routes!(list_series_instances))
        .routes(routes!(list_quarantine))
        .routes(routes!(release_quarantined))
        .routes(routes!(delete_quarantined))
}

const READERS: &[Role] = &[Role::Uploader, Role::Steward, Role::Admin];

/// Paging of study lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StudyListQuery {
    /// Continue after this study UID (from `next_after`).
    pub after: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
}

/// A page of studies.
#[derive(Debug, Serialize, ToSchema)]
pub struct StudyListResponse {
    pub studies: Vec<StudySummary>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<String>,
}

/// Instances of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceListResponse {
    pub instances: Vec<InstanceSummary>,
}

/// The quarantine.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineListResponse {
    pub instances: Vec<QuarantinedInstance>,
}

/// The outcome of a release.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseResponse {
    pub sop_uid: String,
    /// `published`, or `staged` when its upload session is not committed yet.
    pub status: String,
}

/// List the published studies of a cohort.
#[utoipa::path(
    get,
    path = "/cohorts/{slug}/studies",
    tag = tags::CATALOG,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"]), ("bearer" = ["uploader"])),
    params(("slug" = String, Path, description = "Cohort slug"), StudyListQuery),
    responses(
        (status = 200, description = "Studies with published instances", body = StudyListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_cohort_studies(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
    AppQuery(query): AppQuery<StudyListQuery>,
) -> Result<AppJson<StudyListResponse>> {
    principal.require_any(READERS)?;
    crate::registry::db::get_cohort_by_slug(&state.db, &slug).await?.ok_or(ApiError::NotFound("cohort"))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidQuery("`limit` must be between 1 and 1000".into()));
    }
    let mut studies = db::list_studies(&state.db, &slug, query.after.as_deref(), limit + 1).await?;
    let next_after = if studies.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        studies.pop();
        studies.last().map(|s| s.study_uid.clone())
    } else {
        None
    };
    Ok(AppJson(StudyListResponse { studies, next_after }))
}

/// Get a study and its series.
#[utoipa::path(
    get,
    path = "/studies/{study_uid}",
    tag = tags::CATALOG,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"]), ("bearer" = ["uploader"])),
    params(("study_uid" = String, Path, description = "Registry Study Instance UID")),
    responses(
        (status = 200, description = "The study", body = StudyDetail),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_study(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(study_uid): AppPath<String>,
) -> Result<AppJson<StudyDetail>> {
    principal.require_any(READERS)?;
    let mut conn = state.db.acquire().await?;
    let study = db::get_study(&mut conn, &study_uid).await?.ok_or(ApiError::NotFound("study"))?;
    let series = db::list_series(&mut conn, &study_uid).await?;
    Ok(AppJson(StudyDetail { study, series }))
}

/// List the instances of a series.
#[utoipa::path(
    get,
    path = "/series/{series_uid}/instances",
    tag = tags::CATALOG,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"]), ("bearer" = ["uploader"])),
    params(("series_uid" = String, Path, description = "Registry Series Instance UID")),
    responses(
        (status = 200, description = "Published instances", body = InstanceListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_series_instances(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(series_uid): AppPath<String>,
) -> Result<AppJson<InstanceListResponse>> {
    principal.require_any(READERS)?;
    let instances = db::list_instances(&state.db, &series_uid).await?;
    if instances.is_empty() {
        return Err(ApiError::NotFound("series"));
    }
    Ok(AppJson(InstanceListResponse { instances }))
}

/// List instances held in quarantine.
#[utoipa::path(
    get,
    path = "/quarantine",
    tag = tags::CATALOG,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    responses(
        (status = 200, description = "Quarantined instances, oldest first", body = QuarantineListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_quarantine(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<AppJson<QuarantineListResponse>> {
    Ok(AppJson(QuarantineListResponse { instances: quarantine::list(&state.db, &principal).await? }))
}

/// Release a quarantined instance after checking it carries no burned-in identifiers.
#[utoipa::path(
    post,
    path = "/quarantine/{sop_uid}/release",
    tag = tags::CATALOG,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(("sop_uid" = String, Path, description = "Registry SOP Instance UID")),
    responses(
        (status = 200, description = "Released", body = ReleaseResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn release_quarantined(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(sop_uid): AppPath<String>,
) -> Result<AppJson<ReleaseResponse>> {
    let mut tx = state.db.begin().await?;
    let status = quarantine::release(&mut tx, &principal, &sop_uid).await?;
    tx.commit().await?;
    Ok(AppJson(ReleaseResponse { sop_uid, status }))
}

/// Delete a quarantined instance for good.
#[utoipa::path(
    delete,
    path = "/quarantine/{sop_uid}",
    tag = tags::CATALOG,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(("sop_uid" = String, Path, description = "Registry SOP Instance UID")),
    responses(
        (status = 204, description = "Deleted"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn delete_quarantined(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(sop_uid): AppPath<String>,
) -> Result<StatusCode> {
    let mut tx = state.db.begin().await?;
    let key = quarantine::delete(&mut tx, &principal, &sop_uid).await?;
    tx.commit().await?;
    quarantine::delete_object(state.store.as_ref(), key).await;
    Ok(StatusCode::NO_CONTENT)
}
