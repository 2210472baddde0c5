//! The web interface: server-rendered pages over the same service functions
//! as the REST API, served by the same binary.
//!
//! Pages live at `/` and under `/ui/`, apart from `/api/v1`, `/dicomweb`,
//! `/ga4gh`, `/docs` and `/.well-known`; they are not part of the OpenAPI
//! contract. The stylesheet and the one script are compiled in and served
//! under a content-hashed name, cached for a year; nothing is loaded from
//! elsewhere. Every response of these routes carries a strict
//! Content-Security-Policy (no inline script or style), `nosniff`, a frame
//! denial and a referrer policy; pages are `no-store`, as they may show who
//! is signed in. Every POST must carry the session's CSRF token
//! ([`session`]); one without it is refused with a page saying so.

mod admin;
mod applications;
mod chart;
mod grants;
mod oidc;
mod organizer;
mod pages;
mod researcher;
pub mod session;
mod steward;
mod uploader;

use std::sync::LazyLock;

use askama::Template;
use aws_lc_rs::digest::{SHA256, digest};
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use session::Session;

/// The Content-Security-Policy of every page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Largest form body a page accepts.
const FORM_LIMIT: usize = 64 * 1024;

/// A compiled-in file served under a name carrying its content hash.
pub struct Asset {
    pub url: String,
    bytes: Vec<u8>,
    content_type: &'static str,
}

impl Asset {
    /// One asset made of `parts` in order (each area of the interface keeps
    /// its own stylesheet and script; the browser fetches one of each).
    fn new(stem: &str, extension: &str, parts: &[&str], content_type: &'static str) -> Self {
        let bytes = parts.join("\n").into_bytes();
        let hash = hex::encode(&digest(&SHA256, &bytes).as_ref()[..8]);
        Self { url: format!("/ui/assets/{stem}.{hash}.{extension}"), bytes, content_type }
    }
}

pub static STYLESHEET: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "style",
        "css",
        &[
            include_str!("assets/style.css"),
            include_str!("assets/researcher.css"),
            include_str!("assets/steward.css"),
            include_str!("assets/organizer.css"),
            include_str!("assets/uploader.css"),
            include_str!("assets/admin.css"),
        ],
        "text/css; charset=utf-8",
    )
});
pub static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "js",
        &[
            include_str!("assets/app.js"),
            include_str!("assets/researcher.js"),
            include_str!("assets/steward.js"),
            include_str!("assets/organizer.js"),
            include_str!("assets/uploader.js"),
            include_str!("assets/admin.js"),
        ],
        "text/javascript; charset=utf-8",
    )
});

/// The routes of the web interface, with their security layer.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/ui/open-cohorts", get(pages::open_cohorts))
        .route("/ui/open-cohorts/{slug}", get(pages::landing))
        .route("/ui/dictionary", get(pages::dictionary))
        .route("/ui/deid", get(pages::deid))
        .route("/ui/sign-in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/ui/sign-out", post(pages::sign_out))
        .merge(oidc::routes())
        .route("/ui/assets/{name}", get(asset))
        .merge(researcher::routes())
        .merge(steward::routes())
        .merge(organizer::routes())
        .merge(uploader::routes())
        .merge(admin::routes())
        .merge(applications::routes())
        .merge(grants::routes())
        .route("/ui/{*rest}", get(not_found))
        .layer(middleware::from_fn_with_state(state, guard))
}

async fn asset(Path(name): Path<String>) -> Response {
    for asset in [&*STYLESHEET, &*SCRIPT] {
        if asset.url.rsplit('/').next() == Some(name.as_str()) {
            return (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
                    (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
                ],
                asset.bytes.clone(),
            )
                .into_response();
        }
    }
    WebError::NotFound("file").into_response()
}

async fn not_found() -> WebError {
    WebError::NotFound("page")
}

/// The session of the request, as the guard found it.
#[derive(Debug, Clone, Default)]
pub struct Visitor {
    pub session: Option<Session>,
}

impl Visitor {
    pub fn principal(&self) -> Option<&Principal> {
        self.session.as_ref().and_then(|s| s.principal.as_ref())
    }

    /// The signed-in principal, or a refusal that sends the visitor to sign in.
    pub fn signed_in(&self) -> Result<&Principal, WebError> {
        self.principal().ok_or(WebError::SignInRequired)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Visitor>().cloned().unwrap_or_default())
    }
}

