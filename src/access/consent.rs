//! Consent matching in the sense of the GA4GH Data Use Ontology (DUO): a
//! cohort's consent terms (a data use permission and its modifiers) against
//! the use a research application states. Every rule that takes part in the
//! decision is returned with a plain-language explanation, for the applicant
//! and the data-access committee alike.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::vocabulary::Icd10Code;

/// DUO data use permission of a cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Permission {
    /// No restriction (NRES).
    Nres,
    /// General research use (GRU), ancestry research included.
    Gru,
    /// Health, medical or biomedical research (HMB), not ancestry research.
    Hmb,
    /// Disease-specific research (DS) on the cohort's diseases.
    Ds,
    /// Population origins or ancestry research only (POA).
    Poa,
}

/// DUO data use modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Modifier {
    /// Not-for-profit use only.
    Npu,
    /// Non-commercial use only.
    Ncu,
    /// Ethics approval required.
    Irb,
    /// Publication required.
    Pub,
    /// Publication moratorium.
    Mor,
    /// Time limit on use.
    Ts,
    /// Geographical restriction.
    Gs,
    /// Collaboration with the cohort's investigators required.
    Col,
    /// Return of derived or enriched data to the registry required.
    Rtn,
    /// Genetic studies only.
    Gso,
    /// No general methods research.
    Nmds,
    /// User-specific restriction.
    Us,
    /// Project-specific restriction.
    Ps,
    /// Institution-specific restriction.
    Is,
}

impl Modifier {
    /// The DUO code, e.g. `NCU`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Npu => "NPU",
            Self::Ncu => "NCU",
            Self::Irb => "IRB",
            Self::Pub => "PUB",
            Self::Mor => "MOR",
            Self::Ts => "TS",
            Self::Gs => "GS",
            Self::Col => "COL",
            Self::Rtn => "RTN",
            Self::Gso => "GSO",
            Self::Nmds => "NMDS",
            Self::Us => "US",
            Self::Ps => "PS",
            Self::Is => "IS",
        }
    }
}

impl Permission {
    /// The DUO code, e.g. `HMB`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Nres => "NRES",
            Self::Gru => "GRU",
            Self::Hmb => "HMB",
            Self::Ds => "DS",
            Self::Poa => "POA",
        }
    }
}

/// The consent terms of a cohort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentTerms {
    /// The data use permission.
    pub permission: Permission,
    /// DS: the diseases, as ICD-10 codes or categories (`E11`, `C34.1`).
    #[serde(default)]
    pub diseases: Vec<String>,
    /// The data use modifiers.
    #[serde(default)]
    pub modifiers: Vec<Modifier>,
    /// MOR: no publication before this date.
    #[serde(default)]
    pub moratorium_until: Option<NaiveDate>,
    /// TS: the longest use allowed, in months.
    #[serde(default)]
    pub time_limit_months: Option<u32>,
    /// GS: ISO 3166-1 alpha-2 countries where the data may be processed.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Participants agreed to their de-identified data being published
    /// openly (an open cohort for a challenge, downloadable by anyone under
    /// its licence). Without it no subject of the cohort is published.
    #[serde(default)]
    pub open_release: bool,
}

/// The research purpose an application states (DUO terms for the purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Purpose {
    /// General research use, not limited to health research.
    Gru,
    /// Health, medical or biomedical research.
    Hmb,
    /// Research on specific diseases.
    Ds,
    /// Population origins or ancestry research.
    Poa,
}

/// What an application says it will do with the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntendedUse {
    /// The research purpose.
    pub purpose: Purpose,
    /// DS: the diseases studied, ICD-10.
    #[serde(default)]
    pub diseases: Vec<String>,
    /// Commercial use, or a for-profit organisation.
    #[serde(default)]
    pub commercial: bool,
    /// Development of methods or algorithms beyond the stated disease (e.g. a general segmentation model).
    #[serde(default)]
    pub methods_development: bool,
    /// Genetic or genomic research.
    #[serde(default)]
    pub genetic: bool,
    /// Reference of an ethics (IRB/REC) approval, if any.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub ethics_approval: Option<String>,
    /// Requested duration in months.
    pub duration_months: u32,
    /// ISO 3166-1 alpha-2 countries where data will be processed.
    #[serde(default)]
    pub processing_countries: Vec<String>,
}

