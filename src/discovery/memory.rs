//! The in-memory discovery index: the discovery units (published series with
//! their subject, and subjects without imaging) as columns sorted by subject
//! and study, and the subject tables (observations, diagnoses, genotypes,
//! annotations) as compact rows. A criteria tree evaluates to a bitset over the
//! units; counts and breakdowns walk the set bits once.
//!
//! The index answers exactly what the SQL compiler in [`super::sql`] answers
//! (a test holds the two to it); it is a snapshot of one database snapshot and
//! is used only while no change to what discovery reads has committed since.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use super::criteria::{Condition, Node, SeriesColumn};
use super::protect::Tally;
use super::sql::Dimension;
use crate::vocabulary::VariantRef;

const NONE: u32 = u32::MAX;
const NO_DATE: i32 = i32::MIN;

/// A set of units or subjects.
#[derive(Debug, Clone)]
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn zeros(len: usize) -> Self {
        Self { words: vec![0; len.div_ceil(64)], len }
    }

    fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    fn set_range(&mut self, from: usize, to: usize) {
        for i in from..to {
            self.set(i);
        }
    }

    fn and(&mut self, other: &Self) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
    }

    fn or(&mut self, other: &Self) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    fn not(&mut self) {
        for word in &mut self.words {
            *word = !*word;
        }
        let tail = self.len % 64;
        if tail != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << tail) - 1;
        }
    }

    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

/// Strings of one column, each stored once.
#[derive(Debug, Default)]
struct Dict {
    values: Vec<String>,
    index: HashMap<String, u32>,
}

impl Dict {
    fn code(&mut self, value: Option<String>) -> u32 {
        let Some(value) = value else { return NONE };
        if let Some(code) = self.index.get(&value) {
            return *code;
        }
        let code = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        self.index.insert(value.clone(), code);
        self.values.push(value);
        code
    }

    /// Which codes are among `values` (a lookup table by code).
    fn matching<S: AsRef<str>>(&self, values: impl IntoIterator<Item = S>) -> Vec<bool> {
        let mut table = vec![false; self.values.len()];
        for value in values {
            if let Some(code) = self.index.get(value.as_ref()) {
                table[*code as usize] = true;
            }
        }
        table
    }
}

fn hit(table: &[bool], code: u32) -> bool {
    code != NONE && table[code as usize]
}

fn in_range(value: f64, min: Option<f64>, max: Option<f64>) -> bool {
    // NaN (a missing value) compares false, as SQL null does.
    min.is_none_or(|m| value >= m) && max.is_none_or(|m| value <= m) && !value.is_nan()
}

#[derive(Debug, Default)]
struct Observations {
    subject: Vec<u32>,
    value: Vec<f64>,
    code: Vec<u32>,
    day: Vec<i32>,
    codes: Dict,
}

#[derive(Debug, Default)]
struct Diagnoses {
    subject: Vec<u32>,
    /// The system and the code, joined by a unit separator.
    code: Vec<u32>,
    day: Vec<i32>,
    codes: Dict,
}

#[derive(Debug)]
struct Variant {
    chrom: String,
    pos: i64,
    reference: String,
    alt: String,
    rsid: Option<String>,
    /// (subject, copies of the alternate allele; -1 when missing)
    calls: Vec<(u32, i16)>,
}

#[derive(Debug, Default)]
struct Annotations {
    subject: Vec<u32>,
    level: Vec<u32>,
    kind: Vec<u32>,
    code: Vec<u32>,
    role: Vec<u32>,
    levels: Dict,
    kinds: Dict,
    codes: Dict,
    roles: Dict,
}

/// One database snapshot of everything discovery reads.
#[derive(Debug)]
pub struct Snapshot {
    /// The change version it was built at.
    pub version: i64,
    /// When it was built and how long that took.
    pub built_at: Instant,
    pub build_time: Duration,
    // Units, sorted by (subject, study): every series, each cohort membership
    // without a series in that cohort, and a subject in no cohort without imaging
    // (the last two with no study).
    unit_subject: Vec<u32>,
    unit_study: Vec<u32>,
    unit_cohort: Vec<u32>,
    /// Modality, body part, manufacturer, model.
    unit_codes: [Vec<u32>; 4],
    code_dicts: [Dict; 4],
    field_strength: Vec<f64>,
    field_strength_label: Vec<u32>,
    field_strength_labels: Dict,
    age: Vec<f64>,
    study_day: Vec<i32>,
    instances: Vec<u32>,
    /// The first unit of each subject, and the end.
    subject_start: Vec<u32>,
    subject_site: Vec<u32>,
    subject_sex: Vec<u32>,
    /// Each subject's secret record key (the cell key method) and the threshold
    /// of its strictest cohort.
    subject_key: Vec<u64>,
    subject_threshold: Vec<i32>,
    sexes: Dict,
    sites: Dict,
    cohorts: Dict,
    observations: HashMap<String, Observations>,
    diagnoses: Diagnoses,
    variants: Vec<Variant>,
    annotations: Annotations,
}

