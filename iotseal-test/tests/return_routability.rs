//! Return routability under load (docs/protocol.md §4.2, §7.3, §11): Address retries bound to
//! the hello's source, the cookie threshold and the per-source share, the per-source cap, the
//! fair eviction of a full half-open table, and the half-open lifetime.

use iotseal_proto::crypto::CryptoProvider;
use iotseal_proto::error::{AuthFailure, Error, Limit};
use iotseal_proto::handshake::messages::{Cookie, RetryReason};
use iotseal_proto::handshake::{DeviceHandshake, DeviceNext, HelloReply, SourceKey, SuitePolicy};
use iotseal_proto::{AeadId, KemId, SigAlg, Suite, Time};
use iotseal_test::pair::{Pair, T0};

fn rc() -> CryptoProvider {
    iotseal_crypto_rustcrypto::default_provider()
}
fn aws() -> CryptoProvider {
    iotseal_crypto_awslc::default_provider()
}

const SMALL: Suite = Suite {
    kem: KemId::X25519,
    sig: SigAlg::Ed25519,
    aead: AeadId::Aes256Gcm,
};

fn src(n: u8) -> SourceKey {
    SourceKey::from_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n)))
}

fn bytes(r: &HelloReply) -> &[u8] {
    match r {
        HelloReply::GatewayHello { bytes, .. } | HelloReply::Retry { bytes, .. } => bytes,
    }
}

fn is_address_retry(r: &HelloReply) -> bool {
    matches!(
        r,
        HelloReply::Retry {
            reason: RetryReason::Address,
            ..
        }
    )
}

/// A hello from `source` answered with M2 (whatever retry comes first is followed, once);
/// returns the device's finish and the session id.
fn open_half(pair: &mut Pair, now: Time, source: SourceKey) -> Result<(Vec<u8>, u32), Error> {
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now)?;
    let mut r = pair
        .server
        .handle_hello_from(now, &m1, source, &|_| false)?;
    let mut hs = hs;
    if let HelloReply::Retry { .. } = r {
        let DeviceNext::Retry { handshake, hello } = hs.handle(now, bytes(&r))? else {
            panic!("a retry taken as M2")
        };
        hs = handshake;
        r = pair
            .server
            .handle_hello_from(now, &hello, source, &|_| false)?;
    }
    let HelloReply::GatewayHello { session_id, .. } = r else {
        panic!("a second retry")
    };
    let DeviceNext::Established(e) = hs.handle(now, bytes(&r))? else {
        panic!("M2 taken as a retry")
    };
    Ok((e.finish.clone(), session_id))
}

/// Under load a first hello gets Retry(Address); the retried hello from the same source is
/// admitted and the handshake completes; the cookie is bound to the source: from another
/// source, or from a transport that gives none, it is a bad cookie.
#[test]
fn address_cookie_is_bound_to_the_source() {
    for (dp, gp) in [(rc(), aws()), (aws(), rc())] {
        let mut pair = Pair::new(dp, gp, SMALL, 301);
        pair.reconfigure(|c| c.cookie_threshold = 0);
        let now = pair.now;
        let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
        let r = pair
            .server
            .handle_hello_from(now, &m1, src(1), &|_| false)
            .unwrap();
        assert!(is_address_retry(&r), "{r:?}");
        let cookie = Cookie::from_retry_message(bytes(&r)).unwrap();
        assert_eq!(cookie.reason, RetryReason::Address);
        assert_eq!(cookie.suite, SMALL);
        assert_eq!(cookie.time, now.wire_secs());
        assert_eq!(pair.server.half_open_len(), 0, "stateless");
        let DeviceNext::Retry { handshake, hello } = hs.handle(now, bytes(&r)).unwrap() else {
            panic!()
        };
        for bad in [src(2), SourceKey([0; 16])] {
            assert_eq!(
                pair.server
                    .handle_hello_from(now, &hello, bad, &|_| false)
                    .unwrap_err(),
                Error::AuthFailed(AuthFailure::BadCookie)
            );
        }
        assert_eq!(
            pair.server
                .handle_hello(now, &hello, &|_| false)
                .unwrap_err(),
            Error::AuthFailed(AuthFailure::BadCookie)
        );
        let r = pair
            .server
            .handle_hello_from(now, &hello, src(1), &|_| false)
            .unwrap();
        let DeviceNext::Established(e) = handshake.handle(now, bytes(&r)).unwrap() else {
            panic!()
        };
        let g = pair
            .server
            .handle_finish(now, &e.finish, &pair.registry)
            .unwrap();
        assert_eq!(g.session.id(), e.session.id());
        // The cookie expires with the skew.
        let late = Time(now.0 + 31_000);
        assert_eq!(
            pair.server
                .handle_hello_from(late, &hello, src(1), &|_| false)
                .unwrap_err(),
            Error::AuthFailed(AuthFailure::BadCookie)
        );
    }
}

