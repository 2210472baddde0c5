//! End-to-end verification of the audit chain.

use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::chain::{self, EventContent, GENESIS};

/// Events read per round trip while verifying.
const BATCH: i64 = 5_000;

/// Outcome of walking the whole chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerifyReport {
    /// Whether every event links to its predecessor and the head.
    pub ok: bool,
    /// Events checked.
    pub events_checked: i64,
    /// Sequence number recorded in the chain head.
    pub head_seq: i64,
    /// First sequence number at which the chain is broken.
    pub first_bad_seq: Option<i64>,
    /// What is wrong at `first_bad_seq`.
    pub problem: Option<String>,
}

/// Recomputes every link from the first event to the head.
pub async fn verify_chain(pool: &PgPool) -> Result<VerifyReport, sqlx::Error> {
    // One snapshot for the whole walk, so concurrent appends cannot look like damage.
    let mut tx = pool.begin().await?;
    sqlx::query!("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    let head = sqlx::query!("select seq, hash from audit_head where singleton").fetch_one(&mut *tx).await?;

    let mut prev_hash = GENESIS.to_vec();
    let mut expected_seq = 1_i64;
    let mut checked = 0_i64;
    let broken = |seq: i64, problem: String, checked: i64| VerifyReport {
        ok: false,
        events_checked: checked,
        head_seq: head.seq,
        first_bad_seq: Some(seq),
        problem: Some(problem),
    };
    loop {
        let rows = sqlx::query!(
            "select seq, occurred_at, actor, action, target, details, prev_hash, hash
             from audit_event where seq >= $1 order by seq limit $2",
            expected_seq,
            BATCH
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            if row.seq != expected_seq {
                return Ok(broken(expected_seq, format!("event {expected_seq} is missing"), checked));
            }
            if row.prev_hash != prev_hash {
                return Ok(broken(row.seq, "prev_hash does not match the previous event".into(), checked));
            }
            let computed = chain::link(
                &prev_hash,
                &EventContent {
                    seq: row.seq,
                    occurred_at: row.occurred_at,
                    actor: &row.actor,
                    action: &row.action,
                    target: row.target.as_deref(),
                    details: &row.details,
                },
            );
            if computed[..] != row.hash[..] {
                return Ok(broken(row.seq, "content does not match its hash".into(), checked));
            }
            checked += 1;
            prev_hash = row.hash;
            expected_seq += 1;
        }
    }
    tx.commit().await?;
    let last = expected_seq - 1;
    if last != head.seq {
        let seq = last.min(head.seq) + 1;
        return Ok(broken(seq, format!("the chain ends at {last} but its head records {}", head.seq), checked));
    }
    if head.hash != prev_hash {
        return Ok(broken(last.max(1), "the chain head's hash does not match the last event".into(), checked));
    }
    Ok(VerifyReport { ok: true, events_checked: checked, head_seq: head.seq, first_bad_seq: None, problem: None })
}
