//! Grants and releases: a grant's state, expiry, conditions, fees and duties,
//! where the PI accepts the data use agreement and asks for a release; a
//! release's files with their sizes and checksums, downloaded through the
//! session, and the `custodian fetch` command for the whole of it.
//!
//! A file is downloaded by a page route that streams it through the very
//! function the REST download calls ([`crate::http::extracts::serve_file`])
//! with the session's principal: the grant is checked on the request, the
//! project's download limits apply, and the bytes actually sent are counted
//! and audited (`extract.download`, `extract.downloaded`). A presigned URL
//! would hand the bytes to the object store, which counts nothing, and exists
//! only where the store is S3.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use uuid::Uuid;

use super::applications::{DoneQuery, acting, condition_lines, project_title, readable_projects, when, words};
use super::pages::{human_bytes, server_url};
use super::{Chrome, Visitor, WebError, render};
use crate::access::duties;
use crate::access::grants::{self, Grant, GrantState};
use crate::access::standing::standing;
use crate::access::{applications, dua};
use crate::app::AppState;
use crate::http::client_ip::ClientIp;
use crate::release::extracts::{self, Extract, ExtractState};
use crate::release::manifest::{MANIFEST_FILE, SIGNATURE_FILE};

type PageResult = Result<Response, WebError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/grants", get(list_grants))
        .route("/ui/grants/{id}", get(grant_page))
        .route("/ui/grants/{id}/accept", post(accept_agreement))
        .route("/ui/grants/{id}/release", post(request_release))
        .route("/ui/releases", get(list_releases))
        .route("/ui/releases/{id}", get(release_page))
        .route("/ui/releases/{id}/files/{*path}", get(download))
}

fn state_text(grant: &Grant) -> String {
    if grant.effective_state == grant.state {
        grant.state.as_str().to_owned()
    } else {
        format!("{} (stored as {})", grant.effective_state.as_str(), grant.state.as_str())
    }
}

// ------------------------------------------------------------------ grants

struct GrantRow {
    id: Uuid,
    project: String,
    version: i32,
    state: String,
    cohorts: String,
    ends: String,
}

#[derive(Template)]
#[template(path = "grants.html", config = "src/web/askama.toml")]
struct GrantsPage {
    chrome: Chrome,
    rows: Vec<GrantRow>,
}

async fn list_grants(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut rows = Vec::new();
    for (project, _) in readable_projects(&state, principal).await? {
        for g in grants::of_project(&state.db, project.id).await? {
            rows.push(GrantRow {
                id: g.id,
                project: project.title.clone(),
                version: g.version,
                state: state_text(&g),
                cohorts: g.scope.cohorts.join(", "),
                ends: when(g.not_after),
            });
        }
    }
    Ok(render(&GrantsPage { chrome: Chrome::new(&visitor, "grants"), rows }))
}

struct VersionRow {
    version: i32,
    state: String,
    reason: String,
    by: String,
    at: String,
}

struct DutyRow {
    kind: String,
    due: String,
    status: String,
}

struct FeeRow {
    kind: String,
    amount: String,
    status: String,
}

struct AgreementView {
    version: String,
    title: String,
    body: String,
    sha256: String,
    published: String,
}

struct ReleaseRow {
    id: Uuid,
    version: i32,
    state: String,
    created: String,
}

#[derive(Template)]
#[template(path = "grant.html", config = "src/web/askama.toml")]
struct GrantPage {
    chrome: Chrome,
    grant: Grant,
    project: String,
    state: String,
    not_before: String,
    not_after: String,
    conditions: Vec<String>,
    versions: Vec<VersionRow>,
    duties: Vec<DutyRow>,
    fees: Vec<FeeRow>,
    /// The agreement to accept, while the grant waits for it.
    agreement: Option<AgreementView>,
    accepted: Option<String>,
    active: bool,
    releases: Vec<ReleaseRow>,
    done: Option<&'static str>,
}

