//! A release's DICOM instances as DICOMweb serves them (PS3.18): the index
//! the build records as it writes each instance, the searches (QIDO-RS) that
//! read it, and metadata (WADO-RS) as DICOM JSON made from a released file.
//!
//! Everything here is in the project's pseudonyms and UIDs, taken from the
//! released file itself (never from the catalog), so a search answers exactly
//! what the release's files say.

use base64::Engine as _;
use dicom_core::header::{HasLength as _, Header as _};
use dicom_core::{DicomValue, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use serde_json::{Map, Value, json};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::dicom::Released;

/// Attributes of a study that searches return by default (PS3.18 table 10.6.3-3).
pub const STUDY_ATTRIBUTES: &[Tag] = &[
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::STUDY_DESCRIPTION,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_ID,
];

/// Attributes of a series that searches return by default (table 10.6.3-4).
pub const SERIES_ATTRIBUTES: &[Tag] = &[
    tags::MODALITY,
    tags::SERIES_DESCRIPTION,
    tags::SERIES_INSTANCE_UID,
    tags::SERIES_NUMBER,
    tags::SERIES_DATE,
    tags::PERFORMED_PROCEDURE_STEP_START_DATE,
    tags::PERFORMED_PROCEDURE_STEP_START_TIME,
];

/// Attributes of an instance that searches return by default (table 10.6.3-5).
pub const INSTANCE_ATTRIBUTES: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::INSTANCE_NUMBER,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::NUMBER_OF_FRAMES,
];

/// Further attributes kept in the index, returned when `includefield` names them (or is `all`).
const MORE_ATTRIBUTES: &[Tag] = &[
    tags::PATIENT_AGE,
    tags::SERIES_TIME,
    tags::BODY_PART_EXAMINED,
    tags::MANUFACTURER,
    tags::FRAME_OF_REFERENCE_UID,
    tags::IMAGE_TYPE,
    tags::CONTENT_DATE,
    tags::CONTENT_TIME,
    tags::IMAGE_POSITION_PATIENT,
    tags::IMAGE_ORIENTATION_PATIENT,
    tags::PIXEL_SPACING,
    tags::SLICE_THICKNESS,
    tags::PHOTOMETRIC_INTERPRETATION,
    tags::SAMPLES_PER_PIXEL,
];

/// Binary values longer than this are left out of metadata (bulk data).
const BULK_BYTES: usize = 1024;

/// Why a released file could not be indexed or described.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MetadataError(&'static str);

/// One released instance as the index records it.
#[derive(Debug, Clone)]
pub struct Indexed {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub patient_id: String,
    pub modality: Option<String>,
    pub study_date: Option<String>,
    pub series_number: Option<i32>,
    pub instance_number: Option<i32>,
    pub path: String,
    /// Bytes before Pixel Data: what metadata needs to read.
    pub header_size: u64,
    /// The attributes searches may return, as DICOM JSON.
    pub attributes: Value,
}

impl Indexed {
    /// The index entry of a released instance (CPU work: call it where the
    /// instance was released, in `spawn_blocking`).
    pub fn of(released: &Released) -> Result<Self, MetadataError> {
        // The first part is the whole encoded header; Pixel Data, when the
        // file has it at its end, is the second.
        let header_size = if released.parts.len() > 1 { released.parts[0].len() as u64 } else { released.size() };
        let dataset = header(&released.parts[0])?;
        let kept: Vec<_> = STUDY_ATTRIBUTES
            .iter()
            .chain(SERIES_ATTRIBUTES)
            .chain(INSTANCE_ATTRIBUTES)
            .chain(MORE_ATTRIBUTES)
            .filter_map(|tag| dataset.element(*tag).ok().cloned())
            .collect();
        let attributes = to_json(&InMemDicomObject::from_element_iter(kept));
        let text = |tag| dataset.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_owned());
        let number = |tag| text(tag).and_then(|s| s.parse::<i32>().ok());
        Ok(Self {
            study_uid: released.study_uid.clone(),
            series_uid: released.series_uid.clone(),
            sop_uid: released.sop_uid.clone(),
            sop_class_uid: released.sop_class_uid.clone(),
            transfer_syntax: released.transfer_syntax.clone(),
            patient_id: released.subject.clone(),
            modality: text(tags::MODALITY).filter(|m| !m.is_empty()),
            study_date: text(tags::STUDY_DATE).filter(|d| !d.is_empty()),
            series_number: number(tags::SERIES_NUMBER),
            instance_number: number(tags::INSTANCE_NUMBER),
            path: released.path(),
            header_size,
            attributes,
        })
    }
}

