//! One file of a release, from what is on disk to a verified copy under its
//! final name.
//!
//! Bytes go to `DIR/.custodian-partial/<path>` and are hashed as they arrive;
//! the file is renamed into place only once its size and SHA-256 are the
//! manifest's, so a bad file never appears under its final name. A partial
//! copy left by an earlier run is resumed with `Range` + `If-Range` (the
//! file's SHA-256 is its ETag): if the registry's content is not the one the
//! partial copy started, it answers the whole file and the copy starts over;
//! a partial copy that does not end with the right digest is fetched again
//! whole. No fsync: a copy lost in a crash fails its digest on the next run.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{Context, SHA256};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, HeaderMap, HeaderValue, IF_RANGE, RANGE};
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use super::client::{Failure, Registry, backoff, describe};
use super::progress::{FileBar, Progress};
use crate::release::manifest::{FileEntry, local_path};

/// Where a run keeps its partial copies, under the output directory.
pub const PARTIAL_DIR: &str = ".custodian-partial";

/// What a file's final name holds before the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Nothing.
    Missing,
    /// The file, with the manifest's size and digest: nothing to fetch.
    Present,
    /// Something else, to be replaced by the verified file.
    Different,
}

/// What is on disk for one file before the run.
#[derive(Debug, Clone, Copy)]
pub struct State {
    pub local: Local,
    /// Bytes of a usable partial copy (no longer than the file).
    pub partial: u64,
}

/// What fetching one file did.
#[derive(Debug, Clone, Copy)]
pub struct Fetched {
    /// Bytes received in this run.
    pub received: u64,
    /// Whether a partial copy from an earlier run was continued.
    pub resumed: bool,
}

/// The output directory of a run.
#[derive(Debug, Clone)]
pub struct Out {
    pub root: PathBuf,
    pub partial: PathBuf,
}

impl Out {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf(), partial: root.join(PARTIAL_DIR) }
    }

    fn final_path(&self, entry: &FileEntry) -> PathBuf {
        local_path(&self.root, entry)
    }

    fn partial_path(&self, entry: &FileEntry) -> PathBuf {
        local_path(&self.partial, entry)
    }
}

/// Looks at a file's final name and partial copy (hashing what is there).
pub async fn inspect(out: &Out, entry: &FileEntry) -> std::io::Result<State> {
    let final_path = out.final_path(entry);
    let local = match tokio::fs::metadata(&final_path).await {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Local::Missing,
        Err(error) => return Err(error),
        Ok(meta) if !meta.is_file() || meta.len() != entry.size => Local::Different,
        Ok(_) => {
            let (context, _) = hash_file(final_path).await?;
            if hex::encode(context.finish()) == entry.sha256 { Local::Present } else { Local::Different }
        }
    };
    let partial = match tokio::fs::metadata(out.partial_path(entry)).await {
        Ok(meta) if meta.is_file() && meta.len() <= entry.size => meta.len(),
        _ => 0,
    };
    Ok(State { local, partial })
}

/// The SHA-256 state and length of a file's content, read off the async threads.
async fn hash_file(path: PathBuf) -> std::io::Result<(Context, u64)> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        let mut context = Context::new(&SHA256);
        let mut buffer = vec![0; 1 << 20];
        let mut length = 0;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                return Ok((context, length));
            }
            context.update(&buffer[..read]);
            length += read as u64;
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

fn local_error(what: &str, path: &Path, error: &std::io::Error) -> Failure {
    Failure::File(format!("{what} {}: {error}", path.display()))
}

/// A partial copy being written, with the digest of what it holds.
struct Partial {
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    context: Context,
    length: u64,
}

