//! The attacks against iotseal. Each one drives honest devices through the proxy, attacks
//! the traffic, and reports what it observed; the runner adds the refusal counters seen at
//! the gateway and checks storage against what the honest devices sent.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotseal_device::{DeviceClient, HttpsTransport, IdentityFile};
use iotseal_proto::crypto::ActiveKeyExchange;
use iotseal_proto::handshake::PinnedKey;
use iotseal_proto::handshake::messages::{Finish, RetryReason};
use iotseal_proto::record::{Header, batch};
use iotseal_proto::{CryptoProvider, SigAlg, Suite, Time};
use tokio::io::AsyncWriteExt;

use crate::device::{HsFail, LabDevice, Ledger, covers, lab_options, sdk_device, sdk_push};
use crate::net::{Answer, connect_raw};
use crate::outcome::Service;
use crate::outcome::{AttackOutcome, Findings, Judged, criterion, judged_by, tally};
use crate::proxy::{Exchange, Hook, Proxy, Verdict};
use crate::service::{self, Meter};
use crate::target::{Delta, Gw, Metrics};
use crate::wire::{M1, forged_retry, relay_m2, remac, swap_m2_share};
use crate::{LabError, LabOptions};

type R<T> = Result<T, LabError>;
pub(crate) type BoxFut<'a> = Pin<Box<dyn Future<Output = R<Findings>> + Send + 'a>>;

/// The classical suite used where every byte of every message is attacked (small messages).
pub(crate) const SMALL: &str = "x25519/ed25519/aes256gcm";
/// The weak suite a downgrade tries to force.
const WEAK: &str = "x25519/ed25519/aes128gcm";

pub(crate) fn suite(s: &str) -> Suite {
    s.parse().expect("valid suite name")
}

/// What each attack tries (shown in the report).
pub(crate) fn describe(name: &str) -> &'static str {
    match name {
        "mitm-key-substitution" => {
            "The proxy swaps the ephemeral key share in M1 (recomputing mac1: the pin is public), in M2, or both with a full relay that re-encrypts M2 for the device under keys the attacker shares with it; three suites."
        }
        "mitm-tls" => {
            "A proxy presents its own TLS certificate to devices that pin the gateway's; then a TLS-terminating middlebox the device does trust reads every body and searches it for the readings."
        }
        "replay-immediate" => {
            "Every request of an honest device (M1, M3 with records, record batches) is replayed twice right after it was answered."
        }
        "replay-delayed" => {
            "Every request of an honest device is replayed after the clock skew and the record age limit have passed."
        }
        "replay-cross-session" => {
            "Records of a first session are replayed after the device opened a second one: verbatim, and with the header's session id rewritten to the new session."
        }
        "replay-after-rekey" => {
            "A device updates its keys every 2 records; its records from old epochs (and its M3) are replayed after the ratchet moved on."
        }
        "replay-handshake" => {
            "A recorded M1 and M3 are replayed at once and after the skew, trying to open a session or get records processed again."
        }
        "reorder" => {
            "Sealed records are delivered in reverse order (inside the window: each must be accepted and stored once), re-delivered shuffled, and one is held back behind 1029 later records (outside the window)."
        }
        "tamper" => {
            "One bit flipped at every byte position of M1 (with and without a recomputed mac1), M2, M3 and one record."
        }
        "truncate" => {
            "M1 cut at every length, M2 and M3 at several lengths, and one record at every length."
        }
        "extend" => {
            "Bytes appended to M1, M2, M3 (junk, and a record of another session) and to records and batches; a record repeated in one batch."
        }
        "downgrade" => {
            "The device offers the post-quantum default and a weaker classical suite; the proxy strips the stronger offers (keeping or cutting down the key share) and forges Retry messages to force the weak suite."
        }
        "impersonate-unknown" => {
            "A complete handshake with records under a device id that is not registered (three suites)."
        }
        "impersonate-wrong-key" => {
            "A registered device's id used with the attacker's own key (same algorithm, and another algorithm)."
        }
        "revoked-device" => {
            "A device with a live session is revoked through the admin API, then keeps sending, handshakes again, and its old traffic is replayed."
        }
        "stale-timestamp" => {
            "M1's time set back beyond the skew (mac1 recomputed), an attacker's retried hello with a genuine cookie and an old time, and a record held back beyond the record age limit."
        }
        "future-timestamp" => {
            "M1's time set ahead beyond the skew (mac1 recomputed), an attacker's retried hello with a genuine cookie and a future time, and a record dated ahead by a device clock."
        }
        "oversize-body" => {
            "Bodies above the gateway's limit: announced by Content-Length, streamed chunked, and sent whole through the proxy."
        }
        "malformed" => "300 random bodies (some with plausible first bytes) to both endpoints.",
        "slow-client" => {
            "Connections that send request headers one byte at a time, and requests whose body trickles, past the gateway's timeouts, while an honest device opens sessions and sends readings."
        }
        "handshake-flood" => {
            "Valid hellos (mac1 is public) from 16 connections for twice the half-open lifetime plus a second (at least three times the half-open cap), never finished, while an honest device opens sessions and sends readings."
        }
        "connection-hog" => {
            "One address opens TLS connections as fast as it can, trying to hold up to 10,000 at once (fewer if the lab process has too few descriptors; the evidence says how many), re-opening what the gateway closes, for 8 s, while honest devices at another address open sessions and send readings."
        }
        "hello-flood-addresses" => {
            "Fresh valid hellos from 250 addresses at full speed (each following a cookie Retry once, as a device would, never finishing), for twice the clock skew plus a second, while honest devices open sessions and send readings."
        }
        "proxy-bucket-drain" => {
            "A gateway behind a shared layer-4 proxy speaking PROXY protocol v2, with the default per-address handshake rate: an attacker behind the proxy sends hellos far above that rate for 5 s while honest devices behind the same proxy open sessions and send readings."
        }
        _ => "",
    }
}

/// Per-run state shared by the attacks.
pub(crate) struct Ctx {
    pub(crate) gw: Gw,
    pub(crate) proxy: Proxy,
    pub(crate) run: String,
    /// Readings the honest devices sent.
    pub(crate) ledger: Ledger,
    /// Readings attackers made up (never honest).
    pub(crate) forged: Ledger,
    devices: Mutex<Vec<String>>,
    n: AtomicU64,
    pub(crate) p: CryptoProvider,
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

    pub(crate) fn pin(&self) -> PinnedKey {
        self.gw
            .pins
            .core_pins()
            .ok()
            .and_then(|v| v.into_iter().next())
            .expect("the gateway pins at least one key")
    }

    fn pins(&self) -> Vec<PinnedKey> {
        self.gw.pins.core_pins().unwrap_or_default()
    }

    /// A registered honest device through the proxy.
    async fn device(&self, tag: &str, alg: SigAlg, offers: Option<Vec<Suite>>) -> R<LabDevice> {
        let d = LabDevice::new(
            &self.new_id(tag),
            alg,
            offers,
            &self.gw.pins,
            self.proxy.url(),
            &self.ledger,
        )?;
        self.gw.register(&d.identity).await?;
        Ok(d)
    }

    /// An attacker's device (not registered; its readings are forgeries).
    fn attacker(&self, id: &str, alg: SigAlg, offers: Option<Vec<Suite>>) -> R<LabDevice> {
        let mut d = LabDevice::new(
            id,
            alg,
            offers,
            &self.gw.pins,
            self.proxy.url(),
            &self.forged,
        )?;
        d.forger();
        Ok(d)
    }

    /// A registered SDK device through the proxy.
    async fn sdk(
        &self,
        tag: &str,
        tweak: impl FnOnce(&mut iotseal_proto::handshake::DeviceConfig),
        opts: iotseal_device::DeviceOptions,
    ) -> R<(DeviceClient<HttpsTransport>, IdentityFile)> {
        let id = IdentityFile::generate(&self.p, &self.new_id(tag), SigAlg::Ed25519)
            .map_err(|e| LabError(format!("keygen: {e}")))?;
        self.gw.register(&id).await?;
        let d = sdk_device(&id, &self.gw.pins, self.proxy.url(), tweak, opts)?;
        Ok((d, id))
    }

    async fn metrics(&self) -> R<Metrics> {
        self.gw.metrics().await
    }

    /// An attacker-built hello for `s` with the given wire time (valid mac1).
    fn attacker_hello(&self, s: Suite, time: u32, cookie: Option<Vec<u8>>) -> R<Vec<u8>> {
        hello_for(&self.p, &self.pin(), s, time, cookie)
    }

    /// A context around `gw`: a proxy in front of it, empty ledgers.
    pub(crate) async fn with_gateway(gw: Gw, run: &str, p: CryptoProvider) -> R<Self> {
        let proxy = match Proxy::start(gw.http.clone(), gw.url()).await {
            Ok(p) => p,
            Err(e) => {
                gw.close().await;
                return Err(e);
            }
        };
        Ok(Self {
            gw,
            proxy,
            run: run.to_string(),
            ledger: Ledger::default(),
            forged: Ledger::default(),
            devices: Mutex::new(Vec::new()),
            n: AtomicU64::new(0),
            p,
        })
    }

    /// Stops the proxy and the gateway.
    pub(crate) async fn close(self) {
        let Self { gw, proxy, .. } = self;
        drop(proxy);
        gw.close().await;
    }
}

/// A hook from two closures.
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

fn hook<Q, S>(req: Q, resp: S) -> Arc<dyn Hook>
where
    Q: Fn(&str, &mut Vec<u8>) -> Verdict + Send + Sync + 'static,
    S: Fn(&str, &[u8], &mut Answer) + Send + Sync + 'static,
{
    Arc::new(FnHook { req, resp })
}

fn no_req(_: &str, _: &mut Vec<u8>) -> Verdict {
    Verdict::Forward
}

fn no_resp(_: &str, _: &[u8], _: &mut Answer) {}

fn is_m1(path: &str, b: &[u8]) -> bool {
    path == "/v1/handshake" && b.first() == Some(&0x01)
}

fn is_m3(path: &str, b: &[u8]) -> bool {
    path == "/v1/handshake" && b.first() == Some(&0x04)
}

