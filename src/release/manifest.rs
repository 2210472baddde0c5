//! The release manifest: every file of a release with its size, SHA-256 and
//! media type, signed by the registry so a researcher can check offline that
//! what they hold is what the registry released.
//!
//! - [`Manifest`] serializes to the same bytes for the same release
//!   (`manifest.json`: fields in a fixed order, files sorted by path).
//! - [`sign`] signs those exact bytes with Ed25519 and gives the detached
//!   signature document (`manifest.json.sig`: algorithm, key id, signature).
//! - [`verify`] checks both against the registry's published keys (the JWKS
//!   served at `/.well-known/custodian/release-keys`, read by
//!   [`PublishedKey::from_jwks`]) and refuses anything altered.
//!
//! A key id is the first 16 characters of the key's RFC 7638 JWK thumbprint
//! (base64url SHA-256 of `{"crv":"Ed25519","kty":"OKP","x":"…"}`), so anyone
//! can recompute it from the public key.
//!
//! README.md, *Verifying a release manifest*, shows how to check a release
//! by hand with OpenSSL 3 (a test runs exactly those lines).

use std::path::Path;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the manifest format written by this code.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest inside a release.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Name of its detached signature.
pub const SIGNATURE_FILE: &str = "manifest.json.sig";
/// The only signature algorithm.
pub const ALGORITHM: &str = "Ed25519";
/// Where the embedded mode keeps its generated key, under the data dir.
pub const EMBEDDED_KEY_FILE: &str = "secrets/release-signing.key";
/// The environment variable giving the key to an external deployment.
pub const KEY_VARIABLE: &str = "CUSTODIAN_RELEASE__SIGNING_KEY";

/// Longest path a manifest lists, in bytes.
const MAX_PATH_BYTES: usize = 1024;

/// What a release holds: `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    pub extract_id: Uuid,
    /// The project a release was made for (absent for an open cohort's version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    /// The open cohort (slug) a version publishes (absent for a project's release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_cohort: Option<String>,
    /// The release's version within its project or open cohort, from 1.
    pub version: u32,
    pub created_at: DateTime<Utc>,
    /// The grant whose scope a project's release holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<Uuid>,
    pub totals: Totals,
    /// Sorted by path, each path once.
    pub files: Vec<FileEntry>,
    /// The earlier release this version replaces (after a withdrawal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<Uuid>,
    /// What this version no longer holds, against the one it supersedes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
}

/// Sums over the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Number of files listed.
    pub files: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// Subjects the release holds.
    pub subjects: u64,
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the release's root, `/`-separated (`dicom/…/….dcm`, `tables/subjects.csv`).
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    pub media_type: String,
}

impl FileEntry {
    /// An entry from a digest computed while the file was written.
    pub fn new(path: impl Into<String>, size: u64, sha256: &[u8; 32], media_type: impl Into<String>) -> Self {
        Self { path: path.into(), size, sha256: hex::encode(sha256), media_type: media_type.into() }
    }

    /// An entry for a small file held whole, its media type taken from its name.
    pub fn of_bytes(path: impl Into<String>, bytes: &[u8]) -> Self {
        let path = path.into();
        let media_type = media_type(&path);
        let sha256 = digest(&SHA256, bytes);
        Self { size: bytes.len() as u64, sha256: hex::encode(sha256.as_ref()), media_type: media_type.into(), path }
    }
}

/// What a new version removed against the version it supersedes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diff {
    /// Paths of files no longer in the release, sorted.
    pub removed_files: Vec<String>,
    /// Project pseudonyms (`psub-…`) of subjects no longer in the release, sorted.
    pub removed_subjects: Vec<String>,
}

impl Diff {
    /// A diff with both lists sorted and without repeats.
    pub fn new(mut removed_files: Vec<String>, mut removed_subjects: Vec<String>) -> Self {
        removed_files.sort();
        removed_files.dedup();
        removed_subjects.sort();
        removed_subjects.dedup();
        Self { removed_files, removed_subjects }
    }
}

/// Who and what a manifest describes, besides its files.
#[derive(Debug, Clone)]
pub struct Header {
    pub extract_id: Uuid,
    pub project_id: Option<Uuid>,
    pub open_cohort: Option<String>,
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub grant_id: Option<Uuid>,
    pub subjects: u64,
}

