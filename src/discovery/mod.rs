//! Discovery: what the registry holds, as counts that protect the people
//! counted. Every answer passes disclosure control unless the caller is a
//! steward or admin: counts below the cohorts' threshold are suppressed, the
//! others rounded, breakdowns get secondary suppression, each user has a daily
//! query budget, and a query that adds or drops one condition of an earlier
//! one and moves the count by fewer subjects than the threshold is refused.
//! Every query is audited with the hash of its criteria and the class of its
//! result, never with a row.

pub mod criteria;
pub mod disclosure;
pub mod memory;
pub mod sql;

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use utoipa::ToSchema;

use crate::audit::{self, NewEvent};
use crate::error::ApiError;
use criteria::{Condition, Known, Node};
use sql::Dimension;

/// Counts of one query or cell: `None` where suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Counts {
    pub subjects: Option<i64>,
    pub studies: Option<i64>,
    pub series: Option<i64>,
    pub instances: Option<i64>,
}

/// How counts are shown to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Disclosure {
    /// Exact counts (stewards and admins); otherwise suppressed and rounded.
    pub exact: bool,
    /// Counts below this are suppressed.
    pub threshold: i64,
    /// Counts are rounded to a multiple of this.
    pub rounding: i64,
}

impl Disclosure {
    fn show(self, raw: [i64; 4], hidden: bool) -> Counts {
        let one = |n: i64| {
            if self.exact {
                Some(n)
            } else if hidden {
                None
            } else {
                disclosure::disclose(n, self.threshold, self.rounding)
            }
        };
        Counts { subjects: one(raw[0]), studies: one(raw[1]), series: one(raw[2]), instances: one(raw[3]) }
    }
}

/// A checked query.
#[derive(Debug)]
pub struct Query {
    pub node: Option<Node>,
    /// SHA-256 of the canonical criteria.
    pub hash: String,
    /// Hashes of the top-level conditions.
    pub conditions: Vec<String>,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(digest(&SHA256, text.as_bytes()))
}

/// Reads `criteria` (absent: everything) against the dictionary, cohorts and sites,
/// and checks that every variant it names is known.
pub async fn prepare(db: &PgPool, criteria: Option<&Value>) -> Result<Query, ApiError> {
    let Some(criteria) = criteria else {
        return Ok(Query { node: None, hash: sha256_hex("null"), conditions: Vec::new() });
    };
    let (dictionary, cohorts, sites) = tokio::try_join!(
        crate::dictionary::db::dictionary(db),
        sqlx::query_scalar!("select slug from cohort").fetch_all(db),
        sqlx::query_scalar!("select code from site").fetch_all(db),
    )?;
    let node = criteria::parse(criteria, Known { dictionary: &dictionary, cohorts: &cohorts, sites: &sites })
        .map_err(invalid)?;
    let mut unknown = Vec::new();
    for variant in variants(&node) {
        let mut qb = QueryBuilder::new("select exists (select 1 from variant v where ");
        sql::push_variant(&mut qb, variant);
        qb.push(")");
        let known: bool = qb.build().fetch_one(db).await?.get(0);
        if !known {
            unknown.push(crate::error::Problem {
                row: None,
                column: None,
                path: Some("/criteria".into()),
                code: "unknown-variant",
                message: format!("no genotypes of {} are in the registry", describe(variant)),
            });
        }
    }
    if !unknown.is_empty() {
        return Err(invalid(unknown));
    }
    // Canonical text: serde_json sorts object keys.
    let conditions = match criteria.get("and") {
        Some(Value::Array(items)) => items.iter().map(|c| sha256_hex(&c.to_string())).collect(),
        _ => vec![sha256_hex(&criteria.to_string())],
    };
    Ok(Query { node: Some(node), hash: sha256_hex(&criteria.to_string()), conditions })
}

fn invalid(problems: Vec<crate::error::Problem>) -> ApiError {
    let n = problems.len();
    ApiError::Invalid {
        code: "invalid-criteria",
        message: format!("the criteria have {n} problem{}", if n == 1 { "" } else { "s" }),
        problems,
    }
}

