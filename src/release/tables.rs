//! The tables of a release: exactly the fields a grant covers, for exactly
//! the subjects released, keyed by the project's pseudonyms (never the
//! registry's), in CSV and Parquet, with the data dictionary of those fields.
//!
//! Which fields are in is the one rule of [`Coverage`]: a field the grant does
//! not cover never appears, not even as an empty column or an empty table.
//!
//! - `tables/subjects.{csv,parquet}`: one row per subject, with `sex` and
//!   `birth_year` when granted;
//! - `tables/observations.{csv,parquet}`: one row per value (long format) of
//!   the granted clinical, lab and proteomic fields, and of `age_at_study`
//!   (one per imaging study of a granted modality, dated by the study);
//! - `tables/diagnoses.{csv,parquet}` when `diagnosis` is granted;
//! - `tables/variants.{csv,parquet}` when `genotype` is granted;
//! - `tables/dictionary.{json,csv}`: the granted fields and every column.
//!
//! A subject may be in several cohorts (one patient of one site, in a knee
//! study and a chest study). Only what came in for the scope's cohorts is
//! released: observations, diagnoses and genotypes imported for another
//! cohort, whose consent the grant does not cover, are left out, as are ages
//! at studies of other cohorts.
//!
//! Dates are written as stored: already shifted by each subject's offset.
//! CSV follows RFC 4180 (header row, CRLF, quotes where needed); a text cell
//! a spreadsheet would run as a formula gets a leading `'` (OWASP CSV
//! injection). Parquet columns are typed (INT64, DOUBLE, DATE, TIMESTAMP
//! without time zone, STRING), nullable where the value may be missing, and
//! Snappy-compressed.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{NaiveDate, NaiveDateTime};
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::scope::Coverage;
use crate::dictionary::{Field, FieldSource};

/// Media type of a CSV file (RFC 4180).
pub const CSV: &str = "text/csv";
/// Media type of a Parquet file, as registered with IANA.
pub const PARQUET: &str = "application/vnd.apache.parquet";
/// Media type of the JSON dictionary.
pub const JSON: &str = "application/json";

/// One file of a release's tables.
#[derive(Debug, Clone)]
pub struct TableFile {
    /// Relative to the release's prefix, e.g. `tables/subjects.parquet`.
    pub path: String,
    pub media_type: &'static str,
    pub bytes: Bytes,
}

/// A released subject: the registry's pseudonym, which selects the rows and
/// is never written, and the project's, which keys them.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub registry: &'a str,
    pub project: &'a str,
}

/// The tables of the granted fields for `subjects`. Withdrawn subjects are
/// left out even when listed. Run it in one transaction (repeatable read) for
/// tables consistent with each other.
#[tracing::instrument(skip_all, fields(subjects = subjects.len()), err)]
pub async fn build(
    db: &mut PgConnection,
    coverage: &Coverage<'_>,
    subjects: &[Subject<'_>],
) -> anyhow::Result<Vec<TableFile>> {
    let granted = Granted::of(coverage);
    let tables = read(db, &granted, (coverage.modalities(), &coverage.scope.cohorts), subjects).await?;
    let dictionary = dictionary(&granted.fields, &tables)?;
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| encode(&tables, dictionary)))
        .await
        .context("encoding the release tables")?
}

/// The fields of the dictionary a release carries, as the grant covers them.
struct Granted<'a> {
    /// Every granted field that some table carries, in dictionary order.
    fields: Vec<&'a Field>,
}

impl<'a> Granted<'a> {
    fn of(coverage: &Coverage<'a>) -> Self {
        let fields = coverage
            .dictionary
            .fields()
            .iter()
            .filter(|f| {
                let carried = f.source == FieldSource::Observation
                    || matches!(f.id.as_str(), "sex" | "birth_year" | "age_at_study" | "diagnosis" | "genotype");
                carried && coverage.covers(&f.id)
            })
            .collect();
        Self { fields }
    }

    fn has(&self, id: &str) -> bool {
        self.fields.iter().any(|f| f.id == id)
    }

