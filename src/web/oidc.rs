//! Sign-in through the OIDC issuer: the authorization-code flow with PKCE
//! (S256), offered on the sign-in page when `auth.oidc.client_id` is set.
//!
//! "Sign in with …" leads to `/ui/sign-in/oidc`, which finds the provider's
//! endpoints by discovery, makes a random `state` and `nonce`, and binds them to the
//! visitor's session in `oidc_sign_in`, by their hashes only. The PKCE
//! verifier is never stored: it is derived (HMAC-SHA256) from the session's
//! id, which only the visitor's cookie holds, and the state, so a copy of the
//! database cannot redeem an intercepted code. The browser goes to the
//! provider; its answer comes back to the callback, which consumes the state
//! (once: a replayed answer finds nothing), checks it belongs to this
//! browser's session, exchanges the code at the token endpoint with the
//! verifier (and the client secret, for a confidential client) and verifies
//! the ID token ([`crate::auth::Authenticator::verify_id_token`]: the
//! issuer's keys, issuer, audience = client id, nonce, expiry). The principal
//! is built by the same claim rules as a bearer token's, and signed in as the
//! token sign-in does. Whatever fails is answered with the sign-in page
//! naming the problem, nobody signed in.

use std::sync::LazyLock;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::pages::{secure_cookies, server_url, set_cookie, sign_in_page};
use super::{Visitor, WebError, session};
use crate::app::AppState;

/// The path the provider sends the browser back to.
pub const CALLBACK_PATH: &str = "/ui/sign-in/oidc/callback";
/// How long a visitor has to sign in at the provider.
const FLOW_MINUTES: u64 = 10;
/// Longest text of the provider's own error shown on the page.
const PROVIDER_TEXT_LIMIT: usize = 300;

pub fn routes() -> Router<AppState> {
    Router::new().route("/ui/sign-in/oidc", get(start)).route(CALLBACK_PATH, get(callback))
}

/// The provider's name for the sign-in button, when single sign-on is configured.
pub fn provider_name(state: &AppState) -> Option<String> {
    configured(state).map(|_| state.config.auth.oidc.provider_name.clone())
}

/// The client id and the issuer, when single sign-on is configured.
fn configured(state: &AppState) -> Option<(&str, &str)> {
    let auth = &state.config.auth;
    Some((auth.oidc.client_id.as_deref()?, auth.oidc_issuer.as_deref()?))
}

static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client for the identity provider builds")
});

/// A sign-in that did not happen: the page names `problem`.
struct Refusal {
    status: StatusCode,
    problem: String,
}

fn refused(status: StatusCode, problem: impl Into<String>) -> Refusal {
    Refusal { status, problem: problem.into() }
}

/// The parts of the provider's discovery document Custodian uses.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// Reads `<issuer>/.well-known/openid-configuration`, which must name the
/// same issuer and, if it lists PKCE methods, S256.
async fn discover(issuer: &str) -> Result<Discovery, Refusal> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let unreachable = |error: &dyn std::fmt::Display| {
        tracing::warn!(%error, "OIDC discovery failed");
        refused(
            StatusCode::BAD_GATEWAY,
            "The identity provider could not be reached. Try again later, or sign in with a token.",
        )
    };
    let response = CLIENT.get(&url).send().await.map_err(|e| unreachable(&e))?;
    let response = response.error_for_status().map_err(|e| unreachable(&e))?;
    let found: Discovery = response.json().await.map_err(|e| unreachable(&e))?;
    if found.issuer != issuer {
        tracing::warn!(expected = issuer, found = found.issuer, "OIDC discovery names another issuer");
        return Err(refused(
            StatusCode::BAD_GATEWAY,
            "The identity provider's discovery document names another issuer than the one configured.",
        ));
    }
    if found.code_challenge_methods_supported.as_ref().is_some_and(|methods| !methods.iter().any(|m| m == "S256")) {
        return Err(refused(
            StatusCode::BAD_GATEWAY,
            "The identity provider does not support PKCE with S256, which sign-in requires.",
        ));
    }
    Ok(found)
}

/// The PKCE verifier of the sign-in with `state`, derived from the session's
/// id (the cookie's value) so that it is stored nowhere.
fn pkce_verifier(session_id: &str, state: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, format!("oidc-pkce-verifier:{state}").as_bytes()))
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

fn redirect_url(state: &AppState, headers: &HeaderMap) -> String {
    match &state.config.auth.oidc.redirect_url {
        Some(url) => url.clone(),
        None => format!("{}{CALLBACK_PATH}", server_url(state, headers)),
    }
}

