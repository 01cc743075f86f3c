//! The gateway's handshake in three steps (check → compute → commit, docs/decisions.md D36):
//! the same bytes as the one-call path, and the races the commit steps settle.

use iotseal_proto::crypto::{CryptoError, CryptoProvider, SecureRandom};
use iotseal_proto::error::{ApiMisuse, AuthFailure, Error, Limit};
use iotseal_proto::handshake::messages::{MAC1_LEN, RetryReason};
use iotseal_proto::handshake::{
    DeviceConfig, DeviceEstablished, DeviceHandshake, DeviceNext, FinishJob, FinishVerified,
    HandshakeServer, HelloComputed, HelloJob, HelloReply, HelloStep, SessionIdPolicy, SourceKey,
    mac1_key,
};
use iotseal_proto::record::ContentType;
use iotseal_proto::{AeadId, KemId, SigAlg, Suite, Time};
use iotseal_test::pair::{MapRegistry, Pair, seeded};

fn rc() -> CryptoProvider {
    iotseal_crypto_rustcrypto::default_provider()
}

const SMALL: Suite = Suite {
    kem: KemId::X25519,
    sig: SigAlg::Ed25519,
    aead: AeadId::Aes256Gcm,
};

fn free(_: u32) -> bool {
    false
}

fn src(n: u8) -> Option<SourceKey> {
    Some(SourceKey([n; 16]))
}

/// `check_hello`, expecting work (not a retry).
fn check(
    server: &mut HandshakeServer,
    now: Time,
    m1: &[u8],
    source: Option<SourceKey>,
) -> HelloJob {
    match server.check_hello(now, m1, source).unwrap() {
        HelloStep::Compute(job) => job,
        HelloStep::Reply(r) => panic!("expected work, got {r:?}"),
    }
}

fn compute(job: HelloJob) -> HelloComputed {
    job.compute(&free).unwrap()
}

/// The session id and bytes of an M2.
fn m2(reply: &HelloReply) -> (u32, &[u8]) {
    match reply {
        HelloReply::GatewayHello {
            session_id, bytes, ..
        } => (*session_id, bytes),
        HelloReply::Retry { .. } => panic!("expected M2, got {reply:?}"),
    }
}

fn reply_bytes(reply: &HelloReply) -> &[u8] {
    match reply {
        HelloReply::GatewayHello { bytes, .. } | HelloReply::Retry { bytes, .. } => bytes,
    }
}

/// The device's side after M2: its session and M3 with one data record appended.
fn device_finish(hs: DeviceHandshake, now: Time, m2: &[u8]) -> (Box<DeviceEstablished>, Vec<u8>) {
    let DeviceNext::Established(mut e) = hs.handle(now, m2).unwrap() else {
        panic!("expected the device to finish")
    };
    let mut m3 = e.finish.clone();
    // At the session's start by the device's clock (a device that adopted the gateway's time
    // after a clock retry counts from that).
    let at = e.session.started();
    e.session
        .seal(at, ContentType::Data, b"first reading", &mut m3)
        .unwrap();
    (e, m3)
}

fn split_finish(
    server: &mut HandshakeServer,
    now: Time,
    m3: &[u8],
    registry: &MapRegistry,
) -> Result<(u32, Vec<u8>, Vec<u8>), Error> {
    let verified = server.check_finish(now, m3)?.verify(registry)?;
    let g = server.commit_finish(now, verified, m3)?;
    Ok((g.session.id(), g.device_id, g.records.to_vec()))
}

/// A hello with the same nonce and another time (so other bytes), MACed again under the
/// device's pin: a replay of the nonce, not a retransmission.
fn same_nonce_other_hello(device: &DeviceConfig, m1: &[u8]) -> Vec<u8> {
    let mut forged = m1[..m1.len() - MAC1_LEN].to_vec();
    // type, version, offer count, offers (3 bytes each), then the time.
    let at = 3 + 3 * usize::from(forged[2]);
    forged[at + 3] ^= 1;
    let pin = &device.pins[0];
    let p = device.provider;
    let mac = p
        .hmac
        .mac(&mac1_key(&p, pin.alg, &pin.public_key), &[&forged]);
    forged.extend_from_slice(&mac[..MAC1_LEN]);
    assert_ne!(forged, m1);
    forged
}

