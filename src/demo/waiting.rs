//! What waits for people in the demo, so that every page has something to act
//! on right after `serve --demo`: an application the committee has not yet
//! looked at (the stewards' inbox), an ultrasound image with text burned into
//! its pixels held in quarantine (the quarantine review and its preview), and
//! a release of the approved project (the researcher's releases, built by the
//! node's job worker). Each goes through the service functions the API calls,
//! and each is made only when missing.

use std::sync::Arc;

use anyhow::{Context, Result};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use serde_json::json;

use super::dicom::UID_ROOT;
use crate::access::{projects, standing};
use crate::auth::{Credential, Principal, Role};
use crate::config::Config;
use crate::deid::RegistryKey;
use crate::ingest::{Ingestor, Received};

/// The title of the project whose application waits for review.
pub const WAITING_TITLE: &str = "Scanner harmonisation for brain volumetry (demo)";

/// The site whose upload holds the ultrasound image.
const ULTRASOUND_SITE: &str = "cmc";

fn principal(username: &str, role: Role) -> Principal {
    Principal { username: username.to_owned(), roles: vec![role], credential: Credential::Jwt }
}

/// Seeds whatever of the three is missing.
pub async fn seed(ingest: &Arc<Ingestor>, config: &Config, key: &RegistryKey) -> Result<()> {
    waiting_application(ingest, config, key).await?;
    quarantined_ultrasound(ingest, key).await?;
    first_release(ingest, config).await
}

/// Rita's second project, its application submitted and not yet reviewed.
async fn waiting_application(ingest: &Arc<Ingestor>, config: &Config, key: &RegistryKey) -> Result<()> {
    let db = &ingest.db;
    let exists = sqlx::query_scalar!(
        r#"select exists (select 1 from project where title = $1 and pi_username = 'rita') as "e!""#,
        WAITING_TITLE
    )
    .fetch_one(db)
    .await?;
    if exists || !super::registry::exists(&mut *db.acquire().await?).await? {
        return Ok(());
    }
    let rita = principal("rita", Role::Researcher);
    let project = projects::create_project(db, &rita, WAITING_TITLE).await?.id;
    let content = serde_json::from_value(json!({
        "title": "Scanner harmonisation for brain volumetry",
        "lay_summary": "Brain volumes measured on different scanners differ; we learn to correct for it.",
        "rationale": "The registry's three sites scan on different vendors' MRI, the site effect we want to remove.",
        "methods": "ComBat harmonisation of FreeSurfer volumes, validated by site-held-out prediction of age.",
        "scope": {
            "cohorts": ["demo-neuro-mri"],
            "fields": ["age_at_study", "sex", "site", "manufacturer", "field_strength"],
            "modalities": ["MR"],
            "imaging": true
        },
        "intended_use": {
            "purpose": "HMB", "duration_months": 12, "ethics_approval": "REC 26/LO/0117",
            "processing_countries": ["IT"]
        },
        "data_security": "University HPC, ISO 27001 certified; data never leave it.",
        "public_interest": "Models that work at every hospital, not only the one they were trained at."
    }))
    .context("the demo's waiting application")?;
    let (_, tx) = super::project::submit(db, config, key, &rita, project, &content).await?;
    tx.commit().await?;
    Ok(())
}

