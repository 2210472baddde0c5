//! Schemathesis (PyPI, pinned in `fixtures/python-requirements.txt`) against
//! the real server on a socket, with the demo registry: it generates requests
//! from the OpenAPI document and checks that no answer is a server error and
//! that every answer has a documented status, content type and body schema.

use std::time::Duration;

use custodian::auth::Role;

use crate::helpers::TestApp;
use crate::python;

const CHECKS: &str = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance";

/// Operations left out, each with its reason.
const EXCLUDED: &[(&str, &str)] = &[
    // STOW-RS takes multipart/related DICOM, which Schemathesis cannot
    // serialize ("No supported serializers for media types: multipart/related");
    // stow.rs drives these with real files and a DICOMweb client.
    ("--exclude-path-regex", "^/dicomweb/"),
];

/// Runs Schemathesis as the bearer of `token`; its exit status and report.
async fn run(base: &str, token: &str, extra: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new(python::tools().join("schemathesis"));
    command
        .args(["run", &format!("{base}/openapi.json"), "--checks", CHECKS, "--seed", "1", "--workers", "2"])
        .args(["--no-color", "--output-truncate", "true", "--warnings", "off"])
        // A generator check, not a conformance check: POST /uploads/{id}/files
        // accepts multipart/related too, which Schemathesis cannot serialize, so
        // it discards those examples and would count the operation as filtered out.
        .args(["--suppress-health-check", "filter_too_much"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(extra)
        .kill_on_drop(true);
    for (flag, value) in EXCLUDED {
        command.args([flag, value]);
    }
    let output = tokio::time::timeout(Duration::from_mins(5), command.output())
        .await
        .expect("schemathesis finishes within 5 minutes")
        .expect("running schemathesis");
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), report)
}

/// How many test cases a report says passed.
fn passed(report: &str) -> u64 {
    report
        .lines()
        .filter_map(|l| l.trim().strip_suffix(" passed"))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|n| n.parse().ok())
        .next_back()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let app = TestApp::new().await;
    custodian::demo::seed(&app.db).await.unwrap();
    custodian::demo::registry::generate(
        &app.db,
        &app.state.ingest.key,
        3650,
        200,
        7,
        custodian::demo::registry::Imaging::CatalogOnly,
    )
    .await
    .unwrap();
    app.state.discovery.refresh(&app.db).await.unwrap();
    let served = app.serve().await;
    let base = format!("http://{}", served.host);

    // The strongest caller first, with every phase: holding every role, it
    // passes every role gate, so each operation runs to its validation and
    // its data. Then each role on its own, fewer examples, for what differs by
    // role (exact or protected counts, what a list shows); what a role may not
    // call answers the documented 403, which contract.rs checks everywhere.
    let mut runs = vec![(
        "every role".to_owned(),
        app.token("schemathesis", &Role::ALL),
        vec!["--max-examples", "5", "--phases", "examples,coverage,fuzzing,stateful"],
    )];
    for role in Role::ALL {
        runs.push((
            role.to_string(),
            app.token(role.as_str(), &[role]),
            vec!["--max-examples", "10", "--phases", "examples,fuzzing"],
        ));
    }
    let mut failed = Vec::new();
    for (who, token, extra) in &runs {
        let (ok, report) = run(&base, token, extra).await;
        let summary = report.lines().skip_while(|l| !l.contains("SUMMARY")).collect::<Vec<_>>().join("\n");
        println!("schemathesis as {who}:\n{summary}\n");
        if !ok || passed(&report) == 0 {
            failed.push(format!("as {who}:\n{report}"));
        }
    }
    served.stop().await;
    assert!(failed.is_empty(), "schemathesis reports failures:\n{}", failed.join("\n\n"));
}
