//! The engine against the gateway side of iotseal-proto, on virtual time.

mod support;

use std::collections::HashSet;

use iotseal_device_core::{
    Cause, Endpoint, Engine, Event, MsgId, PushError, Response, Sample, SessionEnd,
};
use iotseal_proto::Refusal;
use iotseal_proto::handshake::SuitePolicy;
use iotseal_proto::handshake::messages::RetryReason;

use support::{Binding, Harness, Outcome, T0, fast_suite, harness, harness_with, sample};

fn backoffs(h: &Harness) -> Vec<(iotseal_proto::Time, Cause)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::BackingOff { until, cause } => Some((*until, *cause)),
            _ => None,
        })
        .collect()
}

/// Readings pushed before and during the run are all acknowledged exactly once, stored once,
/// with the first records riding on M3.
#[test]
fn readings_are_acknowledged_exactly_once() {
    for binding in [Binding::Http, Binding::Mqtt] {
        let mut h = harness(1, |_| {}, |_| {});
        h.gw.binding = binding;
        h.push(25);
        assert!(h.step(), "hello");
        assert!(h.step(), "M3 with records");
        assert_eq!(
            h.count(|e| matches!(e, Event::HandshakeComplete { .. })),
            1,
            "{binding:?}"
        );
        // 4 records of 10 readings ride on M3 (the request limit): 25 readings, 3 records.
        assert_eq!(h.engine.pending(), 0, "piggybacked readings acknowledged");
        h.push(230);
        h.run(100);
        h.assert_all_delivered_once();
        assert_eq!(h.gw.duplicates, 0);
        assert_eq!(h.engine.stats().handshakes, 1);
        // 230 readings at 40 per request: 6 requests.
        assert_eq!(h.engine.stats().requests, 2 + 6);
        assert!(h.engine.is_established());
        assert_eq!(h.engine.poll_transmit(h.now), None, "nothing left to send");
    }
}

/// Lost answers: M1's and M3's are resent with the same bytes (the gateway answers from its
/// cache); records whose answers are lost are sealed again in new records and stored once.
#[test]
fn lost_answers_are_resent_and_deduplicated() {
    for binding in [Binding::Http, Binding::Mqtt] {
        let mut h = harness(2, |_| {}, |_| {});
        h.gw.binding = binding;
        h.push(15);
        h.gw.drop_after = 1; // M1's answer lost
        assert!(h.step());
        assert!(!h.step(), "backing off");
        assert!(h.next(), "M1 again");
        assert_eq!(h.sent[0].body, h.sent[1].body, "the identical hello");
        h.gw.drop_after = 1; // M3's answer lost
        assert!(h.step());
        assert!(h.next(), "M3 again");
        assert_eq!(
            h.sent[2].body, h.sent[3].body,
            "the identical M3 with its records"
        );
        assert_eq!(h.sent[2].endpoint, Endpoint::Handshake);
        assert_eq!(h.engine.stats().handshakes, 1);
        assert_eq!(h.gw.duplicates, 0, "the gateway answered M3 from its cache");
        assert_eq!(h.engine.pending(), 0);

        h.push(40);
        h.gw.drop_after = 2; // two records answers lost
        h.run(100);
        h.assert_all_delivered_once();
        assert!(
            h.gw.duplicates >= 40,
            "readings were sent again: {}",
            h.gw.duplicates
        );
        let s = h.engine.stats();
        assert_eq!(s.transport_errors, 4);
        assert_eq!(s.handshake_resends, 2);
        assert_eq!(
            backoffs(&h)
                .iter()
                .filter(|(_, c)| *c == Cause::Transport)
                .count(),
            4
        );
    }
}

