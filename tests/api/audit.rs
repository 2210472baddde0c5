//! The audit log: one unbroken hash chain, append-only in the database, and
//! tampering found with the sequence number where it happened.

use axum::http::StatusCode;
use custodian::audit::{self, NewEvent};
use custodian::auth::Role;
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::helpers::{TestApp, database_url, superuser_options};

async fn create_cohorts(app: &TestApp, n: usize) {
    let admin = app.token("alice", &[Role::Admin]);
    for i in 0..n {
        app.post_json("/api/v1/cohorts", Some(&admin), &cohort(&format!("c{i}")))
            .await
            .assert_status(StatusCode::CREATED);
    }
}

fn cohort(slug: &str) -> serde_json::Value {
    json!({ "slug": slug, "title": "T", "tier": "controlled", "design": "retrospective", "source": "registry" })
}

async fn verify(app: &TestApp) -> serde_json::Value {
    let steward = app.token("sam", &[Role::Steward]);
    app.get("/api/v1/audit/verify", Some(&steward)).await.assert_status(StatusCode::OK).json()
}

/// Runs statements as the database superuser with the append-only triggers off,
/// as an attacker with full database access would.
async fn tamper(app: &TestApp, sql: &str) {
    let mut conn = PgConnection::connect_with(&superuser_options(&app.db_name)).await.unwrap();
    let script = format!(
        "alter table audit_event disable trigger audit_event_append_only; {sql}; \
         alter table audit_event enable always trigger audit_event_append_only;"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(script)).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn chain_verifies_after_200_concurrent_audited_actions() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let router = app.router.clone();
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let request = axum::http::Request::post("/api/v1/cohorts")
                .header("authorization", format!("Bearer {admin}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(cohort(&format!("concurrent-{i}")).to_string()))
                .unwrap();
            tower::ServiceExt::oneshot(router, request).await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::CREATED);
    }
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], 200);
    assert_eq!(report["head_seq"], 200);
    let seqs: Vec<i64> =
        sqlx::query_scalar("select seq from audit_event order by seq").fetch_all(&app.db).await.unwrap();
    assert_eq!(seqs, (1..=200).collect::<Vec<i64>>(), "one gap-free sequence");
}

#[tokio::test]
async fn database_refuses_to_update_delete_or_truncate_audit_events() {
    let app = TestApp::new().await;
    create_cohorts(&app, 1).await;
    for sql in ["update audit_event set actor = 'mallory'", "delete from audit_event", "truncate audit_event"] {
        let error = sqlx::raw_sql(sql).execute(&app.db).await.unwrap_err().to_string();
        assert!(error.contains("append-only"), "{sql}: {error}");
    }
    assert_eq!(verify(&app).await["ok"], true);
}

#[tokio::test]
async fn changed_event_is_found_by_verify_with_its_sequence_number() {
    let app = TestApp::new().await;
    create_cohorts(&app, 5).await;
    tamper(&app, "update audit_event set details = '{\"tier\": \"open\"}' where seq = 3").await;
    let report = verify(&app).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_seq"], 3);
    assert_eq!(report["events_checked"], 2);
}

#[tokio::test]
async fn deleted_event_is_found_by_verify_with_its_sequence_number() {
    let app = TestApp::new().await;
    create_cohorts(&app, 5).await;
    tamper(&app, "delete from audit_event where seq = 2").await;
    let report = verify(&app).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_seq"], 2);
    assert!(report["problem"].as_str().unwrap().contains("missing"), "{report}");
}

#[tokio::test]
async fn deleting_the_newest_events_is_found_against_the_chain_head() {
    let app = TestApp::new().await;
    create_cohorts(&app, 4).await;
    tamper(&app, "delete from audit_event where seq >= 3").await;
    let report = verify(&app).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_seq"], 3);
}

#[tokio::test]
async fn rewriting_an_event_and_its_successors_hashes_still_breaks_the_link_to_the_head() {
    let app = TestApp::new().await;
    create_cohorts(&app, 3).await;
    // A forger who recomputes the hash of the last event still cannot match the head.
    tamper(&app, "update audit_event set actor = 'mallory', hash = sha256(hash) where seq = 3").await;
    let report = verify(&app).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_seq"], 3);
}

