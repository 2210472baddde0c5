//! Releases end to end: the demo's approved project asks for one, a worker
//! builds it from the grant's scope, and its member downloads a manifest that
//! verifies with the published key and files that match it, resumably, while
//! the grant is checked on every request and the bytes served are audited.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodian::auth::Role;
use custodian::jobs;
use custodian::release::build::{self, BUILD_JOB};
use custodian::release::manifest::{self, Manifest, PublishedKey};
use object_store::ObjectStoreExt as _;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse};

/// The demo registry (real de-identified DICOM of three modalities, clinical
/// tables) with Rita's approved project on MR, age, sex, glucose and HbA1c.
async fn demo() -> (TestApp, String, String) {
    demo_with(|_| {}).await
}

pub(crate) async fn demo_with(adjust: impl FnOnce(&mut custodian::config::Config)) -> (TestApp, String, String) {
    let app = TestApp::with_config(adjust).await;
    custodian::demo::seed_all(&app.state.ingest, &app.state.config, 12, 7).await.unwrap().unwrap();
    let project = custodian::demo::project::find(&app.db).await.unwrap().expect("the demo's approved project");
    let rita = app.token("rita", &[Role::Researcher]);
    (app, project.to_string(), rita)
}

pub(crate) fn context(app: &TestApp) -> build::Context {
    build::Context {
        db: app.db.clone(),
        store: app.state.store.clone(),
        key: Arc::new(app.state.ingest.key.clone()),
        signer: app.state.release_signer.clone(),
        config: app.state.config.clone(),
    }
}

const LEASE: Duration = Duration::from_mins(1);

/// Runs a job that is not a build, as a node would.
async fn run_other(app: &TestApp, worker: &str, job: &jobs::Job) {
    let run = async {
        match job.kind.as_str() {
            custodian::dictionary::db::COVERAGE_JOB => custodian::dictionary::db::run_coverage_job(&app.db).await,
            custodian::opencohort::challenge::SCORE_JOB => {
                Box::pin(custodian::opencohort::challenge::run_job(&context(app), job)).await
            }
            custodian::mail::DELIVER_JOB => custodian::mail::run_job(&app.db, &app.state.config.mail, job).await,
            custodian::access::reminders::REMIND_JOB => custodian::access::reminders::run_job(&app.db).await,
            other => panic!("no handler for `{other}` in this test"),
        }
    };
    jobs::run_claimed(&app.db, worker, LEASE, job, run).await.unwrap();
}

/// Claims the next due build job for `worker`, leased for `lease`, running
/// any other due job on the way.
async fn claim_build(app: &TestApp, worker: &str, lease: Duration) -> Option<jobs::Job> {
    while let Some(job) = jobs::claim(&app.db, worker, lease).await.unwrap() {
        if job.kind == BUILD_JOB {
            return Some(job);
        }
        run_other(app, worker, &job).await;
    }
    None
}

/// A worker of this node: runs every due job until none is left.
pub(crate) async fn work(app: &TestApp) {
    let ctx = context(app);
    while let Some(job) = claim_build(app, "worker-1", LEASE).await {
        jobs::run_claimed(&app.db, "worker-1", LEASE, &job, build::run_job(&ctx, &job)).await.unwrap();
    }
}

pub(crate) async fn request(app: &TestApp, project: &str, token: &str) -> TestResponse {
    app.post_json(&format!("/api/v1/projects/{project}/extracts"), Some(token), &json!({})).await
}

/// A release of the demo project, built: the app, the release, Rita's token.
pub(crate) async fn built() -> (TestApp, Value, String) {
    built_with(|_| {}).await
}

