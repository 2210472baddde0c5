//! Synthetic DICOM for tests, built with dicom-object, with canary identifiers
//! planted wherever real files carry identifying information.
//!
//! Every canary text contains `CNRY`, every canary UID starts with
//! [`CANARY_UID_ROOT`], and the canary dates are listed in [`CANARY_DATES`], so
//! a scan of any output for those strings finds every leak.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

/// Every canary UID starts with this root.
pub const CANARY_UID_ROOT: &str = "1.2.826.0.1.3680043.10.54321";
/// Dates that identify (birth date, real study dates); none may survive.
pub const CANARY_DATES: &[&str] = &["19530704", "20190406", "20190407", "20190408", "20000101"];
/// Text marker of every canary string.
pub const CANARY_TEXT: &str = "CNRY";

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// One patient's study as a hospital would send it.
#[derive(Debug, Clone)]
#[allow(clippy::struct_field_names)]
pub struct Instance {
    /// Local patient ID at the site (itself a canary).
    pub patient_id: String,
    pub study: u32,
    pub series: u32,
    pub instance: u32,
    pub modality: &'static str,
    pub sop_class: &'static str,
    pub rows: u16,
    pub columns: u16,
    /// Burned In Annotation value, if any.
    pub burned_in: Option<&'static str>,
    /// Extra pixel byte pattern seed, so instances differ.
    pub seed: u8,
}

impl Instance {
    pub fn ct(patient: u32, study: u32, series: u32, instance: u32) -> Self {
        Self {
            patient_id: format!("CNRY-MRN-{patient:05}"),
            study,
            series,
            instance,
            modality: "CT",
            sop_class: CT_IMAGE_STORAGE,
            rows: 16,
            columns: 16,
            burned_in: None,
            seed: u8::try_from(instance % 251).unwrap(),
        }
    }

    pub fn study_uid(&self) -> String {
        format!("{CANARY_UID_ROOT}.1.{}.{}", self.patient_number(), self.study)
    }

    pub fn series_uid(&self) -> String {
        format!("{CANARY_UID_ROOT}.2.{}.{}.{}", self.patient_number(), self.study, self.series)
    }

    pub fn sop_uid(&self) -> String {
        format!("{CANARY_UID_ROOT}.3.{}.{}.{}.{}", self.patient_number(), self.study, self.series, self.instance)
    }

    fn patient_number(&self) -> String {
        self.patient_id.trim_start_matches("CNRY-MRN-").to_owned()
    }

    /// The pixel data this instance carries (16-bit little endian).
    pub fn pixels(&self) -> Vec<u8> {
        let n = usize::from(self.rows) * usize::from(self.columns) * 2;
        (0..n).map(|i| u8::try_from(i % 256).unwrap() ^ self.seed).collect()
    }

