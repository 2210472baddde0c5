//! De-identified output judged by parties other than the engine: dicom3tools'
//! `dciodvfy` (David Clunie's IOD validator) on real sample files, and the
//! conformance statement, row by row, against what the engine does.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use custodian::deid::{DeidSettings, RegistryKey};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::dicom_gen::Instance;
use crate::helpers::deidentify_slice;

const SITE: &str = "uhb";

fn key() -> RegistryKey {
    RegistryKey::new(b"registry-key-for-tests-0123456789abcdef").unwrap()
}

fn settings(key: &RegistryKey) -> DeidSettings<'_> {
    crate::helpers::deid_settings(key, SITE)
}

pub(crate) fn ensure_dciodvfy() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(problem) = READY.get_or_init(|| crate::helpers::ensure_debian_package("dciodvfy", "dicom3tools")) {
        panic!("this test needs dicom3tools' dciodvfy: {problem}; install it with `apt-get install dicom3tools`");
    }
}

/// dciodvfy's errors for a file, without the values they quote (dates,
/// UIDs and names differ before and after by design), so that the same
/// problem reads the same in both.
pub(crate) fn dciodvfy_errors(path: &Path) -> BTreeSet<String> {
    let output = std::process::Command::new("dciodvfy").arg(path).output().expect("dciodvfy runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    text.lines()
        .filter(|line| line.starts_with("Error"))
        .map(|line| {
            let mut kept = String::new();
            let mut quoted = false;
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    _ if quoted => {}
                    _ => kept.push(c),
                }
            }
            kept.split_whitespace()
                .filter(|word| !word.bytes().any(|b| b.is_ascii_digit()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Real files that de-identify (every good fixture; those without a Patient ID get a subject of their study).
const SAMPLES: &[&str] = &[
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "rtdose_rle_1frame.dcm",
    "JPGExtended.dcm",
    "JPEG2000.dcm",
    "examples_jpeg2k.dcm",
    "liver_1frame.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "chrH31.dcm",
    "ExplVR_BigEnd.dcm",
    "image_dfl.dcm",
];

#[test]
fn de_identification_adds_no_error_dciodvfy_finds() {
    ensure_dciodvfy();
    let key = key();
    // Kept after the run, to be looked at with dciodvfy by hand.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deid-dciodvfy");
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/pydicom");
    let mut introduced = Vec::new();
    for name in SAMPLES {
        let bytes = std::fs::read(fixtures.join(name)).unwrap();
        let out = deidentify_slice(&bytes, &settings(&key)).unwrap_or_else(|e| panic!("{name}: {}", e.message));
        let after = dir.join(name);
        std::fs::write(&after, out.to_vec()).unwrap();
        // dciodvfy cannot read a deflated data set: it judges the original inflated.
        let original = dir.join(format!("original-{name}"));
        let inflated = custodian::deid::guard::inflate_deflated(&bytes, 64 << 20).unwrap();
        std::fs::write(&original, inflated.as_deref().unwrap_or(&bytes)).unwrap();
        let before = dciodvfy_errors(&original);
        let new: Vec<String> = dciodvfy_errors(&after).difference(&before).cloned().collect();
        if !new.is_empty() {
            introduced.push(format!("{name}: {new:#?}"));
        }
    }
    assert!(introduced.is_empty(), "de-identification introduced errors:\n{}", introduced.join("\n"));
}

/// A value of `vr` to plant, or `None` for VRs this check leaves out (binary, sequences).
fn planted(vr: VR, index: usize) -> Option<String> {
    Some(match vr {
        VR::DA => "20190401".into(),
        VR::DT => "20190401101500".into(),
        VR::TM => "101500".into(),
        VR::UI => format!("1.2.826.0.1.3680043.10.54321.99.{index}"),
        VR::AS => "042Y".into(),
        VR::DS => "1.5".into(),
        VR::IS => "7".into(),
        VR::PN => "CNRY^STATEMENT".into(),
        VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC | VR::CS => "CT CHEST CNRY".into(),
        _ => return None,
    })
}

fn tag_of(text: &str) -> Option<Tag> {
    let (group, element) = text.trim_matches(['(', ')']).split_once(',')?;
    Some(Tag(u16::from_str_radix(group, 16).ok()?, u16::from_str_radix(element, 16).ok()?))
}

/// For every attribute of the statement that a value can be planted in, and
/// for every option it declares: what the statement says is what the output shows.
#[tokio::test]
async fn the_conformance_statement_and_the_output_agree_on_every_attribute_and_option() {
    let app = crate::helpers::TestApp::new().await;
    let statement = app.get("/api/v1/deid/profile", None).await.assert_status(axum::http::StatusCode::OK).json();
    let key = key();
    let base = Instance::ct(1, 1, 1, 1).to_bytes();
    let mut file: DefaultDicomObject = OpenFileOptions::new().from_reader(&base[128..]).unwrap();
    // Attributes the engine writes itself, or that the base file already holds.
    let own = [
        tags::PATIENT_ID,
        tags::PATIENT_NAME,
        tags::PATIENT_AGE,
        tags::PATIENT_IDENTITY_REMOVED,
        tags::DEIDENTIFICATION_METHOD,
        tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
        tags::BURNED_IN_ANNOTATION,
    ];
    let mut checked = Vec::new();
    for (index, row) in statement["attributes"].as_array().unwrap().iter().enumerate() {
        let Some(tag) = row["tag"].as_str().and_then(tag_of) else { continue };
        let Some(VirtualVr::Exact(vr)) =
            dicom_dictionary_std::StandardDataDictionary.by_tag(tag).map(DataDictionaryEntry::vr)
        else {
            continue;
        };
        if tag.group() == 0x0002 || own.contains(&tag) || file.get(tag).is_some() {
            continue;
        }
        let Some(value) = planted(vr, index) else { continue };
        file.put(DataElement::new(tag, vr, PrimitiveValue::from(value.as_str())));
        checked.push((tag, vr, value, row.clone()));
    }
    assert!(checked.len() > 300, "{} rows checked", checked.len());
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).unwrap();
    let out = deidentify_slice(&bytes, &settings(&key)).unwrap();
    let output = OpenFileOptions::new().from_reader(&out.to_vec()[128..]).unwrap();
    let shifted = (chrono::NaiveDate::from_ymd_opt(2019, 4, 1).unwrap()
        + chrono::Duration::days(out.meta.date_shift_days))
    .format("%Y%m%d")
    .to_string();

    let mut disagreements = Vec::new();
    for (tag, vr, value, row) in &checked {
        let after = output.get(*tag).map(|e| e.to_str().unwrap().trim_end_matches(['\0', ' ']).to_owned());
        let action = row["action"].as_str().unwrap();
        let agrees = match (action, after.as_deref()) {
            ("remove", None) | ("zero", Some("")) => true,
            ("dummy", Some(v)) => v != value && !v.contains("CNRY"),
            ("keep", Some(v)) => v == value,
            ("uid", Some(v)) => *v == key.uid(value),
            ("clean", Some(v)) => match vr {
                VR::DA => v == shifted,
                VR::DT => *v == format!("{shifted}101500"),
                VR::TM => v == value,
                _ => !v.contains("CNRY"),
            },
            _ => false,
        };
        if !agrees {
            disagreements.push(format!("{} {}: says {action}, output {after:?}", row["tag"], row["keyword"]));
        }
    }
    assert!(disagreements.is_empty(), "the statement and the output disagree:\n{}", disagreements.join("\n"));

    // Every option the statement declares decided some attribute checked above, and
    // the file declares exactly the statement's codes.
    let declared: Vec<String> =
        statement["codes"].as_array().unwrap().iter().map(|c| c["code_value"].as_str().unwrap().to_owned()).collect();
    let Value::Sequence(codes) = output.get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE).unwrap().value() else {
        panic!("a code sequence")
    };
    let in_file: Vec<String> = codes
        .items()
        .iter()
        .map(|item| item.get(tags::CODE_VALUE).unwrap().to_str().unwrap().trim().to_owned())
        .collect();
    assert_eq!(in_file, declared);
    let options = ["retain-patient-characteristics", "retain-longitudinal-modified-dates", "clean-descriptors"];
    for option in options {
        assert!(checked.iter().any(|(_, _, _, row)| row["option"] == option), "{option} decided nothing checked");
    }
}
