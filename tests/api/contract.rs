//! The contract, checked by tools nobody here wrote: the OpenAPI document is
//! valid by an independent validator, and every route requiring a role says
//! so before it reads a body.

use std::process::Command;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use custodian::auth::Role;
use custodian::http::authorize::{Access, AccessTable};
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::python;

/// Runs `openapi-spec-validator` on `document`; its verdict and report.
fn validate(document: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, document).unwrap();
    let output = Command::new(python::tools().join("openapi-spec-validator"))
        .args(["--validation-errors", "all"])
        .arg(&path)
        .output()
        .expect("running openapi-spec-validator");
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), report)
}

#[test]
fn the_document_is_valid_openapi_3_1_by_an_independent_validator() {
    let document = custodian::openapi::to_json();
    let (valid, report) = validate(&document);
    assert!(valid, "openapi-spec-validator rejects the document:\n{report}");

    // The validator does look: the same document with an operation whose
    // response is not a Response Object is refused.
    let mut broken: serde_json::Value = serde_json::from_str(&document).unwrap();
    broken["paths"]["/api/v1/me"]["get"]["responses"]["200"] = serde_json::json!("fine");
    let (valid, _) = validate(&broken.to_string());
    assert!(!valid, "openapi-spec-validator accepts a response that is a string");
}

/// One operation of the document, asked with a request that is wrong
/// everywhere it can be: path parameters that are no id, query parameters
/// that are no number, a body that is no JSON.
struct Probe {
    name: String,
    access: Access,
    method: Method,
    uri: String,
}

impl Probe {
    fn all(document: &Value) -> Vec<Probe> {
        let mut out = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let uri = path
                    .split('/')
                    .map(|s| if s.starts_with('{') { "not%20an%20id" } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                let query: Vec<String> = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .map(|p| format!("{}=not-a-number-%FF", p["name"].as_str().unwrap()))
                    .collect();
                out.push(Probe {
                    name: format!("{} {path}", method.to_uppercase()),
                    access: Access::of_operation(operation),
                    method: Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap(),
                    uri: if query.is_empty() { uri } else { format!("{uri}?{}", query.join("&")) },
                });
            }
        }
        out
    }

    fn request(&self, token: Option<&str>) -> Request<Body> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(&self.uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::from("{\"title\": [1, ")).unwrap()
    }
}

