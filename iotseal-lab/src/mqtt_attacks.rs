//! The broker-side attacks: honest SDK devices talk to the lab's gateway over MQTT through a
//! real broker, and the [`BrokerAttacker`] (subscribed to every iotseal topic, free to publish
//! anywhere) eavesdrops, replays, injects, answers in the gateway's place and moves one
//! device's traffic onto another's topics. Verdicts come from the gateway's counters, the
//! devices' own results and storage compared with what the honest devices sent.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotseal_device::{
    DeviceClient, DeviceOptions, IdentityFile, IdentityFileExt, MqttConfig, MqttTransport,
};
use iotseal_proto::handshake::messages::{decode_alert, encode_alert};
use iotseal_proto::reading::{Reading, SensorKind};
use iotseal_proto::{CryptoProvider, Refusal, SigAlg};

use crate::attacks::{finish, forgeries_of, nothing_processed, rewrite_session, session_of_flight};
use crate::broker::{BrokerAttacker, Captured, Forged};
use crate::device::{Ledger, lab_options, ledger_add};
use crate::outcome::{AttackOutcome, Findings, tally};
use crate::target::{Delta, Gw, Metrics};
use crate::{GatewaySpec, LabError, LabOptions};

type R<T> = Result<T, LabError>;
type BoxFut<'a> = Pin<Box<dyn Future<Output = R<Findings>> + Send + 'a>>;

/// How long the attacker waits for the gateway's answer to one of its own requests.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// What each broker-side attack tries (shown in the report).
pub(crate) fn describe(name: &str) -> &'static str {
    match name {
        "mqtt-eavesdrop" => {
            "The broker (or any client it lets subscribe to PREFIX/#) records every message of a device's handshake and record requests and the gateway's answers, and searches topics, payloads and properties for the readings' encoding, a canary in their payload and the device id."
        }
        "mqtt-replay" => {
            "Every recorded request (M1, M3 with records, record batches) is published again to its request topic twice: with the device's response topic and correlation data, and with the attacker's own inbox to read the answer."
        }
        "mqtt-inject" => {
            "Forged requests on the handshake and record topics: random payloads, the device's requests with one bit flipped at many positions, truncated; and requests whose response topic points outside the inbox or is missing."
        }
        "mqtt-replay-answers" => {
            "While a device sends new readings, the attacker answers its requests on its inbox before the gateway does (same correlation data): stale acknowledgements of the same session, another device's acknowledgements, a recorded M2 to a new M1, random and bit-flipped answers, a forged alert."
        }
        "mqtt-cross-device" => {
            "Device A's recorded requests are published on device B's topics (verbatim, and with B's session id written into the record headers), and by a client that took over B's MQTT client id after B went offline."
        }
        _ => "",
    }
}

/// Per-run state.
struct Ctx {
    gw: Gw,
    atk: BrokerAttacker,
    /// `mqtt://HOST:PORT`.
    broker_url: String,
    /// `HOST:PORT`.
    broker_addr: String,
    prefix: String,
    run: String,
    ledger: Ledger,
    devices: Mutex<Vec<String>>,
    n: AtomicU64,
    p: CryptoProvider,
}

/// An honest device over MQTT and where it talks.
struct MqttDevice {
    dc: DeviceClient<MqttTransport>,
    id: String,
    /// The transport's MQTT client id.
    client: String,
    inbox: String,
    hs: String,
    rec: String,
}

impl Ctx {
    fn new_id(&self, tag: &str) -> String {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{tag}{n}", self.run);
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.clone());
        id
    }

    /// A registered honest SDK device over MQTT.
    async fn device(&self, tag: &str, opts: DeviceOptions) -> R<MqttDevice> {
        let identity = IdentityFile::generate(&self.p, &self.new_id(tag), SigAlg::Ed25519)
            .map_err(|e| LabError(format!("keygen: {e}")))?;
        self.gw.register(&identity).await?;
        let cfg = identity
            .device_config(&self.gw.pins, None)
            .map_err(|e| LabError(format!("device config: {e}")))?;
        let mc = MqttConfig {
            topic_prefix: self.prefix.clone(),
            timeout: Duration::from_secs(5),
            ..MqttConfig::new(&self.broker_url)
        };
        let t = MqttTransport::connect(&mc)
            .await
            .map_err(|e| LabError(format!("device over MQTT: {e}")))?;
        let inbox = t.inbox().to_string();
        let client = inbox.rsplit('/').next().unwrap_or_default().to_string();
        Ok(MqttDevice {
            dc: DeviceClient::new(cfg, t, opts),
            id: identity.id,
            hs: format!("{}/hs/{client}", self.prefix),
            rec: format!("{}/rec/{client}", self.prefix),
            client,
            inbox,
        })
    }

    async fn metrics(&self) -> R<Metrics> {
        self.gw.metrics().await
    }
}

