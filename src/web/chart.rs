//! Bar charts drawn on the server as SVG, each with a data table beside it.
//!
//! One chart per breakdown (site, scanner, sex, age band): a group of bars per
//! value, one bar per split, every bar labelled in text with its split and
//! count, so nothing is told by colour alone. A suppressed cell draws no bar
//! and says "suppressed".

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::opencohort::publish::VersionBreakdownCell;

/// One breakdown, drawn and tabulated.
pub struct Chart {
    /// `site`, `scanner`, `sex` or `age_band`.
    pub id: String,
    pub title: &'static str,
    /// Markup built here, every text escaped.
    pub svg: String,
    pub splits: Vec<String>,
    /// Per value: its label and one cell per split (a count, `suppressed` or `0`).
    pub rows: Vec<(String, Vec<String>)>,
}

const DIMENSIONS: [(&str, &str); 4] = [
    ("site", "By site"),
    ("scanner", "By scanner"),
    ("sex", "By sex"),
    ("age_band", "By age band (years, at the first study)"),
];

const WIDTH: u32 = 720;
const LABEL_WIDTH: u32 = 300;
/// Longer labels are cut in the chart (the table beside it has them whole).
const LABEL_CHARS: usize = 40;
const BAR_SPACE: u32 = 340;
const BAR: u32 = 16;
const GAP: u32 = 10;

/// The charts of a version's breakdown cells, in a fixed order of dimensions.
pub fn breakdowns(cells: &[VersionBreakdownCell]) -> Vec<Chart> {
    DIMENSIONS
        .iter()
        .filter_map(|(id, title)| {
            let of: Vec<&VersionBreakdownCell> = cells.iter().filter(|c| c.by == *id).collect();
            (!of.is_empty()).then(|| chart(id, title, &of, ("suppressed (too few to show)", "suppressed")))
        })
        .collect()
}

/// One chart of any breakdown's cells; a suppressed cell is described by
/// `suppressed`, in the chart and in the table alike.
pub fn one(id: &str, title: &'static str, cells: &[VersionBreakdownCell], suppressed: &str) -> Chart {
    let of: Vec<&VersionBreakdownCell> = cells.iter().collect();
    chart(id, title, &of, (suppressed, suppressed))
}

/// One chart of any counts shaped as cells: a group of bars per value, one
/// bar per series (the cells' `split`); `by` is not read.
pub fn bars(id: &str, title: &'static str, cells: &[VersionBreakdownCell]) -> Chart {
    chart(id, title, &cells.iter().collect::<Vec<_>>(), ("suppressed (too few to show)", "suppressed"))
}

fn label(value: Option<&str>) -> String {
    value.map_or_else(|| "not recorded".to_owned(), str::to_owned)
}

/// `suppressed`: the words of a suppressed cell in the chart and in the table.
fn chart(id: &str, title: &'static str, cells: &[&VersionBreakdownCell], suppressed: (&str, &str)) -> Chart {
    let splits: Vec<String> = cells.iter().map(|c| c.split.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let values: Vec<Option<String>> =
        cells.iter().map(|c| c.value.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let find = |value: &Option<String>, split: &str| cells.iter().find(|c| &c.value == value && c.split == split);
    let max = cells.iter().filter_map(|c| c.subjects).max().unwrap_or(1).max(1);
    let rows_per_group = u32::try_from(splits.len()).unwrap_or(1);
    let groups = u32::try_from(values.len()).unwrap_or(0);
    let height = groups * (rows_per_group * BAR + GAP) + GAP;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="chart-{id}-title" focusable="false"><title id="chart-{id}-title">{} (the table below gives the same numbers)</title>"#,
        escape(title)
    );
    let mut rows = Vec::with_capacity(values.len());
    for (g, value) in values.iter().enumerate() {
        let top = GAP + u32::try_from(g).unwrap_or(0) * (rows_per_group * BAR + GAP);
        let mut row = Vec::with_capacity(splits.len());
        for (s, split) in splits.iter().enumerate() {
            let y = top + u32::try_from(s).unwrap_or(0) * BAR;
            let cell = find(value, split);
            let text_y = y + BAR - 4;
            let name = format!("{} · {split}", shortened(&label(value.as_deref())));
            let _ = write!(
                svg,
                r#"<text class="chart-label" x="{}" y="{text_y}" text-anchor="end">{}</text>"#,
                LABEL_WIDTH - 8,
                escape(&name)
            );
            match cell {
                Some(c) if c.suppressed => {
                    let _ = write!(
                        svg,
                        r#"<text class="chart-suppressed" x="{LABEL_WIDTH}" y="{text_y}">{}</text>"#,
                        escape(suppressed.0)
                    );
                    row.push(suppressed.1.to_owned());
                }
                _ => {
                    // A value without subjects in a split has no cell: zero, drawn as no bar.
                    let n = cell.and_then(|c| c.subjects).unwrap_or(0);
                    let width = u32::try_from(n.saturating_mul(i64::from(BAR_SPACE)) / max).unwrap_or(0);
                    if width > 0 {
                        let _ = write!(
                            svg,
                            r#"<rect class="bar bar-{}" x="{LABEL_WIDTH}" y="{}" width="{width}" height="{}"/>"#,
                            split_class(split),
                            y + 2,
                            BAR - 4,
                        );
                    }
                    let _ = write!(
                        svg,
                        r#"<text class="chart-value" x="{}" y="{text_y}">{n}</text>"#,
                        LABEL_WIDTH + width + 6
                    );
                    row.push(n.to_string());
                }
            }
        }
        rows.push((label(value.as_deref()), row));
    }
    svg.push_str("</svg>");
    Chart { id: id.to_owned(), title, svg, splits, rows }
}

fn shortened(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A CSS class suffix for a split: the known ones, else `other`.
fn split_class(split: &str) -> &'static str {
    match split {
        "train" => "train",
        "validation" => "validation",
        "test" => "test",
        _ => "other",
    }
}

/// Escapes text for SVG/HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(by: &str, value: Option<&str>, split: &str, subjects: Option<i64>) -> VersionBreakdownCell {
        VersionBreakdownCell {
            by: by.to_owned(),
            value: value.map(str::to_owned),
            split: split.to_owned(),
            subjects,
            suppressed: subjects.is_none(),
        }
    }

    #[test]
    fn every_bar_is_labelled_in_text_suppressed_cells_say_so_and_labels_are_escaped() {
        let cells = [
            cell("site", Some("<a&b>"), "train", Some(40)),
            cell("site", Some("<a&b>"), "test", None),
            cell("sex", None, "train", Some(20)),
        ];
        let charts = breakdowns(&cells);
        assert_eq!(charts.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["site", "sex"]);
        let site = &charts[0];
        assert!(site.svg.contains("&lt;a&amp;b&gt; · train") && !site.svg.contains("<a&b>"), "{}", site.svg);
        assert!(site.svg.contains(">40</text>") && site.svg.contains("suppressed"), "{}", site.svg);
        assert_eq!(site.rows, [("<a&b>".to_owned(), vec!["suppressed".to_owned(), "40".to_owned()])]);
        assert_eq!(charts[1].rows[0].0, "not recorded");
    }
}
