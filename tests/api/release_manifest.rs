//! Signed release manifests: the keys the registry publishes verify what its
//! signer signs, in Rust and with OpenSSL (the README's steps, run as written),
//! and anything altered is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use axum::http::{HeaderValue, StatusCode, header};
use chrono::{DateTime, Utc};
use custodian::config::Config;
use custodian::release::manifest::{
    self, FileEntry, Header, Manifest, PublishedKey, ReleaseSigner, SIGNATURE_FILE, VerifyError,
};
use uuid::Uuid;

use crate::helpers::{TestApp, ensure_debian_package};

const KEYS: &str = "/.well-known/custodian/release-keys";

/// A small release on disk under `dir`, and its manifest.
fn write_release(dir: &Path) -> Manifest {
    let files: &[(&str, &[u8])] = &[
        ("README.md", b"# Release 1\n"),
        ("tables/subjects.csv", b"subject_id,age\npsub-aaaa,54\npsub-bbbb,61\n"),
        ("dicom/2.25.1/2.25.2/2.25.3.dcm", &[0x44; 300]),
    ];
    let mut entries = Vec::new();
    for (path, bytes) in files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
        entries.push(FileEntry::of_bytes(*path, bytes));
    }
    let header = Header {
        extract_id: Uuid::new_v4(),
        project_id: Some(Uuid::new_v4()),
        open_cohort: None,
        version: 1,
        created_at: DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap(),
        grant_id: Some(Uuid::new_v4()),
        subjects: 2,
    };
    Manifest::new(header, entries).unwrap()
}

async fn published_keys(app: &TestApp) -> Vec<PublishedKey> {
    let res = app.get(KEYS, None).await;
    res.assert_status(StatusCode::OK);
    PublishedKey::from_jwks(&res.body).expect("the endpoint serves a JWK Set")
}

#[tokio::test]
async fn release_keys_are_public_cacheable_ed25519_jwks() {
    let app = TestApp::new().await;

    let res = app.get(KEYS, None).await;

    res.assert_status(StatusCode::OK);
    let body = res.json();
    let key = &body["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["use"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("sig"))
    );
    assert_eq!(key["kid"], app.state.release_signer.key_id());
    assert_eq!(body["keys"].as_array().unwrap().len(), 1, "no previous keys configured");
    assert_eq!(res.headers[header::CACHE_CONTROL], "public, max-age=3600");
    let etag = res.headers[header::ETAG].clone();

    let mut request = axum::http::Request::get(KEYS).body(axum::body::Body::empty()).unwrap();
    request.headers_mut().insert(header::IF_NONE_MATCH, etag);
    let again = app.call(request).await;
    again.assert_status(StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
}

#[tokio::test]
async fn the_published_key_verifies_what_the_running_server_signs_and_refuses_any_change() {
    let app = TestApp::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (bytes, signature) = manifest::sign(&app.state.release_signer, &write_release(dir.path()));
    let keys = published_keys(&app).await;

    let verified = manifest::verify(&bytes, &signature, &keys).expect("the published key verifies");
    assert_eq!(verified.files.len(), 3);

    let mut flipped = bytes.clone();
    let at = String::from_utf8_lossy(&bytes).find("psub").unwrap_or(bytes.len() / 2);
    flipped[at] ^= 0x20;
    assert_eq!(manifest::verify(&flipped, &signature, &keys), Err(VerifyError::BadSignature));

    let other = ReleaseSigner::from_text(
        secrecy::ExposeSecret::expose_secret(&manifest::generate_signing_key().unwrap()),
        Vec::new(),
    )
    .unwrap();
    let (_, foreign) = manifest::sign(&other, &verified);
    assert!(matches!(manifest::verify(&bytes, &foreign, &keys), Err(VerifyError::UnknownKey(_))));
    let mut relabelled: serde_json::Value = serde_json::from_slice(&foreign).unwrap();
    relabelled["key_id"] = app.state.release_signer.key_id().into();
    assert_eq!(
        manifest::verify(&bytes, relabelled.to_string().as_bytes(), &keys),
        Err(VerifyError::BadSignature),
        "another key's signature under the registry's key id"
    );
}

/// The `sh` block of README's "Verifying a release manifest" section.
fn readme_steps() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## Verifying a release manifest").nth(1).expect("the README section");
    let block = section.split("```sh\n").nth(1).expect("a sh block");
    block.split("```").next().unwrap().to_owned()
}

fn run_steps(dir: &Path, server: &str) -> std::process::Output {
    Command::new("sh").arg("-euc").arg(readme_steps()).current_dir(dir).env("SERVER", server).output().unwrap()
}

