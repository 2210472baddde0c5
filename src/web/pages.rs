//! The public pages and sign-in. Each page calls the service function its
//! REST twin calls, with the session's principal where the API would take
//! the bearer's.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::chart::{self, Chart};
use super::{Chrome, Visitor, WebError, render, session};
use crate::app::AppState;
use crate::error::ApiError;
use crate::opencohort::challenge::{self, LeaderboardQuery};
use crate::opencohort::publish::{self, Landing, PublishedVersion};

type PageResult = Result<Response, WebError>;

#[derive(Template)]
#[template(path = "home.html", config = "src/web/askama.toml")]
struct HomePage {
    chrome: Chrome,
    open_cohorts: usize,
}

pub async fn home(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let open_cohorts = publish::published(&state.db).await?.len();
    Ok(render(&HomePage { chrome: Chrome::new(&visitor, "home"), open_cohorts }))
}

// ------------------------------------------------------------------ open cohorts

#[derive(Template)]
#[template(path = "open_cohorts.html", config = "src/web/askama.toml")]
struct OpenCohortsPage {
    chrome: Chrome,
    cohorts: Vec<Landing>,
}

pub async fn open_cohorts(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let cohorts = publish::published(&state.db).await?;
    Ok(render(&OpenCohortsPage { chrome: Chrome::new(&visitor, "open-cohorts"), cohorts }))
}

/// One published version as the landing page shows it.
struct VersionView {
    version: i32,
    extract_id: String,
    published: String,
    labels_revealed: bool,
    splits: Vec<(String, i64)>,
    size: String,
    fetch_command: String,
}

/// A leaderboard row, its scores formatted.
struct LeaderRow {
    rank: usize,
    name: String,
    kind: String,
    primary: String,
    submissions: i64,
    submitted: String,
    description: String,
}

enum LeaderboardView {
    Shown {
        version: i32,
        primary_metric: String,
        closed: bool,
        rows: Vec<LeaderRow>,
    },
    /// Sealed until the close: the service's message says when.
    Sealed(String),
    /// No version with hidden test labels: nothing to rank.
    Absent,
}

#[derive(Template)]
#[template(path = "landing.html", config = "src/web/askama.toml")]
struct LandingPage {
    chrome: Chrome,
    cohort: Landing,
    task: String,
    versions: Vec<VersionView>,
    /// Breakdowns of the newest version.
    charts: Vec<Chart>,
    leaderboard: LeaderboardView,
}

pub(super) fn server_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.release.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
    format!("http://{host}")
}

pub(super) fn human_bytes(bytes: Option<i64>) -> String {
    let Some(bytes) = bytes else { return "size not known yet".to_owned() };
    #[allow(clippy::cast_precision_loss)]
    let value = bytes as f64;
    if bytes < 1_000 {
        format!("{bytes} bytes")
    } else if bytes < 1_000_000 {
        format!("{:.1} kB", value / 1e3)
    } else if bytes < 1_000_000_000 {
        format!("{:.1} MB", value / 1e6)
    } else {
        format!("{:.2} GB", value / 1e9)
    }
}

