//! JWT issuing and verification.
//!
//! Two trust roots, chosen by the token's `alg`:
//! - HS256 tokens signed with Custodian's own secret (`custodian token issue`,
//!   the demo), accepted only when a secret is configured or generated;
//! - RS256/ES256 tokens of an OIDC issuer, verified with its JWKS.
//!
//! The algorithm decides the key source, never the other way round, so a token
//! "signed" with HS256 using a public RSA key (key confusion) finds no HS256
//! secret to match. `alg: none` is refused before any key is consulted. `iss`,
//! `aud`, `exp` and `nbf` are required and checked.
//!
//! The web sign-in's ID tokens ([`Authenticator::verify_id_token`]) take the
//! OIDC path only, with the client id as audience and their nonce checked,
//! and give the same [`Principal`] a bearer token with those claims would.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;

use super::jwks::JwksCache;
use super::{Credential, Principal, Role, roles_from_names};
use crate::config::AuthConfig;

/// File (inside the data dir) holding the generated HS256 secret.
pub const GENERATED_SECRET_FILE: &str = "secrets/jwt-hs256.key";

/// Why a JWT was refused; the message is safe to show to the caller.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not accepted")]
    Algorithm,
    #[error("token is signed with an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    Issuer,
    #[error("token audience is not accepted")]
    Audience,
    #[error("token lacks the claim `{0}`")]
    MissingClaim(String),
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable,
    #[error("token nonce does not match this sign-in")]
    Nonce,
}

/// Who signed a token that verified.
#[derive(Clone, Copy)]
enum Issuer {
    /// Custodian itself (HS256).
    Custodian,
    /// The OIDC issuer (its JWKS).
    Oidc,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Self::Algorithm,
            ErrorKind::MissingRequiredClaim(claim) => Self::MissingClaim(claim.clone()),
            _ => Self::Malformed,
        }
    }
}

struct Hs256 {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Verifies bearer JWTs and signs Custodian's own.
pub struct Authenticator {
    hs256: Option<Hs256>,
    jwks: Option<JwksCache>,
    issuer: String,
    oidc_issuer: String,
    audience: String,
    roles_claim: String,
    username_claim: String,
    leeway: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("jwks", &self.jwks.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    roles: Vec<&'static str>,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
}

impl Authenticator {
    /// Builds the verifier from settings. With neither a secret nor a JWKS source,
    /// `generated_secret_dir` (the embedded data dir) receives a new HS256 secret on first use.
    pub fn from_config(config: &AuthConfig, generated_secret_dir: Option<&Path>) -> Result<Self> {
        let has_jwks = config.jwks_url.is_some() || config.jwks_file.is_some();
        let secret = match (&config.hs256_secret, has_jwks, generated_secret_dir) {
            (Some(secret), _, _) => Some(secret.clone()),
            (None, false, Some(dir)) => Some(crate::secrets::load_or_generate(&dir.join(GENERATED_SECRET_FILE))?),
            (None, false, None) => {
                bail!("no token verification is configured: set auth.hs256_secret or auth.jwks_url (or auth.jwks_file)")
            }
            (None, true, _) => None,
        };
        let hs256 = secret.map(|s| Hs256 {
            encoding: EncodingKey::from_secret(s.expose_secret().as_bytes()),
            decoding: DecodingKey::from_secret(s.expose_secret().as_bytes()),
        });
        let jwks = if has_jwks {
            Some(JwksCache::new(
                config.jwks_url.clone(),
                config.jwks_file.clone(),
                Duration::from_secs(config.jwks_cache_secs),
            )?)
        } else {
            None
        };
        Ok(Self {
            hs256,
            jwks,
            issuer: config.issuer.clone(),
            oidc_issuer: config.oidc_issuer.clone().unwrap_or_else(|| config.issuer.clone()),
            audience: config.audience.clone(),
            roles_claim: config.roles_claim.clone(),
            username_claim: config.username_claim.clone(),
            leeway: config.leeway_secs,
        })
    }

    /// Whether Custodian can sign tokens itself.
    pub fn can_issue(&self) -> bool {
        self.hs256.is_some()
    }

