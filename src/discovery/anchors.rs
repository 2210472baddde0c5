//! Anchors: every cell answered under protection, shown or suppressed,
//! remembered by the number of its subjects, a sketch of their record keys
//! and the answer it got. A later cell whose subjects differ from an
//! anchor's by fewer than the threshold (or not at all) gets the nearest such
//! anchor's answer, whoever asks and however the criteria are written, and
//! is remembered in turn. So adding a few people to a set or taking them
//! away, by any route, changes nothing: not the perturbed counts (which would
//! otherwise differ by the few), and not whether the cell is suppressed (a
//! pad of nine people is suppressed whether or not a target's one person
//! joins it). A cell with fewer subjects than its threshold is suppressed
//! whatever it is near. Cells are matched and anchors written under one lock,
//! in the transaction that records the query.
//!
//! The price: answers near an earlier one are that one's, so a count can be
//! off by up to the threshold (plus the perturbation) from its own set, and
//! many small steps in one direction keep one answer; see docs/privacy.md.

use sqlx::PgConnection;

use super::disclosure;
use super::protect::{MAX_THRESHOLD, Part, Perturbation, Sketch, Tally, publish};
use crate::error::ApiError;

/// A cell about to be answered.
#[derive(Debug)]
pub struct Cell {
    /// All its subjects, whatever their threshold.
    subjects: i64,
    sketch: Sketch,
    /// The strictest threshold among them (0: none).
    threshold: i32,
    /// What may be counted: the parts that reach their threshold.
    kept: Option<(Part, i32)>,
}

impl From<&Tally> for Cell {
    fn from(tally: &Tally) -> Self {
        let (subjects, sketch, threshold) = tally.whole();
        Self { subjects, sketch, threshold, kept: tally.kept() }
    }
}

/// Where a cell's answer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An anchor stored before this request: public already, never changed.
    Stored,
    /// Its own answer, stored as a new anchor.
    Own,
    /// The answer of an earlier cell of this request.
    Follows(usize),
}

struct Anchor {
    subjects: i64,
    threshold: i32,
    sketch: Sketch,
    published: Option<[i64; 4]>,
}

/// How a cell was answered.
struct Resolved {
    source: Source,
    answer: Option<[i64; 4]>,
    /// How many subjects it differs by from the cell it follows.
    distance: usize,
}

fn near(a: (i64, i32, &Sketch), b: (i64, i32, &Sketch)) -> Option<usize> {
    // The stricter of the two thresholds decides what is near.
    let reach = i64::from(a.1.max(b.1).max(1));
    if (a.0 - b.0).abs() >= reach {
        return None;
    }
    a.2.distance(b.2, usize::try_from(reach - 1).unwrap_or(0))
}

/// The answers of `cells` in order (`None`: suppressed). `lines`, for a
/// breakdown, lays the cells out as a table for secondary suppression, which
/// may hide cells answered here for the first time but never one already public.
pub async fn answer(
    tx: &mut PgConnection,
    table: &Perturbation,
    cells: &[Cell],
    lines: Option<&[disclosure::Cell]>,
) -> Result<Vec<Option<[i64; 4]>>, ApiError> {
    sqlx::query!("select pg_advisory_xact_lock(hashtextextended('discovery-anchors', 0))").execute(&mut *tx).await?;
    let stored = load(tx, cells).await?;
    let resolved = resolve(table, cells, &stored);
    let sources: Vec<Source> = resolved.iter().map(|r| r.source).collect();
    let mut answers: Vec<Option<[i64; 4]>> = resolved.iter().map(|r| r.answer).collect();
    if let Some(lines) = lines {
        secondary(lines, &sources, &mut answers);
    }
    store(tx, cells, &resolved, &answers).await?;
    Ok(answers)
}

