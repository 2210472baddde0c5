//! Upload sessions: de-identified at the door, published on commit, bad files
//! rejected one by one, and no planted identifier anywhere at rest.

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::dicom_gen::{Instance, canaries_in};
use sqlx::{Connection, PgConnection};

use crate::helpers::{TestApp, TestResponse, database_url, superuser_options};

const BOUNDARY: &str = "custodian-test-boundary";

fn multipart(parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (content_type, bytes)) in parts.iter().enumerate() {
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f{i}.dcm\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{BOUNDARY}--\r\n").unwrap();
    body
}

fn zip(files: &[Vec<u8>]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut out);
    for (i, bytes) in files.iter().enumerate() {
        writer.start_file(format!("study/IM{i:04}"), zip::write::SimpleFileOptions::default()).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
    out.into_inner()
}

struct Uploader<'a> {
    app: &'a TestApp,
    token: String,
}

impl<'a> Uploader<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self { app, token: app.token("ulrich", &[Role::Uploader]) }
    }

    async fn open(&self) -> String {
        let body = self.app.post_json("/api/v1/uploads", Some(&self.token), &json!({})).await;
        body.assert_status(StatusCode::CREATED);
        body.json()["id"].as_str().unwrap().to_owned()
    }

    async fn send(&self, session: &str, content_type: &str, body: Vec<u8>) -> TestResponse {
        let request = Request::post(format!("/api/v1/uploads/{session}/files"))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        self.app.call(request).await
    }

    async fn send_files(&self, session: &str, files: &[Vec<u8>]) -> Value {
        let parts: Vec<(&str, Vec<u8>)> = files.iter().map(|f| ("application/dicom", f.clone())).collect();
        let response =
            self.send(session, &format!("multipart/form-data; boundary={BOUNDARY}"), multipart(&parts)).await;
        response.assert_status(StatusCode::OK);
        response.json()
    }

    async fn commit(&self, session: &str) -> TestResponse {
        self.app.post_json(&format!("/api/v1/uploads/{session}/commit"), Some(&self.token), &json!({})).await
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&app.db).await.unwrap()
}

