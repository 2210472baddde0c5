//! Hostile input gets a clear 4xx and changes nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodian::auth::Role;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::dicom_gen::Instance;
use crate::helpers::{TestApp, TestResponse};

#[tokio::test]
async fn a_nul_character_anywhere_in_a_request_is_a_400_that_names_where_and_stores_nothing() {
    let app = TestApp::new().await;
    let rita = app.token("rita", &[Role::Researcher]);
    let steward = app.token("stella", &[Role::Steward]);
    let projects = || async { app.get("/api/v1/projects", Some(&rita)).await.json()["projects"].clone() };
    let profile = json!({"name": "Rita", "institution": "Bonn", "email": "rita@example.org", "position": "PI"});
    app.put_json("/api/v1/me/profile", Some(&rita), &profile).await.assert_status(StatusCode::CREATED);
    let with_nul = json!({"name": "Ri\u{0}ta", "institution": "Bonn", "email": "rita@example.org", "position": "PI"});
    app.put_json("/api/v1/me/profile", Some(&rita), &with_nul)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    assert_eq!(app.get("/api/v1/me/profile", Some(&rita)).await.json()["name"], "Rita");
    let before = projects().await;

    let nul_title = json!({"title": "Tumour\u{0}growth"});
    app.post_json("/api/v1/projects", Some(&rita), &nul_title)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    let nested = json!({"criteria": {"or": [{"field": "site", "in": ["A\u{0}"]}]}});
    app.post_json("/api/v1/discovery/count", Some(&rita), &nested)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    app.get("/api/v1/audit?actor=rita%00", Some(&steward)).await.assert_error(StatusCode::BAD_REQUEST, "invalid-query");
    app.get("/api/v1/cohorts/default%00", Some(&rita)).await.assert_error(StatusCode::BAD_REQUEST, "invalid-path");
    let message = app.post_json("/api/v1/projects", Some(&rita), &nul_title).await.json()["message"].clone();
    assert!(message.as_str().unwrap().contains("NUL"), "{message}");
    assert_eq!(projects().await, before, "nothing was created");

    // A backslash followed by the text `u0000` is an ordinary title.
    let literal = json!({"title": "Escapes \\u0000 in titles"});
    let created = app.post_json("/api/v1/projects", Some(&rita), &literal).await;
    assert_eq!(created.assert_status(StatusCode::CREATED).json()["title"], "Escapes \\u0000 in titles");
}

const BOUNDARY: &str = "hostile-boundary";

/// A zip of `(name, bytes)` entries, deflated.
fn zip(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut out);
    for (name, bytes) in files {
        writer.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
    out.into_inner()
}