impl Partial {
    /// The partial copy of `entry`, continued from what an earlier run left.
    async fn open(path: PathBuf, size: u64) -> Result<Self, Failure> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| local_error("creating", parent, &e))?;
        }
        let (context, length) = match hash_file(path.clone()).await {
            Ok((context, length)) if length <= size => (context, length),
            _ => (Context::new(&SHA256), 0),
        };
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| local_error("opening", &path, &e))?;
        let mut partial = Self { path, file: tokio::io::BufWriter::with_capacity(1 << 20, file), context, length };
        if length == 0 {
            partial.restart().await?;
        }
        Ok(partial)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.file.write_all(bytes).await.map_err(|e| local_error("writing", &self.path, &e))?;
        self.context.update(bytes);
        self.length += bytes.len() as u64;
        Ok(())
    }

    /// Empties the copy, to fetch the file whole.
    async fn restart(&mut self) -> Result<(), Failure> {
        self.file.flush().await.map_err(|e| local_error("writing", &self.path, &e))?;
        self.file.get_mut().set_len(0).await.map_err(|e| local_error("truncating", &self.path, &e))?;
        self.context = Context::new(&SHA256);
        self.length = 0;
        Ok(())
    }

    /// Whether the copy is the file the manifest lists.
    fn matches(&self, entry: &FileEntry) -> bool {
        self.length == entry.size && hex::encode(self.context.clone().finish()) == entry.sha256
    }
}

/// Fetches one file into its final name, verified.
pub async fn fetch(
    registry: &Registry,
    extract: Uuid,
    out: &Out,
    entry: &FileEntry,
    progress: &Progress,
) -> Result<Fetched, Failure> {
    let extract = extract.to_string();
    let segments = ["api", "v1", "extracts", &extract, "files"].into_iter().chain(entry.path.split('/'));
    let url = registry.url(segments);
    let etag = format!("\"{}\"", entry.sha256);
    let mut partial = Partial::open(out.partial_path(entry), entry.size).await?;
    let resumed = partial.length > 0;
    let bar = progress.file(&entry.path, entry.size, partial.length);
    let mut received = 0;
    let mut failures = 0;
    loop {
        if partial.length == entry.size {
            if partial.matches(entry) {
                break;
            }
            // A partial copy of other bytes: the whole file again.
            failures += 1;
            if failures > registry.retries {
                return Err(Failure::File("the content does not match the manifest's SHA-256".into()));
            }
            restart(&mut partial, &bar).await?;
        }
        let mut headers = HeaderMap::new();
        if partial.length > 0 {
            let range = format!("bytes={}-", partial.length);
            headers.insert(RANGE, HeaderValue::from_str(&range).expect("a valid range"));
            headers.insert(IF_RANGE, HeaderValue::from_str(&etag).map_err(|_| Failure::File("a bad digest".into()))?);
        }
        let mut response = registry.get(&url, &headers, true).await?;
        let continues = response.status() == StatusCode::PARTIAL_CONTENT
            && response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {}-", partial.length)));
        if !continues && partial.length > 0 {
            // The whole file (other content, or no range support), or an
            // unusable range: start over.
            restart(&mut partial, &bar).await?;
            if response.status() != StatusCode::OK {
                continue;
            }
        }
        let before = received;
        let cut = loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    if partial.length + bytes.len() as u64 > entry.size {
                        break Some("the registry sent more bytes than the manifest lists".to_owned());
                    }
                    partial.write(&bytes).await?;
                    received += bytes.len() as u64;
                    bar.advance(bytes.len() as u64);
                }
                Ok(None) if partial.length == entry.size => break None,
                Ok(None) => break Some("the transfer ended early".to_owned()),
                Err(error) => break Some(describe(&error)),
            }
        };
        if let Some(why) = cut {
            // A transfer that made progress is worth continuing at once.
            if received == before {
                failures += 1;
                if failures > registry.retries {
                    return Err(Failure::File(format!("{why} after {failures} attempts")));
                }
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
    partial.file.flush().await.map_err(|e| local_error("writing", &partial.path, &e))?;
    drop(partial.file);
    let final_path = out.final_path(entry);
    if let Some(parent) = final_path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| local_error("creating", parent, &e))?;
    }
    tokio::fs::rename(&partial.path, &final_path).await.map_err(|e| local_error("renaming into", &final_path, &e))?;
    Ok(Fetched { received, resumed })
}

async fn restart(partial: &mut Partial, bar: &FileBar) -> Result<(), Failure> {
    partial.restart().await?;
    bar.restart();
    Ok(())
}
