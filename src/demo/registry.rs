//! A synthetic registry for the demo and the discovery benchmark: subjects at
//! the three demo sites, each site with its own scanner mix and demographics,
//! imaging studies, lab values, diagnoses, variant genotypes and annotations,
//! correlated so that breakdowns show a site effect (older patients and more
//! diabetes at one site, 1.5 T scanners at another, ...).
//!
//! Patients are numbered `SYN0000001`… per site and pseudonymized with the
//! registry key like any import; dates are shifted by each subject's offset.
//! Everyone is in the controlled neuro cohort; about a third also consented to
//! open release and are in the open chest X-ray challenge cohort with a
//! radiograph, so anonymous visitors see coverage in the data dictionary.
//!
//! Imaging comes in one of two ways ([`Imaging`]): as synthetic DICOM files
//! (see [`super::dicom`]) sent through ingest like any upload, one session per
//! cohort and site, so they are de-identified, stored and cataloged the normal
//! way (the demo); or, for registries too large to ingest quickly (the
//! discovery benchmarks), as catalog rows only, whose objects (under the
//! `synthetic/` prefix) do not exist. Subjects, labs, diagnoses, genotypes and
//! annotations are written with `COPY`.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::{Duration, NaiveDate};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::dicom::{self, Equipment, Patient};
use crate::deid::RegistryKey;
use crate::ingest::tables::db::{Copy, copy_rows};
use crate::ingest::{Ingestor, Outcome, Received};

/// A small, fast, deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[allow(clippy::cast_precision_loss)] // 53 bits: exact in an f64
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo + 1).unwrap_or(1);
        lo + i64::try_from(self.next_u64() % span).unwrap_or(0)
    }

    /// Normal (Box–Muller).
    pub fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        mean + sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    pub fn uuid(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.next_u64(), self.next_u64())
    }

    pub fn pick<'a, T>(&mut self, items: &'a [(T, f64)]) -> &'a T {
        let total: f64 = items.iter().map(|(_, w)| w).sum();
        let mut x = self.unit() * total;
        for (item, weight) in items {
            if x < *weight {
                return item;
            }
            x -= weight;
        }
        &items[items.len() - 1].0
    }
}

struct Scanner {
    manufacturer: &'static str,
    model: &'static str,
    field_strength: Option<f64>,
    modality: &'static str,
    /// Station Name (0008,1010) its files carry.
    station: &'static str,
}

struct SiteProfile {
    code: &'static str,
    /// Institution Name (0008,0080) its files carry.
    institution: &'static str,
    share: f64,
    mean_age: f64,
    female: f64,
    diabetes: f64,
    scanners: &'static [(usize, f64)],
}

const SCANNERS: &[Scanner] = &[
    Scanner {
        manufacturer: "Siemens Healthineers",
        model: "MAGNETOM Prisma",
        field_strength: Some(3.0),
        modality: "MR",
        station: "UHBMR01",
    },
    Scanner {
        manufacturer: "Siemens Healthineers",
        model: "MAGNETOM Skyra",
        field_strength: Some(3.0),
        modality: "MR",
        station: "UHBMR02",
    },
    Scanner {
        manufacturer: "Siemens Healthineers",
        model: "SOMATOM Force",
        field_strength: None,
        modality: "CT",
        station: "UHBCT01",
    },
    Scanner {
        manufacturer: "GE Healthcare",
        model: "SIGNA Artist",
        field_strength: Some(1.5),
        modality: "MR",
        station: "CMCMR1",
    },
    Scanner { manufacturer: "Philips", model: "Ingenia", field_strength: Some(3.0), modality: "MR", station: "CMCMR2" },
    Scanner {
        manufacturer: "GE Healthcare",
        model: "Revolution CT",
        field_strength: None,
        modality: "CT",
        station: "CMCCT1",
    },
    Scanner {
        manufacturer: "Philips",
        model: "Achieva",
        field_strength: Some(1.5),
        modality: "MR",
        station: "RIH-MRA",
    },
    Scanner {
        manufacturer: "Canon Medical",
        model: "Vantage Orian",
        field_strength: Some(1.5),
        modality: "MR",
        station: "RIH-MRB",
    },
    Scanner {
        manufacturer: "Canon Medical",
        model: "Aquilion ONE",
        field_strength: None,
        modality: "CT",
        station: "RIH-CTA",
    },
    Scanner {
        manufacturer: "Siemens Healthineers",
        model: "YSIO X.pree",
        field_strength: None,
        modality: "DX",
        station: "UHBDX01",
    },
    Scanner {
        manufacturer: "Philips",
        model: "DigitalDiagnost C90",
        field_strength: None,
        modality: "DX",
        station: "CMCDX1",
    },
    Scanner {
        manufacturer: "Carestream Health",
        model: "DRX-Evolution Plus",
        field_strength: None,
        modality: "DX",
        station: "RIH-DXA",
    },
];

