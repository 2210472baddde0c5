//! Object storage: every byte Custodian keeps outside PostgreSQL.
//!
//! One `Arc<dyn ObjectStore>` chosen by configuration — the local filesystem
//! under `<data_dir>/objects` by default, any S3-compatible bucket in production —
//! and the one place where object keys are built.

use std::sync::Arc;

use anyhow::{Context, Result};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use secrecy::ExposeSecret;

use crate::config::{Config, StorageKind};

/// The store shared by every part of Custodian.
pub type Store = Arc<dyn ObjectStore>;

/// Opens the configured store, creating the local root when needed.
pub fn open(config: &Config) -> Result<Store> {
    match config.storage.kind {
        StorageKind::Local => {
            let root = config.objects_dir();
            std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
            let store = LocalFileSystem::new_with_prefix(&root)
                .with_context(|| format!("opening the object store at {}", root.display()))?
                // Writes land in a temporary file first and are renamed into place.
                .with_automatic_cleanup(true);
            Ok(Arc::new(store))
        }
        StorageKind::S3 => {
            let store: Store = Arc::new(s3(config)?);
            Ok(match s3_prefix(config) {
                Some(prefix) => Arc::new(PrefixStore::new(store, prefix)),
                None => store,
            })
        }
    }
}

/// The configured S3 bucket itself, without the key prefix: what signs URLs.
pub fn s3(config: &Config) -> Result<AmazonS3> {
    let s3 = &config.storage.s3;
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(s3.bucket.clone().unwrap_or_default())
        .with_allow_http(s3.allow_http)
        .with_virtual_hosted_style_request(!s3.path_style);
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret.expose_secret());
    }
    builder.build().context("configuring the S3 object store")
}

/// The prefix every key of the store gets in the S3 bucket, if any.
pub fn s3_prefix(config: &Config) -> Option<&str> {
    config.storage.s3.prefix.as_deref().filter(|p| !p.is_empty())
}

/// Keys of the objects Custodian writes. Nothing else builds a key.
pub mod keys {
    use super::Path;

    /// Prefix under which all de-identified instances live.
    pub const INSTANCES: &str = "instances";

    /// A de-identified instance, addressed by its registry UIDs.
    pub fn instance(study_uid: &str, series_uid: &str, sop_uid: &str) -> Path {
        Path::from(format!("{INSTANCES}/{study_uid}/{series_uid}/{sop_uid}.dcm"))
    }

    /// Prefix of annotation payloads (JSON geometry, NIfTI masks).
    pub const ANNOTATIONS: &str = "annotations";

    /// An annotation payload; `extension` is `json` or `nii.gz`.
    pub fn annotation(id: uuid::Uuid, extension: &str) -> Path {
        Path::from(format!("{ANNOTATIONS}/{id}.{extension}"))
    }

    /// Prefix of Custodian's own bookkeeping objects; listed to prove the store answers.
    pub fn system_prefix() -> Path {
        Path::from("system")
    }
}

/// Proves the store is reachable and the bucket exists: listing a small prefix
/// succeeds (possibly empty) only then. A lookup of a missing key would not do:
/// S3 answers a missing bucket and a missing key with the same bare 404.
pub async fn check(store: &dyn ObjectStore) -> Result<(), object_store::Error> {
    store.list_with_delimiter(Some(&keys::system_prefix())).await.map(|_| ())
}
