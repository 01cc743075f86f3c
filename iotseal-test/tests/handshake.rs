//! Handshakes over the in-memory pair: every suite on every provider pairing, sizes, and
//! refusals of tampered, downgraded, replayed, stale and misattributed messages.

use iotseal_proto::crypto::CryptoProvider;
use iotseal_proto::error::{AuthFailure, Error, Malformed, PeerMisbehaved};
use iotseal_proto::handshake::messages::{MAC1_LEN, RetryReason};
use iotseal_proto::handshake::{
    DeviceHandshake, DeviceNext, HelloReply, PinnedKey, RegisteredDevice, SuitePolicy, mac1_key,
};
use iotseal_proto::record::{ContentType, batch};
use iotseal_proto::{AeadId, KemId, SigAlg, Suite, Time};
use iotseal_test::pair::{Pair, T0, seeded};

fn rc() -> CryptoProvider {
    iotseal_crypto_rustcrypto::default_provider()
}
fn aws() -> CryptoProvider {
    iotseal_crypto_awslc::default_provider()
}

fn suite(kem: KemId, sig: SigAlg, aead: AeadId) -> Suite {
    Suite { kem, sig, aead }
}

const SMALL: Suite = Suite {
    kem: KemId::X25519,
    sig: SigAlg::Ed25519,
    aead: AeadId::Aes256Gcm,
};

fn reply_bytes(r: &HelloReply) -> &[u8] {
    match r {
        HelloReply::GatewayHello { bytes, .. } | HelloReply::Retry { bytes, .. } => bytes,
    }
}

/// Every suite, device and gateway on every provider combination, including data records
/// and acknowledgements both ways.
#[test]
fn every_suite_interoperates_across_providers() {
    let providers = [("rustcrypto", rc()), ("aws-lc", aws())];
    let mut n = 0;
    for s in Suite::all() {
        for (dn, dp) in &providers {
            for (gn, gp) in &providers {
                let mut pair = Pair::new(*dp, *gp, s, n);
                let mut e = pair
                    .handshake()
                    .unwrap_or_else(|err| panic!("{s} {dn}->{gn}: {err}"));
                assert_eq!(e.device_id, pair.device.device_id);
                assert_eq!(e.device.suite(), s);
                let now = pair.now;
                for i in 0..3u8 {
                    let mut rec = Vec::new();
                    let seq = e
                        .device
                        .seal(now, ContentType::Data, &[i; 40], &mut rec)
                        .unwrap();
                    let o = e
                        .gateway
                        .open(now, &mut rec)
                        .unwrap_or_else(|err| panic!("{s} {dn}->{gn}: {err}"));
                    assert_eq!(o.plaintext, &[i; 40]);
                    assert_eq!(o.seq, seq);
                    e.gateway.accept(seq).unwrap();
                }
                let mut ack = Vec::new();
                e.gateway.seal_ack(now, &mut ack).unwrap();
                let o = e.device.open(now, &mut ack).unwrap();
                assert_eq!(o.content_type, ContentType::Ack);
                let ranges = e.device.parse_ack(o.plaintext).unwrap();
                assert_eq!(ranges, [(0, 2)], "{s} {dn}->{gn}");
                n += 1;
            }
        }
    }
    assert_eq!(n, 64 * 4);
}

fn sizes(s: Suite) -> (usize, usize, usize, usize) {
    let mut pair = Pair::new(rc(), rc(), s, 7);
    let mut e = pair.handshake().unwrap();
    let f = &e.flights;
    let mut ack = Vec::new();
    e.gateway.seal_ack(pair.now, &mut ack).unwrap();
    (f[0].len(), f[1].len(), f[2].len(), ack.len())
}

