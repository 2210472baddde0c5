//! The authorization matrix of access governance: every endpoint of projects,
//! applications, review and grants (and discovery within a project) against
//! every kind of caller. Nobody succeeds where the matrix says no, a refused
//! request changes nothing (not even the audit log), and whatever a caller may
//! not see answers byte for byte like something that does not exist.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use custodian::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse};

/// A `registered` cohort with consent terms `GRU` that approves by rule.
const REGISTERED: &str = "chest-ct";
/// A `controlled` cohort with consent terms `HMB`: the committee decides.
const CONTROLLED: &str = "brain-mri";
const P1_TITLE: &str = "Glioma growth";
const P2_TITLE: &str = "Cardiac remodelling after infarction";
const A3_TITLE: &str = "Remodelling on serial cardiac MRI";

// ---------------------------------------------------------------- callers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// No token at all.
    Anonymous,
    /// PI of P1.
    Rita,
    /// Accepted collaborator of P1.
    Carl,
    /// Invited to P1, has not accepted.
    Ivan,
    /// Was a collaborator of P1, removed by the PI.
    Remy,
    /// A researcher with no relation to any project.
    Mallory,
    /// PI of P2.
    Olga,
    /// Steward, reviewing P1's application A1.
    Sam,
    /// Admin.
    Alice,
    /// Uploader only.
    Ulrich,
}

const CALLERS: [Caller; 10] = [
    Caller::Anonymous,
    Caller::Rita,
    Caller::Carl,
    Caller::Ivan,
    Caller::Remy,
    Caller::Mallory,
    Caller::Olga,
    Caller::Sam,
    Caller::Alice,
    Caller::Ulrich,
];

impl Caller {
    fn username(self) -> Option<&'static str> {
        Some(match self {
            Self::Anonymous => return None,
            Self::Rita => "rita",
            Self::Carl => "carl",
            Self::Ivan => "ivan",
            Self::Remy => "remy",
            Self::Mallory => "mallory",
            Self::Olga => "olga",
            Self::Sam => "sam",
            Self::Alice => "alice",
            Self::Ulrich => "ulrich",
        })
    }

    fn roles(self) -> &'static [Role] {
        match self {
            Self::Anonymous => &[],
            Self::Sam => &[Role::Steward],
            Self::Alice => &[Role::Admin],
            Self::Ulrich => &[Role::Uploader],
            Self::Rita | Self::Carl | Self::Ivan | Self::Remy | Self::Mallory | Self::Olga => &[Role::Researcher],
        }
    }
}

// ---------------------------------------------------------------- expectations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Any 2xx.
    Ok,
    /// 401 `unauthorized`.
    Unauthorized,
    /// 403, whatever its code.
    Forbidden,
    /// 404, byte for byte the answer about a random id that does not exist.
    Hidden,
}

/// What a signed-in caller may do on one row (anonymous callers are always 401).
type Policy = fn(Caller) -> Expect;

/// Everyone signed in: their own profile, their own project list.
fn anyone(_: Caller) -> Expect {
    Expect::Ok
}

/// Researchers with a profile create projects; other roles do not.
fn researchers(caller: Caller) -> Expect {
    match caller {
        Caller::Sam | Caller::Alice | Caller::Ulrich => Expect::Forbidden,
        _ => Expect::Ok,
    }
}

/// Stewards and admins only.
fn stewards(caller: Caller) -> Expect {
    match caller {
        Caller::Sam | Caller::Alice => Expect::Ok,
        _ => Expect::Forbidden,
    }
}

/// Only the steward assigned to the application (Sam).
fn assigned_steward(caller: Caller) -> Expect {
    if caller == Caller::Sam { Expect::Ok } else { Expect::Forbidden }
}

/// Project P1 itself: its members, invited ones too, stewards and admins.
fn sees_p1(caller: Caller) -> Expect {
    match caller {
        Caller::Rita | Caller::Carl | Caller::Ivan | Caller::Sam | Caller::Alice => Expect::Ok,
        _ => Expect::Hidden,
    }
}

/// P1's applications, grants, their duties and notices, and comments: accepted
/// members, stewards and admins. An invitee sees the project, not its data
/// (as `GET /applications/{id}` already answers him).
fn reads_p1(caller: Caller) -> Expect {
    match caller {
        Caller::Rita | Caller::Carl | Caller::Sam | Caller::Alice => Expect::Ok,
        _ => Expect::Hidden,
    }
}

/// P2 and its application: Olga, stewards and admins.
fn reads_p2(caller: Caller) -> Expect {
    match caller {
        Caller::Olga | Caller::Sam | Caller::Alice => Expect::Ok,
        _ => Expect::Hidden,
    }
}

/// What only P1's PI does with its applications.
fn p1_pi(caller: Caller) -> Expect {
    match caller {
        Caller::Rita => Expect::Ok,
        Caller::Carl | Caller::Sam | Caller::Alice => Expect::Forbidden,
        _ => Expect::Hidden,
    }
}

/// What only P2's PI does with its applications.
fn p2_pi(caller: Caller) -> Expect {
    match caller {
        Caller::Olga => Expect::Ok,
        Caller::Sam | Caller::Alice => Expect::Forbidden,
        _ => Expect::Hidden,
    }
}

/// Admins only.
fn admins(caller: Caller) -> Expect {
    if caller == Caller::Alice { Expect::Ok } else { Expect::Forbidden }
}

/// Rita's own notification: nobody else learns it exists.
fn only_rita(caller: Caller) -> Expect {
    if caller == Caller::Rita { Expect::Ok } else { Expect::Hidden }
}

/// What only the PI does to project P1 itself (inviting, closing); whoever else sees the project is refused.
fn pi_manages_p1(caller: Caller) -> Expect {
    match caller {
        Caller::Rita => Expect::Ok,
        Caller::Carl | Caller::Ivan | Caller::Sam | Caller::Alice => Expect::Forbidden,
        _ => Expect::Hidden,
    }
}

/// Removing Carl from P1: the PI, or Carl leaving.
fn removes_carl(caller: Caller) -> Expect {
    match caller {
        Caller::Rita | Caller::Carl => Expect::Ok,
        Caller::Ivan | Caller::Sam | Caller::Alice => Expect::Forbidden,
        _ => Expect::Hidden,
    }
}

/// Removing Ivan's invitation to P1: the PI, or Ivan declining.
fn removes_ivan(caller: Caller) -> Expect {
    match caller {
        Caller::Rita | Caller::Ivan => Expect::Ok,
        Caller::Carl | Caller::Sam | Caller::Alice => Expect::Forbidden,
        _ => Expect::Hidden,
    }
}

