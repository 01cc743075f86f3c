//! Values by increasing `u64` key in one vector: the engine's queue (by message id) and its
//! sealed records awaiting acknowledgement (by sequence number). Both keys only grow as entries
//! are added, so a sorted `Vec` does what a `BTreeMap` did with less code (the firmware build,
//! docs/footprint.md): adding at the back is amortised O(1), a lookup O(log n), a removal O(log n)
//! amortised (the slot becomes empty; empty slots leave at either end, the front ones by moving
//! a start index and, once they are half the vector, by one shift; all at once when they
//! outnumber the values, so they never cost more than the values do).

use alloc::vec::Vec;

#[derive(Debug)]
pub(crate) struct SeqMap<V> {
    /// Increasing keys; `None`: removed. Those before `start` are all `None`.
    slots: Vec<(u64, Option<V>)>,
    start: usize,
    /// The `Some` slots.
    len: usize,
}

impl<V> SeqMap<V> {
    pub(crate) fn new() -> Self {
        Self {
            slots: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.start = 0;
        self.len = 0;
    }

    /// The slots in use.
    fn live(&self) -> &[(u64, Option<V>)] {
        &self.slots[self.start..]
    }

    /// The index in `slots` of `key`, or where it would go.
    fn find(&self, key: u64) -> Result<usize, usize> {
        match self.live().binary_search_by_key(&key, |s| s.0) {
            Ok(i) => Ok(self.start + i),
            Err(i) => Err(self.start + i),
        }
    }

    /// Adds or replaces `key`'s value. O(1) amortised when `key` is above every key held (the
    /// engine's case); otherwise the slots after it move.
    pub(crate) fn insert(&mut self, key: u64, value: V) {
        if self.live().last().is_none_or(|s| s.0 < key) {
            self.slots.push((key, Some(value)));
            self.len += 1;
            return;
        }
        match self.find(key) {
            Ok(i) => {
                if self.slots[i].1.replace(value).is_none() {
                    self.len += 1;
                }
            }
            Err(i) => {
                self.slots.insert(i, (key, Some(value)));
                self.len += 1;
            }
        }
    }

    /// Adds or replaces many values in O((n + m) log(n + m)) whatever their keys' order (a later
    /// value of the same key wins, as with [`Self::insert`]).
    pub(crate) fn extend(&mut self, items: impl IntoIterator<Item = (u64, V)>) {
        self.compact();
        self.slots
            .extend(items.into_iter().map(|(k, v)| (k, Some(v))));
        if !self.slots.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: of equal keys, the one added last stays last.
            self.slots.sort_by_key(|s| s.0);
            let mut out: Vec<(u64, Option<V>)> = Vec::with_capacity(self.slots.len());
            for s in self.slots.drain(..) {
                match out.last_mut() {
                    Some(last) if last.0 == s.0 => *last = s,
                    _ => out.push(s),
                }
            }
            self.slots = out;
        }
        self.len = self.slots.len();
    }

    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        self.find(key).ok().and_then(|i| self.slots[i].1.as_ref())
    }

    pub(crate) fn contains_key(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    /// Takes `key`'s value out.
    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        let i = self.find(key).ok()?;
        let v = self.slots[i].1.take()?;
        self.len -= 1;
        self.tidy();
        Some(v)
    }

    /// Takes out the values of the keys `first..=last`, in key order.
    pub(crate) fn remove_range(&mut self, first: u64, last: u64) -> Vec<V> {
        let start = self.start + self.live().partition_point(|s| s.0 < first);
        let end = (self.start + self.live().partition_point(|s| s.0 <= last)).max(start);
        let taken: Vec<V> = self.slots[start..end]
            .iter_mut()
            .filter_map(|s| s.1.take())
            .collect();
        self.len -= taken.len();
        self.tidy();
        taken
    }

    /// Forgets the values of the keys below `floor`.
    pub(crate) fn remove_below(&mut self, floor: u64) {
        while let Some(s) = self.slots.get_mut(self.start) {
            if s.0 >= floor {
                break;
            }
            if s.1.take().is_some() {
                self.len -= 1;
            }
            self.start += 1;
        }
        self.tidy();
    }

    /// The values in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.live().iter().filter_map(|s| s.1.as_ref())
    }

    /// Drops empty slots at either end, and all of them once they outnumber the values (so
    /// they are at most half the slots in use: each was a removal, and each is dropped once);
    /// the slots before `start` are dropped once they are half the vector.
    fn tidy(&mut self) {
        while self.slots.get(self.start).is_some_and(|s| s.1.is_none()) {
            self.start += 1;
        }
        while self.slots.len() > self.start && self.slots.last().is_some_and(|s| s.1.is_none()) {
            self.slots.pop();
        }
        if self.slots.len() - self.start - self.len > self.len {
            self.compact();
        } else if self.start > self.slots.len() / 2 {
            self.slots.drain(..self.start);
            self.start = 0;
        }
    }

    /// Drops every empty slot.
    fn compact(&mut self) {
        self.slots.retain(|s| s.1.is_some());
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::SeqMap;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    /// Random operations agree with a `BTreeMap`.
    #[test]
    fn behaves_like_a_btreemap() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut m = SeqMap::new();
        let mut b = BTreeMap::new();
        let mut next = 0u64;
        for step in 0..20_000u32 {
            match rnd(9) {
                0..=2 => {
                    next += 1 + rnd(3);
                    m.insert(next, step);
                    b.insert(next, step);
                }
                3 => {
                    let k = rnd(next + 2);
                    m.insert(k, step);
                    b.insert(k, step);
                }
                4 | 5 => {
                    let k = rnd(next + 2);
                    assert_eq!(m.remove(k), b.remove(&k));
                }
                6 => {
                    let first = rnd(next + 2);
                    let last = first + rnd(8);
                    let got = m.remove_range(first, last);
                    let keys: Vec<u64> = b.range(first..=last).map(|(k, _)| *k).collect();
                    let want: Vec<u32> = keys.iter().map(|k| b.remove(k).unwrap()).collect();
                    assert_eq!(got, want);
                }
                7 => {
                    let floor = next.saturating_sub(rnd(40));
                    m.remove_below(floor);
                    b = b.split_off(&floor);
                }
                _ => {
                    let items: Vec<(u64, u32)> = (0..rnd(4))
                        .map(|i| (rnd(next + 5), step + i as u32))
                        .collect();
                    m.extend(items.iter().copied());
                    b.extend(items);
                }
            }
            let k = rnd(next + 2);
            assert_eq!(m.get(k), b.get(&k));
            assert_eq!(m.contains_key(k), b.contains_key(&k));
            assert_eq!(m.len(), b.len());
            assert_eq!(m.is_empty(), b.is_empty());
            assert!(m.slots.len() - m.start <= 2 * m.len() + 1);
            assert!(m.start <= m.slots.len() / 2 + 1);
            if step % 97 == 0 {
                assert!(m.values().eq(b.values()));
            }
        }
        m.clear();
        assert!(m.is_empty() && m.values().next().is_none());
    }
}
