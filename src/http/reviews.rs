//! The access committee over REST: the review queue, starting a review,
//! assignments with recusal, declarations of interest, votes that decide at
//! their quorum, and threaded comments whose edits keep every revision.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::applications::{is_steward, visible};
use super::extract::{AppJson, AppPath};
use crate::access::db::{self, ApplicationRow};
use crate::access::duties;
use crate::access::grants::Conditions;
use crate::access::review;
use crate::access::state::{Action, Actor, State as Stage};
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(queue))
        .routes(routes!(start_review))
        .routes(routes!(assign))
        .routes(routes!(unassign))
        .routes(routes!(declare))
        .routes(routes!(list_votes, vote))
        .routes(routes!(list_comments, comment))
        .routes(routes!(edit_comment))
}

fn steward(principal: &Principal) -> Result<()> {
    principal.require_any(&[Role::Steward, Role::Admin])
}

/// A steward's part in a review.
#[derive(Debug, Serialize, ToSchema)]
pub struct Assignment {
    pub steward: String,
    pub assigned_by: String,
    pub assigned_at: DateTime<Utc>,
    pub recused_at: Option<DateTime<Utc>>,
    pub recusal_reason: Option<String>,
    /// Whether the steward has declared their interests.
    pub declared: bool,
}

async fn assignments(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<Vec<Assignment>> {
    type Row = (String, String, DateTime<Utc>, Option<DateTime<Utc>>, Option<String>, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "select a.steward, a.assigned_by, a.assigned_at, a.recused_at, a.recusal_reason,
                exists (select 1 from interest_declaration d where d.application_id = a.application_id and d.steward = a.steward)
         from review_assignment a where a.application_id = $1 order by a.assigned_at",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(steward, assigned_by, assigned_at, recused_at, recusal_reason, declared)| Assignment {
            steward,
            assigned_by,
            assigned_at,
            recused_at,
            recusal_reason,
            declared,
        })
        .collect())
}

/// An application waiting for the committee.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueItem {
    pub application_id: Uuid,
    pub project_id: Uuid,
    pub project_title: String,
    pub title: String,
    pub state: Stage,
    pub version: i32,
    pub submitted_at: Option<DateTime<Utc>>,
    /// Days since the first submission.
    pub age_days: i64,
    pub due_on: Option<NaiveDate>,
    pub overdue: bool,
    pub assignments: Vec<Assignment>,
    /// Votes cast on the current version.
    pub votes: i64,
    /// Top-level fields that changed from the previous version.
    pub changed_since_previous: Vec<String>,
    /// What changed from the previous version, with the values on each side.
    pub changes: Vec<db::Change>,
    /// The project's current members with their institutions and whether a
    /// steward verified their bona fides (`institution` null: no profile).
    pub members: Vec<MemberBonaFides>,
}

/// A member as the committee weighs them.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct MemberBonaFides {
    pub username: String,
    /// `pi` or `collaborator`.
    pub role: String,
    pub institution: Option<String>,
    pub verified: bool,
}

async fn bona_fides(db: &sqlx::PgPool, project_id: Uuid) -> Result<Vec<MemberBonaFides>> {
    Ok(sqlx::query_as(
        "select m.username, m.role, r.institution, coalesce(r.verified_at is not null, false) as verified
         from project_member m left join researcher_profile r using (username)
         where m.project_id = $1 and m.removed_at is null order by m.role desc, m.username",
    )
    .bind(project_id)
    .fetch_all(db)
    .await?)
}

/// The committee's queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    pub items: Vec<QueueItem>,
}

