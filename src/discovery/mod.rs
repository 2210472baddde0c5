//! Discovery: what the registry holds, as counts that protect the people
//! counted. Stewards and admins, and project members asking within their
//! grants, see exact counts. Everyone else gets protected counts (see
//! [`protect`]): perturbed by the cell key method, suppressed below each
//! cohort's threshold with all four counts together, breakdowns listing every
//! label with margins that are cells in their own right, and answers to sets
//! near an earlier published one given that one's counts ([`anchors`]); each
//! user has a budget per cohort ([`budget`]). Nothing is refused for what the
//! data holds. Every query is audited with the hash of its criteria and the
//! class of its result, never with a count or a row.

pub mod anchors;
pub mod budget;
pub mod criteria;
pub mod disclosure;
pub mod memory;
pub mod protect;
pub mod sql;

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};
use utoipa::ToSchema;

use crate::audit::{self, NewEvent};
use crate::error::ApiError;
pub use budget::Budget;
use criteria::{Condition, Known, Node};
use protect::{Perturbation, PerturbationRow, Tally};
use sql::Dimension;

/// Counts of one query or cell: all four `null` where suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Counts {
    pub subjects: Option<i64>,
    pub studies: Option<i64>,
    pub series: Option<i64>,
    pub instances: Option<i64>,
}

impl Counts {
    fn exact(raw: [i64; 4]) -> Self {
        Self { subjects: Some(raw[0]), studies: Some(raw[1]), series: Some(raw[2]), instances: Some(raw[3]) }
    }

    const SUPPRESSED: Self = Self { subjects: None, studies: None, series: None, instances: None };

    fn published(published: Option<[i64; 4]>) -> Self {
        published.map_or(Self::SUPPRESSED, Self::exact)
    }
}

/// A cohort's threshold, as it applies to the cohort's own subjects.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CohortThreshold {
    pub cohort: String,
    pub threshold: i64,
}

/// The perturbation of protected counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Noise {
    /// `cell-key`: the published count is the true count plus the table's
    /// value at the position given by the sum of the cell's subjects' secret
    /// record keys; the same subjects always get the same value.
    pub method: &'static str,
    /// Standard deviation of the table's discrete normal.
    pub sd: f64,
    /// The table never adds or takes away more than this.
    pub bound: i64,
    /// Mean absolute perturbation of a subject count.
    pub mean_absolute: f64,
    /// The whole table.
    pub table: Vec<PerturbationRow>,
}

impl Noise {
    /// The published form of a perturbation table.
    pub fn of(table: &Perturbation) -> Self {
        Self {
            method: "cell-key",
            sd: table.sd,
            bound: table.bound,
            mean_absolute: (table.mean_absolute() * 1000.0).round() / 1000.0,
            table: table.rows(),
        }
    }
}

/// What a query spent of the caller's budget.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BudgetState {
    /// Units this query spent (0 for the same query asked again).
    pub spent: i32,
    /// Units left, in the cohort with the fewest left among those charged.
    pub remaining: i64,
    /// Allowance of each cohort over the window.
    pub allowance: u32,
    pub window_days: u32,
    /// Cohorts charged: those the criteria name at the top level, else all.
    pub cohorts: Vec<String>,
}

/// How counts are shown to a caller, with every parameter of the protection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Disclosure {
    /// Exact counts (stewards, admins, project members within their grants);
    /// otherwise protected.
    pub exact: bool,
    /// Subjects in no cohort have this threshold.
    pub threshold: i64,
    /// Thresholds of the cohorts the query can touch. A subject counts in a
    /// cell only when at least its strictest cohort's threshold of such
    /// subjects are in the cell; a cell with none is suppressed (all `null`).
    pub cohort_thresholds: Vec<CohortThreshold>,
    /// Protected answers: the perturbation.
    pub noise: Option<Noise>,
    /// A cell whose counted subjects differ by fewer than its threshold from a
    /// cell published before (by anyone) gets that cell's counts.
    pub anchored: bool,
    /// Protected answers: the budget.
    pub budget: Option<BudgetState>,
}

/// A checked query.
#[derive(Debug)]
pub struct Query {
    pub node: Option<Node>,
    /// SHA-256 of the canonical criteria.
    pub hash: String,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(digest(&SHA256, text.as_bytes()))
}

