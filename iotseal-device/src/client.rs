//! The device: handshake when needed, seal queued readings into batched records, send them,
//! forget them only once acknowledged, retry with backoff and jitter otherwise.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iotseal_proto::handshake::{DeviceConfig, DeviceHandshake, DeviceNext};
use iotseal_proto::reading::encode_batch;
use iotseal_proto::record::{ContentType, Session, batch};
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
    /// First retry delay; doubles per failure up to `backoff_max`, with full jitter.
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
    /// Requests that got no answer and were retried.
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
    /// The protocol core refused something (see the error).
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

impl From<std::io::Error> for DeviceError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// A device talking to one gateway.
pub struct DeviceClient<T: Transport> {
    config: Arc<DeviceConfig>,
    transport: T,
    opts: DeviceOptions,
    clock: Clock,
    session: Option<Session>,
    queue: DurableQueue,
    stats: DeviceStats,
    jitter: u64,
}

impl<T: Transport> fmt::Debug for DeviceClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceClient")
            .field("pending", &self.queue.len())
            .finish_non_exhaustive()
    }
}

/// In-flight records: sequence number → message ids inside.
type InFlight = HashMap<u64, Vec<u64>>;

impl<T: Transport> DeviceClient<T> {
    /// A device with `config` (identity, pins, offers) over `transport`.
    ///
    /// # Panics
    /// If `opts.queue_file` exists but cannot be read; use [`Self::try_new`] to handle that.
    pub fn new(config: DeviceConfig, transport: T, opts: DeviceOptions) -> Self {
        Self::try_new(config, transport, opts).expect("queue file readable")
    }

    /// A device, reading the persisted queue if there is one.
    pub fn try_new(
        config: DeviceConfig,
        transport: T,
        opts: DeviceOptions,
    ) -> std::io::Result<Self> {
        let queue = match &opts.queue_file {
            Some(path) => DurableQueue::open(path, opts.queue_capacity, opts.queue_sync)?,
            None => DurableQueue::in_memory(opts.queue_capacity),
        };
        let mut seed = [0u8; 8];
        let _ = config.provider.random.fill(&mut seed);
        Ok(Self {
            config: Arc::new(config),
            transport,
            opts,
            clock: Clock::default(),
            session: None,
            queue,
            stats: DeviceStats::default(),
            jitter: u64::from_le_bytes(seed) | 1,
        })
    }

    /// The device id.
    pub fn id(&self) -> String {
        String::from_utf8_lossy(&self.config.device_id).into_owned()
    }

    /// Counters so far.
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// Readings waiting for acknowledgement.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The device clock (with any adopted correction).
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Sets the device clock (tests simulate wrong clocks with it).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Forgets the session (as after a reboot); the next flush handshakes again.
    pub fn drop_session(&mut self) {
        self.session = None;
    }

    /// Queues a reading stamped with the device clock; returns its message id.
    pub fn push(
        &mut self,
        values: Vec<(iotseal_proto::reading::SensorKind, f32)>,
        extra: Vec<u8>,
    ) -> Result<u64, PushError> {
        let t = self.clock.now().0;
        self.push_at(t, values, extra)
    }

    /// Queues a reading with an explicit timestamp.
    pub fn push_at(
        &mut self,
        time_ms: u64,
        values: Vec<(iotseal_proto::reading::SensorKind, f32)>,
        extra: Vec<u8>,
    ) -> Result<u64, PushError> {
        let v = values.into_iter().map(|(k, x)| (k.code(), x)).collect();
        self.queue.push(time_ms, v, extra)
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        // xorshift for jitter; no security role.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let cap = self.opts.backoff_max.as_millis() as u64;
        let exp = (self.opts.backoff_base.as_millis() as u64)
            .saturating_mul(1 << attempt.min(16))
            .min(cap)
            .max(1);
        Duration::from_millis(self.jitter % exp + 1)
    }

    fn refused(&mut self, r: Refusal) {
        *self.stats.refusals.entry(format!("{r:?}")).or_default() += 1;
    }

