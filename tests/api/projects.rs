//! Researcher profiles, projects and their members.

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn profile(name: &str) -> Value {
    json!({
        "name": name,
        "institution": "University Hospital Bonn",
        "email": format!("{}@uni-bonn.example.org", name.to_lowercase().replace(' ', ".")),
        "orcid": "0000-0002-1825-0097",
        "position": "Postdoctoral researcher",
    })
}

/// A researcher token for `user`, after giving them a profile.
async fn researcher_with_profile(app: &TestApp, user: &str) -> String {
    let token = app.token(user, &[Role::Researcher]);
    app.put_json("/api/v1/me/profile", Some(&token), &profile(user)).await.assert_status(StatusCode::CREATED);
    token
}

/// A project of `pi` (given a profile here), returning its id and the PI's token.
async fn project_of(app: &TestApp, pi: &str) -> (String, String) {
    let token = researcher_with_profile(app, pi).await;
    let created = app
        .post_json("/api/v1/projects", Some(&token), &json!({ "title": "Glioma growth models" }))
        .await
        .assert_status(StatusCode::CREATED)
        .json();
    (created["id"].as_str().unwrap().to_owned(), token)
}

fn member<'a>(project: &'a Value, username: &str) -> &'a Value {
    project["members"].as_array().unwrap().iter().find(|m| m["username"] == username).expect("member listed")
}

