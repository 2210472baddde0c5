//! Withdrawal of consent, shared by the stewards' endpoint and subject
//! imports: the subject leaves discovery (fully, or their imaging only) and
//! every project that may hold their data gets a notice listing the subject
//! under that project's own pseudonym, for its PI to acknowledge.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{duties, grants, snapshot};
use crate::deid::pseudonym::{RegistryKey, project_subject};
use crate::error::ApiError;

/// What is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
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
    sqlx::query(
        "update subject set withdrawal_scope = $2,
                            withdrawn_at = case when $2 = 'full' then now() else withdrawn_at end
         where subject_id = $1",
    )
    .bind(subject_id)
    .bind(scope.as_str())
    .execute(&mut *tx)
    .await?;
    let series_removed = sqlx::query("delete from discovery_series where subject_id = $1")
        .bind(subject_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let mut notices = 0;
    for project in snapshot::holders(&mut *tx, subject_id, scope.as_str()).await? {
        let Some(project_key) = grants::project_key(&mut *tx, key, project).await? else { continue };
        sqlx::query(
            "insert into withdrawal_notice (project_id, subject_id, scope, project_pseudonym) values ($1, $2, $3, $4)",
        )
        .bind(project)
        .bind(subject_id)
        .bind(scope.as_str())
        .bind(project_subject(&project_key, pseudonym))
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
    Ok(Outcome { notices, series_removed })
}
