//! Admission of WebSocket connections: a global cap, a per-IP cap and a global rate of
//! new connections, checked before the upgrade. A permit travels with the session and
//! gives its place back when the session ends, however it ends.

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::ApiError;
use crate::protocol::ErrorCode;

pub struct Admission {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    max_total: usize,
    max_per_ip: usize,
    new_per_second: DefaultDirectRateLimiter,
}

/// One admitted connection; dropping it releases the place.
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize, new_per_second: u32) -> Arc<Self> {
        let rate = NonZeroU32::new(new_per_second).unwrap_or(NonZeroU32::MIN);
        Arc::new(Admission {
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            max_total,
            max_per_ip,
            new_per_second: RateLimiter::direct(Quota::per_second(rate)),
        })
    }

    /// Admits a connection from `ip`, or says which limit refused it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, ApiError> {
        if self.new_per_second.check().is_err() {
            return Err(ApiError {
                code: ErrorCode::Unavailable,
                detail: "too many new connections per second (max_new_connections_per_second); retry shortly".into(),
                retry_after_ms: Some(1000),
            });
        }
        let taken = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(ApiError {
                code: ErrorCode::Unavailable,
                detail: format!("the relay holds max_connections ({}) connections; retry later or use another node", self.max_total),
                retry_after_ms: Some(5000),
            });
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError {
                code: ErrorCode::TooManyConnections,
                detail: format!(
                    "this IP already holds max_connections_per_ip ({}) connections",
                    self.max_per_ip
                ),
                retry_after_ms: None,
            });
        }
        *count += 1;
        Ok(Permit {
            admission: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let a = &self.admission;
        a.total.fetch_sub(1, Ordering::AcqRel);
        // Remove the IP's entry at zero so idle addresses cost nothing.
        a.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_apply_and_places_come_back() {
        let a = Admission::new(3, 2, 1000);
        let ip1: IpAddr = "203.0.113.1".parse().unwrap();
        let ip2: IpAddr = "203.0.113.2".parse().unwrap();
        let p1 = a.admit(ip1).unwrap();
        let _p2 = a.admit(ip1).unwrap();
        assert_eq!(
            a.admit(ip1).err().unwrap().code,
            ErrorCode::TooManyConnections
        );
        let _p3 = a.admit(ip2).unwrap();
        assert_eq!(
            a.admit(ip2).err().unwrap().code,
            ErrorCode::Unavailable,
            "global cap"
        );
        drop(p1);
        let _p4 = a.admit(ip1).expect("a dropped permit frees both places");
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn idle_ips_are_forgotten() {
        let a = Admission::new(10, 10, 1000);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        drop(a.admit(ip).unwrap());
        assert!(a.per_ip.is_empty());
        assert_eq!(a.open(), 0);
    }
}
