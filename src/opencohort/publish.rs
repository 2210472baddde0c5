//! Publishing an open cohort: each publication freezes the cohort's split
//! into a new immutable version, built by the release job like a project's
//! release, in the cohort's own pseudonyms, with one folder per split.
//!
//! - Publication repeats every check of [`super::curate::readiness`] in its
//!   own transaction and refuses with all the problems, each subject named.
//! - The version's subjects and their splits are frozen in `extract_subject`
//!   at that moment; the build reads them, never the live split.
//! - The cohort's key (random, sealed under the registry key, bound to the
//!   cohort) makes its open IDs: they link neither to the registry's
//!   pseudonyms nor to any project's.
//! - The test split carries no annotation of the task's kind (its hidden
//!   labels), unless the version was published after the reveal date with
//!   the labels revealed.
//! - A ready version is public: anyone downloads it through the same routes
//!   as a project's release (files, manifest, archive, DRS), signed in or
//!   not, unless the cohort has a click-through agreement, which a signed-in
//!   user must have accepted first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::curate::{self, Task};
use super::splits::{Split, SplitReport};
use crate::access::grants::{self, Conditions, Scope};
use crate::audit::{self, NewEvent};
use crate::auth::Principal;
use crate::deid::RegistryKey;
use crate::error::{ApiError, Refusal};
use crate::release::build::{self, Context, Extract, Part, Source};
use crate::release::extracts::{self, Extract as Release};
use crate::release::manifest;
use crate::release::tables::TableFile;

/// How to publish.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Include the test split's labels (only once the cohort's reveal date has passed).
    #[serde(default)]
    pub reveal_labels: bool,
}

/// The authenticated data binding an open cohort's sealed key to it.
pub(super) fn key_owner(cohort_id: Uuid) -> Vec<u8> {
    let mut owner = b"open-cohort:".to_vec();
    owner.extend_from_slice(cohort_id.as_bytes());
    owner
}

/// Publishes the open cohort `slug` as its next version (organizers,
/// admins): every readiness check again, then the version queued for its
/// build with its subjects and splits frozen, in one transaction.
pub async fn publish(
    tx: &mut PgConnection,
    key: &RegistryKey,
    principal: &Principal,
    slug: &str,
    publication: &PublishRequest,
) -> Result<Uuid, ApiError> {
    let readiness = curate::readiness(tx, principal, slug).await?;
    if !readiness.ready {
        let n = readiness.problems.len();
        return Err(ApiError::Invalid {
            code: "not-publishable",
            message: format!(
                "open cohort `{slug}` cannot be published: {n} problem{}, each named",
                if n == 1 { "" } else { "s" }
            ),
            problems: readiness.problems,
        });
    }
    let cohort = sqlx::query!(
        "select o.cohort_id, o.imaging, o.reveal_at from open_cohort o join cohort c using (cohort_id) where c.slug = $1",
        slug
    )
    .fetch_one(&mut *tx)
    .await?;
    if publication.reveal_labels && cohort.reveal_at.is_none_or(|at| at > Utc::now()) {
        return Err(ApiError::Conflict(match cohort.reveal_at {
            Some(at) => format!("the test labels of `{slug}` are revealed from {at}, not before"),
            None => format!("open cohort `{slug}` has no reveal date: its test labels stay hidden"),
        }));
    }
    let stored = grants::new_sealed_key(key, &key_owner(cohort.cohort_id))?;
    sqlx::query!(
        "insert into open_cohort_key (cohort_id, sealed) values ($1, $2) on conflict do nothing",
        cohort.cohort_id,
        stored
    )
    .execute(&mut *tx)
    .await?;
    let inserted = sqlx::query!(
        "insert into extract (open_cohort_id, version, imaging, labels_revealed, created_by)
         values ($1, (select coalesce(max(version), 0) + 1 from extract where open_cohort_id = $1), $2, $3, $4)
         returning extract_id, version",
        cohort.cohort_id,
        cohort.imaging,
        publication.reveal_labels,
        principal.username
    )
    .fetch_one(&mut *tx)
    .await?;
    let (extract_id, version) = (inserted.extract_id, inserted.version);
    let frozen = sqlx::query!(
        "insert into extract_subject (extract_id, subject_id, split)
         select $1, o.subject_id, o.split from open_cohort_split o join subject s using (subject_id)
         where o.cohort_id = $2 and s.withdrawn_at is null",
        extract_id,
        cohort.cohort_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    crate::jobs::enqueue(&mut *tx, &build::job(extract_id)).await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "open_cohort.publish").target(format!("cohort:{slug}")).details(json!({
            "extract": extract_id, "version": version, "subjects": frozen,
            "labels_revealed": publication.reveal_labels,
        })),
    )
    .await?;
    Ok(extract_id)
}

