//! DICOM PS3.15 Annex E, Table E.1-1, as versioned data.
//!
//! `profile/table_e1_1.tsv` holds the standard's table (its edition and source
//! are named in the file's header). This module parses it once, resolves each
//! attribute's action under the options Custodian applies, and renders the
//! conformance statement (PS3.2 N.11-6 style) from the same rows, so what is
//! documented is what is done.

use std::collections::HashMap;
use std::sync::LazyLock;

use dicom_core::{Tag, VR};
use serde::Serialize;
use utoipa::ToSchema;

const TABLE: &str = include_str!("profile/table_e1_1.tsv");

/// An action of Table E.1-1, after compound codes are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[schema(as = DeidAction)]
pub enum Action {
    /// K: keep the value (sequences are still processed item by item).
    Keep,
    /// C: clean — dates shifted by the subject's offset, descriptions reduced to
    /// allow-listed vocabulary, sequences processed.
    Clean,
    /// D: replace with a dummy value of the same VR.
    Dummy,
    /// Z: replace with a zero-length value.
    Zero,
    /// X: remove.
    Remove,
    /// U: replace the UID with the registry's keyed UID.
    Uid,
}

/// Confidentiality options (PS3.15 E.3) Custodian applies, with their CID 7050 codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileOption {
    RetainPatientCharacteristics,
    RetainLongitudinalModifiedDates,
    CleanDescriptors,
    CleanStructuredContent,
}

impl ProfileOption {
    /// The options applied to every instance, in precedence order: a retain
    /// option's K wins over a clean option's C. This list is the only source of
    /// what is declared: the table's actions, every file's De-identification
    /// Method (Code Sequence) and the conformance statement derive from it.
    ///
    /// Retain Device Identity is not among them: it would keep station names,
    /// serial numbers and device identifiers, which name one particular device
    /// (and with it a site). What a device *is* (manufacturer, model, field
    /// strength) is not in Table E.1-1 at all, so the Basic Profile keeps it.
    pub const APPLIED: [ProfileOption; 4] = [
        ProfileOption::RetainPatientCharacteristics,
        ProfileOption::RetainLongitudinalModifiedDates,
        ProfileOption::CleanDescriptors,
        ProfileOption::CleanStructuredContent,
    ];

    /// Column of the option in the table file.
    fn column(self) -> &'static str {
        match self {
            Self::RetainPatientCharacteristics => "retain_patient_characteristics",
            Self::RetainLongitudinalModifiedDates => "retain_longitudinal_modified_dates",
            Self::CleanDescriptors => "clean_descriptors",
            Self::CleanStructuredContent => "clean_structured_content",
        }
    }

    /// (code value, code meaning) in DICOM CID 7050, scheme DCM.
    pub fn code(self) -> (&'static str, &'static str) {
        match self {
            Self::RetainPatientCharacteristics => ("113108", "Retain Patient Characteristics Option"),
            Self::RetainLongitudinalModifiedDates => {
                ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
            }
            Self::CleanDescriptors => ("113105", "Clean Descriptors Option"),
            Self::CleanStructuredContent => ("113104", "Clean Structured Content Option"),
        }
    }
}

/// CID 7050 code of the Basic Application Confidentiality Profile itself.
pub const BASIC_PROFILE_CODE: (&str, &str) = ("113100", "Basic Application Confidentiality Profile");

/// One row of the table, with the action Custodian takes.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = DeidRule)]
pub struct Rule {
    /// `(GGGG,EEEE)`, or a pattern such as `(50xx,xxxx)`.
    pub tag: String,
    pub name: String,
    pub keyword: String,
    /// The Basic Profile's code as the standard writes it (e.g. `X/Z/D`).
    pub basic: String,
    /// The option whose code decided the action, when one did.
    pub option: Option<ProfileOption>,
    /// The code that decided (`basic` or the option's).
    pub code: String,
    /// What Custodian does.
    pub action: Action,
}

/// The parsed table.
#[derive(Debug)]
pub struct Profile {
    /// Edition of the standard the table comes from, e.g. `2025b`.
    pub edition: String,
    /// Where the table was taken from.
    pub source: String,
    rules: Vec<Rule>,
    by_tag: HashMap<Tag, usize>,
    /// (mask, value, rule index) for rows with `x` wildcards.
    patterns: Vec<(u32, u32, usize)>,
}