/// How one rule judged the stated use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ConsentOutcome)]
pub enum Outcome {
    /// The stated use meets the rule.
    Pass,
    /// The use is allowed if the applicant accepts an obligation or the committee confirms something.
    Condition,
    /// The stated use breaks the rule.
    Fail,
}

/// One rule that took part in the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ConsentRule)]
pub struct Rule {
    /// The DUO code that the rule comes from (`GRU`, `DS`, `NCU`, `IRB`, …).
    pub code: &'static str,
    /// How the rule judged the stated use.
    pub outcome: Outcome,
    /// Plain-language explanation naming the terms and the stated use.
    pub explanation: String,
}

/// Whether the terms permit the stated use, all rules taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every rule passes.
    Permitted,
    /// No rule fails, at least one sets a condition.
    PermittedWithConditions,
    /// At least one rule fails.
    NotPermitted,
}

/// The decision for one cohort and every rule behind it: the permission rule
/// first, then one rule per modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConsentCheck {
    /// The decision.
    pub verdict: Verdict,
    /// The rules that decided it.
    pub rules: Vec<Rule>,
}

impl ConsentTerms {
    /// Checks the terms themselves: DS needs at least one disease; MOR needs
    /// `moratorium_until`; TS needs `time_limit_months` > 0; GS needs countries
    /// (two upper-case letters each); disease codes must look like ICD-10
    /// (case is normalised, so `e11.9` is accepted as `E11.9`). Returns every
    /// problem as (JSON field name, message); messages give positions, not values.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = disease_problems(self.permission == Permission::Ds, &self.diseases);
        if self.has(Modifier::Mor) && self.moratorium_until.is_none() {
            problems.push(("moratorium_until", "a publication moratorium (MOR) needs the date it ends".to_owned()));
        }
        if self.has(Modifier::Ts) && self.time_limit_months.is_none_or(|months| months == 0) {
            problems.push(("time_limit_months", "a time limit (TS) needs more than zero months".to_owned()));
        }
        if self.has(Modifier::Gs) && self.countries.is_empty() {
            problems.push(("countries", "a geographical restriction (GS) needs at least one country".to_owned()));
        }
        problems.extend(country_problems("countries", &self.countries, true));
        problems
    }

    /// Duplicate-free modifiers, DUO codes as text, for display.
    pub fn codes(&self) -> Vec<&'static str> {
        self.present_modifiers().into_iter().map(Modifier::code).collect()
    }

    /// The latest a use that began at `start` may end under these terms:
    /// `start` plus the time limit (TS), or `None` without one.
    pub fn latest_end(&self, start: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
        if !self.has(Modifier::Ts) {
            return None;
        }
        let months = self.time_limit_months?;
        Some(start.checked_add_months(chrono::Months::new(months)).unwrap_or(start))
    }

    fn has(&self, modifier: Modifier) -> bool {
        self.modifiers.contains(&modifier)
    }

    /// The modifiers present, once each, in the order `Modifier` declares them.
    fn present_modifiers(&self) -> Vec<Modifier> {
        let mut present = self.modifiers.clone();
        present.sort_by_key(|m| *m as u8);
        present.dedup();
        present
    }
}

impl IntendedUse {
    /// Checks the stated use: DS needs at least one disease; the duration is
    /// 1 to 120 months; countries are two letters (either case); disease codes
    /// look like ICD-10. Returns every problem as (JSON field name, message).
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = disease_problems(self.purpose == Purpose::Ds, &self.diseases);
        if !(1..=120).contains(&self.duration_months) {
            problems.push(("duration_months", "the duration must be between 1 and 120 months".to_owned()));
        }
        problems.extend(country_problems("processing_countries", &self.processing_countries, false));
        problems
    }
}

fn disease_problems(required: bool, diseases: &[String]) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if required && diseases.is_empty() {
        problems.push(("diseases", "disease-specific use (DS) needs at least one disease, such as E11".to_owned()));
    }
    for (i, _) in diseases.iter().enumerate().filter(|(_, code)| Icd10Code::parse_strict(code).is_none()) {
        let expected = "a letter, two digits, then optionally a dot and up to four letters or digits, such as C34.1";
        problems.push(("diseases", format!("disease {} is not an ICD-10 code: expected {expected}", i + 1)));
    }
    problems
}

