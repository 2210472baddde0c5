//! Statistics of an open cohort for its organizers: submissions per team and
//! version, and downloads per version and per split, from what every download records ([`crate::release::extracts::record`]:
//! bytes and requests per file, downloader, session and day).
//!
//! A file belongs to the split whose folder it is in (`train/`, `validation/`,
//! `test/`); the version's other files (README, DataCite metadata, split
//! report, agreement, de-identification statement, manifest and signature)
//! are its `documents`. An archive of a split's folder (`?prefix=train/`)
//! counts to that split; an archive of the whole version (or of a prefix that
//! is no split folder) is `archive`. Registered downloaders are counted by
//! username; anonymous ones by the keyed hash of their address, which changes
//! every day ([`crate::release::downloaders`]).

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::release::extracts::ExtractState;

/// How many days the daily series cover, today included.
pub const SERIES_DAYS: i32 = 30;

/// An open cohort's downloads, version by version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DownloadStatistics {
    /// The open cohort's slug.
    pub slug: String,
    /// Newest first; every version, downloaded or not.
    pub versions: Vec<VersionDownloads>,
}

/// The downloads of one version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionDownloads {
    /// The version's release id (`/extracts/{id}`).
    pub extract_id: Uuid,
    /// 1, 2, … within the open cohort.
    pub version: i32,
    pub state: ExtractState,
    /// The whole version: requests and bytes are the sums of its parts; each
    /// downloader counts once however many parts they took.
    pub totals: DownloadCounts,
    /// `train`, `validation`, `test`, `documents` and `archive`, in this order, each always present.
    pub splits: Vec<SplitDownloads>,
    /// The last 30 days, oldest first, each present (zero without downloads).
    pub days: Vec<DownloadDay>,
    /// Submissions against this version per team (or user outside a team), most first.
    pub submissions: Vec<TeamSubmissions>,
}

/// What one team (or user outside a team) submitted against a version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TeamSubmissions {
    /// The team's name, or the username.
    pub name: String,
    /// `team` or `user`.
    pub kind: String,
    pub submissions: i64,
    pub scored: i64,
    /// Refused by scoring (the team's fault); not counted against its limit.
    pub invalid: i64,
    /// Not scored for a fault of the registry.
    pub failed: i64,
    pub last_submitted_at: chrono::DateTime<chrono::Utc>,
}

/// What was downloaded of one part of a version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SplitDownloads {
    pub split: DownloadPart,
    #[serde(flatten)]
    pub counts: DownloadCounts,
}

/// A part of a version, as its downloads are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DownloadPart {
    /// Files under `train/`, and archives of that folder.
    Train,
    /// Files under `validation/`, and archives of that folder.
    Validation,
    /// Files under `test/`, and archives of that folder.
    Test,
    /// The version's files outside the split folders (README, metadata, manifest, signature…).
    Documents,
    /// Archives of the whole version (or of a prefix that is no split folder).
    Archive,
}

impl DownloadPart {
    const ALL: [Self; 5] = [Self::Train, Self::Validation, Self::Test, Self::Documents, Self::Archive];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Validation => "validation",
            Self::Test => "test",
            Self::Documents => "documents",
            Self::Archive => "archive",
        }
    }
}

/// Download counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct DownloadCounts {
    /// Completed downloads: a file (or archive) whose bytes, in one download
    /// session of one downloader on one day, reached its size, resumed ranges
    /// included.
    pub downloads: i64,
    /// Requests served, each range of a resumed download one.
    pub requests: i64,
    /// Bytes served.
    pub bytes: i64,
    /// Distinct signed-in users.
    pub registered_downloaders: i64,
    /// Distinct anonymous visitors, summed over days: a visitor is known by a
    /// keyed hash of their address whose key changes every UTC day, so the
    /// same visitor on two days counts twice, by design (nothing links their
    /// days). Downloads recorded without an address count as one visitor a day.
    pub anonymous_downloaders: i64,
}

/// One day of a version's downloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DownloadDay {
    pub day: NaiveDate,
    /// Completed downloads (as in [`DownloadCounts::downloads`]).
    pub downloads: i64,
    pub requests: i64,
    pub bytes: i64,
}

