//! What a device is (identity, pins, offers) and how it behaves (queue, batching, backoff).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use iotseal_proto::crypto::{CryptoProvider, SigningKey};
use iotseal_proto::handshake::{DeviceConfig, PinnedKey};
use iotseal_proto::reading::MAX_READINGS;
use iotseal_proto::record::batch::MAX_BATCH_RECORDS;
use iotseal_proto::record::{MAX_RECORD_LEN, SessionConfig};
use iotseal_proto::{SigAlg, Suite};

/// The smallest request budget: one record of the largest size with its batch framing
/// (a 4-byte varint length), so any single reading fits a request.
pub const MIN_REQUEST_LEN: usize = MAX_RECORD_LEN + 4;

/// Everything an [`crate::Engine`] needs apart from the crypto provider.
#[derive(Debug)]
pub struct EngineConfig {
    /// The device identifier (1 to 32 bytes), sent only encrypted, in M3.
    pub device_id: Vec<u8>,
    /// The device's identity key; every offered suite uses its algorithm.
    pub identity: Box<dyn SigningKey>,
    /// Pinned gateway identity keys, one or more per algorithm (several during a rotation).
    /// The first one keys the hello MAC (docs/protocol.md §4.1); at least one must have the
    /// identity's algorithm, since the gateway signs M2 with a key of the suite's `sig`.
    pub pins: Vec<PinnedKey>,
    /// Suites offered, most preferred first (1 to 16). The device accepts only these.
    pub offers: Vec<Suite>,
    /// Allowed clock skew in seconds (default 30). A handshake message is resent with the
    /// same bytes only within this time of its first sending (the gateway's answer cache and
    /// half-open table keep it that long, §9.1).
    pub skew_secs: u32,
    /// Record-layer settings of the sessions (lifetime, key-update policy, ack freshness:
    /// `max_record_age_secs: None` for store-and-forward bindings such as MQTT).
    pub session: SessionConfig,
    /// Most readings waiting for acknowledgement; [`crate::Engine::push`] fails beyond.
    pub queue_capacity: usize,
    /// Most readings sealed into one record (1 to 1024); a record also stays within the
    /// plaintext limit (16384 bytes), so large readings make it hold fewer.
    pub readings_per_record: usize,
    /// Most records in one request (1 to 1024).
    pub records_per_request: usize,
    /// Most bytes in one request body (the gateway refuses larger ones: `limits.max_body`,
    /// 1 MiB by default); at least [`MIN_REQUEST_LEN`].
    pub max_request_len: usize,
    /// Seal queued readings into the handshake's last message (M3), saving a round trip.
    pub piggyback: bool,
    /// First backoff delay, ms; doubles per consecutive failure up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    /// Longest backoff delay, ms.
    pub backoff_max_ms: u64,
    /// How many times an unanswered handshake message is sent again with the same bytes
    /// before the handshake starts over (§9.2).
    pub handshake_resends: u32,
    /// How many fresh handshakes (with backoff) follow an AuthFailed refusal of a handshake
    /// message before the engine stops ([`crate::Event::Refused`]). 0 (the default): stop at
    /// the first. docs/protocol.md §18.9 allows "a few": the alert is unauthenticated.
    pub auth_failed_retries: u32,
    /// The message id of the first reading pushed (message ids must stay unique per device:
    /// a device that persists its queue restores the next id with
    /// [`crate::Engine::restore`]).
    pub first_msg_id: u64,
}

impl EngineConfig {
    /// A configuration with the defaults: offers the default suite with the identity's
    /// algorithm (`x25519mlkem768/<alg>/aes256gcm`), skew 30 s, 100 readings per record,
    /// 8 records per request, 100 000 queued readings, 1 MiB requests, piggybacking on,
    /// backoff 50 ms doubling to 5 s, 3 resends of a handshake message, no fresh handshake
    /// after an AuthFailed one, message ids from 1.
    pub fn new(device_id: Vec<u8>, identity: Box<dyn SigningKey>, pins: Vec<PinnedKey>) -> Self {
        let offers = alloc::vec![Suite {
            sig: identity.algorithm(),
            ..Suite::DEFAULT
        }];
        Self {
            device_id,
            identity,
            pins,
            offers,
            skew_secs: 30,
            session: SessionConfig::default(),
            queue_capacity: 100_000,
            readings_per_record: 100,
            records_per_request: 8,
            max_request_len: 1 << 20,
            piggyback: true,
            backoff_base_ms: 50,
            backoff_max_ms: 5_000,
            handshake_resends: 3,
            auth_failed_retries: 0,
            first_msg_id: 1,
        }
    }

