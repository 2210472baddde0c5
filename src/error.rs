//! The one error type of the HTTP API.
//!
//! Every 4xx/5xx answer is an [`ErrorBody`] with a stable kebab-case `code`.
//! Internal causes (database, storage, anything `anyhow`) are logged with their
//! details and answered with a generic message: nothing internal, and never a
//! value from a request, leaks into a response.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is syntactically fine but asks for something invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The JSON body could not be read (malformed, wrong type, unknown field).
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// A query-string parameter could not be read.
    #[error("invalid query parameter: {0}")]
    InvalidQuery(String),
    /// A path parameter could not be read.
    #[error("invalid path parameter: {0}")]
    InvalidPath(String),
    /// The body is not of a media type this endpoint accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No or unusable credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// The named kind of thing does not exist (or is not visible to the caller).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// No such route.
    #[error("no route for this path")]
    RouteNotFound,
    #[error("method not allowed for this path")]
    MethodNotAllowed,
    /// The body was read but its content is invalid; every problem is listed.
    #[error("{message}")]
    Invalid { code: &'static str, message: String, problems: Vec<Problem> },
    /// Refused by a rule, with its code from the closed set [`Refusal`].
    #[error("{message}")]
    Refused { code: Refusal, message: String },
    /// A quota is used up; it allows another request after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// A challenge's daily submission limit is reached.
    #[error("{message}")]
    SubmissionLimit { message: String, retry_after: u64 },
    /// A project asked for more of its releases' bytes than its rate allows.
    #[error("the project asked for downloads faster than its {per_minute} requests a minute; retry in {retry_after} s")]
    DownloadRateExceeded { per_minute: u32, retry_after: u64 },
    /// A project already runs as many downloads as it may at once.
    #[error("the project already runs {0} downloads at once, its limit; retry when one ends")]
    TooManyDownloads(u32),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the endpoint accepts.
    #[error("request body exceeds the size limit of this endpoint")]
    PayloadTooLarge,
    /// The request took longer than the configured timeout.
    #[error("the request did not complete within {0} seconds")]
    Timeout(u64),
    /// A dependency (database, object store) is unreachable.
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("internal error")]
    Database(#[from] sqlx::Error),
    #[error("internal error")]
    Storage(#[from] object_store::Error),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_)
            | Self::InvalidBody(_)
            | Self::InvalidQuery(_)
            | Self::InvalidPath(_)
            | Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Refused { .. } => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. }
            | Self::SubmissionLimit { .. }
            | Self::TooManyDownloads(_)
            | Self::DownloadRateExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) | Self::Unavailable(_) | Self::Database(sqlx::Error::PoolTimedOut) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Database(_) | Self::Storage(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable, kebab-case code clients can match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::InvalidBody(_) => "invalid-body",
            Self::InvalidQuery(_) => "invalid-query",
            Self::InvalidPath(_) => "invalid-path",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) | Self::RouteNotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Invalid { code, .. } => code,
            Self::Refused { code, .. } => code.as_str(),
            Self::TooManyRequests { .. } => "query-budget-exhausted",
            Self::SubmissionLimit { .. } => "submission-limit",
            Self::TooManyDownloads(_) => "too-many-downloads",
            Self::DownloadRateExceeded { .. } => "download-rate-exceeded",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload-too-large",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) | Self::Database(sqlx::Error::PoolTimedOut) => "unavailable",
            Self::Database(_) | Self::Storage(_) | Self::Internal(_) => "internal",
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not-found`, `invalid-body`, `forbidden`; a `403`
    /// refused by a rule carries one of the closed set `Refusal`.
    #[schema(example = "invalid-body")]
    pub code: &'static str,
    /// Human-readable explanation naming the problem.
    #[schema(example = "invalid request body: unknown field `nmae`")]
    pub message: String,
    /// Every problem of an invalid import or query, each with where it is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// One problem of an invalid import or query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// Line of a CSV or VCF file (the header is line 1), or position in a JSON array (from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// Column (CSV, VCF) or key (JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// JSON Pointer into a request body, e.g. `/criteria/and/2/min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Stable code, e.g. `missing-value`, `unknown-field`, `incompatible-unit`.
    pub code: &'static str,
    /// What is wrong; never the value itself.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // Logged inside the request span, so the request id travels with it.
            tracing::error!(error = ?self, code = self.code(), "request failed");
        }
        let message = match &self {
            Self::Database(sqlx::Error::PoolTimedOut) => "the database is busy; retry shortly".to_owned(),
            _ => self.to_string(),
        };
        let code = self.code();
        let unauthorized = matches!(self, Self::Unauthorized(_));
        let retry_after = match &self {
            Self::TooManyRequests { retry_after, .. }
            | Self::SubmissionLimit { retry_after, .. }
            | Self::DownloadRateExceeded { retry_after, .. } => Some(*retry_after),
            Self::TooManyDownloads(_) => Some(5),
            _ => None,
        };
        let problems = match self {
            Self::Invalid { problems, .. } => problems,
            _ => Vec::new(),
        };
        let mut response = (status, Json(ErrorBody { code, message, problems })).into_response();
        if unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType("expected a request body with content type application/json".into())
            }
            JsonRejection::BytesRejection(ref inner) if inner.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::InvalidBody(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::InvalidQuery(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::InvalidPath(rejection.body_text())
    }
}

