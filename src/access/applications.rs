//! The rules of data-access applications: who may read and act on them, what
//! a draft needs before it is submitted (completeness, consent, feasibility),
//! and what each step writes (versions, transitions, notices, the audit, and
//! on activation the grant's next version and its duties).
//!
//! Every function takes the connection or transaction it works in and the
//! caller, and answers with domain types or an [`ApiError`]; the HTTP
//! handlers only open the transaction, call one of these and commit. The
//! project-role guard is [`standing`]: readers (members, stewards) see an
//! application, only the project's PI acts on it, and anyone else is told it
//! does not exist.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::consent::{self, ConsentTerms, Rule, Verdict};
use super::db::{self, ApplicationContent, ApplicationRow, Transition, Version};
use super::grants::{self, Conditions, GrantState, NewVersion};
use super::review;
use super::standing::{Standing, standing};
use super::state::{self, Action, Actor, State};
use super::{dua, duties};
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::config::{AccessConfig, Config};
use crate::deid::pseudonym::RegistryKey;
use crate::dictionary::Dictionary;
use crate::discovery::{self, Caller, Counts};
use crate::error::{ApiError, Problem, Refusal};
use crate::registry::Tier;

/// What a reader who is not the PI is told when acting on an application.
const PI_ONLY: &str = "only the project's PI acts on its applications";

pub use super::projects::is_steward;

/// Only the project's PI acts; a reader who is not is refused, and anyone who
/// may not read `thing` (an invitee included) is told it does not exist.
fn require_pi(standing: Standing, thing: &'static str) -> Result<(), ApiError> {
    standing.require_reader(thing)?;
    standing.require_pi(thing, PI_ONLY)
}

/// The application if the caller may see it: a member of its project or a
/// steward. For anyone else it does not exist.
pub async fn visible(db: &mut PgConnection, principal: &Principal, id: Uuid) -> Result<ApplicationRow, ApiError> {
    let app = db::get(&mut *db, id).await?.ok_or(ApiError::NotFound("application"))?;
    standing(&mut *db, app.project_id, principal).await?.require_reader("application")?;
    Ok(app)
}

/// The application locked in `tx`, if the caller is its project's PI.
async fn locked_for_pi(tx: &mut PgConnection, principal: &Principal, id: Uuid) -> Result<ApplicationRow, ApiError> {
    let app = db::lock(&mut *tx, id).await?.ok_or(ApiError::NotFound("application"))?;
    require_pi(standing(&mut *tx, app.project_id, principal).await?, "application")?;
    Ok(app)
}

/// An application as its readers see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Application {
    #[serde(flatten)]
    pub application: ApplicationRow,
    /// Every state change with its actor and reason.
    pub history: Vec<Transition>,
}

async fn full(db: &mut PgConnection, application: ApplicationRow) -> Result<Application, ApiError> {
    let history = db::transitions(&mut *db, application.id).await?;
    Ok(Application { application, history })
}

/// The application as stored now (in `db`, after a change).
async fn reload(db: &mut PgConnection, id: Uuid) -> Result<Application, ApiError> {
    let app = db::get(&mut *db, id).await?.ok_or(ApiError::NotFound("application"))?;
    full(db, app).await
}

/// A project's applications, newest first (its readers).
pub async fn list(db: &mut PgConnection, standing: Standing, project_id: Uuid) -> Result<Vec<Application>, ApiError> {
    standing.require_reader("project")?;
    let mut applications = Vec::new();
    for app in db::of_project(&mut *db, project_id).await? {
        applications.push(full(db, app).await?);
    }
    Ok(applications)
}

/// One application with its history (its readers).
pub async fn get(db: &mut PgConnection, principal: &Principal, id: Uuid) -> Result<Application, ApiError> {
    let app = visible(db, principal, id).await?;
    full(db, app).await
}

/// Starts an application of a project (its PI), as a draft.
pub async fn create(
    tx: &mut PgConnection,
    principal: &Principal,
    project_id: Uuid,
    content: &ApplicationContent,
) -> Result<Application, ApiError> {
    // An invitee sees the project, not its applications.
    require_pi(standing(&mut *tx, project_id, principal).await?, "project")?;
    super::projects::ensure_open(tx, project_id).await?;
    let id = db::create(tx, project_id, &principal.username, content).await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "application.create")
            .target(format!("application:{id}"))
            .details(json!({ "project": project_id, "cohorts": content.scope.cohorts })),
    )
    .await?;
    reload(tx, id).await
}

