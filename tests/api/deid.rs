//! The de-identification engine on synthetic files with planted canaries.

use custodian::deid::{DeidSettings, MissingPatientId, RegistryKey, SafePrivate};
use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;

use crate::dicom_gen::{CANARY_TEXT, Instance, canaries_in};
use crate::helpers::deidentify_slice;

fn key() -> RegistryKey {
    RegistryKey::new(b"registry-key-for-tests-0123456789abcdef").unwrap()
}

fn settings<'a>(key: &'a RegistryKey, safe: &'a [SafePrivate]) -> DeidSettings<'a> {
    DeidSettings { safe_private: safe, ..crate::helpers::deid_settings(key, "uhb") }
}

fn reopen(bytes: &[u8]) -> dicom_object::DefaultDicomObject {
    OpenFileOptions::new().from_reader(&bytes[128..]).expect("the de-identified file parses")
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag).and_then(|e| e.to_str().ok()).map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
}

#[test]
fn no_planted_identifier_survives_de_identification() {
    let key = key();
    let source = Instance::ct(1, 1, 1, 2);
    let original = source.to_bytes();
    assert!(canaries_in(&original).len() >= 40, "the generator plants at least 40 canaries");

    let out = deidentify_slice(&original, &settings(&key, &[])).unwrap();
    let leaks = canaries_in(&out.to_vec());
    assert!(leaks.is_empty(), "identifiers survived: {leaks:#?}");
    let meta_debug = format!("{:?}", out.meta);
    assert!(canaries_in(meta_debug.as_bytes()).is_empty(), "{meta_debug}");
}

#[test]
fn retained_attributes_and_pixels_survive_unchanged() {
    let key = key();
    let source = Instance::ct(1, 1, 1, 2);
    let out = deidentify_slice(&source.to_bytes(), &settings(&key, &[])).unwrap();
    let obj = reopen(&out.to_vec());
    assert_eq!(text(&obj, tags::MODALITY).as_deref(), Some("CT"));
    assert_eq!(text(&obj, tags::MANUFACTURER).as_deref(), Some("ACME Medical"));
    assert_eq!(text(&obj, tags::MANUFACTURER_MODEL_NAME).as_deref(), Some("Scanner 3000"));
    assert_eq!(text(&obj, tags::PATIENT_SEX).as_deref(), Some("F"));
    assert_eq!(text(&obj, tags::PATIENT_SIZE).as_deref(), Some("1.68"));
    assert_eq!(text(&obj, tags::PATIENT_WEIGHT).as_deref(), Some("61.5"));
    assert_eq!(
        text(&obj, tags::PATIENT_AGE).as_deref(),
        Some("065Y"),
        "age at study computed before the birth date went"
    );
    assert_eq!(text(&obj, tags::BODY_PART_EXAMINED).as_deref(), Some("CHEST"));
    assert_eq!(text(&obj, tags::STUDY_DESCRIPTION).as_deref(), Some("CT CHEST"), "descriptors cleaned to vocabulary");
    assert_eq!(text(&obj, tags::SERIES_DESCRIPTION).as_deref(), Some("AX SOFT TISSUE"));
    assert_eq!(text(&obj, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"));
    assert!(text(&obj, tags::DEIDENTIFICATION_METHOD).unwrap().contains("Table E.1-1"));
    let Value::Sequence(codes) = obj.get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE).unwrap().value() else {
        panic!("a code sequence")
    };
    assert_eq!(codes.items().len(), 5, "the profile and its four options");
    assert_eq!(text(&obj, tags::PATIENT_ID).as_deref(), Some(out.meta.subject.as_str()));
    assert_eq!(text(&obj, tags::PATIENT_NAME).as_deref(), Some(out.meta.subject.as_str()));
    assert!(obj.get(tags::PATIENT_BIRTH_DATE).is_none_or(|e| e.to_str().unwrap().trim().is_empty()));
    // Pixel data byte for byte.
    let pixels = obj.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(pixels.as_ref(), source.pixels().as_slice());
    // No private attribute remains.
    assert!(obj.iter().all(|e| e.tag().group() % 2 == 0));
    assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), crate::dicom_gen::EXPLICIT_VR_LE);
    assert_eq!(obj.meta().media_storage_sop_instance_uid().trim_end_matches('\0'), out.meta.sop_uid);
}

