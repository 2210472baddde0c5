//! Access applications over REST: a project's PI drafts, checks (feasibility
//! and consent), submits, withdraws and, once approved, activates by accepting
//! the data use agreement. Members and stewards read them; nobody else learns
//! they exist.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::access::consent::{self, ConsentTerms, Rule, Verdict};
use crate::access::db::{self, ApplicationContent, ApplicationRow, Transition, Version};
use crate::access::grants::{self, GrantState, NewVersion};
use crate::access::review;
use crate::access::standing::InProject;
use crate::access::standing::standing;
use crate::access::state::{Action, Actor, State as AppState_};
use crate::access::{dua, duties};
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::discovery::{self, Caller, Counts};
use crate::error::{ApiError, ErrorBody, Problem, Result};
use crate::openapi::tags;
use crate::registry::Tier;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_applications, create_application))
        .routes(routes!(get_application, update_application))
        .routes(routes!(get_version))
        .routes(routes!(diff_versions))
        .routes(routes!(check_application))
        .routes(routes!(submit_application))
        .routes(routes!(withdraw_application))
        .routes(routes!(activate_application))
        .routes(routes!(set_consent_terms))
}

/// Whether the caller reviews (stewards and admins see every application).
pub(crate) fn is_steward(principal: &Principal) -> bool {
    principal.has_role(Role::Steward) || principal.has_role(Role::Admin)
}

/// The application if the caller may see it: a member of its project or a
/// steward. For anyone else it does not exist.
pub(crate) async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> Result<ApplicationRow> {
    let app = db::get(&state.db, id).await?.ok_or(ApiError::NotFound("application"))?;
    standing(&state.db, app.project_id, principal).await?.require_reader("application")?;
    Ok(app)
}

async fn require_pi(state: &AppState, principal: &Principal, project_id: Uuid) -> Result<()> {
    // An invitee sees the project, not its applications.
    let standing = standing(&state.db, project_id, principal).await?;
    standing.require_reader("project")?;
    standing.require_pi("project", "only the project's PI acts on its applications")
}

/// An application as its readers see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Application {
    #[serde(flatten)]
    pub application: ApplicationRow,
    /// Every state change with its actor and reason.
    pub history: Vec<Transition>,
}

/// The application as stored now, after a change.
async fn reload(state: &AppState, id: Uuid) -> Result<AppJson<Application>> {
    let app = db::get(&state.db, id).await?.ok_or(ApiError::NotFound("application"))?;
    Ok(AppJson(full(state, app).await?))
}

async fn full(state: &AppState, application: ApplicationRow) -> Result<Application> {
    let history = db::transitions(&state.db, application.id).await?;
    Ok(Application { application, history })
}

/// A project's applications.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationList {
    pub applications: Vec<Application>,
}

/// List a project's applications (members and stewards).
#[utoipa::path(
    get,
    path = "/projects/{id}/applications",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project's applications, newest first", body = ApplicationList),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_applications(State(state): State<AppState>, caller: InProject) -> Result<AppJson<ApplicationList>> {
    caller.standing.require_reader("project")?;
    let id = caller.project_id;
    let mut applications = Vec::new();
    for app in db::of_project(&state.db, id).await? {
        applications.push(full(&state, app).await?);
    }
    Ok(AppJson(ApplicationList { applications }))
}

/// A new application, or its changed draft.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationRequest {
    pub content: ApplicationContent,
}

/// Start an application of a project (its PI).
#[utoipa::path(
    post,
    path = "/projects/{id}/applications",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    request_body = ApplicationRequest,
    responses(
        (status = 201, description = "The new application, a draft", body = Application),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn create_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(project_id): AppPath<Uuid>,
    AppJson(request): AppJson<ApplicationRequest>,
) -> Result<(StatusCode, AppJson<Application>)> {
    require_pi(&state, &principal, project_id).await?;
    let mut tx = state.db.begin().await?;
    crate::access::projects::ensure_open(&mut tx, project_id).await?;
    let id = db::create(&mut tx, project_id, &principal.username, &request.content).await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "application.create")
            .target(format!("application:{id}"))
            .details(json!({ "project": project_id, "cohorts": request.content.scope.cohorts })),
    )
    .await?;
    tx.commit().await?;
    let app = db::get(&state.db, id).await?.ok_or(ApiError::NotFound("application"))?;
    Ok((StatusCode::CREATED, AppJson(full(&state, app).await?)))
}

