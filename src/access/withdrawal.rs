//! Withdrawal of consent, shared by the stewards' endpoint and subject
//! imports: the subject leaves discovery (fully, or their imaging only) and
//! every project that may hold their data gets a notice listing the subject
//! under that project's own pseudonym, for its PI to acknowledge.
//!
//! The service functions take the transaction (or a connection, to read) and
//! the caller, and check the caller themselves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::projects::STEWARDS;
use super::standing::{InProject, standing};
use super::{duties, grants, snapshot};
use crate::audit::{self, NewEvent};
use crate::auth::Principal;
use crate::deid::pseudonym::{RegistryKey, project_subject};
use crate::error::ApiError;

/// What is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = WithdrawalScope)]
pub enum Scope {
    /// Everything: the subject leaves discovery and every future extract.
    Full,
    /// Imaging only: the subject's images leave; tables stay.
    Imaging,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Imaging => "imaging",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "full" => Some(Self::Full),
            "imaging" => Some(Self::Imaging),
            _ => None,
        }
    }

    /// Whether a subject already withdrawn to `before` is withdrawn to this extent.
    pub fn covered_by(self, before: Option<&str>) -> bool {
        before == Some("full") || before == Some(self.as_str())
    }
}

/// What a withdrawal did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Projects notified.
    pub notices: usize,
    /// Published series that left discovery.
    pub series_removed: u64,
}

/// Withdraws the subject `subject_id` (registry pseudonym `pseudonym`) to
/// `scope` in `tx`. The caller has checked that it is not withdrawn to that
/// extent already, and audits.
pub async fn withdraw(
    tx: &mut PgConnection,
    key: &RegistryKey,
    subject_id: Uuid,
    pseudonym: &str,
    scope: Scope,
) -> Result<Outcome, ApiError> {
    sqlx::query!(
        "update subject set withdrawal_scope = $2,
                            withdrawn_at = case when $2 = 'full' then now() else withdrawn_at end
         where subject_id = $1",
        subject_id,
        scope.as_str(),
    )
    .execute(&mut *tx)
    .await?;
    let series_removed = sqlx::query!("delete from discovery_series where subject_id = $1", subject_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let mut notices = 0;
    for project in snapshot::holders(&mut *tx, subject_id, scope.as_str()).await? {
        let Some(project_key) = grants::project_key(&mut *tx, key, project).await? else { continue };
        sqlx::query!(
            "insert into withdrawal_notice (project_id, subject_id, scope, project_pseudonym) values ($1, $2, $3, $4)",
            project,
            subject_id,
            scope.as_str(),
            project_subject(&project_key, pseudonym),
        )
        .execute(&mut *tx)
        .await?;
        let pi = duties::pi_of(&mut *tx, project).await?;
        duties::notify(
            tx,
            &pi,
            "withdrawal.notice",
            "A participant withdrew: delete their data and acknowledge the notice",
            &format!("project:{project}"),
        )
        .await?;
        notices += 1;
    }
    crate::release::build::supersede_holding(tx, subject_id, scope.as_str()).await?;
    Ok(Outcome { notices, series_removed })
}

/// A subject as a steward names them: by registry pseudonym, or by site and
/// local patient ID (pseudonymized here, never stored or logged: no `Debug`).
#[derive(Clone, Copy)]
pub struct Named<'a> {
    /// The registry pseudonym (`sub-…`).
    pub pseudonym: Option<&'a str>,
    /// The site's code, with `patient_id`.
    pub site: Option<&'a str>,
    /// The local patient ID at `site`.
    pub patient_id: Option<&'a str>,
    /// Issuer of Patient ID (0010,0021) of `patient_id`, when the images carry one.
    pub issuer: Option<&'a str>,
}

/// What a steward's withdrawal did, to whom.
#[derive(Debug, Clone)]
pub struct Withdrawn {
    /// The subject's registry pseudonym.
    pub pseudonym: String,
    pub outcome: Outcome,
}

