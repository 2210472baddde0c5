//! A release as one ZIP archive, streamed straight from the object store:
//! no temporary file, constant memory, and an exact `Content-Length` known
//! before the first byte.
//!
//! Entries are stored (release files are DICOM, Parquet and gzip: deflating
//! them again gains little and would make the length unknowable). Each
//! entry's CRC-32 is computed while its bytes go out and written in a data
//! descriptor after them (general purpose flag bit 3), so nothing is read
//! twice. Names are UTF-8 (flag bit 11). Entries of 4 GiB or more, entries
//! starting beyond 4 GiB, and archives of more than 65,534 entries use the
//! ZIP64 extensions (APPNOTE 6.3.10 §4.5, §4.3.14–15); smaller archives are
//! plain ZIP that any reader opens.
//!
//! A gate runs before every entry: the route passes the grant check, so a
//! grant suspended or revoked while a long archive streams stops it at the
//! next file (the client sees a truncated body, never a complete-looking one).

use std::future::Future;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Datelike, Timelike, Utc};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store::ObjectStore;
use object_store::path::Path;

/// One file of the archive.
#[derive(Debug, Clone)]
pub struct Member {
    /// The name in the archive, folders separated by `/`.
    pub name: String,
    /// Its size as recorded; the stream fails if the object differs.
    pub size: u64,
    /// Where its bytes are.
    pub key: Path,
}

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;
/// Data descriptor follows the data; names are UTF-8.
const FLAGS: u16 = (1 << 3) | (1 << 11);
/// Made by Unix (3), specification 4.5.
const MADE_BY: u16 = 0x0300 + 45;
/// `-rw-r--r--` regular file.
const UNIX_FILE: u32 = 0o100_644 << 16;
const ZIP64_EXTRA: u16 = 0x0001;

/// One entry, placed.
#[derive(Debug, Clone)]
struct Placed {
    member: Member,
    /// Offset of its local header.
    offset: u64,
    /// Whether its size needs ZIP64 (local extra field, 8-byte descriptor).
    large: bool,
}

impl Placed {
    fn local_len(&self) -> u64 {
        30 + self.member.name.len() as u64 + if self.large { 20 } else { 0 }
    }

    fn descriptor_len(&self) -> u64 {
        if self.large { 24 } else { 16 }
    }

    fn central_extra(&self, limit: u64) -> u64 {
        let fields = if self.large { 2 } else { 0 } + u64::from(self.offset >= limit);
        if fields == 0 { 0 } else { 4 + 8 * fields }
    }
}

/// A release laid out as a ZIP archive: every offset and the total length
/// are known before anything is read.
#[derive(Debug, Clone)]
pub struct Archive {
    entries: Vec<Placed>,
    central_offset: u64,
    central_len: u64,
    modified: (u16, u16),
    /// Sizes and offsets from this value on are written as ZIP64.
    limit: u64,
}

impl Archive {
    /// Lays out `members` in order, each stamped `modified`.
    pub fn new(members: Vec<Member>, modified: DateTime<Utc>) -> Self {
        Self::with_limit(members, modified, u64::from(u32::MAX))
    }

    /// As [`Archive::new`], with ZIP64 used from `limit` on rather than from
    /// 4 GiB, so that its encoding can be exercised on small archives.
    fn with_limit(members: Vec<Member>, modified: DateTime<Utc>, limit: u64) -> Self {
        let mut offset = 0;
        let mut central_len = 0;
        let entries: Vec<Placed> = members
            .into_iter()
            .map(|member| {
                let placed = Placed { large: member.size >= limit, member, offset };
                offset += placed.local_len() + placed.member.size + placed.descriptor_len();
                central_len += 46 + placed.member.name.len() as u64 + placed.central_extra(limit);
                placed
            })
            .collect();
        Self { entries, central_offset: offset, central_len, modified: dos_time(modified), limit }
    }

    fn zip64_end(&self) -> bool {
        self.entries.len() >= 0xFFFF || self.central_offset >= self.limit || self.central_len >= self.limit
    }

    /// The archive's exact size in bytes.
    pub fn len(&self) -> u64 {
        let end = 22 + if self.zip64_end() { 56 + 20 } else { 0 };
        self.central_offset + self.central_len + end
    }

