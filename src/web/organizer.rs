//! The organizer's pages: open cohorts to create and publish, their splits,
//! hidden labels, leaderboards and statistics; and the challenge's
//! submission page, where a signed-in user's team sends its predictions.
//!
//! Every action calls the service function its REST twin calls
//! (`crate::http::cohorts::create`, `opencohort::curate`, `publish`,
//! `challenge`, `statistics`) with the session's principal. A refusal is
//! shown on the page it came from, each problem named.

use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::chart::{self, Chart};
use super::{Chrome, Visitor, WebError, render};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::cohorts::CreateCohortRequest;
use crate::opencohort::challenge::{self, LeaderboardQuery, LeaderboardVisibility, NewTeam, SubmissionMeta};
use crate::opencohort::curate::{self, Curated, LICENSES, OpenCohort, Selection, Settings, Task};
use crate::opencohort::publish::{self, PublishRequest, VersionBreakdownCell};
use crate::opencohort::splits::{SplitFractions, SplitSpec, Stratum};
use crate::opencohort::statistics::{self, DownloadStatistics};
use crate::registry::{Design, Source, Tier};

type PageResult = Result<Response, WebError>;

pub fn routes() -> Router<AppState> {
    let submissions = Router::new()
        .route("/ui/open-cohorts/{slug}/submissions", post(submit))
        // A CSV or ZIP is held to `ingest.*` while it streams, as over REST.
        .layer(axum::extract::DefaultBodyLimit::disable());
    Router::new()
        .route("/ui/organize", get(list).post(create))
        .route("/ui/organize/{slug}", get(cohort))
        .route("/ui/organize/{slug}/settings", post(configure))
        .route("/ui/organize/{slug}/subjects", post(add_subjects))
        .route("/ui/organize/{slug}/split", post(split))
        .route("/ui/organize/{slug}/versions", post(publish))
        .route("/ui/organize/{slug}/leaderboard", get(leaderboard))
        .route("/ui/organize/{slug}/statistics", get(statistics))
        .route("/ui/open-cohorts/{slug}/submit", get(submit_page))
        .route("/ui/open-cohorts/{slug}/team", post(create_team))
        .route("/ui/open-cohorts/{slug}/team/invitations", post(invite_to_team))
        .route("/ui/open-cohorts/{slug}/team/join", post(join_team))
        .merge(submissions)
}

/// A refusal shown on the page it came from: the service's message and each problem.
pub(super) struct Refusal {
    pub status: StatusCode,
    pub message: String,
    pub problems: Vec<String>,
}

impl Refusal {
    /// The refusals a page shows in place; anything else (a missing page, a
    /// role refused, a fault) is answered as its own page.
    pub(super) fn of(error: ApiError) -> Result<Self, WebError> {
        let status = error.status();
        match error {
            ApiError::Invalid { message, problems, .. } => {
                let problems = problems
                    .into_iter()
                    .map(|p| match p.row {
                        Some(row) => format!("line {row}: {}", p.message),
                        None => p.message,
                    })
                    .collect();
                Ok(Self { status, message, problems })
            }
            error
                if status.is_client_error()
                    && !matches!(status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) =>
            {
                Ok(Self { status, message: error.to_string(), problems: Vec::new() })
            }
            error => Err(error.into()),
        }
    }
}

fn empty_to_none(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Words of a comma- or space-separated list.
fn words(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n', '\r', '\t']).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// A `datetime-local` value read as UTC; empty is none.
fn utc(text: &str, field: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| Some(t.and_utc()))
        .ok_or_else(|| ApiError::BadRequest(format!("`{field}` must be a date and time such as 2026-12-31T18:00")))
}

fn number<T: std::str::FromStr>(text: &str, field: &str) -> Result<Option<T>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| ApiError::BadRequest(format!("`{field}` must be a number")))
}

fn when(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

fn datetime_local(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M").to_string())
}

// ------------------------------------------------------------------ the list and creation

#[derive(Template)]
#[template(path = "organize.html", config = "src/web/askama.toml")]
struct ListPage {
    chrome: Chrome,
    cohorts: Vec<Curated>,
    licenses: &'static [&'static str],
    refusal: Option<Refusal>,
    form: CreateForm,
}

