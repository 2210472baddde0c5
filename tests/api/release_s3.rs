//! Releases on S3, against a real S3 server (s3s + s3s-fs) in this process:
//! large files written with multipart uploads, downloads with ranges through
//! the API, and short-lived presigned URLs issued only after the grant check,
//! each audited, renewed by asking again when a transfer outlives one.

use axum::http::StatusCode;
use custodian::config::{Config, StorageKind};
use object_store::ObjectStoreExt as _;
use serde_json::{Value, json};

use crate::drs::{object, release_blobs, revoke};
use crate::extracts::{audit_details, demo_with, eventually, get_with, request, sha256, verified_manifest, work};
use crate::helpers::TestApp;
use crate::s3_server::S3Server;
use crate::storage_s3::s3_config;

/// Files of at least this many bytes are written in parts here: the release's
/// conformance statement (about 150 KB), not its DICOM instances (about 10 KB).
/// s3s-fs names a pending upload's metadata file after the whole key, which
/// for the long keys of instances passes the file system's 255 bytes (S3
/// itself takes keys of 1,024).
const THRESHOLD: u64 = 64 * 1024;
/// S3's smallest part (but the last), which s3s-fs enforces as S3 does.
const PART: u64 = 5 * 1024 * 1024;

fn on_s3(config: &mut Config, server: &S3Server) {
    config.storage = s3_config(server).storage;
    config.storage.s3.prefix = Some("r".into());
    config.release.multipart_threshold_bytes = THRESHOLD;
    config.release.multipart_part_bytes = PART;
}

/// A release of the demo project built on S3 with presigned URLs on, valid
/// `ttl` seconds.
async fn built_on_s3(server: &S3Server, ttl: u64) -> (TestApp, Value, String) {
    built_without_imaging(|config| {
        on_s3(config, server);
        config.release.presigned_urls = true;
        config.release.presign_ttl_secs = ttl;
    })
    .await
}

/// A release of the demo project whose grant, in a later version, lets its
/// imaging be analysed in place but not downloaded: its tables and documents
/// only. s3s-fs keeps a file named after each key beside the object, and the
/// keys of released instances are too long for a file name (S3 takes them).
async fn built_without_imaging(adjust: impl FnOnce(&mut Config)) -> (TestApp, Value, String) {
    let (app, project, rita) = demo_with(adjust).await;
    sqlx::query(
        r#"insert into access_grant (grant_id, version, project_id, application_id, state, scope, conditions,
                                    not_before, not_after, reason, created_by)
           select grant_id, version + 1, project_id, application_id, state, scope,
                  conditions || '{"no_imaging_download": true}', not_before, not_after,
                  'imaging analysed in place', 'sam'
           from access_grant where project_id = $1::uuid order by version desc limit 1"#,
    )
    .bind(&project)
    .execute(&app.db)
    .await
    .unwrap();
    let queued = request(&app, &project, &rita).await.assert_status(StatusCode::ACCEPTED).json();
    work(&app).await;
    let id = queued["id"].as_str().unwrap();
    let ready = app.get(&format!("/api/v1/extracts/{id}"), Some(&rita)).await.assert_status(StatusCode::OK).json();
    assert_eq!(ready["imaging"], false, "{ready}");
    (app, ready, rita)
}

async fn presign(app: &TestApp, id: &str, path: &str, token: &str) -> crate::helpers::TestResponse {
    app.get(&format!("/api/v1/extracts/{id}/presigned/{path}"), Some(token)).await
}

/// GETs a presigned URL straight from the S3 server, as a client would.
async fn fetch(url: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.expect("the S3 server answers")
}

