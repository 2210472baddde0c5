//! `custodian fetch`: downloads a release to a directory, verified.
//!
//! 1. The manifest and its detached signature are read and verified against
//!    the registry's published keys (or keys pinned on the command line)
//!    before anything else: a manifest that does not verify, or that is not
//!    the release asked for, stops the run with nothing downloaded.
//! 2. What the directory already holds is inspected: a file with the
//!    manifest's digest is kept, a partial copy of an earlier run is resumed.
//! 3. Files are fetched in parallel ([`download::fetch`]), each verified
//!    before it takes its final name; a refusal by the registry (`403`, a
//!    `401` no renewed token fixes) stops the run; other failures are retried
//!    ([`client`]) and, when they persist, listed in the summary.
//!
//! Every request of a run names one download session, so the registry's
//! audit shows one download however many ranges and retries it took.

mod client;
mod download;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use futures::StreamExt as _;
use uuid::Uuid;

use self::client::{Failure, Registry, TokenSource};
use self::download::{Local, Out, PARTIAL_DIR, State};
use self::progress::Progress;
use crate::release::manifest::{
    self, FileEntry, MANIFEST_FILE, Manifest, PublishedKey, SIGNATURE_FILE, SignatureDocument, VerifyError,
};

/// Failures listed one by one in the summary; beyond, a count.
const LISTED_FAILURES: usize = 20;

/// `custodian fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The registry, e.g. https://registry.example.org.
    #[arg(long, value_name = "URL", env = "CUSTODIAN_SERVER")]
    pub server: String,
    /// Bearer token. Prefer the CUSTODIAN_TOKEN variable or --token-file:
    /// a flag stays in the shell's history. Without any, a published open
    /// cohort's version is downloaded anonymously.
    #[arg(long, value_name = "TOKEN", env = "CUSTODIAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token, read again whenever the registry
    /// answers 401, so a token renewed there keeps a long transfer going.
    /// Takes precedence over --token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The release's id.
    #[arg(long, value_name = "ID")]
    pub extract: Uuid,
    /// Directory to download into (created if need be). Running again in the
    /// same directory resumes: verified files are kept, partial ones continued.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Files transferred at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Failed attempts per file (or per request) before giving it up; the
    /// pause between attempts doubles from 0.5 s up to 30 s.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub retries: u32,
    /// Trust only this Ed25519 public key (a JWK's `x`, base64url), obtained
    /// from the registry's operators out of band, instead of the keys the
    /// server publishes. Repeatable.
    #[arg(long = "public-key", value_name = "X")]
    pub public_keys: Vec<String>,
    /// Accept only a signature by the key with this id (as printed by an
    /// earlier fetch or published by the registry's operators). Repeatable.
    #[arg(long = "key-id", value_name = "KID")]
    pub key_ids: Vec<String>,
    /// Verify the manifest and list what would be fetched, downloading nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `custodian fetch`.
pub async fn run(args: FetchArgs) -> Result<ExitCode> {
    let source = match (&args.token_file, &args.token) {
        (Some(path), _) => TokenSource::File(path.clone()),
        (None, Some(token)) => TokenSource::Fixed(token.clone()),
        (None, None) => {
            // An open cohort's version needs none; a project's release answers 401, said plainly.
            eprintln!("no token given: downloading anonymously (published open cohorts only)");
            TokenSource::Anonymous
        }
    };
    let registry = Registry::new(&args.server, source, args.retries)?;
    let (manifest, bytes, signature, key_id) = verified_manifest(&registry, &args).await?;
    eprintln!(
        "release {} version {}: {} files, {}, signed by key {key_id}",
        manifest.extract_id,
        manifest.version,
        manifest.totals.files,
        human(manifest.totals.bytes)
    );
    let out = Out::new(&args.out);
    let parallel = usize::from(args.parallel);
    if args.dry_run {
        let states = inspect_all(&out, &manifest, parallel).await?;
        dry_run(&manifest, &states);
        return Ok(ExitCode::SUCCESS);
    }
    tokio::fs::create_dir_all(&out.partial).await.with_context(|| format!("creating {}", out.partial.display()))?;
    // Two runs into one directory would write the same partial copies.
    let lock = std::fs::File::open(&out.partial).with_context(|| format!("opening {}", out.partial.display()))?;
    if lock.try_lock().is_err() {
        bail!("another `custodian fetch` is writing into {}", out.root.display());
    }
    save(&out, MANIFEST_FILE, &bytes).await?;
    save(&out, SIGNATURE_FILE, &signature).await?;
    let states = inspect_all(&out, &manifest, parallel).await?;
    let summary = fetch_all(&registry, &out, &manifest, &states, parallel).await;
    Ok(summary.report(&out))
}