/// Accepting Ivan's invitation: Ivan alone.
fn accepts_for_ivan(caller: Caller) -> Expect {
    match caller {
        Caller::Ivan => Expect::Ok,
        Caller::Rita | Caller::Carl | Caller::Sam | Caller::Alice => Expect::Forbidden,
        _ => Expect::Hidden,
    }
}

/// Votes on a pending application: stewards; members only once it is decided.
fn pending_votes(caller: Caller) -> Expect {
    match caller {
        Caller::Sam | Caller::Alice => Expect::Ok,
        Caller::Rita | Caller::Carl => Expect::Forbidden,
        _ => Expect::Hidden,
    }
}

/// Editing comment C1: its author, Rita.
fn author_of_c1(caller: Caller) -> Expect {
    match caller {
        Caller::Rita => Expect::Ok,
        Caller::Carl | Caller::Sam | Caller::Alice => Expect::Forbidden,
        _ => Expect::Hidden,
    }
}

/// What P1's accepted members do for the project; whoever else sees it is refused.
fn members_of_p1(caller: Caller) -> Expect {
    match caller {
        Caller::Rita | Caller::Carl => Expect::Ok,
        Caller::Ivan | Caller::Sam | Caller::Alice => Expect::Forbidden,
        _ => Expect::Hidden,
    }
}

/// Exact counts within P1's grants: its accepted members; for anyone else the project does not exist.
fn counts_in_p1(caller: Caller) -> Expect {
    match caller {
        Caller::Rita | Caller::Carl => Expect::Ok,
        _ => Expect::Hidden,
    }
}

/// Counts within P2, which has no grant: refused for Olga, hidden from everyone else.
fn counts_in_p2(caller: Caller) -> Expect {
    if caller == Caller::Olga { Expect::Forbidden } else { Expect::Hidden }
}

// ---------------------------------------------------------------- the matrix

/// Whose resource a row's `{id}` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The path names no project, application, grant or comment.
    NoId,
    P1,
    P2,
    /// P1's application under review by Sam.
    A1,
    /// P1's application approved by rule and active.
    A2,
    /// P2's submitted application.
    A3,
    /// A2's active grant.
    G1,
    /// Rita's comment on A1.
    C1,
    /// A notification to Rita.
    N1,
    /// P1's withdrawal notice of a subject of the registered cohort.
    W1,
    /// A throwaway resource made for this one case, so that success changes nothing shared.
    Fresh(Fresh),
}

/// Throwaway resources, each in the state in which the authorized caller's request succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// A draft application of P1 (to the controlled cohort).
    Draft,
    /// A submitted application of P1, not yet under review.
    Submitted,
    /// Under review by Sam, who has not declared yet.
    Reviewing,
    /// Under review by Sam, who declared no competing interest.
    Declared,
    /// Approved by rule, its grant pending the PI's acceptance.
    Approved,
    /// An active grant of P1.
    Grant,
    /// A project with P1's members: Rita PI, Carl accepted, Ivan invited, Remy removed.
    Project,
    /// The unsettled access fee of an application of P1 approved by rule.
    Fee,
    /// An open obligation of an active grant of P1.
    Obligation,
    /// A renewal of an active grant of P1, waiting for a decision.
    Renewal,
    /// A subject of the registered cohort, named by its local patient ID at site `local`.
    Subject,
}

impl Target {
    /// Whether `caller` may see the resource (true where the row names none).
    fn seen_by(self, caller: Caller) -> bool {
        match self {
            Self::NoId | Self::Fresh(Fresh::Subject) => true,
            Self::P1 | Self::Fresh(Fresh::Project) => sees_p1(caller) == Expect::Ok,
            Self::P2 | Self::A3 => reads_p2(caller) == Expect::Ok,
            Self::N1 => only_rita(caller) == Expect::Ok,
            Self::A1 | Self::A2 | Self::G1 | Self::C1 | Self::W1 | Self::Fresh(_) => reads_p1(caller) == Expect::Ok,
        }
    }
}

enum Payload {
    Empty,
    /// JSON in which the strings `{id}`, `{dua}` (the agreement in force) and
    /// `{unique}` (fresh for each case) are replaced.
    Json(Value),
    /// The caller's own profile, unchanged.
    OwnProfile,
}

struct Row {
    method: Method,
    /// With `{id}` for the target's id.
    path: &'static str,
    target: Target,
    payload: Payload,
    policy: Policy,
}

impl Row {
    fn expect(&self, caller: Caller) -> Expect {
        if caller == Caller::Anonymous { Expect::Unauthorized } else { (self.policy)(caller) }
    }
}

fn row(method: Method, path: &'static str, target: Target, payload: Payload, policy: Policy) -> Row {
    Row { method, path, target, payload, policy }
}

fn body(value: Value) -> Payload {
    Payload::Json(value)
}

