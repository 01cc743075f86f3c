//! The same attacks against the legacy design, through the same proxy. Verdicts come from
//! what the legacy server answered, its refusal counters, and its storage compared with what
//! the honest devices sent.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;

use super::{
    LegacyClient, LegacyMessage, LegacyReading, LegacyServer, ROTATE_EVERY, WINDOW_SECS, new_key,
    open, parse_public, public_hex, seal, unix_now,
};
use crate::net::{Answer, HttpClient};
use crate::outcome::{AttackOutcome, Findings, Service, tally};
use crate::proxy::{Hook, Proxy, Verdict};
use crate::service::{self, Meter};
use crate::target::GatewayLimits;
use crate::{LabError, LabOptions};

type R<T> = Result<T, LabError>;
type Ledger = Arc<Mutex<BTreeMap<String, BTreeMap<u64, Vec<u8>>>>>;

/// Why an attack does not apply to the legacy design.
fn not_applicable(name: &str) -> Option<&'static str> {
    match name {
        "mitm-tls" => Some(
            "the legacy design speaks plain HTTP and has no TLS of its own to attack; an on-path attacker is modelled by mitm-key-substitution",
        ),
        "replay-handshake" => Some(
            "there is no handshake: each message carries its own unauthenticated ephemeral key, and the key fetch is a plain GET (replayed messages are covered by the replay-* attacks)",
        ),
        "downgrade" => Some(
            "there is no negotiation: one fixed classical scheme (P-256 ECDH, AES-CFB, HMAC-SHA256), which is already what a downgrade would aim for",
        ),
        "hello-flood-addresses" => Some(
            "there is no handshake state to fill: each message carries its own key (the per-message flood is handshake-flood)",
        ),
        "proxy-bucket-drain" => Some(
            "the legacy server has no per-address limits and no PROXY protocol: there is no budget to drain",
        ),
        _ => None,
    }
}

fn describe(name: &str) -> &'static str {
    match name {
        "mitm-key-substitution" => {
            "The proxy replaces the server's public key in the key fetch with its own, decrypts each message, changes the readings and re-encrypts them to the real server key."
        }
        "replay-immediate" => "Every message of an honest device is replayed twice at once.",
        "replay-delayed" => {
            "Every message is replayed after the same delay as against iotseal (beyond its skew and record age limit; within the legacy 300-second window)."
        }
        "replay-cross-session" => {
            "A device's messages are replayed after it restarted, and spliced under another registered device's id."
        }
        "replay-after-rekey" => {
            "12 messages (two server key rotations), all replayed after the rotations."
        }
        "reorder" => {
            "Messages delivered in reverse order, re-delivered, and one held back behind 10 later messages."
        }
        "tamper" => {
            "One bit flipped at every byte position of a message (each a fresh, undelivered one) and of the key-fetch answer."
        }
        "truncate" => "A message cut at every length; the ciphertext shortened inside valid JSON.",
        "extend" => {
            "Bytes appended to a message (after the JSON, inside the ciphertext, an extra field)."
        }
        "impersonate-unknown" => "Messages under an id the server does not know.",
        "impersonate-wrong-key" => {
            "Messages under a registered device's id, sealed by the attacker (the design has no device keys)."
        }
        "revoked-device" => {
            "A device revoked by the admin keeps sending; its earlier messages are replayed."
        }
        "stale-timestamp" => {
            "A message's timestamp set 400 s back without the key, and a device clock 400 s behind."
        }
        "future-timestamp" => {
            "A message's timestamp set 400 s ahead without the key, and a device clock 400 s ahead."
        }
        "oversize-body" => {
            "Bodies above the server's limit: announced by Content-Length, streamed chunked, and sent whole."
        }
        "malformed" => "300 random bodies.",
        "slow-client" => {
            "Connections that send request headers one byte at a time, and requests whose body trickles (same timing as against iotseal), while an honest device sends messages."
        }
        "handshake-flood" => {
            "Key fetches and messages with fresh ephemeral keys and junk MACs from 16 connections, as long as against iotseal, while an honest device sends messages."
        }
        "connection-hog" => {
            "One address opens connections as fast as it can, trying to hold as many as against iotseal (the lab runs the legacy server in its process: an eighth of its descriptor limit), for 8 s, while an honest device at another address sends messages."
        }
        _ => "",
    }
}

