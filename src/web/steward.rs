//! The steward's pages: the inbox, grants (suspend, reinstate, revoke,
//! renewals, fees), researcher profiles to verify, withdrawals, the
//! quarantine with a preview of each image, and the audit log.
//!
//! Every read and every action calls the service function its REST twin
//! calls, with the session's principal, so the same role checks, rules,
//! refusals and audit events apply; a researcher, organizer or uploader is
//! refused by those functions, page by page. The application review view
//! lives at `/ui/steward/applications/{id}`; these pages link to it.

use std::collections::HashMap;

use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{Chrome, Visitor, WebError, render};
use crate::access::duties::{self, Fee, Obligation};
use crate::access::grants::{self, Change, Grant, GrantState, StewardAction};
use crate::access::inbox::{self, Inbox};
use crate::access::projects::{self, Profile};
use crate::access::renewals::{self, RenewalItem};
use crate::access::withdrawal::{self, Named, Notice, Scope, Withdrawn};
use crate::app::AppState;
use crate::audit::{AuditEvent, VerifyReport};
use crate::auth::Principal;
use crate::catalog::{QuarantinedInstance, quarantine};
use crate::error::ApiError;
use crate::http::audit::{self as audit_api, AuditQuery};

type PageResult = Result<Response, WebError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/steward", get(inbox_page))
        .route("/ui/steward/grants", get(grants_page))
        .route("/ui/steward/grants/{id}", get(grant_page))
        .route("/ui/steward/grants/{id}/state", post(change_grant))
        .route("/ui/steward/renewals/{id}/decision", post(decide_renewal))
        .route("/ui/steward/fees/{id}/settlement", post(settle_fee))
        .route("/ui/steward/profiles", get(profiles_page))
        .route("/ui/steward/profiles/{username}/verify", post(verify_profile))
        .route("/ui/steward/withdrawals", get(withdrawals_page).post(withdraw))
        .route("/ui/steward/quarantine", get(quarantine_page))
        .route("/ui/steward/quarantine/{sop_uid}", get(quarantined_page))
        .route("/ui/steward/quarantine/{sop_uid}/preview.png", get(preview_png))
        .route("/ui/steward/quarantine/{sop_uid}/release", post(release_quarantined))
        .route("/ui/steward/quarantine/{sop_uid}/delete", post(delete_quarantined))
        .route("/ui/steward/audit", get(audit_page))
}

// ------------------------------------------------------------------ shared

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// An amount in a currency's minor unit, as people write it.
fn money(amount: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", amount / 100, (amount % 100).abs())
}

fn id(text: &str, what: &'static str) -> Result<Uuid, WebError> {
    Uuid::parse_str(text).map_err(|_| WebError::NotFound(what))
}

/// Titles of the projects the principal sees (every project, for a steward).
async fn project_titles(state: &AppState, principal: &Principal) -> Result<HashMap<Uuid, String>, WebError> {
    let projects = projects::list_projects(&state.db, principal).await?;
    Ok(projects.into_iter().map(|p| (p.id, p.title)).collect())
}

fn title_of(titles: &HashMap<Uuid, String>, project: Uuid) -> String {
    titles.get(&project).cloned().unwrap_or_else(|| project.to_string())
}

fn words(text: &str) -> String {
    text.replace('_', " ")
}

// ------------------------------------------------------------------ the inbox

struct FeeRow {
    amount: String,
    kind: &'static str,
    since: String,
    /// Where it is settled: the grant's page, or the application's.
    link: String,
}

struct DutyRow {
    kind: String,
    project: String,
    due_on: String,
    grant_id: Uuid,
}

struct NoticeRow {
    project: String,
    subject: String,
    scope: String,
    sent: String,
    acknowledged: Option<String>,
}

#[derive(Template)]
#[template(path = "steward.html", config = "src/web/askama.toml")]
struct InboxPage {
    chrome: Chrome,
    inbox: Inbox,
    fees: Vec<FeeRow>,
    duties: Vec<DutyRow>,
    notices: Vec<NoticeRow>,
}

fn fee_row(fee: &Fee) -> FeeRow {
    FeeRow {
        amount: money(fee.amount, &fee.currency),
        kind: fee.kind.as_str(),
        since: when(fee.created_at),
        link: fee.grant_id.map_or_else(
            || format!("/ui/steward/applications/{}", fee.application_id),
            |g| format!("/ui/steward/grants/{g}#fees"),
        ),
    }
}

