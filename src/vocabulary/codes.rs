//! Diagnosis codes: the coding systems (ICD-10, SNOMED CT), their codes in
//! the form the registry stores, and code prefixes that find subcodes.
//!
//! ICD-10 codes are stored upper-case with a dot after the three-character
//! category (`e119` → `E11.9`), so the prefix `E11` finds every subcode.
//! SNOMED CT concept ids are 6–18 digits whose last digit is a Verhoeff check.

use std::fmt;

/// A coding system of diagnoses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeSystem {
    /// ICD-10 and its national modifications (ICD-10-CM, ICD-10-GM).
    Icd10,
    /// SNOMED CT.
    SnomedCt,
}

impl CodeSystem {
    /// Every system, in a fixed order.
    pub const ALL: [Self; 2] = [Self::Icd10, Self::SnomedCt];

    /// The system `text` names: ICD-10 as `ICD-10`, `ICD10`, `ICD-10-CM`,
    /// `ICD-10-GM` or `ICD`; SNOMED CT as `SNOMED CT`, `SNOMED` or `SCT`. Case,
    /// spaces, hyphens and underscores do not matter.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().replace(['-', '_', ' '], "").as_str() {
            "ICD10" | "ICD10CM" | "ICD10GM" | "ICD" => Some(Self::Icd10),
            "SNOMED" | "SNOMEDCT" | "SCT" => Some(Self::SnomedCt),
            _ => None,
        }
    }

    /// The system a code of unnamed system is taken to be in: SNOMED CT when
    /// it is all digits (as given, untrimmed), else ICD-10. The code itself is
    /// not checked.
    pub fn of_code(code: &str) -> Self {
        if code.bytes().all(|b| b.is_ascii_digit()) { Self::SnomedCt } else { Self::Icd10 }
    }

    /// The name as stored: `ICD-10` or `SNOMED CT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icd10 => "ICD-10",
            Self::SnomedCt => "SNOMED CT",
        }
    }
}

impl fmt::Display for CodeSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for CodeSystem {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// `E119` as stored: `E11.9` (a dot after the category when there is more).
fn dotted(compact: String) -> String {
    if compact.len() > 3 { format!("{}.{}", &compact[..3], &compact[3..]) } else { compact }
}

/// An ICD-10 code or category, held in its stored form (`E11.9`, `I21`).
///
/// Two readings exist because two kinds of input have always been read
/// differently, and both are kept:
///
/// - [`Icd10Code::parse`], for diagnosis imports and discovery queries: dots
///   anywhere are ignored (`E11.9`, `E119`, `E11.` all read as `E11.9` or
///   `E11`) and the third character may be a letter, as in ICD-10-CM's `C4A`
///   or `M1A`;
/// - [`Icd10Code::parse_strict`], for the diseases of consent terms and of an
///   application's intended use: a letter, two digits, then optionally one dot
///   right after them and one to four letters or digits (`E11.` and `C4A` are
///   refused).
///
/// Every code `parse_strict` accepts, `parse` accepts as the same code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Icd10Code(String);

impl Icd10Code {
    /// A code as imports and discovery read it: surrounding whitespace and
    /// every dot are dropped, case is folded, and what is left is a letter, a
    /// digit, a letter or digit, and up to four more letters or digits.
    pub fn parse(text: &str) -> Option<Self> {
        let compact = text.trim().chars().filter(|c| *c != '.').collect::<String>().to_ascii_uppercase();
        let bytes = compact.as_bytes();
        let valid = (3..=7).contains(&bytes.len())
            && bytes[0].is_ascii_uppercase()
            && bytes[1].is_ascii_digit()
            && bytes[2..].iter().all(u8::is_ascii_alphanumeric);
        valid.then(|| Self(dotted(compact)))
    }

    /// A code as consent terms and applications state it: after trimming and
    /// folding case, a letter and two digits, then optionally a dot and one to
    /// four letters or digits, or up to four letters or digits without the dot.
    pub fn parse_strict(text: &str) -> Option<Self> {
        let code = text.trim().to_ascii_uppercase();
        let (head, tail) = match code.split_once('.') {
            Some((head, tail)) if !tail.is_empty() => (head, tail),
            Some(_) => return None,
            None => (code.get(..3)?, code.get(3..)?),
        };
        let head_ok =
            head.len() == 3 && head.as_bytes()[0].is_ascii_uppercase() && head[1..].bytes().all(|b| b.is_ascii_digit());
        let tail_ok = tail.len() <= 4 && tail.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        (head_ok && tail_ok).then(|| Self(dotted(format!("{head}{tail}"))))
    }

    /// The stored form, e.g. `E11.9`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The compact key, without the dot: `E119`.
    pub fn key(&self) -> String {
        self.0.replace('.', "")
    }

