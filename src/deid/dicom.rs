//! The DICOM boundary: received bytes in, de-identified Part-10 bytes and
//! catalog metadata out. No axum or sqlx here.
//!
//! The received bytes are parsed in memory, every attribute is handled by the
//! profile (recursively inside sequences), private attributes are removed
//! unless declared safe, and the result is encoded again in the same transfer
//! syntax; pixel data is carried through byte for byte, never decoded. Error
//! messages name tags, never values.

use std::borrow::Cow;

use bytes::Bytes;
use chrono::{Duration, NaiveDate};
use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::clean::clean_descriptor;
use super::profile::{Action, BASIC_PROFILE_CODE, PROFILE, ProfileOption};
use super::pseudonym::RegistryKey;

/// Custodian's implementation class UID, written into every file meta group.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.255734123019467839160389124466214372385";
const IMPLEMENTATION_VERSION: &str = "CUSTODIAN_0_1";

/// A private attribute that may stay: its creator and its element byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePrivate {
    /// Private creator string, e.g. `SIEMENS CSA HEADER`.
    pub creator: String,
    /// Group (odd).
    pub group: u16,
    /// Low byte of the element number (the creator's block is the high byte).
    pub element: u8,
}

/// What happens to an instance whose Patient ID (0010,0020) is empty or absent
/// (Type 2 lets a sender leave it so): `deid.missing_patient_id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MissingPatientId {
    /// Refused as `missing-attribute`.
    Reject,
    /// Given a subject of its own study: a keyed HMAC of site and Study
    /// Instance UID. A study belongs to one patient, so this never joins two
    /// people (one "unidentified" subject per site would); a patient's other
    /// studies without an ID become other subjects.
    #[default]
    Fallback,
}

/// Settings of one de-identification run.
#[derive(Debug)]
pub struct DeidSettings<'a> {
    pub key: &'a RegistryKey,
    /// Site code that scopes local patient IDs.
    pub site: &'a str,
    /// Largest date shift in days.
    pub max_shift_days: u32,
    pub safe_private: &'a [SafePrivate],
    /// Largest data set a Deflated Explicit VR Little Endian file may inflate to.
    pub max_inflated_bytes: usize,
    pub missing_patient_id: MissingPatientId,
}

/// Why a file was not accepted; the message names tags, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// Stable code: `not-dicom`, `unsupported-transfer-syntax`, `malformed-dicom`,
    /// `missing-attribute`, `encoding-failed`.
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Why a de-identified file is held back for a steward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineReason {
    pub code: &'static str,
    pub message: &'static str,
}

/// What the catalog records of a de-identified instance (all values already de-identified).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceMeta {
    pub subject: String,
    pub date_shift_days: i64,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub field_strength: Option<f64>,
    pub slice_thickness: Option<f64>,
    pub pixel_spacing: Option<(f64, f64)>,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    pub frames: Option<u32>,
    pub study_date: Option<NaiveDate>,
    pub series_date: Option<NaiveDate>,
    pub study_description: Option<String>,
    pub series_description: Option<String>,
    pub series_number: Option<i32>,
    pub instance_number: Option<i32>,
    pub sex: Option<String>,
    pub age_years: Option<f64>,
    pub birth_year: Option<i32>,
    pub height_m: Option<f64>,
    pub weight_kg: Option<f64>,
    /// SOP Instance UIDs (registry form) of instances this one references (SEG, RTSTRUCT, SR…).
    pub referenced_sop_uids: Vec<String>,
}

/// A de-identified instance.
#[derive(Debug)]
pub struct Deidentified {
    /// The new Part-10 file, in order: the re-encoded header, then (usually)
    /// the original Pixel Data element, shared with the input rather than copied.
    pub parts: Vec<Bytes>,
    pub meta: InstanceMeta,
    /// Set when the instance must wait for a steward (burned-in text).
    pub quarantine: Option<QuarantineReason>,
}

impl Deidentified {
    /// Size of the new file.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether the new file is empty (never, for a successful de-identification).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The new file in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

struct Ctx<'a> {
    settings: &'a DeidSettings<'a>,
    shift_days: i64,
    referenced: Vec<String>,
}

