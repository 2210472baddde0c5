//! A release as one streamed ZIP archive: exactly the files of the signed
//! manifest, readable by standard tools, audited, and behind the same grant
//! check as every other download.

use std::io::Read as _;
use std::process::Command;

use axum::http::{StatusCode, header};
use custodian::auth::Role;
use serde_json::json;

use crate::extracts::{audit_details, built, eventually, sha256, verified_manifest};

#[tokio::test]
async fn a_release_downloads_as_one_zip_that_unzip_checks_and_that_holds_exactly_the_signed_files() {
    let (app, extract, rita) = built().await;
    let id = extract["id"].as_str().unwrap();
    let (manifest, manifest_bytes) = verified_manifest(&app, id, &rita).await;
    let got = crate::extracts::get_with(
        &app,
        &format!("/api/v1/extracts/{id}/archive"),
        &rita,
        &[("x-download-session", "zip-1")],
    )
    .await;
    got.assert_status(StatusCode::OK);
    assert_eq!(got.headers[header::CONTENT_TYPE], "application/zip");
    assert_eq!(got.headers[header::CONTENT_LENGTH], got.body.len().to_string().as_str());
    assert_eq!(got.headers[header::CONTENT_DISPOSITION], format!("attachment; filename=\"release-{id}.zip\"").as_str());

    // Info-ZIP checks every entry's CRC.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("release.zip");
    std::fs::write(&path, &got.body).unwrap();
    let tested = Command::new("unzip").arg("-tq").arg(&path).output().expect("unzip is installed");
    assert!(tested.status.success(), "{}", String::from_utf8_lossy(&tested.stdout));

    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(got.body.to_vec())).unwrap();
    let root = format!("release-{id}/");
    let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    names.sort();
    let mut expected: Vec<String> = manifest.files.iter().map(|f| format!("{root}{}", f.path)).collect();
    expected.extend([format!("{root}manifest.json"), format!("{root}manifest.json.sig")]);
    expected.sort();
    assert_eq!(names, expected, "the archive holds the manifest's files and nothing else");
    for file in &manifest.files {
        let mut bytes = Vec::new();
        zip.by_name(&format!("{root}{}", file.path)).unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(sha256(&bytes), file.sha256, "{}", file.path);
    }
    let mut inside = Vec::new();
    zip.by_name(&format!("{root}manifest.json")).unwrap().read_to_end(&mut inside).unwrap();
    assert_eq!(inside, manifest_bytes, "the manifest in the archive is the signed one");

    // The audit has the archive and the bytes that went out.
    let size = got.body.len() as u64;
    let done = || async {
        audit_details(&app, "extract.downloaded")
            .await
            .iter()
            .any(|d| d["session"] == "zip-1" && d["bytes_served"] == size)
    };
    assert!(eventually(done).await, "{:?}", audit_details(&app, "extract.downloaded").await);
    let events = audit_details(&app, "extract.downloaded").await;
    let ours: Vec<_> = events.iter().filter(|d| d["session"] == "zip-1").collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["path"], "archive.zip");
}

#[tokio::test]
async fn a_folder_of_a_release_zips_alone_and_a_suspended_grant_gets_no_archive() {
    let (app, extract, rita) = built().await;
    let id = extract["id"].as_str().unwrap();
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let tables = app.get(&format!("/api/v1/extracts/{id}/archive?prefix=tables/"), Some(&rita)).await;
    tables.assert_status(StatusCode::OK);
    let zip = zip::ZipArchive::new(std::io::Cursor::new(tables.body.to_vec())).unwrap();
    let mut names: Vec<String> =
        zip.file_names().map(|n| n.unwrap().trim_start_matches(&format!("release-{id}/")).to_owned()).collect();
    names.sort();
    let mut expected: Vec<String> =
        manifest.files.iter().filter(|f| f.path.starts_with("tables/")).map(|f| f.path.clone()).collect();
    assert!(expected.len() >= 2, "{expected:?}");
    expected.extend(["manifest.json".to_owned(), "manifest.json.sig".to_owned()]);
    expected.sort();
    assert_eq!(names, expected);

    app.get(&format!("/api/v1/extracts/{id}/archive?prefix=nothing/"), Some(&rita))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    app.get(&format!("/api/v1/extracts/{id}/archive?folder=tables/"), Some(&rita))
        .await
        .assert_status(StatusCode::BAD_REQUEST);

    let steward = app.token("sam", &[Role::Steward]);
    let grant = extract["grant_id"].as_str().unwrap();
    app.post_json(
        &format!("/api/v1/grants/{grant}/state"),
        Some(&steward),
        &json!({"action": "suspend", "reason": "audit"}),
    )
    .await
    .assert_status(StatusCode::OK);
    app.get(&format!("/api/v1/extracts/{id}/archive"), Some(&rita))
        .await
        .assert_error(StatusCode::FORBIDDEN, "grant-suspended");
}