/// An acknowledgement with several ranges forgets exactly the readings of the records it
/// names; the others are sent again.
#[test]
fn multi_range_acks_forget_exactly_what_they_cover() {
    let mut h = harness(
        3,
        |c| {
            c.readings_per_record = 5;
            c.records_per_request = 6;
            c.piggyback = false;
        },
        |_| {},
    );
    h.engine.connect();
    h.run(10);
    assert!(h.engine.is_established());
    h.push(30);
    // Records 1 and 3 of the request are damaged in transit: the gateway refuses them and
    // acknowledges 0, 2, 4-5.
    h.gw.corrupt = vec![1, 3];
    assert!(h.step());
    let ranges = h.gw.acks.last().unwrap().clone();
    assert_eq!(ranges, [(4, 5), (2, 2), (0, 0)]);
    let acked: HashSet<u64> = h.acknowledged().iter().map(|m| m.0).collect();
    let ids = |r: std::ops::RangeInclusive<u64>| r.collect::<HashSet<u64>>();
    let expect: HashSet<u64> = [ids(1..=5), ids(11..=15), ids(21..=30)]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(acked, expect);
    let left: HashSet<u64> = h.engine.queued().map(|r| r.msg_id).collect();
    assert_eq!(
        left,
        [ids(6..=10), ids(16..=20)].into_iter().flatten().collect()
    );
    assert_eq!(h.gw.auth_failures, 2);

    // A request lost on the way leaves a hole in the window; the next acknowledgement names
    // the records before and after it.
    h.gw.drop_before = 1;
    h.run(20);
    h.assert_all_delivered_once();
    let last = h.gw.acks.last().unwrap();
    assert!(last.len() >= 3, "{last:?}");
    assert_eq!(h.gw.duplicates, 0, "nothing acknowledged was sent again");
}

/// UnknownSession (the gateway restarted): the session is dropped and a new handshake runs
/// at once; the readings get through.
#[test]
fn unknown_session_rehandshakes_and_delivers() {
    for refusal in [Refusal::UnknownSession, Refusal::SessionEnded] {
        let mut h = harness(4, |_| {}, |_| {});
        h.push(10);
        h.run(10);
        let first = h.engine.session_id().unwrap();
        if refusal == Refusal::UnknownSession {
            h.gw.forget_sessions();
        } else {
            h.gw.refuse_records = Some(refusal);
        }
        h.push(10);
        assert!(h.step(), "records refused");
        assert_eq!(
            h.events.last(),
            Some(&Event::SessionLost(SessionEnd::Refused(refusal)))
        );
        let at = h.now;
        assert!(h.step(), "a new hello at once, no backoff");
        assert_eq!(h.now.millis_since(at), 2);
        assert_eq!(h.sent.last().unwrap().endpoint, Endpoint::Handshake);
        h.run(10);
        h.assert_all_delivered_once();
        assert_eq!(h.engine.stats().handshakes, 2);
        assert_ne!(h.engine.session_id(), Some(first));
        assert_eq!(h.engine.stats().refusals_of(refusal), 1);
        assert!(backoffs(&h).is_empty(), "{:?}", backoffs(&h));
    }
}

/// UnknownSession again before any progress backs off instead of handshaking in a loop.
#[test]
fn repeated_unknown_session_backs_off() {
    let mut h = harness(14, |c| c.piggyback = false, |_| {});
    h.push(1);
    h.run(10);
    h.push(1);
    h.gw.refuse_records = Some(Refusal::UnknownSession);
    assert!(h.step());
    assert!(h.step(), "new hello at once");
    assert!(h.step(), "M3");
    h.gw.refuse_records = Some(Refusal::UnknownSession);
    assert!(h.step());
    assert!(h.engine.poll_transmit(h.now).is_none(), "backing off now");
    assert_eq!(backoffs(&h).len(), 1);
    h.run(20);
    h.assert_all_delivered_once();
}

