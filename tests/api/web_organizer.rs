//! The organizer's pages in a real browser: an open cohort created, curated,
//! split and published through the pages; an anonymous visitor downloads it;
//! a team submits through its page and is ranked. Over plain HTTP: other
//! roles are refused every organizer page and form, and forms without their
//! CSRF token are refused.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::web::{Browser, csrf_token_of, form, page, session_cookie};

const SLUG: &str = "web-challenge";

/// Signs the browser in with `token` through the sign-in page.
pub(crate) async fn sign_in(browser: &Browser, token: &str) {
    browser.go("/ui/sign-in").await;
    if browser.count("#signed-in-as").await > 0 {
        browser.click(".account button[type='submit']").await;
        browser.wait_for_text(".account", "Sign in").await;
        browser.go("/ui/sign-in").await;
    }
    browser.type_into("#token", token).await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#signed-in-as", "Signed in as").await;
}

/// Sets the value of the form control `css` (a select, or a text field to replace).
pub(crate) async fn set(browser: &Browser, css: &str, value: &str) {
    let script = format!(
        "document.querySelector({}).value = {};",
        serde_json::to_string(css).unwrap(),
        serde_json::to_string(value).unwrap()
    );
    browser.script(&script).await;
}

/// A signed-in session over plain HTTP: its cookie and its CSRF token.
pub(crate) async fn signed_in(app: &TestApp, token: &str) -> (String, String) {
    let form_page = page(app, "GET", "/ui/sign-in", "", "").await;
    let visitor = session_cookie(&form_page);
    let csrf = csrf_token_of(&form_page.text());
    let signed_in = page(app, "POST", "/ui/sign-in", &visitor, &form(&[("csrf_token", &csrf), ("token", token)])).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.text());
    let cookie = session_cookie(&signed_in);
    let home = page(app, "GET", "/", &cookie, "").await;
    (cookie.clone(), csrf_token_of(&home.text()))
}

/// Every string in `value` that starts with `prefix`.
fn strings_with(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.starts_with(prefix) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings_with(v, prefix, out)),
        Value::Object(map) => map.values().for_each(|v| strings_with(v, prefix, out)),
        _ => {}
    }
}

