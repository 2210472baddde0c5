//! The DICOM C-STORE SCP, driven by clients nobody here wrote: DCMTK's
//! `storescu` and `echoscu` (Debian package `dcmtk`), plus dicom-ul's own
//! client for data sets DCMTK refuses to send.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use custodian::config::DicomPeer;
use custodian::ingest::cstore;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{
    AssociationRJResult, AssociationRJServiceProviderPresentationReason, AssociationRJSource, PDataValue,
    PDataValueType, Pdu,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::dicom_gen::{CT_IMAGE_STORAGE, EXPLICIT_VR_LE, Instance, canaries_in};
use crate::helpers::{TestApp, captured_logs};

/// The SCP of a test app, on an ephemeral port of 127.0.0.1.
struct Scp {
    port: u16,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Scp {
    async fn start(app: &TestApp) -> Self {
        Self::start_with_grace(app, Duration::from_secs(10)).await
    }

    async fn start_with_grace(app: &TestApp, grace: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = app.state.config.dicom.clone();
        config.ae_title = "CUSTODIAN".into();
        config.peers = vec![DicomPeer { ae_title: "STORESCU".into(), site: "local".into(), cohort: "default".into() }];
        let (stop, stopped) = oneshot::channel::<()>();
        let ingest = app.state.ingest.clone();
        let stopped = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(cstore::serve_with_grace(listener, ingest, config, stopped, grace));
        Self { port, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("the SCP stops").unwrap();
    }
}

/// DCMTK, installed the way the harness installs PostgreSQL when it is missing.
pub(crate) fn ensure_dcmtk() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let present =
            || std::process::Command::new("storescu").arg("--version").output().is_ok_and(|o| o.status.success());
        if present() {
            return Ok(());
        }
        crate::helpers::apt_install(&["dcmtk"])?;
        if present() { Ok(()) } else { Err("storescu is still missing after installing dcmtk".into()) }
    });
    if let Err(problem) = ready {
        panic!("these tests need DCMTK (storescu, echoscu): {problem}; install it with `apt-get install dcmtk`");
    }
}

