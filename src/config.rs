//! Settings: defaults → TOML file → `CUSTODIAN_…` environment (nested with `__`) → flags.
//!
//! Every section rejects unknown keys, secrets are [`SecretString`]s that never
//! print, and [`Config::validate`] turns every bad value into a message that
//! names the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Prefix of every environment variable Custodian reads.
pub const ENV_PREFIX: &str = "CUSTODIAN_";

/// The whole configuration of one Custodian node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded database, generated secrets and local objects live.
    pub data_dir: PathBuf,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub deid: DeidConfig,
    pub ingest: IngestConfig,
    pub dicom: DicomConfig,
    pub discovery: DiscoveryConfig,
    pub access: AccessConfig,
    pub release: ReleaseConfig,
    pub mail: MailConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: DatabaseConfig::default(),
            storage: StorageConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            deid: DeidConfig::default(),
            ingest: IngestConfig::default(),
            dicom: DicomConfig::default(),
            discovery: DiscoveryConfig::default(),
            access: AccessConfig::default(),
            release: ReleaseConfig::default(),
            mail: MailConfig::default(),
        }
    }
}

/// E-mail: notifications delivered by SMTP (see `src/mail.rs`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// The SMTP server: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://host:465` (TLS), with `user:password@` when it asks
    /// for them. Unset: e-mail is off and notifications stay in the API.
    #[serde(serialize_with = "ser_secret_opt")]
    pub smtp_url: Option<SecretString>,
    /// The sender, e.g. `Custodian <registry@example.org>`.
    pub from: String,
    /// The URL people open the registry at; messages link to pages under it.
    pub public_url: String,
    /// Attempts to deliver one message before it is recorded as failed (1 to
    /// 20); a permanent refusal (an SMTP 5xx) is not retried.
    pub max_attempts: u32,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "Custodian <custodian@localhost>".into(),
            public_url: "http://localhost:8080".into(),
            max_attempts: 8,
        }
    }
}

impl MailConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        if let Some(url) = &self.smtp_url
            && crate::mail::transport(url.expose_secret()).is_err()
        {
            return invalid("mail.smtp_url", "must be an smtp:// or smtps:// URL");
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return invalid("mail.from", "must be an e-mail address, optionally with a name: `Name <a@b.org>`");
        }
        if !url::Url::parse(&self.public_url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            return invalid("mail.public_url", "must be an http:// or https:// URL");
        }
        if !(1..=20).contains(&self.max_attempts) {
            return invalid("mail.max_attempts", "must be 1 to 20");
        }
        Ok(())
    }
}

/// Releases: what approved projects receive.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReleaseConfig {
    /// Ed25519 private key signing release manifests: base64 of its PKCS#8 DER
    /// (`openssl genpkey -algorithm ed25519 -outform DER | base64 -w0`) or its
    /// PEM. Generated into the data dir in embedded mode; required otherwise,
    /// the same on every node.
    #[serde(serialize_with = "ser_secret_opt")]
    pub signing_key: Option<SecretString>,
    /// Public keys of earlier signing keys (each a JWK `x`: base64url of 32
    /// bytes), still published so the releases they signed keep verifying.
    pub previous_public_keys: Vec<String>,
    /// Downloads of release files one project may run at once, on each node
    /// (1 to 1,000); one more is answered `429` with `Retry-After`.
    pub max_concurrent_downloads: u32,
    /// Requests for release bytes (files, ranges, manifests, archives,
    /// DICOMweb, DRS) one project may make a minute, on each node (1 to
    /// 1,000,000). A burst of a whole minute's allowance is served at once;
    /// past it, `429 download-rate-exceeded` with `Retry-After`.
    pub max_requests_per_minute: u32,
    /// Days a release superseded after a withdrawal is still served, so
    /// running transfers finish (0: it stops at once).
    pub superseded_grace_days: u32,
    /// Release files at least this large are written in parts (multipart
    /// upload on S3) rather than in one request (at least 1).
    pub multipart_threshold_bytes: u64,
    /// Size of each part of such a write, but the last (5 MiB to 5 GiB, the
    /// bounds S3 sets on a part).
    pub multipart_part_bytes: u64,
    /// Hand out short-lived presigned GET URLs to release files (S3 only):
    /// each after the grant check, each audited.
    pub presigned_urls: bool,
    /// How long a presigned URL is valid, in seconds (1 to 900). A transfer
    /// outliving its URL asks for a new one and resumes with a `Range`.
    pub presign_ttl_secs: u64,
    /// The URL clients reach this registry at (`https://registry.example.org`),
    /// naming DRS objects (`drs://registry.example.org/…`) and their access
    /// URLs. Unset: taken from each request's `Host` (and `X-Forwarded-Proto`).
    pub public_url: Option<String>,
}

