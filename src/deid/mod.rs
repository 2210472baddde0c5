//! De-identification at the door (DICOM PS3.15).
//!
//! Rule: received bytes go through [`dicom::deidentify`] before anything is
//! written anywhere; what comes out holds no original identifier. The profile
//! is data (`profile/table_e1_1.tsv`), pseudonyms and date shifts are keyed
//! ([`pseudonym`]), free text is reduced to vocabulary ([`clean`]).

pub mod clean;
pub mod dicom;
pub mod profile;
pub mod pseudonym;

pub use dicom::{DeidSettings, Deidentified, InstanceMeta, QuarantineReason, Rejection, SafePrivate, deidentify};
pub use profile::{Action, PROFILE, ProfileOption, Rule};
pub use pseudonym::RegistryKey;