#[test]
fn jobs_are_send() {
    fn send<T: Send + 'static>() {}
    send::<HelloJob>();
    send::<HelloComputed>();
    send::<FinishJob>();
    send::<FinishVerified>();
}

/// Under deterministic randomness the three steps give the same bytes as `handle_hello`
/// and `handle_finish`: retry, M2, the finished session (its records sealed alike), with a
/// clock retry first so the cookie's transcript prefix is covered too.
#[test]
fn split_path_is_byte_identical_to_one_call() {
    for suite in [SMALL, Suite::DEFAULT] {
        let mut one = Pair::new(seeded(rc(), 1), seeded(rc(), 2), suite, 7);
        let mut split = Pair::new(seeded(rc(), 1), seeded(rc(), 2), suite, 7);
        let now = one.now;
        let dev_now = Time(now.0 + 600_000);

        let (hs_a, m1_a) = DeviceHandshake::start(one.device.clone(), dev_now).unwrap();
        let (hs_b, m1_b) = DeviceHandshake::start(split.device.clone(), dev_now).unwrap();
        assert_eq!(m1_a, m1_b);
        let source = src(3);

        // A clock retry: check_hello answers at once.
        let r_a = one
            .server
            .handle_hello_from(now, &m1_a, source.unwrap(), &free)
            .unwrap();
        let HelloStep::Reply(r_b) = split.server.check_hello(now, &m1_b, source).unwrap() else {
            panic!("expected a retry")
        };
        assert!(matches!(
            r_a,
            HelloReply::Retry {
                reason: RetryReason::Clock,
                ..
            }
        ));
        assert_eq!(r_a, r_b);
        let DeviceNext::Retry {
            handshake: hs_a,
            hello: m1_a,
        } = hs_a.handle(dev_now, reply_bytes(&r_a)).unwrap()
        else {
            panic!()
        };
        let DeviceNext::Retry {
            handshake: hs_b,
            hello: m1_b,
        } = hs_b.handle(dev_now, reply_bytes(&r_b)).unwrap()
        else {
            panic!()
        };
        assert_eq!(m1_a, m1_b);

        // M2.
        let r_a = one
            .server
            .handle_hello_from(now, &m1_a, source.unwrap(), &free)
            .unwrap();
        let job = check(&mut split.server, now, &m1_b, source);
        assert_eq!(job.suite(), suite);
        let computed = compute(job);
        let r_b = split.server.commit_hello(now, computed).unwrap();
        assert_eq!(r_a, r_b, "{suite}");
        assert_eq!(split.server.half_open_len(), 1);
        assert_eq!(
            split.server.cached_answer(now, &m1_b).as_deref(),
            Some(m2(&r_b).1)
        );

        // M3 with a record, and the sessions.
        let (_e_a, m3_a) = device_finish(hs_a, dev_now, m2(&r_a).1);
        let (_e_b, m3_b) = device_finish(hs_b, dev_now, m2(&r_b).1);
        assert_eq!(m3_a, m3_b);
        let mut g_a = one.server.handle_finish(now, &m3_a, &one.registry).unwrap();
        let job = split.server.check_finish(now, &m3_b).unwrap();
        assert_eq!(job.session_id(), m2(&r_b).0);
        let verified = job.verify(&split.registry).unwrap();
        assert_eq!(verified.device_id(), g_a.device_id.as_slice());
        let mut g_b = split.server.commit_finish(now, verified, &m3_b).unwrap();
        assert_eq!(g_a.device_id, g_b.device_id);
        assert_eq!(g_a.records, g_b.records);
        assert!(!g_b.records.is_empty());
        assert_eq!(g_a.session.id(), g_b.session.id());
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        g_a.session
            .seal(now, ContentType::Ack, b"ack", &mut out_a)
            .unwrap();
        g_b.session
            .seal(now, ContentType::Ack, b"ack", &mut out_b)
            .unwrap();
        assert_eq!(out_a, out_b);
        let mut rec = g_b.records.to_vec();
        let opened = g_b.session.open(now, &mut rec).unwrap();
        assert_eq!(opened.plaintext, b"first reading");
        assert_eq!(split.server.half_open_len(), 0);
        assert_eq!(one.server.half_open_len(), 0);
    }
}

