//! Releases read the way a researcher (or an attacker among them) reads
//! them: the canary corpus (identifiers planted in more than forty places of
//! every image, in mask headers) goes through ingest with annotations of every
//! kind, projects are granted it, releases are built, and every byte each
//! release serves over HTTP is read back, inside Parquet and gzip too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodian::auth::Role;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use object_store::ObjectStoreExt as _;
use parquet::file::reader::{FileReader as _, SerializedFileReader};
use serde_json::{Value, json};

use custodian::release::manifest::Manifest;

use crate::access::{World, cohort, content, grant_on_chest_ct, world};
use crate::dicom_gen::{Instance, canaries_in};
use crate::extracts::{verified_manifest, work};
use crate::release_dicom::{images, ingest, open, segmentation, structure_set, text, uids, values_of};

const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";

/// A NIfTI-1 mask of 4×4×2 voxels with canaries in every header text field
/// and in a DICOM header extension.
fn canary_mask() -> Vec<u8> {
    let mut h = vec![0_u8; 348];
    h[0..4].copy_from_slice(&348_i32.to_le_bytes());
    for (i, d) in [3_i16, 4, 4, 2, 1, 1, 1, 1].iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&2_i16.to_le_bytes());
    h[72..74].copy_from_slice(&8_i16.to_le_bytes());
    for (at, text) in [(4, &b"CNRY-DT"[..]), (14, b"CNRY-DB"), (148, b"CNRY^PATIENTNAME 19530704"), (228, b"CNRY-AUX")]
    {
        h[at..at + text.len()].copy_from_slice(text);
    }
    h[328..336].copy_from_slice(b"CNRY-INT");
    h[344..348].copy_from_slice(b"n+1\0");
    let extension: Vec<u8> =
        [32_i32.to_le_bytes(), 2_i32.to_le_bytes()].concat().into_iter().chain(*b"CNRY-MRN-00008 CNRY^NAME").collect();
    h[108..112].copy_from_slice(&f32::from(u16::try_from(352 + extension.len()).unwrap()).to_le_bytes());
    let mut file = h;
    file.extend_from_slice(&[1, 0, 0, 0]);
    file.extend_from_slice(&extension);
    file.extend((0..32_u8).map(|i| i % 2));
    file
}

async fn annotate(w: &World, body: &Value) {
    let token = w.app.token("ulrich", &[Role::Uploader]);
    w.app.post_json("/api/v1/annotations", Some(&token), body).await.assert_status(StatusCode::CREATED);
}

