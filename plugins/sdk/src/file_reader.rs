//! `std::io::Read` over the host's `files` capability, so a plugin can stream
//! a granted file through a `BufReader` in bounded memory.

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
}

impl std::io::Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.eof {
                return Ok(0);
            }
            self.buf = files::read(&self.path, self.offset, CHUNK)
                .map_err(|e| std::io::Error::other(e.message))?;
            self.pos = 0;
            self.offset += self.buf.len() as u64;
            if self.buf.is_empty() {
                self.eof = true;
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
