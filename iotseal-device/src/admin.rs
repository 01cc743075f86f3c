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

/// A stored reading as the gateway's readings endpoint returns it (docs/openapi.json,
/// `StoredReading`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct StoredReadingJson {
    /// Message id: a decimal string in the JSON (exact up to 2^64 − 1; a JSON number, as
    /// gateways before the string form wrote it, is accepted too).
    #[serde(deserialize_with = "msg_id")]
    pub msg_id: u64,
    /// Device time, ms.
    pub device_time_ms: u64,
    /// Payload, hex (the encoded reading).
    pub payload_hex: String,
    /// The values, (sensor name, value) in payload order: NaN and ±infinity come as the strings
    /// `"NaN"`, `"Infinity"` and `"-Infinity"` (a `null`, as older gateways wrote all three,
    /// reads as NaN).
    #[serde(default, deserialize_with = "values")]
    pub values: Vec<(String, f64)>,
}

/// A message id: a decimal string, or a JSON number.
fn msg_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    match Id::deserialize(d)? {
        Id::Number(n) => Ok(n),
        Id::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map_err(|_| serde::de::Error::custom("msg_id out of range")),
        Id::Text(_) => Err(serde::de::Error::custom("msg_id: not a decimal string")),
    }
}

/// Values: `[name, value]` pairs, a value a number or one of `"NaN"`, `"Infinity"`,
/// `"-Infinity"` (or `null`).
fn values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Number(f64),
        Text(String),
        Null(()),
    }
    Vec::<(String, Value)>::deserialize(d)?
        .into_iter()
        .map(|(name, v)| {
            let v = match v {
                Value::Number(v) => v,
                Value::Null(()) => f64::NAN,
                Value::Text(t) => match t.as_str() {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    _ => {
                        return Err(serde::de::Error::custom(
                            "a value: a number, NaN, Infinity or -Infinity",
                        ));
                    }
                },
            };
            Ok((name, v))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::StoredReadingJson;

    fn row(msg_id: &str, values: &str) -> String {
        format!(
            r#"{{"device_id":"d","msg_id":{msg_id},"device_time_ms":1,"received_ms":2,"payload_hex":"00","values":{values}}}"#
        )
    }

    #[test]
    fn message_ids_are_read_exactly_from_strings_and_numbers() {
        for (json, want) in [
            (r#""4611686018427387903""#, (1u64 << 62) - 1),
            (r#""9007199254740993""#, (1 << 53) + 1),
            (r#""0""#, 0),
            ("17", 17),
        ] {
            let r: StoredReadingJson = serde_json::from_str(&row(json, "[]")).unwrap();
            assert_eq!(r.msg_id, want, "{json}");
        }
        for bad in [
            r#""""#,
            r#""-1""#,
            r#""1e3""#,
            r#"" 1""#,
            r#""18446744073709551616""#,
            "null",
            "1.5",
        ] {
            assert!(
                serde_json::from_str::<StoredReadingJson>(&row(bad, "[]")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn non_finite_values_are_read_from_their_names() {
        let r: StoredReadingJson = serde_json::from_str(&row(
            r#""1""#,
            r#"[["a","NaN"],["b","Infinity"],["c","-Infinity"],["d",21.3],["e",40],["f",null]]"#,
        ))
        .unwrap();
        let v: Vec<f64> = r.values.iter().map(|(_, v)| *v).collect();
        assert!(v[0].is_nan() && v[5].is_nan());
        assert_eq!(&v[1..5], &[f64::INFINITY, f64::NEG_INFINITY, 21.3, 40.0]);
        assert_eq!(r.values[3].0, "d");
        for bad in [
            r#"[["a","inf"]]"#,
            r#"[["a","nan"]]"#,
            r#"[["a",true]]"#,
            r#"[["a"]]"#,
        ] {
            assert!(
                serde_json::from_str::<StoredReadingJson>(&row(r#""1""#, bad)).is_err(),
                "{bad}"
            );
        }
        // Without `values` (an older shape): none.
        let r: StoredReadingJson =
            serde_json::from_str(r#"{"msg_id":"3","device_time_ms":1,"payload_hex":"00"}"#)
                .unwrap();
        assert!(r.values.is_empty());
    }
}
