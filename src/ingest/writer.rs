//! The catalog writer: one task that commits the rows of many concurrent
//! batches together (group commit).
//!
//! Every ingest path hands its de-identified, already stored files to the
//! writer and waits for their reports. The writer takes whatever batches are
//! waiting (up to [`MAX_GROUP_FILES`] files), makes their objects durable with
//! one file-system flush, and writes all their rows with a few set-based
//! statements in one transaction: the sessions' ordinals, subjects, studies,
//! scanners, series, instances, the per-file reports and one audit event per
//! session. A PACS pushing slices one by one over four connections thus costs
//! a handful of statements per group instead of a dozen per slice, and each
//! batch still commits whole or not at all.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{BatchError, CONFLICT_MESSAGE, Counts, FileReport, Outcome, Prepared, Refused, Target};
use crate::audit::{self, NewEvent};

/// Files at most in one group transaction.
const MAX_GROUP_FILES: usize = 2_000;

/// One batch waiting for its rows.
pub(crate) struct Pending {
    pub actor: String,
    pub target: Target,
    pub items: Vec<Result<Prepared, Refused>>,
    pub reply: oneshot::Sender<Result<Vec<FileReport>, BatchError>>,
}

/// Handle to the writer task; the task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Pending>,
}

impl Writer {
    /// Starts the writer. `durable_root` is the local object directory whose
    /// file system is flushed before each commit (`None` for object stores
    /// whose writes are durable when they return, like S3).
    pub fn start(db: PgPool, durable_root: Option<PathBuf>) -> Self {
        let (queue, receiver) = mpsc::channel(1024);
        tokio::spawn(run(db, durable_root, receiver));
        Self { queue }
    }

    /// Records `items` for `target` and returns one report per item, in order.
    pub async fn write(
        &self,
        actor: &str,
        target: &Target,
        items: Vec<Result<Prepared, Refused>>,
    ) -> Result<Vec<FileReport>, BatchError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending { actor: actor.to_owned(), target: target.clone(), items, reply };
        self.queue.send(pending).await.map_err(|_| BatchError::WriterGone)?;
        answer.await.map_err(|_| BatchError::WriterGone)?
    }
}

/// Groups in flight at once. A second writer overlapped one group's flush
/// with the next group's rows while objects went through the page cache and
/// the flush wrote their bytes. Now that objects are on their way to the disk
/// when they are handed over, the flush is short, and a second writer only
/// splits the waiting batches into more, smaller groups: measured on 2,000
/// small slices sent one per request, one writer took about 30 % less
/// PostgreSQL CPU and 8–12 % more instances per second, with batched uploads
/// and C-STORE unchanged or better. Groups of other nodes still race this
/// one, hence the retries.
const WRITERS: usize = 1;

/// Attempts of a group that lost a race (a session closed under it, a deadlock).
const ATTEMPTS: usize = 3;

async fn run(db: PgPool, durable_root: Option<PathBuf>, receiver: mpsc::Receiver<Pending>) {
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let known = Arc::new(Mutex::new(Known::default()));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (db, root, receiver, known) = (db.clone(), durable_root.clone(), receiver.clone(), known.clone());
        writers.spawn(async move {
            while let Some(group) = next_group(&receiver).await {
                commit_group(&db, root.as_ref(), group, &known).await;
            }
        });
    }
    while writers.join_next().await.is_some() {}
}

/// The next batch and whatever others are already waiting; `None` once every
/// handle is gone.
async fn next_group(receiver: &tokio::sync::Mutex<mpsc::Receiver<Pending>>) -> Option<Vec<Pending>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut files = first.items.len();
    let mut group = vec![first];
    while files < MAX_GROUP_FILES {
        match receiver.try_recv() {
            Ok(next) => {
                files += next.items.len();
                group.push(next);
            }
            Err(_) => break,
        }
    }
    Some(group)
}