/// The manifest, its bytes, its signature's and the signing key's id, once verified.
async fn verified_manifest(registry: &Registry, args: &FetchArgs) -> Result<(Manifest, Vec<u8>, Vec<u8>, String)> {
    let id = args.extract.to_string();
    let bytes = registry.document(&["api", "v1", "extracts", &id, "manifest"], true).await?;
    let signature = registry.document(&["api", "v1", "extracts", &id, "manifest.sig"], true).await?;
    let mut keys = if args.public_keys.is_empty() {
        let jwks = registry.document(&[".well-known", "custodian", "release-keys"], false).await?;
        PublishedKey::from_jwks(&jwks).map_err(|e| anyhow!("the registry's release keys are unusable: {e}"))?
    } else {
        let keys: Result<Vec<_>, _> = args.public_keys.iter().map(|x| PublishedKey::from_x(x)).collect();
        keys.map_err(|e| anyhow!("--public-key {e}"))?
    };
    if !args.key_ids.is_empty() {
        keys.retain(|key| args.key_ids.iter().any(|kid| kid.trim() == key.kid()));
    }
    let refused = |why: String| anyhow!("the manifest of release {id} is refused, nothing was downloaded: {why}");
    let pinned = !args.public_keys.is_empty() || !args.key_ids.is_empty();
    let manifest = manifest::verify(&bytes, &signature, &keys).map_err(|e| match e {
        VerifyError::UnknownKey(kid) if pinned => {
            refused(format!("it is signed with key `{kid}`, not with a key given by --public-key or --key-id"))
        }
        other => refused(other.to_string()),
    })?;
    if manifest.extract_id != args.extract {
        return Err(refused(format!("it is the manifest of release {}", manifest.extract_id)));
    }
    if let Some(file) = manifest.files.iter().find(|f| f.path.split('/').next() == Some(PARTIAL_DIR)) {
        return Err(refused(format!("`{}` would mix with partial copies", file.path)));
    }
    let key_id = serde_json::from_slice::<SignatureDocument>(&signature).map(|d| d.key_id).unwrap_or_default();
    Ok((manifest, bytes, signature, key_id))
}

/// Writes a verified document under its name, whole or not at all.
async fn save(out: &Out, name: &str, bytes: &[u8]) -> Result<()> {
    let partial = out.partial.join(name);
    tokio::fs::write(&partial, bytes).await.with_context(|| format!("writing {}", partial.display()))?;
    let target = out.root.join(name);
    tokio::fs::rename(&partial, &target).await.with_context(|| format!("writing {}", target.display()))
}

