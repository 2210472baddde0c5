//! The synthetic registry generator behind `custodian demo --subjects N`, and
//! what `serve --demo` seeds.

use custodian::auth::Role;
use custodian::demo::registry::{self, Imaging};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&app.db).await.unwrap()
}

#[tokio::test]
async fn a_generated_registry_is_complete_pseudonymized_and_shows_a_site_effect() {
    let app = TestApp::new().await;
    custodian::demo::seed(&app.db).await.unwrap();
    let key = &app.state.ingest.key;
    let made = registry::generate(&app.db, key, 3650, 600, 7, Imaging::CatalogOnly).await.unwrap();

    assert_eq!(made.subjects, 600);
    assert_eq!(scalar(&app, "select count(*) from subject").await, 600);
    assert_eq!(scalar(&app, "select count(*) from instance").await, i64::try_from(made.instances).unwrap());
    assert_eq!(scalar(&app, "select count(*) from observation").await, i64::try_from(made.observations).unwrap());
    assert_eq!(made.genotypes, 5 * 600, "five variants for everyone");
    assert!(made.observations >= 600 * 10, "every lab at least once");
    assert!(made.instances > made.series && made.series > made.studies && made.studies > 600);
    assert_eq!(
        scalar(&app, "select sum(instances) from discovery_series").await,
        i64::try_from(made.instances).unwrap(),
        "every series is discoverable"
    );
    // Patients were pseudonymized like any import: no `SYN…` ID is stored.
    let stored = app.rows_as_text(&["subject", "study", "series", "observation", "diagnosis", "audit_event"]).await;
    assert!(!stored.contains("SYN0"), "a synthetic patient ID reached the database");
    let pseudonym = key.subject("uhb", "SYN0000001");
    let cmc = key.subject("cmc", "SYN0000001");
    let rih = key.subject("rih", "SYN0000001");
    let found =
        scalar(&app, &format!("select count(*) from subject where pseudonym in ('{pseudonym}', '{cmc}', '{rih}')"))
            .await;
    assert_eq!(found, 1, "patient 1 is at exactly one site, under its keyed pseudonym");

    // Each site has its own scanners: the site effect is visible in a breakdown.
    let steward = app.token("stella", &[Role::Steward]);
    assert_each_site_scans_on_its_own_scanners(&app, &steward).await;
    // And older patients and more diabetes at uhb than at cmc.
    let share = |site: &str| {
        let app = &app;
        let steward = steward.clone();
        let site = site.to_owned();
        async move {
            let count = |criteria: Value| {
                let steward = steward.clone();
                async move {
                    app.post_json("/api/v1/discovery/count", Some(&steward), &json!({ "criteria": criteria }))
                        .await
                        .json()["counts"]["subjects"]
                        .as_f64()
                        .unwrap()
                }
            };
            let all = count(json!({"field": "site", "in": [site]})).await;
            let diabetic =
                count(json!({"and": [{"field": "site", "in": [site]}, {"field": "diagnosis", "prefix": "E11"}]})).await;
            diabetic / all
        }
    };
    assert!(share("uhb").await > share("cmc").await, "diabetes is commoner at the older site");

    let again = registry::generate(&app.db, key, 3650, 10, 7, Imaging::CatalogOnly).await.unwrap_err();
    assert!(again.to_string().contains("already holds a synthetic registry"), "{again}");
}

