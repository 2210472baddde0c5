//! The registry's release signing keys, public: a researcher (or `custodian
//! fetch`) verifies a release manifest against them, offline if need be.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ErrorBody;
use crate::openapi::tags;
use crate::release::manifest::Jwks;

/// Keys change only on rotation, when the previous one stays listed: a client
/// holding a stale copy refetches when a manifest names a key it lacks.
const CACHE_CONTROL: &str = "public, max-age=3600";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_release_keys))
}

/// The public keys release manifests are signed with.
///
/// A JWK Set (RFC 7517, Ed25519 keys as RFC 8037 `OKP`): the current key
/// first, then earlier keys that still verify the releases they signed. The
/// `kid` is what a manifest's signature document (`manifest.json.sig`) names.
/// Open to anyone, without a login.
#[utoipa::path(
    get,
    path = "/.well-known/custodian/release-keys",
    tag = tags::RELEASES,
    security(()),
    responses(
        (status = 200, description = "The published keys", body = Jwks,
            headers(
                ("Cache-Control" = String, description = "`public, max-age=3600`"),
                ("ETag" = String, description = "Changes when the keys do"),
            )),
        (status = 304, description = "The keys are those of `If-None-Match`"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_release_keys(State(state): State<AppState>, request: HeaderMap) -> Response {
    let jwks = state.release_signer.jwks();
    let body = serde_json::to_vec(&jwks).expect("a JWK Set serializes");
    // The key ids are digests of the keys: together they name the set.
    let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
    let etag = format!("\"{}\"", kids.join("."));
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim().trim_start_matches("W/") == etag || tag.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}
