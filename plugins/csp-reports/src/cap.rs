//! Every stored report is capped, so the stored maximum (500 entries) lists
//! well within the plugin's memory limit whatever the public sent: long
//! strings are cut with a marker, and a report still too large after that
//! keeps only the fields an operator reads.

use neo_ops_sdk::serde_json::{Map, Value as Json};

/// Longest string kept in a stored report (URLs, policies).
pub const MAX_FIELD_CHARS: usize = 512;
/// A summary field's length when the summary alone is still too large.
const SHORT_FIELD_CHARS: usize = 96;
/// `script-sample` / `sample`: browsers send at most 40 characters.
const MAX_SAMPLE_CHARS: usize = 64;
/// Largest stored entry, serialized.
pub const MAX_ENTRY_BYTES: usize = 4096;
/// Keys kept per object, and nesting depth.
const MAX_KEYS: usize = 32;
const MAX_DEPTH: usize = 4;
/// The fields kept when a report is still too large: what the listing shows.
const SUMMARY_KEYS: &[&str] = &[
    "document-uri",
    "documentURL",
    "blocked-uri",
    "blockedURL",
    "effective-directive",
    "effectiveDirective",
    "violated-directive",
    "disposition",
    "status-code",
    "statusCode",
    "source-file",
    "sourceFile",
    "line-number",
    "lineNumber",
    "column-number",
    "columnNumber",
    "referrer",
];

/// Caps one report (the whole `{"csp-report": …}` or Reporting API item).
pub fn report(value: &mut Json) {
    let over = |v: &Json| v.to_string().len() > MAX_ENTRY_BYTES;
    cap(value, 0);
    if over(value) {
        summarize(value);
    }
    // Seventeen summary fields of 512 characters (more once escaped) can
    // still be over: cut them shorter, and past that keep only a marker, so
    // no report is ever stored over the cap.
    if over(value) {
        shorten(value);
    }
    if over(value) {
        *value = match value {
            Json::Object(map) if map.contains_key("csp-report") => {
                neo_ops_sdk::serde_json::json!({"csp-report": {"truncated": true}})
            }
            _ => neo_ops_sdk::serde_json::json!({"body": {"truncated": true}}),
        };
    }
}

/// What a summarised report keeps, cut shorter still: each string to
/// [`SHORT_FIELD_CHARS`], anything nested to a marker.
fn shorten(value: &mut Json) {
    let Json::Object(map) = value else { return };
    for (key, v) in map.iter_mut() {
        match v {
            Json::Object(body) if key == "csp-report" || key == "body" => {
                for field in body.values_mut() {
                    match field {
                        Json::String(s) => truncate(s, SHORT_FIELD_CHARS),
                        Json::Object(_) | Json::Array(_) => {
                            *field = Json::String("[dropped]".into())
                        }
                        _ => {}
                    }
                }
            }
            Json::String(s) => truncate(s, SHORT_FIELD_CHARS),
            _ => {}
        }
    }
}

fn cap(value: &mut Json, depth: usize) {
    match value {
        Json::String(s) => truncate(s, MAX_FIELD_CHARS),
        Json::Array(items) => {
            if depth >= MAX_DEPTH {
                *value = Json::String("[nested too deep: dropped]".into());
                return;
            }
            items.truncate(MAX_KEYS);
            items.iter_mut().for_each(|v| cap(v, depth + 1));
        }
        Json::Object(map) => {
            if depth >= MAX_DEPTH {
                *value = Json::String("[nested too deep: dropped]".into());
                return;
            }
            if map.len() > MAX_KEYS {
                let kept: Map<String, Json> =
                    std::mem::take(map).into_iter().take(MAX_KEYS).collect();
                *map = kept;
            }
            for (key, v) in map.iter_mut() {
                match (key.as_str(), v) {
                    ("script-sample" | "sample", Json::String(s)) => truncate(s, MAX_SAMPLE_CHARS),
                    (_, v) => cap(v, depth + 1),
                }
            }
        }
        Json::Null | Json::Bool(_) | Json::Number(_) => {}
    }
}