    /// Whether the archive has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The archive's bytes. `gate` runs before each entry; an error from it,
    /// from the store, or an object whose size is not the recorded one ends
    /// the stream with an error. The producer runs ahead of the consumer by
    /// at most a few chunks.
    pub fn stream<G, F>(
        self,
        store: Arc<dyn ObjectStore>,
        mut gate: G,
    ) -> BoxStream<'static, object_store::Result<Bytes>>
    where
        G: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<(), String>> + Send,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<object_store::Result<Bytes>>(4);
        tokio::spawn(async move {
            let mut crcs = Vec::with_capacity(self.entries.len());
            for entry in &self.entries {
                if let Err(reason) = gate().await {
                    let _ = tx.send(Err(failure(reason))).await;
                    return;
                }
                if tx.send(Ok(self.local_header(entry))).await.is_err() {
                    return;
                }
                let crc = match copy(store.as_ref(), entry, &tx).await {
                    Ok(Some(crc)) => crc,
                    Ok(None) => return,
                    Err(error) => {
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                };
                crcs.push(crc);
                if tx.send(Ok(descriptor(entry, crc))).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Ok(self.central_directory(&crcs))).await;
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
    }

    fn local_header(&self, entry: &Placed) -> Bytes {
        let name = entry.member.name.as_bytes();
        let mut out = BytesMut::with_capacity(usize::try_from(entry.local_len()).unwrap_or(0));
        out.put_u32_le(LOCAL_HEADER);
        out.put_u16_le(if entry.large { 45 } else { 20 });
        out.put_u16_le(FLAGS);
        out.put_u16_le(0); // stored
        out.put_u16_le(self.modified.0);
        out.put_u16_le(self.modified.1);
        out.put_u32_le(0); // CRC-32: in the descriptor
        // Sizes in the descriptor; 0xFFFFFFFF says they are ZIP64 there.
        let size = if entry.large { u32::MAX } else { 0 };
        out.put_u32_le(size);
        out.put_u32_le(size);
        out.put_u16_le(u16::try_from(name.len()).unwrap_or(u16::MAX));
        out.put_u16_le(if entry.large { 20 } else { 0 });
        out.put_slice(name);
        if entry.large {
            out.put_u16_le(ZIP64_EXTRA);
            out.put_u16_le(16);
            out.put_u64_le(0);
            out.put_u64_le(0);
        }
        out.freeze()
    }

    fn central_directory(&self, crcs: &[u32]) -> Bytes {
        let mut out = BytesMut::with_capacity(usize::try_from(self.len() - self.central_offset).unwrap_or(0));
        let narrow = |value: u64| if value >= self.limit { u32::MAX } else { u32::try_from(value).unwrap_or(u32::MAX) };
        for (entry, crc) in self.entries.iter().zip(crcs) {
            let name = entry.member.name.as_bytes();
            let extra = entry.central_extra(self.limit);
            out.put_u32_le(CENTRAL_HEADER);
            out.put_u16_le(MADE_BY);
            out.put_u16_le(if extra > 0 { 45 } else { 20 });
            out.put_u16_le(FLAGS);
            out.put_u16_le(0);
            out.put_u16_le(self.modified.0);
            out.put_u16_le(self.modified.1);
            out.put_u32_le(*crc);
            let size = if entry.large { u32::MAX } else { narrow(entry.member.size) };
            out.put_u32_le(size);
            out.put_u32_le(size);
            out.put_u16_le(u16::try_from(name.len()).unwrap_or(u16::MAX));
            out.put_u16_le(u16::try_from(extra).unwrap_or(0));
            out.put_u16_le(0); // comment
            out.put_u16_le(0); // disk
            out.put_u16_le(0); // internal attributes
            out.put_u32_le(UNIX_FILE);
            out.put_u32_le(narrow(entry.offset));
            out.put_slice(name);
            if extra > 0 {
                out.put_u16_le(ZIP64_EXTRA);
                out.put_u16_le(u16::try_from(extra - 4).unwrap_or(0));
                if entry.large {
                    out.put_u64_le(entry.member.size);
                    out.put_u64_le(entry.member.size);
                }
                if entry.offset >= self.limit {
                    out.put_u64_le(entry.offset);
                }
            }
        }
        let count = self.entries.len() as u64;
        if self.zip64_end() {
            let end_offset = self.central_offset + self.central_len;
            out.put_u32_le(ZIP64_END);
            out.put_u64_le(44); // the size of the rest of this record
            out.put_u16_le(MADE_BY);
            out.put_u16_le(45);
            out.put_u32_le(0); // this disk
            out.put_u32_le(0); // the disk of the central directory
            out.put_u64_le(count);
            out.put_u64_le(count);
            out.put_u64_le(self.central_len);
            out.put_u64_le(self.central_offset);
            out.put_u32_le(ZIP64_LOCATOR);
            out.put_u32_le(0);
            out.put_u64_le(end_offset);
            out.put_u32_le(1); // disks
        }
        let entries = u16::try_from(count).ok().filter(|n| *n < 0xFFFF).unwrap_or(0xFFFF);
        out.put_u32_le(END);
        out.put_u16_le(0);
        out.put_u16_le(0);
        out.put_u16_le(entries);
        out.put_u16_le(entries);
        out.put_u32_le(narrow(self.central_len));
        out.put_u32_le(narrow(self.central_offset));
        out.put_u16_le(0); // comment
        out.freeze()
    }
}

fn descriptor(entry: &Placed, crc: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    out.put_u32_le(DESCRIPTOR);
    out.put_u32_le(crc);
    if entry.large {
        out.put_u64_le(entry.member.size);
        out.put_u64_le(entry.member.size);
    } else {
        let size = u32::try_from(entry.member.size).unwrap_or(u32::MAX);
        out.put_u32_le(size);
        out.put_u32_le(size);
    }
    out.freeze()
}

/// Sends the entry's bytes on, returning their CRC-32 (`None`: the consumer went away).
async fn copy(
    store: &dyn ObjectStore,
    entry: &Placed,
    tx: &tokio::sync::mpsc::Sender<object_store::Result<Bytes>>,
) -> object_store::Result<Option<u32>> {
    let mut crc = flate2::Crc::new();
    let mut sent = 0u64;
    if entry.member.size > 0 {
        let mut body = crate::storage::stream(store, &entry.member.key, None).await?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            sent += chunk.len() as u64;
            if sent > entry.member.size {
                break;
            }
            crc.update(&chunk);
            if tx.send(Ok(chunk)).await.is_err() {
                return Ok(None);
            }
        }
    }
    if sent != entry.member.size {
        return Err(failure(format!(
            "`{}` holds a different number of bytes than the release records",
            entry.member.name
        )));
    }
    Ok(Some(crc.sum()))
}

fn failure(reason: String) -> object_store::Error {
    object_store::Error::Generic { store: "archive", source: reason.into() }
}

/// MS-DOS time and date (two-second resolution; 1980 at the earliest).
fn dos_time(at: DateTime<Utc>) -> (u16, u16) {
    let year = u16::try_from(at.year().clamp(1980, 2107) - 1980).unwrap_or(0);
    let part = |value: u32| u16::try_from(value).unwrap_or(0);
    let time = (part(at.hour()) << 11) | (part(at.minute()) << 5) | (part(at.second()) / 2);
    let date = (year << 9) | (part(at.month()) << 5) | part(at.day());
    (time, date)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt as _, PutPayload};

