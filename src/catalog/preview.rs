//! A picture of a stored (de-identified) instance, for the steward who
//! decides on the quarantine: burned-in text is only seen in the pixels.
//!
//! Only native (uncompressed) pixel data is decoded: the first frame, after
//! the modality rescale, through the file's first window (or its own minimum
//! and maximum), downscaled by averaging to at most [`MAX_SIDE`] pixels a
//! side, and encoded as an 8-bit PNG. Nothing here is stored or logged.

use std::borrow::Cow;

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex as _;
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// The longest side of a preview, in pixels.
pub const MAX_SIDE: u32 = 768;

/// Transfer syntaxes whose pixel data is stored as it is (the deflated one is
/// inflated as the file is read).
const NATIVE: &[&str] = &["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"];

/// A rendered preview.
#[derive(Debug, Clone)]
pub struct Preview {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// The stored image's own size.
    pub source_width: u32,
    pub source_height: u32,
}

/// Why an instance has no preview, in words for the steward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoPreview(pub String);

/// Whether pixel data in `transfer_syntax` can be previewed; if not, why.
pub fn previewable(transfer_syntax: &str) -> Result<(), NoPreview> {
    let uid = transfer_syntax.trim_end_matches(['\0', ' ']);
    if NATIVE.contains(&uid) {
        return Ok(());
    }
    let name = TransferSyntaxRegistry.get(uid).map_or_else(|| uid.to_owned(), |ts| format!("{} ({uid})", ts.name()));
    Err(NoPreview(format!("no preview for {name}: only uncompressed pixel data is rendered here")))
}

fn no(message: impl Into<String>) -> NoPreview {
    NoPreview(message.into())
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag, default: Option<u32>) -> Result<u32, NoPreview> {
    match obj.element_opt(tag).ok().flatten() {
        Some(e) => e.to_int::<u32>().map_err(|_| no(format!("the attribute {tag} cannot be read as a number"))),
        None => default.ok_or_else(|| no(format!("the attribute {tag} is missing"))),
    }
}

fn first_float(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    obj.element_opt(tag).ok().flatten().and_then(|e| e.to_multi_float64().ok()).and_then(|v| v.first().copied())
}

/// The image's geometry and encoding.
struct Layout {
    rows: usize,
    columns: usize,
    samples: usize,
    bits_allocated: u32,
    bits_stored: u32,
    signed: bool,
    planar: bool,
    photometric: String,
}

/// Renders the first frame of the Part-10 file `stored` as a PNG.
pub fn render(stored: &[u8]) -> Result<Preview, NoPreview> {
    let preamble = stored.len() >= 132 && &stored[128..132] == b"DICM";
    let file = OpenFileOptions::new()
        .read_preamble(if preamble { ReadPreamble::Always } else { ReadPreamble::Never })
        .from_reader(stored)
        .map_err(|_| no("the stored file cannot be read as DICOM"))?;
    previewable(file.meta().transfer_syntax())?;
    let obj = file.into_inner();
    let layout = Layout {
        rows: usize::try_from(int(&obj, tags::ROWS, None)?).unwrap_or(0),
        columns: usize::try_from(int(&obj, tags::COLUMNS, None)?).unwrap_or(0),
        samples: usize::try_from(int(&obj, tags::SAMPLES_PER_PIXEL, Some(1))?).unwrap_or(0),
        bits_allocated: int(&obj, tags::BITS_ALLOCATED, None)?,
        bits_stored: int(&obj, tags::BITS_STORED, None)?,
        signed: int(&obj, tags::PIXEL_REPRESENTATION, Some(0))? == 1,
        planar: int(&obj, tags::PLANAR_CONFIGURATION, Some(0))? == 1,
        photometric: obj
            .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    };
    if layout.rows == 0 || layout.columns == 0 {
        return Err(no("the image has no rows or columns"));
    }
    let pixels = obj.element_opt(tags::PIXEL_DATA).ok().flatten().ok_or_else(|| no("the file has no pixel data"))?;
    let bytes: Cow<'_, [u8]> = match pixels.value() {
        Value::Primitive(dicom_core::PrimitiveValue::U16(words)) => {
            Cow::Owned(words.iter().flat_map(|w| w.to_le_bytes()).collect())
        }
        Value::Primitive(p) => p.to_bytes(),
        _ => return Err(no("the pixel data is encapsulated: no preview")),
    };
    let (gray, channels) = match (layout.photometric.as_str(), layout.samples) {
        ("MONOCHROME1" | "MONOCHROME2", 1) => (monochrome(&obj, &layout, &bytes)?, 1),
        ("RGB", 3) if layout.bits_allocated == 8 => (rgb(&layout, &bytes)?, 3),
        (other, samples) => {
            return Err(no(format!("no preview for {other} images with {samples} samples per pixel")));
        }
    };
    let (width, height, out) = downscale(&gray, layout.columns, layout.rows, channels);
    let png = encode(&out, width, height, channels).map_err(|e| no(format!("the preview cannot be encoded: {e}")))?;
    Ok(Preview {
        png,
        width,
        height,
        source_width: u32::try_from(layout.columns).unwrap_or(u32::MAX),
        source_height: u32::try_from(layout.rows).unwrap_or(u32::MAX),
    })
}

