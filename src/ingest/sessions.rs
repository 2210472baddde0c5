//! Upload sessions: a site data manager opens one for a cohort and a site,
//! adds files, and commits. Commit publishes the session's instances at once;
//! an aborted or abandoned session publishes nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{FileReport, Outcome, Target};

/// An upload session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    pub id: Uuid,
    /// Cohort slug the data joins.
    pub cohort: String,
    /// Site code the data comes from.
    pub site: String,
    pub created_by: String,
    /// `open`, `committed` or `aborted`.
    pub state: String,
    /// Files received so far.
    pub file_count: i32,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub cohort_id: Uuid,
    #[serde(skip)]
    pub site_id: Uuid,
}

impl Session {
    /// Where this session's files go.
    pub fn target(&self) -> Target {
        Target {
            session_id: self.id,
            cohort_id: self.cohort_id,
            site_id: self.site_id,
            site_code: self.site.clone(),
            only_study: None,
        }
    }
}

/// Opens a session; `None` when the cohort or the site does not exist.
pub async fn create_session(
    tx: &mut PgConnection,
    cohort: &str,
    site: &str,
    actor: &str,
) -> Result<Option<Session>, sqlx::Error> {
    let id = sqlx::query_scalar!(
        "insert into upload_session (cohort_id, site_id, created_by)
         select c.cohort_id, s.site_id, $3 from cohort c, site s where c.slug = $1 and s.code = $2
         returning upload_session_id",
        cohort,
        site,
        actor
    )
    .fetch_optional(&mut *tx)
    .await?;
    match id {
        Some(id) => get_session(&mut *tx, id).await,
        None => Ok(None),
    }
}

pub async fn get_session(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as!(
        Session,
        "select u.upload_session_id as id, c.slug as cohort, s.code as site, u.created_by, u.state, u.file_count,
                u.created_at, u.closed_at, u.cohort_id, u.site_id
         from upload_session u join cohort c using (cohort_id) join site s using (site_id)
         where u.upload_session_id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

/// Upload sessions, newest first: those `created_by` opened, or every one.
pub async fn list_sessions(db: impl PgExecutor<'_>, created_by: Option<&str>) -> Result<Vec<Session>, sqlx::Error> {
    sqlx::query_as!(
        Session,
        "select u.upload_session_id as id, c.slug as cohort, s.code as site, u.created_by, u.state, u.file_count,
                u.created_at, u.closed_at, u.cohort_id, u.site_id
         from upload_session u join cohort c using (cohort_id) join site s using (site_id)
         where $1::text is null or u.created_by = $1
         order by u.created_at desc limit 500",
        created_by
    )
    .fetch_all(db)
    .await
}

/// The per-file report of a session, in order.
pub async fn list_file_reports(db: impl PgExecutor<'_>, id: Uuid) -> Result<Vec<FileReport>, sqlx::Error> {
    let rows = sqlx::query!(
        "select ordinal, outcome, code, message, sop_uid, size_bytes from upload_file
         where upload_session_id = $1 order by ordinal",
        id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| FileReport {
            ordinal: r.ordinal,
            outcome: match r.outcome.as_str() {
                "stored" => Outcome::Stored,
                "duplicate" => Outcome::Duplicate,
                "quarantined" => Outcome::Quarantined,
                _ => Outcome::Rejected,
            },
            code: r.code,
            message: r.message,
            sop_uid: r.sop_uid,
            sop_class_uid: None,
            size_bytes: r.size_bytes,
        })
        .collect())
}

/// Closes an open session as `committed` (publishing its staged instances) or
/// `aborted` (dropping them). Returns `Err(state)` when it was not open, and on
/// abort the object keys that no longer have a row.
pub async fn close_session(
    tx: &mut PgConnection,
    id: Uuid,
    commit: bool,
) -> Result<Result<(i64, Vec<String>), String>, sqlx::Error> {
    let state = sqlx::query_scalar!("select state from upload_session where upload_session_id = $1 for update", id)
        .fetch_one(&mut *tx)
        .await?;
    if state != "open" {
        return Ok(Err(state));
    }
    let new_state = if commit { "committed" } else { "aborted" };
    sqlx::query!("update upload_session set state = $2, closed_at = now() where upload_session_id = $1", id, new_state)
        .execute(&mut *tx)
        .await?;
    if commit {
        let published = sqlx::query!(
            "update instance set status = 'published', published_at = now()
             where upload_session_id = $1 and status = 'staged'",
            id
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if published > 0 {
            sqlx::query!(
                "select refresh_discovery_series(array(select distinct series_id from instance where upload_session_id = $1))",
                id
            )
            .execute(&mut *tx)
            .await?;
            // SEG and RTSTRUCT of this session, and earlier ones waiting for images it brought.
            sqlx::query!(
                "select link_dicom_annotations(array(
                    select instance_id from instance
                    where upload_session_id = $1 and status = 'published'
                      and sop_class_uid in ('1.2.840.10008.5.1.4.1.1.66.4', '1.2.840.10008.5.1.4.1.1.481.3')
                    union
                    select a.source_instance_id from annotation a
                    join instance src on src.instance_id = a.source_instance_id
                    where a.target = 'study'
                      and src.referenced_sop_uids && array(select sop_uid from instance where upload_session_id = $1)))",
                id
            )
            .execute(&mut *tx)
            .await?;
            crate::jobs::enqueue(&mut *tx, &crate::dictionary::db::refresh_soon()).await?;
        }
        Ok(Ok((i64::try_from(published).unwrap_or(i64::MAX), Vec::new())))
    } else {
        let keys = sqlx::query_scalar!(
            "delete from instance where upload_session_id = $1 and status in ('staged', 'quarantined') returning object_key",
            id
        )
        .fetch_all(&mut *tx)
        .await?;
        Ok(Ok((0, keys)))
    }
}
