//! DICOMweb over a release: the demo project's member searches its release
//! (QIDO-RS) and retrieves instances and metadata (WADO-RS) in the project's
//! UIDs, under the same grant check and audit as file downloads; and a
//! DICOMweb client nobody here wrote (`dicomweb-client`, PyPI) does the same
//! over a socket.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use axum::http::{StatusCode, header};
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::extracts::{audit_details, built, contains, eventually, get_with, sha256, verified_manifest};
use crate::helpers::{TestApp, TestResponse};
use crate::python;

/// The release's DICOM files by their UIDs: `(study, series, sop)` → path.
fn by_uids(manifest: &custodian::release::manifest::Manifest) -> HashMap<(String, String, String), String> {
    manifest
        .files
        .iter()
        .filter_map(|f| {
            let rest = f.path.strip_prefix("dicom/")?.strip_suffix(".dcm")?;
            let mut uids = rest.split('/').map(str::to_owned);
            Some(((uids.next()?, uids.next()?, uids.next()?), f.path.clone()))
        })
        .collect()
}

/// The DICOM JSON array of a search or metadata answer.
#[track_caller]
fn dicom_json(response: &TestResponse) -> Vec<Value> {
    response.assert_status(StatusCode::OK);
    assert_eq!(response.headers[header::CONTENT_TYPE], "application/dicom+json");
    response.json().as_array().expect("an array").clone()
}

/// The first value of attribute `tag` (`GGGGEEEE`) of a DICOM JSON object.
fn first<'a>(object: &'a Value, tag: &str) -> &'a Value {
    &object[tag]["Value"][0]
}

fn text(object: &Value, tag: &str) -> String {
    first(object, tag).as_str().unwrap_or_else(|| panic!("{tag} in {object}")).to_owned()
}

/// The parts of a `multipart/related; type="application/dicom"` answer.
#[track_caller]
fn parts(response: &TestResponse) -> Vec<Vec<u8>> {
    response.assert_status(StatusCode::OK);
    let content_type = response.headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("multipart/related; type=\"application/dicom\""), "{content_type}");
    assert_eq!(response.headers[header::CONTENT_LENGTH], response.body.len().to_string().as_str());
    let delimiter = format!("--{}", content_type.split("boundary=").nth(1).unwrap());
    let body = &response.body[..];
    let at: Vec<usize> = (0..body.len()).filter(|&i| body[i..].starts_with(delimiter.as_bytes())).collect();
    assert!(body[*at.last().unwrap()..].starts_with(format!("{delimiter}--").as_bytes()), "closed");
    at.windows(2)
        .map(|w| {
            let part = &body[w[0] + delimiter.len() + 2..w[1] - 2];
            let split = part.windows(4).position(|x| x == b"\r\n\r\n").unwrap();
            let head = String::from_utf8_lossy(&part[..split]);
            assert!(head.contains("Content-Type: application/dicom"), "{head}");
            part[split + 4..].to_vec()
        })
        .collect()
}

