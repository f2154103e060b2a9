//! Keeps `callback_url` deliveries off the server's own networks.
//!
//! A client names its `callback_url` freely, so without a check any tenant
//! could make the server post to loopback services, the private network or a
//! cloud metadata address. Unless `webhooks.allow_private_callback_urls` is
//! set, a callback URL is refused at upload when its host is such an address
//! (or `localhost`), and at delivery a resolver that drops every such address
//! resolves the host, so a name that points inside (or is re-pointed after the
//! upload) reaches nothing. Endpoints the operator configures are trusted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// True for an address on the public internet: not loopback, private,
/// shared (CGNAT), link-local, multicast, documentation, benchmarking or
/// otherwise reserved. IPv4 addresses inside IPv6 are judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240; // reserved
    !reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let reserved = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8; // documentation
    !reserved
}

/// The IPv4 address carried by an IPv4-mapped, IPv4-compatible or NAT64 IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6].iter().all(|&x| x == 0) && !ip.is_loopback() && !ip.is_unspecified();
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    (compatible || nat64).then_some(low)
}

/// Refuses a callback URL whose host is a non-public address or a
/// `localhost` name; other names are checked when they are resolved.
pub fn check_callback_host(url: &str) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("is not a valid URL ({e})"))?;
    // The URL parser writes IPv4 hosts in dotted form (`2130706433` is
    // `127.0.0.1`) and IPv6 hosts in brackets.
    let host = parsed.host_str().unwrap_or_default();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let refused = match literal.parse::<IpAddr>() {
        Ok(ip) => !is_public(ip),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name.is_empty() || name == "localhost" || name.ends_with(".localhost")
        }
    };
    if refused {
        return Err("must not point to a loopback, private or link-local address".into());
    }
    Ok(())
}

/// A DNS resolver that keeps only public addresses; a name with none left fails to resolve.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| is_public(addr.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_addresses_are_not_public() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn callback_hosts_are_checked_before_resolving() {
        for bad in [
            "http://127.0.0.1:9000/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/",
            "http://api.localhost./",
            "http://2130706433/", // 127.0.0.1 as one number
            "http://0x7f.1/",
        ] {
            assert!(check_callback_host(bad).is_err(), "{bad}");
        }
        check_callback_host("https://hooks.example.com/x").unwrap();
        check_callback_host("http://93.184.216.34/x").unwrap();
    }

    #[tokio::test]
    async fn names_that_resolve_inside_do_not_resolve() {
        let name: Name = "localhost".parse().unwrap();
        let error = PublicOnly.resolve(name).await.err().unwrap();
        assert!(error.to_string().contains("no public address"), "{error}");
    }
}
