//! Grants: what an approved application lets a project use, for how long and
//! under which conditions. Grants are append-only versions; the latest version
//! is in force, and it is checked on every request that touches row-level data
//! or files, so expiry, suspension and revocation take effect on the very next
//! call without a background job.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, NewEvent};
use crate::auth::{Principal, Role};
use crate::deid::pseudonym::RegistryKey;
use crate::error::{ApiError, Refusal};

/// What an application asks for and a grant allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Cohort slugs.
    pub cohorts: Vec<String>,
    /// Data dictionary field ids (empty: none beyond the imaging catalog).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Data dictionary categories, every field of which is requested.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Modalities (empty: every modality).
    #[serde(default)]
    pub modalities: Vec<String>,
    /// Annotation kinds (`segmentation`, `contour`, `landmark`, `box`, `label`).
    #[serde(default)]
    pub annotation_kinds: Vec<String>,
    /// Whether imaging itself is requested (not only tables).
    pub imaging: bool,
}

/// Conditions a committee attaches to an approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Free-text conditions.
    #[serde(default)]
    pub text: Vec<String>,
    /// Only these fields may be released (absent: the requested scope).
    #[serde(default)]
    pub allowed_fields: Option<Vec<String>>,
    /// Imaging may be analysed where it is but not downloaded.
    #[serde(default)]
    pub no_imaging_download: bool,
    /// The grant ends on this day at the latest.
    #[serde(default)]
    pub expires_on: Option<NaiveDate>,
    /// An annual progress report is due.
    #[serde(default)]
    pub annual_report: bool,
}

impl Conditions {
    /// The conditions of several votes together: every text, the narrowest
    /// field list, the earliest end, any restriction.
    pub fn merge(all: impl IntoIterator<Item = Conditions>) -> Conditions {
        let mut out = Conditions::default();
        for c in all {
            out.text.extend(c.text);
            out.allowed_fields = match (out.allowed_fields, c.allowed_fields) {
                (None, x) | (x, None) => x,
                (Some(a), Some(b)) => Some(a.into_iter().filter(|f| b.contains(f)).collect()),
            };
            out.no_imaging_download |= c.no_imaging_download;
            out.expires_on = match (out.expires_on, c.expires_on) {
                (None, x) | (x, None) => x,
                (Some(a), Some(b)) => Some(a.min(b)),
            };
            out.annual_report |= c.annual_report;
        }
        out.text.dedup();
        out
    }
}

/// The state of a grant version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum GrantState {
    /// Approved; waiting for the PI to accept the data use agreement.
    Pending,
    Active,
    Suspended,
    Revoked,
    /// Past its end (a state of the moment, never stored).
    Expired,
    Closed,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Closed => "closed",
        }
    }
}

/// One version of a grant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Grant {
    pub id: Uuid,
    pub version: i32,
    pub project_id: Uuid,
    pub application_id: Uuid,
    /// As stored in this version.
    pub state: GrantState,
    /// As of now: `expired` once `not_after` has passed.
    pub effective_state: GrantState,
    pub scope: Scope,
    pub conditions: Conditions,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Why this version was made (suspension, revocation, renewal).
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A grant version as stored: scope and conditions still to be read.
#[derive(Deserialize)]
struct GrantRow {
    grant_id: Uuid,
    version: i32,
    project_id: Uuid,
    application_id: Uuid,
    state: GrantState,
    scope: Value,
    conditions: Value,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    reason: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
}

fn effective(state: GrantState, not_after: DateTime<Utc>, now: DateTime<Utc>) -> GrantState {
    if state == GrantState::Active && now >= not_after { GrantState::Expired } else { state }
}

fn grant(row: GrantRow, now: DateTime<Utc>) -> Result<Grant, ApiError> {
    Ok(Grant {
        id: row.grant_id,
        version: row.version,
        project_id: row.project_id,
        application_id: row.application_id,
        state: row.state,
        effective_state: effective(row.state, row.not_after, now),
        scope: super::read_stored(row.scope, "a stored grant's scope", &row.grant_id)?,
        conditions: super::read_stored(row.conditions, "a stored grant's conditions", &row.grant_id)?,
        not_before: row.not_before,
        not_after: row.not_after,
        reason: row.reason,
        created_by: row.created_by,
        created_at: row.created_at,
    })
}