/// A manifest that cannot be written or was read with a problem, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid manifest: {0}")]
pub struct InvalidManifest(pub String);

impl Manifest {
    /// The manifest of `files` (sorted here), with totals computed from them.
    pub fn new(header: Header, mut files: Vec<FileEntry>) -> Result<Self, InvalidManifest> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Self {
            format_version: FORMAT_VERSION,
            extract_id: header.extract_id,
            project_id: header.project_id,
            open_cohort: header.open_cohort,
            version: header.version,
            created_at: header.created_at,
            grant_id: header.grant_id,
            totals: Totals {
                files: files.len() as u64,
                bytes: files.iter().map(|f| f.size).sum(),
                subjects: header.subjects,
            },
            files,
            supersedes: None,
            diff: None,
        };
        manifest.check()?;
        Ok(manifest)
    }

    /// The same manifest, as the version replacing `earlier` after a withdrawal.
    #[must_use]
    pub fn superseding(mut self, earlier: Uuid, diff: Diff) -> Self {
        self.supersedes = Some(earlier);
        self.diff = Some(diff);
        self
    }

    /// The bytes of `manifest.json`: always the same for the same manifest.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Everything [`verify`] relies on besides the signature: a known format,
    /// safe distinct sorted paths, hex digests, totals that add up.
    fn check(&self) -> Result<(), InvalidManifest> {
        let fail = |problem: String| Err(InvalidManifest(problem));
        if self.format_version != FORMAT_VERSION {
            return fail(format!("format_version {} is not {FORMAT_VERSION}", self.format_version));
        }
        for pair in self.files.windows(2) {
            if pair[0].path >= pair[1].path {
                return fail(format!("`{}` is listed twice or out of order", pair[1].path));
            }
        }
        for file in &self.files {
            check_path(&file.path).map_err(InvalidManifest)?;
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return fail(format!("the sha256 of `{}` is not 64 lowercase hex digits", file.path));
            }
        }
        let bytes = self.files.iter().try_fold(0_u64, |sum, f| sum.checked_add(f.size));
        if self.totals.files != self.files.len() as u64 || bytes != Some(self.totals.bytes) {
            return fail("the totals do not match the files".into());
        }
        Ok(())
    }
}

/// Refuses a path that could leave the release's directory or name no file.
fn check_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("path `{}` {why}", path.escape_debug()));
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return bad("must have 1 to 1024 bytes");
    }
    if path.chars().any(|c| c.is_control() || c == '\\' || c == ':') {
        return bad("holds a control character, a backslash or a colon");
    }
    if path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return bad("must be relative, without empty, `.` or `..` parts");
    }
    if path == MANIFEST_FILE || path == SIGNATURE_FILE {
        return bad("is the manifest's own name");
    }
    Ok(())
}

/// The media type of a release file, from its name.
pub fn media_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let types: &[(&str, &str)] = &[
        (".dcm", "application/dicom"),
        (".csv", "text/csv"),
        (".parquet", "application/vnd.apache.parquet"),
        (".json", "application/json"),
        (".md", "text/markdown"),
        (".txt", "text/plain"),
        (".nii.gz", "application/gzip"),
        (".nii", "application/octet-stream"),
    ];
    types.iter().find(|(suffix, _)| name.ends_with(suffix)).map_or("application/octet-stream", |(_, t)| t)
}

/// The detached signature: `manifest.json.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureDocument {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// The signing key's id, as published.
    pub key_id: String,
    /// The 64-byte signature over the exact bytes of `manifest.json`, base64.
    pub signature: String,
}

/// A public key a manifest may be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    kid: String,
    public_key: [u8; 32],
}

