//! Upload sessions over REST: open, add files, commit (or abort), read the report.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{AppJson, AppPath};
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ErrorBody, Result};
use crate::ingest::sessions::{self, Session};
use crate::ingest::{Counts, FileReport, Received, archive};
use crate::openapi::tags;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_upload))
        .routes(routes!(find_upload, abort_upload))
        .routes(routes!(add_upload_files))
        .routes(routes!(commit_upload))
        // Upload bodies are limited by `ingest.*`, enforced while streaming.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

const UPLOADERS: &[Role] = &[Role::Uploader, Role::Admin];

/// A new upload session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUploadRequest {
    /// Cohort slug the data joins (default `default`).
    #[serde(default = "default_cohort")]
    #[schema(max_length = 64)]
    pub cohort: String,
    /// Site code the data comes from (default `local`).
    #[serde(default = "default_site")]
    #[schema(max_length = 64)]
    pub site: String,
}

fn default_cohort() -> String {
    "default".into()
}

fn default_site() -> String {
    "local".into()
}

/// A session with its per-file report.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadResponse {
    #[serde(flatten)]
    pub session: Session,
    pub counts: Counts,
    pub files: Vec<FileReport>,
}

/// The reports of the files of one request.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadFilesResponse {
    pub counts: Counts,
    pub files: Vec<FileReport>,
}

/// The outcome of a commit.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommitResponse {
    #[serde(flatten)]
    pub session: Session,
    /// Instances made visible by this commit.
    pub published: i64,
    pub counts: Counts,
}

async fn load_session(state: &AppState, principal: &Principal, id: Uuid, write: bool) -> Result<Session> {
    let session = sessions::get_session(&state.db, id).await?.ok_or(ApiError::NotFound("upload session"))?;
    let own = session.created_by == principal.username;
    let allowed = own || principal.has_role(Role::Admin) || (!write && principal.has_role(Role::Steward));
    if !allowed {
        // Other people's sessions are as invisible as missing ones.
        return Err(ApiError::NotFound("upload session"));
    }
    Ok(session)
}

