//! Mask volumes read from NIfTI-1/2 (`.nii`, `.nii.gz`) and DICOM SEG.
//!
//! A mask is one byte per voxel, 0 or 1, x fastest, then y, then z: NIfTI's
//! storage order, and for DICOM SEG columns, then rows, then slices ordered
//! along the slice normal. Both masks of a pair must be on the same voxel
//! grid in that order: nothing is reoriented or resampled.
//!
//! - NIfTI: any nonzero stored value is foreground (NaN counts as background;
//!   `scl_slope`/`scl_inter` are not applied); datatypes uint8, int8, int16,
//!   uint16, int32, uint32, int64, float32, float64, either byte order; at
//!   most three dimensions of more than one voxel; spacing from `pixdim[1..=3]`
//!   (absolute values; an axis of one voxel may have none). The gzip stream
//!   is decoded straight into the voxel buffer, and the header's size is
//!   checked against the limit before anything is allocated.
//! - DICOM SEG (Segmentation Storage, native transfer syntaxes including
//!   deflate): BINARY (1 bit per pixel, frames packed back to back) and
//!   FRACTIONAL (8 bits; foreground where the value is at least half the
//!   Maximum Fractional Value). Frames are placed into slices by Image
//!   Position (Patient) projected on the slice normal (row × column
//!   direction), from the per-frame (or shared) functional groups; the slice
//!   step is Spacing Between Slices when given, else the smallest gap between
//!   frame positions. Slices between the first and last frame that have no
//!   frame are empty, so a SEG must cover the volume's first and last slice
//!   (as one written without omitting empty frames does) to match its
//!   truth's shape. One segment number is read, or the union of all.
//!
//! Errors carry a stable code and name the problem, never file contents.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};

/// A binary mask: one byte (0 or 1) per voxel, x fastest.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskVolume {
    /// Voxels along x, y, z.
    pub dims: [usize; 3],
    /// Voxel spacing in millimetres along x, y, z.
    pub spacing: [f64; 3],
    /// `dims[0] * dims[1] * dims[2]` bytes, each 0 or 1.
    pub voxels: Vec<u8>,
}

impl MaskVolume {
    /// The largest distance between two voxel centres of the volume, in millimetres.
    pub fn diagonal_mm(&self) -> f64 {
        let mut sum = 0.0;
        for axis in 0..3 {
            let side = super::metrics::f64_from(self.dims[axis] - 1) * self.spacing[axis];
            sum += side * side;
        }
        sum.sqrt()
    }

    /// Foreground voxels.
    pub fn foreground(&self) -> u64 {
        self.voxels.iter().map(|v| u64::from(*v)).sum()
    }
}

/// Where a mask's file is.
#[derive(Debug, Clone)]
pub enum MaskSource {
    /// The file's bytes in memory.
    Bytes(Bytes),
    /// A file on local disk, read as a stream.
    File(PathBuf),
}

/// Which segment of a DICOM SEG is the mask (NIfTI masks ignore it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Segment {
    /// The union of all segments.
    #[default]
    All,
    /// One segment by its Segment Number (0062,0004).
    Number(u16),
}

/// How masks are read.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// The most bytes a file may have, and the most its voxel data may expand to.
    pub byte_limit: u64,
    /// The DICOM SEG segment to read.
    pub segment: Segment,
}

impl Default for ReadOptions {
    fn default() -> Self {
        // A 512 × 512 × 1000 float32 volume.
        ReadOptions { byte_limit: 1 << 30, segment: Segment::All }
    }
}

/// Why a mask could not be read or compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MaskError {
    /// Stable kebab-case code: `mask-unreadable`, `mask-too-large`,
    /// `mask-unsupported`, `mask-segment-missing`, `mask-shape-mismatch`,
    /// `mask-spacing-mismatch`.
    pub code: &'static str,
    /// What is wrong, without file contents.
    pub message: String,
}

impl MaskError {
    fn unreadable(message: impl Into<String>) -> Self {
        MaskError { code: "mask-unreadable", message: message.into() }
    }
    fn unsupported(message: impl Into<String>) -> Self {
        MaskError { code: "mask-unsupported", message: message.into() }
    }
    fn too_large(limit: u64) -> Self {
        MaskError { code: "mask-too-large", message: format!("the mask is larger than the limit of {limit} bytes") }
    }
}