fn describe(variant: &criteria::VariantRef) -> String {
    match variant {
        criteria::VariantRef::Rsid(rsid) => rsid.clone(),
        criteria::VariantRef::Position { chrom, pos, reference, alt } => format!("{chrom}-{pos}-{reference}-{alt}"),
    }
}

fn variants(node: &Node) -> Vec<&criteria::VariantRef> {
    match node {
        Node::And(items) | Node::Or(items) => items.iter().flat_map(variants).collect(),
        Node::Not(inner) => variants(inner),
        Node::Leaf(Condition::Genotype { variant, .. }) => vec![variant],
        Node::Leaf(_) => Vec::new(),
    }
}

/// Who asks, and how their answers are disclosed.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    pub username: &'a str,
    /// Stewards and admins: exact counts, no budget, no differencing check.
    pub privileged: bool,
    pub daily_budget: u32,
}

/// The cohorts a query is limited to by a top-level cohort condition (empty: every cohort).
pub fn cohorts_of(node: &Node) -> Vec<String> {
    match node {
        Node::Leaf(Condition::Cohort(slugs)) => slugs.clone(),
        Node::And(items) => items
            .iter()
            .find_map(|n| match n {
                Node::Leaf(Condition::Cohort(slugs)) => Some(slugs.clone()),
                _ => None,
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The threshold and rounding of the cohorts a query can touch: the strictest.
async fn disclosure(db: &PgPool, caller: &Caller<'_>, node: Option<&Node>) -> Result<Disclosure, ApiError> {
    let cohorts = node.map(cohorts_of).unwrap_or_default();
    let row = sqlx::query!(
        r#"select coalesce(max(suppression_threshold), 10)::bigint as "threshold!",
                  coalesce(max(count_rounding), 5)::bigint as "rounding!"
           from cohort where cardinality($1::text[]) = 0 or slug = any($1)"#,
        &cohorts
    )
    .fetch_one(db)
    .await?;
    Ok(Disclosure { exact: caller.privileged, threshold: row.threshold, rounding: row.rounding })
}

/// Refuses the query when the caller's budget is used up.
async fn check_budget(db: &PgPool, caller: &Caller<'_>) -> Result<(), ApiError> {
    if caller.privileged {
        return Ok(());
    }
    let used = sqlx::query_scalar!(
        r#"select count(*) as "n!" from discovery_query where username = $1 and created_at > now() - interval '1 day'"#,
        caller.username
    )
    .fetch_one(db)
    .await?;
    if used >= i64::from(caller.daily_budget) {
        return Err(ApiError::TooManyRequests(format!(
            "the discovery budget of {} queries in 24 hours is used up; try again later",
            caller.daily_budget
        )));
    }
    Ok(())
}

/// Whether an earlier query of the caller differs from this one by exactly one
/// top-level condition and by fewer than `threshold` subjects (but some).
async fn differencing(
    db: &PgPool,
    caller: &Caller<'_>,
    query: &Query,
    subjects: i64,
    threshold: i64,
) -> Result<bool, ApiError> {
    if caller.privileged {
        return Ok(false);
    }
    let earlier = sqlx::query!(
        "select conditions, subjects from discovery_query
         where username = $1 and not refused and created_at > now() - interval '1 day'",
        caller.username
    )
    .fetch_all(db)
    .await?;
    Ok(earlier.iter().any(|e| {
        let added = query.conditions.iter().filter(|c| !e.conditions.contains(c)).count();
        let dropped = e.conditions.iter().filter(|c| !query.conditions.contains(c)).count();
        let moved = (subjects - e.subjects).abs();
        added + dropped == 1 && moved > 0 && moved < threshold
    }))
}

/// Logs and audits a query in one transaction.
async fn record(
    db: &PgPool,
    caller: &Caller<'_>,
    kind: &str,
    query: &Query,
    subjects: i64,
    class: &str,
) -> Result<(), ApiError> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "insert into discovery_query (username, kind, criteria_hash, conditions, subjects, refused)
         values ($1, $2, $3, $4, $5, $6)",
        caller.username,
        kind,
        query.hash,
        &query.conditions,
        subjects,
        class == "refused",
    )
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        NewEvent::new(caller.username, &format!("discovery.{kind}"))
            .details(json!({ "criteria_sha256": query.hash, "result": class })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn push_criteria(qb: &mut QueryBuilder<Postgres>, query: &Query) {
    match &query.node {
        Some(node) => sql::push_node(qb, node),
        None => {
            qb.push("true");
        }
    }
}

fn count_sql(query: &Query) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("select ");
    qb.push(sql::COUNTS);
    sql::push_from(&mut qb, query.node.as_ref(), false);
    push_criteria(&mut qb, query);
    qb
}

/// Subjects, studies, series and instances matching `query`, counted by PostgreSQL.
pub async fn count_in_database(db: &PgPool, query: &Query) -> Result<[i64; 4], ApiError> {
    // Planned with the actual values every time (the statements are built per query anyway).
    let row = count_sql(query).build().persistent(false).fetch_one(db).await?;
    Ok([row.get(0), row.get(1), row.get(2), row.get(3)])
}

/// Runs `work` on the snapshot off the async workers.
async fn in_memory<T: Send + 'static>(
    snapshot: Arc<memory::Snapshot>,
    work: impl FnOnce(&memory::Snapshot) -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || work(&snapshot))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("discovery evaluation failed: {e}")))
}

