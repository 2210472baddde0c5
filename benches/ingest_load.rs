//! Load tool of the ingest benchmark (`benches/ingest.sh`): writes the
//! synthetic CT corpora and pushes them over HTTP, to Custodian or to Orthanc,
//! with the same client code so the two are compared like for like.
//!
//! ```text
//! cargo bench --bench ingest_load -- gen <dir> <rows> <count>
//! cargo bench --bench ingest_load -- custodian <base-url> <token> <dir> <connections> <files-per-request>
//! cargo bench --bench ingest_load -- orthanc <base-url> <dir> <connections>
//! ```
//!
//! Each run prints one line: `files bytes seconds instances/s MB/s`. Batches
//! hold up to `<files-per-request>` files and 16 MiB. The
//! corpus is read into memory before the clock starts; for Custodian the time
//! covers opening the session, every upload and the commit.

#[path = "../tests/api/dicom_gen.rs"]
#[allow(dead_code)]
mod dicom_gen;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;

/// Instances per series; patients get two series of this many slices.
const SLICES: u32 = 100;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // `cargo bench` appends `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["gen", dir, rows, count] => generate(Path::new(dir), rows.parse()?, count.parse()?),
        ["custodian", base, token, dir, connections, per_request] => {
            let corpus = load(Path::new(dir))?;
            let run = custodian(base, token, &corpus, connections.parse()?, per_request.parse()?).await?;
            report(&corpus, run);
            Ok(())
        }
        ["orthanc", base, dir, connections] => {
            let corpus = load(Path::new(dir))?;
            let run = orthanc(base, &corpus, connections.parse()?).await?;
            report(&corpus, run);
            Ok(())
        }
        _ => bail!(
            "usage: gen <dir> <rows> <count> | custodian <base> <token> <dir> <conns> <per-request> | orthanc <base> <dir> <conns>"
        ),
    }
}

/// Writes `count` CT slices of `rows`×`rows` 16-bit pixels, identifiers and all.
fn generate(dir: &Path, rows: u16, count: u32) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for n in 0..count {
        let (patient, series, slice) = (n / (2 * SLICES), (n / SLICES) % 2, n % SLICES);
        let mut instance = dicom_gen::Instance::ct(patient, 1, series + 1, slice + 1);
        instance.rows = rows;
        instance.columns = rows;
        std::fs::write(dir.join(format!("{n:06}.dcm")), instance.to_bytes())?;
    }
    Ok(())
}

fn load(dir: &Path) -> Result<Vec<Bytes>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    paths.sort();
    paths.into_iter().map(|p| Ok(Bytes::from(std::fs::read(&p)?))).collect()
}

fn report(corpus: &[Bytes], seconds: f64) {
    let bytes: usize = corpus.iter().map(Bytes::len).sum();
    #[allow(clippy::cast_precision_loss)]
    let (files, mb) = (corpus.len() as f64, bytes as f64 / 1e6);
    println!("{} {bytes} {seconds:.3} {:.0} {:.1}", corpus.len(), files / seconds, mb / seconds);
}

fn client(connections: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(connections).tcp_nodelay(true).build()?)
}

/// Largest body of a batched request, as an upload client would cap it.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Sends `corpus` in requests of up to `per_request` files (and, when batching,
/// up to [`MAX_REQUEST_BYTES`]) over `connections` parallel connections; `send`
/// posts one request's files.
async fn drive<F, Fut>(corpus: &[Bytes], connections: usize, per_request: usize, send: F) -> Result<()>
where
    F: Fn(Vec<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let mut chunks: Vec<Vec<Bytes>> = vec![Vec::new()];
    for file in corpus {
        let last = chunks.last_mut().expect("never empty");
        let bytes: usize = last.iter().map(Bytes::len).sum();
        if !last.is_empty() && (last.len() == per_request || bytes + file.len() > MAX_REQUEST_BYTES) {
            chunks.push(vec![file.clone()]);
        } else {
            last.push(file.clone());
        }
    }
    let chunks = Arc::new(chunks);
    let next = Arc::new(AtomicUsize::new(0));
    let send = Arc::new(send);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (chunks, next, send) = (Arc::clone(&chunks), Arc::clone(&next), Arc::clone(&send));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(chunk) = chunks.get(i) else { return Ok::<_, anyhow::Error>(()) };
                send(chunk.clone()).await?;
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    Ok(())
}

async fn custodian(base: &str, token: &str, corpus: &[Bytes], connections: usize, per_request: usize) -> Result<f64> {
    let http = client(connections)?;
    let auth = format!("Bearer {token}");
    let start = Instant::now();
    let session: serde_json::Value = http
        .post(format!("{base}/api/v1/uploads"))
        .header("authorization", &auth)
        .json(&serde_json::json!({ "cohort": "default", "site": "local" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = session["id"].as_str().context("session id")?.to_owned();
    let files_url = format!("{base}/api/v1/uploads/{id}/files");
    let (http2, auth2) = (http.clone(), auth.clone());
    drive(corpus, connections, per_request, move |files| {
        let (http, auth, url) = (http2.clone(), auth2.clone(), files_url.clone());
        async move {
            let (content_type, parts) = if files.len() == 1 {
                ("application/dicom".to_owned(), vec![files[0].clone()])
            } else {
                multipart(&files)
            };
            let length: usize = parts.iter().map(Bytes::len).sum();
            // The files go out as they are, without being copied into one body first.
            let frames = futures::stream::iter(
                parts.into_iter().map(|b| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b))),
            );
            let response = http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", content_type)
                .header("content-length", length)
                .body(reqwest::Body::wrap(http_body_util::StreamBody::new(frames)))
                .send()
                .await?
                .error_for_status()?;
            let answer: serde_json::Value = response.json().await?;
            let stored = answer["counts"]["stored"].as_u64().unwrap_or(0);
            ensure!(stored == files.len() as u64, "not every file was stored: {answer}");
            Ok(())
        }
    })
    .await?;
    http.post(format!("{base}/api/v1/uploads/{id}/commit"))
        .header("authorization", &auth)
        .send()
        .await?
        .error_for_status()?;
    Ok(start.elapsed().as_secs_f64())
}

/// A `multipart/related` body as its pieces: each part's header, the file itself, the delimiters.
fn multipart(files: &[Bytes]) -> (String, Vec<Bytes>) {
    const BOUNDARY: &str = "custodian-bench-boundary-7d3f";
    let header = Bytes::from(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n"));
    let mut parts = Vec::with_capacity(files.len() * 3 + 1);
    for (i, file) in files.iter().enumerate() {
        let separator =
            if i == 0 { header.clone() } else { Bytes::from(format!("\r\n{}", String::from_utf8_lossy(&header))) };
        parts.push(separator);
        parts.push(file.clone());
    }
    parts.push(Bytes::from(format!("\r\n--{BOUNDARY}--\r\n")));
    (format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"), parts)
}

async fn orthanc(base: &str, corpus: &[Bytes], connections: usize) -> Result<f64> {
    let http = client(connections)?;
    let url = format!("{base}/instances");
    let start = Instant::now();
    drive(corpus, connections, 1, move |files| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer: serde_json::Value = http
                .post(&url)
                .header("content-type", "application/dicom")
                .body(files[0].clone())
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            ensure!(answer["Status"] == "Success", "Orthanc did not store a file: {answer}");
            Ok(())
        }
    })
    .await?;
    Ok(start.elapsed().as_secs_f64())
}
