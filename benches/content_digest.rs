//! What the transfer-syntax-independent content digest (`src/ingest/content.rs`)
//! costs next to the de-identification it follows and the SHA-256 of the
//! stored bytes taken beside it, per file of the ingest benchmark's synthetic
//! CT corpora.
//!
//! ```text
//! cargo bench --bench content_digest
//! ```
//!
//! Prints one line per corpus: `rows files deid_us digest_us sha256_us digest/deid`.

#[path = "../tests/api/dicom_gen.rs"]
#[allow(dead_code)]
mod dicom_gen;

use std::time::Instant;

use aws_lc_rs::digest::{Context, SHA256};
use bytes::Bytes;
use custodian::deid::{DeidSettings, RegistryKey, deidentify};
use custodian::ingest::content;
use dicom_gen::Instance;

const FILES: u32 = 300;
const ROUNDS: usize = 3;

fn main() {
    let key = RegistryKey::new(b"registry-key-for-the-content-digest-bench").expect("a valid key");
    let settings = DeidSettings {
        key: &key,
        site: "bench",
        max_shift_days: 3650,
        safe_private: &[],
        max_inflated_bytes: 64 << 20,
        missing_patient_id: custodian::deid::MissingPatientId::default(),
    };
    println!("rows files deid_us digest_us sha256_us digest/deid");
    for rows in [128_u16, 512] {
        let files: Vec<Bytes> = (1..=FILES)
            .map(|i| Bytes::from(Instance { rows, columns: rows, ..Instance::ct(1, 1, 1, i) }.to_bytes()))
            .collect();
        let (mut deid_s, mut digest_s, mut sha_s) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let outputs: Vec<_> = files.iter().map(|f| deidentify(f, &settings).expect("de-identifies")).collect();
            deid_s = deid_s.min(started.elapsed().as_secs_f64());

            let started = Instant::now();
            for out in &outputs {
                std::hint::black_box(content::digest(&out.parts[0], out.parts.get(1).map(|p| &p[..])).expect("reads"));
            }
            digest_s = digest_s.min(started.elapsed().as_secs_f64());

            let started = Instant::now();
            for out in &outputs {
                let mut hash = Context::new(&SHA256);
                out.parts.iter().for_each(|p| hash.update(p));
                std::hint::black_box(hash.finish());
            }
            sha_s = sha_s.min(started.elapsed().as_secs_f64());
        }
        let per = |s: f64| s * 1e6 / f64::from(FILES);
        println!("{rows} {FILES} {:.0} {:.0} {:.0} {:.2}", per(deid_s), per(digest_s), per(sha_s), digest_s / deid_s);
    }
}