/// Reads a mask from NIfTI (`.nii`, `.nii.gz`) or DICOM SEG, told apart by content.
pub fn read_mask(source: &MaskSource, options: &ReadOptions) -> Result<MaskVolume, MaskError> {
    match source {
        MaskSource::Bytes(bytes) => {
            if bytes.len() as u64 > options.byte_limit {
                return Err(MaskError::too_large(options.byte_limit));
            }
            read_stream(&bytes[..], bytes, options)
        }
        MaskSource::File(path) => {
            let io = |_| MaskError::unreadable("the mask file cannot be read");
            let mut file = File::open(path).map_err(io)?;
            if file.metadata().map_err(io)?.len() > options.byte_limit {
                return Err(MaskError::too_large(options.byte_limit));
            }
            let mut head = Vec::with_capacity(132);
            (&mut file).take(132).read_to_end(&mut head).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            read_stream(BufReader::with_capacity(1 << 16, file), &head, options)
        }
    }
}

fn read_stream(input: impl Read, head: &[u8], options: &ReadOptions) -> Result<MaskVolume, MaskError> {
    if head.starts_with(&[0x1f, 0x8b]) {
        read_nifti(flate2::read::MultiGzDecoder::new(input), options.byte_limit)
    } else if head.get(128..132) == Some(b"DICM") {
        read_seg(input, options)
    } else {
        read_nifti(input, options.byte_limit)
    }
}

/// Header fields of either NIfTI version.
struct NiftiHeader {
    dims: Vec<i64>,
    datatype: i16,
    pixdim: [f64; 3],
    vox_offset: u64,
    header_len: u64,
    little: bool,
}

/// A field reader over a header in either byte order.
struct Fields<'a> {
    head: &'a [u8],
    little: bool,
}

impl Fields<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut b: [u8; N] = self.head[at..at + N].try_into().expect("inside the header");
        if !self.little {
            b.reverse();
        }
        b
    }
    fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.bytes(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.bytes(at))
    }
    fn f32(&self, at: usize) -> f64 {
        f64::from(f32::from_le_bytes(self.bytes(at)))
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.bytes(at))
    }
}

fn nifti_header(input: &mut impl Read) -> Result<NiftiHeader, MaskError> {
    let short = |_| MaskError::unreadable("the file ends inside its NIfTI header");
    let mut head = [0_u8; 540];
    input.read_exact(&mut head[..348]).map_err(short)?;
    let size = [head[0], head[1], head[2], head[3]];
    let (version, little) = match (i32::from_le_bytes(size), i32::from_be_bytes(size)) {
        (348, _) => (1, true),
        (_, 348) => (1, false),
        (540, _) => (2, true),
        (_, 540) => (2, false),
        _ => return Err(MaskError::unreadable("not a NIfTI-1, NIfTI-2 or DICOM file")),
    };
    if version == 2 {
        input.read_exact(&mut head[348..]).map_err(short)?;
    }
    let f = Fields { head: &head, little };
    let single_file = if version == 1 { &head[344..348] == b"n+1\0" } else { &head[4..8] == b"n+2\0" };
    if !single_file {
        return Err(MaskError::unsupported("not a single-file NIfTI (.nii): .hdr/.img pairs are not accepted"));
    }
    let header = if version == 1 {
        let offset = f.f32(108);
        if !(offset.is_finite() && offset >= 352.0 && offset.fract() == 0.0 && offset < 1e9) {
            return Err(MaskError::unreadable("the NIfTI voxel offset is invalid"));
        }
        NiftiHeader {
            dims: (0..8).map(|i| i64::from(f.i16(40 + 2 * i))).collect(),
            datatype: f.i16(70),
            pixdim: [f.f32(80), f.f32(84), f.f32(88)],
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            vox_offset: offset as u64,
            header_len: 348,
            little,
        }
    } else {
        NiftiHeader {
            dims: (0..8).map(|i| f.i64(16 + 8 * i)).collect(),
            datatype: f.i16(12),
            pixdim: [f.f64(112), f.f64(120), f.f64(128)],
            vox_offset: u64::try_from(f.i64(168))
                .ok()
                .filter(|o| *o >= 544)
                .ok_or_else(|| MaskError::unreadable("the NIfTI voxel offset is invalid"))?,
            header_len: 540,
            little,
        }
    };
    Ok(header)
}