/// The data set of a released file's first bytes, up to Pixel Data.
fn header(bytes: &[u8]) -> Result<InMemDicomObject, MetadataError> {
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(bytes)
        .map(dicom_object::FileDicomObject::into_inner)
        .map_err(|_| MetadataError("the released instance cannot be read as DICOM"))
}

/// The WADO-RS metadata of a released instance from its first `header_size`
/// bytes: every attribute as DICOM JSON, bulk data (Pixel Data and binary
/// values over 1 KiB) left out.
pub fn metadata(header_bytes: &[u8]) -> Result<Value, MetadataError> {
    let dataset = header(header_bytes)?;
    let kept: Vec<_> = dataset
        .into_iter()
        .filter(|e| {
            let binary = matches!(e.vr(), VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN);
            !(binary && e.length().get().is_none_or(|len| len as usize > BULK_BYTES))
        })
        .collect();
    Ok(to_json(&InMemDicomObject::from_element_iter(kept)))
}

/// A data set as DICOM JSON (PS3.18 F.2): one `GGGGEEEE` key per attribute
/// with its `vr` and `Value` (person names as `Alphabetic`/`Ideographic`/
/// `Phonetic`, numbers as numbers, items as objects), binary values as
/// `InlineBinary`; encapsulated pixel data is left out.
pub fn to_json(dataset: &InMemDicomObject) -> Value {
    let mut out = Map::new();
    for element in dataset {
        let vr = element.vr();
        let values = match element.value() {
            DicomValue::PixelSequence(_) => continue,
            DicomValue::Sequence(items) => Some(items.items().iter().map(to_json).collect()),
            DicomValue::Primitive(value) if value.multiplicity() == 0 => None,
            DicomValue::Primitive(value) => primitive_json(vr, value),
        };
        let mut attribute = Map::new();
        attribute.insert("vr".into(), Value::from(vr.to_string()));
        match values {
            Some(Values::Inline(base64)) => {
                attribute.insert("InlineBinary".into(), Value::from(base64));
            }
            Some(Values::List(list)) => {
                attribute.insert("Value".into(), Value::Array(list));
            }
            None => {}
        }
        out.insert(tag_key(element.tag()), Value::Object(attribute));
    }
    Value::Object(out)
}

/// What an attribute holds in DICOM JSON.
enum Values {
    List(Vec<Value>),
    Inline(String),
}

impl FromIterator<Value> for Values {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Self {
        Self::List(iter.into_iter().collect())
    }
}

