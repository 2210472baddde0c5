//! Researcher profiles, projects and their members.
//!
//! A profile states who a researcher is (name, institution, position, contact
//! and ORCID); a steward verifies these bona fides, and any later change to
//! the profile clears the verification. A project belongs to its PI, who
//! created it; collaborators join by invitation and acceptance, and leave (or
//! are removed by the PI) without their row being deleted, so the membership
//! history stays. A project is visible to its members (invited ones too) and
//! to stewards and admins; to anyone else it does not exist.
//!
//! Every change is written in one transaction with its audit event. Events
//! name the fields that changed, never their values, and never contact data.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, Problem, ResultExt};

/// Roles that see every profile and every project.
pub const STEWARDS: &[Role] = &[Role::Steward, Role::Admin];

/// Whether the caller is a steward or an admin: sees every profile, project,
/// application and vote, and acts for the committee.
pub fn is_steward(principal: &Principal) -> bool {
    STEWARDS.iter().any(|r| principal.has_role(*r))
}

/// Longest name, institution, position, title or username, in characters.
pub const MAX_TEXT: usize = 200;

/// Longest e-mail address (RFC 5321).
const MAX_EMAIL: usize = 254;

/// What must be fixed before a profile-less researcher may create a project.
pub const PROFILE_FIRST: &str = "create your researcher profile first (PUT /api/v1/me/profile)";

/// A researcher's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Profile {
    /// Whose profile this is (the token's subject).
    pub username: String,
    pub name: String,
    pub institution: String,
    /// Contact address; shown to its owner and to stewards only.
    pub email: String,
    /// ORCID iD, e.g. `0000-0002-1825-0097`.
    pub orcid: Option<String>,
    /// Position at the institution, e.g. `Postdoctoral researcher`.
    pub position: String,
    /// Whether a steward verified these bona fides; any change to the profile clears it.
    pub verified: bool,
    pub verified_at: Option<DateTime<Utc>>,
    /// The steward who verified the profile.
    pub verified_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A profile as its owner states it; it replaces the whole profile.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    /// 1–200 characters.
    #[schema(max_length = 200)]
    pub name: String,
    /// 1–200 characters.
    #[schema(max_length = 200)]
    pub institution: String,
    /// One `@` with text on both sides and a dot in the domain.
    #[schema(max_length = 254)]
    pub email: String,
    /// ORCID iD `0000-0002-1825-0097` with a valid ISO 7064 11,2 check digit (the last, may be `X`).
    #[schema(max_length = 64)]
    pub orcid: Option<String>,
    /// 1–200 characters.
    #[schema(max_length = 200)]
    pub position: String,
}

/// A profile that passed [`validate_profile`]: trimmed, ORCID absent rather than blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidProfile {
    pub name: String,
    pub institution: String,
    pub email: String,
    pub orcid: Option<String>,
    pub position: String,
}

/// A member's role in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum MemberRole {
    /// Principal investigator: created the project, invites and removes collaborators.
    Pi,
    /// Invited by the PI.
    Collaborator,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pi => "pi",
            Self::Collaborator => "collaborator",
        }
    }
}

/// A research project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub title: String,
    /// The principal investigator, who created the project.
    pub pi_username: String,
    pub created_at: DateTime<Utc>,
    /// When the project was closed; a closed project's membership no longer changes.
    pub closed_at: Option<DateTime<Utc>>,
}

/// The caller's own membership of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Membership {
    pub role: MemberRole,
    pub invited_at: DateTime<Utc>,
    /// Absent while the invitation is open.
    pub accepted_at: Option<DateTime<Utc>>,
}

/// A project in a list, with the caller's membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProjectSummary {
    pub id: Uuid,
    pub title: String,
    pub pi_username: String,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The caller's membership; absent for stewards and admins who are not members.
    pub membership: Option<Membership>,
}

/// A member of a project, past or present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProjectMember {
    pub username: String,
    pub role: MemberRole,
    pub invited_by: String,
    pub invited_at: DateTime<Utc>,
    /// Absent while the invitation is open.
    pub accepted_at: Option<DateTime<Utc>>,
    /// When the member left or was removed.
    pub removed_at: Option<DateTime<Utc>>,
    pub removed_by: Option<String>,
    /// From the member's profile, when they have one.
    pub name: Option<String>,
    /// From the member's profile, when they have one.
    pub institution: Option<String>,
}

