//! The public data dictionary: every discoverable field and how many subjects
//! of each cohort have it, protected like every discovery count. Browsable without signing
//! in for open and registered cohorts; signed-in users see every cohort;
//! stewards and admins see exact counts and define new observation fields.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::dictionary::units::Unit;
use crate::dictionary::{Field, ValueType, db};
use crate::discovery::protect::{Perturbation, Tally, publish};
use crate::error::{ApiError, ErrorBody, Result, ResultExt};
use crate::openapi::tags;
use crate::registry::{Tier, db as registry};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_fields)).routes(routes!(find_field, put_field))
}

/// A coverage cell as it may be shown, by the cell key method of discovery:
/// the subjects of each threshold class count only when there are at least
/// that many of them, and the count of those kept is perturbed from the
/// published table at the sum of their record keys (the same answer
/// discovery's cell key gives the same set of subjects); `None` when none are kept.
fn disclose(table: &Perturbation, classes: &[&db::Coverage]) -> Option<i64> {
    let mut tally = Tally::default();
    for class in classes {
        let part = tally.parts.entry(class.threshold).or_default();
        part.counts[0] += class.subjects;
        part.key_sum = part.key_sum.wrapping_add(u64::from_ne_bytes(class.key_sum.to_ne_bytes()));
    }
    let (kept, threshold) = tally.kept()?;
    Some(publish(table, &kept, threshold)[0])
}

/// Subjects of one cohort with a value of the field.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortCoverage {
    /// Cohort slug.
    pub cohort: String,
    /// Perturbed by the cell key method (exact for stewards); `null` when suppressed.
    pub subjects: Option<i64>,
    /// Whether the count is below the cohort's threshold and hidden.
    pub suppressed: bool,
}

/// A field with its coverage.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldEntry {
    #[serde(flatten)]
    pub field: Field,
    /// Every cohort visible to the caller, with how many of its subjects have a value.
    pub coverage: Vec<CohortCoverage>,
}

/// The data dictionary.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldListResponse {
    pub fields: Vec<FieldEntry>,
    /// Whether counts are exact (stewards, admins) or suppressed and rounded.
    pub exact_counts: bool,
}

/// Filters of the dictionary.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FieldListQuery {
    /// Only this category, e.g. `laboratory`.
    pub category: Option<String>,
}

/// The dictionary as `principal` may see it, every field or one category's (the web pages list it too).
pub async fn entries(state: &AppState, principal: Option<&Principal>, only: Option<&str>) -> Result<FieldListResponse> {
    let exact = principal.is_some_and(|p| p.has_role(Role::Steward) || p.has_role(Role::Admin));
    let cohorts: Vec<_> = registry::list_cohorts(&state.db)
        .await?
        .into_iter()
        .filter(|c| principal.is_some() || matches!(c.tier, Tier::Open | Tier::Registered))
        .collect();
    let ids: Vec<_> = cohorts.iter().map(|c| c.id).collect();
    let config = &state.config.discovery;
    let table = Perturbation::new(config.noise_sd, config.noise_bound);
    let mut cells: HashMap<(String, uuid::Uuid), Vec<db::Coverage>> = HashMap::new();
    for c in db::coverage(&state.db, &ids).await? {
        cells.entry((c.field_id.clone(), c.cohort_id)).or_default().push(c);
    }
    // Every visible cohort is listed for every field, empty ones too: a
    // cohort left out would say "nobody" where a suppressed one says "few or nobody".
    let cell = |field: &str, cohort: &crate::registry::Cohort| {
        let classes: Vec<&db::Coverage> =
            cells.get(&(field.to_owned(), cohort.id)).map(|v| v.iter().collect()).unwrap_or_default();
        let shown = if exact { Some(classes.iter().map(|c| c.subjects).sum()) } else { disclose(&table, &classes) };
        CohortCoverage { cohort: cohort.slug.clone(), subjects: shown, suppressed: shown.is_none() }
    };
    let mut by_slug: Vec<&crate::registry::Cohort> = cohorts.iter().collect();
    by_slug.sort_by(|a, b| a.slug.cmp(&b.slug));
    let fields = db::fields(&state.db)
        .await?
        .into_iter()
        .filter(|f| only.is_none_or(|c| f.category == c))
        .map(|field| {
            let coverage = by_slug.iter().map(|cohort| cell(&field.id, cohort)).collect();
            FieldEntry { field, coverage }
        })
        .collect();
    Ok(FieldListResponse { fields, exact_counts: exact })
}

/// The data dictionary: every discoverable field with its coverage per cohort.
#[utoipa::path(
    get,
    path = "/fields",
    tag = tags::DICTIONARY,
    params(FieldListQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The fields", body = FieldListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_fields(
    State(state): State<AppState>,
    principal: Option<Principal>,
    AppQuery(query): AppQuery<FieldListQuery>,
) -> Result<AppJson<FieldListResponse>> {
    Ok(AppJson(entries(&state, principal.as_ref(), query.category.as_deref()).await?))
}

/// One field of the dictionary with its coverage.
#[utoipa::path(
    get,
    path = "/fields/{id}",
    tag = tags::DICTIONARY,
    params(("id" = String, Path, description = "Field id, e.g. `hba1c`")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The field", body = FieldEntry),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_field(
    State(state): State<AppState>,
    principal: Option<Principal>,
    AppPath(id): AppPath<String>,
) -> Result<AppJson<FieldEntry>> {
    let list = entries(&state, principal.as_ref(), None).await?;
    let entry = list.fields.into_iter().find(|e| e.field.id == id).ok_or(ApiError::NotFound("field"))?;
    Ok(AppJson(entry))
}

