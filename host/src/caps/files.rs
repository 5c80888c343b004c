//! `neo:ops/files`: read-only access to exactly the files the manifest grants,
//! e.g. only the CSV named by this invocation's `--csv` argument.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::bindings::neo::ops::files as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::runtime::Trigger;
use crate::runtime::state::StoreState;

const MAX_READ: u32 = 4 << 20;

/// Resolves `files` grants for one invocation: literal paths as they are,
/// `arg:--flag` to the value of that flag in the command or schedule args.
pub fn resolve_grants(grants: &[String], trigger: Option<&Trigger>) -> Vec<PathBuf> {
    // Literal paths hold for every call (a preflight check has no trigger);
    // `arg:--flag` paths only for a command or schedule that passes the flag.
    let args: &[String] = match trigger {
        Some(Trigger::Command(a)) => a,
        Some(Trigger::Schedule { args, .. }) => args,
        _ => &[],
    };
    grants
        .iter()
        .filter_map(|g| match g.strip_prefix("arg:") {
            None => Some(PathBuf::from(g)),
            Some(flag) => flag_value(args, flag).map(PathBuf::from),
        })
        .filter_map(|p| std::path::absolute(p).ok())
        .collect()
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&prefix)
        }
    })
}

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

    async fn read(&mut self, path: String, offset: u64, len: u32) -> Result<Vec<u8>, WitError> {
        let file = self.granted_file(&path)?;
        let len = len.min(MAX_READ) as usize;
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&file)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(len);
            f.take(len as u64).read_to_end(&mut buf)?;
            Ok(buf)
        })
        .await
        .map_err(|e| WitError::new(ErrorCode::Failed, e.to_string()))?
        .map_err(|e| io_error(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_grants_resolve_to_the_named_flag_only() {
        let trigger = Trigger::Command(vec![
            "--csv".into(),
            "/tmp/r.csv".into(),
            "--threshold=5".into(),
        ]);
        let grants = vec![
            "arg:--csv".to_string(),
            "arg:--missing".to_string(),
            "/etc/neo/x.conf".to_string(),
        ];
        assert_eq!(
            resolve_grants(&grants, Some(&trigger)),
            vec![
                PathBuf::from("/tmp/r.csv"),
                PathBuf::from("/etc/neo/x.conf")
            ]
        );
        let eq = Trigger::Command(vec!["--csv=/tmp/a.csv".into()]);
        assert_eq!(
            resolve_grants(&grants[..1], Some(&eq)),
            vec![PathBuf::from("/tmp/a.csv")]
        );
        // A preflight check has no trigger: literal grants only.
        assert_eq!(
            resolve_grants(&grants, None),
            vec![PathBuf::from("/etc/neo/x.conf")]
        );
    }
}