/// Replaces the draft (the PI, while a draft or after changes were requested).
pub async fn update(
    tx: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    content: &ApplicationContent,
) -> Result<Application, ApiError> {
    let app = locked_for_pi(tx, principal, id).await?;
    if !app.state.editable() {
        return Err(ApiError::Refused {
            code: Refusal::InvalidTransition,
            message: format!(
                "an application that is {} cannot be edited; only drafts and applications with changes requested can",
                app.state.as_str().replace('_', " ")
            ),
        });
    }
    let changed = db::changed_fields(&app.draft, content);
    db::replace_draft(tx, id, content).await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "application.edit")
            .target(format!("application:{id}"))
            .details(json!({ "changed": changed })),
    )
    .await?;
    reload(tx, id).await
}

/// One submitted version whole (its readers).
pub async fn version(
    db: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    version: i32,
) -> Result<Version, ApiError> {
    visible(db, principal, id).await?;
    let found = db::versions(&mut *db, id).await?.into_iter().find(|v| v.version == version);
    found.ok_or(ApiError::NotFound("version"))
}

/// What changed between two submitted versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionDiff {
    pub from: i32,
    pub to: i32,
    /// Field by field, with the values on each side.
    pub changes: Vec<db::Change>,
}

/// Compares two submitted versions field by field (its readers): `to`
/// defaults to the latest, `from` to the one before `to` (0: nothing, so
/// every field of `to` is new).
pub async fn diff(
    db: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    from: Option<i32>,
    to: Option<i32>,
) -> Result<VersionDiff, ApiError> {
    visible(db, principal, id).await?;
    let versions = db::versions(&mut *db, id).await?;
    let latest = versions.last().map_or(0, |v| v.version);
    if latest == 0 {
        return Err(ApiError::BadRequest("the application has no submitted version yet".into()));
    }
    let to = to.unwrap_or(latest);
    let from = from.unwrap_or(to - 1);
    if from < 0 || from >= to {
        return Err(ApiError::BadRequest(format!("`from` ({from}) is 0 or more and comes before `to` ({to})")));
    }
    let find = |n: i32| {
        versions
            .iter()
            .find(|v| v.version == n)
            .ok_or_else(|| ApiError::BadRequest(format!("no version {n}: versions are 1 to {latest}")))
    };
    let before = if from == 0 { None } else { Some(&find(from)?.content) };
    let after = find(to)?;
    Ok(VersionDiff { from, to, changes: db::diff(before, &after.content) })
}

/// The consent check and feasibility of one requested cohort.
#[derive(Debug, Serialize, ToSchema)]
pub struct CohortCheck {
    pub cohort: String,
    pub tier: Tier,
    /// The cohort's consent terms (absent: none on record; the committee decides).
    pub terms: Option<ConsentTerms>,
    pub verdict: Verdict,
    /// Every rule that took part, explained.
    pub rules: Vec<Rule>,
    /// Whether the application justifies a use the terms do not permit.
    pub justified: bool,
    /// Subjects, studies, series and instances of the cohort in the requested
    /// modalities, under the caller's disclosure control (absent when the
    /// discovery budget is used up).
    pub feasibility: Option<Counts>,
}

/// What stands between a draft and its submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub cohorts: Vec<CohortCheck>,
    /// Everything that blocks submission, each at its JSON Pointer in the content.
    pub problems: Vec<Problem>,
    pub can_submit: bool,
    /// Whether submission would be approved at once by the cohorts' auto-eligibility rule.
    pub auto_approval: bool,
}

fn problem(path: &str, code: &'static str, message: impl Into<String>) -> Problem {
    Problem { row: None, column: None, path: Some(path.to_owned()), code, message: message.into() }
}

