//! The gateway's (responder's) side of the handshake: hellos, retries, half-open state, and
//! finishing into sessions.
//!
//! Call order for each request body: first [`HandshakeServer::cached_answer`] (a
//! retransmission gets the same bytes again), then [`HandshakeServer::handle_hello`] or
//! [`HandshakeServer::handle_finish`]. After a finish, process the records that came with it,
//! then [`HandshakeServer::remember_answer`] the acknowledgement you send.
//! Checks run cheapest first: parsing, the hello MAC, time, nonce, policy, then public-key work.
//!
//! # Public-key work outside the server (check → compute → commit)
//!
//! `handle_hello` and `handle_finish` each run in three steps, which a caller that keeps the
//! server behind a lock can run apart, holding the lock only for the first and the last
//! (docs/decisions.md D36):
//!
//! ```text
//! hello:  check_hello(&mut self) ─▶ HelloStep::Compute(HelloJob)   (or Reply: a retry)
//!         HelloJob::compute(in_use)            no server, any thread: KEM, id, sign, seal
//!         commit_hello(&mut self) ─▶ HelloReply   re-checks nonce, room, id; inserts
//! finish: check_finish(&self) ─▶ FinishJob     finds the half-open entry, copies its state
//!         FinishJob::verify(registry)          no server, any thread: AEAD, verify, keys
//!         commit_finish(&mut self, msg) ─▶ GatewayEstablished   removes the entry (once)
//! ```
//!
//! The jobs are `Send` and own their inputs. What may change between the steps is re-checked
//! at the commit; see [`HandshakeServer::commit_hello`] and [`HandshakeServer::commit_finish`].

use alloc::sync::Arc;
use alloc::vec::Vec;

use subtle::ConstantTimeEq;