/// Every version of grant `id`, oldest first, if the caller may read it (the
/// project's members, stewards and admins); for anyone else it does not exist.
pub async fn visible(db: &sqlx::PgPool, principal: &Principal, id: Uuid) -> Result<Vec<Grant>, ApiError> {
    let history = history(db, id).await?;
    let Some(first) = history.first() else { return Err(ApiError::NotFound("grant")) };
    super::standing::standing(db, first.project_id, principal).await?.require_reader("grant")?;
    Ok(history)
}

/// The latest version of every grant of a project, newest grant first.
pub async fn of_project(db: impl PgExecutor<'_>, project_id: Uuid) -> Result<Vec<Grant>, ApiError> {
    in_force(db, Some(project_id)).await
}

/// The version in force of every grant of every project, newest grant first
/// (stewards and admins).
pub async fn all(db: impl PgExecutor<'_>, principal: &Principal) -> Result<Vec<Grant>, ApiError> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    in_force(db, None).await
}

/// The latest version of every grant, of one project or of all.
async fn in_force(db: impl PgExecutor<'_>, project_id: Option<Uuid>) -> Result<Vec<Grant>, ApiError> {
    let rows = sqlx::query_as!(
        GrantRow,
        r#"select distinct on (grant_id) grant_id, version, project_id, application_id, state as "state: GrantState",
                  scope, conditions, not_before, not_after, reason, created_by, created_at
           from access_grant where $1::uuid is null or project_id = $1
           order by grant_id, version desc"#,
        project_id
    )
    .fetch_all(db)
    .await?;
    let now = Utc::now();
    let mut grants = rows.into_iter().map(|r| grant(r, now)).collect::<Result<Vec<_>, _>>()?;
    grants.sort_by_key(|g| std::cmp::Reverse(g.created_at));
    Ok(grants)
}

/// Every version of one grant, oldest first.
pub async fn history(db: impl PgExecutor<'_>, grant_id: Uuid) -> Result<Vec<Grant>, ApiError> {
    let rows = sqlx::query_as!(
        GrantRow,
        r#"select grant_id, version, project_id, application_id, state as "state: GrantState",
                  scope, conditions, not_before, not_after, reason, created_by, created_at
           from access_grant where grant_id = $1 order by version"#,
        grant_id
    )
    .fetch_all(db)
    .await?;
    let now = Utc::now();
    rows.into_iter().map(|r| grant(r, now)).collect()
}

/// The version in force of a grant, locked for a change in `tx`.
pub async fn latest_for_update(tx: &mut PgConnection, grant_id: Uuid) -> Result<Option<Grant>, ApiError> {
    // Versions are append-only: lock the grant's first version as the grant's lock.
    sqlx::query!("select 1 as locked from access_grant where grant_id = $1 and version = 1 for update", grant_id)
        .fetch_optional(&mut *tx)
        .await?;
    let row = sqlx::query_as!(
        GrantRow,
        r#"select grant_id, version, project_id, application_id, state as "state: GrantState",
                  scope, conditions, not_before, not_after, reason, created_by, created_at
           from access_grant where grant_id = $1 order by version desc limit 1"#,
        grant_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    row.map(|r| grant(r, Utc::now())).transpose()
}

/// A new version of a grant.
pub struct NewVersion<'a> {
    pub grant_id: Uuid,
    pub version: i32,
    pub project_id: Uuid,
    pub application_id: Uuid,
    pub state: GrantState,
    pub scope: &'a Scope,
    pub conditions: &'a Conditions,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub reason: Option<&'a str>,
    pub created_by: &'a str,
}

