//! What comes with a grant, over REST: the fee schedule and the settlement of
//! fees, the project's obligations and their fulfilment, renewals asked for
//! with a progress report, closing a project (which destroys its key), and
//! the notifications people must act on.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{Months, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::applications::{is_steward, visible};
use super::extract::{AppJson, AppPath, AppQuery};
use crate::access::duties::{self, Fee, Obligation};
use crate::access::grants::{self, GrantState, NewVersion};
use crate::access::standing::InProject;
use crate::access::standing::standing;
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
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

/// The fees of one tier.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct TierFees {
    pub tier: Tier,
    /// In the currency's minor unit (cents).
    pub access_fee: i64,
    /// Due at each renewal.
    pub maintenance_fee: i64,
    /// Added to the access fee when imaging is in scope.
    #[serde(default)]
    pub imaging_access_fee: i64,
    /// Added to the maintenance fee when imaging is in scope.
    #[serde(default)]
    pub imaging_maintenance_fee: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
}

const TIER_COLUMNS: &str = "tier, access_fee, maintenance_fee, imaging_access_fee, imaging_maintenance_fee, currency";

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
    Ok(AppJson(
        sqlx::query_as(sqlx::AssertSqlSafe(format!("select {TIER_COLUMNS} from fee_schedule order by tier")))
            .fetch_all(&state.db)
            .await?,
    ))
}

/// Set the fees of a tier (admins).
#[utoipa::path(
    put,
    path = "/fees/{tier}",
    tag = tags::GRANTS,
    security(("bearer" = [])),
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
    principal.require_any(&[Role::Admin])?;
    if request.tier != tier {
        return Err(ApiError::BadRequest("the body's `tier` differs from the path's".into()));
    }
    if [request.access_fee, request.maintenance_fee, request.imaging_access_fee, request.imaging_maintenance_fee]
        .iter()
        .any(|fee| *fee < 0)
    {
        return Err(ApiError::BadRequest("fees are zero or more".into()));
    }
    if request.currency.len() != 3 || !request.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::BadRequest("`currency` is an ISO 4217 code such as EUR".into()));
    }
    let mut tx = state.db.begin().await?;
    let saved: TierFees = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update fee_schedule set access_fee = $2, maintenance_fee = $3, imaging_access_fee = $4,
                                 imaging_maintenance_fee = $5, currency = $6, updated_at = now()
         where tier = $1 returning {TIER_COLUMNS}"
    )))
    .bind(tier)
    .bind(request.access_fee)
    .bind(request.maintenance_fee)
    .bind(request.imaging_access_fee)
    .bind(request.imaging_maintenance_fee)
    .bind(&request.currency)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "fee.schedule").target(format!("tier:{}", tier_name(tier))).details(
            json!({ "access_fee": saved.access_fee, "maintenance_fee": saved.maintenance_fee,
                    "imaging_access_fee": saved.imaging_access_fee,
                    "imaging_maintenance_fee": saved.imaging_maintenance_fee, "currency": saved.currency }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(saved))
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Open => "open",
        Tier::Registered => "registered",
        Tier::Controlled => "controlled",
    }
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
    pub settlement: String,
    /// The payment reference, or why it is waived (student, low-income country, ...).
    pub note: String,
}

/// Record that a fee is paid or waived (stewards and admins).
#[utoipa::path(
    post,
    path = "/fees/{id}/settlement",
    tag = tags::GRANTS,
    security(("bearer" = [])),
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
    principal.require_any(&[Role::Steward, Role::Admin])?;
    if !["paid", "waived"].contains(&request.settlement.as_str()) {
        return Err(ApiError::BadRequest("`settlement` is paid or waived".into()));
    }
    let note = request.note.trim();
    if note.is_empty() || note.chars().count() > 500 {
        return Err(ApiError::BadRequest(
            "`note` (a payment reference or the waiver's reason) is 1 to 500 characters".into(),
        ));
    }
    let mut tx = state.db.begin().await?;
    let updated: Option<Uuid> = sqlx::query_scalar(
        "update fee set settlement = $2, settlement_note = $3, settled_by = $4, settled_at = now()
         where fee_id = $1 and settlement is null returning application_id",
    )
    .bind(id)
    .bind(&request.settlement)
    .bind(note)
    .bind(&principal.username)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(application) = updated else {
        let exists: bool = sqlx::query_scalar("select exists (select 1 from fee where fee_id = $1)")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        return Err(if exists {
            ApiError::Conflict("the fee is already settled".into())
        } else {
            ApiError::NotFound("fee")
        });
    };
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "fee.settle")
            .target(format!("application:{application}"))
            .details(json!({ "fee": id, "settlement": request.settlement, "note": note })),
    )
    .await?;
    tx.commit().await?;
    let fee = duties::fees(&state.db, application).await?.into_iter().find(|f| f.id == id);
    Ok(AppJson(fee.ok_or(ApiError::NotFound("fee"))?))
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
    security(("bearer" = [])),
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
    principal.require_any(&[Role::Steward, Role::Admin])?;
    Ok(AppJson(duties::obligations(&state.db, None, filter.overdue).await?))
}

