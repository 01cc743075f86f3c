//! Bounded maps whose entries expire: the hello nonce cache, the half-open table and the
//! cache of handshake answers for retransmissions.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use crate::time::Time;

/// A map with a capacity and an expiry time per entry.
#[derive(Debug)]
pub struct ExpiringMap<K: Ord + Clone, V> {
    entries: BTreeMap<K, (Time, V)>,
    by_expiry: BTreeSet<(Time, K)>,
    capacity: usize,
}

impl<K: Ord + Clone, V> ExpiringMap<K, V> {
    /// An empty map holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            capacity,
        }
    }

    /// Drops every entry whose expiry is at or before `now`.
    pub fn expire(&mut self, now: Time) {
        while let Some((t, _)) = self.by_expiry.first() {
            if *t > now {
                break;
            }
            if let Some((_, k)) = self.by_expiry.pop_first() {
                self.entries.remove(&k);
            }
        }
    }

    /// Whether a live entry exists for `k`.
    pub fn contains(&self, now: Time, k: &K) -> bool {
        self.entries.get(k).is_some_and(|(t, _)| *t > now)
    }

    /// The live value for `k`.
    pub fn get(&self, now: Time, k: &K) -> Option<&V> {
        self.entries
            .get(k)
            .filter(|(t, _)| *t > now)
            .map(|(_, v)| v)
    }

    /// Whether there is room for one more entry after expiring old ones.
    pub fn has_room(&mut self, now: Time) -> bool {
        self.expire(now);
        self.entries.len() < self.capacity
    }

    /// Inserts if there is room (after expiring); returns false when full.
    pub fn insert(&mut self, now: Time, k: K, expires: Time, v: V) -> bool {
        if !self.entries.contains_key(&k) && !self.has_room(now) {
            return false;
        }
        if let Some((old, _)) = self.entries.insert(k.clone(), (expires, v)) {
            self.by_expiry.remove(&(old, k.clone()));
        }
        self.by_expiry.insert((expires, k));
        true
    }

    /// Removes and returns the value for `k`.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (t, v) = self.entries.remove(k)?;
        self.by_expiry.remove(&(t, k.clone()));
        Some(v)
    }

    /// Number of entries (live or not yet expired by a call).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Answers to handshake messages, by SHA-256 of the request, so that a retransmitted M1 or
/// M3 gets the same bytes back (never a new signature or a second encryption under one nonce).
#[derive(Debug)]
pub struct ResponseCache {
    map: ExpiringMap<[u8; 32], Vec<u8>>,
}

impl ResponseCache {
    /// A cache of at most `capacity` answers.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: ExpiringMap::new(capacity),
        }
    }

    /// The cached answer for a request hash.
    pub fn get(&self, now: Time, request_hash: &[u8; 32]) -> Option<&[u8]> {
        self.map.get(now, request_hash).map(Vec::as_slice)
    }

    /// Remembers an answer until `expires`, evicting the oldest if full.
    pub fn put(&mut self, now: Time, request_hash: [u8; 32], expires: Time, answer: Vec<u8>) {
        self.map.expire(now);
        if self.map.len() >= self.map.capacity()
            && let Some((_, k)) = self.map.by_expiry.pop_first()
        {
            self.map.entries.remove(&k);
        }
        let _ = self.map.insert(now, request_hash, expires, answer);
    }

    /// Forgets the answer for a request hash.
    pub fn remove(&mut self, request_hash: &[u8; 32]) {
        let _ = self.map.remove(request_hash);
    }

    /// Number of cached answers.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let mut m = ExpiringMap::new(2);
        let t0 = Time(1000);
        assert!(m.insert(t0, 1, Time(2000), "a"));
        assert!(m.insert(t0, 2, Time(3000), "b"));
        assert!(!m.insert(t0, 3, Time(3000), "c"), "full");
        assert!(m.contains(t0, &1));
        assert!(!m.contains(Time(2000), &1), "expired at its time");
        assert!(
            m.insert(Time(2500), 3, Time(4000), "c"),
            "room after expiry"
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m.remove(&2), Some("b"));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn response_cache_evicts_oldest() {
        let mut c = ResponseCache::new(2);
        let t = Time(0);
        c.put(t, [1; 32], Time(10), alloc::vec![1]);
        c.put(t, [2; 32], Time(20), alloc::vec![2]);
        c.put(t, [3; 32], Time(30), alloc::vec![3]);
        assert_eq!(c.len(), 2);
        assert!(c.get(t, &[1; 32]).is_none());
        assert_eq!(c.get(t, &[3; 32]), Some(&[3u8][..]));
    }
}
