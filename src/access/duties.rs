//! What comes with a grant: the fee of access, the project's duties
//! (obligations with due dates), and the notifications people must act on.
//!
//! Each change is a service function that takes the transaction and the
//! principal, checks who may make it, writes it and its audit event.

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::grants::Scope;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::registry::Tier;

/// Leaves a notification for `recipient` (a username, or `role:steward`), and
/// queues its e-mail deliveries ([`crate::mail::enqueue`]).
pub async fn notify(
    tx: &mut PgConnection,
    recipient: &str,
    kind: &str,
    subject: &str,
    target: &str,
) -> Result<(), ApiError> {
    let notification = sqlx::query_scalar!(
        "insert into notification (recipient, kind, subject, target) values ($1, $2, $3, $4)
         returning notification_id",
        recipient,
        kind,
        subject,
        target
    )
    .fetch_one(&mut *tx)
    .await?;
    crate::mail::enqueue(tx, notification, recipient, kind).await
}

/// The PI of a project.
pub async fn pi_of(db: impl PgExecutor<'_>, project_id: Uuid) -> Result<String, ApiError> {
    Ok(sqlx::query_scalar!("select pi_username from project where project_id = $1", project_id).fetch_one(db).await?)
}

/// A report, a pointer to returned results, an attestation or a reason, trimmed.
pub fn statement<'a>(field: &str, text: &'a str) -> Result<&'a str, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 20_000 {
        return Err(ApiError::BadRequest(format!("`{field}` is 1 to 20,000 characters")));
    }
    Ok(text)
}

// ---------------------------------------------------------------- fees

/// The largest fee, in minor units (ten billion in a currency of cents): the
/// sum of any two stays far from overflowing.
pub const MAX_FEE: i64 = 1_000_000_000_000;

/// The fees of one tier.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    #[schema(max_length = 8)]
    pub currency: String,
}

/// When a fee is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum FeeKind {
    /// At approval.
    Access,
    /// At renewal.
    Maintenance,
}

impl FeeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Maintenance => "maintenance",
        }
    }
}

impl std::fmt::Display for FeeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a fee was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum FeeSettlement {
    Paid,
    Waived,
}

impl FeeSettlement {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "paid" => Some(Self::Paid),
            "waived" => Some(Self::Waived),
            _ => None,
        }
    }
}

/// A fee owed for access.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Fee {
    pub id: Uuid,
    pub application_id: Uuid,
    pub grant_id: Option<Uuid>,
    /// `access` (at approval) or `maintenance` (at renewal).
    #[schema(value_type = String)]
    pub kind: FeeKind,
    /// In the currency's minor unit (cents).
    pub amount: i64,
    pub currency: String,
    /// What the amount is made of.
    pub basis: Vec<FeeItem>,
    /// `paid` or `waived`; absent while owed.
    #[schema(value_type = Option<String>)]
    pub settlement: Option<FeeSettlement>,
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

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Open => "open",
        Tier::Registered => "registered",
        Tier::Controlled => "controlled",
    }
}

/// The fee schedule, per cohort tier (anyone signed in).
pub async fn fee_schedule(db: impl PgExecutor<'_>) -> Result<Vec<TierFees>, ApiError> {
    Ok(sqlx::query_as!(
        TierFees,
        r#"select tier as "tier: Tier", access_fee, maintenance_fee, imaging_access_fee, imaging_maintenance_fee,
                  currency
           from fee_schedule order by tier"#
    )
    .fetch_all(db)
    .await?)
}

