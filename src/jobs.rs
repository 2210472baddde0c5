//! Background jobs: a queue in PostgreSQL.
//!
//! A job is a row. Workers on any node claim due jobs with `FOR UPDATE SKIP
//! LOCKED`, so two never take the same one, and hold them under a lease that a
//! heartbeat extends while the job runs; when a worker dies, its lease runs out
//! and another worker takes the job again. Failures are retried with
//! exponential back-off up to `max_attempts`, then the job is `failed` with its
//! last error kept for an operator. Recurring work (the orphan sweep, the
//! deletion of past days' download keys) is a job that enqueues its own next
//! run, deduplicated by key.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    /// 1 on the first run.
    pub attempt: i32,
    pub max_attempts: i32,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: Value,
    /// At most one queued or running job per key; enqueuing another is a no-op.
    pub dedupe_key: Option<String>,
    /// Not before this long from now.
    pub delay: Duration,
    pub max_attempts: i32,
}

impl NewJob {
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            payload: Value::Object(serde_json::Map::new()),
            dedupe_key: None,
            delay: Duration::ZERO,
            max_attempts: 5,
        }
    }

    #[must_use]
    pub fn dedupe(mut self, key: &str) -> Self {
        self.dedupe_key = Some(key.to_owned());
        self
    }

    #[must_use]
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    #[must_use]
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }
}

/// Enqueues `job`; `None` when a job with its dedupe key is already queued or running.
pub async fn enqueue<'e>(db: impl sqlx::PgExecutor<'e>, job: &NewJob) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "insert into job (kind, payload, dedupe_key, run_at, max_attempts)
         values ($1, $2, $3, now() + make_interval(secs => $4), $5)
         on conflict (dedupe_key) where state in ('queued', 'running') do nothing
         returning job_id",
        job.kind,
        job.payload,
        job.dedupe_key,
        job.delay.as_secs_f64(),
        job.max_attempts,
    )
    .fetch_optional(db)
    .await
}

/// Claims the next due job (or one whose lease ran out) for `worker`, leased for `lease`.
pub async fn claim(db: &PgPool, worker: &str, lease: Duration) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query!(
        "update job set state = 'running', attempts = attempts + 1, locked_by = $1,
                        lease_until = now() + make_interval(secs => $2)
         where job_id = (
             select job_id from job
             where (state = 'queued' and run_at <= now()) or (state = 'running' and lease_until < now())
             order by run_at
             for update skip locked
             limit 1)
         returning job_id, kind, payload, attempts, max_attempts",
        worker,
        lease.as_secs_f64(),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Job {
        id: r.job_id,
        kind: r.kind,
        payload: r.payload,
        attempt: r.attempts,
        max_attempts: r.max_attempts,
    }))
}

/// Extends the lease of a job `worker` still holds; `false` when it lost it.
pub async fn renew(db: &PgPool, job: i64, worker: &str, lease: Duration) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query!(
        "update job set lease_until = now() + make_interval(secs => $3)
         where job_id = $1 and locked_by = $2 and state = 'running'",
        job,
        worker,
        lease.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Marks a job done; `false` when `worker` no longer held it.
pub async fn complete<'e>(db: impl sqlx::PgExecutor<'e>, job: i64, worker: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update job set state = 'done', finished_at = now(), lease_until = null, last_error = null
         where job_id = $1 and locked_by = $2 and state = 'running'",
        job,
        worker,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a failed attempt: queued again after 2^attempt seconds (at most an
/// hour), or `failed` for good after its last attempt.
pub async fn fail(db: &PgPool, job: &Job, worker: &str, error: &str) -> Result<(), sqlx::Error> {
    let backoff = 2_f64.powi(job.attempt.min(12)).min(3600.0);
    sqlx::query!(
        "update job set state = case when attempts >= max_attempts then 'failed' else 'queued' end,
                        run_at = now() + make_interval(secs => $3),
                        finished_at = case when attempts >= max_attempts then now() end,
                        lease_until = null, locked_by = null, last_error = $4
         where job_id = $1 and locked_by = $2 and state = 'running'",
        job.id,
        worker,
        backoff,
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Runs `job` under its lease: a heartbeat renews it every third of `lease`
/// while `work` runs, and the outcome is recorded when it ends. A job that
/// succeeds may name its follow-up (a recurring job its next run), enqueued in
/// the same transaction that marks it done.
pub async fn run_claimed<F>(db: &PgPool, worker: &str, lease: Duration, job: &Job, work: F) -> Result<(), sqlx::Error>
where
    F: Future<Output = anyhow::Result<Option<NewJob>>>,
{
    let heartbeat = async {
        let mut ticker = tokio::time::interval(lease / 3);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match renew(db, job.id, worker, lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(job = job.id, kind = %job.kind, "lost the lease of a running job");
                    return;
                }
                Err(error) => tracing::warn!(%error, job = job.id, "renewing a job lease"),
            }
        }
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        () = heartbeat => return Ok(()), // someone else owns it now; their run counts
    };
    match outcome {
        Ok(next) => {
            let mut tx = db.begin().await?;
            if complete(&mut *tx, job.id, worker).await?
                && let Some(next) = next
            {
                enqueue(&mut *tx, &next).await?;
            }
            tx.commit().await?;
        }
        Err(error) => {
            let error = format!("{error:#}");
            tracing::warn!(job = job.id, kind = %job.kind, attempt = job.attempt, %error, "job failed");
            fail(db, job, worker, &error).await?;
        }
    }
    Ok(())
}

/// Deletes jobs that finished successfully more than `age` ago; failed ones stay
/// for an operator. Returns how many went.
pub async fn prune_done(db: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    let pruned = sqlx::query!(
        "delete from job where state = 'done' and finished_at < now() - make_interval(secs => $1)",
        age.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}

/// Claims and runs jobs until the pool is closed (the service stopping), asking
/// again every `poll` when none is due.
/// `handle` maps a job to its work (by kind).
pub async fn work<H, F>(db: PgPool, worker: String, lease: Duration, poll: Duration, handle: H)
where
    H: Fn(Job) -> F,
    F: Future<Output = anyhow::Result<Option<NewJob>>>,
{
    loop {
        match claim(&db, &worker, lease).await {
            Ok(Some(job)) => {
                let span = tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempt);
                let run = run_claimed(&db, &worker, lease, &job, handle(job.clone()));
                if let Err(error) = tracing::Instrument::instrument(run, span).await
                    && !db.is_closed()
                {
                    tracing::warn!(%error, "recording a job's outcome");
                }
            }
            Ok(None) => tokio::time::sleep(poll).await,
            // The service is stopping: the pool closed under the loop, nothing is wrong.
            Err(_) if db.is_closed() => return,
            Err(error) => {
                tracing::warn!(%error, "claiming a job");
                tokio::time::sleep(poll).await;
            }
        }
    }
}

/// How long until a minute into the next UTC day, by the database's clock
/// (which dates what the daily jobs act on).
pub async fn until_next_utc_day(db: &PgPool) -> Result<Duration, sqlx::Error> {
    let seconds = sqlx::query_scalar!(
        r#"select extract(epoch from date_trunc('day', now() at time zone 'utc') + interval '1 day 1 minute'
                                     - (now() at time zone 'utc'))::float8 as "seconds!""#
    )
    .fetch_one(db)
    .await?;
    Ok(Duration::from_secs_f64(seconds.max(1.0)))
}