    /// The granted fields stored as observations.
    fn observations(&self) -> Vec<String> {
        self.fields.iter().filter(|f| f.source == FieldSource::Observation).map(|f| f.id.clone()).collect()
    }
}

/// The values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Text(Vec<Option<String>>),
    Integer(Vec<Option<i64>>),
    Number(Vec<Option<f64>>),
    Date(Vec<Option<NaiveDate>>),
    Timestamp(Vec<Option<NaiveDateTime>>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Self::Text(v) => v.len(),
            Self::Integer(v) => v.len(),
            Self::Number(v) => v.len(),
            Self::Date(v) => v.len(),
            Self::Timestamp(v) => v.len(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Self::Text(_) => "string",
            Self::Integer(_) => "integer",
            Self::Number(_) => "number",
            Self::Date(_) => "date",
            Self::Timestamp(_) => "timestamp",
        }
    }

    /// The CSV text of row `i` (`None`: an empty cell).
    fn cell(&self, i: usize) -> Option<String> {
        match self {
            Self::Text(v) => v[i].as_deref().map(spreadsheet_safe),
            Self::Integer(v) => v[i].map(|x| x.to_string()),
            // Rust's shortest representation that reads back to the same double.
            Self::Number(v) => v[i].map(|x| x.to_string()),
            Self::Date(v) => v[i].map(|d| d.format("%Y-%m-%d").to_string()),
            Self::Timestamp(v) => v[i].map(|t| t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
        }
    }
}

/// A named, described column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: &'static str,
    pub description: &'static str,
    /// Whether every row has a value.
    pub required: bool,
    pub values: Values,
}

/// A table of equally long columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The file name without extension, e.g. `subjects`.
    pub name: &'static str,
    pub columns: Vec<Column>,
}

impl Table {
    fn rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.values.len())
    }
}

const SUBJECT: &str = "The subject's pseudonym in this project.";

fn column(name: &'static str, description: &'static str, values: Values) -> Column {
    Column { name, description, required: false, values }
}

/// A text column from `rows`.
fn texts<R>(rows: &[R], cell: impl Fn(&R) -> Option<String>) -> Values {
    Values::Text(rows.iter().map(cell).collect())
}

fn required(name: &'static str, description: &'static str, values: Values) -> Column {
    Column { name, description, required: true, values }
}

