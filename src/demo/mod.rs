//! Demo content: users of every role, a few sites and cohorts, so a newcomer
//! sees a working registry. Seeding is idempotent and audited.

pub mod challenge;
pub mod dicom;
pub mod project;
pub mod registry;
pub mod waiting;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use sqlx::PgPool;

use crate::audit::{self, NewEvent};
use crate::auth::api_tokens::upsert_user;
use crate::auth::{Authenticator, Role};
use crate::config::Config;
use crate::ingest::Ingestor;
use crate::registry::{Design, Source, Tier};

/// A demo person.
pub struct DemoUser {
    pub username: &'static str,
    pub display_name: &'static str,
    pub role: Role,
    /// The shell variable `data/demo-tokens.env` gives the token.
    pub variable: &'static str,
}

/// Two stewards, because a controlled-tier application needs two approving votes.
pub const USERS: &[DemoUser] = &[
    DemoUser { username: "alice", display_name: "Alice Admin", role: Role::Admin, variable: "ADMIN" },
    DemoUser { username: "sam", display_name: "Sam Steward", role: Role::Steward, variable: "STEWARD" },
    DemoUser { username: "stella", display_name: "Stella Steward", role: Role::Steward, variable: "STEWARD2" },
    DemoUser { username: "olga", display_name: "Olga Organizer", role: Role::Organizer, variable: "ORGANIZER" },
    DemoUser { username: "ulrich", display_name: "Ulrich Uploader", role: Role::Uploader, variable: "UPLOADER" },
    DemoUser { username: "rita", display_name: "Rita Researcher", role: Role::Researcher, variable: "RESEARCHER" },
];

/// The access fee of the controlled tier set at the first seed, in cents, so
/// the approval flow shows a fee to settle.
const DEMO_CONTROLLED_FEE: i64 = 50_000;

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
    citation: Option<&'static str>,
}

const COHORTS: &[DemoCohort] = &[
    DemoCohort {
        slug: "demo-neuro-mri",
        title: "Neuro MRI registry (demo)",
        description: "Brain MRI with clinical variables from three sites; access by committee approval.",
        tier: Tier::Controlled,
        source: Source::Registry,
        license: None,
        citation: None,
    },
    DemoCohort {
        slug: "demo-chest-xray-challenge",
        title: "Chest X-ray challenge (demo)",
        description: "An open cohort with train/test splits for a classification challenge.",
        tier: Tier::Open,
        source: Source::Challenge,
        license: Some("CC-BY-4.0"),
        citation: Some("Custodian demo registry. Chest X-ray challenge cohort (synthetic data), 2026."),
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
            "insert into cohort (slug, title, description, tier, design, source, license, citation)
             values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (slug) do nothing",
            cohort.slug,
            cohort.title,
            cohort.description,
            cohort.tier as Tier,
            Design::Retrospective as Design,
            cohort.source as Source,
            cohort.license,
            cohort.citation,
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
        ("stella", "Stella Steward", "Registry office (demo)", "Data steward", None),
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
    let first = created.iter().any(|c| c == "user:alice");
    created.extend(seed_governance(&mut tx, first).await?);
    if !created.is_empty() {
        audit::record(&mut tx, NewEvent::new("system:demo", "demo.seed").details(json!({ "created": created })))
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Everything `serve --demo` seeds, whatever is missing: [`seed`]; on a
/// registry without one, a synthetic registry of `subjects` subjects from
/// `seed`, its imaging sent through `ingest` like any upload; and the approved
/// project ([`project`]). Returns what was generated, when anything was.
/// `serve --demo` then publishes the challenge ([`challenge`]) and seeds
/// what waits for people ([`waiting`]).
pub async fn seed_all(
    ingest: &Arc<Ingestor>,
    config: &Config,
    subjects: u32,
    seed: u64,
) -> Result<Option<registry::Generated>> {
    self::seed(&ingest.db).await?;
    let fresh = !registry::exists(&mut *ingest.db.acquire().await?).await?;
    let made = if fresh {
        let imaging = registry::Imaging::Ingest(ingest);
        Some(registry::generate(&ingest.db, &ingest.key, ingest.max_shift_days, subjects, seed, imaging).await?)
    } else {
        None
    };
    project::seed(&ingest.db, config, &ingest.key).await?;
    Ok(made)
}

/// What the approval flow needs to show every step: consent terms on the
/// controlled cohort (so the application check has something to explain), the
/// open cohort's unrestricted terms, and, at the first seed (`first`), an
/// access fee for the controlled tier. Terms are set only where none are on
/// record, so a steward's later choice is never overwritten.
async fn seed_governance(tx: &mut sqlx::PgConnection, first: bool) -> Result<Vec<String>> {
    let mut created = Vec::new();
    for (slug, terms) in [
        ("demo-neuro-mri", json!({"permission": "HMB", "modifiers": ["NCU", "IRB", "PUB"]})),
        ("demo-chest-xray-challenge", json!({"permission": "NRES", "open_release": true})),
    ] {
        let set =
            sqlx::query!("update cohort set consent_terms = $2 where slug = $1 and consent_terms is null", slug, terms)
                .execute(&mut *tx)
                .await?;
        if set.rows_affected() == 1 {
            created.push(format!("consent:{slug}"));
        }
    }
    if first {
        sqlx::query!(
            "update fee_schedule set access_fee = $1, updated_at = now() where tier = 'controlled' and access_fee = 0",
            DEMO_CONTROLLED_FEE
        )
        .execute(&mut *tx)
        .await?;
        created.push("fee:controlled".to_owned());
    }
    Ok(created)
}

/// Bearer tokens for the demo users, valid for `ttl`.
pub fn tokens(auth: &Authenticator, ttl: Duration) -> Result<Vec<(&'static DemoUser, String)>> {
    USERS.iter().map(|u| Ok((u, auth.issue(u.username, &[u.role], ttl)?))).collect()
}