/// Queues `n` readings with `extra` in their payload (written to the ledger); returns them.
fn push(d: &mut MqttDevice, ledger: &Ledger, n: usize, extra: &[u8]) -> Vec<Reading> {
    let mut out = Vec::new();
    for i in 0..n {
        let t = d.dc.clock().now().as_millis();
        let values = vec![(SensorKind::Temperature, 1234.5 + i as f32)];
        if let Ok(msg_id) = d.dc.push_at(t, values.clone(), extra.to_vec()) {
            let r = Reading {
                msg_id,
                time_ms: t,
                values,
                extra: extra.to_vec(),
            };
            ledger_add(ledger, &d.id, &r);
            out.push(r);
        }
    }
    out
}

/// Sends `n` readings and waits until the gateway acknowledged them all.
async fn deliver(d: &mut MqttDevice, ledger: &Ledger, n: usize) -> R<Vec<Reading>> {
    let r = push(d, ledger, n, b"");
    d.dc.flush()
        .await
        .map_err(|e| LabError(format!("honest device {}: {e}", d.id)))?;
    Ok(r)
}

/// Lets the broker deliver what is in flight.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The honest requests (handshake and record topics) of a log.
fn requests<'a>(atk: &BrokerAttacker, log: &'a [Captured]) -> Vec<&'a Captured> {
    log.iter()
        .filter(|c| !c.own && matches!(atk.kind(&c.topic), "hs" | "rec"))
        .collect()
}

/// How the gateway answered one of the attacker's requests; whether that stopped it.
fn classify(kind: &str, answer: Option<&[u8]>, original: Option<&[u8]>) -> (String, bool) {
    match answer {
        None => ("no answer".into(), true),
        Some(a) => {
            if let Some(r) = decode_alert(a) {
                (format!("refused {r:?}"), true)
            } else if original == Some(a) && kind == "hs" {
                ("same cached answer".into(), true)
            } else if a.first() == Some(&0x02) {
                ("Retry (no state)".into(), true)
            } else if kind == "rec" {
                ("acknowledgement of what is stored".into(), true)
            } else {
                ("new answer".into(), false)
            }
        }
    }
}

fn random(p: &CryptoProvider, n: usize) -> R<Vec<u8>> {
    p.random_vec(n).map_err(|e| LabError(format!("{e:?}")))
}

// ---------------------------------------------------------------------------------------

fn eavesdrop(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        ctx.atk.take_log();
        let mut d = ctx
            .device("eav", lab_options(Duration::from_secs(20)))
            .await?;
        let canary = format!("LAB-CANARY-{}", hex::encode(random(&ctx.p, 8)?));
        let mut sent = Vec::new();
        // The first flush rides on the handshake (M3), the second is a records request.
        for _ in 0..2 {
            sent.extend(push(&mut d, &ctx.ledger, 4, canary.as_bytes()));
            d.dc.flush()
                .await
                .map_err(|e| LabError(format!("honest device: {e}")))?;
        }
        settle().await;
        let log = ctx.atk.take_log();
        let mut needles: Vec<(String, Vec<u8>)> = vec![
            ("the canary".into(), canary.as_bytes().to_vec()),
            ("part of the canary".into(), b"LAB-CANARY".to_vec()),
            ("the device id".into(), d.id.as_bytes().to_vec()),
        ];
        for r in &sent {
            let mut enc = Vec::new();
            r.encode(&mut enc);
            needles.push((format!("reading {} encoded", r.msg_id), enc));
        }
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        let mut leaks: BTreeMap<String, u64> = BTreeMap::new();
        let mut bytes = 0usize;
        for c in log.iter().filter(|c| !c.own) {
            *by_kind
                .entry(ctx.atk.kind(&c.topic).to_string())
                .or_default() += 1;
            let all = c.all_bytes();
            bytes += all.len();
            let mut clean = true;
            for (what, n) in &needles {
                if all.windows(n.len()).any(|w| w == n.as_slice()) {
                    clean = false;
                    *leaks.entry(what.clone()).or_default() += 1;
                }
            }
            f.attempt(clean);
        }
        let count = |k: &str| by_kind.get(k).copied().unwrap_or(0);
        f.check(
            format!(
                "the attacker saw the traffic (handshake requests {}, record requests {}, answers {})",
                count("hs"),
                count("rec"),
                count("inbox")
            ),
            count("hs") >= 2 && count("rec") >= 1 && count("inbox") >= 3,
        );
        f.check(
            format!(
                "no reading, canary or device id in any of {} messages ({bytes} bytes): {}",
                log.len(),
                if leaks.is_empty() {
                    "ciphertext only".to_string()
                } else {
                    tally(&leaks)
                }
            ),
            leaks.is_empty(),
        );
        let stored = ctx.gw.readings(&d.id).await?;
        f.check(
            format!(
                "the gateway decrypted and stored the readings ({} of {})",
                stored.len(),
                sent.len()
            ),
            stored.len() == sent.len(),
        );
        f.saw(format!(
            "searched for {} byte strings: the canary, the device id and each reading's encoding",
            needles.len()
        ));
        f.note("ciphertext only: nothing readable crossed the broker".to_string());
        Ok(f)
    })
}

