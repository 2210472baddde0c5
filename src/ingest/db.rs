//! Catalog rows written by ingest.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{CONFLICT_MESSAGE, FileReport, Outcome, Prepared, Target};

/// Records one prepared instance (and its subject, study, series, scanner),
/// returning its report. Idempotent: a stored instance with the same bytes is a
/// duplicate; different bytes under the same SOP Instance UID are a conflict.
pub(crate) async fn record_instance(
    tx: &mut PgConnection,
    target: &Target,
    ordinal: i32,
    file: &Prepared,
) -> Result<FileReport, sqlx::Error> {
    let meta = &file.meta;
    let size_bytes = i64::try_from(file.size).unwrap_or(i64::MAX);
    let report = |outcome, code: Option<&str>, message: Option<&str>| FileReport {
        ordinal,
        outcome,
        code: code.map(str::to_owned),
        message: message.map(str::to_owned),
        sop_uid: Some(meta.sop_uid.clone()),
        size_bytes,
    };
    if let Some(existing) = sqlx::query_scalar!("select sha256 from instance where sop_uid = $1", meta.sop_uid)
        .fetch_optional(&mut *tx)
        .await?
    {
        return Ok(if existing == file.sha256 {
            report(Outcome::Duplicate, None, None)
        } else {
            report(Outcome::Rejected, Some("conflict"), Some(CONFLICT_MESSAGE))
        });
    }

    let series_id = upsert_series(tx, target, meta).await?;
    let (status, code, reason) = match &file.quarantine {
        Some(q) => ("quarantined", Some(q.code), Some(q.message)),
        None => ("staged", None, None),
    };
    let inserted = sqlx::query!(
        "insert into instance (sop_uid, series_id, upload_session_id, sop_class_uid, transfer_syntax, instance_number,
                               rows, columns, frames, object_key, size_bytes, sha256, status, quarantine_code,
                               quarantine_reason, referenced_sop_uids)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         on conflict (sop_uid) do nothing",
        meta.sop_uid,
        series_id,
        target.session_id,
        meta.sop_class_uid,
        meta.transfer_syntax,
        meta.instance_number,
        meta.rows.and_then(|v| i32::try_from(v).ok()),
        meta.columns.and_then(|v| i32::try_from(v).ok()),
        meta.frames.and_then(|v| i32::try_from(v).ok()),
        file.object_key,
        i64::try_from(file.stored_size).unwrap_or(i64::MAX),
        file.sha256,
        status,
        code,
        reason,
        &meta.referenced_sop_uids,
    )
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        // Another upload stored it between our check and our insert.
        let existing = sqlx::query_scalar!("select sha256 from instance where sop_uid = $1", meta.sop_uid)
            .fetch_one(&mut *tx)
            .await?;
        return Ok(if existing == file.sha256 {
            report(Outcome::Duplicate, None, None)
        } else {
            report(Outcome::Rejected, Some("conflict"), Some(CONFLICT_MESSAGE))
        });
    }
    Ok(match &file.quarantine {
        Some(q) => report(Outcome::Quarantined, Some(q.code), Some(q.message)),
        None => report(Outcome::Stored, None, None),
    })
}

/// The subject (and its cohort membership), study, scanner and series an instance belongs to.
async fn upsert_series(
    tx: &mut PgConnection,
    target: &Target,
    meta: &crate::deid::InstanceMeta,
) -> Result<Uuid, sqlx::Error> {
    let subject_id = sqlx::query_scalar!(
        "insert into subject (pseudonym, site_id, sex, birth_year, date_shift_days)
         values ($1, $2, $3, $4, $5)
         on conflict (pseudonym) do update
            set sex = coalesce(subject.sex, excluded.sex), birth_year = coalesce(subject.birth_year, excluded.birth_year)
         returning subject_id",
        meta.subject,
        target.site_id,
        meta.sex,
        meta.birth_year,
        i32::try_from(meta.date_shift_days).unwrap_or_default(),
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into cohort_subject (cohort_id, subject_id) values ($1, $2) on conflict do nothing",
        target.cohort_id,
        subject_id
    )
    .execute(&mut *tx)
    .await?;
    let study_id = sqlx::query_scalar!(
        "insert into study (study_uid, subject_id, cohort_id, site_id, study_date, description, age_years, height_m, weight_kg)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         on conflict (study_uid) do update set study_uid = excluded.study_uid
         returning study_id",
        meta.study_uid,
        subject_id,
        target.cohort_id,
        target.site_id,
        meta.study_date,
        meta.study_description,
        meta.age_years,
        meta.height_m,
        meta.weight_kg,
    )
    .fetch_one(&mut *tx)
    .await?;
    let scanner_id = if meta.manufacturer.is_some() || meta.model.is_some() {
        Some(
            sqlx::query_scalar!(
                "insert into scanner (manufacturer, model, field_strength) values ($1, $2, $3)
                 on conflict on constraint scanner_identity_key do update set manufacturer = excluded.manufacturer
                 returning scanner_id",
                meta.manufacturer.clone().unwrap_or_default(),
                meta.model.clone().unwrap_or_default(),
                meta.field_strength,
            )
            .fetch_one(&mut *tx)
            .await?,
        )
    } else {
        None
    };
    let series_id = sqlx::query_scalar!(
        "insert into series (series_uid, study_id, scanner_id, modality, body_part, series_date, series_number,
                             description, slice_thickness, pixel_spacing_row, pixel_spacing_col)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (series_uid) do update set series_uid = excluded.series_uid
         returning series_id",
        meta.series_uid,
        study_id,
        scanner_id,
        meta.modality,
        meta.body_part,
        meta.series_date,
        meta.series_number,
        meta.series_description,
        meta.slice_thickness,
        meta.pixel_spacing.map(|p| p.0),
        meta.pixel_spacing.map(|p| p.1),
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(series_id)
}

pub(crate) async fn insert_file_report(
    tx: &mut PgConnection,
    session_id: Uuid,
    report: &FileReport,
) -> Result<(), sqlx::Error> {
    let outcome = match report.outcome {
        Outcome::Stored => "stored",
        Outcome::Duplicate => "duplicate",
        Outcome::Rejected => "rejected",
        Outcome::Quarantined => "quarantined",
    };
    sqlx::query!(
        "insert into upload_file (upload_session_id, ordinal, outcome, code, message, sop_uid, size_bytes)
         values ($1, $2, $3, $4, $5, $6, $7)",
        session_id,
        report.ordinal,
        outcome,
        report.code,
        report.message,
        report.sop_uid,
        report.size_bytes,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Takes `n` ordinals from an open session, returning the first; `Err(state)` when it is not open.
/// Locks the session row until the transaction ends, so a commit cannot slip in between.
pub(crate) async fn reserve_ordinals(
    tx: &mut PgConnection,
    session_id: Uuid,
    n: i32,
) -> Result<Result<i32, String>, sqlx::Error> {
    let state =
        sqlx::query_scalar!("select state from upload_session where upload_session_id = $1 for update", session_id)
            .fetch_one(&mut *tx)
            .await?;
    if state != "open" {
        return Ok(Err(state));
    }
    let last = sqlx::query_scalar!(
        "update upload_session set file_count = file_count + $2 where upload_session_id = $1 returning file_count",
        session_id,
        n
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(Ok(last - n + 1))
}
