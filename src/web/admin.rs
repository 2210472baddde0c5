//! The administrator's pages: sites, cohorts and their consent terms, the fee
//! schedule, data use agreement versions, and the people the registry has
//! seen, with sign-in tokens issued to them in the embedded mode. The pages are for admins; each
//! form posts to the service function its REST twin calls
//! (`POST /sites`, `POST /cohorts`, `PUT /cohorts/{slug}/consent`,
//! `PUT /fees/{tier}`, `POST /dua`), with the session's principal, so the
//! same rules refuse and the same audit entries are written.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, RawForm, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Chrome, Visitor, WebError, render};
use crate::access::consent::{self, ConsentTerms};
use crate::access::duties::{self, TierFees};
use crate::access::{applications, dua};
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::http::cohorts::{CreateCohortRequest, CreateSiteRequest, register_cohort, register_site};
use crate::registry::{Tier, db as registry};

type PageResult = Result<Response, WebError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/admin", get(overview))
        .route("/ui/admin/sites", get(sites).post(create_site))
        .route("/ui/admin/cohorts", get(cohorts).post(create_cohort))
        .route("/ui/admin/cohorts/{slug}/consent", get(consent_form).post(set_consent))
        .route("/ui/admin/fees", get(fees))
        .route("/ui/admin/fees/{tier}", post(set_fees))
        .route("/ui/admin/agreements", get(agreements).post(publish_agreement))
        .route("/ui/admin/users", get(users).post(issue_token))
}

/// The signed-in admin; anyone else is refused as the API refuses them.
fn admin(visitor: &Visitor) -> Result<&Principal, WebError> {
    let principal = visitor.signed_in()?;
    principal.require_any(&[Role::Admin])?;
    Ok(principal)
}

/// A form's fields; a repeated field (checkboxes) keeps every value.
struct Fields(HashMap<String, Vec<String>>);

impl Fields {
    fn parse(form: &RawForm) -> Self {
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(&form.0) {
            fields.entry(name.into_owned()).or_default().push(value.into_owned());
        }
        Self(fields)
    }

    /// The field's value, trimmed; empty when absent.
    fn text(&self, name: &str) -> String {
        self.0.get(name).and_then(|v| v.first()).map(|v| v.trim().to_owned()).unwrap_or_default()
    }

    fn optional(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|v| !v.is_empty())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.get(name).cloned().unwrap_or_default()
    }

    fn checked(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A whole number, or a refusal naming the field.
    fn number<T: std::str::FromStr>(&self, name: &str, label: &str) -> Result<Option<T>, WebError> {
        self.optional(name)
            .map(|v| v.parse::<T>().map_err(|_| bad_request(format!("{label} must be a whole number"))))
            .transpose()
    }

    /// A list typed as words separated by commas or spaces.
    fn list(&self, name: &str) -> Vec<String> {
        self.text(name).split([',', ' ', '\n']).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect()
    }
}

fn bad_request(message: String) -> WebError {
    WebError::Api(ApiError::BadRequest(message))
}