/// De-identifies one Part-10 file held in memory.
pub fn deidentify(original: &Bytes, settings: &DeidSettings<'_>) -> Result<Deidentified, Rejection> {
    let (original, layout, preamble) = readable(original, settings.max_inflated_bytes)?;
    let bytes: &[u8] = &original;
    // Pixel Data that ends the file is carried over as it is: the parser stops
    // at its header, and the output shares its bytes with the input. (Stopping
    // there rather than at the end of a cut copy also spares the end-of-data
    // error, which dicom-rs builds with a backtrace when RUST_BACKTRACE is set.)
    let pixel_data = layout.pixel_data_at.map(|at| original.slice(at..));
    let mut options =
        OpenFileOptions::new().read_preamble(if preamble { ReadPreamble::Always } else { ReadPreamble::Never });
    if pixel_data.is_some() {
        options = options.read_until(tags::PIXEL_DATA);
    }
    let file = options.from_reader(bytes).map_err(|e| classify_read_error(&e))?;
    let transfer_syntax = file.meta().transfer_syntax().trim_end_matches(['\0', ' ']).to_owned();
    let sop_class_uid = file.meta().media_storage_sop_class_uid().trim_end_matches(['\0', ' ']).to_owned();
    let dataset = file.into_inner();

    for (tag, name) in [
        (tags::STUDY_INSTANCE_UID, "Study Instance UID (0020,000D)"),
        (tags::SERIES_INSTANCE_UID, "Series Instance UID (0020,000E)"),
        (tags::SOP_INSTANCE_UID, "SOP Instance UID (0008,0018)"),
    ] {
        if text(&dataset, tag).is_none() {
            return Err(Rejection::new("missing-attribute", format!("the file has no {name}")));
        }
    }
    let subject = subject_of(&dataset, settings)?;
    let shift_days = settings.key.date_shift_days(&subject, settings.max_shift_days);

    // Facts that must be read before the profile removes their sources.
    let age = age_at_study(&dataset);
    let birth_year = date(&dataset, tags::PATIENT_BIRTH_DATE).map(|d| chrono::Datelike::year(&d));
    let quarantine = burned_in_text(&dataset, &sop_class_uid);

    let mut ctx = Ctx { settings, shift_days, referenced: Vec::new() };
    let mut out = transform(dataset, &mut ctx, 0);

    put_str(&mut out, tags::PATIENT_ID, VR::LO, &subject);
    put_str(&mut out, tags::PATIENT_NAME, VR::PN, &subject);
    if text(&out, tags::PATIENT_AGE).is_none()
        && let Some(age) = &age
    {
        put_str(&mut out, tags::PATIENT_AGE, VR::AS, &age.0);
    }
    stamp_method(&mut out);

    let meta = InstanceMeta {
        subject: subject.clone(),
        date_shift_days: shift_days,
        study_uid: text(&out, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        series_uid: text(&out, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        sop_uid: text(&out, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        sop_class_uid: sop_class_uid.clone(),
        transfer_syntax: transfer_syntax.clone(),
        modality: text(&out, tags::MODALITY),
        body_part: text(&out, tags::BODY_PART_EXAMINED),
        manufacturer: text(&out, tags::MANUFACTURER),
        model: text(&out, tags::MANUFACTURER_MODEL_NAME),
        field_strength: number(&out, tags::MAGNETIC_FIELD_STRENGTH),
        slice_thickness: number(&out, tags::SLICE_THICKNESS),
        pixel_spacing: numbers(&out, tags::PIXEL_SPACING).and_then(|v| Some((*v.first()?, *v.get(1)?))),
        rows: number(&out, tags::ROWS).and_then(to_u32),
        columns: number(&out, tags::COLUMNS).and_then(to_u32),
        frames: number(&out, tags::NUMBER_OF_FRAMES).and_then(to_u32),
        study_date: date(&out, tags::STUDY_DATE),
        series_date: date(&out, tags::SERIES_DATE),
        study_description: text(&out, tags::STUDY_DESCRIPTION),
        series_description: text(&out, tags::SERIES_DESCRIPTION),
        series_number: number(&out, tags::SERIES_NUMBER).and_then(to_i32),
        instance_number: number(&out, tags::INSTANCE_NUMBER).and_then(to_i32),
        sex: text(&out, tags::PATIENT_SEX),
        age_years: age.as_ref().map(|a| a.1).or_else(|| text(&out, tags::PATIENT_AGE).and_then(|a| years_of(&a))),
        birth_year,
        height_m: number(&out, tags::PATIENT_SIZE),
        weight_kg: number(&out, tags::PATIENT_WEIGHT),
        referenced_sop_uids: std::mem::take(&mut ctx.referenced),
    };

    // A new file meta group: nothing of the sender's (AE titles, private
    // information, implementation) survives.
    let file_meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class_uid)
        .media_storage_sop_instance_uid(meta.sop_uid.clone())
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION)
        .build()
        .map_err(|_| Rejection::new("encoding-failed", "the de-identified file meta group could not be built"))?;
    let file = out.with_exact_meta(file_meta);
    let mut encoded = Vec::with_capacity(layout.pixel_data_at.unwrap_or(bytes.len()) + 512);
    file.write_all(&mut encoded)
        .map_err(|_| Rejection::new("encoding-failed", "the de-identified data set could not be encoded"))?;
    let parts = std::iter::once(Bytes::from(encoded)).chain(pixel_data).collect();
    Ok(Deidentified { parts, meta, quarantine })
}

/// The file as the parser can read it, with its layout and whether it has a
/// preamble: inflated when deflated, given the meta group length a sender left
/// out, its sequences sent as UN in implicit VR (CP-246) rewritten as the
/// sequences they are. Unchanged files stay the input's bytes, not a copy.
fn readable(original: &Bytes, limit: usize) -> Result<(Bytes, super::guard::Layout, bool), Rejection> {
    // A deflated data set is inflated here, within a bound, and handled from
    // then on as the Explicit VR Little Endian it is underneath; it is stored
    // that way (the deflate is a transfer encoding of the whole data set, not
    // of the pixels, so nothing of the image is re-encoded).
    let mut original = inflate(original, limit)?.unwrap_or_else(|| original.clone());
    let regrouped = super::guard::with_group_length(&original).map_err(|e| match e {
        super::guard::MetaError::NoTransferSyntax => {
            Rejection::new("missing-attribute", "the file meta group has no Transfer Syntax UID (0002,0010)")
        }
    })?;
    if let Some(regrouped) = regrouped {
        original = regrouped;
    }
    let preamble = original.len() >= 132 && &original[128..132] == b"DICM";
    let bare = original.len() >= 4 && &original[..4] == b"DICM";
    if !(preamble || bare) {
        return Err(Rejection::new("not-dicom", "not a DICOM Part-10 file: the `DICM` marker is missing"));
    }
    let too_long = |tag: Tag| {
        Rejection::new(
            "malformed-dicom",
            format!("the element ({:04X},{:04X}) declares a value longer than the file", tag.group(), tag.element()),
        )
    };
    let mut layout = super::guard::check_declared_lengths(&original).map_err(too_long)?;
    if !layout.un_sequences.is_empty()
        && let Some(rewritten) = super::guard::rewrite_un_sequences(&original, &layout.un_sequences)
    {
        original = Bytes::from(rewritten);
        layout = super::guard::check_declared_lengths(&original).map_err(too_long)?;
    }
    Ok((original, layout, preamble))
}

/// The subject's registry pseudonym: of the Patient ID scoped by its issuer,
/// or, without a Patient ID, as `deid.missing_patient_id` says.
fn subject_of(dataset: &InMemDicomObject, settings: &DeidSettings<'_>) -> Result<String, Rejection> {
    Ok(match (text(dataset, tags::PATIENT_ID), settings.missing_patient_id) {
        // Without an issuer the pseudonym is what it always was.
        (Some(local_id), _) => {
            settings.key.subject_issued(settings.site, &local_id, text(dataset, tags::ISSUER_OF_PATIENT_ID).as_deref())
        }
        (None, MissingPatientId::Fallback) => settings
            .key
            .unidentified_subject(settings.site, &text(dataset, tags::STUDY_INSTANCE_UID).unwrap_or_default()),
        (None, MissingPatientId::Reject) => {
            return Err(Rejection::new("missing-attribute", "the file has no Patient ID (0010,0020)"));
        }
    })
}

/// The file with its data set inflated, when it is deflated; see [`super::guard::inflate_deflated`].
fn inflate(original: &[u8], limit: usize) -> Result<Option<Bytes>, Rejection> {
    super::guard::inflate_deflated(original, limit).map_err(|e| match e {
        super::guard::InflateError::TooLarge => Rejection::new(
            "file-too-large",
            format!("the deflated data set inflates to more than the limit of {limit} bytes"),
        ),
        super::guard::InflateError::Corrupt => {
            Rejection::new("malformed-dicom", "the deflated data set could not be inflated")
        }
    })
}

/// What Custodian writes into De-identification Method (0012,0063): one value
/// per step, each within the 64 characters of LO.
pub fn method_values() -> Vec<String> {
    std::iter::once(format!("Custodian: PS3.15 {} Table E.1-1 Basic Profile", PROFILE.edition))
        .chain(ProfileOption::APPLIED.iter().map(|o| o.code().1.to_owned()))
        .collect()
}

/// Records what was done, as PS3.15 asks: Patient Identity Removed, the
/// method in words and as CID 7050 codes, and that dates were modified. What
/// an earlier de-identifier recorded stays, and Custodian's steps follow it.
fn stamp_method(out: &mut InMemDicomObject) {
    put_str(out, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
    put_str(out, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, VR::CS, "MODIFIED");
    let mut methods: Vec<String> = out
        .get(tags::DEIDENTIFICATION_METHOD)
        .and_then(|e| e.to_multi_str().ok())
        .map(|values| values.iter().map(|v| v.trim_matches(['\0', ' ']).to_owned()).filter(|v| !v.is_empty()).collect())
        .unwrap_or_default();
    methods.extend(method_values());
    out.put(DataElement::new(tags::DEIDENTIFICATION_METHOD, VR::LO, PrimitiveValue::Strs(methods.into())));
    let mut codes: Vec<InMemDicomObject> = match out.take_element(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE) {
        Ok(element) => match element.into_value() {
            Value::Sequence(seq) => seq.into_items().into_iter().collect(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    codes.extend(std::iter::once(BASIC_PROFILE_CODE).chain(ProfileOption::APPLIED.iter().map(|o| o.code())).map(
        |(value, meaning)| {
            InMemDicomObject::from_element_iter([
                DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
                DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from("DCM")),
                DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
            ])
        },
    ));
    out.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::new(codes, Length::UNDEFINED),
    ));
}

fn classify_read_error(error: &dicom_object::ReadError) -> Rejection {
    // The error's own text may quote values; only its shape is used.
    let debug = format!("{error:?}");
    if debug.contains("ReadMagicCode") || debug.contains("NotDicom") {
        Rejection::new("not-dicom", "not a DICOM Part-10 file: the file meta group is missing")
    } else if debug.contains("UnsupportedTransferSyntax") || debug.contains("UnrecognizedTransferSyntax") {
        Rejection::new("unsupported-transfer-syntax", "the file's transfer syntax cannot be read by Custodian")
    } else if debug.contains("ParseMetaDataSet") {
        Rejection::new("malformed-dicom", "the file meta group (0002,xxxx) is truncated or malformed")
    } else {
        Rejection::new("malformed-dicom", "the data set is truncated or malformed")
    }
}

/// Whether `uid` names a transfer syntax Custodian can parse.
pub fn transfer_syntax_supported(uid: &str) -> bool {
    TransferSyntaxRegistry.get(uid.trim_end_matches(['\0', ' '])).is_some_and(|ts| !ts.is_unsupported())
}

fn transform(dataset: InMemDicomObject, ctx: &mut Ctx<'_>, depth: usize) -> InMemDicomObject {
    // Private creators of this data set, for the safe-private list.
    let creators: Vec<(u16, u8, String)> = dataset
        .iter()
        .filter(|e| e.tag().group() % 2 == 1 && (0x10..=0xff).contains(&e.tag().element()))
        .filter_map(|e| {
            let block = u8::try_from(e.tag().element()).ok()?;
            Some((e.tag().group(), block, e.to_str().ok()?.trim().to_owned()))
        })
        .collect();
    let mut kept: Vec<InMemElement> = Vec::new();
    for element in dataset {
        let tag = element.tag();
        if tag.element() == 0 || is_overlay(tag) {
            // Group lengths are recomputed, never carried. An overlay goes whole:
            // its bitmap and comments may hold burned-in text, and an overlay
            // group without them would no longer be a valid overlay.
            continue;
        }
        let Some(element) = retype_unknown(element) else { continue };
        if tag.group() % 2 == 1 {
            if let Some(element) = keep_private(element, &creators, ctx) {
                kept.push(element);
            }
            continue;
        }
        let rule = PROFILE.rule(tag);
        let action = temporal(element.vr(), rule.map(|r| r.action).or_else(|| unlisted(tag, element.vr())));
        // A D in the standard's code means the attribute is Type 1 in some IOD:
        // cleaning must not leave it empty there. So is a TEXT content item's value.
        let type_1 = rule.map_or(tag == tags::TEXT_VALUE, |r| r.basic.contains('D'));
        match action {
            None | Some(Action::Keep) => kept.push(recurse(element, ctx, depth)),
            Some(Action::Remove) => {}
            Some(Action::Zero) => kept.push(zero(&element)),
            Some(Action::Dummy) => kept.push(dummy(element, ctx, depth)),
            Some(Action::Uid) => kept.push(remap_uid(element, ctx, depth)),
            Some(Action::Clean) => kept.push(clean(element, ctx, depth, type_1)),
        }
    }
    InMemDicomObject::from_element_iter(kept)
}

/// An attribute of an overlay group (60xx, even).
fn is_overlay(tag: Tag) -> bool {
    (0x6000..=0x601E).contains(&tag.group()) && tag.group().is_multiple_of(2)
}

/// Retain Longitudinal Temporal Information with Modified Dates, as a rule of
/// the VR rather than a list of tags: a DA, DT or TM value that its row (or the
/// lack of one) would keep is shifted instead, at any depth.
fn temporal(vr: VR, action: Option<Action>) -> Option<Action> {
    let keeps = matches!(action, None | Some(Action::Keep));
    if keeps && matches!(vr, VR::DA | VR::DT | VR::TM) { Some(Action::Clean) } else { action }
}

/// Suffixes of dictionary keywords naming free text (Overlay Description,
/// Frame Comments, ...): cleaned wherever the table does not list them.
const FREE_TEXT_SUFFIXES: &[&str] = &["Description", "Comments", "Comment", "Remarks", "Notes", "Label"];

/// The action for a public attribute Table E.1-1 does not list: each of its
/// narrowings applied to every value of the same kind. What the dictionary
/// does not know is removed (its meaning, and so its risk, is unknown); person
/// names are emptied; free text is cleaned like a descriptor.
fn unlisted(tag: Tag, vr: VR) -> Option<Action> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    if let Some(action) = content_item_rule(tag) {
        return Some(action);
    }
    let Some(entry) = dicom_dictionary_std::StandardDataDictionary.by_tag(tag) else {
        return Some(Action::Remove);
    };
    match vr {
        VR::PN => Some(Action::Zero),
        VR::LT | VR::ST | VR::UT => Some(Action::Clean),
        VR::LO | VR::SH | VR::UC if FREE_TEXT_SUFFIXES.iter().any(|s| entry.alias().ends_with(s)) => {
            Some(Action::Clean)
        }
        _ => None,
    }
}

/// Gives a public attribute sent as UN (unknown VR) its dictionary VR, so the
/// profile sees its text: a UID sent as UN must be remapped as one UID, not as
/// the decimal numbers of its bytes. A public sequence sent as UN that was not
/// rewritten before parsing (see [`super::guard::rewrite_un_sequences`]: one
/// inside a defined-length sequence) cannot be searched for identifiers and is
/// dropped.
fn retype_unknown(element: InMemElement) -> Option<InMemElement> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    let tag = element.tag();
    if element.vr() != VR::UN || tag.group() % 2 == 1 {
        return Some(element);
    }
    let Some(VirtualVr::Exact(vr)) =
        dicom_dictionary_std::StandardDataDictionary.by_tag(tag).map(DataDictionaryEntry::vr)
    else {
        return Some(element);
    };
    let textual = matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::ST
            | VR::TM
            | VR::UC
            | VR::UI
            | VR::UR
            | VR::UT
    );
    if vr == VR::SQ {
        return None;
    }
    if !textual {
        return Some(element);
    }
    let bytes = element.to_bytes().ok()?;
    let text = String::from_utf8_lossy(&bytes).trim_end_matches(['\0', ' ']).to_owned();
    Some(if text.is_empty() {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::from(text))
    })
}

