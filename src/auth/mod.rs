//! Who is calling, and what may they do.
//!
//! A request carries `Authorization: Bearer <credential>`: either a JWT (signed
//! by Custodian with HS256, or by an OIDC issuer with RS256/ES256 and verified
//! against its JWKS) or a personal API token (`cst_…`). Either way the handler
//! receives a [`Principal`]. Missing or unusable credentials are 401 with
//! `WWW-Authenticate: Bearer`; a principal without the needed role gets 403.

pub mod api_tokens;
mod jwks;
pub mod jwt;
pub mod users;

use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
pub use jwt::Authenticator;

/// What a person may do in Custodian; project membership decides data access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the registry: sites, cohorts, users' tokens.
    Admin,
    /// Sits on the access committee: reviews applications, reads the audit log.
    Steward,
    /// Publishes open cohorts for challenges.
    Organizer,
    /// Site data manager: sends data into the registry.
    Uploader,
    /// Discovers data and applies for access.
    Researcher,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Admin, Role::Steward, Role::Organizer, Role::Uploader, Role::Researcher];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Steward => "steward",
            Role::Organizer => "organizer",
            Role::Uploader => "uploader",
            Role::Researcher => "researcher",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A JWT from Custodian or the configured OIDC issuer.
    Jwt,
    /// A personal API token.
    ApiToken(Uuid),
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub username: String,
    /// Sorted and without duplicates.
    pub roles: Vec<Role>,
    pub credential: Credential,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Succeeds when the caller holds at least one of `roles`.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.has_role(*r)) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::Forbidden(format!("this action needs one of the roles: {}", names.join(", "))))
    }
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
    PgPool: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Authenticated once already, by the authorization middleware.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer credential".into()))?;
        let value = header.to_str().map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let credential = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("Authorization header must use the Bearer scheme".into()))?;
        if api_tokens::looks_like_api_token(credential) {
            let pool = PgPool::from_ref(state);
            return api_tokens::authenticate(&pool, credential).await;
        }
        let authenticator = Arc::<Authenticator>::from_ref(state);
        authenticator.verify(credential).await.map_err(|e| ApiError::Unauthorized(e.to_string()))
    }
}

/// Normalises a list of role names, ignoring ones Custodian does not know.
pub fn roles_from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Role> {
    let mut roles: Vec<Role> = names.into_iter().filter_map(Role::parse).collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Role names as stored in the database.
pub fn role_names(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_owned()).collect()
}

/// `Option<Principal>`: `None` without an `Authorization` header (public
/// endpoints), while a credential that is present must still be valid.
impl<S> axum::extract::OptionalFromRequestParts<S> for Principal
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
    PgPool: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if parts.headers.get(AUTHORIZATION).is_none() {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state).await.map(Some)
    }
}