/// A report, a pointer to returned results, or an attestation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub statement: String,
}

fn statement(text: &str) -> Result<&str> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 20_000 {
        return Err(ApiError::BadRequest("`statement` is 1 to 20,000 characters".into()));
    }
    Ok(text)
}

async fn require_pi(state: &AppState, principal: &Principal, project_id: Uuid, missing: &'static str) -> Result<()> {
    standing(&state.db, project_id, principal).await?.require_pi(missing, "only the project's PI does this")
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
    let text = statement(&request.statement)?;
    let found = duties::obligation(&state.db, id).await?.ok_or(ApiError::NotFound("obligation"))?;
    require_pi(&state, &principal, found.project_id, "obligation").await?;
    let mut tx = state.db.begin().await?;
    let done = sqlx::query(
        "update obligation set fulfilled_at = now(), fulfilled_by = $2, statement = $3
         where obligation_id = $1 and fulfilled_at is null",
    )
    .bind(id)
    .bind(&principal.username)
    .bind(text)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(ApiError::Conflict("the obligation is already fulfilled".into()));
    }
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "obligation.fulfil")
            .target(format!("grant:{}", found.grant_id))
            .details(json!({ "obligation": id, "kind": found.kind, "due_on": found.due_on, "overdue": found.overdue })),
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(duties::obligation(&state.db, id).await?.ok_or(ApiError::NotFound("obligation"))?))
}

/// A renewal: how long, and the progress so far.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewalRequest {
    /// Months to add to the grant's end, 1 to 60.
    pub months: i32,
    pub progress_report: String,
}

/// A renewal as recorded.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Renewal {
    #[sqlx(rename = "renewal_id")]
    pub id: Uuid,
    pub grant_id: Uuid,
    pub requested_by: String,
    pub months: i32,
    pub progress_report: String,
    /// `requested`, `approved` or `rejected`.
    pub state: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
}

const RENEWAL_COLUMNS: &str = "renewal_id, grant_id, requested_by, months, progress_report, state, decided_by, reason";

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
    let report = statement(&request.progress_report)?;
    if !(1..=60).contains(&request.months) {
        return Err(ApiError::BadRequest("`months` is 1 to 60".into()));
    }
    let history = grants::history(&state.db, id).await?;
    let current = history.last().ok_or(ApiError::NotFound("grant"))?;
    require_pi(&state, &principal, current.project_id, "grant").await?;
    if !matches!(current.effective_state, GrantState::Active | GrantState::Expired | GrantState::Suspended) {
        return Err(ApiError::Conflict(format!(
            "a grant that is {} cannot be renewed",
            current.effective_state.as_str()
        )));
    }
    // Refused now if it could never be approved: the consent terms' time limit.
    grants::within_consent(&state.db, &current.scope, current.not_before, renewed_until(current, request.months))
        .await?;
    let mut tx = state.db.begin().await?;
    let renewal: Renewal = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into grant_renewal (grant_id, requested_by, months, progress_report) values ($1, $2, $3, $4)
         on conflict do nothing returning {RENEWAL_COLUMNS}"
    )))
    .bind(id)
    .bind(&principal.username)
    .bind(request.months)
    .bind(report)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::Conflict("a renewal of this grant is already waiting for a decision".into()))?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "grant.renewal.request")
            .target(format!("grant:{id}"))
            .details(json!({ "renewal": renewal.id, "months": request.months })),
    )
    .await?;
    duties::notify(
        &mut tx,
        "role:steward",
        "grant.renewal",
        "A grant renewal is waiting for a decision",
        &format!("grant:{id}"),
    )
    .await?;
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

/// A renewal as the committee weighs it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenewalItem {
    #[serde(flatten)]
    pub renewal: Renewal,
    pub project_id: Uuid,
    pub project_title: String,
    /// The grant's end before the renewal.
    pub not_after: chrono::DateTime<Utc>,
    pub requested_at: chrono::DateTime<Utc>,
}