/// Keeps a private attribute only when its (creator, element) is declared safe.
fn keep_private(element: InMemElement, creators: &[(u16, u8, String)], ctx: &Ctx<'_>) -> Option<InMemElement> {
    let tag = element.tag();
    let safe = ctx.settings.safe_private.iter().filter(|s| s.group == tag.group());
    if (0x10..=0xff).contains(&tag.element()) {
        // A creator stays when one of its safe elements might.
        let name = element.to_str().ok()?.trim().to_owned();
        return safe.clone().any(|s| s.creator == name).then_some(element);
    }
    let block = u8::try_from(tag.element() >> 8).ok()?;
    #[allow(clippy::cast_possible_truncation)]
    let low = tag.element() as u8;
    let creator = creators.iter().find(|(g, b, _)| *g == tag.group() && *b == block).map(|(_, _, c)| c)?;
    let allowed = safe.clone().any(|s| &s.creator == creator && s.element == low);
    // Safe-listed values are numeric or coded by definition; text VRs stay out regardless.
    (allowed && !matches!(element.vr(), VR::SQ)).then_some(element)
}

fn recurse(element: InMemElement, ctx: &mut Ctx<'_>, depth: usize) -> InMemElement {
    if element.vr() != VR::SQ {
        return element;
    }
    let tag = element.tag();
    match element.into_value() {
        Value::Sequence(seq) => {
            let items: Vec<InMemDicomObject> =
                seq.into_items().into_iter().map(|item| transform(item, ctx, depth + 1)).collect();
            DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
        }
        other => DataElement::new(tag, VR::SQ, other),
    }
}

