//! A bound on the attachment bytes the relay holds for requests in progress, across
//! all uploads and downloads: a body being read, its decoded copy, a blob being
//! answered. Without it, many concurrent uploads of `attachment_max_size_bytes` could
//! take as much memory as they like before any store budget is consulted.
//!
//! The bound is a semaphore counted in KiB (so the largest budget fits its permit
//! count). A request reserves what it will hold before holding it and keeps the
//! reservation until its bytes are gone (for a download, until the response body is
//! dropped). When a reservation cannot be had at once the request is refused with
//! [`BlobError::Busy`] (503 with `Retry-After`) rather than queued: a queue of waiting
//! uploads would itself hold sockets and buffers without bound. A request that wants
//! more than the whole budget reserves the whole budget, so it runs, alone.
//!
//! A download learns its blob's size only from the store, and the Redis store's reply
//! is already in memory by then: that copy is reserved as soon as it is known, and how
//! often one client can cause it is bounded by the IP's rate-limit token every download
//! takes first.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::BlobError;

/// The relay-wide budget of attachment bytes in flight.
pub struct Inflight {
    permits: Arc<Semaphore>,
    capacity_kib: u32,
    max_bytes: usize,
}

/// Bytes reserved from an [`Inflight`] budget; given back when dropped.
#[derive(Debug)]
pub struct InflightPermit {
    _permit: OwnedSemaphorePermit,
}

impl Inflight {
    /// A budget of `max_bytes` (rounded down to whole KiB, at least one KiB).
    pub fn new(max_bytes: usize) -> Self {
        let capacity_kib = u32::try_from(max_bytes / 1024).unwrap_or(u32::MAX).max(1);
        Inflight {
            permits: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
            max_bytes,
        }
    }

    /// Reserves `bytes` now, or refuses with [`BlobError::Busy`] without waiting.
    pub fn try_reserve(&self, bytes: u64) -> Result<InflightPermit, BlobError> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity_kib);
        self.permits
            .clone()
            .try_acquire_many_owned(kib)
            .map(|permit| InflightPermit { _permit: permit })
            .map_err(|_| BlobError::Busy {
                limit: self.max_bytes,
            })
    }

    /// Bytes not reserved now (in whole KiB).
    #[cfg(test)]
    pub fn available_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_released_and_clamped() {
        let budget = Inflight::new(10 * 1024);
        let a = budget.try_reserve(6 * 1024).unwrap();
        assert_eq!(budget.available_bytes(), 4 * 1024);
        assert_eq!(
            budget.try_reserve(5 * 1024).unwrap_err(),
            BlobError::Busy { limit: 10 * 1024 }
        );
        let b = budget.try_reserve(1).unwrap();
        assert_eq!(budget.available_bytes(), 3 * 1024, "a byte costs a KiB");
        drop((a, b));
        assert_eq!(budget.available_bytes(), 10 * 1024);
        // More than the whole budget: it takes the whole budget, and runs alone.
        let all = budget.try_reserve(u64::MAX).unwrap();
        assert_eq!(budget.available_bytes(), 0);
        assert!(budget.try_reserve(0).is_err());
        drop(all);
        assert_eq!(budget.available_bytes(), 10 * 1024);
    }
}
