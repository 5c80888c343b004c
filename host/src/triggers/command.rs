//! Command-line trigger: `neo-ops run <plugin> [args…]`. Flags the host
//! understands (`--tenant`, `--dry-run`) are also passed on to the plugin.

use crate::runtime::{Invocation, InvokeError, Output, Runtime, Trigger};

/// Builds the invocation for a command line.
pub fn invocation(args: Vec<String>) -> Invocation {
    let tenant = args
        .iter()
        .position(|a| a == "--tenant")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--tenant=").map(str::to_string))
        });
    let dry_run = asks_for_dry_run(&args);
    Invocation {
        trigger: Trigger::Command(args),
        tenant,
        principal: None,
        dry_run,
        request_id: super::new_request_id(),
    }
}

/// Whether a command line asks for a dry run.
pub fn asks_for_dry_run(args: &[String]) -> bool {
    args.iter().any(|a| a == "--dry-run")
}

pub async fn run(
    runtime: &Runtime,
    plugin: &str,
    args: Vec<String>,
) -> Result<Output, InvokeError> {
    let p = runtime
        .plugin(plugin)
        .ok_or_else(|| InvokeError::UnknownPlugin(plugin.to_string()))?;
    if !p.manifest.command {
        return Err(InvokeError::Failed {
            status: 400,
            message: format!(
                "plugin \"{plugin}\" is not a command (set command = true in the manifest)"
            ),
        });
    }
    one_tenant(&args)?;
    runtime.invoke(plugin, invocation(args)).await
}

/// Refuses `--tenant` given twice: the host and a plugin could each take
/// another one, and the plugin act on one tenant while the run is logged
/// and audited as the other's.
fn one_tenant(args: &[String]) -> Result<(), InvokeError> {
    let named = args
        .iter()
        .filter(|a| *a == "--tenant" || a.starts_with("--tenant="))
        .count();
    if named > 1 {
        return Err(InvokeError::Failed {
            status: 400,
            message: format!("--tenant given {named} times: name one tenant per run"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_names_one_tenant_at_most() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(one_tenant(&args(&["--tenant", "acme", "--dry-run"])).is_ok());
        assert!(one_tenant(&args(&["--tenant=acme"])).is_ok());
        assert!(one_tenant(&args(&[])).is_ok());
        for twice in [
            &["--tenant=acme", "--tenant", "beta"][..],
            &["--tenant", "acme", "--tenant", "acme"],
            &["--tenant=a", "--tenant=b"],
        ] {
            let err = one_tenant(&args(twice)).unwrap_err();
            assert_eq!(err.status(), 400, "{twice:?}");
            assert!(err.to_string().contains("--tenant given 2 times"), "{err}");
        }
    }
}
