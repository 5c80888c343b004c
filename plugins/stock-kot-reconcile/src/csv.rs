//! A streaming CSV record reader (RFC 4180 quoting: commas, doubled quotes and
//! newlines inside quoted fields) that reuses one buffer per record, so memory
//! stays bounded whatever the file size or the length of a malformed line.
//! Pure Rust over `std::io::BufRead`: no host bindings.

use std::io::BufRead;

/// Bytes of field data kept per record; longer records are reported, not kept.
pub const MAX_RECORD_BYTES: usize = 64 << 10;
/// Fields kept per record; further fields are only counted.
pub const MAX_FIELDS: usize = 256;

/// One record: each kept field's bytes followed by one separator byte, with
/// the end offset of each field. The separators make a plain line's bytes the
/// record's data as they are, so the fast path copies a line in one go.
#[derive(Debug, Default)]
pub struct Record {
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Fields in the record, including those not kept (see `MAX_FIELDS`).
    pub field_count: usize,
    /// Physical line (1-based) the record starts on.
    pub line: u64,
    /// The record had more than `MAX_RECORD_BYTES` of data or `MAX_FIELDS` fields.
    pub truncated: bool,
    /// The file ended inside a quoted field.
    pub unterminated: bool,
    /// The line held nothing at all (not even `""`).
    pub blank: bool,
}

impl Record {
    /// The `i`th kept field, if any.
    pub fn field(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
        Some(&self.data[start..end])
    }

    fn clear(&mut self, line: u64) {
        self.data.clear();
        self.ends.clear();
        self.field_count = 0;
        self.line = line;
        self.truncated = false;
        self.unterminated = false;
        self.blank = true;
    }

    fn push(&mut self, b: u8) {
        if self.data.len() < MAX_RECORD_BYTES {
            self.data.push(b);
        } else {
            self.truncated = true;
        }
    }

    /// A run of field bytes at once (the reader's fast path).
    fn push_slice(&mut self, bytes: &[u8]) {
        let room = MAX_RECORD_BYTES - self.data.len().min(MAX_RECORD_BYTES);
        if bytes.len() > room {
            self.truncated = true;
        }
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_field(&mut self) {
        self.field_count += 1;
        if self.ends.len() < MAX_FIELDS {
            self.ends.push(self.data.len());
            self.data.push(b',');
        } else {
            self.truncated = true;
        }
    }

    /// The fast path: `line` (no line ending) holds no quote and no CR, so
    /// its bytes are the fields and commas end them. The same record as the
    /// state machine would build, byte for byte.
    fn plain_line(&mut self, line: &[u8]) {
        self.blank = line.is_empty();
        self.data.extend_from_slice(line);
        for (at, _) in line.iter().enumerate().filter(|(_, b)| **b == b',') {
            self.field_count += 1;
            if self.ends.len() < MAX_FIELDS {
                self.ends.push(at);
            } else {
                self.truncated = true;
            }
        }
        self.end_field();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// Just saw a `"` inside a quoted field: a doubled quote or the closing one.
    QuoteInQuoted,
}

/// Reads records one at a time from a buffered reader.
pub struct Reader<R> {
    inner: R,
    /// The physical line the next byte is on.
    line: u64,
}

impl<R: BufRead> Reader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, line: 1 }
    }

    /// Reads the next record into `rec`; `false` at the end of the input.
    pub fn read_record(&mut self, rec: &mut Record) -> std::io::Result<bool> {
        rec.clear(self.line);
        let buf = self.inner.fill_buf()?;
        if let Some((line, used)) = plain_line(buf) {
            rec.plain_line(line);
            self.inner.consume(used);
            self.line += 1;
            return Ok(true);
        }
        let mut state = State::FieldStart;
        let mut consumed_any = false;
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(self.finish(rec, state, consumed_any));
            }
            consumed_any = true;
            let (used, done) = scan(buf, &mut self.line, rec, &mut state);
            self.inner.consume(used);
            if done {
                return Ok(true);
            }
        }
    }

    fn finish(&mut self, rec: &mut Record, state: State, consumed_any: bool) -> bool {
        if !consumed_any {
            return false;
        }
        rec.unterminated = state == State::Quoted;
        rec.end_field();
        true
    }
}

