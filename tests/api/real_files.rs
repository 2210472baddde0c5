//! The de-identification engine on real DICOM files nobody here wrote: the
//! sample files shipped in pydicom 3.0.2's wheel (see
//! `fixtures/pydicom/README.md` for their origin and licence).
//!
//! Every good file must de-identify, re-open, say Patient Identity Removed,
//! carry its pixel data through unchanged, keep its references under the
//! registry's UIDs, and hold none of its original identifying values anywhere
//! in the output bytes. Broken files must be rejected with a stable code and
//! a message that quotes nothing of the file.
//!
//! `chrH31.dcm` comes from pydicom's `data/charset_files/`, all others from
//! `data/test_files/`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use custodian::deid::{DeidSettings, Deidentified, MissingPatientId, RegistryKey, Rejection};
use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::helpers::deidentify_slice;

/// Every fixture, so that none sits in the directory untested.
const FIXTURES: &[&str] = &[
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "JPGExtended.dcm",
    "JPEG2000.dcm",
    "examples_jpeg2k.dcm",
    "ExplVR_BigEnd.dcm",
    "liver_1frame.dcm",
    "rtstruct.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "image_dfl.dcm",
    "badVR.dcm",
    "rtdose_rle_1frame.dcm",
    "chrH31.dcm",
    "ExplVR_LitEndNoMeta.dcm",
    "MR_truncated.dcm",
    "rtplan_truncated.dcm",
    "meta_missing_tsyntax.dcm",
    "SC_rgb_jpeg.dcm",
];

const SITE: &str = "pydicom-site";
const STANDARD_UID_ROOT: &str = "1.2.840.10008.";

fn key() -> RegistryKey {
    RegistryKey::new(b"registry-key-for-real-file-tests-0123456789").unwrap()
}

fn settings(key: &RegistryKey) -> DeidSettings<'_> {
    crate::helpers::deid_settings(key, SITE)
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/pydicom")
}

