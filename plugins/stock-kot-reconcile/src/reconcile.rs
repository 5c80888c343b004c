//! The reconciliation itself, independent of the host: find the required
//! columns, validate each row, flag rows whose |variance| exceeds the
//! threshold, and keep only bounded summaries (never all rows).

use crate::csv::{MAX_RECORD_BYTES, Reader, Record};
use std::io::BufRead;

/// Columns the report must have, as the spec names them.
pub const REQUIRED: [&str; 4] = ["item", "sold_qty", "KOT_cnt", "variance"];
/// How often (in data rows) the observer hears of progress.
pub const PROGRESS_ROWS: u64 = 1 << 16;
/// Skipped rows listed individually; the rest are only counted.
pub const LISTED_SKIPS: usize = 20;
/// Flagged rows kept for the email (those with the largest absolute
/// variance); the rest are only counted.
pub const KEPT_FLAGGED: usize = 1000;
/// Item names are clipped so that kept rows stay small.
const MAX_ITEM_CHARS: usize = 200;
/// Bad values quoted in warnings are clipped too.
const MAX_QUOTED_CHARS: usize = 40;
/// The header echoed in a missing-column error, clipped.
const MAX_HEADER_CHARS: usize = 200;

/// Where the required columns are, and how many fields a row must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// Positions of `REQUIRED`, in that order.
    index: [usize; 4],
    count: usize,
}

/// A valid data row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    pub item: String,
    pub sold_qty: f64,
    pub kot_cnt: f64,
    pub variance: f64,
}

/// A row that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub line: u64,
    pub reason: String,
}

/// What one run found. Counts are exact; the lists are capped.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub threshold: f64,
    /// Data rows (blank lines aside), valid or not.
    pub rows_read: u64,
    pub skipped: u64,
    pub flagged: u64,
    /// The `KEPT_FLAGGED` flagged rows with the largest absolute variance,
    /// largest first (ties in file order).
    pub flagged_rows: Vec<Row>,
    /// The first `LISTED_SKIPS` skipped rows.
    pub skips: Vec<Skip>,
    /// Once `KEPT_FLAGGED` rows are kept: the smallest |variance| among
    /// them. A later row at or below it can never be kept (ties go to the
    /// earlier line), so it is only counted.
    floor: Option<f64>,
}

impl Summary {
    fn new(threshold: f64) -> Self {
        Self {
            threshold,
            rows_read: 0,
            skipped: 0,
            flagged: 0,
            flagged_rows: Vec::new(),
            skips: Vec::new(),
            floor: None,
        }
    }

    pub fn flagged_not_kept(&self) -> u64 {
        self.flagged - self.flagged_rows.len() as u64
    }

    pub fn skips_not_listed(&self) -> u64 {
        self.skipped - self.skips.len() as u64
    }
}

/// Called as rows are read, so the caller can log without the rows being kept.
pub trait Observer {
    /// Whether `row` should hear of every valid row; otherwise only of
    /// flagged ones, and an unflagged row costs no allocation at all.
    fn wants_every_row(&self) -> bool {
        false
    }
    fn row(&mut self, _row: &Row, _flagged: bool) {}
    /// Every [`PROGRESS_ROWS`] data rows, with the count so far.
    fn progress(&mut self, _rows_read: u64) {}
    /// `listed` is false once `LISTED_SKIPS` skips have been listed.
    fn skipped(&mut self, _skip: &Skip, _listed: bool) {}
}

/// Why a file could not be reconciled at all.
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// No header row.
    Empty,
    /// The header row lacks a column or is malformed.
    Header(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "reading failed: {e}"),
            Error::Empty => f.write_str("the file is empty (no header row)"),
            Error::Header(m) => f.write_str(m),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// `--threshold`: a finite, non-negative number.
pub fn parse_threshold(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!(
            "invalid threshold {}: expected a non-negative number",
            quote(s.as_bytes())
        )),
    }
}

/// Strictly above the threshold, as the spec says.
pub fn is_flagged(variance: f64, threshold: f64) -> bool {
    variance.abs() > threshold
}

