//! How device messages reach the gateway: a trait, so HTTPS, MQTT and test impairments plug in.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use iotseal_proto::Refusal;

/// A boxed future (keeps [`Transport`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a request got no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The gateway answered with a refusal (HTTP status and alert).
    Refused(Refusal),
    /// No answer: connection failed, reset, or timed out. The request may or may not have
    /// been processed; retransmit.
    Unavailable(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(r) => write!(f, "refused: {r:?}"),
            Self::Unavailable(e) => write!(f, "unavailable: {e}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Carries handshake messages and record batches to a gateway and returns its answers.
pub trait Transport: Send + Sync {
    /// Sends M1 or an M3 flight; returns the gateway's answer.
    fn handshake(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, TransportError>>;
    /// Sends a batch of records; returns a batch of acknowledgement records.
    fn records(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, TransportError>>;
}

impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn handshake(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        (**self).handshake(body)
    }
    fn records(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        (**self).records(body)
    }
}