#[tokio::test]
async fn a_caller_without_a_token_or_without_the_role_learns_nothing_about_the_body() {
    let app = TestApp::new().await;
    let document: Value = serde_json::from_str(&custodian::openapi::to_json()).unwrap();
    let mut wrong = Vec::new();
    let (mut signed_in, mut with_roles) = (0, 0);
    for probe in Probe::all(&document) {
        if probe.access == Access::Open {
            continue;
        }
        signed_in += 1;
        let response = app.call(probe.request(None)).await;
        if response.status != StatusCode::UNAUTHORIZED {
            wrong.push(format!("{} without a token: {} {}", probe.name, response.status, response.text()));
        }
        if let Access::AnyOf(roles) = &probe.access {
            with_roles += 1;
            // The strongest caller without the role: every other role.
            let others: Vec<Role> = Role::ALL.into_iter().filter(|r| !roles.contains(r)).collect();
            let response = app.call(probe.request(Some(&app.token("outsider", &others)))).await;
            if response.status != StatusCode::FORBIDDEN {
                wrong.push(format!("{} as {others:?}: {} {}", probe.name, response.status, response.text()));
            }
        }
    }
    assert!(wrong.is_empty(), "operations that read the request before authorizing it:\n{}", wrong.join("\n"));
    assert!(signed_in > 80 && with_roles > 30, "{signed_in} operations need a credential, {with_roles} a role");

    // The rules the server applies are the document's, role names included.
    let roles_named: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .flat_map(|op| op["security"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["bearer"].as_array().cloned().unwrap_or_default())
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let unknown: Vec<&String> = roles_named.iter().filter(|r| Role::parse(r).is_none()).collect();
    assert!(unknown.is_empty(), "the document names roles the server does not know: {unknown:?}");
    let table = AccessTable::from_document(&document);
    assert_eq!(table.get(&Method::POST, "/api/v1/sites"), Some(&Access::AnyOf(vec![Role::Admin])));
}

/// Which of `instances` the document's schema `name` accepts, by the
/// `jsonschema` package (Draft 2020-12, the dialect of OpenAPI 3.1).
fn schema_accepts(document: &Value, name: &str, instances: &[Value]) -> Vec<bool> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let root = json!({"$ref": format!("#/components/schemas/{name}"), "components": document["components"]});
    std::fs::write(&input, json!({"schema": root, "instances": instances}).to_string()).unwrap();
    let script = "import json, sys, jsonschema\n\
                  d = json.load(open(sys.argv[1]))\n\
                  v = jsonschema.Draft202012Validator(d['schema'])\n\
                  print(json.dumps([v.is_valid(i) for i in d['instances']]))\n";
    let output = Command::new(python::tools().join("python")).args(["-c", script]).arg(&input).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Criteria the grammar allows, one of each kind of condition and operator.
fn valid_criteria() -> Vec<Value> {
    let mri_after_diagnosis = json!({"field": "modality", "in": ["MR"],
        "within_days_after": {"event": {"field": "diagnosis", "prefix": "C34"}, "min": 0, "max": 90}});
    vec![
        json!({"field": "cohort", "in": ["default"]}),
        json!({"field": "site", "in": ["local"]}),
        json!({"field": "sex", "in": ["F", "O"]}),
        json!({"field": "body_part", "in": ["CHEST"]}),
        json!({"field": "manufacturer", "in": ["Acme"]}),
        json!({"field": "field_strength", "min": 1.5}),
        json!({"field": "age_at_study", "min": 40, "max": null, "unit": "a"}),
        json!({"field": "diagnosis", "system": "icd-10", "in": ["E11.9"]}),
        json!({"field": "diagnosis", "system": "SNOMED CT", "prefix": "7"}),
        json!({"field": "genotype", "variant": "rs429358", "genotype": "carrier"}),
        json!({"field": "genotype", "variant": "19-44908684-T-C", "genotype": "hom_ref"}),
        json!({"field": "annotation", "level": "low", "kind": ["box"], "label": ["RID1"], "role": ["radiologist"]}),
        json!({"field": "annotation"}),
        json!({"field": "glucose", "max": 126, "unit": "mg/dL"}),
        json!({"field": "smoking_status", "in": ["266919005"]}),
        mri_after_diagnosis.clone(),
        json!({"field": "model", "in": ["X"], "within_days_after": {"event": {"field": "glucose", "min": 7}, "min": -30, "max": 30}}),
        json!({"and": [{"or": [{"field": "sex", "in": ["M"]}, {"not": {"field": "site", "in": ["local"]}}]}, mri_after_diagnosis]}),
    ]
}

/// Criteria outside the grammar, each wrong in one way.
fn invalid_criteria() -> Vec<Value> {
    let long = "x".repeat(65);
    vec![
        json!([]),
        json!({}),
        json!({"and": []}),
        json!({"or": {"field": "sex", "in": ["F"]}}),
        json!({"not": [{"field": "sex", "in": ["F"]}]}),
        json!({"and": [{"field": "sex", "in": ["F"]}], "or": [{"field": "sex", "in": ["M"]}]}),
        json!({"field": "sex", "in": ["female"]}),
        json!({"field": "sex", "in": []}),
        json!({"field": "sex", "in": ["F"], "unit": "a"}),
        json!({"field": "cohort", "in": [long]}),
        json!({"field": "site", "in": (0..101).map(|i| format!("s{i}")).collect::<Vec<_>>()}),
        json!({"field": "modality", "in": "MR"}),
        json!({"field": "modality", "in": ["MR"], "colour": "red"}),
        json!({"field": "cohort", "in": ["default"], "within_days_after": {"event": {"field": "diagnosis", "prefix": "C34"}, "min": 0, "max": 9}}),
        json!({"field": "modality", "in": ["MR"], "within_days_after": {"event": {"field": "diagnosis", "prefix": "C34"}, "min": 0}}),
        json!({"field": "modality", "in": ["MR"], "within_days_after": {"event": {"field": "diagnosis", "prefix": "C34"}, "min": 0, "max": 9, "unit": "d"}}),
        json!({"field": "field_strength"}),
        json!({"field": "field_strength", "min": null, "max": null}),
        json!({"field": "field_strength", "min": "3"}),
        json!({"field": "age_at_study", "min": 3, "in": ["3"]}),
        json!({"field": "diagnosis", "system": "ICD-9", "prefix": "E11"}),
        json!({"field": "diagnosis", "system": "ICD-10"}),
        json!({"field": "diagnosis", "in": []}),
        json!({"field": "diagnosis", "prefix": "E11", "genotype": "het"}),
        json!({"field": "genotype", "variant": "rs429358"}),
        json!({"field": "genotype", "variant": "rs429358", "genotype": "double"}),
        json!({"field": "annotation", "level": "medium"}),
        json!({"field": "annotation", "kind": []}),
        json!({"field": "annotation", "role": ["oracle"]}),
        json!({"field": "annotation", "label": [long]}),
        json!({"field": "annotation", "in": ["box"]}),
        json!({"field": "glucose"}),
        json!({"field": "glucose", "min": 1, "unit": long}),
    ]
}

#[tokio::test]
async fn the_criteria_grammar_of_the_document_is_the_one_the_server_reads() {
    let app = TestApp::new().await;
    let document: Value = serde_json::from_str(&custodian::openapi::to_json()).unwrap();
    for (name, schema) in custodian::discovery::criteria::json_schemas() {
        assert_eq!(document["components"]["schemas"][name], schema, "{name} is in the document as written");
    }
    assert_eq!(
        document["components"]["schemas"]["CountRequest"]["properties"]["criteria"]["oneOf"][0]["$ref"],
        "#/components/schemas/Criteria"
    );
    let steward = app.token("sam", &[Role::Steward]);

    let valid = valid_criteria();
    let verdicts = schema_accepts(&document, "Criteria", &valid);
    let mut wrong = Vec::new();
    for (criteria, accepted) in valid.iter().zip(verdicts) {
        if !accepted {
            wrong.push(format!("the schema refuses {criteria}"));
        }
        let response = app.post_json("/api/v1/discovery/count", Some(&steward), &json!({ "criteria": criteria })).await;
        if response.status != StatusCode::OK {
            wrong.push(format!("the server answers {} to {criteria}: {}", response.status, response.text()));
        }
    }
    let invalid = invalid_criteria();
    let verdicts = schema_accepts(&document, "Criteria", &invalid);
    for (criteria, accepted) in invalid.iter().zip(verdicts) {
        if accepted {
            wrong.push(format!("the schema accepts {criteria}"));
        }
        let response = app.post_json("/api/v1/discovery/count", Some(&steward), &json!({ "criteria": criteria })).await;
        if response.status != StatusCode::BAD_REQUEST {
            wrong.push(format!("the server answers {} to {criteria}", response.status));
        }
    }
    assert!(wrong.is_empty(), "the grammar and the server disagree:\n{}", wrong.join("\n"));
}

/// Every string a request body may carry, by where it is in the document.
fn unbounded_strings(document: &Value) -> Vec<String> {
    fn walk(document: &Value, schema: &Value, at: &str, seen: &mut Vec<String>, out: &mut Vec<String>) {
        if !schema.is_object() {
            return;
        }
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.rsplit('/').next().unwrap().to_owned();
            if !seen.contains(&name) {
                seen.push(name.clone());
                walk(document, &document["components"]["schemas"][&name], &name, seen, out);
            }
            return;
        }
        for key in ["oneOf", "anyOf", "allOf"] {
            for part in schema[key].as_array().into_iter().flatten() {
                walk(document, part, at, seen, out);
            }
        }
        let string =
            schema["type"] == "string" || schema["type"].as_array().is_some_and(|t| t.contains(&json!("string")));
        let bounded = !schema["maxLength"].is_null()
            || !schema["enum"].is_null()
            || !schema["pattern"].is_null()
            || ["uuid", "date", "date-time"].contains(&schema["format"].as_str().unwrap_or_default());
        if string && !bounded && !at.ends_with("[]") && !at.ends_with("{}") {
            out.push(at.to_owned());
        }
        walk(document, &schema["items"], &format!("{at}[]"), seen, out);
        for (key, property) in schema["properties"].as_object().into_iter().flatten() {
            walk(document, property, &format!("{at}.{key}"), seen, out);
        }
    }
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            walk(document, schema, "body", &mut seen, &mut out);
        }
    }
    out
}

