//! Curating an open cohort before it is published: the challenge's settings,
//! the subjects drawn from the registry (only those whose consent permits
//! open release), and their split.
//!
//! An open cohort is a cohort of tier `open` (organizers create those with
//! `POST /cohorts`); its challenge settings live beside it in `open_cohort`.
//! Organizers and admins curate every open cohort, as stewards review every
//! application. Every change is audited in its own transaction.
//!
//! Consent is read from the cohorts a subject already belongs to: a subject
//! may join an open cohort only when one of them has consent terms with
//! `open_release` (participants agreed to open publication). Withdrawn
//! subjects never join. [`readiness`] repeats every check at publication
//! time and adds the quarantine and the minimum split size, so nothing that
//! changed since (a withdrawal, a new quarantine) slips through.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::challenge::LeaderboardVisibility;
use super::splits::{self, Split, SplitReport, SplitSpec, SplitStudy, SplitSubject};
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, Problem};
use crate::vocabulary::Sex;

/// Licences an open cohort may be published under (SPDX identifiers).
pub const LICENSES: &[&str] = &[
    "CC0-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "CC-BY-NC-4.0",
    "CC-BY-NC-SA-4.0",
    "CC-BY-ND-4.0",
    "CC-BY-NC-ND-4.0",
    "ODC-By-1.0",
    "ODbL-1.0",
    "PDDL-1.0",
    "CDLA-Permissive-2.0",
    "CDLA-Sharing-1.0",
];

/// Most subjects one request may name.
pub const MAX_NAMED: usize = 100_000;

/// What the challenge asks teams to predict: the annotations that are its
/// labels, withheld for the test split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Task {
    /// One label per subject: its `label` annotation whose code is one of `codes`.
    Classification {
        /// `SNOMED CT`, `RadLex` or `local`.
        #[schema(max_length = 64)]
        system: String,
        /// The classes, at least two.
        #[schema(max_length = 64)]
        codes: Vec<String>,
    },
    /// One mask per series: its segmentation annotations of `code`.
    Segmentation {
        #[schema(max_length = 64)]
        system: String,
        #[schema(max_length = 64)]
        code: String,
    },
}

impl Task {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let (system, codes) = match self {
            Self::Classification { system, codes } => (system, codes.as_slice()),
            Self::Segmentation { system, code } => (system, std::slice::from_ref(code)),
        };
        if !["SNOMED CT", "RadLex", "local"].contains(&system.as_str()) {
            problems.push("`task.system` must be `SNOMED CT`, `RadLex` or `local`".to_owned());
        }
        if matches!(self, Self::Classification { .. }) && codes.len() < 2 {
            problems.push("`task.codes` must list at least two classes".to_owned());
        }
        let mut seen = std::collections::BTreeSet::new();
        for code in codes {
            if code.trim().is_empty() || code.len() > 64 || code.chars().any(char::is_control) {
                problems.push("each code of `task` must be 1 to 64 printable characters".to_owned());
            } else if !seen.insert(code) {
                problems.push(format!("`task` lists the code `{code}` twice"));
            }
        }
        problems
    }
}

/// The challenge settings of an open cohort.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A click-through agreement registered users accept before downloading;
    /// absent, anyone downloads without signing in.
    #[schema(max_length = 20000)]
    pub agreement: Option<String>,
    pub task: Option<Task>,
    /// The smallest split publication allows (default: the cohort's
    /// suppression threshold, never below it).
    pub min_split_size: Option<i32>,
    /// Data dictionary fields published in each split's tables.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub fields: Vec<String>,
    /// Modalities published (empty: every modality).
    #[serde(default)]
    #[schema(max_length = 16)]
    pub modalities: Vec<String>,
    /// Annotation kinds published (`segmentation`, `contour`, `landmark`, `box`, `label`);
    /// the test split never carries the task's kind until its labels are revealed.
    #[serde(default)]
    #[schema(max_length = 16)]
    pub annotation_kinds: Vec<String>,
    /// Publish the imaging itself (default), not only tables and annotations.
    #[serde(default = "yes")]
    pub imaging: bool,
    /// From this time on, a version may include the test split's labels.
    pub reveal_at: Option<DateTime<Utc>>,
    /// Submissions per team (or per user outside a team) per UTC day, 1 to 100 (default 5).
    pub daily_submissions: Option<i32>,
    /// No submission is accepted from this time on.
    pub closes_at: Option<DateTime<Utc>>,
    /// Whether anyone sees the leaderboard while the challenge runs (default),
    /// or only once it has closed (`after-close` needs `closes_at`).
    #[serde(default)]
    pub leaderboard: LeaderboardVisibility,
    /// The positive class of a two-class task, for AUC and F1 (default: the
    /// class `1` if there is one, else the last code in sorted order).
    #[schema(max_length = 64)]
    pub positive_class: Option<String>,
}