struct LCtx {
    server: LegacyServer,
    proxy: Proxy,
    run: String,
    ledger: Ledger,
    n: AtomicU64,
    limits: GatewayLimits,
}

/// An honest legacy device through the proxy.
struct Dev {
    client: LegacyClient,
    next: u64,
    ledger: Ledger,
    base: f32,
}

impl Dev {
    fn readings(&mut self, n: usize) -> Vec<LegacyReading> {
        let t = unix_now() * 1000;
        (0..n)
            .map(|_| {
                let id = self.next;
                self.next += 1;
                let r = LegacyReading {
                    msg_id: id,
                    time_ms: t,
                    values: vec![("temperature".into(), self.base + (id % 50) as f32 * 0.1)],
                };
                if self.base < 100.0 {
                    self.ledger
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(self.client.device_id.clone())
                        .or_default()
                        .insert(id, r.canonical());
                }
                r
            })
            .collect()
    }

    async fn send(&mut self, n: usize) -> R<(Vec<u8>, Answer)> {
        let r = self.readings(n);
        let m = self.client.seal(&r).await?;
        let a = self.client.post(m.clone()).await?;
        Ok((m, a))
    }
}

impl LCtx {
    fn id(&self, tag: &str) -> String {
        format!(
            "{}-{tag}{}",
            self.run,
            self.n.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A registered honest device.
    fn device(&self, tag: &str) -> R<Dev> {
        let id = self.id(tag);
        self.server.add_device(&id);
        self.dev_for(&id, false)
    }

    fn dev_for(&self, id: &str, forger: bool) -> R<Dev> {
        Ok(Dev {
            client: LegacyClient::new(self.proxy.url(), id)?,
            next: 1,
            ledger: self.ledger.clone(),
            base: if forger { 666.0 } else { 20.0 },
        })
    }
}

struct FnHook<Q, S> {
    req: Q,
    resp: S,
}

impl<Q, S> Hook for FnHook<Q, S>
where
    Q: Fn(&str, &mut Vec<u8>) -> Verdict + Send + Sync,
    S: Fn(&str, &[u8], &mut Answer) + Send + Sync,
{
    fn on_request(&self, path: &str, body: &mut Vec<u8>) -> Verdict {
        (self.req)(path, body)
    }
    fn on_response(&self, path: &str, request: &[u8], answer: &mut Answer) {
        (self.resp)(path, request, answer)
    }
}

fn accepted(a: &Answer) -> bool {
    a.status == 200
}

async fn mitm(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let attacker = new_key();
    let attacker_pub = public_hex(&attacker);
    let real: Arc<Mutex<BTreeMap<u64, p256::PublicKey>>> = Arc::default();
    let read: Arc<Mutex<Vec<LegacyReading>>> = Arc::default();
    let (real1, real2, read1) = (real.clone(), real.clone(), read.clone());
    let h = FnHook {
        req: move |path: &str, body: &mut Vec<u8>| {
            if path != "/v0/data" {
                return Verdict::Forward;
            }
            let Ok(m) = serde_json::from_slice::<LegacyMessage>(body) else {
                return Verdict::Forward;
            };
            let Ok(plain) = open(&m, &attacker) else {
                return Verdict::Forward;
            };
            let Ok(mut rs) = serde_json::from_slice::<Vec<LegacyReading>>(&plain) else {
                return Verdict::Forward;
            };
            read1
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(rs.clone());
            for r in &mut rs {
                for v in &mut r.values {
                    v.1 += 10.0;
                }
            }
            let server = real1
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&u64::from(m.key_id))
                .copied();
            if let (Some(pk), Ok(p2)) = (server, serde_json::to_vec(&rs)) {
                let m2 = seal(&m.device_id, m.key_id, &pk, &p2, m.timestamp);
                if let Ok(b) = serde_json::to_vec(&m2) {
                    *body = b;
                }
            }
            Verdict::Forward
        },
        resp: move |path: &str, _req: &[u8], a: &mut Answer| {
            if path != "/v0/key" {
                return;
            }
            let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&a.body) else {
                return;
            };
            if let (Some(id), Some(pk)) = (
                v.get("key_id").and_then(serde_json::Value::as_u64),
                v.get("public_key")
                    .and_then(serde_json::Value::as_str)
                    .and_then(parse_public),
            ) {
                real2
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, pk);
                v["public_key"] = serde_json::Value::String(attacker_pub.clone());
                a.body = v.to_string().into_bytes();
            }
        },
    };
    ctx.proxy.set_hook(Some(Arc::new(h)));
    let mut dev = ctx.device("mitm")?;
    let mut sent = 0;
    for _ in 0..5 {
        let (_, a) = dev.send(1).await?;
        sent += 1;
        f.attempt(!accepted(&a));
    }
    ctx.proxy.set_hook(None);
    let read = read.lock().unwrap_or_else(|e| e.into_inner()).clone();
    f.check(
        format!(
            "the attacker could not read the readings (it read {} of {sent})",
            read.len()
        ),
        read.is_empty(),
    );
    if let Some(r) = read.first() {
        f.saw(format!(
            "the attacker decrypted message 1: msg_id {} {} = {} (then re-encrypted it as {} to the real server key)",
            r.msg_id,
            r.values[0].0,
            r.values[0].1,
            r.values[0].1 + 10.0
        ));
    }
    Ok(())
}

