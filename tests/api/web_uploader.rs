//! The uploader's pages in a real browser: a folder dropped on an upload
//! session (walked entry by entry), files chosen with the file input, each
//! file's progress and result, the commit, and the catalog then holding the
//! studies; a table import whose bad line is shown and which loses nothing.
//! Over plain HTTP: other roles and other uploaders are refused, and posts
//! without the CSRF token are refused.

use axum::http::StatusCode;
use base64::Engine;
use custodian::auth::Role;

use crate::dicom_gen::Instance;
use crate::helpers::TestApp;
use crate::web::{Browser, form, page};
use crate::web_organizer::{set, sign_in, signed_in};

/// Drops, on the session page's drop zone, a folder `scan-folder/` holding
/// `series-1/IM0001`, `series-1/IM0002` and `notes.txt`. WebDriver cannot
/// drag from the desktop, so the drop event is built in the page: its
/// DataTransfer item gives an entry tree shaped as Chromium's
/// `webkitGetAsEntry()` gives a dropped folder (directories read in batches
/// until an empty one), so the page walks it as it walks a real folder.
const DROP_FOLDER: &str = r"
const [first, second] = arguments_;
const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const file = (name, data) => new File([data], name);
const fileEntry = (name, data) => ({ isFile: true, isDirectory: false, name, file: (ok) => ok(file(name, data)) });
const folder = (name, children) => ({
  isFile: false, isDirectory: true, name,
  createReader: () => { let given = false; return { readEntries: (ok) => { ok(given ? [] : children); given = true; } }; },
});
const tree = folder('scan-folder', [
  folder('series-1', [fileEntry('IM0001', bytes(first)), fileEntry('IM0002', bytes(second))]),
  fileEntry('notes.txt', 'not an image'),
]);
const drop = new Event('drop', { bubbles: true, cancelable: true });
Object.defineProperty(drop, 'dataTransfer', { value: { items: [{ webkitGetAsEntry: () => tree }], files: [] } });
document.getElementById('dropzone').dispatchEvent(drop);
";

/// Drops one file with a DataTransfer built by the page (`new DataTransfer()`
/// and a `File`): the browser's own drop event, whose item has no entry, so
/// the page falls back to the DataTransfer's files.
const DROP_FILE: &str = r"
const [data] = arguments_;
const transfer = new DataTransfer();
transfer.items.add(new File([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], 'single.dcm'));
document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: transfer }));
";

fn with_arguments(script: &str, arguments: &[Vec<u8>]) -> String {
    let encoded: Vec<String> = arguments.iter().map(|a| base64::engine::general_purpose::STANDARD.encode(a)).collect();
    format!("const arguments_ = {};\n{script}", serde_json::to_string(&encoded).unwrap())
}

async fn all_sent(browser: &Browser) {
    browser.wait_for_text("#progress-summary", "all sent").await;
}

