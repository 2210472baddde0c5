//! DICOMweb over a release (PS3.18): QIDO-RS searches and WADO-RS retrieval
//! of the imaging a project received, so standard viewers and clients
//! (`dicomweb-client`, OHIF) browse it.
//!
//! Two roots serve the same routes: `/dicomweb/projects/{id}` reads the
//! project's latest ready release, `/dicomweb/extracts/{id}` one release by
//! its id (a superseded one during its grace period). Everything is in the
//! project's pseudonyms and UIDs, exactly as the release's files are.
//!
//! - Searches (`…/studies`, `…/series`, `…/instances`, within a study or a
//!   series) answer `application/dicom+json` from the index the build records
//!   ([`crate::release::dicomweb`]). Matching: `PatientID` and `PatientName`
//!   (the project's subject ID; `*` and `?` wildcards), `StudyInstanceUID`,
//!   `SeriesInstanceUID`, `SOPInstanceUID`, `SOPClassUID` (UID lists),
//!   `Modality` / `ModalitiesInStudy`, `StudyDate` (a date or a range
//!   `from-to`, either end open), `SeriesNumber`, `InstanceNumber`, by keyword
//!   or tag; `limit` (default and most 1000), `offset`, `includefield` (a tag,
//!   a keyword, or `all`). Other keys are ignored with a `Warning: 299`, as
//!   PS3.18 §8.3.4.1 asks; `fuzzymatching` is ignored.
//! - Retrieval (`…/studies/{study}`, `…/series/{series}`, `…/instances/{sop}`)
//!   answers `multipart/related; type="application/dicom"`: each part is a
//!   release file byte for byte (as stored, whatever transfer syntax the
//!   `Accept` header names), streamed from the object store one after the other.
//! - Metadata (`…/metadata` at each level) answers an `application/dicom+json`
//!   array, one object per instance, read from each file's header; bulk data
//!   (Pixel Data, binary values over 1 KiB) is left out.
//!
//! Every request passes the grant check and the state check of file downloads
//! ([`extracts::for_download`]), refusals audited alike. Instance bytes are
//! counted per file, user, session and day as file downloads are
//! ([`extracts::record`]); searches and metadata are counted under the
//! paths `dicomweb:search` and `dicomweb:metadata`. Retrievals share the
//! project's download limit (`429 too-many-downloads`).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use dicom_core::Tag;
use dicom_core::dictionary::DataDictionary as _;
use dicom_dictionary_std::{StandardDataDictionary, tags};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use object_store::{GetOptions, GetRange};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::AppPath;
use super::extracts::session;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Result};
use crate::openapi::tags as api_tags;
use crate::release::dicomweb::{
    self as index, INSTANCE_ATTRIBUTES, Matching, Page, SERIES_ATTRIBUTES, STUDY_ATTRIBUTES, attribute, pick, tag_key,
};
use crate::release::extracts::{self, Extract, ExtractState, Served};
use crate::release::limits;

const PROJECT_ROOT: &str = "/dicomweb/projects/";
const EXTRACT_ROOT: &str = "/dicomweb/extracts/";
const DICOM_JSON: &str = "application/dicom+json";
/// The most results one search returns, and the default.
const MAX_LIMIT: i64 = 1000;

/// Every route twice: documented and served under `/dicomweb/projects/{id}`,
/// and the same handler under `/dicomweb/extracts/{id}` (its own operation id).
pub fn router() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new();
    for (schemas, paths, method_router) in [
        routes!(search_studies),
        routes!(search_series),
        routes!(search_instances),
        routes!(search_study_series),
        routes!(search_study_instances),
        routes!(search_series_instances),
        routes!(retrieve_study),
        routes!(retrieve_series),
        routes!(retrieve_instance),
        routes!(retrieve_study_metadata),
        routes!(retrieve_series_metadata),
        routes!(retrieve_instance_metadata),
    ] {
        let mut served = OpenApiRouter::new();
        let mut documented = Vec::new();
        for (path, item) in paths.paths {
            let of_extract = path.replacen(PROJECT_ROOT, EXTRACT_ROOT, 1);
            served = served.route(&path, method_router.clone()).route(&of_extract, method_router.clone());
            documented.push((of_extract, for_extract(item.clone())));
            documented.push((path, item));
        }
        let openapi = served.get_openapi_mut();
        openapi.paths.paths.extend(documented);
        openapi.components.get_or_insert_with(utoipa::openapi::Components::new).schemas.extend(schemas);
        router = router.merge(served);
    }
    router
}

