//! The DICOM C-STORE SCP (PS3.4 Annex B, PS3.7, PS3.8): hospital PACS and
//! modalities push instances over the DICOM upper layer protocol.
//!
//! Only configured peers may associate: the calling AE title must be one of
//! `dicom.peers` (which names the site and cohort its data joins) and the
//! called AE title must be `dicom.ae_title`; anything else is answered with an
//! A-ASSOCIATE-RJ. Every association that negotiates a storage SOP class is one
//! upload session: opened when the association is accepted, committed at
//! A-RELEASE (before the A-RELEASE-RP, so a sender whose release succeeded
//! finds its instances published), aborted on A-ABORT, connection loss,
//! protocol errors and shutdown. Associations that only negotiate Verification
//! (C-ECHO, which PACS send to monitor their links) open no session.
//!
//! The data set of a C-STORE-RQ is never decoded here: it is re-wrapped as a
//! Part-10 file in memory (preamble, `DICM`, a file meta group naming the
//! command's SOP class and instance and the presentation context's transfer
//! syntax, then the bytes as received) and goes through
//! [`Ingestor::ingest_one`], the pipeline of every other path. A C-STORE-RSP follows each
//! instance once its rows are committed.
//!
//! Logs carry AE titles, remote addresses, counts and status codes, never a
//! value of a data set; the sender's own SOP Instance UID goes back only in the
//! C-STORE-RSP that answers it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::server::{
    AcceptAny, AccessControl, AsyncServerAssociation, DefaultNegotiation, ServerAssociationOptions,
};
use dicom_ul::association::{Association, AsyncAssociation};
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, MAXIMUM_PDU_SIZE, MINIMUM_PDU_SIZE, PDataValue, PDataValueType, Pdu,
    PresentationContextResultReason, UserIdentity,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{Counts, FileReport, Ingestor, Outcome, Received, Target};
use crate::config::{DicomConfig, DicomPeer};

/// Transfer syntaxes accepted. The data set is re-wrapped, never decoded, so
/// encapsulated (compressed) syntaxes need no codec. dicom-ul drops the ones the
/// transfer syntax registry cannot read; Deflated is readable (the registry's
/// `deflate` feature) and inflated, within the file size limit, by the
/// de-identifier.
pub const TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    // Explicit VR Big Endian: retired, yet still proposed by old modalities; dicom-rs reads it.
    "1.2.840.10008.1.2.2",
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::RLE_LOSSLESS,
];

/// How long a new connection may take to send its A-ASSOCIATE-RQ (the ARTIM timer).
const ASSOCIATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an association may stay silent before it is aborted.
const IDLE_TIMEOUT: Duration = Duration::from_mins(5);
/// How long one PDU may take to send.
const WRITE_TIMEOUT: Duration = Duration::from_mins(1);
/// How long associations may go on after shutdown is requested before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a connection refused for the association limit may take to send its request.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// A command set is a few hundred bytes; anything this large is not one.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

// PDU types (PS3.8 9.3.1) read by the association loop.
const P_DATA_TF: u8 = 0x04;
const A_RELEASE_RQ: u8 = 0x05;
const A_ABORT: u8 = 0x07;

// DIMSE command fields (PS3.7 E.1).
const C_STORE_RQ: u16 = 0x0001;
const C_STORE_RSP: u16 = 0x8001;
const C_ECHO_RQ: u16 = 0x0030;
const C_ECHO_RSP: u16 = 0x8030;
const C_CANCEL_RQ: u16 = 0x0FFF;
/// Command Data Set Type (0000,0800) of a message without a data set.
const NO_DATA_SET: u16 = 0x0101;

// Status codes (PS3.4 B.2.3, PS3.7 C).
const SUCCESS: u16 = 0x0000;
const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
const UNRECOGNIZED_OPERATION: u16 = 0x0211;
const OUT_OF_RESOURCES: u16 = 0xA700;
const DATA_SET_DOES_NOT_MATCH: u16 = 0xA900;
const CANNOT_UNDERSTAND: u16 = 0xC000;
const UNABLE_TO_PROCESS: u16 = 0xC001;

/// Runs the SCP on `listener` until `shutdown` resolves, one task per association.
///
/// After `shutdown`, no connection is accepted; associations still open get a
/// grace period of ten seconds to finish (only the requestor can release an
/// association), then they are aborted and their sessions with them.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingestor>,
    config: DicomConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with_grace(listener, ingest, config, shutdown, SHUTDOWN_GRACE).await;
}

