//! A pre-scan of element headers, before the parser sees the file.
//!
//! The DICOM parser reserves (and zero-fills) an element's declared length
//! before reading it, so a few kilobytes claiming a gigabyte-long value would
//! cost a gigabyte of memory. This walk reads only headers: every defined length
//! must fit in what is left of the file. It follows sequences and items (defined
//! or undefined length, implicit VR inside UN sequences) and skips the
//! fragments of encapsulated pixel data. Anything it cannot follow is left to
//! the parser, which rejects malformed files itself.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};

const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

struct Frame {
    /// Offset where a defined-length sequence or item ends.
    end: Option<usize>,
    implicit: bool,
    /// Inside encapsulated pixel data: items are opaque fragments.
    fragments: bool,
}

/// What the walk learned of the file's layout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the top-level Pixel Data element's header when that element
    /// is the last thing in the file: everything from here on can be carried
    /// over byte for byte, and the parser need only read what comes before.
    pub pixel_data_at: Option<usize>,
    /// Explicit VR little endian elements of VR UN holding a sequence encoded
    /// in implicit VR (PS3.5 6.2.2 / CP-246: undefined length, or a public
    /// sequence's items) that no defined-length sequence or item encloses, for
    /// [`rewrite_un_sequences`]: the offset of each, and where a defined-length
    /// value ends.
    pub un_sequences: Vec<(usize, Option<usize>)>,
}

/// `Err(tag)` names the first element whose declared length exceeds the file.
pub fn check_declared_lengths(bytes: &[u8]) -> Result<Layout, Tag> {
    let unknown = Layout::default();
    let Some(meta) = meta_group(bytes)? else { return Ok(unknown) };
    let (mut p, transfer_syntax) = (meta.end, meta.transfer_syntax);
    if transfer_syntax == DEFLATED {
        return Ok(unknown); // inflated before this walk (see `inflate_deflated`); else left to the parser
    }
    let big_endian = transfer_syntax == EXPLICIT_VR_BE;
    let mut stack = vec![Frame { end: None, implicit: transfer_syntax == IMPLICIT_VR_LE, fragments: false }];
    let total = bytes.len();
    // Top-level Pixel Data seen at this offset, and nothing else at top level since.
    let mut pixel_data_at = None;
    let mut un_sequences = Vec::new();
    loop {
        while stack.len() > 1 && stack.last().is_some_and(|f| f.end.is_some_and(|end| p >= end)) {
            stack.pop();
        }
        if p + 8 > total {
            let last = p == total && stack.len() == 1;
            return Ok(Layout { pixel_data_at: pixel_data_at.filter(|_| last), un_sequences });
        }
        let frame = stack.last().expect("the root frame stays");
        let (implicit, fragments) = (frame.implicit, frame.fragments);
        let group = u16_at(bytes, p, big_endian && !implicit);
        if group == 0xFFFE {
            let element = u16_at(bytes, p + 2, big_endian && !implicit);
            let len = u32_at(bytes, p + 4, big_endian && !implicit);
            let remaining = total - (p + 8);
            match element {
                0xE000 if fragments => {
                    if len == UNDEFINED || len as usize > remaining {
                        return Err(PIXEL_DATA);
                    }
                    p += 8 + len as usize;
                }
                0xE000 => {
                    let end = if len == UNDEFINED {
                        None
                    } else if len as usize > remaining {
                        return Err(Tag(0xFFFE, 0xE000));
                    } else {
                        Some(p + 8 + len as usize)
                    };
                    stack.push(Frame { end, implicit, fragments: false });
                    p += 8;
                }
                0xE00D | 0xE0DD => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    p += 8;
                }
                _ => return Ok(unknown),
            }
            continue;
        }
        if stack.len() == 1 {
            let is_pixel_data =
                u16_at(bytes, p + 2, big_endian && !implicit) == PIXEL_DATA.element() && group == PIXEL_DATA.group();
            pixel_data_at = is_pixel_data.then_some(p);
        }
        let (tag, vr, len, header) = if implicit {
            let tag = Tag(group, u16_at(bytes, p + 2, false));
            (tag, dictionary_vr(tag), u32_at(bytes, p + 4, false), 8)
        } else {
            match explicit_header(bytes, p, big_endian) {
                Some((tag, vr, len, header)) => (tag, vr, len, header),
                None => return Ok(unknown),
            }
        };
        let un = vr == Some(VR::UN);
        let rewritable = un && !implicit && !big_endian && stack.iter().all(|f| f.end.is_none() && !f.implicit);
        if len == UNDEFINED {
            if rewritable {
                un_sequences.push((p, None));
            }
            stack.push(Frame { end: None, implicit: implicit || un, fragments: tag == PIXEL_DATA });
            p += header;
            continue;
        }
        if len as usize > total.saturating_sub(p + header) {
            return Err(tag);
        }
        let value = p + header..p + header + len as usize;
        if rewritable
            && dictionary_vr(tag) == Some(VR::SQ)
            && bytes.get(value.start..value.start + 4) == Some(&[0xFE, 0xFF, 0x00, 0xE0][..])
        {
            un_sequences.push((p, Some(value.end)));
        }
        if vr == Some(VR::SQ) {
            stack.push(Frame { end: Some(p + header + len as usize), implicit, fragments: false });
            p += header;
        } else {
            p += header + len as usize;
        }
    }
}