#[tokio::test]
async fn cli_verify_exits_non_zero_and_names_the_first_bad_sequence_number() {
    let app = TestApp::new().await;
    create_cohorts(&app, 4).await;
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_custodian"))
            .args(["audit", "verify"])
            .env("CUSTODIAN_DATABASE__URL", database_url(&app.db_name))
            .env("CUSTODIAN_AUTH__HS256_SECRET", crate::helpers::TEST_SECRET)
            .env("CUSTODIAN_LOG__FILTER", "warn")
            .output()
            .unwrap()
    };
    let intact = run();
    assert!(intact.status.success(), "{}", String::from_utf8_lossy(&intact.stderr));
    assert!(String::from_utf8_lossy(&intact.stdout).contains("intact: 4 events"));

    tamper(&app, "update audit_event set target = 'cohort:other' where seq = 2").await;
    let broken = run();
    assert!(!broken.status.success());
    let stdout = String::from_utf8_lossy(&broken.stdout);
    assert!(stdout.contains("BROKEN at sequence 2"), "{stdout}");
}

#[tokio::test]
async fn failed_action_leaves_no_event() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    app.post_json("/api/v1/cohorts", Some(&admin), &cohort("brain")).await.assert_status(StatusCode::CREATED);
    app.post_json("/api/v1/cohorts", Some(&admin), &cohort("brain"))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(app.audit_actions().await, vec!["cohort.create"]);

    // An event recorded inside a transaction that then rolls back disappears with it.
    let mut tx = app.db.begin().await.unwrap();
    audit::record(&mut tx, NewEvent::new("alice", "cohort.create").target("cohort:ghost")).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(app.audit_actions().await, vec!["cohort.create"]);
    app.post_json("/api/v1/cohorts", Some(&admin), &cohort("heart")).await.assert_status(StatusCode::CREATED);
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["head_seq"], 2);
}

#[tokio::test]
async fn audit_log_is_filtered_by_actor_action_target_and_time_and_paginated() {
    let app = TestApp::new().await;
    let steward = app.token("sam", &[Role::Steward]);
    let admin = app.token("alice", &[Role::Admin]);
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    create_cohorts(&app, 3).await;
    app.post_json("/api/v1/sites", Some(&admin), &json!({ "code": "uhb", "name": "UHB" }))
        .await
        .assert_status(StatusCode::CREATED);
    app.post_json("/api/v1/tokens", Some(&steward), &json!({ "name": "cli" })).await.assert_status(StatusCode::CREATED);

    let get = |query: String| {
        let app = &app;
        let steward = steward.clone();
        async move { app.get(&format!("/api/v1/audit?{query}"), Some(&steward)).await.assert_status(StatusCode::OK).json() }
    };
    assert_eq!(get("actor=sam".into()).await["events"].as_array().unwrap().len(), 1);
    assert_eq!(get("action=cohort.create".into()).await["events"].as_array().unwrap().len(), 3);
    let sites = get("target=site:*".into()).await;
    assert_eq!(sites["events"][0]["target"], "site:uhb");
    assert_eq!(sites["events"].as_array().unwrap().len(), 1);
    assert_eq!(get("target=cohort:c1".into()).await["events"].as_array().unwrap().len(), 1);
    let since = started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(get(format!("since={since}")).await["events"].as_array().unwrap().len(), 5);
    assert_eq!(get("until=2000-01-01T00:00:00Z".into()).await["events"].as_array().unwrap().len(), 0);

    let first = get("limit=2".into()).await;
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    assert_eq!(first["next_after_seq"], 2);
    let second = get("limit=2&after_seq=2".into()).await;
    assert_eq!(second["events"][0]["seq"], 3);
    let last = get("limit=2&after_seq=4".into()).await;
    assert_eq!(last["events"].as_array().unwrap().len(), 1);
    assert!(last["next_after_seq"].is_null());

    // Each event carries its link of the chain.
    assert_eq!(first["events"][1]["prev_hash"], first["events"][0]["hash"]);
}

#[tokio::test]
async fn audit_query_with_bad_parameters_is_rejected() {
    let app = TestApp::new().await;
    let steward = app.token("sam", &[Role::Steward]);
    for query in [
        "limit=0",
        "limit=5000",
        "since=yesterday",
        "after_seq=abc",
        "colour=blue",
        "since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z",
    ] {
        app.get(&format!("/api/v1/audit?{query}"), Some(&steward))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid-query");
    }
}
