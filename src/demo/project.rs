//! The demo's approved project: Rita's, on the neuro cohort, taken through the
//! whole approval path by the same service functions the API calls
//! (application, submission, review, both stewards' declarations and votes,
//! the fee's waiver, the agreement), so that right after `serve --demo` a
//! researcher holds a grant in force and can list its subjects.

use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::review::{Ballot, VoteKind};
use crate::access::{applications, dua, duties, projects, review};
use crate::auth::{Credential, Principal, Role};
use crate::config::Config;
use crate::deid::RegistryKey;

/// The title of the demo's approved project.
pub const TITLE: &str = "Brain ageing and glucose metabolism (demo)";

fn principal(username: &str, role: Role) -> Principal {
    Principal { username: username.to_owned(), roles: vec![role], credential: Credential::Jwt }
}

/// The demo's approved project, when it exists with a grant in force.
pub async fn find(db: &PgPool) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar!(
        "select p.project_id from project p
         where p.title = $1 and p.pi_username = 'rita'
           and exists (select 1 from application a where a.project_id = p.project_id and a.state = 'active')
         order by p.created_at limit 1",
        TITLE
    )
    .fetch_optional(db)
    .await?)
}

/// Creates `content` as an application of `project` and submits it as
/// `pi`; returns its id and the transaction of the submission, still open.
pub(super) async fn submit(
    db: &PgPool,
    config: &Config,
    key: &RegistryKey,
    pi: &Principal,
    project: Uuid,
    content: &crate::access::db::ApplicationContent,
) -> Result<(Uuid, sqlx::Transaction<'static, sqlx::Postgres>)> {
    let mut tx = db.begin().await?;
    let id = applications::create(&mut tx, pi, project, content).await?.application.id;
    tx.commit().await?;
    let index = Arc::new(crate::discovery::memory::Index::disabled());
    let checked = applications::check_submission(db, &index, config, pi, id).await?;
    let mut tx = db.begin().await?;
    applications::submit(&mut tx, pi, &config.access, key, checked).await?;
    Ok((id, tx))
}

/// Creates the approved project unless it exists; `None` when it did. Needs
/// the generated registry, so that its grant's snapshot holds the cohort's
/// subjects. A run cut short leaves at most a project without an active
/// application, which the next run passes over.
pub async fn seed(db: &PgPool, config: &Config, key: &RegistryKey) -> Result<Option<Uuid>> {
    if find(db).await?.is_some() || !super::registry::exists(&mut *db.acquire().await?).await? {
        return Ok(None);
    }
    let (rita, sam, stella) =
        (principal("rita", Role::Researcher), principal("sam", Role::Steward), principal("stella", Role::Steward));
    let project = projects::create_project(db, &rita, TITLE).await?.id;
    let content = serde_json::from_value(json!({
        "title": "Brain ageing and glucose metabolism",
        "lay_summary": "We study whether high blood sugar is linked to faster brain ageing.",
        "rationale": "Brain MRI with glucose and HbA1c of the same patients is rare; this registry holds both.",
        "methods": "Brain age from T1 MRI with a pretrained model, then regression on HbA1c adjusted for age and sex.",
        "scope": {
            "cohorts": ["demo-neuro-mri"],
            "fields": ["age_at_study", "sex", "glucose", "hba1c"],
            "modalities": ["MR"],
            "annotation_kinds": ["label"],
            "imaging": true
        },
        "intended_use": {
            "purpose": "HMB", "duration_months": 24, "ethics_approval": "REC 25/EM/0042",
            "processing_countries": ["IT"]
        },
        "data_security": "University HPC, ISO 27001 certified; data never leave it.",
        "public_interest": "Earlier detection of diabetes-related cognitive decline."
    }))
    .context("the demo application")?;
    let (id, mut tx) = submit(db, config, key, &rita, project, &content).await?;
    review::start(&mut tx, &sam, &config.access, id).await?;
    review::assign(&mut tx, &sam, &config.access, id, "stella").await?;
    for steward in [&sam, &stella] {
        review::declare(&mut tx, steward, id, false, "no competing interests").await?;
        let ballot = Ballot { vote: VoteKind::Approve, conditions: None, comment: None };
        review::vote(&mut tx, steward, &config.access, key, id, ballot).await?;
    }
    for fee in duties::fees(&mut *tx, id).await? {
        if fee.settlement.is_none() {
            duties::settle(&mut tx, &sam, fee.id, "waived", "demo project").await?;
        }
    }
    let agreement = dua::current(&mut *tx).await?;
    applications::activate(&mut tx, &rita, id, &agreement.version, None).await?;
    tx.commit().await?;
    Ok(Some(project))
}
