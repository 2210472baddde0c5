//! The tables of a release: exactly the granted fields of the released
//! subjects, keyed by project pseudonyms, in CSV and in Parquet that a reader
//! nobody here wrote (pyarrow) reads back to the CSV's values.

use std::collections::BTreeMap;
use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodian::access::grants::{Conditions, Scope};
use custodian::access::scope::Coverage;
use custodian::auth::Role;
use custodian::deid::pseudonym::project_subject;
use custodian::release::tables::{self, Subject, TableFile};
use serde_json::{Value, json};

use crate::dicom_gen::Instance;
use crate::helpers::{TestApp, TestResponse};
use crate::python;

const PROJECT_KEY: [u8; 32] = [7; 32];

/// A registry with three subjects (born 1950, 1960, 1970), each with
/// subject-level fields, labs, a proteomic value, a diagnosis and genotypes;
/// the first also has a published CT study.
async fn registry() -> (TestApp, Vec<String>) {
    let app = TestApp::new().await;
    let token = app.token("ulrich", &[Role::Uploader]);
    let session =
        app.post_json("/api/v1/uploads", Some(&token), &json!({})).await.json()["id"].as_str().unwrap().to_owned();
    let instance = Instance::ct(1, 1, 1, 1);
    let file = format!("/api/v1/uploads/{session}/files");
    post(&app, &token, &file, "application/dicom", instance.to_bytes()).await.assert_status(StatusCode::OK);
    app.post_json(&format!("/api/v1/uploads/{session}/commit"), Some(&token), &json!({}))
        .await
        .assert_status(StatusCode::OK);

    let p1 = &instance.patient_id;
    let imports = [
        (
            "subjects",
            "text/csv",
            format!(
                "patient_id,sex,birth_date,date,weight,smoking_status\n\
                 {p1},F,1950,2020-05-01,70.5,266919005\nP2,M,1960,,81,\nP3,O,1970,,,8517006\n"
            ),
        ),
        (
            "observations",
            "text/csv",
            format!(
                "patient_id,code,value,unit,time\n\
                 {p1},glucose,5.5,mmol/L,2021-01-02T08:30:00\n{p1},hba1c,6.5,%,2021-01-02\n\
                 P2,glucose,6.125,mmol/L,\nP2,prot_il6,-1.25,,2021-01-03\nP3,hba1c,7.25,%,2021-02-03\n"
            ),
        ),
        (
            "diagnoses",
            "application/json",
            json!([
                {"patient_id": p1, "system": "ICD-10", "code": "E11.9", "date": "2019-06-30"},
                {"patient_id": "P2", "system": "SNOMED CT", "code": "44054006"},
                {"patient_id": "P3", "system": "ICD-10", "code": "I21.4", "date": "2020-01-01"}
            ])
            .to_string(),
        ),
        (
            "variants",
            "text/csv",
            // A gene symbol a spreadsheet would run as a formula, with quotes and a comma.
            format!(
                "patient_id,variant,gene,genotype\n{p1},19-44908684-T-C,APOE,1\n\
                 P2,19-44908684-T-C,APOE,2\nP3,1-1000-A-G,\"=HYPERLINK(\"\"h\"\",\"\",\"\")\",0/1\n"
            ),
        ),
    ];
    for (kind, content_type, body) in imports {
        let path = format!("/api/v1/imports/{kind}?issuer_of_patient_id=CNRY-ISSUER");
        post(&app, &token, &path, content_type, body).await.assert_status(StatusCode::CREATED);
    }
    let registry: Vec<String> =
        sqlx::query_scalar("select pseudonym from subject order by birth_year").fetch_all(&app.db).await.unwrap();
    assert_eq!(registry.len(), 3);
    (app, registry)
}

async fn post(app: &TestApp, token: &str, path: &str, content_type: &str, body: impl Into<Body>) -> TestResponse {
    let bearer = format!("Bearer {token}");
    let request = Request::post(path).header(header::AUTHORIZATION, bearer).header(header::CONTENT_TYPE, content_type);
    app.call(request.body(body.into()).unwrap()).await
}

