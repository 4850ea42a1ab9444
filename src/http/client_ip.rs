//! The client's IP address behind reverse proxies.
//!
//! `X-Forwarded-For` and `X-Real-IP` are believed only when the TCP peer is a trusted
//! proxy (`trusted_proxies`). Then the client is the rightmost address in
//! `X-Forwarded-For` that is not itself a trusted proxy: each proxy appends the address
//! it saw, so everything left of the last untrusted hop may be forged by the client.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// Resolves the address that per-IP limits and logs should use.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted_proxy(*ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    if let Some(ip) = forwarded.iter().rev().find(|ip| !is_trusted(ip)) {
        return canonical(*ip);
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .unwrap_or(peer)
}

/// Whether `peer` is one of `trusted_proxies`.
pub fn is_trusted_proxy(peer: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&canonical(peer)))
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) count as their IPv4 address.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(k, v) in pairs {
            h.append(k, v.parse().unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
        ]);
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &nets(&["127.0.0.1/32"])), peer);
        assert_eq!(client_ip(peer, &h, &[]), peer);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3")]);
        let got = client_ip("127.0.0.1".parse().unwrap(), &h, &trusted);
        assert_eq!(
            got,
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "a forged leftmost entry is skipped"
        );
    }

    #[test]
    fn x_real_ip_is_the_fallback_and_mapped_addresses_match_v4_nets() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = headers(&[("x-real-ip", "203.0.113.9")]);
        let peer: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer, &HeaderMap::new(), &trusted),
            peer,
            "no headers: the peer"
        );
    }
}
