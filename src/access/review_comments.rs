//! The committee's threaded comments on an application. The project's members
//! and the stewards comment; stewards may mark a comment internal, hidden from
//! the applicants. Text is append-only: an edit by the author adds a revision
//! and every earlier one stays. Re-exported by [`super::review`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::projects::is_steward;
use super::review::readable;
use crate::audit::{self, NewEvent};
use crate::auth::Principal;
use crate::error::ApiError;

/// A comment with every revision of its text.
#[derive(Debug, Serialize, ToSchema)]
pub struct Comment {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub author: String,
    /// Visible to stewards only.
    pub internal: bool,
    pub created_at: DateTime<Utc>,
    /// The current text.
    pub body: String,
    /// Every text it had, oldest first, with when it was written.
    pub revisions: Vec<CommentRevision>,
}

/// One text of a comment.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommentRevision {
    pub revision: i32,
    pub body: String,
    pub at: DateTime<Utc>,
}

/// A new comment as its author writes it.
#[derive(Debug, Clone, Copy)]
pub struct NewComment<'a> {
    pub body: &'a str,
    /// The comment this one answers.
    pub parent_id: Option<Uuid>,
    /// Stewards only: hidden from the applicants.
    pub internal: bool,
}

/// A comment's text, trimmed, or the reason it cannot be one.
fn comment_body(body: &str) -> Result<&str, ApiError> {
    let body = body.trim();
    if body.is_empty() || body.chars().count() > 10_000 {
        return Err(ApiError::BadRequest("a comment is 1 to 10,000 characters".into()));
    }
    Ok(body)
}

/// The comments of application `id`, oldest first, each with its revisions;
/// internal ones only `with_internal`.
async fn comments_of(conn: &mut PgConnection, id: Uuid, with_internal: bool) -> Result<Vec<Comment>, ApiError> {
    let rows = sqlx::query!(
        "select c.comment_id, c.parent_id, c.author, c.internal, c.created_at, r.revision, r.body, r.at
         from review_comment c join review_comment_revision r using (comment_id)
         where c.application_id = $1 and (not c.internal or $2)
         order by c.created_at, c.comment_id, r.revision",
        id,
        with_internal,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<Comment> = Vec::new();
    for row in rows {
        if out.last().is_none_or(|c| c.id != row.comment_id) {
            out.push(Comment {
                id: row.comment_id,
                parent_id: row.parent_id,
                author: row.author,
                internal: row.internal,
                created_at: row.created_at,
                body: String::new(),
                revisions: Vec::new(),
            });
        }
        if let Some(c) = out.last_mut() {
            c.body.clone_from(&row.body);
            c.revisions.push(CommentRevision { revision: row.revision, body: row.body, at: row.at });
        }
    }
    Ok(out)
}

/// The comments of an application the caller may read, threaded by
/// `parent_id`: members see the ones not marked internal, stewards all.
pub async fn comments(
    conn: &mut PgConnection,
    principal: &Principal,
    application_id: Uuid,
) -> Result<Vec<Comment>, ApiError> {
    readable(conn, principal, application_id).await?;
    comments_of(conn, application_id, is_steward(principal)).await
}

/// Adds the caller's comment to an application they may read (members and
/// stewards; only stewards write internal ones): the comments, with the new one.
pub async fn comment(
    tx: &mut PgConnection,
    principal: &Principal,
    application_id: Uuid,
    new: NewComment<'_>,
) -> Result<Vec<Comment>, ApiError> {
    readable(tx, principal, application_id).await?;
    let reviewer = is_steward(principal);
    if new.internal && !reviewer {
        return Err(ApiError::Forbidden("only stewards write internal comments".into()));
    }
    let body = comment_body(new.body)?;
    if let Some(parent) = new.parent_id {
        // A reply answers a comment of the same application that its author can see.
        let parent_visible = sqlx::query_scalar!(
            r#"select exists (select 1 from review_comment
                              where comment_id = $1 and application_id = $2 and (not internal or $3)) as "visible!""#,
            parent,
            application_id,
            reviewer,
        )
        .fetch_one(&mut *tx)
        .await?;
        if !parent_visible {
            return Err(ApiError::NotFound("comment"));
        }
    }
    let cid = sqlx::query_scalar!(
        "insert into review_comment (application_id, parent_id, author, internal) values ($1, $2, $3, $4)
         returning comment_id",
        application_id,
        new.parent_id,
        principal.username,
        new.internal,
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!("insert into review_comment_revision (comment_id, revision, body) values ($1, 1, $2)", cid, body)
        .execute(&mut *tx)
        .await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "review.comment")
            .target(format!("application:{application_id}"))
            .details(json!({ "comment": cid, "internal": new.internal, "reply_to": new.parent_id })),
    )
    .await?;
    comments_of(tx, application_id, reviewer).await
}

/// Adds `body` as the next revision of the caller's own comment; earlier ones
/// stay. The application's comments, with the edit.
pub async fn edit_comment(
    tx: &mut PgConnection,
    principal: &Principal,
    comment_id: Uuid,
    body: &str,
) -> Result<Vec<Comment>, ApiError> {
    let body = comment_body(body)?;
    let found = sqlx::query!("select application_id, author from review_comment where comment_id = $1", comment_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound("comment"))?;
    // A comment on an application the caller may not read does not exist for them.
    readable(tx, principal, found.application_id).await.map_err(|_| ApiError::NotFound("comment"))?;
    if found.author != principal.username {
        return Err(ApiError::Forbidden("only its author edits a comment".into()));
    }
    // Revisions are numbered one after another: one edit of a comment at a time.
    sqlx::query!("select 1 as one from review_comment where comment_id = $1 for update", comment_id)
        .fetch_optional(&mut *tx)
        .await?;
    let revision = sqlx::query_scalar!(
        r#"insert into review_comment_revision (comment_id, revision, body)
           select $1, max(revision) + 1, $2 from review_comment_revision where comment_id = $1
           returning revision"#,
        comment_id,
        body,
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "review.comment.edit")
            .target(format!("application:{}", found.application_id))
            .details(json!({ "comment": comment_id, "revision": revision })),
    )
    .await?;
    comments_of(tx, found.application_id, is_steward(principal)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_is_one_to_ten_thousand_characters_once_trimmed() {
        assert_eq!(comment_body("  Which scanners?\n").unwrap(), "Which scanners?");
        assert!(comment_body(" \n\t ").is_err());
        assert!(comment_body(&"é".repeat(10_000)).is_ok(), "characters, not bytes");
        assert!(comment_body(&"x".repeat(10_001)).is_err());
    }
}
