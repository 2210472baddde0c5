//! Findings of a de-identification audit (real files from pydicom and
//! pydicom-data with canaries planted, compared with dicognito and deid),
//! each reproduced on a synthetic or real file.

use custodian::deid::{DeidSettings, Deidentified, MissingPatientId, RegistryKey, Rejection};
use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

use crate::dicom_gen::{Instance, canaries_in};
use crate::helpers::deidentify_slice;

const SITE: &str = "uhb";

fn key() -> RegistryKey {
    RegistryKey::new(b"registry-key-for-tests-0123456789abcdef").unwrap()
}

fn settings(key: &RegistryKey, missing_patient_id: MissingPatientId) -> DeidSettings<'_> {
    DeidSettings { missing_patient_id, ..crate::helpers::deid_settings(key, SITE) }
}

fn open(bytes: &[u8]) -> DefaultDicomObject {
    OpenFileOptions::new().from_reader(&bytes[128..]).expect("the file parses")
}

/// A generated CT (with its canaries) amended by `elements`, as Part-10 bytes.
fn ct_with(elements: impl IntoIterator<Item = InMemElement>) -> Vec<u8> {
    amend(&Instance::ct(1, 1, 1, 1).to_bytes(), elements)
}

fn amend(bytes: &[u8], elements: impl IntoIterator<Item = InMemElement>) -> Vec<u8> {
    let mut file = open(bytes);
    for element in elements {
        file.put(element);
    }
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

fn run(bytes: &[u8]) -> (Deidentified, DefaultDicomObject) {
    let key = key();
    let out = deidentify_slice(bytes, &settings(&key, MissingPatientId::Fallback))
        .unwrap_or_else(|e| panic!("rejected: {} {}", e.code, e.message));
    let output = open(&out.to_vec());
    (out, output)
}

fn rejected(bytes: &[u8], missing_patient_id: MissingPatientId) -> Rejection {
    let key = key();
    deidentify_slice(bytes, &settings(&key, missing_patient_id)).map(|_| ()).unwrap_err()
}

fn el(tag: Tag, vr: VR, value: &str) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn seq(tag: Tag, items: Vec<Vec<InMemElement>>) -> InMemElement {
    let items: Vec<InMemDicomObject> = items.into_iter().map(InMemDicomObject::from_element_iter).collect();
    DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag).and_then(|e| e.to_str().ok()).map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
}

fn items(obj: &InMemDicomObject, tag: Tag) -> Vec<InMemDicomObject> {
    match obj.get(tag).map(DataElement::value) {
        Some(Value::Sequence(seq)) => seq.items().to_vec(),
        _ => Vec::new(),
    }
}

fn shifted(date: &str, days: i64) -> String {
    (chrono::NaiveDate::parse_from_str(date, "%Y%m%d").unwrap() + chrono::Duration::days(days))
        .format("%Y%m%d")
        .to_string()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/pydicom").join(name))
        .unwrap()
}

