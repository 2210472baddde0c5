//! Closing a project once its data is deleted: the PI's deletion attestation
//! is recorded, open applications are withdrawn, every grant is closed, the
//! open duties are discharged and the project's pseudonymization key is
//! destroyed, so its pseudonyms can no longer be linked.

use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::duties::statement;
use super::grants::{self, Change, GrantState};
use super::standing::standing;
use super::state::{Action, Actor};
use crate::audit::{self, NewEvent};
use crate::auth::Principal;
use crate::error::ApiError;

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

/// Why what closing changes was changed.
const CLOSED: &str = "the project was closed";

/// The PI closes the project with the attestation that every copy of its data is deleted.
pub async fn close(
    tx: &mut PgConnection,
    principal: &Principal,
    project_id: Uuid,
    attestation: &str,
) -> Result<Closed, ApiError> {
    let attestation = statement("deletion_attestation", attestation)?;
    standing(&mut *tx, project_id, principal).await?.require_pi("project", "only the project's PI does this")?;
    let closed = sqlx::query!(
        "update project set closed_at = now(), deletion_attestation = $2 where project_id = $1 and closed_at is null",
        project_id,
        attestation
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if closed == 0 {
        return Err(ApiError::Conflict("the project is already closed".into()));
    }
    // Open applications are withdrawn: a closed project gets no new grant.
    let open = sqlx::query_scalar!(
        "select application_id from application where project_id = $1
         and state in ('draft', 'submitted', 'under_review', 'changes_requested') order by created_at",
        project_id
    )
    .fetch_all(&mut *tx)
    .await?;
    for application in &open {
        let locked = super::db::lock(tx, *application).await?.ok_or(ApiError::NotFound("application"))?;
        super::review::advance(tx, &locked, Action::Withdraw, Actor::Applicant, &principal.username, Some(CLOSED))
            .await?;
    }
    let mut grants_closed = 0;
    for grant in grants::of_project(&mut *tx, project_id).await? {
        if matches!(grant.state, GrantState::Closed | GrantState::Revoked) {
            continue;
        }
        grants::transition(tx, principal, grant.id, Change::Close { reason: CLOSED }).await?;
        grants_closed += 1;
    }
    // Renewals still waiting can no longer be granted: rejected, and said so.
    let renewals_rejected = sqlx::query!(
        "update grant_renewal set state = 'rejected', decided_by = $2, decided_at = now(), reason = $3
         where state = 'requested'
           and grant_id in (select grant_id from access_grant where project_id = $1)",
        project_id,
        principal.username,
        CLOSED
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        "update obligation set fulfilled_at = now(), fulfilled_by = $2, statement = $3
         where project_id = $1 and kind = 'deletion_attestation' and fulfilled_at is null",
        project_id,
        principal.username,
        attestation
    )
    .execute(&mut *tx)
    .await?;
    // The other open duties can no longer apply: discharged, and said so.
    let discharged = sqlx::query!(
        "update obligation set fulfilled_at = now(), fulfilled_by = $2,
                statement = 'no longer applies: the project was closed'
         where project_id = $1 and fulfilled_at is null",
        project_id,
        principal.username
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let key_destroyed = sqlx::query!("delete from project_key where project_id = $1", project_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "project.close")
            .target(format!("project:{project_id}"))
            .details(json!({
                "grants_closed": grants_closed,
                "applications_withdrawn": open,
                "duties_discharged": discharged,
                "renewals_rejected": renewals_rejected,
                "key_destroyed": key_destroyed,
                "deletion_attestation_sha256": hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, attestation.as_bytes())),
            })),
    )
    .await?;
    Ok(Closed { project_id, grants_closed, applications_withdrawn: open.len(), key_destroyed })
}
