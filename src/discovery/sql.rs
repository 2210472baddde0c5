//! Criteria as SQL over the discovery units: every published series with its
//! subject, each cohort membership without a series in that cohort, and every
//! subject in no cohort without imaging (`d`'s series columns are then null). Subject
//! conditions become uncorrelated `in (select …)` sets, which PostgreSQL hashes
//! once however they are nested under `or` and `not`; series conditions are
//! columns of `d`, false on a subject without imaging.

use sqlx::{Postgres, QueryBuilder};

use super::criteria::{Condition, Node};
use crate::vocabulary::VariantRef;

/// The units of discovery: `from … where` up to the criteria. When every
/// match needs a series, subjects without imaging are left out by an inner join.
pub fn push_from(qb: &mut QueryBuilder<Postgres>, node: Option<&Node>, with_site: bool) {
    qb.push(" from subject s");
    if with_site {
        qb.push(" join site si on si.site_id = s.site_id");
    }
    let units = if node.is_some_and(needs_series) { " join discovery_series" } else { MEMBERSHIP_UNITS };
    qb.push(units).push(" d on d.subject_id = s.subject_id where s.withdrawn_at is null and ");
}

/// Every series, and each cohort membership without a series in that cohort
/// (its series columns null): a subject is in a cohort by membership, whatever
/// cohort its imaging belongs to. Left-joined, so a subject in no cohort and
/// without imaging is a unit with `d` null.
const MEMBERSHIP_UNITS: &str = " left join (
    select series_id, study_id, subject_id, cohort_id, modality, body_part, manufacturer, model,
           field_strength, age_years, study_date, instances
    from discovery_series
    union all
    select null, null, cs.subject_id, cs.cohort_id, null, null, null, null, null, null, null, null
    from cohort_subject cs
    where not exists (select 1 from discovery_series x where x.subject_id = cs.subject_id and x.cohort_id = cs.cohort_id)
)";

/// Whether a unit can only match with a series.
pub fn needs_series(node: &Node) -> bool {
    match node {
        Node::And(items) => items.iter().any(needs_series),
        Node::Or(items) => items.iter().all(needs_series),
        Node::Not(_) => false,
        Node::Leaf(condition) => condition.on_series(),
    }
}

/// Appends `node` as a boolean expression.
pub fn push_node(qb: &mut QueryBuilder<Postgres>, node: &Node) {
    push_tree(qb, node, false);
}

/// Under `not`, a series condition on a subject without imaging (or a sex
/// condition on a subject of unknown sex) must be false rather than null (`not null` is null: the subject would drop out);
/// elsewhere null already acts as false, and a bare comparison lets the
/// planner use the column's statistics.
fn push_tree(qb: &mut QueryBuilder<Postgres>, node: &Node, negated: bool) {
    match node {
        Node::And(items) | Node::Or(items) => {
            let op = if matches!(node, Node::And(_)) { " and " } else { " or " };
            qb.push("(");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    qb.push(op);
                }
                push_tree(qb, item, negated);
            }
            qb.push(")");
        }
        Node::Not(inner) => {
            qb.push("(not ");
            push_tree(qb, inner, true);
            qb.push(")");
        }
        Node::Leaf(condition) if negated && condition.nullable() => {
            qb.push("coalesce(");
            push_condition(qb, condition);
            qb.push(", false)");
        }
        Node::Leaf(condition) => push_condition(qb, condition),
    }
}

fn push_range(qb: &mut QueryBuilder<Postgres>, column: &str, min: Option<f64>, max: Option<f64>) {
    let mut first = true;
    for (bound, op) in [(min, " >= "), (max, " <= ")] {
        if let Some(bound) = bound {
            if !first {
                qb.push(" and ");
            }
            first = false;
            qb.push(column).push(op).push_bind(bound);
        }
    }
}

fn push_condition(qb: &mut QueryBuilder<Postgres>, condition: &Condition) {
    match condition {
        Condition::Cohort(slugs) => {
            // False, not null, on a unit with no cohort, so that `not` keeps it.
            qb.push("(d.cohort_id is not null and d.cohort_id in (select cohort_id from cohort where slug = any(")
                .push_bind(slugs.clone())
                .push(")))");
        }
        Condition::Site(codes) => {
            qb.push("s.site_id in (select site_id from site where code = any(").push_bind(codes.clone()).push("))");
        }
        Condition::Sex(values) => {
            qb.push("s.sex = any(").push_bind(texts(values)).push(")");
        }
        Condition::SeriesCode(column, values) => {
            qb.push(column.sql()).push(" = any(").push_bind(values.clone()).push(")");
        }
        Condition::SeriesRange(column, min, max) => {
            qb.push("(");
            push_range(qb, column.sql(), *min, *max);
            qb.push(")");
        }
        Condition::ObservationRange { .. } | Condition::ObservationCode { .. } => {
            qb.push("s.subject_id in (select o.subject_id from observation o where ");
            push_event_filter(qb, condition, "o");
            qb.push(")");
        }
        Condition::Diagnosis { .. } => {
            qb.push("s.subject_id in (select x.subject_id from diagnosis x where ");
            push_event_filter(qb, condition, "x");
            qb.push(")");
        }
        Condition::Genotype { variant, alt_counts } => {
            qb.push("s.subject_id in (select g.subject_id from genotype g join variant v using (variant_id) where ");
            push_variant(qb, variant);
            qb.push(" and g.alt_count = any(").push_bind(alt_counts.clone()).push("))");
        }
        Condition::Annotation { level, kinds, labels, roles } => {
            qb.push("s.subject_id in (select a.subject_id from annotation a where true");
            if let Some(level) = level {
                qb.push(" and a.level = ").push_bind(level.as_str());
            }
            for (column, values) in
                [("a.kind", texts(kinds)), ("a.code", labels.clone()), ("a.annotator_role", texts(roles))]
            {
                if !values.is_empty() {
                    qb.push(" and ").push(column).push(" = any(").push_bind(values).push(")");
                }
            }
            qb.push(")");
        }
        Condition::After { series, event, min_days, max_days } => {
            qb.push("(");
            push_condition(qb, series);
            let (table, alias, date) = match **event {
                Condition::Diagnosis { .. } => ("diagnosis", "x", "x.diagnosed_on"),
                _ => ("observation", "o", "o.observed_at::date"),
            };
            qb.push(" and exists (select 1 from ")
                .push(table)
                .push(" ")
                .push(alias)
                .push(" where ")
                .push(alias)
                .push(".subject_id = s.subject_id and ");
            push_event_filter(qb, event, alias);
            qb.push(" and d.study_date - ")
                .push(date)
                .push(" between ")
                .push_bind(*min_days)
                .push(" and ")
                .push_bind(*max_days)
                .push("))");
        }
    }
}