/// The byte budgets: x25519 + ed25519 at most 400 bytes, the default hybrid suite at
/// most 2,700, both directions together, the acknowledgement of M3 included.
#[test]
fn handshake_sizes_within_budget() {
    let (m1, m2, m3, ack) = sizes(SMALL);
    println!(
        "x25519/ed25519: M1 {m1} + M2 {m2} + M3 {m3} + ack {ack} = {}",
        m1 + m2 + m3 + ack
    );
    assert!(m1 + m2 + m3 + ack <= 400);
    let (m1, m2, m3, ack) = sizes(Suite::DEFAULT);
    println!(
        "default: M1 {m1} + M2 {m2} + M3 {m3} + ack {ack} = {}",
        m1 + m2 + m3 + ack
    );
    assert!(m1 + m2 + m3 + ack <= 2700);
}

/// Per-record overhead (header + tag) of every AEAD suite stays within 32 bytes, up to the
/// largest sequence number and time offset.
#[test]
fn record_overhead_within_32_bytes() {
    for aead in AeadId::ALL {
        let mut pair = Pair::new(rc(), rc(), suite(KemId::X25519, SigAlg::Ed25519, *aead), 3);
        let mut e = pair.handshake().unwrap();
        let mut rec = Vec::new();
        e.device
            .seal(pair.now, ContentType::Data, b"hello", &mut rec)
            .unwrap();
        assert!(rec.len() - 5 <= 32, "{aead}: {}", rec.len() - 5);
        // Far into the session: 4-byte sequence and time fields.
        let later = Time(pair.now.0 + 20_000_000);
        let mut rec = Vec::new();
        for _ in 0..20_000 {
            rec.clear();
            e.device
                .seal(later, ContentType::Data, b"hello", &mut rec)
                .unwrap();
        }
        assert!(rec.len() - 5 <= 32, "{aead}: {}", rec.len() - 5);
    }
}

/// Flipping any single byte of M1, M2 or M3 makes the handshake fail, on each provider as
/// receiver; a refused M3 leaves the half-open handshake usable for the genuine M3.
#[test]
fn flipping_any_handshake_byte_is_refused() {
    for (dp, gp) in [(rc(), aws()), (aws(), rc())] {
        for s in [SMALL, Suite::DEFAULT] {
            let mut pair = Pair::new(dp, gp, s, 11);
            let now = pair.now;
            let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
            for i in 0..m1.len() {
                let mut bad = m1.clone();
                bad[i] ^= 0x01;
                assert!(
                    pair.server.handle_hello(now, &bad, &|_| false).is_err(),
                    "M1 byte {i}"
                );
            }
            let HelloReply::GatewayHello { bytes: m2, .. } =
                pair.server.handle_hello(now, &m1, &|_| false).unwrap()
            else {
                panic!("expected M2")
            };
            // Device-side: the same handshake state can't be reused after a failure, so
            // rebuild it deterministically for each position by re-running M1 -> M2 on a
            // fresh pair is costly; instead check with a fresh device handshake per byte on
            // the small suite only, and a sample of positions for the hybrid.
            let positions: Vec<usize> = if s == SMALL {
                (0..m2.len()).collect()
            } else {
                (0..m2.len()).step_by(7).collect()
            };
            for i in positions {
                let mut p2 = Pair::new(dp, gp, s, 11);
                let (hs2, m1b) = DeviceHandshake::start(p2.device.clone(), now).unwrap();
                let r = p2.server.handle_hello(now, &m1b, &|_| false).unwrap();
                let mut bad = reply_bytes(&r).to_vec();
                bad[i] ^= 0x01;
                assert!(hs2.handle(now, &bad).is_err(), "M2 byte {i} of {s}");
            }
            let DeviceNext::Established(e) = hs.handle(now, &m2).unwrap() else {
                panic!()
            };
            for i in 0..e.finish.len() {
                let mut bad = e.finish.clone();
                bad[i] ^= 0x01;
                assert!(
                    pair.server
                        .handle_finish(now, &bad, &pair.registry)
                        .is_err(),
                    "M3 byte {i}"
                );
            }
            pair.server
                .handle_finish(now, &e.finish, &pair.registry)
                .expect("genuine M3 after forgeries");
        }
    }
}

