//! Delivery signatures, two ways:
//! - neo's own `x-neo-signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//!   (kept for existing receivers);
//! - Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature:
//!   v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`), so receivers
//!   built on the `standardwebhooks` libraries (Svix) verify them as they
//!   are. The key is the base64 after `whsec_` in the endpoint's secret, or
//!   the secret's bytes when it is not in that form.
//!
//! Binding the timestamp into the MAC lets receivers reject replays of old bodies.

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `webhook-signature` value for message `id` sent at `timestamp`.
pub fn standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = whsec_key(secret)
        .and_then(Result::ok)
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    standard_with_key(&key, id, timestamp, body)
}

fn standard_with_key(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Standard base64 as the `standardwebhooks` libraries read a key: with or
/// without its padding, and whatever the last character's unused bits.
const WHSEC: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The key a `whsec_` secret names, if it is one; `Err` when what follows
/// the prefix is not standard base64.
fn whsec_key(secret: &str) -> Option<Result<Vec<u8>, base64::DecodeError>> {
    secret.strip_prefix("whsec_").map(|b64| WHSEC.decode(b64))
}

/// Whether the secret looks like a Standard Webhooks key but is not one:
/// its `webhook-signature` is then made with the whole secret, and the
/// receivers' libraries, which decode it, reject every delivery.
pub fn malformed_whsec(secret: &str) -> bool {
    matches!(whsec_key(secret), Some(Err(_)))
}

/// The header value for a body sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_decode_whsec_keys() {
        // The same key given as whsec_ base64 or as raw bytes signs the same.
        let raw = standard("key", "msg_1", 1_700_000_000, b"{}");
        assert_eq!(standard("whsec_a2V5", "msg_1", 1_700_000_000, b"{}"), raw);
        assert!(raw.starts_with("v1,") && raw.len() == 3 + 44, "{raw}");
        assert!(!malformed_whsec("whsec_a2V5") && !malformed_whsec("key"));
        // The URL-safe alphabet is not what those libraries take.
        assert!(malformed_whsec("whsec_a2V5-_") && malformed_whsec("whsec_a2V5!"));
    }

    #[test]
    fn a_whsec_key_without_its_padding_is_the_same_key() {
        // As Python's standardwebhooks reads them (it adds "==" and
        // decodes): signed with the key's bytes, not the whole secret.
        for (unpadded, key) in [("whsec_a2U", &b"ke"[..]), ("whsec_a2V", b"ke")] {
            assert!(!malformed_whsec(unpadded), "{unpadded}");
            let by_key = standard_with_key(key, "msg_1", 1_700_000_000, b"{}");
            assert_eq!(standard(unpadded, "msg_1", 1_700_000_000, b"{}"), by_key);
        }
        let key: Vec<u8> = (0..32).collect();
        let unpadded = format!("whsec_{}", STANDARD.encode(&key).trim_end_matches('='));
        assert_eq!(unpadded.len(), 6 + 43);
        assert_eq!(
            standard(&unpadded, "msg_1", 1_700_000_000, b"{}"),
            standard_with_key(&key, "msg_1", 1_700_000_000, b"{}")
        );
    }

    #[test]
    fn matches_a_known_hmac() {
        // HMAC-SHA256("key", "1700000000.{}"), computed with `openssl dgst -sha256 -hmac key`.
        assert_eq!(
            sign("key", 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
