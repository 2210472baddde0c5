//! Sites and cohorts: the structure of the registry.

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn fresh_registry_has_the_default_cohort_and_the_local_site() {
    let app = TestApp::new().await;
    let token = app.token("rita", &[Role::Researcher]);
    let cohorts = app.get("/api/v1/cohorts", Some(&token)).await.assert_status(StatusCode::OK).json();
    assert_eq!(cohorts["cohorts"][0]["slug"], "default");
    assert_eq!(cohorts["cohorts"][0]["suppression_threshold"], 10);
    let sites = app.get("/api/v1/sites", Some(&token)).await.assert_status(StatusCode::OK).json();
    assert_eq!(sites["sites"][0]["code"], "local");
}

#[tokio::test]
async fn admin_creates_a_cohort_that_everyone_signed_in_can_read_and_the_act_is_audited() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let body = json!({
        "slug": "brain-mri", "title": "Brain MRI", "description": "Glioma follow-up",
        "tier": "controlled", "design": "prospective", "source": "clinical", "suppression_threshold": 5
    });
    let created = app.post_json("/api/v1/cohorts", Some(&admin), &body).await.assert_status(StatusCode::CREATED).json();
    assert_eq!(created["slug"], "brain-mri");
    assert_eq!(created["suppression_threshold"], 5);

    let reader = app.token("rita", &[Role::Researcher]);
    let found = app.get("/api/v1/cohorts/brain-mri", Some(&reader)).await.assert_status(StatusCode::OK).json();
    assert_eq!(found["title"], "Brain MRI");
    assert_eq!(found["tier"], "controlled");

    let steward = app.token("sam", &[Role::Steward]);
    let events = app.get("/api/v1/audit?action=cohort.create", Some(&steward)).await.json();
    assert_eq!(events["events"][0]["actor"], "alice");
    assert_eq!(events["events"][0]["target"], "cohort:brain-mri");
    assert_eq!(events["events"][0]["details"]["tier"], "controlled");
}

#[tokio::test]
async fn organizers_create_open_cohorts_only_and_others_not_at_all() {
    let app = TestApp::new().await;
    let organizer = app.token("olga", &[Role::Organizer]);
    let open = json!({ "slug": "cxr-challenge", "title": "CXR", "tier": "open", "design": "retrospective", "source": "challenge", "license": "CC-BY-4.0" });
    app.post_json("/api/v1/cohorts", Some(&organizer), &open).await.assert_status(StatusCode::CREATED);
    let mut controlled = open.clone();
    controlled["slug"] = "cxr-private".into();
    controlled["tier"] = "controlled".into();
    app.post_json("/api/v1/cohorts", Some(&organizer), &controlled)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let researcher = app.token("rita", &[Role::Researcher]);
    app.post_json("/api/v1/cohorts", Some(&researcher), &controlled)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn invalid_cohorts_are_rejected_with_the_problem_named() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let base = json!({ "slug": "ok", "title": "T", "tier": "open", "design": "retrospective", "source": "registry" });
    for (field, value, code, needle) in [
        ("slug", json!("Has Spaces"), "bad-request", "slug"),
        ("title", json!("  "), "bad-request", "title"),
        ("suppression_threshold", json!(0), "bad-request", "suppression_threshold"),
        ("tier", json!("secret"), "invalid-body", "tier"),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let message =
            app.post_json("/api/v1/cohorts", Some(&admin), &body).await.assert_error(StatusCode::BAD_REQUEST, code);
        assert!(message.contains(needle), "{field}: {message}");
    }
    let count: i64 = sqlx::query_scalar("select count(*) from cohort").fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 1, "only the default cohort");
}