fn zero(element: &InMemElement) -> InMemElement {
    if element.vr() == VR::SQ {
        return DataElement::new(element.tag(), VR::SQ, DataSetSequence::<InMemDicomObject>::empty());
    }
    DataElement::new(element.tag(), element.vr(), PrimitiveValue::Empty)
}

/// Whether a non-sequence value holds nothing but padding.
fn is_blank(element: &InMemElement) -> bool {
    element.value().primitive().is_some_and(|p| p.to_str().trim_matches(['\0', ' ']).is_empty())
}

/// Action D. An empty value stays empty (there is nothing to replace, and an
/// empty Type 1 value was empty before); a sequence keeps its items, each
/// attribute in them handled by its own row, so a Verifying Observer Sequence
/// still names a (dummy) observer.
fn dummy(element: InMemElement, ctx: &mut Ctx<'_>, depth: usize) -> InMemElement {
    let tag = element.tag();
    let vr = element.vr();
    if vr == VR::SQ {
        return recurse(element, ctx, depth);
    }
    if is_blank(&element) {
        return DataElement::new(tag, vr, PrimitiveValue::Empty);
    }
    let value = match vr {
        VR::UI => {
            let original = element.to_str().map(Cow::into_owned).unwrap_or_default();
            PrimitiveValue::from(ctx.settings.key.uid(&original))
        }
        VR::DA => PrimitiveValue::from("19000101"),
        VR::DT => PrimitiveValue::from("19000101000000"),
        VR::TM => PrimitiveValue::from("000000"),
        VR::AS => PrimitiveValue::from("000Y"),
        VR::DS | VR::IS => PrimitiveValue::from("0"),
        VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD | VR::OB | VR::OW | VR::UN | VR::OF | VR::OD => {
            PrimitiveValue::Empty
        }
        _ => PrimitiveValue::from("ANONYMIZED"),
    };
    DataElement::new(tag, vr, value)
}

