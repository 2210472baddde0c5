//! Access applications from both sides: the researcher's list, form (with a
//! live feasibility and consent check), status, history, version diff,
//! resubmission and withdrawal; the steward's review view with its actions.
//!
//! Every action calls the service function of its REST twin
//! ([`crate::access::applications`], [`crate::access::review`]) with the
//! session's principal, so the same rules, refusals and audit entries apply.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Chrome, Visitor, WebError, render};
use crate::access::applications::{self, Application, CheckResult};
use crate::access::consent::{Outcome, Verdict};
use crate::access::db::ApplicationContent;
use crate::access::grants::{self, Conditions};
use crate::access::projects::{self, MemberRole, ProjectSummary};
use crate::access::review::{self, Ballot, NewComment, VoteKind};
use crate::access::standing::{Standing, standing};
use crate::access::state::State as ApplicationState;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, Problem};
use crate::registry::Cohort;

type PageResult = Result<Response, WebError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/applications", get(list))
        .route("/ui/applications/new", get(new_form).post(create))
        .route("/ui/applications/check", post(check_fragment))
        .route("/ui/applications/{id}", get(detail))
        .route("/ui/applications/{id}/edit", post(edit))
        .route("/ui/applications/{id}/submit", post(submit))
        .route("/ui/applications/{id}/withdraw", post(withdraw))
        .route("/ui/applications/{id}/comments", post(comment))
        .route("/ui/steward/applications/{id}", get(review_page))
        .route("/ui/steward/applications/{id}/start", post(start_review))
        .route("/ui/steward/applications/{id}/assign", post(assign))
        .route("/ui/steward/applications/{id}/declare", post(declare))
        .route("/ui/steward/applications/{id}/vote", post(vote))
        .route("/ui/steward/applications/{id}/comment", post(steward_comment))
}

// ------------------------------------------------------------------ shared helpers

/// A moment as the pages show it.
pub(super) fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// An id from a page path; anything else is a page that does not exist.
pub(super) fn parse_id(text: &str, what: &'static str) -> Result<Uuid, WebError> {
    text.parse().map_err(|_| WebError::NotFound(what))
}

/// The signed-in principal acting on the page's `what` named by `id`.
pub(super) fn acting<'a>(
    visitor: &'a Visitor,
    id: &str,
    what: &'static str,
) -> Result<(&'a Principal, Uuid), WebError> {
    Ok((visitor.signed_in()?, parse_id(id, what)?))
}

/// A state name in words (`changes_requested` → `changes requested`).
pub(super) fn words(text: &str) -> String {
    text.replace('_', " ")
}

/// The projects whose data the visitor may read (members; stewards and admins
/// see every project), each with the visitor's standing in it.
pub(super) async fn readable_projects(
    state: &AppState,
    principal: &Principal,
) -> Result<Vec<(ProjectSummary, Standing)>, WebError> {
    let mut readable = Vec::new();
    for project in projects::list_projects(&state.db, principal).await? {
        let standing = standing(&state.db, project.id, principal).await?;
        if standing.reads() {
            readable.push((project, standing));
        }
    }
    Ok(readable)
}

/// The title of project `id` (empty when it is gone).
pub(super) async fn project_title(state: &AppState, id: Uuid) -> Result<String, WebError> {
    Ok(projects::get_project(&state.db, id).await?.map(|p| p.title).unwrap_or_default())
}

/// A service refusal with a list of problems, as a page notice.
struct Refused {
    message: String,
    problems: Vec<String>,
}

fn problem_text(p: &Problem) -> String {
    match &p.path {
        Some(path) => format!("{path}: {}", p.message),
        None => p.message.clone(),
    }
}

/// A refusal a page shows beside the form rather than on an error page; the
/// rest go to the error page with their status.
fn refused(error: ApiError) -> Result<Refused, WebError> {
    match error {
        ApiError::Invalid { message, problems, .. } => {
            Ok(Refused { message, problems: problems.iter().map(problem_text).collect() })
        }
        e @ (ApiError::BadRequest(_) | ApiError::Conflict(_) | ApiError::Refused { .. }) => {
            Ok(Refused { message: e.to_string(), problems: Vec::new() })
        }
        other => Err(other.into()),
    }
}

// ------------------------------------------------------------------ the form

/// The form's fields, as text, for showing them again.
#[derive(Default)]
#[allow(clippy::struct_excessive_bools)] // each is a checkbox of the form
struct FormView {
    title: String,
    lay_summary: String,
    rationale: String,
    methods: String,
    data_security: String,
    public_interest: String,
    cohorts: Vec<CohortChoice>,
    fields: String,
    categories: String,
    modalities: String,
    annotation_kinds: String,
    imaging: bool,
    purposes: Vec<(&'static str, &'static str, bool)>,
    diseases: String,
    commercial: bool,
    methods_development: bool,
    genetic: bool,
    ethics_approval: String,
    duration_months: String,
    processing_countries: String,
}

