//! The payload of a data record: a batch of sensor readings.
//!
//! ```text
//! varint  count                       1..=MAX_READINGS
//! per reading:
//!   varint  message id                unique per device; the gateway stores each id once
//!   varint  time                      milliseconds since the Unix epoch (device clock)
//!   u8      value count               0..=MAX_VALUES
//!   per value: u8 sensor kind, f32 (big-endian IEEE 754)
//!   varint  extra length + bytes      opaque application bytes, at most MAX_EXTRA
//! ```

use alloc::vec::Vec;

use crate::codec::{Reader, put_varint, put_vec_varint};
use crate::error::Malformed;

/// Most readings in one record.
pub const MAX_READINGS: usize = 1024;
/// Most values in one reading.
pub const MAX_VALUES: usize = 32;
/// Most opaque bytes in one reading.
pub const MAX_EXTRA: usize = 4096;

/// What a value measures (and its unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SensorKind {
    /// Temperature, °C.
    Temperature,
    /// Relative humidity, %.
    Humidity,
    /// Pressure, hPa.
    Pressure,
    /// Latitude, degrees.
    Latitude,
    /// Longitude, degrees.
    Longitude,
    /// Acceleration on x, m/s².
    AccelX,
    /// Acceleration on y, m/s².
    AccelY,
    /// Acceleration on z, m/s².
    AccelZ,
    /// Heart rate, beats per minute.
    HeartRate,
    /// Electric power, W.
    Power,
    /// Energy, Wh.
    Energy,
    /// Battery charge, %.
    Battery,
    /// A kind this version does not know (kept as its code).
    Other(u8),
}

impl SensorKind {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Temperature => 1,
            Self::Humidity => 2,
            Self::Pressure => 3,
            Self::Latitude => 4,
            Self::Longitude => 5,
            Self::AccelX => 6,
            Self::AccelY => 7,
            Self::AccelZ => 8,
            Self::HeartRate => 9,
            Self::Power => 10,
            Self::Energy => 11,
            Self::Battery => 12,
            Self::Other(c) => c,
        }
    }

    /// The kind for a wire code.
    pub fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Temperature,
            2 => Self::Humidity,
            3 => Self::Pressure,
            4 => Self::Latitude,
            5 => Self::Longitude,
            6 => Self::AccelX,
            7 => Self::AccelY,
            8 => Self::AccelZ,
            9 => Self::HeartRate,
            10 => Self::Power,
            11 => Self::Energy,
            12 => Self::Battery,
            other => Self::Other(other),
        }
    }

    /// A short name (column and metric label).
    pub fn name(self) -> &'static str {
        match self {
            Self::Temperature => "temperature",
            Self::Humidity => "humidity",
            Self::Pressure => "pressure",
            Self::Latitude => "latitude",
            Self::Longitude => "longitude",
            Self::AccelX => "accel_x",
            Self::AccelY => "accel_y",
            Self::AccelZ => "accel_z",
            Self::HeartRate => "heart_rate",
            Self::Power => "power",
            Self::Energy => "energy",
            Self::Battery => "battery",
            Self::Other(_) => "other",
        }
    }

    /// The unit.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Temperature => "°C",
            Self::Humidity | Self::Battery => "%",
            Self::Pressure => "hPa",
            Self::Latitude | Self::Longitude => "°",
            Self::AccelX | Self::AccelY | Self::AccelZ => "m/s²",
            Self::HeartRate => "bpm",
            Self::Power => "W",
            Self::Energy => "Wh",
            Self::Other(_) => "",
        }
    }
}

/// One reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Unique per device: retransmissions carry the same id and are stored once.
    pub msg_id: u64,
    /// Milliseconds since the Unix epoch, by the device's clock.
    pub time_ms: u64,
    /// Measured values.
    pub values: Vec<(SensorKind, f32)>,
    /// Opaque application bytes.
    pub extra: Vec<u8>,
}

