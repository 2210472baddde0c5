//! What comes with a grant: the fee of access, the project's duties
//! (obligations with due dates), and the notifications people must act on.

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::grants::Scope;
use crate::error::ApiError;

/// Leaves a notification for `recipient` (a username, or `role:steward`).
pub async fn notify(
    tx: &mut PgConnection,
    recipient: &str,
    kind: &str,
    subject: &str,
    target: &str,
) -> Result<(), ApiError> {
    sqlx::query("insert into notification (recipient, kind, subject, target) values ($1, $2, $3, $4)")
        .bind(recipient)
        .bind(kind)
        .bind(subject)
        .bind(target)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The PI of a project.
pub async fn pi_of(db: impl PgExecutor<'_>, project_id: Uuid) -> Result<String, ApiError> {
    Ok(sqlx::query_scalar("select pi_username from project where project_id = $1")
        .bind(project_id)
        .fetch_one(db)
        .await?)
}

/// A fee owed for access.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Fee {
    #[sqlx(rename = "fee_id")]
    pub id: Uuid,
    pub application_id: Uuid,
    pub grant_id: Option<Uuid>,
    /// `access` (at approval) or `maintenance` (at renewal).
    pub kind: String,
    /// In the currency's minor unit (cents).
    pub amount: i64,
    pub currency: String,
    /// What the amount is made of.
    #[sqlx(json)]
    pub basis: Vec<FeeItem>,
    /// `paid` or `waived`; absent while owed.
    pub settlement: Option<String>,
    pub settlement_note: Option<String>,
    pub settled_by: Option<String>,
    pub settled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// One part of a fee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FeeItem {
    /// What it is for, e.g. `controlled tier access` or `imaging maintenance`.
    pub item: String,
    /// In the currency's minor unit (cents).
    pub amount: i64,
}

const FEE_COLUMNS: &str = "fee_id, application_id, grant_id, kind, amount, currency, basis, settlement, \
                           settlement_note, settled_by, settled_at, created_at";

/// Records the fee the schedule sets for `scope`: the fee of the strictest
/// tier among its cohorts, plus that tier's imaging surcharge when the scope
/// holds imaging (nothing when the total is zero). Returns the amount.
pub async fn charge(
    tx: &mut PgConnection,
    application_id: Uuid,
    grant_id: Uuid,
    scope: &Scope,
    kind: &str,
) -> Result<Option<i64>, ApiError> {
    let (base, imaging) = if kind == "access" {
        ("access_fee", "imaging_access_fee")
    } else {
        ("maintenance_fee", "imaging_maintenance_fee")
    };
    let due: Option<(String, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select f.tier, f.{base}, f.{imaging}, f.currency from fee_schedule f
         where f.tier in (select tier from cohort where slug = any($1))
         order by case f.tier when 'controlled' then 0 when 'registered' then 1 else 2 end limit 1"
    )))
    .bind(&scope.cohorts)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((tier, base_amount, imaging_amount, currency)) = due else { return Ok(None) };
    let mut basis = Vec::new();
    if base_amount > 0 {
        basis.push(FeeItem { item: format!("{tier} tier {kind}"), amount: base_amount });
    }
    if scope.imaging && imaging_amount > 0 {
        basis.push(FeeItem { item: format!("imaging {kind}"), amount: imaging_amount });
    }
    let amount: i64 = basis.iter().map(|b| b.amount).sum();
    if amount == 0 {
        return Ok(None);
    }
    sqlx::query(
        "insert into fee (application_id, grant_id, kind, amount, currency, basis) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(application_id)
    .bind(grant_id)
    .bind(kind)
    .bind(amount)
    .bind(&currency)
    .bind(sqlx::types::Json(&basis))
    .execute(&mut *tx)
    .await?;
    Ok(Some(amount))
}

pub async fn fees(db: impl PgExecutor<'_>, application_id: Uuid) -> Result<Vec<Fee>, ApiError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {FEE_COLUMNS} from fee where application_id = $1 order by created_at"
    )))
    .bind(application_id)
    .fetch_all(db)
    .await?)
}

