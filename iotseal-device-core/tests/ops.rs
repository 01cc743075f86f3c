//! Random sequences of operations (pushes, good, lost, refused and damaged answers, waits,
//! dropped sessions) against the engine: it never panics, never has two requests in flight,
//! never reports a reading twice or loses one, and delivers everything once answers are good.

mod support;

use std::collections::HashSet;

use iotseal_device_core::MsgId;
use proptest::prelude::*;

use support::{Binding, Outcome, harness, sample};

#[derive(Clone, Debug)]
enum Op {
    Push(u8),
    Answer,
    LostBefore,
    LostAfter,
    Busy,
    Flip(u16, u8),
    Truncate(u16),
    Junk(u16, Vec<u8>),
    Wait(u16),
    DropSession,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..8).prop_map(Op::Push),
        6 => Just(Op::Answer),
        1 => Just(Op::LostBefore),
        1 => Just(Op::LostAfter),
        1 => Just(Op::Busy),
        1 => (any::<u16>(), 0u8..8).prop_map(|(i, b)| Op::Flip(i, b)),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => (
            prop::sample::select(vec![200u16, 400, 403, 404, 406, 410, 429, 502, 503]),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(s, b)| Op::Junk(s, b)),
        1 => (0u16..5000).prop_map(Op::Wait),
        1 => Just(Op::DropSession),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn operations_keep_the_invariants(
        ops in prop::collection::vec(op(), 1..60),
        mqtt: bool,
        seed in 0u64..1000,
    ) {
        let mut h = harness(seed, |c| {
            c.readings_per_record = 3;
            c.records_per_request = 2;
            c.queue_capacity = 20;
            c.backoff_max_ms = 500;
        }, |_| {});
        if mqtt {
            h.gw.binding = Binding::Mqtt;
        }
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Push(n) => {
                    for _ in 0..n {
                        if let Ok(id) = h.engine.push(h.now, sample(next)) {
                            h.pushed.push(id);
                            next += 1;
                        }
                    }
                }
                Op::Wait(ms) => h.now = h.now.plus_millis(u64::from(ms)),
                Op::DropSession => h.engine.drop_session(),
                op => {
                    let Some(t) = h.engine.poll_transmit(h.now) else { continue };
                    prop_assert!(h.engine.poll_transmit(h.now).is_none(), "two in flight");
                    h.now = h.now.plus_millis(3);
                    let o = match op {
                        Op::LostBefore => {
                            h.gw.drop_before = 1;
                            h.gw.serve(h.now, &t)
                        }
                        Op::LostAfter => {
                            h.gw.drop_after = 1;
                            h.gw.serve(h.now, &t)
                        }
                        Op::Busy => {
                            h.gw.busy = 1;
                            h.gw.serve(h.now, &t)
                        }
                        Op::Flip(i, bit) => match h.gw.serve(h.now, &t) {
                            Outcome::Answer(s, mut b) if !b.is_empty() => {
                                let i = usize::from(i) % b.len();
                                b[i] ^= 1 << bit;
                                Outcome::Answer(s, b)
                            }
                            o => o,
                        },
                        Op::Truncate(n) => match h.gw.serve(h.now, &t) {
                            Outcome::Answer(s, mut b) => {
                                b.truncate(usize::from(n) % (b.len() + 1));
                                Outcome::Answer(s, b)
                            }
                            o => o,
                        },
                        Op::Junk(s, b) => {
                            let _ = h.gw.serve(h.now, &t);
                            Outcome::Answer(s, b)
                        }
                        _ => h.gw.serve(h.now, &t),
                    };
                    h.gw.deliver(&mut h.engine, h.now, &o);
                }
            }
            while let Some(e) = h.engine.poll_event() {
                h.events.push(e);
            }
            if h.engine.refusal().is_some() {
                // Junk can carry a forged terminal alert; this driver resumes.
                h.engine.resume();
            }
            let acked = h.acknowledged();
            let set: HashSet<MsgId> = acked.iter().copied().collect();
            prop_assert_eq!(set.len(), acked.len(), "a reading acknowledged twice");
            prop_assert_eq!(h.engine.pending() + acked.len(), h.pushed.len());
            if let Some(t) = h.engine.poll_timeout() {
                prop_assert!(t <= h.now.plus_millis(86_400_000 + 1000));
            }
        }
        // Good answers from here: everything gets through, once.
        h.run(300);
        h.assert_all_delivered_once();
        prop_assert_eq!(h.engine.refusal(), None);
        prop_assert!(h.engine.poll_transmit(h.now).is_none(), "nothing left to send");
    }
}
