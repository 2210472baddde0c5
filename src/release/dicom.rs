//! Stored instances as one project receives them: the registry's pseudonyms
//! replaced by the project's own. No axum, sqlx or object_store here.
//!
//! A stored instance is already de-identified ([`crate::deid::deidentify`]):
//! its Patient ID and Name are the registry pseudonym and every UID that could
//! identify it is a registry UID. For a release, the subject becomes the
//! project's pseudonym ([`project_subject`], as the project's subject list
//! shows it) and every registry UID becomes a project UID, keyed by the
//! project's key under a label of its own: the same registry UID gives the same
//! project UID in every file and every release of the project, two projects
//! give unrelated UIDs, and no project UID reveals the registry UID. Which
//! attributes hold registry UIDs is decided exactly as ingest decided it (the
//! profile's row of the attribute, at every depth), so references (Referenced
//! SOP Instance UID, a SEG's source images, an RT structure set's frame of
//! reference) still point at what they pointed at. Dates stay as stored
//! (already shifted), well-known UIDs (SOP classes, transfer syntaxes, coding
//! schemes) stay, and the pixel data is passed through byte for byte.
//!
//! A release builder, for each stored instance in scope:
//!
//! ```text
//! let project = ProjectPseudonyms::new(&project_key);   // access::grants::project_key
//! let released = for_project(&stored, &project)?;       // CPU work: spawn_blocking
//! put extracts/{project}/{extract}/{released.path()} ← released.parts
//! project.uid(registry_uid), project.subject(pseudonym) // provenance, DICOMweb, tables
//! ```

use bytes::Bytes;
use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use crate::deid::dicom::IMPLEMENTATION_CLASS_UID;
use crate::deid::pseudonym::project_subject;
use crate::deid::{Action, PROFILE};

/// What a release adds to De-identification Method (0012,0063), after the
/// values ingest wrote (LO: at most 64 characters).
pub const RELEASE_METHOD: &str = "Custodian: subject and UIDs re-pseudonymized for one project";

/// Prefix of a registry pseudonym, followed by 16 base32 characters.
const REGISTRY_PREFIX: &[u8] = b"sub-";
const PSEUDONYM_BODY: usize = 16;

/// One project's pseudonyms, keyed by the project's key.
pub struct ProjectPseudonyms {
    secret: [u8; 32],
    mac: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for ProjectPseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProjectPseudonyms(..)")
    }
}

impl ProjectPseudonyms {
    /// The pseudonyms of the project whose key is `project_key`
    /// (see [`crate::access::grants::project_key`]).
    pub fn new(project_key: &[u8; 32]) -> Self {
        Self { secret: *project_key, mac: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, project_key) }
    }

    /// The project's subject ID (`psub-…`) of a registry pseudonym (`sub-…`).
    pub fn subject(&self, registry_pseudonym: &str) -> String {
        project_subject(&self.secret, registry_pseudonym)
    }

    /// The project's UID replacing `registry_uid`: HMAC-SHA-256 under the
    /// project key of the label `release-uid` and the UID (each field
    /// length-prefixed), as `2.25.<decimal>` of a version-8 UUID.
    pub fn uid(&self, registry_uid: &str) -> String {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.mac);
        for field in [b"release-uid".as_slice(), registry_uid.trim_end_matches(['\0', ' ']).as_bytes()] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field);
        }
        let tag = ctx.sign();
        let mut custom = [0_u8; 16];
        custom.copy_from_slice(&tag.as_ref()[..16]);
        format!("2.25.{}", uuid::Builder::from_custom_bytes(custom).into_uuid().as_u128())
    }
}

/// Why a stored instance could not be released; the message names tags, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReleaseError {
    /// Stable code: `malformed-dicom`, `missing-attribute`, `not-pseudonymized`,
    /// `encoding-failed`, `pseudonym-survived`.
    pub code: &'static str,
    pub message: String,
}

impl ReleaseError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// A stored instance in the project's pseudonyms.
#[derive(Debug)]
pub struct Released {
    /// The Part-10 file, in order: the re-encoded header, then (usually) the
    /// stored Pixel Data element, shared with the stored bytes rather than copied.
    pub parts: Vec<Bytes>,
    /// The project's subject ID (Patient ID and Patient's Name of the file).
    pub subject: String,
    /// Study, series and SOP Instance UIDs in the project's form.
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    /// Referenced SOP Instance UIDs (SEG source images, RTSTRUCT contour
    /// images, …) in the project's form, in the order the file lists them.
    pub referenced_sop_uids: Vec<String>,
}