fn replay(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        ctx.atk.take_log();
        let mut d = ctx
            .device("rpl", lab_options(Duration::from_secs(20)))
            .await?;
        deliver(&mut d, &ctx.ledger, 6).await?;
        deliver(&mut d, &ctx.ledger, 4).await?;
        settle().await;
        let log = ctx.atk.take_log();
        let reqs = requests(&ctx.atk, &log);
        let before = ctx.metrics().await?;
        let mut kinds = BTreeMap::new();
        for _ in 0..2 {
            for c in &reqs {
                // Verbatim: the answer goes to the device, which waits for nothing.
                ctx.atk
                    .publish(&Forged {
                        topic: c.topic.clone(),
                        payload: c.payload.clone(),
                        response_topic: c.response_topic.clone(),
                        correlation: c.correlation.clone(),
                    })
                    .await?;
                f.attempt(true);
                // To the attacker's inbox, to read the answer.
                let a = ctx
                    .atk
                    .request(&c.topic, c.payload.clone(), ANSWER_WAIT)
                    .await?;
                let original = log.iter().find(|x| {
                    Some(&x.topic) == c.response_topic.as_ref() && x.correlation == c.correlation
                });
                let (kind, blocked) = classify(
                    ctx.atk.kind(&c.topic),
                    a.as_deref(),
                    original.map(|o| o.payload.as_slice()),
                );
                f.attempt(blocked);
                *kinds.entry(kind).or_default() += 1;
            }
        }
        settle().await;
        let delta = Delta::between(&before, &ctx.metrics().await?);
        nothing_processed(&mut f, &delta);
        // The honest device is not disturbed.
        let more = deliver(&mut d, &ctx.ledger, 2).await;
        f.check(
            format!(
                "the honest device still delivers afterwards ({})",
                more.as_ref().map_or_else(|e| e.0.clone(), |_| "ok".into())
            ),
            more.is_ok(),
        );
        f.note(format!("answers to the replays: {}", tally(&kinds)));
        f.saw(format!(
            "{} honest requests recorded at the broker, each replayed 2×2 times",
            reqs.len()
        ));
        Ok(f)
    })
}

