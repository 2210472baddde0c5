//! Publications over REST: a project's members notify what they published
//! from its grants; a cohort under a publication moratorium (DUO MOR) refuses
//! one dated before the moratorium ends; a notice fulfils the project's duty
//! to notify a publication (DUO PUB). Stewards see every project's register.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath};
use crate::access::publications;
pub use crate::access::publications::{NewPublication, Publication};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(project_publications, notify_publication)).routes(routes!(all_publications))
}

/// Notify a publication (accepted members of the project).
#[utoipa::path(
    post,
    path = "/projects/{id}/publications",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    request_body = NewPublication,
    responses(
        (status = 201, description = "Notified; a duty to notify it is fulfilled", body = Publication),
        (status = 403, description = "Not a member, or `publication-moratorium`", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn notify_publication(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<NewPublication>,
) -> Result<(StatusCode, AppJson<Publication>)> {
    let mut tx = state.db.begin().await?;
    let saved = publications::notify(&mut tx, &principal, id, &request).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(saved)))
}

/// A project's publications, newest notice first (members and stewards).
#[utoipa::path(
    get,
    path = "/projects/{id}/publications",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project's publications", body = [Publication]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn project_publications(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Vec<Publication>>> {
    let mut conn = state.db.acquire().await?;
    Ok(AppJson(publications::of_project(&mut conn, &principal, id).await?))
}

/// Every project's publications, newest notice first (stewards and admins).
#[utoipa::path(
    get,
    path = "/publications",
    tag = tags::GRANTS,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    responses(
        (status = 200, description = "The register of publications", body = [Publication]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn all_publications(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<AppJson<Vec<Publication>>> {
    let mut conn = state.db.acquire().await?;
    Ok(AppJson(publications::register(&mut conn, &principal).await?))
}
