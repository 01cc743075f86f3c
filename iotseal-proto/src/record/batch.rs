//! Framing of several records (or a handshake message and records) in one transport
//! message: `varint length || bytes`, repeated. Used for HTTP bodies and MQTT payloads.

use alloc::vec::Vec;

use crate::codec::{Reader, put_vec_varint};
use crate::error::Malformed;
use crate::record::MAX_RECORD_LEN;

/// The most records one batch may carry.
pub const MAX_BATCH_RECORDS: usize = 1024;

/// Appends one framed record.
pub fn push(out: &mut Vec<u8>, record: &[u8]) {
    put_vec_varint(out, record);
}

/// Splits a batch into records, each bounded by [`MAX_RECORD_LEN`]; at most
/// [`MAX_BATCH_RECORDS`] records.
pub fn split(buf: &[u8]) -> Result<Vec<&[u8]>, Malformed> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        if out.len() == MAX_BATCH_RECORDS {
            return Err(Malformed::TooLong);
        }
        out.push(r.vec_varint(MAX_RECORD_LEN)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let mut out = Vec::new();
            for r in &records {
                push(&mut out, r);
            }
            let got = split(&out).unwrap();
            prop_assert_eq!(got.len(), records.len());
            for (a, b) in got.iter().zip(&records) {
                prop_assert_eq!(*a, b.as_slice());
            }
        }

        #[test]
        fn split_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = split(&data);
        }
    }
}