/// Every registry pseudonym and registry UID.
async fn registry_identifiers(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "select pseudonym from subject
         union all select study_uid from study union all select series_uid from series
         union all select sop_uid from instance",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_member_searches_the_releases_studies_series_and_instances_in_the_projects_uids() {
    let (app, extract, rita) = built().await;
    let (id, project) = (extract["id"].as_str().unwrap(), extract["project_id"].as_str().unwrap());
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let files = by_uids(&manifest);
    let root = format!("/dicomweb/projects/{project}");
    let search = |query: String| {
        let (app, rita) = (&app, &rita);
        async move { dicom_json(&app.get(&query, Some(rita)).await) }
    };

    // Studies: every study of the release once, with its counts, modalities and Retrieve URL.
    let studies = search(format!("{root}/studies")).await;
    let released: BTreeSet<&String> = files.keys().map(|(study, _, _)| study).collect();
    let found: BTreeSet<String> = studies.iter().map(|s| text(s, "0020000D")).collect();
    assert_eq!(found.iter().collect::<BTreeSet<_>>(), released);
    let instances: u64 = studies.iter().map(|s| first(s, "00201208").as_u64().unwrap()).sum();
    assert_eq!(instances, files.len() as u64);
    for study in &studies {
        let uid = text(study, "0020000D");
        assert!(text(study, "00100020").starts_with("psub-"), "{study}");
        assert_eq!(study["00080061"]["Value"], json!(["MR"]), "only the granted modality: {study}");
        assert!(text(study, "00081190").ends_with(&format!("{root}/studies/{uid}")), "{study}");
        let series: BTreeSet<&String> = files.keys().filter(|(s, _, _)| *s == uid).map(|(_, s, _)| s).collect();
        assert_eq!(first(study, "00201206").as_u64().unwrap(), series.len() as u64);
        assert!(study.get("00080060").is_none(), "series attributes only when asked for");
    }

    // Matching: subject (wildcards), study UID lists, modality, date ranges, pages, includefield.
    let patient = text(&studies[0], "00100020");
    let of_patient = search(format!("{root}/studies?PatientID={patient}")).await;
    assert!(!of_patient.is_empty() && of_patient.iter().all(|s| text(s, "00100020") == patient));
    assert_eq!(search(format!("{root}/studies?PatientID=psub-*")).await.len(), studies.len());
    assert_eq!(search(format!("{root}/studies?PatientName={}", &patient[..patient.len() - 1])).await.len(), 0);
    let two = format!("{},{}", text(&studies[0], "0020000D"), text(&studies[1], "0020000D"));
    assert_eq!(search(format!("{root}/studies?StudyInstanceUID={two}")).await.len(), 2);
    assert_eq!(search(format!("{root}/studies?ModalitiesInStudy=MR")).await.len(), studies.len());
    assert!(search(format!("{root}/studies?00080061=CT")).await.is_empty(), "no CT was granted");
    let date = text(&studies[0], "00080020");
    let on_date = search(format!("{root}/studies?StudyDate={date}-{date}")).await;
    assert!(!on_date.is_empty() && on_date.iter().all(|s| text(s, "00080020") == date));
    let from = search(format!("{root}/studies?StudyDate={date}-")).await;
    assert!(from.iter().all(|s| text(s, "00080020") >= date) && from.len() <= studies.len());
    assert!(search(format!("{root}/studies?StudyDate=-19000101")).await.is_empty());
    let page = search(format!("{root}/studies?limit=1&offset=1")).await;
    assert_eq!(page, [studies[1].clone()]);
    let all = search(format!("{root}/studies?includefield=all&limit=1")).await;
    assert_eq!(text(&all[0], "00080060"), "MR", "includefield=all adds what the index holds");
    let one = search(format!("{root}/studies?includefield=Modality&limit=1")).await;
    assert!(one[0].get("00080060").is_some() && one[0].get("00280010").is_none(), "{}", one[0]);

    // Series of a study, and instances of a series, as the release's files say.
    let study = text(&studies[0], "0020000D");
    let series = search(format!("{root}/studies/{study}/series")).await;
    assert_eq!(series.len() as u64, first(&studies[0], "00201206").as_u64().unwrap());
    assert_eq!(search(format!("{root}/series?StudyInstanceUID={study}")).await, series);
    let in_series: u64 = series.iter().map(|s| first(s, "00201209").as_u64().unwrap()).sum();
    assert_eq!(in_series, first(&studies[0], "00201208").as_u64().unwrap());
    let one_series = text(&series[0], "0020000E");
    assert_eq!(text(&series[0], "00080060"), "MR");
    let listed = search(format!("{root}/studies/{study}/series/{one_series}/instances")).await;
    assert_eq!(listed.len() as u64, first(&series[0], "00201209").as_u64().unwrap());
    for instance in &listed {
        let key = (study.clone(), one_series.clone(), text(instance, "00080018"));
        assert!(files.contains_key(&key), "{instance} is not a file of the release");
        assert!(instance.get("00083002").is_some(), "{instance}");
    }
    let sop = text(&listed[0], "00080018");
    let by_sop = search(format!("{root}/instances?SOPInstanceUID={sop}")).await;
    assert_eq!(by_sop.len(), 1);
    assert_eq!(search(format!("{root}/studies/{study}/instances")).await.len() as u64, in_series);

    // The same release by its id; an ignored key is said so.
    let by_id = search(format!("/dicomweb/extracts/{id}/studies")).await;
    assert_eq!(by_id.iter().map(|s| text(s, "0020000D")).collect::<BTreeSet<_>>(), found);
    let warned = app.get(&format!("{root}/studies?AccessionNumber=A1"), Some(&rita)).await;
    assert!(warned.headers[header::WARNING].to_str().unwrap().contains("AccessionNumber"));
    app.get(&format!("{root}/studies?StudyDate=2020"), Some(&rita))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");

    // No registry identifier in any answer.
    let registry = registry_identifiers(&app).await;
    let answers = serde_json::to_vec(&(studies, series, listed)).unwrap();
    for identifier in &registry {
        assert!(!contains(&answers, identifier), "a search answer holds the registry's `{identifier}`");
    }
}

