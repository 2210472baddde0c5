//! Reading the catalog and deciding on the quarantine.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::dicom_gen::Instance;
use crate::helpers::TestApp;

/// Uploads `files` in one committed session as `ulrich`.
pub(crate) async fn upload(app: &TestApp, files: &[Instance]) -> Value {
    let token = app.token("ulrich", &[Role::Uploader]);
    let session =
        app.post_json("/api/v1/uploads", Some(&token), &json!({})).await.json()["id"].as_str().unwrap().to_owned();
    let mut report = Value::Null;
    for file in files {
        let request = Request::post(format!("/api/v1/uploads/{session}/files"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/dicom")
            .body(Body::from(file.to_bytes()))
            .unwrap();
        report = app.call(request).await.json();
    }
    app.post_json(&format!("/api/v1/uploads/{session}/commit"), Some(&token), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    report
}

#[tokio::test]
async fn uploaders_and_stewards_browse_studies_series_and_instances_of_a_cohort() {
    let app = TestApp::new().await;
    upload(
        &app,
        &[Instance::ct(1, 1, 1, 1), Instance::ct(1, 1, 1, 2), Instance::ct(1, 1, 2, 1), Instance::ct(2, 1, 1, 1)],
    )
    .await;
    let steward = app.token("sam", &[Role::Steward]);
    let page =
        app.get("/api/v1/cohorts/default/studies?limit=1", Some(&steward)).await.assert_status(StatusCode::OK).json();
    assert_eq!(page["studies"].as_array().unwrap().len(), 1);
    let after = page["next_after"].as_str().unwrap();
    let rest = app.get(&format!("/api/v1/cohorts/default/studies?after={after}"), Some(&steward)).await.json();
    assert_eq!(rest["studies"].as_array().unwrap().len(), 1);
    assert!(rest["next_after"].is_null());

    let all = app.get("/api/v1/cohorts/default/studies", Some(&steward)).await.json();
    let big = all["studies"].as_array().unwrap().iter().find(|s| s["instance_count"] == 3).unwrap().clone();
    assert_eq!(big["series_count"], 2);
    assert_eq!(big["modalities"], json!(["CT"]));
    assert_eq!(big["site"], "local");
    assert_eq!(big["description"], "CT CHEST");
    assert!(big["subject"].as_str().unwrap().starts_with("sub-"));
    assert!((65.0..66.0).contains(&big["age_years"].as_f64().unwrap()));

    let study_uid = big["study_uid"].as_str().unwrap();
    let study =
        app.get(&format!("/api/v1/studies/{study_uid}"), Some(&steward)).await.assert_status(StatusCode::OK).json();
    let series = study["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0]["manufacturer"], "ACME Medical");
    assert_eq!(series[0]["model"], "Scanner 3000");
    assert_eq!(series[0]["slice_thickness"], 1.25);
    assert_eq!(series[0]["pixel_spacing"], json!([0.7, 0.7]));
    let series_uid = series[0]["series_uid"].as_str().unwrap();
    let instances = app.get(&format!("/api/v1/series/{series_uid}/instances"), Some(&steward)).await.json();
    let first = &instances["instances"][0];
    assert_eq!(first["rows"], 16);
    assert_eq!(first["sha256"].as_str().unwrap().len(), 64);

    let researcher = app.token("rita", &[Role::Researcher]);
    app.get("/api/v1/cohorts/default/studies", Some(&researcher))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    app.get("/api/v1/studies/2.25.404", Some(&steward)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    app.get("/api/v1/cohorts/nope/studies", Some(&steward)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn quarantined_instances_wait_for_a_steward_to_release_or_delete_them() {
    let app = TestApp::new().await;
    let flagged = [
        Instance { burned_in: Some("YES"), ..Instance::ct(1, 1, 1, 1) },
        Instance { modality: "US", sop_class: "1.2.840.10008.5.1.4.1.1.6.1", ..Instance::ct(1, 1, 2, 1) },
    ];
    upload(&app, &flagged).await;
    let steward = app.token("sam", &[Role::Steward]);
    app.get("/api/v1/cohorts/default/studies", Some(&steward)).await.json()["studies"]
        .as_array()
        .unwrap()
        .is_empty()
        .then_some(())
        .expect("nothing published while in quarantine");
    let quarantine = app.get("/api/v1/quarantine", Some(&steward)).await.assert_status(StatusCode::OK).json();
    let items = quarantine["instances"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let codes: Vec<&str> = items.iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert!(codes.contains(&"burned-in-annotation") && codes.contains(&"burned-in-text-likely"));

    let first = items[0]["sop_uid"].as_str().unwrap();
    let released =
        app.post_json(&format!("/api/v1/quarantine/{first}/release"), Some(&steward), &json!({})).await.json();
    assert_eq!(released["status"], "published");
    let second = items[1]["sop_uid"].as_str().unwrap();
    app.delete(&format!("/api/v1/quarantine/{second}"), Some(&steward)).await.assert_status(StatusCode::NO_CONTENT);
    app.delete(&format!("/api/v1/quarantine/{second}"), Some(&steward))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");

    let studies = app.get("/api/v1/cohorts/default/studies", Some(&steward)).await.json();
    assert_eq!(studies["studies"][0]["instance_count"], 1);
    let actions = app.audit_actions().await;
    assert!(actions.ends_with(&["quarantine.release".to_owned(), "quarantine.delete".to_owned()]), "{actions:?}");
    let uploader = app.token("ulrich", &[Role::Uploader]);
    app.get("/api/v1/quarantine", Some(&uploader)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
}
