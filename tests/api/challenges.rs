//! A challenge on an open cohort: teams submit predictions for a version's
//! test split, the job queue scores them against the hidden labels, only the
//! scores stay, and the leaderboard ranks the teams. The limits hold against
//! retries and races; a sealed leaderboard and a closed challenge hold
//! against every role.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{Duration, Utc};
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse};

pub(crate) const CHALLENGE: &str = "/api/v1/open-cohorts/demo-chest-xray-challenge";
const CODES: [&str; 2] = ["RID5352", "RID39148"];

fn settings(extra: &Value) -> Value {
    let mut settings = json!({
        "task": {"type": "classification", "system": "RadLex", "codes": CODES},
        "annotation_kinds": ["label"], "fields": ["sex"], "positive_class": "RID5352",
        "reveal_at": (Utc::now() - Duration::days(1)).to_rfc3339(),
    });
    for (key, value) in extra.as_object().unwrap() {
        settings[key] = value.clone();
    }
    settings
}

/// The demo's chest X-ray challenge with version 1 published with its test
/// labels hidden and version 2 with them revealed: the app, the organizer's
/// token, version 1's id, and the test split's truth per released study as
/// version 2 publishes it.
pub(crate) async fn challenge(extra: Value) -> (TestApp, String, String, BTreeMap<String, String>) {
    let app = TestApp::new().await;
    custodian::demo::seed_all(&app.state.ingest, &app.state.config, 120, 7).await.unwrap().unwrap();
    let olga = app.token("olga", &[Role::Organizer]);
    app.put_json(CHALLENGE, Some(&olga), &settings(&extra)).await.assert_status(StatusCode::OK);
    let halves =
        json!({"spec": {"method": "random", "seed": 9, "fractions": {"train": 0.5, "validation": 0, "test": 0.5}}});
    app.put_json(&format!("{CHALLENGE}/split"), Some(&olga), &halves).await.assert_status(StatusCode::OK);
    let hidden = app.post_json(&format!("{CHALLENGE}/versions"), Some(&olga), &json!({})).await;
    let hidden = hidden.assert_status(StatusCode::ACCEPTED).json()["id"].as_str().unwrap().to_owned();
    let revealed = app.post_json(&format!("{CHALLENGE}/versions"), Some(&olga), &json!({"reveal_labels": true})).await;
    let revealed = revealed.assert_status(StatusCode::ACCEPTED).json()["id"].as_str().unwrap().to_owned();
    crate::extracts::work(&app).await;
    let index = app.get(&format!("/api/v1/extracts/{revealed}/files/test/annotations/index.json"), None).await;
    let index = index.assert_status(StatusCode::OK).json();
    let mut codes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in index["annotations"].as_array().unwrap() {
        let code = a["label"]["code"].as_str().unwrap_or_default();
        if a["kind"] == "label" && CODES.contains(&code) {
            codes.entry(a["study_uid"].as_str().unwrap().to_owned()).or_default().push(code.to_owned());
        }
    }
    let truth: BTreeMap<String, String> = codes
        .into_iter()
        .filter(|(_, c)| c.iter().all(|x| *x == c[0]))
        .map(|(study, c)| (study, c[0].clone()))
        .collect();
    assert!(truth.len() >= 10, "enough labelled test studies to score: {truth:?}");
    assert!(truth.values().any(|c| c == CODES[0]) && truth.values().any(|c| c == CODES[1]), "{truth:?}");
    (app, olga, hidden, truth)
}

pub(crate) async fn submit(
    app: &TestApp,
    version: &str,
    token: Option<&str>,
    kind: &str,
    body: Vec<u8>,
) -> TestResponse {
    let mut request = Request::post(format!("{CHALLENGE}/versions/{version}/submissions?description=baseline"))
        .header(header::CONTENT_TYPE, kind);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    app.call(request.body(Body::from(body)).unwrap()).await
}

fn csv(header: &str, rows: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(&row);
        text.push('\n');
    }
    text.into_bytes()
}

/// A perfect probability for each study.
pub(crate) fn perfect(truth: &BTreeMap<String, String>) -> Vec<u8> {
    csv("study_id,probability", truth.iter().map(|(s, c)| format!("{s},{}", if c == CODES[0] { "0.9" } else { "0.1" })))
}

