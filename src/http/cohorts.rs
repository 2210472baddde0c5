//! Cohorts and sites: listing for every signed-in user, creation for admins
//! (and organizers, for open cohorts).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AppJson, AppPath};
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::discovery::protect;
use crate::error::{ApiError, ErrorBody, Result, ResultExt};
use crate::openapi::tags;
use crate::registry::db::{self, NewCohort};
use crate::registry::{Cohort, Design, Site, Source, Tier, valid_site_code, valid_slug};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_cohorts, create_cohort))
        .routes(routes!(find_cohort))
        .routes(routes!(list_sites, create_site))
}

/// All cohorts.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortListResponse {
    pub cohorts: Vec<Cohort>,
}

/// A new cohort.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCohortRequest {
    /// Lowercase letters, digits and dashes; 1–63 characters; unique.
    #[schema(max_length = 64)]
    pub slug: String,
    #[schema(max_length = 200)]
    pub title: String,
    #[serde(default)]
    #[schema(max_length = 10_000)]
    pub description: String,
    pub tier: Tier,
    pub design: Design,
    pub source: Source,
    #[schema(max_length = 200)]
    pub license: Option<String>,
    #[schema(max_length = 2000)]
    pub citation: Option<String>,
    /// Small-cell threshold for the cohort's own subjects in protected
    /// discovery counts: 5 to 50, default 10.
    #[schema(minimum = 5, maximum = 50)]
    pub suppression_threshold: Option<i32>,
}

/// All sites.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteListResponse {
    pub sites: Vec<Site>,
}

/// A new site.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSiteRequest {
    /// Lowercase letters, digits, `-` and `_`; 1–63 characters; unique.
    #[schema(max_length = 64)]
    pub code: String,
    #[schema(max_length = 200)]
    pub name: String,
    /// ISO 3166-1 alpha-2 country code, e.g. `DE`.
    #[schema(max_length = 64)]
    pub country: Option<String>,
}

/// List cohorts.
#[utoipa::path(
    get,
    path = "/cohorts",
    tag = tags::REGISTRY,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every cohort", body = CohortListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_cohorts(State(state): State<AppState>, _principal: Principal) -> Result<AppJson<CohortListResponse>> {
    Ok(AppJson(CohortListResponse { cohorts: db::list_cohorts(&state.db).await? }))
}