/// A CSV saying every test unit of `version` is normal, with the ids the
/// challenge scores: the units are found from the version's files, and the
/// ones without a hidden label (which the REST route names, line by line,
/// without counting the attempt) are left out.
async fn predictions(app: &TestApp, version: &str, token: &str) -> Vec<u8> {
    let manifest = app.get(&format!("/api/v1/extracts/{version}/manifest"), None).await;
    let mut paths = Vec::new();
    strings_with(&manifest.assert_status(StatusCode::OK).json(), "test/", &mut paths);
    let readme = app.get(&format!("/api/v1/extracts/{version}/files/README.md"), None).await.text();
    let (column, mut ids): (&str, Vec<String>) = if readme.contains("`study_id,label`") {
        let mut studies: Vec<String> =
            paths.iter().filter_map(|p| p.strip_prefix("test/dicom/")?.split('/').next().map(str::to_owned)).collect();
        studies.dedup();
        ("study_id", studies)
    } else {
        let table = app.get(&format!("/api/v1/extracts/{version}/files/test/tables/subjects.csv"), None).await;
        let table = table.assert_status(StatusCode::OK).text();
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let at = header.iter().position(|c| c.trim_matches('"') == "subject").expect("the table names each subject");
        ("subject_id", lines.map(|l| l.split(',').nth(at).unwrap().trim_matches('"').to_owned()).collect())
    };
    ids.sort();
    ids.dedup();
    let csv = |ids: &[String]| {
        let rows: Vec<String> = ids.iter().map(|id| format!("{id},RID39148")).collect();
        format!("{column},label\n{}\n", rows.join("\n")).into_bytes()
    };
    let request = axum::http::Request::post(format!("/api/v1/open-cohorts/{SLUG}/versions/{version}/submissions"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "text/csv")
        .body(axum::body::Body::from(csv(&ids)))
        .unwrap();
    let probe = app.call(request).await;
    if probe.status == StatusCode::ACCEPTED {
        return csv(&ids); // every unit has a label
    }
    let refused = probe.json();
    let unknown: Vec<u64> = refused["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["code"] == "unknown-id")
        .filter_map(|p| p["row"].as_u64())
        .collect();
    assert!(
        refused["problems"].as_array().unwrap().iter().all(|p| p["code"] == "unknown-id"),
        "only unlabelled ids are refused: {refused}"
    );
    let kept: Vec<String> =
        ids.iter().enumerate().filter(|(i, _)| !unknown.contains(&(*i as u64 + 2))).map(|(_, id)| id.clone()).collect();
    csv(&kept)
}

/// Olga creates, curates, splits and publishes the open cohort through the
/// pages, and sees its version built; the version's release id.
async fn publish_through_the_pages(app: &TestApp, browser: &Browser, olga: &str) -> String {
    sign_in(browser, olga).await;
    // Create the cohort.
    browser.click("a[href='/ui/organize']").await;
    browser.wait_for_text("h1", "Organize open cohorts").await;
    assert!(browser.text("#open-cohorts").await.contains("demo-chest-xray-challenge"), "the demo's cohort is listed");
    browser.type_into("#slug", SLUG).await;
    browser.type_into("#title", "Web challenge").await;
    browser.type_into("#description", "Chest radiographs, published from the organizer's pages.").await;
    set(browser, "#license", "CC-BY-4.0").await;
    browser.type_into("#citation", "Web challenge cohort (synthetic data), 2026.").await;
    browser.click("#create-cohort button[type='submit']").await;
    browser.wait_for_text("h1", "Web challenge").await;
    assert!(browser.text("main").await.contains("no challenge settings yet"));

    // The challenge: its task, whose labels are withheld from the test split.
    set(browser, "#task", "classification").await;
    set(browser, "#system", "RadLex").await;
    browser.type_into("#codes", "RID5352, RID39148").await;
    browser.type_into("#positive_class", "RID5352").await;
    browser.type_into("#annotation_kinds", "label").await;
    browser.type_into("#fields", "sex").await;
    set(browser, "#daily_submissions", "3").await;
    browser.click("#settings-form button[type='submit']").await;
    browser.wait_for_text("#curation", "withheld from the test split").await;
    assert!(browser.text("#curation").await.contains("3 per team per UTC day"));

    // Subjects who consented to open release, from the demo's chest X-ray cohort.
    set(browser, "#from_cohort", "demo-chest-xray-challenge").await;
    browser.click("#subjects-form button[type='submit']").await;
    browser.wait_for_text("#readiness", "Not ready").await;
    assert!(browser.text("#readiness").await.contains("not been split"), "{}", browser.text("#readiness").await);
    // Subjects without consent to open release are refused, each named.
    set(browser, "#from_cohort", "demo-neuro-mri").await;
    browser.click("#subjects-form button[type='submit']").await;
    browser.wait_for_text("#refusal", "cannot join the open cohort").await;
    assert!(browser.text("#refusal").await.contains("sub-"), "each refused subject is named");

    // The default split (60/20/20), then halves, which replace it.
    browser.click("#split-form button[type='submit']").await;
    browser.wait_for_text("#split-report", "validation").await;
    browser.wait_for_text("#readiness", "Ready to publish").await;
    set(browser, "#train", "0.5").await;
    set(browser, "#validation", "0").await;
    set(browser, "#test", "0.5").await;
    browser.click("#split-form button[type='submit']").await;
    browser.wait_for_text("#split-report caption", "seed 2026").await;
    browser.wait_for_text("#readiness", "Ready to publish").await;

    // Publish: the build runs as a job, and the page follows its state.
    browser.click("#publish-form button[type='submit']").await;
    browser.wait_for_text("#version-list", "queued").await;
    crate::extracts::work(app).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !browser.text("#version-list").await.contains("ready") {
        assert!(Instant::now() < deadline, "the page shows the built version: {}", browser.text("#version-list").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(browser.text("#version-list").await.contains("hidden"), "the test labels are withheld");
    browser.script("document.getElementById('preview-heading').scrollIntoView();").await;
    browser.screenshot("organizer-cohort").await;
    // The refused subjects were answered 400, which the browser logs; nothing else is.
    let problems = browser.problems().await;
    assert!(problems.len() == 1 && problems[0].contains("400"), "no console errors or CSP violations: {problems:?}");
    let published = app.get(&format!("/api/v1/open-cohorts/{SLUG}"), None).await.assert_status(StatusCode::OK).json();
    published["versions"][0]["extract_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_organizer_publishes_an_open_cohort_through_the_pages_a_visitor_downloads_it_and_a_team_is_ranked() {
    let app = TestApp::new().await;
    custodian::demo::seed_all(&app.state.ingest, &app.state.config, 120, 7).await.unwrap().unwrap();
    let served = app.serve().await;
    let browser = Browser::open(&served).await;
    let olga = app.token("olga", &[Role::Organizer]);
    let version = publish_through_the_pages(&app, &browser, &olga).await;

    // An anonymous visitor downloads it from the landing page's link.
    browser.click(".account button[type='submit']").await;
    browser.wait_for_text(".account", "Sign in").await;
    browser.go(&format!("/ui/open-cohorts/{SLUG}")).await;
    browser.wait_for_text("#download-archive", "Download version 1").await;
    let downloaded = browser
        .script(
            "return fetch(document.getElementById('download-archive').href)
               .then(r => r.arrayBuffer().then(b => [r.status, r.headers.get('content-type'), b.byteLength]));",
        )
        .await;
    assert_eq!((downloaded[0].as_u64(), downloaded[1].as_str()), (Some(200), Some("application/zip")), "{downloaded}");
    assert!(downloaded[2].as_u64().unwrap() > 1000, "the archive holds the version: {downloaded}");

    // A researcher makes a team and submits a file through the submission page.
    let csv = predictions(&app, &version, &app.token("pat", &[Role::Researcher])).await;
    let rita = app.token("rita", &[Role::Researcher]);
    sign_in(&browser, &rita).await;
    browser.go(&format!("/ui/open-cohorts/{SLUG}")).await;
    browser.click("#submit-link").await;
    browser.wait_for_text("h1", "Submit predictions").await;
    browser.type_into("#team-name", "gamma").await;
    browser.click("#team-form button[type='submit']").await;
    browser.wait_for_text("#my-team", "gamma").await;
    // Rita invites Colin from the page; Colin joins from his.
    browser.type_into("#invitee", "colin").await;
    browser.click("#invite-form button[type='submit']").await;
    browser.wait_for_text("h1", "Submit predictions").await;
    let (colin, colin_csrf) = signed_in(&app, &app.token("colin", &[Role::Researcher])).await;
    let submit_page = page(&app, "GET", &format!("/ui/open-cohorts/{SLUG}/submit"), &colin, "").await.text();
    assert!(submit_page.contains("Team <strong>gamma</strong> invited you"), "{submit_page}");
    let join = form(&[("csrf_token", &colin_csrf), ("name", "gamma")]);
    let joined = page(&app, "POST", &format!("/ui/open-cohorts/{SLUG}/team/join"), &colin, &join).await;
    assert_eq!(joined.status, StatusCode::SEE_OTHER, "{}", joined.text());
    let team = app.get(&format!("/api/v1/open-cohorts/{SLUG}/teams/mine"), Some(&rita)).await.json();
    let mut members: Vec<String> = serde_json::from_value(team["team"]["members"].clone()).unwrap();
    members.sort();
    assert_eq!(members, ["colin", "rita"], "{team}");
    // Someone outside the team cannot invite into it.
    let (pat, pat_csrf) = signed_in(&app, &app.token("pat", &[Role::Researcher])).await;
    let invite = form(&[("csrf_token", &pat_csrf), ("team", "gamma"), ("username", "mallory")]);
    let refused = page(&app, "POST", &format!("/ui/open-cohorts/{SLUG}/team/invitations"), &pat, &invite).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert!(refused.text().contains("only members of team"), "{}", refused.text());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("predictions.csv");
    std::fs::write(&file, &csv).unwrap();
    browser.type_into("#submission-description", "everything normal").await;
    browser.type_into("#submission-file", file.to_str().unwrap()).await;
    browser.click("#submit-form button[type='submit']").await;
    browser.wait_for_text("#my-submissions", "queued").await;
    crate::extracts::work(&app).await;
    browser.go(&format!("/ui/open-cohorts/{SLUG}/submit")).await;
    browser.wait_for_text("#my-submissions", "scored").await;
    browser.go(&format!("/ui/open-cohorts/{SLUG}")).await;
    let board = browser.text("#leaderboard").await;
    assert!(board.contains("gamma") && board.contains("everything normal"), "{board}");
    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");

    // The organizer sees the leaderboard and the statistics: the anonymous download, the team's submission.
    sign_in(&browser, &olga).await;
    browser.go(&format!("/ui/organize/{SLUG}/leaderboard")).await;
    browser.wait_for_text("#leaderboard", "gamma").await;
    assert!(browser.text("#submissions").await.contains("gamma (by rita)"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        browser.go(&format!("/ui/organize/{SLUG}/statistics")).await;
        browser.wait_for_text("h1", "Statistics").await;
        let downloads = browser.text("#downloads-1").await;
        // The archive the visitor took: one completed download, no registered downloader, one anonymous.
        if downloads.lines().any(|l| l.starts_with("archive 1 ") && l.ends_with(" 0 1")) {
            break;
        }
        assert!(Instant::now() < deadline, "the anonymous download is counted: {downloads}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(browser.text("#team-submissions-1").await.contains("gamma"));
    assert!(browser.count("#chart-downloads svg rect.bar").await > 0, "downloads are charted");
    assert!(browser.text("#chart-submissions svg").await.contains("gamma"), "submissions are charted per team");
    browser.screenshot("organizer-statistics").await;
    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");
    let actions = app.audit_actions().await;
    for action in ["cohort.create", "open_cohort.configure", "open_cohort.split", "open_cohort.publish"] {
        assert!(actions.iter().any(|a| a == action), "{action} is audited as over REST: {actions:?}");
    }
    browser.close().await;
    served.stop().await;
}

#[tokio::test]
async fn other_roles_cannot_reach_the_organizer_pages_or_forms_and_forms_need_their_csrf_token() {
    let app = TestApp::new().await;
    custodian::demo::seed_all(&app.state.ingest, &app.state.config, 40, 7).await.unwrap().unwrap();
    let (researcher, researcher_csrf) = signed_in(&app, &app.token("rita", &[Role::Researcher])).await;
    let olga = app.token("olga", &[Role::Organizer]);
    let (organizer, organizer_csrf) = signed_in(&app, &olga).await;
    let demo = "/ui/organize/demo-chest-xray-challenge";
    let settings = json!({"task": {"type": "classification", "system": "RadLex", "codes": ["RID5352", "RID39148"]}});
    app.put_json("/api/v1/open-cohorts/demo-chest-xray-challenge", Some(&olga), &settings)
        .await
        .assert_status(StatusCode::OK);

    for path in ["/ui/organize", demo, &format!("{demo}/leaderboard"), &format!("{demo}/statistics")] {
        let refused = page(&app, "GET", path, &researcher, "").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}: {}", refused.text());
        assert!(refused.text().contains("Not allowed"), "{path}");
    }
    let create = form(&[("csrf_token", &researcher_csrf), ("slug", "sneaky"), ("title", "Sneaky")]);
    let refused = page(&app, "POST", "/ui/organize", &researcher, &create).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let settings = form(&[("csrf_token", &researcher_csrf), ("task", "none"), ("daily_submissions", "100")]);
    let refused = page(&app, "POST", &format!("{demo}/settings"), &researcher, &settings).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused =
        page(&app, "POST", &format!("{demo}/versions"), &researcher, &form(&[("csrf_token", &researcher_csrf)])).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let cohorts: Vec<String> =
        sqlx::query_scalar("select slug from cohort where slug = 'sneaky'").fetch_all(&app.db).await.unwrap();
    assert!(cohorts.is_empty(), "nothing was created");

    // Without the session's token, even the organizer's forms are refused and nothing happens.
    let without = form(&[("slug", "quiet"), ("title", "Quiet")]);
    let refused = page(&app, "POST", "/ui/organize", &organizer, &without).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.text().contains("did not carry the security token"));
    let forged = form(&[("csrf_token", &researcher_csrf), ("slug", "quiet"), ("title", "Quiet")]);
    assert_eq!(page(&app, "POST", "/ui/organize", &organizer, &forged).await.status, StatusCode::FORBIDDEN);
    // A submission's file without the CSRF header is refused before it is read.
    let request = axum::http::Request::post(format!(
        "/ui/open-cohorts/demo-chest-xray-challenge/submissions?version={}",
        uuid::Uuid::nil()
    ))
    .header("cookie", &researcher)
    .header("content-type", "text/csv")
    .body(axum::body::Body::from("subject_id,label\n"))
    .unwrap();
    assert_eq!(app.call(request).await.status, StatusCode::FORBIDDEN);
    assert!(
        sqlx::query_scalar::<_, String>("select slug from cohort where slug = 'quiet'")
            .fetch_all(&app.db)
            .await
            .unwrap()
            .is_empty()
    );

    // A refusal of the service is shown on the page, naming the problem.
    let bad = form(&[("csrf_token", &organizer_csrf), ("slug", "Not A Slug"), ("title", "Bad")]);
    let refused = page(&app, "POST", "/ui/organize", &organizer, &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("`slug` must be 1–63 lowercase letters"), "{}", refused.text());
    let split = form(&[
        ("csrf_token", &organizer_csrf),
        ("method", "random"),
        ("seed", "1"),
        ("train", "0.9"),
        ("validation", "0.9"),
        ("test", "0.9"),
    ]);
    let refused = page(&app, "POST", &format!("{demo}/split"), &organizer, &split).await;
    assert!(refused.status.is_client_error(), "{}", refused.status);
    assert!(refused.text().contains("sum to"), "{}", refused.text());
}