impl Default for ReleaseConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            previous_public_keys: Vec::new(),
            max_concurrent_downloads: 16,
            max_requests_per_minute: 12_000,
            superseded_grace_days: 30,
            multipart_threshold_bytes: 64 * 1024 * 1024,
            multipart_part_bytes: 16 * 1024 * 1024,
            presigned_urls: false,
            presign_ttl_secs: 300,
            public_url: None,
        }
    }
}

impl ReleaseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if !(1..=1000).contains(&self.max_concurrent_downloads) {
            return invalid("release.max_concurrent_downloads", "must be 1 to 1,000".into());
        }
        if !(1..=1_000_000).contains(&self.max_requests_per_minute) {
            return invalid("release.max_requests_per_minute", "must be 1 to 1,000,000".into());
        }
        if self.multipart_threshold_bytes == 0 {
            return invalid("release.multipart_threshold_bytes", "must be at least 1".into());
        }
        if !(5 << 20..=5 << 30).contains(&self.multipart_part_bytes) {
            return invalid("release.multipart_part_bytes", "must be 5 MiB to 5 GiB (5242880 to 5368709120)".into());
        }
        if !(1..=900).contains(&self.presign_ttl_secs) {
            return invalid(
                "release.presign_ttl_secs",
                "must be 1 to 900 (presigned URLs live at most 15 minutes)".into(),
            );
        }
        if let Some(url) = &self.public_url
            && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            return invalid("release.public_url", "must be an http:// or https:// URL".into());
        }
        if let Some(key) = &self.signing_key
            && let Err(e) = crate::release::manifest::check_private_key(key.expose_secret())
        {
            return invalid("release.signing_key", e.to_string());
        }
        if let Err(e) = crate::release::manifest::previous_keys(&self.previous_public_keys) {
            return invalid("release.previous_public_keys", e.to_string());
        }
        Ok(())
    }
}

/// The DICOM C-STORE receiver (SCP) for hospital PACS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomConfig {
    /// TCP port of the C-STORE SCP; disabled when absent (`serve --dicom-port` sets it).
    pub port: Option<u16>,
    /// Address the SCP binds: loopback unless configured, like HTTP (set `0.0.0.0` to accept PACS on the network).
    pub bind: std::net::IpAddr,
    /// Custodian's own AE title (called AE title peers must use).
    pub ae_title: String,
    /// Calling AE titles allowed to send, each mapped to a site and a cohort.
    pub peers: Vec<DicomPeer>,
    /// Largest PDU Custodian accepts (4,096 bytes to 16 MiB); each association buffers one.
    pub max_pdu_length: u32,
    /// Associations open at once; one more is rejected as transient (local limit exceeded).
    pub max_associations: usize,
}

impl Default for DicomConfig {
    fn default() -> Self {
        Self {
            port: None,
            bind: std::net::IpAddr::from([127, 0, 0, 1]),
            ae_title: "CUSTODIAN".into(),
            peers: Vec::new(),
            max_pdu_length: 65_536,
            max_associations: 32,
        }
    }
}

impl DicomConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        let ae_ok = |ae: &str| {
            !ae.trim().is_empty()
                && ae.len() <= 16
                && ae.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                && !ae.contains('\\')
        };
        if !ae_ok(&self.ae_title) {
            return invalid("dicom.ae_title", "must be 1–16 printable ASCII characters without a backslash");
        }
        if self.peers.iter().any(|p| !ae_ok(&p.ae_title)) {
            return invalid(
                "dicom.peers",
                "every ae_title must be 1–16 printable ASCII characters without a backslash",
            );
        }
        if !(4_096..=16 * 1024 * 1024).contains(&self.max_pdu_length) {
            return invalid("dicom.max_pdu_length", "must be between 4096 and 16777216 bytes");
        }
        if self.max_associations == 0 {
            return invalid("dicom.max_associations", "must be at least 1");
        }
        Ok(())
    }
}

/// A PACS or modality allowed to send: `{ ae_title = "PACS1", site = "uhb", cohort = "default" }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DicomPeer {
    /// Calling AE title of the peer (1–16 characters).
    pub ae_title: String,
    /// Site code its data comes from.
    pub site: String,
    /// Cohort slug its data joins.
    #[serde(default = "default_cohort")]
    pub cohort: String,
}

