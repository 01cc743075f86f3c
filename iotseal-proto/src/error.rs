//! The one error type of the core, with categories, and its mapping to what a peer may see.
//!
//! Variants tell causes apart for logs and counters ([`Error::reason`]). What goes back to a
//! peer is only [`Error::refusal`], which folds every authentication failure (bad signature,
//! bad Finished, failed decryption, unknown or revoked identity) into one code, so the answer
//! is no oracle. Never send `Error`'s `Display` text to a peer.

use core::fmt;

use crate::crypto::CryptoError;

/// Everything that can go wrong in the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not parse.
    Malformed(Malformed),
    /// The peer sent something well-formed but wrong (see [`PeerMisbehaved`]).
    PeerMisbehaved(PeerMisbehaved),
    /// An authentication check failed (see [`AuthFailure`]).
    AuthFailed(AuthFailure),
    /// A message or record was seen before.
    Replay,
    /// A timestamp is older than the allowed skew.
    Stale,
    /// A timestamp is further in the future than the allowed skew.
    Future,
    /// No session has this identifier (expired, or the gateway restarted).
    UnknownSession,
    /// No offered suite is supported.
    UnsupportedSuite,
    /// A suite or key is supported but refused by policy.
    PolicyRefused,
    /// A bound was reached (see [`Limit`]).
    Limit(Limit),
    /// The caller used the API wrongly.
    ApiMisuse(ApiMisuse),
    /// A backend error outside the cases above (for example the random source failed).
    Crypto(CryptoError),
}

/// Why bytes did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// Fewer bytes than a field needs.
    Truncated,
    /// Bytes after the end of a message.
    TrailingData,
    /// A length field above its bound.
    TooLong,
    /// A varint in a longer encoding than needed.
    NonMinimal,
    /// An unknown message or content type.
    UnknownType,
    /// A protocol version we do not speak.
    UnsupportedVersion,
    /// A field with a wrong length for the negotiated algorithm.
    BadLength,
    /// An unknown algorithm code.
    UnknownAlgorithm,
    /// A field with a value outside its range.
    BadValue,
}

/// A well-formed message that breaks the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// The gateway chose a suite the device did not offer.
    SuiteNotOffered,
    /// A second retry request in one handshake.
    DoubleRetry,
    /// A retried hello whose offers differ from the cookie's or lack its suite.
    RetryMismatch,
    /// The key share does not belong to the chosen key exchange.
    WrongKeyShare,
    /// A record epoch that is neither the current, the previous nor the next one.
    BadEpoch,
    /// A record content type not allowed in this direction.
    UnexpectedContent,
    /// An acknowledgement of a sequence number never sent.
    AckOfUnsent,
}

/// Which authentication check failed. All map to one refusal code on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// A transcript signature did not verify.
    BadSignature,
    /// A Finished MAC did not verify.
    BadFinished,
    /// An AEAD tag or record MAC did not verify.
    DecryptFailed,
    /// The first hello's MAC (keyed from the gateway's public key) did not verify.
    BadHelloMac,
    /// A retry cookie did not verify or expired.
    BadCookie,
    /// The gateway key id is not pinned, or the device id is not registered.
    UnknownIdentity,
    /// The device is revoked.
    Revoked,
    /// The device's registered key or suite rules do not allow the negotiated suite. Reported
    /// to the peer like any other authentication failure, so M3 is no registry oracle.
    DevicePolicy,
    /// The peer's key share was invalid.
    BadKeyShare,
}

/// A bound that was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// The half-open handshake table is full (and the hello's source holds at least as many
    /// entries as any other, so it may evict none).
    HalfOpenFull,
    /// The hello's source holds as many half-open handshakes as one source may
    /// (`GatewayConfig::max_half_open_per_source`).
    HalfOpenPerSource,
    /// Under load, a retried hello whose cookie is a Clock or KeyShare cookie, not bound to
    /// its source: only one retry per handshake, so the device must start again (and gets an
    /// Address retry).
    SourceUnproven,
    /// The hello nonce cache is full.
    NonceCacheFull,
    /// The sequence number space of this session is used up: handshake again.
    SequenceExhausted,
    /// Too many records failed authentication under one key (RFC 9147 §4.5.3).
    IntegrityLimit,
    /// The session is past its absolute lifetime.
    SessionExpired,
    /// A session-id partitioning with more partitions than
    /// [`crate::handshake::MAX_PARTITIONS`].
    TooManyPartitions,
}

impl Limit {
    /// Whether this bound answers Busy (a gateway table is full: try later), rather than
    /// ending a session.
    pub fn answers_busy(self) -> bool {
        matches!(
            self,
            Self::HalfOpenFull
                | Self::HalfOpenPerSource
                | Self::SourceUnproven
                | Self::NonceCacheFull
                | Self::TooManyPartitions
        )
    }
}

/// Wrong use of the API by the caller (never caused by a peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// A configuration has no suites, no pins or no identity.
    EmptyConfig,
    /// A plaintext larger than [`crate::record::MAX_PLAINTEXT`].
    PlaintextTooLarge,
    /// A device identifier longer than [`crate::handshake::MAX_DEVICE_ID`] or empty.
    BadDeviceId,
    /// An identity key whose algorithm differs from the one configured.
    KeyAlgorithmMismatch,
    /// A session-id partitioning that owns no partition.
    NoOwnedPartition,
    /// A session-id partitioning into zero partitions, or owning a partition not below the
    /// partition count.
    BadPartition,
    /// A commit step given another message than its check step
    /// ([`crate::handshake::HandshakeServer::commit_finish`]).
    CommitMismatch,
}

