//! Grants over REST: a project's grants with their history (members and
//! stewards), and the stewards' suspension, reinstatement and revocation,
//! each a new version that takes effect on the very next request.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::access::grants::{self, Grant, Need};
use crate::access::snapshot::{self, Snapshot};
use crate::access::standing::InProject;
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::Principal;
use crate::deid::pseudonym::project_subject;
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_grants))
        .routes(routes!(grant_history))
        .routes(routes!(change_grant))
        .routes(routes!(grant_snapshot))
        .routes(routes!(project_subjects))
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
pub async fn list_grants(State(state): State<AppState>, caller: InProject) -> Result<AppJson<GrantList>> {
    caller.standing.require_reader("project")?;
    let id = caller.project_id;
    Ok(AppJson(GrantList { grants: grants::of_project(&state.db, id).await? }))
}

async fn visible_grant(state: &AppState, principal: &Principal, id: Uuid) -> Result<Vec<Grant>> {
    grants::visible(&state.db, principal, id).await
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
    #[schema(max_length = 2000)]
    pub reason: String,
}

/// Suspend, reinstate or revoke a grant (stewards and admins), effective immediately.
#[utoipa::path(
    post,
    path = "/grants/{id}/state",
    tag = tags::GRANTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
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
    let mut tx = state.db.begin().await?;
    let changed = grants::steward_change(&mut tx, &principal, id, request.action.into(), &request.reason).await?;
    tx.commit().await?;
    Ok(AppJson(changed))
}

impl From<GrantAction> for grants::StewardAction {
    fn from(action: GrantAction) -> Self {
        match action {
            GrantAction::Suspend => Self::Suspend,
            GrantAction::Reinstate => Self::Reinstate,
            GrantAction::Revoke => Self::Revoke,
        }
    }
}

/// What a grant froze: its cohorts' snapshots.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantSnapshot {
    pub grant_id: Uuid,
    /// One per cohort of the grant's scope.
    pub snapshots: Vec<Snapshot>,
}

/// The cohort snapshots a grant covers (members and stewards).
#[utoipa::path(
    get,
    path = "/grants/{id}/snapshot",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Grant id")),
    responses(
        (status = 200, description = "Per cohort: the instant frozen, the subjects and their digest", body = GrantSnapshot),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn grant_snapshot(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<GrantSnapshot>> {
    visible_grant(&state, &principal, id).await?;
    Ok(AppJson(GrantSnapshot { grant_id: id, snapshots: snapshot::of_grant(&state.db, id).await? }))
}

/// Which subjects to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubjectsQuery {
    /// Cohort slug.
    pub cohort: String,
    /// Continue after this project pseudonym (the previous page's `next`).
    pub after: Option<String>,
    /// Page size, 1 to 10,000 (default 1,000).
    pub limit: Option<usize>,
}

/// A subject as a project knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectSubject {
    /// The project's own pseudonym for the subject.
    pub pseudonym: String,
    /// Whether the subject's imaging may be used (in scope and not withdrawn).
    pub imaging: bool,
}

/// The subjects a project may use in a cohort.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectPage {
    /// The grant that allows it.
    pub grant_id: Uuid,
    pub snapshot: Snapshot,
    /// Subjects of the snapshot who have withdrawn fully since: left out.
    pub withdrawn: usize,
    /// In the project's pseudonyms, sorted.
    pub subjects: Vec<ProjectSubject>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// The subjects of a cohort a project may use, under its own pseudonyms
/// (accepted members of a project with a grant in force). Row-level data: the
/// grant is checked on the request and every page served is audited.
#[utoipa::path(
    get,
    path = "/projects/{id}/subjects",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"), SubjectsQuery),
    responses(
        (status = 200, description = "The subjects of the grant's snapshot who have not withdrawn", body = SubjectPage),
        (status = 403, description = "No grant in force for the cohort; the code says why", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn project_subjects(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<SubjectsQuery>,
) -> Result<AppJson<SubjectPage>> {
    let limit = query.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::BadRequest("`limit` is 1 to 10,000".into()));
    }
    let need = Need { cohort: &query.cohort, imaging: false };
    let grant = match grants::check(&state.db, id, &principal.username, need, &state.config.access).await {
        Ok(grant) => grant,
        Err(e) => {
            grants::audit_refusal(&state.db, &principal.username, id, &e, "project.subjects").await?;
            return Err(e);
        }
    };
    let frozen = snapshot::of_grant(&state.db, grant.id)
        .await?
        .into_iter()
        .find(|s| s.cohort == query.cohort)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("grant {} has no snapshot of its cohort", grant.id)))?;
    let key = grants::project_key(&state.db, &state.ingest.key, id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("project {id} has a grant in force but no key")))?;
    let members = snapshot::members(&state.db, grant.id, &query.cohort).await?;
    let imaging_granted = grant.scope.imaging;
    let (withdrawn, subjects) = tokio::task::spawn_blocking(move || {
        let mut withdrawn = 0;
        let mut subjects = Vec::with_capacity(members.len());
        for m in members {
            match m.withdrawal_scope.as_deref() {
                Some("full") => withdrawn += 1,
                scope => subjects.push(ProjectSubject {
                    pseudonym: project_subject(&key, &m.pseudonym),
                    imaging: imaging_granted && scope.is_none(),
                }),
            }
        }
        subjects.sort_unstable_by(|a, b| a.pseudonym.cmp(&b.pseudonym));
        (withdrawn, subjects)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("listing subjects panicked: {e}")))?;
    let start = query.after.as_deref().map_or(0, |after| subjects.partition_point(|s| s.pseudonym.as_str() <= after));
    let mut page: Vec<ProjectSubject> = subjects.into_iter().skip(start).take(limit + 1).collect();
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last().map(|s| s.pseudonym.clone()).unwrap_or_default()
    });
    let mut tx = state.db.begin().await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "grant.subjects").target(format!("project:{id}")).details(json!({
            "grant": grant.id, "cohort": query.cohort, "after": query.after, "served": page.len(),
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(SubjectPage { grant_id: grant.id, snapshot: frozen, withdrawn, subjects: page, next }))
}