/// Honest traffic, then replays of it; a replay is blocked only if the server refused it.
async fn replays(
    ctx: &LCtx,
    f: &mut Findings,
    tag: &str,
    messages: usize,
    rounds: usize,
    delay: Duration,
) -> R<()> {
    let mut dev = ctx.device(tag)?;
    let mut sent = Vec::new();
    for _ in 0..messages {
        sent.push(dev.send(2).await?.0);
    }
    tokio::time::sleep(delay).await;
    let mut n_ok = 0;
    for _ in 0..rounds {
        for m in &sent {
            let a = ctx.proxy.inject_post("/v0/data", m.clone()).await;
            f.attempt(!accepted(&a));
            if accepted(&a) {
                n_ok += 1;
            }
        }
    }
    f.check(
        format!("every replay refused ({n_ok} of {} accepted)", f.attempts),
        n_ok == 0,
    );
    Ok(())
}

async fn cross_session(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let mut dev = ctx.device("rxs")?;
    let mut first_run = Vec::new();
    for _ in 0..3 {
        first_run.push(dev.send(2).await?.0);
    }
    // The device restarts (a new client, a new "session": a fresh key fetch per message anyway).
    let mut again = ctx.dev_for(&dev.client.device_id, false)?;
    again.next = dev.next;
    again.send(2).await?;
    let other = ctx.device("rxs")?;
    let mut ok = 0;
    for m in &first_run {
        let a = ctx.proxy.inject_post("/v0/data", m.clone()).await;
        f.attempt(!accepted(&a));
        ok += usize::from(accepted(&a));
        // Spliced under another registered device: the id is not bound to anything.
        if let Ok(mut lm) = serde_json::from_slice::<LegacyMessage>(m) {
            lm.device_id = other.client.device_id.clone();
            let b = serde_json::to_vec(&lm).unwrap_or_default();
            let a = ctx.proxy.inject_post("/v0/data", b).await;
            f.attempt(!accepted(&a));
            ok += usize::from(accepted(&a));
        }
    }
    f.check(
        format!("no message of the earlier run accepted again ({ok} accepted)"),
        ok == 0,
    );
    Ok(())
}

async fn after_rekey(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let mut dev = ctx.device("rrk")?;
    let k0 = ctx.server.stats().key_id;
    let mut sent = Vec::new();
    for _ in 0..12 {
        sent.push(dev.send(1).await?.0);
    }
    let k1 = ctx.server.stats().key_id;
    f.saw(format!(
        "the server key rotated from id {k0} to {k1} while the device sent 12 messages"
    ));
    let mut ok = 0;
    for m in &sent {
        let a = ctx.proxy.inject_post("/v0/data", m.clone()).await;
        f.attempt(!accepted(&a));
        ok += usize::from(accepted(&a));
    }
    f.check(
        format!("no replay accepted after the key rotations ({ok} of 12 accepted)"),
        ok == 0,
    );
    f.note(format!(
        "messages under the current or previous key are accepted; older ones fail only because their key was rotated out (every {ROTATE_EVERY} messages)"
    ));
    Ok(())
}