fn duty_row(duty: &Obligation, titles: &HashMap<Uuid, String>) -> DutyRow {
    DutyRow {
        kind: words(duty.kind.as_str()),
        project: title_of(titles, duty.project_id),
        due_on: duty.due_on.to_string(),
        grant_id: duty.grant_id,
    }
}

fn notice_row(notice: &Notice, titles: &HashMap<Uuid, String>) -> NoticeRow {
    NoticeRow {
        project: title_of(titles, notice.project_id),
        subject: notice.project_pseudonym.clone(),
        scope: notice.scope.clone(),
        sent: when(notice.created_at),
        acknowledged: notice
            .acknowledged_at
            .map(|t| format!("acknowledged by {} on {}", notice.acknowledged_by.as_deref().unwrap_or("?"), when(t))),
    }
}

async fn inbox_page(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut conn = state.db.acquire().await?;
    let inbox = inbox::gather(&mut conn, principal).await?;
    drop(conn);
    let titles = project_titles(&state, principal).await?;
    Ok(render(&InboxPage {
        chrome: Chrome::new(&visitor, "steward"),
        fees: inbox.unpaid_fees.iter().map(fee_row).collect(),
        duties: inbox.overdue_duties.iter().map(|d| duty_row(d, &titles)).collect(),
        notices: inbox.unacknowledged_notices.iter().map(|n| notice_row(n, &titles)).collect(),
        inbox,
    }))
}

// ------------------------------------------------------------------ grants

struct GrantRow {
    id: Uuid,
    project: String,
    cohorts: String,
    state: &'static str,
    version: i32,
    not_after: String,
    expiring: bool,
}

#[derive(Debug, Default, Deserialize)]
struct GrantFilter {
    #[serde(default)]
    state: String,
}

#[derive(Template)]
#[template(path = "steward_grants.html", config = "src/web/askama.toml")]
struct GrantsPage {
    chrome: Chrome,
    state: String,
    states: Vec<&'static str>,
    grants: Vec<GrantRow>,
}

async fn grants_page(State(state): State<AppState>, visitor: Visitor, Query(filter): Query<GrantFilter>) -> PageResult {
    let principal = visitor.signed_in()?;
    let all = grants::all(&state.db, principal).await?;
    let titles = project_titles(&state, principal).await?;
    let soon = Utc::now() + chrono::Duration::days(60);
    let grants = all
        .iter()
        .filter(|g| filter.state.is_empty() || g.effective_state.as_str() == filter.state)
        .map(|g| GrantRow {
            id: g.id,
            project: title_of(&titles, g.project_id),
            cohorts: g.scope.cohorts.join(", "),
            state: g.effective_state.as_str(),
            version: g.version,
            not_after: when(g.not_after),
            expiring: g.effective_state == GrantState::Active && g.not_after < soon,
        })
        .collect();
    Ok(render(&GrantsPage {
        chrome: Chrome::new(&visitor, "steward"),
        state: filter.state,
        states: vec!["pending", "active", "suspended", "revoked", "expired", "closed"],
        grants,
    }))
}

/// A steward's action the grant's state allows now.
struct ActionForm {
    action: &'static str,
    label: &'static str,
    help: &'static str,
}

#[derive(Template)]
#[template(path = "steward_grant.html", config = "src/web/askama.toml")]
struct GrantPage {
    chrome: Chrome,
    grant: Grant,
    project: String,
    pi: String,
    history: Vec<Grant>,
    actions: Vec<ActionForm>,
    renewals: Vec<RenewalItem>,
    fees: Vec<FeeView>,
    duties: Vec<Obligation>,
}

/// A fee with its amount and settlement in words.
struct FeeView {
    fee: Fee,
    amount: String,
    settled: Option<String>,
}

/// The actions a grant in `state` can take (the transition table decides;
/// the service function checks again when the form is sent).
fn actions(state: GrantState) -> Vec<ActionForm> {
    let reason = "";
    [
        (Change::Suspend { reason }, "suspend", "Suspend", "Holds every use of the grant until it is reinstated."),
        (Change::Reinstate { reason }, "reinstate", "Reinstate", "Lifts the suspension."),
        (Change::Revoke { reason }, "revoke", "Revoke", "Ends the grant for good; it cannot be reinstated."),
    ]
    .into_iter()
    .filter(|(change, ..)| change.next(state).is_some())
    .map(|(_, action, label, help)| ActionForm { action, label, help })
    .collect()
}

