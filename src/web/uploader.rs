//! The uploader's pages: upload sessions with drag-and-drop, commit or
//! abort, and table imports with their problems.

use axum::Router;

use crate::app::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