fn inject(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        ctx.atk.take_log();
        let mut d = ctx
            .device("inj", lab_options(Duration::from_secs(20)))
            .await?;
        deliver(&mut d, &ctx.ledger, 4).await?;
        deliver(&mut d, &ctx.ledger, 2).await?;
        settle().await;
        let log = ctx.atk.take_log();
        let honest: Vec<Captured> = requests(&ctx.atk, &log).into_iter().cloned().collect();
        let own_hs = format!("{}/hs/{}", ctx.prefix, ctx.atk.client_id);
        let own_rec = format!("{}/rec/{}", ctx.prefix, ctx.atk.client_id);
        let mut forged: Vec<(String, String, Vec<u8>)> = Vec::new();
        // Random payloads, some with plausible first bytes.
        for i in 0..40usize {
            let mut b = random(&ctx.p, 1 + (i * 37) % 600)?;
            match i % 4 {
                0 => b[0] = 0x01,
                1 => b[0] = 0x04,
                _ => {}
            }
            let topic = if i % 2 == 0 { &own_hs } else { &own_rec };
            forged.push(("random".into(), topic.clone(), b));
        }
        // The honest requests with one bit flipped at several positions, and cut in half.
        for c in &honest {
            let n = c.payload.len();
            for k in 0..8 {
                let pos = (k * n) / 8 + k % 3;
                if pos >= n {
                    continue;
                }
                let mut b = c.payload.clone();
                b[pos] ^= 1 << (k % 8);
                forged.push(("bit flip".into(), c.topic.clone(), b));
            }
            forged.push((
                "truncated".into(),
                c.topic.clone(),
                c.payload[..n / 2].to_vec(),
            ));
        }
        let before = ctx.metrics().await?;
        let mut kinds = BTreeMap::new();
        for (what, topic, payload) in &forged {
            let a = ctx.atk.request(topic, payload.clone(), ANSWER_WAIT).await?;
            let (kind, blocked) = classify(ctx.atk.kind(topic), a.as_deref(), None);
            f.attempt(blocked);
            *kinds.entry(format!("{what}: {kind}")).or_default() += 1;
        }
        // Requests the gateway must not answer where they point: no response topic, a
        // request topic, two levels under the inbox, a wildcard.
        let elsewhere = [
            Some(format!("{}x", own_rec)),
            Some(format!("{}/inbox/{}/deeper", ctx.prefix, ctx.atk.client_id)),
            Some(format!("{}/inbox/+", ctx.prefix)),
            None,
        ];
        let probe = honest
            .iter()
            .find(|c| ctx.atk.kind(&c.topic) == "rec")
            .map(|c| c.payload.clone())
            .unwrap_or_else(|| vec![0u8; 40]);
        for rt in &elsewhere {
            ctx.atk
                .publish(&Forged {
                    topic: own_rec.clone(),
                    payload: probe.clone(),
                    response_topic: rt.clone(),
                    correlation: Some(b"lab".to_vec()),
                })
                .await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_log = ctx.atk.log();
        for rt in &elsewhere {
            let answered = rt.as_ref().is_some_and(|t| {
                after_log.iter().any(|c| {
                    !c.own
                        && (c.topic == *t
                            || (t.ends_with('+') && c.correlation.as_deref() == Some(b"lab")))
                })
            });
            f.attempt(!answered);
            f.check(
                format!(
                    "no answer published for a response topic of {}",
                    rt.as_deref().unwrap_or("(none)")
                ),
                !answered,
            );
        }
        let delta = Delta::between(&before, &ctx.metrics().await?);
        nothing_processed(&mut f, &delta);
        f.note(format!("answers: {}", tally(&kinds)));
        f.saw(format!(
            "{} forged requests from {} recorded honest ones, plus {} misdirected",
            forged.len(),
            honest.len(),
            elsewhere.len()
        ));
        Ok(f)
    })
}

