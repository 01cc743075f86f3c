//! Handshake message layouts (see docs/protocol.md §4). Parsing bounds every length against
//! the negotiated algorithm before use and never panics.

use alloc::vec::Vec;

use crate::codec::{Reader, put_vec_u8, put_vec_u16};
use crate::error::{Error, Malformed};
use crate::suite::Suite;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Hello nonce length.
pub const NONCE_LEN: usize = 16;
/// Length of the hello MAC.
pub const MAC1_LEN: usize = 16;
/// Length of a Finished MAC (HMAC-SHA256 truncated, RFC 4868 style).
pub const FINISHED_LEN: usize = 16;
/// Gateway key identifier length.
pub const KEY_ID_LEN: usize = 8;
/// The most suites one hello may offer.
pub const MAX_OFFERS: usize = 16;
/// Longest device key share (x25519mlkem768).
pub const MAX_SHARE: usize = 1216;
/// Retry cookie length: H(M1) 32, reason 1, suite 3, time 4, tag 16.
pub const COOKIE_LEN: usize = 32 + 1 + 3 + 4 + 16;
/// Length of the source key an Address cookie's tag is bound to (docs/protocol.md §4.2).
pub const SOURCE_KEY_LEN: usize = 16;

/// Message type bytes (records use 0x80 and up).
pub mod msg_type {
    /// M1: the device's hello.
    pub const HELLO: u8 = 0x01;
    /// The gateway asks for another hello (unauthenticated).
    pub const RETRY: u8 = 0x02;
    /// M2: the gateway's answer.
    pub const GATEWAY_HELLO: u8 = 0x03;
    /// M3: the device's finish.
    pub const FINISH: u8 = 0x04;
    /// An unauthenticated refusal.
    pub const ALERT: u8 = 0x7f;
}

/// M1, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Offered suites this implementation knows, most preferred first.
    pub offers: Vec<Suite>,
    /// The first offer as sent, if known: the key share is for its KEM (unless a cookie is
    /// echoed, then it is for the cookie's suite).
    pub first_offer: Option<Suite>,
    /// The device's time (wire seconds).
    pub time: u32,
    /// Random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Key share for the first offer's KEM, or the retry suite's.
    pub share: &'a [u8],
    /// Echoed retry cookie, if this hello answers a retry.
    pub cookie: Option<&'a [u8]>,
    /// All bytes covered by the MAC.
    pub mac_input: &'a [u8],
    /// The MAC.
    pub mac1: [u8; MAC1_LEN],
}

impl<'a> Hello<'a> {
    /// Parses M1. Unknown suite codes in the offer list are skipped (a newer device may offer
    /// more); an offer list with no known suite parses but cannot be answered.
    pub fn decode(buf: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        if r.u8()? != msg_type::HELLO {
            return Err(Malformed::UnknownType.into());
        }
        if r.u8()? != VERSION {
            return Err(Malformed::UnsupportedVersion.into());
        }
        let n = usize::from(r.u8()?);
        if n == 0 || n > MAX_OFFERS {
            return Err(Malformed::BadLength.into());
        }
        let mut offers = Vec::with_capacity(n);
        let mut first_offer = None;
        for i in 0..n {
            let s = Suite::from_bytes(r.array()?);
            if i == 0 {
                first_offer = s;
            }
            offers.extend(s);
        }
        let time = r.u32()?;
        let nonce = r.array()?;
        let share = r.vec_u16(MAX_SHARE)?;
        let cookie = r.vec_u8(COOKIE_LEN)?;
        let cookie = match cookie.len() {
            0 => None,
            COOKIE_LEN => Some(cookie),
            _ => return Err(Malformed::BadLength.into()),
        };
        let mac_input = &buf[..r.position()];
        let mac1 = r.array()?;
        r.finish()?;
        Ok(Self {
            offers,
            first_offer,
            time,
            nonce,
            share,
            cookie,
            mac_input,
            mac1,
        })
    }
}