/// The documentation of a route under `/dicomweb/extracts/{id}`.
fn for_extract(mut item: PathItem) -> PathItem {
    let operation: Option<&mut Operation> = item.get.as_mut();
    if let Some(operation) = operation {
        operation.operation_id = operation.operation_id.take().map(|id| format!("{id}_of_release"));
        operation.summary = operation.summary.take().map(|s| format!("{s} (one release)"));
        for parameter in operation.parameters.iter_mut().flatten() {
            if let utoipa::openapi::RefOr::T(parameter) = parameter
                && parameter.name == "id"
            {
                parameter.description = Some("Release id".into());
            }
        }
    }
    item
}

/// The matching keys a search understands (documentation: the handlers read the raw query).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read through `RawQuery`; this type documents it
pub struct SearchQuery {
    /// The project's subject ID; `*` and `?` wildcards. `PatientName` matches the same.
    #[serde(rename = "PatientID")]
    patient_id: Option<String>,
    /// Study Instance UIDs (project UIDs), comma-separated.
    #[serde(rename = "StudyInstanceUID")]
    study_instance_uid: Option<String>,
    /// Series Instance UIDs, comma-separated.
    #[serde(rename = "SeriesInstanceUID")]
    series_instance_uid: Option<String>,
    /// SOP Instance UIDs, comma-separated.
    #[serde(rename = "SOPInstanceUID")]
    sop_instance_uid: Option<String>,
    /// Modalities, comma-separated (`ModalitiesInStudy` matches the same).
    #[serde(rename = "Modality")]
    modality: Option<String>,
    /// `YYYYMMDD`, or a range `YYYYMMDD-YYYYMMDD` with either end open.
    #[serde(rename = "StudyDate")]
    study_date: Option<String>,
    /// Attributes to add to each result (tag or keyword), or `all`; repeatable or comma-separated.
    includefield: Option<String>,
    /// At most this many results (1 to 1000; default 1000).
    limit: Option<i64>,
    /// Results to skip.
    offset: Option<i64>,
}