fn yes() -> bool {
    true
}

/// An open cohort as its organizers see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenCohort {
    pub slug: String,
    pub title: String,
    pub description: String,
    /// SPDX identifier.
    pub license: Option<String>,
    pub citation: Option<String>,
    pub agreement: Option<String>,
    pub task: Option<Task>,
    pub min_split_size: i32,
    pub fields: Vec<String>,
    pub modalities: Vec<String>,
    pub annotation_kinds: Vec<String>,
    pub imaging: bool,
    pub reveal_at: Option<DateTime<Utc>>,
    pub daily_submissions: i32,
    pub closes_at: Option<DateTime<Utc>>,
    pub leaderboard: LeaderboardVisibility,
    pub positive_class: Option<String>,
    /// Subjects in the cohort now (withdrawn ones not counted).
    pub subjects: i64,
    /// The split last applied and what it gave.
    #[schema(value_type = Option<Object>)]
    pub split_spec: Option<Value>,
    pub split_report: Option<SplitReport>,
    pub split_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn require_organizer(principal: &Principal) -> Result<(), ApiError> {
    principal.require_any(&[Role::Organizer, Role::Admin])
}

/// The cohort id and suppression threshold of the open cohort `slug`, locked for the change.
async fn cohort_of(tx: &mut PgConnection, slug: &str) -> Result<(Uuid, i32), ApiError> {
    let row =
        sqlx::query!("select cohort_id, tier, suppression_threshold from cohort where slug = $1 for update", slug)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(ApiError::NotFound("open cohort"))?;
    if row.tier != "open" {
        return Err(ApiError::NotFound("open cohort"));
    }
    Ok((row.cohort_id, row.suppression_threshold))
}

