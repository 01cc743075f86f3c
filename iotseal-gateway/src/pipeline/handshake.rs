//! Handshake messages: a hello (M1) answered with a Retry or M2, a finish (M3) establishing a
//! session and processing the records that came with it.

use std::sync::Arc;

use bytes::Bytes;
use iotseal_proto::error::Limit;
use iotseal_proto::handshake::messages::RetryReason;
use iotseal_proto::handshake::{HelloReply, HelloStep, SourceKey};
use iotseal_proto::record::batch;
use iotseal_proto::{Error, Refusal};
use tracing::{debug, error};

use super::records::{Group, process};
use super::{Answer, Binding, Pipeline};
use crate::sessions::{EndReason, SessionEntry};

/// `peer` if the transport knows it (for the per-address rate limit), with the hello's
/// `source` key if the transport has one (Address retries, the per-source share of the
/// half-open table: docs/protocol.md §4.2, §7.3). Transport-independent: the HTTP and MQTT
/// bindings both call it.
pub(super) async fn handle(
    sh: &Arc<Pipeline>,
    binding: Binding,
    peer: Option<std::net::SocketAddr>,
    source: Option<SourceKey>,
    body: Bytes,
) -> Answer {
    // Public-key work runs on blocking threads, a bounded number at once; the rest wait
    // (within the request timeout).
    let Ok(_permit) = sh.hs_permits.acquire().await else {
        return Answer::Refused(Refusal::Busy);
    };
    match body.first() {
        Some(0x01) => {
            let sh2 = sh.clone();
            // Public-key work: off the async workers.
            match tokio::task::spawn_blocking(move || hello(&sh2, binding, peer, source, &body))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    error!(error = %e, "hello task failed");
                    Answer::Refused(Refusal::Busy)
                }
            }
        }
        Some(0x04) => finish(sh.clone(), binding, body).await,
        _ => {
            sh.metrics.handshake("none", "malformed");
            sh.refused("malformed", Refusal::Malformed)
        }
    }
}

fn hello(
    sh: &Pipeline,
    binding: Binding,
    peer: Option<std::net::SocketAddr>,
    source: Option<SourceKey>,
    body: &[u8],
) -> Answer {
    let now = sh.now();
    let mut hs = sh.lock_hs(binding);
    if let Some(answer) = hs.cached_answer(now, body) {
        drop(hs);
        sh.metrics.handshake("none", "retransmission");
        return Answer::Bytes(answer.into());
    }
    if let Some(p) = peer
        && !sh.limiter.allow(p.ip(), now.as_millis())
    {
        drop(hs);
        sh.metrics.handshake("none", "rate_limited");
        sh.metrics.refusal("rate_limited");
        return Answer::RateLimited;
    }
    // In a cluster, the core draws new session ids only in partitions this node owns now.
    if let Some(c) = &sh.session_ids {
        match c.policy() {
            Ok(policy) => hs.set_session_id_policy(policy),
            Err(e) => {
                // Nothing owned (this node is joining, or lost its leases): another node
                // will answer the device's retry.
                drop(hs);
                sh.metrics.handshake("none", "no_partition");
                debug!(error = %e, "hello refused: no owned partition");
                return sh.refused("busy", Refusal::Busy);
            }
        }
    }
    // Check under the lock (cheap: MACs, cookie, freshness, replay, room), compute without
    // it (KEM, signature: this is what runs on every core), commit under it again.
    // Evictions happen only at commit: the counters are read around it, under the lock.
    let mut evictions = hs.half_open_evictions();
    let mut nonce_evictions = hs.nonce_evictions();
    let result = match hs.check_hello(now, body, source) {
        Ok(HelloStep::Reply(r)) => Ok(r),
        Err(e) => Err(e),
        Ok(HelloStep::Compute(job)) => {
            drop(hs);
            let computed = job.compute(&|id| sh.sessions.contains(id));
            hs = sh.lock_hs(binding);
            evictions = hs.half_open_evictions();
            nonce_evictions = hs.nonce_evictions();
            match computed {
                // A session established meanwhile took the drawn id (the core sees only
                // half-open ones): the id is signed into M2, so refuse; the device retries.
                Ok(c) if sh.sessions.contains(c.session_id()) => Err(Limit::HalfOpenFull.into()),
                Ok(c) => hs.commit_hello(now, c),
                Err(e) => Err(e),
            }
        }
    };
    let evicted = hs.half_open_evictions() - evictions;
    let nonces_evicted = hs.nonce_evictions() - nonce_evictions;
    sh.set_half_open(binding, hs.half_open_len());
    drop(hs);
    if evicted > 0 {
        // The full table made room by evicting from the source holding the most.
        sh.metrics.half_open_evicted(evicted);
    }
    if nonces_evicted > 0 {
        sh.metrics.nonces_evicted(nonces_evicted);
    }
    match result {
        Ok(HelloReply::GatewayHello { suite, bytes, .. }) => {
            sh.metrics.handshake(&suite.to_string(), "hello");
            Answer::Bytes(bytes.into())
        }
        Ok(HelloReply::Retry { reason, bytes, .. }) => {
            let outcome = match reason {
                RetryReason::Address => "retry_address",
                RetryReason::Clock | RetryReason::KeyShare => "retry",
            };
            sh.metrics.handshake("none", outcome);
            Answer::Bytes(bytes.into())
        }
        Err(e) => {
            debug!(error = %e, "hello refused");
            // The per-source bounds of the half-open table get their own refusal reason (they
            // answer Busy like the other full tables).
            let reason = match e {
                Error::Limit(Limit::HalfOpenPerSource) => "half_open_per_source",
                Error::Limit(Limit::SourceUnproven) => "source_unproven",
                _ => e.reason(),
            };
            sh.metrics.handshake("none", reason);
            sh.refused(reason, e.refusal())
        }
    }
}