async fn commit_group(db: &PgPool, durable_root: Option<&PathBuf>, group: Vec<Pending>, known: &Mutex<Known>) {
    let started = std::time::Instant::now();
    let files: usize = group.iter().map(|p| p.items.len()).sum();
    let mut written = Err(GroupError::Retry);
    for _ in 0..ATTEMPTS {
        // The flush runs while the rows are written; the commit waits for both.
        let flushed = durable_root.cloned().map(|root| tokio::spawn(flush(root)));
        let requests: Vec<Request> =
            group.iter().map(|p| Request { target: &p.target, actor: &p.actor, items: &p.items }).collect();
        written = write_group(db, requests, flushed, known).await;
        if !matches!(written, Err(GroupError::Retry)) {
            break;
        }
    }
    tracing::debug!(
        batches = group.len(),
        files,
        ms = started.elapsed().as_secs_f64() * 1e3,
        ok = written.is_ok(),
        "catalog group written"
    );
    match written {
        Ok((results, learned)) => {
            known.lock().expect("known rows").absorb(learned);
            for (pending, result) in group.into_iter().zip(results) {
                let _ = pending.reply.send(result);
            }
        }
        Err(failure) => {
            let durable = match failure {
                GroupError::Database(error) => {
                    tracing::error!(%error, files, "writing a group of ingest batches");
                    true
                }
                GroupError::Retry => {
                    tracing::error!(files, "a group of ingest batches kept losing races");
                    true
                }
                GroupError::NotDurable(error) => {
                    tracing::error!(%error, "flushing the object store to disk");
                    false
                }
            };
            for pending in group {
                let error = if durable { BatchError::CatalogWrite } else { BatchError::NotDurable };
                let _ = pending.reply.send(Err(error));
            }
        }
    }
}

/// Catalog rows this writer has seen committed, so a group whose slices belong
/// to known subjects, studies, series and scanners skips those statements. Rows
/// of these tables are never deleted, so an entry cannot go stale; the map is
/// simply emptied when it grows large.
#[derive(Default)]
struct Known {
    /// Pseudonym → (subject id, whether sex and birth year are both stored).
    subjects: HashMap<String, (Uuid, bool)>,
    /// (cohort, subject) memberships.
    members: std::collections::HashSet<(Uuid, Uuid)>,
    studies: HashMap<String, Uuid>,
    series: HashMap<String, Uuid>,
    scanners: HashMap<ScannerKey, Uuid>,
}

impl Known {
    const MAX_ENTRIES: usize = 100_000;

    /// The entries `rows` need, so the lock is not held while they are written.
    fn view(&self, rows: &[Row<'_>]) -> Self {
        let mut view = Self::default();
        for row in rows {
            let meta = &row.file.meta;
            if let Some(subject) = self.subjects.get(&meta.subject) {
                view.subjects.insert(meta.subject.clone(), *subject);
                if self.members.contains(&(row.target.cohort_id, subject.0)) {
                    view.members.insert((row.target.cohort_id, subject.0));
                }
            }
            if let Some(id) = self.studies.get(&meta.study_uid) {
                view.studies.insert(meta.study_uid.clone(), *id);
            }
            if let Some(id) = self.series.get(&meta.series_uid) {
                view.series.insert(meta.series_uid.clone(), *id);
            }
        }
        view.scanners.clone_from(&self.scanners);
        view
    }

    fn absorb(&mut self, learned: Self) {
        let size = self.subjects.len() + self.members.len() + self.studies.len() + self.series.len();
        if size > Self::MAX_ENTRIES {
            *self = Self::default();
        }
        self.subjects.extend(learned.subjects);
        self.members.extend(learned.members);
        self.studies.extend(learned.studies);
        self.series.extend(learned.series);
        self.scanners.extend(learned.scanners);
    }
}

enum GroupError {
    Database(sqlx::Error),
    NotDurable(std::io::Error),
    /// Lost a race with another transaction; nothing was recorded, try again.
    Retry,
}

impl From<sqlx::Error> for GroupError {
    fn from(error: sqlx::Error) -> Self {
        // 40P01: two groups locked the same rows in opposite orders.
        if error.as_database_error().and_then(sqlx::error::DatabaseError::code).as_deref() == Some("40P01") {
            return Self::Retry;
        }
        Self::Database(error)
    }
}

/// Makes every file written so far under `root` durable: one `syncfs` of its
/// file system, which costs about as much as one `fsync` and covers the files,
/// their directories and the links that name them.
async fn flush(root: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        let dir = std::fs::File::open(&root)?;
        rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
    })
    .await
    .map_err(std::io::Error::other)?
}

