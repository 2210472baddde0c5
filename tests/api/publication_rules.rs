//! The publication rules live in `access::publications`: only the project's
//! accepted members notify, only for cohorts the project has held under an
//! active grant (a grant approved but never activated does not count; one
//! suspended since still does), never before a cohort's moratorium ends, and a notice fulfils only
//! its own project's open duty, once. Whoever tries to get around them (a
//! member of another project, an invitee, a removed member, a retry, a caller
//! that is not an HTTP handler) is refused and nothing is stored; consent
//! terms that cannot be read refuse the notice instead of counting as none.

use axum::http::StatusCode;
use chrono::{Days, NaiveDate, Utc};
use custodian::access::publications::{self, NewPublication};
use custodian::auth::{Credential, Principal, Role};
use custodian::error::ApiError;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::access::{DUA, World, application, cohort, content, declare_and_vote, project, world};
use crate::helpers::{TestResponse, captured_logs};

fn caller(username: &str, roles: &[Role]) -> Principal {
    Principal { username: username.to_owned(), roles: roles.to_vec(), credential: Credential::Jwt }
}

fn days_ahead(days: u64) -> NaiveDate {
    Utc::now().date_naive().checked_add_days(Days::new(days)).unwrap()
}

/// `brain-mri`, whose consent asks for publications to be notified and holds them until the moratorium ends.
async fn moratorium_cohort(w: &World) -> NaiveDate {
    let until = days_ahead(200);
    let terms = json!({"permission": "GRU", "modifiers": ["PUB", "MOR"], "moratorium_until": until});
    cohort(w, "brain-mri", "registered", terms, false).await;
    until
}

/// A new project of the PI with a grant on `brain-mri`, approved by Sam's
/// vote and, if `activate`, active (the PI accepted the data use agreement).
async fn granted_project(w: &World, activate: bool) -> String {
    let project = project(w).await;
    let id = application(w, &project, &content(&["brain-mri"], "HMB")).await;
    for (path, token) in [("submit", &w.pi), ("review", &w.sam)] {
        w.app
            .post_json(&format!("/api/v1/applications/{id}/{path}"), Some(token), &json!({}))
            .await
            .assert_status(StatusCode::OK);
    }
    declare_and_vote(w, &w.sam, &id, json!({"vote": "approve"})).await.assert_status(StatusCode::CREATED);
    if !activate {
        return project;
    }
    w.app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &json!({"dua_version": DUA}))
        .await
        .assert_status(StatusCode::OK);
    project
}

/// `token` notifies `title`, published on `published_on` from `brain-mri`, in `project`.
async fn notify(w: &World, project: &str, token: &str, title: &str, published_on: NaiveDate) -> TestResponse {
    notify_from(w, project, token, title, published_on, &["brain-mri"]).await
}

/// `token` notifies `title`, published on `published_on` from `cohorts`, in `project`.
async fn notify_from(
    w: &World,
    project: &str,
    token: &str,
    title: &str,
    published_on: NaiveDate,
    cohorts: &[&str],
) -> TestResponse {
    let paper =
        json!({"title": title, "doi": "10.1038/s41591-027-0001-x", "published_on": published_on, "cohorts": cohorts});
    w.app.post_json(&format!("/api/v1/projects/{project}/publications"), Some(token), &paper).await
}

/// The project's duty to notify a publication.
async fn duty(w: &World, project: &str) -> Value {
    let all = w.app.get(&format!("/api/v1/projects/{project}/obligations"), Some(&w.pi)).await.json();
    all.as_array().unwrap().iter().find(|d| d["kind"] == "publication_notice").cloned().expect("a PUB duty")
}

async fn stored(w: &World) -> i64 {
    sqlx::query_scalar("select count(*) from publication").fetch_one(&w.app.db).await.unwrap()
}

/// `user` invited to `project` by its PI and, if `accept`, accepted.
async fn member(w: &World, project: &str, user: &str, accept: bool) -> String {
    let token = w.app.token(user, &[Role::Researcher]);
    w.app
        .post_json(&format!("/api/v1/projects/{project}/members"), Some(&w.pi), &json!({"username": user}))
        .await
        .assert_status(StatusCode::CREATED);
    if accept {
        w.app
            .post_json(&format!("/api/v1/projects/{project}/members/{user}/accept"), Some(&token), &json!({}))
            .await
            .assert_status(StatusCode::OK);
    }
    token
}

