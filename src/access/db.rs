//! Database functions of applications and their review.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::consent::{ConsentTerms, IntendedUse};
use super::grants::Scope;
use super::state::State;
use crate::error::ApiError;
use crate::registry::Tier;

/// What an application says, kept whole at every submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationContent {
    #[schema(max_length = 500)]
    pub title: String,
    /// For the public register of approved projects: plain words, no jargon.
    #[schema(max_length = 20_000)]
    pub lay_summary: String,
    /// Scientific rationale and aims.
    #[schema(max_length = 20_000)]
    pub rationale: String,
    #[schema(max_length = 20_000)]
    pub methods: String,
    pub scope: Scope,
    /// The intended use in GA4GH DUO terms, with ethics approval and duration.
    pub intended_use: IntendedUse,
    /// Where and how the data will be processed and protected.
    #[schema(max_length = 20_000)]
    pub data_security: String,
    #[schema(max_length = 20_000)]
    pub public_interest: String,
    /// Per cohort slug: why the committee should accept a use its consent terms do not permit.
    #[serde(default)]
    pub justifications: BTreeMap<String, String>,
}

fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(e.into())
}

/// Fail closed: a stored `what` (of the application or project `of`) that
/// cannot be read refuses whatever needs it, with a log line naming it; it is
/// never taken for absent. Other database errors pass through.
fn unreadable(what: &'static str, of: Uuid) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |e| match e {
        sqlx::Error::ColumnDecode { index, source } => {
            tracing::error!(id = %of, column = %index, error = %source, "a stored {what} cannot be read");
            internal(anyhow::anyhow!("a stored {what} cannot be read ({of})"))
        }
        other => other.into(),
    }
}

/// An application as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub state: State,
    /// The working copy (equal to the latest version unless being edited).
    pub draft: ApplicationContent,
    /// The latest submitted version (0: never submitted).
    pub version: i32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    /// When the committee's decision is due (working days after the first submission).
    pub due_on: Option<NaiveDate>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Approved by the cohorts' auto-eligibility rule, not by votes.
    pub decided_by_rule: bool,
    /// The data use agreement version the PI accepted.
    pub dua_version: Option<String>,
    /// The SHA-256 (hex) of that version's text.
    pub dua_sha256: Option<String>,
}

/// An `application` row as the queries read it (typed state, JSON draft).
struct Row {
    application_id: Uuid,
    project_id: Uuid,
    state: State,
    draft: Json<ApplicationContent>,
    version: i32,
    created_by: String,
    created_at: DateTime<Utc>,
    submitted_at: Option<DateTime<Utc>>,
    due_on: Option<NaiveDate>,
    decided_at: Option<DateTime<Utc>>,
    decided_by_rule: bool,
    dua_version: Option<String>,
    dua_sha256: Option<String>,
}

impl From<Row> for ApplicationRow {
    fn from(r: Row) -> Self {
        ApplicationRow {
            id: r.application_id,
            project_id: r.project_id,
            state: r.state,
            draft: r.draft.0,
            version: r.version,
            created_by: r.created_by,
            created_at: r.created_at,
            submitted_at: r.submitted_at,
            due_on: r.due_on,
            decided_at: r.decided_at,
            decided_by_rule: r.decided_by_rule,
            dua_version: r.dua_version,
            dua_sha256: r.dua_sha256,
        }
    }
}

