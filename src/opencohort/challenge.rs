//! The challenge of an open cohort: teams, submissions scored against the
//! hidden labels of a version's test split, and the leaderboard.
//!
//! - **Teams.** A registered user creates a team in a challenge, invites
//!   others by username, and they join. A user is in at most one team of a
//!   challenge; outside a team, a user submits alone.
//! - **Submissions** target one published version whose test labels are
//!   hidden: a CSV of labels or probabilities per unit (classification), or
//!   a ZIP of one mask per test series (segmentation), against the version's
//!   open IDs. Each team (or lone user) has `daily_submissions` per UTC day,
//!   counted over every submission its current members made that day, so the
//!   hidden labels cannot be learnt by probing; the count and the insert are
//!   serialized per team. A CSV is checked at the door (every problem named,
//!   nothing kept, nothing counted); masks are checked when scored.
//! - **Scoring** runs in the job queue ([`SCORE_JOB`]): the predictions wait
//!   in the object store only until then, and only the scores are kept
//!   (overall and per site, with bootstrap intervals; see [`crate::scoring`]).
//!   No per-unit value, truth or prediction is stored or returned.
//! - **The hidden truth** is read from the registry at scoring time, for the
//!   version's frozen test split minus withdrawn subjects, and named in the
//!   version's own open IDs (its key): a classification unit is the subject
//!   when every label is on a subject (or the version holds no imaging), the
//!   study otherwise (`study_id` is the released StudyInstanceUID); a
//!   segmentation case is a series (its released SeriesInstanceUID), its
//!   mask the NIfTI `segmentation` annotation of the task's code (the first
//!   recorded when there are several). A unit whose labels disagree is not
//!   scored.
//! - **The leaderboard** ranks each team by its best submission on the
//!   task's primary metric (AUC for classification, falling back to accuracy
//!   for label-only submissions; Dice for segmentation). It is public, or
//!   shown only after `closes_at` when the organizers say so; teams see
//!   their own scores under the same rule.
//!
//! Every team change, submission, refused submission and score is audited.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::curate::Task;
use crate::access::grants;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::deid::RegistryKey;
use crate::error::{ApiError, Problem, Refusal};
use crate::jobs::{Job, NewJob};
use crate::release::build::Context;
use crate::release::dicom::ProjectPseudonyms;
use crate::scoring::{self, LabelOptions, MaskCase, MaskOptions, MaskSource, Scores, SubmissionError, TruthLabel};
use crate::storage::keys;

/// The job kind that scores one submission.
pub const SCORE_JOB: &str = "challenge.score";

/// Who sees a challenge's leaderboard while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LeaderboardVisibility {
    /// Anyone, at any time.
    #[default]
    Public,
    /// Anyone once the challenge has closed; organizers and admins always.
    AfterClose,
}

impl LeaderboardVisibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::AfterClose => "after-close",
        }
    }

    pub fn parse(text: &str) -> Self {
        if text == "after-close" { Self::AfterClose } else { Self::Public }
    }
}

/// What a submission holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SubmissionFormat {
    /// `text/csv`: labels or probabilities per subject or study.
    LabelsCsv,
    /// `application/zip`: one mask per test series, named `<series id>.nii.gz`,
    /// `.nii` or `.dcm` (DICOM SEG).
    MasksZip,
}

impl SubmissionFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::LabelsCsv => "labels-csv",
            Self::MasksZip => "masks-zip",
        }
    }
}

/// The rules of one challenge, as stored.
struct Challenge {
    cohort_id: Uuid,
    slug: String,
    task: Option<Task>,
    daily: i32,
    closes_at: Option<DateTime<Utc>>,
    leaderboard: LeaderboardVisibility,
    positive_class: Option<String>,
}

impl Challenge {
    fn closed(&self) -> bool {
        self.closes_at.is_some_and(|at| at <= Utc::now())
    }

    /// Whether `principal` (none: anonymous) sees scores now.
    fn scores_visible(&self, principal: Option<&Principal>) -> bool {
        self.leaderboard == LeaderboardVisibility::Public
            || self.closed()
            || principal.is_some_and(|p| p.has_role(Role::Organizer) || p.has_role(Role::Admin))
    }
}

async fn challenge(db: &mut PgConnection, slug: &str) -> Result<Challenge, ApiError> {
    let row = sqlx::query!(
        "select o.cohort_id, c.slug, o.task, o.daily_submissions, o.closes_at, o.leaderboard, o.positive_class
         from open_cohort o join cohort c using (cohort_id) where c.slug = $1 and c.tier = 'open'",
        slug
    )
    .fetch_optional(&mut *db)
    .await?
    .ok_or(ApiError::NotFound("open cohort"))?;
    let task = row
        .task
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("the stored task of {slug} does not read: {e}")))?;
    Ok(Challenge {
        cohort_id: row.cohort_id,
        slug: row.slug,
        task,
        daily: row.daily_submissions,
        closes_at: row.closes_at,
        leaderboard: LeaderboardVisibility::parse(&row.leaderboard),
        positive_class: row.positive_class,
    })
}

// ---------------------------------------------------------------- teams

/// A team of a challenge.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Team {
    pub name: String,
    /// Members who joined, by username.
    pub members: Vec<String>,
    /// Users invited who have not joined yet (shown to members only).
    pub invited: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// The caller's team in a challenge, and the teams inviting them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MyTeam {
    pub team: Option<Team>,
    /// Names of teams that invited the caller.
    pub invitations: Vec<String>,
}

/// A team to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    /// 1 to 64 printable characters, unique in the challenge.
    #[schema(max_length = 64)]
    pub name: String,
}

/// A user to invite into a team.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    #[schema(max_length = 128)]
    pub username: String,
}

/// The team `username` has joined in `cohort_id`.
async fn team_of(db: &mut PgConnection, cohort_id: Uuid, username: &str) -> Result<Option<(Uuid, String)>, ApiError> {
    Ok(sqlx::query!(
        "select t.team_id, t.name from challenge_team_member m join challenge_team t using (team_id)
         where m.cohort_id = $1 and m.username = $2 and m.joined_at is not null",
        cohort_id,
        username
    )
    .fetch_optional(&mut *db)
    .await?
    .map(|r| (r.team_id, r.name)))
}