/// Each site's X-ray system (an index into [`SCANNERS`]), in the order of [`SITES`].
const XRAY: [usize; 3] = [9, 10, 11];

const SITES: &[SiteProfile] = &[
    SiteProfile {
        code: "uhb",
        institution: "Universitaetsklinikum B",
        share: 0.45,
        mean_age: 63.0,
        female: 0.46,
        diabetes: 0.16,
        scanners: &[(0, 0.45), (1, 0.25), (2, 0.30)],
    },
    SiteProfile {
        code: "cmc",
        institution: "City Medical Centre",
        share: 0.35,
        mean_age: 49.0,
        female: 0.55,
        diabetes: 0.08,
        scanners: &[(3, 0.35), (4, 0.30), (5, 0.35)],
    },
    SiteProfile {
        code: "rih",
        institution: "Centre Regional d'Imagerie",
        share: 0.20,
        mean_age: 57.0,
        female: 0.51,
        diabetes: 0.12,
        scanners: &[(6, 0.35), (7, 0.25), (8, 0.40)],
    },
];

/// Labs every subject may have: (field, mean, sd, mean shift with diabetes).
const LABS: &[(&str, f64, f64, f64)] = &[
    ("glucose", 5.3, 0.6, 2.6),
    ("hba1c", 5.4, 0.4, 2.1),
    ("creatinine", 80.0, 18.0, 12.0),
    ("egfr", 88.0, 16.0, -14.0),
    ("cholesterol_total", 5.1, 0.9, 0.3),
    ("ldl_cholesterol", 3.1, 0.8, 0.2),
    ("hdl_cholesterol", 1.4, 0.35, -0.2),
    ("triglycerides", 1.5, 0.6, 0.8),
    ("crp", 3.0, 2.5, 2.0),
    ("hemoglobin", 138.0, 13.0, -3.0),
];

/// Variants genotyped for everyone: (rsID, chrom, pos, ref, alt, gene, alt allele frequency).
const VARIANTS: &[(&str, &str, i64, &str, &str, &str, f64)] = &[
    ("rs429358", "19", 44_908_684, "T", "C", "APOE", 0.15),
    ("rs7412", "19", 44_908_822, "C", "T", "APOE", 0.08),
    ("rs7903146", "10", 112_998_590, "C", "T", "TCF7L2", 0.30),
    ("rs9939609", "16", 53_786_615, "T", "A", "FTO", 0.40),
    ("rs1333049", "9", 22_125_504, "G", "C", "CDKN2B-AS1", 0.47),
];

/// What was generated.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub subjects: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub observations: u64,
    pub diagnoses: u64,
    pub genotypes: u64,
    pub annotations: u64,
}

struct Subject {
    id: Uuid,
    site: usize,
    female: bool,
    birth_year: i32,
    shift: i64,
    diabetes: bool,
}

/// `age` (18–95) in whole years.
#[allow(clippy::cast_possible_truncation)] // clamped to 18..=95 by the caller
fn whole_years(age: f64) -> i32 {
    age.round() as i32
}

fn date(days_since_2010: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2010, 1, 1).expect("a date") + Duration::days(days_since_2010)
}

