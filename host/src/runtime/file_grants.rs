//! Which files an invocation may read: the manifest's `files` grants,
//! resolved against the invocation's arguments (`arg:--csv` is the path given
//! to `--csv`). The `files` capability checks reads against the result.

use std::path::PathBuf;

use super::Trigger;

/// The grant (and path) that names the host's data directory.
pub const DATA_DIR: &str = "data-dir";

/// Resolves `files` grants for one invocation: literal paths as they are,
/// `arg:--flag` to the value of that flag in the command or schedule args,
/// `data-dir` to the host's data directory.
pub fn resolve_grants(
    grants: &[String],
    trigger: Option<&Trigger>,
    data_dir: &std::path::Path,
) -> Vec<PathBuf> {
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
            None if g == DATA_DIR => Some(data_dir.to_path_buf()),
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
            resolve_grants(&grants, Some(&trigger), std::path::Path::new("/d")),
            vec![
                PathBuf::from("/tmp/r.csv"),
                PathBuf::from("/etc/neo/x.conf")
            ]
        );
        let eq = Trigger::Command(vec!["--csv=/tmp/a.csv".into()]);
        assert_eq!(
            resolve_grants(&grants[..1], Some(&eq), std::path::Path::new("/d")),
            vec![PathBuf::from("/tmp/a.csv")]
        );
        // A preflight check has no trigger: literal grants only.
        assert_eq!(
            resolve_grants(&grants, None, std::path::Path::new("/d")),
            vec![PathBuf::from("/etc/neo/x.conf")]
        );
    }
}
