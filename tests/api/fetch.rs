//! `custodian fetch` as a researcher runs it: the built binary against a real
//! server holding a ready release of the demo's approved project. Faults
//! (a revocation, an expired token, outages, cut transfers) are injected by a
//! layer in front of the real router; everything behind it is the service.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use custodian::auth::Role;
use custodian::release::build;
use custodian::release::manifest::Manifest;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use object_store::ObjectStoreExt as _;
use serde_json::json;
use tower::ServiceExt as _;
use uuid::Uuid;

use crate::extracts::{audit_details, built, eventually, sha256, verified_manifest};
use crate::helpers::TestApp;

const BIN: &str = env!("CARGO_BIN_EXE_custodian");

/// Serves `router` on a real socket; its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router).into_future());
    url
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// `custodian fetch` of `extract` into `out`, the token in `CUSTODIAN_TOKEN`.
async fn fetch(server: &str, token: &str, extract: &str, out: &Path, extra: &[&str]) -> Run {
    let output = tokio::process::Command::new(BIN)
        .args(["fetch", "--server", server, "--extract", extract, "--out"])
        .arg(out)
        .args(extra)
        .env("CUSTODIAN_TOKEN", token)
        .output()
        .await
        .unwrap();
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Paths under `out` that are release files (not the manifest, not partial copies).
fn release_files(out: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if relative == ".custodian-partial" || relative.starts_with("manifest.json") {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                found.push(relative);
            }
        }
    }
    let mut found = Vec::new();
    if out.exists() {
        walk(out, out, &mut found);
    }
    found.sort();
    found
}

#[track_caller]
fn assert_all_verified(out: &Path, manifest: &Manifest) {
    for file in &manifest.files {
        let bytes = std::fs::read(out.join(&file.path)).unwrap_or_else(|e| panic!("{}: {e}", file.path));
        assert_eq!(sha256(&bytes), file.sha256, "{}", file.path);
    }
    let listed: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(release_files(out), listed, "exactly the listed files");
}

/// Rows of the aggregated download audit: (session, path, requests, bytes served).
async fn downloads(app: &TestApp) -> Vec<(String, String, i32, i64)> {
    // Session `-`: the test's own reads of the manifest, without the header.
    sqlx::query_as(
        "select session, path, requests, bytes_served from extract_download where session <> '-' order by session, path",
    )
        .fetch_all(&app.db)
        .await
        .unwrap()
}

/// A release ready to fetch: the app, the release's id and grant, Rita's token, its manifest.
async fn ready() -> (TestApp, String, String, String, Manifest) {
    let (app, extract, rita) = built().await;
    let id = extract["id"].as_str().unwrap().to_owned();
    let grant = extract["grant_id"].as_str().unwrap().to_owned();
    let (manifest, _) = verified_manifest(&app, &id, &rita).await;
    (app, id, grant, rita, manifest)
}

fn is_file_request(request: &Request<Body>) -> bool {
    request.uri().path().contains("/files/")
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(json!({"code": code, "message": "injected by the test"}))).into_response()
}

#[tokio::test]
async fn fetch_downloads_every_file_verified_against_a_pinned_key_in_one_audited_session() {
    let (app, id, _, rita, manifest) = ready().await;
    let server = serve(app.router.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("release");
    let pinned = app.state.release_signer.published_keys()[0].to_jwk().x;

    let run = fetch(&server, &rita, &id, &out, &["--public-key", &pinned, "--parallel", "4"]).await;

    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert_all_verified(&out, &manifest);
    assert!(run.stdout.contains(&format!("fetched {} files", manifest.files.len())), "{}", run.stdout);
    // The signed manifest stays beside the files, for checking offline later.
    let (_, signed) = verified_manifest(&app, &id, &rita).await;
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), signed);
    assert!(out.join("manifest.json.sig").is_file());
    assert!(!out.join(".custodian-partial").exists(), "no partial copies are left");

    // One download session in the audit, every file in it once, complete.
    let expected = manifest.files.len() + 2;
    let events = || async {
        let all = audit_details(&app, "extract.downloaded").await;
        all.into_iter().filter(|e| e["session"] != "-").collect::<Vec<_>>()
    };
    assert!(eventually(|| async { events().await.len() == expected }).await, "{:?}", events().await);
    let events = events().await;
    let session = &events[0]["session"];
    assert!(session.as_str().is_some_and(|s| s.len() >= 16), "{session}");
    assert!(events.iter().all(|e| &e["session"] == session), "{events:?}");
}

