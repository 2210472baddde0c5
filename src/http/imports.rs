//! Table imports over REST (uploaders, admins): subjects, observations,
//! diagnoses and variants, each checked whole and written in one transaction.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AppJson, AppPath, AppQuery};
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::dictionary::db as dictionary;
use crate::error::{ApiError, ErrorBody, Result};
use crate::ingest::tables::table::{Format, ShapeError, ShapeGuard};
use crate::ingest::tables::variants::{GunzipError, is_gzip};
use crate::ingest::tables::{self, ImportKind, ImportReport, Parsed, Problem, Problems};
use crate::openapi::tags;
use crate::registry::db as registry;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import_table))
        // Limited by `ingest.max_table_bytes`, enforced while reading.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// Where the rows go.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Cohort slug (default `default`).
    pub cohort: Option<String>,
    /// Site code the patients belong to (default `local`): patient IDs are pseudonymized per site.
    pub site: Option<String>,
    /// Issuer of Patient ID (0010,0021) of every patient ID in the table, when
    /// the images carry one: it scopes the IDs, as it does in DICOM.
    pub issuer_of_patient_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    Table(Format),
    Vcf,
}

/// The media type of a request's body, lowercase and without parameters (empty without one).
pub(crate) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn body_format(kind: ImportKind, headers: &HeaderMap) -> Result<BodyFormat> {
    let content_type = media_type(headers);
    let vcf = matches!(content_type.as_str(), "text/vcf" | "text/x-vcf" | "application/gzip" | "application/x-gzip");
    let format = match content_type.as_str() {
        _ if vcf && kind == ImportKind::Variants => BodyFormat::Vcf,
        // A gzip body of another kind is a compressed CSV.
        "text/csv" | "text/tab-separated-values" | "text/plain" | "application/gzip" | "application/x-gzip" => {
            BodyFormat::Table(Format::Csv)
        }
        "application/json" => BodyFormat::Table(Format::Json),
        _ => {
            let vcf = if kind == ImportKind::Variants { ", text/vcf, application/gzip (VCF)" } else { "" };
            return Err(ApiError::UnsupportedMediaType(format!(
                "a {} import is text/csv, text/tab-separated-values, application/json{vcf}",
                kind.as_str()
            )));
        }
    };
    Ok(format)
}

