//! Curating an open cohort for a challenge: only subjects whose consent
//! permits open release join it, its split is reproducible and never leaks a
//! subject across splits, and the checks publication makes name every
//! offending subject or split.

use axum::http::StatusCode;
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::helpers::TestApp;

pub(crate) const CHALLENGE: &str = "/api/v1/open-cohorts/demo-chest-xray-challenge";

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
    let cohort = app.get(&format!("{path}/curation"), Some(&olga)).await.json();
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
        app.get(&format!("{CHALLENGE}/curation"), Some(&token)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
        app.get(&format!("{CHALLENGE}/readiness"), Some(&token)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
        let selection = json!({"pseudonyms": ["sub-X"]});
        app.post_json(&format!("{CHALLENGE}/subjects"), Some(&token), &selection)
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    app.get(&format!("{CHALLENGE}/curation"), None).await.assert_status(StatusCode::UNAUTHORIZED);
    // Its landing document is public, once a version is published.
    app.get(CHALLENGE, None).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    // A controlled cohort is no open cohort, whoever asks.
    app.put_json("/api/v1/open-cohorts/demo-neuro-mri", Some(&olga), &settings)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    // A minimum below the suppression threshold would publish what discovery hides.
    app.put_json(CHALLENGE, Some(&olga), &json!({"min_split_size": 3}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
}

/// The demo's chest X-ray cohort set up as a challenge on its labels,
/// published, and its first version built: the app, the organizer's token,
/// the version.
pub(crate) async fn published() -> (TestApp, String, Value) {
    let (app, olga) = demo().await;
    let settings = json!({"task": {"type": "classification", "system": "RadLex", "codes": ["RID5352", "RID39148"]},
                          "annotation_kinds": ["label"], "fields": ["sex"]});
    app.put_json(CHALLENGE, Some(&olga), &settings).await.assert_status(StatusCode::OK);
    let halves =
        json!({"spec": {"method": "random", "seed": 9, "fractions": {"train": 0.5, "validation": 0, "test": 0.5}}});
    app.put_json(&format!("{CHALLENGE}/split"), Some(&olga), &halves).await.assert_status(StatusCode::OK);
    let queued = app.post_json(&format!("{CHALLENGE}/versions"), Some(&olga), &json!({})).await;
    let queued = queued.assert_status(StatusCode::ACCEPTED).json();
    assert_eq!((queued["state"].as_str(), queued["version"].as_i64()), (Some("queued"), Some(1)), "{queued}");
    assert_eq!(queued["open_cohort"], "demo-chest-xray-challenge");
    let id = queued["id"].as_str().unwrap().to_owned();
    // Not public while it builds.
    app.get(&format!("/api/v1/extracts/{id}/manifest"), None).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    crate::extracts::work(&app).await;
    let version = app.get(&format!("{CHALLENGE}/versions/{id}"), None).await.assert_status(StatusCode::OK).json();
    assert_eq!(version["state"], "ready", "{version}");
    (app, olga, version)
}

/// The manifest of a version as anyone reads it, verified against the published keys.
async fn anonymous_manifest(app: &TestApp, id: &str) -> custodian::release::manifest::Manifest {
    let bytes = app.get(&format!("/api/v1/extracts/{id}/manifest"), None).await;
    let signature = app.get(&format!("/api/v1/extracts/{id}/manifest.sig"), None).await;
    let jwks = app.get("/.well-known/custodian/release-keys", None).await.body.to_vec();
    let keys = custodian::release::manifest::PublishedKey::from_jwks(&jwks).unwrap();
    custodian::release::manifest::verify(
        &bytes.assert_status(StatusCode::OK).body,
        &signature.assert_status(StatusCode::OK).body,
        &keys,
    )
    .expect("the manifest verifies")
}

#[tokio::test]
async fn a_published_version_is_downloaded_by_anyone_one_folder_per_split_with_the_test_labels_withheld() {
    let (app, _, version) = published().await;
    let id = version["id"].as_str().unwrap();

    // Listed and landed on without a login.
    let listed = app.get("/api/v1/open-cohorts", None).await.assert_status(StatusCode::OK).json();
    assert_eq!(listed["open_cohorts"][0]["slug"], "demo-chest-xray-challenge", "{listed}");
    let landing = app.get(CHALLENGE, None).await.assert_status(StatusCode::OK).json();
    assert_eq!(landing["license"], "CC-BY-4.0");
    assert_eq!(landing["versions"][0]["extract_id"], id);
    let splits = &landing["versions"][0]["splits"];
    assert!(splits["train"].as_i64().unwrap() >= 10 && splits["test"].as_i64().unwrap() >= 10, "{landing}");
    // Breakdowns by site, scanner, sex and age band per split, small cells without their count.
    let cells = landing["versions"][0]["breakdowns"].as_array().unwrap();
    for by in ["site", "scanner", "sex", "age_band"] {
        assert!(cells.iter().any(|c| c["by"] == by), "{by}: {cells:?}");
    }
    for cell in cells {
        match cell["subjects"].as_i64() {
            Some(n) => assert!(n >= 10 && cell["suppressed"] == false, "{cell}"),
            None => assert_eq!(cell["suppressed"], true, "{cell}"),
        }
    }
    for split in ["train", "test"] {
        let by_site: i64 = cells
            .iter()
            .filter(|c| c["by"] == "site" && c["split"] == split)
            .filter_map(|c| c["subjects"].as_i64())
            .sum();
        assert!(by_site <= splits[split].as_i64().unwrap(), "{split}: {cells:?}");
    }
    assert!(cells.iter().any(|c| c["suppressed"] == true), "a 20-subject split has small cells: {cells:?}");

    // Anyone downloads it, manifest verified, every file by its digest.
    let manifest = anonymous_manifest(&app, id).await;
    assert_eq!(manifest.open_cohort.as_deref(), Some("demo-chest-xray-challenge"));
    assert_eq!((manifest.project_id, manifest.grant_id), (None, None));
    let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for document in ["README.md", "datacite.json", "split.json", "deid-conformance.json"] {
        assert!(paths.contains(&document), "{paths:?}");
    }
    assert!(paths.iter().any(|p| p.starts_with("train/dicom/")), "{paths:?}");
    assert!(paths.iter().any(|p| p.starts_with("test/dicom/")), "{paths:?}");
    assert!(paths.contains(&"train/tables/subjects.csv"), "{paths:?}");
    assert!(paths.contains(&"train/annotations/index.json"), "the training labels are released: {paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("test/annotations/")), "the test labels are withheld: {paths:?}");
    for file in manifest.files.iter().filter(|f| !f.media_type.starts_with("application/dicom")) {
        let got = app.get(&format!("/api/v1/extracts/{id}/files/{}", file.path), None).await;
        assert_eq!(crate::extracts::sha256(&got.assert_status(StatusCode::OK).body), file.sha256, "{}", file.path);
    }
    let split = app.get(&format!("/api/v1/extracts/{id}/files/split.json"), None).await.body;
    assert!(!crate::extracts::contains(&split, "sub-"), "no registry pseudonym in the split's description");

    // Open IDs are neither the registry's pseudonyms nor a project's.
    let csv = app.get(&format!("/api/v1/extracts/{id}/files/train/tables/subjects.csv"), None).await.body;
    let csv = String::from_utf8(csv.to_vec()).unwrap();
    let open_ids: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert!(!open_ids.is_empty());
    let registry: Vec<String> = sqlx::query_scalar("select pseudonym from subject").fetch_all(&app.db).await.unwrap();
    for open in &open_ids {
        assert!(!registry.iter().any(|r| r == open), "{open} is a registry pseudonym");
        assert!(!registry.iter().any(|r| csv.contains(r.as_str())), "a registry pseudonym is in the table");
    }

    // The archive too, and the download is audited against the cohort.
    let zip = app.get(&format!("/api/v1/extracts/{id}/archive?prefix=test/tables/"), None).await;
    zip.assert_status(StatusCode::OK);
    let done = || async {
        crate::extracts::audit_details(&app, "extract.downloaded")
            .await
            .iter()
            .any(|d| d["path"] == "archive.zip:test/tables/")
    };
    assert!(crate::extracts::eventually(done).await);
    let target: String = sqlx::query_scalar(
        "select target from audit_event where action = 'extract.downloaded' and details ->> 'path' = 'archive.zip:test/tables/'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(target, "cohort:demo-chest-xray-challenge");
    let actor: String = sqlx::query_scalar("select actor from audit_event where action = 'extract.downloaded' limit 1")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(actor, "anonymous");
}

#[tokio::test]
async fn a_click_through_agreement_is_accepted_by_a_signed_in_user_before_any_download() {
    let (app, olga, version) = published().await;
    let id = version["id"].as_str().unwrap();
    let settings = json!({"task": {"type": "classification", "system": "RadLex", "codes": ["RID5352", "RID39148"]},
                          "annotation_kinds": ["label"], "agreement": "I will not try to re-identify anyone."});
    app.put_json(CHALLENGE, Some(&olga), &settings).await.assert_status(StatusCode::OK);
    let manifest = format!("/api/v1/extracts/{id}/manifest");
    app.get(&manifest, None).await.assert_error(StatusCode::FORBIDDEN, "agreement-required");
    let rita = app.token("rita", &[Role::Researcher]);
    app.get(&manifest, Some(&rita)).await.assert_error(StatusCode::FORBIDDEN, "agreement-required");
    let landing = app.get(CHALLENGE, None).await.json();
    assert_eq!(landing["agreement"], "I will not try to re-identify anyone.");
    app.post_json(&format!("{CHALLENGE}/agreement"), None, &json!({})).await.assert_status(StatusCode::UNAUTHORIZED);
    let accepted = app.post_json(&format!("{CHALLENGE}/agreement"), Some(&rita), &json!({})).await;
    accepted.assert_status(StatusCode::OK);
    app.get(&manifest, Some(&rita)).await.assert_status(StatusCode::OK);
    app.get(&manifest, None).await.assert_error(StatusCode::FORBIDDEN, "agreement-required");
    // A changed agreement is accepted anew.
    let changed = json!({"agreement": "I will cite the cohort and not re-identify anyone."});
    app.put_json(CHALLENGE, Some(&olga), &changed).await.assert_status(StatusCode::OK);
    app.get(&manifest, Some(&rita)).await.assert_error(StatusCode::FORBIDDEN, "agreement-required");
    assert!(actions(&app).await.contains(&"open_cohort.agreement_accepted".to_owned()));
}

#[tokio::test]
async fn publication_is_refused_with_every_problem_and_nothing_is_queued() {
    let (app, olga) = demo().await;
    configure(&app, CHALLENGE, &olga).await;
    let refused = app.post_json(&format!("{CHALLENGE}/versions"), Some(&olga), &json!({})).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "not-publishable");
    assert_eq!(refused.json()["problems"][0]["code"], "split-required");
    let reveal = json!({"reveal_labels": true});
    let halves =
        json!({"spec": {"method": "random", "seed": 1, "fractions": {"train": 0.5, "validation": 0, "test": 0.5}}});
    app.put_json(&format!("{CHALLENGE}/split"), Some(&olga), &halves).await.assert_status(StatusCode::OK);
    app.post_json(&format!("{CHALLENGE}/versions"), Some(&olga), &reveal)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    let rita = app.token("rita", &[Role::Researcher]);
    app.post_json(&format!("{CHALLENGE}/versions"), Some(&rita), &json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let versions: i64 = sqlx::query_scalar("select count(*) from extract where open_cohort_id is not null")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(versions, 0);
}

#[tokio::test]
async fn a_withdrawal_after_publication_makes_a_new_version_without_the_subject_and_with_its_diff() {
    let (app, _, first) = published().await;
    let first_id = first["id"].as_str().unwrap();
    let pseudonym: String = sqlx::query_scalar(
        "select s.pseudonym from extract_subject e join subject s using (subject_id)
         where e.extract_id = $1 and e.split = 'train' order by 1 limit 1",
    )
    .bind(first_id.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    let steward = app.token("sam", &[Role::Steward]);
    let withdrawal = json!({"pseudonym": pseudonym, "scope": "full"});
    app.post_json("/api/v1/withdrawals", Some(&steward), &withdrawal).await.assert_status(StatusCode::CREATED);
    crate::extracts::work(&app).await;

    let landing = app.get(CHALLENGE, None).await.json();
    let (second, earlier) = (&landing["versions"][0], &landing["versions"][1]);
    assert_eq!((second["version"].as_i64(), second["state"].as_str()), (Some(2), Some("ready")), "{landing}");
    assert_eq!(earlier["state"], "superseded", "{landing}");
    assert_eq!(
        second["splits"]["train"].as_i64().unwrap() + 1,
        earlier["splits"]["train"].as_i64().unwrap(),
        "the frozen split, less the subject"
    );
    let second_id = second["extract_id"].as_str().unwrap();
    let manifest = anonymous_manifest(&app, second_id).await;
    assert_eq!(manifest.supersedes.map(|id| id.to_string()).as_deref(), Some(first_id));
    let diff = manifest.diff.expect("a machine-readable diff");
    assert_eq!(diff.removed_subjects.len(), 1, "{diff:?}");
    let removed = &diff.removed_subjects[0];
    let table = |id: String| {
        let app = &app;
        async move {
            let body = app.get(&format!("/api/v1/extracts/{id}/files/train/tables/subjects.csv"), None).await.body;
            String::from_utf8(body.to_vec()).unwrap()
        }
    };
    assert!(table(first_id.to_owned()).await.contains(removed.as_str()), "the diff names the subject's open ID");
    assert!(!table(second_id.to_owned()).await.contains(removed.as_str()));
    assert_ne!(removed, &pseudonym, "by its open ID, never its registry pseudonym");
    // The earlier version is still served during its grace period.
    app.get(&format!("/api/v1/extracts/{first_id}/manifest"), None).await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn custodian_fetch_downloads_a_published_version_without_a_token_and_a_drs_client_reads_it() {
    let (app, _, version) = published().await;
    let id = version["id"].as_str().unwrap();
    let served = app.serve().await;
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("challenge");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_custodian"))
        .args(["fetch", "--server", &format!("http://{}", served.host), "--extract", id, "--out"])
        .arg(&target)
        .env_remove("CUSTODIAN_TOKEN")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("downloading anonymously"), "{stderr}");
    let manifest = anonymous_manifest(&app, id).await;
    for file in &manifest.files {
        let bytes = std::fs::read(target.join(&file.path)).unwrap();
        assert_eq!(crate::extracts::sha256(&bytes), file.sha256, "{}", file.path);
    }

    // A project's release is not fetched without a token, and says why.
    let (project, release, _) = crate::extracts::built().await;
    let project_served = project.serve().await;
    let private = release["id"].as_str().map(str::to_owned);
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_custodian"))
        .args(["fetch", "--server", &format!("http://{}", project_served.host), "--extract"])
        .arg(private.as_deref().unwrap_or_default())
        .arg("--out")
        .arg(out.path().join("private"))
        .env_remove("CUSTODIAN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("give a token"), "{}", String::from_utf8_lossy(&run.stderr));

    // DRS: the version is a bundle anyone reads, its files blobs with their SHA-256.
    let bundle = app.get(&format!("/ga4gh/drs/v1/objects/{}", id.replace('-', "")), None).await;
    let bundle = bundle.assert_status(StatusCode::OK).json();
    let names: Vec<&str> = bundle["contents"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"train") && names.contains(&"test") && names.contains(&"README.md"), "{names:?}");
    served.stop().await;
    project_served.stop().await;
}

#[tokio::test]
async fn a_version_holds_only_the_open_cohorts_own_studies_not_its_subjects_studies_elsewhere() {
    let (app, olga) = demo().await;
    let settings = json!({"task": {"type": "classification", "system": "RadLex", "codes": ["RID5352", "RID39148"]},
                          "annotation_kinds": ["label"], "fields": ["age_at_study"]});
    app.put_json(CHALLENGE, Some(&olga), &settings).await.assert_status(StatusCode::OK);
    let all_train =
        json!({"spec": {"method": "random", "seed": 3, "fractions": {"train": 0.5, "validation": 0, "test": 0.5}}});
    app.put_json(&format!("{CHALLENGE}/split"), Some(&olga), &all_train).await.assert_status(StatusCode::OK);
    let id = app.post_json(&format!("{CHALLENGE}/versions"), Some(&olga), &json!({})).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::extracts::work(&app).await;
    // Many of these subjects also have MR studies in the neuro cohort, whose consent is not to open release.
    let (own, elsewhere): (i64, i64) = sqlx::query_as(
        "select count(distinct st.study_id) filter (where c.slug = 'demo-chest-xray-challenge'),
                count(distinct st.study_id) filter (where c.slug <> 'demo-chest-xray-challenge')
         from extract_subject es join study st using (subject_id) join cohort c on c.cohort_id = st.cohort_id
         where es.extract_id = $1::uuid and es.split = 'train'",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(elsewhere > 0, "the demo's open subjects have studies in another cohort too");
    let manifest = anonymous_manifest(&app, &id).await;
    let mut studies: Vec<&str> = manifest
        .files
        .iter()
        .filter_map(|f| f.path.strip_prefix("train/dicom/"))
        .map(|p| p.split('/').next().unwrap())
        .collect();
    studies.dedup();
    assert_eq!(i64::try_from(studies.len()).unwrap(), own, "only the open cohort's own studies are released");
    let csv = app.get(&format!("/api/v1/extracts/{id}/files/train/tables/observations.csv"), None).await;
    let ages = csv.assert_status(StatusCode::OK).text().lines().filter(|l| l.contains(",age_at_study,")).count();
    assert_eq!(i64::try_from(ages).unwrap(), own, "one age per own study, none from the subjects' other studies");
    let index = app.get(&format!("/api/v1/extracts/{id}/files/train/annotations/index.json"), None).await.json();
    let codes: Vec<&str> =
        index["annotations"].as_array().unwrap().iter().filter_map(|a| a["label"]["code"].as_str()).collect();
    assert!(
        !codes.is_empty() && codes.iter().all(|c| ["RID5352", "RID39148"].contains(c)),
        "only chest labels: {codes:?}"
    );
}
