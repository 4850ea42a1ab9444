//! The client's IP address behind reverse proxies.
//!
//! `X-Forwarded-For` and `X-Real-IP` are believed only when the TCP peer is a trusted
//! proxy (`trusted_proxies`). Then the client is the rightmost address in
//! `X-Forwarded-For` that is not itself a trusted proxy: each proxy appends the address
//! it saw, so everything left of the last untrusted hop may be forged by the client.
//!
//! Forwarding headers from a peer that is not trusted are ignored, which is right for a
//! client forging them but a trap for an operator who forgot `trusted_proxies`: every
//! client behind that proxy then shares the proxy's per-IP limits. So such a request
//! logs one WARN naming the peer and the key, at most once an hour per peer.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The headers a reverse proxy adds to say who its client was.
const FORWARDING_HEADERS: [&str; 3] = ["x-forwarded-for", "x-real-ip", "forwarded"];

/// Warns (once an hour per peer) when `peer` is not a trusted proxy but sends
/// forwarding headers. Called for every request before routing, so a proxy whose
/// traffic is only health checks or `/v1/info` is noticed too.
pub(crate) fn check_forwarding_headers(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) {
    if !is_trusted_proxy(peer, trusted)
        && FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
    {
        warn_untrusted_proxy(canonical(peer));
    }
}

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

static WARNED: Mutex<Option<WarnedPeers>> = Mutex::new(None);

fn warn_untrusted_proxy(peer: IpAddr) {
    let warn = {
        // Held for a map lookup, never across an await.
        let mut guard = WARNED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard
            .get_or_insert_with(WarnedPeers::default)
            .should_warn(peer, Instant::now())
    };
    if warn {
        tracing::warn!(
            %peer,
            "a request from {peer} carries X-Forwarded-For, X-Real-IP or Forwarded, but {peer} is not in trusted_proxies, so the headers are ignored: every client behind it shares one IP's limits (max_connections_per_ip, max_messages_per_second_per_ip, http_max_connections_per_ip). If {peer} is your reverse proxy, add it to trusted_proxies (at most one warning an hour per peer)"
        );
    }
}

/// Which peers were warned about, and when: the pure core of the hourly warning.
#[derive(Debug, Default)]
struct WarnedPeers {
    last: HashMap<IpAddr, Instant>,
}

impl WarnedPeers {
    /// One warning per peer per this long.
    const EVERY: Duration = Duration::from_secs(3600);
    /// Peers remembered at most. Forwarding headers are what a misconfigured proxy
    /// sends, from a handful of addresses; a client flooding them from many addresses
    /// cannot grow the map past this, and beyond it is not warned about.
    const MAX_PEERS: usize = 1024;

    fn should_warn(&mut self, peer: IpAddr, now: Instant) -> bool {
        if let Some(at) = self.last.get(&peer) {
            if now.duration_since(*at) < Self::EVERY {
                return false;
            }
        }
        if self.last.len() >= Self::MAX_PEERS && !self.last.contains_key(&peer) {
            self.last
                .retain(|_, at| now.duration_since(*at) < Self::EVERY);
            if self.last.len() >= Self::MAX_PEERS {
                return false;
            }
        }
        self.last.insert(peer, now);
        true
    }
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
    fn an_untrusted_proxy_is_warned_about_once_an_hour() {
        let mut warned = WarnedPeers::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        assert!(warned.should_warn(a, start));
        assert!(!warned.should_warn(a, start + Duration::from_secs(3599)));
        assert!(warned.should_warn(b, start), "each peer has its own hour");
        assert!(warned.should_warn(a, start + Duration::from_secs(3600)));
    }

    #[test]
    fn the_warned_peers_are_bounded() {
        let mut warned = WarnedPeers::default();
        let start = Instant::now();
        for n in 0..WarnedPeers::MAX_PEERS as u32 {
            assert!(warned.should_warn(IpAddr::from(n.to_be_bytes()), start));
        }
        let late: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(!warned.should_warn(late, start), "full");
        assert_eq!(warned.last.len(), WarnedPeers::MAX_PEERS);
        assert!(
            warned.should_warn(late, start + Duration::from_secs(3600)),
            "expired entries make room"
        );
        assert_eq!(warned.last.len(), 1);
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