async fn reorder(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let mut dev = ctx.device("ro")?;
    let mut held = Vec::new();
    for _ in 0..4 {
        let r = dev.readings(1);
        held.push(dev.client.seal(&r).await?);
    }
    let mut once = 0;
    for m in held.iter().rev() {
        let a = ctx.proxy.inject_post("/v0/data", m.clone()).await;
        once += usize::from(accepted(&a));
        f.attempt(true);
    }
    f.check(
        format!("inside the window each reordered message was accepted once ({once}/4)"),
        once == 4,
    );
    let mut again = 0;
    for i in [2usize, 0, 3, 1] {
        let a = ctx.proxy.inject_post("/v0/data", held[i].clone()).await;
        f.attempt(!accepted(&a));
        again += usize::from(accepted(&a));
    }
    f.check(
        format!("re-delivered messages not accepted again ({again} of 4 accepted)"),
        again == 0,
    );
    let r = dev.readings(1);
    let old = dev.client.seal(&r).await?;
    for _ in 0..10 {
        dev.send(1).await?;
    }
    let a = ctx.proxy.inject_post("/v0/data", old).await;
    f.attempt(!accepted(&a));
    f.saw(format!(
        "a message held back behind 10 later ones: HTTP {} ({})",
        a.status,
        String::from_utf8_lossy(&a.body)
    ));
    Ok(())
}

/// Fresh, undelivered messages, each altered by `alter(i, bytes)` and delivered once.
async fn variants(
    ctx: &LCtx,
    f: &mut Findings,
    tag: &str,
    count: impl Fn(usize) -> usize,
    alter: impl Fn(usize, &mut Vec<u8>),
) -> R<u64> {
    let mut dev = ctx.device(tag)?;
    let r = dev.readings(1);
    let sample = dev.client.seal(&r).await?;
    let n = count(sample.len());
    let (kid, pk) = dev.client.fetch_key().await?;
    let mut ok = 0;
    let mut kid = kid;
    let mut pk = pk;
    for i in 0..n {
        if i % 4 == 0 {
            (kid, pk) = dev.client.fetch_key().await?;
        }
        let r = dev.readings(1);
        let plain = serde_json::to_vec(&r).map_err(|e| LabError(e.to_string()))?;
        let m = seal(&dev.client.device_id, kid, &pk, &plain, unix_now());
        let mut b = serde_json::to_vec(&m).map_err(|e| LabError(e.to_string()))?;
        alter(i, &mut b);
        let a = ctx.proxy.inject_post("/v0/data", b).await;
        f.attempt(!accepted(&a));
        ok += u64::from(accepted(&a));
    }
    Ok(ok)
}

async fn tamper(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let ok = variants(
        ctx,
        f,
        "tmp",
        |n| n,
        |i, b| {
            if let Some(x) = b.get_mut(i) {
                *x ^= 0x01;
            }
        },
    )
    .await?;
    f.check(
        format!("no altered message accepted ({ok} accepted)"),
        ok == 0,
    );
    // The key fetch's answer, altered on the way to the device.
    let mut dev = ctx.device("tmp")?;
    let len = {
        let a = ctx.proxy.inject(Method::GET, "/v0/key", Vec::new()).await;
        a.body.len()
    };
    let mut ok2 = 0;
    for i in 0..len {
        let fired = AtomicBool::new(false);
        ctx.proxy.set_hook(Some(Arc::new(FnHook {
            req: |_: &str, _: &mut Vec<u8>| Verdict::Forward,
            resp: move |path: &str, _: &[u8], a: &mut Answer| {
                if path == "/v0/key"
                    && !fired.swap(true, Ordering::SeqCst)
                    && let Some(x) = a.body.get_mut(i)
                {
                    *x ^= 0x01;
                }
            },
        })));
        let r = dev.send(1).await;
        ctx.proxy.set_hook(None);
        let acc = matches!(&r, Ok((_, a)) if accepted(a));
        f.attempt(!acc);
        ok2 += usize::from(acc);
    }
    f.check(
        format!("no message sealed to an altered key accepted ({ok2} accepted)"),
        ok2 == 0,
    );
    Ok(())
}

async fn truncate(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let ok = variants(ctx, f, "trn", |n| n, |i, b| b.truncate(i)).await?;
    let ok2 = variants(
        ctx,
        f,
        "trn",
        |_| 4,
        |_, b| {
            if let Ok(mut m) = serde_json::from_slice::<LegacyMessage>(b) {
                let n = m.ciphertext.len();
                m.ciphertext.truncate(n - 2);
                *b = serde_json::to_vec(&m).unwrap_or_default();
            }
        },
    )
    .await?;
    f.check(
        format!("no truncated message accepted ({} accepted)", ok + ok2),
        ok + ok2 == 0,
    );
    Ok(())
}

