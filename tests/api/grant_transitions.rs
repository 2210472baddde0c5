//! Every change of a grant goes through one transition: refused from a state
//! that does not allow it, with nothing written, and refused (not guessed at)
//! when the version in force cannot be read.

use axum::http::StatusCode;
use serde_json::json;

use crate::access::{active_grant, exact_count, world};

async fn versions(w: &crate::access::World, grant: &str) -> i64 {
    sqlx::query_scalar("select count(*) from access_grant where grant_id = $1::uuid")
        .bind(grant)
        .fetch_one(&w.app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_change_the_grants_state_does_not_allow_is_refused_with_why_and_writes_nothing() {
    let w = world().await;
    let (_project, grant) = active_grant(&w).await;
    let path = format!("/api/v1/grants/{grant}/state");
    let change = |action: &str| json!({"action": action, "reason": "the ethics approval lapsed"});
    let before = versions(&w, &grant).await;
    let refused = w.app.post_json(&path, Some(&w.sam), &change("reinstate")).await;
    assert_eq!(refused.assert_error(StatusCode::CONFLICT, "conflict"), "a grant that is active cannot be reinstated");
    assert_eq!(versions(&w, &grant).await, before);
    let revoked = w.app.post_json(&path, Some(&w.sam), &change("revoke")).await.json();
    assert_eq!((revoked["state"].as_str(), revoked["version"].as_i64()), (Some("revoked"), Some(before + 1)));
    assert_eq!(revoked["reason"], "the ethics approval lapsed");
    for (action, done) in [("suspend", "suspended"), ("reinstate", "reinstated"), ("revoke", "revoked")] {
        let refused = w.app.post_json(&path, Some(&w.sam), &change(action)).await;
        assert_eq!(
            refused.assert_error(StatusCode::CONFLICT, "conflict"),
            format!("a grant that is revoked cannot be {done}")
        );
    }
    assert_eq!(versions(&w, &grant).await, before + 1);
    // What the steward's call answered is the version in force.
    let history = w.app.get(&format!("/api/v1/grants/{grant}"), Some(&w.pi)).await.json();
    assert_eq!(history.as_array().unwrap().last().unwrap(), &revoked);
}

#[tokio::test]
async fn a_grant_whose_stored_scope_cannot_be_read_refuses_every_use_and_change_instead_of_reading_it_as_empty() {
    let w = world().await;
    let (project, grant) = active_grant(&w).await;
    // A version whose scope no longer reads as a scope (versions are append-only: a new one is in force).
    sqlx::query(
        "insert into access_grant (grant_id, version, project_id, application_id, state, scope, conditions,
                                   not_before, not_after, reason, created_by)
         select grant_id, version + 1, project_id, application_id, state, '{\"cohorts\": \"chest-ct\"}', conditions,
                not_before, not_after, 'damaged', 'test'
         from access_grant where grant_id = $1::uuid order by version desc limit 1",
    )
    .bind(&grant)
    .execute(&w.app.db)
    .await
    .unwrap();
    let before = versions(&w, &grant).await;
    w.app
        .get(&format!("/api/v1/grants/{grant}"), Some(&w.pi))
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    let suspend = json!({"action": "suspend", "reason": "an incident"});
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/state"), Some(&w.sam), &suspend)
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    let renew = json!({"months": 6, "progress_report": "Halfway there."});
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &renew)
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    exact_count(&w, &project, "chest-ct").await.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    let close = json!({"deletion_attestation": "Every copy is deleted."});
    w.app
        .post_json(&format!("/api/v1/projects/{project}/close"), Some(&w.pi), &close)
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(versions(&w, &grant).await, before, "nothing was written");
    let closed: bool = sqlx::query_scalar("select closed_at is not null from project where project_id = $1::uuid")
        .bind(&project)
        .fetch_one(&w.app.db)
        .await
        .unwrap();
    assert!(!closed, "the closure was rolled back");
}

#[tokio::test]
async fn a_renewal_decided_after_its_grant_was_revoked_does_not_bring_the_grant_back() {
    let w = world().await;
    let (project, grant) = active_grant(&w).await;
    let ask = json!({"months": 12, "progress_report": "Year one: cohort curated, baseline model done."});
    let renewal = w.app.post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &ask).await;
    let renewal = renewal.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned();
    let revoke = json!({"action": "revoke", "reason": "the ethics approval lapsed"});
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/state"), Some(&w.sam), &revoke)
        .await
        .assert_status(StatusCode::OK);
    let before = versions(&w, &grant).await;

    let decision = json!({"approve": true, "reason": "Good progress."});
    let refused = w.app.post_json(&format!("/api/v1/renewals/{renewal}/decision"), Some(&w.sam), &decision).await;
    assert_eq!(refused.assert_error(StatusCode::CONFLICT, "conflict"), "a grant that is revoked cannot be renewed");
    assert_eq!(versions(&w, &grant).await, before, "no version written");
    let history = w.app.get(&format!("/api/v1/grants/{grant}"), Some(&w.pi)).await.json();
    assert_eq!(history.as_array().unwrap().last().unwrap()["state"], "revoked");
    exact_count(&w, &project, "chest-ct").await.assert_error(StatusCode::FORBIDDEN, "grant-revoked");
    let waiting = w.app.get("/api/v1/renewals", Some(&w.sam)).await.json();
    assert_eq!(waiting[0]["id"], renewal.as_str(), "the renewal still waits, to be rejected");
}
