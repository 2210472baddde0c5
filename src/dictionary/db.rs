//! The dictionary in PostgreSQL: fields, and the per-cohort coverage the
//! `dictionary.coverage` job keeps current.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{Dictionary, Field, FieldSource, ValueType};

/// Every field, ordered by category and id.
pub async fn fields(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Field>> {
    sqlx::query_as!(
        Field,
        r#"select field_id as id, title, description, category, value_type as "value_type: ValueType",
                  source as "source: FieldSource", unit, coding_system, code, molar_mass, min_value, max_value
           from field order by category, field_id"#
    )
    .fetch_all(db)
    .await
}

/// The whole dictionary, for validating an import or a query.
pub async fn dictionary(db: impl PgExecutor<'_>) -> sqlx::Result<Dictionary> {
    Ok(Dictionary::new(fields(db).await?))
}

/// Subjects with a value of a field, in one cohort, of one threshold class.
#[derive(Debug, Clone)]
pub struct Coverage {
    pub field_id: String,
    pub cohort_id: Uuid,
    /// The strictest cohort threshold of these subjects.
    pub threshold: i32,
    pub subjects: i64,
    /// The sum of their record keys modulo 2^64 (as stored, signed).
    pub key_sum: i64,
}

/// The coverage of every field in the given cohorts.
pub async fn coverage(db: impl PgExecutor<'_>, cohorts: &[Uuid]) -> sqlx::Result<Vec<Coverage>> {
    sqlx::query_as!(
        Coverage,
        "select field_id, cohort_id, threshold, subjects, key_sum from field_coverage where cohort_id = any($1)",
        cohorts
    )
    .fetch_all(db)
    .await
}

/// Recomputes the coverage of every field in every cohort. Withdrawn subjects
/// and unpublished imaging do not count. Each cell is kept per threshold class
/// (a subject's strictest cohort threshold) with the sum of its subjects'
/// record keys, so that the dictionary publishes it by the cell key method.
pub async fn refresh_coverage(db: &mut PgConnection) -> sqlx::Result<u64> {
    sqlx::query!("delete from field_coverage").execute(&mut *db).await?;
    let inserted = sqlx::query!(
        r#"
        with thresholds as (
            select x.subject_id, max(c.suppression_threshold) as threshold
            from cohort_subject x join cohort c using (cohort_id)
            group by x.subject_id
        ),
        subjects as (
            select s.subject_id, s.sex, s.birth_year, s.record_key, coalesce(t.threshold, 10) as threshold
            from subject s left join thresholds t using (subject_id)
            where s.withdrawn_at is null
        ),
        members as (
            select cs.cohort_id, s.subject_id, s.sex, s.birth_year
            from cohort_subject cs join subjects s using (subject_id)
        ),
        imaged as (
            select d.* from discovery_series d join subjects s using (subject_id)
        ),
        -- One row per field, cohort and subject: each branch names its own field,
        -- so only branches with several rows per subject need `distinct`.
        cells (field_id, cohort_id, subject_id) as (
            select 'cohort', cohort_id, subject_id from members
            union all select 'site', cohort_id, subject_id from members
            union all select 'sex', cohort_id, subject_id from members where sex is not null
            union all select 'birth_year', cohort_id, subject_id from members where birth_year is not null
            union all select distinct 'age_at_study', cohort_id, subject_id from imaged where age_years is not null
            union all select distinct 'modality', cohort_id, subject_id from imaged where modality is not null
            union all select distinct 'body_part', cohort_id, subject_id from imaged where body_part is not null
            union all select distinct 'manufacturer', cohort_id, subject_id from imaged where manufacturer is not null
            union all select distinct 'model', cohort_id, subject_id from imaged where model is not null
            union all select distinct 'field_strength', cohort_id, subject_id from imaged where field_strength is not null
            union all select distinct o.field_id, m.cohort_id, m.subject_id
                from members m join observation o using (subject_id)
            union all select 'diagnosis', m.cohort_id, m.subject_id
                from members m where exists (select 1 from diagnosis d where d.subject_id = m.subject_id)
            union all select 'annotation', m.cohort_id, m.subject_id
                from members m where exists (select 1 from annotation a where a.subject_id = m.subject_id)
            union all select 'genotype', m.cohort_id, m.subject_id
                from members m where exists (select 1 from genotype g where g.subject_id = m.subject_id)
        ),
        sums as (
            select c.field_id, c.cohort_id, s.threshold, count(*) as subjects,
                   (sum(s.record_key::numeric) % 18446744073709551616 + 18446744073709551616)
                       % 18446744073709551616 as unsigned_sum
            from cells c join subjects s using (subject_id)
            group by c.field_id, c.cohort_id, s.threshold
        )
        insert into field_coverage (field_id, cohort_id, threshold, subjects, key_sum)
        select field_id, cohort_id, threshold, subjects,
               (case when unsigned_sum >= 9223372036854775808 then unsigned_sum - 18446744073709551616
                     else unsigned_sum end)::bigint
        from sums
        "#
    )
    .execute(&mut *db)
    .await?;
    Ok(inserted.rows_affected())
}

/// A field as a steward defines it.
#[derive(Debug, Clone)]
pub struct NewField<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub category: &'a str,
    pub value_type: ValueType,
    pub unit: Option<&'a str>,
    pub coding_system: Option<&'a str>,
    pub code: Option<&'a str>,
    pub molar_mass: Option<f64>,
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
}

