//! One redactor for everything a plugin hands out of the platform: support
//! bundles (env flags, audit details, tenant config) and stored CSP reports
//! use the same word list and rules.
//!
//! What is masked, in any text:
//! - the password of a URL's userinfo (`scheme://user:PASSWORD@host`);
//! - the value of any `name=value` pair whose name looks secret (query
//!   parameters, also percent-encoded inside another URL, and `key=value`
//!   text), e.g. `?token=…`, `password=…`, `%3Faccess_token%3D…`;
//! - the credential after `Bearer `;
//! - neo API tokens (`neo_<8 hex>_<64 hex>`).
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
    "PASS",
    "KEY",
    "CREDENTIAL",
    "AUTH",
];

/// Whether a variable, key or parameter name looks like it holds a secret.
/// Percent-encoded names are decoded first.
pub fn is_secret_name(name: &str) -> bool {
    let upper = percent_decode(name).to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// Every text rule, in turn.
pub fn redact_text(s: &str, mask: &str) -> String {
    let s = mask_url_passwords(s, mask);
    let s = mask_named_values(&s, mask);
    let s = mask_bearer_credentials(&s, mask);
    mask_api_tokens(&s, mask)
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

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'%')
}

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
        } else {
            i += 1;
            continue;
        };
        let name_end = i;
        let mut name_start = name_end;
        while name_start > 0
            && is_name_byte(b[name_start - 1])
            && !ends_with_encoded_separator(&b[..name_start])
        {
            name_start -= 1;
        }
        let value_start = name_end + sep_len;
        i = value_start;
        // Only a secret's value is measured: scanning every value to its end
        // would make `a=a=a=…` quadratic.
        if name_start == name_end || !is_secret_name(&s[name_start..name_end]) {
            continue;
        }
        let value_end = value_end(b, value_start, encoded);
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

/// Whether `b` ends with `%3F`, `%26`, `%23` or `%3D` (`?`, `&`, `#`, `=`
/// of a URL nested in a parameter): a name starts after them.
fn ends_with_encoded_separator(b: &[u8]) -> bool {
    b.len() >= 3
        && [b"%3f", b"%26", b"%23", b"%3d"]
            .iter()
            .any(|sep| b[b.len() - 3..].eq_ignore_ascii_case(*sep))
}

fn value_end(b: &[u8], start: usize, encoded: bool) -> usize {
    (start..b.len())
        .find(|&i| {
            ends_token(b[i])
                || matches!(b[i], b'&' | b'#' | b';' | b',')
                || (encoded
                    && (starts_with_ignore_case(&b[i..], b"%26")
                        || starts_with_ignore_case(&b[i..], b"%23")))
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
        assert_eq!(
            redact_text("?sig=1&api_key=ab+c==", M),
            "?sig=1&api_key=****"
        );
        assert_eq!(redact_text("a=b&c=d", M), "a=b&c=d");
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
    fn pathological_input_stays_linear() {
        let s = "a=".repeat(200_000);
        let started = std::time::Instant::now();
        assert_eq!(redact_text(&s, M), s);
        let s = "token=".repeat(100_000);
        assert_eq!(redact_text(&s, M), "token=****");
        assert!(started.elapsed().as_secs() < 2, "{:?}", started.elapsed());
    }

    #[test]
    fn redaction_is_idempotent_and_keeps_unicode() {
        let s = "café ✓ https://u:pw@h/?token=t — ok";
        let once = redact_text(s, "REDACTED");
        assert_eq!(once, "café ✓ https://u:REDACTED@h/?token=REDACTED — ok");
        assert_eq!(redact_text(&once, "REDACTED"), once);
    }
}