/// Rewrites the first M1 that passes through the proxy (once).
fn on_first_m1(f: impl Fn(&mut Vec<u8>) -> Verdict + Send + Sync + 'static) -> Arc<dyn Hook> {
    let fired = AtomicBool::new(false);
    hook(
        move |path, body| {
            if is_m1(path, body) && !fired.swap(true, Ordering::SeqCst) {
                f(body)
            } else {
                Verdict::Forward
            }
        },
        no_resp,
    )
}

/// Rewrites the first M3 that passes through the proxy (once).
fn on_first_m3(f: impl Fn(&mut Vec<u8>) + Send + Sync + 'static) -> Arc<dyn Hook> {
    let fired = AtomicBool::new(false);
    hook(
        move |path, body| {
            if is_m3(path, body) && !fired.swap(true, Ordering::SeqCst) {
                f(body);
            }
            Verdict::Forward
        },
        no_resp,
    )
}

/// Rewrites the first M2 that comes back (once).
fn on_first_m2(f: impl Fn(&mut Vec<u8>) + Send + Sync + 'static) -> Arc<dyn Hook> {
    let fired = AtomicBool::new(false);
    hook(no_req, move |path, req, answer| {
        if is_m1(path, req)
            && answer.body.first() == Some(&0x03)
            && !fired.swap(true, Ordering::SeqCst)
        {
            f(&mut answer.body);
        }
    })
}

pub(crate) fn wire_now() -> u32 {
    Time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
    .wire_secs()
}

/// The honest requests of a proxy log (what the attacker recorded).
pub(crate) fn recorded(log: &[Exchange]) -> Vec<(String, Vec<u8>, Answer)> {
    log.iter()
        .filter(|e| !e.injected)
        .filter_map(|e| Some((e.path.clone(), e.forwarded.clone()?, e.upstream.clone()?)))
        .collect()
}

/// Replays recorded requests and classifies each answer: a refusal, a Retry (no state kept),
/// or a byte-identical cached answer count as blocked on their own; an acknowledgement to a
/// replayed record batch counts as blocked if the gateway processed nothing (checked by the
/// caller from the counters).
async fn replay_all(
    ctx: &Ctx,
    recs: &[(String, Vec<u8>, Answer)],
    f: &mut Findings,
    kinds: &mut BTreeMap<String, u64>,
) {
    for (path, body, original) in recs {
        let a = ctx.proxy.inject_post(path, body.clone()).await;
        let kind = if a.status != 200 {
            format!("refused {}", a.status)
        } else if a.body == original.body && path == "/v1/handshake" {
            "same cached answer".to_string()
        } else if a.body.first() == Some(&0x02) {
            "Retry (no state)".to_string()
        } else if path == "/v1/records" {
            "acknowledgement of what is stored".to_string()
        } else {
            "new answer".to_string()
        };
        let blocked = kind != "new answer";
        f.attempt(blocked);
        *kinds.entry(kind).or_default() += 1;
    }
}

pub(crate) fn nothing_processed(f: &mut Findings, d: &Delta) {
    f.check(
        format!(
            "no replayed record accepted (records accepted +{})",
            d.records_accepted
        ),
        d.records_accepted == 0,
    );
    f.check(
        format!(
            "nothing stored again (readings stored +{}, duplicates +{})",
            d.readings_stored, d.readings_duplicate
        ),
        d.readings_stored == 0 && d.readings_duplicate == 0,
    );
    f.check(
        format!("no session established by a replay (+{})", d.established),
        d.established == 0,
    );
}

fn hs_result(f: &mut Findings, r: &Result<crate::device::Handshook, HsFail>) -> bool {
    match r {
        Ok(_) => {
            f.attempt(false);
            false
        }
        Err(e) => {
            f.attempt(true);
            f.device_error(e.kind());
            true
        }
    }
}

// ---------------------------------------------------------------------------------------

fn mitm_key_substitution(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let before = ctx.metrics().await?;
        let mut relay_opened = 0;
        for sname in [
            Suite::DEFAULT.to_string().as_str(),
            SMALL,
            "p256/ecdsa-p256/aes128gcm",
        ] {
            let s = suite(sname);
            for variant in ["M1", "M2", "relay"] {
                let mut dev = ctx.device("mitm", s.sig, Some(vec![s])).await?;
                let p = ctx.p;
                let pin = ctx.pin();
                let pins = ctx.pins();
                #[derive(Default)]
                struct St {
                    attacker: Option<Box<dyn ActiveKeyExchange>>,
                    device_m1: Vec<u8>,
                    forwarded_m1: Vec<u8>,
                    relay_error: Option<String>,
                    opened: bool,
                }
                let st = Arc::new(Mutex::new(St::default()));
                let (st1, st2) = (st.clone(), st.clone());
                let swap_m1 = variant != "M2";
                let h = hook(
                    move |path, body| {
                        if !(is_m1(path, body) && swap_m1) {
                            return Verdict::Forward;
                        }
                        let mut g = st1.lock().unwrap_or_else(|e| e.into_inner());
                        if let (Some(mut m1), Ok(kem)) = (M1::parse(body), p.kem(s.kem))
                            && let Ok(att) = kem.start(p.random)
                        {
                            g.device_m1 = body.clone();
                            m1.share = att.share().to_vec();
                            *body = m1.encode(&p, &pin);
                            g.forwarded_m1 = body.clone();
                            g.attacker = Some(att);
                        }
                        Verdict::Forward
                    },
                    move |path, req, answer| {
                        if !is_m1(path, req) || answer.body.first() != Some(&0x03) {
                            return;
                        }
                        let mut g = st2.lock().unwrap_or_else(|e| e.into_inner());
                        match variant {
                            "M2" => {
                                let Some(m1) = M1::parse(req) else { return };
                                if let Ok(r) =
                                    p.kem(s.kem).and_then(|k| k.respond(&m1.share, p.random))
                                    && let Some(b) = swap_m2_share(&answer.body, &r.share)
                                {
                                    answer.body = b;
                                }
                            }
                            "relay" => {
                                let Some(att) = g.attacker.take() else { return };
                                match relay_m2(
                                    &p,
                                    &pins,
                                    &g.device_m1,
                                    &g.forwarded_m1,
                                    &answer.body,
                                    att,
                                ) {
                                    Ok(r) => {
                                        g.opened = r.opened_gateway_part;
                                        answer.body = r.m2_for_device;
                                    }
                                    Err(e) => g.relay_error = Some(e.0),
                                }
                            }
                            _ => {}
                        }
                    },
                );
                ctx.proxy.set_hook(Some(h));
                let piggy = dev.readings(2);
                let r = dev.handshake(&piggy).await;
                ctx.proxy.set_hook(None);
                hs_result(&mut f, &r);
                let g = st.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = &g.relay_error {
                    return Err(LabError(e.clone()));
                }
                if g.opened {
                    relay_opened += 1;
                }
            }
        }
        let d = Delta::between(&before, &ctx.metrics().await?);
        f.check(
            "the device refused every substituted handshake",
            f.blocked_attempts == f.attempts,
        );
        f.check(
            format!("the gateway established no session (+{})", d.established),
            d.established == 0,
        );
        f.check("no reading reached the gateway", d.records_accepted == 0);
        f.saw(format!(
            "full relay: the attacker opened the gateway's M2 in {relay_opened}/3 suites (it shares that key) and re-encrypted it for the device; only the gateway's signature over the transcript it saw could not be redone"
        ));
        f.saw("the attacker read 0 readings: the device never sent M3");
        Ok(f)
    })
}

fn mitm_tls(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let mitm = Proxy::start_tls(ctx.gw.http.clone(), ctx.gw.url()).await?;
        // Phase 1: the device pins the gateway's certificate.
        let dev = ctx.device("tls", SigAlg::Ed25519, None).await?;
        let mut pins = ctx.gw.pins.clone();
        pins.url = mitm.url().to_string();
        let mut dev1 = LabDevice::with_identity(
            dev.identity.clone(),
            None,
            &pins,
            mitm.url(),
            &ctx.ledger,
            |_| {},
        )?;
        for _ in 0..3 {
            let piggy = dev1.readings(1);
            let r = dev1.handshake(&piggy).await;
            hs_result(&mut f, &r);
        }
        // The impostor counts a refused TLS handshake when its accept fails, a moment after
        // the device gave up.
        let mut waited = 0;
        while mitm.tls_counts().1 < 3 && waited < 20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        let (ok, failed) = mitm.tls_counts();
        if let Some(e) = mitm.tls_error() {
            f.note(format!("the device aborted TLS with the impostor: {e}"));
        }
        let relayed = mitm.take_log().len();
        f.check(
            format!("no TLS session with the impostor ({ok} completed, {failed} refused)"),
            ok == 0 && failed >= 3,
        );
        f.check(
            format!("no request reached the impostor ({relayed})"),
            relayed == 0,
        );
        // Phase 2: a TLS-terminating middlebox the device trusts reads every body.
        let mut pins2 = ctx.gw.pins.clone();
        pins2.url = mitm.url().to_string();
        pins2.tls_cert_sha256 = mitm.cert_sha256.clone().unwrap_or_default();
        let mut dev2 = LabDevice::with_identity(
            dev.identity.clone(),
            None,
            &pins2,
            mitm.url(),
            &ctx.ledger,
            |_| {},
        )?;
        let piggy = dev2.readings(3);
        let mut h = dev2
            .handshake(&piggy)
            .await
            .map_err(|e| LabError(format!("through the trusted middlebox: {}", e.kind())))?;
        let more = dev2.readings(6);
        let recs: Vec<_> = more
            .chunks(2)
            .map(|c| dev2.seal(&mut h.session, c))
            .collect();
        for r in recs {
            let _ = dev2.send(&[r]).await;
        }
        let seen = mitm.take_log();
        let bodies: Vec<&[u8]> = seen
            .iter()
            .flat_map(|e| [e.from_device.as_slice(), e.to_device.body.as_slice()])
            .collect();
        let mut encoded: Vec<Vec<u8>> = Vec::new();
        for r in piggy.iter().chain(&more) {
            let mut b = Vec::new();
            r.encode(&mut b);
            encoded.push(b);
        }
        let needles: Vec<&[u8]> = encoded
            .iter()
            .map(Vec::as_slice)
            .chain([dev.id.as_bytes()])
            .collect();
        let mut found = 0;
        for body in &bodies {
            f.attempt(true);
            for n in &needles {
                if body.windows(n.len()).any(|w| w == *n) {
                    found += 1;
                }
            }
        }
        f.check(
            format!(
                "the trusted middlebox found none of {} readings nor the device id in the {} bodies it read ({found} found)",
                encoded.len(),
                bodies.len()
            ),
            found == 0,
        );
        f.saw(format!(
            "device with the real pin: {}",
            tally(&f.device_errors)
        ));
        Ok(f)
    })
}

