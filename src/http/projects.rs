//! Researcher profiles (own profile for everyone, verification by stewards),
//! projects and their members (invitation by the PI, acceptance, leaving).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::access::projects::{self, Profile, ProfileRequest, ProjectDetails, ProjectMember, ProjectSummary, STEWARDS};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

/// Routes of profiles, projects and members.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(find_my_profile, put_my_profile))
        .routes(routes!(list_profiles))
        .routes(routes!(verify_profile))
        .routes(routes!(list_projects, create_project))
        .routes(routes!(find_project))
        .routes(routes!(invite_member))
        .routes(routes!(remove_member))
        .routes(routes!(accept_invitation))
}

/// Which profiles to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProfileListQuery {
    /// Only profiles whose bona fides are not verified yet.
    pub unverified: Option<bool>,
}

/// Researcher profiles, by username.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileListResponse {
    pub profiles: Vec<Profile>,
}

/// A new project.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectRequest {
    /// 1–200 characters.
    #[schema(max_length = 200)]
    pub title: String,
}

/// The caller's projects (every project for stewards and admins), newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectListResponse {
    pub projects: Vec<ProjectSummary>,
}

/// Whom to invite.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteMemberRequest {
    /// Username of the collaborator.
    #[schema(max_length = 200)]
    pub username: String,
}

/// Get the caller's researcher profile.
#[utoipa::path(
    get,
    path = "/me/profile",
    tag = tags::PROJECTS,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = Profile),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_my_profile(State(state): State<AppState>, principal: Principal) -> Result<AppJson<Profile>> {
    let profile = projects::get_profile(&state.db, &principal.username).await?.ok_or(ApiError::NotFound("profile"))?;
    Ok(AppJson(profile))
}

/// Create or replace the caller's researcher profile.
///
/// Changing any field of a verified profile clears its verification
/// (`verified: false`) until a steward verifies it again.
#[utoipa::path(
    put,
    path = "/me/profile",
    tag = tags::PROJECTS,
    security(("bearer" = [])),
    request_body = ProfileRequest,
    responses(
        (status = 200, description = "The replaced profile", body = Profile),
        (status = 201, description = "The new profile", body = Profile),
        (status = 400, description = "Invalid profile, with every problem (`invalid-profile`)", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn put_my_profile(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<ProfileRequest>,
) -> Result<(StatusCode, AppJson<Profile>)> {
    let (profile, created) = projects::save_profile(&state.db, &principal, &request).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, AppJson(profile)))
}

/// List researcher profiles (stewards and admins).
#[utoipa::path(
    get,
    path = "/profiles",
    tag = tags::PROJECTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(ProfileListQuery),
    responses(
        (status = 200, description = "Matching profiles by username", body = ProfileListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_profiles(
    State(state): State<AppState>,
    principal: Principal,
    AppQuery(query): AppQuery<ProfileListQuery>,
) -> Result<AppJson<ProfileListResponse>> {
    principal.require_any(STEWARDS)?;
    let profiles = projects::list_profiles(&state.db, query.unverified.unwrap_or(false)).await?;
    Ok(AppJson(ProfileListResponse { profiles }))
}

/// Verify a researcher's bona fides (stewards and admins; not their own).
#[utoipa::path(
    post,
    path = "/profiles/{username}/verify",
    tag = tags::PROJECTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    params(("username" = String, Path, description = "Whose profile")),
    responses(
        (status = 200, description = "The verified profile", body = Profile),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn verify_profile(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(username): AppPath<String>,
) -> Result<AppJson<Profile>> {
    Ok(AppJson(projects::verify_profile(&state.db, &principal, &username).await?))
}

/// List the caller's projects (stewards and admins: every project).
#[utoipa::path(
    get,
    path = "/projects",
    tag = tags::PROJECTS,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Projects the caller is invited to or a member of", body = ProjectListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_projects(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<AppJson<ProjectListResponse>> {
    Ok(AppJson(ProjectListResponse { projects: projects::list_projects(&state.db, &principal).await? }))
}

/// Create a project (researchers with a profile); the caller becomes its PI.
#[utoipa::path(
    post,
    path = "/projects",
    tag = tags::PROJECTS,
    security(("bearer" = ["researcher"])),
    request_body = CreateProjectRequest,
    responses(
        (status = 201, description = "The new project", body = ProjectDetails),
        (status = 409, description = "The caller has no researcher profile yet", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn create_project(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<CreateProjectRequest>,
) -> Result<(StatusCode, AppJson<ProjectDetails>)> {
    let project = projects::create_project(&state.db, &principal, &request.title).await?;
    Ok((StatusCode::CREATED, AppJson(project)))
}

/// Get a project with its members (members, invited users, stewards and admins).
#[utoipa::path(
    get,
    path = "/projects/{id}",
    tag = tags::PROJECTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project and every member it has had", body = ProjectDetails),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_project(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<ProjectDetails>> {
    Ok(AppJson(projects::find_project(&state.db, &principal, id).await?))
}

/// Invite a collaborator (the PI).
#[utoipa::path(
    post,
    path = "/projects/{id}/members",
    tag = tags::PROJECTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    request_body = InviteMemberRequest,
    responses(
        (status = 201, description = "The invitation", body = ProjectMember),
        (status = 409, description = "Already a member, or the project is closed", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn invite_member(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<InviteMemberRequest>,
) -> Result<(StatusCode, AppJson<ProjectMember>)> {
    let member = projects::invite_member(&state.db, &principal, id, &request.username).await?;
    Ok((StatusCode::CREATED, AppJson(member)))
}

/// Accept an invitation (the invited user).
#[utoipa::path(
    post,
    path = "/projects/{id}/members/{username}/accept",
    tag = tags::PROJECTS,
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Project id"),
        ("username" = String, Path, description = "The invited user: the caller"),
    ),
    responses(
        (status = 200, description = "The accepted membership", body = ProjectMember),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn accept_invitation(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((id, username)): AppPath<(Uuid, String)>,
) -> Result<AppJson<ProjectMember>> {
    Ok(AppJson(projects::accept_invitation(&state.db, &principal, id, &username).await?))
}

/// Remove a collaborator (the PI) or leave a project (the member); the PI cannot be removed.
#[utoipa::path(
    delete,
    path = "/projects/{id}/members/{username}",
    tag = tags::PROJECTS,
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Project id"),
        ("username" = String, Path, description = "The member"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((id, username)): AppPath<(Uuid, String)>,
) -> Result<StatusCode> {
    projects::remove_member(&state.db, &principal, id, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}
