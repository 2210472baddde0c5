//! The access committee over REST: the review queue, the steward's inbox, starting a review,
//! assignments with recusal, declarations of interest, votes that decide at
//! their quorum, and threaded comments whose edits keep every revision.
//!
//! The rules live in [`crate::access::review`]; each handler reads the
//! request, opens the transaction, calls one service function and answers.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath};
use crate::access::grants::Conditions;
use crate::access::inbox::{self, Inbox};
use crate::access::review::{self, Assignment, Ballot, Comment, NewComment, QueueItem, Vote, VoteKind};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(queue))
        .routes(routes!(steward_inbox))
        .routes(routes!(start_review))
        .routes(routes!(assign))
        .routes(routes!(unassign))
        .routes(routes!(declare))
        .routes(routes!(list_votes, vote))
        .routes(routes!(list_comments, comment))
        .routes(routes!(edit_comment))
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
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    responses(
        (status = 200, description = "Pending applications with age, due date, assignments, changes and the members' bona fides", body = Queue),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn queue(State(state): State<AppState>, principal: Principal) -> Result<AppJson<Queue>> {
    let mut conn = state.db.acquire().await?;
    let items = review::queue(&mut conn, &principal).await?;
    Ok(AppJson(Queue { items }))
}

/// Everything waiting for a steward, in one answer (stewards and admins): applications by
/// due date, renewals, unpaid fees, overdue duties, unacknowledged withdrawal notices, the
/// quarantine and profiles to verify. The web inbox shows the same.
#[utoipa::path(
    get,
    path = "/steward/inbox",
    tag = tags::REVIEW,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    responses(
        (status = 200, description = "What waits, per kind", body = Inbox),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn steward_inbox(State(state): State<AppState>, principal: Principal) -> Result<AppJson<Inbox>> {
    let mut conn = state.db.acquire().await?;
    Ok(AppJson(inbox::gather(&mut conn, &principal).await?))
}

/// Take a submitted application under review and assign oneself (stewards).
#[utoipa::path(
    post,
    path = "/applications/{id}/review",
    tag = tags::REVIEW,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
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
    let mut tx = state.db.begin().await?;
    let assignments = review::start(&mut tx, &principal, &state.config.access, id).await?;
    tx.commit().await?;
    Ok(AppJson(assignments))
}

/// A steward to assign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    #[schema(max_length = 200)]
    pub steward: String,
}

/// Assign a steward to a pending application (stewards). A steward who is a
/// member of the project, or (as configured) works at a member's institution,
/// cannot be assigned.
#[utoipa::path(
    post,
    path = "/applications/{id}/assignments",
    tag = tags::REVIEW,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
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
    let mut tx = state.db.begin().await?;
    let assignments = review::assign(&mut tx, &principal, &state.config.access, id, &request.steward).await?;
    tx.commit().await?;
    Ok(AppJson(assignments))
}

/// Take a steward off a pending application (stewards), as long as they have
/// not voted on its current version; their declarations stay on record.
#[utoipa::path(
    delete,
    path = "/applications/{id}/assignments/{steward}",
    tag = tags::REVIEW,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
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
    let mut tx = state.db.begin().await?;
    let assignments = review::unassign(&mut tx, &principal, id, &who).await?;
    tx.commit().await?;
    Ok(AppJson(assignments))
}

/// A declaration of interests.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclarationRequest {
    /// Whether the steward has a competing interest; then they recuse.
    pub conflict: bool,
    /// The declaration in the steward's words (e.g. "no competing interests").
    #[schema(max_length = 5000)]
    pub statement: String,
}

/// Declare one's interests in an application one is assigned to (stewards).
#[utoipa::path(
    post,
    path = "/applications/{id}/declarations",
    tag = tags::REVIEW,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
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
    let mut tx = state.db.begin().await?;
    let assignments = review::declare(&mut tx, &principal, id, request.conflict, &request.statement).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(assignments)))
}

/// A vote on the current version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    pub vote: VoteKind,
    /// Required with `approve_with_conditions`.
    pub conditions: Option<Conditions>,
    /// Required with `request_changes` (what to change) and `reject` (the reason).
    #[schema(max_length = 10_000)]
    pub comment: Option<String>,
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
    let mut conn = state.db.acquire().await?;
    Ok(AppJson(review::votes(&mut conn, &principal, id).await?))
}

/// Vote on the current version (an assigned steward who declared and is not
/// recused). A request for changes sends the application back to its PI at
/// once; approvals or rejections decide when they reach the quorum of the
/// cohorts' tier.
#[utoipa::path(
    post,
    path = "/applications/{id}/votes",
    tag = tags::REVIEW,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
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
    let ballot = Ballot { vote: request.vote, conditions: request.conditions, comment: request.comment.as_deref() };
    let mut tx = state.db.begin().await?;
    let votes = review::vote(&mut tx, &principal, &state.config.access, &state.ingest.key, id, ballot).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(votes)))
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
    let mut conn = state.db.acquire().await?;
    Ok(AppJson(review::comments(&mut conn, &principal, id).await?))
}

/// A new comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentRequest {
    #[schema(max_length = 10_000)]
    pub body: String,
    /// The comment this one answers.
    pub parent_id: Option<Uuid>,
    /// Stewards only: hidden from the applicants.
    #[serde(default)]
    pub internal: bool,
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
    let new = NewComment { body: &request.body, parent_id: request.parent_id, internal: request.internal };
    let mut tx = state.db.begin().await?;
    let comments = review::comment(&mut tx, &principal, id, new).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(comments)))
}

/// A comment's new text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditCommentRequest {
    #[schema(max_length = 10_000)]
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
    let mut tx = state.db.begin().await?;
    let comments = review::edit_comment(&mut tx, &principal, cid, &request.body).await?;
    tx.commit().await?;
    Ok(AppJson(comments))
}
