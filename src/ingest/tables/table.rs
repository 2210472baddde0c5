//! Reading a CSV file or a JSON array of flat objects as rows of named cells,
//! one row at a time, so a two-million-row lab export is never held twice.

use super::Problems;

/// Column names of a table, trimmed and lowercased.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub columns: Vec<String>,
}

impl Header {
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    fn new(names: impl Iterator<Item = String>, problems: &mut Problems) -> Self {
        let mut columns: Vec<String> = Vec::new();
        for name in names {
            let name = name.trim().trim_start_matches('\u{feff}').to_lowercase();
            if name.is_empty() {
                problems.add(Some(1), None, "invalid-header", "a column has no name");
            } else if columns.contains(&name) {
                problems.add(Some(1), Some(&name), "invalid-header", "the column appears twice");
            }
            columns.push(name);
        }
        Self { columns }
    }
}

/// The body formats a table arrives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
        }
    }
}

/// Calls `each(header, row, cells, problems)` for every data row; cells are
/// aligned with the header and `None` when empty. Returns the header, or
/// `None` (with problems) when the body is not a readable table.
pub fn read(
    format: Format,
    body: &[u8],
    problems: &mut Problems,
    each: impl FnMut(&Header, u64, &[Option<&str>], &mut Problems),
) -> Option<Header> {
    match format {
        Format::Csv => read_csv(body, problems, each),
        Format::Json => read_json(body, problems, each),
    }
}

/// The delimiter of a CSV file: a comma, or the semicolon or tab its first line uses instead.
fn delimiter(body: &[u8]) -> u8 {
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |d: u8| first.iter().copied().filter(|b| *b == d).map(|_| 1_usize).sum::<usize>();
    [b',', b';', b'\t'].into_iter().max_by_key(|d| (count(*d), *d == b',')).unwrap_or(b',')
}

fn read_csv(
    body: &[u8],
    problems: &mut Problems,
    mut each: impl FnMut(&Header, u64, &[Option<&str>], &mut Problems),
) -> Option<Header> {
    let mut reader =
        csv::ReaderBuilder::new().delimiter(delimiter(body)).flexible(false).trim(csv::Trim::All).from_reader(body);
    let Ok(names) = reader.headers() else {
        problems.add(Some(1), None, "invalid-csv", "the header line is not valid UTF-8 CSV");
        return None;
    };
    let header = Header::new(names.iter().map(str::to_owned), problems);
    if header.columns.is_empty() {
        problems.add(None, None, "empty-table", "the file has no header line");
        return None;
    }
    let mut record = csv::StringRecord::new();
    // Line numbers from byte offsets: the reader's own count skips blank lines.
    let (mut counted_to, mut line) = (0_usize, 1_u64);
    let mut line_at = |byte: u64| {
        let mut byte = usize::try_from(byte).unwrap_or(usize::MAX).min(body.len());
        // A record's position may point at the blank lines skipped before it.
        while byte < body.len() && matches!(body[byte], b'\n' | b'\r') {
            byte += 1;
        }
        if byte > counted_to {
            line += body[counted_to..byte].iter().copied().filter(|b| *b == b'\n').map(|_| 1_u64).sum::<u64>();
            counted_to = byte;
        }
        line
    };
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| line_at(p.byte()));
                if record.len() == 1 && record.get(0) == Some("") {
                    continue; // a blank line
                }
                let cells: Vec<Option<&str>> = record.iter().map(|f| (!f.is_empty()).then_some(f)).collect();
                each(&header, line, &cells, problems);
            }
            Err(e) => {
                let line = e.position().map(|p| line_at(p.byte()));
                match e.kind() {
                    csv::ErrorKind::UnequalLengths { len, .. } => problems.add(
                        line,
                        None,
                        "invalid-row",
                        format!("the row has {len} fields where the header has {}", header.columns.len()),
                    ),
                    csv::ErrorKind::Utf8 { .. } => {
                        problems.add(line, None, "invalid-row", "the row is not valid UTF-8");
                    }
                    _ => {
                        problems.add(line, None, "invalid-csv", "the file could not be read as CSV");
                        return Some(header);
                    }
                }
            }
        }
    }
    Some(header)
}