/// "Sign in with …": binds a new state and nonce to the visitor's session
/// (starting one if needed) and sends the browser to the provider's
/// authorization endpoint. A link, not a form: the page's CSP lets forms
/// post only to this registry, and that covers where they redirect to.
/// Starting a sign-in changes nothing but the visitor's own pending state.
async fn start(State(state): State<AppState>, visitor: Visitor, headers: HeaderMap) -> Result<Response, WebError> {
    let Some((client_id, issuer)) = configured(&state) else { return Err(WebError::NotFound("page")) };
    let provider = match discover(issuer).await {
        Ok(provider) => provider,
        Err(refusal) => return sign_in_page(&state, &visitor, refusal.status, Some(refusal.problem)).await,
    };
    let mut tx = state.db.begin().await?;
    let (session_id, session_hash, cookie) =
        if let (Some(session), Some(id)) = (&visitor.session, session::id_from_cookies(&headers)) {
            (id, session.id_hash().to_vec(), None)
        } else {
            let started = session::start_visit(&mut tx).await?;
            let cookie = session::cookie(&started, secure_cookies(&state));
            (started.id.clone(), session::hash(&started.id), Some(cookie))
        };
    let (flow_state, nonce) = (session::random_token(), session::random_token());
    sqlx::query!("delete from oidc_sign_in where expires_at <= now()").execute(&mut *tx).await?;
    sqlx::query!(
        "insert into oidc_sign_in (state_hash, session_hash, nonce_hash, expires_at)
         values ($1, $2, $3, now() + make_interval(mins => $4))",
        session::hash(&flow_state),
        session_hash,
        session::hash(&nonce),
        i32::try_from(FLOW_MINUTES).unwrap_or(10),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut url = url::Url::parse(&provider.authorization_endpoint)
        .map_err(|e| WebError::Internal(anyhow::anyhow!("the provider's authorization endpoint is not a URL: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", &redirect_url(&state, &headers))
        .append_pair("scope", &state.config.auth.oidc.scopes.join(" "))
        .append_pair("state", &flow_state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce_challenge(&pkce_verifier(&session_id, &flow_state)))
        .append_pair("code_challenge_method", "S256");
    let mut response = Redirect::to(url.as_str()).into_response();
    if let Some(cookie) = cookie {
        set_cookie(&mut response, &cookie);
    }
    Ok(response)
}

/// The provider's answer, as its redirect carries it.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// The issuer of the answer (RFC 9207), when the provider sends it.
    iss: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    let Some((client_id, issuer)) = configured(&state) else { return Err(WebError::NotFound("page")) };
    // A query that does not parse is an answer without its parts, refused below.
    let query: CallbackQuery = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    match signed_in(&state, &visitor, &headers, client_id, issuer, query).await? {
        Ok(response) => Ok(response),
        Err(refusal) => sign_in_page(&state, &visitor, refusal.status, Some(refusal.problem)).await,
    }
}

/// Checks the answer, redeems the code and signs the visitor in.
async fn signed_in(
    state: &AppState,
    visitor: &Visitor,
    headers: &HeaderMap,
    client_id: &str,
    issuer: &str,
    query: CallbackQuery,
) -> Result<Result<Response, Refusal>, WebError> {
    let start_again = START_AGAIN;
    let (Some(session), Some(session_id)) = (&visitor.session, session::id_from_cookies(headers)) else {
        return Ok(Err(refused(
            StatusCode::BAD_REQUEST,
            format!(
                "No sign-in was started in this browser, so the identity provider's answer was not used. {start_again}"
            ),
        )));
    };
    let Some(flow_state) = query.state.filter(|s| !s.is_empty()) else {
        return Ok(Err(refused(
            StatusCode::BAD_REQUEST,
            format!("The identity provider's answer carries no state. {start_again}"),
        )));
    };
    let nonce_hash = match consume_state(state, session, &flow_state).await? {
        Ok(nonce_hash) => nonce_hash,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Some(error) = query.error {
        let said = match query.error_description.filter(|d| !d.is_empty()) {
            Some(description) => format!("{error} ({description})"),
            None => error,
        };
        return Ok(Err(refused(
            StatusCode::BAD_REQUEST,
            format!(
                "The identity provider did not sign you in: {}.",
                said.chars().take(PROVIDER_TEXT_LIMIT).collect::<String>()
            ),
        )));
    }
    if query.iss.as_deref().is_some_and(|iss| iss != issuer) {
        return Ok(Err(refused(
            StatusCode::BAD_REQUEST,
            format!("The answer comes from another identity provider than the one configured. {start_again}"),
        )));
    }
    let Some(code) = query.code.filter(|c| !c.is_empty()) else {
        return Ok(Err(refused(
            StatusCode::BAD_REQUEST,
            format!("The identity provider's answer carries no authorization code. {start_again}"),
        )));
    };
    let id_token =
        match redeem(state, headers, client_id, issuer, &code, &pkce_verifier(&session_id, &flow_state)).await {
            Ok(token) => token,
            Err(refusal) => return Ok(Err(refusal)),
        };
    let principal =
        match state.auth.verify_id_token(&id_token, client_id, |nonce| session::hash(nonce) == nonce_hash).await {
            Ok(principal) => principal,
            Err(error) => {
                tracing::warn!(%error, "an OIDC ID token was refused");
                return Ok(Err(refused(
                    StatusCode::UNAUTHORIZED,
                    format!("The identity provider's ID token was refused: {error}."),
                )));
            }
        };
    if principal.roles.is_empty() {
        return Ok(Err(refused(
            StatusCode::FORBIDDEN,
            format!(
                "The identity provider knows you as {}, but gives you no role in this registry (claim `{}`). Ask an administrator for one.",
                principal.username,
                state.auth.roles_claim()
            ),
        )));
    }
    let mut tx = state.db.begin().await?;
    let started = session::sign_in(&mut tx, Some(session), &principal, None, session::SignInMethod::Oidc).await?;
    tx.commit().await?;
    let mut response = Redirect::to("/").into_response();
    set_cookie(&mut response, &session::cookie(&started, secure_cookies(state)));
    Ok(Ok(response))
}

const START_AGAIN: &str = "Start again with the button below.";

/// Consumes the sign-in with `flow_state` (whatever follows: an answer is
/// good once), which must belong to `session` and be live; its nonce's hash.
async fn consume_state(
    state: &AppState,
    session: &session::Session,
    flow_state: &str,
) -> Result<Result<Vec<u8>, Refusal>, WebError> {
    let start_again = START_AGAIN;
    let pending = sqlx::query!(
        r#"delete from oidc_sign_in where state_hash = $1
           returning session_hash, nonce_hash, expires_at > now() as "live!""#,
        session::hash(flow_state)
    )
    .fetch_optional(&state.db)
    .await?;
    let Some(pending) = pending else {
        return Ok(Err(refused(
            StatusCode::BAD_REQUEST,
            format!(
                "The identity provider's answer does not match a sign-in in progress: its state is unknown or was already used. {start_again}"
            ),
        )));
    };
    if pending.session_hash != session.id_hash() {
        return Ok(Err(refused(
            StatusCode::BAD_REQUEST,
            format!(
                "The identity provider's answer belongs to a sign-in started in another browser session. {start_again}"
            ),
        )));
    }
    if !pending.live {
        return Ok(Err(refused(
            StatusCode::BAD_REQUEST,
            format!("The sign-in took longer than {FLOW_MINUTES} minutes. {start_again}"),
        )));
    }
    Ok(Ok(pending.nonce_hash))
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Exchanges the code at the token endpoint for the ID token.
async fn redeem(
    state: &AppState,
    headers: &HeaderMap,
    client_id: &str,
    issuer: &str,
    code: &str,
    verifier: &str,
) -> Result<String, Refusal> {
    let provider = discover(issuer).await?;
    let redirect = redirect_url(state, headers);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", verifier),
    ];
    let mut request = CLIENT.post(&provider.token_endpoint).header(header::ACCEPT, "application/json");
    match &state.config.auth.oidc.client_secret {
        // client_secret_basic: both parts form-encoded first (RFC 6749, section 2.3.1).
        Some(secret) => {
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic = STANDARD.encode(format!("{}:{}", encode(client_id), encode(secret.expose_secret())));
            if let Ok(value) = HeaderValue::from_str(&format!("Basic {basic}")) {
                request = request.header(header::AUTHORIZATION, value);
            }
        }
        None => form.push(("client_id", client_id)),
    }
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let answer =
        request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body).send().await.map_err(
            |error| {
                tracing::warn!(%error, "the OIDC token endpoint could not be reached");
                refused(
                    StatusCode::BAD_GATEWAY,
                    "The identity provider could not be reached to finish the sign-in. Try again.",
                )
            },
        )?;
    let status = answer.status();
    let answer: TokenAnswer = answer.json().await.map_err(|error| {
        tracing::warn!(%error, %status, "the OIDC token endpoint's answer did not parse");
        refused(
            StatusCode::BAD_GATEWAY,
            "The identity provider's token endpoint gave an answer that could not be read.",
        )
    })?;
    if !status.is_success() || answer.error.is_some() {
        let error = answer.error.unwrap_or_else(|| status.to_string());
        let said = match answer.error_description {
            Some(description) => format!("{error} ({description})"),
            None => error,
        };
        return Err(refused(
            StatusCode::BAD_REQUEST,
            format!(
                "The identity provider refused to finish the sign-in: {}.",
                said.chars().take(PROVIDER_TEXT_LIMIT).collect::<String>()
            ),
        ));
    }
    answer.id_token.ok_or_else(|| {
        refused(
            StatusCode::BAD_GATEWAY,
            "The identity provider's answer carries no ID token (is `openid` among the scopes?).",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_verifier_is_bound_to_the_session_and_the_state_and_its_challenge_is_s256() {
        let verifier = pkce_verifier("session-a", "state-1");
        assert_eq!(verifier.len(), 43, "a verifier of 43 unreserved characters");
        assert_eq!(verifier, pkce_verifier("session-a", "state-1"));
        assert_ne!(verifier, pkce_verifier("session-b", "state-1"), "another session derives another verifier");
        assert_ne!(verifier, pkce_verifier("session-a", "state-2"));
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