    /// The defaults of [`EngineConfig::new`] around a core handshake configuration: its
    /// device id, identity, pins, offers, skew and session settings (the provider is given
    /// to [`crate::Engine::new`]).
    pub fn from_device(device: DeviceConfig) -> Self {
        let DeviceConfig {
            provider: _,
            device_id,
            identity,
            offers,
            pins,
            skew_secs,
            session,
        } = device;
        Self {
            offers,
            skew_secs,
            session,
            ..Self::new(device_id, identity, pins)
        }
    }

    /// Splits into the core's handshake configuration and the engine's own settings, after
    /// checking both.
    pub(crate) fn split(
        self,
        provider: CryptoProvider,
    ) -> Result<(DeviceConfig, Options), ConfigError> {
        let alg = self.identity.algorithm();
        let device = DeviceConfig {
            provider,
            device_id: self.device_id,
            identity: self.identity,
            offers: self.offers,
            pins: self.pins,
            skew_secs: self.skew_secs,
            session: self.session,
        };
        device.validate().map_err(ConfigError::Device)?;
        if !device.pins.iter().any(|p| p.alg == alg) {
            return Err(ConfigError::NoPinForAlgorithm(alg));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::ZeroQueueCapacity);
        }
        if !(1..=MAX_READINGS).contains(&self.readings_per_record) {
            return Err(ConfigError::ReadingsPerRecord(self.readings_per_record));
        }
        if !(1..=MAX_BATCH_RECORDS).contains(&self.records_per_request) {
            return Err(ConfigError::RecordsPerRequest(self.records_per_request));
        }
        if self.max_request_len < MIN_REQUEST_LEN {
            return Err(ConfigError::RequestTooSmall(self.max_request_len));
        }
        if self.backoff_base_ms == 0 || self.backoff_base_ms > self.backoff_max_ms {
            return Err(ConfigError::BackoffRange);
        }
        let opts = Options {
            queue_capacity: self.queue_capacity,
            readings_per_record: self.readings_per_record,
            records_per_request: self.records_per_request,
            max_request_len: self.max_request_len,
            piggyback: self.piggyback,
            backoff_base_ms: self.backoff_base_ms,
            backoff_max_ms: self.backoff_max_ms,
            handshake_resends: self.handshake_resends,
            auth_failed_retries: self.auth_failed_retries,
            first_msg_id: self.first_msg_id,
        };
        Ok((device, opts))
    }
}

/// The engine's own settings, checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub(crate) queue_capacity: usize,
    pub(crate) readings_per_record: usize,
    pub(crate) records_per_request: usize,
    pub(crate) max_request_len: usize,
    pub(crate) piggyback: bool,
    pub(crate) backoff_base_ms: u64,
    pub(crate) backoff_max_ms: u64,
    pub(crate) handshake_resends: u32,
    pub(crate) auth_failed_retries: u32,
    pub(crate) first_msg_id: u64,
}

/// Why a configuration was refused by [`crate::Engine::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The handshake configuration is invalid (device id length, offer count, no pins, an
    /// offer whose signature algorithm is not the identity's).
    Device(iotseal_proto::Error),
    /// No pinned gateway key has the identity's algorithm: no M2 could ever verify.
    NoPinForAlgorithm(SigAlg),
    /// `queue_capacity` is 0.
    ZeroQueueCapacity,
    /// `readings_per_record` is outside 1 to 1024.
    ReadingsPerRecord(usize),
    /// `records_per_request` is outside 1 to 1024.
    RecordsPerRequest(usize),
    /// `max_request_len` is below [`MIN_REQUEST_LEN`].
    RequestTooSmall(usize),
    /// `backoff_base_ms` is 0 or above `backoff_max_ms`.
    BackoffRange,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(e) => write!(f, "device configuration: {e}"),
            Self::NoPinForAlgorithm(a) => write!(f, "no pinned gateway key of algorithm {a}"),
            Self::ZeroQueueCapacity => f.write_str("queue capacity must be at least 1"),
            Self::ReadingsPerRecord(n) => write!(f, "readings per record {n}: must be 1 to 1024"),
            Self::RecordsPerRequest(n) => write!(f, "records per request {n}: must be 1 to 1024"),
            Self::RequestTooSmall(n) => {
                write!(
                    f,
                    "request budget {n} bytes: must be at least {MIN_REQUEST_LEN}"
                )
            }
            Self::BackoffRange => {
                f.write_str("backoff base must be at least 1 ms and at most the maximum")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}