/// What a draft lacks: required texts, a valid intended use, known fields, categories and annotation kinds.
fn completeness(content: &ApplicationContent, dictionary: &Dictionary) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (path, text) in [
        ("/title", &content.title),
        ("/lay_summary", &content.lay_summary),
        ("/rationale", &content.rationale),
        ("/methods", &content.methods),
        ("/data_security", &content.data_security),
        ("/public_interest", &content.public_interest),
    ] {
        if text.trim().is_empty() {
            problems.push(problem(path, "missing", format!("`{}` is required to submit", &path[1..])));
        } else if text.chars().count() > 20_000 {
            problems.push(problem(path, "too-long", "at most 20,000 characters"));
        }
    }
    for (field, message) in content.intended_use.validate() {
        problems.push(problem(&format!("/intended_use/{field}"), "invalid-intended-use", message));
    }
    let scope = &content.scope;
    if scope.cohorts.is_empty() {
        problems.push(problem("/scope/cohorts", "missing", "name at least one cohort"));
    }
    for (i, field) in scope.fields.iter().enumerate() {
        if dictionary.get(field).is_none() {
            problems.push(problem(
                &format!("/scope/fields/{i}"),
                "unknown-field",
                format!("`{field}` is not a field of the data dictionary"),
            ));
        }
    }
    let categories: BTreeSet<&str> = dictionary.fields().iter().map(|f| f.category.as_str()).collect();
    for (i, category) in scope.categories.iter().enumerate() {
        if !categories.contains(category.as_str()) {
            problems.push(problem(
                &format!("/scope/categories/{i}"),
                "unknown-category",
                format!("`{category}` is not a category of the data dictionary"),
            ));
        }
    }
    for (i, kind) in scope.annotation_kinds.iter().enumerate() {
        if crate::vocabulary::AnnotationKind::parse(kind).is_none() {
            problems.push(problem(
                &format!("/scope/annotation_kinds/{i}"),
                "invalid-criteria",
                "an annotation kind is segmentation, contour, landmark, box or label",
            ));
        }
    }
    problems
}

/// Checks a draft: completeness, known cohorts, consent terms and feasibility per cohort.
///
/// It works on the pool, not in a transaction: feasibility counts are the
/// caller's discovery queries, which spend their budget and commit on their own.
pub async fn check(
    db: &PgPool,
    index: &Arc<discovery::memory::Index>,
    config: &Config,
    principal: &Principal,
    content: &ApplicationContent,
) -> Result<CheckResult, ApiError> {
    check_of(db, index, config, principal, &principal.username, content).await
}

/// [`check`] of a draft whose PI is `pi`: the bona fides checked are the
/// PI's, whoever asks (a steward reviewing it included).
async fn check_of(
    db: &PgPool,
    index: &Arc<discovery::memory::Index>,
    config: &Config,
    principal: &Principal,
    pi: &str,
    content: &ApplicationContent,
) -> Result<CheckResult, ApiError> {
    let dictionary = crate::dictionary::db::dictionary(db).await?;
    let mut problems = completeness(content, &dictionary);
    if config.access.require_verified_profiles && !db::profile_verified(db, pi).await? {
        problems.push(problem(
            "/pi",
            "unverified-profile",
            "the PI's bona fides are not verified yet: a steward verifies the profile before the application is \
             submitted",
        ));
    }
    let scope = &content.scope;
    let today = Utc::now().date_naive();
    let caller = Caller::new(&principal.username, is_steward(principal), &config.discovery);
    let mut cohorts = Vec::new();
    for (i, slug) in scope.cohorts.iter().enumerate() {
        let Some((tier, terms)) = db::cohort_terms(db, slug).await? else {
            problems.push(problem(&format!("/scope/cohorts/{i}"), "unknown-cohort", format!("no cohort `{slug}`")));
            continue;
        };
        // Terms that cannot be read refuse the check rather than count as none.
        let terms: Option<ConsentTerms> = consent::stored(slug, terms)?;
        let (verdict, rules) = match &terms {
            Some(terms) => {
                let c = consent::check(terms, &content.intended_use, today);
                (c.verdict, c.rules)
            }
            None => (
                Verdict::PermittedWithConditions,
                vec![Rule {
                    code: "TERMS",
                    outcome: consent::Outcome::Condition,
                    explanation: "This cohort has no consent terms on record, so the committee decides whether the \
                                  stated use fits the participants' consent."
                        .into(),
                }],
            ),
        };
        let justified = content.justifications.get(slug).is_some_and(|j| !j.trim().is_empty());
        if verdict == Verdict::NotPermitted && !justified {
            problems.push(problem(
                &format!("/justifications/{slug}"),
                "consent-mismatch",
                format!(
                    "the consent terms of `{slug}` do not permit the stated use (see its rules); change the use or \
                     justify it for the committee"
                ),
            ));
        }
        let mut criteria = vec![json!({"field": "cohort", "in": [slug]})];
        if !scope.modalities.is_empty() {
            criteria.push(json!({"field": "modality", "in": scope.modalities}));
        }
        let criteria = json!({ "and": criteria });
        let feasibility = match discovery::prepare(db, Some(&criteria)).await {
            Ok(query) => match discovery::count(db, index, &caller, &query).await {
                Ok(result) => Some(result.counts),
                Err(ApiError::Refused { .. } | ApiError::TooManyRequests { .. }) => None,
                Err(e) => return Err(e),
            },
            // Criteria the scope cannot express give no feasibility; anything
            // else (the database) fails the check rather than hiding in it.
            Err(ApiError::Invalid { .. }) => None,
            Err(e) => return Err(e),
        };
        cohorts.push(CohortCheck { cohort: slug.clone(), tier, terms, verdict, rules, justified, feasibility });
    }
    let auto_rule = db::auto_eligible(db, &scope.cohorts).await?;
    let auto_approval = problems.is_empty()
        && !cohorts.is_empty()
        && auto_rule
        && cohorts.iter().all(|c| c.verdict == Verdict::Permitted);
    Ok(CheckResult { can_submit: problems.is_empty(), cohorts, problems, auto_approval })
}