/// A project with every membership it has had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProjectDetails {
    pub id: Uuid,
    pub title: String,
    pub pi_username: String,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Oldest invitation first; a member invited again after leaving appears once per period.
    pub members: Vec<ProjectMember>,
}

// ---------------------------------------------------------------- validation

/// Checks a profile, listing every problem (never a submitted value).
pub fn validate_profile(request: &ProfileRequest) -> Result<ValidProfile, ApiError> {
    let mut problems = Vec::new();
    let name = required_text(&request.name, "/name", "name", &mut problems);
    let institution = required_text(&request.institution, "/institution", "institution", &mut problems);
    let position = required_text(&request.position, "/position", "position", &mut problems);
    let email = request.email.trim();
    if !valid_email(email) {
        problems.push(problem(
            "/email",
            "invalid-email",
            "`email` must be one address with text on both sides of a single `@` and a dot in the domain".into(),
        ));
    }
    let orcid = request.orcid.as_deref().map(str::trim).filter(|o| !o.is_empty());
    if let Some(orcid) = orcid {
        if !orcid_format(orcid) {
            problems.push(problem(
                "/orcid",
                "invalid-orcid",
                "`orcid` must have the form 0000-0002-1825-0097 (the last character may be an uppercase X)".into(),
            ));
        } else if !orcid_check_digit_ok(orcid) {
            problems.push(problem(
                "/orcid",
                "invalid-orcid-check-digit",
                "`orcid` has a wrong check digit (ISO 7064 11,2): check it for typing errors".into(),
            ));
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        return Err(ApiError::Invalid {
            code: "invalid-profile",
            message: format!("the profile has {n} problem{}", if n == 1 { "" } else { "s" }),
            problems,
        });
    }
    Ok(ValidProfile {
        name: name.to_owned(),
        institution: institution.to_owned(),
        email: email.to_owned(),
        orcid: orcid.map(str::to_owned),
        position: position.to_owned(),
    })
}

fn required_text<'a>(value: &'a str, path: &str, field: &str, problems: &mut Vec<Problem>) -> &'a str {
    let value = value.trim();
    if value.is_empty() {
        problems.push(problem(path, "missing-value", format!("`{field}` must not be empty")));
    } else if value.chars().count() > MAX_TEXT {
        problems.push(problem(path, "too-long", format!("`{field}` must be at most {MAX_TEXT} characters")));
    }
    value
}

fn problem(path: &str, code: &'static str, message: String) -> Problem {
    Problem { row: None, column: None, path: Some(path.to_owned()), code, message }
}

/// Whether `email` is one address: a single `@` with text on both sides, a
/// dot inside the domain, no whitespace, at most 254 characters.
pub fn valid_email(email: &str) -> bool {
    if email.len() > MAX_EMAIL || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
}

/// Whether `orcid` has the form `0000-0002-1825-0097` (last character a digit or `X`).
pub fn orcid_format(orcid: &str) -> bool {
    let bytes = orcid.as_bytes();
    bytes.len() == 19
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            4 | 9 | 14 => b == b'-',
            18 => b.is_ascii_digit() || b == b'X',
            _ => b.is_ascii_digit(),
        })
}

/// Whether the last character of a well-formed ORCID iD is its ISO 7064 11,2 check digit.
pub fn orcid_check_digit_ok(orcid: &str) -> bool {
    let chars: Vec<char> = orcid.chars().filter(|c| *c != '-').collect();
    let Some((&check, digits)) = chars.split_last() else { return false };
    if digits.len() != 15 {
        return false;
    }
    let mut total = 0u32;
    for c in digits {
        let Some(d) = c.to_digit(10) else { return false };
        total = (total + d) * 2;
    }
    let result = (12 - total % 11) % 11;
    let expected = if result == 10 { 'X' } else { char::from_digit(result, 10).unwrap_or('?') };
    check == expected
}

/// Whether `username` can name a person: 1–200 characters, no whitespace or control characters.
pub fn valid_username(username: &str) -> bool {
    !username.is_empty()
        && username.chars().count() <= MAX_TEXT
        && !username.chars().any(|c| c.is_whitespace() || c.is_control())
}

