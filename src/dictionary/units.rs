//! Units of measure: the UCUM units clinical, lab and proteomic values arrive
//! in, and conversion of a value to its field's canonical unit.
//!
//! Each unit is a dimension and a linear map to that dimension's base unit
//! (`base = value × factor + offset`). Values convert between units of one
//! dimension, and between mass and substance concentration when the field
//! names its analyte's molar mass (glucose 180.16 g/mol: 5.5 mmol/L ≈ 99 mg/dL).
//! Anything else (mg/dL into a percentage, an unknown unit) is an error that
//! names both units, never a silent guess.

use std::fmt;

/// What a unit measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// A pure number, a ratio or a percentage (base: 1).
    Ratio,
    /// Base: kg.
    Mass,
    /// Base: m.
    Length,
    /// Mass per volume (base: g/L).
    MassConcentration,
    /// Amount of substance per volume (base: mol/L).
    SubstanceConcentration,
    /// Amount per amount, e.g. HbA1c in mmol/mol (base: mol/mol).
    SubstanceRatio,
    /// Enzyme activity per volume (base: U/L).
    CatalyticConcentration,
    /// Cells per volume (base: 1/L).
    NumberConcentration,
    /// Base: kPa.
    Pressure,
    /// Base: °C.
    Temperature,
    /// Mass per area, e.g. BMI (base: kg/m²).
    ArealDensity,
    /// Filtration rate normalised to body surface (base: mL/min/1.73 m²).
    FiltrationRate,
    /// Base: s.
    Duration,
    /// Events per minute, e.g. heart rate (base: 1/min).
    Rate,
    /// Normalised Protein eXpression, a log2 scale of its own (base: NPX).
    Npx,
}

impl Dimension {
    fn name(self) -> &'static str {
        match self {
            Self::Ratio => "ratio",
            Self::Mass => "mass",
            Self::Length => "length",
            Self::MassConcentration => "mass concentration",
            Self::SubstanceConcentration => "substance concentration",
            Self::SubstanceRatio => "substance ratio",
            Self::CatalyticConcentration => "catalytic concentration",
            Self::NumberConcentration => "number concentration",
            Self::Pressure => "pressure",
            Self::Temperature => "temperature",
            Self::ArealDensity => "mass per area",
            Self::FiltrationRate => "filtration rate",
            Self::Duration => "duration",
            Self::Rate => "rate",
            Self::Npx => "NPX",
        }
    }
}

/// A known unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    /// The UCUM code, e.g. `mmol/L`.
    pub code: &'static str,
    pub dimension: Dimension,
    factor: f64,
    offset: f64,
}

const fn unit(code: &'static str, dimension: Dimension, factor: f64) -> Unit {
    Unit { code, dimension, factor, offset: 0.0 }
}

use Dimension as D;

/// Every unit Custodian converts, by UCUM code.
const UNITS: &[Unit] = &[
    unit("1", D::Ratio, 1.0),
    unit("%", D::Ratio, 0.01),
    unit("kg", D::Mass, 1.0),
    unit("g", D::Mass, 1e-3),
    unit("[lb_av]", D::Mass, 0.453_592_37),
    unit("m", D::Length, 1.0),
    unit("cm", D::Length, 0.01),
    unit("mm", D::Length, 1e-3),
    unit("[in_i]", D::Length, 0.0254),
    unit("[ft_i]", D::Length, 0.3048),
    unit("g/L", D::MassConcentration, 1.0),
    unit("g/dL", D::MassConcentration, 10.0),
    unit("mg/dL", D::MassConcentration, 0.01),
    unit("mg/L", D::MassConcentration, 1e-3),
    unit("ug/mL", D::MassConcentration, 1e-3),
    unit("ug/L", D::MassConcentration, 1e-6),
    unit("ng/mL", D::MassConcentration, 1e-6),
    unit("ng/L", D::MassConcentration, 1e-9),
    unit("pg/mL", D::MassConcentration, 1e-9),
    unit("mol/L", D::SubstanceConcentration, 1.0),
    unit("mmol/L", D::SubstanceConcentration, 1e-3),
    unit("umol/L", D::SubstanceConcentration, 1e-6),
    unit("nmol/L", D::SubstanceConcentration, 1e-9),
    unit("pmol/L", D::SubstanceConcentration, 1e-12),
    unit("mmol/mol", D::SubstanceRatio, 1e-3),
    unit("U/L", D::CatalyticConcentration, 1.0),
    unit("[IU]/L", D::CatalyticConcentration, 1.0),
    unit("m[IU]/L", D::CatalyticConcentration, 1e-3),
    unit("u[IU]/mL", D::CatalyticConcentration, 1e-3),
    unit("/L", D::NumberConcentration, 1.0),
    unit("10*9/L", D::NumberConcentration, 1e9),
    unit("10*12/L", D::NumberConcentration, 1e12),
    unit("/uL", D::NumberConcentration, 1e6),
    unit("kPa", D::Pressure, 1.0),
    unit("mm[Hg]", D::Pressure, 0.133_322_387_415),
    Unit { code: "Cel", dimension: D::Temperature, factor: 1.0, offset: 0.0 },
    Unit { code: "[degF]", dimension: D::Temperature, factor: 5.0 / 9.0, offset: -32.0 * 5.0 / 9.0 },
    unit("kg/m2", D::ArealDensity, 1.0),
    unit("mL/min/{1.73_m2}", D::FiltrationRate, 1.0),
    unit("s", D::Duration, 1.0),
    unit("ms", D::Duration, 1e-3),
    unit("min", D::Duration, 60.0),
    unit("/min", D::Rate, 1.0),
    unit("{NPX}", D::Npx, 1.0),
];