/// Get an application with its history (members and stewards).
#[utoipa::path(
    get,
    path = "/applications/{id}",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "The application", body = Application),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn get_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Application>> {
    let app = visible(&state, &principal, id).await?;
    Ok(AppJson(full(&state, app).await?))
}

/// Replace the draft (the PI, while a draft or after changes were requested).
#[utoipa::path(
    put,
    path = "/applications/{id}",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = ApplicationRequest,
    responses(
        (status = 200, description = "The application with its new draft", body = Application),
        (status = 403, description = "Not editable in its state, or not the PI", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn update_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<ApplicationRequest>,
) -> Result<AppJson<Application>> {
    let app = visible(&state, &principal, id).await?;
    require_pi(&state, &principal, app.project_id).await?;
    let mut tx = state.db.begin().await?;
    let app = db::lock(&mut tx, id).await?.ok_or(ApiError::NotFound("application"))?;
    if !app.state.editable() {
        return Err(ApiError::Refused {
            code: crate::error::Refusal::InvalidTransition,
            message: format!(
                "an application that is {} cannot be edited; only drafts and applications with changes requested can",
                app.state.as_str().replace('_', " ")
            ),
        });
    }
    let changed = db::changed_fields(&app.draft, &request.content);
    db::replace_draft(&mut tx, id, &request.content).await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "application.edit")
            .target(format!("application:{id}"))
            .details(json!({ "changed": changed })),
    )
    .await?;
    tx.commit().await?;
    reload(&state, id).await
}

/// Get one submitted version whole (members and stewards).
#[utoipa::path(
    get,
    path = "/applications/{id}/versions/{version}",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Application id"),
        ("version" = i32, Path, description = "Version number, from 1"),
    ),
    responses(
        (status = 200, description = "The version as submitted", body = Version),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn get_version(
    State(state): State<AppState>,
    principal: Principal,
    AppPath((id, version)): AppPath<(Uuid, i32)>,
) -> Result<AppJson<Version>> {
    visible(&state, &principal, id).await?;
    let found = db::versions(&state.db, id).await?.into_iter().find(|v| v.version == version);
    Ok(AppJson(found.ok_or(ApiError::NotFound("version"))?))
}

/// Which versions to compare.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The earlier version (default: the one before `to`; 0: nothing, so
    /// every field of `to` shows as new).
    pub from: Option<i32>,
    /// The later version (default: the latest submitted).
    pub to: Option<i32>,
}

/// What changed between two submitted versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionDiff {
    pub from: i32,
    pub to: i32,
    /// Field by field, with the values on each side.
    pub changes: Vec<db::Change>,
}

/// Compare two submitted versions, field by field (members and stewards).
#[utoipa::path(
    get,
    path = "/applications/{id}/diff",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id"), DiffQuery),
    responses(
        (status = 200, description = "The changes from `from` to `to`", body = VersionDiff),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn diff_versions(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<DiffQuery>,
) -> Result<AppJson<VersionDiff>> {
    visible(&state, &principal, id).await?;
    let versions = db::versions(&state.db, id).await?;
    let latest = versions.last().map_or(0, |v| v.version);
    if latest == 0 {
        return Err(ApiError::BadRequest("the application has no submitted version yet".into()));
    }
    let to = query.to.unwrap_or(latest);
    let from = query.from.unwrap_or(to - 1);
    if from < 0 || from >= to {
        return Err(ApiError::BadRequest(format!("`from` ({from}) is 0 or more and comes before `to` ({to})")));
    }
    let find = |n: i32| {
        versions
            .iter()
            .find(|v| v.version == n)
            .ok_or_else(|| ApiError::BadRequest(format!("no version {n}: versions are 1 to {latest}")))
    };
    let before = if from == 0 { None } else { Some(&find(from)?.content) };
    let after = find(to)?;
    Ok(AppJson(VersionDiff { from, to, changes: db::diff(before, &after.content) }))
}

/// The consent check and feasibility of one requested cohort.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortCheck {
    pub cohort: String,
    pub tier: Tier,
    /// The cohort's consent terms (absent: none on record; the committee decides).
    pub terms: Option<ConsentTerms>,
    pub verdict: Verdict,
    /// Every rule that took part, explained.
    pub rules: Vec<Rule>,
    /// Whether the application justifies a use the terms do not permit.
    pub justified: bool,
    /// Subjects, studies, series and instances of the cohort in the requested
    /// modalities, under the caller's disclosure control (absent when the
    /// discovery budget is used up).
    pub feasibility: Option<Counts>,
}