/// Every governance endpoint, with bodies that succeed for an authorized caller.
#[allow(clippy::too_many_lines)] // one flat table reads best
fn matrix() -> Vec<Row> {
    use Method as M;
    use Payload::{Empty, OwnProfile};
    let count = |cohort: &str| body(json!({"project": "{id}", "criteria": {"field": "cohort", "in": [cohort]}}));
    vec![
        // projects: profiles
        row(M::GET, "/api/v1/me/profile", Target::NoId, Empty, anyone),
        row(M::PUT, "/api/v1/me/profile", Target::NoId, OwnProfile, anyone),
        row(M::GET, "/api/v1/profiles", Target::NoId, Empty, stewards),
        row(M::POST, "/api/v1/profiles/carl/verify", Target::NoId, body(json!({})), stewards),
        // projects: projects and members
        row(M::GET, "/api/v1/projects", Target::NoId, Empty, anyone),
        row(M::POST, "/api/v1/projects", Target::NoId, body(json!({"title": "Matrix probe"})), researchers),
        row(M::GET, "/api/v1/projects/{id}", Target::P1, Empty, sees_p1),
        row(M::GET, "/api/v1/projects/{id}", Target::P2, Empty, reads_p2),
        row(
            M::POST,
            "/api/v1/projects/{id}/members",
            Target::Fresh(Fresh::Project),
            body(json!({"username": "nina"})),
            pi_manages_p1,
        ),
        row(M::DELETE, "/api/v1/projects/{id}/members/carl", Target::Fresh(Fresh::Project), Empty, removes_carl),
        row(M::DELETE, "/api/v1/projects/{id}/members/ivan", Target::Fresh(Fresh::Project), Empty, removes_ivan),
        row(
            M::POST,
            "/api/v1/projects/{id}/members/ivan/accept",
            Target::Fresh(Fresh::Project),
            body(json!({})),
            accepts_for_ivan,
        ),
        // applications
        row(M::GET, "/api/v1/projects/{id}/applications", Target::P1, Empty, reads_p1),
        row(M::GET, "/api/v1/projects/{id}/applications", Target::P2, Empty, reads_p2),
        row(
            M::POST,
            "/api/v1/projects/{id}/applications",
            Target::P1,
            body(json!({"content": content("Another glioma request", CONTROLLED)})),
            p1_pi,
        ),
        row(
            M::POST,
            "/api/v1/projects/{id}/applications",
            Target::P2,
            body(json!({"content": content("Another cardiac request", CONTROLLED)})),
            p2_pi,
        ),
        row(M::GET, "/api/v1/applications/{id}", Target::A1, Empty, reads_p1),
        row(M::GET, "/api/v1/applications/{id}", Target::A2, Empty, reads_p1),
        row(M::GET, "/api/v1/applications/{id}", Target::A3, Empty, reads_p2),
        row(
            M::PUT,
            "/api/v1/applications/{id}",
            Target::Fresh(Fresh::Draft),
            body(json!({"content": content("Glioma growth, revised", CONTROLLED)})),
            p1_pi,
        ),
        row(M::GET, "/api/v1/applications/{id}/versions/1", Target::A1, Empty, reads_p1),
        row(M::GET, "/api/v1/applications/{id}/diff", Target::A1, Empty, reads_p1),
        row(M::GET, "/api/v1/applications/{id}/diff", Target::A3, Empty, reads_p2),
        row(M::GET, "/api/v1/applications/{id}/check", Target::A1, Empty, reads_p1),
        row(M::POST, "/api/v1/applications/{id}/submit", Target::Fresh(Fresh::Draft), body(json!({})), p1_pi),
        row(
            M::POST,
            "/api/v1/applications/{id}/withdraw",
            Target::Fresh(Fresh::Submitted),
            body(json!({"reason": "The study was merged into another one."})),
            p1_pi,
        ),
        row(
            M::POST,
            "/api/v1/applications/{id}/activate",
            Target::Fresh(Fresh::Approved),
            body(json!({"dua_version": "{dua}"})),
            p1_pi,
        ),
        row(M::GET, "/api/v1/dua", Target::NoId, Empty, anyone),
        row(M::GET, "/api/v1/dua/versions", Target::NoId, Empty, anyone),
        row(M::GET, "/api/v1/dua/versions/custodian-dua-2026-1", Target::NoId, Empty, anyone),
        row(
            M::POST,
            "/api/v1/dua",
            Target::NoId,
            body(json!({"version": "matrix-{unique}", "title": "Data use agreement", "body": "Use the data well."})),
            admins,
        ),
        row(
            M::PUT,
            "/api/v1/cohorts/chest-ct/consent",
            Target::NoId,
            body(json!({"terms": {"permission": "GRU"}, "auto_approve": true})),
            stewards,
        ),
        // review
        row(M::GET, "/api/v1/reviews/queue", Target::NoId, Empty, stewards),
        row(M::GET, "/api/v1/steward/inbox", Target::NoId, Empty, stewards),
        row(M::GET, "/api/v1/renewals", Target::NoId, Empty, stewards),
        row(M::POST, "/api/v1/applications/{id}/review", Target::Fresh(Fresh::Submitted), body(json!({})), stewards),
        row(
            M::POST,
            "/api/v1/applications/{id}/assignments",
            Target::Fresh(Fresh::Submitted),
            body(json!({"steward": "sue"})),
            stewards,
        ),
        row(M::DELETE, "/api/v1/applications/{id}/assignments/sam", Target::Fresh(Fresh::Reviewing), Empty, stewards),
        row(
            M::POST,
            "/api/v1/applications/{id}/declarations",
            Target::Fresh(Fresh::Reviewing),
            body(json!({"conflict": false, "statement": "No competing interests."})),
            assigned_steward,
        ),
        row(M::GET, "/api/v1/applications/{id}/votes", Target::A1, Empty, pending_votes),
        row(M::GET, "/api/v1/applications/{id}/votes", Target::A2, Empty, reads_p1),
        row(
            M::POST,
            "/api/v1/applications/{id}/votes",
            Target::Fresh(Fresh::Declared),
            body(json!({"vote": "approve"})),
            assigned_steward,
        ),
        row(M::GET, "/api/v1/applications/{id}/comments", Target::A1, Empty, reads_p1),
        row(
            M::POST,
            "/api/v1/applications/{id}/comments",
            Target::A1,
            body(json!({"body": "Which scanners, please?"})),
            reads_p1,
        ),
        row(M::PATCH, "/api/v1/comments/{id}", Target::C1, body(json!({"body": "Siemens and GE."})), author_of_c1),
        // grants
        row(M::GET, "/api/v1/projects/{id}/grants", Target::P1, Empty, reads_p1),
        row(M::GET, "/api/v1/projects/{id}/grants", Target::P2, Empty, reads_p2),
        row(M::GET, "/api/v1/grants/{id}", Target::G1, Empty, reads_p1),
        row(M::GET, "/api/v1/grants/{id}/snapshot", Target::G1, Empty, reads_p1),
        row(M::GET, "/api/v1/projects/{id}/subjects?cohort=chest-ct", Target::P1, Empty, counts_in_p1),
        row(M::GET, "/api/v1/projects/{id}/subjects?cohort=chest-ct", Target::P2, Empty, counts_in_p2),
        row(
            M::POST,
            "/api/v1/grants/{id}/state",
            Target::Fresh(Fresh::Grant),
            body(json!({"action": "suspend", "reason": "annual report overdue"})),
            stewards,
        ),
        // grants: fees, duties, renewals, closing, notifications
        row(M::GET, "/api/v1/fees", Target::NoId, Empty, anyone),
        row(M::PUT, "/api/v1/fees/registered", Target::NoId, body(fees()), admins),
        row(M::GET, "/api/v1/applications/{id}/fees", Target::A2, Empty, reads_p1),
        row(
            M::POST,
            "/api/v1/fees/{id}/settlement",
            Target::Fresh(Fresh::Fee),
            body(json!({"settlement": "waived", "note": "PhD student"})),
            stewards,
        ),
        row(M::GET, "/api/v1/projects/{id}/obligations", Target::P1, Empty, reads_p1),
        row(M::GET, "/api/v1/projects/{id}/obligations", Target::P2, Empty, reads_p2),
        row(M::GET, "/api/v1/obligations", Target::NoId, Empty, stewards),
        row(
            M::POST,
            "/api/v1/obligations/{id}/fulfil",
            Target::Fresh(Fresh::Obligation),
            body(json!({"statement": "Baseline model trained; paper in review."})),
            p1_pi,
        ),
        row(
            M::POST,
            "/api/v1/grants/{id}/renewals",
            Target::Fresh(Fresh::Grant),
            body(json!({"months": 12, "progress_report": "Year one: cohort curated, baseline model done."})),
            p1_pi,
        ),
        row(
            M::POST,
            "/api/v1/renewals/{id}/decision",
            Target::Fresh(Fresh::Renewal),
            body(json!({"approve": true, "reason": "Good progress."})),
            stewards,
        ),
        row(
            M::POST,
            "/api/v1/projects/{id}/close",
            Target::Fresh(Fresh::Project),
            body(json!({"deletion_attestation": "All copies deleted from the university HPC."})),
            pi_manages_p1,
        ),
        row(M::GET, "/api/v1/me/notifications", Target::NoId, Empty, anyone),
        row(M::GET, "/api/v1/me/notification-preferences", Target::NoId, Empty, anyone),
        row(
            M::PUT,
            "/api/v1/me/notification-preferences",
            Target::NoId,
            body(json!({"email": true, "kinds": [{"kind": "grant.renewal", "email": false}]})),
            anyone,
        ),
        row(M::POST, "/api/v1/notifications/{id}/read", Target::N1, body(json!({})), only_rita),
        // grants: withdrawal of consent
        row(
            M::POST,
            "/api/v1/withdrawals",
            Target::Fresh(Fresh::Subject),
            body(json!({"site": "local", "patient_id": "{id}", "scope": "full"})),
            stewards,
        ),
        row(M::GET, "/api/v1/projects/{id}/withdrawal-notices", Target::P1, Empty, reads_p1),
        row(M::GET, "/api/v1/projects/{id}/withdrawal-notices", Target::P2, Empty, reads_p2),
        row(M::GET, "/api/v1/withdrawal-notices", Target::NoId, Empty, stewards),
        row(M::POST, "/api/v1/withdrawal-notices/{id}/acknowledge", Target::W1, body(json!({})), p1_pi),
        // publications
        row(
            M::POST,
            "/api/v1/projects/{id}/publications",
            Target::P1,
            body(
                json!({"title": "Chest CT", "doi": "10.1000/matrix", "published_on": "2026-01-01", "cohorts": [REGISTERED]}),
            ),
            members_of_p1,
        ),
        row(M::GET, "/api/v1/projects/{id}/publications", Target::P1, Empty, reads_p1),
        row(M::GET, "/api/v1/projects/{id}/publications", Target::P2, Empty, reads_p2),
        row(M::GET, "/api/v1/publications", Target::NoId, Empty, stewards),
        // discovery within a project
        row(M::POST, "/api/v1/discovery/count", Target::P1, count(REGISTERED), counts_in_p1),
        row(M::POST, "/api/v1/discovery/count", Target::P2, count(REGISTERED), counts_in_p2),
    ]
}

