//! Building a release against a plain copy of the same objects.
//!
//! ```text
//! cargo bench --bench release_build                    # 300 subjects, 512×512 slices
//! SUBJECTS=500 MATRIX=256 cargo bench --bench release_build
//! ```
//!
//! A demo registry is generated through ingest with `SUBJECTS` subjects and
//! series of up to five `MATRIX`² slices (real de-identified DICOM in the local
//! object store), with the demo's approved project on its MR imaging. Each
//! round then, side by side:
//!
//! - **copy**: every stored instance the release holds is read from the object
//!   store and written back under another key, one after the other, as a
//!   plain copy would;
//! - **release**: a release is asked for over HTTP and its build job run to
//!   `ready` (re-pseudonymization, SHA-256, one `extract_file` row per file,
//!   the tables, the documents, the signed manifest).
//!
//! Prints one line per round and the best of three:
//! `round files MB copy_s copy_MB/s release_s release_MB/s release/copy`,
//! where MB counts the DICOM files of the release.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)] // figures to print

#[path = "../tests/api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use custodian::auth::Role;
use custodian::demo::registry::{self, Imaging, Shape};
use custodian::jobs;
use custodian::release::build::{self, BUILD_JOB};
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde_json::json;

const ROUNDS: usize = 3;
const LEASE: Duration = Duration::from_mins(10);

fn setting(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let subjects = setting("SUBJECTS", 300);
    let matrix = u16::try_from(setting("MATRIX", 512)).expect("MATRIX fits in 16 bits");
    let app = helpers::TestApp::new().await;
    let db = app.db.clone();
    let key = app.state.ingest.key.clone();
    eprintln!("generating {subjects} subjects with up to 5 slices of {matrix}x{matrix} per series...");
    let started = Instant::now();
    custodian::demo::seed(&db).await.unwrap();
    let shape = Shape { matrix: Some(matrix), max_slices: 5 };
    let made = registry::generate(&db, &key, 3650, subjects, 42, Imaging::IngestShaped(&app.state.ingest, shape))
        .await
        .unwrap();
    custodian::demo::project::seed(&db, &app.state.config, &key).await.unwrap();
    let project = custodian::demo::project::find(&db).await.unwrap().expect("the demo's approved project");
    eprintln!("{} instances ingested in {:.0} s", made.instances, started.elapsed().as_secs_f64());
    let rita = app.token("rita", &[Role::Researcher]);
    let ctx = build::Context {
        db: db.clone(),
        store: app.state.store.clone(),
        key: Arc::new(key.clone()),
        signer: app.state.release_signer.clone(),
        config: app.state.config.clone(),
    };

    println!("round files MB copy_s copy_MB/s release_s release_MB/s release/copy");
    let mut best: Option<(f64, f64)> = None;
    let mut released = None;
    for round in 1..=ROUNDS {
        // The release.
        let queued = app.post_json(&format!("/api/v1/projects/{project}/extracts"), Some(&rita), &json!({})).await;
        let extract = queued.json()["id"].as_str().expect("a queued release").to_owned();
        let started = Instant::now();
        while let Some(job) = jobs::claim(&db, "bench", LEASE).await.unwrap() {
            if job.kind == BUILD_JOB {
                jobs::run_claimed(&db, "bench", LEASE, &job, build::run_job(&ctx, &job)).await.unwrap();
            } else {
                jobs::run_claimed(&db, "bench", LEASE, &job, async { Ok(None) }).await.unwrap();
            }
        }
        let release_s = started.elapsed().as_secs_f64();
        let state: String = sqlx::query_scalar("select state from extract where extract_id = $1::uuid")
            .bind(&extract)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(state, "ready", "the release was built");
        let (files, bytes): (i64, i64) = sqlx::query_as(
            "select count(*), coalesce(sum(size), 0)::bigint from extract_file
             where extract_id = $1::uuid and path like 'dicom/%'",
        )
        .bind(&extract)
        .fetch_one(&db)
        .await
        .unwrap();
        released.get_or_insert(extract.clone());

        // The plain copy of the stored instances the release holds.
        let sources: Vec<String> = sqlx::query_scalar(
            "select i.object_key from instance i join series se using (series_id) join study st using (study_id)
             join extract_subject es on es.subject_id = st.subject_id and es.extract_id = $1::uuid
             where i.status = 'published' and se.modality = 'MR' order by i.object_key",
        )
        .bind(&extract)
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(sources.len() as i64, files, "the copy reads the objects the release holds");
        let started = Instant::now();
        for (n, source) in sources.iter().enumerate() {
            let bytes = app.state.store.get(&Path::from(source.as_str())).await.unwrap().bytes().await.unwrap();
            app.state.store.put(&Path::from(format!("bench-copy/{round}/{n}.dcm")), bytes.into()).await.unwrap();
        }
        let copy_s = started.elapsed().as_secs_f64();

        let mb = bytes as f64 / 1e6;
        let (copy_rate, release_rate) = (mb / copy_s, mb / release_s);
        println!(
            "{round} {files} {mb:.1} {copy_s:.2} {copy_rate:.1} {release_s:.2} {release_rate:.1} {:.2}",
            release_rate / copy_rate
        );
        let (best_copy, best_release) = best.get_or_insert((copy_rate, release_rate));
        *best_copy = best_copy.max(copy_rate);
        *best_release = best_release.max(release_rate);
    }
    let (copy, release) = best.unwrap();
    println!("best copy {copy:.1} MB/s, release {release:.1} MB/s, release/copy {:.2}", release / copy);
}