/// Reads the granted tables. Rows are ordered by project pseudonym, then by
/// their own key, so a rebuild writes the same bytes.
async fn read(
    db: &mut PgConnection,
    granted: &Granted<'_>,
    studies: (Option<&[String]>, &[String]),
    subjects: &[Subject<'_>],
) -> anyhow::Result<Vec<Table>> {
    let registry: Vec<String> = subjects.iter().map(|s| s.registry.to_owned()).collect();
    let project: HashMap<&str, &str> = subjects.iter().map(|s| (s.registry, s.project)).collect();
    let rows = sqlx::query!(
        "select subject_id, pseudonym, sex, birth_year from subject
         where pseudonym = any($1) and withdrawn_at is null",
        &registry
    )
    .fetch_all(&mut *db)
    .await?;
    let mut found: Vec<(&str, Uuid, Option<String>, Option<i32>)> =
        rows.into_iter().map(|r| (project[r.pseudonym.as_str()], r.subject_id, r.sex, r.birth_year)).collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    // Rows below name their subject by its position `n` (from 1) in `found`.
    let ids: Vec<Uuid> = found.iter().map(|s| s.1).collect();
    let pseudonym = |n: i64| usize::try_from(n - 1).ok().map(|i| found[i].0.to_owned());

    let mut subjects_table =
        vec![required("subject", SUBJECT, Values::Text(found.iter().map(|s| Some(s.0.into())).collect()))];
    if granted.has("sex") {
        let sex = found.iter().map(|s| s.2.clone()).collect();
        subjects_table.push(column("sex", "Sex as recorded: M, F or O.", Values::Text(sex)));
    }
    if granted.has("birth_year") {
        let years = found.iter().map(|s| s.3.map(i64::from)).collect();
        subjects_table.push(column("birth_year", "Year of birth.", Values::Integer(years)));
    }
    let mut tables = vec![Table { name: "subjects", columns: subjects_table }];

    let observed = granted.observations();
    if granted.has("age_at_study") || !observed.is_empty() {
        tables.push(observations(db, granted, &observed, studies, &ids, &pseudonym).await?);
    }
    if granted.has("diagnosis") {
        let rows = sqlx::query!(
            r#"select w.n as "n!", d.system, d.code, d.diagnosed_on
               from unnest($1::uuid[]) with ordinality as w(subject_id, n)
               join diagnosis d using (subject_id)
               join data_import i on i.data_import_id = d.data_import_id
               where i.cohort_id in (select cohort_id from cohort where slug = any($2))
               order by w.n, d.diagnosed_on nulls last, d.system, d.code"#,
            &ids,
            studies.1
        )
        .fetch_all(&mut *db)
        .await?;
        tables.push(Table {
            name: "diagnoses",
            columns: vec![
                required("subject", SUBJECT, texts(&rows, |r| pseudonym(r.n))),
                required("system", "The coding system: ICD-10 or SNOMED CT.", texts(&rows, |r| Some(r.system.clone()))),
                required("code", "The diagnosis code.", texts(&rows, |r| Some(r.code.clone()))),
                column(
                    "diagnosed_on",
                    "The date of the diagnosis, shifted by the subject's offset.",
                    Values::Date(rows.iter().map(|r| r.diagnosed_on).collect()),
                ),
            ],
        });
    }
    if granted.has("genotype") {
        tables.push(variants(db, studies.1, &ids, &pseudonym).await?);
    }
    Ok(tables)
}

/// One row per value of a granted observation field, and per imaging study
/// for `age_at_study`.
async fn observations(
    db: &mut PgConnection,
    granted: &Granted<'_>,
    observed: &[String],
    (modalities, cohorts): (Option<&[String]>, &[String]),
    ids: &[Uuid],
    pseudonym: &impl Fn(i64) -> Option<String>,
) -> anyhow::Result<Table> {
    struct Row {
        n: i64,
        field: String,
        value: Option<f64>,
        code: Option<String>,
        at: Option<NaiveDateTime>,
    }
    let mut rows: Vec<Row> = sqlx::query!(
        r#"select w.n as "n!", o.field_id, o.value, o.value_code, o.observed_at
           from unnest($1::uuid[]) with ordinality as w(subject_id, n)
           join observation o using (subject_id)
           join data_import i on i.data_import_id = o.data_import_id
           where o.field_id = any($2) and i.cohort_id in (select cohort_id from cohort where slug = any($3))"#,
        ids,
        observed,
        cohorts
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|r| Row { n: r.n, field: r.field_id, value: r.value, code: r.value_code, at: r.observed_at })
    .collect();
    if granted.has("age_at_study") {
        // One age per study, from the published series of the granted
        // modalities of the scope's cohorts only (a subject's studies in
        // another cohort are not the release's).
        let modalities = modalities.unwrap_or_default();
        let ages = sqlx::query!(
            r#"select distinct w.n as "n!", d.study_id, d.age_years as "age!", d.study_date
               from unnest($1::uuid[]) with ordinality as w(subject_id, n)
               join discovery_series d using (subject_id)
               where d.age_years is not null and (cardinality($2::text[]) = 0 or d.modality = any($2))
                 and d.cohort_id in (select cohort_id from cohort where slug = any($3))"#,
            ids,
            modalities,
            cohorts
        )
        .fetch_all(&mut *db)
        .await?;
        rows.extend(ages.into_iter().map(|r| Row {
            n: r.n,
            field: "age_at_study".into(),
            value: Some(r.age),
            code: None,
            at: r.study_date.map(|d| d.and_time(chrono::NaiveTime::MIN)),
        }));
    }
    rows.sort_by(|a, b| {
        (a.n, &a.field, a.at.is_none(), a.at, &a.code)
            .cmp(&(b.n, &b.field, b.at.is_none(), b.at, &b.code))
            .then(a.value.unwrap_or(f64::NAN).total_cmp(&b.value.unwrap_or(f64::NAN)))
    });
    let units: HashMap<&str, Option<&str>> =
        granted.fields.iter().map(|f| (f.id.as_str(), f.unit.as_deref())).collect();
    Ok(Table {
        name: "observations",
        columns: vec![
            required("subject", SUBJECT, texts(&rows, |r| pseudonym(r.n))),
            required("field", "The field's id in the data dictionary.", texts(&rows, |r| Some(r.field.clone()))),
            column(
                "value",
                "The value in the field's unit (numeric fields).",
                Values::Number(rows.iter().map(|r| r.value).collect()),
            ),
            column("value_code", "The value's code (coded fields).", texts(&rows, |r| r.code.clone())),
            column(
                "unit",
                "The field's canonical UCUM unit.",
                Values::Text(
                    rows.iter().map(|r| units.get(r.field.as_str()).copied().flatten().map(str::to_owned)).collect(),
                ),
            ),
            column(
                "observed_at",
                "When the value was observed (for an age at a study, the study's date), shifted by the subject's offset.",
                Values::Timestamp(rows.iter().map(|r| r.at).collect()),
            ),
        ],
    })
}

/// One row per subject and biallelic variant called.
async fn variants(
    db: &mut PgConnection,
    cohorts: &[String],
    ids: &[Uuid],
    pseudonym: &impl Fn(i64) -> Option<String>,
) -> anyhow::Result<Table> {
    let rows = sqlx::query!(
        r#"select w.n as "n!", v.assembly, v.chrom, v.pos, v.ref as reference, v.alt, v.rsid, v.gene, g.alt_count
           from unnest($1::uuid[]) with ordinality as w(subject_id, n)
           join genotype g using (subject_id)
           join variant v using (variant_id)
           join data_import i on i.data_import_id = g.data_import_id
           where i.cohort_id in (select cohort_id from cohort where slug = any($2))
           order by w.n, v.assembly, v.chrom, v.pos, v.ref, v.alt"#,
        ids,
        cohorts
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(Table {
        name: "variants",
        columns: vec![
            required("subject", SUBJECT, texts(&rows, |r| pseudonym(r.n))),
            required("assembly", "The reference genome, e.g. GRCh38.", texts(&rows, |r| Some(r.assembly.clone()))),
            required("chrom", "The chromosome.", texts(&rows, |r| Some(r.chrom.clone()))),
            required("pos", "The 1-based position.", Values::Integer(rows.iter().map(|r| Some(r.pos)).collect())),
            required("ref", "The reference allele.", texts(&rows, |r| Some(r.reference.clone()))),
            required("alt", "The alternate allele.", texts(&rows, |r| Some(r.alt.clone()))),
            column("rsid", "The dbSNP identifier.", texts(&rows, |r| r.rsid.clone())),
            column("gene", "The gene.", texts(&rows, |r| r.gene.clone())),
            column(
                "alt_count",
                "Copies of the alternate allele (0, 1, 2); empty when the call is missing.",
                Values::Integer(rows.iter().map(|r| r.alt_count.map(i64::from)).collect()),
            ),
        ],
    })
}

/// The granted fields and the columns of every table, as `dictionary.json`.
#[derive(Debug, Serialize)]
struct DictionaryFile<'a> {
    fields: Vec<DictionaryField<'a>>,
    tables: Vec<DictionaryTable>,
}

#[derive(Debug, Serialize)]
struct DictionaryField<'a> {
    id: &'a str,
    label: &'a str,
    description: &'a str,
    category: &'a str,
    #[serde(rename = "type")]
    value_type: crate::dictionary::ValueType,
    unit: Option<&'a str>,
    coding_system: Option<&'a str>,
    code: Option<&'a str>,
    /// The table its values are in.
    table: &'static str,
}