async fn team_view(db: &mut PgConnection, team_id: Uuid) -> Result<Team, ApiError> {
    let team = sqlx::query!("select name, created_by, created_at from challenge_team where team_id = $1", team_id)
        .fetch_one(&mut *db)
        .await?;
    let people = sqlx::query!(
        r#"select username, joined_at is not null as "joined!" from challenge_team_member
           where team_id = $1 order by username"#,
        team_id
    )
    .fetch_all(&mut *db)
    .await?;
    let (members, invited): (Vec<_>, Vec<_>) = people.into_iter().partition(|p| p.joined);
    Ok(Team {
        name: team.name,
        members: members.into_iter().map(|p| p.username).collect(),
        invited: invited.into_iter().map(|p| p.username).collect(),
        created_by: team.created_by,
        created_at: team.created_at,
    })
}

fn check_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("a team's `name` is 1 to 64 printable characters".into()));
    }
    Ok(name)
}

async fn team_audit(
    tx: &mut PgConnection,
    principal: &Principal,
    slug: &str,
    action: &str,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    audit::record(tx, NewEvent::new(&principal.username, action).target(format!("cohort:{slug}")).details(details))
        .await?;
    Ok(())
}

/// Creates a team in the challenge of open cohort `slug`, the caller its
/// first member (any signed-in user not yet in a team of it).
pub async fn create_team(
    tx: &mut PgConnection,
    principal: &Principal,
    slug: &str,
    new: &NewTeam,
) -> Result<Team, ApiError> {
    let challenge = challenge(tx, slug).await?;
    let name = check_name(&new.name)?;
    if let Some((_, current)) = team_of(tx, challenge.cohort_id, &principal.username).await? {
        return Err(ApiError::Conflict(format!("you are in team `{current}` of this challenge already")));
    }
    let team_id = sqlx::query_scalar!(
        "insert into challenge_team (cohort_id, name, created_by) values ($1, $2, $3)
         on conflict (cohort_id, name) do nothing returning team_id",
        challenge.cohort_id,
        name,
        principal.username
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::Conflict(format!("a team named `{name}` exists in this challenge")))?;
    sqlx::query!(
        "insert into challenge_team_member (team_id, cohort_id, username, invited_by, joined_at)
         values ($1, $2, $3, $3, now())",
        team_id,
        challenge.cohort_id,
        principal.username
    )
    .execute(&mut *tx)
    .await?;
    team_audit(tx, principal, slug, "open_cohort.team_created", json!({ "team": name })).await?;
    team_view(tx, team_id).await
}

/// A team of the challenge `cohort_id` by name.
async fn team_named(db: &mut PgConnection, cohort_id: Uuid, name: &str) -> Result<Uuid, ApiError> {
    sqlx::query_scalar!("select team_id from challenge_team where cohort_id = $1 and name = $2", cohort_id, name)
        .fetch_optional(&mut *db)
        .await?
        .ok_or(ApiError::NotFound("team"))
}

/// Invites `username` into team `name` (members of the team only).
pub async fn invite(
    tx: &mut PgConnection,
    principal: &Principal,
    slug: &str,
    name: &str,
    invitation: &Invitation,
) -> Result<Team, ApiError> {
    let challenge = challenge(tx, slug).await?;
    let team_id = team_named(tx, challenge.cohort_id, name).await?;
    if team_of(tx, challenge.cohort_id, &principal.username).await?.map(|t| t.0) != Some(team_id) {
        return Err(ApiError::Forbidden(format!("only members of team `{name}` invite into it")));
    }
    let username = invitation.username.trim();
    if username.is_empty() || username.len() > 128 || username.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("`username` is 1 to 128 printable characters".into()));
    }
    let invited = sqlx::query!(
        "insert into challenge_team_member (team_id, cohort_id, username, invited_by) values ($1, $2, $3, $4)
         on conflict (team_id, username) do nothing",
        team_id,
        challenge.cohort_id,
        username,
        principal.username
    )
    .execute(&mut *tx)
    .await?;
    if invited.rows_affected() > 0 {
        crate::access::duties::notify(
            tx,
            username,
            "challenge.team.invitation",
            &format!("{} invites you to join team “{name}” in the challenge “{slug}”", principal.username),
            &format!("open-cohort:{slug}"),
        )
        .await?;
    }
    team_audit(tx, principal, slug, "open_cohort.team_invited", json!({ "team": name, "username": username })).await?;
    team_view(tx, team_id).await
}

/// Joins team `name`, which invited the caller; a user already in a team of
/// the challenge does not.
pub async fn join(tx: &mut PgConnection, principal: &Principal, slug: &str, name: &str) -> Result<Team, ApiError> {
    let challenge = challenge(tx, slug).await?;
    let team_id = team_named(tx, challenge.cohort_id, name).await?;
    if let Some((current, current_name)) = team_of(tx, challenge.cohort_id, &principal.username).await? {
        if current == team_id {
            return team_view(tx, team_id).await;
        }
        return Err(ApiError::Conflict(format!("you are in team `{current_name}` of this challenge already")));
    }
    let joined = sqlx::query!(
        "update challenge_team_member set joined_at = now() where team_id = $1 and username = $2 and joined_at is null",
        team_id,
        principal.username
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Database(sqlx::Error::Database(db)) if db.constraint() == Some("challenge_team_member_one_team") => {
            ApiError::Conflict("you joined another team of this challenge meanwhile".into())
        }
        other => other,
    })?;
    if joined.rows_affected() == 0 {
        return Err(ApiError::Forbidden(format!("team `{name}` has not invited you")));
    }
    team_audit(tx, principal, slug, "open_cohort.team_joined", json!({ "team": name })).await?;
    team_view(tx, team_id).await
}

/// The caller's team and invitations in the challenge of `slug`.
pub async fn my_team(db: &mut PgConnection, principal: &Principal, slug: &str) -> Result<MyTeam, ApiError> {
    let challenge = challenge(db, slug).await?;
    let team = match team_of(db, challenge.cohort_id, &principal.username).await? {
        Some((id, _)) => Some(team_view(db, id).await?),
        None => None,
    };
    let invitations = sqlx::query_scalar!(
        "select t.name from challenge_team_member m join challenge_team t using (team_id)
         where m.cohort_id = $1 and m.username = $2 and m.joined_at is null order by t.name",
        challenge.cohort_id,
        principal.username
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(MyTeam { team, invitations })
}

// ---------------------------------------------------------------- the hidden truth

/// What a classification unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// `subject_id`: the version's open subject ID.
    Subject,
    /// `study_id`: the released StudyInstanceUID.
    Study,
    /// A series: its released SeriesInstanceUID names its mask.
    Series,
}

/// A hidden mask of one test series.
#[derive(Debug, Clone)]
struct HiddenMask {
    id: String,
    site: String,
    object_key: String,
}