#[tokio::test]
async fn a_release_on_s3_is_written_in_parts_and_served_in_ranges_and_through_audited_presigned_urls() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path()).await;
    let (app, extract, rita) = built_on_s3(&server, 300).await;
    assert_eq!(extract["state"], "ready", "{extract}");
    let id = extract["id"].as_str().unwrap();
    let project = extract["project_id"].as_str().unwrap();
    let (manifest, _) = verified_manifest(&app, id, &rita).await;

    // Files over the threshold were written with a multipart upload (S3's ETag
    // of such an object ends in `-{parts}`), the others in one request.
    let mut multipart = 0;
    for file in &manifest.files {
        let key = custodian::release::build::object_key(project.parse().unwrap(), id.parse().unwrap(), &file.path);
        let meta = app.state.store.head(&key).await.unwrap();
        assert_eq!(meta.size, file.size, "{}", file.path);
        let parts = meta.e_tag.as_deref().unwrap().trim_matches('"').rsplit_once('-').map(|(_, n)| n.to_owned());
        assert_eq!(parts.is_some(), file.size >= THRESHOLD, "{}: {:?}", file.path, meta.e_tag);
        if let Some(parts) = parts {
            assert_eq!(parts.parse::<u64>().unwrap(), file.size.div_ceil(PART), "{}: {:?}", file.path, meta.e_tag);
            multipart += 1;
        }
    }
    assert!(multipart > 0 && multipart < manifest.files.len(), "{multipart} of {}", manifest.files.len());

    // The API serves the largest file in ranges from S3.
    let file = manifest.files.iter().max_by_key(|f| f.size).unwrap();
    let path = format!("/api/v1/extracts/{id}/files/{}", file.path);
    let half = file.size / 2;
    let first = get_with(&app, &path, &rita, &[("range", &format!("bytes=0-{}", half - 1))]).await;
    let rest = get_with(&app, &path, &rita, &[("range", &format!("bytes={half}-"))]).await;
    let mut whole = first.assert_status(StatusCode::PARTIAL_CONTENT).body.to_vec();
    whole.extend_from_slice(&rest.assert_status(StatusCode::PARTIAL_CONTENT).body);
    assert_eq!(sha256(&whole), file.sha256);

    // A presigned URL fetches the same bytes from the bucket, ranges included.
    let signed = presign(&app, id, &file.path, &rita).await.assert_status(StatusCode::OK).json();
    assert_eq!(signed["sha256"], file.sha256.as_str());
    let url = signed["url"].as_str().unwrap();
    assert!(url.starts_with(&server.endpoint) && url.contains("X-Amz-Signature="), "{url}");
    let expires: chrono::DateTime<chrono::Utc> = signed["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires <= chrono::Utc::now() + chrono::Duration::seconds(300));
    let body = fetch(url, None).await;
    assert_eq!(body.status(), reqwest::StatusCode::OK);
    assert_eq!(sha256(&body.bytes().await.unwrap()), file.sha256);
    let tail = fetch(url, Some(&format!("bytes={half}-"))).await;
    assert_eq!(tail.status(), reqwest::StatusCode::PARTIAL_CONTENT);
    assert_eq!(&tail.bytes().await.unwrap()[..], &whole[usize::try_from(half).unwrap()..]);

    // DRS lists the presigned access method and hands out such a URL too.
    let listed = release_blobs(&app, &extract, &rita).await;
    let blob_id = &listed.iter().find(|(p, _)| *p == file.path).unwrap().1;
    let blob = object(&app, blob_id, &rita).await.assert_status(StatusCode::OK).json();
    assert_eq!(
        blob["access_methods"],
        json!([{"type": "https", "access_id": "api"}, {"type": "https", "access_id": "s3-presigned"}])
    );
    let access = app.get(&format!("/ga4gh/drs/v1/objects/{blob_id}/access/s3-presigned"), Some(&rita)).await;
    let access = access.assert_status(StatusCode::OK).json();
    assert_eq!(access["headers"], json!([]));
    let body = fetch(access["url"].as_str().unwrap(), None).await;
    assert_eq!(sha256(&body.bytes().await.unwrap()), file.sha256);

    // Each issuance is audited, by whom, of what, until when.
    let issued = audit_details(&app, "extract.presigned").await;
    assert_eq!(issued.len(), 2, "{issued:?}");
    for details in &issued {
        assert_eq!(details["extract"], id);
        assert_eq!(details["path"], file.path.as_str());
        assert_eq!(details["ttl_secs"], 300);
    }

    // Revoked: no URL any more, by REST or DRS, and none audited as issued.
    revoke(&app, &extract).await;
    presign(&app, id, &file.path, &rita).await.assert_error(StatusCode::FORBIDDEN, "grant-revoked");
    let refused = app.get(&format!("/ga4gh/drs/v1/objects/{blob_id}/access/s3-presigned"), Some(&rita)).await;
    refused.assert_status(StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["code"], "grant-revoked");
    assert_eq!(audit_details(&app, "extract.presigned").await.len(), 2);
}