struct CohortChoice {
    slug: String,
    title: String,
    tier: String,
    checked: bool,
    justification: String,
    /// The name of its justification field.
    justification_name: String,
}

const PURPOSES: [(&str, &str); 4] = [
    ("HMB", "Health, medical or biomedical research (HMB)"),
    ("GRU", "General research use (GRU)"),
    ("DS", "Research on specific diseases (DS)"),
    ("POA", "Population origins or ancestry (POA)"),
];

fn value<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
}

fn checked(pairs: &[(String, String)], name: &str) -> bool {
    pairs.iter().any(|(n, v)| n == name && !v.is_empty())
}

/// A list typed as words separated by commas or spaces.
fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

impl FormView {
    fn new(pairs: &[(String, String)], cohorts: &[Cohort]) -> Self {
        let chosen: Vec<&str> = pairs.iter().filter(|(n, _)| n == "cohort").map(|(_, v)| v.as_str()).collect();
        let mut choices: Vec<CohortChoice> = cohorts
            .iter()
            .map(|c| CohortChoice {
                slug: c.slug.clone(),
                title: c.title.clone(),
                tier: serde_json::to_value(c.tier).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                checked: chosen.contains(&c.slug.as_str()),
                justification: value(pairs, &format!("justification.{}", c.slug)).to_owned(),
                justification_name: format!("justification.{}", c.slug),
            })
            .collect();
        // A cohort of the draft that is no longer in the catalog stays visible, so it can be unticked.
        for slug in chosen.iter().filter(|s| !cohorts.iter().any(|c| c.slug == **s)) {
            choices.push(CohortChoice {
                slug: (*slug).to_owned(),
                title: "(not in the catalog)".to_owned(),
                tier: String::new(),
                checked: true,
                justification: value(pairs, &format!("justification.{slug}")).to_owned(),
                justification_name: format!("justification.{slug}"),
            });
        }
        let purpose = value(pairs, "purpose");
        Self {
            title: value(pairs, "title").to_owned(),
            lay_summary: value(pairs, "lay_summary").to_owned(),
            rationale: value(pairs, "rationale").to_owned(),
            methods: value(pairs, "methods").to_owned(),
            data_security: value(pairs, "data_security").to_owned(),
            public_interest: value(pairs, "public_interest").to_owned(),
            cohorts: choices,
            fields: value(pairs, "fields").to_owned(),
            categories: value(pairs, "categories").to_owned(),
            modalities: value(pairs, "modalities").to_owned(),
            annotation_kinds: value(pairs, "annotation_kinds").to_owned(),
            imaging: checked(pairs, "imaging"),
            purposes: PURPOSES
                .iter()
                .map(|(code, label)| (*code, *label, purpose == *code || (purpose.is_empty() && *code == "HMB")))
                .collect(),
            diseases: value(pairs, "diseases").to_owned(),
            commercial: checked(pairs, "commercial"),
            methods_development: checked(pairs, "methods_development"),
            genetic: checked(pairs, "genetic"),
            ethics_approval: value(pairs, "ethics_approval").to_owned(),
            duration_months: value(pairs, "duration_months").to_owned(),
            processing_countries: value(pairs, "processing_countries").to_owned(),
        }
    }
}