fn multipart(parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (content_type, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Zeros behind a Part-10 preamble: looks like DICOM until it is inflated whole.
fn dicom_shaped_zeros(size: usize) -> Vec<u8> {
    let mut bytes = vec![0; size];
    bytes[128..132].copy_from_slice(b"DICM");
    bytes
}

async fn send_files(
    app: &TestApp,
    token: &str,
    session: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> TestResponse {
    let request = Request::post(format!("/api/v1/uploads/{session}/files"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap();
    app.call(request).await
}

async fn open_session(app: &TestApp, token: &str) -> String {
    let response = app.post_json("/api/v1/uploads", Some(token), &json!({})).await;
    response.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned()
}

/// `(ordinal, outcome, code, size_bytes)` of each file of a report.
fn outcomes(report: &Value) -> Vec<(u64, String, String, u64)> {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let text = |key: &str| f[key].as_str().unwrap_or_default().to_owned();
            (f["ordinal"].as_u64().unwrap(), text("outcome"), text("code"), f["size_bytes"].as_u64().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_zip_bomb_entry_is_refused_with_its_limit_and_the_rest_of_the_archive_is_stored() {
    let app = TestApp::with_config(|c| c.ingest.max_file_bytes = 64 * 1024).await;
    let uploader = app.token("ulrich", &[Role::Uploader]);
    let session = open_session(&app, &uploader).await;
    let (first, last) = (Instance::ct(1, 1, 1, 1).to_bytes(), Instance::ct(1, 1, 1, 2).to_bytes());
    // Entry names carry the patient's name, as archives from a PACS export often do.
    let archive = zip(&[
        ("Smith^John/IM0001", first.clone()),
        ("Smith^John/zeros", vec![0; 4 * 1024 * 1024]),
        ("Smith^John/IM0002", dicom_shaped_zeros(4 * 1024 * 1024)),
        ("Smith^John/IM0003", last.clone()),
    ]);
    assert!(archive.len() < 64 * 1024, "the archive itself is small");

    let response = send_files(&app, &uploader, &session, "application/zip", archive).await;
    let report = response.assert_status(StatusCode::OK).json();
    assert_eq!(
        outcomes(&report),
        [
            (1, "stored".into(), String::new(), first.len() as u64),
            (2, "rejected".into(), "not-dicom".into(), 132),
            (3, "rejected".into(), "file-too-large".into(), 64 * 1024 + 1),
            (4, "stored".into(), String::new(), last.len() as u64),
        ]
    );
    let bomb = report["files"][2]["message"].as_str().unwrap();
    assert!(bomb.starts_with("zip entry 3 (CRC-32 ") && bomb.contains("65536 bytes"), "{bomb}");
    let stored = app.get(&format!("/api/v1/uploads/{session}"), Some(&uploader)).await.text();
    assert!(!response.text().contains("Smith") && !stored.contains("Smith"), "entry names are never reported");
    assert!(!app.rows_as_text(&["upload_file", "audit_event"]).await.contains("Smith"));
}

#[tokio::test]
async fn a_streamed_zip_reports_each_file_as_the_same_files_sent_one_by_one_would_be() {
    let app = TestApp::new().await;
    let uploader = app.token("ulrich", &[Role::Uploader]);
    let files = [Instance::ct(1, 1, 1, 1).to_bytes(), b"not an image".to_vec(), Instance::ct(2, 1, 1, 1).to_bytes()];
    let one_by_one = open_session(&app, &uploader).await;
    let parts: Vec<(&str, Vec<u8>)> = files.iter().map(|f| ("application/dicom", f.clone())).collect();
    let multipart_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let expected = send_files(&app, &uploader, &one_by_one, &multipart_type, multipart(&parts)).await.json();
    app.delete(&format!("/api/v1/uploads/{one_by_one}"), Some(&uploader)).await.assert_status(StatusCode::NO_CONTENT);

    let zipped = open_session(&app, &uploader).await;
    let entries: Vec<(&str, Vec<u8>)> = vec![
        ("study/", Vec::new()),
        ("study/IM1", files[0].clone()),
        ("study/readme", files[1].clone()),
        ("__MACOSX/study/._IM1", vec![0; 10]),
        ("study/IM2", files[2].clone()),
    ];
    let report = send_files(&app, &uploader, &zipped, "application/zip", zip(&entries)).await;
    let report = report.assert_status(StatusCode::OK).json();
    assert_eq!(outcomes(&report), outcomes(&expected));
    assert_eq!(report["counts"], json!({"stored": 2, "duplicate": 0, "rejected": 1, "quarantined": 0}));
    for i in [0, 2] {
        assert_eq!(report["files"][i]["sop_uid"], expected["files"][i]["sop_uid"], "the same registry UIDs");
    }

    // An archive as a part of a multipart batch, between two files.
    let batch = open_session(&app, &uploader).await;
    let entries: Vec<(&str, Vec<u8>)> = vec![
        ("study/IM1", Instance::ct(4, 1, 1, 1).to_bytes()),
        ("study/readme", files[1].clone()),
        ("study/IM2", Instance::ct(5, 1, 1, 1).to_bytes()),
    ];
    let (before, after) = (Instance::ct(3, 1, 1, 1).to_bytes(), Instance::ct(6, 1, 1, 1).to_bytes());
    let parts = [("application/dicom", before), ("application/zip", zip(&entries)), ("application/dicom", after)];
    let report = send_files(&app, &uploader, &batch, &multipart_type, multipart(&parts)).await.json();
    let codes: Vec<_> = outcomes(&report).into_iter().map(|(n, outcome, code, _)| (n, outcome, code)).collect();
    assert_eq!(
        codes,
        [
            (1, "stored".into(), String::new()),
            (2, "stored".into(), String::new()),
            (3, "rejected".into(), "not-dicom".into()),
            (4, "stored".into(), String::new()),
            (5, "stored".into(), String::new()),
        ]
    );
}

#[tokio::test]
async fn an_archive_beyond_its_limits_in_a_batch_is_one_rejection_and_the_other_files_are_stored() {
    let app = TestApp::with_config(|c| c.ingest.zip_max_expanded_bytes = 1024 * 1024).await;
    let uploader = app.token("ulrich", &[Role::Uploader]);
    let session = open_session(&app, &uploader).await;
    let bomb = zip(&[("a", vec![0; 1024 * 1024]), ("b", vec![0; 1024 * 1024])]);
    let parts = [
        ("application/dicom", Instance::ct(1, 1, 1, 1).to_bytes()),
        ("application/zip", bomb.clone()),
        ("application/dicom", Instance::ct(1, 1, 1, 2).to_bytes()),
    ];
    let multipart_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let report = send_files(&app, &uploader, &session, &multipart_type, multipart(&parts)).await.json();
    let codes: Vec<_> = outcomes(&report).into_iter().map(|(_, outcome, code, _)| (outcome, code)).collect();
    assert_eq!(
        codes,
        [
            ("stored".into(), String::new()),
            ("rejected".into(), "invalid-archive".into()),
            ("stored".into(), String::new())
        ]
    );
    // Sent alone, the archive is refused whole.
    let message = send_files(&app, &uploader, &session, "application/zip", bomb)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(message.contains("expands beyond 1048576 bytes"), "{message}");
    let reports: i64 = sqlx::query_scalar("select count(*) from upload_file").fetch_one(&app.db).await.unwrap();
    assert_eq!(reports, 3, "the refused archive left no report");
}

async fn import_csv(app: &TestApp, content_type: &str, body: Body) -> TestResponse {
    let token = app.token("ulrich", &[Role::Uploader]);
    let request = Request::post("/api/v1/imports/subjects")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap();
    app.call(request).await
}

/// A body that sends `chunks` and then never ends: only a server that refuses
/// before reading to the end can answer it.
fn endless(chunks: Vec<Vec<u8>>) -> Body {
    let chunks = futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from(c))));
    Body::from_stream(chunks.chain(futures::stream::pending()))
}

async fn table_rows(app: &TestApp) -> String {
    app.rows_as_text(&["subject", "observation", "data_import"]).await
}

#[tokio::test]
async fn a_table_whose_header_line_never_ends_is_refused_as_line_too_long_before_it_is_read_whole() {
    let app = TestApp::with_config(|c| c.ingest.max_table_line_bytes = 64 * 1024).await;
    let before = table_rows(&app).await;
    let header = vec![b'a'; 16 * 1024];
    let response = import_csv(&app, "text/csv", endless(vec![header; 8])).await;
    let message = response.assert_error(StatusCode::BAD_REQUEST, "line-too-long");
    assert!(message.contains("line 1") && message.contains("65536 bytes"), "{message}");
    assert_eq!(response.json()["problems"][0]["row"], 1);
    assert_eq!(table_rows(&app).await, before, "nothing of the import was stored");
}

#[tokio::test]
async fn a_row_longer_than_the_limit_or_a_header_with_too_many_columns_is_refused_and_stores_nothing() {
    let app = TestApp::with_config(|c| {
        c.ingest.max_table_line_bytes = 4096;
        c.ingest.max_table_columns = 50;
    })
    .await;
    let before = table_rows(&app).await;
    let long_row = format!("patient_id,sex\nP1,F\nP2,{}\nP3,M\n", "F".repeat(5000));
    import_csv(&app, "text/csv", long_row.into()).await.assert_error(StatusCode::BAD_REQUEST, "line-too-long");
    let wide = format!("patient_id;sex;{}\n", (0..60).map(|i| format!("c{i}")).collect::<Vec<_>>().join(";"));
    let message = import_csv(&app, "text/csv", endless(vec![wide.into_bytes()])).await;
    let message = message.assert_error(StatusCode::BAD_REQUEST, "too-many-columns");
    assert!(message.contains("more than the limit of 50 columns"), "{message}");
    // Compressed, the same line is refused as it expands.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, format!("patient_id,sex,{}\n", "x".repeat(1 << 20)).as_bytes()).unwrap();
    import_csv(&app, "application/gzip", gz.finish().unwrap().into())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "line-too-long");
    assert_eq!(table_rows(&app).await, before, "nothing of the imports was stored");

    // Within the limits, a quoted cell may hold delimiters and the table imports.
    let fine = "patient_id,sex\n\"P,1\",F\nP2,M\n";
    import_csv(&app, "text/csv", fine.into()).await.assert_status(StatusCode::CREATED);
}
