//! The gateway's (responder's) side of the handshake: hellos, retries, half-open state, and
//! finishing into sessions.
//!
//! Call order for each request body: first [`HandshakeServer::cached_answer`] (a
//! retransmission gets the same bytes again), then [`HandshakeServer::handle_hello`] or
//! [`HandshakeServer::handle_finish`]. After a finish, process the records that came with it,
//! then [`HandshakeServer::remember_answer`] the acknowledgement you send.
//! Checks run cheapest first: parsing, the hello MAC, time, nonce, policy, then public-key work.

use alloc::vec::Vec;

use subtle::ConstantTimeEq;

use crate::crypto::HASH_LEN;
use crate::error::{AuthFailure, Error, Limit, Malformed, PeerMisbehaved};
use crate::handshake::cache::ResponseCache;
use crate::handshake::config::{GatewayConfig, RegisteredDevice, identity_hash};
use crate::handshake::half_open::{HalfOpenTable, SourceKey};
use crate::handshake::messages::{
    Cookie, FINISHED_LEN, Finish, GatewayHello, Hello, KEY_ID_LEN, MAC1_LEN, NONCE_LEN,
    RetryReason, encode_gateway_hello_clear,
};
use crate::handshake::session_id::SessionIdPolicy;
use crate::handshake::transcript::{Transcript, finished, signed_content};
use crate::handshake::{DEVICE_SIG_CONTEXT, GATEWAY_SIG_CONTEXT, MAX_DEVICE_ID};
use crate::key_schedule::{HandshakeSecrets, TrafficKeys, finished_key};
use crate::record::{Role, Session};
use crate::suite::Suite;
use crate::time::{Time, wire_diff};

/// Looks up devices by identifier.
pub trait DeviceRegistry {
    /// The registered device, if any.
    fn lookup(&self, device_id: &[u8]) -> Option<RegisteredDevice>;
}

impl<F: Fn(&[u8]) -> Option<RegisteredDevice>> DeviceRegistry for F {
    fn lookup(&self, device_id: &[u8]) -> Option<RegisteredDevice> {
        self(device_id)
    }
}

/// The answer to a hello.
#[derive(Debug, PartialEq, Eq)]
pub enum HelloReply {
    /// M2: a half-open handshake now waits for M3 under `session_id`.
    GatewayHello {
        /// The new session's identifier.
        session_id: u32,
        /// The chosen suite.
        suite: Suite,
        /// The bytes to send.
        bytes: Vec<u8>,
    },
    /// Ask for another hello (clock hint, another key share, or proof that answers reach the
    /// source under load).
    Retry {
        /// Why.
        reason: RetryReason,
        /// For a clock retry: whether the hello was stale (else from the future).
        stale: bool,
        /// The bytes to send.
        bytes: Vec<u8>,
    },
}

/// A completed gateway handshake.
#[derive(Debug)]
pub struct GatewayEstablished<'a> {
    /// The session.
    pub session: Session,
    /// The authenticated device identifier.
    pub device_id: Vec<u8>,
    /// A batch of records that came with M3 (open them with `session`).
    pub records: &'a [u8],
}

#[derive(Debug)]
struct HalfOpen {
    /// `H(M1)`: the key of M2 in the answer cache (dropped with the entry when evicted).
    hello_hash: [u8; HASH_LEN],
    suite: Suite,
    transcript: Transcript,
    secrets: HandshakeSecrets,
    started: Time,
}

/// The gateway's handshake state: half-open table, hello nonce cache, answer cache.
#[derive(Debug)]
pub struct HandshakeServer {
    config: GatewayConfig,
    half_open: HalfOpenTable<u32, HalfOpen>,
    /// Nonces of admitted hellos, shared out by source like the half-open table (no cap per
    /// source; a full cache gives a source holding fewer than the largest holder that
    /// holder's oldest entry, docs/protocol.md §7.3 step 8).
    nonces: HalfOpenTable<[u8; NONCE_LEN], ()>,
    answers: ResponseCache,
    evictions: u64,
    nonce_evictions: u64,
}

