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
    let head = lock_head(&mut *tx).await?;
    let (seq, occurred_at, hash) = head.link(&event);
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

/// The head of the chain: the last event's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: Vec<u8>,
}

impl Head {
    /// The sequence number, time and hash `event` gets when it follows this head.
    fn link(&self, event: &NewEvent<'_>) -> (i64, DateTime<Utc>, [u8; chain::HASH_LEN]) {
        let seq = self.seq + 1;
        let occurred_at = chain::to_micros(Utc::now());
        let content = chain::EventContent {
            seq,
            occurred_at,
            actor: event.actor,
            action: event.action,
            target: event.target.as_deref(),
            details: &event.details,
        };
        (seq, occurred_at, chain::link(&self.hash, &content))
    }
}

/// Reads the head and locks it until `tx` ends: the row lock orders all writers.
pub async fn lock_head(tx: &mut PgConnection) -> Result<Head, sqlx::Error> {
    let head = sqlx::query!("select seq, hash from audit_head where singleton for update").fetch_one(tx).await?;
    Ok(Head { seq: head.seq, hash: head.hash })
}

/// Events linked one after another from a locked head, as the columns of one
/// insert: for a writer that records several events and saves round trips by
/// inserting them with its own rows. The transaction must hold the head's lock
/// ([`lock_head`], or `for update` in one of its statements), insert every
/// event, and set the head to [`Linked::head`].
#[derive(Debug, Default)]
pub struct Linked {
    pub seq: Vec<i64>,
    pub occurred_at: Vec<DateTime<Utc>>,
    pub actor: Vec<String>,
    pub action: Vec<String>,
    pub target: Vec<Option<String>>,
    pub details: Vec<Value>,
    pub prev_hash: Vec<Vec<u8>>,
    pub hash: Vec<Vec<u8>>,
    head: Option<Head>,
}

impl Linked {
    /// `events` chained after `head`, in order.
    pub fn after(head: Head, events: Vec<NewEvent<'_>>) -> Self {
        let mut linked = Self::default();
        let mut last = head;
        for event in events {
            let (seq, occurred_at, hash) = last.link(&event);
            linked.seq.push(seq);
            linked.occurred_at.push(occurred_at);
            linked.actor.push(event.actor.to_owned());
            linked.action.push(event.action.to_owned());
            linked.target.push(event.target);
            linked.details.push(event.details);
            linked.prev_hash.push(std::mem::replace(&mut last.hash, hash.to_vec()));
            linked.hash.push(hash.to_vec());
            last.seq = seq;
        }
        linked.head = Some(last);
        linked
    }

    /// The head once these events are in: the last one's sequence number and hash.
    pub fn head(&self) -> &Head {
        self.head.as_ref().expect("built by Linked::after")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_linked_after_a_head_form_the_chain_verify_expects() {
        let head = Head { seq: 41, hash: vec![9; chain::HASH_LEN] };
        let events = vec![
            NewEvent::new("alice", "upload.files").target("upload:a").details(serde_json::json!({ "files": 2 })),
            NewEvent::new("bob", "upload.files").target("upload:b"),
        ];
        let linked = Linked::after(head.clone(), events);
        assert_eq!(linked.seq, [42, 43]);
        assert_eq!(linked.prev_hash[0], head.hash, "the first event follows the head");
        assert_eq!(linked.prev_hash[1], linked.hash[0], "each event follows the one before");
        for i in 0..2 {
            let content = chain::EventContent {
                seq: linked.seq[i],
                occurred_at: linked.occurred_at[i],
                actor: &linked.actor[i],
                action: &linked.action[i],
                target: linked.target[i].as_deref(),
                details: &linked.details[i],
            };
            assert_eq!(chain::link(&linked.prev_hash[i], &content).to_vec(), linked.hash[i]);
        }
        assert_eq!(*linked.head(), Head { seq: 43, hash: linked.hash[1].clone() });
    }
}