/// An on-path attacker who edits the offer list (and recomputes the hello MAC, which only
/// needs the public pin) gets the device to see a signature over a different transcript.
#[test]
fn downgrade_by_editing_offers_is_detected() {
    let strong = suite(KemId::X25519MlKem768, SigAlg::Ed25519, AeadId::Aes256Gcm);
    let weak = suite(KemId::X25519MlKem768, SigAlg::Ed25519, AeadId::Aes128Gcm);
    for (dp, gp) in [(rc(), aws()), (aws(), rc())] {
        let mut pair = Pair::with_offers(dp, gp, vec![strong, weak], 5);
        let now = pair.now;
        let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
        // Offers start at byte 3: count, then 3 bytes each. Drop the strong one.
        let mut forged = m1[..3].to_vec();
        forged[2] = 1;
        forged.extend_from_slice(&m1[3 + 3..m1.len() - MAC1_LEN]);
        let pin = &pair.device.pins[0];
        let mac = gp
            .hmac
            .mac(&mac1_key(&gp, pin.alg, &pin.public_key), &[&forged]);
        forged.extend_from_slice(&mac[..MAC1_LEN]);
        let r = pair.server.handle_hello(now, &forged, &|_| false).unwrap();
        let HelloReply::GatewayHello {
            suite: chosen,
            bytes,
            ..
        } = r
        else {
            panic!()
        };
        assert_eq!(chosen, weak, "the gateway was fooled into the weaker suite");
        let err = hs.handle(now, &bytes).unwrap_err();
        assert!(
            matches!(err, Error::AuthFailed(_)),
            "device must detect the downgrade: {err}"
        );
    }
}

/// A gateway policy can demand post-quantum key exchange; a device offering only classical
/// suites is refused, one offering both gets the hybrid (after a key-share retry).
#[test]
fn policy_requires_post_quantum() {
    let classic = suite(KemId::X25519, SigAlg::Ed25519, AeadId::Aes256Gcm);
    let pq_only = |c: &mut iotseal_proto::handshake::GatewayConfig| {
        c.policy = SuitePolicy {
            require_pq_kem: true,
            ..SuitePolicy::default()
        };
    };
    let mut pair = Pair::new(rc(), aws(), classic, 8);
    pair.reconfigure(pq_only);
    assert_eq!(pair.handshake().unwrap_err(), Error::PolicyRefused);

    let mut pair = Pair::with_offers(rc(), aws(), vec![classic, Suite::DEFAULT], 8);
    pair.reconfigure(pq_only);
    let e = pair.handshake().unwrap();
    assert_eq!(e.device.suite(), Suite::DEFAULT);
    assert_eq!(
        e.flights.len(),
        5,
        "M1, retry for the hybrid share, M1', M2, M3"
    );
    assert_eq!(
        iotseal_proto::handshake::messages::msg_type::RETRY,
        e.flights[1][0]
    );
}

/// A retry can only choose among the device's offers; a forged retry naming a suite the
/// device did not offer is refused, and a second retry too.
#[test]
fn forged_retry_cannot_add_suites() {
    let mut pair = Pair::new(rc(), rc(), Suite::DEFAULT, 9);
    let now = pair.now;
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let h = rc().hash.hash(&m1);
    let c = iotseal_proto::handshake::messages::Cookie {
        hello_hash: h,
        reason: RetryReason::KeyShare,
        suite: SMALL,
        time: now.wire_secs(),
        tag: [0; 16],
    };
    assert_eq!(
        hs.handle(now, &c.to_retry_message()).unwrap_err(),
        PeerMisbehaved::SuiteNotOffered.into()
    );
    // A retry that names our own suite, then a second retry.
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let c = iotseal_proto::handshake::messages::Cookie {
        hello_hash: rc().hash.hash(&m1),
        suite: Suite::DEFAULT,
        ..c
    };
    let DeviceNext::Retry { handshake, hello } = hs.handle(now, &c.to_retry_message()).unwrap()
    else {
        panic!()
    };
    let c2 = iotseal_proto::handshake::messages::Cookie {
        hello_hash: rc().hash.hash(&hello),
        ..c
    };
    assert_eq!(
        handshake.handle(now, &c2.to_retry_message()).unwrap_err(),
        PeerMisbehaved::DoubleRetry.into()
    );
    // The forged cookie does not verify at the gateway.
    assert_eq!(
        pair.server
            .handle_hello(now, &hello, &|_| false)
            .unwrap_err(),
        AuthFailure::BadCookie.into()
    );
}

