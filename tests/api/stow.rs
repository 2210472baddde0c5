//! DICOMweb STOW-RS: the standard request and response, each request its own committed session.

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodian::auth::Role;

use crate::dicom_gen::{Instance, canaries_in};
use crate::helpers::{TestApp, TestResponse};

fn related(files: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for file in files {
        write!(body, "--STOWB\r\nContent-Type: application/dicom\r\n\r\n").unwrap();
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--STOWB--\r\n");
    body
}

async fn stow(app: &TestApp, path: &str, files: &[Vec<u8>]) -> TestResponse {
    let token = app.token("ulrich", &[Role::Uploader]);
    let request = Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "multipart/related; type=\"application/dicom\"; boundary=STOWB")
        .header(header::ACCEPT, "application/dicom+json")
        .body(Body::from(related(files)))
        .unwrap();
    app.call(request).await
}

#[tokio::test]
async fn stow_rs_stores_publishes_and_answers_with_the_store_instances_response() {
    let app = TestApp::new().await;
    let files = [Instance::ct(1, 1, 1, 1).to_bytes(), Instance::ct(1, 1, 1, 2).to_bytes()];
    let response = stow(&app, "/dicomweb/studies", &files).await;
    response.assert_status(StatusCode::OK);
    assert_eq!(response.headers[header::CONTENT_TYPE], "application/dicom+json");
    let body = response.json();
    let referenced = body["00081199"]["Value"].as_array().unwrap();
    assert_eq!(referenced.len(), 2);
    assert!(referenced[0]["00081155"]["Value"][0].as_str().unwrap().starts_with("2.25."));
    assert_eq!(referenced[0]["00081196"]["Value"][0], 0xB000, "coerced: de-identified");
    assert!(canaries_in(&response.body).is_empty(), "no original UID is echoed");
    let published: i64 = sqlx::query_scalar("select count(*) from instance where status = 'published'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(published, 2, "committed with the request");
}

#[tokio::test]
async fn stow_rs_reports_failures_per_instance_with_202_or_409() {
    let app = TestApp::new().await;
    let partial = stow(&app, "/dicomweb/studies", &[Instance::ct(1, 1, 1, 1).to_bytes(), b"garbage".to_vec()]).await;
    partial.assert_status(StatusCode::ACCEPTED);
    let body = partial.json();
    assert_eq!(body["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC000);
    assert_eq!(body["00081199"]["Value"].as_array().unwrap().len(), 1);

    let none = stow(&app, "/dicomweb/studies", &[b"garbage".to_vec()]).await;
    none.assert_status(StatusCode::CONFLICT);
}

#[tokio::test]
async fn of_two_different_instances_under_one_uid_in_a_request_the_first_is_stored() {
    let app = TestApp::new().await;
    // The first is the larger, so it takes longer to de-identify and write:
    // which one is stored must not depend on which finishes first, nor on a
    // file refused at once between them.
    let first = Instance { rows: 1024, columns: 1024, ..Instance::ct(3, 1, 1, 1) };
    let second = Instance { seed: 42, ..Instance::ct(3, 1, 1, 1) };
    let response = stow(&app, "/dicomweb/studies", &[first.to_bytes(), b"garbage".to_vec(), second.to_bytes()]).await;
    response.assert_status(StatusCode::ACCEPTED);
    let body = response.json();
    assert_eq!(body["00081199"]["Value"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["00081198"]["Value"].as_array().unwrap().len(), 2, "{body}");
    let outcomes: Vec<(i32, String, Option<String>)> =
        sqlx::query_as("select ordinal, outcome, code from upload_file order by ordinal")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let rejected = |code: &str| ("rejected".to_owned(), Some(code.to_owned()));
    assert_eq!(
        outcomes.into_iter().map(|(_, outcome, code)| (outcome, code)).collect::<Vec<_>>(),
        [("stored".to_owned(), None), rejected("not-dicom"), rejected("conflict")]
    );
    let rows: i32 = sqlx::query_scalar("select rows from instance").fetch_one(&app.db).await.unwrap();
    assert_eq!(rows, 1024, "the catalog holds the first file");
}

#[tokio::test]
async fn every_answer_names_the_part_it_answers_and_a_failure_says_what_went_wrong() {
    let app = TestApp::new().await;
    let instance = Instance::ct(4, 1, 1, 1);
    let variant = Instance { seed: 42, ..instance.clone() };
    let response =
        stow(&app, "/dicomweb/studies", &[b"garbage".to_vec(), instance.to_bytes(), variant.to_bytes()]).await;
    response.assert_status(StatusCode::ACCEPTED);
    let body = response.json();
    let position = |item: &serde_json::Value| item["00091001"]["Value"][0].as_i64().unwrap();

    let stored = &body["00081199"]["Value"][0];
    assert_eq!(position(stored), 2, "{body}");
    assert_eq!(stored["00090010"]["Value"][0], "CUSTODIAN", "the private block's creator");
    assert_eq!(stored["00081150"]["Value"][0], "1.2.840.10008.5.1.4.1.1.2", "Referenced SOP Class UID");
    let uid = stored["00081155"]["Value"][0].as_str().unwrap();
    assert!(uid.starts_with("2.25."), "the registry UID: {body}");
    assert_eq!(stored["00081190"], serde_json::json!({ "vr": "UR" }), "Retrieve URL, type 2, empty");

    let failed = body["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.iter().map(position).collect::<Vec<_>>(), [1, 3]);
    assert!(failed[0].get("00081155").is_none(), "nothing could be read of the garbage");
    let comment = |item: &serde_json::Value| item["00000902"]["Value"][0].as_str().unwrap().to_owned();
    assert!(comment(&failed[0]).contains("DICM"), "{body}");
    assert_eq!(failed[1]["00081155"]["Value"][0], uid, "the conflict names the stored instance");
    assert!(comment(&failed[1]).contains("(0008,0018)"), "{body}");
    assert!(failed.iter().all(|f| comment(f).chars().count() <= 64), "an Error Comment is LO");
    assert!(canaries_in(&response.body).is_empty());
}

#[tokio::test]
async fn stow_rs_refuses_sop_classes_custodian_does_not_store_with_reason_0122() {
    let app = TestApp::new().await;
    // An encapsulated PDF: the profile empties its document, so nothing of it could be kept.
    let pdf = Instance { sop_class: "1.2.840.10008.5.1.4.1.1.104.1", modality: "DOC", ..Instance::ct(5, 1, 1, 1) };
    let response = stow(&app, "/dicomweb/studies", &[pdf.to_bytes()]).await;
    response.assert_status(StatusCode::CONFLICT);
    let failed = &response.json()["00081198"]["Value"][0];
    assert_eq!(failed["00081197"]["Value"][0], 0x0122, "Referenced SOP Class not supported: {failed}");
    assert!(failed["00000902"]["Value"][0].as_str().unwrap().contains("1.2.840.10008.5.1.4.1.1.104.1"));
    let stored: i64 = sqlx::query_scalar("select count(*) from instance").fetch_one(&app.db).await.unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_real_mr_sent_again_in_other_uncompressed_syntaxes_is_a_duplicate_and_compressed_fails_with_c111() {
    let app = TestApp::new().await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/pydicom");
    let file = |name: &str| std::fs::read(fixtures.join(name)).unwrap();
    // One MR slice (one SOP Instance UID) as pydicom ships it in four transfer syntaxes.
    stow(&app, "/dicomweb/studies", &[file("MR_small.dcm")]).await.assert_status(StatusCode::OK);
    let again = ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"].map(file);
    let response = stow(&app, "/dicomweb/studies", &again).await;
    response.assert_status(StatusCode::ACCEPTED);
    let body = response.json();
    let position = |item: &serde_json::Value| item["00091001"]["Value"][0].as_i64().unwrap();
    let referenced = body["00081199"]["Value"].as_array().unwrap();
    assert_eq!(referenced.iter().map(position).collect::<Vec<_>>(), [1, 2], "implicit and big endian: {body}");
    // Compressed pixel data is not decoded to be compared: another content.
    let failed = &body["00081198"]["Value"][0];
    assert_eq!(position(failed), 3);
    assert_eq!(failed["00081197"]["Value"][0], 0xC111, "{body}");

    // The request's session is audited with these counts when it commits.
    let counts: serde_json::Value = sqlx::query_scalar(
        "select details->'counts' from audit_event where action = 'upload.commit' order by seq desc limit 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(counts, serde_json::json!({ "stored": 0, "duplicate": 2, "rejected": 1, "quarantined": 0 }));
    let stored: (i64, String) =
        sqlx::query_as("select count(*), min(transfer_syntax) from instance").fetch_one(&app.db).await.unwrap();
    assert_eq!(stored, (1, "1.2.840.10008.1.2.1".to_owned()), "the first copy stays as it was");
}

#[tokio::test]
async fn stow_rs_to_a_study_refuses_instances_of_other_studies() {
    let app = TestApp::new().await;
    let wanted = Instance::ct(1, 1, 1, 1);
    let path = format!("/dicomweb/studies/{}", wanted.study_uid());
    let response = stow(&app, &path, &[wanted.to_bytes(), Instance::ct(1, 2, 1, 1).to_bytes()]).await;
    response.assert_status(StatusCode::ACCEPTED);
    assert_eq!(response.json()["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA900);
    assert!(canaries_in(&response.body).is_empty());
}

#[tokio::test]
async fn stow_rs_needs_multipart_related_and_an_uploader() {
    let app = TestApp::new().await;
    let token = app.token("rita", &[Role::Researcher]);
    let request = Request::post("/dicomweb/studies")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "multipart/related; boundary=STOWB")
        .body(Body::from(related(&[])))
        .unwrap();
    app.call(request).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let uploader = app.token("ulrich", &[Role::Uploader]);
    let request = Request::post("/dicomweb/studies")
        .header(header::AUTHORIZATION, format!("Bearer {uploader}"))
        .header(header::CONTENT_TYPE, "application/dicom")
        .body(Body::from(Instance::ct(1, 1, 1, 1).to_bytes()))
        .unwrap();
    app.call(request).await.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
}

#[tokio::test]
async fn curl_stores_real_files_over_http_and_gets_the_standard_response() {
    // A real client over a real socket, with sample files nobody here wrote.
    let app = TestApp::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/pydicom");
    let files: Vec<Vec<u8>> =
        ["CT_small.dcm", "MR_small.dcm"].iter().map(|name| std::fs::read(fixtures.join(name)).unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("stow-body");
    std::fs::write(&body, related(&files)).unwrap();
    let token = app.token("ulrich", &[Role::Uploader]);
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--request", "POST", "--write-out", "\n%{http_code}"])
        .args(["--header", "Content-Type: multipart/related; type=\"application/dicom\"; boundary=STOWB"])
        .args(["--header", "Accept: application/dicom+json"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("http://{address}/dicomweb/studies"))
        .output()
        .await
        .expect("curl runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (answer, status) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{answer}");
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
    assert_eq!(answer["00081199"]["Value"].as_array().unwrap().len(), 2, "both instances referenced: {answer}");
    assert!(answer.get("00081198").is_none(), "no failed instances: {answer}");
    let published: i64 = sqlx::query_scalar("select count(*) from instance where status = 'published'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(published, 2);
}
