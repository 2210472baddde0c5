//! An open cohort's challenge over REST: teams, submissions against a
//! version's hidden test labels, their scores, and the leaderboard.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;
use crate::opencohort::challenge::{
    self, Invitation, Leaderboard, LeaderboardQuery, MyTeam, NewTeam, Services, Submission, SubmissionFormat,
    SubmissionMeta, Team,
};

pub fn router() -> OpenApiRouter<AppState> {
    let submissions = OpenApiRouter::new()
        .routes(routes!(submit))
        // A CSV is limited by `ingest.max_table_bytes`, a ZIP of masks by
        // `ingest.max_request_bytes`, both enforced while reading.
        .layer(axum::extract::DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .merge(submissions)
        .routes(routes!(list_submissions))
        .routes(routes!(find_submission))
        .routes(routes!(leaderboard))
        .routes(routes!(create_team))
        .routes(routes!(my_team))
        .routes(routes!(invite))
        .routes(routes!(join))
}

/// Submit predictions for a version's test split (any signed-in user).
///
/// A classification challenge takes a CSV (`text/csv`): a header, an id
/// column (`subject_id`, or `study_id` when the challenge is scored per
/// study: the version's README and the error say which), then `label`, or
/// `probability` (of the positive class), or one `probability_<code>`
/// column per class; one row per test unit. It is checked at once: any
/// problem refuses it with every problem named by line and open id, and
/// it does not count. A segmentation challenge takes a ZIP
/// (`application/zip`) of one mask per test series, named
/// `<series id>.nii.gz`, `.nii` or `.dcm` (DICOM SEG), checked when scored.
///
/// Each team (or user outside a team) has the challenge's
/// `daily_submissions` per UTC day (`429 submission-limit` beyond, with
/// `Retry-After`). Scoring runs in the job queue; follow the submission at
/// `GET /open-cohorts/{slug}/submissions/{id}`. The predictions are deleted
/// once scored: only the scores stay.
#[utoipa::path(
    post,
    path = "/open-cohorts/{slug}/versions/{id}/submissions",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = [])),
    params(
        ("slug" = String, Path, description = "The open cohort's slug"),
        ("id" = Uuid, Path, description = "The version's release id"),
        SubmissionMeta,
    ),
    request_body(
        description = "Labels or probabilities as CSV, or masks as a ZIP",
        content((String = "text/csv"), (crate::openapi::Binary = "application/zip"))
    ),
    responses(
        (status = 202, description = "Received and queued for scoring", body = Submission),
        (status = 400, description = "The CSV has problems (`submission-invalid`), each named", body = ErrorBody),
        (status = 403, description = "The challenge has closed (`challenge-closed`), or its agreement is not accepted (`agreement-required`)", body = ErrorBody),
        (status = 409, description = "The version is superseded or its labels are revealed", body = ErrorBody),
        (status = 415, description = "Not the format the challenge scores", body = ErrorBody),
        (status = 429, description = "The daily limit is reached (`submission-limit`)", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((slug, id)): AppPath<(String, Uuid)>,
    AppQuery(meta): AppQuery<SubmissionMeta>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, AppJson<Submission>)> {
    let submission = submit_body(&state, &principal, &slug, id, &meta, &headers, body).await?;
    Ok((StatusCode::ACCEPTED, AppJson(submission)))
}

/// Submits a request body as predictions for version `id` of challenge
/// `slug`: its media type says which format it is, read within the
/// configured limits while it streams.
pub async fn submit_body(
    state: &AppState,
    principal: &Principal,
    slug: &str,
    id: Uuid,
    meta: &SubmissionMeta,
    headers: &HeaderMap,
    body: Body,
) -> Result<Submission> {
    let content_type = super::imports::media_type(headers);
    let format = match content_type.as_str() {
        "text/csv" => SubmissionFormat::LabelsCsv,
        "application/zip" => SubmissionFormat::MasksZip,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "a submission is text/csv (labels) or application/zip (masks)".into(),
            ));
        }
    };
    let services = Services {
        db: &state.db,
        store: &state.store,
        key: &state.ingest.key,
        max_csv_bytes: state.config.ingest.max_table_bytes,
        max_zip_bytes: state.config.ingest.max_request_bytes as u64,
        part_bytes: usize::try_from(state.config.release.multipart_part_bytes).unwrap_or(usize::MAX),
    };
    challenge::submit(&services, principal, slug, id, format, meta, body.into_data_stream()).await
}

/// Submissions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submissions {
    /// Newest first.
    pub submissions: Vec<Submission>,
}