/// Unknown device, wrong device key, revoked device, key of the wrong algorithm.
#[test]
fn device_identity_checks() {
    for (dp, gp) in [(rc(), aws()), (aws(), rc())] {
        let mut pair = Pair::new(dp, gp, SMALL, 21);
        let id = pair.device.device_id.clone();
        let good = pair.registry.get(&id).unwrap();

        pair.registry.0.lock().unwrap().clear();
        assert_eq!(
            pair.handshake().unwrap_err(),
            AuthFailure::UnknownIdentity.into()
        );

        let other = dp
            .signature(SigAlg::Ed25519)
            .unwrap()
            .generate(dp.random)
            .unwrap();
        pair.registry.insert(
            &id,
            RegisteredDevice {
                public_key: other.public_key(),
                ..good.clone()
            },
        );
        assert_eq!(
            pair.handshake().unwrap_err(),
            AuthFailure::BadSignature.into()
        );

        pair.registry.insert(
            &id,
            RegisteredDevice {
                revoked: true,
                ..good.clone()
            },
        );
        assert_eq!(pair.handshake().unwrap_err(), AuthFailure::Revoked.into());
        assert_eq!(
            Error::from(AuthFailure::Revoked).refusal(),
            Error::from(AuthFailure::BadSignature).refusal()
        );

        pair.registry.insert(
            &id,
            RegisteredDevice {
                alg: SigAlg::EcdsaP256,
                ..good.clone()
            },
        );
        let err = pair.handshake().unwrap_err();
        assert_eq!(err, AuthFailure::DevicePolicy.into());
        assert_eq!(
            err.refusal(),
            Error::from(AuthFailure::UnknownIdentity).refusal(),
            "no registry oracle"
        );

        pair.registry.insert(&id, good);
        pair.handshake().expect("restored");
    }
}

/// A gateway that is not the pinned one: the hello MAC already fails; an impostor that
/// re-MACs the hello for its own key (as a man in the middle can) is refused by the device,
/// because its key id is not pinned.
#[test]
fn impostor_gateway_is_refused() {
    for (dp, gp) in [(rc(), aws()), (aws(), rc())] {
        let pair = Pair::new(dp, gp, SMALL, 31);
        let mut impostor = Pair::new(dp, gp, SMALL, 32);
        let now = pair.now;
        let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
        assert_eq!(
            impostor
                .server
                .handle_hello(now, &m1, &|_| false)
                .unwrap_err(),
            AuthFailure::BadHelloMac.into()
        );
        let mut forged = m1[..m1.len() - MAC1_LEN].to_vec();
        let ipin = &impostor.device.pins[0];
        let mac = gp
            .hmac
            .mac(&mac1_key(&gp, ipin.alg, &ipin.public_key), &[&forged]);
        forged.extend_from_slice(&mac[..MAC1_LEN]);
        let r = impostor
            .server
            .handle_hello(now, &forged, &|_| false)
            .unwrap();
        let err = hs.handle(now, reply_bytes(&r)).unwrap_err();
        assert!(matches!(err, Error::AuthFailed(_)), "{err}");
    }
}