/// Ulrich's upload of an ultrasound image whose pixels carry the patient's
/// name and date of birth: stored de-identified, held in quarantine.
/// The image is of a patient already in the neuro cohort, so that the
/// cohort's members stay those the registry generated, and not in the open
/// challenge cohort, whose publication a quarantined instance would hold up.
async fn quarantined_ultrasound(ingest: &Arc<Ingestor>, key: &RegistryKey) -> Result<()> {
    let db = &ingest.db;
    let held = sqlx::query_scalar!(r#"select exists (select 1 from instance where status = 'quarantined') as "e!""#)
        .fetch_one(db)
        .await?;
    if held || !super::registry::exists(&mut *db.acquire().await?).await? {
        return Ok(());
    }
    let candidates: Vec<(String, String)> = (1..=2_000)
        .map(|n| {
            let local = super::dicom::local_id(n);
            (key.subject(ULTRASOUND_SITE, &local), local)
        })
        .collect();
    let pseudonyms: Vec<String> = candidates.iter().map(|c| c.0.clone()).collect();
    let member = sqlx::query_scalar!(
        "select s.pseudonym from subject s
         join cohort_subject cs on cs.subject_id = s.subject_id
         join cohort c on c.cohort_id = cs.cohort_id
         where c.slug = 'demo-neuro-mri' and s.pseudonym = any($1)
           and not exists (select 1 from cohort_subject x join cohort o on o.cohort_id = x.cohort_id
                           where x.subject_id = s.subject_id and o.slug = $2)
         limit 1",
        &pseudonyms,
        super::challenge::SLUG
    )
    .fetch_optional(db)
    .await?;
    let Some(patient) = member.and_then(|p| candidates.into_iter().find(|c| c.0 == p)).map(|c| c.1) else {
        return Ok(());
    };
    let origin = json!({ "via": "demo" });
    let session = ingest
        .open_session("ulrich", "demo-neuro-mri", ULTRASOUND_SITE, &origin)
        .await?
        .context("the demo cohorts and sites are missing")?;
    let file = Received::File(ultrasound(&patient).into());
    let reports = ingest.ingest_batch("ulrich", &session.target(), futures::stream::iter([Ok(file)])).await?;
    let outcome = reports.first().map(|r| (r.outcome, r.code.clone()));
    anyhow::ensure!(
        matches!(outcome, Some((crate::ingest::Outcome::Quarantined, _))),
        "the demo's ultrasound image was not quarantined: {outcome:?}"
    );
    ingest
        .close_session("ulrich", session.id, true, &origin)
        .await?
        .map_err(|state| anyhow::anyhow!("the demo's quarantine upload was {state} before its commit"))?;
    Ok(())
}

/// The approved project's first release, asked for by Rita.
async fn first_release(ingest: &Arc<Ingestor>, config: &Config) -> Result<()> {
    let db = &ingest.db;
    let Some(project) = super::project::find(db).await? else { return Ok(()) };
    let any = sqlx::query_scalar!(r#"select exists (select 1 from extract where project_id = $1) as "e!""#, project)
        .fetch_one(db)
        .await?;
    if any {
        return Ok(());
    }
    let rita = principal("rita", Role::Researcher);
    let standing = standing::standing(db, project, &rita).await?;
    crate::release::extracts::request(db, &config.access, project, &rita, standing, None).await?;
    Ok(())
}

/// A 320×240 ultrasound image of `patient` (a local ID), a sector of
/// speckle with `JANE DOE 1957-03-14` written into its top-left pixels, as an
/// old scanner would.
pub fn ultrasound(patient: &str) -> Vec<u8> {
    let (rows, columns) = (240_u16, 320_u16);
    let mut pixels = vec![0_u8; usize::from(rows) * usize::from(columns)];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for y in 0..usize::from(rows) {
        for x in 0..usize::from(columns) {
            // A fan from the top centre, 60 degrees wide.
            let (dx, dy) = (f64::from(u16::try_from(x).unwrap_or(0)) - 160.0, f64::from(u16::try_from(y).unwrap_or(0)));
            let inside = dy > 20.0 && dy < 230.0 && dx.abs() < dy * 0.58;
            if inside {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let speckle = u8::try_from(state % 90).unwrap_or(0);
                pixels[y * usize::from(columns) + x] = 40 + speckle;
            }
        }
    }
    for (line, text) in ["JANE DOE", "1957-03-14"].iter().enumerate() {
        draw(&mut pixels, usize::from(columns), 6, 6 + line * 18, text);
    }
    let uid = |n: u32| format!("{UID_ROOT}.77.{n}");
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    put(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    put(tags::SOP_CLASS_UID, VR::UI, ULTRASOUND_SOP_CLASS);
    put(tags::SOP_INSTANCE_UID, VR::UI, &uid(3));
    put(tags::STUDY_INSTANCE_UID, VR::UI, &uid(1));
    put(tags::SERIES_INSTANCE_UID, VR::UI, &uid(2));
    put(tags::STUDY_DATE, VR::DA, "20240611");
    put(tags::STUDY_TIME, VR::TM, "101500");
    put(tags::ACCESSION_NUMBER, VR::SH, "CMC-US-000117");
    put(tags::MODALITY, VR::CS, "US");
    put(tags::MANUFACTURER, VR::LO, "GE Healthcare");
    put(tags::MANUFACTURER_MODEL_NAME, VR::LO, "LOGIQ E10");
    put(tags::INSTITUTION_NAME, VR::LO, "City Medical Centre");
    put(tags::STUDY_DESCRIPTION, VR::LO, "US CAROTID");
    put(tags::PATIENT_NAME, VR::PN, "Doe^Jane");
    put(tags::PATIENT_ID, VR::LO, patient);
    put(tags::PATIENT_BIRTH_DATE, VR::DA, "19570314");
    put(tags::PATIENT_SEX, VR::CS, "F");
    put(tags::BODY_PART_EXAMINED, VR::CS, "NECK");
    put(tags::SERIES_NUMBER, VR::IS, "1");
    put(tags::INSTANCE_NUMBER, VR::IS, "1");
    put(tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    let mut put_us = |tag, value: u16| obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    put_us(tags::SAMPLES_PER_PIXEL, 1);
    put_us(tags::ROWS, rows);
    put_us(tags::COLUMNS, columns);
    put_us(tags::BITS_ALLOCATED, 8);
    put_us(tags::BITS_STORED, 8);
    put_us(tags::HIGH_BIT, 7);
    put_us(tags::PIXEL_REPRESENTATION, 0);
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixels)));
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(ULTRASOUND_SOP_CLASS)
        .media_storage_sop_instance_uid(uid(3))
        .transfer_syntax("1.2.840.10008.1.2.1")
        .implementation_class_uid(format!("{UID_ROOT}.0"))
        .build()
        .expect("the demo's file meta group is complete");
    let mut out = Vec::with_capacity(usize::from(rows) * usize::from(columns) + 2048);
    obj.with_exact_meta(meta).write_all(&mut out).expect("an in-memory data set encodes");
    out
}

/// Ultrasound Image Storage.
const ULTRASOUND_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.6.1";

/// Rows of a 5×7 glyph, the leftmost pixel in bit 4.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'D' => [0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
        'N' => [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11],
        'O' | '0' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '3' => [0x1e, 0x01, 0x01, 0x0e, 0x01, 0x01, 0x1e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '-' => [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00],
        _ => [0; 7],
    }
}

