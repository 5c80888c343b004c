//! Builds the plugins (a separate workspace, made into components) when none are
//! built yet, so the README's `cargo run` and `cargo test` need no extra
//! step, and captures the git SHA for `version.json`. It does not watch the
//! plugins: a plugin edit never recompiles the host (`neo-ops plugin build`
//! rebuilds them in seconds; the test suite runs it too).

#[allow(dead_code)] // the Python half is the CLI's
#[path = "src/plugin_build.rs"]
mod plugin_build;

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let host_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = host_dir.parent().unwrap().to_path_buf();
    // The inner build needs its own target dir: sharing ours deadlocks on
    // cargo's build lock.
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("plugins");
    let out = plugin_build::output_dir(&target_dir);
    println!("cargo:rustc-env=NEO_OPS_BUILT_PLUGINS={}", out.display());
    println!("cargo:rustc-env=NEO_OPS_SOURCE_ROOT={}", root.display());
    println!(
        "cargo:rustc-env=NEO_OPS_PLUGINS_TARGET={}",
        target_dir.display()
    );
    // The SHA changes with every commit: watch HEAD and the branch it names.
    let git = root.join(".git");
    println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
    if let Some(branch) = std::fs::read_to_string(git.join("HEAD"))
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        println!("cargo:rerun-if-changed={}", git.join(branch).display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/plugin_build.rs");
    // sqlx::migrate! embeds the migrations: a new one must rebuild the host.
    println!("cargo:rerun-if-changed=migrations");

    let built = out.join("status_page.wasm").is_file();
    if !built {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        println!(
            "cargo:warning=building the plugins once (later: neo-ops plugin build); adding the {} target if rustup lacks it",
            plugin_build::WASM_TARGET
        );
        if let Err(e) = plugin_build::ensure_wasm_target(&rustc, &root.join("plugins")) {
            panic!("{e}");
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        if let Err(e) = plugin_build::build(&cargo, &root.join("plugins"), &target_dir, &[]) {
            panic!("{e}");
        }
    }

    let sha = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NEO_OPS_GIT_SHA={sha}");
}
