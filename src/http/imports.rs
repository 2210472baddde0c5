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
use crate::ingest::tables::table::Format;
use crate::ingest::tables::{self, ImportKind, ImportReport, Parsed, Problems};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    Table(Format),
    Vcf,
}

fn body_format(kind: ImportKind, headers: &HeaderMap) -> Result<BodyFormat> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default();
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
    principal.require_any(&[Role::Uploader, Role::Admin])?;
    let format = body_format(kind, &headers)?;
    let cohort_slug = query.cohort.unwrap_or_else(|| "default".into());
    let site_code = query.site.unwrap_or_else(|| "local".into());
    let cohort = registry::get_cohort_by_slug(&state.db, &cohort_slug).await?;
    let site = registry::get_site_by_code(&state.db, &site_code).await?;
    let (Some(cohort), Some(site)) = (cohort, site) else {
        return Err(ApiError::BadRequest(format!("no cohort `{cohort_slug}` with a site `{site_code}`")));
    };
    let limit = state.config.ingest.max_table_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge)?;
    let dictionary = dictionary::dictionary(&state.db).await?;

    // Parsing and checking are CPU work: off the async workers.
    let (parsed, problems, format_name) = tokio::task::spawn_blocking(move || {
        let mut problems = Problems::default();
        let body = match tables::variants::gunzip(&body, limit) {
            Ok(body) => body,
            Err(message) => {
                problems.add(None, None, "invalid-gzip", message);
                return (Parsed::default(), problems, "gzip");
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
        (parsed, problems, name)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("import parser panicked: {e}")))?;

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
        max_shift_days: state.ingest.max_shift_days,
    };
    let mut tx = state.db.begin().await?;
    let report = tables::db::write(&mut tx, &context, parsed).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, AppJson(report)))
}
