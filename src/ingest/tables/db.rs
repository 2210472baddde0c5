//! Writing a checked import in one transaction: subjects (created or
//! matched by pseudonym), cohort membership, the import record, its rows
//! (streamed with `COPY`), the audit event and a coverage refresh.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{Duration, NaiveDateTime};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{ImportKind, ImportReport, Parsed};
use crate::access::withdrawal::{self, Scope};
use crate::audit::{self, NewEvent};
use crate::deid::RegistryKey;
use crate::error::ApiError;

/// Where an import goes and who sends it.
#[derive(Debug)]
pub struct Context<'a> {
    pub kind: ImportKind,
    pub format: &'a str,
    pub cohort_id: Uuid,
    pub cohort: &'a str,
    pub site_id: Uuid,
    pub site: &'a str,
    pub actor: &'a str,
    pub key: &'a RegistryKey,
    /// Issuer of Patient ID of the table's patient IDs, if any.
    pub issuer: Option<&'a str>,
    pub max_shift_days: u32,
}

struct Subject {
    id: Uuid,
    shift_days: i64,
}

/// Writes `parsed`, which must be free of problems.
pub async fn write(tx: &mut PgConnection, ctx: &Context<'_>, parsed: Parsed) -> Result<ImportReport, ApiError> {
    let (subjects, created) = resolve_subjects(tx, ctx, &parsed).await?;
    let import_id = sqlx::query_scalar!(
        "insert into data_import (kind, format, cohort_id, site_id, created_by, row_count, subjects_created)
         values ($1, $2, $3, $4, $5, $6, $7) returning data_import_id",
        ctx.kind.as_str(),
        ctx.format,
        ctx.cohort_id,
        ctx.site_id,
        ctx.actor,
        i32::try_from(parsed.rows).unwrap_or(i32::MAX),
        i32::try_from(created).unwrap_or(i32::MAX),
    )
    .fetch_one(&mut *tx)
    .await?;

    let mut values = 0_u64;
    if !parsed.observations.is_empty() {
        same_units(tx, &parsed).await?;
        values += copy_observations(tx, &parsed, &subjects, import_id).await?;
    }
    if !parsed.diagnoses.is_empty() {
        values += copy_diagnoses(tx, &parsed, &subjects, import_id).await?;
    }
    if !parsed.genotypes.is_empty() {
        values += write_genotypes(tx, &parsed, &subjects, import_id).await?;
    }
    let withdrawn = record_withdrawals(tx, ctx, &parsed, &subjects, import_id).await?;

    let report = ImportReport {
        id: import_id,
        kind: ctx.kind,
        format: ctx.format.to_owned(),
        cohort: ctx.cohort.to_owned(),
        site: ctx.site.to_owned(),
        rows: parsed.rows,
        subjects_created: created,
        subjects_matched: subjects.len() as u64 - created,
        values,
        withdrawn,
    };
    audit::record(
        tx,
        NewEvent::new(ctx.actor, &format!("import.{}", ctx.kind.as_str()))
            .target(format!("import:{import_id}"))
            .details(json!({
                "cohort": ctx.cohort,
                "site": ctx.site,
                "format": ctx.format,
                "rows": report.rows,
                "subjects_created": report.subjects_created,
                "subjects_matched": report.subjects_matched,
                "values": report.values,
                "withdrawn": report.withdrawn,
            })),
    )
    .await?;
    crate::jobs::enqueue(&mut *tx, &crate::dictionary::db::refresh_soon()).await?;
    Ok(report)
}

