//! Demo content: users of every role, a few sites and cohorts, so a newcomer
//! sees a working registry. Seeding is idempotent and audited.

pub mod registry;

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use sqlx::PgPool;

use crate::audit::{self, NewEvent};
use crate::auth::api_tokens::upsert_user;
use crate::auth::{Authenticator, Role};
use crate::registry::{Design, Source, Tier};

/// A demo person.
pub struct DemoUser {
    pub username: &'static str,
    pub display_name: &'static str,
    pub role: Role,
}

pub const USERS: &[DemoUser] = &[
    DemoUser { username: "alice", display_name: "Alice Admin", role: Role::Admin },
    DemoUser { username: "sam", display_name: "Sam Steward", role: Role::Steward },
    DemoUser { username: "olga", display_name: "Olga Organizer", role: Role::Organizer },
    DemoUser { username: "ulrich", display_name: "Ulrich Uploader", role: Role::Uploader },
    DemoUser { username: "rita", display_name: "Rita Researcher", role: Role::Researcher },
];

const SITES: &[(&str, &str, &str)] = &[
    ("uhb", "University Hospital B (demo)", "DE"),
    ("cmc", "City Medical Centre (demo)", "NL"),
    ("rih", "Regional Imaging Hub (demo)", "FR"),
];

struct DemoCohort {
    slug: &'static str,
    title: &'static str,
    description: &'static str,
    tier: Tier,
    source: Source,
    license: Option<&'static str>,
}

const COHORTS: &[DemoCohort] = &[
    DemoCohort {
        slug: "demo-neuro-mri",
        title: "Neuro MRI registry (demo)",
        description: "Brain MRI with clinical variables from three sites; access by committee approval.",
        tier: Tier::Controlled,
        source: Source::Registry,
        license: None,
    },
    DemoCohort {
        slug: "demo-chest-xray-challenge",
        title: "Chest X-ray challenge (demo)",
        description: "An open cohort with train/test splits for a classification challenge.",
        tier: Tier::Open,
        source: Source::Challenge,
        license: Some("CC-BY-4.0"),
    },
];

/// Creates whatever demo content is missing.
pub async fn seed(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    let mut created = Vec::new();
    for user in USERS {
        let exists =
            sqlx::query_scalar!("select exists (select 1 from app_user where username = $1) as \"e!\"", user.username)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            upsert_user(&mut *tx, user.username, &[user.role]).await?;
            sqlx::query!("update app_user set display_name = $2 where username = $1", user.username, user.display_name)
                .execute(&mut *tx)
                .await?;
            created.push(format!("user:{}", user.username));
        }
    }
    for (code, name, country) in SITES {
        let inserted = sqlx::query!(
            "insert into site (code, name, country) values ($1, $2, $3) on conflict (code) do nothing",
            code,
            name,
            country
        )
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            created.push(format!("site:{code}"));
        }
    }
    for cohort in COHORTS {
        let inserted = sqlx::query!(
            "insert into cohort (slug, title, description, tier, design, source, license)
             values ($1, $2, $3, $4, $5, $6, $7) on conflict (slug) do nothing",
            cohort.slug,
            cohort.title,
            cohort.description,
            cohort.tier as Tier,
            Design::Retrospective as Design,
            cohort.source as Source,
            cohort.license,
        )
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            created.push(format!("cohort:{}", cohort.slug));
        }
    }
    // Profiles for the researcher and the steward: Rita's bona fides verified by
    // Sam, so the demo researcher can apply and reach data, and Sam can review.
    for (username, name, institution, position, verified_by) in [
        ("rita", "Rita Researcher", "University of Bologna (demo)", "Associate professor", Some("sam")),
        ("sam", "Sam Steward", "Registry office (demo)", "Data steward", None),
    ] {
        let inserted = sqlx::query!(
            "insert into researcher_profile (username, name, institution, email, position, verified_at, verified_by)
             values ($1, $2, $3, $1 || '@example.org', $4, case when $5::text is null then null else now() end, $5)
             on conflict (username) do nothing",
            username,
            name,
            institution,
            position,
            verified_by
        )
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            created.push(format!("profile:{username}"));
        }
    }
    if !created.is_empty() {
        audit::record(&mut tx, NewEvent::new("system:demo", "demo.seed").details(json!({ "created": created })))
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Bearer tokens for the demo users, valid for `ttl`.
pub fn tokens(auth: &Authenticator, ttl: Duration) -> Result<Vec<(&'static DemoUser, String)>> {
    USERS.iter().map(|u| Ok((u, auth.issue(u.username, &[u.role], ttl)?))).collect()
}
