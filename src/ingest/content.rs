//! A digest of an instance's content that does not depend on its transfer
//! syntax, so the same instance re-sent in another encoding is recognised as
//! the same (a PACS may send it as Explicit VR Little Endian once and Implicit
//! VR Little Endian, Big Endian or Deflated the next time).
//!
//! It is taken of the de-identified file, element by element in tag order:
//! each tag, then its value in one canonical form. Text loses its trailing
//! padding; numbers, tags and binary values are hashed as little-endian bytes
//! (so a value read from Big Endian hashes as the same value read from Little
//! Endian, and US read as SS hashes alike); the VR is left out, since an
//! implicit VR syntax takes it from the dictionary. Sequences are hashed item
//! by item. Data Set Trailing Padding (FFFC,FFFC) and group lengths carry no
//! meaning (PS3.5 §7.2, PS3.10 §7.2) and are left out.
//!
//! Native (uncompressed) pixel data hashes as its little-endian bytes, so it
//! compares decoded-equal across the uncompressed syntaxes. Encapsulated
//! (compressed) pixel data is never decoded here: it hashes as its fragments
//! together with the transfer syntax UID, so the same instance compressed
//! another way, or once compressed and once not, is a different content and
//! answers as a conflict. That is the conservative side: a lossy
//! compression is another image, and telling a lossless one from the original
//! would take a codec for every syntax accepted.

use aws_lc_rs::digest::{Context, SHA256};
use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};

const TRAILING_PADDING: Tag = Tag(0xFFFC, 0xFFFC);
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// The content digest of a de-identified Part-10 file given as `head` (the
/// file up to its Pixel Data, or all of it) and, when Pixel Data ends the file
/// and was kept apart, `pixel_data` (that element, header included). `None`
/// when the file cannot be read.
pub fn digest(head: &[u8], pixel_data: Option<&[u8]>) -> Option<Vec<u8>> {
    let file = OpenFileOptions::new().read_preamble(ReadPreamble::Always).from_reader(head).ok()?;
    let transfer_syntax = file.meta().transfer_syntax().trim_end_matches(['\0', ' ']).to_owned();
    let mut hash = Context::new(&SHA256);
    data_set(&mut hash, &file, &transfer_syntax);
    if let Some(raw) = pixel_data {
        raw_pixel_data(&mut hash, raw, &transfer_syntax)?;
    }
    Some(hash.finish().as_ref().to_vec())
}

/// [`digest`] of a stored object in one buffer.
pub fn digest_of_file(file: &[u8]) -> Option<Vec<u8>> {
    match crate::deid::guard::check_declared_lengths(file).ok().and_then(|layout| layout.pixel_data_at) {
        Some(at) => digest(&file[..at], Some(&file[at..])),
        None => digest(file, None),
    }
}

fn data_set(hash: &mut Context, object: &InMemDicomObject, transfer_syntax: &str) {
    for element in object {
        let tag = element.tag();
        if tag.element() == 0 || tag == TRAILING_PADDING {
            continue;
        }
        put_tag(hash, tag);
        match element.value() {
            Value::Primitive(value) => put_value(hash, &canonical(value, element.vr())),
            Value::Sequence(sequence) => {
                hash.update(b"S");
                hash.update(&u32::try_from(sequence.items().len()).unwrap_or(u32::MAX).to_le_bytes());
                for item in sequence.items() {
                    data_set(hash, item, transfer_syntax);
                    hash.update(b"E");
                }
            }
            Value::PixelSequence(pixels) => {
                let offsets: Vec<u8> = pixels.offset_table().iter().flat_map(|o| o.to_le_bytes()).collect();
                encapsulated(hash, transfer_syntax, &offsets, pixels.fragments().iter().map(Vec::as_slice));
            }
        }
    }
}

fn put_tag(hash: &mut Context, tag: Tag) {
    hash.update(&tag.group().to_le_bytes());
    hash.update(&tag.element().to_le_bytes());
}

fn put_value(hash: &mut Context, bytes: &[u8]) {
    hash.update(b"V");
    hash.update(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    hash.update(bytes);
}

fn encapsulated<'a>(
    hash: &mut Context,
    transfer_syntax: &str,
    offsets: &[u8],
    fragments: impl Iterator<Item = &'a [u8]>,
) {
    hash.update(b"P");
    put_value(hash, transfer_syntax.as_bytes());
    put_value(hash, offsets);
    for fragment in fragments {
        put_value(hash, fragment);
    }
}

/// A primitive value as canonical bytes.
fn canonical(value: &PrimitiveValue, vr: VR) -> Vec<u8> {
    fn le<const N: usize, T: Copy>(values: &[T], bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|v| bytes(*v)).collect()
    }
    let padding = |c: char| c == '\0' || c == ' ';
    match value {
        PrimitiveValue::Empty => Vec::new(),
        PrimitiveValue::Str(text) => text.trim_end_matches(padding).as_bytes().to_vec(),
        PrimitiveValue::Strs(texts) => texts.join("\\").trim_end_matches(padding).as_bytes().to_vec(),
        PrimitiveValue::Date(_) | PrimitiveValue::DateTime(_) | PrimitiveValue::Time(_) => {
            value.to_str().trim_end_matches(padding).as_bytes().to_vec()
        }
        PrimitiveValue::Tags(tags) => {
            tags.iter().flat_map(|t| [t.group().to_le_bytes(), t.element().to_le_bytes()]).flatten().collect()
        }
        // A kept private text read without its VR (implicit VR) is raw bytes, padding included.
        PrimitiveValue::U8(bytes) if vr == VR::UN => {
            let end = bytes.iter().rposition(|b| *b != 0 && *b != b' ').map_or(0, |p| p + 1);
            bytes[..end].to_vec()
        }
        PrimitiveValue::U8(bytes) => bytes.to_vec(),
        PrimitiveValue::I16(v) => le(v, i16::to_le_bytes),
        PrimitiveValue::U16(v) => le(v, u16::to_le_bytes),
        PrimitiveValue::I32(v) => le(v, i32::to_le_bytes),
        PrimitiveValue::U32(v) => le(v, u32::to_le_bytes),
        PrimitiveValue::I64(v) => le(v, i64::to_le_bytes),
        PrimitiveValue::U64(v) => le(v, u64::to_le_bytes),
        PrimitiveValue::F32(v) => le(v, f32::to_le_bytes),
        PrimitiveValue::F64(v) => le(v, f64::to_le_bytes),
    }
}