/// Honest SDK traffic: `readings` readings in records of 2, one record per request.
async fn honest_sdk_run(
    ctx: &Ctx,
    tag: &str,
    readings: usize,
    tweak: impl FnOnce(&mut iotseal_proto::handshake::DeviceConfig),
    per_record: usize,
) -> R<(DeviceClient<HttpsTransport>, Vec<Exchange>)> {
    let mut opts = lab_options(Duration::from_secs(10));
    opts.readings_per_record = per_record;
    let (mut dc, _) = ctx.sdk(tag, tweak, opts).await?;
    sdk_push(&mut dc, &ctx.ledger, readings);
    dc.flush()
        .await
        .map_err(|e| LabError(format!("honest device: {e}")))?;
    Ok((dc, ctx.proxy.take_log()))
}

fn replay_immediate(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let (_dc, log) = honest_sdk_run(ctx, "rpi", 6, |_| {}, 2).await?;
        let recs = recorded(&log);
        let before = ctx.metrics().await?;
        let mut kinds = BTreeMap::new();
        for _ in 0..2 {
            replay_all(ctx, &recs, &mut f, &mut kinds).await;
        }
        let d = Delta::between(&before, &ctx.metrics().await?);
        nothing_processed(&mut f, &d);
        f.note(format!("answers: {}", tally(&kinds)));
        f.saw(format!("{} honest requests recorded", recs.len()));
        Ok(f)
    })
}

fn replay_delayed(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let (_dc, log) = honest_sdk_run(ctx, "rpd", 6, |_| {}, 2).await?;
        let recs = recorded(&log);
        let l = &ctx.gw.limits;
        let wait = Duration::from_millis(l.skew_secs.max(l.max_record_age_secs) * 1000 + 1500);
        tokio::time::sleep(wait).await;
        let before = ctx.metrics().await?;
        let mut kinds = BTreeMap::new();
        replay_all(ctx, &recs, &mut f, &mut kinds).await;
        let d = Delta::between(&before, &ctx.metrics().await?);
        nothing_processed(&mut f, &d);
        f.note(format!("answers: {}", tally(&kinds)));
        f.saw(format!(
            "{} requests replayed {:.1} s later (skew {} s, record age limit {} s)",
            recs.len(),
            wait.as_secs_f64(),
            l.skew_secs,
            l.max_record_age_secs
        ));
        Ok(f)
    })
}

pub(crate) fn session_of_flight(body: &[u8]) -> Option<u32> {
    if body.first() == Some(&0x04) {
        Finish::peek_session_id(body).ok()
    } else {
        batch::split(body)
            .ok()?
            .first()
            .and_then(|r| Header::peek_session_id(r).ok())
    }
}

pub(crate) fn rewrite_session(body: &[u8], sid: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for r in batch::split(body).unwrap_or_default() {
        let mut r = r.to_vec();
        if r.len() > 5 {
            r[1..5].copy_from_slice(&sid.to_be_bytes());
        }
        batch::push(&mut out, &r);
    }
    out
}

fn replay_cross_session(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let mut opts = lab_options(Duration::from_secs(10));
        opts.readings_per_record = 2;
        let (mut dc, _) = ctx.sdk("rxs", |_| {}, opts).await?;
        sdk_push(&mut dc, &ctx.ledger, 8);
        dc.flush().await.map_err(|e| LabError(e.to_string()))?;
        let s1 = recorded(&ctx.proxy.take_log());
        dc.drop_session();
        sdk_push(&mut dc, &ctx.ledger, 2);
        dc.flush().await.map_err(|e| LabError(e.to_string()))?;
        let s2 = recorded(&ctx.proxy.take_log());
        let sid1 = s1.iter().find_map(|(_, b, _)| session_of_flight(b));
        let sid2 = s2
            .iter()
            .filter(|(p, b, _)| p == "/v1/handshake" && b.first() == Some(&0x04))
            .find_map(|(_, b, _)| session_of_flight(b));
        let (Some(sid1), Some(sid2)) = (sid1, sid2) else {
            return Err(LabError("could not find the two sessions".into()));
        };
        f.saw(format!(
            "session 1 = {sid1:#010x}, session 2 = {sid2:#010x}"
        ));
        let before = ctx.metrics().await?;
        let mut kinds = BTreeMap::new();
        // Verbatim: session 1 is still live (sessions per device), its window refuses them.
        replay_all(ctx, &s1, &mut f, &mut kinds).await;
        // Spliced into session 2.
        let spliced: Vec<_> = s1
            .iter()
            .filter(|(p, _, _)| p == "/v1/records")
            .map(|(p, b, a)| (p.clone(), rewrite_session(b, sid2), a.clone()))
            .collect();
        replay_all(ctx, &spliced, &mut f, &mut kinds).await;
        let d = Delta::between(&before, &ctx.metrics().await?);
        nothing_processed(&mut f, &d);
        f.note(format!("answers: {}", tally(&kinds)));
        Ok(f)
    })
}

fn replay_after_rekey(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let (_dc, log) =
            honest_sdk_run(ctx, "rrk", 10, |c| c.session.rekey_after_records = 2, 1).await?;
        let recs = recorded(&log);
        let mut epochs = BTreeSet::new();
        for (_, b, _) in &recs {
            let tail = if b.first() == Some(&0x04) {
                Finish::decode(b)
                    .map(|m| m.records.to_vec())
                    .unwrap_or_default()
            } else {
                b.clone()
            };
            for r in batch::split(&tail).unwrap_or_default() {
                if let Ok((h, _)) = Header::decode(r) {
                    epochs.insert(h.epoch_bits);
                }
            }
        }
        f.saw(format!("the honest records spanned key epochs {epochs:?}"));
        f.check("the device really updated its keys", epochs.len() >= 3);
        let before = ctx.metrics().await?;
        let mut kinds = BTreeMap::new();
        replay_all(ctx, &recs, &mut f, &mut kinds).await;
        let d = Delta::between(&before, &ctx.metrics().await?);
        nothing_processed(&mut f, &d);
        f.note(format!("answers: {}", tally(&kinds)));
        Ok(f)
    })
}

fn replay_handshake(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let mut dev = ctx.device("rhs", SigAlg::Ed25519, None).await?;
        let piggy = dev.readings(2);
        let h = dev
            .handshake(&piggy)
            .await
            .map_err(|e| LabError(format!("honest handshake: {}", e.kind())))?;
        ctx.proxy.take_log();
        let before = ctx.metrics().await?;
        let mut kinds = BTreeMap::new();
        let m2 = Answer {
            status: 200,
            body: h.m2.clone(),
        };
        let flight = vec![
            ("/v1/handshake".to_string(), h.m1.clone(), m2.clone()),
            ("/v1/handshake".to_string(), h.m1.clone(), m2),
            (
                "/v1/handshake".to_string(),
                h.m3.clone(),
                Answer {
                    status: 200,
                    body: h.m3_answer.clone(),
                },
            ),
        ];
        replay_all(ctx, &flight, &mut f, &mut kinds).await;
        let l = &ctx.gw.limits;
        tokio::time::sleep(Duration::from_millis(l.skew_secs * 1000 + 1500)).await;
        replay_all(ctx, &flight, &mut f, &mut kinds).await;
        let d = Delta::between(&before, &ctx.metrics().await?);
        nothing_processed(&mut f, &d);
        f.note(format!("answers: {}", tally(&kinds)));
        f.saw(format!(
            "retransmissions answered from the cache: {}, Retry(Clock): {}",
            d.retransmissions, d.retries
        ));
        Ok(f)
    })
}

fn reorder(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let mut dev = ctx.device("ro", SigAlg::Ed25519, None).await?;
        let mut h = honest(ctx, &mut dev, &[]).await?;
        let rs = dev.readings(8);
        let mut sealed = Vec::new();
        for r in &rs {
            let seq = h.session.next_seq();
            sealed.push((seq, dev.seal(&mut h.session, std::slice::from_ref(r))));
        }
        let before = ctx.metrics().await?;
        let mut accepted_once = 0;
        for (seq, rec) in sealed.iter().rev() {
            let mut b = Vec::new();
            batch::push(&mut b, rec);
            let a = ctx.proxy.inject_post("/v1/records", b).await;
            let ok = a.status == 200 && covers(&dev.acks(&mut h.session, &a.body), *seq);
            f.attempt(ok);
            if ok {
                accepted_once += 1;
            }
        }
        let mid = ctx.metrics().await?;
        let d1 = Delta::between(&before, &mid);
        f.check(
            format!(
                "inside the window each reordered record was accepted once ({accepted_once}/8 acknowledged, +{} accepted)",
                d1.records_accepted
            ),
            accepted_once == 8 && d1.records_accepted == 8,
        );
        // Shuffled re-delivery.
        let order = [3usize, 7, 0, 5, 1, 6, 2, 4];
        for i in order {
            let m0 = ctx.metrics().await?;
            let a = ctx
                .proxy
                .inject_post("/v1/records", framed(&sealed[i].1))
                .await;
            let m1 = ctx.metrics().await?;
            // Refused, or answered with an acknowledgement of what is stored: not processed.
            f.attempt(a.status != 200 || Delta::between(&m0, &m1).records_accepted == 0);
        }
        let after2 = ctx.metrics().await?;
        let d2 = Delta::between(&mid, &after2);
        f.check(
            format!(
                "re-delivered records not processed again (+{} accepted, +{} duplicates)",
                d2.records_accepted, d2.readings_duplicate
            ),
            d2.records_accepted == 0 && d2.readings_duplicate == 0,
        );
        // Outside the window: one record held back behind 1029 later ones.
        let late = dev.readings(2);
        let old_seq = h.session.next_seq();
        let old = dev.seal(&mut h.session, &late[..1]);
        let filler = dev.readings(1);
        for _ in 0..1028 {
            let _ = dev.seal(&mut h.session, &filler);
        }
        let new_seq = h.session.next_seq();
        let newest = dev.seal(&mut h.session, &late[1..]);
        let mut b = Vec::new();
        batch::push(&mut b, &newest);
        let a = ctx.proxy.inject_post("/v1/records", b).await;
        let newest_ok = a.status == 200 && covers(&dev.acks(&mut h.session, &a.body), new_seq);
        let mut b = Vec::new();
        batch::push(&mut b, &old);
        let a = ctx.proxy.inject_post("/v1/records", b).await;
        let old_refused = a.status != 200;
        f.attempt(old_refused);
        f.check(
            format!(
                "a record {} behind the highest was refused (HTTP {})",
                new_seq - old_seq,
                a.status
            ),
            newest_ok && old_refused,
        );
        Ok(f)
    })
}

