//! The organizer's pages: open cohorts to create and publish, their splits,
//! hidden labels, leaderboards and statistics.

use axum::Router;

use crate::app::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