fn country_problems(field: &'static str, countries: &[String], upper_only: bool) -> Vec<(&'static str, String)> {
    let letter = if upper_only { u8::is_ascii_uppercase } else { u8::is_ascii_alphabetic };
    let expected = if upper_only { "two upper-case letters, such as DE" } else { "two letters, such as DE" };
    let wrong = |code: &String| !(code.len() == 2 && code.as_bytes().iter().all(letter));
    let numbers = countries.iter().enumerate().filter(|(_, code)| wrong(code)).map(|(i, _)| i + 1);
    numbers.map(|n| (field, format!("country {n} is not an ISO 3166-1 alpha-2 code: expected {expected}"))).collect()
}

/// A disease as shown: `E11.9` when shaped like ICD-10, else the text as given.
fn show_disease(code: &str) -> String {
    match Icd10Code::parse_strict(code) {
        Some(code) => code.to_string(),
        None => code.trim().to_owned(),
    }
}

/// Whether a cohort disease covers a stated one by ICD-10 hierarchy: `E11`
/// covers `E11.9`, not the reverse. Codes not shaped like ICD-10 cover nothing.
fn covers(cohort: &[String], disease: &str) -> bool {
    let Some(disease) = Icd10Code::parse_strict(disease) else { return false };
    cohort.iter().filter_map(|c| Icd10Code::parse_strict(c)).any(|c| c.covers(&disease))
}

/// "A", "A and B", "A, B and C".
fn list(items: impl IntoIterator<Item = String>) -> String {
    let mut items: Vec<String> = items.into_iter().collect();
    match items.pop() {
        None => String::new(),
        Some(last) if items.is_empty() => last,
        Some(last) => format!("{} and {last}", items.join(", ")),
    }
}

fn diseases_text(diseases: &[String]) -> String {
    list(diseases.iter().map(|d| show_disease(d)))
}

fn countries_text<'a>(countries: impl IntoIterator<Item = &'a String>) -> String {
    list(countries.into_iter().map(|c| c.trim().to_ascii_uppercase()))
}

/// "The cohort's consent {term}; {rest}." as a rule.
fn rule(code: &'static str, outcome: Outcome, term: &str, rest: &str) -> Rule {
    Rule { code, outcome, explanation: format!("The cohort's consent {term}; {rest}.") }
}

fn permission_rule(terms: &ConsentTerms, intended: &IntendedUse) -> Rule {
    use Outcome::{Fail, Pass};
    let term = match terms.permission {
        Permission::Nres => "places no restriction on use (NRES)".to_owned(),
        Permission::Gru => "allows general research use for any purpose (GRU)".to_owned(),
        Permission::Hmb => "allows health, medical and biomedical research (HMB)".to_owned(),
        Permission::Ds if terms.diseases.is_empty() => {
            "allows research on specific diseases but names none (DS)".into()
        }
        Permission::Ds => format!("allows research on {} only (DS)", diseases_text(&terms.diseases)),
        Permission::Poa => "allows population origins or ancestry research only (POA)".to_owned(),
    };
    let stated = match intended.purpose {
        Purpose::Gru => "general research use (GRU)".to_owned(),
        Purpose::Hmb => "health, medical or biomedical research (HMB)".to_owned(),
        Purpose::Ds if intended.diseases.is_empty() => "disease-specific research naming no disease (DS)".to_owned(),
        Purpose::Ds => format!("research on {} (DS)", diseases_text(&intended.diseases)),
        Purpose::Poa => "population origins or ancestry research (POA)".to_owned(),
    };
    let (outcome, rest) = match (terms.permission, intended.purpose) {
        (Permission::Nres | Permission::Gru, _)
        | (Permission::Hmb, Purpose::Hmb | Purpose::Ds)
        | (Permission::Poa, Purpose::Poa) => (Pass, format!("the stated purpose, {stated}, is within it")),
        (Permission::Hmb, Purpose::Gru) => (
            Fail,
            format!("{stated} also covers research that is not health, medical or biomedical, so it is outside it"),
        ),
        (Permission::Ds, Purpose::Ds) if intended.diseases.is_empty() => {
            (Fail, "the application names no disease, so it cannot be shown to fall under the consent".to_owned())
        }
        (Permission::Ds, Purpose::Ds) => {
            let outside: Vec<String> =
                intended.diseases.iter().filter(|d| !covers(&terms.diseases, d)).cloned().collect();
            match outside.len() {
                0 => (Pass, format!("the stated purpose, {stated}, falls under it")),
                1 => (Fail, format!("the stated disease {} is not covered", diseases_text(&outside))),
                _ => (Fail, format!("the stated diseases {} are not covered", diseases_text(&outside))),
            }
        }
        (Permission::Ds, _) => (Fail, format!("{stated} is not limited to these diseases, so it is outside it")),
        (Permission::Hmb | Permission::Poa, _) => (Fail, format!("{stated} is outside it")),
    };
    rule(terms.permission.code(), outcome, &term, &rest)
}

