//! Bounded reading and writing of wire bytes. Every read checks the length first and
//! returns [`Malformed`] instead of panicking.

use alloc::vec::Vec;

use crate::error::Malformed;

/// The largest value a variable-length integer can hold (QUIC varint, RFC 9000 §16).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// A cursor over received bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.remaining() < n {
            return Err(Malformed::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A QUIC variable-length integer (1, 2, 4 or 8 bytes). Non-minimal encodings are
    /// refused, so every value has exactly one encoding.
    pub fn varint(&mut self) -> Result<u64, Malformed> {
        let first = self.u8()?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for &b in self.take(len - 1)? {
            v = (v << 8) | u64::from(b);
        }
        if varint_len(v) != len {
            return Err(Malformed::NonMinimal);
        }
        Ok(v)
    }

    /// A length-prefixed (u8) byte string of at most `max` bytes.
    pub fn vec_u8(&mut self, max: usize) -> Result<&'a [u8], Malformed> {
        let n = usize::from(self.u8()?);
        if n > max {
            return Err(Malformed::TooLong);
        }
        self.take(n)
    }

    /// A length-prefixed (u16) byte string of at most `max` bytes.
    pub fn vec_u16(&mut self, max: usize) -> Result<&'a [u8], Malformed> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(Malformed::TooLong);
        }
        self.take(n)
    }

    /// A length-prefixed (varint) byte string of at most `max` bytes.
    pub fn vec_varint(&mut self, max: usize) -> Result<&'a [u8], Malformed> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(Malformed::TooLong);
        }
        self.take(n as usize)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), Malformed> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Malformed::TrailingData)
        }
    }
}

/// Encoded length of a varint.
pub const fn varint_len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Appends a varint; `v` must be at most [`VARINT_MAX`] (callers bound their values).
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    debug_assert!(v <= VARINT_MAX);
    let v = v & VARINT_MAX;
    match varint_len(v) {
        1 => out.push(v as u8),
        2 => out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// Appends a u8-length-prefixed byte string (`data.len()` must fit in a u8).
pub fn put_vec_u8(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(data.len() <= 255);
    out.push(data.len() as u8);
    out.extend_from_slice(data);
}

/// Appends a u16-length-prefixed byte string (`data.len()` must fit in a u16).
pub fn put_vec_u16(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(data.len() <= 0xffff);
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// Appends a varint-length-prefixed byte string.
pub fn put_vec_varint(out: &mut Vec<u8>, data: &[u8]) {
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_boundaries() {
        for (v, len) in [
            (0, 1),
            (63, 1),
            (64, 2),
            (16383, 2),
            (16384, 4),
            ((1 << 30) - 1, 4),
            (1 << 30, 8),
            (VARINT_MAX, 8),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), len, "{v}");
            let mut r = Reader::new(&out);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.finish().is_ok());
        }
    }

    #[test]
    fn non_minimal_varint_refused() {
        assert_eq!(
            Reader::new(&[0x40, 0x05]).varint(),
            Err(Malformed::NonMinimal)
        );
        assert_eq!(Reader::new(&[0x40]).varint(), Err(Malformed::Truncated));
    }

    #[test]
    fn length_bounds_checked_before_use() {
        assert_eq!(
            Reader::new(&[5, 1, 2]).vec_u8(10),
            Err(Malformed::Truncated)
        );
        assert_eq!(
            Reader::new(&[5, 1, 2, 3, 4, 5]).vec_u8(4),
            Err(Malformed::TooLong)
        );
        assert_eq!(
            Reader::new(&[0xff, 0xff]).vec_u16(100),
            Err(Malformed::TooLong)
        );
    }

    proptest! {
        #[test]
        fn varint_round_trips(v in 0..=VARINT_MAX) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.varint(), Ok(v));
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&data);
            let _ = r.varint();
            let _ = r.vec_u8(16);
            let _ = r.vec_u16(16);
            let _ = r.vec_varint(16);
            let _ = r.u32();
        }
    }
}