fn default_cohort() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeidConfig {
    /// Secret behind every pseudonym, UID and date shift (at least 32 bytes). Generated
    /// into the data dir in embedded mode; required otherwise. Never change it: a new
    /// key unlinks every later upload from the subjects already in the registry.
    #[serde(serialize_with = "ser_secret_opt")]
    pub registry_key: Option<SecretString>,
    /// Largest per-subject date shift, in days back.
    pub max_date_shift_days: u32,
    /// Private attributes known to hold no identifying information.
    pub safe_private: Vec<SafePrivateConfig>,
    /// An instance without a Patient ID (Type 2: present but possibly empty):
    /// `fallback` gives it a subject of its own study, `reject` refuses it.
    pub missing_patient_id: crate::deid::MissingPatientId,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Units of protected discovery each user may spend in each cohort over
    /// the window: a count costs 1, a breakdown 2 (one dimension) or 4 (two).
    /// Stewards, admins and project members within their grants are exempt.
    pub budget_units: u32,
    /// The budget's rolling window, in days.
    pub budget_window_days: u32,
    /// Standard deviation of the perturbation table (a discrete normal).
    pub noise_sd: f64,
    /// Largest perturbation the table adds or takes away.
    pub noise_bound: i64,
    /// Answer exact counts from an in-memory index of the registry (rebuilt in
    /// the background after changes, PostgreSQL answering meanwhile); off:
    /// exact counts always from PostgreSQL. Protected counts always use the
    /// index, brought up to date before they answer: it holds the record keys.
    pub memory_index: bool,
}

/// Access governance: the committee's rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Approving (or rejecting) votes needed for an application to a `registered` cohort.
    pub quorum_registered: u32,
    /// Votes needed when any requested cohort is `controlled`.
    pub quorum_controlled: u32,
    /// Stewards from the same institution as a project member must recuse.
    pub recuse_same_institution: bool,
    /// Working days (Monday to Friday) from submission to the decision's due date.
    pub review_working_days: u32,
    /// A grant is held once one of its duties is this many days overdue (0: never).
    pub hold_after_overdue_days: u32,
    /// A PI submits, and any member reaches data, only with bona fides a steward verified.
    pub require_verified_profiles: bool,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            quorum_registered: 1,
            quorum_controlled: 2,
            recuse_same_institution: true,
            review_working_days: 20,
            hold_after_overdue_days: 30,
            require_verified_profiles: true,
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self { budget_units: 300, budget_window_days: 30, noise_sd: 2.0, noise_bound: 6, memory_index: true }
    }
}

impl Default for DeidConfig {
    fn default() -> Self {
        Self {
            registry_key: None,
            max_date_shift_days: 3650,
            safe_private: Vec::new(),
            missing_patient_id: crate::deid::MissingPatientId::default(),
        }
    }
}

/// One safe private attribute: `{ creator = "SIEMENS CSA HEADER", group = "0029", element = "08" }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SafePrivateConfig {
    pub creator: String,
    /// Odd group, four hex digits.
    pub group: String,
    /// Element within the creator's block, two hex digits.
    pub element: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest single DICOM file accepted (413 beyond). A request holds at
    /// most this much of received files in memory at once, plus a few MiB:
    /// the default keeps a request within 256 MiB.
    pub max_file_bytes: usize,
    /// Largest upload request (one file, a multipart batch or a zip).
    pub max_request_bytes: usize,
    /// Most entries a zip may hold.
    pub zip_max_entries: usize,
    /// Most bytes a zip may expand to.
    pub zip_max_expanded_bytes: u64,
    /// Files de-identified in parallel within one request.
    pub parallelism: usize,
    /// How often unreferenced objects are swept, in seconds (0: never).
    pub sweep_interval_secs: u64,
    /// How old an unreferenced object must be before the sweep deletes it.
    pub sweep_grace_secs: u64,
    /// Largest table import (CSV, JSON, VCF; a gzip body counts expanded).
    pub max_table_bytes: usize,
    /// Longest line (record) of a CSV, TSV or VCF import, header included.
    pub max_table_line_bytes: usize,
    /// Most columns of a CSV, TSV or VCF import.
    pub max_table_columns: usize,
    /// Most distinct patients one table import may name (its memory grows with them).
    pub max_table_patients: usize,
}

impl IngestConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.into() });
        if self.max_file_bytes == 0 || self.max_request_bytes < self.max_file_bytes {
            return invalid("ingest.max_request_bytes", "must be at least ingest.max_file_bytes (and both above 0)");
        }
        if self.parallelism == 0 {
            return invalid("ingest.parallelism", "must be at least 1");
        }
        for (name, value) in [
            ("ingest.max_table_line_bytes", self.max_table_line_bytes),
            ("ingest.max_table_patients", self.max_table_patients),
            ("ingest.max_table_columns", self.max_table_columns),
        ] {
            if value == 0 {
                return invalid(name, "must be at least 1");
            }
        }
        Ok(())
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 240 * 1024 * 1024,
            max_request_bytes: 1024 * 1024 * 1024,
            zip_max_entries: 50_000,
            zip_max_expanded_bytes: 4 * 1024 * 1024 * 1024,
            parallelism: 4,
            sweep_interval_secs: 3600,
            sweep_grace_secs: 3600,
            max_table_bytes: 32 * 1024 * 1024,
            max_table_line_bytes: 1024 * 1024,
            max_table_columns: 10_000,
            max_table_patients: 200_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// External PostgreSQL; when absent Custodian runs its own cluster under `<data_dir>/postgres`.
    #[serde(serialize_with = "ser_secret_opt")]
    pub url: Option<SecretString>,
    pub max_connections: u32,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// Directory holding `initdb`, `pg_ctl` and `postgres` for the embedded cluster.
    pub postgres_bin_dir: Option<PathBuf>,
    /// Unprivileged account that runs the embedded cluster when Custodian runs as root.
    pub embedded_user: Option<String>,
    /// Seconds to wait for a pooled connection before failing a request.
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            migrate_on_start: true,
            postgres_bin_dir: None,
            embedded_user: None,
            acquire_timeout_secs: 10,
        }
    }
}