/// What stands between a draft and its submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub cohorts: Vec<CohortCheck>,
    /// Everything that blocks submission, each at its JSON Pointer in the content.
    pub problems: Vec<Problem>,
    pub can_submit: bool,
    /// Whether submission would be approved at once by the cohorts' auto-eligibility rule.
    pub auto_approval: bool,
}

fn problem(path: &str, code: &'static str, message: impl Into<String>) -> Problem {
    Problem { row: None, column: None, path: Some(path.to_owned()), code, message: message.into() }
}

/// What a draft lacks: required texts, a valid intended use, known fields, categories and annotation kinds.
fn completeness(content: &ApplicationContent, dictionary: &crate::dictionary::Dictionary) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (path, text) in [
        ("/title", &content.title),
        ("/lay_summary", &content.lay_summary),
        ("/rationale", &content.rationale),
        ("/methods", &content.methods),
        ("/data_security", &content.data_security),
        ("/public_interest", &content.public_interest),
    ] {
        if text.trim().is_empty() {
            problems.push(problem(path, "missing", format!("`{}` is required to submit", &path[1..])));
        } else if text.chars().count() > 20_000 {
            problems.push(problem(path, "too-long", "at most 20,000 characters"));
        }
    }
    for (field, message) in content.intended_use.validate() {
        problems.push(problem(&format!("/intended_use/{field}"), "invalid-intended-use", message));
    }
    let scope = &content.scope;
    if scope.cohorts.is_empty() {
        problems.push(problem("/scope/cohorts", "missing", "name at least one cohort"));
    }
    for (i, field) in scope.fields.iter().enumerate() {
        if dictionary.get(field).is_none() {
            problems.push(problem(
                &format!("/scope/fields/{i}"),
                "unknown-field",
                format!("`{field}` is not a field of the data dictionary"),
            ));
        }
    }
    let categories: BTreeSet<&str> = dictionary.fields().iter().map(|f| f.category.as_str()).collect();
    for (i, category) in scope.categories.iter().enumerate() {
        if !categories.contains(category.as_str()) {
            problems.push(problem(
                &format!("/scope/categories/{i}"),
                "unknown-category",
                format!("`{category}` is not a category of the data dictionary"),
            ));
        }
    }
    for (i, kind) in scope.annotation_kinds.iter().enumerate() {
        if !["segmentation", "contour", "landmark", "box", "label"].contains(&kind.as_str()) {
            problems.push(problem(
                &format!("/scope/annotation_kinds/{i}"),
                "invalid-criteria",
                "an annotation kind is segmentation, contour, landmark, box or label",
            ));
        }
    }
    problems
}