/// Busy: each further Busy waits longer (the delay is in [c/2, c] with c doubling from the
/// base), nothing is sent before the backoff ends, and progress resets it.
#[test]
fn busy_backs_off_growing_and_resets() {
    for binding in [Binding::Http, Binding::Mqtt] {
        let mut h = harness(
            5,
            |c| {
                c.backoff_base_ms = 100;
                c.backoff_max_ms = 10_000;
            },
            |_| {},
        );
        h.gw.binding = binding;
        // Busy on the hello: the same hello goes again after the backoff.
        h.gw.busy = 1;
        h.push(1);
        assert!(h.step());
        let (until, _) = backoffs(&h)[0];
        assert!(
            h.engine
                .poll_transmit(iotseal_proto::Time(until.0 - 1))
                .is_none()
        );
        h.now = until;
        assert!(h.step());
        assert_eq!(h.sent[0].body, h.sent[1].body, "the same hello after Busy");
        h.run(10);
        assert_eq!(h.engine.pending(), 0);

        h.gw.busy = 5;
        h.push(3);
        let mut delays = Vec::new();
        for _ in 0..5 {
            assert!(h.step());
            let until = h.engine.poll_timeout().unwrap();
            let d = until.millis_since(h.now);
            assert!(
                h.engine
                    .poll_transmit(iotseal_proto::Time(until.0 - 1))
                    .is_none()
            );
            delays.push(d);
            h.now = until;
        }
        for (k, d) in delays.iter().enumerate() {
            let c = 100u64 << k;
            assert!(
                *d >= c / 2 && *d <= c,
                "delay {k}: {d} not in [{}, {c}]",
                c / 2
            );
        }
        assert!(delays[4] > delays[0] * 4, "{delays:?}");
        assert!(h.step(), "accepted after the backoffs");
        assert_eq!(h.engine.pending(), 0);
        // Progress reset the backoff: the next Busy waits the base delay again.
        h.gw.busy = 1;
        h.push(1);
        assert!(h.step());
        let d = h.engine.poll_timeout().unwrap().millis_since(h.now);
        assert!((50..=100).contains(&d), "{d}");
        h.run(10);
        assert_eq!(h.engine.stats().refusals_of(Refusal::Busy), 7);
        assert_eq!(h.engine.stats().handshakes, 1, "Busy keeps the session");
        h.assert_all_delivered_once();
    }
}

/// NoCommonSuite is terminal: one hello, a Refused event, no backoff, nothing more until
/// `resume`.
#[test]
fn no_common_suite_is_terminal() {
    for binding in [Binding::Http, Binding::Mqtt] {
        let other = "p256/ed25519/chacha20poly1305".parse().unwrap();
        let mut h = harness(
            6,
            |_| {},
            |g| {
                g.policy = SuitePolicy {
                    allowed: vec![other],
                    ..SuitePolicy::default()
                }
            },
        );
        h.gw.binding = binding;
        h.push(3);
        assert!(h.step());
        assert_eq!(h.events, [Event::Refused(Refusal::NoCommonSuite)]);
        assert_eq!(h.engine.refusal(), Some(Refusal::NoCommonSuite));
        assert_eq!(h.engine.poll_timeout(), None);
        h.now = h.now.plus_millis(3_600_000);
        assert!(h.engine.poll_transmit(h.now).is_none(), "not retried");
        h.push(1);
        assert!(
            h.engine.poll_transmit(h.now).is_none(),
            "not even for new readings"
        );
        assert_eq!(h.gw.requests.len(), 1);
        assert_eq!(h.engine.stats().handshake_attempts, 1);
        assert_eq!(h.engine.pending(), 4, "readings stay queued");
        h.engine.resume();
        assert!(h.step(), "tries again after resume");
        assert_eq!(h.gw.requests.len(), 2);
        assert_eq!(h.engine.refusal(), Some(Refusal::NoCommonSuite));
    }
}

/// AuthFailed during the handshake (the device is not registered) is terminal too; once
/// registered and resumed, the readings get through.
#[test]
fn auth_failed_handshake_is_terminal() {
    let mut h = harness(7, |_| {}, |_| {});
    let registered = h.gw.registry.drain().collect::<Vec<_>>();
    h.push(2);
    assert!(h.step(), "hello");
    assert!(h.step(), "M3");
    assert_eq!(h.events.last(), Some(&Event::Refused(Refusal::AuthFailed)));
    h.now = h.now.plus_millis(60_000);
    assert!(h.engine.poll_transmit(h.now).is_none());
    h.gw.registry.extend(registered);
    h.engine.resume();
    h.run(10);
    h.assert_all_delivered_once();
}

