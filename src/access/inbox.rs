//! The steward's inbox: everything that waits for a steward, in one answer,
//! each list from the service function that owns it (and checks the caller).

use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::duties::{self, Fee, Obligation};
use super::projects::{self, Profile};
use super::renewals::{self, RenewalItem};
use super::review::{self, QueueItem};
use super::withdrawal::{self, Notice};
use crate::auth::Principal;
use crate::catalog::{QuarantinedInstance, quarantine};
use crate::error::ApiError;

/// What waits for a steward.
#[derive(Debug, Serialize, ToSchema)]
pub struct Inbox {
    /// Applications waiting for the committee, oldest due first, with their age and due date.
    pub applications: Vec<QueueItem>,
    /// Renewals waiting for a decision, oldest first.
    pub renewals: Vec<RenewalItem>,
    /// Fees neither paid nor waived, oldest first.
    pub unpaid_fees: Vec<Fee>,
    /// Duties past their due date and not fulfilled, by due date.
    pub overdue_duties: Vec<Obligation>,
    /// Withdrawal notices the projects' PIs have not acknowledged, oldest first.
    pub unacknowledged_notices: Vec<Notice>,
    /// Instances held in quarantine, oldest first.
    pub quarantine: Vec<QuarantinedInstance>,
    /// Researcher profiles whose bona fides no steward has verified yet.
    pub profiles_to_verify: Vec<Profile>,
}

/// Everything that waits for a steward (stewards and admins).
pub async fn gather(conn: &mut PgConnection, principal: &Principal) -> Result<Inbox, ApiError> {
    review::steward(principal)?;
    Ok(Inbox {
        applications: review::queue(&mut *conn, principal).await?,
        renewals: renewals::list(&mut *conn, principal, None).await?,
        unpaid_fees: duties::unsettled(&mut *conn, principal).await?,
        overdue_duties: duties::all_obligations(&mut *conn, principal, true).await?,
        unacknowledged_notices: withdrawal::open_notices(&mut *conn, principal, true).await?,
        quarantine: quarantine::list(&mut *conn, principal).await?,
        profiles_to_verify: projects::list_profiles(&mut *conn, true).await?,
    })
}