/// Checks a draft: completeness, known cohorts, consent terms and feasibility per cohort.
async fn check(state: &AppState, principal: &Principal, content: &ApplicationContent) -> Result<CheckResult> {
    let dictionary = crate::dictionary::db::dictionary(&state.db).await?;
    let mut problems = completeness(content, &dictionary);
    if state.config.access.require_verified_profiles {
        let verified: bool = sqlx::query_scalar(
            "select exists (select 1 from researcher_profile where username = $1 and verified_at is not null)",
        )
        .bind(&principal.username)
        .fetch_one(&state.db)
        .await?;
        if !verified {
            problems.push(problem(
                "/pi",
                "unverified-profile",
                "the PI's bona fides are not verified yet: a steward verifies the profile before the application is \
                 submitted",
            ));
        }
    }
    let scope = &content.scope;
    let today = Utc::now().date_naive();
    let caller = Caller::new(&principal.username, is_steward(principal), &state.config.discovery);
    let mut cohorts = Vec::new();
    for (i, slug) in scope.cohorts.iter().enumerate() {
        let row: Option<(Tier, Option<serde_json::Value>)> =
            sqlx::query_as("select tier, consent_terms from cohort where slug = $1")
                .bind(slug)
                .fetch_optional(&state.db)
                .await?;
        let Some((tier, terms)) = row else {
            problems.push(problem(&format!("/scope/cohorts/{i}"), "unknown-cohort", format!("no cohort `{slug}`")));
            continue;
        };
        let terms: Option<ConsentTerms> = consent::stored(slug, terms)?;
        let (verdict, rules) = match &terms {
            Some(terms) => {
                let c = consent::check(terms, &content.intended_use, today);
                (c.verdict, c.rules)
            }
            None => (
                Verdict::PermittedWithConditions,
                vec![Rule {
                    code: "TERMS",
                    outcome: consent::Outcome::Condition,
                    explanation: "This cohort has no consent terms on record, so the committee decides whether the \
                                  stated use fits the participants' consent."
                        .into(),
                }],
            ),
        };
        let justified = content.justifications.get(slug).is_some_and(|j| !j.trim().is_empty());
        if verdict == Verdict::NotPermitted && !justified {
            problems.push(problem(
                &format!("/justifications/{slug}"),
                "consent-mismatch",
                format!(
                    "the consent terms of `{slug}` do not permit the stated use (see its rules); change the use or \
                     justify it for the committee"
                ),
            ));
        }
        let mut criteria = vec![json!({"field": "cohort", "in": [slug]})];
        if !scope.modalities.is_empty() {
            criteria.push(json!({"field": "modality", "in": scope.modalities}));
        }
        let criteria = json!({ "and": criteria });
        let feasibility = match discovery::prepare(&state.db, Some(&criteria)).await {
            Ok(query) => match discovery::count(&state.db, &state.discovery, &caller, &query).await {
                Ok(result) => Some(result.counts),
                Err(ApiError::Refused { .. } | ApiError::TooManyRequests { .. }) => None,
                Err(e) => return Err(e),
            },
            Err(_) => None,
        };
        cohorts.push(CohortCheck { cohort: slug.clone(), tier, terms, verdict, rules, justified, feasibility });
    }
    let auto_rule: bool = sqlx::query_scalar(
        "select count(*) = cardinality($1::text[]) from cohort where slug = any($1) and tier = 'registered' and auto_approve",
    )
    .bind(&scope.cohorts)
    .fetch_one(&state.db)
    .await?;
    let auto_approval = problems.is_empty()
        && !cohorts.is_empty()
        && auto_rule
        && cohorts.iter().all(|c| c.verdict == Verdict::Permitted);
    Ok(CheckResult { can_submit: problems.is_empty(), cohorts, problems, auto_approval })
}

/// Feasibility and consent check of the draft (members and stewards).
///
/// Feasibility counts are discovery queries of the caller: they pass the same
/// disclosure control and count against the daily budget.
#[utoipa::path(
    get,
    path = "/applications/{id}/check",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "Per cohort: consent verdict with its rules, feasibility counts; blocking problems", body = CheckResult),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn check_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<CheckResult>> {
    let app = visible(&state, &principal, id).await?;
    Ok(AppJson(check(&state, &principal, &app.draft).await?))
}