/// Checks the draft of an application the caller may see (its readers), with
/// the bona fides of its project's PI.
pub async fn check_draft(
    db: &PgPool,
    index: &Arc<discovery::memory::Index>,
    config: &Config,
    principal: &Principal,
    id: Uuid,
) -> Result<CheckResult, ApiError> {
    let (app, pi) = {
        let mut conn = db.acquire().await?;
        let app = visible(&mut conn, principal, id).await?;
        let pi = duties::pi_of(&mut *conn, app.project_id).await?;
        (app, pi)
    };
    check_of(db, index, config, principal, &pi, &app.draft).await
}

/// A draft checked for its submission by the project's PI: made only by
/// [`check_submission`], taken by [`submit`].
#[derive(Debug)]
pub struct Checked {
    id: Uuid,
    draft: ApplicationContent,
    result: CheckResult,
}

/// The first half of a submission, before its transaction: the caller must be
/// the PI, and the draft is checked (its feasibility counts spend the PI's
/// discovery budget whether or not the submission goes through).
pub async fn check_submission(
    db: &PgPool,
    index: &Arc<discovery::memory::Index>,
    config: &Config,
    principal: &Principal,
    id: Uuid,
) -> Result<Checked, ApiError> {
    let app = {
        let mut conn = db.acquire().await?;
        let app = db::get(&mut *conn, id).await?.ok_or(ApiError::NotFound("application"))?;
        require_pi(standing(&mut *conn, app.project_id, principal).await?, "application")?;
        app
    };
    let result = check(db, index, config, principal, &app.draft).await?;
    Ok(Checked { id, draft: app.draft, result })
}

