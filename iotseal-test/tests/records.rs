//! The record layer over established sessions: tampering, replays (same session, other
//! session, after a key update), reordering inside and outside the window, key updates with
//! a grace period, freshness, acknowledgements.

use iotseal_proto::crypto::CryptoProvider;
use iotseal_proto::error::{AuthFailure, Error, PeerMisbehaved};
use iotseal_proto::record::{ContentType, WINDOW_SIZE};
use iotseal_proto::{AeadId, KemId, SigAlg, Suite, Time};
use iotseal_test::pair::{Established, Pair};

fn rc() -> CryptoProvider {
    iotseal_crypto_rustcrypto::default_provider()
}
fn aws() -> CryptoProvider {
    iotseal_crypto_awslc::default_provider()
}

fn established(aead: AeadId, seed: u64, f: impl FnOnce(&mut Pair)) -> (Pair, Established) {
    let s = Suite {
        kem: KemId::X25519,
        sig: SigAlg::Ed25519,
        aead,
    };
    let mut pair = Pair::new(rc(), aws(), s, seed);
    f(&mut pair);
    let e = pair.handshake().unwrap();
    (pair, e)
}

fn seal(e: &mut Established, now: Time, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    e.device
        .seal(now, ContentType::Data, msg, &mut out)
        .unwrap();
    out
}

fn deliver(e: &mut Established, now: Time, rec: &[u8]) -> Result<Vec<u8>, Error> {
    let mut r = rec.to_vec();
    let o = e.gateway.open(now, &mut r)?;
    let (seq, pt) = (o.seq, o.plaintext.to_vec());
    e.gateway.accept(seq)?;
    Ok(pt)
}

#[test]
fn flipping_any_record_byte_is_refused() {
    for aead in AeadId::ALL {
        let (pair, mut e) = established(*aead, 1, |_| {});
        let rec = seal(&mut e, pair.now, b"temperature=21.5");
        for i in 0..rec.len() {
            for bit in [0x01, 0x80] {
                let mut bad = rec.clone();
                bad[i] ^= bit;
                assert!(
                    deliver(&mut e, pair.now, &bad).is_err(),
                    "{aead} byte {i} bit {bit:#x}"
                );
            }
        }
        // Truncated and extended records.
        for n in 0..rec.len() {
            assert!(
                deliver(&mut e, pair.now, &rec[..n]).is_err(),
                "{aead} truncated to {n}"
            );
        }
        let mut ext = rec.clone();
        ext.push(0);
        assert!(deliver(&mut e, pair.now, &ext).is_err());
        assert_eq!(
            deliver(&mut e, pair.now, &rec).unwrap(),
            b"temperature=21.5"
        );
    }
}

#[test]
fn replay_same_session_refused_before_decryption() {
    let (pair, mut e) = established(AeadId::Aes256Gcm, 2, |_| {});
    let rec = seal(&mut e, pair.now, b"a");
    deliver(&mut e, pair.now, &rec).unwrap();
    assert_eq!(deliver(&mut e, pair.now, &rec).unwrap_err(), Error::Replay);
    // Even a replay with a corrupted tag is refused as a replay: no decryption is tried.
    let mut bad = rec.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(deliver(&mut e, pair.now, &bad).unwrap_err(), Error::Replay);
    assert!(e.gateway.was_accepted(0));
}

#[test]
fn replay_into_another_session_refused() {
    let (pair, mut a) = established(AeadId::Aes256Gcm, 3, |_| {});
    let (_, mut b) = established(AeadId::Aes256Gcm, 3, |_| {});
    let rec = seal(&mut a, pair.now, b"a");
    assert!(deliver(&mut b, pair.now, &rec).is_err());
    // Same session id forced: the keys differ.
    let mut forged = rec.clone();
    forged[1..5].copy_from_slice(&b.gateway.id().to_be_bytes());
    assert_eq!(
        deliver(&mut b, pair.now, &forged).unwrap_err(),
        AuthFailure::DecryptFailed.into()
    );
}

