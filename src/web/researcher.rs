//! The researcher's pages: discovery, projects and their members, withdrawal
//! notices, publications, notifications, the profile and API tokens.
//!
//! Each page calls the service function its REST twin calls, with the
//! session's principal where the API takes the bearer's, so the same rules,
//! refusals and audit entries apply. Applications, grants and releases have
//! their own pages; these link to them.

mod account;
mod discover;
mod notifications;
mod projects;

use axum::Router;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};

use super::WebError;
use crate::app::AppState;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/discover", get(discover::page))
        .route("/ui/projects", get(projects::list).post(projects::create))
        .route("/ui/projects/{id}", get(projects::page))
        .route("/ui/projects/{id}/members", post(projects::invite))
        .route("/ui/projects/{id}/members/{username}/accept", post(projects::accept))
        .route("/ui/projects/{id}/members/{username}/remove", post(projects::remove))
        .route("/ui/projects/{id}/publications", post(projects::publish))
        .route("/ui/withdrawal-notices/{id}/acknowledge", post(projects::acknowledge))
        .route("/ui/account", get(account::page))
        .route("/ui/account/profile", post(account::save_profile))
        .route("/ui/account/tokens", post(account::create_token))
        .route("/ui/account/tokens/{id}/revoke", post(account::revoke_token))
        .route("/ui/account/notification-preferences", post(account::save_preferences))
        .route("/ui/notifications", get(notifications::page))
        .route("/ui/notifications/{id}/read", post(notifications::read))
}

/// A moment as the pages show it.
fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The name/value pairs of a form or query string, repeated names kept.
fn pairs(text: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

/// A refusal as a page: an invalid request names every problem it found.
fn refused(error: ApiError) -> WebError {
    match error {
        ApiError::Invalid { message, problems, .. } => {
            let each: Vec<String> = problems
                .iter()
                .map(|p| match &p.path {
                    Some(path) => format!("{} (at {path})", p.message),
                    None => p.message.clone(),
                })
                .collect();
            WebError::Api(ApiError::BadRequest(format!("{message}: {}", each.join("; "))))
        }
        error => WebError::Api(error),
    }
}

/// A blank form field as absent.
fn given(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}