async fn grant_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(query): Query<DoneQuery>,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "grant")?;
    let history = grants::visible(&state.db, principal, id).await?;
    let grant = history.last().cloned().ok_or(WebError::NotFound("grant"))?;
    let duties = duties::obligations(&state.db, Some(grant.project_id), false)
        .await?
        .into_iter()
        .filter(|o| o.grant_id == id)
        .map(|o| DutyRow {
            kind: words(o.kind.as_str()),
            due: o.due_on.to_string(),
            status: match (&o.fulfilled_at, o.overdue) {
                (Some(at), _) => format!("fulfilled {} by {}", when(*at), o.fulfilled_by.clone().unwrap_or_default()),
                (None, true) => "overdue".to_owned(),
                (None, false) => "due".to_owned(),
            },
        })
        .collect();
    let fees = duties::fees(&state.db, grant.application_id)
        .await?
        .into_iter()
        .map(|f| FeeRow {
            kind: f.kind.as_str().to_owned(),
            amount: format!("{}.{:02} {}", f.amount / 100, f.amount % 100, f.currency),
            status: f.settlement.map_or_else(
                || "owed: a steward records its payment or waiver".to_owned(),
                |s| {
                    format!(
                        "{} {}",
                        serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                        f.settled_at.map(when).unwrap_or_default()
                    )
                },
            ),
        })
        .collect();
    let application = applications::visible(&mut *state.db.acquire().await?, principal, grant.application_id).await?;
    let agreement = if grant.state == GrantState::Pending {
        let a = dua::current(&state.db).await?;
        Some(AgreementView {
            version: a.version,
            title: a.title,
            body: a.body,
            sha256: a.sha256,
            published: when(a.published_at),
        })
    } else {
        None
    };
    let releases = extracts::of_project(&state.db, grant.project_id)
        .await?
        .into_iter()
        .filter(|e| e.grant_id == Some(id))
        .map(|e| release_row(&e))
        .collect();
    let page = GrantPage {
        chrome: Chrome::new(&visitor, "grants"),
        project: project_title(&state, grant.project_id).await?,
        state: state_text(&grant),
        not_before: when(grant.not_before),
        not_after: when(grant.not_after),
        conditions: condition_lines(&grant.conditions),
        versions: history
            .iter()
            .map(|v| VersionRow {
                version: v.version,
                state: v.state.as_str().to_owned(),
                reason: v.reason.clone().unwrap_or_default(),
                by: v.created_by.clone(),
                at: when(v.created_at),
            })
            .collect(),
        duties,
        fees,
        agreement,
        accepted: application
            .dua_version
            .map(|v| format!("{v} (SHA-256 {})", application.dua_sha256.unwrap_or_default())),
        active: grant.effective_state == GrantState::Active,
        releases,
        done: match query.done.as_str() {
            "accepted" => Some("You accepted the data use agreement: the grant is active."),
            _ => None,
        },
        grant,
    };
    Ok(render(&page))
}

#[derive(Debug, Deserialize)]
struct AcceptForm {
    #[serde(default)]
    dua_version: String,
    #[serde(default)]
    dua_sha256: String,
    #[serde(default)]
    read: Option<String>,
}

/// The PI accepts the agreement in force, exactly as `POST /applications/{id}/activate`.
async fn accept_agreement(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<AcceptForm>,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "grant")?;
    let history = grants::visible(&state.db, principal, id).await?;
    let grant = history.last().ok_or(WebError::NotFound("grant"))?;
    if form.read.is_none() {
        return Err(crate::error::ApiError::BadRequest(
            "tick the box that says you have read the agreement to accept it".into(),
        )
        .into());
    }
    let sha = Some(form.dua_sha256.as_str()).filter(|s| !s.is_empty());
    let mut tx = state.db.begin().await?;
    applications::activate(&mut tx, principal, grant.application_id, &form.dua_version, sha).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/ui/grants/{id}?done=accepted")).into_response())
}

/// A release of the grant, asked for exactly as `POST /projects/{id}/extracts`.
async fn request_release(State(state): State<AppState>, visitor: Visitor, Path(id): Path<String>) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "grant")?;
    let history = grants::visible(&state.db, principal, id).await?;
    let project_id = history.last().ok_or(WebError::NotFound("grant"))?.project_id;
    let standing = standing(&state.db, project_id, principal).await?;
    let extract = extracts::request(&state.db, &state.config.access, project_id, principal, standing, Some(id)).await?;
    Ok(Redirect::to(&format!("/ui/releases/{}", extract.id)).into_response())
}

// ------------------------------------------------------------------ releases