/// Reads `criteria` (absent: everything) against the dictionary, cohorts and
/// sites. A variant the registry holds no genotypes of is not an error: it
/// matches nobody, since saying so would tell whether anyone carries it.
pub async fn prepare(db: &PgPool, criteria: Option<&Value>) -> Result<Query, ApiError> {
    let Some(criteria) = criteria else {
        return Ok(Query { node: None, hash: sha256_hex("null") });
    };
    let (dictionary, cohorts, sites) = tokio::try_join!(
        crate::dictionary::db::dictionary(db),
        sqlx::query_scalar!("select slug from cohort").fetch_all(db),
        sqlx::query_scalar!("select code from site").fetch_all(db),
    )?;
    let node = criteria::parse(criteria, Known { dictionary: &dictionary, cohorts: &cohorts, sites: &sites })
        .map_err(invalid)?;
    // Canonical text: serde_json sorts object keys.
    Ok(Query { node: Some(node), hash: sha256_hex(&criteria.to_string()) })
}

fn invalid(problems: Vec<crate::error::Problem>) -> ApiError {
    let n = problems.len();
    ApiError::Invalid {
        code: "invalid-criteria",
        message: format!("the criteria have {n} problem{}", if n == 1 { "" } else { "s" }),
        problems,
    }
}

/// Who asks, and how their answers are disclosed.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    pub username: &'a str,
    /// Exact counts, no budget: stewards, admins, project members within their grants.
    pub privileged: bool,
    pub budget: Budget,
    /// Standard deviation and bound of the perturbation table.
    pub noise: (f64, i64),
    /// Exact counts of a project whose grants name modalities: studies,
    /// series and instances of these only.
    pub modalities: Option<Vec<String>>,
}

impl Caller<'_> {
    /// The caller's terms from the discovery settings.
    pub fn new<'a>(username: &'a str, privileged: bool, config: &crate::config::DiscoveryConfig) -> Caller<'a> {
        Caller {
            username,
            privileged,
            budget: Budget { units: config.budget_units, window_days: config.budget_window_days },
            noise: (config.noise_sd, config.noise_bound),
            modalities: None,
        }
    }
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

/// The cohorts a query can touch, with their thresholds: those named at the top level, else all.
async fn scope(db: &PgPool, node: Option<&Node>) -> Result<Vec<CohortThreshold>, ApiError> {
    let named = node.map(cohorts_of).unwrap_or_default();
    let rows = sqlx::query!(
        r#"select slug, suppression_threshold::bigint as "threshold!" from cohort
           where cardinality($1::text[]) = 0 or slug = any($1) order by slug"#,
        &named
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| CohortThreshold { cohort: r.slug, threshold: r.threshold }).collect())
}

fn disclosure(caller: &Caller<'_>, thresholds: Vec<CohortThreshold>, budget: Option<BudgetState>) -> Disclosure {
    let noise = (!caller.privileged).then(|| Noise::of(&Perturbation::new(caller.noise.0, caller.noise.1)));
    Disclosure {
        exact: caller.privileged,
        threshold: i64::from(protect::DEFAULT_THRESHOLD),
        cohort_thresholds: thresholds,
        noise,
        anchored: !caller.privileged,
        budget,
    }
}