/// Middleware of every web route: finds the session, refuses a POST without
/// its CSRF token, and sets the security headers on whatever is answered.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = match checked(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn checked(state: &AppState, request: Request) -> Result<Request, WebError> {
    let (mut parts, body) = request.into_parts();
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    // The stylesheet and the script are the same for everyone: no session is looked up for them.
    let session = match session::id_from_cookies(&parts.headers) {
        Some(_) if safe && parts.uri.path().starts_with("/ui/assets/") => None,
        Some(id) => session::find(&state.db, &id).await.map_err(|e| WebError::Internal(e.into()))?,
        None => None,
    };
    let body = if safe {
        body
    } else {
        let header = parts.headers.get(session::CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        // A file sent by a page's script (its token in the header, its body
        // not a form) streams on to its route, which holds it to that
        // route's own limits as the REST API does; forms are read here.
        let (body, presented) = match header {
            Some(presented) if !form => (body, Some(presented)),
            header => {
                let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| WebError::TooLarge)?;
                let presented = header.or_else(|| {
                    url::form_urlencoded::parse(&bytes)
                        .find(|(name, _)| name == session::CSRF_FIELD)
                        .map(|(_, value)| value.into_owned())
                });
                (Body::from(bytes), presented)
            }
        };
        let valid = match (&session, &presented) {
            (Some(session), Some(presented)) => session::csrf_matches(session, presented),
            _ => false,
        };
        if !valid {
            return Err(WebError::Csrf);
        }
        body
    };
    parts.extensions.insert(Visitor { session });
    Ok(Request::from_parts(parts, body))
}

/// What every page shows around its content: the stylesheet, the script,
/// who is signed in and the sign-out form's CSRF token.
pub struct Chrome {
    pub stylesheet: &'static str,
    pub script: &'static str,
    pub username: Option<String>,
    pub roles: String,
    /// The signed-in principal's role names, for the navigation.
    pub role_names: Vec<&'static str>,
    pub csrf_token: String,
    /// The navigation entry of the current page.
    pub current: &'static str,
}

impl Chrome {
    pub fn new(visitor: &Visitor, current: &'static str) -> Self {
        let principal = visitor.principal();
        Self {
            stylesheet: &STYLESHEET.url,
            script: &SCRIPT.url,
            username: principal.map(|p| p.username.clone()),
            roles: principal
                .map(|p| p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            role_names: principal.map(|p| p.roles.iter().map(|r| r.as_str()).collect()).unwrap_or_default(),
            csrf_token: visitor.session.as_ref().map(|s| s.csrf_token.clone()).unwrap_or_default(),
            current,
        }
    }

    /// Whether the signed-in principal holds `role` (by its name).
    pub fn has_role(&self, role: &str) -> bool {
        self.role_names.contains(&role)
    }
}

#[derive(Template)]
#[template(path = "error.html", config = "src/web/askama.toml")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    title: &'static str,
    message: String,
}

/// A page that could not be shown, rendered as a page.
#[derive(Debug)]
pub enum WebError {
    NotFound(&'static str),
    /// A page for signed-in users, asked for without a session: answered
    /// with a redirect to the sign-in page.
    SignInRequired,
    /// A POST without the session's CSRF token.
    Csrf,
    TooLarge,
    /// Refused by a service function, with its status and message.
    Api(ApiError),
    Internal(anyhow::Error),
}

impl From<ApiError> for WebError {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<sqlx::Error> for WebError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Self::SignInRequired => return axum::response::Redirect::to("/ui/sign-in").into_response(),
            Self::NotFound(what) => (StatusCode::NOT_FOUND, "Not found", format!("There is no such {what} here.")),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not carry the security token of your session, so it was not acted on. \
                 It may have been open too long, or sent from another site. Reload the page and try again."
                    .to_owned(),
            ),
            Self::TooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "Form too large", "The form sent too much data.".to_owned())
            }
            Self::Api(error) if error.status().is_server_error() => return internal(&anyhow::anyhow!("{error}")),
            Self::Api(error) => {
                let title = match error.status() {
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => "Not allowed",
                    _ => "Request refused",
                };
                (error.status(), title, error.to_string())
            }
            Self::Internal(error) => return internal(&error),
        };
        render_error(status, title, message)
    }
}

fn internal(error: &anyhow::Error) -> Response {
    tracing::error!(error = format!("{error:#}"), "web page failed");
    render_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The page could not be shown. The error has been logged.".to_owned(),
    )
}

fn render_error(status: StatusCode, title: &'static str, message: String) -> Response {
    let page = ErrorPage { chrome: Chrome::new(&Visitor::default(), ""), status: status.as_u16(), title, message };
    (status, render(&page)).into_response()
}

/// Renders a page; a template that fails to render is a bug, answered 500.
pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}