    /// Signs an HS256 token for `username` with `roles`, valid for `ttl`.
    pub fn issue(&self, username: &str, roles: &[Role], ttl: Duration) -> Result<String> {
        let Some(hs256) = &self.hs256 else {
            bail!("Custodian cannot sign tokens: no HS256 secret is configured (tokens come from the OIDC issuer)");
        };
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(ttl.as_secs()).context("ttl too long")?;
        let claims = IssuedClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: username,
            roles: roles.iter().map(|r| r.as_str()).collect(),
            iat: now,
            nbf: now,
            exp: now + ttl,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &hs256.encoding)?)
    }

    /// Verifies a JWT and returns who it speaks for.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let (claims, issuer) = self.decode(token, &self.audience, true).await?;
        self.principal(&claims, issuer)
    }

    /// Verifies an ID token the OIDC issuer gave the web sign-in: signed with
    /// the issuer's keys (never Custodian's own secret), `iss` the issuer,
    /// `aud` the sign-in's `client_id`, unexpired, and its `nonce` the one the
    /// sign-in sent (`nonce_is_expected` compares). Returns the same
    /// [`Principal`] a bearer token with these claims gives.
    pub async fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce_is_expected: impl FnOnce(&str) -> bool,
    ) -> Result<Principal, TokenError> {
        let (claims, issuer) = self.decode(token, client_id, false).await?;
        let nonce =
            claims.get("nonce").and_then(Value::as_str).ok_or_else(|| TokenError::MissingClaim("nonce".into()))?;
        if !nonce_is_expected(nonce) {
            return Err(TokenError::Nonce);
        }
        self.principal(&claims, issuer)
    }

    /// Checks the signature, issuer, audience and validity period of `token`,
    /// and returns its claims and who signed it.
    async fn decode(&self, token: &str, audience: &str, own_tokens: bool) -> Result<(Value, Issuer), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        match header.alg {
            Algorithm::HS256 if own_tokens => {
                let hs256 = self.hs256.as_ref().ok_or(TokenError::Algorithm)?;
                let validation = self.validation(Algorithm::HS256, &self.issuer, audience);
                Ok((jsonwebtoken::decode::<Value>(token, &hs256.decoding, &validation)?.claims, Issuer::Custodian))
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or(TokenError::Algorithm)?;
                let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
                let (key, key_alg) = jwks.key(kid).await?;
                if key_alg != header.alg {
                    return Err(TokenError::Algorithm);
                }
                let validation = self.validation(header.alg, &self.oidc_issuer, audience);
                Ok((jsonwebtoken::decode::<Value>(token, &key, &validation)?.claims, Issuer::Oidc))
            }
            _ => Err(TokenError::Algorithm),
        }
    }

    /// The principal a verified token speaks for. Custodian's own tokens
    /// always carry `sub` and `roles`; the configured claims name where an
    /// OIDC issuer puts them.
    fn principal(&self, claims: &Value, issuer: Issuer) -> Result<Principal, TokenError> {
        let (username_claim, roles_claim) = match issuer {
            Issuer::Custodian => ("sub", "roles"),
            Issuer::Oidc => (self.username_claim.as_str(), self.roles_claim.as_str()),
        };
        let username = claim_at(claims, username_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| TokenError::MissingClaim(username_claim.to_owned()))?;
        let roles = match claim_at(claims, roles_claim) {
            Some(Value::Array(items)) => roles_from_names(items.iter().filter_map(Value::as_str)),
            Some(Value::String(s)) => roles_from_names(s.split([' ', ','])),
            _ => Vec::new(),
        };
        Ok(Principal { username: username.to_owned(), roles, credential: Credential::Jwt })
    }

    /// Where the configured claims name the user's roles (for messages).
    pub fn roles_claim(&self) -> &str {
        &self.roles_claim
    }

    fn validation(&self, alg: Algorithm, issuer: &str, audience: &str) -> Validation {
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        validation
    }
}

/// Looks up a claim by dotted path (`realm_access.roles`).
fn claim_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |value, key| value.get(key))
}