fn scope(fields: &[&str], categories: &[&str], modalities: &[&str]) -> Scope {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    Scope {
        cohorts: vec!["default".into()],
        fields: strings(fields),
        categories: strings(categories),
        modalities: strings(modalities),
        annotation_kinds: vec![],
        imaging: false,
    }
}

/// The release tables of `released` (registry pseudonyms), by path.
async fn build(
    app: &TestApp,
    scope: &Scope,
    conditions: &Conditions,
    released: &[String],
) -> BTreeMap<String, TableFile> {
    let dictionary = custodian::dictionary::db::dictionary(&app.db).await.unwrap();
    let coverage = Coverage { scope, conditions, dictionary: &dictionary };
    let project: Vec<String> = released.iter().map(|r| project_subject(&PROJECT_KEY, r)).collect();
    let subjects: Vec<Subject<'_>> =
        released.iter().zip(&project).map(|(registry, project)| Subject { registry, project }).collect();
    let mut conn = app.db.acquire().await.unwrap();
    let files = tables::build(&mut conn, &coverage, &subjects).await.unwrap();
    files.into_iter().map(|f| (f.path.clone(), f)).collect()
}

fn text(files: &BTreeMap<String, TableFile>, path: &str) -> String {
    String::from_utf8(files[path].bytes.to_vec()).unwrap()
}

/// The column of a CSV table, by header name.
fn csv_column(files: &BTreeMap<String, TableFile>, path: &str, name: &str) -> Vec<String> {
    let mut reader = csv::Reader::from_reader(files[path].bytes.as_ref());
    let at = reader.headers().unwrap().iter().position(|h| h == name).unwrap();
    reader.records().map(|r| r.unwrap()[at].to_owned()).collect()
}

fn header(files: &BTreeMap<String, TableFile>, path: &str) -> String {
    text(files, path).split("\r\n").next().unwrap().to_owned()
}

#[tokio::test]
async fn release_tables_carry_exactly_the_granted_fields_of_the_released_subjects_in_project_pseudonyms() {
    let (app, registry) = registry().await;
    let released = &registry[..2];
    let files = build(&app, &scope(&["sex", "glucose"], &[], &[]), &Conditions::default(), released).await;

    let paths: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "tables/dictionary.csv",
            "tables/dictionary.json",
            "tables/observations.csv",
            "tables/observations.parquet",
            "tables/subjects.csv",
            "tables/subjects.parquet"
        ],
        "no diagnoses or variants table: neither is granted"
    );
    assert_eq!(files["tables/subjects.parquet"].media_type, "application/vnd.apache.parquet");
    assert_eq!(files["tables/subjects.csv"].media_type, "text/csv");
    assert_eq!(header(&files, "tables/subjects.csv"), "subject,sex", "no birth_year column, not even empty");

    let project: Vec<String> = registry.iter().map(|r| project_subject(&PROJECT_KEY, r)).collect();
    let mut expected = project[..2].to_vec();
    expected.sort();
    assert_eq!(csv_column(&files, "tables/subjects.csv", "subject"), expected);
    assert_eq!(csv_column(&files, "tables/observations.csv", "field"), ["glucose", "glucose"]);
    let mut subjects = csv_column(&files, "tables/observations.csv", "subject");
    subjects.sort();
    assert_eq!(subjects, expected);

    let dictionary: Value = serde_json::from_slice(&files["tables/dictionary.json"].bytes).unwrap();
    let ids: Vec<&str> = dictionary["fields"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sex", "glucose"]);
    assert_eq!(dictionary["fields"][1]["unit"], "mmol/L");
    assert_eq!(dictionary["fields"][1]["code"], "2345-7");

    for file in files.values() {
        let bytes = String::from_utf8_lossy(&file.bytes);
        for pseudonym in &registry {
            assert!(!bytes.contains(pseudonym.as_str()), "{} holds a registry pseudonym", file.path);
        }
        assert!(!bytes.contains(&project[2]), "{} holds a subject not released", file.path);
        for outside in ["hba1c", "prot_il6", "weight", "smoking_status", "E11.9", "APOE", "1950", "age_at_study"] {
            assert!(!bytes.contains(outside), "{} holds `{outside}`, which is not granted", file.path);
        }
    }
}

