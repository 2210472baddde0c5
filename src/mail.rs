//! E-mail notifications: the notification outbox delivered by SMTP.
//!
//! Every notification row is written by [`crate::access::duties::notify`], which
//! calls [`enqueue`] in the same transaction: one `mail_delivery` per person it
//! reaches by e-mail (a username, or every steward for `role:steward`) who has
//! an address on record (their researcher profile) and has not turned e-mail
//! off for its kind, and a [`DELIVER_JOB`] per delivery. The job sends one
//! plain-text message: the notification's subject, a link to the page that
//! needs action ([`link`]) and how to change one's preferences. Nothing else of
//! the registry goes in, and message bodies are never logged.
//!
//! A failed attempt is retried by the job queue with exponential back-off up to
//! `mail.max_attempts`; a permanent refusal (an SMTP 5xx) is not retried. Either
//! way the outcome is kept on the delivery and audited; the notification stays.

use anyhow::Context as _;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, NewEvent};
use crate::config::MailConfig;
use crate::error::ApiError;
use crate::jobs::{Job, NewJob};

/// The job that sends one delivery.
pub const DELIVER_JOB: &str = "mail.deliver";

/// The kinds of notification Custodian writes, each of which one can turn off
/// by e-mail.
pub const KINDS: &[&str] = &[
    "application.submitted",
    "application.changes_requested",
    "application.approved",
    "application.rejected",
    "grant.active",
    "grant.suspended",
    "grant.revoked",
    "grant.closed",
    "grant.renewal",
    "grant.renewal.decided",
    "publication.notified",
    "withdrawal.notice",
    "project.invitation",
    "challenge.team.invitation",
    "agreement.published",
    "duty.due",
];

/// The job queue's backstop: the handler stops earlier, at `mail.max_attempts`.
const JOB_ATTEMPTS: i32 = 25;

/// An SMTP transport for `url` (`smtp://`, `smtp://…?tls=required`, `smtps://`).
pub fn transport(url: &str) -> Result<AsyncSmtpTransportBuilder, lettre::transport::smtp::Error> {
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
}

/// The page of the web interface a notification's target is acted on at,
/// under `public_url`:
///
/// | target | page |
/// |---|---|
/// | `application:<id>` | `/ui/applications/<id>`, or `/ui/steward/applications/<id>` for stewards |
/// | `grant:<id>` | `/ui/grants/<id>` |
/// | `project:<id>` | `/ui/projects/<id>` |
/// | `open-cohort:<slug>` | `/ui/open-cohorts/<slug>` |
/// | anything else, or none | `/ui/notifications` |
///
/// With an empty `public_url` it is the path alone, as the notifications page links it.
pub fn link(public_url: &str, to_stewards: bool, target: Option<&str>) -> String {
    let base = public_url.trim_end_matches('/');
    let page = target.and_then(|t| t.split_once(':')).and_then(|(kind, id)| {
        if kind == "open-cohort" {
            let slug_like =
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            return slug_like.then(|| format!("/ui/open-cohorts/{id}"));
        }
        let section = match kind {
            "application" if to_stewards => "steward/applications",
            "application" => "applications",
            "grant" => "grants",
            "project" => "projects",
            _ => return None,
        };
        Uuid::parse_str(id).ok().map(|id| format!("/ui/{section}/{id}"))
    });
    format!("{base}{}", page.as_deref().unwrap_or("/ui/notifications"))
}

/// The text of a message: the subject, the link and the preferences footer.
fn body(public_url: &str, to_stewards: bool, subject: &str, target: Option<&str>) -> String {
    let base = public_url.trim_end_matches('/');
    format!(
        "{subject}\n\nOpen it: {}\n\n-- \nYou receive this because of your role in the registry. \
         Change which notifications reach you by e-mail at {base}/ui/account \
         (or PUT /api/v1/me/notification-preferences).\n",
        link(public_url, to_stewards, target),
    )
}

