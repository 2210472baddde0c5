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
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let name = name.trim().trim_start_matches('\u{feff}').to_lowercase();
            if name.is_empty() {
                problems.add(Some(1), None, "invalid-header", "a column has no name");
            } else if !seen.insert(name.clone()) {
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

/// The delimiters a CSV file may use.
const DELIMITERS: [u8; 3] = [b',', b';', b'\t'];

/// The delimiter of a CSV file: a comma, or the semicolon or tab its first line uses instead.
fn delimiter(body: &[u8]) -> u8 {
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |d: u8| first.iter().copied().filter(|b| *b == d).map(|_| 1_usize).sum::<usize>();
    DELIMITERS[pick_delimiter(DELIMITERS.map(count))]
}

/// The index in [`DELIMITERS`] of the most frequent one, a comma on a tie.
fn pick_delimiter(counts: [usize; 3]) -> usize {
    (0..DELIMITERS.len()).max_by_key(|i| (counts[*i], *i == 0)).unwrap_or(0)
}

/// Why a text table is refused before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("line {line} is longer than the limit of {limit} bytes")]
    LineTooLong { line: u64, limit: usize },
    #[error("line {line} has more than the limit of {limit} columns")]
    TooManyColumns { line: u64, limit: usize },
}

impl ShapeError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::LineTooLong { .. } => "line-too-long",
            Self::TooManyColumns { .. } => "too-many-columns",
        }
    }

    /// The line it names.
    pub fn line(&self) -> u64 {
        match self {
            Self::LineTooLong { line, .. } | Self::TooManyColumns { line, .. } => *line,
        }
    }
}

/// Checks the lines of a CSV, TSV or VCF body against a length and a column
/// limit as its bytes arrive, so a hostile line is refused once it passes the
/// limit, never held whole. A line is a record: a newline inside a quoted CSV
/// cell does not end it.
#[derive(Debug, Clone)]
pub struct ShapeGuard {
    max_line: usize,
    max_columns: usize,
    /// CSV quoting; a VCF has none.
    quotes: bool,
    /// Index into [`DELIMITERS`]; found from the first line of a CSV.
    delimiter: Option<usize>,
    /// Delimiters outside quotes on the current record, per candidate.
    counts: [usize; 3],
    record_bytes: usize,
    /// Physical line of the current byte, and of the current record's start (from 1).
    line: u64,
    record_line: u64,
    quoted: bool,
}

impl ShapeGuard {
    /// A guard for a CSV or TSV body (delimiter found from its first line).
    pub fn csv(max_line: usize, max_columns: usize) -> Self {
        Self::new(max_line, max_columns, true, None)
    }

    /// A guard for a VCF body (tab-separated, no quoting).
    pub fn vcf(max_line: usize, max_columns: usize) -> Self {
        Self::new(max_line, max_columns, false, Some(2))
    }

    fn new(max_line: usize, max_columns: usize, quotes: bool, delimiter: Option<usize>) -> Self {
        Self {
            max_line,
            max_columns,
            quotes,
            delimiter,
            counts: [0; 3],
            record_bytes: 0,
            line: 1,
            record_line: 1,
            quoted: false,
        }
    }

    /// Checks the next bytes of the body.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ShapeError> {
        for &byte in bytes {
            if self.quotes && byte == b'"' {
                self.quoted = !self.quoted; // an escaped `""` toggles twice
            }
            if byte == b'\n' {
                self.line += 1;
                if !self.quoted {
                    self.delimiter.get_or_insert_with(|| pick_delimiter(self.counts));
                    (self.counts, self.record_bytes, self.record_line) = ([0; 3], 0, self.line);
                    continue;
                }
            }
            self.record_bytes += 1;
            if self.record_bytes > self.max_line {
                return Err(ShapeError::LineTooLong { line: self.record_line, limit: self.max_line });
            }
            if self.quoted {
                continue;
            }
            if let Some(at) = DELIMITERS.iter().position(|d| *d == byte) {
                self.counts[at] += 1;
                // Before the delimiter is known, any candidate may be it.
                let delimiters = self.delimiter.map_or_else(|| self.counts[at], |d| self.counts[d]);
                if delimiters >= self.max_columns {
                    return Err(ShapeError::TooManyColumns { line: self.record_line, limit: self.max_columns });
                }
            }
        }
        Ok(())
    }
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

    fn shape(mut guard: ShapeGuard, chunks: &[&str]) -> Result<(), ShapeError> {
        chunks.iter().try_for_each(|chunk| guard.feed(chunk.as_bytes()))
    }

    #[test]
    fn lines_and_columns_beyond_their_limits_are_refused_as_they_arrive() {
        assert_eq!(shape(ShapeGuard::csv(10, 3), &["a,b,c\n1,2", ",3\n"]), Ok(()));
        assert_eq!(
            shape(ShapeGuard::csv(10, 3), &["a,b,c\n1,2", ",3", "456789\n"]),
            Err(ShapeError::LineTooLong { line: 2, limit: 10 })
        );
        assert_eq!(
            shape(ShapeGuard::csv(100, 3), &["a;b;c;d\n"]),
            Err(ShapeError::TooManyColumns { line: 1, limit: 3 })
        );
        // Once the first line chose the semicolon, commas are text.
        assert_eq!(shape(ShapeGuard::csv(100, 3), &["a;b;c\n1,5;2,5;3,5\n"]), Ok(()));
        // Quoted delimiters and newlines belong to their cell; the record goes on.
        assert_eq!(shape(ShapeGuard::csv(100, 2), &["a,b\n\"x,\ny\",1\n"]), Ok(()));
        assert_eq!(
            shape(ShapeGuard::csv(8, 2), &["a,b\n\"x\n", "yyyyyy\",1\n"]),
            Err(ShapeError::LineTooLong { line: 2, limit: 8 })
        );
        assert_eq!(
            shape(ShapeGuard::vcf(100, 10), &["##x=\"a\n#CHROM\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\n"]),
            Err(ShapeError::TooManyColumns { line: 2, limit: 10 })
        );
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
