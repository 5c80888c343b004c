//! Building the plugins workspace (`plugins/`, for `wasm32-wasip2`): the
//! host's build script does it once, when no components exist yet, and
//! `neo-ops plugin build [NAME…]` does it on demand — seconds, with no host
//! recompile. Also compiled into `build.rs` (by path), so it uses only std.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Where the components land under a target directory.
pub fn output_dir(target_dir: &Path) -> PathBuf {
    target_dir.join(WASM_TARGET).join("release")
}

/// rustup installs the targets `rust-toolchain.toml` lists only when it
/// installs the toolchain itself; a machine that already has the pinned
/// toolchain lacks the target. Add it (rustup's own command), or fail with
/// the one command to run when that is not possible.
pub fn ensure_wasm_target(rustc: &str) -> Result<(), String> {
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if sysroot.is_some_and(|root| root.join("lib/rustlib").join(WASM_TARGET).is_dir()) {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", WASM_TARGET]);
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

/// `cargo build --release --target wasm32-wasip2` in `workspace`, into
/// `target_dir`, for `packages` (all when empty). The outer build's compiler
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
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the plugins for {WASM_TARGET} failed (see the output above)"
        ))
    }
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
    let tmp = out.with_extension("wasm.tmp");
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
    std::fs::rename(&tmp, out).map_err(|e| format!("moving {} into place: {e}", out.display()))
}
