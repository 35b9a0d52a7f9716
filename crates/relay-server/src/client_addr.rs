//! Which address a request comes from, for the per-address limits.
//!
//! The TCP peer, unless the peer is a configured trusted proxy (`RELAY_TRUSTED_PROXIES`):
//! then the `Forwarded` (RFC 7239) or, without it, `X-Forwarded-For` chain is read from the
//! right, skipping trusted proxies, and the first other address is the client. A header
//! from an untrusted peer is ignored (anyone can write one), and loopback is trusted only
//! when listed.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Parse `RELAY_TRUSTED_PROXIES`: comma-separated addresses or CIDR blocks.
pub fn parse_trusted_proxies(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
        })
        .collect()
}

/// The client's address: `peer`, or what a trusted proxy says in the forwarding headers.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.ip().to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let chain = forwarded_chain(headers);
    for hop in chain.iter().rev() {
        match hop {
            // The trusted proxy forwarded for an address we cannot read ("unknown", an
            // obfuscated name, garbage): stay with the proxy's own address.
            None => return client,
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    return client;
                }
            }
        }
    }
    client
}

/// The `for` addresses of `Forwarded`, or else of `X-Forwarded-For`, left to right;
/// `None` for an entry that is not an address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_node(v))
            })
            .collect();
    }
    values("x-forwarded-for")
        .iter()
        .flat_map(|v| v.split(','))
        .map(parse_node)
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:80`, `"[2001:db8::1]:80"`, `2001:db8::1` → the address.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let inner = text.strip_prefix('[')?.split(']').next()?;
    inner.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = v.parse() {
                h.append(*k, v);
            }
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap_or_else(|e| panic!("{e}"));
        let xff = headers(&[("x-forwarded-for", "198.51.100.7, 203.0.113.9")]);
        assert_eq!(client_ip(peer, &xff, &[]), ip("127.0.0.1"));
        let trusted = parse_trusted_proxies("127.0.0.1, 10.0.0.0/8").unwrap_or_default();
        assert_eq!(trusted.len(), 2);
        assert_eq!(client_ip(peer, &xff, &trusted), ip("203.0.113.9"));
        let through_two = headers(&[("x-forwarded-for", "198.51.100.7, 10.1.2.3")]);
        assert_eq!(client_ip(peer, &through_two, &trusted), ip("198.51.100.7"));
        let fwd = headers(&[
            ("forwarded", "for=192.0.2.60;proto=http"),
            ("forwarded", "for=\"[2001:db8:cafe::17]:4711\""),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client_ip(peer, &fwd, &trusted), ip("2001:db8:cafe::17"));
        let unknown = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_ip(peer, &unknown, &trusted), ip("127.0.0.1"));
        assert!(parse_trusted_proxies("10.0.0.0/33").is_err());
        assert!(parse_trusted_proxies("").unwrap_or_default().is_empty());
    }
}