fn replay_answers(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        ctx.atk.take_log();
        let mut a = ctx
            .device("rpa", lab_options(Duration::from_secs(60)))
            .await?;
        let mut b = ctx
            .device("rpb", lab_options(Duration::from_secs(20)))
            .await?;
        // Warm-up: answers the attacker can replay later.
        deliver(&mut a, &ctx.ledger, 6).await?;
        deliver(&mut b, &ctx.ledger, 4).await?;
        settle().await;
        let log = ctx.atk.take_log();
        let answers_to = |inbox: &str| -> Vec<Vec<u8>> {
            log.iter()
                .filter(|c| !c.own && c.topic == inbox)
                .map(|c| c.payload.clone())
                .collect()
        };
        let stale = answers_to(&a.inbox);
        let other = answers_to(&b.inbox);
        // A's M2 (the answer to its M1): the first answer with a handshake's M2 type.
        let stale_m2 = stale.iter().find(|p| p.first() == Some(&0x03)).cloned();
        let stale_acks: Vec<_> = stale
            .iter()
            .filter(|p| p.first() != Some(&0x03) && decode_alert(p).is_none())
            .cloned()
            .collect();
        if stale_acks.len() < 2 || other.is_empty() || stale_m2.is_none() {
            return Err(LabError(format!(
                "warm-up: {} acknowledgements of A, {} answers to B, M2 {}",
                stale_acks.len(),
                other.len(),
                stale_m2.is_some()
            )));
        }
        let mut flipped = stale_acks[0].clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        let mut two = stale_acks[0].clone();
        two.extend_from_slice(&stale_acks[1]);
        let mut variants: Vec<(&'static str, Vec<u8>)> = vec![
            (
                "stale acknowledgement (same session)",
                stale_acks[0].clone(),
            ),
            (
                "another device's acknowledgement",
                other[other.len() - 1].clone(),
            ),
            ("random bytes", random(&ctx.p, 64)?),
            ("bit-flipped acknowledgement", flipped),
            ("two stale acknowledgements", two),
            (
                "latest stale acknowledgement",
                stale_acks[stale_acks.len() - 1].clone(),
            ),
            (
                "forged alert",
                encode_alert(Refusal::UnknownSession).to_vec(),
            ),
        ];
        variants.reverse(); // popped from the end
        let m2 = stale_m2.unwrap_or_default();
        let sent_kinds = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
        let fired = Arc::new(AtomicU64::new(0));
        let (rec_a, hs_a) = (a.rec.clone(), a.hs.clone());
        let (sk, fr) = (sent_kinds.clone(), fired.clone());
        let mut m2_sent = false;
        ctx.atk.set_reactor(Some(Box::new(move |c: &Captured| {
            let Some(reply_to) = c.response_topic.clone() else {
                return Vec::new();
            };
            let payload = if c.topic == rec_a {
                variants.pop()
            } else if c.topic == hs_a && c.payload.first() == Some(&0x01) && !m2_sent {
                m2_sent = true;
                Some(("recorded M2 of an earlier handshake", m2.clone()))
            } else {
                None
            };
            let Some((what, payload)) = payload else {
                return Vec::new();
            };
            fr.fetch_add(1, Ordering::Relaxed);
            *sk.lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(what.to_string())
                .or_default() += 1;
            vec![Forged {
                topic: reply_to,
                payload,
                response_topic: None,
                correlation: c.correlation.clone(),
            }]
        })));
        let records_before = a.dc.stats().records_sent;
        let hs_before = a.dc.stats().handshakes;
        const N: usize = 24;
        let sent = push(&mut a, &ctx.ledger, N, b"");
        let flushed = a.dc.flush().await;
        ctx.atk.set_reactor(None);
        settle().await;
        let fired = fired.load(Ordering::Relaxed);
        let ok = flushed.as_ref().is_ok_and(|r| r.pending == 0);
        for _ in 0..fired {
            f.attempt(ok);
        }
        f.check(
            format!(
                "the forged answers reached the device's inbox with its correlation data ({fired})"
            ),
            fired >= 7,
        );
        f.check(
            format!(
                "the device delivered every new reading despite them ({})",
                match &flushed {
                    Ok(r) => format!("{} acknowledged, {} pending", r.acknowledged, r.pending),
                    Err(e) => e.to_string(),
                }
            ),
            ok,
        );
        let stored = ctx.gw.readings(&a.id).await?;
        let missing = sent
            .iter()
            .filter(|r| !stored.iter().any(|s| s.msg_id == r.msg_id))
            .count();
        f.check(
            format!(
                "no reading lost: every reading the device forgot is stored ({} of {N} new ones missing)",
                missing
            ),
            missing == 0,
        );
        let st = a.dc.stats();
        let resent = st.records_sent - records_before;
        for (k, v) in &st.refusals {
            for _ in 0..*v {
                f.device_error(format!("device: refused {k} (forged)"));
            }
        }
        f.saw(format!(
            "forged answers: {}",
            tally(&sent_kinds.lock().unwrap_or_else(|e| e.into_inner()))
        ));
        f.saw(format!(
            "the device sent {resent} records for {} needed ({} readings per record), handshakes +{}, refusals seen {:?}, retries {}",
            N.div_ceil(2),
            2,
            st.handshakes - hs_before,
            st.refusals,
            st.retries
        ));
        f.note(format!(
            "forged answers taken in place of the gateway's were opened and found to acknowledge nothing: the device re-sent ({resent} records for {} readings)",
            N
        ));
        Ok(f)
    })
}