/// Sets the challenge settings of the open cohort `slug` (organizers, admins).
pub async fn configure(
    tx: &mut PgConnection,
    principal: &Principal,
    slug: &str,
    settings: &Settings,
) -> Result<OpenCohort, ApiError> {
    require_organizer(principal)?;
    let (cohort_id, threshold) = cohort_of(tx, slug).await?;
    let mut problems = Vec::new();
    if let Some(task) = &settings.task {
        problems.extend(task.problems());
    }
    if settings.agreement.as_deref().is_some_and(|a| a.trim().is_empty() || a.len() > 20_000) {
        problems.push("`agreement` must be 1 to 20,000 characters, or absent".to_owned());
    }
    let min = settings.min_split_size.unwrap_or(threshold);
    if min < threshold {
        problems.push(format!(
            "`min_split_size` must be at least the cohort's suppression threshold, {threshold}: a smaller split \
             would publish a cell discovery suppresses"
        ));
    }
    let known = sqlx::query_scalar!("select field_id from field where field_id = any($1)", &settings.fields)
        .fetch_all(&mut *tx)
        .await?;
    for field in settings.fields.iter().filter(|f| !known.contains(f)) {
        problems.push(format!(
            "`fields` names `{}`, which the data dictionary does not hold",
            field.chars().take(64).collect::<String>()
        ));
    }
    for modality in &settings.modalities {
        if !(2..=16).contains(&modality.len())
            || !modality.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            problems.push("each of `modalities` is a DICOM modality code such as `MR` or `DX`".to_owned());
        }
    }
    for kind in &settings.annotation_kinds {
        if !["segmentation", "contour", "landmark", "box", "label"].contains(&kind.as_str()) {
            problems.push(
                "each of `annotation_kinds` is `segmentation`, `contour`, `landmark`, `box` or `label`".to_owned(),
            );
        }
    }
    let daily = settings.daily_submissions.unwrap_or(5);
    if !(1..=100).contains(&daily) {
        problems.push("`daily_submissions` must be 1 to 100".to_owned());
    }
    if settings.leaderboard == LeaderboardVisibility::AfterClose && settings.closes_at.is_none() {
        problems.push("a leaderboard shown `after-close` needs `closes_at`".to_owned());
    }
    if let Some(positive) = &settings.positive_class {
        match &settings.task {
            Some(Task::Classification { codes, .. }) if codes.len() == 2 && codes.contains(positive) => {}
            _ => problems.push("`positive_class` must be one of the two codes of a two-class task".to_owned()),
        }
    }
    if let Some(first) = problems.first() {
        return Err(ApiError::BadRequest(if problems.len() == 1 { first.clone() } else { problems.join("; ") }));
    }
    let task = settings.task.as_ref().map(|t| serde_json::to_value(t).expect("a task serializes"));
    sqlx::query!(
        "insert into open_cohort (cohort_id, agreement, task, min_split_size, created_by, fields, modalities,
                                  annotation_kinds, imaging, reveal_at, daily_submissions, closes_at, leaderboard,
                                  positive_class)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         on conflict (cohort_id) do update
            set agreement = excluded.agreement, task = excluded.task, min_split_size = excluded.min_split_size,
                fields = excluded.fields, modalities = excluded.modalities,
                annotation_kinds = excluded.annotation_kinds, imaging = excluded.imaging, reveal_at = excluded.reveal_at,
                daily_submissions = excluded.daily_submissions, closes_at = excluded.closes_at,
                leaderboard = excluded.leaderboard, positive_class = excluded.positive_class",
        cohort_id,
        settings.agreement.as_deref().map(str::trim),
        task,
        min,
        principal.username,
        &settings.fields,
        &settings.modalities,
        &settings.annotation_kinds,
        settings.imaging,
        settings.reveal_at,
        daily,
        settings.closes_at,
        settings.leaderboard.as_str(),
        settings.positive_class
    )
    .execute(&mut *tx)
    .await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "open_cohort.configure").target(format!("cohort:{slug}")).details(json!({
            "task": task, "min_split_size": min, "agreement": settings.agreement.is_some(),
            "fields": settings.fields, "modalities": settings.modalities,
            "annotation_kinds": settings.annotation_kinds, "imaging": settings.imaging, "reveal_at": settings.reveal_at,
            "daily_submissions": daily, "closes_at": settings.closes_at, "leaderboard": settings.leaderboard,
            "positive_class": settings.positive_class,
        })),
    )
    .await?;
    find(tx, principal, slug).await
}

/// The open cohort `slug` as its organizers see it (organizers, admins).
pub async fn find(db: &mut PgConnection, principal: &Principal, slug: &str) -> Result<OpenCohort, ApiError> {
    require_organizer(principal)?;
    let row = sqlx::query!(
        r#"select c.slug, c.title, c.description, c.license, c.citation, o.agreement, o.task, o.min_split_size,
                  o.fields, o.modalities, o.annotation_kinds, o.imaging, o.reveal_at, o.daily_submissions,
                  o.closes_at, o.leaderboard, o.positive_class, o.split_spec, o.split_report, o.split_at, o.created_by, o.created_at, o.updated_at,
                  (select count(*) from cohort_subject cs join subject s using (subject_id)
                   where cs.cohort_id = c.cohort_id and s.withdrawn_at is null) as "subjects!"
           from cohort c join open_cohort o using (cohort_id)
           where c.slug = $1 and c.tier = 'open'"#,
        slug
    )
    .fetch_optional(&mut *db)
    .await?
    .ok_or(ApiError::NotFound("open cohort"))?;
    Ok(OpenCohort {
        task: read(row.task, "task", slug)?,
        split_report: read(row.split_report, "split report", slug)?,
        slug: row.slug,
        title: row.title,
        description: row.description,
        license: row.license,
        citation: row.citation,
        agreement: row.agreement,
        min_split_size: row.min_split_size,
        fields: row.fields,
        modalities: row.modalities,
        annotation_kinds: row.annotation_kinds,
        imaging: row.imaging,
        reveal_at: row.reveal_at,
        daily_submissions: row.daily_submissions,
        closes_at: row.closes_at,
        leaderboard: LeaderboardVisibility::parse(&row.leaderboard),
        positive_class: row.positive_class,
        subjects: row.subjects,
        split_spec: row.split_spec,
        split_at: row.split_at,
        created_by: row.created_by,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn read<T: serde::de::DeserializeOwned>(value: Option<Value>, what: &str, slug: &str) -> Result<Option<T>, ApiError> {
    value
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("the stored {what} of open cohort {slug} does not read: {e}")))
}

/// Which registry subjects to add: by pseudonym, or every subject matching discovery criteria.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Registry pseudonyms (`sub-…`).
    #[schema(max_length = 64)]
    pub pseudonyms: Option<Vec<String>>,
    /// Discovery criteria, as `POST /discovery/count` takes them.
    #[schema(value_type = Option<Object>)]
    pub criteria: Option<Value>,
}

