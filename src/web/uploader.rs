//! The uploader's pages: upload sessions with drag-and-drop, commit or
//! abort, and table imports with their problems.
//!
//! Every action calls the service function its REST twin calls
//! (`crate::http::uploads` and `crate::http::imports`) with the session's
//! principal. Files do not fit the web layer's 64 KiB form limit: the page's
//! script sends each file to a page route (`POST /ui/uploads/{id}/files`,
//! `POST /ui/uploads/imports/{kind}`) with the session's CSRF token in the
//! `X-CSRF-Token` header, and the body streams on to the same function
//! `POST /api/v1/uploads/{id}/files` (or `/api/v1/imports/{kind}`) calls,
//! under the same limits. These routes answer JSON, as the REST routes do.
//! The browser never holds a bearer token: the session cookie (HttpOnly)
//! and the CSRF header authorize the request.

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use super::organizer::Refusal;
use super::{Chrome, Visitor, WebError, render};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::imports::ImportQuery;
use crate::http::uploads::{self, CommitResponse, UploadFilesResponse};
use crate::ingest::sessions::Session;
use crate::ingest::tables::{ImportKind, ImportReport};
use crate::ingest::{FileReport, Outcome};

type PageResult = Result<Response, WebError>;

pub fn routes() -> Router<AppState> {
    let files = Router::new()
        .route("/ui/uploads/{id}/files", post(add_files))
        .route("/ui/uploads/imports/{kind}", post(import))
        // Held to `ingest.*` while they stream, as over REST.
        .layer(axum::extract::DefaultBodyLimit::disable());
    Router::new()
        .route("/ui/uploads", get(list).post(open))
        .route("/ui/uploads/imports", get(imports))
        .route("/ui/uploads/{id}", get(session))
        .route("/ui/uploads/{id}/commit", post(commit))
        .route("/ui/uploads/{id}/abort", post(abort))
        .merge(files)
}

/// The signed-in principal of a route answered in JSON.
fn caller(visitor: &Visitor) -> Result<&Principal, ApiError> {
    visitor.principal().ok_or_else(|| ApiError::Unauthorized("sign in to upload".into()))
}

/// A file's outcome in words (never by colour alone).
fn outcome_words(report: &FileReport) -> &'static str {
    match report.outcome {
        Outcome::Stored => "accepted, de-identified",
        Outcome::Duplicate => "accepted, already stored",
        Outcome::Quarantined => "quarantined for review",
        Outcome::Rejected => "rejected",
    }
}

// ------------------------------------------------------------------ sessions

#[derive(Template)]
#[template(path = "uploads.html", config = "src/web/askama.toml")]
struct ListPage {
    chrome: Chrome,
    sessions: Vec<Session>,
    cohorts: Vec<String>,
    sites: Vec<String>,
    refusal: Option<Refusal>,
}

async fn list_page(state: &AppState, visitor: &Visitor, refusal: Option<Refusal>) -> PageResult {
    let principal = visitor.signed_in()?;
    let sessions = uploads::visible(state, principal).await?;
    let cohorts = crate::registry::db::list_cohorts(&state.db).await?.into_iter().map(|c| c.slug).collect();
    let sites = crate::registry::db::list_sites(&state.db).await?.into_iter().map(|s| s.code).collect();
    let status = refusal.as_ref().map_or(StatusCode::OK, |r| r.status);
    let page = ListPage { chrome: Chrome::new(visitor, "uploads"), sessions, cohorts, sites, refusal };
    Ok((status, render(&page)).into_response())
}

async fn list(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    list_page(&state, &visitor, None).await
}

#[derive(Debug, Default, Deserialize)]
struct OpenForm {
    #[serde(default)]
    cohort: String,
    #[serde(default)]
    site: String,
}

async fn open(State(state): State<AppState>, visitor: Visitor, Form(form): Form<OpenForm>) -> PageResult {
    let principal = visitor.signed_in()?;
    match uploads::open(&state, principal, form.cohort.trim(), form.site.trim()).await {
        Ok(session) => Ok(Redirect::to(&format!("/ui/uploads/{}", session.id)).into_response()),
        Err(error) => list_page(&state, &visitor, Some(Refusal::of(error)?)).await,
    }
}

/// One line of a session's report.
struct ReportRow {
    ordinal: i32,
    outcome: &'static str,
    /// `stored`, `duplicate`, `quarantined` or `rejected`, for the stylesheet.
    class: &'static str,
    reason: String,
    sop_uid: String,
    size: i64,
}