/// The change version of what discovery reads: the number of committed
/// transactions that changed it (see migration 0010).
pub async fn version(db: impl sqlx::PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"select pruned + (select count(*) from discovery_change) as "version!" from discovery_change_pruned"#
    )
    .fetch_one(db)
    .await
}

struct Unit {
    subject: u32,
    study: u32,
    cohort: u32,
    codes: [u32; 4],
    field_strength: f64,
    field_strength_label: u32,
    age: f64,
    day: i32,
    instances: u32,
}

impl Unit {
    /// A unit of `subject` with no series and no cohort.
    fn bare(subject: u32) -> Self {
        Self {
            subject,
            study: NONE,
            cohort: NONE,
            codes: [NONE; 4],
            field_strength: f64::NAN,
            field_strength_label: NONE,
            age: f64::NAN,
            day: NO_DATE,
            instances: 0,
        }
    }
}

fn index_of(len: usize) -> u32 {
    u32::try_from(len).expect("fewer than 2^32 rows")
}

impl Snapshot {
    /// Reads everything discovery needs from one repeatable-read snapshot.
    #[allow(clippy::too_many_lines)]
    pub async fn load(db: &PgPool) -> sqlx::Result<Self> {
        let started = Instant::now();
        let mut tx = db.begin().await?;
        // Stays runtime: a SET statement has no parameters or result columns for a checked macro to verify.
        sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
        let version = version(&mut *tx).await?;

        let mut sites = Dict::default();
        let site_codes: HashMap<Uuid, u32> = sqlx::query!("select site_id, code from site")
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|site| (site.site_id, sites.code(Some(site.code))))
            .collect();
        let mut cohorts = Dict::default();
        let mut cohort_threshold = Vec::new();
        let cohort_codes: HashMap<Uuid, u32> =
            sqlx::query!("select cohort_id, slug, suppression_threshold from cohort")
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|cohort| {
                    cohort_threshold.push(cohort.suppression_threshold);
                    (cohort.cohort_id, cohorts.code(Some(cohort.slug)))
                })
                .collect();

        let mut sexes = Dict::default();
        let mut subject_index: HashMap<Uuid, u32> = HashMap::new();
        let mut subject_site = Vec::new();
        let mut subject_sex = Vec::new();
        let mut subject_key = Vec::new();
        {
            let mut rows =
                sqlx::query!("select subject_id, site_id, sex, record_key from subject where withdrawn_at is null")
                    .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                subject_index.insert(row.subject_id, index_of(subject_site.len()));
                subject_site.push(site_codes.get(&row.site_id).copied().unwrap_or(NONE));
                subject_sex.push(sexes.code(row.sex));
                subject_key.push(u64::from_ne_bytes(row.record_key.to_ne_bytes()));
            }
        }
        let subjects = subject_site.len();
        let mut members: Vec<Bits> = (0..cohorts.values.len()).map(|_| Bits::zeros(subjects)).collect();
        // A subject in no cohort has the registry's default threshold.
        let mut subject_threshold: Vec<i32> = vec![0; subjects];
        {
            let mut rows = sqlx::query!("select cohort_id, subject_id from cohort_subject").fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                if let (Some(c), Some(s)) = (cohort_codes.get(&row.cohort_id), subject_index.get(&row.subject_id)) {
                    members[*c as usize].set(*s as usize);
                    let t = &mut subject_threshold[*s as usize];
                    *t = (*t).max(cohort_threshold[*c as usize]);
                }
            }
        }
        for t in &mut subject_threshold {
            if *t == 0 {
                *t = super::protect::DEFAULT_THRESHOLD;
            }
        }

        let mut code_dicts: [Dict; 4] = Default::default();
        let mut field_strength_labels = Dict::default();
        let mut studies: HashMap<Uuid, u32> = HashMap::new();
        let mut units: Vec<Unit> = Vec::new();
        {
            let mut rows = sqlx::query!(
                r#"select subject_id, study_id, cohort_id, modality, body_part, manufacturer, model, field_strength,
                          (field_strength::numeric(4, 1))::text as "label?", age_years,
                          study_date - date '1970-01-01' as "day?", instances
                   from discovery_series"#
            )
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let Some(subject) = subject_index.get(&row.subject_id).copied() else { continue };
                let next = index_of(studies.len());
                let study = *studies.entry(row.study_id).or_insert(next);
                let [d0, d1, d2, d3] = &mut code_dicts;
                units.push(Unit {
                    subject,
                    study,
                    cohort: cohort_codes.get(&row.cohort_id).copied().unwrap_or(NONE),
                    codes: [
                        d0.code(row.modality),
                        d1.code(row.body_part),
                        d2.code(row.manufacturer),
                        d3.code(row.model),
                    ],
                    field_strength: row.field_strength.unwrap_or(f64::NAN),
                    field_strength_label: field_strength_labels.code(row.label),
                    age: row.age_years.unwrap_or(f64::NAN),
                    day: row.day.unwrap_or(NO_DATE),
                    instances: u32::try_from(row.instances).unwrap_or(0),
                });
            }
        }
        // A subject is in a cohort by membership, whatever cohort its imaging
        // belongs to: each membership without a series in that cohort is a unit
        // of its own, with no study.
        let imaged_in: std::collections::HashSet<(u32, u32)> = units.iter().map(|u| (u.subject, u.cohort)).collect();
        for (cohort, members) in members.iter().enumerate() {
            let cohort = index_of(cohort);
            for subject in members.ones().map(index_of) {
                if !imaged_in.contains(&(subject, cohort)) {
                    units.push(Unit { cohort, ..Unit::bare(subject) });
                }
            }
        }
        // Subjects in no cohort and without imaging are a unit each.
        let mut imaged = vec![false; subjects];
        for unit in &units {
            imaged[unit.subject as usize] = true;
        }
        for (subject, _) in imaged.iter().enumerate().filter(|(_, i)| !**i) {
            units.push(Unit::bare(index_of(subject)));
        }
        units.sort_unstable_by_key(|u| (u.subject, u.study));
        let mut subject_start = vec![0u32; subjects + 1];
        for unit in &units {
            subject_start[unit.subject as usize + 1] += 1;
        }
        for i in 0..subjects {
            subject_start[i + 1] += subject_start[i];
        }

        let mut observations: HashMap<String, Observations> = HashMap::new();
        {
            let mut rows = sqlx::query!(
                r#"select field_id, subject_id, value, value_code,
                          observed_at::date - date '1970-01-01' as "day?"
                   from observation"#
            )
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let Some(subject) = subject_index.get(&row.subject_id).copied() else { continue };
                let o = match observations.get_mut(&row.field_id) {
                    Some(o) => o,
                    None => observations.entry(row.field_id).or_default(),
                };
                o.subject.push(subject);
                o.value.push(row.value.unwrap_or(f64::NAN));
                let code = o.codes.code(row.value_code);
                o.code.push(code);
                o.day.push(row.day.unwrap_or(NO_DATE));
            }
        }
        let mut diagnoses = Diagnoses::default();
        {
            let mut rows = sqlx::query!(
                r#"select subject_id, system, code, diagnosed_on - date '1970-01-01' as "day?" from diagnosis"#
            )
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let Some(subject) = subject_index.get(&row.subject_id).copied() else { continue };
                diagnoses.subject.push(subject);
                let code = diagnoses.codes.code(Some(format!("{}\u{1f}{}", row.system, row.code)));
                diagnoses.code.push(code);
                diagnoses.day.push(row.day.unwrap_or(NO_DATE));
            }
        }
        let mut variant_index: HashMap<i64, usize> = HashMap::new();
        let mut variants = Vec::new();
        for row in sqlx::query!(r#"select variant_id, chrom, pos, ref as "reference", alt, rsid from variant"#)
            .fetch_all(&mut *tx)
            .await?
        {
            variant_index.insert(row.variant_id, variants.len());
            variants.push(Variant {
                chrom: row.chrom,
                pos: row.pos,
                reference: row.reference,
                alt: row.alt,
                rsid: row.rsid,
                calls: Vec::new(),
            });
        }
        {
            let mut rows = sqlx::query!("select variant_id, subject_id, alt_count from genotype").fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                if let (Some(v), Some(s)) = (variant_index.get(&row.variant_id), subject_index.get(&row.subject_id)) {
                    variants[*v].calls.push((*s, row.alt_count.unwrap_or(-1)));
                }
            }
        }
        let mut annotations = Annotations::default();
        {
            let mut rows =
                sqlx::query!("select subject_id, level, kind, code, annotator_role from annotation").fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let Some(subject) = subject_index.get(&row.subject_id).copied() else { continue };
                let a = &mut annotations;
                a.subject.push(subject);
                let level = a.levels.code(Some(row.level));
                a.level.push(level);
                let kind = a.kinds.code(Some(row.kind));
                a.kind.push(kind);
                let code = a.codes.code(row.code);
                a.code.push(code);
                let role = a.roles.code(row.annotator_role);
                a.role.push(role);
            }
        }
        tx.commit().await?;

        let column = |f: fn(&Unit) -> u32| units.iter().map(f).collect::<Vec<u32>>();
        let snapshot = Self {
            version,
            built_at: Instant::now(),
            build_time: started.elapsed(),
            unit_subject: column(|u| u.subject),
            unit_study: column(|u| u.study),
            unit_cohort: column(|u| u.cohort),
            unit_codes: [
                column(|u| u.codes[0]),
                column(|u| u.codes[1]),
                column(|u| u.codes[2]),
                column(|u| u.codes[3]),
            ],
            code_dicts,
            field_strength: units.iter().map(|u| u.field_strength).collect(),
            field_strength_label: column(|u| u.field_strength_label),
            field_strength_labels,
            age: units.iter().map(|u| u.age).collect(),
            study_day: units.iter().map(|u| u.day).collect(),
            instances: column(|u| u.instances),
            subject_start,
            subject_site,
            subject_sex,
            subject_key,
            subject_threshold,
            sexes,
            sites,
            cohorts,
            observations,
            diagnoses,
            variants,
            annotations,
        };
        Ok(snapshot)
    }

    /// How many units (published series and subjects without imaging) it holds.
    pub fn units(&self) -> usize {
        self.unit_subject.len()
    }

    fn subjects(&self) -> usize {
        self.subject_site.len()
    }

    /// The units matching `node` (absent: all).
    fn evaluate(&self, node: Option<&Node>) -> Bits {
        if let Some(node) = node {
            self.node(node)
        } else {
            let mut all = Bits::zeros(self.units());
            all.not();
            all
        }
    }

    fn node(&self, node: &Node) -> Bits {
        match node {
            Node::And(items) | Node::Or(items) => {
                let mut result = self.node(&items[0]);
                for item in &items[1..] {
                    let next = self.node(item);
                    if matches!(node, Node::And(_)) {
                        result.and(&next);
                    } else {
                        result.or(&next);
                    }
                }
                result
            }
            Node::Not(inner) => {
                let mut result = self.node(inner);
                result.not();
                result
            }
            Node::Leaf(condition) => self.condition(condition),
        }
    }

    /// Every unit of the given subjects.
    fn units_of(&self, subjects: &Bits) -> Bits {
        let mut units = Bits::zeros(self.units());
        for s in subjects.ones() {
            units.set_range(self.subject_start[s] as usize, self.subject_start[s + 1] as usize);
        }
        units
    }

    fn units_where(&self, test: impl Fn(usize) -> bool) -> Bits {
        let mut units = Bits::zeros(self.units());
        for u in 0..self.units() {
            if test(u) {
                units.set(u);
            }
        }
        units
    }

    fn subjects_from(&self, rows: impl Iterator<Item = u32>) -> Bits {
        let mut subjects = Bits::zeros(self.subjects());
        for s in rows {
            subjects.set(s as usize);
        }
        subjects
    }

    fn condition(&self, condition: &Condition) -> Bits {
        match condition {
            Condition::Cohort(slugs) => {
                let table = self.cohorts.matching(slugs);
                self.units_where(|u| hit(&table, self.unit_cohort[u]))
            }
            Condition::Site(codes) => {
                let table = self.sites.matching(codes);
                self.units_where(|u| hit(&table, self.subject_site[self.unit_subject[u] as usize]))
            }
            Condition::Sex(values) => {
                let table = self.sexes.matching(values);
                self.units_where(|u| hit(&table, self.subject_sex[self.unit_subject[u] as usize]))
            }
            Condition::SeriesCode(..) | Condition::SeriesRange(..) => {
                let test = self.series_test(condition);
                self.units_where(test)
            }
            Condition::ObservationRange { .. } | Condition::ObservationCode { .. } | Condition::Diagnosis { .. } => {
                let mut subjects = Bits::zeros(self.subjects());
                self.events(condition, |s, _| subjects.set(s as usize));
                self.units_of(&subjects)
            }
            Condition::Genotype { variant, alt_counts } => {
                let rows = self
                    .variants
                    .iter()
                    .filter(|v| matches_variant(v, variant))
                    .flat_map(|v| v.calls.iter())
                    .filter(|(_, n)| alt_counts.contains(n))
                    .map(|(s, _)| *s);
                let subjects = self.subjects_from(rows);
                self.units_of(&subjects)
            }
            Condition::Annotation { level, kinds, labels, roles } => {
                let a = &self.annotations;
                let levels = level.map(|l| a.levels.matching([l]));
                let (kinds, labels, roles) = (
                    (!kinds.is_empty()).then(|| a.kinds.matching(kinds)),
                    (!labels.is_empty()).then(|| a.codes.matching(labels)),
                    (!roles.is_empty()).then(|| a.roles.matching(roles)),
                );
                let pass = |table: &Option<Vec<bool>>, code: u32| table.as_ref().is_none_or(|t| hit(t, code));
                let rows = (0..a.subject.len())
                    .filter(|&i| {
                        pass(&levels, a.level[i])
                            && pass(&kinds, a.kind[i])
                            && pass(&labels, a.code[i])
                            && pass(&roles, a.role[i])
                    })
                    .map(|i| a.subject[i]);
                let subjects = self.subjects_from(rows);
                self.units_of(&subjects)
            }
            Condition::After { series, event, min_days, max_days } => {
                let mut units = self.units_where(self.series_test(series));
                let mut dated: Vec<(u32, i32)> = Vec::new();
                self.events(event, |s, day| {
                    if day != NO_DATE {
                        dated.push((s, day));
                    }
                });
                dated.sort_unstable();
                dated.dedup();
                let matched: Vec<usize> = units.ones().collect();
                for u in matched {
                    let day = self.study_day[u];
                    let subject = self.unit_subject[u];
                    let keep = day != NO_DATE && {
                        // An event on a day in [study - max, study - min].
                        let (low, high) =
                            (i64::from(day) - i64::from(*max_days), i64::from(day) - i64::from(*min_days));
                        let first = dated.partition_point(|&(s, d)| (s, i64::from(d)) < (subject, low));
                        dated.get(first).is_some_and(|&(s, d)| s == subject && i64::from(d) <= high)
                    };
                    if !keep {
                        units.clear(u);
                    }
                }
                units
            }
        }
    }

    /// The test of a series condition on a unit (false without a series or value).
    fn series_test(&self, condition: &Condition) -> Box<dyn Fn(usize) -> bool + Send + Sync + '_> {
        match condition {
            Condition::SeriesCode(column, values) => {
                let i = code_column(*column);
                let table = self.code_dicts[i].matching(values);
                let codes = &self.unit_codes[i];
                Box::new(move |u| hit(&table, codes[u]))
            }
            Condition::SeriesRange(column, min, max) => {
                let values = if *column == SeriesColumn::FieldStrength { &self.field_strength } else { &self.age };
                let (min, max) = (*min, *max);
                Box::new(move |u| in_range(values[u], min, max))
            }
            Condition::After { .. } => {
                let units = self.condition(condition);
                Box::new(move |u| units.get(u))
            }
            _ => Box::new(|_| false),
        }
    }

    /// Calls `found(subject, day)` for every diagnosis or observation row matching `condition`.
    fn events(&self, condition: &Condition, mut found: impl FnMut(u32, i32)) {
        match condition {
            Condition::ObservationRange { field, min, max } => {
                if let Some(o) = self.observations.get(field) {
                    for i in 0..o.subject.len() {
                        if in_range(o.value[i], *min, *max) {
                            found(o.subject[i], o.day[i]);
                        }
                    }
                }
            }
            Condition::ObservationCode { field, values } => {
                if let Some(o) = self.observations.get(field) {
                    let table = o.codes.matching(values);
                    for i in 0..o.subject.len() {
                        if hit(&table, o.code[i]) {
                            found(o.subject[i], o.day[i]);
                        }
                    }
                }
            }
            Condition::Diagnosis { system, codes, prefixes } => {
                let d = &self.diagnoses;
                let table: Vec<bool> = d
                    .codes
                    .values
                    .iter()
                    .map(|stored| {
                        let (s, code) = stored.split_once('\u{1f}').unwrap_or_default();
                        system.is_none_or(|system| system.as_str() == s)
                            && (codes.iter().any(|c| c.as_str() == code) || prefixes.iter().any(|p| p.matches(code)))
                    })
                    .collect();
                for i in 0..d.subject.len() {
                    if hit(&table, d.code[i]) {
                        found(d.subject[i], d.day[i]);
                    }
                }
            }
            _ => {}
        }
    }

    /// Subjects, studies, series and instances among `units`.
    fn totals(&self, units: &Bits) -> [i64; 4] {
        let (mut subjects, mut studies, mut series, mut instances) = (0i64, 0i64, 0i64, 0i64);
        let (mut last_subject, mut last_study) = (NONE, NONE);
        for u in units.ones() {
            let subject = self.unit_subject[u];
            if subject != last_subject {
                subjects += 1;
                last_subject = subject;
            }
            let study = self.unit_study[u];
            if study != NONE {
                series += 1;
                instances += i64::from(self.instances[u]);
                if study != last_study {
                    studies += 1;
                    last_study = study;
                }
            }
        }
        [subjects, studies, series, instances]
    }

    /// Counts of the units matching `node`.
    pub fn count(&self, node: Option<&Node>) -> [i64; 4] {
        self.totals(&self.evaluate(node))
    }

    /// Counts of the units matching `node`, with studies, series and
    /// instances only of the given modalities (subjects as matched).
    pub fn count_limited(&self, node: Option<&Node>, modalities: &[String]) -> [i64; 4] {
        let mut units = self.evaluate(node);
        let subjects = self.totals(&units)[0];
        let allowed = self.code_dicts[0].matching(modalities);
        for u in units.ones().collect::<Vec<_>>() {
            if !hit(&allowed, self.unit_codes[0][u]) {
                units.clear(u);
            }
        }
        let [_, studies, series, instances] = self.totals(&units);
        [subjects, studies, series, instances]
    }

    /// The label of every unit in a dimension, as codes into the returned labels.
    fn labels(&self, dimension: Dimension) -> (Vec<u32>, Vec<String>) {
        let mut labels = Dict::default();
        let unknown = labels.code(Some("unknown".into()));
        let mut by_dict =
            |dict: &Dict| -> Vec<u32> { dict.values.iter().map(|v| labels.code(Some(v.clone()))).collect() };
        let per_unit: Vec<u32> =
            match dimension {
                Dimension::Site => {
                    let map = by_dict(&self.sites);
                    self.unit_subject.iter().map(|s| lookup(&map, self.subject_site[*s as usize], unknown)).collect()
                }
                Dimension::Sex => {
                    let map = by_dict(&self.sexes);
                    self.unit_subject.iter().map(|s| lookup(&map, self.subject_sex[*s as usize], unknown)).collect()
                }
                Dimension::Cohort => {
                    let map = by_dict(&self.cohorts);
                    self.unit_cohort.iter().map(|c| lookup(&map, *c, unknown)).collect()
                }
                Dimension::FieldStrength => {
                    let map = by_dict(&self.field_strength_labels);
                    self.field_strength_label.iter().map(|c| lookup(&map, *c, unknown)).collect()
                }
                Dimension::Modality | Dimension::Manufacturer | Dimension::Model => {
                    let i = match dimension {
                        Dimension::Modality => 0,
                        Dimension::Manufacturer => 2,
                        _ => 3,
                    };
                    let map = by_dict(&self.code_dicts[i]);
                    self.unit_codes[i].iter().map(|c| lookup(&map, *c, unknown)).collect()
                }
                Dimension::AgeBand => {
                    let bands = ["0-17", "18-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80+"];
                    let codes: Vec<u32> = bands.iter().map(|b| labels.code(Some((*b).into()))).collect();
                    let limits = [18.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0];
                    self.age
                        .iter()
                        .map(|&age| {
                            if age.is_nan() { unknown } else { codes[limits.iter().take_while(|l| age >= **l).count()] }
                        })
                        .collect()
                }
            };
        (per_unit, labels.values)
    }

    /// Counts of the units matching `node` broken down by one or two dimensions,
    /// with the totals of each dimension and the grand total (`None` labels),
    /// as SQL's grouping sets give them: only cells with units, and the grand total always.
    pub fn breakdown(&self, node: Option<&Node>, by: &[Dimension]) -> Vec<(Vec<Option<String>>, [i64; 4])> {
        self.cells::<Cell>(node, by, false)
            .into_iter()
            .map(|(values, cell)| (values, [cell.subjects, cell.studies, cell.series, cell.instances]))
            .collect()
    }

    /// The cell of the units matching `node`, for protected counts: its
    /// subjects by threshold, with their record keys.
    pub fn tally(&self, node: Option<&Node>) -> Tally {
        let mut cell = Protected::default();
        for u in self.evaluate(node).ones() {
            cell.add(self, u);
        }
        cell.tally
    }

    /// A breakdown for protected counts: every label the registry holds in
    /// each dimension, empty cells included (an absent cell would tell zero
    /// from a few), with the totals of each dimension and the grand total.
    pub fn tallies(&self, node: Option<&Node>, by: &[Dimension]) -> Vec<(Vec<Option<String>>, Tally)> {
        self.cells::<Protected>(node, by, true).into_iter().map(|(values, cell)| (values, cell.tally)).collect()
    }

    fn cells<C: Accumulate>(&self, node: Option<&Node>, by: &[Dimension], all: bool) -> Vec<(Vec<Option<String>>, C)> {
        let mut units = self.evaluate(node);
        if by.iter().any(|d| d.on_series()) {
            // Series dimensions describe series: subjects without imaging do not fall into a cell.
            for u in units.ones().collect::<Vec<_>>() {
                if self.unit_study[u] == NONE {
                    units.clear(u);
                }
            }
        }
        let dims: Vec<(Vec<u32>, Vec<String>)> = by.iter().map(|d| self.labels(*d)).collect();
        // The labels the registry holds in each dimension (with `unknown` only where some unit has it).
        let series_only = by.iter().any(|d| d.on_series());
        let present: Vec<Vec<u32>> = dims
            .iter()
            .map(|(per_unit, labels)| {
                let mut seen = vec![false; labels.len()];
                for (u, code) in per_unit.iter().enumerate() {
                    if !series_only || self.unit_study[u] != NONE {
                        seen[*code as usize] = true;
                    }
                }
                (0..labels.len()).filter(|i| seen[*i]).map(index_of).collect()
            })
            .collect();
        let sets: Vec<Vec<usize>> =
            if by.len() == 2 { vec![vec![0, 1], vec![0], vec![1], vec![]] } else { vec![vec![0], vec![]] };
        let mut out = Vec::new();
        for set in sets {
            let mut cells: HashMap<Vec<u32>, C> = HashMap::new();
            let mut key = Vec::with_capacity(2);
            for u in units.ones() {
                key.clear();
                key.extend(set.iter().map(|d| dims[*d].0[u]));
                let cell = match cells.get_mut(&key) {
                    Some(cell) => cell,
                    None => cells.entry(key.clone()).or_default(),
                };
                cell.add(self, u);
            }
            if all {
                let mut keys: Vec<Vec<u32>> = vec![Vec::new()];
                for d in &set {
                    keys = keys
                        .into_iter()
                        .flat_map(|k| {
                            present[*d].iter().map(move |code| {
                                let mut k = k.clone();
                                k.push(*code);
                                k
                            })
                        })
                        .collect();
                }
                for k in keys {
                    cells.entry(k).or_default();
                }
            } else if set.is_empty() && cells.is_empty() {
                cells.insert(Vec::new(), C::default());
            }
            for (key, cell) in cells {
                let values = (0..by.len())
                    .map(|d| set.iter().position(|s| *s == d).map(|i| dims[d].1[key[i] as usize].clone()))
                    .collect();
                out.push((values, cell));
            }
        }
        out
    }
}