/// AuthFailed on records is not terminal: the session is dropped and a new handshake runs
/// after a backoff.
#[test]
fn auth_failed_on_records_rehandshakes() {
    let mut h = harness(15, |_| {}, |_| {});
    h.push(1);
    h.run(10);
    h.push(1);
    h.gw.refuse_records = Some(Refusal::AuthFailed);
    assert!(h.step());
    assert!(h.events.contains(&Event::SessionLost(SessionEnd::Refused(
        Refusal::AuthFailed
    ))));
    assert_eq!(backoffs(&h).len(), 1);
    h.run(10);
    h.assert_all_delivered_once();
    assert_eq!(h.engine.stats().handshakes, 2);
}

/// A device clock an hour ahead: the gateway answers Retry(Clock), the retried hello
/// carries the hinted time, the clock is adopted from the verified M2, and readings taken
/// after that carry the gateway's time.
#[test]
fn clock_retry_and_adoption() {
    let mut h = harness(8, |_| {}, |_| {});
    h.gw.clock_offset_ms = -3_600_000;
    h.push(2);
    h.run(10);
    assert_eq!(
        h.events[0],
        Event::HelloRetried {
            reason: RetryReason::Clock
        }
    );
    let adjusted = h.clock_adjusted().expect("clock adopted");
    assert!((adjusted + 3_600_000).abs() <= 1000, "{adjusted}");
    assert_eq!(h.engine.clock_offset_ms(), adjusted);
    assert_eq!(h.engine.stats().hello_retries, 1);
    // Readings taken now carry the gateway's time (within the 1 s of wire-time precision).
    let id = h.engine.push(h.now, sample(9)).unwrap();
    h.pushed.push(id);
    let queued_time = h.engine.reading(id).unwrap().time_ms;
    assert!(h.engine.session().is_some());
    h.run(10);
    assert!(
        h.engine.reading(id).is_none(),
        "forgotten once acknowledged"
    );
    let stored = &h.gw.stored[&id.0];
    assert_eq!(stored.time_ms, queued_time);
    let gw_now = h.gw.now(h.now).as_millis();
    assert!(
        stored.time_ms.abs_diff(gw_now) <= 1000,
        "{} vs {gw_now}",
        stored.time_ms
    );
    h.assert_all_delivered_once();
}

/// The gateway wants a key share for another offered suite: Retry(KeyShare), then the
/// session runs on that suite.
#[test]
fn key_share_retry() {
    let pq = iotseal_proto::Suite::DEFAULT;
    let classic = fast_suite();
    let mut h = harness_with(
        9,
        pq,
        |c| c.offers = vec![pq, classic],
        |g| {
            g.policy = SuitePolicy {
                allowed: vec![classic],
                ..SuitePolicy::default()
            }
        },
    );
    h.push(5);
    h.run(10);
    assert_eq!(
        h.events[0],
        Event::HelloRetried {
            reason: RetryReason::KeyShare
        }
    );
    assert_eq!(h.engine.suite(), Some(classic));
    h.assert_all_delivered_once();
}

/// Key updates follow the session's policy: every 3 records a new epoch; the gateway follows
/// and refuses nothing.
#[test]
fn key_updates_follow_the_session_policy() {
    let mut h = harness(
        10,
        |c| {
            c.session.rekey_after_records = 3;
            c.readings_per_record = 2;
            c.records_per_request = 4;
        },
        |_| {},
    );
    h.push(60);
    h.run(100);
    h.assert_all_delivered_once();
    let updates = h.count(|e| matches!(e, Event::KeyUpdated { .. }));
    assert_eq!(updates as u64, h.engine.stats().key_updates);
    // 30 records, a new epoch before records 4, 7, ..., 28: 9 updates.
    assert_eq!(updates, 9);
    let (send_epoch, _) = h.engine.epochs().unwrap();
    assert_eq!(send_epoch, 9);
    let gw_session = h.gw.sessions.values().next().unwrap();
    assert_eq!(gw_session.epochs().1, 9, "the gateway followed");
    assert_eq!(h.gw.auth_failures, 0);
}