// ---------------------------------------------------------------- the world

fn institution(user: &str) -> &'static str {
    match user {
        "rita" | "carl" => "University of Bologna",
        "ivan" => "University of Padua",
        "remy" => "University of Pisa",
        "mallory" => "Independent",
        "olga" => "Charité Berlin",
        "sam" | "alice" => "Registry office",
        "sue" => "Ethics board",
        _ => "Imaging lab",
    }
}

fn profile(user: &str) -> Value {
    json!({
        "name": user,
        "institution": institution(user),
        "email": format!("{user}@example.org"),
        "position": "Professor",
    })
}

fn content(title: &str, cohort: &str) -> Value {
    json!({
        "title": title,
        "lay_summary": "We study how the disease progresses, to plan treatment better.",
        "rationale": "Growth models need longitudinal MRI from several scanners.",
        "methods": "Segmentation, then mixed-effects growth models.",
        "scope": {"cohorts": [cohort], "fields": ["age_at_study", "sex"], "modalities": ["MR"], "imaging": true},
        "intended_use": {"purpose": "HMB", "duration_months": 24, "ethics_approval": "REC 24/NW/0001", "processing_countries": ["IT"]},
        "data_security": "University HPC, ISO 27001 certified, no copies outside it.",
        "public_interest": "Better treatment planning."
    })
}

/// The access fee of the registered tier, owed once an application is approved.
fn fees() -> Value {
    json!({"tier": "registered", "access_fee": 300_000, "maintenance_fee": 50_000, "currency": "EUR"})
}

struct World {
    app: TestApp,
    tokens: Vec<(Caller, String)>,
    p1: String,
    p2: String,
    a1: String,
    a2: String,
    a3: String,
    g1: String,
    c1: String,
    n1: String,
    w1: String,
}

impl World {
    fn token(&self, caller: Caller) -> Option<&str> {
        self.tokens.iter().find(|(c, _)| *c == caller).map(|(_, t)| t.as_str())
    }

