//! Personal API tokens: shown once, hashed at rest, refused once revoked or expired.

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::json;

use crate::helpers::TestApp;

async fn create(app: &TestApp, jwt: &str, body: serde_json::Value) -> serde_json::Value {
    app.post_json("/api/v1/tokens", Some(jwt), &body).await.assert_status(StatusCode::CREATED).json()
}

#[tokio::test]
async fn token_is_shown_once_and_only_its_hash_is_stored() {
    let app = TestApp::new().await;
    let jwt = app.token("ulrich", &[Role::Uploader, Role::Researcher]);
    let created = create(&app, &jwt, json!({ "name": "laptop CLI" })).await;
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cst_"));
    assert_eq!(created["state"], "active");
    assert_eq!(created["roles"], json!(["uploader", "researcher"]));

    // The listing never repeats the secret.
    let listed = app.get("/api/v1/tokens", Some(&jwt)).await;
    listed.assert_status(StatusCode::OK);
    assert!(!listed.text().contains(&secret));
    assert_eq!(listed.json()["tokens"][0]["prefix"], &secret[..10]);

    // Nothing in the database holds the secret, only its SHA-256.
    let dump: String =
        sqlx::query_scalar("select string_agg(t::text, '|') from api_token t").fetch_one(&app.db).await.unwrap();
    assert!(!dump.contains(&secret));
    let stored: Vec<u8> = sqlx::query_scalar("select token_hash from api_token").fetch_one(&app.db).await.unwrap();
    assert_eq!(stored, aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes()).as_ref());

    // And the token works as a bearer credential.
    let me = app.get("/api/v1/me", Some(&secret)).await.assert_status(StatusCode::OK).json();
    assert_eq!(me["username"], "ulrich");
    assert_eq!(me["credential"], "api-token");
    assert_eq!(app.audit_actions().await, vec!["token.create"]);
}

#[tokio::test]
async fn revoked_token_is_refused_on_the_very_next_request() {
    let app = TestApp::new().await;
    let jwt = app.token("rita", &[Role::Researcher]);
    let created = create(&app, &jwt, json!({ "name": "script" })).await;
    let secret = created["token"].as_str().unwrap();
    app.get("/api/v1/me", Some(secret)).await.assert_status(StatusCode::OK);

    app.delete(&format!("/api/v1/tokens/{}", created["id"].as_str().unwrap()), Some(&jwt))
        .await
        .assert_status(StatusCode::NO_CONTENT);
    let message = app.get("/api/v1/me", Some(secret)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "API token has been revoked");

    let listed = app.get("/api/v1/tokens", Some(&jwt)).await.json();
    assert_eq!(listed["tokens"][0]["state"], "revoked");
    assert_eq!(app.audit_actions().await, vec!["token.create", "token.revoke"]);
}

#[tokio::test]
async fn expired_token_is_refused() {
    let app = TestApp::new().await;
    let jwt = app.token("rita", &[Role::Researcher]);
    let created = create(&app, &jwt, json!({ "name": "short-lived", "expires_in_days": 1 })).await;
    let secret = created["token"].as_str().unwrap();
    app.get("/api/v1/me", Some(secret)).await.assert_status(StatusCode::OK);

    // Time passes: the token's expiry moves into the past.
    sqlx::query("update api_token set expires_at = now() - interval '1 second'").execute(&app.db).await.unwrap();
    let message = app.get("/api/v1/me", Some(secret)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "API token has expired");
}

#[tokio::test]
async fn unknown_token_is_refused() {
    let app = TestApp::new().await;
    let message = app
        .get("/api/v1/me", Some("cst_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(message, "unknown API token");
}

#[tokio::test]
async fn token_roles_are_a_subset_of_the_callers_and_limit_what_it_can_do() {
    let app = TestApp::new().await;
    let jwt = app.token("alice", &[Role::Admin, Role::Steward]);
    let message = app
        .post_json("/api/v1/tokens", Some(&jwt), &json!({ "name": "x", "roles": ["uploader"] }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("uploader"), "{message}");

    let steward_only = create(&app, &jwt, json!({ "name": "audit reader", "roles": ["steward"] })).await;
    let secret = steward_only["token"].as_str().unwrap();
    app.get("/api/v1/audit", Some(secret)).await.assert_status(StatusCode::OK);
    app.post_json("/api/v1/sites", Some(secret), &json!({ "code": "x", "name": "X" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn an_api_token_cannot_mint_further_tokens() {
    let app = TestApp::new().await;
    let jwt = app.token("rita", &[Role::Researcher]);
    let secret = create(&app, &jwt, json!({ "name": "cli" })).await["token"].as_str().unwrap().to_owned();
    app.post_json("/api/v1/tokens", Some(&secret), &json!({ "name": "child" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn token_requests_with_bad_values_are_rejected_and_nothing_is_stored() {
    let app = TestApp::new().await;
    let jwt = app.token("rita", &[Role::Researcher]);
    for (body, needle) in [
        (json!({ "name": "" }), "name"),
        (json!({ "name": "x", "expires_in_days": 0 }), "expires_in_days"),
        (json!({ "name": "x", "expires_in_days": 5000 }), "expires_in_days"),
    ] {
        let message = app
            .post_json("/api/v1/tokens", Some(&jwt), &body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad-request");
        assert!(message.contains(needle), "{message}");
    }
    let message = app
        .post_json("/api/v1/tokens", Some(&jwt), &json!({ "name": "x", "roles": ["superuser"] }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    assert!(message.contains("superuser"), "{message}");
    let count: i64 = sqlx::query_scalar("select count(*) from api_token").fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 0);
    assert!(app.audit_actions().await.is_empty());
}

#[tokio::test]
async fn other_peoples_tokens_cannot_be_revoked_but_admins_can() {
    let app = TestApp::new().await;
    let rita = app.token("rita", &[Role::Researcher]);
    let id = create(&app, &rita, json!({ "name": "cli" })).await["id"].as_str().unwrap().to_owned();

    let ulrich = app.token("ulrich", &[Role::Uploader]);
    app.delete(&format!("/api/v1/tokens/{id}"), Some(&ulrich)).await.assert_error(StatusCode::NOT_FOUND, "not-found");

    let alice = app.token("alice", &[Role::Admin]);
    app.delete(&format!("/api/v1/tokens/{id}"), Some(&alice)).await.assert_status(StatusCode::NO_CONTENT);
    // Revoking twice changes nothing and records nothing new.
    app.delete(&format!("/api/v1/tokens/{id}"), Some(&alice)).await.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(app.audit_actions().await, vec!["token.create", "token.revoke"]);
}