/// What the build of an open cohort's version releases: the frozen subjects
/// by split, the cohort's settings as a scope, its documents.
pub async fn source(
    ctx: &Context,
    extract: &Extract,
    extract_id: Uuid,
    cohort_id: Uuid,
) -> anyhow::Result<Result<Source, String>> {
    let db = &ctx.db;
    let cohort = sqlx::query!(
        "select c.slug, c.title, c.description, c.license, c.citation, o.task, o.fields, o.modalities,
                o.annotation_kinds, o.imaging, o.split_report, o.agreement, k.sealed
         from open_cohort o join cohort c using (cohort_id) join open_cohort_key k using (cohort_id)
         where o.cohort_id = $1",
        cohort_id
    )
    .fetch_one(db)
    .await?;
    let key = grants::open_sealed_key(&ctx.key, &key_owner(cohort_id), &cohort.sealed)?;
    let task: Option<Task> = cohort.task.map(serde_json::from_value).transpose()?;
    let frozen = sqlx::query!(
        r#"select s.pseudonym, es.split as "split!", s.withdrawn_at is not null as "withdrawn!",
                  s.withdrawal_scope is not null as "no_imaging!"
           from extract_subject es join subject s using (subject_id)
           where es.extract_id = $1 order by s.pseudonym"#,
        extract_id
    )
    .fetch_all(db)
    .await?;
    let mut by_split: BTreeMap<Split, BTreeMap<String, bool>> = BTreeMap::new();
    for row in frozen.into_iter().filter(|r| !r.withdrawn) {
        let Some(split) = Split::parse(&row.split) else { anyhow::bail!("a frozen subject has no known split") };
        by_split.entry(split).or_default().insert(row.pseudonym, !row.no_imaging);
    }
    let hidden: Vec<String> = match (&task, extract.labels_revealed) {
        (Some(Task::Classification { .. }), false) => vec!["label".into()],
        (Some(Task::Segmentation { .. }), false) => vec!["segmentation".into()],
        _ => Vec::new(),
    };
    let parts = by_split
        .iter()
        .map(|(split, subjects)| Part {
            folder: format!("{}/", split.as_str()),
            subjects: subjects.clone(),
            withheld_kinds: if *split == Split::Test { hidden.clone() } else { Vec::new() },
        })
        .collect();
    let scope = Scope {
        cohorts: vec![cohort.slug.clone()],
        fields: cohort.fields,
        categories: Vec::new(),
        modalities: cohort.modalities,
        annotation_kinds: cohort.annotation_kinds,
        imaging: cohort.imaging,
    };
    let report: Option<SplitReport> = cohort.split_report.map(serde_json::from_value).transpose()?;
    let sizes: BTreeMap<&str, usize> = by_split.iter().map(|(s, subjects)| (s.as_str(), subjects.len())).collect();
    let about = About {
        slug: &cohort.slug,
        title: &cohort.title,
        description: &cohort.description,
        license: cohort.license.as_deref().unwrap_or_default(),
        citation: cohort.citation.as_deref().unwrap_or_default(),
        version: extract.version,
        published: extract.created_at,
        task: task.as_ref(),
        hidden: !hidden.is_empty(),
        submissions: None,
    };
    let submissions = match (&task, hidden.is_empty()) {
        (Some(task), false) => {
            let what = (cohort_id, cohort.slug.as_str());
            Some(super::challenge::instructions(db, what, extract_id, extract.imaging, task).await?)
        }
        _ => None,
    };
    let about = About { submissions: submissions.as_deref(), ..about };
    let documents = documents(ctx, &about, &sizes, report.as_ref(), cohort.agreement.as_deref())?;
    Ok(Ok(Source {
        owner: cohort_id,
        audit_target: format!("cohort:{}", cohort.slug),
        key,
        scope,
        conditions: Conditions::default(),
        parts,
        documents,
        grant_id: None,
        open_cohort: Some(cohort.slug),
    }))
}

/// What a version's documents say about it.
struct About<'a> {
    slug: &'a str,
    title: &'a str,
    description: &'a str,
    license: &'a str,
    citation: &'a str,
    version: i32,
    published: DateTime<Utc>,
    task: Option<&'a Task>,
    hidden: bool,
    /// How teams submit, when the test labels are hidden.
    submissions: Option<&'a str>,
}