async fn extend(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let ok = variants(
        ctx,
        f,
        "ext",
        |_| 5,
        |i, b| match i {
            0 => b.extend_from_slice(b"x"),
            1 => b.extend_from_slice(b"{}"),
            2 => {
                if let Ok(mut m) = serde_json::from_slice::<LegacyMessage>(b) {
                    m.ciphertext.push_str("00ff");
                    *b = serde_json::to_vec(&m).unwrap_or_default();
                }
            }
            3 => {
                if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(b) {
                    v["extra"] = serde_json::json!([{"msg_id": 999, "time_ms": 0, "values": []}]);
                    *b = v.to_string().into_bytes();
                }
            }
            _ => {
                if let Ok(mut m) = serde_json::from_slice::<LegacyMessage>(b) {
                    m.ciphertext.push_str(&m.ciphertext.clone());
                    *b = serde_json::to_vec(&m).unwrap_or_default();
                }
            }
        },
    )
    .await?;
    f.check(
        format!("no extended message accepted ({ok} accepted)"),
        ok == 0,
    );
    Ok(())
}

async fn impersonate(ctx: &LCtx, f: &mut Findings, registered: bool) -> R<()> {
    let id = if registered {
        let mut victim = ctx.device("vic")?;
        victim.send(1).await?;
        victim.client.device_id.clone()
    } else {
        ctx.id("ghost")
    };
    let mut att = ctx.dev_for(&id, true)?;
    let mut ok = 0;
    for _ in 0..3 {
        let (_, a) = att.send(2).await?;
        f.attempt(!accepted(&a));
        ok += usize::from(accepted(&a));
    }
    f.check(
        format!(
            "every message under the {} id refused ({ok} of 3 accepted)",
            if registered { "victim's" } else { "unknown" }
        ),
        ok == 0,
    );
    Ok(())
}

async fn revoked(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let mut dev = ctx.device("rev")?;
    let mut old = Vec::new();
    for _ in 0..2 {
        old.push(dev.send(1).await?.0);
    }
    ctx.server.revoke(&dev.client.device_id);
    let mut ok = 0;
    for _ in 0..2 {
        let (_, a) = dev.send(1).await?;
        f.attempt(!accepted(&a));
        ok += usize::from(accepted(&a));
    }
    for m in old {
        let a = ctx.proxy.inject_post("/v0/data", m).await;
        f.attempt(!accepted(&a));
        ok += usize::from(accepted(&a));
    }
    f.check(
        format!("every message after the revocation refused ({ok} accepted)"),
        ok == 0,
    );
    Ok(())
}

async fn timestamp(ctx: &LCtx, f: &mut Findings, sign: i64) -> R<()> {
    let shift = 400 * sign;
    let ok = variants(
        ctx,
        f,
        "ts",
        |_| 2,
        move |_, b| {
            if let Ok(mut m) = serde_json::from_slice::<LegacyMessage>(b) {
                m.timestamp = (m.timestamp as i64 + shift) as u64;
                *b = serde_json::to_vec(&m).unwrap_or_default();
            }
        },
    )
    .await?;
    let mut dev = ctx.device("ts")?;
    dev.client.clock_offset = shift;
    let mut ok2 = 0;
    for _ in 0..2 {
        let (_, a) = dev.send(1).await?;
        f.attempt(!accepted(&a));
        ok2 += u64::from(accepted(&a));
    }
    f.check(
        format!(
            "every message dated {shift:+} s was refused ({} accepted; window ±{WINDOW_SECS} s)",
            ok + ok2
        ),
        ok + ok2 == 0,
    );
    Ok(())
}

async fn malformed(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut ok = 0;
    for i in 0..300 {
        let len = (next() % 1500) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && !b.is_empty() {
            b[0] = b'{';
        }
        let a = ctx.proxy.inject_post("/v0/data", b).await;
        f.attempt(!accepted(&a));
        ok += usize::from(accepted(&a));
    }
    f.check(
        format!("every random body refused ({ok} accepted)"),
        ok == 0,
    );
    let mut dev = ctx.device("mal")?;
    let (_, a) = dev.send(1).await?;
    f.check("an honest device is served afterwards", accepted(&a));
    Ok(())
}