fn primitive_json(vr: VR, value: &PrimitiveValue) -> Option<Values> {
    let strings =
        || -> Vec<String> { value.to_multi_str().iter().map(|s| s.trim_end_matches(['\0', ' ']).to_owned()).collect() };
    let text = || strings().into_iter().map(|s| if s.is_empty() { Value::Null } else { Value::from(s) }).collect();
    Some(match vr {
        VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN => {
            Values::Inline(base64::engine::general_purpose::STANDARD.encode(value.to_bytes()))
        }
        VR::PN => strings()
            .into_iter()
            .map(|name| {
                let mut groups = Map::new();
                for (group, key) in name.split('=').zip(["Alphabetic", "Ideographic", "Phonetic"]) {
                    if !group.is_empty() {
                        groups.insert(key.into(), Value::from(group));
                    }
                }
                Value::Object(groups)
            })
            .collect(),
        VR::AT => match value {
            PrimitiveValue::Tags(tags) => tags.iter().map(|t| Value::from(tag_key(*t))).collect(),
            _ => return None,
        },
        VR::IS | VR::US | VR::UL | VR::SS | VR::SL | VR::SV | VR::UV => match value.to_multi_int::<i64>() {
            Ok(numbers) => numbers.into_iter().map(Value::from).collect(),
            Err(_) => text(),
        },
        VR::DS | VR::FL | VR::FD => match value.to_multi_float64() {
            Ok(numbers) => numbers
                .into_iter()
                .map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
                .collect(),
            Err(_) => text(),
        },
        _ => text(),
    })
}

/// Records a released instance in the index of `extract_id` (again: nothing).
pub async fn record(db: impl PgExecutor<'_>, extract_id: Uuid, indexed: &Indexed) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into extract_instance (extract_id, study_uid, series_uid, sop_uid, sop_class_uid, transfer_syntax,
                                       patient_id, modality, study_date, series_number, instance_number, path,
                                       header_size, attributes)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) on conflict do nothing",
        extract_id,
        indexed.study_uid,
        indexed.series_uid,
        indexed.sop_uid,
        indexed.sop_class_uid,
        indexed.transfer_syntax,
        indexed.patient_id,
        indexed.modality,
        indexed.study_date,
        indexed.series_number,
        indexed.instance_number,
        indexed.path,
        i64::try_from(indexed.header_size).unwrap_or(i64::MAX),
        indexed.attributes,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What a search matches; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matching {
    pub study_uids: Option<Vec<String>>,
    pub series_uids: Option<Vec<String>>,
    pub sop_uids: Option<Vec<String>>,
    pub sop_class_uids: Option<Vec<String>>,
    /// A `LIKE` pattern (see [`like_pattern`]) on the project's subject ID.
    pub patient: Option<String>,
    pub modalities: Option<Vec<String>>,
    /// Inclusive bounds on Study Date, `YYYYMMDD`.
    pub study_date_from: Option<String>,
    pub study_date_to: Option<String>,
    pub series_number: Option<i32>,
    pub instance_number: Option<i32>,
}

