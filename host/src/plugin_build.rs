//! Building the plugins workspace (`plugins/`): the host's build script does
//! it once, when no components exist yet, and `neo-ops plugin build [NAME…]`
//! does it on demand — seconds, with no host recompile. Also compiled into
//! `build.rs` (by path), so it uses only std, `wit-component` and
//! `wasmparser` (the version `wit-component` builds).
//!
//! Rust plugins are core modules for `wasm32-unknown-unknown`, made into
//! components here. Not `wasm32-wasip2`: its `std` imports 14 WASI
//! interfaces whether a plugin uses them or not (18 core instances in the
//! smallest plugin, 5 without), and a fresh instance costs about a fifth
//! less without them (docs/benchmarks.md, sixth part).

use std::path::{Path, PathBuf};
use std::process::Command;

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Where the components land under a target directory.
pub fn output_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("components")
}

/// Where cargo puts the core modules under a target directory.
fn core_dir(target_dir: &Path) -> PathBuf {
    target_dir.join(WASM_TARGET).join("release")
}

/// rustup installs the targets `rust-toolchain.toml` lists only when it
/// installs the toolchain itself; a machine that already has the pinned
/// toolchain lacks the target. Add it (rustup's own command), or fail with
/// the one command to run when that is not possible. Both run in
/// `workspace`, so rustup picks the toolchain its `rust-toolchain.toml` pins
/// (the one cargo will build with), wherever the operator stands.
pub fn ensure_wasm_target(rustc: &str, workspace: &Path) -> Result<(), String> {
    let sysroot = Command::new(rustc)
        .current_dir(workspace)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if sysroot.is_some_and(|root| root.join("lib/rustlib").join(WASM_TARGET).is_dir()) {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.current_dir(workspace)
        .args(["target", "add", WASM_TARGET]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        add.args(["--toolchain", &toolchain]);
    }
    match add.status() {
        Ok(status) if status.success() => Ok(()),
        _ => Err(format!(
            "the {WASM_TARGET} target is missing and `rustup target add {WASM_TARGET}` failed; run it yourself, then build again"
        )),
    }
}

/// `cargo build --release --target wasm32-unknown-unknown` in `workspace`,
/// into `target_dir`, for `packages` (all when empty), then each core module
/// made into a component in [`output_dir`]. The outer build's compiler
/// settings (clippy's wrapper, host RUSTFLAGS) are not passed on.
pub fn build(
    cargo: &str,
    workspace: &Path,
    target_dir: &Path,
    packages: &[String],
) -> Result<(), String> {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running {cargo} to build the plugins: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the plugins for {WASM_TARGET} failed (see the output above)"
        ));
    }
    let core = core_dir(target_dir);
    let modules: Vec<PathBuf> = if packages.is_empty() {
        std::fs::read_dir(&core)
            .map_err(|e| format!("reading {}: {e}", core.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect()
    } else {
        packages
            .iter()
            .map(|p| core.join(component_file(p)))
            .collect()
    };
    for module in modules {
        if !module.is_file() {
            let crate_name = module.file_stem().unwrap_or_default().to_string_lossy();
            return Err(format!(
                "\"{crate_name}\" built no component: is it a plugin crate (crate-type cdylib, exporting a plugin)?"
            ));
        }
        let name = module.file_name().expect("a .wasm file");
        componentize(&module, &output_dir(target_dir).join(name))?;
    }
    Ok(())
}

/// The file a plugin crate's build writes (`my-plugin` → `my_plugin.wasm`,
/// as cargo names the module).
pub fn component_file(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

/// Makes the core module at `module` (with the component type wit-bindgen
/// embedded in it) a component at `out`. An unchanged component is left
/// alone, so a watching server does not reload for nothing; a changed one is
/// written beside and renamed into place, so it never reads half of one.
pub fn componentize(module: &Path, out: &Path) -> Result<(), String> {
    let bytes = std::fs::read(module).map_err(|e| format!("reading {}: {e}", module.display()))?;
    if let Some(room) = heap_room(&bytes).filter(|room| *room < HEAP_ROOM_WANTED) {
        eprintln!(
            "warning: {} leaves {} KiB of its initial memory past its data for the heap \
             (less than {} KiB): its first allocation past the SDK's arena grows memory; \
             raise --initial-memory in plugins/.cargo/config.toml",
            module.display(),
            room >> 10,
            HEAP_ROOM_WANTED >> 10
        );
    }
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&bytes)
        .and_then(|mut encoder| encoder.encode())
        .map_err(|e| format!("making {} a component: {e:#}", module.display()))?;
    if std::fs::read(out).is_ok_and(|old| old == component) {
        return Ok(());
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let tmp = temp_beside(out);
    std::fs::write(&tmp, &component).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, out).map_err(|e| format!("moving {} into place: {e}", out.display()))
}

/// The initial memory a plugin should leave past its data and stack: the
/// SDK's `dlmalloc` takes that room whole on its first request, but only
/// when the request fits in it (a first request is at least 64 KiB, and a
/// reader's buffer 1 MiB); otherwise the room is lost and memory grows.
pub const HEAP_ROOM_WANTED: u64 = 1 << 20;

/// Bytes of a core module's initial memory past `__heap_base` (its data and
/// stack), where its heap starts; `None` when the module does not say (no
/// exported `__heap_base`, or no memory of its own).
pub fn heap_room(core: &[u8]) -> Option<u64> {
    use wasmparser::{ExternalKind, Operator, Parser, Payload, TypeRef};
    let mut imported_globals = 0;
    let mut globals = Vec::new();
    let (mut heap_base, mut initial) = (None, None);
    for payload in Parser::new(0).parse_all(core) {
        match payload.ok()? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if matches!(import.ok()?.ty, TypeRef::Global(_)) {
                        imported_globals += 1;
                    }
                }
            }
            Payload::MemorySection(memories) => {
                initial = memories.into_iter().next()?.ok().map(|m| m.initial);
            }
            Payload::GlobalSection(section) => {
                for global in section {
                    let value = match global.ok()?.init_expr.get_operators_reader().read() {
                        Ok(Operator::I32Const { value }) => u64::try_from(value).ok(),
                        _ => None,
                    };
                    globals.push(value);
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.ok()?;
                    if export.name == "__heap_base" && export.kind == ExternalKind::Global {
                        heap_base = export.index.checked_sub(imported_globals);
                    }
                }
            }
            _ => {}
        }
    }
    let base = (*globals.get(heap_base? as usize)?)?;
    Some((initial? * 65536).saturating_sub(base))
}

