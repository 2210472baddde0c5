//! The researcher's pages: discovery, projects, applications, grants,
//! releases, withdrawal notices, publications, notifications and API tokens.

use axum::Router;

use crate::app::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