/// What adding subjects did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Added {
    /// Subjects that joined.
    pub added: u64,
    /// Subjects that were in the cohort already.
    pub already: u64,
    /// Subjects in the cohort now.
    pub subjects: i64,
}

/// A subject that cannot be published, and why (by registry pseudonym).
#[derive(Debug, Clone)]
struct Unfit {
    pseudonym: String,
    code: &'static str,
    why: &'static str,
}

impl Unfit {
    fn problem(&self) -> Problem {
        Problem {
            row: None,
            column: None,
            path: None,
            code: self.code,
            message: format!("{}: {}", self.pseudonym, self.why),
        }
    }
}

/// Why each of `subjects` may not be published openly: withdrawn, or in no
/// cohort whose consent permits open release. The open cohort's own terms
/// count only for subjects uploaded into it, not for those drawn from
/// elsewhere (their consent is that of the cohort they came from).
async fn unfit(tx: &mut PgConnection, cohort_id: Uuid, subjects: &[Uuid]) -> Result<Vec<Unfit>, ApiError> {
    let rows = sqlx::query!(
        r#"select s.pseudonym, s.withdrawn_at is not null as "withdrawn!",
                  exists (select 1 from cohort_subject cs join cohort c using (cohort_id)
                          where cs.subject_id = s.subject_id
                            and coalesce(c.consent_terms ->> 'open_release', 'false') = 'true'
                            and (c.cohort_id <> $1 or exists (select 1 from study st
                                 where st.subject_id = s.subject_id and st.cohort_id = $1))) as "consented!"
           from subject s where s.subject_id = any($2) order by s.pseudonym"#,
        cohort_id,
        subjects
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let (code, why) = if r.withdrawn {
                ("subject-withdrawn", "the subject withdrew consent")
            } else if !r.consented {
                ("no-open-release-consent", "no cohort of the subject has consent terms that permit open release")
            } else {
                return None;
            };
            Some(Unfit { pseudonym: r.pseudonym, code, why })
        })
        .collect())
}

fn refused(unfit: &[Unfit], what: &str) -> ApiError {
    let n = unfit.len();
    ApiError::Invalid {
        code: "not-publishable",
        message: format!("{n} subject{} cannot {what}; each is named with the reason", if n == 1 { "" } else { "s" }),
        problems: unfit.iter().map(Unfit::problem).collect(),
    }
}