/// Queues the e-mail deliveries of notification `notification` to `recipient`
/// (a username or `role:steward`) of `kind`. Called once, where notifications
/// are written. People without an e-mail address on record, and those who
/// turned e-mail (or this kind) off, get no delivery.
pub async fn enqueue(tx: &mut PgConnection, notification: Uuid, recipient: &str, kind: &str) -> Result<(), ApiError> {
    let deliveries = sqlx::query_scalar!(
        "insert into mail_delivery (notification_id, username)
         select $1, p.username
         from researcher_profile p
         left join notification_preference pref on pref.username = p.username
         where (p.username = $2
                or ($2 = 'role:steward'
                    and exists (select 1 from app_user u where u.username = p.username and 'steward' = any(u.roles))))
           and coalesce(pref.email, true)
           and not ($3 = any(coalesce(pref.muted_kinds, '{}')))
         returning delivery_id",
        notification,
        recipient,
        kind,
    )
    .fetch_all(&mut *tx)
    .await?;
    for delivery in deliveries {
        let job = NewJob {
            max_attempts: JOB_ATTEMPTS,
            ..NewJob::new(DELIVER_JOB)
                .dedupe(&format!("{DELIVER_JOB}:{delivery}"))
                .payload(json!({ "delivery": delivery }))
        };
        crate::jobs::enqueue(&mut *tx, &job).await?;
    }
    Ok(())
}

