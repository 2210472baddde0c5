//! What comes with a grant: fees settled before it takes effect, duties with
//! due dates that hold the grant when long overdue, renewals with a progress
//! report, closing a project (its key destroyed), and notifications.

use axum::http::StatusCode;
use serde_json::json;

use crate::access::{
    DUA, World, active_grant, application, cohort, content, declare_and_vote, exact_count, grant_on_chest_ct,
    import_subjects, project, state, submitted, world,
};

async fn approved_with_fee(w: &World) -> (String, String) {
    let fee = json!({"tier": "registered", "access_fee": 300_000, "maintenance_fee": 50_000, "currency": "GBP"});
    w.app
        .put_json("/api/v1/fees/registered", Some(&w.sam), &fee)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    w.app.put_json("/api/v1/fees/registered", Some(&w.admin), &fee).await.assert_status(StatusCode::OK);
    cohort(w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    let project = project(w).await;
    let id = application(w, &project, &content(&["chest-ct"], "HMB")).await;
    let submitted = w.app.post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({})).await.json();
    assert_eq!(submitted["state"], "approved");
    (project, id)
}

#[tokio::test]
async fn a_grant_takes_effect_only_once_its_fee_is_paid_or_waived() {
    let w = world().await;
    let (project, id) = approved_with_fee(&w).await;
    let activate = json!({"dua_version": DUA});
    let refused = w
        .app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &activate)
        .await
        .assert_error(StatusCode::FORBIDDEN, "fee-unsettled");
    assert!(refused.contains("3000.00 GBP"), "{refused}");
    let fees = w.app.get(&format!("/api/v1/applications/{id}/fees"), Some(&w.pi)).await.json();
    let fee = fees[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(fees[0]["kind"], "access");
    assert_eq!(fees[0]["amount"], 300_000);

    let waiver = json!({"settlement": "waived", "note": "PhD student"});
    w.app
        .post_json(&format!("/api/v1/fees/{fee}/settlement"), Some(&w.pi), &waiver)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let settled = w.app.post_json(&format!("/api/v1/fees/{fee}/settlement"), Some(&w.sam), &waiver).await.json();
    assert_eq!(settled["settlement"], "waived");
    assert_eq!(settled["settled_by"], "sam");
    w.app
        .post_json(&format!("/api/v1/fees/{fee}/settlement"), Some(&w.sam), &waiver)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    w.app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &activate)
        .await
        .assert_status(StatusCode::OK);
    exact_count(&w, &project, "chest-ct").await.assert_status(StatusCode::OK);
    let settle: serde_json::Value = sqlx::query_scalar("select details from audit_event where action = 'fee.settle'")
        .fetch_one(&w.app.db)
        .await
        .unwrap();
    assert_eq!(settle["note"], "PhD student", "the audit keeps why it was waived");
}