#[test]
fn reorder_inside_window_accepted_once_outside_refused() {
    let (pair, mut e) = established(AeadId::ChaCha20Poly1305, 4, |_| {});
    let now = pair.now;
    let recs: Vec<Vec<u8>> = (0..WINDOW_SIZE + 10)
        .map(|i| seal(&mut e, now, &i.to_be_bytes()))
        .collect();
    // Deliver newest first for 10, then the rest in order, skipping #5 and #12.
    let n = recs.len();
    deliver(&mut e, now, &recs[n - 1]).unwrap();
    for (i, r) in recs.iter().enumerate().take(n - 1) {
        if i == 5 || i == 12 {
            continue;
        }
        let got = deliver(&mut e, now, r);
        if (n as u64 - 1) - i as u64 >= WINDOW_SIZE {
            assert_eq!(
                got.unwrap_err(),
                Error::Replay,
                "#{i} is outside the window"
            );
        } else {
            assert_eq!(got.unwrap(), (i as u64).to_be_bytes(), "#{i}");
        }
    }
    // #12 is inside the window: accepted once.
    deliver(&mut e, now, &recs[12]).unwrap();
    assert_eq!(deliver(&mut e, now, &recs[12]).unwrap_err(), Error::Replay);
    // #5 fell out of the window.
    assert_eq!(deliver(&mut e, now, &recs[5]).unwrap_err(), Error::Replay);
}

#[test]
fn key_updates_ratchet_with_grace_and_replays_stay_refused() {
    for aead in AeadId::ALL {
        let (pair, mut e) = established(*aead, 5, |p| {
            p.edit_device(|d| d.session.rekey_after_records = 10);
        });
        let now = pair.now;
        let recs: Vec<Vec<u8>> = (0..35u32)
            .map(|i| seal(&mut e, now, &i.to_be_bytes()))
            .collect();
        assert_eq!(e.device.epochs().0, 3);
        // Deliver in order except #9 (last of epoch 0), which arrives late.
        for (i, r) in recs.iter().enumerate() {
            if i != 9 && i < 25 {
                deliver(&mut e, now, r).unwrap();
            }
        }
        assert_eq!(e.gateway.epochs().1, 2);
        // #9 is two epochs back: refused (only the previous epoch has a grace period).
        assert_eq!(
            deliver(&mut e, now, &recs[9]).unwrap_err(),
            PeerMisbehaved::BadEpoch.into()
        );
        // Replays of already delivered records after the key update: refused.
        for i in [0, 10, 19, 24] {
            assert_eq!(
                deliver(&mut e, now, &recs[i]).unwrap_err(),
                Error::Replay,
                "{aead} #{i}"
            );
        }
    }
}

#[test]
fn grace_period_for_previous_epoch() {
    let (pair, mut e) = established(AeadId::Aes128Gcm, 7, |p| {
        p.edit_device(|d| d.session.rekey_after_records = 4);
    });
    let now = pair.now;
    let recs: Vec<Vec<u8>> = (0..8u32)
        .map(|i| seal(&mut e, now, &i.to_be_bytes()))
        .collect();
    // Epoch 0 = #0..#3, epoch 1 = #4..#7. Deliver epoch 1 first; then #2, #3 late.
    for r in &recs[4..] {
        deliver(&mut e, now, r).unwrap();
    }
    deliver(&mut e, Time(now.0 + 10_000), &recs[2]).expect("inside the grace period");
    let grace_ms = 30_000;
    assert_eq!(
        deliver(&mut e, Time(now.0 + grace_ms + 1), &recs[3]).unwrap_err(),
        PeerMisbehaved::BadEpoch.into(),
        "after the grace period the old key is gone"
    );
}

#[test]
fn forged_next_epoch_does_not_ratchet() {
    let (pair, mut e) = established(AeadId::Aes256Gcm, 8, |_| {});
    let rec = seal(&mut e, pair.now, b"x");
    let mut forged = rec.clone();
    forged[0] = (forged[0] & 0xf0) | 0x01; // claims epoch 1
    assert_eq!(
        deliver(&mut e, pair.now, &forged).unwrap_err(),
        AuthFailure::DecryptFailed.into()
    );
    assert_eq!(e.gateway.epochs().1, 0, "no ratchet on a forgery");
    deliver(&mut e, pair.now, &rec).unwrap();
}

