//! Synthetic DICOM for the demo registry: small MR and CT series and single
//! chest radiographs as a hospital's modality would send them, with the
//! identifiers a real file carries (patient name, ID and birth date, study
//! dates, accession number, institution, station, physicians), so that
//! de-identification at ingest visibly does its work. Pixels are an
//! ellipse phantom of the body part with noise, drawn from a generator seeded
//! per instance, so the same plan always gives the same bytes.

use chrono::NaiveDate;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

use super::registry::Rng;

/// Explicit VR Little Endian.
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// The root of every original (pre-ingest) UID of the demo: ingest replaces
/// them all, so it never appears in a stored object.
pub const UID_ROOT: &str = "1.2.826.0.1.3680043.10.1447";

/// Referring Physician's Name (0008,0090) of every study.
pub const REFERRING_PHYSICIAN: &str = "Weber^Clara^^Dr.";
/// Operators' Name (0008,1070) of every study.
pub const OPERATOR: &str = "Jansen^Tom";

/// Given names and family names the demo's patients are called by.
const GIVEN: &[&str] = &[
    "Anna", "Lukas", "Sophie", "Jan", "Marie", "Pieter", "Camille", "Hugo", "Lea", "Noah", "Emma", "Daan", "Julia",
    "Louis", "Mila", "Felix", "Sanne", "Theo", "Ines", "Bram",
];
const FAMILY: &[&str] = &[
    "Hoffmann",
    "Janssen",
    "Lefebvre",
    "Schreiber",
    "Visser",
    "Moreau",
    "Zimmermann",
    "Bakker",
    "Fontaine",
    "Krueger",
    "Mulder",
    "Chevalier",
    "Lindqvist",
    "Dubois",
    "Vermeulen",
    "Haas",
    "Rousseau",
    "Brandt",
    "Smits",
    "Girard",
];

/// Who a synthetic patient is at their hospital: what a file would give away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    /// The hospital's code of the site, e.g. `uhb`.
    pub site: &'static str,
    /// Local patient ID, the same the demo's subject rows are pseudonymized from.
    pub id: String,
    /// Patient's Name (0010,0010) as DICOM writes it: `Family^Given`.
    pub name: String,
    pub birth_date: NaiveDate,
    pub female: bool,
}

impl Patient {
    /// Patient `number` of the registry generated from `seed`, at `site`, born in `birth_year`.
    pub fn new(seed: u64, number: u32, site: &'static str, birth_year: i32, female: bool) -> Self {
        let mut rng = Rng::new(seed ^ 0x9a71_e470_0000_0000 ^ u64::from(number).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let given = GIVEN[usize::try_from(rng.next_u64() % GIVEN.len() as u64).unwrap_or(0)];
        let family = FAMILY[usize::try_from(rng.next_u64() % FAMILY.len() as u64).unwrap_or(0)];
        let day = u32::try_from(rng.between(0, 364)).unwrap_or(0);
        let birth_date = NaiveDate::from_yo_opt(birth_year, 1 + day)
            .unwrap_or_else(|| NaiveDate::from_ymd_opt(birth_year, 7, 1).unwrap_or(NaiveDate::MIN));
        Self { site, id: local_id(number), name: format!("{family}^{given}"), birth_date, female }
    }
}

/// The local patient ID of patient `number`.
pub fn local_id(number: u32) -> String {
    format!("SYN{number:07}")
}

/// What the equipment of a site writes into every file it sends.
#[derive(Debug, Clone, Copy)]
pub struct Equipment {
    pub manufacturer: &'static str,
    pub model: &'static str,
    pub field_strength: Option<f64>,
    pub modality: &'static str,
    /// Institution Name (0008,0080), identifying the hospital.
    pub institution: &'static str,
    /// Station Name (0008,1010).
    pub station: &'static str,
}

/// One instance to generate.
#[derive(Debug, Clone)]
pub struct Instance {
    pub patient: Patient,
    pub equipment: Equipment,
    pub body_part: &'static str,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    /// The date of the study as the hospital recorded it (before any shift).
    pub date: NaiveDate,
    pub accession: String,
    pub series_number: i32,
    /// From 1.
    pub instance_number: i32,
    /// Slices of the series.
    pub slices: i32,
    /// Rows and columns (default: 64, or 128 for a radiograph).
    pub matrix: Option<u16>,
    /// Seeds the pixels' noise.
    pub seed: u64,
}

impl Instance {
    /// The SOP Class of the instance's modality.
    pub fn sop_class(&self) -> &'static str {
        match self.equipment.modality {
            "MR" => "1.2.840.10008.5.1.4.1.1.4",
            "CT" => "1.2.840.10008.5.1.4.1.1.2",
            _ => "1.2.840.10008.5.1.4.1.1.1.1", // Digital X-Ray Image Storage - For Presentation
        }
    }

