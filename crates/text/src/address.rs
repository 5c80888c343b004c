//! What counts as one plain mail address: `local@domain`, nothing that
//! could add recipients or headers, and nothing the mailer would refuse
//! later (a digest that fails every night on a stored address). The CLI
//! (`tenant set --owner-email`) and the export plugin (a job's `email`) both
//! use it; the host's tests hold it to the mailer's own parser.

/// Whether `s` is one plain address: a dot-atom local part (RFC 5322 atext,
/// UTF-8 allowed) and a domain of two or more labels of letters, digits and
/// inner hyphens.
pub fn is_plain(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let label_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
    let wide = |c: char| !c.is_ascii() && !c.is_whitespace() && !c.is_control();
    let dot_atom = |part: &str, ok: &dyn Fn(char) -> bool| {
        part.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(|c| ok(c) || wide(c)))
    };
    let labels: Vec<&str> = domain.split('.').collect();
    local.len() <= 64
        && domain.len() <= 253
        && dot_atom(local, &atext)
        && labels.len() >= 2
        && dot_atom(domain, &label_char)
        && labels
            .iter()
            .all(|l| l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'))
}

/// Addresses [`is_plain`] takes, of every shape it takes: the host's tests
/// check that the mailer parses each one.
pub const PLAIN_SAMPLES: &[&str] = &[
    "owner@acme.example",
    "first.last+tag@mail.acme.example",
    "o'brien@acme.example",
    "x@a-b.example",
    "josé@acme.example",
];

#[cfg(test)]
mod tests {
    use super::{PLAIN_SAMPLES, is_plain};

    const BAD: &[&str] = &[
        "owner",
        "@acme.example",
        "a@b",
        "a@.b",
        "a@b.",
        "a@b.c, x@y.z",
        "a b@c.d",
        "a@b.c\r\nBcc: x@y.z",
        "owner..x@acme.com",
        ".a@b.com",
        "a.@b.com",
        "a@b..com",
        "a@-b.com",
        "a@b-.com",
        "a:b@c.com",
        "a@b@c.com",
        "\"a\"@b.com",
        "a@[127.0.0.1]",
        "a@b_c.com",
    ];

    #[test]
    fn one_plain_address_only() {
        for good in PLAIN_SAMPLES {
            assert!(is_plain(good), "{good}");
        }
        for bad in BAD {
            assert!(!is_plain(bad), "{bad}");
        }
    }
}