/// DataCite-style metadata of a version (DataCite Metadata Schema 4 property names).
fn datacite(about: &About<'_>, sizes: &BTreeMap<&str, usize>) -> serde_json::Value {
    json!({
        "identifiers": [{"identifierType": "custodian", "identifier": format!("{}/v{}", about.slug, about.version)}],
        "titles": [{"title": about.title}],
        "descriptions": [{"description": about.description, "descriptionType": "Abstract"}],
        "publisher": "Custodian registry",
        "publicationYear": about.published.format("%Y").to_string(),
        "version": about.version.to_string(),
        "types": {"resourceTypeGeneral": "Dataset", "resourceType": "Open imaging cohort"},
        "rightsList": [{"rightsIdentifier": about.license, "rightsIdentifierScheme": "SPDX",
                        "rightsUri": format!("https://spdx.org/licenses/{}.html", about.license)}],
        "sizes": sizes.iter().map(|(split, n)| format!("{split}: {n} subjects")).collect::<Vec<_>>(),
        "dates": [{"date": about.published.to_rfc3339(), "dateType": "Issued"}],
        "citation": about.citation,
    })
}

/// The version's own documents: README, DataCite metadata, the split (sizes,
/// composition, held-out sites; never the excluded subjects' registry
/// pseudonyms), the agreement, the conformance statement.
fn documents(
    ctx: &Context,
    about: &About<'_>,
    sizes: &BTreeMap<&str, usize>,
    report: Option<&SplitReport>,
    agreement: Option<&str>,
) -> anyhow::Result<Vec<TableFile>> {
    let file = |path: &str, bytes: Vec<u8>| TableFile {
        path: path.to_owned(),
        media_type: manifest::media_type(path),
        bytes: bytes.into(),
    };
    let split = report.map(|r| {
        json!({
            "method": r.method, "seed": r.seed, "stratified_by": r.stratified_by, "held_out_sites": r.held_out_sites,
            "splits": r.splits, "excluded_subjects": r.excluded.len(),
        })
    });
    let task = match about.task {
        Some(Task::Classification { system, codes }) => format!(
            "Classification: each subject's `label` annotation, one of {} ({system}).",
            codes.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        ),
        Some(Task::Segmentation { system, code }) => {
            format!("Segmentation: the `segmentation` annotations of `{code}` ({system}) of each series.")
        }
        None => "None set.".to_owned(),
    };
    let readme = format!(
        "# {title}, version {version}\n\n{description}\n\n\
         Open cohort `{slug}`, version {version}, published {published}. Licence: {license} \
         (<https://spdx.org/licenses/{license}.html>).\n\n\
         ## Contents\n\n\
         One folder per split ({splits}): `dicom/` (images in this cohort's own pseudonyms and UIDs, which link \
         to no other release), `tables/` (CSV and Parquet with their dictionary), `annotations/` (with their \
         provenance). `split.json` describes how subjects were split; `datacite.json` is the citable metadata; \
         `manifest.json` lists every file with its SHA-256, signed (`manifest.json.sig`) with the registry's key \
         published at `/.well-known/custodian/release-keys`.\n\n\
         ## Task\n\n{task}\n\n{hidden}\
         ## Citation\n\n{citation}\n",
        title = about.title,
        version = about.version,
        description = about.description,
        slug = about.slug,
        published = about.published.format("%Y-%m-%d"),
        license = about.license,
        splits = sizes.iter().map(|(s, n)| format!("`{s}/` {n} subjects")).collect::<Vec<_>>().join(", "),
        hidden = match (about.hidden, about.submissions) {
            (true, Some(how)) => format!(
                "The test split's labels are withheld: submissions are scored against them by the registry.\n\n\
                 ## Submissions\n\n{how}\n\n"
            ),
            (true, None) => {
                "The test split's labels are withheld: submissions are scored against them by the registry.\n\n".into()
            }
            (false, _) => String::new(),
        },
        citation = about.citation,
    );
    let mut files = vec![
        file("README.md", readme.into_bytes()),
        file("datacite.json", serde_json::to_vec_pretty(&datacite(about, sizes))?),
        file("split.json", serde_json::to_vec_pretty(&split)?),
        file("deid-conformance.json", serde_json::to_vec_pretty(&crate::http::deid::statement(&ctx.config))?),
    ];
    if let Some(agreement) = agreement {
        files.push(file("AGREEMENT.md", format!("{agreement}\n").into_bytes()));
    }
    Ok(files)
}

