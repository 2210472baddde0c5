//! The command line as an operator meets it: help, the spec, configuration errors.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_custodian");

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("CUSTODIAN_DATABASE__URL");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_command_explains_itself_with_help() {
    for (args, needle) in [
        (vec!["--help"], "governed research data registry"),
        (vec!["serve", "--help"], "--listen"),
        (vec!["migrate", "--help"], "migrations"),
        (vec!["openapi", "--help"], "OpenAPI"),
        (vec!["demo", "--help"], "demo"),
        (vec!["token", "issue", "--help"], "--ttl"),
        (vec!["audit", "verify", "--help"], "sequence number"),
    ] {
        let (ok, stdout, _) = run(&args, &[]);
        assert!(ok, "{args:?}");
        assert!(stdout.contains(needle), "{args:?}: {stdout}");
        assert!(stdout.contains("--data-dir") && stdout.contains("--config"), "{args:?} lists the common options");
    }
}

#[test]
fn openapi_command_prints_the_committed_contract() {
    let (ok, stdout, _) = run(&["openapi"], &[]);
    assert!(ok);
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap();
    assert_eq!(stdout, committed);
}

#[test]
fn unknown_setting_in_the_config_file_is_named_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custodian.toml");
    std::fs::write(&file, "[http]\nbody_limit = 5\n").unwrap();
    let (ok, _, stderr) = run(&["--config", file.to_str().unwrap(), "serve"], &[]);
    assert!(!ok);
    assert!(stderr.contains("body_limit"), "{stderr}");
}

#[test]
fn invalid_environment_setting_is_named() {
    let (ok, _, stderr) = run(&["migrate"], &[("CUSTODIAN_DATABASE__MAX_CONNECTIONS", "lots")]);
    assert!(!ok);
    assert!(stderr.contains("max_connections"), "{stderr}");
}

#[test]
fn token_issue_refuses_unknown_roles_and_bad_durations() {
    let (ok, _, stderr) = run(&["token", "issue", "--user", "a", "--role", "superuser"], &[]);
    assert!(!ok);
    assert!(stderr.contains("unknown role `superuser`"), "{stderr}");
    let (ok, _, stderr) = run(&["token", "issue", "--user", "a", "--role", "admin", "--ttl", "forever"], &[]);
    assert!(!ok);
    assert!(stderr.contains("--ttl"), "{stderr}");
}

#[test]
fn secrets_given_in_the_environment_never_reach_the_output() {
    let (ok, stdout, stderr) = run(
        &["migrate"],
        &[
            ("CUSTODIAN_DATABASE__URL", "postgres://custodian:hunter2-secret@127.0.0.1:1/none"),
            ("CUSTODIAN_DATABASE__ACQUIRE_TIMEOUT_SECS", "1"),
        ],
    );
    assert!(!ok, "nothing listens on port 1");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "{stderr}");
}
