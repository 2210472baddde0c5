//! Disclosure control of a single count: cells below a cohort's threshold are
//! suppressed, the others rounded to a base, so a published count neither
//! singles out a few people nor reveals exact differences between queries.

/// A count as it may be shown: `None` when suppressed.
pub fn disclose(count: i64, threshold: i64, rounding: i64) -> Option<i64> {
    if count < threshold.max(1) {
        return None;
    }
    let base = rounding.max(1);
    // Round half up to the base; never below the threshold, which would invite a guess.
    let rounded = (count + base / 2) / base * base;
    Some(rounded.max(threshold))
}

/// A cell of a breakdown table: its row and column labels (`None`: the total
/// over that dimension) and its subject count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub row: Option<String>,
    pub column: Option<String>,
    pub subjects: i64,
}

/// Which cells of a table to hide: those below `threshold` (primary), and
/// enough others (secondary) that no row or column, totals included, has
/// exactly one hidden cell, which its total and the visible cells would give
/// away. The smallest visible cell of such a line is hidden with it.
pub fn suppress(cells: &[Cell], threshold: i64) -> Vec<bool> {
    let mut hidden: Vec<bool> = cells.iter().map(|c| c.subjects < threshold).collect();
    let mut lines: Vec<Vec<usize>> = Vec::new();
    for by_row in [true, false] {
        let mut keys: Vec<&Option<String>> = cells.iter().map(|c| if by_row { &c.row } else { &c.column }).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let line: Vec<usize> =
                (0..cells.len()).filter(|i| (if by_row { &cells[*i].row } else { &cells[*i].column }) == key).collect();
            if line.len() > 1 {
                lines.push(line);
            }
        }
    }
    loop {
        let mut changed = false;
        for line in &lines {
            if line.iter().filter(|i| hidden[**i]).count() != 1 {
                continue;
            }
            // Prefer the smallest visible inner cell; the line's total only when nothing else is left.
            let is_total = |i: usize| cells[i].row.is_none() || cells[i].column.is_none();
            let pick = line.iter().copied().filter(|i| !hidden[*i]).min_by_key(|i| {
                (is_total(*i) && line.iter().any(|j| !hidden[*j] && !is_total(*j)), cells[*i].subjects)
            });
            if let Some(i) = pick {
                hidden[i] = true;
                changed = true;
            }
        }
        if !changed {
            return hidden;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cell, disclose, suppress};

    fn cell(row: Option<&str>, column: Option<&str>, subjects: i64) -> Cell {
        Cell { row: row.map(Into::into), column: column.map(Into::into), subjects }
    }

    #[test]
    fn a_lone_hidden_cell_takes_the_smallest_visible_one_of_its_line_with_it() {
        // site breakdown with its total: 40 + 25 + 4 = 69
        let cells =
            [cell(Some("a"), None, 40), cell(Some("b"), None, 25), cell(Some("c"), None, 4), cell(None, None, 69)];
        assert_eq!(suppress(&cells, 10), [false, true, true, false]);
        // nothing small: nothing hidden
        let cells = [cell(Some("a"), None, 40), cell(Some("b"), None, 25), cell(None, None, 65)];
        assert_eq!(suppress(&cells, 10), [false, false, false]);
    }

    #[test]
    fn two_way_tables_are_protected_along_rows_and_columns() {
        // rows: sites a, b; columns: sex F, M; with margins.
        let cells = [
            cell(Some("a"), Some("F"), 30),
            cell(Some("a"), Some("M"), 3),
            cell(Some("b"), Some("F"), 20),
            cell(Some("b"), Some("M"), 25),
            cell(Some("a"), None, 33),
            cell(Some("b"), None, 45),
            cell(None, Some("F"), 50),
            cell(None, Some("M"), 28),
            cell(None, None, 78),
        ];
        let hidden = suppress(&cells, 10);
        // (a, M) is primary; row a then needs (a, F); column M needs (b, M); column F and row b follow.
        assert_eq!(hidden, [true, true, true, true, false, false, false, false, false]);
        for line in [[0, 1, 4], [2, 3, 5], [0, 2, 6], [1, 3, 7]] {
            assert_ne!(line.iter().filter(|i| hidden[**i]).count(), 1, "line {line:?}");
        }
    }

    #[test]
    fn small_cells_are_suppressed_and_others_rounded() {
        assert_eq!(disclose(0, 10, 5), None);
        assert_eq!(disclose(9, 10, 5), None);
        assert_eq!(disclose(10, 10, 5), Some(10));
        assert_eq!(disclose(12, 10, 5), Some(10));
        assert_eq!(disclose(13, 10, 5), Some(15));
        assert_eq!(disclose(11, 12, 5), None);
        assert_eq!(disclose(12, 12, 5), Some(12), "a rounded value never drops below the threshold");
        assert_eq!(disclose(1234, 10, 1), Some(1234));
    }
}
