//! Admission of HTTP connections, decided at `accept` before a byte is read, so that
//! no number of connections (finished requests or not) can take every file descriptor.
//!
//! A connection is counted against a global cap and a cap per TCP peer address (the
//! `X-Forwarded-For` of a trusted proxy cannot be read yet, so peers in
//! `trusted_proxies` are exempt from the per-address caps and count only globally).
//! Past either cap it may still get a place in a small *reserve*: such a connection is
//! read for one request, and only `/healthz`, `/readyz` and `/metrics` are answered;
//! anything else gets the refusal (429 past the address's cap, 503 past the global
//! one). That keeps load-balancer health checks answering while a flood holds the
//! pool, and tells a refused client why instead of resetting it. Past the reserve (or
//! the address's share of it) the connection is closed as soon as it is accepted.
//!
//! WebSockets: an upgrade request is an HTTP request, so it holds an HTTP place until
//! hyper hands the connection over; from then on only its WebSocket permit
//! (`admission.rs`, taken during the upgrade) counts it. The two pools overlap for
//! that instant only, and the descriptors the relay needs are bounded by
//! `http_max_connections + http_reserved_connections + max_connections`.
//!
//! This module only counts; `serve.rs` accepts, reads and closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::ApiError;
use crate::protocol::ErrorCode;

/// The HTTP connection caps (`http_max_connections`, `http_max_connections_per_ip`,
/// `http_reserved_connections`, `http_reserved_connections_per_ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnCaps {
    pub max: usize,
    pub max_per_ip: usize,
    pub reserved: usize,
    pub reserved_per_ip: usize,
}

/// Which cap a connection was past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerIp,
    Global,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PerIp => "per_ip",
            Refusal::Global => "global",
        }
    }
}

/// What to do with an accepted connection.
#[derive(Debug)]
pub enum Verdict {
    /// Serve it.
    Serve(ConnPermit),
    /// Read one request: health endpoints are answered, the rest refused.
    Reserve(ConnPermit, Refusal),
    /// No place even in the reserve: close it now.
    Close(Refusal),
}

#[derive(Debug, Default)]
struct Counts {
    served: usize,
    reserve: usize,
    /// Per peer address: (served, reserve). Entries at (0, 0) are removed.
    per_ip: HashMap<IpAddr, (usize, usize)>,
}

/// The counts of one listener's connections.
#[derive(Debug)]
pub struct Gate {
    caps: ConnCaps,
    counts: Mutex<Counts>,
}

/// A connection's place; dropping it gives the place back.
#[derive(Debug)]
pub struct ConnPermit {
    gate: Arc<Gate>,
    /// `None` for an exempt (trusted proxy) peer.
    ip: Option<IpAddr>,
    reserve: bool,
}

