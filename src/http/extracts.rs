//! Releases over REST: asking for one, following its build, and downloading
//! its signed manifest and files.
//!
//! Downloads stream from the object store whatever the file's size, with one
//! `Range` per request (`206`; `416` beyond the end), the file's SHA-256 as
//! its strong `ETag` (`If-None-Match` gives `304`, `If-Range` resumes only the
//! same content) and its media type. The grant is checked on every request,
//! each range included: a suspended or revoked grant, an expired one or a
//! closed project refuses the next request with the usual refusal codes.
//! Bytes actually sent are counted per file, user (an anonymous visitor by a
//! keyed hash of their address, [`crate::release::downloaders`]), download
//! session (the client's `X-Download-Session` header) and day, and audited
//! once a download starts and once it completes
//! ([`crate::release::extracts::record`]). A
//! project runs at most `release.max_concurrent_downloads` downloads at once
//! on a node, and makes at most `release.max_requests_per_minute` requests
//! ([`crate::release::limits`]); past either, `429` with `Retry-After`.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::Stream;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::client_ip::ClientIp;
use super::extract::{AppJson, AppPath, AppQuery};
use crate::access::standing::{InProject, standing};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags;
use crate::release::extracts::{self, Extract, Served};
use crate::release::limits;
use crate::release::manifest::{MANIFEST_FILE, SIGNATURE_FILE};
use crate::release::{archive, build, downloaders};

/// The header naming a download session (1 to 64 of `A-Z a-z 0-9 . _ -`).
pub const SESSION_HEADER: &str = "x-download-session";

pub fn router() -> OpenApiRouter<AppState> {
    let files = super::catch_all("/extracts/{id}/files/{*path}", routes!(download_file));
    OpenApiRouter::new()
        .routes(routes!(request_extract, list_extracts))
        .routes(routes!(find_extract))
        .routes(routes!(download_manifest))
        .routes(routes!(download_signature))
        .routes(routes!(download_archive))
        .merge(files)
}

/// What to release.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExtract {
    /// The grant whose scope to release (default: the project's grant in force).
    pub grant_id: Option<Uuid>,
}

/// A project's releases.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExtractList {
    /// Newest first.
    pub extracts: Vec<Extract>,
}

/// Ask for a release of the project (accepted members, grant in force).
///
/// Answers at once with the release `queued`; a worker builds it from the
/// grant's scope as it stands then, and it becomes `ready` only once every
/// file and the signed manifest are written.
#[utoipa::path(
    post,
    path = "/projects/{id}/extracts",
    tag = tags::RELEASES,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    request_body = NewExtract,
    responses(
        (status = 202, description = "Queued", body = Extract),
        (status = 403, description = "Not a member, or no grant in force; the code says why", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn request_extract(
    State(state): State<AppState>,
    caller: InProject,
    AppJson(body): AppJson<NewExtract>,
) -> Result<(StatusCode, AppJson<Extract>)> {
    let extract = extracts::request(
        &state.db,
        &state.config.access,
        caller.project_id,
        &caller.principal,
        caller.standing,
        body.grant_id,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, AppJson(extract)))
}

/// List a project's releases (members, stewards and admins).
#[utoipa::path(
    get,
    path = "/projects/{id}/extracts",
    tag = tags::RELEASES,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "Releases, newest first", body = ExtractList),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn list_extracts(State(state): State<AppState>, caller: InProject) -> Result<AppJson<ExtractList>> {
    caller.standing.require_reader("project")?;
    Ok(AppJson(ExtractList { extracts: extracts::of_project(&state.db, caller.project_id).await? }))
}

