//! Publications over REST: a project's members notify what they published
//! from its grants; a cohort under a publication moratorium (DUO MOR) refuses
//! one dated before the moratorium ends; a notice fulfils the project's duty
//! to notify a publication (DUO PUB). Stewards see every project's register.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath};
use crate::access::consent::{ConsentTerms, Modifier};
use crate::access::duties;
use crate::access::standing::InProject;
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(project_publications, notify_publication)).routes(routes!(all_publications))
}

/// A publication as notified.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPublication {
    pub title: String,
    /// The DOI, e.g. `10.1038/s41586-020-2649-2` (a DOI or a URL is required).
    pub doi: Option<String>,
    /// Where it can be read (`https://…`).
    pub url: Option<String>,
    /// Journal, conference or preprint server.
    pub venue: Option<String>,
    /// The day it was (or will be) published: at most a year ahead.
    pub published_on: NaiveDate,
    /// Slugs of the cohorts whose data it used; each granted to the project.
    pub cohorts: Vec<String>,
}

/// A notified publication.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Publication {
    #[sqlx(rename = "publication_id")]
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub doi: Option<String>,
    pub url: Option<String>,
    pub venue: Option<String>,
    pub published_on: NaiveDate,
    pub cohorts: Vec<String>,
    pub notified_by: String,
    pub notified_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "publication_id, project_id, title, doi, url, venue, published_on, cohorts, notified_by, notified_at";

/// A checked notice: trimmed text, the problem otherwise.
struct Checked<'a> {
    title: &'a str,
    doi: Option<&'a str>,
    url: Option<&'a str>,
    venue: Option<&'a str>,
}

fn blank_to_none(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn check(p: &NewPublication, today: NaiveDate) -> std::result::Result<Checked<'_>, String> {
    let title = p.title.trim();
    if title.is_empty() || title.chars().count() > 500 {
        return Err("`title` is 1 to 500 characters".into());
    }
    let (doi, url, venue) =
        (blank_to_none(p.doi.as_deref()), blank_to_none(p.url.as_deref()), blank_to_none(p.venue.as_deref()));
    if doi.is_none() && url.is_none() {
        return Err("give the publication's `doi` or `url`".into());
    }
    if let Some(doi) = doi
        && !valid_doi(doi)
    {
        return Err("`doi` is a DOI such as 10.1038/s41586-020-2649-2 (without https://doi.org/)".into());
    }
    if let Some(url) = url
        && (!(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2000 || url.contains(' '))
    {
        return Err("`url` is an http(s) address of up to 2,000 characters".into());
    }
    if venue.is_some_and(|v| v.chars().count() > 300) {
        return Err("`venue` is at most 300 characters".into());
    }
    if p.published_on > today.checked_add_days(Days::new(366)).unwrap_or(today) {
        return Err("`published_on` is at most a year ahead".into());
    }
    if p.cohorts.is_empty() {
        return Err("`cohorts` names at least one cohort whose data the publication used".into());
    }
    Ok(Checked { title, doi, url, venue })
}

/// `10.<4 to 9 digits>/<suffix without spaces>`.
fn valid_doi(doi: &str) -> bool {
    let Some(rest) = doi.strip_prefix("10.") else { return false };
    let Some((registrant, suffix)) = rest.split_once('/') else { return false };
    (4..=9).contains(&registrant.len())
        && registrant.bytes().all(|b| b.is_ascii_digit())
        && !suffix.is_empty()
        && suffix.len() <= 200
        && !suffix.chars().any(char::is_whitespace)
}

/// Notify a publication (accepted members of the project).
#[utoipa::path(
    post,
    path = "/projects/{id}/publications",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    request_body = NewPublication,
    responses(
        (status = 201, description = "Notified; a duty to notify it is fulfilled", body = Publication),
        (status = 403, description = "Not a member, or `publication-moratorium`", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn notify_publication(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<NewPublication>,
) -> Result<(StatusCode, AppJson<Publication>)> {
    crate::access::standing::standing(&state.db, id, &principal)
        .await?
        .require_member("project", "only the project's members notify its publications")?;
    let checked = check(&request, Utc::now().date_naive()).map_err(ApiError::BadRequest)?;
    let mut cohorts = request.cohorts.clone();
    cohorts.sort();
    cohorts.dedup();
    // Each cohort must have been granted to the project, and its moratorium over by the publication date.
    let granted: Vec<(String, Option<serde_json::Value>)> = sqlx::query_as(
        "select c.slug, c.consent_terms from cohort c
         where c.slug = any($2) and exists (
             select 1 from access_grant g where g.project_id = $1 and g.state = 'active' and g.scope -> 'cohorts' ? c.slug)",
    )
    .bind(id)
    .bind(&cohorts)
    .fetch_all(&state.db)
    .await?;
    if let Some(missing) = cohorts.iter().find(|c| !granted.iter().any(|(slug, _)| slug == *c)) {
        return Err(ApiError::BadRequest(format!("the project never held a grant on the cohort `{missing}`")));
    }
    for (slug, terms) in &granted {
        let terms: Option<ConsentTerms> = crate::access::consent::stored(slug, terms.clone())?;
        if let Some(until) = terms.filter(|t| t.modifiers.contains(&Modifier::Mor)).and_then(|t| t.moratorium_until)
            && request.published_on < until
        {
            return Err(ApiError::Refused {
                code: crate::error::Refusal::PublicationMoratorium,
                message: format!(
                    "the cohort `{slug}` is under a publication moratorium until {until}; a publication dated {} \
                     comes too early",
                    request.published_on
                ),
            });
        }
    }
    let mut tx = state.db.begin().await?;
    let saved: Publication = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into publication (project_id, title, doi, url, venue, published_on, cohorts, notified_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8) returning {COLUMNS}"
    )))
    .bind(id)
    .bind(checked.title)
    .bind(checked.doi)
    .bind(checked.url)
    .bind(checked.venue)
    .bind(request.published_on)
    .bind(&cohorts)
    .bind(&principal.username)
    .fetch_one(&mut *tx)
    .await?;
    let fulfilled: Vec<Uuid> = sqlx::query_scalar(
        "update obligation o set fulfilled_at = now(), fulfilled_by = $2, statement = $3
         where o.project_id = $1 and o.kind = 'publication_notice' and o.fulfilled_at is null
           and exists (select 1 from access_grant g where g.grant_id = o.grant_id and g.scope -> 'cohorts' ?| $4)
         returning o.obligation_id",
    )
    .bind(id)
    .bind(&principal.username)
    .bind(format!(
        "publication notified: {} ({})",
        saved.title,
        saved.doi.as_deref().or(saved.url.as_deref()).unwrap_or("")
    ))
    .bind(&cohorts)
    .fetch_all(&mut *tx)
    .await?;
    duties::notify(
        &mut tx,
        "role:steward",
        "publication.notified",
        &format!("A project notified a publication: {}", saved.title),
        &format!("project:{id}"),
    )
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "publication.notify").target(format!("project:{id}")).details(json!({
            "publication": saved.id, "title": saved.title, "doi": saved.doi, "url": saved.url,
            "published_on": saved.published_on, "cohorts": saved.cohorts, "obligations_fulfilled": fulfilled,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(saved)))
}