async fn list_page(state: &AppState, visitor: &Visitor, form: CreateForm, refusal: Option<Refusal>) -> PageResult {
    let principal = visitor.signed_in()?;
    let cohorts = curate::list(&mut *state.db.acquire().await?, principal).await?;
    let status = refusal.as_ref().map_or(StatusCode::OK, |r| r.status);
    let page = ListPage { chrome: Chrome::new(visitor, "organize"), cohorts, licenses: LICENSES, refusal, form };
    Ok((status, render(&page)).into_response())
}

async fn list(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    list_page(&state, &visitor, CreateForm::default(), None).await
}

#[derive(Debug, Default, Deserialize)]
struct CreateForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    license: String,
    #[serde(default)]
    citation: String,
    #[serde(default)]
    suppression_threshold: String,
}

async fn create(State(state): State<AppState>, visitor: Visitor, Form(form): Form<CreateForm>) -> PageResult {
    let principal = visitor.signed_in()?;
    let created = async {
        let request = CreateCohortRequest {
            slug: form.slug.trim().to_owned(),
            title: form.title.clone(),
            description: form.description.clone(),
            tier: Tier::Open,
            design: Design::Retrospective,
            source: Source::Challenge,
            license: empty_to_none(&form.license),
            citation: empty_to_none(&form.citation),
            suppression_threshold: number(&form.suppression_threshold, "suppression_threshold")?,
        };
        let mut tx = state.db.begin().await?;
        let cohort = crate::http::cohorts::create(&mut tx, principal, &request).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(cohort)
    }
    .await;
    match created {
        Ok(cohort) => Ok(Redirect::to(&format!("/ui/organize/{}", cohort.slug)).into_response()),
        Err(error) => list_page(&state, &visitor, form, Some(Refusal::of(error)?)).await,
    }
}

// ------------------------------------------------------------------ one open cohort

/// A version as its organizers follow it.
struct VersionRow {
    version: i32,
    id: Uuid,
    state: String,
    progress: String,
    labels_revealed: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "organize_cohort.html", config = "src/web/askama.toml")]
struct CohortPage {
    chrome: Chrome,
    slug: String,
    title: String,
    /// `None` until its challenge settings are set.
    open: Option<OpenCohort>,
    settings: SettingsForm,
    readiness: Option<curate::Readiness>,
    versions: Vec<VersionRow>,
    /// Whether a version is still being built (the page then refreshes itself).
    building: bool,
    cohorts: Vec<String>,
    sites: Vec<String>,
    refusal: Option<Refusal>,
}