/// The caller's submissions to a challenge, their own and their team's
/// (organizers and admins: every one). Scores are shown while the
/// leaderboard is visible to the caller.
#[utoipa::path(
    get,
    path = "/open-cohorts/{slug}/submissions",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = [])),
    params(("slug" = String, Path, description = "The open cohort's slug")),
    responses(
        (status = 200, description = "The submissions", body = Submissions),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_submissions(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
) -> Result<AppJson<Submissions>> {
    let submissions = challenge::list(&mut *state.db.acquire().await?, &principal, &slug).await?;
    Ok(AppJson(Submissions { submissions }))
}

/// One submission: its state, its scores or its problems (its team,
/// organizers and admins).
#[utoipa::path(
    get,
    path = "/open-cohorts/{slug}/submissions/{id}",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = [])),
    params(("slug" = String, Path, description = "The open cohort's slug"), ("id" = Uuid, Path, description = "The submission")),
    responses(
        (status = 200, description = "The submission", body = Submission),
        (status = 404, description = "No submission of the caller's team has this id", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_submission(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((slug, id)): AppPath<(String, Uuid)>,
) -> Result<AppJson<Submission>> {
    Ok(AppJson(challenge::find(&mut *state.db.acquire().await?, Some(&principal), &slug, id).await?))
}

/// A challenge's leaderboard: each team's best scored submission, ranked by
/// the primary metric, with its scores overall and per site and their
/// bootstrap intervals (no login; when the organizers show it only after the
/// close, `403 leaderboard-sealed` until then).
#[utoipa::path(
    get,
    path = "/open-cohorts/{slug}/leaderboard",
    tag = tags::OPEN_COHORTS,
    security((), ("bearer" = [])),
    params(("slug" = String, Path, description = "The open cohort's slug"), LeaderboardQuery),
    responses(
        (status = 200, description = "The leaderboard", body = Leaderboard),
        (status = 403, description = "Shown only after the challenge closes (`leaderboard-sealed`)", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn leaderboard(
    State(state): State<AppState>,
    principal: Option<Principal>,
    AppPath(slug): AppPath<String>,
    AppQuery(query): AppQuery<LeaderboardQuery>,
) -> Result<AppJson<Leaderboard>> {
    let board = challenge::leaderboard(&mut *state.db.acquire().await?, principal.as_ref(), &slug, &query).await?;
    Ok(AppJson(board))
}

/// Create a team in a challenge, with the caller as its first member (any
/// signed-in user not in a team of it yet).
#[utoipa::path(
    post,
    path = "/open-cohorts/{slug}/teams",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = [])),
    params(("slug" = String, Path, description = "The open cohort's slug")),
    request_body = NewTeam,
    responses(
        (status = 201, description = "The team", body = Team),
        (status = 409, description = "The name is taken, or the caller is in a team already", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn create_team(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
    AppJson(new): AppJson<NewTeam>,
) -> Result<(StatusCode, AppJson<Team>)> {
    let mut tx = state.db.begin().await?;
    let team = challenge::create_team(&mut tx, &principal, &slug, &new).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(team)))
}

/// The caller's team in a challenge and the teams that invited them.
#[utoipa::path(
    get,
    path = "/open-cohorts/{slug}/teams/mine",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = [])),
    params(("slug" = String, Path, description = "The open cohort's slug")),
    responses(
        (status = 200, description = "The caller's team and invitations", body = MyTeam),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn my_team(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
) -> Result<AppJson<MyTeam>> {
    Ok(AppJson(challenge::my_team(&mut *state.db.acquire().await?, &principal, &slug).await?))
}

/// Invite a user into a team (its members).
#[utoipa::path(
    post,
    path = "/open-cohorts/{slug}/teams/{team}/invitations",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = [])),
    params(("slug" = String, Path, description = "The open cohort's slug"), ("team" = String, Path, description = "The team's name")),
    request_body = Invitation,
    responses(
        (status = 200, description = "The team with its invitations", body = Team),
        (status = 403, description = "The caller is not a member", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn invite(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((slug, team)): AppPath<(String, String)>,
    AppJson(invitation): AppJson<Invitation>,
) -> Result<AppJson<Team>> {
    let mut tx = state.db.begin().await?;
    let team = challenge::invite(&mut tx, &principal, &slug, &team, &invitation).await?;
    tx.commit().await?;
    Ok(AppJson(team))
}

/// Join a team that invited the caller (one team per user per challenge).
#[utoipa::path(
    post,
    path = "/open-cohorts/{slug}/teams/{team}/join",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = [])),
    params(("slug" = String, Path, description = "The open cohort's slug"), ("team" = String, Path, description = "The team's name")),
    responses(
        (status = 200, description = "The team joined", body = Team),
        (status = 403, description = "The team has not invited the caller", body = ErrorBody),
        (status = 409, description = "The caller is in another team", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn join(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((slug, team)): AppPath<(String, String)>,
) -> Result<AppJson<Team>> {
    let mut tx = state.db.begin().await?;
    let team = challenge::join(&mut tx, &principal, &slug, &team).await?;
    tx.commit().await?;
    Ok(AppJson(team))
}