/// Renewals, oldest first, with their progress reports (stewards and admins).
#[utoipa::path(
    get,
    path = "/renewals",
    tag = tags::GRANTS,
    security(("bearer" = [])),
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
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let wanted = query.state.unwrap_or_else(|| "requested".into());
    if !["requested", "approved", "rejected", "all"].contains(&wanted.as_str()) {
        return Err(ApiError::InvalidQuery("`state` is requested, approved, rejected or all".into()));
    }
    let rows: Vec<(Uuid, String, chrono::DateTime<Utc>, chrono::DateTime<Utc>)> = sqlx::query_as(
        "select r.renewal_id, p.title, g.not_after, r.created_at from grant_renewal r
         join lateral (select * from access_grant g where g.grant_id = r.grant_id order by version desc limit 1) g on true
         join project p on p.project_id = g.project_id
         where $1 = 'all' or r.state = $1 order by r.created_at",
    )
    .bind(&wanted)
    .fetch_all(&state.db)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for (id, project_title, not_after, requested_at) in rows {
        let renewal: Renewal = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {RENEWAL_COLUMNS} from grant_renewal where renewal_id = $1"
        )))
        .bind(id)
        .fetch_one(&state.db)
        .await?;
        let project_id: Uuid = sqlx::query_scalar("select project_id from access_grant where grant_id = $1 limit 1")
            .bind(renewal.grant_id)
            .fetch_one(&state.db)
            .await?;
        items.push(RenewalItem { renewal, project_id, project_title, not_after, requested_at });
    }
    Ok(AppJson(items))
}

/// The end a renewal of `months` gives a grant: from its end, or from now if it has expired.
fn renewed_until(grant: &grants::Grant, months: i32) -> chrono::DateTime<Utc> {
    let from = grant.not_after.max(Utc::now());
    from.checked_add_months(Months::new(u32::try_from(months).unwrap_or(1))).unwrap_or(from)
}

/// A steward's decision on a renewal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewalDecision {
    pub approve: bool,
    pub reason: String,
}

/// Decide a renewal (stewards and admins). Approval adds a grant version that
/// ends `months` later, records the maintenance fee and schedules the new
/// period's progress reports; the earlier versions stay in the history.
#[utoipa::path(
    post,
    path = "/renewals/{id}/decision",
    tag = tags::GRANTS,
    security(("bearer" = [])),
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
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let reason = statement(&request.reason)?;
    let mut tx = state.db.begin().await?;
    let renewal: Renewal = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RENEWAL_COLUMNS} from grant_renewal where renewal_id = $1 for update"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("renewal"))?;
    if renewal.state != "requested" {
        return Err(ApiError::Conflict(format!("the renewal is already {}", renewal.state)));
    }
    let current = grants::latest_for_update(&mut tx, renewal.grant_id).await?.ok_or(ApiError::NotFound("grant"))?;
    let mut details = json!({ "renewal": id, "approve": request.approve, "reason": reason });
    if request.approve {
        let from = current.not_after.max(Utc::now());
        let until = renewed_until(&current, renewal.months);
        grants::within_consent(&mut *tx, &current.scope, current.not_before, until).await?;
        let state_now = if current.state == GrantState::Suspended { GrantState::Suspended } else { GrantState::Active };
        grants::insert(
            &mut tx,
            NewVersion {
                grant_id: current.id,
                version: current.version + 1,
                project_id: current.project_id,
                application_id: current.application_id,
                state: state_now,
                scope: &current.scope,
                conditions: &current.conditions,
                not_before: current.not_before,
                not_after: until,
                reason: Some(reason),
                created_by: &principal.username,
            },
        )
        .await?;
        let fee = duties::charge(&mut tx, current.application_id, current.id, &current.scope, "maintenance").await?;
        let moved = duties::reschedule_for_renewal(&mut tx, current.id, current.project_id, from, until).await?;
        let scheduled =
            duties::schedule(&mut tx, current.id, current.project_id, &current.scope.cohorts, from, until).await?;
        details = json!({ "renewal": id, "approve": true, "reason": reason, "version": current.version + 1, "not_after": until, "fee": fee, "obligations": scheduled, "end_duties_moved": moved });
    }
    sqlx::query(
        "update grant_renewal set state = $2, decided_by = $3, decided_at = now(), reason = $4 where renewal_id = $1",
    )
    .bind(id)
    .bind(if request.approve { "approved" } else { "rejected" })
    .bind(&principal.username)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "grant.renewal.decide")
            .target(format!("grant:{}", current.id))
            .details(details),
    )
    .await?;
    duties::notify(
        &mut tx,
        &renewal.requested_by,
        "grant.renewal.decided",
        if request.approve { "Your renewal was approved" } else { "Your renewal was not approved" },
        &format!("grant:{}", current.id),
    )
    .await?;
    tx.commit().await?;
    let decided: Renewal = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RENEWAL_COLUMNS} from grant_renewal where renewal_id = $1"
    )))
    .bind(id)
    .fetch_one(&state.db)
    .await?;
    Ok(AppJson(decided))
}

