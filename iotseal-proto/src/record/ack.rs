//! Acknowledgement payloads: inclusive ranges of received sequence numbers, highest first.
//!
//! ```text
//! varint  number of ranges (at most MAX_ACK_RANGES)
//! per range: varint first, varint last   (last >= first; ranges descending, disjoint)
//! ```

use alloc::vec::Vec;

use crate::codec::{Reader, put_varint};
use crate::error::Malformed;

/// The most ranges one acknowledgement carries.
pub const MAX_ACK_RANGES: usize = 32;

/// Encodes ranges (already bounded and ordered by the window).
pub fn encode(ranges: impl Iterator<Item = (u64, u64)>, out: &mut Vec<u8>) {
    let ranges: Vec<(u64, u64)> = ranges.take(MAX_ACK_RANGES).collect();
    put_varint(out, ranges.len() as u64);
    for (a, b) in ranges {
        put_varint(out, a);
        put_varint(out, b);
    }
}

/// Decodes and validates ranges: bounded count, `first <= last`, strictly descending.
pub fn decode(buf: &[u8]) -> Result<Vec<(u64, u64)>, Malformed> {
    let mut r = Reader::new(buf);
    let n = r.varint()?;
    if n > MAX_ACK_RANGES as u64 {
        return Err(Malformed::TooLong);
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut floor: Option<u64> = None;
    for _ in 0..n {
        let a = r.varint()?;
        let b = r.varint()?;
        if a > b || floor.is_some_and(|f| b + 1 >= f) {
            return Err(Malformed::BadValue);
        }
        floor = Some(a);
        out.push((a, b));
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let mut out = Vec::new();
        encode([(10, 12), (3, 3), (0, 1)].into_iter(), &mut out);
        assert_eq!(decode(&out).unwrap(), [(10, 12), (3, 3), (0, 1)]);
        let mut bad = Vec::new();
        encode([(3, 3), (10, 12)].into_iter(), &mut bad);
        assert_eq!(decode(&bad), Err(Malformed::BadValue));
        let mut adjacent = Vec::new();
        encode([(4, 5), (2, 3)].into_iter(), &mut adjacent);
        assert_eq!(
            decode(&adjacent),
            Err(Malformed::BadValue),
            "adjacent ranges must be merged"
        );
    }

    /// `MAX_ACK_RANGES` at its edge: encoding keeps the newest 32 ranges (the sender
    /// retransmits what an older range would have covered); 33 on the wire are refused.
    #[test]
    fn ranges_are_bounded() {
        let many = (0..40u64).rev().map(|i| (i * 3, i * 3 + 1));
        let mut out = Vec::new();
        encode(many, &mut out);
        let got = decode(&out).unwrap();
        assert_eq!(got.len(), MAX_ACK_RANGES);
        assert_eq!(got[0], (117, 118), "the newest range is kept");
        let mut over = Vec::new();
        put_varint(&mut over, MAX_ACK_RANGES as u64 + 1);
        for i in (0..=MAX_ACK_RANGES as u64).rev() {
            put_varint(&mut over, i * 3);
            put_varint(&mut over, i * 3 + 1);
        }
        assert_eq!(decode(&over), Err(Malformed::TooLong));
    }
}