async fn grant_page(State(state): State<AppState>, visitor: Visitor, Path(grant_id): Path<String>) -> PageResult {
    let principal = visitor.signed_in()?;
    let grant_id = id(&grant_id, "grant")?;
    // The committee's role guard, before anything of the grant is read.
    crate::access::review::steward(principal)?;
    let history = grants::history(&state.db, grant_id).await?;
    let grant = history.last().cloned().ok_or(WebError::NotFound("grant"))?;
    let project = projects::find_project(&state.db, principal, grant.project_id).await?;
    let renewals = renewals::list(&state.db, principal, Some("all"))
        .await?
        .into_iter()
        .filter(|r| r.renewal.grant_id == grant_id)
        .collect();
    let fees = duties::fees(&state.db, grant.application_id)
        .await?
        .into_iter()
        .map(|fee| FeeView {
            amount: money(fee.amount, &fee.currency),
            settled: fee.settlement.map(|s| {
                let how = if s == duties::FeeSettlement::Paid { "paid" } else { "waived" };
                format!(
                    "{how} ({}, by {})",
                    fee.settlement_note.as_deref().unwrap_or(""),
                    fee.settled_by.as_deref().unwrap_or("?")
                )
            }),
            fee,
        })
        .collect();
    let duties = duties::all_obligations(&state.db, principal, false)
        .await?
        .into_iter()
        .filter(|o| o.grant_id == grant_id)
        .collect();
    Ok(render(&GrantPage {
        chrome: Chrome::new(&visitor, "steward"),
        actions: actions(grant.effective_state),
        project: project.title,
        pi: project.pi_username,
        history: history.into_iter().rev().collect(),
        grant,
        renewals,
        fees,
        duties,
    }))
}

/// A choice with its reason: a grant's change, a renewal's decision.
#[derive(Debug, Deserialize)]
struct ReasonedForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

async fn change_grant(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(grant_id): Path<String>,
    Form(form): Form<ReasonedForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let grant_id = id(&grant_id, "grant")?;
    let action = match form.action.as_str() {
        "suspend" => StewardAction::Suspend,
        "reinstate" => StewardAction::Reinstate,
        "revoke" => StewardAction::Revoke,
        _ => return Err(ApiError::BadRequest("the action is suspend, reinstate or revoke".into()).into()),
    };
    let mut tx = state.db.begin().await?;
    grants::steward_change(&mut tx, principal, grant_id, action, &form.reason).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/ui/steward/grants/{grant_id}")).into_response())
}

async fn decide_renewal(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(renewal_id): Path<String>,
    Form(form): Form<ReasonedForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let renewal_id = id(&renewal_id, "renewal")?;
    let approve = match form.action.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(ApiError::BadRequest("the decision is approve or reject".into()).into()),
    };
    let mut tx = state.db.begin().await?;
    let decided = renewals::decide(&mut tx, principal, renewal_id, approve, &form.reason).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/ui/steward/grants/{}#renewals", decided.grant_id)).into_response())
}

#[derive(Debug, Deserialize)]
struct SettlementForm {
    #[serde(default)]
    settlement: String,
    #[serde(default)]
    note: String,
}

async fn settle_fee(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(fee_id): Path<String>,
    Form(form): Form<SettlementForm>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let fee_id = id(&fee_id, "fee")?;
    let mut tx = state.db.begin().await?;
    let fee = duties::settle(&mut tx, principal, fee_id, &form.settlement, &form.note).await?;
    tx.commit().await?;
    Ok(Redirect::to(&fee_row(&fee).link).into_response())
}

// ------------------------------------------------------------------ profiles

#[derive(Debug, Default, Deserialize)]
struct ProfileFilter {
    #[serde(default)]
    all: bool,
}

#[derive(Template)]
#[template(path = "steward_profiles.html", config = "src/web/askama.toml")]
struct ProfilesPage {
    chrome: Chrome,
    all: bool,
    profiles: Vec<Profile>,
    me: String,
}

async fn profiles_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(filter): Query<ProfileFilter>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    // The role check of `GET /api/v1/profiles`, which lists with the same function.
    principal.require_any(projects::STEWARDS)?;
    let profiles = projects::list_profiles(&state.db, !filter.all).await?;
    Ok(render(&ProfilesPage {
        chrome: Chrome::new(&visitor, "steward"),
        all: filter.all,
        profiles,
        me: principal.username.clone(),
    }))
}

async fn verify_profile(State(state): State<AppState>, visitor: Visitor, Path(username): Path<String>) -> PageResult {
    let principal = visitor.signed_in()?;
    projects::verify_profile(&state.db, principal, &username).await?;
    Ok(Redirect::to("/ui/steward/profiles?all=true").into_response())
}