/// Writes a version; returns when it was made.
async fn write(tx: &mut PgConnection, v: &NewVersion<'_>) -> Result<DateTime<Utc>, ApiError> {
    Ok(sqlx::query_scalar!(
        "insert into access_grant (grant_id, version, project_id, application_id, state, scope, conditions,
                                   not_before, not_after, reason, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning created_at",
        v.grant_id,
        v.version,
        v.project_id,
        v.application_id,
        v.state as GrantState,
        sqlx::types::Json(v.scope) as _,
        sqlx::types::Json(v.conditions) as _,
        v.not_before,
        v.not_after,
        v.reason,
        v.created_by,
    )
    .fetch_one(&mut *tx)
    .await?)
}

/// Writes a version as given. A change of a grant that exists goes through
/// [`transition`], which checks it is allowed; this stays for the first version.
pub async fn insert(tx: &mut PgConnection, v: NewVersion<'_>) -> Result<(), ApiError> {
    write(tx, &v).await.map(|_| ())
}

/// A change of a grant in force; each writes the grant's next version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The PI accepted the data use agreement: a pending grant takes effect.
    Activate { reason: &'a str },
    /// A steward holds the grant (an overdue report, an incident, ...).
    Suspend { reason: &'a str },
    /// A steward lifts a suspension.
    Reinstate { reason: &'a str },
    /// A steward ends the grant for good.
    Revoke { reason: &'a str },
    /// An approved renewal: the grant runs until `until`.
    Renew { until: DateTime<Utc>, reason: &'a str },
    /// The project was closed.
    Close { reason: &'a str },
}

impl<'a> Change<'a> {
    /// The one table of allowed changes: the state a grant that is `from`
    /// (its effective state) takes, or `None` when the change is refused.
    // One row per change, read top to bottom, rather than rows merged by their result.
    #[allow(clippy::match_same_arms)]
    pub fn next(self, from: GrantState) -> Option<GrantState> {
        use GrantState::{Active, Closed, Expired, Pending, Revoked, Suspended};
        match (self, from) {
            (Self::Activate { .. }, Pending) | (Self::Reinstate { .. }, Suspended) => Some(Active),
            (Self::Suspend { .. }, Active) => Some(Suspended),
            (Self::Revoke { .. }, Active | Suspended | Pending) => Some(Revoked),
            // A suspended grant stays suspended through a renewal; a grant revoked
            // or closed while its renewal waited is not brought back by it.
            (Self::Renew { .. }, Suspended) => Some(Suspended),
            (Self::Renew { .. }, Active | Expired) => Some(Active),
            (Self::Close { .. }, Pending | Active | Expired | Suspended) => Some(Closed),
            _ => None,
        }
    }

    fn reason(self) -> &'a str {
        match self {
            Self::Activate { reason }
            | Self::Suspend { reason }
            | Self::Reinstate { reason }
            | Self::Revoke { reason }
            | Self::Renew { reason, .. }
            | Self::Close { reason } => reason,
        }
    }

    /// The steward's action, audited as `grant.<action>` with the PI notified;
    /// the other changes are part of a larger act whose own event names the version.
    fn steward_action(self) -> Option<&'static str> {
        match self {
            Self::Suspend { .. } => Some("suspend"),
            Self::Reinstate { .. } => Some("reinstate"),
            Self::Revoke { .. } => Some("revoke"),
            Self::Activate { .. } | Self::Renew { .. } | Self::Close { .. } => None,
        }
    }

    fn refusal(self, current: &Grant) -> ApiError {
        let done = match self {
            Self::Activate { .. } => {
                return ApiError::Conflict(format!("the grant is {}, not pending", current.state.as_str()));
            }
            Self::Suspend { .. } => "suspended",
            Self::Reinstate { .. } => "reinstated",
            Self::Revoke { .. } => "revoked",
            Self::Renew { .. } => "renewed",
            Self::Close { .. } => "closed",
        };
        ApiError::Conflict(format!("a grant that is {} cannot be {done}", current.effective_state.as_str()))
    }
}

/// Changes a grant: locks the version in force, checks the change is allowed
/// from its state ([`Change::next`]), writes the next version and, for a
/// steward's suspension, reinstatement or revocation, its audit event and the
/// PI's notification. Returns the new version in force.
pub async fn transition(
    tx: &mut PgConnection,
    principal: &Principal,
    grant_id: Uuid,
    change: Change<'_>,
) -> Result<Grant, ApiError> {
    let current = latest_for_update(tx, grant_id).await?.ok_or(ApiError::NotFound("grant"))?;
    let to = change.next(current.effective_state).ok_or_else(|| change.refusal(&current))?;
    let reason = change.reason();
    let not_after = if let Change::Renew { until, .. } = change { until } else { current.not_after };
    let version = current.version + 1;
    let next = NewVersion {
        grant_id,
        version,
        project_id: current.project_id,
        application_id: current.application_id,
        state: to,
        scope: &current.scope,
        conditions: &current.conditions,
        not_before: current.not_before,
        not_after,
        reason: Some(reason),
        created_by: &principal.username,
    };
    let created_at = write(tx, &next).await?;
    if let Some(action) = change.steward_action() {
        audit::record(
            tx,
            NewEvent::new(&principal.username, &format!("grant.{action}")).target(format!("grant:{grant_id}")).details(
                json!({ "version": version, "from": current.effective_state, "to": to, "reason": reason, "at": Utc::now() }),
            ),
        )
        .await?;
        let pi = super::duties::pi_of(&mut *tx, current.project_id).await?;
        super::duties::notify(
            tx,
            &pi,
            &format!("grant.{}", to.as_str()),
            &format!("A grant of your project is now {}: {reason}", to.as_str()),
            &format!("grant:{grant_id}"),
        )
        .await?;
    }
    Ok(Grant {
        version,
        state: to,
        effective_state: effective(to, not_after, Utc::now()),
        not_after,
        reason: Some(reason.to_owned()),
        created_by: principal.username.clone(),
        created_at,
        ..current
    })
}

/// What a steward does to a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StewardAction {
    Suspend,
    Reinstate,
    Revoke,
}

/// A steward or admin suspends, reinstates or revokes a grant with a reason
/// (1 to 2,000 characters, shown to the project), effective immediately.
pub async fn steward_change(
    tx: &mut PgConnection,
    principal: &Principal,
    grant_id: Uuid,
    action: StewardAction,
    reason: &str,
) -> Result<Grant, ApiError> {
    principal.require_any(&[Role::Steward, Role::Admin])?;
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(ApiError::BadRequest("`reason` is 1 to 2,000 characters".into()));
    }
    let change = match action {
        StewardAction::Suspend => Change::Suspend { reason },
        StewardAction::Reinstate => Change::Reinstate { reason },
        StewardAction::Revoke => Change::Revoke { reason },
    };
    transition(tx, principal, grant_id, change).await
}

/// What a request needs from a grant.
#[derive(Debug, Clone, Copy)]
pub struct Need<'a> {
    pub cohort: &'a str,
    /// Imaging (not only tables).
    pub imaging: bool,
}