#[test]
fn stale_and_future_records() {
    let (pair, mut e) = established(AeadId::Aes256Gcm, 9, |_| {});
    let now = pair.now;
    let rec = seal(&mut e, now, b"x");
    assert_eq!(
        deliver(&mut e, Time(now.0 + 121_000), &rec).unwrap_err(),
        Error::Stale
    );
    let future = seal(&mut e, Time(now.0 + 500_000), b"y");
    assert_eq!(deliver(&mut e, now, &future).unwrap_err(), Error::Future);
    // A store-and-forward session (no freshness) accepts old records; the window still
    // stops replays.
    let (pair, mut e) = established(AeadId::Aes256Gcm, 10, |p| {
        p.reconfigure(|c| c.session.max_record_age_secs = None);
    });
    let rec = seal(&mut e, pair.now, b"x");
    deliver(&mut e, Time(pair.now.0 + 3_600_000), &rec).unwrap();
    assert_eq!(
        deliver(&mut e, Time(pair.now.0 + 3_600_000), &rec).unwrap_err(),
        Error::Replay
    );
}

#[test]
fn acknowledgements_follow_the_window() {
    let (pair, mut e) = established(AeadId::Aes256Gcm, 11, |_| {});
    let now = pair.now;
    let recs: Vec<Vec<u8>> = (0..6u8).map(|i| seal(&mut e, now, &[i])).collect();
    for i in [0, 1, 2, 4] {
        deliver(&mut e, now, &recs[i]).unwrap();
    }
    // #5 opened but not accepted (e.g. storage failed): not acknowledged.
    let mut r5 = recs[5].clone();
    e.gateway.open(now, &mut r5).unwrap();
    let mut ack = Vec::new();
    e.gateway.seal_ack(now, &mut ack).unwrap();
    let o = e.device.open(now, &mut ack).unwrap();
    let ranges = e.device.parse_ack(o.plaintext).unwrap();
    assert_eq!(ranges, [(4, 4), (0, 2)]);
    // An ack naming records never sent is refused.
    let mut a = Vec::new();
    iotseal_proto::record::ack::encode([(0, 99)].into_iter(), &mut a);
    assert_eq!(
        e.device.parse_ack(&a).unwrap_err(),
        PeerMisbehaved::AckOfUnsent.into()
    );
    // Direction rules: a device cannot be sent data, a gateway cannot be sent acks.
    let mut fake = Vec::new();
    e.device
        .seal(now, ContentType::Ack, &[0], &mut fake)
        .unwrap();
    assert_eq!(
        deliver(&mut e, now, &fake).unwrap_err(),
        PeerMisbehaved::UnexpectedContent.into()
    );
}

#[test]
fn session_lifetime_and_sequence_limit() {
    let (pair, mut e) = established(AeadId::Aes256Gcm, 12, |p| {
        p.edit_device(|d| d.session.lifetime_secs = 60);
    });
    let mut out = Vec::new();
    assert_eq!(
        e.device
            .seal(Time(pair.now.0 + 61_000), ContentType::Data, b"x", &mut out)
            .unwrap_err(),
        iotseal_proto::error::Limit::SessionExpired.into()
    );
    assert!(e.device.is_expired(Time(pair.now.0 + 61_000)));
}

/// The sender updates its key several times before any of its records arrive (one record an
/// hour, the in-between ones lost): the receiver catches up, within MAX_EPOCH_SKIP.
#[test]
fn receiver_catches_up_over_several_key_updates() {
    let (pair, mut e) = established(AeadId::Aes256Gcm, 13, |p| {
        p.edit_device(|d| d.session.rekey_after_records = 1);
    });
    let now = pair.now;
    let recs: Vec<Vec<u8>> = (0..12u8).map(|i| seal(&mut e, now, &[i])).collect();
    deliver(&mut e, now, &recs[0]).unwrap();
    deliver(&mut e, now, &recs[5]).expect("5 epochs ahead");
    assert_eq!(e.gateway.epochs().1, 5);
    // Too far ahead: 10 epochs beyond the current one.
    let far: Vec<Vec<u8>> = (0..12u8).map(|i| seal(&mut e, now, &[i])).collect();
    assert_eq!(
        deliver(&mut e, now, &far[3]).unwrap_err(),
        PeerMisbehaved::BadEpoch.into(),
        "beyond MAX_EPOCH_SKIP"
    );
    assert_eq!(iotseal_proto::record::MAX_EPOCH_SKIP, 8);
}