/// [`serve`] with another shutdown grace period.
pub async fn serve_with_grace(
    listener: TcpListener,
    ingest: Arc<Ingestor>,
    config: DicomConfig,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) {
    let scp = Arc::new(Scp::new(config, ingest));
    if scp.peers.is_empty() {
        tracing::warn!("no DICOM peers are configured (dicom.peers); every association will be rejected");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // One permit per association; a connection beyond the limit is refused (and
    // refusals, each waiting a moment for the request it answers, are bounded too).
    let slots = Arc::new(Semaphore::new(scp.max_associations));
    let refusals = Arc::new(Semaphore::new(scp.max_associations));
    let mut associations = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, remote)) => {
                    if let Err(error) = socket.set_nodelay(true) {
                        tracing::debug!(%error, %remote, "setting TCP_NODELAY on a DICOM connection failed");
                    }
                    if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
                        let association = Arc::clone(&scp).association(socket, remote, stop_rx.clone());
                        associations.spawn(async move {
                            association.await;
                            drop(slot);
                        });
                    } else if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
                        associations.spawn(async move {
                            refuse_over_limit(socket, remote).await;
                            drop(refusal);
                        });
                    } else {
                        tracing::warn!(%remote, "DICOM connection closed: too many associations and refusals at once");
                    }
                }
                Err(error) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!(%error, "accepting a DICOM connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(ended) = associations.join_next(), if !associations.is_empty() => log_panic(ended),
        }
    }
    drop(listener);
    if !associations.is_empty() {
        tracing::info!(open = associations.len(), "DICOM SCP stopping; waiting for open associations");
        let drain = async {
            while let Some(ended) = associations.join_next().await {
                log_panic(ended);
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(open = associations.len(), "aborting DICOM associations still open after the grace period");
            let _ = stop_tx.send(true);
            while let Some(ended) = associations.join_next().await {
                log_panic(ended);
            }
        }
    }
    tracing::info!("DICOM SCP stopped");
}

/// Answers the A-ASSOCIATE-RQ of a connection beyond `dicom.max_associations`
/// with an A-ASSOCIATE-RJ, rejected-transient, "local limit exceeded"
/// (PS3.8 9.3.4), which tells the sender to try again later; then closes it.
async fn refuse_over_limit(mut socket: TcpStream, remote: SocketAddr) {
    let mut received = bytes::BytesMut::with_capacity(4096);
    let request = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        loop {
            if socket.read_buf(&mut received).await.ok()? == 0 || received.len() > MAX_COMMAND_BYTES {
                return None;
            }
            match dicom_ul::pdu::read_pdu(&received[..], MAXIMUM_PDU_SIZE, false) {
                Ok(Some(Pdu::AssociationRQ(_))) => return Some(()),
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => return None,
            }
        }
    })
    .await;
    if let Ok(Some(())) = request {
        let rejection = Pdu::AssociationRJ(AssociationRJ {
            result: AssociationRJResult::Transient,
            source: AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
        });
        let mut bytes = Vec::new();
        if dicom_ul::pdu::write_pdu(&mut bytes, &rejection).is_ok() {
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, socket.write_all(&bytes)).await;
        }
        let _ = socket.shutdown().await;
    }
    tracing::warn!(%remote, "DICOM association rejected: the limit of concurrent associations (dicom.max_associations) is reached");
}

fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(error) = ended
        && error.is_panic()
    {
        tracing::error!("a DICOM association task panicked");
    }
}

/// What every association shares.
struct Scp {
    options: ServerAssociationOptions<'static, AcceptAny, DefaultNegotiation>,
    peers: Vec<DicomPeer>,
    ingest: Arc<Ingestor>,
    max_associations: usize,
    /// The largest PDU accepted, as advertised in the A-ASSOCIATE-AC.
    max_pdu_length: usize,
}