/// Search the release's studies (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies", tag = api_tags::DICOMWEB,
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "Project id"), SearchQuery),
    responses(
        (status = 200, description = "Matching studies, DICOM JSON", content_type = "application/dicom+json",
            headers(("Warning" = String, description = "`299`: matching keys that were ignored"))),
        (status = 403, description = "No grant in force; the code says why", body = ErrorBody),
        (status = 409, description = "The release is not ready", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn search_studies(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    search(&state, &asked, Level::Study).await
}

/// Search the release's series (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/series", tag = api_tags::DICOMWEB,
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "Project id"), SearchQuery),
    responses(
        (status = 200, description = "Matching series, DICOM JSON", content_type = "application/dicom+json"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn search_series(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    search(&state, &asked, Level::Series).await
}

/// Search the release's instances (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/instances", tag = api_tags::DICOMWEB,
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "Project id"), SearchQuery),
    responses(
        (status = 200, description = "Matching instances, DICOM JSON", content_type = "application/dicom+json"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn search_instances(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    search(&state, &asked, Level::Instance).await
}

/// Search the series of a study (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies/{study}/series", tag = api_tags::DICOMWEB,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"),
           ("study" = String, Path, description = "Study Instance UID (the project's)"), SearchQuery),
    responses(
        (status = 200, description = "Matching series, DICOM JSON", content_type = "application/dicom+json"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn search_study_series(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    search(&state, &asked, Level::Series).await
}

/// Search the instances of a study (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies/{study}/instances", tag = api_tags::DICOMWEB,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"),
           ("study" = String, Path, description = "Study Instance UID (the project's)"), SearchQuery),
    responses(
        (status = 200, description = "Matching instances, DICOM JSON", content_type = "application/dicom+json"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn search_study_instances(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    search(&state, &asked, Level::Instance).await
}

/// Search the instances of a series (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies/{study}/series/{series}/instances",
    tag = api_tags::DICOMWEB, security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"),
           ("study" = String, Path, description = "Study Instance UID (the project's)"),
           ("series" = String, Path, description = "Series Instance UID (the project's)"), SearchQuery),
    responses(
        (status = 200, description = "Matching instances, DICOM JSON", content_type = "application/dicom+json"),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn search_series_instances(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    search(&state, &asked, Level::Instance).await
}

/// Retrieve a study's instances (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies/{study}", tag = api_tags::DICOMWEB,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"),
           ("study" = String, Path, description = "Study Instance UID (the project's)")),
    responses(
        (status = 200, description = "Every instance of the study, each part a release file",
            content_type = "multipart/related"),
        (status = 403, description = "No grant in force; the code says why", body = ErrorBody),
        (status = 404, description = "No such study in the release", body = ErrorBody),
        (status = 429, description = "The project runs as many downloads as it may", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn retrieve_study(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    retrieve(&state, &asked).await
}

/// Retrieve a series' instances (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies/{study}/series/{series}", tag = api_tags::DICOMWEB,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"),
           ("study" = String, Path, description = "Study Instance UID (the project's)"),
           ("series" = String, Path, description = "Series Instance UID (the project's)")),
    responses(
        (status = 200, description = "Every instance of the series, each part a release file",
            content_type = "multipart/related"),
        (status = 404, description = "No such series in the release", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn retrieve_series(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    retrieve(&state, &asked).await
}

/// Retrieve one instance (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies/{study}/series/{series}/instances/{sop}",
    tag = api_tags::DICOMWEB, security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"),
           ("study" = String, Path, description = "Study Instance UID (the project's)"),
           ("series" = String, Path, description = "Series Instance UID (the project's)"),
           ("sop" = String, Path, description = "SOP Instance UID (the project's)")),
    responses(
        (status = 200, description = "The instance, one part: its release file", content_type = "multipart/related"),
        (status = 404, description = "No such instance in the release", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn retrieve_instance(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    retrieve(&state, &asked).await
}

/// Retrieve a study's metadata (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies/{study}/metadata", tag = api_tags::DICOMWEB,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"),
           ("study" = String, Path, description = "Study Instance UID (the project's)")),
    responses(
        (status = 200, description = "One DICOM JSON object per instance, bulk data left out",
            content_type = "application/dicom+json"),
        (status = 404, description = "No such study in the release", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn retrieve_study_metadata(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    metadata(&state, &asked).await
}

/// Retrieve a series' metadata (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies/{study}/series/{series}/metadata",
    tag = api_tags::DICOMWEB, security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"),
           ("study" = String, Path, description = "Study Instance UID (the project's)"),
           ("series" = String, Path, description = "Series Instance UID (the project's)")),
    responses(
        (status = 200, description = "One DICOM JSON object per instance, bulk data left out",
            content_type = "application/dicom+json"),
        (status = 404, description = "No such series in the release", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn retrieve_series_metadata(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    metadata(&state, &asked).await
}

/// Retrieve one instance's metadata (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/projects/{id}/studies/{study}/series/{series}/instances/{sop}/metadata",
    tag = api_tags::DICOMWEB, security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Project id"),
           ("study" = String, Path, description = "Study Instance UID (the project's)"),
           ("series" = String, Path, description = "Series Instance UID (the project's)"),
           ("sop" = String, Path, description = "SOP Instance UID (the project's)")),
    responses(
        (status = 200, description = "One DICOM JSON object, bulk data left out",
            content_type = "application/dicom+json"),
        (status = 404, description = "No such instance in the release", body = ErrorBody),
        (status = "4XX", description = "Client error", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    ))]
pub async fn retrieve_instance_metadata(State(state): State<AppState>, asked: Asked) -> Result<Response> {
    metadata(&state, &asked).await
}

/// One DICOMweb request: who asks, which release its path names (a project's
/// latest, or one by id), the UIDs in its path, its headers and query.
pub struct Asked {
    principal: Principal,
    /// Whether `id` names a release rather than a project.
    of_extract: bool,
    id: Uuid,
    uids: Uids,
    headers: HeaderMap,
    query: Option<String>,
}

impl FromRequestParts<AppState> for Asked {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let AppPath(mut params) = AppPath::<HashMap<String, String>>::from_request_parts(parts, state).await?;
        let id = params
            .get("id")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| ApiError::InvalidPath("`id` is a UUID".into()))?;
        let of_extract = parts.extensions.get::<MatchedPath>().is_some_and(|m| m.as_str().starts_with(EXTRACT_ROOT));
        let uids = Uids { study: params.remove("study"), series: params.remove("series"), sop: params.remove("sop") };
        Ok(Self {
            principal,
            of_extract,
            id,
            uids,
            headers: parts.headers.clone(),
            query: parts.uri.query().map(str::to_owned),
        })
    }
}

impl Asked {
    /// The DICOMweb root of the request, absolute when the request names its host.
    fn root(&self) -> String {
        let root = if self.of_extract { EXTRACT_ROOT } else { PROJECT_ROOT };
        let host = self
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)));
        let https = self.headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes() == b"https");
        match host {
            Some(host) => format!("{}://{host}{root}{}", if https { "https" } else { "http" }, self.id),
            None => format!("{root}{}", self.id),
        }
    }
}

/// A release opened for one request, its grant checked.
struct Opened {
    extract: Extract,
    root: String,
    username: String,
    session: String,
}

impl Opened {
    fn served(&self, path: &str, size: i64) -> Served {
        Served {
            target: self.extract.audit_target(),
            extract_id: self.extract.id,
            path: path.to_owned(),
            username: self.username.clone(),
            session: self.session.clone(),
            size,
        }
    }
}

/// The release a request names, if its caller may download it now: the
/// project's latest ready release (or its latest, for the right refusal), or
/// the one named; checked as every file download is.
async fn open(state: &AppState, asked: &Asked) -> Result<Opened> {
    let session = session(&asked.headers)?;
    let extract_id = if asked.of_extract {
        asked.id
    } else {
        let releases = extracts::of_project(&state.db, asked.id).await?;
        releases
            .iter()
            .find(|e| e.state == ExtractState::Ready)
            .or_else(|| releases.first())
            .map(|e| e.id)
            .ok_or(ApiError::NotFound("release"))?
    };
    let extract = super::extracts::downloadable(state, Some(&asked.principal), extract_id).await?;
    Ok(Opened { extract, root: asked.root(), username: asked.principal.username.clone(), session })
}

/// What a search returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Study,
    Series,
    Instance,
}

