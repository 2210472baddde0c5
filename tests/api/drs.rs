//! GA4GH DRS 1.4 over a release: the release a bundle, each file a blob whose
//! checksum is the manifest's and whose access URL serves those bytes; the
//! grant checked on every request; and a DRS client written from the
//! specification (plain `requests`) fetching the whole release.

use std::time::Duration;

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::extracts::{audit_details, built, get_with, sha256, verified_manifest};
use crate::helpers::{TestApp, TestResponse};
use crate::python;

const DRS: &str = "/ga4gh/drs/v1";

/// The DRS id of a release: its id in 32 hex digits.
pub(crate) fn bundle_id(extract: &Value) -> String {
    extract["id"].as_str().unwrap().replace('-', "")
}

pub(crate) async fn object(app: &TestApp, id: &str, token: &str) -> TestResponse {
    app.get(&format!("{DRS}/objects/{id}"), Some(token)).await
}

/// Every blob below a bundle expanded: (path, id).
fn blobs(contents: &Value, prefix: &str, into: &mut Vec<(String, String)>) {
    for item in contents.as_array().unwrap() {
        let name = item["name"].as_str().unwrap();
        match item.get("contents") {
            Some(inner) => blobs(inner, &format!("{prefix}{name}/"), into),
            None => into.push((format!("{prefix}{name}"), item["id"].as_str().unwrap().to_owned())),
        }
    }
}

/// The blobs of a release, through its expanded bundle.
pub(crate) async fn release_blobs(app: &TestApp, extract: &Value, token: &str) -> Vec<(String, String)> {
    let bundle = app.get(&format!("{DRS}/objects/{}?expand=true", bundle_id(extract)), Some(token)).await;
    let bundle = bundle.assert_status(StatusCode::OK).json();
    let mut found = Vec::new();
    blobs(&bundle["contents"], "", &mut found);
    found
}

