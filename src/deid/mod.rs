//! De-identification at the door (DICOM PS3.15).
//!
//! Rule: received bytes go through [`dicom::deidentify`] before anything is
//! written anywhere; what comes out holds no original identifier. The profile
//! is data (`profile/table_e1_1.tsv`), pseudonyms and date shifts are keyed
//! ([`pseudonym`]), free text is reduced to vocabulary ([`clean`]).

pub mod clean;
pub mod dicom;
pub mod guard;
pub mod profile;
pub mod pseudonym;

pub use dicom::{
    DeidSettings, Deidentified, InstanceMeta, MissingPatientId, QuarantineReason, Rejection, SafePrivate, deidentify,
};
pub use profile::{Action, PROFILE, ProfileOption, Rule};
pub use pseudonym::RegistryKey;

/// The registry key: configured, or generated into the data dir of an embedded installation.
pub fn load_key(config: &crate::config::Config) -> anyhow::Result<RegistryKey> {
    use secrecy::ExposeSecret;
    let secret = match (&config.deid.registry_key, config.embedded_database()) {
        (Some(secret), _) => secret.clone(),
        (None, true) => crate::secrets::load_or_generate(&config.data_dir.join("secrets/registry.key"))?,
        (None, false) => anyhow::bail!(
            "deid.registry_key is required with an external database: every node must pseudonymize with the same key"
        ),
    };
    RegistryKey::new(secret.expose_secret().as_bytes()).map_err(anyhow::Error::msg)
}

/// Safe private attributes from the configuration (validated there).
pub fn safe_private(config: &crate::config::Config) -> Vec<SafePrivate> {
    config
        .deid
        .safe_private
        .iter()
        .filter_map(|e| {
            Some(SafePrivate {
                creator: e.creator.clone(),
                group: u16::from_str_radix(&e.group, 16).ok()?,
                element: u8::from_str_radix(&e.element, 16).ok()?,
            })
        })
        .collect()
}
