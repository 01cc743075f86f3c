//! The attacker's view of iotseal messages: M1 taken apart and rebuilt (with mac1 recomputed:
//! the pin is public), M2's key share swapped, and a full relay that re-encrypts M2 for the
//! device under keys the attacker shares with it (docs/protocol.md §4–§6).

use iotseal_proto::crypto::ActiveKeyExchange;
use iotseal_proto::handshake::messages::{
    Cookie, GatewayHello, MAC1_LEN, RetryReason, encode_gateway_hello_clear,
};
use iotseal_proto::handshake::{PinnedKey, key_id, mac1_key};
use iotseal_proto::key_schedule::{HandshakeSecrets, TrafficKeys, finished_key};
use iotseal_proto::{CryptoProvider, Suite};

use crate::LabError;

/// M1's fields, raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct M1 {
    pub(crate) offers: Vec<[u8; 3]>,
    pub(crate) time: u32,
    pub(crate) nonce: [u8; 16],
    pub(crate) share: Vec<u8>,
    pub(crate) cookie: Option<Vec<u8>>,
}

impl M1 {
    pub(crate) fn parse(b: &[u8]) -> Option<Self> {
        let mut i = 0usize;
        let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
            let s = b.get(*i..*i + n)?;
            *i += n;
            Some(s)
        };
        let head = take(&mut i, 3)?;
        if head[0] != 0x01 {
            return None;
        }
        let n = usize::from(head[2]);
        let mut offers = Vec::with_capacity(n);
        for _ in 0..n {
            offers.push(take(&mut i, 3)?.try_into().ok()?);
        }
        let time = u32::from_be_bytes(take(&mut i, 4)?.try_into().ok()?);
        let nonce = take(&mut i, 16)?.try_into().ok()?;
        let sl = usize::from(u16::from_be_bytes(take(&mut i, 2)?.try_into().ok()?));
        let share = take(&mut i, sl)?.to_vec();
        let cl = usize::from(take(&mut i, 1)?[0]);
        let cookie = take(&mut i, cl)?.to_vec();
        take(&mut i, MAC1_LEN)?;
        (i == b.len()).then_some(Self {
            offers,
            time,
            nonce,
            share,
            cookie: (!cookie.is_empty()).then_some(cookie),
        })
    }

    /// Encodes with a valid mac1 for `pin` (anyone holding the public pin can).
    pub(crate) fn encode(&self, p: &CryptoProvider, pin: &PinnedKey) -> Vec<u8> {
        let mut out = vec![0x01, 0x01, self.offers.len() as u8];
        for o in &self.offers {
            out.extend_from_slice(o);
        }
        out.extend_from_slice(&self.time.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&(self.share.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.share);
        let c = self.cookie.clone().unwrap_or_default();
        out.push(c.len() as u8);
        out.extend_from_slice(&c);
        let mac = p.hmac.mac(&mac1_key(p, pin.alg, &pin.public_key), &[&out]);
        out.extend_from_slice(&mac[..MAC1_LEN]);
        out
    }
}

/// Recomputes the mac1 of an M1 whose body bytes were altered (the last 16 bytes are the MAC).
pub(crate) fn remac(p: &CryptoProvider, pin: &PinnedKey, m1: &mut [u8]) {
    if m1.len() < MAC1_LEN {
        return;
    }
    let n = m1.len() - MAC1_LEN;
    let mac = p
        .hmac
        .mac(&mac1_key(p, pin.alg, &pin.public_key), &[&m1[..n]]);
    m1[n..].copy_from_slice(&mac[..MAC1_LEN]);
}

/// A forged Retry naming `suite`, bound to the device's M1 (its hash is public to the
/// attacker), with a tag the attacker cannot compute (random bytes).
pub(crate) fn forged_retry(
    p: &CryptoProvider,
    m1: &[u8],
    reason: RetryReason,
    suite: Suite,
    time: u32,
) -> Vec<u8> {
    let mut tag = [0u8; 16];
    let _ = p.random.fill(&mut tag);
    Cookie {
        hello_hash: p.hash.hash(m1),
        reason,
        suite,
        time,
        tag,
    }
    .to_retry_message()
}

/// The running transcript: each item absorbed as `be32(len) || item` (§5.1).
#[derive(Clone, Default)]
struct Transcript(Vec<u8>);

impl Transcript {
    fn add(&mut self, item: &[u8]) {
        self.0.extend_from_slice(&(item.len() as u32).to_be_bytes());
        self.0.extend_from_slice(item);
    }
    fn hash(&self, p: &CryptoProvider) -> [u8; 32] {
        p.hash.hash(&self.0)
    }
}

fn identity_hash(p: &CryptoProvider, pin: &PinnedKey) -> [u8; 32] {
    let mut b = vec![pin.alg.code()];
    b.extend_from_slice(&pin.public_key);
    p.hash.hash(&b)
}

/// What the full relay learned and produced.
pub(crate) struct Relayed {
    /// M2 re-encrypted for the device (its share from the attacker).
    pub(crate) m2_for_device: Vec<u8>,
    /// The attacker opened the gateway's encrypted part (it shares the key with the gateway).
    pub(crate) opened_gateway_part: bool,
}