/// The hidden truth of a version's test split, in its open IDs.
enum Hidden {
    Labels { unit: Unit, labels: BTreeMap<String, TruthLabel> },
    Masks(Vec<HiddenMask>),
}

/// The pseudonyms of the open cohort `cohort_id` (its own key).
async fn open_pseudonyms(db: &PgPool, key: &RegistryKey, cohort_id: Uuid) -> Result<ProjectPseudonyms, ApiError> {
    let sealed =
        sqlx::query_scalar!("select sealed from open_cohort_key where cohort_id = $1", cohort_id).fetch_one(db).await?;
    let secret = grants::open_sealed_key(key, &super::publish::key_owner(cohort_id), &sealed)?;
    Ok(ProjectPseudonyms::new(&secret))
}

/// What a classification unit of version `extract_id` is: the subject when
/// every task label of its test split is on a subject (or the version holds
/// no imaging, so teams see no study), the study otherwise.
async fn unit(
    db: &PgPool,
    cohort_id: Uuid,
    extract_id: Uuid,
    imaging: bool,
    system: &str,
    codes: &[String],
) -> Result<Unit, ApiError> {
    let on_studies = sqlx::query_scalar!(
        r#"select exists (
               select 1 from extract_subject es join annotation a using (subject_id)
               join study st on st.study_id = a.study_id
               where es.extract_id = $1 and es.split = 'test' and a.kind = 'label' and a.target <> 'subject'
                 and a.coding_system = $2 and a.code = any($3) and st.cohort_id = $4) as "e!""#,
        extract_id,
        system,
        codes,
        cohort_id
    )
    .fetch_one(db)
    .await?;
    Ok(if imaging && on_studies { Unit::Study } else { Unit::Subject })
}

/// How teams submit to version `extract_id` (for its README): the format,
/// the id column, the route.
pub(crate) async fn instructions(
    db: &PgPool,
    (cohort_id, slug): (Uuid, &str),
    extract_id: Uuid,
    imaging: bool,
    task: &Task,
) -> Result<String, ApiError> {
    let route = format!("`POST /api/v1/open-cohorts/{slug}/versions/{extract_id}/submissions`");
    Ok(match task {
        Task::Classification { system, codes } => {
            let (column, what) = match unit(db, cohort_id, extract_id, imaging, system, codes).await? {
                Unit::Subject => ("subject_id", "each test subject (its ID in `test/tables/subjects.csv`)"),
                _ => ("study_id", "each test study (its StudyInstanceUID, the folder under `test/dicom/`)"),
            };
            format!(
                "Predict {what}. Send a CSV (`text/csv`) to {route}, signed in: the header `{column},label` (one of \
                 the codes), `{column},probability` (of the positive class, for two classes) or `{column},probability_<code>` \
                 (one column per class), then one row per unit. Each team has a few submissions a day; the \
                 leaderboard is at `GET /api/v1/open-cohorts/{slug}/leaderboard`."
            )
        }
        Task::Segmentation { .. } => format!(
            "Predict a mask for each test series. Send a ZIP (`application/zip`) to {route}, signed in, holding \
             one mask per series named `<SeriesInstanceUID>.nii.gz` (or `.nii`, or `.dcm` for DICOM SEG), the UID \
             being the series folder under `test/dicom/<study>/`, each on its series' voxel grid. Each team has a few \
             submissions a day; the leaderboard is at `GET /api/v1/open-cohorts/{slug}/leaderboard`."
        ),
    })
}

/// The hidden truth of version `extract_id` for `task`.
async fn hidden(
    db: &PgPool,
    key: &RegistryKey,
    challenge: &Challenge,
    extract_id: Uuid,
    imaging: bool,
) -> Result<Hidden, ApiError> {
    let pseudonyms = open_pseudonyms(db, key, challenge.cohort_id).await?;
    match &challenge.task {
        None => Err(ApiError::Conflict(format!("open cohort `{}` has no task to score", challenge.slug))),
        Some(Task::Classification { system, codes }) => {
            let rows = sqlx::query!(
                r#"select s.pseudonym, a.code as "code!", st.study_uid as "study_uid?",
                          coalesce(study_site.code, subject_site.code) as "site!",
                          s.withdrawal_scope is not null as "no_imaging!"
                   from extract_subject es
                   join subject s using (subject_id)
                   join site subject_site on subject_site.site_id = s.site_id
                   join annotation a on a.subject_id = s.subject_id
                   left join study st on st.study_id = a.study_id
                   left join site study_site on study_site.site_id = st.site_id
                   where es.extract_id = $1 and es.split = 'test' and s.withdrawn_at is null
                     and a.kind = 'label' and a.coding_system = $2 and a.code = any($3)
                     and (a.target = 'subject' or st.cohort_id = $4)"#,
                extract_id,
                system,
                codes,
                challenge.cohort_id
            )
            .fetch_all(db)
            .await?;
            let by_subject = unit(db, challenge.cohort_id, extract_id, imaging, system, codes).await? == Unit::Subject;
            let mut units: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut sites: HashMap<String, String> = HashMap::new();
            for row in rows {
                let id = if by_subject {
                    pseudonyms.subject(&row.pseudonym)
                } else {
                    // A label on the subject itself says nothing of one study.
                    let (Some(study), false) = (row.study_uid.as_deref(), row.no_imaging) else { continue };
                    pseudonyms.uid(study)
                };
                sites.entry(id.clone()).or_insert(row.site);
                units.entry(id).or_default().insert(row.code);
            }
            let labels = units
                .into_iter()
                .filter(|(_, codes)| codes.len() == 1)
                .map(|(id, codes)| {
                    let site = sites.remove(&id).unwrap_or_default();
                    (id, TruthLabel { label: codes.into_iter().next().expect("one code"), site })
                })
                .collect();
            Ok(Hidden::Labels { unit: if by_subject { Unit::Subject } else { Unit::Study }, labels })
        }
        Some(Task::Segmentation { system, code }) => {
            let rows = sqlx::query!(
                r#"select distinct on (se.series_id) se.series_uid, si.code as site, a.object_key as "object_key!"
                   from extract_subject es
                   join subject s using (subject_id)
                   join annotation a on a.subject_id = s.subject_id
                   join series se on se.series_id = a.series_id
                   join study st on st.study_id = se.study_id
                   join site si on si.site_id = st.site_id
                   where es.extract_id = $1 and es.split = 'test' and s.withdrawn_at is null
                     and s.withdrawal_scope is null and a.kind = 'segmentation' and a.source = 'nifti'
                     and a.coding_system = $2 and a.code = $3 and a.object_key is not null and st.cohort_id = $4
                   order by se.series_id, a.created_at, a.annotation_id"#,
                extract_id,
                system,
                code,
                challenge.cohort_id
            )
            .fetch_all(db)
            .await?;
            let mut masks: Vec<HiddenMask> = rows
                .into_iter()
                .map(|r| HiddenMask { id: pseudonyms.uid(&r.series_uid), site: r.site, object_key: r.object_key })
                .collect();
            masks.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Hidden::Masks(masks))
        }
    }
}

