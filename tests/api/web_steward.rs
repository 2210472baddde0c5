//! Browser and HTTP tests of the steward pages.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::access::{World, active_grant, cohort, submitted, world};
use crate::catalog::upload;
use crate::dicom_gen::Instance;
use crate::web::{Browser, csrf_token_of, form, page, session_cookie};

/// What the steward has waiting: an application under review, a quarantined
/// file (48 × 64 pixels, burned-in annotation declared), an overdue duty and
/// a profile to verify. Returns the grant and the quarantined instance.
async fn waiting(w: &World) -> (String, String) {
    let (_project, grant) = active_grant(w).await;
    cohort(w, "neuro-mri", "controlled", json!({"permission": "GRU"}), false).await;
    submitted(w, &["neuro-mri"]).await;
    sqlx::query(
        "insert into obligation (grant_id, project_id, kind, due_on)
         select grant_id, project_id, 'progress_report', current_date - 10 from access_grant
         where grant_id = $1::uuid and version = 1",
    )
    .bind(&grant)
    .execute(&w.app.db)
    .await
    .unwrap();
    upload(&w.app, &[Instance { burned_in: Some("YES"), rows: 64, columns: 48, ..Instance::ct(7, 1, 1, 1) }]).await;
    let quarantined = w.app.get("/api/v1/quarantine", Some(&w.sam)).await.json();
    let sop = quarantined["instances"][0]["sop_uid"].as_str().unwrap().to_owned();
    let ravi = w.app.token("ravi", &[Role::Researcher]);
    let profile =
        json!({"name": "Ravi Rao", "institution": "Tata Memorial", "email": "ravi@example.org", "position": "Fellow"});
    w.app.put_json("/api/v1/me/profile", Some(&ravi), &profile).await.assert_status(StatusCode::CREATED);
    (grant, sop)
}

async fn sign_in(browser: &Browser, token: &str) {
    browser.go("/ui/sign-in").await;
    browser.type_into("#token", token).await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#signed-in-as", "Signed in as").await;
}

async fn grant_state(w: &World, grant: &str) -> Value {
    let history = w.app.get(&format!("/api/v1/grants/{grant}"), Some(&w.pi)).await.json();
    history.as_array().unwrap().last().unwrap()["effective_state"].clone()
}