/// Submit the draft (the PI): a draft goes to the committee, an application
/// with changes requested goes back under review. Every submission keeps the
/// content whole as a new version. Applications to `registered` cohorts whose
/// stated use their consent terms permit exactly are approved at once where the
/// cohorts allow it.
#[utoipa::path(
    post,
    path = "/applications/{id}/submit",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "The submitted application", body = Application),
        (status = 400, description = "Incomplete or not permitted by consent: every problem listed (`invalid-application`)", body = ErrorBody),
        (status = 403, description = "Not the PI, or not submittable in its state (`invalid-transition`)", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn submit_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Application>> {
    let app = visible(&state, &principal, id).await?;
    require_pi(&state, &principal, app.project_id).await?;
    let checked = check(&state, &principal, &app.draft).await?;
    let mut tx = state.db.begin().await?;
    let locked = db::lock(&mut tx, id).await?.ok_or(ApiError::NotFound("application"))?;
    if locked.draft != app.draft {
        return Err(ApiError::Conflict("the draft changed while it was checked; submit again".into()));
    }
    let action = if locked.state == AppState_::ChangesRequested { Action::Resubmit } else { Action::Submit };
    crate::access::state::next(locked.state, action, Actor::Applicant)
        .map_err(|why| ApiError::Refused { code: crate::error::Refusal::InvalidTransition, message: why })?;
    if !checked.can_submit {
        let n = checked.problems.len();
        return Err(ApiError::Invalid {
            code: "invalid-application",
            message: format!(
                "the application has {n} problem{} to solve before it is submitted",
                if n == 1 { "" } else { "s" }
            ),
            problems: checked.problems,
        });
    }
    let due = db::working_days_after(Utc::now().date_naive(), state.config.access.review_working_days);
    let version = db::append_version(&mut tx, &locked, &principal.username, due).await?;
    let previous = if version > 1 { db::versions(&mut *tx, id).await?.into_iter().nth_back(1) } else { None };
    let changed = previous.map(|p| db::changed_fields(&p.content, &locked.draft)).unwrap_or_default();
    review::advance(&mut tx, &locked, action, Actor::Applicant, &principal.username, None).await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, if action == Action::Submit { "application.submit" } else { "application.resubmit" })
            .target(format!("application:{id}"))
            .details(json!({
                "version": version,
                "changed": changed,
                "consent": checked.cohorts.iter().map(|c| json!({"cohort": c.cohort, "verdict": c.verdict, "justified": c.justified})).collect::<Vec<_>>(),
            })),
    )
    .await?;
    duties::notify(
        &mut tx,
        "role:steward",
        "application.submitted",
        &format!("Application version {version} is waiting for review"),
        &format!("application:{id}"),
    )
    .await?;
    if action == Action::Submit && checked.auto_approval {
        let submitted = db::lock(&mut tx, id).await?.ok_or(ApiError::NotFound("application"))?;
        review::approve(
            &mut tx,
            &state.ingest.key,
            &submitted,
            &grants::Conditions::default(),
            "system:auto-eligibility",
            true,
        )
        .await?;
    }
    tx.commit().await?;
    reload(&state, id).await
}

/// Why an application is withdrawn.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {
    pub reason: Option<String>,
}

/// Withdraw the application before a decision (the PI).
#[utoipa::path(
    post,
    path = "/applications/{id}/withdraw",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = WithdrawRequest,
    responses(
        (status = 200, description = "The withdrawn application", body = Application),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn withdraw_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<WithdrawRequest>,
) -> Result<AppJson<Application>> {
    let app = visible(&state, &principal, id).await?;
    require_pi(&state, &principal, app.project_id).await?;
    let mut tx = state.db.begin().await?;
    let locked = db::lock(&mut tx, id).await?.ok_or(ApiError::NotFound("application"))?;
    let reason = request.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    review::advance(&mut tx, &locked, Action::Withdraw, Actor::Applicant, &principal.username, reason).await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "application.withdraw")
            .target(format!("application:{id}"))
            .details(json!({ "from": locked.state, "reason": reason })),
    )
    .await?;
    tx.commit().await?;
    reload(&state, id).await
}

/// The PI's acceptance of the data use agreement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// The exact version of the agreement accepted; must be the one in force (`GET /dua`).
    pub dua_version: String,
    /// The SHA-256 of the text read, as `GET /dua` gives it: when present it
    /// must match, proving the text accepted is the text on record.
    #[serde(default)]
    pub dua_sha256: Option<String>,
}

