//! What a grant covers: its cohorts frozen at approval, served to the project
//! under its own pseudonyms; withdrawals that reach exactly the projects whose
//! snapshot holds the subject, by a steward or a site's import; fees per scope;
//! and the data use agreement, served word for word and accepted by digest.

use axum::http::StatusCode;
use custodian::access::dua;
use serde_json::{Value, json};

use crate::access::{
    DUA, World, application, cohort, content, grant_on_chest_ct, import_subjects, project, state, world,
};

async fn registry_pseudonyms(w: &World) -> Vec<String> {
    sqlx::query_scalar("select pseudonym from subject order by pseudonym collate \"C\"")
        .fetch_all(&w.app.db)
        .await
        .unwrap()
}

async fn subjects(w: &World, project: &str, query: &str) -> crate::helpers::TestResponse {
    w.app.get(&format!("/api/v1/projects/{project}/subjects?cohort=chest-ct{query}"), Some(&w.pi)).await
}

fn pseudonyms_of(page: &Value) -> Vec<String> {
    page["subjects"].as_array().unwrap().iter().map(|s| s["pseudonym"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_grant_covers_its_cohort_as_frozen_at_approval_under_the_projects_own_pseudonyms() {
    let w = world().await;
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    let csv = "patient_id,sex,birth_year\nHOSP-1,F,1961\nHOSP-2,M,1970\nHOSP-3,F,1982\n";
    import_subjects(&w, "chest-ct", csv).await.assert_status(StatusCode::CREATED);
    let (project, grant) = grant_on_chest_ct(&w, &content(&["chest-ct"], "HMB")).await;

    let frozen = w.app.get(&format!("/api/v1/grants/{grant}/snapshot"), Some(&w.pi)).await.json();
    let snapshot = &frozen["snapshots"][0];
    assert_eq!((snapshot["cohort"].clone(), snapshot["subjects"].clone()), (json!("chest-ct"), json!(3)));
    let registry = registry_pseudonyms(&w).await;
    assert_eq!(snapshot["digest"], dua::digest(&registry.join("\n")), "the digest is over the sorted pseudonyms");

    // A subject who joins later is in discovery but not in the grant.
    import_subjects(&w, "chest-ct", "patient_id,sex\nHOSP-4,M\n").await.assert_status(StatusCode::CREATED);
    let everyone = json!({"criteria": {"field": "cohort", "in": ["chest-ct"]}});
    let counted = w.app.post_json("/api/v1/discovery/count", Some(&w.sam), &everyone).await.json();
    assert_eq!(counted["counts"]["subjects"], 4);
    let page = subjects(&w, &project, "").await.assert_status(StatusCode::OK).json();
    assert_eq!(page["grant_id"], grant);
    assert_eq!(page["snapshot"], *snapshot);
    let theirs = pseudonyms_of(&page);
    assert_eq!(theirs.len(), 3, "{page}");
    assert!(theirs.windows(2).all(|p| p[0] < p[1]), "sorted");
    assert!(theirs.iter().all(|p| p.starts_with("psub-") && !registry.contains(p)), "the project's own pseudonyms");
    assert!(page["subjects"].as_array().unwrap().iter().all(|s| s["imaging"] == true));
    assert!(page["next"].is_null());

    // Pages join up to the whole list.
    let first = subjects(&w, &project, "&limit=2").await.json();
    assert_eq!(pseudonyms_of(&first), theirs[..2]);
    let next = first["next"].as_str().unwrap();
    let second = subjects(&w, &project, &format!("&limit=2&after={next}")).await.json();
    assert_eq!(pseudonyms_of(&second), theirs[2..]);
    assert!(second["next"].is_null());
    subjects(&w, &project, "&limit=0").await.assert_error(StatusCode::BAD_REQUEST, "bad-request");
    let served = w.app.audit_actions().await.iter().filter(|a| *a == "grant.subjects").count();
    assert_eq!(served, 3, "every page served is audited");

    // The grant is checked on the request: suspended, the list is refused at once.
    let suspend = json!({"action": "suspend", "reason": "incident under investigation"});
    w.app
        .post_json(&format!("/api/v1/grants/{grant}/state"), Some(&w.sam), &suspend)
        .await
        .assert_status(StatusCode::OK);
    let refused = subjects(&w, &project, "").await.assert_error(StatusCode::FORBIDDEN, "grant-suspended");
    assert!(refused.contains("incident under investigation"), "{refused}");
    let stranger = w.app.token("olga", &[custodian::auth::Role::Researcher]);
    w.app
        .get(&format!("/api/v1/projects/{project}/subjects?cohort=chest-ct"), Some(&stranger))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn withdrawals_reach_only_the_projects_whose_snapshot_holds_the_subject_and_leave_their_lists() {
    let w = world().await;
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    import_subjects(&w, "chest-ct", "patient_id,sex\nHOSP-1,F\nHOSP-2,M\n").await.assert_status(StatusCode::CREATED);
    let (early, _) = grant_on_chest_ct(&w, &content(&["chest-ct"], "HMB")).await;
    import_subjects(&w, "chest-ct", "patient_id,sex\nHOSP-3,F\n").await.assert_status(StatusCode::CREATED);
    let (late, _) = grant_on_chest_ct(&w, &content(&["chest-ct"], "HMB")).await;
    let mut tables_only = content(&["chest-ct"], "HMB");
    tables_only["scope"]["imaging"] = json!(false);
    let (tabular, _) = grant_on_chest_ct(&w, &tables_only).await;

    let joined_late = json!({"site": "local", "patient_id": "HOSP-3", "scope": "full"});
    let done = w.app.post_json("/api/v1/withdrawals", Some(&w.sam), &joined_late).await.json();
    assert_eq!(done["notices"], 2, "the projects approved after HOSP-3 joined, not the early one: {done}");
    let images = json!({"site": "local", "patient_id": "HOSP-1", "scope": "imaging"});
    let done = w.app.post_json("/api/v1/withdrawals", Some(&w.sam), &images).await.json();
    assert_eq!(done["notices"], 2, "an imaging withdrawal skips the project granted tables only: {done}");

    let notices = |project: String| {
        let w = &w;
        async move {
            let all = w.app.get(&format!("/api/v1/projects/{project}/withdrawal-notices"), Some(&w.pi)).await.json();
            all.as_array().unwrap().iter().map(|n| n["scope"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(notices(early.clone()).await, ["imaging"]);
    assert_eq!(notices(late.clone()).await, ["imaging", "full"]);
    assert_eq!(notices(tabular.clone()).await, ["full"]);

    let early_page = subjects(&w, &early, "").await.json();
    assert_eq!((early_page["withdrawn"].clone(), early_page["subjects"].as_array().unwrap().len()), (json!(0), 2));
    let late_page = subjects(&w, &late, "").await.json();
    assert_eq!((late_page["withdrawn"].clone(), late_page["subjects"].as_array().unwrap().len()), (json!(1), 2));
    let no_imaging = late_page["subjects"].as_array().unwrap().iter().filter(|s| s["imaging"] == false).count();
    assert_eq!(no_imaging, 1, "HOSP-1 stays for tables, without imaging: {late_page}");
    let notice = w.app.get(&format!("/api/v1/projects/{late}/withdrawal-notices"), Some(&w.pi)).await.json();
    let imaging_notice = notice.as_array().unwrap().iter().find(|n| n["scope"] == "imaging").unwrap();
    let flagged: Vec<&Value> =
        late_page["subjects"].as_array().unwrap().iter().filter(|s| s["imaging"] == false).collect();
    assert_eq!(flagged[0]["pseudonym"], imaging_notice["project_pseudonym"], "one pseudonym per project, everywhere");
}

#[tokio::test]
async fn a_sites_subject_import_records_withdrawals_as_a_steward_would() {
    let w = world().await;
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    import_subjects(&w, "chest-ct", "patient_id,sex\nHOSP-1,F\nHOSP-2,M\n").await.assert_status(StatusCode::CREATED);
    let (project, _) = grant_on_chest_ct(&w, &content(&["chest-ct"], "HMB")).await;

    let bad = import_subjects(&w, "chest-ct", "patient_id,withdrawn\nHOSP-1,full\nHOSP-2,maybe\n").await;
    let body = bad.json();
    bad.assert_error(StatusCode::BAD_REQUEST, "invalid-import");
    let problem = &body["problems"][0];
    assert_eq!((problem["row"].clone(), problem["column"].clone()), (json!(3), json!("withdrawn")), "{body}");
    assert!(problem["message"].as_str().unwrap().contains("full or imaging"), "{body}");
    let everyone = json!({"criteria": {"field": "cohort", "in": ["chest-ct"]}});
    let count = || async {
        w.app.post_json("/api/v1/discovery/count", Some(&w.sam), &everyone).await.json()["counts"]["subjects"].clone()
    };
    assert_eq!(count().await, 2, "a rejected import withdraws no one");

    let report = import_subjects(&w, "chest-ct", "patient_id,withdrawn\nHOSP-1,full\nHOSP-2,\n").await;
    let report = report.assert_status(StatusCode::CREATED).json();
    assert_eq!(report["withdrawn"], 1, "{report}");
    assert_eq!(count().await, 1, "the subject left discovery at once");
    let notices = w.app.get(&format!("/api/v1/projects/{project}/withdrawal-notices"), Some(&w.pi)).await.json();
    assert_eq!(notices.as_array().unwrap().len(), 1);
    assert!(notices[0]["project_pseudonym"].as_str().unwrap().starts_with("psub-"));
    let again = import_subjects(&w, "chest-ct", "patient_id,withdrawn\nHOSP-1,full\n").await.json();
    assert_eq!(again["withdrawn"], 0, "already withdrawn: nothing new, no second notice");

    let events = w.app.audit_actions().await;
    assert_eq!(events.iter().filter(|a| *a == "subject.withdraw").count(), 1);
    let stored =
        w.app.rows_as_text(&["subject", "withdrawal_notice", "audit_event", "notification", "data_import"]).await;
    assert!(!stored.contains("HOSP-1"), "the local patient ID was not stored");
}

#[tokio::test]
async fn imaging_in_scope_adds_the_tiers_imaging_surcharge_to_the_fee() {
    let w = world().await;
    let fees = json!({"tier": "registered", "access_fee": 300_000, "maintenance_fee": 50_000,
                      "imaging_access_fee": 120_000, "imaging_maintenance_fee": 20_000, "currency": "EUR"});
    w.app.put_json("/api/v1/fees/registered", Some(&w.admin), &fees).await.assert_status(StatusCode::OK);
    let schedule = w.app.get("/api/v1/fees", Some(&w.pi)).await.json();
    let registered = schedule.as_array().unwrap().iter().find(|t| t["tier"] == "registered").unwrap();
    assert_eq!(registered["imaging_access_fee"], 120_000);
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;

    let fee_of = |scope_imaging: bool| {
        let w = &w;
        async move {
            let mut body = content(&["chest-ct"], "HMB");
            body["scope"]["imaging"] = json!(scope_imaging);
            let project = project(w).await;
            let id = application(w, &project, &body).await;
            w.app
                .post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({}))
                .await
                .assert_status(StatusCode::OK);
            w.app.get(&format!("/api/v1/applications/{id}/fees"), Some(&w.pi)).await.json()[0].clone()
        }
    };
    let with_imaging = fee_of(true).await;
    assert_eq!(with_imaging["amount"], 420_000);
    assert_eq!(
        with_imaging["basis"],
        json!([{"item": "registered tier access", "amount": 300_000}, {"item": "imaging access", "amount": 120_000}])
    );
    let tables_only = fee_of(false).await;
    assert_eq!(tables_only["amount"], 300_000);
    assert_eq!(tables_only["basis"].as_array().unwrap().len(), 1);

    let mut negative = fees.clone();
    negative["imaging_maintenance_fee"] = json!(-1);
    w.app
        .put_json("/api/v1/fees/registered", Some(&w.admin), &negative)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    let unchanged = w.app.get("/api/v1/fees", Some(&w.pi)).await.json();
    assert_eq!(unchanged, schedule, "a refused schedule changes nothing");
}

/// An application approved by rule with no fee, waiting for the PI's acceptance.
async fn approved(w: &World) -> String {
    let project = project(w).await;
    let id = application(w, &project, &content(&["chest-ct"], "HMB")).await;
    let submitted = w.app.post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({})).await;
    assert_eq!(submitted.json()["state"], "approved");
    id
}

#[tokio::test]
async fn the_agreement_in_force_is_served_word_for_word_and_its_acceptance_records_the_digest() {
    let w = world().await;
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    let current = w.app.get("/api/v1/dua", Some(&w.pi)).await.assert_status(StatusCode::OK).json();
    assert_eq!(current["version"], DUA);
    let text = current["body"].as_str().unwrap();
    assert!(text.contains("No re-identification"), "{text}");
    assert_eq!(current["sha256"], dua::digest(text));

    let id = approved(&w).await;
    let activate = |body: Value| {
        let (w, id) = (&w, id.clone());
        async move { w.app.post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &body).await }
    };
    let wrong = json!({"dua_version": DUA, "dua_sha256": "00".repeat(32)});
    activate(wrong).await.assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(state(&w, &id).await["state"], "approved", "a refused acceptance changes nothing");
    let accepted = activate(json!({"dua_version": DUA, "dua_sha256": current["sha256"]})).await.json();
    assert_eq!((accepted["state"].clone(), accepted["dua_version"].clone()), (json!("active"), json!(DUA)));
    assert_eq!(accepted["dua_sha256"], current["sha256"]);

    // A new version is in force at once; the old one stays readable, word for word.
    let next = json!({"version": "custodian-dua-2027-1", "title": "Data use agreement",
                      "body": format!("{text}\n12. Model weights trained on the data are derived data.\n")});
    let path = "/api/v1/dua";
    w.app.post_json(path, Some(&w.sam), &next).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let published = w.app.post_json(path, Some(&w.admin), &next).await.assert_status(StatusCode::CREATED).json();
    w.app.post_json(path, Some(&w.admin), &next).await.assert_error(StatusCode::CONFLICT, "conflict");
    let mut bad = next.clone();
    bad["version"] = json!("has spaces");
    w.app.post_json(path, Some(&w.admin), &bad).await.assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert_eq!(w.app.get("/api/v1/dua", Some(&w.pi)).await.json()["version"], "custodian-dua-2027-1");
    let versions = w.app.get("/api/v1/dua/versions", Some(&w.pi)).await.json();
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let old = w.app.get(&format!("/api/v1/dua/versions/{DUA}"), Some(&w.pi)).await.json();
    assert_eq!(old["body"], text);
    w.app
        .get("/api/v1/dua/versions/custodian-dua-1999", Some(&w.pi))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");

    let second = approved(&w).await;
    let stale = w
        .app
        .post_json(&format!("/api/v1/applications/{second}/activate"), Some(&w.pi), &json!({"dua_version": DUA}))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    assert!(stale.contains("custodian-dua-2027-1"), "{stale}");
    let fresh = json!({"dua_version": "custodian-dua-2027-1"});
    let active = w.app.post_json(&format!("/api/v1/applications/{second}/activate"), Some(&w.pi), &fresh).await;
    assert_eq!(active.json()["dua_sha256"], published["sha256"]);
    assert!(w.app.audit_actions().await.iter().any(|a| a == "dua.publish"));
    assert_eq!(state(&w, &id).await["dua_version"], DUA, "the first acceptance keeps its version");
}

#[tokio::test]
async fn a_member_added_while_a_grant_is_approved_is_either_in_the_snapshot_or_after_it_never_both() {
    let w = world().await;
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    cohort(&w, "knee-mri", "registered", json!({"permission": "GRU"}), true).await;
    import_subjects(&w, "chest-ct", "patient_id\nHOSP-1\n").await.assert_status(StatusCode::CREATED);
    import_subjects(&w, "knee-mri", "patient_id\nHOSP-2\n").await.assert_status(StatusCode::CREATED);
    let project = project(&w).await;
    let id = application(&w, &project, &content(&["chest-ct"], "HMB")).await;

    // A writer adds HOSP-2 to chest-ct and has not committed when the approval starts.
    let mut writer = w.app.db.begin().await.unwrap();
    sqlx::query(
        "insert into cohort_subject (cohort_id, subject_id)
         select (select cohort_id from cohort where slug = 'chest-ct'), subject_id
         from cohort_subject join cohort using (cohort_id) where slug = 'knee-mri'",
    )
    .execute(&mut *writer)
    .await
    .unwrap();
    let (path, empty) = (format!("/api/v1/applications/{id}/submit"), json!({}));
    let approval = w.app.post_json(&path, Some(&w.pi), &empty);
    let commit_later = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        writer.commit().await.unwrap();
    };
    let (submitted, ()) = tokio::join!(approval, commit_later);
    assert_eq!(submitted.json()["state"], "approved");
    w.app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &json!({"dua_version": DUA}))
        .await
        .assert_status(StatusCode::OK);

    let page = subjects(&w, &project, "").await.json();
    let listed = page["subjects"].as_array().unwrap().len();
    assert_eq!(page["snapshot"]["subjects"], listed, "the snapshot's size is what it lists: {page}");
    assert_eq!(listed, 2, "the approval waited for the writer in flight: {page}");
}

#[tokio::test]
async fn publications_wait_for_a_cohorts_moratorium_and_fulfil_the_duty_to_notify_them() {
    let w = world().await;
    let terms = json!({"permission": "GRU", "modifiers": ["PUB", "MOR"], "moratorium_until": "2027-06-01"});
    cohort(&w, "brain-mri", "registered", terms, false).await;
    cohort(&w, "knee-mri", "registered", json!({"permission": "GRU"}), true).await;
    let project = project(&w).await;
    let id = application(&w, &project, &content(&["brain-mri"], "HMB")).await;
    w.app
        .post_json(&format!("/api/v1/applications/{id}/submit"), Some(&w.pi), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    crate::access::declare_and_vote(&w, &w.sam, &id, json!({"vote": "approve"}))
        .await
        .assert_status(StatusCode::CREATED);
    w.app
        .post_json(&format!("/api/v1/applications/{id}/activate"), Some(&w.pi), &json!({"dua_version": DUA}))
        .await
        .assert_status(StatusCode::OK);
    let duty = || {
        let (w, path) = (&w, format!("/api/v1/projects/{project}/obligations"));
        async move {
            let all = w.app.get(&path, Some(&w.pi)).await.json();
            all.as_array().unwrap().iter().find(|d| d["kind"] == "publication_notice").cloned().expect("a PUB duty")
        }
    };
    assert!(duty().await["fulfilled_at"].is_null());

    let path = format!("/api/v1/projects/{project}/publications");
    let paper = |published_on: &str, cohorts: Value| {
        json!({"title": "Glioma growth under radiotherapy", "doi": "10.1038/s41591-027-0001-x",
               "venue": "Nature Medicine", "published_on": published_on, "cohorts": cohorts})
    };
    let early = w
        .app
        .post_json(&path, Some(&w.pi), &paper("2027-01-15", json!(["brain-mri"])))
        .await
        .assert_error(StatusCode::FORBIDDEN, "publication-moratorium");
    assert!(early.contains("2027-06-01") && early.contains("brain-mri"), "{early}");
    let ungranted = w
        .app
        .post_json(&path, Some(&w.pi), &paper("2027-07-01", json!(["brain-mri", "knee-mri"])))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    assert!(ungranted.contains("knee-mri"), "{ungranted}");
    w.app
        .post_json(&path, Some(&w.sam), &paper("2027-07-01", json!(["brain-mri"])))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let stranger = w.app.token("olga", &[custodian::auth::Role::Researcher]);
    w.app
        .post_json(&path, Some(&stranger), &paper("2027-07-01", json!(["brain-mri"])))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(w.app.get(&path, Some(&w.pi)).await.json(), json!([]), "refused notices store nothing");

    let notified = w.app.post_json(&path, Some(&w.pi), &paper("2027-07-01", json!(["brain-mri"]))).await;
    let notified = notified.assert_status(StatusCode::CREATED).json();
    assert_eq!(notified["doi"], "10.1038/s41591-027-0001-x");
    let fulfilled = duty().await;
    assert_eq!(fulfilled["fulfilled_by"], "rita");
    assert!(fulfilled["statement"].as_str().unwrap().contains("Glioma growth under radiotherapy"));
    let register = w.app.get("/api/v1/publications", Some(&w.sam)).await.json();
    assert_eq!(register.as_array().unwrap().len(), 1);
    w.app.get("/api/v1/publications", Some(&w.pi)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let told = w.app.get("/api/v1/me/notifications", Some(&w.sue)).await.json();
    assert!(told.as_array().unwrap().iter().any(|n| n["kind"] == "publication.notified"), "{told}");
    assert!(w.app.audit_actions().await.iter().any(|a| a == "publication.notify"));
}

/// Two MR series and one CT series for each of the first three subjects of `chest-ct`.
async fn imaging(w: &World) {
    sqlx::query(
        "with s as (select cs.subject_id, cs.cohort_id, su.site_id, row_number() over (order by su.pseudonym) as n
                    from cohort_subject cs join cohort c using (cohort_id) join subject su using (subject_id)
                    where c.slug = 'chest-ct'),
              st as (insert into study (study_uid, subject_id, cohort_id, site_id, study_date)
                     select '2.25.77' || n, subject_id, cohort_id, site_id, date '2020-01-01' from s where n <= 3
                     returning study_id, study_uid),
              se as (insert into series (series_uid, study_id, modality)
                     select study_uid || '.' || k, study_id, case when k = 3 then 'CT' else 'MR' end
                     from st, generate_series(1, 3) k returning series_id, series_uid)
         insert into instance (sop_uid, series_id, sop_class_uid, transfer_syntax, object_key, size_bytes, sha256, status)
         select series_uid || '.1', series_id, '1.2.840.10008.5.1.4.1.1.4', '1.2.840.10008.1.2.1',
                'synthetic/' || series_uid, 1, '\\x00', 'published' from se",
    )
    .execute(&w.app.db)
    .await
    .unwrap();
    sqlx::query("select refresh_discovery_series(array(select series_id from series))")
        .execute(&w.app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_projects_exact_counts_stay_inside_its_grant_however_the_question_is_put() {
    let w = world().await;
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    let csv = "patient_id,sex,birth_year\nA1,F,1950\nA2,M,1960\nA3,F,1970\nA4,M,1980\n";
    import_subjects(&w, "chest-ct", csv).await.assert_status(StatusCode::CREATED);
    imaging(&w).await;
    // The grant: fields age_at_study and sex, MR imaging only.
    let (project, _) = grant_on_chest_ct(&w, &content(&["chest-ct"], "HMB")).await;
    let ask = |path: &'static str, body: Value| {
        let (w, token) = (&w, w.pi.clone());
        async move { w.app.post_json(&format!("/api/v1/discovery/{path}"), Some(&token), &body).await }
    };
    let cohort = json!({"field": "cohort", "in": ["chest-ct"]});

    // The cohort's subjects exactly, but only the MR part of their imaging.
    let all = ask("count", json!({"project": project, "criteria": cohort})).await.assert_status(StatusCode::OK).json();
    assert_eq!(all["disclosure"]["exact"], true);
    assert_eq!(all["counts"], json!({"subjects": 4, "studies": 3, "series": 6, "instances": 6}));
    let women = json!({"and": [cohort, {"field": "sex", "in": ["F"]}, {"field": "age_at_study", "max": 120}]});
    ask("count", json!({"project": project, "criteria": women})).await.assert_status(StatusCode::OK);

    // Outside: another modality, a diagnosis, a genotype, a lab value, annotations; nested, negated or reordered.
    let outside = [
        (json!({"and": [cohort, {"field": "modality", "in": ["MR", "CT"]}]}), "`CT`"),
        (json!({"and": [{"field": "diagnosis", "prefix": "C34"}, cohort]}), "`diagnosis`"),
        (
            json!({"and": [cohort, {"or": [{"not": {"field": "genotype", "variant": "rs1", "genotype": "carrier"}}]}]}),
            "`genotype`",
        ),
        (json!({"and": [cohort, {"not": {"not": {"field": "hba1c", "min": 1}}}]}), "`hba1c`"),
        (json!({"and": [cohort, {"field": "annotation", "kind": ["segmentation"]}]}), "`segmentation`"),
        (
            json!({"and": [cohort, {"field": "modality", "in": ["MR"], "within_days_after": {"event": {"field": "diagnosis", "prefix": "C34"}, "min": 0, "max": 30}}]}),
            "`diagnosis`",
        ),
    ];
    for (criteria, named) in outside {
        let response = ask("count", json!({"project": project, "criteria": criteria})).await;
        let message = response.assert_error(StatusCode::FORBIDDEN, "outside-grant");
        assert!(message.contains(named), "{criteria}: {message}");
    }
    // A breakdown names the granted modalities, and only dimensions the grant covers.
    let mr = json!({"and": [cohort, {"field": "modality", "in": ["MR"]}]});
    let by_sex = ask("breakdown", json!({"project": project, "criteria": mr, "by": ["sex", "age_band"]})).await;
    assert_eq!(by_sex.assert_status(StatusCode::OK).json()["disclosure"]["exact"], true);
    ask("breakdown", json!({"project": project, "criteria": cohort, "by": ["sex"]}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "outside-grant");
    // Without the project, the same questions get protected counts like anyone's.
    let public = ask("count", json!({"criteria": {"and": [cohort, {"field": "diagnosis", "prefix": "C34"}]}})).await;
    assert_eq!(public.assert_status(StatusCode::OK).json()["disclosure"]["exact"], false);
}