/// How a delivery ended, when it did.
async fn settle(db: &PgPool, delivery: Uuid, state: &str, attempts: i32, error: Option<&str>) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "update mail_delivery set state = $2, attempts = $3, last_error = $4,
                sent_at = case when $2 = 'sent' then now() end
         where delivery_id = $1",
        delivery,
        state,
        attempts,
        error,
    )
    .execute(&mut *tx)
    .await?;
    if state != "skipped" {
        audit::record(
            &mut tx,
            NewEvent::new("system:mail", &format!("mail.{state}"))
                .target(format!("mail_delivery:{delivery}"))
                .details(json!({ "attempts": attempts, "error": error })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Sends one delivery (a [`DELIVER_JOB`]).
pub async fn run_job(db: &PgPool, config: &MailConfig, job: &Job) -> anyhow::Result<Option<NewJob>> {
    let delivery: Uuid =
        serde_json::from_value(job.payload["delivery"].clone()).context("the job names no delivery")?;
    let Some(row) = sqlx::query!(
        "select d.state, n.recipient, n.subject, n.target, p.email as \"email?\"
         from mail_delivery d
         join notification n on n.notification_id = d.notification_id
         left join researcher_profile p on p.username = d.username
         where d.delivery_id = $1",
        delivery
    )
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    if row.state != "queued" {
        return Ok(None);
    }
    let Some(url) = &config.smtp_url else {
        settle(db, delivery, "skipped", job.attempt, Some("e-mail is off (no mail.smtp_url)")).await?;
        return Ok(None);
    };
    let Some(to) = row.email.and_then(|e| e.trim().parse::<Mailbox>().ok()) else {
        settle(db, delivery, "skipped", job.attempt, Some("no usable e-mail address on record")).await?;
        return Ok(None);
    };
    let message = Message::builder()
        .from(config.from.parse().context("mail.from")?)
        .to(to)
        .subject(&row.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body(&config.public_url, row.recipient == "role:steward", &row.subject, row.target.as_deref()))?;
    let mailer = transport(url.expose_secret())?.build();
    match mailer.send(message).await {
        Ok(_) => settle(db, delivery, "sent", job.attempt, None).await.map(|()| None),
        Err(error) => {
            let text = error.to_string();
            if error.is_permanent() || job.attempt >= i32::try_from(config.max_attempts).unwrap_or(i32::MAX) {
                settle(db, delivery, "failed", job.attempt, Some(&text)).await?;
                return Ok(None);
            }
            sqlx::query!(
                "update mail_delivery set attempts = $2, last_error = $3 where delivery_id = $1",
                delivery,
                job.attempt,
                text
            )
            .execute(db)
            .await?;
            Err(anyhow::anyhow!("sending a notification e-mail: {text}"))
        }
    }
}

// ---------------------------------------------------------------- preferences

/// Whether one kind of notification reaches the caller by e-mail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationKindPreference {
    /// e.g. `application.changes_requested`
    #[schema(max_length = 80)]
    pub kind: String,
    pub email: bool,
}

/// Which notifications reach the caller by e-mail (all, unless turned off).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationPreferences {
    /// E-mail at all.
    pub email: bool,
    /// Per kind; on `PUT`, kinds left out are on.
    pub kinds: Vec<NotificationKindPreference>,
}

/// `username`'s preferences.
pub async fn preferences(db: impl PgExecutor<'_>, username: &str) -> Result<NotificationPreferences, ApiError> {
    let row = sqlx::query!("select email, muted_kinds from notification_preference where username = $1", username)
        .fetch_optional(db)
        .await?;
    let (email, muted) = row.map_or((true, Vec::new()), |r| (r.email, r.muted_kinds));
    Ok(NotificationPreferences {
        email,
        kinds: KINDS
            .iter()
            .map(|k| NotificationKindPreference { kind: (*k).to_owned(), email: !muted.iter().any(|m| m == k) })
            .collect(),
    })
}

/// Replaces `username`'s preferences.
pub async fn set_preferences(
    db: &PgPool,
    username: &str,
    wanted: &NotificationPreferences,
) -> Result<NotificationPreferences, ApiError> {
    if let Some(unknown) = wanted.kinds.iter().find(|k| !KINDS.contains(&k.kind.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "`{}` is not a kind of notification; the kinds are {}",
            unknown.kind.chars().take(80).collect::<String>(),
            KINDS.join(", ")
        )));
    }
    let mut muted: Vec<String> = wanted.kinds.iter().filter(|k| !k.email).map(|k| k.kind.clone()).collect();
    muted.sort();
    muted.dedup();
    sqlx::query!(
        "insert into notification_preference (username, email, muted_kinds) values ($1, $2, $3)
         on conflict (username) do update set email = $2, muted_kinds = $3, updated_at = now()",
        username,
        wanted.email,
        &muted,
    )
    .execute(db)
    .await?;
    preferences(db, username).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_at_the_page_of_the_target() {
        let id = "0b7d1c8e-8a57-4c1e-9d49-2b7a4f0e6a11";
        let base = "https://r.example.org";
        assert_eq!(
            link("https://r.example.org/", false, Some(&format!("application:{id}"))),
            format!("{base}/ui/applications/{id}")
        );
        assert_eq!(
            link(base, true, Some(&format!("application:{id}"))),
            format!("{base}/ui/steward/applications/{id}"),
            "stewards review it on their page"
        );
        assert_eq!(link(base, false, Some(&format!("grant:{id}"))), format!("{base}/ui/grants/{id}"));
        assert_eq!(
            link(base, false, Some("open-cohort:brain-mri-2027")),
            format!("{base}/ui/open-cohorts/brain-mri-2027")
        );
        assert_eq!(link(base, false, Some("open-cohort:../x")), format!("{base}/ui/notifications"));
        assert_eq!(link(base, false, Some("cohort:x")), format!("{base}/ui/notifications"));
        assert_eq!(link(base, false, Some("application:../../x")), format!("{base}/ui/notifications"));
        assert_eq!(link(base, false, None), format!("{base}/ui/notifications"));
        assert_eq!(link("", false, Some(&format!("project:{id}"))), format!("/ui/projects/{id}"));
    }

    #[test]
    fn the_body_names_the_subject_the_link_and_the_preferences() {
        let text =
            body("https://r.example.org", false, "Changes asked", Some("project:0b7d1c8e-8a57-4c1e-9d49-2b7a4f0e6a11"));
        assert!(text.starts_with("Changes asked\n"));
        assert!(text.contains("https://r.example.org/ui/projects/0b7d1c8e-8a57-4c1e-9d49-2b7a4f0e6a11"));
        assert!(text.contains("https://r.example.org/ui/account"), "where preferences are changed");
        assert!(text.contains("/api/v1/me/notification-preferences"));
    }
}