fn fixture(name: &str) -> Vec<u8> {
    assert!(FIXTURES.contains(&name), "{name} is listed in FIXTURES");
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Opens a Part-10 file (128-byte preamble, `DICM`, meta group, data set).
fn open(bytes: &[u8]) -> DefaultDicomObject {
    OpenFileOptions::new().from_reader(&bytes[128..]).expect("the file parses")
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let element = obj.get(tag)?;
    let value = values(element).join("\\");
    (!value.is_empty()).then_some(value)
}

/// Calls `f` on every element of `obj`, depth first, items of sequences included.
fn walk<'a>(obj: &'a InMemDicomObject, f: &mut impl FnMut(&'a InMemElement)) {
    for element in obj {
        f(element);
        if let Value::Sequence(seq) = element.value() {
            for item in seq.items() {
                walk(item, f);
            }
        }
    }
}

/// The single values of an element (multi-valued text split), trimmed, empty ones dropped.
fn values(element: &InMemElement) -> Vec<String> {
    let trimmed = |v: &str| v.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_owned();
    match element.vr() {
        VR::SQ => Vec::new(),
        // Converters (gdcmconv) write standard attributes as UN in explicit VR;
        // dicom-object then holds the value's bytes, which are the text.
        VR::UN => {
            let Ok(bytes) = element.to_bytes() else { return Vec::new() };
            String::from_utf8_lossy(&bytes).split('\\').map(trimmed).filter(|v| !v.is_empty()).collect()
        }
        _ => {
            let Ok(all) = element.value().to_multi_str() else { return Vec::new() };
            all.iter().map(|v| trimmed(v)).filter(|v| !v.is_empty()).collect()
        }
    }
}

/// Whether a value sent as UN is a UID: its attribute is one by the dictionary
/// (numbers such as Image Position "189.43125" have a UID's shape but are not).
fn un_uid(tag: dicom_core::Tag, value: &str) -> bool {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    let by_dictionary = dicom_dictionary_std::StandardDataDictionary.by_tag(tag).map(DataDictionaryEntry::vr);
    matches!(by_dictionary, Some(VirtualVr::Exact(VR::UI)))
        && value.contains('.')
        && value.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Text VRs: the values a reader decodes with the file's character set.
const TEXT_VRS: &[VR] = &[
    VR::AE,
    VR::AS,
    VR::CS,
    VR::DA,
    VR::DS,
    VR::DT,
    VR::IS,
    VR::LO,
    VR::LT,
    VR::PN,
    VR::SH,
    VR::ST,
    VR::TM,
    VR::UC,
    VR::UI,
    VR::UR,
    VR::UT,
];

/// Every text value of `obj`, decoded, at any depth.
fn decoded_texts(obj: &InMemDicomObject) -> Vec<String> {
    let mut found = Vec::new();
    walk(obj, &mut |e| {
        if TEXT_VRS.contains(&e.vr()) {
            found.extend(values(e));
        }
    });
    found
}

/// Every value of `tag` anywhere in `obj`, in document order.
fn all_values(obj: &InMemDicomObject, tag: Tag) -> Vec<String> {
    let mut found = Vec::new();
    walk(obj, &mut |e| {
        if e.tag() == tag {
            found.extend(values(e));
        }
    });
    found
}

/// Other Patient IDs (0010,1000): retired, so dicom-dictionary-std deprecates its
/// constant, but old files (and PS3.15) still have it.
const OTHER_PATIENT_IDS: Tag = Tag(0x0010, 0x1000);

/// Attributes whose values identify the patient, the institution or the device.
const IDENTIFYING: &[(Tag, &str)] = &[
    (tags::PATIENT_NAME, "PatientName"),
    (tags::PATIENT_ID, "PatientID"),
    (tags::PATIENT_BIRTH_DATE, "PatientBirthDate"),
    (OTHER_PATIENT_IDS, "OtherPatientIDs"),
    (tags::OTHER_PATIENT_NAMES, "OtherPatientNames"),
    (tags::INSTITUTION_NAME, "InstitutionName"),
    (tags::INSTITUTION_ADDRESS, "InstitutionAddress"),
    (tags::INSTITUTIONAL_DEPARTMENT_NAME, "InstitutionalDepartmentName"),
    (tags::REFERRING_PHYSICIAN_NAME, "ReferringPhysicianName"),
    (tags::OPERATORS_NAME, "OperatorsName"),
    (tags::ACCESSION_NUMBER, "AccessionNumber"),
    (tags::STATION_NAME, "StationName"),
    (tags::DEVICE_SERIAL_NUMBER, "DeviceSerialNumber"),
    (tags::STUDY_ID, "StudyID"),
];

/// Placeholders an earlier anonymiser left: they identify nobody, and the
/// engine may legitimately write the same words.
const GENERIC: &[&str] = &["ANONYMOUS", "ANONYMIZED", "ANONYMISED"];

/// One original value that must not survive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Needle {
    attribute: String,
    value: String,
}

/// The file's identifying values, read before de-identification: the
/// attributes of [`IDENTIFYING`] at any depth (person names also by
/// component), every UID (VR UI) at any depth except the standard's own
/// class and transfer-syntax UIDs, and what the sender wrote into the file
/// meta group.
fn identifiers(input: &DefaultDicomObject) -> BTreeSet<Needle> {
    let mut found = BTreeSet::new();
    let mut add = |attribute: &str, value: &str| {
        found.insert(Needle { attribute: attribute.to_owned(), value: value.to_owned() });
    };
    walk(input, &mut |e| {
        if let Some((_, name)) = IDENTIFYING.iter().find(|(t, _)| *t == e.tag()) {
            for value in values(e) {
                add(name, &value);
                // Person names by component ("Last^First^mid^pre": a surviving
                // family name is a leak on its own), whatever the VR says (UN).
                for component in value.split(['^', '=']) {
                    add(name, component.trim());
                }
            }
        } else if matches!(e.vr(), VR::UI | VR::UN) && e.tag() != tags::CODING_SCHEME_UID {
            // Coding Scheme UID names a terminology (DCMTK's private scheme in
            // the SRs), not a patient, study or device; PS3.15 keeps it.
            for value in values(e) {
                if !value.starts_with(STANDARD_UID_ROOT) && (e.vr() == VR::UI || un_uid(e.tag(), &value)) {
                    add(&format!("{} UI", e.tag()), &value);
                }
            }
        }
    });
    let meta = input.meta();
    add("ImplementationClassUID", meta.implementation_class_uid.trim_end_matches(['\0', ' ']));
    for (name, value) in [
        ("ImplementationVersionName", &meta.implementation_version_name),
        ("SourceApplicationEntityTitle", &meta.source_application_entity_title),
        ("SendingApplicationEntityTitle", &meta.sending_application_entity_title),
    ] {
        if let Some(value) = value {
            add(name, value.trim_end_matches(['\0', ' ']));
        }
    }

    // Values PS3.15 keeps in their own right (Manufacturer, model): when an
    // institution is called after its scanner's maker (MR_small: InstitutionName
    // "TOSHIBA", Manufacturer "TOSHIBA_MEC"), the kept Manufacturer is no leak.
    // That the Institution Name attribute itself is gone is checked on the
    // parsed output instead.
    let retained: Vec<String> =
        [tags::MANUFACTURER, tags::MANUFACTURER_MODEL_NAME].into_iter().filter_map(|t| text(input, t)).collect();
    found.retain(|n| {
        // Values under four characters (StudyID "1", AccessionNumber "1",
        // StudyID "S1", DeviceSerialNumber "0", reportsi-style UIDs "0") occur
        // by chance in any file: in numbers, remapped UIDs, pixel bytes.
        // Searching for them would prove nothing.
        n.value.chars().count() >= 4
            // Separators only ("^^^^", "----"): an empty name, nothing to find.
            && n.value.chars().any(char::is_alphanumeric)
            && !GENERIC.iter().any(|g| g.eq_ignore_ascii_case(&n.value))
            && !retained.iter().any(|r| r.to_ascii_uppercase().contains(&n.value.to_ascii_uppercase()))
    });
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The identifying values found in `bytes`, or in the decoded text values of
/// `decoded` (a name in ISO 2022 or Latin-1 is not its UTF-8 bytes).
fn leaks<'a>(needles: &'a BTreeSet<Needle>, bytes: &[u8], decoded: &[String]) -> Vec<&'a Needle> {
    needles
        .iter()
        .filter(|n| contains(bytes, n.value.as_bytes()) || decoded.iter().any(|t| t.contains(n.value.as_str())))
        .collect()
}

/// Pixel data as dicom-object gives it: native bytes, or the offset table and fragments.
#[derive(PartialEq, Eq)]
enum Pixels {
    Absent,
    Native(Vec<u8>),
    Encapsulated { offset_table: Vec<u32>, fragments: Vec<Vec<u8>> },
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent => write!(f, "no pixel data"),
            Self::Native(bytes) => write!(f, "native pixel data, {} bytes", bytes.len()),
            Self::Encapsulated { offset_table, fragments } => write!(
                f,
                "encapsulated pixel data, {} offsets, fragments of {:?} bytes",
                offset_table.len(),
                fragments.iter().map(Vec::len).collect::<Vec<_>>()
            ),
        }
    }
}

