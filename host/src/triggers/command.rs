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
    let dry_run = args.iter().any(|a| a == "--dry-run");
    Invocation {
        trigger: Trigger::Command(args),
        tenant,
        principal: None,
        dry_run,
        request_id: super::new_request_id(),
    }
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
    runtime.invoke(plugin, invocation(args)).await
}