/// Check A, check B, compute both (on other threads), commit B then A: both admitted, with
/// their own ids, and both finish.
#[test]
fn interleaved_hellos_both_commit() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 11);
    let now = pair.now;
    let (hs_a, m1_a) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let (hs_b, m1_b) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let job_a = check(&mut pair.server, now, &m1_a, src(1));
    let job_b = check(&mut pair.server, now, &m1_b, src(2));
    assert_eq!(
        pair.server.half_open_len(),
        0,
        "nothing admitted before the commit"
    );
    let t_a = std::thread::spawn(move || compute(job_a));
    let t_b = std::thread::spawn(move || compute(job_b));
    let (c_a, c_b) = (t_a.join().unwrap(), t_b.join().unwrap());
    assert_ne!(c_a.session_id(), c_b.session_id());
    let r_b = pair.server.commit_hello(now, c_b).unwrap();
    assert!(pair.server.is_half_open(m2(&r_b).0));
    let r_a = pair.server.commit_hello(now, c_a).unwrap();
    assert_eq!(pair.server.half_open_len(), 2);
    assert!(pair.server.is_half_open(m2(&r_a).0));
    assert_eq!(pair.server.half_open_held_by(src(1)), 1);
    assert_eq!(pair.server.half_open_held_by(src(2)), 1);
    let (_, m3_a) = device_finish(hs_a, now, m2(&r_a).1);
    let (_, m3_b) = device_finish(hs_b, now, m2(&r_b).1);
    let (id_b, dev_b, _) = split_finish(&mut pair.server, now, &m3_b, &pair.registry).unwrap();
    let (id_a, dev_a, _) = split_finish(&mut pair.server, now, &m3_a, &pair.registry).unwrap();
    assert_eq!((id_a, id_b), (m2(&r_a).0, m2(&r_b).0));
    assert_eq!(dev_a, pair.device.device_id);
    assert_eq!(dev_b, pair.device.device_id);
    assert_eq!(pair.server.half_open_len(), 0);
}

/// One hello checked twice before either commit (two workers got the same retransmission):
/// the second commit answers the first's M2 again and admits nothing more.
#[test]
fn same_hello_committed_twice_answers_the_first_m2() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 12);
    let now = pair.now;
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let first = check(&mut pair.server, now, &m1, src(1));
    let second = check(&mut pair.server, now, &m1, src(1));
    let (c1, c2) = (compute(first), compute(second));
    assert_ne!(c1.session_id(), c2.session_id());
    let r1 = pair.server.commit_hello(now, c1).unwrap();
    let r2 = pair.server.commit_hello(now, c2).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(pair.server.half_open_len(), 1);
    // A third check sees the nonce: the caller's cached_answer answers retransmissions.
    assert_eq!(
        pair.server.check_hello(now, &m1, src(1)).unwrap_err(),
        Error::Replay
    );
    assert_eq!(
        pair.server.cached_answer(now, &m1).as_deref(),
        Some(m2(&r1).1)
    );
    let (_, m3) = device_finish(hs, now, m2(&r2).1);
    let (id, _, records) = split_finish(&mut pair.server, now, &m3, &pair.registry).unwrap();
    assert_eq!(id, m2(&r1).0);
    assert!(!records.is_empty());
}