/// Submits the checked draft (the PI): a draft goes to the committee, an
/// application with changes requested goes back under review. Every
/// submission keeps the content whole as a new version. A first submission
/// the cohorts' auto-eligibility rule covers is approved at once.
pub async fn submit(
    tx: &mut PgConnection,
    principal: &Principal,
    config: &AccessConfig,
    key: &RegistryKey,
    checked: Checked,
) -> Result<Application, ApiError> {
    let Checked { id, draft, result: checked } = checked;
    let locked = db::lock(&mut *tx, id).await?.ok_or(ApiError::NotFound("application"))?;
    if locked.draft != draft {
        return Err(ApiError::Conflict("the draft changed while it was checked; submit again".into()));
    }
    let action = if locked.state == State::ChangesRequested { Action::Resubmit } else { Action::Submit };
    state::next(locked.state, action, Actor::Applicant)
        .map_err(|why| ApiError::Refused { code: Refusal::InvalidTransition, message: why })?;
    if !checked.can_submit {
        let n = checked.problems.len();
        return Err(ApiError::Invalid {
            code: "invalid-application",
            message: format!(
                "the application has {n} problem{} to solve before it is submitted",
                if n == 1 { "" } else { "s" }
            ),
            problems: checked.problems,
        });
    }
    let due = db::working_days_after(Utc::now().date_naive(), config.review_working_days);
    let version = db::append_version(tx, &locked, &principal.username, due).await?;
    let previous = if version > 1 { db::versions(&mut *tx, id).await?.into_iter().nth_back(1) } else { None };
    let changed = previous.map(|p| db::changed_fields(&p.content, &locked.draft)).unwrap_or_default();
    review::advance(tx, &locked, action, Actor::Applicant, &principal.username, None).await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, if action == Action::Submit { "application.submit" } else { "application.resubmit" })
            .target(format!("application:{id}"))
            .details(json!({
                "version": version,
                "changed": changed,
                "consent": checked.cohorts.iter().map(|c| json!({"cohort": c.cohort, "verdict": c.verdict, "justified": c.justified})).collect::<Vec<_>>(),
            })),
    )
    .await?;
    duties::notify(
        tx,
        "role:steward",
        "application.submitted",
        &format!("Application version {version} is waiting for review"),
        &format!("application:{id}"),
    )
    .await?;
    if action == Action::Submit && checked.auto_approval {
        let submitted = db::lock(&mut *tx, id).await?.ok_or(ApiError::NotFound("application"))?;
        review::approve(tx, key, &submitted, &Conditions::default(), "system:auto-eligibility", true).await?;
    }
    reload(tx, id).await
}

/// Withdraws the application before a decision (the PI), with an optional reason.
pub async fn withdraw(
    tx: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    reason: Option<&str>,
) -> Result<Application, ApiError> {
    let locked = locked_for_pi(tx, principal, id).await?;
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    review::advance(tx, &locked, Action::Withdraw, Actor::Applicant, &principal.username, reason).await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "application.withdraw")
            .target(format!("application:{id}"))
            .details(json!({ "from": locked.state, "reason": reason })),
    )
    .await?;
    reload(tx, id).await
}

/// Activates an approved application (the PI) by accepting the data use
/// agreement in force, `dua_version`, whose text has the SHA-256 `dua_sha256`
/// when given: once every fee is settled, the grant's next version is active
/// and its duties are scheduled.
pub async fn activate(
    tx: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    dua_version: &str,
    dua_sha256: Option<&str>,
) -> Result<Application, ApiError> {
    let locked = locked_for_pi(tx, principal, id).await?;
    let agreement = dua::current(&mut *tx).await?;
    let current = &agreement.version;
    if dua_version != current {
        return Err(ApiError::Conflict(format!(
            "the data use agreement in force is `{current}`; read and accept that version"
        )));
    }
    if dua_sha256.is_some_and(|h| !h.eq_ignore_ascii_case(&agreement.sha256)) {
        return Err(ApiError::Conflict(format!(
            "the text accepted differs from the text of `{current}` on record (its SHA-256 is {})",
            agreement.sha256
        )));
    }
    review::advance(tx, &locked, Action::Activate, Actor::Applicant, &principal.username, None).await?;
    if let Some(owed) = duties::fees(&mut *tx, id).await?.into_iter().find(|f| f.settlement.is_none()) {
        return Err(ApiError::Refused {
            code: Refusal::FeeUnsettled,
            message: format!(
                "the {} fee of {}.{:02} {} is neither paid nor waived yet; a steward records its settlement",
                owed.kind,
                owed.amount / 100,
                owed.amount % 100,
                owed.currency
            ),
        });
    }
    db::accept_dua(tx, id, current, &agreement.sha256).await?;
    let grant_id = db::grant_of(tx, id).await?;
    let grant = grants::latest_for_update(tx, grant_id).await?.ok_or(ApiError::NotFound("grant"))?;
    if grant.state != GrantState::Pending {
        return Err(ApiError::Conflict(format!("the grant is {}, not pending", grant.state.as_str())));
    }
    grants::insert(
        tx,
        NewVersion {
            grant_id,
            version: grant.version + 1,
            project_id: grant.project_id,
            application_id: id,
            state: GrantState::Active,
            scope: &grant.scope,
            conditions: &grant.conditions,
            not_before: grant.not_before,
            not_after: grant.not_after,
            reason: Some("the PI accepted the data use agreement"),
            created_by: &principal.username,
        },
    )
    .await?;
    let duties =
        duties::schedule(tx, grant_id, grant.project_id, &grant.scope.cohorts, grant.not_before, grant.not_after)
            .await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "application.activate")
            .target(format!("application:{id}"))
            .details(json!({ "dua_version": current, "dua_sha256": agreement.sha256, "grant": grant_id, "grant_version": grant.version + 1, "obligations": duties })),
    )
    .await?;
    reload(tx, id).await
}