fn refused(code: Refusal, message: String) -> ApiError {
    ApiError::Refused { code, message }
}

/// Checks, now, that `username` may use `need` through `project_id`: an
/// accepted member of an open project, with verified bona fides when the
/// rules ask for them, whose grant for the cohort is active and within its
/// dates. Returns that grant, or a refusal that says why.
pub async fn check(
    db: impl PgExecutor<'_>,
    project_id: Uuid,
    username: &str,
    need: Need<'_>,
    rules: &crate::config::AccessConfig,
) -> Result<Grant, ApiError> {
    let hold_after_overdue_days = rules.hold_after_overdue_days;
    let found = sqlx::query!(
        r#"select exists (select 1 from project_member m where m.project_id = p.project_id and m.username = $2
                          and m.accepted_at is not null and m.removed_at is null) as "member!",
                  exists (select 1 from researcher_profile r where r.username = $2 and r.verified_at is not null)
                      as "verified!",
                  p.closed_at is not null as "closed!",
                  coalesce((select jsonb_agg(to_jsonb(g) || jsonb_build_object('overdue', (
                                select jsonb_build_object('kind', o.kind, 'due_on', o.due_on) from obligation o
                                where o.grant_id = g.grant_id and o.fulfilled_at is null
                                  and $4 > 0 and o.due_on < current_date - $4
                                order by o.due_on limit 1),
                                'unpaid', exists (select 1 from fee f where f.grant_id = g.grant_id
                                                  and f.kind = 'maintenance' and f.settlement is null)))
                            from (select distinct on (grant_id) g.* from access_grant g
                                  where g.project_id = p.project_id and g.scope -> 'cohorts' ? $3
                                  order by grant_id, version desc) g), '[]') as "grants!"
           from project p where p.project_id = $1"#,
        project_id,
        username,
        need.cohort,
        i32::try_from(hold_after_overdue_days).unwrap_or(i32::MAX),
    )
    .fetch_optional(db)
    .await?;
    let (member, verified, closed, rows) = match found {
        Some(r) => (r.member, r.verified, r.closed, r.grants),
        None => (false, false, false, Value::Array(Vec::new())),
    };
    if !member {
        // Not a member, or no such project: the same answer.
        return Err(ApiError::NotFound("project"));
    }
    if rules.require_verified_profiles && !verified {
        return Err(refused(
            Refusal::UnverifiedProfile,
            "your researcher profile's bona fides are not verified by a steward yet; data access waits for it".into(),
        ));
    }
    if closed {
        return Err(refused(Refusal::ProjectClosed, "the project is closed; its access has ended".into()));
    }
    let now = Utc::now();
    let mut grants = Vec::new();
    let rows: Vec<StoredGrant> = super::read_stored(rows, "the grants of a project", &project_id)?;
    for row in rows {
        grants.push((grant(row.grant, now)?, row.overdue, row.unpaid));
    }
    // The best grant decides: an active one without a hold if there is one, else the most recent reason.
    grants.sort_by_key(|(g, overdue, unpaid)| {
        (g.effective_state != GrantState::Active, *unpaid, overdue.is_some(), std::cmp::Reverse(g.created_at))
    });
    let Some((g, overdue, unpaid)) = grants.into_iter().next() else {
        return Err(refused(Refusal::NoGrant, format!("the project has no grant for the cohort `{}`", need.cohort)));
    };
    let why = g.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    match g.effective_state {
        GrantState::Active if now < g.not_before => Err(refused(
            Refusal::GrantNotYetValid,
            format!("the grant for `{}` starts on {}", need.cohort, g.not_before.date_naive()),
        )),
        GrantState::Active if need.imaging && !g.scope.imaging => Err(refused(
            Refusal::OutsideGrant,
            format!("the grant for `{}` covers tables only, not imaging", need.cohort),
        )),
        GrantState::Active if unpaid => Err(refused(
            Refusal::FeeUnsettled,
            "the grant is held: the maintenance fee of its renewal is neither paid nor waived; a steward records its \
             settlement"
                .into(),
        )),
        GrantState::Active => match overdue {
            Some(duty) => Err(refused(
                Refusal::ObligationOverdue,
                format!(
                    "the grant is held: the project's {} was due on {}, more than {hold_after_overdue_days} days \
                     ago; the PI fulfils it to lift the hold",
                    duty.kind.as_str().replace('_', " "),
                    duty.due_on
                ),
            )),
            None => Ok(g),
        },
        GrantState::Pending => Err(refused(
            Refusal::GrantPending,
            "the grant is approved but not active yet: the PI has to accept the data use agreement".into(),
        )),
        GrantState::Suspended => Err(refused(Refusal::GrantSuspended, format!("the grant is suspended{why}"))),
        GrantState::Revoked => Err(refused(Refusal::GrantRevoked, format!("the grant was revoked{why}"))),
        GrantState::Expired => Err(refused(
            Refusal::GrantExpired,
            format!("the grant expired on {}; the PI can request a renewal", g.not_after.date_naive()),
        )),
        GrantState::Closed => Err(refused(Refusal::GrantClosed, "the grant is closed".into())),
    }
}

