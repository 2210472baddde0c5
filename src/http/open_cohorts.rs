//! Open cohorts over REST, as organizers curate them: challenge settings,
//! subjects drawn from the registry under their consent, the split, and
//! the checks publication will make.

use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AppJson, AppPath};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::openapi::tags;
use crate::opencohort::curate::{self, Added, OpenCohort, Readiness, Selection, Settings};
use crate::opencohort::splits::{SplitReport, SplitSpec};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(configure, find))
        .routes(routes!(add_subjects))
        .routes(routes!(split))
        .routes(routes!(readiness))
}

/// Set an open cohort's challenge settings (organizers, admins).
///
/// The cohort itself (slug, title, description, licence, citation) is made
/// with `POST /cohorts` and tier `open`; this adds what a challenge needs:
/// the task whose labels are withheld for the test split, an optional
/// click-through agreement, and the smallest split publication allows.
#[utoipa::path(
    put,
    path = "/open-cohorts/{slug}",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = ["organizer"]), ("bearer" = ["admin"])),
    params(("slug" = String, Path, description = "The open cohort's slug")),
    request_body = Settings,
    responses(
        (status = 200, description = "The open cohort as set", body = OpenCohort),
        (status = 404, description = "No cohort of tier `open` has this slug", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn configure(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
    AppJson(settings): AppJson<Settings>,
) -> Result<AppJson<OpenCohort>> {
    let mut tx = state.db.begin().await?;
    let cohort = curate::configure(&mut tx, &principal, &slug, &settings).await?;
    tx.commit().await?;
    Ok(AppJson(cohort))
}

/// An open cohort with its settings, size and split (organizers, admins).
#[utoipa::path(
    get,
    path = "/open-cohorts/{slug}",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = ["organizer"]), ("bearer" = ["admin"])),
    params(("slug" = String, Path, description = "The open cohort's slug")),
    responses(
        (status = 200, description = "The open cohort", body = OpenCohort),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
) -> Result<AppJson<OpenCohort>> {
    Ok(AppJson(curate::find(&mut *state.db.acquire().await?, &principal, &slug).await?))
}

/// Add registry subjects to an open cohort (organizers, admins).
///
/// By pseudonym or by discovery criteria. Only subjects in a cohort whose
/// consent terms permit open release, and who have not withdrawn, may
/// join: one that may not refuses the whole request (`400
/// not-publishable`), naming each such subject and why.
#[utoipa::path(
    post,
    path = "/open-cohorts/{slug}/subjects",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = ["organizer"]), ("bearer" = ["admin"])),
    params(("slug" = String, Path, description = "The open cohort's slug")),
    request_body = Selection,
    responses(
        (status = 200, description = "What joined", body = Added),
        (status = 409, description = "The cohort has no challenge settings yet", body = ErrorBody),
        (status = 400, description = "Some subjects may not be published openly (`not-publishable`); each is named", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn add_subjects(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
    AppJson(selection): AppJson<Selection>,
) -> Result<AppJson<Added>> {
    let mut tx = state.db.begin().await?;
    let added = curate::add_subjects(&mut tx, &state.db, &principal, &slug, &selection).await?;
    tx.commit().await?;
    Ok(AppJson(added))
}

/// How to split.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    pub spec: SplitSpec,
}

/// Split an open cohort at subject level (organizers, admins).
///
/// `random` (a seed, fractions, optional stratification by sex, age band,
/// site or label), `cross_site` (whole sites held out as the test split) or
/// `explicit`. The same seed and subjects always give the same split; no
/// subject, and no study of a subject, is ever in two splits. Replaces the
/// split applied before.
#[utoipa::path(
    put,
    path = "/open-cohorts/{slug}/split",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = ["organizer"]), ("bearer" = ["admin"])),
    params(("slug" = String, Path, description = "The open cohort's slug")),
    request_body = SplitRequest,
    responses(
        (status = 200, description = "Split sizes and composition, held-out sites, exclusions", body = SplitReport),
        (status = 409, description = "No challenge settings or no subjects yet", body = ErrorBody),
        (status = 400, description = "The spec does not apply to these subjects (`invalid-split`)", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn split(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
    AppJson(request): AppJson<SplitRequest>,
) -> Result<AppJson<SplitReport>> {
    let mut tx = state.db.begin().await?;
    let report = curate::split(&mut tx, &principal, &slug, &request.spec).await?;
    tx.commit().await?;
    Ok(AppJson(report))
}

/// Whether an open cohort could be published now, with every reason it
/// could not (organizers, admins).
///
/// Licence and citation, the split (present, covering every subject, no
/// leakage, each split at least the minimum), each subject's consent and
/// standing, and no quarantined instance. Subjects are named by registry
/// pseudonym.
#[utoipa::path(
    get,
    path = "/open-cohorts/{slug}/readiness",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = ["organizer"]), ("bearer" = ["admin"])),
    params(("slug" = String, Path, description = "The open cohort's slug")),
    responses(
        (status = 200, description = "Ready, or the problems", body = Readiness),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn readiness(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
) -> Result<AppJson<Readiness>> {
    let mut tx = state.db.begin().await?;
    sqlx::query!("set transaction isolation level repeatable read").execute(&mut *tx).await?;
    let readiness = curate::readiness(&mut tx, &principal, &slug).await?;
    tx.commit().await?;
    Ok(AppJson(readiness))
}
