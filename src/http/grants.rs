//! Grants over REST: a project's grants with their history (members and
//! stewards), and the stewards' suspension, reinstatement and revocation,
//! each a new version that takes effect on the very next request.

use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath};
use crate::access::grants::{self, Grant, GrantState, NewVersion};
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_grants)).routes(routes!(grant_history)).routes(routes!(change_grant))
}

/// A project's grants.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantList {
    /// The version in force of each grant, newest grant first.
    pub grants: Vec<Grant>,
}

/// List a project's grants (members and stewards).
#[utoipa::path(
    get,
    path = "/projects/{id}/grants",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "Grants in force, with their effective state", body = GrantList),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_grants(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<GrantList>> {
    if !crate::access::projects::readable(&state.db, id, &principal).await? {
        return Err(ApiError::NotFound("project"));
    }
    Ok(AppJson(GrantList { grants: grants::of_project(&state.db, id).await? }))
}

async fn visible_grant(state: &AppState, principal: &Principal, id: Uuid) -> Result<Vec<Grant>> {
    let history = grants::history(&state.db, id).await?;
    let Some(first) = history.first() else { return Err(ApiError::NotFound("grant")) };
    if !crate::access::projects::readable(&state.db, first.project_id, principal).await? {
        return Err(ApiError::NotFound("grant"));
    }
    Ok(history)
}

/// Every version of a grant, oldest first (members and stewards).
#[utoipa::path(
    get,
    path = "/grants/{id}",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Grant id")),
    responses(
        (status = 200, description = "The grant's versions", body = [Grant]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn grant_history(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Vec<Grant>>> {
    Ok(AppJson(visible_grant(&state, &principal, id).await?))
}

/// What a steward does to a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantAction {
    Suspend,
    Reinstate,
    Revoke,
}

/// A change of a grant's state, with its reason.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantChange {
    pub action: GrantAction,
    /// Why (an overdue report, an incident, ...): shown to the project.
    pub reason: String,
}

/// Suspend, reinstate or revoke a grant (stewards and admins), effective immediately.
#[utoipa::path(
    post,
    path = "/grants/{id}/state",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Grant id")),
    request_body = GrantChange,
    responses(
        (status = 200, description = "The new version in force", body = Grant),
        (status = 409, description = "Not possible from the grant's state", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn change_grant(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<GrantChange>,
) -> Result<AppJson<Grant>> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(ApiError::BadRequest("`reason` is 1 to 2,000 characters".into()));
    }
    let mut tx = state.db.begin().await?;
    let current = grants::latest_for_update(&mut tx, id).await?.ok_or(ApiError::NotFound("grant"))?;
    let to = match (request.action, current.effective_state) {
        (GrantAction::Suspend, GrantState::Active) => GrantState::Suspended,
        (GrantAction::Reinstate, GrantState::Suspended) => GrantState::Active,
        (GrantAction::Revoke, GrantState::Active | GrantState::Suspended | GrantState::Pending) => GrantState::Revoked,
        (action, from) => {
            return Err(ApiError::Conflict(format!(
                "a grant that is {} cannot be {}",
                from.as_str(),
                match action {
                    GrantAction::Suspend => "suspended",
                    GrantAction::Reinstate => "reinstated",
                    GrantAction::Revoke => "revoked",
                }
            )));
        }
    };
    let version = current.version + 1;
    grants::insert(
        &mut tx,
        NewVersion {
            grant_id: id,
            version,
            project_id: current.project_id,
            application_id: current.application_id,
            state: to,
            scope: &current.scope,
            conditions: &current.conditions,
            not_before: current.not_before,
            not_after: current.not_after,
            reason: Some(reason),
            created_by: &principal.username,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, &format!("grant.{}", match request.action {
            GrantAction::Suspend => "suspend",
            GrantAction::Reinstate => "reinstate",
            GrantAction::Revoke => "revoke",
        }))
        .target(format!("grant:{id}"))
        .details(json!({ "version": version, "from": current.effective_state, "to": to, "reason": reason, "at": Utc::now() })),
    )
    .await?;
    let pi = crate::access::duties::pi_of(&mut *tx, current.project_id).await?;
    crate::access::duties::notify(
        &mut tx,
        &pi,
        &format!("grant.{}", to.as_str()),
        &format!("A grant of your project is now {}: {reason}", to.as_str()),
        &format!("grant:{id}"),
    )
    .await?;
    tx.commit().await?;
    let latest = grants::history(&state.db, id).await?.pop().ok_or(ApiError::NotFound("grant"))?;
    Ok(AppJson(latest))
}