/// The attacks send hellos fast enough to fill the half-open table (that is the flood's
/// subject, not theirs): on Busy, wait until the entries expire and try again.
fn busy(r: &Result<crate::device::Handshook, HsFail>) -> bool {
    matches!(r, Err(HsFail::Refused(iotseal_proto::Refusal::Busy)))
}

async fn wait_busy(ctx: &Ctx) {
    tokio::time::sleep(Duration::from_millis(ctx.gw.limits.skew_secs * 1000 + 700)).await;
}

/// Runs `n` handshakes of `dev`, each with the hook `mk(i)` set.
async fn per_position(
    ctx: &Ctx,
    dev: &mut LabDevice,
    n: usize,
    f: &mut Findings,
    mk: impl Fn(usize) -> Arc<dyn Hook>,
) {
    for i in 0..n {
        let mut tries = 0;
        let r = loop {
            ctx.proxy.set_hook(Some(mk(i)));
            let r = dev.handshake(&[]).await;
            ctx.proxy.set_hook(None);
            if busy(&r) && tries < 3 {
                tries += 1;
                wait_busy(ctx).await;
                continue;
            }
            break r;
        };
        hs_result(f, &r);
    }
}

/// A handshake without the attacker (waiting out a full half-open table).
async fn honest(
    ctx: &Ctx,
    dev: &mut LabDevice,
    piggy: &[iotseal_proto::reading::Reading],
) -> R<crate::device::Handshook> {
    let mut tries = 0;
    loop {
        let r = dev.handshake(piggy).await;
        if busy(&r) && tries < 3 {
            tries += 1;
            wait_busy(ctx).await;
            continue;
        }
        return r.map_err(|e| LabError(format!("honest handshake: {}", e.kind())));
    }
}

/// One clean handshake: the lengths of M1, M2, M3 for this device.
async fn lengths(ctx: &Ctx, dev: &mut LabDevice) -> R<(usize, usize, usize)> {
    let h = honest(ctx, dev, &[]).await?;
    // A first hello's length: under load the hello that got M2 is a retried one, longer by
    // its cookie.
    Ok((h.first_m1.len(), h.m2.len(), h.m3.len()))
}

/// Sends every variant of a record (each must be refused), then the original (accepted).
async fn record_variants(
    ctx: &Ctx,
    dev: &mut LabDevice,
    f: &mut Findings,
    variants: impl Fn(&[u8]) -> Vec<Vec<u8>>,
) -> R<()> {
    let mut h = honest(ctx, dev, &[]).await?;
    let r = dev.readings(1);
    let rec = dev.seal(&mut h.session, &r);
    let before = ctx.metrics().await?;
    for body in variants(&rec) {
        let a = ctx.proxy.inject_post("/v1/records", body).await;
        f.attempt(a.status != 200);
    }
    let d = Delta::between(&before, &ctx.metrics().await?);
    f.check(
        format!(
            "no altered record accepted (+{} accepted)",
            d.records_accepted
        ),
        d.records_accepted == 0,
    );
    // The same reading, sealed again now (the lab's record age limit is short): accepted, so
    // the variants were refused for what was done to them.
    let seq = h.session.next_seq();
    let again = dev.seal(&mut h.session, &r);
    let ok = dev
        .send(&[again])
        .await
        .map(|a| covers(&dev.acks(&mut h.session, &a), seq))
        .unwrap_or(false);
    f.check(
        "the unaltered reading, sealed again, is accepted afterwards",
        ok,
    );
    Ok(())
}

fn framed(rec: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    batch::push(&mut b, rec);
    b
}

fn tamper(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let s = suite(SMALL);
        let mut dev = ctx.device("tmp", s.sig, Some(vec![s])).await?;
        let (l1, l2, l3) = lengths(ctx, &mut dev).await?;
        let before = ctx.metrics().await?;
        // M1, mac1 not recomputed.
        per_position(ctx, &mut dev, l1, &mut f, |i| {
            on_first_m1(move |b| {
                b[i] ^= 0x01;
                Verdict::Forward
            })
        })
        .await;
        // M1, mac1 recomputed (the pin is public).
        let p = ctx.p;
        let pin = ctx.pin();
        per_position(ctx, &mut dev, l1 - 16, &mut f, |i| {
            let pin = pin.clone();
            on_first_m1(move |b| {
                b[i] ^= 0x01;
                remac(&p, &pin, b);
                Verdict::Forward
            })
        })
        .await;
        // M2.
        per_position(ctx, &mut dev, l2, &mut f, |i| {
            on_first_m2(move |b| {
                if let Some(x) = b.get_mut(i) {
                    *x ^= 0x01;
                }
            })
        })
        .await;
        // M3.
        per_position(ctx, &mut dev, l3, &mut f, |i| {
            on_first_m3(move |b| {
                if let Some(x) = b.get_mut(i) {
                    *x ^= 0x01;
                }
            })
        })
        .await;
        let d = Delta::between(&before, &ctx.metrics().await?);
        f.check(
            format!(
                "every altered handshake failed ({} of {} refused)",
                f.blocked_attempts, f.attempts
            ),
            f.blocked_attempts == f.attempts,
        );
        f.check(
            format!("no session from an altered handshake (+{})", d.established),
            d.established == 0,
        );
        f.saw(format!(
            "{SMALL}: M1 {l1} B (×2: with and without mac1 recomputed), M2 {l2} B, M3 {l3} B"
        ));
        // One record.
        record_variants(ctx, &mut dev, &mut f, |rec| {
            (0..rec.len())
                .map(|i| {
                    let mut r = rec.to_vec();
                    r[i] ^= 0x01;
                    framed(&r)
                })
                .collect()
        })
        .await?;
        Ok(f)
    })
}

fn truncate(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let s = suite(SMALL);
        let mut dev = ctx.device("trn", s.sig, Some(vec![s])).await?;
        let (l1, l2, l3) = lengths(ctx, &mut dev).await?;
        let before = ctx.metrics().await?;
        per_position(ctx, &mut dev, l1, &mut f, |i| {
            on_first_m1(move |b| {
                b.truncate(i);
                Verdict::Forward
            })
        })
        .await;
        let cuts2 = [1, 5, 12, 14, 40, l2 / 2, l2 - 17, l2 - 1];
        per_position(ctx, &mut dev, cuts2.len(), &mut f, |i| {
            let c = cuts2[i];
            on_first_m2(move |b| b.truncate(c))
        })
        .await;
        let cuts3 = [0, 1, 5, 7, 20, l3 / 2, l3 - 16, l3 - 1];
        per_position(ctx, &mut dev, cuts3.len(), &mut f, |i| {
            let c = cuts3[i];
            on_first_m3(move |b| b.truncate(c))
        })
        .await;
        let d = Delta::between(&before, &ctx.metrics().await?);
        f.check(
            format!(
                "every truncated handshake failed ({} of {} refused)",
                f.blocked_attempts, f.attempts
            ),
            f.blocked_attempts == f.attempts,
        );
        f.check("no session from a truncated handshake", d.established == 0);
        record_variants(ctx, &mut dev, &mut f, |rec| {
            let mut v: Vec<Vec<u8>> = (0..rec.len()).map(|i| framed(&rec[..i])).collect();
            let whole = framed(rec);
            v.push(whole[..whole.len() - 1].to_vec());
            v
        })
        .await?;
        Ok(f)
    })
}