/// A duty overdue beyond the grace period.
#[derive(Deserialize)]
struct OverdueDuty {
    kind: super::duties::ObligationKind,
    due_on: NaiveDate,
}

/// A grant version with what holds it, as [`check`] reads it.
#[derive(Deserialize)]
struct StoredGrant {
    #[serde(default)]
    overdue: Option<OverdueDuty>,
    /// A renewal's maintenance fee is neither paid nor waived.
    #[serde(default)]
    unpaid: bool,
    #[serde(flatten)]
    grant: GrantRow,
}

/// Creates the project's own pseudonymization key unless it has one, sealed
/// (AES-256-GCM) under a key derived from the registry key.
pub async fn ensure_project_key(tx: &mut PgConnection, key: &RegistryKey, project_id: Uuid) -> Result<bool, ApiError> {
    // A closed project's key was destroyed with its linkage; it is never made again.
    super::projects::ensure_open(tx, project_id).await?;
    let stored = new_sealed_key(key, project_id.as_bytes())?;
    let created = sqlx::query!(
        "insert into project_key (project_id, sealed) values ($1, $2) on conflict do nothing",
        project_id,
        stored
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(created == 1)
}

/// A fresh random 32-byte key, sealed (AES-256-GCM, nonce first) under a key
/// derived from the registry key, bound to `owner` (authenticated data), so
/// a sealed key copied to another owner does not open.
pub fn new_sealed_key(key: &RegistryKey, owner: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut secret = [0u8; 32];
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| ApiError::Internal(anyhow::anyhow!("no randomness")))?;
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ApiError::Internal(anyhow::anyhow!("no randomness")))?;
    let sealing = sealing_key(key)?;
    let mut sealed = secret.to_vec();
    sealing
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(owner), &mut sealed)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("sealing a pseudonymization key failed")))?;
    let mut stored = nonce.to_vec();
    stored.extend_from_slice(&sealed);
    Ok(stored)
}

