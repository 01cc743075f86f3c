//! The device: a thin async driver around one [`Engine`] (docs/architecture.md, "Device
//! side"). The engine decides everything the protocol decides (when to handshake, what to
//! seal, what an answer means, whether and how long to back off, which refusals are final);
//! this driver carries its requests over a [`Transport`], sleeps until its timers, keeps the
//! optional queue journal ([`DurableQueue`]) in step with it, and measures ack latency.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iotseal_device_core::{Engine, EngineConfig, Event, MsgId, Sample};
use iotseal_proto::handshake::DeviceConfig;
use iotseal_proto::{Refusal, Time};

use crate::clock::Clock;
use crate::queue::{DurableQueue, PushError, SyncPolicy};
use crate::transport::{Transport, TransportError};

/// Device behaviour settings.
#[derive(Clone, Debug)]
pub struct DeviceOptions {
    /// Readings sealed into one record (at most 1024).
    pub readings_per_record: usize,
    /// Records sent in one request.
    pub records_per_request: usize,
    /// Most readings waiting for acknowledgement; `push` fails beyond.
    pub queue_capacity: usize,
    /// Keep the queue in this journal file (survives restarts and kills; see
    /// [`crate::queue`] for the format).
    pub queue_file: Option<PathBuf>,
    /// When the journal is forced to disk ([`SyncPolicy::Always`]: every push).
    pub queue_sync: SyncPolicy,
    /// First retry delay; doubles per failure up to `backoff_max`, with jitter (the engine's
    /// backoff: at least the gateway's `Retry-After`).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Give up a flush after this long (the readings stay queued).
    pub flush_timeout: Duration,
    /// Send the first records along with the handshake's last message.
    pub piggyback: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            readings_per_record: 100,
            records_per_request: 8,
            queue_capacity: 100_000,
            queue_file: None,
            queue_sync: SyncPolicy::Always,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(60),
            piggyback: true,
        }
    }
}

/// Counters of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Completed handshakes.
    pub handshakes: u64,
    /// Records sent (including re-sent ones).
    pub records_sent: u64,
    /// Readings acknowledged.
    pub acknowledged: u64,
    /// Requests that got no answer (the engine retried them).
    pub retries: u64,
    /// Refusals by kind.
    pub refusals: HashMap<String, u64>,
    /// Acknowledgement latency samples in microseconds (send to ack), most recent last.
    pub ack_latency_us: Vec<u64>,
    /// Acknowledgements that could not be written to the queue journal (those readings are
    /// sent again after a restart; the gateway deduplicates them).
    pub queue_write_errors: u64,
}

/// Result of a flush.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Readings acknowledged during this flush.
    pub acknowledged: u64,
    /// Readings still queued.
    pub pending: usize,
}

/// Why the device could not deliver.
#[derive(Debug)]
pub enum DeviceError {
    /// The protocol core refused something (see the error), e.g. an invalid configuration.
    Protocol(iotseal_proto::Error),
    /// The flush ran out of time; readings stay queued.
    Timeout {
        /// Readings still queued.
        pending: usize,
        /// The last transport error.
        last: Option<TransportError>,
    },
    /// The gateway refused in a way retrying cannot fix (no common suite; authentication of
    /// the handshake failed: an unknown, revoked or mis-keyed device); readings stay queued.
    /// Not retried like a network error (docs/protocol.md §18.9).
    Refused {
        /// The refusal.
        refusal: Refusal,
        /// Readings still queued.
        pending: usize,
    },
    /// The queue file could not be written.
    Io(std::io::Error),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol: {e}"),
            Self::Timeout { pending, last } => write!(
                f,
                "gave up with {pending} readings queued (last error: {last:?})"
            ),
            Self::Refused { refusal, pending } => write!(
                f,
                "refused by the gateway ({refusal:?}), not retried; {pending} readings queued"
            ),
            Self::Io(e) => write!(f, "queue file: {e}"),
        }
    }
}

impl std::error::Error for DeviceError {}

impl From<iotseal_proto::Error> for DeviceError {
    fn from(e: iotseal_proto::Error) -> Self {
        Self::Protocol(e)
    }
}