/// The attributes `includefield` adds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Include {
    All,
    Tags(Vec<Tag>),
}

/// A search's query, read.
#[derive(Debug)]
struct Search {
    matching: Matching,
    page: Page,
    include: Include,
    /// Keys that were not understood, for the `Warning` header.
    ignored: Vec<String>,
}

/// A tag named by keyword (`PatientID`) or as `GGGGEEEE` / `(GGGG,EEEE)`.
fn parse_tag(key: &str) -> Option<Tag> {
    if key.len() == 8 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(&key[..4], 16).ok()?;
        let element = u16::from_str_radix(&key[4..], 16).ok()?;
        return Some(Tag(group, element));
    }
    StandardDataDictionary.parse_tag(key)
}

fn uid_list(value: &str) -> Vec<String> {
    value.split([',', '\\']).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

fn is_date(value: &str) -> bool {
    value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit())
}

fn invalid(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

/// Reads a QIDO-RS query string.
fn read_search(query: Option<&str>) -> Result<Search> {
    let mut search = Search {
        matching: Matching::default(),
        page: Page { limit: MAX_LIMIT, offset: 0 },
        include: Include::Tags(Vec::new()),
        ignored: Vec::new(),
    };
    let number = |key: &str, value: &str| {
        value.parse::<i64>().map_err(|_| invalid(format!("`{key}` is a whole number, not `{value}`")))
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = value.trim();
        match key.as_ref() {
            "limit" => {
                let limit = number("limit", value)?;
                if !(1..=MAX_LIMIT).contains(&limit) {
                    return Err(invalid(format!("`limit` is 1 to {MAX_LIMIT}")));
                }
                search.page.limit = limit;
            }
            "offset" => {
                search.page.offset = number("offset", value)?;
                if search.page.offset < 0 {
                    return Err(invalid("`offset` is 0 or more".into()));
                }
            }
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    match (&mut search.include, field) {
                        (include, "all") => *include = Include::All,
                        (Include::Tags(tags), field) => tags.push(
                            parse_tag(field)
                                .ok_or_else(|| invalid(format!("`includefield` names no attribute: `{field}`")))?,
                        ),
                        (Include::All, _) => {}
                    }
                }
            }
            "fuzzymatching" => {}
            _ if value.is_empty() => {} // universal matching
            key => match_key(&mut search, key, value)?,
        }
    }
    Ok(search)
}

