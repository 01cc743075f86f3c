//! Time as the core sees it: passed in by the caller, never read from a clock.

/// A point in time: milliseconds since the Unix epoch, as the caller's clock says.
///
/// The core never reads a clock. During one handshake the caller must pass non-decreasing
/// values (a wall clock corrected by a monotonic one), since round trips are measured with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(s * 1000)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// The 32-bit wire timestamp (seconds, modulo 2^32; compare with [`wire_diff`]).
    pub const fn wire_secs(self) -> u32 {
        self.as_secs() as u32
    }

    /// `self + ms`, saturating.
    pub const fn plus_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// `self - earlier` in milliseconds, zero if `earlier` is later.
    pub const fn millis_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// `a - b` for 32-bit wire timestamps in serial-number arithmetic (RFC 1982): the difference
/// is taken modulo 2^32 and read as signed, so the field never overflows (valid while the two
/// times are less than 68 years apart).
pub const fn wire_diff(a: u32, b: u32) -> i64 {
    a.wrapping_sub(b) as i32 as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_diff_wraps() {
        assert_eq!(wire_diff(5, 3), 2);
        assert_eq!(wire_diff(3, 5), -2);
        assert_eq!(wire_diff(1, u32::MAX), 2);
        assert_eq!(wire_diff(u32::MAX, 1), -2);
        // 2106-02-07: the u32 seconds wrap; times on either side still compare.
        let before = Time::from_secs(u64::from(u32::MAX) - 10).wire_secs();
        let after = Time::from_secs(u64::from(u32::MAX) + 20).wire_secs();
        assert_eq!(wire_diff(after, before), 30);
    }
}