/// How the imaging of a generated registry is written.
pub enum Imaging<'a> {
    /// Synthetic DICOM files sent through this ingest, like any upload.
    Ingest(&'a Arc<Ingestor>),
    /// The same, in another [`Shape`] (larger images and series, for benchmarks).
    IngestShaped(&'a Arc<Ingestor>, Shape),
    /// Catalog rows only, without objects: for registries too large to ingest quickly.
    CatalogOnly,
}

/// Generates `subjects` subjects into the demo sites and the `demo-neuro-mri`
/// cohort, their imaging as `imaging` says. Refuses to run twice on one
/// registry. With [`Imaging::Ingest`], the subjects are committed first and
/// the files ingested next, and the rest is committed last with the marker
/// of a generated registry: a generation cut short leaves no marker, and the
/// next one finds the same subjects and files (the same seed gives the same
/// bytes, which ingest takes as duplicates) and completes it.
pub async fn generate(
    db: &PgPool,
    key: &RegistryKey,
    max_shift_days: u32,
    subjects: u32,
    seed: u64,
    imaging: Imaging<'_>,
) -> Result<Generated> {
    let mut tx = db.begin().await?;
    if exists(&mut tx).await? {
        bail!("this registry already holds a synthetic registry; generate into a fresh data directory");
    }
    let cohort = sqlx::query_scalar!("select cohort_id from cohort where slug = 'demo-neuro-mri'")
        .fetch_optional(&mut *tx)
        .await?
        .context("the demo cohorts are missing: run `custodian demo` first")?;
    let mut site_ids = Vec::new();
    for site in SITES {
        let id = sqlx::query_scalar!("select site_id from site where code = $1", site.code)
            .fetch_optional(&mut *tx)
            .await?
            .context("the demo sites are missing: run `custodian demo` first")?;
        site_ids.push(id);
    }

    let mut rng = Rng::new(seed);
    let (people, pseudonyms) = draw_subjects(&mut rng, key, max_shift_days, subjects);
    let mut out = Generated { subjects: u64::from(subjects), ..Generated::default() };
    write_subjects(&mut tx, &people, &pseudonyms, &site_ids, cohort).await?;
    let mut plan = plan_neuro(&mut rng, &people, cohort);
    let neuro_studies = plan.len();
    let open = sqlx::query_scalar!("select cohort_id from cohort where slug = 'demo-chest-xray-challenge'")
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(open) = open {
        plan.extend(plan_chest_xray(seed, &people, open));
        write_members(&mut tx, open, plan[neuro_studies..].iter().map(|s| people[s.subject].id)).await?;
    }
    let neuro_series: usize = plan[..neuro_studies].iter().map(|s| s.series.len()).sum();
    let imaging = match imaging {
        Imaging::CatalogOnly => {
            let scanners = write_scanners(&mut tx).await?;
            write_imaging(&mut tx, &plan, &people, &site_ids, &scanners, &mut out).await?
        }
        Imaging::Ingest(ingest) | Imaging::IngestShaped(ingest, _) => {
            let shape = match imaging {
                Imaging::IngestShaped(_, shape) => shape,
                _ => Shape::default(),
            };
            // The subjects are in the catalog before their files arrive.
            tx.commit().await?;
            let series = ingest_imaging(ingest, seed, shape, &plan, neuro_studies, &people, &mut out).await?;
            tx = db.begin().await?;
            if exists(&mut tx).await? {
                bail!("another generation completed meanwhile");
            }
            series
        }
    };
    let import = sqlx::query_scalar!(
        "insert into data_import (kind, format, cohort_id, site_id, created_by, row_count, subjects_created)
         values ('subjects', 'synthetic', $1, $2, 'system:demo', $3, $3) returning data_import_id",
        cohort,
        site_ids[0],
        i32::try_from(subjects).unwrap_or(i32::MAX)
    )
    .fetch_one(&mut *tx)
    .await?;
    write_clinical(&mut tx, &mut rng, &people, import, &mut out).await?;
    write_annotations(&mut tx, &mut rng, &imaging[..neuro_series], &mut out).await?;
    write_chest_labels(&mut tx, seed, &imaging[neuro_series..], &mut out).await?;
    // Ingested series became discoverable as their sessions committed.
    sqlx::query!(
        "insert into discovery_series (series_id, study_id, subject_id, cohort_id, site_id, modality, body_part,
                                       manufacturer, model, field_strength, age_years, study_date, instances)
         select se.series_id, st.study_id, st.subject_id, st.cohort_id, st.site_id, se.modality, se.body_part,
                nullif(sc.manufacturer, ''), nullif(sc.model, ''), sc.field_strength, st.age_years, st.study_date, n.instances
         from series se join study st using (study_id) left join scanner sc using (scanner_id)
         join (select series_id, count(*)::integer as instances from instance
               where status = 'published' and object_key like 'synthetic/%' group by series_id) n using (series_id)
         on conflict (series_id) do nothing"
    )
    .execute(&mut *tx)
    .await?;
    crate::audit::record(
        &mut tx,
        crate::audit::NewEvent::new("system:demo", "demo.generate").details(serde_json::json!({
            "subjects": out.subjects, "studies": out.studies, "series": out.series, "instances": out.instances,
            "observations": out.observations, "diagnoses": out.diagnoses, "genotypes": out.genotypes,
            "annotations": out.annotations, "seed": seed,
        })),
    )
    .await?;
    crate::jobs::enqueue(&mut *tx, &crate::dictionary::db::refresh_soon()).await?;
    tx.commit().await?;
    sqlx::query!("analyze").execute(db).await?;
    Ok(out)
}