/// Spellings seen in real exports, mapped to their UCUM code.
const ALIASES: &[(&str, &str)] = &[
    ("", "1"),
    ("ratio", "1"),
    ("percent", "%"),
    ("lb", "[lb_av]"),
    ("lbs", "[lb_av]"),
    ("in", "[in_i]"),
    ("inch", "[in_i]"),
    ("ft", "[ft_i]"),
    ("mmhg", "mm[Hg]"),
    ("iu/l", "[IU]/L"),
    ("miu/l", "m[IU]/L"),
    ("uiu/ml", "u[IU]/mL"),
    ("10^9/l", "10*9/L"),
    ("x10^9/l", "10*9/L"),
    ("10e9/l", "10*9/L"),
    ("10^12/l", "10*12/L"),
    ("x10^12/l", "10*12/L"),
    ("10e12/l", "10*12/L"),
    ("/ul", "/uL"),
    ("/mm3", "/uL"),
    ("cel", "Cel"),
    ("°c", "Cel"),
    ("degc", "Cel"),
    ("°f", "[degF]"),
    ("degf", "[degF]"),
    ("kg/m^2", "kg/m2"),
    ("kg/m²", "kg/m2"),
    ("ml/min/1.73m2", "mL/min/{1.73_m2}"),
    ("ml/min/1.73 m2", "mL/min/{1.73_m2}"),
    ("ml/min/1.73m²", "mL/min/{1.73_m2}"),
    ("bpm", "/min"),
    ("npx", "{NPX}"),
];

impl Unit {
    /// The unit spelled `text`: its UCUM code (case-insensitively, `µ`/`μ` as `u`)
    /// or a common spelling such as `mg/dl`, `x10^9/l` or `mmHg`.
    pub fn parse(text: &str) -> Option<Self> {
        let folded = text.trim().replace(['µ', 'μ'], "u").to_lowercase();
        let code = ALIASES.iter().find(|(alias, _)| *alias == folded).map_or(folded.as_str(), |(_, code)| code);
        UNITS.iter().find(|u| u.code.eq_ignore_ascii_case(code)).copied()
    }

    /// Every known UCUM code.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        UNITS.iter().map(|u| u.code)
    }

    fn to_base(self, value: f64) -> f64 {
        value * self.factor + self.offset
    }

    fn of_base(self, base: f64) -> f64 {
        (base - self.offset) / self.factor
    }
}

/// Why a value could not be brought to its field's unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitError {
    /// Not a unit Custodian knows (the text is not repeated: it came from a data file).
    Unknown,
    Incompatible {
        from: &'static str,
        from_dimension: &'static str,
        to: &'static str,
        to_dimension: &'static str,
    },
}

impl UnitError {
    /// Stable code of the problem.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown-unit",
            Self::Incompatible { .. } => "incompatible-unit",
        }
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => write!(f, "unknown unit (use a UCUM code such as mmol/L or mg/dL)"),
            Self::Incompatible { from, from_dimension, to, to_dimension } => {
                write!(f, "unit '{from}' ({from_dimension}) cannot be converted to '{to}' ({to_dimension})")
            }
        }
    }
}