/// The stored anchors that may be near one of `cells`.
async fn load(tx: &mut PgConnection, cells: &[Cell]) -> Result<Vec<Anchor>, ApiError> {
    // Any anchor's threshold may be the stricter one: look as far as the largest allowed.
    let reach = i64::from(MAX_THRESHOLD) - 1;
    let low: Vec<i64> = cells.iter().map(|c| c.subjects - reach).collect();
    let high: Vec<i64> = cells.iter().map(|c| c.subjects + reach).collect();
    let rows = sqlx::query!(
        "select subjects, threshold, sketch, published from discovery_anchor a
         where exists (select 1 from unnest($1::bigint[], $2::bigint[]) r(lo, hi) where a.subjects between r.lo and r.hi)
         order by discovery_anchor_id",
        &low,
        &high
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in rows {
        // Fail closed: an anchor that cannot be read stops the answer rather than being skipped.
        let unreadable = || ApiError::Internal(anyhow::anyhow!("a discovery anchor cannot be read"));
        let sketch = Sketch::from_bytes(&row.sketch).ok_or_else(unreadable)?;
        let published = match row.published {
            Some(p) => Some(<[i64; 4]>::try_from(p).map_err(|_| unreadable())?),
            None => None,
        };
        stored.push(Anchor { subjects: row.subjects, threshold: row.threshold, sketch, published });
    }
    Ok(stored)
}

/// Each cell's answer. A cell none of whose subjects may be counted (no
/// cohort part reaches its threshold) is suppressed, always. Any other takes
/// the answer of the nearest anchor or earlier cell of this request within
/// reach (the oldest of equals), else its own. Either way a cell that differs
/// from what it follows is written as an anchor of that answer too, so asking
/// the same set again always finds itself at distance 0, and a few subjects
/// more or less than it find it nearer than anything else: a pad and the pad
/// with a target's few people in it are answered alike, shown or suppressed.
fn resolve(table: &Perturbation, cells: &[Cell], stored: &[Anchor]) -> Vec<Resolved> {
    let mut out: Vec<Resolved> = Vec::with_capacity(cells.len());
    for (i, cell) in cells.iter().enumerate() {
        let me = (cell.subjects, cell.threshold, &cell.sketch);
        let mut found: Option<Resolved> = None;
        let mut consider = |source: Source, answer: Option<[i64; 4]>, distance: Option<usize>| {
            if let Some(distance) = distance
                && found.as_ref().is_none_or(|f| distance < f.distance)
            {
                found = Some(Resolved { source, answer, distance });
            }
        };
        for a in stored {
            consider(Source::Stored, a.published, near((a.subjects, a.threshold, &a.sketch), me));
        }
        for j in (0..i).filter(|j| out[*j].source == Source::Own) {
            let other = &cells[j];
            consider(Source::Follows(j), out[j].answer, near((other.subjects, other.threshold, &other.sketch), me));
        }
        let mut resolved = found.unwrap_or_else(|| Resolved {
            source: Source::Own,
            answer: cell.kept.as_ref().map(|(part, t)| publish(table, part, *t)),
            distance: 0,
        });
        if cell.kept.is_none() {
            resolved.answer = None;
        }
        out.push(resolved);
    }
    out
}

/// Secondary suppression, repeated until every cell hidden also hides the cells that share its answer.
fn secondary(lines: &[disclosure::Cell], sources: &[Source], answers: &mut [Option<[i64; 4]>]) {
    let eligible: Vec<bool> = sources.iter().map(|s| *s != Source::Stored).collect();
    loop {
        let primary: Vec<bool> = answers.iter().map(Option::is_none).collect();
        let hidden = disclosure::suppress(lines, &primary, &eligible);
        let mut changed = false;
        for (i, source) in sources.iter().enumerate() {
            let root = match source {
                Source::Follows(j) => *j,
                Source::Own => i,
                Source::Stored => continue,
            };
            if hidden[i] && answers[root].is_some() {
                answers[root] = None;
                changed = true;
            }
        }
        for (i, source) in sources.iter().enumerate() {
            if let Source::Follows(j) = source
                && answers[i] != answers[*j]
            {
                answers[i] = answers[*j];
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// Writes the cells that answered for themselves as new anchors, and those
/// that followed another at some distance as anchors of the answer they got.
async fn store(
    tx: &mut PgConnection,
    cells: &[Cell],
    resolved: &[Resolved],
    answers: &[Option<[i64; 4]>],
) -> Result<(), ApiError> {
    let new: Vec<usize> =
        (0..cells.len()).filter(|i| resolved[*i].source == Source::Own || resolved[*i].distance > 0).collect();
    if new.is_empty() {
        return Ok(());
    }
    let column = |k: usize| new.iter().map(|i| answers[*i].map(|a| a[k])).collect::<Vec<Option<i64>>>();
    sqlx::query!(
        "insert into discovery_anchor (subjects, threshold, sketch, published)
         select s, t, k, case when a is null then null else array[a, b, c, d] end
         from unnest($1::bigint[], $2::int[], $3::bytea[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
              as u(s, t, k, a, b, c, d)",
        &new.iter().map(|i| cells[*i].subjects).collect::<Vec<_>>(),
        &new.iter().map(|i| cells[*i].threshold).collect::<Vec<_>>(),
        &new.iter().map(|i| cells[*i].sketch.to_bytes()).collect::<Vec<_>>(),
        &column(0) as &[Option<i64>],
        &column(1) as &[Option<i64>],
        &column(2) as &[Option<i64>],
        &column(3) as &[Option<i64>],
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