/// Reads one matching key into `search` (or notes it ignored).
fn match_key(search: &mut Search, key: &str, value: &str) -> Result<()> {
    let m = &mut search.matching;
    match parse_tag(key) {
        Some(tags::PATIENT_ID | tags::PATIENT_NAME) => m.patient = Some(index::like_pattern(value)),
        Some(tags::STUDY_INSTANCE_UID) => m.study_uids = Some(uid_list(value)),
        Some(tags::SERIES_INSTANCE_UID) => m.series_uids = Some(uid_list(value)),
        Some(tags::SOP_INSTANCE_UID) => m.sop_uids = Some(uid_list(value)),
        Some(tags::SOP_CLASS_UID) => m.sop_class_uids = Some(uid_list(value)),
        Some(tags::MODALITY | tags::MODALITIES_IN_STUDY) => m.modalities = Some(uid_list(value)),
        Some(tags::STUDY_DATE) => {
            let (from, to) = value.split_once('-').unwrap_or((value, value));
            let bound = |d: &str| (!d.is_empty()).then(|| d.to_owned());
            if !(from.is_empty() || is_date(from))
                || !(to.is_empty() || is_date(to))
                || (from.is_empty() && to.is_empty())
            {
                return Err(invalid(format!(
                    "`StudyDate` is YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end open), not `{value}`"
                )));
            }
            (m.study_date_from, m.study_date_to) = (bound(from), bound(to));
        }
        Some(tags::SERIES_NUMBER) => m.series_number = Some(whole(key, value)?),
        Some(tags::INSTANCE_NUMBER) => m.instance_number = Some(whole(key, value)?),
        _ => search.ignored.push(key.chars().filter(char::is_ascii_alphanumeric).take(64).collect()),
    }
    Ok(())
}

fn whole(key: &str, value: &str) -> Result<i32> {
    value.parse().map_err(|_| invalid(format!("`{key}` is a whole number, not `{value}`")))
}

/// One QIDO-RS search.
async fn search(state: &AppState, asked: &Asked, level: Level) -> Result<Response> {
    let opened = open(state, asked).await?;
    let mut search = read_search(asked.query.as_deref())?;
    // A path's study and series narrow what the query asks.
    if let Some(study) = &asked.uids.study {
        search.matching.study_uids = Some(vec![study.clone()]);
    }
    if let Some(series) = &asked.uids.series {
        search.matching.series_uids = Some(vec![series.clone()]);
    }
    let (db, id, m, page, root) = (&state.db, opened.extract.id, &search.matching, search.page, &opened.root);
    let extra = |attributes: &Value, out: &mut Map<String, Value>| match &search.include {
        Include::All => out.extend(attributes.as_object().cloned().unwrap_or_default()),
        Include::Tags(tags) => out.extend(pick(attributes, tags.iter().copied())),
    };
    let mut found = Vec::new();
    match level {
        Level::Study => {
            for study in index::studies(db, id, m, page).await? {
                let mut out = pick(&study.attributes, STUDY_ATTRIBUTES.iter().copied());
                extra(&study.attributes, &mut out);
                let url = format!("{root}/studies/{}", study.study_uid);
                out.insert(
                    tag_key(tags::MODALITIES_IN_STUDY),
                    attribute("CS", study.modalities.into_iter().map(Value::from)),
                );
                out.insert(tag_key(tags::NUMBER_OF_STUDY_RELATED_SERIES), attribute("IS", [study.series.into()]));
                out.insert(tag_key(tags::NUMBER_OF_STUDY_RELATED_INSTANCES), attribute("IS", [study.instances.into()]));
                found.push(located(out, &url));
            }
        }
        Level::Series => {
            for series in index::series(db, id, m, page).await? {
                let wanted = SERIES_ATTRIBUTES.iter().copied().chain([tags::STUDY_INSTANCE_UID]);
                let mut out = pick(&series.attributes, wanted);
                extra(&series.attributes, &mut out);
                let url = format!("{root}/studies/{}/series/{}", series.study_uid, series.series_uid);
                out.insert(
                    tag_key(tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
                    attribute("IS", [series.instances.into()]),
                );
                found.push(located(out, &url));
            }
        }
        Level::Instance => {
            for instance in index::instances(db, id, m, page).await? {
                let wanted =
                    INSTANCE_ATTRIBUTES.iter().copied().chain([tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID]);
                let mut out = pick(&instance.attributes, wanted);
                extra(&instance.attributes, &mut out);
                let url = format!(
                    "{root}/studies/{}/series/{}/instances/{}",
                    instance.study_uid, instance.series_uid, instance.sop_uid
                );
                out.insert(
                    tag_key(tags::AVAILABLE_TRANSFER_SYNTAX_UID),
                    attribute("UI", [instance.transfer_syntax.into()]),
                );
                found.push(located(out, &url));
            }
        }
    }
    let body = serde_json::to_vec(&found).map_err(|e| ApiError::Internal(e.into()))?;
    extracts::record(&state.db, &opened.served("dicomweb:search", i64::MAX), body.len() as u64).await?;
    let mut response = Response::builder().header(header::CONTENT_TYPE, DICOM_JSON);
    if !search.ignored.is_empty() {
        let warning = format!(
            "299 custodian \"The following attribute matching keys were ignored: {}\"",
            search.ignored.join(", ")
        );
        response = response
            .header(header::WARNING, HeaderValue::from_str(&warning).map_err(|e| ApiError::Internal(e.into()))?);
    }
    response.body(Body::from(body)).map_err(|e| ApiError::Internal(e.into()))
}

/// A search result with its Retrieve URL and availability, attributes in tag order.
fn located(mut out: Map<String, Value>, url: &str) -> Value {
    out.insert(tag_key(tags::RETRIEVE_URL), attribute("UR", [url.into()]));
    out.insert(tag_key(tags::INSTANCE_AVAILABILITY), attribute("CS", ["ONLINE".into()]));
    let mut attributes: Vec<(String, Value)> = out.into_iter().collect();
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(attributes.into_iter().collect())
}

/// The UIDs a request's path names.
struct Uids {
    study: Option<String>,
    series: Option<String>,
    sop: Option<String>,
}

impl Uids {
    fn what(&self) -> &'static str {
        match (&self.series, &self.sop) {
            (_, Some(_)) => "instance",
            (Some(_), None) => "series",
            (None, None) => "study",
        }
    }
}