fn remap_uid(element: InMemElement, ctx: &mut Ctx<'_>, depth: usize) -> InMemElement {
    if element.vr() == VR::SQ {
        return recurse(element, ctx, depth);
    }
    let tag = element.tag();
    let Ok(original) = element.to_str() else { return zero(&element) };
    let original = original.trim_end_matches(['\0', ' ']).to_owned();
    if original.is_empty() {
        return DataElement::new(tag, VR::UI, PrimitiveValue::Empty);
    }
    let remapped: Vec<String> = original.split('\\').map(|uid| ctx.settings.key.uid(uid)).collect();
    if tag == tags::REFERENCED_SOP_INSTANCE_UID {
        ctx.referenced.extend(remapped.iter().cloned());
    }
    DataElement::new(tag, VR::UI, PrimitiveValue::from(remapped.join("\\")))
}

/// Attributes of structured content items (SR content trees, acquisition
/// context, specimen preparation) that Table E.1-1 does not list, because its
/// Basic Profile drops those trees whole. Under Clean Structured Content the
/// trees stay, so their free text is cleaned like a descriptor and their dates
/// shifted; person names (0040,A123), UIDs (0040,A124) and references are
/// already in the table.
fn content_item_rule(tag: Tag) -> Option<Action> {
    match tag {
        tags::TEXT_VALUE | tags::DATE => Some(Action::Clean),
        _ => None,
    }
}