fn pixels(obj: &InMemDicomObject) -> Pixels {
    let Some(element) = obj.get(tags::PIXEL_DATA) else { return Pixels::Absent };
    match element.value() {
        Value::PixelSequence(seq) => {
            Pixels::Encapsulated { offset_table: seq.offset_table().to_vec(), fragments: seq.fragments().to_vec() }
        }
        Value::Primitive(value) => Pixels::Native(value.to_bytes().into_owned()),
        Value::Sequence(_) => panic!("Pixel Data is a sequence"),
    }
}

/// Whether PS3.15's burned-in text concern applies: ultrasound and secondary
/// captures carry text in their pixels unless Burned In Annotation says NO.
fn burned_in_text_expected(input: &InMemDicomObject, sop_class: &str) -> bool {
    match text(input, tags::BURNED_IN_ANNOTATION).map(|v| v.to_ascii_uppercase()).as_deref() {
        Some("YES") => true,
        Some("NO") => false,
        _ => {
            sop_class.starts_with("1.2.840.10008.5.1.4.1.1.7")
                || sop_class.starts_with("1.2.840.10008.5.1.4.1.1.6.")
                || sop_class.starts_with("1.2.840.10008.5.1.4.1.1.3.1")
                || text(input, tags::MODALITY).as_deref() == Some("US")
        }
    }
}

/// A file that de-identified, with what was checked about it.
struct Checked {
    input: DefaultDicomObject,
    out: Deidentified,
    output: DefaultDicomObject,
}