/// Adds registry subjects to the open cohort `slug`: all of them, or none
/// when any may not be published openly (each such subject named).
pub async fn add_subjects(
    tx: &mut PgConnection,
    db: &sqlx::PgPool,
    principal: &Principal,
    slug: &str,
    selection: &Selection,
) -> Result<Added, ApiError> {
    require_organizer(principal)?;
    let (cohort_id, _) = cohort_of(tx, slug).await?;
    if !sqlx::query_scalar!("select exists (select 1 from open_cohort where cohort_id = $1) as \"e!\"", cohort_id)
        .fetch_one(&mut *tx)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "open cohort `{slug}` has no challenge settings yet: `PUT /open-cohorts/{slug}` first"
        )));
    }
    let ids: Vec<Uuid> = match (&selection.pseudonyms, &selection.criteria) {
        (Some(pseudonyms), None) => {
            if pseudonyms.is_empty() || pseudonyms.len() > MAX_NAMED {
                return Err(ApiError::BadRequest(format!("`pseudonyms` must list 1 to {MAX_NAMED} subjects")));
            }
            let found = sqlx::query!("select subject_id, pseudonym from subject where pseudonym = any($1)", pseudonyms)
                .fetch_all(&mut *tx)
                .await?;
            let known: std::collections::HashSet<&str> = found.iter().map(|r| r.pseudonym.as_str()).collect();
            let unknown: Vec<Unfit> = pseudonyms
                .iter()
                .filter(|p| !known.contains(p.as_str()))
                .map(|p| Unfit {
                    // Safe to echo: it is what the caller sent, and matches no subject.
                    pseudonym: p.chars().take(64).collect(),
                    code: "unknown-subject",
                    why: "no subject of the registry has this pseudonym",
                })
                .collect();
            if !unknown.is_empty() {
                return Err(refused(&unknown, "join the open cohort"));
            }
            found.into_iter().map(|r| r.subject_id).collect()
        }
        (None, Some(criteria)) => {
            let query = crate::discovery::prepare(db, Some(criteria)).await?;
            crate::discovery::matching_subjects(&mut *tx, &query).await?
        }
        _ => return Err(ApiError::BadRequest("give exactly one of `pseudonyms` and `criteria`".into())),
    };
    let unfit = unfit(tx, cohort_id, &ids).await?;
    if !unfit.is_empty() {
        return Err(refused(&unfit, "join the open cohort"));
    }
    let added = sqlx::query!(
        "insert into cohort_subject (cohort_id, subject_id) select $1, unnest($2::uuid[]) on conflict do nothing",
        cohort_id,
        &ids
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let subjects = sqlx::query_scalar!(
        r#"select count(*) as "n!" from cohort_subject cs join subject s using (subject_id)
           where cs.cohort_id = $1 and s.withdrawn_at is null"#,
        cohort_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let already = ids.len() as u64 - added;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "open_cohort.subjects_added")
            .target(format!("cohort:{slug}"))
            .details(json!({ "added": added, "already": already, "subjects": subjects,
                             "by": if selection.criteria.is_some() { "criteria" } else { "pseudonyms" } })),
    )
    .await?;
    Ok(Added { added, already, subjects })
}

/// The subjects of the open cohort as the split engine sees them: their
/// studies with sites, sex, age at their first study, and their task label.
async fn split_subjects(
    tx: &mut PgConnection,
    cohort_id: Uuid,
    task: Option<&Task>,
) -> Result<Vec<SplitSubject>, ApiError> {
    let rows = sqlx::query!(
        r#"select s.pseudonym, s.sex,
                  (select min(st.age_years) from study st where st.subject_id = s.subject_id) as age,
                  coalesce((select array_agg(st.study_uid || ' ' || si.code order by st.study_uid)
                            from study st join site si on si.site_id = st.site_id
                            where st.subject_id = s.subject_id), '{}') as "studies!",
                  ss.code as subject_site
           from cohort_subject cs join subject s using (subject_id) join site ss on ss.site_id = s.site_id
           where cs.cohort_id = $1 and s.withdrawn_at is null
           order by s.pseudonym"#,
        cohort_id
    )
    .fetch_all(&mut *tx)
    .await?;
    let labels: BTreeMap<String, String> = match task {
        Some(Task::Classification { system, codes }) => sqlx::query!(
            r#"select distinct on (s.pseudonym) s.pseudonym, a.code as "code!"
               from annotation a join subject s using (subject_id) join cohort_subject cs using (subject_id)
               where cs.cohort_id = $1 and a.kind = 'label' and a.coding_system = $2 and a.code = any($3)
               order by s.pseudonym, a.created_at desc"#,
            cohort_id,
            system,
            codes
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.pseudonym, r.code))
        .collect(),
        _ => BTreeMap::new(),
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut studies: Vec<SplitStudy> = r
                .studies
                .iter()
                .filter_map(|s| s.split_once(' '))
                .map(|(study, site)| SplitStudy { study: study.to_owned(), site: site.to_owned() })
                .collect();
            if studies.is_empty() {
                // Without imaging, the subject's own site places it.
                studies.push(SplitStudy { study: format!("subject:{}", r.pseudonym), site: r.subject_site });
            }
            SplitSubject {
                label: labels.get(&r.pseudonym).cloned(),
                sex: r.sex.as_deref().and_then(Sex::parse),
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // ages are 0 to 150
                age: r.age.filter(|a| a.is_finite() && *a >= 0.0).map(|a| a as u32),
                subject: r.pseudonym,
                studies,
            }
        })
        .collect())
}