// ---------------------------------------------------------------- profiles

/// The profile of `username`, if they have one.
pub async fn get_profile(db: impl PgExecutor<'_>, username: &str) -> sqlx::Result<Option<Profile>> {
    sqlx::query_as!(
        Profile,
        r#"select username, name, institution, email, orcid, position, verified_at is not null as "verified!",
                  verified_at, verified_by, created_at, updated_at
           from researcher_profile where username = $1"#,
        username
    )
    .fetch_optional(db)
    .await
}

/// Every profile (only the unverified ones with `unverified_only`), by username.
pub async fn list_profiles(db: impl PgExecutor<'_>, unverified_only: bool) -> sqlx::Result<Vec<Profile>> {
    sqlx::query_as!(
        Profile,
        r#"select username, name, institution, email, orcid, position, verified_at is not null as "verified!",
                  verified_at, verified_by, created_at, updated_at
           from researcher_profile where not $1 or verified_at is null order by username"#,
        unverified_only
    )
    .fetch_all(db)
    .await
}

/// Whether `username` has a profile.
pub async fn has_profile(db: impl PgExecutor<'_>, username: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from researcher_profile where username = $1) as "exists!""#,
        username
    )
    .fetch_one(db)
    .await
}

/// Checks and saves `principal`'s profile (the REST API and the account
/// page), and records the roles they hold as of it (who may be assigned to
/// review); `true` when it was created.
pub async fn save_profile(
    db: &PgPool,
    principal: &Principal,
    request: &ProfileRequest,
) -> Result<(Profile, bool), ApiError> {
    let valid = validate_profile(request)?;
    let saved = put_profile(db, &principal.username, &valid).await?;
    crate::auth::api_tokens::upsert_user(db, &principal.username, &principal.roles).await?;
    Ok(saved)
}

/// Creates or replaces the caller's profile; `true` when it was created.
///
/// A change to any field clears a verification. Replacing a profile with
/// identical values changes nothing and records nothing.
pub async fn put_profile(db: &PgPool, username: &str, profile: &ValidProfile) -> Result<(Profile, bool), ApiError> {
    let mut tx = db.begin().await?;
    let existing = sqlx::query_as!(
        Profile,
        r#"select username, name, institution, email, orcid, position, verified_at is not null as "verified!",
                  verified_at, verified_by, created_at, updated_at
           from researcher_profile where username = $1 for update"#,
        username
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (saved, created) = if let Some(old) = existing {
        let changed = changed_fields(&old, profile);
        if changed.is_empty() {
            return Ok((old, false));
        }
        let saved = sqlx::query_as!(
            Profile,
            r#"update researcher_profile
               set name = $2, institution = $3, email = $4, orcid = $5, position = $6,
                   verified_at = null, verified_by = null
               where username = $1
               returning username, name, institution, email, orcid, position, verified_at is not null as "verified!",
                  verified_at, verified_by, created_at, updated_at"#,
            username,
            profile.name,
            profile.institution,
            profile.email,
            profile.orcid,
            profile.position
        )
        .fetch_one(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            NewEvent::new(username, "profile.update")
                .target(format!("profile:{username}"))
                .details(json!({ "changed": changed, "verification_cleared": old.verified })),
        )
        .await?;
        (saved, false)
    } else {
        let saved = sqlx::query_as!(
            Profile,
            r#"insert into researcher_profile (username, name, institution, email, orcid, position)
               values ($1, $2, $3, $4, $5, $6)
               returning username, name, institution, email, orcid, position, verified_at is not null as "verified!",
                  verified_at, verified_by, created_at, updated_at"#,
            username,
            profile.name,
            profile.institution,
            profile.email,
            profile.orcid,
            profile.position
        )
        .fetch_one(&mut *tx)
        .await
        .on_constraint("researcher_profile_pkey", || {
            ApiError::Conflict("the profile was created by a concurrent request; retry".into())
        })?;
        audit::record(
            &mut tx,
            NewEvent::new(username, "profile.create")
                .target(format!("profile:{username}"))
                .details(json!({ "has_orcid": saved.orcid.is_some() })),
        )
        .await?;
        (saved, true)
    };
    tx.commit().await?;
    Ok((saved, created))
}

/// Names of the fields of `old` that `new` changes.
fn changed_fields(old: &Profile, new: &ValidProfile) -> Vec<&'static str> {
    [
        ("name", old.name == new.name),
        ("institution", old.institution == new.institution),
        ("email", old.email == new.email),
        ("orcid", old.orcid == new.orcid),
        ("position", old.position == new.position),
    ]
    .into_iter()
    .filter_map(|(field, same)| (!same).then_some(field))
    .collect()
}