/// A release: its state and progress (members, stewards and admins).
#[utoipa::path(
    get,
    path = "/extracts/{id}",
    tag = tags::RELEASES,
    security((), ("bearer" = [])),
    params(("id" = Uuid, Path, description = "Release id")),
    responses(
        (status = 200, description = "The release", body = Extract),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn find_extract(
    State(state): State<AppState>,
    principal: Option<Principal>,
    AppPath(id): AppPath<Uuid>,
) -> Result<AppJson<Extract>> {
    Ok(AppJson(visible(&state, principal.as_ref(), id).await?))
}

/// The release `id` if `principal` may see it: a project's release by the
/// project's readers (members, stewards, admins), an open cohort's version as
/// [`Extract::open_version_visible`] says; for anyone else it does not exist.
pub async fn visible(state: &AppState, principal: Option<&Principal>, id: Uuid) -> Result<Extract> {
    let extract = extracts::get(&state.db, id).await?.ok_or(ApiError::NotFound("extract"))?;
    match (extract.project_id, principal) {
        (Some(project_id), Some(principal)) => {
            standing(&state.db, project_id, principal).await?.require_reader("extract")?;
        }
        (Some(_), None) => {
            return Err(ApiError::Unauthorized("a project's release is seen by its signed-in members".into()));
        }
        (None, _) => {
            if !extract.open_version_visible(principal) {
                return Err(ApiError::NotFound("extract"));
            }
        }
    }
    Ok(extract)
}

/// Download a release's `manifest.json` (accepted members, grant in force).
///
/// Every file with its path, size, SHA-256 and media type. Its detached
/// Ed25519 signature is `GET /extracts/{id}/manifest.sig`, to verify against
/// the keys at `/.well-known/custodian/release-keys`.
#[utoipa::path(
    get,
    path = "/extracts/{id}/manifest",
    tag = tags::RELEASES,
    security((), ("bearer" = [])),
    params(("id" = Uuid, Path, description = "Release id")),
    responses(
        (status = 200, description = "The exact signed bytes of `manifest.json`", content_type = "application/json",
            headers(("ETag" = String, description = "The manifest's SHA-256"))),
        (status = 304, description = "The manifest is that of `If-None-Match`"),
        (status = 403, description = "No grant in force; the code says why", body = ErrorBody),
        (status = 409, description = "The release is not ready", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn download_manifest(
    State(state): State<AppState>,
    principal: Option<Principal>,
    ClientIp(client): ClientIp,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = Caller { principal: principal.as_ref(), client };
    serve(&state, caller, id, MANIFEST_FILE, &headers).await
}

/// Download the detached signature of a release's manifest (`manifest.json.sig`).
///
/// `{"algorithm": "Ed25519", "key_id": …, "signature": base64}` over the
/// exact bytes `GET /extracts/{id}/manifest` serves.
#[utoipa::path(
    get,
    path = "/extracts/{id}/manifest.sig",
    tag = tags::RELEASES,
    security((), ("bearer" = [])),
    params(("id" = Uuid, Path, description = "Release id")),
    responses(
        (status = 200, description = "The signature document", content_type = "application/json"),
        (status = 403, description = "No grant in force; the code says why", body = ErrorBody),
        (status = 409, description = "The release is not ready", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn download_signature(
    State(state): State<AppState>,
    principal: Option<Principal>,
    ClientIp(client): ClientIp,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = Caller { principal: principal.as_ref(), client };
    serve(&state, caller, id, SIGNATURE_FILE, &headers).await
}

/// Download a file of a release (accepted members, grant in force).
///
/// `path` is the file's path in the manifest (`dicom/…/….dcm`,
/// `tables/subjects.parquet`). One `Range` per request resumes a download:
/// `206` with `Content-Range`, `416` when it starts past the end; a range
/// list is answered whole. The grant is checked on every request.
#[utoipa::path(
    get,
    path = "/extracts/{id}/files/{path}",
    tag = tags::RELEASES,
    security((), ("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Release id"),
        ("path" = String, Path, description = "The file's path in the manifest, slashes included"),
        ("Range" = Option<String>, Header, description = "`bytes=first-last`, `bytes=first-` or `bytes=-suffix`"),
        ("If-Range" = Option<String>, Header, description = "Resume only when the file's ETag is still this one"),
        ("If-None-Match" = Option<String>, Header, description = "`304` when the file's ETag is listed"),
        ("X-Download-Session" = Option<String>, Header, description = "Groups the requests of one download for the audit (1 to 64 of `A-Z a-z 0-9 . _ -`)"),
    ),
    responses(
        (status = 200, description = "The whole file, streamed", content_type = "application/octet-stream",
            headers(("ETag" = String, description = "The file's SHA-256, quoted"),
                    ("Accept-Ranges" = String, description = "`bytes`"))),
        (status = 206, description = "The range asked for", content_type = "application/octet-stream",
            headers(("Content-Range" = String, description = "`bytes first-last/size`"))),
        (status = 304, description = "The file is that of `If-None-Match`"),
        (status = 403, description = "No grant in force; the code says why", body = ErrorBody),
        (status = 409, description = "The release is not ready", body = ErrorBody),
        (status = 416, description = "The range starts past the end; `Content-Range: bytes */size`"),
        (status = 429, description = "The project runs as many downloads as it may", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn download_file(
    State(state): State<AppState>,
    principal: Option<Principal>,
    ClientIp(client): ClientIp,
    AppPath((id, path)): AppPath<(Uuid, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    serve_file(&state, principal.as_ref(), client, id, &path, &headers).await
}

/// Which part of a release to put in an archive.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ArchiveQuery {
    /// Only the files whose path starts with this (e.g. `tables/`); the
    /// manifest and its signature are always included.
    pub prefix: Option<String>,
}

/// Download a whole release, or one folder of it, as a ZIP archive (accepted members, grant in force).
///
/// Streamed as it is read from storage, with its exact `Content-Length`:
/// entries are stored uncompressed under `release-{id}/`, with their CRC-32
/// in data descriptors and ZIP64 where sizes need it. The manifest and its
/// signature are in it, so the unpacked folder verifies like a fetched one.
/// The grant is checked before the first byte and again before each file:
/// a grant suspended or revoked meanwhile cuts the archive short. There is
/// no `Range` on an archive; to resume, use the files (`custodian fetch`).
#[utoipa::path(
    get,
    path = "/extracts/{id}/archive",
    tag = tags::RELEASES,
    security((), ("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Release id"),
        ArchiveQuery,
        ("X-Download-Session" = Option<String>, Header, description = "Groups the requests of one download for the audit (1 to 64 of `A-Z a-z 0-9 . _ -`)"),
    ),
    responses(
        (status = 200, description = "The ZIP archive, streamed", content_type = "application/zip",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"release-{id}.zip\"`"))),
        (status = 403, description = "No grant in force; the code says why", body = ErrorBody),
        (status = 404, description = "No release, or no file under `prefix`", body = ErrorBody),
        (status = 409, description = "The release is not ready", body = ErrorBody),
        (status = 429, description = "The project runs as many downloads as it may", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn download_archive(
    State(state): State<AppState>,
    principal: Option<Principal>,
    ClientIp(client): ClientIp,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<ArchiveQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let session = session(&headers)?;
    let extract = downloadable(&state, principal.as_ref(), id).await?;
    let prefix = query.prefix.unwrap_or_default();
    let root = format!("release-{id}");
    let mut members = Vec::new();
    for path in [MANIFEST_FILE, SIGNATURE_FILE] {
        let key = build::object_key(extract.owner(), id, path);
        let size = state.store.head(&key).await?.size;
        members.push(archive::Member { name: format!("{root}/{path}"), size, key });
    }
    let files = extracts::stored_files(&state.db, id).await?;
    let chosen = files.into_iter().filter(|(path, _)| path.starts_with(&prefix));
    let before = members.len();
    for (path, file) in chosen {
        let size = u64::try_from(file.size).map_err(|_| ApiError::Internal(anyhow::anyhow!("a negative file size")))?;
        let key = object_store::path::Path::from(file.object_key);
        members.push(archive::Member { name: format!("{root}/{path}"), size, key });
    }
    if members.len() == before {
        return Err(ApiError::NotFound("file under that prefix"));
    }
    let archive = archive::Archive::new(members, extract.ready_at.unwrap_or(extract.created_at));
    let size = archive.len();
    let permit = limits::start_download(extract.owner(), &state.config.release)?;
    let gate = {
        let (db, config) = (state.db.clone(), state.config.clone());
        let username = principal.as_ref().map(|p| p.username.clone());
        move || {
            let (db, config, username) = (db.clone(), config.clone(), username.clone());
            async move {
                let grace = config.release.superseded_grace_days;
                let checked = extracts::for_download(&db, &config.access, grace, username.as_deref(), id).await;
                checked.map(|_| ()).map_err(|refused| format!("the archive stopped: {refused}"))
            }
        }
    };
    let stream = archive.stream(state.store.clone(), gate);
    let served = Served {
        target: extract.audit_target(),
        extract_id: id,
        path: if prefix.is_empty() { "archive.zip".to_owned() } else { format!("archive.zip:{prefix}") },
        username: downloaders::downloader(&state.db, principal.as_ref(), client).await?,
        session,
        size: i64::try_from(size).unwrap_or(i64::MAX),
    };
    let body = Counted { inner: stream, sent: 0, db: state.db.clone(), served: Some(served), _permit: permit };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/zip")
        .header(header::CONTENT_LENGTH, size)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"release-{id}.zip\""))
        .header(header::CACHE_CONTROL, "private, no-transform")
        .header(header::ACCEPT_RANGES, "none")
        .body(Body::from_stream(body))
        .map_err(internal)
}

/// The bytes of one range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// Reads a `Range` header against a file of `size` bytes. Anything but one
/// well-formed byte range is answered whole, as RFC 9110 allows.
fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else { return Wanted::Whole };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Wanted::Whole };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => Wanted::Whole,
        (true, false) => match number(last) {
            None => Wanted::Whole,
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if size == 0 => Wanted::Unsatisfiable,
            Some(suffix) => Wanted::Part(size.saturating_sub(suffix), size - 1),
        },
        (false, open) => {
            let Some(start) = number(first) else { return Wanted::Whole };
            let end = if open { Some(u64::MAX) } else { number(last) };
            match end {
                None => Wanted::Whole,
                Some(end) if end < start => Wanted::Whole,
                Some(_) if start >= size => Wanted::Unsatisfiable,
                Some(end) => Wanted::Part(start, end.min(size - 1)),
            }
        }
    }
}

/// Whether an `If-None-Match` / `If-Range` value names `etag`.
fn names(value: Option<&HeaderValue>, etag: &str, weak_ok: bool) -> bool {
    value.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|tag| {
            let tag = tag.trim();
            tag == etag || (weak_ok && (tag == "*" || tag.strip_prefix("W/") == Some(etag)))
        })
    })
}

