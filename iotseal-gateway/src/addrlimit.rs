//! Open connections per source address (an IPv4 address, or an IPv6 /64: one host's share of
//! a typical IPv6 allocation), so that no single source can take every connection slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The unit a limit applies to: an IPv4 address or an IPv6 /64 (IPv4-mapped IPv6 addresses
/// count as their IPv4 address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SourcePrefix {
    /// One IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl From<IpAddr> for SourcePrefix {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&o[..8]);
                    Self::V6(p)
                }
            },
        }
    }
}

/// Counts open connections per [`SourcePrefix`]. The table holds only prefixes with an open
/// connection, so it is bounded by the connection cap.
#[derive(Debug)]
pub(crate) struct ConnectionsPerSource {
    max: usize,
    open: Mutex<HashMap<SourcePrefix, usize>>,
}

/// One open connection's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    table: Arc<ConnectionsPerSource>,
    prefix: SourcePrefix,
}

impl ConnectionsPerSource {
    /// At most `max` open connections per source.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new connection from `ip`, or `None` when its source holds `max` already.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let prefix = SourcePrefix::from(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(prefix).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            table: self.clone(),
            prefix,
        })
    }

    /// Open connections of `ip`'s source.
    #[cfg(test)]
    pub(crate) fn open_for(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&SourcePrefix::from(ip)).copied().unwrap_or(0)
    }

    /// Sources with an open connection.
    #[cfg(test)]
    pub(crate) fn sources(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.prefix) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.prefix);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_is_capped_and_slots_come_back() {
        let t = ConnectionsPerSource::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = t.acquire(a).unwrap();
        let _s2 = t.acquire(a).unwrap();
        assert!(t.acquire(a).is_none(), "third from one address");
        let _s3 = t.acquire(b).expect("another address is served");
        drop(s1);
        assert_eq!(t.open_for(a), 1);
        let _s4 = t.acquire(a).expect("a slot came back");
        assert_eq!(t.sources(), 2);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = ConnectionsPerSource::new(1);
        let _x = t.acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(
            t.acquire("2001:db8:1:2:ffff::9".parse().unwrap()).is_none(),
            "same /64"
        );
        let _y = t
            .acquire("2001:db8:1:3::1".parse().unwrap())
            .expect("another /64");
        let _z = t.acquire("192.0.2.7".parse().unwrap()).unwrap();
        assert!(t.acquire("::ffff:192.0.2.7".parse().unwrap()).is_none());
        drop((_x, _y, _z));
        assert_eq!(t.sources(), 0, "empty entries are removed");
    }
}
