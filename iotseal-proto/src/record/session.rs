//! An established session: sealing and opening records, key updates, the replay window and
//! acknowledgements.
//!
//! Call order for a received record: [`Session::open`] (parses, refuses replays before
//! decrypting, authenticates, ratchets to a new epoch only once a record authenticates under
//! it) → the caller processes it (the gateway stores it durably) → [`Session::accept`] marks
//! the sequence number in the window → [`Session::seal_ack`] answers from the window state.

use alloc::vec::Vec;

use crate::crypto::{CryptoProvider, Secret, TAG_LEN};
use crate::error::{AuthFailure, Error, Limit, Malformed, PeerMisbehaved};
use crate::key_schedule::{TrafficKeys, next_secret};
use crate::record::header::{ContentType, Header, MAX_SEQ};
use crate::record::window::ReplayWindow;
use crate::record::{MAX_PLAINTEXT, ack};
use crate::suite::{AeadId, Suite};
use crate::time::Time;

/// Which end of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The device (initiator): sends data, receives acknowledgements.
    Device,
    /// The gateway (responder): receives data, sends acknowledgements.
    Gateway,
}

/// Record-layer settings. Both ends apply their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Update the sending key after this many records under one key.
    pub rekey_after_records: u64,
    /// Update the sending key after this many plaintext bytes under one key.
    pub rekey_after_bytes: u64,
    /// Update the sending key after this many seconds under one key.
    pub rekey_after_secs: u64,
    /// How long records under the previous receive key are still accepted after a key update.
    pub grace_secs: u64,
    /// Record freshness: refuse records whose time is further than this from now. `None` for
    /// store-and-forward transports (an MQTT broker's queue), where the window alone stops
    /// replays.
    pub max_record_age_secs: Option<u64>,
    /// Absolute lifetime of a session; then both ends refuse it and the device handshakes again.
    pub lifetime_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            rekey_after_records: 1 << 16,
            rekey_after_bytes: 1 << 30,
            rekey_after_secs: 3600,
            grace_secs: 30,
            max_record_age_secs: Some(120),
            lifetime_secs: 24 * 3600,
        }
    }
}

/// How many key updates ahead of the receiver a record may be and still be accepted.
pub const MAX_EPOCH_SKIP: u64 = 8;

#[derive(Debug)]
struct SendState {
    secret: Secret,
    /// `None` while parked: derived again from `secret` at the next seal.
    keys: Option<TrafficKeys>,
    epoch: u64,
    next_seq: u64,
    epoch_records: u64,
    epoch_bytes: u64,
    epoch_started: Time,
}

#[derive(Debug)]
struct PreviousKey {
    keys: TrafficKeys,
    epoch: u64,
    until: Time,
}

#[derive(Debug)]
struct RecvState {
    secret: Secret,
    /// `None` while parked: derived again from `secret` at the next open.
    keys: Option<TrafficKeys>,
    epoch: u64,
    previous: Option<PreviousKey>,
    window: ReplayWindow,
    failures: u64,
}

/// The keys in `slot`, derived from `secret` first if the session was parked.
fn derived<'a>(
    slot: &'a mut Option<TrafficKeys>,
    provider: &CryptoProvider,
    aead: AeadId,
    secret: &Secret,
) -> Result<&'a mut TrafficKeys, Error> {
    Ok(match slot {
        Some(k) => k,
        None => slot.insert(TrafficKeys::new(provider, aead, secret)?),
    })
}

/// A record that authenticated. Its plaintext was decrypted in place.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// Content type.
    pub content_type: ContentType,
    /// Sequence number (pass it to [`Session::accept`] once processed).
    pub seq: u64,
    /// The record's time by the receiver's clock (session start + the sender's offset).
    pub time: Time,
    /// The plaintext, inside the caller's buffer.
    pub plaintext: &'a [u8],
}

/// An established session of either role.
#[derive(Debug)]
pub struct Session {
    provider: CryptoProvider,
    suite: Suite,
    role: Role,
    id: u32,
    started: Time,
    config: SessionConfig,
    send: SendState,
    recv: RecvState,
}