#[test]
fn every_date_moves_with_the_subject_calibration_dates_and_nested_dates_included() {
    let bytes = ct_with([
        el(tags::DATE_OF_LAST_CALIBRATION, VR::DA, "20190401"),
        el(tags::TIME_OF_LAST_CALIBRATION, VR::TM, "083000"),
        el(tags::DATE_OF_MANUFACTURE, VR::DA, "20150101"),
        el(tags::ACQUISITION_DATE_TIME, VR::DT, "20190407101500.25+0100"),
        el(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0100"),
        // Nested, and one the table does not list at all (an X-ray detector's calibration date).
        seq(
            tags::ACQUISITION_CONTEXT_SEQUENCE,
            vec![vec![
                el(tags::DATE_OF_LAST_CALIBRATION, VR::DA, "20190402"),
                el(tags::DATE_OF_LAST_DETECTOR_CALIBRATION, VR::DA, "20190403"),
                seq(
                    tags::CONCEPT_NAME_CODE_SEQUENCE,
                    vec![vec![
                        el(tags::CODE_VALUE, VR::SH, "121071"),
                        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, "DCM"),
                        el(tags::CONTEXT_GROUP_VERSION, VR::DT, "20040112"),
                    ]],
                ),
            ]],
        ),
    ]);
    let (out, output) = run(&bytes);
    let days = out.meta.date_shift_days;
    assert_eq!(text(&output, tags::DATE_OF_LAST_CALIBRATION), Some(shifted("20190401", days)), "not the true date");
    assert_eq!(text(&output, tags::TIME_OF_LAST_CALIBRATION).as_deref(), Some("083000"), "whole days: same time");
    assert_eq!(text(&output, tags::DATE_OF_MANUFACTURE), Some(shifted("20150101", days)));
    assert_eq!(
        text(&output, tags::ACQUISITION_DATE_TIME),
        Some(format!("{}101500.25", shifted("20190407", days))),
        "the time-zone suffix goes with Timezone Offset From UTC"
    );
    assert!(output.get(tags::TIMEZONE_OFFSET_FROM_UTC).is_none());
    let context = &items(&output, tags::ACQUISITION_CONTEXT_SEQUENCE)[0];
    assert_eq!(text(context, tags::DATE_OF_LAST_CALIBRATION), Some(shifted("20190402", days)));
    let detector = text(context, tags::DATE_OF_LAST_DETECTOR_CALIBRATION).unwrap_or_default();
    assert!(detector.is_empty() || detector == shifted("20190403", days), "{detector}");
    let code = &items(context, tags::CONCEPT_NAME_CODE_SEQUENCE)[0];
    assert_eq!(text(code, tags::CONTEXT_GROUP_VERSION), Some(shifted("20040112", days)), "C in the table: shifted");
    // No true date anywhere in the output.
    let all = out.to_vec();
    for date in ["20190401", "20190402", "20190403", "20150101"] {
        assert!(!all.windows(8).any(|w| w == date.as_bytes()), "{date} survives");
    }
}

#[test]
fn station_names_overlays_and_attributes_the_profile_does_not_know_do_not_survive() {
    let bytes = ct_with([
        el(tags::PERFORMED_STATION_NAME, VR::SH, "CNRY-PSTATION"),
        seq(
            tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
            vec![vec![
                el(tags::SCHEDULED_STATION_NAME, VR::SH, "CNRY-SSTATION"),
                el(tags::SCHEDULED_PROCEDURE_STEP_START_DATE, VR::DA, "20190406"),
            ]],
        ),
        DataElement::new(Tag(0x6000, 0x0010), VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(Tag(0x6000, 0x0011), VR::US, PrimitiveValue::from(16_u16)),
        el(Tag(0x6000, 0x0022), VR::LO, "CNRY overlay of Dr Who"),
        DataElement::new(Tag(0x6000, 0x3000), VR::OW, PrimitiveValue::U8(vec![0; 32].into())),
        el(Tag(0x0040, 0xEEEE), VR::LO, "CNRY-UNKNOWN"),
        el(tags::FRAME_COMMENTS, VR::LT, "CNRY frame comment"),
    ]);
    let (out, output) = run(&bytes);
    let leaks = canaries_in(&out.to_vec());
    assert!(leaks.is_empty(), "{leaks:?}");
    assert!(output.iter().all(|e| !(0x6000..=0x601E).contains(&e.tag().group())), "the overlay goes whole");
    assert!(output.get(Tag(0x0040, 0xEEEE)).is_none(), "unknown to the dictionary: removed");
    assert!(output.get(tags::STATION_NAME).is_none_or(|e| e.to_str().unwrap().trim() != "CNRY-STATION"));
}

/// The declared method is what was done: each declared option's effect is in
/// the output, and the option not applied (Retain Device Identity) is neither
/// declared nor done.
#[test]
fn the_declared_de_identification_method_is_what_was_done() {
    let bytes = ct_with([el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "CNRY-SERIAL")]);
    let (out, output) = run(&bytes);
    let codes: Vec<String> = items(&output, tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .iter()
        .map(|item| text(item, tags::CODE_VALUE).unwrap())
        .collect();
    assert_eq!(codes, ["113100", "113108", "113107", "113105", "113104"]);
    // 113108 Retain Patient Characteristics: sex and size kept.
    assert_eq!(text(&output, tags::PATIENT_SEX).as_deref(), Some("F"));
    // 113107 Modified Dates: shifted, not removed.
    assert_eq!(text(&output, tags::STUDY_DATE), Some(shifted("20190406", out.meta.date_shift_days)));
    // 113105 Clean Descriptors: cleaned, not removed.
    assert_eq!(text(&output, tags::STUDY_DESCRIPTION).as_deref(), Some("CT CHEST"));
    // Not 113109: the station name and the serial number do not survive.
    for tag in [tags::STATION_NAME, tags::DEVICE_SERIAL_NUMBER] {
        let value = text(&output, tag).unwrap_or_default();
        assert!(!value.contains("CNRY"), "{tag}: {value}");
    }
    // One value per step, none cut.
    let methods: Vec<String> = output
        .get(tags::DEIDENTIFICATION_METHOD)
        .unwrap()
        .to_multi_str()
        .unwrap()
        .iter()
        .map(|v| v.trim().to_owned())
        .collect();
    assert_eq!(methods, custodian::deid::dicom::method_values());
    assert!(methods.iter().all(|m| m.len() <= 64), "{methods:?}");
}

#[test]
fn an_earlier_de_identification_method_is_kept_and_custodians_appended() {
    let bytes = ct_with([
        el(tags::DEIDENTIFICATION_METHOD, VR::LO, "dicognito 0.17"),
        seq(
            tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
            vec![vec![
                el(tags::CODE_VALUE, VR::SH, "113100"),
                el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, "DCM"),
                el(tags::CODE_MEANING, VR::LO, "Basic Application Confidentiality Profile"),
            ]],
        ),
    ]);
    let (_, output) = run(&bytes);
    let methods = output.get(tags::DEIDENTIFICATION_METHOD).unwrap().to_multi_str().unwrap().to_vec();
    assert_eq!(methods[0].trim(), "dicognito 0.17");
    assert_eq!(methods.len(), 1 + custodian::deid::dicom::method_values().len());
    assert_eq!(
        items(&output, tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE).len(),
        1 + 5,
        "the sender's item, then ours"
    );
}