/// Bytes per voxel and whether the type is floating point, by NIfTI datatype code.
fn nifti_type(code: i16) -> Option<(usize, bool)> {
    Some(match code {
        2 | 256 => (1, false),     // uint8, int8
        4 | 512 => (2, false),     // int16, uint16
        8 | 768 => (4, false),     // int32, uint32
        1024 | 1280 => (8, false), // int64, uint64
        16 => (4, true),           // float32
        64 => (8, true),           // float64
        _ => return None,
    })
}

fn grid(dims: &[i64], pixdim: [f64; 3]) -> Result<([usize; 3], [f64; 3]), MaskError> {
    let rank = usize::try_from(dims[0]).ok().filter(|r| (1..=7).contains(r));
    let rank = rank.ok_or_else(|| MaskError::unreadable("the NIfTI dim[0] is not 1 to 7"))?;
    if dims[1..=rank].iter().any(|d| *d < 1) {
        return Err(MaskError::unreadable("a NIfTI dimension is not positive"));
    }
    if dims.get(4..=rank).is_some_and(|extra| extra.iter().any(|d| *d > 1)) {
        return Err(MaskError::unsupported("the mask has more than three dimensions"));
    }
    let mut size = [1_usize; 3];
    let mut spacing = [1.0; 3];
    for axis in 0..3.min(rank) {
        size[axis] = usize::try_from(dims[axis + 1]).map_err(|_| MaskError::unreadable("a dimension is too large"))?;
        let step = pixdim[axis].abs();
        if step.is_finite() && step > 0.0 {
            spacing[axis] = step;
        } else if size[axis] > 1 {
            return Err(MaskError::unreadable(format!("the voxel spacing along axis {} is not positive", axis + 1)));
        }
    }
    Ok((size, spacing))
}

fn voxel_count(dims: [usize; 3], limit: u64, bytes_per_voxel: usize) -> Result<usize, MaskError> {
    let n = dims[0].checked_mul(dims[1]).and_then(|n| n.checked_mul(dims[2]));
    let bytes = n.and_then(|n| n.checked_mul(bytes_per_voxel)).and_then(|b| u64::try_from(b).ok());
    match (n, bytes) {
        (Some(n), Some(bytes)) if bytes <= limit => Ok(n),
        _ => Err(MaskError::too_large(limit)),
    }
}

/// Reads a NIfTI stream (already gunzipped if it was compressed).
fn read_nifti(mut input: impl Read, limit: u64) -> Result<MaskVolume, MaskError> {
    let header = nifti_header(&mut input)?;
    let (width, float) = nifti_type(header.datatype).ok_or_else(|| {
        MaskError::unsupported(format!("NIfTI datatype {} is not an integer or float type", header.datatype))
    })?;
    let (dims, spacing) = grid(&header.dims, header.pixdim)?;
    let n = voxel_count(dims, limit, width)?;
    let skip = header.vox_offset - header.header_len;
    let skipped = std::io::copy(&mut (&mut input).take(skip), &mut std::io::sink())
        .map_err(|_| MaskError::unreadable("the mask's compressed stream is corrupt"))?;
    if skipped < skip {
        return Err(MaskError::unreadable("the file ends before its image data"));
    }
    let short = |e: std::io::Error| {
        MaskError::unreadable(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the file ends before its image data is complete"
        } else {
            "the mask's compressed stream is corrupt"
        })
    };
    let mut voxels = vec![0_u8; n];
    if width == 1 {
        // Bytes land in the mask buffer directly and become 0/1 in place.
        input.read_exact(&mut voxels).map_err(short)?;
        for v in &mut voxels {
            *v = u8::from(*v != 0);
        }
    } else {
        let mut chunk = vec![0_u8; width << 13];
        for out in voxels.chunks_mut(1 << 13) {
            let raw = &mut chunk[..out.len() * width];
            input.read_exact(raw).map_err(short)?;
            for (v, element) in out.iter_mut().zip(raw.chunks_exact(width)) {
                *v = u8::from(foreground(element, float, header.little));
            }
        }
    }
    Ok(MaskVolume { dims, spacing, voxels })
}

