//! The device's (initiator's) side of the handshake.
//!
//! Call order: [`DeviceHandshake::start`] → send the hello → feed the answer to
//! [`DeviceHandshake::handle`] → either send the new hello of [`DeviceNext::Retry`] and
//! handle again (at most once), or [`DeviceNext::Established`]: send its `finish` bytes
//! (optionally followed by records sealed with the new session, see
//! [`crate::record::batch`]) and wait for the acknowledgement record.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use subtle::ConstantTimeEq;

use crate::crypto::{ActiveKeyExchange, HASH_LEN};
use crate::error::{AuthFailure, Error, Malformed, PeerMisbehaved};
use crate::handshake::config::{DeviceConfig, identity_hash, key_id, mac1_key};
use crate::handshake::messages::{
    Cookie, FINISHED_LEN, GatewayHello, KEY_ID_LEN, MAC1_LEN, NONCE_LEN, RetryReason,
    encode_finish_clear, encode_hello_body, msg_type,
};
use crate::handshake::transcript::{Transcript, finished, signed_content};
use crate::handshake::{DEVICE_SIG_CONTEXT, GATEWAY_SIG_CONTEXT, MAX_DEVICE_ID};
use crate::key_schedule::{HandshakeSecrets, TrafficKeys, finished_key};
use crate::record::{Role, Session};
use crate::suite::Suite;
use crate::time::{Time, wire_diff};

/// A device handshake waiting for the gateway's answer.
#[derive(Debug)]
pub struct DeviceHandshake {
    config: Arc<DeviceConfig>,
    /// The suite whose key share the current hello carries.
    share_suite: Suite,
    ephemeral: Box<dyn ActiveKeyExchange>,
    /// Transcript items before the current hello (after a retry: H(M1), the retry).
    prefix: Vec<Vec<u8>>,
    hello: Vec<u8>,
    sent_at: Time,
    retried: bool,
}

/// What to do after [`DeviceHandshake::handle`].
#[derive(Debug)]
pub enum DeviceNext {
    /// The gateway asked for another hello: send `hello`, then handle the answer.
    Retry {
        /// The handshake, continued.
        handshake: DeviceHandshake,
        /// The new hello to send.
        hello: Vec<u8>,
    },
    /// Authenticated: the session is ready.
    Established(Box<DeviceEstablished>),
}

/// A completed device handshake.
#[derive(Debug)]
pub struct DeviceEstablished {
    /// The session.
    pub session: Session,
    /// M3, to send (records sealed with `session` may follow it in the same message).
    pub finish: Vec<u8>,
    /// The gateway's authenticated time, when the round trip was short enough (at most
    /// skew / 2) to adopt it; `None` otherwise. Adopt by setting the clock to this value: the
    /// session already runs on it (its start is this time), so pass times on the adopted
    /// clock to it from now on.
    pub gateway_time: Option<Time>,
    /// Which pinned key the gateway used.
    pub gateway_key_id: [u8; KEY_ID_LEN],
}

impl DeviceHandshake {
    /// Starts a handshake: a fresh ephemeral key and the hello (M1) to send.
    pub fn start(config: Arc<DeviceConfig>, now: Time) -> Result<(Self, Vec<u8>), Error> {
        config.validate()?;
        let suite = config.offers[0];
        let kem = config.provider.kem(suite.kem)?;
        let ephemeral = kem.start(config.provider.random)?;
        let mut nonce = [0u8; NONCE_LEN];
        config.provider.random.fill(&mut nonce)?;
        Self::with_ephemeral(
            config,
            now,
            suite,
            ephemeral,
            nonce,
            Vec::new(),
            None,
            false,
        )
    }

