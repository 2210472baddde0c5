//! Releases as a project sees them: asking for one, its state and progress,
//! and the rules every download passes (the grant, checked on each request;
//! the bytes served, counted per file, user, session and day).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::build::{self, check_grant};
use crate::access::grants::{self, GrantState};
use crate::access::standing::Standing;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::config::AccessConfig;
use crate::error::{ApiError, Refusal};

/// Where a release is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ExtractState {
    /// Waiting for a worker.
    Queued,
    /// Being written; `progress` says how far.
    Building,
    /// Every file and the signed manifest are written: it can be downloaded.
    Ready,
    /// The build stopped for good; `error` says why.
    Failed,
    /// A later version replaces it.
    Superseded,
}

/// How far a build is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Progress {
    /// Files written.
    pub files_done: i32,
    /// Files the release will hold besides its manifest (known once the build started).
    pub files_planned: Option<i32>,
}

/// What a ready release holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExtractTotals {
    pub files: i64,
    pub bytes: i64,
    pub subjects: i32,
}

/// A release of a project, or a published version of an open cohort.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Extract {
    pub id: Uuid,
    /// The project it was released to (none for an open cohort's version).
    pub project_id: Option<Uuid>,
    /// The grant whose scope it holds (projects only).
    pub grant_id: Option<Uuid>,
    /// The open cohort it publishes (its slug; none for a project's release).
    pub open_cohort: Option<String>,
    #[serde(skip)]
    pub open_cohort_id: Option<Uuid>,
    /// An open cohort's version that includes the test split's labels.
    pub labels_revealed: bool,
    /// 1, 2, … within the project or open cohort.
    pub version: i32,
    pub state: ExtractState,
    /// Whether it holds imaging.
    pub imaging: bool,
    pub progress: Progress,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub ready_at: Option<DateTime<Utc>>,
    pub superseded_at: Option<DateTime<Utc>>,
    /// The earlier version it replaces.
    pub supersedes: Option<Uuid>,
    /// Why the build failed.
    pub error: Option<String>,
    /// SHA-256 (hex) of `manifest.json`, once ready.
    pub manifest_sha256: Option<String>,
    /// Once ready.
    pub totals: Option<ExtractTotals>,
}

struct Row {
    extract_id: Uuid,
    project_id: Option<Uuid>,
    grant_id: Option<Uuid>,
    open_cohort: Option<String>,
    open_cohort_id: Option<Uuid>,
    labels_revealed: bool,
    version: i32,
    state: ExtractState,
    imaging: bool,
    files_done: i32,
    files_planned: Option<i32>,
    created_by: String,
    created_at: DateTime<Utc>,
    ready_at: Option<DateTime<Utc>>,
    superseded_at: Option<DateTime<Utc>>,
    supersedes: Option<Uuid>,
    error: Option<String>,
    manifest_sha256: Option<String>,
    total_files: Option<i64>,
    total_bytes: Option<i64>,
    total_subjects: Option<i32>,
}

impl Extract {
    /// The project or open cohort it belongs to: its storage prefix and the key of its download limits.
    pub fn owner(&self) -> Uuid {
        self.project_id.or(self.open_cohort_id).unwrap_or_default()
    }

    /// Whether `principal` (none: anonymous) may see this open cohort's
    /// version: anyone once it is published, its organizers and admins while it builds.
    pub fn open_version_visible(&self, principal: Option<&Principal>) -> bool {
        let curator = principal.is_some_and(|p| p.has_role(Role::Organizer) || p.has_role(Role::Admin));
        curator || matches!(self.state, ExtractState::Ready | ExtractState::Superseded)
    }

    /// The audit target of what happens to it: `project:{id}` or `cohort:{slug}`.
    pub fn audit_target(&self) -> String {
        match (&self.project_id, &self.open_cohort) {
            (Some(project), _) => format!("project:{project}"),
            (None, Some(slug)) => format!("cohort:{slug}"),
            (None, None) => format!("extract:{}", self.id),
        }
    }
}

impl From<Row> for Extract {
    fn from(r: Row) -> Self {
        let totals = match (r.total_files, r.total_bytes, r.total_subjects) {
            (Some(files), Some(bytes), Some(subjects)) => Some(ExtractTotals { files, bytes, subjects }),
            _ => None,
        };
        Self {
            id: r.extract_id,
            project_id: r.project_id,
            grant_id: r.grant_id,
            open_cohort: r.open_cohort,
            open_cohort_id: r.open_cohort_id,
            labels_revealed: r.labels_revealed,
            version: r.version,
            state: r.state,
            imaging: r.imaging,
            progress: Progress { files_done: r.files_done, files_planned: r.files_planned },
            created_by: r.created_by,
            created_at: r.created_at,
            ready_at: r.ready_at,
            superseded_at: r.superseded_at,
            supersedes: r.supersedes,
            error: r.error,
            manifest_sha256: r.manifest_sha256,
            totals,
        }
    }
}

