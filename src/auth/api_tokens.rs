//! Personal API tokens for the CLI and scripts.
//!
//! A token is `cst_` followed by 256 random bits (base64url). It is shown once,
//! when made; the database keeps only its SHA-256 (a fast hash is enough for a
//! secret with 256 bits of entropy) and its first characters, so its owner can
//! tell tokens apart. Revoked and expired tokens are refused on the next request.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::{Credential, Principal, Role, role_names, roles_from_names};
use crate::error::ApiError;

/// Every API token starts with this.
pub const PREFIX: &str = "cst_";

/// Characters of a token kept in clear to identify it.
const SHOWN_PREFIX_LEN: usize = 10;

/// Whether a bearer credential is an API token rather than a JWT.
pub fn looks_like_api_token(credential: &str) -> bool {
    credential.starts_with(PREFIX)
}

/// A fresh token and the values stored for it.
pub struct NewToken {
    pub secret: String,
    pub hash: Vec<u8>,
    pub prefix: String,
}

/// Draws a new random token.
pub fn generate() -> NewToken {
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator failed");
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    NewToken { hash: hash(&secret), prefix: secret[..SHOWN_PREFIX_LEN].to_owned(), secret }
}

fn hash(secret: &str) -> Vec<u8> {
    digest(&SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// A stored token, without its secret.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Resolves an API token to its owner, refusing unknown, revoked and expired ones.
pub async fn authenticate(pool: &PgPool, secret: &str) -> Result<Principal, ApiError> {
    // One round trip: find the token and, at most once a minute, note its use.
    let row = sqlx::query!(
        r#"with found as (
               select t.api_token_id, t.roles, t.expires_at, t.revoked_at, u.username
               from api_token t join app_user u using (user_id)
               where t.token_hash = $1
           ), touched as (
               update api_token set last_used_at = now()
               where api_token_id = (select api_token_id from found)
                 and revoked_at is null and expires_at > now()
                 and (last_used_at is null or last_used_at < now() - interval '1 minute')
           )
           select api_token_id as "id!", roles as "roles!", expires_at as "expires_at!",
                  revoked_at, username as "username!", now() as "now!"
           from found"#,
        hash(secret)
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::Unauthorized("unknown API token".into()))?;
    if row.revoked_at.is_some() {
        return Err(ApiError::Unauthorized("API token has been revoked".into()));
    }
    if row.expires_at <= row.now {
        return Err(ApiError::Unauthorized("API token has expired".into()));
    }
    Ok(Principal {
        username: row.username,
        roles: roles_from_names(row.roles.iter().map(String::as_str)),
        credential: Credential::ApiToken(row.id),
    })
}

/// Creates or refreshes the user row behind a principal, returning its id.
pub async fn upsert_user(db: impl PgExecutor<'_>, username: &str, roles: &[Role]) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar!(
        "insert into app_user (username, roles) values ($1, $2)
         on conflict (username) do update set roles = excluded.roles
         returning user_id",
        username,
        &role_names(roles)
    )
    .fetch_one(db)
    .await
}

/// Stores a new token for `user_id`.
pub async fn insert_token(
    tx: &mut PgConnection,
    user_id: Uuid,
    name: &str,
    token: &NewToken,
    roles: &[Role],
    expires_at: DateTime<Utc>,
) -> Result<TokenRecord, sqlx::Error> {
    let row = sqlx::query!(
        "insert into api_token (user_id, name, token_hash, token_prefix, roles, expires_at)
         values ($1, $2, $3, $4, $5, $6)
         returning api_token_id, created_at",
        user_id,
        name,
        token.hash,
        token.prefix,
        &role_names(roles),
        expires_at
    )
    .fetch_one(tx)
    .await?;
    Ok(TokenRecord {
        id: row.api_token_id,
        name: name.to_owned(),
        prefix: token.prefix.clone(),
        roles: roles.to_vec(),
        created_at: row.created_at,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    })
}

/// Tokens of `username`, newest first.
pub async fn list_tokens(db: impl PgExecutor<'_>, username: &str) -> Result<Vec<TokenRecord>, sqlx::Error> {
    let rows = sqlx::query!(
        "select t.api_token_id, t.name, t.token_prefix, t.roles, t.created_at, t.expires_at, t.revoked_at, t.last_used_at
         from api_token t join app_user u using (user_id)
         where u.username = $1
         order by t.created_at desc",
        username
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TokenRecord {
            id: r.api_token_id,
            name: r.name,
            prefix: r.token_prefix,
            roles: roles_from_names(r.roles.iter().map(String::as_str)),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
        })
        .collect())
}

/// Owner of a token and whether it is already revoked.
pub async fn token_owner(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<(String, bool)>, sqlx::Error> {
    let row = sqlx::query!(
        "select u.username, t.revoked_at is not null as \"revoked!\"
         from api_token t join app_user u using (user_id) where t.api_token_id = $1",
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.username, r.revoked)))
}

/// Marks a token revoked; later requests with it are refused.
pub async fn revoke_token(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("update api_token set revoked_at = now() where api_token_id = $1 and revoked_at is null", id)
        .execute(tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_distinct_prefixed_and_hash_to_what_is_stored() {
        let a = generate();
        let b = generate();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(PREFIX));
        assert_eq!(a.secret.len(), PREFIX.len() + 43);
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), 32);
    }
}
