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

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let msg_id = r.varint()?;
        let time_ms = r.varint()?;
        let n = usize::from(r.u8()?);
        if n > MAX_VALUES {
            return Err(Malformed::TooLong);
        }
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            let k = SensorKind::from_code(r.u8()?);
            values.push((k, f32::from_be_bytes(r.array()?)));
        }
        let extra = r.vec_varint(MAX_EXTRA)?.to_vec();
        Ok(Self {
            msg_id,
            time_ms,
            values,
            extra,
        })
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
    let mut r = Reader::new(buf);
    let n = r.varint()?;
    if n == 0 || n > MAX_READINGS as u64 {
        return Err(Malformed::BadLength);
    }
    // Each reading takes at least 4 bytes: bound the allocation by what is there.
    if n as usize > r.remaining() / 4 + 1 {
        return Err(Malformed::Truncated);
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(Reading::decode(&mut r)?);
    }
    r.finish()?;
    Ok(out)
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
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_batch(&data);
        }
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