/// The send key never gets more than 8 epochs past the last one acknowledged (§8.5): after
/// a lost request the engine starts a new session rather than send records the gateway
/// would refuse.
#[test]
fn epoch_budget_starts_a_new_session() {
    let mut h = harness(
        11,
        |c| {
            c.session.rekey_after_records = 1;
            c.readings_per_record = 1;
            c.records_per_request = 20;
            c.piggyback = false;
        },
        |_| {},
    );
    h.engine.connect();
    h.run(10);
    h.push(40);
    h.gw.drop_before = 1;
    assert!(h.step());
    let first = &h.sent.last().unwrap().body;
    assert_eq!(
        iotseal_proto::record::batch::split(first).unwrap().len(),
        9,
        "epochs 0 to 8 only"
    );
    h.run(50);
    h.assert_all_delivered_once();
    assert!(
        h.events
            .contains(&Event::SessionLost(SessionEnd::EpochBudget))
    );
    assert_eq!(
        h.gw.auth_failures, 0,
        "no record the gateway could not open"
    );
}

/// The queue is bounded: a full queue refuses with a typed error, takes no message id,
/// reports QueueFull once, and takes readings again once acknowledgements make room.
#[test]
fn queue_full_is_a_typed_error() {
    let mut h = harness(12, |c| c.queue_capacity = 3, |_| {});
    h.push(3);
    assert_eq!(
        h.engine.push(h.now, sample(3)),
        Err(PushError::QueueFull { capacity: 3 })
    );
    assert_eq!(
        h.engine.push(h.now, sample(4)),
        Err(PushError::QueueFull { capacity: 3 })
    );
    while let Some(e) = h.engine.poll_event() {
        h.events.push(e);
    }
    assert_eq!(h.events, [Event::QueueFull]);
    assert_eq!(h.engine.stats().queue_full, 2);
    assert_eq!(h.engine.next_msg_id(), MsgId(4));
    h.run(10);
    let id = h.engine.push(h.now, sample(5)).unwrap();
    assert_eq!(id, MsgId(4), "a refused push took no id");
    h.pushed.push(id);
    let too_many = Sample {
        values: vec![(iotseal_proto::reading::SensorKind::Power, 1.0); 33],
        ..Sample::default()
    };
    assert_eq!(
        h.engine.push(h.now, too_many),
        Err(PushError::TooManyValues(33))
    );
    let too_long = Sample {
        extra: vec![0; 4097],
        ..Sample::default()
    };
    assert_eq!(
        h.engine.push(h.now, too_long),
        Err(PushError::ExtraTooLong(4097))
    );
    h.run(10);
    h.assert_all_delivered_once();
}

/// A session past its lifetime is dropped at its deadline (which `poll_timeout` names) and
/// the next readings handshake again.
#[test]
fn session_expiry_rehandshakes() {
    let mut h = harness(13, |c| c.session.lifetime_secs = 60, |_| {});
    h.push(2);
    h.run(10);
    let session = h.engine.session_id().unwrap();
    let end = h.engine.poll_timeout().expect("the session's end");
    assert!(end.millis_since(T0) >= 60_000 && end.millis_since(T0) <= 61_000);
    h.engine.handle_timeout(end);
    assert!(!h.engine.is_established());
    while let Some(e) = h.engine.poll_event() {
        h.events.push(e);
    }
    assert_eq!(
        h.events.last(),
        Some(&Event::SessionLost(SessionEnd::Expired))
    );
    h.now = end;
    h.push(2);
    h.run(10);
    h.assert_all_delivered_once();
    assert_ne!(h.engine.session_id(), Some(session));
    assert_eq!(h.engine.stats().handshakes, 2);
}

