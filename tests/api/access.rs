//! Access governance end to end: applications with their consent check,
//! committee review with recusal, declarations, votes and quorum, grants that
//! are checked on the very next request, and the history behind all of it.

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::helpers::TestApp;

pub(crate) const DUA: &str = "custodian-dua-2026-1";

pub(crate) struct World {
    pub app: TestApp,
    pub admin: String,
    pub pi: String,
    pub sam: String,
    pub sue: String,
}

/// Two stewards with profiles at other institutions, and a PI with a profile.
pub(crate) async fn world() -> World {
    world_with(|_| {}).await
}

/// [`world`] on a registry configured by `adjust`.
pub(crate) async fn world_with(adjust: impl FnOnce(&mut custodian::config::Config)) -> World {
    let app = TestApp::with_config(adjust).await;
    let admin = app.token("alice", &[Role::Admin]);
    let pi = app.token("rita", &[Role::Researcher]);
    let sam = app.token("sam", &[Role::Steward]);
    let sue = app.token("sue", &[Role::Steward]);
    for (token, name, institution) in [
        (&pi, "Rita Rossi", "University of Bologna"),
        (&sam, "Sam Stone", "Registry office"),
        (&sue, "Sue Sun", "Ethics board"),
    ] {
        let profile =
            json!({"name": name, "institution": institution, "email": "person@example.org", "position": "Professor"});
        app.put_json("/api/v1/me/profile", Some(token), &profile).await.assert_status(StatusCode::CREATED);
    }
    // The PI's bona fides, verified by a steward: needed to submit and to reach data.
    app.post_json("/api/v1/profiles/rita/verify", Some(&sam), &json!({})).await.assert_status(StatusCode::OK);
    World { app, admin, pi, sam, sue }
}

pub(crate) async fn cohort(w: &World, slug: &str, tier: &str, terms: Value, auto_approve: bool) {
    let body = json!({"slug": slug, "title": slug, "tier": tier, "design": "retrospective", "source": "registry"});
    w.app.post_json("/api/v1/cohorts", Some(&w.admin), &body).await.assert_status(StatusCode::CREATED);
    w.app
        .put_json(
            &format!("/api/v1/cohorts/{slug}/consent"),
            Some(&w.sam),
            &json!({"terms": terms, "auto_approve": auto_approve}),
        )
        .await
        .assert_status(StatusCode::OK);
}

pub(crate) fn content(cohorts: &[&str], purpose: &str) -> Value {
    json!({
        "title": "Glioma growth models",
        "lay_summary": "We study how brain tumours grow, to plan treatment better.",
        "rationale": "Growth models need longitudinal MRI from several scanners.",
        "methods": "Segmentation, then mixed-effects growth models.",
        "scope": {"cohorts": cohorts, "fields": ["age_at_study", "sex"], "modalities": ["MR"], "imaging": true},
        "intended_use": {"purpose": purpose, "duration_months": 24, "ethics_approval": "REC 24/NW/0001", "processing_countries": ["IT"]},
        "data_security": "University HPC, ISO 27001 certified, no copies outside it.",
        "public_interest": "Better radiotherapy planning for glioma patients."
    })
}