/// De-identifies a good file and checks what every good file must satisfy.
fn de_identifies(name: &str, bytes: &[u8]) -> Checked {
    let key = key();
    // Sequences sent as UN are read as sequences (CP-246), here as by the engine,
    // so that their values are looked for too.
    let layout = custodian::deid::guard::check_declared_lengths(bytes).unwrap_or_default();
    let readable = custodian::deid::guard::rewrite_un_sequences(bytes, &layout.un_sequences);
    let input = open(readable.as_deref().filter(|_| !layout.un_sequences.is_empty()).unwrap_or(bytes));
    let needles = identifiers(&input);
    assert!(!needles.is_empty(), "{name}: some identifying values to look for");
    // The byte search is meaningful: every ASCII value is found in the input's own bytes.
    let unseen: Vec<&Needle> =
        needles.iter().filter(|n| n.value.is_ascii() && !contains(bytes, n.value.as_bytes())).collect();
    assert!(unseen.is_empty(), "{name}: values not found in the input: {unseen:#?}");

    let out = deidentify_slice(bytes, &settings(&key))
        .unwrap_or_else(|e| panic!("{name}: rejected with `{}`: {}", e.code, e.message));
    assert!(out.to_vec().len() > 132 && &out.to_vec()[128..132] == b"DICM", "{name}: a Part-10 file with a preamble");
    let output = OpenFileOptions::new()
        .from_reader(&out.to_vec()[128..])
        .unwrap_or_else(|e| panic!("{name}: the de-identified file does not parse: {e}"));

    assert_eq!(text(&output, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"), "{name}");
    let ts = |f: &DefaultDicomObject| f.meta().transfer_syntax().trim_end_matches(['\0', ' ']).to_owned();
    assert_eq!(ts(&output), ts(&input), "{name}: the transfer syntax is kept");
    assert_eq!(out.meta.transfer_syntax, ts(&input), "{name}");

    let before = pixels(&input);
    let after = pixels(&output);
    assert!(before == after, "{name}: pixel data changed: {before:?} became {after:?}");

    let found = leaks(&needles, &out.to_vec(), &decoded_texts(&output));
    assert!(found.is_empty(), "{name}: original values survive in the output: {found:#?}");
    let meta_debug = format!("{:?}", out.meta);
    let found = leaks(&needles, meta_debug.as_bytes(), &[]);
    assert!(found.is_empty(), "{name}: original values survive in the catalog metadata: {found:#?}");

    // The identifying attributes themselves: gone, empty or a placeholder, at
    // any depth (Patient Name and ID hold the subject, checked below).
    for (tag, attribute) in IDENTIFYING.iter().filter(|(t, _)| ![tags::PATIENT_NAME, tags::PATIENT_ID].contains(t)) {
        let kept: Vec<String> = all_values(&output, *tag)
            .into_iter()
            .filter(|v| !GENERIC.iter().any(|g| g.eq_ignore_ascii_case(v)))
            .collect();
        assert!(kept.is_empty(), "{name}: {attribute} keeps {kept:?}");
    }

    // Identity attributes: replaced by the registry's UIDs, consistently.
    for (tag, catalog) in [
        (tags::SOP_INSTANCE_UID, &out.meta.sop_uid),
        (tags::STUDY_INSTANCE_UID, &out.meta.study_uid),
        (tags::SERIES_INSTANCE_UID, &out.meta.series_uid),
    ] {
        let original = text(&input, tag).unwrap();
        assert_eq!(text(&output, tag).as_deref(), Some(key.uid(&original).as_str()), "{name}: {tag}");
        assert_eq!(catalog, &key.uid(&original), "{name}: {tag} in the catalog");
    }
    assert_eq!(output.meta().media_storage_sop_instance_uid().trim_end_matches('\0'), out.meta.sop_uid, "{name}");
    let subject = match text(&input, tags::PATIENT_ID) {
        Some(local_id) => key.subject_issued(SITE, &local_id, text(&input, tags::ISSUER_OF_PATIENT_ID).as_deref()),
        None => key.unidentified_subject(SITE, &text(&input, tags::STUDY_INSTANCE_UID).unwrap()),
    };
    assert_eq!(out.meta.subject, subject, "{name}");
    assert_eq!(text(&output, tags::PATIENT_ID).as_deref(), Some(out.meta.subject.as_str()), "{name}");
    assert_eq!(text(&output, tags::PATIENT_NAME).as_deref(), Some(out.meta.subject.as_str()), "{name}");

    // References that stay are remapped, and the catalog records exactly those.
    let referenced_before: BTreeSet<String> =
        all_values(&input, tags::REFERENCED_SOP_INSTANCE_UID).iter().map(|u| key.uid(u)).collect();
    let mut referenced_after = all_values(&output, tags::REFERENCED_SOP_INSTANCE_UID);
    assert!(
        referenced_after.iter().all(|u| referenced_before.contains(u)),
        "{name}: references not remapped from the input's: {referenced_after:?}"
    );
    let mut catalogued = out.meta.referenced_sop_uids.clone();
    referenced_after.sort();
    catalogued.sort();
    assert_eq!(catalogued, referenced_after, "{name}: the catalog lists the file's references");

    // No private attribute survives without a safe-private declaration.
    let mut private = Vec::new();
    walk(&output, &mut |e| {
        if e.tag().group() % 2 == 1 {
            private.push(e.tag());
        }
    });
    assert!(private.is_empty(), "{name}: private attributes survive: {private:?}");

    let sop_class = input.meta().media_storage_sop_class_uid().trim_end_matches(['\0', ' ']).to_owned();
    if burned_in_text_expected(&input, &sop_class) {
        assert!(out.quarantine.is_some(), "{name}: ultrasound and secondary captures wait for a steward");
    } else {
        assert!(out.quarantine.is_none(), "{name}: quarantined for {:?}", out.quarantine);
    }
    Checked { input, out, output }
}

/// Every printable ASCII run of four or more characters in the file: all its
/// textual values, whether or not the file can be parsed.
fn printable_runs(bytes: &[u8]) -> BTreeSet<String> {
    bytes
        .split(|b| !(b.is_ascii_graphic() || *b == b' '))
        .filter_map(|run| std::str::from_utf8(run).ok())
        .map(str::trim)
        .filter(|run| run.len() >= 4 && *run != "DICM")
        .map(str::to_owned)
        .collect()
}

/// Rejects `bytes` and checks the code and that the message quotes nothing of the file.
fn rejected(name: &str, bytes: &[u8]) -> Rejection {
    rejected_with(name, bytes, MissingPatientId::Fallback)
}

fn rejected_with(name: &str, bytes: &[u8], missing_patient_id: MissingPatientId) -> Rejection {
    let key = key();
    let error = match deidentify_slice(bytes, &DeidSettings { missing_patient_id, ..settings(&key) }) {
        Ok(out) => panic!("{name}: accepted ({} bytes out), expected a rejection", out.to_vec().len()),
        Err(error) => error,
    };
    assert!(
        ["not-dicom", "malformed-dicom", "missing-attribute", "unsupported-transfer-syntax"].contains(&error.code),
        "{name}: unexpected code `{}`",
        error.code
    );
    assert_eq!(error.to_string(), error.message, "{name}");
    let quoted: Vec<String> =
        printable_runs(bytes).into_iter().filter(|run| error.message.contains(run.as_str())).collect();
    assert!(quoted.is_empty(), "{name}: the message `{}` quotes the file: {quoted:?}", error.message);
    error
}

/// The file with `elements` put into its data set, written again as Part-10.
fn with_elements(bytes: &[u8], elements: impl IntoIterator<Item = InMemElement>) -> Vec<u8> {
    let mut file = open(bytes);
    for element in elements {
        file.put(element);
    }
    let mut out = Vec::new();
    file.write_all(&mut out).expect("the amended file encodes");
    out
}

fn lo(tag: Tag, value: &str) -> InMemElement {
    DataElement::new(tag, VR::LO, PrimitiveValue::from(value))
}

fn cs(tag: Tag, value: &str) -> InMemElement {
    DataElement::new(tag, VR::CS, PrimitiveValue::from(value))
}

#[test]
fn every_fixture_in_the_directory_is_tested_and_documented() {
    let readme = std::fs::read_to_string(fixture_dir().join("README.md")).unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "README.md")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|n| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    for name in FIXTURES {
        assert!(readme.contains(&format!("`{name}`")), "{name} is described in the README");
    }
    let total: u64 = FIXTURES.iter().map(|n| std::fs::metadata(fixture_dir().join(n)).unwrap().len()).sum();
    assert!(total < 1_500_000, "the fixtures stay small: {total} bytes");
}

#[test]
fn a_real_ct_with_vendor_private_tags_de_identifies_completely() {
    let checked = de_identifies("CT_small.dcm", &fixture("CT_small.dcm"));
    // The input carries over a hundred GE private elements and an Other Patient IDs Sequence
    // with two further patient IDs; neither survives (the IDs are needles too).
    assert!(checked.input.iter().filter(|e| e.tag().group() % 2 == 1).count() > 100);
    assert!(checked.input.get(tags::OTHER_PATIENT_I_DS_SEQUENCE).is_some());
    assert!(checked.output.get(tags::OTHER_PATIENT_I_DS_SEQUENCE).is_none());
    assert_eq!(text(&checked.output, tags::MODALITY).as_deref(), Some("CT"));
    assert_eq!(checked.out.meta.rows, Some(128));
    let frame_of_reference = text(&checked.input, tags::FRAME_OF_REFERENCE_UID).unwrap();
    assert_eq!(
        text(&checked.output, tags::FRAME_OF_REFERENCE_UID),
        Some(key().uid(&frame_of_reference)),
        "the frame of reference is remapped with the same key"
    );
}

#[test]
fn the_same_real_mr_de_identifies_alike_in_four_transfer_syntaxes() {
    // One acquisition saved by pydicom's authors as explicit and implicit VR
    // little endian, explicit VR big endian (retired, still sent by old
    // modalities) and RLE lossless.
    let variants = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"];
    let checked: Vec<Checked> = variants.iter().map(|name| de_identifies(name, &fixture(name))).collect();
    let first = &checked[0].out.meta;
    for (name, c) in variants.iter().zip(&checked).skip(1) {
        assert_eq!(c.out.meta.subject, first.subject, "{name}");
        assert_eq!(c.out.meta.date_shift_days, first.date_shift_days, "{name}");
        assert_eq!(c.out.meta.study_uid, first.study_uid, "{name}");
        assert_eq!(c.out.meta.series_uid, first.series_uid, "{name}");
        assert_eq!(c.out.meta.sop_uid, first.sop_uid, "{name}");
        assert_eq!(c.out.meta.study_date, first.study_date, "{name}");
        assert_eq!(text(&c.output, tags::MODALITY).as_deref(), Some("MR"), "{name}");
    }
    let ts: Vec<&str> = checked.iter().map(|c| c.out.meta.transfer_syntax.as_str()).collect();
    assert_eq!(ts, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5"]);
    assert!(matches!(pixels(&checked[3].output), Pixels::Encapsulated { .. }), "RLE stays encapsulated");
}

#[test]
fn jpeg_and_jpeg_2000_secondary_captures_keep_their_fragments_and_wait_for_a_steward() {
    // NM images stored under the Secondary Capture SOP class, JPEG extended
    // (12-bit) and JPEG 2000; both from one study, with vendor private tags
    // (a private UID among them) and a Referenced Image Sequence.
    let jpeg = de_identifies("JPGExtended.dcm", &fixture("JPGExtended.dcm"));
    let j2k = de_identifies("JPEG2000.dcm", &fixture("JPEG2000.dcm"));
    for (name, c) in [("JPGExtended.dcm", &jpeg), ("JPEG2000.dcm", &j2k)] {
        assert!(matches!(pixels(&c.output), Pixels::Encapsulated { .. }), "{name}");
        assert_eq!(c.out.quarantine.as_ref().map(|q| q.code), Some("burned-in-text-likely"), "{name}");
        assert!(!c.out.meta.referenced_sop_uids.is_empty(), "{name}: the referenced image is recorded");
    }
    assert_eq!(jpeg.out.meta.study_uid, j2k.out.meta.study_uid, "one study, one registry study UID");
    assert_eq!(jpeg.out.meta.subject, j2k.out.meta.subject);
}

#[test]
fn a_real_ultrasound_is_quarantined_unless_it_declares_no_burned_in_text() {
    // US1_J2KR from the NEMA WG04 set: an RGB ultrasound, JPEG 2000 lossless,
    // with no Burned In Annotation (0028,0301).
    let bytes = fixture("examples_jpeg2k.dcm");
    let checked = de_identifies("examples_jpeg2k.dcm", &bytes);
    assert_eq!(checked.out.quarantine.map(|q| q.code), Some("burned-in-text-likely"));
    assert_eq!(text(&checked.output, tags::MODALITY).as_deref(), Some("US"));

    // The same file, declared free of burned-in text by its sender, is released.
    let declared = with_elements(&bytes, [cs(tags::BURNED_IN_ANNOTATION, "NO")]);
    let released = de_identifies("examples_jpeg2k.dcm + BurnedInAnnotation NO", &declared);
    assert!(released.out.quarantine.is_none());
    // And declared with burned-in text, it is held for that reason.
    let flagged = with_elements(&bytes, [cs(tags::BURNED_IN_ANNOTATION, "YES")]);
    let held = de_identifies("examples_jpeg2k.dcm + BurnedInAnnotation YES", &flagged);
    assert_eq!(held.out.quarantine.map(|q| q.code), Some("burned-in-annotation"));
}

#[test]
fn a_big_endian_ultrasound_without_a_patient_id_gets_a_subject_of_its_study_and_with_one_is_quarantined() {
    // US-RGB-8-epicard, downsized, explicit VR big endian. It has no Patient ID
    // (0010,0020) at all (Type 2: the element must be present): by default it
    // becomes a subject of its own study; configured to, the engine refuses it.
    let bytes = fixture("ExplVR_BigEnd.dcm");
    let fallback = de_identifies("ExplVR_BigEnd.dcm", &bytes);
    assert_eq!(fallback.out.meta.transfer_syntax, "1.2.840.10008.1.2.2");
    let error = rejected_with("ExplVR_BigEnd.dcm", &bytes, MissingPatientId::Reject);
    assert_eq!(error.code, "missing-attribute");
    assert!(error.message.contains("(0010,0020)"), "{}", error.message);

    // Given a Patient ID, it de-identifies, stays big endian, and waits for a steward.
    let given = with_elements(&bytes, [lo(tags::PATIENT_ID, "EPICARD-0042")]);
    let checked = de_identifies("ExplVR_BigEnd.dcm + PatientID", &given);
    assert_eq!(checked.out.meta.transfer_syntax, "1.2.840.10008.1.2.2");
    assert_eq!(checked.out.quarantine.map(|q| q.code), Some("burned-in-text-likely"));
    assert!(matches!(pixels(&checked.output), Pixels::Native(ref p) if p.len() == 60 * 80 * 3));
}

#[test]
fn a_segmentation_keeps_its_source_image_references_under_remapped_uids() {
    // A DICOM SEG made by dcmqi (liver), single-frame version: it references
    // three CT images in its Referenced Series Sequence and per frame.
    let key = key();
    let checked = de_identifies("liver_1frame.dcm", &fixture("liver_1frame.dcm"));
    let before = all_values(&checked.input, tags::REFERENCED_SOP_INSTANCE_UID);
    assert_eq!(before.len(), 6);
    let expected: Vec<String> = before.iter().map(|u| key.uid(u)).collect();
    assert_eq!(all_values(&checked.output, tags::REFERENCED_SOP_INSTANCE_UID), expected);
    let mut catalogued = checked.out.meta.referenced_sop_uids.clone();
    catalogued.sort();
    let mut wanted = expected;
    wanted.sort();
    assert_eq!(catalogued, wanted);

    let Value::Sequence(series) = checked.output.get(tags::REFERENCED_SERIES_SEQUENCE).unwrap().value() else {
        panic!("Referenced Series Sequence is a sequence")
    };
    let Value::Sequence(original) = checked.input.get(tags::REFERENCED_SERIES_SEQUENCE).unwrap().value() else {
        panic!()
    };
    let source_series = text(&original.items()[0], tags::SERIES_INSTANCE_UID).unwrap();
    assert_eq!(text(&series.items()[0], tags::SERIES_INSTANCE_UID), Some(key.uid(&source_series)));
    assert!(checked.output.get(tags::SEGMENT_SEQUENCE).is_some(), "the segment definitions stay");
    assert_eq!(text(&checked.output, tags::MODALITY).as_deref(), Some("SEG"));
}

#[test]
fn an_rt_structure_set_without_a_file_meta_group_is_rejected_as_not_dicom() {
    // rtstruct.dcm is a bare implicit VR little endian data set: valid DICOM
    // content, but no preamble, no `DICM`, no file meta group, so not a Part-10
    // file; the engine accepts only Part-10 files.
    let error = rejected("rtstruct.dcm", &fixture("rtstruct.dcm"));
    assert_eq!(error.code, "not-dicom");
}

#[test]
fn an_rt_structure_set_in_a_part_10_wrapper_keeps_its_references_under_remapped_uids() {
    let key = key();
    let bare = fixture("rtstruct.dcm");
    let implicit = TransferSyntaxRegistry.get("1.2.840.10008.1.2").unwrap();
    let dataset = InMemDicomObject::read_dataset_with_ts(&bare[..], implicit).expect("the data set parses");
    let file = dataset.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2")).unwrap();
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).unwrap();

    let checked = de_identifies("rtstruct.dcm in a Part-10 wrapper", &bytes);
    let referenced = all_values(&checked.input, tags::REFERENCED_SOP_INSTANCE_UID);
    assert_eq!(referenced.len(), 1);
    assert_eq!(checked.out.meta.referenced_sop_uids, [key.uid(&referenced[0])]);
    assert_eq!(all_values(&checked.output, tags::REFERENCED_SOP_INSTANCE_UID), [key.uid(&referenced[0])]);
    // The frame of reference, and every ROI's reference to it, remapped alike.
    let frame = all_values(&checked.input, tags::FRAME_OF_REFERENCE_UID);
    assert_eq!(all_values(&checked.output, tags::FRAME_OF_REFERENCE_UID), [key.uid(&frame[0])]);
    let roi_frames = all_values(&checked.output, tags::REFERENCED_FRAME_OF_REFERENCE_UID);
    assert_eq!(roi_frames.len(), 3);
    assert!(roi_frames.iter().all(|u| *u == key.uid(&frame[0])), "{roi_frames:?}");
    assert!(all_values(&checked.output, tags::CONTOUR_DATA).len() >= 15, "contours stay");
    // Patient's Birth Date was 19691231: zeroed, with the age derived from it absent (no study date).
    assert!(text(&checked.output, tags::PATIENT_BIRTH_DATE).is_none());
    assert_eq!(checked.out.meta.birth_year, Some(1969));
}

#[test]
fn an_rt_plan_and_dose_de_identify_with_their_references_remapped() {
    let key = key();
    // Implicit VR little endian, from a commercial planning system; the plan
    // nests Institution Name and Device Serial Number in its beam sequence.
    let plan = de_identifies("rtplan.dcm", &fixture("rtplan.dcm"));
    let dose = de_identifies("rtdose.dcm", &fixture("rtdose.dcm"));
    for (name, c) in [("rtplan.dcm", &plan), ("rtdose.dcm", &dose)] {
        let before: Vec<String> =
            all_values(&c.input, tags::REFERENCED_SOP_INSTANCE_UID).iter().map(|u| key.uid(u)).collect();
        assert!(!before.is_empty(), "{name}");
        assert_eq!(all_values(&c.output, tags::REFERENCED_SOP_INSTANCE_UID), before, "{name}");
    }
    assert!(plan.output.get(tags::BEAM_SEQUENCE).is_some(), "the beams stay");
    assert_eq!(dose.out.meta.frames, Some(15), "a 15-frame dose grid");
}

#[test]
fn a_structured_report_with_an_empty_patient_id_gets_a_subject_of_its_study_or_is_rejected_if_so_configured() {
    // test-SR.dcm (DCMTK's srdoc103 example) has Patient ID present but empty,
    // which Type 2 allows.
    let checked = de_identifies("test-SR.dcm", &fixture("test-SR.dcm"));
    assert_eq!(text(&checked.output, tags::MODALITY).as_deref(), Some("SR"));
    let error = rejected_with("test-SR.dcm", &fixture("test-SR.dcm"), MissingPatientId::Reject);
    assert_eq!(error.code, "missing-attribute");
    assert!(error.message.contains("(0010,0020)"), "{}", error.message);
}

/// test-SR.dcm with the Patient ID its sender left empty.
fn structured_report_with_a_patient_id() -> Vec<u8> {
    with_elements(&fixture("test-SR.dcm"), [lo(tags::PATIENT_ID, "SR-PATIENT-0001")])
}

#[test]
fn a_structured_report_given_a_patient_id_de_identifies_and_keeps_its_predecessor_reference() {
    let key = key();
    let checked = de_identifies("test-SR.dcm + PatientID", &structured_report_with_a_patient_id());
    // Outside the content tree the SR references its predecessor document
    // (Predecessor Documents Sequence > Referenced SOP Sequence).
    let Value::Sequence(predecessors) = checked.input.get(tags::PREDECESSOR_DOCUMENTS_SEQUENCE).unwrap().value() else {
        panic!("a sequence")
    };
    let predecessor = all_values(&predecessors.items()[0], tags::REFERENCED_SOP_INSTANCE_UID);
    assert_eq!(predecessor.len(), 1);
    let Value::Sequence(kept) = checked.output.get(tags::PREDECESSOR_DOCUMENTS_SEQUENCE).unwrap().value() else {
        panic!("a sequence")
    };
    assert_eq!(all_values(&kept.items()[0], tags::REFERENCED_SOP_INSTANCE_UID), [key.uid(&predecessor[0])]);
    assert!(checked.out.meta.referenced_sop_uids.contains(&key.uid(&predecessor[0])));
    assert_eq!(text(&checked.output, tags::MODALITY).as_deref(), Some("SR"));
}

#[test]
fn a_structured_report_keeps_the_image_references_of_its_content_tree_under_remapped_uids() {
    let key = key();
    let checked = de_identifies("test-SR.dcm + PatientID", &structured_report_with_a_patient_id());
    let Value::Sequence(content) = checked.input.get(tags::CONTENT_SEQUENCE).unwrap().value() else {
        panic!("a sequence")
    };
    let mut in_content: Vec<String> = Vec::new();
    for item in content.items() {
        in_content.extend(all_values(item, tags::REFERENCED_SOP_INSTANCE_UID));
    }
    assert_eq!(
        in_content.len(),
        5,
        "the content tree references an SR, a CT (with its presentation state), an MR and a waveform"
    );
    let Some(element) = checked.output.get(tags::CONTENT_SEQUENCE) else { panic!("the content tree is removed") };
    let Value::Sequence(kept) = element.value() else { panic!("a sequence") };
    let mut after: Vec<String> = Vec::new();
    for item in kept.items() {
        after.extend(all_values(item, tags::REFERENCED_SOP_INSTANCE_UID));
    }
    assert_eq!(after, in_content.iter().map(|u| key.uid(u)).collect::<Vec<_>>(), "content references remapped");
    for uid in &after {
        assert!(checked.out.meta.referenced_sop_uids.contains(uid), "{uid} recorded in the catalog");
    }
}

#[test]
fn an_invalid_integer_string_does_not_stop_de_identification() {
    // badVR.dcm is rtdose.dcm (explicit VR little endian) with Number of
    // Frames "1A": a bad value in a well-formed structure. The engine carries
    // values it does not interpret, so the file de-identifies; the catalog
    // gets no frame count rather than a wrong one.
    let checked = de_identifies("badVR.dcm", &fixture("badVR.dcm"));
    assert_eq!(checked.out.meta.frames, None);
    assert_eq!(text(&checked.output, tags::NUMBER_OF_FRAMES).as_deref(), Some("1A"));
}

#[test]
fn an_rt_dose_with_its_attributes_encoded_as_un_de_identifies_like_its_explicit_twin() {
    // rtdose_rle_1frame.dcm was converted to RLE by gdcmconv, which wrote every
    // attribute of the implicit VR original as UN. Same patient, same study,
    // same SOP instance as rtdose.dcm: it must get the same subject and UIDs.
    let un = de_identifies("rtdose_rle_1frame.dcm", &fixture("rtdose_rle_1frame.dcm"));
    let twin = de_identifies("rtdose.dcm", &fixture("rtdose.dcm"));
    assert_eq!(un.out.meta.subject, twin.out.meta.subject, "one patient, one subject");
    assert_eq!(un.out.meta.sop_uid, twin.out.meta.sop_uid);
    assert_eq!(un.out.meta.study_uid, twin.out.meta.study_uid);
    assert_eq!(un.out.meta.series_uid, twin.out.meta.series_uid);
    assert_eq!(text(&un.output, tags::FRAME_OF_REFERENCE_UID), text(&twin.output, tags::FRAME_OF_REFERENCE_UID));
    // Its sequences, sent as UN in implicit VR, are read as sequences: the plan reference survives.
    let references = all_values(&twin.output, tags::REFERENCED_SOP_INSTANCE_UID);
    assert!(!references.is_empty());
    assert_eq!(all_values(&un.output, tags::REFERENCED_SOP_INSTANCE_UID), references);
}

/// The raw value of a short-length element in an explicit VR little endian file.
fn raw_explicit_le_value(bytes: &[u8], tag: Tag, vr: [u8; 2]) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend(tag.group().to_le_bytes());
    header.extend(tag.element().to_le_bytes());
    header.extend(vr);
    let at = bytes.windows(header.len()).position(|w| w == header).expect("the element is in the file");
    let len = usize::from(u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]));
    bytes[at + 8..at + 8 + len].to_vec()
}

