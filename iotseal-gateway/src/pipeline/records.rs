//! Records of established sessions: opened, their readings stored in one call, marked only
//! after the commit, and answered with one acknowledgement per session.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

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
    // Group by session, in session id order (the lock order, so requests never deadlock).
    let mut by_session: std::collections::BTreeMap<u32, Vec<(usize, &[u8])>> =
        std::collections::BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        match Header::peek_session_id(r) {
            Ok(id) => by_session.entry(id).or_default().push((i, r)),
            Err(_) => {
                sh.metrics.refusal("malformed");
                note(i, Refusal::Malformed, &mut first);
            }
        }
    }
    let mut entries = Vec::new();
    for (id, rs) in by_session {
        match sh.sessions.get(id) {
            Some(e) => entries.push((e, rs)),
            None => {
                sh.metrics.refusals_n("unknown_session", rs.len() as u64);
                note(rs[0].0, Refusal::UnknownSession, &mut first);
            }
        }
    }
    let mut guards = Vec::with_capacity(entries.len());
    for (e, _) in &entries {
        guards.push(e.state.lock().await);
    }
    let mut groups: Vec<Group<'_, '_>> = entries
        .iter()
        .zip(guards.iter_mut())
        .map(|((e, rs), g)| Group {
            entry: e,
            state: g,
            records: rs.clone(),
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
        let mut seen: HashSet<u64> = HashSet::new();
        let mut buf = Vec::new();
        for &(idx, rec) in &g.records {
            buf.clear();
            buf.extend_from_slice(rec);
            match g.state.session.open(now, &mut buf) {
                Ok(o) if seen.contains(&o.seq) => {
                    // The same record twice in one request: once is enough.
                    w.replays += 1;
                    sh.metrics.refusal("replay");
                    note(idx, Refusal::Replay, &mut out);
                }
                Ok(o) => match o.content_type {
                    ContentType::Data => {
                        match push_readings(&mut new_readings, device_id, o.plaintext, now) {
                            Ok(_) => {
                                seen.insert(o.seq);
                                w.pending.push(o.seq);
                            }
                            Err(e) => {
                                warn!(session = g.entry.id, error = ?e, "authenticated record with malformed readings");
                                sh.metrics.refusal("malformed");
                                note(idx, Refusal::Malformed, &mut out);
                            }
                        }
                    }
                    ContentType::Close => {
                        seen.insert(o.seq);
                        w.pending.push(o.seq);
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