pub(crate) async fn project(w: &World) -> String {
    let project = w.app.post_json("/api/v1/projects", Some(&w.pi), &json!({"title": "Glioma growth"})).await;
    project.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn application(w: &World, project: &str, content: &Value) -> String {
    let created = w
        .app
        .post_json(&format!("/api/v1/projects/{project}/applications"), Some(&w.pi), &json!({ "content": content }))
        .await;
    created.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned()
}

/// A new project of the PI with an application on `cohorts`, submitted: the project and application ids.
pub(crate) async fn submitted(w: &World, cohorts: &[&str]) -> (String, String) {
    let project = project(w).await;
    let id = application(w, &project, &content(cohorts, "HMB")).await;
    w.app
        .post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    (project, id)
}

pub(crate) async fn state(w: &World, id: &str) -> Value {
    w.app.get(&format!("/api/v1/applications/{id}"), Some(&w.pi)).await.assert_status(StatusCode::OK).json()
}

pub(crate) async fn declare_and_vote(w: &World, token: &str, id: &str, vote: Value) -> crate::helpers::TestResponse {
    let declaration = json!({"conflict": false, "statement": "No competing interests."});
    let path = format!("/api/v1/applications/{id}/declarations");
    w.app.post_json(&path, Some(token), &declaration).await.assert_status(StatusCode::CREATED);
    w.app.post_json(&format!("/api/v1/applications/{id}/votes"), Some(token), &vote).await
}

/// A subject table imported by an uploader into `cohort` at site `local`.
pub(crate) async fn import_subjects(w: &World, cohort: &str, csv: &str) -> crate::helpers::TestResponse {
    let uploader = w.app.token("ulrich", &[Role::Uploader]);
    let request = axum::http::Request::post(format!("/api/v1/imports/subjects?cohort={cohort}&site=local"))
        .header("authorization", format!("Bearer {uploader}"))
        .header("content-type", "text/csv")
        .body(axum::body::Body::from(csv.to_owned()))
        .unwrap();
    w.app.call(request).await
}

pub(crate) async fn exact_count(w: &World, project: &str, cohort: &str) -> crate::helpers::TestResponse {
    let body = json!({"project": project, "criteria": {"field": "cohort", "in": [cohort]}});
    w.app.post_json("/api/v1/discovery/count", Some(&w.pi), &body).await
}

#[tokio::test]
async fn an_application_becomes_an_active_grant_through_two_votes_and_the_pis_acceptance() {
    let w = world().await;
    cohort(&w, "brain-mri", "controlled", json!({"permission": "HMB", "modifiers": ["IRB"]}), false).await;
    let project = project(&w).await;
    let id = application(&w, &project, &content(&["brain-mri"], "HMB")).await;

    let check = w.app.get(&format!("/api/v1/applications/{id}/check"), Some(&w.pi)).await.json();
    assert_eq!(check["can_submit"], true, "{check}");
    assert_eq!(check["cohorts"][0]["verdict"], "permitted");
    assert!(check["cohorts"][0]["rules"].as_array().unwrap().iter().any(|r| r["code"] == "IRB"));

    let submitted = w.app.post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({})).await.json();
    assert_eq!(submitted["state"], "submitted");
    assert_eq!(submitted["version"], 1);
    assert!(submitted["due_on"].is_string());

    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    w.app
        .post_json(&format!("/api/v1/applications/{id}/assignments"), Some(&w.sam), &json!({"steward": "sue"}))
        .await
        .assert_status(StatusCode::OK);
    // Voting needs a declaration of interests first.
    w.app
        .post_json(&format!("/api/v1/applications/{id}/votes"), Some(&w.sam), &json!({"vote": "approve"}))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let conditions = json!({"text": ["Acknowledge the registry in publications."], "annual_report": true});
    let first = json!({"vote": "approve_with_conditions", "conditions": conditions});
    declare_and_vote(&w, &w.sam, &id, first).await.assert_status(StatusCode::CREATED);
    assert_eq!(state(&w, &id).await["state"], "under_review", "a controlled cohort needs two votes");
    declare_and_vote(&w, &w.sue, &id, json!({"vote": "approve"})).await.assert_status(StatusCode::CREATED);
    assert_eq!(state(&w, &id).await["state"], "approved");

    let grants = w.app.get(&format!("/api/v1/projects/{project}/grants"), Some(&w.pi)).await.json();
    let grant = &grants["grants"][0];
    assert_eq!(grant["state"], "pending");
    assert_eq!(grant["conditions"]["annual_report"], true);
    assert_eq!(grant["scope"]["cohorts"], json!(["brain-mri"]));
    exact_count(&w, &project, "brain-mri").await.assert_error(StatusCode::FORBIDDEN, "grant-pending");

    let wrong = json!({"dua_version": "custodian-dua-2020"});
    w.app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &wrong)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let active = w
        .app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &json!({"dua_version": DUA}))
        .await;
    assert_eq!(active.assert_status(StatusCode::OK).json()["state"], "active");
    let counted = exact_count(&w, &project, "brain-mri").await.assert_status(StatusCode::OK).json();
    assert_eq!(counted["disclosure"]["exact"], true, "within its grant a project sees exact counts");
    assert_eq!(counted["counts"]["subjects"], 0);

    // The project got its own pseudonymization key, sealed.
    let project_id: uuid::Uuid = project.parse().unwrap();
    let key = custodian::access::grants::project_key(&w.app.db, &w.app.state.ingest.key, project_id).await.unwrap();
    assert!(key.is_some_and(|k| k != [0; 32]));
    let stored: Vec<u8> = sqlx::query_scalar("select sealed from project_key").fetch_one(&w.app.db).await.unwrap();
    assert!(!stored.windows(32).any(|w| Some(w) == key.as_ref().map(<[u8; 32]>::as_slice)), "stored sealed, not plain");

    let history: Vec<String> = state(&w, &id).await["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}>{}", t["from"].as_str().unwrap(), t["to"].as_str().unwrap()))
        .collect();
    assert_eq!(history, ["draft>submitted", "submitted>under_review", "under_review>approved", "approved>active"]);
    let actions = w.app.audit_actions().await;
    for action in [
        "application.create",
        "application.submit",
        "review.start",
        "review.assign",
        "review.declare",
        "review.vote",
        "application.approve",
        "application.activate",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action} is audited: {actions:?}");
    }
}

