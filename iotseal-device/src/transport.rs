//! How device messages reach the gateway: a trait, so HTTPS, MQTT and test impairments plug in.
//!
//! A transport only moves bytes: it returns the gateway's answer as it got it ([`Reply`]:
//! the HTTP status, body and `Retry-After`, or the MQTT payload) and leaves what it means to
//! the device engine ([`iotseal_device_core::Engine::handle_response`]), so a refusal is never
//! mistaken for a network failure.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use iotseal_device_core::{Endpoint, Response};
use iotseal_proto::Refusal;
use iotseal_proto::handshake::messages::decode_alert;

/// A boxed future (keeps [`Transport`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a request got no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The gateway answered with a refusal (HTTP status and alert). Only
    /// [`Transport::handshake`] and [`Transport::records`] give this;
    /// [`Transport::send`] returns every answer as a [`Reply`].
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

/// The gateway's answer to one request, as the transport got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// HTTP (docs/protocol.md §18.9).
    Http {
        /// The status code.
        status: u16,
        /// The body.
        body: Vec<u8>,
        /// The `Retry-After` header in seconds (with 429 and 503), if there was one.
        retry_after_secs: Option<u32>,
    },
    /// MQTT (§17): the payload published back with the request's correlation data (a
    /// refusal is the 2-byte alert as the whole payload).
    Payload(Vec<u8>),
}

impl Reply {
    /// An HTTP 200 answer.
    pub fn ok(body: Vec<u8>) -> Self {
        Self::Http {
            status: 200,
            body,
            retry_after_secs: None,
        }
    }

    /// The answer as the engine takes it.
    pub fn response(&self) -> Response<'_> {
        match self {
            Self::Http {
                status,
                body,
                retry_after_secs,
            } => Response::Status {
                status: *status,
                body,
                retry_after_secs: *retry_after_secs,
            },
            Self::Payload(p) => Response::Payload(p),
        }
    }

    /// The body, or the payload.
    pub fn body(&self) -> &[u8] {
        match self {
            Self::Http { body, .. } | Self::Payload(body) => body,
        }
    }

    /// The refusal this answer is, if it is one: the alert of a non-200 body (else by the
    /// status: 429/503 Busy, 404 UnknownSession, anything else but 408 and 5xx Malformed), or
    /// an alert as the whole MQTT payload. `Err`: no answer (408, a 5xx without an alert, an
    /// unknown alert code over MQTT). The same rules as the engine's (§18.9).
    pub fn refusal(&self) -> Result<Option<Refusal>, TransportError> {
        match self {
            Self::Http { status: 200, .. } => Ok(None),
            Self::Http { status, body, .. } => match decode_alert(body) {
                Some(r) => Ok(Some(r)),
                None => match status {
                    429 | 503 => Ok(Some(Refusal::Busy)),
                    404 => Ok(Some(Refusal::UnknownSession)),
                    408 | 500..=599 => Err(TransportError::Unavailable(format!("HTTP {status}"))),
                    _ => Ok(Some(Refusal::Malformed)),
                },
            },
            Self::Payload(p) => match p.as_slice() {
                [iotseal_proto::handshake::messages::msg_type::ALERT, code] => {
                    match Refusal::from_code(*code) {
                        Some(r) => Ok(Some(r)),
                        None => Err(TransportError::Unavailable(format!("unknown alert {code}"))),
                    }
                }
                _ => Ok(None),
            },
        }
    }

    /// The answer's body if it is no refusal (the shape of [`Transport::handshake`] and
    /// [`Transport::records`]).
    pub fn into_result(self) -> Result<Vec<u8>, TransportError> {
        match self.refusal()? {
            Some(r) => Err(TransportError::Refused(r)),
            None => Ok(match self {
                Self::Http { body, .. } | Self::Payload(body) => body,
            }),
        }
    }
}

/// Carries handshake messages and record batches to a gateway and returns its answers.
pub trait Transport: Send + Sync {
    /// Sends a request (M1, an M3 flight, or a batch of records) to `endpoint`; returns the
    /// answer whatever it says. `Err`: no answer (the request may or may not have arrived).
    fn send(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Reply, TransportError>>;

    /// Whether answers may wait in a store-and-forward hop (an MQTT broker, §17): the
    /// device then does not check the age of acknowledgements
    /// (`session.max_record_age_secs = None`). Default: no (HTTP).
    fn store_and_forward(&self) -> bool {
        false
    }

    /// Sends M1 or an M3 flight; returns the gateway's answer, a refusal as
    /// [`TransportError::Refused`].
    fn handshake(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(async move { self.send(Endpoint::Handshake, body).await?.into_result() })
    }

    /// Sends a batch of records; returns a batch of acknowledgement records, a refusal as
    /// [`TransportError::Refused`].
    fn records(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(async move { self.send(Endpoint::Records, body).await?.into_result() })
    }
}

impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn send(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Reply, TransportError>> {
        (**self).send(endpoint, body)
    }
    fn store_and_forward(&self) -> bool {
        (**self).store_and_forward()
    }
}
