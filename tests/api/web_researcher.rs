//! Browser and HTTP tests of the researcher pages.

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::access::{World, cohort, content, grant_on_chest_ct, world};
use crate::helpers::TestApp;
use crate::web::{Browser, csrf_token_of, form, page, session_cookie};

/// Subjects of `cohort` at `site`, imported by an uploader.
async fn import(app: &TestApp, cohort: &str, site: &str, patients: std::ops::Range<u32>) {
    let uploader = app.token("ulrich", &[Role::Uploader]);
    let mut csv = vec!["patient_id,sex,birth_year".to_owned()];
    csv.extend(patients.map(|i| format!("{site}-{i:03},{},{}", if i % 2 == 0 { "F" } else { "M" }, 1950 + i % 30)));
    let request = axum::http::Request::post(format!("/api/v1/imports/subjects?cohort={cohort}&site={site}"))
        .header("authorization", format!("Bearer {uploader}"))
        .header("content-type", "text/csv")
        .body(axum::body::Body::from(csv.join("\n")))
        .unwrap();
    app.call(request).await.assert_status(StatusCode::CREATED);
}

/// The generated registry of the discovery tests (80 people at `north` and
/// `local`, scanned on four scanner models), the chest-ct cohort with 30
/// subjects at `local` and 3 at `east` (fewer than its threshold of 10), and
/// Rita's project granted chest-ct.
async fn registry() -> (World, String) {
    let w = world().await;
    crate::discovery::registry(&w.app, &crate::discovery::people()).await;
    let site = json!({"code": "east", "name": "East clinic"});
    w.app.post_json("/api/v1/sites", Some(&w.admin), &site).await.assert_status(StatusCode::CREATED);
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    import(&w.app, "chest-ct", "local", 0..30).await;
    import(&w.app, "chest-ct", "east", 0..3).await;
    let (holder, _) = grant_on_chest_ct(&w, &content(&["chest-ct"], "HMB")).await;
    (w, holder)
}

/// A web session of `token`'s user, signed in over HTTP: its cookie.
async fn session(app: &TestApp, token: &str) -> String {
    let form_page = page(app, "GET", "/ui/sign-in", "", "").await;
    let visitor = session_cookie(&form_page);
    let csrf = csrf_token_of(&form_page.text());
    let signed_in = page(app, "POST", "/ui/sign-in", &visitor, &form(&[("csrf_token", &csrf), ("token", token)])).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.text());
    session_cookie(&signed_in)
}

/// The CSRF token of the session, from a page it is shown.
async fn csrf(app: &TestApp, cookie: &str) -> String {
    csrf_token_of(&page(app, "GET", "/ui/account", cookie, "").await.text())
}

async fn sign_in(browser: &Browser, token: &str, username: &str) {
    browser.go("/ui/sign-in").await;
    browser.type_into("#token", token).await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#signed-in-as", &format!("Signed in as {username}")).await;
}

fn cell<'a>(breakdown: &'a Value, site: &str) -> &'a Value {
    breakdown["cells"].as_array().unwrap().iter().find(|c| c["values"] == json!([site])).unwrap()
}

