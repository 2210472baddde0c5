//! Cohort snapshots: the subjects a grant covers, frozen at approval.
//!
//! A grant does not follow its cohorts as they grow: it covers, per cohort,
//! the subjects who had joined by the snapshot's instant and had not withdrawn
//! by then. Later withdrawals still take subjects out (and send the projects
//! that hold them a notice); later arrivals need a new application. A snapshot
//! stores no list, only its instant, size and a digest of the registry
//! pseudonyms: membership rows carry the wall-clock time of their insert, and
//! the snapshot is taken under a lock that waits for every writer in flight,
//! so "joined at or before the instant" is exactly the set the snapshot saw.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// A cohort as a grant froze it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Snapshot {
    /// Cohort slug.
    pub cohort: String,
    /// The instant the cohort was frozen (the approval).
    pub as_of: DateTime<Utc>,
    /// Subjects in the cohort at that instant who had not withdrawn.
    pub subjects: i32,
    /// SHA-256 (hex) of their registry pseudonyms, sorted, one per line.
    pub digest: String,
}

/// Freezes `cohorts` for `grant_id`, now.
pub async fn take(tx: &mut PgConnection, grant_id: Uuid, cohorts: &[String]) -> Result<Vec<Snapshot>, ApiError> {
    // Waits for every transaction adding members to finish and holds new ones
    // back until this one commits: approvals are rare and quick.
    sqlx::query!("lock table cohort_subject in share mode").execute(&mut *tx).await?;
    Ok(sqlx::query_as!(
        Snapshot,
        r#"with frozen as (
             select c.cohort_id, c.slug, t.at, count(s.subject_id)::integer as subjects,
                    encode(sha256(convert_to(coalesce(
                        string_agg(s.pseudonym, E'\n' order by s.pseudonym collate "C"), ''), 'UTF8')), 'hex') as digest
             from (select clock_timestamp() as at) t
             cross join cohort c
             left join cohort_subject cs on cs.cohort_id = c.cohort_id and cs.added_at <= t.at
             left join subject s on s.subject_id = cs.subject_id and s.withdrawn_at is null
             where c.slug = any ($2)
             group by c.cohort_id, c.slug, t.at
         ), saved as (
             insert into grant_snapshot (grant_id, cohort_id, as_of, subjects, digest)
             select $1, cohort_id, at, subjects, digest from frozen
         )
         select slug as "cohort!", at as "as_of!", subjects as "subjects!", digest as "digest!"
         from frozen order by slug"#,
        grant_id,
        cohorts,
    )
    .fetch_all(&mut *tx)
    .await?)
}

/// The snapshots of a grant, by cohort slug.
pub async fn of_grant(db: impl PgExecutor<'_>, grant_id: Uuid) -> Result<Vec<Snapshot>, ApiError> {
    Ok(sqlx::query_as!(
        Snapshot,
        "select c.slug as cohort, g.as_of, g.subjects, g.digest
         from grant_snapshot g join cohort c using (cohort_id)
         where g.grant_id = $1 order by c.slug",
        grant_id,
    )
    .fetch_all(db)
    .await?)
}

/// A subject of a snapshot as it stands now.
#[derive(Debug, Clone)]
pub struct Member {
    /// The registry pseudonym (never shown to a project as such).
    pub pseudonym: String,
    /// `full` or `imaging` once withdrawn.
    pub withdrawal_scope: Option<String>,
}

/// The subjects of `grant_id`'s snapshot of `cohort`, withdrawn ones included
/// (the caller decides what a withdrawal leaves).
pub async fn members(db: impl PgExecutor<'_>, grant_id: Uuid, cohort: &str) -> Result<Vec<Member>, ApiError> {
    Ok(sqlx::query_as!(
        Member,
        "select s.pseudonym, s.withdrawal_scope
         from grant_snapshot g
         join cohort c on c.cohort_id = g.cohort_id and c.slug = $2
         join cohort_subject cs on cs.cohort_id = g.cohort_id and cs.added_at <= g.as_of
         join subject s on s.subject_id = cs.subject_id and (s.withdrawn_at is null or s.withdrawn_at > g.as_of)
         where g.grant_id = $1",
        grant_id,
        cohort,
    )
    .fetch_all(db)
    .await?)
}

/// The open projects that may hold `subject_id`'s data: those with a grant
/// that was once active and whose snapshot covers the subject, and, for a
/// withdrawal of imaging only, whose grant covers imaging.
pub async fn holders(db: impl PgExecutor<'_>, subject_id: Uuid, scope: &str) -> Result<Vec<Uuid>, ApiError> {
    Ok(sqlx::query_scalar!(
        "select distinct g.project_id
         from grant_snapshot gs
         join cohort_subject cs on cs.cohort_id = gs.cohort_id and cs.subject_id = $1 and cs.added_at <= gs.as_of
         join access_grant g on g.grant_id = gs.grant_id and g.version = 1
         join project p on p.project_id = g.project_id and p.closed_at is null
         where exists (select 1 from access_grant v where v.grant_id = gs.grant_id and v.state = 'active')
           and ($2 = 'full' or exists (select 1 from access_grant v where v.grant_id = gs.grant_id
                                       and (v.scope ->> 'imaging')::boolean))",
        subject_id,
        scope,
    )
    .fetch_all(db)
    .await?)
}
