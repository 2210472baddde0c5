//! The steward's pages: the inbox, applications under review, grants,
//! profiles, withdrawals, quarantine and the audit log.

use axum::Router;

use crate::app::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