/// What the directory holds of each file, in manifest order.
async fn inspect_all(out: &Out, manifest: &Manifest, parallel: usize) -> Result<Vec<State>> {
    futures::stream::iter(&manifest.files)
        .map(|entry| async move {
            download::inspect(out, entry).await.with_context(|| format!("reading what {} holds", entry.path))
        })
        .buffered(parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn dry_run(manifest: &Manifest, states: &[State]) {
    let (mut files, mut bytes, mut present) = (0_u64, 0_u64, 0_u64);
    for (entry, state) in manifest.files.iter().zip(states) {
        let action = match (state.local, state.partial) {
            (Local::Present, _) => {
                present += 1;
                continue;
            }
            (_, partial) if partial > 0 => "resume",
            (Local::Different, _) => "replace",
            _ => "fetch",
        };
        files += 1;
        bytes += entry.size - state.partial;
        println!("{action:<8} {:>12}  {}", entry.size, entry.path);
    }
    println!("would fetch {files} files, {bytes} bytes ({}); {present} already present", human(bytes));
}

/// How a run went.
#[derive(Debug, Default)]
struct Summary {
    fetched: u64,
    resumed: u64,
    replaced: u64,
    present: u64,
    received: u64,
    failed: Vec<(String, String)>,
    /// Why the registry stopped the run, if it did.
    refused: Option<String>,
    seconds: f64,
}

async fn fetch_all(registry: &Registry, out: &Out, manifest: &Manifest, states: &[State], parallel: usize) -> Summary {
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut todo: Vec<(&FileEntry, State)> = Vec::new();
    for (entry, state) in manifest.files.iter().zip(states) {
        if state.local == Local::Present {
            summary.present += 1;
        } else {
            todo.push((entry, *state));
        }
    }
    let remaining = todo.iter().map(|(entry, state)| entry.size - state.partial).sum();
    let progress = Progress::new(todo.len() as u64, remaining);
    let stopped = OnceLock::<String>::new();
    let (progress_ref, stopped_ref) = (&progress, &stopped);
    let results: Vec<_> = futures::stream::iter(todo)
        .map(|(entry, state)| async move {
            if stopped_ref.get().is_some() {
                return (entry, state, Err(Failure::File("not started: the run stopped".into())));
            }
            let result = download::fetch(registry, manifest.extract_id, out, entry, progress_ref).await;
            match &result {
                Err(Failure::Refused(why)) => {
                    if stopped_ref.set(why.clone()).is_ok() {
                        progress_ref.note(&format!("stopping: {why}"));
                    }
                }
                Err(Failure::File(why)) => progress_ref.note(&format!("failed: {}: {why}", entry.path)),
                Ok(_) => {}
            }
            progress_ref.file_done();
            (entry, state, result)
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    progress.finish();
    for (entry, state, result) in results {
        match result {
            Ok(fetched) => {
                summary.fetched += 1;
                summary.received += fetched.received;
                summary.resumed += u64::from(fetched.resumed);
                summary.replaced += u64::from(state.local == Local::Different);
            }
            Err(failure) => summary.failed.push((entry.path.clone(), failure.to_string())),
        }
    }
    summary.failed.sort();
    summary.refused = stopped.into_inner();
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

impl Summary {
    /// Prints the summary; the exit code of the run.
    fn report(&self, out: &Out) -> ExitCode {
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        // a rate to print
        let rate = (self.received as f64 / self.seconds.max(1e-3)) as u64;
        println!(
            "fetched {} files ({} received in {:.1} s, {}/s; {} resumed, {} replaced), {} already present, into {}",
            self.fetched,
            human(self.received),
            self.seconds,
            human(rate),
            self.resumed,
            self.replaced,
            self.present,
            out.root.display()
        );
        if self.failed.is_empty() {
            // Nothing left to resume.
            let _ = std::fs::remove_dir_all(&out.partial);
            return ExitCode::SUCCESS;
        }
        eprintln!("FAILED: {} of {} files were not fetched:", self.failed.len(), self.total());
        for (path, why) in self.failed.iter().take(LISTED_FAILURES) {
            eprintln!("  {path}: {why}");
        }
        if self.failed.len() > LISTED_FAILURES {
            eprintln!("  … and {} more", self.failed.len() - LISTED_FAILURES);
        }
        if let Some(why) = &self.refused {
            eprintln!("The run stopped: {why}.");
        }
        eprintln!(
            "Files with the manifest's digest are in place; the same command resumes the rest \
             (partial copies are kept in {}).",
            out.partial.display()
        );
        ExitCode::FAILURE
    }

    fn total(&self) -> u64 {
        self.fetched + self.present + self.failed.len() as u64
    }
}

/// Bytes for people: `12.3 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)] // a size to print
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human(0), "0 bytes");
        assert_eq!(human(1023), "1023 bytes");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
