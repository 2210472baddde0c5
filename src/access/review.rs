//! The committee's rules: who may review and who must recuse, declarations of
//! interest, votes and what they decide at the quorum of the cohorts' tier (an
//! approval makes a pending grant and the project's key), and the queue the
//! committee works from.
//!
//! Every service function takes the transaction (or a connection, to read) and
//! the caller, and checks the caller itself: whatever calls it, a REST handler,
//! a page or a job, passes the same rules. The threaded comments live in
//! [`super::review_comments`] and are re-exported here.

use chrono::{DateTime, Days, Months, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use sqlx::types::Json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::db::{self, ApplicationRow};
use super::grants::{self, Conditions, GrantState, NewVersion};
use super::projects::{STEWARDS, is_steward};
use super::state::{self, Action, Actor, State};
use crate::audit::{self, NewEvent};
use crate::auth::Principal;
use crate::config::AccessConfig;
use crate::deid::pseudonym::RegistryKey;
use crate::error::{ApiError, Refusal};

pub use super::review_comments::{Comment, CommentRevision, NewComment, comment, comments, edit_comment};

/// The one role guard of the committee's actions: stewards and admins.
pub fn steward(principal: &Principal) -> Result<(), ApiError> {
    principal.require_any(STEWARDS)
}

pub use super::applications::visible as readable;

/// The application, locked until `tx` ends.
async fn locked(tx: &mut PgConnection, id: Uuid) -> Result<ApplicationRow, ApiError> {
    db::lock(tx, id).await?.ok_or(ApiError::NotFound("application"))
}

/// `state` as words, for messages.
fn words(state: State) -> String {
    state.as_str().replace('_', " ")
}

/// Why `steward` must stay out of reviewing the project's application, if they must.
pub async fn must_recuse(
    tx: &mut PgConnection,
    config: &AccessConfig,
    project_id: Uuid,
    steward: &str,
) -> Result<Option<String>, ApiError> {
    let row = sqlx::query!(
        r#"select exists (select 1 from project_member where project_id = $1 and username = $2 and removed_at is null)
                  as "member!",
                  exists (select 1 from project_member m
                          join researcher_profile p on p.username = m.username
                          join researcher_profile s on s.username = $2
                          where m.project_id = $1 and m.removed_at is null and m.username <> $2
                            and lower(trim(p.institution)) = lower(trim(s.institution)))
                  as "same_institution!""#,
        project_id,
        steward,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(if row.member {
        Some("the steward is a member of the project".into())
    } else if row.same_institution && config.recuse_same_institution {
        Some("the steward works at the same institution as a member of the project".into())
    } else {
        None
    })
}

/// Votes that decide an application: more for controlled cohorts.
pub async fn quorum(tx: &mut PgConnection, config: &AccessConfig, app: &ApplicationRow) -> Result<i64, ApiError> {
    let controlled = sqlx::query_scalar!(
        r#"select exists (select 1 from cohort where slug = any($1) and tier = 'controlled') as "controlled!""#,
        &app.draft.scope.cohorts,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(i64::from(if controlled { config.quorum_controlled } else { config.quorum_registered }).max(1))
}

/// Moves `app` along `action`, or refuses with the state machine's reason.
pub async fn advance(
    tx: &mut PgConnection,
    app: &ApplicationRow,
    action: Action,
    actor: Actor,
    who: &str,
    reason: Option<&str>,
) -> Result<State, ApiError> {
    let to = state::next(app.state, action, actor)
        .map_err(|why| ApiError::Refused { code: Refusal::InvalidTransition, message: why })?;
    // A closed project's applications may only be withdrawn.
    if action != Action::Withdraw {
        super::projects::ensure_open(tx, app.project_id).await?;
    }
    db::transition(tx, app, to, who, reason).await?;
    Ok(to)
}

/// Approves `app` (by votes or by rule): a pending grant of its scope under
/// `conditions`, from now until its requested duration or the conditions' end,
/// and the project's own pseudonymization key if it has none yet.
pub async fn approve(
    tx: &mut PgConnection,
    key: &RegistryKey,
    app: &ApplicationRow,
    conditions: &Conditions,
    who: &str,
    by_rule: bool,
) -> Result<Uuid, ApiError> {
    let reason =
        if by_rule { "approved by the cohorts' auto-eligibility rule" } else { "approved by the committee's votes" };
    advance(tx, app, Action::Approve, Actor::Rule, who, Some(reason)).await?;
    sqlx::query!("update application set decided_by_rule = $2 where application_id = $1", app.id, by_rule)
        .execute(&mut *tx)
        .await?;
    let now = Utc::now();
    let months = app.draft.intended_use.duration_months;
    let mut not_after = now.checked_add_months(Months::new(months)).unwrap_or(now);
    if let Some(end) = conditions.expires_on {
        let end = end.checked_add_days(Days::new(1)).unwrap_or(end).and_time(NaiveTime::MIN).and_utc();
        not_after = not_after.min(end);
    }
    if not_after <= now {
        return Err(ApiError::BadRequest("the conditions end the grant before it starts".into()));
    }
    let grant_id = Uuid::new_v4();
    grants::insert(
        tx,
        NewVersion {
            grant_id,
            version: 1,
            project_id: app.project_id,
            application_id: app.id,
            state: GrantState::Pending,
            scope: &app.draft.scope,
            conditions,
            not_before: now,
            not_after,
            reason: Some(reason),
            created_by: who,
        },
    )
    .await?;
    let snapshots = super::snapshot::take(tx, grant_id, &app.draft.scope.cohorts).await?;
    let new_key = grants::ensure_project_key(tx, key, app.project_id).await?;
    let fee = super::duties::charge(tx, app.id, grant_id, &app.draft.scope, "access").await?;
    let pi = super::duties::pi_of(&mut *tx, app.project_id).await?;
    super::duties::notify(
        tx,
        &pi,
        "application.approved",
        "Your application was approved: accept the data use agreement to activate the grant",
        &format!("application:{}", app.id),
    )
    .await?;
    audit::record(
        tx,
        NewEvent::new(who, "application.approve").target(format!("application:{}", app.id)).details(json!({
            "version": app.version, "by_rule": by_rule, "grant": grant_id, "not_after": not_after,
            "conditions": conditions, "project_key_created": new_key, "fee": fee, "snapshots": snapshots,
        })),
    )
    .await?;
    Ok(grant_id)
}

// ---------------------------------------------------------------------------
// The queue

/// An application waiting for the committee.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueItem {
    pub application_id: Uuid,
    pub project_id: Uuid,
    pub project_title: String,
    pub title: String,
    pub state: State,
    pub version: i32,
    pub submitted_at: Option<DateTime<Utc>>,
    /// Days since the first submission.
    pub age_days: i64,
    pub due_on: Option<NaiveDate>,
    pub overdue: bool,
    pub assignments: Vec<Assignment>,
    /// Votes cast on the current version.
    pub votes: i64,
    /// Top-level fields that changed from the previous version.
    pub changed_since_previous: Vec<String>,
    /// What changed from the previous version, with the values on each side.
    pub changes: Vec<db::Change>,
    /// The project's current members with their institutions and whether a
    /// steward verified their bona fides (`institution` null: no profile).
    pub members: Vec<MemberBonaFides>,
}

/// A member as the committee weighs them.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberBonaFides {
    pub username: String,
    /// `pi` or `collaborator`.
    pub role: String,
    pub institution: Option<String>,
    pub verified: bool,
}

async fn bona_fides(conn: &mut PgConnection, project_id: Uuid) -> Result<Vec<MemberBonaFides>, ApiError> {
    Ok(sqlx::query_as!(
        MemberBonaFides,
        r#"select m.username, m.role, r.institution as "institution?",
                  coalesce(r.verified_at is not null, false) as "verified!"
           from project_member m left join researcher_profile r using (username)
           where m.project_id = $1 and m.removed_at is null order by m.role desc, m.username"#,
        project_id,
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Applications waiting for a decision, oldest due first (stewards and admins),
/// each with its assignments, votes, changes and the members' bona fides.
pub async fn queue(conn: &mut PgConnection, principal: &Principal) -> Result<Vec<QueueItem>, ApiError> {
    steward(principal)?;
    let rows = sqlx::query!(
        r#"select a.application_id, p.title as project_title,
                  (select count(*) from review_vote v
                   where v.application_id = a.application_id and v.version = a.version) as "votes!"
           from application a join project p using (project_id)
           where a.state in ('submitted', 'under_review', 'changes_requested')
           order by a.due_on nulls last, a.submitted_at"#,
    )
    .fetch_all(&mut *conn)
    .await?;
    let today = Utc::now().date_naive();
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.application_id;
        let Some(app) = db::get(&mut *conn, id).await? else { continue };
        let versions = db::versions(&mut *conn, id).await?;
        let (fields, changes) = match versions.as_slice() {
            [.., before, after] => {
                (db::changed_fields(&before.content, &after.content), db::diff(Some(&before.content), &after.content))
            }
            _ => (Vec::new(), Vec::new()),
        };
        items.push(QueueItem {
            application_id: id,
            project_id: app.project_id,
            project_title: row.project_title,
            title: app.draft.title.clone(),
            state: app.state,
            version: app.version,
            submitted_at: app.submitted_at,
            age_days: app.submitted_at.map_or(0, |s| (Utc::now() - s).num_days()),
            due_on: app.due_on,
            overdue: app.due_on.is_some_and(|d| d < today),
            assignments: assignments(&mut *conn, id).await?,
            votes: row.votes,
            changed_since_previous: fields,
            changes,
            members: bona_fides(&mut *conn, app.project_id).await?,
        });
    }
    Ok(items)
}

// ---------------------------------------------------------------------------
// Assignments and declarations

/// A steward's part in a review.
#[derive(Debug, Serialize, ToSchema)]
pub struct Assignment {
    pub steward: String,
    pub assigned_by: String,
    pub assigned_at: DateTime<Utc>,
    pub recused_at: Option<DateTime<Utc>>,
    pub recusal_reason: Option<String>,
    /// Whether the steward has declared their interests.
    pub declared: bool,
}

/// The assignments of application `id` with whether each steward declared
/// (stewards and admins).
pub async fn assignments_of(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<Vec<Assignment>, ApiError> {
    steward(principal)?;
    readable(conn, principal, id).await?;
    assignments(conn, id).await
}

/// The assignments of application `id`, first assigned first.
async fn assignments(conn: &mut PgConnection, id: Uuid) -> Result<Vec<Assignment>, ApiError> {
    Ok(sqlx::query_as!(
        Assignment,
        r#"select a.steward, a.assigned_by, a.assigned_at, a.recused_at, a.recusal_reason,
                  exists (select 1 from interest_declaration d
                          where d.application_id = a.application_id and d.steward = a.steward) as "declared!"
           from review_assignment a where a.application_id = $1 order by a.assigned_at"#,
        id,
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Assigns `who` unless they must recuse; returns whether they were new.
async fn add_assignment(
    tx: &mut PgConnection,
    config: &AccessConfig,
    app: &ApplicationRow,
    who: &str,
    by: &str,
) -> Result<bool, ApiError> {
    // Every reviewer, self-assigned or assigned: a profile (conflicts of interest are checked
    // against it) and, as of that profile, the steward or admin role.
    let reviewer = sqlx::query!(
        r#"select exists (select 1 from researcher_profile where username = $1) as "profile!",
                  exists (select 1 from app_user where username = $1 and roles && array['steward', 'admin'])
                  as "steward_role!""#,
        who,
    )
    .fetch_one(&mut *tx)
    .await?;
    if !reviewer.profile {
        return Err(ApiError::BadRequest(format!(
            "`{who}` has no profile: a reviewer needs one, so that conflicts of interest can be checked"
        )));
    }
    if !reviewer.steward_role {
        return Err(ApiError::BadRequest(format!(
            "`{who}` is not a steward (as of their profile: a steward saves it with a steward's token)"
        )));
    }
    if let Some(reason) = must_recuse(tx, config, app.project_id, who).await? {
        return Err(ApiError::Refused {
            code: Refusal::MustRecuse,
            message: format!("{who} cannot review it: {reason}"),
        });
    }
    let added = sqlx::query!(
        "insert into review_assignment (application_id, steward, assigned_by) values ($1, $2, $3)
         on conflict do nothing",
        app.id,
        who,
        by,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added == 1 {
        audit::record(
            tx,
            NewEvent::new(by, "review.assign")
                .target(format!("application:{}", app.id))
                .details(json!({ "steward": who })),
        )
        .await?;
    }
    Ok(added == 1)
}

/// Takes a submitted application under review and assigns the caller
/// (stewards, unless they must recuse): the assignments.
pub async fn start(
    tx: &mut PgConnection,
    principal: &Principal,
    config: &AccessConfig,
    application_id: Uuid,
) -> Result<Vec<Assignment>, ApiError> {
    steward(principal)?;
    let app = locked(tx, application_id).await?;
    add_assignment(tx, config, &app, &principal.username, &principal.username).await?;
    advance(tx, &app, Action::StartReview, Actor::Steward, &principal.username, None).await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "review.start")
            .target(format!("application:{application_id}"))
            .details(json!({})),
    )
    .await?;
    assignments(tx, application_id).await
}

/// Assigns the steward `who` to a pending application (stewards): the assignments.
/// A steward who must recuse ([`must_recuse`]) cannot be assigned.
pub async fn assign(
    tx: &mut PgConnection,
    principal: &Principal,
    config: &AccessConfig,
    application_id: Uuid,
    who: &str,
) -> Result<Vec<Assignment>, ApiError> {
    steward(principal)?;
    let who = who.trim();
    let app = locked(tx, application_id).await?;
    if !app.state.pending() {
        return Err(ApiError::Conflict(format!("the application is {}: there is nothing to review", words(app.state))));
    }
    add_assignment(tx, config, &app, who, &principal.username).await?;
    assignments(tx, application_id).await
}

/// Takes the steward `who` off a pending application (stewards) unless they voted on
/// its current version: the remaining assignments. Their declarations stay.
pub async fn unassign(
    tx: &mut PgConnection,
    principal: &Principal,
    application_id: Uuid,
    who: &str,
) -> Result<Vec<Assignment>, ApiError> {
    steward(principal)?;
    let app = locked(tx, application_id).await?;
    if !app.state.pending() {
        return Err(ApiError::Conflict(format!("the application is {}: its assignments are final", words(app.state))));
    }
    let voted = sqlx::query_scalar!(
        r#"select exists (select 1 from review_vote where application_id = $1 and version = $2 and steward = $3)
                  as "voted!""#,
        application_id,
        app.version,
        who,
    )
    .fetch_one(&mut *tx)
    .await?;
    if voted {
        return Err(ApiError::Conflict(format!("`{who}` has voted on version {}: the vote stands", app.version)));
    }
    let removed =
        sqlx::query!("delete from review_assignment where application_id = $1 and steward = $2", application_id, who)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if removed == 0 {
        return Err(ApiError::NotFound("assignment"));
    }
    audit::record(
        tx,
        NewEvent::new(&principal.username, "review.unassign")
            .target(format!("application:{application_id}"))
            .details(json!({ "steward": who })),
    )
    .await?;
    assignments(tx, application_id).await
}

/// Whether the caller is assigned to the application and not recused.
async fn assigned(tx: &mut PgConnection, application_id: Uuid, who: &str) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"select exists (select 1 from review_assignment
                          where application_id = $1 and steward = $2 and recused_at is null) as "assigned!""#,
        application_id,
        who,
    )
    .fetch_one(&mut *tx)
    .await?)
}

/// Records the caller's declaration of interests in an application they are
/// assigned to (stewards): with a `conflict`, they are recused. The assignments.
pub async fn declare(
    tx: &mut PgConnection,
    principal: &Principal,
    application_id: Uuid,
    conflict: bool,
    statement: &str,
) -> Result<Vec<Assignment>, ApiError> {
    steward(principal)?;
    let statement = statement.trim();
    if statement.is_empty() || statement.chars().count() > 5000 {
        return Err(ApiError::BadRequest("`statement` is 1 to 5,000 characters".into()));
    }
    let app = locked(tx, application_id).await?;
    if !assigned(tx, app.id, &principal.username).await? {
        return Err(ApiError::Forbidden("only stewards assigned to the application (and not recused) declare".into()));
    }
    sqlx::query!(
        "insert into interest_declaration (application_id, steward, conflict, statement) values ($1, $2, $3, $4)",
        app.id,
        principal.username,
        conflict,
        statement,
    )
    .execute(&mut *tx)
    .await?;
    if conflict {
        sqlx::query!(
            "update review_assignment set recused_at = now(), recusal_reason = 'declared a competing interest'
             where application_id = $1 and steward = $2",
            app.id,
            principal.username,
        )
        .execute(&mut *tx)
        .await?;
    }
    audit::record(
        tx,
        NewEvent::new(&principal.username, "review.declare")
            .target(format!("application:{application_id}"))
            .details(json!({ "conflict": conflict, "recused": conflict })),
    )
    .await?;
    assignments(tx, application_id).await
}

// ---------------------------------------------------------------------------
// Votes and the decision

/// How a steward votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum VoteKind {
    Approve,
    ApproveWithConditions,
    RequestChanges,
    Reject,
}

impl VoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::ApproveWithConditions => "approve_with_conditions",
            Self::RequestChanges => "request_changes",
            Self::Reject => "reject",
        }
    }

    /// Whether the vote approves (with or without conditions).
    pub fn approves(self) -> bool {
        matches!(self, Self::Approve | Self::ApproveWithConditions)
    }
}

