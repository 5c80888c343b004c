//! The bundle's ZIP through the `zip` crate: deflated entries at the top
//! level, each stamped with the bundle's time and mode rw-r--r--.

use std::io::Write;
use zip::write::SimpleFileOptions;

/// An archive of `files` (name, text), every entry modified at `micros`
/// (UTC: ZIP has no zone).
pub fn zip(files: &[(&str, String)], micros: i64) -> Result<Vec<u8>, String> {
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(modified(micros))
        .unix_permissions(0o644);
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text) in files {
        writer
            .start_file(*name, options)
            .and_then(|()| writer.write_all(text.as_bytes()).map_err(Into::into))
            .map_err(|e| format!("zip entry \"{name}\": {e}"))?;
    }
    let cursor = writer.finish().map_err(|e| format!("zip: {e}"))?;
    Ok(cursor.into_inner())
}

/// ZIP's MS-DOS time (two-second steps, 1980..=2107), from UTC micros.
fn modified(micros: i64) -> zip::DateTime {
    let secs = micros.div_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = neo_ops_sdk::time::civil_from_days(days);
    let year = year.clamp(1980, 2107) as u16;
    let (hour, minute, second) = (sod / 3600, sod % 3600 / 60, sod % 60);
    zip::DateTime::from_date_and_time(
        year,
        month as u8,
        day as u8,
        hour as u8,
        minute as u8,
        second as u8,
    )
    .unwrap_or_default()
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
}
