//! Stored instances as a project's release holds them: real files (pydicom's
//! samples, a dcmqi segmentation and an RT structure set made to reference
//! uploaded images) go through ingest, are read back from the object store,
//! and are re-pseudonymized for two projects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use axum::body::Body;
use axum::http::{Request, header};
use bytes::Bytes;
use custodian::auth::Role;
use custodian::release::dicom::{ProjectPseudonyms, Released, for_project};
use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use object_store::ObjectStoreExt;

use crate::dicom_gen::Instance;
use crate::helpers::TestApp;

/// Real files of several transfer syntaxes and IODs (see `fixtures/pydicom/README.md`).
const SAMPLES: &[&str] = &[
    "CT_small.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "image_dfl.dcm",
];

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/pydicom").join(name)).unwrap()
}

pub(crate) fn open(bytes: &[u8]) -> DefaultDicomObject {
    OpenFileOptions::new().from_reader(&bytes[128..]).expect("the file parses")
}

fn encode(file: &DefaultDicomObject) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).unwrap();
    bytes
}

/// Every (tag, value) of VR UI in `obj`, at any depth, in document order.
pub(crate) fn uids(obj: &InMemDicomObject) -> Vec<(Tag, String)> {
    let mut found = Vec::new();
    for element in obj {
        match element.value() {
            Value::Sequence(seq) => seq.items().iter().for_each(|item| found.extend(uids(item))),
            _ if element.vr() == VR::UI => {
                let values = element.to_multi_str().unwrap();
                found.extend(values.iter().map(|v| (element.tag(), v.trim_matches(['\0', ' ']).to_owned())));
            }
            _ => {}
        }
    }
    found.retain(|(_, v)| !v.is_empty());
    found
}

pub(crate) fn values_of(obj: &InMemDicomObject, tag: Tag) -> Vec<String> {
    uids(obj).into_iter().filter(|(t, _)| *t == tag).map(|(_, v)| v).collect()
}

pub(crate) fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element(tag).unwrap().to_str().unwrap().trim_matches(['\0', ' ']).to_owned()
}

/// `obj` with every UI value found in `map` replaced, at any depth.
fn with_uids(obj: InMemDicomObject, map: &HashMap<String, String>) -> InMemDicomObject {
    let elements: Vec<InMemElement> = obj
        .into_iter()
        .map(|element| {
            let (tag, vr) = (element.tag(), element.vr());
            match element.into_value() {
                Value::Sequence(seq) => {
                    let items = seq.into_items().into_iter().map(|item| with_uids(item, map)).collect::<Vec<_>>();
                    DataElement::new(tag, vr, DataSetSequence::new(items, Length::UNDEFINED))
                }
                Value::Primitive(p) if vr == VR::UI => {
                    let v = p.to_str().trim_matches(['\0', ' ']).to_owned();
                    DataElement::new(tag, vr, PrimitiveValue::from(map.get(&v).cloned().unwrap_or(v)))
                }
                other => DataElement::new(tag, vr, other),
            }
        })
        .collect();
    InMemDicomObject::from_element_iter(elements)
}

/// A derived object of the images' patient, study and frame of reference
/// whose references (first-seen order) point at `images`.
fn referencing(mut obj: InMemDicomObject, images: &[Instance]) -> InMemDicomObject {
    let image = &images[0];
    let mut map = HashMap::new();
    for (original, new) in values_of(&obj, tags::REFERENCED_SOP_INSTANCE_UID).into_iter().zip(images.iter().cycle()) {
        map.entry(original).or_insert_with(|| new.sop_uid());
    }
    let own_series = text(&obj, tags::SERIES_INSTANCE_UID);
    for series in values_of(&obj, tags::SERIES_INSTANCE_UID).into_iter().filter(|s| *s != own_series) {
        map.insert(series, image.series_uid());
    }
    map.insert(text(&obj, tags::STUDY_INSTANCE_UID), image.study_uid());
    for frame in values_of(&obj, tags::FRAME_OF_REFERENCE_UID) {
        map.insert(frame, format!("{}.4.{}", crate::dicom_gen::CANARY_UID_ROOT, &image.patient_id[9..]));
    }
    obj.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(image.patient_id.as_str())));
    obj.put(DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::from("CNRY-ISSUER")));
    with_uids(obj, &map)
}

