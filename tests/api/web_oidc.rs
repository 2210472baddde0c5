//! Web sign-in through a real, certified OpenID provider: panva's
//! `oidc-provider` on Debian's Node.js, installed from npm into
//! `target/oidc-provider` on first use and run with `tests/oidc/provider.mjs`
//! (its development login and consent pages, PKCE required, roles in the ID
//! token). The ID token's own checks (nonce, audience, issuer, expiry) are
//! driven directly with tokens the test signs.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use custodian::auth::{Authenticator, Role};
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::auth_jwt::{jwk, rsa_key, sign};
use crate::helpers::{Served, TestApp, ensure_debian_package};
use crate::web::{Browser, form};

/// The oidc-provider release the tests run (OpenID Certified).
const OIDC_PROVIDER: &str = "oidc-provider@9.13.3";
const CLIENT_ID: &str = "custodian-web";
const CLIENT_SECRET: &str = "a-test-client-secret";

static INSTALL: Mutex<()> = Mutex::new(());

/// The installed provider's entry point, installing it on first use; `None`
/// (the test is skipped, saying why) only when Node.js or npm cannot be had.
fn provider_module() -> Option<PathBuf> {
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let prefix = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/oidc-provider");
    let module = prefix.join("node_modules/oidc-provider/lib/index.js");
    if module.exists() {
        return Some(module);
    }
    for (program, package) in [("node", "nodejs"), ("npm", "npm")] {
        if let Err(problem) = ensure_debian_package(program, package) {
            eprintln!("skipped: no {program} ({problem})");
            return None;
        }
    }
    let installed = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(OIDC_PROVIDER)
        .output()
        .expect("npm runs");
    assert!(installed.status.success(), "npm install {OIDC_PROVIDER}: {}", String::from_utf8_lossy(&installed.stderr));
    Some(module)
}

/// The provider process; killed on drop.
struct Provider {
    child: std::process::Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// Starts the provider on `port` for a client redirected to `redirect_uri`.
    async fn start(module: &std::path::Path, port: u16, redirect_uri: &str) -> Provider {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs");
        let mut child = std::process::Command::new("node")
            .arg(script)
            .args([&port.to_string(), CLIENT_ID, CLIENT_SECRET, redirect_uri])
            .env("OIDC_PROVIDER_MODULE", module)
            .stdout(std::process::Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            // The rest is drained, so the provider never writes into a closed pipe.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            read.map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(30), ready).await.expect("the provider starts").unwrap();
        let provider = Provider { child, issuer: format!("http://127.0.0.1:{port}") };
        assert!(line.unwrap_or_default().starts_with("ready "), "the provider did not start");
        provider
    }
}

/// A served app whose web sign-in uses the provider, and the provider.
async fn with_provider() -> Option<(TestApp, Served, Provider)> {
    let module = provider_module()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}");
    let app = TestApp::with_config(|c| {
        c.auth.oidc_issuer = Some(issuer.clone());
        c.auth.jwks_url = Some(format!("{issuer}/jwks"));
        c.auth.oidc.client_id = Some(CLIENT_ID.into());
        c.auth.oidc.client_secret = Some(CLIENT_SECRET.into());
        c.auth.oidc.scopes = vec!["openid".into(), "roles".into()];
        c.auth.oidc.provider_name = "Hospital Login".into();
    })
    .await;
    let served = app.serve().await;
    let provider = Provider::start(&module, port, &format!("http://{}/ui/sign-in/oidc/callback", served.host)).await;
    Some((app, served, provider))
}

#[tokio::test]
async fn a_visitor_signs_in_at_the_identity_provider_and_lands_signed_in_with_the_roles_it_gives() {
    let Some((app, served, provider)) = with_provider().await else { return };
    let browser = Browser::open(&served).await;

    browser.go("/ui/sign-in").await;
    browser.wait_for_text("#sign-in-oidc", "Sign in with Hospital Login").await;
    assert!(browser.count("#token").await == 1, "the token sign-in stays");
    browser.screenshot("sign-in-with-provider").await;
    browser.click("#sign-in-oidc").await;
    // The provider's own login page, then its consent page.
    browser.type_into("input[name='login']", "alice").await;
    browser.type_into("input[name='password']", "any password").await;
    browser.click("button.login-submit").await;
    browser.wait_for_text("button.login-submit", "Continue").await;
    browser.click("button.login-submit").await;

    browser.wait_for_text("#signed-in-as", "Signed in as alice").await;
    let signed_in_as = browser.text("#signed-in-as").await;
    assert!(signed_in_as.contains("admin, steward"), "{signed_in_as}");
    assert!(browser.count("a[href='/ui/admin']").await == 1, "the admin's navigation shows");
    // The provider's own development pages ask for a web font from the internet; that is theirs.
    let problems: Vec<String> = browser
        .problems()
        .await
        .into_iter()
        .filter(|p| !p.contains(&provider.issuer) && !p.contains("fonts.googleapis.com"))
        .collect();
    assert!(problems.is_empty(), "no console errors or CSP violations on Custodian's pages: {problems:?}");
    browser.close().await;

    let method: Option<String> = sqlx::query_scalar(
        "select details->>'method' from audit_event where action = 'web.signed_in' and actor = 'alice'",
    )
    .fetch_optional(&app.db)
    .await
    .unwrap();
    assert_eq!(method.as_deref(), Some("oidc"), "the sign-in is audited with its method");
    served.stop().await;
}

