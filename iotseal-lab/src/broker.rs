//! The broker-side attacker: one more MQTT v5 client of the (untrusted) broker, as the broker
//! itself or any client the broker lets subscribe to everything would be. It records every
//! message under the iotseal topic prefix (topic, payload, response topic, correlation data),
//! publishes whatever it likes to any topic with any properties, and can react to a message
//! the moment the broker hands it over (to race the gateway's answer).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::oneshot;

use crate::LabError;

/// One message the broker carried.
#[derive(Clone, Debug)]
pub(crate) struct Captured {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) response_topic: Option<String>,
    pub(crate) correlation: Option<Vec<u8>>,
    /// Published by the attacker itself (the broker echoes what matches its subscription).
    pub(crate) own: bool,
}

impl Captured {
    /// Every byte of the message a broker sees (topic, payload, properties).
    pub(crate) fn all_bytes(&self) -> Vec<u8> {
        let mut v = self.topic.as_bytes().to_vec();
        v.extend_from_slice(&self.payload);
        if let Some(t) = &self.response_topic {
            v.extend_from_slice(t.as_bytes());
        }
        if let Some(c) = &self.correlation {
            v.extend_from_slice(c);
        }
        v
    }
}

/// A message the attacker publishes.
#[derive(Clone, Debug)]
pub(crate) struct Forged {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) response_topic: Option<String>,
    pub(crate) correlation: Option<Vec<u8>>,
}

/// Decides, for each message the broker hands over, what to publish at once.
pub(crate) type Reactor = Box<dyn FnMut(&Captured) -> Vec<Forged> + Send>;

struct State {
    log: Vec<Captured>,
    /// Payloads the attacker published (to tell its own messages apart when echoed).
    sent: Vec<(String, Vec<u8>)>,
    reactor: Option<Reactor>,
}

/// The attacker's connection to the broker.
pub(crate) struct BrokerAttacker {
    client: AsyncClient,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    /// `PREFIX/inbox/ATTACKER`: the one response topic the gateway would answer the
    /// attacker's own requests on.
    pub(crate) inbox: String,
    /// `PREFIX`.
    pub(crate) prefix: String,
    /// The attacker's MQTT client id.
    pub(crate) client_id: String,
}

impl Drop for BrokerAttacker {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn props(f: &Forged) -> PublishProperties {
    PublishProperties {
        response_topic: f.response_topic.clone(),
        correlation_data: f.correlation.as_deref().map(Bytes::copy_from_slice),
        ..Default::default()
    }
}

impl BrokerAttacker {
    /// Connects to `addr` (`HOST:PORT`, plain MQTT) with a random client id and subscribes to
    /// `PREFIX/#`; returns once the broker confirmed the subscription.
    pub(crate) async fn connect(addr: &str, prefix: &str) -> Result<Self, LabError> {
        Self::connect_with(addr, prefix, None).await
    }

    /// Like [`Self::connect`], under someone else's MQTT client id (the broker checks none).
    pub(crate) async fn connect_as(
        addr: &str,
        prefix: &str,
        client_id: &str,
    ) -> Result<Self, LabError> {
        Self::connect_with(addr, prefix, Some(client_id)).await
    }