/// A duty of a project under a grant.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Obligation {
    #[sqlx(rename = "obligation_id")]
    pub id: Uuid,
    pub grant_id: Uuid,
    pub project_id: Uuid,
    /// `progress_report`, `results_return`, `publication_notice` or `deletion_attestation`.
    pub kind: String,
    pub due_on: NaiveDate,
    pub fulfilled_at: Option<DateTime<Utc>>,
    pub fulfilled_by: Option<String>,
    pub statement: Option<String>,
    /// Past its due date and not fulfilled.
    #[sqlx(default)]
    pub overdue: bool,
}

const OBLIGATION_COLUMNS: &str = "obligation_id, grant_id, project_id, kind, due_on, fulfilled_at, fulfilled_by, \
                                  statement, (fulfilled_at is null and due_on < current_date) as overdue";

/// The duties that come with an active grant: a progress report each year of
/// it, the return of results where a cohort's consent asks for it (DUO RTN),
/// and the attestation that data is deleted, 30 days after the end.
pub async fn schedule(
    tx: &mut PgConnection,
    grant_id: Uuid,
    project_id: Uuid,
    cohorts: &[String],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<usize, ApiError> {
    let mut duties: Vec<(&str, NaiveDate)> = Vec::new();
    let mut year = 1;
    while let Some(due) = from.checked_add_months(Months::new(12 * year)).filter(|d| *d < until) {
        duties.push(("progress_report", due.date_naive()));
        year += 1;
    }
    let (returns, publishes): (bool, bool) = sqlx::query_as(
        "select coalesce(bool_or(consent_terms -> 'modifiers' ? 'RTN'), false),
                coalesce(bool_or(consent_terms -> 'modifiers' ? 'PUB'), false)
         from cohort where slug = any($1)",
    )
    .bind(cohorts)
    .fetch_one(&mut *tx)
    .await?;
    if returns {
        duties.push(("results_return", until.date_naive()));
    }
    if publishes {
        duties.push(("publication_notice", until.date_naive()));
    }
    duties.push(("deletion_attestation", until.date_naive() + chrono::Days::new(30)));
    for (kind, due) in &duties {
        sqlx::query("insert into obligation (grant_id, project_id, kind, due_on) values ($1, $2, $3, $4)")
            .bind(grant_id)
            .bind(project_id)
            .bind(kind)
            .bind(due)
            .execute(&mut *tx)
            .await?;
    }
    Ok(duties.len())
}

/// Before a renewal's duties are scheduled: the duties of the old end (the
/// deletion attestation, results to return, the publication notice) that are
/// still open move to the new end (they are dropped here and `schedule`
/// writes them anew), and a period too short for a yearly report gets one at
/// its end. Returns how many were moved.
pub async fn reschedule_for_renewal(
    tx: &mut PgConnection,
    grant_id: Uuid,
    project_id: Uuid,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<u64, ApiError> {
    let moved = sqlx::query(
        "delete from obligation where grant_id = $1 and fulfilled_at is null
         and kind in ('deletion_attestation', 'results_return', 'publication_notice')",
    )
    .bind(grant_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if from.checked_add_months(Months::new(12)).is_none_or(|first| first >= until) {
        sqlx::query(
            "insert into obligation (grant_id, project_id, kind, due_on) values ($1, $2, 'progress_report', $3)",
        )
        .bind(grant_id)
        .bind(project_id)
        .bind(until.date_naive())
        .execute(&mut *tx)
        .await?;
    }
    Ok(moved)
}

pub async fn obligations(
    db: impl PgExecutor<'_>,
    project_id: Option<Uuid>,
    overdue_only: bool,
) -> Result<Vec<Obligation>, ApiError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {OBLIGATION_COLUMNS} from obligation
         where ($1::uuid is null or project_id = $1) and (not $2 or (fulfilled_at is null and due_on < current_date))
         order by due_on, kind"
    )))
    .bind(project_id)
    .bind(overdue_only)
    .fetch_all(db)
    .await?)
}

pub async fn obligation(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Obligation>, ApiError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {OBLIGATION_COLUMNS} from obligation where obligation_id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?)
}
