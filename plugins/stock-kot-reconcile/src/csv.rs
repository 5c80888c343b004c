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

    /// The fast path: takes a whole line from the start of `buf` if it ends
    /// in `buf`, fits the record limit and holds no quote and no CR but an
    /// optional one before its newline; its bytes are then the fields and
    /// commas end them, the same record as the state machine would build,
    /// byte for byte. Returns the bytes used (line ending included), or
    /// `None` with the record cleared for the state machine.
    fn plain_line(&mut self, buf: &[u8]) -> Option<usize> {
        // Sixteen bytes a step: where the line stops and where its commas
        // are, as bit masks (one SIMD compare per byte class), and the bytes
        // copied to the record as they go (a fixed-size copy, no `memcpy`).
        let mut at = 0;
        let stop = loop {
            if at >= buf.len() {
                return self.refuse_line();
            }
            let valid = (buf.len() - at).min(16);
            let chunk = chunk_of(&buf[at..at + valid]);
            let masks = Masks::of_chunk(&chunk);
            self.data.extend_from_slice(&chunk);
            let stop = masks.stop.trailing_zeros() as usize;
            let mut commas = u32::from(masks.comma) & ((1u32 << stop) - 1);
            self.field_count += commas.count_ones() as usize;
            while commas != 0 {
                let comma = at + commas.trailing_zeros() as usize;
                if self.ends.len() < MAX_FIELDS {
                    self.ends.push(comma);
                } else {
                    self.truncated = true;
                }
                commas &= commas - 1;
            }
            if stop < valid {
                break at + stop;
            }
            at += 16;
            if at > MAX_RECORD_BYTES {
                return self.refuse_line();
            }
        };
        let newline = match buf[stop] {
            b'\n' => stop,
            b'\r' if buf.get(stop + 1) == Some(&b'\n') => stop + 1,
            _ => return self.refuse_line(),
        };
        let line = &buf[..stop];
        if line.len() > MAX_RECORD_BYTES {
            return self.refuse_line();
        }
        self.blank = line.is_empty();
        self.data.truncate(line.len());
        self.end_field();
        Some(newline + 1)
    }

    /// Undoes what [`Record::plain_line`] noted before it gave up.
    fn refuse_line(&mut self) -> Option<usize> {
        self.clear(self.line);
        None
    }
}

/// Which of 16 bytes stop the fast path (newline, quote, CR) and which are
/// commas: bit `i` stands for byte `i`.
struct Masks {
    stop: u16,
    comma: u16,
}

/// The first 16 bytes of `bytes`; a shorter tail is padded with zero bytes,
/// which are neither stops nor commas.
fn chunk_of(bytes: &[u8]) -> [u8; 16] {
    match bytes.first_chunk() {
        Some(whole) => *whole,
        None => {
            let mut chunk = [0u8; 16];
            chunk[..bytes.len()].copy_from_slice(bytes);
            chunk
        }
    }
}

impl Masks {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    fn of_chunk(chunk: &[u8; 16]) -> Masks {
        use core::arch::wasm32::*;
        // SAFETY: `chunk` is 16 readable bytes; wasm loads need no alignment.
        let v = unsafe { v128_load(chunk.as_ptr().cast()) };
        let stop = v128_or(
            v128_or(
                u8x16_eq(v, u8x16_splat(b'\n')),
                u8x16_eq(v, u8x16_splat(b'"')),
            ),
            u8x16_eq(v, u8x16_splat(b'\r')),
        );
        Masks {
            stop: u8x16_bitmask(stop),
            comma: u8x16_bitmask(u8x16_eq(v, u8x16_splat(b','))),
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn of_chunk(chunk: &[u8; 16]) -> Masks {
        use core::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; `chunk` is 16 readable bytes and
        // the load takes any alignment.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
            let stop = _mm_or_si128(_mm_or_si128(eq(b'\n'), eq(b'"')), eq(b'\r'));
            Masks {
                stop: _mm_movemask_epi8(stop) as u16,
                comma: _mm_movemask_epi8(eq(b',')) as u16,
            }
        }
    }