/// The form's fields for `content`, as a browser would send them.
fn content_pairs(content: &ApplicationContent) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = [
        ("title", content.title.clone()),
        ("lay_summary", content.lay_summary.clone()),
        ("rationale", content.rationale.clone()),
        ("methods", content.methods.clone()),
        ("data_security", content.data_security.clone()),
        ("public_interest", content.public_interest.clone()),
        ("fields", content.scope.fields.join(", ")),
        ("categories", content.scope.categories.join(", ")),
        ("modalities", content.scope.modalities.join(", ")),
        ("annotation_kinds", content.scope.annotation_kinds.join(", ")),
        ("imaging", if content.scope.imaging { "on".into() } else { String::new() }),
        (
            "purpose",
            serde_json::to_value(content.intended_use.purpose)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
        ("diseases", content.intended_use.diseases.join(", ")),
        ("commercial", if content.intended_use.commercial { "on".into() } else { String::new() }),
        ("methods_development", if content.intended_use.methods_development { "on".into() } else { String::new() }),
        ("genetic", if content.intended_use.genetic { "on".into() } else { String::new() }),
        ("ethics_approval", content.intended_use.ethics_approval.clone().unwrap_or_default()),
        ("duration_months", content.intended_use.duration_months.to_string()),
        ("processing_countries", content.intended_use.processing_countries.join(", ")),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect();
    pairs.extend(content.scope.cohorts.iter().map(|c| ("cohort".to_owned(), c.clone())));
    pairs.extend(content.justifications.iter().map(|(slug, text)| (format!("justification.{slug}"), text.clone())));
    pairs
}

/// The application content the form describes, or what keeps it from being one.
fn parse_content(pairs: &[(String, String)]) -> Result<ApplicationContent, ApiError> {
    let duration = value(pairs, "duration_months").trim();
    let duration_months: u32 = if duration.is_empty() {
        0
    } else {
        duration
            .parse()
            .map_err(|_| ApiError::BadRequest("the duration is a whole number of months, such as 24".into()))?
    };
    let cohorts: Vec<&str> = pairs.iter().filter(|(n, _)| n == "cohort").map(|(_, v)| v.as_str()).collect();
    let justifications: serde_json::Map<String, Value> = pairs
        .iter()
        .filter_map(|(n, v)| n.strip_prefix("justification.").map(|slug| (slug, v)))
        .filter(|(slug, text)| cohorts.contains(slug) && !text.trim().is_empty())
        .map(|(slug, text)| (slug.to_owned(), json!(text)))
        .collect();
    let ethics = value(pairs, "ethics_approval").trim();
    let content = json!({
        "title": value(pairs, "title"),
        "lay_summary": value(pairs, "lay_summary"),
        "rationale": value(pairs, "rationale"),
        "methods": value(pairs, "methods"),
        "data_security": value(pairs, "data_security"),
        "public_interest": value(pairs, "public_interest"),
        "scope": {
            "cohorts": cohorts,
            "fields": words_of(value(pairs, "fields")),
            "categories": words_of(value(pairs, "categories")),
            "modalities": words_of(value(pairs, "modalities")),
            "annotation_kinds": words_of(value(pairs, "annotation_kinds")),
            "imaging": checked(pairs, "imaging"),
        },
        "intended_use": {
            "purpose": if value(pairs, "purpose").is_empty() { "HMB" } else { value(pairs, "purpose") },
            "diseases": words_of(value(pairs, "diseases")),
            "commercial": checked(pairs, "commercial"),
            "methods_development": checked(pairs, "methods_development"),
            "genetic": checked(pairs, "genetic"),
            "ethics_approval": if ethics.is_empty() { Value::Null } else { json!(ethics) },
            "duration_months": duration_months,
            "processing_countries": words_of(value(pairs, "processing_countries")),
        },
        "justifications": justifications,
    });
    serde_json::from_value(content).map_err(|e| ApiError::BadRequest(format!("the form cannot be read: {e}")))
}

// ------------------------------------------------------------------ the check

struct RuleView {
    code: &'static str,
    outcome: &'static str,
    explanation: String,
}

struct CohortCheckView {
    cohort: String,
    tier: String,
    verdict: &'static str,
    /// `permitted`, `conditions` or `blocked`, for the style.
    verdict_class: &'static str,
    rules: Vec<RuleView>,
    justified: bool,
    /// Subjects, studies, series, instances as shown (none: not counted).
    counts: Option<[String; 4]>,
}

/// The check of a draft as the pages show it.
pub(super) struct CheckView {
    cohorts: Vec<CohortCheckView>,
    problems: Vec<String>,
    can_submit: bool,
    auto_approval: bool,
}

fn count_text(n: Option<i64>) -> String {
    n.map_or_else(|| "too few to show".to_owned(), |n| n.to_string())
}

pub(super) fn check_view(result: CheckResult) -> CheckView {
    CheckView {
        cohorts: result
            .cohorts
            .into_iter()
            .map(|c| CohortCheckView {
                tier: serde_json::to_value(c.tier).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                verdict: match c.verdict {
                    Verdict::Permitted => "Permitted by the consent terms",
                    Verdict::PermittedWithConditions => "Permitted with conditions",
                    Verdict::NotPermitted => "Not permitted by the consent terms",
                },
                verdict_class: match c.verdict {
                    Verdict::Permitted => "permitted",
                    Verdict::PermittedWithConditions => "conditions",
                    Verdict::NotPermitted => "blocked",
                },
                rules: c
                    .rules
                    .into_iter()
                    .map(|r| RuleView {
                        code: r.code,
                        outcome: match r.outcome {
                            Outcome::Pass => "passes",
                            Outcome::Condition => "condition",
                            Outcome::Fail => "blocks",
                        },
                        explanation: r.explanation,
                    })
                    .collect(),
                justified: c.justified,
                counts: c.feasibility.map(|f| {
                    [count_text(f.subjects), count_text(f.studies), count_text(f.series), count_text(f.instances)]
                }),
                cohort: c.cohort,
            })
            .collect(),
        problems: result.problems.iter().map(problem_text).collect(),
        can_submit: result.can_submit,
        auto_approval: result.auto_approval,
    }
}

/// The check of the form's content, or what keeps the form from being checked.
async fn check_form(
    state: &AppState,
    principal: &Principal,
    pairs: &[(String, String)],
) -> Result<Result<CheckView, String>, WebError> {
    let content = match parse_content(pairs) {
        Ok(content) => content,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let result = applications::check(&state.db, &state.discovery, &state.config, principal, &content).await?;
    Ok(Ok(check_view(result)))
}

#[derive(Template)]
#[template(path = "application_check.html", config = "src/web/askama.toml")]
struct CheckFragment {
    check: Option<CheckView>,
    check_problem: Option<String>,
}

/// The check of the form as it stands, as an HTML fragment for the form's
/// script: feasibility counts are the visitor's discovery queries, under the
/// same disclosure control and daily budget as the API's check.
async fn check_fragment(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let (check, check_problem) = match check_form(&state, principal, &pairs).await? {
        Ok(check) => (Some(check), None),
        Err(problem) => (None, Some(problem)),
    };
    Ok(render(&CheckFragment { check, check_problem }))
}

// ------------------------------------------------------------------ the list

struct ApplicationRowView {
    id: Uuid,
    project: String,
    title: String,
    state: String,
    version: i32,
    age: String,
    due: String,
}

struct ProjectChoice {
    id: Uuid,
    title: String,
}

#[derive(Template)]
#[template(path = "applications.html", config = "src/web/askama.toml")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<ApplicationRowView>,
    /// Projects the visitor leads, where a new application can start.
    led: Vec<ProjectChoice>,
}

fn age(app: &Application) -> String {
    let since = app.application.submitted_at.unwrap_or(app.application.created_at);
    let days = (Utc::now() - since).num_days();
    let what = if app.application.submitted_at.is_some() { "submitted" } else { "started" };
    match days {
        0 => format!("{what} today"),
        1 => format!("{what} 1 day ago"),
        n => format!("{what} {n} days ago"),
    }
}

async fn list(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut rows = Vec::new();
    let mut led = Vec::new();
    let mut conn = state.db.acquire().await?;
    for (project, standing) in readable_projects(&state, principal).await? {
        if standing == Standing::Member(MemberRole::Pi) && project.closed_at.is_none() {
            led.push(ProjectChoice { id: project.id, title: project.title.clone() });
        }
        for app in applications::list(&mut conn, standing, project.id).await? {
            rows.push(ApplicationRowView {
                id: app.application.id,
                project: project.title.clone(),
                title: app.application.draft.title.clone(),
                state: words(app.application.state.as_str()),
                version: app.application.version,
                age: age(&app),
                due: app.application.due_on.map(|d| d.to_string()).unwrap_or_default(),
            });
        }
    }
    Ok(render(&ListPage { chrome: Chrome::new(&visitor, "applications"), rows, led }))
}

// ------------------------------------------------------------------ a new application

#[derive(Template)]
#[template(path = "application_new.html", config = "src/web/askama.toml")]
struct NewPage {
    chrome: Chrome,
    project_id: Uuid,
    project: String,
    form: FormView,
    check: Option<CheckView>,
    check_problem: Option<String>,
    refusal: Option<Refused>,
}

#[derive(Debug, Deserialize)]
struct NewQuery {
    #[serde(default)]
    project: String,
}

/// The project a new application is for, if the visitor is its PI (the rule
/// [`applications::create`] applies again when the form is saved).
async fn led_project(state: &AppState, principal: &Principal, id: &str) -> Result<(Uuid, String), WebError> {
    let id = parse_id(id, "project")?;
    standing(&state.db, id, principal).await?.require_pi("project", "only the project's PI starts its applications")?;
    Ok((id, project_title(state, id).await?))
}

async fn new_form(State(state): State<AppState>, visitor: Visitor, Query(query): Query<NewQuery>) -> PageResult {
    let principal = visitor.signed_in()?;
    let (project_id, project) = led_project(&state, principal, &query.project).await?;
    let cohorts = crate::registry::db::list_cohorts(&state.db).await?;
    let defaults =
        [("imaging", "on"), ("duration_months", "24"), ("purpose", "HMB")].map(|(n, v)| (n.to_owned(), v.to_owned()));
    Ok(render(&NewPage {
        chrome: Chrome::new(&visitor, "applications"),
        project_id,
        project,
        form: FormView::new(&defaults, &cohorts),
        check: None,
        check_problem: None,
        refusal: None,
    }))
}

/// Saves the form as a new draft, or (`action=check`) shows it again with its check.
async fn create(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let (project_id, project) = led_project(&state, principal, value(&pairs, "project")).await?;
    let cohorts = crate::registry::db::list_cohorts(&state.db).await?;
    let mut page = NewPage {
        chrome: Chrome::new(&visitor, "applications"),
        project_id,
        project,
        form: FormView::new(&pairs, &cohorts),
        check: None,
        check_problem: None,
        refusal: None,
    };
    if value(&pairs, "action") == "check" {
        match check_form(&state, principal, &pairs).await? {
            Ok(check) => page.check = Some(check),
            Err(problem) => page.check_problem = Some(problem),
        }
        return Ok(render(&page));
    }
    let content = match parse_content(&pairs) {
        Ok(content) => content,
        Err(e) => {
            page.refusal = Some(refused(e)?);
            return Ok((StatusCode::BAD_REQUEST, render(&page)).into_response());
        }
    };
    let mut tx = state.db.begin().await?;
    let created = applications::create(&mut tx, principal, project_id, &content).await?;
    tx.commit().await?;
    Ok(back(created.application.id, "created"))
}

// ------------------------------------------------------------------ one application

struct TransitionView {
    from: String,
    to: String,
    actor: String,
    reason: String,
    at: String,
}

struct CommentView {
    author: String,
    at: String,
    body: String,
    internal: bool,
    edited: bool,
    reply: bool,
}

struct ChangeView {
    path: String,
    before: String,
    after: String,
}

struct DiffView {
    from: i32,
    to: i32,
    changes: Vec<ChangeView>,
}

struct VoteView {
    version: i32,
    steward: String,
    vote: String,
    conditions: Vec<String>,
    comment: String,
    at: String,
}

fn shown(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "(none)".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "(none)".to_owned(),
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned)).collect::<Vec<_>>().join(", ")
        }
        Some(other) => other.to_string(),
    }
}