/// A whole line at the start of `buf` that the fast path can take: it ends
/// in the buffer, fits the record limit, and holds no quote and no CR but an
/// optional one before its newline. Returns the line without its ending, and
/// the bytes it used.
fn plain_line(buf: &[u8]) -> Option<(&[u8], usize)> {
    // One SIMD pass finds the newline, or whatever would stop the fast path first.
    let stop = memchr::memchr3(b'\n', b'"', b'\r', buf)?;
    let newline = match buf[stop] {
        b'\n' => stop,
        b'\r' if buf.get(stop + 1) == Some(&b'\n') => stop + 1,
        _ => return None,
    };
    let line = &buf[..stop];
    (line.len() <= MAX_RECORD_BYTES).then_some((line, newline + 1))
}

/// Feeds bytes to the state machine; returns bytes used and whether the
/// record ended (at an unquoted newline). Runs of ordinary field bytes are
/// found and copied whole; only the bytes that can change the state go
/// through [`step`] one at a time.
fn scan(buf: &[u8], line: &mut u64, rec: &mut Record, state: &mut State) -> (usize, bool) {
    let mut i = 0;
    while i < buf.len() {
        let run = plain_run(&buf[i..], *state);
        if run > 0 {
            rec.blank = false;
            rec.push_slice(&buf[i..i + run]);
            if *state == State::FieldStart {
                *state = State::Unquoted;
            }
            i += run;
            continue;
        }
        let b = buf[i];
        i += 1;
        if b == b'\n' {
            *line += 1;
            if *state != State::Quoted {
                rec.end_field();
                return (i, true);
            }
        }
        // A CR outside quotes is part of a line ending (or noise): drop it.
        if b == b'\r' && *state != State::Quoted {
            continue;
        }
        rec.blank = false;
        *state = step(*state, b, rec);
    }
    (buf.len(), false)
}

/// How many bytes from the start of `buf` are ordinary field data in
/// `state`: what [`step`] would push one by one without changing state
/// (after a first byte that turns `FieldStart` into `Unquoted`).
fn plain_run(buf: &[u8], state: State) -> usize {
    // memchr scans 16 bytes at a time (SIMD, simd128 on wasm).
    let found = match state {
        State::FieldStart if buf.first() == Some(&b'"') => return 0,
        // A quote inside an unquoted field is kept as text; after its
        // first byte a field is unquoted.
        State::FieldStart | State::Unquoted => memchr::memchr3(b',', b'\n', b'\r', buf),
        // Newlines inside quotes are data, but they count lines.
        State::Quoted => memchr::memchr2(b'"', b'\n', buf),
        State::QuoteInQuoted => return 0,
    };
    found.unwrap_or(buf.len())
}

