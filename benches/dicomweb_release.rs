//! What DICOMweb over a release costs (`src/release/dicomweb.rs`): indexing
//! each instance as the build releases it, next to releasing it; the QIDO-RS
//! searches a viewer makes, over the index of a 2,000-instance release in
//! PostgreSQL; and WADO-RS metadata made from a released file's header.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5499/postgres cargo bench --bench dicomweb_release
//! ```
//!
//! The release: 20 subjects, one study each, four series of 25 CT slices of
//! 256×256, made the way ingest makes them and released for a project. Prints
//! `release_ms index_ms index/release` over the 2,000 instances (best of three),
//! then one line per search, `search results median_ms p95_ms` over 50 runs,
//! and `metadata instances per_instance_us`.

#[path = "../tests/api/dicom_gen.rs"]
#[allow(dead_code)]
mod dicom_gen;
#[path = "../tests/api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::time::{Duration, Instant};

use bytes::Bytes;
use custodian::deid::{RegistryKey, deidentify};
use custodian::release::dicom::{ProjectPseudonyms, Released, for_project};
use custodian::release::dicomweb::{self, Indexed, Matching, Page};
use dicom_gen::Instance;

const ROUNDS: usize = 3;
const RUNS: usize = 50;

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and 95th percentile of `runs` runs of `search`, and its result count.
async fn timed<F: Future<Output = usize>>(mut search: impl FnMut() -> F) -> (usize, f64, f64) {
    let mut times = Vec::with_capacity(RUNS);
    let mut found = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        found = search().await;
        times.push(started.elapsed());
    }
    times.sort();
    (found, millis(times[RUNS / 2]), millis(times[RUNS * 95 / 100]))
}

#[tokio::main]
async fn main() {
    let key = RegistryKey::new(b"registry-key-for-the-dicomweb-bench").expect("a valid key");
    let settings = helpers::deid_settings(&key, "bench");
    let project = ProjectPseudonyms::new(&[0x5A; 32]);
    let stored: Vec<Bytes> = (1..=20)
        .flat_map(|patient| {
            (1..=4).flat_map(move |series| {
                (1..=25).map(move |i| Instance { rows: 256, columns: 256, ..Instance::ct(patient, 1, series, i) })
            })
        })
        .map(|instance| {
            let original = Bytes::from(instance.to_bytes());
            Bytes::from(deidentify(&original, &settings).expect("de-identifies").to_vec())
        })
        .collect();

    let (mut release_s, mut index_s) = (Duration::MAX, Duration::MAX);
    let mut released: Vec<Released> = Vec::new();
    let mut indexed: Vec<Indexed> = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        released = stored.iter().map(|file| for_project(file, &project).expect("releases")).collect();
        release_s = release_s.min(started.elapsed());
        let started = Instant::now();
        indexed = released.iter().map(|r| Indexed::of(r).expect("indexes")).collect();
        index_s = index_s.min(started.elapsed());
    }
    println!("instances release_ms index_ms index/release");
    println!(
        "{} {:.0} {:.0} {:.3}",
        indexed.len(),
        millis(release_s),
        millis(index_s),
        index_s.as_secs_f64() / release_s.as_secs_f64()
    );

    let (db, _) = helpers::fresh_database().await;
    let extract_id = uuid::Uuid::new_v4();
    {
        // The index alone: no release row behind it (its foreign key is not what is measured).
        let mut conn = db.acquire().await.unwrap();
        sqlx::query("set session_replication_role = replica").execute(&mut *conn).await.unwrap();
        for entry in &indexed {
            dicomweb::record(&mut *conn, extract_id, entry).await.unwrap();
        }
        sqlx::query(
            "insert into extract_file (extract_id, path, size, sha256, media_type, object_key)
             select extract_id, path, header_size, '-', 'application/dicom', path from extract_instance",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        sqlx::raw_sql("analyze extract_instance; analyze extract_file").execute(&mut *conn).await.unwrap();
    }
    let page = Page { limit: 1000, offset: 0 };
    let all = Matching::default();
    let study = indexed[0].study_uid.clone();
    let series = indexed[0].series_uid.clone();
    let of_study = Matching { study_uids: Some(vec![study.clone()]), ..Matching::default() };
    let of_series = Matching { series_uids: Some(vec![series]), ..of_study.clone() };
    let patient = Matching { patient: Some(dicomweb::like_pattern("psub-a*")), ..Matching::default() };
    let sop = Matching { sop_uids: Some(vec![indexed[1999].sop_uid.clone()]), ..Matching::default() };
    println!("search results median_ms p95_ms");
    let rows = [
        ("studies", timed(|| async { dicomweb::studies(&db, extract_id, &all, page).await.unwrap().len() }).await),
        (
            "studies?PatientID=psub-a*",
            timed(|| async { dicomweb::studies(&db, extract_id, &patient, page).await.unwrap().len() }).await,
        ),
        (
            "studies/{study}/series",
            timed(|| async { dicomweb::series(&db, extract_id, &of_study, page).await.unwrap().len() }).await,
        ),
        (
            "studies/{study}/series/{series}/instances",
            timed(|| async { dicomweb::instances(&db, extract_id, &of_series, page).await.unwrap().len() }).await,
        ),
        ("instances", timed(|| async { dicomweb::instances(&db, extract_id, &all, page).await.unwrap().len() }).await),
        (
            "instances?SOPInstanceUID=…",
            timed(|| async { dicomweb::instances(&db, extract_id, &sop, page).await.unwrap().len() }).await,
        ),
        (
            "retrieve study (file list)",
            timed(|| async { dicomweb::stored(&db, extract_id, &study, None, None).await.unwrap().len() }).await,
        ),
    ];
    for (search, (found, median, p95)) in rows {
        println!("{search} {found} {median:.2} {p95:.2}");
    }

    let headers: Vec<Bytes> = released.iter().map(|r| r.parts[0].clone()).collect();
    let started = Instant::now();
    for header in &headers {
        std::hint::black_box(dicomweb::metadata(header).expect("describes"));
    }
    #[allow(clippy::cast_precision_loss)]
    let per = started.elapsed().as_secs_f64() * 1e6 / headers.len() as f64;
    println!("metadata instances per_instance_us");
    println!("metadata {} {per:.0}", headers.len());
}