/// Whether one stored element is foreground: nonzero, and not NaN.
fn foreground(element: &[u8], float: bool, little: bool) -> bool {
    if !float {
        return element.iter().any(|b| *b != 0);
    }
    let value = if let Ok(b) = <[u8; 4]>::try_from(element) {
        f64::from(if little { f32::from_le_bytes(b) } else { f32::from_be_bytes(b) })
    } else {
        let b: [u8; 8] = element.try_into().expect("8 bytes");
        if little { f64::from_le_bytes(b) } else { f64::from_be_bytes(b) }
    };
    !(value == 0.0 || value.is_nan())
}

/// An attribute of a data set, or of the first item of a functional-group sequence.
fn attribute(
    item: Option<&InMemDicomObject>,
    sequence: dicom_core::Tag,
    tag: dicom_core::Tag,
) -> Option<&dicom_object::mem::InMemElement> {
    item?.get(sequence)?.items()?.first()?.get(tag)
}

fn floats(element: Option<&dicom_object::mem::InMemElement>) -> Option<Vec<f64>> {
    element?.to_multi_float64().ok()
}

/// Where a SEG's frames lie: the slice normal and the spacings.
struct SegGeometry {
    normal: [f64; 3],
    pixel_spacing: Vec<f64>,
    between: Option<f64>,
    thickness: Option<f64>,
}

fn seg_geometry(shared: Option<&InMemDicomObject>, per_frame: &[InMemDicomObject]) -> Result<SegGeometry, MaskError> {
    // A functional group is shared or given per frame; the first frame's stands for all.
    let group =
        |sequence, tag| attribute(shared, sequence, tag).or_else(|| attribute(per_frame.first(), sequence, tag));
    let orientation = floats(group(tags::PLANE_ORIENTATION_SEQUENCE, tags::IMAGE_ORIENTATION_PATIENT))
        .filter(|o| o.len() == 6)
        .ok_or_else(|| MaskError::unreadable("the SEG has no Image Orientation (Patient)"))?;
    let normal = [
        orientation[1] * orientation[5] - orientation[2] * orientation[4],
        orientation[2] * orientation[3] - orientation[0] * orientation[5],
        orientation[0] * orientation[4] - orientation[1] * orientation[3],
    ];
    let pixel_spacing = floats(group(tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING))
        .filter(|s| s.len() == 2 && s.iter().all(|v| v.is_finite() && *v > 0.0))
        .ok_or_else(|| MaskError::unreadable("the SEG has no valid Pixel Spacing"))?;
    let between = floats(group(tags::PIXEL_MEASURES_SEQUENCE, tags::SPACING_BETWEEN_SLICES))
        .and_then(|v| v.first().copied())
        .filter(|v| v.is_finite() && *v > 0.0);
    let thickness = floats(group(tags::PIXEL_MEASURES_SEQUENCE, tags::SLICE_THICKNESS))
        .and_then(|v| v.first().copied())
        .filter(|v| v.is_finite() && *v > 0.0);
    Ok(SegGeometry { normal, pixel_spacing, between, thickness })
}

