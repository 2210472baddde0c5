//! NIfTI-1 and NIfTI-2 masks, de-identified at the door.
//!
//! A NIfTI header has free-text fields (`descrip`, `aux_file`, `intent_name`,
//! and NIfTI-1's unused `data_type` and `db_name`) that tools fill with names,
//! dates and paths, and header extensions that can carry a whole DICOM header
//! (ecode 2) or XML. All text fields are blanked and all extensions dropped;
//! the image data is kept byte for byte.

use std::io::{Read, Write};

/// What was kept of a mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// `.nii.gz` bytes: the sanitized file, gzip-compressed.
    pub bytes: Vec<u8>,
    /// 1 or 2.
    pub version: u8,
    /// Sizes of the used dimensions.
    pub dims: Vec<i64>,
    /// Header extensions dropped.
    pub extensions_dropped: bool,
}

/// Why a file is not an acceptable mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotNifti(pub &'static str);

struct Layout {
    header: usize,
    text_fields: &'static [(usize, usize)],
    dims_at: usize,
    dim_width: usize,
}

const NIFTI1: Layout = Layout {
    header: 348,
    // data_type, db_name, descrip, aux_file, intent_name
    text_fields: &[(4, 10), (14, 18), (148, 80), (228, 24), (328, 16)],
    dims_at: 40,
    dim_width: 2,
};

const NIFTI2: Layout = Layout {
    header: 540,
    // descrip, aux_file, intent_name
    text_fields: &[(240, 80), (320, 24), (508, 16)],
    dims_at: 16,
    dim_width: 8,
};

/// Reads a `.nii` or `.nii.gz` file of at most `limit` bytes (expanded) and returns it sanitized.
pub fn sanitize(body: &[u8], limit: usize) -> Result<Mask, NotNifti> {
    let raw = if body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let read = flate2::read::MultiGzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| NotNifti("the gzip stream is corrupt"))?;
        if read > limit {
            return Err(NotNifti("the mask expands beyond the size limit"));
        }
        out
    } else {
        body.to_vec()
    };
    let (version, little, layout) = match raw.get(..4).map(|b| [b[0], b[1], b[2], b[3]]) {
        Some(b) if i32::from_le_bytes(b) == 348 => (1, true, &NIFTI1),
        Some(b) if i32::from_be_bytes(b) == 348 => (1, false, &NIFTI1),
        Some(b) if i32::from_le_bytes(b) == 540 => (2, true, &NIFTI2),
        Some(b) if i32::from_be_bytes(b) == 540 => (2, false, &NIFTI2),
        _ => return Err(NotNifti("not a NIfTI-1 or NIfTI-2 file")),
    };
    if raw.len() < layout.header + 4 {
        return Err(NotNifti("the file ends inside its header"));
    }
    let magic_ok = match version {
        1 => &raw[344..348] == b"n+1\0",
        _ => &raw[4..12] == b"n+2\0\r\n\x1a\n",
    };
    if !magic_ok {
        return Err(NotNifti("not a single-file NIfTI (.nii): header and image pairs (.hdr/.img) are not accepted"));
    }
    let vox_offset = if version == 1 {
        let b: [u8; 4] = raw[108..112].try_into().expect("4 bytes");
        let v = if little { f32::from_le_bytes(b) } else { f32::from_be_bytes(b) };
        // Offsets are whole numbers well inside f32's exact range.
        let whole = if v.is_finite() && (352.0..=1.0e7).contains(&v) && v.fract() == 0.0 { Some(v) } else { None };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        whole.map(|v| v as usize).ok_or(NotNifti("the voxel offset is invalid"))?
    } else {
        let b: [u8; 8] = raw[168..176].try_into().expect("8 bytes");
        let v = if little { i64::from_le_bytes(b) } else { i64::from_be_bytes(b) };
        usize::try_from(v).ok().filter(|v| *v >= 544).ok_or(NotNifti("the voxel offset is invalid"))?
    };
    if vox_offset > raw.len() {
        return Err(NotNifti("the file ends before its image data"));
    }
    let dims = dims(&raw, layout, little)?;
    let extensions_dropped = raw[layout.header] != 0;
    let mut out = Vec::with_capacity(layout.header + 4 + raw.len() - vox_offset);
    out.extend_from_slice(&raw[..layout.header]);
    for (at, len) in layout.text_fields {
        out[*at..at + len].fill(0);
    }
    // No extensions; the data follows the 4 extension bytes at once.
    if version == 1 {
        let v: f32 = 352.0;
        out[108..112].copy_from_slice(&if little { v.to_le_bytes() } else { v.to_be_bytes() });
    } else {
        let v: i64 = 544;
        out[168..176].copy_from_slice(&if little { v.to_le_bytes() } else { v.to_be_bytes() });
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&raw[vox_offset..]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&out).map_err(|_| NotNifti("the mask could not be compressed"))?;
    let bytes = gz.finish().map_err(|_| NotNifti("the mask could not be compressed"))?;
    Ok(Mask { bytes, version, dims, extensions_dropped })
}

