//! Precompiled components cached on disk, keyed by the component's content
//! hash and the engine's compatibility hash, so a restart skips compilation.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::Path;

use crate::private_fs::write_private;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Loads a component, compiling it only when no cached artefact matches.
pub fn load_component(
    engine: &Engine,
    wasm_path: &Path,
    cache_dir: &Path,
) -> anyhow::Result<Component> {
    let bytes = std::fs::read(wasm_path)
        .map_err(|e| anyhow::anyhow!("reading component {}: {e}", wasm_path.display()))?;
    let key = hex::encode(Sha256::digest(&bytes));
    let cached = cache_dir.join(artefact_name(&key, &engine_tag(engine)));
    if let Some(artefact) = read_private(&cached)
        && private(cache_dir)
    {
        // SAFETY: the bytes were written by `Component::serialize` of an
        // engine with the same compatibility hash (part of the name) into a
        // file only this user could have written; wasmtime still checks
        // their header before use.
        match unsafe { Component::deserialize(engine, &artefact) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %cached.display(), error = %e, "ignoring unusable cached component")
            }
        }
    }
    let component = Component::new(engine, &bytes)
        .map_err(|e| anyhow::anyhow!("compiling component {}: {e:#}", wasm_path.display()))?;
    // The cache only saves the next start a compile: a full disk or a
    // directory the process may not write costs that, never the load.
    if let Err(e) = store(&component, cache_dir, &key, &cached) {
        tracing::warn!(
            dir = %cache_dir.display(),
            error = %e,
            "could not cache a compiled component; it is compiled again on the next start"
        );
    }
    Ok(component)
}

/// The engine's compatibility hash as a name part: which wasmtime, which
/// settings and compiler flags the artefact was compiled for.
pub fn engine_tag(engine: &Engine) -> String {
    let mut hash = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hash);
    format!("{:016x}", hash.finish())
}

fn artefact_name(component_sha: &str, engine_tag: &str) -> String {
    format!("{component_sha}-{engine_tag}.cwasm")
}

/// Writes a compiled component into the cache under `cached`, through a
/// temporary file (removed if anything fails) so no reader sees half of it.
fn store(component: &Component, cache_dir: &Path, key: &str, cached: &Path) -> anyhow::Result<()> {
    create_private_dir(cache_dir)?;
    let tmp = cache_dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let written = component
        .serialize()
        .map_err(anyhow::Error::from)
        .and_then(|bytes| Ok(write_private(&tmp, &bytes)?))
        .and_then(|()| Ok(std::fs::rename(&tmp, cached)?));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    // The rename made durable too (best effort: the next start compiles
    // again if it was lost).
    crate::private_fs::sync_dir(cache_dir);
    written
}

/// Cached artefacts are native code the host runs: the directory is the
/// owner's alone (0700) and so are the files (0600, [`write_private`]).
/// A directory an earlier version made with the default umask is made so
/// too, when it is this process's own.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    crate::private_fs::create_private_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(dir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        if meta.uid() == unsafe { libc::geteuid() } && meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// An artefact's bytes, if it is a regular file of this process's own that
/// no one else may write, judged on the file opened (not followed through
/// a link, and not looked up again after the check, so it cannot be
/// swapped between the two). `None`, said in the log when the file is
/// there, otherwise: it is compiled afresh instead.
fn read_private(path: &Path) -> Option<Vec<u8>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open a cached component; compiling instead");
            return None;
        }
    };
    let meta = file.metadata().ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.uid() != me || meta.permissions().mode() & 0o022 != 0 {
            tracing::warn!(path = %path.display(), "a cached component is not this process's alone; compiling instead of loading it");
            return None;
        }
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut file, &mut bytes).ok()?;
    Some(bytes)
}

/// Whether the cache directory is this process's own and only it may write
/// it: an artefact someone else could have planted is compiled afresh
/// instead of run (and the next store makes the directory private again).
fn private(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let own = std::fs::metadata(path)
            .is_ok_and(|m| m.uid() == me && m.permissions().mode() & 0o022 == 0);
        if !own {
            tracing::warn!(path = %path.display(), "the component cache is not this process's alone; compiling instead of loading from it");
        }
        own
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        true
    }
}

