//! Ingest: received files → de-identification → object store → catalog.
//!
//! Rule: original bytes live only in memory, inside [`deid::deidentify`]'s
//! call; nothing is written before de-identification. Per batch, every file
//! is de-identified and its object written first (create-only, so a crash
//! leaves at most an unreferenced object for the sweep), then the catalog
//! writer makes the objects durable and records all rows, the per-file report
//! and the audit event in one transaction, shared with whatever other batches
//! are waiting at that moment (group commit, see [`writer`]). Every path
//! (REST sessions, STOW-RS, C-STORE) goes through [`Ingestor::ingest_batch`].

pub mod archive;
pub mod content;
pub mod cstore;
mod direct;
pub mod sessions;
pub mod sop_classes;
pub mod spool;
pub mod sweep;
pub mod tables;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::digest::SHA256;
use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::oneshot;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, NewEvent};
use crate::config::IngestConfig;
use crate::deid::{self, DeidSettings, InstanceMeta, QuarantineReason, RegistryKey, SafePrivate};
use crate::storage::{self, Store};

/// Everything ingest needs, shared by all paths.
pub struct Ingestor {
    pub db: PgPool,
    pub store: Store,
    pub key: RegistryKey,
    pub max_shift_days: u32,
    pub safe_private: Vec<SafePrivate>,
    pub missing_patient_id: deid::MissingPatientId,
    pub limits: IngestConfig,
    writer: writer::Writer,
    /// The object directory of a local store, which instances are written into directly.
    local_root: Option<std::path::PathBuf>,
    /// Where archives are spooled, encrypted ([`spool`]): `<data_dir>/spool`.
    pub spool_dir: std::path::PathBuf,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Where a batch goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub session_id: Uuid,
    pub cohort_id: Uuid,
    pub site_id: Uuid,
    pub site_code: String,
    /// When set (STOW-RS to `/studies/{study}`), instances of other studies are refused.
    /// Registry form of the UID.
    pub only_study: Option<String>,
}

/// What happened to one received file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = FileOutcome)]
pub enum Outcome {
    /// De-identified and stored; published when the session commits.
    Stored,
    /// The same instance was already stored; nothing changed.
    Duplicate,
    /// Not accepted; `code` and `message` say why.
    Rejected,
    /// Stored de-identified but held back for a steward (burned-in text).
    Quarantined,
}

impl Outcome {
    /// The stored (and serialized) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
            Self::Quarantined => "quarantined",
        }
    }
}

/// The report of one file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileReport {
    /// Position of the file in its session, from 1.
    pub ordinal: i32,
    pub outcome: Outcome,
    /// Stable code for rejections and quarantines, e.g. `not-dicom`, `conflict`, `burned-in-annotation`.
    pub code: Option<String>,
    /// What is wrong; names tags, never values.
    pub message: Option<String>,
    /// Registry SOP Instance UID (never the original).
    pub sop_uid: Option<String>,
    /// Size of the file as received.
    pub size_bytes: i64,
    /// SOP Class UID, when the file could be read; for the answers of STOW-RS
    /// and C-STORE, not kept with the report.
    #[serde(skip)]
    pub sop_class_uid: Option<String>,
}

impl FileReport {
    /// What went wrong, in at most 64 characters (an Error Comment (0000,0902)
    /// is LO): the message when it fits, else a shorter text of the same
    /// kind. Like messages, it names tags, never values. `None` for a success.
    pub fn error_comment(&self) -> Option<String> {
        const MAX: usize = 64;
        if self.outcome != Outcome::Rejected {
            return None;
        }
        let message = self.message.as_deref().or(self.code.as_deref()).unwrap_or("the file was not accepted");
        if message.chars().count() <= MAX {
            return Some(message.to_owned());
        }
        if self.code.as_deref() == Some("conflict") {
            return Some(CONFLICT_COMMENT.to_owned());
        }
        // Cut at a word boundary, with an ellipsis.
        let cut: String = message.chars().take(MAX - 3).collect();
        let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
        Some(format!("{cut}..."))
    }
}

impl Refused {
    fn new(size: usize, code: &str, message: impl Into<String>) -> Self {
        Self { size, code: code.to_owned(), message: message.into(), sop_uid: None, sop_class_uid: None }
    }

    /// This refusal of a file that was read, naming its instance in registry form.
    pub(crate) fn of(self, meta: &InstanceMeta) -> Self {
        Self { sop_uid: Some(meta.sop_uid.clone()), sop_class_uid: Some(meta.sop_class_uid.clone()), ..self }
    }

