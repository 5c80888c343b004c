//! Builds the plugins (a separate workspace, for wasm32-wasip2) so that
//! `cargo run` and `cargo test` need no extra step, and captures the git SHA
//! and build time for `version.json`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let host_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = host_dir.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    // The inner build needs its own target dir: sharing ours deadlocks on
    // cargo's build lock.
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("plugins");

    for path in ["plugins", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join(".git/HEAD").display()
    );

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_wasm_target();
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // Don't leak the outer build's compiler settings (clippy's wrapper,
    // host RUSTFLAGS) into the wasm build.
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
    let status = cmd.status().expect("running cargo to build the plugins");
    if !status.success() {
        panic!("building the plugins for wasm32-wasip2 failed (see the output above)");
    }
    let out = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=NEO_OPS_BUILT_PLUGINS={}", out.display());

    let sha = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NEO_OPS_GIT_SHA={sha}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!("cargo:rustc-env=NEO_OPS_BUILD_TIME={now}");
}

const WASM_TARGET: &str = "wasm32-wasip2";

/// rustup installs the targets `rust-toolchain.toml` lists only when it
/// installs the toolchain itself; a machine that already has the pinned
/// toolchain lacks the target. Add it here (rustup's own command), or stop
/// with the one command to run when rustup is not there.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |root: &PathBuf| root.join("lib/rustlib").join(WASM_TARGET).is_dir();
    if sysroot.as_ref().is_some_and(installed) {
        return;
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", WASM_TARGET]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        add.args(["--toolchain", &toolchain]);
    }
    println!("cargo:warning=adding the {WASM_TARGET} target with rustup (once per toolchain)");
    match add.status() {
        Ok(status) if status.success() => {}
        _ => panic!(
            "the {WASM_TARGET} target is missing and `rustup target add {WASM_TARGET}` failed; \
             run it yourself, then build again"
        ),
    }
}
