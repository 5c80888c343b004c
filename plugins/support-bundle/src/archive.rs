//! The bundle's ZIP: deflated entries at the top level, each stamped with
//! the bundle's time and mode rw-r--r--. Written here (local headers, central
//! directory, end record; no ZIP64, a bundle is far below 4 GiB) because the
//! `zip` crate pulls in `getrandom`'s JavaScript glue on wasm32, which a
//! component cannot import.

use flate2::Compression;
use flate2::write::DeflateEncoder;
use std::io::Write;

/// "Version needed": 2.0, deflate.
const VERSION_NEEDED: u16 = 20;
/// "Version made by": Unix (3), so readers take the mode from the external
/// attributes.
const MADE_BY_UNIX: u16 = (3 << 8) | VERSION_NEEDED;
/// Names are UTF-8 (general purpose bit 11).
const UTF8_NAMES: u16 = 1 << 11;
const DEFLATED: u16 = 8;
/// A regular file, rw-r--r--, in the high half of the external attributes.
const REGULAR_644: u32 = 0o100_644 << 16;

/// An archive of `files` (name, text), every entry modified at `micros`
/// (UTC: ZIP has no zone).
pub fn zip(files: &[(&str, String)], micros: i64) -> Result<Vec<u8>, String> {
    let (time, date) = dos_time(micros);
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, text) in files {
        let mut deflate = DeflateEncoder::new(Vec::new(), Compression::default());
        deflate
            .write_all(text.as_bytes())
            .map_err(|e| format!("zip entry \"{name}\": {e}"))?;
        let data = deflate
            .finish()
            .map_err(|e| format!("zip entry \"{name}\": {e}"))?;
        let mut crc = flate2::Crc::new();
        crc.update(text.as_bytes());
        let fits =
            |n: usize| u32::try_from(n).map_err(|_| format!("zip entry \"{name}\" is over 4 GiB"));
        let entry = Entry {
            name,
            time,
            date,
            crc: crc.sum(),
            compressed: fits(data.len())?,
            size: fits(text.len())?,
            offset: fits(out.len())?,
        };
        entry.local_header(&mut out)?;
        out.extend_from_slice(&data);
        entry.central_header(&mut central)?;
    }
    let entries = u16::try_from(files.len())
        .map_err(|_| format!("{} zip entries (at most 65535)", files.len()))?;
    let too_big = || "zip archive over 4 GiB".to_string();
    let central_at = u32::try_from(out.len()).map_err(|_| too_big())?;
    let central_len = u32::try_from(central.len()).map_err(|_| too_big())?;
    out.extend_from_slice(&central);
    // End of central directory: one disk, no comment.
    put32(&mut out, 0x0605_4b50);
    put16(&mut out, 0);
    put16(&mut out, 0);
    put16(&mut out, entries);
    put16(&mut out, entries);
    put32(&mut out, central_len);
    put32(&mut out, central_at);
    put16(&mut out, 0);
    Ok(out)
}

struct Entry<'a> {
    name: &'a str,
    time: u16,
    date: u16,
    crc: u32,
    compressed: u32,
    size: u32,
    /// Where its local header starts.
    offset: u32,
}

impl Entry<'_> {
    fn name_len(&self) -> Result<u16, String> {
        u16::try_from(self.name.len())
            .map_err(|_| format!("zip entry name \"{}\" is too long", self.name))
    }

    /// The fields local and central headers share, from "version needed" on.
    fn common(&self, out: &mut Vec<u8>) -> Result<(), String> {
        put16(out, VERSION_NEEDED);
        put16(out, UTF8_NAMES);
        put16(out, DEFLATED);
        put16(out, self.time);
        put16(out, self.date);
        put32(out, self.crc);
        put32(out, self.compressed);
        put32(out, self.size);
        put16(out, self.name_len()?);
        put16(out, 0); // no extra field
        Ok(())
    }

    fn local_header(&self, out: &mut Vec<u8>) -> Result<(), String> {
        put32(out, 0x0403_4b50);
        self.common(out)?;
        out.extend_from_slice(self.name.as_bytes());
        Ok(())
    }

    fn central_header(&self, out: &mut Vec<u8>) -> Result<(), String> {
        put32(out, 0x0201_4b50);
        put16(out, MADE_BY_UNIX);
        self.common(out)?;
        put16(out, 0); // no comment
        put16(out, 0); // disk 0
        put16(out, 0); // internal attributes
        put32(out, REGULAR_644);
        put32(out, self.offset);
        out.extend_from_slice(self.name.as_bytes());
        Ok(())
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// ZIP's MS-DOS (time, date): two-second steps, years 1980..=2107, from UTC
/// micros.
fn dos_time(micros: i64) -> (u16, u16) {
    let secs = micros.div_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = neo_ops_sdk::time::civil_from_days(days);
    let (year, month, day) = match year {
        ..1980 => (1980, 1, 1),
        2108.. => (2107, 12, 31),
        _ => (year, month, day),
    };
    let (hour, minute, second) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let time = ((hour << 11) | (minute << 5) | (second / 2)) as u16;
    let date = (((year - 1980) << 9) | ((month as i64) << 5) | day as i64) as u16;
    (time, date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn entries_read_back_deflated_with_their_time() {
        // 2026-11-27T21:10:07Z
        let micros = 1_795_813_807_000_000;
        let text = "line\n".repeat(1000);
        let bytes = zip(&[("a.txt", text.clone()), ("b.json", "{}".into())], micros).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(archive.len(), 2);
        let mut entry = archive.by_name("a.txt").unwrap();
        assert_eq!(entry.compression(), zip::CompressionMethod::Deflated);
        assert!(entry.compressed_size() < 200, "{}", entry.compressed_size());
        let time = entry.last_modified().unwrap();
        assert_eq!(
            (
                time.year(),
                time.month(),
                time.day(),
                time.hour(),
                time.minute()
            ),
            (2026, 11, 27, 21, 10)
        );
        assert_eq!(entry.unix_mode(), Some(0o100_644));
        let mut back = String::new();
        entry.read_to_string(&mut back).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn times_outside_zips_range_are_clamped() {
        // 1970-01-01T00:00:00Z and 2200-01-01T00:00:00Z
        assert_eq!(dos_time(0), (0, 1 << 5 | 1));
        let (_, date) = dos_time(7_258_118_400_000_000);
        assert_eq!(date, (2107 - 1980) << 9 | 12 << 5 | 31);
    }
}