pub(super) fn condition_lines(c: &Conditions) -> Vec<String> {
    let mut lines = c.text.clone();
    if let Some(end) = c.expires_on {
        lines.push(format!("Ends on {end} at the latest."));
    }
    if c.no_imaging_download {
        lines.push("Imaging may be analysed where it is, not downloaded.".to_owned());
    }
    if c.annual_report {
        lines.push("An annual progress report is due.".to_owned());
    }
    if let Some(fields) = &c.allowed_fields {
        lines.push(format!("Only these fields may be released: {}.", fields.join(", ")));
    }
    lines
}

/// What both views of an application show.
struct Common {
    app: Application,
    project: String,
    history: Vec<TransitionView>,
    comments: Vec<CommentView>,
    votes: Option<Vec<VoteView>>,
    diff: Option<DiffView>,
    /// The grant the approval made, once approved.
    grant: Option<Uuid>,
}

async fn common(state: &AppState, principal: &Principal, id: Uuid) -> Result<Common, WebError> {
    let mut conn = state.db.acquire().await?;
    let app = applications::get(&mut conn, principal, id).await?;
    let comments = review::comments(&mut conn, principal, id)
        .await?
        .into_iter()
        .map(|c| CommentView {
            edited: c.revisions.len() > 1,
            reply: c.parent_id.is_some(),
            author: c.author,
            at: when(c.created_at),
            body: c.body,
            internal: c.internal,
        })
        .collect();
    let votes = match review::votes(&mut conn, principal, id).await {
        Ok(votes) => Some(
            votes
                .into_iter()
                .map(|v| VoteView {
                    version: v.version,
                    steward: v.steward,
                    vote: words(&v.vote),
                    conditions: v.conditions.as_ref().map(condition_lines).unwrap_or_default(),
                    comment: v.comment.unwrap_or_default(),
                    at: when(v.at),
                })
                .collect(),
        ),
        Err(ApiError::Forbidden(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let diff = if app.application.version >= 2 {
        let d = applications::diff(&mut conn, principal, id, None, None).await?;
        Some(DiffView {
            from: d.from,
            to: d.to,
            changes: d
                .changes
                .iter()
                .map(|c| ChangeView {
                    path: c.path.clone(),
                    before: shown(c.before.as_ref()),
                    after: shown(c.after.as_ref()),
                })
                .collect(),
        })
    } else {
        None
    };
    drop(conn);
    let grant = if matches!(app.application.state, ApplicationState::Approved | ApplicationState::Active) {
        grants::of_project(&state.db, app.application.project_id)
            .await?
            .into_iter()
            .find(|g| g.application_id == id)
            .map(|g| g.id)
    } else {
        None
    };
    let history = app
        .history
        .iter()
        .map(|t| TransitionView {
            from: words(t.from.as_str()),
            to: words(t.to.as_str()),
            actor: t.actor.clone(),
            reason: t.reason.clone().unwrap_or_default(),
            at: when(t.at),
        })
        .collect();
    let project = project_title(state, app.application.project_id).await?;
    Ok(Common { app, project, history, comments, votes, diff, grant })
}

/// The content of an application as a list of labelled values.
fn content_facts(c: &ApplicationContent) -> Vec<(&'static str, String)> {
    let u = &c.intended_use;
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    vec![
        ("Title", c.title.clone()),
        ("Lay summary", c.lay_summary.clone()),
        ("Rationale", c.rationale.clone()),
        ("Methods", c.methods.clone()),
        ("Cohorts", c.scope.cohorts.join(", ")),
        ("Fields", c.scope.fields.join(", ")),
        ("Categories", c.scope.categories.join(", ")),
        (
            "Modalities",
            if c.scope.modalities.is_empty() { "every modality".into() } else { c.scope.modalities.join(", ") },
        ),
        ("Annotation kinds", c.scope.annotation_kinds.join(", ")),
        ("Imaging requested", yes(c.scope.imaging)),
        ("Purpose", shown(serde_json::to_value(u.purpose).ok().as_ref())),
        ("Diseases studied", u.diseases.join(", ")),
        ("Commercial use", yes(u.commercial)),
        ("Methods development", yes(u.methods_development)),
        ("Genetic research", yes(u.genetic)),
        ("Ethics approval", u.ethics_approval.clone().unwrap_or_else(|| "none declared".into())),
        ("Duration", format!("{} months", u.duration_months)),
        ("Processing countries", u.processing_countries.join(", ")),
        ("Data security", c.data_security.clone()),
        ("Public interest", c.public_interest.clone()),
        ("Justifications", c.justifications.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ")),
    ]
}

#[derive(Template)]
#[template(path = "application.html", config = "src/web/askama.toml")]
struct DetailPage {
    chrome: Chrome,
    c: Common,
    state: String,
    facts: Vec<(&'static str, String)>,
    is_pi: bool,
    withdrawable: bool,
    form: Option<FormView>,
    check: Option<CheckView>,
    check_problem: Option<String>,
    refusal: Option<Refused>,
    /// A change saved or a step taken, named by the redirect.
    done: Option<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DoneQuery {
    #[serde(default)]
    pub done: String,
}

fn done_message(key: &str) -> Option<&'static str> {
    Some(match key {
        "created" => "The draft is saved. Check it, then submit it to the committee.",
        "saved" => "Your changes are saved in the draft.",
        "submitted" => "Submitted: the committee has been told.",
        "withdrawn" => "The application is withdrawn.",
        "commented" => "Your comment is added.",
        "started" => "The application is under review and you are assigned.",
        "assigned" => "The steward is assigned.",
        "declared" => "Your declaration of interests is recorded.",
        "voted" => "Your vote is recorded.",
        "accepted" => "You accepted the data use agreement: the grant is active.",
        _ => return None,
    })
}

/// What the detail page shows beyond the application.
#[derive(Default)]
struct Extras {
    pairs: Option<Vec<(String, String)>>,
    check: Option<CheckView>,
    check_problem: Option<String>,
    refusal: Option<Refused>,
    done: Option<&'static str>,
}

async fn detail_page(state: &AppState, visitor: &Visitor, id: Uuid, extras: Extras) -> PageResult {
    let principal = visitor.signed_in()?;
    let c = common(state, principal, id).await?;
    let is_pi = standing(&state.db, c.app.application.project_id, principal).await? == Standing::Member(MemberRole::Pi);
    let app_state = c.app.application.state;
    let editable = is_pi && app_state.editable();
    let form = if editable {
        let cohorts = crate::registry::db::list_cohorts(&state.db).await?;
        let pairs = extras.pairs.unwrap_or_else(|| content_pairs(&c.app.application.draft));
        Some(FormView::new(&pairs, &cohorts))
    } else {
        None
    };
    let status = if extras.refusal.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let page = DetailPage {
        chrome: Chrome::new(visitor, "applications"),
        state: words(app_state.as_str()),
        facts: content_facts(&c.app.application.draft),
        is_pi,
        withdrawable: is_pi && (app_state.pending() || app_state == ApplicationState::Draft),
        form,
        check: extras.check,
        check_problem: extras.check_problem,
        refusal: extras.refusal,
        done: extras.done,
        c,
    };
    Ok((status, render(&page)).into_response())
}

async fn detail(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(query): Query<DoneQuery>,
) -> PageResult {
    let id = parse_id(&id, "application")?;
    detail_page(&state, &visitor, id, Extras { done: done_message(&query.done), ..Extras::default() }).await
}

fn back(id: Uuid, done: &str) -> Response {
    Redirect::to(&format!("/ui/applications/{id}?done={done}")).into_response()
}

/// Saves the edited draft, or (`action=check`) shows the page again with the
/// check of the form as it stands.
async fn edit(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "application")?;
    if value(&pairs, "action") == "check" {
        applications::visible(&mut *state.db.acquire().await?, principal, id).await?;
        let mut extras = Extras::default();
        match check_form(&state, principal, &pairs).await? {
            Ok(check) => extras.check = Some(check),
            Err(problem) => extras.check_problem = Some(problem),
        }
        extras.pairs = Some(pairs);
        return detail_page(&state, &visitor, id, extras).await;
    }
    let content = match parse_content(&pairs) {
        Ok(content) => content,
        Err(e) => {
            let extras = Extras { refusal: Some(refused(e)?), pairs: Some(pairs), ..Extras::default() };
            return detail_page(&state, &visitor, id, extras).await;
        }
    };
    let mut tx = state.db.begin().await?;
    match applications::update(&mut tx, principal, id, &content).await {
        Ok(_) => tx.commit().await?,
        Err(e) => {
            drop(tx);
            let extras = Extras { refusal: Some(refused(e)?), pairs: Some(pairs), ..Extras::default() };
            return detail_page(&state, &visitor, id, extras).await;
        }
    }
    Ok(back(id, "saved"))
}

async fn submit(State(state): State<AppState>, visitor: Visitor, Path(id): Path<String>) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "application")?;
    let outcome = async {
        // As the API does: the check runs before the transaction, its feasibility counts commit on their own.
        let checked = applications::check_submission(&state.db, &state.discovery, &state.config, principal, id).await?;
        let mut tx = state.db.begin().await?;
        applications::submit(&mut tx, principal, &state.config.access, &state.ingest.key, checked).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match outcome {
        Ok(()) => Ok(back(id, "submitted")),
        Err(e) => detail_page(&state, &visitor, id, Extras { refusal: Some(refused(e)?), ..Extras::default() }).await,
    }
}

#[derive(Debug, Deserialize)]
struct WithdrawForm {
    #[serde(default)]
    reason: String,
}

async fn withdraw(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<WithdrawForm>,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "application")?;
    let mut tx = state.db.begin().await?;
    applications::withdraw(&mut tx, principal, id, Some(&form.reason)).await?;
    tx.commit().await?;
    Ok(back(id, "withdrawn"))
}

#[derive(Debug, Deserialize)]
struct CommentForm {
    #[serde(default)]
    body: String,
    #[serde(default)]
    internal: Option<String>,
}

async fn add_comment(state: &AppState, principal: &Principal, id: Uuid, form: &CommentForm) -> Result<(), WebError> {
    let new = NewComment { body: &form.body, parent_id: None, internal: form.internal.is_some() };
    let mut tx = state.db.begin().await?;
    review::comment(&mut tx, principal, id, new).await?;
    tx.commit().await?;
    Ok(())
}

async fn comment(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<CommentForm>,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "application")?;
    add_comment(&state, principal, id, &form).await?;
    Ok(back(id, "commented"))
}

// ------------------------------------------------------------------ the steward's review

struct AssignmentView {
    steward: String,
    assigned_by: String,
    at: String,
    declared: bool,
    recused: String,
}

#[derive(Template)]
#[template(path = "review.html", config = "src/web/askama.toml")]
#[allow(clippy::struct_excessive_bools)] // each says which of the page's forms to show
struct ReviewPage {
    chrome: Chrome,
    c: Common,
    state: String,
    facts: Vec<(&'static str, String)>,
    check: Option<CheckView>,
    check_problem: Option<String>,
    assignments: Vec<AssignmentView>,
    /// Whether the visitor is assigned, not recused, and has declared.
    declared: bool,
    assigned: bool,
    submitted: bool,
    under_review: bool,
    done: Option<&'static str>,
}

async fn review_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(query): Query<DoneQuery>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    review::steward(principal)?;
    let id = parse_id(&id, "application")?;
    let c = common(&state, principal, id).await?;
    let assignments = review::assignments_of(&mut *state.db.acquire().await?, principal, id).await?;
    let mine = assignments.iter().find(|a| a.steward == principal.username && a.recused_at.is_none());
    let check = check_view(applications::check_draft(&state.db, &state.discovery, &state.config, principal, id).await?);
    let app_state = c.app.application.state;
    Ok(render(&ReviewPage {
        chrome: Chrome::new(&visitor, "steward"),
        state: words(app_state.as_str()),
        facts: content_facts(&c.app.application.draft),
        check: Some(check),
        check_problem: None,
        assigned: mine.is_some(),
        declared: mine.is_some_and(|a| a.declared),
        assignments: assignments
            .into_iter()
            .map(|a| AssignmentView {
                recused: match (a.recused_at, a.recusal_reason) {
                    (Some(at), reason) => format!("recused {} ({})", when(at), reason.unwrap_or_default()),
                    (None, _) => String::new(),
                },
                steward: a.steward,
                assigned_by: a.assigned_by,
                at: when(a.assigned_at),
                declared: a.declared,
            })
            .collect(),
        submitted: app_state == ApplicationState::Submitted,
        under_review: app_state == ApplicationState::UnderReview,
        done: done_message(&query.done),
        c,
    }))
}

fn reviewed(id: Uuid, done: &str) -> Response {
    Redirect::to(&format!("/ui/steward/applications/{id}?done={done}")).into_response()
}

async fn start_review(State(state): State<AppState>, visitor: Visitor, Path(id): Path<String>) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "application")?;
    let mut tx = state.db.begin().await?;
    review::start(&mut tx, principal, &state.config.access, id).await?;
    tx.commit().await?;
    Ok(reviewed(id, "started"))
}