/// The file with each element at `offsets` (see [`Layout::un_sequences`])
/// rewritten as the explicit VR sequence it is: VR SQ, items of undefined
/// length, and every element inside given its dictionary VR (UN where the
/// dictionary has none), as DCMTK reads them. `None` when the implicit VR
/// content cannot be followed.
pub fn rewrite_un_sequences(bytes: &[u8], offsets: &[(usize, Option<usize>)]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + 64 * offsets.len());
    let mut copied = 0;
    for &(at, end) in offsets {
        out.extend_from_slice(bytes.get(copied..at)?);
        out.extend_from_slice(bytes.get(at..at + 4)?);
        out.extend_from_slice(&[b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        copied = implicit_items(bytes, at + 12, end, &mut out, 0)?;
    }
    out.extend_from_slice(bytes.get(copied..)?);
    Some(out)
}

/// Deepest nesting followed inside one implicit VR sequence.
const MAX_DEPTH: usize = 64;

/// Items of an implicit VR sequence from `p` to `end` (or its delimiter),
/// written as explicit VR; returns the offset after the sequence.
fn implicit_items(bytes: &[u8], mut p: usize, end: Option<usize>, out: &mut Vec<u8>, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    loop {
        if end.is_some_and(|end| p >= end) {
            out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
            return Some(p);
        }
        let header = bytes.get(p..p + 8)?;
        let (group, element, len) = (u16_at(header, 0, false), u16_at(header, 2, false), u32_at(header, 4, false));
        match (group, element) {
            (0xFFFE, 0xE0DD) => {
                out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
                return Some(p + 8);
            }
            (0xFFFE, 0xE000) => {
                out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
                let item_end = (len != UNDEFINED).then(|| p + 8 + len as usize);
                p = implicit_elements(bytes, p + 8, item_end, out, depth)?;
                out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            }
            _ => return None,
        }
    }
}

/// Elements of one implicit VR item, written as explicit VR; returns the
/// offset after the item (and its delimiter, if it has one).
fn implicit_elements(bytes: &[u8], mut p: usize, end: Option<usize>, out: &mut Vec<u8>, depth: usize) -> Option<usize> {
    loop {
        if end.is_some_and(|end| p >= end) {
            return Some(p);
        }
        let header = bytes.get(p..p + 8)?;
        let tag = Tag(u16_at(header, 0, false), u16_at(header, 2, false));
        let len = u32_at(header, 4, false);
        if tag == Tag(0xFFFE, 0xE00D) {
            return Some(p + 8);
        }
        let vr = if tag.group() % 2 == 1 { None } else { dictionary_vr(tag) };
        if len == UNDEFINED || vr == Some(VR::SQ) {
            out.extend_from_slice(&header[..4]);
            out.extend_from_slice(&[b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
            let seq_end = (len != UNDEFINED).then(|| p + 8 + len as usize);
            p = implicit_items(bytes, p + 8, seq_end, out, depth + 1)?;
            continue;
        }
        let value = bytes.get(p + 8..p + 8 + len as usize)?;
        let short = |vr: VR| !long_length(vr);
        let vr = vr.filter(|vr| !short(*vr) || len <= 0xFFFF).unwrap_or(VR::UN);
        out.extend_from_slice(&header[..4]);
        out.extend_from_slice(vr.to_string().as_bytes());
        if short(vr) {
            out.extend_from_slice(&u16::try_from(len).ok()?.to_le_bytes());
        } else {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(value);
        p += 8 + len as usize;
    }
}

/// Why the file meta group cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaError {
    /// It has no Transfer Syntax UID (0002,0010).
    NoTransferSyntax,
}

/// The file with a File Meta Information Group Length (0002,0000) put in
/// front of its meta group when the sender left it out (DCMTK reads such
/// files); `None` when nothing needs doing or the group cannot be followed.
pub fn with_group_length(bytes: &[u8]) -> Result<Option<bytes::Bytes>, MetaError> {
    let Ok(Some(meta)) = meta_group(bytes) else { return Ok(None) };
    if meta.elements.is_empty() {
        return Ok(None);
    }
    if meta.transfer_syntax.is_empty() {
        return Err(MetaError::NoTransferSyntax);
    }
    if meta.elements.first().is_some_and(|(tag, _, _)| *tag == Tag(0x0002, 0x0000)) {
        return Ok(None);
    }
    Ok(Some(rebuild_meta(bytes, &meta, None, &bytes[meta.end..]).into()))
}

/// The file again: preamble, the meta group with its group length recomputed
/// (and its transfer syntax replaced, if given), then `data_set`.
fn rebuild_meta(bytes: &[u8], meta: &MetaGroup, transfer_syntax: Option<&[u8; 20]>, data_set: &[u8]) -> Vec<u8> {
    let mut group = Vec::new();
    for (tag, start, end) in &meta.elements {
        match (*tag, transfer_syntax) {
            (Tag(0x0002, 0x0000), _) => {}
            (Tag(0x0002, 0x0010), Some(uid)) => {
                group.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', 20, 0]);
                group.extend_from_slice(uid);
            }
            _ => group.extend_from_slice(&bytes[*start..*end]),
        }
    }
    let mut out = Vec::with_capacity(meta.start + 12 + group.len() + data_set.len());
    out.extend_from_slice(&bytes[..meta.start]);
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&u32::try_from(group.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&group);
    out.extend_from_slice(data_set);
    out
}

/// Why a deflated data set was not inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit.
    TooLarge,
    /// The deflate stream is broken.
    Corrupt,
}

/// For a file in Deflated Explicit VR Little Endian, the same file with its
/// data set inflated (reading at most `limit` bytes of it) and its file meta
/// group naming Explicit VR Little Endian; `None` for any other file.
pub fn inflate_deflated(bytes: &[u8], limit: usize) -> Result<Option<bytes::Bytes>, InflateError> {
    use std::io::Read;

    // A meta group the walk cannot follow is left to the parser to report.
    let Ok(Some(meta)) = meta_group(bytes) else { return Ok(None) };
    if meta.transfer_syntax != DEFLATED {
        return Ok(None);
    }
    let mut data_set = Vec::new();
    flate2::read::DeflateDecoder::new(&bytes[meta.end..])
        .take(limit as u64 + 1)
        .read_to_end(&mut data_set)
        .map_err(|_| InflateError::Corrupt)?;
    if data_set.len() > limit {
        return Err(InflateError::TooLarge);
    }
    // The meta group again, with the new transfer syntax and its group length recomputed.
    Ok(Some(rebuild_meta(bytes, &meta, Some(b"1.2.840.10008.1.2.1\0"), &data_set).into()))
}

/// The file meta group (always explicit VR little endian).
struct MetaGroup {
    /// Offset of its first element, after the preamble and `DICM`.
    start: usize,
    /// Offset of the data set that follows it.
    end: usize,
    /// Its elements: (tag, offset of the header, offset after the value).
    elements: Vec<(Tag, usize, usize)>,
    transfer_syntax: String,
}

/// Walks the file meta group: `Err(tag)` when an element declares a value
/// longer than the file, `None` when there is no group or it cannot be followed.
fn meta_group(bytes: &[u8]) -> Result<Option<MetaGroup>, Tag> {
    let Some(start) = dataset_start(bytes) else { return Ok(None) };
    let mut meta = MetaGroup { start, end: start, elements: Vec::new(), transfer_syntax: String::new() };
    let mut p = start;
    while p + 8 <= bytes.len() && u16_at(bytes, p, false) == 0x0002 {
        let Some((tag, _, len, header)) = explicit_header(bytes, p, false) else { return Ok(None) };
        if len == UNDEFINED {
            return Ok(None);
        }
        let value = p + header;
        if len as usize > bytes.len().saturating_sub(value) {
            return Err(tag);
        }
        let end = value + len as usize;
        if tag == Tag(0x0002, 0x0010) {
            String::from_utf8_lossy(&bytes[value..end])
                .trim_end_matches(['\0', ' '])
                .clone_into(&mut meta.transfer_syntax);
        }
        meta.elements.push((tag, p, end));
        p = end;
    }
    meta.end = p;
    Ok(Some(meta))
}

fn dataset_start(bytes: &[u8]) -> Option<usize> {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Some(132)
    } else if bytes.len() >= 4 && &bytes[..4] == b"DICM" {
        Some(4)
    } else {
        None
    }
}

/// (tag, VR, length, header size) of an explicit-VR element at `p`.
fn explicit_header(bytes: &[u8], p: usize, big_endian: bool) -> Option<(Tag, Option<VR>, u32, usize)> {
    let tag = Tag(u16_at(bytes, p, big_endian), u16_at(bytes, p + 2, big_endian));
    let code = [bytes[p + 4], bytes[p + 5]];
    // The parser reads an unknown VR code like UN (4-byte length), so the walk does too.
    let vr = VR::from_binary(code).or(Some(VR::UN));
    let long = vr.is_some_and(long_length);
    if long {
        if p + 12 > bytes.len() {
            return None;
        }
        Some((tag, vr, u32_at(bytes, p + 8, big_endian), 12))
    } else {
        Some((tag, vr, u32::from(u16_at(bytes, p + 6, big_endian)), 8))
    }
}

/// Whether an explicit VR header of `vr` has a 4-byte length (after two reserved bytes).
fn long_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
    )
}