/// One byte of the quoting state machine (newlines are handled by the caller).
fn step(state: State, b: u8, rec: &mut Record) -> State {
    match (state, b) {
        (State::FieldStart, b'"') => State::Quoted,
        (State::Quoted, b'"') => State::QuoteInQuoted,
        (State::QuoteInQuoted, b'"') => {
            rec.push(b'"');
            State::Quoted
        }
        (State::Quoted, _) => {
            rec.push(b);
            State::Quoted
        }
        (_, b',') => {
            rec.end_field();
            State::FieldStart
        }
        // Text after a closing quote, or a quote inside an unquoted field, is
        // kept as is (as the common CSV readers do) rather than failing the row.
        _ => {
            rec.push(b);
            State::Unquoted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &str) -> Vec<(u64, Vec<String>, bool, bool)> {
        let mut r = Reader::new(std::io::BufReader::with_capacity(3, input.as_bytes()));
        let mut rec = Record::default();
        let mut out = Vec::new();
        while r.read_record(&mut rec).unwrap() {
            let fields = (0..rec.field_count.min(MAX_FIELDS))
                .map(|i| String::from_utf8(rec.field(i).unwrap().to_vec()).unwrap())
                .collect();
            out.push((rec.line, fields, rec.blank, rec.unterminated));
        }
        out
    }

    fn fields(input: &str) -> Vec<Vec<String>> {
        records(input).into_iter().map(|r| r.1).collect()
    }

    /// One record as (line, fields, blank, unterminated, truncated).
    type Seen = (u64, Vec<Vec<u8>>, bool, bool, bool);

    /// Every record, read through a buffer of `capacity` bytes.
    fn read_all(input: &str, capacity: usize) -> Vec<Seen> {
        let mut r = Reader::new(std::io::BufReader::with_capacity(
            capacity,
            input.as_bytes(),
        ));
        let mut rec = Record::default();
        let mut out = Vec::new();
        while r.read_record(&mut rec).unwrap() {
            let fields = (0..rec.field_count.min(MAX_FIELDS))
                .map(|i| rec.field(i).unwrap().to_vec())
                .collect();
            out.push((rec.line, fields, rec.blank, rec.unterminated, rec.truncated));
        }
        out
    }

    #[test]
    fn the_fast_path_reads_alike_whatever_the_buffer_size() {
        let input = "item,sold_qty,KOT_cnt,variance\r\n\
                     Dal,10,2,8\n\
                     \"Naan, \"\"butter\"\"\",1,1,0\r\n\
                     \n\
                     a\"b,\"multi\nline\",x\"\"y,\"\"\n\
                     \"closed\"tail,\r,\"cr\rin\",end\n\
                     \"open,never closed";
        let whole = read_all(input, 1 << 16);
        assert_eq!(whole.len(), 7);
        assert_eq!(whole[4].1[1], b"multi\nline");
        assert_eq!(whole[4].1[2], b"x\"\"y");
        assert_eq!(whole[5].0, 7);
        assert_eq!(whole[5].1[0], b"closedtail");
        assert_eq!(whole[5].1[2], b"cr\rin");
        assert!(whole[3].2 && whole[6].3);
        for capacity in 1..9 {
            assert_eq!(read_all(input, capacity), whole, "buffer of {capacity}");
        }
    }

    #[test]
    fn plain_and_quoted_fields() {
        assert_eq!(
            fields("a,b\r\n\"x, \"\"y\"\"\",2\n"),
            vec![vec!["a", "b"], vec!["x, \"y\"", "2"]]
        );
    }

    #[test]
    fn last_line_without_newline_and_empty_fields() {
        assert_eq!(
            fields("a,,c\n,\nz"),
            vec![vec!["a", "", "c"], vec!["", ""], vec!["z"]]
        );
    }

    #[test]
    fn newlines_inside_quotes_keep_line_numbers_right() {
        let r = records("h\n\"two\nlines\"\nnext\n");
        assert_eq!(r[1].0, 2);
        assert_eq!(r[1].1, vec!["two\nlines"]);
        assert_eq!(r[2].0, 4);
        assert_eq!(r[2].1, vec!["next"]);
    }

    #[test]
    fn blank_lines_and_unterminated_quotes_are_flagged() {
        let r = records("a\n\n\"\"\n\"open,\n");
        assert!(r[1].2, "empty line is blank");
        assert!(!r[2].2, "a quoted empty field is not blank");
        assert!(r[3].3, "unterminated quote at end of input");
        assert_eq!(r[3].0, 4);
    }

    #[test]
    fn huge_records_are_truncated_not_kept() {
        let long = "x".repeat(MAX_RECORD_BYTES + 10);
        let commas = ",".repeat(MAX_FIELDS + 5);
        let input = format!("{long}\n{commas}\nok\n");
        let mut r = Reader::new(input.as_bytes());
        let mut rec = Record::default();
        assert!(r.read_record(&mut rec).unwrap());
        assert!(rec.truncated);
        assert_eq!(rec.field(0).unwrap().len(), MAX_RECORD_BYTES);
        assert!(r.read_record(&mut rec).unwrap());
        assert!(rec.truncated);
        assert_eq!(rec.field_count, MAX_FIELDS + 6);
        assert!(r.read_record(&mut rec).unwrap());
        assert!(!rec.truncated);
        assert_eq!((rec.line, rec.field(0).unwrap()), (3, &b"ok"[..]));
        assert!(!r.read_record(&mut rec).unwrap());
    }
}
