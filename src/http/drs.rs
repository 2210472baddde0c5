//! GA4GH Data Repository Service (DRS) 1.4 over releases, under
//! `/ga4gh/drs/v1`, so existing DRS clients fetch a release.
//!
//! A ready release is a bundle object, each of its folders a bundle and each
//! file a blob with its size, SHA-256, media type and access methods
//! ([`crate::release::drs`] names them). Every request but `service-info`
//! passes the grant check of downloads ([`extracts::for_download`], refusals
//! audited alike), with the usual bearer token. An access URL points at the
//! API's own download (`/api/v1/extracts/{id}/files/{path}`, which checks the
//! grant again and audits the bytes), or, when the registry hands them out,
//! at a presigned S3 URL (audited on issue). Errors take DRS's shape,
//! `{msg, status_code}`, with the API's `code` and `message` beside them
//! (errors answered before a DRS handler runs, such as `401`, have the API's).
//!
//! Spec: <https://ga4gh.github.io/data-repository-service-schemas/preview/release/drs-1.4.0/docs/>

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::client_ip::ClientIp;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::tags;
use crate::release::drs::{self, Folder, ListedFile, Node, ObjectId};
use crate::release::extracts::{self, Extract};
use crate::release::{downloaders, presign};

/// The access method through the API's own download route.
pub const ACCESS_API: &str = "api";
/// The access method through a presigned S3 URL.
pub const ACCESS_PRESIGNED: &str = "s3-presigned";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(service_info)).routes(routes!(get_object)).routes(routes!(get_access_url))
}

/// A DRS error: `msg` and `status_code` as the spec has them, and `code` and
/// `message` as every error of the API has them.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrsErrorBody {
    /// What went wrong.
    pub msg: String,
    /// The HTTP status.
    pub status_code: u16,
    /// The API's stable code (`not-found`, `grant-revoked`, …).
    pub code: &'static str,
    /// The same as `msg`.
    pub message: String,
}

/// An [`ApiError`] answered in DRS's shape.
#[derive(Debug)]
pub struct DrsError(ApiError);

impl From<ApiError> for DrsError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for DrsError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status.is_server_error() {
            tracing::error!(error = ?self.0, code = self.0.code(), "request failed");
        }
        let message = self.0.to_string();
        let body = DrsErrorBody { msg: message.clone(), status_code: status.as_u16(), code: self.0.code(), message };
        (status, Json(body)).into_response()
    }
}

type DrsResult<T> = Result<T, DrsError>;

/// GA4GH service-info's `type`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceType {
    pub group: &'static str,
    pub artifact: &'static str,
    pub version: &'static str,
}

/// Who runs the service.
#[derive(Debug, Serialize, ToSchema)]
pub struct Organization {
    pub name: &'static str,
    pub url: String,
}

/// GA4GH service-info of this DRS service.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInfo {
    pub id: String,
    pub name: &'static str,
    #[serde(rename = "type")]
    pub service_type: ServiceType,
    pub description: &'static str,
    pub organization: Organization,
    pub documentation_url: String,
    /// Custodian's version.
    pub version: &'static str,
}

/// A checksum of an object.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checksum {
    /// Hex digits.
    pub checksum: String,
    /// `sha-256`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// A way to reach an object's bytes; its `access_id` gives the URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessMethod {
    /// `https`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `api`: through the API, with the caller's bearer token; `s3-presigned`: a presigned S3 URL.
    pub access_id: &'static str,
}

/// What a bundle holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContentsObject {
    /// The file or folder name within the bundle.
    pub name: String,
    pub id: String,
    pub drs_uri: Vec<String>,
    /// What a folder holds, with `?expand=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub contents: Option<Vec<ContentsObject>>,
}

/// A DRS object: a file of a release (blob) or a release or folder of one (bundle).
#[derive(Debug, Serialize, ToSchema)]
pub struct DrsObject {
    pub id: String,
    pub name: String,
    /// `drs://{host}/{id}`.
    pub self_uri: String,
    /// Bytes (of every file below, for a bundle).
    pub size: i64,
    /// When the release became ready.
    pub created_time: DateTime<Utc>,
    /// The release's version.
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub checksums: Vec<Checksum>,
    /// A blob's ways to its bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_methods: Option<Vec<AccessMethod>>,
    /// A bundle's members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contents: Option<Vec<ContentsObject>>,
    pub description: String,
    /// The file's or folder's path in the release manifest.
    pub aliases: Vec<String>,
}

/// Where to fetch a blob's bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessUrl {
    pub url: String,
    /// Headers to send with the request (`Authorization` for the API).
    pub headers: Vec<String>,
}

/// The registry's base URL and the host DRS URIs name.
struct Base {
    url: url::Url,
    host: String,
}

