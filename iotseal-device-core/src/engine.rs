//! The engine: one device's side of the protocol, driven by a caller that moves bytes.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem;

use iotseal_proto::codec::{put_varint, varint_len};
use iotseal_proto::crypto::{CryptoProvider, TAG_LEN};
use iotseal_proto::error::{Limit, Malformed};
use iotseal_proto::handshake::messages::{Cookie, decode_alert, msg_type};
use iotseal_proto::handshake::{DeviceConfig, DeviceHandshake, DeviceNext};
use iotseal_proto::reading::Reading;
use iotseal_proto::record::header::MAX_HEADER_LEN;
use iotseal_proto::record::{
    ContentType, MAX_EPOCH_SKIP, MAX_PLAINTEXT, Session, WINDOW_SIZE, batch,
};
use iotseal_proto::{Error, Refusal, Suite, Time};
use zeroize::Zeroizing;

use crate::acks::open_acks;
use crate::backoff::Backoff;
use crate::config::{ConfigError, EngineConfig, Options};
use crate::event::{Cause, Event, SessionEnd, Stats, refusal_index};
use crate::queue::{MsgId, PushError, Queue, Sample};
use crate::seqmap::SeqMap;

/// Events beyond this many waiting are dropped (acknowledgements are merged instead).
const MAX_EVENTS: usize = 1024;

/// Where a request goes. Over HTTP: `POST` to [`Endpoint::path`]; over MQTT: published to
/// `PREFIX/hs/CLIENT` or `PREFIX/rec/CLIENT` ([`Endpoint::mqtt_kind`]), docs/protocol.md §17.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A handshake message: M1, or M3 with a batch of records.
    Handshake,
    /// A batch of data records.
    Records,
}

impl Endpoint {
    /// The HTTP path: `/v1/handshake` or `/v1/records`.
    pub fn path(self) -> &'static str {
        match self {
            Self::Handshake => "/v1/handshake",
            Self::Records => "/v1/records",
        }
    }

    /// The MQTT request topic level: `hs` or `rec`.
    pub fn mqtt_kind(self) -> &'static str {
        match self {
            Self::Handshake => "hs",
            Self::Records => "rec",
        }
    }
}

/// A request for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub endpoint: Endpoint,
    /// The body (HTTP) or payload (MQTT).
    pub body: Vec<u8>,
}

/// The answer to the request in flight, as the transport got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// HTTP (docs/protocol.md §18.9): the status and the body. 200 carries the answer (Retry,
    /// M2, or a batch of acknowledgement records). Any other status is a refusal: the 2-byte
    /// alert of the body (§4.5) if there is one; else, from the status alone, 429 and 503 are
    /// Busy, 404 is UnknownSession, 408 and any 5xx are no answer (the request timed out, or a
    /// proxy could not reach the gateway: as [`crate::Engine::handle_transport_error`]),
    /// anything else is Malformed. A 413 (or a Malformed refusal of a request carrying
    /// records) halves the request budget ([`crate::Engine::request_budget`]).
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body.
        body: &'a [u8],
        /// The `Retry-After` header in seconds, if there was one (with 503 and 429): the
        /// backoff lasts at least that long.
        retry_after_secs: Option<u32>,
    },
    /// MQTT: the payload the gateway published on the device's inbox with the request's
    /// correlation data. The binding has no status: a refusal is the whole payload
    /// `0x7f || code` (no Retry, M2 or batch is 2 bytes long, §17); anything else is the
    /// answer, as HTTP's 200. An alert with a code this version does not know is no answer.
    /// An answer that does not arrive within the transport's timeout is
    /// [`crate::Engine::handle_transport_error`].
    Payload(&'a [u8]),
}

impl<'a> Response<'a> {
    /// An HTTP answer without `Retry-After`.
    pub fn http(status: u16, body: &'a [u8]) -> Self {
        Self::Status {
            status,
            body,
            retry_after_secs: None,
        }
    }
}

/// A response sorted out.
enum Answer<'a> {
    Body(&'a [u8]),
    Refused(Refusal),
    Lost,
}