/// The README's tour by role, step by step, on nothing but what `serve --demo` seeds.
#[tokio::test]
async fn in_the_demo_the_whole_approval_journey_runs_from_application_to_subject_list_without_any_set_up() {
    use axum::http::StatusCode;
    let app = TestApp::new().await;
    serve_demo(&app, 200).await.unwrap();
    let rita = app.token("rita", &[Role::Researcher]);
    let (sam, stella) = (app.token("sam", &[Role::Steward]), app.token("stella", &[Role::Steward]));

    let project = app.post_json("/api/v1/projects", Some(&rita), &json!({"title": "Glioma growth"})).await;
    let project = project.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned();
    let content = json!({
        "title": "Glioma growth models",
        "lay_summary": "We study how brain tumours grow.",
        "rationale": "Growth models need longitudinal MRI.",
        "methods": "Segmentation, then mixed-effects growth models.",
        "scope": {"cohorts": ["demo-neuro-mri"], "fields": ["age_at_study", "sex"], "modalities": ["MR"], "imaging": true},
        "intended_use": {"purpose": "HMB", "duration_months": 24, "ethics_approval": "REC 24/NW/0001", "processing_countries": ["IT"]},
        "data_security": "University HPC, ISO 27001 certified.",
        "public_interest": "Better radiotherapy planning."
    });
    let created = app
        .post_json(&format!("/api/v1/projects/{project}/applications"), Some(&rita), &json!({"content": content}))
        .await;
    let id = created.assert_status(StatusCode::CREATED).json()["id"].as_str().unwrap().to_owned();

    // The check explains the cohort's consent terms rule by rule.
    let check = app.get(&format!("/api/v1/applications/{id}/check"), Some(&rita)).await.json();
    assert_eq!(check["can_submit"], true, "{check}");
    let rules: Vec<String> = check["cohorts"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}:{}", r["code"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(rules, ["HMB:pass", "NCU:pass", "IRB:pass", "PUB:condition"], "{check}");

    let submitted = app.post_json(&format!("/api/v1/applications/{id}/submit"), Some(&rita), &json!({})).await;
    assert_eq!(submitted.assert_status(StatusCode::OK).json()["state"], "submitted");
    app.post_json(&format!("/api/v1/applications/{id}/review"), Some(&sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    app.post_json(&format!("/api/v1/applications/{id}/assignments"), Some(&sam), &json!({"steward": "stella"}))
        .await
        .assert_status(StatusCode::OK);
    for steward in [&sam, &stella] {
        let declared = json!({"conflict": false, "statement": "no competing interests"});
        app.post_json(&format!("/api/v1/applications/{id}/declarations"), Some(steward), &declared)
            .await
            .assert_status(StatusCode::CREATED);
        app.post_json(&format!("/api/v1/applications/{id}/votes"), Some(steward), &json!({"vote": "approve"}))
            .await
            .assert_status(StatusCode::CREATED);
    }
    assert_eq!(app.get(&format!("/api/v1/applications/{id}"), Some(&rita)).await.json()["state"], "approved");

    // A fee to settle, then the agreement in force to accept.
    let fees = app.get(&format!("/api/v1/applications/{id}/fees"), Some(&rita)).await.json();
    assert_eq!(fees[0]["amount"], 50_000, "{fees}");
    let settled = json!({"settlement": "paid", "note": "invoice 2026-001"});
    app.post_json(&format!("/api/v1/fees/{}/settlement", fees[0]["id"].as_str().unwrap()), Some(&sam), &settled)
        .await
        .assert_status(StatusCode::OK);
    let dua = app.get("/api/v1/dua", Some(&rita)).await.json();
    let activated = app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&rita), &json!({"dua_version": dua["version"]}))
        .await;
    assert_eq!(activated.assert_status(StatusCode::OK).json()["state"], "active");

    // The grant reaches data: the subject list and exact counts within it.
    let subjects = app.get(&format!("/api/v1/projects/{project}/subjects?cohort=demo-neuro-mri"), Some(&rita)).await;
    let subjects = subjects.assert_status(StatusCode::OK).json();
    assert_eq!(subjects["snapshot"]["subjects"], 200, "{subjects}");
    let exact = json!({"criteria": {"field": "cohort", "in": ["demo-neuro-mri"]}, "project": project});
    let exact = app.post_json("/api/v1/discovery/count", Some(&rita), &exact).await.json();
    assert_eq!(exact["disclosure"]["exact"], true, "{exact}");
    // Exact: every member, the same subjects as the list, and only the granted modality's series
    // (a member's radiograph in the open cohort counts in neither).
    assert_eq!(exact["counts"]["subjects"], 200, "{exact}");
    let mr_series = "select count(*) from discovery_series d join cohort c using (cohort_id)
                     where c.slug = 'demo-neuro-mri' and d.modality = 'MR'";
    assert_eq!(exact["counts"]["series"].as_i64().unwrap(), scalar(&app, mr_series).await, "{exact}");
}