fn read_json(
    body: &[u8],
    problems: &mut Problems,
    mut each: impl FnMut(&Header, u64, &[Option<&str>], &mut Problems),
) -> Option<Header> {
    let Ok(serde_json::Value::Array(rows)) = serde_json::from_slice::<serde_json::Value>(body) else {
        problems.add(None, None, "invalid-json", "the body must be a JSON array of objects, one per row");
        return None;
    };
    let mut names: Vec<String> = Vec::new();
    for row in &rows {
        if let serde_json::Value::Object(object) = row {
            for key in object.keys() {
                let key = key.trim().to_lowercase();
                if !names.contains(&key) {
                    names.push(key);
                }
            }
        }
    }
    let header = Header::new(names.into_iter(), problems);
    let mut texts: Vec<Option<String>> = vec![None; header.columns.len()];
    for (i, row) in rows.iter().enumerate() {
        let number = i as u64 + 1;
        let serde_json::Value::Object(object) = row else {
            problems.add(Some(number), None, "invalid-row", "the row is not a JSON object");
            continue;
        };
        texts.fill(None);
        let mut usable = true;
        for (key, value) in object {
            let Some(at) = header.index(&key.trim().to_lowercase()) else { continue };
            texts[at] = match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    problems.at(
                        number,
                        key,
                        "invalid-value",
                        "nested values are not supported: use one key per column",
                    );
                    usable = false;
                    None
                }
            };
        }
        if usable {
            let cells: Vec<Option<&str>> = texts.iter().map(Option::as_deref).collect();
            each(&header, number, &cells, problems);
        }
    }
    Some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rows = Vec<(u64, Vec<Option<String>>)>;

    fn collect(format: Format, body: &str) -> (Vec<String>, Rows, Vec<super::super::Problem>) {
        let mut problems = Problems::default();
        let mut rows = Vec::new();
        let header = read(format, body.as_bytes(), &mut problems, |_, n, cells, _| {
            rows.push((n, cells.iter().map(|c| c.map(str::to_owned)).collect()));
        });
        (header.map(|h| h.columns).unwrap_or_default(), rows, problems.into_list())
    }

    #[test]
    fn csv_rows_carry_their_line_numbers_and_empty_cells_are_none() {
        let (header, rows, problems) = collect(Format::Csv, "Patient_ID, Sex ,height[cm]\np1,F,\n\np2,M,180\n");
        assert_eq!(header, ["patient_id", "sex", "height[cm]"]);
        assert!(problems.is_empty());
        assert_eq!(rows[0], (2, vec![Some("p1".into()), Some("F".into()), None]));
        assert_eq!(rows[1].0, 4);
    }

    #[test]
    fn semicolon_and_tab_separated_files_are_recognised() {
        assert_eq!(collect(Format::Csv, "a;b\n1;2\n").1[0].1, vec![Some("1".into()), Some("2".into())]);
        assert_eq!(collect(Format::Csv, "a\tb\n1\t2\n").1[0].1, vec![Some("1".into()), Some("2".into())]);
    }

    #[test]
    fn ragged_rows_and_duplicate_columns_are_problems() {
        let (_, rows, problems) = collect(Format::Csv, "a,b,a\n1,2,3\n1,2\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(problems[0].code, "invalid-header");
        assert_eq!(problems[1].row, Some(3));
        assert_eq!(problems[1].message, "the row has 2 fields where the header has 3");
    }

    #[test]
    fn json_arrays_of_flat_objects_read_like_csv() {
        let (header, rows, problems) = collect(
            Format::Json,
            r#"[{"patient_id":"p1","height[cm]":180.5},{"patient_id":"p2","sex":null},{"x":[1]},3]"#,
        );
        assert_eq!(header, ["height[cm]", "patient_id", "sex", "x"], "JSON keys come sorted");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1[0].as_deref(), Some("180.5"));
        assert_eq!(
            problems.iter().map(|p| (p.row, p.code)).collect::<Vec<_>>(),
            [(Some(3), "invalid-value"), (Some(4), "invalid-row")]
        );
        assert_eq!(collect(Format::Json, r#"{"a":1}"#).2[0].code, "invalid-json");
    }
}