#[tokio::test]
async fn a_researcher_discovers_runs_a_project_makes_a_token_and_acknowledges_a_withdrawal_in_the_browser() {
    let (w, holder) = Box::pin(registry()).await;
    let withdrawal = json!({"site": "local", "patient_id": "local-007", "scope": "full"});
    w.app.post_json("/api/v1/withdrawals", Some(&w.sam), &withdrawal).await.assert_status(StatusCode::CREATED);
    let served = w.app.serve().await;
    let browser = Browser::open(&served).await;
    sign_in(&browser, &w.pi, "rita").await;

    // Discovery: the cohort's subjects by site, the small site in words.
    browser.click("a[href='/ui/discover']").await;
    browser.wait_for_text("h1", "Discover").await;
    browser.click("#discover-form button[type='submit']").await;
    browser.wait_for_text("#counts", "Subjects").await;
    assert!(browser.count("#breakdown-site svg rect.bar").await > 0, "the site chart has bars");
    let by_site = browser.text("#breakdown-site").await;
    assert!(by_site.contains("east fewer than 10"), "the small site is told in words: {by_site}");
    assert!(browser.text("#breakdown-site svg").await.contains("fewer than 10"), "in the chart too");
    let by_scanner = browser.text("#breakdown-second").await;
    assert!(by_scanner.contains("Prisma") && by_scanner.contains("Revolution"), "by scanner model: {by_scanner}");
    let rules = browser.text("#disclosure").await;
    assert!(rules.contains("Suppressed below 10") && rules.contains("Perturbed, not rounded"), "{rules}");
    // The API answers Rita exactly what the page showed her.
    let api = w.app.post_json("/api/v1/discovery/breakdown", Some(&w.pi), &json!({"by": ["site"]})).await;
    let api = api.assert_status(StatusCode::OK).json();
    assert_eq!(cell(&api, "east")["suppressed"], true);
    let local = cell(&api, "local")["counts"]["subjects"].as_i64().expect("the large site is shown");
    assert!(by_site.contains(&format!("local {local}")), "{by_site}");
    browser.script("document.getElementById('results-heading').scrollIntoView();").await;
    browser.screenshot("researcher-discover").await;

    // A project, a colleague invited in the browser who accepts over HTTP.
    browser.click("a[href='/ui/projects']").await;
    browser.type_into("#title", "Site effects in chest CT").await;
    browser.click("#new-project button[type='submit']").await;
    browser.wait_for_text("h1", "Site effects in chest CT").await;
    let path = browser.script("return location.pathname;").await.as_str().unwrap().to_owned();
    let project = path.trim_start_matches("/ui/projects/").to_owned();
    assert!(browser.count(&format!("a[href='/ui/applications/new?project={project}']")).await == 1);
    browser.type_into("#invite-username", "colin").await;
    browser.click("#invite-form button[type='submit']").await;
    browser.wait_for_text("#members-table", "invited, not yet accepted").await;
    let colin = session(&w.app, &w.app.token("colin", &[Role::Researcher])).await;
    let listed = page(&w.app, "GET", "/ui/projects", &colin, "").await.text();
    assert!(listed.contains("Accept the invitation to Site effects in chest CT"), "{listed}");
    let token = csrf_token_of(&listed);
    let accepted =
        page(&w.app, "POST", &format!("{path}/members/colin/accept"), &colin, &form(&[("csrf_token", &token)])).await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER);
    browser.go(&path).await;
    browser.wait_for_text("#members-table", "colin").await;
    let members = browser.text("#members-table").await;
    assert!(!members.contains("invited, not yet accepted"), "Colin is a member now: {members}");
    browser.screenshot("researcher-project").await;

    // An API token, shown once; it works, and is gone when revoked.
    browser.click("a[href='/ui/account']").await;
    assert!(browser.text("#verification").await.contains("verified by sam"));
    browser.type_into("#token-name", "laptop CLI").await;
    browser.click("#token-form button[type='submit']").await;
    browser.wait_for_text("#new-token", "it will not be shown again").await;
    let secret = browser.text("#token-secret").await;
    assert!(secret.starts_with("cst_"), "{secret}");
    w.app.get("/api/v1/me", Some(&secret)).await.assert_status(StatusCode::OK);
    browser.screenshot("researcher-account").await;
    browser.go("/ui/account").await;
    browser.wait_for_text("#tokens-table", "laptop CLI").await;
    assert!(!browser.text("body").await.contains(&secret), "the secret is shown once only");
    browser.click("#tokens-table button[type='submit']").await;
    browser.wait_for_text("#tokens-table", "revoked").await;
    w.app.get("/api/v1/me", Some(&secret)).await.assert_status(StatusCode::UNAUTHORIZED);

    // The withdrawal notice, from the notifications page.
    browser.click("a[href='/ui/notifications']").await;
    browser.wait_for_text("#open-notices", "all data").await;
    assert!(
        browser.count(&format!("#notifications a[href='/ui/projects/{holder}']")).await > 0,
        "the message links the project"
    );
    browser.click("#open-notices button[type='submit']").await;
    browser.wait_for_text("#withdrawals", "acknowledged by rita").await;
    let open = w.app.get("/api/v1/withdrawal-notices?unacknowledged=true", Some(&w.sam)).await.json();
    assert_eq!(open, json!([]), "the steward sees it acknowledged");

    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");
    browser.close().await;
    served.stop().await;
}

