//! `std::io::Read` and `BufRead` over the host's `files` capability, so a
//! plugin can stream a granted file in bounded memory: one host call per
//! `CHUNK`, and a `BufRead` consumer reads the chunk in place (no second copy).

use crate::files;

/// Bytes fetched per host call: large enough that host calls stay few.
pub const CHUNK: u32 = 1 << 20;

pub struct FileReader {
    path: String,
    offset: u64,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl FileReader {
    /// Opens a granted file (checks it exists and is readable).
    pub fn open(path: &str) -> Result<Self, crate::Error> {
        files::size(path)?;
        Ok(Self {
            path: path.to_string(),
            offset: 0,
            buf: Vec::new(),
            pos: 0,
            eof: false,
        })
    }

    /// The next chunk from the host, once the last is used up.
    #[cold]
    #[inline(never)]
    fn refill(&mut self) -> std::io::Result<()> {
        self.buf = files::read(&self.path, self.offset, CHUNK)
            .map_err(|e| std::io::Error::other(e.message))?;
        self.pos = 0;
        self.offset += self.buf.len() as u64;
        self.eof = self.buf.is_empty();
        Ok(())
    }
}

impl std::io::BufRead for FileReader {
    // Inline: a line-at-a-time reader calls this once per line.
    #[inline]
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos == self.buf.len() && !self.eof {
            self.refill()?;
        }
        Ok(&self.buf[self.pos..])
    }

    #[inline]
    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.buf.len());
    }
}

impl std::io::Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let chunk = self.fill_buf()?;
        let n = out.len().min(chunk.len());
        out[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Ok(n)
    }
}