fn extend(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let s = suite(SMALL);
        let mut dev = ctx.device("ext", s.sig, Some(vec![s])).await?;
        let p = ctx.p;
        let pin = ctx.pin();
        let junk: Vec<u8> = p.random_vec(32).unwrap_or_default();
        let before = ctx.metrics().await?;
        // M1 + bytes (with mac1 recomputed over the longer body, and after the MAC).
        let m1_ext = [(1usize, false), (32, false), (1, true), (16, true)];
        let jk = junk.clone();
        per_position(ctx, &mut dev, m1_ext.len(), &mut f, |i| {
            let (n, remac_it) = m1_ext[i];
            let j = jk[..n].to_vec();
            let pin = pin.clone();
            on_first_m1(move |b| {
                b.extend_from_slice(&j);
                if remac_it {
                    remac(&p, &pin, b);
                }
                Verdict::Forward
            })
        })
        .await;
        // M2 + bytes.
        let m2_ext = [1usize, 16, 32];
        per_position(ctx, &mut dev, m2_ext.len(), &mut f, |i| {
            let j = jk[..m2_ext[i]].to_vec();
            on_first_m2(move |b| b.extend_from_slice(&j))
        })
        .await;
        let d = Delta::between(&before, &ctx.metrics().await?);
        f.check(
            format!("no session from an extended M1 or M2 (+{})", d.established),
            d.established == 0,
        );
        // M3 + junk, and M3 + a record of another live session: the genuine handshake may
        // complete, but nothing appended may be accepted.
        let mut other = ctx.device("ext", SigAlg::Ed25519, None).await?;
        let mut ho = honest(ctx, &mut other, &[]).await?;
        let foreign_r = other.readings(1);
        let foreign = other.seal(&mut ho.session, &foreign_r);
        let tails: Vec<Vec<u8>> = vec![junk[..1].to_vec(), junk.clone(), framed(&foreign)];
        for t in tails {
            let before = ctx.metrics().await?;
            ctx.proxy
                .set_hook(Some(on_first_m3(move |b| b.extend_from_slice(&t))));
            let _ = dev.handshake(&[]).await;
            ctx.proxy.set_hook(None);
            let d = Delta::between(&before, &ctx.metrics().await?);
            f.attempt(d.records_accepted == 0 && d.readings_stored == 0);
        }
        // Records and batches.
        record_variants(ctx, &mut dev, &mut f, |rec| {
            let mut longer = rec.to_vec();
            longer.extend_from_slice(&junk[..4]);
            let mut trailing = framed(rec);
            trailing.extend_from_slice(&junk[..3]);
            let mut one = rec.to_vec();
            one.push(0);
            vec![framed(&longer), trailing, framed(&one)]
        })
        .await?;
        // The same record twice in one batch: processed once.
        let mut h = honest(ctx, &mut dev, &[]).await?;
        let r = dev.readings(1);
        let rec = dev.seal(&mut h.session, &r);
        let before = ctx.metrics().await?;
        let mut twice = framed(&rec);
        twice.extend_from_slice(&framed(&rec));
        let _ = ctx.proxy.inject_post("/v1/records", twice).await;
        let d = Delta::between(&before, &ctx.metrics().await?);
        f.attempt(d.records_accepted <= 1 && d.readings_duplicate == 0);
        f.check(
            format!(
                "a record repeated in one batch is processed once (+{} accepted)",
                d.records_accepted
            ),
            d.records_accepted <= 1 && d.readings_duplicate == 0,
        );
        f.check(
            format!(
                "no extension had an effect ({} of {})",
                f.blocked_attempts, f.attempts
            ),
            f.blocked_attempts == f.attempts,
        );
        Ok(f)
    })
}

fn downgrade(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let strong = Suite::DEFAULT;
        let weak = suite(WEAK);
        let offers = vec![strong, weak];
        let before = ctx.metrics().await?;
        let p = ctx.p;
        let pin = ctx.pin();
        let wb = weak.to_bytes();
        let x25519_len = iotseal_proto::KemId::X25519.initiator_share_len();
        for variant in 0..4 {
            for _ in 0..2 {
                let mut dev = ctx
                    .device("dg", SigAlg::Ed25519, Some(offers.clone()))
                    .await?;
                let pin = pin.clone();
                let h: Arc<dyn Hook> = match variant {
                    // Strip the stronger offers, keep the device's (hybrid) share.
                    0 => on_first_m1(move |b| {
                        if let Some(mut m) = M1::parse(b) {
                            m.offers.retain(|o| *o == wb);
                            *b = m.encode(&p, &pin);
                        }
                        Verdict::Forward
                    }),
                    // Strip them and cut the hybrid share down to its X25519 half.
                    1 => on_first_m1(move |b| {
                        if let Some(mut m) = M1::parse(b) {
                            m.offers.retain(|o| *o == wb);
                            let n = m.share.len();
                            m.share = m.share[n.saturating_sub(x25519_len)..].to_vec();
                            *b = m.encode(&p, &pin);
                        }
                        Verdict::Forward
                    }),
                    // Forge a Retry(KeyShare) naming the weak suite; forward the retried
                    // hello (with the forged cookie), or strip its cookie and strong offer.
                    v => {
                        let n = AtomicU64::new(0);
                        hook(
                            move |path, b| {
                                if !is_m1(path, b) {
                                    return Verdict::Forward;
                                }
                                match n.fetch_add(1, Ordering::SeqCst) {
                                    0 => Verdict::Answer(Answer {
                                        status: 200,
                                        body: forged_retry(
                                            &p,
                                            b,
                                            RetryReason::KeyShare,
                                            weak,
                                            wire_now(),
                                        ),
                                    }),
                                    1 if v == 3 => {
                                        if let Some(mut m) = M1::parse(b) {
                                            m.offers.retain(|o| *o == wb);
                                            m.cookie = None;
                                            *b = m.encode(&p, &pin);
                                        }
                                        Verdict::Forward
                                    }
                                    _ => Verdict::Forward,
                                }
                            },
                            no_resp,
                        )
                    }
                };
                ctx.proxy.set_hook(Some(h));
                let r = dev.handshake(&[]).await;
                ctx.proxy.set_hook(None);
                hs_result(&mut f, &r);
            }
        }
        let after = ctx.metrics().await?;
        let weak_est = (after.established_with(WEAK) - before.established_with(WEAK)).max(0.0);
        f.check(
            format!("no session on the weak suite {WEAK} (+{weak_est})"),
            weak_est == 0.0,
        );
        f.check(
            "every downgraded handshake failed",
            f.blocked_attempts == f.attempts,
        );
        // Without the attacker the same device gets the strongest offer.
        let mut dev = ctx.device("dg", SigAlg::Ed25519, Some(offers)).await?;
        let h = honest(ctx, &mut dev, &[]).await?;
        let got = h.session.suite();
        f.check(
            format!("without the attacker the device gets {got}"),
            got == strong,
        );
        Ok(f)
    })
}

fn impersonate_unknown(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        for sname in [
            Suite::DEFAULT.to_string().as_str(),
            SMALL,
            "mlkem768/mldsa65/aes256gcm",
        ] {
            let s = suite(sname);
            let id = ctx.new_id("ghost");
            let mut dev = ctx.attacker(&id, s.sig, Some(vec![s]))?;
            let piggy = dev.readings(3);
            let r = dev.handshake(&piggy).await;
            hs_result(&mut f, &r);
        }
        f.check(
            "every handshake under an unknown id was refused",
            f.blocked_attempts == f.attempts,
        );
        Ok(f)
    })
}

fn impersonate_wrong_key(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let mut honest = ctx.device("vic", SigAlg::Ed25519, None).await?;
        let piggy = honest.readings(2);
        honest
            .handshake(&piggy)
            .await
            .map_err(|e| LabError(format!("honest handshake: {}", e.kind())))?;
        for alg in [
            SigAlg::Ed25519,
            SigAlg::Ed25519,
            SigAlg::EcdsaP256,
            SigAlg::MlDsa65,
        ] {
            let s = Suite {
                sig: alg,
                ..Suite::DEFAULT
            };
            let mut dev = ctx.attacker(&honest.id, alg, Some(vec![s]))?;
            let piggy = dev.readings(2);
            let r = dev.handshake(&piggy).await;
            hs_result(&mut f, &r);
        }
        f.check(
            "every handshake with the victim's id and another key was refused",
            f.blocked_attempts == f.attempts,
        );
        Ok(f)
    })
}

fn revoked_device(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let (mut dc, idf) = ctx
            .sdk("rev", |_| {}, lab_options(Duration::from_millis(1500)))
            .await?;
        sdk_push(&mut dc, &ctx.ledger, 4);
        dc.flush().await.map_err(|e| LabError(e.to_string()))?;
        let old = recorded(&ctx.proxy.take_log());
        ctx.gw.revoke(&idf.id).await?;
        let first_after = {
            let l = ctx.ledger.lock().unwrap_or_else(|e| e.into_inner());
            l.get(&idf.id).map_or(0, |m| m.len() as u64) + 1
        };
        sdk_push(&mut dc, &ctx.ledger, 4);
        let r = dc.flush().await;
        f.check("the revoked device could not deliver", r.is_err());
        // Hellos are answered (the gateway learns who the device is only from M3); M3s and
        // records must all be refused.
        let log = ctx.proxy.take_log();
        for e in log.iter().filter(|e| !is_m1(&e.path, &e.from_device)) {
            f.attempt(e.to_device.status != 200);
        }
        for (k, v) in &dc.stats().refusals {
            *f.device_errors
                .entry(format!("gateway refused: {k}"))
                .or_default() += v;
        }
        // Its old traffic, replayed.
        let mut kinds = BTreeMap::new();
        replay_all(ctx, &old, &mut f, &mut kinds).await;
        // A fresh handshake with the revoked key.
        let mut dev = LabDevice::with_identity(
            idf.clone(),
            None,
            &ctx.gw.pins,
            ctx.proxy.url(),
            &ctx.ledger,
            |_| {},
        )?;
        let piggy = dev.readings(1);
        let r = dev.handshake(&piggy).await;
        hs_result(&mut f, &r);
        let stored = ctx.gw.readings(&idf.id).await?;
        let late = stored.iter().filter(|r| r.msg_id >= first_after).count();
        f.check(
            format!("no reading queued after the revocation was stored ({late})"),
            late == 0,
        );
        f.check(
            "every request after the revocation was refused",
            f.blocked_attempts == f.attempts,
        );
        f.note(format!("replayed old traffic: {}", tally(&kinds)));
        Ok(f)
    })
}