    fn report(self, ordinal: i32) -> FileReport {
        FileReport {
            ordinal,
            outcome: Outcome::Rejected,
            code: Some(self.code),
            message: Some(self.message),
            sop_uid: self.sop_uid,
            size_bytes: i64::try_from(self.size).unwrap_or(i64::MAX),
            sop_class_uid: self.sop_class_uid,
        }
    }
}

/// A file after de-identification and storage, waiting for its rows. The
/// de-identified bytes are already in the object store and not kept here, so
/// memory does not grow with the number of files in a batch.
pub(crate) struct Prepared {
    pub size: usize,
    pub meta: InstanceMeta,
    pub quarantine: Option<QuarantineReason>,
    pub stored_size: usize,
    pub object_key: String,
    /// SHA-256 of the stored object's bytes.
    pub sha256: Vec<u8>,
    /// Digest of its content whatever the transfer syntax ([`content::digest`]).
    pub content_sha256: Vec<u8>,
}

/// A file that was not accepted, before it has its ordinal.
#[derive(Clone)]
pub(crate) struct Refused {
    pub size: usize,
    pub code: String,
    pub message: String,
    pub sop_uid: Option<String>,
    pub sop_class_uid: Option<String>,
}

/// A received file: its bytes, or why it could not even be read.
pub enum Received {
    File(Bytes),
    Unreadable { size: usize, code: &'static str, message: String },
}

/// Counts of a batch, for the audit log and responses.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
#[schema(as = BatchCounts)]
pub struct Counts {
    pub stored: u32,
    pub duplicate: u32,
    pub rejected: u32,
    pub quarantined: u32,
}

impl Counts {
    pub fn of(reports: &[FileReport]) -> Self {
        let mut counts = Self::default();
        for report in reports {
            match report.outcome {
                Outcome::Stored => counts.stored += 1,
                Outcome::Duplicate => counts.duplicate += 1,
                Outcome::Rejected => counts.rejected += 1,
                Outcome::Quarantined => counts.quarantined += 1,
            }
        }
        counts
    }
}

/// Why a whole batch was refused; nothing of it is published.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the upload session is {0}, not open")]
    SessionClosed(String),
    /// The request itself broke off (too large, malformed multipart, client gone).
    #[error("{0}")]
    Request(crate::error::ApiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The catalog transaction of the batch's group failed (logged); nothing of it was recorded.
    #[error("the catalog could not record the files; nothing was published, send them again")]
    CatalogWrite,
    /// The object store could not confirm the files are on disk.
    #[error("the object store could not make the files durable; nothing was recorded, send them again")]
    NotDurable,
    /// The node is shutting down.
    #[error("the service is shutting down")]
    WriterGone,
}

impl From<BatchError> for crate::error::ApiError {
    fn from(error: BatchError) -> Self {
        match error {
            BatchError::SessionClosed(_) => Self::Conflict(error.to_string()),
            BatchError::Request(e) => e,
            BatchError::Database(e) => Self::Database(e),
            BatchError::CatalogWrite => {
                Self::Unavailable("the catalog could not record the files; nothing was published, send them again")
            }
            BatchError::NotDurable => Self::Unavailable(
                "the object store could not make the files durable; nothing was recorded, send them again",
            ),
            BatchError::WriterGone => Self::Unavailable("the service is shutting down"),
        }
    }
}

impl Ingestor {
    /// The ingestor of a configured node.
    /// Must be called inside a Tokio runtime: it starts the catalog writer.
    pub fn new(config: &crate::config::Config, db: PgPool, store: Store) -> anyhow::Result<Self> {
        let durable_root = config.local_objects_dir();
        Ok(Self {
            writer: writer::Writer::start(db.clone(), durable_root.clone()),
            local_root: durable_root,
            spool_dir: config.data_dir.join("spool"),
            db,
            store,
            key: deid::load_key(config)?,
            max_shift_days: config.deid.max_date_shift_days,
            safe_private: deid::safe_private(config),
            missing_patient_id: config.deid.missing_patient_id,
            limits: config.ingest.clone(),
        })
    }