/// Whether `caller` (none: anonymous) may download the versions of open
/// cohort `cohort_id`: always, unless it has a click-through agreement that
/// the caller, signed in, has not accepted in its current wording.
pub async fn check_download(db: &PgPool, cohort_id: Uuid, caller: Option<&str>) -> Result<(), ApiError> {
    let row = sqlx::query!(
        r#"select c.slug, o.agreement,
                  exists (select 1 from open_cohort_acceptance a
                          where a.cohort_id = o.cohort_id and a.username = $2
                            and a.agreement_sha256 = encode(sha256(convert_to(coalesce(o.agreement, ''), 'UTF8')), 'hex'))
                  as "accepted!"
           from open_cohort o join cohort c using (cohort_id) where o.cohort_id = $1"#,
        cohort_id,
        caller.unwrap_or_default()
    )
    .fetch_one(db)
    .await?;
    if row.agreement.is_none() || (caller.is_some() && row.accepted) {
        return Ok(());
    }
    Err(ApiError::Refused {
        code: Refusal::AgreementRequired,
        message: format!(
            "open cohort `{}` asks downloaders to accept its agreement: sign in and `POST /open-cohorts/{}/agreement`",
            row.slug, row.slug
        ),
    })
}

/// Records that `principal` accepts the current agreement of open cohort `slug`.
pub async fn accept_agreement(tx: &mut PgConnection, principal: &Principal, slug: &str) -> Result<String, ApiError> {
    let row = sqlx::query!(
        r#"select o.cohort_id, o.agreement as "agreement!"
           from open_cohort o join cohort c using (cohort_id) where c.slug = $1 and o.agreement is not null"#,
        slug
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("open cohort with an agreement"))?;
    let sha256 = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, row.agreement.as_bytes()));
    sqlx::query!(
        "insert into open_cohort_acceptance (cohort_id, username, agreement_sha256) values ($1, $2, $3)
         on conflict do nothing",
        row.cohort_id,
        principal.username,
        sha256
    )
    .execute(&mut *tx)
    .await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "open_cohort.agreement_accepted")
            .target(format!("cohort:{slug}"))
            .details(json!({ "agreement_sha256": sha256 })),
    )
    .await?;
    Ok(sha256)
}

/// A published open cohort, as anyone sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Landing {
    pub slug: String,
    pub title: String,
    pub description: String,
    /// SPDX identifier.
    pub license: Option<String>,
    pub citation: Option<String>,
    /// The click-through agreement downloaders accept, when there is one.
    pub agreement: Option<String>,
    pub task: Option<Task>,
    /// Submissions per team (or lone user) per UTC day.
    pub daily_submissions: i32,
    /// No submission is accepted from this time on.
    pub closes_at: Option<DateTime<Utc>>,
    /// Who sees the leaderboard while the challenge runs.
    pub leaderboard: super::challenge::LeaderboardVisibility,
    /// Newest first; only published (ready or superseded) versions.
    pub versions: Vec<PublishedVersion>,
}

/// One published version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PublishedVersion {
    pub version: i32,
    /// The release to download (`/extracts/{id}/…`, DRS, `custodian fetch`).
    pub extract_id: Uuid,
    pub state: String,
    pub published_at: Option<DateTime<Utc>>,
    pub labels_revealed: bool,
    /// Subjects per split.
    pub splits: BTreeMap<String, i64>,
    pub files: Option<i64>,
    pub bytes: Option<i64>,
    /// Subjects per split by site, scanner, sex and age band, a cell below the
    /// cohort's suppression threshold shown without its count.
    pub breakdowns: Vec<VersionBreakdownCell>,
}

/// One cell of a version's breakdown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionBreakdownCell {
    /// `site`, `scanner`, `sex` or `age_band`.
    pub by: String,
    /// The value (`null`: not recorded).
    pub value: Option<String>,
    pub split: String,
    /// Subjects; `null` when fewer than the cohort's suppression threshold.
    pub subjects: Option<i64>,
    pub suppressed: bool,
}