/// Streams the CSV: header first, then each row, keeping only the summary.
pub fn reconcile<R: BufRead>(
    input: R,
    threshold: f64,
    observer: &mut impl Observer,
) -> Result<Summary, Error> {
    let mut reader = Reader::new(input);
    let mut rec = Record::default();
    let cols = loop {
        if !reader.read_record(&mut rec)? {
            return Err(Error::Empty);
        }
        if !rec.blank {
            break columns(&rec).map_err(Error::Header)?;
        }
    };
    let mut summary = Summary::new(threshold);
    while reader.read_record(&mut rec)? {
        if rec.blank {
            continue;
        }
        summary.rows_read += 1;
        if summary.rows_read.is_multiple_of(PROGRESS_ROWS) {
            observer.progress(summary.rows_read);
        }
        match parse_fields(&rec, &cols) {
            Ok(fields) => record_row(&mut summary, rec.line, &fields, observer),
            Err(reason) => record_skip(&mut summary, rec.line, reason, observer),
        }
    }
    keep_largest(&mut summary.flagged_rows);
    Ok(summary)
}

/// Sorts flagged rows largest absolute variance first and keeps
/// `KEPT_FLAGGED`: run when the list doubles and once at the end, so the
/// work stays O(n log k) and memory flat however many rows are flagged.
fn keep_largest(rows: &mut Vec<Row>) {
    rows.sort_by(|a, b| {
        b.variance
            .abs()
            .total_cmp(&a.variance.abs())
            .then(a.line.cmp(&b.line))
    });
    rows.truncate(KEPT_FLAGGED);
}

fn record_row(summary: &mut Summary, line: u64, fields: &Fields, observer: &mut impl Observer) {
    let flagged = is_flagged(fields.variance, summary.threshold);
    summary.flagged += u64::from(flagged);
    let kept = flagged && summary.floor.is_none_or(|f| fields.variance.abs() > f);
    if !kept && !observer.wants_every_row() {
        return;
    }
    let row = fields.to_row(line);
    observer.row(&row, flagged);
    if kept {
        summary.flagged_rows.push(row);
        if summary.flagged_rows.len() >= 2 * KEPT_FLAGGED {
            keep_largest(&mut summary.flagged_rows);
            summary.floor = summary.flagged_rows.last().map(|r| r.variance.abs());
        }
    }
}

fn record_skip(summary: &mut Summary, line: u64, reason: String, observer: &mut impl Observer) {
    let skip = Skip { line, reason };
    let listed = summary.skips.len() < LISTED_SKIPS;
    observer.skipped(&skip, listed);
    summary.skipped += 1;
    if listed {
        summary.skips.push(skip);
    }
}

/// Finds the required columns in the header (names trimmed, ASCII case
/// ignored, a UTF-8 byte-order mark dropped); extra columns are allowed.
pub fn columns(header: &Record) -> Result<Columns, String> {
    if header.unterminated {
        return Err("the header row has an unterminated quoted field".into());
    }
    if header.truncated {
        return Err(format!(
            "the header row is too long (over {MAX_RECORD_BYTES} bytes or too many columns)"
        ));
    }
    let names: Vec<String> = (0..header.field_count)
        .filter_map(|i| header.field(i))
        .map(|f| {
            String::from_utf8_lossy(f)
                .trim_start_matches('\u{feff}')
                .trim()
                .to_string()
        })
        .collect();
    let mut index = [0; 4];
    let mut missing = Vec::new();
    for (slot, want) in index.iter_mut().zip(REQUIRED) {
        let mut found = names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.eq_ignore_ascii_case(want));
        match (found.next(), found.next()) {
            (Some((i, _)), None) => *slot = i,
            (Some(_), Some(_)) => return Err(format!("column \"{want}\" appears more than once")),
            (None, _) => missing.push(format!("\"{want}\"")),
        }
    }
    if !missing.is_empty() {
        let noun = if missing.len() == 1 {
            "column"
        } else {
            "columns"
        };
        return Err(format!(
            "missing required {noun} {} (the header has: {})",
            missing.join(", "),
            clip(&names.join(", "), MAX_HEADER_CHARS)
        ));
    }
    Ok(Columns {
        index,
        count: header.field_count,
    })
}

