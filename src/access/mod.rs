//! Access governance: researcher profiles, projects and members, versioned
//! applications with a consent check against each cohort's DUO terms,
//! committee review (assignments, recusal, declarations of interest, votes
//! with a quorum per cohort tier, threaded comments), and versioned grants
//! checked on every request, and the steward's inbox of what waits for them.

pub mod applications;
pub mod closure;
pub mod consent;
pub mod db;
pub mod dua;
pub mod duties;
pub mod grants;
pub mod inbox;
pub mod projects;
pub mod publications;
pub mod reminders;
pub mod renewals;
pub mod review;
pub mod review_comments;
pub mod scope;
pub mod snapshot;
pub mod standing;
pub mod state;
pub mod withdrawal;

/// Fail closed: a stored JSON value that cannot be read refuses whatever needs
/// it, with a log line saying `{what} cannot be read` and naming what it belongs
/// to (`of`); it is never taken for absent or empty.
pub(crate) fn read_stored<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
    of: &dyn std::fmt::Display,
) -> Result<T, crate::error::ApiError> {
    serde_json::from_value(value).map_err(|e| {
        tracing::error!(of = %of, error = %e, "{what} cannot be read");
        crate::error::ApiError::Internal(anyhow::anyhow!("{what} of {of} cannot be read"))
    })
}