impl Scp {
    fn new(config: DicomConfig, ingest: Arc<Ingestor>) -> Self {
        // Validated with the configuration; the clamp only keeps dicom-ul's own bounds.
        let max_pdu_length = config.max_pdu_length.clamp(MINIMUM_PDU_SIZE, MAXIMUM_PDU_SIZE);
        let mut options = ServerAssociationOptions::new()
            .ae_title(config.ae_title.trim().to_owned())
            .max_pdu_length(max_pdu_length)
            .read_timeout(IDLE_TIMEOUT)
            .write_timeout(WRITE_TIMEOUT)
            .with_abstract_syntax(uids::VERIFICATION);
        // The classes every other path stores, and no other.
        for (sop_class, _) in super::sop_classes::STORAGE_SOP_CLASSES {
            options = options.with_abstract_syntax(*sop_class);
        }
        for transfer_syntax in TRANSFER_SYNTAXES {
            options = options.with_transfer_syntax(*transfer_syntax);
        }
        Self {
            options,
            peers: config.peers,
            ingest,
            max_associations: config.max_associations.max(1),
            max_pdu_length: max_pdu_length as usize,
        }
    }

    fn peer(&self, calling_ae: &str) -> Option<&DicomPeer> {
        self.peers.iter().find(|peer| peer.ae_title.trim() == calling_ae)
    }

    /// One association, from the A-ASSOCIATE-RQ to the end of the connection.
    async fn association(self: Arc<Self>, socket: TcpStream, remote: SocketAddr, mut stop: watch::Receiver<bool>) {
        let options = self.options.clone().ae_access_control(Peers { scp: &self, remote });
        let established = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            established = tokio::time::timeout(ASSOCIATE_TIMEOUT, options.establish_async(socket)) => established,
        };
        let mut association = match established {
            Ok(Ok(association)) => association,
            // Rejections by AE title are logged by `Peers`.
            Ok(Err(dicom_ul::association::Error::Rejected { association_rj, .. })) => {
                tracing::debug!(%remote, reason = %association_rj.source, "DICOM association rejected");
                return;
            }
            Ok(Err(error)) => {
                tracing::info!(%remote, error = describe(&error), "DICOM association not established");
                return;
            }
            Err(_) => {
                tracing::info!(%remote, "DICOM association not established: no A-ASSOCIATE-RQ in time");
                return;
            }
        };
        let calling_ae = association.peer_ae_title().to_owned();
        let Some(peer) = self.peer(&calling_ae) else {
            // `Peers` let it through, so this cannot happen; never store for an unknown peer.
            let _ = association.abort().await;
            return;
        };
        let accepted = association
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .count();
        let stores = association.presentation_contexts().iter().any(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance && pc.abstract_syntax != uids::VERIFICATION
        });
        tracing::info!(calling_ae = ?calling_ae, %remote, presentation_contexts = accepted, "DICOM association accepted");

        let actor = format!("dicom:{calling_ae}");
        let target = if stores {
            match self.open_session(peer, &actor, &calling_ae).await {
                Ok(Some(target)) => Some(target),
                Ok(None) => {
                    tracing::error!(
                        calling_ae = ?calling_ae,
                        cohort = ?peer.cohort,
                        site = ?peer.site,
                        "the cohort or site of a DICOM peer does not exist; aborting its association"
                    );
                    let _ = association.abort().await;
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, calling_ae = ?calling_ae, "opening an upload session for a DICOM association");
                    let _ = association.abort().await;
                    return;
                }
            }
        } else {
            None
        };

        // What dicom-ul read past the request (nothing, from a well-behaved peer).
        let read_ahead = AsyncAssociation::get_mut(&mut association).1.split();
        let mut link = Link {
            scp: &self,
            association,
            calling_ae,
            actor,
            target,
            pending: None,
            reports: Vec::new(),
            echoes: 0,
            last_file_size: 0,
            read_ahead,
        };
        let end = link.run(&mut stop).await;
        link.finish(end).await;
    }

    /// Opens the association's upload session, audited like every other.
    async fn open_session(
        &self,
        peer: &DicomPeer,
        actor: &str,
        calling_ae: &str,
    ) -> Result<Option<Target>, sqlx::Error> {
        let origin = json!({ "via": "c-store", "calling_ae": calling_ae });
        let session = self.ingest.open_session(actor, &peer.cohort, &peer.site, &origin).await?;
        Ok(session.map(|s| s.target()))
    }

    /// Commits or aborts a session, audited; on abort its objects are deleted after the commit.
    async fn close_session(&self, id: Uuid, commit: bool, actor: &str, calling_ae: &str) -> Result<(), sqlx::Error> {
        let origin = json!({ "via": "c-store", "calling_ae": calling_ae });
        if let Err(state) = self.ingest.close_session(actor, id, commit, &origin).await? {
            tracing::warn!(calling_ae = ?calling_ae, state, "the upload session of a DICOM association was no longer open");
        }
        Ok(())
    }
}