/// How HTTP statuses without an alert body, and MQTT alerts of unknown codes, are read.
#[test]
fn statuses_without_alerts() {
    let cases: [(u16, Option<Cause>); 6] = [
        (429, Some(Cause::Refused(Refusal::Busy))),
        (503, Some(Cause::Refused(Refusal::Busy))),
        (408, Some(Cause::Transport)),
        (502, Some(Cause::Transport)),
        (504, Some(Cause::Transport)),
        (403, Some(Cause::Refused(Refusal::Malformed))),
    ];
    for (status, cause) in cases {
        let mut h = harness(16, |_| {}, |_| {});
        h.push(1);
        let t = h.engine.poll_transmit(h.now).unwrap();
        assert_eq!(t.endpoint, Endpoint::Handshake);
        h.engine
            .handle_response(h.now, Response::http(status, b"<html>"));
        let e: Vec<Event> = std::iter::from_fn(|| h.engine.poll_event()).collect();
        match (&e[..], cause) {
            ([Event::BackingOff { cause: c, .. }], Some(cause)) => {
                assert_eq!(*c, cause, "{status}")
            }
            other => panic!("{status}: {other:?}"),
        }
        assert_eq!(
            h.engine.refusal(),
            None,
            "{status} without an alert is not terminal"
        );
    }
    // An MQTT alert with a code this version does not know is no answer.
    let mut h = harness(16, |_| {}, |_| {});
    h.push(1);
    h.engine.poll_transmit(h.now).unwrap();
    h.engine
        .handle_response(h.now, Response::Payload(&[0x7f, 99]));
    assert_eq!(h.engine.stats().transport_errors, 1);
    // An answer with nothing in flight is ignored.
    h.engine
        .handle_response(h.now, Response::Payload(&[1, 2, 3]));
    assert_eq!(h.engine.stats().stray_answers, 1);
}

/// Damaged answers (bit flips, truncation, junk, wrong statuses) at any point never panic,
/// never lose or duplicate a reading, and the engine keeps delivering once answers are good.
#[test]
fn damaged_answers_never_panic() {
    for seed in 0..40u64 {
        let mut h = harness(
            100 + seed,
            |c| {
                c.readings_per_record = 3;
                c.records_per_request = 2;
                c.backoff_max_ms = 200;
                c.skew_secs = 30;
            },
            |_| {},
        );
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        h.push(12);
        for _ in 0..60 {
            let Some(t) = h.engine.poll_transmit(h.now) else {
                match h.engine.poll_timeout() {
                    Some(t) if t > h.now => h.now = t,
                    _ => break,
                }
                continue;
            };
            h.now = h.now.plus_millis(1 + rnd() % 50);
            let o = h.gw.serve(h.now, &t);
            let o = match (o, rnd() % 6) {
                (Outcome::Answer(s, mut b), 0) if !b.is_empty() => {
                    let i = (rnd() as usize) % b.len();
                    b[i] ^= 1 << (rnd() % 8);
                    Outcome::Answer(s, b)
                }
                (Outcome::Answer(s, mut b), 1) => {
                    b.truncate((rnd() as usize) % (b.len() + 1));
                    Outcome::Answer(s, b)
                }
                (Outcome::Answer(_, _), 2) => {
                    let len = (rnd() % 40) as usize;
                    Outcome::Answer(
                        [200, 400, 403, 404, 406, 410, 503][(rnd() % 7) as usize],
                        (0..len).map(|_| rnd() as u8).collect(),
                    )
                }
                (o, _) => o,
            };
            h.gw.deliver(&mut h.engine, h.now, &o);
            while let Some(e) = h.engine.poll_event() {
                h.events.push(e);
            }
            if h.engine.refusal().is_some() {
                // A forged terminal alert: the driver decides; here it resumes.
                h.engine.resume();
            }
        }
        let acked = h.acknowledged();
        let set: HashSet<MsgId> = acked.iter().copied().collect();
        assert_eq!(set.len(), acked.len(), "seed {seed}: acknowledged twice");
        assert_eq!(h.engine.pending() + acked.len(), 12, "seed {seed}");
        // Good answers from here on: everything gets through.
        h.run(200);
        h.assert_all_delivered_once();
    }
}