    /// Whether this code is `other` or one of its ancestors in the ICD-10
    /// hierarchy: `E11` covers `E11.9` and `E11.65`, `E11.9` does not cover `E11`.
    pub fn covers(&self, other: &Self) -> bool {
        other.key().starts_with(&self.key())
    }
}

impl fmt::Display for Icd10Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Icd10Code {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// A SNOMED CT concept id: 6 to 18 digits, the last a Verhoeff check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnomedCtId(String);

impl SnomedCtId {
    /// The id in `text` (surrounding whitespace aside), if it is 6–18 digits
    /// with a valid check digit.
    pub fn parse(text: &str) -> Option<Self> {
        let code = text.trim();
        let valid = (6..=18).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) && verhoeff_valid(code);
        valid.then(|| Self(code.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnomedCtId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for SnomedCtId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Whether ASCII `digits` pass the Verhoeff check SNOMED CT identifiers carry in their last digit.
fn verhoeff_valid(digits: &str) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let mut c = 0_u8;
    for (i, b) in digits.bytes().rev().enumerate() {
        c = D[usize::from(c)][usize::from(P[i % 8][usize::from(b - b'0')])];
    }
    c == 0
}

/// A diagnosis code of a known system, in its stored form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DiagnosisCode {
    Icd10(Icd10Code),
    SnomedCt(SnomedCtId),
}

impl DiagnosisCode {
    /// A code of `system` as imports and discovery read it
    /// ([`Icd10Code::parse`], [`SnomedCtId::parse`]).
    pub fn parse(system: CodeSystem, text: &str) -> Option<Self> {
        match system {
            CodeSystem::Icd10 => Icd10Code::parse(text).map(Self::Icd10),
            CodeSystem::SnomedCt => SnomedCtId::parse(text).map(Self::SnomedCt),
        }
    }

    /// The system of the code.
    pub fn system(&self) -> CodeSystem {
        match self {
            Self::Icd10(_) => CodeSystem::Icd10,
            Self::SnomedCt(_) => CodeSystem::SnomedCt,
        }
    }

    /// The stored form: `E11.9`, `44054006`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Icd10(code) => code.as_str(),
            Self::SnomedCt(id) => id.as_str(),
        }
    }
}

impl fmt::Display for DiagnosisCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for DiagnosisCode {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The start of the stored codes a query looks for: `E11` finds `E11`,
/// `E11.9` and `E11.65`.
///
/// Letters and digits, dots ignored, 1 to 18 of them, upper-cased. Unless the
/// system is SNOMED CT, a prefix of more than three characters takes the dot
/// of the stored ICD-10 form after the third (`E119` → `E11.9`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodePrefix(String);

impl CodePrefix {
    /// The prefix in `text`, for codes of `system` (`None`: of any system).
    pub fn parse(text: &str, system: Option<CodeSystem>) -> Option<Self> {
        let compact = text.trim().replace('.', "").to_ascii_uppercase();
        if compact.is_empty() || compact.len() > 18 || !compact.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        Some(Self(if system == Some(CodeSystem::SnomedCt) { compact } else { dotted(compact) }))
    }

    /// The prefix in stored form: letters, digits and at most one dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the stored code `code` starts with this prefix.
    pub fn matches(&self, code: &str) -> bool {
        code.starts_with(self.0.as_str())
    }
}

impl fmt::Display for CodePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for CodePrefix {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenient(text: &str) -> Option<String> {
        Icd10Code::parse(text).map(|c| c.as_str().to_owned())
    }

    fn strict(text: &str) -> Option<String> {
        Icd10Code::parse_strict(text).map(|c| c.as_str().to_owned())
    }

    #[test]
    fn systems_are_named_in_several_spellings_and_stored_in_one() {
        for text in ["ICD-10", "icd10", "ICD-10-CM", "icd_10_gm", " ICD ", "Icd 10"] {
            assert_eq!(CodeSystem::parse(text), Some(CodeSystem::Icd10), "{text}");
        }
        for text in ["SNOMED CT", "snomed-ct", "SNOMED", "sct", "Snomed_CT"] {
            assert_eq!(CodeSystem::parse(text), Some(CodeSystem::SnomedCt), "{text}");
        }
        for text in ["read", "ICD-9", "", "LOINC", "ICD-11"] {
            assert_eq!(CodeSystem::parse(text), None, "{text}");
        }
        assert_eq!(CodeSystem::Icd10.as_str(), "ICD-10");
        assert_eq!(CodeSystem::SnomedCt.to_string(), "SNOMED CT");
        for system in CodeSystem::ALL {
            assert_eq!(CodeSystem::parse(system.as_str()), Some(system));
        }
        assert_eq!(CodeSystem::of_code("44054006"), CodeSystem::SnomedCt);
        assert_eq!(CodeSystem::of_code("E11.9"), CodeSystem::Icd10);
        assert_eq!(CodeSystem::of_code(" 44054006"), CodeSystem::Icd10, "taken as given, untrimmed");
    }

