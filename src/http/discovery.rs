//! Discovery over REST: counts and breakdowns for every signed-in user, under
//! protection (exact for stewards and admins, and for project members within their grants).

use std::borrow::Cow;

use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::AppJson;
use crate::access::grants;
use crate::access::scope::Coverage;
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::discovery::sql::Dimension;
use crate::discovery::{self, BreakdownResult, Caller, CountResult, criteria};
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(count)).routes(routes!(breakdown))
}

/// The criteria grammar in the document: the JSON Schemas of
/// [`criteria::json_schemas`], the grammar the server reads.
pub struct Criteria;

fn criteria_schemas() -> impl Iterator<Item = (&'static str, RefOr<Schema>)> {
    criteria::json_schemas()
        .into_iter()
        .map(|(name, schema)| (name, serde_json::from_value(schema).expect("the criteria grammar is a valid schema")))
}

impl utoipa::PartialSchema for Criteria {
    fn schema() -> RefOr<Schema> {
        criteria_schemas().find(|(name, _)| *name == "Criteria").expect("the grammar has a root").1
    }
}

impl ToSchema for Criteria {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Criteria")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.extend(criteria_schemas().filter(|(name, _)| *name != "Criteria").map(|(n, s)| (n.to_owned(), s)));
    }
}

/// A count query.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountRequest {
    /// A tree of `and` / `or` / `not` over conditions such as
    /// `{"field": "modality", "in": ["MR"]}`, `{"field": "hba1c", "min": 6.5, "unit": "%"}`,
    /// `{"field": "diagnosis", "system": "ICD-10", "prefix": "E11"}`,
    /// `{"field": "genotype", "variant": "rs429358", "genotype": "carrier"}`; absent: everything.
    #[schema(value_type = Option<Criteria>)]
    pub criteria: Option<Value>,
    /// Ask as a member of this project: within its active grants (the criteria
    /// name their cohorts, each granted) the counts are exact.
    pub project: Option<Uuid>,
}

/// A breakdown query.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakdownRequest {
    /// As for a count; absent: everything.
    #[schema(value_type = Option<Criteria>)]
    pub criteria: Option<Value>,
    /// One or two dimensions (default `["site"]`).
    #[serde(default = "default_by")]
    pub by: Vec<Dimension>,
    /// As for a count.
    pub project: Option<Uuid>,
}

fn default_by() -> Vec<Dimension> {
    vec![Dimension::Site]
}

/// Who asks: stewards and admins see exact counts, and so does a project
/// member asking within the project's active grants: the criteria name the
/// cohorts, each granted, and stay inside every one of those grants' scope.
async fn caller<'a>(
    state: &AppState,
    principal: &'a Principal,
    project: Option<Uuid>,
    query: &discovery::Query,
    by: &[Dimension],
    breakdown: bool,
) -> Result<Caller<'a>> {
    let mut privileged = principal.has_role(Role::Steward) || principal.has_role(Role::Admin);
    let mut modalities: Option<Vec<String>> = None;
    if let Some(project) = project {
        let cohorts = query.node.as_ref().map(discovery::cohorts_of).unwrap_or_default();
        if cohorts.is_empty() {
            return Err(ApiError::BadRequest(
                "a query within a project names its cohorts: {\"field\": \"cohort\", \"in\": [...]} at the top level"
                    .into(),
            ));
        }
        let dictionary = crate::dictionary::db::dictionary(&state.db).await?;
        let request = if breakdown { "discovery.breakdown" } else { "discovery.count" };
        for cohort in &cohorts {
            let need = grants::Need { cohort, imaging: false };
            let checked = match grants::check(&state.db, project, &principal.username, need, &state.config.access).await
            {
                Ok(grant) => {
                    let coverage =
                        Coverage { scope: &grant.scope, conditions: &grant.conditions, dictionary: &dictionary };
                    coverage
                        .permits(query.node.as_ref(), by, breakdown)
                        .map(|()| coverage.modalities().map(<[String]>::to_vec))
                }
                Err(e) => Err(e),
            };
            let granted = match checked {
                Ok(granted) => granted,
                Err(e) => {
                    grants::audit_refusal(&state.db, &principal.username, project, &e, request).await?;
                    return Err(e);
                }
            };
            if let Some(granted) = granted {
                // Several cohorts: the modalities every one of their grants covers.
                modalities = Some(match modalities {
                    None => granted,
                    Some(so_far) => so_far.into_iter().filter(|m| granted.contains(m)).collect(),
                });
            }
        }
        privileged = true;
    }
    let mut caller = Caller::new(&principal.username, privileged, &state.config.discovery);
    caller.modalities = modalities;
    Ok(caller)
}

