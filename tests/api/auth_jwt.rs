//! Bearer JWTs: what is accepted, and every way a token is refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custodian::auth::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TEST_SECRET, TestApp};

const IDP: &str = "https://idp.example.org/realms/hospital";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str) -> Value {
    json!({ "iss": IDP, "aud": "custodian", "sub": sub, "roles": ["steward"], "iat": now(), "nbf": now(), "exp": now() + 600 })
}

pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub(crate) fn rsa_key(name: &str) -> EncodingKey {
    let pem = std::fs::read(format!("{}/tests/api/fixtures/{name}.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
    EncodingKey::from_rsa_pem(&pem).unwrap()
}

fn ec_key(name: &str) -> EncodingKey {
    let pem = std::fs::read(format!("{}/tests/api/fixtures/{name}.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
    EncodingKey::from_ec_pem(&pem).unwrap()
}

pub(crate) fn jwk(name: &str) -> Value {
    let text =
        std::fs::read_to_string(format!("{}/tests/api/fixtures/{name}.jwk.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A real HTTP server publishing a JWKS document that tests can rotate.
struct Jwks {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl Jwks {
    async fn serve(keys: Vec<Value>) -> Self {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, f) = (keys.clone(), fetches.clone());
        let router = axum::Router::new().route(
            "/certs",
            get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let body = json!({ "keys": *k.lock().unwrap() });
                async move { axum::Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { url, keys, fetches }
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }
}

async fn oidc_app(jwks: &Jwks) -> TestApp {
    let url = jwks.url.clone();
    TestApp::with_config(move |c| {
        c.auth.hs256_secret = None;
        c.auth.jwks_url = Some(url);
        c.auth.oidc_issuer = Some(IDP.into());
    })
    .await
}

async fn me(app: &TestApp, token: &str) -> crate::helpers::TestResponse {
    app.get("/api/v1/me", Some(token)).await
}

#[tokio::test]
async fn custodian_signed_token_identifies_the_caller_and_their_roles() {
    let app = TestApp::new().await;
    let token = app.token("sam", &[Role::Steward, Role::Researcher]);
    let body = me(&app, &token).await.assert_status(StatusCode::OK).json();
    assert_eq!(body["username"], "sam");
    assert_eq!(body["roles"], json!(["steward", "researcher"]));
    assert_eq!(body["credential"], "jwt");
}

#[tokio::test]
async fn request_without_credentials_gets_401_with_a_bearer_challenge() {
    let app = TestApp::new().await;
    let response = app.get("/api/v1/me", None).await;
    response.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(response.headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");

    let basic = axum::http::Request::get("/api/v1/me")
        .header(header::AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0")
        .body(axum::body::Body::empty())
        .unwrap();
    let message = app.call(basic).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("Bearer"), "{message}");
}

#[tokio::test]
async fn token_with_alg_none_is_rejected() {
    let app = TestApp::new().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(
        json!({ "iss": "custodian", "aud": "custodian", "sub": "mallory", "roles": ["admin"], "exp": now() + 600 })
            .to_string(),
    );
    for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
        me(&app, &token).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn token_signed_with_a_wrong_key_is_rejected() {
    let app = TestApp::new().await;
    let mut claims = claims("mallory");
    claims["iss"] = "custodian".into();
    let forged =
        sign(Algorithm::HS256, None, &EncodingKey::from_secret(b"not-the-registry-secret-not-the-registry"), &claims);
    let message = me(&app, &forged).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "token signature is invalid");

    let genuine = sign(Algorithm::HS256, None, &EncodingKey::from_secret(TEST_SECRET.as_bytes()), &claims);
    me(&app, &genuine).await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_rejected_with_the_reason() {
    let app = TestApp::new().await;
    let key = EncodingKey::from_secret(TEST_SECRET.as_bytes());
    let mut expired = claims("sam");
    expired["iss"] = "custodian".into();
    expired["exp"] = (now() - 120).into();
    let message = me(&app, &sign(Algorithm::HS256, None, &key, &expired))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "token has expired");

    let mut early = claims("sam");
    early["iss"] = "custodian".into();
    early["nbf"] = (now() + 3600).into();
    early["exp"] = (now() + 7200).into();
    let message = me(&app, &sign(Algorithm::HS256, None, &key, &early))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "token is not valid yet");

    let mut no_exp = claims("sam");
    no_exp["iss"] = "custodian".into();
    no_exp.as_object_mut().unwrap().remove("exp");
    let message = me(&app, &sign(Algorithm::HS256, None, &key, &no_exp))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("exp"), "{message}");
}

#[tokio::test]
async fn token_for_another_issuer_or_audience_is_rejected() {
    let app = TestApp::new().await;
    let key = EncodingKey::from_secret(TEST_SECRET.as_bytes());
    let mut wrong_iss = claims("sam");
    wrong_iss["iss"] = "someone-else".into();
    let message = me(&app, &sign(Algorithm::HS256, None, &key, &wrong_iss))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "token issuer is not accepted");

    let mut wrong_aud = claims("sam");
    wrong_aud["iss"] = "custodian".into();
    wrong_aud["aud"] = "another-service".into();
    let message = me(&app, &sign(Algorithm::HS256, None, &key, &wrong_aud))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "token audience is not accepted");
}

#[tokio::test]
async fn identity_provider_tokens_verify_against_its_jwks_with_rs256_and_es256() {
    let jwks = Jwks::serve(vec![jwk("rsa-a"), jwk("ec-a")]).await;
    let app = oidc_app(&jwks).await;

    let rs = sign(Algorithm::RS256, Some("rsa-a"), &rsa_key("rsa-a"), &claims("dr.jones"));
    let body = me(&app, &rs).await.assert_status(StatusCode::OK).json();
    assert_eq!(body["username"], "dr.jones");
    assert_eq!(body["roles"], json!(["steward"]));

    let es = sign(Algorithm::ES256, Some("ec-a"), &ec_key("ec-a"), &claims("dr.smith"));
    me(&app, &es).await.assert_status(StatusCode::OK);

    // A token claiming a key's id but the other algorithm does not verify.
    let mismatched = sign(Algorithm::ES256, Some("rsa-a"), &ec_key("ec-a"), &claims("mallory"));
    me(&app, &mismatched).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn hs256_token_is_refused_when_the_identity_provider_is_the_trust_root() {
    let jwks = Jwks::serve(vec![jwk("rsa-a")]).await;
    let app = oidc_app(&jwks).await;
    // Key confusion: an HS256 MAC keyed with the provider's public RSA key.
    let public_pem = std::fs::read(format!("{}/tests/api/fixtures/rsa-a.pub.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-a".into());
    let forged = jsonwebtoken::encode(&header, &claims("mallory"), &EncodingKey::from_secret(&public_pem)).unwrap();
    let message = me(&app, &forged).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "token algorithm is not accepted");
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_when_a_token_names_a_new_kid() {
    let jwks = Jwks::serve(vec![jwk("rsa-a")]).await;
    let app = oidc_app(&jwks).await;
    let old = sign(Algorithm::RS256, Some("rsa-a"), &rsa_key("rsa-a"), &claims("dr.jones"));
    me(&app, &old).await.assert_status(StatusCode::OK);
    me(&app, &old).await.assert_status(StatusCode::OK);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "keys are cached between requests");

    // The provider rotates: a new key appears and the old one is retired.
    jwks.publish(vec![jwk("rsa-b")]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = sign(Algorithm::RS256, Some("rsa-b"), &rsa_key("rsa-b"), &claims("dr.jones"));
    me(&app, &new).await.assert_status(StatusCode::OK);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);

    let unknown = sign(Algorithm::RS256, Some("rsa-z"), &rsa_key("rsa-a"), &claims("dr.jones"));
    let message = me(&app, &unknown).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "token is signed with an unknown key");
}

#[tokio::test]
async fn jwks_can_be_read_from_a_file_for_offline_sites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({ "keys": [jwk("rsa-a")] }).to_string()).unwrap();
    let app = TestApp::with_config(|c| {
        c.auth.hs256_secret = None;
        c.auth.jwks_file = Some(path);
        c.auth.oidc_issuer = Some(IDP.into());
    })
    .await;
    let token = sign(Algorithm::RS256, Some("rsa-a"), &rsa_key("rsa-a"), &claims("dr.jones"));
    me(&app, &token).await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn roles_are_read_from_a_nested_claim_and_unknown_roles_are_ignored() {
    let jwks = Jwks::serve(vec![jwk("rsa-a")]).await;
    let url = jwks.url.clone();
    let app = TestApp::with_config(move |c| {
        c.auth.hs256_secret = None;
        c.auth.jwks_url = Some(url);
        c.auth.oidc_issuer = Some(IDP.into());
        c.auth.roles_claim = "realm_access.roles".into();
        c.auth.username_claim = "preferred_username".into();
    })
    .await;
    let mut c = claims("0b4f-opaque-subject");
    c["preferred_username"] = "dr.jones".into();
    c["realm_access"] = json!({ "roles": ["uploader", "offline_access", "researcher"] });
    let body = me(&app, &sign(Algorithm::RS256, Some("rsa-a"), &rsa_key("rsa-a"), &c))
        .await
        .assert_status(StatusCode::OK)
        .json();
    assert_eq!(body["username"], "dr.jones");
    assert_eq!(body["roles"], json!(["uploader", "researcher"]));
}

#[tokio::test]
async fn custodians_own_tokens_keep_their_roles_when_the_oidc_claims_are_configured_elsewhere() {
    let jwks = Jwks::serve(vec![jwk("rsa-a")]).await;
    let url = jwks.url.clone();
    let app = TestApp::with_config(move |c| {
        c.auth.jwks_url = Some(url);
        c.auth.oidc_issuer = Some(IDP.into());
        c.auth.roles_claim = "realm_access.roles".into();
        c.auth.username_claim = "preferred_username".into();
    })
    .await;
    let own = app.token("ada", &[Role::Admin]);
    let body = me(&app, &own).await.assert_status(StatusCode::OK).json();
    assert_eq!((&body["username"], &body["roles"]), (&json!("ada"), &json!(["admin"])));
    app.get("/api/v1/audit", Some(&own)).await.assert_status(StatusCode::OK);
    // An OIDC token is still read at the configured claims.
    let mut c = claims("0b4f-opaque-subject");
    c["preferred_username"] = "dr.jones".into();
    c["realm_access"] = json!({ "roles": ["steward"] });
    c["roles"] = json!(["admin"]);
    let body = me(&app, &sign(Algorithm::RS256, Some("rsa-a"), &rsa_key("rsa-a"), &c)).await.json();
    assert_eq!((&body["username"], &body["roles"]), (&json!("dr.jones"), &json!(["steward"])));
}

#[tokio::test]
async fn caller_without_the_needed_role_gets_403() {
    let app = TestApp::new().await;
    let researcher = app.token("rita", &[Role::Researcher]);
    let message = app.get("/api/v1/audit", Some(&researcher)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("steward"), "{message}");
}
