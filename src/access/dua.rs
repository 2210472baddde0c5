//! The data use agreement: versioned, append-only text. The newest version is
//! the one a PI accepts to activate a grant; the acceptance records the
//! version and the SHA-256 of its text, so what was agreed to can be shown
//! word for word years later.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use utoipa::ToSchema;

use crate::error::ApiError;

/// One version of the agreement.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
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

const COLUMNS: &str = "version, title, body, sha256, published_by, published_at";

/// The version in force: the newest.
pub async fn current(db: impl PgExecutor<'_>) -> Result<Agreement, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLUMNS} from dua_version order by published_at desc limit 1")))
        .fetch_optional(db)
        .await?
        .ok_or(ApiError::NotFound("data use agreement"))
}

/// One version.
pub async fn get(db: impl PgExecutor<'_>, version: &str) -> Result<Option<Agreement>, ApiError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLUMNS} from dua_version where version = $1")))
        .bind(version)
        .fetch_optional(db)
        .await?)
}

/// Every version, newest first.
pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<Agreement>, ApiError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLUMNS} from dua_version order by published_at desc")))
        .fetch_all(db)
        .await?)
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