/// The subjects, with their registry pseudonyms.
fn draw_subjects(rng: &mut Rng, key: &RegistryKey, max_shift_days: u32, subjects: u32) -> (Vec<Subject>, Vec<String>) {
    let weights: Vec<(usize, f64)> = SITES.iter().enumerate().map(|(i, s)| (i, s.share)).collect();
    let mut people = Vec::with_capacity(subjects as usize);
    let mut pseudonyms = Vec::with_capacity(subjects as usize);
    for n in 0..subjects {
        let site = *rng.pick(&weights);
        let profile = &SITES[site];
        let age = rng.normal(profile.mean_age, 14.0).clamp(18.0, 95.0);
        let pseudonym = key.subject(profile.code, &dicom::local_id(n));
        let old = (age - 40.0).max(0.0) / 50.0;
        people.push(Subject {
            id: rng.uuid(),
            site,
            female: rng.chance(profile.female),
            birth_year: 2022 - whole_years(age),
            shift: key.date_shift_days(&pseudonym, max_shift_days),
            diabetes: rng.chance(profile.diabetes * (0.5 + old)),
        });
        pseudonyms.push(pseudonym);
    }
    (people, pseudonyms)
}

/// Whether this registry already holds a generated registry.
pub async fn exists(db: &mut PgConnection) -> Result<bool> {
    Ok(sqlx::query_scalar!(r#"select exists (select 1 from data_import where format = 'synthetic') as "e!""#)
        .fetch_one(db)
        .await?)
}

/// Subjects (and their membership of `cohort`) not yet in the catalog. A
/// subject already there (from a generation cut short) keeps its row.
async fn write_subjects(
    tx: &mut PgConnection,
    people: &[Subject],
    pseudonyms: &[String],
    sites: &[Uuid],
    cohort: Uuid,
) -> Result<()> {
    let stored: std::collections::HashSet<String> =
        sqlx::query_scalar!("select pseudonym from subject where pseudonym = any($1)", pseudonyms)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let mut rows = people.iter().zip(pseudonyms).filter(|(_, p)| !stored.contains(*p));
    copy_rows(tx, "copy subject (subject_id, pseudonym, site_id, sex, birth_year, date_shift_days) from stdin", |c| {
        fill(c, &mut rows, |c, (s, p)| {
            c.line(format_args!(
                "{}\t{p}\t{}\t{}\t{}\t{}",
                s.id,
                sites[s.site],
                if s.female { "F" } else { "M" },
                s.birth_year,
                s.shift
            ));
        })
    })
    .await?;
    write_members(tx, cohort, people.iter().map(|s| s.id)).await
}

async fn write_members(tx: &mut PgConnection, cohort: Uuid, subjects: impl Iterator<Item = Uuid>) -> Result<()> {
    let subjects: Vec<Uuid> = subjects.collect();
    sqlx::query!(
        "insert into cohort_subject (cohort_id, subject_id) select $1, unnest($2::uuid[]) on conflict do nothing",
        cohort,
        &subjects
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes up to a chunk of `rows` into `copy`; false when they are all written.
fn fill<T>(copy: &mut Copy, rows: &mut impl Iterator<Item = T>, mut write: impl FnMut(&mut Copy, T)) -> bool {
    for _ in 0..4096 {
        let Some(row) = rows.next() else { return false };
        write(copy, row);
    }
    true
}

async fn write_scanners(tx: &mut PgConnection) -> Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for s in SCANNERS {
        let id = sqlx::query_scalar!(
            "insert into scanner (manufacturer, model, field_strength) values ($1, $2, $3)
             on conflict on constraint scanner_identity_key do update set model = excluded.model returning scanner_id",
            s.manufacturer,
            s.model,
            s.field_strength
        )
        .fetch_one(&mut *tx)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// A generated series, for annotations.
struct SeriesRow {
    subject: Uuid,
    study: Uuid,
    series: Uuid,
}

/// A study to write: its subject, cohort, scanner and date, and each series' instance count.
struct PlannedStudy {
    id: Uuid,
    subject: usize,
    cohort: Uuid,
    scanner: usize,
    day: i64,
    body_part: &'static str,
    series: Vec<(Uuid, i64)>,
}

/// The neuro cohort's studies: none to three per subject on the site's own scanners.
fn plan_neuro(rng: &mut Rng, people: &[Subject], cohort: Uuid) -> Vec<PlannedStudy> {
    let mut plan = Vec::new();
    for (subject, s) in people.iter().enumerate() {
        let profile = &SITES[s.site];
        let count = *rng.pick(&[(0, 0.10), (1, 0.55), (2, 0.25), (3, 0.10)]);
        for _ in 0..count {
            let scanner = *rng.pick(profile.scanners);
            let day = rng.between(0, 13 * 365);
            let id = rng.uuid();
            let (parts, body_part): (u32, &str) = if SCANNERS[scanner].modality == "MR" {
                (3, *rng.pick(&[("HEAD", 0.7), ("KNEE", 0.15), ("SPINE", 0.15)]))
            } else {
                (2, *rng.pick(&[("CHEST", 0.6), ("ABDOMEN", 0.25), ("HEAD", 0.15)]))
            };
            let series = (0..parts).map(|_| (rng.uuid(), rng.between(1, 5))).collect();
            plan.push(PlannedStudy { id, subject, cohort, scanner, day, body_part, series });
        }
    }
    plan
}

/// The open challenge cohort: about a third of the subjects also consented to
/// open release and have one chest radiograph (one or two views) on their
/// site's X-ray system. Drawn from its own stream, so the neuro cohort stays
/// what the seed made it.
fn plan_chest_xray(seed: u64, people: &[Subject], cohort: Uuid) -> Vec<PlannedStudy> {
    let mut rng = Rng::new(seed ^ 0x0c4e_5700_0000_0000);
    let mut plan = Vec::new();
    for (subject, s) in people.iter().enumerate() {
        if !rng.chance(0.35) {
            continue;
        }
        let id = rng.uuid();
        let day = rng.between(0, 13 * 365);
        let views = *rng.pick(&[(1, 0.4), (2, 0.6)]);
        let series = (0..views).map(|_| (rng.uuid(), 1)).collect();
        plan.push(PlannedStudy { id, subject, cohort, scanner: XRAY[s.site], day, body_part: "CHEST", series });
    }
    plan
}

/// Files per ingest batch: each batch is generated while the one before is ingested.
const BATCH: usize = 256;

/// Slices of an ingested series at most: enough to scroll through, few enough
/// that `serve --demo` is ready in seconds. (The catalog-only mode keeps the
/// plan's one to five.)
const MAX_SLICES: i64 = 2;

/// The size of the synthetic images and series an ingested registry gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Rows and columns of every image (default: 64 for MR and CT, 128 for radiographs).
    pub matrix: Option<u16>,
    /// Slices of a series at most (the plan draws one to five).
    pub max_slices: i64,
}

impl Default for Shape {
    fn default() -> Self {
        Self { matrix: None, max_slices: MAX_SLICES }
    }
}

/// Sends the planned studies through `ingest` as synthetic DICOM files, one
/// upload session per cohort and site as each site's uploader would, and
/// returns the catalog's series of the plan's first `neuro` studies (those of
/// the neuro cohort), in plan order.
async fn ingest_imaging(
    ingest: &Arc<Ingestor>,
    seed: u64,
    shape: Shape,
    plan: &[PlannedStudy],
    neuro: usize,
    people: &[Subject],
    out: &mut Generated,
) -> Result<Vec<SeriesRow>> {
    let origin = serde_json::json!({ "via": "demo" });
    for (cohort, first, studies) in
        [("demo-neuro-mri", 0, &plan[..neuro]), ("demo-chest-xray-challenge", neuro, &plan[neuro..])]
    {
        for (site, profile) in SITES.iter().enumerate() {
            let files: Vec<dicom::Instance> = (first..)
                .zip(studies)
                .filter(|(_, study)| people[study.subject].site == site)
                .flat_map(|(index, study)| instances_of(seed, shape, index, study, &people[study.subject]))
                .collect();
            if files.is_empty() {
                continue;
            }
            let session = ingest
                .open_session("system:demo", cohort, profile.code, &origin)
                .await?
                .context("the demo cohorts and sites are missing: run `custodian demo` first")?;
            let target = session.target();
            let mut files = files.into_iter();
            let encode = |batch: Vec<dicom::Instance>| {
                tokio::task::spawn_blocking(move || {
                    batch.iter().map(|f| Ok(Received::File(f.to_part10().into()))).collect::<Vec<_>>()
                })
            };
            let mut next = encode(files.by_ref().take(BATCH).collect());
            loop {
                let encoded = next.await?;
                if encoded.is_empty() {
                    break;
                }
                next = encode(files.by_ref().take(BATCH).collect());
                let reports = ingest.ingest_batch("system:demo", &target, futures::stream::iter(encoded)).await?;
                for report in reports {
                    if !matches!(report.outcome, Outcome::Stored | Outcome::Duplicate) {
                        bail!(
                            "ingest did not accept a synthetic file ({}): {}",
                            report.code.unwrap_or_default(),
                            report.message.unwrap_or_default()
                        );
                    }
                    out.instances += 1;
                }
            }
            ingest
                .close_session("system:demo", session.id, true, &origin)
                .await?
                .map_err(|state| anyhow::anyhow!("the demo's upload session was {state} before its commit"))?;
        }
    }
    out.studies += plan.len() as u64;
    out.series += plan.iter().map(|s| s.series.len() as u64).sum::<u64>();

    // The registry's UIDs of every series, in plan order.
    let uids: Vec<String> = (0..)
        .zip(plan)
        .flat_map(|(index, study)| {
            (1..=study.series.len()).map(move |number| ingest.key.uid(&series_uid(seed, index, number)))
        })
        .collect();
    let stored: std::collections::HashMap<String, (Uuid, Uuid, Uuid)> = sqlx::query!(
        "select se.series_uid, se.series_id, st.study_id, st.subject_id
         from series se join study st using (study_id) where se.series_uid = any($1)",
        &uids
    )
    .fetch_all(&ingest.db)
    .await?
    .into_iter()
    .map(|r| (r.series_uid, (r.subject_id, r.study_id, r.series_id)))
    .collect();
    uids.iter()
        .map(|uid| {
            let (subject, study, series) = *stored.get(uid).context("an ingested series is not in the catalog")?;
            Ok(SeriesRow { subject, study, series })
        })
        .collect()
}

/// Who subject `index` is at their hospital.
fn patient_of(seed: u64, index: usize, subject: &Subject) -> Patient {
    let number = u32::try_from(index).unwrap_or(u32::MAX);
    Patient::new(seed, number, SITES[subject.site].code, subject.birth_year, subject.female)
}

/// What the files of the registry [`generate`] makes from these arguments
/// give away about each patient: who they are, and the original dates of
/// their studies. For tests proving that none of it survives ingest.
pub fn planted(key: &RegistryKey, max_shift_days: u32, subjects: u32, seed: u64) -> Vec<(Patient, Vec<NaiveDate>)> {
    let mut rng = Rng::new(seed);
    let (people, _) = draw_subjects(&mut rng, key, max_shift_days, subjects);
    let mut plan = plan_neuro(&mut rng, &people, Uuid::nil());
    plan.extend(plan_chest_xray(seed, &people, Uuid::nil()));
    let mut out: Vec<(Patient, Vec<NaiveDate>)> =
        people.iter().enumerate().map(|(index, s)| (patient_of(seed, index, s), Vec::new())).collect();
    for study in &plan {
        out[study.subject].1.push(date(study.day));
    }
    out
}

/// What every file of a site carries about where it was made: institution
/// and station names, the physicians' names; none of it survives ingest.
pub fn planted_equipment() -> Vec<&'static str> {
    SITES
        .iter()
        .map(|s| s.institution)
        .chain(SCANNERS.iter().map(|s| s.station))
        .chain([dicom::REFERRING_PHYSICIAN, dicom::OPERATOR])
        .collect()
}

/// The original Series Instance UID of series `number` of study `index` of the plan.
fn series_uid(seed: u64, index: usize, number: usize) -> String {
    format!("{}.{seed}.{}.{number}", dicom::UID_ROOT, index + 1)
}

/// The files of one planned study, as its hospital would send them.
fn instances_of(
    seed: u64,
    shape: Shape,
    index: usize,
    study: &PlannedStudy,
    subject: &Subject,
) -> Vec<dicom::Instance> {
    let scanner = &SCANNERS[study.scanner];
    let site = &SITES[subject.site];
    let patient = patient_of(seed, study.subject, subject);
    let on = date(study.day);
    let equipment = Equipment {
        manufacturer: scanner.manufacturer,
        model: scanner.model,
        field_strength: scanner.field_strength,
        modality: scanner.modality,
        institution: site.institution,
        station: scanner.station,
    };
    let accession = format!("{}{}{:06}", site.code.to_uppercase(), on.format("%y"), index + 1);
    let mut files = Vec::new();
    for (number, (series, count)) in (1..).zip(&study.series) {
        let series_uid = series_uid(seed, index, number);
        let slices = i32::try_from((*count).min(shape.max_slices)).unwrap_or(1);
        for k in 1..=slices {
            files.push(dicom::Instance {
                patient: patient.clone(),
                equipment,
                body_part: study.body_part,
                study_uid: format!("{}.{seed}.{}", dicom::UID_ROOT, index + 1),
                sop_uid: format!("{series_uid}.{k}"),
                series_uid: series_uid.clone(),
                date: on,
                accession: accession.clone(),
                series_number: i32::try_from(number).unwrap_or(i32::MAX),
                instance_number: k,
                slices,
                matrix: shape.matrix,
                seed: series.as_u64_pair().0 ^ u64::try_from(k).unwrap_or(0),
            });
        }
    }
    files
}

/// The Storage SOP Class of a synthetic instance of `modality`.
fn sop_class(modality: &str) -> &'static str {
    match modality {
        "MR" => "1.2.840.10008.5.1.4.1.1.4",
        "CT" => "1.2.840.10008.5.1.4.1.1.2",
        _ => "1.2.840.10008.5.1.4.1.1.1.1", // Digital X-Ray Image Storage - For Presentation
    }
}

async fn write_imaging(
    tx: &mut PgConnection,
    plan: &[PlannedStudy],
    people: &[Subject],
    sites: &[Uuid],
    scanners: &[Uuid],
    out: &mut Generated,
) -> Result<Vec<SeriesRow>> {
    let mut studies = String::new();
    let mut series_rows = Vec::new();
    let mut series_text = String::new();
    let mut instances: Vec<(Uuid, u64, i64, &str)> = Vec::new();
    let mut uid = 0_u64;
    for study in plan {
        let s = &people[study.subject];
        let scanner = &SCANNERS[study.scanner];
        let on = date(study.day) + Duration::days(s.shift);
        let age = f64::from(2010 - s.birth_year) + f64::from(i32::try_from(study.day).unwrap_or(0)) / 365.25;
        uid += 1;
        let _ = writeln!(
            studies,
            "{}\t2.25.{}\t{}\t{}\t{}\t{on}\t{age:.2}",
            study.id,
            1_000_000_000 + uid,
            s.id,
            study.cohort,
            sites[s.site]
        );
        out.studies += 1;
        for (number, (series, count)) in (1..).zip(&study.series) {
            uid += 1;
            let _ = writeln!(
                series_text,
                "{series}\t2.25.{}\t{}\t{}\t{}\t{}\t{on}\t{number}",
                1_000_000_000 + uid,
                study.id,
                scanners[study.scanner],
                scanner.modality,
                study.body_part
            );
            series_rows.push(SeriesRow { subject: s.id, study: study.id, series: *series });
            instances.push((*series, uid, *count, sop_class(scanner.modality)));
            out.series += 1;
        }
    }
    copy_text(
        tx,
        "copy study (study_id, study_uid, subject_id, cohort_id, site_id, study_date, age_years) from stdin",
        &studies,
    )
    .await?;
    copy_text(tx, "copy series (series_id, series_uid, study_id, scanner_id, modality, body_part, series_date, series_number) from stdin", &series_text).await?;
    let mut rows =
        instances.iter().flat_map(|(series, uid, n, class)| (1..=*n).map(move |k| (*series, *uid, k, *class)));
    out.instances += copy_rows(
        tx,
        "copy instance (sop_uid, series_id, sop_class_uid, transfer_syntax, instance_number, rows, columns, frames,
                        object_key, size_bytes, sha256, status, published_at) from stdin",
        |c| {
            fill(c, &mut rows, |c, (series, uid, k, class)| {
                c.line(format_args!(
                    "2.25.{uid}{k:04}\t{series}\t{class}\t1.2.840.10008.1.2.1\t{k}\t256\t256\t1\tsynthetic/{series}/{k}.dcm\t131072\t\\\\x{:064x}\tpublished\t2024-01-01 00:00:00+00",
                    u128::from(uid) * 10_000 + u128::try_from(k).unwrap_or(0)
                ));
            })
        },
    )
    .await?;
    Ok(series_rows)
}