/// A device pinning two keys (rotation overlap) accepts either.
#[test]
fn rotation_overlap_accepts_either_pin() {
    let mut pair = Pair::new(rc(), aws(), SMALL, 41);
    let old = pair.device.pins[0].clone();
    let fresh = rc()
        .signature(SigAlg::Ed25519)
        .unwrap()
        .generate(rc().random)
        .unwrap();
    pair.edit_device(|d| {
        d.pins = vec![
            PinnedKey {
                alg: SigAlg::Ed25519,
                public_key: fresh.public_key(),
            },
            old,
        ]
    });
    // The gateway still has only the old key: the hello MAC is keyed from the first pin,
    // which it does not hold.
    assert_eq!(
        pair.handshake().unwrap_err(),
        AuthFailure::BadHelloMac.into()
    );
    let fresh_key = aws()
        .signature(SigAlg::Ed25519)
        .unwrap()
        .load(fresh.private_bytes().as_bytes())
        .unwrap();
    pair.reconfigure(|c| {
        c.identities
            .push(iotseal_proto::handshake::GatewayIdentity::new(
                &aws(),
                fresh_key,
            ))
    });
    pair.handshake().expect("new key in the overlap");
}

/// A device whose clock is an hour off: one clock retry, then success, and the device gets
/// the gateway's authenticated time to adopt. A stale hello replayed later gets only a retry.
#[test]
fn clock_recovery_via_retry() {
    let mut pair = Pair::new(rc(), aws(), SMALL, 51);
    let gw_now = pair.now;
    let dev_now = Time(gw_now.0 - 3_600_000);
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), dev_now).unwrap();
    let r = pair.server.handle_hello(gw_now, &m1, &|_| false).unwrap();
    assert!(matches!(
        r,
        HelloReply::Retry {
            reason: RetryReason::Clock,
            stale: true,
            ..
        }
    ));
    let DeviceNext::Retry { handshake, hello } = hs.handle(dev_now, reply_bytes(&r)).unwrap()
    else {
        panic!()
    };
    let r = pair
        .server
        .handle_hello(gw_now, &hello, &|_| false)
        .unwrap();
    let DeviceNext::Established(e) = handshake.handle(dev_now, reply_bytes(&r)).unwrap() else {
        panic!()
    };
    let adopted = e.gateway_time.expect("short round trip: time adopted");
    assert!(adopted.0.abs_diff(gw_now.0) < 2000);
    pair.server
        .handle_finish(gw_now, &e.finish, &pair.registry)
        .unwrap();

    // A device that took too long (more than skew/2) does not adopt.
    let mut pair = Pair::new(rc(), aws(), SMALL, 52);
    let now = pair.now;
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let r = pair.server.handle_hello(now, &m1, &|_| false).unwrap();
    let later = Time(now.0 + 16_000);
    let DeviceNext::Established(e) = hs.handle(later, reply_bytes(&r)).unwrap() else {
        panic!()
    };
    assert!(e.gateway_time.is_none());
}

/// Retransmitted hellos get the cached answer; a hello replayed once the cache is gone is
/// refused by the nonce cache; one replayed after the skew window is stale.
#[test]
fn hello_replays() {
    let mut pair = Pair::new(rc(), aws(), SMALL, 61);
    let now = pair.now;
    let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let r = pair.server.handle_hello(now, &m1, &|_| false).unwrap();
    assert_eq!(
        pair.server.cached_answer(now, &m1).as_deref(),
        Some(reply_bytes(&r))
    );
    assert_eq!(pair.server.half_open_len(), 1);
    // Replay bypassing the cache: the nonce is known.
    assert_eq!(
        pair.server.handle_hello(now, &m1, &|_| false).unwrap_err(),
        Error::Replay
    );
    // After the skew window: stale (a clock retry, no state).
    let late = Time(now.0 + 31_000);
    assert!(pair.server.cached_answer(late, &m1).is_none());
    let r = pair.server.handle_hello(late, &m1, &|_| false).unwrap();
    assert!(matches!(
        r,
        HelloReply::Retry {
            reason: RetryReason::Clock,
            stale: true,
            ..
        }
    ));
    pair.server.expire(late);
    assert_eq!(pair.server.half_open_len(), 0);
}

