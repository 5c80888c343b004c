//! A minimal ZIP writer: stored entries (no compression), one local header
//! per file, the central directory and the end record (APPNOTE 6.3). A
//! bundle is a few hundred KiB of text, so neither deflate nor ZIP64 is
//! worth a dependency; sizes past the classic format's limits are an error.

/// Builds an archive in memory.
pub struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    entries: u16,
    dos_time: u16,
    dos_date: u16,
}

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
/// Version 2.0: what readers need for stored entries in directories.
const VERSION_NEEDED: u16 = 20;
/// Made by Unix (3), spec 2.0, so the mode in the external attributes counts.
const VERSION_MADE_BY: u16 = (3 << 8) | 20;
/// A regular file, rw-r--r--, in the high half of the external attributes.
const UNIX_FILE_MODE: u32 = 0o100_644 << 16;
/// General purpose flag bit 11: the name is UTF-8.
const UTF8_NAMES: u16 = 1 << 11;

impl ZipWriter {
    /// Entries are stamped with `modified_micros` (UTC; ZIP has no zone).
    pub fn new(modified_micros: i64) -> Self {
        let (dos_time, dos_date) = dos_date_time(modified_micros);
        Self {
            out: Vec::new(),
            central: Vec::new(),
            entries: 0,
            dos_time,
            dos_date,
        }
    }

    /// Adds a file at the archive's top level.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<(), String> {
        if name.is_empty() || name.contains(['/', '\\']) || name == ".." || name == "." {
            return Err(format!(
                "zip entry name \"{name}\" is not a plain file name"
            ));
        }
        let too_big = |what: &str| format!("zip entry \"{name}\": {what} exceeds the ZIP limit");
        let size = u32::try_from(data.len()).map_err(|_| too_big("size"))?;
        let offset = u32::try_from(self.out.len()).map_err(|_| too_big("archive offset"))?;
        let name_len = u16::try_from(name.len()).map_err(|_| too_big("name"))?;
        self.entries = self
            .entries
            .checked_add(1)
            .ok_or_else(|| too_big("entry count"))?;
        let crc = crc32(data);

        let out = &mut self.out;
        put32(out, LOCAL_HEADER);
        put16(out, VERSION_NEEDED);
        put16(out, UTF8_NAMES);
        put16(out, 0); // method: stored
        put16(out, self.dos_time);
        put16(out, self.dos_date);
        put32(out, crc);
        put32(out, size); // compressed
        put32(out, size); // uncompressed
        put16(out, name_len);
        put16(out, 0); // extra field length
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);

        let c = &mut self.central;
        put32(c, CENTRAL_HEADER);
        put16(c, VERSION_MADE_BY);
        put16(c, VERSION_NEEDED);
        put16(c, UTF8_NAMES);
        put16(c, 0);
        put16(c, self.dos_time);
        put16(c, self.dos_date);
        put32(c, crc);
        put32(c, size);
        put32(c, size);
        put16(c, name_len);
        put16(c, 0); // extra field length
        put16(c, 0); // comment length
        put16(c, 0); // disk number start
        put16(c, 0); // internal attributes
        put32(c, UNIX_FILE_MODE);
        put32(c, offset);
        c.extend_from_slice(name.as_bytes());
        Ok(())
    }

    /// Appends the central directory and the end record.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        let Self {
            mut out,
            central,
            entries,
            ..
        } = self;
        let too_big = || "zip archive exceeds the ZIP limit".to_string();
        let directory_offset = u32::try_from(out.len()).map_err(|_| too_big())?;
        let directory_size = u32::try_from(central.len()).map_err(|_| too_big())?;
        directory_offset
            .checked_add(directory_size)
            .ok_or_else(too_big)?;
        out.extend_from_slice(&central);
        put32(&mut out, END_OF_CENTRAL_DIRECTORY);
        put16(&mut out, 0); // this disk
        put16(&mut out, 0); // disk with the central directory
        put16(&mut out, entries);
        put16(&mut out, entries);
        put32(&mut out, directory_size);
        put32(&mut out, directory_offset);
        put16(&mut out, 0); // comment length
        Ok(out)
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// MS-DOS time and date fields (2-second resolution, years 1980–2107).
fn dos_date_time(micros: i64) -> (u16, u16) {
    let secs = micros.div_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = neo_ops_sdk::time::civil_from_days(days);
    let year = year.clamp(1980, 2107) as u16;
    let time = (((sod / 3600) << 11) | ((sod % 3600 / 60) << 5) | ((sod % 60) / 2)) as u16;
    let date = ((year - 1980) << 9) | ((month as u16) << 5) | day as u16;
    (time, date)
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as ZIP uses it.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn dos_fields() {
        // 2026-11-25T19:30:45Z
        let (time, date) = dos_date_time(1_795_635_045_000_000);
        assert_eq!(time, (19 << 11) | (30 << 5) | 22);
        assert_eq!(date, ((2026 - 1980) << 9) | (11 << 5) | 25);
    }

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_le_bytes([b[i], b[i + 1]])
    }

    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    #[test]
    fn layout_points_where_it_says() {
        let mut zip = ZipWriter::new(0);
        zip.add("a.txt", b"hello").unwrap();
        zip.add("b.json", b"{}").unwrap();
        let bytes = zip.finish().unwrap();

        let end = bytes.len() - 22;
        assert_eq!(u32_at(&bytes, end), END_OF_CENTRAL_DIRECTORY);
        assert_eq!(u16_at(&bytes, end + 10), 2);
        let dir_size = u32_at(&bytes, end + 12) as usize;
        let dir_offset = u32_at(&bytes, end + 16) as usize;
        assert_eq!(dir_offset + dir_size, end);

        // Second central entry → second local header → its data.
        let first_len = 46 + "a.txt".len();
        let second = dir_offset + first_len;
        assert_eq!(u32_at(&bytes, second), CENTRAL_HEADER);
        assert_eq!(u32_at(&bytes, second + 16), crc32(b"{}"));
        let local = u32_at(&bytes, second + 42) as usize;
        assert_eq!(u32_at(&bytes, local), LOCAL_HEADER);
        assert_eq!(&bytes[local + 30..local + 36], b"b.json");
        assert_eq!(&bytes[local + 36..local + 38], b"{}");
    }

    #[test]
    fn unsafe_names_are_refused() {
        let mut zip = ZipWriter::new(0);
        for name in ["", "../x", "/etc/passwd", "a\\b", ".."] {
            assert!(zip.add(name, b"").is_err(), "{name:?}");
        }
    }
}