/// Opens a key sealed by [`new_sealed_key`] for `owner`.
pub fn open_sealed_key(key: &RegistryKey, owner: &[u8], stored: &[u8]) -> Result<[u8; 32], ApiError> {
    let broken = || ApiError::Internal(anyhow::anyhow!("a pseudonymization key does not unseal"));
    if stored.len() < NONCE_LEN {
        return Err(broken());
    }
    let (nonce, sealed) = stored.split_at(NONCE_LEN);
    let mut sealed = sealed.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| broken())?;
    let plain = sealing_key(key)?.open_in_place(nonce, Aad::from(owner), &mut sealed).map_err(|_| broken())?;
    plain.try_into().map_err(|_| broken())
}

/// The project's key, unsealed (None once destroyed or never made).
pub async fn project_key(
    db: impl PgExecutor<'_>,
    key: &RegistryKey,
    project_id: Uuid,
) -> Result<Option<[u8; 32]>, ApiError> {
    let stored = sqlx::query_scalar!("select sealed from project_key where project_id = $1", project_id)
        .fetch_optional(db)
        .await?;
    stored.map(|stored| open_sealed_key(key, project_id.as_bytes(), &stored)).transpose()
}

fn sealing_key(key: &RegistryKey) -> Result<LessSafeKey, ApiError> {
    let derived = key.derive("project-key-sealing");
    let unbound =
        UnboundKey::new(&AES_256_GCM, &derived).map_err(|_| ApiError::Internal(anyhow::anyhow!("AES key")))?;
    Ok(LessSafeKey::new(unbound))
}