/// Which object store holds the bytes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Local,
    S3,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// Root of the local store; defaults to `<data_dir>/objects`.
    pub path: Option<PathBuf>,
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { kind: StorageKind::Local, path: None, s3: S3Config::default() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: Option<String>,
    pub region: Option<String>,
    /// Endpoint of an S3-compatible service (MinIO, Ceph, Garage…); AWS when absent.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    #[serde(serialize_with = "ser_secret_opt")]
    pub secret_access_key: Option<SecretString>,
    /// Permit plain-HTTP endpoints (inside a hospital network, for example).
    pub allow_http: bool,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`.
    pub path_style: bool,
    /// Prefix under which Custodian keeps its objects inside the bucket.
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `iss` of tokens Custodian signs itself, and the accepted issuer of HS256 tokens.
    pub issuer: String,
    /// `aud` every token must carry.
    pub audience: String,
    /// Shared HS256 secret (at least 32 bytes). Generated into the data dir when
    /// neither this nor a JWKS source is configured.
    #[serde(serialize_with = "ser_secret_opt")]
    pub hs256_secret: Option<SecretString>,
    /// OIDC issuer's JWKS document (RS256 / ES256 keys).
    pub jwks_url: Option<String>,
    /// The same JWKS document read from a file (offline installations).
    pub jwks_file: Option<PathBuf>,
    /// `iss` of tokens verified against the JWKS; defaults to `issuer`.
    pub oidc_issuer: Option<String>,
    /// Claim (dotted path allowed, e.g. `realm_access.roles`) holding role names.
    pub roles_claim: String,
    /// Claim naming the user; `sub` by default.
    pub username_claim: String,
    /// How long fetched JWKS keys are trusted before a refresh.
    pub jwks_cache_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Lifetime of tokens made by `custodian token issue` when `--ttl` is not given.
    pub default_token_ttl: String,
    /// Longest lifetime a personal API token may have, in days.
    pub max_api_token_days: u32,
    /// Sign-in to the web pages through the OIDC issuer (`oidc_issuer`).
    pub oidc: OidcConfig,
}

/// Web sign-in with the OIDC authorization-code flow and PKCE (S256), offered
/// on the sign-in page when `client_id` is set. The provider is found by
/// discovery at `<auth.oidc_issuer>/.well-known/openid-configuration`; its ID
/// tokens are verified with the JWKS of `auth.jwks_url` (or `auth.jwks_file`),
/// and the user and roles are read from `auth.username_claim` and
/// `auth.roles_claim`, as for a bearer token. The local token sign-in stays.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The client id Custodian is registered under at the provider; the ID
    /// token's `aud` must name it. Unset: no single sign-on.
    pub client_id: Option<String>,
    /// The client's secret (sent with HTTP Basic to the token endpoint).
    /// Unset: a public client, protected by PKCE alone.
    #[serde(serialize_with = "ser_secret_opt")]
    pub client_secret: Option<SecretString>,
    /// Where the provider sends the browser back, registered with the client.
    /// Unset: `<release.public_url>/ui/sign-in/oidc/callback`, or from the
    /// request's `Host` when `release.public_url` is unset too.
    pub redirect_url: Option<String>,
    /// Scopes asked for; must include `openid`, and whatever scope makes the
    /// provider put the username and roles claims into the ID token.
    pub scopes: Vec<String>,
    /// The provider's name on the sign-in button ("Sign in with …").
    pub provider_name: String,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            client_id: None,
            client_secret: None,
            redirect_url: None,
            scopes: vec!["openid".into()],
            provider_name: "your organisation's account".into(),
        }
    }
}

impl OidcConfig {
    fn validate(&self, auth: &AuthConfig) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        let http_url =
            |u: &str| url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if let Some(url) = &self.redirect_url
            && !http_url(url)
        {
            return invalid("auth.oidc.redirect_url", "must be an http:// or https:// URL");
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return invalid("auth.oidc.scopes", "must include \"openid\"");
        }
        if self.scopes.iter().any(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            return invalid("auth.oidc.scopes", "each scope is one word");
        }
        let Some(client_id) = &self.client_id else { return Ok(()) };
        if client_id.is_empty() {
            return invalid("auth.oidc.client_id", "must not be empty");
        }
        if !auth.oidc_issuer.as_deref().is_some_and(http_url) {
            return invalid(
                "auth.oidc_issuer",
                "must be the provider's http:// or https:// issuer URL for web sign-in (auth.oidc.client_id is set)",
            );
        }
        if auth.jwks_url.is_none() && auth.jwks_file.is_none() {
            return invalid(
                "auth.jwks_url",
                "is needed to verify the provider's ID tokens (auth.oidc.client_id is set)",
            );
        }
        Ok(())
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "custodian".into(),
            audience: "custodian".into(),
            hs256_secret: None,
            jwks_url: None,
            jwks_file: None,
            oidc_issuer: None,
            roles_claim: "roles".into(),
            username_claim: "sub".into(),
            jwks_cache_secs: 300,
            leeway_secs: 30,
            default_token_ttl: "12h".into(),
            max_api_token_days: 365,
            oidc: OidcConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body for JSON endpoints, in bytes.
    pub body_limit_bytes: usize,
    /// Requests running longer than this are answered with 503 `timeout`.
    pub request_timeout_secs: u64,
    /// The same for bulk transfers: uploads, STOW-RS, table imports and masks.
    pub bulk_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_secs: u64,
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the
    /// client; from anyone else the header is ignored.
    pub trusted_proxies: Vec<crate::http::client_ip::Network>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            bulk_timeout_secs: 3600,
            shutdown_grace_secs: 30,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directives, e.g. `info,custodian=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, filter: "info".into() }
    }
}

