//! Connection limits, broker-wide across the shards: `max.connections` (all Kafka listeners
//! together) and `max.connections.per.ip` (one client address).
//!
//! Data path: a shard's accept loop (`lib.rs::accept_loop`) asks [`ConnectionLimits::admit`]
//! for every accepted socket before spawning its connection task; a refused socket is closed
//! at once (counted, logged at most once a second), an admitted one carries its [`Permit`]
//! until the connection ends, when the counts go down again. The inter-broker listener of a
//! cluster is not limited, as Kafka keeps it usable when clients hit the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Refused {
    #[error("max.connections ({0}) reached")]
    Total(usize),
    #[error("max.connections.per.ip ({0}) reached for this address")]
    PerIp(usize),
}

pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

/// An admitted connection; dropping it gives its place back.
pub struct Permit {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            last_log: Mutex::new(None),
        })
    }

    /// Admits a connection from `ip` (`None`: unknown address, counted in the total only).
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Refused> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Acquire) >= self.max_total {
            return Err(self.refuse(Refused::Total(self.max_total)));
        }
        if let Some(ip) = ip {
            let n = per_ip.entry(ip).or_default();
            if *n >= self.max_per_ip {
                return Err(self.refuse(Refused::PerIp(self.max_per_ip)));
            }
            *n += 1;
        }
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(Permit {
            limits: self.clone(),
            ip,
        })
    }

    /// A connection that bypasses the limits (the inter-broker listener) but is counted.
    pub fn exempt(self: &Arc<Self>) -> Permit {
        self.total.fetch_add(1, Ordering::AcqRel);
        Permit {
            limits: self.clone(),
            ip: None,
        }
    }

    fn refuse(&self, why: Refused) -> Refused {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed().as_secs() >= 1) {
            *last = Some(Instant::now());
            tracing::warn!(reason = %why, refused = self.refused(), "connection refused");
        }
        why
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections admitted and open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let l = &self.limits;
        if let Some(ip) = self.ip {
            let mut per_ip = l.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        let before = l.total.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "permit count underflow");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_addresses_are_bounded_and_given_back() {
        let l = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let p1 = l.admit(Some(a)).expect("first");
        let p2 = l.admit(Some(a)).expect("second");
        assert_eq!(l.admit(Some(a)).err(), Some(Refused::PerIp(2)));
        let p3 = l.admit(Some(b)).expect("other address");
        assert_eq!(l.admit(Some(b)).err(), Some(Refused::Total(3)));
        let exempt = l.exempt();
        assert_eq!(l.open(), 4, "the inter-broker connection is counted");
        drop(exempt);
        drop(p1);
        let p4 = l.admit(Some(a)).expect("a place came back");
        assert_eq!(l.refused(), 2);
        drop((p2, p3, p4));
        assert_eq!(l.open(), 0);
        assert!(l.per_ip.lock().expect("lock").is_empty());
    }
}
