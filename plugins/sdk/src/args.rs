//! Command-line flags the way the spec's scripts took them:
//! `--tenant NAME`, `--tenant=NAME`, `--verbose`, plus positionals.

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
    /// `with_values` consumes the argument after it.
    pub fn positionals(&self, with_values: &[&str]) -> Vec<&str> {
        let mut out = Vec::new();
        let mut iter = self.items.iter();
        while let Some(item) = iter.next() {
            if item.starts_with("--") {
                if with_values.contains(&item.as_str()) {
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
    }
}