#[tokio::test]
async fn duties_are_scheduled_and_a_long_overdue_one_holds_the_grant_until_fulfilled() {
    let w = world().await;
    let (project, grant) = active_grant(&w).await;
    let duties = w.app.get(&format!("/api/v1/projects/{project}/obligations"), Some(&w.pi)).await.json();
    let kinds: Vec<&str> = duties.as_array().unwrap().iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["progress_report", "deletion_attestation"],
        "a 24-month grant: one annual report, then deletion"
    );

    // Time passes: a report fell due 40 days ago.
    sqlx::query(
        "insert into obligation (grant_id, project_id, kind, due_on) values ($1, $2, 'progress_report', current_date - 40)",
    )
    .bind(uuid::Uuid::parse_str(&grant).unwrap())
    .bind(uuid::Uuid::parse_str(&project).unwrap())
    .execute(&w.app.db)
    .await
    .unwrap();
    let held = exact_count(&w, &project, "chest-ct").await.assert_error(StatusCode::FORBIDDEN, "obligation-overdue");
    assert!(held.contains("progress report"), "{held}");
    let overdue = w.app.get("/api/v1/obligations?overdue=true", Some(&w.sam)).await.json();
    assert_eq!(overdue.as_array().unwrap().len(), 1);
    assert_eq!(overdue[0]["overdue"], true);
    w.app.get("/api/v1/obligations", Some(&w.pi)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");

    let id = overdue[0]["id"].as_str().unwrap();
    let report = json!({"statement": "Segmentation model trained; paper in review."});
    let done = w.app.post_json(&format!("/api/v1/obligations/{id}/fulfil"), Some(&w.pi), &report).await.json();
    assert_eq!(done["overdue"], false);
    exact_count(&w, &project, "chest-ct").await.assert_status(StatusCode::OK);
    w.app
        .post_json(&format!("/api/v1/obligations/{id}/fulfil"), Some(&w.pi), &report)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn a_renewal_with_a_progress_report_extends_the_grant_as_a_new_version() {
    let w = world().await;
    let (project, grant) = active_grant(&w).await;
    let before = w.app.get(&format!("/api/v1/grants/{grant}"), Some(&w.pi)).await.json();
    let end = before.as_array().unwrap().last().unwrap()["not_after"].as_str().unwrap().to_owned();
    let ask = json!({"months": 12, "progress_report": "Year one: cohort curated, baseline model done."});
    let renewal = w.app.post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &ask).await;
    let renewal = renewal.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned();
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &ask)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    // The committee sees what waits, with the progress report, before deciding.
    let waiting = w.app.get("/api/v1/renewals", Some(&w.sam)).await.assert_status(StatusCode::OK).json();
    assert_eq!(waiting[0]["id"], renewal.as_str());
    assert_eq!(waiting[0]["progress_report"], "Year one: cohort curated, baseline model done.");
    assert_eq!(waiting[0]["project_title"], "Glioma growth");
    w.app.get("/api/v1/renewals", Some(&w.pi)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    w.app
        .get("/api/v1/renewals?state=pending", Some(&w.sam))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-query");
    assert_eq!(w.app.get("/api/v1/renewals?state=approved", Some(&w.sam)).await.json(), json!([]));
    let decision = json!({"approve": true, "reason": "Good progress."});
    w.app
        .post_json(&format!("/api/v1/renewals/{renewal}/decision"), Some(&w.pi), &decision)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let decided =
        w.app.post_json(&format!("/api/v1/renewals/{renewal}/decision"), Some(&w.sam), &decision).await.json();
    assert_eq!(decided["state"], "approved");

    let after = w.app.get(&format!("/api/v1/grants/{grant}"), Some(&w.pi)).await.json();
    let versions = after.as_array().unwrap();
    assert_eq!(versions.len(), before.as_array().unwrap().len() + 1, "the old version stays");
    let new_end = versions.last().unwrap()["not_after"].as_str().unwrap();
    let (old, new) =
        (chrono::DateTime::parse_from_rfc3339(&end).unwrap(), chrono::DateTime::parse_from_rfc3339(new_end).unwrap());
    assert!((new - old).num_days() >= 365 && (new - old).num_days() <= 366, "{old} -> {new}");
    let decided: serde_json::Value =
        sqlx::query_scalar("select details from audit_event where action = 'grant.renewal.decide'")
            .fetch_one(&w.app.db)
            .await
            .unwrap();
    assert_eq!(decided["reason"], "Good progress.", "the audit keeps why");
    // The duties of the end move to the new end, and the new period has its report.
    let duties = w.app.get(&format!("/api/v1/projects/{project}/obligations"), Some(&w.pi)).await.json();
    let open = |kind: &str| -> Vec<String> {
        duties
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == kind && d["fulfilled_at"].is_null())
            .map(|d| d["due_on"].as_str().unwrap().to_owned())
            .collect()
    };
    let new_end = chrono::DateTime::parse_from_rfc3339(new_end).unwrap().date_naive();
    assert_eq!(open("deletion_attestation"), [(new_end + chrono::Days::new(30)).to_string()]);
    assert!(open("progress_report").contains(&new_end.to_string()), "{duties}");
}