/// Applications waiting for a decision, oldest due first (stewards and admins).
#[utoipa::path(
    get,
    path = "/reviews/queue",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Pending applications with age, due date, assignments, changes and the members' bona fides", body = Queue),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn queue(State(state): State<AppState>, principal: Principal) -> Result<AppJson<Queue>> {
    steward(&principal)?;
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "select a.application_id, p.title,
                (select count(*) from review_vote v where v.application_id = a.application_id and v.version = a.version)
         from application a join project p using (project_id)
         where a.state in ('submitted', 'under_review', 'changes_requested')
         order by a.due_on nulls last, a.submitted_at",
    )
    .fetch_all(&state.db)
    .await?;
    let today = Utc::now().date_naive();
    let mut items = Vec::with_capacity(rows.len());
    for (id, project_title, votes) in rows {
        let Some(app) = db::get(&state.db, id).await? else { continue };
        let versions = db::versions(&state.db, id).await?;
        let (fields, changes) = match versions.as_slice() {
            [.., before, after] => {
                (db::changed_fields(&before.content, &after.content), db::diff(Some(&before.content), &after.content))
            }
            _ => (Vec::new(), Vec::new()),
        };
        items.push(QueueItem {
            application_id: id,
            project_id: app.project_id,
            project_title,
            title: app.draft.title.clone(),
            state: app.state,
            version: app.version,
            submitted_at: app.submitted_at,
            age_days: app.submitted_at.map_or(0, |s| (Utc::now() - s).num_days()),
            due_on: app.due_on,
            overdue: app.due_on.is_some_and(|d| d < today),
            assignments: assignments(&state.db, id).await?,
            votes,
            changed_since_previous: fields,
            changes,
            members: bona_fides(&state.db, app.project_id).await?,
        });
    }
    Ok(AppJson(Queue { items }))
}

async fn locked(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<ApplicationRow> {
    db::lock(tx, id).await?.ok_or(ApiError::NotFound("application"))
}

/// Assigns `who` unless they must recuse; returns whether they were new.
async fn add_assignment(
    tx: &mut sqlx::PgConnection,
    state: &AppState,
    app: &ApplicationRow,
    who: &str,
    by: &str,
) -> Result<bool> {
    // Every reviewer, self-assigned or assigned: a profile (conflicts of interest are checked
    // against it) and, as of that profile, the steward or admin role.
    let (profile, steward_role): (bool, bool) = sqlx::query_as(
        "select exists (select 1 from researcher_profile where username = $1),
                exists (select 1 from app_user where username = $1 and roles && array['steward', 'admin'])",
    )
    .bind(who)
    .fetch_one(&mut *tx)
    .await?;
    if !profile {
        return Err(ApiError::BadRequest(format!(
            "`{who}` has no profile: a reviewer needs one, so that conflicts of interest can be checked"
        )));
    }
    if !steward_role {
        return Err(ApiError::BadRequest(format!(
            "`{who}` is not a steward (as of their profile: a steward saves it with a steward's token)"
        )));
    }
    if let Some(reason) = review::must_recuse(tx, &state.config.access, app.project_id, who).await? {
        return Err(ApiError::Refused {
            code: crate::error::Refusal::MustRecuse,
            message: format!("{who} cannot review it: {reason}"),
        });
    }
    let added = sqlx::query(
        "insert into review_assignment (application_id, steward, assigned_by) values ($1, $2, $3) on conflict do nothing",
    )
    .bind(app.id)
    .bind(who)
    .bind(by)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added == 1 {
        audit::record(
            tx,
            NewEvent::new(by, "review.assign")
                .target(format!("application:{}", app.id))
                .details(json!({ "steward": who })),
        )
        .await?;
    }
    Ok(added == 1)
}

/// Take a submitted application under review and assign oneself (stewards).
#[utoipa::path(
    post,
    path = "/applications/{id}/review",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "The assignments of the application, now under review", body = [Assignment]),
        (status = 403, description = "Must recuse (`must-recuse`) or not submitted (`invalid-transition`)", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn start_review(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Vec<Assignment>>> {
    steward(&principal)?;
    let mut tx = state.db.begin().await?;
    let app = locked(&mut tx, id).await?;
    add_assignment(&mut tx, &state, &app, &principal.username, &principal.username).await?;
    review::advance(&mut tx, &app, Action::StartReview, Actor::Steward, &principal.username, None).await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "review.start").target(format!("application:{id}")).details(json!({})),
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(assignments(&state.db, id).await?))
}

/// A steward to assign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    pub steward: String,
}

