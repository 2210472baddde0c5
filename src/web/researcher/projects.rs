//! Projects and their members, withdrawal notices and publications: the
//! project service's functions, with the session's principal.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use serde::Deserialize;
use uuid::Uuid;

use super::{given, refused, when};
use crate::access::projects::{self as service, MemberRole};
use crate::access::publications::{self, NewPublication};
use crate::access::standing::{InProject, standing};
use crate::access::withdrawal;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::web::{Chrome, Visitor, WebError, render};

type PageResult = Result<Response, WebError>;

/// A project in the list.
struct ProjectRow {
    id: Uuid,
    title: String,
    pi: String,
    created: String,
    /// `PI`, `collaborator`, or nothing (a steward reading).
    role: String,
    /// `member`, `invited`, `closed` or `not a member`.
    state: &'static str,
    invited: bool,
}

#[derive(Template)]
#[template(path = "projects.html", config = "src/web/askama.toml")]
struct ProjectsPage {
    chrome: Chrome,
    projects: Vec<ProjectRow>,
    has_profile: bool,
    username: String,
}

fn role_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Pi => "PI",
        MemberRole::Collaborator => "collaborator",
    }
}

pub async fn list(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let principal = visitor.signed_in()?;
    let projects = service::list_projects(&state.db, principal)
        .await?
        .into_iter()
        .map(|p| {
            let invited = p.membership.as_ref().is_some_and(|m| m.accepted_at.is_none());
            ProjectRow {
                id: p.id,
                created: when(p.created_at),
                role: p.membership.as_ref().map(|m| role_name(m.role).to_owned()).unwrap_or_default(),
                state: match (&p.membership, p.closed_at) {
                    (_, Some(_)) => "closed",
                    (Some(_), None) if invited => "invited",
                    (Some(_), None) => "member",
                    (None, None) => "not a member",
                },
                invited,
                title: p.title,
                pi: p.pi_username,
            }
        })
        .collect();
    let has_profile = service::has_profile(&state.db, &principal.username).await?;
    Ok(render(&ProjectsPage {
        chrome: Chrome::new(&visitor, "projects"),
        projects,
        has_profile,
        username: principal.username.clone(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct NewProject {
    #[serde(default)]
    title: String,
}

pub async fn create(State(state): State<AppState>, visitor: Visitor, Form(form): Form<NewProject>) -> PageResult {
    let principal = visitor.signed_in()?;
    let project = service::create_project(&state.db, principal, &form.title).await.map_err(refused)?;
    Ok(Redirect::to(&format!("/ui/projects/{}", project.id)).into_response())
}

/// A member as the project page lists them.
struct MemberRow {
    username: String,
    name: String,
    institution: String,
    role: &'static str,
    invited: String,
    /// `member since …`, `invited, not yet accepted`, or `left …`.
    state: String,
    current: bool,
    open_invitation: bool,
}

struct NoticeRow {
    id: Uuid,
    scope: &'static str,
    pseudonym: String,
    created: String,
    /// Who acknowledged it and when; empty while open.
    acknowledged: String,
}

struct PublicationRow {
    title: String,
    link: String,
    venue: String,
    published: String,
    cohorts: String,
    notified: String,
}

#[derive(Template)]
#[template(path = "project.html", config = "src/web/askama.toml")]
struct ProjectPage {
    chrome: Chrome,
    id: Uuid,
    title: String,
    pi: String,
    created: String,
    closed: Option<String>,
    members: Vec<MemberRow>,
    username: String,
    is_pi: bool,
    /// The caller holds an open invitation.
    invited: bool,
    /// Accepted member (or steward): sees notices and publications.
    reader: bool,
    notices: Vec<NoticeRow>,
    publications: Vec<PublicationRow>,
}

fn notice_rows(notices: Vec<withdrawal::Notice>) -> Vec<NoticeRow> {
    notices
        .into_iter()
        .map(|n| NoticeRow {
            id: n.id,
            scope: if n.scope == "imaging" { "imaging only" } else { "all data" },
            pseudonym: n.project_pseudonym,
            created: when(n.created_at),
            acknowledged: match (n.acknowledged_at, n.acknowledged_by) {
                (Some(at), Some(by)) => format!("acknowledged by {by}, {}", when(at)),
                (Some(at), None) => format!("acknowledged {}", when(at)),
                _ => String::new(),
            },
        })
        .collect()
}

/// The withdrawal notices of a project `principal` reads.
pub(super) async fn notices_of(
    state: &AppState,
    principal: &Principal,
    project_id: Uuid,
) -> Result<Vec<withdrawal::Notice>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let standing = standing(&mut *conn, project_id, principal).await?;
    let caller = InProject { project_id, principal: principal.clone(), standing };
    withdrawal::project_notices(&mut conn, &caller).await
}

pub async fn page(State(state): State<AppState>, visitor: Visitor, Path(id): Path<Uuid>) -> PageResult {
    let principal = visitor.signed_in()?;
    let project = service::find_project(&state.db, principal, id).await?;
    let mine = project.members.iter().rev().find(|m| m.username == principal.username && m.removed_at.is_none());
    let is_pi = mine.is_some_and(|m| m.role == MemberRole::Pi);
    let invited = mine.is_some_and(|m| m.accepted_at.is_none());
    let reader = standing(&state.db, id, principal).await?.reads();
    let (notices, publications) = if reader {
        let mut conn = state.db.acquire().await?;
        let publications = publications::of_project(&mut conn, principal, id).await?;
        drop(conn);
        (notices_of(&state, principal, id).await?, publications)
    } else {
        (Vec::new(), Vec::new())
    };
    let members = project
        .members
        .into_iter()
        .map(|m| MemberRow {
            state: match (m.accepted_at, m.removed_at) {
                (_, Some(left)) => format!("left {}", when(left)),
                (Some(since), None) => format!("member since {}", when(since)),
                (None, None) => "invited, not yet accepted".to_owned(),
            },
            current: m.removed_at.is_none(),
            open_invitation: m.removed_at.is_none() && m.accepted_at.is_none(),
            role: role_name(m.role),
            invited: format!("by {}, {}", m.invited_by, when(m.invited_at)),
            name: m.name.unwrap_or_default(),
            institution: m.institution.unwrap_or_default(),
            username: m.username,
        })
        .collect();
    let publications = publications
        .into_iter()
        .map(|p| PublicationRow {
            link: p
                .doi
                .as_ref()
                .map_or_else(|| p.url.clone().unwrap_or_default(), |doi| format!("https://doi.org/{doi}")),
            venue: p.venue.unwrap_or_default(),
            published: p.published_on.to_string(),
            cohorts: p.cohorts.join(", "),
            notified: format!("by {}, {}", p.notified_by, when(p.notified_at)),
            title: p.title,
        })
        .collect();
    Ok(render(&ProjectPage {
        chrome: Chrome::new(&visitor, "projects"),
        id,
        title: project.title,
        pi: project.pi_username,
        created: when(project.created_at),
        closed: project.closed_at.map(when),
        members,
        username: principal.username.clone(),
        is_pi,
        invited,
        reader,
        notices: notice_rows(notices),
        publications,
    }))
}

#[derive(Debug, Deserialize)]
pub struct Invitation {
    #[serde(default)]
    username: String,
}

fn back_to(id: Uuid, section: &str) -> Response {
    Redirect::to(&format!("/ui/projects/{id}#{section}")).into_response()
}

pub async fn invite(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<Uuid>,
    Form(form): Form<Invitation>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    service::invite_member(&state.db, principal, id, form.username.trim()).await.map_err(refused)?;
    Ok(back_to(id, "members"))
}

pub async fn accept(
    State(state): State<AppState>,
    visitor: Visitor,
    Path((id, username)): Path<(Uuid, String)>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    service::accept_invitation(&state.db, principal, id, &username).await.map_err(refused)?;
    Ok(back_to(id, "members"))
}

pub async fn remove(
    State(state): State<AppState>,
    visitor: Visitor,
    Path((id, username)): Path<(Uuid, String)>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    service::remove_member(&state.db, principal, id, &username).await.map_err(refused)?;
    if username == principal.username {
        return Ok(Redirect::to("/ui/projects").into_response());
    }
    Ok(back_to(id, "members"))
}

#[derive(Debug, Deserialize)]
pub struct PublicationForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    doi: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    venue: String,
    #[serde(default)]
    published_on: String,
    #[serde(default)]
    cohorts: String,
}

pub async fn publish(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<Uuid>,
    Form(form): Form<PublicationForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let published_on = NaiveDate::parse_from_str(form.published_on.trim(), "%Y-%m-%d").map_err(|_| {
        WebError::Api(ApiError::BadRequest("the publication date is a day written as YYYY-MM-DD".into()))
    })?;
    let notice = NewPublication {
        title: form.title,
        doi: given(&form.doi),
        url: given(&form.url),
        venue: given(&form.venue),
        published_on,
        cohorts: form.cohorts.split(',').filter_map(given).collect(),
    };
    let mut tx = state.db.begin().await?;
    publications::notify(&mut tx, principal, id, &notice).await.map_err(refused)?;
    tx.commit().await?;
    Ok(back_to(id, "publications"))
}

pub async fn acknowledge(State(state): State<AppState>, visitor: Visitor, Path(id): Path<Uuid>) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut tx = state.db.begin().await?;
    let notice = withdrawal::acknowledge(&mut tx, principal, id).await.map_err(refused)?;
    tx.commit().await?;
    Ok(back_to(notice.project_id, "withdrawals"))
}