/// A value of one of the API's enumerations, from its name in a form.
fn named<T: serde::de::DeserializeOwned>(value: &str, what: &str) -> Result<T, WebError> {
    serde_json::from_value(Value::String(value.to_owned()))
        .map_err(|_| bad_request(format!("`{value}` is not a {what}")))
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A serde name (the API's spelling), for display.
fn name_of(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// After a change: the page that shows it (303).
fn done(path: &str) -> Response {
    Redirect::to(path).into_response()
}

// ------------------------------------------------------------------ overview

#[derive(Template)]
#[template(path = "admin.html", config = "src/web/askama.toml")]
struct OverviewPage {
    chrome: Chrome,
    sites: usize,
    cohorts: usize,
    tiers_priced: usize,
    agreement: Option<(String, String)>,
}

async fn overview(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    admin(&visitor)?;
    let agreement = dua::all(&state.db).await?.into_iter().next().map(|a| (a.version, when(a.published_at)));
    Ok(render(&OverviewPage {
        chrome: Chrome::new(&visitor, "admin"),
        sites: registry::list_sites(&state.db).await?.len(),
        cohorts: registry::list_cohorts(&state.db).await?.len(),
        tiers_priced: duties::fee_schedule(&state.db)
            .await?
            .iter()
            .filter(|f| f.access_fee + f.maintenance_fee + f.imaging_access_fee + f.imaging_maintenance_fee > 0)
            .count(),
        agreement,
    }))
}

// ------------------------------------------------------------------ sites

struct SiteRow {
    code: String,
    name: String,
    country: String,
    created: String,
}

#[derive(Template)]
#[template(path = "admin_sites.html", config = "src/web/askama.toml")]
struct SitesPage {
    chrome: Chrome,
    sites: Vec<SiteRow>,
}

async fn sites(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    admin(&visitor)?;
    let sites = registry::list_sites(&state.db)
        .await?
        .into_iter()
        .map(|s| SiteRow {
            code: s.code,
            name: s.name,
            country: s.country.unwrap_or_default(),
            created: when(s.created_at),
        })
        .collect();
    Ok(render(&SitesPage { chrome: Chrome::new(&visitor, "admin"), sites }))
}

async fn create_site(State(state): State<AppState>, visitor: Visitor, form: RawForm) -> PageResult {
    let principal = visitor.signed_in()?;
    let fields = Fields::parse(&form);
    let request =
        CreateSiteRequest { code: fields.text("code"), name: fields.text("name"), country: fields.optional("country") };
    register_site(&state, principal, &request).await?;
    Ok(done("/ui/admin/sites"))
}

// ------------------------------------------------------------------ cohorts

struct CohortRow {
    slug: String,
    title: String,
    tier: String,
    design: String,
    source: String,
    threshold: i32,
}

#[derive(Template)]
#[template(path = "admin_cohorts.html", config = "src/web/askama.toml")]
struct CohortsPage {
    chrome: Chrome,
    cohorts: Vec<CohortRow>,
}

async fn cohorts(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    admin(&visitor)?;
    let cohorts = registry::list_cohorts(&state.db)
        .await?
        .into_iter()
        .map(|c| CohortRow {
            tier: name_of(&c.tier),
            design: name_of(&c.design),
            source: name_of(&c.source),
            threshold: c.suppression_threshold,
            slug: c.slug,
            title: c.title,
        })
        .collect();
    Ok(render(&CohortsPage { chrome: Chrome::new(&visitor, "admin"), cohorts }))
}

async fn create_cohort(State(state): State<AppState>, visitor: Visitor, form: RawForm) -> PageResult {
    let principal = visitor.signed_in()?;
    let fields = Fields::parse(&form);
    let request = CreateCohortRequest {
        slug: fields.text("slug"),
        title: fields.text("title"),
        description: fields.text("description"),
        tier: named(&fields.text("tier"), "cohort tier")?,
        design: named(&fields.text("design"), "cohort design")?,
        source: named(&fields.text("source"), "cohort source")?,
        license: fields.optional("license"),
        citation: fields.optional("citation"),
        suppression_threshold: fields.number("suppression_threshold", "The suppression threshold")?,
    };
    register_cohort(&state, principal, &request).await?;
    Ok(done("/ui/admin/cohorts"))
}

// ------------------------------------------------------------------ consent terms

#[derive(Template)]
#[template(path = "admin_consent.html", config = "src/web/askama.toml")]
struct ConsentPage {
    chrome: Chrome,
    slug: String,
    title: String,
    tier: String,
    /// The terms in force, as DUO codes, if any.
    codes: Option<String>,
    /// Each DUO permission, and whether it is the one in force.
    permissions: Vec<(&'static str, bool)>,
    diseases: String,
    modifiers: Vec<(&'static str, bool)>,
    moratorium_until: String,
    time_limit_months: String,
    countries: String,
    open_release: bool,
}

const PERMISSIONS: [&str; 5] = ["NRES", "GRU", "HMB", "DS", "POA"];
const MODIFIERS: [&str; 14] =
    ["NPU", "NCU", "IRB", "PUB", "MOR", "TS", "GS", "COL", "RTN", "GSO", "NMDS", "US", "PS", "IS"];

async fn consent_form(State(state): State<AppState>, visitor: Visitor, Path(slug): Path<String>) -> PageResult {
    admin(&visitor)?;
    let cohort = registry::get_cohort_by_slug(&state.db, &slug).await?.ok_or(ApiError::NotFound("cohort"))?;
    let stored = crate::access::db::cohort_terms(&state.db, &slug).await?.and_then(|(_, terms)| terms);
    let terms: Option<ConsentTerms> = consent::stored(&slug, stored)?;
    let modifiers = MODIFIERS
        .iter()
        .map(|code| (*code, terms.as_ref().is_some_and(|t| t.modifiers.iter().any(|m| m.code() == *code))))
        .collect();
    Ok(render(&ConsentPage {
        chrome: Chrome::new(&visitor, "admin"),
        tier: name_of(&cohort.tier),
        slug: cohort.slug,
        title: cohort.title,
        codes: terms
            .as_ref()
            .map(|t| std::iter::once(t.permission.code()).chain(t.codes()).collect::<Vec<_>>().join(", ")),
        permissions: PERMISSIONS
            .iter()
            .map(|code| (*code, *code == terms.as_ref().map_or("GRU", |t| t.permission.code())))
            .collect(),
        diseases: terms.as_ref().map(|t| t.diseases.join(", ")).unwrap_or_default(),
        modifiers,
        moratorium_until: terms.as_ref().and_then(|t| t.moratorium_until).map(|d| d.to_string()).unwrap_or_default(),
        time_limit_months: terms.as_ref().and_then(|t| t.time_limit_months).map(|m| m.to_string()).unwrap_or_default(),
        countries: terms.as_ref().map(|t| t.countries.join(", ")).unwrap_or_default(),
        open_release: terms.as_ref().is_some_and(|t| t.open_release),
    }))
}

async fn set_consent(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(slug): Path<String>,
    form: RawForm,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let fields = Fields::parse(&form);
    let terms = json!({
        "permission": fields.text("permission"),
        "diseases": fields.list("diseases"),
        "modifiers": fields.all("modifiers"),
        "moratorium_until": fields.optional("moratorium_until"),
        "time_limit_months": fields.number::<u32>("time_limit_months", "The time limit")?,
        "countries": fields.list("countries"),
        "open_release": fields.checked("open_release"),
    });
    let terms: ConsentTerms =
        serde_json::from_value(terms).map_err(|e| bad_request(format!("the consent terms are not valid: {e}")))?;
    let mut tx = state.db.begin().await?;
    applications::set_consent_terms(&mut tx, principal, &slug, &terms, fields.checked("auto_approve")).await?;
    tx.commit().await?;
    Ok(done(&format!("/ui/admin/cohorts/{slug}/consent")))
}

// ------------------------------------------------------------------ fees

struct FeeRow {
    tier: &'static str,
    access_fee: i64,
    maintenance_fee: i64,
    imaging_access_fee: i64,
    imaging_maintenance_fee: i64,
    currency: String,
    set: bool,
}

#[derive(Template)]
#[template(path = "admin_fees.html", config = "src/web/askama.toml")]
struct FeesPage {
    chrome: Chrome,
    tiers: Vec<FeeRow>,
}

async fn fees(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    admin(&visitor)?;
    let schedule = duties::fee_schedule(&state.db).await?;
    let tiers = [(Tier::Open, "open"), (Tier::Registered, "registered"), (Tier::Controlled, "controlled")]
        .into_iter()
        .map(|(tier, name)| match schedule.iter().find(|f| f.tier == tier) {
            Some(f) => FeeRow {
                tier: name,
                access_fee: f.access_fee,
                maintenance_fee: f.maintenance_fee,
                imaging_access_fee: f.imaging_access_fee,
                imaging_maintenance_fee: f.imaging_maintenance_fee,
                currency: f.currency.clone(),
                set: true,
            },
            None => FeeRow {
                tier: name,
                access_fee: 0,
                maintenance_fee: 0,
                imaging_access_fee: 0,
                imaging_maintenance_fee: 0,
                currency: "EUR".into(),
                set: false,
            },
        })
        .collect();
    Ok(render(&FeesPage { chrome: Chrome::new(&visitor, "admin"), tiers }))
}

async fn set_fees(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(tier): Path<String>,
    form: RawForm,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let fields = Fields::parse(&form);
    let amount = |name: &str, label: &str| -> Result<i64, WebError> { Ok(fields.number(name, label)?.unwrap_or(0)) };
    let tier: Tier = named(&tier, "cohort tier")?;
    let request = TierFees {
        tier,
        access_fee: amount("access_fee", "The access fee")?,
        maintenance_fee: amount("maintenance_fee", "The maintenance fee")?,
        imaging_access_fee: amount("imaging_access_fee", "The imaging access fee")?,
        imaging_maintenance_fee: amount("imaging_maintenance_fee", "The imaging maintenance fee")?,
        currency: fields.text("currency"),
    };
    let mut tx = state.db.begin().await?;
    duties::set_fees(&mut tx, principal, tier, &request).await?;
    tx.commit().await?;
    Ok(done("/ui/admin/fees"))
}

// ------------------------------------------------------------------ data use agreement

struct AgreementRow {
    version: String,
    title: String,
    sha256: String,
    published_by: String,
    published: String,
    in_force: bool,
}

#[derive(Template)]
#[template(path = "admin_agreements.html", config = "src/web/askama.toml")]
struct AgreementsPage {
    chrome: Chrome,
    agreements: Vec<AgreementRow>,
}

async fn agreements(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    admin(&visitor)?;
    let agreements = dua::all(&state.db)
        .await?
        .into_iter()
        .enumerate()
        .map(|(i, a)| AgreementRow {
            in_force: i == 0,
            published: when(a.published_at),
            version: a.version,
            title: a.title,
            sha256: a.sha256,
            published_by: a.published_by,
        })
        .collect();
    Ok(render(&AgreementsPage { chrome: Chrome::new(&visitor, "admin"), agreements }))
}

async fn publish_agreement(State(state): State<AppState>, visitor: Visitor, form: RawForm) -> PageResult {
    let principal = visitor.signed_in()?;
    let fields = Fields::parse(&form);
    // The text is kept as typed (a Markdown body's indentation matters); only the names are trimmed.
    let body = fields.0.get("body").and_then(|v| v.first()).cloned().unwrap_or_default();
    let mut tx = state.db.begin().await?;
    dua::publish(&mut tx, principal, &fields.text("version"), &fields.text("title"), &body).await?;
    tx.commit().await?;
    Ok(done("/ui/admin/agreements"))
}

// ------------------------------------------------------------------ people and their tokens

#[derive(Template)]
#[template(path = "admin_users.html", config = "src/web/askama.toml")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<crate::auth::users::User>,
    /// Whether this node signs tokens (no: roles come from the OpenID provider).
    issues: bool,
    default_ttl: String,
    /// A token just issued: shown once, in the answer to the form.
    issued: Option<(String, String)>,
}

async fn users_page(state: &AppState, visitor: &Visitor, issued: Option<(String, String)>) -> PageResult {
    let principal = admin(visitor)?;
    let users = crate::auth::users::list(&state.db, principal).await?;
    Ok(render(&UsersPage {
        chrome: Chrome::new(visitor, "admin"),
        users,
        issues: state.auth.can_issue(),
        default_ttl: state.config.auth.default_token_ttl.clone(),
        issued,
    }))
}

async fn users(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    users_page(&state, &visitor, None).await
}

/// Issues a sign-in token (`auth::users::issue`, as `custodian token issue`);
/// the answer is the page with the token, shown this once.
async fn issue_token(State(state): State<AppState>, visitor: Visitor, form: RawForm) -> PageResult {
    let principal = admin(&visitor)?;
    let fields = Fields::parse(&form);
    let mut roles = Vec::new();
    for name in fields.all("role") {
        roles.push(Role::parse(&name).ok_or_else(|| bad_request(format!("`{name}` is not a role")))?);
    }
    roles.sort();
    roles.dedup();
    let ttl_text = fields.optional("ttl").unwrap_or_else(|| state.config.auth.default_token_ttl.clone());
    let ttl = crate::config::parse_duration(&ttl_text)
        .map_err(|_| bad_request(format!("`{ttl_text}` is not a duration such as 12h or 30d")))?;
    let username = fields.text("username");
    let mut tx = state.db.begin().await?;
    let token = crate::auth::users::issue(&mut tx, &state.auth, &principal.username, &username, &roles, ttl).await?;
    tx.commit().await?;
    users_page(&state, &visitor, Some((username, token))).await
}