struct Request<'a> {
    target: &'a Target,
    actor: &'a str,
    items: &'a [Result<Prepared, Refused>],
}

/// One instance row to insert, with where its report goes.
struct Row<'a> {
    request: usize,
    index: usize,
    ordinal: i32,
    target: &'a Target,
    file: &'a Prepared,
}

/// One group in one transaction, in five round trips however many batches and
/// sessions it holds (plus one statement per table whose rows are not yet
/// known): the sessions, the instances with the audit head, the reports with
/// the audit events, and `BEGIN`/`COMMIT`. Locks are taken in the order every
/// other writer takes them: sessions first, the audit head last.
async fn write_group(
    db: &PgPool,
    requests: Vec<Request<'_>>,
    flushed: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    known: &Mutex<Known>,
) -> Result<(Vec<Result<Vec<FileReport>, BatchError>>, Known), GroupError> {
    let mut tx = db.begin().await?;

    // Every file of a batch takes the next ordinal of its session, if the
    // session is still open. The update locks the sessions (in a fixed order)
    // against a concurrent commit until this transaction ends.
    let mut next_ordinal = open_sessions(&mut tx, &requests).await?;

    // Files of open sessions become rows; refused files get their report now.
    let mut reports: Vec<Result<Vec<Option<FileReport>>, BatchError>> = Vec::with_capacity(requests.len());
    let mut rows: Vec<Row<'_>> = Vec::new();
    for (r, request) in requests.iter().enumerate() {
        let next = match next_ordinal.get_mut(&request.target.session_id) {
            Some(Ok(next)) => next,
            Some(Err(state)) => {
                reports.push(Err(BatchError::SessionClosed(state.clone())));
                continue;
            }
            None => unreachable!("every session is looked up"),
        };
        let mut slots = Vec::with_capacity(request.items.len());
        for (index, item) in request.items.iter().enumerate() {
            let ordinal = *next;
            *next += 1;
            slots.push(match item {
                Ok(file) if request.target.only_study.as_ref().is_some_and(|study| *study != file.meta.study_uid) => {
                    // Its object stays unreferenced and goes with the next sweep.
                    Some(wrong_study(file).report(ordinal))
                }
                Ok(file) => {
                    rows.push(Row { request: r, index, ordinal, target: request.target, file });
                    None
                }
                Err(refused) => Some(refused.clone().report(ordinal)),
            });
        }
        reports.push(Ok(slots));
    }
    if reports.iter().all(Result::is_err) {
        tx.rollback().await?;
        let results = reports.into_iter().map(|r| r.map(|_| Vec::new())).collect();
        return Ok((results, Known::default()));
    }

    let known = known.lock().expect("known rows").view(&rows);
    let (decided, learned, head) = insert_rows(&mut tx, &rows, &known).await?;
    for (row, report) in rows.iter().zip(decided) {
        if let Ok(slots) = &mut reports[row.request] {
            slots[row.index] = Some(report);
        }
    }

    // The per-file reports of every accepted batch and one audit event per
    // session, in one statement.
    let mut file_rows = FileRows::default();
    let mut per_session: HashMap<(Uuid, &str), (usize, Vec<FileReport>)> = HashMap::new();
    let mut results = Vec::with_capacity(reports.len());
    for (request, slots) in requests.iter().zip(reports) {
        let Ok(slots) = slots else {
            results.push(slots.map(|_| Vec::new()));
            continue;
        };
        let done: Vec<FileReport> = slots.into_iter().map(|s| s.expect("every file has a report")).collect();
        for report in &done {
            file_rows.push(request.target.session_id, report);
        }
        let entry = per_session.entry((request.target.session_id, request.actor)).or_default();
        entry.0 += 1;
        entry.1.extend(done.iter().cloned());
        results.push(Ok(done));
    }
    let mut sessions: Vec<_> = per_session.into_iter().collect();
    sessions.sort_by_key(|((id, actor), _)| (*id, *actor));
    let events = sessions
        .into_iter()
        .map(|((session, actor), (batches, done))| {
            NewEvent::new(actor, "upload.files")
                .target(format!("upload:{session}"))
                .details(json!({ "files": done.len(), "batches": batches, "counts": Counts::of(&done) }))
        })
        .collect();
    file_rows.insert_with_events(&mut tx, &audit::Linked::after(head, events)).await?;
    tracing::trace!("rows written, waiting for the flush");
    if let Some(flushed) = flushed {
        flushed.await.map_err(std::io::Error::other).and_then(|r| r).map_err(GroupError::NotDurable)?;
    }
    tx.commit().await?;
    Ok((results, learned))
}

