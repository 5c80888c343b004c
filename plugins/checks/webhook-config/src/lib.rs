//! Preflight `webhook-config`: every active, non-deleted row of
//! `webhook_endpoints` in every live tenant has an `https://` URL and a signing
//! secret of at least `min_secret_len` characters (default 16). Plain `http://`
//! is accepted only for the hosts in config `allow_http_hosts` (comma list,
//! e.g. `"127.0.0.1,localhost"` for development). Fails naming tenant and
//! endpoint id; secrets are never shown.
//!
//! Grants: `db = ["master", "tenant:*"]`.

use check_common::{describe, fail, http, pass, settings, tenants};
use neo_ops_sdk::{Check, CheckOutcome, db};

const DEFAULT_MIN_SECRET: usize = 16;
const ENDPOINTS: &str = "SELECT id, url, secret FROM webhook_endpoints \
    WHERE active = $1 AND deleted_at IS NULL ORDER BY id";

struct WebhookConfig;

/// What the endpoints are held to.
struct Policy {
    http_hosts: Vec<String>,
    min_secret: usize,
}

impl Check for WebhookConfig {
    fn check() -> CheckOutcome {
        let policy = Policy {
            http_hosts: settings::list("allow_http_hosts", &[])
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            min_secret: match settings::number("min_secret_len", DEFAULT_MIN_SECRET) {
                Ok(n) => n,
                Err(e) => return fail(e, "set min_secret_len to a whole number, e.g. \"16\""),
            },
        };
        let names = match tenants::some_live_or_fail("check the master database") {
            Ok(n) => n,
            Err(outcome) => return outcome,
        };
        let mut problems = Vec::new();
        let mut checked = 0;
        for t in &names {
            let rows = match db::query(&tenants::target(t), ENDPOINTS, &[true.into()]) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("tenant \"{t}\": {}", describe(&e)));
                    continue;
                }
            };
            for row in rows.iter() {
                checked += 1;
                let id = row.int("id").unwrap_or_default();
                let url = row.text("url").unwrap_or_default();
                let secret = row.text("secret").unwrap_or_default();
                for p in policy.judge(url, secret) {
                    problems.push(format!("tenant \"{t}\" endpoint {id}: {p}"));
                }
            }
        }
        if problems.is_empty() {
            pass(format!(
                "{checked} active webhook endpoint(s) in {} tenant(s): https (or allowed http) urls, secrets of at least {} characters",
                names.len(),
                policy.min_secret
            ))
        } else {
            fail(
                problems.join("; "),
                format!(
                    "point each endpoint at an https:// url and give it a random secret of at least {} characters \
                     (e.g. `openssl rand -hex 32`), or deactivate it (UPDATE webhook_endpoints SET active = false WHERE id = …)",
                    policy.min_secret
                ),
            )
        }
    }
}

impl Policy {
    /// What is wrong with one endpoint; empty when nothing is.
    fn judge(&self, url: &str, secret: &str) -> Vec<String> {
        let mut out = Vec::new();
        // A receiver's path is often its credential (`/hooks/T0/B0/XYZ`):
        // named by its origin only, as webhook-dispatch names it.
        let shown = neo_ops_sdk::redact::origin(url)
            .map_or_else(|| http::redact(url), |origin| format!("{origin}/…"));
        match (
            url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()),
            http::host(url),
        ) {
            (Some(scheme), Some(_)) if scheme == "https" => {}
            (Some(scheme), Some(host)) if scheme == "http" => {
                if !self.http_hosts.contains(&host) {
                    out.push(format!("url {shown} is not https"));
                }
            }
            _ => out.push(format!("url \"{shown}\" is not an http(s) url")),
        }
        let len = secret.trim().chars().count();
        if len < self.min_secret {
            out.push(format!(
                "secret has {len} characters, fewer than {}",
                self.min_secret
            ));
        }
        out
    }
}

neo_ops_sdk::export_check!(WebhookConfig);

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            http_hosts: vec!["127.0.0.1".into()],
            min_secret: 16,
        }
    }

    #[test]
    fn https_and_long_secrets_pass() {
        assert!(
            policy()
                .judge("https://hooks.example/x", "0123456789abcdef")
                .is_empty()
        );
        assert!(
            policy()
                .judge("http://127.0.0.1:9000/x", "0123456789abcdef")
                .is_empty()
        );
    }

    #[test]
    fn plain_http_bad_urls_and_short_secrets_are_named_without_the_secret() {
        let p = policy().judge("http://hooks.example/T0/B0/XYZ?key=k", "short-secret");
        assert_eq!(
            p,
            vec![
                "url http://hooks.example/… is not https",
                "secret has 12 characters, fewer than 16"
            ]
        );
        assert!(!p.join(" ").contains("short-secret") && !p.join(" ").contains("XYZ"));
        assert_eq!(policy().judge("ftp://x/", "0123456789abcdef").len(), 1);
        assert_eq!(policy().judge("", "0123456789abcdef").len(), 1);
    }
}
