//! E-mail notifications against a real SMTP server (Python's `aiosmtpd`,
//! started here): a workflow action's notification arrives with its subject and
//! a link to the page that needs action, preferences hold messages back, and a
//! server that refuses leads to retries and a recorded failure, never to a lost
//! notification.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

use crate::access::{World, cohort, declare_and_vote, submitted, world_with};

const PUBLIC_URL: &str = "https://registry.example.org";

/// Writes each message it accepts to a file in its directory (with its
/// envelope recipients first), and refuses recipients named `refused…` with a 550.
const SERVER: &str = r"
import os, sys, uuid
from aiosmtpd.controller import Controller
class Handler:
    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.startswith('refused'):
            return '550 5.1.1 no such mailbox'
        envelope.rcpt_tos.append(address)
        return '250 OK'
    async def handle_DATA(self, server, session, envelope):
        path = os.path.join(sys.argv[1], uuid.uuid4().hex)
        with open(path + '.tmp', 'wb') as f:
            f.write(('X-Envelope-To: ' + ','.join(envelope.rcpt_tos) + '\r\n').encode() + envelope.content)
        os.rename(path + '.tmp', path + '.eml')
        return '250 OK'
controller = Controller(Handler(), hostname='127.0.0.1', port=int(sys.argv[2]))
controller.start()
print('ready', flush=True)
sys.stdin.read()
controller.stop()
";

/// A running SMTP server and the directory its messages land in.
struct SmtpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    fn start() -> Self {
        provision();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(PYTHON)
            .args(["-c", SERVER])
            .arg(dir.path())
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "the SMTP server started");
        Self { child, port, dir }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far.
    fn messages(&self) -> Vec<String> {
        messages_in(self.dir.path())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn messages_in(dir: &Path) -> Vec<String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    paths.sort();
    // Undo quoted-printable's soft line breaks, so a long link reads whole.
    paths.into_iter().map(|p| std::fs::read_to_string(p).unwrap().replace("=\r\n", "").replace("=20", " ")).collect()
}

/// Debian's Python, where Debian's `aiosmtpd` is installed.
const PYTHON: &str = "/usr/bin/python3";

/// `aiosmtpd`, from Debian when it is missing (once for every test).
fn provision() {
    static PROVISIONED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = PROVISIONED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let present = || Command::new(PYTHON).args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
    if !*done && !present() {
        crate::helpers::apt_install(&["python3", "python3-aiosmtpd"]).unwrap();
    }
    assert!(present(), "aiosmtpd is importable by {PYTHON}");
    *done = true;
}

async fn mailing_world(server: &SmtpServer, max_attempts: u32) -> World {
    let url = server.url();
    let w = world_with(|c| {
        c.mail.smtp_url = Some(url.into());
        c.mail.public_url = PUBLIC_URL.into();
        c.mail.from = "Registry <registry@example.org>".into();
        c.mail.max_attempts = max_attempts;
    })
    .await;
    cohort(&w, "knee-mri", "registered", json!({"permission": "HMB"}), false).await;
    w
}

/// Gives `token`'s owner the address `email` (a changed profile is verified again).
async fn address(w: &World, token: &str, username: &str, email: &str) {
    let profile = json!({"name": username, "institution": format!("Institute of {username}"), "email": email, "position": "Professor"});
    w.app.put_json("/api/v1/me/profile", Some(token), &profile).await.assert_status(StatusCode::OK);
    if username == "rita" {
        w.app.post_json("/api/v1/profiles/rita/verify", Some(&w.sam), &json!({})).await.assert_status(StatusCode::OK);
    }
}

async fn deliveries(w: &World, username: &str) -> Vec<(String, i32, Option<String>)> {
    sqlx::query_as("select state, attempts, last_error from mail_delivery where username = $1 order by created_at")
        .bind(username)
        .fetch_all(&w.app.db)
        .await
        .unwrap()
}