/// Sets the fees of `tier` (admins).
pub async fn set_fees(
    tx: &mut PgConnection,
    principal: &Principal,
    tier: Tier,
    fees: &TierFees,
) -> Result<TierFees, ApiError> {
    principal.require_any(&[Role::Admin])?;
    if fees.tier != tier {
        return Err(ApiError::BadRequest("the body's `tier` differs from the path's".into()));
    }
    if [fees.access_fee, fees.maintenance_fee, fees.imaging_access_fee, fees.imaging_maintenance_fee]
        .iter()
        .any(|fee| !(0..=MAX_FEE).contains(fee))
    {
        return Err(ApiError::BadRequest("each fee is 0 to 1,000,000,000,000 in the currency's minor unit".into()));
    }
    if fees.currency.len() != 3 || !fees.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::BadRequest("`currency` is an ISO 4217 code such as EUR".into()));
    }
    let saved = sqlx::query_as!(
        TierFees,
        r#"update fee_schedule set access_fee = $2, maintenance_fee = $3, imaging_access_fee = $4,
                                   imaging_maintenance_fee = $5, currency = $6, updated_at = now()
           where tier = $1
           returning tier as "tier: Tier", access_fee, maintenance_fee, imaging_access_fee, imaging_maintenance_fee,
                     currency"#,
        tier as Tier,
        fees.access_fee,
        fees.maintenance_fee,
        fees.imaging_access_fee,
        fees.imaging_maintenance_fee,
        fees.currency,
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "fee.schedule").target(format!("tier:{}", tier_name(tier))).details(
            json!({ "access_fee": saved.access_fee, "maintenance_fee": saved.maintenance_fee,
                    "imaging_access_fee": saved.imaging_access_fee,
                    "imaging_maintenance_fee": saved.imaging_maintenance_fee, "currency": saved.currency }),
        ),
    )
    .await?;
    Ok(saved)
}

/// Records the fee the schedule sets for `scope` (`kind` is `access` or
/// `maintenance`); see [`charge_fee`]. Returns the amount.
pub async fn charge(
    tx: &mut PgConnection,
    application_id: Uuid,
    grant_id: Uuid,
    scope: &Scope,
    kind: &str,
) -> Result<Option<i64>, ApiError> {
    let kind = match kind {
        "access" => FeeKind::Access,
        "maintenance" => FeeKind::Maintenance,
        other => return Err(ApiError::Internal(anyhow::anyhow!("no fee is of the kind `{other}`"))),
    };
    charge_fee(tx, application_id, grant_id, scope, kind).await
}

