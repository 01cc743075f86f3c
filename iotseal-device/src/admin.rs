//! A client of the gateway's admin API (JSON over the same pinned HTTPS connection):
//! register, list, revoke devices and query their readings.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::files::GatewayPins;
use crate::https::connector;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A stored reading as the gateway's readings endpoint returns it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct StoredReadingJson {
    /// Message id.
    pub msg_id: u64,
    /// Device time, ms.
    pub device_time_ms: u64,
    /// Payload, hex (the encoded reading).
    pub payload_hex: String,
}

/// Admin API client.
#[derive(Clone, Debug)]
pub struct AdminClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    token: String,
}

impl AdminClient {
    /// A client for the gateway named by `pins`, authenticating with `token`.
    pub fn new(pins: &GatewayPins, token: &str) -> Result<Self, Error> {
        Ok(Self {
            client: connector(pins)?,
            base: pins.url.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Vec<u8>), Error> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))?;
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 256 << 20)
            .collect()
            .await?
            .to_bytes();
        Ok((status, body.to_vec()))
    }

    /// Registers a device.
    pub async fn add_device(
        &self,
        id: &str,
        alg: iotseal_proto::SigAlg,
        public_key_hex: &str,
    ) -> Result<(), Error> {
        let (s, b) = self
            .call(
                Method::POST,
                "/v1/devices",
                Some(json!({"id": id, "alg": alg.name(), "public_key": public_key_hex})),
            )
            .await?;
        if !s.is_success() {
            return Err(format!("register {id}: {s} {}", String::from_utf8_lossy(&b)).into());
        }
        Ok(())
    }

    /// Revokes a device.
    pub async fn revoke(&self, id: &str) -> Result<(), Error> {
        let (s, b) = self
            .call(Method::POST, &format!("/v1/devices/{id}/revoke"), None)
            .await?;
        if !s.is_success() {
            return Err(format!("revoke {id}: {s} {}", String::from_utf8_lossy(&b)).into());
        }
        Ok(())
    }

    /// Every device, as JSON.
    pub async fn devices(&self) -> Result<Value, Error> {
        let (s, b) = self.call(Method::GET, "/v1/devices", None).await?;
        if !s.is_success() {
            return Err(format!("list: {s}").into());
        }
        Ok(serde_json::from_slice(&b)?)
    }

    /// Readings of a device (all of them, paging by time if the gateway caps a page).
    pub async fn readings(&self, id: &str) -> Result<Vec<StoredReadingJson>, Error> {
        let (s, b) = self
            .call(
                Method::GET,
                &format!("/v1/devices/{id}/readings?limit=100000&format=json"),
                None,
            )
            .await?;
        if !s.is_success() {
            return Err(format!("readings {id}: {s}").into());
        }
        let v: Value = serde_json::from_slice(&b)?;
        let arr = if v.is_array() {
            v
        } else {
            v.get("readings").cloned().unwrap_or(Value::Null)
        };
        Ok(serde_json::from_value(arr)?)
    }

    /// The gateway's /metrics text.
    pub async fn metrics(&self) -> Result<String, Error> {
        let (_, b) = self.call(Method::GET, "/metrics", None).await?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
}