/// Checks that a grant of `scope` that began at `start` may run until `until`
/// under every one of its cohorts' consent terms (DUO TS), as an application
/// for that long would be checked. Terms that cannot be read refuse (fail closed).
pub async fn within_consent(
    db: impl PgExecutor<'_>,
    scope: &Scope,
    start: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<(), ApiError> {
    let rows =
        sqlx::query!("select slug, consent_terms from cohort where slug = any($1) order by slug", &scope.cohorts)
            .fetch_all(db)
            .await?;
    for row in rows {
        let slug = row.slug;
        let Some(terms) = super::consent::stored(&slug, row.consent_terms)? else { continue };
        if let Some(latest) = terms.latest_end(start)
            && until > latest
        {
            return Err(ApiError::Refused {
                code: crate::error::Refusal::ConsentTimeLimit,
                message: format!(
                    "the consent terms of `{slug}` limit use to {} months (TS) from the grant's start on {}: the grant \
                     may run until {} at the latest, not {}",
                    terms.time_limit_months.unwrap_or_default(),
                    start.date_naive(),
                    latest.date_naive(),
                    until.date_naive()
                ),
            });
        }
    }
    Ok(())
}

/// Audits a refused data request (a `Refused` error; others pass): the first
/// refusal of a user, project and code in an hour becomes an audit event with
/// the count of the hour before; the rest of the hour are only counted.
pub async fn audit_refusal(
    db: &sqlx::PgPool,
    username: &str,
    project_id: Uuid,
    error: &ApiError,
    request: &str,
) -> Result<(), ApiError> {
    let ApiError::Refused { code, .. } = error else { return Ok(()) };
    let mut tx = db.begin().await?;
    let first = sqlx::query_scalar!(
        r#"insert into access_refusal (username, project_id, code, hour) values ($1, $2, $3, date_trunc('hour', now()))
           on conflict (username, project_id, code, hour) do update set refusals = access_refusal.refusals + 1
           returning (xmax = 0) as "first!""#,
        username,
        project_id,
        code.as_str()
    )
    .fetch_one(&mut *tx)
    .await?;
    if first {
        let before = sqlx::query_scalar!(
            "select refusals from access_refusal where username = $1 and project_id = $2 and code = $3
             and hour = date_trunc('hour', now()) - interval '1 hour'",
            username,
            project_id,
            code.as_str()
        )
        .fetch_optional(&mut *tx)
        .await?;
        crate::audit::record(
            &mut tx,
            crate::audit::NewEvent::new(username, "access.refused").target(format!("project:{project_id}")).details(
                serde_json::json!({ "code": code, "request": request, "refusals_in_the_hour_before": before.unwrap_or(0) }),
            ),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_table_allows_exactly_these_changes() {
        use GrantState::{Active, Closed, Expired, Pending, Revoked, Suspended};
        let until = Utc::now();
        let reason = "why";
        let expected: [(Change<'_>, [Option<GrantState>; 6]); 6] = [
            // from: Pending, Active, Suspended, Revoked, Expired, Closed
            (Change::Activate { reason }, [Some(Active), None, None, None, None, None]),
            (Change::Suspend { reason }, [None, Some(Suspended), None, None, None, None]),
            (Change::Reinstate { reason }, [None, None, Some(Active), None, None, None]),
            (Change::Revoke { reason }, [Some(Revoked), Some(Revoked), Some(Revoked), None, None, None]),
            (Change::Renew { until, reason }, [None, Some(Active), Some(Suspended), None, Some(Active), None]),
            (Change::Close { reason }, [Some(Closed), Some(Closed), Some(Closed), None, Some(Closed), None]),
        ];
        for (change, row) in expected {
            for (from, to) in [Pending, Active, Suspended, Revoked, Expired, Closed].into_iter().zip(row) {
                assert_eq!(change.next(from), to, "{change:?} from {from:?}");
            }
        }
    }

    #[test]
    fn merged_conditions_keep_every_text_the_narrowest_fields_and_the_earliest_end() {
        let a = Conditions {
            text: vec!["cite the cohort".into()],
            allowed_fields: Some(vec!["age".into(), "sex".into(), "bmi".into()]),
            expires_on: NaiveDate::from_ymd_opt(2028, 1, 1),
            ..Conditions::default()
        };
        let b = Conditions {
            text: vec!["no re-identification attempts".into()],
            allowed_fields: Some(vec!["sex".into(), "bmi".into()]),
            no_imaging_download: true,
            expires_on: NaiveDate::from_ymd_opt(2027, 6, 30),
            annual_report: true,
        };
        let merged = Conditions::merge([a, b, Conditions::default()]);
        assert_eq!(merged.text, ["cite the cohort", "no re-identification attempts"]);
        assert_eq!(merged.allowed_fields, Some(vec!["sex".into(), "bmi".into()]));
        assert!(merged.no_imaging_download && merged.annual_report);
        assert_eq!(merged.expires_on, NaiveDate::from_ymd_opt(2027, 6, 30));
    }
}