#[test]
fn dates_shift_by_one_offset_per_subject_so_intervals_survive() {
    let key = key();
    let out = deidentify_slice(&Instance::ct(1, 1, 1, 2).to_bytes(), &settings(&key, &[])).unwrap();
    let obj = reopen(&out.to_vec());
    let day = |tag| chrono::NaiveDate::parse_from_str(&text(&obj, tag).unwrap(), "%Y%m%d").unwrap();
    let study = day(tags::STUDY_DATE);
    assert_eq!(
        study,
        chrono::NaiveDate::from_ymd_opt(2019, 4, 6).unwrap() + chrono::Duration::days(out.meta.date_shift_days)
    );
    assert_eq!((day(tags::CONTENT_DATE) - study).num_days(), 2, "the interval between events is kept");
    assert_eq!(text(&obj, tags::ACQUISITION_DATE_TIME).unwrap()[8..], *"101500", "time of day kept");
    assert_eq!(out.meta.study_date, Some(study));
    assert_eq!(text(&obj, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).as_deref(), Some("MODIFIED"));
}

#[test]
fn uids_and_references_are_remapped_consistently_across_files() {
    let key = key();
    let first = deidentify_slice(&Instance::ct(1, 1, 1, 1).to_bytes(), &settings(&key, &[])).unwrap();
    let second = deidentify_slice(&Instance::ct(1, 1, 1, 2).to_bytes(), &settings(&key, &[])).unwrap();
    assert_eq!(first.meta.study_uid, second.meta.study_uid);
    assert_eq!(first.meta.series_uid, second.meta.series_uid);
    assert_ne!(first.meta.sop_uid, second.meta.sop_uid);
    assert!(first.meta.study_uid.starts_with("2.25."));
    // The second instance references the first: the reference follows the remapping.
    assert!(second.meta.referenced_sop_uids.contains(&first.meta.sop_uid), "{:?}", second.meta.referenced_sop_uids);
    let obj = reopen(&second.to_vec());
    let Value::Sequence(refs) = obj.get(tags::REFERENCED_IMAGE_SEQUENCE).unwrap().value() else { panic!() };
    let referenced = refs.items()[0].get(tags::REFERENCED_SOP_INSTANCE_UID).unwrap().to_str().unwrap();
    assert_eq!(referenced.trim_end_matches('\0'), first.meta.sop_uid);
    // A second study of the same patient: same subject, same date shift.
    let later = deidentify_slice(&Instance::ct(1, 2, 1, 1).to_bytes(), &settings(&key, &[])).unwrap();
    assert_eq!(later.meta.subject, first.meta.subject);
    assert_eq!(later.meta.date_shift_days, first.meta.date_shift_days);
    assert_ne!(later.meta.study_uid, first.meta.study_uid);
    // Another patient: another subject.
    let other = deidentify_slice(&Instance::ct(2, 1, 1, 1).to_bytes(), &settings(&key, &[])).unwrap();
    assert_ne!(other.meta.subject, first.meta.subject);
}

#[test]
fn the_same_file_de_identifies_to_the_same_bytes() {
    let key = key();
    let bytes = Instance::ct(1, 1, 1, 1).to_bytes();
    let a = deidentify_slice(&bytes, &settings(&key, &[])).unwrap();
    let b = deidentify_slice(&bytes, &settings(&key, &[])).unwrap();
    assert_eq!(a.to_vec(), b.to_vec(), "re-sent data deduplicates");
}