/// Adds each open session's files to its count, locking it; returns per
/// session the first ordinal its files take, or the state it is in instead of
/// open. A session that looked open yet could not be updated was closed by a
/// transaction that committed meanwhile: the group goes round again.
async fn open_sessions(
    tx: &mut PgConnection,
    requests: &[Request<'_>],
) -> Result<HashMap<Uuid, Result<i32, String>>, GroupError> {
    let mut wanted: std::collections::BTreeMap<Uuid, i32> = std::collections::BTreeMap::new();
    for request in requests {
        *wanted.entry(request.target.session_id).or_default() += len_i32(request.items.len());
    }
    let (ids, counts): (Vec<Uuid>, Vec<i32>) = wanted.into_iter().unzip();
    let found = sqlx::query!(
        r#"with taken as (
               update upload_session s set file_count = s.file_count + v.n
               from unnest($1::uuid[], $2::int[]) as v(id, n)
               where s.upload_session_id = v.id and s.state = 'open'
               returning s.upload_session_id, s.file_count - v.n + 1 as first_ordinal
           )
           select v.id as "id!", s.state as "state?", taken.first_ordinal
           from unnest($1::uuid[]) as v(id)
           left join upload_session s on s.upload_session_id = v.id
           left join taken on taken.upload_session_id = v.id"#,
        &ids,
        &counts,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut sessions = HashMap::with_capacity(found.len());
    for row in found {
        let next = match (row.first_ordinal, row.state) {
            (Some(first), _) => Ok(first),
            (None, Some(state)) if state == "open" => return Err(GroupError::Retry),
            (None, state) => Err(state.unwrap_or_else(|| "missing".to_owned())),
        };
        sessions.insert(row.id, next);
    }
    Ok(sessions)
}

fn wrong_study(file: &Prepared) -> Refused {
    Refused::new(file.size, "wrong-study", "the instance belongs to another study than the one addressed")
        .of(&file.meta)
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Upserts subjects, cohort memberships, studies, scanners and series, inserts
/// the instances, and decides each row's report. Idempotent: an instance already
/// stored with the same bytes is a duplicate; different bytes under the same
/// SOP Instance UID are a conflict. The statement that inserts the instances
/// also locks the audit head, which it returns.
#[allow(clippy::too_many_lines)] // one statement per table, in foreign-key order
async fn insert_rows(
    tx: &mut PgConnection,
    rows: &[Row<'_>],
    known: &Known,
) -> Result<(Vec<FileReport>, Known, audit::Head), sqlx::Error> {
    let mut learned = Known::default();
    // Subjects (first-seen values win within the group, stored values win over both).
    // A subject already stored with sex and birth year, or for which this group
    // brings neither, needs no statement.
    let subjects: Vec<&Row<'_>> = first_of(rows, |r| r.file.meta.subject.as_str())
        .into_iter()
        .filter(|r| {
            let meta = &r.file.meta;
            !known.subjects.get(&meta.subject).is_some_and(|s| s.1 || (meta.sex.is_none() && meta.birth_year.is_none()))
        })
        .collect();
    if !subjects.is_empty() {
        learned.subjects = sqlx::query!(
        "insert into subject (pseudonym, site_id, sex, birth_year, date_shift_days)
         select * from unnest($1::text[], $2::uuid[], $3::text[], $4::int[], $5::int[]) order by 1
         on conflict (pseudonym) do update
            set sex = coalesce(subject.sex, excluded.sex), birth_year = coalesce(subject.birth_year, excluded.birth_year)
         returning pseudonym, subject_id, (sex is not null and birth_year is not null) as \"complete!\"",
        &subjects.iter().map(|r| r.file.meta.subject.clone()).collect::<Vec<_>>(),
        &subjects.iter().map(|r| r.target.site_id).collect::<Vec<_>>(),
        &subjects.iter().map(|r| r.file.meta.sex.clone()).collect::<Vec<_>>() as &[Option<String>],
        &subjects.iter().map(|r| r.file.meta.birth_year).collect::<Vec<_>>() as &[Option<i32>],
        &subjects.iter().map(|r| i32::try_from(r.file.meta.date_shift_days).unwrap_or_default()).collect::<Vec<_>>(),
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| (r.pseudonym, (r.subject_id, r.complete)))
    .collect();
    }
    let subject_of = |row: &Row<'_>| {
        learned.subjects.get(&row.file.meta.subject).unwrap_or_else(|| &known.subjects[&row.file.meta.subject]).0
    };

    let mut members: Vec<(Uuid, Uuid)> =
        rows.iter().map(|r| (r.target.cohort_id, subject_of(r))).filter(|m| !known.members.contains(m)).collect();
    members.sort_unstable();
    members.dedup();
    if !members.is_empty() {
        let (cohorts, member_subjects): (Vec<Uuid>, Vec<Uuid>) = members.iter().copied().unzip();
        sqlx::query!(
            "insert into cohort_subject (cohort_id, subject_id) select * from unnest($1::uuid[], $2::uuid[])
             on conflict do nothing",
            &cohorts,
            &member_subjects,
        )
        .execute(&mut *tx)
        .await?;
    }
    learned.members.extend(members);

    let studies: Vec<&Row<'_>> = first_of(rows, |r| r.file.meta.study_uid.as_str())
        .into_iter()
        .filter(|r| !known.studies.contains_key(&r.file.meta.study_uid))
        .collect();
    if !studies.is_empty() {
        learned.studies = sqlx::query!(
        "insert into study (study_uid, subject_id, cohort_id, site_id, study_date, description, age_years, height_m, weight_kg)
         select * from unnest($1::text[], $2::uuid[], $3::uuid[], $4::uuid[], $5::date[], $6::text[],
                              $7::float8[], $8::float8[], $9::float8[])
         on conflict (study_uid) do update set study_uid = excluded.study_uid
         returning study_uid, study_id",
        &studies.iter().map(|r| r.file.meta.study_uid.clone()).collect::<Vec<_>>(),
        &studies.iter().map(|r| subject_of(r)).collect::<Vec<_>>(),
        &studies.iter().map(|r| r.target.cohort_id).collect::<Vec<_>>(),
        &studies.iter().map(|r| r.target.site_id).collect::<Vec<_>>(),
        &studies.iter().map(|r| r.file.meta.study_date).collect::<Vec<_>>() as &[Option<chrono::NaiveDate>],
        &studies.iter().map(|r| r.file.meta.study_description.clone()).collect::<Vec<_>>() as &[Option<String>],
        &studies.iter().map(|r| r.file.meta.age_years).collect::<Vec<_>>() as &[Option<f64>],
        &studies.iter().map(|r| r.file.meta.height_m).collect::<Vec<_>>() as &[Option<f64>],
        &studies.iter().map(|r| r.file.meta.weight_kg).collect::<Vec<_>>() as &[Option<f64>],
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| (r.study_uid, r.study_id))
    .collect();
    }
    let study_of = |uid: &String| learned.studies.get(uid).copied().unwrap_or_else(|| known.studies[uid]);

    // Scanners: identity is (manufacturer, model, field strength).
    let scanner_key = |row: &Row<'_>| -> Option<ScannerKey> {
        let meta = &row.file.meta;
        (meta.manufacturer.is_some() || meta.model.is_some()).then(|| {
            (
                meta.manufacturer.clone().unwrap_or_default(),
                meta.model.clone().unwrap_or_default(),
                meta.field_strength.map(f64::to_bits),
            )
        })
    };
    let mut scanners: Vec<ScannerKey> =
        rows.iter().filter_map(scanner_key).filter(|k| !known.scanners.contains_key(k)).collect();
    scanners.sort_unstable();
    scanners.dedup();
    if !scanners.is_empty() {
        learned.scanners = sqlx::query!(
            "insert into scanner (manufacturer, model, field_strength)
             select * from unnest($1::text[], $2::text[], $3::float8[])
             on conflict on constraint scanner_identity_key do update set manufacturer = excluded.manufacturer
             returning manufacturer, model, field_strength, scanner_id",
            &scanners.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
            &scanners.iter().map(|s| s.1.clone()).collect::<Vec<_>>(),
            &scanners.iter().map(|s| s.2.map(f64::from_bits)).collect::<Vec<_>>() as &[Option<f64>],
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| ((r.manufacturer, r.model, r.field_strength.map(f64::to_bits)), r.scanner_id))
        .collect();
    }
    let scanner_of = |key: ScannerKey| learned.scanners.get(&key).copied().unwrap_or_else(|| known.scanners[&key]);

    let series: Vec<&Row<'_>> = first_of(rows, |r| r.file.meta.series_uid.as_str())
        .into_iter()
        .filter(|r| !known.series.contains_key(&r.file.meta.series_uid))
        .collect();
    if !series.is_empty() {
        learned.series = sqlx::query!(
            "insert into series (series_uid, study_id, scanner_id, modality, body_part, series_date, series_number,
                             description, slice_thickness, pixel_spacing_row, pixel_spacing_col)
         select * from unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::date[], $7::int[],
                              $8::text[], $9::float8[], $10::float8[], $11::float8[])
         on conflict (series_uid) do update set series_uid = excluded.series_uid
         returning series_uid, series_id",
            &series.iter().map(|r| r.file.meta.series_uid.clone()).collect::<Vec<_>>(),
            &series.iter().map(|r| study_of(&r.file.meta.study_uid)).collect::<Vec<_>>(),
            &series.iter().map(|r| scanner_key(r).map(scanner_of)).collect::<Vec<_>>() as &[Option<Uuid>],
            &series.iter().map(|r| r.file.meta.modality.clone()).collect::<Vec<_>>() as &[Option<String>],
            &series.iter().map(|r| r.file.meta.body_part.clone()).collect::<Vec<_>>() as &[Option<String>],
            &series.iter().map(|r| r.file.meta.series_date).collect::<Vec<_>>() as &[Option<chrono::NaiveDate>],
            &series.iter().map(|r| r.file.meta.series_number).collect::<Vec<_>>() as &[Option<i32>],
            &series.iter().map(|r| r.file.meta.series_description.clone()).collect::<Vec<_>>() as &[Option<String>],
            &series.iter().map(|r| r.file.meta.slice_thickness).collect::<Vec<_>>() as &[Option<f64>],
            &series.iter().map(|r| r.file.meta.pixel_spacing.map(|p| p.0)).collect::<Vec<_>>() as &[Option<f64>],
            &series.iter().map(|r| r.file.meta.pixel_spacing.map(|p| p.1)).collect::<Vec<_>>() as &[Option<f64>],
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.series_uid, r.series_id))
        .collect();
    }
    let series_of = |uid: &String| learned.series.get(uid).copied().unwrap_or_else(|| known.series[uid]);

    // Instances: the first row of each SOP Instance UID is offered to the table;
    // every row whose UID was already there (or came earlier in the group) is
    // compared by content.
    let offered = first_of(rows, |r| r.file.meta.sop_uid.as_str());
    let u32_i32 = |v: Option<u32>| v.and_then(|v| i32::try_from(v).ok());
    let instances = sqlx::query!(
        r#"with inserted as (
         insert into instance (sop_uid, series_id, upload_session_id, sop_class_uid, transfer_syntax, instance_number,
                               rows, columns, frames, object_key, size_bytes, sha256, status, quarantine_code,
                               quarantine_reason, referenced_sop_uids, content_sha256)
         select v.sop_uid, v.series_id, v.session_id, v.sop_class_uid, v.transfer_syntax, v.instance_number,
                v.rows, v.columns, v.frames, v.object_key, v.size_bytes, v.sha256, v.status, v.quarantine_code,
                v.quarantine_reason, string_to_array(v.refs, ' '), v.content_sha256
         from unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int[], $7::int[], $8::int[],
                     $9::int[], $10::text[], $11::int8[], $12::bytea[], $13::text[], $14::text[], $15::text[],
                     $16::text[], $17::bytea[])
              as v(sop_uid, series_id, session_id, sop_class_uid, transfer_syntax, instance_number, rows, columns,
                   frames, object_key, size_bytes, sha256, status, quarantine_code, quarantine_reason, refs,
                   content_sha256)
         on conflict (sop_uid) do nothing
         returning sop_uid
         ), head as (
             select seq, hash from audit_head where singleton for update
         )
         select head.seq, head.hash, array(select sop_uid from inserted) as "inserted!"
         from head"#,
        &offered.iter().map(|r| r.file.meta.sop_uid.clone()).collect::<Vec<_>>(),
        &offered.iter().map(|r| series_of(&r.file.meta.series_uid)).collect::<Vec<_>>(),
        &offered.iter().map(|r| r.target.session_id).collect::<Vec<_>>(),
        &offered.iter().map(|r| r.file.meta.sop_class_uid.clone()).collect::<Vec<_>>(),
        &offered.iter().map(|r| r.file.meta.transfer_syntax.clone()).collect::<Vec<_>>(),
        &offered.iter().map(|r| r.file.meta.instance_number).collect::<Vec<_>>() as &[Option<i32>],
        &offered.iter().map(|r| u32_i32(r.file.meta.rows)).collect::<Vec<_>>() as &[Option<i32>],
        &offered.iter().map(|r| u32_i32(r.file.meta.columns)).collect::<Vec<_>>() as &[Option<i32>],
        &offered.iter().map(|r| u32_i32(r.file.meta.frames)).collect::<Vec<_>>() as &[Option<i32>],
        &offered.iter().map(|r| r.file.object_key.clone()).collect::<Vec<_>>(),
        &offered.iter().map(|r| i64::try_from(r.file.stored_size).unwrap_or(i64::MAX)).collect::<Vec<_>>(),
        &offered.iter().map(|r| r.file.sha256.clone()).collect::<Vec<_>>(),
        &offered
            .iter()
            .map(|r| if r.file.quarantine.is_some() { "quarantined" } else { "staged" }.to_owned())
            .collect::<Vec<_>>(),
        &offered.iter().map(|r| r.file.quarantine.as_ref().map(|q| q.code.to_owned())).collect::<Vec<_>>()
            as &[Option<String>],
        &offered.iter().map(|r| r.file.quarantine.as_ref().map(|q| q.message.to_owned())).collect::<Vec<_>>()
            as &[Option<String>],
        // UIDs are digits and dots, so a space separates them safely.
        &offered.iter().map(|r| r.file.meta.referenced_sop_uids.join(" ")).collect::<Vec<_>>(),
        &offered.iter().map(|r| r.file.content_sha256.clone()).collect::<Vec<_>>(),
    )
    .fetch_one(&mut *tx)
    .await?;
    let head = audit::Head { seq: instances.seq, hash: instances.hash };
    let inserted: std::collections::HashSet<String> = instances.inserted.into_iter().collect();

    let mut reports = Vec::with_capacity(rows.len());
    let mut claimed = std::collections::HashSet::new();
    let others: Vec<String> =
        rows.iter().filter(|r| !inserted.contains(&r.file.meta.sop_uid)).map(|r| r.file.meta.sop_uid.clone()).collect();
    // The same content is the same instance, whatever its transfer syntax;
    // rows stored before content digests existed compare by their bytes.
    let existing: HashMap<String, Digests> = if others.is_empty() {
        HashMap::new()
    } else {
        sqlx::query!("select sop_uid, sha256, content_sha256 from instance where sop_uid = any($1)", &others)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| (r.sop_uid, Digests { bytes: r.sha256, content: r.content_sha256 }))
            .collect()
    };
    let in_group: HashMap<&str, Digests> =
        offered.iter().map(|r| (r.file.meta.sop_uid.as_str(), Digests::of(r.file))).collect();
    for row in rows {
        let meta = &row.file.meta;
        let report = |outcome, code: Option<&str>, message: Option<&str>| FileReport {
            ordinal: row.ordinal,
            outcome,
            code: code.map(str::to_owned),
            message: message.map(str::to_owned),
            sop_uid: Some(meta.sop_uid.clone()),
            size_bytes: i64::try_from(row.file.size).unwrap_or(i64::MAX),
            sop_class_uid: Some(meta.sop_class_uid.clone()),
        };
        let first_claim = inserted.contains(&meta.sop_uid) && claimed.insert(meta.sop_uid.as_str());
        reports.push(if first_claim {
            match &row.file.quarantine {
                Some(q) => report(Outcome::Quarantined, Some(q.code), Some(q.message)),
                None => report(Outcome::Stored, None, None),
            }
        } else {
            let stored = existing.get(&meta.sop_uid).or_else(|| in_group.get(meta.sop_uid.as_str()));
            if stored.is_some_and(|stored| stored.same_as(row.file)) {
                report(Outcome::Duplicate, None, None)
            } else {
                report(Outcome::Rejected, Some("conflict"), Some(CONFLICT_MESSAGE))
            }
        });
    }
    Ok((reports, learned, head))
}