/// Runs due jobs until `done` holds (failed attempts wait out their back-off).
async fn work_until<F: AsyncFn() -> bool>(w: &World, done: F) {
    let deadline = Instant::now() + Duration::from_mins(1);
    while !done().await {
        assert!(Instant::now() < deadline, "the deliveries did not settle");
        crate::extracts::work(&w.app).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An application of Rita's, submitted, on which Sam asked for changes: its id.
async fn changes_requested(w: &World) -> String {
    let (_, id) = submitted(w, &["knee-mri"]).await;
    w.app
        .post_json(&format!("/api/v1/applications/{id}/review"), Some(&w.sam), &json!({}))
        .await
        .assert_status(StatusCode::OK);
    let vote = json!({"vote": "request_changes", "comment": "Add a data management plan."});
    declare_and_vote(w, &w.sam, &id, vote).await.assert_status(StatusCode::CREATED);
    id
}

#[tokio::test]
async fn a_request_for_changes_reaches_the_pi_by_email_with_a_link_to_the_application() {
    let server = SmtpServer::start();
    let w = mailing_world(&server, 3).await;
    address(&w, &w.pi, "rita", "rita@example.org").await;
    address(&w, &w.sam, "sam", "sam@example.org").await;
    address(&w, &w.sue, "sue", "sue@example.org").await;
    // Sue wants no e-mail about submissions.
    let defaults = w.app.get("/api/v1/me/notification-preferences", Some(&w.sue)).await;
    let defaults = defaults.assert_status(StatusCode::OK).json();
    assert_eq!(defaults["email"], true);
    assert!(defaults["kinds"].as_array().unwrap().iter().all(|k| k["email"] == true), "all on: {defaults}");
    let muted = json!({"email": true, "kinds": [{"kind": "application.submitted", "email": false}]});
    let saved = w.app.put_json("/api/v1/me/notification-preferences", Some(&w.sue), &muted).await;
    let saved = saved.assert_status(StatusCode::OK).json();
    let submitted_kind = saved["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "application.submitted");
    assert_eq!(submitted_kind.unwrap()["email"], false, "{saved}");

    let id = changes_requested(&w).await;
    work_until(&w, async || server.messages().len() >= 2).await;

    let messages = server.messages();
    let to_rita: Vec<_> = messages.iter().filter(|m| m.starts_with("X-Envelope-To: rita@example.org\r\n")).collect();
    assert_eq!(to_rita.len(), 1, "{messages:?}");
    assert!(to_rita[0].contains("Subject: The committee asks for changes to your application"), "{}", to_rita[0]);
    assert!(to_rita[0].contains(&format!("{PUBLIC_URL}/ui/applications/{id}")), "{}", to_rita[0]);
    assert!(to_rita[0].contains("/api/v1/me/notification-preferences"), "the footer says how to change them");
    assert!(!to_rita[0].contains("data management plan"), "only the notification's subject goes out");
    let submissions: Vec<_> =
        messages.iter().filter(|m| m.contains("Subject: Application version 1 is waiting")).collect();
    assert_eq!(submissions.len(), 1, "Sam's only: {messages:?}");
    assert!(submissions[0].starts_with("X-Envelope-To: sam@example.org\r\n"));
    assert!(deliveries(&w, "sue").await.is_empty(), "Sue turned them off");
    assert_eq!(deliveries(&w, "rita").await, [("sent".to_owned(), 1, None)]);
}

#[tokio::test]
async fn an_smtp_server_that_refuses_leads_to_a_recorded_failure_and_the_notification_stays() {
    let mut server = SmtpServer::start();
    let w = mailing_world(&server, 2).await;
    address(&w, &w.pi, "rita", "refused@example.org").await;
    address(&w, &w.sam, "sam", "sam@example.org").await;
    changes_requested(&w).await;

    // A 550 for Rita is permanent: one attempt, then failed.
    work_until(&w, async || deliveries(&w, "rita").await.iter().all(|d| d.0 != "queued")).await;
    let rita = deliveries(&w, "rita").await;
    assert_eq!((rita[0].0.as_str(), rita[0].1), ("failed", 1), "{rita:?}");
    assert!(rita[0].2.as_deref().unwrap().contains("550"), "{rita:?}");
    let mine = w.app.get("/api/v1/me/notifications", Some(&w.pi)).await.assert_status(StatusCode::OK).json();
    assert_eq!(mine[0]["kind"], "application.changes_requested", "the notification stays: {mine}");

    // A server that is gone is retried, then the delivery is failed.
    server.stop();
    submitted(&w, &["knee-mri"]).await;
    let queued = |d: &[(String, i32, Option<String>)]| d.iter().any(|d| d.0 == "queued");
    work_until(&w, async || !queued(&deliveries(&w, "sam").await)).await;
    let sam = deliveries(&w, "sam").await;
    assert_eq!((sam[1].0.as_str(), sam[1].1), ("failed", 2), "retried once, then failed: {sam:?}");
    let audited: i64 = sqlx::query_scalar("select count(*) from audit_event where action = 'mail.failed'")
        .fetch_one(&w.app.db)
        .await
        .unwrap();
    let failed: i64 = sqlx::query_scalar("select count(*) from mail_delivery where state = 'failed'")
        .fetch_one(&w.app.db)
        .await
        .unwrap();
    assert_eq!((audited, failed), (3, 3), "Rita's, Sam's and Sue's failures, each audited");
}

#[tokio::test]
async fn an_unknown_kind_of_notification_is_refused() {
    let app = crate::helpers::TestApp::new().await;
    let rita = app.token("rita", &[custodian::auth::Role::Researcher]);
    let body = json!({"email": true, "kinds": [{"kind": "weather.report", "email": false}]});
    let refused = app.put_json("/api/v1/me/notification-preferences", Some(&rita), &body).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "bad-request");
}

/// The messages `server` delivered to `email` so far.
fn to(server: &SmtpServer, email: &str) -> Vec<String> {
    let envelope = format!("X-Envelope-To: {email}\r\n");
    server.messages().into_iter().filter(|m| m.starts_with(&envelope)).collect()
}

#[tokio::test]
async fn an_invitation_reaches_the_invitee_by_email_and_leaves_their_list_once_they_are_removed() {
    let server = SmtpServer::start();
    let w = mailing_world(&server, 3).await;
    let carl = w.app.token("carl", &[custodian::auth::Role::Researcher]);
    let profile =
        json!({"name": "Carl", "institution": "Institute of Carl", "email": "carl@example.org", "position": "Student"});
    w.app.put_json("/api/v1/me/profile", Some(&carl), &profile).await.assert_status(StatusCode::CREATED);
    let project = crate::access::project(&w).await;
    let members = format!("/api/v1/projects/{project}/members");
    w.app.post_json(&members, Some(&w.pi), &json!({"username": "carl"})).await.assert_status(StatusCode::CREATED);

    work_until(&w, async || !to(&server, "carl@example.org").is_empty()).await;
    let message = &to(&server, "carl@example.org")[0];
    assert!(message.contains("Subject: rita invites you to join the project"), "{message}");
    assert!(message.contains(&format!("{PUBLIC_URL}/ui/projects/{project}")), "a link to the project: {message}");
    let listed = w.app.get("/api/v1/me/notifications", Some(&carl)).await.assert_status(StatusCode::OK).json();
    assert_eq!(listed[0]["kind"], "project.invitation", "{listed}");

    // Removed, Carl no longer sees an invitation naming a project closed to him.
    w.app.delete(&format!("{members}/carl"), Some(&w.pi)).await.assert_status(StatusCode::NO_CONTENT);
    let listed = w.app.get("/api/v1/me/notifications", Some(&carl)).await.assert_status(StatusCode::OK).json();
    assert!(!listed.to_string().contains(&project), "{listed}");
    // Invited again, he sees the new invitation.
    w.app.post_json(&members, Some(&w.pi), &json!({"username": "carl"})).await.assert_status(StatusCode::CREATED);
    let listed = w.app.get("/api/v1/me/notifications", Some(&carl)).await.assert_status(StatusCode::OK).json();
    let invitations = listed.as_array().unwrap().iter().filter(|n| n["kind"] == "project.invitation").count();
    assert!(invitations >= 1, "{listed}");
}

#[tokio::test]
async fn a_new_agreement_version_tells_the_pis_it_concerns_what_it_means_for_them() {
    let server = SmtpServer::start();
    let w = mailing_world(&server, 3).await;
    address(&w, &w.pi, "rita", "rita@example.org").await;
    // One grant in force, and one application approved but not yet activated.
    let (_, grant) = crate::access::active_grant(&w).await;
    let project = crate::access::project(&w).await;
    let waiting = crate::access::application(&w, &project, &crate::access::content(&["chest-ct"], "HMB")).await;
    let submitted =
        w.app.post_json(&format!("/api/v1/applications/{waiting}/submit"), Some(&w.pi), &json!({})).await.json();
    assert_eq!(submitted["state"], "approved", "{submitted}");
    work_until(&w, async || !deliveries(&w, "rita").await.iter().any(|d| d.0 == "queued")).await;
    let before = to(&server, "rita@example.org").len();

    let agreement =
        json!({"version": "custodian-dua-2027-1", "title": "Data use agreement 2027", "body": "Terms of 2027."});
    w.app.post_json("/api/v1/dua", Some(&w.admin), &agreement).await.assert_status(StatusCode::CREATED);
    work_until(&w, async || to(&server, "rita@example.org").len() >= before + 2).await;
    let messages = to(&server, "rita@example.org");
    // The agreement's message about a target (the approval went to the same link before it).
    let about = |link: &str| {
        messages.iter().find(|m| m.contains(link) && m.contains("Data use agreement 2027")).cloned().unwrap_or_default()
    };
    let to_accept = about(&format!("{PUBLIC_URL}/ui/applications/{waiting}"));
    assert!(to_accept.contains("accept it to activate your approved application"), "{messages:?}");
    let in_force = about(&format!("{PUBLIC_URL}/ui/grants/{grant}"));
    assert!(in_force.contains("your grant stays under the version you accepted"), "{messages:?}");
    assert!(in_force.contains("Data use agreement 2027"), "{in_force}");
}

#[tokio::test]
async fn a_duty_coming_due_is_reminded_once_at_each_stage_by_email_and_in_the_audit_log() {
    use custodian::access::reminders;
    let server = SmtpServer::start();
    let w = mailing_world(&server, 3).await;
    address(&w, &w.pi, "rita", "rita@example.org").await;
    let (_, grant) = crate::access::active_grant(&w).await;
    let grant_id: uuid::Uuid = grant.parse().unwrap();
    // Time passes: the grant's first duty is five days off, the others far.
    let duties: Vec<uuid::Uuid> =
        sqlx::query_scalar("select obligation_id from obligation where grant_id = $1 order by due_on")
            .bind(grant_id)
            .fetch_all(&w.app.db)
            .await
            .unwrap();
    assert!(!duties.is_empty(), "an active grant has duties");
    sqlx::query("update obligation set due_on = current_date + case when obligation_id = $1 then 5 else 400 end where grant_id = $2")
        .bind(duties[0])
        .bind(grant_id)
        .execute(&w.app.db)
        .await
        .unwrap();

    custodian::jobs::enqueue(&w.app.db, &reminders::next_remind(Duration::ZERO)).await.unwrap();
    work_until(&w, async || to(&server, "rita@example.org").iter().any(|m| m.contains("within 7 days"))).await;
    let reminder = to(&server, "rita@example.org").into_iter().find(|m| m.contains("within 7 days")).unwrap();
    assert!(reminder.contains(&format!("{PUBLIC_URL}/ui/grants/{grant}")), "{reminder}");
    assert_eq!(reminders::reminded(&w.app.db, 7).await.unwrap(), [duties[0]]);

    // Again the same day: nothing new. Overdue: one more, then nothing.
    assert_eq!(reminders::remind(&w.app.db).await.unwrap(), 0);
    sqlx::query("update obligation set due_on = current_date - 1 where obligation_id = $1")
        .bind(duties[0])
        .execute(&w.app.db)
        .await
        .unwrap();
    assert_eq!(reminders::remind(&w.app.db).await.unwrap(), 1);
    assert_eq!(reminders::remind(&w.app.db).await.unwrap(), 0);
    let listed = w.app.get("/api/v1/me/notifications", Some(&w.pi)).await.assert_status(StatusCode::OK).json();
    assert!(listed[0]["subject"].as_str().unwrap().contains("is overdue"), "{listed}");
    assert_eq!(listed[0]["kind"], "duty.due");
    let audited: Vec<serde_json::Value> =
        sqlx::query_scalar("select details from audit_event where action = 'obligation.reminded' order by seq")
            .fetch_all(&w.app.db)
            .await
            .unwrap();
    let stages: Vec<&serde_json::Value> = audited.iter().map(|d| &d["stage_days"]).collect();
    assert_eq!(stages, [&json!(7), &json!(0)], "{audited:?}");

    // A fulfilled duty is not reminded.
    let report = json!({"statement": "Year one: done."});
    let fulfil = format!("/api/v1/obligations/{}/fulfil", duties[0]);
    w.app.post_json(&fulfil, Some(&w.pi), &report).await.assert_status(StatusCode::OK);
    sqlx::query("update obligation set due_on = current_date + 3, reminded_within = null where obligation_id = $1")
        .bind(duties[0])
        .execute(&w.app.db)
        .await
        .unwrap();
    assert_eq!(reminders::remind(&w.app.db).await.unwrap(), 0, "fulfilled duties are not reminded");
}
