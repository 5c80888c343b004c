//! The export job's payload:
//! `{"kind": "orders", "from": "YYYY-MM-DD", "to": "YYYY-MM-DD", "email": "x@y"}`.

use chrono::NaiveDate;
use neo_ops_sdk::serde_json::{self, Value as Json};

/// Longest range one export covers, in days.
pub const MAX_DAYS: i64 = 366;

#[derive(Debug, PartialEq)]
pub struct Export {
    pub from: NaiveDate,
    /// Inclusive.
    pub to: NaiveDate,
    pub email: String,
}

/// Parses and checks a payload; errors quote the bad value.
pub fn parse(payload: &str) -> Result<Export, String> {
    let doc: Json = serde_json::from_str(payload).map_err(|_| {
        let shown: String = payload.chars().take(200).collect();
        format!("bad export payload \"{shown}\": not a JSON object")
    })?;
    // A field's text: a string's own, anything else as the JSON sent (so
    // an error quotes it), nothing when missing.
    let field = |name: &str| match doc.get(name) {
        Some(Json::String(text)) => text.trim().to_string(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let kind = field("kind");
    if kind != "orders" {
        return Err(format!("bad export kind \"{kind}\": expected orders"));
    }
    let date = |name: &str| {
        let given = field(name);
        neo_ops_sdk::days::parse_date(&given).map_err(|_| {
            format!("bad export {name} \"{given}\": expected YYYY-MM-DD, 1970 to 9999")
        })
    };
    let (from, to) = (date("from")?, date("to")?);
    if to < from {
        return Err(format!("bad export range: to {to} is before from {from}"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(format!(
            "bad export range {from} to {to}: at most {MAX_DAYS} days"
        ));
    }
    let email = field("email");
    if !neo_ops_sdk::address::is_plain(&email) {
        return Err(format!(
            "bad export email \"{email}\": expected one address"
        ));
    }
    Ok(Export { from, to, email })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_payload() {
        let e = parse(
            r#"{"kind":"orders","from":"2026-11-01","to":"2026-11-24","email":"o@a.example"}"#,
        )
        .unwrap();
        assert_eq!(e.from.to_string(), "2026-11-01");
        assert_eq!(e.to.to_string(), "2026-11-24");
        assert_eq!(e.email, "o@a.example");
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        let err = |p: &str| parse(p).unwrap_err();
        assert_eq!(
            err("nope"),
            "bad export payload \"nope\": not a JSON object"
        );
        assert_eq!(
            err(r#"{"kind":"menu"}"#),
            "bad export kind \"menu\": expected orders"
        );
        assert_eq!(
            err(r#"{"kind":"orders","from":"24/11/2026"}"#),
            "bad export from \"24/11/2026\": expected YYYY-MM-DD, 1970 to 9999"
        );
        // Past chrono's range, a day more would panic: refused as bad input.
        assert_eq!(
            err(r#"{"kind":"orders","from":"2026-11-01","to":"+262143-12-31"}"#),
            "bad export to \"+262143-12-31\": expected YYYY-MM-DD, 1970 to 9999"
        );
        // Not a string: the value as sent.
        assert_eq!(
            err(r#"{"kind":"orders","from":20261101}"#),
            "bad export from \"20261101\": expected YYYY-MM-DD, 1970 to 9999"
        );
        assert_eq!(
            err(r#"{"kind":["orders"]}"#),
            "bad export kind \"[\"orders\"]\": expected orders"
        );
        assert!(
            err(r#"{"kind":"orders","from":"2026-11-02","to":"2026-11-01"}"#).contains("before")
        );
        assert_eq!(
            err(
                r#"{"kind":"orders","from":"2026-11-01","to":"2026-11-02","email":"a@b.c, x@y.z"}"#
            ),
            "bad export email \"a@b.c, x@y.z\": expected one address"
        );
    }
}