/// Releases by id or by project, newest first.
async fn rows(
    db: impl PgExecutor<'_>,
    extract_id: Option<Uuid>,
    project_id: Option<Uuid>,
    open_cohort_id: Option<Uuid>,
) -> Result<Vec<Extract>, ApiError> {
    Ok(sqlx::query_as!(
        Row,
        r#"select e.extract_id, e.project_id, e.grant_id, c.slug as "open_cohort?", e.open_cohort_id,
                  e.labels_revealed, e.version, e.state as "state: ExtractState", e.imaging, e.files_done,
                  e.files_planned, e.created_by, e.created_at, e.ready_at, e.superseded_at, e.supersedes, e.error,
                  e.manifest_sha256, e.total_files, e.total_bytes, e.total_subjects
           from extract e left join cohort c on c.cohort_id = e.open_cohort_id
           where ($1::uuid is null or e.extract_id = $1) and ($2::uuid is null or e.project_id = $2)
             and ($3::uuid is null or e.open_cohort_id = $3)
           order by e.project_id, e.open_cohort_id, e.version desc"#,
        extract_id,
        project_id,
        open_cohort_id
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(Extract::from)
    .collect())
}

/// One release.
pub async fn get(db: impl PgExecutor<'_>, extract_id: Uuid) -> Result<Option<Extract>, ApiError> {
    Ok(rows(db, Some(extract_id), None, None).await?.pop())
}

/// A project's releases, newest first.
pub async fn of_project(db: impl PgExecutor<'_>, project_id: Uuid) -> Result<Vec<Extract>, ApiError> {
    rows(db, None, Some(project_id), None).await
}

/// Asks for a new release of `project_id` from `grant_id` (default: the
/// project's grant in force): an accepted member, the grant checked now as
/// every data request is. Queues its build in the same transaction.
pub async fn request(
    db: &PgPool,
    rules: &AccessConfig,
    project_id: Uuid,
    principal: &Principal,
    standing: Standing,
    grant_id: Option<Uuid>,
) -> Result<Extract, ApiError> {
    standing.require_member("project", "only the project's accepted members ask for its releases")?;
    let project_grants = grants::of_project(db, project_id).await?;
    let grant = match grant_id {
        Some(id) => project_grants.iter().find(|g| g.id == id).ok_or(ApiError::NotFound("grant"))?,
        None => project_grants
            .iter()
            .find(|g| g.effective_state == GrantState::Active)
            .or_else(|| project_grants.first())
            .ok_or_else(|| ApiError::Refused {
                code: Refusal::NoGrant,
                message: "the project has no grant; a release holds what a grant allows".into(),
            })?,
    };
    let imaging = grant.scope.imaging && !grant.conditions.no_imaging_download;
    if let Err(e) = check_grant(db, project_id, grant.id, &principal.username, imaging, rules).await {
        grants::audit_refusal(db, &principal.username, project_id, &e, "extract.request").await?;
        return Err(e);
    }
    let mut tx = db.begin().await?;
    // One request at a time per project, so versions follow each other.
    sqlx::query!("select project_id from project where project_id = $1 for update", project_id)
        .fetch_one(&mut *tx)
        .await?;
    let extract_id = sqlx::query_scalar!(
        "insert into extract (project_id, grant_id, version, imaging, created_by)
         values ($1, $2, (select coalesce(max(version), 0) + 1 from extract where project_id = $1), $3, $4)
         returning extract_id",
        project_id,
        grant.id,
        imaging,
        principal.username
    )
    .fetch_one(&mut *tx)
    .await?;
    crate::jobs::enqueue(&mut *tx, &build::job(extract_id)).await?;
    let extract = get(&mut *tx, extract_id).await?.ok_or(ApiError::NotFound("extract"))?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "extract.requested").target(format!("project:{project_id}")).details(
            json!({ "extract": extract_id, "version": extract.version, "grant": grant.id, "imaging": imaging }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(extract)
}

/// The release `extract_id` as `caller` may download from it now, or why not.
///
/// A project's release: a signed-in accepted member of the project whose
/// grant is in force ([`check_grant`]; a refusal is audited). An open
/// cohort's version: anyone, signed in or not, unless the cohort has a
/// click-through agreement, which a signed-in user must have accepted. Either
/// way the release is `ready`, or `superseded` within its grace period.
pub async fn for_download(
    db: &PgPool,
    rules: &AccessConfig,
    grace_days: u32,
    caller: Option<&str>,
    extract_id: Uuid,
) -> Result<Extract, ApiError> {
    let extract = get(db, extract_id).await?.ok_or(ApiError::NotFound("extract"))?;
    match (extract.project_id, extract.grant_id, extract.open_cohort_id) {
        (Some(project_id), Some(grant_id), None) => {
            let username = caller.ok_or_else(|| {
                ApiError::Unauthorized("a project's release is downloaded by its signed-in members".into())
            })?;
            match check_grant(db, project_id, grant_id, username, extract.imaging, rules).await {
                Ok(_) => {}
                Err(ApiError::NotFound(_)) => return Err(ApiError::NotFound("extract")),
                Err(e) => {
                    grants::audit_refusal(db, username, project_id, &e, "extract.download").await?;
                    return Err(e);
                }
            }
        }
        (None, None, Some(cohort_id)) => crate::opencohort::publish::check_download(db, cohort_id, caller).await?,
        _ => return Err(ApiError::Internal(anyhow::anyhow!("a release with neither or both owners"))),
    }
    let grace = chrono::Duration::days(i64::from(grace_days));
    let within_grace =
        extract.state == ExtractState::Superseded && extract.superseded_at.is_some_and(|at| Utc::now() < at + grace);
    if extract.state == ExtractState::Superseded && !within_grace {
        return Err(ApiError::Conflict(format!(
            "release {} was superseded by a later version after a withdrawal, and its {grace_days} days of grace \
             have ended: download the latest version",
            extract.version
        )));
    }
    if extract.state != ExtractState::Ready && !within_grace {
        if extract.open_cohort_id.is_some() {
            return Err(ApiError::NotFound("extract")); // an open version is public only once published
        }
        return Err(ApiError::Conflict(format!(
            "release {} is {}, not ready",
            extract.version,
            serde_json::to_value(extract.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        )));
    }
    Ok(extract)
}

/// A file of a release, as recorded when it was written.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub size: i64,
    pub sha256: String,
    pub media_type: String,
    pub object_key: String,
}

/// The file at `path` of `extract_id`.
pub async fn file(db: impl PgExecutor<'_>, extract_id: Uuid, path: &str) -> Result<Option<StoredFile>, ApiError> {
    Ok(sqlx::query_as!(
        StoredFile,
        "select size, sha256, media_type, object_key from extract_file where extract_id = $1 and path = $2",
        extract_id,
        path
    )
    .fetch_optional(db)
    .await?)
}

/// Every file of `extract_id` with where it is stored, by path.
pub async fn stored_files(db: impl PgExecutor<'_>, extract_id: Uuid) -> Result<Vec<(String, StoredFile)>, ApiError> {
    let rows = sqlx::query!(
        "select path, size, sha256, media_type, object_key from extract_file where extract_id = $1 order by path",
        extract_id
    )
    .fetch_all(db)
    .await?;
    let files = rows.into_iter().map(|r| {
        (r.path, StoredFile { size: r.size, sha256: r.sha256, media_type: r.media_type, object_key: r.object_key })
    });
    Ok(files.collect())
}

/// Which download one request belongs to.
#[derive(Debug, Clone)]
pub struct Served {
    /// `project:{id}` or `cohort:{slug}`.
    pub target: String,
    pub extract_id: Uuid,
    pub path: String,
    /// The signed-in user, or an anonymous visitor ([`super::downloaders::downloader`]).
    pub username: String,
    /// The client's download session (`-` without one).
    pub session: String,
    /// The whole file's size: the download is complete once this many bytes were served.
    pub size: i64,
}

/// Counts `bytes` served by one request: the row of the file, user, session
/// and day grows; the audit log gets `extract.download` when the row is made
/// (unless that request already served the whole file) and
/// `extract.downloaded`, with the bytes and requests, when its bytes first
/// reach the file's size. So a download cut into many ranges makes at most
/// two audit events per session and day.
pub async fn record(db: &PgPool, served: &Served, bytes: u64) -> Result<(), ApiError> {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    let mut tx = db.begin().await?;
    let row = sqlx::query!(
        r#"insert into extract_download (extract_id, path, username, session, day, requests, bytes_served)
           values ($1, $2, $3, $4, current_date, 1, $5)
           on conflict (extract_id, path, username, session, day) do update
              set requests = extract_download.requests + 1,
                  bytes_served = extract_download.bytes_served + excluded.bytes_served, last_at = now()
           returning (xmax = 0) as "first!", requests, bytes_served, completed_at"#,
        served.extract_id,
        served.path,
        served.username,
        served.session,
        bytes
    )
    .fetch_one(&mut *tx)
    .await?;
    let complete = row.completed_at.is_none() && row.bytes_served >= served.size;
    let details = json!({
        "extract": served.extract_id, "path": served.path, "session": served.session,
        "requests": row.requests, "bytes_served": row.bytes_served, "size": served.size,
    });
    let target = served.target.clone();
    if complete {
        sqlx::query!(
            "update extract_download set completed_at = now()
             where extract_id = $1 and path = $2 and username = $3 and session = $4 and day = current_date",
            served.extract_id,
            served.path,
            served.username,
            served.session
        )
        .execute(&mut *tx)
        .await?;
        audit::record(&mut tx, NewEvent::new(&served.username, "extract.downloaded").target(target).details(details))
            .await?;
    } else if row.first {
        audit::record(&mut tx, NewEvent::new(&served.username, "extract.download").target(target).details(details))
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