/// Maps named constraint violations to API errors (`on_constraint("cohort_slug_key", …)`).
pub trait ResultExt<T> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> ApiError) -> Result<T, ApiError>;
}

impl<T, E: Into<ApiError>> ResultExt<T> for Result<T, E> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> ApiError) -> Result<T, ApiError> {
        self.map_err(|e| match e.into() {
            ApiError::Database(sqlx::Error::Database(db)) if db.constraint() == Some(name) => map(),
            other => other,
        })
    }
}

/// Result of a handler.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Why a request that was understood is refused by a rule: the closed set of
/// `403` codes besides `forbidden` (a role the caller lacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// The project holds no grant for the cohort.
    NoGrant,
    /// The grant is approved but the PI has not accepted the data use agreement yet.
    GrantPending,
    /// The grant starts later.
    GrantNotYetValid,
    /// A steward suspended the grant.
    GrantSuspended,
    /// A steward revoked the grant.
    GrantRevoked,
    /// The grant has ended; the PI can request a renewal.
    GrantExpired,
    /// The grant was closed with its project.
    GrantClosed,
    /// The project is closed: no new application, grant or key.
    ProjectClosed,
    /// The question or request reaches beyond the grant's scope (a field, modality, annotation kind or imaging).
    OutsideGrant,
    /// A duty of the grant is overdue beyond the grace period; fulfilling it lifts the hold.
    ObligationOverdue,
    /// A fee is neither paid nor waived.
    FeeUnsettled,
    /// A steward has not verified the caller's bona fides yet.
    UnverifiedProfile,
    /// The cohorts' consent terms limit the time of use (DUO TS).
    ConsentTimeLimit,
    /// A cohort's publication moratorium (DUO MOR) has not ended.
    PublicationMoratorium,
    /// The application's state does not allow this step.
    InvalidTransition,
    /// The steward must recuse from this application.
    MustRecuse,
    /// An open cohort's click-through agreement is not accepted yet (or not by a signed-in user).
    AgreementRequired,
    /// The challenge has closed: no more submissions.
    ChallengeClosed,
    /// The challenge's leaderboard is shown only once it has closed.
    LeaderboardSealed,
}

impl Refusal {
    /// Every code, as the contract lists them.
    pub const ALL: [Self; 19] = [
        Self::NoGrant,
        Self::GrantPending,
        Self::GrantNotYetValid,
        Self::GrantSuspended,
        Self::GrantRevoked,
        Self::GrantExpired,
        Self::GrantClosed,
        Self::ProjectClosed,
        Self::OutsideGrant,
        Self::ObligationOverdue,
        Self::FeeUnsettled,
        Self::UnverifiedProfile,
        Self::ConsentTimeLimit,
        Self::PublicationMoratorium,
        Self::InvalidTransition,
        Self::MustRecuse,
        Self::AgreementRequired,
        Self::ChallengeClosed,
        Self::LeaderboardSealed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoGrant => "no-grant",
            Self::GrantPending => "grant-pending",
            Self::GrantNotYetValid => "grant-not-yet-valid",
            Self::GrantSuspended => "grant-suspended",
            Self::GrantRevoked => "grant-revoked",
            Self::GrantExpired => "grant-expired",
            Self::GrantClosed => "grant-closed",
            Self::ProjectClosed => "project-closed",
            Self::OutsideGrant => "outside-grant",
            Self::ObligationOverdue => "obligation-overdue",
            Self::FeeUnsettled => "fee-unsettled",
            Self::UnverifiedProfile => "unverified-profile",
            Self::ConsentTimeLimit => "consent-time-limit",
            Self::PublicationMoratorium => "publication-moratorium",
            Self::InvalidTransition => "invalid-transition",
            Self::MustRecuse => "must-recuse",
            Self::AgreementRequired => "agreement-required",
            Self::ChallengeClosed => "challenge-closed",
            Self::LeaderboardSealed => "leaderboard-sealed",
        }
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::Refusal;

    #[test]
    fn every_refusal_code_is_written_in_the_contract_as_it_is_answered() {
        for code in Refusal::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        let contract: serde_json::Value =
            serde_json::from_str(include_str!("../openapi/openapi.json")).expect("the committed contract");
        let listed = &contract["components"]["schemas"]["Refusal"]["enum"];
        let listed: Vec<&str> =
            listed.as_array().expect("Refusal is an enum").iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(listed, Refusal::ALL.map(Refusal::as_str));
    }
}