/// What the consent says through a modifier, for "The cohort's consent …".
fn modifier_term(modifier: Modifier, terms: &ConsentTerms) -> String {
    let code = modifier.code();
    let text = match modifier {
        Modifier::Npu => "allows not-for-profit use only",
        Modifier::Ncu => "allows non-commercial use only",
        Modifier::Irb => "requires approval by an ethics committee",
        Modifier::Pub => "requires that results be published or shared with the research community",
        Modifier::Mor => match terms.moratorium_until {
            Some(until) => {
                return format!("sets a publication moratorium until {} ({code})", until.format("%-d %B %Y"));
            }
            None => "sets a publication moratorium without an end date",
        },
        Modifier::Ts => match terms.time_limit_months {
            Some(limit) => return format!("limits use to {limit} months ({code})"),
            None => "limits the time of use without a number of months",
        },
        Modifier::Gs if terms.countries.is_empty() => "restricts where data may be processed but names no country",
        Modifier::Gs => return format!("allows processing only in {} ({code})", countries_text(&terms.countries)),
        Modifier::Col => "requires collaboration with the cohort's investigators",
        Modifier::Rtn => "requires that derived and enriched data be returned to the registry",
        Modifier::Gso => "allows genetic studies only",
        Modifier::Nmds => "allows no general methods research: methods may be developed only within its other limits",
        Modifier::Us => "limits use to approved users",
        Modifier::Ps => "limits use to approved projects",
        Modifier::Is => "limits use to approved institutions",
    };
    format!("{text} ({code})")
}

fn modifier_rule(modifier: Modifier, terms: &ConsentTerms, intended: &IntendedUse, today: NaiveDate) -> Rule {
    use Outcome::{Condition, Fail, Pass};
    let judge = |ok: bool, within: &str, outside: &str| {
        if ok {
            (Pass, format!("the application {within}, which is within it"))
        } else {
            (Fail, format!("the application {outside}, which is outside it"))
        }
    };
    let oblige = |duty: &str| (Condition, format!("access is on condition that {duty}"));
    let confirm = |what: &str| (Condition, format!("the committee must confirm this {what} specifically"));
    let (outcome, rest) = match modifier {
        Modifier::Npu | Modifier::Ncu => judge(
            !intended.commercial,
            "states neither commercial use nor a for-profit organisation",
            "states commercial use or a for-profit organisation",
        ),
        Modifier::Irb => match intended.ethics_approval.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
            Some(reference) => (Pass, format!("the application gives the approval reference “{reference}”")),
            None => (Fail, "the application gives no ethics approval reference".to_owned()),
        },
        Modifier::Pub => oblige("the results are published or shared"),
        Modifier::Mor => match terms.moratorium_until {
            Some(until) if until > today => {
                oblige(&format!("there is no publication before {}", until.format("%-d %B %Y")))
            }
            Some(_) => (Pass, "the moratorium has ended, so it no longer restricts publication".to_owned()),
            None => (Condition, "the committee must confirm when results may be published".to_owned()),
        },
        Modifier::Ts => match (terms.time_limit_months, intended.duration_months) {
            (Some(limit), asked) if asked > limit => {
                (Fail, format!("the application asks for {asked} months, which is longer"))
            }
            (Some(limit), asked) => (
                Condition,
                format!(
                    "the application asks for {asked} months, which fits, and use ends after {limit} months at the latest"
                ),
            ),
            (None, _) => (Condition, "the committee must set the limit".to_owned()),
        },
        Modifier::Gs => {
            let stated = &intended.processing_countries;
            let allowed = |c: &&String| terms.countries.iter().any(|a| a.trim().eq_ignore_ascii_case(c.trim()));
            let outside = countries_text(stated.iter().filter(|c| !allowed(c)));
            if stated.is_empty() {
                (
                    Fail,
                    "the application states no processing country, so it cannot be shown to stay within it".to_owned(),
                )
            } else {
                let within = format!("processes data only in {}", countries_text(stated));
                judge(outside.is_empty(), &within, &format!("would process data in {outside}"))
            }
        }
        Modifier::Col => oblige("the applicant collaborates with them"),
        Modifier::Rtn => oblige("derived and enriched data are returned to the registry"),
        Modifier::Gso => {
            judge(intended.genetic, "states genetic or genomic research", "does not state genetic or genomic research")
        }
        Modifier::Nmds => judge(
            !intended.methods_development,
            "states no methods development beyond its research",
            "states development of methods or algorithms beyond its research",
        ),
        Modifier::Us => confirm("user"),
        Modifier::Ps => confirm("project"),
        Modifier::Is => confirm("institution"),
    };
    rule(modifier.code(), outcome, &modifier_term(modifier, terms), &rest)
}