/// Open an upload session for a cohort and a site.
#[utoipa::path(
    post,
    path = "/uploads",
    tag = tags::INGEST,
    security(("bearer" = ["admin"]), ("bearer" = ["uploader"])),
    request_body = CreateUploadRequest,
    responses(
        (status = 201, description = "The open session", body = Session),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn create_upload(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(request): AppJson<CreateUploadRequest>,
) -> Result<(StatusCode, AppJson<Session>)> {
    Ok((StatusCode::CREATED, AppJson(open(&state, &principal, &request.cohort, &request.site).await?)))
}

/// Opens an upload session for `cohort` and `site` (uploaders, admins).
pub async fn open(state: &AppState, principal: &Principal, cohort: &str, site: &str) -> Result<Session> {
    principal.require_any(UPLOADERS)?;
    state
        .ingest
        .open_session(&principal.username, cohort, site, &json!({}))
        .await?
        .ok_or_else(|| ApiError::BadRequest(format!("no cohort `{cohort}` with a site `{site}`")))
}

/// The upload sessions `principal` may see, newest first: their own, or
/// every one for admins and stewards (who read sessions, as [`report`] lets them).
pub async fn visible(state: &AppState, principal: &Principal) -> Result<Vec<Session>> {
    let everyone = principal.has_role(Role::Admin) || principal.has_role(Role::Steward);
    if !everyone && !principal.has_role(Role::Uploader) {
        return Err(ApiError::Forbidden("upload sessions are for uploaders, stewards and admins".into()));
    }
    Ok(sessions::list_sessions(&state.db, (!everyone).then_some(principal.username.as_str())).await?)
}

/// A session with its per-file report, for its uploader, admins and stewards.
pub async fn report(state: &AppState, principal: &Principal, id: Uuid) -> Result<UploadResponse> {
    let session = load_session(state, principal, id, false).await?;
    let files = sessions::list_file_reports(&state.db, id).await?;
    Ok(UploadResponse { session, counts: Counts::of(&files), files })
}

/// Adds the files of a request body to an open session of `principal`'s.
pub async fn add_files(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    headers: &HeaderMap,
    body: Body,
) -> Result<UploadFilesResponse> {
    let session = load_session(state, principal, id, true).await?;
    if session.state != "open" {
        return Err(ApiError::Conflict(format!("the upload session is {}, not open", session.state)));
    }
    let files = received_files(state, headers, body).await?;
    let files = state.ingest.ingest_batch(&principal.username, &session.target(), files).await?;
    Ok(UploadFilesResponse { counts: Counts::of(&files), files })
}

/// Commits (`commit`) or aborts an open session of `principal`'s.
pub async fn close(state: &AppState, principal: &Principal, id: Uuid, commit: bool) -> Result<CommitResponse> {
    load_session(state, principal, id, true).await?;
    let closed = state
        .ingest
        .close_session(&principal.username, id, commit, &json!({}))
        .await?
        .map_err(|s| ApiError::Conflict(format!("the upload session is {s}, not open")))?;
    let (published, counts) = (closed.published, closed.counts);
    let session = sessions::get_session(&state.db, id).await?.ok_or(ApiError::NotFound("upload session"))?;
    Ok(CommitResponse { session, published, counts })
}

/// Get a session and its per-file report.
#[utoipa::path(
    get,
    path = "/uploads/{id}",
    tag = tags::INGEST,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = UploadResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_upload(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<UploadResponse>> {
    Ok(AppJson(report(&state, &principal, id).await?))
}

/// Add files to an open session.
///
/// The body is one Part-10 file (`application/dicom`), a zip archive
/// (`application/zip`), or many files as `multipart/form-data` or
/// `multipart/related` (parts may themselves be zips). Every file is
/// de-identified before anything is written; each gets its own result, and a
/// bad file never affects the others. Nothing becomes visible before commit.
#[utoipa::path(
    post,
    path = "/uploads/{id}/files",
    tag = tags::INGEST,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    request_body(
        description = "A DICOM file, a zip archive, or a multipart batch of either",
        content(
            (crate::openapi::Binary = "application/dicom"),
            (crate::openapi::Binary = "application/zip"),
            (crate::openapi::Binary = "multipart/form-data"),
            (crate::openapi::Binary = "multipart/related"),
        )
    ),
    responses(
        (status = 200, description = "One report per file received", body = UploadFilesResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn add_upload_files(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
    body: Body,
) -> Result<AppJson<UploadFilesResponse>> {
    Ok(AppJson(add_files(&state, &principal, id, &headers, body).await?))
}

/// Commit a session: its stored instances become visible, all at once.
#[utoipa::path(
    post,
    path = "/uploads/{id}/commit",
    tag = tags::INGEST,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "Committed", body = CommitResponse),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn commit_upload(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<CommitResponse>> {
    Ok(AppJson(close(&state, &principal, id, true).await?))
}

/// Abort a session: nothing of it is ever published, its objects are deleted.
#[utoipa::path(
    delete,
    path = "/uploads/{id}",
    tag = tags::INGEST,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Aborted"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn abort_upload(
    State(state): State<AppState>,
    principal: Principal,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode> {
    close(&state, &principal, id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

type Files = BoxStream<'static, Result<Received, ApiError>>;

/// The files of a request body, by content type, with the configured limits.
///
/// Memory: a single file is read into one buffer (no second copy); the files
/// of a multipart batch together hold at most `ingest.max_file_bytes` of
/// received bytes at a time (a part waits while earlier ones are
/// de-identified and written); an archive (up to `ingest.max_request_bytes`)
/// is spooled to disk encrypted ([`crate::ingest::spool`]) and expands one
/// entry at a time.
pub async fn received_files(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Files> {
    let limits = state.ingest.limits.clone();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let hint = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match essence.as_str() {
        "application/dicom" | "application/octet-stream" => {
            let bytes = read_limited(body, limits.max_file_bytes, hint).await?;
            Ok(stream::iter([Ok(Received::File(bytes))]).boxed())
        }
        "application/zip" | "application/x-zip-compressed" => {
            let spool =
                match spool_whole(body.into_data_stream(), limits.max_request_bytes, &state.ingest.spool_dir).await {
                    Ok(Spooled::Spool(spool)) => spool,
                    Ok(Spooled::TooLarge(_)) => return Err(ApiError::PayloadTooLarge),
                    Err(SpoolError::Body(_)) => {
                        return Err(ApiError::BadRequest("the request body could not be read".into()));
                    }
                    Err(SpoolError::Disk(e)) => return Err(spool_failed(&e)),
                };
            let entries = archive::entries(spool, &limits).await.map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Ok(entries.map(|entry| entry.map_err(|e| ApiError::BadRequest(e.to_string()))).boxed())
        }
        "multipart/form-data" | "multipart/related" => {
            let boundary = boundary(content_type)
                .ok_or_else(|| ApiError::BadRequest("the multipart content type has no boundary".into()))?;
            Ok(multipart_files(body, boundary, limits, state.ingest.spool_dir.clone()))
        }
        _ => Err(ApiError::UnsupportedMediaType(
            "send application/dicom, application/zip, multipart/form-data or multipart/related".into(),
        )),
    }
}

/// The `boundary` parameter of a multipart content type (quoted or not).
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        (name.trim().eq_ignore_ascii_case("boundary"))
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

async fn read_limited(body: Body, limit: usize, hint: Option<u64>) -> Result<bytes::Bytes> {
    match read_whole(body.into_data_stream(), limit, hint, None, false).await {
        Ok(Whole::Bytes(bytes)) => Ok(bytes),
        Ok(Whole::TooLarge(_)) => Err(ApiError::PayloadTooLarge),
        Err(_) => Err(ApiError::BadRequest("the request body could not be read".into())),
    }
}

/// What [`read_whole`] read.
enum Whole {
    Bytes(bytes::Bytes),
    /// More than the cap: how many bytes came (all of them when drained).
    TooLarge(usize),
}

/// Bytes that hold their share of a request's budget until dropped.
struct Held {
    data: Vec<u8>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// Reads `chunks` into one buffer of at most `cap` bytes, copying each chunk
/// once as it comes (a chunk is not kept, so nothing of the parser's buffers
/// stays alive), the buffer sized from the declared length when there is one.
/// Past `cap` it stops, or with `drain` reads on to the end and keeps nothing.
/// With a `budget`, every byte kept first takes a permit, released when the
/// returned bytes and every slice of them are dropped.
async fn read_whole<S, E>(
    mut chunks: S,
    cap: usize,
    hint: Option<u64>,
    budget: Option<&std::sync::Arc<tokio::sync::Semaphore>>,
    drain: bool,
) -> std::result::Result<Whole, E>
where
    S: futures::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
{
    let expected = hint.and_then(|h| usize::try_from(h).ok()).unwrap_or(0).min(cap);
    let mut data = Vec::with_capacity(expected);
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut size = 0_usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        size += chunk.len();
        if size > cap {
            if !drain {
                return Ok(Whole::TooLarge(size));
            }
            data = Vec::new();
            permit = None;
            continue;
        }
        if let Some(budget) = budget {
            let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            // The semaphore is never closed, and a part never needs more than all of it.
            if let Ok(more) = std::sync::Arc::clone(budget).acquire_many_owned(n).await {
                match permit.as_mut() {
                    Some(held) => held.merge(more),
                    None => permit = Some(more),
                }
            }
        }
        data.extend_from_slice(&chunk);
    }
    if size > cap {
        return Ok(Whole::TooLarge(size));
    }
    Ok(Whole::Bytes(bytes::Bytes::from_owner(Held { data, _permit: permit })))
}

/// What [`spool_whole`] read.
enum Spooled {
    Spool(crate::ingest::spool::Spool),
    /// More than the cap: how many bytes came (all of them, read to the end).
    TooLarge(usize),
}

enum SpoolError<E> {
    Body(E),
    Disk(std::io::Error),
}

fn spool_failed(error: &std::io::Error) -> ApiError {
    tracing::error!(error = %error, "spooling an archive");
    ApiError::Internal(anyhow::anyhow!("the archive could not be spooled"))
}

/// Writes `chunks` (at most `cap` bytes; past it, read to the end and kept
/// nowhere) into an encrypted spool in `dir`, a megabyte at a time on a
/// blocking thread.
async fn spool_whole<S, E>(
    mut chunks: S,
    cap: usize,
    dir: &std::path::Path,
) -> std::result::Result<Spooled, SpoolError<E>>
where
    S: futures::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
{
    const BATCH: usize = 1024 * 1024;
    let dir = dir.to_path_buf();
    let mut writer = tokio::task::spawn_blocking(move || crate::ingest::spool::SpoolWriter::create(&dir))
        .await
        .map_err(|e| SpoolError::Disk(std::io::Error::other(e)))?
        .map_err(SpoolError::Disk)?;
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    let mut batched = 0;
    let mut size = 0_usize;
    let flush = async |writer: crate::ingest::spool::SpoolWriter, batch: Vec<bytes::Bytes>| {
        tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            batch.iter().try_for_each(|chunk| writer.write(chunk)).map(|()| writer)
        })
        .await
        .map_err(|e| SpoolError::Disk(std::io::Error::other(e)))?
        .map_err(SpoolError::Disk)
    };
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(SpoolError::Body)?;
        size += chunk.len();
        if size > cap {
            batch.clear();
            continue;
        }
        batched += chunk.len();
        batch.push(chunk);
        if batched >= BATCH {
            writer = flush(writer, std::mem::take(&mut batch)).await?;
            batched = 0;
        }
    }
    if size > cap {
        return Ok(Spooled::TooLarge(size));
    }
    let writer = flush(writer, batch).await?;
    let spool = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| SpoolError::Disk(std::io::Error::other(e)))?
        .map_err(SpoolError::Disk)?;
    Ok(Spooled::Spool(spool))
}

/// Streams the parts of a multipart body, one file at a time; zip parts expand
/// one entry at a time. An archive that expands beyond its limit while being
/// read (its sizes lied) ends the request: its earlier entries are already
/// de-identified, and the batch must not record them without the rest.
fn multipart_files(
    body: Body,
    boundary: String,
    limits: crate::config::IngestConfig,
    spool_dir: std::path::PathBuf,
) -> Files {
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limits.max_request_bytes as u64));
    let multipart = multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    // The received bytes of the batch's files held at once, across parts.
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_file_bytes));
    stream::unfold(Some((multipart, limits, budget, spool_dir, 0_usize)), |state| async move {
        let (mut multipart, limits, budget, spool_dir, part) = state?;
        let part = part + 1;
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return None,
            Err(e) => return Some((one(Err(multipart_error(&e))), None)),
        };
        let is_zip = field
            .content_type()
            .is_some_and(|m| m.essence_str() == "application/zip" || m.essence_str() == "application/x-zip-compressed");
        let too_large = |size: usize, cap: usize| {
            one(Ok(Received::Unreadable {
                size,
                code: "file-too-large",
                message: format!("the part is larger than the limit of {cap} bytes"),
            }))
        };
        let items = if is_zip {
            // An archive is held whole (its directory is at its end): spooled, encrypted.
            match spool_whole(field, limits.max_request_bytes, &spool_dir).await {
                Err(SpoolError::Body(e)) => return Some((one(Err(multipart_error(&e))), None)),
                Err(SpoolError::Disk(e)) => return Some((one(Err(spool_failed(&e))), None)),
                Ok(Spooled::TooLarge(size)) => too_large(size, limits.max_request_bytes),
                Ok(Spooled::Spool(spool)) => {
                    let size = usize::try_from(spool.len()).unwrap_or(usize::MAX);
                    match archive::entries(spool, &limits).await {
                        Ok(entries) => entries
                            .map(move |entry| {
                                entry.map_err(|e| ApiError::BadRequest(format!("multipart part {part}: {e}")))
                            })
                            .boxed(),
                        Err(e) => {
                            one(Ok(Received::Unreadable { size, code: "invalid-archive", message: e.to_string() }))
                        }
                    }
                }
            }
        } else {
            match read_whole(field, limits.max_file_bytes, None, Some(&budget), true).await {
                Err(e) => return Some((one(Err(multipart_error(&e))), None)),
                Ok(Whole::TooLarge(size)) => too_large(size, limits.max_file_bytes),
                Ok(Whole::Bytes(bytes)) => one(Ok(Received::File(bytes))),
            }
        };
        Some((items, Some((multipart, limits, budget, spool_dir, part))))
    })
    .flatten()
    .boxed()
}

/// A stream of one item.
fn one(item: Result<Received, ApiError>) -> Files {
    stream::iter([item]).boxed()
}

pub(crate) fn multipart_error(error: &multer::Error) -> ApiError {
    match error {
        multer::Error::StreamSizeExceeded { .. } => ApiError::PayloadTooLarge,
        _ => ApiError::BadRequest("the multipart body is malformed or was cut off".into()),
    }
}