/// Runs a DCMTK tool to its end (without blocking the runtime the SCP runs on).
async fn dcmtk(program: &str, args: &[String]) -> Output {
    ensure_dcmtk();
    let run = tokio::process::Command::new(program).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_mins(2), run)
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish"))
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn transcript(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `storescu -aet <calling> -aec CUSTODIAN 127.0.0.1 <port> <extra…> <files…>`.
async fn storescu(scp: &Scp, calling: &str, extra: &[&str], files: &[PathBuf]) -> Output {
    let mut args: Vec<String> = vec!["-v".into(), "-aet".into(), calling.into(), "-aec".into(), "CUSTODIAN".into()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args.extend(["127.0.0.1".to_owned(), scp.port.to_string()]);
    args.extend(files.iter().map(|f| f.display().to_string()));
    dcmtk("storescu", &args).await
}

fn write_files(dir: &Path, files: &[(&str, Vec<u8>)]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&app.db).await.unwrap()
}

/// Every catalog, upload and audit row as text, for canary scans.
async fn everything_stored(app: &TestApp) -> String {
    app.rows_as_text(&["instance", "series", "study", "subject", "upload_file", "upload_session", "audit_event"]).await
}

/// An instance as a hospital would send it, but without a Patient ID (0010,0020).
fn without_patient_id(instance: &Instance) -> Vec<u8> {
    let mut file = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Always)
        .from_reader(&instance.to_bytes()[..])
        .unwrap();
    file.remove_element(tags::PATIENT_ID);
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

#[tokio::test]
async fn storescu_stores_instances_that_are_published_when_the_association_is_released() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(
        dir.path(),
        &[
            ("1.dcm", Instance::ct(7, 1, 1, 1).to_bytes()),
            ("2.dcm", Instance::ct(7, 1, 1, 2).to_bytes()),
            // 128 KiB of pixels: more than one PDU at Custodian's 64 KiB maximum.
            ("3.dcm", Instance { rows: 256, columns: 256, ..Instance::ct(7, 1, 2, 1) }.to_bytes()),
        ],
    );

    let output = storescu(&scp, "STORESCU", &[], &files).await;
    assert!(output.status.success(), "storescu failed:\n{}", transcript(&output));
    assert_eq!(transcript(&output).matches("Received Store Response (Success)").count(), 3, "{}", transcript(&output));

    // Committed before the A-RELEASE-RP: published by the time storescu has exited.
    assert_eq!(count(&app, "select count(*) from instance where status = 'published'").await, 3);
    assert_eq!(count(&app, "select count(*) from instance where status <> 'published'").await, 0);
    let session: (String, String, i32) =
        sqlx::query_as("select created_by, state, file_count from upload_session").fetch_one(&app.db).await.unwrap();
    assert_eq!(session, ("dicom:STORESCU".to_owned(), "committed".to_owned(), 3), "one session per association");
    let actions = app.audit_actions().await;
    assert_eq!(actions, ["upload.create", "upload.files", "upload.files", "upload.files", "upload.commit"]);
    let created: serde_json::Value =
        sqlx::query_scalar("select details from audit_event where action = 'upload.create'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(created["via"], "c-store");
    assert_eq!(created["calling_ae"], "STORESCU");
    assert_eq!(created["site"], "local");
    assert_eq!(created["cohort"], "default");

    let leaks = canaries_in(everything_stored(&app).await.as_bytes());
    assert!(leaks.is_empty(), "identifiers reached the database: {leaks:?}");
    let leaks = canaries_in(&captured_logs());
    assert!(leaks.is_empty(), "identifiers reached the logs: {leaks:?}");
    scp.stop().await;
}

#[tokio::test]
async fn associations_from_unknown_calling_ae_titles_or_to_another_called_ae_title_are_rejected() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), &[("1.dcm", Instance::ct(8, 1, 1, 1).to_bytes())]);

    let intruder = storescu(&scp, "INTRUDER", &[], &files).await;
    assert!(!intruder.status.success(), "an unknown peer was accepted:\n{}", transcript(&intruder));
    assert!(
        transcript(&intruder).contains("Calling AE Title Not Recognized"),
        "rejected with A-ASSOCIATE-RJ, reason 3:\n{}",
        transcript(&intruder)
    );

    let mut args: Vec<String> = ["-aet", "STORESCU", "-aec", "SOMEONE-ELSE", "127.0.0.1"].map(String::from).to_vec();
    args.push(scp.port.to_string());
    args.push(files[0].display().to_string());
    let misdirected = dcmtk("storescu", &args).await;
    assert!(!misdirected.status.success(), "a misdirected association was accepted");
    assert!(transcript(&misdirected).contains("Called AE Title Not Recognized"), "{}", transcript(&misdirected));

    assert_eq!(count(&app, "select count(*) from instance").await, 0, "nothing stored");
    assert_eq!(count(&app, "select count(*) from upload_session").await, 0, "no session opened");
    assert!(!app.audit_actions().await.iter().any(|a| a.starts_with("upload.")), "nothing audited as an upload");
    scp.stop().await;
}

#[tokio::test]
async fn echoscu_is_answered_with_success_and_opens_no_upload_session() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    let args: Vec<String> = vec![
        "-aet".into(),
        "STORESCU".into(),
        "-aec".into(),
        "CUSTODIAN".into(),
        "127.0.0.1".into(),
        scp.port.to_string(),
    ];
    let output = dcmtk("echoscu", &args).await;
    assert!(output.status.success(), "echoscu failed:\n{}", transcript(&output));
    assert_eq!(count(&app, "select count(*) from upload_session").await, 0, "a verification-only association");
    scp.stop().await;
}

#[tokio::test]
async fn a_file_the_registry_refuses_gets_a_failure_status_while_the_others_in_the_association_are_stored() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    let dir = tempfile::tempdir().unwrap();
    // DCMTK parses every file before it sends it and skips truncated or garbage
    // ones itself, so the refused file here is a well-formed one without a Patient ID.
    let files = write_files(
        dir.path(),
        &[
            ("1.dcm", Instance::ct(9, 1, 1, 1).to_bytes()),
            ("2.dcm", without_patient_id(&Instance::ct(9, 1, 1, 2))),
            ("3.dcm", Instance::ct(9, 1, 1, 3).to_bytes()),
        ],
    );

    // --no-halt: go on after an unsuccessful store, in the same association.
    let output = storescu(&scp, "STORESCU", &["--no-halt"], &files).await;
    let text = transcript(&output);
    assert_eq!(text.matches("Received Store Response (Success)").count(), 2, "{text}");
    assert_eq!(text.matches("Received Store Response (").count(), 3, "{text}");
    assert!(text.contains("Error: DataSetDoesNotMatchSOPClass"), "status A900:\n{text}");

    assert_eq!(count(&app, "select count(*) from upload_session").await, 1, "one association, one session");
    assert_eq!(count(&app, "select count(*) from instance where status = 'published'").await, 2);
    let refused: (String, Option<String>) =
        sqlx::query_as("select outcome, code from upload_file where ordinal = 2").fetch_one(&app.db).await.unwrap();
    assert_eq!(refused, ("rejected".to_owned(), Some("missing-attribute".to_owned())));
    let leaks = canaries_in(everything_stored(&app).await.as_bytes());
    assert!(leaks.is_empty(), "identifiers reached the database: {leaks:?}");
    scp.stop().await;
}

