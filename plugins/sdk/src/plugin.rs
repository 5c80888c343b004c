//! The shape of a plugin, after Zed's extension API: one method per
//! trigger, each with a default that answers clearly when the plugin was not
//! meant to be called that way. A plugin implements what it serves and
//! exports itself with `neo_ops_sdk::export_plugin!(Type)`.

use crate::args::Args;
use crate::reply::fail;
use crate::{Failure, HttpRequest, Invocation, Output, QueueMessage, ScheduleEvent, Trigger};

pub trait Plugin {
    /// Whether the plugin honours a dry run (`--dry-run`, `?dry_run=1`;
    /// `inv.dry_run`). One that does not is refused a dry run, so asking for
    /// one never does the real thing.
    const DRY_RUN: bool = false;

    /// The command's usage line: `neo-ops run <plugin> --help` (or `-h`)
    /// prints it and runs nothing. Empty: `--help` goes to `command` as any
    /// other argument.
    const USAGE: &'static str = "";

    /// A manifest route was called; match on `(req.method, req.route)`.
    fn http(inv: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        let _ = inv;
        Err(fail(
            404,
            format!("{} {} is not served here", req.method, req.route),
        ))
    }

    /// `neo-ops run <plugin> ARGS…`.
    fn command(inv: &Invocation, args: &Args) -> Result<Output, Failure> {
        let _ = (inv, args);
        Err(fail(400, "this plugin has no command"))
    }

    /// A schedule slot fired; by default the schedule's `args` run as a command.
    fn schedule(inv: &Invocation, event: &ScheduleEvent) -> Result<Output, Failure> {
        Self::command(inv, &Args::new(&event.args))
    }

    /// A job from the plugin's queue.
    fn queue(inv: &Invocation, message: &QueueMessage) -> Result<Output, Failure> {
        let _ = (inv, message);
        Err(fail(400, "this plugin consumes no queue"))
    }
}

/// Calls the method of `P` for the invocation's trigger.
pub fn dispatch<P: Plugin>(inv: Invocation) -> Result<Output, Failure> {
    if inv.dry_run && !P::DRY_RUN {
        return Err(fail(
            400,
            "this plugin has no dry run: nothing was done (run it without --dry-run or dry_run)",
        ));
    }
    match &inv.trigger {
        Trigger::Http(req) => P::http(&inv, req),
        Trigger::Command(argv) if !P::USAGE.is_empty() && asks_for_help(argv) => {
            Ok(crate::reply::text(200, P::USAGE))
        }
        Trigger::Command(argv) => P::command(&inv, &Args::new(argv)),
        Trigger::Schedule(event) => P::schedule(&inv, event),
        Trigger::Queue(message) => P::queue(&inv, message),
    }
}

/// Whether a command line asks for its usage (`--help` or `-h`).
fn asks_for_help(argv: &[String]) -> bool {
    argv.iter().any(|a| a == "--help" || a == "-h")
}

/// Exports a [`Plugin`] as the component's `handler`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __NeoOpsExport;
        impl $crate::bindings::exports::neo::ops::handler::Guest for __NeoOpsExport {
            fn run(
                inv: $crate::Invocation,
            ) -> ::core::result::Result<$crate::Output, $crate::Failure> {
                $crate::panic_hook::install();
                $crate::plugin::dispatch::<$plugin>(inv)
            }
        }
        $crate::bindings::export_plugin!(__NeoOpsExport with_types_in $crate::bindings);
    };
}

/// Exports a preflight check (a type implementing [`crate::Check`]) as the
/// component's `check`.
#[macro_export]
macro_rules! export_check {
    ($check:ty) => {
        struct __NeoOpsCheck;
        impl $crate::Check for __NeoOpsCheck {
            fn check() -> $crate::CheckOutcome {
                $crate::panic_hook::install();
                <$check as $crate::Check>::check()
            }
        }
        $crate::check_bindings::export_check!(__NeoOpsCheck with_types_in $crate::check_bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(_: &Invocation, _: &Args) -> Result<Output, Failure> {
        Ok(Output {
            status: 200,
            headers: vec![],
            body: b"done".to_vec(),
        })
    }

    struct Plain;
    impl Plugin for Plain {
        fn command(inv: &Invocation, args: &Args) -> Result<Output, Failure> {
            done(inv, args)
        }
    }

    struct Careful;
    impl Plugin for Careful {
        const DRY_RUN: bool = true;
        const USAGE: &'static str = "usage: careful [--dry-run]";
        fn command(inv: &Invocation, args: &Args) -> Result<Output, Failure> {
            done(inv, args)
        }
    }

    fn command(dry_run: bool) -> Invocation {
        Invocation {
            trigger: Trigger::Command(vec!["go".into()]),
            tenant: None,
            principal: None,
            dry_run,
            request_id: "r".into(),
        }
    }

    #[test]
    fn a_dry_run_reaches_only_a_plugin_that_honours_it() {
        let refused = dispatch::<Plain>(command(true)).unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(
            refused.message.contains("no dry run"),
            "{}",
            refused.message
        );
        assert_eq!(dispatch::<Plain>(command(false)).unwrap().body, b"done");
        assert_eq!(dispatch::<Careful>(command(true)).unwrap().body, b"done");
    }

    #[test]
    fn help_prints_the_usage_and_runs_nothing() {
        let help = |argv: &[&str]| Invocation {
            trigger: Trigger::Command(argv.iter().map(|a| a.to_string()).collect()),
            ..command(false)
        };
        for asked in [&["--help"][..], &["-h"], &["go", "--help"]] {
            let out = dispatch::<Careful>(help(asked)).unwrap();
            assert_eq!(
                (out.status, out.body),
                (200, b"usage: careful [--dry-run]".to_vec())
            );
        }
        // Without a usage, --help is an argument like any other.
        assert_eq!(dispatch::<Plain>(help(&["--help"])).unwrap().body, b"done");
    }
}