#[tokio::test]
async fn closing_a_project_closes_its_grants_and_destroys_its_key() {
    let w = world().await;
    let (project, grant) = active_grant(&w).await;
    let project_id: uuid::Uuid = project.parse().unwrap();
    let key = &w.app.state.ingest.key;
    assert!(custodian::access::grants::project_key(&w.app.db, key, project_id).await.unwrap().is_some());

    let ask = json!({"months": 12, "progress_report": "Year one: cohort curated, baseline model done."});
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &ask)
        .await
        .assert_status(StatusCode::CREATED);
    let attest = json!({"deletion_attestation": "All copies deleted from the university HPC on 2028-01-31."});
    w.app
        .post_json(&format!("/api/v1/projects/{project}/close"), Some(&w.sam), &attest)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let closed = w.app.post_json(&format!("/api/v1/projects/{project}/close"), Some(&w.pi), &attest).await.json();
    assert_eq!(closed["grants_closed"], 1);
    assert_eq!(closed["key_destroyed"], true);
    assert!(custodian::access::grants::project_key(&w.app.db, key, project_id).await.unwrap().is_none());
    exact_count(&w, &project, "chest-ct").await.assert_error(StatusCode::FORBIDDEN, "project-closed");
    let history = w.app.get(&format!("/api/v1/grants/{grant}"), Some(&w.pi)).await.json();
    assert_eq!(history.as_array().unwrap().last().unwrap()["state"], "closed");
    let duties = w.app.get(&format!("/api/v1/projects/{project}/obligations"), Some(&w.pi)).await.json();
    let deletion = duties.as_array().unwrap().iter().find(|d| d["kind"] == "deletion_attestation").unwrap();
    assert!(deletion["fulfilled_at"].is_string());
    // Nothing is left open that a closed project could no longer do, and each says why.
    for duty in duties.as_array().unwrap().iter().filter(|d| d["kind"] != "deletion_attestation") {
        assert_eq!(duty["statement"], "no longer applies: the project was closed", "{duty}");
    }
    assert!(duties.as_array().unwrap().iter().all(|d| d["fulfilled_at"].is_string()));
    // The renewal that waited is rejected, with the reason, not left for a decision that would revive the grant.
    assert_eq!(w.app.get("/api/v1/renewals", Some(&w.sam)).await.json(), json!([]));
    let rejected = w.app.get("/api/v1/renewals?state=rejected", Some(&w.sam)).await.json();
    assert_eq!((&rejected[0]["state"], &rejected[0]["reason"]), (&json!("rejected"), &json!("the project was closed")));
    w.app
        .post_json(&format!("/api/v1/projects/{project}/close"), Some(&w.pi), &attest)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn people_are_notified_of_what_they_must_act_on() {
    let w = world().await;
    cohort(&w, "knee-mri", "registered", json!({"permission": "HMB"}), false).await;
    let (_, id) = submitted(&w, &["knee-mri"]).await;
    let stewards = w.app.get("/api/v1/me/notifications", Some(&w.sue)).await.json();
    assert_eq!(stewards[0]["kind"], "application.submitted");
    assert_eq!(stewards[0]["target"], format!("application:{id}"));
    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    let vote = json!({"vote": "request_changes", "comment": "Add a data management plan."});
    crate::access::declare_and_vote(&w, &w.sam, &id, vote).await.assert_status(StatusCode::CREATED);
    let mine = w.app.get("/api/v1/me/notifications", Some(&w.pi)).await.json();
    assert_eq!(mine[0]["kind"], "application.changes_requested");
    assert!(mine.as_array().unwrap().iter().all(|n| n["recipient"] == "rita"), "only the PI's own: {mine}");
    let note = mine[0]["id"].as_str().unwrap();
    w.app
        .post_json(&format!("/api/v1/notifications/{note}/read"), Some(&w.sue), &json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    w.app
        .post_json(&format!("/api/v1/notifications/{note}/read"), Some(&w.pi), &json!({}))
        .await
        .assert_status(StatusCode::NO_CONTENT);
    assert!(w.app.get("/api/v1/me/notifications", Some(&w.pi)).await.json()[0]["read_at"].is_string());
}

#[tokio::test]
async fn a_withdrawal_notifies_exactly_the_projects_that_may_hold_the_subject_under_their_own_pseudonyms() {
    let w = world().await;
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    let csv = "patient_id,sex,birth_year\nHOSP-000417,F,1961\nHOSP-000418,M,1970\n";
    import_subjects(&w, "chest-ct", csv).await.assert_status(StatusCode::CREATED);
    let (holder, _) = grant_on_chest_ct(&w, &content(&["chest-ct"], "HMB")).await;
    // Another project, granted another cohort only.
    let olga = w.app.token("olga", &[custodian::auth::Role::Researcher]);
    let profile = json!({"name": "Olga", "institution": "Tartu", "email": "o@example.org", "position": "PI"});
    w.app.put_json("/api/v1/me/profile", Some(&olga), &profile).await.assert_status(StatusCode::CREATED);
    w.app.post_json("/api/v1/profiles/olga/verify", Some(&w.sam), &json!({})).await.assert_status(StatusCode::OK);
    cohort(&w, "knee-mri", "registered", json!({"permission": "GRU"}), true).await;
    let other = w.app.post_json("/api/v1/projects", Some(&olga), &json!({"title": "Knees"})).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"content": content(&["knee-mri"], "HMB")});
    let app = w.app.post_json(&format!("/api/v1/projects/{other}/applications"), Some(&olga), &body).await.json();
    let app = app["id"].as_str().unwrap();
    w.app
        .post_json(&format!("/api/v1/applications/{app}/submit"), Some(&olga), &json!({}))
        .await
        .assert_status(StatusCode::OK);

    let everyone = json!({"criteria": {"field": "cohort", "in": ["chest-ct"]}});
    let before =
        w.app.post_json("/api/v1/discovery/count", Some(&w.sam), &everyone).await.json()["counts"]["subjects"].clone();
    assert_eq!(before, 2);

    let withdrawal = json!({"site": "local", "patient_id": "HOSP-000417", "scope": "full"});
    w.app
        .post_json("/api/v1/withdrawals", Some(&w.pi), &withdrawal)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let done = w.app.post_json("/api/v1/withdrawals", Some(&w.sam), &withdrawal).await;
    let done = done.assert_status(StatusCode::CREATED).json();
    assert_eq!(done["notices"], 1, "only the project granted chest-ct: {done}");
    w.app
        .post_json("/api/v1/withdrawals", Some(&w.sam), &withdrawal)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let after =
        w.app.post_json("/api/v1/discovery/count", Some(&w.sam), &everyone).await.json()["counts"]["subjects"].clone();
    assert_eq!(after, 1, "the subject left discovery at once");

    let notices = w.app.get(&format!("/api/v1/projects/{holder}/withdrawal-notices"), Some(&w.pi)).await.json();
    assert_eq!(notices.as_array().unwrap().len(), 1);
    let theirs = notices[0]["project_pseudonym"].as_str().unwrap();
    let registry = done["pseudonym"].as_str().unwrap();
    let project_id: uuid::Uuid = holder.parse().unwrap();
    let key =
        custodian::access::grants::project_key(&w.app.db, &w.app.state.ingest.key, project_id).await.unwrap().unwrap();
    assert_eq!(theirs, custodian::deid::pseudonym::project_subject(&key, registry));
    assert_ne!(theirs, registry, "the project sees its own pseudonym, not the registry's");
    let none = w.app.get(&format!("/api/v1/projects/{other}/withdrawal-notices"), Some(&olga)).await.json();
    assert_eq!(none.as_array().unwrap().len(), 0);

    let open = w.app.get("/api/v1/withdrawal-notices?unacknowledged=true", Some(&w.sam)).await.json();
    assert_eq!(open.as_array().unwrap().len(), 1, "stewards see what is not acknowledged");
    let id = notices[0]["id"].as_str().unwrap();
    w.app
        .post_json(&format!("/api/v1/withdrawal-notices/{id}/acknowledge"), Some(&olga), &json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    w.app
        .post_json(&format!("/api/v1/withdrawal-notices/{id}/acknowledge"), Some(&w.pi), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    let open = w.app.get("/api/v1/withdrawal-notices?unacknowledged=true", Some(&w.sam)).await.json();
    assert_eq!(open.as_array().unwrap().len(), 0);
    let stored = w.app.rows_as_text(&["subject", "withdrawal_notice", "audit_event", "notification"]).await;
    assert!(!stored.contains("HOSP-000417"), "the local patient ID was not stored");
}

#[tokio::test]
async fn bad_fees_renewals_and_consent_terms_are_refused_with_a_clear_error_and_change_nothing() {
    let w = world().await;
    let bad_currency = json!({"tier": "controlled", "access_fee": 100, "maintenance_fee": 0, "currency": "euro"});
    let message = w
        .app
        .put_json("/api/v1/fees/controlled", Some(&w.admin), &bad_currency)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(message.contains("ISO 4217"), "{message}");
    let mismatch = json!({"tier": "open", "access_fee": 100, "maintenance_fee": 0, "currency": "EUR"});
    w.app
        .put_json("/api/v1/fees/controlled", Some(&w.admin), &mismatch)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    let fees = w.app.get("/api/v1/fees", Some(&w.pi)).await.json();
    assert!(fees.as_array().unwrap().iter().all(|f| f["access_fee"] == 0), "nothing changed: {fees}");

    let body = json!({"slug": "spine", "title": "Spine", "tier": "controlled", "design": "retrospective", "source": "registry"});
    w.app.post_json("/api/v1/cohorts", Some(&w.admin), &body).await.assert_status(StatusCode::CREATED);
    let terms = json!({"terms": {"permission": "DS", "modifiers": ["MOR"]}});
    let refused = w.app.put_json("/api/v1/cohorts/spine/consent", Some(&w.sam), &terms).await;
    let problems = refused.json()["problems"].clone();
    refused.assert_error(StatusCode::BAD_REQUEST, "invalid-terms");
    assert!(problems.as_array().unwrap().len() >= 2, "a DS without diseases and a MOR without a date: {problems}");
    let unknown = json!({"terms": {"permission": "XYZ"}});
    w.app
        .put_json("/api/v1/cohorts/spine/consent", Some(&w.sam), &unknown)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");

    let (_, grant) = active_grant(&w).await;
    for months in [0, 61] {
        let ask = json!({"months": months, "progress_report": "Progress."});
        w.app
            .post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &ask)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    }
    let empty = json!({"months": 12, "progress_report": "   "});
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &empty)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    let renewals: i64 = sqlx::query_scalar("select count(*) from grant_renewal").fetch_one(&w.app.db).await.unwrap();
    assert_eq!(renewals, 0);
}

