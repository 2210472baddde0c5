//! The application: shared state, the router with its middleware, and serving.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::storage::Store;

/// Header carrying the request id, set when the client did not send one.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Everything a handler may need; cheap to clone.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub db: PgPool,
    pub store: Store,
    pub auth: Arc<Authenticator>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub ingest: Arc<crate::ingest::Ingestor>,
    /// The in-memory discovery index.
    pub discovery: Arc<crate::discovery::memory::Index>,
    /// The key signing release manifests, with the keys it publishes.
    pub release_signer: Arc<crate::release::manifest::ReleaseSigner>,
}

/// The complete HTTP service: API, docs, operations endpoints and middleware.
pub fn build_router(state: AppState) -> Router {
    let (api, openapi) = crate::http::api_router().split_for_parts();
    let openapi = crate::openapi::finish(openapi);
    let document = serde_json::to_value(&openapi).expect("the OpenAPI document serialises");
    let access = Arc::new(crate::http::authorize::AccessTable::from_document(&document));
    let body_schemas = Arc::new(crate::http::limits::BodySchemas::from_document(&document));
    let timeout = state.config.http.request_timeout_secs;
    let bulk_timeout = state.config.http.bulk_timeout_secs;
    let body_limit = state.config.http.body_limit_bytes;
    let json_limits = crate::http::JsonLimits::new(&state.config);

    let router = api
        .merge(crate::http::ops::router())
        .merge(crate::web::router(state.clone()))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |req, next| enforce_timeout(timeout, bulk_timeout, req, next)))
        .layer(middleware::from_fn_with_state(body_schemas, crate::http::limits::enforce))
        .layer(middleware::from_fn(move |req, next| crate::http::nul::refuse(json_limits, req, next)))
        // Outside the NUL check, which reads the body: authorization comes before anything is read.
        .layer(middleware::from_fn_with_state((state.clone(), access), crate::http::authorize::authorize))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), crate::metrics::track))
        .with_state(state);

    // Outermost last: ids are assigned before the span opens, panics become 500s inside it.
    router
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()))
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_request(()).on_response(log_response))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

fn request_span(request: &Request) -> Span {
    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let path = request.uri().path();
    // Probes and scrapes would drown real traffic.
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        tracing::debug_span!("request", request_id, method = %request.method(), route = tracing::field::Empty)
    } else {
        tracing::info_span!("request", request_id, method = %request.method(), route = tracing::field::Empty)
    }
}

/// One access-log line per request, inside its span (so with its request id and route).
fn log_response(response: &Response, latency: Duration, span: &Span) {
    if !span.is_disabled() {
        tracing::info!(parent: span, status = response.status().as_u16(), latency_ms = latency.as_secs_f64() * 1000.0, "request finished");
    }
}

/// Bulk transfers (uploads, STOW-RS, table imports, masks) get `bulk` seconds, everything else `seconds`.
async fn enforce_timeout(seconds: u64, bulk: u64, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let is_bulk = request.method() == axum::http::Method::POST
        && (path.starts_with("/api/v1/uploads/")
            || path.starts_with("/api/v1/imports/")
            || path.starts_with("/dicomweb/")
            || path == "/api/v1/annotations/masks");
    let seconds = if is_bulk { bulk } else { seconds };
    match tokio::time::timeout(Duration::from_secs(seconds), next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(seconds).into_response(),
    }
}

async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish (up to `grace`). Handlers see each connection's peer
/// address ([`crate::http::client_ip::ClientIp`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop_rx_for_grace = stop_rx.clone();
    tokio::select! {
        result = server => result,
        () = async move {
            let _ = stop_rx_for_grace.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("in-flight requests did not finish within the shutdown grace period");
            Ok(())
        }
    }
}

/// A future resolving on SIGINT or SIGTERM. The handlers are installed when this
/// is called, not when the future is first polled, so a signal that arrives
/// while the server is still starting is not lost (nor fatal).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutdown requested; draining in-flight requests");
    })
}
