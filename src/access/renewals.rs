//! Renewals of a grant: the PI asks for more time with a progress report, a
//! steward decides. Approval writes the grant's next version with the new end
//! (through [`grants::transition`]), charges the maintenance fee and schedules
//! the new period's duties; the earlier versions stay in the history.

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::duties::{self, FeeKind, statement};
use super::grants::{self, Change, Grant, GrantState};
use super::standing::standing;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::ApiError;

/// Where a renewal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RenewalState {
    /// Waiting for a steward's decision (at most one per grant).
    Requested,
    Approved,
    Rejected,
}

impl RenewalState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Requested, Self::Approved, Self::Rejected].into_iter().find(|s| s.as_str() == text)
    }
}

/// A renewal as recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct Renewal {
    pub id: Uuid,
    pub grant_id: Uuid,
    pub requested_by: String,
    pub months: i32,
    pub progress_report: String,
    /// `requested`, `approved` or `rejected`.
    #[schema(value_type = String)]
    pub state: RenewalState,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
}

/// A renewal as the committee weighs it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenewalItem {
    #[serde(flatten)]
    pub renewal: Renewal,
    pub project_id: Uuid,
    pub project_title: String,
    /// The grant's end before the renewal.
    pub not_after: DateTime<Utc>,
    pub requested_at: DateTime<Utc>,
}

/// The end a renewal of `months` gives a grant: from its end, or from now if it has expired.
fn renewed_until(grant: &Grant, months: i32) -> DateTime<Utc> {
    let from = grant.not_after.max(Utc::now());
    from.checked_add_months(Months::new(u32::try_from(months).unwrap_or(1))).unwrap_or(from)
}

/// The PI asks for `months` more of a grant with a progress report. Refused
/// at once when it could never be approved: a grant that is not active,
/// expired or suspended, or an end past a cohort's consent time limit.
pub async fn request(
    tx: &mut PgConnection,
    principal: &Principal,
    grant_id: Uuid,
    months: i32,
    progress_report: &str,
) -> Result<Renewal, ApiError> {
    let report = statement("progress_report", progress_report)?;
    if !(1..=60).contains(&months) {
        return Err(ApiError::BadRequest("`months` is 1 to 60".into()));
    }
    let history = grants::history(&mut *tx, grant_id).await?;
    let current = history.last().ok_or(ApiError::NotFound("grant"))?;
    standing(&mut *tx, current.project_id, principal).await?.require_pi("grant", "only the project's PI does this")?;
    if !matches!(current.effective_state, GrantState::Active | GrantState::Expired | GrantState::Suspended) {
        return Err(ApiError::Conflict(format!(
            "a grant that is {} cannot be renewed",
            current.effective_state.as_str()
        )));
    }
    grants::within_consent(&mut *tx, &current.scope, current.not_before, renewed_until(current, months)).await?;
    let renewal = sqlx::query_as!(
        Renewal,
        r#"insert into grant_renewal (grant_id, requested_by, months, progress_report) values ($1, $2, $3, $4)
           on conflict do nothing
           returning renewal_id as id, grant_id, requested_by, months, progress_report,
                     state as "state: RenewalState", decided_by, reason"#,
        grant_id,
        principal.username,
        months,
        report
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::Conflict("a renewal of this grant is already waiting for a decision".into()))?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "grant.renewal.request")
            .target(format!("grant:{grant_id}"))
            .details(json!({ "renewal": renewal.id, "months": months })),
    )
    .await?;
    duties::notify(
        tx,
        "role:steward",
        "grant.renewal",
        "A grant renewal is waiting for a decision",
        &format!("grant:{grant_id}"),
    )
    .await?;
    Ok(renewal)
}

