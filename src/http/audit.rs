//! Reading and verifying the audit log (stewards and admins).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AppJson, AppQuery};
use crate::app::AppState;
use crate::audit::{self, AuditEvent, EventFilter, VerifyReport};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_events)).routes(routes!(verify_audit_chain))
}

const READERS: &[Role] = &[Role::Steward, Role::Admin];
const MAX_LIMIT: i64 = 1000;

/// Filters for the audit log; all optional, all combined.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events by this actor (username or `system:<component>`).
    pub actor: Option<String>,
    /// Only events with this action, e.g. `token.create`.
    pub action: Option<String>,
    /// Only events about this target; a trailing `*` matches a prefix (`cohort:*`).
    pub target: Option<String>,
    /// Only events at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only events before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Continue after this sequence number (from `next_after_seq`).
    pub after_seq: Option<i64>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
}

/// One page of audit events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventListResponse {
    pub events: Vec<AuditEvent>,
    /// Pass as `after_seq` to get the next page; absent on the last page.
    pub next_after_seq: Option<i64>,
}

/// List audit events.
#[utoipa::path(
    get,
    path = "/audit",
    tag = tags::AUDIT,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(AuditQuery),
    responses(
        (status = 200, description = "Matching events in chain order", body = AuditEventListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_audit_events(
    State(state): State<AppState>,
    principal: Principal,
    AppQuery(query): AppQuery<AuditQuery>,
) -> Result<AppJson<AuditEventListResponse>> {
    Ok(AppJson(events(&state.db, &principal, query).await?))
}

/// One page of the audit events matching `query` (stewards and admins):
/// what `GET /audit` answers and the audit page shows.
pub async fn events(db: &sqlx::PgPool, principal: &Principal, query: AuditQuery) -> Result<AuditEventListResponse> {
    principal.require_any(READERS)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!("`limit` must be between 1 and {MAX_LIMIT}")));
    }
    if let (Some(since), Some(until)) = (query.since, query.until)
        && since >= until
    {
        return Err(ApiError::InvalidQuery("`since` must be before `until`".into()));
    }
    let filter = EventFilter {
        actor: query.actor,
        action: query.action,
        target: query.target,
        since: query.since,
        until: query.until,
        after_seq: query.after_seq,
        limit: limit + 1,
    };
    let mut events = audit::list_events(db, &filter).await?;
    let next_after_seq = if events.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        events.pop();
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(AuditEventListResponse { events, next_after_seq })
}

/// Verify the whole hash chain.
///
/// Recomputes every event's hash from its content and its predecessor's hash;
/// names the first broken sequence number when anything was changed, removed
/// or inserted behind Custodian's back.
#[utoipa::path(
    get,
    path = "/audit/verify",
    tag = tags::AUDIT,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    responses(
        (status = 200, description = "Verification report (`ok` false when the chain is broken)", body = VerifyReport),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn verify_audit_chain(State(state): State<AppState>, principal: Principal) -> Result<AppJson<VerifyReport>> {
    Ok(AppJson(verify(&state.db, &principal).await?))
}

/// The whole chain verified (stewards and admins).
pub async fn verify(db: &sqlx::PgPool, principal: &Principal) -> Result<VerifyReport> {
    principal.require_any(READERS)?;
    Ok(audit::verify_chain(db).await?)
}
