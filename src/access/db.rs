//! Database functions of applications and their review.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::consent::IntendedUse;
use super::grants::Scope;
use super::state::State;
use crate::error::ApiError;

/// What an application says, kept whole at every submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationContent {
    pub title: String,
    /// For the public register of approved projects: plain words, no jargon.
    pub lay_summary: String,
    /// Scientific rationale and aims.
    pub rationale: String,
    pub methods: String,
    pub scope: Scope,
    /// The intended use in GA4GH DUO terms, with ethics approval and duration.
    pub intended_use: IntendedUse,
    /// Where and how the data will be processed and protected.
    pub data_security: String,
    pub public_interest: String,
    /// Per cohort slug: why the committee should accept a use its consent terms do not permit.
    #[serde(default)]
    pub justifications: BTreeMap<String, String>,
}

fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(e.into())
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

type Row = (
    Uuid,
    Uuid,
    String,
    Value,
    i32,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<NaiveDate>,
    Option<DateTime<Utc>>,
    bool,
    Option<String>,
    Option<String>,
);

const COLUMNS: &str = "application_id, project_id, state, draft, version, created_by, created_at, submitted_at, \
                       due_on, decided_at, decided_by_rule, dua_version, dua_sha256";

fn row(r: Row) -> Result<ApplicationRow, ApiError> {
    Ok(ApplicationRow {
        id: r.0,
        project_id: r.1,
        state: State::parse(&r.2).ok_or_else(|| internal(anyhow::anyhow!("unknown application state")))?,
        draft: serde_json::from_value(r.3).map_err(internal)?,
        version: r.4,
        created_by: r.5,
        created_at: r.6,
        submitted_at: r.7,
        due_on: r.8,
        decided_at: r.9,
        decided_by_rule: r.10,
        dua_version: r.11,
        dua_sha256: r.12,
    })
}

pub async fn create(
    tx: &mut PgConnection,
    project_id: Uuid,
    by: &str,
    content: &ApplicationContent,
) -> Result<Uuid, ApiError> {
    Ok(sqlx::query_scalar(
        "insert into application (project_id, draft, created_by) values ($1, $2, $3) returning application_id",
    )
    .bind(project_id)
    .bind(serde_json::to_value(content).map_err(internal)?)
    .bind(by)
    .fetch_one(tx)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ApplicationRow>, ApiError> {
    let r: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLUMNS} from application where application_id = $1")))
            .bind(id)
            .fetch_optional(db)
            .await?;
    r.map(row).transpose()
}

/// The application, locked until `tx` ends.
pub async fn lock(tx: &mut PgConnection, id: Uuid) -> Result<Option<ApplicationRow>, ApiError> {
    let r: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from application where application_id = $1 for update"
    )))
    .bind(id)
    .fetch_optional(tx)
    .await?;
    r.map(row).transpose()
}

pub async fn of_project(db: impl PgExecutor<'_>, project_id: Uuid) -> Result<Vec<ApplicationRow>, ApiError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from application where project_id = $1 order by created_at desc"
    )))
    .bind(project_id)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(row).collect()
}

pub async fn replace_draft(tx: &mut PgConnection, id: Uuid, content: &ApplicationContent) -> Result<(), ApiError> {
    sqlx::query("update application set draft = $2 where application_id = $1")
        .bind(id)
        .bind(serde_json::to_value(content).map_err(internal)?)
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
    sqlx::query(
        "update application set state = $2, decided_at = case when $3 then now() else decided_at end
         where application_id = $1",
    )
    .bind(app.id)
    .bind(to.as_str())
    .bind(decided)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into application_transition (application_id, from_state, to_state, actor, reason)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(app.id)
    .bind(app.state.as_str())
    .bind(to.as_str())
    .bind(actor)
    .bind(reason)
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
    sqlx::query(
        "insert into application_version (application_id, version, content, created_by) values ($1, $2, $3, $4)",
    )
    .bind(app.id)
    .bind(version)
    .bind(serde_json::to_value(&app.draft).map_err(internal)?)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update application set version = $2, submitted_at = coalesce(submitted_at, now()),
                                due_on = coalesce(due_on, $3)
         where application_id = $1",
    )
    .bind(app.id)
    .bind(version)
    .bind(due_on)
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
    let rows: Vec<(i32, Value, String, DateTime<Utc>)> = sqlx::query_as(
        "select version, content, created_by, created_at from application_version
         where application_id = $1 order by version",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(version, content, created_by, created_at)| {
            Ok(Version { version, content: serde_json::from_value(content).map_err(internal)?, created_by, created_at })
        })
        .collect()
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
    type Row = (String, String, String, Option<String>, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "select from_state, to_state, actor, reason, at from application_transition
         where application_id = $1 order by transition_id",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(from, to, actor, reason, at)| {
            let parse = |s: &str| State::parse(s).ok_or_else(|| internal(anyhow::anyhow!("unknown state")));
            Ok(Transition { from: parse(&from)?, to: parse(&to)?, actor, reason, at })
        })
        .collect()
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