#[tokio::test]
async fn openssl_verifies_a_release_offline_with_the_published_key_as_the_readme_says() {
    for (program, package) in [("openssl", "openssl"), ("jq", "jq"), ("curl", "curl")] {
        ensure_debian_package(program, package).unwrap();
    }
    let app = TestApp::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app.router.clone()).into_future());
    let dir = tempfile::tempdir().unwrap();
    let (bytes, signature) = manifest::sign(&app.state.release_signer, &write_release(dir.path()));
    std::fs::write(dir.path().join(manifest::MANIFEST_FILE), &bytes).unwrap();
    std::fs::write(dir.path().join(SIGNATURE_FILE), &signature).unwrap();

    let dir_path = dir.path().to_owned();
    let url = server.clone();
    let good = tokio::task::spawn_blocking(move || run_steps(&dir_path, &url)).await.unwrap();
    let out = String::from_utf8_lossy(&good.stdout).into_owned() + &String::from_utf8_lossy(&good.stderr);
    assert!(good.status.success(), "{out}");
    assert!(out.contains("Signature Verified Successfully"), "{out}");

    // A file changed after release fails its checksum.
    std::fs::write(dir.path().join("tables/subjects.csv"), b"subject_id,age\npsub-aaaa,55\npsub-bbbb,61\n").unwrap();
    let dir_path = dir.path().to_owned();
    let url = server.clone();
    let bad_file = tokio::task::spawn_blocking(move || run_steps(&dir_path, &url)).await.unwrap();
    assert!(!bad_file.status.success());
    assert!(String::from_utf8_lossy(&bad_file.stdout).contains("tables/subjects.csv: FAILED"));

    // A manifest changed after signing fails the signature.
    let tampered = String::from_utf8(bytes).unwrap().replacen("\"subjects\": 2", "\"subjects\": 3", 1);
    std::fs::write(dir.path().join(manifest::MANIFEST_FILE), tampered).unwrap();
    let dir_path = dir.path().to_owned();
    let bad_manifest = tokio::task::spawn_blocking(move || run_steps(&dir_path, &server)).await.unwrap();
    assert!(!bad_manifest.status.success());
    let out =
        String::from_utf8_lossy(&bad_manifest.stdout).into_owned() + &String::from_utf8_lossy(&bad_manifest.stderr);
    assert!(out.contains("Signature Verification Failure"), "{out}");
}

#[test]
fn an_embedded_node_generates_its_key_once_readable_only_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().to_owned(), ..Config::default() };

    let first = ReleaseSigner::load(&config).unwrap();
    let second = ReleaseSigner::load(&config).unwrap();

    assert_eq!(first.key_id(), second.key_id(), "a restart keeps the key");
    let file = dir.path().join(manifest::EMBEDDED_KEY_FILE);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // The file holds a PKCS#8 key OpenSSL reads as Ed25519.
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        std::fs::read_to_string(&file).unwrap().trim(),
    )
    .unwrap();
    let der_file = dir.path().join("key.der");
    std::fs::write(&der_file, der).unwrap();
    ensure_debian_package("openssl", "openssl").unwrap();
    let text = Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&der_file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("ED25519 Private-Key"), "{text:?}");
}

#[tokio::test]
async fn a_node_with_an_external_database_and_no_signing_key_refuses_to_start_naming_the_variable() {
    let (_pool, db) = crate::helpers::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_custodian"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CUSTODIAN_DATABASE__URL", crate::helpers::database_url(&db))
        .env("CUSTODIAN_DATA_DIR", dir.path())
        .env("CUSTODIAN_LISTEN", "127.0.0.1:0")
        .env("CUSTODIAN_AUTH__HS256_SECRET", crate::helpers::TEST_SECRET)
        .env("CUSTODIAN_DEID__REGISTRY_KEY", crate::helpers::TEST_REGISTRY_KEY)
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CUSTODIAN_RELEASE__SIGNING_KEY"), "{stderr}");
    assert!(!dir.path().join(manifest::EMBEDDED_KEY_FILE).exists(), "no key generated for one node alone");
}

#[tokio::test]
async fn a_rotated_registry_still_publishes_the_key_of_its_earlier_releases() {
    let old = TestApp::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (bytes, signature) = manifest::sign(&old.state.release_signer, &write_release(dir.path()));
    let old_x = old.state.release_signer.jwks().keys[0].x.clone();

    let new = TestApp::with_config(|config| config.release.previous_public_keys = vec![old_x]).await;
    let keys = published_keys(&new).await;

    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid(), new.state.release_signer.key_id(), "the current key first");
    assert!(manifest::verify(&bytes, &signature, &keys).is_ok(), "the old release still verifies");
    assert_ne!(
        old.get(KEYS, None).await.headers[header::ETAG],
        HeaderValue::from_str(new.get(KEYS, None).await.headers[header::ETAG].to_str().unwrap()).unwrap(),
        "a rotation changes the ETag"
    );
}

#[test]
fn a_damaged_key_file_stops_the_node_rather_than_being_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().to_owned(), ..Config::default() };
    let file = dir.path().join(manifest::EMBEDDED_KEY_FILE);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let damaged = "MC4CAQAwBQYDK2VwBCIEIL-this-is-not-a-key-any-more-0123456789";
    std::fs::write(&file, damaged).unwrap();

    let error = ReleaseSigner::load(&config).unwrap_err().to_string();

    assert!(error.contains(manifest::EMBEDDED_KEY_FILE), "{error}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), damaged, "the file is left for the operator");
}
