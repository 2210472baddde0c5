//! Clean Descriptors: free text keeps only what a fixed vocabulary can vouch for.
//!
//! A study or series description such as "MR BRAIN W/O CONTRAST - DR SMITH 12/03"
//! carries names, dates and initials. Cleaning splits it into words (at spaces,
//! punctuation, `_`, `-`, `/` and case changes, so `SpinalCord_L` is three
//! words) and judges each against a fixed clinical vocabulary: modalities,
//! techniques, anatomy (with TG-263 structure names for RT), laterality,
//! targets and common findings.
//!
//! - When every word is known, the text says only known things: it stays as
//!   written (`Lung_L`, `PTV_70`, `Non-ossifying fibroma of distal tibia`).
//! - Otherwise the unknown words go, and a linking word (`of`, `with`, `and`)
//!   goes with its neighbours unless both sides stay, so no fragment such as
//!   `WITH OF OF` reads as content; what is left is upper case,
//!   space-separated ("MR BRAIN W/O CONTRAST").
//! - When nothing but generic words remains (`IMAGE`, `SERIES`), the value is
//!   emptied: it would say nothing true.
//!
//! Numbers are unknown words, except a number of one or two digits after a
//! kept word (`Isocenter 1`, `Lesion 2`) and a dose level of up to four after a
//! target volume (`PTV_7000`); no date, ID or MRN fits that.

use std::collections::HashSet;
use std::sync::LazyLock;

const VOCABULARY: &[&str] = &[
    // modalities and techniques
    "CT",
    "MR",
    "MRI",
    "PET",
    "SPECT",
    "NM",
    "US",
    "CR",
    "DX",
    "MG",
    "XA",
    "RF",
    "OT",
    "SC",
    "SEG",
    "RTSTRUCT",
    "DWI",
    "DTI",
    "ADC",
    "SWI",
    "FLAIR",
    "STIR",
    "MPRAGE",
    "TOF",
    "MRA",
    "CTA",
    "PERFUSION",
    "DIFFUSION",
    "BOLD",
    "FMRI",
    "SPIN",
    "ECHO",
    "GRADIENT",
    "GRE",
    "TSE",
    "FSE",
    "SE",
    "EPI",
    "VIBE",
    "DIXON",
    "FIESTA",
    "SSFP",
    "T1",
    "T2",
    "T2*",
    "PD",
    "T1W",
    "T2W",
    "PDW",
    "3D",
    "2D",
    "4D",
    "HR",
    "LOW",
    "HIGH",
    "DOSE",
    "LOWDOSE",
    "ULTRA",
    "SCOUT",
    "LOCALIZER",
    "LOCALISER",
    "SURVEY",
    "TOPOGRAM",
    "CALIBRATION",
    "MAP",
    "MIP",
    "MPR",
    "RECON",
    "RECONSTRUCTION",
    "KERNEL",
    "SOFT",
    "TISSUE",
    "BONE",
    "LUNG",
    "WINDOW",
    "THIN",
    "THICK",
    "SLICE",
    "SLICES",
    "VOLUME",
    "DYNAMIC",
    "DELAYED",
    "ARTERIAL",
    "VENOUS",
    "PORTAL",
    "PHASE",
    "NATIVE",
    "PLAIN",
    "POST",
    "PRE",
    "CONTRAST",
    "GADOLINIUM",
    "GD",
    "IV",
    "ORAL",
    "WITH",
    "WITHOUT",
    "AND",
    "OR",
    "OF",
    "W",
    "WO",
    "W/O",
    "W/",
    "+C",
    "-C",
    "C+",
    "C-",
    "FS",
    "FAT",
    "SAT",
    "WATER",
    "IN",
    "OUT",
    "OPP",
    "INPHASE",
    "OUTPHASE",
    "SUB",
    "SUBTRACTION",
    "STANDARD",
    "ROUTINE",
    "PROTOCOL",
    "SCREENING",
    "STAGING",
    "FOLLOW",
    "UP",
    "FOLLOWUP",
    "BASELINE",
    "SERIES",
    "STUDY",
    "EXAM",
    "IMAGE",
    "IMAGES",
    "VIEW",
    "VIEWS",
    "ORIGINAL",
    "DERIVED",
    "PRIMARY",
    "SECONDARY",
    "AXIAL",
    "AX",
    "SAGITTAL",
    "SAG",
    "CORONAL",
    "COR",
    "OBLIQUE",
    "OBL",
    "TRA",
    "TRANSVERSE",
    "LEFT",
    "RIGHT",
    "LT",
    "RT",
    "BILATERAL",
    "BILAT",
    "AP",
    "PA",
    "LAT",
    "LATERAL",
    "FRONTAL",
    "SUPINE",
    "PRONE",
    "UPRIGHT",
    "ERECT",
    "INSPIRATION",
    "EXPIRATION",
    "MAMMO",
    "MAMMOGRAPHY",
    "TOMO",
    "TOMOSYNTHESIS",
    "CC",
    "MLO",
    "DOPPLER",
    "COLOR",
    "COLOUR",
    "B-MODE",
    "M-MODE",
    "CINE",
    // anatomy
    "HEAD",
    "BRAIN",
    "SKULL",
    "NECK",
    "SPINE",
    "CERVICAL",
    "THORACIC",
    "LUMBAR",
    "SACRUM",
    "CHEST",
    "THORAX",
    "LUNGS",
    "HEART",
    "CARDIAC",
    "CORONARY",
    "AORTA",
    "ABDOMEN",
    "ABD",
    "PELVIS",
    "LIVER",
    "KIDNEY",
    "KIDNEYS",
    "RENAL",
    "PANCREAS",
    "SPLEEN",
    "PROSTATE",
    "BREAST",
    "BREASTS",
    "KNEE",
    "HIP",
    "SHOULDER",
    "ELBOW",
    "WRIST",
    "HAND",
    "ANKLE",
    "FOOT",
    "EXTREMITY",
    "WHOLE",
    "BODY",
    "WB",
    "ORBITS",
    "ORBIT",
    "SINUS",
    "SINUSES",
    "IAC",
    "PITUITARY",
    "TEMPORAL",
    "BONES",
    "CHOLANGIO",
    "MRCP",
    "ENTEROGRAPHY",
    "COLON",
    "RECTUM",
    "UTERUS",
    "OVARY",
    "THYROID",
    "VASCULAR",
    "ANGIO",
    "ANGIOGRAPHY",
    "VENOGRAPHY",
];