#[tokio::test]
async fn every_string_of_a_request_has_a_documented_length_and_the_server_holds_to_it() {
    let document: Value = serde_json::from_str(&custodian::openapi::to_json()).unwrap();
    let unbounded = unbounded_strings(&document);
    assert!(unbounded.is_empty(), "request strings without maxLength: {unbounded:?}");

    let app = TestApp::new().await;
    let researcher = app.token("rita", &[Role::Researcher]);
    let limit =
        document["components"]["schemas"]["CreateProjectRequest"]["properties"]["title"]["maxLength"].as_u64().unwrap();
    let title = "é".repeat(usize::try_from(limit).unwrap());
    // At the limit the title is fine (this researcher has no profile yet: 409).
    app.post_json("/api/v1/projects", Some(&researcher), &json!({"title": title}))
        .await
        .assert_status(StatusCode::CONFLICT);
    let response = app.post_json("/api/v1/projects", Some(&researcher), &json!({"title": format!("{title}x")})).await;
    let message = response.assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    assert!(message.contains("/title") && message.contains(&limit.to_string()), "{message}");

    // Inside a tagged variant, as deep as it is.
    let uploader = app.token("ulrich", &[Role::Uploader]);
    let annotation = json!({
        "target": {"level": "study", "uid": "1".repeat(65)},
        "kind": "label",
        "label": {"system": "local", "code": "x", "meaning": "x"},
        "provenance": {"role": "radiologist", "method": "manual"},
    });
    let message = app
        .post_json("/api/v1/annotations", Some(&uploader), &annotation)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid-body");
    assert!(message.contains("/target/uid"), "{message}");
}
