//! Who am I: the caller as Custodian sees them.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{Credential, Principal, Role};
use crate::error::{ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(find_me))
}

/// The authenticated caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// Username (the token's subject).
    pub username: String,
    /// Roles held through this credential.
    pub roles: Vec<Role>,
    /// `jwt` or `api-token`.
    pub credential: &'static str,
    /// Id of the API token used, when one was.
    pub api_token_id: Option<Uuid>,
}

/// Describe the caller.
#[utoipa::path(
    get,
    path = "/me",
    tag = tags::AUTH,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_me(principal: Principal) -> Result<Json<MeResponse>> {
    let (credential, api_token_id) = match principal.credential {
        Credential::Jwt => ("jwt", None),
        Credential::ApiToken(id) => ("api-token", Some(id)),
    };
    Ok(Json(MeResponse { username: principal.username, roles: principal.roles, credential, api_token_id }))
}
