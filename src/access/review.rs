//! The committee's rules: who must recuse, how many votes decide, and what a
//! decision does (an approval makes a pending grant and the project's key).

use chrono::{Days, Months, NaiveTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::db::{self, ApplicationRow};
use super::grants::{self, Conditions, GrantState, NewVersion};
use super::state::{self, Action, Actor, State};
use crate::audit::{self, NewEvent};
use crate::config::AccessConfig;
use crate::deid::pseudonym::RegistryKey;
use crate::error::ApiError;

/// Why `steward` must stay out of reviewing the project's application, if they must.
pub async fn must_recuse(
    tx: &mut PgConnection,
    config: &AccessConfig,
    project_id: Uuid,
    steward: &str,
) -> Result<Option<String>, ApiError> {
    let (member, same_institution): (bool, bool) = sqlx::query_as(
        "select exists (select 1 from project_member where project_id = $1 and username = $2 and removed_at is null),
                exists (select 1 from project_member m
                        join researcher_profile p on p.username = m.username
                        join researcher_profile s on s.username = $2
                        where m.project_id = $1 and m.removed_at is null and m.username <> $2
                          and lower(trim(p.institution)) = lower(trim(s.institution)))",
    )
    .bind(project_id)
    .bind(steward)
    .fetch_one(&mut *tx)
    .await?;
    Ok(if member {
        Some("the steward is a member of the project".into())
    } else if same_institution && config.recuse_same_institution {
        Some("the steward works at the same institution as a member of the project".into())
    } else {
        None
    })
}

/// Votes that decide an application: more for controlled cohorts.
pub async fn quorum(tx: &mut PgConnection, config: &AccessConfig, app: &ApplicationRow) -> Result<i64, ApiError> {
    let controlled: bool =
        sqlx::query_scalar("select exists (select 1 from cohort where slug = any($1) and tier = 'controlled')")
            .bind(&app.draft.scope.cohorts)
            .fetch_one(&mut *tx)
            .await?;
    Ok(i64::from(if controlled { config.quorum_controlled } else { config.quorum_registered }).max(1))
}

/// Moves `app` along `action`, or refuses with the state machine's reason.
pub async fn advance(
    tx: &mut PgConnection,
    app: &ApplicationRow,
    action: Action,
    actor: Actor,
    who: &str,
    reason: Option<&str>,
) -> Result<State, ApiError> {
    let to = state::next(app.state, action, actor)
        .map_err(|why| ApiError::Refused { code: crate::error::Refusal::InvalidTransition, message: why })?;
    // A closed project's applications may only be withdrawn.
    if action != Action::Withdraw {
        super::projects::ensure_open(tx, app.project_id).await?;
    }
    db::transition(tx, app, to, who, reason).await?;
    Ok(to)
}

/// Approves `app` (by votes or by rule): a pending grant of its scope under
/// `conditions`, from now until its requested duration or the conditions' end,
/// and the project's own pseudonymization key if it has none yet.
pub async fn approve(
    tx: &mut PgConnection,
    key: &RegistryKey,
    app: &ApplicationRow,
    conditions: &Conditions,
    who: &str,
    by_rule: bool,
) -> Result<Uuid, ApiError> {
    let reason =
        if by_rule { "approved by the cohorts' auto-eligibility rule" } else { "approved by the committee's votes" };
    advance(tx, app, Action::Approve, Actor::Rule, who, Some(reason)).await?;
    sqlx::query("update application set decided_by_rule = $2 where application_id = $1")
        .bind(app.id)
        .bind(by_rule)
        .execute(&mut *tx)
        .await?;
    let now = Utc::now();
    let months = app.draft.intended_use.duration_months;
    let mut not_after = now.checked_add_months(Months::new(months)).unwrap_or(now);
    if let Some(end) = conditions.expires_on {
        let end = end.checked_add_days(Days::new(1)).unwrap_or(end).and_time(NaiveTime::MIN).and_utc();
        not_after = not_after.min(end);
    }
    if not_after <= now {
        return Err(ApiError::BadRequest("the conditions end the grant before it starts".into()));
    }
    let grant_id = Uuid::new_v4();
    grants::insert(
        tx,
        NewVersion {
            grant_id,
            version: 1,
            project_id: app.project_id,
            application_id: app.id,
            state: GrantState::Pending,
            scope: &app.draft.scope,
            conditions,
            not_before: now,
            not_after,
            reason: Some(reason),
            created_by: who,
        },
    )
    .await?;
    let snapshots = super::snapshot::take(tx, grant_id, &app.draft.scope.cohorts).await?;
    let new_key = grants::ensure_project_key(tx, key, app.project_id).await?;
    let fee = super::duties::charge(tx, app.id, grant_id, &app.draft.scope, "access").await?;
    let pi = super::duties::pi_of(&mut *tx, app.project_id).await?;
    super::duties::notify(
        tx,
        &pi,
        "application.approved",
        "Your application was approved: accept the data use agreement to activate the grant",
        &format!("application:{}", app.id),
    )
    .await?;
    audit::record(
        tx,
        NewEvent::new(who, "application.approve").target(format!("application:{}", app.id)).details(json!({
            "version": app.version, "by_rule": by_rule, "grant": grant_id, "not_after": not_after,
            "conditions": conditions, "project_key_created": new_key, "fee": fee, "snapshots": snapshots,
        })),
    )
    .await?;
    Ok(grant_id)
}