    /// Delivers every queued reading: handshakes when needed, retries until each reading is
    /// acknowledged or `flush_timeout` passes.
    pub async fn flush(&mut self) -> Result<FlushReport, DeviceError> {
        let start = tokio::time::Instant::now();
        let mut report = FlushReport::default();
        let mut attempt = 0u32;
        let mut last = None;
        while !self.queue.is_empty() {
            if start.elapsed() > self.opts.flush_timeout {
                return Err(DeviceError::Timeout {
                    pending: self.queue.len(),
                    last,
                });
            }
            // A refusal of a handshake message differs from one of a record (§18.9): an
            // AuthFailed answer to M1/M3 means this device or its pins are wrong for good.
            let handshaking = self
                .session
                .as_ref()
                .is_none_or(|s| s.is_expired(self.clock.now()));
            match self.round().await {
                Ok(n) => {
                    report.acknowledged += n;
                    if n > 0 {
                        attempt = 0;
                    }
                }
                Err(e) => {
                    match &e {
                        TransportError::Refused(r) => {
                            self.refused(*r);
                            if matches!(r, Refusal::NoCommonSuite)
                                || (handshaking && matches!(r, Refusal::AuthFailed))
                            {
                                return Err(DeviceError::Refused {
                                    refusal: *r,
                                    pending: self.queue.len(),
                                });
                            }
                            if !matches!(r, Refusal::Busy) {
                                // Anything else: start over with a fresh session.
                                self.session = None;
                            }
                        }
                        TransportError::Unavailable(_) => self.stats.retries += 1,
                    }
                    last = Some(e);
                    let d = self.backoff(attempt);
                    attempt += 1;
                    tokio::time::sleep(d).await;
                }
            }
        }
        report.pending = self.queue.len();
        Ok(report)
    }

    /// One exchange: a handshake (with records along) or one batch of records.
    async fn round(&mut self) -> Result<u64, TransportError> {
        let now = self.clock.now();
        if self.session.as_ref().is_none_or(|s| s.is_expired(now)) {
            self.session = None;
            return self.handshake().await;
        }
        let mut session = self.session.take().expect("checked");
        let mut body = Vec::new();
        let inflight = self.seal_pending(&mut session, now, &mut body);
        if inflight.is_empty() {
            // The session can seal no more (lifetime or sequence space): handshake again.
            return Ok(0);
        }
        let sent_at = std::time::Instant::now();
        let res = self.transport.records(body).await;
        let out = match res {
            Ok(answer) => Ok(self.process_acks(&mut session, &answer, &inflight, sent_at)),
            Err(e) => Err(e),
        };
        self.session = Some(session);
        out
    }

    fn seal_pending(&mut self, session: &mut Session, now: Time, body: &mut Vec<u8>) -> InFlight {
        let mut inflight = InFlight::new();
        let n = self
            .opts
            .readings_per_record
            .clamp(1, iotseal_proto::reading::MAX_READINGS);
        let take = n * self.opts.records_per_request.max(1);
        let pending: Vec<_> = self.queue.front(take).cloned().collect();
        for chunk in pending.chunks(n) {
            let readings: Vec<_> = chunk.iter().map(|p| p.to_reading()).collect();
            let mut plain = encode_batch(&readings);
            // Keep each record under the plaintext limit: split large batches.
            if plain.len() > iotseal_proto::record::MAX_PLAINTEXT {
                plain.truncate(0);
            }
            if plain.is_empty() {
                for r in &readings {
                    self.seal_one(session, now, std::slice::from_ref(r), body, &mut inflight);
                }
                continue;
            }
            let mut rec = Vec::with_capacity(plain.len() + 32);
            if let Ok(seq) = session.seal(now, ContentType::Data, &plain, &mut rec) {
                batch::push(body, &rec);
                self.stats.records_sent += 1;
                inflight.insert(seq, chunk.iter().map(|p| p.msg_id).collect());
            }
        }
        inflight
    }

