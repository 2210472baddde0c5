//! Building a release: a job in the PostgreSQL queue that writes exactly the
//! grant's scope at build time under `extracts/{project}/{extract}/`.
//!
//! The job checks the grant first (the same [`grants::check`] every data
//! request passes, for each cohort of the grant, as the member who asked),
//! then writes, file by file, recording each in `extract_file` once it is in
//! the object store:
//!
//! - `dicom/{study}/{series}/{sop}.dcm`: the published instances of the
//!   grant's modalities of the released subjects, re-pseudonymized for the
//!   project ([`super::dicom`]), when the grant covers imaging and its
//!   conditions allow downloading it, for subjects who have not withdrawn
//!   their imaging;
//! - `tables/…`: the granted fields ([`super::tables`]);
//! - `annotations/…`: the annotations of the granted kinds, DICOM SEG and
//!   RTSTRUCT among them ([`super::annotations`]);
//! - `README.md`, `grant.json` (scope, conditions, the data use agreement
//!   accepted) and `deid-conformance.json` (how the registry de-identifies);
//! - then `manifest.json` and `manifest.json.sig`, signed by the registry.
//!
//! Only then, in one transaction with its `extract.ready` audit event, does
//! the extract become `ready`. A worker that dies mid-build leaves the extract
//! `building`, never `ready`; once its lease runs out another worker takes the
//! job again, skips what was recorded, rewrites the rest and the manifest
//! (the same bytes: the manifest's time is the request's) and completes it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anyhow::Context as _;
use aws_lc_rs::digest::{Context as Digest, SHA256};
use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload, WriteMultipart};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::dicom::{ProjectPseudonyms, for_project};
use super::manifest::{self, Diff, FileEntry, Header, Manifest, ReleaseSigner};
use super::tables::{self, Subject};
use crate::access::grants::{self, Conditions, Grant, GrantState, Need, Scope};
use crate::access::scope::Coverage;
use crate::access::snapshot;
use crate::audit::{self, NewEvent};
use crate::config::Config;
use crate::deid::RegistryKey;
use crate::error::{ApiError, Refusal};
use crate::jobs::{Job, NewJob};
use crate::storage::Store;

/// Kind of the build job; its payload is `{"extract": id}`.
pub const BUILD_JOB: &str = "release.build";

/// Attempts before a build is `failed` for good.
const MAX_ATTEMPTS: i32 = 5;

/// Parts of one file uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;

/// What a build needs besides the database.
#[derive(Clone)]
pub struct Context {
    pub db: PgPool,
    pub store: Store,
    pub key: Arc<RegistryKey>,
    pub signer: Arc<ReleaseSigner>,
    pub config: Arc<Config>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("release::build::Context(..)")
    }
}

/// The object-store prefix of a release.
pub fn prefix(project_id: Uuid, extract_id: Uuid) -> String {
    format!("extracts/{project_id}/{extract_id}")
}

/// The object key of a release's file.
pub fn object_key(project_id: Uuid, extract_id: Uuid, path: &str) -> Path {
    Path::from(format!("{}/{path}", prefix(project_id, extract_id)))
}

/// The grant a request on a release rests on, checked now for `username`:
/// [`grants::check`] for every cohort of the grant, and the grant that answers
/// must be this one (another grant of the project on the same cohort does not
/// carry a release it did not make).
pub async fn check_grant(
    db: &PgPool,
    project_id: Uuid,
    grant_id: Uuid,
    username: &str,
    imaging: bool,
    rules: &crate::config::AccessConfig,
) -> Result<Grant, ApiError> {
    let history = grants::history(db, grant_id).await?;
    let own = history
        .iter()
        .max_by_key(|g| g.version)
        .filter(|g| g.project_id == project_id)
        .cloned()
        .ok_or(ApiError::NotFound("grant"))?;
    for cohort in &own.scope.cohorts {
        let answer = grants::check(db, project_id, username, Need { cohort, imaging }, rules).await?;
        if answer.id != grant_id {
            return Err(not_in_force(&own));
        }
    }
    if imaging && own.conditions.no_imaging_download {
        return Err(ApiError::Refused {
            code: Refusal::OutsideGrant,
            message: "the grant's conditions allow analysing its imaging where it is, not downloading it".into(),
        });
    }
    Ok(own)
}

