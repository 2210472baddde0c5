//! Hostile input gets a clear 4xx and changes nothing.

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_nul_character_anywhere_in_a_request_is_a_400_that_names_where_and_stores_nothing() {
    let app = TestApp::new().await;
    let rita = app.token("rita", &[Role::Researcher]);
    let steward = app.token("stella", &[Role::Steward]);
    let projects = || async { app.get("/api/v1/projects", Some(&rita)).await.json()["projects"].clone() };
    let profile = json!({"name": "Rita", "institution": "Bonn", "email": "rita@example.org", "position": "PI"});
    app.put_json("/api/v1/me/profile", Some(&rita), &profile).await.assert_status(StatusCode::CREATED);
    let with_nul = json!({"name": "Ri\u{0}ta", "institution": "Bonn", "email": "rita@example.org", "position": "PI"});
    app.put_json("/api/v1/me/profile", Some(&rita), &with_nul)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    assert_eq!(app.get("/api/v1/me/profile", Some(&rita)).await.json()["name"], "Rita");
    let before = projects().await;

    let nul_title = json!({"title": "Tumour\u{0}growth"});
    app.post_json("/api/v1/projects", Some(&rita), &nul_title)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    let nested = json!({"criteria": {"or": [{"field": "site", "in": ["A\u{0}"]}]}});
    app.post_json("/api/v1/discovery/count", Some(&rita), &nested)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    app.get("/api/v1/audit?actor=rita%00", Some(&steward)).await.assert_error(StatusCode::BAD_REQUEST, "invalid-query");
    app.get("/api/v1/cohorts/default%00", Some(&rita)).await.assert_error(StatusCode::BAD_REQUEST, "invalid-path");
    let message = app.post_json("/api/v1/projects", Some(&rita), &nul_title).await.json()["message"].clone();
    assert!(message.as_str().unwrap().contains("NUL"), "{message}");
    assert_eq!(projects().await, before, "nothing was created");

    // A backslash followed by the text `u0000` is an ordinary title.
    let literal = json!({"title": "Escapes \\u0000 in titles"});
    let created = app.post_json("/api/v1/projects", Some(&rita), &literal).await;
    assert_eq!(created.assert_status(StatusCode::CREATED).json()["title"], "Escapes \\u0000 in titles");
}