/// The download session a request names.
pub(crate) fn session(headers: &HeaderMap) -> Result<String> {
    let Some(value) = headers.get(SESSION_HEADER) else { return Ok("-".into()) };
    let value = value.to_str().unwrap_or_default();
    if (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Ok(value.to_owned())
    } else {
        Err(ApiError::BadRequest(format!("`{SESSION_HEADER}` is 1 to 64 of A-Z, a-z, 0-9, `.`, `_` and `-`")))
    }
}

/// The release `id` as `principal` may download from it now: the grant
/// checked (a refusal audited, [`extracts::for_download`]), and the request
/// counted against the project's rate ([`limits::count_request`]). Every
/// path to a release's bytes (files, DRS, presigned URLs, DICOMweb) passes here.
pub async fn downloadable(state: &AppState, principal: Option<&Principal>, id: Uuid) -> Result<Extract> {
    let grace = state.config.release.superseded_grace_days;
    let username = principal.map(|p| p.username.as_str());
    let extract = extracts::for_download(&state.db, &state.config.access, grace, username, id).await?;
    limits::count_request(extract.owner(), &state.config.release)?;
    Ok(extract)
}

/// Serves one file (or the manifest, or its signature) of release `id` to
/// `principal` (none: anonymous) at `client`: the one path every download of
/// a file takes, the web pages' included, with its grant check, limits and
/// byte audit.
pub async fn serve_file(
    state: &AppState,
    principal: Option<&Principal>,
    client: Option<std::net::IpAddr>,
    id: Uuid,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response> {
    serve(state, Caller { principal, client }, id, path, headers).await
}

/// Who asks for a file: the signed-in user (none: anonymous) and the client's address.
#[derive(Clone, Copy)]
struct Caller<'a> {
    principal: Option<&'a Principal>,
    client: Option<std::net::IpAddr>,
}

