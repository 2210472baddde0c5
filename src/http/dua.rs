//! The data use agreement over REST: the version in force and every earlier
//! one word for word (anyone signed in), and publication of a new version
//! (admins). A PI accepts the version in force to activate a grant.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AppJson, AppPath};
use crate::access::dua::{self, Agreement};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(current_agreement, publish_agreement))
        .routes(routes!(agreement_versions))
        .routes(routes!(agreement_version))
}

/// The data use agreement in force (anyone signed in).
#[utoipa::path(
    get,
    path = "/dua",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The version a PI accepts", body = Agreement),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn current_agreement(State(state): State<AppState>, _principal: Principal) -> Result<AppJson<Agreement>> {
    Ok(AppJson(dua::current(&state.db).await?))
}

/// Every version of the data use agreement, newest first (anyone signed in).
#[utoipa::path(
    get,
    path = "/dua/versions",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every version, newest first", body = [Agreement]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn agreement_versions(
    State(state): State<AppState>,
    _principal: Principal,
) -> Result<AppJson<Vec<Agreement>>> {
    Ok(AppJson(dua::all(&state.db).await?))
}

/// One version of the data use agreement (anyone signed in).
#[utoipa::path(
    get,
    path = "/dua/versions/{version}",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("version" = String, Path, description = "Agreement version")),
    responses(
        (status = 200, description = "The version's text", body = Agreement),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn agreement_version(
    State(state): State<AppState>,
    _principal: Principal,
    AppPath(version): AppPath<String>,
) -> Result<AppJson<Agreement>> {
    Ok(AppJson(dua::get(&state.db, &version).await?.ok_or(ApiError::NotFound("data use agreement version"))?))
}

/// A new version of the agreement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgreement {
    /// Letters, digits, `.`, `_` and `-`, up to 64; never reused.
    #[schema(max_length = 64)]
    pub version: String,
    #[schema(max_length = 200)]
    pub title: String,
    /// The full text (Markdown), up to 100,000 characters.
    #[schema(max_length = 100_000)]
    pub body: String,
}

/// Publish a new version of the data use agreement (admins). It is in force
/// at once: PIs activating a grant from now on accept it; earlier acceptances
/// keep the version they accepted.
#[utoipa::path(
    post,
    path = "/dua",
    tag = tags::APPLICATIONS,
    security(("bearer" = ["admin"])),
    request_body = NewAgreement,
    responses(
        (status = 201, description = "The version now in force", body = Agreement),
        (status = 409, description = "The version name is taken", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn publish_agreement(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<NewAgreement>,
) -> Result<(StatusCode, AppJson<Agreement>)> {
    let mut tx = state.db.begin().await?;
    let saved = dua::publish(&mut tx, &principal, &request.version, &request.title, &request.body).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(saved)))
}