#[derive(Debug, Deserialize)]
struct AssignForm {
    #[serde(default)]
    steward: String,
}

async fn assign(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<AssignForm>,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "application")?;
    let mut tx = state.db.begin().await?;
    review::assign(&mut tx, principal, &state.config.access, id, &form.steward).await?;
    tx.commit().await?;
    Ok(reviewed(id, "assigned"))
}

#[derive(Debug, Deserialize)]
struct DeclareForm {
    #[serde(default)]
    conflict: Option<String>,
    #[serde(default)]
    statement: String,
}

async fn declare(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<DeclareForm>,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "application")?;
    let mut tx = state.db.begin().await?;
    review::declare(&mut tx, principal, id, form.conflict.is_some(), &form.statement).await?;
    tx.commit().await?;
    Ok(reviewed(id, "declared"))
}

#[derive(Debug, Deserialize)]
struct VoteForm {
    #[serde(default)]
    vote: String,
    #[serde(default)]
    comment: String,
    /// One condition a line.
    #[serde(default)]
    conditions: String,
    #[serde(default)]
    expires_on: String,
    #[serde(default)]
    annual_report: Option<String>,
    #[serde(default)]
    no_imaging_download: Option<String>,
}

fn ballot_kind(vote: &str) -> Result<VoteKind, ApiError> {
    serde_json::from_value(json!(vote)).map_err(|_| {
        ApiError::BadRequest("choose a vote: approve, approve with conditions, request changes or reject".into())
    })
}