async fn current(db: &PgPool, index: &Arc<memory::Index>) -> Result<Option<Arc<memory::Snapshot>>, ApiError> {
    Ok(index.current(db).await?)
}

/// The answer to a count.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountResult {
    pub counts: Counts,
    pub disclosure: Disclosure,
    /// SHA-256 of the canonical criteria, as audited.
    pub criteria_sha256: String,
}

/// Counts subjects, studies, series and instances matching `query`: from the
/// in-memory index when it is current, else from PostgreSQL.
pub async fn count(
    db: &PgPool,
    index: &Arc<memory::Index>,
    caller: &Caller<'_>,
    query: &Query,
) -> Result<CountResult, ApiError> {
    let ((), policy, snapshot) =
        tokio::try_join!(check_budget(db, caller), disclosure(db, caller, query.node.as_ref()), current(db, index))?;
    let raw = match snapshot {
        Some(snapshot) => {
            let node = query.node.clone();
            in_memory(snapshot, move |s| s.count(node.as_ref())).await?
        }
        None => count_in_database(db, query).await?,
    };
    if differencing(db, caller, query, raw[0], policy.threshold).await? {
        record(db, caller, "count", query, raw[0], "refused").await?;
        return Err(refusal());
    }
    let counts = policy.show(raw, false);
    let class = if policy.exact {
        "exact"
    } else if counts.subjects.is_none() {
        "suppressed"
    } else {
        "shown"
    };
    record(db, caller, "count", query, raw[0], class).await?;
    Ok(CountResult { counts, disclosure: policy, criteria_sha256: query.hash.clone() })
}

fn refusal() -> ApiError {
    ApiError::Refused {
        code: "differencing-refused",
        message: "this query adds or drops one condition of an earlier query and changes its count by fewer subjects \
                  than the disclosure threshold, which could single people out; it is refused and recorded"
            .into(),
    }
}

/// One cell of a breakdown.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakdownCell {
    /// One label per dimension, in the order asked; `null` is the total over that
    /// dimension and `unknown` a value the catalog does not have.
    pub values: Vec<Option<String>>,
    pub counts: Counts,
    /// Hidden by primary or secondary suppression.
    pub suppressed: bool,
}

/// The answer to a breakdown.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakdownResult {
    pub by: Vec<Dimension>,
    /// Cells, then totals of each dimension, then the grand total.
    pub cells: Vec<BreakdownCell>,
    pub disclosure: Disclosure,
    pub criteria_sha256: String,
}

/// Cells of a breakdown as PostgreSQL's grouping sets give them: labels
/// (`None`: the total over that dimension) and subjects, studies, series, instances.
pub type RawCells = Vec<(Vec<Option<String>>, [i64; 4])>;

