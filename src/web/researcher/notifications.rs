//! The notifications page: what the registry told the user (the page every
//! e-mail links back to), with the withdrawal notices still to acknowledge
//! in the user's projects.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use uuid::Uuid;

use super::projects::notices_of;
use super::when;
use crate::access::duties;
use crate::access::projects::{self as service, MemberRole};
use crate::app::AppState;
use crate::web::{Chrome, Visitor, WebError, render};

struct NotificationRow {
    id: Uuid,
    subject: String,
    kind: String,
    created: String,
    /// The page that needs action.
    link: String,
    read: Option<String>,
}

struct NoticeRow {
    id: Uuid,
    project_id: Uuid,
    project: String,
    pseudonym: String,
    scope: &'static str,
    created: String,
    /// Only the PI acknowledges.
    pi: bool,
}

#[derive(Template)]
#[template(path = "notifications.html", config = "src/web/askama.toml")]
struct NotificationsPage {
    chrome: Chrome,
    notifications: Vec<NotificationRow>,
    unread: usize,
    notices: Vec<NoticeRow>,
}

pub async fn page(State(state): State<AppState>, visitor: Visitor) -> Result<Response, WebError> {
    let principal = visitor.signed_in()?;
    let notifications: Vec<NotificationRow> = duties::notifications(&state.db, principal)
        .await?
        .into_iter()
        .map(|n| NotificationRow {
            link: crate::mail::link("", n.recipient == "role:steward", n.target.as_deref()),
            id: n.id,
            subject: n.subject,
            kind: n.kind,
            created: when(n.created_at),
            read: n.read_at.map(when),
        })
        .collect();
    let mut notices = Vec::new();
    for project in service::list_projects(&state.db, principal).await? {
        let Some(membership) = project.membership.filter(|m| m.accepted_at.is_some()) else { continue };
        for notice in notices_of(&state, principal, project.id).await? {
            if notice.acknowledged_at.is_some() {
                continue;
            }
            notices.push(NoticeRow {
                id: notice.id,
                project_id: project.id,
                project: project.title.clone(),
                pseudonym: notice.project_pseudonym,
                scope: if notice.scope == "imaging" { "imaging only" } else { "all data" },
                created: when(notice.created_at),
                pi: membership.role == MemberRole::Pi,
            });
        }
    }
    Ok(render(&NotificationsPage {
        chrome: Chrome::new(&visitor, "notifications"),
        unread: notifications.iter().filter(|n| n.read.is_none()).count(),
        notifications,
        notices,
    }))
}

pub async fn read(State(state): State<AppState>, visitor: Visitor, Path(id): Path<Uuid>) -> Result<Response, WebError> {
    let principal = visitor.signed_in()?;
    duties::mark_read(&state.db, principal, id).await?;
    Ok(Redirect::to("/ui/notifications").into_response())
}
