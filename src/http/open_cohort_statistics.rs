//! An open cohort's download statistics over REST, for its organizers.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AppJson, AppPath};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::openapi::tags;
use crate::opencohort::statistics::{self, DownloadStatistics};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(find_statistics))
}

/// An open cohort's downloads per version and split (organizers, admins).
///
/// For each version, newest first, and each of its parts (`train`,
/// `validation`, `test`, `documents` for the files outside the split folders,
/// `archive` for archives of the whole version): completed downloads,
/// requests, bytes served, distinct registered downloaders and distinct
/// anonymous ones, with the version's totals and its last 30 days. Anonymous
/// downloaders are known only by a keyed hash of their address whose key
/// changes every day, so one visitor on two days counts twice.
#[utoipa::path(
    get,
    path = "/open-cohorts/{slug}/statistics",
    tag = tags::OPEN_COHORTS,
    security(("bearer" = ["organizer"]), ("bearer" = ["admin"])),
    params(("slug" = String, Path, description = "The open cohort's slug")),
    responses(
        (status = 200, description = "The download statistics", body = DownloadStatistics),
        (status = 403, description = "Not an organizer or admin", body = ErrorBody),
        (status = 404, description = "No cohort of tier `open` has this slug", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_statistics(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
) -> Result<AppJson<DownloadStatistics>> {
    let mut tx = state.db.begin().await?;
    let statistics = statistics::of_cohort(&mut tx, &principal, &slug).await?;
    tx.commit().await?;
    Ok(AppJson(statistics))
}