/// Withdraws the subjects the import marks withdrawn, as a steward's
/// withdrawal does (discovery, notices to the projects that hold them), each
/// audited; a subject already withdrawn to that extent is left as it is.
/// Returns how many were withdrawn now.
async fn record_withdrawals(
    tx: &mut PgConnection,
    ctx: &Context<'_>,
    parsed: &Parsed,
    subjects: &[Subject],
    import_id: Uuid,
) -> Result<u64, ApiError> {
    // The widest extent per patient, in pseudonym order (the order rows are locked in).
    let mut wanted: HashMap<u32, Scope> = HashMap::new();
    for &(patient, scope) in &parsed.withdrawals {
        let entry = wanted.entry(patient).or_insert(scope);
        if scope == Scope::Full {
            *entry = Scope::Full;
        }
    }
    let ids = parsed.patients.ids();
    let mut list: Vec<(String, Uuid, Scope)> = wanted
        .into_iter()
        .map(|(patient, scope)| {
            (ctx.key.subject_issued(ctx.site, &ids[patient as usize], ctx.issuer), subjects[patient as usize].id, scope)
        })
        .collect();
    list.sort();
    let mut withdrawn = 0;
    for (pseudonym, subject, scope) in list {
        let before: Option<String> =
            sqlx::query_scalar!("select withdrawal_scope from subject where subject_id = $1 for update", subject)
                .fetch_one(&mut *tx)
                .await?;
        if scope.covered_by(before.as_deref()) {
            continue;
        }
        let outcome = withdrawal::withdraw(tx, ctx.key, subject, &pseudonym, scope).await?;
        audit::record(
            tx,
            NewEvent::new(ctx.actor, "subject.withdraw").target(format!("subject:{pseudonym}")).details(json!({
                "scope": scope, "notices": outcome.notices, "series_removed": outcome.series_removed,
                "import": import_id, "site": ctx.site,
            })),
        )
        .await?;
        withdrawn += 1;
    }
    Ok(withdrawn)
}

/// The subject of every patient of the import, by patient number, creating
/// the new ones and recording sex and year of birth; and how many were new.
async fn resolve_subjects(
    tx: &mut PgConnection,
    ctx: &Context<'_>,
    parsed: &Parsed,
) -> sqlx::Result<(Vec<Subject>, u64)> {
    let pseudonyms: Vec<String> =
        parsed.patients.ids().iter().map(|id| ctx.key.subject_issued(ctx.site, id, ctx.issuer)).collect();
    let mut sex: Vec<Option<String>> = vec![None; pseudonyms.len()];
    let mut birth_year: Vec<Option<i32>> = vec![None; pseudonyms.len()];
    for d in &parsed.demographics {
        sex[d.patient as usize] = d.sex.map(|s| s.as_str().to_owned());
        birth_year[d.patient as usize] = d.birth_year;
    }
    // Rows are locked in pseudonym order, as the imaging writer locks them, so the two cannot deadlock.
    let mut order: Vec<usize> = (0..pseudonyms.len()).collect();
    order.sort_by(|a, b| pseudonyms[*a].cmp(&pseudonyms[*b]));
    let sorted = |column: &dyn Fn(usize) -> Option<String>| order.iter().map(|i| column(*i)).collect::<Vec<_>>();
    let p_sorted: Vec<String> = order.iter().map(|i| pseudonyms[*i].clone()).collect();
    let sex_sorted = sorted(&|i| sex[i].clone());
    let year_sorted: Vec<Option<i32>> = order.iter().map(|i| birth_year[*i]).collect();
    let shifts: Vec<i32> = p_sorted
        .iter()
        .map(|p| i32::try_from(ctx.key.date_shift_days(p, ctx.max_shift_days)).unwrap_or_default())
        .collect();

    let created = sqlx::query_scalar!(
        "insert into subject (pseudonym, site_id, sex, birth_year, date_shift_days)
         select p, $2, s, b, d from unnest($1::text[], $3::text[], $4::int[], $5::int[]) as t(p, s, b, d) order by p
         on conflict (pseudonym) do nothing
         returning pseudonym",
        &p_sorted,
        ctx.site_id,
        &sex_sorted as &[Option<String>],
        &year_sorted as &[Option<i32>],
        &shifts,
    )
    .fetch_all(&mut *tx)
    .await?
    .len() as u64;
    if !parsed.demographics.is_empty() {
        sqlx::query!(
            "update subject s set sex = coalesce(t.sex, s.sex), birth_year = coalesce(t.b, s.birth_year)
             from unnest($1::text[], $2::text[], $3::int[]) as t(p, sex, b)
             where s.pseudonym = t.p and (t.sex is not null or t.b is not null)
               and (s.sex is distinct from coalesce(t.sex, s.sex) or s.birth_year is distinct from coalesce(t.b, s.birth_year))",
            &p_sorted,
            &sex_sorted as &[Option<String>],
            &year_sorted as &[Option<i32>],
        )
        .execute(&mut *tx)
        .await?;
    }
    let rows =
        sqlx::query!("select pseudonym, subject_id, date_shift_days from subject where pseudonym = any($1)", &p_sorted)
            .fetch_all(&mut *tx)
            .await?;
    let by_pseudonym: HashMap<String, Subject> = rows
        .into_iter()
        .map(|r| (r.pseudonym, Subject { id: r.subject_id, shift_days: i64::from(r.date_shift_days) }))
        .collect();
    let subjects: Vec<Subject> = pseudonyms
        .iter()
        .map(|p| by_pseudonym.get(p).map(|s| Subject { id: s.id, shift_days: s.shift_days }))
        .collect::<Option<_>>()
        .ok_or_else(|| sqlx::Error::Protocol("a subject of the import vanished".into()))?;
    let ids: Vec<Uuid> = subjects.iter().map(|s| s.id).collect();
    sqlx::query!(
        "insert into cohort_subject (cohort_id, subject_id) select $1, unnest($2::uuid[]) on conflict do nothing",
        ctx.cohort_id,
        &ids,
    )
    .execute(&mut *tx)
    .await?;
    Ok((subjects, created))
}

