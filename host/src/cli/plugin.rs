//! `neo-ops plugin build [NAME…]` and `neo-ops plugin new [check] <name>`:
//! the operator's edit loop, in the source tree this binary was built from.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Cli, load_manifest};
use crate::manifest::Manifest;
use crate::plugin_build;

/// The source tree the binary was built from.
fn source_root() -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(env!("NEO_OPS_SOURCE_ROOT"));
    if root.join("plugins/Cargo.toml").is_file() {
        Ok(root)
    } else {
        anyhow::bail!(
            "plugin commands need the neo-ops source tree this binary was built from ({}), which is not there",
            root.display()
        )
    }
}

/// Builds the named plugins (manifest names or crate names; all when none)
/// and prints where each component went.
pub fn build(cli: &Cli, names: &[String]) -> anyhow::Result<ExitCode> {
    for path in build_components(cli, names)? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// [`build`] without printing what was built: the components' paths.
fn build_components(cli: &Cli, names: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    // A name becomes part of paths: nothing but a plain name.
    if let Some(bad) = names.iter().find(|n| {
        n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        anyhow::bail!("bad plugin name \"{bad}\" (letters, digits, '-' and '_')");
    }
    let root = source_root()?;
    let manifest = load_manifest(&cli.manifest).ok();
    // A manifest name builds the crate its component is named after.
    let packages: Vec<String> = names
        .iter()
        .map(|n| {
            manifest
                .as_ref()
                .and_then(|m| m.plugins.iter().find(|p| &p.name == n))
                .and_then(|p| p.component.file_stem())
                .map_or_else(|| n.replace('-', "_"), |s| s.to_string_lossy().into_owned())
        })
        .collect();
    let target_dir = PathBuf::from(env!("NEO_OPS_PLUGINS_TARGET"));
    let out = plugin_build::output_dir(&target_dir);
    let started = std::time::Instant::now();
    let python_dir = root.join("plugins/python");
    let is_python = |p: &str| python_dir.join(p).join("app.py").is_file();
    let (python, rust): (Vec<String>, Vec<String>) =
        packages.iter().cloned().partition(|p| is_python(p));
    if !rust.is_empty() || packages.is_empty() {
        plugin_build::ensure_wasm_target("rustc", &root.join("plugins"))
            .map_err(anyhow::Error::msg)?;
        plugin_build::build("cargo", &root.join("plugins"), &target_dir, &rust)
            .map_err(anyhow::Error::msg)?;
    }
    let all_python: Vec<String> = if packages.is_empty() {
        std::fs::read_dir(&python_dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|p| is_python(p))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        python
    };
    for p in &all_python {
        plugin_build::build_python(
            &root.join("wit"),
            &python_dir.join(p),
            &out.join(plugin_build::component_file(p)),
        )
        .map_err(anyhow::Error::msg)?;
    }
    let shown: Vec<PathBuf> = if packages.is_empty() {
        let mut all: Vec<PathBuf> = std::fs::read_dir(&out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        all.sort();
        all
    } else {
        packages
            .iter()
            .map(|p| out.join(plugin_build::component_file(p)))
            .collect()
    };
    eprintln!("built in {:.1}s", started.elapsed().as_secs_f64());
    if let Some(manifest) = &manifest {
        warn_shadowed(manifest, &shown, &cli.manifest);
    }
    Ok(shown)
}

/// Warns about manifest plugins that name a component just built but load
/// another file of that name (a copy beside the manifest wins): a running
/// `serve` watches that file, so it would never see the build.
fn warn_shadowed(manifest: &Manifest, built: &[PathBuf], manifest_path: &Path) {
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    for p in &manifest.plugins {
        // By the file the build writes for it (`my-plugin.wasm` is built
        // as `my_plugin.wasm`, which a manifest naming the first never loads).
        let written = p
            .component
            .file_stem()
            .map(|s| plugin_build::component_file(&s.to_string_lossy()));
        let Some(fresh) = built
            .iter()
            .find(|b| b.file_name().map(|f| f.to_string_lossy().into_owned()) == written)
        else {
            continue;
        };
        if !same(fresh, &p.component) {
            eprintln!(
                "warning: plugin \"{}\" in {} loads {}, not the component just built ({}); remove that copy or name the built one",
                p.name,
                manifest_path.display(),
                p.component.display(),
                fresh.display()
            );
        }
    }
}

/// `plugin new check <name>` or `plugin new <name>`: a working crate and its
/// `plugins.toml` block with minimal grants.
pub fn new(cli: &Cli, words: &[String], lang: &str) -> anyhow::Result<ExitCode> {
    let (is_check, name) = match words {
        [kind, name] if kind == "check" => (true, name.as_str()),
        // `plugin new check` with the name forgotten, not a plugin "check".
        [kind] if kind == "check" => {
            anyhow::bail!("a check needs a name: neo-ops plugin new check <name>")
        }
        [name] => (false, name.as_str()),
        _ => anyhow::bail!("usage: neo-ops plugin new [check] <name> [--lang rust|python]"),
    };
    let name = name
        .strip_prefix("check-")
        .filter(|_| is_check)
        .unwrap_or(name);
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        anyhow::bail!(
            "bad plugin name \"{name}\" (lowercase letters, digits and '-', starting with a letter)"
        );
    }
    let python = match lang {
        "rust" => false,
        "python" if is_check => true,
        "python" => anyhow::bail!(
            "--lang python scaffolds checks only (plugin new check <name> --lang python)"
        ),
        other => anyhow::bail!("unknown --lang \"{other}\" (rust or python)"),
    };
    let root = source_root()?;
    let snake = name.replace('-', "_");
    if python {
        return new_python_check(cli, &root, name, &snake);
    }
    let (dir, package, plugin, block) = if is_check {
        let package = format!("check_{snake}");
        let plugin = format!("check-{name}");
        let block = format!(
            "\n[plugins.{plugin}]\ncomponent = \"{package}.wasm\"\ncheck     = true     # neo-ops run {plugin}; part of the preflight checklist\nlimits    = {{ timeout = \"10s\", memory = \"32MiB\" }}\n"
        );
        (
            root.join("plugins/checks").join(name),
            package,
            plugin,
            block,
        )
    } else {
        refuse_taken_route(cli, &format!("/{name}"))?;
        let block = format!(
            "\n[plugins.{name}]\ncomponent = \"{snake}.wasm\"\nroutes    = [{{ method = \"GET\", path = \"/{name}\", role = \"admin\" }}]\ncommand   = true     # neo-ops run {name}\nlimits    = {{ timeout = \"10s\", memory = \"32MiB\" }}\n"
        );
        (
            root.join("plugins").join(name),
            snake.clone(),
            name.to_string(),
            block,
        )
    };
    refuse_existing(cli, &root, &dir, &plugin, &package)?;
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("Cargo.toml"), cargo_toml(&package, is_check))?;
    if is_check {
        std::fs::write(dir.join("src/lib.rs"), check_lib(&plugin))?;
    } else {
        std::fs::write(dir.join("src/lib.rs"), plugin_lib(name))?;
        add_member(&root.join("plugins/Cargo.toml"), name)?;
    }
    finish_scaffold(cli, &dir, &plugin, &block, &dir.join("src/lib.rs"))
}

/// Refuses to scaffold over an existing directory, plugin or component
/// name, or into a manifest that does not load (the new block would bury
/// its error under another, and the check for taken routes could not be
/// made).
fn refuse_existing(
    cli: &Cli,
    root: &Path,
    dir: &Path,
    plugin: &str,
    component: &str,
) -> anyhow::Result<()> {
    let manifest = manifest_if_any(cli)?;
    if dir.exists() {
        anyhow::bail!("{} already exists", dir.display());
    }
    // As loaded: `[plugins."x"]` or `x = {…}` under `[plugins]` name it too.
    if manifest
        .iter()
        .flat_map(|m| &m.plugins)
        .any(|p| p.name == plugin)
    {
        anyhow::bail!(
            "{} already has a plugin named \"{plugin}\"",
            cli.manifest.display()
        );
    }
    let file = plugin_build::component_file(component);
    if taken_components(root).contains(&file) {
        anyhow::bail!(
            "a plugin in {} already builds {file}: choose another name",
            root.join("plugins").display()
        );
    }
    Ok(())
}

/// The component files the plugin sources already build: each crate's
/// (two crates of one package name stop the whole plugins workspace from
/// building) and each Python check's, named as `plugin build` names them.
fn taken_components(root: &Path) -> Vec<String> {
    let plugins = root.join("plugins");
    let entries = |dir: PathBuf| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
    };
    let crates = entries(plugins.clone())
        .chain(entries(plugins.join("checks")))
        .filter_map(|dir| std::fs::read_to_string(dir.join("Cargo.toml")).ok())
        .filter_map(|text| {
            let table = text.parse::<toml::Table>().ok()?;
            Some(table.get("package")?.get("name")?.as_str()?.to_string())
        });
    let python = entries(plugins.join("python"))
        .filter_map(|dir| Some(dir.file_name()?.to_string_lossy().into_owned()));
    crates
        .chain(python)
        .map(|name| plugin_build::component_file(&name))
        .collect()
}