/// A breakdown computed by PostgreSQL.
pub async fn breakdown_in_database(db: &PgPool, query: &Query, by: &[Dimension]) -> Result<RawCells, ApiError> {
    let keys: Vec<String> = (0..by.len()).map(|i| format!("k{i}")).collect();
    let mut qb = QueryBuilder::new("select ");
    for key in &keys {
        qb.push(key).push(", ");
    }
    for key in &keys {
        qb.push("grouping(").push(key).push("), ");
    }
    qb.push(
        "count(distinct subject_id), count(distinct study_id), count(series_id), coalesce(sum(instances), 0)::bigint \
         from (select ",
    );
    for (dim, key) in by.iter().zip(&keys) {
        qb.push("coalesce(").push(dim.sql()).push(", 'unknown') as ").push(key).push(", ");
    }
    qb.push("s.subject_id, d.study_id, d.series_id, d.instances");
    sql::push_from(&mut qb, query.node.as_ref(), by.contains(&Dimension::Site));
    push_criteria(&mut qb, query);
    // Series dimensions describe series: subjects without imaging do not fall into a cell.
    if by.iter().any(|d| d.on_series()) {
        qb.push(" and d.series_id is not null");
    }
    let sets = if by.len() == 2 { "((k0, k1), (k0), (k1), ())" } else { "((k0), ())" };
    qb.push(") u group by grouping sets ").push(sets);
    let rows = qb.build().persistent(false).fetch_all(db).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let values: Vec<Option<String>> = (0..by.len())
                .map(|i| {
                    let total: i32 = row.get(by.len() + i);
                    if total == 1 { None } else { Some(row.get::<String, _>(i)) }
                })
                .collect();
            let base = 2 * by.len();
            (values, [row.get::<i64, _>(base), row.get(base + 1), row.get(base + 2), row.get(base + 3)])
        })
        .collect())
}

/// Counts broken down by one or two dimensions, with totals.
pub async fn breakdown(
    db: &PgPool,
    index: &Arc<memory::Index>,
    caller: &Caller<'_>,
    query: &Query,
    by: &[Dimension],
) -> Result<BreakdownResult, ApiError> {
    let ((), policy, snapshot) =
        tokio::try_join!(check_budget(db, caller), disclosure(db, caller, query.node.as_ref()), current(db, index))?;
    let rows = match snapshot {
        Some(snapshot) => {
            let (node, dims) = (query.node.clone(), by.to_vec());
            in_memory(snapshot, move |s| s.breakdown(node.as_ref(), &dims)).await?
        }
        None => breakdown_in_database(db, query, by).await?,
    };
    let (cells, raw): (Vec<Vec<Option<String>>>, Vec<[i64; 4]>) = rows.into_iter().unzip();
    // Order: cells by label, then totals, then the grand total.
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by(|a, b| {
        let key = |i: usize| (cells[i].iter().filter(|v| v.is_none()).count(), cells[i].clone());
        key(*a).cmp(&key(*b))
    });
    let table: Vec<disclosure::Cell> = order
        .iter()
        .map(|i| disclosure::Cell {
            row: cells[*i][0].clone(),
            column: cells[*i].get(1).cloned().flatten(),
            subjects: raw[*i][0],
        })
        .collect();
    let table: Vec<disclosure::Cell> =
        if by.len() == 1 { table.into_iter().map(|c| disclosure::Cell { column: None, ..c }).collect() } else { table };
    let hidden = if policy.exact { vec![false; table.len()] } else { disclosure::suppress(&table, policy.threshold) };
    let total = raw[order.last().copied().unwrap_or_default()][0];
    if differencing(db, caller, query, total, policy.threshold).await? {
        record(db, caller, "breakdown", query, total, "refused").await?;
        return Err(refusal());
    }
    let result_cells: Vec<BreakdownCell> = order
        .iter()
        .zip(&hidden)
        .map(|(i, hide)| BreakdownCell {
            values: cells[*i].clone(),
            counts: policy.show(raw[*i], *hide),
            suppressed: *hide,
        })
        .collect();
    let class = if policy.exact {
        "exact"
    } else if hidden.iter().any(|h| *h) {
        "partly-suppressed"
    } else {
        "shown"
    };
    record(db, caller, "breakdown", query, total, class).await?;
    Ok(BreakdownResult {
        by: by.to_vec(),
        cells: result_cells,
        disclosure: policy,
        criteria_sha256: query.hash.clone(),
    })
}
