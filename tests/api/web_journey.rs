//! The access application journey in the web pages: a researcher applies
//! with the live feasibility and consent check, a steward asks for changes,
//! the researcher resubmits, two stewards approve, the PI accepts the data use
//! agreement, a release is built and a file downloaded from its page; and the
//! refusals those pages share with the API.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::access::{DUA, World, application, content, world};
use crate::extracts::{audit_details, demo_with, eventually, sha256, work};
use crate::helpers::{TestApp, TestResponse};
use crate::web::{Browser, csrf_token_of, form, page, session_cookie};

/// Signs `token` in on the sign-in page, signing out whoever was signed in.
async fn sign_in_as(browser: &Browser, token: &str, user: &str) {
    browser.go("/ui/sign-in").await;
    if browser.count(".account form button[type='submit']").await > 0 {
        browser.click(".account form button[type='submit']").await;
        browser.wait_for_text(".account", "Sign in").await;
        browser.go("/ui/sign-in").await;
    }
    browser.type_into("#token", token).await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#signed-in-as", &format!("Signed in as {user}")).await;
}

/// Waits until the text of `css` no longer contains `gone`.
async fn wait_without(browser: &Browser, css: &str, gone: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.text(css).await.contains(gone) {
        assert!(Instant::now() < deadline, "`{css}` still says {gone:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Types the texts of an application into the form.
async fn fill_in_the_application(browser: &Browser) {
    for (field, text) in [
        ("#f-title", "Brain volume and HbA1c"),
        ("#f-lay", "We study whether high blood sugar goes with a smaller brain."),
        ("#f-rationale", "Few registries hold brain MRI and HbA1c of the same people."),
        ("#f-methods", "Brain volume from T1 MRI, then regression on HbA1c."),
        ("#f-modalities", "MR"),
        ("#f-fields", "age_at_study, sex"),
        ("#f-ethics", "REC 26/NW/0003"),
        ("#f-countries", "IT"),
        ("#f-security", "University HPC, ISO 27001 certified."),
        ("#f-interest", "Earlier care for people with diabetes."),
    ] {
        browser.type_into(field, text).await;
    }
}

/// Downloads the first file the release page lists through the browser's
/// session, and checks its bytes against the listed checksum and the audit log.
async fn download_a_file_of_the_release(browser: &Browser, app: &TestApp, release_id: &str) {
    // A file downloaded by the browser's session: the bytes are those of the listed checksum, and audited.
    let listed = browser
        .script(
            "const row = document.querySelector('#files tbody tr');
             return [row.querySelector('a.download').getAttribute('href'), row.querySelector('.checksum').textContent,
                     row.querySelector('th code').textContent];",
        )
        .await;
    let (href, checksum, file) =
        (listed[0].as_str().unwrap(), listed[1].as_str().unwrap(), listed[2].as_str().unwrap());
    let fetched = browser
        .script(&format!(
            "const x = new XMLHttpRequest(); x.open('GET', '{href}', false);
             x.overrideMimeType('text/plain; charset=x-user-defined'); x.send();
             let bytes = ''; for (let i = 0; i < x.responseText.length; i++) {{
               bytes += String.fromCharCode(x.responseText.charCodeAt(i) & 0xff); }}
             return [x.status, x.getResponseHeader('content-disposition'), btoa(bytes)];"
        ))
        .await;
    assert_eq!(fetched[0], 200, "{fetched}");
    assert!(fetched[1].as_str().unwrap().starts_with("attachment"), "{fetched}");
    let bytes = base64::engine::general_purpose::STANDARD.decode(fetched[2].as_str().unwrap()).unwrap();
    assert!(!bytes.is_empty());
    assert_eq!(sha256(&bytes), checksum, "the bytes are the file the page lists");
    let audited = eventually(|| async {
        audit_details(app, "extract.downloaded").await.iter().any(|d| d["path"] == file && d["extract"] == release_id)
    })
    .await;
    assert!(audited, "the download is in the audit log");
}

/// A steward's declaration of no competing interests, on the review page.
async fn declare_no_interests(browser: &Browser) {
    browser.click("#declare-form button[type='submit']").await;
    browser.wait_for_text("#done", "declaration").await;
}

/// The controlled tier's access fee, waived by a steward (the fee pages are elsewhere).
async fn waive_the_access_fee(app: &TestApp, sam: &str, id: &str) {
    let fees =
        app.get(&format!("/api/v1/applications/{id}/fees"), Some(sam)).await.assert_status(StatusCode::OK).json();
    let fee = fees[0]["id"].as_str().unwrap();
    let waiver = json!({"settlement": "waived", "note": "pilot study"});
    app.post_json(&format!("/api/v1/fees/{fee}/settlement"), Some(sam), &waiver).await.assert_status(StatusCode::OK);
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one journey, read from top to bottom
async fn a_researcher_applies_a_steward_asks_for_changes_two_approve_and_the_pi_downloads_a_release_file() {
    let (app, _, rita) = demo_with(|_| {}).await;
    let sam = app.token("sam", &[Role::Steward]);
    let stella = app.token("stella", &[Role::Steward]);
    let project = app.post_json("/api/v1/projects", Some(&rita), &json!({"title": "Brain volume and HbA1c"})).await;
    let project = project.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned();
    let served = app.serve().await;
    let browser = Browser::open(&served).await;

    // The researcher fills in the form; the check follows the scope as it changes.
    sign_in_as(&browser, &rita, "rita").await;
    browser.go(&format!("/ui/applications/new?project={project}")).await;
    browser.wait_for_text("h1", "New application for Brain volume and HbA1c").await;
    fill_in_the_application(&browser).await;
    browser.click("#f-commercial").await;
    browser.click("#cohort-demo-neuro-mri").await;
    browser.wait_for_text("#check-result", "Not permitted by the consent terms").await;
    let blocked = browser.text("#check-result").await;
    assert!(blocked.contains("NCU") && blocked.contains("blocks"), "the non-commercial term is named: {blocked}");
    assert!(blocked.contains("Feasibility in demo-neuro-mri"), "feasibility is counted: {blocked}");
    browser.click("#f-commercial").await;
    wait_without(&browser, "#check-result", "Not permitted").await;
    browser.wait_for_text("#check-result", "Ready to submit").await;
    browser.script("document.querySelector('fieldset[data-scope]').scrollIntoView();").await;
    browser.screenshot("researcher-application").await;
    browser.click("button[value='save']").await;
    browser.wait_for_text("#done", "The draft is saved").await;
    let path = browser.script("return location.pathname;").await.as_str().unwrap().to_owned();
    let id = path.rsplit('/').next().unwrap().to_owned();
    browser.click("#submit-application").await;
    browser.wait_for_text("#state", "submitted").await;

    // A steward takes it up and asks for changes, with a public and an internal comment.
    sign_in_as(&browser, &sam, "sam").await;
    let review = format!("/ui/steward/applications/{id}");
    browser.go(&review).await;
    browser.wait_for_text("#check-result", "demo-neuro-mri").await;
    let check = browser.text("#check-result").await;
    assert!(check.contains("Ready to submit"), "the PI's bona fides count, not the steward's: {check}");
    browser.click("#start-review").await;
    browser.wait_for_text("#state", "under review").await;
    declare_no_interests(&browser).await;
    browser.type_into("#comment-body", "Ask the PI about retention; the ethics reference looks fine.").await;
    browser.click("#comment-form button[type='submit']").await;
    browser.wait_for_text("#comments", "retention").await;
    browser.click("#vote-changes").await;
    browser.type_into("#vote-comment", "Please say how long the images are kept.").await;
    browser.click("#cast-vote").await;
    browser.wait_for_text("#state", "changes requested").await;

    // The researcher reads the request (not the internal comment), changes the draft and resubmits.
    sign_in_as(&browser, &rita, "rita").await;
    browser.go(&format!("/ui/applications/{id}")).await;
    browser.wait_for_text("#changes-requested", "asks for changes").await;
    assert!(browser.text("#history").await.contains("Please say how long the images are kept."));
    assert!(!browser.text("main").await.contains("Ask the PI about retention"), "internal comments stay with stewards");
    browser.type_into("#f-security", " Images are deleted after 24 months.").await;
    browser.click("button[value='save']").await;
    browser.wait_for_text("#done", "saved").await;
    browser.click("#submit-application").await;
    browser.wait_for_text("#state", "under review").await;

    // The steward sees what changed, brings in a second steward and approves with conditions.
    sign_in_as(&browser, &sam, "sam").await;
    browser.go(&review).await;
    browser.wait_for_text("#diff", "/data_security").await;
    assert!(browser.text("#diff").await.contains("deleted after 24 months"));
    browser.type_into("#assign-steward", "stella").await;
    browser.click("#assign-form button[type='submit']").await;
    browser.wait_for_text("#assignments", "stella").await;
    browser.click("#vote-conditions").await;
    browser.type_into("#vote-condition-text", "Acknowledge the registry in publications.").await;
    browser.script("document.getElementById('vote-expires').value = '2027-12-31';").await;
    browser.click("#cast-vote").await;
    browser.wait_for_text("#done", "Your vote is recorded").await;
    assert!(browser.text("#state").await.contains("under review"), "a controlled cohort needs two votes");
    browser.script("document.getElementById('diff-heading').scrollIntoView();").await;
    browser.screenshot("steward-review").await;

    sign_in_as(&browser, &stella, "stella").await;
    browser.go(&review).await; // stella's review: a declaration, then the second approval
    declare_no_interests(&browser).await;
    browser.click("#vote-approve").await;
    browser.click("#cast-vote").await;
    browser.wait_for_text("#state", "approved").await;

    waive_the_access_fee(&app, &sam, &id).await;

    // The PI accepts the agreement on the grant's page and asks for a release.
    sign_in_as(&browser, &rita, "rita").await;
    browser.go(&format!("/ui/applications/{id}")).await;
    browser.click("#status a[href^='/ui/grants/']").await;
    browser.wait_for_text("#dua-version", DUA).await;
    assert!(browser.text("#conditions").await.contains("Ends on 2027-12-31"), "{}", browser.text("#conditions").await);
    browser.click("#dua-read").await;
    browser.click("#accept-agreement").await;
    browser.wait_for_text("#done", "the grant is active").await;
    assert!(browser.text("#state").await.contains("active"));
    assert!(browser.text("#duties").await.contains("deletion attestation"), "{}", browser.text("#duties").await);
    browser.click("#request-release").await;
    browser.wait_for_text("#state", "queued").await;
    let release = browser.script("return location.pathname;").await.as_str().unwrap().to_owned();
    work(&app).await;
    browser.go(&release).await;
    browser.wait_for_text("#state", "ready").await;
    let release_id = release.rsplit('/').next().unwrap();
    let command = browser.text("#fetch-command").await;
    assert!(command.starts_with("custodian fetch --server http://") && command.contains(release_id), "{command}");
    assert!(browser.count("#files tbody tr").await > 1, "the release lists its files");
    browser.screenshot("researcher-release").await;

    download_a_file_of_the_release(&browser, &app, release_id).await;

    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");
    browser.close().await;
    served.stop().await;
}

/// A signed-in web session of `token`: its cookie and CSRF token.
async fn session(app: &TestApp, token: &str) -> (String, String) {
    let form_page = page(app, "GET", "/ui/sign-in", "", "").await;
    let visitor = session_cookie(&form_page);
    let csrf = csrf_token_of(&form_page.text());
    let signed_in = page(app, "POST", "/ui/sign-in", &visitor, &form(&[("csrf_token", &csrf), ("token", token)])).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.text());
    let cookie = session_cookie(&signed_in);
    let home = page(app, "GET", "/", &cookie, "").await;
    (cookie.clone(), csrf_token_of(&home.text()))
}

async fn post(app: &TestApp, (cookie, csrf): &(String, String), path: &str, fields: &[(&str, &str)]) -> TestResponse {
    let mut all = vec![("csrf_token", csrf.as_str())];
    all.extend_from_slice(fields);
    page(app, "POST", path, cookie, &form(&all)).await
}

async fn get(app: &TestApp, (cookie, _): &(String, String), path: &str) -> TestResponse {
    page(app, "GET", path, cookie, "").await
}

async fn state_of(w: &World, id: &str) -> Value {
    crate::access::state(w, id).await["state"].clone()
}

#[tokio::test]
async fn the_pages_refuse_what_the_api_refuses_to_outsiders_researchers_forms_without_a_token_and_second_votes() {
    let w = world().await;
    crate::access::cohort(&w, "brain-mri", "controlled", json!({"permission": "HMB"}), false).await;
    let (project, grant) = crate::access::active_grant(&w).await;
    let release = w.app.post_json(&format!("/api/v1/projects/{project}/extracts"), Some(&w.pi), &json!({})).await;
    let release = release.assert_status(StatusCode::ACCEPTED).json()["id"].as_str().unwrap().to_owned();
    let id = application(&w, &project, &content(&["brain-mri"], "HMB")).await;
    let otto = session(&w.app, &w.app.token("otto", &[Role::Researcher])).await;
    let rita = session(&w.app, &w.pi).await;
    let sam = session(&w.app, &w.sam).await;

    // Another project's researcher is told none of it exists, and cannot act on it.
    for path in [
        format!("/ui/applications/{id}"),
        format!("/ui/grants/{grant}"),
        format!("/ui/releases/{release}"),
        format!("/ui/releases/{release}/files/manifest.json"),
        format!("/ui/applications/new?project={project}"),
    ] {
        let seen = get(&w.app, &otto, &path).await;
        assert_eq!(seen.status, StatusCode::NOT_FOUND, "{path}: {}", seen.text());
        assert!(seen.text().contains("<h1>Not found</h1>"), "{path}");
    }
    let listed = get(&w.app, &otto, "/ui/applications").await.text();
    assert!(!listed.contains(&id), "another project's applications are not listed");
    for path in [format!("/ui/applications/{id}/withdraw"), format!("/ui/applications/{id}/submit")] {
        assert_eq!(post(&w.app, &otto, &path, &[]).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let released = post(&w.app, &otto, &format!("/ui/grants/{grant}/release"), &[]).await;
    assert_eq!(released.status, StatusCode::NOT_FOUND);
    assert_eq!(state_of(&w, &id).await, "draft");

    // A form without the session's CSRF token is refused, and nothing happens.
    let forged =
        page(&w.app, "POST", &format!("/ui/applications/{id}/withdraw"), &rita.0, &form(&[("reason", "x")])).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.text().contains("did not carry the security token"));
    assert_eq!(state_of(&w, &id).await, "draft");

    // An incomplete draft is not submitted, and the page names each gap.
    let mut gaps = content(&["brain-mri"], "HMB");
    gaps["methods"] = json!("");
    w.app
        .put_json(&format!("/api/v1/applications/{id}"), Some(&w.pi), &json!({"content": gaps}))
        .await
        .assert_status(StatusCode::OK);
    let refused = post(&w.app, &rita, &format!("/ui/applications/{id}/submit"), &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("/methods: `methods` is required to submit"), "{}", refused.text());
    w.app
        .put_json(
            &format!("/api/v1/applications/{id}"),
            Some(&w.pi),
            &json!({"content": content(&["brain-mri"], "HMB")}),
        )
        .await
        .assert_status(StatusCode::OK);
    let submitted = post(&w.app, &rita, &format!("/ui/applications/{id}/submit"), &[]).await;
    assert_eq!(submitted.status, StatusCode::SEE_OTHER, "{}", submitted.text());
    assert_eq!(state_of(&w, &id).await, "submitted");

    // A researcher cannot open the committee's view or use its actions.
    let review = format!("/ui/steward/applications/{id}");
    assert_eq!(get(&w.app, &rita, &review).await.status, StatusCode::FORBIDDEN);
    for (action, fields) in [
        ("start", vec![]),
        ("declare", vec![("statement", "none")]),
        ("vote", vec![("vote", "approve")]),
        ("assign", vec![("steward", "rita")]),
        ("comment", vec![("body", "hello"), ("internal", "on")]),
    ] {
        let tried = post(&w.app, &rita, &format!("{review}/{action}"), &fields).await;
        assert_eq!(tried.status, StatusCode::FORBIDDEN, "{action}: {}", tried.text());
    }
    assert_eq!(state_of(&w, &id).await, "submitted");

    // A steward votes once per version, and only after declaring.
    assert_eq!(post(&w.app, &sam, &format!("{review}/start"), &[]).await.status, StatusCode::SEE_OTHER);
    let early = post(&w.app, &sam, &format!("{review}/vote"), &[("vote", "approve")]).await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    assert!(early.text().contains("declare your interests"), "{}", early.text());
    let declared = post(&w.app, &sam, &format!("{review}/declare"), &[("statement", "No competing interests.")]).await;
    assert_eq!(declared.status, StatusCode::SEE_OTHER);
    let first = post(&w.app, &sam, &format!("{review}/vote"), &[("vote", "approve")]).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.text());
    let again = post(&w.app, &sam, &format!("{review}/vote"), &[("vote", "approve")]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.text().contains("you have already voted on version 1"), "{}", again.text());
    let reject = post(&w.app, &sam, &format!("{review}/vote"), &[("vote", "reject")]).await;
    assert_eq!(reject.status, StatusCode::BAD_REQUEST, "a rejection needs a reason: {}", reject.text());
    assert_eq!(state_of(&w, &id).await, "under_review", "one approval is not the quorum of a controlled cohort");
    // The applicant does not see the votes before the decision; the steward does.
    assert!(
        get(&w.app, &rita, &format!("/ui/applications/{id}")).await.text().contains("once the committee has decided")
    );
    assert!(get(&w.app, &sam, &review).await.text().contains("<strong>approve</strong>"));
}
