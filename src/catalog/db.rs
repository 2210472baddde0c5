//! Catalog queries. Only published instances count; quarantined ones are listed apart.

use sqlx::{PgConnection, PgExecutor};

use super::{InstanceSummary, QuarantinedInstance, SeriesSummary, StudySummary};

/// Published studies of a cohort, by study UID, `limit` after `after` (a study UID).
pub async fn list_studies(
    db: impl PgExecutor<'_>,
    cohort: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<StudySummary>, sqlx::Error> {
    query_studies(db, Some(cohort), None, after, limit).await
}

/// One study, if it has published instances.
pub async fn get_study(db: &mut PgConnection, study_uid: &str) -> Result<Option<StudySummary>, sqlx::Error> {
    Ok(query_studies(db, None, Some(study_uid), None, 1).await?.pop())
}

async fn query_studies(
    db: impl PgExecutor<'_>,
    cohort: Option<&str>,
    study_uid: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<StudySummary>, sqlx::Error> {
    sqlx::query_as!(
        StudySummary,
        r#"select st.study_uid, su.pseudonym as subject, si.code as site, c.slug as cohort, st.study_date,
                  st.description, st.age_years,
                  array_remove(array_agg(distinct se.modality), null) as "modalities!",
                  count(distinct se.series_id) as "series_count!",
                  count(i.instance_id) as "instance_count!"
           from study st
           join cohort c using (cohort_id)
           join subject su using (subject_id)
           join site si on si.site_id = st.site_id
           join series se on se.study_id = st.study_id
           join instance i on i.series_id = se.series_id and i.status = 'published'
           where ($1::text is null or c.slug = $1)
             and ($2::text is null or st.study_uid = $2)
             and ($3::text is null or st.study_uid > $3)
           group by st.study_id, su.pseudonym, si.code, c.slug
           order by st.study_uid
           limit $4"#,
        cohort,
        study_uid,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

pub async fn list_series(db: &mut PgConnection, study_uid: &str) -> Result<Vec<SeriesSummary>, sqlx::Error> {
    sqlx::query_as!(
        SeriesSummary,
        r#"select se.series_uid, se.modality, se.body_part, sc.manufacturer as "manufacturer?", sc.model as "model?",
                  sc.field_strength as "field_strength?", se.slice_thickness,
                  case when se.pixel_spacing_row is null then null
                       else array[se.pixel_spacing_row, se.pixel_spacing_col] end as "pixel_spacing: Vec<f64>",
                  se.series_date, se.series_number, se.description,
                  count(i.instance_id) as "instance_count!"
           from series se
           join study st using (study_id)
           left join scanner sc using (scanner_id)
           join instance i on i.series_id = se.series_id and i.status = 'published'
           where st.study_uid = $1
           group by se.series_id, sc.scanner_id
           order by se.series_number nulls last, se.series_uid"#,
        study_uid
    )
    .fetch_all(db)
    .await
}

pub async fn list_instances(db: impl PgExecutor<'_>, series_uid: &str) -> Result<Vec<InstanceSummary>, sqlx::Error> {
    sqlx::query_as!(
        InstanceSummary,
        r#"select i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.instance_number, i.rows, i.columns, i.frames,
                  i.size_bytes, encode(i.sha256, 'hex') as "sha256!"
           from instance i join series se using (series_id)
           where se.series_uid = $1 and i.status = 'published'
           order by i.instance_number nulls last, i.sop_uid"#,
        series_uid
    )
    .fetch_all(db)
    .await
}

pub async fn list_quarantine(db: impl PgExecutor<'_>) -> Result<Vec<QuarantinedInstance>, sqlx::Error> {
    sqlx::query_as!(
        QuarantinedInstance,
        r#"select i.sop_uid, se.series_uid, st.study_uid, c.slug as cohort, se.modality,
                  i.quarantine_code as code, i.quarantine_reason as reason, i.upload_session_id,
                  i.created_at as received_at
           from instance i join series se using (series_id) join study st using (study_id) join cohort c using (cohort_id)
           where i.status = 'quarantined'
           order by i.created_at"#
    )
    .fetch_all(db)
    .await
}

/// Releases a quarantined instance: published if its session was committed,
/// staged (published at commit) otherwise. `None` when it is not in quarantine.
pub async fn release_quarantined(tx: &mut PgConnection, sop_uid: &str) -> Result<Option<String>, sqlx::Error> {
    let released = sqlx::query!(
        r#"update instance i
           set status = case when coalesce(u.state, 'committed') = 'committed' then 'published' else 'staged' end,
               published_at = case when coalesce(u.state, 'committed') = 'committed' then now() else null end
           from instance j left join upload_session u using (upload_session_id)
           where i.instance_id = j.instance_id and i.sop_uid = $1 and i.status = 'quarantined'
           returning i.status, i.series_id"#,
        sop_uid
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(released) = released else { return Ok(None) };
    if released.status == "published" {
        sqlx::query!("select refresh_discovery_series($1)", &[released.series_id]).execute(&mut *tx).await?;
    }
    Ok(Some(released.status))
}

/// Deletes a quarantined instance's row, returning its object key.
pub async fn delete_quarantined(tx: &mut PgConnection, sop_uid: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "delete from instance where sop_uid = $1 and status = 'quarantined' returning object_key",
        sop_uid
    )
    .fetch_optional(tx)
    .await
}