#[tokio::test]
async fn nobody_gets_around_membership_the_grant_or_the_moratorium_to_notify_a_publication() {
    let w = world().await;
    let until = moratorium_cohort(&w).await;
    let ours = granted_project(&w, true).await;
    let also_ours = granted_project(&w, true).await;
    let path = format!("/api/v1/projects/{ours}/publications");
    let (early, late) = (until.checked_sub_days(Days::new(1)).unwrap(), until);

    // A member of another project: ours does not exist for her, and her own project holds no grant on the cohort.
    let mallory = w.app.token("mallory", &[Role::Researcher]);
    let profile =
        json!({"name": "Mallory", "institution": "Elsewhere", "email": "m@example.org", "position": "Fellow"});
    w.app.put_json("/api/v1/me/profile", Some(&mallory), &profile).await.assert_status(StatusCode::CREATED);
    let hers = w.app.post_json("/api/v1/projects", Some(&mallory), &json!({"title": "Elsewhere"})).await;
    let hers = hers.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned();
    notify(&w, &ours, &mallory, "Borrowed", late).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    w.app.get(&path, Some(&mallory)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    let refused =
        notify(&w, &hers, &mallory, "Borrowed", late).await.assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(refused.contains("brain-mri"), "another project's grant does not count: {refused}");

    // An invitee sees the project but neither notifies nor reads its publications.
    let ivan = member(&w, &ours, "ivan", false).await;
    notify(&w, &ours, &ivan, "Invited", late).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    w.app.get(&path, Some(&ivan)).await.assert_error(StatusCode::NOT_FOUND, "not-found");

    // A retry of a notice dated before the moratorium ends is refused every time.
    for _ in 0..2 {
        let message = notify(&w, &ours, &w.pi, "Too early", early)
            .await
            .assert_error(StatusCode::FORBIDDEN, "publication-moratorium");
        assert!(message.contains(&until.to_string()), "{message}");
    }
    assert_eq!(stored(&w).await, 0, "refused notices store nothing");
    assert!(duty(&w, &ours).await["fulfilled_at"].is_null());

    // An accepted collaborator notifies (the cohort named twice is stored once) and fulfils the duty.
    let carl = member(&w, &ours, "carl", true).await;
    let notified = notify_from(&w, &ours, &carl, "On time", late, &["brain-mri", "brain-mri"]).await;
    assert_eq!(notified.assert_status(StatusCode::CREATED).json()["cohorts"], json!(["brain-mri"]));
    let fulfilled = duty(&w, &ours).await;
    assert_eq!(fulfilled["fulfilled_by"], "carl");
    // Only our project's duty: the other project of the same PI still owes its notice.
    assert!(duty(&w, &also_ours).await["fulfilled_at"].is_null(), "a notice fulfils only its own project's duty");

    // A second notice is stored but fulfils the duty only once.
    notify(&w, &ours, &w.pi, "Follow-up", late).await.assert_status(StatusCode::CREATED);
    assert_eq!(duty(&w, &ours).await, fulfilled, "the duty keeps its first fulfilment");

    // Once removed, the collaborator is a stranger again.
    w.app
        .delete(&format!("/api/v1/projects/{ours}/members/carl"), Some(&w.pi))
        .await
        .assert_status(StatusCode::NO_CONTENT);
    notify(&w, &ours, &carl, "After leaving", late).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    w.app.get(&path, Some(&carl)).await.assert_error(StatusCode::NOT_FOUND, "not-found");

    // A grant approved but never activated holds nothing yet.
    let pending = granted_project(&w, false).await;
    let refused = notify(&w, &pending, &w.pi, "Before the agreement", late)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(refused.contains("never held a grant on the cohort `brain-mri`"), "{refused}");

    // A grant suspended since was held: what came of it may still be notified.
    let grants = w.app.get(&format!("/api/v1/projects/{also_ours}/grants"), Some(&w.pi)).await.json();
    let grant = grants["grants"][0]["id"].as_str().unwrap().to_owned();
    let suspend = json!({"action": "suspend", "reason": "incident under investigation"});
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/state"), Some(&w.sam), &suspend)
        .await
        .assert_status(StatusCode::OK);
    notify(&w, &also_ours, &w.pi, "While suspended", late).await.assert_status(StatusCode::CREATED);
    assert_eq!(duty(&w, &also_ours).await["fulfilled_by"], "rita");

    let titles: Vec<String> =
        sqlx::query_scalar("select title from publication order by notified_at").fetch_all(&w.app.db).await.unwrap();
    assert_eq!(titles, ["On time", "Follow-up", "While suspended"]);
}

#[tokio::test]
async fn unreadable_consent_terms_refuse_a_notice_instead_of_counting_as_no_moratorium() {
    let w = world().await;
    let until = moratorium_cohort(&w).await;
    let ours = granted_project(&w, true).await;
    // The stored terms become something no version of them could be.
    sqlx::query("update cohort set consent_terms = '{\"permission\": 42}'::jsonb where slug = 'brain-mri'")
        .execute(&w.app.db)
        .await
        .unwrap();

    // Dated before the moratorium ends: without the terms, it would pass.
    let early = until.checked_sub_days(Days::new(1)).unwrap();
    notify(&w, &ours, &w.pi, "Too early", early).await.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(stored(&w).await, 0);
    assert!(duty(&w, &ours).await["fulfilled_at"].is_null());
    let logs = String::from_utf8_lossy(&captured_logs()).into_owned();
    assert!(logs.contains("a cohort's consent terms cannot be read"), "the refusal is logged");
}

#[tokio::test]
async fn the_publication_rules_hold_for_callers_that_are_not_http_handlers() {
    let w = world().await;
    let until = moratorium_cohort(&w).await;
    let ours: Uuid = granted_project(&w, true).await.parse().unwrap();
    member(&w, &ours.to_string(), "ivan", false).await;
    let (rita, mallory, ivan, sam) = (
        caller("rita", &[Role::Researcher]),
        caller("mallory", &[Role::Researcher]),
        caller("ivan", &[Role::Researcher]),
        caller("sam", &[Role::Steward]),
    );
    let notice = |published_on| NewPublication {
        title: "Glioma growth".into(),
        doi: None,
        url: Some("https://example.org/paper".into()),
        venue: None,
        published_on,
        cohorts: vec!["brain-mri".into()],
    };
    let (early, late) = (notice(until.checked_sub_days(Days::new(1)).unwrap()), notice(until));

    let mut tx = w.app.db.begin().await.unwrap();
    let refused = publications::notify(&mut tx, &mallory, ours, &late).await;
    assert!(matches!(refused, Err(ApiError::NotFound("project"))), "{refused:?}");
    let refused = publications::notify(&mut tx, &ivan, ours, &late).await;
    assert!(matches!(refused, Err(ApiError::Forbidden(_))), "{refused:?}");
    let refused = publications::notify(&mut tx, &sam, ours, &late).await;
    assert!(matches!(refused, Err(ApiError::Forbidden(_))), "a steward reads but does not notify: {refused:?}");
    let refused = publications::notify(&mut tx, &rita, ours, &early).await;
    assert!(matches!(refused, Err(ApiError::Refused { .. })), "{refused:?}");
    drop(tx);

    let mut conn = w.app.db.acquire().await.unwrap();
    let hidden = publications::of_project(&mut conn, &mallory, ours).await;
    assert!(matches!(hidden, Err(ApiError::NotFound("project"))), "{hidden:?}");
    let hidden = publications::of_project(&mut conn, &ivan, ours).await;
    assert!(matches!(hidden, Err(ApiError::NotFound("project"))), "{hidden:?}");
    let refused = publications::register(&mut conn, &rita).await;
    assert!(matches!(refused, Err(ApiError::Forbidden(_))), "{refused:?}");

    // Notified through the service and committed by its caller.
    let mut tx = w.app.db.begin().await.unwrap();
    let saved = publications::notify(&mut tx, &rita, ours, &late).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!((saved.project_id, saved.notified_by.as_str()), (ours, "rita"));
    let listed = publications::of_project(&mut conn, &sam, ours).await.unwrap();
    assert_eq!(listed.iter().map(|p| p.id).collect::<Vec<_>>(), [saved.id]);
    assert_eq!(publications::register(&mut conn, &sam).await.unwrap().len(), 1);
}
