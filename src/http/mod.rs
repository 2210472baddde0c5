//! The HTTP API: one router per area, nested under `/api/v1`.
//!
//! Every public route is registered through `utoipa_axum::routes!`, so the
//! documented path is the served path. Operations endpoints (`/healthz`,
//! `/readyz`, `/metrics`) are deliberately outside the contract.

pub mod annotations;
pub mod applications;
pub mod audit;
pub mod authorize;
pub mod catalog;
pub mod challenges;
pub mod client_ip;
pub mod cohorts;
pub mod deid;
pub mod dicomweb;
pub mod dicomweb_release;
pub mod discovery;
pub mod drs;
pub mod dua;
pub mod duties;
pub mod extract;
pub mod extracts;
pub mod fields;
pub mod grants;
pub mod imports;
pub mod limits;
pub mod me;
pub mod notification_preferences;
pub mod nul;
pub mod open_cohort_statistics;
pub mod open_cohorts;
pub mod ops;
pub mod presigned;
pub mod projects;
pub mod publications;
pub mod release_keys;
pub mod reviews;
pub mod tokens;
pub mod uploads;
pub mod withdrawals;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::config::Config;

/// The largest body each route reads, in one place. Every route has one:
///
/// | route | body | limit | held in memory |
/// |---|---|---|---|
/// | every JSON body not named below | JSON | `http.body_limit_bytes` | whole |
/// | `POST /api/v1/annotations` | JSON | [`nul::ANNOTATION_JSON_LIMIT`] | whole |
/// | `POST /api/v1/imports/{kind}` | CSV, TSV, VCF, gzip, JSON | `ingest.max_table_bytes`; lines and columns `ingest.max_table_line_bytes` / `ingest.max_table_columns`, checked as the body arrives | whole, once within the line limits |
/// | `POST /api/v1/uploads/{id}/files`, STOW-RS | one DICOM file | `ingest.max_file_bytes` | whole |
/// | the same | zip | `ingest.max_request_bytes` compressed | compressed whole, one inflated entry at a time |
/// | the same | multipart | `ingest.max_request_bytes` streamed, `ingest.max_file_bytes` a part | at most `ingest.parallelism` files |
/// | `POST /api/v1/annotations/masks` | multipart NIfTI | `ingest.max_file_bytes` | whole |
/// | `POST /api/v1/open-cohorts/{slug}/versions/{id}/submissions` | CSV | `ingest.max_table_bytes` | whole |
/// | the same | zip of masks | `ingest.max_request_bytes` | a part of `release.multipart_part_bytes` at a time |
///
/// Routes that stream files switch axum's default limit off and enforce theirs
/// while reading; JSON bodies are read (and checked for NUL) by [`nul::refuse`].
#[derive(Debug, Clone, Copy)]
pub struct JsonLimits {
    default: usize,
    tables: usize,
}

impl JsonLimits {
    pub fn new(config: &Config) -> Self {
        Self { default: config.http.body_limit_bytes, tables: config.ingest.max_table_bytes }
    }

    /// The limit of a JSON body sent to `path`.
    pub fn of(self, path: &str) -> usize {
        if path == "/api/v1/annotations" {
            nul::ANNOTATION_JSON_LIMIT
        } else if path.starts_with("/api/v1/imports/") {
            self.tables
        } else {
            self.default
        }
    }
}

/// All documented routes.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::base()).merge(root_routes()).nest(
        "/api/v1",
        OpenApiRouter::new()
            .merge(me::router())
            .merge(tokens::router())
            .merge(audit::router())
            .merge(cohorts::router())
            .merge(deid::router())
            .merge(uploads::router())
            .merge(imports::router())
            .merge(fields::router())
            .merge(discovery::router())
            .merge(annotations::router())
            .merge(projects::router())
            .merge(applications::router())
            .merge(dua::router())
            .merge(reviews::router())
            .merge(grants::router())
            .merge(duties::router())
            .merge(notification_preferences::router())
            .merge(withdrawals::router())
            .merge(publications::router())
            .merge(extracts::router())
            .merge(open_cohorts::router())
            .merge(challenges::router())
            .merge(open_cohort_statistics::router())
            .merge(presigned::router())
            .merge(catalog::router()),
    )
}

/// A route whose last parameter takes every remaining segment (`{*path}` in
/// `served`), documented with the one `{path}` parameter its `#[utoipa::path]` names.
pub fn catch_all(
    served: &str,
    (schemas, paths, method_router): utoipa_axum::router::UtoipaMethodRouter<AppState>,
) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new().route(served, method_router);
    let openapi = router.get_openapi_mut();
    openapi.paths.paths.extend(paths.paths);
    openapi.components.get_or_insert_with(utoipa::openapi::Components::new).schemas.extend(schemas);
    router
}

/// Routes at the root rather than under `/api/v1`: DICOMweb (STOW-RS in,
/// QIDO-RS and WADO-RS over a release out), the well-known release keys and
/// GA4GH DRS.
fn root_routes() -> OpenApiRouter<AppState> {
    dicomweb::router().merge(dicomweb_release::router()).merge(release_keys::router()).merge(drs::router())
}