/// Sets a cohort's consent terms and whether it approves applications by rule
/// (stewards and admins). Only `registered` cohorts approve by rule.
pub async fn set_consent_terms(
    tx: &mut PgConnection,
    principal: &Principal,
    slug: &str,
    terms: &ConsentTerms,
    auto_approve: bool,
) -> Result<(), ApiError> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let problems: Vec<Problem> = terms
        .validate()
        .into_iter()
        .map(|(field, message)| problem(&format!("/terms/{field}"), "invalid-terms", message))
        .collect();
    if !problems.is_empty() {
        return Err(ApiError::Invalid {
            code: "invalid-terms",
            message: "the consent terms are invalid".into(),
            problems,
        });
    }
    let tier = db::set_consent_terms(tx, slug, terms, auto_approve).await?.ok_or(ApiError::NotFound("cohort"))?;
    if auto_approve && tier != Tier::Registered {
        return Err(ApiError::BadRequest("only `registered` cohorts may approve applications by rule".into()));
    }
    audit::record(
        tx,
        NewEvent::new(&principal.username, "cohort.consent")
            .target(format!("cohort:{slug}"))
            .details(json!({ "codes": terms.codes(), "auto_approve": auto_approve })),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::projects::MemberRole;

    fn draft() -> ApplicationContent {
        serde_json::from_value(json!({
            "title": "Glioma growth", "lay_summary": "s", "rationale": "r", "methods": "m",
            "scope": {"cohorts": ["brain-mri"], "annotation_kinds": ["segmentation"], "modalities": ["MR"], "imaging": true},
            "intended_use": {"purpose": "HMB", "duration_months": 24},
            "data_security": "HPC", "public_interest": "p"
        }))
        .unwrap()
    }

    #[test]
    fn a_complete_draft_has_no_problems_and_each_gap_is_named_at_its_pointer() {
        let dictionary = Dictionary::default();
        assert_eq!(completeness(&draft(), &dictionary), Vec::new());
        let mut gaps = draft();
        gaps.methods = "  ".into();
        gaps.title = "x".repeat(20_001);
        gaps.scope.cohorts.clear();
        gaps.scope.fields.push("egfr".into());
        gaps.scope.categories.push("genomics".into());
        gaps.scope.annotation_kinds.push("mesh".into());
        let found: Vec<(String, &str)> =
            completeness(&gaps, &dictionary).into_iter().map(|p| (p.path.unwrap(), p.code)).collect();
        let want = [
            ("/title", "too-long"),
            ("/methods", "missing"),
            ("/scope/cohorts", "missing"),
            ("/scope/fields/0", "unknown-field"),
            ("/scope/categories/0", "unknown-category"),
            ("/scope/annotation_kinds/1", "invalid-criteria"),
        ];
        assert_eq!(found, want.map(|(path, code)| (path.to_owned(), code)));
    }

    #[test]
    fn only_the_pi_acts_and_who_may_not_read_is_told_nothing_exists() {
        assert!(require_pi(Standing::Member(MemberRole::Pi), "application").is_ok());
        for (who, thing, status) in [
            (Standing::Member(MemberRole::Collaborator), "application", 403),
            (Standing::Steward, "application", 403),
            (Standing::Invitee, "application", 404),
            (Standing::Stranger, "application", 404),
            // An invitee sees the project, but not that it has applications to start.
            (Standing::Invitee, "project", 404),
            (Standing::Member(MemberRole::Collaborator), "project", 403),
        ] {
            let refused = require_pi(who, thing).unwrap_err();
            assert_eq!(refused.status().as_u16(), status, "{who:?} on {thing}");
        }
    }
}
