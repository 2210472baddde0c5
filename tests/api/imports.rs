//! Table imports (subjects, observations, diagnoses, variants) and the data dictionary.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::dicom_gen::Instance;
use crate::helpers::{TestApp, captured_logs};

async fn import(
    app: &TestApp,
    kind: &str,
    query: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> crate::helpers::TestResponse {
    let token = app.token("ulrich", &[Role::Uploader]);
    let request = Request::post(format!("/api/v1/imports/{kind}{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap();
    app.call(request).await
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&app.db).await.unwrap()
}

/// Every row of the tables imports write, as text.
async fn everything_stored(app: &TestApp) -> String {
    app.rows_as_text(&[
        "subject",
        "observation",
        "diagnosis",
        "variant",
        "genotype",
        "data_import",
        "audit_event",
        "job",
    ])
    .await
}

#[tokio::test]
async fn subject_table_links_to_the_same_subject_as_the_images_and_keeps_no_original_id() {
    let app = TestApp::new().await;
    let instance = Instance::ct(1, 1, 1, 1);
    let token = app.token("ulrich", &[Role::Uploader]);
    let session =
        app.post_json("/api/v1/uploads", Some(&token), &json!({})).await.json()["id"].as_str().unwrap().to_owned();
    let request = Request::post(format!("/api/v1/uploads/{session}/files"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/dicom")
        .body(Body::from(instance.to_bytes()))
        .unwrap();
    app.call(request).await.assert_status(StatusCode::OK);

    let csv = format!(
        "patient_id,sex,birth_date,date,height[in],weight,smoking_status\n{},female,1958-03-14,2020-05-01,65,70.5,266919005\nNEW-PATIENT-77,M,1970,,70,,\n",
        instance.patient_id
    );
    // The images carry an Issuer of Patient ID, which scopes the IDs: the table names it too.
    let response = import(&app, "subjects", "?issuer_of_patient_id=CNRY-ISSUER", "text/csv", csv).await;
    response.assert_status(StatusCode::CREATED);
    let report = response.json();
    assert_eq!(
        (report["rows"].as_u64(), report["subjects_created"].as_u64(), report["subjects_matched"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    // height, weight, computed BMI and smoking status for the first; height for the second.
    assert_eq!(report["values"], 5);

    assert_eq!(scalar(&app, "select count(*) from subject").await, 2, "the imaged patient was matched, not duplicated");
    let height: f64 = sqlx::query_scalar(
        "select o.value from observation o join study st using (subject_id) where o.field_id = 'height'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!((height - 165.1).abs() < 1e-9, "65 in is stored as 165.1 cm, on the subject of the study");
    let bmi: f64 =
        sqlx::query_scalar("select value from observation where field_id = 'bmi'").fetch_one(&app.db).await.unwrap();
    assert!((bmi - 70.5 / 1.651_f64.powi(2)).abs() < 1e-9);
    let (sex, year): (Option<String>, Option<i32>) =
        sqlx::query_as("select s.sex, s.birth_year from subject s join study st using (subject_id)")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(year, Some(1958));
    assert_eq!(sex.as_deref(), Some("F"), "the clinical table is authoritative for sex");
    // The measurement date moved by the subject's own shift, the one its images got.
    let moved: i64 = scalar(
        &app,
        "select ((date '2020-05-01' - o.observed_at::date) + s.date_shift_days)::bigint
         from observation o join subject s using (subject_id) where o.field_id = 'height' and s.birth_year = 1958",
    )
    .await;
    assert_eq!(moved, 0);

    let stored = everything_stored(&app).await;
    for original in [instance.patient_id.as_str(), "NEW-PATIENT-77", "1958-03-14", "2020-05-01"] {
        assert!(!stored.contains(original), "an original value reached the database");
        assert!(!String::from_utf8_lossy(&captured_logs()).contains(original), "an original value reached the logs");
    }
    assert!(app.audit_actions().await.contains(&"import.subjects".to_owned()));
}

#[tokio::test]
async fn lab_values_are_normalised_to_the_canonical_unit_of_their_field() {
    let app = TestApp::new().await;
    let csv = "patient_id,code,system,value,unit,time\n\
               P1,2345-7,LOINC,99,mg/dL,2021-01-02T08:30:00\n\
               P1,glucose,,5.5,mmol/L,\n\
               P2,LOINC:4548-4,,6.5,%,2021-01-02\n\
               P2,P05231,UniProt,3.25,,2021-01-03\n\
               P3,718-7,,13.5,g/dL,\n";
    let response = import(&app, "observations", "", "text/csv", csv).await;
    response.assert_status(StatusCode::CREATED);
    assert_eq!(response.json()["values"], 5);
    let values: Vec<(String, f64)> = sqlx::query_as("select field_id, value from observation order by field_id, value")
        .fetch_all(&app.db)
        .await
        .unwrap();
    let get = |id: &str| values.iter().filter(|(f, _)| f == id).map(|(_, v)| *v).collect::<Vec<_>>();
    let glucose = get("glucose");
    assert!((glucose[0] - 5.4953).abs() < 1e-3, "99 mg/dL of glucose is 5.50 mmol/L: {glucose:?}");
    assert!((glucose[1] - 5.5).abs() < 1e-12);
    assert_eq!(get("hba1c"), [6.5]);
    assert_eq!(get("prot_il6"), [3.25], "NPX needs no unit");
    assert_eq!(get("hemoglobin"), [135.0], "13.5 g/dL is 135 g/L");
}

#[tokio::test]
async fn an_import_with_problems_imports_nothing_and_lists_every_problem_without_values() {
    let app = TestApp::new().await;
    let csv = "patient_id,code,value,unit,time\n\
               SECRET-MRN-1,glucose,5.5,mmol/L,2021-01-02\n\
               SECRET-MRN-2,glucose,99,mg,2021-01-02\n\
               SECRET-MRN-3,hba1c,7,mmol/L,\n\
               ,glucose,5.5,mmol/L,\n\
               SECRET-MRN-4,9999-9,1,mmol/L,\n\
               SECRET-MRN-5,glucose,high,mmol/L,\n\
               SECRET-MRN-6,glucose,5.5,mmol/L,1st of May\n\
               SECRET-MRN-7,glucose,500,mmol/L,\n\
               SECRET-MRN-8,glucose,5.5,,\n";
    let response = import(&app, "observations", "", "text/csv", csv).await;
    let message = response.assert_error(StatusCode::BAD_REQUEST, "invalid-import");
    assert_eq!(message, "the observations import has 8 problems; nothing was imported");
    let problems: Vec<(u64, String, String)> = response.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["row"].as_u64().unwrap(),
                p["column"].as_str().unwrap().to_owned(),
                p["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        (3, "unit", "unknown-unit"),
        (4, "unit", "incompatible-unit"),
        (5, "patient_id", "missing-value"),
        (6, "code", "unknown-field"),
        (7, "value", "invalid-value"),
        (8, "time", "invalid-date"),
        (9, "value", "out-of-range"),
        (10, "unit", "missing-unit"),
    ];
    assert_eq!(problems, expected.map(|(r, c, k)| (r, c.to_owned(), k.to_owned())));
    assert!(!response.text().contains("SECRET-MRN"), "no value is echoed");
    assert_eq!(scalar(&app, "select count(*) from subject").await, 0);
    assert_eq!(scalar(&app, "select count(*) from observation").await, 0);
    assert_eq!(scalar(&app, "select count(*) from data_import").await, 0);
}

#[tokio::test]
async fn diagnoses_are_normalised_and_shifted_and_bad_codes_are_refused() {
    let app = TestApp::new().await;
    let json = json!([
        {"patient_id": "P1", "system": "ICD10", "code": "e119", "date": "2019-06-30"},
        {"patient_id": "P1", "system": "SNOMED CT", "code": "44054006"},
        {"patient_id": "P2", "system": "icd-10", "code": "I21.4", "date": "20200101"}
    ]);
    let response = import(&app, "diagnoses", "", "application/json", json.to_string()).await;
    response.assert_status(StatusCode::CREATED);
    let codes: Vec<String> =
        sqlx::query_scalar("select code from diagnosis order by code").fetch_all(&app.db).await.unwrap();
    assert_eq!(codes, ["44054006", "E11.9", "I21.4"]);
    let moved = scalar(
        &app,
        "select ((date '2019-06-30' - d.diagnosed_on) + s.date_shift_days)::bigint from diagnosis d join subject s using (subject_id) where code = 'E11.9'",
    )
    .await;
    assert_eq!(moved, 0);

    let bad = json!([{"patient_id": "P3", "system": "ICD-10", "code": "11.9"}, {"patient_id": "P3", "system": "Read", "code": "C10E."}]);
    let response = import(&app, "diagnoses", "", "application/json", bad.to_string()).await;
    response.assert_error(StatusCode::BAD_REQUEST, "invalid-import");
    let problems = response.json()["problems"].clone();
    assert_eq!(problems[0]["row"], 1);
    assert_eq!(problems[0]["code"], "invalid-code");
    assert_eq!(problems[1]["column"], "system");
    assert_eq!(scalar(&app, "select count(*) from diagnosis").await, 3);
}

const VCF: &str = "##fileformat=VCFv4.2\n\
    #CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tP1\tP2\tP3\n\
    chr19\t44908684\trs429358\tT\tC\t.\tPASS\tGENE=APOE\tGT\t0/1\t1/1\t./.\n\
    1\t1000\t.\tA\tG,T\t.\tPASS\t.\tGT\t1/2\t0/0\t2|2\n";

#[tokio::test]
async fn gzipped_vcf_genotypes_are_imported_per_alternate_allele_and_a_corrected_file_replaces_them() {
    use std::io::Write;
    let app = TestApp::new().await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(VCF.as_bytes()).unwrap();
    let response = import(&app, "variants", "", "application/gzip", gz.finish().unwrap()).await;
    response.assert_status(StatusCode::CREATED);
    let report = response.json();
    assert_eq!(
        (report["format"].as_str(), report["rows"].as_u64(), report["values"].as_u64()),
        (Some("vcf"), Some(2), Some(9))
    );
    assert_eq!(scalar(&app, "select count(*) from variant").await, 3, "the multi-allelic site is split");
    assert_eq!(
        scalar(&app, "select count(*) from genotype where alt_count is null").await,
        1,
        "the missing call is kept as missing"
    );
    assert_eq!(scalar(&app, "select count(*) from genotype g join variant v using (variant_id) where v.rsid = 'rs429358' and v.gene = 'APOE' and g.alt_count > 0").await, 2);

    let fixed = VCF.replace("0/1\t1/1\t./.", "0/1\t1/1\t0/1");
    import(&app, "variants", "", "text/vcf", fixed).await.assert_status(StatusCode::CREATED);
    assert_eq!(scalar(&app, "select count(*) from genotype").await, 9, "calls are replaced, not added");
    assert_eq!(scalar(&app, "select count(*) from genotype where alt_count is null").await, 0);

    let table = "patient_id,variant,gene,genotype\nP4,19-44908684-T-C,APOE,2\nP4,19-44908685-T-C,,0/9\n";
    let response = import(&app, "variants", "", "text/csv", table).await;
    response.assert_error(StatusCode::BAD_REQUEST, "invalid-import");
    assert_eq!(response.json()["problems"][0]["row"], 3);
    assert_eq!(scalar(&app, "select count(*) from subject").await, 3, "the refused table created no subject");
}

#[tokio::test]
async fn imports_need_the_uploader_role_a_known_cohort_and_a_table_media_type() {
    let app = TestApp::new().await;
    let researcher = app.token("rita", &[Role::Researcher]);
    let request = Request::post("/api/v1/imports/subjects")
        .header(header::AUTHORIZATION, format!("Bearer {researcher}"))
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from("patient_id\nP1\n"))
        .unwrap();
    app.call(request).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    import(&app, "subjects", "?cohort=nope", "text/csv", "patient_id\nP1\n")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    import(&app, "subjects", "", "application/pdf", "x")
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    import(&app, "diagnoses", "", "text/vcf", VCF)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    let response = import(&app, "subjects", "", "text/csv", "patient_id,modality,shoe_size\n").await;
    response.assert_error(StatusCode::BAD_REQUEST, "invalid-import");
    let codes: Vec<Value> = response.json()["problems"].as_array().unwrap().iter().map(|p| p["code"].clone()).collect();
    assert_eq!(codes, [json!("unknown-field"), json!("unknown-field"), json!("empty-table")]);
}

#[tokio::test]
async fn the_dictionary_is_public_for_open_and_registered_cohorts_with_coverage_protected_like_discovery() {
    let app = TestApp::new().await;
    let admin = app.token("ada", &[Role::Admin]);
    app.post_json(
        "/api/v1/cohorts",
        Some(&admin),
        &json!({"slug": "open-hearts", "title": "Open hearts", "tier": "open", "design": "retrospective", "source": "challenge"}),
    )
    .await
    .assert_status(StatusCode::CREATED);
    let mut lines = vec!["patient_id,code,value,unit".to_owned()];
    lines.extend((0..13).map(|i| format!("H{i},hba1c,{},%", 5 + i % 3)));
    lines.extend((0..4).map(|i| format!("H{i},crp,{i},mg/L")));
    let csv = lines.join("\n") + "\n";
    import(&app, "observations", "?cohort=open-hearts", "text/csv", csv.clone())
        .await
        .assert_status(StatusCode::CREATED);
    import(&app, "observations", "", "text/csv", csv).await.assert_status(StatusCode::CREATED);
    assert!(
        scalar(&app, "select count(*) from job where kind = 'dictionary.coverage'").await >= 1,
        "a coverage refresh is queued"
    );
    custodian::dictionary::db::run_coverage_job(&app.db).await.unwrap();

    let public = app.get("/api/v1/fields", None).await;
    public.assert_status(StatusCode::OK);
    let body = public.json();
    assert_eq!(body["exact_counts"], false);
    let field =
        |body: &Value, id: &str| body["fields"].as_array().unwrap().iter().find(|f| f["id"] == id).cloned().unwrap();
    let hba1c = field(&body, "hba1c");
    assert_eq!(
        (hba1c["unit"].as_str(), hba1c["coding_system"].as_str(), hba1c["code"].as_str()),
        (Some("%"), Some("LOINC"), Some("4548-4"))
    );
    let shown = &hba1c["coverage"];
    assert_eq!(shown.as_array().unwrap().len(), 1, "the controlled default cohort is not shown: {shown}");
    assert_eq!((&shown[0]["cohort"], &shown[0]["suppressed"]), (&json!("open-hearts"), &json!(false)));
    let published = shown[0]["subjects"].as_i64().unwrap();
    assert!((10..=19).contains(&published), "13 subjects, perturbed by at most 6 and never below 10: {published}");
    // The same set of subjects gets the same answer from discovery (the cell key method, one record key sum).
    let researcher = app.token("rhea", &[Role::Researcher]);
    let criteria = json!({"criteria": {"and": [
        {"field": "cohort", "in": ["open-hearts"]},
        {"field": "hba1c", "min": 0}
    ]}});
    let counted = app.post_json("/api/v1/discovery/count", Some(&researcher), &criteria).await;
    counted.assert_status(StatusCode::OK);
    assert_eq!(counted.json()["counts"]["subjects"], json!(published), "the dictionary and discovery agree");
    // Four subjects and none look alike: both suppressed, both listed.
    for id in ["crp", "glucose"] {
        assert_eq!(
            field(&body, id)["coverage"],
            json!([{"cohort": "open-hearts", "subjects": null, "suppressed": true}]),
            "{id}"
        );
    }

    let steward = app.token("stella", &[Role::Steward]);
    let exact = app.get("/api/v1/fields/hba1c", Some(&steward)).await.json();
    assert_eq!(
        exact["coverage"],
        json!([
            {"cohort": "default", "subjects": 13, "suppressed": false},
            {"cohort": "open-hearts", "subjects": 13, "suppressed": false}
        ])
    );
    let glucose = app.get("/api/v1/fields/glucose", Some(&steward)).await.json();
    assert_eq!(
        glucose["coverage"],
        json!([
            {"cohort": "default", "subjects": 0, "suppressed": false},
            {"cohort": "open-hearts", "subjects": 0, "suppressed": false}
        ])
    );
    app.get("/api/v1/fields?category=laboratory", None).await.json()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(|f| assert_eq!(f["category"], "laboratory"));
    app.get("/api/v1/fields/nope", None).await.assert_error(StatusCode::NOT_FOUND, "not-found");
    app.get("/api/v1/fields", Some("not-a-token")).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn stewards_define_new_observation_fields_that_imports_then_accept() {
    let app = TestApp::new().await;
    let steward = app.token("stella", &[Role::Steward]);
    let put = |id: &str, body: Value, token: String| {
        let app = &app;
        let id = id.to_owned();
        async move {
            let request = Request::put(format!("/api/v1/fields/{id}"))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            app.call(request).await
        }
    };
    let ferritin = json!({"title": "Ferritin", "category": "laboratory", "value_type": "number", "unit": "ug/L",
                          "coding_system": "LOINC", "code": "2276-4", "min_value": 0, "max_value": 100_000});
    put("ferritin", ferritin.clone(), steward.clone()).await.assert_status(StatusCode::CREATED);
    put("ferritin", ferritin.clone(), steward.clone()).await.assert_status(StatusCode::OK);
    put("ferritin2", ferritin, steward.clone()).await.assert_error(StatusCode::CONFLICT, "conflict");
    put("sex", json!({"title": "x", "category": "laboratory", "value_type": "code"}), steward.clone())
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    put(
        "x",
        json!({"title": "x", "category": "laboratory", "value_type": "number", "unit": "furlong"}),
        steward.clone(),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    put(
        "y",
        json!({"title": "y", "category": "laboratory", "value_type": "code"}),
        app.token("ulrich", &[Role::Uploader]),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");

    let response =
        import(&app, "observations", "", "text/csv", "patient_id,code,value,unit\nP1,2276-4,120,ng/mL\n").await;
    response.assert_status(StatusCode::CREATED);
    let value: f64 = sqlx::query_scalar("select value from observation where field_id = 'ferritin'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!((value - 120.0).abs() < 1e-9, "ng/mL and ug/L are the same");
    assert!(app.audit_actions().await.iter().any(|a| a == "field.create"));

    // With a value stored, the unit and the type stay; the rest may change.
    let in_mg = json!({"title": "Ferritin", "category": "laboratory", "value_type": "number", "unit": "mg/L",
                       "coding_system": "LOINC", "code": "2276-4"});
    let refused = put("ferritin", in_mg, steward.clone()).await;
    let message = refused.assert_error(StatusCode::CONFLICT, "conflict");
    assert!(message.contains("1 stored values in ug/L"), "{message}");
    let coded = json!({"title": "Ferritin", "category": "laboratory", "value_type": "code", "coding_system": "LOINC", "code": "2276-4"});
    put("ferritin", coded, steward.clone()).await.assert_error(StatusCode::CONFLICT, "conflict");
    let renamed = json!({"title": "Serum ferritin", "category": "laboratory", "value_type": "number", "unit": "ug/L",
                         "coding_system": "LOINC", "code": "2276-4", "min_value": 0, "max_value": 100_000});
    put("ferritin", renamed, steward.clone()).await.assert_status(StatusCode::OK);
    let field = app.get("/api/v1/fields/ferritin", Some(&steward)).await.json();
    assert_eq!((field["unit"].as_str(), field["title"].as_str()), (Some("ug/L"), Some("Serum ferritin")));
}

#[tokio::test]
async fn a_json_table_larger_than_the_json_body_limit_is_held_to_the_table_limit_instead() {
    let app = TestApp::with_config(|c| c.ingest.max_table_bytes = 4 * 1024 * 1024).await;
    let rows: Vec<Value> = (0..40_000).map(|i| json!({"patient_id": format!("P{i:06}"), "sex": "F"})).collect();
    let body = serde_json::to_vec(&rows).unwrap();
    assert!(body.len() > app.state.config.http.body_limit_bytes, "larger than an ordinary JSON body");
    let response = import(&app, "subjects", "", "application/json", body).await;
    assert_eq!(response.assert_status(StatusCode::CREATED).json()["rows"], 40_000);

    let larger: Vec<Value> = (0..200_000).map(|i| json!({"patient_id": format!("Q{i:06}"), "sex": "M"})).collect();
    import(&app, "subjects", "", "application/json", serde_json::to_vec(&larger).unwrap())
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    assert_eq!(scalar(&app, "select count(*) from subject").await, 40_000);
}

#[tokio::test]
async fn an_import_naming_more_patients_than_allowed_is_refused_whole_and_one_within_the_cap_is_not() {
    let app = TestApp::with_config(|c| c.ingest.max_table_patients = 3).await;
    let before = everything_stored(&app).await;
    let subjects = "patient_id,sex,birth_year\nMRN-A,F,1970\nMRN-B,M,1971\nMRN-C,F,1972\nMRN-D,M,1973\n";
    let response = import(&app, "subjects", "", "text/csv", subjects).await;
    response.assert_error(StatusCode::BAD_REQUEST, "invalid-import");
    let problems = response.json()["problems"].clone();
    assert_eq!(problems.as_array().unwrap().len(), 1, "{problems}");
    assert_eq!(problems[0]["code"], "too-many-patients");
    let message = problems[0]["message"].as_str().unwrap();
    assert!(message.contains("more than 3 patients") && message.contains("several imports"), "{message}");
    assert!(!response.text().contains("MRN-"), "no patient ID is echoed");
    assert_eq!(everything_stored(&app).await, before, "nothing was imported");

    // Many rows of few patients are within the cap, in any kind of table.
    let rows = (0..30).map(|i| format!("MRN-{},glucose,5.{},mmol/L\n", ["A", "B", "C"][i % 3], i % 10));
    let labs: String = std::iter::once("patient_id,code,value,unit\n".to_owned()).chain(rows).collect();
    import(&app, "observations", "", "text/csv", labs).await.assert_status(StatusCode::CREATED);
    assert_eq!(scalar(&app, "select count(*) from subject").await, 3);
    assert_eq!(scalar(&app, "select count(*) from observation").await, 30);
    // And the same four patients in two imports are all taken.
    for half in ["patient_id,sex\nMRN-A,F\nMRN-B,M\n", "patient_id,sex\nMRN-C,F\nMRN-D,M\n"] {
        import(&app, "subjects", "", "text/csv", half).await.assert_status(StatusCode::CREATED);
    }
    assert_eq!(scalar(&app, "select count(*) from subject").await, 4);
}