async fn cohort_page(state: &AppState, visitor: &Visitor, slug: &str, refusal: Option<Refusal>) -> PageResult {
    let principal = visitor.signed_in()?;
    // The list is the organizers' own: it refuses anyone else, and names the cohort.
    let listed = curate::list(&mut *state.db.acquire().await?, principal).await?;
    let listed = listed.into_iter().find(|c| c.slug == slug).ok_or(WebError::NotFound("open cohort"))?;
    let open = match curate::find(&mut *state.db.acquire().await?, principal, slug).await {
        Ok(open) => Some(open),
        Err(ApiError::NotFound(_)) => None,
        Err(error) => return Err(error.into()),
    };
    let (readiness, versions) = if open.is_some() {
        let mut tx = state.db.begin().await?;
        sqlx::query!("set transaction isolation level repeatable read").execute(&mut *tx).await?;
        let readiness = curate::readiness(&mut tx, principal, slug).await?;
        let downloads = statistics::of_cohort(&mut tx, principal, slug).await?;
        tx.commit().await?;
        let mut versions = Vec::with_capacity(downloads.versions.len());
        for v in &downloads.versions {
            let release = publish::version(&state.db, slug, v.extract_id).await?;
            let state_name = serde_json::to_value(release.state)
                .ok()
                .and_then(|s| s.as_str().map(str::to_owned))
                .unwrap_or_default();
            let progress = match (&release.error, &release.totals, release.progress.files_planned) {
                (Some(error), _, _) => format!("failed: {error}"),
                (None, Some(totals), _) => format!("{} files, {} subjects", totals.files, totals.subjects),
                (None, None, Some(planned)) => format!("{} of {planned} files written", release.progress.files_done),
                (None, None, None) => "waiting for a worker".to_owned(),
            };
            versions.push(VersionRow {
                version: release.version,
                id: release.id,
                state: state_name,
                progress,
                labels_revealed: release.labels_revealed,
                created: when(Some(release.created_at)),
            });
        }
        (Some(readiness), versions)
    } else {
        (None, Vec::new())
    };
    let building = versions.iter().any(|v| v.state == "queued" || v.state == "building");
    let cohorts = crate::registry::db::list_cohorts(&state.db)
        .await?
        .into_iter()
        .filter(|c| c.slug != slug)
        .map(|c| c.slug)
        .collect();
    let sites = crate::registry::db::list_sites(&state.db).await?.into_iter().map(|s| s.code).collect();
    let status = refusal.as_ref().map_or(StatusCode::OK, |r| r.status);
    let page = CohortPage {
        chrome: Chrome::new(visitor, "organize"),
        slug: listed.slug,
        title: listed.title,
        settings: open.as_ref().map(SettingsForm::of).unwrap_or_default(),
        open,
        readiness,
        versions,
        building,
        cohorts,
        sites,
        refusal,
    };
    Ok((status, render(&page)).into_response())
}

async fn cohort(State(state): State<AppState>, visitor: Visitor, Path(slug): Path<String>) -> PageResult {
    cohort_page(&state, &visitor, &slug, None).await
}

/// Answers an action on a cohort: back to its page, or the page with the refusal.
async fn acted(
    state: &AppState,
    visitor: &Visitor,
    slug: &str,
    anchor: &str,
    outcome: Result<(), ApiError>,
) -> PageResult {
    match outcome {
        Ok(()) => Ok(Redirect::to(&format!("/ui/organize/{slug}#{anchor}")).into_response()),
        Err(error) => cohort_page(state, visitor, slug, Some(Refusal::of(error)?)).await,
    }
}

/// The challenge settings as the form holds them.
#[derive(Debug, Default, Deserialize)]
struct SettingsForm {
    #[serde(default)]
    agreement: String,
    /// `none`, `classification` or `segmentation`.
    #[serde(default)]
    task: String,
    #[serde(default)]
    system: String,
    /// The labels withheld for the test split, comma separated.
    #[serde(default)]
    codes: String,
    #[serde(default)]
    positive_class: String,
    #[serde(default)]
    min_split_size: String,
    #[serde(default)]
    fields: String,
    #[serde(default)]
    modalities: String,
    #[serde(default)]
    annotation_kinds: String,
    #[serde(default)]
    imaging: Option<String>,
    #[serde(default)]
    reveal_at: String,
    #[serde(default)]
    daily_submissions: String,
    #[serde(default)]
    closes_at: String,
    #[serde(default)]
    leaderboard: String,
}

impl SettingsForm {
    fn of(open: &OpenCohort) -> Self {
        let (task, system, codes) = match &open.task {
            Some(Task::Classification { system, codes }) => ("classification", system.clone(), codes.join(", ")),
            Some(Task::Segmentation { system, code }) => ("segmentation", system.clone(), code.clone()),
            None => ("none", String::new(), String::new()),
        };
        Self {
            agreement: open.agreement.clone().unwrap_or_default(),
            task: task.to_owned(),
            system,
            codes,
            positive_class: open.positive_class.clone().unwrap_or_default(),
            min_split_size: open.min_split_size.to_string(),
            fields: open.fields.join(", "),
            modalities: open.modalities.join(", "),
            annotation_kinds: open.annotation_kinds.join(", "),
            imaging: open.imaging.then(|| "on".to_owned()),
            reveal_at: datetime_local(open.reveal_at),
            daily_submissions: open.daily_submissions.to_string(),
            closes_at: datetime_local(open.closes_at),
            leaderboard: open.leaderboard.as_str().to_owned(),
        }
    }

