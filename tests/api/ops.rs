//! Operations endpoints: health, readiness, metrics, request ids.

use axum::http::StatusCode;
use custodian::auth::Role;

use crate::helpers::TestApp;

#[tokio::test]
async fn healthz_and_readyz_answer_without_credentials() {
    let app = TestApp::new().await;
    assert_eq!(app.get("/healthz", None).await.assert_status(StatusCode::OK).json()["status"], "ok");
    assert_eq!(app.get("/readyz", None).await.assert_status(StatusCode::OK).json()["status"], "ready");
}

#[tokio::test]
async fn readyz_fails_when_the_object_store_is_gone() {
    let app = TestApp::new().await;
    let root = app.state.config.objects_dir();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    app.get("/readyz", None).await.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status_and_report_the_pool() {
    let app = TestApp::new().await;
    let token = app.token("rita", &[Role::Researcher]);
    app.get("/api/v1/cohorts/default", Some(&token)).await.assert_status(StatusCode::OK);
    app.get("/api/v1/cohorts/missing", Some(&token)).await.assert_status(StatusCode::NOT_FOUND);
    app.get("/api/v1/cohorts", None).await.assert_status(StatusCode::UNAUTHORIZED);
    let text = app.get("/metrics", None).await.assert_status(StatusCode::OK).text();
    assert!(
        text.contains(r#"custodian_http_requests_total{method="GET",route="/api/v1/cohorts/{slug}",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"custodian_http_requests_total{method="GET",route="/api/v1/cohorts/{slug}",status="404"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"route="/api/v1/cohorts",status="401""#), "{text}");
    assert!(!text.contains("missing"), "raw paths never become labels");
    assert!(text.contains("custodian_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("custodian_db_pool_max_connections 20"), "{text}");
}

#[tokio::test]
async fn invented_methods_and_unknown_paths_share_one_label_each_so_metrics_stay_small() {
    let app = TestApp::new().await;
    for i in 0..40 {
        let request = axum::http::Request::builder()
            .method(format!("BREW{i}").as_str())
            .uri(format!("/api/v1/no-such-thing-{i}"))
            .body(axum::body::Body::empty())
            .unwrap();
        app.call(request).await;
        let request = axum::http::Request::builder()
            .method(format!("STEEP{i}").as_str())
            .uri("/api/v1/cohorts")
            .body(axum::body::Body::empty())
            .unwrap();
        app.call(request).await;
    }
    let text = app.get("/metrics", None).await.assert_status(StatusCode::OK).text();
    assert!(!text.contains("BREW") && !text.contains("STEEP"), "{text}");
    assert!(!text.contains("no-such-thing"), "{text}");
    let series = text.lines().filter(|l| l.starts_with("custodian_http_requests_total{")).count();
    assert!(series <= 4, "eighty invented requests make at most a few series: {text}");
    assert!(text.contains(r#"method="other",route="unmatched""#), "{text}");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_kept() {
    let app = TestApp::new().await;
    let generated = app.get("/healthz", None).await;
    assert_eq!(generated.headers["x-request-id"].to_str().unwrap().len(), 36);
    let request = axum::http::Request::get("/api/v1/me")
        .header("x-request-id", "trace-me-123")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.call(request).await;
    assert_eq!(response.headers["x-request-id"], "trace-me-123");
}