/// A vote as a steward casts it.
#[derive(Debug, Clone)]
pub struct Ballot<'a> {
    pub vote: VoteKind,
    /// Required with `approve_with_conditions`; ignored with any other vote.
    pub conditions: Option<Conditions>,
    /// Required with `request_changes` (what to change) and `reject` (the reason).
    pub comment: Option<&'a str>,
}

/// A recorded vote.
#[derive(Debug, Serialize, ToSchema)]
pub struct Vote {
    pub version: i32,
    pub steward: String,
    pub vote: String,
    pub conditions: Option<Conditions>,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

/// A vote's stored conditions, read or refused: conditions that cannot be read
/// stop whatever depends on them (fail closed) rather than count as none.
fn stored_conditions(application: Uuid, conditions: Option<serde_json::Value>) -> Result<Option<Conditions>, ApiError> {
    conditions.map(|c| super::read_stored(c, "a vote's conditions", &application)).transpose()
}

/// Every vote on application `id`, by version.
async fn votes_of(conn: &mut PgConnection, id: Uuid) -> Result<Vec<Vote>, ApiError> {
    let rows = sqlx::query!(
        r#"select version, steward, vote as "vote: VoteKind", conditions, comment, at
           from review_vote where application_id = $1 order by version, at"#,
        id,
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Vote {
                version: r.version,
                steward: r.steward,
                vote: r.vote.as_str().to_owned(),
                conditions: stored_conditions(id, r.conditions)?,
                comment: r.comment,
                at: r.at,
            })
        })
        .collect()
}