#[test]
fn type_1_attributes_get_a_dummy_instead_of_an_empty_value() {
    // rtplan.dcm: RT Plan Label (300A,0002) is Type 1. "Plan1" says nothing of
    // anyone and stays; a label of initials and a date is replaced, not emptied.
    let (_, output) = run(&fixture("rtplan.dcm"));
    assert_eq!(text(&output, tags::RT_PLAN_LABEL).as_deref(), Some("Plan1"));
    let named = amend(&fixture("rtplan.dcm"), [el(tags::RT_PLAN_LABEL, VR::SH, "JS 20190401")]);
    let (_, output) = run(&named);
    let label = text(&output, tags::RT_PLAN_LABEL).unwrap_or_default();
    assert!(!label.is_empty() && !label.contains("JS") && !label.contains("2019"), "{label:?}");
    // A TEXT content item's value (Type 1) likewise.
    let sr = amend(&fixture("test-SR.dcm"), [el(tags::PATIENT_ID, VR::LO, "SR-0001")]);
    let (_, output) = run(&sr);
    let mut empty_text = 0;
    let mut stack = items(&output, tags::CONTENT_SEQUENCE);
    while let Some(item) = stack.pop() {
        if text(&item, tags::VALUE_TYPE).as_deref() == Some("TEXT")
            && text(&item, tags::TEXT_VALUE).unwrap_or_default().is_empty()
        {
            empty_text += 1;
        }
        stack.extend(items(&item, tags::CONTENT_SEQUENCE));
    }
    assert_eq!(empty_text, 0);
}

#[test]
fn structure_names_keep_their_meaning_and_laterality() {
    let names = ["GTV", "PTV_70", "SpinalCord", "Parotid_R", "Lung_L", "Non-ossifying fibroma of distal tibia"];
    let rois: Vec<Vec<InMemElement>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            vec![
                DataElement::new(tags::ROI_NUMBER, VR::IS, PrimitiveValue::from((i + 1).to_string())),
                el(tags::ROI_NAME, VR::LO, name),
            ]
        })
        .collect();
    let bytes = ct_with([seq(tags::STRUCTURE_SET_ROI_SEQUENCE, rois)]);
    let (_, output) = run(&bytes);
    let kept: Vec<String> =
        items(&output, tags::STRUCTURE_SET_ROI_SEQUENCE).iter().map(|i| text(i, tags::ROI_NAME).unwrap()).collect();
    assert_eq!(kept, names);
}