fn cross_device(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        ctx.atk.take_log();
        let mut a = ctx
            .device("xa", lab_options(Duration::from_secs(20)))
            .await?;
        let mut b = ctx
            .device("xb", lab_options(Duration::from_secs(20)))
            .await?;
        deliver(&mut a, &ctx.ledger, 6).await?;
        deliver(&mut a, &ctx.ledger, 4).await?;
        deliver(&mut b, &ctx.ledger, 4).await?;
        settle().await;
        let log = ctx.atk.take_log();
        let from_a: Vec<&Captured> = log
            .iter()
            .filter(|c| !c.own && (c.topic == a.hs || c.topic == a.rec))
            .collect();
        let sid_b = log
            .iter()
            .filter(|c| c.topic == b.hs && c.payload.first() == Some(&0x04))
            .find_map(|c| session_of_flight(&c.payload))
            .ok_or_else(|| LabError("B's session id not found".into()))?;
        f.saw(format!(
            "B's session {sid_b:#010x}; {} requests of A recorded",
            from_a.len()
        ));
        let (a_hs, b_hs, b_rec) = (a.hs.clone(), b.hs.clone(), b.rec.clone());
        let to_b = |t: &str| {
            if t == a_hs {
                b_hs.clone()
            } else {
                b_rec.clone()
            }
        };
        let before = ctx.metrics().await?;
        let mut kinds = BTreeMap::new();
        // The gateway's answer to each of A's requests, as recorded.
        let original = |c: &Captured| -> Option<Vec<u8>> {
            log.iter()
                .find(|x| {
                    Some(&x.topic) == c.response_topic.as_ref() && x.correlation == c.correlation
                })
                .map(|x| x.payload.clone())
        };
        for c in &from_a {
            let kind = ctx.atk.kind(&c.topic);
            // On B's topic, answered to B's inbox (B waits for nothing) and to the attacker.
            ctx.atk
                .publish(&Forged {
                    topic: to_b(&c.topic),
                    payload: c.payload.clone(),
                    response_topic: Some(b.inbox.clone()),
                    correlation: c.correlation.clone(),
                })
                .await?;
            f.attempt(true);
            let ans = ctx
                .atk
                .request(&to_b(&c.topic), c.payload.clone(), ANSWER_WAIT)
                .await?;
            let (k, blocked) = classify(kind, ans.as_deref(), original(c).as_deref());
            f.attempt(blocked);
            *kinds.entry(format!("on B's topic: {k}")).or_default() += 1;
            if kind == "rec" {
                // A's records relabelled as B's session: beyond B's window they fail
                // authentication; inside it they are replays (answered from the window).
                let ans = ctx
                    .atk
                    .request(&b.rec, rewrite_session(&c.payload, sid_b), ANSWER_WAIT)
                    .await?;
                let (k, blocked) = classify(kind, ans.as_deref(), None);
                f.attempt(blocked);
                *kinds.entry(format!("as B's session: {k}")).or_default() += 1;
            }
        }
        // B goes offline; the attacker connects under B's MQTT client id and sends A's
        // records as B.
        let b_client = b.client.clone();
        drop(b);
        let impostor = BrokerAttacker::connect_as(&ctx.broker_addr, &ctx.prefix, &b_client).await?;
        for c in &from_a {
            let corr = random(&ctx.p, 8)?;
            impostor
                .publish(&Forged {
                    topic: to_b(&c.topic),
                    payload: c.payload.clone(),
                    response_topic: Some(ctx.atk.inbox.clone()),
                    correlation: Some(corr.clone()),
                })
                .await?;
            let ans = ctx
                .atk
                .wait_for(&ctx.atk.inbox, Some(&corr), ANSWER_WAIT)
                .await
                .map(|c| c.payload);
            let (k, blocked) = classify(
                ctx.atk.kind(&c.topic),
                ans.as_deref(),
                original(c).as_deref(),
            );
            f.attempt(blocked);
            *kinds
                .entry(format!("under B's client id: {k}"))
                .or_default() += 1;
        }
        drop(impostor);
        settle().await;
        let delta = Delta::between(&before, &ctx.metrics().await?);
        nothing_processed(&mut f, &delta);
        f.note(format!("answers: {}", tally(&kinds)));
        Ok(f)
    })
}

