//! Annotations: DICOM SEG and RTSTRUCT linked at commit, labels and geometry
//! as JSON, NIfTI masks de-identified at the door, and discovery by annotation.

use std::io::Read;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodian::auth::Role;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

use crate::dicom_gen::Instance;
use crate::helpers::{TestApp, TestResponse};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/pydicom").join(name))
        .unwrap()
}

/// Sends `files` in one session and commits it; returns the commit answer.
async fn commit(app: &TestApp, files: &[Vec<u8>]) -> Value {
    let token = app.token("ulrich", &[Role::Uploader]);
    let session =
        app.post_json("/api/v1/uploads", Some(&token), &json!({})).await.json()["id"].as_str().unwrap().to_owned();
    for file in files {
        let request = Request::post(format!("/api/v1/uploads/{session}/files"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/dicom")
            .body(Body::from(file.clone()))
            .unwrap();
        let report = app.call(request).await.json();
        assert_eq!(report["files"][0]["outcome"], "stored", "{report}");
    }
    app.post_json(&format!("/api/v1/uploads/{session}/commit"), Some(&token), &json!({})).await.json()
}

async fn annotation_rows(app: &TestApp) -> Vec<(String, String, String, Option<uuid::Uuid>)> {
    sqlx::query_as("select kind, source, target, series_id from annotation order by kind")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

/// A CT slice whose SOP Instance UID is `sop_uid`, in series `series_uid`.
fn ct_with_uids(n: u32, series_uid: &str, sop_uid: &str) -> Vec<u8> {
    let bytes = Instance::ct(900, 1, 1, n).to_bytes();
    let mut file =
        OpenFileOptions::new().read_preamble(dicom_object::file::ReadPreamble::Always).from_reader(&bytes[..]).unwrap();
    file.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop_uid)));
    file.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series_uid)));
    file.update_meta(|meta| sop_uid.clone_into(&mut meta.media_storage_sop_instance_uid));
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

#[tokio::test]
async fn a_real_seg_is_linked_to_its_study_then_to_the_referenced_series_when_the_images_arrive() {
    let app = TestApp::new().await;
    let seg = fixture("liver_1frame.dcm");
    commit(&app, std::slice::from_ref(&seg)).await;
    let rows = annotation_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2.as_str()), ("segmentation", "dicom-seg", "study"));

    // The CT images the SEG references arrive in a later session.
    let file =
        OpenFileOptions::new().read_preamble(dicom_object::file::ReadPreamble::Always).from_reader(&seg[..]).unwrap();
    let Some(series_item) =
        file.get(tags::REFERENCED_SERIES_SEQUENCE).and_then(|e| e.items()).and_then(|i| i.first().cloned())
    else {
        panic!("the SEG has a Referenced Series Sequence")
    };
    let series_uid =
        series_item.element(tags::SERIES_INSTANCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0').to_owned();
    let referenced: Vec<String> = series_item
        .element(tags::REFERENCED_INSTANCE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .map(|i| {
            i.element(tags::REFERENCED_SOP_INSTANCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0').to_owned()
        })
        .collect();
    let images: Vec<Vec<u8>> = referenced.iter().zip(1..).map(|(uid, n)| ct_with_uids(n, &series_uid, uid)).collect();
    commit(&app, &images).await;

    let rows = annotation_rows(&app).await;
    assert_eq!(rows.len(), 1, "relinked, not duplicated");
    assert_eq!(rows[0].2, "series");
    let linked: String = sqlx::query_scalar("select se.series_uid from annotation a join series se using (series_id)")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(linked, app.state.ingest.key.uid(&series_uid), "the registry UID of the referenced series");
}

#[tokio::test]
async fn a_real_rt_structure_set_becomes_a_contour_annotation_and_is_discoverable() {
    let app = TestApp::new().await;
    let bare = fixture("rtstruct.dcm");
    let implicit = TransferSyntaxRegistry.get("1.2.840.10008.1.2").unwrap();
    let dataset = InMemDicomObject::read_dataset_with_ts(&bare[..], implicit).unwrap();
    let file = dataset.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2")).unwrap();
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).unwrap();
    commit(&app, &[bytes]).await;
    let rows = annotation_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("contour", "dicom-rtstruct"));

    let steward = app.token("stella", &[Role::Steward]);
    let count = |criteria: Value| {
        let app = &app;
        let steward = steward.clone();
        async move {
            app.post_json("/api/v1/discovery/count", Some(&steward), &json!({ "criteria": criteria })).await.json()
        }
    };
    assert_eq!(
        count(json!({"field": "annotation", "level": "low", "kind": ["contour"]})).await["counts"]["subjects"],
        1
    );
    assert_eq!(count(json!({"field": "annotation", "kind": ["segmentation"]})).await["counts"]["subjects"], 0);
}

