//! The engine under a gateway that asks for return routability (docs/protocol.md §4.2, §7.2):
//! a Retry(Address) is followed once and the handshake completes, also when the same retry
//! has to fix the clock and the key share.

mod support;

use iotseal_device_core::Event;
use iotseal_proto::handshake::messages::RetryReason;
use iotseal_proto::handshake::{SourceKey, SuitePolicy};
use support::{fast_suite, harness, harness_with};

fn source() -> SourceKey {
    SourceKey::from_ip("192.0.2.44".parse().unwrap())
}

/// Under load (cookie threshold 0: every first hello), the gateway answers Retry(Address);
/// the engine sends the retried hello at once, the handshake completes and every reading is
/// stored once.
#[test]
fn address_retry_is_followed_and_the_handshake_completes() {
    let mut h = harness(31, |_| {}, |g| g.cookie_threshold = 0);
    h.gw.source = Some(source());
    h.push(5);
    h.run(10);
    assert_eq!(
        h.events[0],
        Event::HelloRetried {
            reason: RetryReason::Address
        }
    );
    assert_eq!(h.engine.stats().hello_retries, 1);
    assert_eq!(h.engine.stats().handshakes, 1);
    assert!(h.engine.session().is_some());
    h.assert_all_delivered_once();
}

/// One Address retry fixes a clock an hour off and a key share for the wrong KEM at once: no
/// second retry (which the device would refuse), and the clock is adopted from M2.
#[test]
fn one_address_retry_fixes_clock_and_key_share() {
    let pq = iotseal_proto::Suite::DEFAULT;
    let classic = fast_suite();
    let mut h = harness_with(
        32,
        pq,
        |c| c.offers = vec![pq, classic],
        |g| {
            g.cookie_threshold = 0;
            g.policy = SuitePolicy {
                allowed: vec![classic],
                ..SuitePolicy::default()
            };
        },
    );
    h.gw.source = Some(source());
    h.gw.clock_offset_ms = -3_600_000;
    h.push(3);
    h.run(10);
    let retries: Vec<_> = h
        .events
        .iter()
        .filter(|e| matches!(e, Event::HelloRetried { .. }))
        .collect();
    assert_eq!(
        retries,
        [&Event::HelloRetried {
            reason: RetryReason::Address
        }]
    );
    assert_eq!(h.engine.suite(), Some(classic));
    let adjusted = h.clock_adjusted().expect("clock adopted");
    assert!((adjusted + 3_600_000).abs() <= 1000, "{adjusted}");
    h.assert_all_delivered_once();
}

/// Without load the same gateway answers at once: no retry, no extra round trip.
#[test]
fn no_load_no_retry() {
    let mut h = harness(33, |_| {}, |_| {});
    h.gw.source = Some(source());
    h.push(2);
    h.run(10);
    assert_eq!(h.engine.stats().hello_retries, 0);
    h.assert_all_delivered_once();
}