/// Access control: the calling AE title must be a configured peer, the called one ours.
struct Peers<'a> {
    scp: &'a Scp,
    remote: SocketAddr,
}

impl AccessControl for Peers<'_> {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let (calling, called, remote) = (calling_ae_title, called_ae_title, self.remote);
        if self.scp.peer(calling_ae_title).is_none() {
            tracing::warn!(calling_ae = ?calling, called_ae = ?called, %remote, "DICOM association rejected: calling AE title not recognized");
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        if called_ae_title != this_ae_title {
            tracing::warn!(calling_ae = ?calling, called_ae = ?called, %remote, "DICOM association rejected: called AE title not recognized");
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        Ok(())
    }
}

/// How an association ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A-RELEASE-RQ: commit.
    Release,
    /// A-ABORT from the peer.
    PeerAbort,
    /// The connection broke, timed out, or a PDU could not be read or sent.
    Lost(&'static str),
    /// The peer broke the protocol; Custodian aborts.
    Protocol(&'static str),
    /// Custodian is stopping; it aborts.
    Shutdown,
}

/// A DIMSE message being received: its command set, then its data set.
struct Message {
    context_id: u8,
    command_bytes: Vec<u8>,
    command: Option<Command>,
    /// The Part-10 file being assembled: preamble, file meta group, then the
    /// data set fragments as they arrive (no second copy to add the header).
    data: Vec<u8>,
    /// Whether `data` starts with the file meta group (else it could not be built).
    has_header: bool,
    /// Bytes of the data set received (the header not counted).
    data_size: usize,
    too_large: bool,
}

impl Message {
    fn new(context_id: u8) -> Self {
        Self {
            context_id,
            command_bytes: Vec::new(),
            command: None,
            data: Vec::new(),
            has_header: false,
            data_size: 0,
            too_large: false,
        }
    }
}

/// The parts of a command set Custodian uses.
struct Command {
    field: u16,
    message_id: u16,
    has_data_set: bool,
    /// Affected SOP Class UID (0000,0002).
    sop_class: Option<String>,
    /// Affected SOP Instance UID (0000,1000): the sender's own UID, echoed only in the response.
    sop_instance: Option<String>,
}

impl Command {
    /// Reads the elements Custodian uses from a command set: Implicit VR
    /// Little Endian (PS3.7 6.3.1), group 0000 only, every length defined.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let (mut field, mut message_id, mut data_set_type) = (None, None, None);
        let (mut sop_class, mut sop_instance) = (None, None);
        let mut rest = bytes;
        while !rest.is_empty() {
            let header = rest.get(..8)?;
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            let value = rest.get(8..8usize.checked_add(length)?)?;
            rest = &rest[8 + length..];
            if group != 0x0000 {
                return None;
            }
            let number = || value.get(..2).map(|v| u16::from_le_bytes([v[0], v[1]]));
            let text = || {
                let text = std::str::from_utf8(value).ok()?.trim_end_matches(['\0', ' ']);
                (!text.is_empty()).then(|| text.to_owned())
            };
            match element {
                0x0002 => sop_class = text(),
                0x0100 => field = number(),
                0x0110 => message_id = number(),
                0x0800 => data_set_type = number(),
                0x1000 => sop_instance = text(),
                _ => {}
            }
        }
        Some(Self {
            field: field?,
            message_id: message_id.unwrap_or(0),
            has_data_set: data_set_type? != NO_DATA_SET,
            sop_class,
            sop_instance,
        })
    }
}

/// A data set as received, as a Part-10 file, or its size when it was over the limit.
struct DataSet {
    file: Vec<u8>,
    has_header: bool,
    size: usize,
    too_large: bool,
}

/// An established association.
struct Link<'a> {
    scp: &'a Scp,
    association: AsyncServerAssociation<TcpStream>,
    calling_ae: String,
    actor: String,
    /// The association's upload session, when it negotiated a storage SOP class.
    target: Option<Target>,
    pending: Option<Message>,
    reports: Vec<FileReport>,
    echoes: u32,
    /// The size of the previous file: the next one (a slice of the same series, most
    /// likely) is received into a buffer that large, so it never grows by copying.
    last_file_size: usize,
    /// Bytes dicom-ul read past the A-ASSOCIATE-RQ, read before the socket.
    read_ahead: bytes::BytesMut,
}