/// Assign a steward to a pending application (stewards). A steward who is a
/// member of the project, or (as configured) works at a member's institution,
/// cannot be assigned.
#[utoipa::path(
    post,
    path = "/applications/{id}/assignments",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = AssignRequest,
    responses(
        (status = 200, description = "The assignments", body = [Assignment]),
        (status = 403, description = "The steward must recuse (`must-recuse`)", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn assign(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<AssignRequest>,
) -> Result<AppJson<Vec<Assignment>>> {
    steward(&principal)?;
    let who = request.steward.trim();
    let mut tx = state.db.begin().await?;
    let app = locked(&mut tx, id).await?;
    if !app.state.pending() {
        return Err(ApiError::Conflict(format!(
            "the application is {}: there is nothing to review",
            app.state.as_str().replace('_', " ")
        )));
    }
    add_assignment(&mut tx, &state, &app, who, &principal.username).await?;
    tx.commit().await?;
    Ok(AppJson(assignments(&state.db, id).await?))
}

/// Take a steward off a pending application (stewards), as long as they have
/// not voted on its current version; their declarations stay on record.
#[utoipa::path(
    delete,
    path = "/applications/{id}/assignments/{steward}",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id"), ("steward" = String, Path, description = "The assigned steward")),
    responses(
        (status = 200, description = "The remaining assignments", body = [Assignment]),
        (status = 409, description = "Not pending, or the steward voted on the current version", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn unassign(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((id, who)): AppPath<(Uuid, String)>,
) -> Result<AppJson<Vec<Assignment>>> {
    steward(&principal)?;
    let mut tx = state.db.begin().await?;
    let app = locked(&mut tx, id).await?;
    if !app.state.pending() {
        return Err(ApiError::Conflict(format!(
            "the application is {}: its assignments are final",
            app.state.as_str().replace('_', " ")
        )));
    }
    let voted: bool = sqlx::query_scalar(
        "select exists (select 1 from review_vote where application_id = $1 and version = $2 and steward = $3)",
    )
    .bind(id)
    .bind(app.version)
    .bind(&who)
    .fetch_one(&mut *tx)
    .await?;
    if voted {
        return Err(ApiError::Conflict(format!("`{who}` has voted on version {}: the vote stands", app.version)));
    }
    let removed = sqlx::query("delete from review_assignment where application_id = $1 and steward = $2")
        .bind(id)
        .bind(&who)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ApiError::NotFound("assignment"));
    }
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "review.unassign")
            .target(format!("application:{id}"))
            .details(json!({ "steward": who })),
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(assignments(&state.db, id).await?))
}

/// A declaration of interests.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclarationRequest {
    /// Whether the steward has a competing interest; then they recuse.
    pub conflict: bool,
    /// The declaration in the steward's words (e.g. "no competing interests").
    pub statement: String,
}

/// Declare one's interests in an application one is assigned to (stewards).
#[utoipa::path(
    post,
    path = "/applications/{id}/declarations",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = DeclarationRequest,
    responses(
        (status = 201, description = "Recorded; with a conflict the steward is recused", body = [Assignment]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn declare(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<DeclarationRequest>,
) -> Result<(StatusCode, AppJson<Vec<Assignment>>)> {
    steward(&principal)?;
    let statement = request.statement.trim();
    if statement.is_empty() || statement.chars().count() > 5000 {
        return Err(ApiError::BadRequest("`statement` is 1 to 5,000 characters".into()));
    }
    let mut tx = state.db.begin().await?;
    let app = locked(&mut tx, id).await?;
    let assigned: bool = sqlx::query_scalar(
        "select exists (select 1 from review_assignment where application_id = $1 and steward = $2 and recused_at is null)",
    )
    .bind(id)
    .bind(&principal.username)
    .fetch_one(&mut *tx)
    .await?;
    if !assigned {
        return Err(ApiError::Forbidden("only stewards assigned to the application (and not recused) declare".into()));
    }
    sqlx::query(
        "insert into interest_declaration (application_id, steward, conflict, statement) values ($1, $2, $3, $4)",
    )
    .bind(app.id)
    .bind(&principal.username)
    .bind(request.conflict)
    .bind(statement)
    .execute(&mut *tx)
    .await?;
    if request.conflict {
        sqlx::query(
            "update review_assignment set recused_at = now(), recusal_reason = 'declared a competing interest'
             where application_id = $1 and steward = $2",
        )
        .bind(id)
        .bind(&principal.username)
        .execute(&mut *tx)
        .await?;
    }
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "review.declare")
            .target(format!("application:{id}"))
            .details(json!({ "conflict": request.conflict, "recused": request.conflict })),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(assignments(&state.db, id).await?)))
}

/// How a steward votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    Approve,
    ApproveWithConditions,
    RequestChanges,
    Reject,
}

impl VoteKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::ApproveWithConditions => "approve_with_conditions",
            Self::RequestChanges => "request_changes",
            Self::Reject => "reject",
        }
    }
}