#[tokio::test]
async fn a_renewal_past_the_consent_time_limit_is_refused_as_an_application_would_be() {
    let w = world().await;
    // Use limited to 36 months (DUO TS); the application asks for 24.
    cohort(
        &w,
        "chest-ct",
        "registered",
        json!({"permission": "GRU", "modifiers": ["TS"], "time_limit_months": 36}),
        true,
    )
    .await;
    // A time limit is a condition for the committee: one steward approves.
    let (project, id) = submitted(&w, &["chest-ct"]).await;
    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    declare_and_vote(&w, &w.sam, &id, json!({"vote": "approve"})).await.assert_status(StatusCode::CREATED);
    w.app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &json!({"dua_version": DUA}))
        .await
        .assert_status(StatusCode::OK);
    let grants = w.app.get(&format!("/api/v1/projects/{project}/grants"), Some(&w.pi)).await.json();
    let grant = grants["grants"][0]["id"].as_str().unwrap().to_owned();
    let ask = |months: i32| json!({"months": months, "progress_report": "Year one done."});
    let refused = w.app.post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &ask(24)).await;
    let message = refused.assert_error(StatusCode::FORBIDDEN, "consent-time-limit");
    assert!(message.contains("36 months") && message.contains("`chest-ct`"), "{message}");
    // Twelve more months fit exactly; approving them checks again.
    let renewal = w.app.post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &ask(12)).await;
    let renewal = renewal.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned();
    let decision = json!({"approve": true, "reason": "Within the consent."});
    let decided = w.app.post_json(&format!("/api/v1/renewals/{renewal}/decision"), Some(&w.sam), &decision).await;
    assert_eq!(decided.assert_status(StatusCode::OK).json()["state"], "approved");
    // And nothing more after that.
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &ask(1))
        .await
        .assert_error(StatusCode::FORBIDDEN, "consent-time-limit");
}