/// `COPY … FROM STDIN` text-format rows, sent in chunks.
pub(crate) struct Copy {
    buffer: String,
    rows: u64,
}

const CHUNK: usize = 1 << 20;

impl Copy {
    pub(crate) fn new() -> Self {
        Self { buffer: String::with_capacity(CHUNK + 4096), rows: 0 }
    }

    pub(crate) fn text(&mut self, value: Option<&str>) {
        match value {
            None => self.buffer.push_str("\\N"),
            Some(v) => {
                for c in v.chars() {
                    match c {
                        '\\' => self.buffer.push_str("\\\\"),
                        '\t' => self.buffer.push_str("\\t"),
                        '\n' => self.buffer.push_str("\\n"),
                        '\r' => self.buffer.push_str("\\r"),
                        c => self.buffer.push(c),
                    }
                }
            }
        }
    }

    pub(crate) fn display(&mut self, value: Option<impl std::fmt::Display>) {
        match value {
            None => self.buffer.push_str("\\N"),
            Some(v) => {
                let _ = write!(self.buffer, "{v}");
            }
        }
    }

    /// A whole row, already in COPY text format (tab-separated, escaped).
    pub(crate) fn line(&mut self, args: std::fmt::Arguments<'_>) {
        let _ = self.buffer.write_fmt(args);
        self.buffer.push('\n');
        self.rows += 1;
    }

    pub(crate) fn sep(&mut self) {
        self.buffer.push('\t');
    }

    pub(crate) fn end(&mut self) {
        self.buffer.push('\n');
        self.rows += 1;
    }
}

pub(crate) async fn copy_rows(
    tx: &mut PgConnection,
    statement: &str,
    mut fill: impl FnMut(&mut Copy) -> bool,
) -> sqlx::Result<u64> {
    let mut copy_in = tx.copy_in_raw(statement).await?;
    let mut copy = Copy::new();
    loop {
        let more = fill(&mut copy);
        if copy.buffer.len() >= CHUNK || !more {
            if let Err(e) = copy_in.send(copy.buffer.as_bytes()).await {
                let _ = copy_in.abort("import failed").await;
                return Err(e);
            }
            copy.buffer.clear();
        }
        if !more {
            break;
        }
    }
    copy_in.finish().await?;
    Ok(copy.rows)
}

fn shifted(at: NaiveDateTime, days: i64) -> NaiveDateTime {
    at + Duration::days(days)
}

/// Holds the fields the values are for (a steward's change of unit waits for
/// this import), and refuses if one changed unit since the file was read.
async fn same_units(tx: &mut PgConnection, parsed: &Parsed) -> Result<(), ApiError> {
    let now = sqlx::query!(
        "select field_id, unit from field where field_id = any($1) order by field_id for share",
        &parsed.fields
    )
    .fetch_all(&mut *tx)
    .await?;
    for (id, unit) in parsed.fields.iter().zip(&parsed.field_units) {
        if !now.iter().any(|f| f.field_id == *id && f.unit == *unit) {
            return Err(ApiError::Conflict(format!(
                "the field `{id}` was redefined while the file was read; send it again"
            )));
        }
    }
    Ok(())
}

