//! Secrets generated on first start of an embedded installation and kept in
//! the data dir (`secrets/`, mode 0700; files 0600). Production installations
//! configure theirs instead.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;

/// Reads the secret in `path`, or creates it with 256 random bits.
pub fn load_or_generate(path: &Path) -> Result<SecretString> {
    load_or_create(path, || {
        let mut bytes = [0_u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    })
}

/// Reads the secret in `path`, or creates it (one line of text) with `make`.
pub fn load_or_create(path: &Path, make: impl FnOnce() -> Result<String>) -> Result<SecretString> {
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let secret = text.trim().to_owned();
        if secret.len() < 32 {
            bail!("{} holds a secret shorter than 32 bytes", path.display());
        }
        return Ok(SecretString::from(secret));
    }
    let secret = make()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{secret}")?;
    tracing::info!(path = %path.display(), "generated a new secret");
    Ok(SecretString::from(secret))
}