// ------------------------------------------------------------------ withdrawals

/// A withdrawal as the audit log recorded it.
struct WithdrawalRow {
    at: String,
    by: String,
    subject: String,
    scope: String,
    notices: String,
    series_removed: String,
}

struct ProjectNotices {
    project: String,
    grants: String,
    notices: Vec<NoticeRow>,
    open: usize,
}

#[derive(Template)]
#[template(path = "steward_withdrawals.html", config = "src/web/askama.toml")]
struct WithdrawalsPage {
    chrome: Chrome,
    withdrawals: Vec<WithdrawalRow>,
    projects: Vec<ProjectNotices>,
}

fn detail(event: &AuditEvent, key: &str) -> String {
    match &event.details[key] {
        serde_json::Value::Null => "—".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn withdrawals_page(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut conn = state.db.acquire().await?;
    let notices = withdrawal::open_notices(&mut conn, principal, false).await?;
    drop(conn);
    let query = AuditQuery { action: Some("subject.withdraw".into()), limit: Some(1000), ..AuditQuery::default() };
    let recorded = audit_api::events(&state.db, principal, query).await?;
    let withdrawals = recorded
        .events
        .iter()
        .rev()
        .map(|e| WithdrawalRow {
            at: when(e.occurred_at),
            by: e.actor.clone(),
            subject: e.target.as_deref().unwrap_or("").trim_start_matches("subject:").to_owned(),
            scope: detail(e, "scope"),
            notices: detail(e, "notices"),
            series_removed: detail(e, "series_removed"),
        })
        .collect();
    let titles = project_titles(&state, principal).await?;
    let all_grants = grants::all(&state.db, principal).await?;
    let mut projects: Vec<ProjectNotices> = Vec::new();
    let mut order: Vec<Uuid> = Vec::new();
    for notice in notices.iter().rev() {
        if !order.contains(&notice.project_id) {
            order.push(notice.project_id);
        }
    }
    for project in order {
        let of_project: Vec<NoticeRow> =
            notices.iter().rev().filter(|n| n.project_id == project).map(|n| notice_row(n, &titles)).collect();
        let grants = all_grants
            .iter()
            .filter(|g| g.project_id == project)
            .map(|g| format!("{} ({})", g.scope.cohorts.join(", "), g.effective_state.as_str()))
            .collect::<Vec<_>>()
            .join("; ");
        projects.push(ProjectNotices {
            project: title_of(&titles, project),
            grants: if grants.is_empty() { "none".to_owned() } else { grants },
            open: of_project.iter().filter(|n| n.acknowledged.is_none()).count(),
            notices: of_project,
        });
    }
    Ok(render(&WithdrawalsPage { chrome: Chrome::new(&visitor, "steward"), withdrawals, projects }))
}

#[derive(Debug, Deserialize)]
struct WithdrawalForm {
    #[serde(default)]
    pseudonym: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    patient_id: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    scope: String,
}

fn given(text: &str) -> Option<&str> {
    let text = text.trim();
    (!text.is_empty()).then_some(text)
}

async fn withdraw(State(state): State<AppState>, visitor: Visitor, Form(form): Form<WithdrawalForm>) -> PageResult {
    let principal = visitor.signed_in()?;
    let scope = Scope::parse(&form.scope).ok_or_else(|| ApiError::BadRequest("the scope is full or imaging".into()))?;
    let named = Named {
        pseudonym: given(&form.pseudonym),
        site: given(&form.site),
        patient_id: given(&form.patient_id),
        issuer: given(&form.issuer),
    };
    let mut tx = state.db.begin().await?;
    let Withdrawn { .. } = withdrawal::withdraw_subject(&mut tx, principal, &state.ingest.key, named, scope).await?;
    tx.commit().await?;
    Ok(Redirect::to("/ui/steward/withdrawals").into_response())
}

// ------------------------------------------------------------------ quarantine

#[derive(Template)]
#[template(path = "steward_quarantine.html", config = "src/web/askama.toml")]
struct QuarantinePage {
    chrome: Chrome,
    instances: Vec<QuarantinedInstance>,
}

async fn quarantine_page(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    let principal = visitor.signed_in()?;
    let instances = quarantine::list(&state.db, principal).await?;
    Ok(render(&QuarantinePage { chrome: Chrome::new(&visitor, "steward"), instances }))
}

#[derive(Template)]
#[template(path = "steward_quarantined.html", config = "src/web/askama.toml")]
struct QuarantinedPage {
    chrome: Chrome,
    held: quarantine::Held,
    /// Why there is no picture, when there is none.
    no_preview: Option<String>,
    size: String,
}

async fn quarantined_page(State(state): State<AppState>, visitor: Visitor, Path(sop_uid): Path<String>) -> PageResult {
    let principal = visitor.signed_in()?;
    let held = quarantine::find(&state.db, principal, &sop_uid).await?;
    let no_preview = crate::catalog::preview::previewable(&held.transfer_syntax).err().map(|e| e.0);
    let size = match (held.columns, held.rows) {
        (Some(c), Some(r)) => format!("{c} × {r} pixels"),
        _ => "not recorded".to_owned(),
    };
    Ok(render(&QuarantinedPage { chrome: Chrome::new(&visitor, "steward"), held, no_preview, size }))
}

/// The rendered image; stewards only, audited as a view, never cached.
async fn preview_png(State(state): State<AppState>, visitor: Visitor, Path(sop_uid): Path<String>) -> PageResult {
    let principal = visitor.signed_in()?;
    match quarantine::preview(&state.db, state.store.as_ref(), principal, &sop_uid).await? {
        Ok(preview) => Ok((
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            preview.png,
        )
            .into_response()),
        Err(why) => Err(ApiError::Conflict(why.0).into()),
    }
}

async fn release_quarantined(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(sop_uid): Path<String>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut tx = state.db.begin().await?;
    quarantine::release(&mut tx, principal, &sop_uid).await?;
    tx.commit().await?;
    Ok(Redirect::to("/ui/steward/quarantine").into_response())
}

async fn delete_quarantined(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(sop_uid): Path<String>,
) -> PageResult {
    let principal = visitor.signed_in()?;
    let mut tx = state.db.begin().await?;
    let key = quarantine::delete(&mut tx, principal, &sop_uid).await?;
    tx.commit().await?;
    quarantine::delete_object(state.store.as_ref(), key).await;
    Ok(Redirect::to("/ui/steward/quarantine").into_response())
}

// ------------------------------------------------------------------ the audit log

#[derive(Debug, Default, Deserialize)]
struct AuditForm {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after_seq: String,
}

struct EventRow {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    target: String,
    details: String,
}

#[derive(Template)]
#[template(path = "steward_audit.html", config = "src/web/askama.toml")]
struct AuditPage {
    chrome: Chrome,
    form: AuditForm,
    report: VerifyReport,
    events: Vec<EventRow>,
    next: Option<String>,
}

/// A time from a `datetime-local` field (UTC) or RFC 3339.
fn instant(field: &str, text: &str) -> Result<Option<DateTime<Utc>>, WebError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| Some(t.and_utc()))
        .ok_or_else(|| ApiError::InvalidQuery(format!("`{field}` is a date and time such as 2026-12-06T09:30")).into())
}