/// `value` in `from`, expressed in `to`. `molar_mass` (g/mol) of the analyte
/// allows mass and substance concentrations to convert into each other.
pub fn convert(value: f64, from: Unit, to: Unit, molar_mass: Option<f64>) -> Result<f64, UnitError> {
    let base = from.to_base(value);
    let base = match (from.dimension, to.dimension, molar_mass) {
        (a, b, _) if a == b => base,
        // g/L ÷ g/mol = mol/L
        (D::MassConcentration, D::SubstanceConcentration, Some(m)) if m > 0.0 => base / m,
        (D::SubstanceConcentration, D::MassConcentration, Some(m)) if m > 0.0 => base * m,
        _ => {
            return Err(UnitError::Incompatible {
                from: from.code,
                from_dimension: from.dimension.name(),
                to: to.code,
                to_dimension: to.dimension.name(),
            });
        }
    };
    Ok(to.of_base(base))
}

/// `value` in the unit spelled `from`, expressed in `to`.
pub fn convert_text(value: f64, from: &str, to: Unit, molar_mass: Option<f64>) -> Result<f64, UnitError> {
    let from = Unit::parse(from).ok_or(UnitError::Unknown)?;
    convert(value, from, to, molar_mass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    fn u(text: &str) -> Unit {
        Unit::parse(text).unwrap_or_else(|| panic!("{text} parses"))
    }

    #[test]
    fn common_spellings_parse_to_their_ucum_unit() {
        assert_eq!(u("mg/dl").code, "mg/dL");
        assert_eq!(u(" MMOL/L ").code, "mmol/L");
        assert_eq!(u("µmol/L").code, "umol/L");
        assert_eq!(u("x10^9/L").code, "10*9/L");
        assert_eq!(u("mmHg").code, "mm[Hg]");
        assert_eq!(u("kg/m²").code, "kg/m2");
        assert_eq!(u("").code, "1");
        assert!(Unit::parse("furlongs").is_none());
        assert!(Unit::parse("mg").is_none(), "a mass is not a concentration and is not listed as one");
    }

    #[test]
    fn values_convert_within_a_dimension() {
        assert!(close(convert(180.0, u("cm"), u("m"), None).unwrap(), 1.8));
        assert!(close(convert(154.0, u("lb"), u("kg"), None).unwrap(), 69.853_225));
        assert!(close(convert(1.2, u("g/dL"), u("g/L"), None).unwrap(), 12.0));
        assert!(close(convert(98.6, u("[degF]"), u("Cel"), None).unwrap(), 37.0));
        assert!(close(convert(37.0, u("Cel"), u("[degF]"), None).unwrap(), 98.6));
        assert!(close(convert(7500.0, u("/uL"), u("10*9/L"), None).unwrap(), 7.5));
        assert!(close(convert(120.0, u("mm[Hg]"), u("kPa"), None).unwrap(), 15.998_686_489_8));
        assert!(close(convert(6.5, u("%"), u("1"), None).unwrap(), 0.065));
    }

    #[test]
    fn mass_and_substance_concentrations_convert_through_the_molar_mass() {
        // glucose: 99 mg/dL ≈ 5.495 mmol/L
        let mmol = convert(99.0, u("mg/dL"), u("mmol/L"), Some(180.156)).unwrap();
        assert!((mmol - 5.4953).abs() < 1e-3, "{mmol}");
        let back = convert(mmol, u("mmol/L"), u("mg/dL"), Some(180.156)).unwrap();
        assert!(close(back, 99.0));
        let err = convert(99.0, u("mg/dL"), u("mmol/L"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unit 'mg/dL' (mass concentration) cannot be converted to 'mmol/L' (substance concentration)"
        );
    }

    #[test]
    fn incompatible_and_unknown_units_are_named_in_the_error() {
        assert_eq!(
            convert(5.0, u("mmol/L"), u("%"), Some(180.0)).unwrap_err().to_string(),
            "unit 'mmol/L' (substance concentration) cannot be converted to '%' (ratio)"
        );
        assert_eq!(
            convert_text(5.0, "parsecs", u("m"), None).unwrap_err().to_string(),
            "unknown unit (use a UCUM code such as mmol/L or mg/dL)"
        );
    }

    #[test]
    fn every_alias_points_at_a_known_unit() {
        for (alias, code) in ALIASES {
            assert!(UNITS.iter().any(|u| u.code == *code), "{alias} → {code}");
        }
        let mut codes: Vec<_> = Unit::codes().map(str::to_lowercase).collect();
        codes.sort();
        let before = codes.len();
        codes.dedup();
        assert_eq!(before, codes.len(), "codes are unique case-insensitively");
    }
}