impl Gate {
    pub fn new(caps: ConnCaps) -> Arc<Self> {
        Arc::new(Gate {
            caps,
            counts: Mutex::default(),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent under a panic elsewhere: every change is one step.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides about a connection from `ip`; `exempt` peers (trusted proxies) skip the
    /// per-address caps.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, exempt: bool) -> Verdict {
        let caps = self.caps;
        let mut counts = self.counts();
        let (mine, mine_reserve) = if exempt {
            (0, 0)
        } else {
            counts.per_ip.get(&ip).copied().unwrap_or((0, 0))
        };
        let refusal = if counts.served >= caps.max {
            Refusal::Global
        } else if mine >= caps.max_per_ip {
            Refusal::PerIp
        } else {
            counts.served += 1;
            if !exempt {
                counts.per_ip.entry(ip).or_default().0 += 1;
            }
            return Verdict::Serve(self.permit(ip, exempt, false));
        };
        if counts.reserve >= caps.reserved || mine_reserve >= caps.reserved_per_ip {
            return Verdict::Close(refusal);
        }
        counts.reserve += 1;
        if !exempt {
            counts.per_ip.entry(ip).or_default().1 += 1;
        }
        Verdict::Reserve(self.permit(ip, exempt, true), refusal)
    }

    fn permit(self: &Arc<Self>, ip: IpAddr, exempt: bool, reserve: bool) -> ConnPermit {
        ConnPermit {
            gate: self.clone(),
            ip: (!exempt).then_some(ip),
            reserve,
        }
    }

    /// Connections open now: (served, reserve).
    pub fn open(&self) -> (usize, usize) {
        let counts = self.counts();
        (counts.served, counts.reserve)
    }

    /// The answer to a request on a reserve connection that is not a health check.
    pub fn refusal(&self, why: Refusal) -> ApiError {
        match why {
            Refusal::PerIp => ApiError::new(
                ErrorCode::TooManyConnections,
                format!(
                    "this address holds http_max_connections_per_ip ({}) HTTP connections; reuse one (keep-alive) or close some",
                    self.caps.max_per_ip
                ),
            ),
            Refusal::Global => ApiError {
                code: ErrorCode::Unavailable,
                detail: format!(
                    "the relay holds http_max_connections ({}) HTTP connections; retry shortly or use another node",
                    self.caps.max
                ),
                retry_after_ms: Some(1000),
            },
        }
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut counts = self.gate.counts();
        if self.reserve {
            counts.reserve -= 1;
        } else {
            counts.served -= 1;
        }
        let Some(ip) = self.ip else { return };
        if let Some(entry) = counts.per_ip.get_mut(&ip) {
            if self.reserve {
                entry.1 -= 1;
            } else {
                entry.0 -= 1;
            }
            // Forget idle addresses, so the table holds only peers with connections.
            if *entry == (0, 0) {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, max_per_ip: usize, reserved: usize, reserved_per_ip: usize) -> Arc<Gate> {
        Gate::new(ConnCaps {
            max,
            max_per_ip,
            reserved,
            reserved_per_ip,
        })
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, n])
    }

    fn served(v: Verdict) -> ConnPermit {
        match v {
            Verdict::Serve(p) => p,
            other => panic!("expected Serve, got {other:?}"),
        }
    }

    fn reserve(v: Verdict, why: Refusal) -> ConnPermit {
        match v {
            Verdict::Reserve(p, r) if r == why => p,
            other => panic!("expected Reserve({why:?}), got {other:?}"),
        }
    }

    #[test]
    fn per_ip_cap_then_its_reserve_share_then_close() {
        let g = gate(10, 2, 4, 1);
        let a = served(g.admit(ip(1), false));
        let _b = served(g.admit(ip(1), false));
        let r = reserve(g.admit(ip(1), false), Refusal::PerIp);
        assert!(matches!(
            g.admit(ip(1), false),
            Verdict::Close(Refusal::PerIp)
        ));
        let _other = served(g.admit(ip(2), false));
        assert_eq!(g.open(), (3, 1));
        drop(a);
        let _c = served(g.admit(ip(1), false));
        drop(r);
        let _r2 = reserve(g.admit(ip(1), false), Refusal::PerIp);
    }

    #[test]
    fn global_cap_then_reserve_then_close() {
        let g = gate(2, 10, 2, 2);
        let _a = served(g.admit(ip(1), false));
        let b = served(g.admit(ip(2), false));
        let _r1 = reserve(g.admit(ip(3), false), Refusal::Global);
        let _r2 = reserve(g.admit(ip(4), false), Refusal::Global);
        assert!(matches!(
            g.admit(ip(5), false),
            Verdict::Close(Refusal::Global)
        ));
        drop(b);
        let _c = served(g.admit(ip(5), false));
    }

    #[test]
    fn exempt_peers_count_only_globally() {
        let g = gate(3, 1, 0, 1);
        let proxy = ip(9);
        let _p = [
            served(g.admit(proxy, true)),
            served(g.admit(proxy, true)),
            served(g.admit(proxy, true)),
        ];
        assert!(g.counts().per_ip.is_empty());
        assert!(matches!(
            g.admit(proxy, true),
            Verdict::Close(Refusal::Global)
        ));
    }

    #[test]
    fn places_come_back_and_idle_addresses_are_forgotten() {
        let g = gate(5, 5, 5, 5);
        let all: Vec<_> = (0..5).map(|_| served(g.admit(ip(1), false))).collect();
        let r = reserve(g.admit(ip(1), false), Refusal::Global);
        drop((all, r));
        assert_eq!(g.open(), (0, 0));
        assert!(g.counts().per_ip.is_empty());
    }

    #[test]
    fn refusals_name_their_key() {
        let g = gate(7, 3, 1, 1);
        let per_ip = g.refusal(Refusal::PerIp);
        assert_eq!(per_ip.code, ErrorCode::TooManyConnections);
        assert!(per_ip.detail.contains("http_max_connections_per_ip (3)"));
        let global = g.refusal(Refusal::Global);
        assert_eq!(global.code, ErrorCode::Unavailable);
        assert!(global.detail.contains("http_max_connections (7)"));
        assert_eq!(global.retry_after_ms, Some(1000));
    }
}
