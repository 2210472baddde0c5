//! Annotations over REST: labels and geometry as JSON, masks as NIfTI with
//! their annotation in one multipart request (uploaders, admins); listing per
//! study (uploaders, stewards, admins). Every new annotation is audited.

use aws_lc_rs::digest::{SHA256, digest};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath};
use crate::annotations::{self, Annotation, NewAnnotation, Target, db, nifti};
use crate::app::AppState;
use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;
use crate::storage::keys;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_annotation))
        .routes(routes!(upload_mask))
        .routes(routes!(list_study_annotations))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

const WRITERS: &[Role] = &[Role::Uploader, Role::Admin];
const READERS: &[Role] = &[Role::Uploader, Role::Steward, Role::Admin];

/// A stored annotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedAnnotation {
    pub id: Uuid,
    pub level: &'static str,
    pub kind: &'static str,
    /// Size of the stored payload (JSON geometry or gzip NIfTI), if any.
    pub size_bytes: Option<usize>,
    /// Whether NIfTI header extensions were dropped.
    pub extensions_dropped: Option<bool>,
}

async fn resolve(state: &AppState, target: &Target) -> Result<db::Resolved> {
    let found = match target {
        Target::Subject { patient_id, site, issuer_of_patient_id } => {
            let site = site.as_deref().unwrap_or("local");
            let pseudonym = state.ingest.key.subject_issued(site, patient_id, issuer_of_patient_id.as_deref());
            db::subject(&state.db, &pseudonym).await?
        }
        Target::Study { uid } => db::by_uid(&state.db, "study", uid).await?,
        Target::Series { uid } => db::by_uid(&state.db, "series", uid).await?,
        Target::Instance { uid } => db::by_uid(&state.db, "instance", uid).await?,
    };
    // Neither the patient ID nor the UID is echoed.
    found.ok_or_else(|| ApiError::BadRequest("the annotation's target is not in the registry".into()))
}