/// The release files a retrieval names; 404 for none.
async fn stored(state: &AppState, opened: &Opened, uids: &Uids) -> Result<Vec<index::Stored>> {
    let study = uids.study.as_deref().ok_or(ApiError::NotFound("study"))?;
    let files = index::stored(&state.db, opened.extract.id, study, uids.series.as_deref(), uids.sop.as_deref()).await?;
    if files.is_empty() {
        return Err(ApiError::NotFound(uids.what()));
    }
    Ok(files)
}

fn io_error(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(error)
}

/// One WADO-RS retrieval: the release files, one part each, streamed one after the other.
async fn retrieve(state: &AppState, asked: &Asked) -> Result<Response> {
    let opened = open(state, asked).await?;
    let files = stored(state, &opened, &asked.uids).await?;
    let permit = limits::start_download(opened.extract.owner(), &state.config.release)?;
    let boundary = Uuid::new_v4().simple().to_string();
    let closing = Bytes::from(format!("--{boundary}--\r\n"));
    let mut length = closing.len() as u64;
    let mut parts = Vec::with_capacity(files.len());
    for file in files {
        let head = Bytes::from(format!(
            "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={}\r\nContent-Length: {}\r\n\r\n",
            file.transfer_syntax, file.size
        ));
        length += head.len() as u64 + u64::try_from(file.size).unwrap_or_default() + 2;
        let served = opened.served(&file.path, file.size);
        parts.push((head, file.object_key, served));
    }
    let (store, db) = (state.store.clone(), state.db.clone());
    let body = stream::iter(parts)
        .then(move |(head, key, served)| {
            let (store, db) = (store.clone(), db.clone());
            async move {
                let bytes = crate::storage::stream(store.as_ref(), &object_store::path::Path::from(key), None)
                    .await
                    .map_err(io_error)?;
                let tally = Tally { inner: bytes.map_err(io_error).boxed(), sent: 0, db, served: Some(served) };
                Ok::<_, io::Error>(
                    stream::iter([Ok(head)]).chain(tally).chain(stream::iter([Ok(Bytes::from_static(b"\r\n"))])),
                )
            }
        })
        .try_flatten()
        .chain(stream::iter([Ok(closing)]))
        // The project's download slot is held until the last part is sent.
        .map(move |chunk| {
            let _slot = &permit;
            chunk
        });
    Response::builder()
        .header(header::CONTENT_TYPE, format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"))
        .header(header::CONTENT_LENGTH, length)
        .header(header::CACHE_CONTROL, "private, no-transform")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// One WADO-RS metadata request: a JSON array, one instance's header at a time.
async fn metadata(state: &AppState, asked: &Asked) -> Result<Response> {
    let opened = open(state, asked).await?;
    let files = stored(state, &opened, &asked.uids).await?;
    let permit = limits::start_download(opened.extract.owner(), &state.config.release)?;
    let store = state.store.clone();
    let objects = stream::iter(files)
        .map(move |file| {
            let store = store.clone();
            async move {
                let header_end = u64::try_from(file.header_size).unwrap_or_default();
                let options = GetOptions { range: Some(GetRange::Bounded(0..header_end)), ..GetOptions::default() };
                let key = object_store::path::Path::from(file.object_key);
                let bytes = store.get_opts(&key, options).await.map_err(io_error)?.bytes().await.map_err(io_error)?;
                let json = tokio::task::spawn_blocking(move || index::metadata(&bytes))
                    .await
                    .map_err(io_error)?
                    .map_err(io_error)?;
                serde_json::to_vec(&json).map_err(io_error)
            }
        })
        .buffered(4)
        .enumerate()
        .map(|(at, object)| {
            object.map(|mut json| {
                json.insert(0, if at == 0 { b'[' } else { b',' });
                Bytes::from(json)
            })
        })
        .chain(stream::iter([Ok(Bytes::from_static(b"]"))]))
        .map(move |chunk| {
            let _slot = &permit;
            chunk
        });
    let tally = Tally {
        inner: objects.boxed(),
        sent: 0,
        db: state.db.clone(),
        served: Some(opened.served("dicomweb:metadata", i64::MAX)),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, DICOM_JSON)
        .header(header::CACHE_CONTROL, "private, no-transform")
        .body(Body::from_stream(tally))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// A body (or one part of it) that counts the bytes sent and, once done or
/// dropped, records them for the audit as a file download's are.
struct Tally {
    inner: BoxStream<'static, io::Result<Bytes>>,
    sent: u64,
    db: sqlx::PgPool,
    served: Option<Served>,
}

impl Stream for Tally {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            self.sent += chunk.len() as u64;
        }
        next
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let (Some(served), Ok(runtime)) = (self.served.take(), tokio::runtime::Handle::try_current()) else { return };
        let (db, sent) = (self.db.clone(), self.sent);
        runtime.spawn(async move {
            if let Err(error) = extracts::record(&db, &served, sent).await {
                tracing::error!(%error, extract = %served.extract_id, "recording the bytes of a DICOMweb retrieval");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_reads_keywords_tags_ranges_lists_and_notes_what_it_ignores() {
        let search = read_search(Some(
            "PatientID=psub-*&0020000D=2.25.1,2.25.2&StudyDate=20200101-&ModalitiesInStudy=MR\
             &includefield=00080008&includefield=PixelSpacing&limit=5&offset=10&AccessionNumber=x&fuzzymatching=true\
             &StudyDescription=",
        ))
        .unwrap();
        let m = &search.matching;
        assert_eq!(m.patient.as_deref(), Some("psub-%"));
        assert_eq!(m.study_uids, Some(vec!["2.25.1".to_owned(), "2.25.2".to_owned()]));
        assert_eq!((m.study_date_from.as_deref(), m.study_date_to.as_deref()), (Some("20200101"), None));
        assert_eq!(m.modalities, Some(vec!["MR".to_owned()]));
        assert_eq!(search.page, Page { limit: 5, offset: 10 });
        assert_eq!(search.include, Include::Tags(vec![tags::IMAGE_TYPE, tags::PIXEL_SPACING]));
        assert_eq!(search.ignored, ["AccessionNumber"]);
        assert_eq!(read_search(Some("includefield=all")).unwrap().include, Include::All);
        let one_day = read_search(Some("StudyDate=20200101")).unwrap().matching;
        assert_eq!(
            (one_day.study_date_from, one_day.study_date_to),
            (Some("20200101".into()), Some("20200101".into()))
        );
    }

    #[test]
    fn a_search_refuses_malformed_dates_numbers_limits_and_fields() {
        for query in [
            "StudyDate=2020",
            "StudyDate=-",
            "StudyDate=20200101-2021",
            "limit=0",
            "limit=1001",
            "limit=ten",
            "offset=-1",
            "SeriesNumber=x",
            "includefield=NoSuchKeyword",
        ] {
            assert!(matches!(read_search(Some(query)), Err(ApiError::BadRequest(_))), "{query}");
        }
    }
}