async fn annotate(app: &TestApp, token: &str, body: &Value) -> TestResponse {
    app.post_json("/api/v1/annotations", Some(token), body).await
}

#[tokio::test]
async fn labels_and_geometry_with_provenance_are_stored_listed_and_discoverable() {
    let app = TestApp::new().await;
    let ct = Instance::ct(7, 1, 1, 1);
    commit(&app, &[ct.to_bytes()]).await;
    let token = app.token("ulrich", &[Role::Uploader]);
    let study_uid = app.state.ingest.key.uid(&ct.study_uid());
    let series_uid = app.state.ingest.key.uid(&ct.series_uid());
    let provenance = json!({"role": "radiologist", "expertise": "thoracic imaging", "years": 12, "tool": "3D Slicer 5.6", "method": "manual"});

    let label = json!({"target": {"level": "series", "uid": series_uid}, "kind": "label",
                       "label": {"system": "RadLex", "code": "RID5352", "meaning": "ground-glass opacity"}, "provenance": provenance});
    let created = annotate(&app, &token, &label).await;
    created.assert_status(StatusCode::CREATED);
    assert_eq!((created.json()["level"].as_str(), created.json()["kind"].as_str()), (Some("high"), Some("label")));

    let landmark = json!({"target": {"level": "study", "uid": study_uid}, "kind": "landmark",
                          "geometry": {"points": [[10.5, -3, 42], [11, -2.5, 40]]}, "provenance": provenance});
    annotate(&app, &token, &landmark).await.assert_status(StatusCode::CREATED);
    // The generated images carry an Issuer of Patient ID, which scopes the patient ID.
    let subject = json!({"level": "subject", "patient_id": ct.patient_id, "issuer_of_patient_id": "CNRY-ISSUER"});
    let subject_label = json!({"target": subject, "kind": "label",
                               "label": {"system": "SNOMED CT", "code": "44054006"},
                               "provenance": {"role": "algorithm", "tool": "risk-model 2.1", "method": "automatic"}});
    annotate(&app, &token, &subject_label).await.assert_status(StatusCode::CREATED);

    let listed = app.get(&format!("/api/v1/studies/{study_uid}/annotations"), Some(&token)).await.json();
    let kinds: Vec<&str> =
        listed["annotations"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 2, "the subject-level label is not on the study");
    assert!(kinds.contains(&"label") && kinds.contains(&"landmark"));
    let stored = app
        .state
        .store
        .get(&object_store::path::Path::from(format!(
            "annotations/{}.json",
            listed["annotations"].as_array().unwrap().iter().find(|a| a["kind"] == "landmark").unwrap()["id"]
                .as_str()
                .unwrap()
        )))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap()["points"][0][0], 10.5);
    assert!(app.audit_actions().await.iter().filter(|a| *a == "annotation.create").count() == 3);

    let steward = app.token("stella", &[Role::Steward]);
    let by = |criteria: Value| {
        let app = &app;
        let steward = steward.clone();
        async move {
            app.post_json("/api/v1/discovery/count", Some(&steward), &json!({ "criteria": criteria })).await.json()["counts"]["subjects"]
                .clone()
        }
    };
    assert_eq!(by(json!({"field": "annotation", "label": ["RID5352"], "role": ["radiologist"]})).await, 1);
    assert_eq!(by(json!({"field": "annotation", "level": "high", "role": ["resident"]})).await, 0);
    assert_eq!(by(json!({"field": "annotation", "role": ["algorithm"]})).await, 1);
}

#[tokio::test]
async fn bad_annotations_are_refused_with_every_problem_and_nothing_is_stored() {
    let app = TestApp::new().await;
    let ct = Instance::ct(8, 1, 1, 1);
    commit(&app, &[ct.to_bytes()]).await;
    let token = app.token("ulrich", &[Role::Uploader]);
    let series_uid = app.state.ingest.key.uid(&ct.series_uid());
    let bad = json!({"target": {"level": "series", "uid": series_uid}, "kind": "box",
                     "geometry": {"min": [5, 5, 5], "max": [1, 1, 1]},
                     "provenance": {"role": "intern", "method": "guessing"}});
    let response = annotate(&app, &token, &bad).await;
    response.assert_error(StatusCode::BAD_REQUEST, "invalid-annotation");
    assert_eq!(response.json()["problems"].as_array().unwrap().len(), 3);
    let unknown = json!({"target": {"level": "subject", "patient_id": "NOBODY-42"}, "kind": "label",
                         "label": {"system": "local", "code": "x"}, "provenance": {"role": "clinician", "method": "manual"}});
    let response = annotate(&app, &token, &unknown).await;
    response.assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(!response.text().contains("NOBODY-42"), "the patient ID is not echoed");
    annotate(&app, &app.token("rita", &[Role::Researcher]), &unknown)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let count: i64 = sqlx::query_scalar("select count(*) from annotation").fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 0);
}

