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
pub mod cohorts;
pub mod deid;
pub mod dicomweb;
pub mod discovery;
pub mod dua;
pub mod duties;
pub mod extract;
pub mod fields;
pub mod grants;
pub mod imports;
pub mod limits;
pub mod me;
pub mod nul;
pub mod ops;
pub mod projects;
pub mod publications;
pub mod reviews;
pub mod tokens;
pub mod uploads;
pub mod withdrawals;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// All documented routes.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::base()).merge(dicomweb::router()).nest(
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
            .merge(withdrawals::router())
            .merge(publications::router())
            .merge(catalog::router()),
    )
}