/// After a jump over several epochs, late records of the epoch the receiver left are still
/// accepted during the grace period (skipped epochs' records are not).
#[test]
fn grace_covers_the_epoch_left_after_a_jump() {
    let (pair, mut e) = established(AeadId::Aes256Gcm, 14, |p| {
        p.edit_device(|d| d.session.rekey_after_records = 2);
    });
    let now = pair.now;
    let recs: Vec<Vec<u8>> = (0..8u8).map(|i| seal(&mut e, now, &[i])).collect();
    deliver(&mut e, now, &recs[0]).unwrap();
    deliver(&mut e, now, &recs[6]).expect("jump from epoch 0 to 3");
    assert_eq!(e.gateway.epochs().1, 3);
    deliver(&mut e, now, &recs[1]).expect("epoch 0 record inside the grace period");
    assert_eq!(
        deliver(&mut e, now, &recs[3]).unwrap_err(),
        PeerMisbehaved::BadEpoch.into(),
        "skipped epoch 1"
    );
}

/// Parking (dropping the key objects of an idle session) is invisible to the peer: with the
/// gateway parked before every operation and the device before every other one, across key
/// updates in both directions, every record and acknowledgement opens at the other end (so
/// both derived the same keys and nonces) and the sequence numbers keep counting.
#[test]
fn parking_is_invisible_to_the_peer() {
    for aead in AeadId::ALL {
        let (pair, mut e) = established(*aead, 21, |p| {
            p.edit_device(|d| d.session.rekey_after_records = 3);
            p.reconfigure(|g| g.session.rekey_after_records = 2);
        });
        let now = pair.now;
        for i in 0..20u8 {
            if i % 2 == 0 {
                e.device.park(now);
                assert!(e.device.is_parked());
            }
            e.gateway.park(now);
            assert!(e.gateway.is_parked());
            assert_eq!(e.device.next_seq(), u64::from(i));
            let rec = seal(&mut e, now, &[i; 9]);
            assert!(!e.device.is_parked());
            assert_eq!(deliver(&mut e, now, &rec).unwrap(), [i; 9], "{aead} {i}");
            e.gateway.park(now);
            let mut ack = Vec::new();
            e.gateway.seal_ack(now, &mut ack).unwrap();
            if i % 2 == 0 {
                e.device.park(now);
            }
            let o = e.device.open(now, &mut ack).expect("ack opens");
            let pt = o.plaintext.to_vec();
            let ranges = e.device.parse_ack(&pt).unwrap();
            assert_eq!(ranges.first(), Some(&(0, u64::from(i))), "{aead} ack {i}");
        }
        let (send, recv) = e.gateway.epochs();
        assert!(send >= 9 && recv >= 6, "{aead}: key updates happened");
    }
}

/// A session parked in the middle of a key update keeps what the grace period needs: the
/// receiver moves to a later epoch while parked and still accepts late records of the epoch
/// it left; once the grace period is over, parking drops that key and they are refused.
#[test]
fn a_parked_session_keeps_its_grace_key_until_the_grace_ends() {
    let (pair, mut e) = established(AeadId::Aes128Gcm, 22, |p| {
        p.edit_device(|d| d.session.rekey_after_records = 2);
        p.reconfigure(|g| {
            g.session.grace_secs = 30;
            g.session.max_record_age_secs = None;
        });
    });
    let now = pair.now;
    let recs: Vec<Vec<u8>> = (0..6u8).map(|i| seal(&mut e, now, &[i])).collect();
    deliver(&mut e, now, &recs[0]).unwrap();
    e.gateway.park(now);
    deliver(&mut e, now, &recs[4]).expect("epoch 2 while parked");
    e.gateway.park(now);
    deliver(&mut e, now, &recs[1]).expect("epoch 0 inside the grace period, parked");
    let later = now.plus_millis(31_000);
    e.gateway.park(later);
    assert_eq!(
        deliver(&mut e, later, &recs[5]).unwrap(),
        [5],
        "current epoch after parking"
    );
    // recs[0] and [1] are taken; an epoch-0 record the grace period no longer covers:
    let (_, mut twin) = established(AeadId::Aes128Gcm, 22, |p| {
        p.edit_device(|d| d.session.rekey_after_records = 2);
        p.reconfigure(|g| g.session.max_record_age_secs = None);
    });
    let r: Vec<Vec<u8>> = (0..6u8).map(|i| seal(&mut twin, now, &[i])).collect();
    deliver(&mut twin, now, &r[4]).unwrap();
    twin.gateway.park(later);
    assert_eq!(
        deliver(&mut twin, later, &r[1]).unwrap_err(),
        PeerMisbehaved::BadEpoch.into()
    );
}
