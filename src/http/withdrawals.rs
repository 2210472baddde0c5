//! Withdrawal of consent over REST. A steward withdraws a subject, named by
//! registry pseudonym or by site and local patient ID (pseudonymized at the
//! door, never stored); the subject leaves discovery (fully, or their imaging
//! only) and every project that may hold their data gets a notice listing the
//! subject under that project's own pseudonym, for its PI to acknowledge.
//!
//! The rules live in [`crate::access::withdrawal`]; each handler reads the
//! request, opens the transaction, calls one service function and answers.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::access::standing::InProject;
use crate::access::withdrawal::{self, Named, Notice, Outcome, Scope, Withdrawn};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(withdraw))
        .routes(routes!(project_notices))
        .routes(routes!(open_notices))
        .routes(routes!(acknowledge))
}

/// A withdrawal: the subject by registry pseudonym, or by site and local patient ID.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    /// The registry pseudonym (`sub-…`).
    #[schema(max_length = 128)]
    pub pseudonym: Option<String>,
    /// The site's code, with `patient_id`.
    #[schema(max_length = 64)]
    pub site: Option<String>,
    /// The local patient ID at `site`: pseudonymized here, never stored or logged.
    #[schema(max_length = 64)]
    pub patient_id: Option<String>,
    /// Issuer of Patient ID (0010,0021) of `patient_id`, when its images carry one.
    #[schema(max_length = 64)]
    pub issuer_of_patient_id: Option<String>,
    pub scope: Scope,
}

/// What a withdrawal did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Withdrawal {
    pub pseudonym: String,
    pub scope: Scope,
    /// Projects notified.
    pub notices: usize,
    /// Published series that left discovery.
    pub series_removed: u64,
}

/// Withdraw a subject (stewards and admins).
#[utoipa::path(
    post,
    path = "/withdrawals",
    tag = tags::GRANTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    request_body = WithdrawalRequest,
    responses(
        (status = 201, description = "Withdrawn; notices sent", body = Withdrawal),
        (status = 409, description = "Already withdrawn to that extent", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn withdraw(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<WithdrawalRequest>,
) -> Result<(StatusCode, AppJson<Withdrawal>)> {
    let named = Named {
        pseudonym: request.pseudonym.as_deref(),
        site: request.site.as_deref(),
        patient_id: request.patient_id.as_deref(),
        issuer: request.issuer_of_patient_id.as_deref(),
    };
    let mut tx = state.db.begin().await?;
    let Withdrawn { pseudonym, outcome: Outcome { notices, series_removed } } =
        withdrawal::withdraw_subject(&mut tx, &principal, &state.ingest.key, named, request.scope).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(Withdrawal { pseudonym, scope: request.scope, notices, series_removed })))
}

/// A project's withdrawal notices (members and stewards).
#[utoipa::path(
    get,
    path = "/projects/{id}/withdrawal-notices",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "Notices, newest first", body = [Notice]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn project_notices(State(state): State<AppState>, caller: InProject) -> Result<AppJson<Vec<Notice>>> {
    let mut conn = state.db.acquire().await?;
    Ok(AppJson(withdrawal::project_notices(&mut conn, &caller).await?))
}

/// Which notices to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NoticeFilter {
    /// Only those not acknowledged yet.
    #[serde(default)]
    pub unacknowledged: bool,
}

/// Every project's withdrawal notices, oldest first (stewards and admins).
#[utoipa::path(
    get,
    path = "/withdrawal-notices",
    tag = tags::GRANTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(NoticeFilter),
    responses(
        (status = 200, description = "Notices, oldest first", body = [Notice]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn open_notices(
    State(state): State<AppState>,
    principal: Principal,
    AppQuery(filter): AppQuery<NoticeFilter>,
) -> Result<AppJson<Vec<Notice>>> {
    let mut conn = state.db.acquire().await?;
    Ok(AppJson(withdrawal::open_notices(&mut conn, &principal, filter.unacknowledged).await?))
}

/// Acknowledge a notice once the subject's data is deleted (the PI).
#[utoipa::path(
    post,
    path = "/withdrawal-notices/{id}/acknowledge",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Notice id")),
    responses(
        (status = 200, description = "The acknowledged notice", body = Notice),
        (status = 409, description = "Already acknowledged", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn acknowledge(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Notice>> {
    let mut tx = state.db.begin().await?;
    let notice = withdrawal::acknowledge(&mut tx, &principal, id).await?;
    tx.commit().await?;
    Ok(AppJson(notice))
}
