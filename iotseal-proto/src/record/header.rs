//! The record header, authenticated as associated data.
//!
//! ```text
//! byte 0     0x80 | content_type << 4 | (epoch mod 16)
//! 4 bytes    session id (big-endian)
//! varint     sequence number  (< 2^30: at most 4 bytes)
//! varint     seconds since the session started (< 2^30: at most 4 bytes)
//! ```
//! At most 13 bytes; with the 16-byte tag the overhead of a record is 23 to 29 bytes.

use alloc::vec::Vec;

use crate::codec::{Reader, put_varint};
use crate::error::Malformed;

/// The largest sequence number a session may use (then: handshake again).
pub const MAX_SEQ: u64 = (1 << 30) - 1;
/// The largest time offset in a header, in seconds.
pub const MAX_TIME_OFFSET: u64 = (1 << 30) - 1;
/// The longest header.
pub const MAX_HEADER_LEN: usize = 1 + 4 + 4 + 4;

/// What a record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentType {
    /// Application data (device to gateway): a batch of readings.
    Data,
    /// Acknowledgement ranges (gateway to device).
    Ack,
    /// The sender ends the session.
    Close,
}

impl ContentType {
    const fn code(self) -> u8 {
        match self {
            Self::Data => 0,
            Self::Ack => 1,
            Self::Close => 2,
        }
    }

    const fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Self::Data),
            1 => Some(Self::Ack),
            2 => Some(Self::Close),
            _ => None,
        }
    }
}

/// A parsed record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Content type.
    pub content_type: ContentType,
    /// Key epoch modulo 16.
    pub epoch_bits: u8,
    /// Session identifier.
    pub session_id: u32,
    /// Sequence number.
    pub seq: u64,
    /// Seconds since the session started, by the sender's clock.
    pub time_offset: u64,
}

impl Header {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0x80 | self.content_type.code() << 4 | (self.epoch_bits & 0x0f));
        out.extend_from_slice(&self.session_id.to_be_bytes());
        put_varint(out, self.seq.min(MAX_SEQ));
        put_varint(out, self.time_offset.min(MAX_TIME_OFFSET));
    }

    /// Parses a header; returns it and its length.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), Malformed> {
        let mut r = Reader::new(buf);
        let b0 = r.u8()?;
        if b0 & 0x80 == 0 {
            return Err(Malformed::UnknownType);
        }
        let content_type =
            ContentType::from_code((b0 >> 4) & 0x07).ok_or(Malformed::UnknownType)?;
        let session_id = r.u32()?;
        let seq = r.varint()?;
        let time_offset = r.varint()?;
        if seq > MAX_SEQ || time_offset > MAX_TIME_OFFSET {
            return Err(Malformed::BadValue);
        }
        let h = Self {
            content_type,
            epoch_bits: b0 & 0x0f,
            session_id,
            seq,
            time_offset,
        };
        Ok((h, r.position()))
    }

    /// The session id of a record, without parsing the rest (for routing).
    pub fn peek_session_id(buf: &[u8]) -> Result<u32, Malformed> {
        let mut r = Reader::new(buf);
        let b0 = r.u8()?;
        if b0 & 0x80 == 0 {
            return Err(Malformed::UnknownType);
        }
        r.u32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_round_trips(ct in 0u8..3, e in 0u8..16, sid: u32, seq in 0..=MAX_SEQ, t in 0..=MAX_TIME_OFFSET) {
            let h = Header {
                content_type: ContentType::from_code(ct).unwrap(),
                epoch_bits: e, session_id: sid, seq, time_offset: t,
            };
            let mut out = Vec::new();
            h.encode(&mut out);
            prop_assert!(out.len() <= MAX_HEADER_LEN);
            prop_assert_eq!(Header::decode(&out), Ok((h, out.len())));
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = Header::decode(&data);
            let _ = Header::peek_session_id(&data);
        }
    }
}