async fn audit_page(State(state): State<AppState>, visitor: Visitor, Query(form): Query<AuditForm>) -> PageResult {
    let principal = visitor.signed_in()?;
    let report = audit_api::verify(&state.db, principal).await?;
    let after_seq = match form.after_seq.trim() {
        "" => None,
        text => Some(text.parse::<i64>().map_err(|_| ApiError::InvalidQuery("`after_seq` is a number".into()))?),
    };
    let query = AuditQuery {
        actor: given(&form.actor).map(str::to_owned),
        action: given(&form.action).map(str::to_owned),
        target: given(&form.target).map(str::to_owned),
        since: instant("since", &form.since)?,
        until: instant("until", &form.until)?,
        after_seq,
        limit: Some(100),
    };
    let page = audit_api::events(&state.db, principal, query).await?;
    let next = page.next_after_seq.map(|seq| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("actor", form.actor.as_str()),
                ("action", form.action.as_str()),
                ("target", form.target.as_str()),
                ("since", form.since.as_str()),
                ("until", form.until.as_str()),
                ("after_seq", &seq.to_string()),
            ])
            .finish()
    });
    let events = page
        .events
        .into_iter()
        .map(|e| EventRow {
            seq: e.seq,
            at: when(e.occurred_at),
            details: if e.details.as_object().is_some_and(serde_json::Map::is_empty) {
                String::new()
            } else {
                e.details.to_string()
            },
            actor: e.actor,
            action: e.action,
            target: e.target.unwrap_or_default(),
        })
        .collect();
    Ok(render(&AuditPage { chrome: Chrome::new(&visitor, "steward"), form, report, events, next }))
}