/// Serves one file (or the manifest, or its signature) of a release.
async fn serve(state: &AppState, caller: Caller<'_>, id: Uuid, path: &str, headers: &HeaderMap) -> Result<Response> {
    let principal = caller.principal;
    let session = session(headers)?;
    let extract = downloadable(state, principal, id).await?;
    let (size, sha256, media_type, key) = if path == MANIFEST_FILE || path == SIGNATURE_FILE {
        let key = build::object_key(extract.owner(), id, path);
        let meta = state.store.head(&key).await?;
        // The manifest's digest is recorded; its signature's is not needed to name it.
        let tag = if path == MANIFEST_FILE {
            extract.manifest_sha256.clone().unwrap_or_default()
        } else {
            format!("{}.sig", extract.manifest_sha256.clone().unwrap_or_default())
        };
        (meta.size, tag, "application/json".to_owned(), key)
    } else {
        let file = extracts::file(&state.db, id, path).await?.ok_or(ApiError::NotFound("file"))?;
        let size = u64::try_from(file.size).map_err(|_| ApiError::Internal(anyhow::anyhow!("a negative file size")))?;
        (size, file.sha256, file.media_type, object_store::path::Path::from(file.object_key))
    };
    let etag = format!("\"{sha256}\"");
    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, no-transform");
    if names(headers.get(header::IF_NONE_MATCH), &etag, true) {
        return response.status(StatusCode::NOT_MODIFIED).body(Body::empty()).map_err(internal);
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // A resume of other content (If-Range no longer matching) gets the whole file.
    let range = if headers.contains_key(header::IF_RANGE) && !names(headers.get(header::IF_RANGE), &etag, false) {
        None
    } else {
        range
    };
    let (status, first, last) = match wanted(range, size) {
        Wanted::Whole => (StatusCode::OK, 0, size),
        Wanted::Part(first, last) => (StatusCode::PARTIAL_CONTENT, first, last + 1),
        Wanted::Unsatisfiable => {
            return response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .map_err(internal);
        }
    };
    let permit = limits::start_download(extract.owner(), &state.config.release)?;
    let stream = if first < last {
        crate::storage::stream(state.store.as_ref(), &key, Some(first..last)).await?
    } else {
        Box::pin(futures::stream::empty()) as BoxStream<'static, object_store::Result<Bytes>>
    };
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(header::CONTENT_RANGE, format!("bytes {first}-{}/{size}", last - 1));
    }
    let served = Served {
        target: extract.audit_target(),
        extract_id: id,
        path: path.to_owned(),
        username: downloaders::downloader(&state.db, principal, caller.client).await?,
        session,
        size: i64::try_from(size).unwrap_or(i64::MAX),
    };
    let body = Counted { inner: stream, sent: 0, db: state.db.clone(), served: Some(served), _permit: permit };
    response
        .status(status)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_LENGTH, last - first)
        .body(Body::from_stream(body))
        .map_err(internal)
}