/// Records the fee the schedule sets for `scope`: the fee of the strictest
/// tier among its cohorts, plus that tier's imaging surcharge when the scope
/// holds imaging (nothing when the total is zero). Returns the amount.
pub async fn charge_fee(
    tx: &mut PgConnection,
    application_id: Uuid,
    grant_id: Uuid,
    scope: &Scope,
    kind: FeeKind,
) -> Result<Option<i64>, ApiError> {
    let due = sqlx::query!(
        "select f.tier, f.access_fee, f.maintenance_fee, f.imaging_access_fee, f.imaging_maintenance_fee, f.currency
         from fee_schedule f
         where f.tier in (select tier from cohort where slug = any($1))
         order by case f.tier when 'controlled' then 0 when 'registered' then 1 else 2 end limit 1",
        &scope.cohorts
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(due) = due else { return Ok(None) };
    let (base_amount, imaging_amount) = match kind {
        FeeKind::Access => (due.access_fee, due.imaging_access_fee),
        FeeKind::Maintenance => (due.maintenance_fee, due.imaging_maintenance_fee),
    };
    let mut basis = Vec::new();
    if base_amount > 0 {
        basis.push(FeeItem { item: format!("{} tier {kind}", due.tier), amount: base_amount });
    }
    if scope.imaging && imaging_amount > 0 {
        basis.push(FeeItem { item: format!("imaging {kind}"), amount: imaging_amount });
    }
    let amount = basis
        .iter()
        .try_fold(0_i64, |sum, b| sum.checked_add(b.amount))
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a fee's items overflow")))?;
    if amount == 0 {
        return Ok(None);
    }
    sqlx::query!(
        "insert into fee (application_id, grant_id, kind, amount, currency, basis) values ($1, $2, $3, $4, $5, $6)",
        application_id,
        grant_id,
        kind as FeeKind,
        amount,
        due.currency,
        sqlx::types::Json(&basis) as _,
    )
    .execute(&mut *tx)
    .await?;
    Ok(Some(amount))
}

/// A fee as stored: its basis still to be read.
struct FeeRow {
    id: Uuid,
    application_id: Uuid,
    grant_id: Option<Uuid>,
    kind: FeeKind,
    amount: i64,
    currency: String,
    basis: Value,
    settlement: Option<FeeSettlement>,
    settlement_note: Option<String>,
    settled_by: Option<String>,
    settled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl TryFrom<FeeRow> for Fee {
    type Error = ApiError;

    /// A basis that cannot be read refuses (fail closed), never counts as none.
    fn try_from(row: FeeRow) -> Result<Self, ApiError> {
        let basis = super::read_stored(row.basis, "a fee's basis", &row.id)?;
        Ok(Fee {
            id: row.id,
            application_id: row.application_id,
            grant_id: row.grant_id,
            kind: row.kind,
            amount: row.amount,
            currency: row.currency,
            basis,
            settlement: row.settlement,
            settlement_note: row.settlement_note,
            settled_by: row.settled_by,
            settled_at: row.settled_at,
            created_at: row.created_at,
        })
    }
}

/// The fees of an application, oldest first.
pub async fn fees(db: impl PgExecutor<'_>, application_id: Uuid) -> Result<Vec<Fee>, ApiError> {
    sqlx::query_as!(
        FeeRow,
        r#"select fee_id as id, application_id, grant_id, kind as "kind: FeeKind", amount, currency, basis,
                  settlement as "settlement: FeeSettlement", settlement_note, settled_by, settled_at, created_at
           from fee where application_id = $1 order by created_at"#,
        application_id
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(Fee::try_from)
    .collect()
}

/// Every fee still owed, oldest first (stewards and admins).
pub async fn unsettled(db: impl PgExecutor<'_>, principal: &Principal) -> Result<Vec<Fee>, ApiError> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    sqlx::query_as!(
        FeeRow,
        r#"select fee_id as id, application_id, grant_id, kind as "kind: FeeKind", amount, currency, basis,
                  settlement as "settlement: FeeSettlement", settlement_note, settled_by, settled_at, created_at
           from fee where settlement is null order by created_at"#,
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(Fee::try_from)
    .collect()
}

/// Records that a fee is paid or waived (stewards and admins); returns the settled fee.
pub async fn settle(
    tx: &mut PgConnection,
    principal: &Principal,
    fee_id: Uuid,
    settlement: &str,
    note: &str,
) -> Result<Fee, ApiError> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let settlement = FeeSettlement::parse(settlement)
        .ok_or_else(|| ApiError::BadRequest("`settlement` is paid or waived".into()))?;
    let note = note.trim();
    if note.is_empty() || note.chars().count() > 500 {
        return Err(ApiError::BadRequest(
            "`note` (a payment reference or the waiver's reason) is 1 to 500 characters".into(),
        ));
    }
    let updated = sqlx::query_scalar!(
        "update fee set settlement = $2, settlement_note = $3, settled_by = $4, settled_at = now()
         where fee_id = $1 and settlement is null returning application_id",
        fee_id,
        settlement as FeeSettlement,
        note,
        principal.username,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(application) = updated else {
        let exists = sqlx::query_scalar!(r#"select exists (select 1 from fee where fee_id = $1) as "exists!""#, fee_id)
            .fetch_one(&mut *tx)
            .await?;
        return Err(if exists {
            ApiError::Conflict("the fee is already settled".into())
        } else {
            ApiError::NotFound("fee")
        });
    };
    audit::record(
        tx,
        NewEvent::new(&principal.username, "fee.settle")
            .target(format!("application:{application}"))
            .details(json!({ "fee": fee_id, "settlement": settlement, "note": note })),
    )
    .await?;
    let fee = fees(&mut *tx, application).await?.into_iter().find(|f| f.id == fee_id);
    fee.ok_or(ApiError::NotFound("fee"))
}

// ---------------------------------------------------------------- obligations

/// What a project must do under a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ObligationKind {
    /// Each year of the grant, and at the end of a renewal too short for a yearly one.
    ProgressReport,
    /// At the end, where a cohort's consent asks for it (DUO RTN).
    ResultsReturn,
    /// At the end, where a cohort's consent asks for publication (DUO PUB).
    PublicationNotice,
    /// 30 days after the end: every copy of the data is deleted.
    DeletionAttestation,
}

impl ObligationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProgressReport => "progress_report",
            Self::ResultsReturn => "results_return",
            Self::PublicationNotice => "publication_notice",
            Self::DeletionAttestation => "deletion_attestation",
        }
    }
}

