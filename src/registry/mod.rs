//! The registry's structure: sites data comes from, cohorts it is filed under.
//!
//! Sites are one axis of the "site effect"; cohorts carry the access tier,
//! licence and disclosure threshold that later decide who sees what.

pub mod db;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Who may see a cohort's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Tier {
    /// Anyone, under the cohort's licence.
    Open,
    /// Registered researchers, with light-touch approval.
    Registered,
    /// Only projects an access committee approved.
    Controlled,
}

/// How the cohort's data was collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Design {
    Retrospective,
    Prospective,
}

/// Where the cohort comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Source {
    Registry,
    Clinical,
    Challenge,
}

/// A cohort of the registry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Cohort {
    pub id: Uuid,
    /// Stable short name used in URLs, e.g. `brain-mri-2024`.
    pub slug: String,
    pub title: String,
    pub description: String,
    pub tier: Tier,
    pub design: Design,
    pub source: Source,
    /// SPDX identifier or name of the licence (open cohorts).
    pub license: Option<String>,
    /// How to cite the cohort (DOI or reference).
    pub citation: Option<String>,
    /// Counts below this are suppressed in discovery.
    pub suppression_threshold: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A site (hospital, imaging centre) data comes from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Site {
    pub id: Uuid,
    /// Stable short code, e.g. `uhb`.
    pub code: String,
    pub name: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Whether `slug` is a valid cohort slug (lowercase letters, digits, dashes; 1–63 characters).
pub fn valid_slug(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Whether `code` is a valid site code (lowercase letters, digits, `-`, `_`; 1–63 characters).
pub fn valid_site_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercase_words_joined_by_dashes() {
        for ok in ["default", "brain-mri-2024", "a", "x1"] {
            assert!(valid_slug(ok), "{ok}");
        }
        for bad in ["", "-lead", "Upper", "has space", "under_score", &"a".repeat(64)] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }

    #[test]
    fn site_codes_allow_underscores() {
        assert!(valid_site_code("site_01"));
        assert!(!valid_site_code("_x"));
        assert!(!valid_site_code("UHB"));
    }
}