/// What an instance is compared by.
struct Digests {
    bytes: Vec<u8>,
    content: Option<Vec<u8>>,
}

impl Digests {
    fn of(file: &Prepared) -> Self {
        Self { bytes: file.sha256.clone(), content: Some(file.content_sha256.clone()) }
    }

    /// Whether `file` is this instance again: the same content, or, for a row
    /// without a content digest, the same bytes.
    fn same_as(&self, file: &Prepared) -> bool {
        match &self.content {
            Some(content) => *content == file.content_sha256,
            None => self.bytes == file.sha256,
        }
    }
}

/// A scanner's identity: manufacturer, model and the bits of its field strength.
type ScannerKey = (String, String, Option<u64>);

/// The first row of each distinct `key`, in order.
fn first_of<'r, 'a>(rows: &'r [Row<'a>], key: impl for<'x> Fn(&'x Row<'a>) -> &'x str) -> Vec<&'r Row<'a>> {
    let mut seen = std::collections::HashSet::new();
    rows.iter().filter(|r| seen.insert(key(r).to_owned())).collect()
}

/// The `upload_file` rows of a group, inserted with one statement.
#[derive(Default)]
struct FileRows {
    session: Vec<Uuid>,
    ordinal: Vec<i32>,
    outcome: Vec<String>,
    code: Vec<Option<String>>,
    message: Vec<Option<String>>,
    sop_uid: Vec<Option<String>>,
    size_bytes: Vec<i64>,
}