/// A configuration that cannot work is refused when the engine is made.
#[test]
fn bad_configurations_are_refused() {
    use iotseal_device_core::{ConfigError, EngineConfig};
    use iotseal_proto::SigAlg;
    use iotseal_proto::handshake::PinnedKey;
    let p = support::provider(1);
    let key = || {
        p.signature(SigAlg::Ed25519)
            .unwrap()
            .generate(p.random)
            .unwrap()
    };
    let pin = |alg| PinnedKey {
        alg,
        public_key: vec![1; 32],
    };
    let make = |f: &dyn Fn(&mut EngineConfig)| {
        let mut c = EngineConfig::new(b"d".to_vec(), key(), vec![pin(SigAlg::Ed25519)]);
        f(&mut c);
        Engine::new(c, p).err()
    };
    assert_eq!(make(&|_| {}), None);
    assert_eq!(
        make(&|c| c.queue_capacity = 0),
        Some(ConfigError::ZeroQueueCapacity)
    );
    assert_eq!(
        make(&|c| c.readings_per_record = 1025),
        Some(ConfigError::ReadingsPerRecord(1025))
    );
    assert_eq!(
        make(&|c| c.records_per_request = 0),
        Some(ConfigError::RecordsPerRequest(0))
    );
    assert_eq!(
        make(&|c| c.max_request_len = 1000),
        Some(ConfigError::RequestTooSmall(1000))
    );
    assert_eq!(
        make(&|c| c.backoff_base_ms = 0),
        Some(ConfigError::BackoffRange)
    );
    assert_eq!(
        make(&|c| c.pins = vec![pin(SigAlg::EcdsaP256)]),
        Some(ConfigError::NoPinForAlgorithm(SigAlg::Ed25519))
    );
    assert!(matches!(
        make(&|c| c.device_id.clear()),
        Some(ConfigError::Device(_))
    ));
}

/// A persisted queue comes back with its message ids, and new ids go on after them.
#[test]
fn restored_queue_is_delivered() {
    let mut h = harness(17, |_| {}, |_| {});
    let old: Vec<_> = (0..3u64)
        .map(|i| iotseal_proto::reading::Reading {
            msg_id: 40 + i,
            time_ms: T0.as_millis(),
            values: sample(i).values,
            extra: i.to_be_bytes().to_vec(),
        })
        .collect();
    h.engine.restore(MsgId(10), old).unwrap();
    h.pushed.extend([MsgId(40), MsgId(41), MsgId(42)]);
    assert_eq!(h.engine.next_msg_id(), MsgId(43));
    h.push(2);
    assert_eq!(h.pushed[3..], [MsgId(43), MsgId(44)]);
    h.run(10);
    h.assert_all_delivered_once();
}

/// `Retry-After` is a floor for the backoff.
#[test]
fn retry_after_is_a_floor() {
    let mut h = harness(18, |_| {}, |_| {});
    h.push(1);
    h.engine.poll_transmit(h.now).unwrap();
    let busy = Response::Status {
        status: 503,
        body: &[0x7f, 6],
        retry_after_secs: Some(2),
    };
    h.engine.handle_response(h.now, busy);
    let d = h.engine.poll_timeout().unwrap().millis_since(h.now);
    assert!((2000..=2100).contains(&d), "{d}");
    assert!(h.engine.poll_transmit(h.now.plus_millis(1999)).is_none());
    assert!(h.engine.poll_transmit(h.now.plus_millis(2000)).is_some());
}

/// Requests larger than the gateway takes (413, or a Malformed alert over MQTT) halve the
/// request budget until they fit; everything is delivered once.
#[test]
fn oversized_requests_shrink() {
    for binding in [Binding::Http, Binding::Mqtt] {
        let mut h = harness(
            19,
            |c| {
                c.readings_per_record = 100;
                c.records_per_request = 8;
            },
            |_| {},
        );
        h.gw.binding = binding;
        h.gw.max_body = Some(40_000);
        for i in 0..800u64 {
            let mut s = sample(i);
            s.extra.resize(100, 0);
            let id = h.engine.push(h.now, s).unwrap();
            h.pushed.push(id);
        }
        h.run(200);
        assert!(
            h.engine.request_budget() <= 40_000,
            "{}",
            h.engine.request_budget()
        );
        assert!(
            h.engine.request_budget() >= 20_000,
            "{}",
            h.engine.request_budget()
        );
        assert!(h.gw.requests.iter().all(|t| t.body.len() <= 40_000));
        assert_eq!(h.gw.stored.len(), 800);
        let acked = h.acknowledged();
        assert_eq!(acked.iter().collect::<HashSet<_>>().len(), 800);
        assert_eq!(acked.len(), 800, "{binding:?}");
        assert_eq!(h.engine.refusal(), None);
    }
}

