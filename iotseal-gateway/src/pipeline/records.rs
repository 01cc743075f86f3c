//! Records of established sessions: opened, their readings stored in one call, marked only
//! after the commit, and answered with one acknowledgement per session.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use iotseal_proto::record::{ContentType, Header, batch};
use iotseal_proto::{Error, Refusal, Time};
use tracing::{debug, error, warn};

use super::readings::push_readings;
use super::{Answer, Pipeline};
use crate::sessions::{EndReason, SessionEntry, SessionState};

/// Processes a batch of records, whatever carried it: opens them, stores the readings, marks
/// them only after the commit and answers with one acknowledgement per session. The HTTP and
/// MQTT bindings both call it.
pub(super) async fn handle(sh: &Pipeline, body: &[u8]) -> Answer {
    let Ok(recs) = batch::split(body) else {
        return sh.refused("malformed", Refusal::Malformed);
    };
    if recs.is_empty() {
        return sh.refused("malformed", Refusal::Malformed);
    }
    let now = sh.now();
    let mut first: Option<(usize, Refusal)> = None;
    let note = |idx: usize, r: Refusal, first: &mut Option<(usize, Refusal)>| {
        if first.is_none_or(|(i, _)| idx < i) {
            *first = Some((idx, r));
        }
    };
    // Group by session, in session id order (the lock order, so requests never deadlock):
    // (session id, index, record) sorted, then cut into runs of one session.
    let mut keyed: Vec<(u32, usize, &[u8])> = Vec::with_capacity(recs.len());
    for (i, r) in recs.iter().enumerate() {
        match Header::peek_session_id(r) {
            Ok(id) => keyed.push((id, i, r)),
            Err(_) => {
                sh.metrics.refusal("malformed");
                note(i, Refusal::Malformed, &mut first);
            }
        }
    }
    if keyed.len() > 1 {
        // (id, index) pairs are unique: unstable is stable here.
        keyed.sort_unstable_by_key(|&(id, i, _)| (id, i));
    }
    let mut entries: Vec<Arc<SessionEntry>> = Vec::new();
    let mut records: Vec<Vec<(usize, &[u8])>> = Vec::new();
    for run in keyed.chunk_by(|a, b| a.0 == b.0) {
        let (id, i0, _) = run[0];
        match sh.sessions.get(id) {
            Some(e) => {
                entries.push(e);
                records.push(run.iter().map(|&(_, i, r)| (i, r)).collect());
            }
            None => {
                sh.metrics.refusals_n("unknown_session", run.len() as u64);
                note(i0, Refusal::UnknownSession, &mut first);
            }
        }
    }
    let mut guards = Vec::with_capacity(entries.len());
    for e in &entries {
        guards.push(e.state.lock().await);
    }
    let mut groups: Vec<Group<'_, '_>> = entries
        .iter()
        .zip(guards.iter_mut())
        .zip(records)
        .map(|((e, g), rs)| Group {
            entry: e,
            state: g,
            records: rs,
            force_ack: false,
        })
        .collect();
    let out = process(sh, now, &mut groups).await;
    drop(groups);
    drop(guards);
    if let Some((i, r)) = out.first_refusal {
        note(i, r, &mut first);
    }
    if !out.acks.is_empty() {
        let mut answer = Vec::new();
        for a in &out.acks {
            batch::push(&mut answer, a);
        }
        return Answer::Bytes(answer.into());
    }
    if out.storage_failed {
        return Answer::Refused(Refusal::Busy);
    }
    Answer::Refused(first.map_or(Refusal::Malformed, |(_, r)| r))
}