pub async fn create(
    tx: &mut PgConnection,
    project_id: Uuid,
    by: &str,
    content: &ApplicationContent,
) -> Result<Uuid, ApiError> {
    Ok(sqlx::query_scalar!(
        "insert into application (project_id, draft, created_by) values ($1, $2, $3) returning application_id",
        project_id,
        Json(content) as _,
        by,
    )
    .fetch_one(tx)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ApplicationRow>, ApiError> {
    let row = sqlx::query_as!(
        Row,
        r#"select application_id, project_id, state as "state: State", draft as "draft: Json<ApplicationContent>",
                  version, created_by, created_at, submitted_at, due_on, decided_at, decided_by_rule,
                  dua_version, dua_sha256
           from application where application_id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
    .map_err(unreadable("application", id))?;
    Ok(row.map(ApplicationRow::from))
}

/// The application, locked until `tx` ends.
pub async fn lock(tx: &mut PgConnection, id: Uuid) -> Result<Option<ApplicationRow>, ApiError> {
    let row = sqlx::query_as!(
        Row,
        r#"select application_id, project_id, state as "state: State", draft as "draft: Json<ApplicationContent>",
                  version, created_by, created_at, submitted_at, due_on, decided_at, decided_by_rule,
                  dua_version, dua_sha256
           from application where application_id = $1 for update"#,
        id,
    )
    .fetch_optional(tx)
    .await
    .map_err(unreadable("application", id))?;
    Ok(row.map(ApplicationRow::from))
}

pub async fn of_project(db: impl PgExecutor<'_>, project_id: Uuid) -> Result<Vec<ApplicationRow>, ApiError> {
    let rows = sqlx::query_as!(
        Row,
        r#"select application_id, project_id, state as "state: State", draft as "draft: Json<ApplicationContent>",
                  version, created_by, created_at, submitted_at, due_on, decided_at, decided_by_rule,
                  dua_version, dua_sha256
           from application where project_id = $1 order by created_at desc"#,
        project_id,
    )
    .fetch_all(db)
    .await
    .map_err(unreadable("application of a project", project_id))?;
    Ok(rows.into_iter().map(ApplicationRow::from).collect())
}

pub async fn replace_draft(tx: &mut PgConnection, id: Uuid, content: &ApplicationContent) -> Result<(), ApiError> {
    sqlx::query!("update application set draft = $2 where application_id = $1", id, Json(content) as _)
        .execute(tx)
        .await?;
    Ok(())
}

/// Records the dua version (and text digest) the PI accepted, now.
pub async fn accept_dua(tx: &mut PgConnection, id: Uuid, version: &str, sha256: &str) -> Result<(), ApiError> {
    sqlx::query!(
        "update application set dua_version = $2, dua_sha256 = $3, dua_accepted_at = now() where application_id = $1",
        id,
        version,
        sha256,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Moves the application to `to`, recording the transition.
pub async fn transition(
    tx: &mut PgConnection,
    app: &ApplicationRow,
    to: State,
    actor: &str,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    let decided = matches!(to, State::Approved | State::Rejected);
    sqlx::query!(
        "update application set state = $2, decided_at = case when $3 then now() else decided_at end
         where application_id = $1",
        app.id,
        to as State,
        decided,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into application_transition (application_id, from_state, to_state, actor, reason)
         values ($1, $2, $3, $4, $5)",
        app.id,
        app.state as State,
        to as State,
        actor,
        reason,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Keeps the draft whole as the next version; the first submission also sets the due date.
pub async fn append_version(
    tx: &mut PgConnection,
    app: &ApplicationRow,
    by: &str,
    due_on: NaiveDate,
) -> Result<i32, ApiError> {
    let version = app.version + 1;
    sqlx::query!(
        "insert into application_version (application_id, version, content, created_by) values ($1, $2, $3, $4)",
        app.id,
        version,
        Json(&app.draft) as _,
        by,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update application set version = $2, submitted_at = coalesce(submitted_at, now()),
                                due_on = coalesce(due_on, $3)
         where application_id = $1",
        app.id,
        version,
        due_on,
    )
    .execute(&mut *tx)
    .await?;
    Ok(version)
}

/// A submitted version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Version {
    pub version: i32,
    pub content: ApplicationContent,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

pub async fn versions(db: impl PgExecutor<'_>, id: Uuid) -> Result<Vec<Version>, ApiError> {
    let rows = sqlx::query!(
        r#"select version, content as "content: Json<ApplicationContent>", created_by, created_at
           from application_version where application_id = $1 order by version"#,
        id,
    )
    .fetch_all(db)
    .await
    .map_err(unreadable("application version", id))?;
    Ok(rows
        .into_iter()
        .map(|r| Version {
            version: r.version,
            content: r.content.0,
            created_by: r.created_by,
            created_at: r.created_at,
        })
        .collect())
}

/// A state change as recorded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub actor: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

pub async fn transitions(db: impl PgExecutor<'_>, id: Uuid) -> Result<Vec<Transition>, ApiError> {
    sqlx::query_as!(
        Transition,
        r#"select from_state as "from: State", to_state as "to: State", actor, reason, at
           from application_transition where application_id = $1 order by transition_id"#,
        id,
    )
    .fetch_all(db)
    .await
    .map_err(unreadable("application transition", id))
}

/// The grant an approval made for the application (its first version's id).
pub async fn grant_of(tx: &mut PgConnection, id: Uuid) -> Result<Uuid, ApiError> {
    Ok(sqlx::query_scalar!("select grant_id from access_grant where application_id = $1 and version = 1", id)
        .fetch_one(tx)
        .await?)
}

/// Whether a steward verified `username`'s researcher profile.
pub async fn profile_verified(db: impl PgExecutor<'_>, username: &str) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"select exists (select 1 from researcher_profile where username = $1 and verified_at is not null) as "verified!""#,
        username,
    )
    .fetch_one(db)
    .await?)
}

/// A cohort's tier and its consent terms as stored (undecoded: see
/// [`super::consent::stored`]), if the cohort exists.
pub async fn cohort_terms(db: impl PgExecutor<'_>, slug: &str) -> Result<Option<(Tier, Option<Value>)>, ApiError> {
    let row = sqlx::query!(r#"select tier as "tier: Tier", consent_terms from cohort where slug = $1"#, slug)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| (r.tier, r.consent_terms)))
}

/// Whether every one of `cohorts` is `registered` and approves applications by rule.
pub async fn auto_eligible(db: impl PgExecutor<'_>, cohorts: &[String]) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) = cardinality($1::text[]) as "eligible!"
           from cohort where slug = any($1) and tier = 'registered' and auto_approve"#,
        cohorts,
    )
    .fetch_one(db)
    .await?)
}

/// Stores a cohort's consent terms and auto-eligibility; its tier, if the cohort exists.
pub async fn set_consent_terms(
    tx: &mut PgConnection,
    slug: &str,
    terms: &ConsentTerms,
    auto_approve: bool,
) -> Result<Option<Tier>, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"update cohort set consent_terms = $2, auto_approve = $3 where slug = $1 returning tier as "tier: Tier""#,
        slug,
        Json(terms) as _,
        auto_approve,
    )
    .fetch_optional(tx)
    .await?)
}

/// The date `days` working days (Monday to Friday) after `from`.
pub fn working_days_after(from: NaiveDate, days: u32) -> NaiveDate {
    use chrono::Datelike;
    let mut day = from;
    let mut left = days;
    while left > 0 {
        day = day.succ_opt().unwrap_or(day);
        if day.weekday().number_from_monday() <= 5 {
            left -= 1;
        }
    }
    day
}

/// The top-level fields that differ between two versions, in order.
pub fn changed_fields(before: &ApplicationContent, after: &ApplicationContent) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) = (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// One difference between two versions: where, and the values on each side
/// (absent where the field is absent).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Change {
    /// A JSON pointer into the content, e.g. `/scope/cohorts` or `/title`.
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Every difference between two versions (none before: everything is new),
/// down to the leaves of objects; lists are compared whole. In pointer order.
pub fn diff(before: Option<&ApplicationContent>, after: &ApplicationContent) -> Vec<Change> {
    let a = before.map_or(Ok(Value::Object(serde_json::Map::new())), serde_json::to_value);
    let (Ok(a), Ok(b)) = (a, serde_json::to_value(after)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff_values(String::new(), Some(&a), Some(&b), &mut out);
    out
}

fn diff_values(path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    match (a, b) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                diff_values(format!("{path}/{escaped}"), a.get(key), b.get(key), out);
            }
        }
        (a, b) if a == b => {}
        // A field that is null on one side and absent on the other has not changed.
        (None | Some(Value::Null), None | Some(Value::Null)) => {}
        (a, b) => out.push(Change { path, before: a.cloned(), after: b.cloned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ApplicationContent {
        serde_json::from_value(serde_json::json!({
            "title": "Glioma growth", "lay_summary": "s", "rationale": "r", "methods": "m",
            "scope": {"cohorts": ["brain-mri"], "modalities": ["MR"], "imaging": true},
            "intended_use": {"purpose": "HMB", "duration_months": 24},
            "data_security": "HPC", "public_interest": "p"
        }))
        .unwrap()
    }

    #[test]
    fn a_diff_names_each_changed_leaf_with_both_values_and_escapes_keys() {
        let before = sample();
        let mut after = sample();
        after.scope.modalities.push("CT".into());
        after.justifications.insert("brain/mri~x".into(), "needed".into());
        let changes = diff(Some(&before), &after);
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/justifications/brain~1mri~0x", "/scope/modalities"]);
        assert_eq!(changes[0].before, None);
        assert_eq!(changes[1].after, Some(serde_json::json!(["MR", "CT"])));
        assert!(diff(Some(&before), &before).is_empty(), "no change, no diff");
        let first = diff(None, &before);
        assert!(first.iter().all(|c| c.before.is_none()) && first.iter().any(|c| c.path == "/title"));
    }

    #[test]
    fn due_dates_count_working_days_only() {
        let friday = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert_eq!(working_days_after(friday, 1), NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
        assert_eq!(working_days_after(friday, 20), NaiveDate::from_ymd_opt(2026, 12, 25).unwrap());
    }
}