impl From<iotseal_device_core::ConfigError> for DeviceError {
    fn from(e: iotseal_device_core::ConfigError) -> Self {
        match e {
            iotseal_device_core::ConfigError::Device(e) => Self::Protocol(e),
            other => Self::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                other.to_string(),
            )),
        }
    }
}

impl From<std::io::Error> for DeviceError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// A device talking to one gateway: one [`Engine`], a transport, and optionally the queue
/// journal.
pub struct DeviceClient<T: Transport> {
    engine: Engine,
    transport: T,
    opts: DeviceOptions,
    /// The queue journal (with `queue_file`): every accepted push and every acknowledgement,
    /// so a restarted device gives the engine back what it had not delivered.
    journal: Option<DurableQueue>,
    stats: DeviceStats,
}

impl<T: Transport> fmt::Debug for DeviceClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceClient")
            .field("pending", &self.engine.pending())
            .finish_non_exhaustive()
    }
}

/// The caller's clock for the engine: the system clock, ms since the Unix epoch (the engine
/// adds the correction adopted from M2).
fn system_now() -> Time {
    Time(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// Builds the engine's configuration from the SDK's: `config` (identity, pins, offers) with
/// `opts` (queue, batching, backoff); `store_and_forward` (MQTT) leaves acknowledgements'
/// age unchecked. For drivers of their own over [`engine`](crate::engine) (the load generator
/// in iotseal-bench); returns the provider to build the engine with.
pub fn engine_config(
    config: DeviceConfig,
    opts: &DeviceOptions,
    store_and_forward: bool,
) -> (EngineConfig, iotseal_proto::crypto::CryptoProvider) {
    let DeviceConfig {
        provider,
        device_id,
        identity,
        offers,
        pins,
        skew_secs,
        mut session,
    } = config;
    if store_and_forward {
        // MQTT (§17): an acknowledgement may wait at the broker; its age is not checked.
        session.max_record_age_secs = None;
    }
    let max_ms = (opts.backoff_max.as_millis() as u64).max(1);
    let mut c = EngineConfig::new(device_id, identity, pins);
    c.offers = offers;
    c.skew_secs = skew_secs;
    c.session = session;
    c.queue_capacity = opts.queue_capacity.max(1);
    c.readings_per_record = opts
        .readings_per_record
        .clamp(1, iotseal_proto::reading::MAX_READINGS);
    c.records_per_request = opts
        .records_per_request
        .clamp(1, iotseal_proto::record::batch::MAX_BATCH_RECORDS);
    c.piggyback = opts.piggyback;
    c.backoff_max_ms = max_ms;
    c.backoff_base_ms = (opts.backoff_base.as_millis() as u64).clamp(1, max_ms);
    (c, provider)
}

fn push_error(e: iotseal_device_core::PushError) -> PushError {
    match e {
        iotseal_device_core::PushError::QueueFull { .. } => PushError::Full,
        iotseal_device_core::PushError::TooManyValues(_)
        | iotseal_device_core::PushError::ExtraTooLong(_) => PushError::TooLarge,
        other => PushError::Io(std::io::Error::other(other.to_string())),
    }
}

impl<T: Transport> DeviceClient<T> {
    /// A device with `config` (identity, pins, offers) over `transport`.
    ///
    /// # Panics
    /// If `opts.queue_file` exists but cannot be read, or the configuration is invalid (no
    /// pinned key of the identity's algorithm, a bad device id); use [`Self::try_new`] to
    /// handle that.
    pub fn new(config: DeviceConfig, transport: T, opts: DeviceOptions) -> Self {
        Self::try_new(config, transport, opts).expect("queue file readable")
    }

    /// A device, reading the persisted queue if there is one: its readings go back into the
    /// engine with their message ids, and new ones continue after every id ever given.
    pub fn try_new(
        config: DeviceConfig,
        transport: T,
        opts: DeviceOptions,
    ) -> std::io::Result<Self> {
        let (cfg, provider) = engine_config(config, &opts, transport.store_and_forward());
        let mut engine = Engine::new(cfg, provider)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let journal = match &opts.queue_file {
            Some(path) => {
                let q = DurableQueue::open(path, opts.queue_capacity.max(1), opts.queue_sync)?;
                let readings = q.front(q.len()).map(|p| p.to_reading()).collect();
                engine
                    .restore(MsgId(q.next_msg_id()), readings)
                    .map_err(|e| std::io::Error::other(format!("queue journal: {e}")))?;
                Some(q)
            }
            None => None,
        };
        Ok(Self {
            engine,
            transport,
            opts,
            journal,
            stats: DeviceStats::default(),
        })
    }

    /// The device id.
    pub fn id(&self) -> String {
        String::from_utf8_lossy(self.engine.device_id()).into_owned()
    }

    /// Counters so far.
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// The engine's own counters (handshake attempts, resends, backoffs, ...).
    pub fn engine_stats(&self) -> &iotseal_device_core::Stats {
        self.engine.stats()
    }

    /// Readings waiting for acknowledgement.
    pub fn pending(&self) -> usize {
        self.engine.pending()
    }

    /// The message id the next pushed reading gets.
    pub fn next_msg_id(&self) -> u64 {
        self.engine.next_msg_id().0
    }

    /// The device clock (with any adopted correction).
    pub fn clock(&self) -> Clock {
        Clock {
            offset_ms: self.engine.clock_offset_ms(),
        }
    }

    /// Sets the device clock (tests simulate wrong clocks with it).
    pub fn set_clock(&mut self, clock: Clock) {
        self.engine.set_clock_offset_ms(clock.offset_ms);
    }

    /// Forgets the session (as after a reboot); the next flush handshakes again.
    pub fn drop_session(&mut self) {
        self.engine.drop_session();
        self.drain_events(None, &mut None);
    }

    /// Queues a reading stamped with the device clock; returns its message id.
    pub fn push(
        &mut self,
        values: Vec<(iotseal_proto::reading::SensorKind, f32)>,
        extra: Vec<u8>,
    ) -> Result<u64, PushError> {
        let t = self.engine.device_time(system_now()).0;
        self.push_at(t, values, extra)
    }

    /// Queues a reading with an explicit timestamp (device time, ms since the Unix epoch).
    /// With a queue file it returns once the reading is journaled.
    pub fn push_at(
        &mut self,
        time_ms: u64,
        values: Vec<(iotseal_proto::reading::SensorKind, f32)>,
        extra: Vec<u8>,
    ) -> Result<u64, PushError> {
        let now = system_now();
        let sample = |values, extra| Sample {
            time: Some(Time(time_ms)),
            values,
            extra,
        };
        let Some(journal) = &mut self.journal else {
            return self
                .engine
                .push(now, sample(values, extra))
                .map(|id| id.0)
                .map_err(push_error);
        };
        // Journal first (the push returns only once the reading is on disk), under the id
        // the engine gives next: both hold the same readings and the same next id, so the
        // checks below are the engine's own and its push cannot fail after the journal's.
        if self.engine.pending() >= self.opts.queue_capacity.max(1) {
            return Err(PushError::Full);
        }
        debug_assert_eq!(journal.next_msg_id(), self.engine.next_msg_id().0);
        let codes = values.iter().map(|(k, x)| (k.code(), *x)).collect();
        let id = journal.push(time_ms, codes, extra.clone())?;
        match self.engine.push(now, sample(values, extra)) {
            Ok(m) if m.0 == id => Ok(id),
            Ok(m) => {
                // Cannot happen (both count from the journal's next id); keep them agreeing.
                let _ = journal.remove(&HashSet::from([id]));
                Err(PushError::Io(std::io::Error::other(format!(
                    "queue journal out of step (journal id {id}, engine id {m})"
                ))))
            }
            Err(e) => {
                let _ = journal.remove(&HashSet::from([id]));
                Err(push_error(e))
            }
        }
    }

    /// Delivers every queued reading: the engine handshakes when needed, seals, re-sends
    /// what was not acknowledged and backs off; this returns once nothing is pending, the
    /// engine stops on a refusal retrying cannot fix ([`DeviceError::Refused`], the
    /// readings stay queued; the next flush tries again), or `flush_timeout` passes.
    pub async fn flush(&mut self) -> Result<FlushReport, DeviceError> {
        let deadline = tokio::time::Instant::now() + self.opts.flush_timeout;
        let mut report = FlushReport::default();
        let mut last: Option<TransportError> = None;
        self.engine.resume();
        loop {
            if let Some(refusal) = self.drain_events(Some(&mut report), &mut last) {
                self.sync_stats();
                return Err(DeviceError::Refused {
                    refusal,
                    pending: self.engine.pending(),
                });
            }
            self.sync_stats();
            if self.engine.pending() == 0 && !self.engine.is_waiting() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DeviceError::Timeout {
                    pending: self.engine.pending(),
                    last,
                });
            }
            if let Some(t) = self.engine.poll_transmit(system_now()) {
                let sent_at = std::time::Instant::now();
                let acked = self.engine.stats().acknowledged;
                match self.transport.send(t.endpoint, t.body).await {
                    Ok(reply) => {
                        match reply.refusal() {
                            Ok(Some(r)) => last = Some(TransportError::Refused(r)),
                            Err(e) => last = Some(e),
                            Ok(None) => {}
                        }
                        self.engine.handle_response(system_now(), reply.response());
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "request unanswered");
                        self.engine.handle_transport_error(system_now());
                        last = Some(e);
                    }
                }
                if self.engine.stats().acknowledged > acked
                    && self.stats.ack_latency_us.len() < 100_000
                {
                    let us = sent_at.elapsed().as_micros() as u64;
                    self.stats.ack_latency_us.push(us);
                }
                continue;
            }
            if let Some(refusal) = self.engine.refusal() {
                // Normally reported by its event above; stopped until the next flush.
                return Err(DeviceError::Refused {
                    refusal,
                    pending: self.engine.pending(),
                });
            }
            // Backing off (or nothing to send yet): sleep until the engine's timer, within
            // the flush's deadline.
            let now = system_now();
            let wait = match self.engine.poll_timeout() {
                Some(t) => Duration::from_millis(t.millis_since(now).max(1)),
                None => Duration::from_millis(10),
            };
            let until = (tokio::time::Instant::now() + wait).min(deadline);
            tokio::time::sleep_until(until).await;
            self.engine.handle_timeout(system_now());
        }
        report.pending = self.engine.pending();
        Ok(report)
    }

    /// Handles the engine's events: acknowledgements are journaled and counted; returns the
    /// refusal the engine stopped on, if it did.
    fn drain_events(
        &mut self,
        mut report: Option<&mut FlushReport>,
        last: &mut Option<TransportError>,
    ) -> Option<Refusal> {
        let mut refused = None;
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::Acknowledged { msg_ids } => {
                    if let Some(r) = report.as_deref_mut() {
                        r.acknowledged += msg_ids.len() as u64;
                    }
                    self.journal_acks(&msg_ids);
                }
                Event::Refused(r) => refused = Some(r),
                Event::HandshakeFailed(e) => {
                    tracing::debug!(error = %e, "handshake answer refused by the device");
                    *last = Some(TransportError::Unavailable(format!("handshake: {e}")));
                }
                Event::SessionLost(end) => tracing::debug!(?end, "session lost"),
                Event::BackingOff { cause, .. } => tracing::debug!(?cause, "backing off"),
                _ => {}
            }
        }
        refused
    }

    fn journal_acks(&mut self, msg_ids: &[MsgId]) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        let ids: HashSet<u64> = msg_ids.iter().map(|m| m.0).collect();
        if let Err(e) = journal.remove(&ids) {
            // Forgotten in memory all the same: a restart resends them, and the gateway
            // deduplicates. Logged at the first failure and every 1,000th.
            if self.stats.queue_write_errors.is_multiple_of(1000) {
                tracing::warn!(error = %e, failures = self.stats.queue_write_errors + 1, "queue journal");
            }
            self.stats.queue_write_errors += 1;
        }
    }

    /// Copies the engine's counters into [`DeviceStats`].
    fn sync_stats(&mut self) {
        let e = self.engine.stats();
        self.stats.handshakes = e.handshakes;
        self.stats.records_sent = e.records_sent;
        self.stats.acknowledged = e.acknowledged;
        self.stats.retries = e.transport_errors;
        for (code, &n) in e.refusals.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if let Some(r) = u8::try_from(code).ok().and_then(Refusal::from_code) {
                self.stats.refusals.insert(format!("{r:?}"), n);
            }
        }
    }
}