#[tokio::test]
async fn the_anonymous_data_dictionary_shows_the_open_demo_cohort_coverage() {
    let app = TestApp::new().await;
    custodian::demo::seed(&app.db).await.unwrap();
    registry::generate(&app.db, &app.state.ingest.key, 3650, 300, 7, Imaging::CatalogOnly).await.unwrap();
    custodian::dictionary::db::refresh_coverage(&mut app.db.acquire().await.unwrap()).await.unwrap();
    let field = app.get("/api/v1/fields/modality", None).await.json();
    let coverage = field["coverage"].as_array().unwrap();
    assert_eq!(coverage.len(), 1, "only the open cohort, to anyone: {field}");
    assert_eq!(coverage[0]["cohort"], "demo-chest-xray-challenge");
    let shown = coverage[0]["subjects"].as_i64().unwrap();
    assert!((70..=140).contains(&shown), "about a third of 300 subjects have a radiograph: {field}");
    let counted = app
        .post_json(
            "/api/v1/discovery/count",
            Some(&app.token("stella", &[Role::Steward])),
            &json!({"criteria": {"and": [{"field": "cohort", "in": ["demo-chest-xray-challenge"]}, {"field": "modality", "in": ["DX"]}]}}),
        )
        .await
        .json();
    assert_eq!(counted["counts"]["subjects"].as_i64().unwrap(), scalar(&app, "select count(*) from cohort_subject cs join cohort c using (cohort_id) where c.slug = 'demo-chest-xray-challenge'").await);
}

/// The MR breakdown by site and manufacturer shows each site's own scanners only.
async fn assert_each_site_scans_on_its_own_scanners(app: &TestApp, steward: &str) {
    let table = app
        .post_json(
            "/api/v1/discovery/breakdown",
            Some(steward),
            &json!({"criteria": {"field": "modality", "in": ["MR"]}, "by": ["site", "manufacturer"]}),
        )
        .await
        .json();
    let cells: Vec<(String, String)> = table["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["values"].as_array().unwrap().iter().all(|v| !v.is_null()))
        .map(|c| (c["values"][0].as_str().unwrap().to_owned(), c["values"][1].as_str().unwrap().to_owned()))
        .collect();
    assert!(cells.len() >= 3, "every site shows up: {table}");
    for (site, manufacturer) in &cells {
        let expected = match site.as_str() {
            "uhb" => "Siemens Healthineers",
            "cmc" => ["GE Healthcare", "Philips"].into_iter().find(|m| m == manufacturer).unwrap_or("GE Healthcare"),
            _ => ["Philips", "Canon Medical"].into_iter().find(|m| m == manufacturer).unwrap_or("Philips"),
        };
        assert_eq!(manufacturer, expected, "{site} scans on its own scanners");
    }
}

/// What `serve --demo` seeds, with `subjects` subjects.
async fn serve_demo(app: &TestApp, subjects: u32) -> Option<registry::Generated> {
    custodian::demo::seed_all(&app.state.ingest, &app.state.config, subjects, 7).await.unwrap()
}

type Planted = (custodian::demo::dicom::Patient, Vec<chrono::NaiveDate>);

#[tokio::test]
async fn every_demo_instance_is_a_de_identified_dicom_object_without_the_identifiers_its_hospital_wrote() {
    use dicom_dictionary_std::tags;
    let app = TestApp::new().await;
    let made = serve_demo(&app, 60).await.unwrap();
    let key = &app.state.ingest.key;
    let planted = registry::planted(key, app.state.ingest.max_shift_days, 60, 7);
    let by_pseudonym: std::collections::HashMap<String, &Planted> =
        planted.iter().map(|p| (key.subject(p.0.site, &p.0.id), p)).collect();
    let everyone: Vec<String> = planted
        .iter()
        .flat_map(|(p, _)| [p.id.clone(), p.name.clone(), p.name.replace('^', " ")])
        .chain(registry::planted_equipment().into_iter().map(str::to_owned))
        .chain([custodian::demo::dicom::UID_ROOT.to_owned()])
        .collect();

    let rows: Vec<(String, String, i32, chrono::NaiveDate)> = sqlx::query_as(
        "select i.object_key, su.pseudonym, su.date_shift_days, st.study_date
         from instance i join series se using (series_id) join study st using (study_id) join subject su using (subject_id)
         where i.status = 'published'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), usize::try_from(made.instances).unwrap(), "every file became a published instance");
    assert!(rows.len() > 100, "{} instances", rows.len());
    let mut modalities = std::collections::BTreeSet::new();
    for (object_key, pseudonym, shift, study_date) in rows {
        let bytes = app.state.store.get(&object_key.as_str().into()).await.unwrap().bytes().await.unwrap();
        let file = dicom_object::OpenFileOptions::new().from_reader(&bytes[..]).unwrap();
        let text =
            |tag| file.element_opt(tag).unwrap().map(|e| e.to_str().unwrap().trim_end_matches(['\0', ' ']).to_owned());
        assert_eq!(text(tags::PATIENT_ID).as_deref(), Some(pseudonym.as_str()), "{object_key}");
        modalities.insert(text(tags::MODALITY).unwrap());
        let rows = usize::from(file.element(tags::ROWS).unwrap().to_int::<u16>().unwrap());
        let columns = usize::from(file.element(tags::COLUMNS).unwrap().to_int::<u16>().unwrap());
        assert_eq!(file.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().len(), rows * columns * 2);
        assert!(text(tags::ACCESSION_NUMBER).unwrap_or_default().is_empty(), "{object_key}: accession number kept");

        let haystack = String::from_utf8_lossy(&bytes);
        for planted in &everyone {
            assert!(!haystack.contains(planted.as_str()), "{object_key} carries `{planted}`");
        }
        let (patient, dates) = by_pseudonym[&pseudonym];
        let birth = patient.birth_date.format("%Y%m%d").to_string();
        assert!(!haystack.contains(&birth), "{object_key} carries its patient's birth date");
        // Dates moved back by the subject's shift: the stored date is an original one, shifted.
        assert!(shift < 0, "every subject's dates move");
        let stored = chrono::NaiveDate::parse_from_str(&text(tags::STUDY_DATE).unwrap(), "%Y%m%d").unwrap();
        assert_eq!(stored, study_date, "the catalog holds the file's date");
        let original = stored - chrono::Duration::days(i64::from(shift));
        assert!(dates.contains(&original), "{object_key}: {stored} is not an original study date shifted");
        for date in dates {
            assert!(!haystack.contains(&date.format("%Y%m%d").to_string()), "{object_key} carries an original date");
        }
    }
    assert_eq!(modalities.into_iter().collect::<Vec<_>>(), ["CT", "DX", "MR"]);
    assert_eq!(scalar(&app, "select count(*) from instance where object_key like 'synthetic/%'").await, 0);

    // Ingested like any upload, the catalog still shows each site's scanners.
    assert_each_site_scans_on_its_own_scanners(&app, &app.token("stella", &[Role::Steward])).await;
}

