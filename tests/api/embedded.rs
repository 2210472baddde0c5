//! The binary as a newcomer runs it: embedded PostgreSQL, real sockets,
//! signals, restarts and crashes. Also graceful shutdown of the server loop.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use custodian::auth::Role;
use serde_json::json;

use crate::helpers::TestApp;

const BIN: &str = env!("CARGO_BIN_EXE_custodian");

struct Running {
    child: Child,
    base: String,
}

fn command(data_dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CUSTODIAN_DATABASE__URL")
        .env_remove("CUSTODIAN_AUTH__HS256_SECRET")
        .env("CUSTODIAN_LOG__FILTER", "warn");
    command
}

fn start(data_dir: &Path) -> Running {
    start_with(data_dir, &[])
}

fn start_with(data_dir: &Path, extra: &[&str]) -> Running {
    let mut child = command(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap().to_owned());
            }
        }
    });
    // Ready means the listener is bound: the binary prints the address after binding.
    let base = rx.recv_timeout(Duration::from_mins(2)).unwrap_or_else(|_| {
        let log = std::fs::read_to_string(data_dir.join("postgres/postgres.log")).unwrap_or_default();
        panic!("the server did not report its address; PostgreSQL log:\n{log}")
    });
    Running { child, base }
}

fn signal(pid: u32, signal: &str) {
    assert!(Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap().success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the server did not exit within 60 s");
}

fn issue_token(data_dir: &Path) -> String {
    let output = command(data_dir)
        .args(["token", "issue", "--user", "alice", "--role", "admin", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("custodian-emb").tempdir().unwrap();
    // Like any directory a hospital admin would choose: enterable by other accounts.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    (dir, data)
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_demo_leaves_the_tokens_as_shell_variables_a_newcomer_can_use_at_once() {
    let (_dir, data) = data_dir();
    let mut server = start_with(&data, &["--demo"]);
    let file = data.join("demo-tokens.env");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "only the owner reads tokens");
    let text = std::fs::read_to_string(&file).unwrap();
    let token = |role: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {role}=")))
            .unwrap_or_else(|| panic!("no {role} in {text}"))
            .to_owned()
    };
    let http = reqwest::Client::new();
    let counted = http
        .post(format!("{}/api/v1/discovery/count", server.base))
        .bearer_auth(token("RESEARCHER"))
        .json(&json!({"criteria": {"field": "modality", "in": ["MR"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(counted.status(), 200);
    let counted: serde_json::Value = counted.json().await.unwrap();
    assert!(counted["counts"]["subjects"].as_i64().unwrap() > 10, "the demo registry has MR subjects: {counted}");
    let verified =
        http.get(format!("{}/api/v1/audit/verify", server.base)).bearer_auth(token("ADMIN")).send().await.unwrap();
    assert_eq!(verified.status(), 200);
    for (variable, role) in
        [("STEWARD", "steward"), ("STEWARD2", "steward"), ("ORGANIZER", "organizer"), ("UPLOADER", "uploader")]
    {
        let me = http.get(format!("{}/api/v1/me", server.base)).bearer_auth(token(variable)).send().await.unwrap();
        let me: serde_json::Value = me.json().await.unwrap();
        assert_eq!(me["roles"], json!([role]), "{variable}");
    }
    // The same token signs the researcher in to the web pages.
    let home = crate::web::sign_in_over_http(&server.base, &token("RESEARCHER")).await;
    assert!(home.contains("Signed in as") && home.contains("researcher"), "{home}");
    signal(server.child.id(), "TERM");
    assert!(wait_exit(&mut server.child).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_mode_starts_serves_stops_restarts_and_survives_a_crash() {
    let (_dir, data) = data_dir();
    let http = reqwest::Client::new();

    // First start: initdb, migrations, a generated signing secret.
    let mut server = start(&data);
    let ready = http.get(format!("{}/readyz", server.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let token = issue_token(&data);
    let created = http
        .post(format!("{}/api/v1/cohorts", server.base))
        .bearer_auth(&token)
        .json(&json!({ "slug": "kept", "title": "Kept", "tier": "open", "design": "retrospective", "source": "challenge" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let pgdata = data.join("postgres/data");
    assert!(pgdata.join("postmaster.pid").exists());
    if custodian::db::embedded::running_as_root().unwrap() {
        assert_ne!(std::fs::metadata(&pgdata).unwrap().uid(), 0, "started as root, the cluster runs unprivileged");
    }

    // SIGTERM: a clean exit that also stops the cluster.
    signal(server.child.id(), "TERM");
    assert!(wait_exit(&mut server.child).success());
    assert!(!pgdata.join("postmaster.pid").exists(), "the cluster was stopped");

    // Restart with the same data: the cohort and the signing secret are still there.
    let mut server = start(&data);
    let kept = http.get(format!("{}/api/v1/cohorts/kept", server.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(kept.status(), 200);
    let verify = command(&data).args(["audit", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("intact"));

    // A crash: the service and its database die without cleaning up.
    signal(server.child.id(), "KILL");
    wait_exit(&mut server.child);
    let postmaster = std::fs::read_to_string(pgdata.join("postmaster.pid")).unwrap();
    let postmaster_pid: u32 = postmaster.lines().next().unwrap().trim().parse().unwrap();
    signal(postmaster_pid, "KILL");
    std::thread::sleep(Duration::from_millis(500));
    assert!(pgdata.join("postmaster.pid").exists(), "a stale pid file is left behind");

    let mut server = start(&data);
    let kept = http.get(format!("{}/api/v1/cohorts/kept", server.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(kept.status(), 200, "recovered after the crash with the data intact");
    signal(server.child.id(), "TERM");
    assert!(wait_exit(&mut server.child).success());
}

#[test]
fn cluster_moves_out_of_a_data_dir_its_account_cannot_enter_when_started_as_root() {
    if !custodian::db::embedded::running_as_root().unwrap() {
        eprintln!("skipped: only root hands the cluster to another account");
        return;
    }
    // Like root's 0700 home directory.
    let (dir, _) = data_dir();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = private.join("data");
    let output = command(&data).arg("migrate").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let link = data.join("postgres");
    assert!(link.is_symlink(), "the data dir links to its cluster");
    let target = std::fs::read_link(&link).unwrap();
    assert!(target.join("data/PG_VERSION").exists());
    assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o700, "permissions untouched");
    // Started again, the same cluster is found through the link.
    let again = command(&data).arg("migrate").output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    std::fs::remove_dir_all(target).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id_and_route_on_every_request_line() {
    let (_dir, data) = data_dir();
    let mut child = command(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CUSTODIAN_LOG__FORMAT", "json")
        .env("CUSTODIAN_LOG__FILTER", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the server exited early");
    }
    let base = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/cohorts/default"))
        .header("x-request-id", "json-log-probe")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    signal(child.id(), "TERM");
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());

    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let request_line = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "json-log-probe")
        .unwrap_or_else(|| panic!("no line with the request id in:\n{stderr}"));
    assert_eq!(request_line["span"]["route"], "/api/v1/cohorts/{slug}");
    assert_eq!(request_line["fields"]["status"], 401);
    assert!(!stderr.contains("Bearer"), "credentials are never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_server_on_the_same_data_dir_is_refused() {
    let (_dir, data) = data_dir();
    let mut first = start(&data);
    let second = command(&data).args(["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another `custodian serve`"));
    signal(first.child.id(), "TERM");
    assert!(wait_exit(&mut first.child).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let app = TestApp::new().await;
    let admin = app.token("alice", &[Role::Admin]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(custodian::app::serve(
        listener,
        app.router.clone(),
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(30),
    ));

    // Hold the audit chain so the request stays in flight.
    let blocker = app.hold_audit_chain().await;
    let in_flight = tokio::spawn({
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/sites"))
                .bearer_auth(admin)
                .json(&json!({ "code": "late", "name": "Late" }))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!server.is_finished(), "the server waits for the request in flight");
    // New connections are no longer accepted.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());

    blocker.release().await;
    assert_eq!(in_flight.await.unwrap(), 201);
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}