pub(crate) async fn active_grant(w: &World) -> (String, String) {
    cohort(w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    grant_on_chest_ct(w, &content(&["chest-ct"], "HMB")).await
}

/// A new project of the PI with an active grant on the existing cohort
/// `chest-ct` (approved by rule) for `content`: the project and grant ids.
pub(crate) async fn grant_on_chest_ct(w: &World, content: &Value) -> (String, String) {
    let project = project(w).await;
    let id = application(w, &project, content).await;
    let submitted = w.app.post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({})).await.json();
    assert_eq!(submitted["state"], "approved", "approved by rule: {submitted}");
    w.app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &json!({"dua_version": DUA}))
        .await
        .assert_status(StatusCode::OK);
    let grants = w.app.get(&format!("/api/v1/projects/{project}/grants"), Some(&w.pi)).await.json();
    (project, grants["grants"][0]["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_exact_consent_match_on_a_registered_cohort_is_approved_by_rule_and_says_so() {
    let w = world().await;
    let (project, _) = active_grant(&w).await;
    let apps = w.app.get(&format!("/api/v1/projects/{project}/applications"), Some(&w.pi)).await.json();
    let app = &apps["applications"][0];
    assert_eq!(app["decided_by_rule"], true);
    let approval = app["history"].as_array().unwrap().iter().find(|t| t["to"] == "approved").unwrap();
    assert_eq!(approval["actor"], "system:auto-eligibility");
    assert!(approval["reason"].as_str().unwrap().contains("auto-eligibility"));
}

#[tokio::test]
async fn suspension_revocation_and_expiry_take_effect_on_the_very_next_request() {
    let w = world().await;
    let (project, grant) = active_grant(&w).await;
    exact_count(&w, &project, "chest-ct").await.assert_status(StatusCode::OK);

    let change = |action: &str| json!({"action": action, "reason": "annual report overdue"});
    let path = format!("/api/v1/grants/{grant}/state");
    w.app.post_json(&path, Some(&w.pi), &change("suspend")).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    w.app.post_json(&path, Some(&w.sam), &change("suspend")).await.assert_status(StatusCode::OK);
    let refused = exact_count(&w, &project, "chest-ct").await.assert_error(StatusCode::FORBIDDEN, "grant-suspended");
    assert!(refused.contains("annual report overdue"), "{refused}");
    w.app.post_json(&path, Some(&w.sam), &change("reinstate")).await.assert_status(StatusCode::OK);
    exact_count(&w, &project, "chest-ct").await.assert_status(StatusCode::OK);
    w.app.post_json(&path, Some(&w.sam), &change("revoke")).await.assert_status(StatusCode::OK);
    exact_count(&w, &project, "chest-ct").await.assert_error(StatusCode::FORBIDDEN, "grant-revoked");
    w.app.post_json(&path, Some(&w.sam), &change("reinstate")).await.assert_error(StatusCode::CONFLICT, "conflict");

    // Versions are append-only: the history keeps every state with its reason.
    let history = w.app.get(&format!("/api/v1/grants/{grant}"), Some(&w.pi)).await.json();
    let states: Vec<&str> = history.as_array().unwrap().iter().map(|g| g["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["pending", "active", "suspended", "active", "revoked"]);
    let tampered = sqlx::query("update access_grant set state = 'active'").execute(&w.app.db).await;
    assert!(tampered.is_err(), "grant versions cannot be rewritten");
}

#[tokio::test]
async fn an_expired_grant_is_refused_with_its_end_date_and_another_cohort_is_not_granted() {
    let w = world().await;
    let (project, grant) = active_grant(&w).await;
    // Time passes: the version in force ended yesterday.
    sqlx::query(
        "insert into access_grant (grant_id, version, project_id, application_id, state, scope, conditions, not_before,
                                   not_after, created_by)
         select grant_id, version + 1, project_id, application_id, 'active', scope, conditions,
                now() - interval '3 days', now() - interval '1 day', 'test-clock'
         from access_grant where grant_id = $1 order by version desc limit 1",
    )
    .bind(uuid::Uuid::parse_str(&grant).unwrap())
    .execute(&w.app.db)
    .await
    .unwrap();
    let refused = exact_count(&w, &project, "chest-ct").await.assert_error(StatusCode::FORBIDDEN, "grant-expired");
    assert!(refused.contains("renewal"), "{refused}");
    exact_count(&w, &project, "default").await.assert_error(StatusCode::FORBIDDEN, "no-grant");
    // A non-member learns nothing about the project.
    let stranger = w.app.token("mallory", &[Role::Researcher]);
    let body = json!({"project": project, "criteria": {"field": "cohort", "in": ["chest-ct"]}});
    w.app
        .post_json("/api/v1/discovery/count", Some(&stranger), &body)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn a_consent_mismatch_blocks_submission_until_the_applicant_justifies_it() {
    let w = world().await;
    cohort(&w, "diabetes", "controlled", json!({"permission": "DS", "diseases": ["E11"], "modifiers": ["NCU"]}), false)
        .await;
    let project = project(&w).await;
    let mut body = content(&["diabetes"], "HMB");
    body["intended_use"]["commercial"] = json!(true);
    let id = application(&w, &project, &body).await;
    let check = w.app.get(&format!("/api/v1/applications/{id}/check"), Some(&w.pi)).await.json();
    let cohort = &check["cohorts"][0];
    assert_eq!(cohort["verdict"], "not_permitted");
    let failed: Vec<&str> = cohort["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "fail")
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["DS", "NCU"]);
    assert_eq!(check["can_submit"], false);

    let refused = w.app.post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({})).await;
    let problems = refused.json()["problems"].clone();
    refused.assert_error(StatusCode::BAD_REQUEST, "invalid-application");
    assert_eq!(problems[0]["path"], "/justifications/diabetes");
    assert_eq!(problems[0]["code"], "consent-mismatch");
    assert_eq!(state(&w, &id).await["state"], "draft", "a refused submission changes nothing");

    body["justifications"] = json!({"diabetes": "The commercial partner only provides compute; results are public."});
    w.app
        .put_json(&format!("/api/v1/applications/{id}"), Some(&w.pi), &json!({"content": body}))
        .await
        .assert_status(StatusCode::OK);
    let submitted = w.app.post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({})).await;
    assert_eq!(
        submitted.assert_status(StatusCode::OK).json()["state"],
        "submitted",
        "a justified mismatch goes to the committee"
    );
}

#[tokio::test]
async fn requested_changes_come_back_as_a_new_version_with_each_changed_value_shown_before_and_after() {
    let w = world().await;
    cohort(&w, "knee-mri", "registered", json!({"permission": "HMB"}), false).await;
    let project = project(&w).await;
    let mut body = content(&["knee-mri"], "HMB");
    let id = application(&w, &project, &body).await;
    w.app
        .post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    let vote = json!({"vote": "request_changes"});
    let refused = declare_and_vote(&w, &w.sam, &id, vote).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "bad-request");
    let vote = json!({"vote": "request_changes", "comment": "Say how long images are kept."});
    w.app
        .post_json(&format!("/api/v1/applications/{id}/votes"), Some(&w.sam), &vote)
        .await
        .assert_status(StatusCode::CREATED);
    assert_eq!(state(&w, &id).await["state"], "changes_requested");

    body["data_security"] = json!("University HPC; images deleted after 24 months.");
    body["scope"]["modalities"] = json!(["MR", "CT"]);
    w.app
        .put_json(&format!("/api/v1/applications/{id}"), Some(&w.pi), &json!({"content": body}))
        .await
        .assert_status(StatusCode::OK);
    let resubmitted =
        w.app.post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({})).await.json();
    assert_eq!(resubmitted["state"], "under_review");
    assert_eq!(resubmitted["version"], 2);

    let queue = w.app.get("/api/v1/reviews/queue", Some(&w.sue)).await.assert_status(StatusCode::OK).json();
    let item = &queue["items"][0];
    assert_eq!(item["changed_since_previous"], json!(["data_security", "scope"]));
    let old_security = "University HPC, ISO 27001 certified, no copies outside it.";
    let new_security = "University HPC; images deleted after 24 months.";
    let expected = json!([
        {"path": "/data_security", "before": old_security, "after": new_security},
        {"path": "/scope/modalities", "before": ["MR"], "after": ["MR", "CT"]},
    ]);
    assert_eq!(item["changes"], expected, "the queue shows each changed value");
    assert_eq!(
        item["members"],
        json!([{"username": "rita", "role": "pi", "institution": "University of Bologna", "verified": true}]),
        "the committee sees who the members are and whether their bona fides are verified"
    );
    let diff = w.app.get(&format!("/api/v1/applications/{id}/diff"), Some(&w.pi)).await.json();
    assert_eq!((diff["from"].clone(), diff["to"].clone(), diff["changes"].clone()), (json!(1), json!(2), expected));
    let first = w.app.get(&format!("/api/v1/applications/{id}/diff?to=1"), Some(&w.sue)).await.json();
    assert!(
        first["changes"].as_array().unwrap().iter().all(|c| c["before"].is_null()),
        "against nothing, every field of the first version is new: {first}"
    );
    let message = w
        .app
        .get(&format!("/api/v1/applications/{id}/diff?from=2&to=1"), Some(&w.sue))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(message.contains("comes before"), "{message}");
    w.app
        .get(&format!("/api/v1/applications/{id}/diff?to=3"), Some(&w.sue))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert_eq!(item["votes"], 0, "votes on version 1 do not count for version 2");
    assert_eq!(item["overdue"], false);
    let first = w.app.get(&format!("/api/v1/applications/{id}/versions/1"), Some(&w.pi)).await.json();
    assert!(first["content"]["data_security"].as_str().unwrap().starts_with("University HPC, ISO"));
    w.app.get("/api/v1/reviews/queue", Some(&w.pi)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");

    // One rejection decides a registered cohort; it needs a reason and is final.
    let vote = json!({"vote": "reject", "comment": "Out of the cohort's purpose."});
    w.app
        .post_json(&format!("/api/v1/applications/{id}/votes"), Some(&w.sam), &vote)
        .await
        .assert_status(StatusCode::CREATED);
    let rejected = state(&w, &id).await;
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(rejected["history"].as_array().unwrap().last().unwrap()["reason"], "Out of the cohort's purpose.");
    let message = w
        .app
        .post_json(&format!("/api/v1/applications/{id}/withdraw"), Some(&w.pi), &json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "invalid-transition");
    assert!(message.contains("it is final"), "{message}");
}

