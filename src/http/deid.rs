//! The de-identification conformance statement, generated from the profile
//! data, with the disclosure control of counts as configured.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::AppJson;
use crate::app::AppState;
use crate::deid::profile::BASIC_PROFILE_CODE;
use crate::deid::{PROFILE, ProfileOption, Rule};
use crate::discovery::protect::{self, Perturbation};
use crate::error::{ErrorBody, Result};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(find_deid_profile))
}

/// A CID 7050 code of the profile or one of its options.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileCode {
    pub code_value: &'static str,
    pub coding_scheme: &'static str,
    pub code_meaning: &'static str,
}

/// How Custodian de-identifies every instance it receives (PS3.2 N.11-6 style).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeidProfileResponse {
    /// Edition of DICOM PS3.15 whose Table E.1-1 is applied, e.g. `2026d`.
    pub edition: String,
    /// Where the machine-readable table was taken from.
    pub source: String,
    /// The Basic Profile and the options applied, as written into every file's
    /// De-identification Method Code Sequence (0012,0064).
    pub codes: Vec<ProfileCode>,
    /// Decisions the table leaves open or that Custodian makes beyond it.
    pub rules: Vec<&'static str>,
    /// Per attribute: the standard's code, the option that decided (if any) and the action taken.
    pub attributes: Vec<Rule>,
    /// How counts are protected before anyone without a grant sees them.
    pub disclosure: DisclosureStatement,
}

/// The statistical disclosure control of discovery, with its parameters as configured.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisclosureStatement {
    /// `cell-key`: the ABS TableBuilder / UK 2021 Census method, with anchors.
    pub method: &'static str,
    /// What is done, in order, and what it does not protect against.
    pub rules: Vec<&'static str>,
    /// The perturbation table.
    pub noise: crate::discovery::Noise,
    /// Threshold of subjects in no cohort, and the range a cohort may set.
    pub default_threshold: i32,
    pub min_threshold: i32,
    pub max_threshold: i32,
    /// Units each user may spend per cohort over the window.
    pub budget_units: u32,
    pub budget_window_days: u32,
}

const DISCLOSURE_RULES: &[&str] = &[
    "Stewards and admins, and project members asking within an active grant's scope, see exact counts; everyone else sees protected counts.",
    "Every subject has a fixed, secret, random 64-bit record key; a cell's key is the sum of its subjects' keys, so the same subjects always get the same answer.",
    "A published subject count is the true count plus the perturbation table's value at the position given by the cell key, and never below the threshold; studies, series and instances get their own draws, scaled to their size per subject.",
    "A subject counts in a cell only when at least its strictest cohort's threshold of such subjects are in it; a cell with none is suppressed, all four counts null, so nobody and a few look the same.",
    "Breakdowns list every label the registry holds, empty cells included, with margins computed as cells of their own; a partner of any lone hidden cell in a row or column is hidden too.",
    "Every answered cell is remembered with a sketch of its subjects' keys; a later cell within the threshold of one, by any route and for anyone, gets the nearest such answer, so adding or removing a few people changes nothing.",
    "Nothing is refused for what the data holds; each user spends units per cohort (a count 1, a breakdown 2 or 4), checked under a lock, with Retry-After when used up.",
    "Not stopped: a three-set tracker (P or Y or X against P and Y, all far apart) estimates a small group with the noise of three answers; the budget bounds how many such groups one account can examine, not how well it can examine one (docs/privacy.md).",
];

const RULES: &[&str] = &[
    "Patient ID (0010,0020) and Patient's Name (0010,0010) are replaced by the subject's registry pseudonym, a keyed HMAC-SHA-256 of site and local patient ID.",
    "UIDs marked U are replaced by 2.25.<decimal> UIDs derived from a keyed HMAC-SHA-256 of the original UID, so the same UID maps to the same new UID in every file, and references (Referenced/Source Image Sequences, SEG and RTSTRUCT references) stay intact.",
    "Dates marked C (Retain Longitudinal Temporal Information with Modified Dates) move back by one keyed offset per subject, 1 to 3650 days, in every file of that subject; times of day are kept. Longitudinal Temporal Information Modified (0028,0303) is set to MODIFIED.",
    "Patient's Age (0010,1010) is computed from the birth date and the study date before the birth date is removed, when the file does not carry it.",
    "Descriptors marked C (Clean Descriptors) keep only words of a fixed imaging vocabulary (modalities, anatomy, sequences, planes, contrast); every other word, and any word with a digit that is not a known term, is dropped.",
    "Retain Device Identity keeps what a device is (manufacturer, model, field strength), not which one: station name, serial numbers and device or detector identifiers are removed.",
    "Compound codes: Z/D, X/Z and X/Z/D become Z (present, empty); X/D becomes D; X/Z/U* becomes U (sequences kept with their UIDs remapped).",
    "Private attributes (odd groups) are removed unless their creator and element are on the configured safe-private list; group lengths are recomputed; the file meta group is rebuilt, dropping the sender's AE titles and implementation, and the 128-byte preamble is zeroed.",
    "Instances with Burned In Annotation (0028,0301) = YES, and secondary captures or US, SC, OT, XC, ES, GM, SM, DOC instances that do not declare NO, are quarantined for a steward instead of published.",
    "Standard attributes the table does not list are kept; pixel data is carried through byte for byte, never decoded or re-encoded.",
];

/// The de-identification conformance statement.
///
/// Generated from the same table that drives de-identification, so it always
/// says what is done. Open to anyone: privacy officers need it before any data
/// is sent.
#[utoipa::path(
    get,
    path = "/deid/profile",
    tag = tags::DEID,
    security(()),
    responses(
        (status = 200, description = "The profile, its options and the action for every attribute", body = DeidProfileResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_deid_profile(State(state): State<AppState>) -> Result<AppJson<DeidProfileResponse>> {
    let config = &state.config.discovery;
    let table = Perturbation::new(config.noise_sd, config.noise_bound);
    let code = |(code_value, code_meaning): (&'static str, &'static str)| ProfileCode {
        code_value,
        coding_scheme: "DCM",
        code_meaning,
    };
    Ok(AppJson(DeidProfileResponse {
        edition: PROFILE.edition.clone(),
        source: PROFILE.source.clone(),
        codes: std::iter::once(code(BASIC_PROFILE_CODE))
            .chain(ProfileOption::APPLIED.iter().map(|o| code(o.code())))
            .collect(),
        rules: RULES.to_vec(),
        attributes: PROFILE.rules().to_vec(),
        disclosure: DisclosureStatement {
            method: "cell-key",
            rules: DISCLOSURE_RULES.to_vec(),
            noise: crate::discovery::Noise::of(&table),
            default_threshold: protect::DEFAULT_THRESHOLD,
            min_threshold: protect::MIN_THRESHOLD,
            max_threshold: protect::MAX_THRESHOLD,
            budget_units: config.budget_units,
            budget_window_days: config.budget_window_days,
        },
    }))
}