#[tokio::test]
async fn a_session_publishes_its_studies_only_when_committed() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    let files = [Instance::ct(1, 1, 1, 1), Instance::ct(1, 1, 1, 2), Instance::ct(2, 1, 1, 1)].map(|i| i.to_bytes());
    let report = up.send_files(&session, &files).await;
    assert_eq!(report["counts"], json!({ "stored": 3, "duplicate": 0, "rejected": 0, "quarantined": 0 }));
    assert_eq!(report["files"][2]["ordinal"], 3);
    assert!(report["files"][0]["sop_uid"].as_str().unwrap().starts_with("2.25."));

    assert_eq!(count(&app, "select count(*) from instance where status = 'published'").await, 0, "nothing visible yet");
    let committed = up.commit(&session).await;
    committed.assert_status(StatusCode::OK);
    assert_eq!(committed.json()["published"], 3);
    assert_eq!(committed.json()["state"], "committed");
    assert_eq!(count(&app, "select count(*) from instance where status = 'published'").await, 3);
    assert_eq!(count(&app, "select count(*) from study").await, 2);
    assert_eq!(count(&app, "select count(*) from subject").await, 2);
    assert_eq!(count(&app, "select count(*) from scanner").await, 1);

    // A committed session takes no more files.
    up.send(&session, "application/dicom", Instance::ct(3, 1, 1, 1).to_bytes())
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let actions = app.audit_actions().await;
    assert_eq!(actions, vec!["upload.create", "upload.files", "upload.commit"]);
    let session_report = app.get(&format!("/api/v1/uploads/{session}"), Some(&up.token)).await.json();
    assert_eq!(session_report["files"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn no_planted_identifier_reaches_the_database_the_object_store_or_the_logs() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    let mut files: Vec<Vec<u8>> = (1..=3).map(|i| Instance::ct(7, 1, 1, i).to_bytes()).collect();
    files.push(Instance { burned_in: Some("YES"), ..Instance::ct(7, 1, 2, 1) }.to_bytes());
    let mut truncated = Instance::ct(8, 1, 1, 1).to_bytes();
    truncated.truncate(truncated.len() / 2);
    files.push(truncated);
    let report = up.send_files(&session, &files).await;
    assert_eq!(report["counts"], json!({ "stored": 3, "duplicate": 0, "rejected": 1, "quarantined": 1 }));
    up.commit(&session).await.assert_status(StatusCode::OK);
    // Error answers too.
    let bad = up.send(&up.open().await, "application/dicom", b"CNRY-NOT-DICOM".to_vec()).await;
    assert!(canaries_in(&bad.body).is_empty(), "{}", bad.text());

    // 1. A full dump of the database.
    let dump = std::process::Command::new(pg_dump())
        .args(["--no-owner", "--data-only", "--dbname", &database_url(&app.db_name)])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    assert!(dump.stdout.len() > 1000, "the dump holds the catalog");
    assert_eq!(canaries_in(&dump.stdout), Vec::<String>::new(), "identifiers in the database");

    // 2. Every stored object.
    let mut objects = 0;
    for entry in walk(&app.state.config.objects_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert_eq!(canaries_in(&bytes), Vec::<String>::new(), "identifiers in {}", entry.display());
        objects += 1;
    }
    assert_eq!(objects, 4, "three published, one quarantined");

    // 3. Everything logged, at every level (by every test of this run so far).
    let logged = crate::helpers::captured_logs();
    assert!(logged.windows(14).any(|w| w == b"request finish"), "requests were logged");
    assert_eq!(canaries_in(&logged), Vec::<String>::new(), "identifiers in the logs");
}

fn pg_dump() -> std::path::PathBuf {
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql").unwrap().flatten().map(|e| e.path()).collect();
    versions.sort();
    versions.pop().unwrap().join("bin/pg_dump")
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn bad_files_are_rejected_one_by_one_and_the_rest_of_the_batch_is_stored() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    let good = Instance::ct(1, 1, 1, 1).to_bytes();
    let mut truncated = Instance::ct(1, 1, 1, 2).to_bytes();
    truncated.truncate(700);
    let no_uid = crate::cstore::without_study_uid(&Instance::ct(1, 1, 1, 3));
    let report = up.send_files(&session, &[b"hello, not dicom".to_vec(), good, truncated, no_uid]).await;
    let codes: Vec<&str> =
        report["files"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap_or("")).collect();
    assert_eq!(codes, vec!["not-dicom", "", "malformed-dicom", "missing-attribute"]);
    assert_eq!(report["files"][1]["outcome"], "stored");
    assert!(report["files"][3]["message"].as_str().unwrap().contains("(0020,000D)"));
    up.commit(&session).await.assert_status(StatusCode::OK);
    assert_eq!(count(&app, "select count(*) from instance where status = 'published'").await, 1);
}

#[tokio::test]
async fn resent_instance_is_a_duplicate_and_changed_bytes_under_the_same_uid_are_a_conflict() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let first = up.open().await;
    let original = Instance::ct(1, 1, 1, 1);
    up.send_files(&first, &[original.to_bytes()]).await;
    up.commit(&first).await.assert_status(StatusCode::OK);

    let second = up.open().await;
    let changed = Instance { seed: 99, ..original.clone() };
    let report = up.send_files(&second, &[original.to_bytes(), changed.to_bytes()]).await;
    assert_eq!(report["files"][0]["outcome"], "duplicate");
    assert_eq!(report["files"][1]["outcome"], "rejected");
    assert_eq!(report["files"][1]["code"], "conflict");
    // The session stays usable.
    let more = up.send_files(&second, &[Instance::ct(1, 2, 1, 1).to_bytes()]).await;
    assert_eq!(more["counts"]["stored"], 1);
    up.commit(&second).await.assert_status(StatusCode::OK);
    assert_eq!(count(&app, "select count(*) from instance").await, 2);
    // Two studies of one subject, sent in different sessions, share the subject and its shift.
    assert_eq!(count(&app, "select count(distinct subject_id) from study").await, 1);
    assert_eq!(count(&app, "select count(*) from study").await, 2);
}

#[tokio::test]
async fn zip_archives_are_unpacked_and_zip_bombs_refused_before_anything_is_stored() {
    let app = TestApp::with_config(|c| {
        c.ingest.zip_max_expanded_bytes = 64 * 1024;
        c.ingest.zip_max_entries = 10;
    })
    .await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    let archive = zip(&[Instance::ct(1, 1, 1, 1).to_bytes(), Instance::ct(1, 1, 1, 2).to_bytes()]);
    let report = up.send(&session, "application/zip", archive).await;
    report.assert_status(StatusCode::OK);
    assert_eq!(report.json()["counts"]["stored"], 2);
    // The archive was held in an encrypted spool that has no name: nothing of it is left to find.
    let spooled: Vec<_> = std::fs::read_dir(app.state.config.data_dir.join("spool")).unwrap().collect();
    assert!(spooled.is_empty(), "{spooled:?}");

    // Expands far beyond its size: a megabyte of zeros.
    let bomb = zip(&[vec![0; 1024 * 1024]]);
    let message = up.send(&session, "application/zip", bomb).await.assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(message.contains("expands beyond"), "{message}");
    let many = zip(&(0..11).map(|_| vec![1_u8]).collect::<Vec<_>>());
    let message = up.send(&session, "application/zip", many).await.assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(message.contains("entries"), "{message}");
    assert_eq!(count(&app, "select count(*) from upload_file").await, 2, "refused archives left no trace");
}