    /// The Part-10 file, with canaries in more than forty places.
    #[allow(clippy::too_many_lines)] // one flat list of planted attributes reads best
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        let mut text = |tag: Tag, vr: VR, value: &str| {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        };
        // Patient
        text(tags::PATIENT_NAME, VR::PN, "CNRY^PATIENTNAME");
        text(tags::PATIENT_ID, VR::LO, &self.patient_id);
        text(tags::ISSUER_OF_PATIENT_ID, VR::LO, "CNRY-ISSUER");
        text(tags::PATIENT_BIRTH_DATE, VR::DA, "19530704");
        text(tags::PATIENT_SEX, VR::CS, "F");
        text(tags::PATIENT_SIZE, VR::DS, "1.68");
        text(tags::PATIENT_WEIGHT, VR::DS, "61.5");
        text(tags::PATIENT_ADDRESS, VR::LO, "CNRY 12 Hospital Road");
        text(Tag(0x0010, 0x1000), VR::LO, "CNRY-OTHERID"); // Other Patient IDs (retired, still sent)
        text(tags::OTHER_PATIENT_NAMES, VR::PN, "CNRY^OTHERNAME");
        text(tags::PATIENT_BIRTH_NAME, VR::PN, "CNRY^BIRTHNAME");
        text(tags::PATIENT_MOTHER_BIRTH_NAME, VR::PN, "CNRY^MOTHER");
        text(Tag(0x0010, 0x1090), VR::LO, "CNRY-MRL"); // Medical Record Locator (retired, still sent)
        text(tags::PATIENT_TELEPHONE_NUMBERS, VR::SH, "CNRY-555");
        text(tags::COUNTRY_OF_RESIDENCE, VR::LO, "CNRY-COUNTRY");
        text(tags::REGION_OF_RESIDENCE, VR::LO, "CNRY-REGION");
        text(tags::OCCUPATION, VR::SH, "CNRY-OCCUP");
        text(tags::ADDITIONAL_PATIENT_HISTORY, VR::LT, "CNRY history of the patient");
        text(tags::PATIENT_COMMENTS, VR::LT, "CNRY comments about the patient");
        // Study and visit
        text(tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid());
        text(tags::STUDY_DATE, VR::DA, "20190406");
        text(tags::STUDY_TIME, VR::TM, "101112");
        text(tags::ACCESSION_NUMBER, VR::SH, "CNRY-ACC-1");
        text(tags::STUDY_ID, VR::SH, "CNRY-SID");
        text(tags::STUDY_DESCRIPTION, VR::LO, "CT CHEST CNRY DR WHO");
        text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "CNRY^REFERRER");
        text(tags::REFERRING_PHYSICIAN_ADDRESS, VR::ST, "CNRY referrer address");
        text(tags::NAME_OF_PHYSICIANS_READING_STUDY, VR::PN, "CNRY^READER");
        text(tags::REQUESTING_PHYSICIAN, VR::PN, "CNRY^REQUESTER");
        text(tags::REQUESTED_PROCEDURE_DESCRIPTION, VR::LO, "CNRY requested procedure");
        text(tags::INSTITUTION_NAME, VR::LO, "CNRY General Hospital");
        text(tags::INSTITUTION_ADDRESS, VR::ST, "CNRY 1 Institution Street");
        text(tags::INSTITUTIONAL_DEPARTMENT_NAME, VR::LO, "CNRY Radiology");
        // Series and equipment
        text(tags::SERIES_INSTANCE_UID, VR::UI, &self.series_uid());
        text(tags::SERIES_DATE, VR::DA, "20190407");
        text(tags::ACQUISITION_DATE, VR::DA, "20190407");
        text(tags::ACQUISITION_DATE_TIME, VR::DT, "20190407101500");
        text(tags::CONTENT_DATE, VR::DA, "20190408");
        text(tags::MODALITY, VR::CS, self.modality);
        text(tags::SERIES_DESCRIPTION, VR::LO, "AX SOFT TISSUE CNRY");
        text(tags::SERIES_NUMBER, VR::IS, &self.series.to_string());
        text(tags::PROTOCOL_NAME, VR::LO, "CNRY protocol chest");
        text(tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
        text(tags::PERFORMING_PHYSICIAN_NAME, VR::PN, "CNRY^PERFORMER");
        text(tags::OPERATORS_NAME, VR::PN, "CNRY^OPERATOR");
        text(tags::PERFORMED_PROCEDURE_STEP_ID, VR::SH, "CNRY-PPS");
        text(tags::PERFORMED_PROCEDURE_STEP_DESCRIPTION, VR::LO, "CNRY performed step");
        text(tags::MANUFACTURER, VR::LO, "ACME Medical");
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "Scanner 3000");
        text(tags::STATION_NAME, VR::SH, "CNRY-STATION");
        text(tags::DEVICE_SERIAL_NUMBER, VR::LO, "CNRY-SERIAL");
        text(tags::SLICE_THICKNESS, VR::DS, "1.25");
        text(tags::FRAME_OF_REFERENCE_UID, VR::UI, &format!("{CANARY_UID_ROOT}.4.{}", self.patient_number()));
        text(tags::IRRADIATION_EVENT_UID, VR::UI, &format!("{CANARY_UID_ROOT}.5.{}", self.instance));
        // Instance
        text(tags::SOP_CLASS_UID, VR::UI, self.sop_class);
        text(tags::SOP_INSTANCE_UID, VR::UI, &self.sop_uid());
        text(tags::INSTANCE_NUMBER, VR::IS, &self.instance.to_string());
        text(tags::IMAGE_COMMENTS, VR::LT, "CNRY image comment");
        text(tags::DERIVATION_DESCRIPTION, VR::ST, "CNRY derivation");
        if let Some(burned_in) = self.burned_in {
            text(tags::BURNED_IN_ANNOTATION, VR::CS, burned_in);
        }
        let item = |elements: Vec<DataElement<InMemDicomObject>>| InMemDicomObject::from_element_iter(elements);
        let sequence = |tag: Tag, items: Vec<InMemDicomObject>| {
            DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
        };
        let s = |tag: Tag, vr: VR, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
        // Identifiers hidden inside sequences, two levels deep.
        obj.put(sequence(
            tags::OTHER_PATIENT_I_DS_SEQUENCE,
            vec![item(vec![
                s(tags::PATIENT_ID, VR::LO, "CNRY-NESTED-ID"),
                s(tags::ISSUER_OF_PATIENT_ID, VR::LO, "CNRY-NESTED-ISSUER"),
            ])],
        ));
        obj.put(sequence(
            tags::REFERENCED_STUDY_SEQUENCE,
            vec![item(vec![
                s(tags::REFERENCED_SOP_CLASS_UID, VR::UI, "1.2.840.10008.3.1.2.3.1"),
                s(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &format!("{CANARY_UID_ROOT}.6.{}", self.study)),
            ])],
        ));
        obj.put(sequence(
            tags::REFERENCED_IMAGE_SEQUENCE,
            vec![item(vec![
                s(tags::REFERENCED_SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
                s(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &Instance { instance: 1, ..self.clone() }.sop_uid()),
            ])],
        ));
        obj.put(sequence(
            tags::REQUEST_ATTRIBUTES_SEQUENCE,
            vec![item(vec![
                s(tags::REQUESTED_PROCEDURE_ID, VR::SH, "CNRY-RPID"),
                s(tags::SCHEDULED_PROCEDURE_STEP_ID, VR::SH, "CNRY-SPSID"),
                s(tags::ACCESSION_NUMBER, VR::SH, "CNRY-ACC-NESTED"),
                sequence(
                    tags::REFERENCED_STUDY_SEQUENCE,
                    vec![item(vec![s(
                        tags::REFERENCED_SOP_INSTANCE_UID,
                        VR::UI,
                        &format!("{CANARY_UID_ROOT}.7.{}", self.study),
                    )])],
                ),
            ])],
        ));
        obj.put(sequence(
            tags::REFERRING_PHYSICIAN_IDENTIFICATION_SEQUENCE,
            vec![item(vec![s(tags::INSTITUTION_NAME, VR::LO, "CNRY nested institution")])],
        ));
        // A vendor's private block with text in it.
        obj.put(s(Tag(0x0029, 0x0010), VR::LO, "CNRY VENDOR CREATOR"));
        obj.put(s(Tag(0x0029, 0x1010), VR::LO, "CNRY private patient note"));
        obj.put(DataElement::new(
            Tag(0x0029, 0x1011),
            VR::UN,
            PrimitiveValue::from(b"CNRY raw private bytes".to_vec()),
        ));
        // Overlay comments.
        obj.put(s(Tag(0x6000, 0x4000), VR::LT, "CNRY overlay comment"));
        // Image pixel module.
        obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)));
        obj.put(s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
        obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(self.rows)));
        obj.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(self.columns)));
        obj.put(s(tags::PIXEL_SPACING, VR::DS, "0.7\\0.7"));
        obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)));
        obj.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12_u16)));
        obj.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11_u16)));
        obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0_u16)));
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(self.pixels())));

        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(self.sop_class)
            .media_storage_sop_instance_uid(self.sop_uid())
            .transfer_syntax(EXPLICIT_VR_LE)
            .implementation_class_uid(format!("{CANARY_UID_ROOT}.99"))
            .source_application_entity_title("CNRY_AE")
            .build()
            .unwrap();
        let file = obj.with_exact_meta(meta);
        let mut out = Vec::new();
        file.write_all(&mut out).unwrap();
        // Some modalities hide data in the 128-byte preamble.
        out[..16].copy_from_slice(b"CNRY-PREAMBLE-16");
        out
    }
}

/// Every canary found in `haystack`, with some context, for assertion messages.
pub fn canaries_in(haystack: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let needles: Vec<&[u8]> = [CANARY_TEXT.as_bytes(), CANARY_UID_ROOT.as_bytes()]
        .into_iter()
        .chain(CANARY_DATES.iter().map(|d| d.as_bytes()))
        .collect();
    for needle in needles {
        for (i, window) in haystack.windows(needle.len()).enumerate() {
            if window.eq_ignore_ascii_case(needle) {
                let start = i.saturating_sub(24);
                let end = (i + needle.len() + 24).min(haystack.len());
                found.push(String::from_utf8_lossy(&haystack[start..end]).into_owned());
            }
        }
    }
    found
}
