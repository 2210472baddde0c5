//! Discovery counts and breakdowns on a small generated registry, checked
//! against expectations computed here from the same model; protected counts
//! (perturbation, suppression, anchors against differencing, per-cohort
//! thresholds, the budget and its races) and invalid criteria.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use std::sync::Arc;

use custodian::auth::Role;
use custodian::discovery::sql::Dimension;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse};

#[derive(Debug, Clone)]
pub(crate) struct Series {
    study: usize,
    modality: &'static str,
    manufacturer: &'static str,
    model: &'static str,
    field_strength: Option<f64>,
    age: f64,
    instances: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Person {
    id: String,
    site: &'static str,
    sex: &'static str,
    birth_year: i32,
    hba1c: Option<f64>,
    /// (ICD-10 code, diagnosis date)
    diagnosis: Option<(&'static str, &'static str)>,
    apoe: Option<i16>,
    series: Vec<Series>,
}

/// 80 people at two sites with a deterministic mix of everything discovery filters on.
#[allow(clippy::manual_is_multiple_of)]
pub(crate) fn people() -> Vec<Person> {
    (0..80_u32)
        .map(|i| {
            let site = if i % 3 == 0 { "north" } else { "local" };
            let birth_year = 1940 + i32::try_from(i % 40).unwrap();
            let age = f64::from(2020 - birth_year);
            let mut series = Vec::new();
            if i % 4 != 0 {
                let (manufacturer, model, field_strength) = match (site, i % 3) {
                    ("north", _) => ("Siemens", "Prisma", 3.0),
                    (_, 1) => ("GE", "Signa", 1.5),
                    _ => ("Philips", "Ingenia", 3.0),
                };
                for _ in 0..2 {
                    series.push(Series {
                        study: 0,
                        modality: "MR",
                        manufacturer,
                        model,
                        field_strength: Some(field_strength),
                        age,
                        instances: 3,
                    });
                }
            }
            if i % 6 == 0 {
                series.push(Series {
                    study: 1,
                    modality: "CT",
                    manufacturer: "GE",
                    model: "Revolution",
                    field_strength: None,
                    age,
                    instances: 10,
                });
            }
            Person {
                id: format!("P{i:03}"),
                site,
                sex: if i % 2 == 0 { "F" } else { "M" },
                birth_year,
                hba1c: (i % 4 != 3).then_some(5.0 + f64::from(i % 7) * 0.5),
                diagnosis: match (i % 5, i % 10, i % 7) {
                    (0, 0, _) => Some(("E11.9", "2020-03-15")),
                    (0, _, _) => Some(("E11.9", "2019-01-01")),
                    (_, _, 0) => Some(("I21.4", "2020-01-10")),
                    _ => None,
                },
                apoe: (i % 2 == 0).then(|| i16::try_from(i % 3).unwrap()),
                series,
            }
        })
        .collect()
}

/// [subjects, studies, series, instances] over the units (each series, or the person without imaging).
fn expected(people: &[Person], matches: impl Fn(&Person, Option<&Series>) -> bool) -> [i64; 4] {
    let mut counts = [0_i64; 4];
    for p in people {
        let units: Vec<Option<&Series>> =
            if p.series.is_empty() { vec![None] } else { p.series.iter().map(Some).collect() };
        let hits: Vec<Option<&Series>> = units.into_iter().filter(|u| matches(p, *u)).collect();
        if hits.is_empty() {
            continue;
        }
        counts[0] += 1;
        let mut studies: Vec<usize> = hits.iter().flatten().map(|s| s.study).collect();
        studies.sort_unstable();
        studies.dedup();
        counts[1] += i64::try_from(studies.len()).unwrap();
        counts[2] += i64::try_from(hits.iter().flatten().count()).unwrap();
        counts[3] += hits.iter().flatten().map(|s| s.instances).sum::<i64>();
    }
    counts
}

async fn post_csv(app: &TestApp, path: &str, csv: String, content_type: &str) {
    let token = app.token("ulrich", &[Role::Uploader]);
    let request = Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(csv))
        .unwrap();
    app.call(request).await.assert_status(StatusCode::CREATED);
}

