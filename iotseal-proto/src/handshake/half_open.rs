//! The gateway's tables with per-source accounting (docs/protocol.md §7.3 step 9, §11): the
//! half-open table (by session id) and the hello nonce cache (by nonce). A cap per source
//! (the half-open table's), and when a table is full a hello from a source holding fewer
//! entries than the largest holder evicts that holder's oldest entry, so that a flood from
//! many sources cannot lock out a source that holds none.

use alloc::collections::{BTreeMap, BTreeSet};
use core::cmp::Reverse;
use core::net::IpAddr;

use crate::crypto::CryptoProvider;
use crate::error::Limit;
use crate::handshake::messages::SOURCE_KEY_LEN;
use crate::time::Time;

/// An opaque, fixed-size key for where a hello came from, given by the transport binding
/// with each hello (docs/protocol.md §4.2, §11). Address cookies are bound to it and the
/// half-open table is shared out by it. It never goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey(pub [u8; SOURCE_KEY_LEN]);

impl SourceKey {
    /// The source key of an IP address (the HTTP binding, §18.4): an IPv4 address as its
    /// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), an IPv6 address masked to its /64
    /// (IPv4-mapped IPv6 addresses count as their IPv4 address).
    pub fn from_ip(ip: IpAddr) -> Self {
        let v6 = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_ipv6_mapped(),
                None => v6,
            },
        };
        let mut k = v6.octets();
        if v6.to_ipv4_mapped().is_none() {
            k[8..].fill(0);
        }
        Self(k)
    }

    /// The source key of a label the binding names its sources by (the MQTT binding, §17:
    /// the client level of the response topic): `SHA-256(label)[0..16]`.
    pub fn from_label(p: &CryptoProvider, label: &[u8]) -> Self {
        let h = p.hash.hash(label);
        let mut k = [0u8; SOURCE_KEY_LEN];
        k.copy_from_slice(&h[..SOURCE_KEY_LEN]);
        Self(k)
    }
}

/// Which group an entry counts against: a source, or "no source given" (callers of
/// [`crate::handshake::HandshakeServer::handle_hello`] without a source share one group that
/// no per-source cap applies to).
type Group = Option<SourceKey>;

type HolderKey = (usize, Reverse<Time>, Group);

#[derive(Debug)]
struct Entry<V> {
    expires: Time,
    group: Group,
    value: V,
}

/// Entries by key (a half-open handshake's session id, a hello's nonce), with expiry and
/// per-source accounting.
#[derive(Debug)]
pub(crate) struct HalfOpenTable<K: Ord + Copy, V> {
    entries: BTreeMap<K, Entry<V>>,
    by_expiry: BTreeSet<(Time, K)>,
    by_group: BTreeMap<Group, BTreeSet<(Time, K)>>,
    /// (entries held, its oldest entry's expiry reversed, group) for every group holding any:
    /// the last is the largest holder, and of equal holders the one with the oldest entry.
    holders: BTreeSet<HolderKey>,
    capacity: usize,
    per_source: usize,
}