#[tokio::test]
async fn what_was_imported_for_another_cohort_stays_out_of_a_release_of_this_one() {
    let (app, registry) = registry().await;
    // The same three patients are in a second cohort of the site, with data of its own.
    let admin = app.token("alice", &[Role::Admin]);
    let cohort = json!({"slug": "cardiac", "title": "Cardiac", "tier": "registered", "design": "retrospective", "source": "registry"});
    app.post_json("/api/v1/cohorts", Some(&admin), &cohort).await.assert_status(StatusCode::CREATED);
    let token = app.token("ulrich", &[Role::Uploader]);
    let p1: String = Instance::ct(1, 1, 1, 1).patient_id;
    let imports = [
        ("observations", "text/csv", format!("patient_id,code,value,unit,time\n{p1},glucose,9.75,mmol/L,2022-03-04\n")),
        (
            "diagnoses",
            "application/json",
            json!([{"patient_id": p1, "system": "ICD-10", "code": "I25.10"}]).to_string(),
        ),
        ("variants", "text/csv", format!("patient_id,variant,gene,genotype\n{p1},7-117559590-G-A,CFTR,1\n")),
    ];
    for (kind, content_type, body) in imports {
        let path = format!("/api/v1/imports/{kind}?issuer_of_patient_id=CNRY-ISSUER&cohort=cardiac");
        post(&app, &token, &path, content_type, body).await.assert_status(StatusCode::CREATED);
    }
    let granted = scope(&["glucose", "diagnosis", "genotype"], &[], &[]);

    let files = build(&app, &granted, &Conditions::default(), &registry).await;
    let all: String = files.values().map(|f| String::from_utf8_lossy(&f.bytes).into_owned()).collect();
    for other in ["9.75", "I25.10", "CFTR", "117559590"] {
        assert!(!all.contains(other), "the default cohort's release holds the cardiac cohort's `{other}`");
    }
    assert!(all.contains("E11.9") && all.contains("APOE") && all.contains("5.5"), "its own data is there");

    // A grant on both cohorts releases both.
    let both = Scope { cohorts: vec!["default".into(), "cardiac".into()], ..granted };
    let files = build(&app, &both, &Conditions::default(), &registry).await;
    let all: String = files.values().map(|f| String::from_utf8_lossy(&f.bytes).into_owned()).collect();
    for other in ["9.75", "I25.10", "CFTR"] {
        assert!(all.contains(other), "a grant on both cohorts releases `{other}`");
    }
}

#[tokio::test]
async fn the_committees_allowed_fields_narrow_the_tables_and_withdrawn_subjects_are_left_out() {
    let (app, registry) = registry().await;
    sqlx::query("update subject set withdrawn_at = now() where pseudonym = $1")
        .bind(&registry[2])
        .execute(&app.db)
        .await
        .unwrap();
    let scope = scope(&["diagnosis", "genotype"], &["demographics", "laboratory"], &[]);
    let conditions = Conditions {
        allowed_fields: Some(vec!["birth_year".into(), "hba1c".into(), "diagnosis".into()]),
        ..Conditions::default()
    };
    let files = build(&app, &scope, &conditions, &registry).await;

    assert!(!files.contains_key("tables/variants.csv") && !files.contains_key("tables/variants.parquet"));
    assert_eq!(header(&files, "tables/subjects.csv"), "subject,birth_year");
    assert_eq!(csv_column(&files, "tables/subjects.csv", "birth_year").len(), 2, "the withdrawn subject is left out");
    assert_eq!(csv_column(&files, "tables/observations.csv", "field"), ["hba1c"], "glucose is not allowed");
    assert_eq!(csv_column(&files, "tables/observations.csv", "unit"), ["%"]);
    assert_eq!(header(&files, "tables/diagnoses.csv"), "subject,system,code,diagnosed_on");
    let mut codes = csv_column(&files, "tables/diagnoses.csv", "code");
    codes.sort();
    assert_eq!(codes, ["44054006", "E11.9"]);
    let dictionary: Value = serde_json::from_slice(&files["tables/dictionary.json"].bytes).unwrap();
    let ids: Vec<&str> = dictionary["fields"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["birth_year", "diagnosis", "hba1c"]);
    assert_eq!(csv_column(&files, "tables/dictionary.csv", "id"), ids);
}