fn dims(raw: &[u8], layout: &Layout, little: bool) -> Result<Vec<i64>, NotNifti> {
    let read = |i: usize| -> i64 {
        let at = layout.dims_at + i * layout.dim_width;
        if layout.dim_width == 2 {
            let b = [raw[at], raw[at + 1]];
            i64::from(if little { i16::from_le_bytes(b) } else { i16::from_be_bytes(b) })
        } else {
            let b: [u8; 8] = raw[at..at + 8].try_into().expect("8 bytes");
            if little { i64::from_le_bytes(b) } else { i64::from_be_bytes(b) }
        }
    };
    let n = read(0);
    if !(1..=7).contains(&n) {
        return Err(NotNifti("the header's dim[0] is not 1 to 7"));
    }
    let dims: Vec<i64> = (1..=usize::try_from(n).expect("1..=7")).map(read).collect();
    if dims.iter().any(|d| *d < 1) {
        return Err(NotNifti("a dimension is not positive"));
    }
    Ok(dims)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A little-endian NIfTI-1 mask of 4×4×2 bytes with PHI in its text fields and a DICOM extension.
    pub(crate) fn sample() -> Vec<u8> {
        let mut h = vec![0_u8; 348];
        h[0..4].copy_from_slice(&348_i32.to_le_bytes());
        for (i, d) in [3_i16, 4, 4, 2, 1, 1, 1, 1].iter().enumerate() {
            h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        h[70..72].copy_from_slice(&2_i16.to_le_bytes()); // uint8
        h[72..74].copy_from_slice(&8_i16.to_le_bytes());
        h[148..148 + 18].copy_from_slice(b"DOE^JANE 19580314x");
        h[228..236].copy_from_slice(b"MRN12345");
        h[344..348].copy_from_slice(b"n+1\0");
        let extension: Vec<u8> =
            [16_i32.to_le_bytes(), 2_i32.to_le_bytes()].concat().into_iter().chain(*b"DOE^JANE").collect();
        let vox_offset = f32::from(u16::try_from(348 + 4 + extension.len()).unwrap());
        h[108..112].copy_from_slice(&vox_offset.to_le_bytes());
        let mut file = h;
        file.extend_from_slice(&[1, 0, 0, 0]);
        file.extend_from_slice(&extension);
        file.extend((0..32_u8).map(|i| i % 2));
        file
    }

    #[test]
    fn text_fields_and_extensions_are_dropped_and_the_voxels_kept() {
        let mask = sanitize(&sample(), 1 << 20).unwrap();
        assert_eq!((mask.version, mask.dims.clone(), mask.extensions_dropped), (1, vec![4, 4, 2], true));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&mask.bytes[..]).read_to_end(&mut out).unwrap();
        assert!(!out.windows(8).any(|w| w == b"DOE^JANE" || w == b"MRN12345"), "no text survives");
        assert_eq!(out[108..112], 352.0_f32.to_le_bytes());
        assert_eq!(&out[352..], (0..32_u8).map(|i| i % 2).collect::<Vec<_>>().as_slice());
        let again = sanitize(&mask.bytes, 1 << 20).unwrap();
        assert!(!again.extensions_dropped, "a sanitized gzip mask reads back");
    }

    #[test]
    fn other_files_and_broken_headers_are_refused() {
        assert_eq!(sanitize(b"DICM not a mask", 1 << 20).unwrap_err(), NotNifti("not a NIfTI-1 or NIfTI-2 file"));
        let mut pair = sample();
        pair[344..348].copy_from_slice(b"ni1\0");
        assert!(sanitize(&pair, 1 << 20).unwrap_err().0.contains(".hdr/.img"));
        let truncated = &sample()[..300];
        assert_eq!(sanitize(truncated, 1 << 20).unwrap_err(), NotNifti("the file ends inside its header"));
        assert_eq!(
            sanitize(&sample(), 10).unwrap(),
            sanitize(&sample(), 1 << 20).unwrap(),
            "the limit applies to gzip only"
        );
    }
}
