//! One `serve` per data dir on the fully embedded backends (the SQLite
//! master and the in-process kv). Such a server's queues, retries and
//! locks are in its own memory: a second one on the same files would keep
//! others of its own, and the schedule runs each left going would look
//! like the other's. It holds an exclusive lock on `<data dir>/serve.lock`
//! for its life (released by the kernel however it ends), so a second is
//! refused at start, and the first, holding it, knows that every run still
//! `running` at its start was left by one that died (`runs::Tidy`).

use std::path::Path;

/// The held lock; dropping it releases it.
pub struct SoleServer {
    _file: std::fs::File,
}

/// Takes the lock when `settings` name the embedded backends (no Redis, no
/// Postgres master): before anything is opened, so a second server
/// migrates nothing under the first. `None` on shared backends (replicas
/// are expected there), and where `flock` is not had. An error when
/// another process holds it.
pub fn claim(settings: &crate::settings::Settings) -> anyhow::Result<Option<SoleServer>> {
    let postgres =
        settings.postgres_master_url.is_some() && settings.postgres_tenant_dsn_template.is_some();
    if postgres || settings.redis_url.is_some() || !cfg!(unix) {
        return Ok(None);
    }
    settings.make_data_dir()?;
    let path = settings.data_dir.join("serve.lock");
    let held = lock(&path).map_err(|e| anyhow::anyhow!("locking \"{}\": {e}", path.display()))?;
    match held {
        Some(file) => Ok(Some(SoleServer { _file: file })),
        None => anyhow::bail!(
            "another neo-ops serve is using data dir \"{}\" (its queues and locks are in its memory): \
             stop it first, or give this one its own --data-dir",
            settings.data_dir.display()
        ),
    }
}

/// An exclusive lock on `path` (made if missing), or `None` when another
/// open file holds it.
#[cfg(unix)]
fn lock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    crate::private_fs::create_private_file(path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(None),
        _ => Err(e),
    }
}

#[cfg(not(unix))]
fn lock(_: &Path) -> std::io::Result<Option<std::fs::File>> {
    Ok(None)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.lock");
        let first = lock(&path).unwrap();
        assert!(first.is_some());
        assert!(lock(&path).unwrap().is_none());
        drop(first);
        assert!(lock(&path).unwrap().is_some());
    }
}