#[tokio::test]
async fn a_closed_project_takes_no_new_application_withdraws_its_open_ones_and_never_gets_a_key_again() {
    let w = world().await;
    let (project, _) = active_grant(&w).await;
    let draft = application(&w, &project, &content(&["chest-ct"], "HMB")).await;
    let attest = json!({"deletion_attestation": "All copies deleted on 2028-01-31."});
    let closed = w.app.post_json(&format!("/api/v1/projects/{project}/close"), Some(&w.pi), &attest).await.json();
    assert_eq!(closed["applications_withdrawn"], 1);
    assert_eq!(state(&w, &draft).await["state"], "withdrawn");

    let again = w
        .app
        .post_json(
            &format!("/api/v1/projects/{project}/applications"),
            Some(&w.pi),
            &json!({"content": content(&["chest-ct"], "HMB")}),
        )
        .await;
    again.assert_error(StatusCode::FORBIDDEN, "project-closed");
    w.app
        .post_json(&format!("/api/v1/applications/{draft}/submit"), Some(&w.pi), &json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "invalid-transition");
    let mut tx = w.app.db.begin().await.unwrap();
    let key =
        custodian::access::grants::ensure_project_key(&mut tx, &w.app.state.ingest.key, project.parse().unwrap()).await;
    assert!(matches!(
        key,
        Err(custodian::error::ApiError::Refused { code: custodian::error::Refusal::ProjectClosed, .. })
    ));
    drop(tx);
    let events: Vec<serde_json::Value> =
        sqlx::query_scalar("select details from audit_event where action = 'project.close'")
            .fetch_all(&w.app.db)
            .await
            .unwrap();
    assert_eq!(
        events[0]["deletion_attestation_sha256"].as_str().unwrap().len(),
        64,
        "the audit keeps what closure rested on"
    );
}