#[test]
fn burned_in_text_sends_the_instance_to_quarantine() {
    let key = key();
    let flagged = Instance { burned_in: Some("YES"), ..Instance::ct(1, 1, 1, 1) };
    let out = deidentify_slice(&flagged.to_bytes(), &settings(&key, &[])).unwrap();
    assert_eq!(out.quarantine.unwrap().code, "burned-in-annotation");

    let ultrasound = Instance { modality: "US", sop_class: "1.2.840.10008.5.1.4.1.1.6.1", ..Instance::ct(1, 1, 1, 1) };
    assert_eq!(
        deidentify_slice(&ultrasound.to_bytes(), &settings(&key, &[])).unwrap().quarantine.unwrap().code,
        "burned-in-text-likely"
    );
    let declared_clean = Instance { burned_in: Some("NO"), ..ultrasound };
    assert!(deidentify_slice(&declared_clean.to_bytes(), &settings(&key, &[])).unwrap().quarantine.is_none());
    let capture = Instance { sop_class: "1.2.840.10008.5.1.4.1.1.7", ..Instance::ct(1, 1, 1, 1) };
    assert!(deidentify_slice(&capture.to_bytes(), &settings(&key, &[])).unwrap().quarantine.is_some());
    assert!(deidentify_slice(&Instance::ct(1, 1, 1, 1).to_bytes(), &settings(&key, &[])).unwrap().quarantine.is_none());
}

#[test]
fn safe_private_attributes_are_kept_and_everything_else_private_goes() {
    let key = key();
    let safe = [SafePrivate { creator: "CNRY VENDOR CREATOR".into(), group: 0x0029, element: 0x11 }];
    let out = deidentify_slice(&Instance::ct(1, 1, 1, 1).to_bytes(), &settings(&key, &safe)).unwrap();
    let obj = reopen(&out.to_vec());
    assert!(obj.get(dicom_core::Tag(0x0029, 0x1011)).is_some(), "declared safe");
    assert!(obj.get(dicom_core::Tag(0x0029, 0x1010)).is_none(), "not declared");
}

#[test]
fn bad_files_are_rejected_with_a_code_and_no_values_in_the_message() {
    let key = key();
    let s = settings(&key, &[]);
    let not_dicom = deidentify_slice(b"%PDF-1.7 CNRY not a dicom file", &s).unwrap_err();
    assert_eq!(not_dicom.code, "not-dicom");

    let full = Instance::ct(1, 1, 1, 1).to_bytes();
    let truncated = deidentify_slice(&full[..full.len() / 3], &s).unwrap_err();
    assert_eq!(truncated.code, "malformed-dicom");

    let mut missing = Instance::ct(1, 1, 1, 1);
    missing.patient_id = String::new();
    let reject = DeidSettings { missing_patient_id: MissingPatientId::Reject, ..settings(&key, &[]) };
    let error = deidentify_slice(&missing.to_bytes(), &reject).unwrap_err();
    assert_eq!(error.code, "missing-attribute");
    assert!(error.message.contains("(0010,0020)"), "{}", error.message);

    for error in [not_dicom, truncated, error] {
        assert!(!error.message.contains(CANARY_TEXT), "{}", error.message);
    }
}

