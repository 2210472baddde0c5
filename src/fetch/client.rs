//! The registry as `custodian fetch` talks to it: one HTTP client, the
//! bearer token (renewed from its file on `401`), the download session, and
//! the retry rule every request follows.
//!
//! Retried, with bounded exponential back-off and jitter: connection errors,
//! `408`, `429` (after its `Retry-After`) and `5xx`. Not retried: `401` once
//! the token file gave nothing new, and `403`, which stop the whole run (a
//! suspended or revoked grant), and any other `4xx`, which fails the file.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use url::Url;

/// The header grouping one run's requests in the registry's audit.
const SESSION_HEADER: &str = "x-download-session";
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First pause after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_mins(2);

/// Why a request or a file did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// The registry refused the run (`401` with no renewed token, `403`):
    /// nothing more is asked of it.
    #[error("{0}")]
    Refused(String),
    /// This file could not be fetched; the others go on.
    #[error("{0}")]
    File(String),
}

/// Where the bearer token comes from.
#[derive(Debug)]
pub enum TokenSource {
    /// Given once (`--token` or `CUSTODIAN_TOKEN`).
    Fixed(String),
    /// Read from a file, and read again when the registry answers `401`, so
    /// a token renewed there during a long transfer is picked up.
    File(PathBuf),
    /// None: an open cohort's published version, which anyone downloads.
    Anonymous,
}

/// A connection to one registry for one run.
#[derive(Debug)]
pub struct Registry {
    http: reqwest::Client,
    base: Url,
    source: TokenSource,
    token: Mutex<String>,
    session: String,
    /// Failed attempts allowed per request or file before giving up.
    pub retries: u32,
}

