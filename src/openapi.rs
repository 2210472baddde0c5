//! The OpenAPI 3.1 contract, generated from the handlers themselves.
//!
//! `openapi/openapi.json` is this document, committed; a test fails when it is
//! stale (`UPDATE_OPENAPI=1 cargo test openapi` regenerates it), and
//! `custodian openapi` prints it.

use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Tag names, one per area.
pub mod tags {
    pub const AUTH: &str = "auth";
    pub const AUDIT: &str = "audit";
    pub const REGISTRY: &str = "registry";
    pub const DEID: &str = "deid";
    pub const INGEST: &str = "ingest";
    pub const CATALOG: &str = "catalog";
    pub const DICTIONARY: &str = "dictionary";
    pub const DISCOVERY: &str = "discovery";
    pub const PROJECTS: &str = "projects";
    pub const APPLICATIONS: &str = "applications";
    pub const REVIEW: &str = "review";
    pub const GRANTS: &str = "grants";
    pub const RELEASES: &str = "releases";
    pub const DRS: &str = "drs";
    pub const DICOMWEB: &str = "dicomweb";
    pub const OPEN_COHORTS: &str = "open-cohorts";
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Custodian",
        // Pinned: the contract changes when the API does, not with every release.
        version = "1",
        description = "A governed research data registry for medical imaging: catalog, discovery, access governance and release of pseudonymized imaging cohorts.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecurityAddon),
    components(schemas(crate::error::ErrorBody, crate::error::Refusal)),
    tags(
        (name = tags::AUTH, description = "Who is calling: the caller and personal API tokens"),
        (name = tags::AUDIT, description = "The append-only, hash-chained audit log"),
        (name = tags::REGISTRY, description = "Sites and cohorts"),
        (name = tags::INGEST, description = "Upload sessions: files in, de-identified at the door, published on commit"),
        (name = tags::CATALOG, description = "Published studies, series and instances; the quarantine"),
        (name = tags::DICTIONARY, description = "The data dictionary: discoverable fields, units, codings and coverage"),
        (name = tags::DISCOVERY, description = "Counts and breakdowns under disclosure control: what exists, without a row"),
        (name = tags::PROJECTS, description = "Researcher profiles, projects and their members"),
        (name = tags::APPLICATIONS, description = "Access applications: versioned content, feasibility and consent check, submission"),
        (name = tags::REVIEW, description = "The access committee: queue, assignments, declarations of interest, votes, comments"),
        (name = tags::GRANTS, description = "Grants: versions, suspension, revocation; checked on every request"),
        (name = tags::DEID, description = "De-identification at the door: the PS3.15 profile Custodian applies"),
        (name = tags::RELEASES, description = "Releases to approved projects: signed manifests and the keys that verify them"),
        (name = tags::DRS, description = "GA4GH DRS 1.4 over releases: each release a bundle, each file a blob with its SHA-256"),
        (name = tags::DICOMWEB, description = "DICOMweb over a release: QIDO-RS searches and WADO-RS retrieval in the project's pseudonyms and UIDs"),
        (name = tags::OPEN_COHORTS, description = "Open cohorts for challenges: curated under consent, split at subject level, published openly"),
    )
)]
pub struct ApiDoc;

impl ApiDoc {
    /// The document the routers add their paths to.
    pub fn base() -> OpenApiDoc {
        Self::openapi()
    }
}

/// A request body of raw bytes (a DICOM file, an archive): `{"type": "string", "format": "binary"}`.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        serde_json::from_value(serde_json::json!({"type": "string", "format": "binary"}))
            .expect("a binary string is a schema")
    }
}

impl utoipa::ToSchema for Binary {}

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or cst_ API token")
                    .description(Some("A JWT (Custodian HS256 or OIDC RS256/ES256) or a personal API token"))
                    .build(),
            ),
        );
    }
}

/// Final touches after the routers contributed their paths.
pub fn finish(openapi: OpenApiDoc) -> OpenApiDoc {
    openapi
}

/// The complete document, as served at `/openapi.json`.
pub fn document() -> OpenApiDoc {
    finish(crate::http::api_router().into_openapi())
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn to_json() -> String {
    document().to_pretty_json().expect("the OpenAPI document serialises") + "\n"
}