/// Get one cohort.
#[utoipa::path(
    get,
    path = "/cohorts/{slug}",
    tag = tags::REGISTRY,
    security(("bearer" = [])),
    params(("slug" = String, Path, description = "Cohort slug")),
    responses(
        (status = 200, description = "The cohort", body = Cohort),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_cohort(
    State(state): State<AppState>,
    _principal: Principal,
    AppPath(slug): AppPath<String>,
) -> Result<AppJson<Cohort>> {
    let cohort = db::get_cohort_by_slug(&state.db, &slug).await?.ok_or(ApiError::NotFound("cohort"))?;
    Ok(AppJson(cohort))
}

/// Create a cohort (admins; organizers for `open` cohorts).
#[utoipa::path(
    post,
    path = "/cohorts",
    tag = tags::REGISTRY,
    security(("bearer" = ["admin"]), ("bearer" = ["organizer"])),
    request_body = CreateCohortRequest,
    responses(
        (status = 201, description = "The new cohort", body = Cohort),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn create_cohort(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<CreateCohortRequest>,
) -> Result<(StatusCode, AppJson<Cohort>)> {
    Ok((StatusCode::CREATED, AppJson(register_cohort(&state, &principal, &request).await?)))
}

/// Creates a cohort in a transaction of its own: the REST API and the admin
/// page both come here.
pub async fn register_cohort(state: &AppState, principal: &Principal, request: &CreateCohortRequest) -> Result<Cohort> {
    let mut tx = state.db.begin().await?;
    let cohort = create(&mut tx, principal, request).await?;
    tx.commit().await?;
    Ok(cohort)
}

/// Creates a cohort (admins; organizers only of tier `open`), audited, in `tx`.
pub async fn create(
    tx: &mut sqlx::PgConnection,
    principal: &Principal,
    request: &CreateCohortRequest,
) -> Result<Cohort> {
    principal.require_any(&[Role::Admin, Role::Organizer])?;
    if !principal.has_role(Role::Admin) && request.tier != Tier::Open {
        return Err(ApiError::Forbidden("organizers may only create open cohorts".into()));
    }
    if !valid_slug(&request.slug) {
        return Err(ApiError::BadRequest(
            "`slug` must be 1–63 lowercase letters, digits or dashes, starting with a letter or digit".into(),
        ));
    }
    let title = request.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::BadRequest("`title` must be 1 to 200 characters".into()));
    }
    let threshold = request.suppression_threshold.unwrap_or(protect::DEFAULT_THRESHOLD);
    if !(protect::MIN_THRESHOLD..=protect::MAX_THRESHOLD).contains(&threshold) {
        return Err(ApiError::BadRequest(format!(
            "`suppression_threshold` must be between {} and {}: it applies to the cohort's own subjects in every \
             protected count",
            protect::MIN_THRESHOLD,
            protect::MAX_THRESHOLD
        )));
    }
    let new = NewCohort {
        slug: &request.slug,
        title,
        description: request.description.trim(),
        tier: request.tier,
        design: request.design,
        source: request.source,
        license: request.license.as_deref(),
        citation: request.citation.as_deref(),
        suppression_threshold: threshold,
    };
    let cohort = db::insert_cohort(&mut *tx, &new).await.on_constraint("cohort_slug_key", || {
        ApiError::Conflict(format!("a cohort with slug `{}` exists", request.slug))
    })?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "cohort.create").target(format!("cohort:{}", cohort.slug)).details(json!({
            "tier": cohort.tier,
            "source": cohort.source,
            "suppression_threshold": cohort.suppression_threshold,
        })),
    )
    .await?;
    Ok(cohort)
}

/// List sites.
#[utoipa::path(
    get,
    path = "/sites",
    tag = tags::REGISTRY,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every site", body = SiteListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_sites(State(state): State<AppState>, _principal: Principal) -> Result<AppJson<SiteListResponse>> {
    Ok(AppJson(SiteListResponse { sites: db::list_sites(&state.db).await? }))
}

/// Register a site (admins).
#[utoipa::path(
    post,
    path = "/sites",
    tag = tags::REGISTRY,
    security(("bearer" = ["admin"])),
    request_body = CreateSiteRequest,
    responses(
        (status = 201, description = "The new site", body = Site),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn create_site(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<CreateSiteRequest>,
) -> Result<(StatusCode, AppJson<Site>)> {
    Ok((StatusCode::CREATED, AppJson(register_site(&state, &principal, &request).await?)))
}

/// Registers a site (admins), audited: the REST API and the admin page both come here.
pub async fn register_site(state: &AppState, principal: &Principal, request: &CreateSiteRequest) -> Result<Site> {
    principal.require_any(&[Role::Admin])?;
    if !valid_site_code(&request.code) {
        return Err(ApiError::BadRequest("`code` must be 1–63 lowercase letters, digits, `-` or `_`".into()));
    }
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::BadRequest("`name` must be 1 to 200 characters".into()));
    }
    if let Some(country) = &request.country
        && !(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(ApiError::BadRequest("`country` must be an ISO 3166-1 alpha-2 code such as `DE`".into()));
    }
    let mut tx = state.db.begin().await?;
    let site = db::insert_site(&mut tx, &request.code, name, request.country.as_deref())
        .await
        .on_constraint("site_code_key", || ApiError::Conflict(format!("a site with code `{}` exists", request.code)))?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "site.create")
            .target(format!("site:{}", site.code))
            .details(json!({ "country": site.country })),
    )
    .await?;
    tx.commit().await?;
    Ok(site)
}