async fn oversize(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let max = 2 * 1024 * 1024;
    let tls = crate::net::pinned_tls(crate::net::NO_TLS_PIN)?;
    crate::attacks::oversize_raw(&ctx.server.url(), tls, "/v0/data", "/v0/data", max, f).await;
    let a = ctx.proxy.inject_post("/v0/data", vec![b'{'; max + 1]).await;
    f.attempt(a.status == 413);
    f.check(
        format!(
            "every oversized body was answered 413 ({} of {})",
            f.blocked_attempts, f.attempts
        ),
        f.blocked_attempts == f.attempts,
    );
    Ok(())
}

/// [`service::DEVICES`] honest legacy devices through the proxy while the attack runs (see
/// [`service::drive`]). The design has no session: every message fetches the server key
/// (what stands for opening a session here), then is sealed and posted. Returns the
/// measurement and how many of their messages the server accepted.
async fn honest_traffic(ctx: &LCtx, stop: &AtomicBool) -> R<(Service, u64)> {
    let (m, accepted) = service::fleet(|_| honest_device(ctx, stop)).await?;
    let ledger = ctx.ledger.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut seen = HashSet::new();
    let stored = ctx
        .server
        .stored()
        .iter()
        .filter(|row| {
            let key = (row.device_id.clone(), row.reading.msg_id);
            m.acknowledged.contains(&key)
                && seen.insert(key)
                && ledger
                    .get(&row.device_id)
                    .and_then(|l| l.get(&row.reading.msg_id))
                    .is_some_and(|b| *b == row.reading.canonical())
        })
        .count() as u64;
    Ok((m.finish(stored), accepted.iter().sum()))
}

/// One honest device of [`honest_traffic`]; also returns how many of its messages the server
/// accepted.
async fn honest_device(ctx: &LCtx, stop: &AtomicBool) -> R<(Meter, u64)> {
    let mut d = HonestLegacy {
        dev: ctx.device("ok")?,
        accepted: 0,
    };
    let m = service::drive(&mut d, stop).await;
    Ok((m, d.accepted))
}

/// An honest legacy device: its "session" is the server key it fetches before each message.
struct HonestLegacy {
    dev: Dev,
    accepted: u64,
}

impl service::Honest for HonestLegacy {
    type Session = (u32, p256::PublicKey);
    type Reading = LegacyReading;
    const REQUESTS_PER_SESSION: usize = 1;

    fn id(&self) -> String {
        self.dev.client.device_id.clone()
    }

    fn take(&mut self, n: usize) -> Vec<(u64, Self::Reading)> {
        self.dev
            .readings(n)
            .into_iter()
            .map(|r| (r.msg_id, r))
            .collect()
    }

    async fn open(&mut self) -> Result<Self::Session, service::NotServed> {
        self.dev
            .client
            .fetch_key()
            .await
            .map_err(|e| service::NotServed {
                why: format!("key fetch: {e}"),
                retry: true,
            })
    }

    async fn deliver(
        &mut self,
        (kid, pk): &mut Self::Session,
        readings: &[Self::Reading],
    ) -> Result<(), service::NotServed> {
        let fail = |why: String| service::NotServed { why, retry: true };
        let plain = serde_json::to_vec(readings).map_err(|e| fail(e.to_string()))?;
        let msg = seal(&self.dev.client.device_id, *kid, pk, &plain, unix_now());
        let body = serde_json::to_vec(&msg).map_err(|e| fail(e.to_string()))?;
        match self.dev.client.post(body).await {
            Ok(a) if accepted(&a) => {
                self.accepted += 1;
                Ok(())
            }
            Ok(a) => Err(fail(format!("HTTP {}", a.status))),
            Err(e) => Err(fail(format!("no answer: {e}"))),
        }
    }
}