impl HandshakeServer {
    /// A server with `config`.
    pub fn new(config: GatewayConfig) -> Self {
        Self {
            half_open: HalfOpenTable::new(config.max_half_open, config.max_half_open_per_source),
            nonces: HalfOpenTable::new(config.nonce_cache_capacity, 0),
            answers: ResponseCache::new(config.response_cache_capacity),
            evictions: 0,
            nonce_evictions: 0,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Replaces the configuration (for example after a key rotation); half-open handshakes
    /// keep the keys they started with.
    pub fn set_config(&mut self, config: GatewayConfig) {
        self.half_open
            .set_per_source(config.max_half_open_per_source);
        self.config = config;
    }

    /// Sets which session ids new sessions get (a cluster node calls this as the partitions
    /// it owns change). Half-open handshakes and sessions keep their ids.
    pub fn set_session_id_policy(&mut self, policy: SessionIdPolicy) {
        self.config.session_ids = policy;
    }

    /// Number of half-open handshakes.
    pub fn half_open_len(&self) -> usize {
        self.half_open.len()
    }

    /// Half-open handshakes evicted so far to make room in a full table (docs/protocol.md §7.3
    /// step 9); a counter for metrics.
    pub fn half_open_evictions(&self) -> u64 {
        self.evictions
    }

    /// Hello nonces evicted from a full nonce cache to admit a hello of a source holding
    /// fewer (its holder's hellos could be replayed again; each such hello only reaches a
    /// half-open handshake that cannot finish without the device's keys).
    pub fn nonce_evictions(&self) -> u64 {
        self.nonce_evictions
    }

    /// Number of half-open handshakes of `source` (`None`: of hellos given no source).
    pub fn half_open_held_by(&self, source: Option<SourceKey>) -> usize {
        self.half_open.held_by(source)
    }

    /// Drops expired state.
    pub fn expire(&mut self, now: Time) {
        self.half_open.expire(now);
        self.nonces.expire(now);
    }

    fn skew_ms(&self) -> u64 {
        u64::from(self.config.skew_secs) * 1000
    }

    /// How long a half-open handshake (and its M2 in the answer cache) lives:
    /// `half_open_secs`, at most `skew_secs`, at least 1 s.
    fn half_open_ms(&self) -> u64 {
        u64::from(self.config.half_open_secs.min(self.config.skew_secs).max(1)) * 1000
    }

    /// Whether a first hello from `source` must prove its address now: the half-open table
    /// holds `cookie_threshold` entries or more, or the source holds half its cap or more.
    fn under_load(&self, source: SourceKey) -> bool {
        let cap = self.half_open.per_source();
        self.half_open.len() >= self.config.cookie_threshold
            || (cap > 0 && self.half_open.held_by(Some(source)) >= cap.div_ceil(2))
    }

    /// The tag of a cookie: `trunc16(HMAC(cookie_secret, label || cookie[0..40]))`, with the
    /// source key appended to the input for an Address cookie.
    fn cookie_tag(&self, c: &Cookie, source: Option<SourceKey>) -> Option<[u8; 16]> {
        let p = self.config.provider;
        let label: &[u8] = b"iotseal v1 cookie\0";
        let tagged = c.tagged_part();
        let mac = match c.reason {
            RetryReason::Address => p.hmac.mac(
                self.config.cookie_secret.as_bytes(),
                &[label, &tagged, &source?.0],
            ),
            RetryReason::Clock | RetryReason::KeyShare => p
                .hmac
                .mac(self.config.cookie_secret.as_bytes(), &[label, &tagged]),
        };
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&mac[..16]);
        Some(tag)
    }

    /// The cached answer to an identical earlier request, if any.
    pub fn cached_answer(&self, now: Time, request: &[u8]) -> Option<Vec<u8>> {
        let h = self.config.provider.hash.hash(request);
        self.answers.get(now, &h).map(<[u8]>::to_vec)
    }

    /// Remembers the answer to a request for the skew window.
    pub fn remember_answer(&mut self, now: Time, request: &[u8], answer: Vec<u8>) {
        let h = self.config.provider.hash.hash(request);
        let exp = now.plus_millis(self.skew_ms());
        self.answers.put(now, h, exp, answer);
    }

    /// Handles M1 from a transport that names no source: no Address retries, and its
    /// hellos share one group of the half-open table, without a per-source cap. `in_use`
    /// tells whether a session id is taken by a live session. The new session id is drawn
    /// under the configuration's [`SessionIdPolicy`].
    pub fn handle_hello(
        &mut self,
        now: Time,
        msg: &[u8],
        in_use: &dyn Fn(u32) -> bool,
    ) -> Result<HelloReply, Error> {
        self.hello(now, msg, None, in_use)
    }

    /// Handles M1 from `source` (the transport's opaque key for where it came from,
    /// docs/protocol.md §4.2): under load a first hello is answered with an Address retry
    /// bound to `source`, the source's half-open handshakes are capped, and a full table
    /// makes room by evicting from the source that holds the most.
    pub fn handle_hello_from(
        &mut self,
        now: Time,
        msg: &[u8],
        source: SourceKey,
        in_use: &dyn Fn(u32) -> bool,
    ) -> Result<HelloReply, Error> {
        self.hello(now, msg, Some(source), in_use)
    }

    fn hello(
        &mut self,
        now: Time,
        msg: &[u8],
        source: Option<SourceKey>,
        in_use: &dyn Fn(u32) -> bool,
    ) -> Result<HelloReply, Error> {
        let cfg = &self.config;
        let p = cfg.provider;
        let hello = Hello::decode(msg)?;

        // 1. The hello MAC: which of our identities' pins the device holds.
        let ident = cfg
            .identities
            .iter()
            .position(|id| {
                let mac = p.hmac.mac(&id.mac1_key, &[hello.mac_input]);
                mac[..MAC1_LEN].ct_eq(&hello.mac1).unwrap_u8() == 1
            })
            .ok_or(AuthFailure::BadHelloMac)?;

        // 2. A retry cookie, if any (an Address cookie's tag covers the source too).
        let cookie = match hello.cookie {
            None => None,
            Some(c) => {
                let c = Cookie::decode(c)?;
                let age = wire_diff(now.wire_secs(), c.time);
                let ok = self
                    .cookie_tag(&c, source)
                    .is_some_and(|tag| tag.ct_eq(&c.tag).unwrap_u8() == 1);
                if !ok || age < 0 || age > i64::from(cfg.skew_secs) {
                    return Err(AuthFailure::BadCookie.into());
                }
                Some(c)
            }
        };

        // 3. Suite: the first offer our policy and identities allow (no public-key work).
        let supported = |s: &Suite| {
            p.kem(s.kem).is_ok()
                && p.signature(s.sig).is_ok()
                && p.aead(s.aead).is_ok()
                && cfg.identities.iter().any(|i| i.key.algorithm() == s.sig)
        };
        let suite = match hello
            .offers
            .iter()
            .copied()
            .find(|s| supported(s) && cfg.policy.allows(*s))
        {
            Some(s) => s,
            None if hello.offers.iter().any(supported) => return Err(Error::PolicyRefused),
            None => return Err(Error::UnsupportedSuite),
        };

        // 4. Load: a first hello from a source while the half-open table is past the cookie
        // threshold, or its source holds half its cap or more, must prove that answers reach
        // it. The Address cookie names the chosen suite and carries the gateway's time, so
        // the one retry also fixes the clock and the key share. No state is kept.
        self.half_open.expire(now);
        if let Some(src) = source
            && self.under_load(src)
        {
            match cookie.map(|c| c.reason) {
                None => {
                    let bytes = self.retry(now, msg, RetryReason::Address, suite, source);
                    return Ok(HelloReply::Retry {
                        reason: RetryReason::Address,
                        stale: false,
                        bytes,
                    });
                }
                Some(RetryReason::Address) => {}
                Some(RetryReason::Clock | RetryReason::KeyShare) => {
                    return Err(Limit::SourceUnproven.into());
                }
            }
        }
        let cfg = &self.config;

        // 5. Freshness. A first hello out of the skew gets one clock retry, whose cookie
        // names the chosen suite (so the retried hello carries the right key share).
        let delta = wire_diff(hello.time, now.wire_secs());
        let skew = i64::from(cfg.skew_secs);
        if delta < -skew || delta > skew {
            let stale = delta < 0;
            if cookie.is_some() {
                return Err(if stale { Error::Stale } else { Error::Future });
            }
            let bytes = self.retry(now, msg, RetryReason::Clock, suite, source);
            return Ok(HelloReply::Retry {
                reason: RetryReason::Clock,
                stale,
                bytes,
            });
        }

        // 6. Replay: the nonce within its window. (Identical retransmissions were answered
        // from the answer cache before this call.)
        if self.nonces.contains(now, hello.nonce) {
            return Err(Error::Replay);
        }

        // 7. The key share must be for the chosen suite's KEM, else one key-share retry.
        let share_suite = match &cookie {
            Some(c) => {
                if c.suite != suite || !hello.offers.contains(&c.suite) {
                    return Err(PeerMisbehaved::RetryMismatch.into());
                }
                Some(c.suite)
            }
            None => hello.first_offer,
        };
        if share_suite.map(|s| s.kem) != Some(suite.kem) {
            if cookie.is_some() {
                return Err(PeerMisbehaved::RetryMismatch.into());
            }
            let bytes = self.retry(now, msg, RetryReason::KeyShare, suite, source);
            return Ok(HelloReply::Retry {
                reason: RetryReason::KeyShare,
                stale: false,
                bytes,
            });
        }
        if hello.share.len() != suite.kem.initiator_share_len() {
            return Err(Malformed::BadLength.into());
        }

        // 8. Room for one more half-open handshake of this source (a full table evicts the
        // oldest entry of the source holding the most, if that is more than this one holds),
        // and for one more nonce.
        self.half_open.room(now, source)?;
        if self.nonces.room(now, source).is_err() {
            return Err(Limit::NonceCacheFull.into());
        }

        // 9. Public-key work.
        let cfg = &self.config;
        let resp = p.kem(suite.kem)?.respond(hello.share, p.random)?;
        let session_id = self.new_session_id(in_use)?;
        let mut t = Transcript::new(&p);
        if let Some(c) = &cookie {
            t.add(&c.hello_hash);
            t.add(&c.to_retry_message());
        }
        t.add(msg);
        let clear = encode_gateway_hello_clear(session_id, suite, now.wire_secs(), &resp.share);
        t.add(&clear);
        let secrets = HandshakeSecrets::new(&p, resp.secret.as_bytes(), &t.hash())?;
        drop(resp.secret);

        let id = if cfg.identities[ident].key.algorithm() == suite.sig {
            &cfg.identities[ident]
        } else {
            cfg.identities
                .iter()
                .find(|i| i.key.algorithm() == suite.sig)
                .ok_or(Error::UnsupportedSuite)?
        };
        t.add(&identity_hash(&p, suite.sig, &id.public_key));
        let sig = id
            .key
            .sign(&signed_content(GATEWAY_SIG_CONTEXT, &t.hash()), p.random)?;
        t.add(&sig);
        let fin = finished(&p, &finished_key(&p, &secrets.gateway)?, &t.hash());
        t.add(&fin);

        let mut body = Vec::with_capacity(KEY_ID_LEN + sig.len() + FINISHED_LEN + 16);
        body.extend_from_slice(&id.key_id);
        body.extend_from_slice(&sig);
        body.extend_from_slice(&fin);
        let gkeys = TrafficKeys::new(&p, suite.aead, &secrets.gateway)?;
        let tag = gkeys.key.seal(&gkeys.nonce(0), &clear, &mut body)?;
        let mut bytes = clear;
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&tag);

        let expires = now.plus_millis(self.half_open_ms());
        // The hello stays fresh through the whole second `time + skew`: keep its nonce until
        // the end of that second.
        let nonce_exp = Time::from_secs(now.as_secs().saturating_add_signed(delta))
            .plus_millis(self.skew_ms() + 1000);
        if let Ok(Some(_)) = self.nonces.insert(
            now,
            hello.nonce,
            source,
            nonce_exp.max(now.plus_millis(1)),
            (),
        ) {
            self.nonce_evictions += 1;
        }
        let hello_hash = p.hash.hash(msg);
        let entry = HalfOpen {
            hello_hash,
            suite,
            transcript: t,
            secrets,
            started: now,
        };
        if let Ok(Some((_, evicted))) = self
            .half_open
            .insert(now, session_id, source, expires, entry)
        {
            // Its M2 is of no use any more: a retransmission of its hello is a new hello.
            self.answers.remove(&evicted.hello_hash);
            self.evictions += 1;
        }
        // M2 is useful as long as its half-open handshake lives.
        self.answers.put(now, hello_hash, expires, bytes.clone());
        Ok(HelloReply::GatewayHello {
            session_id,
            suite,
            bytes,
        })
    }