impl Released {
    /// The file in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }

    /// Size of the file in bytes, as a manifest records it.
    pub fn size(&self) -> u64 {
        self.parts.iter().map(|part| part.len() as u64).sum()
    }

    /// The file's path in a release: `dicom/{study}/{series}/{sop}.dcm`.
    pub fn path(&self) -> String {
        format!("dicom/{}/{}/{}.dcm", self.study_uid, self.series_uid, self.sop_uid)
    }
}

struct Ctx<'a> {
    project: &'a ProjectPseudonyms,
    referenced: Vec<String>,
}

/// Re-pseudonymizes one stored instance (the bytes ingest wrote) for the
/// project of `project`.
pub fn for_project(stored: &Bytes, project: &ProjectPseudonyms) -> Result<Released, ReleaseError> {
    let layout = crate::deid::guard::check_declared_lengths(stored).map_err(|tag| {
        ReleaseError::new(
            "malformed-dicom",
            format!("the element ({:04X},{:04X}) declares a value longer than the file", tag.group(), tag.element()),
        )
    })?;
    // Pixel Data that ends the file goes out as it is stored, sharing its bytes.
    let pixel_data = layout.pixel_data_at.map(|at| stored.slice(at..));
    let preamble = stored.len() >= 132 && &stored[128..132] == b"DICM";
    let mut options =
        OpenFileOptions::new().read_preamble(if preamble { ReadPreamble::Always } else { ReadPreamble::Never });
    if pixel_data.is_some() {
        options = options.read_until(tags::PIXEL_DATA);
    }
    let file = options
        .from_reader(&stored[..])
        .map_err(|_| ReleaseError::new("malformed-dicom", "the stored instance cannot be read as DICOM"))?;
    let meta = file.meta();
    let transfer_syntax = meta.transfer_syntax().trim_end_matches(['\0', ' ']).to_owned();
    let sop_class_uid = meta.media_storage_sop_class_uid().trim_end_matches(['\0', ' ']).to_owned();
    let version = meta.implementation_version_name.as_deref().map(|v| v.trim_end_matches(['\0', ' ']).to_owned());
    let dataset = file.into_inner();

    let registry_subject = text(&dataset, tags::PATIENT_ID)
        .ok_or_else(|| ReleaseError::new("missing-attribute", "the stored instance has no Patient ID (0010,0020)"))?;
    if !is_registry_pseudonym(registry_subject.as_bytes()) {
        return Err(ReleaseError::new(
            "not-pseudonymized",
            "the stored instance's Patient ID (0010,0020) is not a registry pseudonym",
        ));
    }
    let subject = project.subject(&registry_subject);

    let mut ctx = Ctx { project, referenced: Vec::new() };
    let mut out = remap(dataset, &mut ctx);
    for (tag, vr) in [(tags::PATIENT_ID, VR::LO), (tags::PATIENT_NAME, VR::PN)] {
        out.put(DataElement::new(tag, vr, PrimitiveValue::from(subject.as_str())));
    }
    stamp_method(&mut out);

    let uid = |tag: Tag, name: &str| {
        text(&out, tag)
            .ok_or_else(|| ReleaseError::new("missing-attribute", format!("the stored instance has no {name}")))
    };
    let study_uid = uid(tags::STUDY_INSTANCE_UID, "Study Instance UID (0020,000D)")?;
    let series_uid = uid(tags::SERIES_INSTANCE_UID, "Series Instance UID (0020,000E)")?;
    let sop_uid = uid(tags::SOP_INSTANCE_UID, "SOP Instance UID (0008,0018)")?;

    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class_uid.as_str())
        .media_storage_sop_instance_uid(sop_uid.as_str())
        .transfer_syntax(transfer_syntax.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID);
    if let Some(version) = version.filter(|v| !v.is_empty()) {
        builder = builder.implementation_version_name(version);
    }
    let file_meta = builder
        .build()
        .map_err(|_| ReleaseError::new("encoding-failed", "the released file meta group could not be built"))?;
    let mut encoded = Vec::with_capacity(layout.pixel_data_at.unwrap_or(stored.len()) + 256);
    out.with_exact_meta(file_meta)
        .write_all(&mut encoded)
        .map_err(|_| ReleaseError::new("encoding-failed", "the released data set could not be encoded"))?;
    // Belt and braces: whatever the walk could not read as text (a binary
    // value, an attribute of unknown VR) must not carry a registry pseudonym either.
    if leaks_registry_pseudonym(&encoded) {
        return Err(ReleaseError::new(
            "pseudonym-survived",
            "a registry pseudonym survived re-pseudonymization in a value that is not text",
        ));
    }
    Ok(Released {
        parts: std::iter::once(Bytes::from(encoded)).chain(pixel_data).collect(),
        subject,
        study_uid,
        series_uid,
        sop_uid,
        sop_class_uid,
        transfer_syntax,
        referenced_sop_uids: ctx.referenced,
    })
}