async fn flood(ctx: &LCtx, f: &mut Findings) -> R<()> {
    let rss0 = crate::rss_kib();
    let before = ctx.server.stats();
    let dev = ctx.device("fl")?;
    let (kid, _) = dev.client.fetch_key().await?;
    // As long as against iotseal (twice its half-open lifetime plus a second), and at least
    // as many requests as it gets.
    let run_for = Duration::from_secs((ctx.limits.skew_secs * 2 + 1).clamp(3, 65));
    let give_up = run_for * 4;
    let min_rounds = (ctx.limits.half_open * 3 / 2) as u64;
    let http = HttpClient::new(crate::net::NO_TLS_PIN)?;
    let url = ctx.server.url();
    let counts = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let rounds = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let flood = async {
        let mut workers = Vec::new();
        for _ in 0..16 {
            let (http, url, counts, rounds) =
                (http.clone(), url.clone(), counts.clone(), rounds.clone());
            let device_id = dev.client.device_id.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    let elapsed = t0.elapsed();
                    let enough = elapsed >= run_for && rounds.load(Ordering::Relaxed) >= min_rounds;
                    if enough || elapsed >= give_up {
                        break;
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                    // The current key id, so the server does the ECDH before it can refuse.
                    let key_id = http
                        .send(Method::GET, &format!("{url}/v0/key"), &[], Vec::new())
                        .await
                        .ok()
                        .and_then(|a| serde_json::from_slice::<serde_json::Value>(&a.body).ok())
                        .and_then(|v| v.get("key_id").and_then(serde_json::Value::as_u64))
                        .map_or(kid, |k| k as u32);
                    let eph = new_key();
                    let m = LegacyMessage {
                        device_id: device_id.clone(),
                        key_id,
                        ephemeral: public_hex(&eph),
                        iv: hex::encode([0u8; 16]),
                        ciphertext: hex::encode([0u8; 48]),
                        timestamp: unix_now(),
                        mac: hex::encode([0u8; 32]),
                    };
                    let st = http
                        .send(
                            Method::POST,
                            &format!("{url}/v0/data"),
                            &[("content-type", "application/json".into())],
                            serde_json::to_vec(&m).unwrap_or_default(),
                        )
                        .await
                        .map_or(0, |a| a.status);
                    *counts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(st)
                        .or_default() += 1;
                }
            }));
        }
        for w in workers {
            let _ = w.await;
        }
        t0.elapsed().as_secs_f64()
    };
    let stop = AtomicBool::new(false);
    let (secs, honest) = service::alongside(&stop, flood, honest_traffic(ctx, &stop)).await;
    let (honest, honest_accepted) = honest?;
    let after = ctx.server.stats();
    let counts = counts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (st, n) in &counts {
        for _ in 0..*n {
            f.attempt(*st != 200);
        }
    }
    let rss1 = crate::rss_kib();
    let n = rounds.load(Ordering::Relaxed);
    f.saw(format!(
        "{n} key fetches and {n} forged messages in {secs:.2} s from 16 connections: the server keeps no per-handshake state, but did {} P-256 ECDH operations for messages it then refused",
        (after.ecdh - before.ecdh).saturating_sub(honest_accepted)
    ));
    f.served(honest, "during the flood");
    let forged = (after.accepted - before.accepted).saturating_sub(honest_accepted);
    f.check(
        format!("no forged message accepted ({forged})"),
        forged == 0,
    );
    if let (Some(a), Some(b)) = (rss0, rss1) {
        f.check(
            format!("memory stayed bounded (RSS {a} KiB → {b} KiB)"),
            b.saturating_sub(a) < 256 * 1024,
        );
    }
    Ok(())
}

async fn dispatch(ctx: &LCtx, name: &str, f: &mut Findings) -> R<()> {
    let l = &ctx.limits;
    match name {
        "mitm-key-substitution" => mitm(ctx, f).await,
        "replay-immediate" => replays(ctx, f, "rpi", 3, 2, Duration::ZERO).await,
        "replay-delayed" => {
            let d = Duration::from_millis(l.skew_secs.max(l.max_record_age_secs) * 1000 + 1500);
            f.saw(format!(
                "replayed {:.1} s later: beyond iotseal's lab skew and record age limit, within the legacy {WINDOW_SECS}-second window",
                d.as_secs_f64()
            ));
            replays(ctx, f, "rpd", 3, 1, d).await
        }
        "replay-cross-session" => cross_session(ctx, f).await,
        "replay-after-rekey" => after_rekey(ctx, f).await,
        "reorder" => reorder(ctx, f).await,
        "tamper" => tamper(ctx, f).await,
        "truncate" => truncate(ctx, f).await,
        "extend" => extend(ctx, f).await,
        "impersonate-unknown" => impersonate(ctx, f, false).await,
        "impersonate-wrong-key" => impersonate(ctx, f, true).await,
        "revoked-device" => revoked(ctx, f).await,
        "stale-timestamp" => timestamp(ctx, f, -1).await,
        "future-timestamp" => timestamp(ctx, f, 1).await,
        "oversize-body" => oversize(ctx, f).await,
        "malformed" => malformed(ctx, f).await,
        "slow-client" => {
            let tls = crate::net::pinned_tls(crate::net::NO_TLS_PIN)?;
            let stop = AtomicBool::new(false);
            let url = ctx.server.url();
            let slow = crate::attacks::slow_clients(
                &url,
                tls,
                l.header_read_timeout_secs,
                l.request_timeout_secs,
                "/v0/data",
                f,
            );
            let (r, honest) = service::alongside(&stop, slow, honest_traffic(ctx, &stop)).await;
            r?;
            f.served(honest?.0, "while the slow connections were open");
            Ok(())
        }
        "handshake-flood" => flood(ctx, f).await,
        "connection-hog" => {
            let tls = crate::net::pinned_tls(crate::net::NO_TLS_PIN)?;
            let stop = AtomicBool::new(false);
            let url = ctx.server.url();
            let from = crate::floods::hog_source();
            let hog = crate::floods::hog(
                &url,
                tls,
                from,
                crate::floods::hog_target(true),
                crate::floods::HOG_SECS,
            );
            let (rep, honest) = service::alongside(&stop, hog, honest_traffic(ctx, &stop)).await;
            f.saw(rep.describe(from));
            for _ in 0..rep.attempts {
                f.attempt(false);
            }
            f.served(honest?.0, "while one address hogged connections");
            Ok(())
        }
        _ => Err(LabError(format!("unknown attack {name}"))),
    }
}

