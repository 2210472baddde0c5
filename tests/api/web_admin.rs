//! The admin pages: an admin registers a site, creates a cohort, sets its
//! consent terms and the fees, and publishes an agreement version in the
//! browser; anyone else is refused, on the pages and on their forms.

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::Value;

use crate::helpers::TestApp;
use crate::web::{Browser, csrf_token_of, form, page};

#[tokio::test]
async fn an_admin_registers_a_site_creates_a_cohort_and_publishes_an_agreement_version_in_the_browser() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let browser = Browser::open(&served).await;
    let token = app.token("alice", &[Role::Admin]);

    browser.go("/ui/sign-in").await;
    browser.type_into("#token", &token).await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#signed-in-as", "Signed in as alice").await;
    browser.click("a[href='/ui/admin']").await;
    browser.wait_for_text("h1", "Administration").await;
    assert!(browser.text("#admin-agreement").await.contains("custodian-dua-2026-1"), "the version in force");

    browser.click(".admin-nav a[href='/ui/admin/sites']").await;
    browser.type_into("#site-code", "uhw").await;
    browser.type_into("#site-name", "University Hospital West").await;
    browser.type_into("#site-country", "DE").await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#sites", "University Hospital West").await;

    browser.click(".admin-nav a[href='/ui/admin/cohorts']").await;
    browser.type_into("#cohort-slug", "lung-ct-2026").await;
    browser.type_into("#cohort-title", "Lung CT 2026").await;
    browser.type_into("#cohort-threshold", "12").await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#cohorts", "lung-ct-2026").await;
    browser.click("a[href='/ui/admin/cohorts/lung-ct-2026/consent']").await;
    browser.wait_for_text("#consent-in-force", "No consent terms are set").await;
    browser.click("#modifier-IRB").await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#consent-in-force", "GRU, IRB").await;

    browser.click(".admin-nav a[href='/ui/admin/agreements']").await;
    browser.type_into("#dua-version", "dua-2026-1").await;
    browser.type_into("#dua-title", "Data use agreement").await;
    browser.type_into("#dua-body", "# Terms\n\nUse the data only for the approved project.").await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#agreements", "in force").await;

    browser.click(".admin-nav a[href='/ui/admin']").await;
    browser.wait_for_text("#admin-agreement", "dua-2026-1").await;
    assert!(browser.text("#admin-sites-count").await.starts_with("2 sites"), "the built-in local site and the new one");
    browser.screenshot("admin-overview").await;
    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");
    browser.close().await;

    // What the API now says, and the audit log, name the same changes.
    let sites = app.get("/api/v1/sites", Some(&token)).await.json();
    assert!(sites["sites"].as_array().unwrap().iter().any(|s| s["code"] == "uhw" && s["country"] == "DE"), "{sites}");
    let cohort = app.get("/api/v1/cohorts/lung-ct-2026", Some(&token)).await.json();
    assert_eq!((cohort["tier"].as_str(), cohort["suppression_threshold"].as_i64()), (Some("controlled"), Some(12)));
    assert_eq!(app.get("/api/v1/dua", Some(&token)).await.json()["version"], "dua-2026-1");
    let actions = app.audit_actions().await;
    for action in ["site.create", "cohort.create", "cohort.consent"] {
        assert!(actions.iter().any(|a| a == action), "{action} is audited: {actions:?}");
    }
    served.stop().await;
}

/// A session of `token`'s holder, signed in through the sign-in form: its cookie and CSRF token.
async fn session_of(app: &TestApp, token: &str) -> (String, String) {
    let cookie_of = |response: &crate::helpers::TestResponse| {
        response.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    };
    let form_page = page(app, "GET", "/ui/sign-in", "", "").await;
    let visitor = cookie_of(&form_page);
    let csrf = csrf_token_of(&form_page.text());
    let signed_in = page(app, "POST", "/ui/sign-in", &visitor, &form(&[("csrf_token", &csrf), ("token", token)])).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    let session = cookie_of(&signed_in);
    let home = page(app, "GET", "/", &session, "").await;
    (session, csrf_token_of(&home.text()))
}