/// A key that cannot be used, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl PublishedKey {
    /// A key from its 32 raw bytes; the id is derived from them.
    pub fn from_bytes(public_key: &[u8]) -> Result<Self, KeyError> {
        let public_key: [u8; 32] =
            public_key.try_into().map_err(|_| KeyError("must be Ed25519 public keys of 32 bytes".into()))?;
        Ok(Self { kid: key_id(&public_key), public_key })
    }

    /// A key from a JWK's `x` (base64url, 32 bytes).
    pub fn from_x(x: &str) -> Result<Self, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(x.trim().trim_end_matches('='))
            .map_err(|_| KeyError("must be base64url public keys (a JWK's `x`)".into()))?;
        Self::from_bytes(&bytes)
    }

    /// The Ed25519 keys of a JWKS document (others are skipped). A key whose
    /// `kid` is not the one its `x` gives is refused.
    pub fn from_jwks(document: &[u8]) -> Result<Vec<Self>, KeyError> {
        let jwks: Jwks = serde_json::from_slice(document).map_err(|e| KeyError(format!("not a JWKS document: {e}")))?;
        let mut keys = Vec::new();
        for jwk in jwks.keys.iter().filter(|k| k.kty == "OKP" && k.crv == "Ed25519") {
            let key = Self::from_x(&jwk.x)?;
            if key.kid != jwk.kid {
                return Err(KeyError(format!("the key `{}` does not have the id its public key gives", jwk.kid)));
            }
            keys.push(key);
        }
        Ok(keys)
    }

    /// The key id: the first 16 characters of the RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The key as a JWK (RFC 8037).
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid: self.kid.clone(),
            x: URL_SAFE_NO_PAD.encode(self.public_key),
            use_: "sig".into(),
            alg: "EdDSA".into(),
        }
    }
}

fn key_id(public_key: &[u8; 32]) -> String {
    // RFC 7638: members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, URL_SAFE_NO_PAD.encode(public_key));
    let mut thumbprint = URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()));
    thumbprint.truncate(16);
    thumbprint
}

/// The registry's release keys, as published (RFC 7517 JWK Set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwks {
    /// The current signing key first, then earlier ones still verifying older releases.
    pub keys: Vec<Jwk>,
}

/// One Ed25519 public key (RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// Always `OKP`.
    #[schema(example = "OKP")]
    pub kty: String,
    /// Always `Ed25519`.
    #[schema(example = "Ed25519")]
    pub crv: String,
    /// The key id a signature document names.
    pub kid: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: String,
    /// Always `EdDSA`.
    #[schema(example = "EdDSA")]
    pub alg: String,
}

/// The registry's signing key, with the earlier keys it still publishes.
pub struct ReleaseSigner {
    key_pair: Ed25519KeyPair,
    /// The current key first.
    published: Vec<PublishedKey>,
}

impl std::fmt::Debug for ReleaseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseSigner").field("published", &self.published).finish_non_exhaustive()
    }
}

impl ReleaseSigner {
    /// A signer from a PKCS#8 (v1 or v2) Ed25519 private key, publishing
    /// `previous` too (a repeat of the current key is dropped).
    pub fn from_pkcs8(pkcs8: &[u8], previous: Vec<PublishedKey>) -> Result<Self, KeyError> {
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| KeyError("is not an Ed25519 private key in PKCS#8 (DER)".into()))?;
        let current = PublishedKey::from_bytes(key_pair.public_key().as_ref())?;
        let mut published = vec![current];
        for key in previous {
            if !published.contains(&key) {
                published.push(key);
            }
        }
        Ok(Self { key_pair, published })
    }

    /// A signer from a key as configured: base64 of the PKCS#8 DER, or PEM.
    pub fn from_text(text: &str, previous: Vec<PublishedKey>) -> Result<Self, KeyError> {
        Self::from_pkcs8(&decode_private_key(text)?, previous)
    }

    /// The key of this node: `release.signing_key` when configured, otherwise
    /// (embedded mode only) generated on first start into the data dir.
    pub fn load(config: &crate::config::Config) -> anyhow::Result<Self> {
        let previous = previous_keys(&config.release.previous_public_keys)
            .map_err(|e| anyhow::anyhow!("release.previous_public_keys {e}"))?;
        let (text, source) = match (&config.release.signing_key, config.embedded_database()) {
            (Some(key), _) => (key.clone(), "release.signing_key".to_owned()),
            (None, true) => {
                let path = config.data_dir.join(EMBEDDED_KEY_FILE);
                let key = crate::secrets::load_or_create(&path, || {
                    generate_signing_key().map(|key| key.expose_secret().to_owned())
                })?;
                (key, path.display().to_string())
            }
            (None, false) => anyhow::bail!(
                "release.signing_key ({KEY_VARIABLE}) is required with an external database: every node must \
                 sign releases with the same key (generate one with \
                 `openssl genpkey -algorithm ed25519 -outform DER | base64 -w0`)"
            ),
        };
        // Fails closed: a key that does not decode stops the node, it is never replaced.
        Self::from_text(text.expose_secret(), previous).map_err(|e| anyhow::anyhow!("{source} {e}"))
    }

    /// The id of the key signing new manifests.
    pub fn key_id(&self) -> &str {
        &self.published[0].kid
    }

    /// Current and previous public keys, the current first.
    pub fn published_keys(&self) -> &[PublishedKey] {
        &self.published
    }

    /// The published keys as a JWK Set.
    pub fn jwks(&self) -> Jwks {
        Jwks { keys: self.published.iter().map(PublishedKey::to_jwk).collect() }
    }
}