impl Reading {
    /// Appends the encoding of this reading (ids and times above 2^62 are clamped).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.msg_id.min(crate::codec::VARINT_MAX));
        put_varint(out, self.time_ms.min(crate::codec::VARINT_MAX));
        let n = self.values.len().min(MAX_VALUES);
        out.push(n as u8);
        for (k, v) in &self.values[..n] {
            out.push(k.code());
            out.extend_from_slice(&v.to_be_bytes());
        }
        put_vec_varint(out, &self.extra[..self.extra.len().min(MAX_EXTRA)]);
    }
}

/// Bytes of one encoded value: the kind and an f32.
const VALUE_LEN: usize = 5;

/// A reading borrowed from a batch's plaintext, as [`BatchIter`] yields it (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadingRef<'a> {
    /// Unique per device: retransmissions carry the same id and are stored once.
    pub msg_id: u64,
    /// Milliseconds since the Unix epoch, by the device's clock.
    pub time_ms: u64,
    /// Opaque application bytes.
    pub extra: &'a [u8],
    values: &'a [u8],
    encoded: &'a [u8],
}

impl<'a> ReadingRef<'a> {
    /// Decodes the reading at `r`'s position; `r` reads `buf`.
    fn decode(buf: &'a [u8], r: &mut Reader<'a>) -> Result<Self, Malformed> {
        let start = r.position();
        let msg_id = r.varint()?;
        let time_ms = r.varint()?;
        let n = usize::from(r.u8()?);
        if n > MAX_VALUES {
            return Err(Malformed::TooLong);
        }
        let values = r.take(n * VALUE_LEN)?;
        let extra = r.vec_varint(MAX_EXTRA)?;
        let encoded = &buf[start..r.position()];
        Ok(Self {
            msg_id,
            time_ms,
            extra,
            values,
            encoded,
        })
    }

    /// The measured values, in order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = (SensorKind, f32)> + 'a {
        self.values.chunks_exact(VALUE_LEN).map(|v| {
            let k = SensorKind::from_code(v[0]);
            (k, f32::from_be_bytes([v[1], v[2], v[3], v[4]]))
        })
    }

    /// The reading's bytes in the batch: the same bytes [`Reading::encode`] writes for it
    /// (the encoding is canonical: minimal varints, values as they are).
    pub fn encoded(&self) -> &'a [u8] {
        self.encoded
    }

    /// An owned copy.
    pub fn to_reading(&self) -> Reading {
        Reading {
            msg_id: self.msg_id,
            time_ms: self.time_ms,
            values: self.values().collect(),
            extra: self.extra.to_vec(),
        }
    }
}

/// The readings of a data record's plaintext, decoded one at a time (see [`iter_batch`]).
///
/// Yields each reading in order, or an error after which it ends: the batch is valid only
/// if no item is an error (trailing bytes are reported in place of the last reading).
#[derive(Debug)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    r: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<ReadingRef<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = ReadingRef::decode(self.buf, &mut self.r).and_then(|rr| {
            if self.left == 0 {
                self.r.finish()?;
            }
            Ok(rr)
        });
        if item.is_err() {
            self.left = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left > 0), Some(self.left))
    }
}

/// Encodes a batch of readings as a data record's plaintext (at most [`MAX_READINGS`]).
pub fn encode_batch(readings: &[Reading]) -> Vec<u8> {
    let n = readings.len().min(MAX_READINGS);
    let mut out = Vec::with_capacity(2 + n * 24);
    put_varint(&mut out, n as u64);
    for r in &readings[..n] {
        r.encode(&mut out);
    }
    out
}

/// Decodes a data record's plaintext; every count and length is bounded before use.
pub fn decode_batch(buf: &[u8]) -> Result<Vec<Reading>, Malformed> {
    let readings = iter_batch(buf)?;
    let mut out = Vec::with_capacity(readings.left);
    for r in readings {
        out.push(r?.to_reading());
    }
    Ok(out)
}