/// The Pixel Data element that ends a file, as its header and value bytes
/// were written in `transfer_syntax`.
fn raw_pixel_data(hash: &mut Context, raw: &[u8], transfer_syntax: &str) -> Option<()> {
    let big = transfer_syntax == EXPLICIT_VR_BE;
    let u16_at = |at: usize| -> Option<u16> {
        let bytes = [*raw.get(at)?, *raw.get(at + 1)?];
        Some(if big { u16::from_be_bytes(bytes) } else { u16::from_le_bytes(bytes) })
    };
    let u32_at = |at: usize, big: bool| -> Option<u32> {
        let bytes: [u8; 4] = raw.get(at..at + 4)?.try_into().ok()?;
        Some(if big { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) })
    };
    put_tag(hash, Tag(u16_at(0)?, u16_at(2)?));
    let explicit = transfer_syntax != IMPLICIT_VR_LE;
    let (vr, len, start) =
        if explicit { (raw.get(4..6)?, u32_at(8, big)?, 12) } else { (&b"OW"[..], u32_at(4, false)?, 8) };
    if len == UNDEFINED {
        // Items of an encapsulated sequence: the offset table, then the fragments (always little endian).
        let mut items = Vec::new();
        let mut at = start;
        while at + 8 <= raw.len() {
            let (group, element) =
                (u16::from_le_bytes([raw[at], raw[at + 1]]), u16::from_le_bytes([raw[at + 2], raw[at + 3]]));
            let len = u32_at(at + 4, false)? as usize;
            if (group, element) != (0xFFFE, 0xE000) {
                break; // the sequence delimiter
            }
            items.push(raw.get(at + 8..at + 8 + len)?);
            at += 8 + len;
        }
        let (offsets, fragments) = items.split_first().map_or((&[][..], &[][..]), |(o, f)| (*o, f));
        encapsulated(hash, transfer_syntax, offsets, fragments.iter().copied());
        return Some(());
    }
    let value = raw.get(start..start + len as usize)?;
    hash.update(b"V");
    hash.update(&len.to_le_bytes());
    if big && vr == b"OW" {
        // Words written big endian: hashed as the little-endian words they are.
        let mut swapped = [0_u8; 4096];
        for chunk in value.chunks(swapped.len()) {
            for (out, pair) in swapped.chunks_exact_mut(2).zip(chunk.chunks_exact(2)) {
                out[0] = pair[1];
                out[1] = pair[0];
            }
            hash.update(&swapped[..chunk.len()]);
        }
    } else {
        hash.update(value);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    use dicom_object::meta::FileMetaTableBuilder;

    use super::*;

    fn file(transfer_syntax: &str, extra: &[DataElement<InMemDicomObject>]) -> Vec<u8> {
        let mut obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.1")),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("SUBJ")),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(2_u16)),
            DataElement::new(tags::PIXEL_DATA, VR::OW, dicom_core::dicom_value!(U16, [1, 2, 3, 0xABCD])),
        ]);
        for element in extra {
            obj.put(element.clone());
        }
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
            .media_storage_sop_instance_uid("2.25.1")
            .transfer_syntax(transfer_syntax)
            .build()
            .unwrap();
        let mut out = Vec::new();
        obj.with_exact_meta(meta).write_all(&mut out).unwrap();
        out
    }

    #[test]
    fn the_same_data_set_digests_alike_in_every_uncompressed_syntax_and_kept_apart_or_not() {
        let explicit = file("1.2.840.10008.1.2.1", &[]);
        let expected = digest_of_file(&explicit).unwrap();
        for syntax in ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2"] {
            let other = file(syntax, &[]);
            assert_ne!(other, explicit);
            assert_eq!(digest_of_file(&other), Some(expected.clone()), "{syntax}");
            assert_eq!(digest(&other, None), Some(expected.clone()), "{syntax}, pixel data parsed");
        }
        let padded = file(
            "1.2.840.10008.1.2.1",
            &[DataElement::new(TRAILING_PADDING, VR::OB, PrimitiveValue::from(vec![0_u8; 8]))],
        );
        assert_eq!(digest_of_file(&padded), Some(expected), "trailing padding means nothing");
    }

    #[test]
    fn another_value_or_other_pixels_digest_otherwise() {
        let expected = digest_of_file(&file("1.2.840.10008.1.2.1", &[])).unwrap();
        let other_value =
            file("1.2.840.10008.1.2", &[DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(3_u16))]);
        assert_ne!(digest_of_file(&other_value).unwrap(), expected);
        let other_pixels = file(
            "1.2.840.10008.1.2",
            &[DataElement::new(tags::PIXEL_DATA, VR::OW, dicom_core::dicom_value!(U16, [1, 2, 3, 0xABCE]))],
        );
        assert_ne!(digest_of_file(&other_pixels).unwrap(), expected);
    }
}