    /// Opens an upload session for `cohort` and `site`, audited as `upload.create`
    /// with `origin` (e.g. `{"via": "stow-rs"}`); `None` when either does not exist.
    pub async fn open_session(
        &self,
        actor: &str,
        cohort: &str,
        site: &str,
        origin: &serde_json::Value,
    ) -> Result<Option<sessions::Session>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let Some(session) = sessions::create_session(&mut tx, cohort, site, actor).await? else {
            return Ok(None);
        };
        let details = with_origin(json!({ "cohort": session.cohort, "site": session.site }), origin);
        audit::record(
            &mut tx,
            NewEvent::new(actor, "upload.create").target(format!("upload:{}", session.id)).details(details),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(session))
    }

    /// Commits (publishing its staged instances) or aborts an open session, audited
    /// as `upload.commit` / `upload.abort` with `origin`. An aborted session's
    /// objects are deleted after the transaction; one that fails is left to the
    /// sweep. `Err(state)` when the session was not open.
    pub async fn close_session(
        &self,
        actor: &str,
        id: Uuid,
        commit: bool,
        origin: &serde_json::Value,
    ) -> Result<Result<Closed, String>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let (published, keys) = match sessions::close_session(&mut tx, id, commit).await? {
            Ok(closed) => closed,
            Err(state) => return Ok(Err(state)),
        };
        let counts = Counts::of(&sessions::list_file_reports(&mut *tx, id).await?);
        let details =
            with_origin(json!({ "published": published, "instances_dropped": keys.len(), "counts": counts }), origin);
        audit::record(
            &mut tx,
            NewEvent::new(actor, if commit { "upload.commit" } else { "upload.abort" })
                .target(format!("upload:{id}"))
                .details(details),
        )
        .await?;
        tx.commit().await?;
        for key in &keys {
            if let Err(error) = self.store.delete(&key.as_str().into()).await {
                tracing::warn!(%error, "deleting an aborted upload's object; the sweep will retry");
            }
        }
        Ok(Ok(Closed { published, dropped: keys.len(), counts }))
    }

    /// De-identifies, stores and catalogs `files` for `target`, returning one report per file.
    ///
    /// Files are read from the stream and processed `limits.parallelism` at a
    /// time; one bad file never affects the others. The catalog rows, the
    /// reports and the audit event commit together, and only while the session
    /// is still open.
    pub async fn ingest_batch<S>(
        self: &Arc<Self>,
        actor: &str,
        target: &Target,
        files: S,
    ) -> Result<Vec<FileReport>, BatchError>
    where
        S: futures::Stream<Item = Result<Received, crate::error::ApiError>> + Send,
    {
        // Files are de-identified in parallel, yet two that share a SOP Instance
        // UID are written in the order they came, so the first of them wins.
        let mut order = Order::default();
        let results: Vec<Result<Result<Prepared, Refused>, crate::error::ApiError>> = files
            .map(|file| {
                let this = Arc::clone(self);
                let site = target.site_code.clone();
                let turn = order.next_turn();
                async move {
                    match file {
                        Ok(file) => Ok(this.prepare(file, site, direct::Write::Direct, Some(turn)).await),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(self.limits.parallelism)
            .collect()
            .await;
        // A request that broke off records nothing; objects already written are
        // unreferenced and left to the sweep.
        let mut prepared = Vec::with_capacity(results.len());
        for result in results {
            prepared.push(result.map_err(BatchError::Request)?);
        }

        self.writer.write(actor, target, prepared).await
    }

    /// [`Self::ingest_batch`] for one file that its sender waits for before it
    /// sends the next, as a DICOM C-STORE does. Its object is written through
    /// the page cache: the write returns at once and the flush before the
    /// commit makes it durable, where a direct write would wait for the disk
    /// on the sender's time (measured on 2,000 large slices over four
    /// associations: 181–193 instances/s against 163–187).
    pub async fn ingest_one(&self, actor: &str, target: &Target, file: Received) -> Result<FileReport, BatchError> {
        let prepared = self.prepare(file, target.site_code.clone(), direct::Write::Buffered, None).await;
        let mut reports = self.writer.write(actor, target, vec![prepared]).await?;
        reports.pop().ok_or(BatchError::CatalogWrite)
    }

    /// De-identifies and stores one file. `turn` is its place in a batch:
    /// it is written only after every earlier file of the batch with the same
    /// SOP Instance UID.
    async fn prepare(
        &self,
        file: Received,
        site_code: String,
        write: direct::Write,
        turn: Option<Turn>,
    ) -> Result<Prepared, Refused> {
        let bytes = match file {
            Received::File(bytes) => bytes,
            Received::Unreadable { size: received, code, message } => {
                return Err(Refused::new(received, code, message));
            }
        };
        let size = bytes.len();
        if size > self.limits.max_file_bytes {
            return Err(Refused::new(
                size,
                "file-too-large",
                format!("the file is larger than the limit of {} bytes", self.limits.max_file_bytes),
            ));
        }
        // CPU-bound: off the async workers. The original bytes end their life in here.
        let key = self.key.clone();
        let safe_private = self.safe_private.clone();
        let max_shift_days = self.max_shift_days;
        let missing_patient_id = self.missing_patient_id;
        let max_inflated_bytes = self.limits.max_file_bytes;
        let (deid, sha256, content_sha256, key) = tokio::task::spawn_blocking(move || {
            let settings = DeidSettings {
                key: &key,
                site: &site_code,
                max_shift_days,
                safe_private: &safe_private,
                max_inflated_bytes,
                missing_patient_id,
            };
            let deid = deid::deidentify(&bytes, &settings)?;
            drop(bytes);
            let mut hasher = aws_lc_rs::digest::Context::new(&SHA256);
            for part in &deid.parts {
                hasher.update(part);
            }
            let sha256 = hasher.finish().as_ref().to_vec();
            let content =
                content::digest(&deid.parts[0], deid.parts.get(1).map(|p| &p[..])).ok_or_else(|| deid::Rejection {
                    code: "encoding-failed",
                    message: "the de-identified file could not be read back".into(),
                })?;
            let key = storage::keys::instance(&deid.meta.study_uid, &deid.meta.series_uid, &deid.meta.sop_uid);
            Ok::<_, deid::Rejection>((deid, sha256, content, key))
        })
        .await
        .map_err(|_| Refused::new(size, "malformed-dicom", "the file could not be processed"))?
        .map_err(|rejection| Refused::new(size, rejection.code, rejection.message))?;

        if !sop_classes::accepted(&deid.meta.sop_class_uid) {
            let message = sop_classes::refusal(&deid.meta.sop_class_uid);
            return Err(Refused::new(size, "sop-class-not-supported", message));
        }
        // Held until the object is written: a later file of the batch with the
        // same UID waits for it.
        let _written = match turn {
            Some(turn) => Some(turn.claim(&deid.meta.sop_uid).await),
            None => None,
        };
        let stored_size = deid.len();
        let created = self.create_object(&key, deid.parts, write, size).await?;
        if created == direct::Created::Exists {
            // Written before (an earlier upload, or one that crashed before its
            // rows): the same content, in whatever transfer syntax, is the same
            // instance; anything else is a conflict. The catalog's digest
            // spares reading the object back (it may be as large as the file).
            let recorded =
                sqlx::query_scalar!("select content_sha256 from instance where object_key = $1", key.as_ref())
                    .fetch_optional(&self.db)
                    .await
                    .ok()
                    .flatten()
                    .flatten();
            let same = if let Some(recorded) = recorded {
                recorded == content_sha256
            } else {
                let existing = match self.store.get(&key).await {
                    Ok(result) => result.bytes().await,
                    Err(e) => Err(e),
                }
                .map_err(|e| {
                    tracing::error!(error = %e, "reading an existing instance object");
                    Refused::new(size, "storage-failed", "the object store could not be read")
                })?;
                let existing =
                    tokio::task::spawn_blocking(move || content::digest_of_file(&existing)).await.ok().flatten();
                existing.as_deref() == Some(content_sha256.as_slice())
            };
            if !same {
                return Err(Refused::new(size, "conflict", CONFLICT_MESSAGE).of(&deid.meta));
            }
        }
        Ok(Prepared {
            size,
            meta: deid.meta,
            quarantine: deid.quarantine,
            stored_size,
            object_key: key.to_string(),
            sha256,
            content_sha256,
        })
    }

    /// Writes the object `key` unless it exists: directly into a local store's
    /// directory (on a blocking thread), else through the object store.
    async fn create_object(
        &self,
        key: &object_store::path::Path,
        parts: Vec<Bytes>,
        write: direct::Write,
        size: usize,
    ) -> Result<direct::Created, Refused> {
        let refused = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "writing an instance object");
            Refused::new(size, "storage-failed", "the object store refused the write")
        };
        if let Some(root) = self.local_root.clone() {
            let key = key.to_string();
            return tokio::task::spawn_blocking(move || direct::create(&root, &key, &parts, write))
                .await
                .map_err(|e| refused(&e))?
                .map_err(|e| refused(&e));
        }
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.store.put_opts(key, parts.into_iter().collect::<PutPayload>(), options).await {
            Ok(_) => Ok(direct::Created::New),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(direct::Created::Exists),
            Err(e) => Err(refused(&e)),
        }
    }
}

/// The order of the files of one batch. Each file takes a [`Turn`] as it is
/// read, so turns follow the batch's order whatever the scheduling.
#[derive(Default)]
struct Order {
    /// Per SOP Instance UID, the signal of the last file that claimed it,
    /// given once that file's object is written (or it gave up).
    claims: Arc<std::sync::Mutex<HashMap<String, oneshot::Receiver<()>>>>,
    /// The signal of the previous file, given once it has claimed its UID.
    previous: Option<oneshot::Receiver<()>>,
}

impl Order {
    fn next_turn(&mut self) -> Turn {
        let (claimed, next) = oneshot::channel();
        Turn { earlier: self.previous.replace(next), claimed: Some(claimed), claims: Arc::clone(&self.claims) }
    }
}

/// A file's place in its batch.
struct Turn {
    earlier: Option<oneshot::Receiver<()>>,
    /// `None` once claimed.
    claimed: Option<oneshot::Sender<()>>,
    claims: Arc<std::sync::Mutex<HashMap<String, oneshot::Receiver<()>>>>,
}

impl Turn {
    /// Claims `sop_uid` once every earlier file of the batch has claimed its
    /// own (or given up), then waits until the earlier file with the same UID,
    /// if any, has written its object. The returned signal is to be dropped
    /// once this file's object is written.
    async fn claim(mut self, sop_uid: &str) -> oneshot::Sender<()> {
        if let Some(earlier) = self.earlier.take() {
            // An error only means that file ended without claiming: go on.
            let _ = earlier.await;
        }
        let (written, signal) = oneshot::channel();
        let before = self.claims.lock().expect("claims").insert(sop_uid.to_owned(), signal);
        drop(self.claimed.take());
        if let Some(before) = before {
            let _ = before.await;
        }
        written
    }
}

impl Drop for Turn {
    /// A file that gives up before it claims (refused, unreadable) lets the
    /// next file go on only once the files before it have claimed, so the
    /// order holds across it.
    fn drop(&mut self) {
        if let Some(claimed) = self.claimed.take() {
            let earlier = self.earlier.take();
            tokio::spawn(async move {
                if let Some(earlier) = earlier {
                    let _ = earlier.await;
                }
                drop(claimed);
            });
        }
    }
}

/// What closing a session did.
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    /// Instances made visible (commit).
    pub published: i64,
    /// Instances dropped with their objects (abort).
    pub dropped: usize,
    pub counts: Counts,
}