#[tokio::test]
async fn an_unpaid_renewal_fee_holds_access_until_it_is_settled() {
    let w = world().await;
    let schedule = json!({"tier": "registered", "access_fee": 0, "maintenance_fee": 50_000, "currency": "EUR"});
    w.app.put_json("/api/v1/fees/registered", Some(&w.admin), &schedule).await.assert_status(StatusCode::OK);
    let (project, grant) = active_grant(&w).await;
    exact_count(&w, &project, "chest-ct").await.assert_status(StatusCode::OK);
    let ask = json!({"months": 6, "progress_report": "Half-way."});
    let renewal = w.app.post_json(&format!("/api/v1/grants/{grant}/renewals"), Some(&w.pi), &ask).await.json();
    let decision = json!({"approve": true, "reason": "On track."});
    let path = format!("/api/v1/renewals/{}/decision", renewal["id"].as_str().unwrap());
    w.app.post_json(&path, Some(&w.sam), &decision).await.assert_status(StatusCode::OK);
    let held = exact_count(&w, &project, "chest-ct").await.assert_error(StatusCode::FORBIDDEN, "fee-unsettled");
    assert!(held.contains("maintenance fee"), "{held}");
    let application: String =
        sqlx::query_scalar("select application_id::text from access_grant where grant_id = $1::uuid limit 1")
            .bind(&grant)
            .fetch_one(&w.app.db)
            .await
            .unwrap();
    let fees = w.app.get(&format!("/api/v1/applications/{application}/fees"), Some(&w.pi)).await.json();
    let fee = fees.as_array().unwrap().iter().find(|f| f["kind"] == "maintenance").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = json!({"settlement": "paid", "note": "Invoice 2026-117"});
    w.app.post_json(&format!("/api/v1/fees/{fee}/settlement"), Some(&w.sam), &paid).await.assert_status(StatusCode::OK);
    exact_count(&w, &project, "chest-ct").await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn an_empty_text_is_refused_naming_the_field_it_came_in() {
    let w = world().await;
    let (project, grant) = active_grant(&w).await;
    let refused = |body: serde_json::Value, path: String, token: String| {
        let app = &w.app;
        async move { app.post_json(&path, Some(&token), &body).await.assert_error(StatusCode::BAD_REQUEST, "bad-request") }
    };
    let renewal = format!("/api/v1/grants/{grant}/renewals");
    let message = refused(json!({"months": 12, "progress_report": "  "}), renewal.clone(), w.pi.clone()).await;
    assert_eq!(message, "`progress_report` is 1 to 20,000 characters");
    let close = format!("/api/v1/projects/{project}/close");
    let message = refused(json!({"deletion_attestation": ""}), close, w.pi.clone()).await;
    assert_eq!(message, "`deletion_attestation` is 1 to 20,000 characters");
    let ask = json!({"months": 12, "progress_report": "Year one done."});
    let id = w.app.post_json(&renewal, Some(&w.pi), &ask).await.json()["id"].as_str().unwrap().to_owned();
    let message =
        refused(json!({"approve": true, "reason": ""}), format!("/api/v1/renewals/{id}/decision"), w.sam.clone()).await;
    assert_eq!(message, "`reason` is 1 to 20,000 characters");
}

#[tokio::test]
async fn a_fee_too_large_to_add_up_is_refused_and_the_schedule_keeps_its_fees() {
    let w = world().await;
    let before = w.app.get("/api/v1/fees", Some(&w.admin)).await.assert_status(StatusCode::OK).json();
    for (access, imaging) in [(i64::MAX, i64::MAX), (1_000_000_000_001, 0), (0, -1)] {
        let fee = json!({"tier": "registered", "access_fee": access, "maintenance_fee": 0,
                         "imaging_access_fee": imaging, "currency": "EUR"});
        let message = w
            .app
            .put_json("/api/v1/fees/registered", Some(&w.admin), &fee)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad-request");
        assert!(message.contains("1,000,000,000,000"), "{message}");
    }
    assert_eq!(w.app.get("/api/v1/fees", Some(&w.admin)).await.json(), before);
    let largest = json!({"tier": "registered", "access_fee": 1_000_000_000_000_i64, "maintenance_fee": 0,
                         "imaging_access_fee": 1_000_000_000_000_i64, "currency": "EUR"});
    w.app.put_json("/api/v1/fees/registered", Some(&w.admin), &largest).await.assert_status(StatusCode::OK);
}
