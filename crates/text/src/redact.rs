//! The one redaction policy. The host masks its log lines and env flags with
//! it, and plugins (through `neo_ops_sdk::redact`) everything they hand out of
//! the platform: support bundles, stored CSP reports, alert texts.
//!
//! What is masked, in any text:
//! - a URL's userinfo secret (`scheme://user:PASSWORD@host`, or a bare
//!   `scheme://TOKEN@host`);
//! - the value of any `name=value` pair whose name looks secret: query
//!   parameters (also `token[]=`, `x[token]=`), percent-encoded once or
//!   twice inside another URL, and `key=value` text; and a URL's `code`
//!   parameter (an OAuth authorization code);
//! - the value after a secret name and a colon, quoted or not
//!   (`password: X`, `"SMTP_PASS": "X"`);
//! - the credential after `Bearer `;
//! - the path of a Slack (or Discord) webhook URL, which is the credential;
//! - neo API tokens (`neo_<8 hex>_<64 hex>`);
//! - the local part of an email address (`****@example.com`): a customer's
//!   address is personal data, and the domain is enough to debug delivery.
//!
//! In JSON, values under secret-looking keys are masked whole (booleans and
//! nulls are kept: they cannot hold a secret), every other string goes
//! through the text rules, and strings that are themselves JSON are parsed
//! and redacted as JSON.

use serde_json::{self, Value};

/// A name containing any of these (case-insensitive) holds a secret.
const SECRET_WORDS: &[&str] = &[
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "SIGNATURE",
    "SESSION",
    "JWT",
    "COOKIE",
    "DSN",
    "WEBHOOK",
];

/// Short words that mark a secret only as a whole part of a name (`sig`,
/// `X-Amz-Sig`, a staff `pin`, a sign-in `otp`), since inside longer words
/// they are harmless (`signal`, `shipping`).
const SECRET_SEGMENTS: &[&str] = &["SIG", "PW", "PWD", "SID", "PIN", "OTP"];

/// Whether a variable, key or parameter name looks like it holds a secret.
/// Percent-encoded names are decoded first (twice, for nested URLs).
pub fn is_secret_name(name: &str) -> bool {
    let upper = percent_decode(&percent_decode(name)).to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
        || upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|part| SECRET_SEGMENTS.contains(&part))
}

/// Every text rule, in turn.
pub fn redact_text(s: &str, mask: &str) -> String {
    redact_with(s, mask, true)
}

/// The rules for a whole process log line: every rule but the one after a
/// colon, which in a log reads the line's own words as names (the target
/// `neo_ops::auth: …`, `plugin "webhook-dispatch": …`, `"webhook": 3
/// waiting`) and would hide what an operator needs. A log's fields are
/// `name=value`, which the other rules cover.
pub fn redact_log_line(s: &str, mask: &str) -> String {
    redact_with(s, mask, false)
}

/// The text rules in turn, the one after a colon only with `colon_values`.
fn redact_with(s: &str, mask: &str, colon_values: bool) -> String {
    let s = mask_url_passwords(s, mask);
    let s = mask_webhook_paths(&s, mask);
    let s = mask_named_values(&s, mask);
    let s = mask_bearer_credentials(&s, mask);
    let s = match colon_values {
        true => mask_colon_values(&s, mask),
        false => s,
    };
    let s = mask_api_tokens(&s, mask);
    mask_emails(&s, mask)
}

/// Masks a URL or DSN for a log line or an error message.
pub fn for_log(url: &str) -> String {
    redact_text(url, "****")
}

/// `scheme://host[:port]` of a URL (scheme lowercased), without its user
/// info, path, query or fragment: how a URL whose path may be a credential
/// (a webhook) is named in messages.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = &rest[..authority_end(rest)];
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    (scheme_ok && !host.is_empty()).then(|| format!("{}://{host}", scheme.to_ascii_lowercase()))
}

/// Where a URL's authority (after `scheme://`) ends: at its path, query or
/// fragment; a backslash too, which URL parsers take for `/` in http(s)
/// URLs (`https://h\TOKEN` requests `/TOKEN`).
fn authority_end(rest: &str) -> usize {
    rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())
}

/// URL settings whose path says where, not who: shown with their path
/// (their userinfo and secret query parameters are still masked).
const INFRASTRUCTURE_URLS: &[&str] = &[
    "POSTGRES_MASTER_URL",
    "POSTGRES_TENANT_DSN_TEMPLATE",
    "REDIS_URL",
    "ALERTMANAGER_URL",
];

