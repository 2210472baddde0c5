//! What comes with a grant, over REST: the fee schedule and the settlement of
//! fees, the project's obligations and their fulfilment, renewals asked for
//! with a progress report, closing a project (which destroys its key), and
//! the notifications people must act on.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::applications::visible;
use super::extract::{AppJson, AppPath, AppQuery};
use crate::access::closure;
pub use crate::access::closure::Closed;
use crate::access::duties::{self, Fee, Obligation};
pub use crate::access::duties::{Notification, TierFees};
use crate::access::renewals;
pub use crate::access::renewals::{Renewal, RenewalItem};
use crate::access::standing::InProject;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::openapi::tags;
use crate::registry::Tier;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(fee_schedule))
        .routes(routes!(set_fee))
        .routes(routes!(application_fees))
        .routes(routes!(settle_fee))
        .routes(routes!(project_obligations))
        .routes(routes!(all_obligations))
        .routes(routes!(fulfil))
        .routes(routes!(request_renewal))
        .routes(routes!(decide_renewal))
        .routes(routes!(list_renewals))
        .routes(routes!(close_project))
        .routes(routes!(my_notifications))
        .routes(routes!(read_notification))
}

/// The fee schedule, per cohort tier (anyone signed in).
#[utoipa::path(
    get,
    path = "/fees",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Fees per tier", body = [TierFees]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn fee_schedule(State(state): State<AppState>, _principal: Principal) -> Result<AppJson<Vec<TierFees>>> {
    Ok(AppJson(duties::fee_schedule(&state.db).await?))
}