    async fn send(&self, method: &Method, path: &str, caller: Caller, body: Option<&Value>) -> TestResponse {
        let mut request = Request::builder().method(method.clone()).uri(path);
        if let Some(token) = self.token(caller) {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.app.call(request.body(body).unwrap()).await
    }

    async fn get(&self, caller: Caller, path: &str) -> TestResponse {
        self.send(&Method::GET, path, caller, None).await
    }

    async fn post(&self, caller: Caller, path: &str, body: &Value) -> TestResponse {
        self.send(&Method::POST, path, caller, Some(body)).await
    }

    fn id(&self, target: Target) -> Option<&str> {
        Some(match target {
            Target::NoId | Target::Fresh(_) => return None,
            Target::P1 => &self.p1,
            Target::P2 => &self.p2,
            Target::A1 => &self.a1,
            Target::A2 => &self.a2,
            Target::A3 => &self.a3,
            Target::G1 => &self.g1,
            Target::C1 => &self.c1,
            Target::N1 => &self.n1,
            Target::W1 => &self.w1,
        })
    }
}

/// Everyone's profile, both cohorts, P1 with its members and applications A1
/// (under review) and A2 (active, grant G1), Rita's comment C1, and P2 with A3.
async fn world() -> World {
    let app = TestApp::new().await;
    let tokens = CALLERS.iter().filter_map(|&c| Some((c, app.token(c.username()?, c.roles())))).collect();
    let sue = app.token("sue", &[Role::Steward]);
    let mut w = World {
        app,
        tokens,
        p1: String::new(),
        p2: String::new(),
        a1: String::new(),
        a2: String::new(),
        a3: String::new(),
        g1: String::new(),
        c1: String::new(),
        n1: String::new(),
        w1: String::new(),
    };
    for caller in &CALLERS[1..] {
        let user = caller.username().unwrap();
        let put = w.send(&Method::PUT, "/api/v1/me/profile", *caller, Some(&profile(user))).await;
        put.assert_status(StatusCode::CREATED);
    }
    // A second steward, to be assigned.
    w.app.put_json("/api/v1/me/profile", Some(&sue), &profile("sue")).await.assert_status(StatusCode::CREATED);
    // Everyone's bona fides verified (by Sue, so that Sam's own is too): data access needs them.
    for caller in &CALLERS[1..] {
        let path = format!("/api/v1/profiles/{}/verify", caller.username().unwrap());
        w.app.post_json(&path, Some(&sue), &json!({})).await.assert_status(StatusCode::OK);
    }

    for (slug, tier, terms, auto_approve) in [
        (REGISTERED, "registered", json!({"permission": "GRU"}), true),
        (CONTROLLED, "controlled", json!({"permission": "HMB"}), false),
    ] {
        let cohort =
            json!({"slug": slug, "title": slug, "tier": tier, "design": "retrospective", "source": "registry"});
        w.post(Caller::Alice, "/api/v1/cohorts", &cohort).await.assert_status(StatusCode::CREATED);
        let consent = json!({"terms": terms, "auto_approve": auto_approve});
        let path = format!("/api/v1/cohorts/{slug}/consent");
        w.send(&Method::PUT, &path, Caller::Sam, Some(&consent)).await.assert_status(StatusCode::OK);
    }

    let put = w.send(&Method::PUT, "/api/v1/fees/registered", Caller::Alice, Some(&fees())).await;
    put.assert_status(StatusCode::OK);

    // A subject of the registered cohort, there before P1's grant froze the cohort.
    let patient = subject(&w).await;
    w.p1 = project_like_p1(&w).await;
    w.a1 = reviewing(&w).await;
    w.a2 = approved(&w).await;
    activate(&w, &w.a2).await;
    w.g1 = grant_of(&w, &w.a2).await;
    let comments = w
        .post(Caller::Rita, &format!("/api/v1/applications/{}/comments", w.a1), &json!({"body": "Is MR enough?"}))
        .await;
    w.c1 = id_in(&comments.assert_status(StatusCode::CREATED).json()[0]);

    // The subject withdraws: P1, whose grant holds them, gets a notice.
    let withdrawal = json!({"site": "local", "patient_id": patient, "scope": "full"});
    w.post(Caller::Sam, "/api/v1/withdrawals", &withdrawal).await.assert_status(StatusCode::CREATED);
    let notices = w.get(Caller::Rita, &format!("/api/v1/projects/{}/withdrawal-notices", w.p1)).await;
    w.w1 = id_in(&notices.assert_status(StatusCode::OK).json()[0]);
    let notifications = w.get(Caller::Rita, "/api/v1/me/notifications").await;
    w.n1 = id_in(&notifications.assert_status(StatusCode::OK).json()[0]);

    let created = w.post(Caller::Olga, "/api/v1/projects", &json!({"title": P2_TITLE})).await;
    w.p2 = id_in(&created.assert_status(StatusCode::CREATED).json());
    w.a3 = application(&w, Caller::Olga, &w.p2, A3_TITLE, CONTROLLED).await;
    let submitted = w.post(Caller::Olga, &format!("/api/v1/applications/{}/submit", w.a3), &json!({})).await;
    assert_eq!(submitted.assert_status(StatusCode::OK).json()["state"], "submitted");
    w
}

fn id_in(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// A project of Rita's with P1's membership: Carl accepted, Ivan invited, Remy removed.
async fn project_like_p1(w: &World) -> String {
    let created = w.post(Caller::Rita, "/api/v1/projects", &json!({"title": P1_TITLE})).await;
    let id = id_in(&created.assert_status(StatusCode::CREATED).json());
    let members = format!("/api/v1/projects/{id}/members");
    for user in ["carl", "ivan", "remy"] {
        w.post(Caller::Rita, &members, &json!({"username": user})).await.assert_status(StatusCode::CREATED);
    }
    for caller in [Caller::Carl, Caller::Remy] {
        let accept = format!("{members}/{}/accept", caller.username().unwrap());
        w.post(caller, &accept, &json!({})).await.assert_status(StatusCode::OK);
    }
    let remove = w.send(&Method::DELETE, &format!("{members}/remy"), Caller::Rita, None).await;
    remove.assert_status(StatusCode::NO_CONTENT);
    id
}

async fn application(w: &World, pi: Caller, project: &str, title: &str, cohort: &str) -> String {
    let path = format!("/api/v1/projects/{project}/applications");
    let created = w.post(pi, &path, &json!({"content": content(title, cohort)})).await;
    id_in(&created.assert_status(StatusCode::CREATED).json())
}

async fn draft(w: &World) -> String {
    application(w, Caller::Rita, &w.p1, "Glioma growth models", CONTROLLED).await
}

async fn submitted(w: &World) -> String {
    let id = draft(w).await;
    let submitted = w.post(Caller::Rita, &format!("/api/v1/applications/{id}/submit"), &json!({})).await;
    assert_eq!(submitted.assert_status(StatusCode::OK).json()["state"], "submitted");
    id
}

async fn reviewing(w: &World) -> String {
    let id = submitted(w).await;
    w.post(Caller::Sam, &format!("/api/v1/applications/{id}/review"), &json!({})).await.assert_status(StatusCode::OK);
    id
}

async fn declared(w: &World) -> String {
    let id = reviewing(w).await;
    let declaration = json!({"conflict": false, "statement": "No competing interests."});
    let path = format!("/api/v1/applications/{id}/declarations");
    w.post(Caller::Sam, &path, &declaration).await.assert_status(StatusCode::CREATED);
    id
}

/// Approved by rule, its access fee still owed.
async fn approved_owing(w: &World) -> String {
    let id = application(w, Caller::Rita, &w.p1, "Chest CT screening", REGISTERED).await;
    let submitted = w.post(Caller::Rita, &format!("/api/v1/applications/{id}/submit"), &json!({})).await;
    assert_eq!(submitted.assert_status(StatusCode::OK).json()["state"], "approved", "approved by rule");
    id
}

async fn fees_of(w: &World, application: &str) -> Vec<Value> {
    let fees = w.get(Caller::Rita, &format!("/api/v1/applications/{application}/fees")).await;
    fees.assert_status(StatusCode::OK).json().as_array().unwrap().clone()
}

/// Approved by rule, its fee waived: ready to activate.
async fn approved(w: &World) -> String {
    let id = approved_owing(w).await;
    for fee in fees_of(w, &id).await.iter().filter(|f| f["settlement"].is_null()) {
        let waiver = json!({"settlement": "waived", "note": "PhD student"});
        let path = format!("/api/v1/fees/{}/settlement", id_in(fee));
        w.post(Caller::Sam, &path, &waiver).await.assert_status(StatusCode::OK);
    }
    id
}

async fn active_grant(w: &World) -> String {
    let id = approved(w).await;
    activate(w, &id).await;
    grant_of(w, &id).await
}

/// A new subject of the registered cohort at site `local`, by its local patient ID.
async fn subject(w: &World) -> String {
    let patient = format!("HOSP-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let csv = format!("patient_id,sex,birth_year\n{patient},F,1961\n");
    let request = Request::post(format!("/api/v1/imports/subjects?cohort={REGISTERED}&site=local"))
        .header(header::AUTHORIZATION, format!("Bearer {}", w.token(Caller::Ulrich).unwrap()))
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from(csv))
        .unwrap();
    w.app.call(request).await.assert_status(StatusCode::CREATED);
    patient
}

async fn activate(w: &World, id: &str) {
    let path = format!("/api/v1/applications/{id}/activate");
    let dua = w.get(Caller::Rita, "/api/v1/dua").await.json()["version"].clone();
    let active = w.post(Caller::Rita, &path, &json!({"dua_version": dua})).await;
    assert_eq!(active.assert_status(StatusCode::OK).json()["state"], "active");
}

/// The grant of P1's application `application`.
async fn grant_of(w: &World, application: &str) -> String {
    let grants = w.get(Caller::Rita, &format!("/api/v1/projects/{}/grants", w.p1)).await;
    let grants = grants.assert_status(StatusCode::OK).json();
    let grant = grants["grants"].as_array().unwrap().iter().find(|g| g["application_id"] == application);
    id_in(grant.expect("the application's grant"))
}

async fn fresh(w: &World, kind: Fresh) -> String {
    match kind {
        Fresh::Draft => draft(w).await,
        Fresh::Submitted => submitted(w).await,
        Fresh::Reviewing => reviewing(w).await,
        Fresh::Declared => declared(w).await,
        Fresh::Approved => approved(w).await,
        Fresh::Grant => active_grant(w).await,
        Fresh::Project => project_like_p1(w).await,
        Fresh::Fee => {
            let id = approved_owing(w).await;
            let fees = fees_of(w, &id).await;
            id_in(fees.iter().find(|f| f["settlement"].is_null()).expect("an unsettled fee"))
        }
        Fresh::Obligation => {
            let grant = active_grant(w).await;
            let duties = w.get(Caller::Rita, &format!("/api/v1/projects/{}/obligations", w.p1)).await;
            let duties = duties.assert_status(StatusCode::OK).json();
            let open =
                duties.as_array().unwrap().iter().find(|d| d["grant_id"] == grant && d["fulfilled_at"].is_null());
            id_in(open.expect("an open obligation of the new grant"))
        }
        Fresh::Renewal => {
            let grant = active_grant(w).await;
            let ask = json!({"months": 12, "progress_report": "Year one: cohort curated, baseline model done."});
            let renewal = w.post(Caller::Rita, &format!("/api/v1/grants/{grant}/renewals"), &ask).await;
            id_in(&renewal.assert_status(StatusCode::CREATED).json())
        }
        Fresh::Subject => subject(w).await,
    }
}

// ---------------------------------------------------------------- cases

/// One row for one caller, its `{id}` resolved.
struct Case<'r> {
    row: &'r Row,
    caller: Caller,
    path: String,
    body: Option<Value>,
    id: Option<String>,
}

async fn resolve<'r>(w: &World, row: &'r Row, caller: Caller) -> Case<'r> {
    let id = match row.target {
        Target::Fresh(kind) => Some(fresh(w, kind).await),
        target => w.id(target).map(str::to_owned),
    };
    // The agreement in force, which the matrix itself may have replaced: asked only where a row needs it.
    let needs_dua = matches!(&row.payload, Payload::Json(value) if value.to_string().contains("{dua}"));
    let dua = if needs_dua {
        w.get(Caller::Rita, "/api/v1/dua").await.json()["version"].as_str().unwrap_or_default().to_owned()
    } else {
        String::new()
    };
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let fill = |text: &str| {
        let text = text.replace("{dua}", &dua).replace("{unique}", &unique);
        match &id {
            Some(id) => text.replace("{id}", id),
            None => text,
        }
    };
    let body = match &row.payload {
        Payload::Empty => None,
        Payload::Json(value) => Some(serde_json::from_str(&fill(&value.to_string())).unwrap()),
        Payload::OwnProfile => Some(profile(caller.username().unwrap_or("anonymous"))),
    };
    let path = fill(row.path);
    Case { row, caller, path, body, id }
}