/// A clinical, lab or proteomic field as a steward defines it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFieldRequest {
    #[schema(max_length = 200)]
    pub title: String,
    #[serde(default)]
    #[schema(max_length = 10_000)]
    pub description: String,
    /// `anthropometry`, `vital-signs`, `lifestyle`, `laboratory` or `proteomics`.
    #[schema(max_length = 64)]
    pub category: String,
    /// `number` or `code`.
    pub value_type: ValueType,
    /// Canonical UCUM unit of a number, e.g. `mmol/L`.
    #[schema(max_length = 64)]
    pub unit: Option<String>,
    /// e.g. `LOINC`, `UniProt`, `local`.
    #[schema(max_length = 64)]
    pub coding_system: Option<String>,
    /// The field's code in that system, e.g. the LOINC code.
    #[schema(max_length = 64)]
    pub code: Option<String>,
    /// g/mol of the analyte, to accept mass concentrations for a substance concentration.
    pub molar_mass: Option<f64>,
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
}

const OBSERVATION_CATEGORIES: &[&str] = &["anthropometry", "vital-signs", "lifestyle", "laboratory", "proteomics"];

/// Create or update an observation field (stewards, admins; audited).
#[utoipa::path(
    put,
    path = "/fields/{id}",
    tag = tags::DICTIONARY,
    params(("id" = String, Path, description = "Field id: a lowercase letter, then letters, digits and `_`")),
    security(("bearer" = ["admin"]), ("bearer" = ["steward"])),
    request_body = PutFieldRequest,
    responses(
        (status = 201, description = "The new field", body = Field),
        (status = 200, description = "The updated field", body = Field),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn put_field(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<String>,
    AppJson(request): AppJson<PutFieldRequest>,
) -> Result<(StatusCode, AppJson<Field>)> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let valid_id = id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid_id {
        return Err(ApiError::BadRequest(
            "a field id is a lowercase letter, then lowercase letters, digits and `_` (at most 63)".into(),
        ));
    }
    if !OBSERVATION_CATEGORIES.contains(&request.category.as_str()) {
        return Err(ApiError::BadRequest(format!("`category` must be one of: {}", OBSERVATION_CATEGORIES.join(", "))));
    }
    match (request.value_type, request.unit.as_deref()) {
        (ValueType::Number, Some(unit)) => {
            let unit = Unit::parse(unit).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`unit` must be a UCUM unit Custodian converts: {}",
                    Unit::codes().collect::<Vec<_>>().join(", ")
                ))
            })?;
            if unit.code != request.unit.as_deref().unwrap_or_default() {
                return Err(ApiError::BadRequest(format!("write the unit in its UCUM form `{}`", unit.code)));
            }
        }
        (ValueType::Number, None) => return Err(ApiError::BadRequest("a number field needs a `unit`".into())),
        (ValueType::Code, None) => {}
        (ValueType::Code, Some(_)) => return Err(ApiError::BadRequest("a coded field takes no `unit`".into())),
        _ => return Err(ApiError::BadRequest("`value_type` of an observation field is `number` or `code`".into())),
    }
    if request.molar_mass.is_some_and(|m| !(m.is_finite() && m > 0.0)) {
        return Err(ApiError::BadRequest("`molar_mass` must be positive".into()));
    }
    if let (Some(min), Some(max)) = (request.min_value, request.max_value)
        && min > max
    {
        return Err(ApiError::BadRequest("`min_value` is above `max_value`".into()));
    }
    let new = db::NewField {
        id: &id,
        title: &request.title,
        description: &request.description,
        category: &request.category,
        value_type: request.value_type,
        unit: request.unit.as_deref(),
        coding_system: request.coding_system.as_deref(),
        code: request.code.as_deref(),
        molar_mass: request.molar_mass,
        min_value: request.min_value,
        max_value: request.max_value,
    };
    let mut tx = state.db.begin().await?;
    // Stored values are in the field's unit and type: neither changes under them.
    // The row lock makes an import of values for the field wait, or this wait for it.
    let before = sqlx::query!(
        r#"select f.unit, f.value_type as "value_type: ValueType",
                  (select count(*) from observation o where o.field_id = f.field_id) as "values!"
           from field f where f.field_id = $1 for update"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(before) = before
        && before.values > 0
        && (before.unit.as_deref() != request.unit.as_deref() || before.value_type != request.value_type)
    {
        return Err(ApiError::Conflict(format!(
            "`{id}` holds {} stored values in {} ({}); its unit and value type cannot change under them: define a \
             new field",
            before.values,
            before.unit.as_deref().unwrap_or("no unit"),
            serde_json::to_value(before.value_type).unwrap_or_default()
        )));
    }
    let (field, created) = db::put_observation_field(&mut *tx, &new)
        .await
        .on_constraint("field_code_key", || {
            ApiError::Conflict("another field already has this coding system and code".into())
        })?
        .ok_or_else(|| ApiError::Conflict(format!("`{id}` is a builtin field and cannot be redefined")))?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, if created { "field.create" } else { "field.update" })
            .target(format!("field:{id}"))
            .details(json!({ "category": field.category, "value_type": field.value_type, "unit": field.unit })),
    )
    .await?;
    tx.commit().await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, AppJson(field)))
}