/// The profile compiled into this binary.
pub static PROFILE: LazyLock<Profile> =
    LazyLock::new(|| Profile::parse(TABLE).expect("the embedded Table E.1-1 parses"));

impl Profile {
    fn parse(text: &str) -> Result<Self, String> {
        let mut edition = String::new();
        let mut source = String::new();
        let mut header: Option<Vec<&str>> = None;
        let mut rules = Vec::new();
        let mut by_tag = HashMap::new();
        let mut patterns = Vec::new();
        for (number, line) in text.lines().enumerate() {
            if let Some(comment) = line.strip_prefix('#') {
                let comment = comment.trim();
                if let Some(value) = comment.strip_prefix("edition:") {
                    value.trim().clone_into(&mut edition);
                } else if let Some(value) = comment.strip_prefix("source:") {
                    value.trim().clone_into(&mut source);
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split('\t').collect();
            let Some(columns) = &header else {
                header = Some(cells);
                continue;
            };
            let cell = |name: &str| -> &str {
                columns.iter().position(|c| *c == name).and_then(|i| cells.get(i)).map_or("", |c| c.trim())
            };
            let raw_tag = cell("tag").to_ascii_lowercase();
            if raw_tag.len() != 8 {
                return Err(format!("line {}: tag `{raw_tag}` is not 8 hex digits or wildcards", number + 1));
            }
            let basic = cell("basic").to_owned();
            let keyword = cell("keyword");
            let (option, code) = ProfileOption::APPLIED
                .into_iter()
                // The offset from UTC goes with the time-zone suffix of every DT
                // value, which shifting cannot clean: both are removed (basic X).
                .filter(|_| keyword != "TimezoneOffsetFromUTC")
                .find_map(|o| Some(cell(o.column())).filter(|c| !c.is_empty()).map(|c| (Some(o), c.to_owned())))
                .unwrap_or((None, basic.clone()));
            let vr = cell("vr");
            let action = resolve(&code, vr).ok_or_else(|| format!("line {}: unknown action `{code}`", number + 1))?;
            let index = rules.len();
            rules.push(Rule {
                tag: format!("({},{})", &raw_tag[..4].to_ascii_uppercase(), &raw_tag[4..].to_ascii_uppercase())
                    .replace('X', "x"),
                name: cell("name").to_owned(),
                keyword: keyword.to_owned(),
                basic,
                option,
                code,
                action,
            });
            if raw_tag == "ggggeeee" {
                // Private attributes: handled by the safe-private list, not by tag.
                continue;
            }
            if raw_tag.contains('x') {
                let mut mask = 0_u32;
                let mut value = 0_u32;
                for ch in raw_tag.chars() {
                    mask <<= 4;
                    value <<= 4;
                    if ch != 'x' {
                        mask |= 0xf;
                        value |= ch.to_digit(16).ok_or_else(|| format!("line {}: bad tag", number + 1))?;
                    }
                }
                patterns.push((mask, value, index));
            } else {
                let n = u32::from_str_radix(&raw_tag, 16).map_err(|_| format!("line {}: bad tag", number + 1))?;
                #[allow(clippy::cast_possible_truncation)]
                by_tag.insert(Tag((n >> 16) as u16, n as u16), index);
            }
        }
        if edition.is_empty() || rules.len() < 300 {
            return Err(format!("the table names no edition or has too few rows ({})", rules.len()));
        }
        Ok(Self { edition, source, rules, by_tag, patterns })
    }

    /// The rule for a public (even-group) attribute, if the table lists it.
    pub fn rule(&self, tag: Tag) -> Option<&Rule> {
        if let Some(&i) = self.by_tag.get(&tag) {
            return Some(&self.rules[i]);
        }
        let n = (u32::from(tag.group()) << 16) | u32::from(tag.element());
        self.patterns.iter().find(|(mask, value, _)| n & mask == *value).map(|(_, _, i)| &self.rules[*i])
    }

    /// Every row, in table order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Resolves a (possibly compound) code to one action. For compounds the
/// standard lets the choice depend on the attribute's type in its IOD (D where
/// it is Type 1); without per-IOD tables Custodian takes the choice that keeps
/// every IOD valid: D wherever D is allowed (a present value becomes a dummy,
/// an empty one stays empty), Z where only X or Z are, and U for UIDs and for
/// sequences of references.
fn resolve(code: &str, vr: &str) -> Option<Action> {
    Some(match code {
        "K" => Action::Keep,
        "C" => Action::Clean,
        "D" | "X/D" | "Z/D" | "X/Z/D" => Action::Dummy,
        "Z" | "X/Z" => Action::Zero,
        "X" => Action::Remove,
        "U" => Action::Uid,
        // References (Referenced/Source Image Sequence) stay, their UIDs remapped,
        // so segmentations and derived images still point at their sources.
        "X/Z/U*" | "X/Z/U" => {
            if vr == VR::UI.to_string() || vr == VR::SQ.to_string() {
                Action::Uid
            } else {
                Action::Zero
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;

    #[test]
    fn embedded_table_names_its_edition_and_covers_the_identifying_attributes() {
        let profile = &*PROFILE;
        assert!(!profile.edition.is_empty());
        assert!(profile.rules().len() > 500, "{}", profile.rules().len());
        let action = |tag| profile.rule(tag).map(|r| r.action);
        assert_eq!(action(tags::PATIENT_NAME), Some(Action::Zero));
        assert_eq!(action(tags::PATIENT_ID), Some(Action::Dummy));
        assert_eq!(action(tags::PATIENT_BIRTH_DATE), Some(Action::Zero));
        assert_eq!(action(tags::STUDY_INSTANCE_UID), Some(Action::Uid));
        assert_eq!(action(tags::SOP_INSTANCE_UID), Some(Action::Uid));
        assert_eq!(action(tags::PATIENT_SEX), Some(Action::Keep), "Retain Patient Characteristics");
        assert_eq!(action(tags::DEVICE_SERIAL_NUMBER), Some(Action::Dummy), "Type 1 somewhere: a dummy");
        for tag in [tags::STATION_NAME, tags::PERFORMED_STATION_NAME, tags::SCHEDULED_STATION_NAME] {
            assert!(action(tag).is_some_and(|a| a != Action::Keep), "{tag}: Retain Device Identity is not applied");
        }
        assert_eq!(action(tags::DATE_OF_LAST_CALIBRATION), Some(Action::Clean), "shifted like every date");
        assert_eq!(action(tags::TIMEZONE_OFFSET_FROM_UTC), Some(Action::Remove), "goes with the DT suffixes");
        assert_eq!(action(tags::MANUFACTURER), None, "not identifying: kept");
        assert_eq!(action(tags::STUDY_DATE), Some(Action::Clean), "Retain Longitudinal Modified Dates");
        assert_eq!(action(tags::STUDY_DESCRIPTION), Some(Action::Clean), "Clean Descriptors");
        assert_eq!(action(tags::ACCESSION_NUMBER), Some(Action::Zero));
        assert_eq!(action(tags::INSTITUTION_NAME).map(|a| a != Action::Keep), Some(true));
        assert_eq!(action(tags::SOP_CLASS_UID), None, "class UIDs are not identifying");
        assert_eq!(action(Tag(0x6000, 0x4000)).map(|a| a == Action::Remove), Some(true), "overlay comments");
    }

    #[test]
    fn compound_codes_resolve_conservatively() {
        assert_eq!(resolve("X/Z/D", "LO"), Some(Action::Dummy));
        assert_eq!(resolve("X/Z", "LO"), Some(Action::Zero));
        assert_eq!(resolve("X/D", "SQ"), Some(Action::Dummy));
        assert_eq!(resolve("X/Z/U*", "UI"), Some(Action::Uid));
        assert_eq!(resolve("X/Z/U*", "SQ"), Some(Action::Uid));
        assert_eq!(resolve("X/Z/U*", "LO"), Some(Action::Zero));
        assert_eq!(resolve("Q", "LO"), None);
    }
}