    use super::*;

    async fn stored(files: &[(&str, Vec<u8>)]) -> (Arc<dyn ObjectStore>, Vec<Member>) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut members = Vec::new();
        for (name, bytes) in files {
            let key = Path::from(format!("objects/{name}"));
            store.put(&key, PutPayload::from(bytes.clone())).await.unwrap();
            members.push(Member { name: (*name).to_owned(), size: bytes.len() as u64, key });
        }
        (store, members)
    }

    async fn collect(mut stream: BoxStream<'static, object_store::Result<Bytes>>) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    fn open() -> impl FnMut() -> std::future::Ready<Result<(), String>> + Send + 'static {
        || std::future::ready(Ok(()))
    }

    /// What Python's `zipfile` reads of `archive`: names, sizes, and that every CRC checks.
    fn python_reads(archive: &[u8]) -> String {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(archive).unwrap();
        let script = "import sys, zipfile\n\
            z = zipfile.ZipFile(sys.argv[1])\n\
            bad = z.testzip()\n\
            assert bad is None, bad\n\
            print(len(z.infolist()))\n\
            for i in z.infolist()[:3] + z.infolist()[-2:]:\n    print(i.filename, i.file_size, z.read(i)[:4].hex())\n";
        let out = Command::new("python3").arg("-c").arg(script).arg(file.path()).output().unwrap();
        assert!(out.status.success(), "python's zipfile refused it: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn sample() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("release/manifest.json", br#"{"files": []}"#.to_vec()),
            ("release/dicom/S1/a.dcm", (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect()),
            ("release/empty.txt", Vec::new()),
            ("release/tables/süb.csv", b"subject_id\nP1\n".to_vec()),
        ]
    }

    #[tokio::test]
    async fn an_archive_has_exactly_its_announced_length_and_real_readers_check_every_crc() {
        let (store, members) = stored(&sample()).await;
        let archive = Archive::new(members, Utc::now());
        let announced = archive.len();
        let bytes = collect(archive.stream(store, open())).await.unwrap();
        assert_eq!(bytes.len() as u64, announced);
        let read = python_reads(&bytes);
        assert!(read.starts_with("4\n"), "{read}");
        assert!(read.contains("release/dicom/S1/a.dcm 200000 00070e15"), "{read}");
        assert!(read.contains("release/tables/süb.csv 14"), "{read}");
        // The same archive read by its own ZIP reader, as a second opinion.
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name("release/manifest.json").unwrap(), &mut content).unwrap();
        assert_eq!(content, br#"{"files": []}"#);
    }

    #[tokio::test]
    async fn zip64_sizes_offsets_and_end_records_are_read_back_by_real_readers() {
        // With the ZIP64 threshold at 1,000 bytes, the large file, every
        // entry after it and the central directory all need ZIP64.
        let (store, members) = stored(&sample()).await;
        let archive = Archive::with_limit(members, Utc::now(), 1_000);
        assert!(archive.zip64_end());
        let announced = archive.len();
        let bytes = collect(archive.stream(store, open())).await.unwrap();
        assert_eq!(bytes.len() as u64, announced);
        let read = python_reads(&bytes);
        assert!(read.contains("release/dicom/S1/a.dcm 200000 00070e15"), "{read}");
        assert!(read.contains("release/tables/süb.csv 14"), "{read}");
    }

    #[tokio::test]
    async fn more_than_65534_entries_take_the_zip64_end_record() {
        let files: Vec<(String, Vec<u8>)> =
            (0..65_600).map(|i| (format!("f/{i:05}"), vec![u8::try_from(i % 200).unwrap()])).collect();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut members = Vec::new();
        for (name, bytes) in &files {
            let key = Path::from(name.as_str());
            store.put(&key, PutPayload::from(bytes.clone())).await.unwrap();
            members.push(Member { name: name.clone(), size: 1, key });
        }
        let archive = Archive::new(members, Utc::now());
        let announced = archive.len();
        let bytes = collect(archive.stream(store, open())).await.unwrap();
        assert_eq!(bytes.len() as u64, announced);
        let read = python_reads(&bytes);
        assert!(read.starts_with("65600\n"), "{read}");
    }

    #[tokio::test]
    async fn a_closed_gate_stops_the_archive_before_the_next_file() {
        let (store, members) = stored(&sample()).await;
        let archive = Archive::new(members, Utc::now());
        let full = archive.len();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let gate = move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < 2 { Ok(()) } else { Err("the grant was revoked".to_owned()) })
        };
        let mut stream = archive.stream(store, gate);
        let mut got = 0;
        let error = loop {
            match stream.next().await {
                Some(Ok(chunk)) => got += chunk.len(),
                Some(Err(error)) => break error.to_string(),
                None => panic!("the archive completed past a closed gate"),
            }
        };
        assert!(error.contains("the grant was revoked"), "{error}");
        assert!((got as u64) < full);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the gate runs once per file until it closes");
    }

    #[tokio::test]
    async fn an_object_of_another_size_than_recorded_fails_the_stream() {
        let (store, mut members) = stored(&sample()).await;
        members[1].size += 1;
        let error = collect(Archive::new(members, Utc::now()).stream(store, open())).await.unwrap_err();
        assert!(error.contains("release/dicom/S1/a.dcm"), "{error}");
    }

    #[test]
    fn dos_times_keep_the_date_and_two_second_resolution() {
        let at = DateTime::parse_from_rfc3339("2026-12-06T08:30:45Z").unwrap().with_timezone(&Utc);
        let (time, date) = dos_time(at);
        assert_eq!(time, 8 * 2048 + 30 * 32 + 22);
        assert_eq!(date, 46 * 512 + 12 * 32 + 6);
    }
}