/// Marks the bona fides of `username` verified by `steward` (a steward or admin,
/// not the profile's owner). Verifying a verified profile changes nothing.
pub async fn verify_profile(db: &PgPool, steward: &Principal, username: &str) -> Result<Profile, ApiError> {
    steward.require_any(STEWARDS)?;
    if steward.username == username {
        return Err(ApiError::Forbidden("nobody may verify their own profile".into()));
    }
    let mut tx = db.begin().await?;
    let profile = sqlx::query_as!(
        Profile,
        r#"select username, name, institution, email, orcid, position, verified_at is not null as "verified!",
                  verified_at, verified_by, created_at, updated_at
           from researcher_profile where username = $1 for update"#,
        username
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("profile"))?;
    if profile.verified {
        return Ok(profile);
    }
    let verified = sqlx::query_as!(
        Profile,
        r#"update researcher_profile set verified_at = now(), verified_by = $2 where username = $1
           returning username, name, institution, email, orcid, position, verified_at is not null as "verified!",
                  verified_at, verified_by, created_at, updated_at"#,
        username,
        steward.username
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&steward.username, "profile.verify")
            .target(format!("profile:{username}"))
            .details(json!({ "username": username })),
    )
    .await?;
    tx.commit().await?;
    Ok(verified)
}

// ---------------------------------------------------------------- projects: reads for other modules

/// The caller's active role in a project: `Some("pi")`/`Some("collaborator")` when an accepted, not removed member.
pub async fn member_role(db: impl PgExecutor<'_>, project_id: Uuid, username: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "select role from project_member
         where project_id = $1 and username = $2 and accepted_at is not null and removed_at is null",
        project_id,
        username
    )
    .fetch_optional(db)
    .await
}

/// Whether the caller may see the project (member incl. invited, or steward/admin).
///
/// `false` for a project that does not exist, whoever asks.
pub async fn visible(db: impl PgExecutor<'_>, project_id: Uuid, principal: &Principal) -> sqlx::Result<bool> {
    can_see(db, project_id, principal, false).await
}

/// Whether the caller may read the project's data (applications, grants,
/// duties, notices): an accepted, not removed member, or a steward or admin.
/// An invitee sees the project itself, to decide whether to join, but not its data.
pub async fn readable(db: impl PgExecutor<'_>, project_id: Uuid, principal: &Principal) -> sqlx::Result<bool> {
    can_see(db, project_id, principal, true).await
}

async fn can_see(
    db: impl PgExecutor<'_>,
    project_id: Uuid,
    principal: &Principal,
    accepted_only: bool,
) -> sqlx::Result<bool> {
    let privileged = is_steward(principal);
    sqlx::query_scalar!(
        r#"select exists (select 1 from project where project_id = $1)
                  and ($3 or exists (select 1 from project_member where project_id = $1 and username = $2
                                     and (accepted_at is not null or not $4) and removed_at is null)) as "seen!""#,
        project_id,
        principal.username,
        privileged,
        accepted_only
    )
    .fetch_one(db)
    .await
}

/// Usernames of the active (accepted, not removed) members with their institutions (None without a profile).
pub async fn members_with_institutions(
    db: impl PgExecutor<'_>,
    project_id: Uuid,
) -> sqlx::Result<Vec<(String, Option<String>)>> {
    Ok(sqlx::query!(
        r#"select m.username, p.institution as "institution?"
           from project_member m left join researcher_profile p on p.username = m.username
           where m.project_id = $1 and m.accepted_at is not null and m.removed_at is null
           order by m.username"#,
        project_id
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.username, r.institution))
    .collect())
}

/// The project `project_id`, whoever may see it.
pub async fn get_project(db: impl PgExecutor<'_>, project_id: Uuid) -> sqlx::Result<Option<Project>> {
    sqlx::query_as!(
        Project,
        "select project_id as id, title, pi_username, created_at, closed_at from project where project_id = $1",
        project_id
    )
    .fetch_optional(db)
    .await
}