/// What a peer is told: one byte, the same for every authentication failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Refusal {
    /// The message did not parse.
    Malformed = 1,
    /// Authentication failed (any reason).
    AuthFailed = 2,
    /// Replay (a hello nonce or record seen before, or below the window).
    Replay = 3,
    /// The session is unknown: handshake again.
    UnknownSession = 4,
    /// No acceptable suite.
    NoCommonSuite = 5,
    /// Busy: a table is full, try later.
    Busy = 6,
    /// The session ended: handshake again.
    SessionEnded = 7,
    /// A hello or record whose time is outside the allowed skew or age.
    Stale = 8,
}

impl Refusal {
    /// The refusal for a wire byte.
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Self::Malformed,
            2 => Self::AuthFailed,
            3 => Self::Replay,
            4 => Self::UnknownSession,
            5 => Self::NoCommonSuite,
            6 => Self::Busy,
            7 => Self::SessionEnded,
            8 => Self::Stale,
            _ => return None,
        })
    }

    /// Whether the device should start a new handshake after this refusal.
    pub fn needs_new_handshake(self) -> bool {
        matches!(self, Self::UnknownSession | Self::SessionEnded)
    }
}

impl Error {
    /// What may be told to the peer.
    pub fn refusal(&self) -> Refusal {
        match self {
            Self::Malformed(_) => Refusal::Malformed,
            Self::PeerMisbehaved(_) | Self::AuthFailed(_) | Self::Crypto(_) => Refusal::AuthFailed,
            Self::Replay => Refusal::Replay,
            Self::Stale | Self::Future => Refusal::Stale,
            Self::UnknownSession => Refusal::UnknownSession,
            Self::UnsupportedSuite | Self::PolicyRefused => Refusal::NoCommonSuite,
            Self::Limit(l) if l.answers_busy() => Refusal::Busy,
            Self::Limit(_) => Refusal::SessionEnded,
            Self::ApiMisuse(_) => Refusal::Busy,
        }
    }

    /// A short, stable reason for logs and metric labels (`replay`, `stale`, `tamper`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::PeerMisbehaved(_) => "protocol",
            Self::AuthFailed(AuthFailure::UnknownIdentity) => "unknown",
            Self::AuthFailed(AuthFailure::Revoked) => "revoked",
            Self::AuthFailed(AuthFailure::DevicePolicy) => "policy",
            Self::AuthFailed(_) | Self::Crypto(_) => "tamper",
            Self::Replay => "replay",
            Self::Stale => "stale",
            Self::Future => "future",
            Self::UnknownSession => "unknown_session",
            Self::UnsupportedSuite | Self::PolicyRefused => "policy",
            // Answered Busy (a table is full; try later): counted as such.
            Self::Limit(l) if l.answers_busy() => "busy",
            Self::Limit(_) => "limit",
            Self::ApiMisuse(_) => "api_misuse",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "malformed message: {m:?}"),
            Self::PeerMisbehaved(p) => write!(f, "peer misbehaved: {p:?}"),
            Self::AuthFailed(a) => write!(f, "authentication failed: {a:?}"),
            Self::Replay => f.write_str("replayed message"),
            Self::Stale => f.write_str("timestamp too old"),
            Self::Future => f.write_str("timestamp in the future"),
            Self::UnknownSession => f.write_str("unknown session"),
            Self::UnsupportedSuite => f.write_str("no supported suite"),
            Self::PolicyRefused => f.write_str("refused by policy"),
            Self::Limit(l) => write!(f, "limit reached: {l:?}"),
            Self::ApiMisuse(m) => write!(f, "API misuse: {m:?}"),
            Self::Crypto(c) => write!(f, "crypto: {c}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

macro_rules! display_via_debug {
    ($($t:ty),+) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
        #[cfg(feature = "std")]
        impl std::error::Error for $t {}
    )+};
}

display_via_debug!(Malformed, PeerMisbehaved, AuthFailure, Limit, ApiMisuse);

impl From<Malformed> for Error {
    fn from(m: Malformed) -> Self {
        Self::Malformed(m)
    }
}

impl From<PeerMisbehaved> for Error {
    fn from(p: PeerMisbehaved) -> Self {
        Self::PeerMisbehaved(p)
    }
}

impl From<AuthFailure> for Error {
    fn from(a: AuthFailure) -> Self {
        Self::AuthFailed(a)
    }
}

impl From<Limit> for Error {
    fn from(l: Limit) -> Self {
        Self::Limit(l)
    }
}

impl From<ApiMisuse> for Error {
    fn from(m: ApiMisuse) -> Self {
        Self::ApiMisuse(m)
    }
}

impl From<CryptoError> for Error {
    fn from(c: CryptoError) -> Self {
        match c {
            CryptoError::BadSignature => Self::AuthFailed(AuthFailure::BadSignature),
            CryptoError::DecryptFailed => Self::AuthFailed(AuthFailure::DecryptFailed),
            CryptoError::InvalidKey | CryptoError::ZeroSharedSecret => {
                Self::AuthFailed(AuthFailure::BadKeyShare)
            }
            other => Self::Crypto(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_auth_failure_looks_the_same_to_the_peer() {
        for a in [
            AuthFailure::BadSignature,
            AuthFailure::BadFinished,
            AuthFailure::DecryptFailed,
            AuthFailure::BadHelloMac,
            AuthFailure::BadCookie,
            AuthFailure::UnknownIdentity,
            AuthFailure::Revoked,
            AuthFailure::BadKeyShare,
            AuthFailure::DevicePolicy,
        ] {
            assert_eq!(Error::AuthFailed(a).refusal(), Refusal::AuthFailed);
        }
        for c in 0..=255u8 {
            if let Some(r) = Refusal::from_code(c) {
                assert_eq!(r as u8, c);
            }
        }
    }
}
