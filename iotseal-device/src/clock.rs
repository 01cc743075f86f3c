//! The device clock: the system clock plus an offset adopted from an authenticated M2.

use std::time::{SystemTime, UNIX_EPOCH};

use iotseal_proto::Time;

/// System time corrected by an adopted offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Milliseconds added to the system clock.
    pub offset_ms: i64,
}

impl Clock {
    /// Now, on the corrected clock.
    pub fn now(&self) -> Time {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Time((sys + self.offset_ms).max(0) as u64)
    }

    /// Adopts `gateway_time` as the current time (only from an authenticated M2 whose round
    /// trip was short; see docs/protocol.md §10).
    pub fn adopt(&mut self, gateway_time: Time, local_now: Time) {
        self.offset_ms += gateway_time.0 as i64 - local_now.0 as i64;
    }
}