/// dcmqi's liver segmentation, referencing `images` instead of its own CT.
pub(crate) fn segmentation(images: &[Instance]) -> Vec<u8> {
    let file = open(&fixture("liver_1frame.dcm"));
    let meta = file.meta().clone();
    encode(&referencing(file.into_inner(), images).with_exact_meta(meta))
}

/// pydicom's RT structure set (a bare data set) in a Part-10 file, its
/// contours on `images`.
pub(crate) fn structure_set(images: &[Instance]) -> Vec<u8> {
    let bare = fixture("rtstruct.dcm");
    let implicit = TransferSyntaxRegistry.get("1.2.840.10008.1.2").unwrap();
    let dataset = InMemDicomObject::read_dataset_with_ts(&bare[..], implicit).unwrap();
    let file = referencing(dataset, images).with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2"));
    encode(&file.unwrap())
}

/// Ingests `files` into `cohort` in one STOW-RS request (one committed session).
pub(crate) async fn ingest(app: &TestApp, cohort: &str, files: &[Vec<u8>]) {
    let mut body = Vec::new();
    for file in files {
        body.extend_from_slice(b"--RELEASE\r\nContent-Type: application/dicom\r\n\r\n");
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--RELEASE--\r\n");
    let request = Request::post(format!("/dicomweb/studies?cohort={cohort}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", app.token("ulrich", &[Role::Uploader])))
        .header(header::CONTENT_TYPE, "multipart/related; type=\"application/dicom\"; boundary=RELEASE")
        .body(Body::from(body))
        .unwrap();
    let response = app.call(request).await;
    assert!(response.status.is_success(), "{}", response.text());
}

/// A stored instance: its registry SOP Instance UID and its bytes in the object store.
struct Stored {
    sop_uid: String,
    bytes: Bytes,
}

async fn stored_instances(app: &TestApp) -> Vec<Stored> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("select sop_uid, object_key from instance order by sop_uid").fetch_all(&app.db).await.unwrap();
    let mut stored = Vec::new();
    for (sop_uid, key) in rows {
        let object = app.state.store.get(&object_store::path::Path::from(key)).await.unwrap();
        stored.push(Stored { sop_uid, bytes: object.bytes().await.unwrap() });
    }
    stored
}