/// Words that only link others: kept only between two kept words.
const LINKING: &[&str] =
    &["WITH", "WITHOUT", "OF", "AND", "OR", "IN", "ON", "TO", "FOR", "AT", "THE", "W", "W/", "W/O", "WO", "&"];

/// Words that say nothing on their own: a cleaned value of only these is emptied.
const GENERIC: &[&str] = &[
    "IMAGE",
    "IMAGES",
    "SERIES",
    "STUDY",
    "EXAM",
    "VIEW",
    "VIEWS",
    "ORIGINAL",
    "DERIVED",
    "PRIMARY",
    "SECONDARY",
    "STANDARD",
    "ROUTINE",
    "PROTOCOL",
    "TEST",
    "PATIENT",
    "DOCUMENT",
    "REPORT",
    "UP",
    "OUT",
    "IN",
    "POST",
    "PRE",
    "HIGH",
    "LOW",
    "MID",
];

/// Words after which a dose level (up to four digits) may follow.
const TARGETS: &[&str] = &["GTV", "CTV", "PTV", "ITV", "IGTV", "PRV", "JPEG", "BOOST"];

/// TG-263 structure name parts, laterality, targets, further anatomy, common
/// findings and technical terms (compression), in addition to [`VOCABULARY`].
const CLINICAL: &[&str] = &[
    // laterality and position
    "L",
    "R",
    "LEFT",
    "RIGHT",
    "BILAT",
    "BILATERAL",
    "CONTRA",
    "IPSI",
    "PROXIMAL",
    "DISTAL",
    "MEDIAL",
    "ANTERIOR",
    "POSTERIOR",
    "SUPERIOR",
    "INFERIOR",
    "UPPER",
    "LOWER",
    "MIDDLE",
    "CENTRAL",
    "PERIPHERAL",
    "DEEP",
    "SUPERFICIAL",
    "ANT",
    "POST",
    "SUP",
    "INF",
    "PROX",
    "DIST",
    "MED",
    "INNER",
    "OUTER",
    "TOTAL",
    "PARTIAL",
    // RT targets and planning structures (TG-263)
    "GTV",
    "CTV",
    "PTV",
    "ITV",
    "IGTV",
    "PRV",
    "OAR",
    "BOOST",
    "NODAL",
    "NODES",
    "NODE",
    "LN",
    "LNS",
    "EVAL",
    "OPT",
    "RING",
    "AVOID",
    "AVOIDANCE",
    "COUCH",
    "SUPPORT",
    "MARKER",
    "MARKERS",
    "FIDUCIAL",
    "FIDUCIALS",
    "ISOCENTER",
    "ISOCENTRE",
    "ISO",
    "BOLUS",
    "EXTERNAL",
    "OUTLINE",
    "SKIN",
    "PATIENT",
    "HOT",
    "COLD",
    "SPOT",
    "DOSE",
    "PLAN",
    "BEAM",
    "FIELD",
    "ARC",
    "IMRT",
    "VMAT",
    "SBRT",
    "SRS",
    // TG-263 organs at risk and anatomy
    "BLADDER",
    "BOWEL",
    "BAG",
    "SMALL",
    "LARGE",
    "BRAINSTEM",
    "STEM",
    "COCHLEA",
    "ESOPHAGUS",
    "OESOPHAGUS",
    "EYE",
    "EYES",
    "GLOBE",
    "FEMUR",
    "FEMORAL",
    "LARYNX",
    "GLOTTIS",
    "LENS",
    "LIPS",
    "LIP",
    "MANDIBLE",
    "MAXILLA",
    "OPTIC",
    "CHIASM",
    "NRV",
    "NERVE",
    "NERVES",
    "PAROTID",
    "PAROTIDS",
    "SPINAL",
    "CORD",
    "CANAL",
    "STOMACH",
    "SUBMANDIBULAR",
    "SUBMAND",
    "GLND",
    "GLAND",
    "GLANDS",
    "TRACHEA",
    "BRONCHUS",
    "BRONCHI",
    "CARINA",
    "PENILE",
    "BULB",
    "SEMINAL",
    "SEMINALVES",
    "VESICLE",
    "VESICLES",
    "DUODENUM",
    "JEJUNUM",
    "ILEUM",
    "SIGMOID",
    "ANORECTUM",
    "ANAL",
    "ANUS",
    "URETHRA",
    "URETER",
    "URETERS",
    "VAGINA",
    "CERVIX",
    "OVARIES",
    "TESTIS",
    "TESTES",
    "CHESTWALL",
    "WALL",
    "LACRIMAL",
    "CORNEA",
    "RETINA",
    "HIPPOCAMPUS",
    "HIPPO",
    "CONSTRICTOR",
    "CONSTRICTORS",
    "PHARYNX",
    "PHARYNGEAL",
    "MUSC",
    "MUSCLE",
    "MUSCLES",
    "CAVITY",
    "CAV",
    "TONGUE",
    "TEETH",
    "TOOTH",
    "LOBE",
    "LOBES",
    "FRONTAL",
    "OCCIPITAL",
    "PARIETAL",
    "CEREBELLUM",
    "CEREBRUM",
    "CEREBRAL",
    "VENTRICLE",
    "VENTRICLES",
    "ATRIUM",
    "ATRIA",
    "LAD",
    "VENA",
    "CAVA",
    "IVC",
    "SVC",
    "PULMONARY",
    "ARTERY",
    "ARTERIES",
    "VEIN",
    "VEINS",
    "VESSEL",
    "VESSELS",
    "RIB",
    "RIBS",
    "STERNUM",
    "VERTEBRA",
    "VERTEBRAE",
    "VB",
    "COCCYX",
    "HUMERUS",
    "TIBIA",
    "FIBULA",
    "RADIUS",
    "ULNA",
    "PATELLA",
    "SCAPULA",
    "CLAVICLE",
    "ILIUM",
    "ILIAC",
    "ISCHIUM",
    "PUBIS",
    "ACETABULUM",
    "CALCANEUS",
    "TALUS",
    "PLEXUS",
    "BRACHIAL",
    "CAUDA",
    "EQUINA",
    "THECAL",
    "SAC",
    "MEDIASTINUM",
    "PERICARDIUM",
    "PLEURA",
    "DIAPHRAGM",
    "GALLBLADDER",
    "BILIARY",
    "BILE",
    "DUCT",
    "ADRENAL",
    "ADRENALS",
    "HEPATIC",
    "SPLENIC",
    "MESENTERY",
    "PERITONEUM",
    "LYMPH",
    "AXILLA",
    "AXILLARY",
    "SUPRACLAV",
    "SUPRACLAVICULAR",
    "IMN",
    "INTERNAL",
    "MAMMARY",
    "NIPPLE",
    "SEROMA",
    "CAVITY",
    "TUMORBED",
    "BED",
    "SURGICAL",
    "POSTOP",
    "PREOP",
    "NASOPHARYNX",
    "OROPHARYNX",
    "HYPOPHARYNX",
    "ORAL",
    "PALATE",
    "SALIVARY",
    "THYROIDAL",
    "JOINT",
    "TMJ",
    "EAR",
    "EARS",
    "NOSE",
    "NASAL",
    "FACE",
    "SCALP",
    "ARM",
    "ARMS",
    "LEG",
    "LEGS",
    "FOREARM",
    "THIGH",
    "CALF",
    "FINGER",
    "FINGERS",
    "TOE",
    "TOES",
    "BRAINS",
    "CORPUS",
    "CALLOSUM",
    "THALAMUS",
    "PONS",
    "MEDULLA",
    "MIDBRAIN",
    "GLOBUS",
    "PALLIDUS",
    "CAUDATE",
    "PUTAMEN",
    "AMYGDALA",
    "CORTEX",
    "WHITE",
    "GREY",
    "GRAY",
    "MATTER",
    "CSF",
    "SKELETON",
    "MARROW",
    "CARTILAGE",
    "TENDON",
    "LIGAMENT",
    "MENISCUS",
    "LABRUM",
    "ROTATOR",
    "CUFF",
    "DISC",
    "DISCS",
    "DISK",
    "FORAMEN",
    "AORTIC",
    "VALVE",
    "MITRAL",
    "TRICUSPID",
    "MYOCARDIUM",
    "LV",
    "RV",
    "LA",
    "RA",
    "SPINE",
    // findings
    "NON",
    "OSSIFYING",
    "FIBROMA",
    "BENIGN",
    "MALIGNANT",
    "TUMOR",
    "TUMOUR",
    "LESION",
    "LESIONS",
    "MASS",
    "MASSES",
    "CYST",
    "CYSTS",
    "NODULE",
    "NODULES",
    "FRACTURE",
    "METASTASIS",
    "METASTASES",
    "MET",
    "METS",
    "CARCINOMA",
    "SARCOMA",
    "LYMPHOMA",
    "ADENOMA",
    "GLIOMA",
    "GLIOBLASTOMA",
    "MENINGIOMA",
    "OSTEOSARCOMA",
    "CHONDROSARCOMA",
    "ENCHONDROMA",
    "OSTEOCHONDROMA",
    "HEMANGIOMA",
    "HAEMANGIOMA",
    "LIPOMA",
    "INFARCT",
    "INFARCTION",
    "HEMORRHAGE",
    "HAEMORRHAGE",
    "BLEED",
    "EDEMA",
    "OEDEMA",
    "NECROSIS",
    "ABSCESS",
    "STENOSIS",
    "ANEURYSM",
    "EFFUSION",
    "PNEUMONIA",
    "PNEUMOTHORAX",
    "EMPHYSEMA",
    "FIBROSIS",
    "CALCIFICATION",
    "NORMAL",
    "ABNORMAL",
    "PRIMARY",
    "RECURRENCE",
    "RESIDUAL",
    "ENHANCING",
    "ENHANCEMENT",
    "NECROTIC",
    "SOLID",
    "CYSTIC",
    "INFILTRATIVE",
    // technique and processing
    "UNCOMPRESSED",
    "COMPRESSED",
    "COMPRESSION",
    "LOSSY",
    "LOSSLESS",
    "REVERSIBLE",
    "IRREVERSIBLE",
    "JPEG",
    "JPEG2000",
    "JPEG-LS",
    "RLE",
    "DEFLATE",
    "BASELINE",
    "EXTENDED",
    "PROCESS",
    "SEGMENTATION",
    "SEGMENT",
    "SEGMENTS",
    "MASK",
    "CONTOUR",
    "CONTOURS",
    "STRUCTURE",
    "STRUCTURES",
    "STRUCTURED",
    "REPORTING",
    "REPORT",
    "DOCUMENT",
    "MEASUREMENT",
    "MEASUREMENTS",
    "RESAMPLED",
    "REFORMATTED",
    "REFORMAT",
    "REGISTERED",
    "REGISTRATION",
    "FUSION",
    "FUSED",
    "ATTENUATION",
    "CORRECTED",
    "CORRECTION",
    "AC",
    "NAC",
    "TEST",
    "PATTERN",
    "PHANTOM",
    "QA",
    "QC",
];

