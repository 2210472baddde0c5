//! The committee's and the withdrawals' rules live in their service functions:
//! called directly, without HTTP, they refuse whoever may not act; and a
//! vote's stored conditions that cannot be read refuse instead of counting as
//! no conditions.

use axum::http::StatusCode;
use custodian::access::review::{self, Ballot, NewComment, VoteKind};
use custodian::access::withdrawal::{self, Named, Scope};
use custodian::auth::{Credential, Principal, Role};
use custodian::error::ApiError;
use serde_json::json;
use uuid::Uuid;

use crate::access::{World, cohort, declare_and_vote, state, submitted, world};
use crate::helpers::captured_logs;

fn caller(username: &str, roles: &[Role]) -> Principal {
    Principal { username: username.to_owned(), roles: roles.to_vec(), credential: Credential::Jwt }
}

/// A controlled cohort's application under review by Sam, with Sue assigned too.
async fn under_review(w: &World) -> String {
    cohort(w, "brain-mri", "controlled", json!({"permission": "HMB"}), false).await;
    let (_, id) = submitted(w, &["brain-mri"]).await;
    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    w.app
        .post_json(&format!("/api/v1/applications/{id}/assignments"), Some(&w.sam), &json!({"steward": "sue"}))
        .await
        .assert_status(StatusCode::OK);
    id
}

#[tokio::test]
async fn unreadable_vote_conditions_refuse_the_listing_and_the_decision_instead_of_counting_as_none() {
    let w = world().await;
    let id = under_review(&w).await;
    let conditions = json!({"text": ["Acknowledge the registry."], "annual_report": true});
    declare_and_vote(&w, &w.sam, &id, json!({"vote": "approve_with_conditions", "conditions": conditions}))
        .await
        .assert_status(StatusCode::CREATED);
    // The stored conditions become something no version of them could be.
    sqlx::query("update review_vote set conditions = '{\"annual_report\": \"maybe\"}'::jsonb")
        .execute(&w.app.db)
        .await
        .unwrap();

    let votes = format!("/api/v1/applications/{id}/votes");
    w.app.get(&votes, Some(&w.sam)).await.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    // Sue's approval reaches the quorum: the decision needs every approval's conditions.
    declare_and_vote(&w, &w.sue, &id, json!({"vote": "approve"}))
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(state(&w, &id).await["state"], "under_review", "no approval without the conditions");
    let recorded: i64 = sqlx::query_scalar("select count(*) from review_vote").fetch_one(&w.app.db).await.unwrap();
    assert_eq!(recorded, 1, "the refused vote was not kept either");
    let grants: i64 = sqlx::query_scalar("select count(*) from access_grant").fetch_one(&w.app.db).await.unwrap();
    assert_eq!(grants, 0);
    let logs = String::from_utf8_lossy(&captured_logs()).into_owned();
    assert!(logs.contains("a vote's conditions cannot be read"), "the refusal is logged");
}

#[tokio::test]
async fn the_committee_rules_hold_for_callers_that_are_not_http_handlers() {
    let w = world().await;
    let id = under_review(&w).await;
    let app: Uuid = id.parse().unwrap();
    let (config, key) = (&w.app.state.config.access, &w.app.state.ingest.key);
    let rita = caller("rita", &[Role::Researcher]);
    let mallory = caller("mallory", &[Role::Researcher]);
    let sue = caller("sue", &[Role::Steward]);
    let mut conn = w.app.db.acquire().await.unwrap();

    // Reviewing is for stewards, whoever calls.
    assert!(matches!(review::queue(&mut conn, &rita).await, Err(ApiError::Forbidden(_))));
    let mut tx = w.app.db.begin().await.unwrap();
    let approve = Ballot { vote: VoteKind::Approve, conditions: None, comment: None };
    let refused = review::vote(&mut tx, &rita, config, key, app, approve.clone()).await;
    assert!(matches!(refused, Err(ApiError::Forbidden(_))));
    assert!(matches!(review::assign(&mut tx, &rita, config, app, "rita").await, Err(ApiError::Forbidden(_))));
    assert!(matches!(review::declare(&mut tx, &rita, app, false, "None.").await, Err(ApiError::Forbidden(_))));
    drop(tx);
    // The applicant sees no votes while the committee is deciding; a stranger not even the application.
    assert!(matches!(review::votes(&mut conn, &rita, app).await, Err(ApiError::Forbidden(_))));
    assert!(matches!(review::votes(&mut conn, &mallory, app).await, Err(ApiError::NotFound("application"))));
    assert!(matches!(review::comments(&mut conn, &mallory, app).await, Err(ApiError::NotFound("application"))));
    let internal = NewComment { body: "Between us.", parent_id: None, internal: true };
    let mut tx = w.app.db.begin().await.unwrap();
    assert!(matches!(review::comment(&mut tx, &rita, app, internal).await, Err(ApiError::Forbidden(_))));
    drop(tx);

    // A steward's vote through the service, committed by its caller: the votes so far.
    let mut tx = w.app.db.begin().await.unwrap();
    let assignments = review::declare(&mut tx, &sue, app, false, " No competing interests. ").await.unwrap();
    assert!(assignments.iter().any(|a| a.steward == "sue" && a.declared));
    let votes = review::vote(&mut tx, &sue, config, key, app, approve).await.unwrap();
    assert_eq!(votes.iter().map(|v| (v.steward.as_str(), v.vote.as_str())).collect::<Vec<_>>(), [("sue", "approve")]);
    tx.commit().await.unwrap();
    assert_eq!(state(&w, &id).await["state"], "under_review", "a controlled cohort needs two approvals");
    let queue = review::queue(&mut conn, &sue).await.unwrap();
    assert_eq!(queue.iter().find(|i| i.application_id == app).map(|i| i.votes), Some(1));

    // Withdrawals and their notices: stewards withdraw and list every notice.
    assert!(matches!(withdrawal::open_notices(&mut conn, &rita, false).await, Err(ApiError::Forbidden(_))));
    let mut tx = w.app.db.begin().await.unwrap();
    let named = Named { pseudonym: Some("sub-none"), site: None, patient_id: None, issuer: None };
    let refused = withdrawal::withdraw_subject(&mut tx, &rita, key, named, Scope::Full).await;
    assert!(matches!(refused, Err(ApiError::Forbidden(_))));
    let both = Named { pseudonym: Some("sub-none"), site: Some("local"), patient_id: Some("HOSP-1"), issuer: None };
    let refused = withdrawal::withdraw_subject(&mut tx, &sue, key, both, Scope::Full).await;
    assert!(matches!(refused, Err(ApiError::BadRequest(_))));
    let refused = withdrawal::withdraw_subject(&mut tx, &sue, key, named, Scope::Imaging).await;
    assert!(matches!(refused, Err(ApiError::NotFound("subject"))));
    let missing = withdrawal::acknowledge(&mut tx, &sue, Uuid::new_v4()).await;
    assert!(matches!(missing, Err(ApiError::NotFound("notice"))));
}