    fn settings(&self) -> Result<Settings, ApiError> {
        let system = self.system.trim().to_owned();
        let task = match self.task.as_str() {
            "classification" => Some(Task::Classification { system, codes: words(&self.codes) }),
            "segmentation" => Some(Task::Segmentation { system, code: self.codes.trim().to_owned() }),
            _ => None,
        };
        Ok(Settings {
            agreement: empty_to_none(&self.agreement),
            task,
            min_split_size: number(&self.min_split_size, "min_split_size")?,
            fields: words(&self.fields),
            modalities: words(&self.modalities),
            annotation_kinds: words(&self.annotation_kinds),
            imaging: self.imaging.is_some(),
            reveal_at: utc(&self.reveal_at, "reveal_at")?,
            daily_submissions: number(&self.daily_submissions, "daily_submissions")?,
            closes_at: utc(&self.closes_at, "closes_at")?,
            leaderboard: LeaderboardVisibility::parse(&self.leaderboard),
            positive_class: empty_to_none(&self.positive_class),
        })
    }
}

async fn configure(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Form(form): Form<SettingsForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let outcome = async {
        let settings = form.settings()?;
        let mut tx = state.db.begin().await?;
        curate::configure(&mut tx, principal, &slug, &settings).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    acted(&state, &visitor, &slug, "settings-heading", outcome).await
}

#[derive(Debug, Default, Deserialize)]
struct SubjectsForm {
    /// A cohort whose subjects (those consenting to open release) join.
    #[serde(default)]
    from_cohort: String,
    /// Registry pseudonyms, one per line.
    #[serde(default)]
    pseudonyms: String,
    /// Discovery criteria as JSON.
    #[serde(default)]
    criteria: String,
}

impl SubjectsForm {
    fn selection(&self) -> Result<Selection, ApiError> {
        let pseudonyms = words(&self.pseudonyms);
        let chosen = [!self.from_cohort.trim().is_empty(), !pseudonyms.is_empty(), !self.criteria.trim().is_empty()];
        if chosen.iter().filter(|c| **c).count() != 1 {
            return Err(ApiError::BadRequest(
                "choose exactly one way to select subjects: a cohort, pseudonyms or criteria".into(),
            ));
        }
        if !pseudonyms.is_empty() {
            return Ok(Selection { pseudonyms: Some(pseudonyms), criteria: None });
        }
        let criteria = if self.criteria.trim().is_empty() {
            serde_json::json!({"field": "cohort", "in": [self.from_cohort.trim()]})
        } else {
            serde_json::from_str(&self.criteria)
                .map_err(|e| ApiError::BadRequest(format!("the criteria are not JSON: {e}")))?
        };
        Ok(Selection { pseudonyms: None, criteria: Some(criteria) })
    }
}

async fn add_subjects(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Form(form): Form<SubjectsForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let outcome = async {
        let selection = form.selection()?;
        let mut tx = state.db.begin().await?;
        curate::add_subjects(&mut tx, &state.db, principal, &slug, &selection).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    acted(&state, &visitor, &slug, "subjects-heading", outcome).await
}

#[derive(Debug, Default, Deserialize)]
struct SplitForm {
    /// `random` or `cross_site`.
    #[serde(default)]
    method: String,
    #[serde(default)]
    seed: String,
    #[serde(default)]
    train: String,
    #[serde(default)]
    validation: String,
    #[serde(default)]
    test: String,
    #[serde(default)]
    by_sex: Option<String>,
    #[serde(default)]
    by_age_band: Option<String>,
    #[serde(default)]
    by_site: Option<String>,
    #[serde(default)]
    by_label: Option<String>,
    #[serde(default)]
    test_sites: String,
    #[serde(default)]
    validation_fraction: String,
}

impl SplitForm {
    fn spec(&self) -> Result<SplitSpec, ApiError> {
        let seed = number(&self.seed, "seed")?.unwrap_or(0);
        let fraction = |text: &str, field: &str| number::<f64>(text, field).map(Option::unwrap_or_default);
        if self.method == "cross_site" {
            return Ok(SplitSpec::CrossSite {
                seed,
                test_sites: words(&self.test_sites),
                validation_fraction: fraction(&self.validation_fraction, "validation_fraction")?,
            });
        }
        let strata = [
            (&self.by_sex, Stratum::Sex),
            (&self.by_age_band, Stratum::AgeBand),
            (&self.by_site, Stratum::Site),
            (&self.by_label, Stratum::Label),
        ];
        Ok(SplitSpec::Random {
            seed,
            fractions: SplitFractions {
                train: fraction(&self.train, "train")?,
                validation: fraction(&self.validation, "validation")?,
                test: fraction(&self.test, "test")?,
            },
            stratify_by: strata.iter().filter(|(on, _)| on.is_some()).map(|(_, s)| *s).collect(),
            age_band_years: 10,
        })
    }
}

async fn split(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Form(form): Form<SplitForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let outcome = async {
        let spec = form.spec()?;
        let mut tx = state.db.begin().await?;
        curate::split(&mut tx, principal, &slug, &spec).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    acted(&state, &visitor, &slug, "split-heading", outcome).await
}

#[derive(Debug, Default, Deserialize)]
struct PublishForm {
    #[serde(default)]
    reveal_labels: Option<String>,
}

async fn publish(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Form(form): Form<PublishForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let outcome = async {
        let request = PublishRequest { reveal_labels: form.reveal_labels.is_some() };
        let mut tx = state.db.begin().await?;
        publish::publish(&mut tx, &state.ingest.key, principal, &slug, &request).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    acted(&state, &visitor, &slug, "versions-heading", outcome).await
}

// ------------------------------------------------------------------ leaderboard and statistics

/// A scored or waiting submission, as organizers see them all.
struct SubmissionRow {
    submitted: String,
    by: String,
    version: i32,
    state: String,
    primary: String,
    description: String,
}

/// One leaderboard row.
struct BoardRow {
    rank: usize,
    name: String,
    kind: String,
    primary: String,
    submissions: i64,
}

#[derive(Template)]
#[template(path = "organize_leaderboard.html", config = "src/web/askama.toml")]
struct LeaderboardPage {
    chrome: Chrome,
    slug: String,
    /// `None` with the reason when there is nothing to rank.
    board: Result<(i32, String, Vec<BoardRow>), String>,
    submissions: Vec<SubmissionRow>,
}

fn primary_text(scores: Option<&crate::scoring::Scores>) -> String {
    let Some(scores) = scores else { return "not scored".to_owned() };
    scores.overall.first().and_then(|m| m.value.map(|v| format!("{} {v:.3}", m.metric))).unwrap_or_default()
}

async fn leaderboard(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Query(query): Query<LeaderboardQuery>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut conn = state.db.acquire().await?;
    // Organizers only: the cohort's curation refuses anyone else.
    curate::find(&mut conn, principal, &slug).await?;
    // Every submission, as the REST list gives organizers.
    let submissions = challenge::list(&mut conn, principal, &slug).await?;
    let board = match challenge::leaderboard(&mut conn, Some(principal), &slug, &query).await {
        Ok(board) => Ok((
            board.version,
            board.primary_metric.clone(),
            board
                .entries
                .iter()
                .map(|e| BoardRow {
                    rank: e.rank,
                    name: e.name.clone(),
                    kind: e.kind.clone(),
                    primary: e
                        .scores
                        .overall
                        .iter()
                        .find(|m| m.metric == board.primary_metric)
                        .and_then(|m| m.value)
                        .map_or_else(|| "undefined".to_owned(), |v| format!("{v:.3}")),
                    submissions: e.submissions,
                })
                .collect(),
        )),
        Err(ApiError::NotFound(_)) => Err("no version with hidden test labels is published".to_owned()),
        Err(error) => return Err(error.into()),
    };
    let submissions = submissions
        .into_iter()
        .map(|s| SubmissionRow {
            submitted: when(Some(s.submitted_at)),
            by: s.team.map_or_else(|| s.submitted_by.clone(), |t| format!("{t} (by {})", s.submitted_by)),
            version: s.version,
            primary: match s.state.as_str() {
                "scored" => primary_text(s.scores.as_ref()),
                _ => s.problems.first().map(|p| p.message.clone()).unwrap_or_default(),
            },
            state: s.state,
            description: s.description.unwrap_or_default(),
        })
        .collect();
    Ok(render(&LeaderboardPage { chrome: Chrome::new(&visitor, "organize"), slug, board, submissions }))
}

#[derive(Template)]
#[template(path = "organize_statistics.html", config = "src/web/askama.toml")]
struct StatisticsPage {
    chrome: Chrome,
    statistics: DownloadStatistics,
    downloads: Option<Chart>,
    submissions: Option<Chart>,
}

fn cell(value: &str, series: String, n: i64) -> VersionBreakdownCell {
    VersionBreakdownCell {
        by: String::new(),
        value: Some(value.to_owned()),
        split: series,
        subjects: Some(n),
        suppressed: false,
    }
}

async fn statistics(State(state): State<AppState>, visitor: Visitor, Path(slug): Path<String>) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut tx = state.db.begin().await?;
    let statistics = statistics::of_cohort(&mut tx, principal, &slug).await?;
    tx.commit().await?;
    let mut downloads = Vec::new();
    let mut submissions = Vec::new();
    for v in &statistics.versions {
        let series = format!("version {}", v.version);
        for s in &v.splits {
            downloads.push(cell(s.split.as_str(), series.clone(), s.counts.downloads));
        }
        for t in &v.submissions {
            submissions.push(cell(&t.name, series.clone(), t.submissions));
        }
    }
    let downloads = (!downloads.is_empty())
        .then(|| chart::bars("downloads", "Completed downloads per split and version", &downloads));
    let submissions =
        (!submissions.is_empty()).then(|| chart::bars("submissions", "Submissions per team and version", &submissions));
    Ok(render(&StatisticsPage { chrome: Chrome::new(&visitor, "organize"), statistics, downloads, submissions }))
}

// ------------------------------------------------------------------ a team's submissions

/// What a submission of the challenge's task holds.
fn task_hint(task: Option<&Task>) -> String {
    match task {
        Some(Task::Classification { codes, .. }) => format!(
            "A CSV file (text/csv): a header line, then one row per test unit: its open id in a `subject_id` or \
             `study_id` column (the version's README says which), and a `label` (one of {}) or a `probability` of \
             the positive class.",
            codes.join(", ")
        ),
        Some(Task::Segmentation { .. }) => "A ZIP file of one mask per test series, named `<series id>.nii.gz`, \
                                            `.nii` or `.dcm` (DICOM SEG)."
            .to_owned(),
        None => "This challenge has no task to submit predictions for.".to_owned(),
    }
}

/// One version a team may submit against.
struct Target {
    version: i32,
    id: Uuid,
}

/// A submission of the caller's team.
struct MineRow {
    submitted: String,
    by: String,
    version: i32,
    state: String,
    result: String,
    problems: Vec<String>,
}

#[derive(Template)]
#[template(path = "submit.html", config = "src/web/askama.toml")]
struct SubmitPage {
    chrome: Chrome,
    slug: String,
    title: String,
    task: String,
    team: Option<challenge::Team>,
    invitations: Vec<String>,
    targets: Vec<Target>,
    submissions: Vec<MineRow>,
    refusal: Option<Refusal>,
}

async fn submit_page_of(state: &AppState, visitor: &Visitor, slug: &str, refusal: Option<Refusal>) -> PageResult {
    let principal = visitor.signed_in()?;
    let landing = publish::landing(&state.db, slug).await?;
    let mut conn = state.db.acquire().await?;
    let mine = challenge::my_team(&mut conn, principal, slug).await?;
    let submissions = challenge::list(&mut conn, principal, slug).await?;
    let targets = landing
        .versions
        .iter()
        .filter(|v| v.state == "ready" && !v.labels_revealed)
        .map(|v| Target { version: v.version, id: v.extract_id })
        .collect();
    let task = task_hint(landing.task.as_ref());
    let submissions = submissions
        .into_iter()
        .map(|s| MineRow {
            submitted: when(Some(s.submitted_at)),
            by: s.submitted_by.clone(),
            version: s.version,
            result: match s.state.as_str() {
                "scored" => primary_text(s.scores.as_ref()),
                "queued" => "waiting to be scored".to_owned(),
                _ => String::new(),
            },
            problems: s
                .problems
                .iter()
                .map(|p| match p.line {
                    Some(line) => format!("line {line}: {}", p.message),
                    None => p.message.clone(),
                })
                .collect(),
            state: s.state,
        })
        .collect();
    let status = refusal.as_ref().map_or(StatusCode::OK, |r| r.status);
    let page = SubmitPage {
        chrome: Chrome::new(visitor, "open-cohorts"),
        slug: landing.slug,
        title: landing.title,
        task,
        team: mine.team,
        invitations: mine.invitations,
        targets,
        submissions,
        refusal,
    };
    Ok((status, render(&page)).into_response())
}

async fn submit_page(State(state): State<AppState>, visitor: Visitor, Path(slug): Path<String>) -> PageResult {
    submit_page_of(&state, &visitor, &slug, None).await
}

#[derive(Debug, Default, Deserialize)]
struct TeamForm {
    #[serde(default)]
    name: String,
}

async fn create_team(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Form(form): Form<TeamForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let outcome = async {
        let mut tx = state.db.begin().await?;
        challenge::create_team(&mut tx, principal, &slug, &NewTeam { name: form.name.trim().to_owned() }).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    team_outcome(&state, &visitor, &slug, outcome).await
}

/// Back to the submission page after a team action, or the page with the refusal.
async fn team_outcome(state: &AppState, visitor: &Visitor, slug: &str, outcome: Result<(), ApiError>) -> PageResult {
    match outcome {
        Ok(()) => Ok(Redirect::to(&format!("/ui/open-cohorts/{slug}/submit")).into_response()),
        Err(error) => submit_page_of(state, visitor, slug, Some(Refusal::of(error)?)).await,
    }
}

#[derive(Debug, Default, Deserialize)]
struct InviteForm {
    #[serde(default)]
    team: String,
    #[serde(default)]
    username: String,
}

/// A member invites someone into their team (`challenge::invite`, as the API).
async fn invite_to_team(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Form(form): Form<InviteForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let outcome = async {
        let mut tx = state.db.begin().await?;
        let invitation = challenge::Invitation { username: form.username.trim().to_owned() };
        challenge::invite(&mut tx, principal, &slug, &form.team, &invitation).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    team_outcome(&state, &visitor, &slug, outcome).await
}

/// An invited user joins the team (`challenge::join`, as the API).
async fn join_team(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Form(form): Form<TeamForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let outcome = async {
        let mut tx = state.db.begin().await?;
        challenge::join(&mut tx, principal, &slug, &form.name).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    team_outcome(&state, &visitor, &slug, outcome).await
}

#[derive(Debug, Deserialize)]
struct SubmitQuery {
    version: Uuid,
    #[serde(default)]
    description: Option<String>,
}

/// The submission page's file, sent by its script with the session's CSRF
/// header and streamed through the service function `POST
/// /api/v1/open-cohorts/{slug}/versions/{id}/submissions` calls; answered
/// as that route answers.
async fn submit(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    Query(query): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<challenge::Submission>), ApiError> {
    let principal: &Principal =
        visitor.principal().ok_or_else(|| ApiError::Unauthorized("sign in to submit".into()))?;
    let meta = SubmissionMeta { description: query.description.filter(|d| !d.trim().is_empty()) };
    let submission =
        crate::http::challenges::submit_body(&state, principal, &slug, query.version, &meta, &headers, body).await?;
    Ok((StatusCode::ACCEPTED, Json(submission)))
}
