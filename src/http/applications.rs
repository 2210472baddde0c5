//! Access applications over REST: a project's PI drafts, checks (feasibility
//! and consent), submits, withdraws and, once approved, activates by accepting
//! the data use agreement. Members and stewards read them; nobody else learns
//! they exist.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::access::applications::{self, Application, CheckResult, VersionDiff};
use crate::access::consent::ConsentTerms;
use crate::access::db::{ApplicationContent, ApplicationRow, Version};
use crate::access::standing::InProject;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_applications, create_application))
        .routes(routes!(get_application, update_application))
        .routes(routes!(get_version))
        .routes(routes!(diff_versions))
        .routes(routes!(check_application))
        .routes(routes!(submit_application))
        .routes(routes!(withdraw_application))
        .routes(routes!(activate_application))
        .routes(routes!(set_consent_terms))
}

/// The application if the caller may see it: a member of its project or a
/// steward. For anyone else it does not exist.
pub(crate) async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> Result<ApplicationRow> {
    applications::visible(&mut *state.db.acquire().await?, principal, id).await
}

/// A project's applications.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationList {
    pub applications: Vec<Application>,
}

/// List a project's applications (members and stewards).
#[utoipa::path(
    get,
    path = "/projects/{id}/applications",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project's applications, newest first", body = ApplicationList),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_applications(State(state): State<AppState>, caller: InProject) -> Result<AppJson<ApplicationList>> {
    let mut conn = state.db.acquire().await?;
    let applications = applications::list(&mut conn, caller.standing, caller.project_id).await?;
    Ok(AppJson(ApplicationList { applications }))
}

/// A new application, or its changed draft.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationRequest {
    pub content: ApplicationContent,
}

/// Start an application of a project (its PI).
#[utoipa::path(
    post,
    path = "/projects/{id}/applications",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    request_body = ApplicationRequest,
    responses(
        (status = 201, description = "The new application, a draft", body = Application),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn create_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(project_id): AppPath<Uuid>,
    AppJson(request): AppJson<ApplicationRequest>,
) -> Result<(StatusCode, AppJson<Application>)> {
    let mut tx = state.db.begin().await?;
    let application = applications::create(&mut tx, &principal, project_id, &request.content).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(application)))
}

/// Get an application with its history (members and stewards).
#[utoipa::path(
    get,
    path = "/applications/{id}",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "The application", body = Application),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn get_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Application>> {
    Ok(AppJson(applications::get(&mut *state.db.acquire().await?, &principal, id).await?))
}

/// Replace the draft (the PI, while a draft or after changes were requested).
#[utoipa::path(
    put,
    path = "/applications/{id}",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = ApplicationRequest,
    responses(
        (status = 200, description = "The application with its new draft", body = Application),
        (status = 403, description = "Not editable in its state, or not the PI", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn update_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<ApplicationRequest>,
) -> Result<AppJson<Application>> {
    let mut tx = state.db.begin().await?;
    let application = applications::update(&mut tx, &principal, id, &request.content).await?;
    tx.commit().await?;
    Ok(AppJson(application))
}

/// Get one submitted version whole (members and stewards).
#[utoipa::path(
    get,
    path = "/applications/{id}/versions/{version}",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Application id"),
        ("version" = i32, Path, description = "Version number, from 1"),
    ),
    responses(
        (status = 200, description = "The version as submitted", body = Version),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn get_version(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((id, version)): AppPath<(Uuid, i32)>,
) -> Result<AppJson<Version>> {
    Ok(AppJson(applications::version(&mut *state.db.acquire().await?, &principal, id, version).await?))
}

/// Which versions to compare.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The earlier version (default: the one before `to`; 0: nothing, so
    /// every field of `to` shows as new).
    pub from: Option<i32>,
    /// The later version (default: the latest submitted).
    pub to: Option<i32>,
}