/// Whether `intended` may use data under `terms` on `today`: the permission
/// rule, then one rule per modifier present (once each, in a fixed order).
/// Not permitted if any rule fails; permitted with conditions if any rule sets one.
pub fn check(terms: &ConsentTerms, intended: &IntendedUse, today: NaiveDate) -> ConsentCheck {
    let mut rules = vec![permission_rule(terms, intended)];
    rules.extend(terms.present_modifiers().into_iter().map(|m| modifier_rule(m, terms, intended, today)));
    let verdict = if rules.iter().any(|r| r.outcome == Outcome::Fail) {
        Verdict::NotPermitted
    } else if rules.iter().any(|r| r.outcome == Outcome::Condition) {
        Verdict::PermittedWithConditions
    } else {
        Verdict::Permitted
    };
    ConsentCheck { verdict, rules }
}

/// A cohort's stored consent terms, read or refused: terms that cannot be
/// read stop whatever depends on them (fail closed) rather than count as none.
pub fn stored(cohort: &str, terms: Option<serde_json::Value>) -> Result<Option<ConsentTerms>, crate::error::ApiError> {
    terms.map(|t| super::read_stored(t, "a cohort's consent terms", &cohort)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn today() -> NaiveDate {
        day(2025, 6, 1)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(ToString::to_string).collect()
    }

    fn terms(permission: Permission, diseases: &[&str], modifiers: &[Modifier]) -> ConsentTerms {
        let (moratorium_until, time_limit_months, countries) = (None, None, Vec::new());
        ConsentTerms {
            permission,
            diseases: strings(diseases),
            modifiers: modifiers.to_vec(),
            moratorium_until,
            time_limit_months,
            countries,
            open_release: false,
        }
    }

    fn wants(purpose: Purpose, diseases: &[&str]) -> IntendedUse {
        IntendedUse {
            purpose,
            diseases: strings(diseases),
            commercial: false,
            methods_development: false,
            genetic: false,
            ethics_approval: None,
            duration_months: 12,
            processing_countries: strings(&["DE"]),
        }
    }

    fn first_rule(terms: &ConsentTerms, intended: &IntendedUse) -> Rule {
        check(terms, intended, today()).rules.remove(0)
    }

    #[test]
    fn every_purpose_meets_every_permission_as_duo_says() {
        use Permission as P;
        use Purpose as U;
        use Verdict::{NotPermitted as No, Permitted as Yes};
        let table = [
            (P::Nres, [(U::Gru, Yes), (U::Hmb, Yes), (U::Ds, Yes), (U::Poa, Yes)]),
            (P::Gru, [(U::Gru, Yes), (U::Hmb, Yes), (U::Ds, Yes), (U::Poa, Yes)]),
            (P::Hmb, [(U::Gru, No), (U::Hmb, Yes), (U::Ds, Yes), (U::Poa, No)]),
            (P::Ds, [(U::Gru, No), (U::Hmb, No), (U::Ds, Yes), (U::Poa, No)]),
            (P::Poa, [(U::Gru, No), (U::Hmb, No), (U::Ds, No), (U::Poa, Yes)]),
        ];
        for (permission, row) in table {
            for (purpose, expected) in row {
                let check = check(&terms(permission, &["E11"], &[]), &wants(purpose, &["E11.9"]), today());
                assert_eq!(check.verdict, expected, "{permission:?} terms, {purpose:?} purpose: {check:?}");
                assert_eq!(check.rules.len(), 1);
                assert_eq!(check.rules[0].code, permission.code());
                assert!(check.rules[0].explanation.starts_with("The cohort's consent "));
            }
        }
    }

    #[test]
    fn hmb_terms_refuse_ancestry_research_and_say_why() {
        let check = check(&terms(Permission::Hmb, &[], &[]), &wants(Purpose::Poa, &[]), today());
        assert_eq!(check.verdict, Verdict::NotPermitted);
        assert_eq!(
            check.rules[0].explanation,
            "The cohort's consent allows health, medical and biomedical research (HMB); \
             population origins or ancestry research (POA) is outside it."
        );
    }

    #[test]
    fn hmb_terms_refuse_general_research_use_because_it_reaches_beyond_health() {
        let rule = first_rule(&terms(Permission::Hmb, &[], &[]), &wants(Purpose::Gru, &[]));
        assert_eq!(rule.outcome, Outcome::Fail);
        assert!(rule.explanation.contains("general research use (GRU) also covers research that is not health"));
    }

    #[test]
    fn ds_terms_cover_a_disease_and_its_subcodes_but_not_its_parent() {
        let cases: [(&[&str], &[&str], Outcome); 9] = [
            (&["E11"], &["E11"], Outcome::Pass),
            (&["E11"], &["E11.9"], Outcome::Pass),
            (&["C34"], &["C34.1"], Outcome::Pass),
            (&["e11"], &["E119", " e11.65 "], Outcome::Pass),
            (&["E11", "C34"], &["C34.1", "E11.9"], Outcome::Pass),
            (&["E11.9"], &["E11"], Outcome::Fail),
            (&["E11"], &["E10"], Outcome::Fail),
            (&["E11", "C34"], &["E11.9", "I21"], Outcome::Fail),
            (&["E1"], &["E11"], Outcome::Fail),
        ];
        for (cohort, stated, expected) in cases {
            let rule = first_rule(&terms(Permission::Ds, cohort, &[]), &wants(Purpose::Ds, stated));
            assert_eq!(rule.outcome, expected, "cohort {cohort:?}, stated {stated:?}: {}", rule.explanation);
        }
    }

    #[test]
    fn ds_terms_name_only_the_diseases_they_do_not_cover() {
        let t = terms(Permission::Ds, &["E11", "C34"], &[]);
        assert_eq!(
            first_rule(&t, &wants(Purpose::Ds, &["E11.9", "i21.0"])).explanation,
            "The cohort's consent allows research on E11 and C34 only (DS); the stated disease I21.0 is not covered."
        );
        let rule = first_rule(&t, &wants(Purpose::Ds, &["E10", "C34.1", "I21"]));
        assert!(rule.explanation.ends_with("the stated diseases E10 and I21 are not covered."), "{}", rule.explanation);
        let rule = first_rule(&terms(Permission::Ds, &["E11.9"], &[]), &wants(Purpose::Ds, &["E11"]));
        assert!(rule.explanation.ends_with("the stated disease E11 is not covered."), "{}", rule.explanation);
    }

    #[test]
    fn malformed_codes_and_a_ds_purpose_without_diseases_cover_nothing() {
        let cases: [(&[&str], &[&str]); 4] = [(&[""], &["E11"]), (&["E11"], &["E"]), (&["E11"], &[]), (&[], &["E11"])];
        for (cohort, stated) in cases {
            let check = check(&terms(Permission::Ds, cohort, &[]), &wants(Purpose::Ds, stated), today());
            assert_eq!(check.verdict, Verdict::NotPermitted, "cohort {cohort:?}, stated {stated:?}");
        }
    }

    #[test]
    fn each_modifier_passes_sets_a_condition_or_fails_as_duo_says() {
        use Modifier as M;
        use Outcome::{Condition, Fail, Pass};
        type Terms = fn(&mut ConsentTerms);
        type Use = fn(&mut IntendedUse);
        let (none, months): (Terms, Terms) = (|_| {}, |t| t.time_limit_months = Some(12));
        let europe: Terms = |t| t.countries = strings(&["DE", "FR"]);
        let (same, commercial): (Use, Use) = (|_| {}, |u| u.commercial = true);
        let cases: [(M, Terms, Use, Outcome, &str); 25] = [
            (M::Npu, none, same, Pass, "(NPU); the application states neither commercial use nor a for-profit"),
            (M::Npu, none, commercial, Fail, "states commercial use or a for-profit organisation, which is outside"),
            (M::Ncu, none, same, Pass, "non-commercial use only (NCU)"),
            (M::Ncu, none, commercial, Fail, "states commercial use"),
            (M::Irb, none, same, Fail, "gives no ethics approval reference"),
            (M::Irb, none, |u| u.ethics_approval = Some("  ".into()), Fail, "gives no ethics approval reference"),
            (M::Irb, none, |u| u.ethics_approval = Some(" EK 12/24 ".into()), Pass, "reference “EK 12/24”."),
            (M::Pub, none, same, Condition, "results be published or shared with the research community (PUB)"),
            (M::Mor, |t| t.moratorium_until = Some(day(2026, 9, 1)), same, Condition, "no publication before 1 Sep"),
            (M::Mor, |t| t.moratorium_until = Some(today()), same, Pass, "the moratorium has ended"),
            (M::Mor, |t| t.moratorium_until = Some(day(2024, 2, 29)), same, Pass, "until 29 February 2024 (MOR)"),
            (M::Ts, months, same, Condition, "use ends after 12 months"),
            (M::Ts, months, |u| u.duration_months = 13, Fail, "asks for 13 months, which is longer"),
            (M::Gs, europe, |u| u.processing_countries = strings(&["de", "FR"]), Pass, "only in DE and FR"),
            (M::Gs, europe, |u| u.processing_countries = strings(&["DE", "US", "CN"]), Fail, "in US and CN"),
            (M::Gs, europe, |u| u.processing_countries.clear(), Fail, "states no processing country"),
            (M::Col, none, same, Condition, "collaboration with the cohort's investigators (COL)"),
            (M::Rtn, none, same, Condition, "derived and enriched data are returned to the registry"),
            (M::Gso, none, same, Fail, "does not state genetic or genomic research"),
            (M::Gso, none, |u| u.genetic = true, Pass, "states genetic or genomic research, which is within"),
            (M::Nmds, none, same, Pass, "states no methods development"),
            (M::Nmds, none, |u| u.methods_development = true, Fail, "beyond its research, which is outside it"),
            (M::Us, none, same, Condition, "the committee must confirm this user specifically"),
            (M::Ps, none, same, Condition, "the committee must confirm this project specifically"),
            (M::Is, none, same, Condition, "the committee must confirm this institution specifically"),
        ];
        for (modifier, set_terms, set_use, expected, phrase) in cases {
            let (mut t, mut intended) = (terms(Permission::Gru, &[], &[modifier]), wants(Purpose::Hmb, &[]));
            set_terms(&mut t);
            set_use(&mut intended);
            let rule = &check(&t, &intended, today()).rules[1];
            assert_eq!((rule.code, rule.outcome), (modifier.code(), expected), "{}", rule.explanation);
            assert!(rule.explanation.contains(phrase), "{phrase:?} not in {:?}", rule.explanation);
        }
    }

    #[test]
    fn the_verdict_is_the_worst_outcome_of_any_rule() {
        let intended = wants(Purpose::Hmb, &[]);
        let verdict =
            |modifiers: &[Modifier]| check(&terms(Permission::Hmb, &[], modifiers), &intended, today()).verdict;
        assert_eq!(verdict(&[Modifier::Ncu]), Verdict::Permitted);
        assert_eq!(verdict(&[Modifier::Ncu, Modifier::Pub]), Verdict::PermittedWithConditions);
        assert_eq!(verdict(&[Modifier::Pub, Modifier::Irb, Modifier::Col]), Verdict::NotPermitted);
        let refused = check(&terms(Permission::Hmb, &[], &[Modifier::Pub]), &wants(Purpose::Poa, &[]), today());
        assert_eq!(refused.verdict, Verdict::NotPermitted);
    }

    #[test]
    fn rules_come_permission_first_then_each_modifier_once_in_a_fixed_order() {
        let t = terms(Permission::Gru, &[], &[Modifier::Pub, Modifier::Is, Modifier::Ncu, Modifier::Pub]);
        let codes: Vec<_> = check(&t, &wants(Purpose::Gru, &[]), today()).rules.iter().map(|r| r.code).collect();
        assert_eq!(codes, ["GRU", "NCU", "PUB", "IS"]);
        assert_eq!(t.codes(), ["NCU", "PUB", "IS"]);
    }

    #[test]
    fn terms_validation_reports_every_problem_by_field() {
        let mut t = terms(Permission::Ds, &[], &[Modifier::Mor, Modifier::Ts, Modifier::Gs]);
        t.time_limit_months = Some(0);
        let fields: Vec<_> = t.validate().into_iter().map(|(field, _)| field).collect();
        assert_eq!(fields, ["diseases", "moratorium_until", "time_limit_months", "countries"]);

        let mut t = terms(Permission::Ds, &["e11.9", "C34", "E1", "E11.12345", "E11.", "1E1", "E119"], &[Modifier::Gs]);
        t.countries = strings(&["DE", "de", "DEU"]);
        let messages: Vec<_> = t.validate().into_iter().map(|(field, message)| format!("{field}: {message}")).collect();
        assert_eq!(messages.len(), 6, "{messages:#?}");
        assert!(messages[0].starts_with("diseases: disease 3 is not an ICD-10 code"), "{messages:#?}");
        assert!(messages[3].starts_with("diseases: disease 6 "), "{messages:#?}");
        assert!(messages[4].starts_with("countries: country 2 is not an ISO 3166-1 alpha-2 code"), "{messages:#?}");
        assert!(terms(Permission::Ds, &["e11.9"], &[]).validate().is_empty());
    }

    #[test]
    fn intended_use_validation_reports_every_problem_by_field() {
        let mut intended = wants(Purpose::Ds, &[]);
        intended.duration_months = 0;
        intended.processing_countries = strings(&["de", "D1"]);
        let fields = |u: &IntendedUse| u.validate().into_iter().map(|(field, _)| field).collect::<Vec<_>>();
        assert_eq!(fields(&intended), ["diseases", "duration_months", "processing_countries"]);
        intended.diseases = strings(&["E11", "diabetes"]);
        intended.duration_months = 121;
        assert_eq!(fields(&intended), ["diseases", "duration_months", "processing_countries"]);
        intended.diseases.pop();
        intended.duration_months = 120;
        intended.processing_countries.pop();
        assert_eq!(intended.validate(), []);
    }

    #[test]
    fn terms_read_from_json_and_round_trip() {
        let json = r#"{"permission": "DS", "diseases": ["E11"], "modifiers": ["NCU", "IRB"]}"#;
        let t: ConsentTerms = serde_json::from_str(json).unwrap();
        assert_eq!(t, terms(Permission::Ds, &["E11"], &[Modifier::Ncu, Modifier::Irb]));
        let mut full = t.clone();
        full.modifiers.extend([Modifier::Nmds, Modifier::Gso, Modifier::Pub, Modifier::Mor]);
        full.moratorium_until = Some(day(2026, 1, 31));
        let text = serde_json::to_string(&full).unwrap();
        assert!(text.contains(r#""modifiers":["NCU","IRB","NMDS","GSO","PUB","MOR"]"#), "{text}");
        assert!(text.contains(r#""moratorium_until":"2026-01-31""#), "{text}");
        assert_eq!(serde_json::from_str::<ConsentTerms>(&text).unwrap(), full);
    }

    #[test]
    fn unknown_fields_and_codes_are_rejected() {
        for json in [
            r#"{"permission": "DS", "diseases": ["E11"], "modifer": ["NCU"]}"#,
            r#"{"permission": "ds"}"#,
            r#"{"permission": "GRU", "modifiers": ["XYZ"]}"#,
        ] {
            assert!(serde_json::from_str::<ConsentTerms>(json).is_err(), "{json}");
        }
        let intended = r#"{"purpose": "HMB", "duration_months": 6, "comercial": true}"#;
        assert!(serde_json::from_str::<IntendedUse>(intended).is_err());
    }
}