impl Link<'_> {
    async fn run(&mut self, stop: &mut watch::Receiver<bool>) -> End {
        let mut complete = Vec::new();
        loop {
            // Only reading waits on `stop`: a message being stored is finished
            // and answered first.
            let read = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return End::Shutdown,
                read = tokio::time::timeout(IDLE_TIMEOUT, self.read_pdu(&mut complete)) => read,
            };
            match read {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(end)) | Err(end)) => return end,
                Err(_) => return End::Lost("timed out"),
            }
            for (context_id, command, data_set) in complete.drain(..) {
                if let Err(end) = self.dispatch(context_id, command, data_set).await {
                    return end;
                }
            }
        }
    }

    /// Reads one PDU off the socket. A P-DATA-TF's presentation data values go
    /// straight from the socket into the message they belong to (dicom-ul's
    /// reader would copy each PDU twice on the way); the messages it completes
    /// are added to `complete`. Returns how the association ends, if it does.
    async fn read_pdu(&mut self, complete: &mut Vec<(u8, Command, Option<DataSet>)>) -> Result<Option<End>, End> {
        let mut header = [0u8; 6];
        self.read_exact(&mut header).await?;
        let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
        match header[0] {
            P_DATA_TF => {
                if length > self.scp.max_pdu_length {
                    return Err(End::Protocol("PDU larger than the negotiated maximum"));
                }
                self.read_pdata(length, complete).await?;
                Ok(None)
            }
            A_RELEASE_RQ | A_ABORT if length <= MAX_COMMAND_BYTES => {
                let mut body = vec![0u8; length];
                self.read_exact(&mut body).await?;
                Ok(Some(if header[0] == A_RELEASE_RQ { End::Release } else { End::PeerAbort }))
            }
            _ => Err(End::Protocol("unexpected PDU")),
        }
    }

    /// The presentation data values of a P-DATA-TF PDU of `length` bytes.
    async fn read_pdata(
        &mut self,
        length: usize,
        complete: &mut Vec<(u8, Command, Option<DataSet>)>,
    ) -> Result<(), End> {
        let mut left = length;
        while left > 0 {
            let mut item = [0u8; 6];
            if left < item.len() {
                return Err(End::Protocol("malformed PDU"));
            }
            self.read_exact(&mut item).await?;
            let item_length = u32::from_be_bytes([item[0], item[1], item[2], item[3]]) as usize;
            if item_length < 2 || item_length - 2 > left - item.len() {
                return Err(End::Protocol("malformed PDU"));
            }
            let (context_id, control, len) = (item[4], item[5], item_length - 2);
            left -= item.len() + len;
            if self.context(context_id).is_none() {
                return Err(End::Protocol("P-DATA on a presentation context that was not accepted"));
            }
            let is_last = control & 0x02 != 0;
            let done = if control & 0x01 != 0 {
                self.command_fragment(context_id, len, is_last).await?
            } else {
                self.data_fragment(context_id, len, is_last).await?
            };
            complete.extend(done);
        }
        Ok(())
    }

    /// A fragment of a command set; the message once the command is complete
    /// and has no data set.
    async fn command_fragment(
        &mut self,
        context_id: u8,
        len: usize,
        is_last: bool,
    ) -> Result<Option<(u8, Command, Option<DataSet>)>, End> {
        let message = self.pending.get_or_insert_with(|| Message::new(context_id));
        if message.command.is_some() || message.context_id != context_id {
            return Err(End::Protocol("a command fragment arrived before the previous data set ended"));
        }
        if message.command_bytes.len() + len > MAX_COMMAND_BYTES {
            return Err(End::Protocol("command set too large"));
        }
        let mut bytes = std::mem::take(&mut message.command_bytes);
        let read = self.read_into(&mut bytes, len).await;
        let message = self.pending.as_mut().expect("inserted above");
        message.command_bytes = bytes;
        read?;
        if !is_last {
            return Ok(None);
        }
        let command = Command::parse(&message.command_bytes).ok_or(End::Protocol("unreadable command set"))?;
        if command.has_data_set {
            message.command = Some(command);
            Ok(None)
        } else {
            self.pending = None;
            Ok(Some((context_id, command, None)))
        }
    }

    /// A fragment of a data set, read into the Part-10 file being assembled;
    /// the message once the data set is complete.
    async fn data_fragment(
        &mut self,
        context_id: u8,
        len: usize,
        is_last: bool,
    ) -> Result<Option<(u8, Command, Option<DataSet>)>, End> {
        let transfer_syntax = self.context(context_id).map(|pc| trim_uid(&pc.transfer_syntax).to_owned());
        let limit = self.scp.ingest.limits.max_file_bytes;
        let reserve = self.last_file_size;
        let Some(message) = self.pending.as_mut().filter(|m| m.command.is_some() && m.context_id == context_id) else {
            return Err(End::Protocol("a data set fragment arrived without its command"));
        };
        if message.data_size == 0 && !message.too_large {
            // The first fragment: start the file with its meta group.
            let command = message.command.as_ref().expect("checked above");
            if let (Some(class), Some(instance), Some(ts)) =
                (command.sop_class.as_deref(), command.sop_instance.as_deref(), transfer_syntax.as_deref())
                && let Some(header) = part10_header(class, instance, ts)
            {
                message.data = Vec::with_capacity(reserve.max(header.len() + len));
                message.data.extend_from_slice(&header);
                message.has_header = true;
            }
        }
        message.data_size = message.data_size.saturating_add(len);
        if message.data_size > limit {
            // Keep counting, stop keeping: the answer is "too large" either way.
            message.too_large = true;
            message.data = Vec::new();
            self.skip(len).await?;
        } else {
            let mut data = std::mem::take(&mut message.data);
            let read = self.read_into(&mut data, len).await;
            self.pending.as_mut().expect("checked above").data = data;
            read?;
        }
        if !is_last {
            return Ok(None);
        }
        let Some(Message { command: Some(command), data, has_header, data_size, too_large, .. }) = self.pending.take()
        else {
            return Err(End::Protocol("a data set fragment arrived without its command"));
        };
        if !too_large {
            self.last_file_size = data.len();
        }
        Ok(Some((context_id, command, Some(DataSet { file: data, has_header, size: data_size, too_large }))))
    }

    /// Fills `out` from what dicom-ul had read ahead, then from the socket.
    async fn read_exact(&mut self, out: &mut [u8]) -> Result<(), End> {
        let mut filled = 0;
        if !self.read_ahead.is_empty() {
            filled = out.len().min(self.read_ahead.len());
            out[..filled].copy_from_slice(&self.read_ahead.split_to(filled));
        }
        if filled < out.len() {
            self.association.inner_stream().read_exact(&mut out[filled..]).await.map_err(|e| lost(&e))?;
        }
        Ok(())
    }

    /// Appends `len` bytes to `out`, read from the socket into its spare capacity.
    async fn read_into(&mut self, out: &mut Vec<u8>, len: usize) -> Result<(), End> {
        out.reserve(len);
        let mut left = len;
        if !self.read_ahead.is_empty() {
            let n = left.min(self.read_ahead.len());
            out.extend_from_slice(&self.read_ahead.split_to(n));
            left -= n;
        }
        let socket = self.association.inner_stream();
        while left > 0 {
            let n = socket.read_buf(&mut bytes::BufMut::limit(&mut *out, left)).await.map_err(|e| lost(&e))?;
            if n == 0 {
                return Err(End::Lost("connection closed by the peer"));
            }
            left -= n;
        }
        Ok(())
    }

    /// Reads and drops `len` bytes.
    async fn skip(&mut self, len: usize) -> Result<(), End> {
        let mut scratch = Vec::with_capacity(len.min(64 * 1024));
        let mut left = len;
        while left > 0 {
            let n = left.min(64 * 1024);
            scratch.clear();
            self.read_into(&mut scratch, n).await?;
            left -= n;
        }
        Ok(())
    }

    /// Answers one complete message.
    async fn dispatch(&mut self, context_id: u8, command: Command, data_set: Option<DataSet>) -> Result<(), End> {
        match command.field {
            C_ECHO_RQ => {
                self.echoes += 1;
                self.respond(context_id, C_ECHO_RSP, &command, SUCCESS, None).await
            }
            C_STORE_RQ => {
                let (status, code) = self.store(context_id, &command, data_set).await;
                tracing::debug!(calling_ae = ?self.calling_ae, status = format!("{status:#06X}"), code, "C-STORE");
                self.respond(context_id, C_STORE_RSP, &command, status, code.as_deref()).await
            }
            // Nothing to cancel: every operation is answered before the next is read.
            C_CANCEL_RQ => Ok(()),
            field if field & 0x8000 != 0 => Err(End::Protocol("a DIMSE response arrived at the SCP")),
            field => {
                tracing::info!(calling_ae = ?self.calling_ae, command = format!("{field:#06X}"), "unsupported DIMSE operation");
                self.respond(context_id, field | 0x8000, &command, UNRECOGNIZED_OPERATION, None).await
            }
        }
    }

    /// Ingests one C-STORE data set; returns the response status and an error comment.
    async fn store(&mut self, context_id: u8, command: &Command, data_set: Option<DataSet>) -> (u16, Option<String>) {
        let Some(pc) = self.context(context_id) else {
            return (SOP_CLASS_NOT_SUPPORTED, None);
        };
        let abstract_syntax = pc.abstract_syntax.clone();
        let Some(target) = self.target.as_ref() else {
            return (SOP_CLASS_NOT_SUPPORTED, Some("no storage SOP class was negotiated".into()));
        };
        let (Some(data_set), Some(sop_class), Some(_)) =
            (data_set, command.sop_class.as_deref(), command.sop_instance.as_deref())
        else {
            return (CANNOT_UNDERSTAND, Some("incomplete C-STORE request".into()));
        };
        if trim_uid(&abstract_syntax) != sop_class {
            return (SOP_CLASS_NOT_SUPPORTED, Some("SOP class differs from the presentation context".into()));
        }
        let received = if data_set.too_large {
            Received::Unreadable {
                size: data_set.size,
                code: "file-too-large",
                message: format!(
                    "the file is larger than the limit of {} bytes",
                    self.scp.ingest.limits.max_file_bytes
                ),
            }
        } else if data_set.has_header {
            Received::File(Bytes::from(data_set.file))
        } else {
            Received::Unreadable {
                size: data_set.size,
                code: "malformed-dicom",
                message: "the file meta group could not be built for the data set".into(),
            }
        };
        match self.scp.ingest.ingest_one(&self.actor, target, received).await {
            Ok(report) => {
                let answer = (status_of(&report), report.error_comment());
                self.reports.push(report);
                answer
            }
            Err(error) => {
                tracing::error!(%error, calling_ae = ?self.calling_ae, "ingesting a C-STORE data set");
                (UNABLE_TO_PROCESS, Some("the registry could not record the instance".into()))
            }
        }
    }

    /// Sends a DIMSE response on `context_id`.
    async fn respond(
        &mut self,
        context_id: u8,
        field: u16,
        command: &Command,
        status: u16,
        comment: Option<&str>,
    ) -> Result<(), End> {
        let data =
            response(field, command, status, comment).ok_or(End::Protocol("the response could not be encoded"))?;
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        };
        self.association.send(&pdu).await.map_err(|error| End::Lost(describe(&error)))
    }

    fn context(&self, id: u8) -> Option<&dicom_ul::pdu::PresentationContextNegotiated> {
        self.association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == id && pc.reason == PresentationContextResultReason::Acceptance)
    }

    /// Closes the session as the association ended, then the association.
    async fn finish(self, end: End) {
        let Link { scp, mut association, calling_ae, actor, target, reports, echoes, .. } = self;
        let counts = Counts::of(&reports);
        let commit = end == End::Release;
        let mut closed = true;
        if let Some(target) = &target
            && let Err(error) = scp.close_session(target.session_id, commit, &actor, &calling_ae).await
        {
            tracing::error!(%error, calling_ae = ?calling_ae, commit, "closing the upload session of a DICOM association");
            closed = false;
            // Not published: make sure nothing of it ever is.
            if commit && let Err(error) = scp.close_session(target.session_id, false, &actor, &calling_ae).await {
                tracing::error!(%error, calling_ae = ?calling_ae, "aborting the upload session of a DICOM association");
            }
        }
        let ending = match end {
            End::Release if closed => {
                if let Err(error) = association.send(&Pdu::ReleaseRP).await {
                    tracing::info!(calling_ae = ?calling_ae, error = describe(&error), "sending A-RELEASE-RP failed");
                }
                "released"
            }
            End::Release => {
                // The sender must not take the data for stored.
                let _ = association.abort().await;
                "aborted: the session could not be committed"
            }
            End::PeerAbort => "aborted by the peer",
            End::Lost(reason) | End::Protocol(reason) => {
                if matches!(end, End::Protocol(_)) {
                    let _ = association.abort().await;
                }
                reason
            }
            End::Shutdown => {
                let _ = association.abort().await;
                "aborted: Custodian is stopping"
            }
        };
        tracing::info!(
            calling_ae = ?calling_ae,
            ending,
            stored = counts.stored,
            duplicate = counts.duplicate,
            quarantined = counts.quarantined,
            rejected = counts.rejected,
            echoes,
            "DICOM association ended"
        );
    }
}