/// One session's share of a request, with its lock held.
pub(super) struct Group<'a, 'g> {
    pub(super) entry: &'a Arc<SessionEntry>,
    pub(super) state: &'g mut SessionState,
    /// (index in the request, record bytes).
    pub(super) records: Vec<(usize, &'a [u8])>,
    /// Seal an ack even if nothing new was accepted (the answer to M3).
    pub(super) force_ack: bool,
}

#[derive(Default)]
pub(super) struct Processed {
    pub(super) acks: Vec<Vec<u8>>,
    first_refusal: Option<(usize, Refusal)>,
    storage_failed: bool,
}

/// Sequence numbers seen in one request: a short list scanned for the usual few records, a
/// set beyond [`Seen::LIST`].
#[derive(Default)]
struct Seen {
    list: Vec<u64>,
    set: HashSet<u64>,
}

impl Seen {
    const LIST: usize = 16;

    fn contains(&self, seq: u64) -> bool {
        if self.set.is_empty() {
            self.list.contains(&seq)
        } else {
            self.set.contains(&seq)
        }
    }

    fn insert(&mut self, seq: u64) {
        if !self.set.is_empty() {
            self.set.insert(seq);
        } else if self.list.len() < Self::LIST {
            self.list.push(seq);
        } else {
            self.set.extend(self.list.drain(..));
            self.set.insert(seq);
        }
    }
}

#[derive(Default)]
struct GroupWork {
    pending: Vec<u64>,
    replays: usize,
    close: bool,
    ended: bool,
}

/// Opens every record of every group, stores all readings in one call, marks the records
/// only after the commit, and seals one ack per session.
pub(super) async fn process(sh: &Pipeline, now: Time, groups: &mut [Group<'_, '_>]) -> Processed {
    let mut out = Processed::default();
    let note = |idx: usize, r: Refusal, out: &mut Processed| {
        if out.first_refusal.is_none_or(|(i, _)| idx < i) {
            out.first_refusal = Some((idx, r));
        }
    };
    let mut new_readings = Vec::new();
    let mut work: Vec<GroupWork> = Vec::with_capacity(groups.len());
    for g in groups.iter_mut() {
        let mut w = GroupWork::default();
        if g.entry.is_ended() {
            let reason = if g.entry.device.is_revoked() {
                "revoked"
            } else {
                "unknown_session"
            };
            sh.metrics.refusals_n(reason, g.records.len() as u64);
            if let Some((i, _)) = g.records.first() {
                note(*i, Refusal::SessionEnded, &mut out);
            }
            w.ended = true;
            work.push(w);
            continue;
        }
        g.entry.touch(now.as_millis());
        let device_id = &g.entry.device.id;
        // The sequence numbers opened in this request (the same record twice: once is
        // enough); a set only for requests with many records.
        let mut seen = Seen::default();
        for &(idx, rec) in &g.records {
            // Each record is opened in place in its own buffer, which its readings' payloads
            // then share (no second copy of the plaintext).
            let mut buf = BytesMut::from(rec);
            let base = buf.as_ptr() as usize;
            let opened = g.state.session.open(now, &mut buf).map(|o| {
                (
                    o.seq,
                    o.content_type,
                    o.plaintext.as_ptr() as usize - base,
                    o.plaintext.len(),
                )
            });
            match opened {
                Ok((seq, ..)) if seen.contains(seq) => {
                    // The same record twice in one request: once is enough.
                    w.replays += 1;
                    sh.metrics.refusal("replay");
                    note(idx, Refusal::Replay, &mut out);
                }
                Ok((seq, content_type, off, len)) => match content_type {
                    ContentType::Data => {
                        let plain = buf.freeze().slice(off..off + len);
                        match push_readings(&mut new_readings, device_id, &plain, now) {
                            Ok(_) => {
                                seen.insert(seq);
                                w.pending.push(seq);
                            }
                            Err(e) => {
                                warn!(session = g.entry.id, error = ?e, "authenticated record with malformed readings");
                                sh.metrics.refusal("malformed");
                                note(idx, Refusal::Malformed, &mut out);
                            }
                        }
                    }
                    ContentType::Close => {
                        seen.insert(seq);
                        w.pending.push(seq);
                        w.close = true;
                    }
                    _ => {
                        sh.metrics.refusal("protocol");
                        note(idx, Refusal::AuthFailed, &mut out);
                    }
                },
                Err(Error::Replay) => {
                    w.replays += 1;
                    sh.metrics.refusal("replay");
                    note(idx, Refusal::Replay, &mut out);
                }
                Err(e) => {
                    debug!(session = g.entry.id, error = %e, "record refused");
                    sh.metrics.refusal(e.reason());
                    note(idx, e.refusal(), &mut out);
                    if e.refusal() == Refusal::SessionEnded {
                        w.ended = true;
                    }
                }
            }
        }
        work.push(w);
    }

    let stored_ok = if new_readings.is_empty() {
        true
    } else {
        let t0 = Instant::now();
        // The post-commit hook sees the batch once it is durable (a copy: cheap, the
        // payloads are shared slices).
        let hook = sh.commit_hook.get();
        let kept = hook.map(|_| new_readings.clone());
        let r = sh.storage.store_readings(new_readings).await;
        sh.metrics.storage_commit(t0.elapsed());
        match r {
            Ok(o) => {
                if let (Some(h), Some(k)) = (hook, &kept) {
                    h.committed(k);
                }
                sh.metrics.readings(o.inserted as u64, o.duplicates as u64);
                // The device counters count rows stored, not readings received: a reading
                // sent again in another record is a duplicate and adds nothing.
                for (device, n) in &o.per_device {
                    if let Some(g) = groups.iter().find(|g| g.entry.device.id == *device) {
                        g.entry.device.stored(*n as u64);
                    }
                }
                true
            }
            Err(e) => {
                error!(error = %e, "storing readings failed; records not acknowledged");
                sh.metrics.refusal("storage");
                out.storage_failed = true;
                false
            }
        }
    };

    let interval = sh.settings.limits.replay_ack_interval_ms;
    for (g, w) in groups.iter_mut().zip(work) {
        if w.ended && !g.force_ack {
            end_session(sh, g.entry, EndReason::Expired, now);
            continue;
        }
        let mut accepted = 0u64;
        if stored_ok {
            for seq in &w.pending {
                if g.state.session.accept(*seq).is_ok() {
                    accepted += 1;
                }
            }
            if accepted > 0 {
                sh.metrics.records_accepted(accepted);
                g.entry.device.accepted(accepted);
                g.entry.device.seen(now.as_millis());
            }
        }
        // Replays are answered with an ack, at most one such ack per interval per session,
        // so a replaying relay cannot burn the gateway's sequence numbers.
        let replay_ack =
            w.replays > 0 && now.as_millis().saturating_sub(g.state.last_replay_ack_ms) >= interval;
        if accepted > 0 || g.force_ack || replay_ack {
            let mut rec = Vec::new();
            match g.state.session.seal_ack(now, &mut rec) {
                Ok(_) => {
                    sh.metrics.ack_sent();
                    if accepted == 0 && !g.force_ack {
                        g.state.last_replay_ack_ms = now.as_millis();
                    }
                    out.acks.push(rec);
                }
                Err(e) => {
                    debug!(session = g.entry.id, error = %e, "sealing an ack failed");
                    end_session(sh, g.entry, EndReason::Expired, now);
                    continue;
                }
            }
        } else if w.replays > 0 {
            sh.metrics.replay_ack_suppressed();
        }
        if w.close && accepted > 0 {
            end_session(sh, g.entry, EndReason::Closed, now);
        } else if w.ended {
            end_session(sh, g.entry, EndReason::Expired, now);
        }
    }
    out
}

fn end_session(sh: &Pipeline, e: &SessionEntry, reason: EndReason, now: Time) {
    let reason = if e.device.is_revoked() {
        EndReason::Revoked
    } else {
        reason
    };
    if let Some(e) = sh.sessions.remove(e.id) {
        sh.ended(&[e], reason, now);
    }
}
