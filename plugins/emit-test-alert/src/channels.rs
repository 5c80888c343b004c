//! The three paging paths: a Slack incoming webhook, ops email and
//! Alertmanager's v2 API. Each builds its payload (shown on a dry run) and
//! sends it, reporting what the far end answered.

use neo_ops_sdk::serde_json::{Value, json};
use neo_ops_sdk::{Error, mail, outbound_http, time};

/// Keeps the three channels inside the plugin's own timeout.
const HTTP_TIMEOUT_MS: u32 = 5_000;
/// Long enough to be seen, short enough that the test alert resolves itself.
const ALERT_LIFETIME_MICROS: i64 = 5 * 60 * 1_000_000;
const ALERT_NAME: &str = "NeoOpsTestAlert";

/// What is being sent, shared by every channel.
pub struct Alert<'a> {
    pub message: &'a str,
    pub severity: &'a str,
    /// Correlation id, so the on-call person can match what arrived.
    pub id: &'a str,
    pub by: &'a str,
    pub now_micros: i64,
}

impl Alert<'_> {
    fn sent_at(&self) -> String {
        time::rfc3339(self.now_micros)
    }
}

pub fn slack_payload(alert: &Alert, channel: &str) -> Value {
    let text = format!(
        ":rotating_light: *[TEST]* neo-ops test alert ({}): {}\nCorrelation id `{}`, sent {} by {}. \
         This checks the paging path; no action needed.",
        alert.severity,
        slack_escape(alert.message),
        alert.id,
        alert.sent_at(),
        slack_escape(alert.by),
    );
    json!({ "channel": channel, "username": "neo-ops", "text": text })
}

/// Posts to the webhook; only a 2xx answer counts as delivered.
pub fn send_slack(url: &str, payload: &Value) -> Result<String, String> {
    let resp = post_json(url, payload)?;
    let shown = redact_url(url);
    if (200..300).contains(&resp.status) {
        return Ok(format!("status {} from {shown}", resp.status));
    }
    let mut reason = format!("status {} from {shown}", resp.status);
    if let Some(wait) = header(&resp, "retry-after") {
        reason.push_str(&format!(" (retry after {wait}s)"));
    }
    Err(with_body(reason, &resp.body, url))
}

pub fn email_message(alert: &Alert, to: &[String]) -> mail::Message {
    let text = format!(
        "This is a test alert from neo-ops, sent to check that paging reaches ops.\n\
         No action is needed.\n\n\
         Message:        {}\n\
         Severity:       {}\n\
         Correlation id: {}\n\
         Sent at:        {}\n\
         Sent by:        {}\n",
        alert.message,
        alert.severity,
        alert.id,
        alert.sent_at(),
        alert.by
    );
    mail::Message {
        to: to.to_vec(),
        cc: vec![],
        subject: format!("[TEST] neo-ops test alert: {}", one_line(alert.message)),
        text,
        html: None,
        attachments: vec![],
    }
}

/// Sends the alert by mail. Mail the host writes to its outbox (no SMTP
/// relay set) reached no one: that path failed, though the file is there
/// to read.
pub fn send_email(message: &mail::Message) -> Result<String, String> {
    let id = mail::send(message).map_err(|e| describe(&e, None))?;
    if neo_ops_sdk::backends::goes_to_the_outbox() {
        return Err(format!(
            "written to the outbox as {id}, not delivered: SMTP_HOST is not set, \
             so no one is paged by email"
        ));
    }
    Ok(format!(
        "sent to {}, message-id {id}",
        message.to.join(", ")
    ))
}

/// One alert as Alertmanager's `POST /api/v2/alerts` takes it: labelled as a
/// test, resolving itself after a few minutes.
pub fn alertmanager_payload(alert: &Alert) -> Value {
    json!([{
        "labels": {
            "alertname": ALERT_NAME,
            "severity": alert.severity,
            "test": "true",
            "source": "neo-ops",
            "test_id": alert.id,
        },
        "annotations": {
            "summary": alert.message,
            "description": format!(
                "Synthetic test alert from neo-ops (sent by {}) to check the paging path; \
                 no action needed.", alert.by),
        },
        "startsAt": alert.sent_at(),
        "endsAt": time::rfc3339(alert.now_micros + ALERT_LIFETIME_MICROS),
    }])
}

pub fn alertmanager_endpoint(base: &str) -> String {
    format!("{}/api/v2/alerts", base.trim_end_matches('/'))
}

/// Accepted is all Alertmanager can say; delivery is up to its routes.
pub fn send_alertmanager(base: &str, payload: &Value) -> Result<String, String> {
    let url = alertmanager_endpoint(base);
    let resp = post_json(&url, payload)?;
    let reason = format!("status {} from {}", resp.status, redact_url(&url));
    if (200..300).contains(&resp.status) {
        Ok(format!("accepted, {reason}"))
    } else {
        Err(with_body(reason, &resp.body, &url))
    }
}

fn post_json(url: &str, payload: &Value) -> Result<outbound_http::Response, String> {
    check_url(url)?;
    outbound_http::send(&outbound_http::Request {
        method: "POST".into(),
        url: url.to_string(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: payload.to_string().into_bytes(),
        timeout_ms: Some(HTTP_TIMEOUT_MS),
    })
    .map_err(|e| describe(&e, Some(url)))
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "bad url \"{}\" (expected http or https)",
            redact_url(url)
        ))
    }
}

/// A host error as a reason, without the webhook's secret path.
fn describe(e: &Error, url: Option<&str>) -> String {
    let mut message = e.message.clone();
    if let Some(url) = url {
        message = message.replace(url, &redact_url(url));
    }
    format!("{}: {message}", e.code.as_str())
}

fn header<'a>(resp: &'a outbound_http::Response, name: &str) -> Option<&'a str> {
    resp.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Adds the start of a response body (Slack says e.g. `invalid_token`),
/// without the webhook's path should the answer quote it (a proxy's "Cannot
/// POST /services/…" page) and masked as any text the plugin hands out.
fn with_body(reason: String, body: &[u8], url: &str) -> String {
    let text = one_line(&String::from_utf8_lossy(body));
    let mut text = text.trim().to_string();
    if text.is_empty() {
        return reason;
    }
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]));
    if let Some(path) = path.filter(|p| p.len() > 1) {
        text = text.replace(path, "/…");
    }
    let text = neo_ops_sdk::redact::redact_text(&text, "****");
    let excerpt: String = text.chars().take(200).collect();
    format!("{reason}: {excerpt}")
}

/// `scheme://host:port/…`: webhook paths and user info are credentials.
pub fn redact_url(url: &str) -> String {
    match neo_ops_sdk::redact::origin(url) {
        Some(origin) if origin.len() < url.trim().len() => format!("{origin}/…"),
        Some(origin) => origin,
        None => "(a URL that does not parse)".into(),
    }
}

/// Slack's control characters; unescaped, `<!channel>` would ping everyone.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_quoting_the_webhook_path_does_not_repeat_it() {
        let url = "https://hooks.slack.com/services/T000/B000/XXXXsecret";
        let said = with_body(
            "status 404 from https://hooks.slack.com/…".into(),
            b"Cannot POST /services/T000/B000/XXXXsecret (ann@a.example)",
            url,
        );
        assert_eq!(
            said,
            "status 404 from https://hooks.slack.com/…: Cannot POST /… (****@a.example)"
        );
        assert_eq!(
            with_body("status 400".into(), b" invalid_payload\n", url),
            "status 400: invalid_payload"
        );
    }
}
