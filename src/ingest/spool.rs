//! A request body held on local disk instead of in memory, unreadable there:
//! encrypted (AES-256-CTR) under a key made for this one body, which lives
//! only in the process's memory, in a file that has no name (`O_TMPFILE`;
//! elsewhere it is unlinked as soon as it is made). A crash leaves at most
//! ciphertext nobody holds the key to, and the file system frees it.
//!
//! Zip archives need it: their directory is at their end, so an archive must
//! be held whole before its first entry can be read, and an archive may be
//! far larger than the memory a request should take. Its original bytes
//! (which carry patients' identifiers) therefore never reach a disk in a form
//! anyone can read, and a request holds about one block of it in memory.
//!
//! CTR turns the cipher into a keystream addressed by block, so any range
//! can be read back without the bytes before it, as the zip reader's seeks
//! need.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;

/// Bytes encrypted and written at a time.
const BLOCK: usize = 256 * 1024;
/// The cipher's block: counters count these.
const AES_BLOCK: u64 = 16;

/// A spool being written, front to back.
pub struct SpoolWriter {
    spool: Spool,
    pending: Vec<u8>,
}

/// A written spool, read as a file of plain bytes.
pub struct Spool {
    file: File,
    key: Box<EncryptingKey>,
    /// The counter of the first cipher block: random high half, zero low
    /// half, so the counter of any block of any possible file never wraps.
    base: u128,
    len: u64,
    pos: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("len", &self.len).finish_non_exhaustive()
    }
}

fn no_crypto() -> io::Error {
    io::Error::other("the spool's cipher failed")
}

impl SpoolWriter {
    /// A new, empty spool in `dir` (created if missing).
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = anonymous_file(dir)?;
        let mut secret = [0u8; 32];
        let mut high = [0u8; 8];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| no_crypto())?;
        aws_lc_rs::rand::fill(&mut high).map_err(|_| no_crypto())?;
        let key = UnboundCipherKey::new(&AES_256, &secret).and_then(EncryptingKey::ctr).map_err(|_| no_crypto())?;
        let base = u128::from(u64::from_be_bytes(high)) << 64;
        Ok(Self { spool: Spool { file, key: Box::new(key), base, len: 0, pos: 0 }, pending: Vec::with_capacity(BLOCK) })
    }

    /// Appends `data`.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(BLOCK - self.pending.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() == BLOCK {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.spool.len + self.pending.len() as u64
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn flush_block(&mut self) -> io::Result<()> {
        let at = self.spool.len; // a multiple of BLOCK, so of the cipher block
        self.spool.apply_keystream(at, &mut self.pending)?;
        self.spool.file.write_all_at(&self.pending, at)?;
        self.spool.len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// The spool, ready to be read from its start.
    pub fn finish(mut self) -> io::Result<Spool> {
        if !self.pending.is_empty() {
            self.flush_block()?;
        }
        Ok(self.spool)
    }
}

impl Spool {
    /// XORs `data`, which sits at byte `at` (a multiple of 16) of the plain
    /// bytes, with the keystream there: encrypts or decrypts alike.
    fn apply_keystream(&self, at: u64, data: &mut [u8]) -> io::Result<()> {
        debug_assert_eq!(at % AES_BLOCK, 0);
        let counter = self.base + u128::from(at / AES_BLOCK);
        let context = EncryptionContext::Iv128(FixedLength::from(counter.to_be_bytes()));
        self.key.less_safe_encrypt(data, context).map(|_| ()).map_err(|_| no_crypto())
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for Spool {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        // Read from the cipher block the position is in, decrypt, hand out the rest.
        let start = self.pos - self.pos % AES_BLOCK;
        let skip = usize::try_from(self.pos - start).expect("under 16");
        let want = (buf.len() + skip).min(BLOCK).min(usize::try_from(self.len - start).unwrap_or(usize::MAX));
        let mut block = vec![0u8; want];
        self.file.read_exact_at(&mut block, start)?;
        self.apply_keystream(start, &mut block)?;
        let n = want - skip;
        buf[..n].copy_from_slice(&block[skip..]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Spool {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start"))?;
        Ok(self.pos)
    }
}

/// A file in `dir` with no name: `O_TMPFILE` where the file system has it,
/// else a fresh name removed at once.
fn anonymous_file(dir: &Path) -> io::Result<File> {
    let tmpfile = i32::try_from(rustix::fs::OFlags::TMPFILE.bits()).unwrap_or(0);
    match OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(tmpfile).open(dir) {
        Ok(file) => return Ok(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
        Err(_) => {} // not supported here: fall back to a name
    }
    let path = dir.join(format!("spool-{}", uuid::Uuid::new_v4()));
    let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| u8::try_from((i * 7 + i / 251) % 256).unwrap()).collect()
    }

    #[test]
    fn what_is_written_reads_back_from_any_offset_and_is_not_on_disk_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let plain = pattern(3 * BLOCK + 12_345);
        let mut writer = SpoolWriter::create(dir.path()).unwrap();
        // Odd-sized writes, across block boundaries.
        for piece in plain.chunks(70_001) {
            writer.write(piece).unwrap();
        }
        assert_eq!(writer.len(), plain.len() as u64);
        let mut spool = writer.finish().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spool has no name in its directory");

        let mut on_disk = vec![0u8; plain.len()];
        spool.file.read_exact_at(&mut on_disk, 0).unwrap();
        assert_ne!(on_disk, plain);
        let marker = &plain[1000..1032];
        assert!(!on_disk.windows(marker.len()).any(|w| w == marker), "no plain run survives on disk");

        let mut all = Vec::new();
        spool.read_to_end(&mut all).unwrap();
        assert!(all == plain, "read front to back");
        for at in [0, 1, 15, 16, 17, BLOCK - 1, BLOCK, 2 * BLOCK + 5, plain.len() - 3] {
            spool.seek(SeekFrom::Start(at as u64)).unwrap();
            let mut got = vec![0u8; 40.min(plain.len() - at)];
            spool.read_exact(&mut got).unwrap();
            assert_eq!(got, plain[at..at + got.len()], "read at {at}");
        }
        spool.seek(SeekFrom::End(-2)).unwrap();
        let mut tail = Vec::new();
        spool.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, plain[plain.len() - 2..]);
    }

    #[test]
    fn two_spools_of_the_same_bytes_differ_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let plain = pattern(5000);
        let cipher = |plain: &[u8]| {
            let mut writer = SpoolWriter::create(dir.path()).unwrap();
            writer.write(plain).unwrap();
            let spool = writer.finish().unwrap();
            let mut on_disk = vec![0u8; plain.len()];
            spool.file.read_exact_at(&mut on_disk, 0).unwrap();
            on_disk
        };
        assert_ne!(cipher(&plain), cipher(&plain), "a key per spool");
    }
}