#[tokio::test]
async fn a_retrieved_instance_is_the_release_file_and_its_metadata_names_only_project_uids() {
    let (app, extract, rita) = built().await;
    let (id, project) = (extract["id"].as_str().unwrap(), extract["project_id"].as_str().unwrap());
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let files = by_uids(&manifest);
    let ((study, series, sop), path) = files.iter().next().unwrap();
    let root = format!("/dicomweb/projects/{project}");
    let file = app.get(&format!("/api/v1/extracts/{id}/files/{path}"), Some(&rita)).await.body.to_vec();

    // One instance: one part, byte for byte the release's file.
    let session = ("x-download-session", "viewer-1");
    let instance_url = format!("{root}/studies/{study}/series/{series}/instances/{sop}");
    let one = parts(&get_with(&app, &instance_url, &rita, &[session]).await);
    assert_eq!(one.as_slice(), std::slice::from_ref(&file));
    // A series and a study: every file of it, in the release's bytes.
    let digests: BTreeSet<&str> = manifest.files.iter().map(|f| f.sha256.as_str()).collect();
    let of_series = parts(&app.get(&format!("{root}/studies/{study}/series/{series}"), Some(&rita)).await);
    let expected = files.keys().filter(|(s, x, _)| s == study && x == series).count();
    assert_eq!(of_series.len(), expected);
    assert!(of_series.iter().all(|p| digests.contains(sha256(p).as_str())));
    let of_study = parts(&app.get(&format!("/dicomweb/extracts/{id}/studies/{study}"), Some(&rita)).await);
    assert_eq!(of_study.len(), files.keys().filter(|(s, _, _)| s == study).count());

    // Metadata at each level: project UIDs and subject, no bulk data, no registry identifier.
    let metadata = dicom_json(&app.get(&format!("{instance_url}/metadata"), Some(&rita)).await);
    assert_eq!(metadata.len(), 1);
    assert_eq!(text(&metadata[0], "00080018"), *sop);
    assert_eq!(text(&metadata[0], "0020000D"), *study);
    assert!(text(&metadata[0], "00100020").starts_with("psub-"));
    assert!(metadata[0].get("7FE00010").is_none(), "Pixel Data is bulk data");
    let series_metadata =
        dicom_json(&app.get(&format!("{root}/studies/{study}/series/{series}/metadata"), Some(&rita)).await);
    assert_eq!(series_metadata.len(), expected);
    let study_metadata = app.get(&format!("{root}/studies/{study}/metadata"), Some(&rita)).await;
    assert_eq!(dicom_json(&study_metadata).len(), of_study.len());
    for identifier in registry_identifiers(&app).await {
        assert!(!contains(&study_metadata.body, &identifier), "metadata holds the registry's `{identifier}`");
    }

    // Audited as a download of that file, with its bytes, in the client's session.
    let downloaded = || async {
        audit_details(&app, "extract.downloaded")
            .await
            .iter()
            .any(|d| d["path"] == path.as_str() && d["session"] == "viewer-1" && d["bytes_served"] == file.len())
    };
    assert!(eventually(downloaded).await, "{:?}", audit_details(&app, "extract.downloaded").await);
    let searched =
        || async { audit_details(&app, "extract.download").await.iter().any(|d| d["path"] == "dicomweb:metadata") };
    assert!(eventually(searched).await);
}