/// The refusal for a grant that is not the one in force.
fn not_in_force(grant: &Grant) -> ApiError {
    let (code, what) = match grant.effective_state {
        GrantState::Pending => (Refusal::GrantPending, "not active yet"),
        GrantState::Suspended => (Refusal::GrantSuspended, "suspended"),
        GrantState::Revoked => (Refusal::GrantRevoked, "revoked"),
        GrantState::Expired => (Refusal::GrantExpired, "expired"),
        GrantState::Closed => (Refusal::GrantClosed, "closed"),
        GrantState::Active => (Refusal::NoGrant, "not the grant in force for its cohorts"),
    };
    ApiError::Refused { code, message: format!("the release's grant is {what}") }
}

/// After `subject_id` withdrew to `scope` (in the withdrawal's transaction):
/// each project's latest ready release holding the subject (its imaging, for
/// an imaging withdrawal) gets a new version, queued, that supersedes it once
/// ready, with the files and subjects it no longer holds in its manifest's
/// `diff`. The earlier version is served for `release.superseded_grace_days`
/// after that. Returns the new releases.
pub async fn supersede_holding(tx: &mut PgConnection, subject_id: Uuid, scope: &str) -> Result<Vec<Uuid>, ApiError> {
    let held = sqlx::query!(
        r#"select distinct on (e.project_id) e.extract_id, e.project_id as "project_id!", e.grant_id, e.imaging,
                  e.created_by
         from extract e join extract_subject s on s.extract_id = e.extract_id and s.subject_id = $1
         join project p on p.project_id = e.project_id and p.closed_at is null
         where e.state = 'ready' and ($2 = 'full' or e.imaging)
         order by e.project_id, e.version desc"#,
        subject_id,
        scope
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut queued = Vec::with_capacity(held.len());
    for earlier in held {
        sqlx::query!("select project_id from project where project_id = $1 for update", earlier.project_id)
            .fetch_one(&mut *tx)
            .await?;
        let next = sqlx::query!(
            "insert into extract (project_id, grant_id, version, imaging, created_by, supersedes)
             values ($1, $2, (select coalesce(max(version), 0) + 1 from extract where project_id = $1), $3, $4, $5)
             returning extract_id, version",
            earlier.project_id,
            earlier.grant_id,
            earlier.imaging,
            earlier.created_by,
            earlier.extract_id
        )
        .fetch_one(&mut *tx)
        .await?;
        crate::jobs::enqueue(&mut *tx, &job(next.extract_id)).await?;
        audit::record(
            tx,
            NewEvent::new("system", "extract.requested")
                .target(format!("project:{}", earlier.project_id))
                .details(json!({ "extract": next.extract_id, "version": next.version, "grant": earlier.grant_id,
                        "supersedes": earlier.extract_id, "because": "withdrawal" })),
        )
        .await?;
        queued.push(next.extract_id);
    }
    // Each open cohort's latest version holding the subject: a new version of
    // the same frozen split, less the subject (or its imaging).
    let open = sqlx::query!(
        r#"select distinct on (e.open_cohort_id) e.extract_id, e.open_cohort_id as "cohort_id!", e.imaging,
                  e.labels_revealed, e.created_by, c.slug
         from extract e join extract_subject s on s.extract_id = e.extract_id and s.subject_id = $1
         join cohort c on c.cohort_id = e.open_cohort_id
         where e.state = 'ready' and ($2 = 'full' or e.imaging)
         order by e.open_cohort_id, e.version desc"#,
        subject_id,
        scope
    )
    .fetch_all(&mut *tx)
    .await?;
    for earlier in open {
        sqlx::query!("select cohort_id from open_cohort where cohort_id = $1 for update", earlier.cohort_id)
            .fetch_one(&mut *tx)
            .await?;
        let next = sqlx::query!(
            "insert into extract (open_cohort_id, version, imaging, labels_revealed, created_by, supersedes)
             values ($1, (select coalesce(max(version), 0) + 1 from extract where open_cohort_id = $1), $2, $3, $4, $5)
             returning extract_id, version",
            earlier.cohort_id,
            earlier.imaging,
            earlier.labels_revealed,
            earlier.created_by,
            earlier.extract_id
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!(
            "insert into extract_subject (extract_id, subject_id, split)
             select $1, subject_id, split from extract_subject
             where extract_id = $2 and not (subject_id = $3 and $4 = 'full')",
            next.extract_id,
            earlier.extract_id,
            subject_id,
            scope
        )
        .execute(&mut *tx)
        .await?;
        crate::jobs::enqueue(&mut *tx, &job(next.extract_id)).await?;
        audit::record(
            tx,
            NewEvent::new("system", "extract.requested")
                .target(format!("cohort:{}", earlier.slug))
                .details(json!({ "extract": next.extract_id, "version": next.version,
                        "supersedes": earlier.extract_id, "because": "withdrawal" })),
        )
        .await?;
        queued.push(next.extract_id);
    }
    Ok(queued)
}

/// The job that builds `extract_id`.
pub fn job(extract_id: Uuid) -> NewJob {
    let mut job =
        NewJob::new(BUILD_JOB).payload(json!({ "extract": extract_id })).dedupe(&format!("release:{extract_id}"));
    job.max_attempts = MAX_ATTEMPTS;
    job
}

/// Runs a claimed build job. A refused grant fails the extract at once; any
/// other error is retried, and the extract is `failed` after the last attempt.
pub async fn run_job(ctx: &Context, job: &Job) -> anyhow::Result<Option<NewJob>> {
    let extract_id: Uuid = serde_json::from_value(job.payload["extract"].clone()).context("the job's extract id")?;
    match build(ctx, extract_id).await {
        Ok(None) => Ok(None),
        Ok(Some(refusal)) => {
            fail(&ctx.db, extract_id, &refusal).await?;
            Ok(None)
        }
        Err(error) => {
            if job.attempt >= job.max_attempts {
                let message = format!("the build failed {} times; the operator's job log has the cause", job.attempt);
                fail(&ctx.db, extract_id, &message).await?;
            }
            Err(error)
        }
    }
}

/// Marks a build `failed` with its audit event; a release already ready stays.
async fn fail(db: &PgPool, extract_id: Uuid, message: &str) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    let failed = sqlx::query!(
        r#"update extract set state = 'failed', error = $2 where extract_id = $1 and state in ('queued', 'building')
           returning coalesce('project:' || project_id::text,
                              'cohort:' || (select slug from cohort where cohort_id = open_cohort_id)) as "target!""#,
        extract_id,
        message
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = failed {
        audit::record(
            &mut tx,
            NewEvent::new("system", "extract.failed")
                .target(row.target)
                .details(json!({ "extract": extract_id, "error": message })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A release's row, as the build reads it.
pub struct Extract {
    pub project_id: Option<Uuid>,
    pub grant_id: Option<Uuid>,
    pub open_cohort_id: Option<Uuid>,
    pub labels_revealed: bool,
    pub version: i32,
    pub state: String,
    pub imaging: bool,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub supersedes: Option<Uuid>,
}

/// A stored instance in scope: its registry UIDs and subject.
struct InScope {
    object_key: String,
    study_uid: String,
    series_uid: String,
    sop_uid: String,
}

/// What a release holds, decided before anything is written: a project's
/// grant read now, or an open cohort's frozen split.
pub struct Source {
    /// The project or open cohort: the storage prefix and the audit target.
    pub owner: Uuid,
    pub audit_target: String,
    /// The key of the pseudonyms the release is written in.
    pub key: [u8; 32],
    pub scope: Scope,
    pub conditions: Conditions,
    /// Folders of subjects; a project's release is one folder, the root.
    pub parts: Vec<Part>,
    /// The release's own documents at its root.
    pub documents: Vec<tables::TableFile>,
    /// The grant a project's release rests on.
    pub grant_id: Option<Uuid>,
    /// The open cohort a version publishes.
    pub open_cohort: Option<String>,
}

/// Subjects released into one folder of a release.
pub struct Part {
    /// `""` (the root), or `train/` and the like.
    pub folder: String,
    /// Registry pseudonym → whether the subject's imaging is released.
    pub subjects: BTreeMap<String, bool>,
    /// Annotation kinds left out of this folder (an open cohort's test labels).
    pub withheld_kinds: Vec<String>,
}

/// Builds `extract_id`: `Some(refusal)` when its grant or cohort does not
/// allow it (final), an error for anything else (retried).
async fn build(ctx: &Context, extract_id: Uuid) -> anyhow::Result<Option<String>> {
    let db = &ctx.db;
    let Some(extract) = sqlx::query_as!(
        Extract,
        "select project_id, grant_id, open_cohort_id, labels_revealed, version, state, imaging, created_by,
                created_at, supersedes
         from extract where extract_id = $1",
        extract_id
    )
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    if !matches!(extract.state.as_str(), "queued" | "building") {
        return Ok(None); // done already: a rerun changes nothing
    }
    let source = match (extract.project_id, extract.grant_id, extract.open_cohort_id) {
        (Some(project_id), Some(grant_id), None) => {
            match project_source(ctx, &extract, extract_id, project_id, grant_id).await? {
                Ok(source) => source,
                Err(refusal) => return Ok(Some(refusal)),
            }
        }
        (None, None, Some(cohort_id)) => {
            match crate::opencohort::publish::source(ctx, &extract, extract_id, cohort_id).await? {
                Ok(source) => source,
                Err(refusal) => return Ok(Some(refusal)),
            }
        }
        _ => anyhow::bail!("release {extract_id} has neither or both of a project and an open cohort"),
    };
    sqlx::query!(
        "update extract set state = 'building', started_at = coalesce(started_at, now())
         where extract_id = $1 and state = 'queued'",
        extract_id
    )
    .execute(db)
    .await?;
    write_release(ctx, &extract, extract_id, source).await
}

/// A project's release: its grant checked now as the member who asked, the
/// subjects of every cohort's snapshot less full withdrawals (imaging only
/// for those who kept it), in the project's own pseudonyms.
async fn project_source(
    ctx: &Context,
    extract: &Extract,
    extract_id: Uuid,
    project_id: Uuid,
    grant_id: Uuid,
) -> anyhow::Result<Result<Source, String>> {
    let db = &ctx.db;
    let grant =
        match check_grant(db, project_id, grant_id, &extract.created_by, extract.imaging, &ctx.config.access).await {
            Ok(grant) => grant,
            Err(ApiError::Refused { message, .. }) => return Ok(Err(message)),
            Err(ApiError::NotFound(_)) => {
                return Ok(Err("the member who asked for the release no longer belongs to the project".into()));
            }
            Err(other) => return Err(other.into()),
        };
    let mut subjects = BTreeMap::new(); // registry pseudonym -> imaging allowed
    for cohort in &grant.scope.cohorts {
        for member in snapshot::members(db, grant.id, cohort).await? {
            match member.withdrawal_scope.as_deref() {
                Some("full") => {}
                scope => {
                    let imaging = scope.is_none();
                    subjects.entry(member.pseudonym).and_modify(|i| *i &= imaging).or_insert(imaging);
                }
            }
        }
    }
    let key = grants::project_key(db, &ctx.key, project_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the project has no key: closed, or never granted"))?;
    let documents = documents(ctx, extract, extract_id, project_id, &grant, subjects.len()).await?;
    Ok(Ok(Source {
        owner: project_id,
        audit_target: format!("project:{project_id}"),
        key,
        scope: grant.scope.clone(),
        conditions: grant.conditions.clone(),
        parts: vec![Part { folder: String::new(), subjects, withheld_kinds: Vec::new() }],
        documents,
        grant_id: Some(grant.id),
        open_cohort: None,
    }))
}

/// What one folder of a release holds, planned.
struct PlannedPart {
    instances: Vec<(String, InScope)>,
    tables: Vec<tables::TableFile>,
    annotations: super::annotations::Annotations,
}

/// Writes `source` as release `extract_id`, file by file, skipping what an
/// earlier attempt recorded; then the signed manifest, and makes it `ready`.
#[allow(clippy::too_many_lines)] // one build, step by step, reads best in one place
async fn write_release(
    ctx: &Context,
    extract: &Extract,
    extract_id: Uuid,
    source: Source,
) -> anyhow::Result<Option<String>> {
    let db = &ctx.db;
    let owner = source.owner;
    let project = Arc::new(ProjectPseudonyms::new(&source.key));
    let all: Vec<String> = source.parts.iter().flat_map(|p| p.subjects.keys().cloned()).collect();
    sqlx::query!(
        "insert into extract_subject (extract_id, subject_id)
         select $1, subject_id from subject where pseudonym = any($2) on conflict do nothing",
        extract_id,
        &all
    )
    .execute(db)
    .await?;
    let dictionary = crate::dictionary::db::dictionary(db).await?;
    let limit = ctx.config.ingest.max_file_bytes;
    let mut planned_parts = Vec::with_capacity(source.parts.len());
    for part in &source.parts {
        let imaged: Vec<String> =
            part.subjects.iter().filter(|(_, imaging)| **imaging).map(|(p, _)| p.clone()).collect();
        let instances = if extract.imaging {
            sqlx::query_as!(
                InScope,
                "select i.object_key, st.study_uid, se.series_uid, i.sop_uid
                 from instance i join series se using (series_id) join study st using (study_id)
                 join subject su using (subject_id)
                 where i.status = 'published' and su.pseudonym = any($1)
                   and st.cohort_id in (select cohort_id from cohort where slug = any($4))
                   and (cardinality($2::text[]) = 0 or se.modality = any($2)) and i.sop_class_uid <> all($3)
                 order by i.object_key",
                &imaged,
                &source.scope.modalities,
                &super::annotations::DICOM_CLASSES.map(String::from),
                &source.scope.cohorts
            )
            .fetch_all(db)
            .await?
        } else {
            Vec::new()
        };
        let instances = instances.into_iter().map(|i| (part.folder.clone(), i)).collect();
        let coverage = Coverage { scope: &source.scope, conditions: &source.conditions, dictionary: &dictionary };
        let registry: Vec<&String> = part.subjects.keys().collect();
        let pairs: Vec<(String, String)> = registry.iter().map(|r| ((*r).clone(), project.subject(r))).collect();
        let released: Vec<Subject<'_>> = pairs.iter().map(|(r, p)| Subject { registry: r, project: p }).collect();
        let mut tx = db.begin().await?;
        sqlx::query!("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
        let mut tables = tables::build(&mut tx, &coverage, &released).await?;
        tx.commit().await?;
        for table in &mut tables {
            table.path = format!("{}{}", part.folder, table.path);
        }
        let mut scope = source.scope.clone();
        scope.annotation_kinds.retain(|k| !part.withheld_kinds.contains(k));
        let annotations =
            super::annotations::plan(db, &scope, extract.imaging, &part.subjects, project.clone(), limit, &part.folder)
                .await?;
        planned_parts.push(PlannedPart { instances, tables, annotations });
    }

    let planned = source.documents.len()
        + planned_parts.iter().map(|p| p.instances.len() + p.tables.len() + p.annotations.len()).sum::<usize>();
    let recorded: HashSet<String> =
        sqlx::query_scalar!("select path from extract_file where extract_id = $1", extract_id)
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
    sqlx::query!(
        "update extract set files_planned = $2, files_done = $3 where extract_id = $1",
        extract_id,
        i32::try_from(planned).unwrap_or(i32::MAX),
        i32::try_from(recorded.len()).unwrap_or(i32::MAX)
    )
    .execute(db)
    .await?;

    let pending: Vec<(String, InScope)> = planned_parts
        .iter_mut()
        .flat_map(|p| std::mem::take(&mut p.instances))
        .filter(|(folder, i)| !recorded.contains(&released_path(&project, folder, i)))
        .collect();
    let mut written = futures::stream::iter(pending)
        .map(|(folder, instance)| release_instance(ctx, &project, owner, extract_id, folder, instance))
        .buffer_unordered(PARALLEL_WRITES);
    let (mut batch, mut index) = (Vec::with_capacity(RECORD_BATCH), Vec::with_capacity(RECORD_BATCH));
    while let Some(written) = written.next().await {
        let (entry, indexed) = written?;
        batch.push(entry);
        index.push(indexed);
        if batch.len() == RECORD_BATCH {
            record(db, owner, extract_id, &std::mem::take(&mut batch), &std::mem::take(&mut index)).await?;
        }
    }
    record(db, owner, extract_id, &batch, &index).await?;
    for part in &mut planned_parts {
        let files = std::mem::take(&mut part.tables).into_iter().chain(part.annotations.index());
        for file in files {
            if !recorded.contains(&file.path) {
                write_file(ctx, owner, extract_id, file).await?;
            }
        }
        for pending in part.annotations.pending().iter().filter(|p| !recorded.contains(&p.path)) {
            write_file(ctx, owner, extract_id, part.annotations.read(&ctx.store, pending).await?).await?;
        }
    }
    for file in source.documents {
        if !recorded.contains(&file.path) {
            write_file(ctx, owner, extract_id, file).await?;
        }
    }

    let files =
        sqlx::query!("select path, size, sha256, media_type from extract_file where extract_id = $1", extract_id)
            .fetch_all(db)
            .await?
            .into_iter()
            .map(|f| {
                Ok(FileEntry { path: f.path, size: u64::try_from(f.size)?, sha256: f.sha256, media_type: f.media_type })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
    let manifest = Manifest::new(
        Header {
            extract_id,
            project_id: extract.project_id,
            open_cohort: source.open_cohort.clone(),
            version: u32::try_from(extract.version).unwrap_or_default(),
            created_at: extract.created_at,
            grant_id: source.grant_id,
            subjects: all.len() as u64,
        },
        files,
    )?;
    let manifest = match extract.supersedes {
        Some(earlier) => {
            let removed = sqlx::query!(
                r#"select (select coalesce(array_agg(path), '{}') from extract_file o where o.extract_id = $1
                           and not exists (select 1 from extract_file n where n.extract_id = $2 and n.path = o.path))
                          as "files!",
                          (select coalesce(array_agg(s.pseudonym), '{}') from extract_subject o join subject s using (subject_id)
                           where o.extract_id = $1 and not exists (select 1 from extract_subject n
                                 where n.extract_id = $2 and n.subject_id = o.subject_id)) as "subjects!""#,
                earlier,
                extract_id
            )
            .fetch_one(db)
            .await?;
            let subjects = removed.subjects.iter().map(|registry| project.subject(registry)).collect();
            manifest.superseding(earlier, Diff::new(removed.files, subjects))
        }
        None => manifest,
    };
    let (manifest_bytes, signature) = manifest::sign(&ctx.signer, &manifest);
    let manifest_sha256 = hex::encode(digest_of(&[Bytes::from(manifest_bytes.clone())]));
    ctx.store.put(&object_key(owner, extract_id, manifest::MANIFEST_FILE), manifest_bytes.into()).await?;
    ctx.store.put(&object_key(owner, extract_id, manifest::SIGNATURE_FILE), signature.into()).await?;

    let mut tx = db.begin().await?;
    let ready = sqlx::query!(
        "update extract set state = 'ready', ready_at = now(), manifest_sha256 = $2, total_files = $3,
                            total_bytes = $4, total_subjects = $5, files_done = files_planned, error = null
         where extract_id = $1 and state = 'building'",
        extract_id,
        manifest_sha256,
        i64::try_from(manifest.totals.files).unwrap_or(i64::MAX),
        i64::try_from(manifest.totals.bytes).unwrap_or(i64::MAX),
        i32::try_from(manifest.totals.subjects).unwrap_or(i32::MAX),
    )
    .execute(&mut *tx)
    .await?;
    if ready.rows_affected() == 1 {
        if let Some(earlier) = extract.supersedes {
            // The earlier version, and any other version made to replace it
            // (two withdrawals in a row) that this later one makes obsolete.
            sqlx::query!(
                "update extract set state = 'superseded', superseded_at = now()
                 where (project_id = $2 or open_cohort_id = $2) and version < $3 and state = 'ready'
                   and (extract_id = $1 or supersedes = $1)",
                earlier,
                owner,
                extract.version
            )
            .execute(&mut *tx)
            .await?;
        }
        audit::record(
            &mut tx,
            NewEvent::new(&extract.created_by, "extract.ready").target(source.audit_target.clone()).details(json!({
                "extract": extract_id, "version": extract.version, "grant": source.grant_id,
                "open_cohort": source.open_cohort,
                "files": manifest.totals.files, "bytes": manifest.totals.bytes, "subjects": manifest.totals.subjects,
                "manifest_sha256": manifest_sha256, "supersedes": extract.supersedes,
            })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(None)
}

/// SHA-256 of the concatenation of `parts`.
fn digest_of(parts: &[Bytes]) -> [u8; 32] {
    let mut digest = Digest::new(&SHA256);
    for part in parts {
        digest.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(digest.finish().as_ref());
    out
}

/// Instances re-pseudonymized and written at once: reading, remapping and
/// hashing one overlaps writing another.
const PARALLEL_WRITES: usize = 4;

/// Files recorded (with the progress) per transaction.
const RECORD_BATCH: usize = 64;

/// Where a stored instance goes in the release.
fn released_path(project: &ProjectPseudonyms, folder: &str, instance: &InScope) -> String {
    format!(
        "{folder}dicom/{}/{}/{}.dcm",
        project.uid(&instance.study_uid),
        project.uid(&instance.series_uid),
        project.uid(&instance.sop_uid)
    )
}

/// Reads a stored instance, re-pseudonymizes it for the project and writes
/// it into the release; its entry and its row of the DICOMweb index are
/// recorded by the caller.
async fn release_instance(
    ctx: &Context,
    project: &Arc<ProjectPseudonyms>,
    owner: Uuid,
    extract_id: Uuid,
    folder: String,
    instance: InScope,
) -> anyhow::Result<(FileEntry, super::dicomweb::Indexed)> {
    let path = released_path(project, &folder, &instance);
    let stored = ctx.store.get(&Path::from(instance.object_key.as_str())).await?.bytes().await?;
    let pseudonyms = project.clone();
    let (released, sha256, indexed) = tokio::task::spawn_blocking(move || {
        let released = for_project(&stored, &pseudonyms)?;
        let sha256 = digest_of(&released.parts);
        let indexed = super::dicomweb::Indexed::of(&released); // for DICOMweb searches
        Ok::<_, super::dicom::ReleaseError>((released, sha256, indexed))
    })
    .await
    .context("re-pseudonymizing an instance panicked")?
    .map_err(|e| anyhow::anyhow!("an instance could not be released ({}): {e}", e.code))?;
    if format!("{folder}{}", released.path()) != path {
        anyhow::bail!("a released instance's UIDs are not its catalog's");
    }
    let indexed = indexed?;
    let entry = FileEntry::new(&path, released.size(), &sha256, manifest::media_type(&path));
    write(ctx, owner, extract_id, &entry, PutPayload::from_iter(released.parts)).await?;
    Ok((entry, indexed))
}

/// Writes and records one file built in memory, with its digest.
async fn write_file(ctx: &Context, project_id: Uuid, extract_id: Uuid, file: tables::TableFile) -> anyhow::Result<()> {
    let sha256 = digest_of(std::slice::from_ref(&file.bytes));
    let entry = FileEntry::new(&file.path, file.bytes.len() as u64, &sha256, file.media_type);
    write(ctx, project_id, extract_id, &entry, PutPayload::from(file.bytes)).await?;
    record(&ctx.db, project_id, extract_id, std::slice::from_ref(&entry), &[]).await
}

/// Writes one file of the release to the object store: in one request, or
/// from `release.multipart_threshold_bytes` on in parts of
/// `release.multipart_part_bytes`, a few in flight at once.
pub async fn write(
    ctx: &Context,
    project_id: Uuid,
    extract_id: Uuid,
    entry: &FileEntry,
    payload: PutPayload,
) -> anyhow::Result<()> {
    let key = object_key(project_id, extract_id, &entry.path);
    if entry.size >= ctx.config.release.multipart_threshold_bytes {
        // In parts: S3 takes at most 5 GiB in one request, and a failed part is retried alone.
        let part = usize::try_from(ctx.config.release.multipart_part_bytes).unwrap_or(usize::MAX);
        let mut upload = WriteMultipart::new_with_chunk_size(ctx.store.put_multipart(&key).await?, part);
        for chunk in payload {
            if let Err(e) = upload.wait_for_capacity(PARTS_IN_FLIGHT).await {
                // Leaves no parts behind; `finish` does the same on its own failure.
                upload.abort().await?;
                return Err(e.into());
            }
            upload.put(chunk);
        }
        upload.finish().await?;
    } else {
        ctx.store.put(&key, payload).await?;
    }
    Ok(())
}

/// Records written files of the release, their instances' rows of the
/// DICOMweb index, and the progress, in one transaction: a recorded file is
/// always indexed. A file written but not yet recorded when a worker dies is
/// written again (the same bytes) by the next.
async fn record(
    db: &PgPool,
    project_id: Uuid,
    extract_id: Uuid,
    entries: &[FileEntry],
    index: &[super::dicomweb::Indexed],
) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let (mut paths, mut sizes, mut digests, mut types, mut keys) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for entry in entries {
        keys.push(object_key(project_id, extract_id, &entry.path).to_string());
        paths.push(entry.path.clone());
        sizes.push(i64::try_from(entry.size)?);
        digests.push(entry.sha256.clone());
        types.push(entry.media_type.clone());
    }
    let mut tx = db.begin().await?;
    for indexed in index {
        super::dicomweb::record(&mut *tx, extract_id, indexed).await?;
    }
    let inserted = sqlx::query!(
        "insert into extract_file (extract_id, path, size, sha256, media_type, object_key)
         select $1, * from unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
         on conflict do nothing",
        extract_id,
        &paths,
        &sizes,
        &digests,
        &types,
        &keys,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update extract set files_done = files_done + $2 where extract_id = $1",
        extract_id,
        i32::try_from(inserted.rows_affected())?
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The release's own documents: README, grant terms, conformance statement.
async fn documents(
    ctx: &Context,
    extract: &Extract,
    extract_id: Uuid,
    project_id: Uuid,
    grant: &Grant,
    subjects: usize,
) -> anyhow::Result<Vec<tables::TableFile>> {
    let db = &ctx.db;
    let agreement = sqlx::query!(
        r#"select a.dua_version, a.dua_accepted_at, d.sha256 as "dua_sha256?", d.title as "dua_title?"
           from application a left join dua_version d on d.version = a.dua_version
           where a.application_id = $1"#,
        grant.application_id
    )
    .fetch_one(db)
    .await?;
    let cohorts =
        sqlx::query!("select slug, title from cohort where slug = any($1) order by slug", &grant.scope.cohorts)
            .fetch_all(db)
            .await?;
    let terms = json!({
        "grant": grant.id,
        "grant_version": grant.version,
        "project": project_id,
        "scope": grant.scope,
        "conditions": grant.conditions,
        "not_before": grant.not_before,
        "not_after": grant.not_after,
        "data_use_agreement": {
            "version": agreement.dua_version,
            "title": agreement.dua_title,
            "sha256": agreement.dua_sha256,
            "accepted_at": agreement.dua_accepted_at,
        },
    });
    let conformance = serde_json::to_vec_pretty(&crate::http::deid::statement(&ctx.config))?;
    let citation: Vec<String> =
        cohorts.iter().map(|c| format!("- {} (`{}`), Custodian registry", c.title, c.slug)).collect();
    let readme = format!(
        "# Release {version} of project {project}\n\n\
         Release `{extract_id}`, built from grant `{grant}` (version {grant_version}) for {subjects} subjects.\n\n\
         ## Contents\n\n\
         - `dicom/{{study}}/{{series}}/{{sop}}.dcm`: the imaging the grant covers, in the project's own \
         pseudonyms (Patient ID and Name) and UIDs; dates as the registry stores them (shifted per subject); \
         pixel data as received.\n\
         - `tables/`: the granted fields in CSV and Parquet, keyed by the project's pseudonyms, with \
         `dictionary.json` describing every column.\n\
         - `annotations/`: the annotations of the granted kinds, when any: `index.json` lists each with its \
         subject, what it annotates (project UIDs), its label and its provenance; masks (`masks/*.nii.gz`), \
         geometry (`geometry/*.json`) and DICOM SEG and RTSTRUCT (`dicom/…`, referencing the released images).\n\
         - `grant.json`: the scope, the conditions and the data use agreement accepted.\n\
         - `deid-conformance.json`: how the registry de-identifies what it receives.\n\
         - `manifest.json`: every file with its size, SHA-256 and media type; `manifest.json.sig`: its \
         Ed25519 signature by the registry, to verify against the keys published at \
         `/.well-known/custodian/release-keys`.\n\n\
         ## Conditions\n\n{conditions}\n\n\
         ## Citation\n\n{citation}\n",
        version = extract.version,
        project = project_id,
        grant = grant.id,
        grant_version = grant.version,
        conditions = if grant.conditions.text.is_empty() {
            "Those of the data use agreement (see `grant.json`).".to_owned()
        } else {
            grant.conditions.text.iter().map(|t| format!("- {t}")).collect::<Vec<_>>().join("\n")
        },
        citation = citation.join("\n"),
    );
    let file = |path: &str, bytes: Vec<u8>| tables::TableFile {
        path: path.to_owned(),
        media_type: manifest::media_type(path),
        bytes: Bytes::from(bytes),
    };
    Ok(vec![
        file("README.md", readme.into_bytes()),
        file("grant.json", serde_json::to_vec_pretty(&terms)?),
        file("deid-conformance.json", conformance),
    ])
}