/// Whether ingest replaced a value of `tag` by a registry UID (or by nothing):
/// the public attributes whose profile row is U, D or C (see
/// `crate::deid::dicom`: a UI value dummied or cleaned as Type 1 becomes
/// `RegistryKey::uid` of it; cleaned otherwise, empty). Every other UI value
/// was kept as sent: SOP classes, transfer syntaxes, coding schemes.
fn remapped_at_ingest(tag: Tag) -> bool {
    tag.group().is_multiple_of(2)
        && PROFILE.rule(tag).is_some_and(|rule| matches!(rule.action, Action::Uid | Action::Dummy | Action::Clean))
}

fn remap(dataset: InMemDicomObject, ctx: &mut Ctx<'_>) -> InMemDicomObject {
    let elements: Vec<InMemElement> = dataset.into_iter().map(|element| remap_element(element, ctx)).collect();
    InMemDicomObject::from_element_iter(elements)
}

fn remap_element(element: InMemElement, ctx: &mut Ctx<'_>) -> InMemElement {
    let tag = element.tag();
    let vr = element.vr();
    if vr == VR::SQ {
        return match element.into_value() {
            Value::Sequence(seq) => {
                let items: Vec<InMemDicomObject> = seq.into_items().into_iter().map(|item| remap(item, ctx)).collect();
                DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
            }
            other => DataElement::new(tag, VR::SQ, other),
        };
    }
    if vr == VR::UI && remapped_at_ingest(tag) {
        let Ok(values) = element.to_multi_str() else { return element };
        let remapped: Vec<String> = values
            .iter()
            .map(|v| v.trim_matches(['\0', ' ']))
            .map(|v| if v.is_empty() { String::new() } else { ctx.project.uid(v) })
            .collect();
        if tag == tags::REFERENCED_SOP_INSTANCE_UID {
            ctx.referenced.extend(remapped.iter().filter(|v| !v.is_empty()).cloned());
        }
        return DataElement::new(tag, VR::UI, PrimitiveValue::Strs(remapped.into()));
    }
    // A registry pseudonym in any other text (an Other Patient ID, a
    // description) becomes the same subject's project pseudonym.
    match element.value() {
        Value::Primitive(PrimitiveValue::Str(s)) if holds_registry_pseudonym(s) => {
            DataElement::new(tag, vr, PrimitiveValue::from(replace_pseudonyms(s, ctx.project)))
        }
        Value::Primitive(PrimitiveValue::Strs(values)) if values.iter().any(|s| holds_registry_pseudonym(s)) => {
            let replaced: Vec<String> = values.iter().map(|s| replace_pseudonyms(s, ctx.project)).collect();
            DataElement::new(tag, vr, PrimitiveValue::Strs(replaced.into()))
        }
        _ => element,
    }
}

fn is_pseudonym_body(bytes: &[u8]) -> bool {
    bytes.len() == PSEUDONYM_BODY && bytes.iter().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(b))
}

/// Whether `bytes` is exactly a registry pseudonym.
fn is_registry_pseudonym(bytes: &[u8]) -> bool {
    bytes.len() == REGISTRY_PREFIX.len() + PSEUDONYM_BODY
        && bytes.starts_with(REGISTRY_PREFIX)
        && is_pseudonym_body(&bytes[REGISTRY_PREFIX.len()..])
}

/// Offsets of registry pseudonyms in `bytes`. Where `project_written`, one
/// that is the tail of a project pseudonym (`psub-…`, which the release
/// itself writes) is not counted.
fn registry_pseudonyms(bytes: &[u8], project_written: bool) -> impl Iterator<Item = usize> + '_ {
    let width = REGISTRY_PREFIX.len() + PSEUDONYM_BODY;
    (0..bytes.len().saturating_sub(width - 1)).filter(move |&at| {
        bytes[at..].starts_with(REGISTRY_PREFIX)
            && !(project_written && at > 0 && bytes[at - 1] == b'p')
            && is_pseudonym_body(&bytes[at + REGISTRY_PREFIX.len()..at + width])
    })
}