#[test]
fn a_japanese_patient_name_in_three_representations_leaves_no_trace() {
    // Patient's Name "Yamada^Tarou=山田^太郎=やまだ^たろう": alphabetic,
    // ideographic and phonetic groups, the latter two in ISO 2022 IR 87 (JIS X
    // 0208) between escape sequences. The decoded values are needles as
    // usual; the raw bytes of each name part are searched for as well: the
    // alphabetic components, and each JIS run with its `ESC $ B` designation
    // (JIS bytes may themselves be `^`, so the JIS groups are split at the
    // escapes, not at the delimiters).
    let bytes = fixture("chrH31.dcm");
    let checked = de_identifies("chrH31.dcm", &bytes);
    let raw = raw_explicit_le_value(&bytes, tags::PATIENT_NAME, *b"PN");
    let alphabetic = raw.split(|b| *b == b'=').next().unwrap();
    let mut parts: Vec<&[u8]> = alphabetic.split(|b| *b == b'^').filter(|p| p.len() >= 4).collect();
    parts.extend(raw.split(|b| *b == 0x1b).filter(|run| run.starts_with(b"$B") && run.len() >= 4));
    assert_eq!(parts.len(), 6, "Yamada, Tarou and four JIS runs: {raw:?}");
    let surviving: Vec<String> = parts
        .iter()
        .filter(|p| contains(&checked.out.to_vec(), p))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(surviving.is_empty(), "name parts survive: {surviving:?}");
    assert_eq!(
        text(&checked.output, tags::SPECIFIC_CHARACTER_SET).as_deref(),
        text(&checked.input, tags::SPECIFIC_CHARACTER_SET).as_deref(),
        "the character set stays declared"
    );
}

