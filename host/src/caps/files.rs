//! `neo:ops/files`: read-only access to exactly the files the manifest grants,
//! e.g. only the CSV named by this invocation's `--csv` argument.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::bindings::neo::ops::files as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::state::StoreState;

const MAX_READ: u32 = 4 << 20;

impl StoreState {
    fn granted_file(&self, path: &str) -> Result<PathBuf, WitError> {
        let wanted = std::path::absolute(Path::new(path))
            .map_err(|_| WitError::invalid(format!("bad path \"{path}\"")))?;
        if self.call.files.iter().any(|g| g == &wanted) {
            Ok(wanted)
        } else {
            tracing::warn!(plugin = %self.call.plugin.name, path, "file access denied");
            Err(WitError::denied(format!(
                "plugin \"{}\" has no file grant for \"{path}\"",
                self.call.plugin.name
            )))
        }
    }
}

impl StoreState {
    /// A granted path, or a path under a granted directory, as written;
    /// `data-dir` is the host's data directory. Nothing on disk is touched
    /// here: a path outside every grant is refused without a look (a hung
    /// network mount elsewhere must not hold the host's thread), and
    /// [`really_within`] then checks where the path really leads.
    fn granted_place(&self, path: &str) -> Result<(PathBuf, Vec<PathBuf>), WitError> {
        let wanted = if path == crate::runtime::file_grants::DATA_DIR {
            std::path::absolute(&self.call.services.settings.data_dir)
        } else {
            std::path::absolute(Path::new(path))
        }
        .map_err(|_| WitError::invalid(format!("bad path \"{path}\"")))?;
        if wanted
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(WitError::invalid(format!(
                "path \"{path}\" must not contain \"..\""
            )));
        }
        let grants: Vec<PathBuf> = self
            .call
            .files
            .iter()
            .filter(|g| wanted.starts_with(g))
            .cloned()
            .collect();
        if grants.is_empty() {
            return Err(self.no_place_grant(path));
        }
        Ok((wanted, grants))
    }

    fn no_place_grant(&self, path: &str) -> WitError {
        tracing::warn!(plugin = %self.call.plugin.name, path, "disk usage denied");
        WitError::denied(format!(
            "plugin \"{}\" has no file grant for \"{path}\"",
            self.call.plugin.name
        ))
    }
}

/// Where `wanted` really is, if that is still inside one of `grants`
/// where they really are: a symlink under a granted directory may lead
/// out of it. On a blocking thread: it reads the filesystem.
fn really_within(wanted: &Path, grants: &[PathBuf]) -> Option<PathBuf> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let wanted = real(wanted);
    grants
        .iter()
        .any(|g| wanted.starts_with(real(g)))
        .then_some(wanted)
}

/// Free and total bytes of the filesystem holding `path` (statvfs).
fn statvfs(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has a NUL byte")
    })?;
    // SAFETY: an all-zero `struct statvfs` is a valid value to be written over.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a struct statvfs we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let block = st.f_frsize;
    Ok((st.f_bavail * block, st.f_blocks * block))
}

fn io_error(path: &str, e: std::io::Error) -> WitError {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::Denied,
        _ => ErrorCode::Failed,
    };
    WitError::new(code, format!("cannot read \"{path}\": {e}"))
}

impl wit::Host for StoreState {
    async fn size(&mut self, path: String) -> Result<u64, WitError> {
        let file = self.granted_file(&path)?;
        let meta = tokio::fs::metadata(&file)
            .await
            .map_err(|e| io_error(&path, e))?;
        if !meta.is_file() {
            return Err(WitError::invalid(format!("\"{path}\" is not a file")));
        }
        Ok(meta.len())
    }

    async fn disk_usage(&mut self, path: String) -> Result<wit::DiskSpace, WitError> {
        let (wanted, grants) = self.granted_place(&path)?;
        let measured = tokio::task::spawn_blocking(move || {
            really_within(&wanted, &grants).map(|place| statvfs(&place))
        })
        .await
        .map_err(|e| WitError::new(ErrorCode::Failed, e.to_string()))?;
        let Some(measured) = measured else {
            return Err(self.no_place_grant(&path));
        };
        let (free, total) = measured.map_err(|e| io_error(&path, e))?;
        Ok(wit::DiskSpace {
            free_bytes: free,
            total_bytes: total,
        })
    }

    async fn read(&mut self, path: String, offset: u64, len: u32) -> Result<Vec<u8>, WitError> {
        let file = self.granted_file(&path)?;
        let len = u64::from(len.min(MAX_READ));
        let read = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::OpenOptionsExt;
            // Not opened unless a file: opening a FIFO or a device can act
            // on it (release a waiting writer, rewind a tape).
            if !std::fs::metadata(&file)?.is_file() {
                return Ok(None);
            }
            // Nor blocking on open, should one be put there meanwhile: it
            // would hold this thread until a writer came.
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&file)?;
            let meta = f.metadata()?;
            if !meta.is_file() {
                return Ok(None);
            }
            f.seek(SeekFrom::Start(offset))?;
            let left = meta.len().saturating_sub(offset).min(len);
            let mut buf = Vec::with_capacity(left as usize);
            f.take(len).read_to_end(&mut buf)?;
            Ok(Some(buf))
        })
        .await
        .map_err(|e| WitError::new(ErrorCode::Failed, e.to_string()))?
        .map_err(|e| io_error(&path, e))?;
        read.ok_or_else(|| WitError::invalid(format!("\"{path}\" is not a file")))
    }
}
