//! Genetic variants: chromosomes and alleles as stored, dbSNP ids, and a
//! variant named by either an rsID or its position `chrom-pos-ref-alt`.

use std::fmt;

/// A human chromosome as stored: `1`–`22`, `X`, `Y` or `MT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chromosome(String);

impl Chromosome {
    /// The chromosome `text` names, with or without a `chr` prefix
    /// (`chr19`, `19`, `X`, `chrM`, `MT`; leading zeros dropped).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let bare = text.strip_prefix("chr").or_else(|| text.strip_prefix("CHR")).unwrap_or(text);
        let name = match bare.to_ascii_uppercase().as_str() {
            "M" | "MT" => "MT".to_owned(),
            "X" | "Y" => bare.to_ascii_uppercase(),
            digits if digits.parse::<u8>().is_ok_and(|n| (1..=22).contains(&n)) => {
                digits.trim_start_matches('0').to_owned()
            }
            _ => return None,
        };
        Some(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Chromosome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An allele as stored: 1 to 1,000 of `A`, `C`, `G`, `T`, `N`, upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Allele(String);

impl Allele {
    /// The allele in `text`, upper-cased (`g` → `G`).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.to_ascii_uppercase();
        let valid = !text.is_empty()
            && text.len() <= 1000
            && text.bytes().all(|b| matches!(b, b'A' | b'C' | b'G' | b'T' | b'N'));
        valid.then_some(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Allele {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A position on a chromosome: a whole number from 1.
pub fn position(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().filter(|p| *p > 0)
}

/// A dbSNP reference SNP id: `rs` and digits, e.g. `rs429358`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rsid(String);

impl Rsid {
    /// The id `text` is, exactly (no whitespace, lower-case `rs`).
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() > 2 && text.starts_with("rs") && text[2..].bytes().all(|b| b.is_ascii_digit());
        valid.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Rsid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A biallelic variant by position: chromosome, position, reference and
/// alternate allele (different from the reference).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VariantPosition {
    chrom: Chromosome,
    pos: i64,
    reference: Allele,
    alt: Allele,
}

impl VariantPosition {
    /// A variant written `1-55051215-G-A`, or with `:` or `_` between the parts
    /// (`chr19:44908684:T:C`).
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.trim().split(['-', ':', '_']).collect();
        let [chrom, pos, reference, alt] = parts.as_slice() else { return None };
        Self::from_parts(chrom, pos, reference, alt)
    }

    /// A variant from its four parts as written (a table's `chrom`, `pos`, `ref`, `alt`).
    pub fn from_parts(chrom: &str, pos: &str, reference: &str, alt: &str) -> Option<Self> {
        let chrom = Chromosome::parse(chrom)?;
        let pos = position(pos)?;
        let (reference, alt) = (Allele::parse(reference)?, Allele::parse(alt)?);
        (reference != alt).then_some(Self { chrom, pos, reference, alt })
    }

    pub fn chrom(&self) -> &str {
        self.chrom.as_str()
    }

    pub fn pos(&self) -> i64 {
        self.pos
    }

    pub fn reference(&self) -> &str {
        self.reference.as_str()
    }

    pub fn alt(&self) -> &str {
        self.alt.as_str()
    }

    /// Chromosome, position, reference and alternate allele, as stored.
    pub fn into_parts(self) -> (String, i64, String, String) {
        (self.chrom.into_string(), self.pos, self.reference.into_string(), self.alt.into_string())
    }
}

impl fmt::Display for VariantPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}-{}", self.chrom, self.pos, self.reference, self.alt)
    }
}

/// How a query names a variant: by rsID or by position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VariantRef {
    Rsid(Rsid),
    Position(VariantPosition),
}

impl VariantRef {
    /// An rsID (`rs429358`) or a position (`19-44908684-T-C`).
    pub fn parse(text: &str) -> Option<Self> {
        Rsid::parse(text).map(Self::Rsid).or_else(|| VariantPosition::parse(text).map(Self::Position))
    }
}