/// Import a table: `subjects`, `observations`, `diagnoses` or `variants`.
///
/// The whole file is checked first; with any problem nothing is written and
/// the answer lists every problem (up to 100) with its row and column.
#[utoipa::path(
    post,
    path = "/imports/{kind}",
    tag = tags::INGEST,
    params(("kind" = ImportKind, Path, description = "What the table holds"), ImportQuery),
    security(("bearer" = ["admin"]), ("bearer" = ["uploader"])),
    request_body(
        description = "CSV (comma, semicolon or tab separated; a header line), a JSON array of flat objects, or for variants a VCF (plain or gzip)",
        content(
            (String = "text/csv"),
            (Vec<serde_json::Value> = "application/json"),
            (String = "text/vcf"),
            (crate::openapi::Binary = "application/gzip"),
        )
    ),
    responses(
        (status = 201, description = "Imported", body = ImportReport),
        (status = 400, description = "Problems with the table; nothing was imported", body = ErrorBody),
        (status = 413, description = "Larger than `ingest.max_table_bytes`", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn import_table(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(kind): AppPath<ImportKind>,
    AppQuery(query): AppQuery<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, AppJson<ImportReport>)> {
    Ok((StatusCode::CREATED, AppJson(import(&state, &principal, kind, query, &headers, body).await?)))
}

/// Imports a table of `kind` from a request body (uploaders, admins): every
/// problem found first, and nothing written unless there is none.
pub async fn import(
    state: &AppState,
    principal: &Principal,
    kind: ImportKind,
    query: ImportQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<ImportReport> {
    principal.require_any(&[Role::Uploader, Role::Admin])?;
    let format = body_format(kind, headers)?;
    let cohort_slug = query.cohort.unwrap_or_else(|| "default".into());
    let site_code = query.site.unwrap_or_else(|| "local".into());
    let cohort = registry::get_cohort_by_slug(&state.db, &cohort_slug).await?;
    let site = registry::get_site_by_code(&state.db, &site_code).await?;
    let (Some(cohort), Some(site)) = (cohort, site) else {
        return Err(ApiError::BadRequest(format!("no cohort `{cohort_slug}` with a site `{site_code}`")));
    };
    let ingest = &state.config.ingest;
    let limit = ingest.max_table_bytes;
    let (max_line, max_columns) = (ingest.max_table_line_bytes, ingest.max_table_columns);
    let max_patients = ingest.max_table_patients;
    let mut guard = match format {
        BodyFormat::Vcf => Some(ShapeGuard::vcf(max_line, max_columns)),
        BodyFormat::Table(Format::Csv) => Some(ShapeGuard::csv(max_line, max_columns)),
        BodyFormat::Table(Format::Json) => None,
    };
    let hint = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = read_table(body, limit, hint, guard.clone()).await.map_err(|e| match e {
        ReadError::TooLarge => ApiError::PayloadTooLarge,
        ReadError::Unreadable => ApiError::BadRequest("the request body could not be read".into()),
        ReadError::Shape(e) => refused_shape(kind, &e),
    })?;
    let dictionary = dictionary::dictionary(&state.db).await?;

    // Parsing and checking are CPU work: off the async workers.
    let (parsed, problems, format_name) = tokio::task::spawn_blocking(move || {
        let mut problems = Problems::with_max_patients(max_patients);
        let body = match tables::variants::gunzip(&body, limit, guard.as_mut()) {
            Ok(body) => body,
            Err(GunzipError::Shape(e)) => return Err(e),
            Err(e) => {
                problems.add(None, None, "invalid-gzip", e.to_string());
                return Ok((Parsed::default(), problems, "gzip"));
            }
        };
        let (parsed, name) = match (kind, format) {
            (ImportKind::Variants, BodyFormat::Vcf) => (tables::variants::parse_vcf(&body, &mut problems), "vcf"),
            (ImportKind::Variants, BodyFormat::Table(f)) => {
                (tables::variants::parse_table(f, &body, &mut problems), f.as_str())
            }
            (ImportKind::Subjects, BodyFormat::Table(f)) => {
                (tables::subjects::parse(f, &body, &dictionary, &mut problems), f.as_str())
            }
            (ImportKind::Observations, BodyFormat::Table(f)) => {
                (tables::observations::parse(f, &body, &dictionary, &mut problems), f.as_str())
            }
            (ImportKind::Diagnoses, BodyFormat::Table(f)) => {
                (tables::diagnoses::parse(f, &body, &mut problems), f.as_str())
            }
            (_, BodyFormat::Vcf) => unreachable!("VCF is only accepted for variants"),
        };
        problems.check_patients(&parsed);
        Ok((parsed, problems, name))
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("import parser panicked: {e}")))?
    .map_err(|e| refused_shape(kind, &e))?;

    if !problems.is_empty() {
        let total = problems.total();
        let listed = if total > tables::MAX_PROBLEMS {
            format!(" (the first {} are listed)", tables::MAX_PROBLEMS)
        } else {
            String::new()
        };
        let noun = if total == 1 { "problem" } else { "problems" };
        return Err(ApiError::Invalid {
            code: "invalid-import",
            message: format!("the {} import has {total} {noun}{listed}; nothing was imported", kind.as_str()),
            problems: problems.into_list(),
        });
    }
    let context = tables::db::Context {
        kind,
        format: format_name,
        cohort_id: cohort.id,
        cohort: &cohort.slug,
        site_id: site.id,
        site: &site.code,
        actor: &principal.username,
        key: &state.ingest.key,
        issuer: query.issuer_of_patient_id.as_deref(),
        max_shift_days: state.ingest.max_shift_days,
    };
    let mut tx = state.db.begin().await?;
    let report = tables::db::write(&mut tx, &context, parsed).await?;
    tx.commit().await?;
    Ok(report)
}

/// Why a table body was refused while it was read.
enum ReadError {
    TooLarge,
    Unreadable,
    Shape(ShapeError),
}

/// The body of a table import, read as it arrives within `limit` bytes; a
/// plain-text body is checked by `guard` on the way, so a hostile line is
/// refused once it passes its limit (a gzip body is checked as it expands).
async fn read_table(
    body: Body,
    limit: usize,
    hint: Option<u64>,
    mut guard: Option<ShapeGuard>,
) -> Result<bytes::Bytes, ReadError> {
    use http_body_util::BodyExt;
    let mut body = body;
    // One buffer, each chunk copied in as it comes and then let go (a body
    // read whole by the NUL check arrives as one chunk and is not copied).
    let mut first: Option<bytes::Bytes> = None;
    let mut data: Vec<u8> = Vec::new();
    // Whether the body is gzip is known from its first two bytes.
    let mut gzip = None;
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame.map_err(|_| ReadError::Unreadable)?.into_data() else { continue };
        let before = first.as_ref().map_or(data.len(), bytes::Bytes::len);
        if before + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        if let Some(held) = first.take() {
            data = Vec::with_capacity(hint.and_then(|h| usize::try_from(h).ok()).unwrap_or(0).clamp(0, limit));
            data.extend_from_slice(&held);
        }
        if before == 0 && data.is_empty() {
            first = Some(chunk.clone());
        } else {
            data.extend_from_slice(&chunk);
        }
        let so_far: &[u8] = first.as_deref().unwrap_or(&data);
        let unchecked = match gzip {
            Some(_) => &so_far[before..],
            None if so_far.len() >= 2 => {
                gzip = Some(is_gzip(&so_far[..2]));
                so_far
            }
            None => continue,
        };
        if let Some(guard) = guard.as_mut().filter(|_| gzip == Some(false)) {
            guard.feed(unchecked).map_err(ReadError::Shape)?;
        }
    }
    let whole = first.unwrap_or_else(|| data.into());
    if let Some(guard) = guard.as_mut().filter(|_| gzip.is_none()) {
        guard.feed(&whole).map_err(ReadError::Shape)?;
    }
    Ok(whole)
}

/// The answer to a table refused for its shape (or size) before it was parsed.
fn refused_shape(kind: ImportKind, error: &ShapeError) -> ApiError {
    ApiError::Invalid {
        code: error.code(),
        message: format!("{error}; nothing of the {} import was stored", kind.as_str()),
        problems: vec![Problem {
            row: Some(error.line()),
            column: None,
            path: None,
            code: error.code(),
            message: error.to_string(),
        }],
    }
}
