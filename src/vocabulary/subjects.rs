//! Subject terms: sex as recorded.

use std::fmt;

/// Sex as stored: `M`, `F` or `O`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    Male,
    Female,
    Other,
}

impl Sex {
    pub const ALL: [Self; 3] = [Self::Male, Self::Female, Self::Other];

    /// Sex as a site's table writes it, any case: `M`, `male`, `man`; `F`,
    /// `female`, `woman`; `O`, `other`, `X`, `diverse`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "m" | "male" | "man" => Some(Self::Male),
            "f" | "female" | "woman" => Some(Self::Female),
            "o" | "other" | "x" | "diverse" => Some(Self::Other),
            _ => None,
        }
    }

    /// Sex by its stored code exactly: `M`, `F` or `O` (as queries name it).
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sex| sex.as_str() == code)
    }

    /// The stored code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Male => "M",
            Self::Female => "F",
            Self::Other => "O",
        }
    }
}

impl fmt::Display for Sex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Sex {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_spell_sex_leniently() {
        assert_eq!(Sex::parse(" Female "), Some(Sex::Female));
        assert_eq!(Sex::parse("MAN"), Some(Sex::Male));
        assert_eq!(Sex::parse("x"), Some(Sex::Other));
        assert_eq!(Sex::parse("diverse"), Some(Sex::Other));
        for text in ["u", "", "unknown", "mf"] {
            assert_eq!(Sex::parse(text), None, "{text}");
        }
    }

    #[test]
    fn queries_name_the_stored_code_exactly() {
        for sex in Sex::ALL {
            assert_eq!(Sex::from_code(sex.as_str()), Some(sex));
            assert_eq!(Sex::parse(sex.as_str()), Some(sex), "a stored code reads back in a table");
            assert_eq!(sex.to_string(), sex.as_str());
        }
        for text in ["m", "female", " F", "X", ""] {
            assert_eq!(Sex::from_code(text), None, "{text}");
        }
    }
}
