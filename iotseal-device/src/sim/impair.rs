//! Network impairments as a transport wrapper: added latency, lost requests, lost answers
//! (the gateway processed the request but the device never hears back), disconnects.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rng::SimRng;
use iotseal_device_core::Endpoint;

use crate::transport::{BoxFuture, Reply, Transport, TransportError};

/// Impairment settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impairments {
    /// Added latency per request, milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Random extra latency up to this many milliseconds.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Probability a request is lost before the gateway sees it.
    #[serde(default)]
    pub drop_request: f64,
    /// Probability an answer is lost after the gateway processed the request.
    #[serde(default)]
    pub drop_response: f64,
    /// Probability a device loses its session (a reboot or a long disconnect) per flush.
    #[serde(default)]
    pub disconnect: f64,
}

impl Impairments {
    /// Checks the probabilities.
    pub fn validate(&self) -> Result<(), String> {
        for (n, p) in [
            ("drop_request", self.drop_request),
            ("drop_response", self.drop_response),
            ("disconnect", self.disconnect),
        ] {
            if !(0.0..=0.9).contains(&p) {
                return Err(format!("network.{n} must be in [0, 0.9]"));
            }
        }
        if self.latency_ms > 10_000 || self.jitter_ms > 10_000 {
            return Err("network latency at most 10000 ms".into());
        }
        Ok(())
    }

    /// Whether anything is impaired.
    pub fn is_active(&self) -> bool {
        *self != Self::default()
    }
}

/// A transport with impairments.
#[derive(Debug)]
pub struct Impaired<T> {
    inner: T,
    cfg: Impairments,
    rng: Mutex<SimRng>,
}

impl<T: Transport> Impaired<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, cfg: Impairments, seed: u64) -> Self {
        Self {
            inner,
            cfg,
            rng: Mutex::new(SimRng::new(seed)),
        }
    }

    fn roll(&self) -> (Duration, bool, bool) {
        let mut r = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let jitter = if self.cfg.jitter_ms > 0 {
            r.next_u64() % self.cfg.jitter_ms
        } else {
            0
        };
        (
            Duration::from_millis(self.cfg.latency_ms + jitter),
            r.chance(self.cfg.drop_request),
            r.chance(self.cfg.drop_response),
        )
    }

    async fn go(&self, endpoint: Endpoint, body: Vec<u8>) -> Result<Reply, TransportError> {
        let (delay, drop_req, drop_resp) = self.roll();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if drop_req {
            return Err(TransportError::Unavailable(
                "impairment: request lost".into(),
            ));
        }
        let r = self.inner.send(endpoint, body).await;
        if drop_resp && r.is_ok() {
            return Err(TransportError::Unavailable(
                "impairment: answer lost".into(),
            ));
        }
        r
    }
}

impl<T: Transport> Transport for Impaired<T> {
    fn send(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Reply, TransportError>> {
        Box::pin(self.go(endpoint, body))
    }

    fn store_and_forward(&self) -> bool {
        self.inner.store_and_forward()
    }
}