/// Writes `text` in white at (`left`, `top`), each glyph pixel 2×2.
fn draw(pixels: &mut [u8], columns: usize, left: usize, top: usize, text: &str) {
    for (i, c) in text.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let (y, x) = (top + row * 2 + dy, left + i * 12 + col * 2 + dx);
                        if let Some(p) = pixels.get_mut(y * columns + x) {
                            *p = 255;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ultrasound_image_carries_burned_in_text_and_says_so() {
        let bytes = ultrasound("SYN0000001");
        let file = dicom_object::from_reader(&bytes[128..]).unwrap();
        let flag = file.element(tags::BURNED_IN_ANNOTATION).unwrap().to_str().unwrap();
        assert_eq!(flag.trim(), "YES");
        let pixels = file.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        // The text's top-left corner: the 'J' of JANE starts with three pixels on.
        let white = pixels[6 * 320..6 * 320 + 40].iter().fold(0, |n, p| n + usize::from(*p == u8::MAX));
        assert!(white >= 6, "the first text row has white pixels: {white}");
        assert_eq!(pixels.len(), 320 * 240);
    }

    #[test]
    fn every_character_written_has_a_glyph() {
        for c in "JANE DOE1957-03-14".chars().filter(|c| *c != ' ') {
            assert_ne!(glyph(c), [0; 7], "{c}");
        }
    }
}