    fn series_description(&self) -> &'static str {
        match (self.equipment.modality, self.series_number) {
            ("MR", 1) => "T1 MPRAGE",
            ("MR", 2) => "T2 FLAIR",
            ("MR", _) => "DWI",
            ("CT", 1) => "Topogram",
            ("CT", _) => "Axial 1.0",
            (_, 1) => "PA",
            _ => "LAT",
        }
    }

    /// The instance as a Part-10 file.
    pub fn to_part10(&self) -> Vec<u8> {
        let e = &self.equipment;
        let side = self.matrix.unwrap_or(if e.modality == "DX" { 128 } else { 64 });
        let (rows, columns) = (side, side);
        let date = self.date.format("%Y%m%d").to_string();
        let mut obj = InMemDicomObject::new_empty();
        let mut put = |tag, vr, value: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        put(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
        put(tags::SOP_CLASS_UID, VR::UI, self.sop_class());
        put(tags::SOP_INSTANCE_UID, VR::UI, &self.sop_uid);
        put(tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid);
        put(tags::SERIES_INSTANCE_UID, VR::UI, &self.series_uid);
        put(tags::STUDY_DATE, VR::DA, &date);
        put(tags::SERIES_DATE, VR::DA, &date);
        put(tags::ACQUISITION_DATE, VR::DA, &date);
        put(tags::CONTENT_DATE, VR::DA, &date);
        put(tags::STUDY_TIME, VR::TM, "093512");
        put(tags::SERIES_TIME, VR::TM, "094007");
        put(tags::ACCESSION_NUMBER, VR::SH, &self.accession);
        put(tags::STUDY_ID, VR::SH, &self.accession[self.accession.len().saturating_sub(6)..]);
        put(tags::MODALITY, VR::CS, e.modality);
        put(tags::MANUFACTURER, VR::LO, e.manufacturer);
        put(tags::MANUFACTURER_MODEL_NAME, VR::LO, e.model);
        put(tags::INSTITUTION_NAME, VR::LO, e.institution);
        put(tags::STATION_NAME, VR::SH, e.station);
        put(tags::REFERRING_PHYSICIAN_NAME, VR::PN, REFERRING_PHYSICIAN);
        put(tags::OPERATORS_NAME, VR::PN, OPERATOR);
        put(tags::STUDY_DESCRIPTION, VR::LO, &format!("{} {}", e.modality, self.body_part));
        put(tags::SERIES_DESCRIPTION, VR::LO, self.series_description());
        put(tags::PATIENT_NAME, VR::PN, &self.patient.name);
        put(tags::PATIENT_ID, VR::LO, &self.patient.id);
        put(tags::PATIENT_BIRTH_DATE, VR::DA, &self.patient.birth_date.format("%Y%m%d").to_string());
        put(tags::PATIENT_SEX, VR::CS, if self.patient.female { "F" } else { "M" });
        put(tags::BODY_PART_EXAMINED, VR::CS, self.body_part);
        put(tags::SERIES_NUMBER, VR::IS, &self.series_number.to_string());
        put(tags::INSTANCE_NUMBER, VR::IS, &self.instance_number.to_string());
        put(tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        if e.modality == "DX" {
            put(tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PRESENTATION");
            put(tags::VIEW_POSITION, VR::CS, if self.series_number == 1 { "PA" } else { "LL" });
            put(tags::IMAGER_PIXEL_SPACING, VR::DS, "2.8\\2.8");
            put(tags::WINDOW_CENTER, VR::DS, "2048");
            put(tags::WINDOW_WIDTH, VR::DS, "4096");
        } else {
            // Slices 4 mm apart through the middle of the volume.
            let z = 4.0 * (f64::from(self.instance_number) - f64::from(self.slices + 1) / 2.0);
            put(tags::FRAME_OF_REFERENCE_UID, VR::UI, &format!("{}.0", self.study_uid));
            put(tags::SLICE_THICKNESS, VR::DS, "4");
            put(tags::PIXEL_SPACING, VR::DS, "3.5\\3.5");
            put(tags::IMAGE_POSITION_PATIENT, VR::DS, &format!("-112\\-112\\{z}"));
            put(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0");
            put(tags::SLICE_LOCATION, VR::DS, &z.to_string());
            if let Some(tesla) = e.field_strength {
                put(tags::MAGNETIC_FIELD_STRENGTH, VR::DS, &tesla.to_string());
            }
            if e.modality == "CT" {
                put(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
                put(tags::RESCALE_SLOPE, VR::DS, "1");
                put(tags::WINDOW_CENTER, VR::DS, "40");
                put(tags::WINDOW_WIDTH, VR::DS, "400");
            } else {
                put(tags::WINDOW_CENTER, VR::DS, "600");
                put(tags::WINDOW_WIDTH, VR::DS, "1200");
            }
        }
        put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        let mut put_us = |tag, value: u16| obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        put_us(tags::SAMPLES_PER_PIXEL, 1);
        put_us(tags::ROWS, rows);
        put_us(tags::COLUMNS, columns);
        put_us(tags::BITS_ALLOCATED, 16);
        put_us(tags::BITS_STORED, 12);
        put_us(tags::HIGH_BIT, 11);
        put_us(tags::PIXEL_REPRESENTATION, 0);
        let pixels: Vec<u8> = self.pixels(rows, columns).into_iter().flat_map(u16::to_le_bytes).collect();
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels)));

        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(self.sop_class())
            .media_storage_sop_instance_uid(self.sop_uid.clone())
            .transfer_syntax(EXPLICIT_VR_LE)
            .implementation_class_uid(format!("{UID_ROOT}.0"))
            .source_application_entity_title(e.station)
            .build()
            .expect("the demo's file meta group is complete");
        let mut out = Vec::with_capacity(usize::from(rows) * usize::from(columns) * 2 + 2048);
        obj.with_exact_meta(meta).write_all(&mut out).expect("an in-memory data set encodes");
        out
    }

    /// The phantom of the body part at this slice, with noise, in stored values.
    fn pixels(&self, rows: u16, columns: u16) -> Vec<u16> {
        // Ellipses (centre x, centre y, semi-axis x, semi-axis y, value added),
        // in a frame from -1 to 1; values are stored values (CT: HU + 1024).
        let ellipses: &[(f64, f64, f64, f64, f64)] = match (self.equipment.modality, self.body_part) {
            ("DX", _) => &[
                (0.0, 0.05, 0.85, 0.9, 2600.0),
                (-0.38, -0.05, 0.3, 0.62, -1500.0),
                (0.38, -0.05, 0.3, 0.62, -1500.0),
                (0.0, 0.0, 0.1, 0.9, 900.0),
                (0.12, 0.35, 0.22, 0.2, 500.0),
            ],
            ("CT", "CHEST") => &[
                (0.0, 0.0, 0.9, 0.65, 1064.0),
                (-0.42, -0.05, 0.3, 0.45, -840.0),
                (0.42, -0.05, 0.3, 0.45, -840.0),
                (0.0, 0.45, 0.12, 0.12, 660.0),
            ],
            ("CT", "ABDOMEN") => {
                &[(0.0, 0.0, 0.9, 0.7, 1064.0), (-0.35, -0.1, 0.35, 0.3, 20.0), (0.0, 0.5, 0.12, 0.12, 660.0)]
            }
            ("CT", _) => &[(0.0, 0.0, 0.7, 0.88, 2024.0), (0.0, 0.0, 0.64, 0.82, -964.0)],
            ("MR", "HEAD") => &[
                (0.0, 0.0, 0.7, 0.88, 350.0),
                (0.0, 0.0, 0.64, 0.82, 450.0),
                (-0.12, -0.1, 0.08, 0.3, -600.0),
                (0.12, -0.1, 0.08, 0.3, -600.0),
                (0.3, 0.35, 0.06, 0.06, 400.0),
            ],
            _ => &[(0.0, 0.0, 0.6, 0.85, 700.0), (0.0, 0.0, 0.25, 0.35, 300.0)],
        };
        // Volumes narrow towards their ends.
        let z = if self.slices > 1 {
            (f64::from(self.instance_number - 1) / f64::from(self.slices - 1) - 0.5) * 1.2
        } else {
            0.0
        };
        let scale = (1.0 - z * z).max(0.2).sqrt();
        let noise = if self.equipment.modality == "DX" { 40.0 } else { 15.0 };
        let base = if self.equipment.modality == "DX" { 300.0 } else { 0.0 };
        let mut rng = Rng::new(self.seed);
        let (rows, columns) = (usize::from(rows), usize::from(columns));
        let mut out = Vec::with_capacity(rows * columns);
        for r in 0..rows {
            #[allow(clippy::cast_precision_loss)] // at most 128
            let y = (r as f64 + 0.5) / rows as f64 * 2.0 - 1.0;
            for c in 0..columns {
                #[allow(clippy::cast_precision_loss)] // at most 128
                let x = (c as f64 + 0.5) / columns as f64 * 2.0 - 1.0;
                let mut v = base;
                for &(cx, cy, a, b, value) in ellipses {
                    let (dx, dy) = ((x - cx) / (a * scale), (y - cy) / (b * scale));
                    if dx * dx + dy * dy <= 1.0 {
                        v += value;
                    }
                }
                // Air stays dark: noise only where there is signal. The sum
                // of four uniforms is near enough to normal, and cheap.
                if v > base {
                    let bits = rng.next_u64();
                    let sum: u64 = (0..4).map(|i| (bits >> (16 * i)) & 0xffff).sum();
                    #[allow(clippy::cast_precision_loss)] // below 2^18
                    let centred = sum as f64 / 65_536.0 - 2.0;
                    // The sum's standard deviation is sqrt(4/12).
                    v += centred * noise * 1.732;
                }
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped to 12 bits
                out.push(v.clamp(0.0, 4095.0) as u16);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> Patient {
        Patient::new(42, 7, "uhb", 1961, true)
    }

    fn instance(patient: &Patient, modality: &'static str, body_part: &'static str) -> Instance {
        Instance {
            patient: patient.clone(),
            equipment: Equipment {
                manufacturer: "Philips",
                model: "Ingenia",
                field_strength: Some(3.0),
                modality,
                institution: "University Hospital B",
                station: "UHB-MR1",
            },
            body_part,
            study_uid: format!("{UID_ROOT}.42.1"),
            series_uid: format!("{UID_ROOT}.42.1.1"),
            sop_uid: format!("{UID_ROOT}.42.1.1.1"),
            date: NaiveDate::from_ymd_opt(2016, 3, 9).unwrap(),
            accession: "UHB16000123".into(),
            series_number: 1,
            instance_number: 2,
            slices: 3,
            matrix: None,
            seed: 5,
        }
    }

    #[test]
    fn a_patient_is_the_same_for_the_same_seed_and_number_and_born_in_their_year() {
        assert_eq!(patient(), patient());
        assert_eq!(patient().id, "SYN0000007");
        assert_eq!(chrono::Datelike::year(&patient().birth_date), 1961);
        assert_ne!(Patient::new(43, 7, "uhb", 1961, true).name, "", "a name for every seed");
    }

    #[test]
    fn an_instance_is_readable_dicom_with_the_hospital_identifiers_and_a_phantom() {
        let patient = patient();
        for (modality, body_part, size) in [("MR", "HEAD", 64), ("CT", "CHEST", 64), ("DX", "CHEST", 128)] {
            let bytes = instance(&patient, modality, body_part).to_part10();
            assert_eq!(bytes, instance(&patient, modality, body_part).to_part10(), "deterministic");
            let file = dicom_object::from_reader(&bytes[128..]).unwrap();
            let text = |tag| file.element(tag).unwrap().to_str().unwrap().trim_end_matches(['\0', ' ']).to_owned();
            assert_eq!(text(tags::PATIENT_ID), "SYN0000007");
            assert_eq!(text(tags::PATIENT_NAME), patient.name);
            assert_eq!(text(tags::MODALITY), modality);
            assert_eq!(text(tags::STUDY_DATE), "20160309");
            let pixels = file.element(tags::PIXEL_DATA).unwrap().to_multi_int::<u16>().unwrap();
            assert_eq!(pixels.len(), size * size);
            let (low, high) = (pixels.iter().min().unwrap(), pixels.iter().max().unwrap());
            assert!(high - low > 500, "{modality}: contrast between air and body ({low}..{high})");
        }
    }
}