/// One Address retry also fixes the clock and the key share: the device is an hour behind and
/// sends a share for its first offer, the gateway requires a PQ key exchange.
#[test]
fn one_address_retry_fixes_clock_and_key_share() {
    let mut pair = Pair::with_offers(rc(), rc(), vec![SMALL, Suite::DEFAULT], 302);
    pair.reconfigure(|c| {
        c.cookie_threshold = 0;
        c.policy = SuitePolicy {
            require_pq_kem: true,
            ..SuitePolicy::default()
        };
    });
    let gw_now = pair.now;
    let dev_now = Time(gw_now.0 - 3_600_000);
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), dev_now).unwrap();
    let r = pair
        .server
        .handle_hello_from(gw_now, &m1, src(3), &|_| false)
        .unwrap();
    assert!(is_address_retry(&r));
    assert_eq!(
        Cookie::from_retry_message(bytes(&r)).unwrap().suite,
        Suite::DEFAULT
    );
    let DeviceNext::Retry { handshake, hello } = hs.handle(dev_now, bytes(&r)).unwrap() else {
        panic!()
    };
    let r = pair
        .server
        .handle_hello_from(gw_now, &hello, src(3), &|_| false)
        .unwrap();
    let HelloReply::GatewayHello { suite, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(suite, Suite::DEFAULT);
    let DeviceNext::Established(e) = handshake.handle(dev_now, bytes(&r)).unwrap() else {
        panic!()
    };
    assert!(e.gateway_time.is_some());
    pair.server
        .handle_finish(gw_now, &e.finish, &pair.registry)
        .unwrap();
}

/// The cookie threshold: below it hellos are answered at once, from it on with an Address
/// retry. A source holding half its cap or more gets Address retries below the threshold too.
/// Transports that give no source never get Address retries.
#[test]
fn threshold_and_share_trigger_address_retries() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 303);
    pair.reconfigure(|c| {
        c.cookie_threshold = 3;
        c.max_half_open_per_source = 4;
    });
    let now = pair.now;
    let first = |pair: &mut Pair, s: SourceKey| {
        let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
        pair.server
            .handle_hello_from(now, &m1, s, &|_| false)
            .unwrap()
    };
    // Source 1 holds two (half its cap of 4): its third hello must prove its address.
    assert!(!is_address_retry(&first(&mut pair, src(1))));
    assert!(!is_address_retry(&first(&mut pair, src(1))));
    assert!(is_address_retry(&first(&mut pair, src(1))));
    // Another source is still answered at once: the table holds 2 < 3.
    assert!(!is_address_retry(&first(&mut pair, src(2))));
    // Now the table holds 3: everyone proves their address.
    assert!(is_address_retry(&first(&mut pair, src(4))));
    assert_eq!(pair.server.half_open_len(), 3);
    // A retried hello with a valid Address cookie is admitted under load.
    open_half(&mut pair, now, src(4)).unwrap();
    assert_eq!(pair.server.half_open_len(), 4);
    // Without a source: never an Address retry.
    let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    assert!(matches!(
        pair.server.handle_hello(now, &m1, &|_| false).unwrap(),
        HelloReply::GatewayHello { .. }
    ));
}

/// Under load, a retried hello with a Clock cookie (not bound to its source; the clock retry
/// came before the load) is refused Busy: only one retry per handshake, the device starts again.
#[test]
fn clock_cookie_under_load_is_refused() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 304);
    let gw_now = pair.now;
    let dev_now = Time(gw_now.0 - 3_600_000);
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), dev_now).unwrap();
    let r = pair
        .server
        .handle_hello_from(gw_now, &m1, src(5), &|_| false)
        .unwrap();
    assert!(matches!(
        r,
        HelloReply::Retry {
            reason: RetryReason::Clock,
            ..
        }
    ));
    let DeviceNext::Retry { hello, .. } = hs.handle(dev_now, bytes(&r)).unwrap() else {
        panic!()
    };
    // The load comes now (same cookie key: the configuration changes, the server stays).
    let mut cfg = pair.gateway_config();
    cfg.cookie_secret = pair.server.config().cookie_secret.clone();
    cfg.cookie_threshold = 0;
    pair.server.set_config(cfg);
    assert_eq!(
        pair.server
            .handle_hello_from(gw_now, &hello, src(5), &|_| false)
            .unwrap_err(),
        Error::Limit(Limit::SourceUnproven)
    );
}

/// The per-source cap holds with valid Address cookies too.
#[test]
fn per_source_cap() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 305);
    pair.reconfigure(|c| {
        c.cookie_threshold = 0;
        c.max_half_open_per_source = 2;
    });
    let now = pair.now;
    open_half(&mut pair, now, src(6)).unwrap();
    open_half(&mut pair, now, src(6)).unwrap();
    assert_eq!(
        open_half(&mut pair, now, src(6)).unwrap_err(),
        Error::Limit(Limit::HalfOpenPerSource)
    );
    assert_eq!(pair.server.half_open_held_by(Some(src(6))), 2);
    open_half(&mut pair, now, src(7)).unwrap();
}