async fn store(
    state: &AppState,
    principal: &Principal,
    new: &NewAnnotation,
    source: &str,
    payload: Option<(Vec<u8>, &str)>,
) -> Result<(Uuid, Option<usize>)> {
    let target = resolve(state, &new.target).await?;
    let id = Uuid::new_v4();
    let mut stored = None;
    if let Some((bytes, extension)) = payload {
        let key = keys::annotation(id, extension);
        let sha256 = digest(&SHA256, &bytes).as_ref().to_vec();
        let size = bytes.len();
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        state.store.put_opts(&key, bytes.into(), options).await?;
        stored = Some((key.to_string(), i64::try_from(size).unwrap_or(i64::MAX), sha256, size));
    }
    let payload = stored.as_ref().map(|(key, size, sha256, _)| db::Payload { key, size: *size, sha256 });
    let recorded = async {
        let mut tx = state.db.begin().await?;
        db::insert(&mut tx, id, &target, new, source, payload.as_ref(), &principal.username).await?;
        audit::record(
            &mut tx,
            NewEvent::new(&principal.username, "annotation.create").target(format!("annotation:{id}")).details(json!({
                "kind": new.kind.as_str(),
                "source": source,
                "role": new.provenance.role,
                "method": new.provenance.method,
            })),
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(error) = recorded {
        // No row points to the payload: take it back now (the sweep would, later).
        if let Some((key, ..)) = &stored
            && let Err(e) = state.store.delete(&object_store::path::Path::from(key.as_str())).await
        {
            tracing::warn!(error = %e, "removing the payload of an annotation that was not recorded");
        }
        return Err(error.into());
    }
    Ok((id, stored.map(|s| s.3)))
}

fn refuse(problems: Vec<String>) -> ApiError {
    ApiError::Invalid {
        code: "invalid-annotation",
        message: format!("the annotation has {} problem{}", problems.len(), if problems.len() == 1 { "" } else { "s" }),
        problems: problems
            .into_iter()
            .map(|message| crate::error::Problem {
                row: None,
                column: None,
                path: None,
                code: "invalid-annotation",
                message,
            })
            .collect(),
    }
}

/// Add a label, landmarks, a box or a contour, with its provenance.
#[utoipa::path(
    post,
    path = "/annotations",
    tag = tags::CATALOG,
    security(("bearer" = ["admin"]), ("bearer" = ["uploader"])),
    request_body = NewAnnotation,
    responses(
        (status = 201, description = "Stored", body = CreatedAnnotation),
        (status = 400, description = "Invalid annotation or unknown target", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn create_annotation(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(new): AppJson<NewAnnotation>,
) -> Result<(StatusCode, AppJson<CreatedAnnotation>)> {
    principal.require_any(WRITERS)?;
    let problems = annotations::check(&new, false);
    if !problems.is_empty() {
        return Err(refuse(problems));
    }
    let payload = new.geometry.as_ref().map(|g| (g.to_string().into_bytes(), "json"));
    let (id, size) = store(&state, &principal, &new, "json", payload).await?;
    Ok((
        StatusCode::CREATED,
        AppJson(CreatedAnnotation {
            id,
            level: new.kind.level().as_str(),
            kind: new.kind.as_str(),
            size_bytes: size,
            extensions_dropped: None,
        }),
    ))
}

/// Upload a segmentation mask (NIfTI-1 or NIfTI-2, `.nii` or `.nii.gz`).
///
/// `multipart/form-data` with a part `annotation` (the JSON of a new
/// annotation of kind `segmentation`) and a part `file` (the mask). Header
/// text fields are blanked and header extensions dropped before storage.
#[utoipa::path(
    post,
    path = "/annotations/masks",
    tag = tags::CATALOG,
    security(("bearer" = ["admin"]), ("bearer" = ["uploader"])),
    request_body(content = Vec<u8>, content_type = "multipart/form-data", description = "Parts `annotation` (JSON) and `file` (NIfTI)"),
    responses(
        (status = 201, description = "Stored", body = CreatedAnnotation),
        (status = 400, description = "Invalid annotation, target or mask", body = ErrorBody),
        (status = 413, description = "Larger than `ingest.max_file_bytes`", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn upload_mask(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, AppJson<CreatedAnnotation>)> {
    principal.require_any(WRITERS)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
        .then(|| super::uploads::boundary(content_type))
        .flatten()
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType(
                "a mask is sent as multipart/form-data with parts `annotation` and `file`".into(),
            )
        })?;
    let limit = state.config.ingest.max_file_bytes;
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit as u64 + 65_536));
    let mut multipart = multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let (mut annotation, mut file) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(|e| super::uploads::multipart_error(&e))? {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|e| super::uploads::multipart_error(&e))?;
        match name.as_str() {
            "annotation" => {
                annotation = Some(serde_json::from_slice::<NewAnnotation>(&bytes).map_err(|e| {
                    ApiError::InvalidBody(format!(
                        "the `annotation` part is not a new annotation: {}",
                        e.to_string().split(" at line").next().unwrap_or_default()
                    ))
                })?);
            }
            "file" => file = Some(bytes),
            _ => return Err(ApiError::BadRequest("the parts are `annotation` and `file`".into())),
        }
    }
    let (Some(new), Some(file)) = (annotation, file) else {
        return Err(ApiError::BadRequest("a mask upload has an `annotation` part and a `file` part".into()));
    };
    let problems = annotations::check(&new, true);
    if !problems.is_empty() {
        return Err(refuse(problems));
    }
    let mask = tokio::task::spawn_blocking(move || nifti::sanitize(&file, limit))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("mask reader panicked: {e}")))?
        .map_err(|e| ApiError::BadRequest(format!("the file is not an acceptable mask: {}", e.0)))?;
    let extensions_dropped = mask.extensions_dropped;
    let (id, size) = store(&state, &principal, &new, "nifti", Some((mask.bytes, "nii.gz"))).await?;
    Ok((
        StatusCode::CREATED,
        AppJson(CreatedAnnotation {
            id,
            level: new.kind.level().as_str(),
            kind: new.kind.as_str(),
            size_bytes: size,
            extensions_dropped: Some(extensions_dropped),
        }),
    ))
}

/// Annotations of a study.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnnotationListResponse {
    pub annotations: Vec<Annotation>,
}

/// The annotations of a study, its series and instances (DICOM SEG/RTSTRUCT, masks, geometry, labels).
#[utoipa::path(
    get,
    path = "/studies/{uid}/annotations",
    tag = tags::CATALOG,
    security(("bearer" = ["admin"]), ("bearer" = ["steward"]), ("bearer" = ["uploader"])),
    params(("uid" = String, Path, description = "Registry Study Instance UID")),
    responses(
        (status = 200, description = "The annotations", body = AnnotationListResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_study_annotations(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(uid): AppPath<String>,
) -> Result<AppJson<AnnotationListResponse>> {
    principal.require_any(READERS)?;
    Ok(AppJson(AnnotationListResponse { annotations: db::list_for_study(&state.db, &uid).await? }))
}