/// Logs and audits a query in the caller's transaction.
async fn record(
    tx: &mut PgConnection,
    caller: &Caller<'_>,
    kind: &str,
    key: &str,
    criteria_sha256: &str,
    spent: Option<&budget::Spent>,
    class: &str,
) -> Result<(), ApiError> {
    let (units, cohorts) = spent.map_or((0, Vec::new()), |s| (s.units, s.cohorts.clone()));
    sqlx::query!(
        "insert into discovery_query (username, kind, criteria_hash, units, cohorts) values ($1, $2, $3, $4, $5)",
        caller.username,
        kind,
        key,
        units,
        &cohorts,
    )
    .execute(&mut *tx)
    .await?;
    audit::record(
        tx,
        NewEvent::new(caller.username, &format!("discovery.{kind}"))
            .details(json!({ "criteria_sha256": criteria_sha256, "result": class, "units": units })),
    )
    .await?;
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

/// Every subject matching `query` (exact, unprotected: for curating staff,
/// never for a researcher's answer).
pub async fn matching_subjects(db: &mut sqlx::PgConnection, query: &Query) -> Result<Vec<uuid::Uuid>, ApiError> {
    let mut qb = QueryBuilder::new("select distinct s.subject_id");
    sql::push_from(&mut qb, query.node.as_ref(), false);
    push_criteria(&mut qb, query);
    Ok(qb.build_query_scalar().persistent(false).fetch_all(db).await?)
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

/// A snapshot that holds every change committed so far: protected answers
/// need every subject's record key, which only the index carries.
async fn fresh(db: &PgPool, index: &Arc<memory::Index>) -> Result<Arc<memory::Snapshot>, ApiError> {
    match index.current(db).await? {
        Some(snapshot) => Ok(snapshot),
        None => Ok(index.refresh(db).await?),
    }
}

/// The answer to a count.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountResult {
    pub counts: Counts,
    pub disclosure: Disclosure,
    /// SHA-256 of the canonical criteria, as audited.
    pub criteria_sha256: String,
}

/// Counts subjects, studies, series and instances matching `query`: exact
/// for the privileged (from the in-memory index when it is current, else
/// from PostgreSQL), protected for everyone else.
pub async fn count(
    db: &PgPool,
    index: &Arc<memory::Index>,
    caller: &Caller<'_>,
    query: &Query,
) -> Result<CountResult, ApiError> {
    let thresholds = scope(db, query.node.as_ref()).await?;
    if caller.privileged {
        let raw = match (&caller.modalities, current(db, index).await?) {
            (Some(modalities), _) => {
                let (node, modalities) = (query.node.clone(), modalities.clone());
                in_memory(fresh(db, index).await?, move |s| s.count_limited(node.as_ref(), &modalities)).await?
            }
            (None, Some(snapshot)) => {
                let node = query.node.clone();
                in_memory(snapshot, move |s| s.count(node.as_ref())).await?
            }
            (None, None) => count_in_database(db, query).await?,
        };
        let mut tx = db.begin().await?;
        record(&mut tx, caller, "count", &query.hash, &query.hash, None, "exact").await?;
        tx.commit().await?;
        return Ok(CountResult {
            counts: Counts::exact(raw),
            disclosure: disclosure(caller, thresholds, None),
            criteria_sha256: query.hash.clone(),
        });
    }
    let snapshot = fresh(db, index).await?;
    let node = query.node.clone();
    let tally: Tally = in_memory(snapshot, move |s| s.tally(node.as_ref())).await?;
    let table = Perturbation::new(caller.noise.0, caller.noise.1);
    let cohorts = thresholds.iter().map(|c| c.cohort.clone()).collect();
    let mut tx = db.begin().await?;
    let spent =
        budget::spend(&mut tx, caller.username, "count", &query.hash, cohorts, budget::units(0), caller.budget).await?;
    let published = anchors::answer(&mut tx, &table, &[anchors::Cell::from(&tally)], None).await?;
    let counts = Counts::published(published[0]);
    let class = if counts.subjects.is_none() { "suppressed" } else { "shown" };
    record(&mut tx, caller, "count", &query.hash, &query.hash, Some(&spent), class).await?;
    tx.commit().await?;
    Ok(CountResult {
        counts,
        disclosure: disclosure(caller, thresholds, Some(budget_state(caller, &spent))),
        criteria_sha256: query.hash.clone(),
    })
}

fn budget_state(caller: &Caller<'_>, spent: &budget::Spent) -> BudgetState {
    BudgetState {
        spent: spent.units,
        remaining: spent.remaining,
        allowance: caller.budget.units,
        window_days: caller.budget.window_days,
        cohorts: spent.cohorts.clone(),
    }
}

/// One cell of a breakdown.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakdownCell {
    /// One label per dimension, in the order asked; `null` is the total over that
    /// dimension and `unknown` a value the catalog does not have.
    pub values: Vec<Option<String>>,
    /// Whether the cell is a margin: the total over each dimension whose label is
    /// `null` (every label `null`: the grand total).
    pub total: bool,
    pub counts: Counts,
    /// Hidden by primary or secondary suppression.
    pub suppressed: bool,
}

/// The answer to a breakdown.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakdownResult {
    pub by: Vec<Dimension>,
    /// Cells, then totals of each dimension, then the grand total. Protected
    /// answers list every label the registry holds, empty cells included.
    pub cells: Vec<BreakdownCell>,
    pub disclosure: Disclosure,
    pub criteria_sha256: String,
}

/// The most cells a protected breakdown answers (labels of both dimensions,
/// every combination, with margins).
pub const MAX_CELLS: usize = 2_000;