#[tokio::test]
async fn an_uploader_drops_a_folder_sees_each_files_progress_and_report_commits_and_the_catalog_has_the_studies() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let browser = Browser::open(&served).await;
    let ulrich = app.token("ulrich", &[Role::Uploader]);
    sign_in(&browser, &ulrich).await;

    browser.click("a[href='/ui/uploads']").await;
    browser.wait_for_text("h1", "Uploads").await;
    browser.click("#open-session button[type='submit']").await;
    browser.wait_for_text("h1", "Upload session: default from local").await;
    assert_eq!(browser.text("#session-state").await, "open");

    // A folder dropped: two images in a subfolder and a text file beside them.
    let folder = [Instance::ct(1, 1, 1, 1).to_bytes(), Instance::ct(1, 1, 1, 2).to_bytes()];
    browser.script(&with_arguments(DROP_FOLDER, &folder)).await;
    all_sent(&browser).await;
    let progress = browser.text("#progress").await;
    assert!(
        progress.contains("scan-folder/series-1/IM0001") && progress.contains("scan-folder/notes.txt"),
        "{progress}"
    );
    assert_eq!(progress.matches("accepted, de-identified").count(), 3, "two files and the summary: {progress}");
    assert!(progress.contains("rejected"), "the text file is rejected with its reason: {progress}");
    assert_eq!(browser.count("#progress progress[value='100']").await, 3, "each file's progress reached its end");

    // One file dropped with the browser's own DataTransfer, and one chosen with the file input.
    browser.script(&with_arguments(DROP_FILE, &[Instance::ct(2, 1, 1, 1).to_bytes()])).await;
    all_sent(&browser).await;
    let dir = tempfile::tempdir().unwrap();
    let chosen = dir.path().join("IM-chosen");
    std::fs::write(&chosen, Instance::ct(3, 1, 1, 1).to_bytes()).unwrap();
    browser.type_into("#pick-files", chosen.to_str().unwrap()).await;
    all_sent(&browser).await;
    let progress = browser.text("#progress tbody").await;
    assert!(progress.contains("single.dcm") && progress.contains("IM-chosen"), "{progress}");
    browser.screenshot("uploader-session").await;
    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");

    // The session's report, as the server keeps it: no file name, one line per file.
    let here = browser.script("return location.pathname;").await;
    browser.go(here.as_str().unwrap()).await;
    browser.wait_for_text("#counts", "4 accepted and de-identified").await;
    assert!(browser.text("#counts").await.contains("1 rejected"));
    assert_eq!(browser.count("#report tbody tr").await, 5);
    let report = browser.text("#report").await;
    assert!(report.contains("rejected") && !report.contains("notes.txt"), "{report}");
    let stored = app.rows_as_text(&["upload_file"]).await;
    assert!(!stored.contains("IM0001") && !stored.contains("notes.txt"), "file names stay in the browser");

    browser.click("#commit-form button[type='submit']").await;
    browser.wait_for_text("#published", "4 instance(s)").await;
    assert_eq!(browser.text("#session-state").await, "committed");
    assert_eq!(browser.count("#dropzone").await, 0, "a committed session takes no more files");
    let steward = app.token("sam", &[Role::Steward]);
    let studies = app.get("/api/v1/cohorts/default/studies", Some(&steward)).await.assert_status(StatusCode::OK).json();
    assert_eq!(studies["studies"].as_array().unwrap().len(), 3, "three patients' studies: {studies}");
    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");
    browser.close().await;
    served.stop().await;
}

#[tokio::test]
async fn a_table_import_with_a_bad_line_shows_the_problem_and_writes_nothing_then_the_fixed_table_imports() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let browser = Browser::open(&served).await;
    sign_in(&browser, &app.token("ulrich", &[Role::Uploader])).await;
    let subjects =
        || async { sqlx::query_scalar::<_, i64>("select count(*) from subject").fetch_one(&app.db).await.unwrap() };
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("subjects.csv");
    std::fs::write(&bad, "patient_id,sex,birth_date\nP-1,female,1958-03-14\nP-2,F,not-a-date\n").unwrap();

    browser.go("/ui/uploads").await;
    browser.click("a[href='/ui/uploads/imports']").await;
    browser.wait_for_text("h1", "Import a table").await;
    set(&browser, "#kind", "subjects").await;
    browser.type_into("#table-file", bad.to_str().unwrap()).await;
    browser.click("#import-form button[type='submit']").await;
    browser.wait_for_text("#import-outcome", "Refused").await;
    assert!(browser.text("#import-outcome").await.contains("nothing was imported"));
    let problems = browser.text("#import-problems tbody").await;
    assert!(problems.starts_with('3') && problems.contains("birth_date"), "line 3, its column: {problems}");
    browser.screenshot("uploader-import").await;
    assert_eq!(subjects().await, 0, "nothing of the table was written");

    let good = dir.path().join("fixed.csv");
    std::fs::write(&good, "patient_id,sex,birth_date\nP-1,female,1958-03-14\nP-2,F,1960-01-02\n").unwrap();
    browser.type_into("#table-file", good.to_str().unwrap()).await;
    browser.click("#import-form button[type='submit']").await;
    browser.wait_for_text("#import-outcome", "Imported: 2 row(s)").await;
    assert_eq!(subjects().await, 2);
    // The refused attempt answered 400, which the browser logs; nothing else is logged.
    let problems = browser.problems().await;
    assert!(problems.iter().all(|p| p.contains("400")), "{problems:?}");
    assert!(app.audit_actions().await.contains(&"import.subjects".to_owned()), "audited as over REST");
    browser.close().await;
    served.stop().await;
}

