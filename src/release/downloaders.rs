//! Who a download is recorded for: a signed-in user by username; an
//! anonymous visitor as `anonymous:` and a keyed hash of their IP address.
//!
//! The hash is the first 64 bits of an HMAC-SHA-256 of the address under a
//! random key of the UTC day (table `download_key`), so the same visitor is
//! one downloader within a day and unlinkable across days. The key is made by
//! the day's first anonymous download and deleted by a recurring job once the
//! day is over ([`run_forget_job`]); after that nobody can tell which address
//! a hash was, where any key derived from a lasting secret would let whoever
//! holds it try all 2^32 IPv4 addresses. The address itself is never stored,
//! logged or returned.

use std::net::IpAddr;
use std::time::Duration;

use aws_lc_rs::hmac;
use sqlx::PgPool;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::jobs::NewJob;

/// How an anonymous download whose client address is unknown is recorded
/// (and how every anonymous download was, before addresses were hashed).
pub const ANONYMOUS: &str = "anonymous";

/// Kind (and dedupe key) of the recurring job deleting past days' keys.
pub const FORGET_JOB: &str = "download.forget_keys";

/// Whether `username` (as recorded for a download) is an anonymous visitor.
pub fn is_anonymous(username: &str) -> bool {
    username == ANONYMOUS || username.starts_with("anonymous:")
}

/// Who a download by `principal` (none: anonymous) from `client` is recorded for.
pub async fn downloader(
    db: &PgPool,
    principal: Option<&Principal>,
    client: Option<IpAddr>,
) -> Result<String, ApiError> {
    match (principal, client) {
        (Some(principal), _) => Ok(principal.username.clone()),
        (None, None) => Ok(ANONYMOUS.to_owned()),
        (None, Some(ip)) => Ok(format!("{ANONYMOUS}:{}", visitor_hash(&todays_key(db).await?, ip))),
    }
}

/// The first 64 bits, in hex, of the HMAC-SHA-256 of `ip`'s octets under `key`.
fn visitor_hash(key: &[u8], ip: IpAddr) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = match ip.to_canonical() {
        IpAddr::V4(v4) => hmac::sign(&key, &v4.octets()),
        IpAddr::V6(v6) => hmac::sign(&key, &v6.octets()),
    };
    hex::encode(&tag.as_ref()[..8])
}

/// The key of the current UTC day, made if it is the day's first use. The
/// insert that loses a race does nothing, and both nodes read the winner's key.
async fn todays_key(db: &PgPool) -> Result<Vec<u8>, ApiError> {
    let today = sqlx::query_scalar!(r#"select key from download_key where day = (now() at time zone 'utc')::date"#)
        .fetch_optional(db)
        .await?;
    if let Some(key) = today {
        return Ok(key);
    }
    let mut fresh = [0u8; 32];
    aws_lc_rs::rand::fill(&mut fresh).map_err(|_| ApiError::Internal(anyhow::anyhow!("no randomness")))?;
    sqlx::query!(
        "insert into download_key (day, key) values ((now() at time zone 'utc')::date, $1) on conflict (day) do nothing",
        &fresh[..]
    )
    .execute(db)
    .await?;
    forget_past_keys(db).await?;
    let key = sqlx::query_scalar!(r#"select key from download_key where day = (now() at time zone 'utc')::date"#)
        .fetch_one(db)
        .await?;
    Ok(key)
}

/// Deletes the keys of days before the current UTC day; returns how many went.
pub async fn forget_past_keys(db: &PgPool) -> Result<u64, sqlx::Error> {
    let deleted =
        sqlx::query!("delete from download_key where day < (now() at time zone 'utc')::date").execute(db).await?;
    Ok(deleted.rows_affected())
}

/// The next run of the key-forgetting job, `after` from now; never more than one pending.
pub fn next_forget(after: Duration) -> NewJob {
    NewJob::new(FORGET_JOB).dedupe(FORGET_JOB).after(after)
}

/// The key-forgetting job: deletes past days' keys, then names its next run,
/// a minute into the next UTC day (by the database's clock, which dates the keys).
pub async fn run_forget_job(db: &PgPool) -> anyhow::Result<Option<NewJob>> {
    let forgotten = forget_past_keys(db).await?;
    tracing::info!(forgotten, "past days' download keys deleted");
    Ok(Some(next_forget(crate::jobs::until_next_utc_day(db).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visitor_is_one_hash_a_day_another_with_another_key_and_mapped_addresses_are_their_ipv4() {
        let (monday, tuesday) = ([1u8; 32], [2u8; 32]);
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let hash = visitor_hash(&monday, ip);
        assert_eq!(hash.len(), 16, "64 bits in hex");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(visitor_hash(&monday, ip), hash);
        assert_eq!(visitor_hash(&monday, "::ffff:203.0.113.5".parse().unwrap()), hash);
        assert_ne!(visitor_hash(&tuesday, ip), hash);
        assert_ne!(visitor_hash(&monday, "203.0.113.6".parse().unwrap()), hash);
    }

    #[test]
    fn anonymous_downloaders_are_told_from_registered_ones() {
        assert!(is_anonymous("anonymous"));
        assert!(is_anonymous("anonymous:0123456789abcdef"));
        assert!(!is_anonymous("anonymousfan"));
        assert!(!is_anonymous("rita"));
    }
}