/// Encodes M1 without its MAC (the caller appends it).
pub fn encode_hello_body(
    offers: &[Suite],
    time: u32,
    nonce: &[u8; NONCE_LEN],
    share: &[u8],
    cookie: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 3 * offers.len() + NONCE_LEN + share.len() + 80);
    out.push(msg_type::HELLO);
    out.push(VERSION);
    out.push(offers.len() as u8);
    for s in offers {
        out.extend_from_slice(&s.to_bytes());
    }
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(nonce);
    put_vec_u16(&mut out, share);
    put_vec_u8(&mut out, cookie.unwrap_or(&[]));
    out
}

/// Why the gateway asks for another hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// The hello's time was outside the skew: retry with the gateway's time as a hint.
    Clock = 1,
    /// The gateway needs a key share for another offered suite.
    KeyShare = 2,
    /// The gateway is under load (or the hello's source holds more than its share of the
    /// half-open table): echo the cookie to show that answers reach you (return routability).
    /// The cookie's tag is bound to the hello's source, its suite is the chosen one and its
    /// time is the gateway's, so the retried hello also fixes the clock and the key share.
    Address = 3,
}

/// The fields of a retry cookie (the whole retry message is `0x02 || len || cookie`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    /// SHA-256 of the first hello.
    pub hello_hash: [u8; 32],
    /// Why.
    pub reason: RetryReason,
    /// The suite whose key share the retried hello must carry.
    pub suite: Suite,
    /// The gateway's time when it issued the cookie.
    pub time: u32,
    /// The gateway's MAC over the fields above (the device cannot check it).
    pub tag: [u8; 16],
}

impl Cookie {
    /// The bytes the tag covers.
    pub fn tagged_part(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..32].copy_from_slice(&self.hello_hash);
        b[32] = self.reason as u8;
        b[33..36].copy_from_slice(&self.suite.to_bytes());
        b[36..40].copy_from_slice(&self.time.to_be_bytes());
        b
    }

    /// Encodes the cookie.
    pub fn encode(&self) -> [u8; COOKIE_LEN] {
        let mut b = [0u8; COOKIE_LEN];
        b[..40].copy_from_slice(&self.tagged_part());
        b[40..].copy_from_slice(&self.tag);
        b
    }

    /// Parses a cookie.
    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(b);
        let hello_hash = r.array()?;
        let reason = match r.u8()? {
            1 => RetryReason::Clock,
            2 => RetryReason::KeyShare,
            3 => RetryReason::Address,
            _ => return Err(Malformed::BadValue.into()),
        };
        let suite = Suite::from_bytes(r.array()?).ok_or(Malformed::UnknownAlgorithm)?;
        let time = r.u32()?;
        let tag = r.array()?;
        r.finish()?;
        Ok(Self {
            hello_hash,
            reason,
            suite,
            time,
            tag,
        })
    }

    /// The retry message carrying this cookie.
    pub fn to_retry_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + COOKIE_LEN);
        out.push(msg_type::RETRY);
        put_vec_u8(&mut out, &self.encode());
        out
    }

    /// Parses a retry message.
    pub fn from_retry_message(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        if r.u8()? != msg_type::RETRY {
            return Err(Malformed::UnknownType.into());
        }
        let c = r.vec_u8(COOKIE_LEN)?;
        r.finish()?;
        Self::decode(c)
    }
}

/// M2's cleartext part, parsed; the encrypted part follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayHello<'a> {
    /// Session identifier.
    pub session_id: u32,
    /// The chosen suite.
    pub suite: Suite,
    /// The gateway's time (wire seconds).
    pub time: u32,
    /// The gateway's key share or ciphertext.
    pub share: &'a [u8],
    /// The cleartext part (transcript item and AAD of the encrypted part).
    pub clear: &'a [u8],
    /// The encrypted part with its tag.
    pub encrypted: &'a [u8],
}

impl<'a> GatewayHello<'a> {
    /// Parses M2's cleartext part; the share length is checked against the suite.
    pub fn decode(buf: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        if r.u8()? != msg_type::GATEWAY_HELLO {
            return Err(Malformed::UnknownType.into());
        }
        let session_id = r.u32()?;
        let suite = Suite::from_bytes(r.array()?).ok_or(Malformed::UnknownAlgorithm)?;
        let time = r.u32()?;
        let share = r.vec_u16(MAX_SHARE)?;
        if share.len() != suite.kem.responder_share_len() {
            return Err(Malformed::BadLength.into());
        }
        let clear = &buf[..r.position()];
        let encrypted = r.rest();
        Ok(Self {
            session_id,
            suite,
            time,
            share,
            clear,
            encrypted,
        })
    }
}