impl Base {
    fn of(state: &AppState, headers: &HeaderMap) -> Self {
        let configured = state.config.release.public_url.as_deref().and_then(|u| url::Url::parse(u).ok());
        let url = configured.unwrap_or_else(|| {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
                .unwrap_or("localhost");
            let scheme = match headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()) {
                Some("https") => "https",
                _ => "http",
            };
            url::Url::parse(&format!("{scheme}://{host}/"))
                .unwrap_or_else(|_| url::Url::parse("http://localhost/").expect("a URL"))
        });
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => "localhost".to_owned(),
        };
        Self { url, host }
    }

    /// `segments` below the base URL, each percent-encoded.
    fn join<'s>(&self, segments: impl IntoIterator<Item = &'s str>) -> String {
        let mut url = self.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.to_string()
    }

    fn drs_uri(&self, id: &str) -> String {
        format!("drs://{}/{id}", self.host)
    }
}

/// Describe this DRS service (GA4GH service-info; open to anyone).
#[utoipa::path(
    get,
    path = "/ga4gh/drs/v1/service-info",
    tag = tags::DRS,
    security(()),
    responses(
        (status = 200, description = "The service", body = ServiceInfo),
        (status = "4XX", description = "Client error (DRS's own in its shape, which adds `msg` and `status_code`)", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn service_info(State(state): State<AppState>, headers: HeaderMap) -> Json<ServiceInfo> {
    let base = Base::of(&state, &headers);
    let reversed: Vec<&str> = base.host.split(':').next().unwrap_or("localhost").split('.').rev().collect();
    Json(ServiceInfo {
        id: format!("{}.custodian.drs", reversed.join(".")),
        name: "Custodian DRS",
        service_type: ServiceType { group: "org.ga4gh", artifact: "drs", version: "1.4.0" },
        description: "Releases of approved projects as DRS objects: each release a bundle, each file a blob with \
                      its SHA-256. Bearer token as for the rest of the API; the grant is checked on every request.",
        organization: Organization { name: "Custodian", url: base.join([]) },
        documentation_url: base.join(["docs", ""]),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Whether `?expand=true` is asked for.
fn expand(query: Option<&str>) -> bool {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).any(|(k, v)| k == "expand" && v == "true")
}

/// The release an id names, for this caller now: the grant checked, refusals audited.
async fn release_for(
    state: &AppState,
    principal: Option<&Principal>,
    object_id: &str,
) -> DrsResult<(ObjectId, Extract)> {
    let id = ObjectId::parse(object_id).ok_or(ApiError::NotFound("object"))?;
    let extract = super::extracts::downloadable(state, principal, id.extract_id)
        .await
        .map_err(|e| if matches!(e, ApiError::NotFound(_)) { ApiError::NotFound("object") } else { e })?;
    Ok((id, extract))
}

/// Get a release, a folder of one or one of its files as a DRS object.
///
/// A file's `checksums` hold its SHA-256, as in the signed manifest; its
/// `access_methods` name the `access_id`s to ask for a URL with. A bundle's
/// `contents` list what it directly holds, or everything below with
/// `?expand=true`. The grant is checked on every request.
#[utoipa::path(
    get,
    path = "/ga4gh/drs/v1/objects/{object_id}",
    tag = tags::DRS,
    security((), ("bearer" = [])),
    params(
        ("object_id" = String, Path, description = "A DRS object id"),
        ("expand" = Option<bool>, Query, description = "List every level of a bundle's contents"),
    ),
    responses(
        (status = 200, description = "The object", body = DrsObject),
        (status = 403, description = "No grant in force; the code says why", body = DrsErrorBody),
        (status = 404, description = "No such object visible to the caller", body = DrsErrorBody),
        (status = 409, description = "The release is not ready", body = DrsErrorBody),
        (status = "4XX", description = "Client error (DRS's own in its shape, which adds `msg` and `status_code`)", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn get_object(
    State(state): State<AppState>,
    principal: Option<Principal>,
    Path(object_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> DrsResult<Response> {
    let (id, extract) = release_for(&state, principal.as_ref(), &object_id).await?;
    let files = drs::files(&state.db, extract.id).await?;
    let tree = Node::Folder(Folder::tree(&files));
    let node = match id.member {
        None => &tree,
        Some(member) => match &tree {
            Node::Folder(root) => root.find(member).ok_or(ApiError::NotFound("object"))?,
            Node::File(_) => return Err(ApiError::NotFound("object").into()),
        },
    };
    let base = Base::of(&state, &headers);
    let object = Describe { base: &base, extract: &extract, presigned: presign::enabled(&state.config) }.object(
        node,
        id.member,
        expand(query.as_deref()),
    );
    Ok(no_store(Json(object).into_response()))
}

/// What an object description needs besides the object.
struct Describe<'a> {
    base: &'a Base,
    extract: &'a Extract,
    presigned: bool,
}

impl Describe<'_> {
    fn id(&self, node: &Node<'_>) -> String {
        drs::object_id(self.extract.id, Some(node.member()))
    }

    fn object(&self, node: &Node<'_>, member: Option<[u8; 16]>, expand: bool) -> DrsObject {
        let id = drs::object_id(self.extract.id, member);
        let version = self.extract.version;
        let (name, path, mime_type, access_methods, contents) = match node {
            Node::File(file) => {
                let mut methods = vec![AccessMethod { kind: "https", access_id: ACCESS_API }];
                if self.presigned {
                    methods.push(AccessMethod { kind: "https", access_id: ACCESS_PRESIGNED });
                }
                let name = file.path.rsplit('/').next().unwrap_or(&file.path).to_owned();
                (name, file.path.clone(), Some(file.media_type.clone()), Some(methods), None)
            }
            Node::Folder(folder) => {
                let path = folder.path.trim_end_matches('/').to_owned();
                let name = match path.rsplit('/').next() {
                    Some(last) if !last.is_empty() => last.to_owned(),
                    _ => format!("release-{version}"),
                };
                (name, path, None, None, Some(self.contents(folder, expand)))
            }
        };
        DrsObject {
            self_uri: self.base.drs_uri(&id),
            id,
            name,
            size: node.size(),
            created_time: self.extract.ready_at.unwrap_or(self.extract.created_at),
            version: version.to_string(),
            mime_type,
            checksums: vec![Checksum { checksum: node.sha256(), kind: "sha-256" }],
            access_methods,
            contents,
            description: if path.is_empty() {
                match (&self.extract.project_id, &self.extract.open_cohort) {
                    (Some(project), _) => format!("Release {version} of project {project}"),
                    (None, cohort) => format!("Version {version} of open cohort {}", cohort.as_deref().unwrap_or("")),
                }
            } else {
                format!("`{path}` of release {version}")
            },
            aliases: if path.is_empty() { Vec::new() } else { vec![path] },
        }
    }

    fn contents(&self, folder: &Folder<'_>, expand: bool) -> Vec<ContentsObject> {
        folder
            .children
            .iter()
            .map(|(name, node)| {
                let id = self.id(node);
                ContentsObject {
                    name: (*name).to_owned(),
                    drs_uri: vec![self.base.drs_uri(&id)],
                    id,
                    contents: match node {
                        Node::Folder(inner) if expand => Some(self.contents(inner, true)),
                        _ => None,
                    },
                }
            })
            .collect()
    }
}

/// Object descriptions and access URLs are the caller's own.
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Get a URL to fetch a file's bytes with.
///
/// `api`: the API's download of the file, with the `Authorization` header to
/// send (the caller's own); it takes `Range` to resume and checks the grant
/// on every request. `s3-presigned` (when the registry hands them out): a
/// URL straight to the object store, valid for `release.presign_ttl_secs`;
/// each issuance is audited, and a transfer outliving it asks again.
#[utoipa::path(
    get,
    path = "/ga4gh/drs/v1/objects/{object_id}/access/{access_id}",
    tag = tags::DRS,
    security((), ("bearer" = [])),
    params(
        ("object_id" = String, Path, description = "A DRS object id of a file"),
        ("access_id" = String, Path, description = "`api` or `s3-presigned`, as the object's access methods list"),
    ),
    responses(
        (status = 200, description = "Where to fetch the bytes", body = AccessUrl),
        (status = 403, description = "No grant in force; the code says why", body = DrsErrorBody),
        (status = 404, description = "No such object or access method", body = DrsErrorBody),
        (status = 409, description = "The release is not ready", body = DrsErrorBody),
        (status = "4XX", description = "Client error (DRS's own in its shape, which adds `msg` and `status_code`)", body = ErrorBody),
        (status = "5XX", description = "Server error", body = ErrorBody),
    )
)]
pub async fn get_access_url(
    State(state): State<AppState>,
    principal: Option<Principal>,
    ClientIp(client): ClientIp,
    Path((object_id, access_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> DrsResult<Response> {
    let (id, extract) = release_for(&state, principal.as_ref(), &object_id).await?;
    let member = id.member.ok_or(ApiError::NotFound("access method"))?;
    let files = drs::files(&state.db, extract.id).await?;
    let file: ListedFile = match Folder::tree(&files).find(member) {
        Some(Node::File(file)) => (*file).clone(),
        Some(Node::Folder(_)) => return Err(ApiError::NotFound("access method").into()),
        None => return Err(ApiError::NotFound("object").into()),
    };
    let access = match access_id.as_str() {
        ACCESS_API => {
            let base = Base::of(&state, &headers);
            let extract_id = extract.id.to_string();
            let segments = ["api", "v1", "extracts", extract_id.as_str(), "files"].into_iter();
            let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            AccessUrl {
                url: base.join(segments.chain(file.path.split('/'))),
                headers: authorization.map(|a| format!("Authorization: {a}")).into_iter().collect(),
            }
        }
        ACCESS_PRESIGNED if presign::enabled(&state.config) => {
            let stored =
                extracts::file(&state.db, extract.id, &file.path).await?.ok_or(ApiError::NotFound("object"))?;
            let username = downloaders::downloader(&state.db, principal.as_ref(), client).await?;
            let signed = presign::issue(&state.db, &state.config, &username, &extract, &file.path, &stored).await?;
            AccessUrl { url: signed.url, headers: Vec::new() }
        }
        _ => return Err(ApiError::NotFound("access method").into()),
    };
    Ok(no_store((StatusCode::OK, Json(access)).into_response()))
}
