//! The account: the researcher profile, personal API tokens and which
//! notifications reach one by e-mail.
//!
//! A new token's secret is answered by the very POST that made it, on the
//! account page, and nowhere else: it is stored only as a hash, so no later
//! page (nor a redirect) could show it again.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::{given, pairs, refused, when};
use crate::access::projects::{self as service, ProfileRequest};
use crate::app::AppState;
use crate::auth::{Credential, Role, api_tokens};
use crate::http::tokens::{self, CreateTokenRequest, CreateTokenResponse, TokenResponse};
use crate::mail::{self, NotificationKindPreference, NotificationPreferences};
use crate::web::{Chrome, Visitor, WebError, render};

type PageResult = Result<Response, WebError>;

struct ProfileView {
    name: String,
    institution: String,
    email: String,
    orcid: String,
    position: String,
    /// `verified by … on …`, or why it is not.
    verification: String,
    verified: bool,
}

struct TokenRow {
    id: Uuid,
    name: String,
    prefix: String,
    roles: String,
    created: String,
    expires: String,
    last_used: String,
    state: &'static str,
}

/// A token made by this request: its secret, shown once.
struct Created {
    name: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "account.html", config = "src/web/askama.toml")]
struct AccountPage {
    chrome: Chrome,
    username: String,
    roles: Vec<&'static str>,
    /// How this session signed in.
    credential: &'static str,
    profile: Option<ProfileView>,
    tokens: Vec<TokenRow>,
    created: Option<Created>,
    max_days: u32,
    email: bool,
    /// Kind, whether it reaches one by e-mail.
    kinds: Vec<(&'static str, bool)>,
}

async fn account(state: &AppState, visitor: &Visitor, created: Option<Created>) -> PageResult {
    let principal = visitor.signed_in()?;
    let profile = service::get_profile(&state.db, &principal.username).await?.map(|p| ProfileView {
        verification: match (p.verified_at, &p.verified_by) {
            (Some(at), Some(by)) => format!("verified by {by} on {}", when(at)),
            (Some(at), None) => format!("verified on {}", when(at)),
            _ => "not verified yet: a steward verifies your bona fides before you can submit an application or \
                  reach data; changing any field asks for verification again"
                .to_owned(),
        },
        verified: p.verified,
        name: p.name,
        institution: p.institution,
        email: p.email,
        orcid: p.orcid.unwrap_or_default(),
        position: p.position,
    });
    let tokens = api_tokens::list_tokens(&state.db, &principal.username)
        .await?
        .into_iter()
        .map(TokenResponse::from)
        .map(|t| TokenRow {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            roles: t.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
            created: when(t.created_at),
            expires: when(t.expires_at),
            last_used: t.last_used_at.map_or_else(|| "never".to_owned(), when),
            state: t.state,
        })
        .collect();
    let preferences = mail::preferences(&state.db, &principal.username).await?;
    let kinds = mail::KINDS
        .iter()
        .map(|kind| (*kind, preferences.kinds.iter().find(|k| k.kind == *kind).is_none_or(|k| k.email)))
        .collect();
    Ok(render(&AccountPage {
        chrome: Chrome::new(visitor, "account"),
        username: principal.username.clone(),
        roles: principal.roles.iter().map(|r| r.as_str()).collect(),
        credential: match principal.credential {
            Credential::Jwt => "a JWT of your identity provider",
            Credential::ApiToken(_) => "an API token",
        },
        profile,
        tokens,
        created,
        max_days: state.config.auth.max_api_token_days,
        email: preferences.email,
        kinds,
    }))
}

pub async fn page(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    account(&state, &visitor, None).await
}

#[derive(Debug, Deserialize)]
pub struct ProfileForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    institution: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    orcid: String,
    #[serde(default)]
    position: String,
}

pub async fn save_profile(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<ProfileForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let request = ProfileRequest {
        name: form.name,
        institution: form.institution,
        email: form.email,
        orcid: given(&form.orcid),
        position: form.position,
    };
    service::save_profile(&state.db, principal, &request).await.map_err(refused)?;
    Ok(Redirect::to("/ui/account#profile").into_response())
}

/// The token form: a name, a lifetime and the roles to give it (repeated `role`).
fn token_request(body: &str) -> Result<CreateTokenRequest, WebError> {
    let mut name = String::new();
    let mut days = None;
    let mut roles = Vec::new();
    for (key, value) in pairs(body) {
        match key.as_str() {
            "name" => name = value,
            "expires_in_days" => {
                days = given(&value)
                    .map(|d| {
                        d.parse::<u32>().map_err(|_| {
                            WebError::Api(crate::error::ApiError::BadRequest(
                                "the lifetime is a whole number of days".into(),
                            ))
                        })
                    })
                    .transpose()?;
            }
            "role" => roles.extend(Role::parse(&value)),
            _ => {}
        }
    }
    // No role ticked: the token carries every role of its owner, as over the API.
    let roles = (!roles.is_empty()).then_some(roles);
    Ok(CreateTokenRequest { name, expires_in_days: days, roles })
}

pub async fn create_token(State(state): State<AppState>, visitor: Visitor, body: String) -> PageResult {
    let principal = visitor.signed_in()?;
    let request = token_request(&body)?;
    let CreateTokenResponse { token, details } = tokens::create(&state, principal, request).await.map_err(refused)?;
    let created = Created { name: details.name, secret: token };
    let mut response = account(&state, &visitor, Some(created)).await?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

pub async fn revoke_token(State(state): State<AppState>, visitor: Visitor, Path(id): Path<Uuid>) -> PageResult {
    let principal = visitor.signed_in()?;
    tokens::revoke(&state, principal, id).await.map_err(refused)?;
    Ok(Redirect::to("/ui/account#tokens").into_response())
}

pub async fn save_preferences(State(state): State<AppState>, visitor: Visitor, body: String) -> PageResult {
    let principal = visitor.signed_in()?;
    let sent = pairs(&body);
    let on = |name: &str, value: &str| sent.iter().any(|(k, v)| k == name && v == value);
    let wanted = NotificationPreferences {
        email: on("email", "on"),
        kinds: mail::KINDS
            .iter()
            .map(|kind| NotificationKindPreference { kind: (*kind).to_owned(), email: on("kind", kind) })
            .collect(),
    };
    mail::set_preferences(&state.db, &principal.username, &wanted).await.map_err(refused)?;
    Ok(Redirect::to("/ui/account#notification-preferences").into_response())
}