/// A nonce admitted by another hello while this one was computing is a replay at the commit;
/// so is the same hello when its M2 is no longer cached (here: no answer cache).
#[test]
fn nonce_replay_detected_at_commit() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 13);
    let now = pair.now;
    let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let replay = same_nonce_other_hello(&pair.device, &m1);
    let job = check(&mut pair.server, now, &m1, None);
    let job_replay = check(&mut pair.server, now, &replay, None);
    let (c, c_replay) = (compute(job), compute(job_replay));
    pair.server.commit_hello(now, c).unwrap();
    assert_eq!(
        pair.server.commit_hello(now, c_replay).unwrap_err(),
        Error::Replay
    );
    assert_eq!(pair.server.half_open_len(), 1);

    pair.reconfigure(|c| c.response_cache_capacity = 0);
    let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let c1 = compute(check(&mut pair.server, now, &m1, None));
    let c2 = compute(check(&mut pair.server, now, &m1, None));
    pair.server.commit_hello(now, c1).unwrap();
    assert_eq!(
        pair.server.commit_hello(now, c2).unwrap_err(),
        Error::Replay
    );
    assert_eq!(pair.server.half_open_len(), 1);
}

/// Two M3s of one session verified concurrently: exactly one commits, the other finds the
/// session gone. A commit given another message than its check is refused and changes nothing.
#[test]
fn two_finishes_of_one_session_one_wins() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 14);
    let now = pair.now;
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let r = pair.server.handle_hello(now, &m1, &free).unwrap();
    let (_, m3) = device_finish(hs, now, m2(&r).1);
    let jobs: Vec<FinishJob> = (0..3)
        .map(|_| pair.server.check_finish(now, &m3).unwrap())
        .collect();
    let registry = pair.registry.clone();
    let mut verified: Vec<FinishVerified> = jobs
        .into_iter()
        .map(|j| {
            let registry = registry.clone();
            std::thread::spawn(move || j.verify(&registry).unwrap())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let (v3, v2, v1) = (
        verified.pop().unwrap(),
        verified.pop().unwrap(),
        verified.pop().unwrap(),
    );

    let mut other = m3.clone();
    other[6] ^= 1;
    assert_eq!(
        pair.server.commit_finish(now, v3, &other).unwrap_err(),
        Error::ApiMisuse(ApiMisuse::CommitMismatch)
    );
    assert_eq!(pair.server.half_open_len(), 1);

    let g = pair.server.commit_finish(now, v1, &m3).unwrap();
    assert_eq!(g.session.id(), m2(&r).0);
    assert_eq!(g.records, &m3[m3.len() - g.records.len()..]);
    assert!(!g.records.is_empty());
    assert_eq!(
        pair.server.commit_finish(now, v2, &m3).unwrap_err(),
        Error::UnknownSession
    );
    assert_eq!(pair.server.half_open_len(), 0);
    assert_eq!(
        pair.server.check_finish(now, &m3).unwrap_err(),
        Error::UnknownSession
    );
}

/// A table that filled while the hello computed: without a source (one group, nothing to
/// evict fairly) the commit is refused `HalfOpenFull` and admits nothing (not even the
/// nonce); with sources a newcomer evicts the largest holder's oldest entry, as at check.
#[test]
fn full_table_at_commit() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 15);
    pair.reconfigure(|c| c.max_half_open = 1);
    let now = pair.now;
    let (_hs_a, m1_a) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let (_hs_b, m1_b) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let c_a = compute(check(&mut pair.server, now, &m1_a, None));
    let c_b = compute(check(&mut pair.server, now, &m1_b, None));
    pair.server.commit_hello(now, c_a).unwrap();
    assert_eq!(
        pair.server.commit_hello(now, c_b).unwrap_err(),
        Error::Limit(Limit::HalfOpenFull)
    );
    assert_eq!(pair.server.half_open_len(), 1);
    assert_eq!(
        pair.server.check_hello(now, &m1_b, None).unwrap_err(),
        Error::Limit(Limit::HalfOpenFull),
        "B's nonce was not kept: refused for room, not as a replay"
    );

    let mut pair = Pair::new(rc(), rc(), SMALL, 16);
    pair.reconfigure(|c| c.max_half_open = 1);
    let (hs_a, m1_a) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let (hs_b, m1_b) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let c_a = compute(check(&mut pair.server, now, &m1_a, src(1)));
    let c_b = compute(check(&mut pair.server, now, &m1_b, src(2)));
    let r_a = pair.server.commit_hello(now, c_a).unwrap();
    let r_b = pair.server.commit_hello(now, c_b).unwrap();
    assert_eq!(pair.server.half_open_evictions(), 1);
    assert_eq!(pair.server.half_open_held_by(src(1)), 0);
    assert_eq!(pair.server.half_open_held_by(src(2)), 1);
    assert_eq!(
        pair.server.cached_answer(now, &m1_a),
        None,
        "A's M2 went with it"
    );
    let (_, m3_a) = device_finish(hs_a, now, m2(&r_a).1);
    assert_eq!(
        pair.server.check_finish(now, &m3_a).unwrap_err(),
        Error::UnknownSession
    );
    let (_, m3_b) = device_finish(hs_b, now, m2(&r_b).1);
    split_finish(&mut pair.server, now, &m3_b, &pair.registry).unwrap();
}

