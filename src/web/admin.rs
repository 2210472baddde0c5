//! The administrator's pages: sites, cohorts, consent terms, the fee
//! schedule, data use agreement versions and users' roles.

use axum::Router;

use crate::app::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