fn dispatch<'a>(name: &str, ctx: &'a Ctx) -> Option<BoxFut<'a>> {
    Some(match name {
        "mqtt-eavesdrop" => eavesdrop(ctx),
        "mqtt-replay" => replay(ctx),
        "mqtt-inject" => inject(ctx),
        "mqtt-replay-answers" => replay_answers(ctx),
        "mqtt-cross-device" => cross_device(ctx),
        _ => return None,
    })
}

/// Runs the broker-side attacks through the broker at `broker` (`HOST:PORT`).
pub(crate) async fn run(names: &[&str], options: &LabOptions, broker: &str) -> Vec<AttackOutcome> {
    let fail_all = |e: &LabError| {
        names
            .iter()
            .map(|n| AttackOutcome::failed(n, "iotseal", describe(n), e.0.clone()))
            .collect::<Vec<_>>()
    };
    if names.is_empty() {
        return Vec::new();
    }
    if !matches!(options.gateway, GatewaySpec::InProcess { .. }) {
        return fail_all(&LabError(
            "the MQTT attacks run against the lab's own gateway (in process), whose MQTT binding they turn on"
                .into(),
        ));
    }
    let broker_addr = broker.trim().trim_start_matches("mqtt://").to_string();
    let p = iotseal_crypto_awslc::default_provider();
    let run = format!(
        "lab{}",
        hex::encode(p.random_vec(3).unwrap_or_else(|_| vec![0; 3]))
    );
    // A topic prefix of its own: brokers are shared.
    let prefix = format!("{run}/iotseal");
    // The attacker first: it fails fast when no broker answers.
    let atk = match BrokerAttacker::connect(&broker_addr, &prefix).await {
        Ok(a) => a,
        Err(e) => return fail_all(&e),
    };
    let broker_url = format!("mqtt://{broker_addr}");
    let (bu, pf, r2) = (broker_url.clone(), prefix.clone(), run.clone());
    let gw = match Gw::open_with(&options.gateway, move |s| {
        s.mqtt.broker = bu;
        s.mqtt.topic_prefix = pf;
        s.mqtt.client_id = format!("{r2}-gw");
        // Nothing of the lab's gateway lingers at the broker afterwards.
        s.mqtt.session_expiry_secs = 0;
    })
    .await
    {
        Ok(g) => g,
        Err(e) => return fail_all(&e),
    };
    let ctx = Ctx {
        gw,
        atk,
        broker_url,
        broker_addr,
        prefix,
        run,
        ledger: Ledger::default(),
        devices: Mutex::new(Vec::new()),
        n: AtomicU64::new(0),
        p,
    };
    let mut out = Vec::new();
    for name in names {
        if options.progress {
            eprintln!("attack {name} (iotseal over MQTT) ...");
        }
        out.push(run_one(&ctx, name).await);
    }
    let Ctx { gw, atk, .. } = ctx;
    drop(atk);
    gw.close().await;
    out
}

async fn run_one(ctx: &Ctx, name: &str) -> AttackOutcome {
    let desc = describe(name);
    ctx.atk.set_reactor(None);
    ctx.devices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let t0 = Instant::now();
    let before = match ctx.metrics().await {
        Ok(m) => m,
        Err(e) => return AttackOutcome::failed(name, "iotseal", desc, e.0),
    };
    let Some(fut) = dispatch(name, ctx) else {
        return AttackOutcome::failed(name, "iotseal", desc, "unknown attack".into());
    };
    let res = fut.await;
    ctx.atk.set_reactor(None);
    let f = match res {
        Ok(f) => f,
        Err(e) => {
            let mut o = AttackOutcome::failed(name, "iotseal", desc, e.0);
            o.elapsed_ms = t0.elapsed().as_millis() as u64;
            return o;
        }
    };
    let after = match ctx.metrics().await {
        Ok(m) => m,
        Err(e) => return AttackOutcome::failed(name, "iotseal", desc, e.0),
    };
    let d = Delta::between(&before, &after);
    let ids = ctx
        .devices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (stored_forgeries, storage_note) = match forgeries_of(&ctx.gw, ids, &ctx.ledger, &d).await {
        Ok(x) => x,
        Err(e) => return AttackOutcome::failed(name, "iotseal", desc, e.0),
    };
    finish(
        name,
        "iotseal",
        desc,
        f,
        d.refusals,
        stored_forgeries,
        storage_note,
        t0,
    )
}