/// A vote on the current version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    pub vote: VoteKind,
    /// Required with `approve_with_conditions`.
    pub conditions: Option<Conditions>,
    /// Required with `request_changes` (what to change) and `reject` (the reason).
    pub comment: Option<String>,
}

/// A recorded vote.
#[derive(Debug, Serialize, ToSchema)]
pub struct Vote {
    pub version: i32,
    pub steward: String,
    pub vote: String,
    pub conditions: Option<Conditions>,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

async fn votes_of(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<Vec<Vote>> {
    type Row = (i32, String, String, Option<serde_json::Value>, Option<String>, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "select version, steward, vote, conditions, comment, at from review_vote where application_id = $1
         order by version, at",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(version, steward, vote, conditions, comment, at)| Vote {
            version,
            steward,
            vote,
            conditions: conditions.and_then(|c| serde_json::from_value(c).ok()),
            comment,
            at,
        })
        .collect())
}

/// Votes on an application, every version (stewards; the project's members once decided).
#[utoipa::path(
    get,
    path = "/applications/{id}/votes",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "Votes by version", body = [Vote]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_votes(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Vec<Vote>>> {
    let app = visible(&state, &principal, id).await?;
    if !is_steward(&principal) && app.state.pending() {
        return Err(ApiError::Forbidden("votes are shown to applicants once the committee has decided".into()));
    }
    Ok(AppJson(votes_of(&state.db, id).await?))
}

/// Vote on the current version (an assigned steward who declared and is not
/// recused). A request for changes sends the application back to its PI at
/// once; approvals or rejections decide when they reach the quorum of the
/// cohorts' tier.
#[utoipa::path(
    post,
    path = "/applications/{id}/votes",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = VoteRequest,
    responses(
        (status = 201, description = "The votes so far; the application may have moved on", body = [Vote]),
        (status = 409, description = "Already voted on this version", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn vote(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<VoteRequest>,
) -> Result<(StatusCode, AppJson<Vec<Vote>>)> {
    steward(&principal)?;
    let comment = request.comment.as_deref().map(str::trim).filter(|c| !c.is_empty());
    match request.vote {
        VoteKind::ApproveWithConditions if request.conditions.is_none() => {
            return Err(ApiError::BadRequest("`approve_with_conditions` needs `conditions`".into()));
        }
        VoteKind::RequestChanges | VoteKind::Reject if comment.is_none() => {
            return Err(ApiError::BadRequest(format!(
                "`{}` needs a `comment` that tells the applicant why",
                request.vote.as_str()
            )));
        }
        _ => {}
    }
    let mut tx = state.db.begin().await?;
    let app = locked(&mut tx, id).await?;
    if app.state != Stage::UnderReview {
        return Err(ApiError::Refused {
            code: crate::error::Refusal::InvalidTransition,
            message: format!(
                "votes are cast under review; the application is {}",
                app.state.as_str().replace('_', " ")
            ),
        });
    }
    let (assigned, declared): (bool, bool) = sqlx::query_as(
        "select exists (select 1 from review_assignment where application_id = $1 and steward = $2 and recused_at is null),
                exists (select 1 from interest_declaration where application_id = $1 and steward = $2 and not conflict)",
    )
    .bind(id)
    .bind(&principal.username)
    .fetch_one(&mut *tx)
    .await?;
    if !assigned {
        return Err(ApiError::Forbidden("only stewards assigned to the application (and not recused) vote".into()));
    }
    if !declared {
        return Err(ApiError::Conflict("declare your interests (POST …/declarations) before voting".into()));
    }
    let conditions = request.conditions.clone().filter(|_| request.vote == VoteKind::ApproveWithConditions);
    let inserted = sqlx::query(
        "insert into review_vote (application_id, version, steward, vote, conditions, comment)
         values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
    )
    .bind(id)
    .bind(app.version)
    .bind(&principal.username)
    .bind(request.vote.as_str())
    .bind(conditions.as_ref().map(serde_json::to_value).transpose().map_err(|e| ApiError::Internal(e.into()))?)
    .bind(comment)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::Conflict(format!("you have already voted on version {}", app.version)));
    }
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "review.vote").target(format!("application:{id}")).details(json!({
            "version": app.version,
            "vote": request.vote.as_str(),
            "comment": comment,
            "conditions": conditions,
        })),
    )
    .await?;
    decide(&mut tx, &state, &app, request.vote, comment, &principal.username).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(votes_of(&state.db, id).await?)))
}