/// The stored values of the first frame of a one-sample image.
fn samples(layout: &Layout, bytes: &[u8]) -> Result<Vec<f64>, NoPreview> {
    let count = layout.rows * layout.columns;
    let stored = layout.bits_stored.clamp(1, layout.bits_allocated.max(1));
    let values: Vec<f64> = match layout.bits_allocated {
        8 => {
            let frame = bytes.get(..count).ok_or_else(|| no("the pixel data is shorter than one frame"))?;
            frame.iter().map(|&b| f64::from(b)).collect()
        }
        16 => {
            let frame = bytes.get(..count * 2).ok_or_else(|| no("the pixel data is shorter than one frame"))?;
            let mask = if stored >= 16 { u16::MAX } else { (1_u16 << stored) - 1 };
            frame
                .chunks_exact(2)
                .map(|c| {
                    let raw = u16::from_le_bytes([c[0], c[1]]) & mask;
                    if layout.signed && stored < 16 && raw & (1 << (stored - 1)) != 0 {
                        f64::from(i32::from(raw) - (1_i32 << stored))
                    } else if layout.signed && stored >= 16 {
                        #[allow(clippy::cast_possible_wrap)]
                        f64::from(raw as i16)
                    } else {
                        f64::from(raw)
                    }
                })
                .collect()
        }
        other => return Err(no(format!("no preview for {other}-bit pixels"))),
    };
    Ok(values)
}

/// A monochrome frame through its rescale and window, as 8-bit gray.
fn monochrome(obj: &InMemDicomObject, layout: &Layout, bytes: &[u8]) -> Result<Vec<u8>, NoPreview> {
    let slope = first_float(obj, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = first_float(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    let values: Vec<f64> = samples(layout, bytes)?.into_iter().map(|v| v * slope + intercept).collect();
    let window = match (first_float(obj, tags::WINDOW_CENTER), first_float(obj, tags::WINDOW_WIDTH)) {
        (Some(center), Some(width)) if width >= 1.0 => (center - width / 2.0, center + width / 2.0),
        _ => {
            let low = values.iter().copied().fold(f64::INFINITY, f64::min);
            let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (low, high)
        }
    };
    let invert = layout.photometric == "MONOCHROME1";
    Ok(values
        .into_iter()
        .map(|v| {
            let span = (window.1 - window.0).max(f64::EPSILON);
            let level = ((v - window.0) / span).clamp(0.0, 1.0);
            let level = if invert { 1.0 - level } else { level };
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let gray = (level * 255.0).round() as u8;
            gray
        })
        .collect())
}

/// An 8-bit RGB frame, interleaved.
fn rgb(layout: &Layout, bytes: &[u8]) -> Result<Vec<u8>, NoPreview> {
    let count = layout.rows * layout.columns;
    let frame = bytes.get(..count * 3).ok_or_else(|| no("the pixel data is shorter than one frame"))?;
    if !layout.planar {
        return Ok(frame.to_vec());
    }
    let (r, rest) = frame.split_at(count);
    let (g, b) = rest.split_at(count);
    Ok((0..count).flat_map(|i| [r[i], g[i], b[i]]).collect())
}

/// Averages blocks of pixels so that neither side exceeds [`MAX_SIDE`].
fn downscale(pixels: &[u8], width: usize, height: usize, channels: usize) -> (u32, u32, Vec<u8>) {
    let max = usize::try_from(MAX_SIDE).unwrap_or(usize::MAX);
    let factor = width.max(height).div_ceil(max).max(1);
    let (out_w, out_h) = (width.div_ceil(factor), height.div_ceil(factor));
    let mut out = Vec::with_capacity(out_w * out_h * channels);
    if factor == 1 {
        out.extend_from_slice(pixels);
    } else {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for c in 0..channels {
                    let (mut sum, mut n) = (0_usize, 0_usize);
                    for y in (oy * factor)..((oy + 1) * factor).min(height) {
                        for x in (ox * factor)..((ox + 1) * factor).min(width) {
                            sum += usize::from(pixels[(y * width + x) * channels + c]);
                            n += 1;
                        }
                    }
                    out.push(u8::try_from(sum / n.max(1)).unwrap_or(u8::MAX));
                }
            }
        }
    }
    (u32::try_from(out_w).unwrap_or(0), u32::try_from(out_h).unwrap_or(0), out)
}

