//! Sessions of the web interface and their CSRF tokens.
//!
//! The browser holds an opaque random id in the `custodian_session` cookie
//! (`HttpOnly`, `SameSite=Lax`, `Secure` when `release.public_url` is
//! https); the database keeps only its SHA-256 (`web_session`). A session
//! resolves to the same [`Principal`] the API builds from a bearer
//! credential, so a page calls the same service functions, under the same
//! checks, with the same name in the audit log.
//!
//! Sign-in in the embedded mode takes a credential the node already trusts:
//! a JWT it signed (`serve --demo` writes one per demo user to
//! `data/demo-tokens.env`; `custodian token issue` makes more) or a personal
//! API token. The token itself is not kept: a JWT session ends when the JWT
//! would have (at most [`SESSION_HOURS`]), an API token session also ends
//! when its token is revoked. When an OIDC issuer is configured, the visitor
//! may sign in there instead ([`super::oidc`]): the session then lasts
//! [`SESSION_HOURS`].
//!
//! Every form carries a synchronizer token bound to the session; every POST
//! must bring it back (field `csrf_token`, or the `X-CSRF-Token` header for
//! scripts), or it is refused before any handler runs. A visitor who opens
//! the sign-in form gets a session without a user that holds only that token,
//! replaced by a new session (a new id, a new token) once signed in.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::audit::{self, NewEvent};
use crate::auth::{Credential, Principal, api_tokens, role_names, roles_from_names};

/// The cookie holding the session id.
pub const COOKIE: &str = "custodian_session";
/// The form field (and, for scripts, the header) carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Longest a signed-in session lasts.
pub const SESSION_HOURS: u64 = 12;
/// How long a visitor's sign-in form stays usable.
const FORM_HOURS: u64 = 1;

/// A session as a request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// `None`: a visitor with a sign-in form open.
    pub principal: Option<Principal>,
    pub csrf_token: String,
    hash: Vec<u8>,
}

impl Session {
    /// The SHA-256 of the session's id, as stored.
    pub fn id_hash(&self) -> &[u8] {
        &self.hash
    }
}

/// How a visitor signed in, as the audit log records it.
#[derive(Debug, Clone, Copy)]
pub enum SignInMethod {
    /// A token pasted into the sign-in form.
    Token,
    /// The OIDC issuer's authorization-code flow.
    Oidc,
}

/// A new session's id, for the cookie.
pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

pub(super) fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn hash(id: &str) -> Vec<u8> {
    digest(&SHA256, id.as_bytes()).as_ref().to_vec()
}

/// Whether `presented` is the session's CSRF token, compared in constant time.
pub fn csrf_matches(session: &Session, presented: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(session.csrf_token.as_bytes(), presented.as_bytes()).is_ok()
}

/// The live session with cookie value `id`, if any: unexpired, and for an
/// API token session, its token neither revoked nor expired.
pub async fn find(db: impl PgExecutor<'_>, id: &str) -> Result<Option<Session>, sqlx::Error> {
    let hash = hash(id);
    let row = sqlx::query!(
        "select s.username, s.roles, s.api_token_id, s.csrf_token
         from web_session s left join api_token t using (api_token_id)
         where s.session_hash = $1 and s.expires_at > now()
           and (s.api_token_id is null or (t.revoked_at is null and t.expires_at > now()))",
        hash
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Session {
        principal: r.username.map(|username| Principal {
            username,
            roles: roles_from_names(r.roles.iter().map(String::as_str)),
            credential: r.api_token_id.map_or(Credential::Jwt, Credential::ApiToken),
        }),
        csrf_token: r.csrf_token,
        hash,
    }))
}