/// A new Ed25519 private key: base64 of its PKCS#8 DER, v1 (RFC 5208) as
/// `openssl genpkey` writes it: OpenSSL 3.0 does not read the v2 document
/// aws-lc writes.
pub fn generate_signing_key() -> anyhow::Result<SecretString> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let document =
        Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(SecretString::from(STANDARD.encode(document.as_ref())))
}

/// Checks a configured private key without keeping it.
pub fn check_private_key(text: &str) -> Result<(), KeyError> {
    ReleaseSigner::from_text(text, Vec::new()).map(drop)
}

/// The previous public keys as configured (each a JWK `x`).
pub fn previous_keys(configured: &[String]) -> Result<Vec<PublishedKey>, KeyError> {
    configured.iter().map(|x| PublishedKey::from_x(x)).collect()
}

fn decode_private_key(text: &str) -> Result<Vec<u8>, KeyError> {
    let text = text.trim();
    let body: String = if text.starts_with("-----BEGIN") {
        let inner = text
            .strip_prefix("-----BEGIN PRIVATE KEY-----")
            .and_then(|rest| rest.trim_end().strip_suffix("-----END PRIVATE KEY-----"))
            .ok_or_else(|| KeyError("must be a single PEM `PRIVATE KEY` (PKCS#8) block".into()))?;
        inner.chars().filter(|c| !c.is_whitespace()).collect()
    } else {
        text.chars().filter(|c| !c.is_whitespace()).collect()
    };
    STANDARD
        .decode(body.as_bytes())
        .map_err(|_| KeyError("must be base64 of a PKCS#8 DER private key, or its PEM".into()))
}