/// Encodes M2's cleartext part.
pub fn encode_gateway_hello_clear(
    session_id: u32,
    suite: Suite,
    time: u32,
    share: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + share.len() + 3500);
    out.push(msg_type::GATEWAY_HELLO);
    out.extend_from_slice(&session_id.to_be_bytes());
    out.extend_from_slice(&suite.to_bytes());
    out.extend_from_slice(&time.to_be_bytes());
    put_vec_u16(&mut out, share);
    out
}

/// M3, parsed: cleartext header, the encrypted part, and the records that follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish<'a> {
    /// Session identifier.
    pub session_id: u32,
    /// The cleartext header (transcript item and AAD).
    pub clear: &'a [u8],
    /// The encrypted part with its tag.
    pub encrypted: &'a [u8],
    /// A batch of records sent along (may be empty).
    pub records: &'a [u8],
}

/// The longest encrypted part of M3 (composite signature).
pub const MAX_FINISH_ENCRYPTED: usize = 1 + 32 + 64 + 3309 + FINISHED_LEN + 16;

impl<'a> Finish<'a> {
    /// Parses M3's framing.
    pub fn decode(buf: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        if r.u8()? != msg_type::FINISH {
            return Err(Malformed::UnknownType.into());
        }
        let session_id = r.u32()?;
        let n = usize::from(r.u16()?);
        if n > MAX_FINISH_ENCRYPTED {
            return Err(Malformed::TooLong.into());
        }
        let clear = &buf[..r.position()];
        let encrypted = r.take(n)?;
        let records = r.rest();
        Ok(Self {
            session_id,
            clear,
            encrypted,
            records,
        })
    }

    /// The session id of an M3 without parsing the rest (for routing).
    pub fn peek_session_id(buf: &[u8]) -> Result<u32, Error> {
        let mut r = Reader::new(buf);
        if r.u8()? != msg_type::FINISH {
            return Err(Malformed::UnknownType.into());
        }
        Ok(r.u32()?)
    }
}

/// Encodes M3's cleartext header for an encrypted part of `encrypted_len` bytes.
pub fn encode_finish_clear(session_id: u32, encrypted_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + encrypted_len);
    out.push(msg_type::FINISH);
    out.extend_from_slice(&session_id.to_be_bytes());
    out.extend_from_slice(&(encrypted_len as u16).to_be_bytes());
    out
}

/// An unauthenticated refusal: `0x7f || code`. A device treats it as a hint only.
pub fn encode_alert(refusal: crate::error::Refusal) -> [u8; 2] {
    [msg_type::ALERT, refusal as u8]
}

/// Parses an alert.
pub fn decode_alert(buf: &[u8]) -> Option<crate::error::Refusal> {
    match buf {
        [msg_type::ALERT, code] => crate::error::Refusal::from_code(*code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), first in 0u8..8) {
            let mut d = data;
            if let Some(b) = d.first_mut() {
                *b = first;
            }
            let _ = Hello::decode(&d);
            let _ = Cookie::from_retry_message(&d);
            let _ = Cookie::decode(&d);
            let _ = GatewayHello::decode(&d);
            let _ = Finish::decode(&d);
            let _ = Finish::peek_session_id(&d);
            let _ = decode_alert(&d);
        }

        #[test]
        fn hello_round_trips(n in 1usize..4, time: u32, nonce: [u8; 16], share in proptest::collection::vec(any::<u8>(), 0..100)) {
            let offers: Vec<Suite> = Suite::all().take(n).collect();
            let mut m = encode_hello_body(&offers, time, &nonce, &share, None);
            m.extend_from_slice(&[7; MAC1_LEN]);
            let h = Hello::decode(&m).unwrap();
            prop_assert_eq!(&h.offers, &offers);
            prop_assert_eq!(h.first_offer, Some(offers[0]));
            prop_assert_eq!(h.time, time);
            prop_assert_eq!(h.nonce, nonce);
            prop_assert_eq!(h.share, &share[..]);
            prop_assert_eq!(h.mac1, [7; MAC1_LEN]);
        }
    }
}