enum FinishStep {
    Cached(Vec<u8>),
    Refused(Error),
    Established {
        session: Box<iotseal_proto::record::Session>,
        device_id: Vec<u8>,
        records: Vec<u8>,
    },
}

async fn finish(sh: Arc<Pipeline>, binding: Binding, body: Bytes) -> Answer {
    let sh2 = sh.clone();
    let body2 = body.clone();
    let step = tokio::task::spawn_blocking(move || {
        let now = sh2.now();
        let hs = sh2.lock_hs(binding);
        if let Some(a) = hs.cached_answer(now, &body2) {
            return FinishStep::Cached(a);
        }
        // Check under the lock, verify (AEAD, registry, signature) without it, commit
        // under it: of two finishes of one session exactly one commits.
        let job = match hs.check_finish(now, &body2) {
            Ok(j) => j,
            Err(e) => return FinishStep::Refused(e),
        };
        drop(hs);
        let verified = match job.verify(&sh2.registry) {
            Ok(v) => v,
            Err(e) => return FinishStep::Refused(e),
        };
        let mut hs = sh2.lock_hs(binding);
        let r = match hs.commit_finish(now, verified, &body2) {
            Ok(est) => FinishStep::Established {
                session: Box::new(est.session),
                device_id: est.device_id,
                records: est.records.to_vec(),
            },
            Err(e) => FinishStep::Refused(e),
        };
        sh2.set_half_open(binding, hs.half_open_len());
        r
    })
    .await;
    let (session, device_id, records) = match step {
        Ok(FinishStep::Cached(a)) => {
            sh.metrics.handshake("none", "retransmission");
            return Answer::Bytes(a.into());
        }
        Ok(FinishStep::Refused(e)) => {
            debug!(error = %e, "finish refused");
            sh.metrics.handshake("none", e.reason());
            return sh.refused(e.reason(), e.refusal());
        }
        Ok(FinishStep::Established {
            session,
            device_id,
            records,
        }) => (session, device_id, records),
        Err(e) => {
            error!(error = %e, "finish task failed");
            return Answer::Refused(Refusal::Busy);
        }
    };
    let now = sh.now();
    let suite = session.suite().to_string();
    // The registry said yes a moment ago; a revocation since then still wins.
    let device = match sh.registry.get(&device_id) {
        Some(d) if !d.is_revoked() => d,
        _ => {
            sh.metrics.handshake(&suite, "revoked");
            return sh.refused("revoked", Refusal::AuthFailed);
        }
    };
    let entry = SessionEntry::new(*session, device.clone(), now.as_millis());
    let mut guard = entry.state.lock().await;
    let evicted = sh.sessions.insert(entry.clone());
    sh.ended(&evicted, EndReason::Evicted, now);
    sh.audit(&entry, "established", now);
    if device.is_revoked() {
        // Revoked while we were inserting: the revocation's sweep may have missed us.
        if let Some(e) = sh.sessions.remove(entry.id) {
            sh.ended(&[e], EndReason::Revoked, now);
        }
        sh.metrics.handshake(&suite, "revoked");
        return sh.refused("revoked", Refusal::AuthFailed);
    }
    device.handshake_done();
    device.seen(now.as_millis());
    sh.metrics.handshake(&suite, "established");
    sh.metrics.set_active_sessions(sh.sessions.len());
    debug!(session = entry.id, device = %device.id, %suite, "session established");

    let recs = match batch::split(&records) {
        Ok(r) => r,
        Err(_) => {
            sh.metrics.refusal("malformed");
            Vec::new()
        }
    };
    let mut groups = vec![Group {
        entry: &entry,
        state: &mut guard,
        records: recs.into_iter().enumerate().collect(),
        force_ack: true,
    }];
    let out = process(&sh, now, &mut groups).await;
    drop(groups);
    drop(guard);
    let mut answer = Vec::new();
    for a in &out.acks {
        batch::push(&mut answer, a);
    }
    if out.acks.is_empty() {
        // Sealing the first ack of a new session cannot fail short of a broken provider.
        return Answer::Refused(Refusal::Busy);
    }
    sh.lock_hs(binding)
        .remember_answer(now, &body, answer.clone());
    Answer::Bytes(answer.into())
}