/// The votes on an application, every version: stewards and admins always,
/// the project's members once the committee has decided.
pub async fn votes(
    conn: &mut PgConnection,
    principal: &Principal,
    application_id: Uuid,
) -> Result<Vec<Vote>, ApiError> {
    let app = readable(conn, principal, application_id).await?;
    if !is_steward(principal) && app.state.pending() {
        return Err(ApiError::Forbidden("votes are shown to applicants once the committee has decided".into()));
    }
    votes_of(conn, application_id).await
}

/// Records the caller's vote on the current version (an assigned steward who
/// declared and is not recused), then lets the votes decide ([`decide`]): the
/// votes so far.
pub async fn vote(
    tx: &mut PgConnection,
    principal: &Principal,
    config: &AccessConfig,
    key: &RegistryKey,
    application_id: Uuid,
    ballot: Ballot<'_>,
) -> Result<Vec<Vote>, ApiError> {
    steward(principal)?;
    let comment = ballot.comment.map(str::trim).filter(|c| !c.is_empty());
    match ballot.vote {
        VoteKind::ApproveWithConditions if ballot.conditions.is_none() => {
            return Err(ApiError::BadRequest("`approve_with_conditions` needs `conditions`".into()));
        }
        VoteKind::RequestChanges | VoteKind::Reject if comment.is_none() => {
            return Err(ApiError::BadRequest(format!(
                "`{}` needs a `comment` that tells the applicant why",
                ballot.vote.as_str()
            )));
        }
        _ => {}
    }
    let app = locked(tx, application_id).await?;
    if app.state != State::UnderReview {
        return Err(ApiError::Refused {
            code: Refusal::InvalidTransition,
            message: format!("votes are cast under review; the application is {}", words(app.state)),
        });
    }
    let voter = sqlx::query!(
        r#"select exists (select 1 from review_assignment
                          where application_id = $1 and steward = $2 and recused_at is null) as "assigned!",
                  exists (select 1 from interest_declaration
                          where application_id = $1 and steward = $2 and not conflict) as "declared!""#,
        app.id,
        principal.username,
    )
    .fetch_one(&mut *tx)
    .await?;
    if !voter.assigned {
        return Err(ApiError::Forbidden("only stewards assigned to the application (and not recused) vote".into()));
    }
    if !voter.declared {
        return Err(ApiError::Conflict("declare your interests (POST …/declarations) before voting".into()));
    }
    let conditions = ballot.conditions.filter(|_| ballot.vote == VoteKind::ApproveWithConditions);
    let inserted = sqlx::query!(
        "insert into review_vote (application_id, version, steward, vote, conditions, comment)
         values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
        app.id,
        app.version,
        principal.username,
        ballot.vote.as_str(),
        conditions.as_ref().map(Json) as _,
        comment,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::Conflict(format!("you have already voted on version {}", app.version)));
    }
    audit::record(
        tx,
        NewEvent::new(&principal.username, "review.vote").target(format!("application:{application_id}")).details(
            json!({
                "version": app.version,
                "vote": ballot.vote.as_str(),
                "comment": comment,
                "conditions": conditions,
            }),
        ),
    )
    .await?;
    decide(tx, config, key, &app, ballot.vote, comment, &principal.username).await?;
    votes_of(tx, application_id).await
}