/// Streams `text`, already in COPY text format, as it is.
async fn copy_text(tx: &mut PgConnection, statement: &str, text: &str) -> Result<()> {
    let mut copy_in = tx.copy_in_raw(statement).await?;
    // COPY data may be split anywhere across messages.
    for chunk in text.as_bytes().chunks(1 << 20) {
        if let Err(e) = copy_in.send(chunk).await {
            let _ = copy_in.abort("generation failed").await;
            return Err(e.into());
        }
    }
    copy_in.finish().await?;
    Ok(())
}

async fn write_clinical(
    tx: &mut PgConnection,
    rng: &mut Rng,
    people: &[Subject],
    import: Uuid,
    out: &mut Generated,
) -> Result<()> {
    // Labs: one to three measurements of each of LABS, so about 20 values per subject.
    let mut labs = String::new();
    let mut diagnoses = String::new();
    for s in people {
        let age = 2022 - s.birth_year;
        for (field, mean, sd, diabetic) in LABS {
            let mean = if s.diabetes { mean + diabetic } else { *mean };
            for _ in 0..rng.between(1, 3) {
                let value = rng.normal(mean, *sd).max(mean / 4.0).max(0.05);
                let at = date(rng.between(0, 13 * 365)) + Duration::days(s.shift);
                let _ = writeln!(labs, "{}\t{field}\t{value:.3}\t{at} 08:00:00\t{import}", s.id);
                out.observations += 1;
            }
        }
        let old = f64::from((age - 40).max(0)) / 50.0;
        let mut diagnose = |code: &str, p: f64, rng: &mut Rng| {
            if rng.chance(p) {
                let on = date(rng.between(0, 13 * 365)) + Duration::days(s.shift);
                let _ = writeln!(diagnoses, "{}\tICD-10\t{code}\t{on}\t{import}", s.id);
                out.diagnoses += 1;
            }
        };
        if s.diabetes {
            diagnose("E11.9", 1.0, rng);
        }
        diagnose("I10", 0.15 + 0.35 * old, rng);
        diagnose("I21.4", 0.01 + 0.05 * old, rng);
        diagnose("C34.1", 0.005 + 0.02 * old, rng);
        diagnose("G30.9", 0.06 * old * old, rng);
        diagnose("J44.9", 0.02 + 0.04 * old, rng);
    }
    copy_text(tx, "copy observation (subject_id, field_id, value, observed_at, data_import_id) from stdin", &labs)
        .await?;
    copy_text(tx, "copy diagnosis (subject_id, system, code, diagnosed_on, data_import_id) from stdin", &diagnoses)
        .await?;

    let mut genotypes = String::new();
    for (rsid, chrom, pos, reference, alt, gene, frequency) in VARIANTS {
        let id = sqlx::query_scalar!(
            "insert into variant (chrom, pos, ref, alt, rsid, gene) values ($1, $2, $3, $4, $5, $6)
             on conflict (assembly, chrom, pos, ref, alt) do update set rsid = excluded.rsid returning variant_id",
            chrom,
            pos,
            reference,
            alt,
            rsid,
            gene
        )
        .fetch_one(&mut *tx)
        .await?;
        for s in people {
            // The diabetes risk allele of TCF7L2 is commoner among people with diabetes.
            let p = if *rsid == "rs7903146" && s.diabetes { frequency + 0.12 } else { *frequency };
            if rng.chance(0.02) {
                let _ = writeln!(genotypes, "{id}\t{}\t\\N\t{import}", s.id);
            } else {
                let count = u8::from(rng.chance(p)) + u8::from(rng.chance(p));
                let _ = writeln!(genotypes, "{id}\t{}\t{count}\t{import}", s.id);
            }
            out.genotypes += 1;
        }
    }
    copy_text(tx, "copy genotype (variant_id, subject_id, alt_count, data_import_id) from stdin", &genotypes).await?;
    Ok(())
}

