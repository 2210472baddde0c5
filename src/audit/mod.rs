//! The audit log: one append-only, hash-chained record of every decision,
//! release, download, upload and admin change.
//!
//! Rule: an action and its event commit together. Call [`record`] with the
//! transaction that performs the action; if the action rolls back, so does its
//! event. Writers serialise on the chain head, so concurrent actions still form
//! one unbroken chain.

pub mod chain;
pub mod verify;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;

pub use verify::{VerifyReport, verify_chain};

/// Who performed an action: a username, or `system:<component>` for Custodian itself.
pub type Actor<'a> = &'a str;

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub actor: Actor<'a>,
    /// Dotted verb, e.g. `token.create`, `cohort.create`.
    pub action: &'a str,
    /// What the action was about, e.g. `token:<id>`, `cohort:<slug>`.
    pub target: Option<String>,
    /// Structured facts: identifiers, sizes, reasons — never PHI or secrets.
    pub details: Value,
}

impl<'a> NewEvent<'a> {
    pub fn new(actor: Actor<'a>, action: &'a str) -> Self {
        Self { actor, action, target: None, details: Value::Object(serde_json::Map::new()) }
    }

    #[must_use]
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    #[must_use]
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// One recorded event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: Value,
    /// Hex SHA-256 of the previous event (all zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 linking this event to `prev_hash`.
    pub hash: String,
}

/// Appends `event` to the chain inside `tx`, returning its sequence number.
#[tracing::instrument(skip_all, fields(action = event.action), err)]
pub async fn record(tx: &mut PgConnection, event: NewEvent<'_>) -> Result<i64, sqlx::Error> {
    // The row lock on the head orders all writers; it is held until `tx` ends.
    let head = sqlx::query!("select seq, hash from audit_head where singleton for update").fetch_one(&mut *tx).await?;
    let seq = head.seq + 1;
    let occurred_at = chain::to_micros(Utc::now());
    let hash = chain::link(
        &head.hash,
        &chain::EventContent {
            seq,
            occurred_at,
            actor: event.actor,
            action: event.action,
            target: event.target.as_deref(),
            details: &event.details,
        },
    );
    // The event and the new head in one statement (one round trip less per action).
    sqlx::query!(
        "with event as (
             insert into audit_event (seq, occurred_at, actor, action, target, details, prev_hash, hash)
             values ($1, $2, $3, $4, $5, $6, $7, $8)
         )
         update audit_head set seq = $1, hash = $8 where singleton",
        seq,
        occurred_at,
        event.actor,
        event.action,
        event.target,
        event.details,
        head.hash,
        &hash[..],
    )
    .execute(&mut *tx)
    .await?;
    Ok(seq)
}

/// Filter for [`list_events`]; every field narrows the result.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Exact target, or a prefix when it ends with `*` (e.g. `cohort:*`).
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only events with a sequence number greater than this (keyset pagination).
    pub after_seq: Option<i64>,
    pub limit: i64,
}

/// Events matching `filter`, in chain order.
pub async fn list_events(db: impl PgExecutor<'_>, filter: &EventFilter) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let (target_exact, target_prefix) = match filter.target.as_deref() {
        Some(t) if t.ends_with('*') => (None, Some(format!("{}%", escape_like(&t[..t.len() - 1])))),
        Some(t) => (Some(t.to_owned()), None),
        None => (None, None),
    };
    let rows = sqlx::query!(
        r#"select seq, occurred_at, actor, action, target, details, prev_hash, hash
           from audit_event
           where ($1::text is null or actor = $1)
             and ($2::text is null or action = $2)
             and ($3::text is null or target = $3)
             and ($4::text is null or target like $4)
             and ($5::timestamptz is null or occurred_at >= $5)
             and ($6::timestamptz is null or occurred_at < $6)
             and seq > coalesce($7::bigint, 0)
           order by seq
           limit $8"#,
        filter.actor,
        filter.action,
        target_exact,
        target_prefix,
        filter.since,
        filter.until,
        filter.after_seq,
        filter.limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AuditEvent {
            seq: r.seq,
            occurred_at: r.occurred_at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            details: r.details,
            prev_hash: hex::encode(r.prev_hash),
            hash: hex::encode(r.hash),
        })
        .collect())
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}