/// Closing a project.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// The PI's attestation that every copy of the project's data is deleted.
    pub deletion_attestation: String,
}

/// What closing did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Closed {
    pub project_id: Uuid,
    /// Grants that were closed.
    pub grants_closed: usize,
    /// Applications still open that were withdrawn.
    pub applications_withdrawn: usize,
    /// Whether the project's pseudonymization key existed and is now destroyed.
    pub key_destroyed: bool,
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
    let attestation = statement(&request.deletion_attestation)?;
    require_pi(&state, &principal, id, "project").await?;
    let mut tx = state.db.begin().await?;
    let closed = sqlx::query(
        "update project set closed_at = now(), deletion_attestation = $2 where project_id = $1 and closed_at is null",
    )
    .bind(id)
    .bind(attestation)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if closed == 0 {
        return Err(ApiError::Conflict("the project is already closed".into()));
    }
    // Open applications are withdrawn: a closed project gets no new grant.
    let open: Vec<Uuid> = sqlx::query_scalar(
        "select application_id from application where project_id = $1
         and state in ('draft', 'submitted', 'under_review', 'changes_requested') order by created_at",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    for application in &open {
        let locked = crate::access::db::lock(&mut tx, *application).await?.ok_or(ApiError::NotFound("application"))?;
        crate::access::review::advance(
            &mut tx,
            &locked,
            crate::access::state::Action::Withdraw,
            crate::access::state::Actor::Applicant,
            &principal.username,
            Some("the project was closed"),
        )
        .await?;
    }
    let mut grants_closed = 0;
    for grant in grants::of_project(&mut *tx, id).await? {
        if matches!(grant.state, GrantState::Closed | GrantState::Revoked) {
            continue;
        }
        let current = grants::latest_for_update(&mut tx, grant.id).await?.ok_or(ApiError::NotFound("grant"))?;
        grants::insert(
            &mut tx,
            NewVersion {
                grant_id: current.id,
                version: current.version + 1,
                project_id: id,
                application_id: current.application_id,
                state: GrantState::Closed,
                scope: &current.scope,
                conditions: &current.conditions,
                not_before: current.not_before,
                not_after: current.not_after,
                reason: Some("the project was closed"),
                created_by: &principal.username,
            },
        )
        .await?;
        grants_closed += 1;
    }
    sqlx::query(
        "update obligation set fulfilled_at = now(), fulfilled_by = $2, statement = $3
         where project_id = $1 and kind = 'deletion_attestation' and fulfilled_at is null",
    )
    .bind(id)
    .bind(&principal.username)
    .bind(attestation)
    .execute(&mut *tx)
    .await?;
    // The other open duties can no longer apply: discharged, and said so.
    let discharged = sqlx::query(
        "update obligation set fulfilled_at = now(), fulfilled_by = $2,
                statement = 'no longer applies: the project was closed'
         where project_id = $1 and fulfilled_at is null",
    )
    .bind(id)
    .bind(&principal.username)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let key_destroyed =
        sqlx::query("delete from project_key where project_id = $1").bind(id).execute(&mut *tx).await?.rows_affected()
            == 1;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "project.close")
            .target(format!("project:{id}"))
            .details(json!({
                "grants_closed": grants_closed,
                "applications_withdrawn": open,
                "duties_discharged": discharged,
                "key_destroyed": key_destroyed,
                "deletion_attestation_sha256": hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, attestation.as_bytes())),
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(Closed { project_id: id, grants_closed, applications_withdrawn: open.len(), key_destroyed }))
}

/// Something to act on.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Notification {
    #[sqlx(rename = "notification_id")]
    pub id: Uuid,
    /// The person, or `role:steward` for every steward.
    pub recipient: String,
    pub kind: String,
    pub subject: String,
    pub target: Option<String>,
    pub created_at: chrono::DateTime<Utc>,
    pub read_at: Option<chrono::DateTime<Utc>>,
}

/// The caller's notifications, newest first (stewards also see those to every steward).
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
    Ok(AppJson(
        sqlx::query_as(
            "select notification_id, recipient, kind, subject, target, created_at, read_at from notification
             where recipient = $1 or ($2 and recipient = 'role:steward') order by created_at desc limit 200",
        )
        .bind(&principal.username)
        .bind(is_steward(&principal))
        .fetch_all(&state.db)
        .await?,
    ))
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
    let done = sqlx::query(
        "update notification set read_at = coalesce(read_at, now())
         where notification_id = $1 and (recipient = $2 or ($3 and recipient = 'role:steward'))",
    )
    .bind(id)
    .bind(&principal.username)
    .bind(is_steward(&principal))
    .execute(&state.db)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(ApiError::NotFound("notification"));
    }
    Ok(StatusCode::NO_CONTENT)
}