#[tokio::test]
async fn conformance_statement_is_public_and_generated_from_the_profile() {
    let app = crate::helpers::TestApp::new().await;
    let body = app.get("/api/v1/deid/profile", None).await.assert_status(axum::http::StatusCode::OK).json();
    assert_eq!(body["edition"], custodian::deid::PROFILE.edition.as_str());
    assert_eq!(body["codes"][0]["code_value"], "113100");
    assert_eq!(body["codes"].as_array().unwrap().len(), 5);
    assert_eq!(body["codes"][4]["code_value"], "113104", "Clean Structured Content");
    assert!(body["codes"].as_array().unwrap().iter().all(|c| c["code_value"] != "113109"), "no Retain Device Identity");
    let attributes = body["attributes"].as_array().unwrap();
    assert_eq!(attributes.len(), custodian::deid::PROFILE.rules().len());
    let row = |keyword: &str| attributes.iter().find(|a| a["keyword"] == keyword).unwrap().clone();
    assert_eq!(row("PatientBirthDate")["action"], "zero");
    assert_eq!(row("StudyDate")["action"], "clean");
    assert_eq!(row("StudyDate")["option"], "retain-longitudinal-modified-dates");
    assert_eq!(row("PatientSex")["action"], "keep");
    assert_eq!(row("StudyInstanceUID")["action"], "uid");
    assert_eq!(row("DeviceSerialNumber")["action"], "dummy");
    assert_eq!(row("DateOfLastCalibration")["action"], "clean");
    // The statement also says how counts are protected, with the parameters in force, trackers included.
    let disclosure = &body["disclosure"];
    assert_eq!(disclosure["method"], "cell-key");
    assert_eq!((disclosure["noise"]["sd"].as_f64(), disclosure["noise"]["bound"].as_i64()), (Some(2.0), Some(6)));
    assert_eq!((disclosure["min_threshold"].as_i64(), disclosure["max_threshold"].as_i64()), (Some(5), Some(50)));
    assert_eq!(disclosure["budget_units"], 300);
    assert!(disclosure["rules"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("tracker")));
}

#[test]
fn pixel_data_is_carried_over_without_a_copy_and_anything_after_it_is_still_profiled() {
    let key = key();
    let source = Instance::ct(1, 1, 1, 2);
    let out = deidentify_slice(&source.to_bytes(), &settings(&key, &[])).unwrap();
    assert_eq!(out.parts.len(), 2, "re-encoded header, then the original Pixel Data element");
    let pixel_element = out.parts[1].clone();
    assert!(source.to_bytes().ends_with(&pixel_element), "the element is the sender's bytes, unchanged");
    assert_eq!(reopen(&out.to_vec()).element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap(), source.pixels());

    // Data Set Trailing Padding (FFFC,FFFC) after the pixels: the file is parsed
    // whole, and the padding (removed by the profile) does not survive.
    let mut padded = source.to_bytes();
    padded.extend_from_slice(&[0xFC, 0xFF, 0xFC, 0xFF, b'O', b'B', 0, 0, 4, 0, 0, 0]);
    padded.extend_from_slice(b"CNRY");
    let out = deidentify_slice(&padded, &settings(&key, &[])).unwrap();
    assert_eq!(out.parts.len(), 1, "parsed and re-encoded whole");
    let file = out.to_vec();
    assert!(canaries_in(&file).is_empty(), "{:?}", canaries_in(&file));
    let obj = reopen(&file);
    assert!(obj.element(dicom_core::Tag(0xFFFC, 0xFFFC)).is_err());
    assert_eq!(obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap(), source.pixels());
}

#[test]
fn a_deflated_file_is_stored_inflated_with_its_pixels_unchanged_and_a_deflate_bomb_is_refused() {
    crate::cstore::ensure_dcmtk();
    let key = key();
    let source = Instance::ct(1, 1, 1, 2);
    let dir = tempfile::tempdir().unwrap();
    let (plain, deflated) = (dir.path().join("plain.dcm"), dir.path().join("deflated.dcm"));
    std::fs::write(&plain, source.to_bytes()).unwrap();
    let converted = std::process::Command::new("dcmconv").arg("+td").arg(&plain).arg(&deflated).output().unwrap();
    assert!(converted.status.success(), "{}", String::from_utf8_lossy(&converted.stderr));
    let bytes = std::fs::read(&deflated).unwrap();
    assert!(
        bytes.windows(22).any(|w| w == b"1.2.840.10008.1.2.1.99"),
        "DCMTK wrote Deflated Explicit VR Little Endian"
    );

    let out = deidentify_slice(&bytes, &settings(&key, &[])).unwrap();
    assert_eq!(out.meta.transfer_syntax, "1.2.840.10008.1.2.1", "stored as the Explicit VR Little Endian it was");
    let file = out.to_vec();
    assert!(canaries_in(&file).is_empty(), "{:?}", canaries_in(&file));
    let obj = reopen(&file);
    assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2.1");
    assert_eq!(obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap(), source.pixels());
    assert_eq!(text(&obj, tags::MODALITY).as_deref(), Some("CT"));

    // The same file under a limit smaller than its inflated data set.
    let tight = DeidSettings { max_inflated_bytes: 1024, ..settings(&key, &[]) };
    let error = deidentify_slice(&bytes, &tight).unwrap_err();
    assert_eq!(error.code, "file-too-large");
    assert!(error.message.contains("inflates to more than the limit of 1024 bytes"), "{}", error.message);
}