impl<'a> Response<'a> {
    fn classify(self) -> Answer<'a> {
        match self {
            Self::Status {
                status: 200, body, ..
            } => Answer::Body(body),
            Self::Status { status, body, .. } => match decode_alert(body) {
                Some(r) => Answer::Refused(r),
                None => match status {
                    429 | 503 => Answer::Refused(Refusal::Busy),
                    404 => Answer::Refused(Refusal::UnknownSession),
                    408 | 500..=599 => Answer::Lost,
                    _ => Answer::Refused(Refusal::Malformed),
                },
            },
            Self::Payload(p) => match p {
                [msg_type::ALERT, code] => {
                    Refusal::from_code(*code).map_or(Answer::Lost, Answer::Refused)
                }
                _ => Answer::Body(p),
            },
        }
    }
}

/// A hello waiting to be sent or answered.
#[derive(Debug)]
struct HelloState {
    hs: DeviceHandshake,
    bytes: Vec<u8>,
    /// When these bytes were first sent (the caller's clock).
    first_sent: Time,
    sends: u32,
}

/// M3 (with records) waiting to be sent or acknowledged.
#[derive(Debug)]
struct FinishState {
    session: Box<Session>,
    flight: Vec<u8>,
    /// The length of M3 itself (records follow it in `flight`).
    finish_len: usize,
    first_sent: Time,
    sends: u32,
    clock_adjusted_ms: Option<i64>,
}

/// Where the device is in its life with the gateway.
#[derive(Debug)]
enum Phase {
    /// No session; a handshake starts when there is something to send.
    Idle,
    /// WaitAnswer (§7.2): the hello (first or retried).
    Hello(Box<HelloState>),
    /// WaitAck (§7.2 step 14): M3 and the records riding on it.
    Finish(Box<FinishState>),
    /// An open session.
    Open(Box<Session>),
    /// Stopped by a refusal retrying cannot fix, until `resume`.
    Refused(Refusal),
}

/// A sealed record not yet acknowledged.
#[derive(Debug)]
struct SentRecord {
    epoch: u64,
    msg_ids: Vec<u64>,
}

/// The request in flight.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    endpoint: Endpoint,
}

/// What acknowledgement records said.
#[derive(Debug, Default)]
struct AckOutcome {
    /// Authentic acknowledgements.
    valid: usize,
    /// Readings acknowledged for the first time.
    newly: Vec<MsgId>,
    /// The session cannot go on.
    end: Option<SessionEnd>,
    first_error: Option<Error>,
}

