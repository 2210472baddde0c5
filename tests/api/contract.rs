//! The contract, checked by tools nobody here wrote: the OpenAPI document is
//! valid by an independent validator, and every route requiring a role says
//! so before it reads a body.

use std::process::Command;

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