/// Every membership the project has had, oldest invitation first, with names and institutions
/// from their profiles. A member invited again after leaving appears once per period.
pub async fn list_members(db: impl PgExecutor<'_>, project_id: Uuid) -> sqlx::Result<Vec<ProjectMember>> {
    sqlx::query_as!(
        ProjectMember,
        r#"select m.username as "username!", m.role as "role!: MemberRole", m.invited_by as "invited_by!",
                  m.invited_at as "invited_at!", m.accepted_at, m.removed_at, m.removed_by,
                  p.name as "name?", p.institution as "institution?"
           from (select username, role, invited_by, invited_at, accepted_at, removed_at, removed_by
                 from project_member where project_id = $1
                 union all
                 select username, role, invited_by, invited_at, accepted_at, removed_at, removed_by
                 from project_member_period where project_id = $1) m
           left join researcher_profile p on p.username = m.username
           order by m.invited_at, m.username"#,
        project_id
    )
    .fetch_all(db)
    .await
}

async fn find_member(db: impl PgExecutor<'_>, project_id: Uuid, username: &str) -> sqlx::Result<Option<ProjectMember>> {
    sqlx::query_as!(
        ProjectMember,
        r#"select m.username, m.role as "role: MemberRole", m.invited_by, m.invited_at, m.accepted_at, m.removed_at,
                  m.removed_by, p.name as "name?", p.institution as "institution?"
           from project_member m left join researcher_profile p on p.username = m.username
           where m.project_id = $1 and m.username = $2"#,
        project_id,
        username
    )
    .fetch_optional(db)
    .await
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: Uuid,
    title: String,
    pi_username: String,
    created_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    role: Option<MemberRole>,
    invited_at: Option<DateTime<Utc>>,
    accepted_at: Option<DateTime<Utc>>,
}

/// The caller's projects (invited or accepted, not removed), newest first;
/// stewards and admins see every project.
pub async fn list_projects(db: impl PgExecutor<'_>, principal: &Principal) -> sqlx::Result<Vec<ProjectSummary>> {
    let privileged = is_steward(principal);
    let rows = sqlx::query_as!(
        SummaryRow,
        r#"select p.project_id as id, p.title, p.pi_username, p.created_at, p.closed_at,
                  m.role as "role?: MemberRole", m.invited_at as "invited_at?", m.accepted_at
           from project p
           left join project_member m
                  on m.project_id = p.project_id and m.username = $1 and m.removed_at is null
           where $2 or m.username is not null
           order by p.created_at desc, p.project_id"#,
        principal.username,
        privileged
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ProjectSummary {
            id: r.id,
            title: r.title,
            pi_username: r.pi_username,
            created_at: r.created_at,
            closed_at: r.closed_at,
            membership: match (r.role, r.invited_at) {
                (Some(role), Some(invited_at)) => Some(Membership { role, invited_at, accepted_at: r.accepted_at }),
                _ => None,
            },
        })
        .collect())
}

/// The project with its members, when the caller may see it; otherwise
/// `not-found`, exactly as for a project that does not exist.
pub async fn find_project(db: &PgPool, principal: &Principal, project_id: Uuid) -> Result<ProjectDetails, ApiError> {
    if !visible(db, project_id, principal).await? {
        return Err(ApiError::NotFound("project"));
    }
    details(db, project_id).await
}

async fn details(db: &PgPool, project_id: Uuid) -> Result<ProjectDetails, ApiError> {
    let (project, members) = tokio::try_join!(get_project(db, project_id), list_members(db, project_id))?;
    let project = project.ok_or(ApiError::NotFound("project"))?;
    Ok(ProjectDetails {
        id: project.id,
        title: project.title,
        pi_username: project.pi_username,
        created_at: project.created_at,
        closed_at: project.closed_at,
        members,
    })
}

// ---------------------------------------------------------------- projects: changes