/// Orders cells by label, then totals, then the grand total.
fn order<T>(mut cells: Vec<(Vec<Option<String>>, T)>) -> Vec<(Vec<Option<String>>, T)> {
    cells.sort_by(|(a, _), (b, _)| {
        let key = |v: &Vec<Option<String>>| (v.iter().filter(|x| x.is_none()).count(), v.clone());
        key(a).cmp(&key(b))
    });
    cells
}

fn table_cells<T>(
    cells: &[(Vec<Option<String>>, T)],
    by: &[Dimension],
    subjects: impl Fn(&T) -> i64,
) -> Vec<disclosure::Cell> {
    cells
        .iter()
        .map(|(values, cell)| disclosure::Cell {
            row: values[0].clone(),
            column: if by.len() == 2 { values[1].clone() } else { None },
            subjects: subjects(cell),
        })
        .collect()
}

/// Counts broken down by one or two dimensions, with totals.
pub async fn breakdown(
    db: &PgPool,
    index: &Arc<memory::Index>,
    caller: &Caller<'_>,
    query: &Query,
    by: &[Dimension],
) -> Result<BreakdownResult, ApiError> {
    let thresholds = scope(db, query.node.as_ref()).await?;
    if caller.privileged {
        let rows = match current(db, index).await? {
            Some(snapshot) => {
                let (node, dims) = (query.node.clone(), by.to_vec());
                in_memory(snapshot, move |s| s.breakdown(node.as_ref(), &dims)).await?
            }
            None => breakdown_in_database(db, query, by).await?,
        };
        let mut tx = db.begin().await?;
        record(&mut tx, caller, "breakdown", &breakdown_key(query, by), &query.hash, None, "exact").await?;
        tx.commit().await?;
        let cells = order(rows)
            .into_iter()
            .map(|(values, raw)| BreakdownCell {
                total: values.iter().any(Option::is_none),
                values,
                counts: Counts::exact(raw),
                suppressed: false,
            })
            .collect();
        return Ok(BreakdownResult {
            by: by.to_vec(),
            cells,
            disclosure: disclosure(caller, thresholds, None),
            criteria_sha256: query.hash.clone(),
        });
    }
    let snapshot = fresh(db, index).await?;
    let (node, dims) = (query.node.clone(), by.to_vec());
    let cells = order(in_memory(snapshot, move |s| s.tallies(node.as_ref(), &dims)).await?);
    // Every label pair is a cell (and an anchor to match): bound what one request may ask.
    if cells.len() > MAX_CELLS {
        return Err(ApiError::BadRequest(format!(
            "a breakdown by these dimensions has {} cells, more than the {MAX_CELLS} one answer may hold: every \
             label of each dimension is listed, so break down by one of them, or by one with fewer labels",
            cells.len()
        )));
    }
    // The table for secondary suppression: no line with exactly one hidden cell.
    let lines = table_cells(&cells, by, |t: &Tally| t.parts.values().map(|p| p.counts[0]).sum());
    let candidates: Vec<anchors::Cell> = cells.iter().map(|(_, t)| anchors::Cell::from(t)).collect();
    let table = Perturbation::new(caller.noise.0, caller.noise.1);
    let cohorts = thresholds.iter().map(|c| c.cohort.clone()).collect();
    let key = breakdown_key(query, by);
    let mut tx = db.begin().await?;
    let spent =
        budget::spend(&mut tx, caller.username, "breakdown", &key, cohorts, budget::units(by.len()), caller.budget)
            .await?;
    let published = anchors::answer(&mut tx, &table, &candidates, Some(&lines)).await?;
    let class = if published.iter().any(Option::is_none) { "partly-suppressed" } else { "shown" };
    record(&mut tx, caller, "breakdown", &key, &query.hash, Some(&spent), class).await?;
    tx.commit().await?;
    let result_cells = cells
        .into_iter()
        .zip(published)
        .map(|((values, _), published)| BreakdownCell {
            total: values.iter().any(Option::is_none),
            values,
            counts: Counts::published(published),
            suppressed: published.is_none(),
        })
        .collect();
    Ok(BreakdownResult {
        by: by.to_vec(),
        cells: result_cells,
        disclosure: disclosure(caller, thresholds, Some(budget_state(caller, &spent))),
        criteria_sha256: query.hash.clone(),
    })
}

/// What makes a breakdown the same query: its criteria and its dimensions.
fn breakdown_key(query: &Query, by: &[Dimension]) -> String {
    sha256_hex(&format!("{}/{}", query.hash, serde_json::to_string(by).unwrap_or_default()))
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
