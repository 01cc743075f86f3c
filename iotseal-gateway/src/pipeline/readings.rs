//! A data record's plaintext turned into rows for the storage.

use std::sync::Arc;

use bytes::Bytes;
use iotseal_proto::Time;
use iotseal_proto::error::Malformed;
use iotseal_proto::reading::{self, ReadingRef, SensorKind};

use crate::storage::{NewReading, SensorName};

/// The name a value is stored under (borrowed for the built-in kinds).
pub fn sensor_name(k: SensorKind) -> SensorName {
    match k {
        SensorKind::Other(c) => SensorName::Owned(format!("other_{c}")),
        k => SensorName::Borrowed(k.name()),
    }
}

/// Appends the readings of a data record's plaintext to `out`, all of them or (on an error)
/// none; returns how many. Their payloads are slices of `plain` (the buffer the record was
/// opened in), not copies.
pub(super) fn push_readings(
    out: &mut Vec<NewReading>,
    device_id: &Arc<str>,
    plain: &Bytes,
    now: Time,
) -> Result<usize, Malformed> {
    let readings = reading::iter_batch(plain)?;
    let start = out.len();
    out.reserve(readings.size_hint().1.unwrap_or(0));
    for r in readings {
        match r {
            Ok(r) => out.push(new_reading(device_id, plain, r, now)),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(out.len() - start)
}

/// `r`'s payload is sliced out of `plain`, the buffer it was decoded from.
fn new_reading(device_id: &Arc<str>, plain: &Bytes, r: ReadingRef<'_>, now: Time) -> NewReading {
    NewReading {
        device_id: device_id.clone(),
        msg_id: r.msg_id,
        device_time_ms: r.time_ms,
        received_ms: now.as_millis(),
        payload: plain.slice_ref(r.encoded()),
        values: r
            .values()
            .map(|(k, v)| (sensor_name(k), shortest_f64(v)))
            .collect(),
    }
}

/// The f32's shortest decimal form, as f64 (21.3, not 21.299999237060547); formatted on the
/// stack, not the heap.
fn shortest_f64(v: f32) -> f64 {
    use std::io::Write;
    if !v.is_finite() {
        return f64::from(v);
    }
    // The exponent form ("2.13e1"): at most ~15 bytes for any finite f32.
    let mut buf = [0u8; 48];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    if write!(cur, "{v:e}").is_err() {
        return f64::from(v);
    }
    let n = usize::try_from(cur.position()).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::from(v))
}

#[cfg(test)]
mod tests {
    use super::shortest_f64;

    /// Same as going through a heap string, for every kind of f32 (random bit patterns,
    /// extremes, subnormals, signed zeros, non-finite).
    #[test]
    fn shortest_f64_matches_the_decimal_round_trip() {
        let mut x: u32 = 0x1234_5678;
        let mut cases = vec![
            0.0f32,
            -0.0,
            21.3,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-45,
            f32::EPSILON,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            cases.push(f32::from_bits(x));
        }
        for v in cases {
            let want = v.to_string().parse::<f64>().unwrap_or(f64::from(v));
            let got = shortest_f64(v);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{v:e}: {got} != {want}"
            );
        }
    }
}
