//! The people the registry has seen, and the sign-in tokens it issues in the
//! embedded mode (where no OpenID provider grants roles): by `custodian token
//! issue` on the server, or by an admin on the administration pages. Both
//! come here, and both are audited as `token.issue`.

use std::time::Duration;

use serde_json::json;
use sqlx::{PgConnection, PgExecutor};

use super::jwt::Authenticator;
use super::{Principal, Role};
use crate::audit::{self, NewEvent};
use crate::error::ApiError;

/// A person as the registry last saw them.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub display_name: Option<String>,
    /// The roles of their last identity token.
    pub roles: Vec<String>,
    /// Personal API tokens neither revoked nor expired.
    pub active_api_tokens: i64,
}

/// Everyone the registry has seen, by username (admins).
pub async fn list(db: impl PgExecutor<'_>, principal: &Principal) -> Result<Vec<User>, ApiError> {
    principal.require_any(&[Role::Admin])?;
    Ok(sqlx::query_as!(
        User,
        r#"select u.username, u.display_name, u.roles,
                  (select count(*) from api_token t
                   where t.user_id = u.user_id and t.revoked_at is null and t.expires_at > now()) as "active_api_tokens!"
           from app_user u order by u.username"#
    )
    .fetch_all(db)
    .await?)
}

/// Signs a token for `username` with `roles`, valid `ttl`, and audits it as
/// done by `actor` in `tx`. The token is returned once and never stored.
pub async fn issue(
    tx: &mut PgConnection,
    auth: &Authenticator,
    actor: &str,
    username: &str,
    roles: &[Role],
    ttl: Duration,
) -> Result<String, ApiError> {
    let username = username.trim();
    if username.is_empty()
        || username.chars().count() > 128
        || username.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::BadRequest("the username is 1 to 128 characters without spaces".into()));
    }
    if roles.is_empty() {
        return Err(ApiError::BadRequest("a token carries at least one role".into()));
    }
    let token = auth.issue(username, roles, ttl).map_err(|e| ApiError::Conflict(e.to_string()))?;
    audit::record(
        tx,
        NewEvent::new(actor, "token.issue").target(format!("user:{username}")).details(json!({
            "roles": super::role_names(roles),
            "ttl_seconds": ttl.as_secs(),
        })),
    )
    .await?;
    Ok(token)
}