/// What the votes on the current version decide, if anything yet: a request
/// for changes sends the application back at once; approvals or rejections
/// decide at the quorum, an approval under every voter's conditions merged.
async fn decide(
    tx: &mut PgConnection,
    config: &AccessConfig,
    key: &RegistryKey,
    app: &ApplicationRow,
    last: VoteKind,
    comment: Option<&str>,
    who: &str,
) -> Result<(), ApiError> {
    let pi = super::duties::pi_of(&mut *tx, app.project_id).await?;
    let target = format!("application:{}", app.id);
    if last == VoteKind::RequestChanges {
        advance(tx, app, Action::RequestChanges, Actor::Steward, who, comment).await?;
        super::duties::notify(
            tx,
            &pi,
            "application.changes_requested",
            "The committee asks for changes to your application",
            &target,
        )
        .await?;
        return Ok(());
    }
    let votes = sqlx::query!(
        r#"select v.vote as "vote: VoteKind", v.conditions, v.comment from review_vote v
           join review_assignment a
             on a.application_id = v.application_id and a.steward = v.steward and a.recused_at is null
           where v.application_id = $1 and v.version = $2"#,
        app.id,
        app.version,
    )
    .fetch_all(&mut *tx)
    .await?;
    let quorum = quorum(tx, config, app).await?;
    // Fail closed: conditions that cannot be read stop the decision; they never become "no conditions".
    let approvals: Vec<Conditions> = votes
        .iter()
        .filter(|v| v.vote.approves())
        .map(|v| Ok(stored_conditions(app.id, v.conditions.clone())?.unwrap_or_default()))
        .collect::<Result<_, ApiError>>()?;
    let rejections: Vec<&str> =
        votes.iter().filter(|v| v.vote == VoteKind::Reject).filter_map(|v| v.comment.as_deref()).collect();
    if i64::try_from(approvals.len()).unwrap_or(i64::MAX) >= quorum {
        let conditions = Conditions::merge(approvals);
        approve(tx, key, app, &conditions, who, false).await?;
    } else if i64::try_from(rejections.len()).unwrap_or(i64::MAX) >= quorum {
        let reason = rejections.join("; ");
        advance(tx, app, Action::Reject, Actor::Rule, who, Some(&reason)).await?;
        super::duties::notify(
            tx,
            &pi,
            "application.rejected",
            "Your application was rejected; the reason is in its history",
            &target,
        )
        .await?;
        audit::record(
            tx,
            NewEvent::new(who, "application.reject")
                .target(target.clone())
                .details(json!({ "version": app.version, "reason": reason })),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_that_cannot_be_read_refuse_instead_of_counting_as_none() {
        let id = Uuid::nil();
        assert_eq!(stored_conditions(id, None).unwrap(), None);
        let read = stored_conditions(id, Some(json!({"text": ["Cite the registry."], "annual_report": true})));
        assert!(read.unwrap().is_some_and(|c| c.annual_report && c.text == ["Cite the registry."]));
        for unreadable in [json!({"txet": []}), json!("approve"), json!(null), json!({"expires_on": "soon"})] {
            let refused = stored_conditions(id, Some(unreadable.clone())).unwrap_err();
            assert_eq!(refused.status().as_u16(), 500, "{unreadable}");
        }
    }

    #[test]
    fn a_vote_kind_reads_as_it_is_stored() {
        for kind in [VoteKind::Approve, VoteKind::ApproveWithConditions, VoteKind::RequestChanges, VoteKind::Reject] {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
            assert_eq!(kind.approves(), kind.as_str().starts_with("approve"));
        }
    }
}