fn encode(pixels: &[u8], width: u32, height: u32, channels: usize) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(if channels == 3 { png::ColorType::Rgb } else { png::ColorType::Grayscale });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::meta::FileMetaTableBuilder;

    use super::*;

    fn file(rows: u16, columns: u16, pixels: Vec<u16>, window: Option<(&str, &str)>, syntax: &str) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        let us = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
        obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
        obj.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")));
        obj.put(us(tags::ROWS, rows));
        obj.put(us(tags::COLUMNS, columns));
        obj.put(us(tags::BITS_ALLOCATED, 16));
        obj.put(us(tags::BITS_STORED, 12));
        obj.put(us(tags::HIGH_BIT, 11));
        obj.put(us(tags::PIXEL_REPRESENTATION, 0));
        if let Some((center, width)) = window {
            obj.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, PrimitiveValue::from(center)));
            obj.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, PrimitiveValue::from(width)));
        }
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())));
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
            .media_storage_sop_instance_uid("2.25.1")
            .transfer_syntax(syntax)
            .build()
            .unwrap();
        let mut out = Vec::new();
        obj.with_exact_meta(meta).write_all(&mut out).unwrap();
        out
    }

    fn decoded(png: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn a_window_maps_values_below_it_to_black_and_above_it_to_white() {
        let stored = file(1, 4, vec![0, 100, 150, 4000], Some(("150", "100")), "1.2.840.10008.1.2.1");
        let preview = render(&stored).unwrap();
        let (w, h, gray) = decoded(&preview.png);
        assert_eq!((w, h), (4, 1));
        assert_eq!(gray[0], 0);
        assert_eq!(gray[1], 0, "the window's lower edge is black");
        assert!((126..=129).contains(&gray[2]), "the window's centre is mid-gray: {}", gray[2]);
        assert_eq!(gray[3], 255);
    }

    #[test]
    fn without_a_window_the_frames_own_range_is_used_and_a_large_image_is_downscaled() {
        let (rows, columns) = (10_u16, 2000_u16);
        let pixels = (0..u32::from(rows) * u32::from(columns)).map(|i| u16::try_from(i % 2000).unwrap()).collect();
        let preview = render(&file(rows, columns, pixels, None, "1.2.840.10008.1.2")).unwrap();
        assert_eq!((preview.source_width, preview.source_height), (2000, 10));
        assert!(preview.width <= MAX_SIDE && preview.width >= MAX_SIDE / 2, "{}", preview.width);
        let (_, _, gray) = decoded(&preview.png);
        assert!(gray[0] < 5 && *gray.iter().max().unwrap() > 250, "the range spans black to white");
    }

    #[test]
    fn compressed_pixel_data_is_named_not_decoded() {
        let refused = previewable("1.2.840.10008.1.2.4.50").unwrap_err();
        assert!(refused.0.starts_with("no preview for JPEG Baseline"), "{refused}");
        assert!(previewable("1.2.840.10008.1.2.1").is_ok());
    }
}
