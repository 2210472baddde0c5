//! Curating an open cohort for a challenge: only subjects whose consent
//! permits open release join it, its split is reproducible and never leaks a
//! subject across splits, and the checks publication makes name every
//! offending subject or split.

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const CHALLENGE: &str = "/api/v1/open-cohorts/demo-chest-xray-challenge";

/// The demo registry: 120 subjects at three sites, about a third of them in
/// the open chest X-ray cohort (uploaded into it under its open-release consent).
async fn demo() -> (TestApp, String) {
    let app = TestApp::new().await;
    custodian::demo::seed_all(&app.state.ingest, &app.state.config, 120, 7).await.unwrap().unwrap();
    let olga = app.token("olga", &[Role::Organizer]);
    (app, olga)
}

async fn configure(app: &TestApp, path: &str, token: &str) -> Value {
    let settings =
        json!({"task": {"type": "classification", "system": "SNOMED CT", "codes": ["233604007", "17621005"]}});
    app.put_json(path, Some(token), &settings).await.assert_status(StatusCode::OK).json()
}

fn sizes(report: &Value) -> Vec<i64> {
    report["splits"].as_array().unwrap().iter().map(|s| s["subjects"].as_i64().unwrap()).collect()
}

async fn actions(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("select action from audit_event where action like 'open_cohort.%' order by seq")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_organizer_splits_the_open_cohort_reproducibly_and_publication_checks_name_what_is_wrong() {
    let (app, olga) = demo().await;
    let cohort = configure(&app, CHALLENGE, &olga).await;
    let total = cohort["subjects"].as_i64().unwrap();
    assert!(total >= 30, "{cohort}");
    assert_eq!(cohort["min_split_size"], 10, "the cohort's suppression threshold by default");

    let spec = json!({"spec": {"method": "random", "seed": 42, "fractions": {"train": 0.7, "validation": 0.1, "test": 0.2},
                               "stratify_by": ["sex"]}});
    let first =
        app.put_json(&format!("{CHALLENGE}/split"), Some(&olga), &spec).await.assert_status(StatusCode::OK).json();
    let again =
        app.put_json(&format!("{CHALLENGE}/split"), Some(&olga), &spec).await.assert_status(StatusCode::OK).json();
    assert_eq!(first, again, "the same seed and subjects give the same split");
    assert_eq!(sizes(&first).iter().sum::<i64>(), total, "{first}");
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "select split, count(*) from open_cohort_split o join cohort c using (cohort_id)
         where c.slug = 'demo-chest-xray-challenge' group by split order by split",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(stored.iter().map(|(_, n)| n).sum::<i64>(), total);

    // A validation split of a tenth is below the minimum of ten: named, with its size.
    let ready = app.get(&format!("{CHALLENGE}/readiness"), Some(&olga)).await.assert_status(StatusCode::OK).json();
    assert_eq!(ready["ready"], false, "{ready}");
    let codes: Vec<&str> = ready["problems"].as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["split-below-minimum"], "{ready}");
    assert!(ready["problems"][0]["message"].as_str().unwrap().starts_with("split validation has "), "{ready}");

    let halves =
        json!({"spec": {"method": "random", "seed": 42, "fractions": {"train": 0.5, "validation": 0, "test": 0.5}}});
    app.put_json(&format!("{CHALLENGE}/split"), Some(&olga), &halves).await.assert_status(StatusCode::OK);
    let ready = app.get(&format!("{CHALLENGE}/readiness"), Some(&olga)).await.json();
    assert_eq!(ready, json!({"ready": true, "problems": []}));

    // A quarantined instance of one subject stops publication, naming the subject.
    let held: String = sqlx::query_scalar(
        "with one as (select i.instance_id, s.pseudonym from instance i join series se using (series_id)
                      join study st using (study_id) join subject s using (subject_id) join cohort c on c.cohort_id = st.cohort_id
                      where c.slug = 'demo-chest-xray-challenge' order by i.instance_id limit 1)
         update instance set status = 'quarantined', quarantine_code = 'burned-in-text' from one
         where instance.instance_id = one.instance_id returning one.pseudonym",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let ready = app.get(&format!("{CHALLENGE}/readiness"), Some(&olga)).await.json();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["problems"][0]["code"], "quarantined-instance");
    assert!(ready["problems"][0]["message"].as_str().unwrap().starts_with(&format!("{held}:")), "{ready}");

    assert_eq!(
        actions(&app).await,
        ["open_cohort.configure", "open_cohort.split", "open_cohort.split", "open_cohort.split"]
    );
}

