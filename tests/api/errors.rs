//! Every error code of the API, each provoked the way a client would meet it.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use custodian::auth::Role;
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::helpers::{TestApp, superuser_options};

fn json_request(method: Method, path: &str, token: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn malformed_json_gets_400_invalid_body() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let response = app.call(json_request(Method::POST, "/api/v1/sites", &admin, "{\"code\": \"x\",")).await;
    response.assert_error(StatusCode::BAD_REQUEST, "invalid-body");
}

#[tokio::test]
async fn unknown_field_gets_400_naming_the_field() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let message = app
        .post_json("/api/v1/sites", Some(&admin), &json!({ "code": "x", "name": "X", "contry": "DE" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    assert!(message.contains("contry"), "{message}");
}

#[tokio::test]
async fn wrong_type_gets_400_invalid_body() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let message = app
        .post_json("/api/v1/sites", Some(&admin), &json!({ "code": 7, "name": "X" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    assert!(message.contains("code"), "{message}");
}

#[tokio::test]
async fn invalid_value_gets_400_bad_request_naming_the_field() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let message = app
        .post_json("/api/v1/sites", Some(&admin), &json!({ "code": "x", "name": "X", "country": "Germany" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(message.contains("country"), "{message}");
}

#[tokio::test]
async fn body_without_json_content_type_gets_415() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let request = Request::post("/api/v1/sites")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .body(Body::from(json!({ "code": "x", "name": "X" }).to_string()))
        .unwrap();
    app.call(request).await.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
}

#[tokio::test]
async fn oversized_body_gets_413_and_changes_nothing() {
    let app = TestApp::with_config(|c| c.http.body_limit_bytes = 4096).await;
    let admin = app.token("alice", &[Role::Admin]);
    let body = json!({ "code": "big", "name": "x".repeat(10_000) }).to_string();
    app.call(json_request(Method::POST, "/api/v1/sites", &admin, body))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    let sites: i64 =
        sqlx::query_scalar("select count(*) from site where code = 'big'").fetch_one(&app.db).await.unwrap();
    assert_eq!(sites, 0);
}

#[tokio::test]
async fn bad_path_parameter_gets_400_invalid_path() {
    let app = TestApp::new().await;
    let token = app.token("rita", &[Role::Researcher]);
    app.delete("/api/v1/tokens/not-a-uuid", Some(&token)).await.assert_error(StatusCode::BAD_REQUEST, "invalid-path");
}

#[tokio::test]
async fn unknown_route_and_unknown_cohort_get_404_not_found() {
    let app = TestApp::new().await;
    let token = app.token("rita", &[Role::Researcher]);
    app.get("/api/v1/nothing-here", Some(&token)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    let message =
        app.get("/api/v1/cohorts/no-such-cohort", Some(&token)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(message, "cohort not found");
}

#[tokio::test]
async fn wrong_method_gets_405() {
    let app = TestApp::new().await;
    let token = app.token("rita", &[Role::Researcher]);
    app.call(json_request(Method::PUT, "/api/v1/cohorts", &token, "{}"))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
}

#[tokio::test]
async fn duplicate_gets_409_conflict() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let site = json!({ "code": "uhb", "name": "UHB" });
    app.post_json("/api/v1/sites", Some(&admin), &site).await.assert_status(StatusCode::CREATED);
    let message =
        app.post_json("/api/v1/sites", Some(&admin), &site).await.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(message.contains("uhb"), "{message}");
}

#[tokio::test]
async fn request_that_outlives_the_timeout_gets_503_timeout_and_leaves_nothing_behind() {
    let app = TestApp::with_config(|c| c.http.request_timeout_secs = 1).await;
    let admin = app.token("alice", &[Role::Admin]);
    // Another session holds the audit chain head, so the audited insert must wait.
    let blocker = app.hold_audit_chain().await;

    let cohort =
        json!({ "slug": "slow", "title": "T", "tier": "open", "design": "prospective", "source": "challenge" });
    app.post_json("/api/v1/cohorts", Some(&admin), &cohort)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "timeout");

    blocker.release().await;
    // An uncommitted insert is invisible too: wait until no session of this
    // database is still inside a transaction, so "rolled back" is what is seen.
    let started = std::time::Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()
               and state in ('active', 'idle in transaction', 'idle in transaction (aborted)')",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "a transaction stays open");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let cohorts: i64 =
        sqlx::query_scalar("select count(*) from cohort where slug = 'slow'").fetch_one(&app.db).await.unwrap();
    assert_eq!(cohorts, 0, "the abandoned transaction was rolled back");
}

#[tokio::test]
async fn unreachable_database_makes_readyz_503_unavailable_while_healthz_stays_up() {
    let app = TestApp::new().await;
    app.get("/readyz", None).await.assert_status(StatusCode::OK);
    app.db.close().await;
    app.get("/readyz", None).await.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    app.get("/healthz", None).await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn internal_failure_gets_500_without_internal_details() {
    let app = TestApp::new().await;
    let token = app.token("rita", &[Role::Researcher]);
    let mut conn = PgConnection::connect_with(&superuser_options(&app.db_name)).await.unwrap();
    sqlx::raw_sql("alter table cohort rename to cohort_moved").execute(&mut conn).await.unwrap();
    let response = app.get("/api/v1/cohorts", Some(&token)).await;
    let message = response.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(message, "internal error");
    assert!(!response.text().contains("relation"), "no database detail leaks");
}
