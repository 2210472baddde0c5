//! Withdrawal of consent over REST. A steward withdraws a subject, named by
//! registry pseudonym or by site and local patient ID (pseudonymized at the
//! door, never stored); the subject leaves discovery (fully, or their imaging
//! only) and every project that may hold their data gets a notice listing the
//! subject under that project's own pseudonym, for its PI to acknowledge.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::access::standing::InProject;
use crate::access::withdrawal::{self, Outcome, Scope};
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
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
    pub pseudonym: Option<String>,
    /// The site's code, with `patient_id`.
    pub site: Option<String>,
    /// The local patient ID at `site`: pseudonymized here, never stored or logged.
    pub patient_id: Option<String>,
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
    security(("bearer" = [])),
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
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let pseudonym = match (&request.pseudonym, &request.site, &request.patient_id) {
        (Some(p), None, None) => p.trim().to_owned(),
        (None, Some(site), Some(id)) if !id.trim().is_empty() => state.ingest.key.subject(site.trim(), id),
        _ => {
            return Err(ApiError::BadRequest(
                "name the subject by `pseudonym`, or by `site` and `patient_id` (not both)".into(),
            ));
        }
    };
    let mut tx = state.db.begin().await?;
    let found: Option<(Uuid, Option<String>)> =
        sqlx::query_as("select subject_id, withdrawal_scope from subject where pseudonym = $1 for update")
            .bind(&pseudonym)
            .fetch_optional(&mut *tx)
            .await?;
    let (subject, before) = found.ok_or(ApiError::NotFound("subject"))?;
    if request.scope.covered_by(before.as_deref()) {
        return Err(ApiError::Conflict(format!("the subject has already withdrawn ({})", before.unwrap_or_default())));
    }
    let Outcome { notices, series_removed } =
        withdrawal::withdraw(&mut tx, &state.ingest.key, subject, &pseudonym, request.scope).await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "subject.withdraw")
            .target(format!("subject:{pseudonym}"))
            .details(json!({ "scope": request.scope, "notices": notices, "series_removed": series_removed })),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(Withdrawal { pseudonym, scope: request.scope, notices, series_removed })))
}

/// A withdrawal notice to a project.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Notice {
    #[sqlx(rename = "notice_id")]
    pub id: Uuid,
    pub project_id: Uuid,
    /// `full` or `imaging`.
    pub scope: String,
    /// The subject under the project's own pseudonym: delete this subject's data.
    pub project_pseudonym: String,
    pub created_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

const COLUMNS: &str = "notice_id, project_id, scope, project_pseudonym, created_at, acknowledged_at, acknowledged_by";

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
    caller.standing.require_reader("project")?;
    let id = caller.project_id;
    Ok(AppJson(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from withdrawal_notice where project_id = $1 order by created_at desc"
        )))
        .bind(id)
        .fetch_all(&state.db)
        .await?,
    ))
}

/// Which notices to list.
#[derive(Debug, Deserialize, IntoParams)]
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
    security(("bearer" = [])),
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
    principal.require_any(&[Role::Steward, Role::Admin])?;
    Ok(AppJson(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from withdrawal_notice where not $1 or acknowledged_at is null order by created_at"
        )))
        .bind(filter.unacknowledged)
        .fetch_all(&state.db)
        .await?,
    ))
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
    let project: Option<Uuid> = sqlx::query_scalar("select project_id from withdrawal_notice where notice_id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    let project = project.ok_or(ApiError::NotFound("notice"))?;
    crate::access::standing::standing(&state.db, project, &principal)
        .await?
        .require_pi("notice", "only the project's PI acknowledges a withdrawal notice")?;
    let mut tx = state.db.begin().await?;
    let notice: Notice = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update withdrawal_notice set acknowledged_at = now(), acknowledged_by = $2
         where notice_id = $1 and acknowledged_at is null returning {COLUMNS}"
    )))
    .bind(id)
    .bind(&principal.username)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::Conflict("the notice is already acknowledged".into()))?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "withdrawal.acknowledge")
            .target(format!("project:{project}"))
            .details(json!({ "notice": id })),
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(notice))
}
