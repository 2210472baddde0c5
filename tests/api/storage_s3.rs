//! The S3 storage path, exercised against a real S3 server (s3s + s3s-fs)
//! running in this process: real HTTP, real SigV4 signatures, real files.

use custodian::config::{Config, S3Config, StorageKind};
use custodian::storage::{self, Store};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutPayload};
use secrecy::SecretString;

use crate::s3_server::S3Server;

/// The configuration an operator would write for this server.
pub(crate) fn s3_config(server: &S3Server) -> Config {
    let mut config = Config::default();
    config.storage.kind = StorageKind::S3;
    config.storage.s3 = S3Config {
        bucket: Some(server.bucket.clone()),
        region: Some(server.region.clone()),
        endpoint: Some(server.endpoint.clone()),
        access_key_id: Some(server.access_key.clone()),
        secret_access_key: Some(SecretString::from(server.secret_key.clone())),
        allow_http: true,
        path_style: true,
        prefix: None,
    };
    config
}

fn open(config: &Config) -> Store {
    storage::open(config).expect("opening the S3 store")
}

async fn read(store: &Store, key: &Path) -> bytes::Bytes {
    store.get(key).await.expect("reading the object").bytes().await.expect("reading the body")
}

async fn keys_in(store: &Store, prefix: Option<&Path>) -> Vec<String> {
    let mut keys: Vec<String> =
        store.list(prefix).map_ok(|meta| meta.location.to_string()).try_collect().await.expect("listing the store");
    keys.sort();
    keys
}

#[tokio::test]
async fn s3_store_round_trips_objects_through_a_real_s3_server() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path()).await;
    let store = open(&s3_config(&server));

    let key = Path::from("studies/1.2.840.113619/series-1/instance-1.dcm");
    let body = b"DICM not really, but bytes all the same".to_vec();

    store
        .put_opts(&key, PutPayload::from(body.clone()), PutMode::Create.into())
        .await
        .expect("a create-only put of a new key succeeds");

    let fetched = store.get(&key).await.expect("getting the object").bytes().await.unwrap();
    assert_eq!(fetched.as_ref(), body.as_slice());
    assert_eq!(store.head(&key).await.unwrap().size, body.len() as u64);

    let second = store.put_opts(&key, PutPayload::from_static(b"overwrite attempt"), PutMode::Create.into()).await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "a second create-only put of the same key must fail with AlreadyExists, got {second:?}"
    );
    let after = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(after.as_ref(), body.as_slice(), "the refused put must leave the object untouched");

    let other = Path::from("studies/1.2.840.113619/series-1/instance-2.dcm");
    store.put(&other, PutPayload::from_static(b"second instance")).await.unwrap();
    assert_eq!(keys_in(&store, Some(&Path::from("studies"))).await, vec![key.to_string(), other.to_string()]);

    store.delete(&key).await.expect("deleting the object");
    assert!(matches!(store.get(&key).await, Err(object_store::Error::NotFound { .. })));
    assert_eq!(keys_in(&store, None).await, vec![other.to_string()]);
}

#[tokio::test]
async fn s3_store_is_ready_when_the_bucket_answers() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path()).await;
    let store = open(&s3_config(&server));

    storage::check(store.as_ref()).await.expect("a reachable bucket is ready");
}

#[tokio::test]
async fn s3_store_with_wrong_credentials_is_not_ready() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path()).await;

    let mut wrong_secret = s3_config(&server);
    wrong_secret.storage.s3.secret_access_key = Some(SecretString::from("not-the-secret-key".to_owned()));
    let result = storage::check(open(&wrong_secret).as_ref()).await;
    assert!(result.is_err(), "a bad signature must not count as ready, got {result:?}");

    let mut unknown_key = s3_config(&server);
    unknown_key.storage.s3.access_key_id = Some("nobody".to_owned());
    let result = storage::check(open(&unknown_key).as_ref()).await;
    assert!(result.is_err(), "an unknown access key must not count as ready, got {result:?}");
}

#[tokio::test]
async fn s3_store_prefix_keeps_objects_under_the_prefix() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path()).await;

    let mut prefixed = s3_config(&server);
    prefixed.storage.s3.prefix = Some("custodian/objects".to_owned());
    let store = open(&prefixed);
    let whole_bucket = open(&s3_config(&server));

    let key = Path::from("studies/a/instance.dcm");
    store.put(&key, PutPayload::from_static(b"prefixed bytes")).await.unwrap();

    // Through the prefixed store the key reads as written.
    assert_eq!(keys_in(&store, None).await, vec![key.to_string()]);
    assert_eq!(read(&store, &key).await.as_ref(), b"prefixed bytes");

    // In the bucket it lives under the prefix, and nowhere else.
    let full = Path::from("custodian/objects/studies/a/instance.dcm");
    assert_eq!(keys_in(&whole_bucket, None).await, vec![full.to_string()]);
    assert_eq!(read(&whole_bucket, &full).await.as_ref(), b"prefixed bytes");
    assert!(matches!(whole_bucket.head(&key).await, Err(object_store::Error::NotFound { .. })));

    // And the server really wrote it there.
    let on_disk = root.path().join(&server.bucket).join("custodian/objects/studies/a/instance.dcm");
    assert_eq!(std::fs::read(on_disk).unwrap(), b"prefixed bytes");
}

#[tokio::test]
async fn s3_store_with_a_misspelled_bucket_is_not_ready() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path()).await;
    let mut config = s3_config(&server);
    config.storage.s3.bucket = Some("custodian-tset".to_owned());
    let result = storage::check(open(&config).as_ref()).await;
    assert!(result.is_err(), "a missing bucket must not count as ready, got {result:?}");
}