    /// Test-only: starts with a given ephemeral private key and nonce, to replay vectors on a
    /// provider that keeps its own randomness.
    #[doc(hidden)]
    pub fn dangerous_start_with(
        config: Arc<DeviceConfig>,
        now: Time,
        ephemeral_private: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<(Self, Vec<u8>), Error> {
        config.validate()?;
        let suite = config.offers[0];
        let kem = config.provider.kem(suite.kem)?;
        let ephemeral = kem.dangerous_import_ephemeral(ephemeral_private)?;
        Self::with_ephemeral(
            config,
            now,
            suite,
            ephemeral,
            nonce,
            Vec::new(),
            None,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn with_ephemeral(
        config: Arc<DeviceConfig>,
        now: Time,
        share_suite: Suite,
        ephemeral: Box<dyn ActiveKeyExchange>,
        nonce: [u8; NONCE_LEN],
        prefix: Vec<Vec<u8>>,
        cookie: Option<&[u8]>,
        retried: bool,
    ) -> Result<(Self, Vec<u8>), Error> {
        let p = &config.provider;
        let mut hello = encode_hello_body(
            &config.offers,
            now.wire_secs(),
            &nonce,
            ephemeral.share(),
            cookie,
        );
        let pin = &config.pins[0];
        let mac = p
            .hmac
            .mac(&mac1_key(p, pin.alg, &pin.public_key), &[&hello]);
        hello.extend_from_slice(&mac[..MAC1_LEN]);
        let hs = Self {
            config,
            share_suite,
            ephemeral,
            prefix,
            hello: hello.clone(),
            sent_at: now,
            retried,
        };
        Ok((hs, hello))
    }

    /// The hello last sent (resend these exact bytes if its answer is lost).
    pub fn hello(&self) -> &[u8] {
        &self.hello
    }

    /// Handles the gateway's answer to the hello: a retry or M2.
    pub fn handle(self, now: Time, msg: &[u8]) -> Result<DeviceNext, Error> {
        match msg.first() {
            Some(&msg_type::RETRY) => self.handle_retry(now, msg),
            Some(&msg_type::GATEWAY_HELLO) => self
                .handle_gateway_hello(now, msg)
                .map(DeviceNext::Established),
            _ => Err(Malformed::UnknownType.into()),
        }
    }

    fn handle_retry(self, now: Time, msg: &[u8]) -> Result<DeviceNext, Error> {
        if self.retried {
            return Err(PeerMisbehaved::DoubleRetry.into());
        }
        let cookie = Cookie::from_retry_message(msg)?;
        // The retry is unauthenticated: it may only pick among our own offers, never drop any.
        if !self.config.offers.contains(&cookie.suite) {
            return Err(PeerMisbehaved::SuiteNotOffered.into());
        }
        let p = self.config.provider;
        let first_hash = p.hash.hash(&self.hello);
        if cookie.hello_hash.ct_eq(&first_hash).unwrap_u8() != 1 {
            return Err(PeerMisbehaved::RetryMismatch.into());
        }
        // Clock hint (Clock and Address retries: an Address cookie also carries the gateway's
        // time, so one retry fixes the clock too): used for this one hello only, never
        // adopted (it is unauthenticated).
        let hinted = match cookie.reason {
            RetryReason::Clock | RetryReason::Address => {
                let delta = wire_diff(cookie.time, now.wire_secs());
                Time((now.as_millis() as i64 + delta * 1000).max(0) as u64)
            }
            RetryReason::KeyShare => now,
        };
        let ephemeral = if cookie.suite.kem == self.share_suite.kem {
            self.ephemeral
        } else {
            p.kem(cookie.suite.kem)?.start(p.random)?
        };
        let mut nonce = [0u8; NONCE_LEN];
        p.random.fill(&mut nonce)?;
        let prefix = alloc::vec![first_hash.to_vec(), msg.to_vec()];
        let cookie_bytes = cookie.encode();
        let (mut hs, hello) = Self::with_ephemeral(
            self.config,
            hinted,
            cookie.suite,
            ephemeral,
            nonce,
            prefix,
            Some(&cookie_bytes),
            true,
        )?;
        // Round trips are measured on the caller's clock, not the hinted one.
        hs.sent_at = now;
        Ok(DeviceNext::Retry {
            handshake: hs,
            hello,
        })
    }

    fn handle_gateway_hello(self, now: Time, msg: &[u8]) -> Result<Box<DeviceEstablished>, Error> {
        let cfg = &*self.config;
        let p = &cfg.provider;
        let m2 = GatewayHello::decode(msg)?;
        let suite = m2.suite;
        if !cfg.offers.contains(&suite) {
            return Err(PeerMisbehaved::SuiteNotOffered.into());
        }
        if suite.kem != self.share_suite.kem {
            return Err(PeerMisbehaved::WrongKeyShare.into());
        }
        let shared = self.ephemeral.complete(m2.share)?;

        let mut t = Transcript::new(p);
        for item in &self.prefix {
            t.add(item);
        }
        t.add(&self.hello);
        t.add(m2.clear);
        let secrets = HandshakeSecrets::new(p, shared.as_bytes(), &t.hash())?;
        drop(shared);

        // Decrypt the gateway's authentication.
        let gkeys = TrafficKeys::new(p, suite.aead, &secrets.gateway)?;
        let sig_len = suite.sig.signature_len();
        let expect = KEY_ID_LEN + sig_len + FINISHED_LEN + crate::crypto::TAG_LEN;
        if m2.encrypted.len() != expect {
            return Err(Malformed::BadLength.into());
        }
        let mut body = m2.encrypted.to_vec();
        let (ct, tag) = body.split_at_mut(expect - crate::crypto::TAG_LEN);
        let tag: [u8; crate::crypto::TAG_LEN] =
            (&*tag).try_into().map_err(|_| Malformed::BadLength)?;
        gkeys.key.open(&gkeys.nonce(0), m2.clear, ct, &tag)?;
        let (kid, rest) = ct.split_at(KEY_ID_LEN);
        let (sig, fin) = rest.split_at(sig_len);

        let pin = cfg
            .pins
            .iter()
            .find(|k| k.alg == suite.sig && key_id(p, k.alg, &k.public_key)[..] == kid[..])
            .ok_or(AuthFailure::UnknownIdentity)?;
        t.add(&identity_hash(p, pin.alg, &pin.public_key));
        let th = t.hash();
        p.signature(suite.sig)?
            .verify(
                &pin.public_key,
                &signed_content(GATEWAY_SIG_CONTEXT, &th),
                sig,
            )
            .map_err(|_| AuthFailure::BadSignature)?;
        t.add(sig);
        let fk_g = finished_key(p, &secrets.gateway)?;
        let expect_fin = finished(p, &fk_g, &t.hash());
        if expect_fin.ct_eq(fin).unwrap_u8() != 1 {
            return Err(AuthFailure::BadFinished.into());
        }
        t.add(fin);

        // M3.
        let enc_len = 1 + MAX_DEVICE_ID + sig_len + FINISHED_LEN + crate::crypto::TAG_LEN;
        let clear = encode_finish_clear(m2.session_id, enc_len);
        t.add(&clear);
        t.add(&cfg.device_id);
        t.add(&identity_hash(
            p,
            cfg.identity.algorithm(),
            &cfg.identity.public_key(),
        ));
        let my_sig = cfg
            .identity
            .sign(&signed_content(DEVICE_SIG_CONTEXT, &t.hash()), p.random)?;
        if my_sig.len() != sig_len {
            return Err(Error::Crypto(crate::crypto::CryptoError::InvalidLength));
        }
        t.add(&my_sig);
        let fk_d = finished_key(p, &secrets.device)?;
        let my_fin = finished(p, &fk_d, &t.hash());
        t.add(&my_fin);
        let th_full: [u8; HASH_LEN] = t.hash();

        let mut plain = Vec::with_capacity(enc_len);
        plain.push(cfg.device_id.len() as u8);
        plain.extend_from_slice(&cfg.device_id);
        plain.resize(1 + MAX_DEVICE_ID, 0);
        plain.extend_from_slice(&my_sig);
        plain.extend_from_slice(&my_fin);
        let dkeys = TrafficKeys::new(p, suite.aead, &secrets.device)?;
        let tag = dkeys.key.seal(&dkeys.nonce(0), &clear, &mut plain)?;
        let mut finish = clear;
        finish.extend_from_slice(&plain);
        finish.extend_from_slice(&tag);

        let rtt_ms = now.millis_since(self.sent_at);
        let gateway_time = (rtt_ms <= u64::from(cfg.skew_secs) * 500).then(|| {
            let delta = wire_diff(m2.time, now.wire_secs());
            Time((now.as_millis() as i64 + delta * 1000).max(0) as u64)
        });
        // The session runs on the adopted clock when there is one: the caller passes times
        // on that clock from now on.
        let started = gateway_time.unwrap_or(now);
        let (d_app, g_app) = secrets.application(p, &th_full)?;
        let session = Session::new(
            *p,
            suite,
            Role::Device,
            m2.session_id,
            started,
            cfg.session,
            d_app,
            g_app,
        )?;
        let mut gateway_key_id = [0u8; KEY_ID_LEN];
        gateway_key_id.copy_from_slice(kid);
        Ok(Box::new(DeviceEstablished {
            session,
            finish,
            gateway_time,
            gateway_key_id,
        }))
    }
}