static KNOWN: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| VOCABULARY.iter().chain(CLINICAL).chain(LINKING).copied().collect());

/// How one word fares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// A vocabulary word that says something.
    Content,
    /// A vocabulary word that only links others.
    Linking,
    /// A short number after a kept word.
    Number,
    Unknown,
}

/// The words of `text`: whitespace-separated words the vocabulary knows whole
/// (`W/O`, `T2*`, `B-MODE`), else their parts split at punctuation and case changes.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split(|c: char| c.is_whitespace() || c == '\\') {
        let word = raw.trim_matches(|c: char| matches!(c, '.' | ',' | ';' | ':' | '(' | ')' | '[' | ']' | '"' | '\''));
        if word.is_empty() {
            continue;
        }
        if KNOWN.contains(word.to_ascii_uppercase().as_str()) {
            out.push(word.to_ascii_uppercase());
            continue;
        }
        for part in word.split(|c: char| !c.is_alphanumeric() && c != '*') {
            split_case(part, &mut out);
        }
    }
    out
}

/// Splits `SpinalCord` into `SPINAL`, `CORD` and `PTV70` into `PTV`, `70`
/// (only where the whole is not a known word, so `T1W` stays one).
fn split_case(part: &str, out: &mut Vec<String>) {
    if part.is_empty() {
        return;
    }
    if KNOWN.contains(part.to_ascii_uppercase().as_str()) {
        out.push(part.to_ascii_uppercase());
        return;
    }
    let chars: Vec<char> = part.chars().collect();
    let mut start = 0;
    for i in 1..chars.len() {
        let (a, b) = (chars[i - 1], chars[i]);
        if (a.is_lowercase() && b.is_uppercase()) || (a.is_alphabetic() && b.is_ascii_digit()) {
            out.push(chars[start..i].iter().collect::<String>().to_uppercase());
            start = i;
        }
    }
    out.push(chars[start..].iter().collect::<String>().to_uppercase());
}