#[test]
fn a_verified_report_keeps_its_verifying_observers_with_dummy_values() {
    let sr = amend(&fixture("test-SR.dcm"), [el(tags::PATIENT_ID, VR::LO, "SR-0001")]);
    let (out, output) = run(&sr);
    let observers = items(&output, tags::VERIFYING_OBSERVER_SEQUENCE);
    assert_eq!(observers.len(), 2, "VERIFIED needs its observers");
    for observer in &observers {
        let name = text(observer, tags::VERIFYING_OBSERVER_NAME).unwrap_or_default();
        assert!(!name.is_empty() && !name.contains("Observer"), "{name}");
        let organization = text(observer, tags::VERIFYING_ORGANIZATION).unwrap_or_default();
        assert!(!organization.is_empty() && !organization.contains("OFFIS"), "{organization}");
        let when = text(observer, tags::VERIFICATION_DATE_TIME).unwrap();
        assert_eq!(when, format!("{}184746", shifted("20010213", out.meta.date_shift_days)));
    }
}

#[test]
fn derived_descriptions_say_something_true_or_nothing() {
    let bytes = ct_with([
        el(tags::DERIVATION_DESCRIPTION, VR::ST, "Test Image with 10 rows of (255,0,0)"),
        el(tags::IMAGE_COMMENTS, VR::LT, "Uncompressed"),
    ]);
    let (_, output) = run(&bytes);
    assert_eq!(text(&output, tags::DERIVATION_DESCRIPTION).unwrap_or_default(), "");
    assert_eq!(text(&output, tags::IMAGE_COMMENTS).as_deref(), Some("Uncompressed"));
}

#[test]
fn the_issuer_of_patient_id_scopes_the_subject_and_no_issuer_keeps_the_old_pseudonym() {
    let key = key();
    let with_issuer = |issuer: &str| ct_with([el(tags::ISSUER_OF_PATIENT_ID, VR::LO, issuer)]);
    let (a, _) = run(&with_issuer("HOSP-A"));
    let (b, _) = run(&with_issuer("HOSP-B"));
    let (none, _) = run(&with_issuer(""));
    assert_ne!(a.meta.subject, b.meta.subject, "patient 00001 of two issuers is two subjects");
    assert_eq!(a.meta.subject, key.subject_issued(SITE, "CNRY-MRN-00001", Some("HOSP-A")));
    assert_eq!(none.meta.subject, key.subject(SITE, "CNRY-MRN-00001"), "no issuer: the subject of before");
}

#[test]
fn age_is_whole_and_implausible_ages_are_unknown() {
    let (out, output) = run(&ct_with([]));
    assert_eq!(out.meta.age_years, Some(65.0), "born 1953-07-04, studied 2019-04-06: 65 completed years");
    assert_eq!(text(&output, tags::PATIENT_AGE).as_deref(), Some("065Y"));

    let (ancient, output) = run(&ct_with([el(tags::PATIENT_BIRTH_DATE, VR::DA, "11111111")]));
    assert_eq!(ancient.meta.age_years, None, "907 years is an error, not an age");
    assert!(text(&output, tags::PATIENT_AGE).is_none_or(|a| a.is_empty()));

    let (unborn, _) = run(&ct_with([el(tags::PATIENT_BIRTH_DATE, VR::DA, "20200101")]));
    assert_eq!(unborn.meta.age_years, None, "born after the study");

    let (infant, output) = run(&ct_with([el(tags::PATIENT_BIRTH_DATE, VR::DA, "20190301")]));
    assert_eq!(infant.meta.age_years, Some(0.0));
    assert_eq!(text(&output, tags::PATIENT_AGE).as_deref(), Some("005W"), "36 days: weeks");

    // Without a birth date, the file's own Patient's Age, in whole years.
    let file_age = |age: &str| {
        run(&ct_with([el(tags::PATIENT_BIRTH_DATE, VR::DA, ""), el(tags::PATIENT_AGE, VR::AS, age)])).0.meta.age_years
    };
    assert_eq!(file_age("018M"), Some(1.0));
    assert_eq!(file_age("042Y"), Some(42.0));
    assert_eq!(file_age("894Y"), None);
}

