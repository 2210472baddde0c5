//! The data use agreement: versioned, append-only text. The newest version is
//! the one a PI accepts to activate a grant; the acceptance records the
//! version and the SHA-256 of its text, so what was agreed to can be shown
//! word for word years later.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;

use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::ApiError;

/// One version of the agreement.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Agreement {
    /// E.g. `custodian-dua-2026-1`.
    pub version: String,
    pub title: String,
    /// The full text (Markdown).
    pub body: String,
    /// SHA-256 (hex) of `body` as UTF-8.
    pub sha256: String,
    pub published_by: String,
    pub published_at: DateTime<Utc>,
}

/// The version in force: the newest.
pub async fn current(db: impl PgExecutor<'_>) -> Result<Agreement, ApiError> {
    sqlx::query_as!(
        Agreement,
        "select version, title, body, sha256, published_by, published_at
         from dua_version order by published_at desc limit 1"
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("data use agreement"))
}

/// One version.
pub async fn get(db: impl PgExecutor<'_>, version: &str) -> Result<Option<Agreement>, ApiError> {
    Ok(sqlx::query_as!(
        Agreement,
        "select version, title, body, sha256, published_by, published_at from dua_version where version = $1",
        version,
    )
    .fetch_optional(db)
    .await?)
}

/// Every version, newest first.
pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<Agreement>, ApiError> {
    Ok(sqlx::query_as!(
        Agreement,
        "select version, title, body, sha256, published_by, published_at from dua_version order by published_at desc"
    )
    .fetch_all(db)
    .await?)
}

/// Publishes a new version of the agreement (admins): in force at once.
/// Version names are never reused.
pub async fn publish(
    tx: &mut PgConnection,
    principal: &Principal,
    version: &str,
    title: &str,
    body: &str,
) -> Result<Agreement, ApiError> {
    principal.require_any(&[Role::Admin])?;
    if !valid_version(version) {
        return Err(ApiError::BadRequest(
            "`version` is 1 to 64 letters, digits, `.`, `_` or `-` (e.g. custodian-dua-2027-1)".into(),
        ));
    }
    let title = title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::BadRequest("`title` is 1 to 200 characters".into()));
    }
    if body.trim().is_empty() || body.chars().count() > 100_000 {
        return Err(ApiError::BadRequest("`body` is 1 to 100,000 characters".into()));
    }
    let sha256 = digest(body);
    let saved = sqlx::query_as!(
        Agreement,
        "insert into dua_version (version, title, body, sha256, published_by) values ($1, $2, $3, $4, $5)
         on conflict do nothing
         returning version, title, body, sha256, published_by, published_at",
        version,
        title,
        body,
        sha256,
        principal.username,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::Conflict(format!("a data use agreement `{version}` exists; versions are never reused")))?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "dua.publish")
            .target(format!("dua:{}", saved.version))
            .details(json!({ "title": saved.title, "sha256": saved.sha256 })),
    )
    .await?;
    announce(tx, &saved).await?;
    Ok(saved)
}

/// Tells the PIs a new version concerns: of approved applications, who must
/// accept it to activate them, and of grants in force, which stay under the
/// version they accepted.
async fn announce(tx: &mut PgConnection, saved: &Agreement) -> Result<(), ApiError> {
    let concerned = sqlx::query!(
        r#"select a.application_id, a.state, p.pi_username,
                  (select g.grant_id from access_grant g where g.application_id = a.application_id
                   order by g.version desc limit 1) as grant_id
           from application a join project p on p.project_id = a.project_id
           where a.state = 'approved'
              or (a.state = 'active'
                  and (select g.state from access_grant g where g.application_id = a.application_id
                       order by g.version desc limit 1) = 'active')
           order by a.application_id"#
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in concerned {
        let (subject, target) = match row.grant_id {
            Some(grant) if row.state == "active" => (
                format!(
                    "The data use agreement “{}” ({}) is now in force; your grant stays under the version you accepted",
                    saved.title, saved.version
                ),
                format!("grant:{grant}"),
            ),
            _ => (
                format!(
                    "The data use agreement “{}” ({}) is now in force: accept it to activate your approved application",
                    saved.title, saved.version
                ),
                format!("application:{}", row.application_id),
            ),
        };
        super::duties::notify(tx, &row.pi_username, "agreement.published", &subject, &target).await?;
    }
    Ok(())
}

/// The SHA-256 (hex) of a text, as recorded for a version.
pub fn digest(body: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes()))
}

/// Whether `version` is a well-formed version name.
pub fn valid_version(version: &str) -> bool {
    (1..=64).contains(&version.len())
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