    #[test]
    fn icd10_codes_are_stored_upper_case_with_a_dot_after_the_category() {
        let cases = [
            ("e119", "E11.9"),
            ("E11.9", "E11.9"),
            (" e11.65 ", "E11.65"),
            ("I21", "I21"),
            ("C34.11", "C34.11"),
            ("E11.9XYZ", "E11.9XYZ"),
        ];
        for (text, stored) in cases {
            assert_eq!(lenient(text).as_deref(), Some(stored), "{text}");
            assert_eq!(strict(text).as_deref(), Some(stored), "{text}: both readings agree");
        }
        let code = Icd10Code::parse("e11.65").unwrap();
        assert_eq!((code.as_str(), code.key().as_str()), ("E11.65", "E1165"));
        assert_eq!(code.to_string(), "E11.65");
    }

    #[test]
    fn invalid_icd10_codes_are_refused_by_both_readings() {
        for text in ["", "E", "E1", "11.9", "1E1", "EE1", "E11.12345", "E11 9", "E11-9", "É11", "E11,9"] {
            assert_eq!(lenient(text), None, "{text}");
            assert_eq!(strict(text), None, "{text}");
        }
    }

    #[test]
    fn the_two_readings_differ_in_dots_and_the_third_character_only() {
        // Imports and discovery: dots anywhere are ignored, the third character may be a letter.
        assert_eq!(lenient("E11.").as_deref(), Some("E11"));
        assert_eq!(lenient("E1.19").as_deref(), Some("E11.9"));
        assert_eq!(lenient(".E11.9.").as_deref(), Some("E11.9"));
        assert_eq!(lenient("c4a.0").as_deref(), Some("C4A.0"));
        // Consent terms: one dot, right after a letter and two digits.
        for text in ["E11.", "E1.19", ".E11.9.", "C4A.0", "C4A", "E11..9"] {
            assert_eq!(strict(text), None, "{text}");
        }
    }

    #[test]
    fn a_code_covers_its_subcodes_not_its_parent() {
        let code = |text| Icd10Code::parse_strict(text).unwrap();
        assert!(code("E11").covers(&code("E11.9")));
        assert!(code("E11").covers(&code("e11.65")));
        assert!(code("E11").covers(&code("E11")));
        assert!(code("C34.1").covers(&code("C34.11")));
        assert!(!code("E11.9").covers(&code("E11")));
        assert!(!code("E11").covers(&code("E10")));
        assert!(!code("E11").covers(&code("E12.1")));
    }

    #[test]
    fn snomed_ct_ids_need_digits_and_their_check_digit() {
        assert_eq!(SnomedCtId::parse("44054006").map(|c| c.to_string()).as_deref(), Some("44054006"));
        assert_eq!(SnomedCtId::parse(" 22298006 ").map(|c| c.to_string()).as_deref(), Some("22298006"));
        assert!(SnomedCtId::parse("39607008").is_some(), "lung structure");
        assert!(SnomedCtId::parse("138875005").is_some(), "the root concept");
        for text in ["44054007", "22298005", "12345", "1234567890123456789", "4405400X", "", "-44054006"] {
            assert_eq!(SnomedCtId::parse(text), None, "{text}");
        }
        // Every digit but the right one fails the check.
        let valid = (0..10).filter(|d| SnomedCtId::parse(&format!("4405400{d}")).is_some()).collect::<Vec<_>>();
        assert_eq!(valid, [6]);
    }

    #[test]
    fn diagnosis_codes_are_read_by_their_system() {
        let icd = DiagnosisCode::parse(CodeSystem::Icd10, "e119").unwrap();
        assert_eq!((icd.system(), icd.as_str()), (CodeSystem::Icd10, "E11.9"));
        let sct = DiagnosisCode::parse(CodeSystem::SnomedCt, "44054006").unwrap();
        assert_eq!((sct.system(), sct.to_string().as_str()), (CodeSystem::SnomedCt, "44054006"));
        assert_eq!(DiagnosisCode::parse(CodeSystem::SnomedCt, "E11.9"), None);
        assert_eq!(DiagnosisCode::parse(CodeSystem::Icd10, "44054006"), None);
    }

    #[test]
    fn prefixes_take_the_stored_form_of_their_system() {
        let prefix = |text, system| CodePrefix::parse(text, system).map(|p| p.as_str().to_owned());
        assert_eq!(prefix("e119", Some(CodeSystem::Icd10)).as_deref(), Some("E11.9"));
        assert_eq!(prefix("E11", None).as_deref(), Some("E11"));
        assert_eq!(prefix("E1", None).as_deref(), Some("E1"));
        assert_eq!(prefix("C34.1", None).as_deref(), Some("C34.1"));
        assert_eq!(prefix("440540", Some(CodeSystem::SnomedCt)).as_deref(), Some("440540"));
        assert_eq!(prefix("4405", None).as_deref(), Some("440.5"), "without a system, the ICD-10 form");
        for text in ["", ".", "E11%", "E 11", "E11_", "1234567890123456789"] {
            assert_eq!(prefix(text, None), None, "{text}");
        }
        let e11 = CodePrefix::parse("E11", Some(CodeSystem::Icd10)).unwrap();
        assert!(e11.matches("E11.9") && e11.matches("E11") && !e11.matches("E10.9"));
        assert!(CodePrefix::parse("E119", None).unwrap().matches("E11.9"));
    }
}
