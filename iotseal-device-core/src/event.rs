//! What the engine tells its driver: events and counters.

use alloc::vec::Vec;

use iotseal_proto::handshake::messages::RetryReason;
use iotseal_proto::{Refusal, Suite, Time};

use crate::queue::MsgId;

/// Something the driver may want to know, from [`crate::Engine::poll_event`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The gateway acknowledged M3 with an authenticated acknowledgement: the session is open.
    HandshakeComplete {
        /// The session id the gateway chose.
        session_id: u32,
        /// The negotiated suite.
        suite: Suite,
        /// The clock correction adopted from M2 (ms added to the device clock), when the
        /// round trip was short enough to adopt one (docs/protocol.md §10).
        clock_adjusted_ms: Option<i64>,
    },
    /// The gateway answered a hello with a Retry; the retried hello goes out at once.
    HelloRetried {
        /// Clock (the hello's time was out of skew), KeyShare (another share needed) or
        /// Address (the gateway is under load and wants proof that its answers reach the
        /// device; the retry also carries a clock hint and the chosen suite, so it is the only
        /// one, docs/protocol.md §4.2).
        reason: RetryReason,
    },
    /// The device refused the gateway's answer to a handshake message (an M2 that does not
    /// verify, a second Retry, a Retry that does not match, an answer to M3 that is no
    /// authenticated acknowledgement). The error says which check failed (for logs only).
    /// A new handshake starts after a backoff: an on-path attacker can cause this, the
    /// gateway cannot be blamed for it.
    HandshakeFailed(iotseal_proto::Error),
    /// The gateway acknowledged these readings; they are forgotten. Each message id is
    /// reported once, however many records carried it.
    Acknowledged {
        /// The readings, in acknowledgement order.
        msg_ids: Vec<MsgId>,
    },
    /// A refusal that retrying cannot fix (NoCommonSuite, or AuthFailed during the
    /// handshake: an unknown, revoked or mis-keyed device, or pins that do not match).
    /// The engine stops sending until [`crate::Engine::resume`]; readings stay queued.
    Refused(Refusal),
    /// The session ended; the next request handshakes again.
    SessionLost(SessionEnd),
    /// A key update: records are now sealed under this send epoch.
    KeyUpdated {
        /// The new epoch.
        epoch: u64,
    },
    /// A request failed; nothing is sent before `until` (the caller's clock).
    BackingOff {
        /// When [`crate::Engine::poll_transmit`] gives a request again.
        until: Time,
        /// What failed.
        cause: Cause,
    },
    /// A push was refused because the queue is full (reported once until there is room
    /// again; every refused push also returns [`crate::PushError::QueueFull`]).
    QueueFull,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The gateway refused a request of the session (UnknownSession, SessionEnded, or
    /// another refusal after which the session is not trusted to work: AuthFailed on
    /// records, Malformed, Stale).
    Refused(Refusal),
    /// Past its lifetime.
    Expired,
    /// Out of sequence numbers, or the session cannot seal any more.
    Exhausted,
    /// The send key would get more than 8 epochs ahead of the last one the gateway is known
    /// to have received (docs/protocol.md §8.5): a new session instead.
    EpochBudget,
    /// The gateway sent a Close record.
    Closed,
    /// The acknowledgement key reached its integrity limit (§8.5).
    ReceiveLimit,
    /// The driver dropped it ([`crate::Engine::drop_session`]).
    Dropped,
}

/// What made the engine back off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// The gateway refused (Busy, or a refusal that started a new handshake).
    Refused(Refusal),
    /// No answer (the driver called [`crate::Engine::handle_transport_error`], or the
    /// answer was an HTTP 5xx without an alert, or an unknown alert code).
    Transport,
    /// An answer arrived but acknowledged nothing that was sent (unreadable, or not
    /// authentic).
    BadAnswer,
    /// A handshake failed on the device side ([`Event::HandshakeFailed`]).
    Handshake,
}

/// Counters of one engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Handshakes started (first hellos).
    pub handshake_attempts: u64,
    /// Handshakes completed (M3 acknowledged).
    pub handshakes: u64,
    /// Retry messages handled.
    pub hello_retries: u64,
    /// Clock corrections adopted from M2.
    pub clock_adoptions: u64,
    /// Requests given to the driver.
    pub requests: u64,
    /// Handshake messages sent again with the same bytes.
    pub handshake_resends: u64,
    /// Data records sealed.
    pub records_sent: u64,
    /// Readings sealed into records (a reading sent twice counts twice).
    pub readings_sent: u64,
    /// Readings acknowledged (each once).
    pub acknowledged: u64,
    /// Requests that got no answer.
    pub transport_errors: u64,
    /// Answers that acknowledged nothing new, or whose records did not open.
    pub bad_answers: u64,
    /// Answers that arrived with no request in flight (ignored).
    pub stray_answers: u64,
    /// Refusals by code (index: the refusal code, 1 to 8; 0 is unused).
    pub refusals: [u64; 9],
    /// Send key updates.
    pub key_updates: u64,
    /// Sessions that ended other than by being replaced.
    pub sessions_lost: u64,
    /// Backoffs.
    pub backoffs: u64,
    /// Pushes refused because the queue was full.
    pub queue_full: u64,
    /// Events dropped because the driver did not poll them (non-acknowledgement events
    /// beyond 1024 waiting).
    pub events_dropped: u64,
}

impl Stats {
    /// How many times the gateway refused with `r`.
    pub fn refusals_of(&self, r: Refusal) -> u64 {
        self.refusals[refusal_index(r)]
    }
}

/// The refusal's code as an index into [`Stats::refusals`] (0 for a code this version does
/// not know).
pub(crate) fn refusal_index(r: Refusal) -> usize {
    match r {
        Refusal::Malformed => 1,
        Refusal::AuthFailed => 2,
        Refusal::Replay => 3,
        Refusal::UnknownSession => 4,
        Refusal::NoCommonSuite => 5,
        Refusal::Busy => 6,
        Refusal::SessionEnded => 7,
        Refusal::Stale => 8,
        _ => 0,
    }
}