/// A valid row's fields, borrowed from the record: the item's text is only
/// copied out (and cleaned) for rows that are kept or shown.
pub struct Fields<'a> {
    item: &'a [u8],
    sold_qty: f64,
    kot_cnt: f64,
    variance: f64,
}

impl Fields<'_> {
    fn to_row(&self, line: u64) -> Row {
        Row {
            line,
            item: clean_item(self.item),
            sold_qty: self.sold_qty,
            kot_cnt: self.kot_cnt,
            variance: self.variance,
        }
    }
}

/// Validates one data row; the error is the reason it is skipped.
pub fn parse_fields<'a>(rec: &'a Record, cols: &Columns) -> Result<Fields<'a>, String> {
    common_row(rec, cols).map_or_else(|| check_fields(rec, cols), Ok)
}

/// The common row, without building a message or trimming: the field count
/// right, an item with text, three small integers. `None` sends the row to
/// [`check_fields`], which accepts it or says why not (a number
/// [`small_integer`] takes is the one [`parse_number`] gives).
fn common_row<'a>(rec: &'a Record, cols: &Columns) -> Option<Fields<'a>> {
    if rec.unterminated || rec.truncated || rec.field_count != cols.count {
        return None;
    }
    let number = |k: usize| rec.field(cols.index[k]).and_then(small_integer);
    let (sold_qty, kot_cnt, variance) = (number(1)?, number(2)?, number(3)?);
    let item = rec.field(cols.index[0])?;
    // A printable ASCII character survives [`clean_item`]; anything else
    // (a non-breaking space alone, say) is judged by [`blank`].
    item.iter().any(u8::is_ascii_graphic).then_some(Fields {
        item,
        sold_qty,
        kot_cnt,
        variance,
    })
}

/// Every check of a row, in order; the error is the first that fails.
fn check_fields<'a>(rec: &'a Record, cols: &Columns) -> Result<Fields<'a>, String> {
    if rec.unterminated {
        return Err("unterminated quoted field".into());
    }
    if rec.field_count != cols.count {
        return Err(format!(
            "expected {} fields, found {}",
            cols.count, rec.field_count
        ));
    }
    if rec.truncated {
        return Err(format!("row longer than {MAX_RECORD_BYTES} bytes"));
    }
    let field = |k: usize| -> Result<&'a [u8], String> {
        let f = rec.field(cols.index[k]).unwrap_or_default();
        if blank(f) {
            Err(format!("missing {}", REQUIRED[k]))
        } else {
            Ok(f)
        }
    };
    let number = |k: usize| -> Result<f64, String> {
        let f = field(k)?;
        parse_number(f).ok_or_else(|| format!("non-numeric {} {}", REQUIRED[k], quote(f)))
    };
    Ok(Fields {
        item: field(0)?,
        sold_qty: number(1)?,
        kot_cnt: number(2)?,
        variance: number(3)?,
    })
}

/// A finite decimal number (Rust's parser also takes "NaN" and "inf": refused).
fn parse_number(f: &[u8]) -> Option<f64> {
    if let Some(v) = small_integer(f) {
        return Some(v);
    }
    let s = std::str::from_utf8(f).ok()?.trim();
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The common case, `-?[0-9]{1,15}` with no spaces, without the general
/// parser: such an integer is exact in an f64, so the value is the one
/// `str::parse` gives.
fn small_integer(f: &[u8]) -> Option<f64> {
    let (negative, digits) = match f.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, f),
    };
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if negative { -(n as f64) } else { n as f64 })
}

/// Whether a field is empty once [`clean_item`] has trimmed it (Unicode
/// spaces included) and blanked its control characters.
fn blank(f: &[u8]) -> bool {
    String::from_utf8_lossy(f)
        .trim()
        .chars()
        .all(char::is_control)
}