fn clean(element: InMemElement, ctx: &mut Ctx<'_>, depth: usize, type_1: bool) -> InMemElement {
    let tag = element.tag();
    let vr = element.vr();
    let Ok(value) = element.to_str().map(Cow::into_owned) else {
        return if vr == VR::SQ { recurse(element, ctx, depth) } else { zero(&element) };
    };
    let shifted = |shift: fn(&str, i64) -> Option<String>| -> Option<String> {
        let values: Option<Vec<String>> = value.trim().split('\\').map(|v| shift(v.trim(), ctx.shift_days)).collect();
        values.map(|v| v.join("\\"))
    };
    let cleaned = match vr {
        VR::SQ => return recurse(element, ctx, depth),
        VR::DA => shifted(shift_date),
        VR::DT => shifted(shift_date_time),
        // Dates move by whole days: a time of day stays what it was.
        VR::TM => return element,
        VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC | VR::CS => Some(clean_descriptor(&value)),
        _ => None,
    };
    match cleaned {
        Some(text) if !text.is_empty() => DataElement::new(tag, vr, PrimitiveValue::from(text)),
        _ if type_1 && !is_blank(&element) => dummy(element, ctx, depth),
        _ => DataElement::new(tag, vr, PrimitiveValue::Empty),
    }
}

