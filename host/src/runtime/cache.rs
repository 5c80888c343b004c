//! Precompiled components cached on disk, keyed by the component's content
//! hash and the engine's compatibility hash, so a restart skips compilation.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::Path;
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
    let mut engine_hash = std::hash::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let key = hex::encode(Sha256::digest(&bytes));
    let cached = cache_dir.join(format!("{key}-{:016x}.cwasm", engine_hash.finish()));
    if cached.is_file() {
        // SAFETY: the file was written by `Component::serialize` of an engine
        // with the same compatibility hash (part of its name) into our own cache
        // directory; wasmtime still checks its header before use.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %cached.display(), error = %e, "ignoring unusable cached component")
            }
        }
    }
    let component = Component::new(engine, &bytes)
        .map_err(|e| anyhow::anyhow!("compiling component {}: {e:#}", wasm_path.display()))?;
    std::fs::create_dir_all(cache_dir)?;
    let tmp = cache_dir.join(format!(".{key}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, &cached)?;
    Ok(component)
}

/// Removes cached artefacts of components other than `components` (a
/// rebuilt plugin leaves its old artefact behind); returns how many went.
/// Only `serve`, which loads the whole manifest, calls this.
pub fn evict_unused(cache_dir: &Path, components: &[std::path::PathBuf]) -> usize {
    let keep: Vec<String> = components
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|bytes| hex::encode(Sha256::digest(&bytes)))
        .collect();
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return 0;
    };
    let mut evicted = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let used = keep.iter().any(|k| name.starts_with(k.as_str()));
        if name.ends_with(".cwasm") && !used && std::fs::remove_file(entry.path()).is_ok() {
            evicted += 1;
        }
    }
    evicted
}