#[tokio::test]
async fn a_transfer_outliving_its_presigned_url_resumes_with_a_new_one() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path()).await;
    let (app, extract, rita) = built_on_s3(&server, 1).await;
    let id = extract["id"].as_str().unwrap();
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let file = manifest.files.iter().max_by_key(|f| f.size).unwrap();
    let chunk = file.size / 4 + 1;

    // A client that renews its URL whenever the bucket refuses it, as the API says to.
    let renew = || async {
        let signed = presign(&app, id, &file.path, &rita).await.assert_status(StatusCode::OK).json();
        signed["url"].as_str().unwrap().to_owned()
    };
    let mut url = renew().await;
    let mut received = Vec::new();
    let mut renewals = 0;
    while (received.len() as u64) < file.size {
        let start = received.len() as u64;
        let range = format!("bytes={start}-{}", (start + chunk).min(file.size) - 1);
        let got = fetch(&url, Some(&range)).await;
        if got.status() == reqwest::StatusCode::FORBIDDEN {
            renewals += 1;
            assert!(renewals < 20, "renewing does not help");
            url = renew().await;
            continue;
        }
        assert_eq!(got.status(), reqwest::StatusCode::PARTIAL_CONTENT);
        received.extend_from_slice(&got.bytes().await.unwrap());
        if start == 0 {
            // The transfer pauses until its URL has run out: the bucket refuses it from then on.
            let expired = || async { fetch(&url, Some(&range)).await.status() == reqwest::StatusCode::FORBIDDEN };
            assert!(eventually(expired).await, "a URL valid for a second expires");
        }
    }
    assert!(renewals >= 1, "the transfer outlived its first URL");
    assert_eq!(sha256(&received), file.sha256, "the renewed transfer completes to the listed digest");
    assert_eq!(audit_details(&app, "extract.presigned").await.len(), 1 + renewals, "every URL issued is audited");
}

#[tokio::test]
async fn presigned_urls_are_refused_where_storage_is_not_s3_and_at_most_fifteen_minutes_long() {
    let mut config = Config::default();
    config.release.presigned_urls = true;
    let problem = config.validate().unwrap_err().to_string();
    assert!(problem.contains("release.presigned_urls"), "{problem}");
    config.storage.kind = StorageKind::S3;
    config.storage.s3.bucket = Some("b".into());
    config.release.presign_ttl_secs = 901;
    let problem = config.validate().unwrap_err().to_string();
    assert!(problem.contains("release.presign_ttl_secs"), "{problem}");
    config.release.presign_ttl_secs = 900;
    config.validate().expect("fifteen minutes is allowed");

    // Off (the default), the API says so rather than serving a URL.
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path()).await;
    let (app, extract, rita) = built_without_imaging(|config| on_s3(config, &server)).await;
    let id = extract["id"].as_str().unwrap();
    presign(&app, id, "README.md", &rita).await.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(audit_details(&app, "extract.presigned").await.is_empty());
}

#[tokio::test]
async fn a_large_release_file_goes_to_s3_in_parts_of_the_configured_size_and_reads_back_whole() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path()).await;
    let app = TestApp::with_config(|config| on_s3(config, &server)).await;
    let ctx = crate::extracts::context(&app);
    // 12.5 MiB arriving in uneven pieces, as a file being re-pseudonymized does.
    let bytes: Vec<u8> = (0..12_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let pieces = bytes.chunks(3_000_001).map(bytes::Bytes::copy_from_slice);
    let digest: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref().try_into().unwrap();
    let entry = custodian::release::manifest::FileEntry::new(
        "dicom/P1/big.dcm",
        bytes.len() as u64,
        &digest,
        "application/dicom",
    );
    let (project, extract) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    custodian::release::build::write(&ctx, project, extract, &entry, pieces.collect::<object_store::PutPayload>())
        .await
        .unwrap();

    let key = custodian::release::build::object_key(project, extract, &entry.path);
    let meta = app.state.store.head(&key).await.unwrap();
    assert_eq!(meta.size, bytes.len() as u64);
    let etag = meta.e_tag.unwrap();
    assert!(etag.trim_matches('"').ends_with("-3"), "three parts of 5 MiB, the last smaller: {etag}");
    let back = app.state.store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&back), entry.sha256, "the parts join to the same bytes");
}