impl fmt::Display for VariantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsid(rsid) => rsid.fmt(f),
            Self::Position(position) => position.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> Option<(String, i64, String, String)> {
        VariantPosition::parse(text).map(VariantPosition::into_parts)
    }

    #[test]
    fn chromosomes_are_stored_without_chr_and_mt_for_the_mitochondrion() {
        let cases = [("chr19", "19"), ("19", "19"), ("CHR7", "7"), ("07", "7"), ("x", "X"), ("chrY", "Y")];
        for (text, stored) in cases.into_iter().chain([("chrM", "MT"), ("MT", "MT"), ("m", "MT"), (" 22 ", "22")]) {
            assert_eq!(Chromosome::parse(text).map(Chromosome::into_string).as_deref(), Some(stored), "{text}");
        }
        for text in ["0", "23", "chr", "", "chrUn", "W", "1a", "256"] {
            assert_eq!(Chromosome::parse(text), None, "{text}");
        }
    }

    #[test]
    fn alleles_are_bases_upper_cased() {
        assert_eq!(Allele::parse("acgtn").map(Allele::into_string).as_deref(), Some("ACGTN"));
        assert!(Allele::parse(&"A".repeat(1000)).is_some());
        for text in ["", "*", ".", "<DEL>", "AUG", &"A".repeat(1001)] {
            assert_eq!(Allele::parse(text), None, "{text}");
        }
    }

    #[test]
    fn positions_are_whole_numbers_from_one() {
        assert_eq!(position("44908684"), Some(44_908_684));
        assert_eq!(position("1"), Some(1));
        for text in ["0", "-5", "1.5", "", " 5", "x"] {
            assert_eq!(position(text), None, "{text}");
        }
    }

    #[test]
    fn variant_positions_parse_with_any_separator() {
        let apoe = Some(("19".into(), 44_908_684, "T".into(), "C".into()));
        assert_eq!(parts("19-44908684-T-C"), apoe);
        assert_eq!(parts(" chr19:44908684:t:c "), apoe);
        assert_eq!(parts("19_44908684_T_C"), apoe);
        assert_eq!(parts("X-100-a-g"), Some(("X".into(), 100, "A".into(), "G".into())));
        assert_eq!(parts("1-100-AT-A"), Some(("1".into(), 100, "AT".into(), "A".into())));
        for text in ["1-0-A-G", "1-100-A-A", "1-100-A", "1-100-A-G-T", "chr99-5-A-G", "1-x-A-G", "1-100-A-*", ""] {
            assert_eq!(parts(text), None, "{text}");
        }
        let v = VariantPosition::from_parts("chr1", "55051215", "g", "a").unwrap();
        assert_eq!((v.chrom(), v.pos(), v.reference(), v.alt()), ("1", 55_051_215, "G", "A"));
        assert_eq!(v.to_string(), "1-55051215-G-A");
        assert_eq!(VariantPosition::from_parts("1", "5", "A", "a"), None, "the same allele twice");
    }

    #[test]
    fn rsids_are_rs_and_digits_exactly() {
        assert_eq!(Rsid::parse("rs429358").map(Rsid::into_string).as_deref(), Some("rs429358"));
        for text in ["rs", "RS429358", "rs42a", " rs429358", "429358", "rs-1", ""] {
            assert_eq!(Rsid::parse(text), None, "{text}");
        }
    }

    #[test]
    fn a_variant_is_named_by_rsid_or_position() {
        assert!(matches!(VariantRef::parse("rs7903146"), Some(VariantRef::Rsid(r)) if r.as_str() == "rs7903146"));
        let Some(VariantRef::Position(p)) = VariantRef::parse("chr19-44908684-T-C") else { panic!() };
        assert_eq!(p.to_string(), "19-44908684-T-C");
        assert_eq!(VariantRef::parse("rs7903146").unwrap().to_string(), "rs7903146");
        for text in ["rs", "APOE", "19-44908684", "RS7903146"] {
            assert_eq!(VariantRef::parse(text), None, "{text}");
        }
    }
}