/// What a cell accumulates, unit by unit. Units arrive in (subject, study)
/// order, so a subject's or study's units in a cell are consecutive.
trait Accumulate: Default {
    fn add(&mut self, snapshot: &Snapshot, u: usize);
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    subjects: i64,
    studies: i64,
    series: i64,
    instances: i64,
    last_subject: u32,
    last_study: u32,
}

impl Default for Cell {
    fn default() -> Self {
        Self { subjects: 0, studies: 0, series: 0, instances: 0, last_subject: NONE, last_study: NONE }
    }
}

impl Accumulate for Cell {
    fn add(&mut self, snapshot: &Snapshot, u: usize) {
        let subject = snapshot.unit_subject[u];
        if subject != self.last_subject {
            self.subjects += 1;
            self.last_subject = subject;
        }
        let study = snapshot.unit_study[u];
        if study != NONE {
            self.series += 1;
            self.instances += i64::from(snapshot.instances[u]);
            if study != self.last_study {
                self.studies += 1;
                self.last_study = study;
            }
        }
    }
}

/// A cell for protected counts: counts by threshold, with record keys.
#[derive(Debug)]
struct Protected {
    tally: Tally,
    last_subject: u32,
    last_study: u32,
    threshold: i32,
}

impl Default for Protected {
    fn default() -> Self {
        Self { tally: Tally::default(), last_subject: NONE, last_study: NONE, threshold: 0 }
    }
}