/// Creates or updates an observation field; `None` when `id` names a builtin field.
pub async fn put_observation_field(db: impl PgExecutor<'_>, f: &NewField<'_>) -> sqlx::Result<Option<(Field, bool)>> {
    let row = sqlx::query!(
        r#"insert into field (field_id, title, description, category, value_type, source, unit,
                              coding_system, code, molar_mass, min_value, max_value)
           values ($1, $2, $3, $4, $5, 'observation', $6, $7, $8, $9, $10, $11)
           on conflict (field_id) do update
           set title = excluded.title, description = excluded.description, category = excluded.category,
               value_type = excluded.value_type, unit = excluded.unit, coding_system = excluded.coding_system,
               code = excluded.code, molar_mass = excluded.molar_mass, min_value = excluded.min_value,
               max_value = excluded.max_value
           where field.source = 'observation'
           returning field_id as id, title, description, category, value_type as "value_type: ValueType",
                     source as "source: FieldSource", unit, coding_system, code, molar_mass, min_value, max_value,
                     (xmax = 0) as "created!""#,
        f.id,
        f.title,
        f.description,
        f.category,
        f.value_type as ValueType,
        f.unit,
        f.coding_system,
        f.code,
        f.molar_mass,
        f.min_value,
        f.max_value,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        (
            Field {
                id: r.id,
                title: r.title,
                description: r.description,
                category: r.category,
                value_type: r.value_type,
                source: r.source,
                unit: r.unit,
                coding_system: r.coding_system,
                code: r.code,
                molar_mass: r.molar_mass,
                min_value: r.min_value,
                max_value: r.max_value,
            },
            r.created,
        )
    }))
}

/// Kind (and dedupe key) of the job that refreshes [`coverage`].
pub const COVERAGE_JOB: &str = "dictionary.coverage";

/// A coverage refresh a few seconds from now; imports and commits in the
/// meantime share it.
pub fn refresh_soon() -> crate::jobs::NewJob {
    crate::jobs::NewJob::new(COVERAGE_JOB).dedupe(COVERAGE_JOB).after(std::time::Duration::from_secs(2))
}

/// The coverage job. Data that arrived while it ran (its enqueue was absorbed
/// by this running job) gets a follow-up run.
pub async fn run_coverage_job(db: &sqlx::PgPool) -> anyhow::Result<Option<crate::jobs::NewJob>> {
    let mut tx = db.begin().await?;
    let started = sqlx::query_scalar!(r#"select now() as "now!""#).fetch_one(&mut *tx).await?;
    refresh_coverage(&mut tx).await?;
    tx.commit().await?;
    let newer = sqlx::query_scalar!(
        r#"select exists (select 1 from data_import where created_at > $1)
                  or exists (select 1 from upload_session where closed_at > $1) as "newer!""#,
        started
    )
    .fetch_one(db)
    .await?;
    Ok(newer.then(refresh_soon))
}