/// Loads the people: tables through the import API, imaging as catalog rows.
pub(crate) async fn registry(app: &TestApp, people: &[Person]) {
    sqlx::query("insert into site (code, name) values ('north', 'North hospital')").execute(&app.db).await.unwrap();
    for site in ["local", "north"] {
        let here: Vec<&Person> = people.iter().filter(|p| p.site == site).collect();
        let mut subjects = vec!["patient_id,sex,birth_year".to_owned()];
        subjects.extend(here.iter().map(|p| format!("{},{},{}", p.id, p.sex, p.birth_year)));
        post_csv(app, &format!("/api/v1/imports/subjects?site={site}"), subjects.join("\n"), "text/csv").await;
        let mut labs = vec!["patient_id,code,value,unit".to_owned()];
        labs.extend(here.iter().filter_map(|p| p.hba1c.map(|v| format!("{},hba1c,{v},%", p.id))));
        post_csv(app, &format!("/api/v1/imports/observations?site={site}"), labs.join("\n"), "text/csv").await;
        let mut dx = vec!["patient_id,system,code,date".to_owned()];
        dx.extend(here.iter().filter_map(|p| p.diagnosis.map(|(c, d)| format!("{},ICD-10,{c},{d}", p.id))));
        post_csv(app, &format!("/api/v1/imports/diagnoses?site={site}"), dx.join("\n"), "text/csv").await;
        let mut gt = vec!["patient_id,variant,rsid,gene,genotype".to_owned()];
        gt.extend(here.iter().filter_map(|p| p.apoe.map(|g| format!("{},19-44908684-T-C,rs429358,APOE,{g}", p.id))));
        post_csv(app, &format!("/api/v1/imports/variants?site={site}"), gt.join("\n"), "text/csv").await;
    }
    let mut n = 0;
    for p in people {
        let pseudonym = app.state.ingest.key.subject(p.site, &p.id);
        let studies: Vec<usize> = {
            let mut s: Vec<usize> = p.series.iter().map(|s| s.study).collect();
            s.dedup();
            s
        };
        for study in studies {
            let study_id: uuid::Uuid = sqlx::query_scalar(
                "insert into study (study_uid, subject_id, cohort_id, site_id, study_date, age_years)
                 select $1, s.subject_id, (select cohort_id from cohort where slug = 'default'), s.site_id,
                        date '2020-06-01' + s.date_shift_days, $3
                 from subject s where s.pseudonym = $2 returning study_id",
            )
            .bind(format!("2.25.{}{study}", 1000 + n))
            .bind(&pseudonym)
            .bind(p.series[0].age)
            .fetch_one(&app.db)
            .await
            .unwrap();
            for s in p.series.iter().filter(|s| s.study == study) {
                n += 1;
                let scanner: uuid::Uuid = sqlx::query_scalar(
                    "insert into scanner (manufacturer, model, field_strength) values ($1, $2, $3)
                     on conflict on constraint scanner_identity_key do update set model = excluded.model returning scanner_id",
                )
                .bind(s.manufacturer)
                .bind(s.model)
                .bind(s.field_strength)
                .fetch_one(&app.db)
                .await
                .unwrap();
                let series_id: uuid::Uuid = sqlx::query_scalar(
                    "insert into series (series_uid, study_id, scanner_id, modality) values ($1, $2, $3, $4) returning series_id",
                )
                .bind(format!("2.25.9{n}"))
                .bind(study_id)
                .bind(scanner)
                .bind(s.modality)
                .fetch_one(&app.db)
                .await
                .unwrap();
                sqlx::query(
                    "insert into instance (sop_uid, series_id, sop_class_uid, transfer_syntax, object_key, size_bytes, sha256, status)
                     select '2.25.8' || $2 || '.' || k, $1, '1.2.840.10008.5.1.4.1.1.4', '1.2.840.10008.1.2.1',
                            'synthetic/' || $2 || '/' || k, 1, '\\x00', 'published'
                     from generate_series(1, $3) k",
                )
                .bind(series_id)
                .bind(n)
                .bind(s.instances)
                .execute(&app.db)
                .await
                .unwrap();
            }
        }
    }
    sqlx::query("select refresh_discovery_series(array(select series_id from series))").execute(&app.db).await.unwrap();
}

async fn discover(app: &TestApp, token: &str, path: &str, body: &Value) -> TestResponse {
    app.post_json(&format!("/api/v1/discovery/{path}"), Some(token), body).await
}

fn counts(body: &Value) -> [i64; 4] {
    let c = &body["counts"];
    ["subjects", "studies", "series", "instances"].map(|k| c[k].as_i64().unwrap_or(-1))
}