impl Accumulate for Protected {
    fn add(&mut self, snapshot: &Snapshot, u: usize) {
        let subject = snapshot.unit_subject[u];
        if subject != self.last_subject {
            self.last_subject = subject;
            self.threshold = snapshot.subject_threshold[subject as usize];
            self.tally.subject(self.threshold, snapshot.subject_key[subject as usize]);
        }
        let study = snapshot.unit_study[u];
        if study != NONE {
            let part = self.tally.parts.get_mut(&self.threshold).expect("the subject's part was counted");
            part.counts[2] += 1;
            part.counts[3] += i64::from(snapshot.instances[u]);
            if study != self.last_study {
                part.counts[1] += 1;
                self.last_study = study;
            }
        }
    }
}

fn lookup(map: &[u32], code: u32, unknown: u32) -> u32 {
    if code == NONE { unknown } else { map[code as usize] }
}

fn code_column(column: SeriesColumn) -> usize {
    match column {
        SeriesColumn::Modality => 0,
        SeriesColumn::BodyPart => 1,
        SeriesColumn::Manufacturer => 2,
        _ => 3,
    }
}

fn matches_variant(v: &Variant, wanted: &VariantRef) -> bool {
    match wanted {
        VariantRef::Rsid(rsid) => v.rsid.as_deref() == Some(rsid.as_str()),
        VariantRef::Position(p) => {
            v.chrom == p.chrom() && v.pos == p.pos() && v.reference == p.reference() && v.alt == p.alt()
        }
    }
}

