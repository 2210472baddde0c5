//! Downloading a large release file through the service with `curl`, against
//! reading the same object straight from the local store, and the server's
//! peak resident memory while it streams.
//!
//! ```text
//! cargo bench --bench release_download                 # 2 GiB and 256 MiB files
//! SIZES_MIB=2048 cargo bench --bench release_download
//! ```
//!
//! The demo's approved project gets a release (built by its job as usual),
//! to which a file of `SIZES_MIB` mebibytes of random bytes is added in the
//! object store, recorded with its size and SHA-256 like any release file.
//! The service listens on a local port in this process. Per size, best of
//! three rounds after one warm-up (so both read from the page cache):
//! `cat` of the object's file to `/dev/null`; `curl` of the same file from a
//! zero-copy HTTP server (Python's `socket.sendfile`, the kernel's
//! `sendfile(2)`: the fastest any server can hand a file to a socket here,
//! the ceiling of the loopback itself); then `curl` of
//! `GET /api/v1/extracts/{id}/files/{path}` to `/dev/null`. The process's
//! peak resident memory (VmHWM, reset before each download) is compared to
//! its resident memory before it. Needs curl and python3; Linux only.
//!
//! Prints `size_MiB local_MB/s sendfile_MB/s curl_MB/s curl/local curl/sendfile rss_before_MiB peak_growth_MiB`.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)] // figures to print

#[path = "../tests/api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::process::Command;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{Context, SHA256};
use custodian::auth::Role;
use custodian::jobs;
use custodian::release::build::{self, BUILD_JOB};
use object_store::{ObjectStoreExt as _, WriteMultipart};
use serde_json::json;

const ROUNDS: usize = 3;
const LEASE: Duration = Duration::from_mins(10);
const MIB: u64 = 1024 * 1024;

/// A `/proc/self/status` field, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the field is there")
}

/// Seconds `command` took, which must succeed.
fn timed(command: &mut Command) -> f64 {
    let started = Instant::now();
    let status = command.status().expect("the command runs");
    assert!(status.success(), "{command:?} failed");
    started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<u64> = std::env::var("SIZES_MIB")
        .unwrap_or_else(|_| "2048,256".into())
        .split(',')
        .map(|s| s.trim().parse().expect("SIZES_MIB is a list of numbers"))
        .collect();
    let app = helpers::TestApp::new().await;
    custodian::demo::seed_all(&app.state.ingest, &app.state.config, 12, 7).await.unwrap();
    let project = custodian::demo::project::find(&app.db).await.unwrap().expect("the demo's approved project");
    let rita = app.token("rita", &[Role::Researcher]);
    let queued = app.post_json(&format!("/api/v1/projects/{project}/extracts"), Some(&rita), &json!({})).await;
    let extract = queued.json()["id"].as_str().expect("a queued release").to_owned();
    let ctx = build::Context {
        db: app.db.clone(),
        store: app.state.store.clone(),
        key: std::sync::Arc::new(app.state.ingest.key.clone()),
        signer: app.state.release_signer.clone(),
        config: app.state.config.clone(),
    };
    while let Some(job) = jobs::claim(&app.db, "bench", LEASE).await.unwrap() {
        let run = async { if job.kind == BUILD_JOB { build::run_job(&ctx, &job).await } else { Ok(None) } };
        jobs::run_claimed(&app.db, "bench", LEASE, &job, run).await.unwrap();
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });

    println!("size_MiB local_MB/s sendfile_MB/s curl_MB/s curl/local curl/sendfile rss_before_MiB peak_growth_MiB");
    for size in sizes {
        // The large file, written in parts as a builder writes a large file.
        let path = format!("bench/large-{size}.bin");
        let key = build::object_key(project, extract.parse().unwrap(), &path);
        let mut upload = WriteMultipart::new(app.state.store.put_multipart(&key).await.unwrap());
        let mut digest = Context::new(&SHA256);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut chunk = vec![0_u8; MIB as usize];
        for _ in 0..size {
            for word in chunk.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            digest.update(&chunk);
            upload.write(&chunk);
        }
        upload.finish().await.unwrap();
        sqlx::query(
            "insert into extract_file (extract_id, path, size, sha256, media_type, object_key)
             values ($1::uuid, $2, $3, $4, 'application/octet-stream', $5)",
        )
        .bind(&extract)
        .bind(&path)
        .bind(i64::try_from(size * MIB).unwrap())
        .bind(hex::encode(digest.finish().as_ref()))
        .bind(key.to_string())
        .execute(&app.db)
        .await
        .unwrap();
        let local = app.state.config.objects_dir().join(key.to_string());
        let url = format!("http://{address}/api/v1/extracts/{extract}/files/{path}");
        let auth = format!("Authorization: Bearer {rita}");
        let cat = || Command::new("sh").arg("-c").arg(format!("cat '{}' > /dev/null", local.display())).status();
        let curl = || {
            let mut c = Command::new("curl");
            c.args(["-sSf", "-o", "/dev/null", "-H", &auth, &url]);
            c
        };
        // Warm-up: both read from the page cache afterwards.
        cat().unwrap();
        let mut sendfile = SendfileServer::start(&local);
        let (mut best_local, mut best_curl, mut growth, mut before) = (f64::MAX, f64::MAX, 0_u64, 0_u64);
        let mut best_sendfile = f64::MAX;
        for _ in 0..ROUNDS {
            best_local = best_local
                .min(timed(Command::new("sh").arg("-c").arg(format!("cat '{}' > /dev/null", local.display()))));
            best_sendfile =
                best_sendfile.min(timed(Command::new("curl").args(["-sSf", "-o", "/dev/null", &sendfile.url])));
            before = status_kib("VmRSS:");
            std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak (run as the process's owner)");
            let mut command = curl();
            // `curl` runs while this process serves it: wait without blocking the runtime.
            let seconds = tokio::task::spawn_blocking(move || timed(&mut command)).await.unwrap();
            best_curl = best_curl.min(seconds);
            growth = growth.max(status_kib("VmHWM:").saturating_sub(before));
        }
        sendfile.child.kill().ok();
        sendfile.child.wait().ok();
        let mb = (size * MIB) as f64 / 1e6;
        println!(
            "{size} {:.0} {:.0} {:.0} {:.2} {:.2} {:.1} {:.1}",
            mb / best_local,
            mb / best_sendfile,
            mb / best_curl,
            best_local / best_curl,
            best_sendfile / best_curl,
            before as f64 / 1024.0,
            growth as f64 / 1024.0
        );
        app.state.store.delete(&key).await.unwrap();
    }
}

/// A minimal HTTP server handing one file to each client with `sendfile(2)`.
struct SendfileServer {
    child: std::process::Child,
    url: String,
}

impl SendfileServer {
    const SCRIPT: &'static str = r#"
import os, socket, sys
path = sys.argv[1]
size = os.path.getsize(path)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(4)
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
    with open(path, "rb") as f:
        conn.sendfile(f)
    conn.close()
"#;

    fn start(file: &std::path::Path) -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(Self::SCRIPT)
            .arg(file)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the sendfile server");
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        Self { child, url: format!("http://127.0.0.1:{}/file", port.trim()) }
    }
}