/// Stored rows from `from` on, against the ledger; duplicates (same device and message id as
/// an earlier row) count as forgeries.
fn forgeries(ctx: &LCtx, from: usize) -> (u64, String) {
    let all = ctx.server.stored();
    let ledger = ctx.ledger.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut seen = HashSet::new();
    let (mut forged, mut dups, mut altered, mut honest) = (0u64, 0u64, 0u64, 0u64);
    for (i, row) in all.iter().enumerate() {
        let dup = !seen.insert((row.device_id.clone(), row.reading.msg_id));
        if i < from {
            continue;
        }
        let genuine = ledger
            .get(&row.device_id)
            .and_then(|m| m.get(&row.reading.msg_id))
            .is_some_and(|b| *b == row.reading.canonical());
        if dup {
            dups += 1;
            forged += 1;
        } else if !genuine {
            altered += 1;
            forged += 1;
        } else {
            honest += 1;
        }
    }
    (
        forged,
        format!(
            "storage: {honest} honest readings stored once; {dups} stored again (replays), {altered} not sent by the device or altered"
        ),
    )
}

pub(crate) async fn run(names: &[&str], options: &LabOptions) -> Vec<AttackOutcome> {
    if names.is_empty() {
        return Vec::new();
    }
    let setup = async {
        let server = LegacyServer::start().await?;
        let proxy = Proxy::start(HttpClient::new(crate::net::NO_TLS_PIN)?, &server.url()).await?;
        let p = iotseal_crypto_awslc::default_provider();
        Ok::<_, LabError>(LCtx {
            server,
            proxy,
            run: format!(
                "lab{}",
                hex::encode(p.random_vec(3).unwrap_or_else(|_| vec![0; 3]))
            ),
            ledger: Ledger::default(),
            n: AtomicU64::new(0),
            limits: GatewayLimits::lab(),
        })
    };
    let ctx = match setup.await {
        Ok(c) => c,
        Err(e) => {
            return names
                .iter()
                .map(|n| AttackOutcome::failed(n, "legacy", describe(n), e.0.clone()))
                .collect();
        }
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(why) = not_applicable(name) {
            out.push(AttackOutcome::not_applicable(name, "legacy", why));
            continue;
        }
        if options.progress {
            eprintln!("attack {name} (legacy) ...");
        }
        ctx.proxy.set_hook(None);
        let from = ctx.server.stats().stored;
        let before = ctx.server.stats().refusals;
        let t0 = Instant::now();
        let mut f = Findings::default();
        let r = dispatch(&ctx, name, &mut f).await;
        ctx.proxy.set_hook(None);
        if let Err(e) = r {
            let mut o = AttackOutcome::failed(name, "legacy", describe(name), e.0);
            o.elapsed_ms = t0.elapsed().as_millis() as u64;
            out.push(o);
            continue;
        }
        let after = ctx.server.stats().refusals;
        let refusals: BTreeMap<String, u64> = after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let (forged, note) = forgeries(&ctx, from);
        let _ = tally(&refusals);
        out.push(crate::attacks::finish(
            name,
            "legacy",
            describe(name),
            f,
            refusals,
            forged,
            note,
            t0,
        ));
    }
    out
}