    async fn connect_with(
        addr: &str,
        prefix: &str,
        client_id: Option<&str>,
    ) -> Result<Self, LabError> {
        let addr = addr.trim().trim_start_matches("mqtt://");
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| LabError(format!("broker {addr:?}: expected HOST:PORT")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| LabError(format!("broker {addr:?}: bad port")))?;
        let p = iotseal_crypto_awslc::default_provider();
        let client_id = match client_id {
            Some(c) => c.to_string(),
            None => format!(
                "atk-{}",
                hex::encode(p.random_vec(6).map_err(|e| LabError(format!("{e:?}")))?)
            ),
        };
        let mut o = MqttOptions::new(
            client_id.clone(),
            host.trim_matches(['[', ']']).to_string(),
            port,
        );
        o.set_max_packet_size(Some(4 << 20));
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_start(true);
        let mut net = o.network_options();
        net.set_tcp_nodelay(true);
        o.set_network_options(net);
        let (client, mut el) = AsyncClient::new(o, 4096);
        let state = Arc::new(Mutex::new(State {
            log: Vec::new(),
            sent: Vec::new(),
            reactor: None,
        }));
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let st = state.clone();
        let c2 = client.clone();
        let filter = format!("{prefix}/#");
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut failures = 0u32;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        let _ = c2.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        let ok = a
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                        if let Some(r) = ready.take() {
                            let _ = r.send(if ok {
                                Ok(())
                            } else {
                                Err(format!("subscription refused: {:?}", a.return_codes))
                            });
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let pp = p.properties.unwrap_or_default();
                        let mut c = Captured {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            response_topic: pp.response_topic,
                            correlation: pp.correlation_data.map(|b| b.to_vec()),
                            own: false,
                        };
                        let mut s = lock(&st);
                        if let Some(i) = s
                            .sent
                            .iter()
                            .position(|(t, b)| *t == c.topic && *b == c.payload)
                        {
                            s.sent.swap_remove(i);
                            c.own = true;
                        }
                        let out = if c.own {
                            Vec::new()
                        } else {
                            s.reactor.as_mut().map(|r| r(&c)).unwrap_or_default()
                        };
                        for f in out {
                            s.sent.push((f.topic.clone(), f.payload.clone()));
                            let _ = c2.try_publish_with_properties(
                                f.topic.clone(),
                                QoS::AtLeastOnce,
                                false,
                                f.payload.clone(),
                                props(&f),
                            );
                        }
                        s.log.push(c);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        if failures >= 3
                            && let Some(r) = ready.take()
                        {
                            let _ = r.send(Err(e.to_string()));
                        }
                        tokio::time::sleep(Duration::from_millis(50u64 << failures.min(5))).await;
                    }
                }
            }
        });
        let this = Self {
            client,
            state,
            task,
            inbox: format!("{prefix}/inbox/{client_id}"),
            prefix: prefix.to_string(),
            client_id,
        };
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(this),
            Ok(Ok(Err(e))) => Err(LabError(format!("MQTT broker {addr}: {e}"))),
            _ => Err(LabError(format!(
                "MQTT broker {addr}: no subscription within 10 s"
            ))),
        }
    }

    /// Everything recorded so far (and forgets it).
    pub(crate) fn take_log(&self) -> Vec<Captured> {
        std::mem::take(&mut lock(&self.state).log)
    }

    /// Everything recorded so far.
    pub(crate) fn log(&self) -> Vec<Captured> {
        lock(&self.state).log.clone()
    }

    /// Installs (or removes) the reactor.
    pub(crate) fn set_reactor(&self, r: Option<Reactor>) {
        lock(&self.state).reactor = r;
    }

    /// Publishes one message (QoS 1).
    pub(crate) async fn publish(&self, f: &Forged) -> Result<(), LabError> {
        lock(&self.state)
            .sent
            .push((f.topic.clone(), f.payload.clone()));
        self.client
            .publish_bytes_with_properties(
                f.topic.clone(),
                QoS::AtLeastOnce,
                false,
                Bytes::copy_from_slice(&f.payload),
                props(f),
            )
            .await
            .map_err(|e| LabError(format!("MQTT publish: {e}")))
    }

    /// Waits for a message on `topic` (carrying `correlation`, if given) that someone else
    /// published, in the current log.
    pub(crate) async fn wait_for(
        &self,
        topic: &str,
        correlation: Option<&[u8]>,
        within: Duration,
    ) -> Option<Captured> {
        let end = Instant::now() + within;
        loop {
            {
                let s = lock(&self.state);
                if let Some(c) = s.log.iter().find(|c| {
                    !c.own
                        && c.topic == topic
                        && correlation.is_none_or(|x| c.correlation.as_deref() == Some(x))
                }) {
                    return Some(c.clone());
                }
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Publishes `f` with the attacker's own inbox as response topic and a fresh correlation
    /// value, and waits for the gateway's answer there.
    pub(crate) async fn request(
        &self,
        topic: &str,
        payload: Vec<u8>,
        within: Duration,
    ) -> Result<Option<Vec<u8>>, LabError> {
        let p = iotseal_crypto_awslc::default_provider();
        let corr = p.random_vec(8).map_err(|e| LabError(format!("{e:?}")))?;
        self.publish(&Forged {
            topic: topic.to_string(),
            payload,
            response_topic: Some(self.inbox.clone()),
            correlation: Some(corr.clone()),
        })
        .await?;
        Ok(self
            .wait_for(&self.inbox, Some(&corr), within)
            .await
            .map(|c| c.payload))
    }

    /// The topic kind of a message: `hs`, `rec`, `inbox` or `other`.
    pub(crate) fn kind(&self, topic: &str) -> &'static str {
        let Some(rest) = topic
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return "other";
        };
        match rest.split('/').next() {
            Some("hs") => "hs",
            Some("rec") => "rec",
            Some("inbox") => "inbox",
            _ => "other",
        }
    }
}
