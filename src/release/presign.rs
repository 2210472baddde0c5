//! Presigned URLs to release files on S3: a client fetches the bytes from the
//! bucket itself, with a URL that works for `release.presign_ttl_secs` (at
//! most 15 minutes) and nothing else.
//!
//! A URL is issued only to a caller [`super::extracts::for_download`] let
//! through (the grant checked now), and each issuance is audited
//! (`extract.presigned`) in the transaction that records it, before the URL
//! is handed out. A transfer outliving its URL does not fail for good: the
//! client asks for a new one (the grant checked again) and resumes with a
//! `Range` where it stopped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::signer::Signer as _;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::extracts::{Extract, StoredFile};
use crate::audit::{self, NewEvent};
use crate::config::{Config, StorageKind};
use crate::error::ApiError;

/// A presigned GET URL of one release file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PresignedUrl {
    /// `GET` it, with a `Range` if need be; no credential is needed beside it.
    pub url: String,
    /// When the URL stops working; ask for a new one to go on.
    pub expires_at: DateTime<Utc>,
    /// The file's SHA-256 (hex), to verify what arrives.
    pub sha256: String,
    pub size: i64,
}

/// Whether this registry hands out presigned URLs.
pub fn enabled(config: &Config) -> bool {
    config.release.presigned_urls && config.storage.kind == StorageKind::S3
}

/// Signs a GET URL of `file` of `extract` for `username` and audits the
/// issuance. Call only with the release [`super::extracts::for_download`]
/// answered for this caller on this request.
pub async fn issue(
    db: &PgPool,
    config: &Config,
    username: &str,
    extract: &Extract,
    path: &str,
    file: &StoredFile,
) -> Result<PresignedUrl, ApiError> {
    if !enabled(config) {
        return Err(ApiError::Conflict(
            "this registry does not hand out presigned URLs (release.presigned_urls is off or storage is not S3); \
             download through the API"
                .into(),
        ));
    }
    let ttl = Duration::from_secs(config.release.presign_ttl_secs);
    let key = match crate::storage::s3_prefix(config) {
        Some(prefix) => Path::from(format!("{prefix}/{}", file.object_key)),
        None => Path::from(file.object_key.as_str()),
    };
    let url = crate::storage::s3(config)?.signed_url(object_store::signer::Method::GET, &key, ttl).await?;
    let expires_at = Utc::now() + ttl;
    let mut tx = db.begin().await?;
    audit::record(
        &mut tx,
        NewEvent::new(username, "extract.presigned").target(extract.audit_target()).details(
            json!({ "extract": extract.id, "path": path, "expires_at": expires_at, "ttl_secs": ttl.as_secs() }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(PresignedUrl { url: url.to_string(), expires_at, sha256: file.sha256.clone(), size: file.size })
}