/// A temporary file older than this was left by a process that died while
/// writing it.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes cached artefacts other than those of `components` for the engine
/// `engine_tag` names (a rebuilt plugin leaves its old artefact behind, an
/// upgraded wasmtime every artefact), and temporary files a dead process
/// left; returns how many went.
/// Only `serve`, which loads the whole manifest, calls this.
pub fn evict_unused(
    cache_dir: &Path,
    components: &[std::path::PathBuf],
    engine_tag: &str,
) -> usize {
    let keep: Vec<String> = components
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|bytes| artefact_name(&hex::encode(Sha256::digest(&bytes)), engine_tag))
        .collect();
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return 0;
    };
    let mut evicted = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let used = keep.contains(&name);
        let stale_tmp = name.ends_with(".tmp")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_TMP));
        let unused = name.ends_with(".cwasm") && !used;
        if (unused || stale_tmp) && std::fs::remove_file(entry.path()).is_ok() {
            evicted += 1;
        }
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// Eviction takes artefacts no component uses and temporary files older
    /// than [`STALE_TMP`] (a process died writing them), and leaves the rest:
    /// the artefact in use, a temporary file being written now, other files.
    #[test]
    fn eviction_takes_unused_artefacts_and_stale_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("plugin.wasm");
        std::fs::write(&component, b"component bytes").unwrap();
        let used = hex::encode(Sha256::digest(b"component bytes"));
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let file = |name: &str, age: Duration| {
            let path = cache.join(name);
            std::fs::write(&path, b"x").unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - age).unwrap();
            path
        };
        let kept = [
            file(&format!("{used}-0123456789abcdef.cwasm"), Duration::ZERO),
            file(&format!(".{used}-0123.1.tmp"), Duration::from_secs(5)),
            file("notes.txt", Duration::from_secs(7200)),
        ];
        let gone = [
            file(
                &format!("{}-0123456789abcdef.cwasm", "ab".repeat(32)),
                Duration::ZERO,
            ),
            file(
                &format!(".{used}-0123.2.tmp"),
                STALE_TMP + Duration::from_secs(60),
            ),
            // The same component compiled for another engine (an upgrade).
            file(&format!("{used}-fedcba9876543210.cwasm"), Duration::ZERO),
        ];
        assert_eq!(evict_unused(&cache, &[component], "0123456789abcdef"), 3);
        for path in kept {
            assert!(path.exists(), "{} was kept", path.display());
        }
        for path in gone {
            assert!(!path.exists(), "{} was evicted", path.display());
        }
    }

    /// The cache is the owner's alone, and one others may write is not
    /// loaded from.
    #[cfg(unix)]
    #[test]
    fn the_cache_is_private_and_a_shared_one_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("data/cache");
        create_private_dir(&cache).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert!(private(&cache));
        let file = cache.join("x.cwasm");
        write_private(&file, b"bytes").unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(!private(&cache), "group-writable");
        assert!(
            !private(&dir.path().join("missing")),
            "unreadable counts as shared"
        );
        // An earlier version's directory is made private on the next store.
        create_private_dir(&cache).unwrap();
        assert_eq!(mode(&cache), 0o700);
        assert!(private(&cache));
    }

    /// An artefact is read only from a regular file of our own that others
    /// may not write, opened once: not through a link (which could be
    /// pointed elsewhere after a check), not one others may write.
    #[cfg(unix)]
    #[test]
    fn an_artefact_is_read_only_from_a_private_file_of_its_own() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.cwasm");
        write_private(&file, b"artefact").unwrap();
        assert_eq!(read_private(&file).as_deref(), Some(&b"artefact"[..]));
        let link = dir.path().join("b.cwasm");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_private(&link), None, "a link");
        assert_eq!(read_private(&dir.path().join("c.cwasm")), None, "missing");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert_eq!(read_private(&file), None, "group-writable");
        assert_eq!(read_private(dir.path()), None, "a directory");
    }
}