/// A browser without JavaScript: reqwest with a plain cookie jar.
struct Visit {
    http: reqwest::Client,
    base: String,
    /// The app's session cookie (`name=value`).
    cookie: String,
    /// The provider's cookies.
    jar: HashMap<String, String>,
}

impl Visit {
    /// Opens the sign-in page, which starts a session.
    async fn open(served: &Served) -> Visit {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = format!("http://{}", served.host);
        let page = http.get(format!("{base}/ui/sign-in")).send().await.unwrap();
        let cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        Visit { http, base, cookie, jar: HashMap::new() }
    }

    async fn get(&self, path_or_url: &str) -> reqwest::Response {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        self.http.get(url).header("cookie", &self.cookie).send().await.unwrap()
    }

    /// Follows "Sign in with …": the provider's authorization URL.
    async fn start(&self) -> String {
        let started = self.get("/ui/sign-in/oidc").await;
        assert_eq!(started.status(), StatusCode::SEE_OTHER);
        assert!(cookie_of(&started).is_none(), "the visit's session is the one the sign-in is bound to");
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        for part in ["code_challenge_method=S256", "code_challenge=", "state=", "nonce=", "client_id=custodian-web"] {
            assert!(location.contains(part), "{location}");
        }
        location
    }

    fn jar_header(&self) -> String {
        self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    /// Follows the provider from `url`, signing in as `user` and consenting
    /// (or aborting, with `user` = None), to the redirect back to Custodian.
    async fn at_provider(&mut self, mut url: String, user: Option<&str>) -> String {
        for _ in 0..20 {
            if url.starts_with(&self.base) {
                return url;
            }
            let response = self.http.get(&url).header("cookie", self.jar_header()).send().await.unwrap();
            self.keep_cookies(&response);
            if response.status().is_redirection() {
                url = absolute(&url, response.headers()["location"].to_str().unwrap());
                continue;
            }
            let page = response.text().await.unwrap();
            let Some(user) = user else {
                url = format!("{}/abort", url.trim_end_matches('/'));
                continue;
            };
            let action = page.split("action=\"").nth(1).and_then(|s| s.split('"').next()).expect("a form");
            let fields: Vec<(&str, &str)> = if page.contains("name=\"login\"") {
                vec![("prompt", "login"), ("login", user), ("password", "any")]
            } else {
                vec![("prompt", "consent")]
            };
            let submitted = self
                .http
                .post(absolute(&url, action))
                .header("cookie", self.jar_header())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&fields))
                .send()
                .await
                .unwrap();
            self.keep_cookies(&submitted);
            assert!(submitted.status().is_redirection(), "the provider took the form: {}", submitted.status());
            url = absolute(&url, submitted.headers()["location"].to_str().unwrap());
        }
        panic!("the provider never sent the browser back");
    }

    /// Whoever the home page says is signed in with this visit's cookie.
    async fn signed_in_as(&self, cookie: &str) -> Option<String> {
        let home = self.http.get(format!("{}/", self.base)).header("cookie", cookie).send().await.unwrap();
        let home = home.text().await.unwrap();
        home.split("Signed in as <strong>").nth(1).and_then(|s| s.split('<').next()).map(str::to_owned)
    }
}

fn absolute(base: &str, location: &str) -> String {
    url::Url::parse(base).unwrap().join(location).unwrap().to_string()
}

fn cookie_of(response: &reqwest::Response) -> Option<String> {
    response.headers().get("set-cookie").map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned())
}

#[tokio::test]
async fn the_callback_refuses_forged_replayed_foreign_and_unstarted_answers_and_signs_nobody_in() {
    let Some((_app, served, _provider)) = with_provider().await else { return };

    // A full sign-in over HTTP: the code is redeemed once.
    let mut rita = Visit::open(&served).await;
    let authorize = rita.start().await;
    let answer = rita.at_provider(authorize, Some("rita")).await;
    assert!(answer.contains("code=") && answer.contains("state="), "{answer}");
    let landed = rita.get(&answer).await;
    assert_eq!(landed.status(), StatusCode::SEE_OTHER);
    let session = cookie_of(&landed).expect("a new session");
    assert_eq!(rita.signed_in_as(&session).await.as_deref(), Some("rita"));

    // The same answer again, from the signed-in browser: refused.
    let replay = rita.http.get(&answer).header("cookie", &session).send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert!(replay.text().await.unwrap().contains("unknown or was already used"));

    // A state nobody issued.
    let mallory = Visit::open(&served).await;
    let forged = mallory.get("/ui/sign-in/oidc/callback?code=abc&state=forged-state").await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert!(forged.text().await.unwrap().contains("unknown or was already used"));
    assert_eq!(mallory.signed_in_as(&mallory.cookie).await, None);

    // Rita's answer delivered to another browser (login CSRF): refused there.
    let mut started_by_rita = Visit::open(&served).await;
    let authorize = started_by_rita.start().await;
    let answer = started_by_rita.at_provider(authorize, Some("rita")).await;
    let foreign = mallory.get(&answer).await;
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
    assert!(foreign.text().await.unwrap().contains("another browser session"));
    assert_eq!(mallory.signed_in_as(&mallory.cookie).await, None);

    // No visit before: no session at all.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let unstarted =
        http.get(format!("http://{}/ui/sign-in/oidc/callback?code=abc&state=xyz", served.host)).send().await.unwrap();
    assert_eq!(unstarted.status(), StatusCode::BAD_REQUEST);
    let visit = cookie_of(&unstarted).expect("a session to start again from");
    assert!(
        !http
            .get(format!("http://{}/", served.host))
            .header("cookie", visit)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("Signed in as"),
        "nobody is signed in"
    );
    assert!(unstarted.text().await.unwrap().contains("No sign-in was started in this browser"));
    served.stop().await;
}

