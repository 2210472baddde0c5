//! Secondary suppression of a breakdown table: no row or column, totals
//! included, has exactly one hidden cell. With perturbed counts a lone hidden
//! cell no longer follows exactly from its line, but hiding a partner keeps
//! one breakdown from being a differencing attack all by itself.

/// A cell of a breakdown table: its row and column labels (`None`: the total
/// over that dimension) and its subject count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub row: Option<String>,
    pub column: Option<String>,
    pub subjects: i64,
}

/// Which cells of a table to hide: the `primary` ones, and enough others
/// (secondary) that no row or column, totals included, has exactly one
/// hidden cell. The smallest visible `eligible` cell of such a line is hidden
/// with it; a line with none left keeps its lone hidden cell.
pub fn suppress(cells: &[Cell], primary: &[bool], eligible: &[bool]) -> Vec<bool> {
    let mut hidden: Vec<bool> = primary.to_vec();
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
            let pick = line.iter().copied().filter(|i| !hidden[*i] && eligible[*i]).min_by_key(|i| {
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
    use super::{Cell, suppress};

    fn small(cells: &[Cell]) -> Vec<bool> {
        cells.iter().map(|c| c.subjects < 10).collect()
    }

    fn cell(row: Option<&str>, column: Option<&str>, subjects: i64) -> Cell {
        Cell { row: row.map(Into::into), column: column.map(Into::into), subjects }
    }

    #[test]
    fn a_lone_hidden_cell_takes_the_smallest_visible_one_of_its_line_with_it() {
        // site breakdown with its total: 40 + 25 + 4 = 69
        let cells =
            [cell(Some("a"), None, 40), cell(Some("b"), None, 25), cell(Some("c"), None, 4), cell(None, None, 69)];
        assert_eq!(suppress(&cells, &small(&cells), &[true; 9][..cells.len()]), [false, true, true, false]);
        // nothing small: nothing hidden
        let cells = [cell(Some("a"), None, 40), cell(Some("b"), None, 25), cell(None, None, 65)];
        assert_eq!(suppress(&cells, &small(&cells), &[true; 9][..cells.len()]), [false, false, false]);
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
        let hidden = suppress(&cells, &small(&cells), &[true; 9][..cells.len()]);
        // (a, M) is primary; row a then needs (a, F); column M needs (b, M); column F and row b follow.
        assert_eq!(hidden, [true, true, true, true, false, false, false, false, false]);
        for line in [[0, 1, 4], [2, 3, 5], [0, 2, 6], [1, 3, 7]] {
            assert_ne!(line.iter().filter(|i| hidden[**i]).count(), 1, "line {line:?}");
        }
    }
}