/// Creates a project whose PI is the caller (a researcher with a profile).
pub async fn create_project(db: &PgPool, principal: &Principal, title: &str) -> Result<ProjectDetails, ApiError> {
    principal.require_any(&[Role::Researcher])?;
    let title = title.trim();
    if title.is_empty() || title.chars().count() > MAX_TEXT {
        return Err(ApiError::BadRequest(format!("`title` must be 1 to {MAX_TEXT} characters")));
    }
    let pi = principal.username.as_str();
    let mut tx = db.begin().await?;
    if !has_profile(&mut *tx, pi).await? {
        return Err(ApiError::Conflict(PROFILE_FIRST.into()));
    }
    let id =
        sqlx::query_scalar!("insert into project (title, pi_username) values ($1, $2) returning project_id", title, pi)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query!(
        "insert into project_member (project_id, username, role, invited_by, accepted_at)
         values ($1, $2, 'pi', $2, now())",
        id,
        pi
    )
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(pi, "project.create").target(format!("project:{id}")).details(json!({ "pi": pi })),
    )
    .await?;
    tx.commit().await?;
    details(db, id).await
}

/// The project's closing time, locking the project row until `tx` ends, so
/// membership changes of one project happen one after the other. `None` when
/// the project does not exist.
async fn lock_project(tx: &mut PgConnection, project_id: Uuid) -> sqlx::Result<Option<Option<DateTime<Utc>>>> {
    sqlx::query_scalar!("select closed_at from project where project_id = $1 for update", project_id)
        .fetch_optional(tx)
        .await
}

/// Locks the project and checks the caller may see it; `Ok(closed)`.
async fn open_for_change(tx: &mut PgConnection, project_id: Uuid, principal: &Principal) -> Result<bool, ApiError> {
    let closed_at = lock_project(&mut *tx, project_id).await?.ok_or(ApiError::NotFound("project"))?;
    if !visible(&mut *tx, project_id, principal).await? {
        return Err(ApiError::NotFound("project"));
    }
    Ok(closed_at.is_some())
}

fn refuse_closed(closed: bool) -> Result<(), ApiError> {
    if closed {
        return Err(ApiError::Conflict("the project is closed: its membership can no longer change".into()));
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct MemberState {
    role: MemberRole,
    accepted_at: Option<DateTime<Utc>>,
    removed_at: Option<DateTime<Utc>>,
}

async fn member_state(tx: &mut PgConnection, project_id: Uuid, username: &str) -> sqlx::Result<Option<MemberState>> {
    sqlx::query_as!(
        MemberState,
        r#"select role as "role: MemberRole", accepted_at, removed_at from project_member
           where project_id = $1 and username = $2 for update"#,
        project_id,
        username
    )
    .fetch_optional(tx)
    .await
}

/// The PI invites `username` as a collaborator. A removed member is invited
/// again on their old row; an active or invited member cannot be invited.
pub async fn invite_member(
    db: &PgPool,
    principal: &Principal,
    project_id: Uuid,
    username: &str,
) -> Result<ProjectMember, ApiError> {
    if !valid_username(username) {
        return Err(ApiError::BadRequest(format!("`username` must be 1 to {MAX_TEXT} characters without whitespace")));
    }
    let mut tx = db.begin().await?;
    let closed = open_for_change(&mut tx, project_id, principal).await?;
    if member_role(&mut *tx, project_id, &principal.username).await?.as_deref() != Some(MemberRole::Pi.as_str()) {
        return Err(ApiError::Forbidden("only the project's PI may invite members".into()));
    }
    refuse_closed(closed)?;
    let reinvited = match member_state(&mut tx, project_id, username).await? {
        Some(member) if member.removed_at.is_none() => {
            return Err(ApiError::Conflict("the user is already a member of the project, or invited".into()));
        }
        Some(_) => {
            // The period that ended is kept; the row starts a new one.
            sqlx::query!(
                "insert into project_member_period
                     (project_id, username, role, invited_by, invited_at, accepted_at, removed_at, removed_by)
                 select project_id, username, role, invited_by, invited_at, accepted_at, removed_at, removed_by
                 from project_member where project_id = $1 and username = $2",
                project_id,
                username
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "update project_member
                 set role = 'collaborator', invited_by = $3, invited_at = now(), accepted_at = null,
                     removed_at = null, removed_by = null
                 where project_id = $1 and username = $2",
                project_id,
                username,
                principal.username
            )
            .execute(&mut *tx)
            .await?;
            true
        }
        None => {
            sqlx::query!(
                "insert into project_member (project_id, username, role, invited_by)
                 values ($1, $2, 'collaborator', $3)",
                project_id,
                username,
                principal.username
            )
            .execute(&mut *tx)
            .await?;
            false
        }
    };
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "project.member.invite")
            .target(format!("project:{project_id}"))
            .details(json!({ "username": username, "role": MemberRole::Collaborator, "reinvited": reinvited })),
    )
    .await?;
    let title =
        sqlx::query_scalar!("select title from project where project_id = $1", project_id).fetch_one(&mut *tx).await?;
    super::duties::notify(
        &mut tx,
        username,
        "project.invitation",
        &format!("{} invites you to join the project “{title}”", principal.username),
        &format!("project:{project_id}"),
    )
    .await?;
    let member = find_member(&mut *tx, project_id, username).await?.ok_or(ApiError::NotFound("member"))?;
    tx.commit().await?;
    Ok(member)
}

