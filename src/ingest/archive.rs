//! Reading uploads: single files, multipart batches and zip archives, with
//! limits against oversized requests and zip bombs. Everything stays in memory.

use std::io::{Cursor, Read};

use bytes::Bytes;

use super::Received;
use crate::config::IngestConfig;

/// Why an archive as a whole cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the zip archive is unreadable or truncated")]
    Unreadable,
    #[error("the zip archive has more than {0} entries")]
    TooManyEntries(usize),
    #[error("the zip archive expands beyond {0} bytes")]
    TooLarge(u64),
}

/// [`unzip`] on a blocking thread: inflating up to `ingest.zip_max_expanded_bytes`
/// is CPU work that must not hold one of the runtime's few workers.
pub async fn unzip_blocking(bytes: Bytes, limits: &IngestConfig) -> Result<Vec<Received>, ArchiveError> {
    let limits = limits.clone();
    match tokio::task::spawn_blocking(move || unzip(bytes, &limits)).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The files inside a zip archive (directories and `__MACOSX` metadata skipped).
/// An entry that is itself unreadable becomes a per-file rejection; an archive
/// that breaks a limit is refused whole, before anything is stored.
pub fn unzip(bytes: Bytes, limits: &IngestConfig) -> Result<Vec<Received>, ArchiveError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|_| ArchiveError::Unreadable)?;
    if archive.len() > limits.zip_max_entries {
        return Err(ArchiveError::TooManyEntries(limits.zip_max_entries));
    }
    // Declared sizes first: a bomb is refused before any inflation.
    let mut declared: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|_| ArchiveError::Unreadable)?;
        declared = declared.saturating_add(entry.size());
    }
    if declared > limits.zip_max_expanded_bytes {
        return Err(ArchiveError::TooLarge(limits.zip_max_expanded_bytes));
    }
    let mut files = Vec::new();
    let mut expanded: u64 = 0;
    for i in 0..archive.len() {
        let Ok(mut entry) = archive.by_index(i) else {
            files.push(Received::Unreadable {
                size: 0,
                code: "unreadable-entry",
                message: format!("zip entry {} cannot be read (encrypted or unsupported compression)", i + 1),
            });
            continue;
        };
        let name = entry.name().map(std::borrow::Cow::into_owned).unwrap_or_default();
        if entry.is_dir() || name.starts_with("__MACOSX/") || name.ends_with(".DS_Store") {
            continue;
        }
        let cap = limits.max_file_bytes as u64 + 1;
        let mut data = Vec::with_capacity(usize::try_from(entry.size().min(cap)).unwrap_or(0));
        // Never trust the declared size: read at most one byte past the file limit.
        let read = (&mut entry).take(cap).read_to_end(&mut data);
        expanded = expanded.saturating_add(data.len() as u64);
        if expanded > limits.zip_max_expanded_bytes {
            return Err(ArchiveError::TooLarge(limits.zip_max_expanded_bytes));
        }
        match read {
            Ok(_) => files.push(Received::File(Bytes::from(data))),
            Err(_) => files.push(Received::Unreadable {
                size: data.len(),
                code: "unreadable-entry",
                message: format!("zip entry {} is corrupt", i + 1),
            }),
        }
    }
    Ok(files)
}