/// The cleaned descriptor: `text` itself when every word is known, the kept
/// words when some are not, empty when what would remain says nothing.
pub fn clean_descriptor(text: &str) -> String {
    let words = words(text);
    let mut fates: Vec<Fate> = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        let after_kept = i > 0 && matches!(fates[i - 1], Fate::Content | Fate::Number);
        let fate = if LINKING.contains(&word.as_str()) {
            Fate::Linking
        } else if KNOWN.contains(word.as_str()) {
            Fate::Content
        } else if word.bytes().all(|b| b.is_ascii_digit()) && after_kept {
            let limit = if TARGETS.contains(&words[i - 1].as_str()) { 4 } else { 2 };
            if word.len() <= limit { Fate::Number } else { Fate::Unknown }
        } else {
            Fate::Unknown
        };
        fates.push(fate);
    }
    // A linking word stays only between kept words (or leading into one).
    let mut kept = vec![false; words.len()];
    for i in 0..words.len() {
        kept[i] = match fates[i] {
            Fate::Content | Fate::Number => true,
            Fate::Unknown => false,
            Fate::Linking => {
                let before = i == 0 || kept[i - 1];
                let after = fates.get(i + 1).is_some_and(|f| matches!(f, Fate::Content | Fate::Number));
                before && after
            }
        };
    }
    let says_something = words
        .iter()
        .zip(&fates)
        .zip(&kept)
        .any(|((w, f), k)| *k && *f == Fate::Content && !GENERIC.contains(&w.as_str()));
    if !says_something {
        return String::new();
    }
    if kept.iter().all(|k| *k) {
        return text.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_owned();
    }
    words.iter().zip(&kept).filter(|(_, k)| **k).map(|(w, _)| w.as_str()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::clean_descriptor;

    #[test]
    fn descriptions_keep_imaging_words_and_drop_names_dates_and_numbers() {
        assert_eq!(clean_descriptor("MR BRAIN W/O CONTRAST - DR SMITH 12/03/2021"), "MR BRAIN W/O CONTRAST");
        assert_eq!(clean_descriptor("t1_mprage_sag_p2_iso"), "T1 MPRAGE SAG ISO");
        assert_eq!(clean_descriptor("Ax T2 FLAIR (JOHN DOE)"), "AX T2 FLAIR");
        assert_eq!(clean_descriptor("ACC#7781234 CHEST PA"), "CHEST PA");
        assert_eq!(clean_descriptor("Smith^John"), "");
        assert_eq!(clean_descriptor(""), "");
    }

    #[test]
    fn what_remains_must_still_say_something_true() {
        assert_eq!(clean_descriptor("Test Image with 10 rows of (255,0,0)"), "", "not IMAGE WITH OF OF OF");
        assert_eq!(clean_descriptor("Uncompressed"), "Uncompressed", "a harmless word stays");
        assert_eq!(clean_descriptor("JPEG 2000 irreversible (lossy) 2097:1"), "JPEG 2000 IRREVERSIBLE LOSSY");
        assert_eq!(clean_descriptor("Lossy compression with JPEG baseline"), "Lossy compression with JPEG baseline");
        assert_eq!(clean_descriptor("Derived from SMITH with baseline"), "DERIVED BASELINE", "no dangling WITH");
        assert_eq!(clean_descriptor("Whole Body Bone"), "Whole Body Bone");
        assert_eq!(clean_descriptor("THE OUTPUT OF THIS SOFTWARE IS FOR INVESTIGATIONAL USE ONLY"), "");
    }

    #[test]
    fn structure_names_keep_their_clinical_meaning_and_laterality() {
        for name in ["GTV", "PTV_70", "PTV_7000", "SpinalCord", "Parotid_R", "Lung_L", "OpticNrv_L", "Glnd_Submand_R"] {
            assert_eq!(clean_descriptor(name), name);
        }
        assert_eq!(clean_descriptor("Non-ossifying fibroma of distal tibia"), "Non-ossifying fibroma of distal tibia");
        assert_eq!(clean_descriptor("Isocenter 1"), "Isocenter 1");
        assert_eq!(clean_descriptor("Lung_L_JS"), "LUNG L", "initials go, laterality stays");
        assert_eq!(clean_descriptor("PTV_20190401"), "PTV", "no date after a target");
        assert_eq!(clean_descriptor("Lesion 123456"), "LESION");
    }
}