#[tokio::test]
async fn dicomweb_refuses_other_projects_a_revoked_grant_and_unknown_uids() {
    let (app, extract, rita) = built().await;
    let (id, project) = (extract["id"].as_str().unwrap(), extract["project_id"].as_str().unwrap());
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let ((study, series, sop), _) = by_uids(&manifest).into_iter().next().unwrap();
    let root = format!("/dicomweb/projects/{project}");
    let routes = [
        format!("{root}/studies"),
        format!("{root}/studies/{study}/series/{series}/instances"),
        format!("{root}/studies/{study}/series/{series}/instances/{sop}"),
        format!("{root}/studies/{study}/metadata"),
        format!("/dicomweb/extracts/{id}/series"),
    ];

    // A member of another project sees nothing of this one.
    let bruno = app.token("bruno", &[Role::Researcher]);
    let profile = json!({"name": "Bruno Berg", "institution": "Elsewhere University", "email": "bruno@example.org", "position": "Lecturer"});
    app.put_json("/api/v1/me/profile", Some(&bruno), &profile).await.assert_status(StatusCode::CREATED);
    let other = app.post_json("/api/v1/projects", Some(&bruno), &json!({"title": "Another project"})).await.json();
    for route in &routes {
        app.get(route, Some(&bruno)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
        app.get(route, None).await.assert_status(StatusCode::UNAUTHORIZED);
    }
    let own = format!("/dicomweb/projects/{}/studies", other["id"].as_str().unwrap());
    app.get(&own, Some(&bruno)).await.assert_error(StatusCode::NOT_FOUND, "not-found");

    // UIDs the release does not hold (a registry UID among them) are not found.
    let registry_study: String =
        sqlx::query_scalar("select study_uid from study limit 1").fetch_one(&app.db).await.unwrap();
    for route in [
        format!("{root}/studies/{registry_study}"),
        format!("{root}/studies/{registry_study}/metadata"),
        format!("{root}/studies/{study}/series/{series}/instances/2.25.1"),
        format!("{root}/studies/{study}/series/2.25.1/metadata"),
    ] {
        app.get(&route, Some(&rita)).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    }
    let none = app.get(&format!("{root}/studies?StudyInstanceUID={registry_study}"), Some(&rita)).await;
    assert!(dicom_json(&none).is_empty());

    // Revoked: every request is refused from the next one on, and the refusal audited.
    let steward = app.token("sam", &[Role::Steward]);
    let revoke = json!({"action": "revoke", "reason": "data security incident"});
    let grant = extract["grant_id"].as_str().unwrap();
    app.post_json(&format!("/api/v1/grants/{grant}/state"), Some(&steward), &revoke)
        .await
        .assert_status(StatusCode::OK);
    for route in &routes {
        app.get(route, Some(&rita)).await.assert_error(StatusCode::FORBIDDEN, "grant-revoked");
    }
    // Counted as every refused data request is (one audit event an hour, each refusal counted).
    let refused: i32 =
        sqlx::query_scalar("select refusals from access_refusal where username = 'rita' and code = 'grant-revoked'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(refused, i32::try_from(routes.len()).unwrap());
    assert!(app.audit_actions().await.contains(&"access.refused".to_owned()));
}

/// The Python check: `dicomweb-client` searches and retrieves through the real server.
const CLIENT_SCRIPT: &str = include_str!("fixtures/dicomweb_release_client.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicomweb_client_from_pypi_searches_and_retrieves_the_release() {
    let (app, extract, rita) = built().await;
    let (id, project) = (extract["id"].as_str().unwrap(), extract["project_id"].as_str().unwrap());
    let (manifest, _) = verified_manifest(&app, id, &rita).await;
    let files = by_uids(&manifest);
    let served = app.serve().await;
    let base = format!("http://{}/dicomweb/projects/{project}", served.host);

    let rita_again = rita.clone();
    let python = python::tools().join("python");
    let output =
        tokio::task::spawn_blocking(move || Command::new(python).args(["-c", CLIENT_SCRIPT, &base, &rita]).output())
            .await
            .unwrap()
            .expect("running the dicomweb-client script");
    served.stop().await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    let studies: BTreeSet<&String> = files.keys().map(|(study, _, _)| study).collect();
    assert_eq!(report["studies"], studies.len());
    let (study, series, sop) = (&report["study"], &report["series"], &report["sop"]);
    let key =
        (study.as_str().unwrap().to_owned(), series.as_str().unwrap().to_owned(), sop.as_str().unwrap().to_owned());
    let path = files.get(&key).expect("the client's instance is a file of the release");
    let file = app.get(&format!("/api/v1/extracts/{id}/files/{path}"), Some(&rita_again)).await.body.to_vec();
    let object = dicom_object::OpenFileOptions::new().from_reader(&file[..]).unwrap();
    let pixels = object.element(dicom_dictionary_std::tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(report["pixel_sha256"], sha256(&pixels), "the client decoded the release file's pixels");
    assert_eq!(report["series_instances"], files.keys().filter(|(s, x, _)| s == &key.0 && x == &key.1).count());
    assert!(report["patient"].as_str().unwrap().starts_with("psub-"), "{report}");
    assert_eq!(report["metadata_sop"], *sop);
    assert_eq!(report["ct_studies"], 0);
}