#[tokio::test]
async fn another_user_can_neither_see_nor_act_on_a_project_they_are_not_in() {
    let (w, holder) = Box::pin(registry()).await;
    let withdrawal = json!({"site": "local", "patient_id": "local-001", "scope": "imaging"});
    w.app.post_json("/api/v1/withdrawals", Some(&w.sam), &withdrawal).await.assert_status(StatusCode::CREATED);
    let notices = w.app.get(&format!("/api/v1/projects/{holder}/withdrawal-notices"), Some(&w.pi)).await.json();
    let notice = notices[0]["id"].as_str().unwrap();
    let olga = session(&w.app, &w.app.token("olga", &[Role::Researcher])).await;
    let token = csrf(&w.app, &olga).await;
    let with_token = form(&[("csrf_token", &token), ("username", "olga")]);

    let seen = page(&w.app, "GET", &format!("/ui/projects/{holder}"), &olga, "").await;
    assert_eq!(seen.status, StatusCode::NOT_FOUND);
    assert!(!seen.text().contains("Glioma growth"), "the title is not shown");
    let listed = page(&w.app, "GET", "/ui/projects", &olga, "").await.text();
    assert!(!listed.contains("Glioma growth"), "{listed}");
    for path in [
        format!("/ui/projects/{holder}/members"),
        format!("/ui/projects/{holder}/members/olga/accept"),
        format!("/ui/projects/{holder}/members/colin/remove"),
        format!("/ui/withdrawal-notices/{notice}/acknowledge"),
    ] {
        let refused = page(&w.app, "POST", &path, &olga, &with_token).await;
        assert!(
            refused.status == StatusCode::NOT_FOUND || refused.status == StatusCode::FORBIDDEN,
            "{path}: {}",
            refused.status
        );
        assert!(refused.text().contains("<h1>"), "a page: {}", refused.text());
    }
    let project = w.app.get(&format!("/api/v1/projects/{holder}"), Some(&w.pi)).await.json();
    assert_eq!(project["members"].as_array().unwrap().len(), 1, "nobody joined: {project}");
    let notices = w.app.get(&format!("/api/v1/projects/{holder}/withdrawal-notices"), Some(&w.pi)).await.json();
    assert_eq!(notices[0]["acknowledged_at"], Value::Null, "the notice is still open");
    // The discovery page refuses exact counts within a project she is not in, as the API does.
    let within = page(&w.app, "GET", &format!("/ui/discover?run=1&cohort=chest-ct&project={holder}"), &olga, "").await;
    assert!(within.text().contains("Not answered"), "{}", within.text());
}

#[tokio::test]
async fn a_token_secret_is_shown_only_in_the_answer_that_made_it_and_a_post_without_csrf_is_refused() {
    let w = world().await;
    let rita = session(&w.app, &w.pi).await;
    let token = csrf(&w.app, &rita).await;

    let made =
        page(&w.app, "POST", "/ui/account/tokens", &rita, &form(&[("csrf_token", &token), ("name", "ci")])).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
    let tokens = w.app.get("/api/v1/tokens", Some(&w.pi)).await.json();
    let id = tokens["tokens"][0]["id"].as_str().unwrap().to_owned();
    let text = made.text();
    let start = text.find("cst_").expect("the new secret is on the page");
    let secret: String = text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || "-_".contains(*c)).collect();
    w.app.get("/api/v1/me", Some(&secret)).await.assert_status(StatusCode::OK);
    assert!(!page(&w.app, "GET", "/ui/account", &rita, "").await.text().contains(&secret));
    let revoked =
        page(&w.app, "POST", &format!("/ui/account/tokens/{id}/revoke"), &rita, &form(&[("csrf_token", &token)])).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let after = page(&w.app, "GET", "/ui/account", &rita, "").await.text();
    assert!(after.contains("revoked") && !after.contains(&secret), "revoked, and its secret never again");

    let before = w.app.get("/api/v1/projects", Some(&w.pi)).await.json()["projects"].as_array().unwrap().len();
    for (path, body) in [
        ("/ui/projects", form(&[("title", "Unasked")])),
        ("/ui/account/tokens", form(&[("name", "unasked")])),
        (
            "/ui/account/profile",
            form(&[("name", "X"), ("institution", "Y"), ("email", "x@example.org"), ("position", "Z")]),
        ),
    ] {
        let refused = page(&w.app, "POST", path, &rita, &body).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert!(refused.text().contains("did not carry the security token"));
    }
    let projects = w.app.get("/api/v1/projects", Some(&w.pi)).await.json();
    assert_eq!(projects["projects"].as_array().unwrap().len(), before, "no project was made");
    let profile = w.app.get("/api/v1/me/profile", Some(&w.pi)).await.json();
    assert_eq!(profile["name"], "Rita Rossi", "the profile is unchanged");
    let tokens = w.app.get("/api/v1/tokens", Some(&w.pi)).await.json();
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 1, "no token was made");
}
