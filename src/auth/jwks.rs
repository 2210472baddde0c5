//! The OIDC issuer's signing keys, fetched from a JWKS URL or file and cached.
//!
//! Keys are refreshed when the cache is older than its lifetime, and at once
//! when a token names a `kid` the cache does not know (key rotation), at most
//! once per second so unknown `kid`s cannot turn Custodian into a request
//! amplifier. When a refresh fails the previous keys stay in use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use super::jwt::TokenError;

const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    fetched_at: Option<Instant>,
}

pub(super) struct JwksCache {
    url: Option<String>,
    file: Option<PathBuf>,
    ttl: Duration,
    client: reqwest::Client,
    keys: RwLock<Keys>,
    last_attempt: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub(super) fn new(url: Option<String>, file: Option<PathBuf>, ttl: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the JWKS HTTP client")?;
        Ok(Self {
            url,
            file,
            ttl,
            client,
            keys: RwLock::new(Keys { by_kid: HashMap::new(), fetched_at: None }),
            last_attempt: Mutex::new(None),
        })
    }

    /// The key named `kid`, refreshing the set when it is unknown or stale.
    pub(super) async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), TokenError> {
        {
            let keys = self.keys.read().await;
            let fresh = keys.fetched_at.is_some_and(|t| t.elapsed() < self.ttl);
            if let Some(found) = keys.by_kid.get(kid)
                && fresh
            {
                return Ok(found.clone());
            }
        }
        self.refresh().await;
        let keys = self.keys.read().await;
        match keys.by_kid.get(kid) {
            Some(found) => Ok(found.clone()),
            None if keys.fetched_at.is_none() => Err(TokenError::KeysUnavailable),
            None => Err(TokenError::UnknownKey),
        }
    }

    async fn refresh(&self) {
        let mut last_attempt = self.last_attempt.lock().await;
        if last_attempt.is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL) {
            return;
        }
        *last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                let by_kid = set
                    .keys
                    .iter()
                    .filter_map(|jwk| {
                        let kid = jwk.common.key_id.clone()?;
                        let alg = algorithm_of(jwk)?;
                        let key = DecodingKey::from_jwk(jwk).ok()?;
                        Some((kid, (key, alg)))
                    })
                    .collect::<HashMap<_, _>>();
                tracing::info!(keys = by_kid.len(), "refreshed the JWKS");
                *self.keys.write().await = Keys { by_kid, fetched_at: Some(Instant::now()) };
            }
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "JWKS refresh failed; keeping the previous keys");
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet> {
        if let Some(path) = &self.file {
            let text = tokio::fs::read_to_string(path).await.with_context(|| format!("reading {}", path.display()))?;
            return serde_json::from_str(&text).context("parsing the JWKS file");
        }
        let url = self.url.as_deref().context("no JWKS source")?;
        let response = self.client.get(url).send().await.context("fetching the JWKS")?.error_for_status()?;
        response.json::<JwkSet>().await.context("parsing the JWKS")
    }
}

/// The one algorithm a key may verify: RS256 for RSA keys, ES256 for P-256 keys.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let from_key = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(from_key),
        Some(KeyAlgorithm::RS256) if from_key == Algorithm::RS256 => Some(from_key),
        Some(KeyAlgorithm::ES256) if from_key == Algorithm::ES256 => Some(from_key),
        Some(_) => None,
    }
}