#[allow(clippy::needless_pass_by_value)] // the shape `map_err` hands over
fn internal(error: axum::http::Error) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("building a download response: {error}"))
}

/// A download's body: counts the bytes that went out and, when the body is
/// done or dropped (the client went away), records them.
struct Counted {
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    sent: u64,
    db: sqlx::PgPool,
    served: Option<Served>,
    _permit: OwnedSemaphorePermit,
}

impl Stream for Counted {
    type Item = object_store::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            self.sent += chunk.len() as u64;
        }
        next
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let (Some(served), Ok(runtime)) = (self.served.take(), tokio::runtime::Handle::try_current()) else { return };
        let (db, sent) = (self.db.clone(), self.sent);
        runtime.spawn(async move {
            if let Err(error) = extracts::record(&db, &served, sent).await {
                tracing::error!(%error, extract = %served.extract_id, "recording the bytes of a download");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_range_is_served_and_anything_else_whole_or_refused() {
        let size = 100;
        for (header, expected) in [
            (None, Wanted::Whole),
            (Some("bytes=0-9"), Wanted::Part(0, 9)),
            (Some("bytes=90-"), Wanted::Part(90, 99)),
            (Some("bytes=90-1000"), Wanted::Part(90, 99)),
            (Some("bytes=-10"), Wanted::Part(90, 99)),
            (Some("bytes=-1000"), Wanted::Part(0, 99)),
            (Some("bytes=100-"), Wanted::Unsatisfiable),
            (Some("bytes=-0"), Wanted::Unsatisfiable),
            (Some("bytes=5-4"), Wanted::Whole),
            (Some("bytes=0-1,5-6"), Wanted::Whole),
            (Some("items=0-1"), Wanted::Whole),
            (Some("bytes=+1-2"), Wanted::Whole),
            (Some("bytes=-"), Wanted::Whole),
        ] {
            assert_eq!(wanted(header, size), expected, "{header:?}");
        }
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable, "an empty file has no byte to send");
    }

    #[test]
    fn if_range_needs_the_strong_etag_and_if_none_match_takes_any_listed() {
        let etag = "\"abc\"";
        let value = |s: &'static str| HeaderValue::from_static(s);
        assert!(names(Some(&value("\"abc\"")), etag, false));
        assert!(!names(Some(&value("W/\"abc\"")), etag, false));
        assert!(names(Some(&value("\"x\", W/\"abc\"")), etag, true));
        assert!(names(Some(&value("*")), etag, true));
        assert!(!names(Some(&value("\"abd\"")), etag, true));
    }
}
