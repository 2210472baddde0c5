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