    fn retry(
        &self,
        now: Time,
        msg: &[u8],
        reason: RetryReason,
        suite: Suite,
        source: Option<SourceKey>,
    ) -> Vec<u8> {
        let p = self.config.provider;
        let mut c = Cookie {
            hello_hash: p.hash.hash(msg),
            reason,
            suite,
            time: now.wire_secs(),
            tag: [0; 16],
        };
        // Address retries are only made for a known source, so there is always a tag.
        c.tag = self.cookie_tag(&c, source).unwrap_or_default();
        c.to_retry_message()
    }

    /// Draws a session id the configured [`SessionIdPolicy`] allows and nobody uses. With the
    /// default policy this consumes exactly 4 random bytes per try, as the vectors expect.
    fn new_session_id(&self, in_use: &dyn Fn(u32) -> bool) -> Result<u32, Error> {
        for _ in 0..16 {
            let id = self.config.session_ids.draw(self.config.provider.random)?;
            if !in_use(id) && !self.half_open.contains(Time(0), id) {
                return Ok(id);
            }
        }
        Err(Limit::HalfOpenFull.into())
    }

    /// Handles M3 (and returns the records that came with it, unopened).
    pub fn handle_finish<'a>(
        &mut self,
        now: Time,
        msg: &'a [u8],
        registry: &dyn DeviceRegistry,
    ) -> Result<GatewayEstablished<'a>, Error> {
        let p = self.config.provider;
        let m3 = Finish::decode(msg)?;
        let ho = self
            .half_open
            .get(now, m3.session_id)
            .ok_or(Error::UnknownSession)?;
        let suite = ho.suite;
        let sig_len = suite.sig.signature_len();
        let plain_len = 1 + MAX_DEVICE_ID + sig_len + FINISHED_LEN;
        if m3.encrypted.len() != plain_len + crate::crypto::TAG_LEN {
            return Err(Malformed::BadLength.into());
        }
        // Cheapest authentication first: the AEAD under the device's handshake key.
        let dkeys = TrafficKeys::new(&p, suite.aead, &ho.secrets.device)?;
        let mut body = m3.encrypted.to_vec();
        let (ct, tag) = body.split_at_mut(plain_len);
        let tag: [u8; crate::crypto::TAG_LEN] =
            (&*tag).try_into().map_err(|_| Malformed::BadLength)?;
        dkeys.key.open(&dkeys.nonce(0), m3.clear, ct, &tag)?;
        let id_len = usize::from(ct[0]);
        if id_len == 0
            || id_len > MAX_DEVICE_ID
            || ct[1 + id_len..1 + MAX_DEVICE_ID].iter().any(|&b| b != 0)
        {
            return Err(Malformed::BadValue.into());
        }
        let device_id = &ct[1..1 + id_len];
        let sig = &ct[1 + MAX_DEVICE_ID..1 + MAX_DEVICE_ID + sig_len];
        let fin = &ct[1 + MAX_DEVICE_ID + sig_len..];

        let dev = registry
            .lookup(device_id)
            .ok_or(AuthFailure::UnknownIdentity)?;
        if dev.revoked {
            return Err(AuthFailure::Revoked.into());
        }
        if dev.alg != suite.sig || dev.policy.as_ref().is_some_and(|pol| !pol.allows(suite)) {
            return Err(AuthFailure::DevicePolicy.into());
        }

        let mut t = ho.transcript.fork();
        t.add(m3.clear);
        t.add(device_id);
        t.add(&identity_hash(&p, dev.alg, &dev.public_key));
        p.signature(suite.sig)?
            .verify(
                &dev.public_key,
                &signed_content(DEVICE_SIG_CONTEXT, &t.hash()),
                sig,
            )
            .map_err(|_| AuthFailure::BadSignature)?;
        t.add(sig);
        let expect = finished(&p, &finished_key(&p, &ho.secrets.device)?, &t.hash());
        if expect.ct_eq(fin).unwrap_u8() != 1 {
            return Err(AuthFailure::BadFinished.into());
        }
        t.add(fin);
        let th_full: [u8; HASH_LEN] = t.hash();

        let ho = self
            .half_open
            .remove(m3.session_id)
            .ok_or(Error::UnknownSession)?;
        let (d_app, g_app) = ho.secrets.application(&p, &th_full)?;
        let session = Session::new(
            p,
            suite,
            Role::Gateway,
            m3.session_id,
            ho.started,
            self.config.session,
            d_app,
            g_app,
        )?;
        Ok(GatewayEstablished {
            session,
            device_id: device_id.to_vec(),
            records: m3.records,
        })
    }

    /// Test-only: rebuilds the half-open state of a recorded handshake from its M1, M2 and
    /// the shared secret, so a provider that keeps its own randomness can be checked as the
    /// receiver of a recorded M3. `m1` is the hello M2 answered: a retried hello's echoed
    /// cookie gives the transcript's retry prefix, as in `handle_hello`.
    #[doc(hidden)]
    pub fn dangerous_resume_half_open(
        &mut self,
        now: Time,
        m1: &[u8],
        m2: &[u8],
        shared: &[u8],
    ) -> Result<u32, Error> {
        let p = self.config.provider;
        let gh = GatewayHello::decode(m2)?;
        let mut t = Transcript::new(&p);
        if let Some(c) = Hello::decode(m1)?.cookie {
            let c = Cookie::decode(c)?;
            t.add(&c.hello_hash);
            t.add(&c.to_retry_message());
        }
        t.add(m1);
        t.add(gh.clear);
        let secrets = HandshakeSecrets::new(&p, shared, &t.hash())?;
        let gkeys = TrafficKeys::new(&p, gh.suite.aead, &secrets.gateway)?;
        let mut body = gh.encrypted.to_vec();
        let n = body.len().checked_sub(16).ok_or(Malformed::Truncated)?;
        let (ct, tag) = body.split_at_mut(n);
        let tag: [u8; 16] = (&*tag).try_into().map_err(|_| Malformed::BadLength)?;
        gkeys.key.open(&gkeys.nonce(0), gh.clear, ct, &tag)?;
        let (kid, rest) = ct.split_at(KEY_ID_LEN);
        let (sig, fin) = rest.split_at(gh.suite.sig.signature_len());
        let id = self
            .config
            .identities
            .iter()
            .find(|i| i.key_id[..] == kid[..])
            .ok_or(AuthFailure::UnknownIdentity)?;
        t.add(&identity_hash(&p, gh.suite.sig, &id.public_key));
        t.add(sig);
        t.add(fin);
        let exp = now.plus_millis(self.half_open_ms());
        let entry = HalfOpen {
            hello_hash: p.hash.hash(m1),
            suite: gh.suite,
            transcript: t,
            secrets,
            started: now,
        };
        self.half_open
            .insert(now, gh.session_id, None, exp, entry)
            .map_err(|_| Limit::HalfOpenFull)?;
        Ok(gh.session_id)
    }
}