// ---------------------------------------------------------------- submissions

/// A submission as its team sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Submission {
    pub id: Uuid,
    /// The version it was scored against.
    pub version: i32,
    pub extract_id: Uuid,
    /// The team, or `null` for a user outside any team.
    pub team: Option<String>,
    pub submitted_by: String,
    pub description: Option<String>,
    pub format: SubmissionFormat,
    pub size_bytes: i64,
    /// SHA-256 of the submitted file, hex.
    pub sha256: String,
    /// `queued`, `scored`, `invalid` (the problems say why; it does not count
    /// against the daily limit) or `failed` (a fault of the registry).
    pub state: String,
    /// The scores, once scored and while the leaderboard is visible to the caller.
    pub scores: Option<Scores>,
    /// Why it is invalid or failed.
    pub problems: Vec<scoring::SubmissionProblem>,
    pub submitted_at: DateTime<Utc>,
    pub scored_at: Option<DateTime<Utc>>,
}

/// What a submission says of itself.
#[derive(Debug, Clone, Default, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubmissionMeta {
    /// The method, as the leaderboard shows it (at most 200 characters).
    #[param(max_length = 200)]
    pub description: Option<String>,
}

/// The version a submission targets: published, labels hidden, of this challenge.
struct Target {
    version: i32,
    imaging: bool,
}

async fn target(db: &mut PgConnection, challenge: &Challenge, extract_id: Uuid) -> Result<Target, ApiError> {
    let row = sqlx::query!(
        "select version, state, imaging, labels_revealed,
                (select max(version) from extract where open_cohort_id = $2 and state = 'ready') as newest
         from extract where extract_id = $1 and open_cohort_id = $2",
        extract_id,
        challenge.cohort_id
    )
    .fetch_optional(&mut *db)
    .await?
    .ok_or(ApiError::NotFound("version"))?;
    match row.state.as_str() {
        "ready" => {}
        "superseded" => {
            return Err(ApiError::Conflict(format!(
                "version {} is superseded; submit to version {}",
                row.version,
                row.newest.map_or_else(|| "the newest".to_owned(), |v| v.to_string())
            )));
        }
        _ => return Err(ApiError::NotFound("version")),
    }
    if row.labels_revealed {
        return Err(ApiError::Conflict(format!(
            "version {} includes the test labels: nothing is scored against it",
            row.version
        )));
    }
    Ok(Target { version: row.version, imaging: row.imaging })
}

fn problem_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "bad-header",
        "unknown-id",
        "missing-id",
        "duplicate-id",
        "non-numeric",
        "out-of-range",
        "unknown-label",
        "empty-value",
        "malformed-row",
        "unexpected-entry",
    ];
    CODES.iter().find(|c| **c == code).copied().unwrap_or("submission-problem")
}

/// A submission refused with its problems (`400 submission-invalid`).
fn invalid(error: &SubmissionError) -> ApiError {
    ApiError::Invalid {
        code: "submission-invalid",
        message: error.to_string(),
        problems: error
            .problems
            .iter()
            .map(|p| Problem {
                row: p.line,
                column: None,
                path: None,
                code: problem_code(&p.code),
                message: p.message.clone(),
            })
            .collect(),
    }
}

/// The id column a CSV must use for `unit`.
fn check_id_column(csv: &[u8], unit: Unit) -> Result<(), SubmissionError> {
    let expected = if unit == Unit::Subject { "subject_id" } else { "study_id" };
    let header = csv.split(|b| *b == b'\n').next().unwrap_or_default();
    let header = String::from_utf8_lossy(header.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(header));
    let other = if unit == Unit::Subject { "study_id" } else { "subject_id" };
    if header.split(',').any(|c| c.trim().trim_matches('"') == other) {
        return Err(SubmissionError {
            code: "submission-invalid".into(),
            count: 1,
            problems: vec![scoring::SubmissionProblem {
                code: "bad-header".into(),
                line: Some(1),
                id: None,
                message: format!("this challenge is scored per {}: name the id column {expected}", unit_name(unit)),
            }],
        });
    }
    Ok(())
}

fn unit_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Subject => "subject",
        Unit::Study => "study",
        Unit::Series => "series",
    }
}

/// How many submissions count against the team's (or lone user's) limit
/// today (UTC): every one its current members made today that was not
/// invalid, whatever team they were in then.
async fn used_today(
    db: &mut PgConnection,
    cohort_id: Uuid,
    team_id: Option<Uuid>,
    username: &str,
) -> Result<i64, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "n!" from challenge_submission s
           where s.cohort_id = $1 and s.state <> 'invalid'
             and s.submitted_at >= date_trunc('day', now() at time zone 'UTC') at time zone 'UTC'
             and (s.team_id = $2 or s.submitted_by = $3
                  or s.submitted_by in (select username from challenge_team_member
                                        where team_id = $2 and joined_at is not null))"#,
        cohort_id,
        team_id,
        username
    )
    .fetch_one(&mut *db)
    .await?)
}

/// Seconds until the next UTC midnight, when the limit resets.
fn until_tomorrow() -> u64 {
    let now = Utc::now();
    let tomorrow = (now.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    u64::try_from((tomorrow - now).num_seconds()).unwrap_or(1).max(1)
}

/// The stored predictions of a submission, until scored.
fn submission_key(id: Uuid) -> Path {
    keys::submission(id)
}

/// What a submission upload needs besides the request.
pub struct Services<'a> {
    pub db: &'a PgPool,
    pub store: &'a crate::storage::Store,
    pub key: &'a RegistryKey,
    /// Largest CSV kept in memory.
    pub max_csv_bytes: usize,
    /// Largest ZIP of masks.
    pub max_zip_bytes: u64,
    /// Parts of a multipart upload of a ZIP.
    pub part_bytes: usize,
}