/// Values given on the command line; they win over every other source.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

/// A setting that cannot be used, named by its dotted key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Config {
    /// Reads defaults, the optional TOML file, the environment and the flags, then validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX).split("__"), overrides)
    }

    fn load_from(file: Option<&Path>, env: Env, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::new().merge(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Parse(format!("file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Every other variable with the prefix is a setting: a misspelled one is
        // an error that names it, never silently ignored.
        let sections = top_level_keys();
        for (name, _) in std::env::vars() {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            let top = rest.split("__").next().unwrap_or_default();
            let known = sections.iter().any(|k| k.eq_ignore_ascii_case(top))
                || NOT_SETTINGS.iter().any(|k| k.eq_ignore_ascii_case(rest));
            if !known {
                return Err(ConfigError::Parse(format!(
                    "{name} is not a setting: the settings are {} (CUSTODIAN_<SECTION>__<KEY> for a section's keys)",
                    sections
                        .iter()
                        .map(|k| format!("{ENV_PREFIX}{}", k.to_ascii_uppercase()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut config: Config = figment
            .merge(env.filter(move |key| {
                let key = key.as_str();
                let top = key.split('.').next().unwrap_or_default().split("__").next().unwrap_or_default();
                !NOT_SETTINGS.iter().any(|k| k.eq_ignore_ascii_case(key))
                    && sections.iter().any(|k| k.eq_ignore_ascii_case(top))
            }))
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(&e)))?;
        if let Some(dir) = &overrides.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if let Some(url) = &self.database.url {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid("database.url", "must be a postgres:// or postgresql:// URL");
            }
        }
        if self.storage.kind == StorageKind::S3 && self.storage.s3.bucket.as_deref().unwrap_or("").is_empty() {
            return invalid("storage.s3.bucket", "is required when storage.kind is \"s3\"");
        }
        if let Some(endpoint) = &self.storage.s3.endpoint
            && url::Url::parse(endpoint).is_err()
        {
            return invalid("storage.s3.endpoint", "is not a valid URL");
        }
        if let Some(secret) = &self.auth.hs256_secret
            && secret.expose_secret().len() < 32
        {
            return invalid("auth.hs256_secret", "must be at least 32 bytes long");
        }
        if let Some(url) = &self.auth.jwks_url
            && url::Url::parse(url).is_err()
        {
            return invalid("auth.jwks_url", "is not a valid URL");
        }
        if self.auth.jwks_url.is_some() && self.auth.jwks_file.is_some() {
            return invalid("auth.jwks_url", "cannot be combined with auth.jwks_file");
        }
        if self.auth.audience.is_empty() {
            return invalid("auth.audience", "must not be empty");
        }
        if self.auth.issuer.is_empty() {
            return invalid("auth.issuer", "must not be empty");
        }
        if parse_duration(&self.auth.default_token_ttl).is_err() {
            return invalid("auth.default_token_ttl", "is not a duration such as \"12h\" or \"30m\"");
        }
        if self.auth.max_api_token_days == 0 {
            return invalid("auth.max_api_token_days", "must be at least 1");
        }
        self.auth.oidc.validate(&self.auth)?;
        if self.http.body_limit_bytes < 1024 {
            return invalid("http.body_limit_bytes", "must be at least 1024");
        }
        if !(0.5..=20.0).contains(&self.discovery.noise_sd) {
            return invalid("discovery.noise_sd", "must be between 0.5 and 20");
        }
        if !(1..=60).contains(&self.discovery.noise_bound) {
            return invalid("discovery.noise_bound", "must be between 1 and 60");
        }
        if self.discovery.budget_window_days == 0 || self.discovery.budget_window_days > 366 {
            return invalid("discovery.budget_window_days", "must be between 1 and 366");
        }
        if self.http.bulk_timeout_secs == 0 {
            return invalid("http.bulk_timeout_secs", "must be at least 1");
        }
        if self.http.request_timeout_secs == 0 {
            return invalid("http.request_timeout_secs", "must be at least 1");
        }
        if let Some(key) = &self.deid.registry_key
            && key.expose_secret().len() < 32
        {
            return invalid("deid.registry_key", "must be at least 32 bytes long");
        }
        if self.deid.max_date_shift_days == 0 {
            return invalid("deid.max_date_shift_days", "must be at least 1");
        }
        for entry in &self.deid.safe_private {
            let group = u16::from_str_radix(&entry.group, 16);
            if entry.group.len() != 4 || !group.is_ok_and(|g| g % 2 == 1) {
                return invalid("deid.safe_private", "group must be four hex digits of an odd (private) group");
            }
            if entry.element.len() != 2 || u8::from_str_radix(&entry.element, 16).is_err() {
                return invalid("deid.safe_private", "element must be two hex digits");
            }
        }
        self.ingest.validate()?;
        self.dicom.validate()?;
        self.release.validate()?;
        self.mail.validate()?;
        if self.release.presigned_urls && self.storage.kind != StorageKind::S3 {
            return invalid("release.presigned_urls", "needs storage.kind \"s3\": only S3 signs URLs");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            return invalid("log.filter", "is not a valid tracing filter");
        }
        Ok(())
    }

    /// Whether Custodian runs its own PostgreSQL cluster.
    pub fn embedded_database(&self) -> bool {
        self.database.url.is_none()
    }

    /// Root of the local object store.
    pub fn objects_dir(&self) -> PathBuf {
        self.storage.path.clone().unwrap_or_else(|| self.data_dir.join("objects"))
    }

    /// The local object directory, when objects live on this node's file system.
    pub fn local_objects_dir(&self) -> Option<PathBuf> {
        (self.storage.kind == StorageKind::Local).then(|| self.objects_dir())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.http.request_timeout_secs)
    }
}

/// Variables with the prefix that are not settings: the PostgreSQL binaries of
/// the embedded cluster, `serve --dicom-port`'s variable, and `custodian
/// fetch`'s registry and token (a researcher's shell may hold them).
const NOT_SETTINGS: &[&str] = &["POSTGRES_BIN", "DICOM_PORT", "SERVER", "TOKEN"];

/// The top-level settings and sections, read from the configuration itself, so
/// a new section is taken from the environment without a list to keep.
fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Parses `90s`, `15m`, `12h`, `30d` and the other forms `humantime` knows.
pub fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

fn describe_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
            let kind = e.kind.to_string();
            match (key.is_empty(), origin.is_empty()) {
                (true, true) => kind,
                (true, false) => format!("{kind} (from {origin})"),
                (false, true) => format!("`{key}`: {kind}"),
                (false, false) => format!("`{key}`: {kind} (from {origin})"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[allow(clippy::ref_option)]
fn ser_secret_opt<S: serde::Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    // Only used to seed figment with defaults, where secrets are always absent.
    match value {
        Some(secret) => s.serialize_some(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in_jail(jail: &Jail, file: Option<&str>) -> Result<Config, ConfigError> {
        let path = file.map(|body| {
            jail.create_file("custodian.toml", body).unwrap();
            jail.directory().join("custodian.toml")
        });
        Config::load(path.as_deref(), &Overrides::default())
    }

    #[test]
    fn defaults_are_embedded_and_local() {
        Jail::expect_with(|jail| {
            let config = load_in_jail(jail, None).unwrap();
            assert!(config.embedded_database());
            assert_eq!(config.storage.kind, StorageKind::Local);
            assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(config.objects_dir(), PathBuf::from("./data/objects"));
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("CUSTODIAN_LISTEN", "0.0.0.0:9000");
            jail.set_env("CUSTODIAN_DATABASE__MAX_CONNECTIONS", "4");
            let file = "listen = \"127.0.0.1:7000\"\n[database]\nmax_connections = 2\nmigrate_on_start = false\n";
            let config = load_in_jail(jail, Some(file)).unwrap();
            assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
            assert_eq!(config.database.max_connections, 4);
            assert!(!config.database.migrate_on_start);

            let flags = Overrides { listen: Some("127.0.0.1:1".parse().unwrap()), data_dir: Some("/srv/x".into()) };
            let config = Config::load(Some(&jail.directory().join("custodian.toml")), &flags).unwrap();
            assert_eq!(config.listen.to_string(), "127.0.0.1:1");
            assert_eq!(config.data_dir, PathBuf::from("/srv/x"));
            Ok(())
        });
    }

    #[test]
    fn missing_patient_id_defaults_to_fallback_and_reads_reject_from_file_and_environment() {
        use crate::deid::MissingPatientId;
        Jail::expect_with(|jail| {
            assert_eq!(load_in_jail(jail, None).unwrap().deid.missing_patient_id, MissingPatientId::Fallback);
            let file = "[deid]\nmissing_patient_id = \"reject\"\n";
            assert_eq!(load_in_jail(jail, Some(file)).unwrap().deid.missing_patient_id, MissingPatientId::Reject);
            let err = load_in_jail(jail, Some("[deid]\nmissing_patient_id = \"guess\"\n")).unwrap_err().to_string();
            assert!(err.contains("guess"), "{err}");
            jail.set_env("CUSTODIAN_DEID__MISSING_PATIENT_ID", "fallback");
            assert_eq!(load_in_jail(jail, Some(file)).unwrap().deid.missing_patient_id, MissingPatientId::Fallback);
            Ok(())
        });
    }

    #[test]
    fn trusted_proxies_are_none_by_default_and_read_from_file_and_environment() {
        let listed = |config: &Config| config.http.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>();
        Jail::expect_with(|jail| {
            assert!(load_in_jail(jail, None).unwrap().http.trusted_proxies.is_empty());
            let file = "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n";
            assert_eq!(listed(&load_in_jail(jail, Some(file)).unwrap()), ["10.0.0.0/8", "::1/128"]);
            let bad = "[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n";
            let err = load_in_jail(jail, Some(bad)).unwrap_err().to_string();
            assert!(err.contains("10.0.0.0/33"), "{err}");
            jail.set_env("CUSTODIAN_HTTP__TRUSTED_PROXIES", "[\"192.0.2.0/24\"]");
            assert_eq!(listed(&load_in_jail(jail, Some(file)).unwrap()), ["192.0.2.0/24"]);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_file_is_named_in_the_error() {
        Jail::expect_with(|jail| {
            let err = load_in_jail(jail, Some("[database]\nmax_conections = 3\n")).unwrap_err().to_string();
            assert!(err.contains("max_conections"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_nested_environment_key_is_an_error() {
        Jail::expect_with(|jail| {
            jail.set_env("CUSTODIAN_STORAGE__BUCKKET", "x");
            let err = load_in_jail(jail, None).unwrap_err().to_string();
            assert!(err.contains("buckket"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn every_section_is_read_from_the_environment_and_a_misspelled_variable_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("CUSTODIAN_DISCOVERY__BUDGET_UNITS", "7");
            jail.set_env("CUSTODIAN_ACCESS__QUORUM_CONTROLLED", "3");
            jail.set_env("CUSTODIAN_POSTGRES_BIN", "/usr/lib/postgresql/15/bin");
            let config = load_in_jail(jail, None).unwrap();
            assert_eq!((config.discovery.budget_units, config.access.quorum_controlled), (7, 3));
            jail.set_env("CUSTODIAN_LISTN", "0.0.0.0:80");
            let err = load_in_jail(jail, None).unwrap_err().to_string();
            assert!(err.contains("CUSTODIAN_LISTN is not a setting") && err.contains("CUSTODIAN_LISTEN"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_all_digit_secret_from_the_environment_stays_the_same_text() {
        Jail::expect_with(|jail| {
            let digits = "1234567890123456789012345678901234567890";
            jail.set_env("CUSTODIAN_AUTH__HS256_SECRET", digits);
            let config = load_in_jail(jail, None).expect("an all-digit secret loads");
            assert_eq!(
                config.auth.hs256_secret.as_ref().map(|s| s.expose_secret().to_owned()).as_deref(),
                Some(digits)
            );
            Ok(())
        });
    }

    #[test]
    fn invalid_values_get_messages_naming_the_setting() {
        let cases: &[(&str, &str, &str)] = &[
            ("CUSTODIAN_LISTEN", "not-an-address", "listen"),
            ("CUSTODIAN_DATABASE__MAX_CONNECTIONS", "0", "database.max_connections"),
            ("CUSTODIAN_DATABASE__URL", "mysql://x", "database.url"),
            ("CUSTODIAN_STORAGE__KIND", "s3", "storage.s3.bucket"),
            ("CUSTODIAN_STORAGE__KIND", "ftp", "kind"),
            ("CUSTODIAN_AUTH__HS256_SECRET", "short", "auth.hs256_secret"),
            ("CUSTODIAN_AUTH__DEFAULT_TOKEN_TTL", "soon", "auth.default_token_ttl"),
            ("CUSTODIAN_LOG__FORMAT", "xml", "format"),
            ("CUSTODIAN_HTTP__BULK_TIMEOUT_SECS", "0", "http.bulk_timeout_secs"),
            ("CUSTODIAN_DICOM__MAX_PDU_LENGTH", "100", "dicom.max_pdu_length"),
            ("CUSTODIAN_DICOM__MAX_PDU_LENGTH", "1000000000", "dicom.max_pdu_length"),
            ("CUSTODIAN_DICOM__MAX_ASSOCIATIONS", "0", "dicom.max_associations"),
            ("CUSTODIAN_RELEASE__SIGNING_KEY", "CHANGE_ME", "release.signing_key"),
            ("CUSTODIAN_RELEASE__PREVIOUS_PUBLIC_KEYS", "[\"short\"]", "release.previous_public_keys"),
            ("CUSTODIAN_RELEASE__PRESIGN_TTL_SECS", "901", "release.presign_ttl_secs"),
            ("CUSTODIAN_RELEASE__PRESIGN_TTL_SECS", "0", "release.presign_ttl_secs"),
            ("CUSTODIAN_RELEASE__PRESIGNED_URLS", "true", "release.presigned_urls"),
            ("CUSTODIAN_RELEASE__MULTIPART_THRESHOLD_BYTES", "0", "release.multipart_threshold_bytes"),
            ("CUSTODIAN_RELEASE__MULTIPART_PART_BYTES", "1024", "release.multipart_part_bytes"),
            ("CUSTODIAN_RELEASE__PUBLIC_URL", "ftp://x", "release.public_url"),
            ("CUSTODIAN_AUTH__OIDC__CLIENT_ID", "custodian-web", "auth.oidc_issuer"),
            ("CUSTODIAN_AUTH__OIDC__REDIRECT_URL", "not a url", "auth.oidc.redirect_url"),
            ("CUSTODIAN_AUTH__OIDC__SCOPES", "[\"profile\"]", "auth.oidc.scopes"),
        ];
        for (var, value, key) in cases {
            Jail::expect_with(|jail| {
                jail.set_env(var, value);
                let err = load_in_jail(jail, None).unwrap_err().to_string();
                assert!(err.contains(key), "{var}={value}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn the_release_keys_are_read_from_the_environment() {
        Jail::expect_with(|jail| {
            let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
            jail.set_env("CUSTODIAN_RELEASE__PREVIOUS_PUBLIC_KEYS", format!("[\"{x}\"]"));
            let key = crate::release::manifest::generate_signing_key().unwrap();
            jail.set_env("CUSTODIAN_RELEASE__SIGNING_KEY", key.expose_secret());
            let config = load_in_jail(jail, None).unwrap();
            assert_eq!(config.release.previous_public_keys, [x]);
            assert!(!format!("{config:?}").contains(key.expose_secret()), "the key never prints");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        Jail::expect_with(|jail| {
            jail.set_env("CUSTODIAN_DATABASE__URL", "postgres://u:hunter2-password@db/x");
            jail.set_env("CUSTODIAN_AUTH__HS256_SECRET", "a-very-long-shared-secret-of-32-bytes-or-more");
            let config = load_in_jail(jail, None).unwrap();
            let printed = format!("{config:?}");
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(!printed.contains("a-very-long-shared-secret"), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn web_sign_in_is_read_from_the_environment_and_its_secret_never_prints() {
        Jail::expect_with(|jail| {
            assert!(load_in_jail(jail, None).unwrap().auth.oidc.client_id.is_none(), "no single sign-on by default");
            jail.set_env("CUSTODIAN_AUTH__OIDC_ISSUER", "https://idp.example.org/realms/hospital");
            jail.set_env("CUSTODIAN_AUTH__JWKS_URL", "https://idp.example.org/realms/hospital/certs");
            jail.set_env("CUSTODIAN_AUTH__OIDC__CLIENT_ID", "custodian-web");
            jail.set_env("CUSTODIAN_AUTH__OIDC__CLIENT_SECRET", "a-client-secret-nobody-reads");
            jail.set_env("CUSTODIAN_AUTH__OIDC__SCOPES", "[\"openid\", \"roles\"]");
            let config = load_in_jail(jail, None).unwrap();
            assert_eq!(config.auth.oidc.client_id.as_deref(), Some("custodian-web"));
            assert_eq!(config.auth.oidc.scopes, ["openid", "roles"]);
            assert!(!format!("{config:?}").contains("a-client-secret"), "the secret never prints");
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_is_reported() {
        let err = Config::load(Some(Path::new("/nonexistent/custodian.toml")), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/custodian.toml"));
    }
}