#[tokio::test]
async fn counts_match_expectations_computed_independently_for_every_kind_of_condition() {
    let app = TestApp::new().await;
    let people = people();
    registry(&app, &people).await;
    let steward = app.token("stella", &[Role::Steward]);
    // Answered from the in-memory index; PostgreSQL's answer is checked alongside.
    app.state.discovery.refresh(&app.db).await.unwrap();
    let dx_date = |p: &Person| p.diagnosis.map(|(_, d)| d);
    let cases: Vec<(Value, [i64; 4])> = vec![
        (json!(null), expected(&people, |_, _| true)),
        (json!({"field": "modality", "in": ["MR"]}), expected(&people, |_, s| s.is_some_and(|s| s.modality == "MR"))),
        (
            json!({"and": [{"field": "sex", "in": ["F"]}, {"field": "age_at_study", "min": 50, "max": 70}]}),
            expected(&people, |p, s| p.sex == "F" && s.is_some_and(|s| (50.0..=70.0).contains(&s.age))),
        ),
        (
            json!({"field": "hba1c", "min": 48, "unit": "mmol/mol"}),
            [0, 0, 0, 0], // placeholder replaced below: HbA1c % and mmol/mol do not convert
        ),
        (
            json!({"and": [{"field": "hba1c", "min": 6.5}, {"field": "diagnosis", "system": "ICD-10", "prefix": "E11"}]}),
            expected(&people, |p, _| {
                p.hba1c.is_some_and(|v| v >= 6.5) && p.diagnosis.is_some_and(|d| d.0.starts_with("E11"))
            }),
        ),
        (
            json!({"field": "genotype", "variant": "rs429358", "genotype": "carrier"}),
            expected(&people, |p, _| p.apoe.is_some_and(|g| g > 0)),
        ),
        (
            json!({"not": {"or": [{"field": "site", "in": ["north"]}, {"field": "manufacturer", "in": ["GE"]}]}}),
            expected(&people, |p, s| !(p.site == "north" || s.is_some_and(|s| s.manufacturer == "GE"))),
        ),
        (
            json!({"and": [{"field": "field_strength", "min": 2.9}, {"field": "cohort", "in": ["default"]}]}),
            expected(&people, |_, s| s.is_some_and(|s| s.field_strength.is_some_and(|f| f >= 2.9))),
        ),
        (
            json!({"field": "modality", "in": ["MR"], "within_days_after": {"event": {"field": "diagnosis", "prefix": "E11"}, "min": 0, "max": 90}}),
            expected(&people, |p, s| s.is_some_and(|s| s.modality == "MR") && dx_date(p) == Some("2020-03-15")),
        ),
        (
            json!({"and": [
                {"field": "modality", "in": ["MR", "CT"]},
                {"field": "age_at_study", "min": 45},
                {"field": "hba1c", "min": 5.5, "max": 7.5},
                {"field": "diagnosis", "prefix": "E1"},
                {"field": "genotype", "variant": "19-44908684-T-C", "genotype": "het"},
                {"not": {"field": "sex", "in": ["M"]}}
            ]}),
            expected(&people, |p, s| {
                s.is_some_and(|s| s.age >= 45.0)
                    && p.hba1c.is_some_and(|v| (5.5..=7.5).contains(&v))
                    && p.diagnosis.is_some_and(|d| d.0.starts_with("E1"))
                    && p.apoe == Some(1)
                    && p.sex != "M"
            }),
        ),
    ];
    for (criteria, want) in cases {
        let body = if criteria.is_null() { json!({}) } else { json!({ "criteria": criteria }) };
        let response = discover(&app, &steward, "count", &body).await;
        if criteria.get("unit").is_some() {
            let problems = response.json()["problems"].clone();
            response.assert_error(StatusCode::BAD_REQUEST, "invalid-criteria");
            assert_eq!(problems[0]["code"], "unit-mismatch");
            continue;
        }
        response.assert_status(StatusCode::OK);
        assert_eq!(counts(&response.json()), want, "criteria {criteria}");
        let query = custodian::discovery::prepare(&app.db, body.get("criteria")).await.unwrap();
        assert_eq!(custodian::discovery::count_in_database(&app.db, &query).await.unwrap(), want, "SQL: {criteria}");
        assert!(want[0] > 0, "every case matches someone: {criteria}");
    }
}

/// The published bound of the perturbation with the default settings.
const BOUND: i64 = 6;

fn all_null(counts: &Value) -> bool {
    ["subjects", "studies", "series", "instances"].iter().all(|k| counts[k].is_null())
}