/// A full table: a hello from a source holding fewer entries than the largest holder evicts
/// that holder's oldest entry (whose M3 then gets UnknownSession and whose M2 leaves the answer
/// cache); the largest holder itself is refused Busy.
#[test]
fn full_table_evicts_fairly() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 306);
    pair.reconfigure(|c| {
        c.max_half_open = 6;
        c.cookie_threshold = usize::MAX;
        c.max_half_open_per_source = 0;
    });
    let mut flood = Vec::new();
    for i in 0..6 {
        let t = Time(pair.now.0 + i);
        flood.push(open_half(&mut pair, t, src(8)).unwrap());
    }
    let now = Time(pair.now.0 + 10);
    assert_eq!(
        open_half(&mut pair, now, src(8)).unwrap_err(),
        Error::Limit(Limit::HalfOpenFull)
    );
    // A device holding none gets in, evicting the flood's oldest.
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let r = pair
        .server
        .handle_hello_from(now, &m1, src(9), &|_| false)
        .unwrap();
    assert_eq!(pair.server.half_open_len(), 6);
    assert_eq!(pair.server.half_open_held_by(Some(src(8))), 5);
    let DeviceNext::Established(e) = hs.handle(now, bytes(&r)).unwrap() else {
        panic!()
    };
    pair.server
        .handle_finish(now, &e.finish, &pair.registry)
        .unwrap();
    assert_eq!(
        pair.server
            .handle_finish(now, &flood[0].0, &pair.registry)
            .unwrap_err(),
        Error::UnknownSession
    );
    pair.server
        .handle_finish(now, &flood[1].0, &pair.registry)
        .unwrap();
}

/// Half-open handshakes live `half_open_secs` (10 s by default), at most the skew.
#[test]
fn half_open_lifetime() {
    for (half_open, skew, lives_ms) in [(10, 30, 10_000u64), (5, 30, 5_000), (10, 3, 3_000)] {
        let mut pair = Pair::new(rc(), rc(), SMALL, 307);
        pair.reconfigure(|c| {
            c.half_open_secs = half_open;
            c.skew_secs = skew;
        });
        let now = pair.now;
        let (m3, _) = open_half(&mut pair, now, src(10)).unwrap();
        let (m3b, _) = open_half(&mut pair, now, src(10)).unwrap();
        let just_before = Time(now.0 + lives_ms - 1);
        let at = Time(now.0 + lives_ms);
        pair.server
            .handle_finish(just_before, &m3, &pair.registry)
            .unwrap();
        assert_eq!(
            pair.server
                .handle_finish(at, &m3b, &pair.registry)
                .unwrap_err(),
            Error::UnknownSession
        );
        pair.server.expire(at);
        assert_eq!(pair.server.half_open_len(), 0);
    }
    // The default.
    let pair = Pair::new(rc(), rc(), SMALL, 308);
    assert_eq!(pair.server.config().half_open_secs, 10);
    assert_eq!(pair.now, T0);
}

/// A full nonce cache is shared out like the half-open table: a hello from a source holding
/// fewer nonces than the largest holder evicts that holder's oldest (counted), the largest
/// holder's own hellos are refused Busy, and nonces still held keep refusing replays.
#[test]
fn full_nonce_cache_evicts_fairly() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 308);
    pair.reconfigure(|c| {
        c.max_half_open = 64;
        c.cookie_threshold = usize::MAX;
        c.max_half_open_per_source = 0;
        c.nonce_cache_capacity = 4;
    });
    // One hello a second: the first one's nonce is the oldest (it expires first).
    let mut hellos = Vec::new();
    for i in 0..4 {
        let t = pair.now.plus_millis(i * 1000);
        let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), t).unwrap();
        pair.server
            .handle_hello_from(t, &m1, src(10), &|_| false)
            .unwrap();
        hellos.push(m1);
    }
    let now = pair.now.plus_millis(4000);
    let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    assert_eq!(
        pair.server
            .handle_hello_from(now, &m1, src(10), &|_| false)
            .unwrap_err(),
        Error::Limit(Limit::NonceCacheFull)
    );
    assert_eq!(pair.server.nonce_evictions(), 0);
    // A device at another source gets in; one of the flood's nonces goes.
    open_half(&mut pair, now, src(11)).unwrap();
    assert_eq!(pair.server.nonce_evictions(), 1);
    // A nonce still held refuses its replay (sent from elsewhere, past the answer cache:
    // handle_hello_from is the check after it); the evicted one, the oldest, is admitted again:
    // what a fresh hello from that source would get, a half-open handshake that cannot finish
    // without the device's keys.
    assert_eq!(
        pair.server
            .handle_hello_from(now, &hellos[3], src(12), &|_| false)
            .unwrap_err(),
        Error::Replay
    );
    assert!(
        pair.server
            .handle_hello_from(now, &hellos[0], src(12), &|_| false)
            .is_ok()
    );
}