/// Hello-time attacks: `sign` −1 (stale) or +1 (future).
async fn timestamp(ctx: &Ctx, sign: i64) -> R<Findings> {
    let mut f = Findings::default();
    let l = ctx.gw.limits.clone();
    let shift = (l.skew_secs as i64 * 10).max(60) * sign;
    let p = ctx.p;
    let pin = ctx.pin();
    let before = ctx.metrics().await?;
    // (a) The proxy moves the device's hello time and recomputes mac1.
    for _ in 0..2 {
        let mut dev = ctx.device("ts", SigAlg::Ed25519, None).await?;
        let pin = pin.clone();
        ctx.proxy.set_hook(Some(on_first_m1(move |b| {
            if let Some(mut m) = M1::parse(b) {
                m.time = (i64::from(m.time) + shift) as u32;
                *b = m.encode(&p, &pin);
            }
            Verdict::Forward
        })));
        let r = dev.handshake(&[]).await;
        ctx.proxy.set_hook(None);
        hs_result(&mut f, &r);
    }
    // (b) The attacker gets a genuine cookie, then sends a retried hello with the bad time.
    let s = suite(SMALL);
    for _ in 0..2 {
        let first = ctx.attacker_hello(s, (i64::from(wire_now()) + shift) as u32, None)?;
        let a = ctx.proxy.inject_post("/v1/handshake", first).await;
        let Ok(cookie) = iotseal_proto::handshake::messages::Cookie::from_retry_message(&a.body)
        else {
            return Err(LabError(format!(
                "expected a Retry(Clock) for a hello {shift} s off, got HTTP {} ({} bytes)",
                a.status,
                a.body.len()
            )));
        };
        let retried = ctx.attacker_hello(
            s,
            (i64::from(wire_now()) + shift) as u32,
            Some(cookie.encode().to_vec()),
        )?;
        let a = ctx.proxy.inject_post("/v1/handshake", retried).await;
        f.attempt(a.status != 200);
        if let Some(r) = iotseal_proto::handshake::messages::decode_alert(&a.body) {
            *f.device_errors
                .entry(format!("attacker got: {r:?}"))
                .or_default() += 1;
        }
    }
    let d = Delta::between(&before, &ctx.metrics().await?);
    f.check(
        format!("no session from a moved hello (+{})", d.established),
        d.established == 0,
    );
    // (c) Records outside the age limit.
    for _ in 0..2 {
        let mut dev = ctx.device("ts", SigAlg::Ed25519, None).await?;
        let mut h = honest(ctx, &mut dev, &[]).await?;
        let r = dev.readings(1);
        let rec = if sign < 0 {
            let rec = dev.seal(&mut h.session, &r);
            // Held back by the proxy beyond the age limit.
            tokio::time::sleep(Duration::from_millis(l.max_record_age_secs * 1000 + 1200)).await;
            rec
        } else {
            let t = dev.now().plus_millis((l.max_record_age_secs + 10) * 1000);
            dev.seal_at(&mut h.session, t, &r)
        };
        let a = ctx.proxy.inject_post("/v1/records", framed(&rec)).await;
        f.attempt(a.status != 200);
    }
    f.check(
        "every moved hello and out-of-date record was refused",
        f.blocked_attempts == f.attempts,
    );
    Ok(f)
}

fn stale_timestamp(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(timestamp(ctx, -1))
}

fn future_timestamp(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(timestamp(ctx, 1))
}

/// Sends `head` and then `total` body bytes (chunked if `chunked`) while reading the answer;
/// returns (status, body bytes written before the answer came, seconds).
async fn stream_body(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    head: String,
    total: usize,
    chunked: bool,
) -> (u16, usize, f64) {
    let t0 = Instant::now();
    let Ok(s) = connect_raw(url, tls).await else {
        return (0, 0, 0.0);
    };
    let (mut rd, mut wr) = tokio::io::split(s);
    let written = Arc::new(AtomicU64::new(0));
    let w2 = written.clone();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![0x80u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            let ok = if chunked {
                wr.write_all(format!("{n:x}\r\n").as_bytes()).await.is_ok()
                    && wr.write_all(&chunk[..n]).await.is_ok()
                    && wr.write_all(b"\r\n").await.is_ok()
            } else {
                wr.write_all(&chunk[..n]).await.is_ok()
            };
            if !ok {
                return;
            }
            sent += n;
            w2.store(sent as u64, Ordering::Relaxed);
        }
        if chunked {
            let _ = wr.write_all(b"0\r\n\r\n").await;
        }
        let _ = wr.flush().await;
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        use tokio::io::AsyncReadExt;
        let mut c = [0u8; 1024];
        loop {
            match rd.read(&mut c).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&c[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let at = written.load(Ordering::Relaxed) as usize;
    writer.abort();
    (status_of(&buf), at, t0.elapsed().as_secs_f64())
}

/// Oversized bodies straight to `url`: announced by Content-Length (to `path_a` and
/// `path_b`) and streamed chunked without a length. Each must be answered 413.
pub(crate) async fn oversize_raw(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    path_a: &str,
    path_b: &str,
    max: usize,
    f: &mut Findings,
) {
    let mut seen = Vec::new();
    for (path, len, chunked) in [
        (path_a, max + 1, false),
        (path_b, max * 4, false),
        (path_a, max * 2, true),
    ] {
        let head = if chunked {
            format!(
                "POST {path} HTTP/1.1\r\nhost: lab\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
        } else {
            format!(
                "POST {path} HTTP/1.1\r\nhost: lab\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\n\r\n"
            )
        };
        let (st, at, secs) = stream_body(url, tls.clone(), head, len, chunked).await;
        f.attempt(st == 413);
        seen.push(format!(
            "{} {} KiB{}: HTTP {st} after {} KiB sent ({secs:.2} s)",
            path,
            len / 1024,
            if chunked { " chunked" } else { "" },
            at / 1024
        ));
    }
    f.saw(format!("oversized bodies: {}", seen.join("; ")));
}

fn oversize_body(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let max = ctx.gw.limits.max_body;
        oversize_raw(
            ctx.gw.url(),
            ctx.gw.http.tls(),
            "/v1/records",
            "/v1/handshake",
            max,
            &mut f,
        )
        .await;
        // Whole, through the proxy.
        let a = ctx
            .proxy
            .inject_post("/v1/records", vec![0x80u8; max + 1])
            .await;
        f.attempt(a.status == 413);
        f.saw(format!(
            "/v1/records {} KiB whole through the proxy: HTTP {}{}",
            (max + 1) / 1024,
            a.status,
            if a.status == 502 {
                " (the proxy's request failed in transport)"
            } else {
                ""
            }
        ));
        f.check(
            format!(
                "every oversized body was answered 413 ({} of {})",
                f.blocked_attempts, f.attempts
            ),
            f.blocked_attempts == f.attempts,
        );
        Ok(f)
    })
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn malformed(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let before = ctx.metrics().await?;
        for i in 0..300 {
            let len = (rng.next() % 1500) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if i % 2 == 0 && !b.is_empty() {
                b[0] = [0x01u8, 0x04, 0x80, 0x8f, 0x90][(rng.next() % 5) as usize];
            }
            let path = if i % 3 == 0 {
                "/v1/records"
            } else {
                "/v1/handshake"
            };
            let a = ctx.proxy.inject_post(path, b).await;
            f.attempt(a.status != 200 && a.status != 502);
        }
        let d = Delta::between(&before, &ctx.metrics().await?);
        f.check(
            format!(
                "every random body was refused ({} of {})",
                f.blocked_attempts, f.attempts
            ),
            f.blocked_attempts == f.attempts,
        );
        f.check(
            "nothing accepted or established",
            d.records_accepted == 0 && d.established == 0,
        );
        let mut dev = ctx.device("mal", SigAlg::Ed25519, None).await?;
        let piggy = dev.readings(1);
        let ok = dev.handshake(&piggy).await.is_ok();
        f.check("an honest device is served afterwards", ok);
        Ok(f)
    })
}

/// Keeps a raw connection sending one byte per `step` until the peer closes it or answers;
/// returns (seconds until then, status answered or 0, closed by the peer).
async fn trickle(
    url: String,
    tls: Arc<rustls::ClientConfig>,
    head: Vec<u8>,
    body_trickle: bool,
    give_up: Duration,
) -> R<(f64, u16, bool)> {
    use tokio::io::AsyncReadExt;
    let mut s = connect_raw(&url, tls).await?;
    let t0 = Instant::now();
    let step = Duration::from_millis(200);
    let mut i = 0usize;
    let first: &[u8] = if body_trickle { &head } else { &head[..0] };
    if !first.is_empty() && s.write_all(first).await.is_err() {
        return Ok((t0.elapsed().as_secs_f64(), 0, true));
    }
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while t0.elapsed() < give_up {
        let byte = if body_trickle {
            b'x'
        } else {
            head.get(i).copied().unwrap_or(b'a')
        };
        i += 1;
        if s.write_all(&[byte]).await.is_err() || s.flush().await.is_err() {
            return Ok((t0.elapsed().as_secs_f64(), status_of(&got), true));
        }
        match tokio::time::timeout(step, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ok((t0.elapsed().as_secs_f64(), status_of(&got), true));
            }
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    return Ok((t0.elapsed().as_secs_f64(), status_of(&got), false));
                }
            }
            Err(_) => {}
        }
    }
    Ok((t0.elapsed().as_secs_f64(), status_of(&got), false))
}

fn status_of(b: &[u8]) -> u16 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Slow clients against `url`: connections trickling headers, and requests trickling their
/// body; each must be cut off within `header_timeout` / `request_timeout` + 2 s.
pub(crate) async fn slow_clients(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    header_timeout: u64,
    request_timeout: u64,
    path: &str,
    f: &mut Findings,
) -> R<()> {
    let deadline_h = Duration::from_secs(header_timeout + 2);
    let deadline_b = Duration::from_secs(request_timeout + 2);
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: lab\r\nx-slow: ").into_bytes();
    head.extend(std::iter::repeat_n(b'a', 4096));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        tasks.push(tokio::spawn(trickle(
            url.to_string(),
            tls.clone(),
            head.clone(),
            false,
            deadline_h + Duration::from_secs(2),
        )));
    }
    let body_head = format!(
        "POST {path} HTTP/1.1\r\nhost: lab\r\ncontent-type: application/octet-stream\r\ncontent-length: 100000\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        tasks.push(tokio::spawn(trickle(
            url.to_string(),
            tls.clone(),
            body_head.clone(),
            true,
            deadline_b + Duration::from_secs(2),
        )));
    }
    let mut worst_h: f64 = 0.0;
    let mut worst_b: f64 = 0.0;
    let mut statuses = BTreeMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (secs, status, closed) = t.await.map_err(|e| LabError(e.to_string()))??;
        let cut = closed || status != 0;
        let limit = if i < 6 { deadline_h } else { deadline_b };
        let ok = cut && secs <= limit.as_secs_f64();
        f.attempt(ok);
        if i < 6 {
            worst_h = worst_h.max(secs);
        } else {
            worst_b = worst_b.max(secs);
        }
        *statuses
            .entry(if status == 0 {
                if closed {
                    "closed".to_string()
                } else {
                    "still open".to_string()
                }
            } else {
                format!("HTTP {status}")
            })
            .or_insert(0u64) += 1;
    }
    f.saw(format!(
        "slow headers cut after at most {worst_h:.1} s (limit {} s + 2 s); slow bodies after at most {worst_b:.1} s (limit {} s + 2 s); outcomes: {}",
        header_timeout,
        request_timeout,
        tally(&statuses)
    ));
    f.check(
        format!(
            "every slow connection was cut off in time ({} of {})",
            f.blocked_attempts, f.attempts
        ),
        f.blocked_attempts == f.attempts,
    );
    Ok(())
}

