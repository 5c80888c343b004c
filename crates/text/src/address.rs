//! What counts as one plain mail address: `local@domain`, nothing that
//! could add recipients or headers. The CLI (`tenant set --owner-email`) and
//! the export plugin (a job's `email`) both use it.

/// Whether `s` is one plain address.
pub fn is_plain(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ",;<>\"()[]\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::is_plain;

    #[test]
    fn one_plain_address_only() {
        assert!(is_plain("owner@acme.example"));
        for bad in [
            "owner",
            "@acme.example",
            "a@b",
            "a@.b",
            "a@b.",
            "a@b.c, x@y.z",
            "a b@c.d",
            "a@b.c\r\nBcc: x@y.z",
        ] {
            assert!(!is_plain(bad), "{bad}");
        }
    }
}