impl Case<'_> {
    fn expect(&self) -> Expect {
        self.row.expect(self.caller)
    }

    fn describe(&self) -> String {
        format!("{:?} {} {} [{:?}]", self.caller, self.row.method, self.row.path, self.row.target)
    }

    async fn send(&self, w: &World) -> TestResponse {
        w.send(&self.row.method, &self.path, self.caller, self.body.as_ref()).await
    }

    /// The same request about a random id that does not exist.
    async fn send_missing(&self, w: &World) -> TestResponse {
        let id = self.id.as_deref().expect("a row about a resource");
        let other = uuid::Uuid::new_v4().to_string();
        let path = self.path.replace(id, &other);
        let body = self.body.as_ref().map(|b| serde_json::from_str(&b.to_string().replace(id, &other)).unwrap());
        w.send(&self.row.method, &path, self.caller, body.as_ref()).await
    }

    /// Why the response breaks the matrix, if it does.
    fn judge(&self, response: &TestResponse) -> Option<String> {
        let code = serde_json::from_slice::<Value>(&response.body).ok().map(|b| b["code"].clone());
        let fits = match self.expect() {
            Expect::Ok => response.status.is_success(),
            Expect::Unauthorized => response.status == StatusCode::UNAUTHORIZED && code == Some(json!("unauthorized")),
            // Refused for the caller, not for the state of a target that should have been actionable.
            Expect::Forbidden => response.status == StatusCode::FORBIDDEN && code != Some(json!("invalid-transition")),
            Expect::Hidden => response.status == StatusCode::NOT_FOUND && code == Some(json!("not-found")),
        };
        (!fits).then(|| {
            format!("{}: expected {:?}, got {} {}", self.describe(), self.expect(), response.status, short(response))
        })
    }
}