fn slow_client(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let l = ctx.gw.limits.clone();
        let stop = AtomicBool::new(false);
        let slow = slow_clients(
            ctx.gw.url(),
            ctx.gw.http.tls(),
            l.header_read_timeout_secs,
            l.request_timeout_secs,
            "/v1/records",
            &mut f,
        );
        let (r, honest) = service::alongside(&stop, slow, honest_traffic(ctx, &stop)).await;
        r?;
        f.served(honest?, "while the slow connections were open");
        Ok(f)
    })
}

/// An attacker-built hello for `s` at wire time `time` (valid mac1: the pin is public), with
/// `cookie` echoed if given.
pub(crate) fn hello_for(
    p: &CryptoProvider,
    pin: &PinnedKey,
    s: Suite,
    time: u32,
    cookie: Option<Vec<u8>>,
) -> R<Vec<u8>> {
    let eph = p
        .kem(s.kem)
        .and_then(|k| k.start(p.random))
        .map_err(|e| LabError(format!("{e:?}")))?;
    let mut nonce = [0u8; 16];
    p.random
        .fill(&mut nonce)
        .map_err(|e| LabError(format!("{e:?}")))?;
    Ok(M1 {
        offers: vec![s.to_bytes()],
        time,
        nonce,
        share: eph.share().to_vec(),
        cookie,
    }
    .encode(p, pin))
}

/// [`service::DEVICES`] honest devices through the proxy while the attack runs (see
/// [`service::drive`]: readings taken at a steady rate, sessions opened as needed, retrying on
/// Busy). Then storage is read back: a reading counts as stored if it was acknowledged and is
/// in storage as sent.
pub(crate) async fn honest_traffic(ctx: &Ctx, stop: &AtomicBool) -> R<Service> {
    let (m, _) = service::fleet(|_| honest_device(ctx, stop)).await?;
    let stored = stored_as_sent(&ctx.gw, &ctx.ledger, &m.acknowledged).await?;
    Ok(m.finish(stored))
}

/// One honest device of [`honest_traffic`].
async fn honest_device(ctx: &Ctx, stop: &AtomicBool) -> R<(Meter, ())> {
    let mut d = HonestIotseal(ctx.device("ok", SigAlg::Ed25519, None).await?);
    Ok((service::drive(&mut d, stop).await, ()))
}

/// An honest iotseal device: a session is a handshake; readings go in one record per request.
struct HonestIotseal(LabDevice);

impl service::Honest for HonestIotseal {
    type Session = iotseal_proto::record::Session;
    type Reading = iotseal_proto::reading::Reading;
    const REQUESTS_PER_SESSION: usize = 3;

    fn id(&self) -> String {
        self.0.id.clone()
    }

    fn take(&mut self, n: usize) -> Vec<(u64, Self::Reading)> {
        self.0
            .readings(n)
            .into_iter()
            .map(|r| (r.msg_id, r))
            .collect()
    }

    async fn open(&mut self) -> Result<Self::Session, service::NotServed> {
        self.0
            .handshake(&[])
            .await
            .map(|h| h.session)
            .map_err(|e| service::NotServed {
                retry: matches!(
                    e,
                    HsFail::Refused(iotseal_proto::Refusal::Busy) | HsFail::Unavailable(_)
                ),
                why: e.kind(),
            })
    }

    async fn deliver(
        &mut self,
        s: &mut Self::Session,
        readings: &[Self::Reading],
    ) -> Result<(), service::NotServed> {
        let seq = s.next_seq();
        let rec = self.0.seal(s, readings);
        let (why, retry) = match self.0.send(&[rec]).await {
            Ok(a) if covers(&self.0.acks(s, &a), seq) => return Ok(()),
            Ok(_) => ("not acknowledged".to_string(), true),
            Err(iotseal_device::TransportError::Refused(r)) => (
                format!("gateway refused: {r:?}"),
                r == iotseal_proto::Refusal::Busy,
            ),
            Err(iotseal_device::TransportError::Unavailable(e)) => {
                (format!("no answer: {e}"), true)
            }
        };
        Err(service::NotServed { why, retry })
    }
}