/// Receives a submission for version `extract_id` of open cohort `slug`
/// from `principal`: checks the version, the agreement, the close, the
/// format and the daily limit, stores the predictions, records and audits the
/// submission and queues its scoring, all or nothing.
pub async fn submit<S, E>(
    services: &Services<'_>,
    principal: &Principal,
    slug: &str,
    extract_id: Uuid,
    format: SubmissionFormat,
    meta: &SubmissionMeta,
    body: S,
) -> Result<Submission, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let db = services.db;
    let mut conn = db.acquire().await?;
    let challenge = challenge(&mut conn, slug).await?;
    let target = target(&mut conn, &challenge, extract_id).await?;
    super::publish::check_download(db, challenge.cohort_id, Some(&principal.username)).await?;
    if challenge.closed() {
        return Err(ApiError::Refused {
            code: Refusal::ChallengeClosed,
            message: format!("the challenge of `{slug}` closed at {}", challenge.closes_at.unwrap_or_default()),
        });
    }
    let expected = match &challenge.task {
        Some(Task::Classification { .. }) => SubmissionFormat::LabelsCsv,
        Some(Task::Segmentation { .. }) => SubmissionFormat::MasksZip,
        None => return Err(ApiError::Conflict(format!("open cohort `{slug}` has no task to score"))),
    };
    if format != expected {
        return Err(ApiError::UnsupportedMediaType(match expected {
            SubmissionFormat::LabelsCsv => "this challenge scores labels: send a CSV as text/csv".into(),
            SubmissionFormat::MasksZip => "this challenge scores masks: send a ZIP of masks as application/zip".into(),
        }));
    }
    let description = meta.description.as_deref().map(str::trim).filter(|d| !d.is_empty());
    if description.is_some_and(|d| d.chars().count() > 200 || d.chars().any(char::is_control)) {
        return Err(ApiError::BadRequest("`description` is at most 200 printable characters".into()));
    }
    let team = team_of(&mut conn, challenge.cohort_id, &principal.username).await?;
    let team_id = team.as_ref().map(|t| t.0);
    // Refused early, before a large body is read; checked again under the lock.
    if let Err(refusal) = refuse_over_limit(&mut conn, &challenge, team.as_ref(), principal).await {
        drop(conn);
        let team = team.as_ref().map(|t| t.1.as_str());
        return Err(audit_refusal(db, principal, &challenge, team, target.version, refusal).await);
    }
    drop(conn);

    let id = Uuid::new_v4();
    let location = submission_key(id);
    let (size, sha256) = match format {
        SubmissionFormat::LabelsCsv => {
            let csv = read_csv(body, services.max_csv_bytes).await?;
            let Hidden::Labels { unit, labels } =
                hidden(db, services.key, &challenge, extract_id, target.imaging).await?
            else {
                return Err(ApiError::Internal(anyhow::anyhow!("a classification task has label truth")));
            };
            check_id_column(&csv, unit).map_err(|e| invalid(&e))?;
            scoring::submission::join_labels(&labels, &csv, challenge.positive_class.as_deref(), 0.5)
                .map_err(|e| invalid(&e))?;
            let digest = sha256_hex(&csv);
            let size = csv.len();
            services.store.put(&location, PutPayload::from(csv)).await?;
            (size as u64, digest)
        }
        SubmissionFormat::MasksZip => {
            stream_to_store(services.store, &location, body, services.max_zip_bytes, services.part_bytes).await?
        }
    };
    let recorded = record_submission(
        db,
        principal,
        &challenge,
        (team_id, team.as_ref().map(|t| t.1.as_str())),
        (id, extract_id, target.version),
        (format, description, size, &sha256),
    )
    .await;
    if let Err(error) = recorded {
        if let Err(e) = services.store.delete(&location).await {
            tracing::warn!(submission = %id, error = %e, "could not delete the predictions of a refused submission");
        }
        return Err(error);
    }
    let mut conn = db.acquire().await?;
    find(&mut conn, Some(principal), slug, id).await
}

async fn refuse_over_limit(
    db: &mut PgConnection,
    challenge: &Challenge,
    team: Option<&(Uuid, String)>,
    principal: &Principal,
) -> Result<(), ApiError> {
    let used = used_today(db, challenge.cohort_id, team.map(|t| t.0), &principal.username).await?;
    if used < i64::from(challenge.daily) {
        return Ok(());
    }
    let who = team.map_or_else(|| "you".to_owned(), |t| format!("team `{}`", t.1));
    Err(ApiError::SubmissionLimit {
        message: format!(
            "{who} made {used} of {} submissions today (UTC); the next is accepted from midnight UTC",
            challenge.daily
        ),
        retry_after: until_tomorrow(),
    })
}

