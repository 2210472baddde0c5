//! NUL characters stop at the door. PostgreSQL cannot store them in text and
//! no field of Custodian's has a use for them, so a request carrying one (in
//! the path, the query or a JSON string) is answered `400` before any handler
//! runs, naming where it was, instead of failing deep inside as a `500`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Annotations (contours with thousands of points) may be larger JSON than
/// other requests; they are still read whole, so they are still bounded.
pub const ANNOTATION_JSON_LIMIT: usize = 64 * 1024 * 1024;

/// Middleware refusing NUL in the path (`invalid-path`), the query
/// (`invalid-query`) and JSON bodies (`invalid-body`). JSON bodies are read
/// here (bounded by their route's limit, as the handler would) and passed on whole.
pub async fn refuse(limits: super::JsonLimits, request: Request, next: Next) -> Response {
    if request.uri().path().contains("%00") {
        return ApiError::InvalidPath("the path contains a NUL character (%00)".into()).into_response();
    }
    if request.uri().query().is_some_and(|q| q.contains("%00")) {
        return ApiError::InvalidQuery("a query parameter contains a NUL character (%00)".into()).into_response();
    }
    if !is_json(&request) {
        return next.run(request).await;
    }
    let limit = limits.of(request.uri().path());
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::PayloadTooLarge.into_response();
    };
    if has_nul(&bytes) {
        return ApiError::InvalidBody("a string in the body contains a NUL character (\\u0000)".into()).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

pub(crate) fn is_json(request: &Request) -> bool {
    let Some(content_type) = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether JSON text holds a NUL: a raw zero byte or the escape `\u0000`
/// (and not `\\u0000`, an escaped backslash followed by text).
fn has_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            0 => return true,
            b'\\' => {
                if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000".as_slice()) {
                    return true;
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not_mistaken_for_them() {
        assert!(has_nul(br#"{"title": "a\u0000b"}"#));
        assert!(has_nul(b"{\"title\": \"a\0b\"}"));
        assert!(has_nul(br#"["\\\u0000"]"#), "an escaped backslash, then a NUL");
        assert!(!has_nul(br#"{"title": "a\\u0000b"}"#), "a backslash followed by the text u0000");
        assert!(!has_nul(br#"{"title": "\u00e9 \u0001"}"#));
        assert!(!has_nul(br#"{"trailing": "\"#));
    }
}