/// `auth_failed_retries`: that many fresh handshakes (with backoff) after an AuthFailed
/// one, then the engine stops.
#[test]
fn auth_failed_retries_then_stops() {
    let mut h = harness(20, |c| c.auth_failed_retries = 2, |_| {});
    h.gw.registry.clear();
    h.push(1);
    for _ in 0..20 {
        if !h.next() {
            break;
        }
    }
    let m3s = h.gw.requests.iter().filter(|t| t.body[0] == 0x04).count();
    assert_eq!(m3s, 3);
    let auth_backoffs = backoffs(&h)
        .iter()
        .filter(|(_, c)| *c == Cause::Refused(Refusal::AuthFailed))
        .count();
    assert_eq!(auth_backoffs, 2);
    assert_eq!(h.events.last(), Some(&Event::Refused(Refusal::AuthFailed)));
    assert_eq!(h.engine.poll_timeout(), None);
}

/// `take_session` hands out the session for hand-made records (the lab, the test pair) and
/// leaves the engine idle; `open_acks` opens the gateway's acknowledgements of such records.
#[test]
fn a_taken_session_seals_by_hand_and_open_acks_reads_the_answer() {
    use iotseal_device_core::{Transmit, open_acks};
    use iotseal_proto::reading::{Reading, SensorKind, encode_batch};
    use iotseal_proto::record::{ContentType, batch};

    let mut h = harness(41, |_| {}, |_| {});
    assert!(h.engine.take_session().is_none(), "no session yet");
    h.engine.connect();
    assert!(h.step(), "hello");
    assert!(h.step(), "M3");
    assert!(h.engine.is_established());
    let mut s = h.engine.take_session().expect("the open session");
    assert!(!h.engine.is_established() && !h.engine.is_waiting());
    assert!(h.engine.take_session().is_none(), "taken once");
    let mut body = Vec::new();
    for i in 0..3u8 {
        let mut rec = Vec::new();
        let r = Reading {
            msg_id: 900 + u64::from(i),
            time_ms: h.now.as_millis(),
            values: vec![(SensorKind::Temperature, 21.5)],
            extra: Vec::new(),
        };
        let seq = s.seal(h.now, ContentType::Data, &encode_batch(&[r]), &mut rec);
        assert_eq!(seq, Ok(u64::from(i)));
        batch::push(&mut body, &rec);
    }
    let t = Transmit {
        endpoint: Endpoint::Records,
        body,
    };
    let Outcome::Answer(200, answer) = h.gw.serve(h.now, &t) else {
        panic!("the gateway acknowledges the hand-made records");
    };
    let acks = open_acks(&mut s, h.now, &answer);
    assert_eq!(acks.valid, 1);
    assert!((0..3).all(|seq| acks.covers(seq)) && !acks.covers(3));
    assert_eq!((acks.end, acks.first_error), (None, None));
    // The same answer again: its acknowledgement is a replay, refused.
    let again = open_acks(&mut s, h.now, &answer);
    assert_eq!(again.valid, 0);
    assert!(again.first_error.is_some());
}

/// A session whose M3 awaits its acknowledgement can be taken too (the in-memory pair runs
/// M3 through `HandshakeServer::handle_finish` itself).
#[test]
fn the_session_of_an_unacknowledged_finish_can_be_taken() {
    let mut h = harness(42, |_| {}, |_| {});
    h.engine.connect();
    assert!(h.step(), "hello");
    let m3 = h.engine.poll_transmit(h.now).expect("M3");
    assert_eq!(m3.endpoint, Endpoint::Handshake);
    assert!(h.engine.is_waiting());
    let s = h.engine.take_session().expect("the session of M3");
    assert_eq!(s.next_seq(), 0, "nothing was queued: M3 alone");
    assert!(!h.engine.is_waiting(), "the request in flight is forgotten");
    h.engine.handle_response(h.now, Response::http(200, &[]));
    assert_eq!(h.engine.stats().stray_answers, 1);
}
