//! Storage of sites and cohorts.

use sqlx::{PgConnection, PgExecutor};

use super::{Cohort, Design, Site, Source, Tier};

/// Values of a new cohort.
#[derive(Debug, Clone)]
pub struct NewCohort<'a> {
    pub slug: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub tier: Tier,
    pub design: Design,
    pub source: Source,
    pub license: Option<&'a str>,
    pub citation: Option<&'a str>,
    pub suppression_threshold: i32,
}

pub async fn list_cohorts(db: impl PgExecutor<'_>) -> Result<Vec<Cohort>, sqlx::Error> {
    sqlx::query_as!(
        Cohort,
        r#"select cohort_id as id, slug, title, description, tier as "tier: Tier", design as "design: Design",
                  source as "source: Source", license, citation, suppression_threshold, created_at, updated_at
           from cohort order by slug"#
    )
    .fetch_all(db)
    .await
}

pub async fn get_cohort_by_slug(db: impl PgExecutor<'_>, slug: &str) -> Result<Option<Cohort>, sqlx::Error> {
    sqlx::query_as!(
        Cohort,
        r#"select cohort_id as id, slug, title, description, tier as "tier: Tier", design as "design: Design",
                  source as "source: Source", license, citation, suppression_threshold, created_at, updated_at
           from cohort where slug = $1"#,
        slug
    )
    .fetch_optional(db)
    .await
}

pub async fn insert_cohort(tx: &mut PgConnection, new: &NewCohort<'_>) -> Result<Cohort, sqlx::Error> {
    sqlx::query_as!(
        Cohort,
        r#"insert into cohort (slug, title, description, tier, design, source, license, citation, suppression_threshold)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           returning cohort_id as id, slug, title, description, tier as "tier: Tier", design as "design: Design",
                     source as "source: Source", license, citation, suppression_threshold, created_at, updated_at"#,
        new.slug,
        new.title,
        new.description,
        new.tier as Tier,
        new.design as Design,
        new.source as Source,
        new.license,
        new.citation,
        new.suppression_threshold,
    )
    .fetch_one(tx)
    .await
}

pub async fn list_sites(db: impl PgExecutor<'_>) -> Result<Vec<Site>, sqlx::Error> {
    sqlx::query_as!(Site, "select site_id as id, code, name, country, created_at from site order by code")
        .fetch_all(db)
        .await
}

pub async fn get_site_by_code(db: impl PgExecutor<'_>, code: &str) -> Result<Option<Site>, sqlx::Error> {
    sqlx::query_as!(Site, "select site_id as id, code, name, country, created_at from site where code = $1", code)
        .fetch_optional(db)
        .await
}

pub async fn insert_site(
    tx: &mut PgConnection,
    code: &str,
    name: &str,
    country: Option<&str>,
) -> Result<Site, sqlx::Error> {
    sqlx::query_as!(
        Site,
        "insert into site (code, name, country) values ($1, $2, $3)
         returning site_id as id, code, name, country, created_at",
        code,
        name,
        country
    )
    .fetch_one(tx)
    .await
}
