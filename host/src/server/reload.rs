//! Keeps the served plugin set in step with the manifest: polls the
//! manifest and its components once a second (and reloads on SIGHUP),
//! compiles a changed set in the background, and swaps it in whole. A set
//! that does not load leaves the previous one serving; why is logged and
//! shown on `/readyz` until a good set loads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use super::Live;
use crate::manifest;
use crate::runtime::Runtime;

/// How often the files are looked at.
const POLL: Duration = Duration::from_secs(1);
/// A change is acted on once the files have been still this long (a build
/// writing a component, an editor saving the manifest).
const SETTLE: Duration = Duration::from_millis(300);

/// What the files looked like.
type Fingerprint = Vec<(PathBuf, Stamp)>;

/// One file's modification time and length and, on Unix, its inode and
/// status-change time: a copy that keeps the old modification time and
/// length (`cp -p`, `rsync -t`, an unpacked archive) still changes those.
#[derive(PartialEq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    changed: (i64, i64),
}

fn fingerprint(manifest: &Path, components: &[PathBuf]) -> Fingerprint {
    std::iter::once(manifest)
        .chain(components.iter().map(PathBuf::as_path))
        .map(stat)
        .collect()
}

fn stat(path: &Path) -> (PathBuf, Stamp) {
    let meta = std::fs::metadata(path).ok();
    #[cfg(unix)]
    let (inode, changed) = {
        use std::os::unix::fs::MetadataExt;
        meta.as_ref()
            .map_or((0, (0, 0)), |m| (m.ino(), (m.ctime(), m.ctime_nsec())))
    };
    #[cfg(not(unix))]
    let (inode, changed) = (0, (0, 0));
    let stamp = Stamp {
        modified: meta.as_ref().and_then(|m| m.modified().ok()),
        len: meta.map_or(0, |m| m.len()),
        inode,
        changed,
    };
    (path.to_path_buf(), stamp)
}

pub async fn watch(live: Arc<Live>, manifest_path: PathBuf, shutdown: CancellationToken) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut components: Vec<PathBuf> = Vec::new();
    let mut seen: Option<Fingerprint> = None;
    let mut forced = true;
    // A SIGHUP asks for the manifest as it is, even one naming no plugin.
    let mut asked = false;
    loop {
        let now = fingerprint(&manifest_path, &components);
        if forced || seen.as_ref() != Some(&now) {
            // Let a write in progress finish before reading (not at start:
            // nothing is being written then, and the port is waiting).
            if seen.is_some() {
                settle(&manifest_path, &components, now).await;
            }
            match load(&live, &manifest_path, &shutdown, asked).await {
                Some((paths, before)) => {
                    components = paths;
                    // The files as they were read: a write landing during
                    // the compile is seen as a change next time.
                    seen = Some(before);
                    forced = false;
                }
                // A manifest that did not load (say, naming a component not
                // built yet) is read again next time: it is cheap, and the
                // file it waits for may appear without the manifest changing.
                None => forced = true,
            }
        }
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
            _ = hup => {
                tracing::info!("SIGHUP: reloading the plugin set");
                forced = true;
                asked = true;
                continue;
            }
        }
        asked = false;
    }
}

/// Waits until the files have stayed as they are for [`SETTLE`] (a build or
/// an editor still writing keeps changing them), for at most ten rounds.
async fn settle(manifest: &Path, components: &[PathBuf], mut last: Fingerprint) {
    for _ in 0..10 {
        tokio::time::sleep(SETTLE).await;
        let now = fingerprint(manifest, components);
        if now == last {
            return;
        }
        last = now;
    }
}

/// Loads the manifest's plugin set and installs it; returns the component
/// paths to watch and the files' fingerprint as they were read (also when
/// the set failed to compile, so fixing a component is noticed).
async fn load(
    live: &Live,
    manifest_path: &Path,
    shutdown: &CancellationToken,
    asked: bool,
) -> Option<(Vec<PathBuf>, Fingerprint)> {
    let services = live.services.clone();
    // Taken before the read: an edit landing while it is read is then seen
    // as a change next time, not recorded as what was loaded.
    let manifest_seen = stat(manifest_path);
    let manifest = match manifest::load(manifest_path) {
        Ok(m) => m,
        Err(e) => {
            refuse(live, &format!("{e}"));
            return None;
        }
    };
    for (plugin, cron) in manifest.parked_schedules() {
        tracing::warn!(
            plugin,
            cron = cron.as_str(),
            "the schedule never fires: no date matches its cron"
        );
    }
    // An emptied manifest is far likelier a save cut short (a full disk,
    // an editor that truncates first) than a wish to serve nothing.
    let serving = live.runtime().map_or(0, |rt| rt.plugins().count());
    if manifest.plugins.is_empty() && serving > 0 && !asked {
        refuse(
            live,
            &format!(
                "{} names no plugin; the {serving} serving stay (send SIGHUP to serve none)",
                manifest_path.display()
            ),
        );
        return None;
    }
    let components: Vec<PathBuf> = manifest
        .plugins
        .iter()
        .flat_map(|p| manifest::component_sources(manifest_path, &p.component))
        .collect();
    let mut before = fingerprint(manifest_path, &components);
    before[0] = manifest_seen;
    let previous = live.runtime();
    let started = std::time::Instant::now();
    let loaded = tokio::task::spawn_blocking(move || match previous {
        Some(rt) => rt.reload(&manifest),
        None => Runtime::load(&manifest, services),
    })
    .await;
    match loaded {
        Ok(Ok(runtime)) => {
            let plugins = runtime.plugins().count();
            let engine_tag = runtime.engine_tag();
            live.install(Arc::new(runtime), shutdown);
            *live
                .services
                .plugin_error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            let cache = live.services.settings.data_dir.join("cache");
            // Off the async workers: it reads and hashes every component
            // (the Python one is 18 MB) while requests are being served.
            let keep = components.clone();
            let evicted = tokio::task::spawn_blocking(move || {
                crate::runtime::cache::evict_unused(&cache, &keep, &engine_tag)
            })
            .await
            .unwrap_or(0);
            tracing::info!(
                plugins,
                millis = started.elapsed().as_millis() as u64,
                evicted,
                "plugin set loaded"
            );
        }
        Ok(Err(e)) => refuse(live, &format!("{e:#}")),
        Err(e) => refuse(live, &format!("loading the plugin set failed: {e}")),
    }
    Some((components, before))
}

/// Keeps the set being served (if any) and says why the new one was refused
/// (logged once per distinct reason).
fn refuse(live: &Live, why: &str) {
    let mut error = live
        .services
        .plugin_error
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if error.as_deref() == Some(why) {
        return;
    }
    *error = Some(why.to_string());
    drop(error);
    let serving = live.runtime().is_some();
    tracing::error!(
        error = %why,
        kept_previous = serving,
        "plugin set not loaded; {}",
        if serving { "the previous set keeps serving" } else { "routes answer 503 until a good set loads" }
    );
}