async fn upload_mask(w: &World, annotation: &Value, mask: &[u8]) {
    let token = w.app.token("ulrich", &[Role::Uploader]);
    let mut body = format!(
        "--m\r\nContent-Disposition: form-data; name=\"annotation\"\r\n\r\n{annotation}\r\n\
         --m\r\nContent-Disposition: form-data; name=\"file\"; filename=\"CNRY-MRN-00008.nii\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(mask);
    body.extend_from_slice(b"\r\n--m--\r\n");
    let request = Request::post("/api/v1/annotations/masks")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=m")
        .body(Body::from(body))
        .unwrap();
    w.app.call(request).await.assert_status(StatusCode::CREATED);
}

/// The canary corpus in cohort `chest-ct`: patient 7's CT series with a SEG
/// and an RTSTRUCT on it, patient 8's CT series and MR series; and, through
/// the API, a label and landmarks on patient 7's CT, a box, a mask and a
/// label on patient 8's CT, a label on their MR and one on patient 8 alone.
async fn canary_registry() -> World {
    let w = world().await;
    cohort(&w, "chest-ct", "registered", json!({"permission": "GRU"}), true).await;
    let seven = images();
    let eight: Vec<Instance> = (1..=2).map(|i| Instance::ct(8, 1, 1, i)).collect();
    let mr = Instance { modality: "MR", sop_class: MR_IMAGE_STORAGE, ..Instance::ct(8, 1, 2, 1) };
    let mut files: Vec<Vec<u8>> = seven.iter().chain(&eight).chain([&mr]).map(Instance::to_bytes).collect();
    files.push(segmentation(&seven));
    files.push(structure_set(&seven));
    ingest(&w.app, "chest-ct", &files).await;

    let key = &w.app.state.ingest.key;
    let series = |i: &Instance| json!({"level": "series", "uid": key.uid(&i.series_uid())});
    let provenance = json!({"role": "radiologist", "expertise": "thoracic imaging", "years": 12,
                            "tool": "3D Slicer 5.6", "method": "manual", "annotated_at": "2024-03-01T10:00:00Z"});
    let label = |target: Value, code: &str| json!({"target": target, "kind": "label", "label": {"system": "RadLex", "code": code}, "provenance": provenance});
    annotate(&w, &label(series(&seven[0]), "RID5352")).await;
    annotate(&w, &label(series(&mr), "RID3874")).await;
    annotate(
        &w,
        &json!({"target": {"level": "study", "uid": key.uid(&seven[0].study_uid())}, "kind": "landmark",
                         "geometry": {"points": [[10.5, -3, 42]]}, "provenance": provenance}),
    )
    .await;
    annotate(
        &w,
        &json!({"target": series(&eight[0]), "kind": "box",
                         "geometry": {"min": [0, 0, 0], "max": [4, 4, 2]}, "provenance": provenance}),
    )
    .await;
    let patient = json!({"level": "subject", "patient_id": eight[0].patient_id, "issuer_of_patient_id": "CNRY-ISSUER"});
    annotate(
        &w,
        &json!({"target": patient, "kind": "label", "label": {"system": "SNOMED CT", "code": "44054006"},
                         "provenance": {"role": "algorithm", "tool": "risk-model 2.1", "method": "automatic"}}),
    )
    .await;
    let mask = json!({"target": series(&eight[0]), "kind": "segmentation",
                      "label": {"system": "SNOMED CT", "code": "39607008", "meaning": "lung"}, "provenance": provenance});
    upload_mask(&w, &mask, &canary_mask()).await;
    let kinds: Vec<String> =
        sqlx::query_scalar("select kind from annotation order by kind").fetch_all(&w.app.db).await.unwrap();
    assert_eq!(kinds, ["box", "contour", "label", "label", "label", "landmark", "segmentation", "segmentation"]);
    w
}

/// What a project asks for: `scope` over the cohort `chest-ct`.
fn asking(scope: Value) -> Value {
    let mut content = content(&["chest-ct"], "HMB");
    content["scope"] = scope;
    content
}

/// Every kind but boxes, every modality, imaging.
fn broad() -> Value {
    asking(json!({"cohorts": ["chest-ct"], "fields": ["sex"], "imaging": true,
                  "annotation_kinds": ["segmentation", "contour", "landmark", "label"]}))
}

/// A release as its member downloads it: every file the signed manifest lists, by path.
struct Release {
    files: BTreeMap<String, Vec<u8>>,
    id: String,
    manifest: Manifest,
}

impl Release {
    fn under(&self, prefix: &str) -> Vec<(&String, &Vec<u8>)> {
        self.files.iter().filter(|(p, _)| p.starts_with(prefix)).collect()
    }

    fn json(&self, path: &str) -> Value {
        serde_json::from_slice(self.files.get(path).unwrap_or_else(|| panic!("{path} is in the release"))).unwrap()
    }

    /// The annotations index's records.
    fn annotations(&self) -> Vec<Value> {
        self.files
            .get("annotations/index.json")
            .map_or_else(Vec::new, |_| self.json("annotations/index.json")["annotations"].as_array().unwrap().clone())
    }

    fn dicom(&self, prefix: &str) -> Vec<DefaultDicomObject> {
        self.under(prefix).into_iter().filter(|(p, _)| extension(p) == "dcm").map(|(_, b)| open(b)).collect()
    }
}

/// A new project of the PI granted `content`, its release built by a worker
/// and downloaded over HTTP: the project and its release.
async fn released(w: &World, content: &Value) -> (String, Release) {
    let (project, _) = grant_on_chest_ct(w, content).await;
    let queued = w.app.post_json(&format!("/api/v1/projects/{project}/extracts"), Some(&w.pi), &json!({})).await;
    let id = queued.assert_status(StatusCode::ACCEPTED).json()["id"].as_str().unwrap().to_owned();
    work(&w.app).await;
    (project, download(w, &id).await)
}

/// A release once ready, every file downloaded over HTTP as its member would.
async fn download(w: &World, id: &str) -> Release {
    let state = w.app.get(&format!("/api/v1/extracts/{id}"), Some(&w.pi)).await.json();
    let errors: Vec<Option<String>> =
        sqlx::query_scalar("select last_error from job").fetch_all(&w.app.db).await.unwrap();
    assert_eq!(state["state"], "ready", "{state} {errors:?}");
    let (manifest, manifest_bytes) = verified_manifest(&w.app, id, &w.pi).await;
    let mut files = BTreeMap::from([("manifest.json".to_owned(), manifest_bytes)]);
    for file in &manifest.files {
        let got = w.app.get(&format!("/api/v1/extracts/{id}/files/{}", file.path), Some(&w.pi)).await;
        let expected = custodian::release::manifest::media_type(&file.path);
        assert_eq!(got.assert_status(StatusCode::OK).headers[header::CONTENT_TYPE], expected, "{}", file.path);
        files.insert(file.path.clone(), got.body.to_vec());
    }
    Release { files, id: id.to_owned(), manifest }
}

/// A release path's extension (paths are the registry's, in lowercase).
fn extension(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or_default()
}

/// Everything readable in a file: its bytes, a gzip file's content, and a
/// Parquet file's every value as text.
fn readable(path: &str, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![bytes.to_vec()];
    if extension(path) == "gz" {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut plain).unwrap();
        out.push(plain);
    }
    if extension(path) == "parquet" {
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes.to_vec())).unwrap();
        let rows: Vec<String> = reader.get_row_iter(None).unwrap().map(|row| row.unwrap().to_string()).collect();
        out.push(rows.join("\n").into_bytes());
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Everything registry-side a release must not show: subject pseudonyms,
/// every UID the catalog or a stored instance holds in registry form,
/// annotation ids, and the uploader's username.
async fn registry_identifiers(w: &World) -> BTreeSet<String> {
    let db = &w.app.db;
    let mut all: BTreeSet<String> = sqlx::query_scalar(
        "select pseudonym from subject union select study_uid from study union select series_uid from series
         union select sop_uid from instance union select unnest(referenced_sop_uids) from instance
         union select annotation_id::text from annotation union select created_by from annotation",
    )
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let keys: Vec<String> = sqlx::query_scalar("select object_key from instance").fetch_all(db).await.unwrap();
    for key in keys {
        let stored = w.app.state.store.get(&object_store::path::Path::from(key)).await.unwrap();
        let file = open(&stored.bytes().await.unwrap());
        all.extend(uids(&file).into_iter().map(|(_, v)| v).filter(|v| v.starts_with("2.25.")));
    }
    all.remove(custodian::deid::dicom::IMPLEMENTATION_CLASS_UID);
    all.remove("ingest");
    all
}