/// Checks a data record's reading count and returns an iterator over its readings, borrowed
/// from `buf`: [`decode_batch`] without building the `Vec`s.
pub fn iter_batch(buf: &[u8]) -> Result<BatchIter<'_>, Malformed> {
    let mut r = Reader::new(buf);
    let n = r.varint()?;
    if n == 0 || n > MAX_READINGS as u64 {
        return Err(Malformed::BadLength);
    }
    // Each reading takes at least 4 bytes: bound the count by what is there.
    if n as usize > r.remaining() / 4 + 1 {
        return Err(Malformed::Truncated);
    }
    Ok(BatchIter {
        buf,
        r,
        left: n as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reading() -> impl Strategy<Value = Reading> {
        (
            0..=crate::codec::VARINT_MAX,
            0..=crate::codec::VARINT_MAX,
            proptest::collection::vec((any::<u8>(), any::<f32>()), 0..5),
            proptest::collection::vec(any::<u8>(), 0..20),
        )
            .prop_map(|(msg_id, time_ms, v, extra)| Reading {
                msg_id,
                time_ms,
                values: v
                    .into_iter()
                    .map(|(k, x)| (SensorKind::from_code(k), x))
                    .collect(),
                extra,
            })
    }

    proptest! {
        #[test]
        fn batch_round_trips(rs in proptest::collection::vec(reading(), 1..10)) {
            let enc = encode_batch(&rs);
            let dec = decode_batch(&enc).unwrap();
            prop_assert_eq!(dec.len(), rs.len());
            for (a, b) in dec.iter().zip(&rs) {
                prop_assert_eq!(a.msg_id, b.msg_id);
                prop_assert_eq!(a.time_ms, b.time_ms);
                prop_assert_eq!(&a.extra, &b.extra);
                for ((ka, va), (kb, vb)) in a.values.iter().zip(&b.values) {
                    prop_assert_eq!(ka.code(), kb.code());
                    prop_assert_eq!(va.to_bits(), vb.to_bits());
                }
            }
        }

        #[test]
        fn borrowed_readings_are_their_encoding(rs in proptest::collection::vec(reading(), 1..10)) {
            let enc = encode_batch(&rs);
            let dec = decode_batch(&enc).unwrap();
            let refs = iter_batch(&enc).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
            prop_assert_eq!(refs.len(), dec.len());
            for (rr, d) in refs.iter().zip(&dec) {
                let mut one = Vec::new();
                d.encode(&mut one);
                prop_assert_eq!(rr.encoded(), &one[..]);
                let mut again = Vec::new();
                rr.to_reading().encode(&mut again);
                prop_assert_eq!(&again, &one);
            }
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_batch(&data);
        }
    }

    #[test]
    fn iteration_ends_at_the_first_error() {
        let r = Reading {
            msg_id: 7,
            time_ms: 1,
            values: alloc::vec![(SensorKind::Humidity, 40.5)],
            extra: Vec::new(),
        };
        let mut enc = encode_batch(&[r.clone(), r.clone()]);
        enc.push(0);
        let mut it = iter_batch(&enc).unwrap();
        let first = it.next().unwrap().unwrap();
        assert_eq!(first.to_reading(), r);
        assert_eq!(it.next(), Some(Err(Malformed::TrailingData)));
        assert_eq!(it.next(), None);
        assert_eq!(decode_batch(&enc), Err(Malformed::TrailingData));
    }

    #[test]
    fn bounds() {
        assert_eq!(decode_batch(&[0]), Err(Malformed::BadLength));
        let mut big = Vec::new();
        put_varint(&mut big, 1025);
        assert_eq!(decode_batch(&big), Err(Malformed::BadLength));
        let mut lying = Vec::new();
        put_varint(&mut lying, 1000);
        assert_eq!(
            decode_batch(&lying),
            Err(Malformed::Truncated),
            "count bounded by bytes present"
        );
    }
}