fn short(response: &TestResponse) -> String {
    let text = response.text();
    if text.chars().count() > 300 { format!("{}…", text.chars().take(300).collect::<String>()) } else { text }
}

fn report(failures: &[String], of: usize) {
    assert!(failures.is_empty(), "{} of {of} cases break the matrix:\n{}", failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------- what refusals must not touch

/// A digest of every table, to tell that a refused request wrote nothing anywhere.
struct Fingerprint {
    sql: String,
}

impl Fingerprint {
    async fn new(app: &TestApp) -> Self {
        let tables: Vec<String> = sqlx::query_scalar(
            "select table_name::text from information_schema.tables
             where table_schema = current_schema() and table_type = 'BASE TABLE' order by 1",
        )
        .fetch_all(&app.db)
        .await
        .unwrap();
        let sql = tables
            .iter()
            .map(|t| {
                format!(
                    "select '{t}'::text, md5(coalesce(string_agg(x::text, '|' order by x::text), '')) from \"{t}\" x"
                )
            })
            .collect::<Vec<_>>()
            .join(" union all ");
        Self { sql }
    }

    async fn take(&self, app: &TestApp) -> Vec<(String, String)> {
        sqlx::query_as(sqlx::AssertSqlSafe(self.sql.clone())).fetch_all(&app.db).await.unwrap()
    }
}

fn changed_tables(before: &[(String, String)], after: &[(String, String)]) -> Vec<String> {
    before.iter().zip(after).filter(|(b, a)| b != a).map(|(b, _)| b.0.clone()).collect()
}

/// Audit events other than the record of refused data requests, which a refusal writes by design.
async fn audit_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from audit_event where action <> 'access.refused'")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// What a refused data request (a grant refusal such as `grant-suspended`) may write: its own record.
const REFUSAL_RECORD: [&str; 3] = ["access_refusal", "audit_event", "audit_head"];

/// The shared world as Sam sees it.
async fn world_view(w: &World) -> Vec<(String, StatusCode, bytes::Bytes)> {
    let mut view = Vec::new();
    for path in [
        format!("/api/v1/projects/{}", w.p1),
        format!("/api/v1/projects/{}", w.p2),
        format!("/api/v1/projects/{}/applications", w.p1),
        format!("/api/v1/projects/{}/applications", w.p2),
        format!("/api/v1/projects/{}/grants", w.p1),
        format!("/api/v1/applications/{}", w.a1),
        format!("/api/v1/applications/{}", w.a2),
        format!("/api/v1/applications/{}", w.a3),
        format!("/api/v1/applications/{}/votes", w.a1),
        format!("/api/v1/applications/{}/comments", w.a1),
        format!("/api/v1/grants/{}", w.g1),
        format!("/api/v1/applications/{}/fees", w.a2),
        format!("/api/v1/projects/{}/obligations", w.p1),
        format!("/api/v1/projects/{}/withdrawal-notices", w.p1),
        "/api/v1/withdrawal-notices".to_owned(),
        "/api/v1/me/notifications".to_owned(),
        "/api/v1/reviews/queue".to_owned(),
        "/api/v1/projects".to_owned(),
        "/api/v1/profiles".to_owned(),
    ] {
        let seen = w.get(Caller::Sam, &path).await;
        view.push((path, seen.status, seen.body));
    }
    view
}

// ---------------------------------------------------------------- tests

#[test]
fn the_matrix_covers_every_governance_endpoint_for_every_caller() {
    // The committed contract (endpoints still in progress join the matrix when they join the contract).
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap();
    let doc: Value = serde_json::from_str(&committed).unwrap();
    let rows = matrix();
    let same_route = |spec: &str, path: &str| {
        let path = path.split('?').next().unwrap_or(path);
        let (spec, path): (Vec<&str>, Vec<&str>) = (spec.split('/').collect(), path.split('/').collect());
        spec.len() == path.len() && spec.iter().zip(&path).all(|(s, p)| s.starts_with('{') || s == p)
    };
    let mut governed = 0;
    let mut uncovered = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let method: Method = method.to_uppercase().parse().unwrap();
            let tags: Vec<&str> =
                operation["tags"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let in_scope = tags.iter().any(|t| ["projects", "applications", "review", "grants"].contains(t))
                || (method == Method::POST && path == "/api/v1/discovery/count");
            if !in_scope {
                continue;
            }
            governed += 1;
            if !rows.iter().any(|r| r.method == method && same_route(path, r.path)) {
                uncovered.push(format!("{method} {path}"));
            }
        }
    }
    assert!(uncovered.is_empty(), "governance endpoints missing from the matrix: {uncovered:?}");
    assert!(governed >= 30, "found only {governed} governance endpoints in the OpenAPI document");
    for r in &rows {
        assert!(
            doc["paths"]
                .as_object()
                .unwrap()
                .iter()
                .any(|(path, item)| same_route(path, r.path) && item.get(r.method.as_str().to_lowercase()).is_some()),
            "{} {} is no documented endpoint",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn no_caller_succeeds_where_the_matrix_says_no() {
    let w = world().await;
    let rows = matrix();
    let mut cases = Vec::new();
    for row in &rows {
        for caller in CALLERS {
            cases.push(resolve(&w, row, caller).await);
        }
    }
    let fingerprint = Fingerprint::new(&w.app).await;
    let view = world_view(&w).await;
    let audited = audit_count(&w.app).await;
    let mut failures = Vec::new();

    // Every refusal first: each one changes nothing, anywhere.
    for case in cases.iter().filter(|c| c.expect() != Expect::Ok) {
        let before = fingerprint.take(&w.app).await;
        let response = case.send(&w).await;
        failures.extend(case.judge(&response));
        let mut changed = changed_tables(&before, &fingerprint.take(&w.app).await);
        let code = serde_json::from_slice::<serde_json::Value>(&response.body).ok().map(|b| b["code"].clone());
        let data_refusal = response.status == StatusCode::FORBIDDEN
            && code.as_ref().and_then(|c| c.as_str()).is_some_and(|c| c != "forbidden");
        if data_refusal {
            changed.retain(|t| !REFUSAL_RECORD.contains(&t.as_str()));
        }
        if !changed.is_empty() {
            failures.push(format!("{}: answered {}, yet wrote to {changed:?}", case.describe(), response.status));
        }
    }
    let after = audit_count(&w.app).await;
    if after != audited {
        failures.push(format!("refused requests wrote {} audit events", after - audited));
    }
    for ((path, status, body), (_, status_after, body_after)) in view.iter().zip(world_view(&w).await) {
        if (status, body) != (&status_after, &body_after) {
            failures.push(format!("GET {path} as sam changed after the refused requests"));
        }
    }

    // Then everything the matrix allows succeeds.
    let before = fingerprint.take(&w.app).await;
    for case in cases.iter().filter(|c| c.expect() == Expect::Ok) {
        failures.extend(case.judge(&case.send(&w).await));
    }
    // The witnesses are real: the successful requests were audited and changed tables.
    assert!(audit_count(&w.app).await > after, "successful requests are audited");
    assert!(!changed_tables(&before, &fingerprint.take(&w.app).await).is_empty());
    report(&failures, cases.len());
}

#[tokio::test]
async fn hidden_projects_and_applications_answer_exactly_like_missing_ones() {
    let w = world().await;
    let rows = matrix();
    let mut failures = Vec::new();
    let mut compared = 0;
    for row in rows.iter().filter(|r| r.target != Target::NoId) {
        for caller in CALLERS {
            // Whatever the caller may not see, and whatever the matrix hides from them.
            let unseen = caller != Caller::Anonymous && !row.target.seen_by(caller);
            if !unseen && row.expect(caller) != Expect::Hidden {
                continue;
            }
            let case = resolve(&w, row, caller).await;
            let (response, missing) = (case.send(&w).await, case.send_missing(&w).await);
            compared += 1;
            if case.expect() == Expect::Hidden && response.status != StatusCode::NOT_FOUND {
                failures.push(format!(
                    "{}: expected Hidden, got {} {}",
                    case.describe(),
                    response.status,
                    short(&response)
                ));
            } else if response.status != missing.status
                || response.body != missing.body
                || response.headers.get(header::CONTENT_TYPE) != missing.headers.get(header::CONTENT_TYPE)
            {
                failures.push(format!(
                    "{}: answers {} {} where a missing one answers {} {}",
                    case.describe(),
                    response.status,
                    short(&response),
                    missing.status,
                    short(&missing)
                ));
            }
        }
    }
    assert!(compared > 100, "only {compared} cases compared");
    report(&failures, compared);
}

#[tokio::test]
async fn lists_never_show_another_projects_data() {
    let w = world().await;
    let p1_data = [w.p1.as_str(), w.a1.as_str(), w.a2.as_str(), w.g1.as_str(), w.c1.as_str()];
    let p2_data = [w.p2.as_str(), w.a3.as_str(), P2_TITLE, A3_TITLE];
    let mut failures = Vec::new();
    for caller in
        [Caller::Rita, Caller::Carl, Caller::Ivan, Caller::Remy, Caller::Mallory, Caller::Olga, Caller::Ulrich]
    {
        let (own, foreign): (Vec<&str>, Vec<&str>) = match caller {
            Caller::Rita | Caller::Carl | Caller::Ivan => (vec![w.p1.as_str()], p2_data.to_vec()),
            Caller::Olga => (vec![w.p2.as_str()], p1_data.to_vec()),
            _ => (vec![], p1_data.iter().chain(&p2_data).copied().collect()),
        };
        let listed = w.get(caller, "/api/v1/projects").await;
        let ids: Vec<&str> = listed.json()["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .map(|id| {
                if id == w.p1 {
                    w.p1.as_str()
                } else if id == w.p2 {
                    w.p2.as_str()
                } else {
                    "another project"
                }
            })
            .collect();
        if listed.status != StatusCode::OK || ids != own {
            failures.push(format!("{caller:?} lists the projects {ids:?}, not {own:?}"));
        }
        let mut answers = vec![("GET /api/v1/projects".to_owned(), listed)];
        let queue = w.get(caller, "/api/v1/reviews/queue").await;
        if queue.status != StatusCode::FORBIDDEN {
            failures.push(format!("{caller:?} reads the review queue: {}", queue.status));
        }
        answers.push(("GET /api/v1/reviews/queue".to_owned(), queue));
        let notifications = w.get(caller, "/api/v1/me/notifications").await;
        answers.push(("GET /api/v1/me/notifications".to_owned(), notifications));
        for project in &own {
            for list in ["applications", "grants", "obligations", "withdrawal-notices"] {
                let path = format!("/api/v1/projects/{project}/{list}");
                answers.push((format!("GET {path}"), w.get(caller, &path).await));
            }
        }
        for (request, answer) in &answers {
            let text = answer.text();
            for leaked in foreign.iter().filter(|f| text.contains(**f)) {
                failures.push(format!("{caller:?} {request} shows another project's `{leaked}`"));
            }
        }
    }
    // The ids looked for are really there for stewards, who see every project.
    for steward in [Caller::Sam, Caller::Alice] {
        let projects = w.get(steward, "/api/v1/projects").await.assert_status(StatusCode::OK).text();
        let queue = w.get(steward, "/api/v1/reviews/queue").await.assert_status(StatusCode::OK).text();
        for id in [&w.p1, &w.p2] {
            assert!(projects.contains(id.as_str()), "{steward:?} lists {id}");
        }
        for id in [&w.a1, &w.a3] {
            assert!(queue.contains(id.as_str()), "{steward:?} queues {id}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn an_invitee_who_has_not_accepted_reads_neither_applications_nor_grants() {
    let w = world().await;
    // Ivan sees the project he is invited to, but is no member yet: its applications do not exist for him.
    w.get(Caller::Ivan, &format!("/api/v1/projects/{}", w.p1)).await.assert_status(StatusCode::OK);
    w.get(Caller::Ivan, &format!("/api/v1/applications/{}", w.a1))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not-found");
    let missing = uuid::Uuid::new_v4();
    let mut leaks = Vec::new();
    for (path, other) in [
        (format!("/api/v1/projects/{}/applications", w.p1), format!("/api/v1/projects/{missing}/applications")),
        (format!("/api/v1/projects/{}/grants", w.p1), format!("/api/v1/projects/{missing}/grants")),
        (format!("/api/v1/grants/{}", w.g1), format!("/api/v1/grants/{missing}")),
        (format!("/api/v1/projects/{}/obligations", w.p1), format!("/api/v1/projects/{missing}/obligations")),
        (
            format!("/api/v1/projects/{}/withdrawal-notices", w.p1),
            format!("/api/v1/projects/{missing}/withdrawal-notices"),
        ),
    ] {
        let (hidden, missing) = (w.get(Caller::Ivan, &path).await, w.get(Caller::Ivan, &other).await);
        if hidden.status != missing.status || hidden.body != missing.body {
            leaks.push(format!("GET {path}: {} {}", hidden.status, short(&hidden)));
        }
    }
    assert!(leaks.is_empty(), "an invitee who has not accepted reads what members read:\n{}", leaks.join("\n"));
}