impl Session {
    /// Builds a session from the two application traffic secrets.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        provider: CryptoProvider,
        suite: Suite,
        role: Role,
        id: u32,
        started: Time,
        config: SessionConfig,
        device_secret: Secret,
        gateway_secret: Secret,
    ) -> Result<Self, Error> {
        let (send_secret, recv_secret) = match role {
            Role::Device => (device_secret, gateway_secret),
            Role::Gateway => (gateway_secret, device_secret),
        };
        let send_keys = TrafficKeys::new(&provider, suite.aead, &send_secret)?;
        let recv_keys = TrafficKeys::new(&provider, suite.aead, &recv_secret)?;
        Ok(Self {
            provider,
            suite,
            role,
            id,
            started,
            config,
            send: SendState {
                secret: send_secret,
                keys: Some(send_keys),
                epoch: 0,
                next_seq: 0,
                epoch_records: 0,
                epoch_bytes: 0,
                epoch_started: started,
            },
            recv: RecvState {
                secret: recv_secret,
                keys: Some(recv_keys),
                epoch: 0,
                previous: None,
                window: ReplayWindow::new(),
                failures: 0,
            },
        })
    }

    /// The session identifier.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The negotiated suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// When the session started, by this end's clock.
    pub fn started(&self) -> Time {
        self.started
    }

    /// The next sequence number [`Session::seal`] will use.
    pub fn next_seq(&self) -> u64 {
        self.send.next_seq
    }

    /// Current sending and receiving key epochs.
    pub fn epochs(&self) -> (u64, u64) {
        (self.send.epoch, self.recv.epoch)
    }

    /// The receive window (read-only).
    pub fn window(&self) -> &ReplayWindow {
        &self.recv.window
    }

    /// Whether the session is past its lifetime or out of sequence numbers.
    pub fn is_expired(&self, now: Time) -> bool {
        now.millis_since(self.started) >= self.config.lifetime_secs.saturating_mul(1000)
            || self.send.next_seq > MAX_SEQ
    }

    /// Whether the sending key will be updated before the next record.
    pub fn key_update_due(&self, now: Time) -> bool {
        let s = &self.send;
        let limit = self
            .config
            .rekey_after_records
            .min(self.suite.aead.confidentiality_limit());
        s.epoch_records >= limit
            || s.epoch_bytes >= self.config.rekey_after_bytes
            || now.millis_since(s.epoch_started)
                >= self.config.rekey_after_secs.saturating_mul(1000)
    }

    /// Moves the sending side to the next epoch now: one-way ratchet, the old secret erased.
    pub fn update_send_key(&mut self, now: Time) -> Result<(), Error> {
        let next = next_secret(&self.provider, &self.send.secret)?;
        self.send.keys = Some(TrafficKeys::new(&self.provider, self.suite.aead, &next)?);
        self.send.secret = next; // the old secret drops here and is wiped
        self.send.epoch += 1;
        self.send.epoch_records = 0;
        self.send.epoch_bytes = 0;
        self.send.epoch_started = now;
        Ok(())
    }

    /// Seals one record of `content_type` carrying `plaintext`, appended to `out`.
    /// Updates the key first if due. Returns the sequence number used.
    pub fn seal(
        &mut self,
        now: Time,
        content_type: ContentType,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, Error> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(crate::error::ApiMisuse::PlaintextTooLarge.into());
        }
        if now.millis_since(self.started) >= self.config.lifetime_secs.saturating_mul(1000) {
            return Err(Limit::SessionExpired.into());
        }
        let seq = self.send.next_seq;
        if seq > MAX_SEQ {
            return Err(Limit::SequenceExhausted.into());
        }
        if self.key_update_due(now) {
            self.update_send_key(now)?;
        }
        let header = Header {
            content_type,
            epoch_bits: (self.send.epoch & 0x0f) as u8,
            session_id: self.id,
            seq,
            time_offset: now.millis_since(self.started) / 1000,
        };
        let start = out.len();
        header.encode(out);
        let body = out.len();
        out.extend_from_slice(plaintext);
        let (aad, payload) = out[start..].split_at_mut(body - start);
        let keys = derived(
            &mut self.send.keys,
            &self.provider,
            self.suite.aead,
            &self.send.secret,
        )?;
        let tag = keys.key.seal(&keys.nonce(seq), aad, payload)?;
        out.extend_from_slice(&tag);
        // Never reuse a nonce: the counter moves even if the caller drops the record.
        self.send.next_seq = seq + 1;
        self.send.epoch_records += 1;
        self.send.epoch_bytes += plaintext.len() as u64;
        Ok(seq)
    }

    /// Seals an acknowledgement of everything the window holds (built only from the window
    /// state, so answering a replay with it reveals and stores nothing new).
    pub fn seal_ack(&mut self, now: Time, out: &mut Vec<u8>) -> Result<u64, Error> {
        let mut payload = Vec::new();
        ack::encode(self.recv.window.ranges(ack::MAX_ACK_RANGES), &mut payload);
        self.seal(now, ContentType::Ack, &payload, out)
    }

    /// Authenticates and decrypts `record` in place. Does not mark it as received: call
    /// [`Session::accept`] once it is processed. A record already marked, or below the window,
    /// fails with [`Error::Replay`] before any decryption.
    pub fn open<'a>(&mut self, now: Time, record: &'a mut [u8]) -> Result<Opened<'a>, Error> {
        let (h, hlen) = Header::decode(record)?;
        if h.session_id != self.id {
            return Err(Error::UnknownSession);
        }
        let allowed = matches!(
            (self.role, h.content_type),
            (_, ContentType::Close)
                | (Role::Gateway, ContentType::Data)
                | (Role::Device, ContentType::Ack)
        );
        if !allowed {
            return Err(PeerMisbehaved::UnexpectedContent.into());
        }
        if record.len() < hlen + TAG_LEN {
            return Err(Malformed::Truncated.into());
        }
        if now.millis_since(self.started) >= self.config.lifetime_secs.saturating_mul(1000) {
            return Err(Limit::SessionExpired.into());
        }
        if self.recv.failures >= self.suite.aead.integrity_limit() {
            return Err(Limit::IntegrityLimit.into());
        }
        self.recv.window.check(h.seq)?;
        let time = self.started.plus_millis(h.time_offset * 1000);
        if let Some(max) = self.config.max_record_age_secs {
            if now.millis_since(time) > max * 1000 {
                return Err(Error::Stale);
            }
            if time.millis_since(now) > max * 1000 {
                return Err(Error::Future);
            }
        }
        let (aad, rest) = record.split_at_mut(hlen);
        let (payload, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Malformed::Truncated)?;

        // Which epoch the record claims: the previous one (grace period), the current one,
        // or up to MAX_EPOCH_SKIP ahead (a sender may update more than once before one of
        // its records arrives). 4 bits disambiguate these 1 + 1 + MAX_EPOCH_SKIP values.
        let ahead = (h.epoch_bits.wrapping_sub(self.recv.epoch as u8)) & 0x0f;
        let result = if ahead == 0 {
            let k = derived(
                &mut self.recv.keys,
                &self.provider,
                self.suite.aead,
                &self.recv.secret,
            )?;
            k.key
                .open(&k.nonce(h.seq), aad, payload, tag)
                .map(|()| None)
        } else if u64::from(ahead) <= MAX_EPOCH_SKIP {
            let mut secret = next_secret(&self.provider, &self.recv.secret)?;
            for _ in 1..ahead {
                secret = next_secret(&self.provider, &secret)?;
            }
            let keys = TrafficKeys::new(&self.provider, self.suite.aead, &secret)?;
            keys.key
                .open(&keys.nonce(h.seq), aad, payload, tag)
                .map(|()| Some((secret, keys, u64::from(ahead))))
        } else if let Some(p) = self
            .recv
            .previous
            .as_ref()
            .filter(|p| (p.epoch & 0x0f) as u8 == h.epoch_bits)
        {
            if now >= p.until {
                return Err(PeerMisbehaved::BadEpoch.into());
            }
            p.keys
                .key
                .open(&p.keys.nonce(h.seq), aad, payload, tag)
                .map(|()| None)
        } else {
            return Err(PeerMisbehaved::BadEpoch.into());
        };
        match result {
            Err(_) => {
                self.recv.failures += 1;
                if self.recv.failures >= self.suite.aead.integrity_limit() {
                    return Err(Limit::IntegrityLimit.into());
                }
                Err(AuthFailure::DecryptFailed.into())
            }
            Ok(ratchet) => {
                if let Some((secret, keys, ahead)) = ratchet {
                    // Authentic under a later epoch: only now move (skipped secrets are
                    // already dropped), keep the current keys for the grace period (a
                    // parked session derives them first, from the current secret).
                    let current = derived(
                        &mut self.recv.keys,
                        &self.provider,
                        self.suite.aead,
                        &self.recv.secret,
                    )?;
                    let old = core::mem::replace(current, keys);
                    self.recv.previous = Some(PreviousKey {
                        keys: old,
                        epoch: self.recv.epoch,
                        until: now.plus_millis(self.config.grace_secs * 1000),
                    });
                    self.recv.secret = secret;
                    self.recv.epoch += ahead;
                    self.recv.failures = 0;
                }
                Ok(Opened {
                    content_type: h.content_type,
                    seq: h.seq,
                    time,
                    plaintext: payload,
                })
            }
        }
    }

    /// Marks `seq` as received, after its record was processed (stored).
    pub fn accept(&mut self, seq: u64) -> Result<(), Error> {
        self.recv.window.mark(seq)
    }

    /// Whether `seq` was already accepted (a retransmission to answer with an ack).
    pub fn was_accepted(&self, seq: u64) -> bool {
        self.recv.window.contains(seq)
    }

    /// Drops the expanded key objects, keeping only the traffic secrets (32 bytes a
    /// direction), to hold an idle session in less memory. The next seal or open derives the
    /// keys again (two HKDF expansions and a key setup a direction). A previous receive key
    /// whose grace period is over at `now` is dropped too; one still in its grace period is
    /// kept (its secret is already erased). Nothing observable changes: records, nonces and
    /// acknowledgements are the same bytes as without parking.
    pub fn park(&mut self, now: Time) {
        self.send.keys = None;
        self.recv.keys = None;
        if self.recv.previous.as_ref().is_some_and(|p| now >= p.until) {
            self.recv.previous = None;
        }
    }

    /// Whether [`Session::park`] dropped the key objects and nothing has used them since.
    pub fn is_parked(&self) -> bool {
        self.send.keys.is_none() && self.recv.keys.is_none()
    }

    /// Parses an acknowledgement payload and checks it only names records we sent.
    pub fn parse_ack(&self, plaintext: &[u8]) -> Result<Vec<(u64, u64)>, Error> {
        let ranges = ack::decode(plaintext)?;
        if ranges
            .first()
            .is_some_and(|&(_, last)| last >= self.send.next_seq)
        {
            return Err(PeerMisbehaved::AckOfUnsent.into());
        }
        Ok(ranges)
    }
}
