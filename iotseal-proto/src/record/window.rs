//! The anti-replay sliding window (RFC 6479 shape): a bitmap of the last [`WINDOW_SIZE`]
//! sequence numbers below the highest one accepted.
//!
//! Receive order, as WireGuard does it: [`ReplayWindow::check`] (cheap, before decryption),
//! then authenticate, then [`ReplayWindow::mark`] only once the record is authentic (and, at
//! the gateway, stored).

use crate::error::Error;

/// Width of the window in sequence numbers.
pub const WINDOW_SIZE: u64 = 1024;
const WORDS: usize = (WINDOW_SIZE / 64) as usize;

/// A sliding window over received sequence numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    /// One more than the highest sequence number marked (0: none yet).
    next: u64,
    /// Bit `s % WINDOW_SIZE` is set when `s` (within the window) was marked.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        Self {
            next: 0,
            bits: [0; WORDS],
        }
    }

    /// Whether `seq` would be accepted: not below the window, not marked.
    /// Both refusals are [`Error::Replay`]: one condition, one error.
    pub fn check(&self, seq: u64) -> Result<(), Error> {
        // `u64::MAX` is never accepted, so `next` (one more than the highest) always fits.
        if seq == u64::MAX {
            return Err(Error::Replay);
        }
        if seq >= self.next {
            return Ok(());
        }
        if self.next - seq > WINDOW_SIZE {
            return Err(Error::Replay);
        }
        if self.bit(seq) {
            Err(Error::Replay)
        } else {
            Ok(())
        }
    }

    /// Whether `seq` is marked as received (false below the window: unknown).
    pub fn contains(&self, seq: u64) -> bool {
        seq < self.next && self.next - seq <= WINDOW_SIZE && self.bit(seq)
    }

    /// Marks `seq` as received. Returns the same result as [`Self::check`] would have.
    pub fn mark(&mut self, seq: u64) -> Result<(), Error> {
        self.check(seq)?;
        if seq >= self.next {
            // Slide: clear the bits of the numbers the window moves over.
            let advance = seq + 1 - self.next;
            if advance >= WINDOW_SIZE {
                self.bits = [0; WORDS];
            } else {
                for s in self.next..=seq {
                    self.clear(s);
                }
            }
            self.next = seq + 1;
        }
        let i = (seq % WINDOW_SIZE) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
        Ok(())
    }

    /// The highest marked sequence number, if any.
    pub fn highest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    /// Marked sequence numbers as inclusive ranges, highest first, at most `max` ranges.
    pub fn ranges(&self, max: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        let low = self.next.saturating_sub(WINDOW_SIZE);
        let mut s = self.next;
        let mut left = max;
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            // Skip unmarked.
            while s > low && !self.bit(s - 1) {
                s -= 1;
            }
            if s == low {
                return None;
            }
            let end = s - 1;
            while s > low && self.bit(s - 1) {
                s -= 1;
            }
            left -= 1;
            Some((s, end))
        })
    }

    fn bit(&self, seq: u64) -> bool {
        let i = (seq % WINDOW_SIZE) as usize;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn clear(&mut self, seq: u64) {
        let i = (seq % WINDOW_SIZE) as usize;
        self.bits[i / 64] &= !(1 << (i % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn in_order_then_replay() {
        let mut w = ReplayWindow::new();
        for s in 0..3000 {
            assert!(w.mark(s).is_ok());
            assert_eq!(w.mark(s), Err(Error::Replay));
        }
    }

    #[test]
    fn reorder_inside_window_accepted_once() {
        let mut w = ReplayWindow::new();
        w.mark(2000).unwrap();
        assert!(w.mark(2000 - 1023).is_ok());
        assert_eq!(w.mark(2000 - 1023), Err(Error::Replay));
        assert_eq!(
            w.check(2000 - 1024),
            Err(Error::Replay),
            "outside the window"
        );
        assert!(w.check(2000 - 1).is_ok());
    }

    #[test]
    fn extreme_sequence_numbers_do_not_overflow() {
        let mut w = ReplayWindow::new();
        assert!(w.mark(u64::MAX - 1).is_ok());
        assert_eq!(w.mark(u64::MAX), Err(Error::Replay), "never accepted");
        assert_eq!(w.mark(u64::MAX - 1), Err(Error::Replay));
        assert_eq!(w.check(0), Err(Error::Replay), "far below the window");
    }

    #[test]
    fn big_jump_clears() {
        let mut w = ReplayWindow::new();
        w.mark(5).unwrap();
        w.mark(5 + 10 * WINDOW_SIZE).unwrap();
        assert!(!w.contains(5));
        assert!(w.check(5 + 10 * WINDOW_SIZE - 1).is_ok());
    }

    #[test]
    fn ranges_are_exact() {
        let mut w = ReplayWindow::new();
        for s in [0, 1, 2, 5, 7, 8] {
            w.mark(s).unwrap();
        }
        let r: Vec<_> = w.ranges(10).collect();
        assert_eq!(r, [(7, 8), (5, 5), (0, 2)]);
        let r: Vec<_> = w.ranges(2).collect();
        assert_eq!(r, [(7, 8), (5, 5)]);
    }

    proptest! {
        /// The window against a model: a set of everything marked, and the rule that
        /// numbers more than WINDOW_SIZE below the highest are refused.
        #[test]
        fn matches_model(ops in proptest::collection::vec(0u64..4000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            let mut highest: Option<u64> = None;
            for s in ops {
                let too_old = highest.is_some_and(|h| h >= s + WINDOW_SIZE);
                let expect_ok = !too_old && !seen.contains(&s);
                prop_assert_eq!(w.check(s).is_ok(), expect_ok);
                prop_assert_eq!(w.mark(s).is_ok(), expect_ok);
                if expect_ok {
                    seen.insert(s);
                    highest = Some(highest.map_or(s, |h| h.max(s)));
                }
                for (a, b) in w.ranges(usize::MAX) {
                    for x in a..=b {
                        prop_assert!(seen.contains(&x));
                    }
                }
            }
        }
    }
}