/// One device's protocol engine: sans-IO, `no_std` + alloc. See the crate documentation for
/// the state machine and the call order.
#[derive(Debug)]
pub struct Engine {
    config: Arc<DeviceConfig>,
    opts: Options,
    queue: Queue,
    phase: Phase,
    in_flight: Option<InFlight>,
    /// Sealed records of the current session not yet acknowledged (at most the last
    /// `WINDOW_SIZE` sequence numbers: older ones can never be acknowledged), by sequence
    /// number.
    sent: SeqMap<SentRecord>,
    /// The highest send epoch of an acknowledged record of the current session.
    acked_epoch: u64,
    backoff: Backoff,
    /// No request before this time (the caller's clock).
    backoff_until: Option<Time>,
    /// Milliseconds added to the caller's clock: the correction adopted from M2.
    clock_offset_ms: i64,
    connect_requested: bool,
    queue_full_reported: bool,
    /// The most bytes a request may have: `max_request_len`, halved at each 413.
    request_budget: usize,
    /// The `Retry-After` of the response being handled, ms (a floor for its backoff).
    retry_after_ms: u64,
    /// AuthFailed refusals of handshakes since the last completed one.
    auth_failed: u32,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Engine {
    /// An engine for the device of `config`, on `provider` (its random source makes the
    /// handshake keys, nonces and the backoff jitter).
    pub fn new(config: EngineConfig, provider: CryptoProvider) -> Result<Self, ConfigError> {
        let (device, opts) = config.split(provider)?;
        Ok(Self {
            config: Arc::new(device),
            queue: Queue::new(opts.queue_capacity, opts.first_msg_id),
            backoff: Backoff::new(opts.backoff_base_ms, opts.backoff_max_ms),
            opts,
            phase: Phase::Idle,
            in_flight: None,
            sent: SeqMap::new(),
            acked_epoch: 0,
            backoff_until: None,
            clock_offset_ms: 0,
            connect_requested: false,
            queue_full_reported: false,
            request_budget: opts.max_request_len,
            retry_after_ms: 0,
            auth_failed: 0,
            events: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    // ---------------------------------------------------------------------------------
    // Getters

    /// The device identifier.
    pub fn device_id(&self) -> &[u8] {
        &self.config.device_id
    }

    /// The core's handshake configuration (identity, pins, offers, session settings).
    pub fn device_config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Readings waiting for acknowledgement.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The queued readings in message-id order (to persist them; see [`Engine::restore`]).
    pub fn queued(&self) -> impl Iterator<Item = &Reading> {
        self.queue.iter().map(|q| &q.reading)
    }

    /// A queued reading (as it will be sealed: with its message id and time), to journal it.
    pub fn reading(&self, id: MsgId) -> Option<&Reading> {
        self.queue.get(id.0)
    }

    /// The open session, read-only (epochs, sequence numbers, its window of acks).
    pub fn session(&self) -> Option<&Session> {
        match &self.phase {
            Phase::Open(s) => Some(s),
            _ => None,
        }
    }

    /// The message id the next pushed reading gets.
    pub fn next_msg_id(&self) -> MsgId {
        MsgId(self.queue.next_msg_id())
    }

    /// The most bytes a request may have now: `max_request_len`, halved (down to
    /// [`crate::MIN_REQUEST_LEN`]) each time the gateway refused a request as too large.
    pub fn request_budget(&self) -> usize {
        self.request_budget
    }

    /// Whether a session is open.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Whether a request is in flight (its answer or transport error is awaited).
    pub fn is_waiting(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The refusal the engine stopped on, if it did ([`Event::Refused`]).
    pub fn refusal(&self) -> Option<Refusal> {
        match self.phase {
            Phase::Refused(r) => Some(r),
            _ => None,
        }
    }

    /// The open session's id.
    pub fn session_id(&self) -> Option<u32> {
        match &self.phase {
            Phase::Open(s) => Some(s.id()),
            _ => None,
        }
    }

    /// The open session's suite.
    pub fn suite(&self) -> Option<Suite> {
        match &self.phase {
            Phase::Open(s) => Some(s.suite()),
            _ => None,
        }
    }

    /// The open session's send and receive key epochs.
    pub fn epochs(&self) -> Option<(u64, u64)> {
        match &self.phase {
            Phase::Open(s) => Some(s.epochs()),
            _ => None,
        }
    }

    /// The clock correction in use: milliseconds added to the caller's `now` (adopted from
    /// a verified M2 whose round trip was at most skew/2, docs/protocol.md §10).
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms
    }

    /// Sets the clock correction (a driver that persisted it, or a test simulating a wrong
    /// clock). Takes effect for the next handshake; an open session keeps running on it.
    pub fn set_clock_offset_ms(&mut self, offset: i64) {
        self.clock_offset_ms = offset;
    }

    /// The device time at the caller's `now`: `now` plus the clock correction.
    pub fn device_time(&self, now: Time) -> Time {
        let t = i128::from(now.as_millis()) + i128::from(self.clock_offset_ms);
        Time(t.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// The caller's time at device time `t`.
    fn caller_time(&self, t: Time) -> Time {
        let c = i128::from(t.as_millis()) - i128::from(self.clock_offset_ms);
        Time(c.clamp(0, i128::from(u64::MAX)) as u64)
    }

    // ---------------------------------------------------------------------------------
    // Application commands

    /// Queues a reading; returns its message id. `now` is the caller's clock (a reading
    /// without a time is stamped with [`Engine::device_time`]).
    pub fn push(&mut self, now: Time, sample: Sample) -> Result<MsgId, PushError> {
        let t = self.device_time(now);
        match self.queue.push(t, sample) {
            Ok(id) => Ok(id),
            Err(e) => {
                if matches!(e, PushError::QueueFull { .. }) {
                    self.stats.queue_full += 1;
                    if !self.queue_full_reported {
                        self.queue_full_reported = true;
                        self.emit(Event::QueueFull);
                    }
                }
                Err(e)
            }
        }
    }

    /// Puts back readings of an earlier run (a persisted queue) and moves the next message
    /// id past them and past `next_msg_id`. All or nothing.
    pub fn restore(&mut self, next_msg_id: MsgId, readings: Vec<Reading>) -> Result<(), PushError> {
        self.queue.restore(next_msg_id.0, readings)
    }

    /// Asks for a handshake even with nothing queued (to be connected before readings come).
    pub fn connect(&mut self) {
        self.connect_requested = true;
    }

    /// Forgets the session (as a reboot would); a request in flight is forgotten too (its
    /// answer will be ignored). The next request handshakes again.
    pub fn drop_session(&mut self) {
        if matches!(self.phase, Phase::Refused(_)) {
            return;
        }
        if matches!(self.phase, Phase::Open(_)) {
            self.lose_session(SessionEnd::Dropped);
        }
        self.phase = Phase::Idle;
        self.sent.clear();
        self.in_flight = None;
    }

    /// Takes the session out of the engine, for a driver that crafts records by hand (the
    /// threat lab's replayed and re-dated records and chosen sequence numbers, the record
    /// layer's tests over an in-memory pair): the open session, or the one established from a
    /// verified M2 whose M3 (sent or not) awaits its acknowledgement. The engine goes back to
    /// idle as with [`Engine::drop_session`] (without an event): a request in flight and the
    /// records it sealed are forgotten, their readings stay queued. Acknowledgements to
    /// records sealed on the taken session are opened with [`crate::open_acks`].
    pub fn take_session(&mut self) -> Option<Session> {
        let session = match mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Open(s) => *s,
            Phase::Finish(f) => *f.session,
            other => {
                self.phase = other;
                return None;
            }
        };
        self.sent.clear();
        self.in_flight = None;
        Some(session)
    }

    /// Leaves the stopped state of [`Event::Refused`] (for example once the device has been
    /// registered): the next request handshakes again.
    pub fn resume(&mut self) {
        if matches!(self.phase, Phase::Refused(_)) {
            self.phase = Phase::Idle;
            self.backoff.reset();
            self.backoff_until = None;
            self.auth_failed = 0;
        }
    }

    // ---------------------------------------------------------------------------------
    // Input

    /// The answer to the request in flight. Without a request in flight it is ignored
    /// (counted in [`Stats::stray_answers`]).
    pub fn handle_response(&mut self, now: Time, response: Response<'_>) {
        let Some(flight) = self.in_flight.take() else {
            self.stats.stray_answers += 1;
            return;
        };
        let mut too_large = false;
        if let Response::Status {
            status,
            retry_after_secs,
            ..
        } = response
        {
            self.retry_after_ms = retry_after_secs.map_or(0, |s| u64::from(s) * 1000);
            too_large = status == 413;
        }
        let answer = response.classify();
        // Over MQTT an oversized request is refused Malformed (no 413).
        let carried_records = flight.endpoint == Endpoint::Records
            || matches!(&self.phase, Phase::Finish(f) if f.flight.len() > f.finish_len);
        if too_large || (matches!(answer, Answer::Refused(Refusal::Malformed)) && carried_records) {
            self.shrink_requests();
        }
        match answer {
            Answer::Body(body) => self.on_answer(now, flight, body),
            Answer::Refused(r) => self.on_refusal(now, r),
            Answer::Lost => self.on_lost(now),
        }
        self.retry_after_ms = 0;
    }

    /// The request in flight got no answer (connection failed or reset, timeout): it may or
    /// may not have been processed. Without a request in flight it is ignored.
    pub fn handle_transport_error(&mut self, now: Time) {
        if self.in_flight.take().is_none() {
            self.stats.stray_answers += 1;
            return;
        }
        self.on_lost(now);
    }

    /// Timers: ends a backoff that is over, drops a session past its lifetime. Also run by
    /// [`Engine::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Time) {
        if self.backoff_until.is_some_and(|t| now >= t) {
            self.backoff_until = None;
        }
        if self.in_flight.is_none()
            && let Phase::Open(s) = &self.phase
            && s.is_expired(self.device_time(now))
        {
            let end = if s.next_seq() > iotseal_proto::record::MAX_SEQ {
                SessionEnd::Exhausted
            } else {
                SessionEnd::Expired
            };
            self.lose_session(end);
        }
    }

    // ---------------------------------------------------------------------------------
    // Output

    /// The next request to send, if one may go now: at most one is in flight; none while
    /// backing off, after a terminal refusal, or with nothing to do.
    pub fn poll_transmit(&mut self, now: Time) -> Option<Transmit> {
        self.handle_timeout(now);
        if self.in_flight.is_some() || self.backoff_until.is_some() {
            return None;
        }
        // At most three turns: an open session that cannot seal any more → Idle → a new
        // hello → sent.
        for _ in 0..3 {
            match mem::replace(&mut self.phase, Phase::Idle) {
                Phase::Idle => {
                    if self.queue.is_empty() && !self.connect_requested {
                        return None;
                    }
                    let dev_now = self.device_time(now);
                    match DeviceHandshake::start(self.config.clone(), dev_now) {
                        Ok((hs, bytes)) => {
                            self.stats.handshake_attempts += 1;
                            self.phase = Phase::Hello(Box::new(HelloState {
                                hs,
                                bytes,
                                first_sent: now,
                                sends: 0,
                            }));
                        }
                        Err(e) => {
                            self.emit(Event::HandshakeFailed(e));
                            self.back_off(now, Cause::Handshake);
                            return None;
                        }
                    }
                }
                Phase::Hello(mut h) => {
                    if h.sends > 0 {
                        self.stats.handshake_resends += 1;
                    }
                    h.sends += 1;
                    let body = h.bytes.clone();
                    self.phase = Phase::Hello(h);
                    return Some(self.send(Endpoint::Handshake, body));
                }
                Phase::Finish(mut f) => {
                    if f.sends > 0 {
                        self.stats.handshake_resends += 1;
                    }
                    f.sends += 1;
                    let body = f.flight.clone();
                    self.phase = Phase::Finish(f);
                    return Some(self.send(Endpoint::Handshake, body));
                }
                Phase::Open(mut s) => {
                    if self.queue.is_empty() {
                        self.phase = Phase::Open(s);
                        return None;
                    }
                    let dev_now = self.device_time(now);
                    let mut body = Vec::new();
                    match self.seal_into(&mut s, dev_now, &mut body, self.request_budget) {
                        Ok(0) => {
                            // Cannot happen (the budget holds any one reading); stay put.
                            self.phase = Phase::Open(s);
                            return None;
                        }
                        Ok(_) => {
                            self.phase = Phase::Open(s);
                            return Some(self.send(Endpoint::Records, body));
                        }
                        // The next turn of the loop starts a handshake.
                        Err(end) => self.lose_session(end),
                    }
                }
                Phase::Refused(r) => {
                    self.phase = Phase::Refused(r);
                    return None;
                }
            }
        }
        None
    }

    /// When the caller should call again without input: the end of a backoff, or the open
    /// session's end of life (the caller's clock). `None`: only input or a push can give
    /// work.
    pub fn poll_timeout(&self) -> Option<Time> {
        let expiry = match &self.phase {
            Phase::Refused(_) => return None,
            Phase::Open(s) => {
                let life = self.config.session.lifetime_secs.saturating_mul(1000);
                Some(self.caller_time(s.started().plus_millis(life)))
            }
            _ => None,
        };
        match (self.backoff_until, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event, oldest first. Poll until `None` after each `handle_*`/`poll_transmit`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---------------------------------------------------------------------------------
    // Internals

    fn send(&mut self, endpoint: Endpoint, body: Vec<u8>) -> Transmit {
        self.in_flight = Some(InFlight { endpoint });
        self.stats.requests += 1;
        Transmit { endpoint, body }
    }

    fn emit(&mut self, e: Event) {
        if let Event::Acknowledged { msg_ids } = &e {
            if let Some(Event::Acknowledged { msg_ids: last }) = self.events.back_mut() {
                last.extend_from_slice(msg_ids);
                return;
            }
        } else if self.events.len() >= MAX_EVENTS {
            self.stats.events_dropped += 1;
            return;
        }
        self.events.push_back(e);
    }

    /// Requests too large for the gateway: half the budget from now on.
    fn shrink_requests(&mut self) {
        self.request_budget = (self.request_budget / 2).max(crate::config::MIN_REQUEST_LEN);
    }

    fn back_off(&mut self, now: Time, cause: Cause) {
        let delay = self
            .backoff
            .next_delay(self.config.provider.random)
            .max(self.retry_after_ms);
        let until = now.plus_millis(delay);
        self.backoff_until = Some(until);
        self.stats.backoffs += 1;
        self.emit(Event::BackingOff { until, cause });
    }

    /// A failure whose fix is a new handshake: at once the first time, backing off if it
    /// happens again before any progress.
    fn retry_soon(&mut self, now: Time, cause: Cause) {
        if self.backoff.failures() == 0 {
            self.backoff.count();
        } else {
            self.back_off(now, cause);
        }
    }

    fn lose_session(&mut self, end: SessionEnd) {
        self.stats.sessions_lost += 1;
        self.emit(Event::SessionLost(end));
        self.phase = Phase::Idle;
        self.sent.clear();
    }

    fn terminal(&mut self, r: Refusal) {
        self.phase = Phase::Refused(r);
        self.sent.clear();
        self.backoff_until = None;
        self.emit(Event::Refused(r));
    }

    /// Whether a handshake message first sent at `first_sent` and sent `sends` times may
    /// go again with the same bytes (§9.2): within `handshake_resends` and within the skew,
    /// while the gateway still has its answer or half-open state.
    fn may_resend(&self, now: Time, first_sent: Time, sends: u32) -> bool {
        sends <= self.opts.handshake_resends
            && now.millis_since(first_sent) < u64::from(self.config.skew_secs) * 1000
    }

    fn acknowledged(&mut self, newly: Vec<MsgId>) {
        if newly.is_empty() {
            return;
        }
        self.stats.acknowledged += newly.len() as u64;
        if !self.queue.is_full() {
            self.queue_full_reported = false;
        }
        self.emit(Event::Acknowledged { msg_ids: newly });
    }

    fn on_answer(&mut self, now: Time, flight: InFlight, body: &[u8]) {
        let dev_now = self.device_time(now);
        match mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Hello(h) if flight.endpoint == Endpoint::Handshake => {
                let reason = (body.first() == Some(&msg_type::RETRY))
                    .then(|| Cookie::from_retry_message(body).ok().map(|c| c.reason))
                    .flatten();
                match h.hs.handle(dev_now, body) {
                    Ok(DeviceNext::Retry { handshake, hello }) => {
                        self.stats.hello_retries += 1;
                        if let Some(reason) = reason {
                            self.emit(Event::HelloRetried { reason });
                        }
                        // The retried hello goes out at once.
                        self.phase = Phase::Hello(Box::new(HelloState {
                            hs: handshake,
                            bytes: hello,
                            first_sent: now,
                            sends: 0,
                        }));
                    }
                    Ok(DeviceNext::Established(est)) => {
                        let est = *est;
                        let clock_adjusted_ms = est.gateway_time.map(|gt| {
                            let d = i128::from(gt.as_millis()) - i128::from(dev_now.as_millis());
                            d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
                        });
                        if let Some(d) = clock_adjusted_ms {
                            self.clock_offset_ms = self.clock_offset_ms.saturating_add(d);
                            self.stats.clock_adoptions += 1;
                        }
                        let mut session = Box::new(est.session);
                        self.sent.clear();
                        self.acked_epoch = 0;
                        let mut flight = est.finish;
                        let finish_len = flight.len();
                        if self.opts.piggyback {
                            // On the adopted clock, as the session is.
                            let dev_now = self.device_time(now);
                            let budget = self.request_budget;
                            // A session that cannot seal at its start sends M3 alone.
                            let _ = self.seal_into(&mut session, dev_now, &mut flight, budget);
                        }
                        self.phase = Phase::Finish(Box::new(FinishState {
                            session,
                            flight,
                            finish_len,
                            first_sent: now,
                            sends: 0,
                            clock_adjusted_ms,
                        }));
                    }
                    Err(e) => {
                        self.emit(Event::HandshakeFailed(e));
                        self.back_off(now, Cause::Handshake);
                    }
                }
            }
            Phase::Finish(mut f) if flight.endpoint == Endpoint::Handshake => {
                let out = self.process_acks(&mut f.session, dev_now, body);
                if out.valid == 0 {
                    // Not the gateway's authenticated answer to our M3: start over.
                    self.stats.bad_answers += 1;
                    self.sent.clear();
                    let e = out
                        .first_error
                        .unwrap_or(Error::Malformed(Malformed::Truncated));
                    self.emit(Event::HandshakeFailed(e));
                    self.back_off(now, Cause::Handshake);
                    return;
                }
                self.stats.handshakes += 1;
                self.auth_failed = 0;
                // Only acknowledged readings are progress: a gateway that completes
                // handshakes and then forgets the sessions must not get a handshake loop.
                if !out.newly.is_empty() {
                    self.backoff.reset();
                }
                self.connect_requested = false;
                self.emit(Event::HandshakeComplete {
                    session_id: f.session.id(),
                    suite: f.session.suite(),
                    clock_adjusted_ms: f.clock_adjusted_ms,
                });
                self.acknowledged(out.newly);
                match out.end {
                    Some(end) => self.lose_session(end),
                    None => self.phase = Phase::Open(f.session),
                }
            }
            Phase::Open(mut s) if flight.endpoint == Endpoint::Records => {
                let out = self.process_acks(&mut s, dev_now, body);
                self.phase = Phase::Open(s);
                let progress = !out.newly.is_empty();
                if progress {
                    self.backoff.reset();
                    self.acknowledged(out.newly);
                } else {
                    self.stats.bad_answers += 1;
                }
                match out.end {
                    Some(end) => {
                        // Past its lifetime (or the gateway closed it): a new session.
                        self.lose_session(end);
                        if !progress {
                            self.retry_soon(now, Cause::BadAnswer);
                        }
                    }
                    None if !progress => self.back_off(now, Cause::BadAnswer),
                    None => {}
                }
            }
            other => {
                // Cannot happen: the phase only changes with answers while a request is in
                // flight. Ignore the answer.
                self.phase = other;
                self.stats.stray_answers += 1;
            }
        }
    }

    /// AuthFailed to a handshake message: terminal, unless `auth_failed_retries` fresh
    /// handshakes are still allowed (the alert is unauthenticated, §4.5).
    fn handshake_auth_failed(&mut self, now: Time) {
        if self.auth_failed < self.opts.auth_failed_retries {
            self.auth_failed += 1;
            self.sent.clear();
            self.back_off(now, Cause::Refused(Refusal::AuthFailed));
        } else {
            self.terminal(Refusal::AuthFailed);
        }
    }

    fn on_refusal(&mut self, now: Time, r: Refusal) {
        self.stats.refusals[refusal_index(r)] += 1;
        let cause = Cause::Refused(r);
        match mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Hello(h) => match r {
                Refusal::NoCommonSuite => self.terminal(r),
                Refusal::AuthFailed => self.handshake_auth_failed(now),
                Refusal::Busy => {
                    // Nothing was kept for a refused hello: the same bytes may go again.
                    if self.may_resend(now, h.first_sent, h.sends) {
                        self.phase = Phase::Hello(h);
                    }
                    self.back_off(now, cause);
                }
                _ => self.back_off(now, cause),
            },
            Phase::Finish(f) => match r {
                Refusal::NoCommonSuite => self.terminal(r),
                Refusal::AuthFailed => self.handshake_auth_failed(now),
                Refusal::Busy => {
                    // The half-open handshake stays until it expires: M3 may go again.
                    if self.may_resend(now, f.first_sent, f.sends) {
                        self.phase = Phase::Finish(f);
                    } else {
                        self.sent.clear();
                    }
                    self.back_off(now, cause);
                }
                Refusal::UnknownSession | Refusal::SessionEnded => {
                    // The gateway lost the half-open handshake (§9.2): a new one.
                    self.sent.clear();
                    self.retry_soon(now, cause);
                }
                _ => {
                    self.sent.clear();
                    self.back_off(now, cause);
                }
            },
            Phase::Open(s) => match r {
                Refusal::Busy | Refusal::Replay => {
                    self.phase = Phase::Open(s);
                    self.back_off(now, cause);
                }
                Refusal::UnknownSession | Refusal::SessionEnded => {
                    self.lose_session(SessionEnd::Refused(r));
                    self.retry_soon(now, cause);
                }
                _ => {
                    // AuthFailed on records (a key epoch the gateway refuses, a broken
                    // record), Malformed, Stale: the session is not trusted to work. A new
                    // handshake tells a revoked or unknown device apart (terminal there).
                    self.lose_session(SessionEnd::Refused(r));
                    self.back_off(now, cause);
                }
            },
            other => {
                self.phase = other;
                self.stats.stray_answers += 1;
            }
        }
    }

    fn on_lost(&mut self, now: Time) {
        self.stats.transport_errors += 1;
        match mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Hello(h) => {
                if self.may_resend(now, h.first_sent, h.sends) {
                    self.phase = Phase::Hello(h);
                }
            }
            Phase::Finish(f) => {
                if self.may_resend(now, f.first_sent, f.sends) {
                    self.phase = Phase::Finish(f);
                } else {
                    self.sent.clear();
                }
            }
            other => self.phase = other,
        }
        self.back_off(now, Cause::Transport);
    }

    /// Seals queued readings, front first, into records appended to `out` as a batch,
    /// while `out` stays within `budget` bytes: at most `readings_per_record` readings and
    /// `MAX_PLAINTEXT` bytes a record, `records_per_request` records. Returns how many
    /// records; an error only if none could be sealed and the session cannot seal any more.
    fn seal_into(
        &mut self,
        session: &mut Session,
        now: Time,
        out: &mut Vec<u8>,
        budget: usize,
    ) -> Result<usize, SessionEnd> {
        let mut records = 0usize;
        let mut stop = None;
        let mut key_updates = Vec::new();
        // Wiped on drop; reserved once so growing never leaves a copy behind.
        let mut plain = Zeroizing::new(Vec::with_capacity(MAX_PLAINTEXT));
        let mut rec = Vec::new();
        let mut chosen: Vec<&Reading> = Vec::new();
        let mut queued = self.queue.iter().peekable();
        while records < self.opts.records_per_request {
            chosen.clear();
            let mut len = 0usize;
            while let Some(q) = queued.peek() {
                let n = chosen.len() + 1;
                if n > self.opts.readings_per_record
                    || varint_len(n as u64) + len + q.encoded_len > MAX_PLAINTEXT
                {
                    break;
                }
                len += q.encoded_len;
                chosen.push(&q.reading);
                queued.next();
            }
            if chosen.is_empty() {
                break;
            }
            let plain_len = varint_len(chosen.len() as u64) + len;
            let record_len = MAX_HEADER_LEN + plain_len + TAG_LEN;
            if out.len() + varint_len(record_len as u64) + record_len > budget {
                break;
            }
            // Never more than MAX_EPOCH_SKIP epochs past what the gateway is known to have
            // received (§8.5): its records would be refused.
            let (epoch, _) = session.epochs();
            let next_epoch = epoch + u64::from(session.key_update_due(now));
            if next_epoch > self.acked_epoch + MAX_EPOCH_SKIP {
                stop = Some(SessionEnd::EpochBudget);
                break;
            }
            plain.clear();
            put_varint(&mut plain, chosen.len() as u64);
            for r in &chosen {
                r.encode(&mut plain);
            }
            rec.clear();
            let seq = match session.seal(now, ContentType::Data, &plain, &mut rec) {
                Ok(seq) => seq,
                Err(e) => {
                    stop = Some(match e {
                        Error::Limit(Limit::SessionExpired) => SessionEnd::Expired,
                        _ => SessionEnd::Exhausted,
                    });
                    break;
                }
            };
            let (sealed_epoch, _) = session.epochs();
            if sealed_epoch != epoch {
                key_updates.push(sealed_epoch);
            }
            batch::push(out, &rec);
            self.sent.insert(
                seq,
                SentRecord {
                    epoch: sealed_epoch,
                    msg_ids: chosen.iter().map(|r| r.msg_id).collect(),
                },
            );
            self.stats.records_sent += 1;
            self.stats.readings_sent += chosen.len() as u64;
            records += 1;
        }
        drop(queued);
        // Numbers below the gateway's window can never be acknowledged again.
        let floor = session.next_seq().saturating_sub(WINDOW_SIZE);
        self.sent.remove_below(floor);
        for epoch in key_updates {
            self.stats.key_updates += 1;
            self.emit(Event::KeyUpdated { epoch });
        }
        match stop {
            Some(end) if records == 0 => Err(end),
            _ => Ok(records),
        }
    }

    /// Opens the acknowledgement records of an answer and forgets the readings they cover.
    fn process_acks(&mut self, session: &mut Session, now: Time, body: &[u8]) -> AckOutcome {
        let acks = open_acks(session, now, body);
        let mut newly = Vec::new();
        for &(first, last) in &acks.ranges {
            self.ack_range(first, last, &mut newly);
        }
        AckOutcome {
            valid: acks.valid,
            newly,
            end: acks.end,
            first_error: acks.first_error,
        }
    }

    /// Forgets the readings of the sealed records `first..=last`.
    fn ack_range(&mut self, first: u64, last: u64, newly: &mut Vec<MsgId>) {
        for rec in self.sent.remove_range(first, last) {
            self.acked_epoch = self.acked_epoch.max(rec.epoch);
            for id in rec.msg_ids {
                if self.queue.remove(id) {
                    newly.push(MsgId(id));
                }
            }
        }
    }
}