/// The manifest, if there is one yet; an error if it does not load.
fn manifest_if_any(cli: &Cli) -> anyhow::Result<Option<Manifest>> {
    if !cli.manifest.exists() {
        return Ok(None);
    }
    super::load_manifest(&cli.manifest).map(Some).map_err(|e| {
        e.context(format!(
            "{} does not load; fix it before adding a plugin",
            cli.manifest.display()
        ))
    })
}

/// Refuses a scaffold whose route the host or a plugin already serves: the
/// manifest would no longer load, and nothing else would either.
fn refuse_taken_route(cli: &Cli, route: &str) -> anyhow::Result<()> {
    if crate::manifest::host_routes::ALL.contains(&route) {
        anyhow::bail!("route \"{route}\" is served by the host: choose another plugin name");
    }
    let manifest = manifest_if_any(cli)?;
    let owner = manifest.iter().flat_map(|m| &m.plugins).find(|p| {
        p.routes
            .iter()
            .any(|r| r.path.trim_end_matches('/') == route)
    });
    if let Some(p) = owner {
        anyhow::bail!(
            "route \"{route}\" is already served by plugin \"{}\" in {}: choose another plugin name",
            p.name,
            cli.manifest.display()
        );
    }
    Ok(())
}

/// Builds the scaffold, then appends the plugin's block to the manifest and
/// says what to do next. Built first: a manifest naming a component not
/// built yet does not load, so a restart meanwhile would serve nothing.
fn finish_scaffold(
    cli: &Cli,
    dir: &Path,
    plugin: &str,
    block: &str,
    edit: &Path,
) -> anyhow::Result<ExitCode> {
    // Nothing printed until the manifest has the block: a closed pipe ends
    // the process at the first line, which must not leave half a scaffold.
    let built = match build_components(cli, &[plugin.to_string()]) {
        Ok(built) => built,
        Err(e) => {
            eprintln!(
                "{} was left as it was: fix {}, run `neo-ops plugin build {plugin}`, then add this block to it:{block}",
                cli.manifest.display(),
                edit.display()
            );
            return Err(e.context(format!("the new plugin \"{plugin}\" did not build")));
        }
    };
    append_whole(&cli.manifest, block)?;
    println!("created {}", dir.display());
    for path in built {
        println!("built {}", path.display());
    }
    println!("added [plugins.{plugin}] to {}", cli.manifest.display());
    println!(
        "next: edit {}, then `neo-ops plugin build {plugin}` (a running serve picks it up)",
        edit.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Appends `block` to the manifest by writing the whole new text beside it
/// and renaming it into place: a full disk or a crash leaves the manifest
/// as it was, never half a block a running serve would reload.
fn append_whole(manifest: &Path, block: &str) -> anyhow::Result<()> {
    // Through a link (a manifest kept in a config checkout): the file it
    // names is replaced, and the link stays.
    let resolved = std::fs::canonicalize(manifest);
    let manifest = resolved.as_deref().unwrap_or(manifest);
    let before = match std::fs::read_to_string(manifest) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", manifest.display())),
    };
    let file = manifest
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = manifest.with_file_name(format!(".{file}.new"));
    let written = (|| {
        let mut out = std::fs::File::create(&temporary)?;
        if let Ok(meta) = std::fs::metadata(manifest) {
            out.set_permissions(meta.permissions())?;
        }
        std::io::Write::write_all(&mut out, format!("{before}{block}").as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, manifest)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        anyhow::bail!("cannot write {}: {e}", manifest.display());
    }
    Ok(())
}

/// Python checks live in `plugins/python/<component>/app.py` and are built
/// with componentize-py against the same WIT.
fn new_python_check(cli: &Cli, root: &Path, name: &str, snake: &str) -> anyhow::Result<ExitCode> {
    let package = format!("check_{snake}");
    let plugin = format!("check-{name}");
    let dir = root.join("plugins/python").join(&package);
    refuse_existing(cli, root, &dir, &plugin, &package)?;
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("app.py"), python_check(&plugin))?;
    // The Python runtime needs room: 64 MiB is its floor here.
    let block = format!(
        "\n[plugins.{plugin}]\ncomponent = \"{package}.wasm\"\ncheck     = true     # Python (componentize-py); neo-ops run {plugin}\nlimits    = {{ timeout = \"10s\", memory = \"64MiB\" }}\n"
    );
    finish_scaffold(cli, &dir, &plugin, &block, &dir.join("app.py"))
}

fn python_check(plugin: &str) -> String {
    format!(
        r#""""{plugin}: what this check makes sure of, and what an operator does when it fails."""

from wit_world import exports
from wit_world.exports.check import Outcome, Status


class Check(exports.Check):
    def check(self) -> Outcome:
        healthy = True
        if healthy:
            return Outcome(Status.PASS, "all good", None)
        return Outcome(Status.FAIL, "what is wrong", "what to do about it")
"#
    )
}

/// A plugin crate in the plugins workspace (checks also use `check_common`).
fn cargo_toml(package: &str, check: bool) -> String {
    let common = if check {
        "check_common = { path = \"../common\" }\n"
    } else {
        ""
    };
    format!(
        "[package]\nname = \"{package}\"\nedition.workspace = true\nversion.workspace = true\nlicense.workspace = true\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nneo-ops-sdk.workspace = true\n{common}"
    )
}

fn check_lib(plugin: &str) -> String {
    format!(
        r#"//! {plugin}: what this check makes sure of, and what an operator does when it fails.

use check_common::{{fail, pass}};
use neo_ops_sdk::{{Check, CheckOutcome}};

struct ThisCheck;

impl Check for ThisCheck {{
    fn check() -> CheckOutcome {{
        let healthy = true;
        if healthy {{
            pass("all good")
        }} else {{
            fail("what is wrong", "what to do about it")
        }}
    }}
}}

neo_ops_sdk::export_check!(ThisCheck);
"#
    )
}

fn plugin_lib(name: &str) -> String {
    format!(
        r#"//! {name}: what this plugin does.

use neo_ops_sdk::serde_json::json;
use neo_ops_sdk::{{Failure, HttpRequest, Invocation, Output, Plugin, args::Args, reply}};

struct ThisPlugin;

impl Plugin for ThisPlugin {{
    fn http(_: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {{
        Ok(reply::ok(json!({{"route": req.route}})))
    }}

    fn command(_: &Invocation, args: &Args) -> Result<Output, Failure> {{
        args.only_flags(&[], &[], "usage: {name}")?;
        Ok(reply::text(200, "{name}: ok"))
    }}
}}

neo_ops_sdk::export_plugin!(ThisPlugin);
"#
    )
}

/// Adds a crate to the plugins workspace's `members` (checks are in by glob).
fn add_member(workspace: &Path, name: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(workspace)?;
    let Some(at) = text.find("members = [") else {
        anyhow::bail!("no members list in {}", workspace.display());
    };
    let insert = at + "members = [".len();
    let updated = format!("{}\n    \"{name}\",{}", &text[..insert], &text[insert..]);
    std::fs::write(workspace, updated)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block is added to what the manifest held, the file's mode kept,
    /// and a manifest reached through a link stays a link.
    #[cfg(unix)]
    #[test]
    fn a_block_goes_into_the_manifest_a_link_names() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("config.toml");
        std::fs::write(&real, "[plugins.a]\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("plugins.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        append_whole(&link, "\n[plugins.b]\n").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&real).unwrap(),
            "[plugins.a]\n\n[plugins.b]\n"
        );
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // A manifest not there yet is made.
        let new = dir.path().join("new.toml");
        append_whole(&new, "[plugins.c]\n").unwrap();
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "[plugins.c]\n");
    }
}