#[tokio::test]
async fn a_provider_refusal_and_a_user_without_a_role_are_named_on_the_sign_in_page() {
    let Some((app, served, _provider)) = with_provider().await else { return };

    let mut aborted = Visit::open(&served).await;
    let authorize = aborted.start().await;
    let answer = aborted.at_provider(authorize, None).await;
    let refused = aborted.get(&answer).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let page = refused.text().await.unwrap();
    assert!(page.contains("The identity provider did not sign you in: access_denied"), "{page}");
    assert!(page.contains("Sign in with Hospital Login"), "the page offers to start again");

    let mut nobody = Visit::open(&served).await;
    let authorize = nobody.start().await;
    let answer = nobody.at_provider(authorize, Some("nobody")).await;
    let refused = nobody.get(&answer).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(cookie_of(&refused).is_none());
    let page = refused.text().await.unwrap();
    assert!(page.contains("knows you as nobody, but gives you no role in this registry"), "{page}");
    assert_eq!(nobody.signed_in_as(&nobody.cookie).await, None);
    assert!(!app.audit_actions().await.iter().any(|a| a == "web.signed_in"), "nobody signed in");
    served.stop().await;
}

const IDP: &str = "https://idp.example.org/realms/hospital";

fn id_token_claims(nonce: &str, audience: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({ "iss": IDP, "aud": audience, "sub": "dr.jones", "roles": ["researcher"], "nonce": nonce,
            "iat": now, "nbf": now, "exp": now + 300 })
}

#[tokio::test]
async fn an_id_token_is_refused_for_another_nonce_audience_issuer_or_signer_and_when_expired() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    std::fs::write(&keys, json!({ "keys": [jwk("rsa-a")] }).to_string()).unwrap();
    let config = custodian::config::AuthConfig {
        hs256_secret: Some(crate::helpers::TEST_SECRET.into()),
        jwks_file: Some(keys),
        oidc_issuer: Some(IDP.into()),
        ..Default::default()
    };
    let auth = Authenticator::from_config(&config, None).unwrap();
    let verify = |token: String| {
        let auth = &auth;
        async move { auth.verify_id_token(&token, CLIENT_ID, |nonce| nonce == "n-1").await.map_err(|e| e.to_string()) }
    };
    let signed = |claims: &Value| sign(Algorithm::RS256, Some("rsa-a"), &rsa_key("rsa-a"), claims);

    let principal = verify(signed(&id_token_claims("n-1", CLIENT_ID))).await.unwrap();
    assert_eq!((principal.username.as_str(), principal.roles.as_slice()), ("dr.jones", &[Role::Researcher][..]));

    let refusal = verify(signed(&id_token_claims("n-2", CLIENT_ID))).await.unwrap_err();
    assert!(refusal.contains("nonce"), "{refusal}");
    let mut no_nonce = id_token_claims("", CLIENT_ID);
    no_nonce.as_object_mut().unwrap().remove("nonce");
    assert!(verify(signed(&no_nonce)).await.unwrap_err().contains("nonce"));
    // The API's audience is not the client's: a bearer token is no ID token.
    assert!(verify(signed(&id_token_claims("n-1", "custodian"))).await.unwrap_err().contains("audience"));
    let mut other_issuer = id_token_claims("n-1", CLIENT_ID);
    other_issuer["iss"] = json!("https://elsewhere.example.org");
    assert!(verify(signed(&other_issuer)).await.unwrap_err().contains("issuer"));
    let mut expired = id_token_claims("n-1", CLIENT_ID);
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    assert!(verify(signed(&expired)).await.unwrap_err().contains("expired"));
    // Custodian's own HS256 secret never signs an ID token.
    let own = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &id_token_claims("n-1", CLIENT_ID),
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::TEST_SECRET.as_bytes()),
    )
    .unwrap();
    assert!(verify(own).await.unwrap_err().contains("algorithm"));
}