#[tokio::test]
async fn an_aborted_association_publishes_nothing_and_its_session_is_aborted() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(
        dir.path(),
        &[("1.dcm", Instance::ct(10, 1, 1, 1).to_bytes()), ("2.dcm", Instance::ct(10, 1, 1, 2).to_bytes())],
    );

    let output = storescu(&scp, "STORESCU", &["--abort"], &files).await;
    assert_eq!(transcript(&output).matches("Received Store Response (Success)").count(), 2, "{}", transcript(&output));

    // The SCP notices the A-ABORT asynchronously.
    let mut state = String::new();
    for _ in 0..100 {
        state = sqlx::query_scalar("select state from upload_session").fetch_one(&app.db).await.unwrap();
        if state != "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "aborted");
    assert_eq!(count(&app, "select count(*) from instance").await, 0, "staged instances are dropped");
    assert_eq!(app.audit_actions().await.last().map(String::as_str), Some("upload.abort"));
    scp.stop().await;
}

#[tokio::test]
async fn compressed_instances_are_stored_in_their_transfer_syntax_without_being_decoded() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let plain = write_files(dir.path(), &[("plain.dcm", Instance::ct(11, 1, 1, 1).to_bytes())]);
    let jpeg = dir.path().join("jpeg-lossless.dcm");
    // dcmcjpeg's default: JPEG Lossless, Non-Hierarchical, First-Order Prediction (1.2.840.10008.1.2.4.70).
    let encoded = dcmtk("dcmcjpeg", &[plain[0].display().to_string(), jpeg.display().to_string()]).await;
    assert!(encoded.status.success(), "dcmcjpeg failed:\n{}", transcript(&encoded));

    // -xs: propose JPEG Lossless SV1 (storescu proposes uncompressed syntaxes only by default).
    let output = storescu(&scp, "STORESCU", &["-xs"], &[jpeg]).await;
    assert!(output.status.success(), "storescu failed:\n{}", transcript(&output));
    let stored: (String, String) =
        sqlx::query_as("select transfer_syntax, status from instance").fetch_one(&app.db).await.unwrap();
    assert_eq!(stored, ("1.2.840.10008.1.2.4.70".to_owned(), "published".to_owned()));
    scp.stop().await;
}

/// A C-STORE-RQ command set.
fn store_request(message_id: u16, sop_instance: &str) -> Vec<u8> {
    let command = InMemDicomObject::command_from_element_iter([
        DataElement::new(tags::AFFECTED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from(CT_IMAGE_STORAGE)),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(0x0001_u16)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0_u16)),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(0_u16)),
        DataElement::new(tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop_instance)),
    ]);
    let mut out = Vec::new();
    command.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
    out
}

/// The data set of an instance in Explicit VR Little Endian, without preamble and meta group.
fn data_set_of(instance: &Instance) -> Vec<u8> {
    let file = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Always)
        .from_reader(&instance.to_bytes()[..])
        .unwrap();
    let mut out = Vec::new();
    file.write_dataset_with_ts(&mut out, &EXPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
    out
}

/// A sender speaking through dicom-ul's client, for what DCMTK would not send.
struct Sender {
    association: dicom_ul::association::client::AsyncClientAssociation<tokio::net::TcpStream>,
    context: u8,
    next_message_id: u16,
}

