//! Prometheus metrics: request counts and latencies by route and status, and
//! the database pool's size, served as text at `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// The metrics of one node.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    pool_size: Gauge<u64, AtomicU64>,
    pool_idle: Gauge<u64, AtomicU64>,
    pool_max: Gauge<u64, AtomicU64>,
    index_units: Gauge<u64, AtomicU64>,
    index_version: Gauge<i64, AtomicI64>,
    index_build: Gauge<f64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("custodian");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let pool_size = Gauge::<u64, AtomicU64>::default();
        let pool_idle = Gauge::<u64, AtomicU64>::default();
        let pool_max = Gauge::<u64, AtomicU64>::default();
        let index_units = Gauge::<u64, AtomicU64>::default();
        let index_version = Gauge::<i64, AtomicI64>::default();
        let index_build = Gauge::<f64, AtomicU64>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer HTTP requests", latency.clone());
        registry.register("db_pool_connections", "Open database connections", pool_size.clone());
        registry.register("db_pool_idle_connections", "Idle database connections", pool_idle.clone());
        registry.register("db_pool_max_connections", "Configured database pool size", pool_max.clone());
        registry.register("discovery_index_units", "Units in the in-memory discovery index", index_units.clone());
        registry.register(
            "discovery_index_version",
            "Change version of the in-memory discovery index",
            index_version.clone(),
        );
        registry.register(
            "discovery_index_build_seconds",
            "Time the latest discovery index took to build",
            index_build.clone(),
        );
        Self { registry, requests, latency, pool_size, pool_idle, pool_max, index_units, index_version, index_build }
    }
}

impl Metrics {
    /// Renders every metric in the Prometheus text format.
    pub fn render(&self, pool: &PgPool, index: &crate::discovery::memory::Index) -> String {
        if let Some(snapshot) = index.latest() {
            self.index_units.set(u64::try_from(snapshot.units()).unwrap_or(u64::MAX));
            self.index_version.set(snapshot.version);
            self.index_build.set(snapshot.build_time.as_secs_f64());
        }
        self.pool_size.set(u64::from(pool.size()));
        self.pool_idle.set(u64::try_from(pool.num_idle()).unwrap_or(u64::MAX));
        self.pool_max.set(u64::from(pool.options().get_max_connections()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = RequestLabels { method: method.to_owned(), route: route.to_owned(), status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }
}

/// The method as a label: one of the nine standard methods, else `other`, so
/// that a client inventing methods cannot grow the label space.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ]
    .iter()
    .zip(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"])
    .find_map(|(known, label)| (known == method).then_some(label))
    .unwrap_or("other")
}

/// Middleware recording every request under its route template (not its raw path,
/// which would explode the label space and could carry identifiers).
pub async fn track(State(metrics): State<std::sync::Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // The route is known only after routing; the request span opened before it.
    tracing::Span::current().record("route", route.as_str());
    let response = next.run(request).await;
    metrics.observe(method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}