/// What the votes on the current version decide, if anything yet.
async fn decide(
    tx: &mut sqlx::PgConnection,
    state: &AppState,
    app: &ApplicationRow,
    last: VoteKind,
    comment: Option<&str>,
    who: &str,
) -> Result<()> {
    let pi = duties::pi_of(&mut *tx, app.project_id).await?;
    let target = format!("application:{}", app.id);
    if last == VoteKind::RequestChanges {
        review::advance(tx, app, Action::RequestChanges, Actor::Steward, who, comment).await?;
        duties::notify(
            tx,
            &pi,
            "application.changes_requested",
            "The committee asks for changes to your application",
            &target,
        )
        .await?;
        return Ok(());
    }
    let votes: Vec<(String, Option<serde_json::Value>, Option<String>)> = sqlx::query_as(
        "select v.vote, v.conditions, v.comment from review_vote v
         join review_assignment a on a.application_id = v.application_id and a.steward = v.steward and a.recused_at is null
         where v.application_id = $1 and v.version = $2",
    )
    .bind(app.id)
    .bind(app.version)
    .fetch_all(&mut *tx)
    .await?;
    let quorum = review::quorum(tx, &state.config.access, app).await?;
    // Fail closed: conditions that cannot be read stop the decision; they never become "no conditions".
    let approvals: Vec<Conditions> = votes
        .iter()
        .filter(|v| v.0.starts_with("approve"))
        .map(|v| match v.1.clone() {
            Some(c) => serde_json::from_value(c).map_err(|e| {
                tracing::error!(application = %app.id, error = %e, "a vote's conditions cannot be read");
                ApiError::Internal(anyhow::anyhow!("a vote's approval conditions cannot be read"))
            }),
            None => Ok(Conditions::default()),
        })
        .collect::<Result<_, _>>()?;
    let rejections: Vec<&str> = votes.iter().filter(|v| v.0 == "reject").filter_map(|v| v.2.as_deref()).collect();
    if i64::try_from(approvals.len()).unwrap_or(i64::MAX) >= quorum {
        let conditions = Conditions::merge(approvals);
        review::approve(tx, &state.ingest.key, app, &conditions, who, false).await?;
    } else if i64::try_from(rejections.len()).unwrap_or(i64::MAX) >= quorum {
        let reason = rejections.join("; ");
        review::advance(tx, app, Action::Reject, Actor::Rule, who, Some(&reason)).await?;
        duties::notify(
            tx,
            &pi,
            "application.rejected",
            "Your application was rejected; the reason is in its history",
            &target,
        )
        .await?;
        audit::record(
            tx,
            NewEvent::new(who, "application.reject")
                .target(format!("application:{}", app.id))
                .details(json!({ "version": app.version, "reason": reason })),
        )
        .await?;
    }
    Ok(())
}

/// A comment with every revision of its text.
#[derive(Debug, Serialize, ToSchema)]
pub struct Comment {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub author: String,
    /// Visible to stewards only.
    pub internal: bool,
    pub created_at: DateTime<Utc>,
    /// The current text.
    pub body: String,
    /// Every text it had, oldest first, with when it was written.
    pub revisions: Vec<CommentRevision>,
}

/// One text of a comment.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommentRevision {
    pub revision: i32,
    pub body: String,
    pub at: DateTime<Utc>,
}

async fn comments_of(db: &sqlx::PgPool, id: Uuid, with_internal: bool) -> Result<Vec<Comment>> {
    type Row = (Uuid, Option<Uuid>, String, bool, DateTime<Utc>, i32, String, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "select c.comment_id, c.parent_id, c.author, c.internal, c.created_at, r.revision, r.body, r.at
         from review_comment c join review_comment_revision r using (comment_id)
         where c.application_id = $1 and (not c.internal or $2)
         order by c.created_at, c.comment_id, r.revision",
    )
    .bind(id)
    .bind(with_internal)
    .fetch_all(db)
    .await?;
    let mut out: Vec<Comment> = Vec::new();
    for (cid, parent_id, author, internal, created_at, revision, body, at) in rows {
        if out.last().is_none_or(|c| c.id != cid) {
            out.push(Comment {
                id: cid,
                parent_id,
                author,
                internal,
                created_at,
                body: String::new(),
                revisions: Vec::new(),
            });
        }
        if let Some(c) = out.last_mut() {
            c.body.clone_from(&body);
            c.revisions.push(CommentRevision { revision, body, at });
        }
    }
    Ok(out)
}

