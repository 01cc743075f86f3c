//! Chunk bodies (schema version 6, docs/decisions.md D37): a chunk's readings as elements back
//! to back, in message id order, each
//!
//! ```text
//! leb128(payload length) ‖ payload ‖ leb128(zigzag(received_ms − device_time_ms))
//! ```
//!
//! The payload is the encoded reading as the device sent it (docs/protocol.md §8.12): it holds
//! the message id, the device time and the values, which are stored nowhere else and decoded
//! when read. The receive time is stored as its distance from the device time (a few bytes).
//!
//! SQL users see the same `readings` and `reading_values` views as before: they expand a body
//! with the function `iotseal_chunk_json(body)`, which this module registers on every
//! connection the storage opens (the JSON array of schema versions 3 to 5, values in their
//! f32's shortest decimal form). Other SQLite clients can read the tables, not those views.

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

use super::db;
use crate::{StorageError, decode_payload, sensor_name};

/// Appends `v` as an unsigned LEB128 integer (at most 10 bytes).
fn put_leb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 integer at the start of `buf`: (value, bytes read).
fn leb128(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return None;
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends one reading's element.
pub(super) fn push_element(
    out: &mut Vec<u8>,
    payload: &[u8],
    device_time_ms: i64,
    received_ms: i64,
) {
    put_leb128(out, payload.len() as u64);
    out.extend_from_slice(payload);
    // Both are in 0..=i64::MAX: the difference fits.
    put_leb128(out, zigzag(received_ms.wrapping_sub(device_time_ms)));
}

fn corrupt(what: &str) -> StorageError {
    StorageError(format!("sqlite: corrupt chunk body: {what}"))
}

/// The elements of a body: (payload, receive time minus device time), in order.
pub(super) struct Elements<'a> {
    rest: &'a [u8],
}

impl<'a> Elements<'a> {
    pub(super) fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<(&'a [u8], i64), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = (|| {
            let (len, n) = leb128(self.rest).ok_or_else(|| corrupt("length"))?;
            let rest = &self.rest[n..];
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= rest.len())
                .ok_or_else(|| corrupt("payload past the end"))?;
            let (payload, rest) = rest.split_at(len);
            let (delta, n) = leb128(rest).ok_or_else(|| corrupt("receive time"))?;
            self.rest = &rest[n..];
            Ok((payload, unzigzag(delta)))
        })();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// The receive time of a reading at `device_time_ms` stored `delta` after it.
pub(super) fn received_ms(device_time_ms: u64, delta: i64) -> Result<u64, StorageError> {
    i64::try_from(device_time_ms)
        .ok()
        .and_then(|t| t.checked_add(delta))
        .and_then(|r| u64::try_from(r).ok())
        .ok_or_else(|| corrupt("receive time out of range"))
}

/// A body as the JSON array of schema versions 3 to 5: one `[msg_id, device_time_ms,
/// received_ms, payload_hex, [[sensor, value], ...]]` per reading, NaN as null, infinities
/// as ±9e999 (which SQLite's JSON functions read as infinities), finite values in their f32's
/// shortest decimal form.
pub(super) fn to_json(body: &[u8]) -> Result<String, StorageError> {
    use std::fmt::Write;
    let mut out = String::with_capacity(body.len() * 4 + 2);
    let mut scratch = Vec::new();
    out.push('[');
    for (i, e) in Elements::new(body).enumerate() {
        let (payload, delta) = e?;
        let r = decode_payload(&mut scratch, payload)?;
        let received = received_ms(r.time_ms, delta)?;
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "[{},{},{},\"", r.msg_id, r.time_ms, received);
        out.push_str(&hex::encode(payload));
        out.push_str("\",[");
        for (j, (kind, v)) in r.values().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let name = sensor_name(kind);
            out.push('[');
            out.push_str(&serde_json::to_string(&*name).map_err(|e| corrupt(&e.to_string()))?);
            let _ = if v.is_nan() {
                write!(out, ",null]")
            } else if v.is_infinite() {
                write!(out, ",{}9e999]", if v < 0.0 { "-" } else { "" })
            } else {
                write!(out, ",{v}]")
            };
        }
        out.push_str("]]");
    }
    out.push(']');
    Ok(out)
}

/// Registers `iotseal_chunk_json(body)` ([`to_json`]) on `conn`: deterministic and innocuous,
/// so the views may use it. A body that does not decode is an SQL error, not a panic.
pub(super) fn register_functions(conn: &Connection) -> Result<(), StorageError> {
    conn.create_scalar_function(
        "iotseal_chunk_json",
        1,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            let body = ctx.get_raw(0).as_blob().map_err(|e| {
                rusqlite::Error::UserFunctionError(format!("iotseal_chunk_json: {e}").into())
            })?;
            to_json(body).map_err(|e| rusqlite::Error::UserFunctionError(e.0.into()))
        },
    )
    .map_err(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_and_zigzag_round_trip() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_leb128(&mut b, v);
            assert_eq!(leb128(&b), Some((v, b.len())));
        }
        for v in [0, 1, -1, 412, -412, i64::MAX, i64::MIN + 1] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(leb128(&[0x80; 11]), None);
        assert_eq!(
            leb128(&[0xff; 9].iter().copied().chain([0x7f]).collect::<Vec<_>>()),
            None
        );
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let mut b = Vec::new();
        push_element(&mut b, &[1, 2, 3], 10, 15);
        for cut in 0..b.len() {
            let items: Vec<_> = Elements::new(&b[..cut]).collect();
            assert!(items.iter().all(|i| i.is_err()) || cut == 0, "cut {cut}");
        }
        assert_eq!(
            Elements::new(&b).collect::<Result<Vec<_>, _>>().unwrap(),
            vec![(&[1u8, 2, 3][..], 5)]
        );
    }
}
