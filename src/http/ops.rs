//! Operations endpoints for load balancers, orchestrators and Prometheus.
//! Not part of the API contract, and open without credentials.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

/// The process is up.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The database and the object store answer.
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    sqlx::query_scalar!("select 1 as \"one!\"").fetch_one(&state.db).await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: database unreachable");
        ApiError::Unavailable("the database is unreachable")
    })?;
    crate::storage::check(state.store.as_ref()).await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: object store unreachable");
        ApiError::Unavailable("the object store is unreachable")
    })?;
    Ok(Json(json!({ "status": "ready" })))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(&state.db, &state.discovery),
    )
}