#[test]
fn an_instance_without_a_patient_id_gets_a_subject_of_its_study_unless_configured_to_reject() {
    let key = key();
    let mut first = Instance::ct(1, 1, 1, 1);
    first.patient_id = String::new();
    let mut second = first.clone();
    second.instance = 2;
    let mut other_study = first.clone();
    other_study.study = 2;
    let (a, output) = run(&first.to_bytes());
    let (b, _) = run(&second.to_bytes());
    let (c, _) = run(&other_study.to_bytes());
    assert_eq!(a.meta.subject, key.unidentified_subject(SITE, &first.study_uid()));
    assert_eq!(a.meta.subject, b.meta.subject, "one study, one subject");
    assert_ne!(a.meta.subject, c.meta.subject, "two studies are never joined into one person");
    assert_ne!(a.meta.subject, key.subject(SITE, ""), "not the pseudonym of an empty ID");
    assert_eq!(text(&output, tags::PATIENT_ID), Some(a.meta.subject.clone()));

    let error = rejected(&first.to_bytes(), MissingPatientId::Reject);
    assert_eq!(error.code, "missing-attribute");
    assert!(error.message.contains("Patient ID (0010,0020)"), "{}", error.message);
}

/// Explicit VR little endian bytes of one element with a 4-byte length.
fn long_element(tag: Tag, vr: [u8; 2], len: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(tag.group().to_le_bytes());
    out.extend(tag.element().to_le_bytes());
    out.extend(vr);
    out.extend([0, 0]);
    out.extend(len.to_le_bytes());
    out.extend(value);
    out
}

/// An implicit VR element.
fn implicit(tag: Tag, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(tag.group().to_le_bytes());
    out.extend(tag.element().to_le_bytes());
    out.extend(u32::try_from(value.len()).unwrap().to_le_bytes());
    out.extend(value);
    out
}

#[test]
fn a_sequence_sent_as_un_in_implicit_vr_is_read_and_profiled_as_dcmtk_reads_it() {
    // Request Attributes Sequence sent as UN, its items in implicit VR (PS3.5
    // 6.2.2, CP-246), with undefined and with defined length.
    let base = Instance::ct(1, 1, 1, 1).to_bytes();
    let mut file = open(&base);
    let _ = file.take_element(tags::PIXEL_DATA);
    let mut prefix = Vec::new();
    file.write_all(&mut prefix).unwrap();
    let mut item = implicit(tags::REQUESTED_PROCEDURE_ID, b"CNRY-RPID ");
    item.extend(implicit(tags::SCHEDULED_PROCEDURE_STEP_START_DATE, b"20190405"));
    let mut defined = vec![0xFE, 0xFF, 0x00, 0xE0];
    defined.extend(u32::try_from(item.len()).unwrap().to_le_bytes());
    defined.extend(&item);
    let mut undefined = defined.clone();
    undefined.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    for (name, len, value) in
        [("undefined", 0xFFFF_FFFF, &undefined), ("defined", u32::try_from(defined.len()).unwrap(), &defined)]
    {
        let mut bytes = prefix.clone();
        bytes.extend(long_element(tags::REQUEST_ATTRIBUTES_SEQUENCE, *b"UN", len, value));
        let (out, output) = run(&bytes);
        assert!(canaries_in(&out.to_vec()).is_empty(), "{name}: {:?}", canaries_in(&out.to_vec()));
        let requests = items(&output, tags::REQUEST_ATTRIBUTES_SEQUENCE);
        assert_eq!(requests.len(), 1, "{name} length: read as a sequence, not dropped");
        assert_eq!(
            text(&requests[0], tags::SCHEDULED_PROCEDURE_STEP_START_DATE),
            Some(shifted("20190405", out.meta.date_shift_days)),
            "{name} length"
        );
    }
}

#[test]
fn a_meta_group_without_its_group_length_is_read_and_a_missing_transfer_syntax_is_named() {
    let bytes = Instance::ct(1, 1, 1, 1).to_bytes();
    // Drop (0002,0000) UL 4: 12 bytes after the preamble and `DICM`.
    assert_eq!(&bytes[132..136], &[0x02, 0x00, 0x00, 0x00]);
    let mut without = bytes[..132].to_vec();
    without.extend(&bytes[144..]);
    let (out, _) = run(&without);
    assert_eq!(out.meta.sop_uid, run(&bytes).0.meta.sop_uid);

    let error = rejected(&fixture("meta_missing_tsyntax.dcm"), MissingPatientId::Fallback);
    assert_eq!(error.code, "missing-attribute");
    assert!(error.message.contains("Transfer Syntax UID (0002,0010)"), "{}", error.message);
}