/// The same bytes every time: every session id drawn is the same.
#[derive(Debug)]
struct Constant;

impl SecureRandom for Constant {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        dest.fill(0x5a);
        Ok(())
    }
}

static CONSTANT: Constant = Constant;

/// Two hellos whose jobs drew the same session id: the second commit is refused
/// `HalfOpenFull` (the id is signed into its M2); `handle_hello` draws around the taken id
/// (and here, where every draw is the same, gives up with the same error after 16 tries).
#[test]
fn session_id_taken_at_commit() {
    let gw = CryptoProvider {
        random: &CONSTANT,
        ..rc()
    };
    let mut pair = Pair::new(rc(), gw, SMALL, 17);
    let now = pair.now;
    let (_hs_a, m1_a) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let (_hs_b, m1_b) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let c_a = compute(check(&mut pair.server, now, &m1_a, None));
    let c_b = compute(check(&mut pair.server, now, &m1_b, None));
    assert_eq!(c_a.session_id(), c_b.session_id());
    pair.server.commit_hello(now, c_a).unwrap();
    assert_eq!(
        pair.server.commit_hello(now, c_b).unwrap_err(),
        Error::Limit(Limit::HalfOpenFull)
    );
    assert_eq!(pair.server.half_open_len(), 1);
    assert_eq!(
        pair.server.handle_hello(now, &m1_b, &free).unwrap_err(),
        Error::Limit(Limit::HalfOpenFull)
    );
}

/// `set_session_id_policy` applies to jobs checked after it, not to jobs already checked.
#[test]
fn session_id_policy_is_taken_at_check() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 18);
    let now = pair.now;
    let policy = SessionIdPolicy::partitioned(16, [5]).unwrap();
    pair.server.set_session_id_policy(policy.clone());
    assert_eq!(pair.server.session_id_policy(), &policy);
    for _ in 0..8 {
        let (_hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
        let job = check(&mut pair.server, now, &m1, None);
        pair.server
            .set_session_id_policy(SessionIdPolicy::partitioned(16, [9]).unwrap());
        let c = compute(job);
        assert_eq!(c.session_id() % 16, 5);
        pair.server.commit_hello(now, c).unwrap();
        pair.server.set_session_id_policy(policy.clone());
    }
    assert_eq!(pair.server.half_open_len(), 8);
}

/// A tampered M3 fails verification outside the server and leaves the half-open handshake as
/// it was: the genuine M3 still finishes.
#[test]
fn failed_verification_leaves_the_half_open_handshake() {
    let mut pair = Pair::new(rc(), rc(), SMALL, 19);
    let now = pair.now;
    let (hs, m1) = DeviceHandshake::start(pair.device.clone(), now).unwrap();
    let r = pair.server.handle_hello(now, &m1, &free).unwrap();
    let (_, m3) = device_finish(hs, now, m2(&r).1);
    let mut tampered = m3.clone();
    tampered[10] ^= 0x80;
    let job = pair.server.check_finish(now, &tampered).unwrap();
    assert_eq!(
        job.verify(&pair.registry).unwrap_err(),
        Error::AuthFailed(AuthFailure::DecryptFailed)
    );
    assert_eq!(pair.server.half_open_len(), 1);
    let (id, _, _) = split_finish(&mut pair.server, now, &m3, &pair.registry).unwrap();
    assert_eq!(id, m2(&r).0);
}