#[test]
fn a_content_tree_keeps_its_structure_and_references_while_its_text_names_and_dates_are_cleaned() {
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, Length, PrimitiveValue, VR};
    use dicom_object::InMemDicomObject;

    let key = key();
    let source = Instance::ct(1, 1, 1, 2);
    let image_uid = source.sop_uid();
    let item = |elements: Vec<DataElement<InMemDicomObject>>| InMemDicomObject::from_element_iter(elements);
    let s = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
    let reference = item(vec![
        s(tags::REFERENCED_SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
        s(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &image_uid),
    ]);
    let content = vec![
        item(vec![
            s(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
            s(tags::VALUE_TYPE, VR::CS, "TEXT"),
            s(tags::TEXT_VALUE, VR::UT, "CNRY Smith has a mass in the left lung"),
        ]),
        item(vec![
            s(tags::RELATIONSHIP_TYPE, VR::CS, "HAS OBS CONTEXT"),
            s(tags::VALUE_TYPE, VR::CS, "PNAME"),
            s(tags::PERSON_NAME, VR::PN, "CNRY^OBSERVER"),
        ]),
        item(vec![
            s(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
            s(tags::VALUE_TYPE, VR::CS, "DATE"),
            s(tags::DATE, VR::DA, "20190406"),
        ]),
        item(vec![
            s(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
            s(tags::VALUE_TYPE, VR::CS, "IMAGE"),
            DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::new(vec![reference], Length::UNDEFINED),
            ),
        ]),
    ];
    let mut obj = OpenFileOptions::new().from_reader(&source.to_bytes()[128..]).unwrap();
    obj.put(DataElement::new(tags::CONTENT_SEQUENCE, VR::SQ, DataSetSequence::new(content, Length::UNDEFINED)));
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).unwrap();

    let out = deidentify_slice(&bytes, &settings(&key, &[])).unwrap();
    let file = out.to_vec();
    assert!(canaries_in(&file).is_empty(), "{:?}", canaries_in(&file));
    let obj = reopen(&file);
    let Value::Sequence(tree) = obj.get(tags::CONTENT_SEQUENCE).expect("the tree stays").value() else {
        panic!("a sequence")
    };
    let items = tree.items();
    let item_text = |item: &InMemDicomObject, tag| {
        item.get(tag).and_then(|e| e.to_str().ok()).map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
    };
    assert_eq!(items.len(), 4, "every content item stays");
    let text_value = item_text(&items[0], tags::TEXT_VALUE).unwrap_or_default();
    assert!(!text_value.contains("Smith"), "free text is cleaned to vocabulary: {text_value}");
    assert!(item_text(&items[1], tags::PERSON_NAME).is_none_or(|n| !n.contains("OBSERVER")));
    assert_ne!(item_text(&items[2], tags::DATE).as_deref(), Some("20190406"), "dates are shifted");
    let Value::Sequence(image_refs) = items[3].get(tags::REFERENCED_SOP_SEQUENCE).unwrap().value() else {
        panic!("a sequence")
    };
    let uid = item_text(&image_refs.items()[0], tags::REFERENCED_SOP_INSTANCE_UID).unwrap();
    assert_eq!(uid, key.uid(&image_uid), "the image reference follows the remapped instance");
    assert!(out.meta.referenced_sop_uids.contains(&uid));
}