    #[cfg(not(any(
        all(target_arch = "wasm32", target_feature = "simd128"),
        target_arch = "x86_64"
    )))]
    fn of_chunk(chunk: &[u8; 16]) -> Masks {
        Masks::scalar(chunk)
    }

    /// The byte-at-a-time definition the SIMD versions are tested against.
    #[cfg_attr(
        any(
            all(target_arch = "wasm32", target_feature = "simd128"),
            target_arch = "x86_64"
        ),
        allow(dead_code)
    )]
    fn scalar(chunk: &[u8; 16]) -> Masks {
        let mut masks = Masks { stop: 0, comma: 0 };
        for (i, b) in chunk.iter().enumerate() {
            masks.stop |= u16::from(matches!(b, b'\n' | b'"' | b'\r')) << i;
            masks.comma |= u16::from(*b == b',') << i;
        }
        masks
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
    /// Nothing read yet: a UTF-8 byte order mark there is skipped.
    at_start: bool,
}

/// What spreadsheet programs put before a UTF-8 CSV.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl<R: BufRead> Reader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            line: 1,
            at_start: true,
        }
    }

    /// Reads the next record into `rec`; `false` at the end of the input.
    pub fn read_record(&mut self, rec: &mut Record) -> std::io::Result<bool> {
        rec.clear(self.line);
        if std::mem::take(&mut self.at_start) && self.inner.fill_buf()?.starts_with(BOM) {
            // Skipped before parsing, so a quoted first field still opens
            // with its quote (`"item"`, not a field reading `\u{feff}"item"`).
            self.inner.consume(BOM.len());
        }
        let buf = self.inner.fill_buf()?;
        if let Some(used) = rec.plain_line(buf) {
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

    /// Bytes drawn from a small alphabet rich in the bytes that matter.
    fn scrambled(len: usize, mut seed: u64) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ab,,,\n\n\r\"0123456789x,";
        (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ALPHABET[(seed >> 33) as usize % ALPHABET.len()]
            })
            .collect()
    }

    #[test]
    fn the_simd_masks_match_the_bytes() {
        for seed in 0..2000 {
            let bytes = scrambled(16, seed);
            let chunk: &[u8; 16] = bytes.first_chunk().unwrap();
            let (simd, scalar) = (Masks::of_chunk(chunk), Masks::scalar(chunk));
            assert_eq!(
                (simd.stop, simd.comma),
                (scalar.stop, scalar.comma),
                "{bytes:?}"
            );
        }
        let short = Masks::of_chunk(&chunk_of(b"a,\n"));
        assert_eq!((short.stop, short.comma), (0b100, 0b10));
    }

    #[test]
    fn lines_across_sixteen_byte_steps_read_as_the_state_machine_reads_them() {
        // Lines of every length around the step, commas on both sides of
        // it, quotes and CRs late in a line, a CR LF split by a step.
        let mut input = String::new();
        for len in 0..40 {
            let line: String = (0..len)
                .map(|i| if i % 3 == 2 { ',' } else { 'x' })
                .collect();
            input.push_str(&line);
            input.push_str(["\n", "\r\n"][len % 2]);
        }
        input.push_str("0123456789abcde\r\nfield,\"late, quote\"\nok\r\rno\n");
        input.push_str(&String::from_utf8(scrambled(5000, 7)).unwrap());
        // A one-byte buffer leaves the fast path nothing but empty lines.
        let byte_at_a_time = read_all(&input, 1);
        assert_eq!(read_all(&input, 1 << 16), byte_at_a_time);
        assert_eq!(read_all(&input, 17), byte_at_a_time);
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

    #[test]
    fn a_byte_order_mark_before_a_quoted_header_is_skipped() {
        let input = "\u{feff}\"item\",\"sold_qty\"\r\n\"Dal\",\"10\"\r\n";
        let mut r = Reader::new(input.as_bytes());
        let mut rec = Record::default();
        assert!(r.read_record(&mut rec).unwrap());
        assert_eq!(rec.field(0).unwrap(), b"item");
        assert_eq!(rec.field(1).unwrap(), b"sold_qty");
        assert!(r.read_record(&mut rec).unwrap());
        assert_eq!(rec.field(0).unwrap(), b"Dal");
        assert!(!r.read_record(&mut rec).unwrap());
    }
}
