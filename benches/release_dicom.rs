//! What re-pseudonymizing a stored instance for a project
//! (`src/release/dicom.rs`) costs next to a plain copy of the same bytes, and,
//! for scale, the SHA-256 a release manifest takes of every file.
//!
//! ```text
//! cargo bench --bench release_dicom
//! ```
//!
//! Stored instances are made the way ingest makes them (synthetic CTs through
//! `deidentify`), in three shapes: many 512×512 slices, one large 4096×4096
//! image (32 MiB of pixels), and a header-heavy object with thousands of
//! references (a segmentation of a long series). Prints one line per shape:
//! `shape files MB copy_MB/s release_MB/s sha256_MB/s deid_MB/s release/copy`, best of
//! three rounds; `release` hands back the new header and the stored pixel data
//! shared, not copied, as a builder writes them.

#[path = "../tests/api/dicom_gen.rs"]
#[allow(dead_code)]
mod dicom_gen;
#[path = "../tests/api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::time::Instant;

use bytes::Bytes;
use custodian::deid::{RegistryKey, deidentify};
use custodian::release::dicom::{ProjectPseudonyms, for_project};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_gen::Instance;
use dicom_object::{InMemDicomObject, OpenFileOptions};

const ROUNDS: usize = 3;

/// `file` with a Referenced Image Sequence of `n` items (a SEG's source images).
fn with_references(file: &[u8], n: u32) -> Vec<u8> {
    let mut obj = OpenFileOptions::new().from_reader(&file[128..]).expect("the file parses");
    let items: Vec<InMemDicomObject> = (1..=n)
        .map(|i| {
            InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    PrimitiveValue::from(dicom_gen::CT_IMAGE_STORAGE),
                ),
                DataElement::new(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(Instance::ct(1, 1, 1, i).sop_uid()),
                ),
            ])
        })
        .collect();
    obj.put(DataElement::new(tags::REFERENCED_IMAGE_SEQUENCE, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED)));
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("encodes");
    out
}

fn main() {
    let key = RegistryKey::new(b"registry-key-for-the-release-dicom-bench").expect("a valid key");
    let settings = helpers::deid_settings(&key, "bench");
    let stored = |original: Vec<u8>| -> Bytes {
        Bytes::from(deidentify(&Bytes::from(original), &settings).expect("de-identifies").to_vec())
    };
    let shapes: Vec<(&str, Vec<Bytes>)> = vec![
        (
            "512x512-slices",
            (1..=200)
                .map(|i| stored(Instance { rows: 512, columns: 512, ..Instance::ct(1, 1, 1, i) }.to_bytes()))
                .collect(),
        ),
        (
            "4096x4096-image",
            vec![stored(Instance { rows: 4096, columns: 4096, ..Instance::ct(1, 1, 1, 1) }.to_bytes())],
        ),
        (
            "5000-references",
            (1..=20)
                .map(|i| {
                    let image = Instance { rows: 512, columns: 512, ..Instance::ct(1, 1, 2, i) };
                    stored(with_references(&image.to_bytes(), 5000))
                })
                .collect(),
        ),
    ];
    let project = ProjectPseudonyms::new(&[0x5A; 32]);
    println!("shape files MB copy_MB/s release_MB/s sha256_MB/s deid_MB/s release/copy");
    for (shape, files) in shapes {
        let bytes: usize = files.iter().map(Bytes::len).sum();
        let (mut copy_s, mut release_s, mut sha_s, mut deid_s) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            for file in &files {
                std::hint::black_box(file.to_vec());
            }
            copy_s = copy_s.min(started.elapsed().as_secs_f64());

            let started = Instant::now();
            for file in &files {
                std::hint::black_box(for_project(file, &project).expect("releases"));
            }
            release_s = release_s.min(started.elapsed().as_secs_f64());

            let started = Instant::now();
            for file in &files {
                std::hint::black_box(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, file));
            }
            sha_s = sha_s.min(started.elapsed().as_secs_f64());

            // Ingest's own walk over the same objects, for scale.
            let started = Instant::now();
            for file in &files {
                std::hint::black_box(deidentify(file, &settings).expect("de-identifies"));
            }
            deid_s = deid_s.min(started.elapsed().as_secs_f64());
        }
        #[allow(clippy::cast_precision_loss)]
        let mb = bytes as f64 / 1e6;
        println!(
            "{shape} {} {mb:.1} {:.0} {:.0} {:.0} {:.0} {:.2}",
            files.len(),
            mb / copy_s,
            mb / release_s,
            mb / sha_s,
            mb / deid_s,
            copy_s / release_s
        );
    }
}
