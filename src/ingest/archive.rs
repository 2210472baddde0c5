//! Reading zip archives one entry at a time, with limits against oversized
//! requests and zip bombs.
//!
//! The compressed archive is held whole (its directory is at its end): in
//! memory when small, else in an encrypted, nameless spool file
//! ([`super::spool`]) so its original bytes never reach a disk readably and a
//! large archive costs no memory; its entries are inflated one at a time
//! on a blocking thread, each only after the previous one has been
//! de-identified and its bytes dropped. A request therefore holds at most one
//! inflated entry, of at most `ingest.max_file_bytes`.
//!
//! Entries are named in reports by their position in the archive and their
//! CRC-32 (as `unzip -v` lists it), never by their file name: names such as
//! `Smith_John_1961.dcm` carry PHI, and no cleaner can tell a name from a
//! harmless word.

use std::io::{Cursor, Read};
use std::sync::mpsc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

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

/// The files of an archive, inflated one at a time as they are consumed.
pub type Entries = BoxStream<'static, Result<Received, ArchiveError>>;

/// The files inside a zip archive (directories and `__MACOSX` metadata skipped),
/// in archive order. An entry that cannot be read, is not DICOM or expands beyond
/// `ingest.max_file_bytes` becomes a per-file rejection without being kept.
///
/// An archive whose entry count or declared sizes break a limit is refused
/// here, before anything is inflated. One that lies about its sizes and expands
/// beyond `ingest.zip_max_expanded_bytes` anyway ends the stream with
/// [`ArchiveError::TooLarge`]; the batch it feeds then records nothing.
pub async fn entries(source: impl Into<Source>, limits: &IngestConfig) -> Result<Entries, ArchiveError> {
    let limits = limits.clone();
    let source = source.into();
    // Reading the directory of 50,000 entries is CPU work too.
    let (archive, limits) = match tokio::task::spawn_blocking(move || open(source, &limits).map(|a| (a, limits))).await
    {
        Ok(result) => result?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    // Inflation is CPU work that must not hold one of the runtime's few workers.
    tokio::task::spawn_blocking(move || inflate_each(archive, &limits, &sender));
    Ok(stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) })
        .boxed())
}

/// Where an archive's bytes are held.
pub enum Source {
    Memory(Bytes),
    Spool(super::spool::Spool),
}

impl From<Bytes> for Source {
    fn from(bytes: Bytes) -> Self {
        Self::Memory(bytes)
    }
}

impl From<super::spool::Spool> for Source {
    fn from(spool: super::spool::Spool) -> Self {
        Self::Spool(spool)
    }
}

/// An archive's bytes, read as a file.
enum Reader {
    Memory(Cursor<Bytes>),
    Spool(std::io::BufReader<super::spool::Spool>),
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Memory(r) => r.read(buf),
            Self::Spool(r) => r.read(buf),
        }
    }
}

impl std::io::Seek for Reader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            Self::Memory(r) => r.seek(to),
            Self::Spool(r) => r.seek(to),
        }
    }
}

type Archive = zip::ZipArchive<Reader>;

/// The archive, once its entry count and declared sizes are within the limits.
fn open(source: Source, limits: &IngestConfig) -> Result<Archive, ArchiveError> {
    let reader = match source {
        Source::Memory(bytes) => Reader::Memory(Cursor::new(bytes)),
        Source::Spool(spool) => Reader::Spool(std::io::BufReader::with_capacity(64 * 1024, spool)),
    };
    let mut archive = zip::ZipArchive::new(reader).map_err(|_| ArchiveError::Unreadable)?;
    if archive.len() > limits.zip_max_entries {
        return Err(ArchiveError::TooManyEntries(limits.zip_max_entries));
    }
    // Declared sizes first: an honest bomb is refused before any inflation.
    let mut declared: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|_| ArchiveError::Unreadable)?;
        declared = declared.saturating_add(entry.size());
    }
    if declared > limits.zip_max_expanded_bytes {
        return Err(ArchiveError::TooLarge(limits.zip_max_expanded_bytes));
    }
    Ok(archive)
}

/// An inflated entry that tells the inflating thread when it is gone.
struct Inflated {
    data: Vec<u8>,
    dropped: mpsc::SyncSender<()>,
}

