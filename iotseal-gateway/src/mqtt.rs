//! The MQTT binding: the gateway is one more client of an (untrusted) MQTT v5 broker. It
//! subscribes with QoS 1 to the request topics, processes every message exactly as the HTTP
//! binding does ([`crate::http`]'s transport-independent handlers: answer cache, replay window,
//! acknowledgements only after the commit) and publishes the answer to the request's MQTT v5
//! *Response Topic* with its *Correlation Data*.
//!
//! | Topic                      | Publisher | Payload |
//! |----------------------------|-----------|---------|
//! | `PREFIX/hs/CLIENT`         | device    | M1, or M3 + batch of records |
//! | `PREFIX/rec/CLIENT`        | device    | batch of records |
//! | `PREFIX/inbox/CLIENT`      | gateway   | the answer: Retry / M2, a batch of ack records, or a 2-byte alert |
//!
//! `CLIENT` is the device transport's random MQTT client id (never the device id: the broker
//! must not learn identities). The gateway answers only to a response topic under
//! `PREFIX/inbox/` (one level, no wildcards), so nobody can make it publish elsewhere.
//!
//! In cluster mode every node subscribes through the MQTT v5 shared subscription
//! `$share/<cluster prefix>/PREFIX/hs/+` (and `.../rec/+`), so the broker hands each request
//! to one node; a node that does not own the request's partition forwards it over NATS to the
//! owner exactly as an HTTP request ([`crate::cluster`]) and publishes the owner's answer.
//! Each node's client id is `<client_id>-<node id>`.
//!
//! Requests are acknowledged to the broker (PUBACK) only once processed and answered: a
//! gateway that stops in between gets them again (its broker session persists for
//! `mqtt.session_expiry_secs`); a redelivered request is answered from the answer cache or the
//! replay window and stored once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use iotseal_proto::Refusal;
use iotseal_proto::handshake::SourceKey;
use iotseal_proto::handshake::messages::encode_alert;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::GatewayError;
use crate::pipeline::{self, Binding, Pipeline, Request};
pub use crate::settings::BrokerUrl;

/// Longest correlation data echoed back, bytes.
const MAX_CORRELATION: usize = 64;
/// Longest response topic accepted, bytes.
const MAX_RESPONSE_TOPIC: usize = 256;

