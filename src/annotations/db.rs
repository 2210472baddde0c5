//! Annotations in PostgreSQL.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{Annotation, NewAnnotation};

/// Where a target resolved to.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    pub subject_id: Uuid,
    pub study_id: Option<Uuid>,
    pub series_id: Option<Uuid>,
    pub instance_id: Option<Uuid>,
}

/// The subject of `pseudonym`.
pub async fn subject(db: impl PgExecutor<'_>, pseudonym: &str) -> sqlx::Result<Option<Resolved>> {
    Ok(sqlx::query_scalar!("select subject_id from subject where pseudonym = $1", pseudonym)
        .fetch_optional(db)
        .await?
        .map(|subject_id| Resolved { subject_id, study_id: None, series_id: None, instance_id: None }))
}

/// The study, series or instance (`level`) with registry UID `uid`.
pub async fn by_uid(db: impl PgExecutor<'_>, level: &str, uid: &str) -> sqlx::Result<Option<Resolved>> {
    let row = sqlx::query!(
        r#"select st.subject_id as "subject_id!", st.study_id as "study_id?", se.series_id as "series_id?",
                  i.instance_id as "instance_id?"
           from study st
           left join series se on se.study_id = st.study_id and $1 in ('series', 'instance')
           left join instance i on i.series_id = se.series_id and $1 = 'instance'
           where case $1 when 'study' then st.study_uid = $2
                         when 'series' then se.series_uid = $2
                         else i.sop_uid = $2 end
           limit 1"#,
        level,
        uid
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Resolved {
        subject_id: r.subject_id,
        study_id: r.study_id,
        series_id: r.series_id,
        instance_id: r.instance_id,
    }))
}

/// The stored payload of an annotation.
#[derive(Debug, Clone)]
pub struct Payload<'a> {
    pub key: &'a str,
    pub size: i64,
    pub sha256: &'a [u8],
}

/// Inserts an annotation made through the API.
pub async fn insert(
    tx: &mut PgConnection,
    id: Uuid,
    target: &Resolved,
    new: &NewAnnotation,
    source: &str,
    payload: Option<&Payload<'_>>,
    actor: &str,
) -> sqlx::Result<()> {
    let level = match (target.instance_id, target.series_id, target.study_id) {
        (Some(_), ..) => "instance",
        (None, Some(_), _) => "series",
        (None, None, Some(_)) => "study",
        _ => "subject",
    };
    let p = &new.provenance;
    sqlx::query!(
        "insert into annotation (annotation_id, subject_id, study_id, series_id, instance_id, target, level, kind, source,
                                 coding_system, code, meaning, object_key, size_bytes, sha256, annotator_role,
                                 annotator_expertise, annotator_years, tool, method, annotated_at, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
        id,
        target.subject_id,
        target.study_id,
        target.series_id,
        target.instance_id,
        level,
        new.kind.level().as_str(),
        new.kind.as_str(),
        source,
        new.label.as_ref().map(|l| l.system.clone()),
        new.label.as_ref().map(|l| l.code.clone()),
        new.label.as_ref().and_then(|l| l.meaning.clone()),
        payload.map(|p| p.key.to_owned()),
        payload.map(|p| p.size),
        payload.map(|p| p.sha256.to_vec()),
        p.role,
        p.expertise,
        p.years,
        p.tool,
        p.method,
        p.annotated_at,
        actor,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Annotations of a study (with its series and instances), newest first.
pub async fn list_for_study(db: impl PgExecutor<'_>, study_uid: &str) -> sqlx::Result<Vec<Annotation>> {
    sqlx::query_as!(
        Annotation,
        r#"select a.annotation_id as id, a.target, a.level, a.kind, a.source,
                  st.study_uid as "study_uid?", se.series_uid as "series_uid?", i.sop_uid as "instance_uid?",
                  a.coding_system, a.code, a.meaning, a.annotator_role, a.method, a.tool, a.size_bytes, a.created_at
           from annotation a
           join study st on st.study_id = a.study_id
           left join series se on se.series_id = a.series_id
           left join instance i on i.instance_id = a.instance_id
           where st.study_uid = $1
           order by a.created_at desc, a.annotation_id"#,
        study_uid
    )
    .fetch_all(db)
    .await
}
