//! Name resolution for wildcard (`scheme://*`) http grants: customer-chosen
//! hosts may reach only public addresses. Loopback, private, link-local,
//! carrier-grade NAT, multicast and unspecified addresses are refused (a
//! NAT64 or 6to4 address counts as the IPv4 address it carries; Teredo,
//! IPv4-compatible and IPv4-translated ones are refused outright), both
//! before the request (for a clear `denied`) and inside the client's
//! resolver, so a name that changes its answer in between gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let first = s[0];
    // NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and 6to4 (2002::/16) carry an
    // IPv4 address that a gateway reaches: it must be public too.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if first == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return is_public_v4(embedded(s[6], s[7]));
    }
    if first == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001 {
        return false; // local-use NAT64: whatever it maps to is not ours to judge
    }
    if first == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || s[..6] == [0; 6] // IPv4-compatible (deprecated): ::a.b.c.d
        || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0) // IPv4-translated
        || (first == 0x0100 && s[1..4] == [0; 3]) // discard-only
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || (first & 0xffc0) == 0xfec0 // site local (deprecated)
        || (first == 0x2001 && s[1] == 0) // Teredo: a tunnel to any IPv4 address
        || (first == 0x2001 && s[1] == 0x0db8)) // documentation
}

/// The public addresses `host` resolves to; an error naming the host when
/// it has none (or resolves to any non-public address: a name that points
/// inside is refused outright rather than half-used).
pub async fn resolve_public(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if is_public(ip) {
            Ok(vec![SocketAddr::new(ip, port)])
        } else {
            Err(format!("\"{host}\" is not a public address"))
        };
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve \"{host}\": {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("\"{host}\" has no addresses"));
    }
    if let Some(inside) = addrs.iter().find(|a| !is_public(a.ip())) {
        // Which inside address stays in the host's log: the reason goes
        // back to the plugin, and from a webhook's error to whoever set its
        // URL, who could map the inside network name by name.
        tracing::warn!(host, address = %inside.ip(), "a name resolves to a non-public address; refused");
        return Err(format!(
            "\"{host}\" resolves to a non-public address (which one is in the host's log)"
        ));
    }
    Ok(addrs)
}

/// The resolver of the client used for wildcard grants.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_public(&host, 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:5",
            "64:ff9b::7f00:1",
            "64:ff9b:1::808:808",
            "2002:a00:1::1",
            "2002:c0a8:101::1",
            "::7f00:1",
            "::a00:1",
            "::ffff:0:7f00:1",
            "100::1",
            "fec0::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "192.0.0.8",
        ] {
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(outside.parse().unwrap()), "{outside}");
        }
    }

    #[tokio::test]
    async fn names_pointing_inside_are_refused() {
        let err = resolve_public("localhost", 443).await.unwrap_err();
        assert_eq!(
            err,
            "\"localhost\" resolves to a non-public address (which one is in the host's log)"
        );
        let err = resolve_public("10.0.0.5", 6443).await.unwrap_err();
        assert_eq!(err, "\"10.0.0.5\" is not a public address");
    }
}
