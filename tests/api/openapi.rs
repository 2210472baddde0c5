//! The committed OpenAPI document is the contract; it must match the code.

use axum::http::StatusCode;

use crate::helpers::TestApp;

#[test]
fn openapi_json_is_current() {
    let actual = custodian::openapi::to_json();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &actual).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == actual,
        "openapi/openapi.json is stale: regenerate it with `UPDATE_OPENAPI=1 cargo test openapi_json_is_current` and commit it"
    );
}

#[test]
fn every_operation_documents_its_errors_and_security() {
    let doc: serde_json::Value = serde_json::from_str(&custodian::openapi::to_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("4XX") && responses.contains_key("5XX"),
                "{method} {path} documents its errors"
            );
            assert!(op["security"].is_array(), "{method} {path} names its security");
            assert!(op["operationId"].is_string(), "{method} {path}");
        }
    }
}

#[test]
fn path_parameters_are_exactly_the_paths_placeholders_and_the_rest_are_query_parameters() {
    let doc: serde_json::Value = serde_json::from_str(&custodian::openapi::to_json()).unwrap();
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let placeholders: Vec<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: Vec<&str> =
                params.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect();
            for p in params.iter().filter(|p| p["in"] == "path") {
                if !placeholders.contains(&p["name"].as_str().unwrap()) || p["required"] != true {
                    wrong.push(format!("{method} {path}: path parameter {} is not a required placeholder", p["name"]));
                }
            }
            for name in &placeholders {
                if !in_path.contains(name) {
                    wrong.push(format!("{method} {path}: placeholder {name} is not declared"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "the document is not valid OpenAPI:\n{}", wrong.join("\n"));
}

/// Every type that derives `ToSchema` under `src/`, by the name it takes in
/// the document: its own, or the one `#[schema(as = …)]` gives it.
fn schema_names(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            schema_names(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !(line.trim_start().starts_with("#[derive(") && line.contains("ToSchema")) {
                continue;
            }
            let mut alias = None;
            for next in lines.iter().skip(i + 1).take(15) {
                let next = next.trim_start();
                if let Some(rest) = next.strip_prefix("#[schema(as = ") {
                    let name = rest.split(|c: char| !c.is_alphanumeric() && c != '_' && c != ':').next().unwrap();
                    alias = name.rsplit("::").next().map(str::to_owned);
                }
                let declared = ["pub struct ", "pub enum ", "pub(crate) struct ", "pub(crate) enum "]
                    .iter()
                    .find_map(|prefix| next.strip_prefix(prefix));
                if let Some(rest) = declared {
                    let own = rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap().to_owned();
                    let place = format!("{}:{}", path.display(), i + 1);
                    out.push((alias.unwrap_or(own), place));
                    break;
                }
            }
        }
    }
}

#[test]
fn no_two_schemas_share_a_name_so_none_overwrites_another() {
    let mut names = Vec::new();
    schema_names(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut names);
    assert!(names.len() > 100, "found only {} schemas", names.len());
    names.sort();
    let clashes: Vec<String> = names
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| format!("{} at {} and {}", w[0].0, w[0].1, w[1].1))
        .collect();
    assert!(clashes.is_empty(), "schemas with one name, one silently replacing the other: {clashes:?}");
}

#[tokio::test]
async fn spec_and_offline_swagger_ui_are_served() {
    let app = TestApp::new().await;
    let spec = app.get("/openapi.json", None).await.assert_status(StatusCode::OK).json();
    assert_eq!(spec["info"]["title"], "Custodian");
    assert!(spec["paths"]["/api/v1/audit/verify"].is_object());
    let docs = app.get("/docs/", None).await;
    docs.assert_status(StatusCode::OK);
    assert!(docs.text().contains("swagger"), "Swagger UI page");
    let bundle = app.get("/docs/swagger-ui-bundle.js", None).await;
    bundle.assert_status(StatusCode::OK);
    assert!(bundle.body.len() > 100_000, "the UI's assets are vendored into the binary");
}