/// A DRS error: the status, `{msg, status_code}` as the spec has it, and the API's code.
#[track_caller]
fn assert_drs_error(response: &TestResponse, status: StatusCode, code: &str) {
    response.assert_status(status);
    let body = response.json();
    assert_eq!(body["status_code"], status.as_u16(), "{body}");
    assert!(body["msg"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(body["code"], code, "{body}");
}

/// Follows an `api` access URL as a client would: its path, with its headers.
async fn follow(app: &TestApp, access: &Value, range: Option<&str>) -> TestResponse {
    let url = url::Url::parse(access["url"].as_str().unwrap()).unwrap();
    let headers: Vec<(String, String)> = access["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let (name, value) = h.as_str().unwrap().split_once(": ").unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect();
    let authorization = headers.iter().find(|(n, _)| n == "Authorization").expect("an Authorization header");
    let token = authorization.1.strip_prefix("Bearer ").unwrap();
    let range = range.map(|r| ("range", r));
    get_with(app, url.path(), token, &range.into_iter().collect::<Vec<_>>()).await
}

#[tokio::test]
async fn service_info_names_a_drs_1_4_service_without_a_login() {
    let app = TestApp::new().await;
    let info = app.get(&format!("{DRS}/service-info"), None).await.assert_status(StatusCode::OK).json();
    assert_eq!(info["type"], json!({"group": "org.ga4gh", "artifact": "drs", "version": "1.4.0"}));
    assert!(info["id"].as_str().unwrap().ends_with("custodian.drs"), "{info}");
    assert!(info["organization"]["url"].as_str().unwrap().starts_with("http"), "{info}");
}

#[tokio::test]
async fn every_file_of_a_release_is_a_drs_object_with_the_manifests_checksum_and_an_access_url_serving_it() {
    let (app, extract, rita) = built().await;
    let id = extract["id"].as_str().unwrap();
    let (manifest, _) = verified_manifest(&app, id, &rita).await;

    // The release is a bundle of every file, its size the release's.
    let bundle = object(&app, &bundle_id(&extract), &rita).await.assert_status(StatusCode::OK).json();
    assert_eq!(bundle["size"], extract["totals"]["bytes"], "{bundle}");
    assert_eq!(bundle["self_uri"], format!("drs://localhost/{}", bundle_id(&extract)));
    assert_eq!(bundle["created_time"], extract["ready_at"]);
    assert!(bundle.get("access_methods").is_none(), "a bundle has no bytes of its own");
    let top: Vec<&str> = bundle["contents"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(top.contains(&"dicom") && top.contains(&"tables") && top.contains(&"README.md"), "{top:?}");
    assert!(
        bundle["contents"].as_array().unwrap().iter().all(|c| c.get("contents").is_none()),
        "without ?expand a bundle lists only what it directly holds"
    );

    // Expanded, it lists every file of the manifest, and nothing else.
    let listed = release_blobs(&app, &extract, &rita).await;
    let mut paths: Vec<&str> = listed.iter().map(|(p, _)| p.as_str()).collect();
    paths.sort_unstable();
    let mut expected: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(paths, expected);

    // Ids are opaque: no registry pseudonym, no UID, no path.
    let registry: Vec<String> =
        sqlx::query_scalar("select pseudonym from subject union all select study_uid from study")
            .fetch_all(&app.db)
            .await
            .unwrap();
    for (path, object_id) in &listed {
        assert!(object_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'), "{object_id}");
        assert!(!object_id.contains(path.split('/').next_back().unwrap()), "{object_id} names {path}");
        assert!(registry.iter().all(|r| !object_id.contains(r.as_str())), "{object_id}");
    }

    // Each file: name, size, media type and the manifest's SHA-256; its bytes at the access URL.
    for file in manifest.files.iter().filter(|f| !f.path.starts_with("dicom/")).chain(manifest.files.iter().take(3)) {
        let object_id = &listed.iter().find(|(p, _)| *p == file.path).unwrap().1;
        let blob = object(&app, object_id, &rita).await.assert_status(StatusCode::OK).json();
        assert_eq!(blob["id"], object_id.as_str());
        assert_eq!(blob["name"], file.path.rsplit('/').next().unwrap());
        assert_eq!(blob["size"], file.size);
        assert_eq!(blob["mime_type"], file.media_type.as_str());
        assert_eq!(blob["checksums"], json!([{"type": "sha-256", "checksum": file.sha256}]));
        assert_eq!(blob["aliases"], json!([file.path]));
        assert_eq!(blob["access_methods"], json!([{"type": "https", "access_id": "api"}]), "no presigning here");
        let access = app.get(&format!("{DRS}/objects/{object_id}/access/api"), Some(&rita)).await;
        let access = access.assert_status(StatusCode::OK).json();
        assert!(access["url"].as_str().unwrap().contains(&format!("/api/v1/extracts/{id}/files/")), "{access}");
        let got = follow(&app, &access, None).await;
        assert_eq!(sha256(&got.assert_status(StatusCode::OK).body), file.sha256, "{}", file.path);
        // The access URL resumes like any download.
        let tail = follow(&app, &access, Some("bytes=1-")).await;
        assert_eq!(&tail.assert_status(StatusCode::PARTIAL_CONTENT).body[..], &got.body[1..]);
    }

    // A folder is a bundle too, with the bundle checksum DRS defines.
    let dicom = bundle["contents"].as_array().unwrap().iter().find(|c| c["name"] == "dicom").unwrap();
    let folder = object(&app, dicom["id"].as_str().unwrap(), &rita).await.assert_status(StatusCode::OK).json();
    let under: Vec<_> = manifest.files.iter().filter(|f| f.path.starts_with("dicom/")).collect();
    assert_eq!(folder["size"], under.iter().map(|f| f.size).sum::<u64>());
    assert_eq!(folder["name"], "dicom");
    assert_eq!(folder["checksums"][0]["type"], "sha-256");
    let no_access = app.get(&format!("{DRS}/objects/{}/access/api", dicom["id"].as_str().unwrap()), Some(&rita)).await;
    assert_drs_error(&no_access, StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn drs_refuses_other_projects_unknown_ids_and_a_revoked_grant_as_downloads_do() {
    let (app, extract, rita) = built().await;
    let listed = release_blobs(&app, &extract, &rita).await;
    let (_, file_id) = &listed[0];

    // A researcher of another project sees no such object, and neither does a stranger.
    let bruno = app.token("bruno", &[Role::Researcher]);
    let profile = json!({"name": "Bruno Berg", "institution": "Elsewhere University", "email": "bruno@example.org", "position": "Lecturer"});
    app.put_json("/api/v1/me/profile", Some(&bruno), &profile).await.assert_status(StatusCode::CREATED);
    app.post_json("/api/v1/projects", Some(&bruno), &json!({"title": "Another project"}))
        .await
        .assert_status(StatusCode::CREATED);
    for who in [&bruno, &app.token("nina", &[Role::Researcher])] {
        for path in [
            format!("{DRS}/objects/{}", bundle_id(&extract)),
            format!("{DRS}/objects/{file_id}"),
            format!("{DRS}/objects/{file_id}/access/api"),
        ] {
            assert_drs_error(&app.get(&path, Some(who)).await, StatusCode::NOT_FOUND, "not-found");
        }
    }
    // Unknown and malformed ids, unknown access methods.
    let unknown = format!("{}.{}", bundle_id(&extract), "0".repeat(32));
    for id in [unknown.as_str(), &"0".repeat(32), "not-an-id", extract["id"].as_str().unwrap()] {
        assert_drs_error(&object(&app, id, &rita).await, StatusCode::NOT_FOUND, "not-found");
    }
    let other_method = app.get(&format!("{DRS}/objects/{file_id}/access/s3-presigned"), Some(&rita)).await;
    assert_drs_error(&other_method, StatusCode::NOT_FOUND, "not-found");
    // Without a token, as everywhere in the API.
    app.get(&format!("{DRS}/objects/{file_id}"), None).await.assert_status(StatusCode::UNAUTHORIZED);

    // An access URL fetched before the revocation stops working with it, and so does DRS.
    let access = app.get(&format!("{DRS}/objects/{file_id}/access/api"), Some(&rita)).await;
    let access = access.assert_status(StatusCode::OK).json();
    revoke(&app, &extract).await;
    let refusals_before = refusals(&app).await;
    for path in [format!("{DRS}/objects/{}", bundle_id(&extract)), format!("{DRS}/objects/{file_id}/access/api")] {
        assert_drs_error(&app.get(&path, Some(&rita)).await, StatusCode::FORBIDDEN, "grant-revoked");
    }
    follow(&app, &access, None).await.assert_error(StatusCode::FORBIDDEN, "grant-revoked");
    assert_eq!(refusals(&app).await, refusals_before + 3, "each refusal counted like a download's");
    assert!(audit_details(&app, "extract.presigned").await.is_empty());
}

/// A steward revokes the release's grant.
pub(crate) async fn revoke(app: &TestApp, extract: &Value) {
    let steward = app.token("sam", &[Role::Steward]);
    let grant = extract["grant_id"].as_str().unwrap();
    let revoke = json!({"action": "revoke", "reason": "data security incident"});
    app.post_json(&format!("/api/v1/grants/{grant}/state"), Some(&steward), &revoke)
        .await
        .assert_status(StatusCode::OK);
}

/// Refused data requests counted for the audit (`access_refusal`).
async fn refusals(app: &TestApp) -> i64 {
    sqlx::query_scalar("select coalesce(sum(refusals), 0)::bigint from access_refusal")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drs_client_written_from_the_spec_fetches_every_file_of_a_release_with_matching_checksums() {
    let (app, extract, rita) = built().await;
    let (manifest, _) = verified_manifest(&app, extract["id"].as_str().unwrap(), &rita).await;
    let served = app.serve().await;
    let host = served.host.clone();
    let out = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/fixtures/drs_fetch.py");
    let drs_uri = format!("drs://{host}/{}", bundle_id(&extract));
    let output = tokio::process::Command::new(python::tools().join("python"))
        .arg(script)
        .args(["http", &drs_uri, &rita])
        .arg(out.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_mins(3), output).await.unwrap().unwrap();
    served.stop().await;
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["files"], manifest.files.len());
    assert_eq!(summary["bytes"], manifest.files.iter().map(|f| f.size).sum::<u64>());
    for file in &manifest.files {
        let fetched = std::fs::read(out.path().join(&file.path)).unwrap();
        assert_eq!(sha256(&fetched), file.sha256, "{}", file.path);
    }
}