fn split_error(error: &splits::SplitError) -> ApiError {
    ApiError::Invalid {
        code: "invalid-split",
        message: error.to_string(),
        problems: vec![Problem { row: None, column: None, path: None, code: error.code(), message: error.to_string() }],
    }
}

/// Splits the open cohort `slug` as `spec` asks and keeps the assignment,
/// replacing any earlier one (organizers, admins).
pub async fn split(
    tx: &mut PgConnection,
    principal: &Principal,
    slug: &str,
    spec: &SplitSpec,
) -> Result<SplitReport, ApiError> {
    require_organizer(principal)?;
    let (cohort_id, _) = cohort_of(tx, slug).await?;
    let task = sqlx::query_scalar!("select task from open_cohort where cohort_id = $1", cohort_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "open cohort `{slug}` has no challenge settings yet: `PUT /open-cohorts/{slug}` first"
            ))
        })?;
    let task: Option<Task> = task.and_then(|t| serde_json::from_value(t).ok());
    let subjects = split_subjects(tx, cohort_id, task.as_ref()).await?;
    if subjects.is_empty() {
        return Err(ApiError::Conflict(format!("open cohort `{slug}` has no subjects to split")));
    }
    let outcome = splits::assign(&subjects, spec).map_err(|e| split_error(&e))?;
    sqlx::query!("delete from open_cohort_split where cohort_id = $1", cohort_id).execute(&mut *tx).await?;
    let (keys, names): (Vec<String>, Vec<String>) =
        outcome.assignment.iter().map(|(k, s)| (k.clone(), s.as_str().to_owned())).unzip();
    sqlx::query!(
        "insert into open_cohort_split (cohort_id, subject_id, split)
         select $1, s.subject_id, a.split from unnest($2::text[], $3::text[]) as a (pseudonym, split)
         join subject s on s.pseudonym = a.pseudonym",
        cohort_id,
        &keys,
        &names
    )
    .execute(&mut *tx)
    .await?;
    let report = serde_json::to_value(&outcome.report).expect("a report serializes");
    let spec_value = serde_json::to_value(spec).expect("a spec serializes");
    sqlx::query!(
        "update open_cohort set split_spec = $2, split_report = $3, split_at = now() where cohort_id = $1",
        cohort_id,
        spec_value,
        report
    )
    .execute(&mut *tx)
    .await?;
    let sizes: BTreeMap<&str, usize> = Split::ALL.iter().map(|s| (s.as_str(), outcome.report.size(*s))).collect();
    audit::record(
        tx,
        NewEvent::new(&principal.username, "open_cohort.split").target(format!("cohort:{slug}")).details(json!({
            "spec": spec_value, "sizes": sizes, "held_out_sites": outcome.report.held_out_sites,
            "excluded": outcome.report.excluded.len(),
        })),
    )
    .await?;
    Ok(outcome.report)
}

/// Whether the open cohort could be published now, and every reason it could not.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Each problem names its subject by registry pseudonym, or its split.
    pub problems: Vec<Problem>,
}