async fn insert(
    tx: &mut PgConnection,
    principal: Option<&Principal>,
    lifetime: chrono::Duration,
) -> Result<NewSession, sqlx::Error> {
    let id = random_token();
    let csrf_token = random_token();
    let api_token_id = match principal.map(|p| &p.credential) {
        Some(Credential::ApiToken(token)) => Some(*token),
        _ => None,
    };
    let expires_at = sqlx::query_scalar!(
        "insert into web_session (session_hash, username, roles, api_token_id, csrf_token, expires_at)
         values ($1, $2, $3, $4, $5, now() + $6::interval)
         returning expires_at",
        hash(&id),
        principal.map(|p| p.username.as_str()),
        &principal.map(|p| role_names(&p.roles)).unwrap_or_default(),
        api_token_id,
        csrf_token,
        lifetime_interval(lifetime),
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(NewSession { id, csrf_token, expires_at })
}

fn lifetime_interval(lifetime: chrono::Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval { months: 0, days: 0, microseconds: lifetime.num_microseconds().unwrap_or(0) }
}

/// A session for a visitor about to sign in: it holds only the form's CSRF token.
pub async fn start_visit(tx: &mut PgConnection) -> Result<NewSession, sqlx::Error> {
    // Sign-in forms are where sessions start, so this is where the expired ones go.
    sqlx::query!("delete from web_session where expires_at <= now()").execute(&mut *tx).await?;
    insert(tx, None, hours(FORM_HOURS)).await
}

fn hours(h: u64) -> chrono::Duration {
    chrono::Duration::from_std(Duration::from_hours(h)).expect("a few hours fit")
}

/// Signs `principal` in: the visitor's session (if any) is replaced by a new
/// one, with a new id and CSRF token, lasting until `credential_expiry` (at
/// most [`SESSION_HOURS`]). Audited, with `method`.
pub async fn sign_in(
    tx: &mut PgConnection,
    previous: Option<&Session>,
    principal: &Principal,
    credential_expiry: Option<DateTime<Utc>>,
    method: SignInMethod,
) -> Result<NewSession, sqlx::Error> {
    if let Some(previous) = previous {
        sqlx::query!("delete from web_session where session_hash = $1", previous.hash).execute(&mut *tx).await?;
    }
    let longest = hours(SESSION_HOURS);
    let lifetime =
        credential_expiry.map_or(longest, |expiry| (expiry - Utc::now()).clamp(chrono::Duration::zero(), longest));
    let session = insert(tx, Some(principal), lifetime).await?;
    let how = match principal.credential {
        Credential::Jwt => "jwt",
        Credential::ApiToken(_) => "api_token",
    };
    let token = match principal.credential {
        Credential::ApiToken(id) => Some(id),
        Credential::Jwt => None,
    };
    let method = match method {
        SignInMethod::Token => "token",
        SignInMethod::Oidc => "oidc",
    };
    audit::record(
        tx,
        NewEvent::new(&principal.username, "web.signed_in").details(
            json!({ "method": method, "credential": how, "api_token_id": token, "expires_at": session.expires_at }),
        ),
    )
    .await?;
    Ok(session)
}

/// Ends `session`: its row is deleted, so the cookie no longer signs anyone in. Audited.
pub async fn sign_out(tx: &mut PgConnection, session: &Session) -> Result<(), sqlx::Error> {
    sqlx::query!("delete from web_session where session_hash = $1", session.hash).execute(&mut *tx).await?;
    if let Some(principal) = &session.principal {
        audit::record(tx, NewEvent::new(&principal.username, "web.signed_out")).await?;
    }
    Ok(())
}

/// When a JWT that verified expires (its `exp`), read from its payload.
pub fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    DateTime::from_timestamp(claims.get("exp")?.as_i64()?, 0)
}

/// When a personal API token expires.
pub async fn api_token_expiry(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!("select expires_at from api_token where api_token_id = $1", id).fetch_optional(db).await
}

/// The `Set-Cookie` value for a new session.
pub fn cookie(session: &NewSession, secure: bool) -> String {
    let max_age = (session.expires_at - Utc::now()).num_seconds().max(0);
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        session.id,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn removal_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}", if secure { "; Secure" } else { "" })
}

/// The session id in a `Cookie` header, if any.
pub fn id_from_cookies(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

/// Checks a credential pasted into the sign-in form exactly as the API checks
/// a bearer credential, returning its principal and when it expires.
pub async fn verify_credential(
    state: &crate::app::AppState,
    credential: &str,
) -> Result<(Principal, Option<DateTime<Utc>>), String> {
    let credential = credential.trim();
    if api_tokens::looks_like_api_token(credential) {
        let principal = api_tokens::authenticate(&state.db, credential).await.map_err(|e| e.to_string())?;
        let expiry = match principal.credential {
            Credential::ApiToken(id) => api_token_expiry(&state.db, id).await.map_err(|e| e.to_string())?,
            Credential::Jwt => None,
        };
        return Ok((principal, expiry));
    }
    let principal = state.auth.verify(credential).await.map_err(|e| e.to_string())?;
    Ok((principal, jwt_expiry(credential)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_read_among_others_and_an_oversized_one_is_ignored() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, "a=1; custodian_session=abc; b=2".parse().unwrap());
        assert_eq!(id_from_cookies(&headers).as_deref(), Some("abc"));
        headers.insert(axum::http::header::COOKIE, format!("custodian_session={}", "x".repeat(65)).parse().unwrap());
        assert_eq!(id_from_cookies(&headers), None);
    }

    #[test]
    fn a_jwt_expiry_is_read_from_its_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":1700000000}"#);
        assert_eq!(jwt_expiry(&format!("h.{payload}.s")).map(|t| t.timestamp()), Some(1_700_000_000));
        assert_eq!(jwt_expiry("not-a-jwt"), None);
    }
}
