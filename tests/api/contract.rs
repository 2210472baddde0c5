//! The contract, checked by tools nobody here wrote: the OpenAPI document is
//! valid by an independent validator, and every route requiring a role says
//! so before it reads a body.

use std::process::Command;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use custodian::auth::Role;
use custodian::http::authorize::{Access, AccessTable};
use serde_json::Value;

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