#[tokio::test]
async fn the_canary_corpus_ingested_then_released_leaves_no_planted_or_registry_identifier_in_the_release() {
    let w = canary_registry().await;
    let registry = registry_identifiers(&w).await;
    assert!(registry.len() > 30 && registry.contains("ulrich"), "{} registry identifiers", registry.len());
    let (_, release) = released(&w, &broad()).await;
    for expected in ["annotations/index.json", "tables/subjects.csv", "tables/subjects.parquet", "README.md"] {
        assert!(release.files.contains_key(expected), "{expected}: {:?}", release.files.keys());
    }
    assert_eq!(release.under("dicom/").len(), 6, "three CT slices of 7, two of 8 and 8's MR slice");
    assert_eq!(release.under("annotations/dicom/").len(), 2, "the SEG and the RTSTRUCT");
    assert_eq!(release.under("annotations/masks/").len(), 1);
    assert_eq!(release.under("annotations/geometry/").len(), 1, "the landmarks (boxes are not granted)");

    let mut scanned = 0;
    for (path, bytes) in &release.files {
        for view in readable(path, bytes) {
            let canaries = canaries_in(&view);
            assert!(canaries.is_empty(), "{path} holds planted identifiers: {canaries:?}");
            let leaked: Vec<&String> = registry.iter().filter(|id| contains(&view, id)).collect();
            assert!(leaked.is_empty(), "{path} holds registry identifiers: {leaked:?}");
            let bare = view.windows(5).any(|w| &w[1..] == b"sub-" && w[0] != b'p');
            assert!(!bare, "{path} holds something shaped like a registry pseudonym");
            scanned += view.len();
        }
    }
    assert!(scanned > 20_000, "{scanned} bytes read");

    // The mask: the voxels as uploaded, every header text field blank, named by the project's id.
    let (path, mask) = release.under("annotations/masks/")[0];
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&mask[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(plain.len(), 352 + 32, "header, no extension, voxels");
    assert!(plain[148..252].iter().all(|b| *b == 0), "descrip and aux_file are blank");
    assert_eq!(&plain[352..], (0..32_u8).map(|i| i % 2).collect::<Vec<_>>().as_slice());
    let record = release.annotations().into_iter().find(|a| a["file"] == path.as_str()).unwrap();
    assert!(path.ends_with(&format!("{}.nii.gz", record["id"].as_str().unwrap())), "{path}");
    assert_eq!(record["provenance"]["tool"], "3D Slicer 5.6");
    assert_eq!(record["provenance"]["annotated_at"], "2024-03-01T10:00:00Z", "the date as stored");
    assert_eq!(record["label"]["meaning"], "lung");
    assert!(record.get("created_by").is_none() && record["subject"].as_str().unwrap().starts_with("psub-"));
}

/// The tokens of a text that name a subject or a UID.
fn identifiers_in(text: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(text)
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .map(|t| t.trim_end_matches('.'))
        .filter(|t| t.starts_with("psub-") || (t.starts_with("2.25.") && t.len() > 10))
        .map(ToOwned::to_owned)
        .collect()
}

/// Every subject ID and UID of a release: from its DICOM files, tables and annotations.
fn project_identifiers(release: &Release) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for (path, bytes) in &release.files {
        let kind = extension(path);
        if kind == "dcm" {
            let file = open(bytes);
            all.extend(uids(&file).into_iter().map(|(_, v)| v).filter(|v| v.starts_with("2.25.")));
            all.insert(text(&file, tags::PATIENT_ID));
        } else if ["csv", "json", "parquet"].contains(&kind) {
            all.extend(readable(path, bytes).iter().flat_map(|view| identifiers_in(view)));
        }
    }
    all.remove(custodian::deid::dicom::IMPLEMENTATION_CLASS_UID);
    for record in release.annotations() {
        all.insert(record["id"].as_str().unwrap().to_owned());
    }
    all
}

