//! Presigned S3 URLs to release files over REST: asked for like a download
//! (the grant checked, refusals audited), issued only where the registry
//! hands them out, each issuance audited ([`crate::release::presign`]).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;
use crate::release::extracts;
use crate::release::presign::{self, PresignedUrl};

pub fn router() -> OpenApiRouter<AppState> {
    super::catch_all("/extracts/{id}/presigned/{*path}", routes!(presign_file))
}

/// Get a short-lived presigned URL to a file of a release (S3 only).
///
/// The URL fetches the file straight from the object store, `Range`
/// included, for `release.presign_ttl_secs` (at most 15 minutes). Ask again
/// for a new one to go on past `expires_at`: a transfer resumes where it
/// stopped. The grant is checked on every request; each URL issued is
/// audited (`extract.presigned`). `409` where the registry does not hand
/// them out.
#[utoipa::path(
    get,
    path = "/extracts/{id}/presigned/{path}",
    tag = tags::RELEASES,
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Release id"),
        ("path" = String, Path, description = "The file's path in the manifest, slashes included"),
    ),
    responses(
        (status = 200, description = "The URL and when it stops working", body = PresignedUrl),
        (status = 403, description = "No grant in force; the code says why", body = ErrorBody),
        (status = 409, description = "The release is not ready, or the registry hands out no presigned URLs", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn presign_file(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((id, path)): AppPath<(Uuid, String)>,
) -> Result<Response> {
    let extract = super::extracts::downloadable(&state, Some(&principal), id).await?;
    let file = extracts::file(&state.db, id, &path).await?.ok_or(ApiError::NotFound("file"))?;
    let signed = presign::issue(&state.db, &state.config, &principal.username, &extract, &path, &file).await?;
    let mut response = AppJson(signed).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