/// The index of a running service: the latest snapshot, rebuilt in the
/// background when a query finds it behind the database.
#[derive(Debug, Default)]
pub struct Index {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    building: Arc<tokio::sync::Mutex<()>>,
    disabled: bool,
}

impl Index {
    /// An index that never builds: every query goes to PostgreSQL.
    pub fn disabled() -> Self {
        Self { disabled: true, ..Self::default() }
    }

    /// The latest snapshot, current or not.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().expect("index lock").clone()
    }

    /// The snapshot if it is current. If it is not, a rebuild starts in the
    /// background and `None` sends this query to PostgreSQL.
    pub async fn current(self: &Arc<Self>, db: &PgPool) -> sqlx::Result<Option<Arc<Snapshot>>> {
        if self.disabled {
            return Ok(None);
        }
        let now = version(db).await?;
        if let Some(snapshot) = self.latest()
            && snapshot.version == now
        {
            return Ok(Some(snapshot));
        }
        // One background build at a time; queries meanwhile go to PostgreSQL.
        if let Ok(building) = self.building.clone().try_lock_owned() {
            let (index, db) = (self.clone(), db.clone());
            tokio::spawn(async move {
                if let Err(e) = index.build(&db, building).await
                    && !db.is_closed()
                {
                    tracing::warn!(error = %e, "the discovery index could not be rebuilt; PostgreSQL answers meanwhile");
                }
            });
        }
        Ok(None)
    }

    /// Brings the snapshot up to date now (waiting for a build under way) and returns it.
    pub async fn refresh(&self, db: &PgPool) -> sqlx::Result<Arc<Snapshot>> {
        let building = self.building.clone().lock_owned().await;
        self.build(db, building).await
    }

    async fn build(&self, db: &PgPool, _building: tokio::sync::OwnedMutexGuard<()>) -> sqlx::Result<Arc<Snapshot>> {
        let now = version(db).await?;
        if let Some(snapshot) = self.latest()
            && snapshot.version == now
        {
            return Ok(snapshot);
        }
        let snapshot = Arc::new(Snapshot::load(db).await?);
        tracing::info!(
            units = snapshot.units(),
            version = snapshot.version,
            seconds = snapshot.build_time.as_secs_f64(),
            "discovery index built"
        );
        *self.snapshot.write().expect("index lock") = Some(snapshot.clone());
        prune(db).await?;
        Ok(snapshot)
    }
}

/// Folds the change rows every running transaction already sees into the
/// pruned count, keeping the version the same and its query cheap.
async fn prune(db: &PgPool) -> sqlx::Result<()> {
    sqlx::query!(
        "with gone as (delete from discovery_change where xid < pg_snapshot_xmin(pg_current_snapshot()) returning 1)
         update discovery_change_pruned set pruned = pruned + (select count(*) from gone)",
    )
    .execute(db)
    .await?;
    Ok(())
}