/// C-STORE-RSP status of one file's report (PS3.4 B.2.3). A quarantine is a
/// registry decision, not a transfer failure, so it is a success for the sender.
pub fn status_of(report: &FileReport) -> u16 {
    match report.outcome {
        Outcome::Stored | Outcome::Duplicate | Outcome::Quarantined => SUCCESS,
        Outcome::Rejected => match report.code.as_deref() {
            Some("missing-attribute" | "wrong-study") => DATA_SET_DOES_NOT_MATCH,
            Some("not-dicom" | "malformed-dicom" | "unsupported-transfer-syntax") => CANNOT_UNDERSTAND,
            Some("file-too-large") => OUT_OF_RESOURCES,
            Some("sop-class-not-supported") => SOP_CLASS_NOT_SUPPORTED,
            Some("conflict") => super::CONFLICT_STATUS,
            _ => UNABLE_TO_PROCESS,
        },
    }
}

/// The start of the Part-10 file of a received data set: 128-byte preamble,
/// `DICM`, the file meta group; the data set bytes follow exactly as received.
fn part10_header(sop_class: &str, sop_instance: &str, transfer_syntax: &str) -> Option<Vec<u8>> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(transfer_syntax)
        .build()
        .ok()?;
    let mut header = Vec::with_capacity(132 + 256);
    header.resize(128, 0);
    header.extend_from_slice(b"DICM");
    meta.write(&mut header).ok()?;
    Some(header)
}