impl Sender {
    async fn connect(scp: &Scp) -> Self {
        let association = ClientAssociationOptions::new()
            .calling_ae_title("STORESCU")
            .called_ae_title("CUSTODIAN")
            .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_VR_LE])
            .establish_async(("127.0.0.1", scp.port))
            .await
            .expect("association accepted");
        let context = association.presentation_contexts()[0].id;
        Self { association, context, next_message_id: 1 }
    }

    /// Sends a C-STORE-RQ whose data set goes in `fragments` (the last two share a PDU);
    /// returns the response's status after checking that it answers this request.
    async fn store(&mut self, sop_instance: &str, fragments: Vec<Vec<u8>>) -> u16 {
        let message_id = self.next_message_id;
        self.next_message_id += 1;
        let pdv =
            |value_type, is_last, data| PDataValue { presentation_context_id: self.context, value_type, is_last, data };
        let mut pdus = vec![vec![pdv(PDataValueType::Command, true, store_request(message_id, sop_instance))]];
        let n = fragments.len();
        for (i, fragment) in fragments.into_iter().enumerate() {
            let value = pdv(PDataValueType::Data, i + 1 == n, fragment);
            if i + 1 == n && n > 1 {
                pdus.last_mut().unwrap().push(value);
            } else {
                pdus.push(vec![value]);
            }
        }
        for data in pdus {
            self.association.send(&Pdu::PData { data }).await.unwrap();
        }
        let Pdu::PData { data } = self.association.receive().await.unwrap() else { panic!("expected a C-STORE-RSP") };
        let response =
            InMemDicomObject::read_dataset_with_ts(&data[0].data[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
        let number = |tag| response.element(tag).unwrap().to_int::<u16>().unwrap();
        assert_eq!(number(tags::COMMAND_FIELD), 0x8001, "a C-STORE-RSP");
        assert_eq!(number(tags::MESSAGE_ID_BEING_RESPONDED_TO), message_id);
        let echoed = response.element(tags::AFFECTED_SOP_INSTANCE_UID).unwrap().to_str().unwrap();
        assert_eq!(echoed.trim_end_matches('\0'), sop_instance, "the sender's own UID, echoed");
        number(tags::STATUS)
    }
}

#[tokio::test]
async fn truncated_and_oversized_data_sets_get_failure_statuses_and_the_association_goes_on() {
    let app = TestApp::with_config(|config| config.ingest.max_file_bytes = 16 * 1024).await;
    let scp = Scp::start(&app).await;
    let mut sender = Sender::connect(&scp).await;

    // Cut inside the Pixel Data, the last element: DCMTK would never send this.
    let mut truncated = data_set_of(&Instance::ct(12, 1, 1, 1));
    truncated.truncate(truncated.len() - 100);
    let truncated_status = sender.store("1.2.3.4.1", vec![truncated]).await;
    let oversized_status = sender.store("1.2.3.4.2", vec![vec![0_u8; 12 * 1024]; 2]).await;
    // A good one in three fragments over two PDUs, reassembled.
    let good = data_set_of(&Instance::ct(12, 1, 1, 2));
    let fragments = good.chunks(good.len() / 3 + 1).map(<[u8]>::to_vec).collect();
    let good_status = sender.store("1.2.3.4.3", fragments).await;
    sender.association.release().await.unwrap();

    assert_eq!(
        [truncated_status, oversized_status, good_status],
        [0xC000, 0xA700, 0x0000],
        "cannot understand, out of resources, success"
    );
    assert_eq!(count(&app, "select count(*) from instance where status = 'published'").await, 1);
    let codes: Vec<Option<String>> =
        sqlx::query_scalar("select code from upload_file order by ordinal").fetch_all(&app.db).await.unwrap();
    assert_eq!(codes, [Some("malformed-dicom".to_owned()), Some("file-too-large".to_owned()), None]);
    scp.stop().await;
}

/// A P-DATA-TF PDU of `(presentation context, message control header, bytes)` values.
fn pdata(values: &[(u8, u8, &[u8])]) -> Vec<u8> {
    let mut items = Vec::new();
    for (context, control, data) in values {
        items.extend_from_slice(&u32::try_from(data.len() + 2).unwrap().to_be_bytes());
        items.extend_from_slice(&[*context, *control]);
        items.extend_from_slice(data);
    }
    let mut pdu = vec![0x04, 0];
    pdu.extend_from_slice(&u32::try_from(items.len()).unwrap().to_be_bytes());
    pdu.extend_from_slice(&items);
    pdu
}

// Message control headers (PS3.8 E.2): command or data set, last fragment or not.
const COMMAND: u8 = 0x01;
const COMMAND_LAST: u8 = 0x03;
const DATA: u8 = 0x00;
const DATA_LAST: u8 = 0x02;

#[tokio::test]
async fn a_message_cut_into_odd_fragments_and_pdus_arriving_in_small_pieces_is_stored_whole() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    let mut sender = Sender::connect(&scp).await;
    let context = sender.context;
    // The command set in two fragments in two PDUs; the data set in six
    // fragments over three PDUs: one alone, then three in one PDU (one of them
    // empty), then the last two together.
    let command = store_request(1, "1.2.3.4.9");
    let data = data_set_of(&Instance::ct(15, 1, 1, 1));
    let n = data.len();
    let cut = [n / 5, n / 5 + 1, n * 3 / 5, n - 7];
    let mut bytes = pdata(&[(context, COMMAND, &command[..10])]);
    bytes.extend(pdata(&[(context, COMMAND_LAST, &command[10..])]));
    bytes.extend(pdata(&[(context, DATA, &data[..cut[0]])]));
    bytes.extend(pdata(&[
        (context, DATA, &data[cut[0]..cut[1]]),
        (context, DATA, &[]),
        (context, DATA, &data[cut[1]..cut[2]]),
    ]));
    bytes.extend(pdata(&[(context, DATA, &data[cut[2]..cut[3]]), (context, DATA_LAST, &data[cut[3]..])]));
    // In pieces of 97 bytes, so headers and values straddle the reads.
    let socket = sender.association.inner_stream();
    for piece in bytes.chunks(97) {
        tokio::io::AsyncWriteExt::write_all(socket, piece).await.unwrap();
        tokio::io::AsyncWriteExt::flush(socket).await.unwrap();
        tokio::task::yield_now().await;
    }
    let Pdu::PData { data: response } = sender.association.receive().await.unwrap() else {
        panic!("expected a C-STORE-RSP")
    };
    let response =
        InMemDicomObject::read_dataset_with_ts(&response[0].data[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap();
    assert_eq!(response.element(tags::STATUS).unwrap().to_int::<u16>().unwrap(), 0x0000);
    // The next message on the same association is read from the right place.
    assert_eq!(sender.store("1.2.3.4.10", vec![data_set_of(&Instance::ct(15, 1, 1, 2))]).await, 0x0000);
    sender.association.release().await.unwrap();
    assert_eq!(count(&app, "select count(*) from instance where status = 'published'").await, 2);
    scp.stop().await;
}

#[tokio::test]
async fn a_value_longer_than_its_pdu_aborts_the_association_and_publishes_nothing() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    for broken in ["value overruns its PDU", "PDU over the maximum", "unknown PDU type"] {
        let mut sender = Sender::connect(&scp).await;
        assert_eq!(sender.store("1.2.3.4.1", vec![data_set_of(&Instance::ct(16, 1, 1, 1))]).await, 0x0000);
        let context = sender.context;
        let bytes = match broken {
            "value overruns its PDU" => {
                let mut pdu = pdata(&[(context, COMMAND_LAST, &store_request(2, "1.2.3.4.2"))]);
                pdu[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
                pdu
            }
            "PDU over the maximum" => {
                let mut pdu = vec![0x04, 0];
                pdu.extend_from_slice(&(64 * 1024 * 1024_u32).to_be_bytes());
                pdu
            }
            _ => vec![0x09, 0, 0, 0, 0, 4, 0, 0, 0, 0],
        };
        tokio::io::AsyncWriteExt::write_all(sender.association.inner_stream(), &bytes).await.unwrap();
        assert!(
            matches!(sender.association.receive().await, Ok(Pdu::AbortRQ { .. })),
            "{broken}: the sender is told with an A-ABORT"
        );
    }
    for _ in 0..100 {
        if count(&app, "select count(*) from upload_session where state = 'open'").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&app, "select count(*) from upload_session where state = 'aborted'").await, 3);
    assert_eq!(count(&app, "select count(*) from instance").await, 0, "nothing of an aborted session is kept");
    scp.stop().await;
}

#[tokio::test]
async fn a_connection_lost_without_release_aborts_the_session_and_publishes_nothing() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    let mut sender = Sender::connect(&scp).await;
    assert_eq!(sender.store("1.2.3.4.1", vec![data_set_of(&Instance::ct(13, 1, 1, 1))]).await, 0x0000);
    drop(sender); // no A-RELEASE, no A-ABORT: the TCP connection just closes

    let mut state = String::new();
    for _ in 0..100 {
        state = sqlx::query_scalar("select state from upload_session").fetch_one(&app.db).await.unwrap();
        if state != "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "aborted");
    assert_eq!(count(&app, "select count(*) from instance").await, 0);
    assert_eq!(app.audit_actions().await, ["upload.create", "upload.files", "upload.abort"]);
    scp.stop().await;
}

#[tokio::test]
async fn shutdown_aborts_associations_still_open_after_the_grace_period_and_their_sessions() {
    let app = TestApp::new().await;
    let scp = Scp::start_with_grace(&app, Duration::from_millis(100)).await;
    let mut sender = Sender::connect(&scp).await;
    assert_eq!(sender.store("1.2.3.4.1", vec![data_set_of(&Instance::ct(14, 1, 1, 1))]).await, 0x0000);

    scp.stop().await;
    assert!(
        matches!(sender.association.receive().await, Ok(Pdu::AbortRQ { .. })),
        "the sender is told with an A-ABORT"
    );
    let state: String = sqlx::query_scalar("select state from upload_session").fetch_one(&app.db).await.unwrap();
    assert_eq!(state, "aborted", "closed before the SCP stopped");
    assert_eq!(count(&app, "select count(*) from instance").await, 0);
}

#[tokio::test]
async fn storescu_sends_a_deflated_file_over_a_deflated_context_and_it_is_stored_inflated() {
    let app = TestApp::new().await;
    let scp = Scp::start(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let plain = write_files(dir.path(), &[("plain.dcm", Instance::ct(8, 1, 1, 1).to_bytes())]);
    let deflated = dir.path().join("deflated.dcm");
    let converted =
        dcmtk("dcmconv", &["+td".to_owned(), plain[0].display().to_string(), deflated.display().to_string()]).await;
    assert!(converted.status.success(), "{}", transcript(&converted));

    // -xd proposes Deflated Explicit VR Little Endian first; the file goes over it as it is.
    let output = storescu(&scp, "STORESCU", &["-xd", "-v"], std::slice::from_ref(&deflated)).await;
    assert!(output.status.success(), "storescu failed:\n{}", transcript(&output));
    assert!(
        transcript(&output).contains("-> Deflated Explicit VR Little Endian"),
        "sent over a deflated context:\n{}",
        transcript(&output)
    );
    assert!(transcript(&output).contains("Received Store Response (Success)"), "{}", transcript(&output));
    let syntax: String = sqlx::query_scalar("select transfer_syntax from instance").fetch_one(&app.db).await.unwrap();
    assert_eq!(syntax, "1.2.840.10008.1.2.1", "stored as the Explicit VR Little Endian it was");
    let leaks = canaries_in(everything_stored(&app).await.as_bytes());
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[tokio::test]
async fn an_association_beyond_the_limit_is_rejected_as_transient_and_the_next_one_after_a_release_is_accepted() {
    let app = TestApp::with_config(|config| config.dicom.max_associations = 1).await;
    let scp = Scp::start(&app).await;
    let mut holder = Sender::connect(&scp).await;
    assert_eq!(holder.store("1.2.3.4.1", vec![data_set_of(&Instance::ct(15, 1, 1, 1))]).await, 0x0000);

    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), &[("2.dcm", Instance::ct(15, 1, 1, 2).to_bytes())]);
    let refused = storescu(&scp, "STORESCU", &[], &files).await;
    assert!(!refused.status.success(), "a second association was accepted:\n{}", transcript(&refused));
    assert!(
        transcript(&refused).contains("Local Limit Exceeded"),
        "an A-ASSOCIATE-RJ the sender understands:\n{}",
        transcript(&refused)
    );
    let rejection = ClientAssociationOptions::new()
        .calling_ae_title("STORESCU")
        .called_ae_title("CUSTODIAN")
        .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_VR_LE])
        .establish_async(("127.0.0.1", scp.port))
        .await
        .map(|_| ())
        .expect_err("the limit holds");
    let dicom_ul::association::Error::Rejected { association_rj, .. } = rejection else {
        panic!("not an A-ASSOCIATE-RJ: {rejection:?}")
    };
    assert_eq!(association_rj.result, AssociationRJResult::Transient, "the sender may try again later");
    assert_eq!(
        association_rj.source,
        AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded
        )
    );

    holder.association.release().await.unwrap();
    let mut again = storescu(&scp, "STORESCU", &[], &files).await;
    for _ in 0..50 {
        if again.status.success() {
            break;
        }
        // The slot is freed once the released association's task has ended.
        tokio::time::sleep(Duration::from_millis(20)).await;
        again = storescu(&scp, "STORESCU", &[], &files).await;
    }
    assert!(again.status.success(), "the freed slot is taken:\n{}", transcript(&again));
    assert_eq!(count(&app, "select count(*) from instance where status = 'published'").await, 2);
    assert_eq!(count(&app, "select count(*) from upload_session").await, 2, "a refusal opens no session");
    scp.stop().await;
}
