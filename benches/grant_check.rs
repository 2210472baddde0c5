//! Grant-check benchmark (`benches/grants.sh`): the cost the grant check adds
//! to a file request, with 10,000 active grants over 1,000 projects.
//!
//! ```text
//! cargo bench --bench grant_check -- <database-url> <requests>
//! ```
//!
//! A file request here is what a download does before it streams: find the
//! instance in the catalog and read its object (512 KiB) from the local object
//! store. Each request is timed twice, alternately, with and without the grant
//! check (`custodian::access::grants::check`: membership, the grant in force
//! for the cohort, its dates, state and overdue duties, in one query), by a
//! random member of a random project for a random granted cohort.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use custodian::access::grants::{self, Need};
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const PROJECTS: u32 = 1_000;
const GRANTS_PER_PROJECT: u32 = 10;
const COHORTS: u32 = 100;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [url, requests] = args.as_slice() else {
        anyhow::bail!("usage: grant_check <database-url> <requests>");
    };
    let requests: usize = requests.parse()?;
    let db = PgPoolOptions::new().max_connections(4).connect(url).await.context("connecting")?;
    custodian::db::migrate(&db).await?;
    seed(&db).await?;
    let dir = tempfile::tempdir()?;
    let store = LocalFileSystem::new_with_prefix(dir.path())?;
    let object = ObjectPath::from("instances/bench.dcm");
    store.put(&object, vec![7_u8; 512 * 1024].into()).await?;

    let members: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "select m.project_id, m.username, g.scope -> 'cohorts' ->> 0 from project_member m
         join access_grant g on g.project_id = m.project_id and g.version = 2
         where m.accepted_at is not null order by random() limit 5000",
    )
    .fetch_all(&db)
    .await?;
    let (mut with, mut without, mut check_only) = (Vec::new(), Vec::new(), Vec::new());
    // The seeded members have no profiles: the query still looks for their verified bona
    // fides (same cost), the rule that would refuse them is off.
    let rules = custodian::config::AccessConfig { require_verified_profiles: false, ..Default::default() };
    // Warm-up.
    for (project, user, cohort) in members.iter().take(200) {
        grants::check(&db, *project, user, Need { cohort, imaging: true }, &rules).await?;
        file(&db, &store, &object).await?;
    }
    let started = Instant::now();
    for i in 0..requests {
        let (project, user, cohort) = &members[i % members.len()];
        let t = Instant::now();
        file(&db, &store, &object).await?;
        without.push(t.elapsed());
        let t = Instant::now();
        grants::check(&db, *project, user, Need { cohort, imaging: true }, &rules).await?;
        let checked = t.elapsed();
        file(&db, &store, &object).await?;
        with.push(t.elapsed());
        check_only.push(checked);
    }
    let total = started.elapsed();
    println!("{requests} file requests of 512 KiB each way, 10,000 active grants over 1,000 projects");
    println!();
    println!("| request | p50 ms | p95 ms | p99 ms | requests/s |");
    println!("|---|---:|---:|---:|---:|");
    let seconds = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>();
    for (name, v) in [
        ("file request, check skipped", &mut without),
        ("file request with the grant check", &mut with),
        ("the grant check alone", &mut check_only),
    ] {
        v.sort();
        let n = u32::try_from(v.len()).unwrap_or(u32::MAX);
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.0} |",
            ms(v, 0.50),
            ms(v, 0.95),
            ms(v, 0.99),
            f64::from(n) / seconds(v)
        );
    }
    println!();
    println!(
        "added at p50: {:.3} ms, at p95: {:.3} ms (target ≤ 1 ms); whole run {:.1} s",
        ms(&with, 0.50) - ms(&without, 0.50),
        ms(&with, 0.95) - ms(&without, 0.95),
        total.as_secs_f64()
    );
    Ok(())
}

fn ms(sorted: &[Duration], q: f64) -> f64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// What a download does before it streams: the catalog row, then the bytes.
async fn file(db: &PgPool, store: &LocalFileSystem, object: &ObjectPath) -> Result<usize> {
    // One indexed catalog round trip (the bench catalog holds no instances).
    let key: Option<String> = sqlx::query_scalar("select object_key from instance where sop_uid = $1")
        .bind("2.25.1")
        .fetch_optional(db)
        .await?;
    let path = key.map_or_else(|| object.clone(), ObjectPath::from);
    Ok(store.get(&path).await?.bytes().await?.len())
}

/// 1,000 projects with a PI and two collaborators, 10 active grants each (two
/// versions: pending, then active) over 100 cohorts, two duties per grant.
async fn seed(db: &PgPool) -> Result<()> {
    let already: i64 = sqlx::query_scalar("select count(*) from project").fetch_one(db).await?;
    if already > 0 {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    sqlx::query(
        "insert into cohort (slug, title, tier, design, source)
         select 'bench-' || n, 'Bench ' || n, 'controlled', 'retrospective', 'registry' from generate_series(1, $1) n",
    )
    .bind(i32::try_from(COHORTS)?)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into project (project_id, title, pi_username)
         select gen_random_uuid(), 'Project ' || n, 'pi-' || n from generate_series(1, $1) n",
    )
    .bind(i32::try_from(PROJECTS)?)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into project_member (project_id, username, role, invited_by, accepted_at)
         select p.project_id, u.name, u.role, p.pi_username, now()
         from project p, lateral (values (p.pi_username, 'pi'), (p.pi_username || '-a', 'collaborator'),
                                         (p.pi_username || '-b', 'collaborator')) u(name, role)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "with apps as (
             insert into application (project_id, draft, created_by, state)
             select project_id, '{}'::jsonb, pi_username, 'active' from project returning application_id, project_id)
         insert into access_grant (grant_id, version, project_id, application_id, state, scope, conditions,
                                   not_before, not_after, created_by)
         select g.grant_id, v.version, a.project_id, a.application_id, v.state,
                jsonb_build_object('cohorts', jsonb_build_array('bench-' || (1 + (abs(hashtext(g.grant_id::text)) % $2))),
                                   'imaging', true),
                '{}'::jsonb, now() - interval '1 day', now() + interval '700 days', 'bench'
         from apps a
         cross join lateral (select gen_random_uuid() as grant_id, a.application_id as app
                             from generate_series(1, $1)) g
         cross join (values (1, 'pending'), (2, 'active')) v(version, state)",
    )
    .bind(i32::try_from(GRANTS_PER_PROJECT)?)
    .bind(i32::try_from(COHORTS)?)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into obligation (grant_id, project_id, kind, due_on)
         select grant_id, project_id, k.kind, current_date + k.days
         from access_grant, (values ('progress_report', 300), ('deletion_attestation', 730)) k(kind, days)
         where version = 2",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("analyze").execute(db).await?;
    Ok(())
}
