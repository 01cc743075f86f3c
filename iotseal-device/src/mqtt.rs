//! MQTT v5 to the gateway through a broker that sees only ciphertext: request/response with
//! a *Response Topic* and *Correlation Data* (`docs/protocol.md`, "MQTT binding").
//!
//! The transport connects with a random client id `CLIENT` (never the device id), subscribes
//! to its inbox `PREFIX/inbox/CLIENT`, and publishes handshake messages to `PREFIX/hs/CLIENT`
//! and record batches to `PREFIX/rec/CLIENT`, all with QoS 1. Each request carries the inbox as
//! its response topic and a fresh correlation value; the gateway's answer (Retry / M2, a batch
//! of acknowledgement records, or a 2-byte alert) comes back with the same value. An answer
//! that does not arrive within the timeout is [`TransportError::Unavailable`]: the SDK resends,
//! and the gateway answers a resent request from its answer cache or replay window.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use iotseal_device_core::Endpoint;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport as MqttNet};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::oneshot;

use crate::transport::{BoxFuture, Reply, Transport, TransportError};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Largest answer accepted from the broker, bytes.
const MAX_ANSWER: u32 = 1 << 20;

/// Where and how to reach the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttConfig {
    /// `mqtt://HOST[:PORT]` (plain, 1883) or `mqtts://HOST[:PORT]` (TLS, 8883).
    pub broker: String,
    /// Topic prefix; must match the gateway's `mqtt.topic_prefix`.
    pub topic_prefix: String,
    /// CA certificates (PEM) of the broker's certificate; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Broker login (user name, password), if the broker wants one.
    pub login: Option<(String, String)>,
    /// How long to wait for an answer (and for the connection), default 10 s.
    pub timeout: Duration,
    /// TCP_NODELAY on the connection to the broker (default on: every request is a small
    /// message waiting for a small answer, which Nagle's algorithm would hold back).
    pub tcp_nodelay: bool,
}

impl MqttConfig {
    /// Plain or TLS (by the URL's scheme) to `broker`, default prefix `iotseal/v1`.
    pub fn new(broker: &str) -> Self {
        Self {
            broker: broker.to_string(),
            topic_prefix: "iotseal/v1".into(),
            ca_file: None,
            login: None,
            timeout: Duration::from_secs(10),
            tcp_nodelay: true,
        }
    }
}