#[tokio::test]
async fn stewards_who_belong_to_the_project_or_its_institution_recuse() {
    let w = world().await;
    cohort(&w, "knee-mri", "registered", json!({"permission": "HMB"}), false).await;
    let (_, id) = submitted(&w, &["knee-mri"]).await;
    // A steward from the PI's university.
    let colleague = w.app.token("carla", &[Role::Steward]);
    let profile = json!({"name": "Carla", "institution": "university of bologna ", "email": "c@example.org", "position": "Reader"});
    w.app.put_json("/api/v1/me/profile", Some(&colleague), &profile).await.assert_status(StatusCode::CREATED);
    let refused = w
        .app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&colleague), &json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "must-recuse");
    assert!(refused.contains("same institution"), "{refused}");
    assert_eq!(state(&w, &id).await["state"], "submitted", "nothing changed");

    // A steward who declares a competing interest is recused and cannot vote.
    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    let declaration = json!({"conflict": true, "statement": "I co-authored with the PI last year."});
    let assignments =
        w.app.post_json(&format!("/api/v1/applications/{id}/declarations"), Some(&w.sam), &declaration).await.json();
    assert!(assignments[0]["recused_at"].is_string());
    w.app
        .post_json(&format!("/api/v1/applications/{id}/votes"), Some(&w.sam), &json!({"vote": "approve"}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn comments_thread_keep_every_revision_and_internal_ones_stay_with_stewards() {
    let w = world().await;
    cohort(&w, "knee-mri", "registered", json!({"permission": "HMB"}), false).await;
    let project = project(&w).await;
    let id = application(&w, &project, &content(&["knee-mri"], "HMB")).await;
    let path = format!("/api/v1/applications/{id}/comments");
    let question = w.app.post_json(&path, Some(&w.sam), &json!({"body": "Which scanners?"})).await.json();
    let question_id = question[0]["id"].as_str().unwrap().to_owned();
    w.app
        .post_json(&path, Some(&w.sam), &json!({"body": "Looks fine to me.", "internal": true}))
        .await
        .assert_status(StatusCode::CREATED);
    w.app
        .post_json(&path, Some(&w.pi), &json!({"body": "Siemens and GE.", "parent_id": question_id}))
        .await
        .assert_status(StatusCode::CREATED);
    w.app
        .post_json(&path, Some(&w.pi), &json!({"body": "x", "internal": true}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");

    let seen_by_pi = w.app.get(&path, Some(&w.pi)).await.json();
    assert_eq!(seen_by_pi.as_array().unwrap().len(), 2, "the internal comment is hidden: {seen_by_pi}");
    let reply = seen_by_pi.as_array().unwrap().iter().find(|c| c["author"] == "rita").unwrap();
    assert_eq!(reply["parent_id"], question_id.as_str());
    let reply_id = reply["id"].as_str().unwrap();

    w.app
        .patch_json(&format!("/api/v1/comments/{reply_id}"), Some(&w.sam), &json!({"body": "hijack"}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let edited = w
        .app
        .patch_json(&format!("/api/v1/comments/{reply_id}"), Some(&w.pi), &json!({"body": "Siemens, GE and Philips."}))
        .await
        .json();
    let reply = edited.as_array().unwrap().iter().find(|c| c["id"] == reply_id).unwrap();
    assert_eq!(reply["body"], "Siemens, GE and Philips.");
    let texts: Vec<&str> = reply["revisions"].as_array().unwrap().iter().map(|r| r["body"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Siemens and GE.", "Siemens, GE and Philips."]);
    assert_eq!(w.app.get(&path, Some(&w.sam)).await.json().as_array().unwrap().len(), 3);

    let stranger = w.app.token("mallory", &[Role::Researcher]);
    w.app.get(&path, Some(&stranger)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    w.app
        .get(&format!("/api/v1/applications/{id}"), Some(&stranger))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn refused_data_requests_are_audited_once_an_hour_however_often_they_are_retried() {
    let w = world().await;
    let (project, grant) = active_grant(&w).await;
    let suspend = json!({"action": "suspend", "reason": "ethics approval lapsed"});
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/state"), Some(&w.sam), &suspend)
        .await
        .assert_status(StatusCode::OK);
    for _ in 0..5 {
        exact_count(&w, &project, "chest-ct").await.assert_error(StatusCode::FORBIDDEN, "grant-suspended");
    }
    w.app
        .get(&format!("/api/v1/projects/{project}/subjects?cohort=chest-ct"), Some(&w.pi))
        .await
        .assert_error(StatusCode::FORBIDDEN, "grant-suspended");
    let events: Vec<Value> =
        sqlx::query_scalar("select details from audit_event where action = 'access.refused' order by seq")
            .fetch_all(&w.app.db)
            .await
            .unwrap();
    assert_eq!(events.len(), 1, "one event for the hour: {events:?}");
    assert_eq!(events[0]["code"], "grant-suspended");
    assert_eq!(events[0]["request"], "discovery.count");
    let counted: i32 = sqlx::query_scalar("select refusals from access_refusal where code = 'grant-suspended'")
        .fetch_one(&w.app.db)
        .await
        .unwrap();
    assert_eq!(counted, 6, "every refusal is counted");
}

#[tokio::test]
async fn the_audit_keeps_what_each_decision_rested_on() {
    let w = world().await;
    cohort(&w, "brain-mri", "registered", json!({"permission": "HMB"}), false).await;
    let (_, id) = submitted(&w, &["brain-mri"]).await;
    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    let vote = json!({"vote": "reject", "comment": "The lay summary does not describe the risks."});
    declare_and_vote(&w, &w.sam, &id, vote).await.assert_status(StatusCode::CREATED);
    let details = |action: &'static str| {
        let db = w.app.db.clone();
        async move {
            sqlx::query_scalar::<_, Value>(
                "select details from audit_event where action = $1 order by seq desc limit 1",
            )
            .bind(action)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    assert_eq!(details("review.vote").await["comment"], "The lay summary does not describe the risks.");
    assert_eq!(details("application.reject").await["reason"], "The lay summary does not describe the risks.");
}

#[tokio::test]
async fn bona_fides_a_steward_has_not_verified_keep_a_pi_from_submitting_and_a_member_from_data() {
    let w = world().await;
    // Verification cleared: Rita edits her profile.
    let moved = json!({"name": "Rita Rossi", "institution": "University of Padua", "email": "person@example.org", "position": "Professor"});
    w.app.put_json("/api/v1/me/profile", Some(&w.pi), &moved).await.assert_status(StatusCode::OK);
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    let project = project(&w).await;
    let id = application(&w, &project, &content(&["chest-ct"], "HMB")).await;
    let check = w.app.get(&format!("/api/v1/applications/{id}/check"), Some(&w.pi)).await.json();
    assert_eq!(check["can_submit"], false);
    assert!(check["problems"].as_array().unwrap().iter().any(|p| p["code"] == "unverified-profile"), "{check}");
    w.app
        .post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-application");

    // Verified again: the application goes through, and the PI reaches the data.
    w.app.post_json("/api/v1/profiles/rita/verify", Some(&w.sam), &json!({})).await.assert_status(StatusCode::OK);
    let submitted = w.app.post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({})).await;
    assert_eq!(submitted.assert_status(StatusCode::OK).json()["state"], "approved");
    w.app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &json!({"dua_version": DUA}))
        .await
        .assert_status(StatusCode::OK);
    exact_count(&w, &project, "chest-ct").await.assert_status(StatusCode::OK);

    // A collaborator with a profile nobody verified, and one with no profile at all, reach nothing.
    for (user, profile) in [("carl", true), ("cleo", false)] {
        let token = w.app.token(user, &[Role::Researcher]);
        if profile {
            let body =
                json!({"name": "Carl", "institution": "Elsewhere", "email": "carl@example.org", "position": "Postdoc"});
            w.app.put_json("/api/v1/me/profile", Some(&token), &body).await.assert_status(StatusCode::CREATED);
        }
        let invite = w
            .app
            .post_json(&format!("/api/v1/projects/{project}/members"), Some(&w.pi), &json!({"username": user}))
            .await;
        invite.assert_status(StatusCode::CREATED);
        let accept = format!("/api/v1/projects/{project}/members/{user}/accept");
        w.app.post_json(&accept, Some(&token), &json!({})).await.assert_status(StatusCode::OK);
        let body = json!({"project": project, "criteria": {"field": "cohort", "in": ["chest-ct"]}});
        w.app
            .post_json("/api/v1/discovery/count", Some(&token), &body)
            .await
            .assert_error(StatusCode::FORBIDDEN, "unverified-profile");
        w.app
            .get(&format!("/api/v1/projects/{project}/subjects?cohort=chest-ct"), Some(&token))
            .await
            .assert_error(StatusCode::FORBIDDEN, "unverified-profile");
    }
}

#[tokio::test]
async fn a_registry_may_turn_the_bona_fides_rule_off() {
    let app = TestApp::with_config(|c| c.access.require_verified_profiles = false).await;
    let pi = app.token("rita", &[Role::Researcher]);
    let profile = json!({"name": "Rita", "institution": "Bologna", "email": "r@example.org", "position": "Professor"});
    app.put_json("/api/v1/me/profile", Some(&pi), &profile).await.assert_status(StatusCode::CREATED);
    let project = app.post_json("/api/v1/projects", Some(&pi), &json!({"title": "T"})).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"content": content(&["default"], "HMB")});
    let id = app.post_json(&format!("/api/v1/projects/{project}/applications"), Some(&pi), &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let check = app.get(&format!("/api/v1/applications/{id}/check"), Some(&pi)).await.json();
    assert!(!check["problems"].as_array().unwrap().iter().any(|p| p["code"] == "unverified-profile"), "{check}");
}

#[tokio::test]
async fn only_stewards_with_a_profile_review_and_an_assignment_can_be_undone_before_a_vote() {
    let w = world().await;
    cohort(&w, "brain-mri", "controlled", json!({"permission": "HMB"}), false).await;
    let (_, id) = submitted(&w, &["brain-mri"]).await;
    // A steward with no profile cannot take it under review: no conflict check could see them.
    let stan = w.app.token("stan", &[Role::Steward]);
    let taken = w.app.post_json(&format!("/api/v1/applications/{id}/review"), Some(&stan), &json!({})).await;
    assert!(taken.assert_error(StatusCode::BAD_REQUEST, "bad-request").contains("no profile"));
    // A researcher with a profile is no reviewer.
    let rex = w.app.token("rex", &[Role::Researcher]);
    let profile = json!({"name": "Rex", "institution": "Elsewhere", "email": "rex@example.org", "position": "Postdoc"});
    w.app.put_json("/api/v1/me/profile", Some(&rex), &profile).await.assert_status(StatusCode::CREATED);
    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    let assign = |who: &str| json!({"steward": who});
    let refused =
        w.app.post_json(&format!("/api/v1/applications/{id}/assignments"), Some(&w.sam), &assign("rex")).await;
    assert!(refused.assert_error(StatusCode::BAD_REQUEST, "bad-request").contains("not a steward"));
    // Sue is assigned, then taken off again; Sam, once he has voted, stays.
    let path = format!("/api/v1/applications/{id}/assignments");
    w.app.post_json(&path, Some(&w.sam), &assign("sue")).await.assert_status(StatusCode::OK);
    w.app.delete(&format!("{path}/sue"), Some(&w.pi)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let left = w.app.delete(&format!("{path}/sue"), Some(&w.sam)).await.assert_status(StatusCode::OK).json();
    assert_eq!(left.as_array().unwrap().iter().map(|a| a["steward"].as_str().unwrap()).collect::<Vec<_>>(), ["sam"]);
    declare_and_vote(&w, &w.sam, &id, json!({"vote": "approve"})).await.assert_status(StatusCode::CREATED);
    w.app.delete(&format!("{path}/sam"), Some(&w.sue)).await.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(w.app.audit_actions().await.iter().any(|a| a == "review.unassign"));
}
