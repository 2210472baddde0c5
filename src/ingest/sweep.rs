//! The sweep: objects written before a crash (or by a request that broke off)
//! have no row pointing at them; once older than a grace period they are deleted.
//! A row never lacks its object, because the object is always written first.
//! It runs as a recurring job of the queue in [`crate::jobs`].

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde_json::json;
use sqlx::PgPool;

use crate::audit::{self, NewEvent};
use crate::jobs::NewJob;
use crate::storage::{Store, keys};

/// Advisory lock key: one sweeper at a time across all nodes.
const LOCK_KEY: i64 = 0x0043_5553_5357_4545; // "CUSSWEE"

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Objects listed.
    pub examined: u64,
    /// Unreferenced objects deleted.
    pub deleted: u64,
    /// Staging files a crash mid-write left in the local object directory, deleted.
    pub staging: u64,
}

/// Deletes unreferenced instance and annotation objects older than `grace`, and with a local
/// object directory (`local_root`) the staging files left there as old. Returns `None` when
/// another node is sweeping.
pub async fn sweep_orphans(
    db: &PgPool,
    store: &Store,
    local_root: Option<&std::path::Path>,
    grace: Duration,
) -> anyhow::Result<Option<SweepReport>> {
    let mut conn = db.acquire().await?;
    let locked: bool =
        sqlx::query_scalar!("select pg_try_advisory_lock($1) as \"locked!\"", LOCK_KEY).fetch_one(&mut *conn).await?;
    if !locked {
        return Ok(None);
    }
    let result = sweep(db, store, local_root, grace).await;
    sqlx::query_scalar!("select pg_advisory_unlock($1)", LOCK_KEY).fetch_one(&mut *conn).await?;
    result.map(Some)
}

async fn sweep(
    db: &PgPool,
    store: &Store,
    local_root: Option<&std::path::Path>,
    grace: Duration,
) -> anyhow::Result<SweepReport> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(grace)?;
    let mut report = SweepReport::default();
    if let Some(root) = local_root {
        let (root, cutoff) = (root.to_path_buf(), std::time::SystemTime::now() - grace);
        report.staging = tokio::task::spawn_blocking(move || {
            super::direct::sweep_staging(&root, &[keys::INSTANCES, keys::ANNOTATIONS], cutoff)
        })
        .await??;
    }
    for prefix in [keys::INSTANCES, keys::ANNOTATIONS, keys::SUBMISSIONS] {
        let prefix = Path::from(prefix);
        let mut listing = store.list(Some(&prefix));
        let mut candidates = Vec::new();
        while let Some(meta) = listing.try_next().await? {
            report.examined += 1;
            if meta.last_modified < cutoff {
                candidates.push(meta.location.to_string());
            }
            if candidates.len() >= 1000 {
                report.deleted += delete_unreferenced(db, store, &std::mem::take(&mut candidates)).await?;
            }
        }
        report.deleted += delete_unreferenced(db, store, &candidates).await?;
    }
    if report.deleted > 0 || report.staging > 0 {
        let mut tx = db.begin().await?;
        audit::record(
            &mut tx,
            NewEvent::new("system:sweep", "storage.sweep").details(json!({
                "examined": report.examined,
                "deleted": report.deleted,
                "staging_deleted": report.staging,
            })),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(deleted = report.deleted, staging = report.staging, "swept unreferenced objects");
    }
    Ok(report)
}

async fn delete_unreferenced(db: &PgPool, store: &Store, keys: &[String]) -> anyhow::Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let referenced: HashSet<String> = sqlx::query_scalar!(
        r#"select object_key as "object_key!" from instance where object_key = any($1)
               union all select object_key from annotation where object_key = any($1)
               union all select object_key from challenge_submission where object_key = any($1)"#,
        keys
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .collect();
    let mut deleted = 0;
    for key in keys.iter().filter(|k| !referenced.contains(*k)) {
        match store.delete(&Path::from(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => tracing::warn!(error = %e, "sweep could not delete an object"),
        }
    }
    Ok(deleted)
}

/// Kind (and dedupe key) of the recurring sweep job.
pub const SWEEP_JOB: &str = "storage.sweep";

/// The next sweep, `interval` from now; there is never more than one pending.
pub fn next_sweep(interval: Duration) -> NewJob {
    NewJob::new(SWEEP_JOB).dedupe(SWEEP_JOB).after(interval)
}

/// The sweep job: sweeps, then names its next run.
pub async fn run_job(
    db: &PgPool,
    store: &Store,
    local_root: Option<&std::path::Path>,
    interval: Duration,
    grace: Duration,
) -> anyhow::Result<Option<NewJob>> {
    sweep_orphans(db, store, local_root, grace).await?;
    Ok(Some(next_sweep(interval)))
}