/// The half-open table is bounded: a flood of valid hellos fills it and further ones are
/// refused as busy, not stored.
#[test]
fn half_open_table_is_bounded() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 71);
    pair.reconfigure(|c| c.max_half_open = 8);
    let server = &mut pair.server;
    let now = T0;
    for i in 0..20 {
        let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
        let r = server.handle_hello(now, &m1, &|_| false);
        if i < 8 {
            assert!(r.is_ok(), "{i}");
        } else {
            assert_eq!(
                r.unwrap_err(),
                iotseal_proto::error::Limit::HalfOpenFull.into()
            );
        }
    }
    assert_eq!(server.half_open_len(), 8);
}

/// The hello nonce cache is bounded too: with room in the half-open table, the hello after
/// the cache's capacity is refused as busy (a nonce is never forgotten early, which would let
/// a recorded hello be replayed).
#[test]
fn nonce_cache_is_bounded() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 72);
    pair.reconfigure(|c| {
        c.max_half_open = 64;
        c.nonce_cache_capacity = 5;
    });
    let server = &mut pair.server;
    let now = T0;
    for i in 0..8 {
        let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
        let r = server.handle_hello(now, &m1, &|_| false);
        if i < 5 {
            assert!(r.is_ok(), "{i}");
        } else {
            assert_eq!(
                r.unwrap_err(),
                iotseal_proto::error::Limit::NonceCacheFull.into()
            );
        }
    }
    assert_eq!(server.half_open_len(), 5);
}

/// M3 with records: the gateway returns them for the application; a replayed M3 after the
/// handshake completed finds no half-open state.
#[test]
fn finish_carries_first_records_and_is_not_replayable() {
    let mut pair = Pair::new(aws(), rc(), Suite::DEFAULT, 81);
    let now = pair.now;
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let r = pair.server.handle_hello(now, &m1, &|_| false).unwrap();
    let DeviceNext::Established(mut e) = hs.handle(now, reply_bytes(&r)).unwrap() else {
        panic!()
    };
    let mut flight = e.finish.clone();
    for i in 0..3u8 {
        let mut rec = Vec::new();
        e.session
            .seal(now, ContentType::Data, &[i; 10], &mut rec)
            .unwrap();
        batch::push(&mut flight, &rec);
    }
    let g = pair
        .server
        .handle_finish(now, &flight, &pair.registry)
        .unwrap();
    let mut gs = g.session;
    let recs = batch::split(g.records).unwrap();
    assert_eq!(recs.len(), 3);
    for (i, r) in recs.into_iter().enumerate() {
        let mut r = r.to_vec();
        let o = gs.open(now, &mut r).unwrap();
        assert_eq!(o.plaintext, &[i as u8; 10]);
    }
    assert_eq!(
        pair.server
            .handle_finish(now, &flight, &pair.registry)
            .unwrap_err(),
        Error::UnknownSession
    );
}

#[test]
fn deterministic_with_seeded_provider() {
    let a = Pair::new(seeded(rc(), 1), seeded(rc(), 2), Suite::DEFAULT, 1)
        .handshake()
        .unwrap();
    let b = Pair::new(seeded(rc(), 1), seeded(rc(), 2), Suite::DEFAULT, 1)
        .handshake()
        .unwrap();
    assert_eq!(a.flights, b.flights);
    let _ = Malformed::Truncated;
}

