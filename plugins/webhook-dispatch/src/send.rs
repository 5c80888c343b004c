//! One signed POST of a delivery to its endpoint.

use crate::delivery::Delivery;
use crate::signature;
use neo_ops_sdk::{ErrorCode, outbound_http};

/// Why a delivery was not accepted, naming only the endpoint's origin
/// (paths and query strings may carry secrets).
pub struct NotAccepted {
    pub reason: String,
    /// The receiver answered 410 Gone: by Standard Webhooks, it wants no
    /// more deliveries.
    pub gone: bool,
}

impl From<String> for NotAccepted {
    fn from(reason: String) -> Self {
        NotAccepted {
            reason,
            gone: false,
        }
    }
}

/// Posts the delivery's payload; `Err` says why it was not accepted.
pub fn post(
    tenant: &str,
    delivery: &Delivery,
    now_secs: i64,
    timeout_ms: u32,
) -> Result<u16, NotAccepted> {
    let endpoint = &delivery.endpoint;
    let Some(origin) = origin(&endpoint.url) else {
        return Err(format!(
            "endpoint {} has a bad url (expected http:// or https://)",
            endpoint.id
        )
        .into());
    };
    if signature::malformed_whsec(&endpoint.secret) {
        neo_ops_sdk::warn(&format!(
            "endpoint {}'s secret starts with whsec_ but is not standard base64: its \
             webhook-signature is made with the whole secret, which standardwebhooks \
             receivers reject (x-neo-signature is unaffected)",
            endpoint.id
        ));
    }
    let body = delivery.payload.as_bytes().to_vec();
    let message_id = message_id(tenant, delivery.id);
    let request = outbound_http::Request {
        method: "POST".into(),
        url: endpoint.url.clone(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-neo-event".into(), delivery.event.clone()),
            ("x-neo-delivery".into(), delivery.id.to_string()),
            ("x-neo-timestamp".into(), now_secs.to_string()),
            (
                "x-neo-signature".into(),
                signature::sign(&endpoint.secret, now_secs, &body),
            ),
            ("webhook-id".into(), message_id.clone()),
            ("webhook-timestamp".into(), now_secs.to_string()),
            (
                "webhook-signature".into(),
                signature::standard(&endpoint.secret, &message_id, now_secs, &body),
            ),
        ],
        body,
        timeout_ms: Some(timeout_ms),
    };
    let response = outbound_http::send(&request).map_err(|e| match e.code {
        // The host quotes a URL it cannot parse; ours may hold a secret.
        ErrorCode::Invalid => format!("endpoint {} has a bad url", endpoint.id),
        // Otherwise it names the origin only.
        _ => e.message.replace(&endpoint.url, &origin),
    })?;
    if (200..300).contains(&response.status) {
        Ok(response.status)
    } else {
        Err(NotAccepted {
            reason: format!("HTTP {} from {origin}", response.status),
            gone: response.status == 410,
        })
    }
}

/// The Standard Webhooks `webhook-id`: stable per delivery, since receivers
/// drop a request whose id they have seen. Delivery ids count per tenant
/// database, so the tenant is in it too: one integrator's receiver shared
/// by several restaurants would otherwise drop one's delivery 42 as a
/// repeat of another's. Tenant names hold no `.`, the signature's separator.
pub fn message_id(tenant: &str, delivery_id: i64) -> String {
    format!("msg_{tenant}_{delivery_id}")
}

/// `scheme://host[:port]` of an http(s) URL, without user info.
pub fn origin(url: &str) -> Option<String> {
    neo_ops_sdk::redact::origin(url)
        .filter(|o| o.starts_with("http://") || o.starts_with("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_differ_between_tenants() {
        assert_eq!(message_id("acme", 42), "msg_acme_42");
        assert_ne!(message_id("acme", 42), message_id("globex", 42));
    }

    #[test]
    fn origin_drops_credentials_path_and_query() {
        assert_eq!(
            origin("https://user:pw@hooks.example.com:8443/in/abc?token=s").as_deref(),
            Some("https://hooks.example.com:8443")
        );
        assert_eq!(
            origin("http://127.0.0.1:9000").as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(origin("ftp://x/y"), None);
        assert_eq!(origin("https:///path"), None);
    }
}