#[test]
fn a_deflated_file_is_inflated_and_then_judged_like_any_other() {
    // image_dfl.dcm (David Clunie's sample) is valid Deflated Explicit VR
    // Little Endian. It inflates fine; its Patient ID is empty, so it is a
    // subject of its own study, and it is stored as explicit VR little endian.
    let bytes = fixture("image_dfl.dcm");
    let key = key();
    let out = deidentify_slice(&bytes, &settings(&key)).unwrap();
    assert_eq!(out.meta.transfer_syntax, "1.2.840.10008.1.2.1");
    let error = rejected_with("image_dfl.dcm", &bytes, MissingPatientId::Reject);
    assert_eq!(error.code, "missing-attribute");
    assert!(error.message.contains("Patient ID (0010,0020)"), "{}", error.message);
}

#[test]
fn broken_files_are_rejected_with_a_stable_code_and_no_values_in_the_message() {
    for (name, code) in [
        // A data set with neither preamble nor file meta group.
        ("ExplVR_LitEndNoMeta.dcm", "not-dicom"),
        // MR_small cut off inside its Pixel Data.
        ("MR_truncated.dcm", "malformed-dicom"),
        // rtplan cut off inside a sequence.
        ("rtplan_truncated.dcm", "malformed-dicom"),
        // A file meta group without Transfer Syntax UID (0002,0010), named as such.
        ("meta_missing_tsyntax.dcm", "missing-attribute"),
    ] {
        let error = rejected(name, &fixture(name));
        assert_eq!(error.code, code, "{name}: {}", error.message);
    }
}

/// The process's peak resident set (VmHWM) in KiB, where /proc tells it.
fn peak_resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_small_file_declaring_a_huge_value_is_rejected_without_a_huge_allocation() {
    // SC_rgb_jpeg.dcm (made by highdicom) has a data set encoded in implicit
    // VR under a meta group that declares JPEG Baseline, i.e. explicit VR;
    // pydicom reads it with a warning. Read as explicit VR, the bytes
    // "DERI" of Image Type's value become a 4-byte length of 1,230,128,452.
    let bytes = fixture("SC_rgb_jpeg.dcm");
    let before = peak_resident_kib();
    let error = rejected("SC_rgb_jpeg.dcm", &bytes);
    assert_eq!(error.code, "malformed-dicom");
    // The high-water mark only rises; no other test comes near 256 MiB.
    if let (Some(before), Some(after)) = (before, peak_resident_kib()) {
        let grown_mib = after.saturating_sub(before) / 1024;
        assert!(grown_mib < 256, "rejecting {} bytes raised peak memory by {grown_mib} MiB", bytes.len());
    }
}
