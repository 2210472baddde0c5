//! What the caller is to one project, decided in one place.
//!
//! Every project-scoped action asks [`standing`] once and then states what it
//! needs: [`Standing::require_pi`], [`Standing::require_member`] or
//! [`Standing::require_reader`]. The answer to someone who may not act is the
//! same everywhere: `403` to whoever may see the thing acted on (a member, a
//! steward or admin, and an invitee when the thing is the project itself), and
//! `404`, exactly as for something that does not exist, to anyone else.
//!
//! Routes under `/projects/{id}` take the [`InProject`] extractor, which reads
//! the path and the standing before the handler runs.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::projects::MemberRole;
use crate::auth::{Authenticator, Principal};
use crate::error::ApiError;
use crate::http::extract::AppPath;

/// The caller's relation to a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// An accepted, not removed member (whatever else they are).
    Member(MemberRole),
    /// A steward or admin who is not a member: reads everything, acts on nothing of the project's own.
    Steward,
    /// Invited, not yet accepted: sees the project itself, to decide whether to join, not its data.
    Invitee,
    /// Anyone else, and everyone when the project does not exist.
    Stranger,
}

/// The caller's standing in `project_id`.
pub async fn standing(db: impl PgExecutor<'_>, project_id: Uuid, principal: &Principal) -> Result<Standing, ApiError> {
    let row = sqlx::query!(
        r#"select m.role as "role: MemberRole", m.accepted_at
           from project p
           left join project_member m
                  on m.project_id = p.project_id and m.username = $2 and m.removed_at is null
           where p.project_id = $1"#,
        project_id,
        principal.username,
    )
    .fetch_optional(db)
    .await?;
    let privileged = super::projects::is_steward(principal);
    Ok(match row {
        None => Standing::Stranger,
        Some(row) => match (row.role, row.accepted_at) {
            (Some(role), Some(_)) => Standing::Member(role),
            _ if privileged => Standing::Steward,
            (Some(_), None) => Standing::Invitee,
            (None, _) => Standing::Stranger,
        },
    })
}

impl Standing {
    /// The member's role, if an accepted member.
    pub fn role(self) -> Option<MemberRole> {
        match self {
            Self::Member(role) => Some(role),
            _ => None,
        }
    }

    /// Whether the caller may read the project's data (applications, grants, duties, notices).
    pub fn reads(self) -> bool {
        matches!(self, Self::Member(_) | Self::Steward)
    }

    /// Whether the caller may see `thing`: the project itself (`"project"`) is
    /// seen by invitees too; anything of the project's only by its readers.
    fn sees(self, thing: &'static str) -> bool {
        self.reads() || (self == Self::Invitee && thing == "project")
    }

    fn refuse(self, thing: &'static str, message: &str) -> ApiError {
        if self.sees(thing) { ApiError::Forbidden(message.to_owned()) } else { ApiError::NotFound(thing) }
    }

    /// Only the PI. `thing` names what a stranger is told does not exist.
    pub fn require_pi(self, thing: &'static str, message: &str) -> Result<(), ApiError> {
        if self == Self::Member(MemberRole::Pi) { Ok(()) } else { Err(self.refuse(thing, message)) }
    }

    /// Any accepted member.
    pub fn require_member(self, thing: &'static str, message: &str) -> Result<MemberRole, ApiError> {
        self.role().ok_or_else(|| self.refuse(thing, message))
    }

    /// A member, a steward or an admin; anyone else is told `thing` does not exist.
    pub fn require_reader(self, thing: &'static str) -> Result<(), ApiError> {
        if self.reads() { Ok(()) } else { Err(ApiError::NotFound(thing)) }
    }
}

/// The caller of a route under `/projects/{id}`, with their standing in that project.
#[derive(Debug, Clone)]
pub struct InProject {
    pub project_id: Uuid,
    pub principal: Principal,
    pub standing: Standing,
}

impl<S> FromRequestParts<S> for InProject
where
    S: Send + Sync,
    std::sync::Arc<Authenticator>: FromRef<S>,
    PgPool: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let AppPath(project_id) = AppPath::<Uuid>::from_request_parts(parts, state).await?;
        let standing = standing(&PgPool::from_ref(state), project_id, &principal).await?;
        Ok(Self { project_id, principal, standing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pi_passes_and_only_readers_learn_the_project_exists() {
        let pi = Standing::Member(MemberRole::Pi);
        let collaborator = Standing::Member(MemberRole::Collaborator);
        assert!(pi.require_pi("grant", "no").is_ok());
        for (who, code) in
            [(collaborator, 403), (Standing::Steward, 403), (Standing::Invitee, 404), (Standing::Stranger, 404)]
        {
            let status = who.require_pi("grant", "no").unwrap_err().status().as_u16();
            assert_eq!(status, code, "{who:?}");
        }
        assert_eq!(Standing::Invitee.require_pi("project", "no").unwrap_err().status().as_u16(), 403);
        assert_eq!(Standing::Stranger.require_pi("project", "no").unwrap_err().status().as_u16(), 404);
        assert_eq!(collaborator.require_member("project", "no").unwrap(), MemberRole::Collaborator);
        assert!(Standing::Steward.require_reader("grant").is_ok());
        assert!(Standing::Invitee.require_reader("project").is_err());
    }
}