/// Everything registry-side a release must not show: every subject
/// pseudonym, and every UID the catalog or a stored object holds in registry
/// form (a `2.25.` UID other than Custodian's implementation class).
async fn registry_identifiers(app: &TestApp, stored: &[Stored]) -> BTreeSet<String> {
    let mut all: BTreeSet<String> = sqlx::query_scalar(
        "select pseudonym from subject
         union select study_uid from study union select series_uid from series
         union select sop_uid from instance union select unnest(referenced_sop_uids) from instance",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for s in stored {
        let file = open(&s.bytes);
        all.insert(file.meta().media_storage_sop_instance_uid().trim_end_matches('\0').to_owned());
        all.extend(uids(&file).into_iter().map(|(_, v)| v).filter(|v| v.starts_with("2.25.")));
    }
    all.remove(custodian::deid::dicom::IMPLEMENTATION_CLASS_UID);
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The UIDs of a released file that are not well known (SOP classes,
/// transfer syntaxes, coding schemes are shared by every file anywhere).
fn own_uids(file: &DefaultDicomObject) -> BTreeSet<String> {
    uids(file).into_iter().map(|(_, v)| v).filter(|v| v.starts_with("2.25.")).collect::<BTreeSet<_>>()
}

/// The Pixel Data element, header and value, as encoded in `file`, when it ends the file.
fn pixel_data(file: &[u8]) -> Option<&[u8]> {
    let at = custodian::deid::guard::check_declared_lengths(file).unwrap().pixel_data_at?;
    Some(&file[at..])
}

/// One project's release of every stored instance, by registry SOP Instance UID.
fn release(stored: &[Stored], key: &[u8; 32]) -> BTreeMap<String, Released> {
    let project = ProjectPseudonyms::new(key);
    stored
        .iter()
        .map(|s| (s.sop_uid.clone(), for_project(&s.bytes, &project).unwrap_or_else(|e| panic!("{}: {e}", s.sop_uid))))
        .collect()
}

pub(crate) fn images() -> Vec<Instance> {
    (1..=3).map(|i| Instance::ct(7, 1, 1, i)).collect()
}

async fn ingested() -> (TestApp, Vec<Stored>) {
    let app = TestApp::new().await;
    let images = images();
    let mut files: Vec<Vec<u8>> = SAMPLES.iter().map(|name| fixture(name)).collect();
    files.extend(images.iter().map(Instance::to_bytes));
    files.push(segmentation(&images));
    files.push(structure_set(&images));
    ingest(&app, "default", &files).await;
    let stored = stored_instances(&app).await;
    assert_eq!(stored.len(), files.len(), "every file is stored");
    (app, stored)
}

#[tokio::test]
async fn released_instances_hold_no_registry_pseudonym_or_uid_and_two_projects_share_none() {
    let (app, stored) = ingested().await;
    let registry = registry_identifiers(&app, &stored).await;
    assert!(registry.len() > 50, "{} registry identifiers", registry.len());

    let (a, b) = (release(&stored, &[0xA1; 32]), release(&stored, &[0xB2; 32]));
    let seen = [&a, &b].map(|released| {
        let mut seen = BTreeSet::new();
        for (registry_sop, file) in released {
            let bytes = file.to_vec();
            let leaked: Vec<&String> = registry.iter().filter(|id| contains(&bytes, id)).collect();
            assert!(leaked.is_empty(), "{registry_sop}: registry identifiers survive: {leaked:?}");
            let dataset = open(&bytes);
            seen.extend(own_uids(&dataset));
            seen.insert(file.subject.clone());
            assert!(file.subject.starts_with("psub-"));
            assert_eq!(text(&dataset, tags::PATIENT_ID), file.subject);
            assert_eq!(text(&dataset, tags::PATIENT_NAME), file.subject);
        }
        seen
    });
    assert!(seen[0].len() > 40, "{} project identifiers", seen[0].len());
    let shared: Vec<&String> = seen[0].intersection(&seen[1]).collect();
    assert!(shared.is_empty(), "two projects share {shared:?}");

    // The same registry UID gives the same project UID in every release.
    let again = release(&stored, &[0xA1; 32]);
    for (sop, file) in &a {
        assert_eq!(again[sop].to_vec(), file.to_vec(), "{sop}: a second release is the same file");
    }
}

#[tokio::test]
async fn references_follow_their_targets_and_pixels_and_dates_stay_as_stored() {
    let (_app, stored) = ingested().await;
    let project = ProjectPseudonyms::new(&[0xC3; 32]);
    let released = release(&stored, &[0xC3; 32]);
    let by_modality = |modality: &str| -> Vec<DefaultDicomObject> {
        released
            .values()
            .map(|r| open(&r.to_vec()))
            .filter(|f| f.element(tags::MODALITY).is_ok_and(|m| m.to_str().unwrap().trim() == modality))
            .collect()
    };
    let registry = custodian::deid::RegistryKey::new(crate::helpers::TEST_REGISTRY_KEY.as_bytes()).unwrap();
    let ct_images: Vec<&Released> = images().iter().map(|i| &released[&registry.uid(&i.sop_uid())]).collect();
    let image_sops: BTreeSet<String> = ct_images.iter().map(|r| r.sop_uid.clone()).collect();
    let (study, series) = (ct_images[0].study_uid.clone(), ct_images[0].series_uid.clone());
    assert!(ct_images.iter().all(|r| r.study_uid == study && r.series_uid == series), "one series of one study");
    let frame = text(&open(&ct_images[0].to_vec()), tags::FRAME_OF_REFERENCE_UID);

    let [seg] = &by_modality("SEG")[..] else { panic!("one segmentation") };
    let seg_refs: BTreeSet<String> = values_of(seg, tags::REFERENCED_SOP_INSTANCE_UID).into_iter().collect();
    assert_eq!(seg_refs, image_sops, "the segmentation's source images are the released images");
    assert_eq!(text(seg, tags::STUDY_INSTANCE_UID), study, "the segmentation joins the images' study");
    let Value::Sequence(referenced_series) = seg.element(tags::REFERENCED_SERIES_SEQUENCE).unwrap().value() else {
        panic!("Referenced Series Sequence")
    };
    assert_eq!(text(&referenced_series.items()[0], tags::SERIES_INSTANCE_UID), series);
    assert_eq!(text(seg, tags::FRAME_OF_REFERENCE_UID), frame);
    assert_eq!(text(seg, tags::PATIENT_ID), ct_images[0].subject, "one subject for the images and their segmentation");

    let [rt] = &by_modality("RTSTRUCT")[..] else { panic!("one structure set") };
    let contour_images = values_of(rt, tags::REFERENCED_SOP_INSTANCE_UID);
    assert!(!contour_images.is_empty() && contour_images.iter().all(|u| image_sops.contains(u)), "{contour_images:?}");
    let frames = values_of(rt, tags::REFERENCED_FRAME_OF_REFERENCE_UID);
    assert!(frames.len() >= 3 && frames.iter().all(|f| *f == frame), "every ROI on the images' frame of reference");
    assert_eq!(values_of(rt, tags::FRAME_OF_REFERENCE_UID)[0], frame);

    let mut with_pixels = 0;
    for s in &stored {
        let (before, file) = (open(&s.bytes), &released[&s.sop_uid]);
        let after = open(&file.to_vec());
        assert_eq!(
            file.sop_uid,
            project.uid(&s.sop_uid),
            "the SOP Instance UID is the project's UID of the registry's"
        );
        assert_eq!(after.meta().media_storage_sop_instance_uid().trim_end_matches('\0'), file.sop_uid);
        assert_eq!(after.meta().transfer_syntax(), before.meta().transfer_syntax());
        let pixels = pixel_data(&s.bytes);
        assert_eq!(pixel_data(&file.to_vec()), pixels, "{}: pixel data byte for byte", s.sop_uid);
        with_pixels += usize::from(pixels.is_some());
        for date in [tags::STUDY_DATE, tags::SERIES_DATE, tags::CONTENT_DATE] {
            assert_eq!(after.get(date), before.get(date), "dates stay as stored");
        }
        let methods = after.element(tags::DEIDENTIFICATION_METHOD).unwrap().to_multi_str().unwrap().to_vec();
        let stored_methods = before.element(tags::DEIDENTIFICATION_METHOD).unwrap().to_multi_str().unwrap().to_vec();
        assert_eq!(methods[..stored_methods.len()], stored_methods[..], "ingest's steps stay");
        assert_eq!(methods.last().map(String::as_str), Some(custodian::release::dicom::RELEASE_METHOD));
        assert_eq!(file.referenced_sop_uids, values_of(&after, tags::REFERENCED_SOP_INSTANCE_UID));
    }
    assert!(with_pixels >= 8, "{with_pixels} files with pixel data");
}

#[tokio::test]
async fn released_instances_add_no_error_dciodvfy_finds() {
    crate::deid_conformance::ensure_dciodvfy();
    let (_app, stored) = ingested().await;
    let released = release(&stored, &[0xD4; 32]);
    // Kept after the run, to be looked at with dciodvfy by hand.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("release-dciodvfy");
    std::fs::create_dir_all(&dir).unwrap();
    let mut introduced = Vec::new();
    for (i, s) in stored.iter().enumerate() {
        let (before, after) = (dir.join(format!("{i}-stored.dcm")), dir.join(format!("{i}-released.dcm")));
        std::fs::write(&before, &s.bytes).unwrap();
        std::fs::write(&after, released[&s.sop_uid].to_vec()).unwrap();
        let stored_errors = crate::deid_conformance::dciodvfy_errors(&before);
        let new: Vec<String> =
            crate::deid_conformance::dciodvfy_errors(&after).difference(&stored_errors).cloned().collect();
        if !new.is_empty() {
            introduced.push(format!("{}: {new:#?}", before.display()));
        }
    }
    assert!(introduced.is_empty(), "re-pseudonymization introduced errors:\n{}", introduced.join("\n"));
}