/// `details` with the fields of `origin` added.
fn with_origin(mut details: serde_json::Value, origin: &serde_json::Value) -> serde_json::Value {
    if let (Some(details), Some(origin)) = (details.as_object_mut(), origin.as_object()) {
        details.extend(origin.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    details
}

/// The message of a SOP Instance UID conflict.
pub const CONFLICT_MESSAGE: &str =
    "an instance with this SOP Instance UID (0008,0018) is already stored with different content";
/// The DICOM status of a conflict, in C-STORE-RSPs and as a STOW-RS Failure
/// Reason: C111, an implementation-specific code of the "Error: Cannot
/// understand" family Cxxx. PS3.4 Table B.2-1 lists for C-STORE only A7xx
/// (out of resources), A9xx (data set does not match SOP class), Cxxx and the
/// warnings, and PS3.18 Table I.2-2 the same for STOW-RS plus C122, 0110 and
/// 0122, leaving further codes to the implementation; 0111 (Duplicate SOP
/// Instance, PS3.7 C.5.7) belongs to N-CREATE and is listed for neither. Of
/// those families only Cxxx fits an instance that was read and will not be
/// stored, and, unlike A7xx, it tells the sender not to try again. The low
/// digits recall 0111; the C-STORE-RSP names SOP Instance UID (0008,0018) as
/// its Offending Element (0000,0901), which Table B.2-1 allows for Cxxx.
pub const CONFLICT_STATUS: u16 = 0xC111;

/// The same, in the 64 characters of an Error Comment (0000,0902).
const CONFLICT_COMMENT: &str = "SOP Instance UID (0008,0018) already stored with other content";