/// The key-substitution relay: the attacker replaced the device's share in M1 with its own
/// (`attacker`), the gateway answered `m2` keyed to it. The attacker opens M2 with the secret
/// it shares with the gateway, answers the device's original share itself, and re-encrypts
/// the gateway's key id, signature and a recomputed Finished for the device. Only the
/// gateway's signature (over the transcript the gateway saw) cannot be redone.
pub(crate) fn relay_m2(
    p: &CryptoProvider,
    pins: &[PinnedKey],
    device_m1: &[u8],
    forwarded_m1: &[u8],
    m2: &[u8],
    attacker: Box<dyn ActiveKeyExchange>,
) -> Result<Relayed, LabError> {
    fn e(w: &'static str) -> impl Fn(iotseal_proto::Error) -> LabError {
        move |x| LabError(format!("relay: {w}: {x}"))
    }
    fn c(w: &'static str) -> impl Fn(iotseal_proto::crypto::CryptoError) -> LabError {
        move |x| LabError(format!("relay: {w}: {x:?}"))
    }
    let g = GatewayHello::decode(m2).map_err(e("M2"))?;
    let suite = g.suite;
    let sig_len = suite.sig.signature_len();
    // Gateway side: the attacker holds the key exchange with the gateway.
    let shared_g = attacker.complete(g.share).map_err(c("complete"))?;
    let mut tg = Transcript::default();
    tg.add(forwarded_m1);
    tg.add(g.clear);
    let sec_g =
        HandshakeSecrets::new(p, shared_g.as_bytes(), &tg.hash(p)).map_err(c("schedule"))?;
    let kg = TrafficKeys::new(p, suite.aead, &sec_g.gateway).map_err(c("keys"))?;
    let mut body = g.encrypted.to_vec();
    if body.len() != 8 + sig_len + 16 + 16 {
        return Err(LabError(
            "relay: M2 encrypted part has an unexpected length".into(),
        ));
    }
    let split = body.len() - 16;
    let (ct, tag) = body.split_at_mut(split);
    let tag: [u8; 16] = (&*tag).try_into().map_err(|_| LabError("tag".into()))?;
    let opened = kg.key.open(&kg.nonce(0), g.clear, ct, &tag).is_ok();
    if !opened {
        return Err(LabError(
            "relay: could not open the gateway's M2 with the substituted key (lab bug)".into(),
        ));
    }
    let kid = &ct[..8];
    let sig_g = &ct[8..8 + sig_len];
    let pin = pins
        .iter()
        .find(|k| k.alg == suite.sig && key_id(p, k.alg, &k.public_key)[..] == kid[..])
        .ok_or_else(|| LabError("relay: unknown gateway key id".into()))?;
    // Device side: the attacker answers the device's own share.
    let dm1 = M1::parse(device_m1).ok_or_else(|| LabError("relay: device M1".into()))?;
    let resp = p
        .kem(suite.kem)
        .map_err(c("kem"))?
        .respond(&dm1.share, p.random)
        .map_err(c("respond"))?;
    let clear = encode_gateway_hello_clear(g.session_id, suite, g.time, &resp.share);
    let mut td = Transcript::default();
    td.add(device_m1);
    td.add(&clear);
    let sec_d =
        HandshakeSecrets::new(p, resp.secret.as_bytes(), &td.hash(p)).map_err(c("schedule"))?;
    td.add(&identity_hash(p, pin));
    // Sig_G is the gateway's signature over ITS transcript (with the attacker's share); the
    // device checks it over its own: this is the one thing the attacker cannot redo.
    td.add(sig_g);
    let fk = finished_key(p, &sec_d.gateway).map_err(c("finished"))?;
    let fin = p.hmac.mac(fk.as_bytes(), &[&td.hash(p)]);
    let mut plain = Vec::with_capacity(8 + sig_len + 16);
    plain.extend_from_slice(kid);
    plain.extend_from_slice(sig_g);
    plain.extend_from_slice(&fin[..16]);
    let kd = TrafficKeys::new(p, suite.aead, &sec_d.gateway).map_err(c("keys"))?;
    let tag = kd
        .key
        .seal(&kd.nonce(0), &clear, &mut plain)
        .map_err(c("seal"))?;
    let mut out = clear;
    out.extend_from_slice(&plain);
    out.extend_from_slice(&tag);
    Ok(Relayed {
        m2_for_device: out,
        opened_gateway_part: opened,
    })
}

/// M2 with its key share replaced by `share` (everything else as the gateway sent it).
pub(crate) fn swap_m2_share(m2: &[u8], share: &[u8]) -> Option<Vec<u8>> {
    let g = GatewayHello::decode(m2).ok()?;
    if g.share.len() != share.len() {
        return None;
    }
    let mut out = encode_gateway_hello_clear(g.session_id, g.suite, g.time, share);
    out.extend_from_slice(g.encrypted);
    Some(out)
}