/// A DT value moved by `days`, without its time-zone suffix: the offset from
/// UTC is removed with Timezone Offset From UTC (0008,0201).
fn shift_date_time(value: &str, days: i64) -> Option<String> {
    let local = value.find(['+', '-']).map_or(value, |at| &value[..at]);
    let day = shift_date(local, days)?;
    Some(if day.is_empty() { day } else { format!("{day}{}", &local[8..]) })
}

fn shift_date(value: &str, days: i64) -> Option<String> {
    if value.is_empty() {
        return Some(String::new());
    }
    let date = NaiveDate::parse_from_str(value.get(..8)?, "%Y%m%d").ok()?;
    Some((date + Duration::days(days)).format("%Y%m%d").to_string())
}

fn put_str(dataset: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    dataset.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn text(dataset: &InMemDicomObject, tag: Tag) -> Option<String> {
    let element = dataset.get(tag)?;
    if element.vr() == VR::SQ {
        return None;
    }
    let value = if element.vr() == VR::UN {
        // Sent with an unknown VR: its bytes are the text.
        Cow::Owned(String::from_utf8_lossy(&element.to_bytes().ok()?).into_owned())
    } else {
        element.to_str().ok()?
    };
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
}

fn numbers(dataset: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let element = dataset.get(tag)?;
    if element.vr() == VR::SQ {
        return None;
    }
    element.value().to_multi_float64().ok().filter(|v| !v.is_empty())
}

fn number(dataset: &InMemDicomObject, tag: Tag) -> Option<f64> {
    numbers(dataset, tag)?.first().copied().filter(|n| n.is_finite())
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn to_u32(n: f64) -> Option<u32> {
    (n >= 0.0 && n <= f64::from(u32::MAX) && n.fract() == 0.0).then_some(n as u32)
}

#[allow(clippy::cast_possible_truncation)]
fn to_i32(n: f64) -> Option<i32> {
    (n >= f64::from(i32::MIN) && n <= f64::from(i32::MAX) && n.fract() == 0.0).then_some(n as i32)
}

fn date(dataset: &InMemDicomObject, tag: Tag) -> Option<NaiveDate> {
    let value = text(dataset, tag)?;
    NaiveDate::parse_from_str(value.get(..8)?, "%Y%m%d").ok()
}

/// Ages beyond this are taken for errors in the data (a birth date of
/// 1111-11-11), not facts: the age is unknown.
const MAX_PLAUSIBLE_AGE_YEARS: i32 = 125;

/// Age at the study as DICOM AS text and in completed years, from dates read
/// before de-identification; `None` when the dates give no plausible age.
fn age_at_study(dataset: &InMemDicomObject) -> Option<(String, f64)> {
    use chrono::Datelike;
    let birth = date(dataset, tags::PATIENT_BIRTH_DATE)?;
    let at = [tags::STUDY_DATE, tags::SERIES_DATE, tags::ACQUISITION_DATE, tags::CONTENT_DATE]
        .into_iter()
        .find_map(|t| date(dataset, t))?;
    let days = (at - birth).num_days();
    if days < 0 {
        return None;
    }
    // Completed calendar months and years, as PS3.5 AS counts age.
    let before_day = i32::from(at.day() < birth.day());
    let months = (at.year() - birth.year()) * 12 + i32::try_from(at.month()).ok()?
        - i32::try_from(birth.month()).ok()?
        - before_day;
    let years = months.div_euclid(12);
    if years > MAX_PLAUSIBLE_AGE_YEARS {
        return None;
    }
    let text = if years >= 2 {
        format!("{years:03}Y")
    } else if months >= 2 {
        format!("{months:03}M")
    } else if days >= 14 {
        format!("{:03}W", days / 7)
    } else {
        format!("{days:03}D")
    };
    Some((text, f64::from(years)))
}

/// Completed years of a Patient's Age (AS) value such as `065Y` or `018M`;
/// `None` when it is not one, or not plausible.
fn years_of(age: &str) -> Option<f64> {
    let (number, unit) = age.trim().split_at_checked(3)?;
    let n: i32 = number.parse().ok()?;
    let years = match unit {
        "Y" => n,
        "M" => n / 12,
        "W" => n / 52,
        "D" => n / 365,
        _ => return None,
    };
    (0..=MAX_PLAUSIBLE_AGE_YEARS).contains(&years).then_some(f64::from(years))
}

/// SOP classes of secondary captures, where text is often burned into pixels.
const SECONDARY_CAPTURE_PREFIX: &str = "1.2.840.10008.5.1.4.1.1.7";
/// Modalities where burned-in text is common.
const TEXT_PRONE_MODALITIES: &[&str] = &["US", "SC", "OT", "XC", "ES", "GM", "SM", "DOC"];

fn burned_in_text(dataset: &InMemDicomObject, sop_class_uid: &str) -> Option<QuarantineReason> {
    let flag = text(dataset, tags::BURNED_IN_ANNOTATION).map(|v| v.to_ascii_uppercase());
    if flag.as_deref() == Some("YES") {
        return Some(QuarantineReason {
            code: "burned-in-annotation",
            message: "Burned In Annotation (0028,0301) is YES: text in the pixels may identify the patient",
        });
    }
    if flag.as_deref() == Some("NO") {
        return None;
    }
    let modality = text(dataset, tags::MODALITY).unwrap_or_default().to_ascii_uppercase();
    if sop_class_uid.starts_with(SECONDARY_CAPTURE_PREFIX) || TEXT_PRONE_MODALITIES.contains(&modality.as_str()) {
        return Some(QuarantineReason {
            code: "burned-in-text-likely",
            message: "secondary captures and this modality often carry burned-in text, and Burned In Annotation (0028,0301) does not say NO",
        });
    }
    None
}