pub(crate) async fn built_with(adjust: impl FnOnce(&mut custodian::config::Config)) -> (TestApp, Value, String) {
    let (app, project, rita) = demo_with(adjust).await;
    let queued = request(&app, &project, &rita).await;
    let queued = queued.assert_status(StatusCode::ACCEPTED).json();
    assert_eq!(queued["state"], "queued", "{queued}");
    work(&app).await;
    let id = queued["id"].as_str().unwrap();
    let ready = app.get(&format!("/api/v1/extracts/{id}"), Some(&rita)).await.assert_status(StatusCode::OK).json();
    (app, ready, rita)
}

pub(crate) async fn get_with(app: &TestApp, path: &str, token: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut request = Request::get(path).header(header::AUTHORIZATION, format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.call(request.body(Body::empty()).unwrap()).await
}

/// The manifest, verified against the keys the registry publishes.
pub(crate) async fn verified_manifest(app: &TestApp, id: &str, token: &str) -> (Manifest, Vec<u8>) {
    let bytes = app.get(&format!("/api/v1/extracts/{id}/manifest"), Some(token)).await;
    let bytes = bytes.assert_status(StatusCode::OK).body.to_vec();
    let signature = app.get(&format!("/api/v1/extracts/{id}/manifest.sig"), Some(token)).await;
    let signature = signature.assert_status(StatusCode::OK).body.to_vec();
    let jwks = app.get("/.well-known/custodian/release-keys", None).await.body.to_vec();
    let keys = PublishedKey::from_jwks(&jwks).unwrap();
    (manifest::verify(&bytes, &signature, &keys).expect("the manifest verifies"), bytes)
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex::encode(digest(&SHA256, bytes).as_ref())
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Polls `condition` for up to ten seconds.
pub(crate) async fn eventually<F: Future<Output = bool>>(mut condition: impl FnMut() -> F) -> bool {
    for _ in 0..200 {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub(crate) async fn audit_details(app: &TestApp, action: &str) -> Vec<Value> {
    sqlx::query_scalar("select details from audit_event where action = $1 order by seq")
        .bind(action)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_approved_project_builds_a_release_whose_signed_manifest_lists_exactly_the_files_it_serves() {
    let (app, extract, rita) = built().await;
    assert_eq!(extract["state"], "ready", "{extract}");
    assert_eq!(extract["version"], 1);
    assert_eq!(extract["progress"]["files_done"], extract["progress"]["files_planned"], "{extract}");
    let id = extract["id"].as_str().unwrap();
    let (manifest, manifest_bytes) = verified_manifest(&app, id, &rita).await;
    assert_eq!(extract["manifest_sha256"], sha256(&manifest_bytes));
    assert_eq!(manifest.totals.files, extract["totals"]["files"].as_u64().unwrap());
    let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for expected in
        ["README.md", "grant.json", "deid-conformance.json", "tables/subjects.csv", "tables/subjects.parquet"]
    {
        assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
    }
    assert!(paths.iter().filter(|p| p.starts_with("dicom/")).count() > 3, "{paths:?}");

    // Every listed file downloads with its size, digest and media type.
    let mut files = Vec::new();
    for file in &manifest.files {
        let got = app.get(&format!("/api/v1/extracts/{id}/files/{}", file.path), Some(&rita)).await;
        let got = got.assert_status(StatusCode::OK);
        assert_eq!(got.body.len() as u64, file.size, "{}", file.path);
        assert_eq!(sha256(&got.body), file.sha256, "{}", file.path);
        assert_eq!(got.headers[header::CONTENT_TYPE], file.media_type.as_str(), "{}", file.path);
        assert_eq!(got.headers[header::ETAG], format!("\"{}\"", file.sha256).as_str());
        files.push((file.path.clone(), got.body.to_vec()));
    }

    // No registry pseudonym and no registry UID anywhere in the release.
    let registry: Vec<String> = sqlx::query_scalar(
        "select pseudonym from subject
         union all select study_uid from study union all select series_uid from series
         union all select sop_uid from instance",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(registry.len() > 20);
    for (path, bytes) in files.iter().chain([&("manifest.json".to_owned(), manifest_bytes.clone())]) {
        for identifier in &registry {
            assert!(!contains(bytes, identifier), "{path} holds the registry's `{identifier}`");
        }
    }

    // Only the granted modality (the demo also holds CT and DX) and only granted fields.
    for (path, bytes) in files.iter().filter(|(p, _)| p.starts_with("dicom/")) {
        let object = dicom_object::OpenFileOptions::new().from_reader(&bytes[..]).unwrap();
        let modality = object.element(dicom_dictionary_std::tags::MODALITY).unwrap().to_str().unwrap();
        assert_eq!(modality.trim(), "MR", "{path}");
        let patient = object.element(dicom_dictionary_std::tags::PATIENT_ID).unwrap().to_str().unwrap();
        assert!(patient.starts_with("psub-"), "{path}: {patient}");
    }
    let dictionary = &files.iter().find(|(p, _)| p == "tables/dictionary.json").expect("a dictionary").1;
    let dictionary: Value = serde_json::from_slice(dictionary).unwrap();
    let granted = ["age_at_study", "sex", "glucose", "hba1c"];
    for field in dictionary["fields"].as_array().unwrap() {
        let field = field["id"].as_str().unwrap();
        assert!(granted.contains(&field), "`{field}` is outside the grant: {dictionary}");
    }
    let observations = String::from_utf8(files.iter().find(|(p, _)| p == "tables/observations.csv").unwrap().1.clone());
    assert!(!observations.unwrap().contains("bmi"), "an ungranted field's values reached the release");

    // Audited: the request, the build, and each file's download with its bytes.
    let actions = app.audit_actions().await;
    assert!(actions.contains(&"extract.requested".to_owned()) && actions.contains(&"extract.ready".to_owned()));
    let expected = manifest.files.len() + 2;
    assert!(eventually(|| async { audit_details(&app, "extract.downloaded").await.len() == expected }).await);
    let served: u64 =
        audit_details(&app, "extract.downloaded").await.iter().map(|d| d["bytes_served"].as_u64().unwrap()).sum();
    assert_eq!(
        served,
        manifest.totals.bytes + manifest_bytes.len() as u64 + {
            let sig = app.get(&format!("/api/v1/extracts/{id}/manifest.sig"), Some(&rita)).await;
            sig.body.len() as u64
        }
    );
}

#[tokio::test]
async fn only_the_projects_accepted_members_ask_for_or_download_its_releases() {
    let (app, extract, rita) = built().await;
    let id = extract["id"].as_str().unwrap();
    let project = extract["project_id"].as_str().unwrap();
    // A researcher with a project of his own, a stranger, a steward outside the project.
    let bruno = app.token("bruno", &[Role::Researcher]);
    let profile = json!({"name": "Bruno Berg", "institution": "Elsewhere University", "email": "bruno@example.org", "position": "Lecturer"});
    app.put_json("/api/v1/me/profile", Some(&bruno), &profile).await.assert_status(StatusCode::CREATED);
    app.post_json("/api/v1/projects", Some(&bruno), &json!({"title": "Another project"}))
        .await
        .assert_status(StatusCode::CREATED);
    let stranger = app.token("nina", &[Role::Researcher]);
    let steward = app.token("sam", &[Role::Steward]);
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let file = format!("/api/v1/extracts/{id}/files/{}", manifest.files[0].path);
    for who in [&bruno, &stranger, &steward] {
        for path in [
            format!("/api/v1/extracts/{id}/manifest"),
            format!("/api/v1/extracts/{id}/manifest.sig"),
            format!("/api/v1/extracts/{id}/archive"),
            file.clone(),
        ] {
            app.get(&path, Some(who)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
        }
    }
    for who in [&bruno, &stranger] {
        app.get(&format!("/api/v1/extracts/{id}"), Some(who)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
        request(&app, project, who).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    }
    // The steward oversees the release but neither asks for one nor downloads it.
    app.get(&format!("/api/v1/extracts/{id}"), Some(&steward)).await.assert_status(StatusCode::OK);
    request(&app, project, &steward).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    app.get(&format!("/api/v1/extracts/{id}/files/nothing/here.dcm"), Some(&rita))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
}

/// A tiny deterministic generator: the offsets are random but the test repeatable.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

#[tokio::test]
async fn a_download_cut_at_random_offsets_resumes_to_the_right_digest_until_the_grant_is_revoked() {
    let (app, extract, rita) = built().await;
    let id = extract["id"].as_str().unwrap();
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let file = manifest.files.iter().max_by_key(|f| f.size).unwrap();
    let path = format!("/api/v1/extracts/{id}/files/{}", file.path);
    let etag = format!("\"{}\"", file.sha256);
    let session = [("x-download-session", "resume-1")];

    let mut random = Lcg(16);
    let mut assembled = Vec::new();
    let mut requests = 0;
    while (assembled.len() as u64) < file.size {
        let start = assembled.len() as u64;
        let end = (start + 1 + random.below(file.size / 8)).min(file.size) - 1;
        let range = format!("bytes={start}-{end}");
        let got = get_with(&app, &path, &rita, &[("range", &range), ("if-range", &etag), session[0]]).await;
        got.assert_status(StatusCode::PARTIAL_CONTENT);
        assert_eq!(got.headers[header::CONTENT_RANGE], format!("bytes {start}-{end}/{}", file.size).as_str());
        assert_eq!(got.headers[header::CONTENT_LENGTH], (end - start + 1).to_string().as_str());
        assembled.extend_from_slice(&got.body);
        requests += 1;
    }
    assert!(requests > 5, "{requests} ranges");
    assert_eq!(sha256(&assembled), file.sha256, "the ranges reassemble to the listed digest");

    // The download is one audit event with every byte, not one per range.
    let complete =
        || async { audit_details(&app, "extract.downloaded").await.iter().any(|d| d["session"] == "resume-1") };
    assert!(eventually(complete).await);
    let events: Vec<Value> = audit_details(&app, "extract.downloaded").await;
    let ours: Vec<&Value> = events.iter().filter(|d| d["session"] == "resume-1").collect();
    assert_eq!(ours.len(), 1, "{events:?}");
    assert_eq!(ours[0]["bytes_served"], file.size);
    assert_eq!(ours[0]["requests"], requests);

    // Conditional requests: the same content is not sent again; other content is sent whole.
    let unchanged = get_with(&app, &path, &rita, &[("if-none-match", &etag)]).await;
    unchanged.assert_status(StatusCode::NOT_MODIFIED);
    let other = get_with(&app, &path, &rita, &[("range", "bytes=0-9"), ("if-range", "\"other\"")]).await;
    assert_eq!(other.assert_status(StatusCode::OK).body.len() as u64, file.size);
    let beyond = format!("bytes={}-", file.size);
    let past = get_with(&app, &path, &rita, &[("range", &beyond)]).await;
    past.assert_status(StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.headers[header::CONTENT_RANGE], format!("bytes */{}", file.size).as_str());

    // Revoked mid-download: the very next range is refused.
    let steward = app.token("sam", &[Role::Steward]);
    let grant = extract["grant_id"].as_str().unwrap();
    app.post_json(
        &format!("/api/v1/grants/{grant}/state"),
        Some(&steward),
        &json!({"action": "revoke", "reason": "data security incident"}),
    )
    .await
    .assert_status(StatusCode::OK);
    let refused = get_with(&app, &path, &rita, &[("range", "bytes=0-99")]).await;
    refused.assert_error(StatusCode::FORBIDDEN, "grant-revoked");
    app.get(&format!("/api/v1/extracts/{id}/manifest"), Some(&rita))
        .await
        .assert_error(StatusCode::FORBIDDEN, "grant-revoked");
}

#[tokio::test]
async fn a_worker_killed_mid_build_leaves_no_ready_release_and_the_next_worker_completes_it() {
    let (app, project, rita) = demo().await;
    let queued = request(&app, &project, &rita).await.assert_status(StatusCode::ACCEPTED).json();
    let id = queued["id"].as_str().unwrap().to_owned();
    let extract: uuid::Uuid = id.parse().unwrap();
    let manifest_key = build::object_key(project.parse().unwrap(), extract, manifest::MANIFEST_FILE);

    // The first worker writes every file and the manifest, then dies before
    // the release is marked ready (held at its audit event, then killed).
    let hold = app.hold_audit_chain().await;
    let lease = Duration::from_secs(1);
    let job = claim_build(&app, "worker-1", lease).await.expect("the build job");
    let ctx = context(&app);
    let first = tokio::spawn({
        let job = job.clone();
        async move { build::run_job(&ctx, &job).await }
    });
    assert!(eventually(|| async { app.state.store.head(&manifest_key).await.is_ok() }).await);
    first.abort();
    let _ = first.await;
    hold.release().await;

    let left = app.get(&format!("/api/v1/extracts/{id}"), Some(&rita)).await.json();
    assert_eq!(left["state"], "building", "{left}");
    app.get(&format!("/api/v1/extracts/{id}/manifest"), Some(&rita))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // Its lease runs out; another worker takes the job and completes it.
    let mut job = None;
    for _ in 0..200 {
        job = claim_build(&app, "worker-2", LEASE).await;
        if job.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = job.expect("the job is claimable again once its lease ran out");
    assert_eq!(job.attempt, 2);
    let ctx = context(&app);
    jobs::run_claimed(&app.db, "worker-2", LEASE, &job, build::run_job(&ctx, &job)).await.unwrap();
    let ready = app.get(&format!("/api/v1/extracts/{id}"), Some(&rita)).await.json();
    assert_eq!(ready["state"], "ready", "{ready}");
    let (manifest, _) = verified_manifest(&app, &id, &rita).await;
    let recorded: i64 = sqlx::query_scalar("select count(*) from extract_file where extract_id = $1")
        .bind(extract)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(i64::try_from(manifest.files.len()).unwrap(), recorded);
    assert_eq!(audit_details(&app, "extract.ready").await.len(), 1, "ready once");

    // Running it again changes nothing.
    let again = jobs::enqueue(&app.db, &build::job(extract)).await.unwrap();
    assert!(again.is_some());
    work(&app).await;
    let (rebuilt, _) = verified_manifest(&app, &id, &rita).await;
    assert_eq!(rebuilt, manifest);
    assert_eq!(audit_details(&app, "extract.ready").await.len(), 1);
}

#[tokio::test]
async fn a_suspended_grant_queues_no_release_and_a_second_release_is_the_next_version() {
    let (app, extract, rita) = built().await;
    let project = extract["project_id"].as_str().unwrap();
    let second = request(&app, project, &rita).await.assert_status(StatusCode::ACCEPTED).json();
    assert_eq!(second["version"], 2);
    let steward = app.token("sam", &[Role::Steward]);
    let grant = extract["grant_id"].as_str().unwrap();
    let suspend = json!({"action": "suspend", "reason": "annual report overdue"});
    app.post_json(&format!("/api/v1/grants/{grant}/state"), Some(&steward), &suspend)
        .await
        .assert_status(StatusCode::OK);
    request(&app, project, &rita).await.assert_error(StatusCode::FORBIDDEN, "grant-suspended");
    // The queued build finds the grant suspended and fails, saying so.
    work(&app).await;
    let failed = app.get(&format!("/api/v1/extracts/{}", second["id"].as_str().unwrap()), Some(&rita)).await.json();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("suspended"), "{failed}");
    assert!(app.audit_actions().await.contains(&"extract.failed".to_owned()));
    let listed = app.get(&format!("/api/v1/projects/{project}/extracts"), Some(&rita)).await.json();
    let versions: Vec<&Value> = listed["extracts"].as_array().unwrap().iter().map(|e| &e["version"]).collect();
    assert_eq!(versions, [&json!(2), &json!(1)]);
}

#[tokio::test]
async fn a_project_runs_only_as_many_downloads_at_once_as_the_registry_allows() {
    use tower::ServiceExt as _;
    let (app, extract, rita) = built_with(|c| c.release.max_concurrent_downloads = 1).await;
    let id = extract["id"].as_str().unwrap();
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let path = format!("/api/v1/extracts/{id}/files/{}", manifest.files[0].path);
    let open =
        || Request::get(&path).header(header::AUTHORIZATION, format!("Bearer {rita}")).body(Body::empty()).unwrap();
    // The first download's body is still being sent ...
    let running = app.router.clone().oneshot(open()).await.unwrap();
    assert_eq!(running.status(), StatusCode::OK);
    let busy = app.call(open()).await;
    busy.assert_error(StatusCode::TOO_MANY_REQUESTS, "too-many-downloads");
    assert!(busy.headers.contains_key(header::RETRY_AFTER));
    // ... and once it ends, the next one starts.
    drop(running);
    app.call(open()).await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn a_project_asking_faster_than_its_rate_waits_and_no_outsider_can_spend_its_allowance() {
    let (app, extract, rita) = built_with(|c| c.release.max_requests_per_minute = 4).await;
    let id = extract["id"].as_str().unwrap();
    let manifest = format!("/api/v1/extracts/{id}/manifest");
    // Someone outside the project is refused, and the refusals cost the project nothing.
    let mallory = app.token("mallory", &[Role::Researcher]);
    for _ in 0..10 {
        let refused = app.get(&manifest, Some(&mallory)).await;
        assert!(refused.status.is_client_error() && refused.status != StatusCode::TOO_MANY_REQUESTS);
    }
    // Rita has the minute's four requests ...
    let (listed, _) = verified_manifest(&app, id, &rita).await;
    let file = format!("/api/v1/extracts/{id}/files/{}", listed.files[0].path);
    app.get(&file, Some(&rita)).await.assert_status(StatusCode::OK);
    app.get(&file, Some(&rita)).await.assert_status(StatusCode::OK);
    // ... and the fifth waits: four a minute is one every fifteen seconds.
    let limited = app.get(&file, Some(&rita)).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "download-rate-exceeded");
    let wait: u64 = limited.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=15).contains(&wait), "Retry-After {wait}");
    assert!(limited.json()["message"].as_str().unwrap().contains("4 requests a minute"));
}

#[tokio::test]
async fn a_release_leaves_out_withdrawn_subjects_and_the_images_of_those_who_withdrew_them() {
    let (app, project, rita) = demo().await;
    let registry: Vec<String> = sqlx::query_scalar(
        "select distinct su.pseudonym from subject su join study st using (subject_id) join series se using (study_id)
         where se.modality = 'MR' order by 1 limit 2",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let steward = app.token("sam", &[Role::Steward]);
    for (pseudonym, scope) in registry.iter().zip(["full", "imaging"]) {
        let withdrawal = json!({"pseudonym": pseudonym, "scope": scope});
        app.post_json("/api/v1/withdrawals", Some(&steward), &withdrawal).await.assert_status(StatusCode::CREATED);
    }
    let project_id: uuid::Uuid = project.parse().unwrap();
    let key = custodian::access::grants::project_key(&app.db, &app.state.ingest.key, project_id)
        .await
        .unwrap()
        .expect("the project's key");
    let (gone, imaging_gone) = (
        custodian::deid::pseudonym::project_subject(&key, &registry[0]),
        custodian::deid::pseudonym::project_subject(&key, &registry[1]),
    );

    let queued = request(&app, &project, &rita).await.assert_status(StatusCode::ACCEPTED).json();
    work(&app).await;
    let id = queued["id"].as_str().unwrap();
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let mut in_tables = false;
    for file in &manifest.files {
        let got = app.get(&format!("/api/v1/extracts/{id}/files/{}", file.path), Some(&rita)).await;
        let body = &got.assert_status(StatusCode::OK).body;
        assert!(!contains(body, &gone), "{} holds a subject who withdrew", file.path);
        if file.path.starts_with("dicom/") {
            assert!(!contains(body, &imaging_gone), "{} holds images withdrawn", file.path);
        } else {
            in_tables |= contains(body, &imaging_gone);
        }
    }
    assert!(in_tables, "a subject who withdrew only imaging keeps their tables");
    let held: Vec<String> = sqlx::query_scalar(
        "select s.pseudonym from extract_subject e join subject s using (subject_id) where e.extract_id = $1",
    )
    .bind(id.parse::<uuid::Uuid>().unwrap())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(!held.contains(&registry[0]) && held.contains(&registry[1]), "the release records whom it holds");
}

#[tokio::test]
async fn a_withdrawal_after_a_release_makes_a_new_version_with_its_diff_and_the_old_one_stops_after_its_grace() {
    let (app, first, rita) = built().await;
    let first_id = first["id"].as_str().unwrap();
    let project = first["project_id"].as_str().unwrap();
    let pseudonym: String = sqlx::query_scalar(
        "select s.pseudonym from extract_subject e join subject s using (subject_id)
         where e.extract_id = $1 and exists (select 1 from study st join series se using (study_id)
                                             where st.subject_id = s.subject_id and se.modality = 'MR')
         order by 1 limit 1",
    )
    .bind(first_id.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    let (old_manifest, _) = verified_manifest(&app, first_id, &rita).await;

    let steward = app.token("sam", &[Role::Steward]);
    let withdrawal = json!({"pseudonym": pseudonym, "scope": "full"});
    app.post_json("/api/v1/withdrawals", Some(&steward), &withdrawal).await.assert_status(StatusCode::CREATED);
    work(&app).await;

    let listed = app.get(&format!("/api/v1/projects/{project}/extracts"), Some(&rita)).await.json();
    let (second, earlier) = (&listed["extracts"][0], &listed["extracts"][1]);
    assert_eq!(second["version"], 2, "{listed}");
    assert_eq!(second["state"], "ready", "{listed}");
    assert_eq!(second["supersedes"], first_id);
    assert_eq!(earlier["state"], "superseded", "{listed}");
    let second_id = second["id"].as_str().unwrap();
    let (manifest, _) = verified_manifest(&app, second_id, &rita).await;
    assert_eq!(manifest.supersedes.map(|id| id.to_string()).as_deref(), Some(first_id));
    let diff = manifest.diff.expect("a machine-readable diff");
    let key = custodian::access::grants::project_key(&app.db, &app.state.ingest.key, project.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(diff.removed_subjects, [custodian::deid::pseudonym::project_subject(&key, &pseudonym)]);
    assert!(!diff.removed_files.is_empty() && diff.removed_files.iter().all(|f| f.starts_with("dicom/")), "{diff:?}");
    for removed in &diff.removed_files {
        assert!(
            old_manifest.files.iter().any(|f| &f.path == removed) && manifest.files.iter().all(|f| &f.path != removed)
        );
    }

    // The superseded version is still served during its grace period, then no more.
    app.get(&format!("/api/v1/extracts/{first_id}/manifest"), Some(&rita)).await.assert_status(StatusCode::OK);
    sqlx::query("update extract set superseded_at = now() - interval '31 days' where extract_id = $1")
        .bind(first_id.parse::<uuid::Uuid>().unwrap())
        .execute(&app.db)
        .await
        .unwrap();
    let ended = app.get(&format!("/api/v1/extracts/{first_id}/manifest"), Some(&rita)).await;
    assert!(ended.assert_error(StatusCode::CONFLICT, "conflict").contains("superseded"));
}