/// One label per chest radiograph study, as a reporting radiologist gives
/// it: ground-glass opacity (about a third) or normal. A separate stream of
/// the seed, so the rest of the registry does not change with it.
async fn write_chest_labels(tx: &mut PgConnection, seed: u64, series: &[SeriesRow], out: &mut Generated) -> Result<()> {
    let mut rng = Rng::new(seed ^ 0x1abe_1500_0000_0000);
    let mut text = String::new();
    let mut studies = std::collections::BTreeSet::new();
    for s in series.iter().filter(|s| studies.insert(s.study)) {
        let (code, meaning) =
            if rng.chance(0.35) { ("RID5352", "ground-glass opacity") } else { ("RID39148", "normal") };
        let _ = writeln!(
            text,
            "{}\t{}\t{}\tstudy\thigh\tlabel\tjson\tRadLex\t{code}\t{meaning}\tradiologist\tmanual\tPACS report\tsystem:demo",
            rng.uuid(),
            s.subject,
            s.study,
        );
        out.annotations += 1;
    }
    copy_text(
        tx,
        "copy annotation (annotation_id, subject_id, study_id, target, level, kind, source, coding_system, code,
                          meaning, annotator_role, method, tool, created_by) from stdin",
        &text,
    )
    .await?;
    Ok(())
}