#[tokio::test]
async fn a_steward_works_through_the_inbox_a_grant_a_profile_the_quarantine_preview_and_the_audit_log() {
    let w = world().await;
    let (grant, sop) = waiting(&w).await;
    let served = w.app.serve().await;
    let browser = Browser::open(&served).await;
    sign_in(&browser, &w.sam).await;

    // The inbox: one of each, counted, each row leading to where it is handled.
    browser.click("a[href='/ui/steward']").await;
    browser.wait_for_text("h1", "Steward inbox").await;
    let summary = browser.text("#inbox-summary").await;
    for line in [
        "Applications awaiting review: 1",
        "Overdue duties: 1",
        "Quarantined files: 1",
        "Profiles to verify: 3",
        "Unacknowledged withdrawal notices: 0",
    ] {
        assert!(summary.contains(line), "{line:?} in {summary}");
    }
    assert!(browser.text("#applications").await.contains("Glioma growth models"));
    assert!(browser.text("#duties").await.contains("progress report"));
    assert_eq!(browser.count(&format!("#quarantine a[href='/ui/steward/quarantine/{sop}']")).await, 1);
    browser.screenshot("steward-inbox").await;

    // The overdue duty leads to its grant, which the steward suspends and reinstates.
    browser.click(&format!("#duties a[href='/ui/steward/grants/{grant}#duties']")).await;
    browser.wait_for_text("#grant-state", "active").await;
    browser.type_into("#suspend-reason", "The progress report is overdue.").await;
    browser.click("#suspend-form button").await;
    browser.wait_for_text("#grant-state", "suspended").await;
    assert!(browser.text("#grant-state").await.contains("The progress report is overdue."));
    assert_eq!(grant_state(&w, &grant).await, "suspended", "the API sees the page's suspension");
    browser.type_into("#reinstate-reason", "The report has arrived.").await;
    browser.click("#reinstate-form button").await;
    browser.wait_for_text("#grant-state", "active").await;
    assert_eq!(grant_state(&w, &grant).await, "active");
    assert!(browser.text("#grant-history").await.contains("The report has arrived."));

    // A profile to verify.
    browser.go("/ui/steward/profiles").await;
    browser.click("#verify-ravi").await;
    browser.wait_for_text("#profile-ravi", "verified by sam").await;
    let unverified = w.app.get("/api/v1/profiles?unverified=true", Some(&w.sam)).await.json();
    assert!(unverified["profiles"].as_array().unwrap().iter().all(|p| p["username"] != "ravi"));

    // The quarantined file, with its de-identified image rendered.
    browser.go("/ui/steward/quarantine").await;
    browser.click(".quarantine-table a").await;
    browser.wait_for_text("#quarantine-reason", "burned-in-annotation").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.script("const i = document.getElementById('preview'); return i.complete && i.naturalWidth;").await
        != json!(48)
    {
        assert!(Instant::now() < deadline, "the preview shows as an image 48 pixels wide");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same image over HTTP, in the steward's session: a PNG of the stored size, never cached.
    let fetched = browser
        .script(
            "return fetch(document.getElementById('preview').src).then(r => r.arrayBuffer().then(b => {
               const v = new DataView(b);
               const magic = String.fromCharCode(...new Uint8Array(b.slice(1, 4)));
               return [r.status, r.headers.get('content-type'), r.headers.get('cache-control'), magic,
                       v.getUint32(16), v.getUint32(20)];
             }));",
        )
        .await;
    assert_eq!(fetched, json!([200, "image/png", "no-store", "PNG", 48, 64]));
    browser.screenshot("steward-quarantine").await;

    // The audit log, filtered to the suspension, with the chain verified.
    browser.go("/ui/steward/audit").await;
    browser.wait_for_text("#chain-status", "Chain verified").await;
    browser.type_into("#action", "grant.suspend").await;
    browser.click("#audit-filter button").await;
    browser.wait_for_text("#audit-count", "1 events shown").await;
    let events = browser.text("#audit-events").await;
    assert!(events.contains("grant.suspend") && events.contains("sam"), "{events}");
    assert!(!events.contains("grant.reinstate"), "the filter leaves other actions out: {events}");
    browser.screenshot("steward-audit").await;

    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");
    browser.close().await;
    served.stop().await;
    let actions = w.app.audit_actions().await;
    assert!(actions.iter().any(|a| a == "quarantine.view"), "looking at the image is audited: {actions:?}");
    assert!(actions.iter().any(|a| a == "profile.verify"));
}

/// Signs in through the form with `token`: the session cookie and its CSRF token.
async fn session(w: &World, token: &str) -> (String, String) {
    let form_page = page(&w.app, "GET", "/ui/sign-in", "", "").await;
    let visitor = session_cookie(&form_page);
    let csrf = csrf_token_of(&form_page.text());
    let signed_in =
        page(&w.app, "POST", "/ui/sign-in", &visitor, &form(&[("csrf_token", &csrf), ("token", token)])).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    let cookie = session_cookie(&signed_in);
    let home = page(&w.app, "GET", "/", &cookie, "").await;
    (cookie, csrf_token_of(&home.text()))
}