/// The filter of a diagnosis or observation row (`alias` is its table alias).
fn push_event_filter(qb: &mut QueryBuilder<Postgres>, condition: &Condition, alias: &str) {
    match condition {
        Condition::ObservationRange { field, min, max } => {
            qb.push(alias).push(".field_id = ").push_bind(field.clone()).push(" and ");
            push_range(qb, &format!("{alias}.value"), *min, *max);
        }
        Condition::ObservationCode { field, values } => {
            qb.push(alias).push(".field_id = ").push_bind(field.clone());
            qb.push(" and ").push(alias).push(".value_code = any(").push_bind(values.clone()).push(")");
        }
        Condition::Diagnosis { system, codes, prefixes } => {
            if let Some(system) = system {
                qb.push(alias).push(".system = ").push_bind(system.as_str()).push(" and ");
            }
            qb.push("(");
            let mut first = true;
            if !codes.is_empty() {
                qb.push(alias).push(".code = any(").push_bind(texts(codes)).push(")");
                first = false;
            }
            for prefix in prefixes {
                if !first {
                    qb.push(" or ");
                }
                first = false;
                // Prefixes are letters, digits and a dot: nothing to escape for `like`.
                qb.push(alias).push(".code like ").push_bind(format!("{prefix}%"));
            }
            qb.push(")");
        }
        _ => {
            qb.push("false");
        }
    }
}

pub fn push_variant(qb: &mut QueryBuilder<Postgres>, variant: &VariantRef) {
    match variant {
        VariantRef::Rsid(rsid) => {
            qb.push("v.rsid = ").push_bind(rsid.as_str().to_owned());
        }
        VariantRef::Position(p) => {
            qb.push("v.chrom = ")
                .push_bind(p.chrom().to_owned())
                .push(" and v.pos = ")
                .push_bind(p.pos())
                .push(" and v.ref = ")
                .push_bind(p.reference().to_owned())
                .push(" and v.alt = ")
                .push_bind(p.alt().to_owned());
        }
    }
}

/// Vocabulary terms as the text the database stores.
fn texts<T: AsRef<str>>(terms: &[T]) -> Vec<String> {
    terms.iter().map(|t| t.as_ref().to_owned()).collect()
}

/// The dimensions a breakdown groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Site,
    Cohort,
    Modality,
    Manufacturer,
    Model,
    FieldStrength,
    Sex,
    AgeBand,
}

impl Dimension {
    /// The SQL of the dimension's label (null: unknown).
    pub fn sql(self) -> &'static str {
        match self {
            Self::Site => "si.code",
            Self::Cohort => "(select slug from cohort where cohort_id = d.cohort_id)",
            Self::Modality => "d.modality",
            Self::Manufacturer => "d.manufacturer",
            Self::Model => "d.model",
            Self::FieldStrength => "(d.field_strength::numeric(4, 1))::text",
            Self::Sex => "s.sex",
            Self::AgeBand => {
                "case when d.age_years is null then null when d.age_years < 18 then '0-17' \
                 when d.age_years < 30 then '18-29' when d.age_years < 40 then '30-39' \
                 when d.age_years < 50 then '40-49' when d.age_years < 60 then '50-59' \
                 when d.age_years < 70 then '60-69' when d.age_years < 80 then '70-79' else '80+' end"
            }
        }
    }

    /// Whether the dimension is a property of a series (subjects without imaging have none).
    pub fn on_series(self) -> bool {
        !matches!(self, Self::Site | Self::Sex)
    }
}

/// The count columns selected by every discovery query.
pub const COUNTS: &str = "count(distinct s.subject_id), count(distinct d.study_id), count(d.series_id), \
    coalesce(sum(d.instances), 0)::bigint";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::criteria::{Condition, SeriesColumn};
    use crate::vocabulary::{CodePrefix, CodeSystem};

    #[test]
    fn subject_conditions_compile_to_hashable_sets_and_series_conditions_to_columns() {
        let node = Node::And(vec![
            Node::Leaf(Condition::SeriesCode(SeriesColumn::Modality, vec!["MR".into()])),
            Node::Not(Box::new(Node::Leaf(Condition::Diagnosis {
                system: Some(CodeSystem::Icd10),
                codes: vec![],
                prefixes: ["E11", "E10"].map(|p| CodePrefix::parse(p, Some(CodeSystem::Icd10)).unwrap()).to_vec(),
            }))),
        ]);
        let mut qb = QueryBuilder::new("");
        push_node(&mut qb, &node);
        assert_eq!(
            qb.sql().as_str(),
            "(d.modality = any($1) and (not s.subject_id in (select x.subject_id from diagnosis x where \
             x.system = $2 and (x.code like $3 or x.code like $4))))"
        );
    }
}