/// Compare two submitted versions, field by field (members and stewards).
#[utoipa::path(
    get,
    path = "/applications/{id}/diff",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id"), DiffQuery),
    responses(
        (status = 200, description = "The changes from `from` to `to`", body = VersionDiff),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn diff_versions(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<DiffQuery>,
) -> Result<AppJson<VersionDiff>> {
    let mut conn = state.db.acquire().await?;
    Ok(AppJson(applications::diff(&mut conn, &principal, id, query.from, query.to).await?))
}

/// Feasibility and consent check of the draft (members and stewards).
///
/// Feasibility counts are discovery queries of the caller: they pass the same
/// disclosure control and count against the daily budget.
#[utoipa::path(
    get,
    path = "/applications/{id}/check",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "Per cohort: consent verdict with its rules, feasibility counts; blocking problems", body = CheckResult),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn check_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<CheckResult>> {
    Ok(AppJson(applications::check_draft(&state.db, &state.discovery, &state.config, &principal, id).await?))
}

/// Submit the draft (the PI): a draft goes to the committee, an application
/// with changes requested goes back under review. Every submission keeps the
/// content whole as a new version. Applications to `registered` cohorts whose
/// stated use their consent terms permit exactly are approved at once where the
/// cohorts allow it.
#[utoipa::path(
    post,
    path = "/applications/{id}/submit",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "The submitted application", body = Application),
        (status = 400, description = "Incomplete or not permitted by consent: every problem listed (`invalid-application`)", body = ErrorBody),
        (status = 403, description = "Not the PI, or not submittable in its state (`invalid-transition`)", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn submit_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Application>> {
    // The check runs before the transaction: its feasibility counts commit on their own.
    let checked = applications::check_submission(&state.db, &state.discovery, &state.config, &principal, id).await?;
    let mut tx = state.db.begin().await?;
    let application =
        applications::submit(&mut tx, &principal, &state.config.access, &state.ingest.key, checked).await?;
    tx.commit().await?;
    Ok(AppJson(application))
}

/// Why an application is withdrawn.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {
    #[schema(max_length = 2000)]
    pub reason: Option<String>,
}

/// Withdraw the application before a decision (the PI).
#[utoipa::path(
    post,
    path = "/applications/{id}/withdraw",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = WithdrawRequest,
    responses(
        (status = 200, description = "The withdrawn application", body = Application),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn withdraw_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<WithdrawRequest>,
) -> Result<AppJson<Application>> {
    let mut tx = state.db.begin().await?;
    let application = applications::withdraw(&mut tx, &principal, id, request.reason.as_deref()).await?;
    tx.commit().await?;
    Ok(AppJson(application))
}

/// The PI's acceptance of the data use agreement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// The exact version of the agreement accepted; must be the one in force (`GET /dua`).
    #[schema(max_length = 64)]
    pub dua_version: String,
    /// The SHA-256 of the text read, as `GET /dua` gives it: when present it
    /// must match, proving the text accepted is the text on record.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub dua_sha256: Option<String>,
}

/// Accept the data use agreement (the PI): the approved application becomes
/// active and its grant takes effect.
#[utoipa::path(
    post,
    path = "/applications/{id}/activate",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = ActivateRequest,
    responses(
        (status = 200, description = "The active application", body = Application),
        (status = 409, description = "Not the current agreement version", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn activate_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<ActivateRequest>,
) -> Result<AppJson<Application>> {
    let mut tx = state.db.begin().await?;
    let application =
        applications::activate(&mut tx, &principal, id, &request.dua_version, request.dua_sha256.as_deref()).await?;
    tx.commit().await?;
    Ok(AppJson(application))
}

/// A cohort's consent terms and auto-eligibility.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentTermsRequest {
    pub terms: ConsentTerms,
    /// Approve by rule applications to this (registered) cohort whose use the terms permit exactly.
    #[serde(default)]
    pub auto_approve: bool,
}

/// Set a cohort's consent terms as DUO codes (stewards and admins).
#[utoipa::path(
    put,
    path = "/cohorts/{slug}/consent",
    tag = tags::APPLICATIONS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(("slug" = String, Path, description = "Cohort slug")),
    request_body = ConsentTermsRequest,
    responses(
        (status = 200, description = "The terms as stored", body = ConsentTermsRequest),
        (status = 400, description = "Invalid terms: every problem listed", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn set_consent_terms(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
    AppJson(request): AppJson<ConsentTermsRequest>,
) -> Result<AppJson<ConsentTermsRequest>> {
    let mut tx = state.db.begin().await?;
    applications::set_consent_terms(&mut tx, &principal, &slug, &request.terms, request.auto_approve).await?;
    tx.commit().await?;
    Ok(AppJson(request))
}