/// Slice indices of placed frames `(frame, position along the normal)`, and the slice step.
fn slice_grid(
    placed: &[(usize, f64)],
    between: Option<f64>,
    thickness: Option<f64>,
) -> Result<(Vec<(usize, usize)>, f64), MaskError> {
    let mut positions: Vec<f64> = placed.iter().map(|(_, d)| *d).collect();
    positions.sort_by(f64::total_cmp);
    positions.dedup_by(|a, b| (*a - *b).abs() < 1e-4);
    let first = positions[0];
    let step = between
        .or_else(|| positions.windows(2).map(|w| w[1] - w[0]).min_by(f64::total_cmp))
        .or(thickness)
        .unwrap_or(1.0);
    let mut slices = Vec::with_capacity(placed.len());
    for (frame, d) in placed {
        let at = (d - first) / step;
        if (at - at.round()).abs() > 0.01 {
            return Err(MaskError::unreadable("the SEG frames are not on a regular slice grid"));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        slices.push((*frame, at.round() as usize));
    }
    Ok((slices, step))
}

/// Reads a DICOM SEG stream from its preamble.
fn read_seg(input: impl Read, options: &ReadOptions) -> Result<MaskVolume, MaskError> {
    let file = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(input)
        .map_err(|_| MaskError::unreadable("the file cannot be read as DICOM"))?;
    let sop_class = file.meta().media_storage_sop_class_uid().trim_end_matches(['\0', ' ']).to_owned();
    if sop_class != uids::SEGMENTATION_STORAGE {
        return Err(MaskError::unsupported("the DICOM file is not a Segmentation (SEG) instance"));
    }
    let ds = file.into_inner();
    let int = |tag| ds.get(tag).and_then(|e| e.to_int::<u32>().ok());
    let kind = ds.get(tags::SEGMENTATION_TYPE).and_then(|e| e.to_str().ok()).map(|s| s.trim().to_owned());
    let (rows, columns) = match (int(tags::ROWS), int(tags::COLUMNS)) {
        (Some(r), Some(c)) if r > 0 && c > 0 => (r as usize, c as usize),
        _ => return Err(MaskError::unreadable("the SEG has no Rows or Columns")),
    };
    let frames = int(tags::NUMBER_OF_FRAMES).unwrap_or(1) as usize;
    let bits = int(tags::BITS_ALLOCATED).unwrap_or(0);
    let threshold = match (kind.as_deref(), bits) {
        (Some("BINARY"), 1) => None,
        (Some("FRACTIONAL"), 8) => {
            let max = int(tags::MAXIMUM_FRACTIONAL_VALUE).filter(|m| (1..=255).contains(m));
            Some(max.ok_or_else(|| MaskError::unreadable("the FRACTIONAL SEG has no valid Maximum Fractional Value"))?)
        }
        _ => {
            return Err(MaskError::unsupported(
                "only BINARY (1 bit) and FRACTIONAL (8 bits) segmentations are accepted",
            ));
        }
    };
    let pixel_data = ds.get(tags::PIXEL_DATA).ok_or_else(|| MaskError::unreadable("the SEG has no Pixel Data"))?;
    let pixels: Cow<[u8]> = match pixel_data.value() {
        dicom_core::value::Value::Primitive(p) => p.to_bytes(),
        _ => return Err(MaskError::unsupported("compressed (encapsulated) SEG pixel data is not accepted")),
    };
    let frame_pixels = rows * columns;
    let needed = if threshold.is_some() { frames * frame_pixels } else { (frames * frame_pixels).div_ceil(8) };
    if pixels.len() < needed {
        return Err(MaskError::unreadable("the SEG pixel data is shorter than its frames"));
    }

    let shared = ds.get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|e| e.items()).and_then(|i| i.first());
    let per_frame = ds.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|e| e.items()).unwrap_or(&[]);
    if per_frame.len() != frames {
        return Err(MaskError::unreadable("the SEG has not one per-frame functional group per frame"));
    }
    let SegGeometry { normal, pixel_spacing, between, thickness } = seg_geometry(shared, per_frame)?;
    let mut placed = Vec::with_capacity(frames); // (frame, position along the normal)
    for (frame, item) in per_frame.iter().enumerate() {
        // A SEG of one segment may name it once, in the shared groups.
        let segment = attribute(Some(item), tags::SEGMENT_IDENTIFICATION_SEQUENCE, tags::REFERENCED_SEGMENT_NUMBER)
            .or_else(|| attribute(shared, tags::SEGMENT_IDENTIFICATION_SEQUENCE, tags::REFERENCED_SEGMENT_NUMBER))
            .and_then(|e| e.to_int::<u16>().ok())
            .ok_or_else(|| MaskError::unreadable(format!("SEG frame {} names no segment", frame + 1)))?;
        if matches!(options.segment, Segment::Number(n) if n != segment) {
            continue;
        }
        let position = floats(attribute(Some(item), tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT))
            .filter(|p| p.len() == 3)
            .ok_or_else(|| MaskError::unreadable(format!("SEG frame {} has no Image Position (Patient)", frame + 1)))?;
        placed.push((frame, position[0] * normal[0] + position[1] * normal[1] + position[2] * normal[2]));
    }
    if placed.is_empty() {
        return Err(MaskError { code: "mask-segment-missing", message: "the SEG has no frame of the segment".into() });
    }
    let (slices, step) = slice_grid(&placed, between, thickness)?;
    let depth = slices.iter().map(|(_, z)| z + 1).max().expect("frames placed");
    let dims = [columns, rows, depth];
    let n = voxel_count(dims, options.byte_limit, 1)?;
    let mut voxels = vec![0_u8; n];
    for (frame, z) in slices {
        let out = &mut voxels[z * frame_pixels..(z + 1) * frame_pixels];
        let start = frame * frame_pixels;
        match threshold {
            None => {
                for (j, v) in out.iter_mut().enumerate() {
                    let bit = start + j;
                    *v |= (pixels[bit / 8] >> (bit % 8)) & 1;
                }
            }
            Some(max) => {
                for (v, p) in out.iter_mut().zip(&pixels[start..start + frame_pixels]) {
                    *v |= u8::from(2 * u32::from(*p) >= max);
                }
            }
        }
    }
    // Pixel Spacing is row spacing (along y), then column spacing (along x).
    Ok(MaskVolume { dims, spacing: [pixel_spacing[1], pixel_spacing[0], step], voxels })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scoring");

    pub(crate) fn fixture(name: &str) -> MaskSource {
        MaskSource::File(format!("{FIXTURES}/{name}").into())
    }

    fn read(name: &str, segment: Segment) -> MaskVolume {
        read_mask(&fixture(name), &ReadOptions { segment, ..ReadOptions::default() })
            .unwrap_or_else(|e| panic!("{name} ({segment:?}): {e}"))
    }

    #[test]
    #[allow(clippy::float_cmp)] // the stored doubles, exactly
    fn every_nifti_datatype_reads_to_the_same_kind_of_mask() {
        for i in 0..7 {
            let mask = read(&format!("mask_{i}_pred.nii.gz"), Segment::All);
            assert_eq!((mask.dims, mask.spacing), ([32, 32, 8], [0.800_000_011_920_929, 0.699_999_988_079_071, 2.5]));
            assert!(mask.voxels.iter().all(|v| *v <= 1) && mask.foreground() > 0, "mask {i}");
        }
        let nifti2 = read("mask_edge_truth.nii", Segment::All);
        assert_eq!(nifti2.spacing, [0.8, 0.7, 2.5], "NIfTI-2 keeps double-precision spacing");
    }

    #[test]
    fn a_dicom_seg_reads_to_the_same_volume_as_the_equivalent_nifti() {
        for (segment, nifti) in [
            (Segment::Number(1), "seg_segment1.nii.gz"),
            (Segment::Number(2), "seg_segment2.nii.gz"),
            (Segment::All, "seg_union.nii.gz"),
        ] {
            let seg = read("seg_binary.dcm", segment);
            let expected = read(nifti, Segment::All);
            assert_eq!(seg.dims, expected.dims, "{segment:?}");
            assert!(seg.voxels == expected.voxels, "{segment:?}: the SEG's voxels differ from {nifti}");
            for axis in 0..3 {
                assert!((seg.spacing[axis] - expected.spacing[axis]).abs() < 1e-6, "{segment:?} spacing");
            }
        }
        let fractional = read("seg_fractional.dcm", Segment::All);
        assert!(fractional.voxels == read("seg_fractional.nii.gz", Segment::All).voxels, "fractional at one half");
    }

    #[test]
    fn a_missing_segment_and_a_broken_file_are_named() {
        let options = ReadOptions { segment: Segment::Number(9), ..ReadOptions::default() };
        assert_eq!(read_mask(&fixture("seg_binary.dcm"), &options).unwrap_err().code, "mask-segment-missing");
        let gz = std::fs::read(format!("{FIXTURES}/mask_0_pred.nii.gz")).unwrap();
        let cut = MaskSource::Bytes(Bytes::copy_from_slice(&gz[..gz.len() / 2]));
        let error = read_mask(&cut, &ReadOptions::default()).unwrap_err();
        assert_eq!(error.code, "mask-unreadable");
        let other = MaskSource::Bytes(Bytes::from_static(b"subject_id,label\nOPEN-1,1\n"));
        assert_eq!(read_mask(&other, &ReadOptions::default()).unwrap_err().code, "mask-unreadable");
    }

    #[test]
    fn the_byte_limit_applies_before_the_voxels_are_allocated() {
        let options = ReadOptions { byte_limit: 4096, ..ReadOptions::default() };
        let error = read_mask(&fixture("mask_3_pred.nii.gz"), &options).unwrap_err();
        assert_eq!(
            (error.code, error.message.as_str()),
            ("mask-too-large", "the mask is larger than the limit of 4096 bytes")
        );
        let raw = std::fs::read(format!("{FIXTURES}/mask_edge_truth.nii")).unwrap();
        let error = read_mask(&MaskSource::Bytes(raw.into()), &options).unwrap_err();
        assert_eq!(error.code, "mask-too-large", "an uncompressed file over the limit");
    }
}