/// The command set of a response, Implicit VR Little Endian.
fn response(field: u16, command: &Command, status: u16, comment: Option<&str>) -> Option<Vec<u8>> {
    let mut elements = vec![
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(field)),
        DataElement::new(tags::MESSAGE_ID_BEING_RESPONDED_TO, VR::US, PrimitiveValue::from(command.message_id)),
        DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, PrimitiveValue::from(NO_DATA_SET)),
        DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)),
    ];
    if let Some(sop_class) = &command.sop_class {
        elements.push(DataElement::new(tags::AFFECTED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from(sop_class.as_str())));
    }
    if let Some(sop_instance) = &command.sop_instance {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance.as_str()),
        ));
    }
    if let Some(comment) = comment.filter(|_| status != SUCCESS) {
        // Error Comment is LO: at most 64 characters. Codes and fixed texts only, never values.
        let comment: String = comment.chars().take(64).collect();
        elements.push(DataElement::new(tags::ERROR_COMMENT, VR::LO, PrimitiveValue::from(comment)));
    }
    if status == super::CONFLICT_STATUS {
        elements.push(DataElement::new(
            tags::OFFENDING_ELEMENT,
            VR::AT,
            dicom_core::dicom_value!(Tags, [tags::SOP_INSTANCE_UID]),
        ));
    }
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased()).ok()?;
    Some(out)
}

/// How a failed read ends the association.
fn lost(error: &std::io::Error) -> End {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        End::Lost("connection closed by the peer")
    } else {
        End::Lost("connection lost")
    }
}

fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

/// A dicom-ul error in words that carry no data: some of its `Display`s print
/// whole PDUs, data sets included.
fn describe(error: &dicom_ul::association::Error) -> &'static str {
    use dicom_ul::association::Error;
    use dicom_ul::pdu::ReadError;
    match error {
        Error::ConnectionClosed { .. } => "connection closed by the peer",
        Error::ReceivePdu { source, .. } => match source {
            ReadError::ReadPdu { .. } | ReadError::NoPduAvailable { .. } => "connection lost",
            ReadError::PduTooLarge { .. } => "PDU larger than the negotiated maximum",
            _ => "malformed PDU",
        },
        Error::Timeout { .. } => "timed out",
        Error::WireSend { .. } | Error::SendPdu { .. } | Error::SendTooLongPdu { .. } => "could not send a PDU",
        Error::UnexpectedPdu { .. } | Error::UnknownPdu { .. } => "unexpected PDU",
        Error::Rejected { .. } => "association rejected",
        Error::Aborted { .. } => "association aborted",
        _ => "association error",
    }
}