/// A temporary name beside `out`, this process's own: two builds at once
/// (the operator's and the test suite's) never rename each other's half
/// written file into place.
fn temp_beside(out: &Path) -> PathBuf {
    out.with_extension(format!("wasm.{}.tmp", std::process::id()))
}

/// The componentize-py this project pins (`.ci/run` installs it).
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Builds a Python check (`app.py` in `app_dir`) into a component at `out`
/// with componentize-py, against the `check-plugin` world. The component is
/// written beside and renamed into place, so a watching server never reads
/// half of it.
pub fn build_python(wit: &Path, app_dir: &Path, out: &Path) -> Result<(), String> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let tmp = temp_beside(out);
    let status = Command::new("componentize-py")
        .current_dir(app_dir)
        .arg("-d")
        .arg(wit)
        .args(["-w", "check-plugin", "componentize", "app", "-o"])
        .arg(&tmp)
        .status()
        .map_err(|e| {
            format!(
                "running componentize-py ({e}); install it with `pip install {COMPONENTIZE_PY}`"
            )
        })?;
    if !status.success() {
        return Err(format!(
            "componentize-py failed for {} (see the output above)",
            app_dir.display()
        ));
    }
    // Unchanged: left alone, so a watching server does not reload for nothing.
    if let (Ok(old), Ok(new)) = (std::fs::read(out), std::fs::read(&tmp))
        && old == new
    {
        let _ = std::fs::remove_file(&tmp);
        return Ok(());
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("moving {} into place: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_room_is_the_initial_memory_past_heap_base() {
        let module = wat::parse_str(
            r#"(module
                 (import "env" "g" (global i32))
                 (memory 2)
                 (global i32 (i32.const 1048576))
                 (global i32 (i32.const 100000))
                 (export "__heap_base" (global 2)))"#,
        )
        .unwrap();
        assert_eq!(heap_room(&module), Some(2 * 65536 - 100000));
        let silent = wat::parse_str("(module (memory 2))").unwrap();
        assert_eq!(heap_room(&silent), None);
    }
}
