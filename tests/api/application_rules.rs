//! Application rules that fail closed: a stored draft, transition or consent
//! terms that cannot be read refuse every action that needs them with a 500
//! and a log line naming what could not be read, and change nothing.

use axum::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::access::{World, cohort, content, project, world};
use crate::helpers::captured_logs;

/// A project of the PI with a draft application on `brain-mri`: the project and application ids.
async fn draft(w: &World) -> (String, String) {
    cohort(w, "brain-mri", "registered", json!({"permission": "HMB"}), false).await;
    let project = project(w).await;
    let id = crate::access::application(w, &project, &content(&["brain-mri"], "HMB")).await;
    (project, id)
}

async fn stored_state(w: &World, id: &str) -> String {
    sqlx::query_scalar("select state from application where application_id = $1")
        .bind(Uuid::parse_str(id).unwrap())
        .fetch_one(&w.app.db)
        .await
        .unwrap()
}

/// Writes what the service never would: `sql` with `$1` the application id.
async fn tamper(w: &World, sql: &'static str, id: &str) {
    sqlx::query(sql).bind(Uuid::parse_str(id).unwrap()).execute(&w.app.db).await.unwrap();
}

fn logged(line: &str) -> bool {
    String::from_utf8_lossy(&captured_logs()).contains(line)
}

#[tokio::test]
async fn a_stored_draft_that_cannot_be_read_refuses_every_action_and_changes_nothing() {
    let w = world().await;
    let (project, id) = draft(&w).await;
    tamper(&w, "update application set draft = jsonb_set(draft, '{title}', '42') where application_id = $1", &id).await;
    let a = format!("/api/v1/applications/{id}");
    let list = format!("/api/v1/projects/{project}/applications");
    for path in [a.clone(), format!("{a}/check"), list] {
        w.app.get(&path, Some(&w.pi)).await.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    }
    for action in ["submit", "withdraw"] {
        let path = format!("{a}/{action}");
        let refused = w.app.post_json(&path, Some(&w.pi), &json!({})).await;
        refused.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    }
    let edit = json!({ "content": content(&["brain-mri"], "HMB") });
    w.app.put_json(&a, Some(&w.pi), &edit).await.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(stored_state(&w, &id).await, "draft");
    assert!(logged("a stored application cannot be read"), "no log line names the unreadable draft");
    assert!(logged(&id), "the log line names the application");
}

#[tokio::test]
async fn a_recorded_state_that_is_not_a_state_refuses_instead_of_being_skipped() {
    let w = world().await;
    let (_, id) = draft(&w).await;
    let sql = "insert into application_transition (application_id, from_state, to_state, actor)
               values ($1, 'draft', 'limbo', 'x')";
    tamper(&w, sql, &id).await;
    let a = format!("/api/v1/applications/{id}");
    w.app.get(&a, Some(&w.pi)).await.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(logged("a stored application transition cannot be read"));
}

#[tokio::test]
async fn consent_terms_that_cannot_be_read_refuse_the_check_and_the_submission() {
    let w = world().await;
    let (_, id) = draft(&w).await;
    let sql = "update cohort set consent_terms = '{\"permission\": \"nonsense\"}'
               where slug in (select jsonb_array_elements_text(draft -> 'scope' -> 'cohorts')
                              from application where application_id = $1)";
    tamper(&w, sql, &id).await;
    let a = format!("/api/v1/applications/{id}");
    w.app.get(&format!("{a}/check"), Some(&w.pi)).await.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    let submit = w.app.post_json(&format!("{a}/submit"), Some(&w.pi), &json!({})).await;
    submit.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(stored_state(&w, &id).await, "draft");
    assert!(logged("a cohort's consent terms cannot be read"));
}