#[tokio::test]
async fn two_projects_granted_the_same_subjects_share_no_subject_id_no_uid_and_no_annotation_id() {
    let w = canary_registry().await;
    let (_, first) = released(&w, &broad()).await;
    let (_, second) = released(&w, &broad()).await;
    let [a, b] = [&first, &second].map(project_identifiers);
    let subjects = |ids: &BTreeSet<String>| ids.iter().filter(|i| i.starts_with("psub-")).count();
    assert_eq!((subjects(&a), subjects(&b)), (2, 2), "{a:?}");
    assert!(a.len() > 30 && b.len() == a.len(), "{} and {} identifiers", a.len(), b.len());
    let shared: Vec<&String> = a.intersection(&b).collect();
    assert!(shared.is_empty(), "two projects share {shared:?}");
}

#[tokio::test]
async fn a_release_holds_no_annotation_kind_modality_imaging_or_field_outside_its_grant() {
    let w = canary_registry().await;
    // Labels only, no imaging, no field: the label on patient 8 alone, nothing drawn, no image.
    let labels =
        asking(json!({"cohorts": ["chest-ct"], "fields": [], "imaging": false, "annotation_kinds": ["label"]}));
    let (_, release) = released(&w, &labels).await;
    assert!(release.under("dicom/").is_empty() && release.under("annotations/dicom/").is_empty());
    let records = release.annotations();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!((records[0]["target"].as_str(), records[0]["kind"].as_str()), (Some("subject"), Some("label")));
    assert!(records[0]["study_uid"].is_null() && records[0]["file"].is_null());
    assert_eq!(release.files.keys().filter(|p| p.starts_with("annotations/")).count(), 1, "the index only");
    let dictionary = release.json("tables/dictionary.json");
    assert!(dictionary["fields"].as_array().unwrap().iter().all(|f| f["id"] != "sex"), "{dictionary}");

    // CT only, labels and segmentations: the CT's label, the SEG and the
    // mask; not the MR, its label, the RTSTRUCT, landmarks or boxes.
    let ct = asking(json!({"cohorts": ["chest-ct"], "modalities": ["CT"], "imaging": true,
                           "annotation_kinds": ["label", "segmentation"]}));
    let (project, release) = released(&w, &ct).await;
    let modalities: BTreeSet<String> =
        release.dicom("").iter().map(|f| text(f, tags::MODALITY)).collect::<BTreeSet<_>>();
    assert_eq!(modalities, BTreeSet::from(["CT".to_owned(), "SEG".to_owned()]));
    let kinds: Vec<(String, String)> = release
        .annotations()
        .iter()
        .map(|a| (a["kind"].as_str().unwrap().to_owned(), a["source"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [("label", "json"), ("label", "json"), ("segmentation", "dicom-seg"), ("segmentation", "nifti")];
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(sorted, expected.map(|(k, s)| (k.to_owned(), s.to_owned())), "{kinds:?}");
    assert!(release.under("annotations/geometry/").is_empty());

    // Asking for what is not in it, as a member would try, finds nothing.
    let (_, broad) = released(&w, &broad()).await;
    for path in broad.files.keys().filter(|p| p.starts_with("annotations/") && !release.files.contains_key(*p)) {
        let probe = w.app.get(&format!("/api/v1/extracts/{}/files/{path}", release.id), Some(&w.pi)).await;
        probe.assert_status(StatusCode::NOT_FOUND);
    }
    for escape in ["../{}/annotations/index.json", "..%2F{}%2Fannotations%2Findex.json"] {
        let path = escape.replace("{}", &broad.id);
        let probe = w.app.get(&format!("/api/v1/extracts/{}/files/{path}", release.id), Some(&w.pi)).await;
        assert!(probe.status.is_client_error() && !contains(&probe.body, "psub-"), "{path}: {}", probe.status);
    }
    let others = w.app.get(&format!("/api/v1/projects/{project}/extracts"), Some(&w.pi)).await.json();
    assert!(!others.to_string().contains(&broad.id), "another project's release is not listed");
}

#[tokio::test]
async fn released_annotations_point_at_the_released_images_under_the_same_project_uids() {
    let w = canary_registry().await;
    let (_, release) = released(&w, &broad()).await;
    // The images: each series in one study, each study of one subject.
    let mut series_study = BTreeMap::new();
    let mut study_subject = BTreeMap::new();
    let mut sops = BTreeSet::new();
    for image in release.dicom("dicom/") {
        let (study, series) = (text(&image, tags::STUDY_INSTANCE_UID), text(&image, tags::SERIES_INSTANCE_UID));
        assert_eq!(*series_study.entry(series).or_insert_with(|| study.clone()), study, "a series is in one study");
        let subject = text(&image, tags::PATIENT_ID);
        assert_eq!(*study_subject.entry(study).or_insert_with(|| subject.clone()), subject);
        sops.insert(text(&image, tags::SOP_INSTANCE_UID));
    }
    assert_eq!((sops.len(), series_study.len(), study_subject.len()), (6, 3, 2));

    // SEG and RTSTRUCT reference released images, in their study, of their subject.
    let derived = release.dicom("annotations/dicom/");
    for file in &derived {
        let refs = values_of(file, tags::REFERENCED_SOP_INSTANCE_UID);
        assert!(!refs.is_empty() && refs.iter().all(|r| sops.contains(r)), "{refs:?} not all released");
        let study = text(file, tags::STUDY_INSTANCE_UID);
        assert_eq!(study_subject.get(&study), Some(&text(file, tags::PATIENT_ID)), "the images' study and subject");
        for series in values_of(file, tags::SERIES_INSTANCE_UID).iter().filter(|s| series_study.contains_key(*s)) {
            assert_eq!(series_study[series], study, "a referenced series of the same study");
        }
    }
    assert_eq!(derived.len(), 2);

    // The index: files that are in the release; series in their study; subjects of their images.
    let records = release.annotations();
    assert_eq!(records.len(), 7, "everything but the box: {records:?}");
    for record in &records {
        if let Some(file) = record["file"].as_str() {
            assert!(release.files.contains_key(file), "{file} is listed but not released");
        }
        if let (Some(series), Some(study)) = (record["series_uid"].as_str(), record["study_uid"].as_str()) {
            assert_eq!(series_study.get(series).map(String::as_str), Some(study), "{record}");
        }
        if let Some(study) = record["study_uid"].as_str() {
            assert_eq!(study_subject.get(study), record["subject"].as_str().map(ToOwned::to_owned).as_ref());
        }
    }
    let geometry = release.under("annotations/geometry/");
    let landmark: Value = serde_json::from_slice(geometry[0].1).unwrap();
    assert_eq!(landmark["geometry"], json!({"points": [[10.5, -3, 42]]}));
    assert!(study_subject.contains_key(landmark["study_uid"].as_str().unwrap()), "{landmark}");
}

#[tokio::test]
async fn withdrawn_subjects_take_their_annotations_out_of_the_next_version_whose_diff_names_the_files() {
    let w = canary_registry().await;
    let (project, first) = released(&w, &broad()).await;
    let key = &w.app.state.ingest.key;
    let steward = w.app.token("sam", &[Role::Steward]);
    for (patient, scope) in [("CNRY-MRN-00007", "full"), ("CNRY-MRN-00008", "imaging")] {
        let pseudonym = key.subject_issued("local", patient, Some("CNRY-ISSUER"));
        let withdrawal = json!({"pseudonym": pseudonym, "scope": scope});
        w.app.post_json("/api/v1/withdrawals", Some(&steward), &withdrawal).await.assert_status(StatusCode::CREATED);
    }
    work(&w.app).await;
    let listed = w.app.get(&format!("/api/v1/projects/{project}/extracts"), Some(&w.pi)).await.json();
    // Each withdrawal made a version; the latest holds neither.
    let latest = &listed["extracts"][0];
    assert_eq!((latest["version"].as_i64(), latest["state"].as_str()), (Some(3), Some("ready")), "{listed}");
    assert_eq!(latest["supersedes"].as_str(), Some(first.id.as_str()));
    let second = download(&w, listed["extracts"][0]["id"].as_str().unwrap()).await;

    // Patient 8 kept their tables and their label; nothing drawn on images is left.
    let records = second.annotations();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!((records[0]["target"].as_str(), records[0]["kind"].as_str()), (Some("subject"), Some("label")));
    let kept = first.annotations().into_iter().find(|a| a["target"] == "subject").unwrap();
    assert_eq!(records[0]["id"], kept["id"], "an annotation keeps its id from version to version");
    assert!(second.under("dicom/").is_empty() && second.under("annotations/").len() == 1);
    let diff = second.manifest.diff.clone().expect("a diff");
    let gone: Vec<&String> =
        first.files.keys().filter(|p| p.starts_with("annotations/") && !p.ends_with("index.json")).collect();
    assert_eq!(gone.len(), 4, "SEG, RTSTRUCT, mask, landmarks");
    assert!(gone.iter().all(|p| diff.removed_files.contains(p)), "{diff:?}");
    assert_eq!(diff.removed_subjects.len(), 1);
}