/// A device with a wrong clock whose first offer is not the one the gateway picks: the clock
/// retry names the chosen suite, so the retried hello carries the right key share.
#[test]
fn clock_retry_names_the_chosen_suite() {
    let classic = suite(KemId::X25519, SigAlg::Ed25519, AeadId::Aes256Gcm);
    let mut pair = Pair::with_offers(rc(), aws(), vec![classic, Suite::DEFAULT], 53);
    pair.reconfigure(|c| {
        c.policy = SuitePolicy {
            require_pq_kem: true,
            ..SuitePolicy::default()
        }
    });
    let gw_now = pair.now;
    let dev_now = Time(gw_now.0 + 600_000);
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), dev_now).unwrap();
    let r = pair.server.handle_hello(gw_now, &m1, &|_| false).unwrap();
    assert!(matches!(
        r,
        HelloReply::Retry {
            reason: RetryReason::Clock,
            stale: false,
            ..
        }
    ));
    let DeviceNext::Retry { handshake, hello } = hs.handle(dev_now, reply_bytes(&r)).unwrap()
    else {
        panic!()
    };
    let r = pair
        .server
        .handle_hello(gw_now, &hello, &|_| false)
        .unwrap();
    let HelloReply::GatewayHello { suite: chosen, .. } = &r else {
        panic!("{r:?}")
    };
    assert_eq!(*chosen, Suite::DEFAULT);
    let DeviceNext::Established(e) = handshake.handle(dev_now, reply_bytes(&r)).unwrap() else {
        panic!()
    };
    pair.server
        .handle_finish(gw_now, &e.finish, &pair.registry)
        .unwrap();
}

/// A first offer the gateway does not know (a newer device): the key share is for it, so
/// the gateway asks for a share of the suite it picks.
#[test]
fn unknown_first_offer_gets_a_key_share_retry() {
    let mut pair = Pair::with_offers(rc(), aws(), vec![Suite::DEFAULT, SMALL], 54);
    let now = pair.now;
    let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    // Rewrite the first offer's KEM code to an unknown one and re-MAC.
    let mut forged = m1[..m1.len() - MAC1_LEN].to_vec();
    forged[3] = 0x7e;
    let pin = &pair.device.pins[0];
    let mac = aws()
        .hmac
        .mac(&mac1_key(&aws(), pin.alg, &pin.public_key), &[&forged]);
    forged.extend_from_slice(&mac[..MAC1_LEN]);
    let r = pair.server.handle_hello(now, &forged, &|_| false).unwrap();
    assert!(
        matches!(
            r,
            HelloReply::Retry {
                reason: RetryReason::KeyShare,
                ..
            }
        ),
        "{r:?}"
    );
}

/// A gateway whose session-id policy owns two partitions of 16 completes every handshake
/// with an id inside them (over the default suite, both providers), and with seeded
/// randomness the ids are reproducible; the default policy gives the ids of 4 raw bytes.
#[test]
fn partitioned_session_ids_land_in_owned_partitions() {
    use iotseal_proto::handshake::SessionIdPolicy;
    for gp in [rc(), aws()] {
        let run = |seed: u64| -> Vec<u32> {
            let mut pair = Pair::new(rc(), seeded(gp, seed), SMALL, seed);
            pair.reconfigure(|c| {
                c.session_ids = SessionIdPolicy::partitioned(16, [3, 9]).unwrap();
            });
            (0..20)
                .map(|_| {
                    let e = pair.handshake().unwrap();
                    assert_eq!(e.device.id(), e.gateway.id());
                    e.gateway.id()
                })
                .collect()
        };
        let ids = run(11);
        for id in &ids {
            assert!([3, 9].contains(&(id % 16)), "session id {id:#x}");
        }
        assert!(ids.iter().any(|i| i % 16 == 3) && ids.iter().any(|i| i % 16 == 9));
        assert_eq!(ids, run(11), "deterministic with the same seed");
    }
    // A misconfigured policy cannot be built.
    assert_eq!(
        SessionIdPolicy::partitioned(16, []),
        Err(Error::ApiMisuse(
            iotseal_proto::error::ApiMisuse::NoOwnedPartition
        ))
    );
}
