//! Flood control in fixed windows per client address, in kv so every
//! replica shares it. Without an address (no socket peer) all such requests
//! share one client, `global`. An IPv6 client is its /64: one host is handed
//! a whole /64, and could otherwise take a fresh budget per address.

use neo_ops_sdk::{Failure, kv, time};
use std::net::{IpAddr, Ipv6Addr};

/// The client a budget is kept for: the address, or an IPv6 address's /64.
pub fn client(remote_addr: Option<&str>) -> String {
    let Some(addr) = remote_addr else {
        return "global".into();
    };
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(prefix))
        }
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        _ => addr.to_string(),
    }
}

/// The current window of `seconds`: its index and the seconds left in it.
pub fn window(seconds: u64) -> (u64, u64) {
    let now = time::now_micros().max(0) as u64 / 1_000_000;
    (now / seconds, seconds - now % seconds)
}

/// `Ok(None)` when the request is admitted, `Ok(Some(seconds))` until the
/// window ends when the client has posted more than `limit` times in it.
pub fn check(client: &str, limit: u64, window_seconds: u64) -> Result<Option<u64>, Failure> {
    let (window, left) = window(window_seconds);
    let key = format!("csp:rate:{client}:{window}");
    let count = kv::incr(&key, 1)?;
    if count == 1 {
        // The key names its window, so it is garbage once the window ends.
        kv::expire(&key, window_seconds.saturating_mul(1000))?;
    }
    Ok((count.max(0) as u64 > limit).then_some(left))
}

#[cfg(test)]
mod tests {
    use super::client;

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        assert_eq!(client(Some("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_eq!(
            client(Some("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            "2001:db8:1:2::/64"
        );
        assert_ne!(client(Some("2001:db8:1:3::1")), "2001:db8:1:2::/64");
        assert_eq!(client(Some("::ffff:192.0.2.7")), "192.0.2.7");
        assert_eq!(client(Some("192.0.2.7")), "192.0.2.7");
        assert_eq!(client(None), "global");
    }
}