/// A project's publications, newest notice first (members and stewards).
#[utoipa::path(
    get,
    path = "/projects/{id}/publications",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project's publications", body = [Publication]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn project_publications(
    State(state): State<AppState>,
    caller: InProject,
) -> Result<AppJson<Vec<Publication>>> {
    caller.standing.require_reader("project")?;
    let id = caller.project_id;
    Ok(AppJson(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from publication where project_id = $1 order by notified_at desc"
        )))
        .bind(id)
        .fetch_all(&state.db)
        .await?,
    ))
}

/// Every project's publications, newest notice first (stewards and admins).
#[utoipa::path(
    get,
    path = "/publications",
    tag = tags::GRANTS,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The register of publications", body = [Publication]),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn all_publications(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<AppJson<Vec<Publication>>> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    Ok(AppJson(
        sqlx::query_as(sqlx::AssertSqlSafe(format!("select {COLUMNS} from publication order by notified_at desc")))
            .fetch_all(&state.db)
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(doi: Option<&str>, url: Option<&str>) -> NewPublication {
        NewPublication {
            title: " Glioma growth under radiotherapy ".into(),
            doi: doi.map(str::to_owned),
            url: url.map(str::to_owned),
            venue: Some("Nature Medicine".into()),
            published_on: NaiveDate::from_ymd_opt(2026, 6, 1).unwrap(),
            cohorts: vec!["brain-mri".into()],
        }
    }

    #[test]
    fn a_notice_needs_a_title_a_real_doi_or_url_and_a_date_at_most_a_year_ahead() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let ok = notice(Some("10.1038/s41586-020-2649-2"), None);
        assert_eq!(check(&ok, today).unwrap().title, "Glioma growth under radiotherapy");
        assert!(check(&notice(None, Some("https://arxiv.org/abs/2401.00001")), today).is_ok());
        for (doi, url, why) in [
            (None, None, "doi"),
            (Some("https://doi.org/10.1038/x"), None, "DOI"),
            (Some("10.12/abc"), None, "DOI"),
            (Some("10.1038/"), None, "DOI"),
            (None, Some("ftp://example.org/paper"), "url"),
        ] {
            let message = check(&notice(doi, url), today).err().unwrap();
            assert!(message.contains(why), "{doi:?} {url:?}: {message}");
        }
        let mut late = ok;
        late.published_on = NaiveDate::from_ymd_opt(2028, 1, 1).unwrap();
        assert!(check(&late, today).err().unwrap().contains("a year ahead"));
        let mut none = notice(Some("10.1038/s41586-020-2649-2"), None);
        none.cohorts.clear();
        assert!(check(&none, today).err().unwrap().contains("cohorts"));
    }
}