/// A duty of a project under a grant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Obligation {
    pub id: Uuid,
    pub grant_id: Uuid,
    pub project_id: Uuid,
    /// `progress_report`, `results_return`, `publication_notice` or `deletion_attestation`.
    #[schema(value_type = String)]
    pub kind: ObligationKind,
    pub due_on: NaiveDate,
    pub fulfilled_at: Option<DateTime<Utc>>,
    pub fulfilled_by: Option<String>,
    pub statement: Option<String>,
    /// Past its due date and not fulfilled.
    pub overdue: bool,
}

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
    let mut duties: Vec<(ObligationKind, NaiveDate)> = Vec::new();
    let mut year = 1;
    while let Some(due) = from.checked_add_months(Months::new(12 * year)).filter(|d| *d < until) {
        duties.push((ObligationKind::ProgressReport, due.date_naive()));
        year += 1;
    }
    let consent = sqlx::query!(
        r#"select coalesce(bool_or(consent_terms -> 'modifiers' ? 'RTN'), false) as "returns!",
                  coalesce(bool_or(consent_terms -> 'modifiers' ? 'PUB'), false) as "publishes!"
           from cohort where slug = any($1)"#,
        cohorts
    )
    .fetch_one(&mut *tx)
    .await?;
    if consent.returns {
        duties.push((ObligationKind::ResultsReturn, until.date_naive()));
    }
    if consent.publishes {
        duties.push((ObligationKind::PublicationNotice, until.date_naive()));
    }
    duties.push((ObligationKind::DeletionAttestation, until.date_naive() + chrono::Days::new(30)));
    for (kind, due) in &duties {
        sqlx::query!(
            "insert into obligation (grant_id, project_id, kind, due_on) values ($1, $2, $3, $4)",
            grant_id,
            project_id,
            *kind as ObligationKind,
            due
        )
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
    let moved = sqlx::query!(
        "delete from obligation where grant_id = $1 and fulfilled_at is null
         and kind in ('deletion_attestation', 'results_return', 'publication_notice')",
        grant_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if from.checked_add_months(Months::new(12)).is_none_or(|first| first >= until) {
        sqlx::query!(
            "insert into obligation (grant_id, project_id, kind, due_on) values ($1, $2, $3, $4)",
            grant_id,
            project_id,
            ObligationKind::ProgressReport as ObligationKind,
            until.date_naive()
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(moved)
}

/// Obligations by due date: of one project or of all, only the overdue ones or all.
pub async fn obligations(
    db: impl PgExecutor<'_>,
    project_id: Option<Uuid>,
    overdue_only: bool,
) -> Result<Vec<Obligation>, ApiError> {
    Ok(sqlx::query_as!(
        Obligation,
        r#"select obligation_id as id, grant_id, project_id, kind as "kind: ObligationKind", due_on, fulfilled_at,
                  fulfilled_by, statement, (fulfilled_at is null and due_on < current_date) as "overdue!"
           from obligation
           where ($1::uuid is null or project_id = $1) and (not $2 or (fulfilled_at is null and due_on < current_date))
           order by due_on, kind"#,
        project_id,
        overdue_only
    )
    .fetch_all(db)
    .await?)
}

/// Every project's obligations (stewards and admins), only the overdue ones with `overdue_only`.
pub async fn all_obligations(
    db: impl PgExecutor<'_>,
    principal: &Principal,
    overdue_only: bool,
) -> Result<Vec<Obligation>, ApiError> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    obligations(db, None, overdue_only).await
}

pub async fn obligation(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Obligation>, ApiError> {
    Ok(sqlx::query_as!(
        Obligation,
        r#"select obligation_id as id, grant_id, project_id, kind as "kind: ObligationKind", due_on, fulfilled_at,
                  fulfilled_by, statement, (fulfilled_at is null and due_on < current_date) as "overdue!"
           from obligation where obligation_id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?)
}

/// The PI fulfils an obligation with a statement: a progress report, the
/// returned results, an attestation. Returns the fulfilled obligation.
pub async fn fulfil(
    tx: &mut PgConnection,
    principal: &Principal,
    obligation_id: Uuid,
    text: &str,
) -> Result<Obligation, ApiError> {
    let text = statement("statement", text)?;
    let found = obligation(&mut *tx, obligation_id).await?.ok_or(ApiError::NotFound("obligation"))?;
    super::standing::standing(&mut *tx, found.project_id, principal)
        .await?
        .require_pi("obligation", "only the project's PI does this")?;
    let done = sqlx::query!(
        "update obligation set fulfilled_at = now(), fulfilled_by = $2, statement = $3
         where obligation_id = $1 and fulfilled_at is null",
        obligation_id,
        principal.username,
        text
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(ApiError::Conflict("the obligation is already fulfilled".into()));
    }
    audit::record(
        tx,
        NewEvent::new(&principal.username, "obligation.fulfil").target(format!("grant:{}", found.grant_id)).details(
            json!({ "obligation": obligation_id, "kind": found.kind, "due_on": found.due_on, "overdue": found.overdue }),
        ),
    )
    .await?;
    obligation(&mut *tx, obligation_id).await?.ok_or(ApiError::NotFound("obligation"))
}

// ---------------------------------------------------------------- notifications

/// Something to act on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notification {
    pub id: Uuid,
    /// The person, or `role:steward` for every steward.
    pub recipient: String,
    pub kind: String,
    pub subject: String,
    pub target: Option<String>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// The caller's notifications, newest first (stewards also see those to every
/// steward). An invitation to a project the caller has since left, or was
/// removed from, is no longer shown: it names a project they may not see.
pub async fn notifications(db: impl PgExecutor<'_>, principal: &Principal) -> Result<Vec<Notification>, ApiError> {
    Ok(sqlx::query_as!(
        Notification,
        "select notification_id as id, recipient, kind, subject, target, created_at, read_at from notification n
         where (recipient = $1 or ($2 and recipient = 'role:steward'))
           and (kind <> 'project.invitation'
                or exists (select 1 from project_member m
                           where n.target = 'project:' || m.project_id and m.username = n.recipient
                             and m.removed_at is null))
         order by created_at desc limit 200",
        principal.username,
        super::projects::is_steward(principal)
    )
    .fetch_all(db)
    .await?)
}

/// Marks one of the caller's notifications read.
pub async fn mark_read(db: impl PgExecutor<'_>, principal: &Principal, id: Uuid) -> Result<(), ApiError> {
    let done = sqlx::query!(
        "update notification set read_at = coalesce(read_at, now())
         where notification_id = $1 and (recipient = $2 or ($3 and recipient = 'role:steward'))",
        id,
        principal.username,
        super::projects::is_steward(principal)
    )
    .execute(db)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(ApiError::NotFound("notification"));
    }
    Ok(())
}