fn extract_state(state: ExtractState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn release_row(e: &Extract) -> ReleaseRow {
    ReleaseRow { id: e.id, version: e.version, state: extract_state(e.state), created: when(e.created_at) }
}

struct ReleaseListRow {
    row: ReleaseRow,
    project: String,
    size: String,
}

#[derive(Template)]
#[template(path = "releases.html", config = "src/web/askama.toml")]
struct ReleasesPage {
    chrome: Chrome,
    rows: Vec<ReleaseListRow>,
}

async fn list_releases(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut rows = Vec::new();
    for (project, _) in readable_projects(&state, principal).await? {
        for e in extracts::of_project(&state.db, project.id).await? {
            rows.push(ReleaseListRow {
                size: e
                    .totals
                    .as_ref()
                    .map_or_else(String::new, |t| format!("{} files, {}", t.files, human_bytes(Some(t.bytes)))),
                row: release_row(&e),
                project: project.title.clone(),
            });
        }
    }
    Ok(render(&ReleasesPage { chrome: Chrome::new(&visitor, "releases"), rows }))
}

struct FileRow {
    path: String,
    size: String,
    bytes: i64,
    sha256: String,
    media_type: String,
}

#[derive(Template)]
#[template(path = "release.html", config = "src/web/askama.toml")]
struct ReleasePage {
    chrome: Chrome,
    release: ReleaseRow,
    project: String,
    grant_id: Option<Uuid>,
    progress: String,
    error: String,
    manifest_sha256: String,
    totals: String,
    /// The files, when the visitor may download them now.
    files: Vec<FileRow>,
    /// Why the files are not listed.
    unavailable: Option<String>,
    manifest: &'static str,
    signature: &'static str,
    fetch_command: String,
    /// Still being built: the page refreshes itself.
    building: bool,
}

async fn release_page(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "release")?;
    let extract = crate::http::extracts::visible(&state, Some(principal), id).await?;
    let project_id = extract.project_id.ok_or(WebError::NotFound("release"))?;
    let building = matches!(extract.state, ExtractState::Queued | ExtractState::Building);
    // The file list is the manifest's content: shown only to whom may download it now.
    let (files, unavailable) = if building {
        (Vec::new(), Some("The release is being built; its files are listed once it is ready.".to_owned()))
    } else {
        match crate::http::extracts::downloadable(&state, Some(principal), id).await {
            Ok(_) => {
                let files = extracts::stored_files(&state.db, id)
                    .await?
                    .into_iter()
                    .map(|(path, f)| FileRow {
                        size: human_bytes(Some(f.size)),
                        bytes: f.size,
                        sha256: f.sha256,
                        media_type: f.media_type,
                        path,
                    })
                    .collect();
                (files, None)
            }
            Err(e) if e.status().is_client_error() => (Vec::new(), Some(e.to_string())),
            Err(e) => return Err(e.into()),
        }
    };
    let server = server_url(&state, &headers);
    let page = ReleasePage {
        chrome: Chrome::new(&visitor, "releases"),
        project: project_title(&state, project_id).await?,
        grant_id: extract.grant_id,
        progress: match extract.progress.files_planned {
            Some(planned) => format!("{} of {planned} files written", extract.progress.files_done),
            None => format!("{} files written", extract.progress.files_done),
        },
        error: extract.error.clone().unwrap_or_default(),
        manifest_sha256: extract.manifest_sha256.clone().unwrap_or_default(),
        totals: extract.totals.as_ref().map_or_else(String::new, |t| {
            format!("{} files, {}, {} subjects", t.files, human_bytes(Some(t.bytes)), t.subjects)
        }),
        files,
        unavailable,
        manifest: MANIFEST_FILE,
        signature: SIGNATURE_FILE,
        fetch_command: format!("custodian fetch --server {server} --extract {id} --out release-{}", extract.version),
        building,
        release: release_row(&extract),
    };
    Ok(render(&page))
}

/// One file of a release (or its manifest or signature), streamed through
/// the REST download's own function with the session's principal.
async fn download(
    State(state): State<AppState>,
    visitor: Visitor,
    ClientIp(client): ClientIp,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> PageResult {
    let (principal, id) = acting(&visitor, &id, "release")?;
    let mut response = crate::http::extracts::serve_file(&state, Some(principal), client, id, &path, &headers).await?;
    let name: String = path
        .rsplit('/')
        .next()
        .unwrap_or("download")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