/// Records a received submission under the team's lock: the limit again,
/// the row, its scoring job and its audit event, in one transaction. A
/// refusal is audited on its own.
async fn record_submission(
    db: &PgPool,
    principal: &Principal,
    challenge: &Challenge,
    (team_id, team): (Option<Uuid>, Option<&str>),
    (id, extract_id, version): (Uuid, Uuid, i32),
    (format, description, size, sha256): (SubmissionFormat, Option<&str>, u64, &str),
) -> Result<(), ApiError> {
    let mut tx = db.begin().await?;
    let lock =
        format!("challenge:{}:{}", challenge.cohort_id, team_id.map_or(principal.username.clone(), |t| t.to_string()));
    sqlx::query!("select pg_advisory_xact_lock(hashtextextended($1, 0))", lock).execute(&mut *tx).await?;
    let team_row = team_id.zip(team).map(|(t, n)| (t, n.to_owned()));
    if let Err(refusal) = refuse_over_limit(&mut tx, challenge, team_row.as_ref(), principal).await {
        drop(tx);
        return Err(audit_refusal(db, principal, challenge, team, version, refusal).await);
    }
    sqlx::query!(
        "insert into challenge_submission (submission_id, cohort_id, extract_id, team_id, submitted_by, description,
                                           format, size_bytes, sha256, object_key)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        id,
        challenge.cohort_id,
        extract_id,
        team_id,
        principal.username,
        description,
        format.as_str(),
        i64::try_from(size).unwrap_or(i64::MAX),
        sha256,
        submission_key(id).to_string()
    )
    .execute(&mut *tx)
    .await?;
    crate::jobs::enqueue(&mut *tx, &score_job(id)).await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "open_cohort.submission")
            .target(format!("cohort:{}", challenge.slug))
            .details(json!({
                "submission": id, "version": version, "extract": extract_id, "team": team,
                "format": format.as_str(), "bytes": size, "sha256": sha256,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Audits a submission refused for the daily limit, in its own
/// transaction, and gives back the refusal (or the failure to audit it).
async fn audit_refusal(
    db: &PgPool,
    principal: &Principal,
    challenge: &Challenge,
    team: Option<&str>,
    version: i32,
    refusal: ApiError,
) -> ApiError {
    let audited = async {
        let mut tx = db.begin().await?;
        let details = json!({ "version": version, "team": team, "limit": challenge.daily, "reason": "daily-limit" });
        audit::record(
            &mut tx,
            NewEvent::new(&principal.username, "open_cohort.submission_refused")
                .target(format!("cohort:{}", challenge.slug))
                .details(details),
        )
        .await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    };
    match audited.await {
        Ok(()) => refusal,
        Err(error) => error,
    }
}

/// The job scoring submission `id`.
pub fn score_job(id: Uuid) -> NewJob {
    NewJob::new(SCORE_JOB).payload(json!({ "submission": id })).dedupe(&format!("score:{id}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

async fn read_csv<S, E>(mut body: S, limit: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("the request body could not be read: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    if out.is_empty() {
        return Err(ApiError::BadRequest("the submission is empty".into()));
    }
    Ok(out.into())
}

/// Streams a body into the store in parts, hashing it; nothing is left
/// behind when the body is too large or breaks off.
async fn stream_to_store<S, E>(
    store: &crate::storage::Store,
    location: &Path,
    mut body: S,
    limit: u64,
    part: usize,
) -> Result<(u64, String), ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut upload = WriteMultipart::new_with_chunk_size(store.put_multipart(location).await?, part);
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut size = 0_u64;
    let failure = loop {
        let Some(chunk) = body.next().await else { break None };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => break Some(ApiError::BadRequest(format!("the request body could not be read: {e}"))),
        };
        size += chunk.len() as u64;
        if size > limit {
            break Some(ApiError::PayloadTooLarge);
        }
        digest.update(&chunk);
        if let Err(e) = upload.wait_for_capacity(4).await {
            break Some(e.into());
        }
        upload.write(&chunk);
    };
    if let Some(error) = failure.or_else(|| (size == 0).then(|| ApiError::BadRequest("the submission is empty".into())))
    {
        upload.abort().await?;
        return Err(error);
    }
    upload.finish().await?;
    Ok((size, hex::encode(digest.finish())))
}

/// One submission of `slug`, for its team (or lone submitter), organizers and admins.
pub async fn find(
    db: &mut PgConnection,
    principal: Option<&Principal>,
    slug: &str,
    id: Uuid,
) -> Result<Submission, ApiError> {
    let challenge = challenge(db, slug).await?;
    let list = submissions(db, &challenge, principal, Some(id)).await?;
    list.into_iter().next().ok_or(ApiError::NotFound("submission"))
}

/// The caller's submissions in the challenge of `slug` (their own and their
/// team's), newest first; organizers and admins see every one.
pub async fn list(db: &mut PgConnection, principal: &Principal, slug: &str) -> Result<Vec<Submission>, ApiError> {
    let challenge = challenge(db, slug).await?;
    submissions(db, &challenge, Some(principal), None).await
}

async fn submissions(
    db: &mut PgConnection,
    challenge: &Challenge,
    principal: Option<&Principal>,
    only: Option<Uuid>,
) -> Result<Vec<Submission>, ApiError> {
    let Some(principal) = principal else { return Err(ApiError::Unauthorized("sign in to see submissions".into())) };
    let all = principal.has_role(Role::Organizer) || principal.has_role(Role::Admin);
    let team = team_of(db, challenge.cohort_id, &principal.username).await?.map(|t| t.0);
    let rows = sqlx::query!(
        r#"select s.submission_id, e.version, s.extract_id, t.name as "team?", s.submitted_by, s.description,
                  s.format, s.size_bytes, s.sha256, s.state, s.scores, s.problems, s.submitted_at, s.scored_at
           from challenge_submission s join extract e using (extract_id)
           left join challenge_team t on t.team_id = s.team_id
           where s.cohort_id = $1 and ($2::uuid is null or s.submission_id = $2)
             and ($3 or s.submitted_by = $4 or (s.team_id is not null and s.team_id = $5))
           order by s.submitted_at desc, s.submission_id"#,
        challenge.cohort_id,
        only,
        all,
        principal.username,
        team
    )
    .fetch_all(&mut *db)
    .await?;
    let visible = challenge.scores_visible(Some(principal));
    rows.into_iter()
        .map(|r| {
            let scores = if visible { r.scores.map(serde_json::from_value).transpose() } else { Ok(None) };
            Ok(Submission {
                id: r.submission_id,
                version: r.version,
                extract_id: r.extract_id,
                team: r.team,
                submitted_by: r.submitted_by,
                description: r.description,
                format: if r.format == "masks-zip" { SubmissionFormat::MasksZip } else { SubmissionFormat::LabelsCsv },
                size_bytes: r.size_bytes,
                sha256: r.sha256,
                state: r.state,
                scores: scores.map_err(|e| ApiError::Internal(anyhow::anyhow!("stored scores do not read: {e}")))?,
                problems: r.problems.map(serde_json::from_value).transpose().unwrap_or_default().unwrap_or_default(),
                submitted_at: r.submitted_at,
                scored_at: r.scored_at,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- scoring

/// What scoring made of a submission.
enum Outcome {
    Scored(Scores),
    /// The team's fault: its problems.
    Invalid(Vec<scoring::SubmissionProblem>),
    /// The registry's fault (a hidden mask that does not read).
    Failed(String),
}

/// Scores one submission (the [`SCORE_JOB`]): a submission already scored is
/// left alone, so a retried job does nothing twice.
pub async fn run_job(ctx: &Context, job: &Job) -> anyhow::Result<Option<NewJob>> {
    let id: Uuid = serde_json::from_value(job.payload["submission"].clone()).context("the job names no submission")?;
    let Some(row) = sqlx::query!(
        "select s.cohort_id, s.extract_id, s.format, s.object_key, s.state, s.team_id, s.submitted_by, c.slug,
                e.imaging, e.version, t.name as \"team?\"
         from challenge_submission s join cohort c using (cohort_id) join extract e using (extract_id)
         left join challenge_team t on t.team_id = s.team_id
         where s.submission_id = $1",
        id
    )
    .fetch_optional(&ctx.db)
    .await?
    else {
        return Ok(None);
    };
    if row.state != "queued" {
        return Ok(None);
    }
    let object_key = row.object_key.context("a queued submission has its predictions")?;
    let challenge = challenge(&mut *ctx.db.acquire().await?, &row.slug).await?;
    let hidden = hidden(&ctx.db, &ctx.key, &challenge, row.extract_id, row.imaging).await?;
    let location = Path::from(object_key);
    let outcome = match hidden {
        Hidden::Labels { labels, .. } => {
            let csv = ctx.store.get(&location).await?.bytes().await?;
            let options = LabelOptions { positive_class: challenge.positive_class.clone(), ..LabelOptions::default() };
            let result = tokio::task::spawn_blocking(move || scoring::score_labels(&labels, &csv, &options)).await?;
            match result {
                Ok(scores) => Outcome::Scored(scores),
                Err(error) => Outcome::Invalid(error.problems),
            }
        }
        Hidden::Masks(masks) => score_mask_zip(ctx, &location, masks).await?,
    };
    let (state, scores, problems) = match &outcome {
        Outcome::Scored(scores) => ("scored", Some(serde_json::to_value(scores)?), None),
        Outcome::Invalid(problems) => ("invalid", None, Some(serde_json::to_value(problems)?)),
        Outcome::Failed(message) => {
            tracing::error!(submission = %id, %message, "a submission could not be scored");
            let problem = scoring::SubmissionProblem {
                code: "hidden-mask-unreadable".into(),
                line: None,
                id: None,
                message: message.clone(),
            };
            ("failed", None, Some(serde_json::to_value(vec![problem])?))
        }
    };
    let mut tx = ctx.db.begin().await?;
    let updated = sqlx::query!(
        "update challenge_submission set state = $2, scores = $3, problems = $4, scored_at = now(), object_key = null
         where submission_id = $1 and state = 'queued'",
        id,
        state,
        scores,
        problems
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 1 {
        let summary = match &outcome {
            Outcome::Scored(scores) => {
                json!(scores.overall.iter().map(|m| (m.metric.clone(), m.value)).collect::<BTreeMap<_, _>>())
            }
            Outcome::Invalid(problems) => json!({ "problems": problems.len() }),
            Outcome::Failed(_) => json!({ "failed": true }),
        };
        audit::record(
            &mut tx,
            NewEvent::new("system:scoring", "open_cohort.scored").target(format!("cohort:{}", row.slug)).details(
                json!({
                    "submission": id, "version": row.version, "team": row.team, "submitted_by": row.submitted_by,
                    "state": state, "scores": summary,
                }),
            ),
        )
        .await?;
    }
    tx.commit().await?;
    // Only the scores stay.
    match ctx.store.delete(&location).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(submission = %id, error = %e, "could not delete scored predictions"),
    }
    Ok(None)
}

/// Scores a ZIP of masks against the hidden masks: every entry must name a
/// test series once, every test series must have one; then the pairs are
/// read and compared a few at a time.
async fn score_mask_zip(ctx: &Context, location: &Path, masks: Vec<HiddenMask>) -> anyhow::Result<Outcome> {
    let spool = spool(ctx, location).await?;
    let Ok(mut archive) = zip::ZipArchive::new(spool) else {
        return Ok(Outcome::Invalid(vec![problem(
            "bad-archive",
            None,
            "the submission is not a readable ZIP archive".into(),
        )]));
    };
    let expected: BTreeSet<&str> = masks.iter().map(|m| m.id.as_str()).collect();
    let mut entries: HashMap<String, usize> = HashMap::new();
    let mut problems = Vec::new();
    for index in 0..archive.len() {
        let Ok(entry) = archive.by_index_raw(index) else {
            problems.push(problem("bad-archive", None, format!("entry {index} of the archive does not read")));
            continue;
        };
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().map(|n| n.rsplit('/').next().unwrap_or_default().to_owned()).unwrap_or_default();
        let Some(id) = [".nii.gz", ".nii", ".dcm"].iter().find_map(|ext| name.strip_suffix(ext)) else {
            problems.push(problem(
                "unexpected-entry",
                None,
                format!("`{}` is not a mask named `<series id>.nii.gz`, `.nii` or `.dcm`", printable(&name)),
            ));
            continue;
        };
        if !expected.contains(id) {
            problems.push(problem(
                "unknown-id",
                Some(id),
                format!("`{}` is not a series of the test split", printable(id)),
            ));
        } else if entries.insert(id.to_owned(), index).is_some() {
            problems.push(problem("duplicate-id", Some(id), format!("series {id} has more than one mask")));
        }
    }
    for id in expected.iter().filter(|id| !entries.contains_key(**id)) {
        problems.push(problem("missing-id", Some(id), format!("series {id} of the test split has no mask")));
    }
    if !problems.is_empty() {
        problems.truncate(scoring::submission::MAX_PROBLEMS);
        return Ok(Outcome::Invalid(problems));
    }
    let archive = Arc::new(Mutex::new(archive));
    let store = ctx.store.clone();
    let handle = tokio::runtime::Handle::current();
    let store_error: Arc<Mutex<Option<object_store::Error>>> = Arc::default();
    let errors = store_error.clone();
    let result = tokio::task::spawn_blocking(move || {
        let cases = masks.into_iter().map(|mask| {
            let index = entries[&mask.id];
            let prediction = {
                let mut archive = archive.lock().expect("archive");
                let mut bytes = Vec::new();
                // One byte past the reader's limit at most: an entry that inflates
                // beyond it is refused as too large, never held whole.
                let limit = MaskOptions::default().prediction.byte_limit + 1;
                match archive.by_index(index).map(|e| std::io::copy(&mut std::io::Read::take(e, limit), &mut bytes)) {
                    Ok(Ok(_)) => Bytes::from(bytes),
                    _ => Bytes::new(),
                }
            };
            let truth = match handle
                .block_on(async { store.get(&Path::from(mask.object_key.as_str())).await?.bytes().await })
            {
                Ok(bytes) => bytes,
                Err(e) => {
                    errors.lock().expect("errors").get_or_insert(e);
                    Bytes::new()
                }
            };
            MaskCase {
                id: mask.id,
                site: mask.site,
                truth: MaskSource::Bytes(truth),
                prediction: MaskSource::Bytes(prediction),
            }
        });
        scoring::score_masks(cases, &MaskOptions::default())
    })
    .await?;
    if let Some(error) = store_error.lock().expect("errors").take() {
        return Err(error.into()); // retried: the store did not answer
    }
    Ok(match result {
        Ok(scores) => Outcome::Scored(scores),
        Err(error) if error.role == scoring::MaskRole::Truth => {
            Outcome::Failed(format!("the hidden mask of series {} does not read ({})", error.case, error.code()))
        }
        Err(error) => Outcome::Invalid(vec![scoring::SubmissionProblem {
            code: error.code().to_owned(),
            line: None,
            id: Some(error.case.clone()),
            message: error.to_string(),
        }]),
    })
}

fn problem(code: &str, id: Option<&str>, message: String) -> scoring::SubmissionProblem {
    scoring::SubmissionProblem { code: code.into(), line: None, id: id.map(str::to_owned), message }
}

/// At most 64 printable characters of a name a team chose.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The stored ZIP, held on local disk encrypted for reading (see [`crate::ingest::spool`]).
async fn spool(ctx: &Context, location: &Path) -> anyhow::Result<crate::ingest::spool::Spool> {
    let dir = ctx.config.data_dir.join("spool");
    tokio::fs::create_dir_all(&dir).await?;
    let mut writer = tokio::task::spawn_blocking(move || crate::ingest::spool::SpoolWriter::create(&dir)).await??;
    let mut stream = ctx.store.get(location).await?.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        writer = tokio::task::spawn_blocking(move || writer.write(&chunk).map(|()| writer)).await??;
    }
    Ok(tokio::task::spawn_blocking(move || writer.finish()).await??)
}

// ---------------------------------------------------------------- the leaderboard

/// A challenge's leaderboard for one version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Leaderboard {
    pub slug: String,
    pub version: i32,
    pub extract_id: Uuid,
    /// What teams are ranked by: `auc`/`auc_macro_ovr` (accuracy for label-only
    /// submissions) or `dice`; higher is better.
    pub primary_metric: String,
    pub closes_at: Option<DateTime<Utc>>,
    /// Whether the challenge has closed: the ranking is final.
    pub closed: bool,
    pub entries: Vec<LeaderboardEntry>,
}

/// One team's (or lone user's) place.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeaderboardEntry {
    pub rank: usize,
    /// The team's name, or the username of a user outside any team.
    pub name: String,
    /// `team` or `user`.
    pub kind: String,
    /// Scored submissions against this version.
    pub submissions: i64,
    /// The best one.
    pub submission_id: Uuid,
    pub description: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub scores: Scores,
}

/// Which version a leaderboard is of.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeaderboardQuery {
    /// The version number (default: the newest published version whose test labels are hidden).
    pub version: Option<i32>,
}

/// A submission's rank key (see [`rank_key`]).
type RankKey = (Option<f64>, Option<f64>);

/// A submission's rank key: primary metric, then accuracy or HD95 (lower is
/// better, so negated), higher first.
fn rank_key(scores: &Scores) -> RankKey {
    let value = |name: &str| scores.overall.iter().find(|m| m.metric == name).and_then(|m| m.value);
    match scores.task {
        scoring::ScoredTask::Labels => (value("auc").or_else(|| value("auc_macro_ovr")), value("accuracy")),
        scoring::ScoredTask::Masks => (value("dice"), value("hd95").map(|h| -h)),
    }
}

fn better(a: &RankKey, b: &RankKey) -> std::cmp::Ordering {
    let order = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    };
    order(a.0, b.0).then(order(a.1, b.1))
}

/// The leaderboard of open cohort `slug` (anyone, unless it is shown only
/// after the close and the caller is not an organizer or admin).
pub async fn leaderboard(
    db: &mut PgConnection,
    principal: Option<&Principal>,
    slug: &str,
    query: &LeaderboardQuery,
) -> Result<Leaderboard, ApiError> {
    let challenge = challenge(db, slug).await?;
    if !challenge.scores_visible(principal) {
        return Err(ApiError::Refused {
            code: Refusal::LeaderboardSealed,
            message: format!(
                "the leaderboard of `{slug}` is shown once the challenge closes, at {}",
                challenge.closes_at.map_or_else(|| "its close".to_owned(), |c| c.to_rfc3339())
            ),
        });
    }
    let version = sqlx::query!(
        "select extract_id, version from extract
         where open_cohort_id = $1 and state in ('ready', 'superseded') and not labels_revealed
           and ($2::int is null or version = $2)
         order by version desc limit 1",
        challenge.cohort_id,
        query.version
    )
    .fetch_optional(&mut *db)
    .await?
    .ok_or(ApiError::NotFound("version with hidden test labels"))?;
    let rows = sqlx::query!(
        r#"select s.submission_id, s.team_id, t.name as "team?", s.submitted_by, s.description, s.submitted_at,
                  s.scores as "scores!"
           from challenge_submission s left join challenge_team t on t.team_id = s.team_id
           where s.extract_id = $1 and s.state = 'scored' and s.scores is not null
           order by s.submitted_at, s.submission_id"#,
        version.extract_id
    )
    .fetch_all(&mut *db)
    .await?;
    let mut best: BTreeMap<(String, String), (LeaderboardEntry, RankKey)> = BTreeMap::new();
    for row in rows {
        let scores: Scores = serde_json::from_value(row.scores)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored scores do not read: {e}")))?;
        let key = rank_key(&scores);
        let (kind, name) = match row.team {
            Some(team) => ("team", team),
            None => ("user", row.submitted_by),
        };
        let entry = LeaderboardEntry {
            rank: 0,
            name: name.clone(),
            kind: kind.to_owned(),
            submissions: 1,
            submission_id: row.submission_id,
            description: row.description,
            submitted_at: row.submitted_at,
            scores,
        };
        match best.get_mut(&(kind.to_owned(), name.clone())) {
            Some((held, held_key)) => {
                let count = held.submissions + 1;
                // Strictly better only: a tie keeps the earlier submission.
                if better(&key, held_key) == std::cmp::Ordering::Less {
                    *held = entry;
                    *held_key = key;
                }
                held.submissions = count;
            }
            None => {
                best.insert((kind.to_owned(), name), (entry, key));
            }
        }
    }
    let mut entries: Vec<_> = best.into_values().collect();
    entries.sort_by(|a, b| better(&a.1, &b.1).then(a.0.submitted_at.cmp(&b.0.submitted_at)));
    let mut ranked: Vec<LeaderboardEntry> = Vec::with_capacity(entries.len());
    for (i, (mut entry, key)) in entries.into_iter().enumerate() {
        // Ties share a rank.
        entry.rank = match ranked.last() {
            Some(previous) if better(&rank_key(&previous.scores), &key) == std::cmp::Ordering::Equal => previous.rank,
            _ => i + 1,
        };
        ranked.push(entry);
    }
    let primary = match &challenge.task {
        Some(Task::Segmentation { .. }) => "dice",
        Some(Task::Classification { codes, .. }) if codes.len() > 2 => "auc_macro_ovr",
        _ => "auc",
    };
    Ok(Leaderboard {
        slug: challenge.slug.clone(),
        version: version.version,
        extract_id: version.extract_id,
        primary_metric: primary.to_owned(),
        closes_at: challenge.closes_at,
        closed: challenge.closed(),
        entries: ranked,
    })
}