/// The comments of an application, threaded by `parent_id` (members see the
/// ones not marked internal; stewards all).
#[utoipa::path(
    get,
    path = "/applications/{id}/comments",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "Comments, oldest first, with their revisions", body = [Comment]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_comments(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Vec<Comment>>> {
    visible(&state, &principal, id).await?;
    Ok(AppJson(comments_of(&state.db, id, is_steward(&principal)).await?))
}

/// A new comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentRequest {
    pub body: String,
    /// The comment this one answers.
    pub parent_id: Option<Uuid>,
    /// Stewards only: hidden from the applicants.
    #[serde(default)]
    pub internal: bool,
}

fn comment_body(body: &str) -> Result<&str> {
    let body = body.trim();
    if body.is_empty() || body.chars().count() > 10_000 {
        return Err(ApiError::BadRequest("a comment is 1 to 10,000 characters".into()));
    }
    Ok(body)
}

/// Comment on an application (members and stewards).
#[utoipa::path(
    post,
    path = "/applications/{id}/comments",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = CommentRequest,
    responses(
        (status = 201, description = "The comments, with the new one", body = [Comment]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn comment(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<CommentRequest>,
) -> Result<(StatusCode, AppJson<Vec<Comment>>)> {
    visible(&state, &principal, id).await?;
    let reviewer = is_steward(&principal);
    if request.internal && !reviewer {
        return Err(ApiError::Forbidden("only stewards write internal comments".into()));
    }
    let body = comment_body(&request.body)?;
    let mut tx = state.db.begin().await?;
    if let Some(parent) = request.parent_id {
        let parent_visible: bool = sqlx::query_scalar(
            "select exists (select 1 from review_comment where comment_id = $1 and application_id = $2 and (not internal or $3))",
        )
        .bind(parent)
        .bind(id)
        .bind(reviewer)
        .fetch_one(&mut *tx)
        .await?;
        if !parent_visible {
            return Err(ApiError::NotFound("comment"));
        }
    }
    let cid: Uuid = sqlx::query_scalar(
        "insert into review_comment (application_id, parent_id, author, internal) values ($1, $2, $3, $4) returning comment_id",
    )
    .bind(id)
    .bind(request.parent_id)
    .bind(&principal.username)
    .bind(request.internal)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("insert into review_comment_revision (comment_id, revision, body) values ($1, 1, $2)")
        .bind(cid)
        .bind(body)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "review.comment")
            .target(format!("application:{id}"))
            .details(json!({ "comment": cid, "internal": request.internal, "reply_to": request.parent_id })),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(comments_of(&state.db, id, reviewer).await?)))
}

/// A comment's new text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditCommentRequest {
    pub body: String,
}

/// Edit one's own comment: the new text is added as a revision; earlier ones stay.
#[utoipa::path(
    patch,
    path = "/comments/{id}",
    tag = tags::REVIEW,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Comment id")),
    request_body = EditCommentRequest,
    responses(
        (status = 200, description = "The application's comments, with the edit", body = [Comment]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn edit_comment(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(cid): AppPath<Uuid>,
    AppJson(request): AppJson<EditCommentRequest>,
) -> Result<AppJson<Vec<Comment>>> {
    let body = comment_body(&request.body)?;
    let found: Option<(Uuid, String)> =
        sqlx::query_as("select application_id, author from review_comment where comment_id = $1")
            .bind(cid)
            .fetch_optional(&state.db)
            .await?;
    let (app_id, author) = found.ok_or(ApiError::NotFound("comment"))?;
    visible(&state, &principal, app_id).await.map_err(|_| ApiError::NotFound("comment"))?;
    if author != principal.username {
        return Err(ApiError::Forbidden("only its author edits a comment".into()));
    }
    let mut tx = state.db.begin().await?;
    sqlx::query("select 1 from review_comment where comment_id = $1 for update").bind(cid).execute(&mut *tx).await?;
    let revision: i32 = sqlx::query_scalar(
        "insert into review_comment_revision (comment_id, revision, body)
         select $1, max(revision) + 1, $2 from review_comment_revision where comment_id = $1 returning revision",
    )
    .bind(cid)
    .bind(body)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "review.comment.edit")
            .target(format!("application:{app_id}"))
            .details(json!({ "comment": cid, "revision": revision })),
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(comments_of(&state.db, app_id, is_steward(&principal)).await?))
}