async fn copy_observations(
    tx: &mut PgConnection,
    parsed: &Parsed,
    subjects: &[Subject],
    import_id: Uuid,
) -> sqlx::Result<u64> {
    let import = import_id.to_string();
    let ids: Vec<String> = subjects.iter().map(|s| s.id.to_string()).collect();
    let mut rows = parsed.observations.iter();
    copy_rows(
        tx,
        "copy observation (subject_id, field_id, value, value_code, observed_at, data_import_id) from stdin",
        |copy| {
            for _ in 0..4096 {
                let Some(o) = rows.next() else { return false };
                let subject = &subjects[o.patient as usize];
                copy.text(Some(&ids[o.patient as usize]));
                copy.sep();
                copy.text(Some(&parsed.fields[usize::from(o.field)]));
                copy.sep();
                copy.display(o.value);
                copy.sep();
                copy.text(o.code.as_deref());
                copy.sep();
                copy.display(o.at.map(|t| shifted(t, subject.shift_days).format("%Y-%m-%d %H:%M:%S")));
                copy.sep();
                copy.text(Some(&import));
                copy.end();
            }
            true
        },
    )
    .await
}

async fn copy_diagnoses(
    tx: &mut PgConnection,
    parsed: &Parsed,
    subjects: &[Subject],
    import_id: Uuid,
) -> sqlx::Result<u64> {
    let import = import_id.to_string();
    let mut rows = parsed.diagnoses.iter();
    copy_rows(tx, "copy diagnosis (subject_id, system, code, diagnosed_on, data_import_id) from stdin", |copy| {
        for _ in 0..4096 {
            let Some(d) = rows.next() else { return false };
            let subject = &subjects[d.patient as usize];
            copy.display(Some(subject.id));
            copy.sep();
            copy.text(Some(d.code.system().as_str()));
            copy.sep();
            copy.text(Some(d.code.as_str()));
            copy.sep();
            copy.display(d.on.map(|on| on + Duration::days(subject.shift_days)));
            copy.sep();
            copy.text(Some(&import));
            copy.end();
        }
        true
    })
    .await
}

async fn write_genotypes(
    tx: &mut PgConnection,
    parsed: &Parsed,
    subjects: &[Subject],
    import_id: Uuid,
) -> sqlx::Result<u64> {
    let v = &parsed.variants;
    let rows = sqlx::query!(
        "insert into variant (chrom, pos, ref, alt, rsid, gene)
         select * from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])
         on conflict (assembly, chrom, pos, ref, alt) do update
         set rsid = coalesce(variant.rsid, excluded.rsid), gene = coalesce(variant.gene, excluded.gene)
         returning variant_id, chrom, pos, ref, alt",
        &v.iter().map(|k| k.chrom.clone()).collect::<Vec<_>>(),
        &v.iter().map(|k| k.pos).collect::<Vec<_>>(),
        &v.iter().map(|k| k.reference.clone()).collect::<Vec<_>>(),
        &v.iter().map(|k| k.alt.clone()).collect::<Vec<_>>(),
        &v.iter().map(|k| k.rsid.clone()).collect::<Vec<_>>() as &[Option<String>],
        &v.iter().map(|k| k.gene.clone()).collect::<Vec<_>>() as &[Option<String>],
    )
    .fetch_all(&mut *tx)
    .await?;
    let ids: HashMap<(String, i64, String, String), i64> =
        rows.into_iter().map(|r| ((r.chrom, r.pos, r.r#ref, r.alt), r.variant_id)).collect();
    let variant_ids: Vec<i64> = v
        .iter()
        .map(|k| ids.get(&(k.chrom.clone(), k.pos, k.reference.clone(), k.alt.clone())).copied())
        .collect::<Option<_>>()
        .ok_or_else(|| sqlx::Error::Protocol("a variant of the import was not stored".into()))?;
    // A corrected file replaces the calls it repeats.
    let written = sqlx::query!(
        "insert into genotype (variant_id, subject_id, alt_count, data_import_id)
         select v, s, a, $4 from unnest($1::bigint[], $2::uuid[], $3::smallint[]) as t(v, s, a)
         on conflict (variant_id, subject_id) do update
         set alt_count = excluded.alt_count, data_import_id = excluded.data_import_id",
        &parsed.genotypes.iter().map(|g| variant_ids[g.variant as usize]).collect::<Vec<_>>(),
        &parsed.genotypes.iter().map(|g| subjects[g.patient as usize].id).collect::<Vec<_>>(),
        &parsed.genotypes.iter().map(|g| g.alt_count).collect::<Vec<_>>() as &[Option<i16>],
        import_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(written)
}
