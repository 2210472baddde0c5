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

    /// Prefix of challenge submissions waiting to be scored.
    pub const SUBMISSIONS: &str = "submissions";

    /// The predictions of a challenge submission, kept only until scored.
    pub fn submission(id: uuid::Uuid) -> Path {
        Path::from(format!("{SUBMISSIONS}/{id}"))
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

/// Bytes a download stream reads from a local file at once: large enough
/// that a fast client is not held back by one small read per chunk (the
/// local store's own stream reads 8 KiB at a time).
const LOCAL_READ_BYTES: usize = 1024 * 1024;

/// The bytes of `key` in `range` (the whole object without one), as a
/// stream. From the local filesystem it reads the file in 1 MiB pieces
/// with positioned reads; from S3 it is the store's own stream.
pub async fn stream(
    store: &dyn ObjectStore,
    key: &Path,
    range: Option<std::ops::Range<u64>>,
) -> Result<futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>, object_store::Error> {
    use futures::StreamExt as _;
    use object_store::{GetOptions, GetRange, GetResultPayload};
    let options = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
    let result = store.get_opts(key, options).await?;
    let range = result.range.clone();
    match result.payload {
        GetResultPayload::File(file, _) => {
            let file = Arc::new(file);
            Ok(futures::stream::try_unfold(range, move |left| {
                let file = file.clone();
                async move {
                    if left.start >= left.end {
                        return Ok(None);
                    }
                    let want = usize::try_from(left.end - left.start).unwrap_or(usize::MAX).min(LOCAL_READ_BYTES);
                    let offset = left.start;
                    let chunk = tokio::task::spawn_blocking(move || {
                        use std::os::unix::fs::FileExt as _;
                        let mut buffer = vec![0; want];
                        let mut filled = 0;
                        while filled < want {
                            let read = file.read_at(&mut buffer[filled..], offset + filled as u64)?;
                            if read == 0 {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    "the object is shorter than its recorded size",
                                ));
                            }
                            filled += read;
                        }
                        Ok(buffer)
                    })
                    .await
                    .map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?
                    .map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?;
                    let next = offset + chunk.len() as u64..left.end;
                    Ok(Some((bytes::Bytes::from(chunk), next)))
                }
            })
            .boxed())
        }
        GetResultPayload::Stream(stream) => Ok(stream),
    }
}