#[tokio::test]
async fn researchers_organizers_and_uploaders_are_refused_every_steward_page_action_and_preview() {
    let w = world().await;
    let (grant, sop) = waiting(&w).await;
    let renewal = json!({"months": 6, "progress_report": "Halfway there."});
    let asked = w.app.post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &renewal).await.json();
    let renewal = asked["id"].as_str().unwrap().to_owned();
    let fee = uuid::Uuid::new_v4();
    let pages = [
        "/ui/steward".to_owned(),
        "/ui/steward/grants".to_owned(),
        format!("/ui/steward/grants/{grant}"),
        "/ui/steward/profiles".to_owned(),
        "/ui/steward/withdrawals".to_owned(),
        "/ui/steward/quarantine".to_owned(),
        format!("/ui/steward/quarantine/{sop}"),
        format!("/ui/steward/quarantine/{sop}/preview.png"),
        "/ui/steward/audit".to_owned(),
    ];
    let posts = [
        (format!("/ui/steward/grants/{grant}/state"), vec![("action", "suspend"), ("reason", "no")]),
        (format!("/ui/steward/renewals/{renewal}/decision"), vec![("action", "approve"), ("reason", "fine")]),
        (format!("/ui/steward/fees/{fee}/settlement"), vec![("settlement", "paid"), ("note", "ref 1")]),
        ("/ui/steward/profiles/ravi/verify".to_owned(), vec![]),
        ("/ui/steward/withdrawals".to_owned(), vec![("pseudonym", "sub-x"), ("scope", "full")]),
        (format!("/ui/steward/quarantine/{sop}/release"), vec![]),
        (format!("/ui/steward/quarantine/{sop}/delete"), vec![]),
    ];
    let roles = [("rita", Role::Researcher), ("olga", Role::Organizer), ("ulrich", Role::Uploader)];
    for (user, role) in roles {
        let (cookie, csrf) = session(&w, &w.app.token(user, &[role])).await;
        for path in &pages {
            let refused = page(&w.app, "GET", path, &cookie, "").await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{user} opens {path}");
            assert!(refused.text().contains("needs one of the roles"), "{user} on {path}: {}", refused.text());
            assert_ne!(refused.headers["content-type"], "image/png");
        }
        for (path, fields) in &posts {
            let mut fields = fields.clone();
            fields.push(("csrf_token", &csrf));
            let refused = page(&w.app, "POST", path, &cookie, &form(&fields)).await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{user} posts to {path}: {}", refused.text());
        }
    }
    // Nothing the refused forms asked for happened.
    assert_eq!(grant_state(&w, &grant).await, "active");
    let quarantine = w.app.get("/api/v1/quarantine", Some(&w.sam)).await.json();
    assert_eq!(quarantine["instances"].as_array().unwrap().len(), 1);
    let renewals = w.app.get("/api/v1/renewals", Some(&w.sam)).await.json();
    assert_eq!(renewals[0]["state"], "requested");

    // A steward's form without the session's CSRF token is refused too.
    let (cookie, _) = session(&w, &w.sam).await;
    let path = format!("/ui/steward/grants/{grant}/state");
    let without = page(&w.app, "POST", &path, &cookie, &form(&[("action", "suspend"), ("reason", "no")])).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    assert!(without.text().contains("did not carry the security token"));
    assert_eq!(grant_state(&w, &grant).await, "active");
    // Signed out, the pages lead to sign-in; a forged grant id is not found.
    let anonymous = page(&w.app, "GET", "/ui/steward", "", "").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    let forged = page(&w.app, "GET", &format!("/ui/steward/grants/{fee}"), &cookie, "").await;
    assert_eq!(forged.status, StatusCode::NOT_FOUND);
    // The REST inbox answers stewards only, with what the page shows.
    let inbox = w.app.get("/api/v1/steward/inbox", Some(&w.sam)).await.assert_status(StatusCode::OK).json();
    assert_eq!(inbox["quarantine"][0]["sop_uid"], sop.as_str());
    assert_eq!(inbox["overdue_duties"].as_array().unwrap().len(), 1);
    assert_eq!(inbox["renewals"].as_array().unwrap().len(), 1);
    w.app.get("/api/v1/steward/inbox", Some(&w.pi)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
}