#[derive(Debug, Serialize)]
struct DictionaryTable {
    name: &'static str,
    files: [String; 2],
    rows: usize,
    columns: Vec<DictionaryColumn>,
}

#[derive(Debug, Serialize)]
struct DictionaryColumn {
    name: &'static str,
    #[serde(rename = "type")]
    value_type: &'static str,
    required: bool,
    description: &'static str,
}

/// `dictionary.json` and the same fields as a table.
fn dictionary(fields: &[&Field], tables: &[Table]) -> anyhow::Result<(Bytes, Table)> {
    let table_of = |f: &Field| match f.id.as_str() {
        "sex" | "birth_year" => "subjects",
        "diagnosis" => "diagnoses",
        "genotype" => "variants",
        _ => "observations",
    };
    let file = DictionaryFile {
        fields: fields
            .iter()
            .map(|f| DictionaryField {
                id: &f.id,
                label: &f.title,
                description: &f.description,
                category: &f.category,
                value_type: f.value_type,
                unit: f.unit.as_deref(),
                coding_system: f.coding_system.as_deref(),
                code: f.code.as_deref(),
                table: table_of(f),
            })
            .collect(),
        tables: tables
            .iter()
            .map(|t| DictionaryTable {
                name: t.name,
                files: [format!("tables/{}.csv", t.name), format!("tables/{}.parquet", t.name)],
                rows: t.rows(),
                columns: t
                    .columns
                    .iter()
                    .map(|c| DictionaryColumn {
                        name: c.name,
                        value_type: c.values.type_name(),
                        required: c.required,
                        description: c.description,
                    })
                    .collect(),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&file)?;
    let table = Table {
        name: "dictionary",
        columns: vec![
            required("id", "", texts(&file.fields, |d| Some(d.id.to_owned()))),
            required("label", "", texts(&file.fields, |d| Some(d.label.to_owned()))),
            required("description", "", texts(&file.fields, |d| Some(d.description.to_owned()))),
            required("category", "", texts(&file.fields, |d| Some(d.category.to_owned()))),
            required(
                "type",
                "",
                texts(&file.fields, |d| {
                    serde_json::to_value(d.value_type).ok().and_then(|v| v.as_str().map(str::to_owned))
                }),
            ),
            column("unit", "", texts(&file.fields, |d| d.unit.map(str::to_owned))),
            column("coding_system", "", texts(&file.fields, |d| d.coding_system.map(str::to_owned))),
            column("code", "", texts(&file.fields, |d| d.code.map(str::to_owned))),
            required("table", "", texts(&file.fields, |d| Some(d.table.to_owned()))),
        ],
    };
    Ok((Bytes::from(json), table))
}

/// Every table as CSV and Parquet, then the dictionary.
fn encode(tables: &[Table], (json, dictionary): (Bytes, Table)) -> anyhow::Result<Vec<TableFile>> {
    let mut files = Vec::with_capacity(tables.len() * 2 + 2);
    for table in tables {
        files.push(TableFile { path: format!("tables/{}.csv", table.name), media_type: CSV, bytes: to_csv(table)? });
        files.push(TableFile {
            path: format!("tables/{}.parquet", table.name),
            media_type: PARQUET,
            bytes: to_parquet(table).with_context(|| format!("writing {}.parquet", table.name))?,
        });
    }
    files.push(TableFile { path: "tables/dictionary.json".into(), media_type: JSON, bytes: json });
    files.push(TableFile { path: "tables/dictionary.csv".into(), media_type: CSV, bytes: to_csv(&dictionary)? });
    Ok(files)
}

/// A text cell a spreadsheet would not run as a formula: one starting with
/// `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, unless
/// it is a plain number (OWASP, CSV Injection).
pub fn spreadsheet_safe(text: &str) -> String {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && !is_plain_number(text) { format!("'{text}") } else { text.to_owned() }
}

/// `-1`, `+2.5`, `-.5e-3`: digits with an optional sign, point and exponent.
fn is_plain_number(text: &str) -> bool {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (body, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    (!whole.is_empty() || !fraction.is_empty())
        && digits(whole)
        && digits(fraction)
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

/// RFC 4180: a header row, CRLF line ends, fields quoted where needed.
pub fn to_csv(table: &Table) -> anyhow::Result<Bytes> {
    let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    writer.write_record(table.columns.iter().map(|c| c.name))?;
    for row in 0..table.rows() {
        writer.write_record(table.columns.iter().map(|c| c.values.cell(row).unwrap_or_default()))?;
    }
    Ok(Bytes::from(writer.into_inner().map_err(csv::IntoInnerError::into_error)?))
}

/// The Parquet schema of a table.
fn schema(table: &Table) -> parquet::errors::Result<Type> {
    let fields = table
        .columns
        .iter()
        .map(|c| {
            let (physical, logical) = match c.values {
                Values::Text(_) => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
                Values::Integer(_) => (PhysicalType::INT64, None),
                Values::Number(_) => (PhysicalType::DOUBLE, None),
                Values::Date(_) => (PhysicalType::INT32, Some(LogicalType::Date)),
                Values::Timestamp(_) => (PhysicalType::INT64, Some(LogicalType::timestamp(false, TimeUnit::MICROS))),
            };
            let repetition = if c.required { Repetition::REQUIRED } else { Repetition::OPTIONAL };
            Type::primitive_type_builder(c.name, physical)
                .with_repetition(repetition)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        })
        .collect::<parquet::errors::Result<Vec<_>>>()?;
    Type::group_type_builder(table.name).with_fields(fields).build()
}

/// The present values of a column and, when it is nullable, its definition
/// levels (1: present, 0: missing).
fn levels<T: Clone, U>(values: &[Option<T>], required: bool, map: impl Fn(T) -> U) -> (Vec<U>, Option<Vec<i16>>) {
    let present = values.iter().flatten().cloned().map(map).collect();
    let levels = (!required).then(|| values.iter().map(|v| i16::from(v.is_some())).collect());
    (present, levels)
}

/// A table as one Parquet row group.
pub fn to_parquet(table: &Table) -> anyhow::Result<Bytes> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(concat!("custodian ", env!("CARGO_PKG_VERSION")).into())
        .build();
    let mut writer = SerializedFileWriter::new(Vec::new(), Arc::new(schema(table)?), Arc::new(properties))?;
    let mut group = writer.next_row_group()?;
    for column in &table.columns {
        let mut out = group.next_column()?.context("a column of the schema")?;
        let required = column.required;
        if required && column.values.cell_missing() {
            anyhow::bail!("the required column `{}` has a missing value", column.name);
        }
        match &column.values {
            Values::Text(v) => {
                let (values, defs) = levels(v, required, |s: String| ByteArray::from(s.into_bytes()));
                out.typed::<ByteArrayType>().write_batch(&values, defs.as_deref(), None)?;
            }
            Values::Integer(v) => {
                let (values, defs) = levels(v, required, |x| x);
                out.typed::<Int64Type>().write_batch(&values, defs.as_deref(), None)?;
            }
            Values::Number(v) => {
                let (values, defs) = levels(v, required, |x| x);
                out.typed::<DoubleType>().write_batch(&values, defs.as_deref(), None)?;
            }
            Values::Date(v) => {
                let (values, defs) = levels(v, required, |d: NaiveDate| {
                    // Days since 1970-01-01; chrono dates (±262,000 years) fit.
                    i32::try_from((d - NaiveDate::default()).num_days()).unwrap_or(i32::MAX)
                });
                out.typed::<Int32Type>().write_batch(&values, defs.as_deref(), None)?;
            }
            Values::Timestamp(v) => {
                let (values, defs) = levels(v, required, |t: NaiveDateTime| t.and_utc().timestamp_micros());
                out.typed::<Int64Type>().write_batch(&values, defs.as_deref(), None)?;
            }
        }
        out.close()?;
    }
    group.close()?;
    Ok(Bytes::from(writer.into_inner()?))
}

impl Values {
    fn cell_missing(&self) -> bool {
        match self {
            Self::Text(v) => v.iter().any(Option::is_none),
            Self::Integer(v) => v.iter().any(Option::is_none),
            Self::Number(v) => v.iter().any(Option::is_none),
            Self::Date(v) => v.iter().any(Option::is_none),
            Self::Timestamp(v) => v.iter().any(Option::is_none),
        }
    }
}

#[cfg(test)]
mod tests {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field as Cell;

    use super::*;

    fn sample() -> Table {
        Table {
            name: "sample",
            columns: vec![
                required("subject", "", Values::Text(vec![Some("psub-a".into()), Some("psub-b".into())])),
                column("note", "", Values::Text(vec![Some("=HYPERLINK(\"x\")".into()), None])),
                column("n", "", Values::Integer(vec![Some(-3), None])),
                column("x", "", Values::Number(vec![None, Some(0.1)])),
                column("on", "", Values::Date(vec![NaiveDate::from_ymd_opt(2001, 2, 3), None])),
                column(
                    "at",
                    "",
                    Values::Timestamp(vec![None, NaiveDate::from_ymd_opt(2020, 5, 1).unwrap().and_hms_opt(8, 30, 0)]),
                ),
            ],
        }
    }

    #[test]
    fn formula_cells_are_defused_and_numbers_are_not() {
        for risky in ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\r=1", "-", "-inf", "+.e1"] {
            assert_eq!(spreadsheet_safe(risky), format!("'{risky}"), "{risky:?}");
        }
        for plain in ["-1", "+2.5", "-.5e-3", "-7.", "hello", "", "1=1", "a@b"] {
            assert_eq!(spreadsheet_safe(plain), plain, "{plain:?}");
        }
    }

    #[test]
    fn csv_has_a_header_crlf_rows_quotes_and_empty_cells_for_missing_values() {
        let csv = String::from_utf8(to_csv(&sample()).unwrap().to_vec()).unwrap();
        assert_eq!(
            csv,
            "subject,note,n,x,on,at\r\n\
             psub-a,\"'=HYPERLINK(\"\"x\"\")\",-3,,2001-02-03,\r\n\
             psub-b,,,0.1,,2020-05-01T08:30:00\r\n"
        );
    }

    #[test]
    fn parquet_reads_back_typed_with_nulls() {
        let bytes = to_parquet(&sample()).unwrap();
        let reader = SerializedFileReader::new(bytes).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr();
        assert_eq!(schema.column(0).logical_type_ref(), Some(&LogicalType::String));
        assert_eq!(schema.column(4).logical_type_ref(), Some(&LogicalType::Date));
        let rows: Vec<Vec<Cell>> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().get_column_iter().map(|(_, c)| c.clone()).collect())
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0], Cell::Str("psub-a".into()));
        assert_eq!(rows[0][1], Cell::Str("=HYPERLINK(\"x\")".into()), "Parquet keeps text as it is");
        assert_eq!(rows[0][2], Cell::Long(-3));
        assert_eq!(rows[0][3], Cell::Null);
        assert_eq!(rows[0][4], Cell::Date(11_356));
        assert_eq!(rows[1][3], Cell::Double(0.1));
        assert_eq!(rows[1][5], Cell::TimestampMicros(1_588_321_800_000_000));
    }

    #[test]
    fn an_empty_table_is_a_valid_file_with_its_columns() {
        let mut table = sample();
        for c in &mut table.columns {
            c.values = match c.values {
                Values::Text(_) => Values::Text(vec![]),
                Values::Integer(_) => Values::Integer(vec![]),
                Values::Number(_) => Values::Number(vec![]),
                Values::Date(_) => Values::Date(vec![]),
                Values::Timestamp(_) => Values::Timestamp(vec![]),
            };
        }
        let reader = SerializedFileReader::new(to_parquet(&table).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(reader.metadata().file_metadata().schema_descr().num_columns(), 6);
        assert_eq!(to_csv(&table).unwrap(), "subject,note,n,x,on,at\r\n");
    }
}
