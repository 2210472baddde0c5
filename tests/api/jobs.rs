//! The job queue: claimed once, leased, retried, and the sweep as a recurring job.

use std::time::Duration;

use custodian::jobs::{self, NewJob};
use serde_json::json;

use crate::helpers::TestApp;

const LEASE: Duration = Duration::from_mins(5);

async fn job_row(app: &TestApp, id: i64) -> (String, i32, Option<String>) {
    sqlx::query_as("select state, attempts, last_error from job where job_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_workers_never_claim_the_same_job_and_an_expired_lease_is_taken_over() {
    let app = TestApp::new().await;
    let first = jobs::enqueue(&app.db, &NewJob::new("test.echo").payload(json!({ "n": 1 }))).await.unwrap().unwrap();
    let second = jobs::enqueue(&app.db, &NewJob::new("test.echo").payload(json!({ "n": 2 }))).await.unwrap().unwrap();

    let (a, b) = tokio::join!(jobs::claim(&app.db, "worker-a", LEASE), jobs::claim(&app.db, "worker-b", LEASE));
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    assert_ne!(a.id, b.id, "each job goes to one worker");
    assert_eq!([a.id.min(b.id), a.id.max(b.id)], [first, second]);
    assert!(jobs::claim(&app.db, "worker-c", LEASE).await.unwrap().is_none(), "nothing else is due");

    // Worker A dies: once its lease has run out, C takes the job over and A can no longer finish it.
    sqlx::query("update job set lease_until = now() - interval '1 second' where job_id = $1")
        .bind(a.id)
        .execute(&app.db)
        .await
        .unwrap();
    let taken = jobs::claim(&app.db, "worker-c", LEASE).await.unwrap().expect("the expired job is due again");
    assert_eq!((taken.id, taken.attempt), (a.id, 2));
    assert!(!jobs::complete(&app.db, a.id, "worker-a").await.unwrap(), "the old holder lost it");
    assert!(jobs::complete(&app.db, a.id, "worker-c").await.unwrap());
    assert_eq!(job_row(&app, a.id).await.0, "done");
}

#[tokio::test]
async fn a_failing_job_is_retried_later_and_fails_for_good_after_its_last_attempt() {
    let app = TestApp::new().await;
    let id = jobs::enqueue(&app.db, &NewJob { max_attempts: 2, ..NewJob::new("test.broken") }).await.unwrap().unwrap();
    let job = jobs::claim(&app.db, "w", LEASE).await.unwrap().unwrap();
    jobs::run_claimed(&app.db, "w", LEASE, &job, async { anyhow::bail!("the thing is broken") }).await.unwrap();
    assert_eq!(job_row(&app, id).await, ("queued".into(), 1, Some("the thing is broken".into())));
    assert!(jobs::claim(&app.db, "w", LEASE).await.unwrap().is_none(), "not before its back-off");

    sqlx::query("update job set run_at = now() where job_id = $1").bind(id).execute(&app.db).await.unwrap();
    let job = jobs::claim(&app.db, "w", LEASE).await.unwrap().unwrap();
    jobs::run_claimed(&app.db, "w", LEASE, &job, async { anyhow::bail!("still broken") }).await.unwrap();
    assert_eq!(job_row(&app, id).await, ("failed".into(), 2, Some("still broken".into())));
    sqlx::query("update job set run_at = now() where job_id = $1").bind(id).execute(&app.db).await.unwrap();
    assert!(jobs::claim(&app.db, "w", LEASE).await.unwrap().is_none(), "a failed job stays failed");
}

#[tokio::test]
async fn the_sweep_is_a_recurring_job_with_never_more_than_one_run_pending() {
    let app = TestApp::new().await;
    let interval = Duration::from_hours(1);
    let next = custodian::ingest::sweep::next_sweep(Duration::ZERO);
    let id = jobs::enqueue(&app.db, &next).await.unwrap().expect("the first sweep is queued");
    assert!(jobs::enqueue(&app.db, &next).await.unwrap().is_none(), "a second one is not");

    let job = jobs::claim(&app.db, "w", LEASE).await.unwrap().unwrap();
    assert_eq!(job.kind, custodian::ingest::sweep::SWEEP_JOB);
    let store = app.state.store.clone();
    let work = custodian::ingest::sweep::run_job(&app.db, &store, None, interval, Duration::ZERO);
    jobs::run_claimed(&app.db, "w", LEASE, &job, work).await.unwrap();
    assert_eq!(job_row(&app, id).await.0, "done");
    let pending: Vec<(String, bool)> =
        sqlx::query_as("select state, run_at > now() + interval '59 minutes' from job where job_id <> $1")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(pending, [("queued".to_owned(), true)], "the next run is queued an interval later");

    // A week later the finished run is pruned by a later sweep; the queued one stays.
    sqlx::query("update job set finished_at = now() - interval '8 days' where job_id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(jobs::prune_done(&app.db, Duration::from_hours(24 * 7)).await.unwrap(), 1);
    let left: i64 = sqlx::query_scalar("select count(*) from job").fetch_one(&app.db).await.unwrap();
    assert_eq!(left, 1);
}

#[tokio::test]
async fn a_worker_stops_quietly_when_the_service_closes_its_pool() {
    let app = TestApp::new().await;
    let pool = app.db.clone();
    pool.close().await;
    let worker = jobs::work(pool, "worker-z".into(), LEASE, Duration::from_millis(10), |_job| async {
        Ok::<_, anyhow::Error>(None)
    });
    // Before, it went on claiming from the closed pool, logging "claiming a job" at every poll.
    tokio::time::timeout(Duration::from_secs(5), worker).await.expect("the worker returns once the pool is closed");
}