#[tokio::test]
async fn age_at_study_comes_from_studies_of_the_granted_modalities_only() {
    let (app, registry) = registry().await;
    let ages = |files: &BTreeMap<String, TableFile>| {
        csv_column(files, "tables/observations.csv", "field").iter().filter(|f| *f == "age_at_study").count()
    };
    let ct = build(&app, &scope(&["age_at_study"], &[], &["CT"]), &Conditions::default(), &registry).await;
    assert_eq!(ages(&ct), 1);
    assert_eq!(csv_column(&ct, "tables/observations.csv", "unit"), ["a"]);
    let mr = build(&app, &scope(&["age_at_study"], &[], &["MR"]), &Conditions::default(), &registry).await;
    assert_eq!(ages(&mr), 0, "the CT study is outside an MR grant");
}

#[tokio::test]
async fn csv_defuses_formulas_and_pyarrow_reads_every_parquet_file_to_the_csv_values() {
    let (app, registry) = registry().await;
    let scope = scope(
        &["diagnosis", "genotype", "age_at_study"],
        &["demographics", "laboratory", "proteomics", "lifestyle", "anthropometry"],
        &[],
    );
    let files = build(&app, &scope, &Conditions::default(), &registry).await;

    let variants = text(&files, "tables/variants.csv");
    assert!(variants.contains(r#","'=HYPERLINK(""h"","","")","#), "the formula is quoted and defused: {variants}");
    assert!(text(&files, "tables/observations.csv").contains(",-1.25,"), "a negative number stays a number");

    let dir = tempfile::tempdir().unwrap();
    for file in files.values() {
        let path = dir.path().join(file.path.strip_prefix("tables/").unwrap());
        std::fs::write(path, &file.bytes).unwrap();
    }
    let output = Command::new(python::tools().join("python")).args(["-c", COMPARE]).arg(dir.path()).output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    let checked: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(
        checked,
        json!({"subjects": 3, "observations": 10, "diagnoses": 3, "variants": 3}),
        "rows compared per table"
    );
}

/// Reads each Parquet file with pyarrow and its CSV with Python's `csv`, and
/// checks that they hold the same values with the expected types; prints the
/// rows compared per table.
const COMPARE: &str = r#"
import csv, datetime, json, os, sys
import pyarrow as pa, pyarrow.parquet as pq
d = sys.argv[1]
types = {"subject": pa.string(), "birth_year": pa.int64(), "value": pa.float64(),
         "observed_at": pa.timestamp("us"), "diagnosed_on": pa.date32(), "pos": pa.int64(),
         "alt_count": pa.int64(), "gene": pa.string()}
def text(v):
    if v is None: return ""
    if isinstance(v, datetime.datetime): return v.isoformat()
    if isinstance(v, datetime.date): return v.isoformat()
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"): return "'" + v
    return str(v)
out = {}
for name in ("subjects", "observations", "diagnoses", "variants"):
    table = pq.read_table(os.path.join(d, name + ".parquet"))
    with open(os.path.join(d, name + ".csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert table.column_names == rows[0], (name, table.column_names, rows[0])
    for column, t in types.items():
        if column in table.column_names:
            assert table.schema.field(column).type == t, (name, column, table.schema.field(column).type)
    parquet = table.to_pylist()
    assert len(parquet) == len(rows) - 1, (name, len(parquet), len(rows))
    for row, cells in zip(parquet, rows[1:]):
        for v, cell in zip(row.values(), cells):
            same = float(cell) == v if isinstance(v, float) else text(v) == cell
            assert same, (name, row, cells)
    out[name] = len(parquet)
print(json.dumps(out))
"#;