#[tokio::test]
async fn oversized_files_get_413_or_a_per_file_rejection_in_a_batch() {
    let app = TestApp::with_config(|c| c.ingest.max_file_bytes = 4096).await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    let big = Instance { rows: 64, columns: 64, ..Instance::ct(1, 1, 1, 1) }.to_bytes();
    assert!(big.len() > 4096);
    up.send(&session, "application/dicom", big.clone())
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    let report = up.send_files(&session, &[big, Instance::ct(1, 1, 1, 2).to_bytes()]).await;
    assert_eq!(report["files"][0]["code"], "file-too-large");
    assert_eq!(report["files"][1]["outcome"], "stored");
}

#[tokio::test]
async fn a_batch_larger_than_the_memory_it_may_hold_at_once_is_stored_whole_and_in_order() {
    // The files of one request hold at most `max_file_bytes` of memory at once:
    // six files of which any two exceed it must wait for each other, not deadlock.
    let file = |instance| Instance { rows: 96, columns: 96, ..Instance::ct(1, 1, 1, instance) }.to_bytes();
    let size = file(1).len();
    let app = TestApp::with_config(move |c| {
        c.ingest.max_file_bytes = size + size / 2;
        c.ingest.parallelism = 4;
    })
    .await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    let files: Vec<Vec<u8>> = (1..=6).map(file).collect();
    let report = up.send_files(&session, &files).await;
    assert_eq!(report["counts"]["stored"], 6, "{report}");
    let ordinals: Vec<i64> =
        report["files"].as_array().unwrap().iter().map(|f| f["ordinal"].as_i64().unwrap()).collect();
    assert_eq!(ordinals, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn aborted_session_publishes_nothing_and_removes_its_objects() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    up.send_files(&session, &[Instance::ct(1, 1, 1, 1).to_bytes()]).await;
    assert_eq!(walk(&app.state.config.objects_dir()).len(), 1);
    app.delete(&format!("/api/v1/uploads/{session}"), Some(&up.token)).await.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(count(&app, "select count(*) from instance").await, 0);
    assert!(walk(&app.state.config.objects_dir()).is_empty());
    up.commit(&session).await.assert_error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn only_uploaders_open_sessions_and_only_their_owner_writes_to_them() {
    let app = TestApp::new().await;
    let researcher = app.token("rita", &[Role::Researcher]);
    app.post_json("/api/v1/uploads", Some(&researcher), &json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let up = Uploader::new(&app);
    let session = up.open().await;
    let other = app.token("ursula", &[Role::Uploader]);
    app.post_json(&format!("/api/v1/uploads/{session}/commit"), Some(&other), &json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    app.post_json("/api/v1/uploads", Some(&up.token), &json!({ "cohort": "nope" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    up.send(&session, "text/plain", b"x".to_vec())
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
}

#[tokio::test]
async fn the_sweep_removes_objects_no_row_points_to_once_they_are_old_enough() {
    use object_store::ObjectStoreExt;
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    up.send_files(&session, &[Instance::ct(1, 1, 1, 1).to_bytes()]).await;
    up.commit(&session).await.assert_status(StatusCode::OK);
    // A crash between writing an object and committing its row leaves this behind.
    let orphan = custodian::storage::keys::instance("2.25.1", "2.25.2", "2.25.3");
    app.state.store.put(&orphan, object_store::PutPayload::from_static(b"de-identified bytes")).await.unwrap();
    // The same for an annotation payload whose row never came.
    let orphan_mask = custodian::storage::keys::annotation(uuid::Uuid::new_v4(), "nii.gz");
    app.state.store.put(&orphan_mask, object_store::PutPayload::from_static(b"mask")).await.unwrap();

    let young =
        custodian::ingest::sweep::sweep_orphans(&app.db, &app.state.store, None, std::time::Duration::from_hours(1))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(young.deleted, 0, "a fresh object may belong to an upload in flight");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let swept = custodian::ingest::sweep::sweep_orphans(&app.db, &app.state.store, None, std::time::Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((swept.examined, swept.deleted), (3, 2));
    assert!(app.state.store.head(&orphan).await.is_err());
    assert!(app.state.store.head(&orphan_mask).await.is_err());
    assert_eq!(walk(&app.state.config.objects_dir()).len(), 1, "the committed instance keeps its object");
    assert_eq!(app.audit_actions().await.last().unwrap(), "storage.sweep");
}

#[tokio::test]
async fn the_sweep_removes_staging_files_a_crash_mid_write_left_behind() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    up.send_files(&session, &[Instance::ct(1, 1, 1, 1).to_bytes()]).await;
    up.commit(&session).await.assert_status(StatusCode::OK);
    let root = app.state.config.objects_dir();
    // Bytes written to a staging name and never linked into place, for an
    // instance and for an annotation payload: listings never show them.
    let staged = [
        root.join("instances/2.25.1/2.25.2/2.25.3.dcm#123456789"),
        root.join("annotations/0b7e9f1c-2a34-4c1e-9a57-2f1d7c9e0a11.json#42"),
    ];
    for path in &staged {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"de-identified bytes").unwrap();
    }
    let sweep = |grace| custodian::ingest::sweep::sweep_orphans(&app.db, &app.state.store, Some(&root), grace);

    let young = sweep(std::time::Duration::from_hours(1)).await.unwrap().unwrap();
    assert_eq!(young.staging, 0, "a fresh staging file may be a write in flight");
    assert!(staged.iter().all(|p| p.exists()));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let swept = sweep(std::time::Duration::ZERO).await.unwrap().unwrap();
    assert_eq!((swept.staging, swept.deleted), (2, 0));
    assert!(staged.iter().all(|p| !p.exists()));
    assert_eq!(walk(&root).len(), 1, "the committed instance keeps its object");
    let details: serde_json::Value =
        sqlx::query_scalar("select details from audit_event where action = 'storage.sweep' order by seq desc limit 1")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(details["staging_deleted"], 2);
}

#[tokio::test]
async fn concurrent_single_file_uploads_each_get_one_report_and_one_ordinal() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    // Forty slices sent one per request, eight requests at a time, with two
    // re-sends and one conflicting file among them: the writer commits them in
    // shared groups, yet every request gets exactly its own answer.
    let mut bodies: Vec<Vec<u8>> = (1..=40).map(|i| Instance::ct(11, 1, 1, i).to_bytes()).collect();
    bodies.push(Instance::ct(11, 1, 1, 3).to_bytes());
    bodies.push(Instance::ct(11, 1, 1, 4).to_bytes());
    bodies.push(Instance { seed: 99, ..Instance::ct(11, 1, 1, 5) }.to_bytes());
    let mut outcomes = Vec::new();
    for chunk in bodies.chunks(8) {
        let sends = chunk.iter().map(|body| up.send(&session, "application/dicom", body.clone()));
        for response in futures::future::join_all(sends).await {
            response.assert_status(StatusCode::OK);
            let files = response.json()["files"].as_array().unwrap().clone();
            assert_eq!(files.len(), 1, "one report per single-file request");
            outcomes.push((files[0]["ordinal"].as_i64().unwrap(), files[0]["outcome"].as_str().unwrap().to_owned()));
        }
    }
    let mut ordinals: Vec<i64> = outcomes.iter().map(|o| o.0).collect();
    ordinals.sort_unstable();
    assert_eq!(ordinals, (1..=43).collect::<Vec<_>>(), "ordinals are unique and gap-free");
    let count_of = |outcome: &str| outcomes.iter().filter(|o| o.1 == outcome).count();
    assert_eq!((count_of("stored"), count_of("duplicate"), count_of("rejected")), (40, 2, 1));

    up.commit(&session).await.assert_status(StatusCode::OK);
    assert_eq!(count(&app, "select count(*) from instance where status = 'published'").await, 40);
    assert_eq!(count(&app, "select count(*) from upload_file").await, 43);
    // However the requests were grouped, the audit log accounts for every file.
    assert_eq!(
        count(&app, "select sum((details->>'files')::int)::int8 from audit_event where action = 'upload.files'").await,
        43
    );
}

#[tokio::test]
async fn concurrent_uploads_to_four_sessions_keep_their_ordinals_and_one_unbroken_audit_chain() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(up.open().await);
    }
    // Five rounds of one slice to each session at once: groups hold files of
    // several sessions, each with its own ordinals and its own audit event.
    for slice in 1..=5 {
        let sends = sessions.iter().enumerate().map(|(s, session)| {
            up.send(session, "application/dicom", Instance::ct(30 + u32::try_from(s).unwrap(), 1, 1, slice).to_bytes())
        });
        for response in futures::future::join_all(sends).await {
            response.assert_status(StatusCode::OK);
        }
    }
    for session in &sessions {
        up.commit(session).await.assert_status(StatusCode::OK);
        let report =
            app.get(&format!("/api/v1/uploads/{session}"), Some(&up.token)).await.assert_status(StatusCode::OK).json();
        let ordinals: Vec<i64> =
            report["files"].as_array().unwrap().iter().map(|f| f["ordinal"].as_i64().unwrap()).collect();
        assert_eq!(ordinals, [1, 2, 3, 4, 5], "{report}");
        let files: i64 = sqlx::query_scalar(
            "select sum((details->>'files')::int)::int8 from audit_event
             where action = 'upload.files' and target = 'upload:' || $1",
        )
        .bind(session)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(files, 5, "the audit log accounts for every file of the session");
    }
    let steward = app.token("sam", &[Role::Steward]);
    let verified = app.get("/api/v1/audit/verify", Some(&steward)).await.assert_status(StatusCode::OK).json();
    assert_eq!(verified["ok"], true, "{verified}");
}

#[tokio::test]
async fn a_file_repeated_inside_one_batch_is_stored_once_and_a_variant_is_a_conflict() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    let file = Instance::ct(12, 1, 1, 1).to_bytes();
    let variant = Instance { seed: 77, ..Instance::ct(12, 1, 1, 1) }.to_bytes();
    let report = up.send_files(&session, &[file.clone(), file, variant]).await;
    let outcomes: Vec<&str> =
        report["files"].as_array().unwrap().iter().map(|f| f["outcome"].as_str().unwrap()).collect();
    // Files of a batch are de-identified in parallel, yet the first of them wins.
    assert_eq!(outcomes, ["stored", "duplicate", "rejected"]);
    assert_eq!(report["files"][2]["code"], "conflict");
    assert_eq!(count(&app, "select count(*) from instance").await, 1);
}

#[tokio::test]
async fn a_session_closed_while_its_files_are_in_flight_records_none_of_them() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    let session = up.open().await;
    // Another transaction holds the session row the way a commit does, so the
    // file's group writes its rows and then waits to take its ordinal.
    let mut other = PgConnection::connect_with(&superuser_options(&app.db_name)).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "begin; select 1 from upload_session where upload_session_id = '{session}' for no key update;"
    )))
    .execute(&mut other)
    .await
    .unwrap();
    let send = up.send(&session, "application/dicom", Instance::ct(13, 1, 1, 1).to_bytes());
    let close = async {
        let blocked = "select count(*) from pg_stat_activity
                       where datname = current_database() and wait_event_type = 'Lock'";
        while count(&app, blocked).await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "update upload_session set state = 'committed', closed_at = now() where upload_session_id = '{session}';
             commit;"
        )))
        .execute(&mut other)
        .await
        .unwrap();
    };
    let (response, ()) = tokio::join!(send, close);
    response.assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(count(&app, "select count(*) from instance").await, 0, "none of the file's rows survive");
    assert_eq!(count(&app, "select count(*) from upload_file").await, 0);
    assert_eq!(count(&app, "select file_count::int8 from upload_session").await, 0, "no ordinal was taken");
}

#[tokio::test]
async fn two_sessions_committing_slices_of_one_series_at_once_both_publish_and_discovery_counts_all() {
    let app = TestApp::new().await;
    let up = Uploader::new(&app);
    // A PACS sending one study over two associations: each series split between two sessions.
    for round in 1..=8_u32 {
        let (a, b) = (up.open().await, up.open().await);
        let halves = |first: u32| -> Vec<Vec<u8>> {
            (1..=3)
                .flat_map(|series| [first, first + 1].map(|n| Instance::ct(round, 1, series, n).to_bytes()))
                .collect()
        };
        up.send_files(&a, &halves(1)).await;
        up.send_files(&b, &halves(3)).await;
        let (first, second) = tokio::join!(up.commit(&a), up.commit(&b));
        first.assert_status(StatusCode::OK);
        second.assert_status(StatusCode::OK);
    }
    let counts: Vec<i32> = sqlx::query_scalar("select instances from discovery_series order by series_id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(counts, vec![4; 24], "every series counts the slices of both sessions");
}