/// The registry's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl Registry {
    /// A registry at `server` (`http://` or `https://`), authenticated by `source`.
    pub fn new(server: &str, source: TokenSource, retries: u32) -> Result<Self> {
        let base = Url::parse(server).with_context(|| format!("--server `{server}` is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--server `{server}` must be an http:// or https:// URL");
        }
        let token = read_token(&source)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            // A stalled transfer is cut and resumed rather than waited on forever.
            .read_timeout(Duration::from_mins(1))
            .user_agent(concat!("custodian-fetch/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("starting the HTTP client")?;
        let session = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self { http, base, source, token: Mutex::new(token), session, retries })
    }

    /// The URL of `segments` under the server's base (each segment escaped).
    pub fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked to be a base").pop_if_empty().extend(segments);
        url
    }

    /// `GET url` with `headers`, retried until it answers a success (`2xx`),
    /// `416` (for the caller to handle), or a failure that retrying cannot fix.
    pub async fn get(&self, url: &Url, headers: &HeaderMap, authenticated: bool) -> Result<Response, Failure> {
        let mut failures = 0;
        loop {
            let used = self.token.lock().expect("the token lock is never poisoned").clone();
            let mut request = self.http.get(url.clone()).headers(headers.clone()).header(SESSION_HEADER, &self.session);
            if authenticated && !matches!(self.source, TokenSource::Anonymous) {
                request = request.header(AUTHORIZATION, authorization(&used)?);
            }
            let pause = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) if response.status() == StatusCode::RANGE_NOT_SATISFIABLE => return Ok(response),
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    // A token renewed in its file since it was read: go on with it.
                    if self.renew(&used) {
                        continue;
                    }
                    failures += 1;
                    if matches!(self.source, TokenSource::Anonymous) {
                        let why = refusal(response).await;
                        return Err(Failure::Refused(format!(
                            "the registry wants a signed-in user for this release ({why}); give a token"
                        )));
                    }
                    let TokenSource::File(path) = &self.source else {
                        let why = refusal(response).await;
                        return Err(Failure::Refused(format!(
                            "the registry does not accept the token ({why}); with --token-file, \
                             a token renewed in that file is picked up"
                        )));
                    };
                    if failures > self.retries {
                        let why = refusal(response).await;
                        return Err(Failure::Refused(format!(
                            "the registry does not accept the token ({why}); renew it in {}",
                            path.display()
                        )));
                    }
                    // The renewal may not be written yet: read the file again after a pause.
                    backoff(failures)
                }
                Ok(response) if response.status() == StatusCode::FORBIDDEN => {
                    return Err(Failure::Refused(format!("the registry refused access ({})", refusal(response).await)));
                }
                Ok(response) if transient(response.status()) => {
                    let after = retry_after(response.headers());
                    let why = format!("HTTP {}", response.status());
                    failures += 1;
                    if failures > self.retries {
                        return Err(Failure::File(format!("{why} after {failures} attempts")));
                    }
                    after.unwrap_or_else(|| backoff(failures))
                }
                Ok(response) => {
                    let status = response.status();
                    return Err(Failure::File(format!("HTTP {status} ({})", refusal(response).await)));
                }
                Err(error) => {
                    failures += 1;
                    if failures > self.retries {
                        return Err(Failure::File(format!("{} after {failures} attempts", describe(&error))));
                    }
                    backoff(failures)
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// The body of a small document (manifest, signature, keys), in full.
    pub async fn document(&self, segments: &[&str], authenticated: bool) -> Result<Vec<u8>, Failure> {
        let url = self.url(segments.iter().copied());
        let mut failures = 0;
        loop {
            let response = self.get(&url, &HeaderMap::new(), authenticated).await?;
            if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
                return Err(Failure::File(format!("{url} answered 416")));
            }
            match response.bytes().await {
                Ok(bytes) => return Ok(bytes.to_vec()),
                Err(error) => {
                    failures += 1;
                    if failures > self.retries {
                        return Err(Failure::File(format!("{url}: {}", describe(&error))));
                    }
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
    }

    /// Whether the token to use is no longer `used`: another request renewed
    /// it, or the token file now holds another one.
    fn renew(&self, used: &str) -> bool {
        let mut token = self.token.lock().expect("the token lock is never poisoned");
        if *token != used {
            return true;
        }
        let TokenSource::File(_) = &self.source else { return false };
        match read_token(&self.source) {
            Ok(fresh) if fresh != used => {
                *token = fresh;
                true
            }
            _ => false,
        }
    }
}

fn authorization(token: &str) -> Result<HeaderValue, Failure> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Failure::Refused("the token holds characters a header cannot carry".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn read_token(source: &TokenSource) -> Result<String> {
    let token = match source {
        TokenSource::Anonymous => return Ok(String::new()),
        TokenSource::Fixed(token) => token.trim().to_owned(),
        TokenSource::File(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?
            .trim()
            .to_owned(),
    };
    if token.is_empty() {
        bail!("the token is empty");
    }
    Ok(token)
}

/// Whether a status is worth asking again.
fn transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

/// `Retry-After` in seconds (an HTTP date is left to the back-off).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The pause before attempt `failures + 1`: doubling from [`FIRST_BACKOFF`]
/// up to [`MAX_BACKOFF`], then a random half to all of it, so clients cut by
/// the same outage do not come back in step.
pub fn backoff(failures: u32) -> Duration {
    let ceiling = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let mut random = [0_u8; 8];
    // Without randomness the full pause is still a valid back-off.
    let fraction = if aws_lc_rs::rand::fill(&mut random).is_ok() {
        #[allow(clippy::cast_precision_loss)] // a fraction in [0, 1) needs no more
        let f = u64::from_le_bytes(random) as f64 / u64::MAX as f64;
        f
    } else {
        1.0
    };
    ceiling.mul_f64(0.5 + fraction / 2.0)
}

/// The registry's reason for an error answer: its code and message.
async fn refusal(response: Response) -> String {
    let status = response.status();
    match response.json::<ErrorBody>().await {
        Ok(body) => format!("{}: {}", body.code, body.message),
        Err(_) => format!("HTTP {status}"),
    }
}

/// A transport error, without the URL's query or anything sensitive.
pub fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_connect() {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "the transfer was cut"
    } else {
        "transfer error"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() { kind.to_owned() } else { format!("{kind}: {detail}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling_with_jitter() {
        for failures in 1..40 {
            let pause = backoff(failures);
            let ceiling = FIRST_BACKOFF.saturating_mul(1 << (failures - 1).min(16)).min(MAX_BACKOFF);
            assert!(pause >= ceiling / 2 && pause <= ceiling, "{failures}: {pause:?}");
        }
        assert!(backoff(30) <= MAX_BACKOFF);
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2026 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn only_server_errors_throttling_and_timeouts_are_retried() {
        for status in [500, 502, 503, 504, 429, 408] {
            assert!(transient(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 416] {
            assert!(!transient(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }

    #[test]
    fn file_paths_are_escaped_segment_by_segment() {
        let registry = Registry::new("https://registry.example/custodian/", TokenSource::Fixed("t".into()), 1).unwrap();
        let url = registry.url(["api", "v1", "extracts", "x", "files", "dicom", "a b#?.dcm"]);
        assert_eq!(url.as_str(), "https://registry.example/custodian/api/v1/extracts/x/files/dicom/a%20b%23%3F.dcm");
        assert!(Registry::new("ftp://x", TokenSource::Fixed("t".into()), 1).is_err());
        assert!(Registry::new("https://x", TokenSource::Fixed("  ".into()), 1).is_err());
    }
}