/// The download statistics of the open cohort `slug` (organizers, admins).
pub async fn of_cohort(
    db: &mut PgConnection,
    principal: &Principal,
    slug: &str,
) -> Result<DownloadStatistics, ApiError> {
    principal.require_any(&[Role::Organizer, Role::Admin])?;
    let cohort = sqlx::query!("select cohort_id, tier from cohort where slug = $1", slug)
        .fetch_optional(&mut *db)
        .await?
        .filter(|c| c.tier == "open")
        .ok_or(ApiError::NotFound("open cohort"))?;
    let versions = sqlx::query!(
        r#"select extract_id, version, state as "state: ExtractState" from extract
           where open_cohort_id = $1 order by version desc"#,
        cohort.cohort_id
    )
    .fetch_all(&mut *db)
    .await?;
    let counts = counts(db, cohort.cohort_id).await?;
    let days = days(db, cohort.cohort_id).await?;
    let teams = sqlx::query!(
        r#"select s.extract_id, coalesce(t.name, s.submitted_by) as "name!",
                  case when t.name is null then 'user' else 'team' end as "kind!",
                  count(*) as "submissions!", count(*) filter (where s.state = 'scored') as "scored!",
                  count(*) filter (where s.state = 'invalid') as "invalid!",
                  count(*) filter (where s.state = 'failed') as "failed!", max(s.submitted_at) as "last!"
           from challenge_submission s left join challenge_team t on t.team_id = s.team_id
           where s.cohort_id = $1 group by 1, 2, 3 order by 4 desc, 2"#,
        cohort.cohort_id
    )
    .fetch_all(&mut *db)
    .await?;
    let versions = versions
        .into_iter()
        .map(|v| {
            let of = |part: Option<&str>| {
                counts.iter().find(|(id, p, _)| *id == v.extract_id && p.as_deref() == part).map(|(.., c)| c.clone())
            };
            let splits = DownloadPart::ALL
                .into_iter()
                .map(|split| SplitDownloads { split, counts: of(Some(split.as_str())).unwrap_or_default() });
            VersionDownloads {
                extract_id: v.extract_id,
                version: v.version,
                state: v.state,
                totals: of(None).unwrap_or_default(),
                splits: splits.collect(),
                days: days.iter().filter(|(id, _)| *id == v.extract_id).map(|(_, d)| d.clone()).collect(),
                submissions: teams
                    .iter()
                    .filter(|t| t.extract_id == v.extract_id)
                    .map(|t| TeamSubmissions {
                        name: t.name.clone(),
                        kind: t.kind.clone(),
                        submissions: t.submissions,
                        scored: t.scored,
                        invalid: t.invalid,
                        failed: t.failed,
                        last_submitted_at: t.last,
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(DownloadStatistics { slug: slug.to_owned(), versions })
}

/// The counts of every version of `cohort_id` per part (`Some`) and in all (`None`).
async fn counts(
    db: &mut PgConnection,
    cohort_id: Uuid,
) -> Result<Vec<(Uuid, Option<String>, DownloadCounts)>, ApiError> {
    // Archives are recorded as `archive.zip`, or `archive.zip:{prefix}` for a prefix.
    let rows = sqlx::query!(
        r#"with d as (
               select d.extract_id, d.username, d.day, d.requests, d.bytes_served, d.completed_at,
                      case when d.path like 'archive.zip:%'
                           then coalesce(substring(d.path from '^archive\.zip:(train|validation|test)(?:/|$)'), 'archive')
                           when d.path = 'archive.zip' then 'archive'
                           else coalesce(substring(d.path from '^(train|validation|test)/'), 'documents')
                      end as part,
                      (d.username = 'anonymous' or d.username like 'anonymous:%') as anonymous
               from extract_download d join extract e using (extract_id)
               where e.open_cohort_id = $1
           )
           select extract_id as "extract_id!", part,
                  count(*) filter (where completed_at is not null) as "downloads!",
                  coalesce(sum(requests), 0)::bigint as "requests!",
                  coalesce(sum(bytes_served), 0)::bigint as "bytes!",
                  count(distinct username) filter (where not anonymous) as "registered!",
                  count(distinct (username, day)) filter (where anonymous) as "anonymous!"
           from d group by grouping sets ((extract_id, part), (extract_id))"#,
        cohort_id
    )
    .fetch_all(&mut *db)
    .await?;
    let counts = rows.into_iter().map(|r| {
        let counts = DownloadCounts {
            downloads: r.downloads,
            requests: r.requests,
            bytes: r.bytes,
            registered_downloaders: r.registered,
            anonymous_downloaders: r.anonymous,
        };
        (r.extract_id, r.part, counts)
    });
    Ok(counts.collect())
}

/// Each version's last [`SERIES_DAYS`] days, oldest first.
async fn days(db: &mut PgConnection, cohort_id: Uuid) -> Result<Vec<(Uuid, DownloadDay)>, ApiError> {
    let rows = sqlx::query!(
        r#"select e.extract_id, g.day::date as "day!",
                  count(d.extract_id) filter (where d.completed_at is not null) as "downloads!",
                  coalesce(sum(d.requests), 0)::bigint as "requests!",
                  coalesce(sum(d.bytes_served), 0)::bigint as "bytes!"
           from extract e
           cross join generate_series(current_date - ($2::int - 1), current_date, interval '1 day') as g (day)
           left join extract_download d on d.extract_id = e.extract_id and d.day = g.day::date
           where e.open_cohort_id = $1
           group by e.extract_id, g.day
           order by e.extract_id, g.day"#,
        cohort_id,
        SERIES_DAYS
    )
    .fetch_all(&mut *db)
    .await?;
    let days = rows.into_iter().map(|r| {
        (r.extract_id, DownloadDay { day: r.day, downloads: r.downloads, requests: r.requests, bytes: r.bytes })
    });
    Ok(days.collect())
}