use crate::crypto::{CryptoProvider, HASH_LEN, SecureRandom};
use crate::error::{ApiMisuse, AuthFailure, Error, Limit, Malformed, PeerMisbehaved};
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
use crate::record::{Role, Session, SessionConfig};
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
    /// Shared with the hello jobs in flight (a new configuration does not change theirs).
    config: Arc<GatewayConfig>,
    /// The session-id policy in force ([`HandshakeServer::set_session_id_policy`]; starts as
    /// the configuration's; shared with the hello jobs in flight).
    session_ids: Arc<SessionIdPolicy>,
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
            session_ids: Arc::new(config.session_ids.clone()),
            config: Arc::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Replaces the configuration (for example after a key rotation); half-open handshakes
    /// keep the keys they started with.
    /// Hello jobs already checked keep the configuration they were checked under.
    pub fn set_config(&mut self, config: GatewayConfig) {
        self.half_open
            .set_per_source(config.max_half_open_per_source);
        self.session_ids = Arc::new(config.session_ids.clone());
        self.config = Arc::new(config);
    }

    /// Sets which session ids new sessions get (a cluster node calls this as the partitions
    /// it owns change). Half-open handshakes and sessions keep their ids, and hello jobs
    /// already checked draw under the policy they were checked under. The configuration's
    /// `session_ids` field keeps the policy it was made with; this one is
    /// [`Self::session_id_policy`].
    pub fn set_session_id_policy(&mut self, policy: SessionIdPolicy) {
        self.session_ids = Arc::new(policy);
    }

    /// The session-id policy in force.
    pub fn session_id_policy(&self) -> &SessionIdPolicy {
        &self.session_ids
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

    /// Whether a half-open handshake holds `session_id` (expired entries not yet dropped
    /// included, as the one-call draw counts them): for the `in_use` of [`HelloJob::compute`].
    pub fn is_half_open(&self, session_id: u32) -> bool {
        self.half_open.contains(Time(0), session_id)
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
    /// under the server's [`SessionIdPolicy`].
    ///
    /// The same as [`Self::check_hello`], [`HelloJob::compute`] and [`Self::commit_hello`] in
    /// a row (the draw also skips ids of the half-open table, so the commit never refuses it).
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
    ///
    /// The same as [`Self::check_hello`], [`HelloJob::compute`] and [`Self::commit_hello`] in
    /// a row.
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
        let job = match self.check_hello(now, msg, source)? {
            HelloStep::Reply(reply) => return Ok(reply),
            HelloStep::Compute(job) => job,
        };
        let server = &*self;
        let computed = job.compute(&|id| in_use(id) || server.is_half_open(id))?;
        self.commit_hello(now, computed)
    }

    /// Hello, step 1 of 3 (cheap, under the caller's lock): every check before the public-key
    /// work (docs/protocol.md §7.3 steps 1–8: the hello MAC, the cookie, the suite, the load
    /// and Address retry, freshness and the Clock retry, the nonce, the KeyShare retry, room
    /// in the half-open table and the nonce cache). Returns a ready answer (a retry) or the
    /// job to [`HelloJob::compute`] without the lock. Nothing is inserted yet: the hello's
    /// nonce, half-open entry and answer enter at [`Self::commit_hello`]. `source` is as for
    /// [`Self::handle_hello_from`] (`None`: as [`Self::handle_hello`]).
    pub fn check_hello(
        &mut self,
        now: Time,
        msg: &[u8],
        source: Option<SourceKey>,
    ) -> Result<HelloStep, Error> {
        let cfg = Arc::clone(&self.config);
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
                    return Ok(HelloStep::Reply(HelloReply::Retry {
                        reason: RetryReason::Address,
                        stale: false,
                        bytes,
                    }));
                }
                Some(RetryReason::Address) => {}
                Some(RetryReason::Clock | RetryReason::KeyShare) => {
                    return Err(Limit::SourceUnproven.into());
                }
            }
        }

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
            return Ok(HelloStep::Reply(HelloReply::Retry {
                reason: RetryReason::Clock,
                stale,
                bytes,
            }));
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
            return Ok(HelloStep::Reply(HelloReply::Retry {
                reason: RetryReason::KeyShare,
                stale: false,
                bytes,
            }));
        }
        if hello.share.len() != suite.kem.initiator_share_len() {
            return Err(Malformed::BadLength.into());
        }

        // 8. Room for one more half-open handshake of this source (a full table evicts the
        // oldest entry of the source holding the most, if that is more than this one holds),
        // and for one more nonce. Checked again at the commit.
        self.half_open.room(now, source)?;
        if self.nonces.room(now, source).is_err() {
            return Err(Limit::NonceCacheFull.into());
        }

        // The hello stays fresh through the whole second `time + skew`: keep its nonce until
        // the end of that second.
        let nonce_expires = Time::from_secs(now.as_secs().saturating_add_signed(delta))
            .plus_millis(self.skew_ms() + 1000);
        Ok(HelloStep::Compute(HelloJob {
            config: cfg,
            session_ids: Arc::clone(&self.session_ids),
            msg: msg.to_vec(),
            suite,
            ident,
            cookie,
            source,
            now,
            nonce: hello.nonce,
            nonce_expires,
        }))
    }

    /// Hello, step 3 of 3 (cheap, under the caller's lock): admits the hello computed by
    /// [`HelloJob::compute`], re-checking what may have changed since [`Self::check_hello`]:
    ///
    /// - the hello's nonce is now present: if this very hello (same bytes) was committed
    ///   meanwhile and its M2 is still cached, that M2 is returned (as
    ///   [`Self::cached_answer`] would have; nothing new is inserted, this job's keys are
    ///   dropped); else [`Error::Replay`];
    /// - room in the half-open table (a full table evicts as in step 8, refusing with
    ///   [`Limit::HalfOpenFull`] / [`Limit::HalfOpenPerSource`]) and in the nonce cache
    ///   ([`Limit::NonceCacheFull`]);
    /// - the drawn session id now taken by a half-open handshake (drawn by another job while
    ///   this one was computing, or admitted by [`Self::dangerous_resume_half_open`]):
    ///   [`Limit::HalfOpenFull`] (answered Busy: the device retries with a new hello; the id
    ///   is in the signed M2, so it cannot be drawn again here).
    ///
    /// Live sessions are the caller's: see [`HelloJob::compute`] for the id it checks again.
    /// Not re-checked: the load (the Address retry decision stands), the hello's freshness
    /// (judged at `check_hello`'s time, which M2 carries) and the configuration (the job
    /// signs with the identities it was checked with). Then inserts the nonce, the half-open
    /// entry and M2 in the answer cache, expiring from `now`.
    pub fn commit_hello(
        &mut self,
        now: Time,
        computed: HelloComputed,
    ) -> Result<HelloReply, Error> {
        let HelloComputed {
            session_id,
            suite,
            bytes,
            hello_hash,
            nonce,
            nonce_expires,
            source,
            transcript,
            secrets,
            started,
        } = computed;
        if self.nonces.contains(now, nonce) {
            // Admitted meanwhile: the same hello (answer its M2 again), or another one with
            // this nonce (a replay).
            return match self.answers.get(now, &hello_hash) {
                Some(cached) => {
                    let gh = GatewayHello::decode(cached)?;
                    Ok(HelloReply::GatewayHello {
                        session_id: gh.session_id,
                        suite: gh.suite,
                        bytes: cached.to_vec(),
                    })
                }
                None => Err(Error::Replay),
            };
        }
        self.half_open.room(now, source)?;
        if self.nonces.room(now, source).is_err() {
            return Err(Limit::NonceCacheFull.into());
        }
        if self.half_open.contains(now, session_id) {
            return Err(Limit::HalfOpenFull.into());
        }

        let expires = now.plus_millis(self.half_open_ms());
        if let Ok(Some(_)) = self.nonces.insert(
            now,
            nonce,
            source,
            nonce_expires.max(now.plus_millis(1)),
            (),
        ) {
            self.nonce_evictions += 1;
        }
        let entry = HalfOpen {
            hello_hash,
            suite,
            transcript,
            secrets,
            started,
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

    /// Handles M3 (and returns the records that came with it, unopened).
    ///
    /// The same as [`Self::check_finish`], [`FinishJob::verify`] and [`Self::commit_finish`]
    /// in a row.
    pub fn handle_finish<'a>(
        &mut self,
        now: Time,
        msg: &'a [u8],
        registry: &dyn DeviceRegistry,
    ) -> Result<GatewayEstablished<'a>, Error> {
        let verified = self.check_finish(now, msg)?.verify(registry)?;
        self.commit_finish(now, verified, msg)
    }

    /// Finish, step 1 of 3 (cheap, under the caller's lock): parses M3, finds its half-open
    /// handshake ([`Error::UnknownSession`] if none lives at `now`) and checks the encrypted
    /// part's length. The job holds a fork of the transcript, copies of the handshake secrets
    /// (wiped when the job drops) and a copy of M3 up to its records; the half-open entry
    /// stays until [`Self::commit_finish`].
    pub fn check_finish(&self, now: Time, msg: &[u8]) -> Result<FinishJob, Error> {
        let m3 = Finish::decode(msg)?;
        let ho = self
            .half_open
            .get(now, m3.session_id)
            .ok_or(Error::UnknownSession)?;
        let suite = ho.suite;
        let plain_len = 1 + MAX_DEVICE_ID + suite.sig.signature_len() + FINISHED_LEN;
        if m3.encrypted.len() != plain_len + crate::crypto::TAG_LEN {
            return Err(Malformed::BadLength.into());
        }
        let head = msg
            .get(..m3.clear.len() + m3.encrypted.len())
            .ok_or(Malformed::Truncated)?;
        Ok(FinishJob {
            provider: self.config.provider,
            session_config: self.config.session,
            session_id: m3.session_id,
            suite,
            started: ho.started,
            hello_hash: ho.hello_hash,
            transcript: ho.transcript.fork(),
            secrets: HandshakeSecrets {
                device: ho.secrets.device.clone(),
                gateway: ho.secrets.gateway.clone(),
                master: ho.secrets.master.clone(),
            },
            head: head.to_vec(),
            clear_len: m3.clear.len(),
        })
    }

    /// Finish, step 3 of 3 (cheap, under the caller's lock): ends the half-open handshake
    /// that [`FinishJob::verify`] completed and returns the session with the records of
    /// `msg`, which must be the M3 given to [`Self::check_finish`]
    /// ([`ApiMisuse::CommitMismatch`] otherwise; only its part up to the records is compared).
    ///
    /// If the half-open handshake is gone by now (finished by a concurrent M3 of the same
    /// session, evicted, or expired at `now`), or its id now names another half-open
    /// handshake: [`Error::UnknownSession`]. Of two concurrent finishes of one session
    /// exactly one commits.
    pub fn commit_finish<'a>(
        &mut self,
        now: Time,
        verified: FinishVerified,
        msg: &'a [u8],
    ) -> Result<GatewayEstablished<'a>, Error> {
        let records = match msg.split_at_checked(verified.head.len()) {
            Some((head, records)) if head == verified.head.as_slice() => records,
            _ => return Err(ApiMisuse::CommitMismatch.into()),
        };
        match self.half_open.get(now, verified.session_id) {
            Some(ho) if ho.hello_hash == verified.hello_hash => {}
            _ => return Err(Error::UnknownSession),
        }
        // Dropping the entry wipes its secrets.
        drop(self.half_open.remove(verified.session_id));
        Ok(GatewayEstablished {
            session: verified.session,
            device_id: verified.device_id,
            records,
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

/// What [`HandshakeServer::check_hello`] decided.
#[derive(Debug)]
pub enum HelloStep {
    /// Answer at once (a retry); nothing to compute or commit.
    Reply(HelloReply),
    /// Public-key work to do with [`HelloJob::compute`], then [`HandshakeServer::commit_hello`].
    Compute(HelloJob),
}

/// A checked hello's public-key work, detached from the server (`Send`: run it on any
/// thread, without the server's lock). It owns what the work needs: the configuration it was
/// checked under (shared), the session-id policy, a copy of M1, the chosen suite and identity,
/// the cookie and the source.
#[derive(Debug)]
pub struct HelloJob {
    config: Arc<GatewayConfig>,
    session_ids: Arc<SessionIdPolicy>,
    msg: Vec<u8>,
    suite: Suite,
    /// The identity whose pin the hello MAC names.
    ident: usize,
    cookie: Option<Cookie>,
    source: Option<SourceKey>,
    /// When the hello was checked: M2's time, the session's start.
    now: Time,
    nonce: [u8; NONCE_LEN],
    nonce_expires: Time,
}

impl HelloJob {
    /// The chosen suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The public-key work, in this order (the order of random draws the vectors expect):
    /// the KEM's response to the device's share, the session id (drawn under the policy until
    /// `in_use` says no, at most 16 tries, else [`Limit::HalfOpenFull`]), the transcript and
    /// handshake secrets, the gateway's signature, Finished, and M2 sealed.
    ///
    /// `in_use` should say whether an id is taken by a live session or a half-open handshake
    /// ([`HandshakeServer::is_half_open`], under the caller's lock for that one call).
    /// [`HandshakeServer::commit_hello`] refuses an id a half-open handshake took meanwhile,
    /// but it cannot see live sessions: a caller that computes outside its lock checks
    /// [`HelloComputed::session_id`] against its live sessions again before committing (an id
    /// drawn by two jobs at once whose first handshake finished before the second commits).
    pub fn compute(self, in_use: &dyn Fn(u32) -> bool) -> Result<HelloComputed, Error> {
        let cfg = &*self.config;
        let p = cfg.provider;
        let suite = self.suite;
        let msg = &self.msg[..];
        let hello = Hello::decode(msg)?;
        let resp = p.kem(suite.kem)?.respond(hello.share, p.random)?;
        let session_id = draw_session_id(&self.session_ids, p.random, in_use)?;
        let mut t = Transcript::new(&p);
        if let Some(c) = &self.cookie {
            t.add(&c.hello_hash);
            t.add(&c.to_retry_message());
        }
        t.add(msg);
        let clear =
            encode_gateway_hello_clear(session_id, suite, self.now.wire_secs(), &resp.share);
        t.add(&clear);
        let secrets = HandshakeSecrets::new(&p, resp.secret.as_bytes(), &t.hash())?;
        drop(resp.secret);

        let id = match cfg.identities.get(self.ident) {
            Some(id) if id.key.algorithm() == suite.sig => id,
            _ => cfg
                .identities
                .iter()
                .find(|i| i.key.algorithm() == suite.sig)
                .ok_or(Error::UnsupportedSuite)?,
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

        Ok(HelloComputed {
            session_id,
            suite,
            bytes,
            hello_hash: p.hash.hash(msg),
            nonce: self.nonce,
            nonce_expires: self.nonce_expires,
            source: self.source,
            transcript: t,
            secrets,
            started: self.now,
        })
    }
}

/// Draws a session id the policy allows and `in_use` does not refuse. With the default
/// policy this consumes exactly 4 random bytes per try, as the vectors expect.
fn draw_session_id(
    policy: &SessionIdPolicy,
    rng: &dyn SecureRandom,
    in_use: &dyn Fn(u32) -> bool,
) -> Result<u32, Error> {
    for _ in 0..16 {
        let id = policy.draw(rng)?;
        if !in_use(id) {
            return Ok(id);
        }
    }
    Err(Limit::HalfOpenFull.into())
}

/// A computed M2 and the half-open state to admit with [`HandshakeServer::commit_hello`]
/// (its handshake secrets are wiped when it drops uncommitted).
#[derive(Debug)]
pub struct HelloComputed {
    session_id: u32,
    suite: Suite,
    bytes: Vec<u8>,
    hello_hash: [u8; HASH_LEN],
    nonce: [u8; NONCE_LEN],
    nonce_expires: Time,
    source: Option<SourceKey>,
    transcript: Transcript,
    secrets: HandshakeSecrets,
    started: Time,
}

impl HelloComputed {
    /// The session id drawn.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }
}

/// A checked M3's verification, detached from the server (`Send`). It owns a fork of the
/// half-open transcript, copies of the handshake secrets (wiped on drop) and a copy of M3 up
/// to its records (the records stay in the caller's buffer: [`HandshakeServer::commit_finish`]
/// takes the message again and lends them out).
#[derive(Debug)]
pub struct FinishJob {
    provider: CryptoProvider,
    session_config: SessionConfig,
    session_id: u32,
    suite: Suite,
    started: Time,
    /// Names the half-open entry checked (an id may be reused after it went).
    hello_hash: [u8; HASH_LEN],
    transcript: Transcript,
    secrets: HandshakeSecrets,
    /// M3's cleartext header and encrypted part.
    head: Vec<u8>,
    clear_len: usize,
}

impl FinishJob {
    /// The session id M3 names.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// Verifies M3, cheapest first: the AEAD under the device's handshake key, the device
    /// id's padding, the registry (unknown, revoked, policy), the device's signature, its
    /// Finished; then derives the application secrets and builds the session.
    pub fn verify(self, registry: &dyn DeviceRegistry) -> Result<FinishVerified, Error> {
        let Self {
            provider: p,
            session_config,
            session_id,
            suite,
            started,
            hello_hash,
            transcript,
            secrets,
            head,
            clear_len,
        } = self;
        let sig_len = suite.sig.signature_len();
        let plain_len = 1 + MAX_DEVICE_ID + sig_len + FINISHED_LEN;
        let (clear, encrypted) = head
            .split_at_checked(clear_len)
            .ok_or(Malformed::Truncated)?;
        if encrypted.len() != plain_len + crate::crypto::TAG_LEN {
            return Err(Malformed::BadLength.into());
        }
        // Cheapest authentication first: the AEAD under the device's handshake key.
        let dkeys = TrafficKeys::new(&p, suite.aead, &secrets.device)?;
        let mut body = encrypted.to_vec();
        let (ct, tag) = body.split_at_mut(plain_len);
        let tag: [u8; crate::crypto::TAG_LEN] =
            (&*tag).try_into().map_err(|_| Malformed::BadLength)?;
        dkeys.key.open(&dkeys.nonce(0), clear, ct, &tag)?;
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

        let mut t = transcript;
        t.add(clear);
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
        let expect = finished(&p, &finished_key(&p, &secrets.device)?, &t.hash());
        if expect.ct_eq(fin).unwrap_u8() != 1 {
            return Err(AuthFailure::BadFinished.into());
        }
        t.add(fin);
        let th_full: [u8; HASH_LEN] = t.hash();

        let (d_app, g_app) = secrets.application(&p, &th_full)?;
        let session = Session::new(
            p,
            suite,
            Role::Gateway,
            session_id,
            started,
            session_config,
            d_app,
            g_app,
        )?;
        let device_id = device_id.to_vec();
        Ok(FinishVerified {
            session,
            device_id,
            session_id,
            hello_hash,
            head,
        })
    }
}

/// A verified M3, to end its half-open handshake with [`HandshakeServer::commit_finish`].
#[derive(Debug)]
pub struct FinishVerified {
    session: Session,
    device_id: Vec<u8>,
    session_id: u32,
    hello_hash: [u8; HASH_LEN],
    head: Vec<u8>,
}

impl FinishVerified {
    /// The authenticated device identifier.
    pub fn device_id(&self) -> &[u8] {
        &self.device_id
    }

    /// The session id.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }
}