async fn audit_events(app: &TestApp, action: &str) -> Vec<Value> {
    let steward = app.token("sam", &[Role::Steward]);
    let events =
        app.get(&format!("/api/v1/audit?action={action}"), Some(&steward)).await.assert_status(StatusCode::OK).json();
    events["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_researcher_with_a_profile_creates_a_project_and_becomes_its_pi() {
    let app = TestApp::new().await;
    let rita = app.token("rita", &[Role::Researcher]);
    let body = json!({ "title": "Glioma growth models" });
    let message =
        app.post_json("/api/v1/projects", Some(&rita), &body).await.assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(message, "create your researcher profile first (PUT /api/v1/me/profile)");

    app.get("/api/v1/me/profile", Some(&rita)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    let rita = researcher_with_profile(&app, "rita").await;
    let created = app.post_json("/api/v1/projects", Some(&rita), &body).await.assert_status(StatusCode::CREATED).json();
    assert_eq!(created["title"], "Glioma growth models");
    assert_eq!(created["pi_username"], "rita");
    assert!(created["closed_at"].is_null());
    let pi = member(&created, "rita");
    assert_eq!(pi["role"], "pi");
    assert!(pi["accepted_at"].is_string(), "the PI is a member at once");
    assert_eq!(pi["institution"], "University Hospital Bonn");
    assert!(pi.get("email").is_none(), "contact data stays in the profile");

    let id = created["id"].as_str().unwrap();
    let listed = app.get("/api/v1/projects", Some(&rita)).await.assert_status(StatusCode::OK).json();
    assert_eq!(listed["projects"].as_array().unwrap().len(), 1);
    assert_eq!(listed["projects"][0]["id"], id);
    assert_eq!(listed["projects"][0]["membership"]["role"], "pi");

    let events = audit_events(&app, "project.create").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor"], "rita");
    assert_eq!(events[0]["target"], format!("project:{id}"));

    // Only researchers create projects, and titles are checked.
    let uploader = app.token("ulf", &[Role::Uploader]);
    app.post_json("/api/v1/projects", Some(&uploader), &body).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let message = app
        .post_json("/api/v1/projects", Some(&rita), &json!({ "title": "   " }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(message.contains("title"), "{message}");
}

#[tokio::test]
async fn a_project_is_invisible_to_non_members_exactly_like_a_missing_one() {
    let app = TestApp::new().await;
    let (id, _) = project_of(&app, "rita").await;
    let eve = researcher_with_profile(&app, "eve").await;

    let hidden = app.get(&format!("/api/v1/projects/{id}"), Some(&eve)).await;
    let missing = app.get(&format!("/api/v1/projects/{}", uuid::Uuid::new_v4()), Some(&eve)).await;
    assert_eq!(hidden.assert_error(StatusCode::NOT_FOUND, "not-found"), "project not found");
    assert_eq!(hidden.status, missing.status);
    assert_eq!(hidden.body, missing.body, "no difference between hidden and missing");

    // Nor does any membership change tell them apart.
    for (method_result, other) in [
        (
            app.post_json(&format!("/api/v1/projects/{id}/members"), Some(&eve), &json!({ "username": "eve" })).await,
            app.post_json(
                &format!("/api/v1/projects/{}/members", uuid::Uuid::new_v4()),
                Some(&eve),
                &json!({ "username": "eve" }),
            )
            .await,
        ),
        (
            app.delete(&format!("/api/v1/projects/{id}/members/rita"), Some(&eve)).await,
            app.delete(&format!("/api/v1/projects/{}/members/rita", uuid::Uuid::new_v4()), Some(&eve)).await,
        ),
        (
            app.post_json(&format!("/api/v1/projects/{id}/members/eve/accept"), Some(&eve), &json!({})).await,
            app.post_json(
                &format!("/api/v1/projects/{}/members/eve/accept", uuid::Uuid::new_v4()),
                Some(&eve),
                &json!({}),
            )
            .await,
        ),
    ] {
        method_result.assert_error(StatusCode::NOT_FOUND, "not-found");
        assert_eq!(method_result.body, other.body);
    }
    let listed = app.get("/api/v1/projects", Some(&eve)).await.assert_status(StatusCode::OK).json();
    assert_eq!(listed["projects"], json!([]));

    // Stewards and admins see every project.
    for token in [app.token("sam", &[Role::Steward]), app.token("alice", &[Role::Admin])] {
        let found = app.get(&format!("/api/v1/projects/{id}"), Some(&token)).await.assert_status(StatusCode::OK).json();
        assert_eq!(found["id"], id.as_str());
        let listed = app.get("/api/v1/projects", Some(&token)).await.json();
        assert_eq!(listed["projects"][0]["id"], id.as_str());
        assert!(listed["projects"][0]["membership"].is_null());
    }
}

#[tokio::test]
async fn collaborators_join_by_invitation_and_acceptance_and_can_leave() {
    let app = TestApp::new().await;
    let (id, rita) = project_of(&app, "rita").await;
    let carl = researcher_with_profile(&app, "carl").await;
    let members = format!("/api/v1/projects/{id}/members");

    let invited = app
        .post_json(&members, Some(&rita), &json!({ "username": "carl" }))
        .await
        .assert_status(StatusCode::CREATED)
        .json();
    assert_eq!(invited["role"], "collaborator");
    assert_eq!(invited["invited_by"], "rita");
    assert!(invited["accepted_at"].is_null());

    // Invited: carl sees the project and his open invitation, but is not yet an active member.
    let listed = app.get("/api/v1/projects", Some(&carl)).await.json();
    assert_eq!(listed["projects"][0]["membership"]["role"], "collaborator");
    assert!(listed["projects"][0]["membership"]["accepted_at"].is_null());
    app.get(&format!("/api/v1/projects/{id}"), Some(&carl)).await.assert_status(StatusCode::OK);
    let project_id: uuid::Uuid = id.parse().unwrap();
    assert_eq!(custodian::access::projects::member_role(&app.db, project_id, "carl").await.unwrap(), None);
    assert_eq!(
        custodian::access::projects::members_with_institutions(&app.db, project_id).await.unwrap(),
        vec![("rita".to_owned(), Some("University Hospital Bonn".to_owned()))]
    );

    // Nobody accepts for him, and he accepts once.
    let accept = format!("{members}/carl/accept");
    app.post_json(&accept, Some(&rita), &json!({})).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let accepted = app.post_json(&accept, Some(&carl), &json!({})).await.assert_status(StatusCode::OK).json();
    assert!(accepted["accepted_at"].is_string());
    app.post_json(&accept, Some(&carl), &json!({})).await.assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(
        custodian::access::projects::member_role(&app.db, project_id, "carl").await.unwrap().as_deref(),
        Some("collaborator")
    );
    assert_eq!(
        custodian::access::projects::member_role(&app.db, project_id, "rita").await.unwrap().as_deref(),
        Some("pi")
    );
    let project = app.get(&format!("/api/v1/projects/{id}"), Some(&carl)).await.json();
    assert_eq!(member(&project, "carl")["name"], "carl");

    // Inviting an active member again is a conflict.
    app.post_json(&members, Some(&rita), &json!({ "username": "carl" }))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // He leaves: the row stays, marked removed, and the project disappears for him.
    app.delete(&format!("{members}/carl"), Some(&carl)).await.assert_status(StatusCode::NO_CONTENT);
    app.get(&format!("/api/v1/projects/{id}"), Some(&carl)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(app.get("/api/v1/projects", Some(&carl)).await.json()["projects"], json!([]));
    let project = app.get(&format!("/api/v1/projects/{id}"), Some(&rita)).await.json();
    assert_eq!(member(&project, "carl")["removed_by"], "carl");
    assert!(member(&project, "carl")["removed_at"].is_string());
    assert_eq!(custodian::access::projects::member_role(&app.db, project_id, "carl").await.unwrap(), None);

    // Re-inviting re-opens his row as a fresh invitation.
    let again = app
        .post_json(&members, Some(&rita), &json!({ "username": "carl" }))
        .await
        .assert_status(StatusCode::CREATED)
        .json();
    assert!(again["accepted_at"].is_null());
    assert!(again["removed_at"].is_null());
    assert!(again["removed_by"].is_null());
    let rows: i64 = sqlx::query_scalar("select count(*) from project_member where username = 'carl'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    // An invitee without a profile is listed without name or institution.
    app.post_json(&members, Some(&rita), &json!({ "username": "nora" })).await.assert_status(StatusCode::CREATED);
    let project = app.get(&format!("/api/v1/projects/{id}"), Some(&rita)).await.json();
    assert!(member(&project, "nora")["name"].is_null());
    assert!(member(&project, "nora")["institution"].is_null());
}

#[tokio::test]
async fn only_the_pi_invites_or_removes_and_the_pi_cannot_be_removed() {
    let app = TestApp::new().await;
    let (id, rita) = project_of(&app, "rita").await;
    let carl = researcher_with_profile(&app, "carl").await;
    let members = format!("/api/v1/projects/{id}/members");
    app.post_json(&members, Some(&rita), &json!({ "username": "carl" })).await.assert_status(StatusCode::CREATED);
    app.post_json(&format!("{members}/carl/accept"), Some(&carl), &json!({})).await.assert_status(StatusCode::OK);
    app.post_json(&members, Some(&rita), &json!({ "username": "dora" })).await.assert_status(StatusCode::CREATED);

    // A collaborator neither invites nor removes others; neither does a steward.
    app.post_json(&members, Some(&carl), &json!({ "username": "eve" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    app.delete(&format!("{members}/dora"), Some(&carl)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let steward = app.token("sam", &[Role::Steward]);
    app.post_json(&members, Some(&steward), &json!({ "username": "eve" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");

    // Nobody removes the PI, not even the PI.
    app.delete(&format!("{members}/rita"), Some(&carl)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let message =
        app.delete(&format!("{members}/rita"), Some(&rita)).await.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(message.contains("PI"), "{message}");
    app.post_json(&members, Some(&rita), &json!({ "username": "rita" }))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // The PI removes a collaborator and withdraws an open invitation; unknown members are 404.
    app.delete(&format!("{members}/carl"), Some(&rita)).await.assert_status(StatusCode::NO_CONTENT);
    app.delete(&format!("{members}/dora"), Some(&rita)).await.assert_status(StatusCode::NO_CONTENT);
    app.delete(&format!("{members}/carl"), Some(&rita)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    app.delete(&format!("{members}/zed"), Some(&rita)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    let project = app.get(&format!("/api/v1/projects/{id}"), Some(&rita)).await.json();
    assert_eq!(member(&project, "carl")["removed_by"], "rita");

    // A removed invitee cannot accept any more.
    let dora = app.token("dora", &[Role::Researcher]);
    app.post_json(&format!("{members}/dora/accept"), Some(&dora), &json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");

    // Bad usernames are refused.
    app.post_json(&members, Some(&rita), &json!({ "username": "two words" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");

    // A closed project's membership no longer changes.
    app.post_json(&members, Some(&rita), &json!({ "username": "carl" })).await.assert_status(StatusCode::CREATED);
    sqlx::query("update project set closed_at = now(), deletion_attestation = 'deleted' where project_id = $1::uuid")
        .bind(&id)
        .execute(&app.db)
        .await
        .unwrap();
    app.post_json(&members, Some(&rita), &json!({ "username": "eve" }))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    app.post_json(&format!("{members}/carl/accept"), Some(&carl), &json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    app.delete(&format!("{members}/carl"), Some(&carl)).await.assert_error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn an_invalid_profile_is_refused_with_every_problem() {
    let app = TestApp::new().await;
    let rita = app.token("rita", &[Role::Researcher]);
    let body = json!({
        "name": "  ",
        "institution": "x".repeat(200),
        "email": "rita@localhost",
        // The check digit of 0000-0002-1825-0097 is 7, not 8.
        "orcid": "0000-0002-1825-0098",
        "position": "",
    });
    let response = app.put_json("/api/v1/me/profile", Some(&rita), &body).await;
    response.assert_error(StatusCode::BAD_REQUEST, "invalid-profile");
    let problems = response.json()["problems"].clone();
    let found: Vec<(String, String)> = problems
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap().to_owned(), p["code"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [
        ("/name", "missing-value"),
        ("/position", "missing-value"),
        ("/email", "invalid-email"),
        ("/orcid", "invalid-orcid-check-digit"),
    ];
    assert_eq!(found.len(), expected.len(), "{problems}");
    for (path, code) in expected {
        assert!(found.iter().any(|(p, c)| p == path && c == code), "{path} {code}: {problems}");
    }
    assert!(!response.text().contains("rita@localhost"), "values are never echoed");
    // Past its documented length a text is refused before anything else is checked, named.
    let mut long = body.clone();
    long["institution"] = json!("x".repeat(201));
    let message = app
        .put_json("/api/v1/me/profile", Some(&rita), &long)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    assert!(message.contains("/institution"), "{message}");

    for (email, orcid) in [
        ("rita", "0000-0002-1825-009"),
        ("@uni.example", "0000 0002 1825 0097"),
        ("rita@", "0000-0002-1825-009x"),
        ("ri@ta@uni.example", "https://orcid.org/0000-0002-1825-0097"),
        ("rita @uni.example", "0000-0002-1825-0097-"),
    ] {
        let mut body = profile("Rita");
        body["email"] = email.into();
        body["orcid"] = orcid.into();
        let response = app.put_json("/api/v1/me/profile", Some(&rita), &body).await;
        response.assert_error(StatusCode::BAD_REQUEST, "invalid-profile");
        let codes: Vec<Value> =
            response.json()["problems"].as_array().unwrap().iter().map(|p| p["code"].clone()).collect();
        assert_eq!(codes, vec![json!("invalid-email"), json!("invalid-orcid")], "{email} {orcid}");
    }
    app.get("/api/v1/me/profile", Some(&rita)).await.assert_error(StatusCode::NOT_FOUND, "not-found");

    // Valid: an X check digit, surrounding spaces trimmed, no ORCID at all.
    let mut body = profile("Rita");
    body["orcid"] = "0000-0002-1694-233X".into();
    body["name"] = "  Rita Levi  ".into();
    let saved = app.put_json("/api/v1/me/profile", Some(&rita), &body).await.assert_status(StatusCode::CREATED).json();
    assert_eq!(saved["name"], "Rita Levi");
    assert_eq!(saved["orcid"], "0000-0002-1694-233X");
    body["orcid"] = Value::Null;
    let saved = app.put_json("/api/v1/me/profile", Some(&rita), &body).await.assert_status(StatusCode::OK).json();
    assert!(saved["orcid"].is_null());
    let mut unknown = profile("Rita");
    unknown["phone"] = "+49".into();
    app.put_json("/api/v1/me/profile", Some(&rita), &unknown)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
}

#[tokio::test]
async fn changing_a_verified_profile_clears_its_verification() {
    let app = TestApp::new().await;
    let rita = researcher_with_profile(&app, "rita").await;
    let own = app.get("/api/v1/me/profile", Some(&rita)).await.assert_status(StatusCode::OK).json();
    assert_eq!(own["verified"], false);

    // Only stewards and admins list and verify, and nobody verifies themselves.
    app.get("/api/v1/profiles", Some(&rita)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    app.post_json("/api/v1/profiles/rita/verify", Some(&rita), &json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let steward = app.token("sam", &[Role::Steward, Role::Researcher]);
    app.put_json("/api/v1/me/profile", Some(&steward), &profile("sam")).await.assert_status(StatusCode::CREATED);
    app.post_json("/api/v1/profiles/sam/verify", Some(&steward), &json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    app.post_json("/api/v1/profiles/nobody/verify", Some(&steward), &json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");

    let unverified =
        app.get("/api/v1/profiles?unverified=true", Some(&steward)).await.assert_status(StatusCode::OK).json();
    let names: Vec<&str> =
        unverified["profiles"].as_array().unwrap().iter().map(|p| p["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["rita", "sam"]);

    let verified = app
        .post_json("/api/v1/profiles/rita/verify", Some(&steward), &json!({}))
        .await
        .assert_status(StatusCode::OK)
        .json();
    assert_eq!(verified["verified"], true);
    assert_eq!(verified["verified_by"], "sam");
    let unverified = app.get("/api/v1/profiles?unverified=true", Some(&steward)).await.json();
    assert_eq!(unverified["profiles"].as_array().unwrap().len(), 1);
    assert_eq!(app.get("/api/v1/profiles", Some(&steward)).await.json()["profiles"].as_array().unwrap().len(), 2);

    // The same profile again keeps the verification…
    let same =
        app.put_json("/api/v1/me/profile", Some(&rita), &profile("rita")).await.assert_status(StatusCode::OK).json();
    assert_eq!(same["verified"], true);

    // …a changed one loses it.
    let mut moved = profile("rita");
    moved["institution"] = "Charité Berlin".into();
    moved["email"] = "rita@charite.example.org".into();
    let changed = app.put_json("/api/v1/me/profile", Some(&rita), &moved).await.assert_status(StatusCode::OK).json();
    assert_eq!(changed["verified"], false);
    assert!(changed["verified_at"].is_null());
    assert!(changed["verified_by"].is_null());
    assert_eq!(changed["institution"], "Charité Berlin");
    let unverified = app.get("/api/v1/profiles?unverified=true", Some(&steward)).await.json();
    assert_eq!(unverified["profiles"].as_array().unwrap().len(), 2);

    let events = audit_events(&app, "profile.verify").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor"], "sam");
    assert_eq!(events[0]["target"], "profile:rita");
    let updates = audit_events(&app, "profile.update").await;
    assert_eq!(updates.len(), 1, "an unchanged profile records nothing");
    assert_eq!(updates[0]["details"]["changed"], json!(["institution", "email"]));
    assert_eq!(updates[0]["details"]["verification_cleared"], true);
    let log = app.rows_as_text(&["audit_event"]).await;
    assert!(!log.contains("charite.example.org") && !log.contains("uni-bonn.example.org"), "no e-mail in the log");
}

#[tokio::test]
async fn a_member_invited_again_after_leaving_keeps_the_earlier_period_in_the_project() {
    let app = TestApp::new().await;
    let (id, rita) = project_of(&app, "rita").await;
    let carl = app.token("carl", &[Role::Researcher]);
    let members = format!("/api/v1/projects/{id}/members");
    app.post_json(&members, Some(&rita), &json!({ "username": "carl" })).await.assert_status(StatusCode::CREATED);
    app.post_json(&format!("{members}/carl/accept"), Some(&carl), &json!({})).await.assert_status(StatusCode::OK);
    app.delete(&format!("{members}/carl"), Some(&rita)).await.assert_status(StatusCode::NO_CONTENT);
    app.post_json(&members, Some(&rita), &json!({ "username": "carl" })).await.assert_status(StatusCode::CREATED);
    app.post_json(&format!("{members}/carl/accept"), Some(&carl), &json!({})).await.assert_status(StatusCode::OK);

    let project = app.get(&format!("/api/v1/projects/{id}"), Some(&rita)).await.assert_status(StatusCode::OK).json();
    let periods: Vec<&Value> =
        project["members"].as_array().unwrap().iter().filter(|m| m["username"] == "carl").collect();
    assert_eq!(periods.len(), 2, "both periods, oldest first: {project}");
    let (first, second) = (periods[0], periods[1]);
    assert!(first["accepted_at"].is_string(), "the first period was accepted");
    assert_eq!(first["removed_by"], "rita", "and ended by the PI");
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(time(&first["removed_at"]) <= time(&second["invited_at"]), "the periods do not overlap");
    assert!(second["accepted_at"].is_string() && second["removed_at"].is_null(), "the current one is open");

    // The current period is the one that counts: carl can leave it once, and only it ends.
    app.delete(&format!("{members}/carl"), Some(&carl)).await.assert_status(StatusCode::NO_CONTENT);
    app.delete(&format!("{members}/carl"), Some(&carl)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    let project = app.get(&format!("/api/v1/projects/{id}"), Some(&rita)).await.json();
    let removers: Vec<&Value> = project["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["username"] == "carl")
        .map(|m| &m["removed_by"])
        .collect();
    assert_eq!(removers, [&json!("rita"), &json!("carl")]);
}

#[tokio::test]
async fn every_membership_change_is_audited() {
    let app = TestApp::new().await;
    let (id, rita) = project_of(&app, "rita").await;
    let carl = app.token("carl", &[Role::Researcher]);
    let members = format!("/api/v1/projects/{id}/members");
    let target = format!("project:{id}");

    app.post_json(&members, Some(&rita), &json!({ "username": "carl" })).await.assert_status(StatusCode::CREATED);
    app.post_json(&format!("{members}/carl/accept"), Some(&carl), &json!({})).await.assert_status(StatusCode::OK);
    app.delete(&format!("{members}/carl"), Some(&carl)).await.assert_status(StatusCode::NO_CONTENT);
    app.post_json(&members, Some(&rita), &json!({ "username": "carl" })).await.assert_status(StatusCode::CREATED);
    app.delete(&format!("{members}/carl"), Some(&rita)).await.assert_status(StatusCode::NO_CONTENT);

    let invites = audit_events(&app, "project.member.invite").await;
    assert_eq!(invites.len(), 2);
    assert!(invites.iter().all(|e| e["actor"] == "rita" && e["target"] == target.as_str()));
    assert_eq!(invites[0]["details"]["username"], "carl");
    assert_eq!(invites[0]["details"]["reinvited"], false);
    assert_eq!(invites[1]["details"]["reinvited"], true);

    let accepts = audit_events(&app, "project.member.accept").await;
    assert_eq!(accepts.len(), 1);
    assert_eq!(accepts[0]["actor"], "carl");
    assert_eq!(accepts[0]["target"], target.as_str());

    let removals = audit_events(&app, "project.member.remove").await;
    assert_eq!(removals.len(), 2);
    assert_eq!(removals[0]["actor"], "carl");
    assert_eq!(removals[0]["details"]["left"], true);
    assert_eq!(removals[1]["actor"], "rita");
    assert_eq!(removals[1]["details"]["left"], false);
    assert_eq!(removals[1]["details"]["had_accepted"], false);

    // Refused changes record nothing.
    let before = app.audit_actions().await.len();
    app.delete(&format!("{members}/rita"), Some(&rita)).await.assert_error(StatusCode::CONFLICT, "conflict");
    app.post_json(&members, Some(&carl), &json!({ "username": "eve" }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(app.audit_actions().await.len(), before);
    let log = app.rows_as_text(&["audit_event"]).await;
    assert!(!log.contains("uni-bonn.example.org"), "no e-mail in the log");
}