async fn write_annotations(
    tx: &mut PgConnection,
    rng: &mut Rng,
    series: &[SeriesRow],
    out: &mut Generated,
) -> Result<()> {
    const LABELS: &[((&str, &str), f64)] = &[
        (("RID3874", "white matter lesion"), 0.3),
        (("RID5352", "ground-glass opacity"), 0.2),
        (("RID3875", "infarct"), 0.15),
        (("RID39148", "normal"), 0.35),
    ];
    const ROLES: &[((&str, &str, &str), f64)] = &[
        (("radiologist", "manual", "PACS report"), 0.5),
        (("resident", "manual", "3D Slicer 5.6"), 0.2),
        (("algorithm", "automatic", "nnU-Net v2"), 0.3),
    ];
    let mut text = String::new();
    for s in series {
        if !rng.chance(0.12) {
            continue;
        }
        let (code, meaning) = *rng.pick(LABELS);
        let (role, method, tool) = *rng.pick(ROLES);
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\tseries\thigh\tlabel\tjson\tRadLex\t{code}\t{meaning}\t{role}\t{method}\t{tool}\tsystem:demo",
            rng.uuid(),
            s.subject,
            s.study,
            s.series
        );
        out.annotations += 1;
    }
    copy_text(
        tx,
        "copy annotation (annotation_id, subject_id, study_id, series_id, target, level, kind, source, coding_system, code,
                          meaning, annotator_role, method, tool, created_by) from stdin",
        &text,
    )
    .await?;
    Ok(())
}