/// Renewals in one state (`requested` when `state` is absent) or `all`,
/// oldest first, with the project and the grant's end (stewards and admins).
pub async fn list(
    db: impl PgExecutor<'_>,
    principal: &Principal,
    state: Option<&str>,
) -> Result<Vec<RenewalItem>, ApiError> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let wanted = match state.unwrap_or("requested") {
        "all" => None,
        one => Some(
            RenewalState::parse(one)
                .ok_or_else(|| ApiError::InvalidQuery("`state` is requested, approved, rejected or all".into()))?,
        ),
    };
    let rows = sqlx::query!(
        r#"select r.renewal_id, r.grant_id, r.requested_by, r.months, r.progress_report,
                  r.state as "state: RenewalState", r.decided_by, r.reason, r.created_at,
                  g.project_id as "project_id!", p.title as "project_title!", g.not_after as "not_after!"
           from grant_renewal r
           join lateral (select * from access_grant g where g.grant_id = r.grant_id order by version desc limit 1) g
                on true
           join project p on p.project_id = g.project_id
           where $1::text is null or r.state = $1 order by r.created_at"#,
        wanted as Option<RenewalState>
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RenewalItem {
            renewal: Renewal {
                id: r.renewal_id,
                grant_id: r.grant_id,
                requested_by: r.requested_by,
                months: r.months,
                progress_report: r.progress_report,
                state: r.state,
                decided_by: r.decided_by,
                reason: r.reason,
            },
            project_id: r.project_id,
            project_title: r.project_title,
            not_after: r.not_after,
            requested_at: r.created_at,
        })
        .collect())
}

/// A steward decides a renewal. Approval adds a grant version that ends
/// `months` later (a suspended grant stays suspended), within the consent
/// terms' time limit, records the maintenance fee and schedules the new
/// period's progress reports; the PI who asked is notified either way.
pub async fn decide(
    tx: &mut PgConnection,
    principal: &Principal,
    renewal_id: Uuid,
    approve: bool,
    reason: &str,
) -> Result<Renewal, ApiError> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let reason = statement("reason", reason)?;
    let renewal = sqlx::query_as!(
        Renewal,
        r#"select renewal_id as id, grant_id, requested_by, months, progress_report,
                  state as "state: RenewalState", decided_by, reason
           from grant_renewal where renewal_id = $1 for update"#,
        renewal_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("renewal"))?;
    if renewal.state != RenewalState::Requested {
        return Err(ApiError::Conflict(format!("the renewal is already {}", renewal.state.as_str())));
    }
    let current = grants::latest_for_update(tx, renewal.grant_id).await?.ok_or(ApiError::NotFound("grant"))?;
    let mut details = json!({ "renewal": renewal_id, "approve": approve, "reason": reason });
    if approve {
        let from = current.not_after.max(Utc::now());
        let until = renewed_until(&current, renewal.months);
        grants::within_consent(&mut *tx, &current.scope, current.not_before, until).await?;
        let renewed = grants::transition(tx, principal, current.id, Change::Renew { until, reason }).await?;
        let fee =
            duties::charge_fee(tx, current.application_id, current.id, &current.scope, FeeKind::Maintenance).await?;
        let moved = duties::reschedule_for_renewal(tx, current.id, current.project_id, from, until).await?;
        let scheduled =
            duties::schedule(tx, current.id, current.project_id, &current.scope.cohorts, from, until).await?;
        details = json!({ "renewal": renewal_id, "approve": true, "reason": reason, "version": renewed.version, "not_after": until, "fee": fee, "obligations": scheduled, "end_duties_moved": moved });
    }
    let decided = sqlx::query_as!(
        Renewal,
        r#"update grant_renewal set state = $2, decided_by = $3, decided_at = now(), reason = $4 where renewal_id = $1
           returning renewal_id as id, grant_id, requested_by, months, progress_report,
                     state as "state: RenewalState", decided_by, reason"#,
        renewal_id,
        if approve { RenewalState::Approved } else { RenewalState::Rejected } as RenewalState,
        principal.username,
        reason
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "grant.renewal.decide")
            .target(format!("grant:{}", current.id))
            .details(details),
    )
    .await?;
    duties::notify(
        tx,
        &renewal.requested_by,
        "grant.renewal.decided",
        if approve { "Your renewal was approved" } else { "Your renewal was not approved" },
        &format!("grant:{}", current.id),
    )
    .await?;
    Ok(decided)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_state_reads_back_as_written_and_nothing_else_is_one() {
        for state in [RenewalState::Requested, RenewalState::Approved, RenewalState::Rejected] {
            assert_eq!(RenewalState::parse(state.as_str()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        assert_eq!(RenewalState::parse("pending"), None);
        assert_eq!(RenewalState::parse("all"), None);
    }
}