/// Masks one configuration flag for display (support bundle `env.txt`):
/// secret-named variables entirely (a Slack webhook URL is a credential); in
/// URLs the whole userinfo, secret query values, and the path of any URL not
/// known to be infrastructure (paths often carry tokens).
pub fn mask_flag(name: &str, value: &str) -> String {
    const MASK: &str = "****";
    let upper = name.to_ascii_uppercase();
    if value.is_empty() {
        return String::new();
    }
    let is_url_setting = upper.ends_with("_URL") || upper.ends_with("_TEMPLATE");
    if is_secret_name(&upper) && (!is_url_setting || upper.contains("WEBHOOK")) {
        return MASK.into();
    }
    let Some(scheme_end) = value.find("://") else {
        return redact_text(value, MASK);
    };
    let rest = &value[scheme_end + 3..];
    let authority_end = authority_end(rest);
    let authority = &rest[..authority_end];
    let host = match authority.rfind('@') {
        Some(at) => format!("{MASK}@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let tail = &rest[authority_end..];
    let tail = if tail.is_empty() || tail == "/" || INFRASTRUCTURE_URLS.contains(&upper.as_str()) {
        redact_text(tail, MASK)
    } else {
        format!("/{MASK}")
    };
    format!("{}{host}{tail}", &value[..scheme_end + 3])
}

/// Redacts a JSON document in place.
pub fn redact_json(value: &mut Value, mask: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_name(key) && !matches!(v, Value::Bool(_) | Value::Null) {
                    *v = Value::String(mask.to_string());
                } else {
                    redact_json(v, mask);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_json(v, mask)),
        Value::String(s) => *s = redact_string(s, mask),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A string that holds JSON (escaped JSON in a log field) is redacted as
/// JSON, so secret keys inside it are found too.
fn redact_string(s: &str, mask: &str) -> String {
    let trimmed = s.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(mut inner) = serde_json::from_str::<Value>(s)
    {
        redact_json(&mut inner, mask);
        return inner.to_string();
    }
    redact_text(s, mask)
}

/// Bytes that end a URL's authority, a value or a credential in free text.
fn ends_token(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'\\' | b'`')
}

/// `scheme://user:PASSWORD@host` → `scheme://user:MASK@host`. The authority
/// ends at the first `/`, `?` or `#` (RFC 3986), so an `@` later in the path
/// is not mistaken for one.
fn mask_url_passwords(s: &str, mask: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(pos) = s[from..].find("://") {
        let start = from + pos + 3;
        let end = (start..b.len())
            .find(|&i| ends_token(b[i]) || matches!(b[i], b'/' | b'?' | b'#'))
            .unwrap_or(b.len());
        let authority = &s[start..end];
        if let Some(at) = authority.rfind('@') {
            // `user:password@`: the password; a bare `token@`: all of it.
            let secret_from = match authority[..at].find(':') {
                Some(colon) => colon + 1,
                None => 0,
            };
            if secret_from < at && &authority[secret_from..at] != mask {
                out.push_str(&s[copied..start + secret_from]);
                out.push_str(mask);
                copied = start + at;
            }
        }
        from = end.max(start);
    }
    out.push_str(&s[copied..]);
    out
}

fn is_local_part_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// `name@example.com` → `MASK@example.com`: an `@` with an address's local
/// part before it and a domain after it (a dot, and a final label of two or
/// more letters). A URL's userinfo (`://user@host`) is the URL rule's.
fn mask_emails(s: &str, mask: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    for at in (0..b.len()).filter(|&i| b[i] == b'@') {
        let start = (copied..at)
            .rev()
            .take_while(|&i| is_local_part_byte(b[i]))
            .last()
            .unwrap_or(at);
        let domain_end = (at + 1..b.len())
            .find(|&i| !(b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'-')))
            .unwrap_or(b.len());
        let domain = s[at + 1..domain_end].trim_end_matches(['.', '-']);
        let tld_ok = domain.rsplit_once('.').is_some_and(|(name, tld)| {
            !name.is_empty() && tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic())
        });
        let in_url = s[..start].ends_with("://");
        // A Message-ID's random left part (`<uuid@host>`) names no one, and
        // it is what traces a delivery.
        let local = &s[start..at];
        let machine_made = local.len() >= 16
            && local
                .bytes()
                .all(|c| c.is_ascii_hexdigit() || c == b'-' || c == b'.');
        if start < at && tld_ok && !in_url && !machine_made && local != mask {
            out.push_str(&s[copied..start]);
            out.push_str(mask);
            copied = at;
        }
    }
    out.push_str(&s[copied..]);
    out
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'%' | b'[' | b']')
}

