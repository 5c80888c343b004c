//! Files only the owner may read: the data directory and what the host
//! keeps in it (databases holding customers' names, phones and addresses,
//! mail written to the outbox, compiled plugins). Made 0700 / 0600 whatever
//! the process's umask; an existing directory is left as the operator set
//! it (the component cache tightens its own, `runtime/cache.rs`).

use std::path::Path;

/// Creates `dir` and any missing parents, each the owner's alone.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes a new file only its owner may read, its bytes durable before the
/// caller renames it into place: after a power cut a file system may
/// otherwise keep the name and lose the data.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = new_private_file(path)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()
}

/// Creates `path` empty and the owner's alone, unless it exists (as it is
/// then). SQLite takes an empty file for a new database, and its journal
/// files take the database file's mode.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    match new_private_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        made => made.map(drop),
    }
}

fn new_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Makes a rename into `dir` durable (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Whether others may read `path` (a data directory from before, or one
/// the operator opened up): said at start, not changed.
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
pub fn readable_by_others(_: &Path) -> Option<u32> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_private_whatever_the_umask_and_existing_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let data = dir.path().join("data/db");
        create_private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(data.parent().unwrap()), 0o700);
        let file = data.join("master.sqlite");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::write(&file, b"kept").unwrap();
        create_private_file(&file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"kept");
        write_private(&data.join("a.eml"), b"mail").unwrap();
        assert_eq!(mode(&data.join("a.eml")), 0o600);
        assert!(
            write_private(&data.join("a.eml"), b"again").is_err(),
            "never over another"
        );
        assert_eq!(readable_by_others(&data), None);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(readable_by_others(&data), Some(0o755));
    }
}