fn dictionary_vr(tag: Tag) -> Option<VR> {
    match dicom_dictionary_std::StandardDataDictionary.by_tag(tag).map(DataDictionaryEntry::vr) {
        Some(VirtualVr::Exact(vr)) => Some(vr),
        _ => None,
    }
}

fn u16_at(bytes: &[u8], p: usize, big_endian: bool) -> u16 {
    let b = [bytes[p], bytes[p + 1]];
    if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }
}

fn u32_at(bytes: &[u8], p: usize, big_endian: bool) -> u32 {
    let b = [bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]];
    if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dataset: &[u8], ts: &str) -> Vec<u8> {
        let mut out = vec![0; 128];
        out.extend_from_slice(b"DICM");
        let mut ts_value = ts.as_bytes().to_vec();
        if ts_value.len() % 2 == 1 {
            ts_value.push(0);
        }
        out.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        out.extend_from_slice(&u16::try_from(ts_value.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&ts_value);
        out.extend_from_slice(dataset);
        out
    }

    #[test]
    fn a_value_longer_than_the_file_is_refused_before_parsing() {
        // (0008,0018) UI with a 2-byte length of 0xFFF0 in a file of a few dozen bytes.
        let explicit = file(&[0x08, 0x00, 0x18, 0x00, b'U', b'I', 0xF0, 0xFF, b'1', 0], "1.2.840.10008.1.2.1");
        assert_eq!(check_declared_lengths(&explicit), Err(Tag(0x0008, 0x0018)));
        // (7FE0,0010) OB claiming 1.2 GB.
        let bomb =
            file(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0x44, 0x33, 0x22, 0x49, 1, 2], "1.2.840.10008.1.2.1");
        assert_eq!(check_declared_lengths(&bomb), Err(PIXEL_DATA));
        // Implicit VR: (0010,0010) with a 4-byte length of 1 GB.
        let implicit = file(&[0x10, 0x00, 0x10, 0x00, 0, 0, 0, 0x40, b'A', b'B'], IMPLICIT_VR_LE);
        assert_eq!(check_declared_lengths(&implicit), Err(Tag(0x0010, 0x0010)));
    }

    #[test]
    fn sequences_items_and_fragments_are_followed() {
        let mut ds = Vec::new();
        // (0008,1140) SQ, undefined length, one undefined-length item holding a UI, then delimiters.
        ds.extend_from_slice(&[0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        ds.extend_from_slice(&[0x08, 0x00, 0x55, 0x11, b'U', b'I', 4, 0, b'1', b'.', b'2', 0]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        // Encapsulated pixel data: empty offset table, one 4-byte fragment, delimiter.
        ds.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 9, 9, 9, 9]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        // Pixel Data is the last element: its header starts after preamble, meta group and the sequence.
        let pixel_data_at = Some(132 + 8 + 22 + 48);
        assert_eq!(
            check_declared_lengths(&file(&ds, "1.2.840.10008.1.2.4.50")),
            Ok(Layout { pixel_data_at, un_sequences: Vec::new() })
        );
        // Anything after it at top level means the file must be parsed whole.
        let mut padded = ds.clone();
        padded.extend_from_slice(&[0xFC, 0xFF, 0xFC, 0xFF, b'O', b'B', 0, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(check_declared_lengths(&file(&padded, "1.2.840.10008.1.2.4.50")), Ok(Layout::default()));

        // The same with a fragment claiming more than the file holds.
        let mut bad = ds.clone();
        let at = bad.len() - 16;
        bad[at..at + 4].copy_from_slice(&[0, 0, 0, 0x10]);
        assert_eq!(check_declared_lengths(&file(&bad, "1.2.840.10008.1.2.4.50")), Err(PIXEL_DATA));
    }
}
