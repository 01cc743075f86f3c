//! Opening the gateway's acknowledgement records: written once, here. The engine uses it for
//! every answer; a driver that crafts records by hand on a session it took out of the engine
//! ([`crate::Engine::take_session`]: the threat lab's replays and chosen sequence numbers)
//! uses it for the answers to those.

use alloc::vec::Vec;

use iotseal_proto::error::{Limit, PeerMisbehaved};
use iotseal_proto::record::{ContentType, Session, batch};
use iotseal_proto::{Error, Time};

use crate::event::SessionEnd;

/// What the acknowledgement records of one answer said ([`open_acks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acks {
    /// The sequence numbers acknowledged, as inclusive ranges, in the order of the records.
    pub ranges: Vec<(u64, u64)>,
    /// How many records were authentic acknowledgements.
    pub valid: usize,
    /// The session cannot go on: a Close record, past its lifetime, or the receive key at
    /// its integrity limit.
    pub end: Option<SessionEnd>,
    /// Why the first record that was no authentic acknowledgement was refused (for logs).
    pub first_error: Option<Error>,
}

impl Acks {
    /// Whether the sealed record `seq` is acknowledged.
    pub fn covers(&self, seq: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&seq))
    }
}

/// Opens the records of an answer (a batch, docs/protocol.md §8.11) with `session` at device
/// time `now`: each authentic acknowledgement is accepted into the session's receive window
/// and its ranges collected; a Close record ends the session; anything else is counted as an
/// error and skipped.
pub fn open_acks(session: &mut Session, now: Time, body: &[u8]) -> Acks {
    let mut out = Acks::default();
    let records = match batch::split(body) {
        Ok(r) => r,
        Err(m) => {
            out.first_error = Some(m.into());
            return out;
        }
    };
    let mut buf = Vec::new();
    for r in records {
        buf.clear();
        buf.extend_from_slice(r);
        let e = match session.open(now, &mut buf) {
            Ok(o) => {
                let seq = o.seq;
                match o.content_type {
                    ContentType::Ack => match session.parse_ack(o.plaintext) {
                        Ok(ranges) => {
                            let _ = session.accept(seq);
                            out.valid += 1;
                            out.ranges.extend(ranges);
                            continue;
                        }
                        Err(e) => e,
                    },
                    ContentType::Close => {
                        let _ = session.accept(seq);
                        out.end = Some(SessionEnd::Closed);
                        continue;
                    }
                    _ => PeerMisbehaved::UnexpectedContent.into(),
                }
            }
            Err(e) => e,
        };
        match e {
            Error::Limit(Limit::SessionExpired) => out.end = Some(SessionEnd::Expired),
            Error::Limit(Limit::IntegrityLimit) => out.end = Some(SessionEnd::ReceiveLimit),
            _ => {}
        }
        out.first_error.get_or_insert(e);
    }
    out
}
