//! The rules of publications: a project's accepted members notify what they
//! published from its grants; every cohort named must be under an active grant
//! of the project, and a cohort under a publication moratorium (DUO MOR)
//! refuses a publication dated before the moratorium ends; a notice fulfils
//! the project's duty to notify a publication (DUO PUB). Readers of the
//! project see its publications; stewards and admins see every project's.
//!
//! Every function takes the connection or transaction it works in and the
//! caller, and checks the caller itself through [`standing`]: whatever calls
//! it, a REST handler, a page or a job, passes the same rules.

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::consent::{self, Modifier};
use super::duties;
use super::standing::standing;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, Refusal};

/// A publication as notified.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPublication {
    #[schema(max_length = 500)]
    pub title: String,
    /// The DOI, e.g. `10.1038/s41586-020-2649-2` (a DOI or a URL is required).
    #[schema(max_length = 200)]
    pub doi: Option<String>,
    /// Where it can be read (`https://…`).
    #[schema(max_length = 2000)]
    pub url: Option<String>,
    /// Journal, conference or preprint server.
    #[schema(max_length = 300)]
    pub venue: Option<String>,
    /// The day it was (or will be) published: at most a year ahead.
    pub published_on: NaiveDate,
    /// Slugs of the cohorts whose data it used; each granted to the project.
    pub cohorts: Vec<String>,
}

/// A notified publication.
#[derive(Debug, Serialize, ToSchema)]
pub struct Publication {
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

fn check(p: &NewPublication, today: NaiveDate) -> Result<Checked<'_>, String> {
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

/// Refuses a publication of `cohorts` (sorted, without repeats) dated
/// `published_on` unless each cohort is under an active grant of the project
/// and any moratorium of its consent terms has ended by that day. Consent
/// terms that cannot be read refuse it (fail closed).
async fn require_publishable(
    tx: &mut PgConnection,
    project_id: Uuid,
    cohorts: &[String],
    published_on: NaiveDate,
) -> Result<(), ApiError> {
    let granted = sqlx::query!(
        "select c.slug, c.consent_terms from cohort c
         where c.slug = any($2) and exists (
             select 1 from access_grant g where g.project_id = $1 and g.state = 'active' and g.scope -> 'cohorts' ? c.slug)",
        project_id,
        cohorts,
    )
    .fetch_all(&mut *tx)
    .await?;
    if let Some(missing) = cohorts.iter().find(|c| !granted.iter().any(|row| row.slug == **c)) {
        return Err(ApiError::BadRequest(format!("the project never held a grant on the cohort `{missing}`")));
    }
    for row in granted {
        let slug = row.slug;
        let terms = consent::stored(&slug, row.consent_terms)?;
        if let Some(until) = terms.filter(|t| t.modifiers.contains(&Modifier::Mor)).and_then(|t| t.moratorium_until)
            && published_on < until
        {
            return Err(ApiError::Refused {
                code: Refusal::PublicationMoratorium,
                message: format!(
                    "the cohort `{slug}` is under a publication moratorium until {until}; a publication dated \
                     {published_on} comes too early"
                ),
            });
        }
    }
    Ok(())
}

/// Notifies a publication of the project (its accepted members): checked,
/// stored, and the project's open duties to notify a publication of any of its
/// cohorts fulfilled; the stewards are told and the notice audited.
pub async fn notify(
    tx: &mut PgConnection,
    principal: &Principal,
    project_id: Uuid,
    notice: &NewPublication,
) -> Result<Publication, ApiError> {
    standing(&mut *tx, project_id, principal)
        .await?
        .require_member("project", "only the project's members notify its publications")?;
    let checked = check(notice, Utc::now().date_naive()).map_err(ApiError::BadRequest)?;
    let mut cohorts = notice.cohorts.clone();
    cohorts.sort();
    cohorts.dedup();
    require_publishable(tx, project_id, &cohorts, notice.published_on).await?;
    let saved = sqlx::query_as!(
        Publication,
        "insert into publication (project_id, title, doi, url, venue, published_on, cohorts, notified_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         returning publication_id as id, project_id, title, doi, url, venue, published_on, cohorts, notified_by,
                   notified_at",
        project_id,
        checked.title,
        checked.doi,
        checked.url,
        checked.venue,
        notice.published_on,
        &cohorts,
        principal.username,
    )
    .fetch_one(&mut *tx)
    .await?;
    let statement = format!(
        "publication notified: {} ({})",
        saved.title,
        saved.doi.as_deref().or(saved.url.as_deref()).unwrap_or("")
    );
    let fulfilled = sqlx::query_scalar!(
        "update obligation o set fulfilled_at = now(), fulfilled_by = $2, statement = $3
         where o.project_id = $1 and o.kind = 'publication_notice' and o.fulfilled_at is null
           and exists (select 1 from access_grant g where g.grant_id = o.grant_id and g.scope -> 'cohorts' ?| $4)
         returning o.obligation_id",
        project_id,
        principal.username,
        statement,
        &cohorts,
    )
    .fetch_all(&mut *tx)
    .await?;
    duties::notify(
        tx,
        "role:steward",
        "publication.notified",
        &format!("A project notified a publication: {}", saved.title),
        &format!("project:{project_id}"),
    )
    .await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "publication.notify").target(format!("project:{project_id}")).details(
            json!({
                "publication": saved.id, "title": saved.title, "doi": saved.doi, "url": saved.url,
                "published_on": saved.published_on, "cohorts": saved.cohorts, "obligations_fulfilled": fulfilled,
            }),
        ),
    )
    .await?;
    Ok(saved)
}

/// The project's publications, newest notice first (its readers: members,
/// stewards and admins; anyone else is told the project does not exist).
pub async fn of_project(
    conn: &mut PgConnection,
    principal: &Principal,
    project_id: Uuid,
) -> Result<Vec<Publication>, ApiError> {
    standing(&mut *conn, project_id, principal).await?.require_reader("project")?;
    Ok(sqlx::query_as!(
        Publication,
        "select publication_id as id, project_id, title, doi, url, venue, published_on, cohorts, notified_by,
                notified_at
         from publication where project_id = $1 order by notified_at desc",
        project_id,
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Every project's publications, newest notice first (stewards and admins).
pub async fn register(conn: &mut PgConnection, principal: &Principal) -> Result<Vec<Publication>, ApiError> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    Ok(sqlx::query_as!(
        Publication,
        "select publication_id as id, project_id, title, doi, url, venue, published_on, cohorts, notified_by,
                notified_at
         from publication order by notified_at desc",
    )
    .fetch_all(&mut *conn)
    .await?)
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