#[tokio::test]
async fn subjects_join_an_open_cohort_only_under_consent_to_open_release_and_a_site_can_be_held_out() {
    let (app, olga) = demo().await;
    let admin = app.token("alice", &[Role::Admin]);
    let new = json!({"slug": "site-shift", "title": "Site shift challenge", "tier": "open", "design": "retrospective",
                     "source": "challenge", "license": "CC-BY-4.0", "citation": "Site shift challenge (2026)"});
    app.post_json("/api/v1/cohorts", Some(&olga), &new).await.assert_status(StatusCode::CREATED);
    let path = "/api/v1/open-cohorts/site-shift";
    configure(&app, path, &olga).await;

    // The neuro cohort's consent (HMB) does not permit open release: every subject is named, none joins.
    let neuro = json!({"criteria": {"field": "cohort", "in": ["demo-neuro-mri"]}});
    let refused = app.post_json(&format!("{path}/subjects"), Some(&olga), &neuro).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "not-publishable");
    let refused = refused.json();
    let problems = refused["problems"].as_array().unwrap();
    let open_consent = problems.iter().filter(|p| p["code"] == "no-open-release-consent").count();
    assert!(open_consent > 0, "{refused}");
    for problem in problems {
        assert!(problem["message"].as_str().unwrap().starts_with("sub-"), "named by registry pseudonym: {problem}");
    }
    let cohort = app.get(path, Some(&olga)).await.json();
    assert_eq!(cohort["subjects"], 0, "nothing joined");

    // An unknown pseudonym is named too.
    let unknown = json!({"pseudonyms": ["sub-NOTAREALSUBJECT"]});
    let refused = app.post_json(&format!("{path}/subjects"), Some(&olga), &unknown).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "not-publishable");
    let refused = refused.json();
    assert_eq!(refused["problems"][0]["code"], "unknown-subject");

    // Once the neuro cohort's terms permit open release, they join, and adding them again adds nothing.
    let terms = json!({"terms": {"permission": "HMB", "modifiers": ["NCU", "IRB", "PUB"], "open_release": true}});
    app.put_json("/api/v1/cohorts/demo-neuro-mri/consent", Some(&admin), &terms).await.assert_status(StatusCode::OK);
    let added =
        app.post_json(&format!("{path}/subjects"), Some(&olga), &neuro).await.assert_status(StatusCode::OK).json();
    assert_eq!(added["added"], 120, "{added}");
    let again =
        app.post_json(&format!("{path}/subjects"), Some(&olga), &neuro).await.assert_status(StatusCode::OK).json();
    assert_eq!((again["added"].as_i64(), again["already"].as_i64()), (Some(0), Some(120)));

    // Holding out one site: the test split is that site's subjects, and only theirs.
    let spec = json!({"spec": {"method": "cross_site", "seed": 3, "test_sites": ["rih"], "validation_fraction": 0.2}});
    let report = app.put_json(&format!("{path}/split"), Some(&olga), &spec).await.assert_status(StatusCode::OK).json();
    assert_eq!(report["held_out_sites"], json!(["rih"]));
    let test = report["splits"].as_array().unwrap().iter().find(|s| s["split"] == "test").unwrap();
    assert_eq!(test["sites"], json!(["rih"]), "{report}");
    let at_rih: i64 =
        sqlx::query_scalar("select count(*) from subject s join site using (site_id) where site.code = 'rih'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(test["subjects"], at_rih);
    let unknown_site = json!({"spec": {"method": "cross_site", "seed": 3, "test_sites": ["nowhere"]}});
    app.put_json(&format!("{path}/split"), Some(&olga), &unknown_site)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-split");
}

#[tokio::test]
async fn only_organizers_and_admins_curate_open_cohorts_and_only_open_ones() {
    let (app, olga) = demo().await;
    let admin = app.token("alice", &[Role::Admin]);
    configure(&app, CHALLENGE, &admin).await;
    let settings = json!({});
    for role in [Role::Researcher, Role::Steward, Role::Uploader] {
        let token = app.token("someone", &[role]);
        app.put_json(CHALLENGE, Some(&token), &settings).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
        app.get(CHALLENGE, Some(&token)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
        app.get(&format!("{CHALLENGE}/readiness"), Some(&token)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
        let selection = json!({"pseudonyms": ["sub-X"]});
        app.post_json(&format!("{CHALLENGE}/subjects"), Some(&token), &selection)
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    app.get(CHALLENGE, None).await.assert_status(StatusCode::UNAUTHORIZED);
    // A controlled cohort is no open cohort, whoever asks.
    app.put_json("/api/v1/open-cohorts/demo-neuro-mri", Some(&olga), &settings)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    // A minimum below the suppression threshold would publish what discovery hides.
    app.put_json(CHALLENGE, Some(&olga), &json!({"min_split_size": 3}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
}
