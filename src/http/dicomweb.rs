//! DICOMweb STOW-RS (PS3.18 §10.5): `POST /dicomweb/studies[/{study}]` with a
//! `multipart/related; type="application/dicom"` body.
//!
//! Each request is its own upload session, committed at the end, so a STOW
//! request publishes all its stored instances at once or none. The answer is
//! the standard Store Instances Response Module as `application/dicom+json`:
//! Referenced SOP Sequence (0008,1199) for stored instances, with Warning
//! Reason (0008,1196) = B000 "coercion of data elements" because every
//! instance is de-identified, and Failed SOP Sequence (0008,1198) with a
//! Failure Reason (0008,1197) and an Error Comment. Original UIDs are never
//! echoed back: references carry registry UIDs, and every item the position of
//! the file it answers (see [`store_response`]).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AppPath, AppQuery};
use super::uploads::received_files;
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
use crate::ingest::{Counts, FileReport, Outcome};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(store_instances))
        .routes(routes!(store_study_instances))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// Where STOW-RS data goes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StowQuery {
    /// Cohort slug (default `default`).
    pub cohort: Option<String>,
    /// Site code (default `local`).
    pub site: Option<String>,
}

/// Store instances (STOW-RS).
#[utoipa::path(
    post,
    path = "/dicomweb/studies",
    tag = tags::INGEST,
    security(("bearer" = ["admin"]), ("bearer" = ["uploader"])),
    params(StowQuery),
    request_body(description = "DICOM instances", content((crate::openapi::Binary = "multipart/related"))),
    responses(
        (status = 200, description = "All instances stored (Store Instances Response Module, application/dicom+json)"),
        (status = 202, description = "Some instances stored, some failed"),
        (status = 409, description = "No instance could be stored"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn store_instances(
    State(state): State<AppState>,
    principal: Principal,
    AppQuery(query): AppQuery<StowQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    stow(state, principal, query, None, headers, body).await
}

/// Store instances of one study (STOW-RS); instances of other studies fail.
#[utoipa::path(
    post,
    path = "/dicomweb/studies/{study}",
    tag = tags::INGEST,
    security(("bearer" = ["admin"]), ("bearer" = ["uploader"])),
    params(("study" = String, Path, description = "Study Instance UID as the sender knows it"), StowQuery),
    request_body(description = "DICOM instances", content((crate::openapi::Binary = "multipart/related"))),
    responses(
        (status = 200, description = "All instances stored (Store Instances Response Module, application/dicom+json)"),
        (status = 202, description = "Some instances stored, some failed"),
        (status = 409, description = "No instance could be stored"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn store_study_instances(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(study): AppPath<String>,
    AppQuery(query): AppQuery<StowQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    // Compared in registry form only; the original UID goes no further.
    let only_study = state.ingest.key.uid(&study);
    stow(state, principal, query, Some(only_study), headers, body).await
}

async fn stow(
    state: AppState,
    principal: Principal,
    query: StowQuery,
    only_study: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    principal.require_any(&[Role::Uploader, Role::Admin])?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("multipart/related") {
        return Err(ApiError::UnsupportedMediaType(
            "STOW-RS takes multipart/related; type=\"application/dicom\"".into(),
        ));
    }
    let cohort = query.cohort.unwrap_or_else(|| "default".into());
    let site = query.site.unwrap_or_else(|| "local".into());
    let origin = json!({ "via": "stow-rs" });
    let session = state
        .ingest
        .open_session(&principal.username, &cohort, &site, &origin)
        .await?
        .ok_or_else(|| ApiError::BadRequest(format!("no cohort `{cohort}` with a site `{site}`")))?;

    let mut target = session.target();
    target.only_study = only_study;
    let files = match received_files(&state, &headers, body).await {
        Ok(files) => files,
        Err(e) => {
            close(&state, &principal, session.id, false).await?;
            return Err(e);
        }
    };
    let reports = match state.ingest.ingest_batch(&principal.username, &target, files).await {
        Ok(reports) => reports,
        Err(e) => {
            close(&state, &principal, session.id, false).await?;
            return Err(e.into());
        }
    };
    close(&state, &principal, session.id, true).await?;

    let counts = Counts::of(&reports);
    let status = if counts.rejected == 0 {
        StatusCode::OK
    } else if counts.stored + counts.duplicate + counts.quarantined > 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CONFLICT
    };
    let mut response = (status, store_response(&reports).to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/dicom+json"));
    Ok(response)
}

async fn close(state: &AppState, principal: &Principal, id: uuid::Uuid, commit: bool) -> Result<()> {
    state
        .ingest
        .close_session(&principal.username, id, commit, &json!({ "via": "stow-rs" }))
        .await?
        .map_err(|s| ApiError::Conflict(format!("the upload session is {s}, not open")))?;
    Ok(())
}

/// Private creator of the block that numbers the answers (group 0009, block 10).
const PRIVATE_CREATOR: &str = "CUSTODIAN";
/// (0009,1001) UL, in Custodian's block: the position of the file in the
/// request, from 1 (the part's position, each part being one instance).
const FILE_POSITION: &str = "00091001";

/// The Store Instances Response Module in the DICOM JSON model (PS3.18 F.2,
/// Annex I). Every item says which file of the request it answers in
/// (0009,1001): the sender's own SOP Instance UID is an identifier, so it is
/// never echoed back. Items of instances that could be read carry the SOP
/// Instance Reference Macro in registry form; a failure carries its Failure
/// Reason and an Error Comment (0000,0902) naming the problem (tags, never
/// values). Retrieve URL (0008,1190) is Type 2 and sent empty: instances are
/// not retrieved over DICOMweb (the catalog lists them under
/// `/api/v1/series/{uid}/instances`, and data leaves through access grants).
fn store_response(reports: &[FileReport]) -> Value {
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for report in reports {
        let mut item = serde_json::Map::new();
        item.insert("00090010".into(), json!({ "vr": "LO", "Value": [PRIVATE_CREATOR] }));
        item.insert(FILE_POSITION.into(), json!({ "vr": "UL", "Value": [report.ordinal] }));
        if let Some(class) = &report.sop_class_uid {
            item.insert("00081150".into(), json!({ "vr": "UI", "Value": [class] }));
        }
        if let Some(uid) = &report.sop_uid {
            item.insert("00081155".into(), json!({ "vr": "UI", "Value": [uid] }));
        }
        match report.outcome {
            Outcome::Stored | Outcome::Duplicate | Outcome::Quarantined => {
                item.insert("00081190".into(), json!({ "vr": "UR" }));
                // B000: coercion of data elements (de-identification)
                item.insert("00081196".into(), json!({ "vr": "US", "Value": [0xB000] }));
                referenced.push(Value::Object(item));
            }
            Outcome::Rejected => {
                item.insert(
                    "00081197".into(),
                    json!({ "vr": "US", "Value": [failure_reason(report.code.as_deref())] }),
                );
                if let Some(comment) = report.error_comment() {
                    item.insert("00000902".into(), json!({ "vr": "LO", "Value": [comment] }));
                }
                failed.push(Value::Object(item));
            }
        }
    }
    let mut module = serde_json::Map::new();
    if !failed.is_empty() {
        module.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    if !referenced.is_empty() {
        module.insert("00081199".into(), json!({ "vr": "SQ", "Value": referenced }));
    }
    Value::Object(module)
}

/// Failure reasons of PS3.18 Table I.2-2.
fn failure_reason(code: Option<&str>) -> u16 {
    match code {
        Some("not-dicom" | "malformed-dicom" | "unsupported-transfer-syntax") => 0xC000, // cannot understand
        Some("missing-attribute" | "wrong-study") => 0xA900, // does not match SOP class / study
        // Already stored with other content: see CONFLICT_STATUS for why not 0111.
        Some("conflict") => crate::ingest::CONFLICT_STATUS,
        Some("file-too-large") => 0xA700,          // out of resources
        Some("sop-class-not-supported") => 0x0122, // referenced SOP class not supported
        _ => 0x0110,                               // processing failure
    }
}