impl FileRows {
    fn push(&mut self, session: Uuid, report: &FileReport) {
        self.session.push(session);
        self.ordinal.push(report.ordinal);
        self.outcome.push(report.outcome.as_str().to_owned());
        self.code.push(report.code.clone());
        self.message.push(report.message.clone());
        self.sop_uid.push(report.sop_uid.clone());
        self.size_bytes.push(report.size_bytes);
    }

    /// Inserts the rows and the audit `events` and moves the audit head past
    /// them, in one statement.
    async fn insert_with_events(self, tx: &mut PgConnection, events: &audit::Linked) -> Result<(), sqlx::Error> {
        let head = events.head();
        sqlx::query!(
            "with files as (
                 insert into upload_file (upload_session_id, ordinal, outcome, code, message, sop_uid, size_bytes)
                 select * from unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::int8[])
             ), events as (
                 insert into audit_event (seq, occurred_at, actor, action, target, details, prev_hash, hash)
                 select * from unnest($8::int8[], $9::timestamptz[], $10::text[], $11::text[], $12::text[],
                                      $13::jsonb[], $14::bytea[], $15::bytea[])
             )
             update audit_head set seq = $16, hash = $17 where singleton",
            &self.session,
            &self.ordinal,
            &self.outcome,
            &self.code as &[Option<String>],
            &self.message as &[Option<String>],
            &self.sop_uid as &[Option<String>],
            &self.size_bytes,
            &events.seq,
            &events.occurred_at,
            &events.actor,
            &events.action,
            &events.target as &[Option<String>],
            &events.details,
            &events.prev_hash,
            &events.hash,
            head.seq,
            &head.hash,
        )
        .execute(tx)
        .await?;
        Ok(())
    }
}