/// Withdraws the subject `named` to `scope` (stewards and admins), unless
/// they are withdrawn to that extent already, and audits it.
pub async fn withdraw_subject(
    tx: &mut PgConnection,
    principal: &Principal,
    key: &RegistryKey,
    named: Named<'_>,
    scope: Scope,
) -> Result<Withdrawn, ApiError> {
    principal.require_any(STEWARDS)?;
    let pseudonym = match (named.pseudonym, named.site, named.patient_id) {
        (Some(p), None, None) => p.trim().to_owned(),
        (None, Some(site), Some(id)) if !id.trim().is_empty() => key.subject_issued(site.trim(), id, named.issuer),
        _ => {
            return Err(ApiError::BadRequest(
                "name the subject by `pseudonym`, or by `site` and `patient_id` (not both)".into(),
            ));
        }
    };
    let subject = sqlx::query!(
        r#"select subject_id, withdrawal_scope as "withdrawal_scope: Scope"
           from subject where pseudonym = $1 for update"#,
        pseudonym,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("subject"))?;
    let before = subject.withdrawal_scope;
    if scope.covered_by(before.map(Scope::as_str)) {
        return Err(ApiError::Conflict(format!(
            "the subject has already withdrawn ({})",
            before.map_or("", Scope::as_str)
        )));
    }
    let outcome = withdraw(tx, key, subject.subject_id, &pseudonym, scope).await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "subject.withdraw")
            .target(format!("subject:{pseudonym}"))
            .details(json!({ "scope": scope, "notices": outcome.notices, "series_removed": outcome.series_removed })),
    )
    .await?;
    Ok(Withdrawn { pseudonym, outcome })
}

/// A withdrawal notice to a project.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notice {
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

/// A project's withdrawal notices, newest first (its members, stewards and admins).
pub async fn project_notices(conn: &mut PgConnection, caller: &InProject) -> Result<Vec<Notice>, ApiError> {
    caller.standing.require_reader("project")?;
    Ok(sqlx::query_as!(
        Notice,
        r#"select notice_id as id, project_id, scope, project_pseudonym, created_at, acknowledged_at, acknowledged_by
           from withdrawal_notice where project_id = $1 order by created_at desc"#,
        caller.project_id,
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Every project's withdrawal notices, oldest first, or only those not
/// acknowledged yet (stewards and admins).
pub async fn open_notices(
    conn: &mut PgConnection,
    principal: &Principal,
    unacknowledged: bool,
) -> Result<Vec<Notice>, ApiError> {
    principal.require_any(STEWARDS)?;
    Ok(sqlx::query_as!(
        Notice,
        r#"select notice_id as id, project_id, scope, project_pseudonym, created_at, acknowledged_at, acknowledged_by
           from withdrawal_notice where not $1 or acknowledged_at is null order by created_at"#,
        unacknowledged,
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Acknowledges a notice once the subject's data is deleted (the project's PI):
/// the acknowledged notice.
pub async fn acknowledge(tx: &mut PgConnection, principal: &Principal, notice_id: Uuid) -> Result<Notice, ApiError> {
    let project = sqlx::query_scalar!("select project_id from withdrawal_notice where notice_id = $1", notice_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound("notice"))?;
    standing(&mut *tx, project, principal)
        .await?
        .require_pi("notice", "only the project's PI acknowledges a withdrawal notice")?;
    let notice = sqlx::query_as!(
        Notice,
        r#"update withdrawal_notice set acknowledged_at = now(), acknowledged_by = $2
           where notice_id = $1 and acknowledged_at is null
           returning notice_id as id, project_id, scope, project_pseudonym, created_at, acknowledged_at,
                     acknowledged_by"#,
        notice_id,
        principal.username,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::Conflict("the notice is already acknowledged".into()))?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "withdrawal.acknowledge")
            .target(format!("project:{project}"))
            .details(json!({ "notice": notice_id })),
    )
    .await?;
    Ok(notice)
}