#[tokio::test]
async fn an_interrupted_fetch_resumes_partial_copies_and_replaces_what_does_not_verify() {
    let (app, id, _, rita, manifest) = ready().await;
    let server = serve(app.router.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("release");
    assert!(fetch(&server, &rita, &id, &out, &[]).await.success);
    let first: Vec<String> = downloads(&app).await.into_iter().map(|row| row.0).collect();

    // Left as an interrupted run (or a careless edit) would leave them.
    let mut dicom: Vec<_> = manifest.files.iter().filter(|f| f.path.starts_with("dicom/")).collect();
    dicom.sort_by_key(|f| std::cmp::Reverse(f.size));
    let (cut, corrupt, edited) = (dicom[0], dicom[1], dicom[2]);
    let partial = |path: &str| out.join(".custodian-partial").join(path);
    let half = |size: u64| usize::try_from(size / 2).unwrap();
    for file in [cut, corrupt] {
        std::fs::create_dir_all(partial(&file.path).parent().unwrap()).unwrap();
        std::fs::rename(out.join(&file.path), partial(&file.path)).unwrap();
    }
    let bytes = std::fs::read(partial(&cut.path)).unwrap();
    std::fs::write(partial(&cut.path), &bytes[..half(cut.size)]).unwrap();
    std::fs::write(partial(&corrupt.path), vec![0x55; half(corrupt.size)]).unwrap();
    let mut bytes = std::fs::read(out.join(&edited.path)).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(out.join(&edited.path), bytes).unwrap();

    let run = fetch(&server, &rita, &id, &out, &[]).await;

    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert_all_verified(&out, &manifest);
    assert!(run.stdout.contains("fetched 3 files"), "{}", run.stdout);
    assert!(run.stdout.contains("2 resumed, 1 replaced"), "{}", run.stdout);
    // Only the three were asked for again; the cut one from where it stopped.
    let second =
        || async { downloads(&app).await.into_iter().filter(|row| !first.contains(&row.0)).collect::<Vec<_>>() };
    assert!(eventually(|| async { second().await.len() == 5 }).await, "{:?}", second().await);
    let rows = second().await;
    let row = |path: &str| rows.iter().find(|row| row.1 == path).unwrap_or_else(|| panic!("{path}: {rows:?}"));
    assert_eq!(row(&cut.path).3, i64::try_from(cut.size).unwrap() - i64::try_from(cut.size / 2).unwrap());
    assert_eq!(row(&corrupt.path).2, 2, "the rest, then the whole file again");
    assert_eq!(row(&edited.path).3, i64::try_from(edited.size).unwrap());
}

#[tokio::test]
async fn a_tampered_manifest_or_a_key_not_pinned_is_refused_and_nothing_is_downloaded() {
    let (app, id, _, rita, manifest) = ready().await;
    let server = serve(app.router.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("release");

    // Signed by a key other than the one the researcher pinned.
    let run = fetch(&server, &rita, &id, &out, &["--key-id", "AAAAAAAAAAAAAAAA"]).await;
    assert!(!run.success);
    assert!(run.stderr.contains("refused, nothing was downloaded"), "{}", run.stderr);
    assert!(run.stderr.contains("not with a key given by --public-key or --key-id"), "{}", run.stderr);
    assert!(!out.exists());

    // One digest changed in the stored manifest.
    let key = build::object_key(manifest.project_id.unwrap(), Uuid::parse_str(&id).unwrap(), "manifest.json");
    let stored = app.state.store.get(&key).await.unwrap().bytes().await.unwrap();
    let text = String::from_utf8(stored.to_vec()).unwrap();
    let digest = &manifest.files[0].sha256;
    let forged = format!("{}{}", if digest.starts_with('0') { '1' } else { '0' }, &digest[1..]);
    app.state.store.put(&key, text.replacen(digest, &forged, 1).into()).await.unwrap();

    let run = fetch(&server, &rita, &id, &out, &[]).await;

    assert!(!run.success);
    assert!(run.stderr.contains("signature does not match"), "{}", run.stderr);
    assert!(!out.exists(), "nothing is written");
    // Each run read the manifest and its signature, and nothing else.
    assert!(eventually(|| async { downloads(&app).await.len() == 4 }).await, "{:?}", downloads(&app).await);
    let rows = downloads(&app).await;
    assert!(rows.iter().all(|row| row.1.starts_with("manifest.json")), "no file was asked for: {rows:?}");
}

#[tokio::test]
async fn a_grant_revoked_mid_run_stops_the_fetch_with_a_summary_and_only_verified_files_in_place() {
    let (app, id, grant, rita, manifest) = ready().await;
    let steward = app.token("sam", &[Role::Steward]);
    let (router, requests) = (app.router.clone(), Arc::new(AtomicUsize::new(0)));
    // The steward revokes the grant just before the fourth file is asked for.
    let hooked = app.router.clone().layer(middleware::from_fn(move |request: Request<Body>, next: Next| {
        let (router, requests, steward, grant) = (router.clone(), requests.clone(), steward.clone(), grant.clone());
        async move {
            if is_file_request(&request) && requests.fetch_add(1, Ordering::SeqCst) == 3 {
                let revoke = Request::post(format!("/api/v1/grants/{grant}/state"))
                    .header(header::AUTHORIZATION, format!("Bearer {steward}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(json!({"action": "revoke", "reason": "data security incident"}).to_string()))
                    .unwrap();
                assert_eq!(router.oneshot(revoke).await.unwrap().status(), StatusCode::OK);
            }
            next.run(request).await
        }
    }));
    let server = serve(hooked).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("release");

    let run = fetch(&server, &rita, &id, &out, &["--parallel", "1"]).await;

    assert!(!run.success, "{}", run.stdout);
    let missing = manifest.files.len() - 3;
    assert!(
        run.stderr.contains(&format!("FAILED: {missing} of {} files were not fetched", manifest.files.len())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("grant-revoked"), "{}", run.stderr);
    assert!(run.stderr.contains("The run stopped: the registry refused access"), "{}", run.stderr);
    let present = release_files(&out);
    assert_eq!(present.len(), 3, "{present:?}");
    for path in &present {
        let file = manifest.files.iter().find(|f| &f.path == path).unwrap();
        assert_eq!(sha256(&std::fs::read(out.join(path)).unwrap()), file.sha256, "{path}");
    }
}

#[tokio::test]
async fn a_dry_run_lists_the_files_and_their_total_and_downloads_nothing() {
    let (app, id, _, rita, manifest) = ready().await;
    let server = serve(app.router.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("release");

    let run = fetch(&server, &rita, &id, &out, &["--dry-run"]).await;

    assert!(run.success, "{}", run.stderr);
    for file in &manifest.files {
        assert!(run.stdout.contains(&format!("{:>12}  {}", file.size, file.path)), "{}: {}", file.path, run.stdout);
    }
    let total = format!("would fetch {} files, {} bytes", manifest.files.len(), manifest.totals.bytes);
    assert!(run.stdout.contains(&total), "{}", run.stdout);
    assert!(!out.exists(), "nothing is written");
    // The manifest and its signature were read, and nothing else.
    assert!(eventually(|| async { downloads(&app).await.len() == 2 }).await);
    let rows = downloads(&app).await;
    assert!(rows.iter().all(|row| row.1.starts_with("manifest.json")), "{rows:?}");
}

#[tokio::test]
async fn a_token_renewed_in_the_token_file_keeps_a_fetch_going_when_the_old_one_expires() {
    let (app, id, _, rita, manifest) = ready().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{rita}\n")).unwrap();
    let renewed = app.token("rita", &[Role::Researcher]);
    assert_ne!(renewed, rita);
    let (requests, used_renewed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (file, old, new, used) = (token_file.clone(), rita.clone(), renewed.clone(), used_renewed.clone());
    // From the third file on, the first token is expired; its renewal is written to the file then.
    let hooked = app.router.clone().layer(middleware::from_fn(move |request: Request<Body>, next: Next| {
        let (file, old, new, requests, used) = (file.clone(), old.clone(), new.clone(), requests.clone(), used.clone());
        async move {
            let bearer = request.headers().get(header::AUTHORIZATION).cloned();
            if is_file_request(&request) && requests.fetch_add(1, Ordering::SeqCst) >= 2 {
                if bearer == HeaderValue::from_str(&format!("Bearer {old}")).ok() {
                    std::fs::write(&file, &new).unwrap();
                    return error(StatusCode::UNAUTHORIZED, "unauthorized");
                }
                used.fetch_add(1, Ordering::SeqCst);
            }
            next.run(request).await
        }
    }));
    let server = serve(hooked).await;
    let out = dir.path().join("release");

    let run = fetch(&server, "not-used", &id, &out, &["--token-file", token_file.to_str().unwrap()]).await;

    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert_all_verified(&out, &manifest);
    assert_eq!(used_renewed.load(Ordering::SeqCst), manifest.files.len() - 2, "every later file with the new token");
}

#[tokio::test]
async fn outages_throttling_and_cut_transfers_are_retried_until_every_file_verifies() {
    let (app, id, _, rita, manifest) = ready().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    // The first file request meets a 503, the second a 429; every whole-file
    // answer is cut half-way, so each file is finished with a range.
    let hooked = app.router.clone().layer(middleware::from_fn(move |request: Request<Body>, next: Next| {
        let counter = counter.clone();
        async move {
            if !is_file_request(&request) {
                return next.run(request).await;
            }
            let whole = !request.headers().contains_key(header::RANGE);
            match counter.fetch_add(1, Ordering::SeqCst) {
                0 => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                1 => {
                    let mut throttled = error(StatusCode::TOO_MANY_REQUESTS, "too-many-downloads");
                    throttled.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return throttled;
                }
                _ => {}
            }
            let response = next.run(request).await;
            if !whole || response.status() != StatusCode::OK {
                return response;
            }
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            if bytes.len() < 2 {
                return Response::from_parts(parts, Body::from(bytes));
            }
            // Half the bytes, given time to leave, then the connection breaks.
            let half = bytes.slice(..bytes.len() / 2);
            let cut = futures::stream::once(async move { Ok::<_, std::io::Error>(half) }).chain(futures::stream::once(
                async {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    Err(std::io::Error::other("connection cut"))
                },
            ));
            Response::from_parts(parts, Body::from_stream(cut))
        }
    }));
    let server = serve(hooked).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("release");

    let run = fetch(&server, &rita, &id, &out, &["--parallel", "3"]).await;

    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert_all_verified(&out, &manifest);
    let resumed = manifest.files.iter().filter(|f| f.size >= 2).count();
    assert!(requests.load(Ordering::SeqCst) >= 2 + manifest.files.len() + resumed);
    let expected = manifest.files.len() + 2;
    assert!(eventually(|| async { downloads(&app).await.len() == expected }).await);
    let rows = downloads(&app).await;
    let ranged = rows.iter().filter(|row| row.2 >= 2).count();
    assert_eq!(ranged, resumed, "every cut file was finished with a second request: {rows:?}");
}