/// A version's breakdowns: subjects per split by site (of the subject), scanner
/// (of any of its series), sex and age band (at its first study, ten years
/// wide), small cells suppressed as discovery suppresses them.
async fn breakdowns(db: &PgPool, extract_id: Uuid, threshold: i32) -> Result<Vec<VersionBreakdownCell>, ApiError> {
    let rows = sqlx::query!(
        r#"with members as (
               select es.split, s.subject_id, s.sex, s.site_id,
                      (select min(st.age_years) from study st where st.subject_id = s.subject_id) as age
               from extract_subject es join subject s using (subject_id)
               where es.extract_id = $1 and s.withdrawal_scope is distinct from 'full')
           select 'site' as "by!", si.code as value, m.split as "split!", count(*) as "n!"
           from members m join site si on si.site_id = m.site_id group by 2, 3
           union all
           select 'scanner', nullif(trim(sc.manufacturer || ' ' || sc.model), ''), m.split, count(distinct m.subject_id)
           from members m join study st on st.subject_id = m.subject_id join series se on se.study_id = st.study_id
           left join scanner sc on sc.scanner_id = se.scanner_id group by 2, 3
           union all
           select 'sex', m.sex, m.split, count(*) from members m group by 2, 3
           union all
           select 'age_band', (floor(m.age / 10) * 10)::int || '-' || ((floor(m.age / 10) * 10)::int + 9), m.split, count(*)
           from members m group by 2, 3
           order by 1, 3, 2"#,
        extract_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let suppressed = r.n < i64::from(threshold);
            VersionBreakdownCell {
                by: r.by,
                value: r.value,
                split: r.split,
                subjects: if suppressed { None } else { Some(r.n) },
                suppressed,
            }
        })
        .collect())
}

/// Every published open cohort, by slug.
pub async fn published(db: &PgPool) -> Result<Vec<Landing>, ApiError> {
    let slugs = sqlx::query_scalar!(
        "select distinct c.slug from cohort c join extract e on e.open_cohort_id = c.cohort_id
         where e.state in ('ready', 'superseded') order by c.slug"
    )
    .fetch_all(db)
    .await?;
    let mut out = Vec::with_capacity(slugs.len());
    for slug in slugs {
        out.push(landing(db, &slug).await?);
    }
    Ok(out)
}

/// The landing document of open cohort `slug`; not found until a version is published.
pub async fn landing(db: &PgPool, slug: &str) -> Result<Landing, ApiError> {
    let cohort = sqlx::query!(
        "select c.cohort_id, c.slug, c.title, c.description, c.license, c.citation, o.agreement, o.task,
                c.suppression_threshold, o.daily_submissions, o.closes_at, o.leaderboard
         from cohort c join open_cohort o using (cohort_id) where c.slug = $1 and c.tier = 'open'",
        slug
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("open cohort"))?;
    let rows = sqlx::query!(
        r#"select e.extract_id, e.version, e.state, e.ready_at, e.labels_revealed, e.total_files, e.total_bytes,
                  coalesce((select jsonb_object_agg(split, n) from (select es.split, count(*) as n from extract_subject es
                            where es.extract_id = e.extract_id group by es.split) s), '{}') as "splits!"
           from extract e where e.open_cohort_id = $1 and e.state in ('ready', 'superseded')
           order by e.version desc"#,
        cohort.cohort_id
    )
    .fetch_all(db)
    .await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound("open cohort"));
    }
    let mut versions = Vec::with_capacity(rows.len());
    for r in rows {
        versions.push(PublishedVersion {
            version: r.version,
            extract_id: r.extract_id,
            state: r.state,
            published_at: r.ready_at,
            labels_revealed: r.labels_revealed,
            splits: serde_json::from_value(r.splits).unwrap_or_default(),
            files: r.total_files,
            bytes: r.total_bytes,
            breakdowns: breakdowns(db, r.extract_id, cohort.suppression_threshold).await?,
        });
    }
    Ok(Landing {
        slug: cohort.slug,
        title: cohort.title,
        description: cohort.description,
        license: cohort.license,
        citation: cohort.citation,
        agreement: cohort.agreement,
        task: cohort.task.and_then(|t| serde_json::from_value(t).ok()),
        daily_submissions: cohort.daily_submissions,
        closes_at: cohort.closes_at,
        leaderboard: super::challenge::LeaderboardVisibility::parse(&cohort.leaderboard),
        versions,
    })
}

/// One version of open cohort `slug`, as it stands (organizers follow its build here).
pub async fn version(db: &PgPool, slug: &str, extract_id: Uuid) -> Result<Release, ApiError> {
    let release = extracts::get(db, extract_id).await?.ok_or(ApiError::NotFound("version"))?;
    if release.open_cohort.as_deref() != Some(slug) {
        return Err(ApiError::NotFound("version"));
    }
    Ok(release)
}