fn ballot_conditions(form: &VoteForm) -> Result<Conditions, ApiError> {
    let expires_on = match form.expires_on.trim() {
        "" => None,
        day => Some(
            day.parse::<NaiveDate>()
                .map_err(|_| ApiError::BadRequest("the end date is a date such as 2027-12-31".into()))?,
        ),
    };
    Ok(Conditions {
        text: form.conditions.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect(),
        allowed_fields: None,
        no_imaging_download: form.no_imaging_download.is_some(),
        expires_on,
        annual_report: form.annual_report.is_some(),
    })
}

async fn vote(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<VoteForm>,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "application")?;
    let kind = ballot_kind(&form.vote)?;
    let conditions = if kind == VoteKind::ApproveWithConditions { Some(ballot_conditions(&form)?) } else { None };
    let ballot = Ballot { vote: kind, conditions, comment: Some(&form.comment) };
    let mut tx = state.db.begin().await?;
    review::vote(&mut tx, principal, &state.config.access, &state.ingest.key, id, ballot).await?;
    tx.commit().await?;
    Ok(reviewed(id, "voted"))
}

async fn steward_comment(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<CommentForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    review::steward(principal)?;
    let id = parse_id(&id, "application")?;
    add_comment(&state, principal, id, &form).await?;
    Ok(reviewed(id, "commented"))
}
