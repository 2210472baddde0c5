//! How much one project may download from a node: how many requests a
//! minute, and how many downloads at once.
//!
//! Every request for a release's bytes (a file, a range of it, the manifest,
//! an archive, a DICOMweb retrieval, a DRS access) is counted by
//! [`count_request`] after its grant check, so a caller who may not download from the project cannot
//! spend the project's allowance. The request rate is a token bucket per
//! project holding at most `release.max_requests_per_minute` requests and
//! refilled at that rate: a burst of a whole minute's allowance is served at
//! once (a client fetching a release of thousands of small files in parallel
//! is not slowed), and a client that keeps asking faster is answered
//! `429 download-rate-exceeded` with the seconds to wait in `Retry-After`.
//! At most `release.max_concurrent_downloads` bodies stream at once
//! ([`start_download`]); one more is answered `429 too-many-downloads`. Both limits hold per node.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::config::ReleaseConfig;
use crate::error::ApiError;

/// A project's request allowance: tokens left, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one token from a bucket holding at most `per_minute`, refilled
    /// at `per_minute` a minute; otherwise the seconds until one is there.
    fn take(&mut self, per_minute: u32, now: Instant) -> Result<(), u64> {
        let capacity = f64::from(per_minute);
        let per_second = capacity / 60.0;
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_second).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small and positive
            Err(((1.0 - self.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

/// Allowances per project on this node.
static BUCKETS: LazyLock<Mutex<HashMap<Uuid, Bucket>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Downloads streaming per project on this node.
static RUNNING: LazyLock<Mutex<HashMap<Uuid, Arc<Semaphore>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn poisoned<T>(_: T) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("a download limiter's lock is poisoned"))
}

/// Counts one request of `project_id` against its rate: call it once per
/// request, after the grant check.
pub fn count_request(project_id: Uuid, rules: &ReleaseConfig) -> Result<(), ApiError> {
    let per_minute = rules.max_requests_per_minute;
    let now = Instant::now();
    let mut buckets = BUCKETS.lock().map_err(poisoned)?;
    let bucket = buckets.entry(project_id).or_insert(Bucket { tokens: f64::from(per_minute), at: now });
    bucket.take(per_minute, now).map_err(|retry_after| ApiError::DownloadRateExceeded { per_minute, retry_after })
}

/// A place among the project's running downloads, held while a body streams.
pub fn start_download(project_id: Uuid, rules: &ReleaseConfig) -> Result<OwnedSemaphorePermit, ApiError> {
    let limit = rules.max_concurrent_downloads;
    let semaphore = RUNNING
        .lock()
        .map_err(poisoned)?
        .entry(project_id)
        .or_insert_with(|| Arc::new(Semaphore::new(limit as usize)))
        .clone();
    semaphore.try_acquire_owned().map_err(|_| ApiError::TooManyDownloads(limit))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_serves_a_minutes_burst_then_one_request_per_refill() {
        let start = Instant::now();
        let mut bucket = Bucket { tokens: 120.0, at: start };
        for _ in 0..120 {
            assert_eq!(bucket.take(120, start), Ok(()));
        }
        assert_eq!(bucket.take(120, start), Err(1), "two a second: the next in under a second");
        assert_eq!(bucket.take(120, start + Duration::from_millis(499)), Err(1));
        assert_eq!(bucket.take(120, start + Duration::from_millis(500)), Ok(()));
        let mut slow = Bucket { tokens: 0.0, at: start };
        assert_eq!(slow.take(6, start), Err(10), "six a minute: one every ten seconds");
    }

    #[test]
    fn a_bucket_never_holds_more_than_a_minute() {
        let start = Instant::now();
        let mut bucket = Bucket { tokens: 0.0, at: start };
        let later = start + Duration::from_hours(1);
        for _ in 0..60 {
            assert_eq!(bucket.take(60, later), Ok(()));
        }
        assert!(bucket.take(60, later).is_err(), "an idle hour leaves a minute's allowance, not an hour's");
    }
}