#[tokio::test]
async fn researchers_get_perturbed_counts_within_the_published_bound_and_suppressed_cells_all_null() {
    let app = TestApp::new().await;
    let people = people();
    registry(&app, &people).await;
    let researcher = app.token("rita", &[Role::Researcher]);
    let steward = app.token("stella", &[Role::Steward]);

    let all = discover(&app, &researcher, "count", &json!({})).await.json();
    let exact = expected(&people, |_, _| true);
    let disclosure = &all["disclosure"];
    assert_eq!(disclosure["exact"], false);
    assert_eq!(disclosure["threshold"], 10);
    assert_eq!(disclosure["noise"]["method"], "cell-key");
    assert_eq!(disclosure["noise"]["bound"], BOUND);
    assert_eq!(disclosure["noise"]["table"].as_array().unwrap().len(), 13);
    assert_eq!(disclosure["budget"]["spent"], 1);
    assert_eq!(disclosure["cohort_thresholds"], json!([{"cohort": "default", "threshold": 10}]));
    let shown = counts(&all);
    assert!((shown[0] - exact[0]).abs() <= BOUND, "{shown:?} vs {exact:?}");
    assert!(shown.iter().all(|n| *n >= 0));
    // The same query again: the same answer, for free.
    let again = discover(&app, &researcher, "count", &json!({})).await.json();
    assert_eq!(again["counts"], all["counts"]);
    assert_eq!(again["disclosure"]["budget"]["spent"], 0);

    // A few people and nobody at all look the same: every count null.
    let few = discover(&app, &researcher, "count", &json!({"criteria": {"field": "diagnosis", "prefix": "I21"}}))
        .await
        .json();
    let none = discover(&app, &researcher, "count", &json!({"criteria": {"field": "diagnosis", "prefix": "Z99"}}))
        .await
        .json();
    assert!(all_null(&few["counts"]) && all_null(&none["counts"]), "{few} {none}");

    let mr = json!({"field": "modality", "in": ["MR"]});
    let by = json!({"criteria": mr, "by": ["manufacturer"]});
    let open = discover(&app, &steward, "breakdown", &by).await.json();
    assert_eq!(open["disclosure"]["exact"], true);
    assert!(open["disclosure"]["noise"].is_null());
    let protected = discover(&app, &researcher, "breakdown", &by).await.json();
    let cells = protected["cells"].as_array().unwrap();
    let labels: Vec<&Value> = cells.iter().map(|c| &c["values"][0]).collect();
    // Every manufacturer the registry holds is listed, GE's CT scanner included: no cell is told apart by being absent.
    assert_eq!(labels, [&json!("GE"), &json!("Philips"), &json!("Siemens"), &Value::Null]);
    let maker = |m: &str| expected(&people, |_, s| s.is_some_and(|s| s.modality == "MR" && s.manufacturer == m));
    for cell in cells {
        let want = match cell["values"][0].as_str() {
            Some(m) => maker(m),
            None => expected(&people, |_, s| s.is_some_and(|s| s.modality == "MR")),
        };
        if cell["suppressed"] == true {
            assert!(all_null(&cell["counts"]));
        } else {
            let got = cell["counts"]["subjects"].as_i64().unwrap();
            assert!(want[0] >= 10 && (got - want[0]).abs() <= BOUND, "{cell} vs {want:?}");
        }
    }
    // The total is a cell in its own right: the plain count of the same criteria answers the same.
    let total = cells.last().unwrap();
    let marked: Vec<bool> = cells.iter().map(|c| c["total"] == true).collect();
    assert_eq!(marked, [false, false, false, true], "the grand total says it is one, and only it");
    let plain = discover(&app, &researcher, "count", &json!({"criteria": mr})).await.json();
    assert_eq!(total["counts"], plain["counts"]);
    // And so is each cell, however the question is put.
    let siemens = json!({"criteria": {"and": [{"field": "manufacturer", "in": ["Siemens"]}, mr]}});
    let siemens = discover(&app, &researcher, "count", &siemens).await.json();
    assert_eq!(cells[2]["counts"], siemens["counts"]);
    assert_eq!(protected["disclosure"]["budget"]["spent"], 2);

    let two_way = discover(&app, &researcher, "breakdown", &json!({"by": ["site", "sex"]})).await;
    two_way.assert_status(StatusCode::OK);
    assert_eq!(two_way.json()["cells"].as_array().unwrap().len(), 2 * 2 + 2 + 2 + 1);
    assert_eq!(two_way.json()["disclosure"]["budget"]["spent"], 4);
}

