//! Authorization first: who may call an operation is read from the OpenAPI
//! document, and checked before any extractor reads the path, the query or the
//! body. A caller without a credential gets `401` and one without the role
//! `403`, never a `400` describing a body they may not send.
//!
//! An operation's `security` says it: `{}` among the requirements means the
//! credential is optional; `{"bearer": []}` means any signed-in caller; one
//! `{"bearer": ["role"]}` per role means a caller holding one of those roles
//! (OpenAPI 3.1 lets the scopes of a non-OAuth scheme name roles, and lists
//! alternatives as separate requirements). Handlers and services keep their
//! own checks, which may be finer (a project's members, an upload's owner).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::app::AppState;
use crate::auth::{Principal, Role};

/// Who may call one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// With or without a credential (a present one must still be valid).
    Open,
    /// Any signed-in caller.
    SignedIn,
    /// A signed-in caller holding one of these roles.
    AnyOf(Vec<Role>),
}

impl Access {
    /// Reads an operation's `security` (absent: open).
    pub fn of_operation(operation: &Value) -> Self {
        let Some(requirements) = operation.get("security").and_then(Value::as_array) else {
            return Self::Open;
        };
        if requirements.is_empty() || requirements.iter().any(|r| r.as_object().is_some_and(serde_json::Map::is_empty))
        {
            return Self::Open;
        }
        let mut roles = Vec::new();
        for requirement in requirements {
            let scopes: Vec<&str> = requirement
                .as_object()
                .into_iter()
                .flat_map(|r| r.values())
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if scopes.is_empty() {
                return Self::SignedIn;
            }
            // An unknown role name would lock everyone out: a test keeps the document to known names.
            roles.extend(scopes.into_iter().filter_map(Role::parse));
        }
        roles.sort();
        roles.dedup();
        Self::AnyOf(roles)
    }
}

/// The access rule of every documented operation, by method and path template.
#[derive(Debug, Default)]
pub struct AccessTable(HashMap<(Method, String), Access>);

impl AccessTable {
    /// Reads every operation of an OpenAPI document.
    pub fn from_document(document: &Value) -> Self {
        let mut table = HashMap::new();
        let paths = document.get("paths").and_then(Value::as_object).into_iter().flatten();
        for (path, item) in paths {
            for (method, operation) in item.as_object().into_iter().flatten() {
                if let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
                    table.insert((method, path.clone()), Access::of_operation(operation));
                }
            }
        }
        Self(table)
    }

    /// The rule of an operation; `HEAD` follows `GET`.
    pub fn get(&self, method: &Method, path: &str) -> Option<&Access> {
        let method = if method == Method::HEAD { &Method::GET } else { method };
        self.0.get(&(method.clone(), path.to_owned()))
    }
}

/// Middleware: authenticates and checks roles as the document says, then
/// hands the [`Principal`] on to the handler's extractor.
pub async fn authorize(
    State((state, table)): State<(AppState, Arc<AccessTable>)>,
    request: Request,
    next: Next,
) -> Response {
    let access = request.extensions().get::<MatchedPath>().and_then(|p| table.get(request.method(), p.as_str()));
    let roles: &[Role] = match access {
        None | Some(Access::Open) => return next.run(request).await,
        Some(Access::SignedIn) => &[],
        Some(Access::AnyOf(roles)) => roles,
    };
    let (mut parts, body) = request.into_parts();
    let principal = match Principal::from_request_parts(&mut parts, &state).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    if !roles.is_empty()
        && let Err(error) = principal.require_any(roles)
    {
        return error.into_response();
    }
    parts.extensions.insert(principal);
    next.run(Request::from_parts(parts, body)).await
}