/// The separators of a URL nested in a parameter, encoded once and twice.
const ENCODED_SEPARATORS: &[&[u8]] = &[
    b"%3f", b"%26", b"%23", b"%3d", b"%253f", b"%2526", b"%2523", b"%253d",
];
/// What ends an encoded value: the nested URL's `&` or `#`.
const ENCODED_VALUE_ENDS: &[&[u8]] = &[b"%26", b"%23", b"%2526", b"%2523"];

/// `name=value` (or percent-encoded `name%3Dvalue`) with a secret-looking
/// name → `name=MASK`. A raw `=` value runs to `&`, `#`, `;`, `,` or the end
/// of the token; an encoded one also stops at `%26` / `%23`, its own
/// separators. Values of other names are scanned too: a redirect parameter
/// may carry a whole URL with a token inside.
fn mask_named_values(s: &str, mask: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let encoded = b[i] != b'=';
        let sep_len = if !encoded {
            1
        } else if starts_with_ignore_case(&b[i..], b"%3d") {
            3
        } else if starts_with_ignore_case(&b[i..], b"%253d") {
            5
        } else {
            i += 1;
            continue;
        };
        // A plain `=` may have spaces around it (`password = x`, INI and
        // TOML) and a quoted value (`password="x y"`, logfmt).
        let mut name_end = i;
        if !encoded {
            while name_end > 0 && b[name_end - 1] == b' ' {
                name_end -= 1;
            }
        }
        let mut name_start = name_end;
        while name_start > 0
            && is_name_byte(b[name_start - 1])
            && !ends_with_encoded_separator(&b[..name_start])
        {
            name_start -= 1;
        }
        let mut value_start = i + sep_len;
        i = value_start;
        // Only a secret's value is measured: scanning every value to its end
        // would make `a=a=a=…` quadratic.
        let name = &s[name_start..name_end];
        if name.is_empty() || !(is_secret_name(name) || is_secret_query_param(b, name_start, name))
        {
            continue;
        }
        let mut quote = None;
        if !encoded {
            while value_start < b.len() && b[value_start] == b' ' {
                value_start += 1;
            }
            if let Some(&q @ (b'"' | b'\'')) = b.get(value_start) {
                quote = Some(q);
                value_start += 1;
            }
        }
        // A quote not closed on its line (a message cut short) is no
        // quoting: the value is then read as unquoted, so the rest of the
        // line (and the next) stays.
        let closing = quote.and_then(|q| {
            (value_start..b.len())
                .take_while(|&j| b[j] != b'\n')
                .find(|&j| b[j] == q && b[j - 1] != b'\\')
        });
        let value_end = closing.unwrap_or_else(|| value_end(b, value_start, encoded));
        let value = &s[value_start..value_end];
        if !value.is_empty() && value != mask {
            out.push_str(&s[copied..value_start]);
            out.push_str(mask);
            copied = value_end;
            i = value_end;
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// Names that hold a credential as a URL's query (or fragment) parameter
/// only: an OAuth authorization code (`/callback?code=…&state=…`, which
/// buys tokens until it is used) or a sign-in link's one-time code.
/// Elsewhere `code=` is an error or a country code, and is kept.
const SECRET_QUERY_NAMES: &[&str] = &["code"];

/// Whether `name`, starting at `name_start` of `b`, is a query or fragment
/// parameter named in [`SECRET_QUERY_NAMES`].
fn is_secret_query_param(b: &[u8], name_start: usize, name: &str) -> bool {
    SECRET_QUERY_NAMES
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
        && name_start > 0
        && (matches!(b[name_start - 1], b'?' | b'&' | b'#')
            || ends_with_encoded_separator(&b[..name_start]))
}

/// Whether `b` ends with `%3F`, `%26`, `%23` or `%3D` (`?`, `&`, `#`, `=`
/// of a URL nested in a parameter): a name starts after them.
fn ends_with_encoded_separator(b: &[u8]) -> bool {
    ENCODED_SEPARATORS
        .iter()
        .any(|sep| b.len() >= sep.len() && b[b.len() - sep.len()..].eq_ignore_ascii_case(sep))
}

fn value_end(b: &[u8], start: usize, encoded: bool) -> usize {
    (start..b.len())
        .find(|&i| {
            ends_token(b[i])
                || matches!(b[i], b'&' | b'#' | b';' | b',')
                || (encoded
                    && ENCODED_VALUE_ENDS
                        .iter()
                        .any(|end| starts_with_ignore_case(&b[i..], end)))
        })
        .unwrap_or(b.len())
}

/// `Bearer abc.def` → `Bearer MASK`.
fn mask_bearer_credentials(s: &str, mask: &str) -> String {
    const BEARER: &[u8] = b"bearer ";
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i + BEARER.len() <= b.len() {
        if !starts_with_ignore_case(&b[i..], BEARER) {
            i += 1;
            continue;
        }
        let start = i + BEARER.len();
        let end = (start..b.len())
            .find(|&j| ends_token(b[j]) || b[j] == b',')
            .unwrap_or(b.len());
        if end > start && &s[start..end] != mask {
            out.push_str(&s[copied..start]);
            out.push_str(mask);
            copied = end;
        }
        i = end.max(start);
    }
    out.push_str(&s[copied..]);
    out
}

/// Webhook URLs whose path is the credential: the path is masked whole.
const WEBHOOK_URLS: &[&str] = &[
    "hooks.slack.com/",
    "discord.com/api/webhooks/",
    "discordapp.com/api/webhooks/",
];

/// `https://hooks.slack.com/services/T/B/x` → `https://hooks.slack.com/MASK`.
fn mask_webhook_paths(s: &str, mask: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let Some(prefix) = WEBHOOK_URLS
            .iter()
            .find(|p| starts_with_ignore_case(&b[i..], p.as_bytes()))
        else {
            i += 1;
            continue;
        };
        let host_end = i + prefix.find('/').unwrap_or(0) + 1;
        let end = (host_end..b.len())
            .find(|&j| ends_token(b[j]) || matches!(b[j], b'?' | b'#'))
            .unwrap_or(b.len());
        if end > host_end && &s[host_end..end] != mask {
            out.push_str(&s[copied..host_end]);
            out.push_str(mask);
            copied = end;
        }
        i = end.max(host_end);
    }
    out.push_str(&s[copied..]);
    out
}

/// Words after which an unquoted value's next token is the credential.
const AUTH_SCHEMES: &[&str] = &["basic", "bearer", "digest", "token"];

/// `password: X`, `"SMTP_PASS": "X"`, `'api_key': 'X'` → the value masked.
fn mask_colon_values(s: &str, mask: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(pos) = s[i..].find(':') {
        let colon = i + pos;
        i = colon + 1;
        // The name: before the colon, past one closing quote and spaces.
        let mut name_end = colon;
        while name_end > 0 && b[name_end - 1] == b' ' {
            name_end -= 1;
        }
        if name_end > 0 && matches!(b[name_end - 1], b'"' | b'\'') {
            name_end -= 1;
        }
        let mut name_start = name_end;
        while name_start > 0 && is_name_byte(b[name_start - 1]) {
            name_start -= 1;
        }
        if name_start == name_end
            || name_start < copied
            || !is_secret_name(&s[name_start..name_end])
            || b.get(colon + 1) == Some(&b'/')
        {
            continue;
        }
        let mut start = colon + 1;
        while start < b.len() && b[start] == b' ' {
            start += 1;
        }
        let (start, end) = match b.get(start) {
            Some(&q) if q == b'"' || q == b'\'' => {
                let from = start + 1;
                let end = (from..b.len())
                    .find(|&j| b[j] == q && b[j - 1] != b'\\')
                    .unwrap_or(b.len());
                (from, end)
            }
            _ => {
                let token_end = |from: usize| {
                    (from..b.len())
                        .find(|&j| ends_token(b[j]) || matches!(b[j], b',' | b'}' | b';' | b'&'))
                        .unwrap_or(b.len())
                };
                let mut end = token_end(start);
                let word = &s[start..end];
                if AUTH_SCHEMES.iter().any(|w| word.eq_ignore_ascii_case(w))
                    && b.get(end) == Some(&b' ')
                {
                    end = token_end(end + 1);
                }
                (start, end)
            }
        };
        let value = &s[start..end];
        if value.is_empty() || value == mask || value.ends_with(mask) {
            // Already masked: move past it, so the scan stays linear.
            i = end.max(i);
            continue;
        }
        out.push_str(&s[copied..start]);
        out.push_str(mask);
        copied = end;
        i = end.max(i);
    }
    out.push_str(&s[copied..]);
    out
}

/// The shape `neo-ops token create` prints: `neo_` + 8 hex + `_` + 64 hex.
fn mask_api_tokens(s: &str, mask: &str) -> String {
    const LEN: usize = 4 + 8 + 1 + 64;
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i + LEN <= b.len() {
        let t = &b[i..i + LEN];
        let is_token = t.starts_with(b"neo_")
            && t[4..12].iter().all(u8::is_ascii_hexdigit)
            && t[12] == b'_'
            && t[13..].iter().all(u8::is_ascii_hexdigit);
        if is_token {
            out.push_str(&s[copied..i]);
            out.push_str(mask);
            copied = i + LEN;
            i += LEN;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[copied..]);
    out
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `%XX` escapes decoded; anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const M: &str = "****";

    #[test]
    fn secret_names() {
        for name in [
            "NEO_OPS_API_SECRET",
            "SMTP_PASS",
            "api_key",
            "Authorization",
            "id_token",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["SMTP_HOST", "REDIS_URL", "plan", "tenant"] {
            assert!(!is_secret_name(name), "{name}");
        }
        assert!(is_secret_name("%74oken"));
    }

    #[test]
    fn url_passwords() {
        assert_eq!(
            redact_text("postgres://neo:s3cret@db:5432/master", M),
            "postgres://neo:****@db:5432/master"
        );
        assert_eq!(
            redact_text("dsn postgres://u:p@ss@h/db and redis://:pw@r:6379/0", M),
            "dsn postgres://u:****@h/db and redis://:****@r:6379/0"
        );
        // A bare user may be a token (`https://ghp_x@host`): masked whole.
        assert_eq!(
            redact_text("https://ghp_abc123@github.example/x", M),
            "https://****@github.example/x"
        );
        // An @ after the authority: nothing to mask.
        assert_eq!(
            redact_text("https://h:8080/x?email=a@b.c", M),
            "https://h:8080/x?email=a@b.c"
        );
    }

    #[test]
    fn email_addresses_keep_only_their_domain() {
        assert_eq!(
            redact_text("bad address \"priya.s+orders@gmail.com\"", M),
            "bad address \"****@gmail.com\""
        );
        assert_eq!(
            redact_text("to a@x.example.org, b_c@mail.co.in.", M),
            "to ****@x.example.org, ****@mail.co.in."
        );
        assert_eq!(
            redact_text("https://h/x?email=guest@example.com&n=1", M),
            "https://h/x?email=****@example.com&n=1"
        );
        // Not addresses: no dotted domain, a numeric one, none before `@`,
        // a Message-ID.
        for kept in [
            "user@localhost",
            "v1.2@3.4",
            "@scope/pkg",
            "a@b.c",
            "mail sent message_id=<ed006b6fb0584dbb9ded122d63e3eee8@neo-ops.invalid>",
            "<3f2a1b4c-9d8e-4f70-a1b2-c3d4e5f60718@mail.example.com>",
        ] {
            assert_eq!(redact_text(kept, M), kept);
        }
        // In JSON too, and masking twice changes nothing more.
        let mut v = serde_json::json!({"error": "bad address \"x@y.com\""});
        redact_json(&mut v, M);
        assert_eq!(v["error"], "bad address \"****@y.com\"");
        assert_eq!(redact_text("****@y.com", M), "****@y.com");
    }

    #[test]
    fn a_log_line_keeps_its_own_words() {
        for line in [
            "WARN neo_ops::auth: the master database cannot be reached",
            "INFO shutting down: \"webhook\": 3 waiting",
            "ERROR plugin \"webhook-dispatch\": component not found",
        ] {
            assert_eq!(redact_log_line(line, M), line);
        }
        assert_eq!(
            redact_log_line(
                "WARN smtp send failed to ann@a.example via postgres://u:pw@h/x fields=\"api_key=k1\"",
                M
            ),
            "WARN smtp send failed to ****@a.example via postgres://u:****@h/x fields=\"api_key=****\""
        );
    }

    #[test]
    fn named_values_and_query_parameters() {
        assert_eq!(
            redact_text("https://h/cb?a=1&token=abc123&b=2#x", M),
            "https://h/cb?a=1&token=****&b=2#x"
        );
        assert_eq!(
            redact_text("login failed password=hunter2, retrying", M),
            "login failed password=****, retrying"
        );
        assert_eq!(
            redact_text("/reset#access_token=xyz&state=1", M),
            "/reset#access_token=****&state=1"
        );
        // A URL carried, encoded, in another URL's parameter.
        assert_eq!(
            redact_text("https://h/login?next=%2Fp%3Ftoken%3Dabc%26x%3D1", M),
            "https://h/login?next=%2Fp%3Ftoken%3D****%26x%3D1"
        );
        // Base64 padding stays inside the value.
        assert_eq!(redact_text("?n=1&api_key=ab+c==", M), "?n=1&api_key=****");
        assert_eq!(redact_text("a=b&c=d", M), "a=b&c=d");
        // An OAuth callback's authorization code, also nested or in a
        // fragment; `code` as a word or part of another name is kept.
        assert_eq!(
            redact_text("https://pos/cb?code=SplxlOBe&state=af0i", M),
            "https://pos/cb?code=****&state=af0i"
        );
        assert_eq!(
            redact_text("https://h/login?next=%2Fcb%3FCode%3Dq1w2%26s%3D1", M),
            "https://h/login?next=%2Fcb%3FCode%3D****%26s%3D1"
        );
        assert_eq!(redact_text("/cb#x=1&code=abc", M), "/cb#x=1&code=****");
        assert_eq!(
            redact_text("failed: code=503 error_code=E42 ?zip_code=560001", M),
            "failed: code=503 error_code=E42 ?zip_code=560001"
        );
        // Quoted (logfmt) and spaced (INI, TOML) values. Before, the quote
        // ended the value at once and the space ended the name.
        assert_eq!(
            redact_text(r#"smtp login password="hunter 2" user=ops"#, M),
            r#"smtp login password="****" user=ops"#
        );
        assert_eq!(
            redact_text("SMTP_PASS='x y' api_key = k1 token= t2 pin = 1", M),
            "SMTP_PASS='****' api_key = **** token= **** pin = ****"
        );
        assert_eq!(
            redact_text(r#"secret="a\"b" next=1"#, M),
            r#"secret="****" next=1"#
        );
        assert_eq!(redact_text("a = b, c = 'd'", M), "a = b, c = 'd'");
        // An unclosed quote ends nothing: the line and the next stay.
        assert_eq!(
            redact_text("password='abc next=1\nsecond line\n", M),
            "password='**** next=1\nsecond line\n"
        );
        assert_eq!(
            redact_text("?otp=123456&staff_pin=4321&pin_hash=x&shipping=2", M),
            "?otp=****&staff_pin=****&pin_hash=****&shipping=2"
        );
    }

    #[test]
    fn bearer_and_api_tokens() {
        let token = format!("neo_{}_{}", "0a1b2c3d", "f".repeat(64));
        assert_eq!(
            redact_text(&format!("used {token} from cli"), M),
            "used **** from cli"
        );
        assert_eq!(
            redact_text("Authorization: Bearer abc.def.ghi", M),
            "Authorization: Bearer ****"
        );
        // Not quite a token: kept.
        let short = format!("neo_0a1b2c3d_{}", "f".repeat(63));
        assert_eq!(redact_text(&short, M), short);
    }

    #[test]
    fn json_documents() {
        let mut v = json!({
            "password": "p1",
            "webhook_secret": {"nested": "s"},
            "sso_auth": true,
            "callback": "https://h/?token=t1",
            "payload": "{\"api_key\":\"k1\",\"n\":1}",
            "list": ["postgres://u:p2@h/db"],
            "plan": "pro",
        });
        redact_json(&mut v, M);
        assert_eq!(
            v,
            json!({
                "password": "****",
                "webhook_secret": "****",
                "sso_auth": true,
                "callback": "https://h/?token=****",
                "payload": "{\"api_key\":\"****\",\"n\":1}",
                "list": ["postgres://u:****@h/db"],
                "plan": "pro",
            })
        );
    }

    #[test]
    fn placements_found_in_use() {
        // Array and nested parameter names.
        assert_eq!(
            redact_text("?token[]=a1&x[token]=b2&n=1", M),
            "?token[]=****&x[token]=****&n=1"
        );
        // A URL nested in a parameter, encoded twice.
        assert_eq!(
            redact_text("https://h/a?next=%252Fp%253Ftoken%253Dabc%2526x%253D1", M),
            "https://h/a?next=%252Fp%253Ftoken%253D****%2526x%253D1"
        );
        // Colon forms in free text and JSON-ish text.
        assert_eq!(
            redact_text("password: hunter2 (old)", M),
            "password: **** (old)"
        );
        assert_eq!(
            redact_text(r#"cfg {"SMTP_PASS": "s3cr3t x", "host": "h"}"#, M),
            r#"cfg {"SMTP_PASS": "****", "host": "h"}"#
        );
        assert_eq!(
            redact_text("Authorization: Basic dXNlcjpw", M),
            "Authorization: ****"
        );
        // URLs and times are not names with values.
        assert_eq!(
            redact_text("at 12:30 see https://h/x", M),
            "at 12:30 see https://h/x"
        );
        // Slack webhook paths are the credential.
        assert_eq!(
            redact_text(
                "posting to https://hooks.slack.com/services/T0/B0/XyZ failed",
                M
            ),
            "posting to https://hooks.slack.com/**** failed"
        );
        // Signatures, JWTs, sessions.
        assert_eq!(
            redact_text("?sig=a&X-Amz-Signature=b&jwt=c&session=d&signal=on", M),
            "?sig=****&X-Amz-Signature=****&jwt=****&session=****&signal=on"
        );
    }

    #[test]
    fn origins_drop_credentials_and_paths() {
        assert_eq!(
            origin("HTTPS://user:pw@hooks.example.com:8443/in/abc?token=s").as_deref(),
            Some("https://hooks.example.com:8443")
        );
        assert_eq!(
            origin("http://127.0.0.1:9000").as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            origin(r"https://hooks.example.com\tok_SECRET").as_deref(),
            Some("https://hooks.example.com")
        );
        assert_eq!(origin("hooks.example.com/x"), None);
        assert_eq!(origin("https:///path"), None);
    }

    #[test]
    fn flags_never_show_secrets() {
        assert_eq!(mask_flag("SMTP_PASS", "hunter2"), "****");
        assert_eq!(mask_flag("NEO_API_TOKEN", "neo_x"), "****");
        assert_eq!(
            mask_flag(
                "SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T/B/x"
            ),
            "****"
        );
        assert_eq!(
            mask_flag(
                "POSTGRES_MASTER_URL",
                "postgres://neo:pw@db/master?sslpassword=p2&x=1"
            ),
            "postgres://****@db/master?sslpassword=****&x=1"
        );
        assert_eq!(
            mask_flag(
                "NEO_OPS_UPSTREAM_URL",
                "https://ghp_abc@api.example.com/v1/s3cretpath?token=t&x=1"
            ),
            "https://****@api.example.com/****"
        );
        assert_eq!(
            mask_flag("ALERTMANAGER_URL", "http://am.internal:9093"),
            "http://am.internal:9093"
        );
        assert_eq!(
            mask_flag("SMTP_HOST", "mail.example.com"),
            "mail.example.com"
        );
        assert_eq!(mask_flag("SMTP_PORT", ""), "");
    }

    #[test]
    fn log_urls_hide_passwords_wherever_they_are() {
        assert_eq!(
            for_log("postgres://neo:s3cret@db:5432/master"),
            "postgres://neo:****@db:5432/master"
        );
        assert_eq!(for_log("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            for_log("postgres://db/master?user=neo&password=s3cret"),
            "postgres://db/master?user=neo&password=****"
        );
    }

    #[test]
    fn pathological_input_stays_linear() {
        let s = "a=".repeat(200_000);
        let started = std::time::Instant::now();
        assert_eq!(redact_text(&s, M), s);
        let s = "token=".repeat(100_000);
        assert_eq!(redact_text(&s, M), "token=****");
        let s = "password:".repeat(50_000);
        redact_text(&s, M);
        let s = format!("{}{M}", "pass:".repeat(50_000));
        redact_text(&s, M);
        // A guard against quadratic scanning, not a speed target: linear
        // takes well under 3 s even unoptimised on a slow shared VM, while a
        // quadratic pass over these inputs takes minutes.
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    }

    #[test]
    fn redaction_is_idempotent_and_keeps_unicode() {
        let s = "café ✓ https://u:pw@h/?token=t — ok";
        let once = redact_text(s, "REDACTED");
        assert_eq!(once, "café ✓ https://u:REDACTED@h/?token=REDACTED — ok");
        assert_eq!(redact_text(&once, "REDACTED"), once);
    }
}