/// Count subjects, studies, series and instances matching the criteria.
#[utoipa::path(
    post,
    path = "/discovery/count",
    tag = tags::DISCOVERY,
    security(("bearer" = [])),
    request_body = CountRequest,
    responses(
        (status = 200, description = "Counts: exact, or protected (perturbed by the cell key method, suppressed below each cohort's threshold, anchored against differencing); the disclosure section gives every parameter", body = CountResult),
        (status = 400, description = "Invalid criteria: every problem with its JSON Pointer", body = ErrorBody),
        (status = 403, description = "Outside the project's grants: `no-grant`, `grant-expired`, `grant-suspended`, `grant-revoked`, `grant-pending`, `grant-not-yet-valid`, `obligation-overdue`, `project-closed`, or `outside-grant` (a field, modality or annotation kind the grant does not cover)", body = ErrorBody),
        (status = 429, description = "The budget of a cohort the query touches is used up (`query-budget-exhausted`); `Retry-After` gives the seconds until units come back", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the oldest spending query leaves the window"))),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn count(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<CountRequest>,
) -> Result<AppJson<CountResult>> {
    Ok(AppJson(count_for(&state, &principal, &request).await?))
}

/// A count as `principal` may see it (the REST API and the discovery page).
pub async fn count_for(state: &AppState, principal: &Principal, request: &CountRequest) -> Result<CountResult> {
    let query = discovery::prepare(&state.db, request.criteria.as_ref()).await?;
    let caller = caller(state, principal, request.project, &query, &[], false).await?;
    discovery::count(&state.db, &state.discovery, &caller, &query).await
}

/// Break the matching data down by site, scanner, sex or age band: the site effect at a glance.
#[utoipa::path(
    post,
    path = "/discovery/breakdown",
    tag = tags::DISCOVERY,
    security(("bearer" = [])),
    request_body = BreakdownRequest,
    responses(
        (status = 200, description = "Every label of each dimension with totals; protected cells are perturbed, suppressed (primary and secondary) and anchored like counts", body = BreakdownResult),
        (status = 400, description = "Invalid criteria or dimensions", body = ErrorBody),
        (status = 403, description = "Outside the project's grants (as for a count; a dimension the grant does not cover is `outside-grant`)", body = ErrorBody),
        (status = 429, description = "The budget of a cohort the query touches is used up (`query-budget-exhausted`); see `Retry-After`", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the oldest spending query leaves the window"))),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn breakdown(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<BreakdownRequest>,
) -> Result<AppJson<BreakdownResult>> {
    Ok(AppJson(breakdown_for(&state, &principal, &request).await?))
}

/// A breakdown as `principal` may see it (the REST API and the discovery page).
pub async fn breakdown_for(
    state: &AppState,
    principal: &Principal,
    request: &BreakdownRequest,
) -> Result<BreakdownResult> {
    if request.by.is_empty() || request.by.len() > 2 {
        return Err(ApiError::BadRequest("`by` names one or two dimensions".into()));
    }
    if request.by.len() == 2 && request.by[0] == request.by[1] {
        return Err(ApiError::BadRequest("the two dimensions of `by` differ".into()));
    }
    let query = discovery::prepare(&state.db, request.criteria.as_ref()).await?;
    let caller = caller(state, principal, request.project, &query, &request.by, true).await?;
    discovery::breakdown(&state.db, &state.discovery, &caller, &query, &request.by).await
}