#[tokio::test]
async fn invalid_criteria_are_refused_with_every_problem_but_unknown_variants_are_not() {
    let app = TestApp::new().await;
    let token = app.token("rita", &[Role::Researcher]);
    let response = discover(
        &app,
        &token,
        "count",
        &json!({"criteria": {"and": [{"field": "nope", "in": ["x"]}, {"field": "cohort", "in": ["ghost"]}, {"field": "age_at_study", "min": 9, "max": 1}]}}),
    )
    .await;
    let body = response.json();
    response.assert_error(StatusCode::BAD_REQUEST, "invalid-criteria");
    let paths: Vec<&str> = body["problems"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/criteria/and/0/field", "/criteria/and/1/in/0", "/criteria/and/2"]);

    let response = discover(
        &app,
        &token,
        "count",
        &json!({"criteria": {"field": "genotype", "variant": "rs1", "genotype": "het"}}),
    )
    .await;
    // A variant nobody in the registry has a genotype of matches nobody: saying so would tell whether anyone carries it.
    assert!(all_null(&response.assert_status(StatusCode::OK).json()["counts"]));
    discover(&app, &token, "breakdown", &json!({"by": []})).await.assert_error(StatusCode::BAD_REQUEST, "bad-request");
    discover(&app, &token, "breakdown", &json!({"by": ["shoe_size"]}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    app.post_json("/api/v1/discovery/count", None, &json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn adding_or_removing_a_few_people_by_any_route_gets_the_earlier_answer_and_is_never_refused() {
    let app = TestApp::new().await;
    let people = people();
    registry(&app, &people).await;
    let token = app.token("rita", &[Role::Researcher]);
    let mr = json!({"field": "modality", "in": ["MR"]});
    let heart = json!({"field": "diagnosis", "prefix": "I21"});
    let nobody = json!({"field": "diagnosis", "prefix": "Z99"});
    let base = discover(&app, &token, "count", &json!({"criteria": mr})).await.json();
    let exact = |f: &dyn Fn(&Person, Option<&Series>) -> bool| expected(&people, f)[0];
    let with_heart =
        exact(&|p, s| s.is_some_and(|s| s.modality == "MR") && p.diagnosis.is_some_and(|d| d.0 == "I21.4"));
    assert!((1..10).contains(&with_heart), "the test needs a few people to take away: {with_heart}");
    let variants = [
        json!({"and": [mr, {"not": heart}]}),
        json!({"or": [{"and": [mr, {"not": heart}]}]}),
        json!({"and": [{"and": [{"field": "modality", "in": ["MR", "MR"]}]}, {"not": {"or": [heart, heart]}}]}),
        json!({"or": [mr, heart]}),
        json!({"or": [mr, nobody]}),
        json!({"and": [mr, {"not": nobody}]}),
        json!({"not": {"not": {"or": [{"and": [mr, heart]}, {"and": [mr, {"not": heart}]}]}}}),
    ];
    for criteria in &variants {
        let response = discover(&app, &token, "count", &json!({"criteria": criteria})).await;
        response.assert_status(StatusCode::OK);
        assert_eq!(response.json()["counts"], base["counts"], "{criteria}");
    }
    // A change of many subjects gets an answer of its own.
    let women = json!({"criteria": {"and": [mr, {"field": "sex", "in": ["F"]}]}});
    let women = discover(&app, &token, "count", &women).await.json();
    let want = exact(&|p, s| s.is_some_and(|s| s.modality == "MR") && p.sex == "F");
    assert!((women["counts"]["subjects"].as_i64().unwrap() - want).abs() <= BOUND);
    // Another researcher gets the same answers: the anchors are the registry's, not the user's.
    let other = app.token("rafael", &[Role::Researcher]);
    let theirs = discover(&app, &other, "count", &json!({"criteria": variants[3]})).await.json();
    assert_eq!(theirs["counts"], base["counts"]);
    // Stewards see exact counts.
    let open =
        discover(&app, &app.token("stella", &[Role::Steward]), "count", &json!({"criteria": variants[0]})).await.json();
    assert_eq!(open["counts"]["subjects"], exact(&|_, s| s.is_some_and(|s| s.modality == "MR")) - with_heart);

    let events: Vec<(String, Value)> =
        sqlx::query_as("select action, details from audit_event where action like 'discovery.%' order by seq")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(events.len(), 1 + variants.len() + 3);
    assert!(events.iter().all(|(_, d)| d["result"] == "shown" || d["result"] == "exact"));
    assert!(events.iter().all(|(_, d)| d["criteria_sha256"].as_str().unwrap().len() == 64));
    let keys: Vec<Vec<&String>> = events.iter().map(|(_, d)| d.as_object().unwrap().keys().collect()).collect();
    assert!(keys.iter().all(|k| k == &["criteria_sha256", "result", "units"]), "no counts or rows in the audit log");
}

#[tokio::test]
async fn a_cell_a_breakdown_hid_to_protect_its_neighbour_stays_hidden_when_counted_on_its_own() {
    let app = TestApp::new().await;
    let people = people();
    registry(&app, &people).await;
    let token = app.token("rita", &[Role::Researcher]);
    let mr = json!({"field": "modality", "in": ["MR"]});
    let table =
        discover(&app, &token, "breakdown", &json!({"criteria": mr, "by": ["manufacturer", "sex"]})).await.json();
    let cell = |maker: &str, sex: &str| {
        table["cells"].as_array().unwrap().iter().find(|c| c["values"] == json!([maker, sex])).unwrap().clone()
    };
    // Six GE women are too few; the fourteen GE men are hidden with them, or the GE total would give the women away.
    let want =
        expected(&people, |p, s| s.is_some_and(|s| s.modality == "MR" && s.manufacturer == "GE") && p.sex == "M");
    assert_eq!(want[0], 14);
    assert_eq!(cell("GE", "F")["suppressed"], true);
    assert_eq!(cell("GE", "M")["suppressed"], true);
    let alone =
        json!({"criteria": {"and": [{"field": "sex", "in": ["M"]}, {"field": "manufacturer", "in": ["GE"]}, mr]}});
    let alone = discover(&app, &token, "count", &alone).await.json();
    assert!(all_null(&alone["counts"]), "{alone}");
}

#[tokio::test]
async fn the_budget_is_spent_per_cohort_in_units_and_a_429_says_when_to_retry() {
    let app = TestApp::with_config(|c| c.discovery.budget_units = 5).await;
    let token = app.token("rita", &[Role::Researcher]);
    let first = discover(&app, &token, "count", &json!({})).await.json();
    assert_eq!(first["disclosure"]["budget"]["remaining"], 4);
    let by_site = discover(&app, &token, "breakdown", &json!({"by": ["site"]})).await.json();
    assert_eq!(by_site["disclosure"]["budget"]["remaining"], 2);
    let refused = discover(&app, &token, "breakdown", &json!({"by": ["site", "sex"]})).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "query-budget-exhausted");
    let retry: u64 = refused.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((29 * 86_400..=30 * 86_400).contains(&retry), "retry after {retry} s");
    assert!(refused.json()["message"].as_str().unwrap().contains("`default`"));
    // The same query again is free; another user has their own budget; stewards have none.
    discover(&app, &token, "count", &json!({})).await.assert_status(StatusCode::OK);
    discover(&app, &app.token("rafael", &[Role::Researcher]), "breakdown", &json!({"by": ["site", "sex"]}))
        .await
        .assert_status(StatusCode::OK);
    let steward = app.token("stella", &[Role::Steward]);
    for _ in 0..3 {
        discover(&app, &steward, "breakdown", &json!({"by": ["site", "sex"]})).await.assert_status(StatusCode::OK);
    }
    // A query within another cohort spends that cohort's budget only.
    sqlx::query(
        "insert into cohort (slug, title, tier, design, source) values ('other', 'Other', 'controlled', 'retrospective', 'registry')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let other = json!({"criteria": {"field": "cohort", "in": ["other"]}, "by": ["site", "sex"]});
    let answer = discover(&app, &token, "breakdown", &other).await.json();
    assert_eq!(answer["disclosure"]["budget"]["cohorts"], json!(["other"]));
    assert_eq!(answer["disclosure"]["budget"]["remaining"], 1);
}

#[tokio::test]
async fn sixty_parallel_queries_cannot_spend_more_than_the_budget() {
    let app = Arc::new(TestApp::with_config(|c| c.discovery.budget_units = 20).await);
    let token = app.token("rita", &[Role::Researcher]);
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (app, token) = (app.clone(), token.clone());
            tokio::spawn(async move {
                let body = json!({"criteria": {"field": "age_at_study", "min": i}});
                discover(&app, &token, "count", &body).await.status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 20);
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 40);
}

#[tokio::test]
async fn a_cohorts_threshold_applies_to_its_own_subjects_and_is_bounded() {
    let app = TestApp::new().await;
    let people = people();
    registry(&app, &people).await;
    let admin = app.token("ada", &[Role::Admin]);
    for bad in [4, 51, i32::MAX] {
        let body = json!({"slug": "strict", "title": "Strict", "tier": "controlled", "design": "retrospective",
                          "source": "registry", "suppression_threshold": bad});
        app.post_json("/api/v1/cohorts", Some(&admin), &body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad-request");
    }
    let body = json!({"slug": "strict", "title": "Strict", "tier": "controlled", "design": "retrospective",
                      "source": "registry", "suppression_threshold": 50});
    app.post_json("/api/v1/cohorts", Some(&admin), &body).await.assert_status(StatusCode::CREATED);
    // Twelve of the people also join the strict cohort.
    sqlx::query(
        "insert into cohort_subject (cohort_id, subject_id)
         select (select cohort_id from cohort where slug = 'strict'), subject_id from subject order by pseudonym limit 12",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let token = app.token("rita", &[Role::Researcher]);
    let all = discover(&app, &token, "count", &json!({})).await.json();
    // The others are still counted; the twelve, fewer than 50 of their kind, are left out.
    let shown = all["counts"]["subjects"].as_i64().unwrap();
    assert!((shown - (80 - 12)).abs() <= BOUND, "{shown}");
    assert_eq!(
        all["disclosure"]["cohort_thresholds"],
        json!([{"cohort": "default", "threshold": 10}, {"cohort": "strict", "threshold": 50}])
    );
    let strict = discover(&app, &token, "count", &json!({"criteria": {"field": "cohort", "in": ["strict"]}})).await;
    assert!(all_null(&strict.json()["counts"]));
}

/// Both evaluators' answers to `criteria`: the in-memory index's and PostgreSQL's.
async fn both_counts(
    app: &TestApp,
    snapshot: &custodian::discovery::memory::Snapshot,
    criteria: &Value,
) -> [[i64; 4]; 2] {
    let query = custodian::discovery::prepare(&app.db, (!criteria.is_null()).then_some(criteria)).await.unwrap();
    [snapshot.count(query.node.as_ref()), custodian::discovery::count_in_database(&app.db, &query).await.unwrap()]
}

#[tokio::test]
async fn the_in_memory_index_answers_exactly_what_postgresql_answers_on_a_generated_registry() {
    let app = TestApp::new().await;
    custodian::demo::seed(&app.db).await.unwrap();
    custodian::demo::registry::generate(
        &app.db,
        &app.state.ingest.key,
        3650,
        400,
        11,
        custodian::demo::registry::Imaging::CatalogOnly,
    )
    .await
    .unwrap();
    // Some edge cases the generator does not make: a subject without sex or imaging, a withdrawn subject.
    sqlx::query(
        "insert into subject (pseudonym, site_id, date_shift_days) select 'edge', site_id, 0 from site where code = 'uhb'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("update subject set withdrawn_at = now() where subject_id = (select subject_id from discovery_series order by series_id limit 1)")
        .execute(&app.db)
        .await
        .unwrap();
    let snapshot = app.state.discovery.refresh(&app.db).await.unwrap();

    let benchmark: Value = serde_json::from_str(include_str!("../../benches/discovery_queries.json")).unwrap();
    let mut criteria: Vec<Value> = benchmark
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["body"].get("criteria").cloned().unwrap_or(Value::Null))
        .collect();
    criteria.extend([
        json!({"field": "cohort", "in": ["demo-neuro-mri"]}),
        json!({"not": {"field": "cohort", "in": ["demo-neuro-mri"]}}),
        json!({"not": {"field": "modality", "in": ["MR"]}}),
        json!({"not": {"field": "sex", "in": ["F", "M"]}}),
        json!({"or": [{"field": "body_part", "in": ["HEAD"]}, {"field": "hba1c", "max": 5.0}]}),
        json!({"not": {"or": [{"field": "age_at_study", "max": 40}, {"field": "genotype", "variant": "rs429358", "genotype": "hom_ref"}]}}),
        json!({"field": "manufacturer", "in": ["Siemens", "GE", "Philips"]}),
        json!({"field": "annotation", "label": ["RID3874"], "role": ["algorithm", "resident"]}),
        json!({"not": {"field": "annotation", "level": "low"}}),
        json!({"field": "CT", "in": ["x"]}),
        json!({"field": "modality", "in": ["CT"], "within_days_after": {"event": {"field": "hba1c", "min": 6.5}, "min": -30, "max": 30}}),
        json!({"not": {"field": "modality", "in": ["MR"], "within_days_after": {"event": {"field": "diagnosis", "prefix": "E"}, "min": 0, "max": 3650}}}),
        json!({"field": "diagnosis", "in": ["E11.9", "I10"]}),
        json!({"field": "smoking_status", "in": ["current", "former"]}),
    ]);
    let mut compared = 0;
    for c in &criteria {
        let Ok(query) = custodian::discovery::prepare(&app.db, (!c.is_null()).then_some(c)).await else { continue };
        let [memory, database] = both_counts(&app, &snapshot, c).await;
        assert_eq!(memory, database, "criteria {c}");
        let dims = [
            Dimension::Site,
            Dimension::Cohort,
            Dimension::Modality,
            Dimension::Manufacturer,
            Dimension::Model,
            Dimension::FieldStrength,
            Dimension::Sex,
            Dimension::AgeBand,
        ];
        for (i, a) in dims.iter().enumerate() {
            for by in std::iter::once(vec![*a]).chain(dims[i + 1..].iter().map(|b| vec![*a, *b])) {
                let mut memory = snapshot.breakdown(query.node.as_ref(), &by);
                let mut database = custodian::discovery::breakdown_in_database(&app.db, &query, &by).await.unwrap();
                memory.sort();
                database.sort();
                assert_eq!(memory, database, "criteria {c} by {by:?}");
            }
        }
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} criteria were valid");

    // A subject is in a cohort by membership, whatever cohort its imaging belongs to: the
    // members of the open cohort imaged only there still count in the neuro cohort, as in
    // the subject list a grant on it would give.
    let members: i64 = sqlx::query_scalar(
        "select count(*) from cohort_subject cs join cohort c using (cohort_id) join subject s using (subject_id)
         where c.slug = 'demo-neuro-mri' and s.withdrawn_at is null",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let imaged_elsewhere_only: i64 = sqlx::query_scalar(
        "select count(*) from subject s where withdrawn_at is null
           and exists (select 1 from discovery_series d where d.subject_id = s.subject_id)
           and not exists (select 1 from discovery_series d join cohort c using (cohort_id)
                           where d.subject_id = s.subject_id and c.slug = 'demo-neuro-mri')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(imaged_elsewhere_only > 0, "the generated registry has members imaged only in the open cohort");
    let neuro = json!({"field": "cohort", "in": ["demo-neuro-mri"]});
    let [memory, database] = both_counts(&app, &snapshot, &neuro).await;
    assert_eq!([memory[0], database[0]], [members, members]);
}

#[tokio::test]
async fn a_change_is_counted_at_once_and_the_index_catches_up_with_it() {
    let app = TestApp::new().await;
    let people = people();
    registry(&app, &people).await;
    let steward = app.token("stella", &[Role::Steward]);
    let index = &app.state.discovery;
    let built = index.refresh(&app.db).await.unwrap();
    let all = json!({});
    let before = counts(&discover(&app, &steward, "count", &all).await.json());
    assert_eq!(before, expected(&people, |_, _| true));
    assert!(Arc::ptr_eq(&index.latest().unwrap(), &built), "an unchanged registry is answered from the index");

    // A withdrawal: the very next query no longer counts the subject, whatever the index holds.
    sqlx::query("update subject set withdrawn_at = now() where subject_id = (select subject_id from subject order by pseudonym limit 1)")
        .execute(&app.db)
        .await
        .unwrap();
    let after = counts(&discover(&app, &steward, "count", &all).await.json());
    assert_eq!(after[0], before[0] - 1);
    let rebuilt = index.refresh(&app.db).await.unwrap();
    assert!(rebuilt.version > built.version);
    assert_eq!(rebuilt.count(None), after);
    assert_eq!(counts(&discover(&app, &steward, "count", &all).await.json()), after);
}

#[tokio::test]
async fn a_protected_breakdown_with_too_many_label_pairs_is_refused_before_any_work() {
    let app = TestApp::new().await;
    // Fifty scanners, each of its own maker, on one subject's fifty series.
    sqlx::query(
        "with su as (insert into subject (pseudonym, site_id, date_shift_days) select 'PSEUDO-X', site_id, 0 from site where code = 'local' returning subject_id, site_id),
              st as (insert into study (study_uid, subject_id, cohort_id, site_id, study_date)
                     select '2.25.4242', subject_id, (select cohort_id from cohort where slug = 'default'), site_id, date '2020-01-01' from su returning study_id),
              sc as (insert into scanner (manufacturer, model) select 'Maker' || k, 'Model' || k from generate_series(1, 50) k returning scanner_id, model),
              se as (insert into series (series_uid, study_id, scanner_id, modality)
                     select '2.25.4242.' || row_number() over (), study_id, scanner_id, 'MR' from st, sc returning series_id, series_uid)
         insert into instance (sop_uid, series_id, sop_class_uid, transfer_syntax, object_key, size_bytes, sha256, status)
         select series_uid || '.1', series_id, '1.2.840.10008.5.1.4.1.1.4', '1.2.840.10008.1.2.1', 'synthetic/' || series_uid, 1, '\\x00', 'published' from se",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("select refresh_discovery_series(array(select series_id from series))").execute(&app.db).await.unwrap();
    let token = app.token("rita", &[Role::Researcher]);
    let refused = discover(&app, &token, "breakdown", &json!({"by": ["manufacturer", "model"]})).await;
    assert!(refused.assert_error(StatusCode::BAD_REQUEST, "bad-request").contains("2601 cells"));
    let spent: i64 = sqlx::query_scalar("select count(*) from discovery_query").fetch_one(&app.db).await.unwrap();
    assert_eq!(spent, 0, "nothing spent, nothing anchored");
    discover(&app, &token, "breakdown", &json!({"by": ["manufacturer"]})).await.assert_status(StatusCode::OK);
}
