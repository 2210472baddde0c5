//! The quarantine: instances held back for a steward (burned-in text, or a
//! modality that often carries it), listed, looked at, released or deleted.
//! REST handlers and web pages call these functions; each checks the caller.

use object_store::ObjectStore;
use serde_json::json;
use sqlx::{PgConnection, PgExecutor};

use super::preview::{self, NoPreview, Preview};
use super::{QuarantinedInstance, db};
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::ApiError;

/// Who decides on the quarantine.
pub const DECIDERS: &[Role] = &[Role::Steward, Role::Admin];

/// Quarantined instances, oldest first (stewards and admins).
pub async fn list(db: impl PgExecutor<'_>, principal: &Principal) -> Result<Vec<QuarantinedInstance>, ApiError> {
    principal.require_any(DECIDERS)?;
    Ok(db::list_quarantine(db).await?)
}

/// One quarantined instance with where its file is and how its pixels are encoded.
#[derive(Debug, Clone)]
pub struct Held {
    pub instance: QuarantinedInstance,
    pub transfer_syntax: String,
    pub rows: Option<i32>,
    pub columns: Option<i32>,
    object_key: String,
}

/// A quarantined instance (stewards and admins).
pub async fn find(db: impl PgExecutor<'_>, principal: &Principal, sop_uid: &str) -> Result<Held, ApiError> {
    principal.require_any(DECIDERS)?;
    let row = sqlx::query!(
        r#"select i.sop_uid, se.series_uid, st.study_uid, c.slug as cohort, se.modality,
                  i.quarantine_code as code, i.quarantine_reason as reason, i.upload_session_id,
                  i.created_at as received_at, i.transfer_syntax, i.rows, i.columns, i.object_key
           from instance i join series se using (series_id) join study st using (study_id) join cohort c using (cohort_id)
           where i.sop_uid = $1 and i.status = 'quarantined'"#,
        sop_uid
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("quarantined instance"))?;
    Ok(Held {
        instance: QuarantinedInstance {
            sop_uid: row.sop_uid,
            series_uid: row.series_uid,
            study_uid: row.study_uid,
            cohort: row.cohort,
            modality: row.modality,
            code: row.code,
            reason: row.reason,
            upload_session_id: row.upload_session_id,
            received_at: row.received_at,
        },
        transfer_syntax: row.transfer_syntax,
        rows: row.rows,
        columns: row.columns,
        object_key: row.object_key,
    })
}

/// Renders the de-identified image of a quarantined instance (stewards and
/// admins), audited as a view. `Ok(Err(..))` says why there is no picture.
pub async fn preview(
    pool: &sqlx::PgPool,
    store: &dyn ObjectStore,
    principal: &Principal,
    sop_uid: &str,
) -> Result<Result<Preview, NoPreview>, ApiError> {
    let held = find(pool, principal, sop_uid).await?;
    let rendered = if let Err(why) = preview::previewable(&held.transfer_syntax) {
        Err(why)
    } else {
        let path = object_store::path::Path::from(held.object_key.as_str());
        let stored = object_store::ObjectStoreExt::get(store, &path).await?.bytes().await?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| preview::render(&stored)))
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("rendering a preview panicked: {e}")))?
    };
    let mut tx = pool.begin().await?;
    audit::record(
        &mut tx,
        NewEvent::new(&principal.username, "quarantine.view")
            .target(format!("instance:{sop_uid}"))
            .details(json!({ "rendered": rendered.is_ok() })),
    )
    .await?;
    tx.commit().await?;
    Ok(rendered)
}

/// Releases a quarantined instance after a steward checked it carries no
/// burned-in identifiers: `published`, or `staged` while its upload session
/// is not committed.
pub async fn release(tx: &mut PgConnection, principal: &Principal, sop_uid: &str) -> Result<String, ApiError> {
    principal.require_any(DECIDERS)?;
    let status = db::release_quarantined(tx, sop_uid).await?.ok_or(ApiError::NotFound("quarantined instance"))?;
    audit::record(
        tx,
        NewEvent::new(&principal.username, "quarantine.release")
            .target(format!("instance:{sop_uid}"))
            .details(json!({ "status": status })),
    )
    .await?;
    Ok(status)
}

/// Deletes a quarantined instance for good: its row in `tx`, then (once
/// committed, by [`delete_object`]) its file.
pub async fn delete(tx: &mut PgConnection, principal: &Principal, sop_uid: &str) -> Result<String, ApiError> {
    principal.require_any(DECIDERS)?;
    let key = db::delete_quarantined(tx, sop_uid).await?.ok_or(ApiError::NotFound("quarantined instance"))?;
    audit::record(tx, NewEvent::new(&principal.username, "quarantine.delete").target(format!("instance:{sop_uid}")))
        .await?;
    Ok(key)
}

/// Removes a deleted instance's file; a failure is left to the sweep.
pub async fn delete_object(store: &dyn ObjectStore, key: String) {
    if let Err(e) = object_store::ObjectStoreExt::delete(store, &key.into()).await {
        tracing::warn!(error = %e, "deleting a quarantined object; the sweep will retry");
    }
}