/// Accept the data use agreement (the PI): the approved application becomes
/// active and its grant takes effect.
#[utoipa::path(
    post,
    path = "/applications/{id}/activate",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Application id")),
    request_body = ActivateRequest,
    responses(
        (status = 200, description = "The active application", body = Application),
        (status = 409, description = "Not the current agreement version", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn activate_application(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<ActivateRequest>,
) -> Result<AppJson<Application>> {
    let app = visible(&state, &principal, id).await?;
    require_pi(&state, &principal, app.project_id).await?;
    let mut tx = state.db.begin().await?;
    let agreement = dua::current(&mut *tx).await?;
    let current = &agreement.version;
    if &request.dua_version != current {
        return Err(ApiError::Conflict(format!(
            "the data use agreement in force is `{current}`; read and accept that version"
        )));
    }
    if request.dua_sha256.as_ref().is_some_and(|h| !h.eq_ignore_ascii_case(&agreement.sha256)) {
        return Err(ApiError::Conflict(format!(
            "the text accepted differs from the text of `{current}` on record (its SHA-256 is {})",
            agreement.sha256
        )));
    }
    let locked = db::lock(&mut tx, id).await?.ok_or(ApiError::NotFound("application"))?;
    review::advance(&mut tx, &locked, Action::Activate, Actor::Applicant, &principal.username, None).await?;
    if let Some(owed) = duties::fees(&mut *tx, id).await?.into_iter().find(|f| f.settlement.is_none()) {
        return Err(ApiError::Refused {
            code: crate::error::Refusal::FeeUnsettled,
            message: format!(
                "the {} fee of {}.{:02} {} is neither paid nor waived yet; a steward records its settlement",
                owed.kind,
                owed.amount / 100,
                owed.amount % 100,
                owed.currency
            ),
        });
    }
    sqlx::query(
        "update application set dua_version = $2, dua_sha256 = $3, dua_accepted_at = now() where application_id = $1",
    )
    .bind(id)
    .bind(current)
    .bind(&agreement.sha256)
    .execute(&mut *tx)
    .await?;
    let grant_id: Uuid =
        sqlx::query_scalar("select grant_id from access_grant where application_id = $1 and version = 1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let grant = grants::latest_for_update(&mut tx, grant_id).await?.ok_or(ApiError::NotFound("grant"))?;
    if grant.state != GrantState::Pending {
        return Err(ApiError::Conflict(format!("the grant is {}, not pending", grant.state.as_str())));
    }
    grants::insert(
        &mut tx,
        NewVersion {
            grant_id,
            version: grant.version + 1,
            project_id: grant.project_id,
            application_id: id,
            state: GrantState::Active,
            scope: &grant.scope,
            conditions: &grant.conditions,
            not_before: grant.not_before,
            not_after: grant.not_after,
            reason: Some("the PI accepted the data use agreement"),
            created_by: &principal.username,
        },
    )
    .await?;
    let duties =
        duties::schedule(&mut tx, grant_id, grant.project_id, &grant.scope.cohorts, grant.not_before, grant.not_after)
            .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "application.activate")
            .target(format!("application:{id}"))
            .details(json!({ "dua_version": current, "dua_sha256": agreement.sha256, "grant": grant_id, "grant_version": grant.version + 1, "obligations": duties })),
    )
    .await?;
    tx.commit().await?;
    reload(&state, id).await
}

/// A cohort's consent terms and auto-eligibility.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentTermsRequest {
    pub terms: ConsentTerms,
    /// Approve by rule applications to this (registered) cohort whose use the terms permit exactly.
    #[serde(default)]
    pub auto_approve: bool,
}

/// Set a cohort's consent terms as DUO codes (stewards and admins).
#[utoipa::path(
    put,
    path = "/cohorts/{slug}/consent",
    tag = tags::APPLICATIONS,
    security(("bearer" = [])),
    params(("slug" = String, Path, description = "Cohort slug")),
    request_body = ConsentTermsRequest,
    responses(
        (status = 200, description = "The terms as stored", body = ConsentTermsRequest),
        (status = 400, description = "Invalid terms: every problem listed", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn set_consent_terms(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(slug): AppPath<String>,
    AppJson(request): AppJson<ConsentTermsRequest>,
) -> Result<AppJson<ConsentTermsRequest>> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let problems: Vec<Problem> = request
        .terms
        .validate()
        .into_iter()
        .map(|(field, message)| problem(&format!("/terms/{field}"), "invalid-terms", message))
        .collect();
    if !problems.is_empty() {
        return Err(ApiError::Invalid {
            code: "invalid-terms",
            message: "the consent terms are invalid".into(),
            problems,
        });
    }
    let mut tx = state.db.begin().await?;
    let tier: Option<Tier> =
        sqlx::query_scalar("update cohort set consent_terms = $2, auto_approve = $3 where slug = $1 returning tier")
            .bind(&slug)
            .bind(serde_json::to_value(&request.terms).map_err(|e| ApiError::Internal(e.into()))?)
            .bind(request.auto_approve)
            .fetch_optional(&mut *tx)
            .await?;
    let tier = tier.ok_or(ApiError::NotFound("cohort"))?;
    if request.auto_approve && tier != Tier::Registered {
        return Err(ApiError::BadRequest("only `registered` cohorts may approve applications by rule".into()));
    }
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "cohort.consent")
            .target(format!("cohort:{slug}"))
            .details(json!({ "codes": request.terms.codes(), "auto_approve": request.auto_approve })),
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(request))
}
