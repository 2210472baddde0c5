//! Annotation terms: the kinds of annotation, their level, and the roles of
//! the people (or algorithms) who make them.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kind of annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Kind)]
pub enum AnnotationKind {
    Segmentation,
    Contour,
    Landmark,
    Box,
    Label,
}

impl AnnotationKind {
    /// Every kind, in the order they are listed to users.
    pub const ALL: [Self; 5] = [Self::Segmentation, Self::Contour, Self::Landmark, Self::Box, Self::Label];

    /// The kind named exactly `text` (`segmentation`, `contour`, `landmark`, `box`, `label`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Segmentation => "segmentation",
            Self::Contour => "contour",
            Self::Landmark => "landmark",
            Self::Box => "box",
            Self::Label => "label",
        }
    }

    /// `high` for labels, `low` for everything drawn.
    pub fn level(self) -> AnnotationLevel {
        if self == Self::Label { AnnotationLevel::High } else { AnnotationLevel::Low }
    }
}

impl fmt::Display for AnnotationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for AnnotationKind {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The level of an annotation: `high` for coded labels, `low` for geometry and masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnotationLevel {
    Low,
    High,
}

impl AnnotationLevel {
    pub const ALL: [Self; 2] = [Self::Low, Self::High];

    /// The level named exactly `text` (`low` or `high`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::High => "high",
        }
    }
}

impl fmt::Display for AnnotationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for AnnotationLevel {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Who made an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnotatorRole {
    Radiologist,
    Resident,
    Technologist,
    Clinician,
    Student,
    Algorithm,
    Other,
}

impl AnnotatorRole {
    /// Every role, in the order they are listed to users.
    pub const ALL: [Self; 7] = [
        Self::Radiologist,
        Self::Resident,
        Self::Technologist,
        Self::Clinician,
        Self::Student,
        Self::Algorithm,
        Self::Other,
    ];

    /// The role named exactly `text` (`radiologist`, …, `algorithm`, `other`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Radiologist => "radiologist",
            Self::Resident => "resident",
            Self::Technologist => "technologist",
            Self::Clinician => "clinician",
            Self::Student => "student",
            Self::Algorithm => "algorithm",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for AnnotatorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for AnnotatorRole {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_exactly_and_round_trip() {
        let names = AnnotationKind::ALL.map(AnnotationKind::as_str);
        assert_eq!(names, ["segmentation", "contour", "landmark", "box", "label"]);
        for kind in AnnotationKind::ALL {
            assert_eq!(AnnotationKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str(), "serde uses the same names");
            assert_eq!(serde_json::from_value::<AnnotationKind>(json).unwrap(), kind);
        }
        for text in ["Label", "LABEL", " box", "mask", "", "boxes"] {
            assert_eq!(AnnotationKind::parse(text), None, "{text}");
        }
        assert!(serde_json::from_str::<AnnotationKind>("\"Label\"").is_err());
    }

    #[test]
    fn labels_are_high_level_and_drawings_low() {
        assert_eq!(AnnotationKind::Label.level(), AnnotationLevel::High);
        for kind in
            [AnnotationKind::Segmentation, AnnotationKind::Contour, AnnotationKind::Landmark, AnnotationKind::Box]
        {
            assert_eq!(kind.level(), AnnotationLevel::Low, "{kind}");
        }
        assert_eq!(AnnotationLevel::parse("low"), Some(AnnotationLevel::Low));
        assert_eq!(AnnotationLevel::parse("high").map(AnnotationLevel::as_str), Some("high"));
        assert_eq!(AnnotationLevel::parse("High"), None);
        assert_eq!(AnnotationLevel::parse("medium"), None);
    }

    #[test]
    fn roles_parse_exactly() {
        let names = AnnotatorRole::ALL.map(AnnotatorRole::as_str);
        assert_eq!(names, ["radiologist", "resident", "technologist", "clinician", "student", "algorithm", "other"]);
        for role in AnnotatorRole::ALL {
            assert_eq!(AnnotatorRole::parse(role.as_str()), Some(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        for text in ["intern", "Radiologist", "", "ai"] {
            assert_eq!(AnnotatorRole::parse(text), None, "{text}");
        }
    }
}