/// One line of printable text, clipped, for the email and the output.
fn clean_item(f: &[u8]) -> String {
    let s = String::from_utf8_lossy(f);
    let cleaned: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip(&cleaned, MAX_ITEM_CHARS)
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// A bad value for a message: clipped, quoted, control characters escaped.
pub fn quote(f: &[u8]) -> String {
    format!("{:?}", clip(&String::from_utf8_lossy(f), MAX_QUOTED_CHARS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen {
        rows: usize,
        skips: Vec<(u64, bool)>,
    }

    impl Observer for Seen {
        fn wants_every_row(&self) -> bool {
            true
        }
        fn row(&mut self, _: &Row, _: bool) {
            self.rows += 1;
        }
        fn skipped(&mut self, s: &Skip, listed: bool) {
            self.skips.push((s.line, listed));
        }
    }

    fn run(csv: &str, threshold: f64) -> Result<Summary, Error> {
        reconcile(csv.as_bytes(), threshold, &mut Seen::default())
    }

    fn items(s: &Summary) -> Vec<&str> {
        s.flagged_rows.iter().map(|r| r.item.as_str()).collect()
    }

    #[test]
    fn flags_strictly_above_the_threshold_in_any_column_order() {
        let csv = "note,variance,KOT_cnt,item,sold_qty\n\
                   x,5,5,exactly five,10\n\
                   x,-5.5,15.5,minus five and a half,10\n\
                   x,6,4,six,10\n\
                   x,0,10,zero,10\n";
        let s = run(csv, 5.0).unwrap();
        assert_eq!((s.rows_read, s.skipped, s.flagged), (4, 0, 2));
        // Largest absolute variance first.
        assert_eq!(items(&s), vec!["six", "minus five and a half"]);
        assert_eq!(s.flagged_rows[0].line, 4);
        assert_eq!(
            (s.flagged_rows[0].sold_qty, s.flagged_rows[0].kot_cnt),
            (10.0, 4.0)
        );
        assert_eq!(items(&run(csv, 0.0).unwrap()).len(), 3);
    }

    #[test]
    fn quoted_items_and_header_variants() {
        let csv = "\u{feff} Item ,SOLD_QTY,kot_cnt,\"variance\"\r\n\
                   \"Paneer \"\"Tikka\"\", large\",10,2,8\r\n";
        let s = run(csv, 5.0).unwrap();
        assert_eq!(items(&s), vec!["Paneer \"Tikka\", large"]);
    }

    #[test]
    fn bad_rows_are_skipped_with_line_and_reason() {
        let csv = "item,sold_qty,KOT_cnt,variance\n\
                   a,1,2\n\
                   b,x1,2,3\n\
                   \n\
                   c,1,2,\n\
                   d,1,2,NaN\n\
                   e,1,2,3,4\n\
                   ,1,2,9\n\
                   f,1,2,9\n\
                   \u{a0},1,2,9\n\
                   \u{1},1,2,9\n\
                   \u{e9},1,2,9\n\
                   \"g,1,2,9\n";
        let s = run(csv, 5.0).unwrap();
        let got: Vec<(u64, &str)> = s
            .skips
            .iter()
            .map(|k| (k.line, k.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "expected 4 fields, found 3"),
                (3, "non-numeric sold_qty \"x1\""),
                (5, "missing variance"),
                (6, "non-numeric variance \"NaN\""),
                (7, "expected 4 fields, found 5"),
                (8, "missing item"),
                // Blank once cleaned: a non-breaking space, a control character.
                (10, "missing item"),
                (11, "missing item"),
                (13, "unterminated quoted field"),
            ]
        );
        assert_eq!((s.rows_read, s.skipped, s.flagged), (11, 9, 2));
        assert_eq!(items(&s), vec!["f", "\u{e9}"]);
    }

    #[test]
    fn missing_and_duplicate_columns_are_named() {
        let err = run("item,sold_qty,KOT_cnt\n", 5.0).unwrap_err().to_string();
        assert!(
            err.contains("missing required column \"variance\""),
            "{err}"
        );
        let err = run("item,qty\n", 5.0).unwrap_err().to_string();
        assert!(
            err.contains("columns \"sold_qty\", \"KOT_cnt\", \"variance\""),
            "{err}"
        );
        let err = run("item,item,sold_qty,KOT_cnt,variance\n", 5.0).unwrap_err();
        assert!(err.to_string().contains("\"item\" appears more than once"));
        assert!(matches!(run("", 5.0), Err(Error::Empty)));
        assert!(matches!(run("\n\n", 5.0), Err(Error::Empty)));
    }

    #[test]
    fn small_integers_parse_as_the_general_parser_does() {
        for text in [
            "0",
            "-0",
            "7",
            "-12",
            "000123",
            "999999999999999",
            "-999999999999999",
        ] {
            assert_eq!(
                small_integer(text.as_bytes()).map(f64::to_bits),
                Some(text.parse::<f64>().unwrap().to_bits()),
                "{text}"
            );
        }
        for other in [
            "",
            "-",
            "1.5",
            " 7",
            "7 ",
            "+7",
            "1e3",
            "1234567890123456",
            "x",
        ] {
            assert_eq!(small_integer(other.as_bytes()), None, "{other}");
        }
        assert_eq!(parse_number(b" 7 "), Some(7.0));
        assert_eq!(parse_number(b"+7"), Some(7.0));
        assert_eq!(parse_number(b"NaN"), None);
    }

    #[test]
    fn lists_are_capped_but_counts_are_exact() {
        let mut csv = String::from("item,sold_qty,KOT_cnt,variance\n");
        for i in 0..(KEPT_FLAGGED + 7) {
            csv.push_str(&format!("i{i},1,1,100\nbad{i}\n"));
        }
        let mut seen = Seen::default();
        let s = reconcile(csv.as_bytes(), 5.0, &mut seen).unwrap();
        assert_eq!(s.flagged, (KEPT_FLAGGED + 7) as u64);
        assert_eq!(s.flagged_rows.len(), KEPT_FLAGGED);
        assert_eq!(s.flagged_not_kept(), 7);
        assert_eq!(s.skips.len(), LISTED_SKIPS);
        assert_eq!(
            s.skips_not_listed(),
            (KEPT_FLAGGED + 7 - LISTED_SKIPS) as u64
        );
        assert_eq!(seen.skips.iter().filter(|s| s.1).count(), LISTED_SKIPS);
        assert_eq!(seen.skips[0].0, 3);
    }

    #[test]
    fn the_largest_variances_are_kept_whatever_their_position() {
        // Small variances first, the largest last: past the compaction.
        let rows = 2 * KEPT_FLAGGED + KEPT_FLAGGED / 2;
        let mut csv = String::from("item,sold_qty,KOT_cnt,variance\n");
        for i in 0..rows {
            let sign = if i % 2 == 0 { "" } else { "-" };
            csv.push_str(&format!("i{i},1,1,{sign}{}\n", 10 + i));
        }
        let s = run(&csv, 5.0).unwrap();
        assert_eq!(s.flagged, rows as u64);
        assert_eq!(s.flagged_rows.len(), KEPT_FLAGGED);
        let largest: Vec<f64> = (rows - KEPT_FLAGGED..rows)
            .rev()
            .map(|i| (10 + i) as f64)
            .collect();
        let kept: Vec<f64> = s.flagged_rows.iter().map(|r| r.variance.abs()).collect();
        assert_eq!(kept, largest);
    }

    #[test]
    fn long_values_are_clipped() {
        let long = "y".repeat(500);
        let csv = format!("item,sold_qty,KOT_cnt,variance\n{long},1,1,{long}\n{long},1,1,9\n");
        let s = run(&csv, 5.0).unwrap();
        assert!(s.skips[0].reason.len() < 80, "{}", s.skips[0].reason);
        assert_eq!(s.flagged_rows[0].item.chars().count(), MAX_ITEM_CHARS + 1);
    }

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("5"), Ok(5.0));
        assert_eq!(parse_threshold("0.5"), Ok(0.5));
        assert_eq!(parse_threshold("0"), Ok(0.0));
        for bad in ["-1", "abc", "", "NaN", "inf"] {
            let err = parse_threshold(bad).unwrap_err();
            assert!(err.contains(&format!("\"{bad}\"")), "{err}");
        }
    }
}
