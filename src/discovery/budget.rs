//! The query budget of protected discovery. Each answered query spends units
//! from the asking user's allowance in every cohort it can touch (the cohorts
//! its criteria name at the top level, else all): a count 1, a breakdown by
//! one dimension 2 and by two dimensions 4, as many as the cells that one
//! subject falls into. Asking the very same query again within the window is
//! free: it gets the same answer. Spending is checked and recorded under a
//! per-user lock in the transaction that records the query, so parallel
//! requests cannot overspend.

use sqlx::PgConnection;

use crate::error::ApiError;

/// The allowance of each user in each cohort.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub units: u32,
    pub window_days: u32,
}

/// What a query spent.
#[derive(Debug, Clone)]
pub struct Spent {
    pub units: i32,
    /// The least left, over the cohorts charged, after this query.
    pub remaining: i64,
    pub cohorts: Vec<String>,
}

/// Units of a query: the number of cells a subject falls into.
pub fn units(dimensions: usize) -> i32 {
    1 << dimensions.min(2)
}

/// Checks and takes the units of a query; the caller records the query row
/// (with `units` and `cohorts`) in the same transaction.
pub async fn spend(
    tx: &mut PgConnection,
    username: &str,
    kind: &str,
    key: &str,
    cohorts: Vec<String>,
    units: i32,
    budget: Budget,
) -> Result<Spent, ApiError> {
    sqlx::query!("select pg_advisory_xact_lock(hashtextextended('discovery-budget/' || $1, 0))", username)
        .execute(&mut *tx)
        .await?;
    let window = i32::try_from(budget.window_days).unwrap_or(i32::MAX);
    let repeat = sqlx::query_scalar!(
        r#"select exists (select 1 from discovery_query where username = $1 and criteria_hash = $2 and kind = $3
                          and created_at > now() - make_interval(days => $4)) as "repeat!""#,
        username,
        key,
        kind,
        window
    )
    .fetch_one(&mut *tx)
    .await?;
    let units = if repeat { 0 } else { units };
    let used = sqlx::query!(
        r#"select c as "cohort!", coalesce(sum(q.units), 0)::bigint as "spent!",
                  coalesce(extract(epoch from min(q.created_at) filter (where q.units > 0)
                                   + make_interval(days => $3) - now()), 0)::float8 as "frees_in!"
           from unnest($2::text[]) c
           left join discovery_query q on q.username = $1 and c = any(q.cohorts)
                                       and q.created_at > now() - make_interval(days => $3)
           group by c order by c"#,
        username,
        &cohorts,
        window
    )
    .fetch_all(&mut *tx)
    .await?;
    let allowance = i64::from(budget.units);
    let mut remaining = allowance;
    for row in &used {
        let (cohort, spent, frees_in) = (&row.cohort, row.spent, row.frees_in);
        if spent + i64::from(units) > allowance {
            // The oldest spending query leaves the window first.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let retry_after = frees_in.ceil().max(1.0) as u64;
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "the discovery budget of {allowance} units in cohort `{cohort}` over {} days is used up ({spent} \
                     spent; this query needs {units}); units come back as the queries that spent them grow older \
                     than the window",
                    budget.window_days
                ),
                retry_after,
            });
        }
        remaining = remaining.min(allowance - spent - i64::from(units));
    }
    Ok(Spent { units, remaining, cohorts })
}
