//! The deploy path as written: a node started with exactly the environment
//! `deploy/compose.yaml` (or the Kubernetes ConfigMap and Secret) gives it,
//! against an external PostgreSQL and a real S3 server, becomes ready. Only
//! what necessarily differs here is replaced: the database and S3 addresses
//! and credentials, the listen port, the data directory, and the Secret's
//! deliberate placeholders (which an operator replaces).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;

use crate::helpers::{database_url, fresh_database};
use crate::s3_server::S3Server;

const BIN: &str = env!("CARGO_BIN_EXE_custodian");

/// The `KEY: value` entries indented under the line `block` (after `after`, if given).
fn entries(text: &str, after: Option<&str>, block: &str) -> BTreeMap<String, String> {
    let mut lines = text.lines().skip_while(|l| after.is_some_and(|a| l.trim_end() != a));
    let Some(start) = lines.find(|l| l.trim_end() == block) else { panic!("no `{block}` block") };
    let indent = start.len() - start.trim_start().len();
    let mut out = BTreeMap::new();
    for line in lines {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.len() - trimmed.len() <= indent {
            break;
        }
        let (key, value) = trimmed.split_once(':').expect("a KEY: value line");
        out.insert(key.trim().to_owned(), value.trim().trim_matches('"').to_owned());
    }
    out
}

fn deploy_file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Points `env` at this test's database, S3 server, port and directory.
fn here(env: &mut BTreeMap<String, String>, db: &str, s3: &S3Server, port: u16, dir: &std::path::Path) {
    for (key, value) in [
        ("CUSTODIAN_DATABASE__URL", database_url(db)),
        ("CUSTODIAN_STORAGE__S3__ENDPOINT", s3.endpoint.clone()),
        ("CUSTODIAN_STORAGE__S3__BUCKET", s3.bucket.clone()),
        ("CUSTODIAN_STORAGE__S3__REGION", s3.region.clone()),
        ("CUSTODIAN_STORAGE__S3__ACCESS_KEY_ID", s3.access_key.clone()),
        ("CUSTODIAN_STORAGE__S3__SECRET_ACCESS_KEY", s3.secret_key.clone()),
        ("CUSTODIAN_STORAGE__S3__ALLOW_HTTP", "true".to_owned()),
        ("CUSTODIAN_STORAGE__S3__PATH_STYLE", "true".to_owned()),
        ("CUSTODIAN_LISTEN", format!("127.0.0.1:{port}")),
        ("CUSTODIAN_DATA_DIR", dir.display().to_string()),
    ] {
        env.insert(key.to_owned(), value);
    }
}

fn command(env: &BTreeMap<String, String>, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).envs(env);
    command
}

/// Waits for `/readyz` to answer 200; panics with the node's output if it exits or never gets there.
async fn becomes_ready(mut child: Child, port: u16) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("the node exited ({status}) before it was ready:\n{stderr}");
        }
        let ready = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        if started.elapsed() > Duration::from_mins(1) {
            child.kill().unwrap();
            panic!("the node did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_with_the_environment_compose_gives_it_becomes_ready() {
    let compose = deploy_file("compose.yaml");
    let mut env = entries(&compose, Some("  custodian:"), "    environment:");
    assert!(env.contains_key("CUSTODIAN_DEID__REGISTRY_KEY"), "compose gives the registry key: {env:?}");
    assert!(env.contains_key("CUSTODIAN_RELEASE__SIGNING_KEY"), "compose gives the release signing key: {env:?}");
    let (_pool, db) = fresh_database().await;
    let root = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&root.path().join("s3")).await;
    let port = free_port();
    here(&mut env, &db, &s3, port, &root.path().join("data"));
    let child = command(&env, &["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    becomes_ready(child, port).await;
}

#[tokio::test]
async fn a_node_with_the_kubernetes_configmap_and_secret_becomes_ready_after_the_migration_job() {
    let mut env = entries(&deploy_file("k8s/configmap.yaml"), None, "data:");
    let secret = entries(&deploy_file("k8s/secret.example.yaml"), None, "stringData:");
    for required in ["CUSTODIAN_AUTH__HS256_SECRET", "CUSTODIAN_DEID__REGISTRY_KEY", "CUSTODIAN_RELEASE__SIGNING_KEY"] {
        assert!(secret.contains_key(required), "the Secret example lists {required}");
    }
    // The operator replaces every placeholder with a real secret of the kind its comment asks for.
    for (key, value) in secret {
        let value = if key == "CUSTODIAN_RELEASE__SIGNING_KEY" {
            custodian::release::manifest::generate_signing_key().unwrap().expose_secret().to_owned()
        } else if value.contains("CHANGE_ME") {
            format!("{key}-generated-for-this-test-0123456789abcdef")
        } else {
            value
        };
        env.insert(key, value);
    }
    let (_pool, db) = fresh_database().await;
    let root = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&root.path().join("s3")).await;
    let port = free_port();
    here(&mut env, &db, &s3, port, &root.path().join("data"));
    let migrated = command(&env, &["migrate"]).output().unwrap();
    assert!(migrated.status.success(), "the migration job: {}", String::from_utf8_lossy(&migrated.stderr));
    let child = command(&env, &["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    becomes_ready(child, port).await;
}