impl AsRef<[u8]> for Inflated {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Inflated {
    fn drop(&mut self) {
        // The channel holds one signal, and the thread waits for each.
        let _ = self.dropped.try_send(());
    }
}

/// Sends the entries of `archive` one by one, each inflated only once the
/// previous file's bytes are dropped. Stops when the receiver is gone.
fn inflate_each(
    mut archive: Archive,
    limits: &IngestConfig,
    sender: &tokio::sync::mpsc::Sender<Result<Received, ArchiveError>>,
) {
    let (dropped, released) = mpsc::sync_channel(1);
    let mut expanded: u64 = 0;
    for i in 0..archive.len() {
        let item = match inflate(&mut archive, i, limits, &mut expanded, &dropped) {
            Some(Ok(item)) => item,
            Some(Err(error)) => {
                let _ = sender.blocking_send(Err(error));
                return;
            }
            None => continue,
        };
        let holds_memory = matches!(item, Received::File(_));
        if sender.blocking_send(Ok(item)).is_err() {
            return;
        }
        if holds_memory && released.recv().is_err() {
            return;
        }
    }
}

/// Entry `i` as a received file; `None` for directories and metadata.
fn inflate(
    archive: &mut Archive,
    i: usize,
    limits: &IngestConfig,
    expanded: &mut u64,
    dropped: &mpsc::SyncSender<()>,
) -> Option<Result<Received, ArchiveError>> {
    let unreadable = |size: usize, code: &'static str, message: String| Received::Unreadable { size, code, message };
    let Ok(mut entry) = archive.by_index(i) else {
        let message = format!("zip entry {} cannot be read (encrypted or unsupported compression)", i + 1);
        return Some(Ok(unreadable(0, "unreadable-entry", message)));
    };
    // The name decides what to skip; it is never reported.
    let name = entry.name().map(std::borrow::Cow::into_owned).unwrap_or_default();
    if entry.is_dir() || name.starts_with("__MACOSX/") || name.ends_with(".DS_Store") {
        return None;
    }
    let label = format!("zip entry {} (CRC-32 {:08x})", i + 1, entry.crc32());
    let cap = limits.max_file_bytes as u64 + 1;
    // Never trust the declared size: read at most one byte past the file limit,
    // and stop after the preamble when the entry cannot be DICOM.
    let mut data = Vec::with_capacity(usize::try_from(entry.size().min(cap)).unwrap_or(0));
    let mut read = (&mut entry).take(PREAMBLE).read_to_end(&mut data);
    let dicom = is_dicom_start(&data);
    if read.is_ok() && dicom {
        read = (&mut entry).take(cap - PREAMBLE).read_to_end(&mut data);
    }
    *expanded = expanded.saturating_add(data.len() as u64);
    if *expanded > limits.zip_max_expanded_bytes {
        return Some(Err(ArchiveError::TooLarge(limits.zip_max_expanded_bytes)));
    }
    let size = data.len();
    let received = if read.is_err() {
        unreadable(size, "unreadable-entry", format!("{label} is corrupt"))
    } else if !dicom {
        unreadable(size, "not-dicom", format!("{label} is not a DICOM Part-10 file: the `DICM` marker is missing"))
    } else if size as u64 >= cap {
        let message = format!("{label} expands beyond the file limit of {} bytes", limits.max_file_bytes);
        unreadable(size, "file-too-large", message)
    } else {
        Received::File(Bytes::from_owner(Inflated { data, dropped: dropped.clone() }))
    };
    Some(Ok(received))
}

/// Bytes up to and including the `DICM` marker after a Part-10 preamble.
const PREAMBLE: u64 = 132;

/// Whether a file starting with `head` (its first [`PREAMBLE`] bytes, or all of
/// a shorter file) can be DICOM: the marker after the preamble, or bare at the start.
fn is_dicom_start(head: &[u8]) -> bool {
    (head.len() >= 132 && &head[128..132] == b"DICM") || head.starts_with(b"DICM")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip(files: &[(&str, Vec<u8>)]) -> Bytes {
        let mut out = Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut out);
        for (name, bytes) in files {
            writer.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap();
        out.into_inner().into()
    }

    fn dicom(size: usize) -> Vec<u8> {
        let mut file = vec![0; size.max(132)];
        file[128..132].copy_from_slice(b"DICM");
        file
    }

    #[tokio::test]
    async fn entries_are_inflated_one_at_a_time_and_named_without_their_file_names() {
        let limits = IngestConfig { max_file_bytes: 4096, ..IngestConfig::default() };
        let archive = zip(&[
            ("Smith_John/IM1", dicom(200)),
            ("Smith_John/", Vec::new()),
            ("Smith_John/notes.txt", b"Smith John 1961-07-04".to_vec()),
            ("Smith_John/IM2", dicom(8000)),
            ("Smith_John/IM3", dicom(300)),
        ]);
        let mut entries = entries(archive, &limits).await.unwrap();
        let Some(Ok(Received::File(first))) = entries.next().await else { panic!("the first entry is a file") };
        assert_eq!(first.len(), 200);
        // The next entry is not inflated while the first is held.
        let pending = tokio::time::timeout(std::time::Duration::from_millis(200), entries.next()).await;
        assert!(pending.is_err(), "a second entry arrived while the first was held");
        drop(first);
        let mut rest = Vec::new();
        while let Some(item) = entries.next().await {
            rest.push(match item.unwrap() {
                Received::File(bytes) => (bytes.len(), String::new(), String::new()),
                Received::Unreadable { size, code, message } => (size, code.to_owned(), message),
            });
        }
        assert_eq!(rest.len(), 3, "the directory is skipped: {rest:?}");
        assert_eq!(rest[0].1, "not-dicom");
        assert!(rest[0].2.starts_with("zip entry 3 (CRC-32 "), "{}", rest[0].2);
        assert_eq!((rest[1].0, rest[1].1.as_str()), (4097, "file-too-large"));
        assert!(rest[1].2.contains("zip entry 4") && rest[1].2.contains("4096 bytes"), "{}", rest[1].2);
        assert_eq!(rest[2].0, 300);
        assert!(rest.iter().all(|(_, _, message)| !message.contains("Smith")));
    }

    #[tokio::test]
    async fn declared_sizes_beyond_the_expansion_limit_are_refused_before_inflating() {
        let files = [("a", dicom(600)), ("b", dicom(600))];
        let roomy = IngestConfig { zip_max_expanded_bytes: 2000, ..IngestConfig::default() };
        // Each file is dropped as it arrives, so the next one is inflated.
        let files_read: Vec<bool> =
            entries(zip(&files), &roomy).await.unwrap().map(|e| matches!(e, Ok(Received::File(_)))).collect().await;
        assert_eq!(files_read, [true, true]);
        let tight = IngestConfig { zip_max_expanded_bytes: 1000, ..IngestConfig::default() };
        let Err(error) = entries(zip(&files), &tight).await else { panic!("the archive was opened") };
        assert!(matches!(error, ArchiveError::TooLarge(1000)));
    }
}