/// Whether stored text holds a registry pseudonym, anywhere.
fn holds_registry_pseudonym(text: &str) -> bool {
    registry_pseudonyms(text.as_bytes(), false).next().is_some()
}

/// Whether released bytes hold a registry pseudonym that is not part of a project one.
fn leaks_registry_pseudonym(bytes: &[u8]) -> bool {
    registry_pseudonyms(bytes, true).next().is_some()
}

fn replace_pseudonyms(text: &str, project: &ProjectPseudonyms) -> String {
    let width = REGISTRY_PREFIX.len() + PSEUDONYM_BODY;
    let mut out = String::with_capacity(text.len() + 8);
    let mut copied = 0;
    for at in registry_pseudonyms(text.as_bytes(), false) {
        if at < copied {
            continue;
        }
        // The match is ASCII, so these are character boundaries.
        out.push_str(&text[copied..at]);
        out.push_str(&project.subject(&text[at..at + width]));
        copied = at + width;
    }
    out.push_str(&text[copied..]);
    out
}

/// Appends the release step to De-identification Method (0012,0063); what
/// ingest recorded stays.
fn stamp_method(out: &mut InMemDicomObject) {
    let mut methods: Vec<String> = out
        .get(tags::DEIDENTIFICATION_METHOD)
        .and_then(|e| e.to_multi_str().ok())
        .map(|values| values.iter().map(|v| v.trim_matches(['\0', ' ']).to_owned()).filter(|v| !v.is_empty()).collect())
        .unwrap_or_default();
    methods.push(RELEASE_METHOD.to_owned());
    out.put(DataElement::new(tags::DEIDENTIFICATION_METHOD, VR::LO, PrimitiveValue::Strs(methods.into())));
    out.put(DataElement::new(tags::PATIENT_IDENTITY_REMOVED, VR::CS, PrimitiveValue::from("YES")));
}