    fn seal_one(
        &mut self,
        session: &mut Session,
        now: Time,
        r: &[iotseal_proto::reading::Reading],
        body: &mut Vec<u8>,
        inflight: &mut InFlight,
    ) {
        let plain = encode_batch(r);
        let mut rec = Vec::new();
        if let Ok(seq) = session.seal(now, ContentType::Data, &plain, &mut rec) {
            batch::push(body, &rec);
            self.stats.records_sent += 1;
            inflight.insert(seq, r.iter().map(|x| x.msg_id).collect());
        }
    }

    /// Opens the acknowledgement records of an answer and forgets what they cover.
    fn process_acks(
        &mut self,
        session: &mut Session,
        answer: &[u8],
        inflight: &InFlight,
        sent_at: std::time::Instant,
    ) -> u64 {
        let now = self.clock.now();
        let mut done = HashSet::new();
        let Ok(records) = batch::split(answer) else {
            return 0;
        };
        for r in records {
            let mut r = r.to_vec();
            let Ok(o) = session.open(now, &mut r) else {
                continue;
            };
            if o.content_type != ContentType::Ack {
                continue;
            }
            let seq = o.seq;
            let Ok(ranges) = session.parse_ack(o.plaintext) else {
                continue;
            };
            let _ = session.accept(seq);
            for (a, b) in ranges {
                for (s, ids) in inflight.iter() {
                    if (a..=b).contains(s) {
                        done.extend(ids.iter().copied());
                    }
                }
            }
        }
        let n = match self.queue.remove(&done) {
            Ok(n) => n as u64,
            Err(e) => {
                // Forgotten in memory all the same: a restart resends them, and the gateway
                // deduplicates. Logged at the first failure and every 1,000th.
                if self.stats.queue_write_errors.is_multiple_of(1000) {
                    tracing::warn!(error = %e, failures = self.stats.queue_write_errors + 1, "queue journal");
                }
                self.stats.queue_write_errors += 1;
                e.removed as u64
            }
        };
        if n > 0 {
            self.stats.acknowledged += n;
            let us = sent_at.elapsed().as_micros() as u64;
            if self.stats.ack_latency_us.len() < 100_000 {
                self.stats.ack_latency_us.push(us);
            }
        }
        n
    }

    /// Runs a handshake; with piggybacking, the first records ride on M3.
    async fn handshake(&mut self) -> Result<u64, TransportError> {
        let now = self.clock.now();
        let (mut hs, mut hello) = DeviceHandshake::start(self.config.clone(), now)
            .map_err(|e| TransportError::Unavailable(format!("start: {e}")))?;
        let est = loop {
            let answer = self.send_handshake(hello.clone()).await?;
            let local = self.clock.now();
            match hs.handle(local, &answer) {
                Ok(DeviceNext::Retry {
                    handshake,
                    hello: h,
                }) => {
                    hs = handshake;
                    hello = h;
                }
                Ok(DeviceNext::Established(e)) => break e,
                Err(e) => {
                    return Err(TransportError::Unavailable(format!("handshake: {e}")));
                }
            }
        };
        let local = self.clock.now();
        if let Some(t) = est.gateway_time {
            self.clock.adopt(t, local);
        }
        let mut session = est.session;
        let mut flight = est.finish.clone();
        let inflight = if self.opts.piggyback {
            let now = self.clock.now();
            self.seal_pending(&mut session, now, &mut flight)
        } else {
            InFlight::new()
        };
        let sent_at = std::time::Instant::now();
        let answer = self.send_handshake(flight).await?;
        self.stats.handshakes += 1;
        let n = self.process_acks(&mut session, &answer, &inflight, sent_at);
        self.session = Some(session);
        Ok(n)
    }

    /// Sends a handshake message; an unanswered one is resent with the same bytes (the
    /// gateway answers from its cache), a few times.
    async fn send_handshake(&mut self, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let mut attempt = 0;
        loop {
            match self.transport.handshake(body.clone()).await {
                Ok(a) => return Ok(a),
                Err(TransportError::Unavailable(e)) if attempt < 3 => {
                    self.stats.retries += 1;
                    let d = self.backoff(attempt);
                    attempt += 1;
                    tracing::debug!("handshake message unanswered ({e}); resending");
                    tokio::time::sleep(d).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