#[derive(Template)]
#[template(path = "upload_session.html", config = "src/web/askama.toml")]
struct SessionPage {
    chrome: Chrome,
    session: Session,
    /// Whether the visitor may add files, commit or abort (theirs, or an admin's).
    writable: bool,
    stored: u32,
    duplicate: u32,
    quarantined: u32,
    rejected: u32,
    rows: Vec<ReportRow>,
    published: Option<i64>,
    refusal: Option<Refusal>,
}

#[derive(Debug, Default, Deserialize)]
struct SessionQuery {
    /// Instances the commit just published, to say so.
    #[serde(default)]
    published: Option<i64>,
}

async fn session_page(
    state: &AppState,
    visitor: &Visitor,
    id: Uuid,
    published: Option<i64>,
    refusal: Option<Refusal>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let report = uploads::report(state, principal, id).await?;
    let rows = report
        .files
        .iter()
        .map(|f| ReportRow {
            ordinal: f.ordinal,
            outcome: outcome_words(f),
            class: match f.outcome {
                Outcome::Stored => "stored",
                Outcome::Duplicate => "duplicate",
                Outcome::Quarantined => "quarantined",
                Outcome::Rejected => "rejected",
            },
            reason: match (&f.code, &f.message) {
                (Some(code), Some(message)) => format!("{message} ({code})"),
                (Some(code), None) => code.clone(),
                (None, Some(message)) => message.clone(),
                (None, None) => String::new(),
            },
            sop_uid: f.sop_uid.clone().unwrap_or_default(),
            size: f.size_bytes,
        })
        .collect();
    let writable = report.session.created_by == principal.username || principal.has_role(crate::auth::Role::Admin);
    let status = refusal.as_ref().map_or(StatusCode::OK, |r| r.status);
    let page = SessionPage {
        chrome: Chrome::new(visitor, "uploads"),
        writable,
        stored: report.counts.stored,
        duplicate: report.counts.duplicate,
        quarantined: report.counts.quarantined,
        rejected: report.counts.rejected,
        session: report.session,
        rows,
        published,
        refusal,
    };
    Ok((status, render(&page)).into_response())
}

async fn session(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<Uuid>,
    Query(query): Query<SessionQuery>,
) -> PageResult {
    session_page(&state, &visitor, id, query.published, None).await
}

/// Files for a session, sent by the page's script; answered as
/// `POST /api/v1/uploads/{id}/files` answers.
async fn add_files(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<UploadFilesResponse>, ApiError> {
    Ok(Json(uploads::add_files(&state, caller(&visitor)?, id, &headers, body).await?))
}

async fn closed(state: &AppState, visitor: &Visitor, id: Uuid, commit: bool) -> PageResult {
    let principal = visitor.signed_in()?;
    match uploads::close(state, principal, id, commit).await {
        Ok(CommitResponse { published, .. }) if commit => {
            Ok(Redirect::to(&format!("/ui/uploads/{id}?published={published}")).into_response())
        }
        Ok(_) => Ok(Redirect::to(&format!("/ui/uploads/{id}")).into_response()),
        Err(error) => session_page(state, visitor, id, None, Some(Refusal::of(error)?)).await,
    }
}

async fn commit(State(state): State<AppState>, visitor: Visitor, Path(id): Path<Uuid>) -> PageResult {
    closed(&state, &visitor, id, true).await
}

async fn abort(State(state): State<AppState>, visitor: Visitor, Path(id): Path<Uuid>) -> PageResult {
    closed(&state, &visitor, id, false).await
}

// ------------------------------------------------------------------ table imports

#[derive(Template)]
#[template(path = "upload_imports.html", config = "src/web/askama.toml")]
struct ImportsPage {
    chrome: Chrome,
    cohorts: Vec<String>,
    sites: Vec<String>,
}

async fn imports(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let principal = visitor.signed_in()?;
    // The same role the import itself requires, so nobody else is shown a form they cannot use.
    principal.require_any(&[crate::auth::Role::Uploader, crate::auth::Role::Admin])?;
    let cohorts = crate::registry::db::list_cohorts(&state.db).await?.into_iter().map(|c| c.slug).collect();
    let sites = crate::registry::db::list_sites(&state.db).await?.into_iter().map(|s| s.code).collect();
    Ok(render(&ImportsPage { chrome: Chrome::new(&visitor, "uploads"), cohorts, sites }))
}

/// A table sent by the imports page's script; answered as
/// `POST /api/v1/imports/{kind}` answers (its problems each named by line).
async fn import(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(kind): Path<ImportKind>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ImportReport>), ApiError> {
    let report = crate::http::imports::import(&state, caller(&visitor)?, kind, query, &headers, body).await?;
    Ok((StatusCode::CREATED, Json(report)))
}