fn text(dataset: &InMemDicomObject, tag: Tag) -> Option<String> {
    let element = dataset.get(tag)?;
    if element.vr() == VR::SQ {
        return None;
    }
    let value = element.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};

    use super::*;
    use crate::deid::{DeidSettings, MissingPatientId, RegistryKey};

    /// Other Patient IDs (retired, still sent).
    const OTHER_PATIENT_IDS: Tag = Tag(0x0010, 0x1000);
    const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

    fn registry() -> RegistryKey {
        RegistryKey::new(&[3; 32]).unwrap()
    }

    fn settings(key: &RegistryKey) -> DeidSettings<'_> {
        DeidSettings {
            key,
            site: "uhb",
            max_shift_days: 3650,
            safe_private: &[],
            max_inflated_bytes: 1 << 20,
            missing_patient_id: MissingPatientId::Reject,
        }
    }

    fn element(tag: Tag, vr: VR, value: &str) -> InMemElement {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }

    fn sequence(tag: Tag, items: Vec<Vec<InMemElement>>) -> InMemElement {
        let items: Vec<InMemDicomObject> = items.into_iter().map(InMemDicomObject::from_element_iter).collect();
        DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
    }

    /// A small CT as a hospital sends it, with `extra` attributes and 512 bytes of pixels.
    fn ct(extra: Vec<InMemElement>) -> Bytes {
        let mut obj = InMemDicomObject::from_element_iter([
            element(tags::PATIENT_ID, VR::LO, "MRN-1"),
            element(tags::PATIENT_NAME, VR::PN, "DOE^JANE"),
            element(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.1"),
            element(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.2"),
            element(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.3"),
            element(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
            element(tags::STUDY_DATE, VR::DA, "20200102"),
            element(tags::MODALITY, VR::CS, "CT"),
            sequence(
                tags::REFERENCED_IMAGE_SEQUENCE,
                vec![vec![
                    element(tags::REFERENCED_SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
                    element(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, "1.2.3.3"),
                ]],
            ),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(vec![7_u8; 512])),
        ]);
        for e in extra {
            obj.put(e);
        }
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(CT_IMAGE_STORAGE)
            .media_storage_sop_instance_uid("1.2.3.3")
            .transfer_syntax("1.2.840.10008.1.2.1");
        let mut out = Vec::new();
        obj.with_meta(meta).unwrap().write_all(&mut out).unwrap();
        Bytes::from(out)
    }

    fn stored(extra: Vec<InMemElement>) -> Bytes {
        Bytes::from(crate::deid::deidentify(&ct(extra), &settings(&registry())).unwrap().to_vec())
    }

    fn open(bytes: &[u8]) -> dicom_object::DefaultDicomObject {
        OpenFileOptions::new().from_reader(&bytes[128..]).unwrap()
    }

    #[test]
    fn project_uids_are_stable_valid_and_differ_between_projects() {
        let (a, b) = (ProjectPseudonyms::new(&[1; 32]), ProjectPseudonyms::new(&[2; 32]));
        let uid = a.uid("2.25.1234");
        assert_eq!(uid, a.uid("2.25.1234\0"), "padding is not part of the UID");
        assert_ne!(uid, b.uid("2.25.1234"), "another project, another UID");
        assert_ne!(uid, a.uid("2.25.1235"));
        assert_ne!(uid, registry().uid("2.25.1234"), "not the registry's derivation");
        assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{uid}");
        let n: u128 = uid[5..].parse().unwrap();
        assert_eq!((n >> 76) & 0xf, 8, "UUID version 8");
        assert_eq!(a.subject("sub-abcdefghijklmnop"), project_subject(&[1; 32], "sub-abcdefghijklmnop"));
    }

    #[test]
    fn registry_pseudonyms_in_text_become_project_pseudonyms_and_project_ones_stay() {
        let project = ProjectPseudonyms::new(&[1; 32]);
        let mine = project.subject("sub-abcdefghijklmnop");
        let text = "before sub-abcdefghijklmnop after sub-short";
        assert_eq!(replace_pseudonyms(text, &project), format!("before {mine} after sub-short"));
        assert!(!leaks_registry_pseudonym(mine.as_bytes()), "{mine} is not a registry pseudonym");
        assert!(holds_registry_pseudonym(&mine), "but stored text never holds one, so it would be replaced");
        assert!(leaks_registry_pseudonym(b"\x00\x01sub-2345672345672345"));
        assert!(!leaks_registry_pseudonym(b"sub-ABCDEFGHIJKLMNOP"));
    }

    #[test]
    fn the_attributes_remapped_are_those_ingest_gave_registry_uids() {
        // Every profile row of VR UI planted in one file: after ingest, a value
        // is the registry UID of what was planted exactly where the release
        // remaps, and stays as planted (or goes) everywhere else.
        let key = registry();
        let mut planted = Vec::new();
        for (index, rule) in PROFILE.rules().iter().enumerate() {
            let Some(tag) = parse_tag(&rule.tag) else { continue };
            let Some(VirtualVr::Exact(VR::UI)) =
                dicom_dictionary_std::StandardDataDictionary.by_tag(tag).map(DataDictionaryEntry::vr)
            else {
                continue;
            };
            if matches!(tag.group(), 0x0002)
                || [tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID, tags::SOP_INSTANCE_UID].contains(&tag)
            {
                continue;
            }
            planted.push((tag, format!("1.2.826.0.1.99.{index}")));
        }
        assert!(planted.len() > 20, "{} UID rows", planted.len());
        let file = stored(planted.iter().map(|(tag, uid)| element(*tag, VR::UI, uid)).collect());
        let output = open(&file);
        let mut disagreements = Vec::new();
        let mut remapped = 0;
        for (tag, uid) in &planted {
            let after = text(&output, *tag);
            let registry_uid = after.as_deref() == Some(key.uid(uid).as_str());
            remapped += usize::from(registry_uid);
            if registry_uid != remapped_at_ingest(*tag) && after.is_some() {
                disagreements.push(format!("{tag}: {after:?}"));
            }
        }
        assert!(disagreements.is_empty(), "{disagreements:#?}");
        assert!(remapped > 20, "{remapped} of {} planted UIDs remapped", planted.len());
    }

    fn parse_tag(text: &str) -> Option<Tag> {
        let (group, element) = text.trim_matches(['(', ')']).split_once(',')?;
        Some(Tag(u16::from_str_radix(group, 16).ok()?, u16::from_str_radix(element, 16).ok()?))
    }

    #[test]
    fn a_stored_instance_gets_the_project_subject_and_uids_and_keeps_its_pixels_and_dates() {
        let key = registry();
        let stored = stored(vec![element(tags::FRAME_OF_REFERENCE_UID, VR::UI, "1.2.3.9")]);
        let before = open(&stored);
        let registry_subject = text(&before, tags::PATIENT_ID).unwrap();
        let project = ProjectPseudonyms::new(&[5; 32]);
        let released = for_project(&stored, &project).unwrap();

        assert_eq!(released.subject, project.subject(&registry_subject));
        assert_eq!(released.sop_uid, project.uid(&key.uid("1.2.3.3")));
        assert_eq!(released.study_uid, project.uid(&key.uid("1.2.3.1")));
        assert_eq!(
            released.referenced_sop_uids,
            std::slice::from_ref(&released.sop_uid),
            "the reference follows its target"
        );
        assert_eq!(released.sop_class_uid, CT_IMAGE_STORAGE);
        assert_eq!(
            released.path(),
            format!("dicom/{}/{}/{}.dcm", released.study_uid, released.series_uid, released.sop_uid)
        );
        // The pixel data is the stored bytes themselves, not a copy.
        let pixels = released.parts.last().unwrap();
        assert_eq!(pixels.len(), 512 + 12);
        assert!(stored.as_ptr_range().contains(&pixels.as_ptr()));

        let after = open(&released.to_vec());
        assert_eq!(text(&after, tags::PATIENT_ID), Some(released.subject.clone()));
        assert_eq!(text(&after, tags::PATIENT_NAME), Some(released.subject.clone()));
        assert_eq!(text(&after, tags::STUDY_DATE), text(&before, tags::STUDY_DATE), "dates stay as stored");
        assert_eq!(text(&after, tags::FRAME_OF_REFERENCE_UID), Some(project.uid(&key.uid("1.2.3.9"))));
        assert_eq!(after.meta().media_storage_sop_instance_uid().trim_end_matches('\0'), released.sop_uid);
        assert_eq!(after.meta().media_storage_sop_class_uid().trim_end_matches('\0'), CT_IMAGE_STORAGE);
        let methods = after.get(tags::DEIDENTIFICATION_METHOD).unwrap().to_multi_str().unwrap().to_vec();
        assert_eq!(methods.last().map(String::as_str), Some(RELEASE_METHOD));
        let ingest_methods = before.get(tags::DEIDENTIFICATION_METHOD).unwrap().to_multi_str().unwrap().len();
        assert_eq!(methods.len(), ingest_methods + 1, "ingest's steps stay");
        assert!(RELEASE_METHOD.len() <= 64);
        let bytes = released.to_vec();
        assert!(!bytes.windows(registry_subject.len()).any(|w| w == registry_subject.as_bytes()));
    }

    #[test]
    fn a_registry_pseudonym_elsewhere_in_the_object_becomes_the_project_one() {
        let stored = stored(vec![]);
        let registry_subject = text(&open(&stored), tags::PATIENT_ID).unwrap();
        // Written after ingest, as an earlier release of Custodian might have.
        let mut file = open(&stored);
        file.put(element(OTHER_PATIENT_IDS, VR::LO, &registry_subject));
        file.put(element(tags::IMAGE_COMMENTS, VR::LT, &format!("from {registry_subject}")));
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).unwrap();
        let project = ProjectPseudonyms::new(&[5; 32]);
        let released = for_project(&Bytes::from(bytes), &project).unwrap();
        let after = open(&released.to_vec());
        assert_eq!(text(&after, OTHER_PATIENT_IDS), Some(released.subject.clone()));
        assert_eq!(text(&after, tags::IMAGE_COMMENTS), Some(format!("from {}", released.subject)));
    }

    #[test]
    fn a_registry_pseudonym_in_a_binary_value_refuses_the_release() {
        let stored = stored(vec![]);
        let registry_subject = text(&open(&stored), tags::PATIENT_ID).unwrap();
        let mut file = open(&stored);
        file.put(DataElement::new(Tag(0x0009, 0x1001), VR::OB, PrimitiveValue::from(registry_subject.into_bytes())));
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).unwrap();
        let error = for_project(&Bytes::from(bytes), &ProjectPseudonyms::new(&[5; 32])).unwrap_err();
        assert_eq!(error.code, "pseudonym-survived");
    }

    #[test]
    fn an_instance_ingest_did_not_write_is_refused() {
        let error = for_project(&ct(vec![]), &ProjectPseudonyms::new(&[5; 32])).unwrap_err();
        assert_eq!(error.code, "not-pseudonymized");
        assert!(!error.message.contains("MRN-1"), "{}", error.message);
        let error = for_project(&Bytes::from_static(b"not dicom at all"), &ProjectPseudonyms::new(&[5; 32]));
        assert_eq!(error.unwrap_err().code, "malformed-dicom");
    }
}
