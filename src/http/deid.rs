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
use crate::deid::{MissingPatientId, PROFILE, ProfileOption, Rule};
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
    /// What happens to an instance without a Patient ID, as configured (`deid.missing_patient_id`).
    pub missing_patient_id: MissingPatientId,
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
    "Patient ID (0010,0020) and Patient's Name (0010,0010) are replaced by the subject's registry pseudonym, a keyed HMAC-SHA-256 of site, local patient ID and, when present and not empty, Issuer of Patient ID (0010,0021); a patient without an issuer keeps the pseudonym of before issuers counted.",
    "An instance without a Patient ID (empty or absent; Type 2 allows it) is handled as `deid.missing_patient_id` says (see `missing_patient_id`): `fallback` gives it a subject of its own study (a keyed HMAC of site and Study Instance UID, so two people are never joined), `reject` refuses it as missing-attribute.",
    "UIDs marked U are replaced by 2.25.<decimal> UIDs derived from a keyed HMAC-SHA-256 of the original UID, so the same UID maps to the same new UID in every file, and references (Referenced/Source Image Sequences, SEG and RTSTRUCT references) stay intact.",
    "Dates (Retain Longitudinal Temporal Information with Modified Dates) move back by one keyed offset per subject, 1 to 3650 days, in every file of that subject. This is a rule of the VR, at every depth: every DA, DT and TM value that its row does not remove, empty or replace is shifted, whether the table lists it or not (calibration dates included). Shifts are whole days, so a TM value, the time of day, is unchanged. Longitudinal Temporal Information Modified (0028,0303) is set to MODIFIED.",
    "Timezone Offset From UTC (0008,0201) is removed (basic X rather than the option's C), and with it the time-zone suffix of every DT value.",
    "Patient's Age (0010,1010) is computed in completed years (months, weeks or days for infants, as AS counts) from the birth date and the study date before the birth date is removed, when the file does not carry it. The catalog records age in completed years, from that or from the file's own Patient's Age; an age below 0 or above 125 years is recorded as unknown (the instance is still accepted).",
    "Clean Descriptors: free text is split into words (at spaces, punctuation, _, -, / and case changes) and judged against a fixed clinical vocabulary (modalities, techniques, anatomy, TG-263 structure names, laterality, targets, common findings). Text of known words only stays as written; otherwise unknown words go, a linking word (of, with, and) stays only between kept words, and a number only as a short index or a target's dose level; a value left with nothing but generic words (image, series) is emptied, or replaced by a dummy where the attribute is Type 1 (a D in its basic code).",
    "Retain Device Identity is not applied: station names (Station Name and the Performed and Scheduled Station Names, with their code sequences), serial numbers and device identifiers get the Basic Profile's action. What a device is (manufacturer, model, software, field strength) is not in Table E.1-1 and is kept.",
    "Compound codes: Z/D, X/D and X/Z/D become D (a dummy of the same VR where a value was present, so Type 1 attributes stay valid; an empty value stays empty; a sequence keeps its items, each attribute handled by its own row); X/Z becomes Z (present, empty); X/Z/U* becomes U (sequences kept with their UIDs remapped).",
    "Standard attributes the table does not list are kept, narrowed by kind: person names (PN) are emptied, free text (LT, ST, UT, and descriptions, comments, labels) is cleaned as descriptors, dates and times are shifted. An attribute the data dictionary does not know is removed. Overlays (groups 60xx) are removed whole.",
    "Private attributes (odd groups) are removed unless their creator and element are on the configured safe-private list; group lengths are recomputed; the file meta group is rebuilt, dropping the sender's AE titles and implementation, and the 128-byte preamble is zeroed.",
    "De-identification Method (0012,0063) and its Code Sequence (0012,0064) keep what an earlier de-identifier recorded; Custodian's steps follow as further values and items, one value per step, and name exactly the profile and the options applied.",
    "Files DCMTK reads are read: a meta group without its group length (0002,0000) is accepted, and a sequence sent as UN in implicit VR (CP-246: undefined length, or a public sequence's items) is read as the sequence it is and then profiled like any other (one nested inside a defined-length sequence is still removed); a meta group without Transfer Syntax UID (0002,0010) is refused naming that attribute.",
    "Instances with Burned In Annotation (0028,0301) = YES, and secondary captures or US, SC, OT, XC, ES, GM, SM, DOC instances that do not declare NO, are quarantined for a steward instead of published.",
    "Pixel data is carried through byte for byte, never decoded or re-encoded.",
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
    Ok(AppJson(statement(&state.config)))
}

/// The conformance statement under `config`, as served and as every release carries it.
pub fn statement(config: &crate::config::Config) -> DeidProfileResponse {
    let missing_patient_id = config.deid.missing_patient_id;
    let config = &config.discovery;
    let table = Perturbation::new(config.noise_sd, config.noise_bound);
    let code = |(code_value, code_meaning): (&'static str, &'static str)| ProfileCode {
        code_value,
        coding_scheme: "DCM",
        code_meaning,
    };
    DeidProfileResponse {
        edition: PROFILE.edition.clone(),
        source: PROFILE.source.clone(),
        codes: std::iter::once(code(BASIC_PROFILE_CODE))
            .chain(ProfileOption::APPLIED.iter().map(|o| code(o.code())))
            .collect(),
        rules: RULES.to_vec(),
        missing_patient_id,
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
    }
}