async fn send_file(app: &TestApp, path: &str, cookie: &str, csrf: Option<&str>) -> crate::helpers::TestResponse {
    let mut request =
        axum::http::Request::post(path).header("cookie", cookie).header("content-type", "application/dicom");
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    app.call(request.body(axum::body::Body::from(Instance::ct(9, 1, 1, 1).to_bytes())).unwrap()).await
}

#[tokio::test]
async fn researchers_and_other_uploaders_cannot_reach_a_session_and_posts_need_the_csrf_token() {
    let app = TestApp::new().await;
    let (ulrich, ulrich_csrf) = signed_in(&app, &app.token("ulrich", &[Role::Uploader])).await;
    let (ursula, ursula_csrf) = signed_in(&app, &app.token("ursula", &[Role::Uploader])).await;
    let (rita, rita_csrf) = signed_in(&app, &app.token("rita", &[Role::Researcher])).await;
    let opened = page(
        &app,
        "POST",
        "/ui/uploads",
        &ulrich,
        &form(&[("csrf_token", &ulrich_csrf), ("cohort", "default"), ("site", "local")]),
    )
    .await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.text());
    let session = opened.headers["location"].to_str().unwrap().to_owned();

    // A researcher: no uploads page, no session, no form.
    for path in ["/ui/uploads", "/ui/uploads/imports"] {
        assert_eq!(page(&app, "GET", path, &rita, "").await.status, StatusCode::FORBIDDEN, "{path}");
    }
    let refused = page(
        &app,
        "POST",
        "/ui/uploads",
        &rita,
        &form(&[("csrf_token", &rita_csrf), ("cohort", "default"), ("site", "local")]),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(page(&app, "GET", &session, &rita, "").await.status, StatusCode::NOT_FOUND);
    let import = axum::http::Request::post("/ui/uploads/imports/subjects")
        .header("cookie", &rita)
        .header("x-csrf-token", &rita_csrf)
        .header("content-type", "text/csv")
        .body(axum::body::Body::from("patient_id\nP-1\n"))
        .unwrap();
    assert_eq!(app.call(import).await.status, StatusCode::FORBIDDEN);

    // Another uploader: the session is as invisible as a missing one, and takes nothing from her.
    assert_eq!(page(&app, "GET", &session, &ursula, "").await.status, StatusCode::NOT_FOUND);
    assert!(!page(&app, "GET", "/ui/uploads", &ursula, "").await.text().contains(&session), "not in her list");
    let sent = send_file(&app, &format!("{session}/files"), &ursula, Some(&ursula_csrf)).await;
    assert_eq!(sent.status, StatusCode::NOT_FOUND);
    let commit =
        page(&app, "POST", &format!("{session}/commit"), &ursula, &form(&[("csrf_token", &ursula_csrf)])).await;
    assert_eq!(commit.status, StatusCode::NOT_FOUND);

    // The owner without the CSRF token (or with another session's): refused, nothing stored.
    assert_eq!(send_file(&app, &format!("{session}/files"), &ulrich, None).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        send_file(&app, &format!("{session}/files"), &ulrich, Some(&ursula_csrf)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(page(&app, "POST", &format!("{session}/commit"), &ulrich, "").await.status, StatusCode::FORBIDDEN);
    let files: i64 = sqlx::query_scalar("select count(*) from upload_file").fetch_one(&app.db).await.unwrap();
    assert_eq!(files, 0);
    // With it, the file is taken and reported as the REST route reports it.
    let sent = send_file(&app, &format!("{session}/files"), &ulrich, Some(&ulrich_csrf)).await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.text());
    assert_eq!(sent.json()["files"][0]["outcome"], "stored");
    let listed = page(&app, "GET", "/ui/uploads", &ulrich, "").await.text();
    assert!(listed.contains(&session), "{listed}");
}