/// Signs `manifest`: the bytes of `manifest.json` and of `manifest.json.sig`.
pub fn sign(signer: &ReleaseSigner, manifest: &Manifest) -> (Vec<u8>, Vec<u8>) {
    let bytes = manifest.to_bytes();
    let signature = signer.key_pair.sign(&bytes);
    let document = SignatureDocument {
        algorithm: ALGORITHM.into(),
        key_id: signer.key_id().to_owned(),
        signature: STANDARD.encode(signature.as_ref()),
    };
    let mut signature_bytes = serde_json::to_vec_pretty(&document).expect("a signature document serializes");
    signature_bytes.push(b'\n');
    (bytes, signature_bytes)
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature document is not valid: {0}")]
    MalformedSignature(String),
    #[error("the signature uses `{0}`, not Ed25519")]
    UnsupportedAlgorithm(String),
    #[error("the manifest is signed with key `{0}`, which the registry does not publish")]
    UnknownKey(String),
    #[error("the signature does not match the manifest: it was altered or signed by another key")]
    BadSignature,
    #[error(transparent)]
    InvalidManifest(#[from] InvalidManifest),
}

/// Checks the signature over the exact `manifest_bytes` with the published
/// key it names, then reads the manifest (refusing unsafe paths).
pub fn verify(
    manifest_bytes: &[u8],
    signature_document: &[u8],
    published_keys: &[PublishedKey],
) -> Result<Manifest, VerifyError> {
    #[derive(Deserialize)]
    struct Format {
        format_version: u32,
    }
    let document: SignatureDocument =
        serde_json::from_slice(signature_document).map_err(|e| VerifyError::MalformedSignature(e.to_string()))?;
    if document.algorithm != ALGORITHM {
        return Err(VerifyError::UnsupportedAlgorithm(document.algorithm));
    }
    let key = published_keys
        .iter()
        .find(|k| k.kid == document.key_id)
        .ok_or_else(|| VerifyError::UnknownKey(document.key_id.clone()))?;
    let signature = STANDARD
        .decode(document.signature.trim())
        .map_err(|_| VerifyError::MalformedSignature("the signature is not base64".into()))?;
    UnparsedPublicKey::new(&ED25519, key.public_key)
        .verify(manifest_bytes, &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    // Signed by the registry: a problem from here on is the registry's, still refused.
    let format: Format =
        serde_json::from_slice(manifest_bytes).map_err(|e| InvalidManifest(format!("no format_version: {e}")))?;
    if format.format_version != FORMAT_VERSION {
        return Err(InvalidManifest(format!(
            "format_version {} is not {FORMAT_VERSION}: a newer client is needed",
            format.format_version
        ))
        .into());
    }
    let manifest: Manifest = serde_json::from_slice(manifest_bytes).map_err(|e| InvalidManifest(e.to_string()))?;
    manifest.check()?;
    Ok(manifest)
}

/// Where a verified manifest's file goes under `root` (paths were checked by [`verify`]).
pub fn local_path(root: &Path, entry: &FileEntry) -> std::path::PathBuf {
    entry.path.split('/').fold(root.to_path_buf(), |path, part| path.join(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> ReleaseSigner {
        ReleaseSigner::from_text(generate_signing_key().unwrap().expose_secret(), Vec::new()).unwrap()
    }

    fn header() -> Header {
        Header {
            extract_id: Uuid::from_u128(1),
            project_id: Some(Uuid::from_u128(2)),
            open_cohort: None,
            version: 1,
            created_at: DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap(),
            grant_id: Some(Uuid::from_u128(3)),
            subjects: 2,
        }
    }

    fn files() -> Vec<FileEntry> {
        vec![
            FileEntry::of_bytes("tables/subjects.csv", b"subject_id\npsub-a\npsub-b\n"),
            FileEntry::of_bytes("README.md", b"# Release\n"),
            FileEntry::new("dicom/1/2/3.dcm", 4, &[0xab; 32], "application/dicom"),
        ]
    }

    fn manifest() -> Manifest {
        Manifest::new(header(), files()).unwrap()
    }

    #[test]
    fn files_are_sorted_by_path_and_totals_add_up() {
        let manifest = manifest();
        let paths: Vec<_> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["README.md", "dicom/1/2/3.dcm", "tables/subjects.csv"]);
        assert_eq!(manifest.totals, Totals { files: 3, bytes: 10 + 4 + 25, subjects: 2 });
        assert_eq!(manifest.files[0].media_type, "text/markdown");
        assert_eq!(manifest.files[2].media_type, "text/csv");
    }

    #[test]
    fn the_same_manifest_always_gives_the_same_bytes() {
        let a = manifest().to_bytes();
        let mut reversed = files();
        reversed.reverse();
        let b = Manifest::new(header(), reversed).unwrap().to_bytes();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        assert!(text.starts_with("{\n  \"format_version\": 1,\n  \"extract_id\""), "{text}");
        assert!(!text.contains("supersedes") && !text.contains("diff"), "absent unless superseding: {text}");
    }

    #[test]
    fn a_superseding_version_names_its_predecessor_and_a_sorted_diff() {
        let diff =
            Diff::new(vec!["b.dcm".into(), "a.dcm".into(), "a.dcm".into()], vec!["psub-z".into(), "psub-y".into()]);
        let manifest = manifest().superseding(Uuid::from_u128(9), diff);
        let json: serde_json::Value = serde_json::from_slice(&manifest.to_bytes()).unwrap();
        assert_eq!(json["supersedes"], Uuid::from_u128(9).to_string());
        assert_eq!(json["diff"]["removed_files"], serde_json::json!(["a.dcm", "b.dcm"]));
        assert_eq!(json["diff"]["removed_subjects"], serde_json::json!(["psub-y", "psub-z"]));
    }

    #[test]
    fn unsafe_or_repeated_paths_are_refused() {
        for path in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "c:\\x", "a\\b", "a\nb", "manifest.json"] {
            let mut files = files();
            files[0].path = path.into();
            assert!(Manifest::new(header(), files).is_err(), "{path:?} is refused");
        }
        let mut files = files();
        files.push(files[0].clone());
        assert!(Manifest::new(header(), files).unwrap_err().0.contains("twice"));
    }

    #[test]
    fn a_signed_manifest_verifies_and_reads_back_the_same() {
        let signer = signer();
        let (bytes, signature) = sign(&signer, &manifest());
        assert_eq!(verify(&bytes, &signature, signer.published_keys()).unwrap(), manifest());
    }

    #[test]
    fn one_flipped_byte_anywhere_in_the_manifest_is_refused() {
        let signer = signer();
        let (bytes, signature) = sign(&signer, &manifest());
        for position in [0, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
            let mut tampered = bytes.clone();
            tampered[position] ^= 0x01;
            assert_eq!(
                verify(&tampered, &signature, signer.published_keys()),
                Err(VerifyError::BadSignature),
                "byte {position}"
            );
        }
    }

    #[test]
    fn a_signature_by_another_key_or_naming_another_key_is_refused() {
        let (registry, other) = (signer(), signer());
        let (bytes, by_other) = sign(&other, &manifest());
        assert_eq!(
            verify(&bytes, &by_other, registry.published_keys()),
            Err(VerifyError::UnknownKey(other.key_id().to_owned()))
        );
        // The other key's signature relabelled with the registry's key id.
        let mut document: SignatureDocument = serde_json::from_slice(&by_other).unwrap();
        document.key_id = registry.key_id().to_owned();
        let relabelled = serde_json::to_vec(&document).unwrap();
        assert_eq!(verify(&bytes, &relabelled, registry.published_keys()), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_rotated_key_still_verifies_what_it_signed() {
        let old = signer();
        let (bytes, signature) = sign(&old, &manifest());
        let previous = previous_keys(&[old.jwks().keys[0].x.clone()]).unwrap();
        let new = ReleaseSigner::from_text(generate_signing_key().unwrap().expose_secret(), previous).unwrap();
        assert_eq!(new.published_keys().len(), 2);
        assert_ne!(new.key_id(), old.key_id());
        assert!(verify(&bytes, &signature, new.published_keys()).is_ok());
        let (bytes, signature) = sign(&new, &manifest());
        assert_eq!(serde_json::from_slice::<SignatureDocument>(&signature).unwrap().key_id, new.key_id());
        assert!(verify(&bytes, &signature, new.published_keys()).is_ok());
    }

    #[test]
    fn the_jwks_reads_back_and_a_kid_that_does_not_match_its_key_is_refused() {
        let signer = signer();
        let jwks = serde_json::to_vec(&signer.jwks()).unwrap();
        assert_eq!(PublishedKey::from_jwks(&jwks).unwrap(), signer.published_keys());
        let mut forged = signer.jwks();
        forged.keys[0].kid = "AAAAAAAAAAAAAAAA".into();
        assert!(PublishedKey::from_jwks(&serde_json::to_vec(&forged).unwrap()).is_err());
    }

    #[test]
    fn the_key_id_is_the_rfc_7638_thumbprint_prefix() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let key = PublishedKey::from_x("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert_eq!(key.kid(), &"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"[..16]);
    }

    #[test]
    fn keys_are_read_from_base64_der_and_pem_and_garbage_is_named() {
        let der = STANDARD.decode(generate_signing_key().unwrap().expose_secret()).unwrap();
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", STANDARD.encode(&der));
        let from_pem = ReleaseSigner::from_text(&pem, Vec::new()).unwrap();
        let from_der = ReleaseSigner::from_text(&STANDARD.encode(&der), Vec::new()).unwrap();
        assert_eq!(from_pem.key_id(), from_der.key_id());
        assert!(check_private_key("CHANGE_ME").unwrap_err().to_string().contains("PKCS#8"));
        assert!(check_private_key(&STANDARD.encode([1_u8; 48])).is_err());
    }

    #[test]
    fn a_manifest_of_another_format_is_refused_after_its_signature_checks() {
        let signer = signer();
        let mut manifest = manifest();
        manifest.format_version = 2;
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let signature = signer.key_pair.sign(&bytes);
        let document = SignatureDocument {
            algorithm: ALGORITHM.into(),
            key_id: signer.key_id().into(),
            signature: STANDARD.encode(signature.as_ref()),
        };
        let error = verify(&bytes, &serde_json::to_vec(&document).unwrap(), signer.published_keys()).unwrap_err();
        assert!(error.to_string().contains("format_version 2"), "{error}");
    }

    #[test]
    fn a_verified_path_stays_under_the_root() {
        let entry = FileEntry::of_bytes("dicom/a/b.dcm", b"x");
        assert_eq!(local_path(Path::new("/out"), &entry), Path::new("/out/dicom/a/b.dcm"));
    }
}
