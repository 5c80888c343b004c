//! Command-line flags the way the spec's scripts took them:
//! `--tenant NAME`, `--tenant=NAME`, `--verbose`, plus positionals.

use crate::reply::fail;
use crate::{Failure, Invocation};

/// Flags the host reads on every command line. `--tenant` always takes
/// the argument after it, but only a plugin that lists it accepts it (one
/// that ignored it would list every tenant's records as if they were that
/// tenant's); `--dry-run` every plugin accepts (the SDK refuses it for a
/// plugin without one).
const HOST_VALUE_FLAGS: &[&str] = &["--tenant"];
const HOST_BOOL_FLAGS: &[&str] = &["--dry-run"];

/// Parsed arguments of a command invocation.
#[derive(Debug, Clone, Default)]
pub struct Args {
    items: Vec<String>,
}

impl Args {
    pub fn new(items: &[String]) -> Self {
        Self {
            items: items.to_vec(),
        }
    }

    /// Refuses a `--flag` that is neither in `value_flags` (which take a
    /// value), nor in `bool_flags`, nor `--dry-run`, a value flag with no
    /// value, and a value flag given
    /// twice (`--threshold 5 --threshold 50`: which one was meant?); the
    /// error quotes the flag and ends with `usage`.
    pub fn strict(
        &self,
        value_flags: &[&str],
        bool_flags: &[&str],
        usage: &str,
    ) -> Result<&Self, Failure> {
        let mut iter = self.items.iter();
        let mut given = Vec::new();
        while let Some(item) = iter.next() {
            if !item.starts_with("--") {
                continue;
            }
            let (name, inline_value) = match item.split_once('=') {
                Some((n, _)) => (n, true),
                None => (item.as_str(), false),
            };
            if value_flags.contains(&name) {
                if !inline_value && iter.next().is_none() {
                    return Err(fail(400, format!("{name} needs a value ({usage})")));
                }
                if given.contains(&name) {
                    return Err(fail(400, format!("{name} is given twice ({usage})")));
                }
                given.push(name);
            } else if !(bool_flags.contains(&name) || HOST_BOOL_FLAGS.contains(&name))
                || inline_value
            {
                return Err(fail(400, format!("unknown flag \"{item}\" ({usage})")));
            }
        }
        Ok(self)
    }

    /// [`Args::strict`], and no positional arguments either.
    pub fn only_flags(
        &self,
        value_flags: &[&str],
        bool_flags: &[&str],
        usage: &str,
    ) -> Result<&Self, Failure> {
        self.strict(value_flags, bool_flags, usage)?;
        match self.positionals(value_flags).first() {
            Some(p) => Err(fail(400, format!("unexpected argument \"{p}\" ({usage})"))),
            None => Ok(self),
        }
    }

    /// A dry run: `--dry-run` here, or set by the host for this invocation.
    pub fn dry_run(&self, inv: &Invocation) -> bool {
        inv.dry_run || self.flag("--dry-run")
    }

    /// Whether a boolean flag such as `--verbose` is present.
    pub fn flag(&self, name: &str) -> bool {
        self.items.iter().any(|a| a == name)
    }

    /// The value of `--name VALUE` or `--name=VALUE`.
    pub fn value(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}=");
        let mut iter = self.items.iter();
        while let Some(item) = iter.next() {
            if item == name {
                return iter.next().map(String::as_str);
            }
            if let Some(v) = item.strip_prefix(&prefix) {
                return Some(v);
            }
        }
        None
    }

    /// Arguments that are neither flags nor flag values. A flag listed in
    /// `with_values`, or one of the host's that takes a value (`--tenant`),
    /// consumes the argument after it.
    pub fn positionals(&self, with_values: &[&str]) -> Vec<&str> {
        let mut out = Vec::new();
        let mut iter = self.items.iter();
        while let Some(item) = iter.next() {
            if item.starts_with("--") {
                let name = item.as_str();
                if with_values.contains(&name) || HOST_VALUE_FLAGS.contains(&name) {
                    iter.next();
                }
            } else {
                out.push(item.as_str());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Args {
        Args::new(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_value_flag_given_twice_is_refused() {
        let twice = args(&["--threshold", "5", "--threshold=50"]);
        let err = twice.strict(&["--threshold"], &[], "usage").unwrap_err();
        assert_eq!(err.message, "--threshold is given twice (usage)");
        let once = args(&["--threshold", "5", "--verbose", "--verbose"]);
        assert!(
            once.strict(&["--threshold"], &["--verbose"], "usage")
                .is_ok()
        );
    }

    #[test]
    fn values_flags_and_positionals() {
        let a = args(&[
            "start",
            "--tenant",
            "acme",
            "--verbose",
            "--threshold=5",
            "x",
        ]);
        assert_eq!(a.value("--tenant"), Some("acme"));
        assert_eq!(a.value("--threshold"), Some("5"));
        assert!(a.flag("--verbose"));
        assert!(!a.flag("--dry-run"));
        assert_eq!(a.positionals(&["--tenant"]), vec!["start", "x"]);
        // The host's `--tenant` takes its value whether or not it is listed.
        assert_eq!(a.positionals(&[]), vec!["start", "x"]);
    }

    #[test]
    fn strict_refuses_unknown_flags_and_missing_values() {
        let usage = "usage: x [--csv FILE] [--json]";
        let ok = args(&[
            "--csv",
            "a.csv",
            "--json",
            "--tenant=acme",
            "--dry-run",
            "pos",
        ]);
        assert!(
            ok.strict(&["--csv", "--tenant"], &["--json"], usage)
                .is_ok()
        );
        // A plugin that takes no tenant refuses one rather than ignore it.
        let e = ok.strict(&["--csv"], &["--json"], usage).unwrap_err();
        assert_eq!(
            e.message,
            format!("unknown flag \"--tenant=acme\" ({usage})")
        );
        let e = args(&["--csv", "a", "--jsn"])
            .strict(&["--csv"], &["--json"], usage)
            .unwrap_err();
        assert_eq!(e.message, format!("unknown flag \"--jsn\" ({usage})"));
        let e = args(&["--csv"]).strict(&["--csv"], &[], usage).unwrap_err();
        assert_eq!(e.message, format!("--csv needs a value ({usage})"));
        assert!(args(&["--json=1"]).strict(&[], &["--json"], usage).is_err());
    }
}