#[tokio::test]
async fn a_researcher_is_refused_on_the_admin_pages_and_their_forms_and_a_visitor_is_sent_to_sign_in() {
    let app = TestApp::new().await;
    let (session, csrf) = session_of(&app, &app.token("rita", &[Role::Researcher])).await;

    for path in ["/ui/admin", "/ui/admin/sites", "/ui/admin/cohorts", "/ui/admin/fees", "/ui/admin/agreements"] {
        let refused = page(&app, "GET", path, &session, "").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert!(refused.text().contains("needs one of the roles: admin"), "{path}: {}", refused.text());
    }
    let posts: [(&str, Vec<(&str, &str)>); 5] = [
        ("/ui/admin/sites", vec![("code", "rogue"), ("name", "Rogue site")]),
        (
            "/ui/admin/cohorts",
            vec![
                ("slug", "rogue"),
                ("title", "Rogue"),
                ("tier", "controlled"),
                ("design", "prospective"),
                ("source", "registry"),
            ],
        ),
        ("/ui/admin/fees/controlled", vec![("access_fee", "1"), ("maintenance_fee", "1"), ("currency", "EUR")]),
        ("/ui/admin/agreements", vec![("version", "rogue-1"), ("title", "Rogue"), ("body", "anything")]),
        ("/ui/admin/cohorts/rogue/consent", vec![("permission", "GRU")]),
    ];
    for (path, fields) in posts {
        let mut fields = fields;
        fields.push(("csrf_token", &csrf));
        let refused = page(&app, "POST", path, &session, &form(&fields)).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}: {}", refused.text());
        assert!(refused.text().contains("needs one of the roles"), "{path}: {}", refused.text());
    }
    let admin = app.token("alice", &[Role::Admin]);
    let sites: Value = app.get("/api/v1/sites", Some(&admin)).await.json();
    assert!(!sites.to_string().contains("rogue"), "no site was created: {sites}");
    let versions: Value = app.get("/api/v1/dua/versions", Some(&admin)).await.json();
    assert!(!versions.to_string().contains("rogue"), "no version was published");
    let fees: Value = app.get("/api/v1/fees", Some(&admin)).await.json();
    assert!(fees.as_array().unwrap().iter().all(|f| f["access_fee"] == 0), "no fee was set: {fees}");

    // Without a CSRF token even an admin's form is not acted on; without a session, the pages lead to sign-in.
    let (admin_session, _) = session_of(&app, &admin).await;
    let forged = page(&app, "POST", "/ui/admin/sites", &admin_session, &form(&[("code", "x"), ("name", "X")])).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let anonymous = page(&app, "GET", "/ui/admin/sites", "", "").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers["location"], "/ui/sign-in");
}

#[tokio::test]
async fn an_admin_issues_a_sign_in_token_shown_once_that_carries_its_roles_and_a_researcher_cannot() {
    let app = TestApp::new().await;
    let rita_token = app.token("rita", &[Role::Researcher]);
    let profile = serde_json::json!({"name": "Rita Rossi", "institution": "University of Bologna", "email": "rita@example.org", "position": "Professor"});
    app.put_json("/api/v1/me/profile", Some(&rita_token), &profile).await.assert_status(StatusCode::CREATED);
    let (rita, rita_csrf) = session_of(&app, &rita_token).await;
    let (alice, alice_csrf) = session_of(&app, &app.token("alice", &[Role::Admin])).await;
    let listed = page(&app, "GET", "/ui/admin/users", &alice, "").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(listed.text().contains("<th scope=\"row\">rita</th>"), "rita has been seen: {}", listed.text());
    assert!(listed.text().contains("researcher"), "with her roles");

    // A researcher may neither list people nor issue a token, not even for herself as admin.
    let wanted = [("username", "rita"), ("role", "admin"), ("ttl", "1h")];
    let mut fields = wanted.to_vec();
    fields.push(("csrf_token", &rita_csrf));
    let refused = page(&app, "POST", "/ui/admin/users", &rita, &form(&fields)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(page(&app, "GET", "/ui/admin/users", &rita, "").await.status, StatusCode::FORBIDDEN);
    assert!(!app.audit_actions().await.iter().any(|a| a == "token.issue"), "nothing was issued");

    // The admin issues one for Nora: shown in the answer, working, audited, not shown again.
    let issue = [("username", "nora"), ("role", "researcher"), ("role", "uploader"), ("ttl", "2h")];
    let mut fields = issue.to_vec();
    fields.push(("csrf_token", &alice_csrf));
    let issued = page(&app, "POST", "/ui/admin/users", &alice, &form(&fields)).await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.text());
    let text = issued.text();
    let start = text.find("<pre id=\"issued-token\">").expect("the token is shown") + "<pre id=\"issued-token\">".len();
    let token = text[start..].split('<').next().unwrap().trim().to_owned();
    let me: Value = app.get("/api/v1/me", Some(&token)).await.json();
    assert_eq!(me["username"], "nora", "{me}");
    assert_eq!(me["roles"], serde_json::json!(["uploader", "researcher"]), "{me}");
    let event: (String, String, Value) = sqlx::query_as(
        "select actor, target, details from audit_event where action = 'token.issue' order by seq desc limit 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((event.0.as_str(), event.1.as_str()), ("alice", "user:nora"));
    assert_eq!(event.2["ttl_seconds"], 7200);
    assert!(!event.2.to_string().contains(&token), "the token is not in the audit log");
    let again = page(&app, "GET", "/ui/admin/users", &alice, "").await.text();
    assert!(!again.contains(&token), "the token is shown once");

    // No role, or a bad duration: refused with the reason.
    let bad = form(&[("username", "nora"), ("ttl", "soon"), ("role", "researcher"), ("csrf_token", &alice_csrf)]);
    let refused = page(&app, "POST", "/ui/admin/users", &alice, &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("is not a duration"), "{}", refused.text());
    let none = form(&[("username", "nora"), ("csrf_token", &alice_csrf)]);
    let refused = page(&app, "POST", "/ui/admin/users", &alice, &none).await;
    assert!(refused.text().contains("at least one role"), "{}", refused.text());
}