/// Keeps the summary fields of the report body (and the item's own `type`,
/// `url`, `age`), dropping the rest with a note.
fn summarize(value: &mut Json) {
    let keep = |body: &mut Json| {
        if let Json::Object(map) = body {
            map.retain(|k, _| SUMMARY_KEYS.contains(&k.as_str()));
            map.insert("truncated".into(), Json::Bool(true));
        }
    };
    match value {
        Json::Object(map) if map.contains_key("csp-report") => {
            map.retain(|k, _| k == "csp-report");
            keep(&mut map["csp-report"]);
        }
        Json::Object(map) => {
            map.retain(|k, _| matches!(k.as_str(), "type" | "url" | "age" | "body"));
            if let Some(body) = map.get_mut("body") {
                keep(body);
            }
        }
        _ => {}
    }
}

fn truncate(s: &mut String, max_chars: usize) {
    if let Some((cut, _)) = s.char_indices().nth(max_chars) {
        let dropped = s.len() - cut;
        s.truncate(cut);
        s.push_str(&format!("…[truncated {dropped} bytes]"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_ops_sdk::serde_json::json;

    #[test]
    fn a_maximal_report_is_cut_to_the_entry_cap() {
        let long = "x".repeat(60_000);
        let mut r = json!({"csp-report": {
            "document-uri": format!("https://pos.example/{long}"),
            "blocked-uri": "inline",
            "script-sample": long,
            "original-policy": long,
            "effective-directive": "script-src-elem",
        }});
        report(&mut r);
        let body = &r["csp-report"];
        assert!(
            r.to_string().len() <= MAX_ENTRY_BYTES,
            "{}",
            r.to_string().len()
        );
        assert!(
            body["document-uri"]
                .as_str()
                .unwrap()
                .ends_with("[truncated 59508 bytes]")
        );
        assert_eq!(body["effective-directive"], "script-src-elem");
        assert_eq!(body["blocked-uri"], "inline");
    }

    #[test]
    fn many_fields_and_deep_nesting_are_bounded() {
        let mut fields = Map::new();
        for i in 0..1000 {
            fields.insert(format!("k{i}"), json!("v".repeat(400)));
        }
        fields.insert("documentURL".into(), json!("https://a/"));
        let mut r = json!({"type": "csp-violation", "url": "https://a/", "body": Json::Object(fields),
                           "extra": {"a": {"b": {"c": {"d": {"e": 1}}}}}});
        report(&mut r);
        assert!(
            r.to_string().len() <= MAX_ENTRY_BYTES,
            "{}",
            r.to_string().len()
        );
        assert_eq!(r["type"], "csp-violation");
        assert_eq!(r["body"]["truncated"], true);
        // Keys beside `csp-report` go, and summary fields that are still
        // too large together are cut shorter: the cap always holds.
        let mut body: Map<String, Json> = SUMMARY_KEYS
            .iter()
            .map(|k| (k.to_string(), json!("\u{1}".repeat(600))))
            .collect();
        body.insert("effective-directive".into(), json!({"toString": 1}));
        let mut wide = Map::new();
        wide.insert("csp-report".into(), Json::Object(body));
        for i in 0..31 {
            wide.insert(
                format!("k{i}"),
                json!({"a": "v".repeat(500), "b": "w".repeat(500)}),
            );
        }
        let mut r = Json::Object(wide);
        report(&mut r);
        assert!(
            r.to_string().len() <= MAX_ENTRY_BYTES,
            "{}",
            r.to_string().len()
        );
        assert_eq!(r.as_object().unwrap().len(), 1, "{r}");
        assert_eq!(r["csp-report"]["truncated"], true);
        let mut r = json!({"csp-report": SUMMARY_KEYS
            .iter()
            .map(|k| (k.to_string(), json!("é".repeat(400))))
            .collect::<Map<String, Json>>()});
        report(&mut r);
        assert!(r.to_string().len() <= MAX_ENTRY_BYTES, "{r}");
        assert!(
            r["csp-report"]["document-uri"]
                .as_str()
                .unwrap()
                .contains("[truncated")
        );
        // A small report is stored as it came.
        let mut small =
            json!({"csp-report": {"document-uri": "https://a/", "script-sample": "alert(1)"}});
        let before = small.clone();
        report(&mut small);
        assert_eq!(small, before);
    }
}
