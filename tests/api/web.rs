//! The web interface in a real browser: Debian's Chromium, headless, driven
//! by chromedriver over W3C WebDriver, against the server on a real socket.
//! With `SAVE_SCREENSHOTS=1` the key pages are saved to `docs/screenshots/`.

use std::time::{Duration, Instant};

use base64::Engine;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::challenges::{CHALLENGE, challenge, perfect, submit};
use crate::helpers::{Served, TestApp, ensure_debian_package};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session behind its own chromedriver; both end on drop.
pub(crate) struct Browser {
    driver: std::process::Child,
    http: reqwest::Client,
    session: String,
    /// `http://host:port` of the app.
    pub base: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at a laptop's window size.
    pub(crate) async fn open(served: &Served) -> Browser {
        ensure_debian_package("chromium", "chromium").unwrap();
        ensure_debian_package("chromedriver", "chromium-driver").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{root}/status")).send().await;
            if let Ok(ready) = ready
                && ready.json::<Value>().await.is_ok_and(|s| s["value"]["ready"] == true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1366,900"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created: Value =
            http.post(format!("{root}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}"));
        Browser { driver, http, session: format!("{root}/session/{session}"), base: format!("http://{}", served.host) }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    /// Opens `path` of the app and waits for it to load.
    pub(crate) async fn go(&self, path: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": format!("{}{path}", self.base)}))).await;
    }

    /// The element matching `css`, waited for up to ten seconds.
    pub(crate) async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element matches `{css}` on {}", self.text("body").await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many elements match `css` now.
    pub(crate) async fn count(&self, css: &str) -> usize {
        let found = self
            .command(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css})))
            .await;
        found.as_array().map_or(0, Vec::len)
    }

    /// The visible text of the first element matching `css`.
    pub(crate) async fn text(&self, css: &str) -> String {
        let found =
            self.command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        let Some(id) = found[ELEMENT].as_str() else { return String::new() };
        self.command(reqwest::Method::GET, &format!("/element/{id}/text"), None).await.as_str().unwrap_or("").to_owned()
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({"text": text}))).await;
    }

    pub(crate) async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    /// Presses a key (a WebDriver key code such as `\u{E004}` for Tab).
    pub(crate) async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key},
        ]}]});
        self.command(reqwest::Method::POST, "/actions", Some(actions)).await;
    }

    pub(crate) async fn script(&self, script: &str) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Waits until the text of `css` contains `expected`.
    pub(crate) async fn wait_for_text(&self, css: &str, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.text(css).await.contains(expected) {
            assert!(Instant::now() < deadline, "`{css}` never said {expected:?}: {:?}", self.text(css).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Errors the page logged to the console (CSP violations among them),
    /// and the violations the page's own script recorded.
    pub(crate) async fn problems(&self) -> Vec<String> {
        let log = self.command(reqwest::Method::POST, "/se/log", Some(json!({"type": "browser"}))).await;
        let mut problems: Vec<String> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        let recorded = self.script("return window.custodianCspViolations;").await;
        let Some(recorded) = recorded.as_array() else {
            problems.push("the page's script did not run".to_owned());
            return problems;
        };
        problems.extend(recorded.iter().map(|v| format!("CSP violation: {v}")));
        problems
    }

    /// Saves a screenshot of the page as `docs/screenshots/<name>.png` when
    /// `SAVE_SCREENSHOTS` is set.
    pub(crate) async fn screenshot(&self, name: &str) {
        if std::env::var_os("SAVE_SCREENSHOTS").is_none() {
            return;
        }
        let png = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub(crate) async fn close(self) {
        self.command(reqwest::Method::DELETE, "", None).await;
    }
}

pub(crate) fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

/// The demo challenge published, with a team's perfect submission scored.
async fn scored_challenge() -> TestApp {
    let (app, _, version, truth) = Box::pin(challenge(json!({}))).await;
    let alice = app.token("alice", &[Role::Researcher]);
    app.post_json(&format!("{CHALLENGE}/teams"), Some(&alice), &json!({"name": "alpha"}))
        .await
        .assert_status(axum::http::StatusCode::CREATED);
    submit(&app, &version, Some(&alice), "text/csv", perfect(&truth))
        .await
        .assert_status(axum::http::StatusCode::ACCEPTED);
    crate::extracts::work(&app).await;
    app
}

#[tokio::test]
async fn an_anonymous_visitor_browses_a_published_challenge_with_its_chart_and_leaderboard() {
    let app = Box::pin(scored_challenge()).await;
    let served = app.serve().await;
    let browser = Browser::open(&served).await;

    browser.go("/").await;
    browser.wait_for_text("h1", "Custodian").await;
    assert!(browser.text(".account").await.contains("Sign in"), "nobody is signed in");
    browser.screenshot("home").await;
    // The keyboard reaches the skip link first, and it leads to the content.
    browser.press("\u{E004}").await;
    assert_eq!(browser.script("return document.activeElement.className;").await, "skip-link");
    browser.press("\u{E007}").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while browser.script("return document.activeElement.id;").await != "main" {
        assert!(Instant::now() < deadline, "the skip link moves the focus to the main content");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    browser.click("a[href='/ui/open-cohorts']").await;
    browser.wait_for_text("h1", "Open cohorts").await;
    let list = browser.text("main").await;
    assert!(list.contains("Subjects per split"), "{list}");
    browser.screenshot("open-cohorts").await;

    browser.click(".cohort-list a").await;
    browser.wait_for_text("#versions-heading", "Versions").await;
    let page = browser.text("main").await;
    assert!(page.contains("custodian fetch --server http://") && page.contains("--extract"), "{page}");
    assert!(page.contains("Licence") && page.contains("Citation"), "{page}");
    // The breakdown: a bar chart with its labels in text, and the same numbers in a table.
    assert!(browser.count("#breakdown-site svg rect.bar").await > 0, "the site chart has bars");
    assert!(browser.text("#breakdown-site svg").await.contains(" · test"), "each bar names its split");
    assert!(browser.count("#breakdown-sex table.breakdown-table tbody tr").await > 0, "a table backs the chart");
    // The leaderboard: Alice's team first, scored by AUC.
    let board = browser.text("#leaderboard").await;
    assert!(board.contains("alpha") && board.contains("auc") && board.contains("1.000"), "{board}");
    browser.screenshot("open-cohort-landing").await;
    browser.script("document.getElementById('breakdown-heading').scrollIntoView();").await;
    browser.screenshot("open-cohort-breakdown").await;
    browser.script("document.getElementById('leaderboard-heading').scrollIntoView();").await;
    browser.screenshot("open-cohort-leaderboard").await;

    browser.go("/ui/dictionary?q=age").await;
    browser.wait_for_text("#dictionary-count", "fields").await;
    assert!(browser.count("#fields tbody tr").await > 0, "searching finds a field");
    browser.screenshot("dictionary").await;
    browser.go("/ui/deid").await;
    browser.wait_for_text("h1", "De-identification conformance statement").await;
    assert!(browser.text("#attributes").await.contains("(0010,0020)"), "Patient ID is listed");
    browser.screenshot("deid").await;

    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");
    browser.close().await;
    served.stop().await;
}

#[tokio::test]
async fn a_user_signs_in_with_a_token_sees_it_and_signs_out_and_a_post_without_the_csrf_token_is_refused() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let browser = Browser::open(&served).await;
    let token = app.token("rita", &[Role::Researcher]);

    browser.go("/ui/sign-in").await;
    browser.wait_for_text("h1", "Sign in").await;
    browser.type_into("#token", "not-a-token").await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#sign-in-problem", "Not signed in").await;
    browser.screenshot("sign-in").await;
    // The refused attempt is answered 401, which the browser logs; nothing else is.
    let problems = browser.problems().await;
    assert!(problems.len() == 1 && problems[0].contains("401"), "{problems:?}");

    browser.type_into("#token", &token).await;
    browser.click("form.stacked button[type='submit']").await;
    browser.wait_for_text("#signed-in-as", "Signed in as rita").await;
    assert!(browser.text("#signed-in-as").await.contains("researcher"));
    let cookie = browser.script("return document.cookie;").await;
    assert_eq!(cookie, "", "the session cookie is HttpOnly: scripts cannot read it");
    let problems = browser.problems().await;
    assert!(problems.is_empty(), "no console errors or CSP violations: {problems:?}");

    browser.click(".account button[type='submit']").await;
    browser.wait_for_text(".account", "Sign in").await;
    assert!(!browser.text("body").await.contains("rita"), "signed out, the page no longer names her");
    let actions = app.audit_actions().await;
    assert!(actions.iter().any(|a| a == "web.signed_in") && actions.iter().any(|a| a == "web.signed_out"));
    browser.close().await;

    // Outside the browser: the security headers, and forms without their token.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = format!("http://{}", served.host);
    let page = http.get(format!("{base}/ui/sign-in")).send().await.unwrap();
    let headers = page.headers().clone();
    assert_eq!(headers["content-security-policy"], custodian::web::CONTENT_SECURITY_POLICY);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.contains_key("referrer-policy"));
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let without = http
        .post(format!("{base}/ui/sign-in"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", token.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(without.headers().contains_key("content-security-policy"));
    assert!(without.text().await.unwrap().contains("did not carry the security token"));
    let wrong = http
        .post(format!("{base}/ui/sign-in"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", token.as_str()), ("csrf_token", "forged")]))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), reqwest::StatusCode::FORBIDDEN);
    let no_session = http
        .post(format!("{base}/ui/sign-out"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf_token", "x")]))
        .send()
        .await
        .unwrap();
    assert_eq!(no_session.status(), reqwest::StatusCode::FORBIDDEN);
    // The JSON API is untouched by the web layer.
    let api = http.get(format!("{base}/api/v1/open-cohorts")).send().await.unwrap();
    assert!(!api.headers().contains_key("content-security-policy"));
    served.stop().await;
}

/// The cookie a response sets, as a request sends it back.
pub(crate) fn session_cookie(response: &crate::helpers::TestResponse) -> String {
    let set = response.headers[axum::http::header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

pub(crate) fn csrf_token_of(page: &str) -> String {
    let marker = r#"name="csrf_token" value=""#;
    let start = page.find(marker).expect("the page has a form with a CSRF token") + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

/// Signs in through the web form of the server at `base` with `token`, and
/// returns the home page as the signed-in browser then sees it.
pub(crate) async fn sign_in_over_http(base: &str, token: &str) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie_of = |response: &reqwest::Response| {
        response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    };
    let form_page = http.get(format!("{base}/ui/sign-in")).send().await.unwrap();
    let visitor = cookie_of(&form_page);
    let csrf = csrf_token_of(&form_page.text().await.unwrap());
    let signed_in = http
        .post(format!("{base}/ui/sign-in"))
        .header("cookie", &visitor)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf_token", &csrf), ("token", token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), reqwest::StatusCode::SEE_OTHER);
    let session = cookie_of(&signed_in);
    http.get(format!("{base}/")).header("cookie", session).send().await.unwrap().text().await.unwrap()
}

pub(crate) async fn page(
    app: &TestApp,
    method: &str,
    path: &str,
    cookie: &str,
    body: &str,
) -> crate::helpers::TestResponse {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap();
    app.call(request).await
}

#[tokio::test]
async fn signing_in_gives_a_new_session_that_ends_when_its_api_token_is_revoked_and_only_a_hash_is_stored() {
    let app = TestApp::new().await;
    let jwt = app.token("rita", &[Role::Researcher]);
    let created = app.post_json("/api/v1/tokens", Some(&jwt), &json!({"name": "web"})).await;
    let created = created.assert_status(axum::http::StatusCode::CREATED).json();
    let (secret, id) = (created["token"].as_str().unwrap(), created["id"].as_str().unwrap());

    let form_page = page(&app, "GET", "/ui/sign-in", "", "").await;
    let visitor = session_cookie(&form_page);
    let csrf = csrf_token_of(&form_page.text());
    let signed_in =
        page(&app, "POST", "/ui/sign-in", &visitor, &form(&[("csrf_token", &csrf), ("token", secret)])).await;
    assert_eq!(signed_in.status, axum::http::StatusCode::SEE_OTHER, "{}", signed_in.text());
    let session = session_cookie(&signed_in);
    assert_ne!(session, visitor, "signing in gives a new session id");
    // The visitor's session is gone: its form token no longer works.
    let stale = page(&app, "POST", "/ui/sign-out", &visitor, &form(&[("csrf_token", &csrf)])).await;
    assert_eq!(stale.status, axum::http::StatusCode::FORBIDDEN);

    let home = page(&app, "GET", "/", &session, "").await;
    assert!(home.text().contains("Signed in as <strong>rita</strong>"), "{}", home.text());
    let id_in_cookie = session.split_once('=').unwrap().1;
    let stored = app.rows_as_text(&["web_session"]).await;
    assert!(!stored.contains(id_in_cookie) && !stored.contains(secret), "only hashes are stored: {stored}");

    let missing = page(&app, "GET", "/ui/open-cohorts/no-such-cohort", &session, "").await;
    assert_eq!(missing.status, axum::http::StatusCode::NOT_FOUND);
    assert!(missing.text().contains("<h1>Not found</h1>"), "a page, not JSON: {}", missing.text());
    assert!(missing.headers.contains_key("content-security-policy"));

    app.delete(&format!("/api/v1/tokens/{id}"), Some(&jwt)).await.assert_status(axum::http::StatusCode::NO_CONTENT);
    let home = page(&app, "GET", "/", &session, "").await;
    assert!(!home.text().contains("Signed in as"), "the revoked token's session has ended");
}