/// Every check publication makes, against the cohort as it is now: the
/// licence, the split (present, covering every subject, no leakage, each
/// split at least the minimum size), each subject's consent and standing,
/// and no quarantined instance of any subject.
pub async fn readiness(tx: &mut PgConnection, principal: &Principal, slug: &str) -> Result<Readiness, ApiError> {
    require_organizer(principal)?;
    let (cohort_id, _) = cohort_of(tx, slug).await?;
    let cohort = find(tx, principal, slug).await?;
    let mut problems = Vec::new();
    let problem = |code: &'static str, message: String| Problem { row: None, column: None, path: None, code, message };
    if !cohort.license.as_deref().is_some_and(|l| LICENSES.contains(&l)) {
        problems.push(problem(
            "license-required",
            format!("the cohort needs one of these SPDX licences: {}", LICENSES.join(", ")),
        ));
    }
    if cohort.citation.as_deref().is_none_or(|c| c.trim().is_empty()) {
        problems.push(problem("citation-required", "the cohort needs citation text".into()));
    }
    // Withdrawn subjects are left out of every version, not a reason to refuse one.
    let members: Vec<Uuid> = sqlx::query_scalar!(
        "select cs.subject_id from cohort_subject cs join subject s using (subject_id)
         where cs.cohort_id = $1 and s.withdrawn_at is null",
        cohort_id
    )
    .fetch_all(&mut *tx)
    .await?;
    problems.extend(unfit(tx, cohort_id, &members).await?.iter().map(Unfit::problem));
    let quarantined = sqlx::query_scalar!(
        r#"select distinct s.pseudonym as "pseudonym!"
           from cohort_subject cs join subject s using (subject_id) join study st on st.subject_id = s.subject_id
           join series se on se.study_id = st.study_id join instance i on i.series_id = se.series_id
           where cs.cohort_id = $1 and i.status = 'quarantined' order by 1"#,
        cohort_id
    )
    .fetch_all(&mut *tx)
    .await?;
    for pseudonym in quarantined {
        problems.push(problem(
            "quarantined-instance",
            format!("{pseudonym}: an instance of the subject is in quarantine; a steward must release or reject it"),
        ));
    }
    match &cohort.split_report {
        None => problems.push(problem("split-required", "the cohort has not been split".into())),
        Some(report) => {
            let task = cohort.task.as_ref();
            let subjects = split_subjects(tx, cohort_id, task).await?;
            let stored = sqlx::query!(
                "select s.pseudonym, o.split from open_cohort_split o join subject s using (subject_id)
                 where o.cohort_id = $1 and s.withdrawn_at is null",
                cohort_id
            )
            .fetch_all(&mut *tx)
            .await?;
            let placed: Vec<(String, Split)> =
                stored.into_iter().filter_map(|r| Split::parse(&r.split).map(|s| (r.pseudonym, s))).collect();
            let excluded: std::collections::HashSet<&str> =
                report.excluded.iter().map(|e| e.subject.as_str()).collect();
            let in_split: std::collections::HashSet<&str> = placed.iter().map(|(p, _)| p.as_str()).collect();
            for subject in &subjects {
                if !in_split.contains(subject.subject.as_str()) && !excluded.contains(subject.subject.as_str()) {
                    problems.push(problem(
                        "subject-not-split",
                        format!("{}: joined after the split; split the cohort again", subject.subject),
                    ));
                }
            }
            if let Err(leak) =
                splits::check_leakage(&subjects, placed.iter().map(|(p, s)| (p.as_str(), *s)), &report.held_out_sites)
            {
                problems.push(problem(leak.code(), leak.to_string()));
            }
            let mut sizes = BTreeMap::new();
            for (_, split) in &placed {
                *sizes.entry(*split).or_insert(0usize) += 1;
            }
            let minimum = usize::try_from(cohort.min_split_size).unwrap_or(usize::MAX);
            for (split, size) in sizes {
                if size < minimum {
                    problems.push(problem(
                        "split-below-minimum",
                        format!("split {split} has {size} subjects, below the cohort's minimum of {minimum}"),
                    ));
                }
            }
            if !placed.iter().any(|(_, s)| *s == Split::Test) {
                problems.push(problem("split-required", "the split has no test subjects".into()));
            }
        }
    }
    Ok(Readiness { ready: problems.is_empty(), problems })
}

/// An open cohort as its organizers' list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Curated {
    pub slug: String,
    pub title: String,
    /// Whether its challenge settings are set.
    pub configured: bool,
    /// Subjects in it now (withdrawn ones not counted).
    pub subjects: i64,
    pub split_at: Option<DateTime<Utc>>,
    /// Versions published (any state).
    pub versions: i64,
    /// The state of its newest version.
    pub latest_state: Option<String>,
}

/// Every cohort of tier `open`, configured or not (organizers, admins).
pub async fn list(db: &mut PgConnection, principal: &Principal) -> Result<Vec<Curated>, ApiError> {
    require_organizer(principal)?;
    Ok(sqlx::query_as!(
        Curated,
        r#"select c.slug, c.title, o.cohort_id is not null as "configured!", o.split_at,
                  (select count(*) from cohort_subject cs join subject s using (subject_id)
                   where cs.cohort_id = c.cohort_id and s.withdrawn_at is null) as "subjects!",
                  (select count(*) from extract e where e.open_cohort_id = c.cohort_id) as "versions!",
                  (select e.state::text from extract e where e.open_cohort_id = c.cohort_id
                   order by e.version desc limit 1) as latest_state
           from cohort c left join open_cohort o using (cohort_id)
           where c.tier = 'open' order by c.slug"#
    )
    .fetch_all(&mut *db)
    .await?)
}