/// Splits `mqtt://HOST[:PORT]` / `mqtts://HOST[:PORT]` (or a bare `HOST:PORT`, plain) into
/// (tls, host, port).
pub(crate) fn parse_broker(url: &str) -> Result<(bool, String, u16), String> {
    let url = url.trim();
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if url.contains("://") {
        return Err(format!("{url:?}: the scheme must be mqtt:// or mqtts://"));
    } else {
        (false, url)
    };
    let rest = rest.trim_end_matches('/');
    let default_port = if tls { 8883 } else { 1883 };
    let bad_port = || format!("{url:?}: bad port");
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, p.parse().map_err(|_| bad_port())?),
            None if after.is_empty() => (h, default_port),
            None => return Err(format!("{url:?}: unexpected {after:?}")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad_port())?),
            None => (rest, default_port),
        }
    };
    if host.is_empty() || host.contains(['/', '?', '@']) {
        return Err(format!(
            "{url:?}: expected mqtt://HOST:PORT or mqtts://HOST:PORT"
        ));
    }
    Ok((tls, host.to_string(), port))
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(p) => {
            for c in
                CertificateDer::pem_file_iter(p).map_err(|e| format!("{}: {e}", p.display()))?
            {
                roots.add(c.map_err(|e| format!("{}: {e}", p.display()))?)?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    if roots.is_empty() {
        return Err("no CA certificates to verify the broker with".into());
    }
    let cfg = rustls::ClientConfig::builder_with_provider(crate::pin::tls_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

type Waiters = Mutex<HashMap<u64, oneshot::Sender<Bytes>>>;

/// A device's MQTT connection to the broker, carrying requests to the gateway.
pub struct MqttTransport {
    client: AsyncClient,
    waiters: Arc<Waiters>,
    next: AtomicU64,
    hs_topic: String,
    rec_topic: String,
    inbox: String,
    timeout: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MqttTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTransport")
            .field("inbox", &self.inbox)
            .finish_non_exhaustive()
    }
}

impl Drop for MqttTransport {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        // The event loop would send the DISCONNECT on its next poll; without it the broker
        // notices the closed connection.
        self.task.abort();
    }
}

impl MqttTransport {
    /// Connects to the broker with a random client id and subscribes to the inbox; returns
    /// once subscribed (or fails after `cfg.timeout`). The connection is kept and re-opened
    /// (with backoff) if it drops.
    pub async fn connect(cfg: &MqttConfig) -> Result<Self, Error> {
        let (tls, host, port) = parse_broker(&cfg.broker)?;
        let p = &cfg.topic_prefix;
        if p.is_empty() || p.ends_with('/') || p.contains(['+', '#']) {
            return Err(
                format!("topic prefix {p:?}: non-empty, no wildcards, no trailing '/'").into(),
            );
        }
        // 23 characters, the most every broker must accept (MQTT 3.1.1 §3.1.3.1); 72 random bits.
        let client_id = format!(
            "iots-{}",
            hex::encode(crate::default_provider().random_vec(9)?)
        );
        let mut opts = MqttOptions::new(client_id.clone(), host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_start(true);
        opts.set_max_packet_size(Some(MAX_ANSWER));
        opts.set_connection_timeout(cfg.timeout.as_secs().max(1));
        // Small requests waiting for small answers: no Nagle delay (set after the connection
        // timeout, which lives in the same network options).
        let mut net = opts.network_options();
        net.set_tcp_nodelay(cfg.tcp_nodelay);
        opts.set_network_options(net);
        if let Some((u, pw)) = &cfg.login {
            opts.set_credentials(u.clone(), pw.clone());
        }
        if tls {
            let c = tls_config(cfg.ca_file.as_deref())?;
            opts.set_transport(MqttNet::Tls(TlsConfiguration::Rustls(c)));
        }
        let inbox = format!("{p}/inbox/{client_id}");
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let waiters: Arc<Waiters> = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(poll(
            eventloop,
            client.clone(),
            inbox.clone(),
            waiters.clone(),
            ready_tx,
        ));
        let transport = Self {
            client,
            waiters,
            next: AtomicU64::new(1),
            hs_topic: format!("{p}/hs/{client_id}"),
            rec_topic: format!("{p}/rec/{client_id}"),
            inbox,
            timeout: cfg.timeout,
            task,
        };
        match tokio::time::timeout(cfg.timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(transport),
            Ok(Ok(Err(e))) => Err(format!("MQTT broker {}: {e}", cfg.broker).into()),
            _ => Err(format!(
                "MQTT broker {}: no connection within {:?}",
                cfg.broker, cfg.timeout
            )
            .into()),
        }
    }

    /// Sets how long a request waits for its answer (default: the config's timeout).
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The topic answers arrive on.
    pub fn inbox(&self) -> &str {
        &self.inbox
    }

    async fn request(&self, topic: &str, body: Vec<u8>) -> Result<Reply, TransportError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id, tx);
        let props = PublishProperties {
            response_topic: Some(self.inbox.clone()),
            correlation_data: Some(Bytes::copy_from_slice(&id.to_be_bytes())),
            ..Default::default()
        };
        let sent = self
            .client
            .publish_bytes_with_properties(topic, QoS::AtLeastOnce, false, Bytes::from(body), props)
            .await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(self.timeout, rx).await,
            Err(e) => {
                lock(&self.waiters).remove(&id);
                return Err(TransportError::Unavailable(format!("MQTT: {e}")));
            }
        };
        lock(&self.waiters).remove(&id);
        match answer {
            Ok(Ok(payload)) => Ok(Reply::Payload(payload.to_vec())),
            _ => Err(TransportError::Unavailable(
                "MQTT: no answer (timeout)".into(),
            )),
        }
    }
}

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Bytes>>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drives the connection: (re)subscribes the inbox after each CONNACK and hands every answer
/// to the request waiting for its correlation value (late or repeated answers are dropped).
async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    inbox: String,
    waiters: Arc<Waiters>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut failures = 0u32;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                // Queued from another task: the request queue drains only while this polls.
                let (c, t) = (client.clone(), inbox.clone());
                tokio::spawn(async move {
                    let _ = c.subscribe(t, QoS::AtLeastOnce).await;
                });
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let ok = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                if let Some(r) = ready.take() {
                    let _ = r.send(if ok {
                        Ok(())
                    } else {
                        Err(format!("subscription refused: {:?}", ack.return_codes))
                    });
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic.as_ref() != inbox.as_bytes() {
                    continue;
                }
                let id = p
                    .properties
                    .as_ref()
                    .and_then(|pp| pp.correlation_data.as_ref())
                    .and_then(|c| <[u8; 8]>::try_from(c.as_ref()).ok())
                    .map(u64::from_be_bytes);
                if let Some(id) = id
                    && let Some(tx) = lock(&waiters).remove(&id)
                {
                    let _ = tx.send(p.payload);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(r) = ready.take_if(|_| failures >= 2) {
                    let _ = r.send(Err(e.to_string()));
                }
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, "MQTT connection failed; reconnecting");
                tokio::time::sleep(Duration::from_millis(50u64 << failures.min(6))).await;
            }
        }
    }
}

impl Transport for MqttTransport {
    fn send(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Reply, TransportError>> {
        let topic = match endpoint {
            Endpoint::Handshake => &self.hs_topic,
            Endpoint::Records => &self.rec_topic,
        };
        Box::pin(self.request(topic, body))
    }

    fn store_and_forward(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_broker_urls() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1883").unwrap(),
            (false, "127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_broker("mqtts://broker.example").unwrap(),
            (true, "broker.example".into(), 8883)
        );
        assert_eq!(
            parse_broker("[::1]:1884").unwrap(),
            (false, "::1".into(), 1884)
        );
        assert_eq!(
            parse_broker("localhost:1883").unwrap(),
            (false, "localhost".into(), 1883)
        );
        for bad in [
            "http://x:1",
            "mqtt://:1883",
            "mqtt://h:port",
            "mqtt://u@h:1",
            "[::1",
        ] {
            assert!(parse_broker(bad).is_err(), "{bad}");
        }
    }
}