/// A TLS 1.2/1.3 client configuration (aws-lc) trusting the CAs in `ca_file`, or the
/// system's roots without one.
pub fn tls_client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(p) => {
            for c in
                CertificateDer::pem_file_iter(p).map_err(|e| format!("{}: {e}", p.display()))?
            {
                let c = c.map_err(|e| format!("{}: {e}", p.display()))?;
                roots.add(c).map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    if roots.is_empty() {
        return Err("no CA certificates to verify the broker with".into());
    }
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The topics the gateway uses.
#[derive(Clone, Debug)]
struct Topics {
    hs: String,
    rec: String,
    inbox: String,
}

impl Topics {
    fn new(prefix: &str) -> Self {
        Self {
            hs: format!("{prefix}/hs/"),
            rec: format!("{prefix}/rec/"),
            inbox: format!("{prefix}/inbox/"),
        }
    }

    /// A response topic the gateway may publish to: one level under the inbox, no wildcards.
    fn answerable(&self, t: &str) -> bool {
        t.len() <= MAX_RESPONSE_TOPIC
            && t.strip_prefix(&self.inbox)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(['/', '+', '#', '\0']))
    }

    /// The source key of a request answered to the (answerable) response topic `t`:
    /// `SHA-256(X)[0..16]` of its client level `X`, where the answer (and so an Address
    /// cookie) goes (docs/protocol.md §17).
    fn source(&self, sh: &Pipeline, t: &str) -> Option<SourceKey> {
        let level = t.strip_prefix(&self.inbox)?;
        Some(SourceKey::from_label(&sh.provider, level.as_bytes()))
    }
}

enum Kind {
    Handshake,
    Records,
}

/// Connects to the broker, subscribes, and serves until `shutdown`. Returns once subscribed
/// (or after a few seconds if the broker cannot be reached yet: the worker keeps trying).
///
/// `node_id`: the cluster node's id (cluster mode: each node needs its own MQTT client id,
/// and the nodes share one subscription).
pub(crate) async fn start(
    sh: Arc<Pipeline>,
    node_id: Option<String>,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, GatewayError> {
    let m = &sh.settings.mqtt;
    let url = BrokerUrl::parse(&m.broker).map_err(GatewayError::Config)?;
    // Cluster nodes share one configuration; each needs its own MQTT client id (a broker
    // disconnects the older of two clients with one id).
    let client_id = match &node_id {
        Some(n) => format!("{}-{n}", m.client_id),
        None => m.client_id.clone(),
    };
    let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_start(m.session_expiry_secs == 0);
    opts.set_session_expiry_interval(Some(m.session_expiry_secs));
    opts.set_manual_acks(true);
    opts.set_receive_maximum(Some(m.max_in_flight));
    // Every request is a small message waiting for a small answer: without TCP_NODELAY,
    // Nagle's algorithm holds an answer back until the previous segment's (delayed) ACK
    // arrives, ~40 ms per hop on Linux (docs/performance.md, "HTTP vs MQTT").
    let mut net = opts.network_options();
    net.set_tcp_nodelay(m.tcp_nodelay);
    opts.set_network_options(net);
    let max_packet = u32::try_from(sh.settings.limits.max_body)
        .unwrap_or(u32::MAX)
        .saturating_add(4096);
    opts.set_max_packet_size(Some(max_packet));
    if !m.username.is_empty() {
        let password = if m.password_file.as_os_str().is_empty() {
            String::new()
        } else {
            let p = sh.settings.resolve(&m.password_file);
            std::fs::read_to_string(&p)
                .map_err(|e| GatewayError::Config(format!("{}: {e}", p.display())))?
                .trim()
                .to_string()
        };
        opts.set_credentials(m.username.clone(), password);
    }
    if url.tls {
        let ca = (!m.ca_file.as_os_str().is_empty()).then(|| sh.settings.resolve(&m.ca_file));
        let cfg = tls_client_config(ca.as_deref()).map_err(GatewayError::Tls)?;
        opts.set_transport(Transport::Tls(TlsConfiguration::Rustls(cfg)));
    }
    let (client, eventloop) = AsyncClient::new(opts, 1024);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::spawn(run(sh.clone(), client, eventloop, shutdown, ready_tx));
    match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
        Ok(Ok(())) => {
            info!(broker = %m.broker, prefix = %m.topic_prefix, "MQTT binding subscribed")
        }
        _ => warn!(broker = %m.broker, "MQTT broker not reachable yet; still trying"),
    }
    Ok(task)
}

async fn run(
    sh: Arc<Pipeline>,
    client: AsyncClient,
    eventloop: EventLoop,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) {
    let stopping = Arc::new(AtomicBool::new(false));
    // Every handler holds a clone of the sender; once the original is dropped (on shutdown),
    // the channel closes when the last handler is done.
    let (busy_tx, mut busy_rx) = mpsc::channel::<()>(1);
    let busy_tx = Arc::new(Mutex::new(Some(busy_tx)));
    // The event loop must keep running while handlers finish (their answers and PUBACKs go
    // through it), so it runs in its own task and is told to stop rather than cancelled.
    let mut poller = tokio::spawn(poll(
        sh.clone(),
        client.clone(),
        eventloop,
        stopping.clone(),
        busy_tx.clone(),
        ready,
    ));
    let _ = shutdown.wait_for(|s| *s).await;
    stopping.store(true, Ordering::Relaxed);
    busy_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    let grace = Duration::from_secs(sh.settings.limits.shutdown_grace_secs);
    if tokio::time::timeout(grace, busy_rx.recv()).await.is_err() {
        warn!("MQTT: shutdown grace period over with requests in flight");
    }
    // Queued answers and acknowledgements go out before the DISCONNECT (one request queue).
    let _ = client.try_disconnect();
    if tokio::time::timeout(Duration::from_secs(5), &mut poller)
        .await
        .is_err()
    {
        poller.abort();
    }
    info!("MQTT binding stopped");
}

async fn poll(
    sh: Arc<Pipeline>,
    client: AsyncClient,
    mut eventloop: EventLoop,
    stopping: Arc<AtomicBool>,
    busy: Arc<Mutex<Option<mpsc::Sender<()>>>>,
    ready: oneshot::Sender<()>,
) {
    let prefix = sh.settings.mqtt.topic_prefix.clone();
    let share = share_prefix(&sh);
    let topics = Arc::new(Topics::new(&prefix));
    let mut ready = Some(ready);
    let qos0 = Arc::new(tokio::sync::Semaphore::new(usize::from(
        sh.settings.mqtt.qos0_in_flight,
    )));
    let mut failures = 0u32;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                debug!(session_present = ack.session_present, "MQTT connected");
                // Subscribing (again) is idempotent. It is queued from another task: the
                // request queue drains only while this loop polls.
                let c = client.clone();
                let filters = [
                    Filter::new(format!("{share}{prefix}/hs/+"), QoS::AtLeastOnce),
                    Filter::new(format!("{share}{prefix}/rec/+"), QoS::AtLeastOnce),
                ];
                tokio::spawn(async move {
                    if let Err(e) = c.subscribe_many(filters).await {
                        warn!(error = %e, "MQTT subscribe failed");
                    }
                });
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let ok = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                if ok {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                } else {
                    warn!(codes = ?ack.return_codes, "MQTT broker refused a subscription");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let guard = busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(guard) = guard else {
                    // Stopping: not acknowledged, so the broker delivers it again later.
                    continue;
                };
                let permit = if p.qos == QoS::AtMostOnce {
                    match qos0.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            // At most once by contract: dropped, counted, logged.
                            sh.metrics.refusal("busy");
                            debug!("MQTT QoS 0 request dropped: mqtt.qos0_in_flight reached");
                            continue;
                        }
                    }
                } else {
                    None
                };
                let (sh, client, topics) = (sh.clone(), client.clone(), topics.clone());
                tokio::spawn(async move {
                    handle(&sh, &client, &topics, p).await;
                    drop(permit);
                    drop(guard);
                });
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                if stopping.load(Ordering::Relaxed) {
                    debug!(error = %e, "MQTT connection ended while stopping");
                    break;
                }
                failures = failures.saturating_add(1);
                let wait = Duration::from_millis(100u64 << failures.min(6));
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "MQTT connection failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Processes one request and publishes its answer; acknowledges it to the broker after.
async fn handle(sh: &Arc<Pipeline>, client: &AsyncClient, topics: &Topics, p: Publish) {
    let topic = String::from_utf8_lossy(&p.topic);
    let kind = if topic.starts_with(&topics.hs) {
        Kind::Handshake
    } else if topic.starts_with(&topics.rec) {
        Kind::Records
    } else {
        let _ = client.ack(&p).await;
        return;
    };
    let props = p.properties.clone().unwrap_or_default();
    let reply_to = props.response_topic.filter(|t| topics.answerable(t));
    let correlation = props
        .correlation_data
        .filter(|c| c.len() <= MAX_CORRELATION);
    let Some(reply_to) = reply_to else {
        // Nowhere (allowed) to answer: not processed, since the sender could never learn the
        // outcome and a processed record's answer would be lost.
        sh.metrics.refusal("malformed");
        debug!(%topic, "MQTT request without a usable response topic");
        let _ = client.ack(&p).await;
        return;
    };
    let answer = if p.payload.len() > sh.settings.limits.max_body {
        sh.metrics.refusal("oversize");
        Some(Bytes::copy_from_slice(&encode_alert(Refusal::Malformed)))
    } else {
        let limit = Duration::from_secs(sh.settings.limits.request_timeout_secs);
        let body = p.payload.clone();
        let handshake = matches!(kind, Kind::Handshake);
        let source = topics.source(sh, &reply_to);
        // In a cluster the partition's owner processes it (forwarded over NATS, as HTTP
        // requests are); the answer is published here either way.
        let work = sh.handle(Request {
            binding: Binding::Mqtt,
            kind: if handshake {
                pipeline::Kind::Handshake
            } else {
                pipeline::Kind::Records
            },
            peer: None,
            source,
            body,
        });
        match tokio::time::timeout(limit, work).await {
            Ok(a) => Some(a.to_payload()),
            Err(_) => {
                sh.metrics.refusal("timeout");
                None
            }
        }
    };
    if let Some(payload) = answer {
        let props = PublishProperties {
            correlation_data: correlation,
            ..Default::default()
        };
        if let Err(e) = client
            .publish_bytes_with_properties(reply_to, QoS::AtLeastOnce, false, payload, props)
            .await
        {
            warn!(error = %e, "MQTT: publishing an answer failed");
        }
    }
    let _ = client.ack(&p).await;
}

/// The shared-subscription prefix in cluster mode (`$share/<cluster prefix>/`): the broker
/// delivers each request to one node of the group; empty on a single gateway.
fn share_prefix(sh: &Pipeline) -> String {
    if sh.settings.cluster.enabled() {
        format!("$share/{}/", sh.settings.cluster.prefix)
    } else {
        String::new()
    }
}