impl<K: Ord + Copy, V> HalfOpenTable<K, V> {
    /// A table of at most `capacity` entries, at most `per_source` of them per source
    /// (0: no per-source cap).
    pub(crate) fn new(capacity: usize, per_source: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            by_group: BTreeMap::new(),
            holders: BTreeSet::new(),
            capacity,
            per_source,
        }
    }

    /// Sets the per-source cap (0: none); entries already held stay.
    pub(crate) fn set_per_source(&mut self, per_source: usize) {
        self.per_source = per_source;
    }

    /// The per-source cap (0: none).
    pub(crate) fn per_source(&self) -> usize {
        self.per_source
    }

    /// Drops every entry whose expiry is at or before `now`.
    pub(crate) fn expire(&mut self, now: Time) {
        while let Some(&(t, id)) = self.by_expiry.first() {
            if t > now {
                break;
            }
            let _ = self.remove(id);
        }
    }

    /// Whether a live entry exists for `id`.
    pub(crate) fn contains(&self, now: Time, id: K) -> bool {
        self.get(now, id).is_some()
    }

    /// The live value for `id`.
    pub(crate) fn get(&self, now: Time, id: K) -> Option<&V> {
        self.entries
            .get(&id)
            .filter(|e| e.expires > now)
            .map(|e| &e.value)
    }

    /// Number of entries (live or not yet expired by a call).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries held by `source` (`None`: the group without a source).
    pub(crate) fn held_by(&self, source: Option<SourceKey>) -> usize {
        self.by_group.get(&source).map_or(0, BTreeSet::len)
    }

    fn holder_key(&self, group: Group) -> Option<HolderKey> {
        let set = self.by_group.get(&group)?;
        let &(oldest, _) = set.first()?;
        Some((set.len(), Reverse(oldest), group))
    }

    fn holder_changed(&mut self, before: Option<HolderKey>, group: Group) {
        if let Some(k) = before {
            self.holders.remove(&k);
        }
        if let Some(k) = self.holder_key(group) {
            self.holders.insert(k);
        }
    }

    /// Removes and returns the value for `id`.
    pub(crate) fn remove(&mut self, id: K) -> Option<V> {
        let e = self.entries.remove(&id)?;
        self.by_expiry.remove(&(e.expires, id));
        let before = self.holder_key(e.group);
        if let Some(set) = self.by_group.get_mut(&e.group) {
            set.remove(&(e.expires, id));
            if set.is_empty() {
                self.by_group.remove(&e.group);
            }
        }
        self.holder_changed(before, e.group);
        Some(e.value)
    }

    /// Whether a new entry from `source` may enter now (after expiring old ones): refused with
    /// [`Limit::HalfOpenPerSource`] when the source holds its cap, with [`Limit::HalfOpenFull`]
    /// when the table is full and no source holds more entries than this one (nothing to
    /// evict fairly). When it may enter into a full table, [`Self::insert`] evicts.
    pub(crate) fn room(&mut self, now: Time, source: Option<SourceKey>) -> Result<(), Limit> {
        self.expire(now);
        let held = self.held_by(source);
        if source.is_some() && self.per_source > 0 && held >= self.per_source {
            return Err(Limit::HalfOpenPerSource);
        }
        if self.entries.len() < self.capacity {
            return Ok(());
        }
        match self.holders.last() {
            Some(&(most, _, _)) if held < most => Ok(()),
            _ => Err(Limit::HalfOpenFull),
        }
    }

    /// The entry [`Self::insert`] would evict to make room for one from `source`, when the
    /// table is full: the oldest entry of the group holding the most (of several holding as
    /// many, the one whose oldest entry is the oldest).
    fn victim(&self, source: Option<SourceKey>) -> Option<K> {
        if self.entries.len() < self.capacity {
            return None;
        }
        let &(most, _, group) = self.holders.last()?;
        if self.held_by(source) >= most {
            return None;
        }
        self.by_group.get(&group)?.first().map(|&(_, id)| id)
    }

    /// Inserts `value` for `id` from `source` until `expires`, after [`Self::room`] said yes
    /// (an entry already under `id` is replaced). Returns the evicted entry, if the table was
    /// full; returns `Err(value)` back if there is no room after all.
    pub(crate) fn insert(
        &mut self,
        now: Time,
        id: K,
        source: Option<SourceKey>,
        expires: Time,
        value: V,
    ) -> Result<Option<(K, V)>, V> {
        let _ = self.remove(id);
        if self.room(now, source).is_err() {
            return Err(value);
        }
        let evicted = self
            .victim(source)
            .and_then(|v| self.remove(v).map(|val| (v, val)));
        if self.entries.len() >= self.capacity {
            return Err(value);
        }
        self.entries.insert(
            id,
            Entry {
                expires,
                group: source,
                value,
            },
        );
        self.by_expiry.insert((expires, id));
        let before = self.holder_key(source);
        self.by_group
            .entry(source)
            .or_default()
            .insert((expires, id));
        self.holder_changed(before, source);
        Ok(evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(n: u8) -> Option<SourceKey> {
        Some(SourceKey([n; SOURCE_KEY_LEN]))
    }

    #[test]
    fn ip_source_keys() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let k = SourceKey::from_ip(v4);
        assert_eq!(k, SourceKey::from_ip(mapped));
        assert_eq!(&k.0[10..], &[0xff, 0xff, 192, 0, 2, 7]);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::from_ip(a), SourceKey::from_ip(b), "same /64");
        assert_ne!(SourceKey::from_ip(a), SourceKey::from_ip(c));
        assert_eq!(&SourceKey::from_ip(a).0[8..], &[0; 8]);
    }

    #[test]
    fn per_source_cap() {
        let mut t: HalfOpenTable<u32, ()> = HalfOpenTable::new(10, 2);
        let now = Time(1000);
        let exp = Time(2000);
        assert_eq!(t.insert(now, 1, src(1), exp, ()), Ok(None));
        assert_eq!(t.insert(now, 2, src(1), exp, ()), Ok(None));
        assert_eq!(t.room(now, src(1)), Err(Limit::HalfOpenPerSource));
        assert_eq!(t.insert(now, 3, src(1), exp, ()), Err(()));
        assert_eq!(t.room(now, src(2)), Ok(()));
        // No cap for the group without a source.
        for id in 10..15 {
            assert_eq!(t.insert(now, id, None, exp, ()), Ok(None));
        }
        assert_eq!(t.held_by(None), 5);
        // Expiry gives the places back.
        t.expire(exp);
        assert_eq!(t.len(), 0);
        assert_eq!(t.held_by(src(1)), 0);
        assert_eq!(t.room(exp, src(1)), Ok(()));
    }

    #[test]
    fn full_table_evicts_the_largest_holders_oldest() {
        let mut t: HalfOpenTable<u32, ()> = HalfOpenTable::new(4, 0);
        // Source 1 holds three (ids 1..=3, oldest first), source 2 one.
        for id in 1..=3 {
            let at = Time(u64::from(id));
            assert_eq!(
                t.insert(at, id, src(1), Time(100 + u64::from(id)), ()),
                Ok(None)
            );
        }
        assert_eq!(t.insert(Time(4), 4, src(2), Time(104), ()), Ok(None));
        let now = Time(5);
        // A source holding none evicts source 1's oldest.
        assert_eq!(t.insert(now, 5, src(3), Time(105), ()), Ok(Some((1, ()))));
        assert_eq!(t.held_by(src(1)), 2);
        assert!(!t.contains(now, 1));
        // Source 1 (the largest holder) cannot evict anyone.
        assert_eq!(t.room(now, src(1)), Err(Limit::HalfOpenFull));
        // Source 2 holds 1 < 2: evicts source 1's oldest again (id 2).
        assert_eq!(t.insert(now, 6, src(2), Time(106), ()), Ok(Some((2, ()))));
        // Now sources 1, 2, 3 hold 1, 2, 1: source 3 evicts source 2's oldest (id 4).
        assert_eq!(t.insert(now, 7, src(3), Time(107), ()), Ok(Some((4, ()))));
        // Sources 1, 2, 3 hold 1, 1, 2: a newcomer evicts source 3's oldest (id 5).
        assert_eq!(t.held_by(src(3)), 2);
        assert_eq!(t.insert(now, 8, src(9), Time(108), ()), Ok(Some((5, ()))));
        // Everyone holds one: the oldest entry of all goes (id 3, source 1).
        assert_eq!(t.insert(now, 9, src(10), Time(109), ()), Ok(Some((3, ()))));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn flood_from_many_sources_cannot_lock_out_a_newcomer() {
        let mut t: HalfOpenTable<u32, ()> = HalfOpenTable::new(64, 8);
        let mut id = 0u32;
        let mut now = Time(0);
        // 200 flooding sources, round after round, each as many as it may.
        for round in 0..20u64 {
            for s in 0..200u16 {
                id += 1;
                now = Time(round * 1000 + u64::from(s));
                let mut k = [0u8; SOURCE_KEY_LEN];
                k[..2].copy_from_slice(&s.to_be_bytes());
                let _ = t.insert(now, id, Some(SourceKey(k)), now.plus_millis(10_000), ());
            }
        }
        assert_eq!(t.len(), 64);
        // A device holding nothing always gets in, and its entry is not the next victim while
        // any source holds more than one.
        let dev = src(0xee);
        assert_eq!(t.room(now, dev), Ok(()));
        assert!(
            t.insert(now, 1 << 30, dev, now.plus_millis(10_000), ())
                .unwrap()
                .is_some()
        );
        let k = {
            let mut k = [0u8; SOURCE_KEY_LEN];
            k[..2].copy_from_slice(&7u16.to_be_bytes());
            Some(SourceKey(k))
        };
        let _ = t.insert(now, (1 << 30) + 1, k, now.plus_millis(10_000), ());
        assert!(t.contains(now, 1 << 30));
    }
}
