//! The demo's open challenge, published: the chest X-ray cohort (the
//! subjects who consented to open release, uploaded into it) set up as a
//! classification challenge on its radiographs' labels (ground-glass opacity
//! or normal), split 60/20/20 at random stratified by sex, and published as
//! version 1 by Olga the organizer, through the same service functions the
//! API calls. Its build runs on the node's job worker like any release, so
//! right after `serve --demo` anyone (no login) finds it at
//! `GET /api/v1/open-cohorts` and downloads it.

use anyhow::Result;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{Credential, Principal, Role};
use crate::deid::RegistryKey;
use crate::opencohort::curate::{self, Settings, Task};
use crate::opencohort::publish::{self, PublishRequest};
use crate::opencohort::splits::{SplitFractions, SplitSpec, Stratum};

/// The demo's open cohort.
pub const SLUG: &str = "demo-chest-xray-challenge";

/// Publishes the challenge unless a version of it exists; `None` when one
/// did, or when the registry is too small to pass the publication checks.
pub async fn seed(db: &PgPool, key: &RegistryKey) -> Result<Option<Uuid>> {
    let published = sqlx::query_scalar!(
        r#"select exists (select 1 from extract e join cohort c on c.cohort_id = e.open_cohort_id
                          where c.slug = $1) as "e!""#,
        SLUG
    )
    .fetch_one(db)
    .await?;
    if published {
        return Ok(None);
    }
    let olga = Principal { username: "olga".into(), roles: vec![Role::Organizer], credential: Credential::Jwt };
    let settings = Settings {
        agreement: None,
        task: Some(Task::Classification { system: "RadLex".into(), codes: vec!["RID5352".into(), "RID39148".into()] }),
        min_split_size: None,
        fields: vec!["age_at_study".into(), "sex".into()],
        modalities: Vec::new(),
        annotation_kinds: vec!["label".into()],
        imaging: true,
        reveal_at: None,
        daily_submissions: Some(5),
        closes_at: None,
        leaderboard: crate::opencohort::challenge::LeaderboardVisibility::Public,
        positive_class: Some("RID5352".into()),
    };
    let spec = SplitSpec::Random {
        seed: 2026,
        fractions: SplitFractions { train: 0.6, validation: 0.2, test: 0.2 },
        stratify_by: vec![Stratum::Sex],
        age_band_years: 10,
    };
    let mut tx = db.begin().await?;
    curate::configure(&mut tx, &olga, SLUG, &settings).await?;
    curate::split(&mut tx, &olga, SLUG, &spec).await?;
    if !curate::readiness(&mut tx, &olga, SLUG).await?.ready {
        return Ok(None); // too few subjects for the minimum split size: nothing is kept
    }
    let id = publish::publish(&mut tx, key, &olga, SLUG, &PublishRequest::default()).await?;
    tx.commit().await?;
    Ok(Some(id))
}