/// How many of `acknowledged` (device id, message id) are in storage exactly as the ledger
/// says they were sent.
pub(crate) async fn stored_as_sent(
    gw: &Gw,
    ledger: &Ledger,
    acknowledged: &BTreeSet<(String, u64)>,
) -> R<u64> {
    let ledger = ledger.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ids: BTreeSet<&String> = acknowledged.iter().map(|(d, _)| d).collect();
    let mut n = 0;
    for id in ids {
        let mut seen = HashSet::new();
        for r in gw.readings(id).await? {
            let payload = hex::decode(&r.payload_hex).unwrap_or_default();
            if acknowledged.contains(&(id.clone(), r.msg_id))
                && seen.insert(r.msg_id)
                && ledger
                    .get(id)
                    .and_then(|m| m.get(&r.msg_id))
                    .is_some_and(|p| *p == payload)
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn handshake_flood(ctx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut f = Findings::default();
        let cap = ctx.gw.limits.half_open;
        let min_hellos = (cap * 3) as u64;
        // Long enough that half-open entries expire and are taken again while it runs.
        let run_for = Duration::from_secs((ctx.gw.limits.skew_secs * 2 + 1).clamp(3, 65));
        let give_up = run_for * 4;
        let s = suite(SMALL);
        // Start from an empty table, so the counts below are the flood's alone.
        let until = Instant::now() + Duration::from_millis(ctx.gw.limits.skew_secs * 1000 + 1500);
        while Instant::now() < until
            && ctx.metrics().await?.get("iotseal_half_open_handshakes") > 0.0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rss0 = crate::rss_kib();
        let before = ctx.metrics().await?;
        let sent = Arc::new(AtomicU64::new(0));
        let counts = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
        let done = Arc::new(AtomicBool::new(false));
        // Watch the half-open gauge while the flood runs.
        let watcher = {
            let done = done.clone();
            let http = ctx.gw.http.clone();
            let url = format!("{}/metrics", ctx.gw.url());
            let token = ctx.gw.token.clone();
            tokio::spawn(async move {
                let mut max = 0.0f64;
                while !done.load(Ordering::Relaxed) {
                    if let Ok(a) = http
                        .send(
                            hyper::Method::GET,
                            &url,
                            &[("authorization", format!("Bearer {token}"))],
                            Vec::new(),
                        )
                        .await
                    {
                        let m = Metrics::parse(&String::from_utf8_lossy(&a.body));
                        max = max.max(m.get("iotseal_half_open_handshakes"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                max
            })
        };
        let t0 = Instant::now();
        let flood = async {
            let mut workers = Vec::new();
            for _ in 0..16 {
                let (p, pin) = (ctx.p, ctx.pin());
                let http = ctx.gw.http.clone();
                let url = format!("{}/v1/handshake", ctx.gw.url());
                let counts = counts.clone();
                let sent = sent.clone();
                workers.push(tokio::spawn(async move {
                    loop {
                        let elapsed = t0.elapsed();
                        let enough =
                            elapsed >= run_for && sent.load(Ordering::Relaxed) >= min_hellos;
                        if enough || elapsed >= give_up {
                            break;
                        }
                        let Ok(h) = hello_for(&p, &pin, s, wire_now(), None) else {
                            break;
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        let st = http.post(&url, h).await.map_or(0, |a| a.status);
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
        let (flood_secs, honest) =
            service::alongside(&stop, flood, honest_traffic(ctx, &stop)).await;
        let honest = honest?;
        let after = ctx.metrics().await?;
        done.store(true, Ordering::Relaxed);
        let max_half_open = watcher
            .await
            .unwrap_or(0.0)
            .max(after.get("iotseal_half_open_handshakes"));
        let rss1 = crate::rss_kib();
        let counts = counts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let answered = counts.get(&200).copied().unwrap_or(0);
        for (st, n) in &counts {
            for _ in 0..*n {
                f.attempt(*st != 200);
            }
        }
        let d = Delta::between(&before, &after);
        let by_flood = d.established.saturating_sub(honest.handshakes_completed);
        f.saw(format!(
            "{} hellos in {flood_secs:.2} s from 16 connections: {} answered with M2 (half-open), others: {}; half-open at most {max_half_open} (cap {cap})",
            sent.load(Ordering::Relaxed),
            answered,
            counts
                .iter()
                .filter(|(k, _)| **k != 200)
                .map(|(k, v)| format!("HTTP {k}×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        f.served(honest, "during the flood");
        f.check(
            format!(
                "no session established by the flood (+{} in all, {by_flood} not the honest device's)",
                d.established
            ),
            by_flood == 0,
        );
        f.check(
            format!(
                "half-open handshakes stayed at or below the cap (max {max_half_open}, cap {cap})"
            ),
            max_half_open <= cap as f64,
        );
        if let (Some(a), Some(b)) = (rss0, rss1) {
            let growth = b.saturating_sub(a);
            f.check(
                format!("memory stayed bounded (RSS {a} KiB → {b} KiB)"),
                growth < 256 * 1024,
            );
        }
        Ok(f)
    })
}

fn dispatch<'a>(name: &str, ctx: &'a Ctx) -> Option<BoxFut<'a>> {
    Some(match name {
        "mitm-key-substitution" => mitm_key_substitution(ctx),
        "mitm-tls" => mitm_tls(ctx),
        "replay-immediate" => replay_immediate(ctx),
        "replay-delayed" => replay_delayed(ctx),
        "replay-cross-session" => replay_cross_session(ctx),
        "replay-after-rekey" => replay_after_rekey(ctx),
        "replay-handshake" => replay_handshake(ctx),
        "reorder" => reorder(ctx),
        "tamper" => tamper(ctx),
        "truncate" => truncate(ctx),
        "extend" => extend(ctx),
        "downgrade" => downgrade(ctx),
        "impersonate-unknown" => impersonate_unknown(ctx),
        "impersonate-wrong-key" => impersonate_wrong_key(ctx),
        "revoked-device" => revoked_device(ctx),
        "stale-timestamp" => stale_timestamp(ctx),
        "future-timestamp" => future_timestamp(ctx),
        "oversize-body" => oversize_body(ctx),
        "malformed" => malformed(ctx),
        "slow-client" => slow_client(ctx),
        "handshake-flood" => handshake_flood(ctx),
        "connection-hog" => crate::floods::connection_hog(ctx),
        "hello-flood-addresses" => crate::floods::hello_flood_addresses(ctx),
        "proxy-bucket-drain" => crate::floods::proxy_bucket_drain(ctx),
        _ => return None,
    })
}

/// Storage against the ledger, for the devices of this attack; plus, on an exclusive
/// gateway, readings stored under any other id during the attack.
async fn forgeries(ctx: &Ctx, d: &Delta) -> R<(u64, String)> {
    let ids = ctx
        .devices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    forgeries_of(&ctx.gw, ids, &ctx.ledger, d).await
}

/// Storage against `ledger` for the devices `ids` (readings not sent, or altered, and
/// duplicates beyond one per message id); on an exclusive gateway, also readings stored under
/// any other id during the attack (`d`).
pub(crate) async fn forgeries_of(
    gw: &Gw,
    ids: Vec<String>,
    ledger: &Ledger,
    d: &Delta,
) -> R<(u64, String)> {
    let ledger = ledger.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut forged = 0u64;
    let mut honest = 0u64;
    let mut rows_total = 0u64;
    let mut seen_ids = HashSet::new();
    for id in ids {
        if !seen_ids.insert(id.clone()) {
            continue;
        }
        let rows = gw.readings(&id).await?;
        rows_total += rows.len() as u64;
        let sent = ledger.get(&id);
        let mut seen = HashSet::new();
        for r in rows {
            let payload = hex::decode(&r.payload_hex).unwrap_or_default();
            let genuine = sent
                .and_then(|m| m.get(&r.msg_id))
                .is_some_and(|p| *p == payload);
            if !seen.insert(r.msg_id) || !genuine {
                forged += 1;
            } else {
                honest += 1;
            }
        }
    }
    let mut elsewhere = 0;
    if gw.exclusive && d.readings_stored > rows_total {
        elsewhere = d.readings_stored - rows_total;
        forged += elsewhere;
    }
    Ok((
        forged,
        format!(
            "storage: {honest} readings stored, each sent by an honest device and stored once; {forged} forged or duplicated{}",
            if elsewhere > 0 {
                format!(" ({elsewhere} under ids the lab did not use)")
            } else {
                String::new()
            }
        ),
    ))
}

pub(crate) async fn run(names: &[&str], options: &LabOptions) -> Vec<AttackOutcome> {
    let fail_all = |e: &LabError| {
        names
            .iter()
            .map(|n| AttackOutcome::failed(n, "iotseal", describe(n), e.0.clone()))
            .collect::<Vec<_>>()
    };
    if names.is_empty() {
        return Vec::new();
    }
    let gw = match Gw::open(&options.gateway).await {
        Ok(g) => g,
        Err(e) => return fail_all(&e),
    };
    let p = iotseal_crypto_awslc::default_provider();
    let run = format!(
        "lab{}",
        hex::encode(p.random_vec(3).unwrap_or_else(|_| vec![0; 3]))
    );
    let ctx = match Ctx::with_gateway(gw, &run, p).await {
        Ok(c) => c,
        Err(e) => return fail_all(&e),
    };
    let mut out = Vec::new();
    for name in names {
        if options.progress {
            eprintln!("attack {name} (iotseal) ...");
        }
        out.push(run_one(&ctx, name).await);
    }
    ctx.close().await;
    out
}

async fn run_one(ctx: &Ctx, name: &str) -> AttackOutcome {
    let desc = describe(name);
    ctx.proxy.set_hook(None);
    ctx.proxy.take_log();
    ctx.devices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    // Let half-open handshakes left by the previous attack expire (they are not this
    // attack's subject), so no attack starts against a full table.
    let settle = Instant::now() + Duration::from_millis(ctx.gw.limits.skew_secs * 1000 + 1500);
    while Instant::now() < settle {
        match ctx.metrics().await {
            Ok(m)
                if m.get("iotseal_half_open_handshakes") * 4.0 > ctx.gw.limits.half_open as f64 =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => break,
        }
    }
    let t0 = Instant::now();
    let before = match ctx.metrics().await {
        Ok(m) => m,
        Err(e) => return AttackOutcome::failed(name, "iotseal", desc, e.0),
    };
    let Some(fut) = dispatch(name, ctx) else {
        return AttackOutcome::failed(name, "iotseal", desc, "unknown attack".into());
    };
    let res = fut.await;
    ctx.proxy.set_hook(None);
    let f = match res {
        Ok(f) => f,
        Err(e) => {
            if std::env::var_os("IOTSEAL_LAB_DEBUG").is_some()
                && let Ok(after) = ctx.metrics().await
            {
                let d = Delta::between(&before, &after);
                eprintln!(
                    "  {name} FAILED: half-open {} refusals {:?}",
                    after.get("iotseal_half_open_handshakes"),
                    d.refusals
                );
                for (k, v) in &after.0 {
                    if k.contains("handshakes_total") && !k.contains("established") {
                        eprintln!("    {k} {v}");
                    }
                }
            }
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
    if std::env::var_os("IOTSEAL_LAB_DEBUG").is_some() {
        eprintln!(
            "  {name}: half-open {} sessions {} refusals {:?} established +{}",
            after.get("iotseal_half_open_handshakes"),
            after.get("iotseal_active_sessions"),
            d.refusals,
            d.established
        );
    }
    let (stored_forgeries, storage_note) = match forgeries(ctx, &d).await {
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

/// Builds the outcome from findings: blocked iff every check held and nothing was forged.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish(
    name: &str,
    target: &str,
    desc: &str,
    mut f: Findings,
    refusals: BTreeMap<String, u64>,
    stored_forgeries: u64,
    storage_note: String,
    t0: Instant,
) -> AttackOutcome {
    let all_held = f.checks.iter().all(|c| c.held);
    // An attack judged by service is blocked only if the service was measured.
    let measured = judged_by(name) != Judged::Service || f.service.is_some();
    let blocked = all_held && measured && stored_forgeries == 0 && f.attempts > 0;
    f.evidence.push(storage_note);
    let mut reason = Vec::new();
    if !blocked {
        let failed: Vec<_> = f
            .checks
            .iter()
            .filter(|c| !c.held)
            .map(|c| c.what.clone())
            .collect();
        if !failed.is_empty() {
            reason.push(format!("NOT blocked; failed: {}", failed.join("; ")));
        }
        if stored_forgeries > 0 {
            reason.push(format!("{stored_forgeries} forged readings stored"));
        }
        if f.attempts == 0 {
            reason.push("no attempt could be made".into());
        }
        if !measured {
            reason.push("legitimate traffic was not measured".into());
        }
    }
    if !refusals.is_empty() {
        let at = if target == "legacy" {
            "server"
        } else {
            "gateway"
        };
        reason.push(format!("refusals at the {at}: {}", tally(&refusals)));
    }
    if !f.device_errors.is_empty() {
        reason.push(tally(&f.device_errors));
    }
    reason.extend(f.notes.iter().cloned());
    AttackOutcome {
        name: name.into(),
        target: target.into(),
        description: desc.into(),
        applicable: true,
        criterion: criterion(name).into(),
        judged_by: judged_by(name),
        attempts: f.attempts,
        blocked_attempts: f.blocked_attempts,
        blocked: Some(blocked),
        service: f.service,
        reason: reason.join("; "),
        stored_forgeries,
        refusals,
        device_errors: f.device_errors,
        checks: f.checks,
        evidence: f.evidence,
        error: None,
        elapsed_ms: t0.elapsed().as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Service {
        Service {
            handshakes_attempted: 2,
            handshakes_completed: 2,
            readings_sent: 4,
            readings_stored: 4,
            worst_latency_ms: 100.0,
            ..Service::default()
        }
    }

    #[test]
    fn a_flood_is_judged_by_the_honest_device() {
        // Most of the flood's requests answered: blocked, since the honest device was served.
        let mut f = Findings::default();
        for i in 0..3 {
            f.attempt(i == 0);
        }
        f.served(served(), "during the flood");
        let o = finish(
            "handshake-flood",
            "iotseal",
            "",
            f,
            BTreeMap::new(),
            0,
            String::new(),
            Instant::now(),
        );
        assert_eq!(o.blocked, Some(true), "{o:#?}");
        assert_eq!(o.judged_by, Judged::Service);
        assert_eq!(o.criterion, criterion("handshake-flood"));
        // The honest device not served: not blocked, however many requests were refused.
        let mut f = Findings::default();
        f.attempt(true);
        let mut s = served();
        s.handshakes_completed = 1;
        f.served(s, "during the flood");
        let o = finish(
            "handshake-flood",
            "iotseal",
            "",
            f,
            BTreeMap::new(),
            0,
            String::new(),
            Instant::now(),
        );
        assert_eq!(o.blocked, Some(false));
        assert!(
            o.reason.contains("honest devices were served"),
            "{}",
            o.reason
        );
        // No measurement: no pass.
        let mut f = Findings::default();
        f.attempt(true);
        let o = finish(
            "handshake-flood",
            "iotseal",
            "",
            f,
            BTreeMap::new(),
            0,
            String::new(),
            Instant::now(),
        );
        assert_eq!(o.blocked, Some(false));
        assert!(o.reason.contains("legitimate traffic was not measured"));
    }
}