/// A NIfTI-1 mask with a name and an MRN in its header and a DICOM header extension.
fn nifti_with_phi() -> Vec<u8> {
    let mut h = vec![0_u8; 348];
    h[0..4].copy_from_slice(&348_i32.to_le_bytes());
    for (i, d) in [3_i16, 8, 8, 4, 1, 1, 1, 1].iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&2_i16.to_le_bytes());
    h[72..74].copy_from_slice(&8_i16.to_le_bytes());
    h[148..161].copy_from_slice(b"SMITH^JOHN MR");
    h[228..238].copy_from_slice(b"MRN-998877");
    h[344..348].copy_from_slice(b"n+1\0");
    let extension: Vec<u8> =
        [32_i32.to_le_bytes(), 2_i32.to_le_bytes()].concat().into_iter().chain(*b"SMITH^JOHN^MRN-99").collect();
    let extension = [extension, vec![0; 32 - 8 - 17]].concat();
    h[108..112].copy_from_slice(&f32::from(u16::try_from(352 + extension.len()).unwrap()).to_le_bytes());
    let mut file = h;
    file.extend_from_slice(&[1, 0, 0, 0]);
    file.extend_from_slice(&extension);
    file.extend((0..256_u32).map(|i| u8::from(i % 3 == 0)));
    file
}

#[tokio::test]
async fn a_nifti_mask_is_stored_without_header_text_or_extensions() {
    let app = TestApp::new().await;
    let ct = Instance::ct(9, 1, 1, 1);
    commit(&app, &[ct.to_bytes()]).await;
    let token = app.token("ulrich", &[Role::Uploader]);
    let annotation = json!({"target": {"level": "series", "uid": app.state.ingest.key.uid(&ct.series_uid())},
                            "kind": "segmentation", "label": {"system": "SNOMED CT", "code": "39607008", "meaning": "lung"},
                            "provenance": {"role": "resident", "years": 2, "tool": "ITK-SNAP", "method": "semi-automatic"}});
    let boundary = "mask-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"annotation\"\r\nContent-Type: application/json\r\n\r\n{annotation}\r\n").as_bytes());
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"lung.nii\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(&nifti_with_phi());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let request = Request::post("/api/v1/annotations/masks")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body))
        .unwrap();
    let response = app.call(request).await;
    response.assert_status(StatusCode::CREATED);
    let created = response.json();
    assert_eq!(created["extensions_dropped"], true);
    let id = created["id"].as_str().unwrap();
    let stored = app
        .state
        .store
        .get(&object_store::path::Path::from(format!("annotations/{id}.nii.gz")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&stored[..]).read_to_end(&mut plain).unwrap();
    for phi in [&b"SMITH"[..], b"MRN-99"] {
        assert!(!plain.windows(phi.len()).any(|w| w == phi), "header text survived");
    }
    assert_eq!(plain.len(), 352 + 256, "header, empty extension flag, voxels");
    assert_eq!(&plain[352..], (0..256_u32).map(|i| u8::from(i % 3 == 0)).collect::<Vec<_>>().as_slice());
    let (role, method, sha): (String, String, Vec<u8>) =
        sqlx::query_as("select annotator_role, method, sha256 from annotation").fetch_one(&app.db).await.unwrap();
    assert_eq!((role.as_str(), method.as_str()), ("resident", "semi-automatic"));
    assert_eq!(sha, aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &stored).as_ref());
    let swept = custodian::ingest::sweep::sweep_orphans(&app.db, &app.state.store, None, std::time::Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(swept.deleted, 0, "the sweep keeps a payload its annotation points to");

    let request = Request::post("/api/v1/annotations/masks")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"annotation\"\r\n\r\n{annotation}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nDICM this is not a mask\r\n--{boundary}--\r\n")))
        .unwrap();
    let response = app.call(request).await;
    assert_eq!(
        response.assert_error(StatusCode::BAD_REQUEST, "bad-request"),
        "the file is not an acceptable mask: not a NIfTI-1 or NIfTI-2 file"
    );
}