/// A page of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// A DICOM wildcard value (`*` any run, `?` one character) as a `LIKE`
/// pattern, `\`, `%` and `_` escaped.
pub fn like_pattern(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '\\' | '%' | '_' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A study found, with what the index counts of it.
#[derive(Debug, Clone)]
pub struct StudyFound {
    pub study_uid: String,
    pub series: i64,
    pub instances: i64,
    pub modalities: Vec<String>,
    pub attributes: Value,
}

/// Studies of `extract_id` that match (study-level keys, and any series of the modalities).
pub async fn studies(
    db: impl PgExecutor<'_>,
    extract_id: Uuid,
    m: &Matching,
    page: Page,
) -> Result<Vec<StudyFound>, sqlx::Error> {
    sqlx::query_as!(
        StudyFound,
        r#"select study_uid, count(distinct series_uid) as "series!", count(*) as "instances!",
                  coalesce(array_agg(distinct modality) filter (where modality is not null), '{}') as "modalities!",
                  (array_agg(attributes order by sop_uid))[1] as "attributes!"
           from extract_instance
           where extract_id = $1 and ($2::text[] is null or study_uid = any($2))
             and ($3::text is null or patient_id like $3)
             and ($4::text is null or study_date >= $4) and ($5::text is null or study_date <= $5)
           group by study_uid
           having $6::text[] is null or bool_or(modality = any($6))
           order by min(study_date), study_uid
           limit $7 offset $8"#,
        extract_id,
        m.study_uids.as_deref(),
        m.patient,
        m.study_date_from,
        m.study_date_to,
        m.modalities.as_deref(),
        page.limit,
        page.offset
    )
    .fetch_all(db)
    .await
}

/// A series found.
#[derive(Debug, Clone)]
pub struct SeriesFound {
    pub study_uid: String,
    pub series_uid: String,
    pub instances: i64,
    pub attributes: Value,
}

/// Series of `extract_id` that match (study- and series-level keys).
pub async fn series(
    db: impl PgExecutor<'_>,
    extract_id: Uuid,
    m: &Matching,
    page: Page,
) -> Result<Vec<SeriesFound>, sqlx::Error> {
    sqlx::query_as!(
        SeriesFound,
        r#"select study_uid, series_uid, count(*) as "instances!",
                  (array_agg(attributes order by instance_number, sop_uid))[1] as "attributes!"
           from extract_instance
           where extract_id = $1 and ($2::text[] is null or study_uid = any($2))
             and ($3::text is null or patient_id like $3)
             and ($4::text is null or study_date >= $4) and ($5::text is null or study_date <= $5)
             and ($6::text[] is null or modality = any($6)) and ($7::text[] is null or series_uid = any($7))
             and ($8::int is null or series_number = $8)
           group by study_uid, series_uid
           order by min(study_date), study_uid, min(series_number), series_uid
           limit $9 offset $10"#,
        extract_id,
        m.study_uids.as_deref(),
        m.patient,
        m.study_date_from,
        m.study_date_to,
        m.modalities.as_deref(),
        m.series_uids.as_deref(),
        m.series_number,
        page.limit,
        page.offset
    )
    .fetch_all(db)
    .await
}

/// An instance found.
#[derive(Debug, Clone)]
pub struct InstanceFound {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub transfer_syntax: String,
    pub attributes: Value,
}

/// Instances of `extract_id` that match (every key).
pub async fn instances(
    db: impl PgExecutor<'_>,
    extract_id: Uuid,
    m: &Matching,
    page: Page,
) -> Result<Vec<InstanceFound>, sqlx::Error> {
    sqlx::query_as!(
        InstanceFound,
        r#"select study_uid, series_uid, sop_uid, transfer_syntax, attributes
           from extract_instance
           where extract_id = $1 and ($2::text[] is null or study_uid = any($2))
             and ($3::text is null or patient_id like $3)
             and ($4::text is null or study_date >= $4) and ($5::text is null or study_date <= $5)
             and ($6::text[] is null or modality = any($6)) and ($7::text[] is null or series_uid = any($7))
             and ($8::int is null or series_number = $8) and ($9::text[] is null or sop_uid = any($9))
             and ($10::text[] is null or sop_class_uid = any($10)) and ($11::int is null or instance_number = $11)
           order by study_date, study_uid, series_number, series_uid, instance_number, sop_uid
           limit $12 offset $13"#,
        extract_id,
        m.study_uids.as_deref(),
        m.patient,
        m.study_date_from,
        m.study_date_to,
        m.modalities.as_deref(),
        m.series_uids.as_deref(),
        m.series_number,
        m.sop_uids.as_deref(),
        m.sop_class_uids.as_deref(),
        m.instance_number,
        page.limit,
        page.offset
    )
    .fetch_all(db)
    .await
}

/// A released instance to retrieve: its file and where its header ends.
#[derive(Debug, Clone)]
pub struct Stored {
    pub path: String,
    pub transfer_syntax: String,
    pub header_size: i64,
    pub size: i64,
    pub object_key: String,
}

/// The instances of a study, a series of it or one instance of it, in order.
pub async fn stored(
    db: impl PgExecutor<'_>,
    extract_id: Uuid,
    study_uid: &str,
    series_uid: Option<&str>,
    sop_uid: Option<&str>,
) -> Result<Vec<Stored>, sqlx::Error> {
    sqlx::query_as!(
        Stored,
        "select i.path, i.transfer_syntax, i.header_size, f.size, f.object_key
         from extract_instance i join extract_file f on f.extract_id = i.extract_id and f.path = i.path
         where i.extract_id = $1 and i.study_uid = $2 and ($3::text is null or i.series_uid = $3)
           and ($4::text is null or i.sop_uid = $4)
         order by i.series_number, i.series_uid, i.instance_number, i.sop_uid",
        extract_id,
        study_uid,
        series_uid,
        sop_uid
    )
    .fetch_all(db)
    .await
}

/// The attributes of `attributes` (a DICOM JSON object) among `wanted`.
pub fn pick(attributes: &Value, wanted: impl IntoIterator<Item = Tag>) -> Map<String, Value> {
    let mut out = Map::new();
    for tag in wanted {
        let key = tag_key(tag);
        if let Some(value) = attributes.get(&key) {
            out.insert(key, value.clone());
        }
    }
    out
}

/// The DICOM JSON key of a tag (`GGGGEEEE`).
pub fn tag_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

/// A DICOM JSON attribute.
pub fn attribute(vr: &str, values: impl IntoIterator<Item = Value>) -> Value {
    let values: Vec<Value> = values.into_iter().collect();
    if values.is_empty() { json!({ "vr": vr }) } else { json!({ "vr": vr, "Value": values }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_set_becomes_dicom_json_with_names_numbers_tags_items_and_inline_binary() {
        use dicom_core::DataElement;
        use dicom_core::value::DataSetSequence;
        let item = InMemDicomObject::from_element_iter([DataElement::new(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("2.25.7"),
        )]);
        let dataset = InMemDicomObject::from_element_iter([
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("psub-x=Ideo")),
            DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from(" 12")),
            DataElement::new(
                tags::PIXEL_SPACING,
                VR::DS,
                PrimitiveValue::Strs(["0.5".to_owned(), "0.25".to_owned()].into()),
            ),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(256_u16)),
            DataElement::new(tags::FRAME_INCREMENT_POINTER, VR::AT, PrimitiveValue::from(tags::FRAME_TIME)),
            DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::Empty),
            DataElement::new(Tag(0x0009, 0x1010), VR::OB, PrimitiveValue::from(vec![1_u8, 2])),
            DataElement::new(tags::REFERENCED_IMAGE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![item])),
        ]);
        assert_eq!(
            to_json(&dataset),
            json!({
                "00080050": {"vr": "SH"},
                "00081140": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["2.25.7"]}}]},
                "00091010": {"vr": "OB", "InlineBinary": "AQI="},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "psub-x", "Ideographic": "Ideo"}]},
                "00200011": {"vr": "IS", "Value": [12]},
                "00280009": {"vr": "AT", "Value": ["00181063"]},
                "00280010": {"vr": "US", "Value": [256]},
                "00280030": {"vr": "DS", "Value": [0.5, 0.25]},
            })
        );
    }

    #[test]
    fn dicom_wildcards_become_like_patterns_with_sql_wildcards_escaped() {
        assert_eq!(like_pattern("psub-*"), "psub-%");
        assert_eq!(like_pattern("psub-a?c"), "psub-a_c");
        assert_eq!(like_pattern("50%_off\\"), "50\\%\\_off\\\\");
    }

    #[test]
    fn picked_attributes_are_those_asked_for_that_are_present() {
        let attributes = json!({
            "00100020": {"vr": "LO", "Value": ["psub-x"]},
            "0020000D": {"vr": "UI", "Value": ["2.25.1"]},
            "00080060": {"vr": "CS", "Value": ["MR"]},
        });
        let picked = pick(&attributes, [tags::STUDY_INSTANCE_UID, tags::ACCESSION_NUMBER, tags::PATIENT_ID]);
        let mut keys: Vec<&String> = picked.keys().collect();
        keys.sort();
        assert_eq!(keys, ["00100020", "0020000D"]);
    }
}