/// Set the fees of a tier (admins).
#[utoipa::path(
    put,
    path = "/fees/{tier}",
    tag = tags::GRANTS,
    security(("bearer" = ["admin"])),
    params(("tier" = Tier, Path, description = "Cohort tier")),
    request_body = TierFees,
    responses(
        (status = 200, description = "The tier's fees", body = TierFees),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn set_fee(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(tier): AppPath<Tier>,
    AppJson(request): AppJson<TierFees>,
) -> Result<AppJson<TierFees>> {
    let mut tx = state.db.begin().await?;
    let saved = duties::set_fees(&mut tx, &principal, tier, &request).await?;
    tx.commit().await?;
    Ok(AppJson(saved))
}

/// Fees of an application (members and stewards).
#[utoipa::path(
    get,
    path = "/applications/{id}/fees",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "Fees owed or settled", body = [Fee]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn application_fees(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Vec<Fee>>> {
    visible(&state, &principal, id).await?;
    Ok(AppJson(duties::fees(&state.db, id).await?))
}

/// How a fee was settled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settlement {
    /// `paid` or `waived`.
    #[schema(max_length = 64)]
    pub settlement: String,
    /// The payment reference, or why it is waived (student, low-income country, ...).
    #[schema(max_length = 500)]
    pub note: String,
}

/// Record that a fee is paid or waived (stewards and admins).
#[utoipa::path(
    post,
    path = "/fees/{id}/settlement",
    tag = tags::GRANTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(("id" = Uuid, Path, description = "Fee id")),
    request_body = Settlement,
    responses(
        (status = 200, description = "The settled fee", body = Fee),
        (status = 409, description = "Already settled", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn settle_fee(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<Settlement>,
) -> Result<AppJson<Fee>> {
    let mut tx = state.db.begin().await?;
    let fee = duties::settle(&mut tx, &principal, id, &request.settlement, &request.note).await?;
    tx.commit().await?;
    Ok(AppJson(fee))
}

/// A project's obligations (members and stewards), overdue ones flagged.
#[utoipa::path(
    get,
    path = "/projects/{id}/obligations",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "Duties by due date", body = [Obligation]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn project_obligations(State(state): State<AppState>, caller: InProject) -> Result<AppJson<Vec<Obligation>>> {
    caller.standing.require_reader("project")?;
    let id = caller.project_id;
    Ok(AppJson(duties::obligations(&state.db, Some(id), false).await?))
}

/// Which obligations to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ObligationFilter {
    /// Only those past their due date and not fulfilled.
    #[serde(default)]
    pub overdue: bool,
}

/// Every project's obligations (stewards and admins).
#[utoipa::path(
    get,
    path = "/obligations",
    tag = tags::GRANTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(ObligationFilter),
    responses(
        (status = 200, description = "Duties by due date", body = [Obligation]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn all_obligations(
    State(state): State<AppState>,
    principal: Principal,
    AppQuery(filter): AppQuery<ObligationFilter>,
) -> Result<AppJson<Vec<Obligation>>> {
    Ok(AppJson(duties::all_obligations(&state.db, &principal, filter.overdue).await?))
}

/// A report, a pointer to returned results, or an attestation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[schema(max_length = 20_000)]
    pub statement: String,
}

/// Fulfil an obligation (the PI): a progress report, the returned results, an attestation.
#[utoipa::path(
    post,
    path = "/obligations/{id}/fulfil",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Obligation id")),
    request_body = Statement,
    responses(
        (status = 200, description = "The fulfilled obligation", body = Obligation),
        (status = 409, description = "Already fulfilled", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn fulfil(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<Statement>,
) -> Result<AppJson<Obligation>> {
    let mut tx = state.db.begin().await?;
    let fulfilled = duties::fulfil(&mut tx, &principal, id, &request.statement).await?;
    tx.commit().await?;
    Ok(AppJson(fulfilled))
}

/// A renewal: how long, and the progress so far.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewalRequest {
    /// Months to add to the grant's end, 1 to 60.
    pub months: i32,
    #[schema(max_length = 20_000)]
    pub progress_report: String,
}

/// Ask for a grant's extension with a progress report (the PI).
#[utoipa::path(
    post,
    path = "/grants/{id}/renewals",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Grant id")),
    request_body = RenewalRequest,
    responses(
        (status = 201, description = "The renewal, waiting for a steward", body = Renewal),
        (status = 409, description = "A renewal is already waiting, or the grant cannot be renewed", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn request_renewal(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<RenewalRequest>,
) -> Result<(StatusCode, AppJson<Renewal>)> {
    let mut tx = state.db.begin().await?;
    let renewal = renewals::request(&mut tx, &principal, id, request.months, &request.progress_report).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(renewal)))
}

/// Which renewals to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RenewalListQuery {
    /// `requested` (default), `approved`, `rejected` or `all`.
    pub state: Option<String>,
}

/// Renewals, oldest first, with their progress reports (stewards and admins).
#[utoipa::path(
    get,
    path = "/renewals",
    tag = tags::GRANTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(RenewalListQuery),
    responses(
        (status = 200, description = "Renewals with the progress report, the project and the grant's end", body = [RenewalItem]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_renewals(
    State(state): State<AppState>,
    principal: Principal,
    AppQuery(query): AppQuery<RenewalListQuery>,
) -> Result<AppJson<Vec<RenewalItem>>> {
    Ok(AppJson(renewals::list(&state.db, &principal, query.state.as_deref()).await?))
}

/// A steward's decision on a renewal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewalDecision {
    pub approve: bool,
    #[schema(max_length = 2000)]
    pub reason: String,
}

/// Decide a renewal (stewards and admins). Approval adds a grant version that
/// ends `months` later, records the maintenance fee and schedules the new
/// period's progress reports; the earlier versions stay in the history.
#[utoipa::path(
    post,
    path = "/renewals/{id}/decision",
    tag = tags::GRANTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(("id" = Uuid, Path, description = "Renewal id")),
    request_body = RenewalDecision,
    responses(
        (status = 200, description = "The decided renewal", body = Renewal),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn decide_renewal(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<RenewalDecision>,
) -> Result<AppJson<Renewal>> {
    let mut tx = state.db.begin().await?;
    let decided = renewals::decide(&mut tx, &principal, id, request.approve, &request.reason).await?;
    tx.commit().await?;
    Ok(AppJson(decided))
}

/// Closing a project.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// The PI's attestation that every copy of the project's data is deleted.
    #[schema(max_length = 20_000)]
    pub deletion_attestation: String,
}

/// Close a project once its data is deleted (the PI): every grant is closed,
/// the deletion duties are fulfilled by the attestation, and the project's
/// pseudonymization key is destroyed, so its pseudonyms can no longer be linked.
#[utoipa::path(
    post,
    path = "/projects/{id}/close",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    request_body = CloseRequest,
    responses(
        (status = 200, description = "Closed", body = Closed),
        (status = 409, description = "Already closed", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn close_project(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<CloseRequest>,
) -> Result<AppJson<Closed>> {
    let mut tx = state.db.begin().await?;
    let closed = closure::close(&mut tx, &principal, id, &request.deletion_attestation).await?;
    tx.commit().await?;
    Ok(AppJson(closed))
}

/// The caller's notifications, newest first (stewards also see those to every steward;
/// an invitation to a project the caller was removed from or left is no longer shown).
#[utoipa::path(
    get,
    path = "/me/notifications",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Notifications, newest first", body = [Notification]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn my_notifications(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<AppJson<Vec<Notification>>> {
    Ok(AppJson(duties::notifications(&state.db, &principal).await?))
}

/// Mark one's notification read.
#[utoipa::path(
    post,
    path = "/notifications/{id}/read",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Notification id")),
    responses(
        (status = 204, description = "Marked read"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn read_notification(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode> {
    duties::mark_read(&state.db, &principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