#[tokio::test]
async fn the_demo_researcher_holds_an_approved_project_whose_grant_lists_its_subjects() {
    use axum::http::StatusCode;
    let app = TestApp::new().await;
    serve_demo(&app, 60).await.unwrap();
    let rita = app.token("rita", &[Role::Researcher]);

    let projects = app.get("/api/v1/projects", Some(&rita)).await.json();
    let project = projects["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == custodian::demo::project::TITLE)
        .unwrap_or_else(|| panic!("no demo project: {projects}"));
    let id = project["id"].as_str().unwrap();
    let grants = app.get(&format!("/api/v1/projects/{id}/grants"), Some(&rita)).await.json();
    assert_eq!(grants["grants"][0]["effective_state"], "active", "{grants}");
    let subjects = app.get(&format!("/api/v1/projects/{id}/subjects?cohort=demo-neuro-mri"), Some(&rita)).await;
    let subjects = subjects.assert_status(StatusCode::OK).json();
    assert_eq!(subjects["snapshot"]["subjects"], 60, "{subjects}");
    let listed = subjects["subjects"].as_array().unwrap();
    assert!(!listed.is_empty(), "{subjects}");
    assert!(listed.iter().all(|s| s["pseudonym"].as_str().is_some_and(|p| p.starts_with("psub-"))), "{subjects}");
}

#[tokio::test]
async fn seeding_the_demo_again_changes_nothing() {
    use futures::StreamExt;
    const TABLES: [&str; 12] = [
        "subject",
        "cohort_subject",
        "study",
        "series",
        "instance",
        "observation",
        "annotation",
        "upload_session",
        "project",
        "application",
        "access_grant",
        "audit_event",
    ];
    async fn counts(app: &TestApp) -> Vec<(&'static str, i64)> {
        let mut counts = Vec::new();
        for table in TABLES {
            counts.push((table, scalar(app, &format!("select count(*) from {table}")).await));
        }
        counts
    }
    let app = TestApp::new().await;
    serve_demo(&app, 30).await.unwrap();
    let before = counts(&app).await;
    let objects = app.state.store.list(None).count().await;
    assert!(objects > 30, "{objects} objects");

    assert!(serve_demo(&app, 30).await.is_none(), "nothing generated the second time");
    assert_eq!(counts(&app).await, before);
    assert_eq!(app.state.store.list(None).count().await, objects);
}

#[tokio::test]
async fn in_the_demo_anyone_finds_the_published_challenge_and_downloads_its_splits_without_a_login() {
    let app = TestApp::new().await;
    serve_demo(&app, 200).await.unwrap();
    let published = custodian::demo::challenge::seed(&app.db, &app.state.ingest.key).await.unwrap();
    assert!(published.is_some(), "the demo publishes its challenge");
    assert!(custodian::demo::challenge::seed(&app.db, &app.state.ingest.key).await.unwrap().is_none(), "once");
    crate::extracts::work(&app).await;

    let listed = app.get("/api/v1/open-cohorts", None).await.json();
    let challenge = &listed["open_cohorts"][0];
    assert_eq!(challenge["slug"], "demo-chest-xray-challenge", "{listed}");
    let version = &challenge["versions"][0];
    assert_eq!(version["state"], "ready", "{listed}");
    for split in ["train", "validation", "test"] {
        assert!(version["splits"][split].as_i64().unwrap() >= 10, "{split}: {version}");
    }
    let id = version["extract_id"].as_str().unwrap();
    let readme = app.get(&format!("/api/v1/extracts/{id}/files/README.md"), None).await;
    let readme = String::from_utf8(readme.assert_status(axum::http::StatusCode::OK).body.to_vec()).unwrap();
    assert!(readme.contains("The test split's labels are withheld"), "{readme}");
}

/// After `serve --demo`, each kind of user finds something waiting for them.
#[tokio::test]
async fn in_the_demo_stewards_find_an_application_and_a_quarantined_image_waiting_and_the_researcher_a_release() {
    use axum::http::StatusCode;
    let app = TestApp::new().await;
    let waiting = async || {
        serve_demo(&app, 60).await;
        let (ingest, config) = (&app.state.ingest, &app.state.config);
        custodian::demo::waiting::seed(ingest, config, &ingest.key).await.unwrap();
    };
    waiting().await;
    let (rita, sam) = (app.token("rita", &[Role::Researcher]), app.token("sam", &[Role::Steward]));

    let queue = app.get("/api/v1/reviews/queue", Some(&sam)).await.assert_status(StatusCode::OK).text();
    assert!(queue.contains("Scanner harmonisation for brain volumetry"), "the waiting application: {queue}");

    let held = app.get("/api/v1/quarantine", Some(&sam)).await.assert_status(StatusCode::OK).json();
    let held = held["instances"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["code"], "burned-in-annotation");
    assert_eq!(held[0]["modality"], "US");
    // The ultrasound patient's identifiers were removed at the door like any other's.
    let stored = app.rows_as_text(&["subject", "study", "series", "instance", "audit_event"]).await;
    for identifier in ["SYN00", "Doe^Jane", "19570314", "CMC-US-000117"] {
        assert!(!stored.contains(identifier), "`{identifier}` reached the database");
    }

    // Rita's approved project has a release, built by the job worker.
    let project = custodian::demo::project::find(&app.db).await.unwrap().expect("the approved project");
    crate::extracts::work(&app).await;
    let releases = app.get(&format!("/api/v1/projects/{project}/extracts"), Some(&rita)).await;
    let releases = releases.assert_status(StatusCode::OK).json();
    assert_eq!(releases["extracts"][0]["state"], "ready", "{releases}");

    // Seeding again adds nothing.
    waiting().await;
    let held = app.get("/api/v1/quarantine", Some(&sam)).await.json();
    assert_eq!(held["instances"].as_array().unwrap().len(), 1);
    let projects: i64 = scalar(&app, "select count(*) from project").await;
    assert_eq!(projects, 2, "the approved project and the waiting one");
}
