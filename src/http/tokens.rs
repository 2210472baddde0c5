//! Personal API tokens: made, listed and revoked by their owner.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath};
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::api_tokens::{self, TokenRecord};
use crate::auth::{Credential, Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_token, list_tokens)).routes(routes!(revoke_token))
}

const DEFAULT_DAYS: u32 = 90;

/// A request for a new personal API token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What the token is for, e.g. "laptop CLI" (1–100 characters).
    #[schema(max_length = 100)]
    pub name: String,
    /// Lifetime in days (default 90, at most the configured maximum).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// Roles the token carries; a subset of the caller's (default: all of them).
    #[serde(default)]
    pub roles: Option<Vec<Role>>,
}

/// A stored token; the secret itself is never shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub id: Uuid,
    pub name: String,
    /// First characters of the token, to tell tokens apart.
    pub prefix: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// `active`, `expired` or `revoked`.
    pub state: &'static str,
}

impl From<TokenRecord> for TokenResponse {
    fn from(t: TokenRecord) -> Self {
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at <= Utc::now() {
            "expired"
        } else {
            "active"
        };
        Self {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            roles: t.roles,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
            state,
        }
    }
}

/// A new token: `token` is shown this once and cannot be retrieved later.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateTokenResponse {
    /// The bearer credential (`cst_…`). Store it now.
    pub token: String,
    #[serde(flatten)]
    pub details: TokenResponse,
}

/// The caller's tokens, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenListResponse {
    pub tokens: Vec<TokenResponse>,
}

/// Create a personal API token.
///
/// Requires a JWT: an API token cannot mint further tokens, so a leaked token
/// cannot extend its own life.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = tags::AUTH,
    security(("bearer" = [])),
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The new token, shown once", body = CreateTokenResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<CreateTokenRequest>,
) -> Result<(StatusCode, AppJson<CreateTokenResponse>)> {
    Ok((StatusCode::CREATED, AppJson(create(&state, &principal, request).await?)))
}

/// Makes a token for `principal` (the REST API and the account page); the
/// secret is in the answer and nowhere else.
pub async fn create(
    state: &AppState,
    principal: &Principal,
    request: CreateTokenRequest,
) -> Result<CreateTokenResponse> {
    if principal.credential != Credential::Jwt {
        return Err(ApiError::Forbidden(
            "API tokens can only be created with a JWT, not with another API token".into(),
        ));
    }
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest("`name` must be 1 to 100 characters".into()));
    }
    let max_days = state.config.auth.max_api_token_days;
    let days = request.expires_in_days.unwrap_or(DEFAULT_DAYS.min(max_days));
    if days == 0 || days > max_days {
        return Err(ApiError::BadRequest(format!("`expires_in_days` must be between 1 and {max_days}")));
    }
    let roles = match request.roles {
        None => principal.roles.clone(),
        Some(requested) => {
            if let Some(missing) = requested.iter().find(|r| !principal.has_role(**r)) {
                return Err(ApiError::Forbidden(format!("you do not hold the role `{missing}` to give it to a token")));
            }
            crate::auth::roles_from_names(requested.iter().map(|r| r.as_str()))
        }
    };
    let expires_at = Utc::now() + Duration::days(i64::from(days));
    let token = api_tokens::generate();

    let mut tx = state.db.begin().await?;
    let user_id = api_tokens::upsert_user(&mut *tx, &principal.username, &principal.roles).await?;
    let record = api_tokens::insert_token(&mut tx, user_id, name, &token, &roles, expires_at).await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "token.create").target(format!("token:{}", record.id)).details(json!({
            "name": name,
            "prefix": record.prefix,
            "roles": crate::auth::role_names(&roles),
            "expires_at": expires_at,
        })),
    )
    .await?;
    tx.commit().await?;

    Ok(CreateTokenResponse { token: token.secret, details: record.into() })
}

/// List the caller's API tokens (never their secrets).
#[utoipa::path(
    get,
    path = "/tokens",
    tag = tags::AUTH,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's tokens", body = TokenListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_tokens(State(state): State<AppState>, principal: Principal) -> Result<AppJson<TokenListResponse>> {
    let tokens = api_tokens::list_tokens(&state.db, &principal.username).await?;
    Ok(AppJson(TokenListResponse { tokens: tokens.into_iter().map(Into::into).collect() }))
}

/// Revoke an API token: the next request made with it is refused.
///
/// Owners revoke their own tokens; admins may revoke anyone's. Revoking a
/// revoked token changes nothing.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = tags::AUTH,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode> {
    revoke(&state, &principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes token `id` of `principal` (any token, for admins); other people's
/// tokens are not found. Revoking a revoked token changes nothing.
pub async fn revoke(state: &AppState, principal: &Principal, id: Uuid) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let (owner, revoked) = api_tokens::token_owner(&mut *tx, id).await?.ok_or(ApiError::NotFound("token"))?;
    if owner != principal.username && !principal.has_role(Role::Admin) {
        // Other people's tokens are as invisible as missing ones.
        return Err(ApiError::NotFound("token"));
    }
    if !revoked {
        api_tokens::revoke_token(&mut tx, id).await?;
        audit::record(
            &mut tx,
            NewEvent::new(&principal.username, "token.revoke")
                .target(format!("token:{id}"))
                .details(json!({ "owner": owner })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