/// The invited user accepts their invitation.
pub async fn accept_invitation(
    db: &PgPool,
    principal: &Principal,
    project_id: Uuid,
    username: &str,
) -> Result<ProjectMember, ApiError> {
    let mut tx = db.begin().await?;
    let closed = open_for_change(&mut tx, project_id, principal).await?;
    if principal.username != username {
        return Err(ApiError::Forbidden("only the invited user may accept an invitation".into()));
    }
    refuse_closed(closed)?;
    let member = member_state(&mut tx, project_id, username)
        .await?
        .filter(|m| m.removed_at.is_none())
        .ok_or(ApiError::NotFound("invitation"))?;
    if member.accepted_at.is_some() {
        return Err(ApiError::Conflict("the invitation is already accepted".into()));
    }
    sqlx::query!(
        "update project_member set accepted_at = now() where project_id = $1 and username = $2",
        project_id,
        username
    )
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "project.member.accept")
            .target(format!("project:{project_id}"))
            .details(json!({ "username": username, "role": member.role })),
    )
    .await?;
    let member = find_member(&mut *tx, project_id, username).await?.ok_or(ApiError::NotFound("member"))?;
    tx.commit().await?;
    Ok(member)
}

/// The PI removes a collaborator, or a member leaves (or declines an
/// invitation). The PI cannot be removed. The row stays, marked removed.
pub async fn remove_member(
    db: &PgPool,
    principal: &Principal,
    project_id: Uuid,
    username: &str,
) -> Result<(), ApiError> {
    let mut tx = db.begin().await?;
    let closed = open_for_change(&mut tx, project_id, principal).await?;
    let leaving = principal.username == username;
    if !leaving
        && member_role(&mut *tx, project_id, &principal.username).await?.as_deref() != Some(MemberRole::Pi.as_str())
    {
        return Err(ApiError::Forbidden("only the project's PI may remove other members".into()));
    }
    refuse_closed(closed)?;
    let member = member_state(&mut tx, project_id, username)
        .await?
        .filter(|m| m.removed_at.is_none())
        .ok_or(ApiError::NotFound("member"))?;
    if member.role == MemberRole::Pi {
        return Err(ApiError::Conflict("the PI cannot be removed from the project".into()));
    }
    sqlx::query!(
        "update project_member set removed_at = now(), removed_by = $3 where project_id = $1 and username = $2",
        project_id,
        username,
        principal.username
    )
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "project.member.remove").target(format!("project:{project_id}")).details(
            json!({
                "username": username,
                "role": member.role,
                "left": leaving,
                "had_accepted": member.accepted_at.is_some(),
            }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Refuses with `project-closed` when the project is closed, and otherwise
/// holds a share lock on its row until the transaction ends, so a closure
/// cannot commit between this check and what the caller writes.
pub async fn ensure_open(tx: &mut sqlx::PgConnection, project_id: Uuid) -> Result<(), ApiError> {
    let closed = sqlx::query_scalar!(
        r#"select closed_at is not null as "closed!" from project where project_id = $1 for share"#,
        project_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("project"))?;
    if closed {
        return Err(ApiError::Refused {
            code: crate::error::Refusal::ProjectClosed,
            message: "the project is closed: it takes no new applications, grants or keys".into(),
        });
    }
    Ok(())
}