fn version_view(v: &PublishedVersion, server: &str, slug: &str) -> VersionView {
    let files = v.files.map_or_else(String::new, |f| format!("{f} files, "));
    VersionView {
        version: v.version,
        extract_id: v.extract_id.to_string(),
        published: v.published_at.map_or_else(|| "not yet".to_owned(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
        labels_revealed: v.labels_revealed,
        splits: v.splits.iter().map(|(k, n)| (k.clone(), *n)).collect(),
        size: format!("{files}{}", human_bytes(v.bytes)),
        fetch_command: format!(
            "custodian fetch --server {server} --extract {} --out {slug}-v{}",
            v.extract_id, v.version
        ),
    }
}

fn metric_text(entry: &challenge::LeaderboardEntry, metric: &str) -> String {
    let Some(m) = entry.scores.overall.iter().find(|m| m.metric == metric) else { return "—".to_owned() };
    match (m.value, m.ci_low, m.ci_high) {
        (Some(v), Some(lo), Some(hi)) => format!("{v:.3} (95% interval {lo:.3}–{hi:.3})"),
        (Some(v), _, _) => format!("{v:.3}"),
        (None, _, _) => "undefined".to_owned(),
    }
}

pub async fn landing(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> PageResult {
    let cohort = publish::landing(&state.db, &slug).await?;
    let server = server_url(&state, &headers);
    let versions = cohort.versions.iter().map(|v| version_view(v, &server, &cohort.slug)).collect();
    let charts = cohort.versions.first().map(|v| chart::breakdowns(&v.breakdowns)).unwrap_or_default();
    let mut conn = state.db.acquire().await?;
    let leaderboard =
        match challenge::leaderboard(&mut conn, visitor.principal(), &slug, &LeaderboardQuery::default()).await {
            Ok(board) => LeaderboardView::Shown {
                version: board.version,
                closed: board.closed,
                rows: board
                    .entries
                    .iter()
                    .map(|e| LeaderRow {
                        rank: e.rank,
                        name: e.name.clone(),
                        kind: e.kind.clone(),
                        primary: metric_text(e, &board.primary_metric),
                        submissions: e.submissions,
                        submitted: e.submitted_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                        description: e.description.clone().unwrap_or_default(),
                    })
                    .collect(),
                primary_metric: board.primary_metric,
            },
            Err(ApiError::Refused { message, .. }) => LeaderboardView::Sealed(message),
            Err(ApiError::NotFound(_)) => LeaderboardView::Absent,
            Err(error) => return Err(error.into()),
        };
    let task = match &cohort.task {
        Some(crate::opencohort::curate::Task::Classification { system, codes }) => {
            format!("Classification: one label per subject among {} ({system})", codes.join(", "))
        }
        Some(crate::opencohort::curate::Task::Segmentation { system, code }) => {
            format!("Segmentation: one mask per series of {code} ({system})")
        }
        None => "No task is set.".to_owned(),
    };
    Ok(render(&LandingPage {
        chrome: Chrome::new(&visitor, "open-cohorts"),
        cohort,
        task,
        versions,
        charts,
        leaderboard,
    }))
}

// ------------------------------------------------------------------ the data dictionary

#[derive(Debug, Default, Deserialize)]
pub struct DictionaryQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    category: String,
}

struct FieldRow {
    id: String,
    title: String,
    description: String,
    category: String,
    value_type: String,
    unit: String,
    code: String,
    coverage: Vec<(String, Option<i64>)>,
}

#[derive(Template)]
#[template(path = "dictionary.html", config = "src/web/askama.toml")]
struct DictionaryPage {
    chrome: Chrome,
    q: String,
    category: String,
    categories: Vec<String>,
    total: usize,
    fields: Vec<FieldRow>,
    exact_counts: bool,
}

/// A value's serde name (`kebab-case` enums), for display.
fn serde_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

pub async fn dictionary(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<DictionaryQuery>,
) -> PageResult {
    let all = crate::http::fields::entries(&state, visitor.principal(), None).await?;
    let mut categories: Vec<String> = all.fields.iter().map(|e| e.field.category.clone()).collect();
    categories.sort();
    categories.dedup();
    let words: Vec<String> = query.q.split_whitespace().map(str::to_lowercase).collect();
    let total = all.fields.len();
    let fields = all
        .fields
        .into_iter()
        .filter(|e| query.category.is_empty() || e.field.category == query.category)
        .filter(|e| {
            let f = &e.field;
            let text =
                format!("{} {} {} {}", f.id, f.title, f.description, f.code.as_deref().unwrap_or("")).to_lowercase();
            words.iter().all(|w| text.contains(w.as_str()))
        })
        .map(|e| FieldRow {
            coverage: e.coverage.iter().map(|c| (c.cohort.clone(), c.subjects)).collect(),
            id: e.field.id,
            title: e.field.title,
            description: e.field.description,
            category: e.field.category,
            value_type: serde_name(&e.field.value_type),
            unit: e.field.unit.unwrap_or_default(),
            code: match (e.field.coding_system, e.field.code) {
                (Some(system), Some(code)) => format!("{system} {code}"),
                (_, Some(code)) => code,
                (Some(system), None) => system,
                (None, None) => String::new(),
            },
        })
        .collect();
    Ok(render(&DictionaryPage {
        chrome: Chrome::new(&visitor, "dictionary"),
        q: query.q,
        category: query.category,
        categories,
        total,
        fields,
        exact_counts: all.exact_counts,
    }))
}

// ------------------------------------------------------------------ de-identification

struct AttributeRow {
    tag: String,
    name: String,
    basic: String,
    option: String,
    action: String,
}

#[derive(Template)]
#[template(path = "deid.html", config = "src/web/askama.toml")]
struct DeidPage {
    chrome: Chrome,
    statement: crate::http::deid::DeidProfileResponse,
    missing_patient_id: String,
    attributes: Vec<AttributeRow>,
}

pub async fn deid(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let statement = crate::http::deid::statement(&state.config);
    let attributes = statement
        .attributes
        .iter()
        .map(|r| AttributeRow {
            tag: r.tag.clone(),
            name: r.name.clone(),
            basic: r.basic.clone(),
            option: r.option.as_ref().map(serde_name).unwrap_or_default(),
            action: serde_name(&r.action),
        })
        .collect();
    Ok(render(&DeidPage {
        chrome: Chrome::new(&visitor, "deid"),
        missing_patient_id: serde_name(&statement.missing_patient_id),
        statement,
        attributes,
    }))
}

// ------------------------------------------------------------------ sign-in

#[derive(Template)]
#[template(path = "sign_in.html", config = "src/web/askama.toml")]
struct SignInPage {
    chrome: Chrome,
    problem: Option<String>,
    /// The OIDC provider's name, when single sign-on is configured.
    provider: Option<String>,
}

/// The sign-in page, saying why the last attempt signed nobody in (when
/// `problem` is given), answered with `status`. A visitor without a session
/// gets one holding the form's CSRF token.
pub(super) async fn sign_in_page(
    state: &AppState,
    visitor: &Visitor,
    status: StatusCode,
    problem: Option<String>,
) -> PageResult {
    let mut visitor = visitor.clone();
    let mut cookie = None;
    if visitor.session.is_none() {
        let mut tx = state.db.begin().await?;
        let started = session::start_visit(&mut tx).await?;
        tx.commit().await?;
        cookie = Some(session::cookie(&started, secure_cookies(state)));
        visitor.session = session::find(&state.db, &started.id).await?;
    }
    let page =
        SignInPage { chrome: Chrome::new(&visitor, "sign-in"), problem, provider: super::oidc::provider_name(state) };
    let mut response = (status, render(&page)).into_response();
    if let Some(cookie) = cookie {
        set_cookie(&mut response, &cookie);
    }
    Ok(response)
}

pub(super) fn secure_cookies(state: &AppState) -> bool {
    state.config.release.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

pub(super) fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The sign-in form.
pub async fn sign_in_form(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    sign_in_page(&state, &visitor, StatusCode::OK, None).await
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
}

pub async fn sign_in(State(state): State<AppState>, visitor: Visitor, Form(form): Form<SignInForm>) -> PageResult {
    let (principal, expiry) = match session::verify_credential(&state, &form.token).await {
        Ok(found) => found,
        Err(problem) => {
            let problem = if form.token.trim().is_empty() { "Paste a token to sign in.".to_owned() } else { problem };
            return sign_in_page(&state, &visitor, StatusCode::UNAUTHORIZED, Some(problem)).await;
        }
    };
    let mut tx = state.db.begin().await?;
    let started =
        session::sign_in(&mut tx, visitor.session.as_ref(), &principal, expiry, session::SignInMethod::Token).await?;
    tx.commit().await?;
    let mut response = Redirect::to("/").into_response();
    set_cookie(&mut response, &session::cookie(&started, secure_cookies(&state)));
    Ok(response)
}

pub async fn sign_out(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    if let Some(session) = &visitor.session {
        let mut tx = state.db.begin().await?;
        session::sign_out(&mut tx, session).await?;
        tx.commit().await?;
    }
    let mut response = Redirect::to("/").into_response();
    set_cookie(&mut response, &session::removal_cookie(secure_cookies(&state)));
    Ok(response)
}