fn metric(scores: &Value, name: &str) -> Option<f64> {
    scores["overall"].as_array().unwrap().iter().find(|m| m["metric"] == name).and_then(|m| m["value"].as_f64())
}

async fn scored(app: &TestApp, id: &str, token: &str) -> Value {
    crate::extracts::work(app).await;
    app.get(&format!("{CHALLENGE}/submissions/{id}"), Some(token)).await.assert_status(StatusCode::OK).json()
}

#[tokio::test]
async fn a_team_and_a_lone_user_are_scored_against_the_hidden_labels_and_ranked_with_only_scores_kept() {
    let (app, _, version, truth) = Box::pin(challenge(json!({}))).await;
    let (alice, bob, carol) = (
        app.token("alice", &[Role::Researcher]),
        app.token("bob", &[Role::Researcher]),
        app.token("carol", &[Role::Researcher]),
    );
    // Alice makes a team and brings Bob in; Bob may join only once invited.
    let team = app.post_json(&format!("{CHALLENGE}/teams"), Some(&alice), &json!({"name": "alpha"})).await;
    assert_eq!(team.assert_status(StatusCode::CREATED).json()["members"], json!(["alice"]));
    app.post_json(&format!("{CHALLENGE}/teams/alpha/join"), Some(&bob), &json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    app.post_json(&format!("{CHALLENGE}/teams/alpha/invitations"), Some(&carol), &json!({"username": "carol"}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    app.post_json(&format!("{CHALLENGE}/teams/alpha/invitations"), Some(&alice), &json!({"username": "bob"}))
        .await
        .assert_status(StatusCode::OK);
    let mine = app.get(&format!("{CHALLENGE}/teams/mine"), Some(&bob)).await.assert_status(StatusCode::OK).json();
    assert_eq!(mine["invitations"], json!(["alpha"]), "{mine}");
    let joined = app.post_json(&format!("{CHALLENGE}/teams/alpha/join"), Some(&bob), &json!({})).await;
    assert_eq!(joined.assert_status(StatusCode::OK).json()["members"], json!(["alice", "bob"]));
    app.post_json(&format!("{CHALLENGE}/teams"), Some(&bob), &json!({"name": "beta"}))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // Bob submits perfect probabilities for the team; Carol, alone, says every study is normal.
    let sent = submit(&app, &version, Some(&bob), "text/csv", perfect(&truth)).await;
    let sent = sent.assert_status(StatusCode::ACCEPTED).json();
    assert_eq!((sent["state"].as_str(), sent["team"].as_str()), (Some("queued"), Some("alpha")), "{sent}");
    let normal = csv("study_id,label", truth.keys().map(|s| format!("{s},{}", CODES[1])));
    let lone =
        submit(&app, &version, Some(&carol), "text/csv", normal).await.assert_status(StatusCode::ACCEPTED).json();

    let team_scores = scored(&app, sent["id"].as_str().unwrap(), &alice).await;
    assert_eq!(team_scores["state"], "scored", "{team_scores}");
    let scores = &team_scores["scores"];
    assert_eq!(scores["n"], truth.len(), "every labelled test study is scored: {scores}");
    assert_eq!((metric(scores, "auc"), metric(scores, "accuracy")), (Some(1.0), Some(1.0)), "{scores}");
    let per_site: u64 = scores["sites"].as_array().unwrap().iter().map(|s| s["n"].as_u64().unwrap()).sum();
    assert_eq!(per_site, truth.len() as u64, "per-site scores cover every unit once: {scores}");
    let auc = scores["overall"].as_array().unwrap().iter().find(|m| m["metric"] == "auc").unwrap();
    assert!(auc["ci_low"].as_f64().is_some() && auc["resamples"].as_u64().unwrap() > 0, "{auc}");

    let carol_scores = scored(&app, lone["id"].as_str().unwrap(), &carol).await;
    let count = |n: usize| f64::from(u32::try_from(n).unwrap());
    let normals = count(truth.values().filter(|c| *c == CODES[1]).count()) / count(truth.len());
    let accuracy = metric(&carol_scores["scores"], "accuracy").unwrap();
    assert!((accuracy - normals).abs() < 1e-9, "accuracy {accuracy} is the share of normal studies {normals}");
    assert_eq!(metric(&carol_scores["scores"], "auc"), None, "labels alone have no AUC");
    // A team's submissions are the team's: Alice sees Bob's, Carol does not.
    app.get(&format!("{CHALLENGE}/submissions/{}", sent["id"].as_str().unwrap()), Some(&carol))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    let listed = app.get(&format!("{CHALLENGE}/submissions"), Some(&alice)).await.json();
    assert_eq!(listed["submissions"].as_array().unwrap().len(), 1, "{listed}");

    // Anyone reads the leaderboard: the team first, Carol second.
    let board = app.get(&format!("{CHALLENGE}/leaderboard"), None).await.assert_status(StatusCode::OK).json();
    let entries = board["entries"].as_array().unwrap();
    assert_eq!(board["primary_metric"], "auc");
    assert_eq!(entries.len(), 2, "{board}");
    assert_eq!((entries[0]["name"].as_str(), entries[0]["kind"].as_str()), (Some("alpha"), Some("team")));
    assert_eq!((entries[1]["name"].as_str(), entries[1]["rank"].as_u64()), (Some("carol"), Some(2)));
    assert_eq!(entries[0]["description"], "baseline");

    // Only scores stay: no prediction in the store or the database, no truth in any answer.
    let mut left = app.state.store.list(Some(&object_store::path::Path::from("submissions")));
    assert!(futures::StreamExt::next(&mut left).await.is_none(), "the predictions are deleted once scored");
    let rows = app.rows_as_text(&["challenge_submission"]).await;
    for (study, code) in &truth {
        assert!(!rows.contains(study.as_str()), "no unit id is kept with the scores");
        assert!(!board.to_string().contains(study.as_str()) && !board.to_string().contains(code.as_str()));
    }
    // The organizers count submissions per team.
    let olga = app.token("olga", &[Role::Organizer]);
    let statistics = app.get(&format!("{CHALLENGE}/statistics"), Some(&olga)).await.json();
    let version_stats = statistics["versions"].as_array().unwrap().iter().find(|v| v["extract_id"] == version.as_str());
    let teams: Vec<(String, i64)> = version_stats.unwrap()["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (format!("{}:{}", t["kind"].as_str().unwrap(), t["name"].as_str().unwrap()), t["scored"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(teams, [("team:alpha".to_owned(), 1), ("user:carol".to_owned(), 1)], "{statistics}");
    let actions = app.audit_actions().await;
    for action in [
        "open_cohort.team_created",
        "open_cohort.team_invited",
        "open_cohort.team_joined",
        "open_cohort.submission",
        "open_cohort.scored",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action} is audited: {actions:?}");
    }
}

#[tokio::test]
async fn a_csv_with_problems_is_refused_at_once_with_each_named_and_does_not_count_against_the_limit() {
    let (app, _, version, truth) = Box::pin(challenge(json!({"daily_submissions": 2}))).await;
    let alice = app.token("alice", &[Role::Researcher]);
    let first = truth.keys().next().unwrap().clone();
    let mut rows: Vec<String> = truth.keys().skip(3).map(|s| format!("{s},0.5")).collect();
    rows.push(format!("{first},0.5"));
    rows.push(format!("{first},0.7"));
    rows.push("2.25.1,0.5".into());
    rows.push(format!("{},1.5", truth.keys().nth(1).unwrap()));
    let refused = submit(&app, &version, Some(&alice), "text/csv", csv("study_id,probability", rows)).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "submission-invalid");
    let codes: Vec<String> =
        refused.json()["problems"].as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap().into()).collect();
    for code in ["duplicate-id", "unknown-id", "out-of-range", "missing-id"] {
        assert!(codes.iter().any(|c| c == code), "{code}: {codes:?}");
    }
    assert!(!refused.text().contains("RID"), "no hidden label in a message: {}", refused.text());
    // Per subject where the challenge scores per study.
    let by_subject = submit(&app, &version, Some(&alice), "text/csv", csv("subject_id,probability", [])).await;
    let message = by_subject.assert_error(StatusCode::BAD_REQUEST, "submission-invalid");
    assert!(by_subject.text().contains("study_id"), "{message}");
    // Masks for a classification challenge, and anonymous submitters.
    submit(&app, &version, Some(&alice), "application/zip", b"PK".to_vec())
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    submit(&app, &version, None, "text/csv", perfect(&truth))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Two a day: the refused ones did not count; a third is refused until midnight UTC, audited.
    for _ in 0..2 {
        submit(&app, &version, Some(&alice), "text/csv", perfect(&truth)).await.assert_status(StatusCode::ACCEPTED);
    }
    let over = submit(&app, &version, Some(&alice), "text/csv", perfect(&truth)).await;
    over.assert_error(StatusCode::TOO_MANY_REQUESTS, "submission-limit");
    let retry: u64 = over.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert!(app.audit_actions().await.iter().any(|a| a == "open_cohort.submission_refused"));

    // Joining a team does not reset the count: a member's submissions today count for the team.
    let bob = app.token("bob", &[Role::Researcher]);
    app.post_json(&format!("{CHALLENGE}/teams"), Some(&bob), &json!({"name": "beta"})).await;
    app.post_json(&format!("{CHALLENGE}/teams/beta/invitations"), Some(&bob), &json!({"username": "alice"})).await;
    app.post_json(&format!("{CHALLENGE}/teams/beta/join"), Some(&alice), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    submit(&app, &version, Some(&bob), "text/csv", perfect(&truth))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "submission-limit");
}

#[tokio::test]
async fn concurrent_submissions_at_the_limit_are_accepted_only_up_to_it() {
    let (app, _, version, truth) = Box::pin(challenge(json!({"daily_submissions": 3}))).await;
    let dave = app.token("dave", &[Role::Researcher]);
    let body = perfect(&truth);
    let sends = (0..8).map(|_| submit(&app, &version, Some(&dave), "text/csv", body.clone()));
    let answers = futures::future::join_all(sends).await;
    let accepted = answers.iter().filter(|a| a.status == StatusCode::ACCEPTED).count();
    let limited = answers.iter().filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((accepted, limited), (3, 5), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    let rows: i64 = sqlx::query_scalar("select count(*) from challenge_submission").fetch_one(&app.db).await.unwrap();
    assert_eq!(rows, 3);
    let mut left = app.state.store.list(Some(&object_store::path::Path::from("submissions")));
    let mut stored = 0;
    while futures::StreamExt::next(&mut left).await.is_some() {
        stored += 1;
    }
    assert_eq!(stored, 3, "a refused submission leaves nothing in the store");
}

#[tokio::test]
async fn a_sealed_leaderboard_opens_at_the_close_and_no_submission_is_taken_after_it() {
    let in_an_hour = (Utc::now() + Duration::hours(1)).to_rfc3339();
    let (app, olga, version, truth) =
        Box::pin(challenge(json!({"leaderboard": "after-close", "closes_at": in_an_hour}))).await;
    let alice = app.token("alice", &[Role::Researcher]);
    let sent = submit(&app, &version, Some(&alice), "text/csv", perfect(&truth)).await;
    let id = sent.assert_status(StatusCode::ACCEPTED).json()["id"].as_str().unwrap().to_owned();
    let own = scored(&app, &id, &alice).await;
    assert_eq!(
        (own["state"].as_str(), &own["scores"]),
        (Some("scored"), &Value::Null),
        "sealed until the close: {own}"
    );
    for token in [None, Some(alice.as_str())] {
        app.get(&format!("{CHALLENGE}/leaderboard"), token)
            .await
            .assert_error(StatusCode::FORBIDDEN, "leaderboard-sealed");
    }
    let organizers =
        app.get(&format!("{CHALLENGE}/leaderboard"), Some(&olga)).await.assert_status(StatusCode::OK).json();
    assert_eq!(organizers["entries"][0]["name"], "alice");
    assert_eq!(organizers["closed"], false);
    // Nothing against a version whose labels are revealed.
    let landing = app.get(CHALLENGE, None).await.json();
    let revealed = landing["versions"][0]["extract_id"].as_str().unwrap();
    assert_eq!(landing["versions"][0]["labels_revealed"], true);
    submit(&app, revealed, Some(&alice), "text/csv", perfect(&truth))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // The organizers close it: no more submissions; the board opens to all, the team sees its scores.
    let past = (Utc::now() - Duration::minutes(1)).to_rfc3339();
    let closed = settings(&json!({"leaderboard": "after-close", "closes_at": past}));
    app.put_json(CHALLENGE, Some(&olga), &closed).await.assert_status(StatusCode::OK);
    submit(&app, &version, Some(&alice), "text/csv", perfect(&truth))
        .await
        .assert_error(StatusCode::FORBIDDEN, "challenge-closed");
    let board = app.get(&format!("{CHALLENGE}/leaderboard"), None).await.assert_status(StatusCode::OK).json();
    assert_eq!((board["closed"].as_bool(), board["entries"][0]["name"].as_str()), (Some(true), Some("alice")));
    let own = app.get(&format!("{CHALLENGE}/submissions/{id}"), Some(&alice)).await.json();
    assert_eq!(metric(&own["scores"], "auc"), Some(1.0), "{own}");
    // An after-close leaderboard needs a close.
    let unclosed = settings(&json!({"leaderboard": "after-close"}));
    app.put_json(CHALLENGE, Some(&olga), &unclosed).await.assert_error(StatusCode::BAD_REQUEST, "bad-request");
}

/// A NIfTI-1 mask of 4×4×1 voxels of 1 mm whose voxels `on` are set.
fn mask(on: &[usize]) -> Vec<u8> {
    let mut file = vec![0_u8; 352];
    file[0..4].copy_from_slice(&348_i32.to_le_bytes());
    for (i, d) in [3_i16, 4, 4, 1, 1, 1, 1, 1].iter().enumerate() {
        file[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    file[70..72].copy_from_slice(&2_i16.to_le_bytes());
    file[72..74].copy_from_slice(&8_i16.to_le_bytes());
    for (i, p) in [1.0_f32, 1.0, 1.0, 1.0].iter().enumerate() {
        file[76 + 4 * i..80 + 4 * i].copy_from_slice(&p.to_le_bytes());
    }
    file[108..112].copy_from_slice(&352.0_f32.to_le_bytes());
    file[344..348].copy_from_slice(b"n+1\0");
    file.extend((0..16).map(|v| u8::from(on.contains(&v))));
    file
}

fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut out);
    for (name, bytes) in entries {
        writer.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
        std::io::Write::write_all(&mut writer, bytes).unwrap();
    }
    writer.finish().unwrap();
    out.into_inner()
}

#[tokio::test]
async fn masks_are_scored_per_series_against_hidden_masks_that_never_leave() {
    let app = TestApp::new().await;
    custodian::demo::seed_all(&app.state.ingest, &app.state.config, 120, 7).await.unwrap().unwrap();
    let olga = app.token("olga", &[Role::Organizer]);
    let settings = json!({"task": {"type": "segmentation", "system": "RadLex", "code": "RID1301"},
                          "annotation_kinds": ["segmentation"]});
    app.put_json(CHALLENGE, Some(&olga), &settings).await.assert_status(StatusCode::OK);
    let halves =
        json!({"spec": {"method": "random", "seed": 9, "fractions": {"train": 0.5, "validation": 0, "test": 0.5}}});
    app.put_json(&format!("{CHALLENGE}/split"), Some(&olga), &halves).await.assert_status(StatusCode::OK);
    // The site annotates every series with a lung mask: voxels 0 to 7.
    let series: Vec<String> = sqlx::query_scalar(
        "select se.series_uid from open_cohort_split o join cohort c on c.cohort_id = o.cohort_id
         join study st on st.subject_id = o.subject_id and st.cohort_id = o.cohort_id
         join series se on se.study_id = st.study_id
         where c.slug = 'demo-chest-xray-challenge' order by 1",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let uploader = app.token("ulrich", &[Role::Uploader]);
    let truth = mask(&(0..8).collect::<Vec<_>>());
    for uid in &series {
        let annotation = json!({"target": {"level": "series", "uid": uid}, "kind": "segmentation",
                                "label": {"system": "RadLex", "code": "RID1301", "meaning": "lung"},
                                "provenance": {"role": "radiologist", "method": "manual"}});
        let mut body = format!(
            "--m\r\nContent-Disposition: form-data; name=\"annotation\"\r\n\r\n{annotation}\r\n\
             --m\r\nContent-Disposition: form-data; name=\"file\"; filename=\"lung.nii\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&truth);
        body.extend_from_slice(b"\r\n--m--\r\n");
        let request = Request::post("/api/v1/annotations/masks")
            .header(header::AUTHORIZATION, format!("Bearer {uploader}"))
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=m")
            .body(Body::from(body))
            .unwrap();
        app.call(request).await.assert_status(StatusCode::CREATED);
    }
    let queued = app.post_json(&format!("{CHALLENGE}/versions"), Some(&olga), &json!({})).await;
    let version = queued.assert_status(StatusCode::ACCEPTED).json()["id"].as_str().unwrap().to_owned();
    crate::extracts::work(&app).await;

    // The test split's series, as released; its masks are not.
    let manifest = app.get(&format!("/api/v1/extracts/{version}/manifest"), None).await.json();
    let paths: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(paths.iter().any(|p| p.starts_with("train/annotations/masks/")), "training masks are released");
    assert!(!paths.iter().any(|p| p.starts_with("test/annotations/")), "test masks are hidden: {paths:?}");
    let mut test_series: Vec<String> = paths
        .iter()
        .filter_map(|p| p.strip_prefix("test/dicom/"))
        .map(|p| p.split('/').nth(1).unwrap().to_owned())
        .collect();
    test_series.sort();
    test_series.dedup();
    // Only the open cohort's own studies: the same subjects' MR studies of the neuro cohort stay out.
    let own: i64 = sqlx::query_scalar(
        "select count(*) from extract_subject es join study st using (subject_id) join series se using (study_id)
         join cohort c on c.cohort_id = st.cohort_id
         where es.extract_id = $1::uuid and es.split = 'test' and c.slug = 'demo-chest-xray-challenge'",
    )
    .bind(&version)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(i64::try_from(test_series.len()).unwrap(), own, "{test_series:?}");
    assert!(test_series.len() >= 10, "{test_series:?}");

    // A perfect team, and one whose masks cover half of each lung and as much outside.
    let alice = app.token("alice", &[Role::Researcher]);
    let bob = app.token("bob", &[Role::Researcher]);
    let perfect: Vec<(String, Vec<u8>)> = test_series.iter().map(|s| (format!("{s}.nii"), truth.clone())).collect();
    let half: Vec<(String, Vec<u8>)> =
        test_series.iter().map(|s| (format!("masks/{s}.nii"), mask(&[0, 1, 2, 3, 8, 9, 10, 11]))).collect();
    let mut missing = perfect.clone();
    missing.pop();
    missing.push(("notes.txt".into(), b"hello".to_vec()));
    let mut ids = Vec::new();
    for (token, entries) in [(&alice, &perfect), (&bob, &half), (&bob, &missing)] {
        let sent = submit(&app, &version, Some(token), "application/zip", zip_of(entries)).await;
        ids.push(sent.assert_status(StatusCode::ACCEPTED).json()["id"].as_str().unwrap().to_owned());
    }
    let perfect_scores = scored(&app, &ids[0], &alice).await;
    assert_eq!(perfect_scores["state"], "scored", "{perfect_scores}");
    assert_eq!(perfect_scores["scores"]["n"], test_series.len());
    assert_eq!(
        (metric(&perfect_scores["scores"], "dice"), metric(&perfect_scores["scores"], "hd95")),
        (Some(1.0), Some(0.0))
    );
    let half_scores = scored(&app, &ids[1], &bob).await;
    let dice = metric(&half_scores["scores"], "dice").unwrap();
    assert!((dice - 0.5).abs() < 1e-9, "2·4 / (8 + 8): {half_scores}");
    let invalid = scored(&app, &ids[2], &bob).await;
    assert_eq!(invalid["state"], "invalid", "{invalid}");
    let codes: Vec<&str> =
        invalid["problems"].as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap()).collect();
    assert!(codes.contains(&"missing-id") && codes.contains(&"unexpected-entry"), "{codes:?}");

    let board = app.get(&format!("{CHALLENGE}/leaderboard"), None).await.assert_status(StatusCode::OK).json();
    assert_eq!(board["primary_metric"], "dice");
    let names: Vec<&str> = board["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"], "{board}");
    assert_eq!(board["entries"][1]["submissions"], 1, "an invalid submission is not on the board");
}
